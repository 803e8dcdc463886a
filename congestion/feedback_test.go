package congestion

import (
	"errors"
	"testing"

	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/rtcp"
)

// ack is one packet of a feedback, as both parsers see it.
type ack struct {
	seq      uint16
	received bool
	deltaUs  int64
}

func walk(b []byte) ([]ack, error) {
	var f feedback
	if err := f.parse(b); err != nil {
		return nil, err
	}
	var out []ack
	for {
		seq, rec, d, ok := f.next()
		if !ok {
			return out, nil
		}
		out = append(out, ack{seq, rec, int64(d) * deltaUnitUs})
	}
}

// pionWalk reads b with pion's rtcp package, for comparison.
func pionWalk(b []byte) ([]ack, error) {
	var p rtcp.TransportLayerCC
	if err := p.Unmarshal(b); err != nil {
		return nil, err
	}
	var syms []uint16
	for _, c := range p.PacketChunks {
		switch c := c.(type) {
		case *rtcp.RunLengthChunk:
			for i := 0; i < int(c.RunLength) && len(syms) < int(p.PacketStatusCount); i++ {
				syms = append(syms, c.PacketStatusSymbol)
			}
		case *rtcp.StatusVectorChunk:
			syms = append(syms, c.SymbolList...)
		}
	}
	syms = syms[:min(len(syms), int(p.PacketStatusCount))]
	var out []ack
	di := 0
	for i, s := range syms {
		a := ack{seq: p.BaseSequenceNumber + uint16(i)}
		if s == rtcp.TypeTCCPacketReceivedSmallDelta || s == rtcp.TypeTCCPacketReceivedLargeDelta {
			if di >= len(p.RecvDeltas) {
				return nil, errors.New("pion: fewer deltas than received packets")
			}
			a.received, a.deltaUs = true, p.RecvDeltas[di].Delta
			di++
		}
		out = append(out, a)
	}
	return out, nil
}

