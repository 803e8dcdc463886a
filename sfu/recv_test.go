package sfu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// TestRxStatsReport: the reception report of a stream that wrapped its
// sequence numbers and lost three packets (RFC 3550 A.3), then lost none;
// and the jitter of packets that arrive a steady 90 RTP units early and
// late in turn (RFC 3550 A.8: it converges on the 180 between two).
func TestRxStatsReport(t *testing.T) {
	var s rxStats
	if _, ok := s.report(1); ok {
		t.Fatal("a report before any packet")
	}
	lostSeqs := map[uint16]bool{65534: true, 2: true, 5: true}
	for i := range 16 {
		seq := uint16(65530 + i)
		if !lostSeqs[seq] {
			s.update(seq, uint32(i)*3000, uint32(i)*3000+500)
		}
	}
	rr, _ := s.report(7)
	if rr.SSRC != 7 || rr.LastSequenceNumber != 1<<16+9 || rr.TotalLost != 3 || rr.FractionLost != 3*256/16 || rr.Jitter != 0 {
		t.Fatalf("report %+v: want last 65545, lost 3, fraction 48, jitter 0", rr)
	}
	for i := range 10 {
		s.update(uint16(10+i), 0, 0)
	}
	s.update(3, 0, 0) // late and old: counts as received, moves nothing
	if rr, _ = s.report(7); rr.LastSequenceNumber != 1<<16+19 || rr.FractionLost != 0 || rr.TotalLost != 2 {
		t.Fatalf("second report %+v: want last 65555, fraction 0, lost 2", rr)
	}

	var j rxStats
	for i := range 2000 {
		off := uint32(0)
		if i%2 == 1 {
			off = 180
		}
		j.update(uint16(i), uint32(i)*3000, uint32(i)*3000+off)
	}
	if rr, _ = j.report(1); rr.Jitter < 170 || rr.Jitter > 180 {
		t.Fatalf("jitter %d, want about 180", rr.Jitter)
	}
}

// TestUnwrapRTX: an RTX packet (header extensions, padding) becomes the
// media packet it repairs; one that carries only padding becomes nothing.
func TestUnwrapRTX(t *testing.T) {
	orig := rtp.Packet{Header: rtp.Header{Version: 2, Marker: true, PayloadType: 96, SequenceNumber: 4711, Timestamp: 99, SSRC: 0xaaaa}, Payload: []byte("vp8 payload")}
	rtx := rtp.Packet{Header: rtp.Header{Version: 2, Marker: true, PayloadType: 97, SequenceNumber: 12, Timestamp: 99, SSRC: 0xbbbb,
		Padding: true, PaddingSize: 4}, Payload: append([]byte{4711 >> 8, 4711 & 0xff}, orig.Payload...)}
	for _, x := range []*rtp.Packet{&orig, &rtx} {
		if err := x.SetExtension(3, []byte{1, 2}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := rtx.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	out := unwrapRTX(b, 96, 0xaaaa)
	var got rtp.Packet
	if err := got.Unmarshal(out); err != nil {
		t.Fatal(err)
	}
	if got.SequenceNumber != 4711 || got.SSRC != 0xaaaa || got.PayloadType != 96 || !got.Marker || got.Timestamp != 99 ||
		!bytes.Equal(got.Payload, orig.Payload) || !bytes.Equal(got.GetExtension(3), []byte{1, 2}) {
		t.Fatalf("unwrapped to %v payload %q", got.Header, got.Payload)
	}
	probe := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 97, SequenceNumber: 13, SSRC: 0xbbbb, Padding: true, PaddingSize: 200}}
	pb, _ := probe.Marshal()
	if out := unwrapRTX(pb, 96, 0xaaaa); out != nil {
		t.Fatalf("a padding probe unwrapped to %d bytes", len(out))
	}
	if out := unwrapRTX(pb[:12], 96, 0xaaaa); out != nil {
		t.Fatal("a header alone unwrapped")
	}
}

