// Package loadtest drives a running Parley server through its public
// protocol with pion clients (publishers of synthetic VP8 and Opus,
// subscribers that measure loss and forwarding latency), and reports what
// the clients saw and what the server spent (from its metrics endpoint).
package loadtest

import (
	"cmp"
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

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"github.com/parley-rtc/parley/rooms"
	"github.com/parley-rtc/parley/signaling"
)

// Config of a run.
type Config struct {
	URL string // the server, http(s)://host:port
	// Nodes are more nodes of a cluster (http(s)://host:port): clients
	// connect to URL and these in turn, so rooms have participants whose
	// sockets reach different nodes.
	Nodes       []string
	Rooms       int
	Publishers  int // per room
	Subscribers int // per room, receive only
	// VideoBitrate is the bits per second of each publisher's video (of
	// its top layer with Simulcast); 0: no video.
	VideoBitrate int
	Audio        bool
	// Simulcast sends the video as three RID layers, q, h and f, at a
	// tenth, a third and all of VideoBitrate, described in the offer.
	Simulcast bool
	// PublishersSubscribe makes publishers receive each other too (a
	// meeting: every participant publishes and subscribes).
	PublishersSubscribe bool
	// Warmup is the wait between the last join and the measurement, for
	// ICE, DTLS, first keyframes and (simulcast) the bandwidth estimate to
	// settle (default 2s).
	Warmup time.Duration
	// KeyframeInterval of the synthetic video (default 2s).
	KeyframeInterval time.Duration
	// Pace spreads each video frame's packets over bursts 5 ms apart at
	// 2.5 times the bitrate, as a browser's sender does, instead of
	// sending them back to back.
	Pace     bool
	Duration time.Duration // of the measurement, after everyone joined
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
	case c.Simulcast && c.VideoBitrate == 0:
		return errors.New("--simulcast needs video (--video-bitrate)")
	case c.Subscribers == 0 && !c.PublishersSubscribe:
		return errors.New("nobody receives: set --subscribers or --publishers-subscribe")
	case c.Duration <= 0:
		return errors.New("--duration must be positive")
	}
	if c.KeyframeInterval <= 0 {
		c.KeyframeInterval = 2 * time.Second
	}
	if c.JoinConcurrency <= 0 {
		c.JoinConcurrency = 8
	}
	if c.Warmup <= 0 {
		c.Warmup = 2 * time.Second
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

	// LayerPackets counts the video packets subscribers received by the
	// simulcast layer they carry (q, h, f); LayerSwitches counts changes
	// of layer in a subscriber's stream. Simulcast runs only.
	LayerPackets  map[string]uint64 `json:"layer_packets,omitempty"`
	LayerSwitches uint64            `json:"layer_switches,omitempty"`

	// PerSubscriber splits the window's packets by receiving client, so
	// loss concentrated on a few subscribers shows.
	PerSubscriber *PerSubscriber `json:"per_subscriber,omitempty"`

	Server *ServerCost `json:"server,omitempty"`
}

// PerSubscriber is the measurement's packets per receiving client.
type PerSubscriber struct {
	Receivers int `json:"receivers"` // connected clients that subscribe
	WithLoss  int `json:"with_loss"` // lost at least one packet
	NoMedia   int `json:"no_media"`  // received no packet in the window
	// ReceivedMin and ReceivedMax are the fewest and most packets one
	// receiver got.
	ReceivedMin uint64 `json:"received_min"`
	ReceivedMax uint64 `json:"received_max"`
	// Each is every receiver, the highest loss ratio first (then the
	// fewest packets received).
	Each []SubscriberPackets `json:"each"`
}

// SubscriberPackets is one receiving client's packets in the window.
type SubscriberPackets struct {
	Identity  string  `json:"identity"`
	Expected  uint64  `json:"expected"`
	Received  uint64  `json:"received"`
	Lost      uint64  `json:"lost"`
	LossRatio float64 `json:"loss_ratio"`
}

