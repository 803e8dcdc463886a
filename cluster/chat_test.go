package cluster

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/parley-rtc/parley/internal/redistest"
	"github.com/parley-rtc/parley/rooms"
)

func chatMsg(i int) rooms.ChatMessage {
	return rooms.ChatMessage{Type: "chat", ID: fmt.Sprint("m", i), From: "alice", FromName: "Alice", Text: fmt.Sprint("hello ", i), TS: int64(1000 + i)}
}

func load(t *testing.T, s *ChatStore, room string) rooms.ChatHistory {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	h, err := s.Load(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func idsOf(h rooms.ChatHistory) (msgs, ids string) {
	var a, b []string
	for _, m := range h.Messages {
		a = append(a, m.ID)
	}
	for _, id := range h.IDs {
		b = append(b, id.ID)
	}
	return strings.Join(a, ","), strings.Join(b, ",")
}

// TestChatStoreAcrossNodes: what one node appends, another loads: the
// last data.history messages in order, and the recent ids (capped). A
// node that dies without releasing leaves the history alive for longer
// than the retention; a release sets the retention.
func TestChatStoreAcrossNodes(t *testing.T) {
	rs := redistest.Start(t)
	a, b := startNode(t, rs.Addr(), "a"), startNode(t, rs.Addr(), "b")
	open := func() []string { return []string{"r"} }
	sa, err := NewChatStore(a.Redis(), ChatConfig{History: 3, IDs: 4, Retention: time.Minute, Rooms: open}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	sb, err := NewChatStore(b.Redis(), ChatConfig{History: 3, IDs: 4, Retention: time.Minute}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sb.Close)
	for i := 1; i <= 6; i++ {
		sa.Append("r", chatMsg(i))
	}
	sa.Append("other", chatMsg(99))
	eventually(t, 3*time.Second, "the messages in Redis", func() bool { return len(load(t, sb, "r").IDs) == 4 })
	h := load(t, sb, "r")
	if msgs, ids := idsOf(h); msgs != "m4,m5,m6" || ids != "m3,m4,m5,m6" {
		t.Fatalf("loaded messages %s ids %s, want m4,m5,m6 and m3,m4,m5,m6", msgs, ids)
	}
	if m := h.Messages[2]; m != chatMsg(6) {
		t.Fatalf("message as loaded: %+v, want %+v", m, chatMsg(6))
	}
	if id := h.IDs[0]; id.From != "alice" || id.TS != 1003 {
		t.Fatalf("id as loaded: %+v", id)
	}
	if msgs, _ := idsOf(load(t, sb, "other")); msgs != "m99" {
		t.Fatalf("another room: %s", msgs)
	}
	if msgs, ids := idsOf(load(t, sb, "never")); msgs != "" || ids != "" {
		t.Fatalf("a room without history: %s %s", msgs, ids)
	}

	// Node a stops without releasing (it died): the history stays,
	// expiring later than the retention.
	sa.Close()
	sa.Append("r", chatMsg(7)) // after Close: dropped, never blocks
	ttl := func(key string) time.Duration {
		d, err := b.Redis().PTTL(context.Background(), key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := ttl(chatKey("r")); d <= time.Minute || d > sa.heldTTL() {
		t.Fatalf("TTL of an open room's history: %s, want in (1m, %s]", d, sa.heldTTL())
	}
	if msgs, _ := idsOf(load(t, sb, "r")); msgs != "m4,m5,m6" {
		t.Fatalf("after node a died: %s", msgs)
	}
	sb.Release("r")
	eventually(t, 3*time.Second, "the retention after a release", func() bool {
		d1, d2 := ttl(chatKey("r")), ttl(chatIDsKey("r"))
		return d1 > 0 && d1 <= time.Minute && d2 > 0 && d2 <= time.Minute
	})
}

// TestChatStoreExpiry: the history of a room open on a live node is
// renewed past the retention; once released it expires after it.
func TestChatStoreExpiry(t *testing.T) {
	rs := redistest.Start(t)
	n := startNode(t, rs.Addr(), "a")
	var isOpen atomic.Bool
	isOpen.Store(true)
	s, err := NewChatStore(n.Redis(), ChatConfig{History: 5, Retention: 400 * time.Millisecond, Rooms: func() []string {
		if isOpen.Load() {
			return []string{"r"}
		}
		return nil
	}}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	s.Append("r", chatMsg(1))
	time.Sleep(1200 * time.Millisecond) // three retentions
	if msgs, _ := idsOf(load(t, s, "r")); msgs != "m1" {
		t.Fatalf("an open room's history expired: %q", msgs)
	}
	isOpen.Store(false)
	s.Release("r")
	released := time.Now()
	eventually(t, 3*time.Second, "the released history to expire", func() bool {
		return n.Redis().Exists(context.Background(), chatKey("r"), chatIDsKey("r")).Val() == 0
	})
	if d := time.Since(released); d < 300*time.Millisecond {
		t.Fatalf("the released history expired after %s, before the retention", d)
	}
}

// TestChatStoreNeverBlocks: with Redis gone, appends return at once and
// are counted as lost; when it is back, they are written again. Close
// returns within its bound.
func TestChatStoreNeverBlocks(t *testing.T) {
	rs := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr(), DialTimeout: 500 * time.Millisecond, ReadTimeout: 500 * time.Millisecond,
		WriteTimeout: 500 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	s, err := NewChatStore(rdb, ChatConfig{History: 10, Retention: time.Minute, Queue: 64}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	rs.Stop()
	start := time.Now()
	const n = 20000
	for i := 0; i < n; i++ {
		s.Append("r", chatMsg(i))
	}
	took := time.Since(start)
	t.Logf("%d appends with Redis gone: %s (%.1f µs each), %d lost so far", n, took, float64(took.Microseconds())/n, s.Dropped())
	if took > 2*time.Second {
		t.Fatalf("%d appends took %s with Redis gone: they blocked", n, took)
	}
	if s.Dropped() == 0 {
		t.Fatal("nothing counted as lost with Redis gone")
	}
	rs.Restart()
	eventually(t, 5*time.Second, "appends to land once Redis is back", func() bool {
		s.Append("r", chatMsg(n))
		return len(load(t, s, "r").Messages) > 0
	})
	start = time.Now()
	s.Close()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close took %s", d)
	}
}

// BenchmarkChatStoreAppend is the cost a chat message adds to the data
// path in a cluster (encoding and queueing; the write is the writer's).
func BenchmarkChatStoreAppend(b *testing.B) {
	rs := redistest.Start(b)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	b.Cleanup(func() { _ = rdb.Close() })
	s, err := NewChatStore(rdb, ChatConfig{History: 200, Retention: time.Minute, Queue: 1 << 16}, testLog())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	m := chatMsg(1)
	m.Text = strings.Repeat("x", 200)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.Append("bench", m)
	}
	b.StopTimer()
	// Far above any rate limit: the writer keeps up with what it can and
	// the rest is dropped, never waited for.
	b.ReportMetric(float64(s.Dropped())/float64(b.N), "dropped/op")
}
