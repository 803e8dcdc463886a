// Package rooms keeps rooms and their participants, applies limits and
// permissions, and wires each participant's published tracks to every other
// participant's subscriber connection.
package rooms

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/parley-rtc/parley/sfu"
)

// Config limits what rooms may hold.
type Config struct {
	MaxParticipants         int           // per room; default 100
	MaxRooms                int           // per server; default 1000
	MaxTracksPerParticipant int           // default 8
	NegotiationTimeout      time.Duration // unanswered subscriber offer; default 20s
}

// Validate fills defaults and names the first bad key.
func (c *Config) Validate() error {
	if c.MaxParticipants < 0 {
		return fmt.Errorf("%w: rooms.max_participants: %d is negative", ErrBadConfig, c.MaxParticipants)
	}
	if c.MaxRooms < 0 {
		return fmt.Errorf("%w: rooms.max_rooms: %d is negative", ErrBadConfig, c.MaxRooms)
	}
	if c.MaxTracksPerParticipant < 0 {
		return fmt.Errorf("%w: rooms.max_tracks_per_participant: %d is negative", ErrBadConfig, c.MaxTracksPerParticipant)
	}
	if c.MaxParticipants == 0 {
		c.MaxParticipants = 100
	}
	if c.MaxRooms == 0 {
		c.MaxRooms = 1000
	}
	if c.MaxTracksPerParticipant == 0 {
		c.MaxTracksPerParticipant = 8
	}
	if c.NegotiationTimeout <= 0 {
		c.NegotiationTimeout = 20 * time.Second
	}
	return nil
}

// Manager owns every room of this server.
type Manager struct {
	cfg    Config
	engine *sfu.Engine
	log    *slog.Logger

	mu     sync.Mutex
	rooms  map[string]*Room
	closed bool
}

// NewManager makes a manager; engine provides the peer connections.
func NewManager(cfg Config, engine *sfu.Engine, log *slog.Logger) *Manager {
	_ = cfg.Validate()
	if log == nil {
		log = slog.Default()
	}
	return &Manager{cfg: cfg, engine: engine, log: log, rooms: map[string]*Room{}}
}

// JoinParams describe a participant joining with a verified token.
type JoinParams struct {
	Room, Identity, Name string
	Grants               Grants
	Sink                 Sink
}

// Join adds a participant to its room, creating the room if needed. The
// first event on p.Sink is Joined. An identity already in the room replaces
// the older session, which gets Closed{Reason: "duplicate_identity"}.
func (m *Manager) Join(p JoinParams) (*Participant, error) {
	part := &Participant{
		sid: newID("PA_"), identity: p.Identity, name: p.Name, grants: p.Grants,
		joinedAt: time.Now(), sink: p.Sink, tracks: map[string]*published{}, descs: map[string]TrackDesc{},
		maxTracks: m.cfg.MaxTracksPerParticipant,
	}
	part.log = m.log.With("room", p.Room, "participant", part.sid, "identity", p.Identity)
	if err := part.connect(m.engine, m.cfg.NegotiationTimeout); err != nil {
		return nil, err
	}

	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		part.closePeers()
		return nil, ErrClosed
	}
	r, ok := m.rooms[p.Room]
	if !ok {
		if len(m.rooms) >= m.cfg.MaxRooms {
			m.mu.Unlock()
			part.closePeers()
			return nil, ErrTooManyRooms
		}
		r = &Room{name: p.Room, mgr: m, parts: map[string]*Participant{}, created: time.Now()}
		m.rooms[p.Room] = r
		m.log.Info("room started", "room", p.Room)
	}
	part.room = r
	// Lock order: manager, then room. Holding the manager lock keeps an
	// emptied room from being deleted under us.
	replaced, err := r.add(part, m.cfg.MaxParticipants)
	m.mu.Unlock()
	if err != nil {
		part.closePeers()
		m.dropIfEmpty(r)
		return nil, err
	}
	if replaced != nil {
		replaced.sink.Send(Closed{Reason: "duplicate_identity"})
		replaced.leave("duplicate_identity")
	}
	part.log.Info("participant joined")
	return part, nil
}

func (m *Manager) dropIfEmpty(r *Room) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r.mu.Lock()
	empty := len(r.parts) == 0
	r.mu.Unlock()
	if empty && m.rooms[r.name] == r {
		delete(m.rooms, r.name)
		m.log.Info("room finished", "room", r.name)
	}
}

// Room returns a room by name, or nil.
func (m *Manager) Room(name string) *Room {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rooms[name]
}

// Rooms returns the names of the current rooms.
func (m *Manager) Rooms() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := make([]string, 0, len(m.rooms))
	for n := range m.rooms {
		names = append(names, n)
	}
	return names
}

// Close refuses new joins and ends every session with reason.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	var all []*Participant
	for _, r := range m.rooms {
		r.mu.Lock()
		for _, p := range r.parts {
			all = append(all, p)
		}
		r.mu.Unlock()
	}
	m.mu.Unlock()
	for _, p := range all {
		p.sink.Send(Closed{Reason: "server_shutdown"})
		p.leave("server_shutdown")
	}
}

// newID returns prefix plus 12 random base32 characters.
func newID(prefix string) string {
	const alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
	var b [12]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return prefix + string(b[:])
}
