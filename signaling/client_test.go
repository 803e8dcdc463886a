package signaling

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/parley-rtc/parley/rooms"
	"github.com/parley-rtc/parley/sfu"
)

// testServer is a whole signaling+SFU server on loopback.
type testServer struct {
	url    string // ws://127.0.0.1:port/rtc
	key    string
	secret string
	srv    *Server
	mgr    *rooms.Manager
	engine *sfu.Engine
}

const testKey, testSecret = "testkey", "0123456789abcdef0123456789abcdef-secret"

func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("PARLEY_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newTestServer(t testing.TB, rcfg rooms.Config, scfg Config, ecfgs ...sfu.Config) *testServer {
	t.Helper()
	log := testLogger(t)
	ecfg := sfu.Config{UDPPort: 0, ListenIP: "127.0.0.1", IncludeLoopback: true}
	if len(ecfgs) > 0 {
		ecfg = ecfgs[0]
	}
	engine, err := sfu.NewEngine(ecfg, log)
	if err != nil {
		t.Fatal(err)
	}
	mgr := rooms.NewManager(rcfg, engine, log)
	if scfg.Keys == nil {
		scfg.Keys = map[string]string{testKey: testSecret}
	}
	srv, err := NewServer(scfg, mgr, log)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		mgr.Close()
		hs.Close()
		_ = engine.Close()
	})
	return &testServer{url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/rtc", key: testKey, secret: testSecret, srv: srv, mgr: mgr, engine: engine}
}

func (s *testServer) token(t testing.TB, room, identity string) string {
	t.Helper()
	tok, err := MintToken(s.key, s.secret, TokenSpec{Room: room, Identity: identity, Name: strings.ToUpper(identity),
		Grants: rooms.Grants{Publish: true, Subscribe: true, Data: true}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// received counts what a client got on one remote track.
type received struct {
	sid      string
	kind     string
	packets  int
	gaps     int // sequence number discontinuities
	badBytes int // payloads that were not what the publisher wrote
	lastSeq  uint16
	lastCnt  uint32
	from     string // publisher identity read from the payload
	ended    bool
}

// testClient is a pion peer speaking the Parley protocol.
type testClient struct {
	t        testing.TB
	identity string
	ws       *websocket.Conn
	api      *webrtc.API
	relay    bool // relay-only ICE through the ice_servers of the join response
	// audioEvery is the audio packet interval (default 20ms).
	audioEvery time.Duration
	pub, sub   *webrtc.PeerConnection

	wmu sync.Mutex // websocket writes

	mu      sync.Mutex
	joined  *Joined
	mids    map[string]string
	recv    map[string]*received // by track sid
	events  []Envelope
	errors  []Error
	left    map[string]bool // participant sids that left
	unpub   map[string]bool // track sids unpublished
	closed  bool
	closing atomic.Bool
	pending []webrtc.ICECandidateInit // publisher candidates before the answer

	stopSend chan struct{}
	sendWG   sync.WaitGroup

	// Data channels (data_test.go).
	dc, lossyDC *webrtc.DataChannel
	dmsgs       []dataRecv

	descs []TrackDesc // every track published so far
}

func newAPI(t testing.TB, types ...webrtc.NetworkType) *webrtc.API {
	if len(types) == 0 {
		types = []webrtc.NetworkType{webrtc.NetworkTypeUDP4}
	}
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	// Audio levels (RFC 6464), as browsers offer them.
	if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.AudioLevelURI}, webrtc.RTPCodecTypeAudio); err != nil {
		t.Fatal(err)
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, reg); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes(types)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
}

// dial opens the socket without joining.
func dial(t testing.TB, url string) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return ws
}

func (c *testClient) write(typ string, payload any) {
	data, _ := json.Marshal(payload)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = c.ws.WriteJSON(Envelope{Type: typ, Data: data})
}

// joinClient connects and joins; it answers subscriber offers by itself.
func joinClient(t testing.TB, s *testServer, room, identity string, apis ...*webrtc.API) *testClient {
	t.Helper()
	return joinWith(t, s, room, identity, false, apis...)
}

// joinWith joins; with relay the peer connections use only the join
// response's ICE servers, relay candidates only (TURN).
func joinWith(t testing.TB, s *testServer, room, identity string, relay bool, apis ...*webrtc.API) *testClient {
	t.Helper()
	return joinToken(t, s, room, identity, s.token(t, room, identity), relay, apis...)
}

