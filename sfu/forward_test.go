package sfu

import (
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// fakeWriter records what a DownTrack writes, without allocating.
type fakeWriter struct {
	n       int
	lastSeq uint16
	lastTS  uint32
	ssrc    uint32
	pt      uint8
	ext     bool
	size    int
}

func (w *fakeWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	w.n++
	w.lastSeq, w.lastTS, w.ssrc, w.pt, w.ext = h.SequenceNumber, h.Timestamp, h.SSRC, h.PayloadType, h.Extension
	w.size = len(payload)
	return len(payload), nil
}

func (w *fakeWriter) Write(b []byte) (int, error) { return len(b), nil }

var vp8 = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}

func testTrack() *Track {
	return newTrack("cid", webrtc.RTPCodecTypeVideo, vp8, func() {}, slog.Default())
}

// bound makes a DownTrack of t bound to a fake writer, without a writer
// goroutine: tests drive writePacket directly.
func bound(t *Track, ssrc uint32) (*DownTrack, *fakeWriter) {
	d := NewDownTrack(t, "stream")
	w := &fakeWriter{}
	d.bind.Store(&binding{ssrc: ssrc, pt: 96, writer: w})
	t.addDown(d)
	t.layer(0).addDown(d)
	return d, w
}

// drain writes every queued packet of d, as its writer goroutine would.
func drain(d *DownTrack) {
	for {
		select {
		case q := <-d.queue:
			d.writeQueued(q)
		default:
			return
		}
	}
}

func packet(seq uint16, ts uint32, key bool, size int) []byte {
	payload := make([]byte, size)
	payload[0] = 0x10 // VP8: S=1, PID=0
	if !key {
		payload[1] = 0x01 // P=1: inter frame
	}
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: ts, SSRC: 1234,
		Extension: true, ExtensionProfile: 0xBEDE}, Payload: payload}
	_ = p.SetExtension(1, []byte{0x42})
	b, _ := p.Marshal()
	return b
}

func TestDownTrackWaitsForKeyframeAndRewrites(t *testing.T) {
	tr := testTrack()
	tr.sid = "TR_x"
	d, w := bound(tr, 999)
	tr.forward(packet(100, 1000, false, 200))
	drain(d)
	if w.n != 0 {
		t.Fatalf("sent %d packets before a keyframe", w.n)
	}
	tr.forward(packet(101, 1000, true, 200))
	tr.forward(packet(102, 4000, false, 200))
	drain(d)
	if w.n != 2 || w.lastSeq != 102 || w.lastTS != 4000 {
		t.Fatalf("got n=%d seq=%d ts=%d, want 2 packets ending at seq 102 ts 4000", w.n, w.lastSeq, w.lastTS)
	}
	if w.ssrc != 999 || w.pt != 96 || w.ext {
		t.Fatalf("not rewritten: ssrc=%d pt=%d ext=%v", w.ssrc, w.pt, w.ext)
	}
}

func TestSwitchKeepsSequenceContinuous(t *testing.T) {
	a := testTrack()
	a.sid = "TR_a"
	d, w := bound(a, 1)
	a.forward(packet(500, 9000, true, 100))
	a.forward(packet(501, 12000, false, 100))
	drain(d)
	if w.lastSeq != 501 {
		t.Fatalf("seq %d", w.lastSeq)
	}
	// The publisher reconnects: a new source with unrelated numbering.
	b := testTrack()
	b.sid = "TR_a"
	d.Switch(b)
	a.forward(packet(502, 15000, false, 100)) // old source: ignored
	b.forward(packet(7, 777, false, 100))     // not a keyframe: waits
	b.forward(packet(8, 777, true, 100))
	b.forward(packet(9, 3777, false, 100))
	drain(d)
	if w.n != 4 || w.lastSeq != 503 {
		t.Fatalf("after switch: n=%d seq=%d, want 4 packets ending at 503", w.n, w.lastSeq)
	}
	if int32(w.lastTS-12000) <= 0 {
		t.Fatalf("timestamp went backwards: %d after 12000", w.lastTS)
	}
}

