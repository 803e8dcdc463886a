package signaling

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parley-rtc/parley/rooms"
)

func checkIntact(t *testing.T, c *testClient, skip ...string) {
	t.Helper()
	for sid, r := range c.snapshot() {
		if slices.Contains(skip, sid) {
			continue // not made by makePayload
		}
		if r.badBytes > 0 {
			t.Errorf("%s: track %s from %s: %d payloads corrupted", c.identity, sid, r.from, r.badBytes)
		}
		if r.gaps > 0 {
			t.Errorf("%s: track %s (%s) from %s: %d sequence/payload discontinuities in %d packets", c.identity, sid, r.kind, r.from, r.gaps, r.packets)
		}
	}
}

func TestThreeParticipantsThenFourthThenLeave(t *testing.T) {
	s := newTestServer(t, rooms.Config{}, Config{})
	names := []string{"alice", "bob", "carol"}
	var cs []*testClient
	for _, n := range names {
		c := joinClient(t, s, "standup", n)
		c.publish(true, true)
		cs = append(cs, c)
	}
	kinds := []string{"audio", "video"}
	for i, c := range cs {
		var others []string
		for j, n := range names {
			if j != i {
				others = append(others, n)
			}
		}
		waitFor(t, 20*time.Second, c.identity+" receives the other two", func() bool { return c.mediaFrom(others, kinds, 50) == nil })
	}

	dave := joinClient(t, s, "standup", "dave")
	dave.publish(true, true)
	waitFor(t, 20*time.Second, "dave receives everyone", func() bool { return dave.mediaFrom(names, kinds, 50) == nil })
	for _, c := range cs {
		waitFor(t, 20*time.Second, c.identity+" receives dave", func() bool { return c.mediaFrom([]string{"dave"}, kinds, 50) == nil })
	}

	carol := cs[2]
	carolSID := carol.sid()
	carolTracks := map[string]bool{}
	for sid, r := range cs[0].snapshot() {
		if r.from == "carol" {
			carolTracks[sid] = true
		}
	}
	carol.leave()
	for _, c := range []*testClient{cs[0], cs[1], dave} {
		waitFor(t, 10*time.Second, c.identity+" sees carol leave and her tracks end", func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			if !c.left[carolSID] {
				return false
			}
			for sid := range carolTracks {
				if !c.unpub[sid] {
					return false
				}
				if r := c.recv[sid]; r == nil || !r.ended {
					return false
				}
			}
			return true
		})
	}
	for _, c := range []*testClient{cs[0], cs[1], dave} {
		checkIntact(t, c)
	}
	if got := len(s.mgr.Room("standup").Participants()); got != 3 {
		t.Errorf("room has %d participants after carol left, want 3", got)
	}
}

func TestFortyJoinAndPublishAtOnce(t *testing.T) {
	const n = 40
	// Under -race on two cores, 40 clients and 80 server connections are
	// slow: send audio at 10 packets/s and allow slow answers, since this
	// test is about glare and deadlocks, not speed.
	s := newTestServer(t, rooms.Config{NegotiationTimeout: time.Minute}, Config{})
	clients := make([]*testClient, n)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := joinClient(t, s, "crowd", fmt.Sprintf("p%02d", i))
			c.audioEvery = 100 * time.Millisecond
			c.publish(true, false)
			clients[i] = c
		}()
	}
	wg.Wait()
	all := make([]string, n)
	for i := range all {
		all[i] = fmt.Sprintf("p%02d", i)
	}
	for i, c := range clients {
		others := append(append([]string{}, all[:i]...), all[i+1:]...)
		waitErr(t, 90*time.Second, func() error { return c.mediaFrom(others, []string{"audio"}, 5) })
	}
	for _, c := range clients {
		c.mu.Lock()
		errs := c.errors
		c.mu.Unlock()
		if len(errs) > 0 {
			t.Errorf("%s got errors: %+v", c.identity, errs)
		}
	}
}
