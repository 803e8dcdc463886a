//go:build unix

// Package proccpu reads the CPU time this process has used, for the parts
// that adapt to load (the cluster's load report, adaptive GOMAXPROCS).
package proccpu

import (
	"syscall"
	"time"
)

// Used is the CPU time (user and system, all threads) the process has
// used so far; ok is false if the kernel would not say.
func Used() (used time.Duration, ok bool) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