func TestMuteResumesWithoutGap(t *testing.T) {
	tr := testTrack()
	tr.sid = "TR_m"
	d, w := bound(tr, 1)
	tr.forward(packet(10, 0, true, 100))
	drain(d)
	tr.SetMuted(true)
	for i := uint16(11); i < 50; i++ {
		tr.forward(packet(i, uint32(i)*3000, i%7 == 0, 100))
	}
	drain(d)
	if w.n != 1 {
		t.Fatalf("muted track forwarded %d packets", w.n)
	}
	tr.SetMuted(false)
	tr.forward(packet(50, 150000, false, 100)) // waits for keyframe
	tr.forward(packet(51, 153000, true, 100))
	drain(d)
	if w.n != 2 || w.lastSeq != 11 {
		t.Fatalf("after unmute: n=%d seq=%d, want the keyframe as seq 11", w.n, w.lastSeq)
	}
}

func TestSlowSubscriberDoesNotBlockOthers(t *testing.T) {
	tr := testTrack()
	tr.sid = "TR_s"
	slow, _ := bound(tr, 1)
	fast, w := bound(tr, 2)
	slow.wmu.Lock() // its writer is stuck in a write: the reader must not wait
	for i := 0; i < queueLen*3; i++ {
		tr.forward(packet(uint16(i), uint32(i)*3000, i == 0, 100))
		drain(fast)
	}
	slow.wmu.Unlock()
	if w.n != queueLen*3 {
		t.Fatalf("fast subscriber got %d of %d", w.n, queueLen*3)
	}
	if _, _, drops := slow.Stats(); drops == 0 {
		t.Fatal("slow subscriber's overflow was not counted")
	}
	// The slow one catches up from the next keyframe, without a gap.
	drain(slow)
	tr.forward(packet(5000, 0, true, 100))
	drain(slow)
}

func TestOverwrittenPacketIsNotSent(t *testing.T) {
	tr := testTrack()
	r := newRing(ringSize, videoArenaStart)
	r.put(1, []byte{1, 2, 3}, 10)
	r.put(1+ringSize, []byte{4, 5, 6}, 20)
	buf := make([]byte, 10)
	if _, _, ok := r.get(1, buf); ok {
		t.Fatal("got a packet that was overwritten")
	}
	if n, at, ok := r.get(1+ringSize, buf); !ok || n != 3 || buf[0] != 4 || at != 20 {
		t.Fatalf("n=%d at=%d ok=%v", n, at, ok)
	}
	_ = tr
}

// TestForwardDoesNotAllocate is the zero-allocation bar for the hot path:
// one packet in, copied to the ring, queued and rewritten for every
// subscriber, written out.
func TestForwardDoesNotAllocate(t *testing.T) {
	tr := testTrack()
	tr.sid = "TR_z"
	var downs []*DownTrack
	for i := 0; i < 10; i++ {
		d, _ := bound(tr, uint32(i+1))
		downs = append(downs, d)
	}
	allocs := testing.AllocsPerRun(1000, forwarder(tr, downs, 1000))
	if allocs != 0 {
		t.Fatalf("%.1f allocations per forwarded packet, want 0", allocs)
	}
}

// forwarder returns a step that forwards the next packet of tr (a VP8
// keyframe packet with size bytes of payload) and writes it to each of
// downs, as their writer goroutines would. The stream has run for a while
// first, so that the ring's arena has reached its size (a few
// allocations, once) and what a test or benchmark measures is the steady
// state.
func forwarder(tr *Track, downs []*DownTrack, size int) func() {
	pkt := packet(1, 1, true, size)
	seq := uint16(1)
	step := func() {
		seq++
		pkt[2], pkt[3] = byte(seq>>8), byte(seq)
		tr.forward(pkt)
		for _, d := range downs {
			drain(d)
		}
	}
	for range 2 * ringSize {
		step()
	}
	return step
}

