package loadtest

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// videoPacket is what a subscriber reads: the server's sequence number, a
// payload from layer marker m sent at sent.
func videoPacket(t *testing.T, seq uint16, m byte, sent time.Time) []byte {
	t.Helper()
	p := make([]byte, 100)
	p[0], p[1] = 0x10, 0x01
	binary.BigEndian.PutUint64(p[2:10], uint64(sent.UnixNano()))
	p[10] = m
	b, err := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, SSRC: 7}, Payload: p}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestObserveCountsAcrossLayerSwitches: loss is counted from the
// subscriber's own sequence numbers, so a layer switch (which the server
// makes continuous) is no loss; a real gap is; wrap-around and a late
// retransmission neither lose nor switch.
func TestObserveCountsAcrossLayerSwitches(t *testing.T) {
	r := &receiver{}
	r.sampling.Store(true)
	ts := &trackStats{video: true}
	now := time.Now()
	feed := func(seq uint16, m byte) {
		r.observe(ts, videoPacket(t, seq, m, now.Add(-time.Millisecond)), now.UnixNano())
	}
	feed(65533, 'q')
	feed(65534, 'q')
	feed(65535, 'h') // switch up
	feed(0, 'h')     // wrap
	feed(2, 'f')     // 1 lost, switch up
	feed(1, 'h')     // the lost one, retransmitted late: no switch back
	feed(1, 'h')     // a duplicate: not counted
	feed(3, 'f')
	if got := ts.expected.Load(); got != 7 {
		t.Errorf("expected %d, want 7 (65533..3)", got)
	}
	if ts.received.Load() != 7 || ts.lost.Load() != 0 {
		t.Errorf("received %d lost %d, want 7 and 0 (the repair filled the gap, the duplicate is not counted)", ts.received.Load(), ts.lost.Load())
	}
	feed(6, 'f') // 4 and 5 lost for good
	if ts.lost.Load() != 2 || ts.expected.Load() != 10 {
		t.Errorf("lost %d of %d, want 2 of 10", ts.lost.Load(), ts.expected.Load())
	}
	if c := r.layerCounts(); c != [4]uint64{0, 2, 3, 3} {
		t.Errorf("per layer %v, want q 2, h 3, f 3", c)
	}
	if r.switches.Load() != 2 {
		t.Errorf("%d switches, want 2 (q->h, h->f)", r.switches.Load())
	}
	if len(ts.samples) != 8 || ts.samples[0] < 900 || ts.samples[0] > 1100 {
		t.Errorf("latency samples %v, want 8 of about 1000 µs", ts.samples)
	}

	// Outside the measurement nothing is sampled, everything is counted.
	r.sampling.Store(false)
	feed(7, 'f')
	if len(ts.samples) != 8 || ts.received.Load() != 9 {
		t.Errorf("%d samples, %d packets after the measurement", len(ts.samples), ts.received.Load())
	}
}

