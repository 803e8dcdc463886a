package sfu

// BenchmarkLoopbackForward: the whole media path with real pion peer
// connections over 127.0.0.1, through the engine's exported API only
// (NewPublisher, NewSubscriber, Track.Start, Subscriber.AddTrack).
//
// One op is one RTP packet (VP8, 1000-byte payload) that a pion publisher
// writes and every one of N pion subscribers reads:
//
//	publisher client:  interceptors (NACK buffer, TWCC, reports), SRTP encrypt, sendto
//	server:            recvfrom, SRTP decrypt, interceptors, Parley's forwarding
//	                   (ring, queue, rewrite, NACK history), then per subscriber
//	                   interceptors, SRTP encrypt, sendto
//	N subscriber clients: recvfrom, SRTP decrypt, interceptors, Read
//
// All of it runs in this one process on the same cores, so ns/op is the
// cost of the whole loop, clients included: an upper bound of the server's
// share, not the server's share (parley loadtest reads that from the
// server's own CPU counter). ns/delivered divides by the N copies. The same
// holds for -benchmem: allocs/op counts every allocation in the process —
// Parley's forwarding (zero per packet, see TestForwardDoesNotAllocate) and
// pion's SRTP, interceptor and read paths on both sides. They are reported
// as measured, not filtered.
//
// The publisher keeps at most benchWindow packets in flight per subscriber
// (it waits for the subscribers to catch up), so nothing is dropped for
// being too fast: what is timed is the per-packet work, not the kernel's
// buffer limits. Packets still missing after benchWait are counted as lost
// (reported as lost/op) and the run goes on; keyframes-asked counts the
// server's keyframe requests during the run (a subscriber that falls behind
// skips to the next keyframe).

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

const (
	benchWindow  = 16               // packets in flight per subscriber, at most
	benchWait    = time.Second      // for a window to arrive before counting it lost
	benchConnect = 20 * time.Second // ICE + DTLS of every peer
	benchPayload = 1000
)

func BenchmarkLoopbackForward(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) { benchLoopbackForward(b, n) })
	}
}

// benchAPI is a browser-like pion client restricted to loopback: default
// codecs and interceptors (so it sends NACKs, reports and TWCC feedback).
func benchAPI(b *testing.B) *webrtc.API {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		b.Fatal(err)
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, reg); err != nil {
		b.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
}

// benchDelivery counts what every subscriber read and wakes the publisher
// when a target is reached.
type benchDelivery struct {
	delivered atomic.Int64
	target    atomic.Int64
	wake      chan struct{}
}

