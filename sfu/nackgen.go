package sfu

import (
	"sync"
	"time"

	"github.com/pion/rtcp"
)

// The SFU asks publishers for the packets it lost (NACK). It does so from
// what the layer's read loop sees, repaired packets included: pion's own
// generator is not told about packets repaired over RTX and would ask for
// them again and again.
const (
	nackWindow   = 512                   // sequence numbers remembered (power of two)
	nackMaxAge   = 400                   // older losses are given up on
	nackInterval = 20 * time.Millisecond // how often losses are looked at (at most)
	nackRetry    = 60 * time.Millisecond // between two requests for one packet
	nackMaxTries = 6                     // requests per packet
	nackMaxBatch = 64                    // sequence numbers per RTCP packet
)

// nackGen tracks which sequence numbers of one stream arrived.
type nackGen struct {
	mu      sync.Mutex
	started bool
	highest uint16
	got     [nackWindow]bool
	tries   [nackWindow]uint8
	askedAt [nackWindow]int64
	seqs    []uint16 // scratch, reused
}

// received records one packet (read loop). Allocation free.
func (g *nackGen) received(seq uint16) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.started {
		g.started = true
		g.highest = seq
		for i := range g.got {
			g.got[i] = true // nothing before the first packet is missing
		}
		return
	}
	diff := int16(seq - g.highest)
	switch {
	case diff > 0:
		if int(diff) >= nackWindow {
			// A jump (e.g. a publisher restart): forget everything.
			for i := range g.got {
				g.got[i] = true
			}
		}
		for s := g.highest + 1; s != seq && int16(seq-s) > 0 && int(int16(seq-s)) < nackWindow; s++ {
			i := s & (nackWindow - 1)
			g.got[i], g.tries[i], g.askedAt[i] = false, 0, 0
		}
		g.highest = seq
		g.mark(seq)
	case int(-diff) < nackWindow:
		g.mark(seq)
	}
}

func (g *nackGen) mark(seq uint16) {
	i := seq & (nackWindow - 1)
	g.got[i], g.tries[i] = true, 0
}

// missing appends the sequence numbers to ask for now to dst.
func (g *nackGen) missing(now int64, dst []uint16) []uint16 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.started {
		return dst
	}
	// The newest packet or two may just be reordered: wait a little.
	for age := nackMaxAge; age >= 2 && len(dst) < nackMaxBatch; age-- {
		s := g.highest - uint16(age)
		i := s & (nackWindow - 1)
		if g.got[i] || g.tries[i] >= nackMaxTries || now-g.askedAt[i] < int64(nackRetry) {
			continue
		}
		g.tries[i]++
		g.askedAt[i] = now
		dst = append(dst, s)
	}
	return dst
}

// askLost asks the publisher for the layer's lost packets, at most every
// nackInterval. forward calls it as packets come (a loss shows only once
// a later packet has arrived), so no timer wakes per layer: in a meeting
// of forty video publishers those were 2000 wake-ups a second.
func (l *Layer) askLost(now, mono int64) {
	write := l.t.writeRTCP
	if l.nack == nil || write == nil || l.remote == nil || mono-l.nackAt < int64(nackInterval) {
		return
	}
	l.nackAt = mono
	l.nackSeqs = l.nack.missing(now, l.nackSeqs[:0])
	if len(l.nackSeqs) == 0 {
		return
	}
	l.nacksSent.Add(uint64(len(l.nackSeqs)))
	_ = write([]rtcp.Packet{&rtcp.TransportLayerNack{MediaSSRC: uint32(l.remote.SSRC()), Nacks: rtcp.NackPairsFromSequenceNumbers(l.nackSeqs)}})
}
