package sfu

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/interceptor/pkg/gcc"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// initialEstimate is the bandwidth a subscriber connection is assumed to
// have before congestion control has measured it (bits/s).
const initialEstimate = 2_000_000

// allocInterval is how often a subscriber's layers are re-chosen.
const allocInterval = 500 * time.Millisecond

// bwe is one subscriber connection's bandwidth estimate: pion's send-side
// GCC from transport-wide congestion control feedback, lowered by REMB when
// the client sends it.
type bwe struct {
	est    atomic.Pointer[cc.BandwidthEstimator]
	remb   atomic.Uint64
	rembAt atomic.Int64
	pacer  *passPacer
	// the estimate's last drop, to hold probing back after congestion
	lastValue atomic.Int64
	droppedAt atomic.Int64
}

// estimate in bits/s.
func (b *bwe) estimate(now int64) int64 {
	v := int64(initialEstimate)
	if e := b.est.Load(); e != nil {
		v = int64((*e).GetTargetBitrate())
	}
	if r := b.remb.Load(); r > 0 && now-b.rembAt.Load() < int64(5*time.Second) && int64(r) < v {
		v = int64(r)
	}
	if last := b.lastValue.Swap(v); v < last*95/100 {
		b.droppedAt.Store(now)
	}
	return v
}

func (b *bwe) setREMB(bps uint64) {
	b.remb.Store(bps)
	b.rembAt.Store(time.Now().UnixNano())
}

// interceptor builds the congestion control interceptor of one subscriber
// connection.
func (b *bwe) interceptor() (interceptor.Factory, error) {
	f, err := cc.NewInterceptor(func() (cc.BandwidthEstimator, error) {
		return gcc.NewSendSideBWE(gcc.SendSideBWEInitialBitrate(initialEstimate), gcc.SendSideBWEMinBitrate(50_000),
			gcc.SendSideBWEPacer(b.pacer))
	})
	if err != nil {
		return nil, fmt.Errorf("sfu: congestion control: %w", err)
	}
	f.OnNewPeerConnection(func(_ string, e cc.BandwidthEstimator) { b.est.Store(&e) })
	return f, nil
}

// passPacer sends at once (no pacing queue, no added latency); it routes
// RTX packets to the stream of their media SSRC.
type passPacer struct {
	mu      sync.RWMutex
	writers map[uint32]interceptor.RTPWriter
	aliases map[uint32]uint32 // RTX SSRC -> media SSRC
}

func newPassPacer() *passPacer {
	return &passPacer{writers: map[uint32]interceptor.RTPWriter{}, aliases: map[uint32]uint32{}}
}

func (p *passPacer) AddStream(ssrc uint32, w interceptor.RTPWriter) {
	p.mu.Lock()
	p.writers[ssrc] = w
	p.mu.Unlock()
}

// alias routes packets of rtx to the stream of media.
func (p *passPacer) alias(rtx, media uint32) {
	p.mu.Lock()
	p.aliases[rtx] = media
	p.mu.Unlock()
}

func (p *passPacer) SetTargetBitrate(int) {}

func (p *passPacer) Write(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
	p.mu.RLock()
	w, ok := p.writers[h.SSRC]
	if !ok {
		w, ok = p.writers[p.aliases[h.SSRC]]
	}
	p.mu.RUnlock()
	if !ok {
		return 0, fmt.Errorf("%w: %d", gcc.ErrUnknownStream, h.SSRC)
	}
	return w.Write(h, payload, a)
}

func (p *passPacer) Close() error { return nil }

// qualityIndex maps a quality name to the highest layer index it allows.
func qualityIndex(q string) int {
	switch q {
	case "low":
		return 0
	case "medium":
		return 1
	}
	return maxLayers - 1
}

// desired is the highest layer the subscriber's settings ask for (-1:
// paused), from the layers t has.
func (d *DownTrack) desired(t *Track) int {
	s := d.settings.Load()
	if s.Paused {
		return -1
	}
	top := t.top()
	if top < 0 {
		return -1
	}
	want := min(qualityIndex(s.Quality), top)
	for t.layer(want) == nil && want > 0 {
		want--
	}
	if t.layer(want) == nil {
		want = t.lowest()
	}
	if s.Width <= 0 && s.Height <= 0 {
		return want
	}
	// The smallest layer that covers the displayed size (with 10% slack).
	for i := t.lowest(); i >= 0 && i < want; i++ {
		l := t.layer(i)
		if l == nil {
			continue
		}
		w, h := int(l.width.Load()), int(l.height.Load())
		if w == 0 || h == 0 {
			// Unknown: assume each layer halves the one above it.
			tl := t.layer(top)
			w, h = int(tl.width.Load())>>(top-i), int(tl.height.Load())>>(top-i)
			if w == 0 || h == 0 {
				return want
			}
		}
		if w*10 >= s.Width*9 && h*10 >= s.Height*9 {
			return i
		}
	}
	return want
}

// spatialFor chooses the VP9 spatial layer for the subscriber's size.
func (d *DownTrack) spatialFor(l *Layer) int {
	n := int(l.svcLayers.Load())
	s := d.settings.Load()
	want := min(qualityIndex(s.Quality), n-1)
	if s.Width <= 0 && s.Height <= 0 {
		return want
	}
	for i := 0; i < want; i++ {
		w, h := int(l.svc[i].w.Load()), int(l.svc[i].h.Load())
		if w*10 >= s.Width*9 && h*10 >= s.Height*9 {
			return i
		}
	}
	return want
}