// joinToken joins with the given token.
func joinToken(t testing.TB, s *testServer, room, identity, token string, relay bool, apis ...*webrtc.API) *testClient {
	t.Helper()
	api := newAPI(t)
	if len(apis) > 0 {
		api = apis[0]
	}
	c := &testClient{t: t, identity: identity, api: api, relay: relay, mids: map[string]string{}, recv: map[string]*received{},
		left: map[string]bool{}, unpub: map[string]bool{}, stopSend: make(chan struct{})}
	c.ws = dial(t, s.url)
	c.write(TypeJoin, Join{Token: token, Protocol: ProtocolVersion, Room: room})
	_ = c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var env Envelope
	if err := c.ws.ReadJSON(&env); err != nil || env.Type != TypeJoined {
		t.Fatalf("%s: join: %v %s %s", identity, err, env.Type, env.Data)
	}
	_ = c.ws.SetReadDeadline(time.Time{})
	var j Joined
	_ = json.Unmarshal(env.Data, &j)
	c.joined = &j
	cfg := webrtc.Configuration{}
	if relay {
		cfg.ICETransportPolicy = webrtc.ICETransportPolicyRelay
		for _, is := range j.ICEServers {
			cfg.ICEServers = append(cfg.ICEServers, webrtc.ICEServer{URLs: is.URLs, Username: is.Username, Credential: is.Credential})
		}
	}
	var err error
	if c.sub, err = c.api.NewPeerConnection(cfg); err != nil {
		t.Fatal(err)
	}
	if c.pub, err = c.api.NewPeerConnection(cfg); err != nil {
		t.Fatal(err)
	}
	c.sub.OnICECandidate(func(ci *webrtc.ICECandidate) {
		if ci != nil {
			raw, _ := json.Marshal(ci.ToJSON())
			r := json.RawMessage(raw)
			c.write(TypeCandidate, Candidate{Target: TargetSubscrib, Candidate: &r})
		}
	})
	c.pub.OnICECandidate(func(ci *webrtc.ICECandidate) {
		if ci != nil {
			raw, _ := json.Marshal(ci.ToJSON())
			r := json.RawMessage(raw)
			c.write(TypeCandidate, Candidate{Target: TargetPublisher, Candidate: &r})
		}
	})
	c.sub.OnTrack(c.onTrack)
	c.sub.OnDataChannel(c.onDataChannel)
	t.Cleanup(c.close)
	go c.readLoop(c.ws)
	return c
}

// errorf reports a client-side failure unless the client is being closed
// (renegotiations racing the shutdown are expected then).
func (c *testClient) errorf(format string, args ...any) {
	if !c.closing.Load() {
		c.t.Errorf(format, args...)
	}
}

func (c *testClient) readLoop(ws *websocket.Conn) {
	for {
		var env Envelope
		if err := ws.ReadJSON(&env); err != nil {
			c.mu.Lock()
			c.closed = true
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		c.events = append(c.events, env)
		c.mu.Unlock()
		switch env.Type {
		case TypeJoined:
			var j Joined
			_ = json.Unmarshal(env.Data, &j)
			c.mu.Lock()
			c.joined = &j
			c.mu.Unlock()
		case TypeOffer:
			var o Offer
			_ = json.Unmarshal(env.Data, &o)
			c.mu.Lock()
			for k, v := range o.Mids {
				c.mids[k] = v
			}
			c.mu.Unlock()
			if err := c.sub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: o.SDP}); err != nil {
				c.errorf("%s: subscriber offer: %v", c.identity, err)
				continue
			}
			ans, err := c.sub.CreateAnswer(nil)
			if err == nil {
				err = c.sub.SetLocalDescription(ans)
			}
			if err != nil {
				c.errorf("%s: subscriber answer: %v", c.identity, err)
				continue
			}
			c.write(TypeAnswer, Answer{SDP: ans.SDP})
		case TypeAnswer:
			var a Answer
			_ = json.Unmarshal(env.Data, &a)
			if err := c.pub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: a.SDP}); err != nil {
				c.errorf("%s: publisher answer: %v", c.identity, err)
			}
			c.mu.Lock()
			pending := c.pending
			c.pending = nil
			c.mu.Unlock()
			for _, ci := range pending {
				_ = c.pub.AddICECandidate(ci)
			}
		case TypeCandidate:
			var m Candidate
			_ = json.Unmarshal(env.Data, &m)
			if m.Candidate == nil || string(*m.Candidate) == "null" {
				continue
			}
			var ci webrtc.ICECandidateInit
			_ = json.Unmarshal(*m.Candidate, &ci)
			if m.Target == TargetSubscrib {
				if err := c.sub.AddICECandidate(ci); err != nil {
					c.errorf("%s: subscriber candidate: %v", c.identity, err)
				}
			} else {
				if c.pub.RemoteDescription() == nil {
					c.mu.Lock()
					c.pending = append(c.pending, ci)
					c.mu.Unlock()
					continue
				}
				if err := c.pub.AddICECandidate(ci); err != nil {
					c.errorf("%s: publisher candidate: %v", c.identity, err)
				}
			}
		case TypePartLeft:
			var m ParticipantLeft
			_ = json.Unmarshal(env.Data, &m)
			c.mu.Lock()
			c.left[m.SID] = true
			c.mu.Unlock()
		case TypeTrackUnpub:
			var m TrackUnpublished
			_ = json.Unmarshal(env.Data, &m)
			c.mu.Lock()
			c.unpub[m.TrackSID] = true
			c.mu.Unlock()
		case TypeError:
			var e Error
			_ = json.Unmarshal(env.Data, &e)
			c.mu.Lock()
			c.errors = append(c.errors, e)
			c.mu.Unlock()
		case TypePing:
			c.write(TypePong, json.RawMessage(env.Data))
		}
	}
}

