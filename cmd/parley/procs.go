package main

import (
	"context"
	"log/slog"
	"math"
	"runtime"
	"time"

	"github.com/parley-rtc/parley/internal/proccpu"
)

// Adaptive GOMAXPROCS (rtc.adaptive_procs). A forwarding server is idle
// between packet bursts; with more Ps than the load needs, every burst
// wakes an idle P's thread, which spins looking for work and sleeps again,
// and the monitor thread polls every 20 µs. On 2 cores at a fifth of one
// core's load that was a fifth of the server's CPU (docs/performance.md).
// So the server runs on as few Ps as keep each under upShare busy, and
// adds Ps as soon as the load needs them.
const (
	procsInterval = 250 * time.Millisecond
	upShare       = 0.75 // a P busier than this: add Ps
	targetShare   = 0.5  // after adding, each P about this busy
	downShare     = 0.6  // remove a P when one fewer would be at most this busy...
	downAfter     = 8    // ...for this many intervals in a row (2 s)
)

// procsController decides GOMAXPROCS from the process's CPU use.
type procsController struct {
	max  int // the most Ps: GOMAXPROCS at start
	cur  int
	low  int // intervals in a row under downShare
	set  func(int)
	cpu  time.Duration // process CPU time at the last step
	last time.Time
}

func newProcsController(max int, set func(int), cpu time.Duration, now time.Time) *procsController {
	return &procsController{max: max, cur: max, set: set, cpu: cpu, last: now}
}

// step takes the process's CPU time so far at now, and returns the number
// of Ps it set (unchanged if none).
func (c *procsController) step(cpu time.Duration, now time.Time) int {
	wall := now.Sub(c.last)
	if wall <= 0 {
		return c.cur
	}
	busy := float64(cpu-c.cpu) / float64(wall) // cores in use
	c.cpu, c.last = cpu, now
	switch {
	case busy > upShare*float64(c.cur) && c.cur < c.max:
		n := int(math.Ceil(busy / targetShare))
		c.apply(min(max(n, c.cur+1), c.max))
	case c.cur > 1 && busy < downShare*float64(c.cur-1):
		c.low++
		if c.low >= downAfter {
			c.apply(c.cur - 1)
		}
	default:
		c.low = 0
	}
	return c.cur
}

func (c *procsController) apply(n int) {
	c.cur, c.low = n, 0
	c.set(n)
}

// processCPU is the CPU time the process used so far.
func processCPU() time.Duration {
	used, _ := proccpu.Used()
	return used
}

// adaptProcs runs the controller until ctx ends, then gives the process
// all its Ps back.
func adaptProcs(ctx context.Context, log *slog.Logger) {
	start := runtime.GOMAXPROCS(0)
	if start < 2 {
		return
	}
	c := newProcsController(start, func(n int) {
		runtime.GOMAXPROCS(n)
		log.Debug("GOMAXPROCS", "procs", n)
	}, processCPU(), time.Now())
	t := time.NewTicker(procsInterval)
	defer t.Stop()
	defer runtime.GOMAXPROCS(start)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c.step(processCPU(), now)
		}
	}
}
