package rooms

import (
	"sync"
	"time"
)

// Room is a set of participants who receive each other's tracks.
type Room struct {
	name    string
	mgr     *Manager
	created time.Time
	opts    RoomOptions

	mu         sync.Mutex // lock order: Room.mu, then Room.dmu, then Participant.mu
	parts      map[string]*Participant
	emptySince time.Time // when the room last became empty; zero while used

	// Presence, chat and data (presence.go, data.go).
	dmu      sync.Mutex
	presence map[string]*presence    // by identity
	ready    []*Participant          // whose reliable data channel is open
	screens  map[string]*Participant // live screen share track sid -> owner
	chat     *chatLog
	store    ChatStore     // the Manager's, or nil
	stop     chan struct{} // ends the janitor when the room is dropped
}

// Name of the room.
func (r *Room) Name() string { return r.name }

// Participants returns a snapshot of the room.
func (r *Room) Participants() []ParticipantInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]ParticipantInfo, 0, len(r.parts))
	for _, p := range r.parts {
		out = append(out, p.Info())
	}
	return out
}

func streamID(owner *Participant, source string) string {
	if source == SourceScreen || source == SourceScreenAudio {
		return owner.sid + "|screen"
	}
	return owner.sid + "|camera"
}

// add puts p in the room, sends it Joined, tells the others and subscribes
// p to every published track. It returns the older session of the same
// identity, already removed from the room, for the caller to close.
func (r *Room) add(p *Participant) (*Participant, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	max := r.opts.MaxParticipants
	var old *Participant
	for _, x := range r.parts {
		if x.identity == p.identity {
			old = x
		}
	}
	n := len(r.parts)
	if old != nil {
		n--
	}
	if n >= max {
		return nil, ErrRoomFull
	}
	if old != nil {
		r.removeLocked(old, "duplicate_identity")
	}
	others := make([]ParticipantInfo, 0, len(r.parts))
	for _, x := range r.parts {
		others = append(others, x.Info())
	}
	r.parts[p.sid] = p
	r.emptySince = time.Time{}
	r.mgr.emit(Event{Type: EventParticipantJoin, Room: r.name, Participant: p.eventInfo()})
	p.sink.Send(Joined{Self: p.Info(), Others: others, Grants: p.Grants()})
	// The first subscriber offer carries the data channels; it comes
	// after Joined.
	p.sub.Negotiate()
	r.dmu.Lock()
	r.presenceJoinLocked(p, time.Now())
	r.dmu.Unlock()
	info := p.Info()
	for _, x := range r.parts {
		if x == p {
			continue
		}
		x.sink.Send(ParticipantJoined{Participant: info})
		if p.Grants().Subscribe {
			for _, pt := range x.publishedTracks() {
				p.sub.AddTrack(pt.t, streamID(x, pt.info.Source))
			}
		}
	}
	return old, nil
}

// publish forwards a new track of p to everyone else and announces it.
func (r *Room) publish(p *Participant, pt *published) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.parts[p.sid] != p {
		return
	}
	for _, x := range r.parts {
		if x != p && x.Grants().Subscribe {
			x.sub.AddTrack(pt.t, streamID(p, pt.info.Source))
		}
		x.sink.Send(TrackPublished{ParticipantSID: p.sid, Track: pt.info})
	}
	info := pt.info
	r.mgr.emit(Event{Type: EventTrackPublished, Room: r.name, Participant: p.eventInfo(), Track: &info})
	r.presenceMedia(p)
}

// presenceMedia updates p's camera, mic and screen flags.
func (r *Room) presenceMedia(p *Participant) {
	r.dmu.Lock()
	defer r.dmu.Unlock()
	r.presenceMediaLocked(p, time.Now())
}

// unpublishLocked stops forwarding a track of p and announces it.
func (r *Room) unpublishLocked(p *Participant, sid string) {
	if r.parts[p.sid] != p {
		return
	}
	for _, x := range r.parts {
		if x != p {
			x.sub.RemoveTrack(sid)
		}
		x.sink.Send(TrackUnpublished{ParticipantSID: p.sid, TrackSID: sid})
	}
	r.mgr.emit(Event{Type: EventTrackUnpublished, Room: r.name, Participant: p.eventInfo(), Track: &TrackInfo{SID: sid}})
	r.presenceMedia(p)
}

// trackMuted tells everyone in the room that a track of p was (un)muted.
func (r *Room) trackMuted(p *Participant, info TrackInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.parts {
		x.sink.Send(TrackMuted{ParticipantSID: p.sid, TrackSID: info.SID, Muted: info.Muted})
	}
	r.mgr.emit(Event{Type: EventTrackMuted, Room: r.name, Participant: p.eventInfo(), Track: &info})
}

// removeLocked takes p out of the room: its tracks end for everybody and
// the others are told it left.
func (r *Room) removeLocked(p *Participant, reason string) {
	if r.parts[p.sid] != p {
		return
	}
	delete(r.parts, p.sid)
	tracks := p.takeTracks()
	for _, x := range r.parts {
		for _, pt := range tracks {
			x.sub.RemoveTrack(pt.info.SID)
			x.sink.Send(TrackUnpublished{ParticipantSID: p.sid, TrackSID: pt.info.SID})
		}
		x.sink.Send(ParticipantLeft{SID: p.sid, Identity: p.identity, Reason: reason})
	}
	who := p.eventInfo()
	for _, pt := range tracks {
		r.mgr.emit(Event{Type: EventTrackUnpublished, Room: r.name, Participant: who, Track: &TrackInfo{SID: pt.info.SID}})
	}
	r.mgr.emit(Event{Type: EventParticipantLeft, Room: r.name, Participant: who, Reason: reason})
	for _, pt := range tracks {
		pt.t.Close()
	}
	r.dmu.Lock()
	r.detachDataLocked(p)
	r.presenceLeaveLocked(p, reason, time.Now())
	r.dmu.Unlock()
}

// endSessions tells every participant why its session ends (Closed with
// reason) and ends it.
func (r *Room) endSessions(reason string) {
	r.mu.Lock()
	parts := make([]*Participant, 0, len(r.parts))
	for _, p := range r.parts {
		parts = append(parts, p)
	}
	r.mu.Unlock()
	for _, p := range parts {
		p.sink.Send(Closed{Reason: reason})
		p.leave(reason)
	}
}
