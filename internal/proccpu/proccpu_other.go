//go:build !unix && !windows

package proccpu

import "time"

// Used reports no CPU time where the platform has no way Parley reads:
// the parts that adapt to load then keep their defaults.
func Used() (used time.Duration, ok bool) { return 0, false }
