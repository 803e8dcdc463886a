package sfu

import (
	"sync"
	"time"
)

const (
	ringSize  = 512  // packets kept per published video layer (power of two): 2.7 s at 1.7 Mbit/s
	packetMTU = 1500 // largest RTP packet we accept

	// audioRingSize is how many packets an audio track keeps: 2.5 s of
	// 20 ms Opus frames, for the rare NACK (browsers do not negotiate NACK
	// for audio by default).
	audioRingSize = 128

	// ringKeep is how long a ring keeps a packet before another may take
	// its bytes: the retransmission window (mediasoup keeps 2 s of video
	// too). A ring whose bytes would not last that long grows, up to room
	// for all its slots at packetMTU; the slot count still bounds it.
	ringKeep = 2 * time.Second

	// First sizes of a ring's packet bytes. They double while the stream
	// needs more: a 1.7 Mbit/s layer settles at 512 KiB instead of the 768
	// KiB of a slot per packet at packetMTU, a 150 kbit/s simulcast layer
	// at 64 KiB, an Opus track at 16 KiB instead of 192.
	videoArenaStart = 32 << 10
	audioArenaStart = 4 << 10
)

// slot is one packet of a ring. The track's read loop is the only writer;
// downtrack writers copy a packet out under the read lock, so a writer that
// fell far behind sees that its packet was overwritten instead of sending a
// torn one. The writer takes the lock before it lets any other packet
// reuse the slot's bytes.
type slot struct {
	mu  sync.RWMutex
	num uint64 // packet number stored here; 0 = empty
	at  int64  // when it arrived (monoNow)
	b   []byte // the packet, in the ring's arena
	pos uint64 // where b starts in the stream of bytes written (writer only)
}

// ring keeps the recent packets of one track (NOTES 10) without allocation
// per packet: packet numbers index the slots, and the packets' bytes lie
// one after the other in one arena, so a 100-byte Opus packet takes 100
// bytes, not packetMTU. Indices (packet numbers) are passed around instead
// of slices.
type ring struct {
	slots []slot
	mask  uint64

	// the writer's state
	arena []byte
	max   int    // the arena's largest size
	head  uint64 // bytes written to the stream so far; the arena holds the last len(arena)
	tail  uint64 // oldest packet number that may still hold bytes of the arena
	grown int    // times the arena grew (tests)
}

// newRing makes a ring of n slots (a power of two) whose packet bytes
// start at start bytes.
func newRing(n, start int) ring {
	return ring{
		slots: make([]slot, n),
		mask:  uint64(n - 1),
		arena: make([]byte, min(max(start, packetMTU), n*packetMTU)),
		max:   n * packetMTU,
	}
}

// put stores pkt as packet number num (num > 0, increasing), arrived at
// at (monoNow).
func (r *ring) put(num uint64, pkt []byte, at int64) {
	if len(pkt) > packetMTU {
		pkt = pkt[:packetMTU]
	}
	n := uint64(len(pkt))
	for {
		size := uint64(len(r.arena))
		start := r.head
		if off := start % size; off+n > size {
			start += size - off // a packet does not wrap around the arena's end
		}
		end := start + n
		if end > size && !r.evict(num, end-size, at) {
			r.grow(num)
			continue
		}
		s := &r.slots[num&r.mask]
		off := start % size
		s.mu.Lock()
		s.num = num
		s.at = at
		s.pos = start
		s.b = r.arena[off : off+n : off+n]
		copy(s.b, pkt)
		s.mu.Unlock()
		r.head = end
		return
	}
}

// evict empties the slots of packets that start before low in the byte
// stream, oldest first, so that packet num can take their bytes. It
// reports false, and leaves the rest, when such a packet is younger than
// ringKeep and the arena may still grow.
func (r *ring) evict(num, low uint64, now int64) bool {
	for ; r.tail < num; r.tail++ {
		s := &r.slots[r.tail&r.mask]
		if s.num != r.tail || s.b == nil {
			continue // never stored, or its slot was taken by a newer packet
		}
		if s.pos >= low {
			return true // positions grow with numbers: the rest are newer
		}
		if now-s.at < int64(ringKeep) && len(r.arena) < r.max {
			return false
		}
		s.mu.Lock()
		s.num, s.b = 0, nil
		s.mu.Unlock()
	}
	return true
}

// grow doubles the arena (at most r.max) and moves the packets it holds,
// from r.tail up to num, to its start. This allocates, a few times in a
// stream's life; readers see each packet either where it was or where it
// is now, under its slot's lock.
func (r *ring) grow(num uint64) {
	next := make([]byte, min(2*len(r.arena), r.max))
	var at uint64
	for i := r.tail; i < num; i++ {
		s := &r.slots[i&r.mask]
		if s.num != i || s.b == nil {
			continue
		}
		n := uint64(len(s.b))
		b := next[at : at+n : at+n]
		copy(b, s.b)
		s.mu.Lock()
		s.b, s.pos = b, at
		s.mu.Unlock()
		at += n
	}
	r.arena, r.head = next, at
	r.grown++
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
	n, at = copy(dst, s.b), s.at
	s.mu.RUnlock()
	return n, at, true
}