// onTrack reads a remote track and checks every packet: the payload names
// its publisher and counts up by one with the sequence number.
func (c *testClient) onTrack(tr *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
	mid := ""
	for _, x := range c.sub.GetTransceivers() {
		if x.Receiver() == recv {
			mid = x.Mid()
		}
	}
	c.mu.Lock()
	// The server names the msid track id after the track sid, and maps
	// each mid to it in its offers: both must agree.
	sid := tr.ID()
	if m, ok := c.mids[mid]; ok && m != sid {
		c.errorf("%s: mid %q maps to %q in the offer but carries %q", c.identity, mid, m, sid)
	}
	r := &received{sid: sid, kind: tr.Kind().String()}
	c.recv[sid] = r
	c.mu.Unlock()
	go func() {
		buf := make([]byte, 1500)
		var p rtp.Packet
		first := true
		for {
			n, _, err := tr.Read(buf)
			if err != nil {
				c.mu.Lock()
				r.ended = true
				c.mu.Unlock()
				return
			}
			if p.Unmarshal(buf[:n]) != nil {
				continue
			}
			from, cnt, ok := parsePayload(tr.Kind(), p.Payload)
			c.mu.Lock()
			if !ok {
				r.badBytes++
			}
			if !first {
				if p.SequenceNumber != r.lastSeq+1 || cnt != r.lastCnt+1 {
					r.gaps++
				}
			}
			first = false
			r.lastSeq, r.lastCnt, r.from = p.SequenceNumber, cnt, from
			r.packets++
			c.mu.Unlock()
		}
	}()
}

// payload: [vp8 descriptor 0x10, keyframe header 0x00] for video, then
// the 16-byte identity tag, a uint32 counter and filler.
func makePayload(kind webrtc.RTPCodecType, identity string, cnt uint32, size int) []byte {
	var b []byte
	if kind == webrtc.RTPCodecTypeVideo {
		b = append(b, 0x10, 0x00)
	}
	tag := make([]byte, 16)
	copy(tag, identity)
	b = append(b, tag...)
	b = binary.BigEndian.AppendUint32(b, cnt)
	for len(b) < size {
		b = append(b, byte(len(b)))
	}
	return b
}

