package signaling

import (
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parley-rtc/parley/rooms"
)

// TestNoGoroutineLeakAfterChurn joins, publishes and leaves repeatedly and
// checks that every goroutine of those sessions (read loops, writers,
// RTCP readers, pion's own) is gone once they have left.
func TestNoGoroutineLeakAfterChurn(t *testing.T) {
	s := newTestServer(t, rooms.Config{}, Config{})
	host := joinClient(t, s, "churn", "host")
	host.publish(true, true)
	var baseline goleak.Option
	for round := 0; round < 4; round++ {
		if round == 1 {
			// Round 0 connected the host's subscriber connection, which
			// stays; everything started after this must go away.
			waitFor(t, 10*time.Second, "round 0 gone", func() bool {
				return len(s.mgr.Room("churn").Participants()) == 1
			})
			time.Sleep(time.Second)
			baseline = goleak.IgnoreCurrent()
		}
		var cs []*testClient
		for i := 0; i < 3; i++ {
			c := joinClient(t, s, "churn", fmt.Sprintf("guest-%d-%d", round, i))
			c.publish(true, true)
			cs = append(cs, c)
		}
		for _, c := range cs {
			waitErr(t, 20*time.Second, func() error { return c.mediaFrom([]string{"host"}, []string{"audio", "video"}, 10) })
		}
		for _, c := range cs {
			c.leave()
		}
	}
	waitFor(t, 10*time.Second, "room back to one participant", func() bool {
		return len(s.mgr.Room("churn").Participants()) == 1
	})
	// A live DTLS connection (the host's, carrying its data channels) has
	// one helper goroutine per pending read, a new one for each read: not
	// a leak. A leaked connection would show its ICE, DTLS and SCTP loops.
	perRead := goleak.IgnoreTopFunction("github.com/pion/transport/v4/netctx.(*packetConn).ReadFromContext.func1")
	var err error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		if err = goleak.Find(baseline, perRead); err == nil {
			return
		}
	}
	t.Fatal(err)
}
