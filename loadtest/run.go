// Package loadtest drives a running Parley server through its public
// protocol with pion clients (publishers of synthetic VP8 and Opus,
// subscribers that measure loss and forwarding latency), and reports what
// the clients saw and what the server spent (from its metrics endpoint).
package loadtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/parley-rtc/parley/rooms"
	"github.com/parley-rtc/parley/signaling"
)

// Config of a run.
type Config struct {
	URL          string // the server, http(s)://host:port
	Rooms        int
	Publishers   int // per room
	Subscribers  int // per room, receive only
	VideoBitrate int // bits per second of each publisher's video; 0: no video
	Audio        bool
	// KeyframeInterval of the synthetic video (default 2s).
	KeyframeInterval time.Duration
	Duration         time.Duration // of the measurement, after everyone joined
	// Key and Secret mint the tokens; without them, a server in
	// development mode gives them (/api/dev-token).
	Key, Secret string
	// MetricsURL is the server's /metrics (its CPU and memory); empty: none.
	MetricsURL string
	// Loopback restricts ICE to loopback addresses (server on this machine).
	Loopback bool
	// JoinConcurrency bounds the joins in flight (default 8).
	JoinConcurrency int
	Progress        io.Writer // a line a second; nil: quiet
}

// Validate fills defaults and names the first bad setting.
func (c *Config) Validate() error {
	switch {
	case c.URL == "":
		return errors.New("--url is required")
	case c.Rooms < 1:
		return errors.New("--rooms must be at least 1")
	case c.Publishers < 1:
		return errors.New("--publishers must be at least 1")
	case c.Subscribers < 0:
		return errors.New("--subscribers must not be negative")
	case c.VideoBitrate < 0:
		return errors.New("--video-bitrate must not be negative")
	case c.VideoBitrate == 0 && !c.Audio:
		return errors.New("publishers send nothing: set --video-bitrate or --audio")
	case c.Duration <= 0:
		return errors.New("--duration must be positive")
	}
	if c.KeyframeInterval <= 0 {
		c.KeyframeInterval = 2 * time.Second
	}
	if c.JoinConcurrency <= 0 {
		c.JoinConcurrency = 8
	}
	return nil
}

// Report is what a run measured.
type Report struct {
	Clients   int      `json:"clients"`
	Connected int      `json:"connected"`
	Failed    int      `json:"failed"`
	Errors    []string `json:"errors,omitempty"` // the first few

	JoinMS struct {
		P50, P95, P99 float64
	} `json:"join_ms"`

	Seconds         float64 `json:"seconds"` // measured
	PacketsSent     uint64  `json:"packets_sent"`
	PacketsExpected uint64  `json:"packets_expected"` // by the subscribers, from sequence numbers
	PacketsReceived uint64  `json:"packets_received"`
	PacketsLost     uint64  `json:"packets_lost"`
	LossRatio       float64 `json:"loss_ratio"`
	BitrateInBps    float64 `json:"bitrate_in_bps"`  // publishers to the server
	BitrateOutBps   float64 `json:"bitrate_out_bps"` // the server to subscribers

	LatencyMS struct {
		Samples       int
		P50, P99, Max float64
	} `json:"latency_ms"`

	Server *ServerCost `json:"server,omitempty"`
}

// ServerCost is the server's own spending over the measurement, from its
// metrics endpoint.
type ServerCost struct {
	CPUSeconds       float64 `json:"cpu_seconds"`
	CPUPercent       float64 `json:"cpu_percent"` // of one core
	PacketsForwarded float64 `json:"packets_forwarded"`
	// CPUPerPacketUS is server CPU microseconds per forwarded packet.
	CPUPerPacketUS float64 `json:"cpu_us_per_forwarded_packet"`
	// CPUSecondsPerMillion forwarded packets.
	CPUSecondsPerMillion float64 `json:"cpu_seconds_per_million_packets"`
	RSSStartBytes        float64 `json:"rss_start_bytes"`
	RSSMaxBytes          float64 `json:"rss_max_bytes"`
	SubscribedTracks     float64 `json:"subscribed_tracks"`
	// RSSPerSubscribedTrack is (max RSS - RSS before the clients) per
	// forwarded track.
	RSSPerSubscribedTrack float64 `json:"rss_bytes_per_subscribed_track"`
}

