package sfu

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/selfsign"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// TestDirectKeysMatchPion: the keys the direct path derives from the key
// log and the ServerHello are the ones pion's DTLS exporter gives the
// server, for each cipher suite hash and SRTP profile.
func TestDirectKeysMatchPion(t *testing.T) {
	suites := []dtls.CipherSuiteID{
		dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		dtls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	}
	profiles := []dtls.SRTPProtectionProfile{dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80, dtls.SRTP_AEAD_AES_256_GCM}
	for _, suite := range suites {
		for _, profile := range profiles {
			t.Run(fmt.Sprintf("%v/%v", suite, profile), func(t *testing.T) {
				keys := &dtlsKeys{}
				server := dtlsHandshake(t, suite, profile, keys)
				state, ok := server.ConnectionState()
				if !ok {
					t.Fatal("no DTLS connection state")
				}
				want := srtp.Config{Profile: srtp.ProtectionProfile(profile)}
				if err := want.ExtractSessionKeysFromDTLS(&state, false); err != nil {
					t.Fatal(err)
				}
				local, remote, prof, err := keys.keys()
				if err != nil {
					t.Fatal(err)
				}
				if prof != want.Profile || !bytes.Equal(local.key, want.Keys.LocalMasterKey) || !bytes.Equal(local.salt, want.Keys.LocalMasterSalt) {
					t.Fatalf("derived %v key %x salt %x, pion's server has %v key %x salt %x",
						prof, local.key, local.salt, want.Profile, want.Keys.LocalMasterKey, want.Keys.LocalMasterSalt)
				}
				if !bytes.Equal(remote.key, want.Keys.RemoteMasterKey) || !bytes.Equal(remote.salt, want.Keys.RemoteMasterSalt) {
					t.Fatalf("derived the client's key %x salt %x, pion's server has %x %x",
						remote.key, remote.salt, want.Keys.RemoteMasterKey, want.Keys.RemoteMasterSalt)
				}
				keys.forget()
				if _, _, _, err := keys.keys(); err == nil {
					t.Fatal("keys derived again after the master secret was dropped")
				}
			})
		}
	}
}

// dtlsHandshake runs a DTLS handshake over loopback UDP with keys watching the
// server, and returns the server's side.
func dtlsHandshake(t *testing.T, suite dtls.CipherSuiteID, profile dtls.SRTPProtectionProfile, keys *dtlsKeys) *dtls.Conn {
	t.Helper()
	cert, err := selfsign.GenerateSelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sc.Close(); _ = cc.Close() })
	server, err := dtls.Server(sc, cc.LocalAddr(), &dtls.Config{
		Certificates: []tls.Certificate{cert}, CipherSuites: []dtls.CipherSuiteID{suite},
		SRTPProtectionProfiles: []dtls.SRTPProtectionProfile{profile},
		KeyLogWriter:           keys, ServerHelloMessageHook: keys.serverHello,
	})
	if err != nil {
		t.Fatal(err)
	}
	client, err := dtls.Client(cc, sc.LocalAddr(), &dtls.Config{
		Certificates: []tls.Certificate{cert}, CipherSuites: []dtls.CipherSuiteID{suite},
		SRTPProtectionProfiles: []dtls.SRTPProtectionProfile{profile}, InsecureSkipVerify: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := make(chan error, 1)
	go func() { errs <- client.HandshakeContext(ctx) }()
	if err := server.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	return server
}

// TestDirectKeysNeedTheServerRole: as DTLS client Parley sends no
// ServerHello, and the direct path stays off instead of guessing.
func TestDirectKeysNeedTheServerRole(t *testing.T) {
	k := &dtlsKeys{}
	if _, err := k.Write([]byte("CLIENT_RANDOM " + string(bytes.Repeat([]byte("ab"), 32)) + " " + string(bytes.Repeat([]byte("cd"), 48)) + "\n")); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := k.keys(); err == nil {
		t.Fatal("keys derived without a ServerHello")
	}
}

// countingConn is a PacketConn that keeps the last datagram written.
type countingConn struct {
	net.PacketConn
	n    int
	last []byte
	to   net.Addr
}

func (c *countingConn) WriteTo(b []byte, a net.Addr) (int, error) {
	c.n++
	c.last = append(c.last[:0], b...)
	c.to = a
	return len(b), nil
}

func testDirectPath(t testing.TB, conn net.PacketConn) *directPath {
	b, err := newBWE()
	if err != nil {
		t.Fatal(err)
	}
	p := &directPath{conn: conn, cc: b.cc, key: bytes.Repeat([]byte{7}, 16), salt: bytes.Repeat([]byte{9}, 12),
		profile: srtp.ProtectionProfileAeadAes128Gcm}
	p.addr.Store(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5004})
	return p
}

