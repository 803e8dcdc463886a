package rooms

import (
	"context"
	"sort"
	"sync"
	"time"
)

// ChatMessage is one chat message, as kept in a room's history and sent
// to clients (docs/protocol.md, "Chat").
type ChatMessage struct {
	Type     string `json:"type"` // always "chat"
	ID       string `json:"id"`
	From     string `json:"from"`
	FromName string `json:"from_name"`
	FromSID  string `json:"from_sid"`
	To       string `json:"to,omitempty"`
	Text     string `json:"text"`
	TS       int64  `json:"ts"` // server time, unix milliseconds
}

// visibleTo reports whether identity may see m: room messages, and direct
// messages to or from it.
func (m *ChatMessage) visibleTo(identity string) bool {
	return m.To == "" || m.To == identity || m.From == identity
}

// ChatID is the id of a recent chat message with its sender and time:
// what a room remembers to recognize a message sent again.
type ChatID struct {
	ID   string `json:"id"`
	From string `json:"from"`
	TS   int64  `json:"ts"`
}

// ChatHistory is what a ChatStore keeps of a room's chat.
type ChatHistory struct {
	Messages []ChatMessage // the last data.history messages, oldest first
	IDs      []ChatID      // recent message ids, oldest first (those of Messages too)
}

// ChatStore keeps the rooms' chat where every node finds it (Redis, in a
// cluster): a room that opens again on another node, e.g. after its node
// died, keeps its history and still recognizes resent messages. Without
// one, a room's chat lives in this process only (the Manager keeps it for
// data.history_retention after the room closes).
type ChatStore interface {
	// Load returns what is kept of a room's chat. It is called before the
	// room opens here, never with the Manager's lock held.
	Load(ctx context.Context, room string) (ChatHistory, error)
	// Append keeps a new message. It is called on the data path, with the
	// room's data lock held: it must not block.
	Append(room string, m ChatMessage)
	// Release says the room closed here: its history expires after
	// data.history_retention unless the room opens again. It must not
	// block.
	Release(room string)
}

// chatLoadTimeout bounds the wait for a store's history when a room opens.
const chatLoadTimeout = 2 * time.Second

// minSeenIDs is how many recent message ids a room remembers at least, so
// that a message resent after a reconnect is recognized.
const minSeenIDs = 4096

type seenID struct {
	from string
	ts   int64
}

// chatLog is a room's chat history (a ring of the last max messages) and
// the ids of its recent messages. It outlives the Room for a while (the
// Manager keeps it), so that a room that empties and fills again, e.g.
// when its only participant reconnects, keeps both.
type chatLog struct {
	mu       sync.Mutex
	msgs     []ChatMessage // ring
	start, n int
	seen     map[string]seenID
	ids      []string // ring of the ids in seen, oldest at idStart
	idStart  int
	released time.Time // when its room emptied; zero while a room uses it
}

func newChatLog(history int) *chatLog {
	return &chatLog{msgs: make([]ChatMessage, history), seen: map[string]seenID{}, ids: make([]string, 0, 64)}
}

// add stores m unless a message with its id was stored before. It returns
// the timestamp of the stored message (the earlier one for a duplicate),
// whether it was a duplicate, and whether the id belongs to another
// sender (then nothing is stored).
func (l *chatLog) add(m ChatMessage) (ts int64, dup, foreign bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.seen[m.ID]; ok {
		return s.ts, true, s.from != m.From
	}
	l.remember(m.ID, seenID{from: m.From, ts: m.TS})
	if len(l.msgs) > 0 {
		i := (l.start + l.n) % len(l.msgs)
		l.msgs[i] = m
		if l.n < len(l.msgs) {
			l.n++
		} else {
			l.start = (l.start + 1) % len(l.msgs)
		}
	}
	return m.TS, false, false
}

func (l *chatLog) remember(id string, s seenID) {
	limit := max(minSeenIDs, len(l.msgs))
	if len(l.ids) < limit {
		l.ids = append(l.ids, id)
	} else {
		delete(l.seen, l.ids[l.idStart])
		l.ids[l.idStart] = id
		l.idStart = (l.idStart + 1) % limit
	}
	l.seen[id] = s
}

// history returns the kept messages identity may see, oldest first.
func (l *chatLog) history(identity string) []ChatMessage {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]ChatMessage, 0, l.n)
	for i := 0; i < l.n; i++ {
		m := &l.msgs[(l.start+i)%len(l.msgs)]
		if m.visibleTo(identity) {
			out = append(out, *m)
		}
	}
	return out
}

// merge adds what a store kept of the room's chat (the room was open on
// another node meanwhile, or this process never had it): the ids it does
// not know, and the messages it lacks, in time order, of which the last
// data.history stay.
func (l *chatLog) merge(h ChatHistory) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range h.IDs {
		if _, ok := l.seen[id.ID]; !ok && id.ID != "" {
			l.remember(id.ID, seenID{from: id.From, ts: id.TS})
		}
	}
	all := make([]ChatMessage, 0, l.n+len(h.Messages))
	have := make(map[string]bool, l.n+len(h.Messages))
	for i := 0; i < l.n; i++ {
		m := l.msgs[(l.start+i)%len(l.msgs)]
		all = append(all, m)
		have[m.ID] = true
	}
	added := false
	for _, m := range h.Messages {
		if have[m.ID] || m.ID == "" {
			continue
		}
		have[m.ID] = true
		if _, ok := l.seen[m.ID]; !ok {
			l.remember(m.ID, seenID{from: m.From, ts: m.TS})
		}
		all = append(all, m)
		added = true
	}
	if !added || len(l.msgs) == 0 {
		return
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].TS < all[j].TS })
	if len(all) > len(l.msgs) {
		all = all[len(all)-len(l.msgs):]
	}
	l.start, l.n = 0, copy(l.msgs, all)
}