// recvLab is one publisher's direct receive path on a bare track: the
// publisher's SRTP context encrypts what the test sends.
type recvLab struct {
	tr  *Track
	r   *recvPath
	tap *rtcpTap
	pub *srtp.Context
	hdr rtp.Header
	buf []byte
}

func newRecvLab(t testing.TB) *recvLab {
	keys := srtpKeys{key: bytes.Repeat([]byte{3}, 16), salt: bytes.Repeat([]byte{5}, 12)}
	profile := srtp.ProtectionProfileAeadAes128Gcm
	tap := newRTCPTap(nil, nil, false)
	r, err := newRecvPath(tap, keys, profile, 3)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := srtp.CreateContext(keys.key, keys.salt, profile)
	if err != nil {
		t.Fatal(err)
	}
	tr := testTrack()
	tr.sid = "TR_r"
	return &recvLab{tr: tr, r: r, tap: tap, pub: pub, buf: make([]byte, 0, 2*packetMTU)}
}

// seal is plain encrypted by the publisher.
func (l *recvLab) seal(t testing.TB, plain []byte) []byte {
	out, err := l.pub.EncryptRTP(l.buf[:0], plain, &l.hdr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRecvPathTakesOver: pion's read loop forwards a stream's first
// packets, the path takes it from there, across a sequence number wrap
// that pion's read loop saw (the rollover counter goes over) and one it
// did not; a replayed packet is refused; an unknown SSRC goes to pion.
func TestRecvPathTakesOver(t *testing.T) {
	for _, c := range []struct{ start, handover uint16 }{
		{65490, 65500}, // the path sees the wrap
		{65490, 65535}, // its first packet is the last before the wrap
		{65490, 0},     // its first packet is the first after the wrap
		{65200, 100},   // pion's read loop saw the wrap
	} {
		l := newRecvLab(t)
		lay := l.tr.layer(0)
		const ssrc = 1234
		n := 0
		seq := c.start
		for ; seq != c.handover; seq++ {
			p := packet(seq, uint32(seq)*3000, true, 200)
			_ = l.seal(t, p) // the publisher's context counts every packet
			lay.forward(p)
			n++
		}
		l.r.adoptStreams(lay, ssrc, 0, 96)
		var last []byte
		for i := 0; i < 300; i, seq = i+1, seq+1 {
			last = l.seal(t, packet(seq, uint32(seq)*3000, true, 200))
			if !l.r.readRTP(last, monoNow(), false, nil) {
				t.Fatalf("packet %d went to pion", seq)
			}
			n++
		}
		if bad := l.tap.rtpBad.Load(); bad != 0 || lay.packets.Load() != uint64(n) || l.tap.rtpTaken.Load() != 300 {
			t.Fatalf("hand-over at %d: %d refused, %d of %d forwarded, %d taken", c.handover, bad, lay.packets.Load(), n, l.tap.rtpTaken.Load())
		}
		if !l.r.readRTP(last, monoNow(), false, nil) || l.tap.rtpBad.Load() != 1 || lay.packets.Load() != uint64(n) {
			t.Fatalf("a replay was forwarded (%d refused)", l.tap.rtpBad.Load())
		}
		other := packet(1, 1, true, 100)
		binary.BigEndian.PutUint32(other[8:12], 999)
		if l.r.readRTP(l.seal(t, other), monoNow(), false, nil) {
			t.Fatal("a packet of an unknown SSRC was taken")
		}
	}
}

// TestRecvPathRTX: retransmissions on the RTX SSRC reach the layer as the
// packets they repair; padding on it is dropped.
func TestRecvPathRTX(t *testing.T) {
	l := newRecvLab(t)
	lay := l.tr.layer(0)
	l.r.adoptStreams(lay, 1234, 5678, 111)
	d, w := bound(l.tr, 9)
	for seq := uint16(1); seq <= 10; seq++ {
		if seq != 5 {
			l.r.readRTP(l.seal(t, packet(seq, uint32(seq)*3000, true, 100)), monoNow(), false, nil)
		}
	}
	orig := packet(5, 5*3000, true, 100)
	hl := rtpHeaderLen(orig)
	rtx := append(append(append([]byte{}, orig[:hl]...), 0, 5), orig[hl:]...)
	rtx[1] = rtx[1]&0x80 | 97
	binary.BigEndian.PutUint16(rtx[2:4], 1)
	binary.BigEndian.PutUint32(rtx[8:12], 5678)
	if !l.r.readRTP(l.seal(t, rtx), monoNow(), false, nil) {
		t.Fatal("the retransmission went to pion")
	}
	probe := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 97, SequenceNumber: 2, SSRC: 5678, Padding: true, PaddingSize: 100}}
	pb, _ := probe.Marshal()
	l.r.readRTP(l.seal(t, pb), monoNow(), false, nil)
	drain(d)
	if lay.packets.Load() != 10 || l.tap.rtpRTX.Load() != 1 || l.tap.rtpBad.Load() != 0 || w.n != 10 {
		t.Fatalf("layer got %d packets (%d retransmitted, %d refused), the subscriber %d; want 10",
			lay.packets.Load(), l.tap.rtpRTX.Load(), l.tap.rtpBad.Load(), w.n)
	}
}

