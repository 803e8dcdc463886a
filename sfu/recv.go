package sfu

// The direct receive path: a publisher connection's media is taken off the
// media socket as pion's UDP mux reads it, decrypted with the publisher's
// SRTP keys and forwarded there, on the mux's reader, instead of passing
// pion's mux, ICE connection, DTLS/SRTP demultiplexer, SRTP session, the
// transport-wide feedback interceptor (one channel send per packet) and
// the layer's read goroutine: five goroutine hand-offs per packet. The
// keys are derived as on the direct send path (direct.go), so Parley is
// the DTLS server of publisher connections too (its answers say
// a=setup:passive).
//
// pion still sees each stream's first packets: it finds the stream's
// track (SSRC, MID, RID) and its layer's read loop forwards them. After
// the first, the path takes the stream; what pion read meanwhile is still
// forwarded by the read loop (Layer.fmu keeps the two in turn). RTX
// streams are taken too: pion would hand repaired packets only to a read
// loop that still gets new ones. Packets of streams the path does not
// know yet (a new track, a probe) go on to pion.
//
// Once it has the connection, the path makes the transport-wide feedback
// and the receiver reports of every stream it took; pion's interceptors
// for them step aside (steppable). As on the send path, a connection whose
// ICE pair moves off the UDP socket (ICE-TCP) is failed: its streams'
// rollover counters are Parley's, not pion's, from then on.

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// srtpReplayWindow is how far back (packets) a publisher's packet may come
// and still be taken once: as far back as the NACK generator asks for
// packets again (a client without RTX resends on the media SSRC).
const srtpReplayWindow = nackWindow

// rrInterval is how often the path sends receiver reports, feedbackInterval
// how often transport-wide feedback (pion's defaults: 1 s, 100 ms).
const (
	rrInterval       = time.Second
	feedbackInterval = 100 * time.Millisecond
)

// recvPath is one publisher connection's direct receive path.
type recvPath struct {
	addr    atomic.Pointer[net.UDPAddr] // the selected pair's remote address
	streams atomic.Pointer[map[uint32]*recvStream]
	smu     sync.Mutex // changes to streams

	mu     sync.Mutex // below: the socket's reader and the feedback loop
	ctx    *srtp.Context
	hdr    rtp.Header
	buf    [receiveMTU]byte
	tcc    uint8 // transport-cc header extension id; 0: none
	rec    *twcc.Recorder
	ssrc   uint32 // the feedback's and reports' sender SSRC
	held   bool   // rec has packets not yet in a feedback
	lastRX int64  // monotonic ns the RTX SSRCs were last looked for

	taken, bad, rtx *atomic.Uint64 // the tap's counters
	handed          *atomic.Int64  // the tap's: time its layers' fan-out goroutines spent
	io              *udpIO         // the tap's batched I/O; nil: none

	rtcp     *rtcpReader // the publisher's RTCP: its sender reports
	srMu     sync.Mutex
	srs      map[uint32]lastSR // by media SSRC
	done     chan struct{}
	doneOnce sync.Once
}

// lastSR is the last sender report of a stream: the middle 32 bits of its
// NTP time, and when it came (monotonic ns), for the receiver reports'
// LSR and DLSR (RFC 3550 section 6.4.1), from which the publisher learns
// its round-trip time.
type lastSR struct {
	ntp uint32
	at  int64
}

// recvStream is one SSRC the path takes: a layer's media or its RTX.
type recvStream struct {
	l       *Layer
	rtx     bool
	pt      uint8  // rtx: the media payload type
	ssrc    uint32 // rtx: the media SSRC
	started bool   // under recvPath.mu: a packet authenticated (the ROC is set)
}

