package sfu

import (
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"
)

// maxLayers is the most simulcast encodings a track may have.
const maxLayers = 3

// Default bitrates (bits/s) assumed for a layer before it has been measured
// or described, lowest first.
var defaultLayerRates = [maxLayers]uint64{150_000, 500_000, 1_500_000}

// Layer is one RTP stream of a Track: the whole track, or one simulcast
// encoding (RID). Its read loop is the only reader of the remote stream; it
// stores each packet in the ring and hands the packet's number to the
// DownTracks that forward this layer, without blocking.
type Layer struct {
	t       *Track
	idx     int // quality rank: 0 is the lowest
	rid     string
	remote  *webrtc.TrackRemote
	sendPLI func() // nil for audio

	ring ring

	downs downSet // the DownTracks forwarding this layer

	lastPLI    atomic.Int64 // unix nanoseconds
	pendingPLI atomic.Bool

	packets atomic.Uint64
	bytes   atomic.Uint64
	plis    atomic.Uint64
	lastAt  atomic.Int64  // unix nanoseconds of the last packet
	rate    atomic.Uint64 // bits/s over the last measured second; the last one seen while paused
	// declared by the publisher (0: unknown)
	maxBitrate uint64
	// size of the video, from keyframes (VP8) or the publisher's
	// description; svc holds the sizes of VP9 spatial layers
	width, height atomic.Uint32
	svc           [maxLayers]struct{ w, h atomic.Uint32 }
	svcLayers     atomic.Int32 // number of VP9 spatial layers seen (0: not SVC)

	nack      *nackGen // video: what arrived, to ask for the rest
	nacksSent atomic.Uint64
	nackAt    int64    // under fmu: monotonic ns losses were last looked at
	nackSeqs  []uint16 // under fmu: scratch

	// The read loop forwards, and so does the media socket's reader once
	// the direct receive path has the stream (recv.go): fmu makes them
	// take turns while pion still holds packets read before the hand-over.
	fmu       sync.Mutex
	lastNum   uint64 // under fmu
	rateStart int64  // under fmu
	rateBytes uint64 // under fmu
	rx        rxStats
	clock     uint64 // the codec's clock rate (Hz), for the jitter

	// the fan-out goroutine of the direct receive path (handOff)
	fanOnce  sync.Once // makes fan
	fan      chan uint64
	fanRun   atomic.Bool  // a fan-out goroutine runs
	fanning  atomic.Int32 // packets handed off and not yet written
	fanDrops atomic.Uint64
	fanBusy  atomic.Pointer[atomic.Int64] // where fan-out time is added (rtcpTap.handedNs)
	fanIO    atomic.Pointer[udpIO]        // the socket the fan-out goroutine batches its sends on; nil: none
}

func newLayer(t *Track, idx int, rid string, sendPLI func()) *Layer {
	l := &Layer{t: t, idx: idx, rid: rid, sendPLI: sendPLI, ring: newRing(audioRingSize, audioArenaStart), clock: uint64(t.codec.ClockRate)}
	if t.kind == webrtc.RTPCodecTypeVideo {
		l.ring = newRing(ringSize, videoArenaStart)
		l.nack = &nackGen{} // before the read loop can start
	}
	return l
}

// RID is the simulcast encoding id ("" when the track is not simulcast).
func (l *Layer) RID() string { return l.rid }

// Bitrate is the layer's measured bitrate, or its declared or default one
// before it has been measured.
func (l *Layer) Bitrate() uint64 {
	if r := l.rate.Load(); r > 0 {
		return r
	}
	if l.maxBitrate > 0 {
		return l.maxBitrate
	}
	if l.t.kind == webrtc.RTPCodecTypeAudio {
		return 40_000
	}
	n := l.t.layerCount()
	return defaultLayerRates[maxLayers-n+min(l.idx, n-1)]
}