// TestRecvPathFeedback: the transport-wide sequence numbers of what the
// path took, and of what it handed to pion, are in Parley's feedback.
func TestRecvPathFeedback(t *testing.T) {
	l := newRecvLab(t)
	l.r.adoptStreams(l.tr.layer(0), 1234, 0, 96)
	for i := range 20 {
		p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(i), SSRC: 1234}, Payload: make([]byte, 50)}
		if i%2 == 1 {
			p.SSRC = 999 // pion's
		}
		_ = p.SetExtension(3, []byte{0, byte(i)})
		b, _ := p.Marshal()
		l.r.readRTP(l.seal(t, b), monoNow(), false, nil)
	}
	fb := l.r.rec.BuildFeedbackPacket()
	if len(fb) != 1 {
		t.Fatalf("%d feedback packets", len(fb))
	}
	cc, ok := fb[0].(*rtcp.TransportLayerCC)
	if !ok || cc.BaseSequenceNumber != 0 || cc.PacketStatusCount != 20 || cc.SenderSSRC != l.r.ssrc {
		t.Fatalf("feedback %+v, want 20 packets from 0", fb[0])
	}
}

// TestRecvPathDoesNotAllocate: taking a packet off the socket, decrypting
// it and forwarding it to ten direct subscribers allocates nothing.
func TestRecvPathDoesNotAllocate(t *testing.T) {
	l := newRecvLab(t)
	conn := &countingConn{last: make([]byte, 0, 2*packetMTU)}
	downs := directDowns(t, l.tr, conn, 10)
	l.r.adoptStreams(l.tr.layer(0), 1234, 0, 96)
	step := recvStep(t, l, downs)
	for range 2 * ringSize {
		step()
	}
	if allocs := testing.AllocsPerRun(1000, step); allocs != 0 {
		t.Fatalf("%.1f allocations per received packet, want 0", allocs)
	}
	if l.tap.rtpBad.Load() != 0 || conn.n < 1000*len(downs) {
		t.Fatalf("%d refused, %d datagrams sent", l.tap.rtpBad.Load(), conn.n)
	}
}

func recvStep(t testing.TB, l *recvLab, downs []*DownTrack) func() {
	pkt := packet(1, 1, true, 1000)
	seq := uint16(1)
	return func() {
		seq++
		pkt[2], pkt[3] = byte(seq>>8), byte(seq)
		l.r.readRTP(l.seal(t, pkt), monoNow(), false, nil)
		for _, d := range downs {
			drain(d)
		}
	}
}