// TestDirectSenderWrites: what the direct path sends is the packet,
// stamped with a transport-wide sequence number, encrypted so that the
// receiver's SRTP context (the same keys) decrypts it, to the pair's
// address; and a packet too large for the buffer is refused, not cut.
func TestDirectSenderWrites(t *testing.T) {
	conn := &countingConn{}
	p := testDirectPath(t, conn)
	s, err := newDirectSender(p, 3)
	if err != nil {
		t.Fatal(err)
	}
	rx, err := srtp.CreateContext(p.key, p.salt, p.profile)
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte{0x42}, 1000)
	for i := range 3 {
		h := &rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: 65535 + uint16(i), Timestamp: 1234, SSRC: 0xcafe}
		if _, err := s.write(h, payload, nil, txNote{}); err != nil {
			t.Fatal(err)
		}
		if conn.to.String() != "127.0.0.1:5004" {
			t.Fatalf("sent to %v", conn.to)
		}
		var got rtp.Header
		plain, err := rx.DecryptRTP(nil, conn.last, &got)
		if err != nil {
			t.Fatalf("packet %d does not decrypt: %v", i, err)
		}
		if got.SSRC != 0xcafe || got.SequenceNumber != 65535+uint16(i) || !bytes.Equal(plain[len(plain)-len(payload):], payload) {
			t.Fatalf("packet %d decrypted to ssrc %x seq %d", i, got.SSRC, got.SequenceNumber)
		}
		ext := got.GetExtension(3)
		if len(ext) != 2 || int(ext[0])<<8|int(ext[1]) != i {
			t.Fatalf("packet %d has transport-wide sequence number %x, want %d", i, ext, i)
		}
	}
	if _, err := s.write(&rtp.Header{Version: 2, SSRC: 1}, make([]byte, packetMTU), nil, txNote{}); err == nil {
		t.Fatal("an oversized packet was sent")
	}
	p.addr.Store(nil)
	if _, err := s.write(&rtp.Header{Version: 2, SSRC: 1}, payload, nil, txNote{}); err == nil || conn.n != 3 {
		t.Fatalf("sent without a pair: err %v, %d datagrams", err, conn.n)
	}
}

// TestDirectForwardDoesNotAllocate: forwarding on the direct path, through
// the DownTrack's rewrite, the stamp, SRTP and the socket write, allocates
// nothing per packet.
func TestDirectForwardDoesNotAllocate(t *testing.T) {
	tr := testTrack()
	tr.sid = "TR_d"
	conn := &countingConn{last: make([]byte, 0, 2*packetMTU)}
	downs := directDowns(t, tr, conn, 10)
	step := forwarder(tr, downs, 1000)
	before := conn.n
	allocs := testing.AllocsPerRun(1000, step)
	if allocs != 0 {
		t.Fatalf("%.1f allocations per forwarded packet, want 0", allocs)
	}
	if sent := conn.n - before; sent < 1000*len(downs) {
		t.Fatalf("%d datagrams for 1001 packets to %d subscribers", sent, len(downs))
	}
}

// directDowns makes n DownTracks of tr on one direct path that writes to
// conn, with the transport-wide sequence number negotiated.
func directDowns(t testing.TB, tr *Track, conn net.PacketConn, n int) []*DownTrack {
	var path atomic.Pointer[directPath]
	path.Store(testDirectPath(t, conn))
	downs := make([]*DownTrack, 0, n)
	for i := range n {
		d, _ := bound(tr, uint32(i+1))
		d.bind.Load().tcc = 3
		d.path = &path
		downs = append(downs, d)
	}
	return downs
}

// TestVnetDirectPath: a pion subscriber on the direct path (and, for
// comparison, on pion's) gets the video, with transport-wide sequence
// numbers, and Parley's sender reports: one a second or so, counting what
// was sent, with an RTP time that follows the wall clock.
func TestVnetDirectPath(t *testing.T) {
	for _, pionSend := range []bool{false, true} {
		t.Run(fmt.Sprintf("pion_send=%v", pionSend), func(t *testing.T) { runVnetDirect(t, pionSend) })
	}
}