func newRecvPath(tap *rtcpTap, remote srtpKeys, profile srtp.ProtectionProfile, tcc uint8) (*recvPath, error) {
	ctx, err := srtp.CreateContext(remote.key, remote.salt, profile, srtp.SRTPReplayProtection(srtpReplayWindow))
	if err != nil {
		return nil, err
	}
	rctx, err := srtp.CreateContext(remote.key, remote.salt, profile, srtp.SRTCPReplayProtection(srtcpReplayWindow))
	if err != nil {
		return nil, err
	}
	ssrc := rand.Uint32()
	r := &recvPath{ctx: ctx, tcc: tcc, rec: twcc.NewRecorder(ssrc), ssrc: ssrc, done: make(chan struct{}),
		taken: &tap.rtpTaken, bad: &tap.rtpBad, rtx: &tap.rtpRTX, handed: &tap.handedNs, io: tap.io, srs: map[uint32]lastSR{}}
	r.rtcp = &rtcpReader{ctx: rctx, handle: r.handleRTCP}
	r.streams.Store(&map[uint32]*recvStream{})
	return r, nil
}

// adopt takes l's streams from their next packet on.
func (r *recvPath) adopt(l *Layer) {
	if l.remote != nil {
		r.adoptStreams(l, uint32(l.remote.SSRC()), uint32(l.remote.RtxSSRC()), uint8(l.remote.PayloadType()))
	}
}

// adoptStreams takes the media stream ssrc of l and, when not 0, its RTX
// stream rtx (pt: the media payload type).
func (r *recvPath) adoptStreams(l *Layer, ssrc, rtx uint32, pt uint8) {
	l.fanBusy.Store(r.handed)
	if r.io != nil {
		l.fanIO.Store(r.io)
	}
	r.smu.Lock()
	defer r.smu.Unlock()
	old := *r.streams.Load()
	if s := old[ssrc]; s != nil && s.l == l && (rtx == 0 || old[rtx] != nil) {
		return
	}
	// Ended tracks' streams go: a new track may come on one of their SSRCs.
	m := make(map[uint32]*recvStream, len(old)+2)
	for k, v := range old {
		if !v.l.t.isDone() {
			m[k] = v
		}
	}
	if s := m[ssrc]; s == nil || s.l != l {
		m[ssrc] = &recvStream{l: l}
	}
	if s := m[rtx]; rtx != 0 && (s == nil || s.l != l) {
		m[rtx] = &recvStream{l: l, rtx: true, pt: pt, ssrc: ssrc}
	}
	r.streams.Store(&m)
}

// lookForRTX adopts the RTX streams pion learnt of since the layers were
// taken (a simulcast client names them only in its packets' headers).
func (r *recvPath) lookForRTX(now int64) {
	if now-r.lastRX < int64(100*time.Millisecond) {
		return
	}
	r.lastRX = now
	for _, s := range *r.streams.Load() {
		if !s.rtx && s.l.remote != nil && s.l.remote.RtxSSRC() != 0 {
			r.adopt(s.l) // does nothing when it has the RTX stream
		}
	}
}

// readRTP handles b, an RTP packet from the publisher's address that
// arrived at now (monotonic ns): false hands it on to pion. It runs on pion's mux
// reader, and forwards there, into q when not nil (the reader's batch).
func (r *recvPath) readRTP(b []byte, now int64, crowded bool, q *sendBatch) bool {
	if len(b) < 12 || len(b) > receiveMTU {
		return false
	}
	ssrc := binary.BigEndian.Uint32(b[8:12])
	r.mu.Lock()
	defer r.mu.Unlock()
	s := (*r.streams.Load())[ssrc]
	if s == nil || s.l.t.isDone() {
		// Unknown, or its track ended (pion finds what a new one is).
		// The feedback is Parley's all the same: the header is in clear.
		r.record(b, ssrc, now)
		r.lookForRTX(now)
		return false
	}
	if !s.started && !s.rtx {
		// Again until a packet authenticates: a forged first packet must
		// not choose the counter.
		r.ctx.SetROC(ssrc, s.l.rocFor(binary.BigEndian.Uint16(b[2:4])))
	}
	out, err := r.ctx.DecryptRTP(r.buf[:0], b, &r.hdr)
	if err != nil {
		// A replay, or not the publisher's: pion's context, which has
		// not seen the stream since, must not take it either.
		r.bad.Add(1)
		return true
	}
	s.started = true
	r.taken.Add(1)
	r.record(out, ssrc, now)
	if s.rtx {
		if out = unwrapRTX(out, s.pt, s.ssrc); out == nil {
			return true // padding (a bandwidth probe)
		}
		r.rtx.Add(1)
	}
	s.l.forwardOn(out, now, true, crowded, q)
	return true
}