// BenchmarkReceiveDirect10: one packet taken off the socket, decrypted
// and forwarded to 10 direct subscribers (BenchmarkForwardDirect10 plus
// the SRTP decryption and the path's bookkeeping, less pion's receive
// chain; the encryption of the test's own input is in the figure too).
func BenchmarkReceiveDirect10(b *testing.B) {
	l := newRecvLab(b)
	downs := directDowns(b, l.tr, discardConn{}, 10)
	l.r.adoptStreams(l.tr.layer(0), 1234, 0, 96)
	step := recvStep(b, l, downs)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		step()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/10, "ns/fwd-pkt")
}

// FuzzRecvRTP: whatever a publisher sends, encrypted with its own keys
// (so past the authentication an attacker without them never gets), on
// its media or RTX SSRC, is forwarded or dropped without a panic.
func FuzzRecvRTP(f *testing.F) {
	f.Add(packet(7, 1, true, 40), false)
	f.Add(packet(8, 1, false, 3), true)
	f.Add([]byte{0x90, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0x04, 0xd2, 0xbe, 0xde, 0, 1, 0x30, 0, 0, 0}, false)
	f.Fuzz(func(t *testing.T, b []byte, rtx bool) {
		l := newRecvLab(t)
		l.r.adoptStreams(l.tr.layer(0), 1234, 5678, 96)
		d, _ := bound(l.tr, 9)
		if len(b) < 12 || len(b) > packetMTU {
			return
		}
		b[0] = 0x80 | b[0]&0x3f
		ssrc := uint32(1234)
		if rtx {
			ssrc = 5678
		}
		binary.BigEndian.PutUint32(b[8:12], ssrc)
		var h rtp.Header
		if _, err := h.Unmarshal(b); err != nil {
			return // EncryptRTP would refuse it
		}
		sealed, err := l.pub.EncryptRTP(nil, b, nil)
		if err != nil {
			return
		}
		l.r.readRTP(sealed, monoNow(), false, nil)
		drain(d)
	})
}

// TestVnetDirectReceive: a pion publisher on the direct receive path (and,
// for comparison, on pion's) reaches its subscriber; it gets transport-wide
// feedback for its packets, and receiver reports whose highest sequence
// number follows what it sends (pion's report interceptor, which stops
// seeing the stream once the path has it, must not send stale ones) and,
// on the direct path, whose LSR answers its sender reports.
func TestVnetDirectReceive(t *testing.T) {
	for _, pionReceive := range []bool{false, true} {
		t.Run(fmt.Sprintf("pion_receive=%v", pionReceive), func(t *testing.T) { runVnetDirectReceive(t, pionReceive) })
	}
}

