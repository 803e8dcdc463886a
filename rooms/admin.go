package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// What operators see and do through the admin API (docs/api.md).

// RoomDetails describes a room for operators.
type RoomDetails struct {
	Name                string               `json:"name"`
	Node                string               `json:"node,omitempty"` // the node that holds it, in a cluster
	CreatedAt           int64                `json:"created_at"`
	NumParticipants     int                  `json:"num_participants"`
	NumPublishedTracks  int                  `json:"num_published_tracks"`
	MaxParticipants     int                  `json:"max_participants"`
	EmptyTimeoutSeconds int64                `json:"empty_timeout_seconds"`
	Participants        []ParticipantDetails `json:"participants,omitzero"` // only in a room's details
}

// ParticipantDetails describes a participant for operators.
type ParticipantDetails struct {
	SID      string          `json:"sid"`
	Identity string          `json:"identity"`
	Name     string          `json:"name"`
	JoinedAt int64           `json:"joined_at"`
	Grants   Grants          `json:"grants"`
	Metadata json.RawMessage `json:"metadata"`
	Tracks   []TrackDetails  `json:"tracks"`
}

// TrackDetails is a published track with its counters.
type TrackDetails struct {
	TrackInfo
	Packets     uint64 `json:"packets"`
	Bytes       uint64 `json:"bytes"`
	Subscribers int    `json:"subscribers"`
}

// Stats are the manager's totals, for metrics.
type Stats struct {
	Rooms, Participants, PublishedTracks, SubscribedTracks int
}

// Stats counts rooms, participants and tracks now.
func (m *Manager) Stats() Stats {
	var s Stats
	for _, r := range m.roomList() {
		r.mu.Lock()
		s.Rooms++
		s.Participants += len(r.parts)
		for _, p := range r.parts {
			for _, pt := range p.publishedTracks() {
				s.PublishedTracks++
				s.SubscribedTracks += pt.t.Subscribers()
			}
		}
		r.mu.Unlock()
	}
	return s
}

