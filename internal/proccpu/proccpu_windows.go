package proccpu

import (
	"syscall"
	"time"
)

// Used is the CPU time (user and kernel, all threads) the process has
// used so far; ok is false if Windows would not say.
func Used() (used time.Duration, ok bool) {
	h, err := syscall.GetCurrentProcess()
	if err != nil {
		return 0, false
	}
	var created, exited, kernel, user syscall.Filetime
	if syscall.GetProcessTimes(h, &created, &exited, &kernel, &user) != nil {
		return 0, false
	}
	// FILETIME durations count 100 ns intervals.
	return time.Duration((ticks(kernel) + ticks(user)) * 100), true
}

func ticks(f syscall.Filetime) int64 { return int64(f.HighDateTime)<<32 | int64(f.LowDateTime) }