func runVnetDirectReceive(t *testing.T, pionReceive bool) {
	lab := newVnetLab(t, func(c *Config) { c.PionReceive = pionReceive })
	pubNet := lab.host(vnetPublisherIP)
	subNet := lab.host(vnetSubscriberIP)
	lab.run()

	video, _ := lab.publishVideo(vnetClientAPI(t, pubNet, true), 300_000)
	var (
		mu       sync.Mutex
		rrs      []rtcp.ReceptionReport
		feedback int
	)
	seen := func(pkts []rtcp.Packet) {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range pkts {
			switch p := p.(type) {
			case *rtcp.ReceiverReport:
				rrs = append(rrs, p.Reports...)
			case *rtcp.TransportLayerCC:
				feedback += int(p.PacketStatusCount)
			}
		}
	}
	video.onRTCP.Store(&seen)
	published := lab.track()
	var received atomic.Uint64
	pc, sub, connected := lab.subscribe("subscriber", vnetClientAPI(t, subNet, true), func(tr *webrtc.TrackRemote) {
		go func() {
			for {
				if _, _, err := tr.ReadRTP(); err != nil {
					return
				}
				received.Add(1)
			}
		}()
	})
	sub.AddTrack(published, "PA_pub|camera")
	waitConnected(t, "subscriber", pc, connected)
	if !waitFor(10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(rrs) >= 4 && received.Load() >= 100
	}) {
		t.Fatalf("%d reception reports and %d packets at the subscriber in 10 s", len(rrs), received.Load())
	}
	st := lab.engine.Stats()
	if pionReceive && (st.PionReceive != 1 || st.DirectReceive != 0 || st.DirectRTP != 0) ||
		!pionReceive && (st.DirectReceive != 1 || st.PionReceive != 0 || st.DirectRTP < 100 || st.DirectRTPBad != 0) {
		t.Fatalf("receive paths counted: direct %d, pion %d; %d packets taken, %d refused", st.DirectReceive, st.PionReceive, st.DirectRTP, st.DirectRTPBad)
	}
	mu.Lock()
	defer mu.Unlock()
	sent := int(video.sent.Load())
	// Each packet in one feedback: pion's and Parley's would report each twice.
	if feedback < sent/2 || feedback > sent+30 {
		t.Fatalf("transport-wide feedback on %d packets, %d sent", feedback, sent)
	}
	for i := 1; i < len(rrs); i++ {
		if rrs[i].SSRC != rrs[0].SSRC {
			t.Fatalf("reports on SSRCs %x and %x: one video stream was sent", rrs[0].SSRC, rrs[i].SSRC)
		}
		if rrs[i].LastSequenceNumber <= rrs[i-1].LastSequenceNumber {
			t.Fatalf("report %d says highest sequence number %d, the one before %d: stale", i, rrs[i].LastSequenceNumber, rrs[i-1].LastSequenceNumber)
		}
		if !pionReceive && i == len(rrs)-1 && rrs[i].LastSenderReport == 0 {
			t.Fatalf("the last of %d reports has no LSR: the publisher's sender reports were not read", len(rrs))
		}
		if rrs[i].FractionLost != 0 || rrs[i].TotalLost != 0 {
			t.Fatalf("report %d says %d lost (fraction %d/256) on a lossless network", i, rrs[i].TotalLost, rrs[i].FractionLost)
		}
	}
	t.Logf("direct receive %v: %d sent, %d at the subscriber, feedback on %d, %d reports, %d taken off the socket",
		!pionReceive, sent, received.Load(), feedback, len(rrs), st.DirectRTP)
}

// TestRecvPathEndedTrack: once a track ends, its SSRC's packets go to pion
// again (which finds the new track they may belong to), and the new
// track's layer takes the SSRC over.
func TestRecvPathEndedTrack(t *testing.T) {
	l := newRecvLab(t)
	l.r.adoptStreams(l.tr.layer(0), 1234, 0, 96)
	if !l.r.readRTP(l.seal(t, packet(1, 1, true, 100)), monoNow(), false, nil) {
		t.Fatal("not taken")
	}
	l.tr.Close()
	if l.r.readRTP(l.seal(t, packet(2, 1, true, 100)), monoNow(), false, nil) {
		t.Fatal("a packet of an ended track was taken")
	}
	next := testTrack()
	next.layer(0).forward(packet(2, 1, true, 100)) // what pion's read loop got
	l.r.adoptStreams(next.layer(0), 1234, 0, 96)
	if !l.r.readRTP(l.seal(t, packet(3, 1, true, 100)), monoNow(), false, nil) || next.layer(0).packets.Load() != 2 || len(*l.r.streams.Load()) != 1 {
		t.Fatalf("the new track got %d packets", next.layer(0).packets.Load())
	}
}

