package sfu

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// queueLen is how many packets a subscriber may fall behind before the SFU
// drops for it (and, for video, resumes at the next keyframe). Audio's is
// smaller: 64 Opus packets are 1.3 s, and an audio room has thousands of
// subscribed tracks.
const (
	queueLen      = 256
	audioQueueLen = 64
)

// histSize is how many sent packets a DownTrack remembers to answer NACKs
// (a power of two): as many as the layer's ring keeps, since an older
// packet could not be resent anyway (audioRingSize for audio). The packets
// themselves stay in the ring: the history only maps an outgoing sequence
// number back to them.
const histSize = ringSize

// nackResendInterval is the shortest time between two resends of one
// packet: a NACK repeated before the resend could arrive is ignored.
const nackResendInterval = 50 * time.Millisecond

// maxResends is how often one packet is resent at most. The wait between
// two resends doubles each time (50 ms, 100 ms, ... 1.6 s), so a receiver
// that keeps asking (pion's generator is not told of RTX repairs) gets few
// copies, and a packet lost again on a congested link is still repaired
// once the congestion is over.
const maxResends = 6

type queued struct {
	l   *Layer
	num uint64
}

type binding struct {
	ssrc    uint32
	pt      uint8
	rtxSSRC uint32 // 0: RTX not negotiated (resends reuse the media SSRC)
	rtxPT   uint8
	tcc     uint8 // transport-cc header extension id; 0: not negotiated
	writer  webrtc.TrackLocalWriter
}

// histEntry maps one sent sequence number to the packet in its layer's ring
// and the offsets it was sent with. Its fields are ordered by size, so
// that it packs into 40 bytes (48 in declaration order): a video
// subscriber keeps histSize of them per track.
type histEntry struct {
	l      *Layer
	num    uint64
	sentAt int64 // when it was last sent (monoNow)
	tsOff  uint32
	out    uint16
	seqOff uint16
	valid  bool
	marker bool
	tries  uint8 // resends so far
}

// TrackSettings are how a subscriber shows one track (docs/protocol.md
// track_settings).
type TrackSettings struct {
	Width, Height int    // device pixels; 0: no limit
	Quality       string // low, medium, high; "": high
	Paused        bool
}

// DownTrack is one subscriber's copy of a Track. It implements
// webrtc.TrackLocal. It forwards one layer of the track, switching layers on
// keyframes, and rewrites SSRC, payload type, sequence numbers and
// timestamps so that the subscriber sees one continuous stream even when the
// layer or the source changes (Switch) or packets are dropped for it.
type DownTrack struct {
	id       string
	streamID string
	kind     webrtc.RTPCodecType
	codec    webrtc.RTPCodecCapability

	src   atomic.Pointer[Track]
	queue chan queued
	bind  atomic.Pointer[binding]

	needKeyframe atomic.Bool
	resync       atomic.Bool

	subMu        sync.Mutex   // orders changes of the layers d is attached to
	beforeDetach func(*Layer) // tests: runs between detachFrom's check and its removal
	settings     atomic.Pointer[TrackSettings]
	target       atomic.Int32 // layer to forward, chosen by the allocator; -1: none
	want         atomic.Int32 // layer the allocator would like (dynacast)
	curIdx       atomic.Int32 // layer being forwarded; -1: none
	maxSpatial   atomic.Int32 // VP9 SVC: highest spatial layer to forward

	// writer state: whoever holds wmu, the writer goroutine or a layer's
	// reader in deliver
	wmu        sync.Mutex
	pending    atomic.Int32 // packets queued or being written by the writer goroutine
	cur        *Layer
	spatial    int
	buf        [packetMTU]byte
	hdr        rtp.Header
	vp9        vp9Desc
	started    bool
	seqOff     uint16
	tsOff      uint32
	lastOutSeq uint16
	lastOutTS  uint32
	outTS      atomic.Uint32 // lastOutTS, for padding
	lastSent   int64         // when lastOutTS was sent (monoNow)
	kfAsked    time.Time     // when the writer last asked for the keyframe it waits for; zero: not waiting

	// NACK answers and padding (hmu)
	hmu    sync.Mutex
	hist   []histEntry // histSize or audioRingSize entries
	hmask  uint16
	rtxSeq uint16
	srTS   uint32 // the RTP timestamp last sent, for sender reports
	srAt   int64  // when (monoNow); 0: nothing sent
	rbuf   [packetMTU + 2]byte
	rhdr   rtp.Header
	pad    [255]byte

	packets   atomic.Uint64
	bytes     atomic.Uint64
	octets    atomic.Uint64 // payload bytes, for sender reports
	drops     atomic.Uint64
	nacks     atomic.Uint64
	retx      atomic.Uint64
	padded    atomic.Uint64 // padding bytes sent to probe bandwidth
	switches  atomic.Uint64 // layer switches
	kfRetries atomic.Uint64 // keyframes asked for again after keyframeRetry of waiting
	loss      atomic.Uint32 // 1 + the last fraction lost reported (x/256); 0: no report
	delay     delayHist     // arrival to written, per forwarded packet (not resends)

	onREMB func(bps uint64) // the subscriber connection's estimate
	ready  *atomic.Bool     // the subscriber connection is up; nil: always

	// the direct send path (direct.go): the connection's, set before
	// ready; nil, or holding nil: pion's path
	path *atomic.Pointer[directPath]
	ds   atomic.Pointer[directSender]

	closed    chan struct{}
	isShut    atomic.Bool // closed is closed
	closeOnce sync.Once
}