func parsePayload(kind webrtc.RTPCodecType, p []byte) (string, uint32, bool) {
	if kind == webrtc.RTPCodecTypeVideo {
		if len(p) < 2 || p[0] != 0x10 || p[1] != 0x00 {
			return "", 0, false
		}
		p = p[2:]
	}
	if len(p) < 20 {
		return "", 0, false
	}
	from := strings.TrimRight(string(p[:16]), "\x00")
	cnt := binary.BigEndian.Uint32(p[16:20])
	for i := 20; i < len(p); i++ {
		if p[i] != byte(i+boolInt(kind == webrtc.RTPCodecTypeVideo)*2) {
			return from, cnt, false
		}
	}
	return from, cnt, true
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// publish adds an Opus and/or a VP8 track and sends synthetic media until
// the client closes.
func (c *testClient) publish(audio, video bool) {
	c.t.Helper()
	var descs []TrackDesc
	var tracks []*webrtc.TrackLocalStaticRTP
	if audio {
		a, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, c.identity+"-mic", c.identity)
		if err != nil {
			c.t.Fatal(err)
		}
		tracks = append(tracks, a)
		descs = append(descs, TrackDesc{TrackID: a.ID(), Source: "microphone"})
	}
	if video {
		v, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, c.identity+"-cam", c.identity)
		if err != nil {
			c.t.Fatal(err)
		}
		tracks = append(tracks, v)
		descs = append(descs, TrackDesc{TrackID: v.ID(), Source: "camera"})
	}
	for _, tr := range tracks {
		sender, err := c.pub.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		if err != nil {
			c.t.Fatal(err)
		}
		go func() {
			for {
				if _, _, err := sender.Sender().ReadRTCP(); err != nil {
					return
				}
			}
		}()
	}
	offer, err := c.pub.CreateOffer(nil)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.pub.SetLocalDescription(offer); err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.descs = append(c.descs, descs...)
	descs = append([]TrackDesc(nil), c.descs...)
	c.mu.Unlock()
	c.write(TypeOffer, Offer{SDP: offer.SDP, Tracks: descs})
	for _, tr := range tracks {
		c.sendWG.Add(1)
		go c.sendMedia(tr)
	}
}

func (c *testClient) sendMedia(tr *webrtc.TrackLocalStaticRTP) {
	defer c.sendWG.Done()
	kind := tr.Kind()
	interval, tsStep, size := 20*time.Millisecond, uint32(960), 100
	if c.audioEvery > 0 {
		interval = c.audioEvery
	}
	if kind == webrtc.RTPCodecTypeVideo {
		interval, tsStep, size = 10*time.Millisecond, 900, 900
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var seq uint16 = 1000
	var ts uint32 = 5000
	var cnt uint32
	for {
		select {
		case <-c.stopSend:
			return
		case <-tick.C:
		}
		cnt++
		seq++
		ts += tsStep
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: ts, Marker: true},
			Payload: makePayload(kind, c.identity, cnt, size)}
		if err := tr.WriteRTP(pkt); err != nil {
			return
		}
	}
}

func (c *testClient) snapshot() map[string]received {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]received, len(c.recv))
	for k, v := range c.recv {
		out[k] = *v
	}
	return out
}

func (c *testClient) sid() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.joined.Participant.SID
}

func (c *testClient) leave() {
	c.write(TypeLeave, Leave{})
	c.close()
}

func (c *testClient) close() {
	c.closing.Store(true)
	select {
	case <-c.stopSend:
	default:
		close(c.stopSend)
	}
	c.sendWG.Wait()
	c.wmu.Lock()
	_ = c.ws.Close()
	c.wmu.Unlock()
	_ = c.pub.GracefulClose()
	_ = c.sub.GracefulClose()
}

// waitErr polls check until it returns nil or fails the test with its last error.
func waitErr(t testing.TB, d time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFor polls cond until it holds or fails the test after d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hasMedia reports whether c receives, from each of the publishers, at
// least min packets on each kind, intact and continuous.
func (c *testClient) mediaFrom(publishers []string, kinds []string, min int) error {
	got := c.snapshot()
	for _, p := range publishers {
		for _, k := range kinds {
			found := false
			for _, r := range got {
				if r.from == p && r.kind == k && !r.ended {
					found = true
					if r.packets < min {
						return fmt.Errorf("%s: %d %s packets from %s", c.identity, r.packets, k, p)
					}
				}
			}
			if !found {
				var desc []string
				for sid, r := range got {
					desc = append(desc, fmt.Sprintf("%s:%s:%d", sid, r.from, r.packets))
				}
				c.mu.Lock()
				nm := len(c.mids)
				c.mu.Unlock()
				return fmt.Errorf("%s: no %s track from %s; %d mids, %d transceivers, sub %s, tracks %v", c.identity, k, p,
					nm, len(c.sub.GetTransceivers()), c.sub.ConnectionState(), desc)
			}
		}
	}
	return nil
}