// handleRTCP keeps the sender reports of one decrypted compound packet of
// the publisher's; the rest (SDES, BYE) has no use on this connection.
func (r *recvPath) handleRTCP(b []byte) {
	now := monoNow()
	for len(b) >= 4 {
		n := 4 * (int(binary.BigEndian.Uint16(b[2:4])) + 1)
		if n > len(b) {
			return
		}
		if b[1] == 200 && n >= 28 { // SR: SSRC, then the 64-bit NTP time
			r.srMu.Lock()
			if len(r.srs) < 64 || r.srs[binary.BigEndian.Uint32(b[4:8])] != (lastSR{}) {
				r.srs[binary.BigEndian.Uint32(b[4:8])] = lastSR{ntp: binary.BigEndian.Uint32(b[10:14]), at: now}
			}
			r.srMu.Unlock()
		}
		b = b[n:]
	}
}

// record notes b's transport-wide sequence number for the feedback.
func (r *recvPath) record(b []byte, ssrc uint32, now int64) {
	if ext := headerExt(b, r.tcc); len(ext) >= 2 {
		r.rec.Record(ssrc, binary.BigEndian.Uint16(ext), now/1000)
		r.held = true
	}
}

// unwrapRTX turns an RTX packet (RFC 4588: the original sequence number,
// then the original payload) back into the media packet, in place, or nil
// when it carries no payload (padding). pt and ssrc are the media stream's.
func unwrapRTX(b []byte, pt uint8, ssrc uint32) []byte {
	hl := rtpHeaderLen(b)
	if hl < 0 {
		return nil
	}
	end := len(b)
	if b[0]&0x20 != 0 {
		if end == hl {
			return nil
		}
		end -= int(b[end-1])
	}
	if end-hl <= 2 {
		return nil
	}
	osn := b[hl : hl+2]
	b[2], b[3] = osn[0], osn[1]
	binary.BigEndian.PutUint32(b[8:12], ssrc)
	b[1] = b[1]&0x80 | pt&0x7f
	copy(b[2:hl+2], b[:hl])
	return b[2:]
}

// rocFor is the rollover counter of the stream's packet seq, as the layer
// has seen the stream so far (what pion's SRTP context counted).
func (l *Layer) rocFor(seq uint16) uint32 {
	l.fmu.Lock()
	defer l.fmu.Unlock()
	roc := l.rx.cycles >> 16
	if !l.rx.started {
		return 0
	}
	switch d := int32(seq) - int32(l.rx.maxSeq); {
	case d < -1<<15:
		roc++ // past a wrap the layer has not seen
	case d > 1<<15 && roc > 0:
		roc-- // a late packet from before the last wrap
	}
	return roc
}

// loop sends the transport-wide feedback and receiver reports until the
// connection closes.
func (r *recvPath) loop(pc *webrtc.PeerConnection, p *Publisher) {
	tick := time.NewTicker(feedbackInterval)
	defer tick.Stop()
	lastRR := time.Now()
	for {
		select {
		case <-r.done:
			return
		case now := <-tick.C:
			r.mu.Lock()
			var pkts []rtcp.Packet
			if r.held {
				pkts, r.held = r.rec.BuildFeedbackPacket(), false
			}
			r.mu.Unlock()
			if now.Sub(lastRR) >= rrInterval {
				lastRR = now
				if rr := r.receiverReport(); rr != nil {
					pkts = append(pkts, rr)
				}
			}
			if len(pkts) > 0 {
				if err := pc.WriteRTCP(pkts); err != nil && pc.ConnectionState() != webrtc.PeerConnectionStateClosed {
					p.log.Debug("publisher feedback not sent", "err", err)
				}
			}
		}
	}
}