func benchmarkForward(b *testing.B, subscribers int) {
	tr := testTrack()
	tr.sid = "TR_b"
	var downs []*DownTrack
	for i := 0; i < subscribers; i++ {
		d, _ := bound(tr, uint32(i+1))
		downs = append(downs, d)
	}
	step := forwarder(tr, downs, 1100)
	b.ReportAllocs()
	b.SetBytes(int64(len(packet(1, 1, true, 1100)) * subscribers))
	b.ResetTimer()
	for range b.N {
		step()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subscribers), "ns/fwd-pkt")
}

// BenchmarkForward1 and BenchmarkForward10: one incoming packet forwarded to
// 1 or 10 subscribers (ns/op is per incoming packet; ns/fwd-pkt per copy).
func BenchmarkForward1(b *testing.B)  { benchmarkForward(b, 1) }
func BenchmarkForward10(b *testing.B) { benchmarkForward(b, 10) }

// forward feeds a packet to the track's first layer.
func (t *Track) forward(pkt []byte) { t.layer(0).forward(pkt) }

// TestDownTrackAsksAgainForALostKeyframe: a subscriber waiting for a
// keyframe that never came (lost upstream, or sent before it was
// attached) asks the publisher again after keyframeRetry, and not on
// every packet before that.
func TestDownTrackAsksAgainForALostKeyframe(t *testing.T) {
	var plis int
	tr := newTrack("cid", webrtc.RTPCodecTypeVideo, vp8, func() { plis++ }, slog.Default())
	tr.sid = "TR_k"
	d, w := bound(tr, 7)
	for i := uint16(0); i < 20; i++ {
		tr.forward(packet(i, uint32(i)*3000, false, 100))
		drain(d)
	}
	if w.n != 0 || plis != 0 || d.kfRetries.Load() != 0 {
		t.Fatalf("within keyframeRetry: sent %d, %d PLIs, %d retries; want none", w.n, plis, d.kfRetries.Load())
	}
	d.kfAsked = time.Now().Add(-keyframeRetry) // a second of waiting
	tr.forward(packet(20, 60000, false, 100))
	tr.forward(packet(21, 63000, false, 100))
	drain(d)
	if plis != 1 || d.kfRetries.Load() != 1 {
		t.Fatalf("after keyframeRetry: %d PLIs, %d retries; want 1", plis, d.kfRetries.Load())
	}
	tr.forward(packet(22, 66000, true, 100))
	drain(d)
	if w.n != 1 || !d.kfAsked.IsZero() {
		t.Fatalf("keyframe: sent %d, still waiting since %v", w.n, d.kfAsked)
	}
}

// TestForwardDelayIsMeasured: every forwarded copy is one observation of
// the time from its arrival to the end of its write, in the right bucket.
func TestForwardDelayIsMeasured(t *testing.T) {
	tr := testTrack()
	tr.sid = "TR_d"
	d, w := bound(tr, 7)
	tr.forward(packet(1, 0, true, 100))
	tr.forward(packet(2, 3000, false, 100))
	drain(d)
	d.wmu.Lock() // the writer goroutine is busy: the packet is queued
	tr.forward(packet(3, 6000, false, 100))
	d.wmu.Unlock()
	time.Sleep(3 * time.Millisecond) // the writer is 3 ms late
	drain(d)
	h := d.delay.load()
	var n, late uint64
	for i, c := range h.Counts {
		n += c
		if i >= 10 { // above 2.5 ms
			late += c
		}
	}
	if n != 3 || w.n != 3 {
		t.Fatalf("%d observations for %d packets written", n, w.n)
	}
	if late < 1 || h.SumNS < uint64(3*time.Millisecond) {
		t.Fatalf("buckets %v (sum %d ns): the packet written 3 ms late is not above 2.5 ms", h.Counts, h.SumNS)
	}

	// The buckets: a bound is inclusive; below zero (cannot happen on the
	// monotonic clock) counts as zero; beyond the last bound, the last.
	var b delayHist
	for _, ns := range []int64{-5, 10_000, 25_000, 25_001, 1_000_000, 1_000_001, 2_000_000_000} {
		b.observe(ns)
	}
	want := [len(delayBounds) + 1]uint64{0: 3, 1: 1, 6: 1, 7: 1, len(delayBounds): 1}
	if got := b.load().Counts; got != want {
		t.Fatalf("buckets %v, want %v", got, want)
	}
	if DelayBounds()[6] != 1e-3 || DelayBounds()[9] != 2.5e-3 || DelayBounds()[10] != 5e-3 {
		t.Fatal("bucket bounds changed: update this test and docs/api.md")
	}
}

