package main

import (
	"strings"
)

// sysmonSetting is the GODEBUG setting the server runs with unless GODEBUG
// sets schedtrace already. Its effect, not its trace, is the point: with
// schedtrace set, the Go runtime's monitor thread (sysmon) never enters
// its deep sleep, so it is not woken by the first system call after every
// idle moment, each wake-up restarting its polling at 20 µs (50 000 timer
// wake-ups a second) for the next millisecond and more. An SFU is idle
// between frames and busy in bursts: on 2 cores, those wake-ups and the
// context switches they caused were 13% of the server's CPU, and the
// setting saves 12-30% of the CPU per forwarded packet
// (docs/performance.md). Without deep sleep, sysmon beats every 10 ms
// instead, about 0.3 ms of CPU a second when the server is idle.
//
// The interval is the largest the runtime accepts (24.8 days): the trace
// line is printed only when the monotonic clock passes a multiple of it,
// so at most once every 24.8 days of the host's uptime. A fatal panic
// also prints the scheduler's state before the stack trace.
const sysmonSetting = "schedtrace=2147483647"

// quietSysmonEnv returns environ with sysmonSetting added to GODEBUG, and
// whether that differs from environ: not when GODEBUG sets schedtrace
// already, whether the operator did (GODEBUG=schedtrace=0 opts out) or
// this process is the restarted one. The runtime reads the first GODEBUG
// entry, so that is the one extended.
func quietSysmonEnv(environ []string) ([]string, bool) {
	at := -1
	for i, kv := range environ {
		if strings.HasPrefix(kv, "GODEBUG=") {
			at = i
			break
		}
	}
	if at < 0 {
		return append(environ[:len(environ):len(environ)], "GODEBUG="+sysmonSetting), true
	}
	value := strings.TrimPrefix(environ[at], "GODEBUG=")
	for _, f := range strings.Split(value, ",") {
		if strings.HasPrefix(strings.TrimSpace(f), "schedtrace=") {
			return environ, false
		}
	}
	out := append([]string(nil), environ...)
	if value == "" {
		out[at] = "GODEBUG=" + sysmonSetting
	} else {
		out[at] = "GODEBUG=" + value + "," + sysmonSetting
	}
	return out, true
}