func runVnetDirect(t *testing.T, pionSend bool) {
	lab := newVnetLab(t, func(c *Config) { c.PionSend = pionSend })
	pubNet := lab.host(vnetPublisherIP)
	subNet := lab.host(vnetSubscriberIP)
	lab.run()

	lab.publishVideo(vnetClientAPI(t, pubNet, true), 300_000)

	published := lab.track()
	type report struct {
		sr       rtcp.SenderReport
		received uint64
		at       time.Time
	}
	var (
		mu       sync.Mutex
		reports  []report
		received atomic.Uint64
		stamped  atomic.Uint64
		ssrc     atomic.Uint32
	)
	// lab.subscribe's OnTrack is replaced before any track comes: this
	// test reads the receiver's RTCP too.
	pc, sub, connected := lab.subscribe("subscriber", vnetClientAPI(t, subNet, true), func(*webrtc.TrackRemote) {})
	pc.OnTrack(func(tr *webrtc.TrackRemote, r *webrtc.RTPReceiver) {
		ssrc.Store(uint32(tr.SSRC()))
		go func() {
			for {
				p, _, err := tr.ReadRTP()
				if err != nil {
					return
				}
				received.Add(1)
				if len(p.Header.GetExtensionIDs()) > 0 {
					stamped.Add(1)
				}
			}
		}()
		go func() {
			for {
				pkts, _, err := r.ReadRTCP()
				if err != nil {
					return
				}
				for _, p := range pkts {
					if sr, ok := p.(*rtcp.SenderReport); ok {
						mu.Lock()
						reports = append(reports, report{sr: *sr, received: received.Load(), at: time.Now()})
						mu.Unlock()
					}
				}
			}
		}()
	})
	sub.AddTrack(published, "PA_pub|camera")
	waitConnected(t, "subscriber", pc, connected)
	if !waitFor(10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(reports) >= 4
	}) {
		t.Fatalf("%d sender reports in 10 s, %d packets received", len(reports), received.Load())
	}
	if direct := sub.direct.Load() != nil; direct == pionSend {
		t.Fatalf("direct path on: %v, with PionSend %v", direct, pionSend)
	}
	// The client's receiver reports reached the DownTrack: read off the
	// socket on the direct path, through pion's SRTCP session on pion's.
	sub.mu.Lock()
	var loss uint32
	for _, d := range sub.downs {
		loss = d.loss.Load()
	}
	sub.mu.Unlock()
	if loss == 0 {
		t.Fatal("no receiver report reached the DownTrack")
	}
	if taken := lab.engine.tap; pionSend && (taken == nil || taken.taken.Load() != 0) || !pionSend && (taken == nil || taken.taken.Load() == 0) {
		t.Fatalf("RTCP read off the socket with PionSend %v: tap %v", pionSend, taken)
	}
	if st := lab.engine.Stats(); pionSend && (st.PionConnections != 1 || st.DirectConnections != 0) ||
		!pionSend && (st.DirectConnections != 1 || st.PionConnections != 0) {
		t.Fatalf("send paths counted: direct %d, pion %d", st.DirectConnections, st.PionConnections)
	}
	mu.Lock()
	defer mu.Unlock()
	if received.Load() < 100 || stamped.Load() < received.Load()*9/10 {
		t.Fatalf("%d packets received, %d with a transport-wide sequence number", received.Load(), stamped.Load())
	}
	sr1, sr2 := reports[1], reports[len(reports)-1]
	for _, r := range []report{sr1, sr2} {
		if r.sr.SSRC != ssrc.Load() {
			t.Fatalf("sender report for SSRC %x, the track is %x", r.sr.SSRC, ssrc.Load())
		}
		// vnet delivers in order: what was received when the report was
		// read was sent before it, and only a few frames are in flight.
		if uint64(r.sr.PacketCount) < r.received || uint64(r.sr.PacketCount) > r.received+30 {
			t.Fatalf("sender report counts %d packets, %d had arrived when it did", r.sr.PacketCount, r.received)
		}
		if r.sr.OctetCount < r.sr.PacketCount*100 {
			t.Fatalf("sender report counts %d octets in %d packets", r.sr.OctetCount, r.sr.PacketCount)
		}
	}
	ntp := func(v uint64) float64 { return float64(v>>32) + float64(uint32(v))/(1<<32) }
	wall := ntp(sr2.sr.NTPTime) - ntp(sr1.sr.NTPTime)
	media := float64(sr2.sr.RTPTime-sr1.sr.RTPTime) / 90000
	if wall < 1 || media < wall-0.1 || media > wall+0.1 {
		t.Fatalf("between two sender reports %.3f s passed by their NTP times and %.3f s by their RTP times", wall, media)
	}
	t.Logf("direct %v: %d packets, %d stamped, %d sender reports, last counts %d (%d received then)",
		!pionSend, received.Load(), stamped.Load(), len(reports), sr2.sr.PacketCount, sr2.received)
}