// Run joins every client, sends and measures for cfg.Duration, leaves,
// and reports. It stops early, cleaning up, when ctx ends.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ws, err := wsURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	api, err := NewAPI(cfg.Loopback)
	if err != nil {
		return nil, err
	}
	var idle metricsSample
	if cfg.MetricsURL != "" {
		if idle, err = scrape(ctx, cfg.MetricsURL); err != nil {
			return nil, fmt.Errorf("--metrics-url: %w", err)
		}
	}
	runID := randomID()
	rep := &Report{Clients: cfg.Rooms * (cfg.Publishers + cfg.Subscribers)}
	recv := &receiver{}
	sent := &sendCounters{}
	sendCtx, stopSending := context.WithCancel(ctx)
	defer stopSending()

	type job struct {
		room, identity string
		publisher      bool
	}
	var jobs []job
	for r := 0; r < cfg.Rooms; r++ {
		room := fmt.Sprintf("loadtest-%s-%d", runID, r)
		for i := 0; i < cfg.Publishers; i++ {
			jobs = append(jobs, job{room, fmt.Sprintf("pub-%d-%d-%s", r, i, runID), true})
		}
		for i := 0; i < cfg.Subscribers; i++ {
			jobs = append(jobs, job{room, fmt.Sprintf("sub-%d-%d-%s", r, i, runID), false})
		}
	}
	var mu sync.Mutex
	var clients []*client
	var joins []float64
	var senders sync.WaitGroup
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		rep.Failed++
		if len(rep.Errors) < 5 {
			rep.Errors = append(rep.Errors, err.Error())
		}
	}
	sem := make(chan struct{}, cfg.JoinConcurrency)
	var joining sync.WaitGroup
	for _, j := range jobs {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		joining.Add(1)
		go func() {
			defer joining.Done()
			defer func() { <-sem }()
			g := rooms.Grants{Subscribe: true}
			if j.publisher {
				g = rooms.Grants{Publish: true}
			}
			tok, err := token(ctx, cfg, j.room, j.identity, g)
			if err != nil {
				fail(err)
				return
			}
			c, err := dial(ctx, api, ws, j.room, j.identity, tok, recv)
			if err != nil {
				fail(err)
				return
			}
			if j.publisher {
				if err := startPublishing(sendCtx, c, cfg, sent, &senders); err != nil {
					c.close()
					fail(fmt.Errorf("%s: publish: %w", j.identity, err))
					return
				}
			}
			mu.Lock()
			clients = append(clients, c)
			joins = append(joins, float64(c.joinTime.Microseconds())/1000)
			mu.Unlock()
		}()
	}
	joining.Wait()
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	rep.Connected = len(clients)
	slices.Sort(joins)
	rep.JoinMS.P50, rep.JoinMS.P95, rep.JoinMS.P99 = quantile(joins, 0.5), quantile(joins, 0.95), quantile(joins, 0.99)
	if rep.Connected == 0 {
		return rep, fmt.Errorf("no client could join: %v", rep.Errors)
	}

	// Let ICE and DTLS settle and the first keyframes through, then
	// measure from a clean baseline.
	select {
	case <-time.After(2 * time.Second):
	case <-ctx.Done():
	}
	var start metricsSample
	if cfg.MetricsURL != "" {
		start, _ = scrape(ctx, cfg.MetricsURL)
	}
	base := struct{ sent, sentBytes, recv, recvBytes, expected, lost uint64 }{sent.packets.Load(), sent.bytes.Load(),
		recv.packets.Load(), recv.bytes.Load(), recv.expected(), recv.lossy.Load()}
	t0 := time.Now()
	maxRSS := start.rss
	tick := time.NewTicker(time.Second)
	prev := base
	prevAt := t0
	for measuring := true; measuring; {
		select {
		case <-ctx.Done():
			measuring = false
		case now := <-tick.C:
			if now.Sub(t0) >= cfg.Duration {
				measuring = false
			}
			cur := struct{ sent, sentBytes, recv, recvBytes, expected, lost uint64 }{sent.packets.Load(), sent.bytes.Load(),
				recv.packets.Load(), recv.bytes.Load(), recv.expected(), recv.lossy.Load()}
			line := fmt.Sprintf("t=%2.0fs clients %d/%d  in %.1f Mbps  out %.1f Mbps  loss %.2f%%", now.Sub(t0).Seconds(),
				rep.Connected, rep.Clients, mbps(cur.sentBytes-prev.sentBytes, now.Sub(prevAt)),
				mbps(cur.recvBytes-prev.recvBytes, now.Sub(prevAt)), 100*ratio(cur.lost-base.lost, cur.expected-base.expected))
			if cfg.MetricsURL != "" {
				if m, err := scrape(ctx, cfg.MetricsURL); err == nil {
					maxRSS = max(maxRSS, m.rss)
					line += fmt.Sprintf("  server cpu %.0f%%  rss %.0f MiB", 100*(m.cpu-start.cpu)/now.Sub(t0).Seconds(), m.rss/(1<<20))
				}
			}
			if cfg.Progress != nil {
				fmt.Fprintln(cfg.Progress, line)
			}
			prev, prevAt = cur, now
		}
	}
	tick.Stop()
	elapsed := time.Since(t0)
	var end metricsSample
	if cfg.MetricsURL != "" {
		end, _ = scrape(context.Background(), cfg.MetricsURL)
		maxRSS = max(maxRSS, end.rss)
	}
	rep.Seconds = elapsed.Seconds()
	rep.PacketsSent = sent.packets.Load() - base.sent
	rep.PacketsReceived = recv.packets.Load() - base.recv
	rep.PacketsExpected = recv.expected() - base.expected
	rep.PacketsLost = recv.lossy.Load() - base.lost
	rep.LossRatio = ratio(rep.PacketsLost, rep.PacketsExpected)
	rep.BitrateInBps = float64(sent.bytes.Load()-base.sentBytes) * 8 / elapsed.Seconds()
	rep.BitrateOutBps = float64(recv.bytes.Load()-base.recvBytes) * 8 / elapsed.Seconds()

	stopSending()
	senders.Wait()
	for _, c := range clients {
		c.close()
	}
	clients = nil
	lat := recv.finish(5 * time.Second)
	slices.Sort(lat)
	rep.LatencyMS.Samples = len(lat)
	if len(lat) > 0 {
		f := make([]float64, len(lat))
		for i, v := range lat {
			f[i] = float64(v) / 1000
		}
		rep.LatencyMS.P50, rep.LatencyMS.P99, rep.LatencyMS.Max = quantile(f, 0.5), quantile(f, 0.99), f[len(f)-1]
	}
	if cfg.MetricsURL != "" && end.cpu > 0 {
		s := &ServerCost{CPUSeconds: end.cpu - start.cpu, PacketsForwarded: end.packetsOut - start.packetsOut,
			RSSStartBytes: idle.rss, RSSMaxBytes: maxRSS, SubscribedTracks: end.subscribed}
		s.CPUPercent = 100 * s.CPUSeconds / elapsed.Seconds()
		if s.PacketsForwarded > 0 {
			s.CPUPerPacketUS = s.CPUSeconds / s.PacketsForwarded * 1e6
			s.CPUSecondsPerMillion = s.CPUSeconds / s.PacketsForwarded * 1e6
		}
		if start.subscribed > 0 {
			s.SubscribedTracks = start.subscribed
			s.RSSPerSubscribedTrack = (maxRSS - idle.rss) / start.subscribed
		}
		rep.Server = s
	}
	return rep, nil
}