// receiverReport reports on every media stream the path took (RFC 3550
// section 6.4.2), or nil.
func (r *recvPath) receiverReport() *rtcp.ReceiverReport {
	var reports []rtcp.ReceptionReport
	for ssrc, s := range *r.streams.Load() {
		if s.rtx {
			continue
		}
		s.l.fmu.Lock()
		rr, ok := s.l.rx.report(ssrc)
		s.l.fmu.Unlock()
		if !ok {
			continue
		}
		r.srMu.Lock()
		sr, has := r.srs[ssrc]
		r.srMu.Unlock()
		if has {
			// DLSR in units of 1/65536 s
			rr.LastSenderReport, rr.Delay = sr.ntp, uint32((monoNow()-sr.at)*65536/int64(time.Second))
		}
		reports = append(reports, rr)
		if len(reports) == 31 { // the report count field's most
			break
		}
	}
	if len(reports) == 0 {
		return nil
	}
	return &rtcp.ReceiverReport{SSRC: r.ssrc, Reports: reports}
}

func (r *recvPath) close() { r.doneOnce.Do(func() { close(r.done) }) }

// rxStats are the reception statistics of one stream (RFC 3550 appendix
// A.1, A.3, A.8), kept by Layer.forward under Layer.fmu.
type rxStats struct {
	started            bool
	maxSeq             uint16
	cycles             uint32 // sequence number wraps, shifted left 16
	baseSeq            uint32
	received           uint32
	expPrior, recPrior uint32
	transit            uint32
	jitter             uint32 // times 16
}

// rtpTime is the monotonic time mono (ns) in units of clock (Hz).
func rtpTime(mono int64, clock uint64) uint32 {
	return uint32(uint64(mono) / 1000 * clock / 1_000_000)
}

func (s *rxStats) update(seq uint16, ts, arrival uint32) {
	s.received++
	transit := arrival - ts
	if !s.started {
		s.started, s.maxSeq, s.baseSeq, s.transit = true, seq, uint32(seq), transit
		return
	}
	if d := seq - s.maxSeq; d != 0 && d < 1<<15 {
		if seq < s.maxSeq {
			s.cycles += 1 << 16
		}
		s.maxSeq = seq
	}
	d := int32(transit - s.transit)
	s.transit = transit
	if d < 0 {
		d = -d
	}
	s.jitter += uint32(d) - (s.jitter+8)>>4
}

// report is the stream's reception report since the last one; false
// before its first packet.
func (s *rxStats) report(ssrc uint32) (rtcp.ReceptionReport, bool) {
	if !s.started {
		return rtcp.ReceptionReport{}, false
	}
	ext := s.cycles + uint32(s.maxSeq)
	expected := ext - s.baseSeq + 1
	lost := max(int64(expected)-int64(s.received), 0)
	lost = min(lost, 1<<23-1)
	expInt, recInt := expected-s.expPrior, s.received-s.recPrior
	s.expPrior, s.recPrior = expected, s.received
	var fraction uint8
	if lostInt := int64(expInt) - int64(recInt); expInt != 0 && lostInt > 0 {
		fraction = uint8(min(lostInt<<8/int64(expInt), 255))
	}
	return rtcp.ReceptionReport{SSRC: ssrc, FractionLost: fraction, TotalLost: uint32(lost),
		LastSequenceNumber: ext, Jitter: s.jitter >> 4}, true
}

// steppable wraps one of pion's receive-side interceptors of a publisher
// connection (transport-wide feedback, receiver reports) so that it steps
// aside once off is set: the direct receive path makes what it made.
type steppable struct {
	interceptor.Interceptor
	off *atomic.Bool
}

type steppableFactory struct {
	inner interceptor.Factory
	off   *atomic.Bool
}

func (f steppableFactory) NewInterceptor(id string) (interceptor.Interceptor, error) {
	i, err := f.inner.NewInterceptor(id)
	if err != nil {
		return nil, err
	}
	return &steppable{Interceptor: i, off: f.off}, nil
}

func (s *steppable) BindRemoteStream(info *interceptor.StreamInfo, reader interceptor.RTPReader) interceptor.RTPReader {
	inner := s.Interceptor.BindRemoteStream(info, reader)
	return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		if s.off.Load() {
			return reader.Read(b, a)
		}
		return inner.Read(b, a)
	})
}