// perSubscriber is the window's packets of each receiver: the difference
// of two readings of receiver.counts; a receiver missing from both
// (no track ever arrived) counts as no media.
func perSubscriber(receivers []string, base, cur map[string]packetCount) *PerSubscriber {
	ps := &PerSubscriber{Receivers: len(receivers), Each: make([]SubscriberPackets, 0, len(receivers))}
	for i, who := range receivers {
		b, c := base[who], cur[who]
		e := SubscriberPackets{Identity: who, Expected: since(c.expected, b.expected),
			Received: since(c.received, b.received), Lost: since(c.lost, b.lost)}
		e.LossRatio = ratio(e.Lost, e.Expected)
		if e.Lost > 0 {
			ps.WithLoss++
		}
		if e.Received == 0 {
			ps.NoMedia++
		}
		if i == 0 || e.Received < ps.ReceivedMin {
			ps.ReceivedMin = e.Received
		}
		ps.ReceivedMax = max(ps.ReceivedMax, e.Received)
		ps.Each = append(ps.Each, e)
	}
	slices.SortStableFunc(ps.Each, func(a, b SubscriberPackets) int {
		if a.LossRatio != b.LossRatio {
			return cmp.Compare(b.LossRatio, a.LossRatio)
		}
		return cmp.Compare(a.Received, b.Received)
	})
	return ps
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
	// forwarded track; 0 when the RSS did not grow (a process that held
	// more before the run, such as a test binary that also runs the
	// server, may hand memory back during it).
	RSSPerSubscribedTrack float64 `json:"rss_bytes_per_subscribed_track"`
	// Receivers are the clients that subscribe (subscribers, and the
	// publishers with PublishersSubscribe); RSSPerReceiver is (max RSS -
	// RSS before the clients) per receiver, publishers' cost included.
	Receivers      int     `json:"receivers"`
	RSSPerReceiver float64 `json:"rss_bytes_per_receiver"`
	// ProcsMin and ProcsMax are the fewest and most Ps (GOMAXPROCS) the
	// server ran on in the measurement's once-a-second readings (it
	// adapts them to its load, rtc.adaptive_procs); 0 when not served.
	ProcsMin float64 `json:"gomaxprocs_min"`
	ProcsMax float64 `json:"gomaxprocs_max"`
	// ForwardDelay is the server's own forwarding delay over the
	// measurement (parley_forward_delay_seconds): from a packet's arrival
	// to the end of its write to a subscriber, without the network and the
	// clients; absent from a server that does not report it.
	ForwardDelay *ServerDelay `json:"forward_delay,omitempty"`
}

// ServerDelay summarises the server's forwarding delay histogram.
type ServerDelay struct {
	Copies   float64 `json:"copies"` // forwarded copies observed
	P50MS    float64 `json:"p50_ms"`
	P99MS    float64 `json:"p99_ms"`
	Under1ms float64 `json:"share_under_1ms"`
}

