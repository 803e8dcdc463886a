package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/parley-rtc/parley/loadtest"
)

// loadtestCmd runs parley loadtest: pion clients against a running server.
func loadtestCmd(args []string, env func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("parley loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg loadtest.Config
	fs.StringVar(&cfg.URL, "url", or(env("PARLEY_URL"), "http://localhost:7880"), "the server (env PARLEY_URL)")
	nodes := fs.String("nodes", "", "more nodes of a cluster, comma-separated http(s)://host:port: clients connect to --url and these in turn")
	fs.IntVar(&cfg.Rooms, "rooms", 1, "rooms")
	fs.IntVar(&cfg.Publishers, "publishers", 1, "publishers per room")
	fs.IntVar(&cfg.Subscribers, "subscribers", 5, "receive-only subscribers per room")
	bitrate := fs.String("video-bitrate", "1.7M", "video bits per second of each publisher (e.g. 500k, 1.7M; 0: no video)")
	fs.BoolVar(&cfg.Audio, "audio", true, "publishers also send Opus")
	audioOnly := fs.Bool("audio-only", false, "publishers send Opus only (same as --video-bitrate 0 --audio)")
	fs.BoolVar(&cfg.Simulcast, "simulcast", false, "send video as three RID layers q, h, f at a tenth, a third and all of --video-bitrate")
	fs.BoolVar(&cfg.PublishersSubscribe, "publishers-subscribe", false, "publishers also receive each other (a meeting: e.g. --publishers 4 --subscribers 0)")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "wait after the last join before measuring")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to measure, after everyone joined")
	fs.DurationVar(&cfg.KeyframeInterval, "keyframe-interval", 2*time.Second, "keyframe interval of the synthetic video")
	fs.BoolVar(&cfg.Pace, "pace", false, "send each video frame in bursts 5 ms apart at 2.5x the bitrate, as a browser paces, instead of back to back")
	fs.StringVar(&cfg.Key, "key", env("PARLEY_API_KEY"), "API key that mints the tokens (env PARLEY_API_KEY; default: --config or PARLEY_KEYS; none: the server's development tokens)")
	fs.StringVar(&cfg.Secret, "secret", env("PARLEY_API_SECRET"), "API secret (env PARLEY_API_SECRET)")
	configPath := fs.String("config", env("PARLEY_CONFIG"), "config file to take the key from")
	metricsURL := fs.String("metrics-url", "auto", "the server's /metrics, for its own CPU and memory (auto: http://<url host>:7889/metrics; empty: none)")
	fs.IntVar(&cfg.JoinConcurrency, "join-concurrency", 8, "joins in flight")
	loopback := fs.String("loopback", "auto", "ICE over loopback only: true, false, or auto (true when --url is on this machine)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	bad := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "parley loadtest: "+format+"\n", a...)
		return 2
	}
	var err error
	if cfg.VideoBitrate, err = parseBitrate(*bitrate); err != nil {
		return bad("--video-bitrate: %v", err)
	}
	if *audioOnly {
		cfg.VideoBitrate, cfg.Audio = 0, true
	}
	if cfg.Key == "" || cfg.Secret == "" {
		if cfg.Key, cfg.Secret, err = keyFromConfig(*configPath, cfg.Key, env); err != nil {
			return bad("%v", err)
		}
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Hostname() == "" {
		return bad("--url %q: want http(s)://host:port", cfg.URL)
	}
	for _, n := range strings.Split(*nodes, ",") {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		if nu, err := url.Parse(n); err != nil || nu.Hostname() == "" {
			return bad("--nodes: %q: want http(s)://host:port", n)
		}
		cfg.Nodes = append(cfg.Nodes, n)
	}
	local := u.Hostname() == "localhost" || net.ParseIP(u.Hostname()).IsLoopback()
	switch *loopback {
	case "auto":
		cfg.Loopback = local
	case "true", "false":
		cfg.Loopback = *loopback == "true"
	default:
		return bad("--loopback: true, false or auto")
	}
	switch *metricsURL {
	case "auto":
		cfg.MetricsURL = "http://" + net.JoinHostPort(u.Hostname(), "7889") + "/metrics"
	default:
		cfg.MetricsURL = *metricsURL
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	cfg.Progress = stderr
	rep, err := loadtest.Run(ctx, cfg)
	if err != nil && *metricsURL == "auto" && strings.Contains(err.Error(), "--metrics-url") {
		fmt.Fprintf(stderr, "parley loadtest: no metrics at %s (%v); the server's own cost will not be reported\n", cfg.MetricsURL, err)
		cfg.MetricsURL = ""
		rep, err = loadtest.Run(ctx, cfg)
	}
	if err != nil {
		fmt.Fprintf(stderr, "parley loadtest: %v\n", err)
		return 1
	}
	if *asJSON {
		b, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Fprintln(stdout, string(b))
	} else {
		printReport(stdout, cfg, rep)
	}
	if rep.Failed > 0 {
		return 1
	}
	return 0
}

func parseBitrate(s string) (int, error) {
	mult := 1.0
	switch {
	case strings.HasSuffix(s, "k"), strings.HasSuffix(s, "K"):
		mult, s = 1e3, s[:len(s)-1]
	case strings.HasSuffix(s, "M"), strings.HasSuffix(s, "m"):
		mult, s = 1e6, s[:len(s)-1]
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("%q is not a bitrate such as 500k or 1.7M", s)
	}
	return int(f * mult), nil
}

func printReport(w io.Writer, cfg loadtest.Config, r *loadtest.Report) {
	fmt.Fprintf(w, "clients:    %d connected, %d failed (%d rooms x %d publishers + %d subscribers)\n",
		r.Connected, r.Failed, cfg.Rooms, cfg.Publishers, cfg.Subscribers)
	for _, e := range r.Errors {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
	fmt.Fprintf(w, "join:       p50 %.0f ms  p95 %.0f ms  p99 %.0f ms\n", r.JoinMS.P50, r.JoinMS.P95, r.JoinMS.P99)
	fmt.Fprintf(w, "packets:    sent %d, subscribers expected %d, received %d, lost %d (%.3f%%) over %.1f s\n",
		r.PacketsSent, r.PacketsExpected, r.PacketsReceived, r.PacketsLost, 100*r.LossRatio, r.Seconds)
	if ps := r.PerSubscriber; ps != nil && ps.Receivers > 0 {
		fmt.Fprintf(w, "per sub:    %d receiving, %d with loss, %d received nothing; received %d-%d packets each",
			ps.Receivers, ps.WithLoss, ps.NoMedia, ps.ReceivedMin, ps.ReceivedMax)
		if worst := ps.Each[0]; worst.Lost > 0 {
			fmt.Fprintf(w, "; worst %s lost %d of %d (%.3f%%)", worst.Identity, worst.Lost, worst.Expected, 100*worst.LossRatio)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "bitrate:    in %.2f Mbps, out %.2f Mbps\n", r.BitrateInBps/1e6, r.BitrateOutBps/1e6)
	fmt.Fprintf(w, "latency:    p50 %.2f ms  p99 %.2f ms  max %.2f ms (%d samples, publisher to subscriber through the server)\n",
		r.LatencyMS.P50, r.LatencyMS.P99, r.LatencyMS.Max, r.LatencyMS.Samples)
	if r.LayerPackets != nil {
		fmt.Fprintf(w, "layers:     video packets received on q %d, h %d, f %d; %d layer switches\n",
			r.LayerPackets["q"], r.LayerPackets["h"], r.LayerPackets["f"], r.LayerSwitches)
	}
	if s := r.Server; s != nil {
		fmt.Fprintf(w, "server:     %.2f CPU s (%.0f%% of a core), %.0f packets forwarded: %.2f µs CPU per forwarded packet, %.2f CPU s per million\n",
			s.CPUSeconds, s.CPUPercent, s.PacketsForwarded, s.CPUPerPacketUS, s.CPUSecondsPerMillion)
		if s.ProcsMax > 0 {
			fmt.Fprintf(w, "procs:      the server ran on %.0f-%.0f Ps (GOMAXPROCS; rtc.adaptive_procs follows the load)\n", s.ProcsMin, s.ProcsMax)
		}
		fmt.Fprintf(w, "memory:     RSS %.0f MiB before the clients, %.0f MiB at most: %.0f KiB per subscribed track (%.0f tracks), %.0f KiB per receiving participant (%d)\n",
			s.RSSStartBytes/(1<<20), s.RSSMaxBytes/(1<<20), s.RSSPerSubscribedTrack/1024, s.SubscribedTracks, s.RSSPerReceiver/1024, s.Receivers)
		if d := s.ForwardDelay; d != nil {
			fmt.Fprintf(w, "forwarding: p50 %.3f ms  p99 %.3f ms  %.2f%% within 1 ms (the server's own, arrival to written, %.0f copies)\n",
				d.P50MS, d.P99MS, 100*d.Under1ms, d.Copies)
		}
	}
}
