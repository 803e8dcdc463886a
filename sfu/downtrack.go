package sfu

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// queueLen is how many packets a subscriber may fall behind before the SFU
// drops for it (and, for video, resumes at the next keyframe).
const queueLen = 256

type queued struct {
	t   *Track
	num uint64
}

type binding struct {
	ssrc   uint32
	pt     uint8
	writer webrtc.TrackLocalWriter
}

// DownTrack is one subscriber's copy of a Track. It implements
// webrtc.TrackLocal. It rewrites SSRC, payload type, sequence numbers and
// timestamps so that the subscriber sees one continuous stream even when the
// source changes (Switch) or packets are dropped for it.
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

	// writer goroutine state
	buf        [packetMTU]byte
	hdr        rtp.Header
	started    bool
	seqOff     uint16
	tsOff      uint32
	lastOutSeq uint16
	lastOutTS  uint32
	lastSent   time.Time

	packets atomic.Uint64
	bytes   atomic.Uint64
	drops   atomic.Uint64
	nacks   atomic.Uint64
	loss    atomic.Uint32 // 1 + the last fraction lost reported (x/256); 0: no report

	closed    chan struct{}
	closeOnce sync.Once
}

// NewDownTrack makes a subscriber copy of t. Call Run to start its writer.
func NewDownTrack(t *Track, streamID string) *DownTrack {
	d := &DownTrack{
		id:       t.SID(),
		streamID: streamID,
		kind:     t.Kind(),
		codec:    t.Codec(),
		queue:    make(chan queued, queueLen),
		closed:   make(chan struct{}),
	}
	d.src.Store(t)
	if d.kind == webrtc.RTPCodecTypeVideo {
		d.needKeyframe.Store(true)
	}
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

// Bind is called by pion when the subscriber's transceiver starts.
func (d *DownTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	for _, c := range ctx.CodecParameters() {
		if strings.EqualFold(c.MimeType, d.codec.MimeType) && fmtpCompatible(c.SDPFmtpLine, d.codec.SDPFmtpLine, d.codec.MimeType) {
			d.bind.Store(&binding{ssrc: uint32(ctx.SSRC()), pt: uint8(c.PayloadType), writer: ctx.WriteStream()})
			if d.kind == webrtc.RTPCodecTypeVideo {
				d.needKeyframe.Store(true)
				if t := d.src.Load(); t != nil {
					t.RequestKeyframe()
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
// sender, when not nil, is drained for RTCP: keyframe requests go upstream.
func (d *DownTrack) Run(sender *webrtc.RTPSender) {
	go d.writeLoop()
	if sender != nil {
		go d.rtcpLoop(sender)
	}
	if t := d.src.Load(); t != nil {
		t.addDown(d)
		go d.watch(t)
	}
}

// watch detaches from a source that ended.
func (d *DownTrack) watch(t *Track) {
	select {
	case <-t.Done():
		t.removeDown(d)
	case <-d.closed:
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
	if d.kind == webrtc.RTPCodecTypeVideo {
		d.needKeyframe.Store(true)
		t.RequestKeyframe()
	}
	t.addDown(d)
	go d.watch(t)
}

// Close detaches the DownTrack and stops its writer.
func (d *DownTrack) Close() {
	d.closeOnce.Do(func() {
		if t := d.src.Load(); t != nil {
			t.removeDown(d)
		}
		close(d.closed)
	})
}

// Stats of what was sent to the subscriber and dropped for it.
func (d *DownTrack) Stats() (packets, bytes, drops uint64) {
	return d.packets.Load(), d.bytes.Load(), d.drops.Load()
}

// enqueue hands a packet to the writer without ever blocking the source.
func (d *DownTrack) enqueue(t *Track, num uint64) {
	select {
	case d.queue <- queued{t: t, num: num}:
	default:
		d.drops.Add(1)
		if d.kind == webrtc.RTPCodecTypeVideo && !d.needKeyframe.Swap(true) {
			t.RequestKeyframe()
		}
	}
}

func (d *DownTrack) writeLoop() {
	for {
		select {
		case q := <-d.queue:
			d.writePacket(q.t, q.num)
		case <-d.closed:
			return
		}
	}
}

// writePacket copies one packet out of the source ring, rewrites it and
// writes it to the subscriber. Allocation free.
func (d *DownTrack) writePacket(t *Track, num uint64) {
	b := d.bind.Load()
	if b == nil || t != d.src.Load() {
		return
	}
	n, ok := t.ring.get(num, d.buf[:])
	if !ok {
		d.drops.Add(1)
		return
	}
	hl, err := d.hdr.Unmarshal(d.buf[:n])
	if err != nil {
		return
	}
	payload := d.buf[hl:n]
	if d.kind == webrtc.RTPCodecTypeVideo && d.needKeyframe.Load() {
		if !isKeyframe(d.codec.MimeType, payload) {
			return
		}
		d.needKeyframe.Store(false)
		if d.started {
			d.resync.Store(true)
		}
	}
	now := time.Now()
	switch {
	case !d.started:
		d.started = true
		d.seqOff, d.tsOff = 0, 0
	case d.resync.Swap(false):
		// Continue right after the last packet sent, advancing the
		// timestamp by the wall time since then.
		wantSeq := d.lastOutSeq + 1
		elapsed := uint32(now.Sub(d.lastSent).Seconds()*float64(d.codec.ClockRate)) + 1
		wantTS := d.lastOutTS + elapsed
		d.seqOff = wantSeq - d.hdr.SequenceNumber
		d.tsOff = wantTS - d.hdr.Timestamp
	}
	d.hdr.SequenceNumber += d.seqOff
	d.hdr.Timestamp += d.tsOff
	d.hdr.SSRC = b.ssrc
	d.hdr.PayloadType = b.pt
	d.hdr.Extension = false
	d.hdr.ExtensionProfile = 0
	d.hdr.Extensions = d.hdr.Extensions[:0]
	if int16(d.hdr.SequenceNumber-d.lastOutSeq) > 0 || d.packets.Load() == 0 {
		d.lastOutSeq = d.hdr.SequenceNumber
		d.lastOutTS = d.hdr.Timestamp
		d.lastSent = now
	}
	if _, err := b.writer.WriteRTP(&d.hdr, payload); err != nil {
		d.drops.Add(1)
		return
	}
	d.packets.Add(1)
	d.bytes.Add(uint64(n))
}

// rtcpLoop drains RTCP from the subscriber (NOTES 14) and passes keyframe
// requests to the source, which throttles them.
func (d *DownTrack) rtcpLoop(sender *webrtc.RTPSender) {
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range pkts {
			switch p := p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				if t := d.src.Load(); t != nil {
					t.RequestKeyframe()
				}
			case *rtcp.TransportLayerNack:
				for _, pair := range p.Nacks {
					d.nacks.Add(uint64(len(pair.PacketList())))
				}
			case *rtcp.ReceiverReport:
				if b := d.bind.Load(); b != nil {
					for _, r := range p.Reports {
						if r.SSRC == uint32(b.ssrc) {
							d.loss.Store(uint32(r.FractionLost) + 1)
						}
					}
				}
			}
		}
	}
}