// liveLayer is the layer to forward for the wanted one: itself when the
// publisher sends it, else the nearest one it sends, lower first.
func liveLayer(t *Track, want int, now int64) int {
	if want < 0 {
		return -1
	}
	if l := t.layer(want); l != nil && l.live(now) {
		return want
	}
	for i := want - 1; i >= 0; i-- {
		if l := t.layer(i); l != nil && l.live(now) {
			return i
		}
	}
	for i := want + 1; i < maxLayers; i++ {
		if l := t.layer(i); l != nil && l.live(now) {
			return i
		}
	}
	return want
}

// candidate is one video DownTrack in an allocation round.
type candidate struct {
	d      *DownTrack
	t      *Track
	layers []int // the track's layers up to the desired one, lowest first
	pick   int   // index into layers
}

// allocation is the outcome of one round, for probing and tests.
type allocation struct {
	estimate  int64
	deficient bool  // some video gets less than it asked for
	step      int64 // bits/s the cheapest upgrade would need
}

// allocate chooses the layer of every DownTrack: audio first, then every
// video its lowest layer, then upgrades one layer at a time, round robin,
// while the estimate allows.
func allocate(downs []*DownTrack, estimate int64, now int64) allocation {
	budget := estimate
	for _, d := range downs {
		t := d.src.Load()
		if t == nil || d.kind != webrtc.RTPCodecTypeAudio {
			continue
		}
		if l := t.layer(0); l != nil && !t.Muted() {
			budget -= int64(l.Bitrate())
		}
	}
	var cands []candidate
	for _, d := range downs {
		t := d.src.Load()
		if t == nil || d.kind != webrtc.RTPCodecTypeVideo {
			continue
		}
		want := d.desired(t)
		if l := t.layer(0); l != nil && l.svcLayers.Load() > 1 {
			d.maxSpatial.Store(int32(d.spatialFor(l)))
		}
		if want < 0 || t.Muted() {
			d.want.Store(int32(want))
			d.setTarget(liveLayer(t, want, now))
			continue
		}
		c := candidate{d: d, t: t, pick: -1}
		for i := 0; i <= want; i++ {
			if t.layer(i) != nil {
				c.layers = append(c.layers, i)
			}
		}
		cands = append(cands, c)
	}
	rate := func(c *candidate, k int) int64 { return int64(c.t.layer(c.layers[k]).Bitrate()) }
	for i := range cands {
		// Every video gets its lowest layer, even over the estimate: a
		// picture beats none, and the estimate cannot grow without
		// traffic. The estimate decides the upgrades.
		c := &cands[i]
		c.pick = 0
		budget -= rate(c, 0)
	}
	for changed := true; changed; {
		changed = false
		for i := range cands {
			c := &cands[i]
			if c.pick < 0 || c.pick+1 >= len(c.layers) {
				continue
			}
			delta := rate(c, c.pick+1) - rate(c, c.pick)
			if delta <= budget {
				c.pick++
				budget -= delta
				changed = true
			}
		}
	}
	out := allocation{estimate: estimate}
	for i := range cands {
		c := &cands[i]
		want := -1
		if c.pick >= 0 {
			want = c.layers[c.pick]
		}
		if c.pick+1 < len(c.layers) {
			step := rate(c, c.pick+1)
			if c.pick >= 0 {
				step -= rate(c, c.pick)
			}
			if !out.deficient || step < out.step {
				out.step = step
			}
			out.deficient = true
		}
		c.d.want.Store(int32(want))
		c.d.setTarget(liveLayer(c.t, want, now))
	}
	return out
}

// allocLoop re-chooses the subscriber's layers every allocInterval (and
// when kicked), and probes for more bandwidth with padding when a video
// gets less than it asked for.
func (s *Subscriber) allocLoop() {
	tick := time.NewTicker(allocInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-tick.C:
		case <-s.kick:
		}
		s.reallocate()
	}
}

func (s *Subscriber) reallocate() {
	now := time.Now().UnixNano()
	s.mu.Lock()
	downs := make([]*DownTrack, 0, len(s.downs))
	for _, d := range s.downs {
		downs = append(downs, d)
	}
	s.mu.Unlock()
	est := s.bwe.estimate(now)
	a := allocate(downs, est, now)
	s.lastAlloc.Store(&a)
	s.probe(a, downs, now)
}

// probe pads towards the next upgrade while a video gets less than it
// asked for and the estimate has not dropped lately, so that the
// estimator sees the traffic it needs before it allows more; GCC never
// estimates far above what it has seen delivered.
func (s *Subscriber) probe(a allocation, downs []*DownTrack, now int64) {
	if !a.deficient || now-s.bwe.droppedAt.Load() < int64(3*time.Second) {
		return
	}
	var sending int64
	var pad *DownTrack
	for _, d := range downs {
		sending += int64(d.bytes.Load())
		if pad == nil && d.canPad() {
			pad = d
		}
	}
	prev, prevAt := s.sentBytes.Swap(sending), s.sentAt.Swap(now)
	if pad == nil || prev == 0 || now-prevAt < int64(allocInterval/2) {
		return
	}
	rate := (sending - prev) * 8 * int64(time.Second) / (now - prevAt)
	// Fill up to the estimate, at most one step: the estimator then sees
	// enough delivered traffic to raise its estimate if the path allows.
	padRate := min(a.step, max(a.estimate-rate, 0))
	if padRate <= 0 {
		return
	}
	bytes := int(padRate / 8 * int64(allocInterval) / int64(time.Second))
	go s.padOver(pad, bytes, allocInterval)
}

// padOver spreads n bytes of padding over about d, in 20 ms slices.
func (s *Subscriber) padOver(d *DownTrack, n int, over time.Duration) {
	slices := int(over / (20 * time.Millisecond))
	per := n / max(slices, 1)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < slices; i++ {
		d.sendPadding(per)
		select {
		case <-s.done:
			return
		case <-tick.C:
		}
	}
}
