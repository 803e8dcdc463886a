package sfu

import (
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// rtcpEvents records what walkRTCP reports, in order.
type rtcpEvents struct{ got []string }

func (e *rtcpEvents) rtcpKeyframe(s uint32) { e.got = append(e.got, fmt.Sprint("key ", s)) }
func (e *rtcpEvents) rtcpNack(s uint32, seq uint16) {
	e.got = append(e.got, fmt.Sprint("nack ", s, " ", seq))
}
func (e *rtcpEvents) rtcpREMB(bps uint64) { e.got = append(e.got, fmt.Sprint("remb ", bps)) }
func (e *rtcpEvents) rtcpLoss(s uint32, f uint8) {
	e.got = append(e.got, fmt.Sprint("loss ", s, " ", f))
}

// pionEvents is what the same bytes meant through rtcp.Unmarshal, the
// parser walkRTCP replaces: ok is false when pion rejects the compound
// (pion's SRTCP session drops it before any DownTrack sees it).
func pionEvents(b []byte) (got []string, ok bool) {
	pkts, err := rtcp.Unmarshal(b)
	if err != nil {
		return nil, false
	}
	for _, p := range pkts {
		switch p := p.(type) {
		case *rtcp.PictureLossIndication:
			got = append(got, fmt.Sprint("key ", p.MediaSSRC))
		case *rtcp.FullIntraRequest:
			for _, f := range p.FIR {
				got = append(got, fmt.Sprint("key ", f.SSRC))
			}
		case *rtcp.TransportLayerNack:
			for _, n := range p.Nacks {
				n.Range(func(seq uint16) bool {
					got = append(got, fmt.Sprint("nack ", p.MediaSSRC, " ", seq))
					return true
				})
			}
		case *rtcp.ReceiverEstimatedMaximumBitrate:
			bps := uint64(1 << 62)
			if p.Bitrate < 1<<62 {
				bps = uint64(p.Bitrate)
			}
			got = append(got, fmt.Sprint("remb ", bps))
		case *rtcp.ReceiverReport:
			for _, r := range p.Reports {
				got = append(got, fmt.Sprint("loss ", r.SSRC, " ", r.FractionLost))
			}
		case *rtcp.SenderReport:
			for _, r := range p.Reports {
				got = append(got, fmt.Sprint("loss ", r.SSRC, " ", r.FractionLost))
			}
		}
	}
	return got, true
}

// rtcpSamples are compound packets as browsers and pion send them.
func rtcpSamples(t testing.TB) [][]byte {
	t.Helper()
	sets := [][]rtcp.Packet{
		{&rtcp.ReceiverReport{SSRC: 1, Reports: []rtcp.ReceptionReport{{SSRC: 0xaabbccdd, FractionLost: 26}, {SSRC: 7, FractionLost: 0}}},
			&rtcp.SourceDescription{Chunks: []rtcp.SourceDescriptionChunk{{Source: 1, Items: []rtcp.SourceDescriptionItem{{Type: rtcp.SDESCNAME, Text: "x"}}}}}},
		{&rtcp.TransportLayerNack{SenderSSRC: 1, MediaSSRC: 2, Nacks: []rtcp.NackPair{{PacketID: 65534, LostPackets: 0b101}, {PacketID: 100}}}},
		{&rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 2}},
		{&rtcp.FullIntraRequest{SenderSSRC: 1, MediaSSRC: 2, FIR: []rtcp.FIREntry{{SSRC: 2, SequenceNumber: 3}, {SSRC: 4, SequenceNumber: 1}}}},
		{&rtcp.ReceiverEstimatedMaximumBitrate{SenderSSRC: 1, Bitrate: 1_234_567, SSRCs: []uint32{2, 3}}},
		{&rtcp.ReceiverEstimatedMaximumBitrate{SenderSSRC: 1, Bitrate: 8e18}},
		{&rtcp.SenderReport{SSRC: 9, NTPTime: 1, RTPTime: 2, Reports: []rtcp.ReceptionReport{{SSRC: 5, FractionLost: 255}}}},
		{&rtcp.TransportLayerCC{Header: rtcp.Header{Padding: true, Count: rtcp.FormatTCC, Type: rtcp.TypeTransportSpecificFeedback, Length: 5}, SenderSSRC: 1, MediaSSRC: 2, BaseSequenceNumber: 1, PacketStatusCount: 1,
			PacketChunks: []rtcp.PacketStatusChunk{&rtcp.RunLengthChunk{PacketStatusSymbol: rtcp.TypeTCCPacketReceivedSmallDelta, RunLength: 1}},
			RecvDeltas:   []*rtcp.RecvDelta{{Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 250}}},
			&rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 2}},
		{&rtcp.Goodbye{Sources: []uint32{1}}, &rtcp.TransportLayerNack{SenderSSRC: 1, MediaSSRC: 2, Nacks: []rtcp.NackPair{{PacketID: 1, LostPackets: 0xffff}}}},
	}
	var out [][]byte
	for _, s := range sets {
		b, err := rtcp.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestWalkRTCPMatchesPion: on what browsers and pion send, walkRTCP reports
// exactly what rtcp.Unmarshal parses (keyframe requests, every NACKed
// sequence number including the bitmask's and across a wrap, REMB, report
// blocks of receiver and sender reports), in order, and skips the rest.
func TestWalkRTCPMatchesPion(t *testing.T) {
	want := [][]string{
		{"loss 2864434397 26", "loss 7 0"},
		{"nack 2 65534", "nack 2 65535", "nack 2 1", "nack 2 100"},
		{"key 2"},
		{"key 2", "key 4"},
		{"remb 1234560"}, // 18 bits of mantissa
		{"remb 4611686018427387904"},
		{"loss 5 255"},
		{"key 2"},
		{"nack 2 1"}, // then the 16 bits of 0xffff: 2 to 17
	}
	for s := 2; s <= 17; s++ {
		want[8] = append(want[8], fmt.Sprint("nack 2 ", s))
	}
	for i, b := range rtcpSamples(t) {
		var e rtcpEvents
		walkRTCP(b, &e)
		p, ok := pionEvents(b)
		if !ok {
			t.Fatalf("sample %d: pion rejects it", i)
		}
		if !reflect.DeepEqual(e.got, want[i]) || !reflect.DeepEqual(p, want[i]) {
			t.Errorf("sample %d: walk %v, pion %v, want %v", i, e.got, p, want[i])
		}
	}
	// Truncated or not RTCP: nothing past the damage, no panic.
	b := rtcpSamples(t)[1]
	for n := range b {
		walkRTCP(b[:n], &rtcpEvents{})
	}
	var e rtcpEvents
	walkRTCP([]byte{0x80, 0xc9, 0xff, 0xff, 0, 0, 0, 1}, &e)       // length past the end
	walkRTCP([]byte{0x40, 0xce, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2}, &e) // version 1
	if len(e.got) != 0 {
		t.Fatalf("damaged packets gave %v", e.got)
	}
}

type rtcpCount struct{ n int }

func (c *rtcpCount) rtcpKeyframe(uint32)     { c.n++ }
func (c *rtcpCount) rtcpNack(uint32, uint16) { c.n++ }
func (c *rtcpCount) rtcpREMB(uint64)         { c.n++ }
func (c *rtcpCount) rtcpLoss(uint32, uint8)  { c.n++ }

// TestWalkRTCPDoesNotAllocate: reading a subscriber's RTCP costs no
// allocation (pion's ReadRTCP allocated a buffer and a struct per packet).
func TestWalkRTCPDoesNotAllocate(t *testing.T) {
	var all []byte
	for _, b := range rtcpSamples(t) {
		all = append(all, b...)
	}
	c := &rtcpCount{}
	if a := testing.AllocsPerRun(1000, func() { walkRTCP(all, c) }); a != 0 {
		t.Fatalf("%v allocations per compound packet", a)
	}
	if c.n == 0 {
		t.Fatal("nothing reported")
	}
}

// FuzzRTCPWalk: walkRTCP never panics on what a subscriber sends, and
// wherever pion's parser accepts the bytes it reports the same requests.
func FuzzRTCPWalk(f *testing.F) {
	for _, b := range rtcpSamples(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var e rtcpEvents
		walkRTCP(b, &e)
		p, ok := pionEvents(b)
		if !ok {
			return
		}
		// A REMB mantissa of 0 is 0 bit/s (and ignored by the
		// allocator); pion's float conversion makes it 2^(exponent+23).
		for i := range min(len(p), len(e.got)) {
			if e.got[i] == "remb 0" && strings.HasPrefix(p[i], "remb ") {
				p[i] = e.got[i]
			}
		}
		if !reflect.DeepEqual(e.got, p) && (len(e.got) > 0 || len(p) > 0) {
			t.Fatalf("walk %v, pion %v", e.got, p)
		}
	})
}

