package loadtest

import (
	"context"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// Synthetic media: well-formed VP8 and Opus RTP whose payloads carry the
// send time (unix nanoseconds), so that a subscriber on the same machine
// measures the one-way forwarding latency of every packet.
//
// Video payload: a 2-byte prefix — the VP8 payload descriptor (S=1 on a
// frame's first packet) and a VP8 header byte whose low bit is 0 on
// keyframes — then the send time, then the layer's marker byte (0 without
// simulcast, else 'q', 'h' or 'f'), then filler. Audio payload: the send
// time, then filler.

const (
	videoFPS     = 30
	maxVideoLoad = 1100 // payload bytes per video packet
	videoHeader  = 11   // descriptor, VP8 byte, send time, layer marker
	audioEvery   = 20 * time.Millisecond
	audioPayload = 80
)

// Simulcast layers, lowest first: the top layer sends --video-bitrate, the
// others the share of it a browser's 720p ladder gives them (1.5M, 500k,
// 150k: a third and a tenth).
var simulcastLayers = []struct {
	rid           string
	width, height int
	share         float64 // of the top layer's bitrate
}{
	{"q", 320, 180, 0.1},
	{"h", 640, 360, 1.0 / 3},
	{"f", 1280, 720, 1},
}

// sendCounters count what publishers sent.
type sendCounters struct{ packets, bytes atomic.Uint64 }

// videoLayer is one encoding a publisher sends: its whole video track, or
// one simulcast layer of it.
type videoLayer struct {
	rid     string // "" without simulcast
	bitrate int
	track   *webrtc.TrackLocalStaticRTP
	exts    []headerExt // mid and rid, written into every packet (simulcast)

	active atomic.Bool // false while dynacast (set_layers) pauses the layer
	keyReq atomic.Bool // a PLI or FIR arrived, or the layer resumed

	pkt rtp.Packet
	buf []byte

	// the frame being sent: bytes left, whether its first packet went,
	// its timestamp and whether it is a keyframe
	left  int
	first bool
	ts    uint32
	key   bool
}

// headerExt is one RTP header extension.
type headerExt struct {
	id    uint8
	value []byte
}

func (v *videoLayer) marker() byte {
	if v.rid == "" {
		return 0
	}
	return v.rid[0]
}

// drainRTCP reads the layer's RTCP until it ends; keyframe requests make
// the next frame a keyframe, as an encoder does.
func (v *videoLayer) drainRTCP(read func() ([]rtcp.Packet, interceptor.Attributes, error)) {
	for {
		pkts, _, err := read()
		if err != nil {
			return
		}
		for _, p := range pkts {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				v.keyReq.Store(true)
			}
		}
	}
}

// setActive pauses or resumes the layer (dynacast); a resumed layer starts
// with a keyframe.
func (v *videoLayer) setActive(on bool) {
	if on && !v.active.Swap(true) {
		v.keyReq.Store(true)
	} else if !on {
		v.active.Store(false)
	}
}

// Pacing, as a browser's sender paces (libwebrtc's pacer): a frame's
// packets go out in bursts every paceInterval, at paceFactor times the
// video's bitrate, instead of all at once.
const (
	paceInterval = 5 * time.Millisecond
	paceFactor   = 2.5
)

// sendVideo sends every active layer's frames at 30 fps — bitrate/8/30
// bytes each, a keyframe every keyEvery and after a keyframe request —
// until ctx ends. The layers share frame timing and RTP timestamps, as a
// simulcast encoder's do. With pace, each frame's packets are spread over
// bursts (paceInterval, paceFactor); without, they go back to back.
func sendVideo(ctx context.Context, layers []*videoLayer, keyEvery time.Duration, pace bool, sc *sendCounters) {
	ts := rand.Uint32()
	total := 0
	for _, v := range layers {
		v.pkt = rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(rand.Uint32())}}
		v.buf = make([]byte, maxVideoLoad)
		for i := range v.buf {
			v.buf[i] = byte(i)
		}
		total += v.bitrate
	}
	budget := math.MaxInt
	if pace {
		budget = max(int(paceFactor*float64(total)/8*paceInterval.Seconds()), maxVideoLoad)
	}
	tick := time.NewTicker(time.Second / videoFPS)
	defer tick.Stop()
	var lastKey time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		periodic := now.Sub(lastKey) >= keyEvery
		if periodic {
			lastKey = now
		}
		for _, v := range layers {
			if v.active.Load() {
				v.start(ts, v.keyReq.Swap(false) || periodic)
			}
		}
		for {
			left := budget
			more := false
			for _, v := range layers {
				n, ok := v.send(left, sc)
				if !ok {
					return
				}
				left -= n
				more = more || v.left > 0
			}
			if !more {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(paceInterval):
			}
		}
		ts += 90000 / videoFPS
	}
}

