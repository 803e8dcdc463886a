package rooms

import (
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