// live reports whether the layer received a packet in the last second
// (the publisher may pause a layer nobody wants).
func (l *Layer) live(now int64) bool {
	return now-l.lastAt.Load() < int64(time.Second)
}

func (l *Layer) readLoop() {
	defer l.t.layerEnded(l)
	buf := make([]byte, packetMTU)
	first := true
	for {
		n, _, err := l.remote.Read(buf)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				l.t.log.Debug("track read ended", "track", l.t.sid, "rid", l.rid, "err", err)
			}
			return
		}
		select {
		case <-l.t.done:
			return
		default:
		}
		l.forward(buf[:n])
		if first {
			first = false
			if f := l.t.onFirst; f != nil {
				f(l) // the direct receive path may take the stream from here on
			}
		}
	}
}

// inlineFanout is how many copies of a packet its layer's reader writes
// itself at most when there are several Ps (DownTrack.deliver); on one P
// it writes them all. 256 copies of a video packet are about 1.5 ms of
// CPU, a quarter of a core at 1.7 Mbps: a room of 200 (the audio room of
// docs/performance.md, where ten readers already keep two Ps busy) is
// written in place, while the rest of a publisher's 3000 viewers is
// queued for their writer goroutines, so that its fan-out spreads over
// the cores.
const inlineFanout = 256

// forward stores one packet and queues it to every DownTrack of the layer.
// It is the per-packet hot path: no allocation; fmu is held across the
// writes, but only the hand-over to the direct receive path and the
// once-a-second receiver report ever wait for it.
func (l *Layer) forward(pkt []byte) { l.forwardOn(pkt, 0, false, false, nil) }

// forwardOn is forward of a packet that arrived at at (monoNow's clock;
// 0: now); onSocket says it runs on the media socket's reader (the direct
// receive path), which must never wait for a write pion may block on
// (ICE-TCP): DownTracks not on the direct send path get the packet
// through their writer's queue. See socketFanout for crowded. The copies
// written in place go into q when it is not nil (the reader's batch).
func (l *Layer) forwardOn(pkt []byte, at int64, onSocket, crowded bool, q *sendBatch) {
	if len(pkt) < 12 {
		return
	}
	l.fmu.Lock()
	defer l.fmu.Unlock()
	now := time.Now().UnixNano()
	mono := at
	if mono == 0 {
		mono = monoNow()
	}
	l.packets.Add(1)
	l.bytes.Add(uint64(len(pkt)))
	l.lastAt.Store(now)
	l.measure(now, len(pkt))
	t := l.t
	switch {
	case t.kind == webrtc.RTPCodecTypeAudio:
		if t.levelExt != 0 {
			if lvl, ok := audioLevel(pkt, t.levelExt); ok {
				t.addLevel(lvl)
			}
		}
	case t.vp9:
		l.inspectVP9(pkt)
	case t.vp8:
		l.inspectVP8(pkt)
	}
	seq := uint16(pkt[2])<<8 | uint16(pkt[3])
	if l.nack != nil {
		l.nack.received(seq)
		l.askLost(now, mono)
	}
	l.rx.update(seq, binary.BigEndian.Uint32(pkt[4:8]), rtpTime(mono, l.clock))
	l.lastNum++
	num := l.lastNum
	l.ring.put(num, pkt, mono)
	if t.muted.Load() {
		return
	}
	if onSocket {
		downs := l.downs.load()
		if crowded || len(downs) > socketFanout || l.fanning.Load() > 0 {
			// What the reader wrote in place goes first: the fan-out
			// goroutine's batch must not overtake it.
			if q != nil {
				q.flushLocked(l)
			}
			l.handOff(num)
			return
		}
		if q != nil && l.nack != nil && (len(downs) >= holdFanout || q.holds(l)) {
			q.hold(l, num) // fanned out at the reader's next send
			return
		}
		nums := [1]uint64{num}
		l.fanOutSocket(downs, nums[:], q)
		return
	}
	nums := [1]uint64{num}
	l.fanOut(nums[:], nil)
}

