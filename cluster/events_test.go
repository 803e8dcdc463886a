package cluster

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-rtc/parley/internal/redistest"
)

type received struct {
	mu  sync.Mutex
	got []string
}

func (r *received) add(data []byte) {
	r.mu.Lock()
	r.got = append(r.got, string(data))
	r.mu.Unlock()
}

func (r *received) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

// TestEventRelay: every node gets the others' events, in the order they
// were published, and never its own.
func TestEventRelay(t *testing.T) {
	rs := redistest.Start(t)
	nodes := []*Node{startNode(t, rs.Addr(), "a"), startNode(t, rs.Addr(), "b"), startNode(t, rs.Addr(), "c")}
	recv := make([]*received, len(nodes))
	relays := make([]*EventRelay, len(nodes))
	for i, n := range nodes {
		recv[i] = &received{}
		relays[i] = NewEventRelay(n, recv[i].add, testLog())
		t.Cleanup(relays[i].Close)
	}
	eventually(t, 3*time.Second, "the relays to subscribe", func() bool {
		subs := nodes[0].Redis().PubSubNumSub(context.Background(), eventsChannel).Val()
		return subs[eventsChannel] == int64(len(nodes))
	})
	const n = 200
	var want []string
	for i := 0; i < n; i++ {
		ev := fmt.Sprintf(`{"id":%d,"type":"participant_joined","room":"r"}`, i+1)
		want = append(want, ev)
		relays[0].Publish([]byte(ev))
	}
	relays[1].Publish([]byte(`{"id":1,"type":"room_started","room":"s"}`))
	eventually(t, 5*time.Second, "b and c to get a's events", func() bool { return len(recv[1].all()) == n && len(recv[2].all()) == n+1 })
	if got := recv[1].all(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("b got a's events out of order or changed: first %q", got[0])
	}
	time.Sleep(100 * time.Millisecond) // anything more would have come
	if got := recv[0].all(); len(got) != 1 || !strings.Contains(got[0], "room_started") {
		t.Fatalf("a got %d events, want b's one only (never its own)", len(got))
	}
	if len(recv[1].all()) != n {
		t.Fatal("b got its own event back")
	}
}

// TestEventRelayNeverBlocks: with Redis gone, publishing returns at once.
func TestEventRelayNeverBlocks(t *testing.T) {
	rs := redistest.Start(t)
	r := NewEventRelay(startNode(t, rs.Addr(), "a"), func([]byte) {}, testLog())
	rs.Stop()
	start := time.Now()
	for i := 0; i < 3*relayQueue; i++ {
		r.Publish([]byte(`{"type":"room_started"}`))
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("publishing with Redis gone took %s", d)
	}
	if r.Dropped() == 0 {
		t.Fatal("nothing counted as dropped")
	}
	start = time.Now()
	r.Close()
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("Close took %s", d)
	}
}