// NewDownTrack makes a subscriber copy of t. Call Run to start its writer.
func NewDownTrack(t *Track, streamID string) *DownTrack {
	ql, hn := queueLen, histSize
	if t.Kind() == webrtc.RTPCodecTypeAudio {
		ql, hn = audioQueueLen, audioRingSize
	}
	d := &DownTrack{
		id:       t.SID(),
		streamID: streamID,
		kind:     t.Kind(),
		codec:    t.Codec(),
		queue:    make(chan queued, ql),
		hist:     make([]histEntry, hn),
		closed:   make(chan struct{}),
		spatial:  maxLayers - 1,
	}
	d.hmask = uint16(hn - 1)
	d.src.Store(t)
	d.want.Store(0)
	d.curIdx.Store(-1)
	d.maxSpatial.Store(maxLayers - 1)
	d.settings.Store(&TrackSettings{})
	d.target.Store(int32(max(t.lowest(), 0)))
	if d.kind == webrtc.RTPCodecTypeVideo {
		d.needKeyframe.Store(true)
	}
	d.pad[len(d.pad)-1] = byte(len(d.pad))
	return d
}

// ID is the track sid (the msid track id on the subscriber side).
func (d *DownTrack) ID() string { return d.id }

// RID is empty: a DownTrack sends one layer.
func (d *DownTrack) RID() string { return "" }

// StreamID groups a participant's tracks (msid stream id).
func (d *DownTrack) StreamID() string { return d.streamID }

// Kind is audio or video.
func (d *DownTrack) Kind() webrtc.RTPCodecType { return d.kind }

// Layer is the index of the layer being forwarded (0 is the lowest), or -1.
func (d *DownTrack) Layer() int { return int(d.curIdx.Load()) }

// Bind is called by pion when the subscriber's transceiver starts.
func (d *DownTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	params := ctx.CodecParameters()
	for _, c := range params {
		if strings.EqualFold(c.MimeType, d.codec.MimeType) && fmtpCompatible(c.SDPFmtpLine, d.codec.SDPFmtpLine, d.codec.MimeType) {
			b := &binding{ssrc: uint32(ctx.SSRC()), pt: uint8(c.PayloadType), writer: ctx.WriteStream()}
			for _, e := range ctx.HeaderExtensions() {
				if e.URI == sdp.TransportCCURI && e.ID > 0 && e.ID < 256 {
					b.tcc = uint8(e.ID)
				}
			}
			if rtx := uint32(ctx.SSRCRetransmission()); rtx != 0 {
				for _, r := range params {
					if strings.EqualFold(r.MimeType, webrtc.MimeTypeRTX) && fmtpParam(r.SDPFmtpLine, "apt") == strconv.Itoa(int(c.PayloadType)) {
						b.rtxSSRC, b.rtxPT = rtx, uint8(r.PayloadType)
					}
				}
			}
			d.bind.Store(b)
			if d.kind == webrtc.RTPCodecTypeVideo {
				d.needKeyframe.Store(true)
				if t := d.src.Load(); t != nil {
					if l := t.layer(int(d.target.Load())); l != nil {
						l.RequestKeyframe()
					}
				}
			}
			return c, nil
		}
	}
	return webrtc.RTPCodecParameters{}, webrtc.ErrUnsupportedCodec
}

