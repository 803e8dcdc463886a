package cluster

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Room events for every node: each node publishes its own events on one
// Redis channel and hands the other nodes' events to its receiver, so
// that the event stream of any node shows every room of the cluster.
// Publishing goes through a bounded queue to one goroutine: it never
// blocks the rooms.

const eventsChannel = prefix + "events"

// eventFrame is what travels on the channel.
type eventFrame struct {
	From  string          `json:"from"`
	Event json.RawMessage `json:"event"`
}

// EventRelay shares room events between the nodes.
type EventRelay struct {
	n       *Node
	recv    func(data []byte)
	log     *slog.Logger
	q       chan []byte
	dropped atomic.Uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	warnAt time.Time // the publisher's own
}

// relayQueue is how many events wait to be published.
const relayQueue = 4096

// NewEventRelay starts relaying: recv gets each event JSON another node
// published, in the order it published them (on one goroutine). Close
// stops it.
func NewEventRelay(n *Node, recv func(data []byte), log *slog.Logger) *EventRelay {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &EventRelay{n: n, recv: recv, log: log, q: make(chan []byte, relayQueue), ctx: ctx, cancel: cancel}
	r.wg.Add(2)
	go r.publishLoop()
	go r.receiveLoop()
	return r
}

// Publish queues one of this node's events (its JSON) for the others; it
// never blocks: when Redis cannot keep up the event is dropped (counted).
func (r *EventRelay) Publish(data []byte) {
	select {
	case r.q <- data:
	default:
		r.dropped.Add(1)
	}
}

// Dropped counts the events the other nodes did not get from this one.
func (r *EventRelay) Dropped() uint64 { return r.dropped.Load() }

// Close stops relaying, after sending what is queued (for at most a
// second: the last events of a node that stops, its rooms finishing).
func (r *EventRelay) Close() {
	r.cancel()
	r.wg.Wait()
}

func (r *EventRelay) publishLoop() {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			for len(r.q) > 0 && ctx.Err() == nil {
				r.publish(ctx, <-r.q)
			}
			return
		case data := <-r.q:
			ctx, cancel := context.WithTimeout(r.ctx, 2*time.Second)
			r.publish(ctx, data)
			cancel()
		}
	}
}

func (r *EventRelay) publish(ctx context.Context, data []byte) {
	frame, _ := json.Marshal(eventFrame{From: r.n.ID(), Event: data})
	if err := r.n.rdb.Publish(ctx, eventsChannel, frame).Err(); err != nil {
		r.dropped.Add(1)
		if now := time.Now(); now.Sub(r.warnAt) >= 10*time.Second {
			r.warnAt = now
			r.log.Warn("room events could not be published to the other nodes", "err", err, "lost_so_far", r.dropped.Load())
		}
	}
}

// receiveLoop hands the other nodes' events to recv. go-redis subscribes
// again by itself after Redis comes back.
func (r *EventRelay) receiveLoop() {
	defer r.wg.Done()
	sub := r.n.rdb.Subscribe(r.ctx, eventsChannel)
	defer sub.Close()
	ch := sub.Channel(redisChannelOptions()...)
	for {
		select {
		case <-r.ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			var f eventFrame
			if json.Unmarshal([]byte(m.Payload), &f) != nil || f.From == r.n.ID() || len(f.Event) == 0 {
				continue
			}
			r.recv(f.Event)
		}
	}
}
