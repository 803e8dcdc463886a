package congestion

import "sync/atomic"

// historySize is how many sent packets are remembered for feedback: at
// 10,000 packets a second, 800 ms worth. A power of two.
const historySize = 8192

// history is a fixed ring of what was sent, indexed by the transport-wide
// sequence number. Writers (one per stream, concurrently) take a sequence
// number and fill its slot; the feedback reader looks slots up. No locks,
// no allocation.
type history struct {
	next  atomic.Uint32 // the next transport-wide sequence number (low 16 bits)
	slots [historySize]slot
}

// slot is one sent packet, packed into one word so that a reader never
// sees half of it: bits 0-15 the sequence number, 16-31 the size in bytes
// (0: empty), 32-63 the send time in microseconds (wrapping every 71
// minutes; read relative to now).
type slot struct {
	v atomic.Uint64
}

// take reserves the next sequence number and its slot.
func (h *history) take() (uint16, *slot) {
	seq := uint16(h.next.Add(1) - 1)
	return seq, &h.slots[seq&(historySize-1)]
}

// record notes that seq, size bytes long, was sent at sentUs. A writer
// that took seq and was held up while the ring came round again leaves
// the newer packet's record in place.
func (s *slot) record(seq uint16, size int, sentUs int64) {
	v := uint64(seq) | uint64(min(max(size, 1), 0xffff))<<16 | uint64(uint32(sentUs))<<32
	for {
		old := s.v.Load()
		if old&0xffff0000 != 0 && int16(uint16(old)-seq) > 0 {
			return
		}
		if s.v.CompareAndSwap(old, v) {
			return
		}
	}
}

// lookup returns the send time and size of seq, if it is still in the
// ring; nowUs unwraps the stored time.
func (h *history) lookup(seq uint16, nowUs int64) (sentUs int64, size int, ok bool) {
	v := h.slots[seq&(historySize-1)].v.Load()
	size = int(v >> 16 & 0xffff)
	if size == 0 || uint16(v) != seq {
		return 0, 0, false
	}
	age := uint32(nowUs) - uint32(v>>32)
	return nowUs - int64(age), size, true
}
