package queue

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestQueueMatchesASlice runs random pushes and pops against a plain slice
// bounded the same way: same order, same refusals, same length.
func TestQueueMatchesASlice(t *testing.T) {
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 1))
		limit := 1 + r.IntN(100)
		q := New[int](limit)
		var model []int
		next := 0
		for step := range 5000 {
			if r.IntN(3) != 0 { // push more than pop, so the limit is met
				ok := q.Push(next)
				if want := len(model) < limit; ok != want {
					t.Fatalf("seed %d step %d: Push = %v with %d of %d waiting", seed, step, ok, len(model), limit)
				}
				if ok {
					model = append(model, next)
				}
				next++
			} else {
				v, ok := q.Pop()
				if ok != (len(model) > 0) {
					t.Fatalf("seed %d step %d: Pop ok = %v with %d waiting", seed, step, ok, len(model))
				}
				if ok {
					if v != model[0] {
						t.Fatalf("seed %d step %d: Pop = %d, want %d", seed, step, v, model[0])
					}
					model = model[1:]
				}
			}
			if q.Len() != len(model) {
				t.Fatalf("seed %d step %d: Len = %d, want %d", seed, step, q.Len(), len(model))
			}
		}
	}
}

// TestQueueKeepsNoBufferWhenIdle: an empty queue holds no buffer beyond a
// small one, so a participant costs little until a burst comes.
func TestQueueKeepsNoBufferWhenIdle(t *testing.T) {
	q := New[string](1024)
	if cap(q.buf) != 0 {
		t.Fatalf("a new queue holds %d slots", cap(q.buf))
	}
	for i := range 1024 {
		if !q.Push("m") {
			t.Fatalf("push %d refused under the limit", i)
		}
	}
	if q.Push("over") {
		t.Fatal("push over the limit accepted")
	}
	if cap(q.buf) != 1024 {
		t.Fatalf("a full queue of 1024 holds %d slots", cap(q.buf))
	}
	for range 1024 {
		q.Pop()
	}
	if cap(q.buf) > keepCap {
		t.Fatalf("a drained queue keeps %d slots", cap(q.buf))
	}
	q.Push("a")
	if v, _ := q.Pop(); v != "a" {
		t.Fatalf("after draining, Pop = %q", v)
	}
}

// TestQueuePopClearsTheSlot: a popped value is not kept alive by the ring.
func TestQueuePopClearsTheSlot(t *testing.T) {
	q := New[*int](16)
	x, y := new(int), new(int)
	q.Push(x)
	q.Push(y)
	q.Pop()
	for i, p := range q.buf {
		if p == x {
			t.Fatalf("slot %d still holds the popped value", i)
		}
	}
}

// TestQueueReadyLosesNothing: one consumer that waits on Ready and drains
// with Pop sees every value of four concurrent producers, in each
// producer's order (run with -race).
func TestQueueReadyLosesNothing(t *testing.T) {
	const producers, each = 4, 5000
	q := New[[2]int](64)
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; {
				if q.Push([2]int{p, i}) {
					i++
				} else {
					time.Sleep(10 * time.Microsecond) // full: the consumer catches up
				}
			}
		}()
	}
	last := [producers]int{-1, -1, -1, -1}
	got := 0
	deadline := time.After(30 * time.Second)
	for got < producers*each {
		select {
		case <-q.Ready():
		case <-deadline:
			t.Fatalf("got %d of %d values; Ready stopped coming", got, producers*each)
		}
		for {
			v, ok := q.Pop()
			if !ok {
				break
			}
			if v[1] != last[v[0]]+1 {
				t.Fatalf("producer %d: %d after %d", v[0], v[1], last[v[0]])
			}
			last[v[0]] = v[1]
			got++
		}
	}
	wg.Wait()
	if q.Len() != 0 {
		t.Fatalf("%d values left", q.Len())
	}
}

func BenchmarkPushPop(b *testing.B) {
	q := New[string](512)
	b.ReportAllocs()
	for b.Loop() {
		q.Push("x")
		q.Pop()
	}
}

// TestQueueDrain: Drain hands every value over in order and reports true
// when the queue is empty; it stops, keeping the rest, when f says so or
// stop is closed.
func TestQueueDrain(t *testing.T) {
	q := New[int](16)
	for i := range 5 {
		q.Push(i)
	}
	var got []int
	if !q.Drain(nil, func(v int) bool { got = append(got, v); return true }) || len(got) != 5 || got[4] != 4 || q.Len() != 0 {
		t.Fatalf("drained %v, %d left", got, q.Len())
	}
	for i := range 5 {
		q.Push(i)
	}
	got = nil
	if q.Drain(nil, func(v int) bool { got = append(got, v); return v < 2 }) || len(got) != 3 || q.Len() != 2 {
		t.Fatalf("f said stop at 2: took %v, %d left", got, q.Len())
	}
	stop := make(chan struct{})
	close(stop)
	if q.Drain(stop, func(int) bool { t.Fatal("a value after stop"); return true }) || q.Len() != 2 {
		t.Fatalf("stop closed: %d left", q.Len())
	}
}
