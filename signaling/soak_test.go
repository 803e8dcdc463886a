package signaling

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parley-rtc/parley/rooms"
)

// scopedTB is a testing.TB whose Cleanup functions run when its owner
// says, not when the test ends: each soak cycle releases its client at
// once, so that 300 closed clients do not stay reachable (and count as
// heap) until the end. Fatal ends only the calling goroutine, after
// marking the test failed, as the soak's workers are not the test
// goroutine.
type scopedTB struct {
	testing.TB
	mu       sync.Mutex
	cleanups []func()
}

func (s *scopedTB) Cleanup(f func()) {
	s.mu.Lock()
	s.cleanups = append(s.cleanups, f)
	s.mu.Unlock()
}

func (s *scopedTB) Fatal(args ...any) {
	s.TB.Helper()
	s.TB.Error(args...)
	runtime.Goexit()
}

func (s *scopedTB) Fatalf(format string, args ...any) {
	s.TB.Helper()
	s.TB.Errorf(format, args...)
	runtime.Goexit()
}

func (s *scopedTB) FailNow() {
	s.TB.Fail()
	runtime.Goexit()
}

// runCleanups runs what was registered, last first, and forgets it.
func (s *scopedTB) runCleanups() {
	s.mu.Lock()
	fs := s.cleanups
	s.cleanups = nil
	s.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// inGoroutine runs f in a goroutine of its own and waits for it, so that
// a scopedTB's Fatal ends f and not its caller.
func inGoroutine(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

// leaveAndWait sends leave and closes the client once the server has
// closed the socket, as a browser does (ws.close() waits for the close
// handshake). Closing at once may reset the connection with the leave
// still unread by the server (see TestLeaveThenResetLeavesAtOnce).
func leaveAndWait(t testing.TB, c *testClient) {
	t.Helper()
	// After leave, an offer still in flight may meet a closed connection.
	c.closing.Store(true)
	c.write(TypeLeave, Leave{})
	waitFor(t, 10*time.Second, "the server closes "+c.identity+"'s socket after leave", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.closed
	})
	c.close()
}

// resources is what a process holds that a leak would grow.
type resources struct {
	goroutines int
	heap       uint64 // bytes in use after a GC
	fds        int
}

func measure(t testing.TB) resources {
	t.Helper()
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("count open files: %v", err)
	}
	return resources{goroutines: runtime.NumGoroutine(), heap: ms.HeapInuse, fds: len(fds)}
}

func (r resources) String() string {
	return fmt.Sprintf("%d goroutines, %.1f MiB heap, %d fds", r.goroutines, float64(r.heap)/(1<<20), r.fds)
}