// Unbind is called by pion when the transceiver stops.
func (d *DownTrack) Unbind(webrtc.TrackLocalContext) error {
	d.bind.Store(nil)
	return nil
}

// fmtpCompatible: for H.264 the packetization mode and profile must match;
// other codecs match on the mime type alone.
func fmtpCompatible(offered, source, mime string) bool {
	if !strings.EqualFold(mime, "video/H264") {
		return true
	}
	return fmtpParam(offered, "packetization-mode") == fmtpParam(source, "packetization-mode") &&
		strings.EqualFold(profile(fmtpParam(offered, "profile-level-id")), profile(fmtpParam(source, "profile-level-id")))
}

func profile(plid string) string {
	if len(plid) >= 4 {
		return plid[:4]
	}
	return plid
}

func fmtpParam(line, key string) string {
	for _, kv := range strings.Split(line, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if ok && strings.EqualFold(k, key) {
			return v
		}
	}
	return ""
}

// Run starts the writer goroutine and attaches the DownTrack to its source.
// sender, when not nil, is drained for RTCP: NACKs are answered from the
// layer's ring, keyframe requests go upstream.
func (d *DownTrack) Run(sender *webrtc.RTPSender) {
	go d.writeLoop()
	if sender != nil {
		go d.rtcpLoop(sender)
	}
	if t := d.src.Load(); t != nil {
		d.attach(t)
	}
}

// attach subscribes d to t and to the layer it targets.
func (d *DownTrack) attach(t *Track) {
	t.addDown(d)
	d.subMu.Lock()
	if l := t.layer(int(d.target.Load())); l != nil {
		l.addDown(d)
	}
	d.subMu.Unlock()
	if t.isDone() {
		// It ended meanwhile: its Close may have run before d was in
		// its set (Track.Close detaches the others).
		t.removeDown(d)
	}
}

// Switch moves the DownTrack to a new source track (e.g. the publisher
// reconnected). The subscriber keeps its SSRC and sees continuous sequence
// numbers and timestamps; video resumes on the new source's next keyframe.
func (d *DownTrack) Switch(t *Track) {
	old := d.src.Swap(t)
	if old == t {
		return
	}
	if old != nil {
		old.removeDown(d)
	}
	d.resync.Store(true)
	if tgt := d.target.Load(); tgt >= 0 && t.layer(int(tgt)) == nil {
		d.target.Store(int32(max(t.lowest(), 0)))
	}
	if d.kind == webrtc.RTPCodecTypeVideo {
		d.needKeyframe.Store(true)
		if l := t.layer(int(d.target.Load())); l != nil {
			l.RequestKeyframe()
		}
	}
	d.attach(t)
}

// restart asks for a keyframe of the target layer (the connection came up).
func (d *DownTrack) restart() {
	if d.kind != webrtc.RTPCodecTypeVideo {
		return
	}
	if t := d.src.Load(); t != nil {
		if l := t.layer(int(d.target.Load())); l != nil {
			l.RequestKeyframe()
		}
	}
}

// setTarget makes l the layer to forward (-1: none). The writer moves to it
// on its next keyframe and keeps forwarding the current layer until then.
func (d *DownTrack) setTarget(i int) {
	d.subMu.Lock()
	defer d.subMu.Unlock()
	if d.target.Swap(int32(i)) == int32(i) {
		return
	}
	t := d.src.Load()
	if t == nil {
		return
	}
	if l := t.layer(i); l != nil {
		l.addDown(d)
		if d.kind == webrtc.RTPCodecTypeVideo && int(d.curIdx.Load()) != i {
			l.RequestKeyframe()
		}
	}
}