func startPublishing(ctx context.Context, c *client, cfg Config, sc *sendCounters, wg *sync.WaitGroup) error {
	var tracks []*webrtc.TrackLocalStaticRTP
	var sources []string
	var video, audio *webrtc.TrackLocalStaticRTP
	var err error
	if cfg.VideoBitrate > 0 {
		if video, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", c.identity); err != nil {
			return err
		}
		tracks, sources = append(tracks, video), append(sources, rooms.SourceCamera)
	}
	if cfg.Audio {
		if audio, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", c.identity); err != nil {
			return err
		}
		tracks, sources = append(tracks, audio), append(sources, rooms.SourceMicrophone)
	}
	if err := c.publish(tracks, sources); err != nil {
		return err
	}
	if video != nil {
		wg.Add(1)
		go func() { defer wg.Done(); sendVideo(ctx, video, cfg.VideoBitrate, cfg.KeyframeInterval, sc) }()
	}
	if audio != nil {
		wg.Add(1)
		go func() { defer wg.Done(); sendAudio(ctx, audio, sc) }()
	}
	return nil
}

// token mints a join token, or gets one from a development-mode server.
func token(ctx context.Context, cfg Config, room, identity string, g rooms.Grants) (string, error) {
	if cfg.Key != "" {
		return signaling.MintToken(cfg.Key, cfg.Secret, signaling.TokenSpec{Room: room, Identity: identity, Name: identity, Grants: g, TTL: time.Hour + cfg.Duration})
	}
	q := url.Values{"room": {room}, "name": {"load"}, "identity": {identity}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.URL+"/api/dev-token?"+q.Encode(), nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("dev token: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return "", errors.New("the server has API keys: pass --key and --secret (or --config)")
	}
	var t struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&t); err != nil || t.Token == "" {
		return "", fmt.Errorf("dev token: %s %v", resp.Status, err)
	}
	// Development tokens grant everything; the load test wants receive-only
	// subscribers, which only a keyed server can give.
	return t.Token, nil
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(int(q*float64(len(sorted))), len(sorted)-1)]
}

func ratio(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func mbps(bytes uint64, d time.Duration) float64 { return float64(bytes) * 8 / d.Seconds() / 1e6 }

func randomID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
