package sfu

// The harness of the vnet tests: the engine, real pion clients and a
// simulated network (pion's vnet) whose links can lose packets or be capped,
// so that loss recovery and bandwidth adaptation are tested end to end
// without a host network. Only the engine's exported API is used (Publisher,
// Subscriber, Track), so the harness keeps working while sfu internals change.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/transport/v4/vnet"
	"github.com/pion/webrtc/v4"
)

const (
	vnetCIDR     = "10.0.0.0/24"
	vnetServerIP = "10.0.0.1"
	// vnetLinkDelay is the one-way delay of every hop through the router.
	vnetLinkDelay = 10 * time.Millisecond
	// vnetConnectTimeout bounds ICE + DTLS and every signalling step.
	vnetConnectTimeout = 10 * time.Second
)

// vnetLab is one simulated network with the engine on vnetServerIP.
type vnetLab struct {
	t      *testing.T
	start  time.Time
	router *vnet.Router
	engine *Engine
	log    *slog.Logger
	// closing is set when the test tears down; errors of peers that are
	// being closed are not failures then.
	closing atomic.Bool

	mu     sync.Mutex
	nextID int
	seen   map[string]bool // track ids (CID) already handed out
	tracks chan *Track     // the first Track event per published track id
}

// newVnetLab builds the router and the engine; add hosts, filters and
// shaped links, then call run.
func newVnetLab(t *testing.T, opts ...func(*Config)) *vnetLab {
	t.Helper()
	router, err := vnet.NewRouter(&vnet.RouterConfig{CIDR: vnetCIDR, MinDelay: vnetLinkDelay,
		LoggerFactory: logging.NewDefaultLoggerFactory()})
	if err != nil {
		t.Fatal(err)
	}
	serverNet, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{vnetServerIP}})
	if err != nil {
		t.Fatal(err)
	}
	if err := router.AddNet(serverNet); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: parleyTestLevel()}))
	cfg := Config{Net: serverNet, ICEFailGrace: time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	e, err := NewEngine(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	lab := &vnetLab{t: t, start: time.Now(), router: router, engine: e, log: log,
		seen: map[string]bool{}, tracks: make(chan *Track, 16)}
	// Cleanups run last-in first-out: peers (registered later) close
	// first, then the engine, then the network.
	t.Cleanup(func() {
		if err := router.Stop(); err != nil {
			t.Errorf("router stop: %v", err)
		}
	})
	t.Cleanup(func() { _ = e.Close() })
	t.Cleanup(func() { lab.closing.Store(true) })
	return lab
}

// host adds a client machine with this address.
func (l *vnetLab) host(ip string) *vnet.Net {
	l.t.Helper()
	n, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{ip}})
	if err != nil {
		l.t.Fatal(err)
	}
	if err := l.router.AddNet(n); err != nil {
		l.t.Fatal(err)
	}
	return n
}

// shapedHost adds a client machine whose downlink (everything the router
// delivers to it) passes a token bucket queue: vnet's TBFQueue attached with
// vnet.NewQueue, i.e. a shaper that delays, and drops only when its queue
// (queueBytes) is full, like a real bottleneck link. The rate starts at
// rateBits (bit/s); change it with SetRate.
func (l *vnetLab) shapedHost(ip string, rateBits, burstBytes int, queueBytes int64) (*vnet.Net, *vnet.TBFQueue) {
	l.t.Helper()
	n, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{ip}})
	if err != nil {
		l.t.Fatal(err)
	}
	tbf := vnet.NewTBFQueue(rateBits, burstBytes, queueBytes)
	q, err := vnet.NewQueue(n, tbf)
	if err != nil {
		l.t.Fatal(err)
	}
	if err := l.router.AddNet(q); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { _ = q.Close() }) // after the router stopped
	return n, tbf
}

// run starts the network.
func (l *vnetLab) run() {
	l.t.Helper()
	if err := l.router.Start(); err != nil {
		l.t.Fatal(err)
	}
}

// since is the time since the lab started, for reports.
func (l *vnetLab) since() time.Duration { return time.Since(l.start) }