// keyframeRetry is how long the writer waits for a keyframe before it asks
// the publisher again. A keyframe lost on the way in, or sent just before
// this subscriber was attached, would otherwise leave its video black
// until the publisher's next keyframe, and a browser sends one only when
// asked.
const keyframeRetry = time.Second

// awaitKeyframe runs for each packet of l the writer drops while it waits
// for l's keyframe: the request that started the wait was made by whoever
// set it up; every keyframeRetry of waiting it asks again.
func (d *DownTrack) awaitKeyframe(l *Layer) {
	now := time.Now()
	switch {
	case d.kfAsked.IsZero():
		d.kfAsked = now
	case now.Sub(d.kfAsked) >= keyframeRetry:
		d.kfAsked = now
		d.kfRetries.Add(1)
		l.RequestKeyframe()
	}
}

// Close detaches the DownTrack and stops its writer.
func (d *DownTrack) Close() {
	d.closeOnce.Do(func() {
		if t := d.src.Load(); t != nil {
			t.removeDown(d)
		}
		d.isShut.Store(true)
		close(d.closed)
	})
}

// isClosed is an atomic load: deliver asks it for every copy.
func (d *DownTrack) isClosed() bool { return d.isShut.Load() }

// Stats of what was sent to the subscriber and dropped for it.
func (d *DownTrack) Stats() (packets, bytes, drops uint64) {
	return d.packets.Load(), d.bytes.Load(), d.drops.Load()
}

// deliver writes a packet of l to the subscriber from the caller's
// goroutine (the layer's reader) when that keeps the order of what it
// sends: no packet waits for the writer goroutine and no other goroutine
// is writing to d. Otherwise it queues the packet. Writing in place saves
// a goroutine handoff per copy and leaves packets that arrive meanwhile in
// pion's receive buffer, where they wait at no cost, rather than in one
// queue per subscriber.
func (d *DownTrack) deliver(l *Layer, num uint64, q *sendBatch) {
	if d.pending.Load() == 0 && d.wmu.TryLock() {
		if d.pending.Load() == 0 {
			if !d.isClosed() {
				d.writePacket(l, num, q)
			}
			d.wmu.Unlock()
			return
		}
		d.wmu.Unlock()
	}
	d.enqueue(l, num)
}

// enqueue hands a packet to the writer without ever blocking the source.
func (d *DownTrack) enqueue(l *Layer, num uint64) {
	d.pending.Add(1)
	select {
	case d.queue <- queued{l: l, num: num}:
	default:
		d.pending.Add(-1)
		d.drops.Add(1)
		if d.kind == webrtc.RTPCodecTypeVideo && !d.needKeyframe.Swap(true) {
			l.RequestKeyframe()
		}
	}
}

// writeLoop writes what was queued. A packet counts as pending until it is
// written, so that deliver does not overtake it.
func (d *DownTrack) writeLoop() {
	for {
		select {
		case q := <-d.queue:
			d.writeQueued(q)
		case <-d.closed:
			return
		}
	}
}

// writeQueued writes one packet taken from the queue.
func (d *DownTrack) writeQueued(q queued) {
	d.wmu.Lock()
	d.writePacket(q.l, q.num, nil)
	d.pending.Add(-1)
	d.wmu.Unlock()
}

// detachFrom stops receiving l's packets unless l is still needed. The
// check and the removal hold subMu, as setTarget's change and attach do:
// otherwise a layer that became the target in between would lose its
// DownTrack for good.
func (d *DownTrack) detachFrom(l *Layer) {
	d.subMu.Lock()
	defer d.subMu.Unlock()
	if l == d.cur || l.idx == int(d.target.Load()) {
		return
	}
	if !l.downs.has(d) {
		return
	}
	if d.beforeDetach != nil {
		d.beforeDetach(l)
	}
	l.removeDown(d)
}

