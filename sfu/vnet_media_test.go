package sfu

// The media side of the vnet tests: a seeded loss filter for the router,
// synthetic VP8 senders (one stream, or the layers of a simulcast track)
// and a recorder of what a subscriber's decoder would read.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/transport/v4/vnet"
	"github.com/pion/webrtc/v4"
)

// vnetLoss drops a fixed share of the RTP and RTCP (SRTP, SRTCP) packets
// from one address to another: STUN and DTLS pass, so only media after the
// connection is up is hit. Drops are random but seeded, and exact per
// block: in every block of lossBlock media packets exactly share*lossBlock
// are dropped, at shuffled positions (bursts of two or more happen), so the
// loss rate never drifts away from the intended one and runs repeat.
type vnetLoss struct {
	src, dst string

	mu    sync.Mutex
	rng   *rand.Rand
	block []bool
	next  int

	media, dropped atomic.Uint64
}

const lossBlock = 100

func newVnetLoss(src, dst string, percent int, seed uint64) *vnetLoss {
	l := &vnetLoss{src: src, dst: dst, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), block: make([]bool, lossBlock)}
	for i := 0; i < percent*lossBlock/100; i++ {
		l.block[i] = true
	}
	l.next = lossBlock // shuffle before first use
	return l
}

// filter is a vnet.ChunkFilter; false drops the chunk.
func (l *vnetLoss) filter(c vnet.Chunk) bool {
	if c.Network() != "udp" {
		return true
	}
	src, _ := c.SourceAddr().(*net.UDPAddr)
	dst, _ := c.DestinationAddr().(*net.UDPAddr)
	if src == nil || dst == nil || src.IP.String() != l.src || dst.IP.String() != l.dst {
		return true
	}
	data := c.UserData()
	if len(data) == 0 || data[0] < 128 || data[0] > 191 { // RFC 7983: RTP/RTCP is 128..191
		return true
	}
	l.media.Add(1)
	l.mu.Lock()
	if l.next == len(l.block) {
		l.rng.Shuffle(len(l.block), func(i, j int) { l.block[i], l.block[j] = l.block[j], l.block[i] })
		l.next = 0
	}
	drop := l.block[l.next]
	l.next++
	l.mu.Unlock()
	if drop {
		l.dropped.Add(1)
	}
	return !drop
}

// share is the fraction of media packets dropped so far.
func (l *vnetLoss) share() float64 {
	m := l.media.Load()
	if m == 0 {
		return 0
	}
	return float64(l.dropped.Load()) / float64(m)
}

// vnetLayer is one synthetic VP8 stream: a whole track, or one simulcast
// encoding of one. Every payload is a VP8 payload descriptor, a VP8 header
// byte whose low bit is 0 on keyframes (on a frame's first packet), then
// the layer's marker byte, then filler.
type vnetLayer struct {
	marker  byte
	bitrate int // bit/s
	track   *webrtc.TrackLocalStaticRTP
	exts    []vnetExt // set on every packet (mid, rid)

	keyReq atomic.Bool                         // a PLI or FIR arrived
	onRTCP atomic.Pointer[func([]rtcp.Packet)] // sees what drainRTCP reads
	sent   atomic.Uint64
	keys   atomic.Uint64

	pkt rtp.Packet
	buf []byte
}

const (
	vnetFPS        = 30
	vnetMaxPayload = 1000
	vnetKeyEvery   = time.Second
)

// drainRTCP reads a sender's RTCP until it ends (NOTES 14: the NACK
// responder only sees NACKs that are read) and turns keyframe requests into
// the next frame being a keyframe. read is sender.ReadRTCP or a
// ReadSimulcastRTCP of one RID.
func (v *vnetLayer) drainRTCP(read func() ([]rtcp.Packet, interceptor.Attributes, error)) {
	for {
		pkts, _, err := read()
		if err != nil {
			return
		}
		if f := v.onRTCP.Load(); f != nil {
			(*f)(pkts)
		}
		for _, p := range pkts {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				v.keyReq.Store(true)
			}
		}
	}
}

// sendVideo sends every layer's frames at vnetFPS with a keyframe every
// vnetKeyEvery (and after a keyframe request) until ctx ends. The layers
// share frame timing and RTP timestamps, as a simulcast encoder's do.
func sendVideo(ctx context.Context, layers ...*vnetLayer) {
	ts := rand.Uint32()
	for _, v := range layers {
		v.pkt = rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(rand.Uint32())}}
		v.buf = make([]byte, vnetMaxPayload)
	}
	tick := time.NewTicker(time.Second / vnetFPS)
	defer tick.Stop()
	var lastKey time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		periodic := now.Sub(lastKey) >= vnetKeyEvery
		if periodic {
			lastKey = now
		}
		for _, v := range layers {
			key := v.keyReq.Swap(false) || periodic
			if !v.frame(ts, key) {
				return
			}
		}
		ts += 90000 / vnetFPS
	}
}

