// Package events numbers the server's room events, keeps the recent ones
// for streams that reconnect, wakes the streams that wait for new ones, and
// delivers them to webhooks (docs/api.md, "Events").
package events

import (
	"encoding/json"
	"sync"

	"github.com/parley-rtc/parley/rooms"
)

// Event is a room event as streamed and POSTed.
type Event struct {
	ID          int64                   `json:"id"`
	Type        string                  `json:"type"`
	Time        int64                   `json:"time"` // unix milliseconds
	Room        string                  `json:"room"`
	Participant *rooms.EventParticipant `json:"participant,omitempty"`
	Track       *Track                  `json:"track,omitempty"`
	Reason      string                  `json:"reason,omitempty"`
	// Node is the node the room is on, in a cluster (empty alone).
	Node string `json:"node,omitempty"`
}

// Track is the track of a track event.
type Track struct {
	SID    string `json:"sid"`
	Kind   string `json:"kind,omitempty"`
	Source string `json:"source,omitempty"`
	Muted  *bool  `json:"muted,omitempty"`
	Codec  string `json:"codec,omitempty"`
}

// Keep is how many recent events a Bus keeps by default.
const Keep = 1000

// Bus numbers events and keeps the last ones in a ring.
type Bus struct {
	mu      sync.Mutex
	ring    []Event
	next    int64         // id of the next event; ids start at 1
	changed chan struct{} // closed and renewed on every event
	hooks   []func(Event, []byte)
	node    string // stamped on this node's events
}

// NewBus keeps the last keep events (Keep when 0).
func NewBus(keep int) *Bus {
	if keep <= 0 {
		keep = Keep
	}
	return &Bus{ring: make([]Event, keep), next: 1, changed: make(chan struct{})}
}

// SetNode names this node in its events (a cluster); call it before the
// first event.
func (b *Bus) SetNode(id string) {
	b.mu.Lock()
	b.node = id
	b.mu.Unlock()
}

// OnEvent adds a receiver of every event of this node with its JSON
// (webhooks, other nodes); not of the events of other nodes
// (PublishRemote). It is called with the bus locked: it must return at
// once.
func (b *Bus) OnEvent(f func(Event, []byte)) {
	b.mu.Lock()
	b.hooks = append(b.hooks, f)
	b.mu.Unlock()
}

// Publish numbers a room event and keeps it. It suits rooms.Config.Events:
// it never blocks.
func (b *Bus) Publish(ev rooms.Event) {
	e := Event{Type: ev.Type, Time: ev.Time.UnixMilli(), Room: ev.Room, Participant: ev.Participant, Reason: ev.Reason}
	if t := ev.Track; t != nil {
		e.Track = &Track{SID: t.SID, Kind: t.Kind, Source: t.Source, Codec: t.Codec}
		if ev.Type == rooms.EventTrackMuted || ev.Type == rooms.EventTrackPublished {
			muted := t.Muted
			e.Track.Muted = &muted
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e.Node = b.node
	b.keepLocked(&e)
	if len(b.hooks) > 0 {
		data, _ := json.Marshal(e)
		for _, h := range b.hooks {
			h(e, data)
		}
	}
}

// PublishRemote keeps an event of another node of the cluster (its JSON,
// as that node numbered it) for this node's streams, numbered anew. It
// goes to no OnEvent receiver: the node it happened on sends its
// webhooks.
func (b *Bus) PublishRemote(data []byte) error {
	var e Event
	if err := json.Unmarshal(data, &e); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.keepLocked(&e)
	return nil
}

// keepLocked numbers e, keeps it and wakes the streams.
func (b *Bus) keepLocked(e *Event) {
	e.ID = b.next
	b.next++
	b.ring[e.ID%int64(len(b.ring))] = *e
	close(b.changed)
	b.changed = make(chan struct{})
}

// Last is the id of the newest event (0 before the first).
func (b *Bus) Last() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.next - 1
}

// After returns the kept events with ids above id, oldest first, and a
// channel closed when a newer event comes. missed is true when events
// after id are no longer kept (the first returned is then the oldest kept).
func (b *Bus) After(id int64) (evs []Event, changed <-chan struct{}, missed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	oldest := max(b.next-int64(len(b.ring)), 1)
	from := id + 1
	if from < oldest {
		from, missed = oldest, true
	}
	for i := from; i < b.next; i++ {
		evs = append(evs, b.ring[i%int64(len(b.ring))])
	}
	return evs, b.changed, missed
}

// Oldest is the id of the oldest kept event.
func (b *Bus) Oldest() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(b.next-int64(len(b.ring)), 1)
}