func (m *Manager) roomList() []*Room {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Room, 0, len(m.rooms))
	for _, r := range m.rooms {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// AllRooms describes every room, by name; with participants when full.
func (m *Manager) AllRooms(full bool) []RoomDetails {
	list := m.roomList()
	out := make([]RoomDetails, 0, len(list))
	for _, r := range list {
		out = append(out, r.details(full))
	}
	return out
}

// RoomDetails describes one room with its participants.
func (m *Manager) RoomDetails(name string) (RoomDetails, error) {
	r := m.Room(name)
	if r == nil {
		return RoomDetails{}, ErrNoRoom
	}
	return r.details(true), nil
}

func (r *Room) details(full bool) RoomDetails {
	r.mu.Lock()
	parts := make([]*Participant, 0, len(r.parts))
	for _, p := range r.parts {
		parts = append(parts, p)
	}
	r.mu.Unlock()
	sort.Slice(parts, func(i, j int) bool { return parts[i].joinedAt.Before(parts[j].joinedAt) })
	d := RoomDetails{Name: r.name, CreatedAt: r.created.UnixMilli(), NumParticipants: len(parts),
		MaxParticipants: r.opts.MaxParticipants, EmptyTimeoutSeconds: int64(r.opts.EmptyTimeout / time.Second)}
	if full {
		d.Participants = []ParticipantDetails{}
	}
	for _, p := range parts {
		pd := r.participantDetails(p)
		d.NumPublishedTracks += len(pd.Tracks)
		if full {
			d.Participants = append(d.Participants, pd)
		}
	}
	return d
}

func (r *Room) participantDetails(p *Participant) ParticipantDetails {
	info := p.Info()
	pd := ParticipantDetails{SID: p.sid, Identity: p.identity, Name: info.Name, JoinedAt: info.JoinedAt, Grants: p.Grants(),
		Metadata: json.RawMessage("null"), Tracks: []TrackDetails{}}
	r.dmu.Lock()
	if e, ok := r.presence[p.identity]; ok && e.part == p && e.Metadata != nil {
		pd.Metadata = append(json.RawMessage(nil), e.Metadata...)
	}
	r.dmu.Unlock()
	for _, pt := range p.publishedTracks() {
		pd.Tracks = append(pd.Tracks, TrackDetails{TrackInfo: p.trackInfo(pt), Packets: pt.t.Packets(), Bytes: pt.t.Bytes(),
			Subscribers: pt.t.Subscribers()})
	}
	sort.Slice(pd.Tracks, func(i, j int) bool { return pd.Tracks[i].SID < pd.Tracks[j].SID })
	return pd
}

// CreateRoom opens a room ahead of its participants, with its own limits.
func (m *Manager) CreateRoom(name string, opts RoomOptions) (RoomDetails, error) {
	if opts.MaxParticipants < 0 || opts.EmptyTimeout < 0 {
		return RoomDetails{}, fmt.Errorf("%w: max_participants and empty_timeout must not be negative", ErrBadConfig)
	}
	hist := m.loadChat(name)
	m.mu.Lock()
	switch {
	case m.closed:
		m.mu.Unlock()
		return RoomDetails{}, ErrClosed
	case m.draining:
		m.mu.Unlock()
		return RoomDetails{}, ErrDraining
	case m.rooms[name] != nil:
		m.mu.Unlock()
		return RoomDetails{}, ErrRoomExists
	case len(m.rooms) >= m.cfg.MaxRooms:
		m.mu.Unlock()
		return RoomDetails{}, ErrTooManyRooms
	}
	r := m.newRoomLocked(name, opts, hist)
	m.dropIfEmptyLocked(r, time.Now()) // starts its empty timeout
	m.mu.Unlock()
	return r.details(true), nil
}

// CloseRoom ends every session of a room (reason room_closed) and closes it.
func (m *Manager) CloseRoom(name string) error {
	r := m.Room(name)
	if r == nil {
		return ErrNoRoom
	}
	r.endSessions("room_closed")
	m.mu.Lock()
	m.dropLocked(r)
	m.mu.Unlock()
	return nil
}

// participant finds the session of identity in a room.
func (m *Manager) participant(room, identity string) (*Participant, error) {
	r := m.Room(room)
	if r == nil {
		return nil, ErrNoRoom
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.parts {
		if p.identity == identity {
			return p, nil
		}
	}
	return nil, ErrNoParticipant
}

// RemoveParticipant ends a participant's session (reason removed).
func (m *Manager) RemoveParticipant(room, identity string) error {
	p, err := m.participant(room, identity)
	if err != nil {
		return err
	}
	p.sink.Send(Closed{Reason: "removed"})
	p.leave("removed")
	return nil
}

// MuteTrack mutes or unmutes a participant's track for everybody.
func (m *Manager) MuteTrack(room, identity, trackSID string, muted bool) (TrackInfo, error) {
	p, err := m.participant(room, identity)
	if err != nil {
		return TrackInfo{}, err
	}
	return p.setMuted(trackSID, muted)
}

// ParticipantUpdate changes a participant; nil fields stay as they are.
type ParticipantUpdate struct {
	Name     *string
	Metadata json.RawMessage // "null" clears it
	Grants   *Grants         // Admin is kept as it was
}

// UpdateParticipant applies u: a new name and metadata show in presence;
// new grants take effect at once (publish taken away unpublishes its
// tracks, subscribe taken away or given changes what it receives). The
// participant is told with ParticipantUpdated.
func (m *Manager) UpdateParticipant(room, identity string, u ParticipantUpdate) (ParticipantDetails, error) {
	p, err := m.participant(room, identity)
	if err != nil {
		return ParticipantDetails{}, err
	}
	if u.Name != nil && (*u.Name == "" || len(*u.Name) > 256) {
		return ParticipantDetails{}, fmt.Errorf("%w: name must be 1-256 bytes", ErrBadDescription)
	}
	if len(u.Metadata) > m.cfg.Data.MaxMetadataBytes {
		return ParticipantDetails{}, fmt.Errorf("%w: metadata is over data.max_metadata_bytes (%d)", ErrBadDescription, m.cfg.Data.MaxMetadataBytes)
	}
	if u.Metadata != nil && !json.Valid(u.Metadata) {
		return ParticipantDetails{}, fmt.Errorf("%w: metadata is not JSON", ErrBadDescription)
	}
	r := p.room
	p.mu.Lock()
	old := p.grants
	if u.Name != nil {
		p.name = *u.Name
	}
	if u.Grants != nil {
		g := *u.Grants
		g.Admin = old.Admin
		p.grants = g
	}
	now := p.grants
	p.mu.Unlock()

	if old.Publish && !now.Publish {
		for _, pt := range p.publishedTracks() {
			_ = p.Unpublish(pt.info.SID)
		}
	}
	if old.Subscribe != now.Subscribe {
		r.setSubscribed(p, now.Subscribe)
	}
	r.dmu.Lock()
	if e, ok := r.presence[p.identity]; ok && e.part == p {
		if u.Name != nil {
			e.Name = *u.Name
		}
		if u.Metadata != nil {
			e.Metadata = nil
			if string(u.Metadata) != "null" {
				e.Metadata = append(json.RawMessage(nil), u.Metadata...)
			}
		}
		r.presenceChangedLocked(e, time.Now())
	}
	r.dmu.Unlock()
	p.sink.Send(ParticipantUpdated{Participant: p.Info(), Grants: now})
	return r.participantDetails(p), nil
}

// setSubscribed subscribes p to every other participant's tracks, or
// unsubscribes it from all of them.
func (r *Room) setSubscribed(p *Participant, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.parts {
		if x == p {
			continue
		}
		for _, pt := range x.publishedTracks() {
			if on {
				p.sub.AddTrack(pt.t, streamID(x, pt.info.Source))
			} else {
				p.sub.RemoveTrack(pt.info.SID)
			}
		}
	}
}

// Drain refuses new participants and rooms from now on, and closes the
// rooms nobody is in; rooms in use go on. WaitEmpty tells when they are
// all gone.
func (m *Manager) Drain() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.draining = true
	now := time.Now()
	for _, r := range m.rooms {
		m.dropIfEmptyLocked(r, now)
	}
}

// Draining reports whether Drain was called.
func (m *Manager) Draining() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.draining
}

// WaitEmpty returns when there is no room left, or with ctx's error.
func (m *Manager) WaitEmpty(ctx context.Context) error {
	for {
		m.mu.Lock()
		n, changed := len(m.rooms), m.changed
		m.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// MoveAll tells every participant its room moves to another node (they
// get Closed{Reason: "room_moved"} and join again: several nodes drain so)
// and ends their sessions here.
func (m *Manager) MoveAll() {
	for _, r := range m.roomList() {
		r.endSessions("room_moved")
	}
}

// MoveRoom does what MoveAll does for one room (one that Redis placed on
// another node while this one was cut off).
func (m *Manager) MoveRoom(name string) {
	if r := m.Room(name); r != nil {
		r.endSessions("room_moved")
	}
}
