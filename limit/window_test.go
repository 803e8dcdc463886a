package limit

import (
	"testing"
	"time"
)

func TestWindowIsSliding(t *testing.T) {
	w := NewWindow(3, 10*time.Second)
	t0 := time.Unix(1000, 0)
	for i, at := range []time.Duration{0, 2 * time.Second, 4 * time.Second} {
		if ok, _ := w.Allow(t0.Add(at)); !ok {
			t.Fatalf("event %d refused", i)
		}
	}
	// A fourth inside the window is refused, and the wait is until the
	// first event leaves it.
	ok, wait := w.Allow(t0.Add(5 * time.Second))
	if ok || wait != 5*time.Second {
		t.Fatalf("fourth event: ok=%v wait=%s, want refused with 5s", ok, wait)
	}
	// Refusals are not counted: at 10s the first has left, so one fits.
	if ok, _ := w.Allow(t0.Add(10 * time.Second)); !ok {
		t.Fatal("event at 10s refused although the one at 0s left the window")
	}
	if ok, wait := w.Allow(t0.Add(11 * time.Second)); ok || wait != time.Second {
		t.Fatalf("event at 11s: ok=%v wait=%s, want refused until 12s", ok, wait)
	}
	if ok, _ := w.Allow(t0.Add(12 * time.Second)); !ok {
		t.Fatal("event at 12s refused")
	}
}

func BenchmarkWindowAllow(b *testing.B) {
	w := NewWindow(30, 10*time.Second)
	now := time.Unix(1000, 0)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		now = now.Add(time.Second)
		w.Allow(now)
	}
}
