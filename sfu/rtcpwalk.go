package sfu

import (
	"encoding/binary"
	"math"
)

// rtcpSink receives what a subscriber's RTCP asks of its DownTracks; ssrc
// is the media SSRC the request is about.
type rtcpSink interface {
	// rtcpKeyframe: a picture loss indication or full intra request.
	rtcpKeyframe(ssrc uint32)
	// rtcpNack: one packet asked for again (generic NACK).
	rtcpNack(ssrc uint32, seq uint16)
	// rtcpREMB: the receiver's estimated maximum bitrate, bit/s.
	rtcpREMB(bps uint64)
	// rtcpLoss: a report block (receiver or sender report) about ssrc.
	rtcpLoss(ssrc uint32, fractionLost uint8)
}

// RTCP packet types and feedback formats (RFC 3550, 4585, 5104; REMB
// draft-alvestrand-rmcat-remb).
const (
	rtcpSR    = 200
	rtcpRR    = 201
	rtcpRTPFB = 205
	rtcpPSFB  = 206

	fmtNACK = 1
	fmtPLI  = 1
	fmtFIR  = 4
	fmtAFB  = 15 // application layer feedback: REMB
)

// walkRTCP reads a compound RTCP packet in place and tells s what it asks
// for: keyframe requests, NACKs, REMB and report blocks. It replaces
// pion's rtcp.Unmarshal on the subscriber's read path, which allocates a
// struct (and slices) per packet; nothing here allocates. Packets it does
// not use (SDES, BYE, XR, transport-wide feedback, which package
// congestion already took) are skipped by their length. It stops at the
// first packet whose header is not RTCP version 2 or whose length runs
// past the buffer, as pion's parser rejects such a compound.
func walkRTCP(b []byte, s rtcpSink) {
	for len(b) >= 4 {
		if b[0]>>6 != 2 {
			return
		}
		count := int(b[0] & 0x1f)
		typ := b[1]
		size := (int(binary.BigEndian.Uint16(b[2:4])) + 1) * 4
		if size > len(b) {
			return
		}
		p := b[:size]
		b = b[size:]
		switch typ {
		case rtcpRR:
			reportBlocks(p, 8, count, s)
		case rtcpSR:
			reportBlocks(p, 28, count, s)
		case rtcpRTPFB:
			// header, sender SSRC, media SSRC, then (PID, BLP) pairs
			if count != fmtNACK || len(p) < 16 {
				continue
			}
			media := binary.BigEndian.Uint32(p[8:])
			for i := 12; i+4 <= len(p); i += 4 {
				pid := binary.BigEndian.Uint16(p[i:])
				blp := binary.BigEndian.Uint16(p[i+2:])
				s.rtcpNack(media, pid)
				for bit := uint16(0); bit < 16; bit++ {
					if blp&(1<<bit) != 0 {
						s.rtcpNack(media, pid+bit+1)
					}
				}
			}
		case rtcpPSFB:
			switch count {
			case fmtPLI:
				if len(p) >= 12 {
					s.rtcpKeyframe(binary.BigEndian.Uint32(p[8:]))
				}
			case fmtFIR:
				// header, sender SSRC, media SSRC (unused), one or more
				// (SSRC, sequence) entries
				for i := 12; i+8 <= len(p); i += 8 {
					s.rtcpKeyframe(binary.BigEndian.Uint32(p[i:]))
				}
			case fmtAFB:
				if bps, ok := remb(p); ok {
					s.rtcpREMB(bps)
				}
			}
		}
	}
}

// reportBlocks hands s the report blocks of a receiver (from 8) or sender
// (from 28) report: count blocks of 24 bytes, each starting with the SSRC
// it reports on and the fraction lost.
func reportBlocks(p []byte, from, count int, s rtcpSink) {
	for i, n := from, 0; n < count && i+24 <= len(p); i, n = i+24, n+1 {
		s.rtcpLoss(binary.BigEndian.Uint32(p[i:]), p[i+4])
	}
}

// remb reads a REMB message: "REMB", the number of SSRCs, a 6-bit
// exponent and an 18-bit mantissa. Its value is the float32 pion computes
// (mantissa × 2^exponent); implausible values (2^62 bit/s and more) are
// clamped.
func remb(p []byte) (uint64, bool) {
	if len(p) < 20 || p[0]&0x20 != 0 || string(p[12:16]) != "REMB" || len(p) != 20+4*int(p[16]) {
		return 0, false
	}
	exp := int(p[17] >> 2)
	mantissa := uint32(p[17]&3)<<16 | uint32(p[18])<<8 | uint32(p[19])
	v := float32(mantissa) * float32(math.Ldexp(1, exp))
	if v >= 1<<62 {
		return 1 << 62, true
	}
	return uint64(v), true
}