// TestChurnSoak runs 300 join/publish/leave cycles over 20 rooms, a few
// rooms at a time. In every cycle a new client publishes audio (and
// video every fourth time), the room's resident participant receives that
// media (payloads intact) and sees the client leave. Afterwards the residents
// leave too, and the server's rooms, the process's goroutines, heap and
// file descriptors (clients included: they live in this process) are back
// where they were after a warm-up cycle.
func TestChurnSoak(t *testing.T) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("soak test (runs without -short, and always in CI)")
	}
	const (
		nRooms      = 20
		cyclesEach  = 15 // 300 cycles in all
		concurrency = 6  // cycles under way at once
	)
	start := time.Now()
	// Cycles are sequential within a room; the resident's subscriber
	// connection is renegotiated on every publish and leave. Every client
	// comes from 127.0.0.1: the per-address limits are raised.
	s := newTestServer(t, rooms.Config{NegotiationTimeout: 30 * time.Second}, Config{MaxConnectionsPerIP: 200, RateLimit: 10000})

	// cycle joins one client into room, publishes, waits until resident
	// receives its media, leaves, and waits until the room and the
	// resident have seen it go. Failures end the calling goroutine.
	cycle := func(tb *scopedTB, room string, resident *testClient, identity string, video bool) {
		defer tb.runCleanups()
		c := joinClient(tb, s, room, identity)
		c.publish(true, video)
		kinds := []string{"audio"}
		if video {
			kinds = append(kinds, "video")
		}
		waitErr(tb, 30*time.Second, func() error { return resident.mediaFrom([]string{identity}, kinds, 5) })
		sid := c.sid()
		leaveAndWait(tb, c)
		waitErr(tb, 15*time.Second, func() error {
			resident.mu.Lock()
			defer resident.mu.Unlock()
			if resident.left[sid] {
				return nil
			}
			var last []string
			for _, e := range resident.events[max(0, len(resident.events)-8):] {
				last = append(last, e.Type)
			}
			var parts []string
			if r := s.mgr.Room(room); r != nil {
				for _, p := range r.Participants() {
					parts = append(parts, p.Identity)
				}
			}
			return fmt.Errorf("%s has not seen %s leave; its last messages %v; room %v", resident.identity, identity, last, parts)
		})
		waitFor(tb, 15*time.Second, "only "+resident.identity+" left in "+room, func() bool {
			r := s.mgr.Room(room)
			return r != nil && len(r.Participants()) == 1
		})
	}

	// Warm-up: one whole cycle, so that what is created once per process
	// (pools, pion's and the engine's long-lived goroutines) exists before
	// the baseline.
	inGoroutine(func() {
		warm := &scopedTB{TB: t}
		defer warm.runCleanups()
		resident := joinClient(warm, s, "warmup", "warm-resident")
		cycle(&scopedTB{TB: t}, "warmup", resident, "warm-guest", true)
		leaveAndWait(warm, resident)
	})
	if t.Failed() {
		t.FailNow()
	}
	waitFor(t, 15*time.Second, "no rooms after the warm-up", func() bool { return len(s.mgr.Rooms()) == 0 })
	time.Sleep(500 * time.Millisecond) // closing peer connections finish their last timers
	baseline := goleak.IgnoreCurrent()
	before := measure(t)
	t.Logf("after warm-up (%s): %s", time.Since(start).Round(time.Millisecond), before)

	residents := &scopedTB{TB: t}
	res := make([]*testClient, nRooms)
	for i := range res {
		res[i] = joinClient(residents, s, fmt.Sprintf("soak-%02d", i), fmt.Sprintf("resident-%02d", i))
	}

	churn := time.Now()
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	for i := range nRooms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			room := fmt.Sprintf("soak-%02d", i)
			for n := range cyclesEach {
				sem <- struct{}{}
				inGoroutine(func() {
					cycle(&scopedTB{TB: t}, room, res[i], fmt.Sprintf("guest-%02d-%02d", i, n), n%4 == 0)
				})
				<-sem
				if t.Failed() {
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		residents.runCleanups()
		t.FailNow()
	}
	t.Logf("%d cycles in %d rooms in %s", nRooms*cyclesEach, nRooms, time.Since(churn).Round(time.Millisecond))
	gaps := 0
	for _, r := range res {
		// Payloads must be intact. A lost packet (loopback UDP under a
		// starved CPU) is only counted: call_test.go checks continuity.
		for sid, rc := range r.snapshot() {
			if rc.badBytes > 0 {
				t.Errorf("%s: track %s from %s: %d payloads corrupted", r.identity, sid, rc.from, rc.badBytes)
			}
			gaps += rc.gaps
		}
		r.mu.Lock()
		if len(r.errors) > 0 {
			t.Errorf("%s got errors: %+v", r.identity, r.errors)
		}
		r.mu.Unlock()
	}
	t.Logf("residents saw %d sequence discontinuities in all", gaps)
	for _, r := range res {
		leaveAndWait(t, r)
	}
	residents.runCleanups()
	waitFor(t, 15*time.Second, "every room gone", func() bool { return len(s.mgr.Rooms()) == 0 })

	// What the sessions started ends a little after they do: poll.
	perRead := goleak.IgnoreTopFunction("github.com/pion/transport/v4/netctx.(*packetConn).ReadFromContext.func1")
	var after resources
	var leakErr error
	for deadline := time.Now().Add(20 * time.Second); ; {
		after = measure(t)
		leakErr = goleak.Find(baseline, perRead)
		heapOK := after.heap <= before.heap+max(10<<20, before.heap/5)
		if leakErr == nil && heapOK && after.goroutines <= before.goroutines+5 && after.fds <= before.fds+5 {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("after churn (%s in all): %s", time.Since(start).Round(time.Millisecond), after)
	if leakErr != nil {
		t.Errorf("goroutines left behind: %v", leakErr)
	}
	if after.goroutines > before.goroutines+5 {
		t.Errorf("%d goroutines, %d before", after.goroutines, before.goroutines)
	}
	if limit := before.heap + max(10<<20, before.heap/5); after.heap > limit {
		t.Errorf("heap in use %.1f MiB, %.1f MiB before (limit %.1f MiB)",
			float64(after.heap)/(1<<20), float64(before.heap)/(1<<20), float64(limit)/(1<<20))
	}
	if after.fds > before.fds+5 {
		t.Errorf("%d open file descriptors, %d before", after.fds, before.fds)
	}
}
