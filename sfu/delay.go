package sfu

import (
	"slices"
	"sync/atomic"
	"time"
)

// delayBounds are the upper bounds, in seconds, of the buckets of the
// forwarding delay: from a packet's arrival from the publisher to the end
// of its write to one subscriber (its SRTP encryption and system call
// included).
// The buckets around 1 ms, issue 8's bound for the p99, are finer, so
// that a p99 near it is read within a quarter or half a millisecond.
var delayBounds = [...]float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 750e-6, 1e-3, 1.5e-3, 2e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1}

// DelayBounds are the upper bounds of Delay's buckets, in seconds.
func DelayBounds() []float64 { return slices.Clone(delayBounds[:]) }

// delayBoundsNS are delayBounds in nanoseconds.
var delayBoundsNS = func() (b [len(delayBounds)]int64) {
	for i, s := range delayBounds {
		b[i] = int64(s * 1e9)
	}
	return b
}()

// Delay is a histogram of forwarding delays: Counts[i] packets took at
// most DelayBounds()[i] (and more than the bound before it); the last count
// is for those above every bound.
type Delay struct {
	Counts [len(delayBounds) + 1]uint64
	SumNS  uint64
}

func (h *Delay) add(o *Delay) {
	for i := range h.Counts {
		h.Counts[i] += o.Counts[i]
	}
	h.SumNS += o.SumNS
}

// delayHist is a Delay filled by one DownTrack's writers: atomics, no
// lock, no allocation.
type delayHist struct {
	counts [len(delayBounds) + 1]atomic.Uint64
	sum    atomic.Uint64
}

func (h *delayHist) observe(ns int64) {
	ns = max(ns, 0)
	i := 0
	for i < len(delayBoundsNS) && ns > delayBoundsNS[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(uint64(ns))
}

func (h *delayHist) load() (d Delay) {
	for i := range h.counts {
		d.Counts[i] = h.counts[i].Load()
	}
	d.SumNS = h.sum.Load()
	return d
}

// monoBase anchors monoNow; it is set once, when the package loads.
var monoBase = time.Now()

// monoNow is nanoseconds on the monotonic clock (one clock read, immune to
// wall-clock steps).
func monoNow() int64 { return int64(time.Since(monoBase)) }