// TestRecvPathHandsOff: the socket's reader writes a small room's copies
// itself; a larger room's, and every room's while the reader is crowded,
// go to the layer's fan-out goroutine, in order.
func TestRecvPathHandsOff(t *testing.T) {
	for _, c := range []struct {
		downs   int
		crowded bool
		inline  bool
	}{{socketFanout, false, true}, {socketFanout + 1, false, false}, {2, true, false}} {
		l := newRecvLab(t)
		conn := &atomicConn{}
		downs := directDowns(t, l.tr, conn, c.downs)
		l.r.adoptStreams(l.tr.layer(0), 1234, 0, 96)
		for seq := uint16(1); seq <= 50; seq++ {
			l.r.readRTP(l.seal(t, packet(seq, uint32(seq)*3000, true, 100)), monoNow(), c.crowded, nil)
			if c.inline && conn.n.Load() != int64(seq)*int64(c.downs) {
				t.Fatalf("%d subscribers, crowded %v: packet %d not written in place", c.downs, c.crowded, seq)
			}
		}
		if !waitFor(5*time.Second, func() bool { return l.tr.layer(0).fanning.Load() == 0 }) {
			t.Fatalf("%d packets still queued", l.tr.layer(0).fanning.Load())
		}
		for _, d := range downs {
			drain(d) // what a room past inlineFanout queues to the writers
		}
		if handed := l.tr.layer(0).fan != nil; handed == c.inline || conn.n.Load() != int64(50*c.downs) {
			t.Fatalf("%d subscribers, crowded %v: handed off %v, %d datagrams", c.downs, c.crowded, handed, conn.n.Load())
		}
		for _, d := range downs {
			if d.packets.Load() != 50 {
				t.Fatalf("a subscriber got %d packets", d.packets.Load())
			}
		}
		l.tr.Close()
	}
}

// TestTapCrowded: the reader is crowded after a window in which the direct
// receive path took more than half its time, counting the fan-outs it
// handed off (so that handing off does not end it at once), and not after
// one that did not.
func TestTapCrowded(t *testing.T) {
	tap := newRTCPTap(nil, nil, false)
	ms := int64(time.Millisecond)
	now := int64(0)
	// run: 20 packets 10 ms apart, each busy ms in the reader and handed
	// ms in the fan-out goroutines; then whether the reader is crowded.
	run := func(busy, handed int64) bool {
		for range 20 {
			tap.handedNs.Add(handed * ms / 10)
			tap.account(now, now+busy*ms/10)
			now += 10 * ms
		}
		return tap.crowded
	}
	if !run(60, 0) {
		t.Fatal("not crowded at 60%")
	}
	// Handing off frees the reader; the goroutines' time keeps it crowded.
	if !run(10, 50) {
		t.Fatal("not crowded at 10% in the reader and 50% handed off")
	}
	if run(20, 10) {
		t.Fatal("crowded at 20% in the reader and 10% handed off")
	}
}

// atomicConn counts datagrams from any goroutine.
type atomicConn struct {
	net.PacketConn
	n atomic.Int64
}

func (c *atomicConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	c.n.Add(1)
	return len(b), nil
}

// TestRecvPathForgedFirstPacket: a packet that does not authenticate,
// coming first with a sequence number half a cycle away, does not choose
// the stream's rollover counter.
func TestRecvPathForgedFirstPacket(t *testing.T) {
	l := newRecvLab(t)
	lay := l.tr.layer(0)
	for seq := uint16(65000); seq != 65500; seq++ {
		p := packet(seq, 1, true, 100)
		_ = l.seal(t, p)
		lay.forward(p)
	}
	l.r.adoptStreams(lay, 1234, 0, 96)
	forged := l.seal(t, packet(65500, 1, true, 100))
	forged = append([]byte{}, forged...)
	forged[2], forged[3] = 0, 100 // as if past the next wrap
	forged[len(forged)-1] ^= 0xff
	l.r.readRTP(forged, monoNow(), false, nil)
	for seq := uint16(65501); seq != 200; seq++ {
		l.r.readRTP(l.seal(t, packet(seq, 1, true, 100)), monoNow(), false, nil)
	}
	if bad := l.tap.rtpBad.Load(); bad != 1 || lay.packets.Load() != 500+235 {
		t.Fatalf("%d refused, %d forwarded: the forged packet broke the stream", bad, lay.packets.Load())
	}
}

