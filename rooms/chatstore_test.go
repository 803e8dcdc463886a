package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// memStore is a ChatStore in memory. Load checks that the Manager's lock
// is free (Redis I/O must never happen under it).
type memStore struct {
	t *testing.T
	m *Manager

	mu       sync.Mutex
	kept     map[string]ChatHistory
	loads    []string
	appended []string // room/id
	released []string
}

func newMemStore(t *testing.T) *memStore { return &memStore{t: t, kept: map[string]ChatHistory{}} }

func (s *memStore) Load(_ context.Context, room string) (ChatHistory, error) {
	if s.m != nil {
		if !s.m.mu.TryLock() {
			s.t.Error("Load was called with the Manager's lock held")
		} else {
			s.m.mu.Unlock()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loads = append(s.loads, room)
	return s.kept[room], nil
}

func (s *memStore) Append(room string, m ChatMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.appended = append(s.appended, room+"/"+m.ID)
	h := s.kept[room]
	h.Messages = append(h.Messages, m)
	h.IDs = append(h.IDs, ChatID{ID: m.ID, From: m.From, TS: m.TS})
	s.kept[room] = h
}

func (s *memStore) Release(room string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.released = append(s.released, room)
}

func (s *memStore) snapshot() (loads, appended, released []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.loads...), append([]string(nil), s.appended...), append([]string(nil), s.released...)
}

// recPort is a data port that keeps every message.
type recPort struct {
	mu   sync.Mutex
	msgs []string
}

func (p *recPort) Send(msg string, _ time.Duration) error {
	p.mu.Lock()
	p.msgs = append(p.msgs, msg)
	p.mu.Unlock()
	return nil
}

func (p *recPort) SendLossy(string) error { return nil }

// find waits for the first message of type typ (and containing sub).
func (p *recPort) find(t *testing.T, typ, sub string) string {
	t.Helper()
	var found string
	waitUntil(t, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, m := range p.msgs {
			if strings.Contains(m, `"type":"`+typ+`"`) && strings.Contains(m, sub) {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

func joinData(t *testing.T, m *Manager, room, identity string) *Participant {
	t.Helper()
	p, err := m.Join(JoinParams{Room: room, Identity: identity, Name: identity, Grants: Grants{Subscribe: true, Data: true}, Sink: &recSink{}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func historyIDs(t *testing.T, raw string) string {
	t.Helper()
	var h historyMsg
	if err := json.Unmarshal([]byte(raw), &h); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range h.Messages {
		ids = append(ids, m.ID)
	}
	return strings.Join(ids, ",")
}

// TestChatStoreFeedsAndKeepsTheRoom: a room that opens takes what the
// store kept (trimmed to data.history, in time order, its ids still
// recognized), every new message goes to the store, and the store is told
// when the room closes. The store is read outside the Manager's lock.
func TestChatStoreFeedsAndKeepsTheRoom(t *testing.T) {
	m := newManager(t, Config{NegotiationTimeout: time.Hour, Data: DataConfig{History: 3}})
	s := newMemStore(t)
	s.m = m
	m.SetChatStore(s)
	var kept ChatHistory
	for i := 1; i <= 4; i++ {
		msg := ChatMessage{Type: "chat", ID: fmt.Sprint("k", i), From: "carol", Text: "hi", TS: int64(1000 + i)}
		kept.Messages = append(kept.Messages, msg)
		kept.IDs = append(kept.IDs, ChatID{ID: msg.ID, From: msg.From, TS: msg.TS})
	}
	kept.IDs = append([]ChatID{{ID: "gone", From: "alice", TS: 5}}, kept.IDs...) // out of the history, id remembered
	s.kept["r"] = kept

	alice := joinData(t, m, "r", "alice")
	bob := joinData(t, m, "r", "bob") // the room is open: no second load
	if loads, _, _ := s.snapshot(); strings.Join(loads, ",") != "r" {
		t.Fatalf("loads %v, want one for r", loads)
	}
	ap, bp := &recPort{}, &recPort{}
	alice.attachData(ap)
	bob.attachData(bp)
	if got := historyIDs(t, bp.find(t, "history", "")); got != "k2,k3,k4" {
		t.Fatalf("bob's history %s, want the last three kept", got)
	}

	alice.handleData(false, []byte(`{"type":"chat","id":"gone","text":"again"}`))
	if ack := ap.find(t, "chat_ack", `"id":"gone"`); !strings.Contains(ack, `"duplicate":true`) || !strings.Contains(ack, `"ts":5`) {
		t.Fatalf("a resent message the store remembers: %s", ack)
	}
	bob.handleData(false, []byte(`{"type":"chat","id":"k2","text":"not mine"}`))
	if e := bp.find(t, "error", `"id":"k2"`); !strings.Contains(e, "another participant") {
		t.Fatalf("an id of carol's: %s", e)
	}
	alice.handleData(false, []byte(`{"type":"chat","id":"n1","text":"new"}`))
	bp.find(t, "chat", `"id":"n1"`)
	if _, appended, _ := s.snapshot(); strings.Join(appended, ",") != "r/n1" {
		t.Fatalf("appended %v, want r/n1 only (no duplicates, no refused)", appended)
	}

	alice.Leave("left")
	bob.Leave("left")
	waitUntil(t, func() bool { _, _, released := s.snapshot(); return strings.Join(released, ",") == "r" })

	// Opened again, on this node: the store is read again and what this
	// node kept merges with it (one copy of each message).
	s.mu.Lock()
	h := s.kept["r"]
	h.Messages = append(h.Messages, ChatMessage{Type: "chat", ID: "elsewhere", From: "dan", Text: "while away", TS: time.Now().UnixMilli() + 1000})
	s.kept["r"] = h
	s.mu.Unlock()
	eve := joinData(t, m, "r", "eve")
	ep := &recPort{}
	eve.attachData(ep)
	if got := historyIDs(t, ep.find(t, "history", "")); got != "k4,n1,elsewhere" {
		t.Fatalf("history after reopening %s, want k4,n1,elsewhere", got)
	}
}

// TestChatStoreLoadFailureKeepsLocalHistory: a store that cannot answer
// leaves the room with what this node kept.
func TestChatStoreLoadFailureKeepsLocalHistory(t *testing.T) {
	m := newManager(t, Config{NegotiationTimeout: time.Hour})
	m.SetChatStore(failStore{})
	a := joinData(t, m, "r", "alice")
	a.handleData(false, []byte(`{"type":"chat","id":"x1","text":"hello"}`))
	a.Leave("left")
	waitUntil(t, func() bool { return m.Room("r") == nil })
	b := joinData(t, m, "r", "bob")
	bp := &recPort{}
	b.attachData(bp)
	if got := historyIDs(t, bp.find(t, "history", "")); got != "x1" {
		t.Fatalf("history %q, want x1", got)
	}
}

type failStore struct{}

func (failStore) Load(context.Context, string) (ChatHistory, error) {
	return ChatHistory{}, fmt.Errorf("redis is away")
}
func (failStore) Append(string, ChatMessage) {}
func (failStore) Release(string)             {}

func TestChatLogMerge(t *testing.T) {
	l := newChatLog(3)
	l.add(ChatMessage{ID: "a", From: "x", TS: 10})
	l.add(ChatMessage{ID: "c", From: "x", TS: 30})
	l.merge(ChatHistory{Messages: []ChatMessage{{ID: "b", From: "y", TS: 20}, {ID: "c", From: "x", TS: 30}, {ID: "d", From: "y", TS: 40}},
		IDs: []ChatID{{ID: "z", From: "y", TS: 1}}})
	var ids []string
	for _, m := range l.history("x") {
		ids = append(ids, m.ID)
	}
	if strings.Join(ids, ",") != "b,c,d" {
		t.Fatalf("merged %v, want b,c,d", ids)
	}
	for _, id := range []string{"a", "b", "z"} {
		if _, dup, _ := l.add(ChatMessage{ID: id, From: "y"}); !dup {
			t.Errorf("%s is not remembered after the merge", id)
		}
	}
	// Adding after a merge continues the ring.
	l.add(ChatMessage{ID: "e", From: "x", TS: 50})
	ids = ids[:0]
	for _, m := range l.history("x") {
		ids = append(ids, m.ID)
	}
	if strings.Join(ids, ",") != "c,d,e" {
		t.Fatalf("after adding %v, want c,d,e", ids)
	}
}
