package congestion

import "sync/atomic"

// The history remembers what was sent for feedback: at least lapUs of
// packets, up to historySize of them (at 10,000 packets a second, 800 ms
// worth). It starts at minHistory and doubles whenever the ring comes round
// in less than lapUs, so a connection that receives a few hundred packets a
// second keeps 8 KB instead of 64. Sizes are powers of two.
const (
	minHistory  = 1024
	historySize = 8192
	lapUs       = 800_000
)

// history is a ring of what was sent, indexed by the transport-wide
// sequence number. Writers (one per stream, concurrently) take a sequence
// number and fill its slot; the feedback reader looks slots up. No locks;
// no allocation except when the ring grows (at most three times).
type history struct {
	next  atomic.Uint32 // the next transport-wide sequence number (low 16 bits)
	ring  atomic.Pointer[[]slot]
	lapAt atomic.Int64 // when the ring's last lap began (µs, 0: not yet)
}

// slot is one sent packet, packed into one word so that a reader never
// sees half of it: bits 0-15 the sequence number, 16-31 the size in bytes
// (0: empty), 32-63 the send time in microseconds (wrapping every 71
// minutes; read relative to now).
type slot struct {
	v atomic.Uint64
}

// load returns the ring, made at its first use.
func (h *history) load() *[]slot {
	if r := h.ring.Load(); r != nil {
		return r
	}
	r := make([]slot, minHistory)
	h.ring.CompareAndSwap(nil, &r)
	return h.ring.Load()
}

// take reserves the next sequence number, for a packet sent at nowUs.
func (h *history) take(nowUs int64) uint16 {
	seq := uint16(h.next.Add(1) - 1)
	if rp := h.load(); seq&uint16(len(*rp)-1) == 0 { // a lap begins
		h.lap(rp, nowUs)
	}
	return seq
}

// lap notes that a lap of the ring rp began at nowUs, and doubles the ring
// when the last lap took less than lapUs.
//
// The new ring is swapped in first and then filled from the old one, each
// slot keeping the newer of the two records; a writer that recorded into
// the old ring meanwhile records again once it sees the swap (record), and
// a copy overtaken by another growth copies again into the newest ring. So
// no record is lost, and a lookup between the swap and the copy misses at
// worst a packet that its feedback then skips.
func (h *history) lap(rp *[]slot, nowUs int64) {
	began := h.lapAt.Swap(max(nowUs, 1))
	r := *rp
	if began == 0 || nowUs-began >= lapUs || len(r) >= historySize {
		return
	}
	nr := make([]slot, 2*len(r))
	if !h.ring.CompareAndSwap(rp, &nr) {
		return // another lap grew it meanwhile
	}
	for dst := &nr; ; {
		d := *dst
		mask := uint16(len(d) - 1)
		for i := range r {
			if v := r[i].v.Load(); v&0xffff0000 != 0 {
				d[uint16(v)&mask].put(v)
			}
		}
		np := h.ring.Load()
		if np == dst {
			return
		}
		dst = np // it grew again before this copy ended: copy into that one too
	}
}

// record notes that seq, size bytes long, was sent at sentUs.
func (h *history) record(seq uint16, size int, sentUs int64) {
	v := uint64(seq) | uint64(min(max(size, 1), 0xffff))<<16 | uint64(uint32(sentUs))<<32
	rp := h.load()
	for {
		r := *rp
		r[seq&uint16(len(r)-1)].put(v)
		np := h.ring.Load()
		if np == rp {
			return
		}
		rp = np // the ring grew meanwhile: the copy may have missed this one
	}
}

// put stores the record v in s. A writer that took its sequence number and
// was held up while the ring came round again leaves the newer packet's
// record in place.
func (s *slot) put(v uint64) {
	seq := uint16(v)
	for {
		old := s.v.Load()
		if old&0xffff0000 != 0 && int16(uint16(old)-seq) > 0 {
			return
		}
		if old == v || s.v.CompareAndSwap(old, v) {
			return
		}
	}
}

// lookup returns the send time and size of seq, if it is still in the
// ring; nowUs unwraps the stored time.
func (h *history) lookup(seq uint16, nowUs int64) (sentUs int64, size int, ok bool) {
	r := *h.load()
	v := r[seq&uint16(len(r)-1)].v.Load()
	size = int(v >> 16 & 0xffff)
	if size == 0 || uint16(v) != seq {
		return 0, 0, false
	}
	age := uint32(nowUs) - uint32(v>>32)
	return nowUs - int64(age), size, true
}