// fail reports an error from a peer's goroutine, unless the test is over.
func (l *vnetLab) fail(format string, args ...any) {
	if !l.closing.Load() {
		l.t.Errorf(format, args...)
	}
}

// onTrack is the server's PeerEvents.Track. Every track is started, as the
// rooms package does; the first one per track id is handed to the test.
// Today's engine fires once per simulcast encoding (RID), with the same
// track id; a layered engine fires once per track.
func (l *vnetLab) onTrack(t *Track) {
	l.mu.Lock()
	l.nextID++
	sid := fmt.Sprintf("TR_vnet%d", l.nextID)
	first := !l.seen[t.CID()]
	l.seen[t.CID()] = true
	l.mu.Unlock()
	t.Start(sid)
	if first {
		l.tracks <- t
	}
}

// track waits for the next published track.
func (l *vnetLab) track() *Track {
	l.t.Helper()
	select {
	case t := <-l.tracks:
		return t
	case <-time.After(vnetConnectTimeout):
		l.t.Fatal("the server saw no published track")
	}
	return nil
}

// vnetClientAPI is a browser stand-in on the simulated network: default
// interceptors, so it sends NACKs, receiver reports and TWCC feedback, and
// answers NACKs from its send buffer; what it sends carries transport-wide
// sequence numbers. With rtx false it offers VP8 without
// RTX (a simulcast sender: its retransmissions then stay on the layer's own
// SSRC, which the server already knows by RID).
func vnetClientAPI(t *testing.T, n *vnet.Net, rtx bool) *webrtc.API {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if rtx {
		if err := m.RegisterDefaultCodecs(); err != nil {
			t.Fatal(err)
		}
	} else if err := m.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000},
		PayloadType:        96,
	}, webrtc.RTPCodecTypeVideo); err != nil {
		t.Fatal(err)
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, reg); err != nil {
		t.Fatal(err)
	}
	// As browsers do: a transport-wide sequence number on what it sends.
	if err := webrtc.ConfigureTWCCHeaderExtensionSender(m, reg); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetNet(n)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
}

// signals runs one client's signalling steps in order on its own
// goroutine, so that server callbacks only post (PeerEvents contract).
type signals struct {
	ch   chan func()
	done chan struct{}
	wg   sync.WaitGroup
}

func newSignals(t testing.TB) *signals {
	s := &signals{ch: make(chan func(), 64), done: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			select {
			case f := <-s.ch:
				f()
			case <-s.done:
				return
			}
		}
	}()
	t.Cleanup(func() { close(s.done); s.wg.Wait() })
	return s
}

func (s *signals) post(f func()) {
	select {
	case s.ch <- f:
	case <-s.done:
	}
}

// localDescription sets d and waits (at most within) for candidate
// gathering, so the SDP carries the client's candidates.
func localDescription(pc *webrtc.PeerConnection, d webrtc.SessionDescription, within time.Duration) (string, error) {
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(d); err != nil {
		return "", err
	}
	select {
	case <-gathered:
	case <-time.After(within):
		return "", fmt.Errorf("candidate gathering did not complete in %s", within)
	}
	return pc.LocalDescription().SDP, nil
}

// waitFor polls cond until it holds or d has passed.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitConnected waits (bounded) for a client connection to connect.
func waitConnected(t *testing.T, name string, pc *webrtc.PeerConnection, connected <-chan struct{}) {
	t.Helper()
	select {
	case <-connected:
	case <-time.After(vnetConnectTimeout):
		t.Fatalf("%s: not connected after %s (state %s)", name, vnetConnectTimeout, pc.ConnectionState())
	}
}

func onConnected(pc *webrtc.PeerConnection) <-chan struct{} {
	ch := make(chan struct{})
	var once sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(ch) })
		}
	})
	return ch
}

