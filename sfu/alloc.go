package sfu

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/parley-rtc/parley/congestion"
	"github.com/pion/webrtc/v4"
)

// initialEstimate is the bandwidth a subscriber connection is assumed to
// have before congestion control has measured it (bits/s).
const initialEstimate = 2_000_000

// allocInterval is how often a subscriber's layers are re-chosen.
const allocInterval = 500 * time.Millisecond

// minEstimate is the lowest a subscriber connection's estimate goes, and
// maxEstimate the highest (bits/s).
const (
	minEstimate = 50_000
	maxEstimate = 100_000_000
)

// bwe is one subscriber connection's bandwidth estimate: send-side GCC
// (package congestion) from transport-wide congestion control feedback,
// raised by a floor that a successful probe proved (GCC alone grows by
// about 8% a second), lowered by REMB when the client sends it. Congestion
// (GCC sees delay grow, or loss) drops the floor at once.
type bwe struct {
	cc          *congestion.Controller
	remb        atomic.Uint64
	rembAt      atomic.Int64
	floor       atomic.Int64
	lastGCC     atomic.Int64 // GCC's estimate in the last round
	congestedAt atomic.Int64 // when congestion was last seen: probing waits
}

func newBWE() (*bwe, error) {
	c, err := congestion.New(congestion.Config{InitialBitrate: initialEstimate, MinBitrate: minEstimate, MaxBitrate: maxEstimate, Epoch: monoBase})
	if err != nil {
		return nil, fmt.Errorf("sfu: congestion control: %w", err)
	}
	return &bwe{cc: c}, nil
}

// congestionLoss is the loss ratio GCC reports above which the path is
// taken as congested; congestionDrop is the fall of GCC's estimate within
// one allocation round that counts as congestion too (a single "overuse"
// sample is too jumpy on a busy machine).
const (
	congestionLoss = 0.1
	congestionDrop = 0.9
)

// estimate in bits/s, and whether the path shows congestion now. rrLoss is
// the highest fraction lost the subscriber reports in its receiver reports
// (the signal left when it does not send transport-cc feedback).
func (b *bwe) estimate(now int64, rrLoss float64) (int64, bool) {
	v := int64(initialEstimate)
	congested := rrLoss > congestionLoss
	if b.cc != nil {
		v = b.cc.TargetBitrate()
		prev := b.lastGCC.Swap(v)
		congested = congested || b.cc.Loss() > congestionLoss || (prev > 0 && float64(v) < congestionDrop*float64(prev))
	}
	if congested {
		b.floor.Store(0)
		b.congestedAt.Store(now)
	}
	v = max(v, b.floor.Load())
	if r := b.remb.Load(); r > 0 && now-b.rembAt.Load() < int64(5*time.Second) && int64(r) < v {
		v = int64(r)
	}
	return v, congested
}

func (b *bwe) setREMB(bps uint64) {
	b.remb.Store(bps)
	b.rembAt.Store(time.Now().UnixNano())
}

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
	pick   int   // index into layers: at least 0
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
	// Hysteresis: a layer the DownTrack already has costs a quarter less,
	// so that an estimate wobbling around a layer's rate does not switch
	// it back and forth.
	rate := func(c *candidate, k int) int64 {
		r := int64(c.t.layer(c.layers[k]).Bitrate())
		if cur := int(c.d.target.Load()); cur >= 0 && c.layers[k] <= cur {
			r = r * 3 / 4
		}
		return r
	}
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
			if c.pick+1 >= len(c.layers) {
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
		want := c.layers[c.pick]
		if c.pick+1 < len(c.layers) {
			step := rate(c, c.pick+1) - rate(c, c.pick)
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
	sr := time.NewTicker(srInterval)
	defer sr.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-sr.C:
			s.sendReports()
			continue
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
	var rrLoss float64
	for _, d := range downs {
		if l := d.loss.Load(); l > 0 {
			rrLoss = max(rrLoss, float64(l-1)/256)
		}
	}
	est, congested := s.bwe.estimate(now, rrLoss)
	a := allocate(downs, est, now)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("allocation", "estimate", est, "congested", congested, "floor", s.bwe.floor.Load(), "deficient", a.deficient, "step", a.step, "probing", s.prober.active)
	}
	s.lastAlloc.Store(&a)
	s.probe(a, downs, now, congested)
}

// Probing: while a video gets less than it asked for, the subscriber
// connection is padded (RTX padding, which the receiver drops) up to a
// higher rate for probeTime. If GCC sees no congestion meanwhile, that rate
// becomes the estimate's floor and the next allocation upgrades; if it
// does, probing backs off. A probe at most doubles the rate (or adds
// probeMinStep), so a probe never floods a path far beyond what it carries;
// successful probes follow one another until the videos get what they ask
// for.
const (
	probeTime       = time.Second
	probeMinStep    = 300_000
	probeMinBackoff = 2 * time.Second
	probeMaxBackoff = 8 * time.Second
)

type prober struct {
	active    bool
	rate      int64 // bits/s the probe brings the connection to
	start     int64
	backoff   time.Duration
	next      int64 // no probe before
	sentBytes int64
	sentAt    int64
}

// probe runs in allocLoop, after each allocation.
func (s *Subscriber) probe(a allocation, downs []*DownTrack, now int64, congested bool) {
	p := &s.prober
	if p.backoff == 0 {
		p.backoff = probeMinBackoff
	}
	var sending int64
	var pad *DownTrack
	for _, d := range downs {
		sending += int64(d.bytes.Load())
		if pad == nil && d.canPad() {
			pad = d
		}
	}
	prev, prevAt := p.sentBytes, p.sentAt
	p.sentBytes, p.sentAt = sending, now
	if prevAt == 0 || now-prevAt < int64(allocInterval/2) {
		return
	}
	media := (sending - prev) * 8 * int64(time.Second) / (now - prevAt)
	if p.active {
		switch {
		case congested || pad == nil:
			p.active = false
			p.backoff = min(2*p.backoff, probeMaxBackoff)
			p.next = now + int64(p.backoff)
			s.log.Debug("probe failed", "rate", p.rate, "backoff", p.backoff)
			return
		case now-p.start >= int64(probeTime):
			p.active = false
			p.backoff = probeMinBackoff
			p.next = now
			s.bwe.floor.Store(p.rate)
			s.log.Debug("probe succeeded", "rate", p.rate)
			s.reallocateSoon()
			return
		}
	} else {
		if !a.deficient || pad == nil || now < p.next || now-s.bwe.congestedAt.Load() < int64(probeMinBackoff) {
			return
		}
		base := max(media, s.bwe.floor.Load())
		need := media + a.step + a.step/20
		p.rate = min(need, base+max(base, probeMinStep))
		if p.rate <= base {
			return
		}
		p.active, p.start = true, now
	}
	bytes := int((p.rate - media) / 8 * int64(allocInterval) / int64(time.Second))
	if bytes > 0 {
		go s.padOver(pad, bytes, allocInterval)
	}
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
