package signaling

import (
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/parley-rtc/parley/rooms"
	"github.com/parley-rtc/parley/sfu"
)

// TestICETCPWhenUDPIsBlocked: a client that cannot use UDP at all (its ICE
// agent gathers TCP only) still publishes and receives, over the SFU's
// ICE-TCP port, its subscriber connection on pion's send path.
func TestICETCPWhenUDPIsBlocked(t *testing.T) {
	s := newTestServer(t, rooms.Config{}, Config{}, sfu.Config{ListenIP: "127.0.0.1", TCPPort: -1, IncludeLoopback: true})
	if s.engine.TCPAddr() == nil {
		t.Fatal("ICE-TCP not listening")
	}
	udp := joinClient(t, s, "r", "udp-user")
	udp.publish(true, true)
	tcpOnly := joinClient(t, s, "r", "tcp-user", newAPI(t, webrtc.NetworkTypeTCP4))
	tcpOnly.publish(true, true)
	kinds := []string{"audio", "video"}
	waitErr(t, 30*time.Second, func() error { return tcpOnly.mediaFrom([]string{"udp-user"}, kinds, 30) })
	waitErr(t, 30*time.Second, func() error { return udp.mediaFrom([]string{"tcp-user"}, kinds, 30) })
	for _, pc := range []*webrtc.PeerConnection{tcpOnly.pub, tcpOnly.sub} {
		stats := pc.GetStats()
		found := false
		for _, st := range stats {
			if pair, ok := st.(webrtc.ICECandidatePairStats); ok && pair.Nominated {
				if local, ok := stats[pair.LocalCandidateID].(webrtc.ICECandidateStats); ok && local.Protocol == "tcp" {
					found = true
				}
			}
		}
		if !found {
			t.Error("the TCP-only client's nominated candidate pair is not TCP")
		}
	}
	// The UDP client's media goes on the direct path, the TCP-only
	// client's through pion's (the direct path writes UDP only).
	if st := s.engine.Stats(); st.DirectConnections != 1 || st.PionConnections != 1 {
		t.Errorf("subscriber connections by send path: direct %d, pion %d; want 1 and 1", st.DirectConnections, st.PionConnections)
	}
	checkIntact(t, tcpOnly)
}