// writePacket copies one packet out of its layer's ring, rewrites it and
// writes it to the subscriber, or into q (sendbatch.go) when not nil.
// Allocation free.
func (d *DownTrack) writePacket(l *Layer, num uint64, q *sendBatch) {
	b := d.bind.Load()
	t := d.src.Load()
	if b == nil || t == nil || l.t != t || (d.ready != nil && !d.ready.Load()) {
		// pion drops what is written before SRTP is up, and says
		// nothing: forward nothing, so that video starts on a keyframe.
		return
	}
	if d.cur != nil && d.cur.t != t {
		d.cur = nil
		d.curIdx.Store(-1)
	}
	tgt := int(d.target.Load())
	if tgt < 0 {
		// Paused: nothing is forwarded; video resumes on a keyframe.
		if d.cur != nil {
			d.cur = nil
			d.curIdx.Store(-1)
		}
		d.detachFrom(l)
		return
	}
	if l != d.cur && l.idx != tgt {
		d.detachFrom(l)
		return
	}
	n, at, ok := l.ring.get(num, d.buf[:])
	if !ok {
		d.drops.Add(1)
		return
	}
	hl, err := d.hdr.Unmarshal(d.buf[:n])
	if err != nil {
		return
	}
	payload := d.buf[hl:n]
	video := d.kind == webrtc.RTPCodecTypeVideo
	switch {
	case l != d.cur:
		// l is the target layer: move to it on its keyframe.
		if video && !isKeyframe(d.codec.MimeType, payload) {
			d.awaitKeyframe(l)
			return
		}
		old := d.cur
		d.cur = l
		d.curIdx.Store(int32(l.idx))
		d.needKeyframe.Store(false)
		d.kfAsked = time.Time{}
		if d.started {
			d.resync.Store(true)
		}
		if old != nil {
			d.switches.Add(1)
			d.detachFrom(old)
		}
	case video && d.needKeyframe.Load():
		if !isKeyframe(d.codec.MimeType, payload) {
			d.awaitKeyframe(l)
			return
		}
		d.needKeyframe.Store(false)
		d.kfAsked = time.Time{}
		if d.started {
			d.resync.Store(true)
		}
	}
	marker := d.hdr.Marker
	if t.vp9 && l.svcLayers.Load() > 1 {
		drop, end := d.filterSpatial(l, payload)
		if drop {
			d.seqOff-- // the subscriber must not see a gap
			return
		}
		marker = marker || end
	}
	// One clock read per copy (monoNow): the rewrite, the NACK history,
	// the sender reports' anchor and the transport-wide stamp share it.
	now := monoNow()
	switch {
	case !d.started:
		d.started = true
		d.seqOff, d.tsOff = 0, 0
	case d.resync.Swap(false):
		// Continue right after the last packet sent, advancing the
		// timestamp by the time since then.
		wantSeq := d.lastOutSeq + 1
		elapsed := uint32(float64(now-d.lastSent)/1e9*float64(d.codec.ClockRate)) + 1
		wantTS := d.lastOutTS + elapsed
		d.seqOff = wantSeq - d.hdr.SequenceNumber
		d.tsOff = wantTS - d.hdr.Timestamp
	}
	d.hdr.SequenceNumber += d.seqOff
	d.hdr.Timestamp += d.tsOff
	d.hdr.SSRC = b.ssrc
	d.hdr.PayloadType = b.pt
	d.hdr.Marker = marker
	d.hdr.Extension = false
	d.hdr.ExtensionProfile = 0
	d.hdr.Extensions = d.hdr.Extensions[:0]
	advance := int16(d.hdr.SequenceNumber-d.lastOutSeq) > 0 || d.packets.Load() == 0
	if advance {
		d.lastOutSeq = d.hdr.SequenceNumber
		d.lastOutTS = d.hdr.Timestamp
		d.outTS.Store(d.lastOutTS)
		d.lastSent = now
	}
	d.remember(l, num, marker, now, advance)
	queued, err := d.writeRTP(b, &d.hdr, payload, q, txNote{d: d, at: at, made: now, n: n, octets: len(payload)})
	if err != nil {
		d.drops.Add(1)
		return
	}
	if !queued {
		d.sent(monoNow(), at, n, len(payload))
	}
}

