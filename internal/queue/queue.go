// Package queue is a bounded first-in first-out queue for one consumer
// that takes memory only for what waits in it.
//
// A buffered channel of n elements allocates all n when it is made: the
// signaling and data-channel queues, sized for a burst (512 and 1024
// messages), cost every participant about 45 KB while almost always
// empty. A Queue starts with no buffer, grows by doubling up to its
// limit, and once drained keeps a buffer of at most 64 slots.
package queue

import "sync"

// minCap is the first buffer's length; keepCap the largest kept while
// empty, so that a queue that fills and drains with every burst (a chat
// room's recipients) does not allocate its buffer again each time.
const (
	minCap  = 8
	keepCap = 64
)

// Queue holds at most limit values. Push never blocks; one goroutine
// consumes with Ready and Pop. The zero value is not usable: call New.
type Queue[T any] struct {
	mu      sync.Mutex
	buf     []T // ring; len(buf) is a power of two, or 0
	head, n int
	limit   int
	ready   chan struct{} // holds a token while the queue may be non-empty
}

// New makes a Queue for at most limit values (limit ≥ 1).
func New[T any](limit int) *Queue[T] {
	return &Queue[T]{limit: max(limit, 1), ready: make(chan struct{}, 1)}
}

// Push adds v at the tail. It reports false, and leaves the queue as it
// was, when limit values are waiting.
func (q *Queue[T]) Push(v T) bool {
	q.mu.Lock()
	if q.n >= q.limit {
		q.mu.Unlock()
		return false
	}
	if q.n == len(q.buf) {
		q.grow()
	}
	q.buf[(q.head+q.n)&(len(q.buf)-1)] = v
	q.n++
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

func (q *Queue[T]) grow() {
	c := max(2*len(q.buf), minCap)
	nb := make([]T, c)
	for i := range q.n {
		nb[i] = q.buf[(q.head+i)&(len(q.buf)-1)]
	}
	q.buf, q.head = nb, 0
}

// Pop takes the value at the head; ok is false when the queue is empty.
func (q *Queue[T]) Pop() (v T, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		return v, false
	}
	v = q.buf[q.head]
	var zero T
	q.buf[q.head] = zero // let the garbage collector have it
	q.head = (q.head + 1) & (len(q.buf) - 1)
	q.n--
	if q.n == 0 {
		q.head = 0
		if len(q.buf) > keepCap {
			q.buf = nil // a burst's buffer is not kept
		}
	}
	return v, true
}

// Len is how many values wait.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// Drain pops values and hands them to f, oldest first, until the queue is
// empty. It reports false, leaving the rest, as soon as f does or stop is
// closed (checked before each value): the consumer's loop then ends.
func (q *Queue[T]) Drain(stop <-chan struct{}, f func(T) bool) bool {
	for {
		select {
		case <-stop:
			return false
		default:
		}
		v, ok := q.Pop()
		if !ok {
			return true
		}
		if !f(v) {
			return false
		}
	}
}

// Ready receives after a Push. The consumer selects on it, then Pops
// until the queue is empty: a value pushed after that empty Pop sends
// Ready again, so none is left waiting unseen.
func (q *Queue[T]) Ready() <-chan struct{} { return q.ready }