// fanOutHeld writes the held packets nums, in order, to the layer's
// DownTracks, one DownTrack at a time (sendbatch.go), into the reader's
// batch q. fmu is held as forwardOn holds it.
func (l *Layer) fanOutHeld(nums []uint64, q *sendBatch) {
	l.fmu.Lock()
	l.fanOutSocket(l.downs.load(), nums, q)
	l.fmu.Unlock()
}

// fanOutSocket is the media socket reader's fan-out of nums: in place to
// the DownTracks on the direct send path, through their writer's queue to
// the others.
func (l *Layer) fanOutSocket(downs []*DownTrack, nums []uint64, q *sendBatch) {
	for _, d := range downs {
		if d.sendsDirect() {
			for _, num := range nums {
				d.deliver(l, num, q)
			}
		} else {
			for _, num := range nums {
				d.enqueue(l, num)
			}
		}
	}
}

// socketFanout is how many copies of a packet the media socket's reader
// writes itself at most (the direct receive path), in place, without a
// goroutine hand-off. A larger room's packet is handed to the layer's
// fan-out goroutine, which spreads the rest over the cores as a read loop
// does (inlineFanout); so is every packet while the reader is busy more
// than half the time (crowded, counting the fan-outs it handed off, so
// that it stays crowded while handing off is what keeps it free), so that
// many rooms' fan-outs do not queue behind one reader. Alternated runs (docs/performance.md) had writing in
// place ahead of handing off from 16 copies up: 6-8% less CPU with 50
// subscribers, the same in the saturated audio room, which is crowded.
const socketFanout = inlineFanout

// fanQueue is how many packets a layer's fan-out goroutine may be behind
// (video at 1.7 Mbit/s: 0.8 s; audio: 2.5 s). Past that an overloaded
// server drops rather than let the delay grow.
const fanQueue = 128

// fanIdle: a fan-out goroutine with nothing to do for this long ends,
// and its batch goes with it; the next hand-off starts another.
const fanIdle = 2 * time.Second

// handOff queues packet num for the layer's fan-out goroutine, starting
// one if none runs.
func (l *Layer) handOff(num uint64) {
	l.fanOnce.Do(func() { l.fan = make(chan uint64, fanQueue) })
	l.fanning.Add(1)
	select {
	case l.fan <- num:
		if !l.fanRun.Load() && l.fanRun.CompareAndSwap(false, true) {
			go l.fanLoop()
		}
	default:
		l.fanning.Add(-1)
		l.fanDrops.Add(1)
	}
}

// fanLoop writes what the reader handed off, batching the copies
// (sendbatch.go) until its queue is empty. The batch goes out before the
// last packet stops counting as handed off, so that the reader, which
// writes in place once nothing is, cannot overtake it. It ends after
// fanIdle without work, or with the track.
func (l *Layer) fanLoop() {
	q := newSendBatch(l.fanIO.Load()) // nil without batched I/O
	var nums [heldSlots]uint64
	last := monoNow()
	idle := time.NewTimer(fanIdle)
	defer idle.Stop()
	for {
		select {
		case num := <-l.fan:
			start := monoNow()
			// With a batch, what else of a video layer's is queued goes
			// with it, written subscriber by subscriber (sendbatch.go).
			nums[0] = num
			k := 1
		more:
			for q != nil && l.nack != nil && k < len(nums) {
				select {
				case nums[k] = <-l.fan:
					k++
				default:
					break more
				}
			}
			l.fanOut(nums[:k], q)
			if q != nil && len(l.fan) == 0 {
				q.flush()
			}
			l.fanning.Add(-int32(k))
			last = monoNow()
			if b := l.fanBusy.Load(); b != nil {
				b.Add(last - start)
			}
		case <-idle.C:
			if el := time.Duration(monoNow() - last); el < fanIdle {
				idle.Reset(fanIdle - el)
				continue
			}
			l.fanRun.Store(false)
			// A packet handed off while this goroutine still counted as
			// running is this goroutine's to write.
			if len(l.fan) == 0 || !l.fanRun.CompareAndSwap(false, true) {
				return
			}
			last = monoNow()
			idle.Reset(fanIdle)
		case <-l.t.done:
			return
		}
	}
}

