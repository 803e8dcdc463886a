package congestion

import (
	"encoding/binary"
	"errors"
)

// Errors of feedback parsing.
var (
	ErrShortFeedback = errors.New("congestion: transport-cc feedback too short")
	ErrNotFeedback   = errors.New("congestion: not a transport-cc feedback packet")
)

// RTCP transport-wide congestion control feedback: payload type 205
// (transport layer feedback), format 15.
const (
	feedbackPT   = 205
	feedbackFMT  = 15
	feedbackHead = 20 // RTCP header, two SSRCs, base, count, reference time, fb count

	deltaUnitUs = 250    // a receive delta counts quarter milliseconds
	refUnitUs   = 64_000 // the reference time counts 64 ms
)

// Packet status symbols.
const (
	symNotReceived = 0
	symSmallDelta  = 1 // received, one byte delta
	symLargeDelta  = 2 // received, two byte signed delta
)

// isFeedback reports whether the RTCP packet starting at b is transport-cc
// feedback.
func isFeedback(b []byte) bool {
	return len(b) >= 2 && b[0]>>6 == 2 && b[0]&0x1f == feedbackFMT && b[1] == feedbackPT
}

// feedback reads one transport-cc feedback packet in place
// (draft-holmer-rmcat-transport-wide-cc-extensions-01, section 3.1):
// parse checks it, then next walks its packets one by one, without
// building a slice. The zero value is ready to parse.
type feedback struct {
	base    uint16
	count   uint16
	refTime int32 // in 64 ms, sign-extended from 24 bits
	fbCount uint8

	b      []byte // the packet, cut to its length
	chunks int    // offset of the first status chunk
	deltas int    // offset of the first receive delta

	// The walk.
	done int // packets visited
	pos  int // offset of the current chunk
	k    int // symbol index within the current chunk
	dpos int // offset of the next receive delta
}

// symbols returns how many statuses chunk c holds and the status of the
// k-th (k < n).
func symbols(c uint16, k int) (n int, sym int) {
	switch {
	case c&0x8000 == 0: // run length
		return int(c & 0x1fff), int(c >> 13 & 3)
	case c&0x4000 == 0: // status vector, 14 one-bit symbols
		return 14, int(c >> (13 - k%14) & 1)
	default: // status vector, 7 two-bit symbols
		return 7, int(c >> (12 - 2*(k%7)) & 3)
	}
}

// parse checks that b starts with a complete transport-cc feedback packet
// and prepares the walk over it. f keeps b.
func (f *feedback) parse(b []byte) error {
	if len(b) < feedbackHead {
		return ErrShortFeedback
	}
	if !isFeedback(b) {
		return ErrNotFeedback
	}
	total := 4 * (int(binary.BigEndian.Uint16(b[2:])) + 1)
	if total < feedbackHead || total > len(b) {
		return ErrShortFeedback
	}
	b = b[:total]
	*f = feedback{
		b:       b,
		base:    binary.BigEndian.Uint16(b[12:]),
		count:   binary.BigEndian.Uint16(b[14:]),
		refTime: int32(uint32(b[16])<<24|uint32(b[17])<<16|uint32(b[18])<<8) >> 8,
		fbCount: b[19],
		chunks:  feedbackHead,
	}
	// Walk the chunks once to find where the deltas start and check that
	// they are all there.
	pos, done, deltaBytes := feedbackHead, 0, 0
	for done < int(f.count) {
		if pos+2 > total {
			return ErrShortFeedback
		}
		c := binary.BigEndian.Uint16(b[pos:])
		pos += 2
		n, sym := symbols(c, 0)
		if c&0x8000 == 0 {
			n = min(n, int(f.count)-done)
			done += n
			deltaBytes += n * deltaSize(sym)
			continue
		}
		for k := 0; k < n && done < int(f.count); k++ {
			_, sym = symbols(c, k)
			deltaBytes += deltaSize(sym)
			done++
		}
	}
	if pos+deltaBytes > total {
		return ErrShortFeedback
	}
	f.deltas, f.pos, f.dpos = pos, feedbackHead, pos
	return nil
}

// deltaSize is the size of the receive delta of a packet with status sym.
func deltaSize(sym int) int {
	switch sym {
	case symSmallDelta:
		return 1
	case symLargeDelta:
		return 2
	}
	return 0
}

// next returns the next packet of the feedback: its transport-wide
// sequence number, whether it was received and, when it was, its receive
// delta from the previous received packet (or from the reference time) in
// 250 µs units. ok is false after the last packet.
func (f *feedback) next() (seq uint16, received bool, delta int32, ok bool) {
	for f.done < int(f.count) {
		c := binary.BigEndian.Uint16(f.b[f.pos:])
		n, sym := symbols(c, f.k)
		if f.k >= n {
			f.pos += 2
			f.k = 0
			continue
		}
		f.k++
		seq = f.base + uint16(f.done)
		f.done++
		switch sym {
		case symSmallDelta:
			delta = int32(f.b[f.dpos])
			f.dpos++
			return seq, true, delta, true
		case symLargeDelta:
			delta = int32(int16(binary.BigEndian.Uint16(f.b[f.dpos:])))
			f.dpos += 2
			return seq, true, delta, true
		}
		return seq, false, 0, true
	}
	return 0, false, 0, false
}
