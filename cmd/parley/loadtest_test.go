package main

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/parley-rtc/parley/loadtest"
)

// TestLoadtestShort runs parley loadtest briefly against a whole server:
// every client connects, loss on loopback is under 1%, latency was
// measured, and the server's own CPU and memory were read from its
// metrics (numbers from the run; nothing here asserts a speed).
func TestLoadtestShort(t *testing.T) {
	base, a := startServer(t, withKeys)
	cfg := loadtest.Config{URL: base, Rooms: 2, Publishers: 1, Subscribers: 3, VideoBitrate: 500_000, Audio: true,
		Duration: 3 * time.Second, Key: opsKey, Secret: opsSecret, MetricsURL: "http://" + a.Metrics.String() + "/metrics", Loopback: true}
	var progress strings.Builder
	cfg.Progress = &progress
	goroutines := runtime.NumGoroutine()
	began := time.Now()
	rep := runClean(t, cfg, 8)
	t.Logf("progress:\n%s", progress.String())
	// Bounded: it stopped by itself (joins, 2 s warm-up, 3 s measured and
	// the goodbyes, well before the context's minute), and it cleaned up:
	// the server has no participant, WebSocket or subscribed track left,
	// and the pion clients' goroutines (dozens per client) are gone.
	if took := time.Since(began); took > 30*time.Second {
		t.Fatalf("the run took %v for a 3 s measurement", took)
	}
	eventually(t, 10*time.Second, "the server empty after the run", func() bool {
		m := scrape(t, a)
		for _, g := range []string{"parley_participants", "parley_websocket_connections", "parley_subscribed_tracks"} {
			if v, ok := m[g]; !ok || v != 0 {
				return false
			}
		}
		return true
	})
	checkBatched(t, scrape(t, a))
	eventually(t, 10*time.Second, "the clients' goroutines gone", func() bool { return runtime.NumGoroutine() <= goroutines+20 })
	s := rep.Server
	if s == nil || s.CPUSeconds <= 0 || s.PacketsForwarded <= 0 || s.RSSMaxBytes <= 0 || s.SubscribedTracks != 12 {
		t.Fatalf("server cost not measured: %+v", s)
	}
	// The server here is this test process, whose GOMAXPROCS nothing adapts.
	if p := float64(runtime.GOMAXPROCS(0)); s.ProcsMin != p || s.ProcsMax != p {
		t.Fatalf("server Ps %v-%v, want %v", s.ProcsMin, s.ProcsMax, p)
	}
	// The server's own forwarding delay: one observation per forwarded
	// copy (so about as many as forwarded packets, resends aside), with
	// quantiles in order.
	d := s.ForwardDelay
	if d == nil || d.Copies < 0.9*s.PacketsForwarded || d.Copies > 1.1*s.PacketsForwarded || d.P50MS <= 0 || d.P99MS < d.P50MS ||
		d.Under1ms <= 0 || d.Under1ms > 1 {
		t.Fatalf("forwarding delay not measured: %+v (forwarded %v)", d, s.PacketsForwarded)
	}
	// Per subscriber: each of the 6 receive-only clients, none empty, and
	// together the run's total.
	checkPerSubscriber(t, rep, 6)
	if !strings.Contains(progress.String(), "clients 8/8") {
		t.Fatalf("no progress lines: %q", progress.String())
	}
	t.Logf("%d packets, loss %.3f%%, latency p50 %.2f ms p99 %.2f ms, server %.1f µs CPU per forwarded packet, forwarding p50 %.3f ms p99 %.3f ms",
		rep.PacketsReceived, 100*rep.LossRatio, rep.LatencyMS.P50, rep.LatencyMS.P99, s.CPUPerPacketUS, d.P50MS, d.P99MS)

	// The command prints the same report, and refuses bad flags.
	var out, errb strings.Builder
	if code := realMain([]string{"loadtest", "--url", base, "--subscribers", "1", "--duration", "1s", "--video-bitrate", "fast"}, envOf(nil), &out, &errb); code != 2 ||
		!strings.Contains(errb.String(), "--video-bitrate") {
		t.Fatalf("bad bitrate: %d %q", code, errb.String())
	}
}

// TestLoadtestSimulcastMeeting runs parley loadtest --simulcast
// --publishers-subscribe briefly: three publishers send three RID layers
// each and receive each other, two more participants only receive. Every
// client connects, loss (by each subscriber's own sequence numbers, so
// across layer switches) is under 1%, latency was measured, the received
// video carries the layers' markers, and the publishers' receptions count.
func TestLoadtestSimulcastMeeting(t *testing.T) {
	base, a := startServer(t, withKeys)
	cfg := loadtest.Config{URL: base, Rooms: 1, Publishers: 3, Subscribers: 2, VideoBitrate: 600_000, Audio: true,
		Simulcast: true, PublishersSubscribe: true, Duration: 3 * time.Second, Key: opsKey, Secret: opsSecret,
		MetricsURL: "http://" + a.Metrics.String() + "/metrics", Loopback: true}
	rep := runClean(t, cfg, 5)
	video := rep.LayerPackets["q"] + rep.LayerPackets["h"] + rep.LayerPackets["f"]
	if len(rep.LayerPackets) != 3 || video == 0 || video >= rep.PacketsReceived {
		t.Fatalf("layers not counted: %v of %d packets", rep.LayerPackets, rep.PacketsReceived)
	}
	// 3 publishers x 2 tracks to the 2 subscribers, and to the other 2
	// publishers each. The server runs in this test's process, whose RSS
	// also holds earlier tests' garbage and may fall during the run: the
	// memory was read, but its growth is not this server's alone.
	checkPerSubscriber(t, rep, 5) // the publishers receive too
	if s := rep.Server; s == nil || s.SubscribedTracks != 24 || s.Receivers != 5 || s.RSSStartBytes <= 0 || s.RSSMaxBytes <= 0 || s.RSSPerReceiver < 0 {
		t.Fatalf("server cost: %+v", rep.Server)
	}
	t.Logf("%d packets, loss %.3f%%, latency p50 %.2f ms p99 %.2f ms, layers %v, %d switches, server %.1f µs CPU per forwarded packet",
		rep.PacketsReceived, 100*rep.LossRatio, rep.LatencyMS.P50, rep.LatencyMS.P99, rep.LayerPackets, rep.LayerSwitches, rep.Server.CPUPerPacketUS)
}

