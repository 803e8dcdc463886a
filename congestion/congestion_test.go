package congestion

import (
	"errors"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
)

func newController(t testing.TB) *Controller {
	t.Helper()
	c, err := New(Config{InitialBitrate: 1_000_000, MinBitrate: 50_000, MaxBitrate: 10_000_000})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConfigValidate(t *testing.T) {
	for _, cfg := range []Config{
		{InitialBitrate: 1, MinBitrate: 0, MaxBitrate: 2},
		{InitialBitrate: 5, MinBitrate: 2, MaxBitrate: 1},
		{InitialBitrate: 1, MinBitrate: 2, MaxBitrate: 3},
	} {
		if _, err := New(cfg); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%+v: %v, want ErrBadConfig", cfg, err)
		}
	}
}

type captureWriter struct {
	pkts []rtp.Packet
}

func (w *captureWriter) Write(h *rtp.Header, payload []byte, _ interceptor.Attributes) (int, error) {
	b, err := (&rtp.Packet{Header: *h, Payload: payload}).Marshal()
	if err != nil {
		return 0, err
	}
	var p rtp.Packet
	if err := p.Unmarshal(b); err != nil {
		return 0, err
	}
	w.pkts = append(w.pkts, p)
	return len(b), nil
}

func streamInfo(id int) *interceptor.StreamInfo {
	return &interceptor.StreamInfo{SSRC: 5, RTPHeaderExtensions: []interceptor.RTPHeaderExtension{
		{URI: sdp.SDESMidURI, ID: 1}, {URI: sdp.TransportCCURI, ID: id},
	}}
}

// TestStampNumbersPacketsAcrossStreams: every packet of the connection,
// whatever its stream, carries the next transport-wide sequence number in
// the negotiated extension, and is remembered with its size.
func TestStampNumbersPacketsAcrossStreams(t *testing.T) {
	c := newController(t)
	w1, w2 := &captureWriter{}, &captureWriter{}
	s1 := c.BindLocalStream(streamInfo(3), w1)
	s2 := c.BindLocalStream(streamInfo(3), w2)
	payload := make([]byte, 100)
	for i := 0; i < 10; i++ {
		w := s1
		if i%3 == 0 {
			w = s2
		}
		if _, err := w.Write(&rtp.Header{Version: 2, SSRC: 5, SequenceNumber: uint16(i)}, payload, nil); err != nil {
			t.Fatal(err)
		}
	}
	var seqs []uint16
	for _, p := range append(w2.pkts, w1.pkts...) {
		var ext rtp.TransportCCExtension
		if err := ext.Unmarshal(p.GetExtension(3)); err != nil {
			t.Fatalf("packet %d: %v", p.SequenceNumber, err)
		}
		seqs = append(seqs, ext.TransportSequence)
		_, size, ok := c.sent.lookup(ext.TransportSequence, c.nowUs())
		if !ok || size != p.MarshalSize() {
			t.Fatalf("seq %d remembered %v size %d, want %d", ext.TransportSequence, ok, size, p.MarshalSize())
		}
	}
	seen := map[uint16]bool{}
	for _, s := range seqs {
		if s >= 10 || seen[s] {
			t.Fatalf("transport sequence numbers %v are not 0..9 once each", seqs)
		}
		seen[s] = true
	}
	// A stream without the extension is left alone.
	var plain captureWriter
	if w := c.BindLocalStream(&interceptor.StreamInfo{SSRC: 6}, &plain); w != interceptor.RTPWriter(&plain) {
		t.Fatal("a stream without transport-cc was wrapped")
	}
}

type nopWriter struct{}

func (nopWriter) Write(*rtp.Header, []byte, interceptor.Attributes) (int, error) { return 0, nil }

