package rooms

import (
	"encoding/json"
	"time"
)

// Presence statuses.
const (
	StatusOnline  = "online"
	StatusAway    = "away"
	StatusOffline = "offline"
)

// Presence is one identity's entry in a room's roster, as sent to clients
// (docs/protocol.md, "Presence").
type Presence struct {
	Identity  string          `json:"identity"`
	SID       string          `json:"sid"`
	Name      string          `json:"name"`
	JoinedAt  int64           `json:"joined_at"`
	Status    string          `json:"status"`
	Camera    bool            `json:"camera"`
	Mic       bool            `json:"mic"`
	Screen    bool            `json:"screen"`
	Speaking  bool            `json:"speaking"`
	Hand      bool            `json:"hand"`
	Typing    bool            `json:"typing"`
	Metadata  json.RawMessage `json:"metadata"`
	UpdatedAt int64           `json:"updated_at"`
}

// presence is the server's state behind a Presence; guarded by Room.dmu.
type presence struct {
	Presence
	part        *Participant // the current session; nil while offline
	detached    bool         // its signaling connection is gone; it may resume
	away        bool         // the client says it is away (page hidden)
	lastSeen    time.Time    // last message from the client
	typingUntil time.Time
	offlineAt   time.Time
}

// status derives the status at now.
func (e *presence) status(now time.Time, awayAfter time.Duration) string {
	switch {
	case e.part == nil || e.detached:
		return StatusOffline
	case e.away || now.Sub(e.lastSeen) >= awayAfter:
		return StatusAway
	}
	return StatusOnline
}

// presenceJoinLocked gives p the entry of its identity (a new one, or the
// entry of its offline or replaced earlier session) and tells the room.
func (r *Room) presenceJoinLocked(p *Participant, now time.Time) {
	e, ok := r.presence[p.identity]
	if !ok {
		e = &presence{}
		r.presence[p.identity] = e
	}
	e.part, e.detached = p, false
	e.SID, e.Identity, e.Name, e.JoinedAt = p.sid, p.identity, p.Name(), p.joinedAt.UnixMilli()
	e.lastSeen, e.offlineAt, e.away = now, time.Time{}, false
	e.Typing, e.typingUntil = false, time.Time{}
	e.Camera, e.Mic, e.Screen = false, false, false
	r.presenceChangedLocked(e, now)
}

// presenceLeaveLocked ends p's part in its entry: a participant that left
// on purpose (or was removed) goes at once; one whose connection was lost
// shows offline for OfflineGrace first; one replaced by a newer session of
// its identity keeps the entry for that session.
func (r *Room) presenceLeaveLocked(p *Participant, reason string, now time.Time) {
	for sid, owner := range r.screens {
		if owner == p {
			delete(r.screens, sid)
		}
	}
	e, ok := r.presence[p.identity]
	if !ok || e.part != p {
		return
	}
	switch reason {
	case "duplicate_identity":
		return // the new session takes the entry over
	case "server_shutdown":
		delete(r.presence, p.identity) // everybody is leaving: nobody to tell
		return
	case "left", "removed":
		delete(r.presence, p.identity)
		r.broadcastLocked(encode(presenceLeftMsg{Type: "presence_left", Identity: e.Identity, SID: e.SID}), nil)
		return
	}
	e.part = nil
	e.offlineAt = now
	e.Typing, e.Speaking, e.Camera, e.Mic, e.Screen = false, false, false, false, false
	r.presenceChangedLocked(e, now)
}

// presenceMediaLocked updates p's camera, mic and screen flags from its
// tracks.
func (r *Room) presenceMediaLocked(p *Participant, now time.Time) {
	e, ok := r.presence[p.identity]
	if !ok || e.part != p {
		return
	}
	cam, mic, screens := p.mediaFlags()
	for sid, owner := range r.screens {
		if owner == p {
			delete(r.screens, sid)
		}
	}
	for _, sid := range screens {
		r.screens[sid] = p
	}
	screen := len(screens) > 0
	if cam == e.Camera && mic == e.Mic && screen == e.Screen {
		return
	}
	e.Camera, e.Mic, e.Screen = cam, mic, screen
	r.presenceChangedLocked(e, now)
}

// presenceChangedLocked stamps e and sends it to everybody.
func (r *Room) presenceChangedLocked(e *presence, now time.Time) {
	e.Status = e.status(now, r.mgr.cfg.Data.AwayAfter)
	e.UpdatedAt = now.UnixMilli()
	r.broadcastLocked(encode(presenceMsg{Type: "presence", Participant: e.Presence}), nil)
}

// rosterLocked is every entry, for a client whose channel just opened.
func (r *Room) rosterLocked() []Presence {
	out := make([]Presence, 0, len(r.presence))
	for _, e := range r.presence {
		out = append(out, e.Presence)
	}
	return out
}

// janitor applies what changes with time alone: typing that was never
// stopped, heartbeats that lapsed (away) and offline entries whose grace
// ran out. It runs while the room exists.
func (r *Room) janitor(tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case now := <-t.C:
			r.sweep(now)
		}
	}
}

func (r *Room) sweep(now time.Time) {
	cfg := &r.mgr.cfg.Data
	r.dmu.Lock()
	defer r.dmu.Unlock()
	for id, e := range r.presence {
		if e.part == nil {
			if now.Sub(e.offlineAt) >= cfg.OfflineGrace {
				delete(r.presence, id)
				r.broadcastLocked(encode(presenceLeftMsg{Type: "presence_left", Identity: e.Identity, SID: e.SID}), nil)
			}
			continue
		}
		changed := false
		if e.Typing && !now.Before(e.typingUntil) {
			e.Typing = false
			changed = true
		}
		if e.status(now, cfg.AwayAfter) != e.Status {
			changed = true
		}
		if changed {
			r.presenceChangedLocked(e, now)
		}
	}
}

// janitorTick is how often the janitor looks: often enough that typing,
// away and offline change within a fraction of their timeouts.
func janitorTick(cfg *DataConfig) time.Duration {
	d := min(cfg.TypingTimeout, cfg.AwayAfter, cfg.OfflineGrace) / 5
	return min(max(d, 20*time.Millisecond), time.Second)
}
