package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/parley-rtc/parley/rooms"
)

// Room snapshots: each node writes what GET /api/rooms/{room} says of each
// of its rooms into a Redis hash of its own (room -> JSON), shortly after
// a room changes and every Refresh, with a TTL of a few node TTLs. Every
// node reads the others' hashes, so that the admin API of any node shows
// every room of the cluster; the hash of a node that dies vanishes with
// its TTL (and at once from listings, which read live nodes only).

func statesKey(node string) string { return prefix + "room-states:" + node }

// RoomSource is this node's rooms (a *rooms.Manager).
type RoomSource interface {
	AllRooms(full bool) []rooms.RoomDetails
	RoomDetails(name string) (rooms.RoomDetails, error)
}

// StateConfig times the snapshots; zero values take the defaults.
type StateConfig struct {
	Debounce time.Duration // wait after a change before writing; 300ms
	Refresh  time.Duration // rewrite every room this often (fresh counters); half the node TTL
	TTL      time.Duration // a node's snapshots vanish this long after its last write; three node TTLs
}

// roomState is a snapshot as stored.
type roomState struct {
	rooms.RoomDetails
	Updated int64 `json:"updated"` // unix milliseconds
}

// RoomStates writes this node's room snapshots and reads the others'.
type RoomStates struct {
	n   *Node
	src RoomSource
	cfg StateConfig
	log *slog.Logger

	mu    sync.Mutex
	dirty map[string]struct{}
	wake  chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	warnAt time.Time // the writer's own
}

// NewRoomStates starts writing src's rooms as node n's; Close stops and
// removes them.
func NewRoomStates(n *Node, src RoomSource, cfg StateConfig, log *slog.Logger) *RoomStates {
	if cfg.Debounce <= 0 {
		cfg.Debounce = 300 * time.Millisecond
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = n.cfg.NodeTTL / 2
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 3 * n.cfg.NodeTTL
	}
	cfg.TTL = max(cfg.TTL, 2*cfg.Refresh)
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &RoomStates{n: n, src: src, cfg: cfg, log: log, dirty: map[string]struct{}{}, wake: make(chan struct{}, 1), ctx: ctx, cancel: cancel}
	s.wg.Add(1)
	go s.run()
	return s
}

// Changed notes that a room of this node changed (or closed); its
// snapshot is written within Debounce. It never blocks.
func (s *RoomStates) Changed(room string) {
	s.mu.Lock()
	s.dirty[room] = struct{}{}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Close stops the writer and removes this node's snapshots.
func (s *RoomStates) Close() {
	s.cancel()
	s.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.n.rdb.Del(ctx, statesKey(s.n.ID())).Err()
}

func (s *RoomStates) run() {
	defer s.wg.Done()
	refresh := time.NewTicker(s.cfg.Refresh)
	defer refresh.Stop()
	s.writeAll()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-refresh.C:
			s.writeAll()
		case <-s.wake:
			select {
			case <-time.After(s.cfg.Debounce):
			case <-s.ctx.Done():
				return
			}
			s.writeDirty()
		}
	}
}

func (s *RoomStates) encode(d rooms.RoomDetails, now int64) []byte {
	d.Node = s.n.ID()
	b, _ := json.Marshal(roomState{RoomDetails: d, Updated: now})
	return b
}

// writeDirty writes the rooms that changed, and removes those that closed.
func (s *RoomStates) writeDirty() {
	s.mu.Lock()
	dirty := s.dirty
	s.dirty = map[string]struct{}{}
	s.mu.Unlock()
	if len(dirty) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
	defer cancel()
	key, now := statesKey(s.n.ID()), time.Now().UnixMilli()
	pipe := s.n.rdb.TxPipeline()
	for name := range dirty {
		d, err := s.src.RoomDetails(name)
		if err != nil {
			pipe.HDel(ctx, key, name)
			continue
		}
		pipe.HSet(ctx, key, name, s.encode(d, now))
	}
	pipe.PExpire(ctx, key, s.cfg.TTL)
	if _, err := pipe.Exec(ctx); err != nil {
		s.warn(err)
	}
}

// writeAll replaces this node's snapshots with the current rooms.
func (s *RoomStates) writeAll() {
	s.mu.Lock()
	s.dirty = map[string]struct{}{} // the rooms are read after this
	s.mu.Unlock()
	list := s.src.AllRooms(true)
	ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
	defer cancel()
	key, now := statesKey(s.n.ID()), time.Now().UnixMilli()
	pipe := s.n.rdb.TxPipeline()
	pipe.Del(ctx, key)
	if len(list) > 0 {
		args := make([]any, 0, 2*len(list))
		for _, d := range list {
			args = append(args, d.Name, s.encode(d, now))
		}
		pipe.HSet(ctx, key, args...)
		pipe.PExpire(ctx, key, s.cfg.TTL)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		s.warn(err)
	}
}

// warn logs at most one warning every ten seconds.
func (s *RoomStates) warn(err error) {
	if now := time.Now(); now.Sub(s.warnAt) >= 10*time.Second {
		s.warnAt = now
		s.log.Warn("room snapshots could not be written to Redis; other nodes see this node's rooms as they were", "err", err)
	}
}

// others are the live nodes but this one, as last read.
func (s *RoomStates) others() []string {
	var ids []string
	for _, i := range s.n.Nodes() {
		if i.ID != s.n.ID() {
			ids = append(ids, i.ID)
		}
	}
	return ids
}

// Rooms lists the rooms of the other live nodes, with their participants,
// as last written, by name.
func (s *RoomStates) Rooms(ctx context.Context) ([]rooms.RoomDetails, error) {
	ids := s.others()
	if len(ids) == 0 {
		return nil, nil
	}
	pipe := s.n.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGetAll(ctx, statesKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, s.n.unavailable(err)
	}
	var out []rooms.RoomDetails
	for i, c := range cmds {
		for _, v := range c.Val() {
			var st roomState
			if json.Unmarshal([]byte(v), &st) != nil {
				continue
			}
			st.Node = ids[i]
			out = append(out, st.RoomDetails)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Node < out[j].Node
	})
	return out, nil
}

// Room returns the snapshot of a room another live node holds (the newest,
// should two have it while it moves); ok is false when none does.
func (s *RoomStates) Room(ctx context.Context, name string) (d rooms.RoomDetails, ok bool, err error) {
	ids := s.others()
	if len(ids) == 0 {
		return d, false, nil
	}
	pipe := s.n.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGet(ctx, statesKey(id), name)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return d, false, s.n.unavailable(err)
	}
	var newest int64
	for i, c := range cmds {
		var st roomState
		if c.Err() != nil || json.Unmarshal([]byte(c.Val()), &st) != nil || (ok && st.Updated <= newest) {
			continue
		}
		st.Node = ids[i]
		d, ok, newest = st.RoomDetails, true, st.Updated
	}
	return d, ok, nil
}
