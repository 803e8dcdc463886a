package sfu

// The direct path's receive side: the RTCP a direct subscriber connection
// sends (receiver reports, transport-wide feedback, NACKs, keyframe
// requests) is taken off the media socket as pion's UDP mux reads it, and
// decrypted and acted on there, instead of passing pion's mux, ICE
// connection, DTLS/SRTP demultiplexer, SRTCP session (which parses every
// packet to route it) and a read goroutine per subscribed track: four
// goroutine hand-offs per packet, for what is two thirds of the datagrams
// a large room receives. Everything else (media from publishers, STUN,
// DTLS, anything that does not decrypt) goes on to pion unchanged.

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtcp"
	"github.com/pion/srtp/v3"
)

// rtcpTap is the media socket as pion's UDP mux sees it.
type rtcpTap struct {
	net.PacketConn
	ap ice.AddrPortReaderWriter // the socket's allocation-free I/O; nil: none (vnet)

	// batched I/O (sendbatch.go), the reader's own; nil: one system call
	// per datagram
	io *udpIO
	rx *rxBatch
	tx *sendBatch

	mu     sync.RWMutex
	byAddr map[netip.AddrPort]*directPath // subscribers: their RTCP
	pubs   map[netip.AddrPort]*recvPath   // publishers: their media (recv.go)
	taken  atomic.Uint64                  // RTCP packets read here, not by pion

	rtpTaken, rtpBad atomic.Uint64 // publishers' media taken here; refused
	rtpRTX           atomic.Uint64 // retransmissions among them (tests)
	pubRTCP          atomic.Uint64 // direct publishers' RTCP taken (tests)

	// the mux reader's time in the direct receive path (account)
	crowded             bool
	winStart, winBusyNs int64
	winHanded           int64        // handedNs when the window began
	handedNs            atomic.Int64 // time the fan-out goroutines spent on what the reader handed them
}

// crowdWindow is how long the reader's busy share is measured over.
const crowdWindow = int64(100 * time.Millisecond)

// account adds one packet's time on the direct receive path; over each
// crowdWindow, a reader that was, or would have been without handing
// fan-outs off, busy more than half of it is crowded for the next
// (Layer.forwardOn then hands every fan-out to the layers' goroutines).
// Only the mux reader calls it.
func (t *rtcpTap) account(start, end int64) {
	t.winBusyNs += end - start
	if el := end - t.winStart; el >= crowdWindow {
		h := t.handedNs.Load()
		t.crowded = 2*(t.winBusyNs+h-t.winHanded) > el
		t.winStart, t.winBusyNs, t.winHanded = end, 0, h
	}
}

// newRTCPTap reads c for pion's mux; batch: with recvmmsg, and the
// forwarded copies batched (sendbatch.go) and written through w (a handle
// on c's socket, ownWriter), where c is a UDP socket on Linux.
func newRTCPTap(c, w net.PacketConn, batch bool) *rtcpTap {
	t := &rtcpTap{PacketConn: c, byAddr: map[netip.AddrPort]*directPath{}, pubs: map[netip.AddrPort]*recvPath{}}
	t.ap, _ = c.(ice.AddrPortReaderWriter)
	if uc, ok := c.(*net.UDPConn); ok {
		t.ap = udpAddrPort{uc}
	}
	if batch {
		if t.io = newUDPIO(c, w); t.io != nil {
			t.rx, t.tx = newRxBatch(t.io), newSendBatch(t.io)
		}
	}
	return t
}

type udpAddrPort struct{ *net.UDPConn }

func (u udpAddrPort) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	return u.ReadFromUDPAddrPort(b)
}

func (u udpAddrPort) WriteToAddrPort(b []byte, a netip.AddrPort) (int, error) {
	return u.WriteToUDPAddrPort(b, a)
}

// key is the map key of an address: IPv4 unmapped (a dual-stack socket
// reads ::ffff:a.b.c.d).
func key(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }

// add sends the RTCP from a to p; a nil a does nothing.
func (t *rtcpTap) add(a *net.UDPAddr, p *directPath) {
	if t != nil {
		tapAdd(&t.mu, t.byAddr, a, p)
	}
}