// TestRecvPathFollowsThePair: the tap takes a direct publisher's media
// from the selected pair's address, a new UDP pair moves it, and a move to
// ICE-TCP fails the connection (publisher_failed) and stops taking.
func TestRecvPathFollowsThePair(t *testing.T) {
	udp := func(ip string, port uint16) *webrtc.ICECandidate {
		return &webrtc.ICECandidate{Protocol: webrtc.ICEProtocolUDP, Typ: webrtc.ICECandidateTypeHost, Address: ip, Port: port}
	}
	local := udp("10.0.0.1", 7882)
	l := newRecvLab(t)
	failed := make(chan error, 1)
	p := &Publisher{tap: l.tap, ev: PeerEvents{Failed: func(err error) { failed <- err }}}
	p.recvPairChanged(&webrtc.ICECandidatePair{Local: local, Remote: udp("192.0.2.7", 5000)}) // no path yet: nothing
	if len(l.tap.pubs) != 0 {
		t.Fatal("taken before the path started")
	}
	p.recv = l.r
	at := func(ip string, port uint16) *recvPath {
		l.tap.mu.RLock()
		defer l.tap.mu.RUnlock()
		return l.tap.pubs[key(netip.AddrPortFrom(netip.MustParseAddr(ip), port))]
	}
	p.recvPairChanged(&webrtc.ICECandidatePair{Local: local, Remote: udp("192.0.2.7", 5000)})
	p.recvPairChanged(&webrtc.ICECandidatePair{Local: local, Remote: udp("192.0.2.9", 6000)})
	if at("192.0.2.9", 6000) != l.r || at("192.0.2.7", 5000) != nil || len(l.tap.pubs) != 1 {
		t.Fatalf("after a new UDP pair the tap takes from %v", l.tap.pubs)
	}
	select {
	case err := <-failed:
		t.Fatalf("a new UDP pair failed the connection: %v", err)
	default:
	}
	tcp := &webrtc.ICECandidate{Protocol: webrtc.ICEProtocolTCP, Typ: webrtc.ICECandidateTypeHost, Address: "192.0.2.9", Port: 9}
	p.recvPairChanged(&webrtc.ICECandidatePair{Local: &webrtc.ICECandidate{Protocol: webrtc.ICEProtocolTCP, Typ: webrtc.ICECandidateTypeHost, Address: "10.0.0.1", Port: 7881}, Remote: tcp})
	if len(l.tap.pubs) != 0 || l.r.addr.Load() != nil {
		t.Fatalf("after moving to ICE-TCP the tap still takes from %v", l.tap.pubs)
	}
	select {
	case err := <-failed:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("failed with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("moving to ICE-TCP did not fail the connection")
	}
}

// TestRecvPathSenderReports: the publisher's sender reports, read off the
// socket, give the receiver reports their LSR and DLSR (RFC 3550 6.4.1),
// from which the publisher computes its round-trip time; RTCP that does
// not decrypt is not taken.
func TestRecvPathSenderReports(t *testing.T) {
	l := newRecvLab(t)
	lay := l.tr.layer(0)
	l.r.adoptStreams(lay, 1234, 0, 96)
	for seq := uint16(1); seq <= 10; seq++ {
		l.r.readRTP(l.seal(t, packet(seq, 1, true, 100)), monoNow(), false, nil)
	}
	if rr := l.r.receiverReport(); rr == nil || len(rr.Reports) != 1 || rr.Reports[0].LastSenderReport != 0 {
		t.Fatalf("before any sender report: %+v", rr)
	}
	comp := []rtcp.Packet{
		&rtcp.SenderReport{SSRC: 1234, NTPTime: 0x1122334455667788, RTPTime: 9, PacketCount: 10, OctetCount: 1000},
		&rtcp.SourceDescription{Chunks: []rtcp.SourceDescriptionChunk{{Source: 1234, Items: []rtcp.SourceDescriptionItem{{Type: rtcp.SDESCNAME, Text: "pub"}}}}},
	}
	raw, err := rtcp.Marshal(comp)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := l.pub.EncryptRTCP(nil, raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	forged := append([]byte{}, sealed...)
	forged[len(forged)-5] ^= 1
	if l.r.rtcp.read(forged) {
		t.Fatal("RTCP that does not authenticate was taken")
	}
	if !l.r.rtcp.read(sealed) {
		t.Fatal("the sender report was not taken")
	}
	time.Sleep(50 * time.Millisecond)
	rr := l.r.receiverReport()
	if rr == nil || len(rr.Reports) != 1 {
		t.Fatalf("report %+v", rr)
	}
	got := rr.Reports[0]
	// 50 ms = 3277 units of 1/65536 s
	if got.LastSenderReport != 0x33445566 || got.Delay < 3000 || got.Delay > 3277+65536/10 {
		t.Fatalf("LSR %x DLSR %d, want 33445566 and about 3300", got.LastSenderReport, got.Delay)
	}
}

// FuzzPublisherRTCP: whatever compound packet a publisher sends (past the
// authentication), reading its sender reports neither panics nor keeps
// more than 64 streams' worth.
func FuzzPublisherRTCP(f *testing.F) {
	sr, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.SenderReport{SSRC: 1234, NTPTime: 1 << 40}})
	f.Add(sr)
	f.Add([]byte{0x80, 200, 0, 0})
	f.Add([]byte{0x80, 200, 0xff, 0xff, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		l := newRecvLab(t)
		l.r.adoptStreams(l.tr.layer(0), 1234, 0, 96)
		l.r.readRTP(l.seal(t, packet(1, 1, true, 10)), monoNow(), false, nil)
		l.r.handleRTCP(b)
		l.r.handleRTCP(append(append([]byte{}, b...), b...))
		if len(l.r.srs) > 64 {
			t.Fatalf("%d sender reports kept", len(l.r.srs))
		}
		_ = l.r.receiverReport()
	})
}

