package congestion

import (
	"runtime"
	"sync"
	"testing"
)

// TestHistoryStaysSmallAtLowRates: a connection that is sent a few hundred
// packets a second keeps the smallest ring, and every packet of its last
// lap is still found.
func TestHistoryStaysSmallAtLowRates(t *testing.T) {
	var h history
	now := int64(0)
	for i := range 5 * minHistory {
		now = int64(i) * 2000 // 500 packets a second: a lap is 2 s
		seq := h.take(now)
		h.record(seq, 1000+i%100, now)
	}
	if n := len(*h.ring.Load()); n != minHistory {
		t.Fatalf("ring of %d slots at 500 packets a second, want %d", n, minHistory)
	}
	last := uint16(5*minHistory - 1)
	for k := range minHistory {
		seq := last - uint16(k)
		if sent, size, ok := h.lookup(seq, now); !ok || sent != int64(seq)*2000 || size != 1000+int(seq)%100 {
			t.Fatalf("seq %d: found %v, sent %d, size %d", seq, ok, sent, size)
		}
	}
	if _, _, ok := h.lookup(last-minHistory, now); ok {
		t.Fatal("a packet older than the ring was found")
	}
}

// TestHistoryGrowsToKeepALap: at 20,000 packets a second the ring grows to
// its largest, keeping what it held when it grew, and then holds the last
// historySize packets.
func TestHistoryGrowsToKeepALap(t *testing.T) {
	var h history
	sizes := map[int]bool{}
	for i := range 3 * historySize {
		now := int64(i) * 50
		seq := h.take(now)
		h.record(seq, 100+i%1000, now)
		n := len(*h.ring.Load())
		sizes[n] = true
		// Everything of the ring's length back is found, across each growth
		// (nothing writes concurrently here, so no record is lost).
		if i >= n && i%97 == 0 {
			for k := range n {
				seq := uint16(i - k)
				if _, size, ok := h.lookup(seq, now); !ok || size != 100+(i-k)%1000 {
					t.Fatalf("after %d packets (ring %d): seq %d found %v, size %d", i+1, n, seq, ok, size)
				}
			}
		}
	}
	for n := minHistory; n <= historySize; n *= 2 {
		if !sizes[n] {
			t.Errorf("the ring was never %d long (lengths seen: %v)", n, sizes)
		}
	}
	if n := len(*h.ring.Load()); n != historySize {
		t.Fatalf("ring of %d slots at 20,000 packets a second, want %d", n, historySize)
	}
}

// TestHistoryTakeDoesNotAllocate once the ring has its length.
func TestHistoryTakeDoesNotAllocate(t *testing.T) {
	var h history
	now := int64(0)
	if n := testing.AllocsPerRun(10*minHistory, func() {
		now += 2000
		seq := h.take(now)
		h.record(seq, 1200, now)
	}); n > 0.01 {
		t.Fatalf("%.3f allocations per packet", n)
	}
}

// TestHistoryGrowsUnderConcurrentWriters: four writers record while the
// ring doubles under them (run with -race); no record written across a
// swap is lost.
func TestHistoryGrowsUnderConcurrentWriters(t *testing.T) {
	for round := range 50 {
		var h history
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range historySize / 4 {
					now := int64(h.next.Load()) * 10 // 100,000 packets a second
					seq := h.take(now)
					if seq%32 == 0 {
						runtime.Gosched() // held up between number and record
					}
					h.record(seq, 500+int(seq)%700, now)
				}
			}()
		}
		wg.Wait()
		// A writer held up between its sequence number and its lap can
		// delay a growth by a lap: the ring has grown at least twice.
		n := len(*h.ring.Load())
		if n < historySize/2 {
			t.Fatalf("round %d: ring of %d, want %d or %d", round, n, historySize/2, historySize)
		}
		// Writers racing past a lap overwrite the oldest records of the
		// ring before it grows; the newer half of the last ring was written
		// across the last growth, and none of it may be missing.
		for seq := uint16(historySize - n/2); seq < historySize; seq++ {
			if _, size, ok := h.lookup(seq, 1e6); !ok || size != 500+int(seq)%700 {
				r := *h.ring.Load()
				t.Fatalf("round %d: seq %d found %v, size %d; slot %x", round, seq, ok, size, r[seq&uint16(len(r)-1)].v.Load())
			}
		}
	}
}
