package sfu

import (
	"testing"
	"unsafe"
)

// TestHistEntryPacks: a video subscriber keeps histSize entries per track,
// so a field added in the wrong place costs every subscribed track.
func TestHistEntryPacks(t *testing.T) {
	if n := unsafe.Sizeof(histEntry{}); n > 40 {
		t.Fatalf("histEntry is %d bytes, want at most 40: order its fields by size", n)
	}
}