// BindRTCPWriter gives the interceptor a writer that drops what it sends
// once off (its loop keeps running); the connection's own writes go on
// unfiltered. Both interceptors wrapped here return the writer they get.
func (s *steppable) BindRTCPWriter(w interceptor.RTCPWriter) interceptor.RTCPWriter {
	s.Interceptor.BindRTCPWriter(interceptor.RTCPWriterFunc(func(pkts []rtcp.Packet, a interceptor.Attributes) (int, error) {
		if s.off.Load() {
			return 0, nil
		}
		return w.Write(pkts, a)
	}))
	return w
}

// startDirect gives the publisher connection the direct receive path when
// its keys are known and its ICE pair is on the media socket. It runs once,
// when the connection first comes up.
func (p *Publisher) startDirect() {
	if p.keys == nil {
		p.stats.recvPion.Add(1)
		return
	}
	_, remote, profile, addr, err := directStart(p.keys, p.pc)
	var r *recvPath
	if err == nil {
		r, err = newRecvPath(p.tap, remote, profile, p.tccID())
	}
	if err != nil {
		p.stats.recvPion.Add(1)
		p.log.Debug("publisher receives through pion", "why", err)
		return
	}
	p.stats.recvDirect.Add(1)
	r.addr.Store(addr)
	// Parley's feedback first, then pion's steps aside: a packet in
	// between may be in both, none is in neither.
	p.tap.addPublisher(addr, r)
	p.stepAside.Store(true)
	p.lmu.Lock()
	p.recv = r
	live := p.live[:0]
	for _, l := range p.live {
		if l.t.isDone() {
			continue
		}
		live = append(live, l)
		r.adopt(l)
	}
	clear(p.live[len(live):])
	p.live = live
	p.lmu.Unlock()
	go r.loop(p.pc, p)
	p.log.Debug("publisher receives directly", "from", addr.String(), "profile", profile)
}

// layerStarted is each layer's first packet (Track.onFirst).
func (p *Publisher) layerStarted(l *Layer) {
	p.lmu.Lock()
	defer p.lmu.Unlock()
	if p.recv != nil {
		p.recv.adopt(l)
		return
	}
	p.live = append(p.live, l)
}

// tccID is the negotiated transport-cc header extension id, or 0.
func (p *Publisher) tccID() uint8 {
	for _, t := range p.pc.GetTransceivers() {
		if r := t.Receiver(); r != nil {
			for _, x := range r.GetParameters().HeaderExtensions {
				if x.URI == transportCCURI {
					return uint8(x.ID)
				}
			}
		}
	}
	return 0
}

const transportCCURI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"

// recvPairChanged follows ICE to a new pair; a move the path cannot follow
// fails the connection (see the top of this file).
func (p *Publisher) recvPairChanged(pair *webrtc.ICECandidatePair) {
	p.lmu.Lock()
	r := p.recv
	p.lmu.Unlock()
	if r == nil {
		return
	}
	addr := pairAddr(pair)
	if old := r.addr.Swap(addr); old == nil || addr == nil || old.String() != addr.String() {
		p.tap.removePublisher(old, r)
		p.tap.addPublisher(addr, r)
	}
	if addr == nil && p.ev.Failed != nil {
		go p.ev.Failed(fmt.Errorf("%w: the publisher connection moved to a network path its media cannot follow (%v); publish again", ErrClosed, pair))
	}
}

// recvState follows the connection's state: the path starts when it first
// comes up and stops taking packets when it fails or closes.
func (p *Publisher) recvState(st webrtc.PeerConnectionState) {
	switch st {
	case webrtc.PeerConnectionStateConnected:
		p.startOnce.Do(p.startDirect)
	case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
		p.lmu.Lock()
		r := p.recv
		p.lmu.Unlock()
		if r != nil {
			p.tap.removePublisher(r.addr.Swap(nil), r)
			if st == webrtc.PeerConnectionStateClosed {
				r.close()
			}
		}
	}
}
