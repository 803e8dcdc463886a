package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-rtc/parley/internal/redistest"
	"github.com/parley-rtc/parley/rooms"
)

// fakeRooms is a RoomSource whose rooms the test sets.
type fakeRooms struct {
	mu    sync.Mutex
	rooms map[string]rooms.RoomDetails
}

func (f *fakeRooms) set(d rooms.RoomDetails) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rooms == nil {
		f.rooms = map[string]rooms.RoomDetails{}
	}
	f.rooms[d.Name] = d
}

func (f *fakeRooms) drop(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.rooms, name)
}

func (f *fakeRooms) AllRooms(full bool) []rooms.RoomDetails {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []rooms.RoomDetails
	for _, d := range f.rooms {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (f *fakeRooms) RoomDetails(name string) (rooms.RoomDetails, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.rooms[name]
	if !ok {
		return d, rooms.ErrNoRoom
	}
	return d, nil
}

func roomWith(name string, who ...string) rooms.RoomDetails {
	d := rooms.RoomDetails{Name: name, CreatedAt: 1763830000000, MaxParticipants: 10, NumParticipants: len(who), Participants: []rooms.ParticipantDetails{}}
	for _, w := range who {
		d.Participants = append(d.Participants, rooms.ParticipantDetails{SID: "PA_" + w, Identity: w, Name: w, Metadata: json.RawMessage("null"),
			Tracks: []rooms.TrackDetails{}})
	}
	return d
}

func names(list []rooms.RoomDetails) string {
	var out []string
	for _, d := range list {
		var who []string
		for _, p := range d.Participants {
			who = append(who, p.Identity)
		}
		out = append(out, d.Node+"/"+d.Name+"("+strings.Join(who, " ")+")")
	}
	return strings.Join(out, ",")
}

// TestRoomStatesAppearAndVanish: a node's room snapshots reach the other
// nodes shortly after a change (debounced), follow the rooms as they
// change and close, catch up with what no change announced at the next
// refresh, and vanish when the node stops: at once from listings, and
// from Redis within their TTL.
func TestRoomStatesAppearAndVanish(t *testing.T) {
	rs := redistest.Start(t)
	a, b := startNode(t, rs.Addr(), "a"), startNode(t, rs.Addr(), "b")
	srcA, srcB := &fakeRooms{}, &fakeRooms{}
	cfg := StateConfig{Debounce: 50 * time.Millisecond, Refresh: 300 * time.Millisecond, TTL: time.Second}
	sa := NewRoomStates(a, srcA, cfg, testLog())
	t.Cleanup(sa.Close)
	sb := NewRoomStates(b, srcB, cfg, testLog())
	t.Cleanup(sb.Close)
	ctx := context.Background()
	seen := func(s *RoomStates) string {
		list, err := s.Rooms(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return names(list)
	}
	eventually(t, 3*time.Second, "the nodes to see each other", func() bool { return len(a.Nodes()) == 2 && len(b.Nodes()) == 2 })

	srcA.set(roomWith("x", "alice"))
	srcA.set(roomWith("y"))
	sa.Changed("x")
	sa.Changed("y")
	srcB.set(roomWith("z", "zed"))
	sb.Changed("z")
	eventually(t, 2*time.Second, "a's rooms on b", func() bool { return seen(sb) == "a/x(alice),a/y()" })
	eventually(t, 2*time.Second, "b's rooms on a", func() bool { return seen(sa) == "b/z(zed)" })
	if d, ok, err := sb.Room(ctx, "x"); err != nil || !ok || d.Node != "a" || len(d.Participants) != 1 || d.Participants[0].Identity != "alice" {
		t.Fatalf("room x seen from b: %+v %v %v", d, ok, err)
	}
	if _, ok, err := sb.Room(ctx, "z"); err != nil || ok {
		t.Fatalf("b's own room is not another node's: %v %v", ok, err)
	}

	// Changes, and a room that closes.
	srcA.set(roomWith("x", "alice", "bob"))
	sa.Changed("x")
	srcA.drop("y")
	sa.Changed("y")
	eventually(t, 2*time.Second, "the change and the close on b", func() bool { return seen(sb) == "a/x(alice bob)" })
	// What no event announces (a new name) shows at the next refresh.
	d := roomWith("x", "alice", "bob")
	d.Participants[0].Name = "Alice (host)"
	srcA.set(d)
	eventually(t, 2*time.Second, "the refresh", func() bool {
		got, ok, _ := sb.Room(ctx, "x")
		return ok && got.Participants[0].Name == "Alice (host)"
	})
	if ttl := a.Redis().PTTL(ctx, statesKey("a")).Val(); ttl <= 0 || ttl > time.Second {
		t.Fatalf("TTL of a's snapshots: %s", ttl)
	}

	// Node a dies: its registration goes (Close here), its writer can no
	// longer write, its snapshots leave b's listing and then Redis.
	a.Close()
	eventually(t, 3*time.Second, "a's rooms to leave b's listing", func() bool { return seen(sb) == "" })
	eventually(t, 3*time.Second, "a's snapshots to expire", func() bool { return b.Redis().Exists(ctx, statesKey("a")).Val() == 0 })

	// A node that stops cleanly removes its snapshots at once.
	sb.Close()
	if b.Redis().Exists(ctx, statesKey("b")).Val() != 0 {
		t.Fatal("b's snapshots are still in Redis after it closed")
	}
}

// BenchmarkRoomStatesWriteAll is one refresh of a node with 1000 rooms of
// 10 participants (every half node TTL).
func BenchmarkRoomStatesWriteAll(b *testing.B) {
	rs := redistest.Start(b)
	n, err := New(Config{Addr: rs.Addr(), NodeID: "a", Heartbeat: time.Second, NodeTTL: 5 * time.Second}, testLog())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(n.Close)
	src := &fakeRooms{}
	for i := 0; i < 1000; i++ {
		src.set(roomWith(fmt.Sprintf("room-%04d", i), "a", "b", "c", "d", "e", "f", "g", "h", "i", "j"))
	}
	s := NewRoomStates(n, src, StateConfig{Refresh: time.Hour}, testLog())
	b.Cleanup(s.Close)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.writeAll()
	}
	b.StopTimer()
	if got := n.Redis().HLen(context.Background(), statesKey("a")).Val(); got != 1000 {
		b.Fatalf("%d snapshots written", got)
	}
	b.ReportMetric(float64(n.Redis().MemoryUsage(context.Background(), statesKey("a")).Val())/1000, "redis-bytes/room")
}