func TestValidate(t *testing.T) {
	ok := Config{URL: "http://x", Rooms: 1, Publishers: 1, Subscribers: 1, VideoBitrate: 1, Duration: time.Second}
	for name, mod := range map[string]func(*Config){
		"nothing sent":         func(c *Config) { c.VideoBitrate, c.Audio = 0, false },
		"simulcast, no video":  func(c *Config) { c.VideoBitrate, c.Audio, c.Simulcast = 0, true, true },
		"nobody receives":      func(c *Config) { c.Subscribers = 0 },
		"no publishers":        func(c *Config) { c.Publishers = 0 },
		"no duration":          func(c *Config) { c.Duration = 0 },
		"negative subscribers": func(c *Config) { c.Subscribers = -1 },
	} {
		c := ok
		mod(&c)
		if c.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	meeting := ok
	meeting.Subscribers, meeting.PublishersSubscribe = 0, true
	if err := meeting.Validate(); err != nil || meeting.Warmup != 2*time.Second {
		t.Errorf("meeting: %v, warmup %s", err, meeting.Warmup)
	}
}

// TestDelayQuantiles: quantiles of the difference of two scrapes of the
// server's histogram, interpolated within a bucket.
func TestDelayQuantiles(t *testing.T) {
	inf := math.Inf(1)
	start := metricsSample{delay: map[float64]float64{0.001: 100, 0.002: 100, 0.005: 100, inf: 100}}
	// 100 new copies: 60 within 1 ms, 38 in (1, 2] ms, 2 in (2, 5] ms.
	end := metricsSample{delay: map[float64]float64{0.001: 160, 0.002: 198, 0.005: 200, inf: 200}}
	p50, p99, under, n, ok := delayQuantiles(start, end)
	if !ok || n != 100 || math.Abs(under-0.6) > 1e-9 {
		t.Fatalf("n %v under %v ok %v", n, under, ok)
	}
	if math.Abs(p50-0.001*50/60) > 1e-9 || math.Abs(p99-(0.002+0.003*0.5)) > 1e-9 {
		t.Fatalf("p50 %v p99 %v", p50, p99)
	}
	if _, _, _, _, ok := delayQuantiles(start, start); ok {
		t.Fatal("quantiles of nothing")
	}
	// Beyond the last bound: the bound.
	end = metricsSample{delay: map[float64]float64{0.001: 100, 0.002: 100, 0.005: 100, inf: 200}}
	if _, p99, _, _, _ := delayQuantiles(start, end); p99 != 0.005 {
		t.Fatalf("p99 beyond the last bound: %v", p99)
	}
}

// TestPerSubscriber: packets are counted per subscribing client across
// its tracks, the window is the difference of two readings (a late
// repair that takes a loss back included), a receiver no track reached
// counts as no media, and the lossiest comes first.
func TestPerSubscriber(t *testing.T) {
	r := &receiver{}
	now := time.Now()
	a1 := &trackStats{video: true, who: "a"}
	a2 := &trackStats{video: true, who: "a"}
	b := &trackStats{video: true, who: "b"}
	r.tracks = []*trackStats{a1, a2, b}
	feed := func(ts *trackStats, seqs ...uint16) {
		for _, s := range seqs {
			r.observe(ts, videoPacket(t, s, 'f', now), now.UnixNano())
		}
	}
	feed(a1, 1, 2)
	feed(b, 10, 12) // 11 lost before the window
	total, base := r.counts()
	if base["b"].lost != 1 || base["a"].received != 2 {
		t.Fatalf("base %+v", base)
	}
	if total != (packetCount{expected: 5, received: 4, lost: 1}) {
		t.Fatalf("total %+v, want the sum of a and b", total)
	}
	feed(a1, 3, 4)
	feed(a2, 100, 101, 102)
	feed(b, 11)         // the repair: the window gets one loss back
	feed(b, 13, 15, 16) // 14 lost
	_, per := r.counts()
	ps := perSubscriber([]string{"a", "b", "c"}, base, per)
	if ps.Receivers != 3 || ps.WithLoss != 0 || ps.NoMedia != 1 || ps.ReceivedMin != 0 || ps.ReceivedMax != 5 {
		t.Fatalf("summary %+v", ps)
	}
	// b: lost 14 but got 11 back, net 0 in the window; expected 13..16
	// plus 11 filled in: 4 more than before (10..12 was 3)
	want := []SubscriberPackets{
		{Identity: "c"},
		{Identity: "b", Expected: 4, Received: 4, Lost: 0},
		{Identity: "a", Expected: 5, Received: 5, Lost: 0},
	}
	for i, w := range want {
		if ps.Each[i] != w {
			t.Errorf("entry %d: %+v, want %+v", i, ps.Each[i], w)
		}
	}
	_, base = r.counts()
	feed(b, 19) // 17, 18 lost
	_, per = r.counts()
	ps = perSubscriber([]string{"a", "b"}, base, per)
	if ps.WithLoss != 1 || ps.Each[0].Identity != "b" || ps.Each[0].Lost != 2 || ps.Each[0].Expected != 3 || math.Abs(ps.Each[0].LossRatio-2.0/3) > 1e-9 {
		t.Fatalf("lossy first: %+v", ps.Each)
	}
}

func TestProcsRange(t *testing.T) {
	var r procsRange
	for _, v := range []float64{0, 2, 1, 0, 2} {
		r.see(v)
	}
	if r.min != 1 || r.max != 2 {
		t.Fatalf("%+v, want 1-2 (0 is no reading)", r)
	}
}

// TestPacedFrame: a paced 1.7 Mbit/s frame goes out in bursts of at most
// the pacer's budget (2.5 times the bitrate over 5 ms: two 1100-byte
// packets), each burst at least one packet, the frame whole and its last
// packet marked; unpaced, all at once.
func TestPacedFrame(t *testing.T) {
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "v", "s")
	if err != nil {
		t.Fatal(err)
	}
	v := &videoLayer{bitrate: 1_700_000, track: track, buf: make([]byte, maxVideoLoad)}
	var sc sendCounters
	budget := int(paceFactor * 1_700_000 / 8 * paceInterval.Seconds())
	v.start(1, true)
	var bursts []int
	for v.left > 0 {
		n, ok := v.send(budget, &sc)
		if !ok || n == 0 || n > budget && n > maxVideoLoad {
			t.Fatalf("burst of %d bytes (budget %d), ok %v", n, budget, ok)
		}
		bursts = append(bursts, n)
	}
	frame := 1_700_000 / 8 / videoFPS
	total := 0
	for _, b := range bursts {
		total += b
	}
	if total != frame || len(bursts) != 4 || sc.packets.Load() != 7 || !v.pkt.Marker {
		t.Fatalf("bursts %v (%d of %d bytes), %d packets, last marked %v", bursts, total, frame, sc.packets.Load(), v.pkt.Marker)
	}
	v.start(2, false)
	if n, ok := v.send(math.MaxInt, &sc); !ok || n != frame || v.left != 0 {
		t.Fatalf("unpaced: %d of %d bytes", n, frame)
	}
}

// TestScrapeAsksForNoCompression: the progress line scrapes the server's
// metrics every second; gzip there would be the tester's cost counted as
// the server's. The scrape still reads the values it needs.
func TestScrapeAsksForNoCompression(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if enc := r.Header.Get("Accept-Encoding"); enc != "identity" {
			http.Error(w, "Accept-Encoding "+enc, http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, "# HELP x\nprocess_cpu_seconds_total 1.5\nprocess_resident_memory_bytes 2e+07\nparley_packets_out_total 42\nparley_subscribed_tracks 4\n")
	}))
	defer srv.Close()
	m, err := scrape(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if m.cpu != 1.5 || m.rss != 2e7 || m.packetsOut != 42 || m.subscribed != 4 {
		t.Fatalf("read %+v", m)
	}
}
