package rooms

import "time"

// window is a sliding-window rate limiter: at most len(stamps) events in
// any span of length per. It keeps the time of the last limit events in a
// ring, so it is exact and allocation-free. Not safe for concurrent use:
// each data channel of a participant has its own.
type window struct {
	per    time.Duration
	stamps []time.Time // ring; stamps[next] is the oldest
	next   int
}

func newWindow(limit int, per time.Duration) *window {
	return &window{per: per, stamps: make([]time.Time, limit)}
}

// allow records an event at now and reports whether it is within the
// limit; when it is not, wait is how long until a slot frees.
func (w *window) allow(now time.Time) (ok bool, wait time.Duration) {
	oldest := w.stamps[w.next]
	if !oldest.IsZero() && now.Sub(oldest) < w.per {
		return false, w.per - now.Sub(oldest)
	}
	w.stamps[w.next] = now
	w.next = (w.next + 1) % len(w.stamps)
	return true, 0
}