// BenchmarkForwardDirect10: one incoming packet forwarded to 10
// subscribers on the direct path: BenchmarkForward10's work plus the
// transport-wide stamp and SRTP (AES-128-GCM), with a socket that takes
// the datagram and does nothing (ns/fwd-pkt is per copy, the system call
// not included).
func BenchmarkForwardDirect10(b *testing.B) {
	tr := testTrack()
	tr.sid = "TR_bd"
	downs := directDowns(b, tr, discardConn{}, 10)
	step := forwarder(tr, downs, 1100)
	b.ReportAllocs()
	b.SetBytes(int64(len(packet(1, 1, true, 1100)) * len(downs)))
	b.ResetTimer()
	for range b.N {
		step()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(downs)), "ns/fwd-pkt")
}

type discardConn struct{ net.PacketConn }

func (discardConn) WriteTo(b []byte, _ net.Addr) (int, error) { return len(b), nil }

// TestDirectPathFollowsThePair: a new UDP pair moves the direct path's
// address; a pair it cannot write to (ICE-TCP) stops it and fails the
// connection, so that the client joins again rather than getting streams
// whose SRTP rollover counters pion's context would not know.
func TestDirectPathFollowsThePair(t *testing.T) {
	udp := func(ip string, port uint16) *webrtc.ICECandidate {
		return &webrtc.ICECandidate{Protocol: webrtc.ICEProtocolUDP, Typ: webrtc.ICECandidateTypeHost, Address: ip, Port: port}
	}
	local := udp("10.0.0.1", 7882)
	for _, c := range []struct {
		pair *webrtc.ICECandidatePair
		want string
	}{
		{&webrtc.ICECandidatePair{Local: local, Remote: udp("192.0.2.7", 5000)}, "192.0.2.7:5000"},
		{&webrtc.ICECandidatePair{Local: local, Remote: udp("2001:db8::7", 5001)}, "[2001:db8::7]:5001"},
		{&webrtc.ICECandidatePair{Local: local, Remote: &webrtc.ICECandidate{Protocol: webrtc.ICEProtocolUDP, Typ: webrtc.ICECandidateTypePrflx, Address: "192.0.2.8", Port: 5002}}, "192.0.2.8:5002"},
		{&webrtc.ICECandidatePair{Local: &webrtc.ICECandidate{Protocol: webrtc.ICEProtocolTCP, Typ: webrtc.ICECandidateTypeHost, Address: "10.0.0.1", Port: 7881}, Remote: udp("192.0.2.7", 5000)}, ""},
		{&webrtc.ICECandidatePair{Local: &webrtc.ICECandidate{Protocol: webrtc.ICEProtocolUDP, Typ: webrtc.ICECandidateTypeRelay, Address: "198.51.100.1", Port: 3478}, Remote: udp("192.0.2.7", 5000)}, ""},
		{&webrtc.ICECandidatePair{Local: local, Remote: udp("not-an-ip.local", 5000)}, ""},
		{nil, ""},
	} {
		got := ""
		if a := pairAddr(c.pair); a != nil {
			got = a.String()
		}
		if got != c.want {
			t.Errorf("pairAddr(%v) = %q, want %q", c.pair, got, c.want)
		}
	}

	failed := make(chan error, 1)
	s := &Subscriber{ev: PeerEvents{Failed: func(err error) { failed <- err }}}
	s.pairChanged(&webrtc.ICECandidatePair{Local: local, Remote: udp("192.0.2.7", 5000)}) // no direct path: nothing to do
	p := testDirectPath(t, &countingConn{})
	s.direct.Store(p)
	s.pairChanged(&webrtc.ICECandidatePair{Local: local, Remote: udp("192.0.2.9", 6000)})
	if a := p.addr.Load(); a == nil || a.String() != "192.0.2.9:6000" {
		t.Fatalf("after a new UDP pair the direct path sends to %v", a)
	}
	select {
	case err := <-failed:
		t.Fatalf("a new UDP pair failed the connection: %v", err)
	default:
	}
	s.pairChanged(&webrtc.ICECandidatePair{Local: &webrtc.ICECandidate{Protocol: webrtc.ICEProtocolTCP, Typ: webrtc.ICECandidateTypeHost, Address: "10.0.0.1", Port: 7881},
		Remote: &webrtc.ICECandidate{Protocol: webrtc.ICEProtocolTCP, Typ: webrtc.ICECandidateTypeHost, Address: "192.0.2.9", Port: 9}})
	if a := p.addr.Load(); a != nil {
		t.Fatalf("after moving to ICE-TCP the direct path still sends to %v", a)
	}
	select {
	case err := <-failed:
		t.Logf("failed: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("moving to ICE-TCP did not fail the connection")
	}
}