// TestAudioKeepsASmallerRing: an audio track keeps audioRingSize packets
// (2.5 s of Opus), a video layer ringSize.
func TestAudioKeepsASmallerRing(t *testing.T) {
	opus := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}
	a := newTrack("mic", webrtc.RTPCodecTypeAudio, opus, func() {}, slog.Default())
	v := testTrack()
	for _, tc := range []struct {
		tr   *Track
		keep int
	}{{a, audioRingSize}, {v, ringSize}} {
		l := tc.tr.layer(0)
		for i := 1; i <= tc.keep+1; i++ {
			l.forward(packet(uint16(i), uint32(i)*960, true, 50))
		}
		buf := make([]byte, packetMTU)
		if _, _, ok := l.ring.get(1, buf); ok {
			t.Errorf("%s: packet 1 still kept after %d more", tc.tr.Kind(), tc.keep)
		}
		if _, _, ok := l.ring.get(2, buf); !ok {
			t.Errorf("%s: packet 2 gone after %d more; want %d kept", tc.tr.Kind(), tc.keep-1, tc.keep)
		}
	}
}

// TestAudioDownTrackIsSmaller: an audio subscriber's NACK history is as
// long as its ring and its queue 64 packets (an audio room has thousands
// of them), and it still answers a NACK for a recent packet, not for one
// the ring no longer has.
func TestAudioDownTrackIsSmaller(t *testing.T) {
	opus := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}
	a := newTrack("mic", webrtc.RTPCodecTypeAudio, opus, func() {}, slog.Default())
	d, w := bound(a, 9)
	if len(d.hist) != audioRingSize || cap(d.queue) != audioQueueLen {
		t.Fatalf("audio: history %d, queue %d", len(d.hist), cap(d.queue))
	}
	if v := NewDownTrack(testTrack(), "s"); len(v.hist) != histSize || cap(v.queue) != queueLen {
		t.Fatalf("video: history %d, queue %d", len(v.hist), cap(v.queue))
	}
	for i := 1; i <= audioRingSize+20; i++ {
		a.forward(packet(uint16(i), uint32(i)*960, true, 80))
		drain(d)
	}
	if w.n != audioRingSize+20 {
		t.Fatalf("forwarded %d", w.n)
	}
	// 3 packets before the last one, and audioRingSize+5 before it.
	last := w.lastSeq
	for _, tc := range []struct {
		seq  uint16
		want bool
	}{{last - 3, true}, {last - audioRingSize - 5, false}} {
		e := &d.hist[tc.seq&d.hmask]
		e.sentAt -= int64(time.Second)
		before := w.n
		d.resend(tc.seq)
		if got := w.n > before; got != tc.want {
			t.Errorf("NACK for %d packets back answered: %v, want %v", last-tc.seq, got, tc.want)
		}
	}
}

// seqWriter records the sequence numbers written, from any goroutine.
type seqWriter struct {
	mu   sync.Mutex
	seqs []uint16
}

func (w *seqWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	w.mu.Lock()
	w.seqs = append(w.seqs, h.SequenceNumber)
	w.mu.Unlock()
	return len(payload), nil
}