// runClean runs the load test and checks what every run on loopback must
// show: all clients connected, something received, loss under 1%, and
// latency measured.
func runClean(t *testing.T, cfg loadtest.Config, clients int) *loadtest.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := loadtest.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Connected != clients || rep.Failed != 0 {
		t.Fatalf("connected %d, failed %d: %v", rep.Connected, rep.Failed, rep.Errors)
	}
	if rep.PacketsReceived == 0 || rep.LossRatio >= 0.01 {
		t.Fatalf("received %d packets, loss %.3f%%", rep.PacketsReceived, 100*rep.LossRatio)
	}
	if rep.LatencyMS.Samples == 0 || rep.LatencyMS.P50 <= 0 || rep.LatencyMS.Max < rep.LatencyMS.P99 {
		t.Fatalf("latency not measured: %+v", rep.LatencyMS)
	}
	return rep
}

// checkPerSubscriber: the report lists every receiving client once, each
// got media, and the per-subscriber packets add up to the totals (both
// come from one reading of every track's counters; a subscriber whose
// window took back more losses than it had counts 0, not less, so the
// parts' losses are at least the total's).
func checkPerSubscriber(t *testing.T, rep *loadtest.Report, receivers int) {
	t.Helper()
	ps := rep.PerSubscriber
	if ps == nil || ps.Receivers != receivers || len(ps.Each) != receivers || ps.NoMedia != 0 || ps.ReceivedMin == 0 || ps.ReceivedMax < ps.ReceivedMin {
		t.Fatalf("per subscriber: %+v", ps)
	}
	seen := map[string]bool{}
	var received, expected, lost uint64
	for _, e := range ps.Each {
		if seen[e.Identity] || e.Received == 0 || e.Expected == 0 {
			t.Fatalf("per subscriber entry %+v (seen before: %v)", e, seen[e.Identity])
		}
		seen[e.Identity] = true
		received += e.Received
		expected += e.Expected
		lost += e.Lost
	}
	if received != rep.PacketsReceived || expected != rep.PacketsExpected || lost < rep.PacketsLost {
		t.Fatalf("per subscriber received %d expected %d lost %d, totals %d, %d and %d", received, expected, lost,
			rep.PacketsReceived, rep.PacketsExpected, rep.PacketsLost)
	}
}

// checkBatched: by default (rtc.batch_send) the server read the media
// socket with recvmmsg and sent the forwarded copies through the batches
// (sendbatch.go), with fewer system calls than packets and no error.
func checkBatched(t *testing.T, m map[string]float64) {
	t.Helper()
	calls, msgs, pkts, out := m["parley_batch_send_calls_total"], m["parley_batch_send_messages_total"], m["parley_batch_send_packets_total"], m["parley_packets_out_total"]
	reads, readPkts := m["parley_batch_recv_calls_total"], m["parley_batch_recv_packets_total"]
	_, hasGSO := m["parley_batch_send_gso"]
	// Resends, padding and what a busy subscriber's writer goroutine sends
	// go one by one; nearly every forwarded copy goes through a batch.
	if out == 0 || pkts < 0.5*out || pkts > out || msgs > pkts || calls >= pkts || calls == 0 || !hasGSO || m["parley_batch_send_errors_total"] != 0 ||
		reads == 0 || readPkts < reads {
		t.Fatalf("batch metrics: %v sendmmsg calls, %v messages, %v packets (gso %v), %v errors; %v RTP packets forwarded; %v recvmmsg calls, %v datagrams",
			calls, msgs, pkts, m["parley_batch_send_gso"], m["parley_batch_send_errors_total"], out, reads, readPkts)
	}
	t.Logf("%v of %v forwarded packets in %v messages, %v sendmmsg calls (GSO %v); %v datagrams in %v recvmmsg calls",
		pkts, out, msgs, calls, m["parley_batch_send_gso"], readPkts, reads)
}

// TestLoadtestNoBatch: with rtc.batch_send off the server forwards one
// system call per datagram, as cleanly, and serves no batch metrics (the
// publishers pace their frames, as browsers do).
func TestLoadtestNoBatch(t *testing.T) {
	base, a := startServer(t, withKeys, func(c *Config) { c.RTC.BatchSend = false })
	cfg := loadtest.Config{URL: base, Rooms: 1, Publishers: 1, Subscribers: 4, VideoBitrate: 800_000, Audio: true, Pace: true,
		Duration: 3 * time.Second, Key: opsKey, Secret: opsSecret, MetricsURL: "http://" + a.Metrics.String() + "/metrics", Loopback: true}
	rep := runClean(t, cfg, 5)
	checkPerSubscriber(t, rep, 4)
	m := scrape(t, a)
	for k := range m {
		if strings.HasPrefix(k, "parley_batch_") {
			t.Fatalf("%s served with rtc.batch_send off", k)
		}
	}
}
