// Package limit has the sliding-window rate limiter every untrusted input
// of the server goes through.
package limit

import "time"

// Window is a sliding-window rate limiter: at most limit events in any
// span of length per. It keeps the time of the last limit events in a
// ring, so it is exact and allocation-free. Not safe for concurrent use:
// each input (a socket, a data channel) has its own.
type Window struct {
	per    time.Duration
	stamps []time.Time // ring; stamps[next] is the oldest
	next   int
}

// NewWindow allows limit events per span.
func NewWindow(limit int, per time.Duration) *Window {
	return &Window{per: per, stamps: make([]time.Time, limit)}
}

// Allow records an event at now and reports whether it is within the
// limit; when it is not, wait is how long until a slot frees.
func (w *Window) Allow(now time.Time) (ok bool, wait time.Duration) {
	oldest := w.stamps[w.next]
	if !oldest.IsZero() && now.Sub(oldest) < w.per {
		return false, w.per - now.Sub(oldest)
	}
	w.stamps[w.next] = now
	w.next = (w.next + 1) % len(w.stamps)
	return true, 0
}