// TestFanQueueDrops: a fan-out goroutine fanQueue packets behind refuses
// more, and the refusals are counted with the drops.
func TestFanQueueDrops(t *testing.T) {
	tr := testTrack()
	l := tr.layer(0)
	l.fanOnce.Do(func() { l.fan = make(chan uint64, fanQueue) })
	l.fanRun.Store(true) // a goroutine that never reads
	for i := range fanQueue + 5 {
		l.handOff(uint64(i))
	}
	if tr.fanDrops() != 5 || l.fanning.Load() != fanQueue {
		t.Fatalf("%d dropped, %d queued; want 5 and %d", tr.fanDrops(), l.fanning.Load(), fanQueue)
	}
}

// TestFanGoroutineEndsWhenIdle: a layer's fan-out goroutine ends after
// fanIdle without work (its batch with it), and the next hand-off starts
// another, which writes every packet.
func TestFanGoroutineEndsWhenIdle(t *testing.T) {
	l := newRecvLab(t)
	conn := &atomicConn{}
	directDowns(t, l.tr, conn, 3)
	l.r.adoptStreams(l.tr.layer(0), 1234, 0, 96)
	lay := l.tr.layer(0)
	seq := uint16(0)
	burst := func() {
		for range 10 {
			seq++
			l.r.readRTP(l.seal(t, packet(seq, uint32(seq)*3000, true, 100)), monoNow(), true, nil)
		}
	}
	burst()
	if !lay.fanRun.Load() {
		t.Fatal("no fan-out goroutine after a crowded hand-off")
	}
	if !waitFor(fanIdle+3*time.Second, func() bool { return !lay.fanRun.Load() }) {
		t.Fatalf("the fan-out goroutine still runs %v after its last packet", fanIdle+3*time.Second)
	}
	burst()
	if !waitFor(5*time.Second, func() bool { return conn.n.Load() == 60 }) || lay.fanning.Load() != 0 {
		t.Fatalf("%d datagrams of 60, %d packets still queued", conn.n.Load(), lay.fanning.Load())
	}
	l.tr.Close()
}