// remove stops taking the RTCP from a, if it still goes to p.
func (t *rtcpTap) remove(a *net.UDPAddr, p *directPath) {
	if t != nil {
		tapRemove(&t.mu, t.byAddr, a, p)
	}
}

// addPublisher sends the media from a to r; a nil a does nothing.
func (t *rtcpTap) addPublisher(a *net.UDPAddr, r *recvPath) {
	if t != nil {
		tapAdd(&t.mu, t.pubs, a, r)
	}
}

// removePublisher stops taking the media from a, if it still goes to r.
func (t *rtcpTap) removePublisher(a *net.UDPAddr, r *recvPath) {
	if t != nil {
		tapRemove(&t.mu, t.pubs, a, r)
	}
}

func tapAdd[V comparable](mu *sync.RWMutex, m map[netip.AddrPort]V, a *net.UDPAddr, v V) {
	if a == nil {
		return
	}
	mu.Lock()
	m[key(a.AddrPort())] = v
	mu.Unlock()
}

func tapRemove[V comparable](mu *sync.RWMutex, m map[netip.AddrPort]V, a *net.UDPAddr, v V) {
	if a == nil {
		return
	}
	k := key(a.AddrPort())
	mu.Lock()
	if m[k] == v {
		delete(m, k)
	}
	mu.Unlock()
}

// isRTCP: an RTP-version packet whose second byte is an RTCP packet type
// (RFC 5761 section 4: 192-223).
func isRTCP(b []byte) bool { return len(b) >= 8 && b[0]>>6 == 2 && b[1] >= 192 && b[1] <= 223 }

// take handles b from a, which arrived at at (monoNow's clock), if it is a
// direct connection's RTCP or a direct publisher's media; false hands it
// on to pion. The copies it forwards go into q when not nil.
func (t *rtcpTap) take(b []byte, a netip.AddrPort, at int64, q *sendBatch) bool {
	if len(b) < 12 || b[0]>>6 != 2 {
		return false // STUN, DTLS
	}
	if !isRTCP(b) {
		t.mu.RLock()
		r := t.pubs[key(a)]
		t.mu.RUnlock()
		if r == nil {
			return false
		}
		start := monoNow()
		ok := r.readRTP(b, at, t.crowded, q)
		t.account(start, monoNow())
		return ok
	}
	t.mu.RLock()
	p := t.byAddr[key(a)]
	var r *recvPath
	if p == nil {
		r = t.pubs[key(a)] // a direct publisher's sender reports
	}
	t.mu.RUnlock()
	switch {
	case p != nil && p.readRTCP(b):
		t.taken.Add(1)
		return true
	case r != nil && r.rtcp.read(b):
		t.pubRTCP.Add(1)
		return true
	}
	return false
}

func (t *rtcpTap) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, a, err := t.PacketConn.ReadFrom(b)
		if err != nil {
			return n, a, err
		}
		if ua, ok := a.(*net.UDPAddr); ok && t.take(b[:n], ua.AddrPort(), monoNow(), nil) {
			continue
		}
		return n, a, nil
	}
}

// ReadFromAddrPort and WriteToAddrPort keep pion's mux on its
// allocation-free path (ice.AddrPortReaderWriter).
func (t *rtcpTap) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	if t.rx != nil {
		return t.readBatched(b)
	}
	if t.ap == nil {
		n, a, err := t.ReadFrom(b)
		if err != nil {
			return n, netip.AddrPort{}, err
		}
		ua, _ := a.(*net.UDPAddr)
		if ua == nil {
			return n, netip.AddrPort{}, nil
		}
		return n, ua.AddrPort(), nil
	}
	for {
		n, a, err := t.ap.ReadFromAddrPort(b)
		if err != nil || !t.take(b[:n], a, monoNow(), nil) {
			return n, a, err
		}
	}
}

// readBatched is ReadFromAddrPort with recvmmsg: the datagrams of one read
// are handled in turn, and the copies they make go out together once all
// are, or before one is handed to pion.
func (t *rtcpTap) readBatched(b []byte) (int, netip.AddrPort, error) {
	for {
		if !t.rx.more() {
			t.flush()
			if err := t.rx.fill(); err != nil {
				return 0, netip.AddrPort{}, err
			}
			continue
		}
		pkt, a, at := t.rx.take()
		if t.take(pkt, a, at, t.tx) {
			continue
		}
		t.flush()
		return copy(b, pkt), a, nil
	}
}