// TestStampDoesNotAllocate: stamping and recording a forwarded packet is
// allocation free (the header's extension slice is reused, as the
// DownTrack reuses its header).
func TestStampDoesNotAllocate(t *testing.T) {
	c := newController(t)
	w := c.BindLocalStream(streamInfo(4), nopWriter{})
	h := &rtp.Header{Version: 2, SSRC: 5, Extensions: make([]rtp.Extension, 0, 4)}
	payload := make([]byte, 1000)
	n := testing.AllocsPerRun(10000, func() {
		h.Extension, h.Extensions = false, h.Extensions[:0]
		h.SequenceNumber++
		if _, err := w.Write(h, payload, nil); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations per packet, want 0", n)
	}
}

// TestStampAtUsesTheGivenClock: StampAt records the send time it is
// given, on the clock of Config.Epoch, and Stamp reads that same clock, so
// that a sender may stamp some packets with its own readings and others
// through the interceptor.
func TestStampAtUsesTheGivenClock(t *testing.T) {
	epoch := time.Now().Add(-time.Hour)
	c, err := New(Config{InitialBitrate: 1e6, MinBitrate: 1e5, MaxBitrate: 1e7, Epoch: epoch})
	if err != nil {
		t.Fatal(err)
	}
	var ext [2]byte
	h := &rtp.Header{Version: 2, SSRC: 5}
	at := int64(time.Hour/time.Microsecond) - 12345
	c.StampAt(3, h, 1000, &ext, at)
	if got, _, ok := c.sent.lookup(0, at+10); !ok || got != at {
		t.Fatalf("StampAt(%d) recorded %d (found %v)", at, got, ok)
	}
	h = &rtp.Header{Version: 2, SSRC: 5}
	before := time.Since(epoch).Microseconds()
	c.Stamp(3, h, 1000, &ext)
	after := time.Since(epoch).Microseconds()
	if got, _, ok := c.sent.lookup(1, after); !ok || got < before || got > after {
		t.Fatalf("Stamp recorded %d, want within [%d, %d] since the epoch (found %v)", got, before, after, ok)
	}
}

// TestFeedbackUpdateDoesNotAllocate: a feedback packet read through the
// interceptor, matched to the history and fed to the estimator, allocates
// nothing.
func TestFeedbackUpdateDoesNotAllocate(t *testing.T) {
	c := newController(t)
	for i := 0; i < 300; i++ {
		seq := c.sent.take(int64(i) * 1000)
		c.sent.record(seq, 1200, int64(i)*1000)
	}
	fb := recorded(t, 0, 300, func(i int) (int64, bool) { return 1_000_000 + int64(i)*1100, i%7 != 0 })
	src := fb[0]
	buf := make([]byte, 1500)
	r := c.BindRTCPReader(interceptor.RTCPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		return copy(b, src), a, nil
	}))
	rr := marshal(t, &rtcp.ReceiverReport{SSRC: 1, Reports: []rtcp.ReceptionReport{{SSRC: 5, FractionLost: 3}}})
	src = append(append([]byte{}, src...), rr...) // feedback first, then a receiver report
	n := testing.AllocsPerRun(1000, func() {
		if n, _, err := r.Read(buf, nil); err != nil || n != len(rr) {
			t.Fatalf("read %d, %v", n, err)
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations per feedback, want 0", n)
	}
}

// TestOtherRTCPPassesThrough: feedback is taken out of compound packets;
// receiver reports, NACK, PLI and REMB reach the reader unchanged, and a
// read of feedback alone waits for the next packet.
func TestOtherRTCPPassesThrough(t *testing.T) {
	c := newController(t)
	seq := c.sent.take(0)
	c.sent.record(seq, 1200, 0)
	fb := recorded(t, 0, 1, func(int) (int64, bool) { return 5000, true })[0]
	others := []rtcp.Packet{
		&rtcp.ReceiverReport{SSRC: 1, Reports: []rtcp.ReceptionReport{{SSRC: 5, FractionLost: 30}}},
		&rtcp.TransportLayerNack{SenderSSRC: 1, MediaSSRC: 5, Nacks: []rtcp.NackPair{{PacketID: 7, LostPackets: 3}}},
		&rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 5},
		&rtcp.ReceiverEstimatedMaximumBitrate{SenderSSRC: 1, Bitrate: 300_000, SSRCs: []uint32{5}},
	}
	want, err := rtcp.Marshal(others)
	if err != nil {
		t.Fatal(err)
	}
	reads := [][]byte{fb, append(append(append([]byte{}, want[:32]...), fb...), want[32:]...)}
	if _, err := rtcp.Unmarshal(want[:32]); err != nil {
		t.Fatalf("split is not on a packet boundary: %v", err)
	}
	r := c.BindRTCPReader(interceptor.RTCPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		if len(reads) == 0 {
			return 0, a, errors.New("no more")
		}
		n := copy(b, reads[0])
		reads = reads[1:]
		return n, a, nil
	}))
	buf := make([]byte, 1500)
	n, _, err := r.Read(buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != string(want) {
		t.Fatalf("read %x, want %x", buf[:n], want)
	}
	got, err := rtcp.Unmarshal(buf[:n])
	if err != nil || len(got) != len(others) {
		t.Fatalf("%d packets, %v", len(got), err)
	}
}

type marshalWriter struct{ buf [1500]byte }

func (w *marshalWriter) Write(h *rtp.Header, payload []byte, _ interceptor.Attributes) (int, error) {
	n, err := h.MarshalTo(w.buf[:])
	if err != nil {
		return 0, err
	}
	return n + copy(w.buf[n:], payload), nil
}

// TestStampConcurrentStreams: streams written from their own goroutines
// share the sequence and the history (run with -race), past a wrap of
// the ring, and every number is used once.
func TestStampConcurrentStreams(t *testing.T) {
	c := newController(t)
	const writers, each = 4, 3 * historySize / 4
	done := make(chan error, writers)
	for i := 0; i < writers; i++ {
		go func() {
			w := c.BindLocalStream(streamInfo(3), &marshalWriter{})
			h := &rtp.Header{Version: 2, SSRC: uint32(i)}
			payload := make([]byte, 200)
			for k := 0; k < each; k++ {
				h.Extension, h.Extensions = false, h.Extensions[:0]
				if _, err := w.Write(h, payload, nil); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for i := 0; i < writers; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if got := c.sent.next.Load(); got != writers*each {
		t.Fatalf("%d sequence numbers taken, want %d", got, writers*each)
	}
	for seq := uint16(writers*each - historySize); seq != uint16(writers*each); seq++ {
		if _, size, ok := c.sent.lookup(seq, c.nowUs()); !ok || size != 12+4+4+200 {
			t.Fatalf("seq %d: remembered %v, size %d (ring %d)", seq, ok, size, len(*c.sent.ring.Load()))
		}
	}
}
