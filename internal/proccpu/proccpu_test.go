package proccpu

import (
	"testing"
	"time"
)

func TestUsedGrowsWithWork(t *testing.T) {
	a, ok := Used()
	if !ok {
		t.Fatal("getrusage failed")
	}
	x := 0
	for start := time.Now(); time.Since(start) < 50*time.Millisecond; {
		x++
	}
	b, _ := Used()
	if b <= a || x == 0 {
		t.Fatalf("CPU time %v then %v after 50 ms of work", a, b)
	}
}