// fanOut writes packets nums, in order, to the layer's DownTracks, one
// DownTrack at a time (into q when not nil), or queues them to their
// writers.
func (l *Layer) fanOut(nums []uint64, q *sendBatch) {
	downs := l.downs.load()
	inline := len(downs)
	// GOMAXPROCS(0) takes the scheduler's lock: only a room larger than
	// inlineFanout asks.
	if inline > inlineFanout && runtime.GOMAXPROCS(0) > 1 {
		inline = inlineFanout
	}
	// The rest first, so that other Ps start on it while this one writes.
	for _, d := range downs[inline:] {
		for _, num := range nums {
			d.enqueue(l, num)
		}
	}
	for _, d := range downs[:inline] {
		for _, num := range nums {
			d.deliver(l, num, q)
		}
	}
}

// measure keeps the bitrate over windows of about a second.
func (l *Layer) measure(now int64, n int) {
	if l.rateStart == 0 {
		l.rateStart = now
	}
	l.rateBytes += uint64(n)
	if el := now - l.rateStart; el >= int64(time.Second) {
		l.rate.Store(l.rateBytes * 8 * uint64(time.Second) / uint64(el))
		l.rateStart, l.rateBytes = now, 0
	}
}

// inspectVP8 reads the frame size from keyframes.
func (l *Layer) inspectVP8(pkt []byte) {
	hl := rtpHeaderLen(pkt)
	if hl <= 0 {
		return
	}
	if w, h, ok := vp8KeyframeSize(pkt[hl:]); ok {
		l.width.Store(uint32(w))
		l.height.Store(uint32(h))
	}
}

// inspectVP9 reads the spatial layer sizes from the scalability structure
// that VP9 keyframes carry.
func (l *Layer) inspectVP9(pkt []byte) {
	hl := rtpHeaderLen(pkt)
	if hl <= 0 {
		return
	}
	var d vp9Desc
	if !d.parse(pkt[hl:]) || !d.hasSS {
		return
	}
	l.svcLayers.Store(int32(min(d.ssLayers, maxLayers)))
	for i := 0; i < min(d.ssLayers, maxLayers); i++ {
		l.svc[i].w.Store(uint32(d.ssW[i]))
		l.svc[i].h.Store(uint32(d.ssH[i]))
	}
	if d.ssLayers > 0 {
		top := min(d.ssLayers, maxLayers) - 1
		l.width.Store(uint32(d.ssW[top]))
		l.height.Store(uint32(d.ssH[top]))
	}
}

func (l *Layer) addDown(d *DownTrack)    { l.downs.add(d) }
func (l *Layer) removeDown(d *DownTrack) { l.downs.remove(d) }

// RequestKeyframe asks the publisher for a keyframe on this layer, at most
// once per keyframeInterval; a request inside the interval is sent when it
// ends.
func (l *Layer) RequestKeyframe() {
	if l.sendPLI == nil {
		return
	}
	now := time.Now().UnixNano()
	last := l.lastPLI.Load()
	wait := time.Duration(last + int64(keyframeInterval) - now)
	if wait <= 0 {
		if l.lastPLI.CompareAndSwap(last, now) {
			l.plis.Add(1)
			l.sendPLI()
		}
		return
	}
	if l.pendingPLI.CompareAndSwap(false, true) {
		time.AfterFunc(wait, func() {
			l.pendingPLI.Store(false)
			select {
			case <-l.t.done:
				return
			default:
			}
			l.lastPLI.Store(time.Now().UnixNano())
			l.plis.Add(1)
			l.sendPLI()
		})
	}
}
