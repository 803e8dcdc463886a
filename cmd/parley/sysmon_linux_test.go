package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// switchesPerSecond is how often the threads of process pid gave up the CPU
// of their own accord, over d.
func switchesPerSecond(t *testing.T, pid int, d time.Duration) float64 {
	t.Helper()
	count := func() int {
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
		if err != nil || len(tasks) == 0 {
			t.Fatalf("threads of %d: %v", pid, err)
		}
		n := 0
		for _, f := range tasks {
			b, err := os.ReadFile(f)
			if err != nil {
				continue // a thread that ended
			}
			for line := range strings.Lines(string(b)) {
				if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
					k, _ := strconv.Atoi(strings.TrimSpace(v))
					n += k
				}
			}
		}
		return n
	}
	a := count()
	time.Sleep(d)
	return float64(count()-a) / d.Seconds()
}

func environOf(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
}

// TestServeQuietSysmon: parley serve restarts itself, same pid, with
// sysmonSetting, unless GODEBUG sets schedtrace; and the setting still has
// its effect in this Go: an idle server's sysmon beats every 10 ms instead
// of sleeping until the next timer, which shows as wake-ups of its thread.
// (What that saves under load is measured by the load tester,
// docs/performance.md.)
func TestServeQuietSysmon(t *testing.T) {
	args := []string{"--http.listen", "127.0.0.1:0", "--rtc.udp_port", "0", "--rtc.tcp_port", "-1",
		"--rtc.listen_ip", "127.0.0.1", "--metrics.listen", "", "--keys", opsKey + ":" + opsSecret}
	t.Setenv("GODEBUG", "madvdontneed=1")
	quiet := childServe(t, args...)
	if env := environOf(t, quiet.cmd.Process.Pid); !slices.Contains(env, "GODEBUG=madvdontneed=1,"+sysmonSetting) {
		t.Fatalf("the server's GODEBUG: %q", slices.DeleteFunc(env, func(kv string) bool { return !strings.HasPrefix(kv, "GODEBUG=") }))
	}
	t.Setenv("GODEBUG", "schedtrace=0")
	plain := childServe(t, args...)
	if env := environOf(t, plain.cmd.Process.Pid); !slices.Contains(env, "GODEBUG=schedtrace=0") {
		t.Fatalf("GODEBUG=schedtrace=0 was not kept: %q", env)
	}
	time.Sleep(time.Second) // past the start-up work
	q := switchesPerSecond(t, quiet.cmd.Process.Pid, 2*time.Second)
	p := switchesPerSecond(t, plain.cmd.Process.Pid, 2*time.Second)
	t.Logf("idle wake-ups per second: %.0f with %s, %.0f without", q, sysmonSetting, p)
	if q < 40 || q < 2*p {
		t.Fatalf("idle wake-ups per second: %.0f with %s, %.0f without: sysmon is not on its 10 ms beat, "+
			"the setting lost its effect in this Go (see sysmonSetting)", q, sysmonSetting, p)
	}
}
