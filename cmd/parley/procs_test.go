package main

import (
	"strings"
	"testing"
	"time"
)

// load feeds the controller intervals of procsInterval at the given cores
// busy, and returns the Ps after each.
func load(c *procsController, cpu *time.Duration, now *time.Time, busy ...float64) []int {
	var out []int
	for _, b := range busy {
		*now = now.Add(procsInterval)
		*cpu += time.Duration(b * float64(procsInterval))
		out = append(out, c.step(*cpu, *now))
	}
	return out
}

func TestProcsController(t *testing.T) {
	var set []int
	now, cpu := time.Unix(1000, 0), time.Duration(0)
	c := newProcsController(4, func(n int) { set = append(set, n) }, cpu, now)

	// Light load: one P less at a time, each after downAfter quiet intervals.
	quiet := make([]float64, downAfter)
	for i := range quiet {
		quiet[i] = 0.2
	}
	got := load(c, &cpu, &now, quiet...)
	if got[downAfter-2] != 4 || got[downAfter-1] != 3 {
		t.Fatalf("after %d quiet intervals: %v", downAfter, got)
	}
	load(c, &cpu, &now, quiet...)
	load(c, &cpu, &now, quiet...)
	if c.cur != 1 || len(set) != 3 {
		t.Fatalf("light load: %d Ps, set %v", c.cur, set)
	}
	// It never goes below one.
	if load(c, &cpu, &now, quiet...)[downAfter-1] != 1 {
		t.Fatal("below one P")
	}

	// Load rises: the first busy interval adds what it needs at once.
	if got := load(c, &cpu, &now, 0.9); got[0] != 2 {
		t.Fatalf("0.9 cores busy on 1 P: %d Ps, want 2", got[0])
	}
	if got := load(c, &cpu, &now, 1.7); got[0] != 4 {
		t.Fatalf("1.7 cores busy on 2 Ps: %d Ps, want 4", got[0])
	}
	if got := load(c, &cpu, &now, 3.9); got[0] != 4 {
		t.Fatalf("saturated: %d Ps, above the maximum", got[0])
	}

	// Hysteresis: one busier interval restarts the count down.
	set = nil
	b := append(quiet[:0:0], quiet[:downAfter-1]...)
	b = append(b, 2.0) // 0.5 per P on 4: neither up nor down
	b = append(b, quiet[:downAfter-1]...)
	load(c, &cpu, &now, b...)
	if len(set) != 0 {
		t.Fatalf("went down though the quiet spell was broken: %v", set)
	}
}

// TestServeAdaptsProcs: the binary runs the controller (rtc.adaptive_procs
// is on by default): an idle server started with two Ps drops to one.
func TestServeAdaptsProcs(t *testing.T) {
	t.Setenv("GOMAXPROCS", "2")
	c := childServe(t, "--http.listen", "127.0.0.1:0", "--rtc.udp_port", "0", "--rtc.tcp_port", "-1",
		"--rtc.listen_ip", "127.0.0.1", "--metrics.listen", "", "--keys", opsKey+":"+opsSecret, "--log.level", "debug")
	eventually(t, 10*time.Second, "GOMAXPROCS set to 1", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return strings.Contains(c.log.String(), "msg=GOMAXPROCS procs=1")
	})
}