// frame sends one frame in equal packets; false when the track is closed.
func (v *vnetLayer) frame(ts uint32, key bool) bool {
	frameBytes := max(v.bitrate/8/vnetFPS, 3)
	n := (frameBytes + vnetMaxPayload - 1) / vnetMaxPayload
	size := max(frameBytes/n, 3)
	if key {
		v.keys.Add(1)
	}
	for i := 0; i < n; i++ {
		p := v.buf[:size]
		p[0], p[1], p[2] = 0x00, 0x01, v.marker
		if i == 0 {
			p[0] = 0x10 // S=1, partition 0
			if key {
				p[1] = 0x00 // P=0: keyframe
			}
		}
		v.pkt.Header.Extension = false
		v.pkt.Header.Extensions = nil
		for _, e := range v.exts {
			if err := v.pkt.Header.SetExtension(e.id, e.value); err != nil {
				return false
			}
		}
		v.pkt.Timestamp = ts
		v.pkt.Marker = i == n-1
		v.pkt.Payload = p
		if err := v.track.WriteRTP(&v.pkt); err != nil {
			return false
		}
		v.pkt.SequenceNumber++
		v.sent.Add(1)
	}
	return true
}

// vnetRecv records what one subscriber's client reads from one remote
// track: which sequence numbers arrived (retransmissions and duplicates
// included, counted once) and which layer each carried, and the layer the
// stream is on over time (the layer of the newest packet: a late
// retransmission does not change it).
type vnetRecv struct {
	name  string
	start time.Time

	mu        sync.Mutex
	started   bool
	first     int64
	highest   int64
	layers    map[int64]byte // extended sequence number -> layer marker (0: padding)
	arrivals  int            // packets read, duplicates included
	current   byte
	since     time.Time // when current began
	last      time.Time // newest packet read
	changes   []vnetChange
	perLayer  map[byte]int // unique packets per layer
	firstAt   time.Time    // first packet read
	keyed     bool         // a keyframe was read: the decoder can start
	firstKey  int64        // its extended sequence number
	keyAt     time.Time
	beforeKey int            // packets read before it (undecodable)
	keys      []vnetKey      // every keyframe start read, in arrival order
	perSec    []map[byte]int // unique packets per layer in each second since the lab started
}

type vnetKey struct {
	seq int64
	at  time.Time
}

type vnetChange struct {
	at    time.Duration // since the lab started
	layer byte
	seq   int64
}

func newVnetRecv(name string, start time.Time) *vnetRecv {
	return &vnetRecv{name: name, start: start, layers: map[int64]byte{}, perLayer: map[byte]int{}}
}

// read reads a remote track until it ends.
func (r *vnetRecv) read(tr *webrtc.TrackRemote) {
	buf := make([]byte, 1500)
	var h rtp.Header
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		hl, err := h.Unmarshal(buf[:n])
		if err != nil {
			continue
		}
		end := n
		if h.Padding && end > hl {
			end -= int(buf[end-1])
		}
		var layer byte
		key := false
		if end-hl >= 3 {
			layer = buf[hl+2]
			key = buf[hl]&0x10 != 0 && buf[hl+1]&0x01 == 0 // our VP8: S=1 and P=0
		}
		r.add(h.SequenceNumber, layer, key)
	}
}

func (r *vnetRecv) add(seq uint16, layer byte, key bool) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.arrivals++
	r.last = now
	ext := int64(seq)
	if r.started {
		ext = r.highest + int64(int16(seq-uint16(r.highest)))
	} else {
		r.started, r.first, r.highest, r.firstAt = true, ext, ext, now
	}
	if key && !r.keyed {
		r.keyed, r.firstKey, r.keyAt = true, ext, now
	}
	if key {
		r.keys = append(r.keys, vnetKey{seq: ext, at: now})
	}
	if !r.keyed {
		r.beforeKey++
	}
	if _, dup := r.layers[ext]; !dup {
		r.layers[ext] = layer
		r.perLayer[layer]++
		sec := int(now.Sub(r.start) / time.Second)
		for len(r.perSec) <= sec {
			r.perSec = append(r.perSec, map[byte]int{})
		}
		r.perSec[sec][layer]++
	}
	if ext < r.first {
		r.first = ext
	}
	newest := ext >= r.highest
	if ext > r.highest {
		r.highest = ext
	}
	if newest && layer != 0 && layer != r.current {
		r.current = layer
		r.since = now
		r.changes = append(r.changes, vnetChange{at: now.Sub(r.start), layer: layer, seq: ext})
	}
}

// layer is the layer the stream is on, how long it has been on it, and how
// long ago the newest packet arrived.
func (r *vnetRecv) layer() (layer byte, on, idle time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.started {
		return 0, 0, time.Hour
	}
	now := time.Now()
	return r.current, now.Sub(r.since), now.Sub(r.last)
}

// count is the number of unique packets of one layer so far.
func (r *vnetRecv) count(layer byte) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.perLayer[layer]
}

// changesSince lists the layer changes after d (since the lab started).
func (r *vnetRecv) changesSince(d time.Duration) []vnetChange {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []vnetChange
	for _, c := range r.changes {
		if c.at > d {
			out = append(out, c)
		}
	}
	return out
}