// start begins a frame.
func (v *videoLayer) start(ts uint32, key bool) {
	v.left, v.first, v.ts, v.key = max(v.bitrate/8/videoFPS, videoHeader), true, ts, key
}

// send sends the frame's next packets, while budget (bytes) lasts and at
// least one: the bytes sent, and false once the track is closed.
func (v *videoLayer) send(budget int, sc *sendCounters) (sent int, ok bool) {
	for v.left > 0 && (sent == 0 || sent < budget) {
		n := min(v.left, maxVideoLoad)
		if sent > 0 && sent+n > budget {
			break
		}
		v.left -= n
		p := v.buf[:max(n, videoHeader)]
		p[0], p[1] = 0x00, 0x01
		if v.first {
			v.first = false
			p[0] = 0x10
			if v.key {
				p[1] = 0x00
			}
		}
		binary.BigEndian.PutUint64(p[2:10], uint64(time.Now().UnixNano()))
		p[10] = v.marker()
		if len(v.exts) > 0 {
			// Afresh per packet: pion's interceptors add their own
			// extensions (transport-cc) to the header they are given.
			v.pkt.Header.Extension, v.pkt.Header.Extensions = false, nil
			for _, e := range v.exts {
				if v.pkt.Header.SetExtension(e.id, e.value) != nil {
					return sent, false
				}
			}
		}
		v.pkt.Timestamp = v.ts
		v.pkt.Payload = p
		v.pkt.Marker = v.left == 0
		if v.track.WriteRTP(&v.pkt) != nil {
			return sent, false
		}
		v.pkt.SequenceNumber++
		sc.packets.Add(1)
		sc.bytes.Add(uint64(len(p) + 12))
		sent += len(p)
	}
	return sent, true
}

// sendAudio sends an 80-byte Opus packet every 20 ms until ctx ends.
func sendAudio(ctx context.Context, tr *webrtc.TrackLocalStaticRTP, sc *sendCounters) {
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(rand.Uint32()), Timestamp: rand.Uint32()}}
	buf := make([]byte, audioPayload)
	tick := time.NewTicker(audioEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		binary.BigEndian.PutUint64(buf[:8], uint64(time.Now().UnixNano()))
		pkt.Payload = buf
		if tr.WriteRTP(pkt) != nil {
			return
		}
		pkt.SequenceNumber++
		pkt.Timestamp += 960
		sc.packets.Add(1)
		sc.bytes.Add(uint64(len(buf) + 12))
	}
}

// maxSamples bounds the latency samples one track keeps (reservoir).
const maxSamples = 100_000

// receiver adds up what the subscribers of a run receive.
type receiver struct {
	bytes atomic.Uint64
	// layers counts video packets by the simulcast layer they carry
	// (index 0: no layer marker, 1-3: q, h, f).
	layers [4]atomic.Uint64
	// switches counts changes of the layer a subscriber's stream carries.
	switches atomic.Uint64
	// sampling is on during the measurement: latency samples are kept
	// only then.
	sampling atomic.Bool

	mu      sync.Mutex
	tracks  []*trackStats
	stopped bool
}

// trackStats is one received track's state; all but the atomic counters
// belong to its reading goroutine until done is closed.
type trackStats struct {
	expected atomic.Uint64
	// received counts the packets that arrived; lost the ones missing by
	// sequence number so far: a gap adds, a late arrival (NACK repair,
	// reordering) into a gap takes away.
	received, lost atomic.Uint64
	who            string // the subscribing client's identity

	video    bool
	started  bool
	first    int64 // extended sequence numbers
	highest  int64
	layer    byte // marker of the newest packet
	hasLayer bool
	seen     int
	got      [seqWindow / 64]uint64 // which of the last seqWindow sequence numbers arrived
	samples  []uint32               // latency, microseconds
	done     chan struct{}
}

// read reads one remote track of subscriber who until it ends.
func (r *receiver) read(tr *webrtc.TrackRemote, who string) {
	ts := &trackStats{done: make(chan struct{}), video: tr.Kind() == webrtc.RTPCodecTypeVideo, who: who}
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.tracks = append(r.tracks, ts)
	r.mu.Unlock()
	defer close(ts.done)
	buf := make([]byte, 1500)
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		r.observe(ts, buf[:n], time.Now().UnixNano())
	}
}

