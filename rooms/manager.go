// Package rooms keeps rooms and their participants, applies limits and
// permissions, and wires each participant's published tracks to every other
// participant's subscriber connection.
package rooms

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-rtc/parley/sfu"
)

// Config limits what rooms may hold.
type Config struct {
	MaxParticipants         int           // per room; default 100
	MaxRooms                int           // per server; default 1000
	MaxTracksPerParticipant int           // default 8
	NegotiationTimeout      time.Duration // unanswered subscriber offer; default 20s
	Data                    DataConfig    // presence, chat and data messages
	// Events, when set, receives every room event (roomevents.go). It is
	// called with room locks held: it must return at once.
	Events func(Event)
}

// DataConfig limits what travels on the data channels (docs/protocol.md).
type DataConfig struct {
	History          int           // chat messages kept per room; default 200
	HistoryRetention time.Duration // keep an emptied room's history and ids this long; default 10m
	MaxMessageBytes  int           // largest message; default 16 KiB, at most sfu.MaxDataMessage
	MaxMetadataBytes int           // presence metadata; default 1 KiB
	RateLimit        int           // reliable messages per RateWindow; default 30
	RateWindow       time.Duration // default 10s
	LossyRateLimit   int           // lossy messages per second; default 60
	TypingTimeout    time.Duration // typing clears itself after this; default 6s
	AwayAfter        time.Duration // no message for this long: away; default 20s
	OfflineGrace     time.Duration // a dropped participant shows offline this long; default 30s
	StallTimeout     time.Duration // a client not reading its channel this long is dropped; default 10s
}

// validate fills defaults and names the first bad key.
func (c *DataConfig) validate() error {
	ints := []struct {
		key string
		v   *int
		def int
	}{{"data.history", &c.History, 200}, {"data.max_message_bytes", &c.MaxMessageBytes, 16 << 10},
		{"data.max_metadata_bytes", &c.MaxMetadataBytes, 1 << 10}, {"data.rate_limit", &c.RateLimit, 30},
		{"data.lossy_rate_limit", &c.LossyRateLimit, 60}}
	for _, x := range ints {
		if *x.v < 0 {
			return fmt.Errorf("%w: %s: %d is negative", ErrBadConfig, x.key, *x.v)
		}
		if *x.v == 0 {
			*x.v = x.def
		}
	}
	durs := []struct {
		key string
		v   *time.Duration
		def time.Duration
	}{{"data.history_retention", &c.HistoryRetention, 10 * time.Minute}, {"data.rate_window", &c.RateWindow, 10 * time.Second},
		{"data.typing_timeout", &c.TypingTimeout, 6 * time.Second}, {"data.away_after", &c.AwayAfter, 20 * time.Second},
		{"data.offline_grace", &c.OfflineGrace, 30 * time.Second}, {"data.stall_timeout", &c.StallTimeout, 10 * time.Second}}
	for _, x := range durs {
		if *x.v < 0 {
			return fmt.Errorf("%w: %s: %s is negative", ErrBadConfig, x.key, *x.v)
		}
		if *x.v == 0 {
			*x.v = x.def
		}
	}
	if c.MaxMessageBytes > sfu.MaxDataMessage {
		return fmt.Errorf("%w: data.max_message_bytes: %d is over the data channel limit of %d", ErrBadConfig, c.MaxMessageBytes, sfu.MaxDataMessage)
	}
	if c.MaxMetadataBytes >= c.MaxMessageBytes {
		return fmt.Errorf("%w: data.max_metadata_bytes: %d must be smaller than data.max_message_bytes (%d)", ErrBadConfig, c.MaxMetadataBytes, c.MaxMessageBytes)
	}
	if c.History > 10000 {
		return fmt.Errorf("%w: data.history: %d is over 10000", ErrBadConfig, c.History)
	}
	return nil
}

// heartbeatInterval is what clients are told: a few heartbeats per
// AwayAfter, so that one lost beat never makes anybody away.
func (c *DataConfig) heartbeatInterval() time.Duration {
	return max(c.AwayAfter/4, 100*time.Millisecond)
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
	return c.Data.validate()
}

// Manager owns every room of this server.
type Manager struct {
	cfg    Config
	engine *sfu.Engine
	log    *slog.Logger

	mu       sync.Mutex
	rooms    map[string]*Room
	chats    map[string]*chatLog // by room name; outlive their room for a while
	store    ChatStore           // nil: chat lives in this process only
	closed   bool
	draining bool
	changed  chan struct{} // closed and renewed whenever a room goes

	dataCounts [len(dataTypes)]atomic.Uint64 // data messages handled, by type
}

// NewManager makes a manager; engine provides the peer connections.
func NewManager(cfg Config, engine *sfu.Engine, log *slog.Logger) *Manager {
	_ = cfg.Validate()
	if log == nil {
		log = slog.Default()
	}
	return &Manager{cfg: cfg, engine: engine, log: log, rooms: map[string]*Room{}, chats: map[string]*chatLog{},
		changed: make(chan struct{})}
}

