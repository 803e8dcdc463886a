package main

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// relayPair reports the relay page's selected candidate pair on the
// subscriber connection: 0 not relayed, 1 relayed over UDP to the TURN
// server, 2 over TCP, 3 over TLS.
const relayPair = `(async () => {
  const pc = window.parley && window.parley.subscriberPC;
  if (!pc) return 0;
  const st = await pc.getStats();
  let v = 0;
  st.forEach((r) => {
    if (r.type !== 'transport' || !r.selectedCandidatePairId) return;
    const pair = st.get(r.selectedCandidatePairId);
    const local = pair && st.get(pair.localCandidateId);
    if (local && local.candidateType === 'relay') v = {udp: 1, tcp: 2, tls: 3}[local.relayProtocol] || 0;
  });
  return v;
})()`

// TestBrowserThroughTURN: Chromium restricted to relay candidates
// (iceTransportPolicy 'relay', via ?relay=1) joins through the embedded
// TURN server, over UDP (its only listener) and over TCP (likewise), and
// decodes the other participant's video. Loopback peers are allowed by the
// test's turn.allow_peers; the test runs in the loopback-only namespace.
func TestBrowserThroughTURN(t *testing.T) {
	requireChromium(t)
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			base, a := startServer(t, func(c *Config) {
				c.TURN.Enabled = true
				c.TURN.PublicIP = "127.0.0.1"
				c.TURN.ListenIP = "127.0.0.1"
				// One listener each time (-1: a free port, 0: off): with
				// both, Chromium may settle on the TCP relay when the UDP
				// one answers its checks late on a loaded machine.
				c.TURN.UDPPort, c.TURN.TCPPort = -1, 0
				if transport == "tcp" {
					c.TURN.UDPPort, c.TURN.TCPPort = 0, -1
				}
				c.TURN.RelayPortMin, c.TURN.RelayPortMax = 44000, 44999
				c.TURN.AllowPeers = []string{"127.0.0.0/8"}
			})
			browser := startBrowser(t)
			const room = "turn"
			direct := newPage(t, browser, "direct")
			direct.run(t, 15*time.Second, chromedp.Navigate(deepLink(base, room, "Direct")))
			relayed := newPage(t, browser, "relayed")
			relayed.run(t, 15*time.Second, chromedp.Navigate(deepLink(base, room, "Relayed")+"&relay=1"))

			relayed.waitFor(t, "relayed page decodes the direct page's video", decodingVideos, 30*time.Second, func(v float64) bool { return v >= 1 })
			direct.waitFor(t, "direct page decodes the relayed page's video", decodingVideos, 30*time.Second, func(v float64) bool { return v >= 1 })
			want := map[string]float64{"udp": 1, "tcp": 2}[transport]
			relayed.waitFor(t, "selected pair relayed over "+transport, relayPair, 10*time.Second, func(v float64) bool { return v == want })
			if st := a.TURN.Stats(); st.Allocations == 0 || st.BytesRelayed == 0 {
				t.Fatalf("TURN stats %+v: want allocations and relayed bytes", st)
			}
		})
	}
}
