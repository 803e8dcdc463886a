package sfu

import (
	"sync"
	"sync/atomic"
)

// Stats are the engine's totals since it started, for metrics. The
// per-packet counters live in each Track and DownTrack (atomics, no shared
// cache line on the hot path); the engine sums the live ones and keeps the
// sums of those that ended.
type Stats struct {
	PacketsIn, BytesIn   uint64 // RTP received from publishers
	PacketsOut, BytesOut uint64 // RTP forwarded to subscribers
	Drops                uint64 // packets a slow subscriber skipped, or an overloaded fan-out (Layer.handOff)
	NACKs                uint64 // packets subscribers asked to resend
	PLIs                 uint64 // keyframe requests sent to publishers
	Retransmissions      uint64 // packets resent in answer to NACKs
	NACKsSent            uint64 // packets the SFU asked publishers to resend
	LayerSwitches        uint64 // simulcast layer switches of subscribers
	PaddingBytes         uint64 // RTX padding sent to probe for bandwidth
	// ForwardDelay: from each forwarded packet's arrival to the end of
	// its write to a subscriber (resends not counted).
	ForwardDelay Delay
	// LossRatio is the mean fraction of packets lost that subscribers
	// report (RTCP receiver reports) over the forwarded tracks that have
	// reported.
	LossRatio float64
	// Batch is the batched sender's work (rtc.batch_send); zero when off.
	Batch BatchStats
	// DirectConnections and PionConnections count the subscriber
	// connections that came up on the direct send path (direct.go) and on
	// pion's.
	DirectConnections, PionConnections uint64
	// DirectRTCP counts the RTCP packets of direct connections read off
	// the media socket (rtcptap.go) rather than through pion.
	DirectRTCP uint64
	// DirectReceive and PionReceive count the publisher connections that
	// came up on the direct receive path (recv.go) and on pion's;
	// DirectRTP the media packets read off the media socket on it,
	// DirectRTPBad those it refused (replays, not the publisher's).
	DirectReceive, PionReceive uint64
	DirectRTP, DirectRTPBad    uint64
}

// BatchStats counts the batched system calls (rtc.batch_send).
type BatchStats struct {
	Enabled  bool   // rtc.batch_send is on and the socket has it
	GSO      bool   // the socket takes UDP GSO (false once the kernel refused it)
	Calls    uint64 // sendmmsg system calls
	Messages uint64 // UDP messages in them (a GSO message carries several packets)
	Packets  uint64 // packets sent
	Errors   uint64 // failed sends (the packets are lost, as with one sendto)
	// Causes counts the failed sends by the kernel's error ("EPERM": a
	// firewall rule; "ENETUNREACH": no route; "EINVAL": an address the
	// socket cannot send to); nil when none failed.
	Causes   map[string]uint64
	Reads    uint64 // recvmmsg system calls of the media socket's reader
	ReadPkts uint64 // datagrams they read
}

type engineStats struct {
	mu     sync.Mutex
	tracks map[*Track]struct{}
	downs  map[*DownTrack]struct{}
	ended  Stats // sums of what has ended

	directConns, pionConns atomic.Uint64
	recvDirect, recvPion   atomic.Uint64 // publisher connections, by receive path
}

func (s *engineStats) init() {
	s.tracks = map[*Track]struct{}{}
	s.downs = map[*DownTrack]struct{}{}
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
		s.ended.PacketsIn += t.Packets()
		s.ended.BytesIn += t.Bytes()
		s.ended.PLIs += t.plis()
		s.ended.NACKsSent += t.nacksSent()
		s.ended.Drops += t.fanDrops()
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
		s.ended.Retransmissions += d.retx.Load()
		s.ended.LayerSwitches += d.switches.Load()
		s.ended.PaddingBytes += d.padded.Load()
		dl := d.delay.load()
		s.ended.ForwardDelay.add(&dl)
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
		st.PacketsIn += t.Packets()
		st.BytesIn += t.Bytes()
		st.PLIs += t.plis()
		st.NACKsSent += t.nacksSent()
		st.Drops += t.fanDrops()
	}
	var lossSum float64
	var reported int
	for d := range s.downs {
		st.PacketsOut += d.packets.Load()
		st.BytesOut += d.bytes.Load()
		st.Drops += d.drops.Load()
		st.NACKs += d.nacks.Load()
		st.Retransmissions += d.retx.Load()
		st.LayerSwitches += d.switches.Load()
		st.PaddingBytes += d.padded.Load()
		dl := d.delay.load()
		st.ForwardDelay.add(&dl)
		if l := d.loss.Load(); l > 0 {
			lossSum += float64(l-1) / 256
			reported++
		}
	}
	if reported > 0 {
		st.LossRatio = lossSum / float64(reported)
	}
	st.DirectConnections, st.PionConnections = s.directConns.Load(), s.pionConns.Load()
	st.DirectReceive, st.PionReceive = s.recvDirect.Load(), s.recvPion.Load()
	if e.tap != nil {
		st.DirectRTCP = e.tap.taken.Load()
		st.DirectRTP, st.DirectRTPBad = e.tap.rtpTaken.Load(), e.tap.rtpBad.Load()
	}
	if e.tap != nil && e.tap.io != nil {
		io := e.tap.io
		st.Batch = BatchStats{Enabled: true, GSO: io.gso.Load(), Calls: io.calls.Load(), Messages: io.msgs.Load(),
			Packets: io.pkts.Load(), Errors: io.errs.Load(), Causes: io.errorCauses(), Reads: io.reads.Load(), ReadPkts: io.readPkts.Load()}
	}
	return st
}