func (w *seqWriter) Write(b []byte) (int, error) { return len(b), nil }

// TestDeliverKeepsOrder: the layer's reader writes a copy itself only when
// nothing of the DownTrack waits for the writer goroutine, so a packet
// never overtakes one queued before it.
func TestDeliverKeepsOrder(t *testing.T) {
	tr := testTrack()
	d := NewDownTrack(tr, "stream")
	w := &seqWriter{}
	d.bind.Store(&binding{ssrc: 9, pt: 96, writer: w})
	tr.addDown(d)
	tr.layer(0).addDown(d)

	tr.forward(packet(1, 0, true, 100)) // written in place
	if d.pending.Load() != 0 || len(d.queue) != 0 || len(w.seqs) != 1 {
		t.Fatalf("an idle DownTrack's packet: pending %d, queued %d, written %d", d.pending.Load(), len(d.queue), len(w.seqs))
	}
	d.wmu.Lock() // the writer goroutine is busy
	tr.forward(packet(2, 0, false, 100))
	tr.forward(packet(3, 0, false, 100))
	d.wmu.Unlock()
	tr.forward(packet(4, 0, false, 100)) // must queue behind 2 and 3
	if len(d.queue) != 3 || len(w.seqs) != 1 {
		t.Fatalf("queued %d, written %d: packet 4 did not wait for 2 and 3", len(d.queue), len(w.seqs))
	}
	drain(d)
	tr.forward(packet(5, 0, false, 100))
	if d.pending.Load() != 0 || len(w.seqs) != 5 {
		t.Fatalf("after the queue drained: pending %d, written %d", d.pending.Load(), len(w.seqs))
	}

	// Against the real writer goroutine, with the reader's copies and the
	// queued ones interleaving as they happen to (under -race, too).
	go d.writeLoop()
	defer d.Close()
	for i := 6; i <= 3000; i++ {
		if i%7 == 0 {
			d.wmu.Lock() // now and then the writer is busy
			tr.forward(packet(uint16(i), 0, true, 100))
			d.wmu.Unlock()
			continue
		}
		// Keyframes: a copy dropped on a full queue makes the
		// DownTrack wait for one, which would hide the order.
		tr.forward(packet(uint16(i), 0, true, 100))
	}
	deadline := time.Now().Add(5 * time.Second)
	for d.pending.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.seqs) != 3000-int(d.drops.Load()) {
		t.Fatalf("%d written, %d dropped of 3000", len(w.seqs), d.drops.Load())
	}
	for i := 1; i < len(w.seqs); i++ {
		if w.seqs[i] <= w.seqs[i-1] {
			t.Fatalf("written out of order: %d after %d", w.seqs[i], w.seqs[i-1])
		}
	}
}

// TestForwardSpreadsLargeFanout: with several Ps, a layer's reader writes
// inlineFanout copies itself and queues the rest for the subscribers'
// writer goroutines; on one P it writes them all.
func TestForwardSpreadsLargeFanout(t *testing.T) {
	was := runtime.GOMAXPROCS(2)
	defer runtime.GOMAXPROCS(was)
	tr := testTrack()
	const subs = 3 * inlineFanout
	var downs []*DownTrack
	for i := range subs {
		d, _ := bound(tr, uint32(100+i))
		downs = append(downs, d)
	}
	queued := func() int {
		n := 0
		for _, d := range downs {
			n += len(d.queue)
			drain(d)
		}
		return n
	}
	tr.forward(packet(1, 0, true, 100))
	if got, want := queued(), subs-inlineFanout; got != want {
		t.Fatalf("2 Ps, %d subscribers: %d copies queued, want %d", subs, got, want)
	}
	runtime.GOMAXPROCS(1)
	tr.forward(packet(2, 0, false, 100))
	if got := queued(); got != 0 {
		t.Fatalf("1 P: %d copies queued, want all written in place", got)
	}
}