func (d *benchDelivery) add() {
	if d.delivered.Add(1) >= d.target.Load() {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// waitFor waits until n packets were delivered in all, or benchWait.
func (d *benchDelivery) waitFor(n int64) bool {
	d.target.Store(n)
	if d.delivered.Load() >= n {
		return true
	}
	timeout := time.NewTimer(benchWait)
	defer timeout.Stop()
	for d.delivered.Load() < n {
		select {
		case <-d.wake:
		case <-timeout.C:
			return false
		}
	}
	return true
}

func benchLoopbackForward(b *testing.B, subscribers int) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := NewEngine(Config{ListenIP: "127.0.0.1", IncludeLoopback: true, ICEFailGrace: time.Second}, log)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.Close() })
	api := benchAPI(b)
	fail := func(format string, args ...any) { b.Errorf(format, args...) }

	// The publisher: one VP8 track.
	local, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "camera", "PA_bench")
	if err != nil {
		b.Fatal(err)
	}
	ppc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ppc.Close() })
	tr, err := ppc.AddTransceiverFromTrack(local, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		b.Fatal(err)
	}
	// Drain RTCP (NACKs reach the responder only when read); a keyframe
	// request makes the next packet a keyframe, as an encoder would (the
	// server asks for one when a subscriber fell behind and had to skip).
	var keyReq atomic.Bool
	var keyframes atomic.Int64
	go func() {
		for {
			pkts, _, err := tr.Sender().ReadRTCP()
			if err != nil {
				return
			}
			for _, p := range pkts {
				switch p.(type) {
				case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
					keyReq.Store(true)
				}
			}
		}
	}()
	tracks := make(chan *Track, 1)
	psig := newSignals(b)
	pub, err := e.NewPublisher(PeerEvents{
		Answer: func(sdp string) {
			psig.post(func() {
				if err := ppc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
					fail("publisher: answer: %v", err)
				}
			})
		},
		Candidate: func(c *webrtc.ICECandidateInit) {
			if c != nil {
				psig.post(func() { _ = ppc.AddICECandidate(*c) })
			}
		},
		Track: func(t *Track) {
			t.Start("TR_bench")
			select {
			case tracks <- t:
			default:
			}
		},
	}, log)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = pub.Close() })
	offer, err := ppc.CreateOffer(nil)
	if err != nil {
		b.Fatal(err)
	}
	sdp, err := localDescription(ppc, offer, benchConnect)
	if err != nil {
		b.Fatal(err)
	}
	if err := pub.HandleOffer(sdp); err != nil {
		b.Fatal(err)
	}

	// Keyframes until the server has the track (it arrives with the first
	// packet after ICE and DTLS).
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2, Marker: true, SequenceNumber: 1, Timestamp: 1}, Payload: make([]byte, benchPayload)}
	send := func(key bool) {
		pkt.Payload[0] = 0x10 // S=1, partition 0
		pkt.Payload[1] = 0x01 // inter frame
		if keyReq.Swap(false) {
			key = true
			keyframes.Add(1)
		}
		if key {
			pkt.Payload[1] = 0x00
		}
		if err := local.WriteRTP(pkt); err != nil {
			b.Fatal(err)
		}
		pkt.SequenceNumber++
		pkt.Timestamp += 3000
	}
	var track *Track
	for deadline := time.Now().Add(benchConnect); track == nil; {
		send(true)
		select {
		case track = <-tracks:
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("the server saw no track within %s (publisher %s)", benchConnect, ppc.ConnectionState())
		}
	}

	// The subscribers.
	dl := &benchDelivery{wake: make(chan struct{}, 1)}
	var reading sync.WaitGroup
	var receiving atomic.Int64
	for i := 0; i < subscribers; i++ {
		spc, err := api.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = spc.Close() })
		spc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			receiving.Add(1)
			reading.Add(1)
			go func() {
				defer reading.Done()
				buf := make([]byte, 1500)
				for {
					if _, _, err := tr.Read(buf); err != nil {
						return
					}
					dl.add()
				}
			}()
		})
		ssig := newSignals(b)
		var sub *Subscriber
		sub, err = e.NewSubscriber(PeerEvents{
			Offer: func(sdp string, _ map[string]string) {
				ssig.post(func() {
					if err := spc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp}); err != nil {
						fail("subscriber %d: offer: %v", i, err)
						return
					}
					answer, err := spc.CreateAnswer(nil)
					if err == nil {
						var sdp string
						if sdp, err = localDescription(spc, answer, benchConnect); err == nil {
							err = sub.HandleAnswer(sdp)
						}
					}
					if err != nil {
						fail("subscriber %d: answer: %v", i, err)
					}
				})
			},
			Candidate: func(c *webrtc.ICECandidateInit) {
				if c != nil {
					ssig.post(func() { _ = spc.AddICECandidate(*c) })
				}
			},
		}, benchConnect, log)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = sub.Close() })
		sub.AddTrack(track, "PA_bench|camera")
	}
	// Keyframes until every subscriber reads, then a clean count.
	for deadline := time.Now().Add(benchConnect); ; {
		send(true)
		time.Sleep(20 * time.Millisecond)
		if receiving.Load() == int64(subscribers) && dl.delivered.Load() >= int64(subscribers) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d subscribers receive after %s", receiving.Load(), subscribers, benchConnect)
		}
	}
	time.Sleep(100 * time.Millisecond) // the last keyframes through
	start := dl.delivered.Load()
	keyframes.Store(0)
	n := int64(subscribers)
	var sent, lost int64
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	b.ReportAllocs()
	for b.Loop() {
		send(false)
		sent++
		if sent%benchWindow == 0 {
			// At most two windows in flight.
			want := start + (sent-benchWindow)*n
			if !dl.waitFor(want) {
				missing := want - dl.delivered.Load()
				lost += missing
				start -= missing // counted once: later targets do without them
			}
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	if !dl.waitFor(start + sent*n) {
		lost += start + sent*n - dl.delivered.Load()
	}
	delivered := float64(sent * n)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/delivered, "ns/delivered")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/delivered, "allocs/delivered")
	b.ReportMetric(float64(lost)/float64(sent), "lost/op")
	b.ReportMetric(float64(keyframes.Load()), "keyframes-asked")
	if lost*100 > sent*n { // over 1%: the figures would be wrong
		b.Errorf("%d of %d packets lost", lost, sent*n)
	}
}
