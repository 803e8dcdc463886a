package signaling

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/parley-rtc/parley/rooms"
	"github.com/parley-rtc/parley/turn"
)

// TestMediaThroughEmbeddedTURN: the join response carries TURN credentials
// minted for the participant, and a client that may only use relay
// candidates gets its media through the embedded TURN server, over UDP
// and over TCP (as a client behind a UDP-blocking firewall would).
func TestMediaThroughEmbeddedTURN(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			cfg := turn.Config{Enabled: true, PublicIP: "127.0.0.1", ListenIP: "127.0.0.1", TCPPort: -1,
				RelayPortMin: 43000, RelayPortMax: 43999, AllowPeers: []string{"127.0.0.0/8"}}
			if transport == "udp" {
				cfg.UDPPort = -1
			}
			ts, err := turn.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = ts.Close() })
			s := newTestServer(t, rooms.Config{}, Config{ICEServersFor: func(identity string) []ICEServer {
				stunURLs, turnURLs := ts.URLs()
				user, pass := ts.Credentials(identity)
				return []ICEServer{{URLs: stunURLs}, {URLs: turnURLs, Username: user, Credential: pass}}
			}})

			direct := joinClient(t, s, "r", "direct")
			direct.publish(true, true)
			relayed := joinWith(t, s, "r", "relayed", true, newAPI(t, webrtc.NetworkTypeUDP4, webrtc.NetworkTypeTCP4))
			servers := relayed.joined.ICEServers
			var withCreds int
			for _, is := range servers {
				if len(is.URLs) == 0 {
					t.Fatalf("an ICE server without URLs in the join response: %+v", servers)
				}
				if strings.HasSuffix(is.Username, ":relayed") && is.Credential != "" {
					withCreds++
				}
			}
			if withCreds != 1 {
				t.Fatalf("ice servers in the join response: %+v, want TURN credentials for \"relayed\"", servers)
			}
			relayed.publish(true, true)
			kinds := []string{"audio", "video"}
			waitErr(t, 30*time.Second, func() error { return relayed.mediaFrom([]string{"direct"}, kinds, 30) })
			waitErr(t, 30*time.Second, func() error { return direct.mediaFrom([]string{"relayed"}, kinds, 30) })
			checkIntact(t, relayed)
			for _, pc := range []*webrtc.PeerConnection{relayed.pub, relayed.sub} {
				stats := pc.GetStats()
				ok := false
				for _, st := range stats {
					if pair, isPair := st.(webrtc.ICECandidatePairStats); isPair && pair.Nominated {
						if local, isCand := stats[pair.LocalCandidateID].(webrtc.ICECandidateStats); isCand && local.CandidateType == webrtc.ICECandidateTypeRelay {
							ok = true
						}
					}
				}
				if !ok {
					t.Error("the relay-only client's nominated pair is not a relay candidate")
				}
			}
			if st := ts.Stats(); st.Allocations < 2 || st.BytesRelayed == 0 {
				t.Fatalf("TURN stats %+v: want the client's two allocations and relayed bytes", st)
			}
		})
	}
}