// observe counts one packet the subscriber read at (unix ns): loss from the
// gaps in the sequence numbers the server gave this subscriber (continuous
// across layer switches, so a switch is not loss), the layer it carries,
// and its latency.
func (r *receiver) observe(ts *trackStats, pkt []byte, at int64) {
	var h rtp.Header
	hl, err := h.Unmarshal(pkt)
	if err != nil {
		return
	}
	// Extend the 16-bit sequence number by its distance to the highest so
	// far (reordering and wrap-around both fine).
	ext := int64(h.SequenceNumber)
	if ts.started {
		ext = ts.highest + int64(int16(h.SequenceNumber-uint16(ts.highest)))
	} else {
		ts.first, ts.highest, ts.started = ext, ext, true
	}
	newest := ext >= ts.highest
	switch {
	case ext > ts.highest:
		if gap := ext - ts.highest - 1; gap > 0 {
			ts.lost.Add(uint64(gap))
		}
		for s := max(ts.highest+1, ext-seqWindow+1); s < ext; s++ {
			ts.mark(s, false)
		}
		ts.highest = ext
	case ext < ts.first || ts.highest-ext >= seqWindow:
		return // too old to tell
	case ts.has(ext):
		return // a duplicate
	case ext < ts.highest:
		ts.lost.Add(^uint64(0)) // a late arrival fills its gap
	}
	ts.mark(ext, true)
	ts.expected.Store(uint64(ts.highest - ts.first + 1))
	ts.received.Add(1)
	r.bytes.Add(uint64(len(pkt)))
	payload := pkt[hl:]
	if h.Padding && len(payload) > 0 {
		payload = payload[:max(len(payload)-int(payload[len(payload)-1]), 0)]
	}
	off := 0
	if ts.video {
		off = 2
		if len(payload) < videoHeader {
			return
		}
		m := payload[10]
		r.layers[layerIndex(m)].Add(1)
		if newest { // a late retransmission does not switch
			if ts.hasLayer && ts.layer != m {
				r.switches.Add(1)
			}
			ts.layer, ts.hasLayer = m, true
		}
	}
	if len(payload) < off+8 || !r.sampling.Load() {
		return
	}
	sent := int64(binary.BigEndian.Uint64(payload[off : off+8]))
	lat := (at - sent) / 1000
	if lat < 0 || lat > 60_000_000 {
		return // not one of ours
	}
	ts.seen++
	if len(ts.samples) < maxSamples {
		ts.samples = append(ts.samples, uint32(lat))
	} else if j := rand.IntN(ts.seen); j < maxSamples {
		ts.samples[j] = uint32(lat)
	}
}

// seqWindow is how far back a late packet can still fill its gap.
const seqWindow = 1024

func (ts *trackStats) has(ext int64) bool {
	i := uint64(ext) % seqWindow
	return ts.got[i/64]&(1<<(i%64)) != 0
}

func (ts *trackStats) mark(ext int64, on bool) {
	i := uint64(ext) % seqWindow
	if on {
		ts.got[i/64] |= 1 << (i % 64)
	} else {
		ts.got[i/64] &^= 1 << (i % 64)
	}
}

// layerIndex maps a payload's layer marker to receiver.layers.
func layerIndex(m byte) int {
	for i, l := range simulcastLayers {
		if m == l.rid[0] {
			return i + 1
		}
	}
	return 0
}

// layerCounts is the video packets received so far by layer (index 0: no
// layer marker, then q, h, f).
func (r *receiver) layerCounts() [4]uint64 {
	var c [4]uint64
	for i := range c {
		c[i] = r.layers[i].Load()
	}
	return c
}

// packetCount is packets expected from the sequence numbers, received,
// and lost (net of late arrivals; the counters wrap, so subtract two
// readings with since).
type packetCount struct{ expected, received, lost uint64 }

func (c *packetCount) add(o packetCount) {
	c.expected += o.expected
	c.received += o.received
	c.lost += o.lost
}

// counts is the subscribers' packets so far, in total and by identity,
// from one reading of every track's counters: the total is the sum of the
// parts.
func (r *receiver) counts() (total packetCount, per map[string]packetCount) {
	r.mu.Lock()
	defer r.mu.Unlock()
	per = map[string]packetCount{}
	for _, t := range r.tracks {
		c := packetCount{t.expected.Load(), t.received.Load(), t.lost.Load()}
		total.add(c)
		sub := per[t.who]
		sub.add(c)
		per[t.who] = sub
	}
	return total, per
}

// finish waits (at most wait) for the read loops, whose tracks must be
// closed, and returns every latency sample.
func (r *receiver) finish(wait time.Duration) []uint32 {
	r.mu.Lock()
	r.stopped = true
	tracks := append([]*trackStats(nil), r.tracks...)
	r.mu.Unlock()
	deadline := time.After(wait)
	var all []uint32
	for _, t := range tracks {
		select {
		case <-t.done:
			all = append(all, t.samples...)
		case <-deadline:
			return all
		}
	}
	return all
}