// TestRTCPForAnotherStream: a compound packet pion hands every stream it
// names does not make a DownTrack resend or ask for a keyframe on behalf
// of another SSRC of the connection.
func TestRTCPForAnotherStream(t *testing.T) {
	var plis atomic.Int32
	tr := newTrack("cid", webrtc.RTPCodecTypeVideo, vp8, func() { plis.Add(1) }, slog.Default())
	d, _ := bound(tr, 5)
	d.curIdx.Store(0)
	b, err := rtcp.Marshal([]rtcp.Packet{
		&rtcp.ReceiverReport{SSRC: 1, Reports: []rtcp.ReceptionReport{{SSRC: 5}, {SSRC: 6, FractionLost: 9}}},
		&rtcp.TransportLayerNack{SenderSSRC: 1, MediaSSRC: 6, Nacks: []rtcp.NackPair{{PacketID: 1}}},
		&rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 6},
		&rtcp.FullIntraRequest{SenderSSRC: 1, FIR: []rtcp.FIREntry{{SSRC: 6}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	walkRTCP(b, d)
	if d.nacks.Load() != 0 || plis.Load() != 0 || d.loss.Load() != 1 {
		t.Fatalf("for SSRC 6: %d NACKs counted, %d keyframe requests, loss %d (want 0, 0, 1: SSRC 5's block)", d.nacks.Load(), plis.Load(), d.loss.Load())
	}
	b, _ = rtcp.Marshal([]rtcp.Packet{&rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 5}, &rtcp.TransportLayerNack{SenderSSRC: 1, MediaSSRC: 5, Nacks: []rtcp.NackPair{{PacketID: 1}}}})
	walkRTCP(b, d)
	if d.nacks.Load() != 1 || plis.Load() != 1 {
		t.Fatalf("for its own SSRC: %d NACKs, %d keyframe requests, want 1 and 1", d.nacks.Load(), plis.Load())
	}
}

// FuzzSubscriberRTCP: what a direct connection's client sends, once
// decrypted, goes through the congestion controller's Take and walkRTCP
// to the DownTracks by SSRC; nothing a client sends may panic there or
// write outside the packet.
func FuzzSubscriberRTCP(f *testing.F) {
	for _, b := range rtcpSamples(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		bw, err := newBWE()
		if err != nil {
			t.Fatal(err)
		}
		tr := testTrack()
		d, _ := bound(tr, 2)
		s := &Subscriber{bwe: bw, downs: map[string]*DownTrack{"TR_a": d}}
		s.handleRTCP(append([]byte(nil), b...))
	})
}