// highestSeq is the newest extended sequence number read so far.
func (r *vnetRecv) highestSeq() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.highest
}

// keyAfter is the sequence number of the first keyframe read at least d
// after the first packet.
func (r *vnetRecv) keyAfter(d time.Duration) (int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range r.keys {
		if k.at.Sub(r.firstAt) >= d {
			return k.seq, true
		}
	}
	return 0, false
}

// delivery counts the unique sequence numbers in [from, upTo] and how many
// that range holds.
func (r *vnetRecv) delivery(from, upTo int64) (got, want int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if upTo < from {
		return 0, 0
	}
	for s := from; s <= upTo; s++ {
		if _, ok := r.layers[s]; ok {
			got++
		}
	}
	return got, int(upTo - from + 1)
}

// missing lists the sequence numbers in [from, upTo] never read, relative
// to from, at most max of them.
func (r *vnetRecv) missing(from, upTo int64, limit int) []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for s := from; s <= upTo && len(out) < limit; s++ {
		if _, ok := r.layers[s]; !ok {
			out = append(out, s-from)
		}
	}
	return out
}

// startup describes how the stream began: packets read before the first
// keyframe (a decoder drops them) and how long the keyframe took.
func (r *vnetRecv) startup() (beforeKey int, wait time.Duration, keyed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.beforeKey, r.keyAt.Sub(r.firstAt), r.keyed
}

// reads counts the packets read, duplicates included.
func (r *vnetRecv) reads() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.arrivals
}

// timeline is the layer history, e.g. "h@1.20s(seq 3) f@2.41s(seq 100)".
func (r *vnetRecv) timeline() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.changes) == 0 {
		return "nothing received"
	}
	var b strings.Builder
	for i, c := range r.changes {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%c@%.2fs(seq %d)", c.layer, c.at.Seconds(), c.seq-r.first)
	}
	return b.String()
}

// seconds is what arrived in each second since the lab started, e.g.
// "3s:f180 4s:f95,h12" (unique packets per layer).
func (r *vnetRecv) seconds() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for sec, m := range r.perSec {
		if len(m) == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%ds:", sec)
		first := true
		for _, l := range []byte{'f', 'h', 'q', 'v', 0} {
			if n := m[l]; n > 0 {
				if !first {
					b.WriteByte(',')
				}
				first = false
				if l == 0 {
					fmt.Fprintf(&b, "pad%d", n)
				} else {
					fmt.Fprintf(&b, "%c%d", l, n)
				}
			}
		}
	}
	return b.String()
}

// switchGaps checks that the stream is continuous across every layer
// switch: between the last packet of one layer and the first of the next
// (in sequence order) no sequence number is missing. It returns one line
// per switch that has a gap.
// switchGap is a hole in the sequence numbers where the layer changed.
type switchGap struct {
	from, to byte // layer markers
	missing  int
	desc     string
}

func (r *vnetRecv) switchGaps() []switchGap {
	r.mu.Lock()
	defer r.mu.Unlock()
	seqs := make([]int64, 0, len(r.layers))
	for s := range r.layers {
		if r.keyed && s >= r.firstKey {
			seqs = append(seqs, s)
		}
	}
	slices.Sort(seqs)
	var gaps []switchGap
	last := -1 // index of the newest non-padding packet
	for i, seq := range seqs {
		l := r.layers[seq]
		if l == 0 { // padding: counts for continuity only
			continue
		}
		if last >= 0 {
			prev := seqs[last]
			if pl := r.layers[prev]; pl != l {
				if missing := int(seq-prev) - (i - last); missing > 0 {
					gaps = append(gaps, switchGap{from: pl, to: l, missing: missing, desc: fmt.Sprintf("%c->%c between seq %d and %d: %d missing",
						pl, l, prev-r.first, seq-r.first, missing)})
				}
			}
		}
		last = i
	}
	return gaps
}

// vnetExt is one RTP header extension.
type vnetExt struct {
	id    uint8
	value []byte
}

// vnetSimulcastExts is the mid and rid header extensions a simulcast
// sender puts on its packets (browsers do; pion leaves it to the app).
func vnetSimulcastExts(tr *webrtc.RTPTransceiver, rid string) ([]vnetExt, error) {
	var midID, ridID int
	for _, e := range tr.Sender().GetParameters().HeaderExtensions {
		switch e.URI {
		case "urn:ietf:params:rtp-hdrext:sdes:mid":
			midID = e.ID
		case "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id":
			ridID = e.ID
		}
	}
	if midID == 0 || ridID == 0 || tr.Mid() == "" {
		return nil, fmt.Errorf("mid or rid header extension not negotiated (mid %d, rid %d, transceiver mid %q)", midID, ridID, tr.Mid())
	}
	return []vnetExt{{uint8(midID), []byte(tr.Mid())}, {uint8(ridID), []byte(rid)}}, nil
}

// total is how many distinct packets r read.
func (r *vnetRecv) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.layers)
}