// publish connects a publishing client: setup adds its transceivers, the
// client offers, the engine answers. It returns once ICE and DTLS are up.
func (l *vnetLab) publish(name string, api *webrtc.API, setup func(pc *webrtc.PeerConnection)) *webrtc.PeerConnection {
	l.t.Helper()
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { _ = pc.Close() })
	connected := onConnected(pc)
	setup(pc)
	sig := newSignals(l.t)
	pub, err := l.engine.NewPublisher(PeerEvents{
		Answer: func(sdp string) {
			sig.post(func() {
				if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
					l.fail("%s: client cannot apply the answer: %v", name, err)
				}
			})
		},
		Candidate: func(c *webrtc.ICECandidateInit) {
			if c == nil {
				return
			}
			sig.post(func() {
				if err := pc.AddICECandidate(*c); err != nil {
					l.fail("%s: client refused a server candidate: %v", name, err)
				}
			})
		},
		Track:  l.onTrack,
		Failed: func(err error) { l.fail("%s: server publisher failed: %v", name, err) },
	}, l.log.With("pc", name))
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { _ = pub.Close() })
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		l.t.Fatal(err)
	}
	sdp, err := localDescription(pc, offer, vnetConnectTimeout)
	if err != nil {
		l.t.Fatal(err)
	}
	if err := pub.HandleOffer(sdp); err != nil {
		l.t.Fatalf("%s: server refused the offer: %v", name, err)
	}
	waitConnected(l.t, name, pc, connected)
	return pc
}

// subscribe connects a subscribing client: the engine offers whatever it
// is asked to forward (Subscriber.AddTrack), the client answers. onTrack
// publishVideo publishes one VP8 camera track (id "camera", stream
// "PA_pub") through api and sends it at bitrate until stop, which the
// test's cleanup calls too.
func (l *vnetLab) publishVideo(api *webrtc.API, bitrate int) (video *vnetLayer, stop func()) {
	l.t.Helper()
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "camera", "PA_pub")
	if err != nil {
		l.t.Fatal(err)
	}
	video = &vnetLayer{marker: 'v', bitrate: bitrate, track: track}
	l.publish("publisher", api, func(pc *webrtc.PeerConnection) {
		tr, err := pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		if err != nil {
			l.t.Fatal(err)
		}
		go video.drainRTCP(tr.Sender().ReadRTCP)
	})
	ctx, cancel := context.WithCancel(context.Background())
	sending := make(chan struct{})
	go func() { defer close(sending); sendVideo(ctx, video) }()
	stop = func() { cancel(); <-sending }
	l.t.Cleanup(stop)
	return video, stop
}

// gets every remote track the client receives.
func (l *vnetLab) subscribe(name string, api *webrtc.API, onTrack func(*webrtc.TrackRemote)) (*webrtc.PeerConnection, *Subscriber, <-chan struct{}) {
	l.t.Helper()
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { _ = pc.Close() })
	connected := onConnected(pc)
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) { onTrack(tr) })
	sig := newSignals(l.t)
	var sub *Subscriber
	sub, err = l.engine.NewSubscriber(PeerEvents{
		Offer: func(sdp string, _ map[string]string) {
			sig.post(func() {
				if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp}); err != nil {
					l.fail("%s: client cannot apply the offer: %v", name, err)
					return
				}
				answer, err := pc.CreateAnswer(nil)
				if err != nil {
					l.fail("%s: client cannot answer: %v", name, err)
					return
				}
				sdp, err := localDescription(pc, answer, vnetConnectTimeout)
				if err != nil {
					l.fail("%s: %v", name, err)
					return
				}
				if err := sub.HandleAnswer(sdp); err != nil {
					l.fail("%s: server refused the answer: %v", name, err)
				}
			})
		},
		Candidate: func(c *webrtc.ICECandidateInit) {
			if c == nil {
				return
			}
			sig.post(func() {
				if err := pc.AddICECandidate(*c); err != nil {
					l.fail("%s: client refused a server candidate: %v", name, err)
				}
			})
		},
		Failed: func(err error) { l.fail("%s: server subscriber failed: %v", name, err) },
	}, vnetConnectTimeout, l.log.With("pc", name))
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { _ = sub.Close() })
	return pc, sub, connected
}

// parleyTestLevel is the server log level of the vnet tests: warnings, or
// PARLEY_TEST_LOG=debug to follow the estimator and the probes.
func parleyTestLevel() slog.Level {
	if os.Getenv("PARLEY_TEST_LOG") == "debug" {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}