// flush sends the reader's batch, counting the time as the reader's.
func (t *rtcpTap) flush() {
	if t.tx != nil && t.tx.pending() {
		start := monoNow()
		t.tx.flush()
		t.account(start, monoNow())
	}
}

func (t *rtcpTap) WriteToAddrPort(b []byte, a netip.AddrPort) (int, error) {
	if t.ap == nil {
		return t.PacketConn.WriteTo(b, net.UDPAddrFromAddrPort(a))
	}
	return t.ap.WriteToAddrPort(b, a)
}

// rtcpReader decrypts one direct connection's SRTCP (the client's keys)
// and hands the compound packet to the subscriber, or to the publisher's
// receive path. Only the mux's reader calls it.
type rtcpReader struct {
	mu     sync.Mutex
	ctx    *srtp.Context
	hdr    rtcp.Header
	buf    [receiveMTU]byte
	handle func([]byte)
}

// receiveMTU is the largest RTCP datagram read in place (pion's mux reads
// up to this much too).
const receiveMTU = 1500

// readRTCP: false when b does not decrypt (it then goes to pion, which
// will drop it as well, or knows better).
func (p *directPath) readRTCP(b []byte) bool { return p.rtcp.read(b) }

// read decrypts b and hands it on; false when it does not decrypt.
func (r *rtcpReader) read(b []byte) bool {
	if len(b) > receiveMTU {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out, err := r.ctx.DecryptRTCP(r.buf[:0], b, &r.hdr)
	if err != nil {
		return false
	}
	r.handle(out)
	return true
}

// srtcpReplayWindow is how many SRTCP indexes back a packet may come and
// still be taken once (pion's default for its own SRTCP sessions).
const srtcpReplayWindow = 64

// handleRTCP acts on one decrypted compound packet of the client's RTCP:
// transport-wide feedback to the congestion controller, the rest to the
// DownTracks it names (walkRTCP with s as the sink).
func (s *Subscriber) handleRTCP(b []byte) {
	n := s.bwe.cc.Take(b)
	walkRTCP(b[:n], s)
}

func (s *Subscriber) rtcpKeyframe(ssrc uint32) {
	if d := s.down(ssrc); d != nil {
		d.rtcpKeyframe(ssrc)
	}
}

func (s *Subscriber) rtcpNack(ssrc uint32, seq uint16) {
	if d := s.down(ssrc); d != nil {
		d.rtcpNack(ssrc, seq)
	}
}

func (s *Subscriber) rtcpREMB(bps uint64) { s.bwe.setREMB(bps) }

func (s *Subscriber) rtcpLoss(ssrc uint32, fractionLost uint8) {
	if d := s.down(ssrc); d != nil {
		d.rtcpLoss(ssrc, fractionLost)
	}
}

// ssrcIndex maps the connection's media SSRCs to their DownTracks, as of
// generation gen of the subscription.
type ssrcIndex struct {
	gen   uint64
	built int64 // monotonic ns
	m     map[uint32]*DownTrack
}

// ssrcIndexAge: an index that misses an SSRC is built again after this
// long even if nothing changed (pion may bind a transceiver after the
// answer was applied).
const ssrcIndexAge = int64(time.Second)

// down is the DownTrack sending ssrc, or nil. It runs on pion's mux
// reader, so it never waits for s.mu: an index it cannot rebuild now is
// rebuilt on a later packet.
func (s *Subscriber) down(ssrc uint32) *DownTrack {
	idx := s.ssrcs.Load()
	if idx != nil {
		if d, ok := idx.m[ssrc]; ok {
			return d
		}
		if idx.gen == s.ssrcGen.Load() && monoNow()-idx.built < ssrcIndexAge {
			return nil
		}
	}
	if !s.mu.TryLock() {
		return nil
	}
	gen := s.ssrcGen.Load()
	m := make(map[uint32]*DownTrack, len(s.downs))
	for _, d := range s.downs {
		if b := d.bind.Load(); b != nil {
			m[b.ssrc] = d
		}
	}
	s.mu.Unlock()
	s.ssrcs.Store(&ssrcIndex{gen: gen, built: monoNow(), m: m})
	return m[ssrc]
}
