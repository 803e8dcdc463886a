package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/parley-rtc/parley/rooms"
)

// Chat history in Redis (rooms.ChatStore): a list of the last
// data.history messages per room and a list of its recent message ids,
// so that a room placed again on another node, e.g. after its node died,
// keeps both. Writes go through a bounded queue to one goroutine: a slow
// or absent Redis never blocks chat (what does not fit is dropped, and
// counted).

func chatKey(room string) string    { return prefix + "chat:" + room }
func chatIDsKey(room string) string { return prefix + "chat-ids:" + room }

// ChatConfig of a ChatStore.
type ChatConfig struct {
	History   int           // messages kept per room (data.history)
	Retention time.Duration // how long a closed room's history stays (data.history_retention)
	IDs       int           // message ids kept per room; default max(4096, History)
	Queue     int           // writes waiting; default 4096
	// Rooms lists the rooms open on this node: their history does not
	// expire while they are (it is renewed every Retention/4, at most a
	// minute). A node that dies stops renewing: its rooms' history lives
	// on for Retention and a little more.
	Rooms func() []string
}

// ChatStore keeps the rooms' chat in Redis; it is a rooms.ChatStore.
type ChatStore struct {
	cfg     ChatConfig
	rdb     *redis.Client
	log     *slog.Logger
	q       chan chatOp
	closed  atomic.Bool
	dropped atomic.Uint64
	failed  atomic.Uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	warnAt time.Time // last warning; the writer's own
}

type chatOp struct {
	room string
	msg  []byte // nil: release
	id   []byte
}

// chatBatch is the most writes one round trip carries.
const chatBatch = 256

// NewChatStore starts the store's writer on rdb (Node.Redis()); Close
// stops it.
func NewChatStore(rdb *redis.Client, cfg ChatConfig, log *slog.Logger) (*ChatStore, error) {
	if cfg.History < 1 || cfg.Retention <= 0 || cfg.IDs < 0 || cfg.Queue < 0 {
		return nil, fmt.Errorf("%w: chat history needs data.history >= 1 and data.history_retention > 0", ErrBadConfig)
	}
	if cfg.IDs == 0 {
		cfg.IDs = max(4096, cfg.History)
	}
	if cfg.Queue == 0 {
		cfg.Queue = 4096
	}
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &ChatStore{cfg: cfg, rdb: rdb, log: log, q: make(chan chatOp, cfg.Queue), ctx: ctx, cancel: cancel}
	s.wg.Add(1)
	go s.run()
	return s, nil
}

// renewEvery is how often the history of open rooms is kept from
// expiring; heldTTL the expiry it gets meanwhile.
func (s *ChatStore) renewEvery() time.Duration {
	return min(max(s.cfg.Retention/4, 100*time.Millisecond), time.Minute)
}

func (s *ChatStore) heldTTL() time.Duration { return s.cfg.Retention + 2*s.renewEvery() }

// Load returns what Redis keeps of a room's chat.
func (s *ChatStore) Load(ctx context.Context, room string) (rooms.ChatHistory, error) {
	pipe := s.rdb.Pipeline()
	msgs := pipe.LRange(ctx, chatKey(room), 0, -1)
	ids := pipe.LRange(ctx, chatIDsKey(room), 0, -1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return rooms.ChatHistory{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var h rooms.ChatHistory
	for _, raw := range msgs.Val() {
		var m rooms.ChatMessage
		if json.Unmarshal([]byte(raw), &m) == nil && m.ID != "" {
			h.Messages = append(h.Messages, m)
		}
	}
	for _, raw := range ids.Val() {
		var id rooms.ChatID
		if json.Unmarshal([]byte(raw), &id) == nil && id.ID != "" {
			h.IDs = append(h.IDs, id)
		}
	}
	return h, nil
}

// Append queues a message for Redis; it never blocks.
func (s *ChatStore) Append(room string, m rooms.ChatMessage) {
	msg, err := json.Marshal(m)
	if err != nil {
		return
	}
	id, _ := json.Marshal(rooms.ChatID{ID: m.ID, From: m.From, TS: m.TS})
	s.enqueue(chatOp{room: room, msg: msg, id: id})
}

// Release queues the expiry of a room's history after Retention.
func (s *ChatStore) Release(room string) { s.enqueue(chatOp{room: room}) }

func (s *ChatStore) enqueue(op chatOp) {
	if s.closed.Load() {
		return
	}
	select {
	case s.q <- op:
	default:
		s.dropped.Add(1)
	}
}

// Dropped counts the writes lost: the queue was full (Redis too slow or
// away) or Redis refused them.
func (s *ChatStore) Dropped() uint64 { return s.dropped.Load() + s.failed.Load() }

// Close writes what is queued (for at most two seconds) and stops.
func (s *ChatStore) Close() {
	if s.closed.Swap(true) {
		return
	}
	s.cancel()
	s.wg.Wait()
}

func (s *ChatStore) run() {
	defer s.wg.Done()
	renew := time.NewTicker(s.renewEvery())
	defer renew.Stop()
	batch := make([]chatOp, 0, chatBatch)
	for {
		select {
		case <-s.ctx.Done():
			s.flushQueued(batch[:0])
			return
		case <-renew.C:
			s.renew()
		case op := <-s.q:
			batch = append(batch[:0], op)
			for len(batch) < chatBatch && len(s.q) > 0 {
				batch = append(batch, <-s.q)
			}
			// Not s.ctx: Close waits for a write under way.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			s.write(ctx, batch)
			cancel()
		}
	}
}

// flushQueued writes what was queued before Close.
func (s *ChatStore) flushQueued(batch []chatOp) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		batch = batch[:0]
		for len(batch) < chatBatch && len(s.q) > 0 {
			batch = append(batch, <-s.q)
		}
		if len(batch) == 0 {
			return
		}
		s.write(ctx, batch)
	}
}

// write sends a batch in one round trip.
func (s *ChatStore) write(ctx context.Context, batch []chatOp) {
	held, retention := s.heldTTL(), s.cfg.Retention
	pipe := s.rdb.Pipeline()
	for _, op := range batch {
		keys := [2]string{chatKey(op.room), chatIDsKey(op.room)}
		if op.msg == nil {
			for _, k := range keys {
				pipe.PExpire(ctx, k, retention)
			}
			continue
		}
		pipe.RPush(ctx, keys[0], op.msg)
		pipe.LTrim(ctx, keys[0], int64(-s.cfg.History), -1)
		pipe.RPush(ctx, keys[1], op.id)
		pipe.LTrim(ctx, keys[1], int64(-s.cfg.IDs), -1)
		for _, k := range keys {
			pipe.PExpire(ctx, k, held)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		s.failed.Add(uint64(len(batch)))
		s.warn("chat history could not be written to Redis; rooms keep it here, other nodes will miss it", err)
	}
}

// renew keeps the history of the rooms open here from expiring.
func (s *ChatStore) renew() {
	if s.cfg.Rooms == nil {
		return
	}
	list := s.cfg.Rooms()
	if len(list) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
	defer cancel()
	held := s.heldTTL()
	pipe := s.rdb.Pipeline()
	for _, r := range list {
		pipe.PExpire(ctx, chatKey(r), held)
		pipe.PExpire(ctx, chatIDsKey(r), held)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		s.warn("the chat history of open rooms could not be renewed in Redis", err)
	}
}

// warn logs at most one warning every ten seconds.
func (s *ChatStore) warn(msg string, err error) {
	if now := time.Now(); now.Sub(s.warnAt) >= 10*time.Second {
		s.warnAt = now
		s.log.Warn(msg, "err", err, "lost_so_far", s.Dropped())
	}
}
