package sfu

import (
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// srInterval is how often a subscriber connection sends sender reports
// (pion's report interceptor's default, and what browsers send).
const srInterval = time.Second

// srPerPacket is how many sender reports go in one compound RTCP packet
// (28 bytes each: 16 fit well under the MTU).
const srPerPacket = 16

// ntpTime is t as a 64-bit NTP timestamp (RFC 3550 section 4).
func ntpTime(t time.Time) uint64 {
	const ntpEpochOffset = 2208988800 // 1900 to 1970, in seconds
	ns := uint64(t.UnixNano())
	sec := ns/1e9 + ntpEpochOffset
	frac := (ns % 1e9) << 32 / 1e9
	return sec<<32 | frac
}

// senderReport is d's sender report at now (mono: the same instant by
// monoNow), or false when d has sent nothing. The RTP time is the last
// timestamp sent advanced by the time since (on the monotonic clock, so
// that a step of the wall clock does not move it), as pion's report
// interceptor computes it, so that the receiver can line audio up with
// video.
func (d *DownTrack) senderReport(now time.Time, mono int64) (rtcp.SenderReport, bool) {
	b := d.bind.Load()
	if b == nil || d.isClosed() {
		return rtcp.SenderReport{}, false
	}
	d.hmu.Lock()
	ts, at := d.srTS, d.srAt
	d.hmu.Unlock()
	if at == 0 {
		return rtcp.SenderReport{}, false
	}
	elapsed := max(mono-at, 0)
	return rtcp.SenderReport{
		SSRC:        b.ssrc,
		NTPTime:     ntpTime(now),
		RTPTime:     ts + uint32(float64(elapsed)*float64(d.codec.ClockRate)/1e9),
		PacketCount: uint32(d.packets.Load()),
		OctetCount:  uint32(d.octets.Load()),
	}, true
}

// sendReports sends the sender reports of every DownTrack of the
// connection. They come from Parley's counters rather than from pion's
// report interceptor, which would not see the direct path's packets.
func (s *Subscriber) sendReports() {
	if !s.ready.Load() {
		return
	}
	now, mono := time.Now(), monoNow()
	s.mu.Lock()
	pkts := make([]rtcp.Packet, 0, len(s.downs))
	for _, d := range s.downs {
		if sr, ok := d.senderReport(now, mono); ok {
			pkts = append(pkts, &sr)
		}
	}
	s.mu.Unlock()
	for len(pkts) > 0 {
		n := min(len(pkts), srPerPacket)
		if err := s.pc.WriteRTCP(pkts[:n]); err != nil {
			if s.pc.ConnectionState() != webrtc.PeerConnectionStateClosed {
				s.log.Debug("sender reports not sent", "err", err)
			}
			return
		}
		pkts = pkts[n:]
	}
}
