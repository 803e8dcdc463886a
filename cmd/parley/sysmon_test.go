package main

import (
	"slices"
	"testing"
)

func TestQuietSysmonEnv(t *testing.T) {
	cases := []struct {
		in      []string
		want    []string
		restart bool
	}{
		{[]string{"HOME=/root"}, []string{"HOME=/root", "GODEBUG=" + sysmonSetting}, true},
		{[]string{"GODEBUG=", "A=1"}, []string{"GODEBUG=" + sysmonSetting, "A=1"}, true},
		{[]string{"GODEBUG=madvdontneed=1", "A=1"}, []string{"GODEBUG=madvdontneed=1," + sysmonSetting, "A=1"}, true},
		// The operator's schedtrace, 0 included, or the restarted process.
		{[]string{"GODEBUG=schedtrace=0"}, []string{"GODEBUG=schedtrace=0"}, false},
		{[]string{"GODEBUG=gctrace=1, schedtrace=1000"}, []string{"GODEBUG=gctrace=1, schedtrace=1000"}, false},
		{[]string{"GODEBUG=gctrace=1," + sysmonSetting}, []string{"GODEBUG=gctrace=1," + sysmonSetting}, false},
		// The runtime reads the first entry.
		{[]string{"GODEBUG=a=1", "GODEBUG=schedtrace=0"}, []string{"GODEBUG=a=1," + sysmonSetting, "GODEBUG=schedtrace=0"}, true},
	}
	for _, tc := range cases {
		in := slices.Clone(tc.in)
		got, restart := quietSysmonEnv(in)
		if restart != tc.restart || !slices.Equal(got, tc.want) {
			t.Errorf("%q: %q %v, want %q %v", tc.in, got, restart, tc.want, tc.restart)
		}
		if !slices.Equal(in, tc.in) {
			t.Errorf("%q: the input was changed to %q", tc.in, in)
		}
	}
}
