package sfu

import "sync"

const (
	ringSize  = 512  // packets kept per published video layer (power of two): 2.7 s at 1.7 Mbit/s
	packetMTU = 1500 // largest RTP packet we accept

	// audioRingSize is how many packets an audio track keeps: 2.5 s of
	// 20 ms Opus frames, for the rare NACK (browsers do not negotiate NACK
	// for audio by default). A video-sized ring would hold 768 KiB per
	// audio track, a third of a meeting server's heap.
	audioRingSize = 128
)

// slot is one preallocated packet buffer. The track's read loop is the only
// writer; downtrack writers copy a packet out under the read lock, so a
// writer that fell far behind sees that its packet was overwritten instead of
// sending a torn one.
type slot struct {
	mu  sync.RWMutex
	num uint64 // packet number stored here; 0 = empty
	n   int
	at  int64 // when it arrived (monoNow)
	buf [packetMTU]byte
}

// ring is a fixed ring of recent packets of one track (NOTES 10): no
// allocation per packet, indices (packet numbers) are passed around instead of
// slices.
type ring struct {
	slots []slot
	mask  uint64
}

// newRing makes a ring of n slots (a power of two).
func newRing(n int) ring {
	return ring{slots: make([]slot, n), mask: uint64(n - 1)}
}

// put stores pkt as packet number num (num > 0, increasing), arrived at
// at (monoNow).
func (r *ring) put(num uint64, pkt []byte, at int64) {
	s := &r.slots[num&r.mask]
	s.mu.Lock()
	s.num = num
	s.at = at
	s.n = copy(s.buf[:], pkt)
	s.mu.Unlock()
}

// get copies packet num into dst and reports whether it was still there,
// and when it arrived.
func (r *ring) get(num uint64, dst []byte) (n int, at int64, ok bool) {
	s := &r.slots[num&r.mask]
	s.mu.RLock()
	if s.num != num {
		s.mu.RUnlock()
		return 0, 0, false
	}
	n, at = copy(dst, s.buf[:s.n]), s.at
	s.mu.RUnlock()
	return n, at, true
}
