package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/parley-rtc/parley/internal/redistest"
)

// testNode is a node with fast heartbeats and a settable load.
type testNode struct {
	*Node
	tracks atomic.Int64
	mu     sync.Mutex
	rooms  []string
}

func newTestNode(t *testing.T, addr, id string) *testNode {
	t.Helper()
	tn := &testNode{}
	n, err := New(Config{Addr: addr, NodeID: id, Heartbeat: 100 * time.Millisecond, NodeTTL: 500 * time.Millisecond,
		Load:  func() Load { return Load{Tracks: int(tn.tracks.Load())} },
		Rooms: func() []string { tn.mu.Lock(); defer tn.mu.Unlock(); return append([]string(nil), tn.rooms...) }}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	tn.Node = n
	t.Cleanup(n.Close)
	if err := n.Healthy(); err != nil {
		t.Fatalf("node %s: %v", id, err)
	}
	return tn
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestPlacementSpreadsByLoad(t *testing.T) {
	r := redistest.Start(t)
	a, b, c := newTestNode(t, r.Addr(), "a"), newTestNode(t, r.Addr(), "b"), newTestNode(t, r.Addr(), "c")
	// Nine rooms placed one after another, from different nodes, before
	// any heartbeat reports their load: placed rooms count at once.
	counts := map[string]int{}
	for i := range 9 {
		from := []*testNode{a, b, c}[i%3]
		owner, err := from.Place(ctx(t), fmt.Sprintf("room-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		counts[owner]++
	}
	if counts["a"] != 3 || counts["b"] != 3 || counts["c"] != 3 {
		t.Fatalf("9 rooms on 3 idle nodes: %v, want 3 each", counts)
	}
	// Placement is sticky: any node finds the same owner.
	o1, _ := a.Place(ctx(t), "room-4")
	o2, _ := c.Place(ctx(t), "room-4")
	if o1 != o2 {
		t.Fatalf("room-4 placed on %s by a and %s by c", o1, o2)
	}
	// A node carrying many tracks gets no new room while others are light.
	b.tracks.Store(100)
	eventually(t, 2*time.Second, "b's load in the registry", func() bool {
		i, ok := a.Node.Node("b")
		return ok && i.Tracks == 100
	})
	for i := range 4 {
		owner, err := a.Place(ctx(t), fmt.Sprintf("busy-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if owner == "b" {
			t.Fatalf("busy-%d placed on b, which forwards 100 tracks", i)
		}
	}
	// Released rooms are placed again.
	a.Release("room-0")
	eventually(t, 2*time.Second, "room-0 released", func() bool {
		o, err := b.Owner(ctx(t), "room-0")
		return err == nil && o == ""
	})
}

func TestPlacementLimitsAndDraining(t *testing.T) {
	r := redistest.Start(t)
	a := newTestNode(t, r.Addr(), "a")
	b, err := New(Config{Addr: r.Addr(), NodeID: "b", Heartbeat: 100 * time.Millisecond, NodeTTL: 500 * time.Millisecond,
		MaxTracks: 10, Load: func() Load { return Load{Tracks: 10} }}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i := range 3 {
		if owner, err := b.Place(ctx(t), fmt.Sprintf("r%d", i)); err != nil || owner != "a" {
			t.Fatalf("b is at max_tracks: room placed on %q (%v), want a", owner, err)
		}
	}
	a.SetDraining(true)
	_, err = b.Place(ctx(t), "new")
	if !errors.Is(err, ErrNoNode) {
		t.Fatalf("a draining, b full: %v, want ErrNoNode", err)
	}
	// A room already placed keeps its node while the node drains.
	if owner, err := b.Place(ctx(t), "r0"); err != nil || owner != "a" {
		t.Fatalf("r0: %q %v", owner, err)
	}
	a.ReleaseAll(ctx(t))
	if owner, _ := b.Owner(ctx(t), "r0"); owner != "" {
		t.Fatalf("r0 still on %q after ReleaseAll", owner)
	}
}

func TestPipeCarriesFramesInOrder(t *testing.T) {
	r := redistest.Start(t)
	edge, room := newTestNode(t, r.Addr(), "edge"), newTestNode(t, r.Addr(), "room")
	accepted := make(chan *Pipe, 1)
	room.OnPipe(func(p *Pipe) { accepted <- p })
	p, err := edge.Dial(ctx(t), "room", "192.0.2.1:5555", []byte("first"))
	if err != nil {
		t.Fatal(err)
	}
	var q *Pipe
	select {
	case q = <-accepted:
	case <-time.After(3 * time.Second):
		t.Fatal("no pipe accepted")
	}
	if q.Peer() != "edge" || q.Remote() != "192.0.2.1:5555" {
		t.Fatalf("accepted pipe from %q for %q", q.Peer(), q.Remote())
	}
	const n = 500
	go func() {
		for i := range n {
			_ = p.Send([]byte(fmt.Sprint(i)))
		}
	}()
	want := []string{"first"}
	for i := range n {
		want = append(want, fmt.Sprint(i))
	}
	for i, w := range want {
		select {
		case got := <-q.Recv():
			if string(got) != w {
				t.Fatalf("frame %d: %q, want %q", i, got, w)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("frame %d did not arrive", i)
		}
	}
	// And back, then a close with its code.
	if err := q.Send([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	q.Close(4321, "bye")
	if got := <-p.Recv(); string(got) != "answer" {
		t.Fatalf("reply %q", got)
	}
	if _, ok := <-p.Recv(); ok {
		t.Fatal("pipe open after the other end closed it")
	}
	if code, text := p.CloseStatus(); code != 4321 || text != "bye" {
		t.Fatalf("close status %d %q", code, text)
	}
	if err := p.Send([]byte("late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("send on a closed pipe: %v", err)
	}
	eventually(t, time.Second, "pipes forgotten", func() bool { return edge.Pipes() == 0 && room.Pipes() == 0 })
	// A node nobody runs: Dial says so at once.
	if _, err := edge.Dial(ctx(t), "nobody", "x", []byte("x")); !errors.Is(err, ErrNodeGone) {
		t.Fatalf("dial to a node that does not exist: %v", err)
	}
}

func TestDeadNodeReleasesRoomsAndPipes(t *testing.T) {
	r := redistest.Start(t)
	edge := newTestNode(t, r.Addr(), "edge")
	room := newTestNode(t, r.Addr(), "room")
	room.OnPipe(func(*Pipe) {})
	if _, err := room.Claim(ctx(t), "r"); err != nil {
		t.Fatal(err)
	}
	p, err := edge.Dial(ctx(t), "room", "x", []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	// The room node dies without a word: no deregistration, no close.
	room.cancel()
	room.wg.Wait()
	died := time.Now()
	select {
	case _, ok := <-p.Recv():
		if ok {
			t.Fatal("frame from a dead node")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pipe to a dead node still open after 5s")
	}
	if code, _ := p.CloseStatus(); code != CloseNodeFailed {
		t.Fatalf("close code %d, want CloseNodeFailed", code)
	}
	t.Logf("pipe closed %s after the node died (ttl 500ms)", time.Since(died).Round(time.Millisecond))
	eventually(t, 3*time.Second, "room released", func() bool {
		o, err := edge.Owner(ctx(t), "r")
		return err == nil && o == ""
	})
	if owner, err := edge.Place(ctx(t), "r"); err != nil || owner != "edge" {
		t.Fatalf("re-placed on %q (%v), want edge", owner, err)
	}
}

func TestRedisOutage(t *testing.T) {
	r := redistest.Start(t)
	a := newTestNode(t, r.Addr(), "a")
	b := newTestNode(t, r.Addr(), "b")
	a.mu.Lock()
	a.rooms = []string{"kept"}
	a.mu.Unlock()
	if _, err := a.Claim(ctx(t), "kept"); err != nil {
		t.Fatal(err)
	}
	b.OnPipe(func(*Pipe) {})
	p, err := a.Dial(ctx(t), "b", "x", []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	r.Stop()
	eventually(t, 3*time.Second, "a sees Redis down", func() bool { return a.Healthy() != nil })
	if !errors.Is(a.Healthy(), ErrUnavailable) {
		t.Fatalf("health: %v", a.Healthy())
	}
	if _, err := a.Place(ctx(t), "new"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("place without Redis: %v", err)
	}
	if err := p.Send([]byte("lost")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("send without Redis: %v", err)
	}
	// Longer than the node TTL: the pipe must not be taken for dead.
	time.Sleep(1500 * time.Millisecond)
	r.Restart() // empty: it forgot everything
	eventually(t, 5*time.Second, "a healthy again", func() bool { return a.Healthy() == nil && b.Healthy() == nil })
	eventually(t, 3*time.Second, "kept re-claimed by a", func() bool {
		o, err := b.Owner(ctx(t), "kept")
		return err == nil && o == "a"
	})
	// The pipe survived the outage.
	time.Sleep(time.Second)
	select {
	case _, ok := <-p.Recv():
		if !ok {
			code, text := p.CloseStatus()
			t.Fatalf("pipe closed across the outage: %d %s", code, text)
		}
	default:
	}
	eventually(t, 5*time.Second, "b resubscribed", func() bool { return p.Send([]byte("again")) == nil })
	if owner, err := b.Place(ctx(t), "fresh"); err != nil || owner == "" {
		t.Fatalf("place after recovery: %q %v", owner, err)
	}
}

// TestPlacementRespectsMaxRooms: a node holding rooms.max_rooms rooms is
// full, so a room it would refuse is placed elsewhere.
func TestPlacementRespectsMaxRooms(t *testing.T) {
	r := redistest.Start(t)
	a, err := New(Config{Addr: r.Addr(), NodeID: "a", Heartbeat: 100 * time.Millisecond, NodeTTL: 500 * time.Millisecond, MaxRooms: 1}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if owner, err := a.Claim(ctx(t), "one"); err != nil || owner != "a" {
		t.Fatalf("claim: %q %v", owner, err)
	}
	if _, err := a.Place(ctx(t), "two"); !errors.Is(err, ErrNoNode) {
		t.Fatalf("a holds max_rooms and is alone: %v, want ErrNoNode", err)
	}
	b := newTestNode(t, r.Addr(), "b")
	if owner, err := b.Place(ctx(t), "two"); err != nil || owner != "b" {
		t.Fatalf("two placed on %q (%v), want b", owner, err)
	}
}

// TestSplitRoomMoves: a room this node holds that Redis placed on another
// live node (while this one was cut off) is reported lost, so that its
// participants join the other half; one whose node is dead is taken back.
func TestSplitRoomMoves(t *testing.T) {
	r := redistest.Start(t)
	lost := make(chan string, 4)
	a, err := New(Config{Addr: r.Addr(), NodeID: "a", Heartbeat: 100 * time.Millisecond, NodeTTL: 500 * time.Millisecond,
		Rooms: func() []string { return []string{"split", "orphan"} }, Lost: func(room string) { lost <- room }}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b := newTestNode(t, r.Addr(), "b")
	rdb := a.Redis()
	rdb.Set(ctx(t), roomKey("split"), "b", 0)      // b is alive
	rdb.Set(ctx(t), roomKey("orphan"), "ghost", 0) // no such node
	select {
	case room := <-lost:
		if room != "split" {
			t.Fatalf("lost %q, want split", room)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the split room was not reported within 3s")
	}
	eventually(t, 3*time.Second, "orphan taken back", func() bool {
		o, _ := b.Owner(ctx(t), "orphan")
		return o == "a"
	})
	if o, _ := b.Owner(ctx(t), "split"); o != "b" {
		t.Fatalf("split now on %q, want b (its live holder)", o)
	}
	select {
	case room := <-lost:
		if room != "split" {
			t.Fatalf("lost %q", room)
		}
	default:
	}
}

// TestSentinelFailover: a node that finds Redis through Sentinel follows a
// failover: the primary dies, the sentinel promotes its replica, and the
// node places rooms again, with the placements made before.
func TestSentinelFailover(t *testing.T) {
	primary := redistest.Start(t)
	replica := redistest.StartReplica(t, primary)
	sentinel := redistest.StartSentinel(t, primary, "parley-main")
	n, err := New(Config{SentinelMaster: "parley-main", SentinelAddrs: []string{sentinel.Addr()}, NodeID: "s",
		Heartbeat: 100 * time.Millisecond, NodeTTL: 500 * time.Millisecond}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.Healthy(); err != nil {
		t.Fatal(err)
	}
	if owner, err := n.Place(ctx(t), "before"); err != nil || owner != "s" {
		t.Fatalf("place through sentinel: %q %v", owner, err)
	}
	// Another node holds a room through the failover: nobody may take the
	// room from it for the outage the failover is.
	m, err := New(Config{SentinelMaster: "parley-main", SentinelAddrs: []string{sentinel.Addr()}, NodeID: "m",
		Heartbeat: 100 * time.Millisecond, NodeTTL: 500 * time.Millisecond, Rooms: func() []string { return []string{"held"} }}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if owner, err := m.Claim(ctx(t), "held"); err != nil || owner != "m" {
		t.Fatalf("claim held: %q %v", owner, err)
	}
	// Let the replica catch up, then kill the primary.
	rep := redis.NewClient(&redis.Options{Addr: replica.Addr()})
	defer rep.Close()
	eventually(t, 20*time.Second, "the placement on the replica", func() bool {
		v, _ := rep.Get(ctx(t), roomKey("before")).Result()
		w, _ := rep.Get(ctx(t), roomKey("held")).Result()
		return v == "s" && w == "m"
	})
	primary.Stop()
	failed := time.Now()
	var lastErr error
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		owner, err := n.Place(c, "after")
		cancel()
		if err == nil && (owner == "s" || owner == "m") {
			break
		}
		lastErr = err
		if time.Now().After(deadline) {
			t.Fatalf("no room placed within 30s of the primary's death: %v (health: %v)", lastErr, n.Healthy())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("placing again %s after the primary died (sentinel: 1 s down-after)", time.Since(failed).Round(time.Millisecond))
	if owner, err := n.Owner(ctx(t), "before"); err != nil || owner != "s" {
		t.Fatalf("placement from before the failover: %q %v", owner, err)
	}
	eventually(t, 5*time.Second, "healthy again", func() bool { return n.Healthy() == nil })
	if owner, err := n.Owner(ctx(t), "held"); err != nil || owner != "m" {
		t.Fatalf("held is on %q after the failover (%v), want m", owner, err)
	}
}