// Run joins every client, sends and measures for cfg.Duration, leaves,
// and reports. It stops early, cleaning up, when ctx ends.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var wss []string
	for _, u := range append([]string{cfg.URL}, cfg.Nodes...) {
		ws, err := wsURL(u)
		if err != nil {
			return nil, err
		}
		wss = append(wss, ws)
	}
	api, err := NewAPI(cfg.Loopback)
	if err != nil {
		return nil, err
	}
	pubAPI := api
	if cfg.Simulcast {
		if pubAPI, err = newAPI(cfg.Loopback, false); err != nil {
			return nil, err
		}
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
	var receivers []string // identities of the connected clients that subscribe
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
	for i, j := range jobs {
		if ctx.Err() != nil {
			break
		}
		ws := wss[i%len(wss)]
		sem <- struct{}{}
		joining.Add(1)
		go func() {
			defer joining.Done()
			defer func() { <-sem }()
			g := rooms.Grants{Subscribe: true}
			if j.publisher {
				g = rooms.Grants{Publish: true, Subscribe: cfg.PublishersSubscribe}
			}
			tok, err := token(ctx, cfg, j.room, j.identity, g)
			if err != nil {
				fail(err)
				return
			}
			c, err := dial(ctx, pubAPI, api, ws, j.room, j.identity, tok, recv)
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
			if !j.publisher || cfg.PublishersSubscribe {
				receivers = append(receivers, j.identity)
			}
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
	case <-time.After(cfg.Warmup):
	case <-ctx.Done():
	}
	var start metricsSample
	if cfg.MetricsURL != "" {
		start, _ = scrape(ctx, cfg.MetricsURL)
	}
	type reading struct {
		sent, sentBytes, recvBytes uint64
		recv                       packetCount
	}
	read := func() (reading, map[string]packetCount) {
		total, per := recv.counts()
		return reading{sent.packets.Load(), sent.bytes.Load(), recv.bytes.Load(), total}, per
	}
	base, basePer := read()
	baseLayers, baseSwitches := recv.layerCounts(), recv.switches.Load()
	t0 := time.Now()
	recv.sampling.Store(true)
	maxRSS := start.rss
	procs := procsRange{}
	procs.see(start.procs)
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
			cur, _ := read()
			line := fmt.Sprintf("t=%2.0fs clients %d/%d  in %.1f Mbps  out %.1f Mbps  loss %.2f%%", now.Sub(t0).Seconds(),
				rep.Connected, rep.Clients, mbps(cur.sentBytes-prev.sentBytes, now.Sub(prevAt)),
				mbps(cur.recvBytes-prev.recvBytes, now.Sub(prevAt)), 100*ratio(since(cur.recv.lost, base.recv.lost), cur.recv.expected-base.recv.expected))
			if cfg.MetricsURL != "" {
				if m, err := scrape(ctx, cfg.MetricsURL); err == nil {
					maxRSS = max(maxRSS, m.rss)
					procs.see(m.procs)
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
	recv.sampling.Store(false)
	elapsed := time.Since(t0)
	var end metricsSample
	if cfg.MetricsURL != "" {
		end, _ = scrape(context.Background(), cfg.MetricsURL)
		maxRSS = max(maxRSS, end.rss)
		procs.see(end.procs)
	}
	rep.Seconds = elapsed.Seconds()
	last, lastPer := read()
	rep.PacketsSent = last.sent - base.sent
	rep.PacketsReceived = last.recv.received - base.recv.received
	rep.PacketsExpected = last.recv.expected - base.recv.expected
	rep.PacketsLost = since(last.recv.lost, base.recv.lost)
	rep.LossRatio = ratio(rep.PacketsLost, rep.PacketsExpected)
	slices.Sort(receivers)
	rep.PerSubscriber = perSubscriber(receivers, basePer, lastPer)
	rep.BitrateInBps = float64(last.sentBytes-base.sentBytes) * 8 / elapsed.Seconds()
	rep.BitrateOutBps = float64(last.recvBytes-base.recvBytes) * 8 / elapsed.Seconds()
	if cfg.Simulcast {
		rep.LayerPackets = map[string]uint64{}
		for i, n := range recv.layerCounts() {
			if i > 0 {
				rep.LayerPackets[simulcastLayers[i-1].rid] = n - baseLayers[i]
			}
		}
		rep.LayerSwitches = recv.switches.Load() - baseSwitches
	}

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
			RSSStartBytes: idle.rss, RSSMaxBytes: maxRSS, SubscribedTracks: end.subscribed,
			ProcsMin: procs.min, ProcsMax: procs.max}
		s.CPUPercent = 100 * s.CPUSeconds / elapsed.Seconds()
		if s.PacketsForwarded > 0 {
			s.CPUPerPacketUS = s.CPUSeconds / s.PacketsForwarded * 1e6
			s.CPUSecondsPerMillion = s.CPUSeconds / s.PacketsForwarded * 1e6
		}
		grew := max(0, maxRSS-idle.rss)
		if start.subscribed > 0 {
			s.SubscribedTracks = start.subscribed
			s.RSSPerSubscribedTrack = grew / start.subscribed
		}
		s.Receivers = cfg.Rooms * cfg.Subscribers
		if cfg.PublishersSubscribe {
			s.Receivers += cfg.Rooms * cfg.Publishers
		}
		s.RSSPerReceiver = grew / float64(s.Receivers)
		if p50, p99, under, n, ok := delayQuantiles(start, end); ok {
			s.ForwardDelay = &ServerDelay{Copies: n, P50MS: p50 * 1e3, P99MS: p99 * 1e3, Under1ms: under}
		}
		rep.Server = s
	}
	return rep, nil
}

// startPublishing publishes the client's video (one track, or one track
// of three simulcast layers) and audio, and starts sending once the server
// answered.
func startPublishing(ctx context.Context, c *client, cfg Config, sc *sendCounters, wg *sync.WaitGroup) error {
	var descs []map[string]any
	var layers []*videoLayer
	var video *webrtc.RTPTransceiver
	var audio *webrtc.TrackLocalStaticRTP
	vp8 := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
	if cfg.VideoBitrate > 0 {
		cid := "video-" + c.identity
		if cfg.Simulcast {
			var wire []map[string]any
			for _, l := range simulcastLayers {
				tr, err := webrtc.NewTrackLocalStaticRTP(vp8, cid, c.identity, webrtc.WithRTPStreamID(l.rid))
				if err != nil {
					return err
				}
				rate := int(float64(cfg.VideoBitrate) * l.share)
				layers = append(layers, &videoLayer{rid: l.rid, bitrate: rate, track: tr})
				wire = append(wire, map[string]any{"rid": l.rid, "width": l.width, "height": l.height, "max_bitrate": rate})
			}
			descs = append(descs, map[string]any{"track_id": cid, "source": rooms.SourceCamera, "layers": wire})
		} else {
			tr, err := webrtc.NewTrackLocalStaticRTP(vp8, cid, c.identity)
			if err != nil {
				return err
			}
			layers = append(layers, &videoLayer{bitrate: cfg.VideoBitrate, track: tr})
			descs = append(descs, map[string]any{"track_id": cid, "source": rooms.SourceCamera})
		}
		for _, l := range layers {
			l.active.Store(true)
		}
		var err error
		if video, err = c.pub.AddTransceiverFromTrack(layers[0].track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
			return err
		}
		for _, l := range layers[1:] {
			if err := video.Sender().AddEncoding(l.track); err != nil {
				return err
			}
		}
		c.vmu.Lock()
		c.videoCID, c.videoLayers = cid, layers
		c.vmu.Unlock()
	}
	if cfg.Audio {
		var err error
		if audio, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio-"+c.identity, c.identity); err != nil {
			return err
		}
		tr, err := c.pub.AddTransceiverFromTrack(audio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		if err != nil {
			return err
		}
		go drainRTCP(tr.Sender().ReadRTCP)
		descs = append(descs, map[string]any{"track_id": audio.ID(), "source": rooms.SourceMicrophone})
	}
	if err := c.offer(descs); err != nil {
		return err
	}
	select {
	case <-c.answered:
	case <-c.done:
		return errors.New("the server closed the connection before answering")
	case <-time.After(15 * time.Second):
		return errors.New("no answer to the offer within 15s")
	case <-ctx.Done():
		return ctx.Err()
	}
	if video != nil {
		for _, l := range layers {
			if l.rid == "" {
				go l.drainRTCP(video.Sender().ReadRTCP)
				continue
			}
			exts, err := simulcastExts(video, l.rid)
			if err != nil {
				return err
			}
			l.exts = exts
			rid := l.rid
			go l.drainRTCP(func() ([]rtcp.Packet, interceptor.Attributes, error) { return video.Sender().ReadSimulcastRTCP(rid) })
		}
		wg.Add(1)
		go func() { defer wg.Done(); sendVideo(ctx, layers, cfg.KeyframeInterval, cfg.Pace, sc) }()
	}
	if audio != nil {
		wg.Add(1)
		go func() { defer wg.Done(); sendAudio(ctx, audio, sc) }()
	}
	return nil
}

// drainRTCP reads a sender's RTCP until it ends (the NACK responder only
// sees NACKs that are read).
func drainRTCP(read func() ([]rtcp.Packet, interceptor.Attributes, error)) {
	for {
		if _, _, err := read(); err != nil {
			return
		}
	}
}

// simulcastExts are the mid and rid header extensions of one layer: a
// browser writes them into every packet of a simulcast encoding; pion
// leaves it to the application.
func simulcastExts(tr *webrtc.RTPTransceiver, rid string) ([]headerExt, error) {
	var midID, ridID int
	for _, e := range tr.Sender().GetParameters().HeaderExtensions {
		switch e.URI {
		case "urn:ietf:params:rtp-hdrext:sdes:mid":
			midID = e.ID
		case "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id":
			ridID = e.ID
		}
	}
	if midID == 0 || ridID == 0 || tr.Mid() == "" {
		return nil, fmt.Errorf("simulcast: mid or rid header extension not negotiated (mid %d, rid %d, transceiver mid %q)", midID, ridID, tr.Mid())
	}
	return []headerExt{{uint8(midID), []byte(tr.Mid())}, {uint8(ridID), []byte(rid)}}, nil
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

// since is now-then of a counter that can go down (repairs of gaps that
// opened before then), never below 0.
// procsRange is the fewest and most of a series of GOMAXPROCS readings;
// 0 (not served) is not a reading.
type procsRange struct{ min, max float64 }

func (r *procsRange) see(v float64) {
	if v <= 0 {
		return
	}
	if r.min == 0 || v < r.min {
		r.min = v
	}
	r.max = max(r.max, v)
}

func since(now, then uint64) uint64 {
	if d := int64(now - then); d > 0 {
		return uint64(d)
	}
	return 0
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