// sent counts one copy written at now (monoNow), of a packet read at at,
// n bytes before encryption, octets of them payload.
func (d *DownTrack) sent(now, at int64, n, octets int) {
	d.delay.observe(now - at)
	d.packets.Add(1)
	d.bytes.Add(uint64(n))
	d.octets.Add(uint64(octets))
}

// sendsDirect reports whether d's connection is on the direct send path,
// whose writes never wait on pion.
func (d *DownTrack) sendsDirect() bool { return d.path != nil && d.path.Load() != nil }

// writeRTP sends one packet on the direct path when the connection has one
// (direct.go), queued in q when q is not nil, else through pion's RTP
// sender. queued: q counts note when it sends the packet.
func (d *DownTrack) writeRTP(b *binding, h *rtp.Header, payload []byte, q *sendBatch, note txNote) (queued bool, err error) {
	if d.path != nil {
		if p := d.path.Load(); p != nil {
			s := d.ds.Load()
			if s == nil {
				// The first write on the path (a connection gets its path
				// once): the writer and the NACK path may race to it.
				ns, err := newDirectSender(p, b.tcc)
				if err != nil {
					return false, err
				}
				if !d.ds.CompareAndSwap(nil, ns) {
					ns = d.ds.Load()
				}
				s = ns
			}
			return s.write(h, payload, q, note)
		}
	}
	_, err = b.writer.WriteRTP(h, payload)
	return false, err
}

// filterSpatial decides, for a VP9 SVC stream, whether a packet belongs to
// a spatial layer above the one forwarded (drop), and whether it ends the
// highest forwarded layer of its picture (end: set the marker). Moving down
// happens at the start of a picture, moving up on a keyframe.
func (d *DownTrack) filterSpatial(l *Layer, payload []byte) (drop, end bool) {
	v := &d.vp9
	if !v.parse(payload) || !v.hasLayer {
		return false, false
	}
	want := min(int(d.maxSpatial.Load()), int(l.svcLayers.Load())-1)
	if want != d.spatial && v.begin && v.sid == 0 {
		if want < d.spatial || !v.inter {
			d.spatial = want
		} else {
			l.RequestKeyframe()
		}
	}
	if v.sid > d.spatial {
		return true, false
	}
	return false, v.sid == d.spatial && v.end
}

// remember records where an outgoing sequence number came from, and, when
// the stream advanced, its timestamp and time for sender reports.
func (d *DownTrack) remember(l *Layer, num uint64, marker bool, now int64, advance bool) {
	d.hmu.Lock()
	e := &d.hist[d.hdr.SequenceNumber&d.hmask]
	*e = histEntry{out: d.hdr.SequenceNumber, valid: true, marker: marker, l: l, num: num, seqOff: d.seqOff, tsOff: d.tsOff, sentAt: now}
	if advance {
		d.srTS, d.srAt = d.hdr.Timestamp, now
	}
	d.hmu.Unlock()
}

