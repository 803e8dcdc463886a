package sfu

import (
	"sync"
	"sync/atomic"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
)

// Stats are the engine's totals since it started, for metrics. The
// per-packet counters live in each Track and DownTrack (atomics, no shared
// cache line on the hot path); the engine sums the live ones and keeps the
// sums of those that ended.
type Stats struct {
	PacketsIn, BytesIn   uint64 // RTP received from publishers
	PacketsOut, BytesOut uint64 // RTP forwarded to subscribers
	Drops                uint64 // packets a slow subscriber skipped
	NACKs                uint64 // packets subscribers asked to resend
	PLIs                 uint64 // keyframe requests sent to publishers
	Retransmissions      uint64 // packets resent in answer to NACKs
	// LossRatio is the mean fraction of packets lost that subscribers
	// report (RTCP receiver reports) over the forwarded tracks that have
	// reported.
	LossRatio float64
}

type engineStats struct {
	mu     sync.Mutex
	tracks map[*Track]struct{}
	downs  map[*DownTrack]struct{}
	wires  map[*atomic.Uint64]struct{} // RTP written to the wire per subscriber connection
	ended  Stats                       // sums of what has ended
	wire   uint64                      // ended subscriber connections' wire packets
	retx   uint64                      // the last Retransmissions reported (it never goes down)
}

func (s *engineStats) init() {
	s.tracks = map[*Track]struct{}{}
	s.downs = map[*DownTrack]struct{}{}
	s.wires = map[*atomic.Uint64]struct{}{}
}

func (s *engineStats) addTrack(t *Track) {
	s.mu.Lock()
	s.tracks[t] = struct{}{}
	s.mu.Unlock()
}

func (s *engineStats) endTrack(t *Track) {
	s.mu.Lock()
	if _, ok := s.tracks[t]; ok {
		delete(s.tracks, t)
		s.ended.PacketsIn += t.packets.Load()
		s.ended.BytesIn += t.bytes.Load()
		s.ended.PLIs += t.plis.Load()
	}
	s.mu.Unlock()
}

func (s *engineStats) addDown(d *DownTrack) {
	s.mu.Lock()
	s.downs[d] = struct{}{}
	s.mu.Unlock()
}

func (s *engineStats) endDown(d *DownTrack) {
	s.mu.Lock()
	if _, ok := s.downs[d]; ok {
		delete(s.downs, d)
		s.ended.PacketsOut += d.packets.Load()
		s.ended.BytesOut += d.bytes.Load()
		s.ended.Drops += d.drops.Load()
		s.ended.NACKs += d.nacks.Load()
	}
	s.mu.Unlock()
}

func (s *engineStats) addWire(w *atomic.Uint64) {
	s.mu.Lock()
	s.wires[w] = struct{}{}
	s.mu.Unlock()
}

func (s *engineStats) endWire(w *atomic.Uint64) {
	s.mu.Lock()
	if _, ok := s.wires[w]; ok {
		delete(s.wires, w)
		s.wire += w.Load()
	}
	s.mu.Unlock()
}

// Stats sums every counter.
func (e *Engine) Stats() Stats {
	s := &e.stats
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.ended
	for t := range s.tracks {
		st.PacketsIn += t.packets.Load()
		st.BytesIn += t.bytes.Load()
		st.PLIs += t.plis.Load()
	}
	var lossSum float64
	var reported int
	for d := range s.downs {
		st.PacketsOut += d.packets.Load()
		st.BytesOut += d.bytes.Load()
		st.Drops += d.drops.Load()
		st.NACKs += d.nacks.Load()
		if l := d.loss.Load(); l > 0 {
			lossSum += float64(l-1) / 256
			reported++
		}
	}
	if reported > 0 {
		st.LossRatio = lossSum / float64(reported)
	}
	wire := s.wire
	for w := range s.wires {
		wire += w.Load()
	}
	// What went on the wire beyond what the DownTracks wrote was resent by
	// the NACK responder. Sampled without a global lock, so the difference
	// may dip for a moment: a counter never goes down.
	if wire > st.PacketsOut && wire-st.PacketsOut > s.retx {
		s.retx = wire - st.PacketsOut
	}
	st.Retransmissions = s.retx
	return st
}

// wireCounter is the interceptor nearest the network on a subscriber
// connection: it counts every RTP packet written, retransmissions included.
type wireCounter struct {
	interceptor.NoOp
	n *atomic.Uint64
}

func (w *wireCounter) BindLocalStream(_ *interceptor.StreamInfo, writer interceptor.RTPWriter) interceptor.RTPWriter {
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		w.n.Add(1)
		return writer.Write(h, payload, a)
	})
}

type wireCounterFactory struct{ n *atomic.Uint64 }

func (f wireCounterFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &wireCounter{n: f.n}, nil
}