// SetChatStore keeps the rooms' chat in s too (several nodes share it).
// Call it before the first join: the store usually needs what is built
// after the Manager (a cluster node, which reports the Manager's load).
func (m *Manager) SetChatStore(s ChatStore) {
	m.mu.Lock()
	m.store = s
	m.mu.Unlock()
}

// loadChat reads what the store keeps of a room's chat, when there is a
// store and the room is not open here (a room that opens takes it). It
// does Redis I/O: never call it with m.mu held.
func (m *Manager) loadChat(room string) *ChatHistory {
	m.mu.Lock()
	store, open := m.store, m.rooms[room] != nil
	m.mu.Unlock()
	if store == nil || open {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), chatLoadTimeout)
	defer cancel()
	h, err := store.Load(ctx, room)
	if err != nil {
		m.log.Warn("the room's chat history could not be loaded; it starts with what this node kept", "room", room, "err", err)
		return nil
	}
	return &h
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
	part := newParticipant(p, &m.cfg)
	part.log = m.log.With("room", p.Room, "participant", part.sid, "identity", p.Identity)
	if err := part.connect(m.engine, m.cfg.NegotiationTimeout); err != nil {
		return nil, err
	}
	hist := m.loadChat(p.Room)

	m.mu.Lock()
	if m.closed || m.draining {
		m.mu.Unlock()
		part.closePeers()
		if m.draining && !m.closed {
			return nil, ErrDraining
		}
		return nil, ErrClosed
	}
	r, ok := m.rooms[p.Room]
	if !ok {
		if len(m.rooms) >= m.cfg.MaxRooms {
			m.mu.Unlock()
			part.closePeers()
			return nil, ErrTooManyRooms
		}
		r = m.newRoomLocked(p.Room, RoomOptions{}, hist)
	}
	part.room = r
	// Lock order: manager, then room. Holding the manager lock keeps an
	// emptied room from being deleted under us.
	replaced, err := r.add(part)
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

// dropIfEmpty closes a room nobody is in, at once or, for a room with an
// empty timeout, once it has stayed empty that long.
func (m *Manager) dropIfEmpty(r *Room) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dropIfEmptyLocked(r, time.Now())
}

func (m *Manager) dropIfEmptyLocked(r *Room, now time.Time) {
	r.mu.Lock()
	empty := len(r.parts) == 0
	if empty && r.emptySince.IsZero() {
		r.emptySince = now
	}
	since := r.emptySince
	r.mu.Unlock()
	if !empty || m.rooms[r.name] != r {
		return
	}
	if wait := r.opts.EmptyTimeout - now.Sub(since); wait > 0 && !m.draining && !m.closed {
		time.AfterFunc(wait, func() { m.dropIfEmpty(r) })
		return
	}
	m.dropLocked(r)
}

// dropLocked closes a room (its participants must be gone or going).
func (m *Manager) dropLocked(r *Room) {
	if m.rooms[r.name] != r {
		return
	}
	delete(m.rooms, r.name)
	close(r.stop)
	r.chat.mu.Lock()
	r.chat.released = time.Now()
	r.chat.mu.Unlock()
	if r.store != nil {
		r.store.Release(r.name)
	}
	m.emit(Event{Type: EventRoomFinished, Room: r.name})
	close(m.changed)
	m.changed = make(chan struct{})
	m.log.Info("room finished", "room", r.name)
}

// RoomOptions are a room's own limits.
type RoomOptions struct {
	MaxParticipants int           // 0: Config.MaxParticipants
	EmptyTimeout    time.Duration // keep the room this long while nobody is in it; 0: close at once
}

// newRoomLocked makes and registers a room, with the chat log its name
// had if it emptied less than HistoryRetention ago, and what the store
// kept of it (hist, nil without a store).
func (m *Manager) newRoomLocked(name string, opts RoomOptions, hist *ChatHistory) *Room {
	now := time.Now()
	for n, l := range m.chats {
		l.mu.Lock()
		expired := !l.released.IsZero() && now.Sub(l.released) >= m.cfg.Data.HistoryRetention
		l.mu.Unlock()
		if expired {
			delete(m.chats, n)
		}
	}
	l, ok := m.chats[name]
	if !ok {
		l = newChatLog(m.cfg.Data.History)
		m.chats[name] = l
	}
	l.mu.Lock()
	l.released = time.Time{}
	l.mu.Unlock()
	if hist != nil {
		l.merge(*hist)
	}
	if opts.MaxParticipants <= 0 {
		opts.MaxParticipants = m.cfg.MaxParticipants
	}
	r := &Room{name: name, mgr: m, parts: map[string]*Participant{}, created: now, opts: opts, emptySince: now,
		presence: map[string]*presence{}, screens: map[string]*Participant{}, chat: l, store: m.store, stop: make(chan struct{})}
	m.rooms[name] = r
	go r.janitor(janitorTick(&m.cfg.Data))
	go r.speakerLoop()
	m.emit(Event{Type: EventRoomStarted, Room: name})
	m.log.Info("room started", "room", name)
	return r
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