// resend answers a NACK for one outgoing sequence number from the layer's
// ring, as RTX when negotiated. Allocation free.
func (d *DownTrack) resend(seq uint16) {
	b := d.bind.Load()
	if b == nil || d.isClosed() {
		return
	}
	now := monoNow()
	d.hmu.Lock()
	defer d.hmu.Unlock()
	e := &d.hist[seq&d.hmask]
	if !e.valid || e.out != seq || e.tries >= maxResends || now-e.sentAt < int64(nackResendInterval)<<e.tries {
		return
	}
	n, _, ok := e.l.ring.get(e.num, d.rbuf[:packetMTU])
	if !ok {
		return
	}
	hl, err := d.rhdr.Unmarshal(d.rbuf[:n])
	if err != nil {
		return
	}
	e.sentAt = now
	e.tries++
	h := &d.rhdr
	h.SequenceNumber += e.seqOff
	h.Timestamp += e.tsOff
	h.Marker = e.marker
	h.Extension = false
	h.ExtensionProfile = 0
	h.Extensions = h.Extensions[:0]
	payload := d.rbuf[hl:n]
	if b.rtxSSRC != 0 {
		// RFC 4588: the original sequence number, then the payload.
		copy(d.rbuf[hl+2:n+2], d.rbuf[hl:n])
		d.rbuf[hl], d.rbuf[hl+1] = byte(h.SequenceNumber>>8), byte(h.SequenceNumber)
		payload = d.rbuf[hl : n+2]
		d.rtxSeq++
		h.SequenceNumber = d.rtxSeq
		h.SSRC, h.PayloadType = b.rtxSSRC, b.rtxPT
	} else {
		h.SSRC, h.PayloadType = b.ssrc, b.pt
	}
	if _, err := d.writeRTP(b, h, payload, nil, txNote{}); err == nil {
		d.retx.Add(1)
	}
}

// canPad reports whether padding can probe bandwidth on this DownTrack
// (it needs RTX, so that the media sequence numbers are untouched).
func (d *DownTrack) canPad() bool {
	b := d.bind.Load()
	return b != nil && b.rtxSSRC != 0 && d.kind == webrtc.RTPCodecTypeVideo && d.packets.Load() > 0
}

// sendPadding sends about n bytes of RTX padding-only packets, which the
// receiver discards and the bandwidth estimator counts.
func (d *DownTrack) sendPadding(n int) {
	b := d.bind.Load()
	if b == nil || b.rtxSSRC == 0 || d.isClosed() {
		return
	}
	d.hmu.Lock()
	defer d.hmu.Unlock()
	h := &d.rhdr
	for sent := 0; sent < n; sent += len(d.pad) {
		*h = rtp.Header{Version: 2, Padding: true, PayloadType: b.rtxPT, SSRC: b.rtxSSRC, Timestamp: d.outTS.Load(), Extensions: h.Extensions[:0]}
		d.rtxSeq++
		h.SequenceNumber = d.rtxSeq
		if _, err := d.writeRTP(b, h, d.pad[:], nil, txNote{}); err != nil {
			return
		}
		d.padded.Add(uint64(len(d.pad)))
	}
}

// rtcpLoop drains RTCP from the subscriber (NOTES 14): NACKs are answered
// from the ring, keyframe requests go to the source, which throttles them.
// The compound packet is read in place (walkRTCP), without pion's
// per-packet structs.
func (d *DownTrack) rtcpLoop(sender *webrtc.RTPSender) {
	buf := make([]byte, packetMTU)
	for {
		n, _, err := sender.Read(buf)
		if err != nil {
			return
		}
		walkRTCP(buf[:n], d)
	}
}

// sends reports whether ssrc is d's media SSRC. rtcpKeyframe, rtcpNack
// and rtcpLoss act only on what is about it: a compound packet pion hands
// every stream it names may be about another DownTrack of the connection.
func (d *DownTrack) sends(ssrc uint32) bool {
	b := d.bind.Load()
	return b != nil && b.ssrc == ssrc
}

func (d *DownTrack) rtcpKeyframe(ssrc uint32) {
	if !d.sends(ssrc) {
		return
	}
	if t := d.src.Load(); t != nil {
		if l := t.layer(int(d.curIdx.Load())); l != nil {
			l.RequestKeyframe()
		} else if l := t.layer(int(d.target.Load())); l != nil {
			l.RequestKeyframe()
		}
	}
}

func (d *DownTrack) rtcpNack(ssrc uint32, seq uint16) {
	if !d.sends(ssrc) {
		return
	}
	d.nacks.Add(1)
	d.resend(seq)
}

func (d *DownTrack) rtcpREMB(bps uint64) {
	if d.onREMB != nil {
		d.onREMB(bps)
	}
}

func (d *DownTrack) rtcpLoss(ssrc uint32, fractionLost uint8) {
	if d.sends(ssrc) {
		d.loss.Store(uint32(fractionLost) + 1)
	}
}