// recorded builds feedback with pion's receiver side from arrivals
// (sequence number -> arrival time in µs; missing ones are lost).
func recorded(t testing.TB, base uint16, n int, arrival func(i int) (int64, bool)) [][]byte {
	t.Helper()
	r := twcc.NewRecorder(1)
	for i := 0; i < n; i++ {
		if at, ok := arrival(i); ok {
			r.Record(2, base+uint16(i), at)
		}
	}
	var out [][]byte
	for _, p := range r.BuildFeedbackPacket() {
		b, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func marshal(t testing.TB, p rtcp.Packet) []byte {
	t.Helper()
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.(*rtcp.TransportLayerCC); ok {
		// pion marshals the length field as set, not as written.
		l := len(b)/4 - 1
		b[2], b[3] = byte(l>>8), byte(l)
	}
	return b
}

func feedbackSeeds(t testing.TB) map[string][][]byte {
	return map[string][][]byte{
		"all received, 1 ms apart": recorded(t, 100, 50, func(i int) (int64, bool) { return 1_000_000 + int64(i)*1000, true }),
		"every third lost":         recorded(t, 65500, 80, func(i int) (int64, bool) { return 5_000_000 + int64(i)*700, i%3 != 0 }),
		"same arrival (run)":       recorded(t, 7, 200, func(i int) (int64, bool) { return 2_000_000 + int64(i/50)*250, true }),
		"large and negative deltas": recorded(t, 40000, 30, func(i int) (int64, bool) {
			if i%2 == 1 {
				return 3_000_000 + int64(i)*40_000 - 60_000, true
			}
			return 3_000_000 + int64(i)*40_000, true
		}),
		"burst loss": recorded(t, 1, 120, func(i int) (int64, bool) { return 9_000_000 + int64(i)*300, i < 10 || i > 90 }),
		"run-length and vectors by hand": {marshal(t, &rtcp.TransportLayerCC{
			Header:             rtcp.Header{Count: rtcp.FormatTCC, Type: rtcp.TypeTransportSpecificFeedback},
			SenderSSRC:         1,
			MediaSSRC:          2,
			BaseSequenceNumber: 65530,
			PacketStatusCount:  30,
			ReferenceTime:      0xfffff0,
			FbPktCount:         9,
			PacketChunks: []rtcp.PacketStatusChunk{
				&rtcp.RunLengthChunk{PacketStatusSymbol: rtcp.TypeTCCPacketReceivedSmallDelta, RunLength: 3},
				&rtcp.RunLengthChunk{PacketStatusSymbol: rtcp.TypeTCCPacketNotReceived, RunLength: 2},
				&rtcp.StatusVectorChunk{SymbolSize: rtcp.TypeTCCSymbolSizeOneBit, SymbolList: []uint16{1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 1, 1}},
				&rtcp.StatusVectorChunk{SymbolSize: rtcp.TypeTCCSymbolSizeTwoBit, SymbolList: []uint16{2, 1, 0, 2, 1, 1, 0}},
				&rtcp.RunLengthChunk{PacketStatusSymbol: rtcp.TypeTCCPacketReceivedLargeDelta, RunLength: 4},
			},
			RecvDeltas: []*rtcp.RecvDelta{
				{Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 250}, {Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 0},
				{Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 63750},
				{Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 500}, {Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 750},
				{Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 1000}, {Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 1250},
				{Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 1500}, {Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 1750},
				{Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 2000}, {Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 2250},
				{Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 2500},
				{Type: rtcp.TypeTCCPacketReceivedLargeDelta, Delta: -8000}, {Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 250},
				{Type: rtcp.TypeTCCPacketReceivedLargeDelta, Delta: 100_000}, {Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 250},
				{Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 500},
				{Type: rtcp.TypeTCCPacketReceivedLargeDelta, Delta: -250}, {Type: rtcp.TypeTCCPacketReceivedLargeDelta, Delta: 8_000_000},
				{Type: rtcp.TypeTCCPacketReceivedLargeDelta, Delta: 0}, {Type: rtcp.TypeTCCPacketReceivedLargeDelta, Delta: 1000},
			},
		})},
	}
}

// TestFeedbackMatchesPion: our walk reads what rtcp.TransportLayerCC.Unmarshal
// reads, packet by packet.
func TestFeedbackMatchesPion(t *testing.T) {
	for name, bufs := range feedbackSeeds(t) {
		if len(bufs) == 0 {
			t.Fatalf("%s: no feedback built", name)
		}
		for i, b := range bufs {
			want, err := pionWalk(b)
			if err != nil {
				t.Fatalf("%s #%d: pion: %v", name, i, err)
			}
			got, err := walk(b)
			if err != nil {
				t.Fatalf("%s #%d: %v", name, i, err)
			}
			if len(got) != len(want) {
				t.Fatalf("%s #%d: %d packets, pion reads %d", name, i, len(got), len(want))
			}
			for k := range got {
				if got[k] != want[k] {
					t.Fatalf("%s #%d: packet %d is %+v, pion reads %+v", name, i, k, got[k], want[k])
				}
			}
		}
	}
}

func TestFeedbackRejectsBadPackets(t *testing.T) {
	b := feedbackSeeds(t)["every third lost"][0]
	var f feedback
	for n := 0; n < len(b); n++ {
		if err := f.parse(b[:n]); !errors.Is(err, ErrShortFeedback) && !errors.Is(err, ErrNotFeedback) {
			t.Fatalf("parse of %d of %d bytes: %v", n, len(b), err)
		}
	}
	nack := marshal(t, &rtcp.TransportLayerNack{SenderSSRC: 1, MediaSSRC: 2, Nacks: []rtcp.NackPair{{PacketID: 5}}})
	if err := f.parse(append(nack, make([]byte, 20)...)); !errors.Is(err, ErrNotFeedback) {
		t.Fatalf("NACK parsed as feedback: %v", err)
	}
}

func TestFeedbackParseDoesNotAllocate(t *testing.T) {
	b := feedbackSeeds(t)["every third lost"][0]
	var f feedback
	n := testing.AllocsPerRun(1000, func() {
		if f.parse(b) != nil {
			t.Fatal("parse failed")
		}
		for _, _, _, ok := f.next(); ok; _, _, _, ok = f.next() {
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations per feedback, want 0", n)
	}
}

// FuzzTWCCFeedback: the walk never panics or reads past the packet, and
// reads what pion reads whenever pion accepts the packet.
func FuzzTWCCFeedback(f *testing.F) {
	for _, bufs := range feedbackSeeds(f) {
		for _, b := range bufs {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := walk(b)
		if err == nil && len(b) >= 16 && len(got) != int(uint16(b[14])<<8|uint16(b[15])) {
			t.Fatalf("%d packets, the header says %d", len(got), uint16(b[14])<<8|uint16(b[15]))
		}
		want, perr := pionWalk(b)
		if perr != nil {
			return
		}
		if err != nil {
			t.Fatalf("pion reads it, we do not: %v", err)
		}
		if len(got) != len(want) {
			t.Fatalf("%d packets, pion reads %d", len(got), len(want))
		}
		for k := range got {
			if got[k] != want[k] {
				t.Fatalf("packet %d is %+v, pion reads %+v", k, got[k], want[k])
			}
		}
	})
}
