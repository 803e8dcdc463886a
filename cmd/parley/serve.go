package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/parley-rtc/parley/admin"
	"github.com/parley-rtc/parley/cluster"
	"github.com/parley-rtc/parley/events"
	"github.com/parley-rtc/parley/metrics"
	"github.com/parley-rtc/parley/rooms"
	"github.com/parley-rtc/parley/sfu"
	"github.com/parley-rtc/parley/signaling"
	"github.com/parley-rtc/parley/turn"
	"github.com/parley-rtc/parley/web"
)

// Addrs are where a started server listens.
type Addrs struct {
	HTTP, UDP, TCP net.Addr
	Metrics        net.Addr // nil when metrics are off
	TURN           *turn.Server
}

// run starts every part of the server and blocks until ctx is done, then
// shuts down gracefully within cfg.ShutdownTimeout: participants are told
// (leave, reason server_shutdown), then the HTTP server, the rooms, TURN and
// the media ports close. ready, when set, is called once it listens. When
// drain closes first (SIGTERM), the server drains: it takes no new
// participants, /readyz fails, and it waits up to cfg.DrainTimeout (or
// ctx) for the rooms to empty before shutting down.
func run(ctx context.Context, cfg Config, log *slog.Logger, ready func(Addrs), drain <-chan struct{}) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	// closers undo what has been started, newest first: on an error during
	// start-up, or at the end of the shutdown.
	var closers []func()
	closeAll := func(list []func()) {
		for i := len(list) - 1; i >= 0; i-- {
			list[i]()
		}
	}
	defer func() { closeAll(closers) }()

	engine, err := sfu.NewEngine(cfg.sfuConfig(), log.With("part", "sfu"))
	if err != nil {
		return err
	}
	closers = append(closers, func() { _ = engine.Close() })

	var ts *turn.Server
	scfg := cfg.signalingConfig()
	switch {
	case cfg.TURN.Enabled:
		ts, err = turn.New(cfg.turnConfig(), log.With("part", "turn"))
		if err != nil {
			return err
		}
		closers = append(closers, func() { _ = ts.Close() })
		scfg.ICEServersFor = func(identity string) []signaling.ICEServer {
			stunURLs, turnURLs := ts.URLs()
			user, pass := ts.Credentials(identity)
			servers := []signaling.ICEServer{{URLs: turnURLs, Username: user, Credential: pass}}
			if len(stunURLs) > 0 {
				servers = append([]signaling.ICEServer{{URLs: stunURLs}}, servers...)
			}
			return servers
		}
	case len(cfg.TURN.ExternalURLs) > 0:
		secret, urls, ttl := cfg.TURN.Secret, cfg.TURN.ExternalURLs, cfg.TURN.CredentialTTL
		scfg.ICEServersFor = func(identity string) []signaling.ICEServer {
			user, pass := turn.Credentials(secret, identity, ttl, time.Now())
			return []signaling.ICEServer{{URLs: urls, Username: user, Credential: pass}}
		}
	}

	bus := events.NewBus(0)
	rcfg := cfg.roomsConfig()
	var node *cluster.Node
	rcfg.Events = func(ev rooms.Event) {
		bus.Publish(ev)
		if node != nil && ev.Type == rooms.EventRoomFinished {
			node.Release(ev.Room)
		}
	}
	mgr := rooms.NewManager(rcfg, engine, log.With("part", "rooms"))
	closers = append(closers, mgr.Close)

	// The HTTP listener first: a node registers the URL it serves at.
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http.listen %s: %w (is another server using the port?)", cfg.HTTP.Listen, err)
	}
	closers = append(closers, func() { _ = ln.Close() })
	if cfg.clustered() {
		ccfg := cfg.clusterConfig(ln.Addr())
		ccfg.Load = func() cluster.Load {
			s := mgr.Stats()
			return cluster.Load{Rooms: s.Rooms, Participants: s.Participants, Tracks: s.SubscribedTracks}
		}
		ccfg.Rooms = mgr.Rooms
		ccfg.Lost = mgr.MoveRoom
		if node, err = cluster.New(ccfg, log.With("part", "cluster")); err != nil {
			return err
		}
		closers = append(closers, node.Close)
		scfg.Cluster = node
		if len(scfg.Keys) == 0 {
			ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			scfg.DevSecret, err = node.SharedSecret(ctx, "dev-token", randomSecret())
			cancel()
			if err != nil {
				log.Warn("Redis does not answer: this node's development tokens are good on this node only", "err", err)
			}
		}
		if err := node.Healthy(); err != nil {
			log.Error("Redis does not answer yet; the node keeps trying (see /readyz)", "err", err)
		}
		log.Info("cluster node", "id", node.ID(), "redis", cfg.Redis.Addr, "sentinel_master", cfg.Redis.SentinelMaster, "advertise_url", ccfg.AdvertiseURL)
		if cfg.Cluster.AdvertiseURL == "" && strings.HasPrefix(ccfg.AdvertiseURL, "http://127.0.0.1:") {
			log.Info("cluster.advertise_url is not set, so the other nodes reach this one at " + ccfg.AdvertiseURL +
				": fine while every node runs on this host; set it to an address they can reach otherwise (admin actions on this node's rooms go there)")
		}
	}
	sig, err := signaling.NewServer(scfg, mgr, log.With("part", "signaling"))
	if err != nil {
		return err
	}
	var apiCluster admin.Cluster             // nil: a single node
	var metricsCluster metrics.ClusterSource // nil: a single node
	if node != nil {
		// Chat history, room snapshots and events for every node; before
		// the node takes joins (it sets the rooms' chat store).
		state, err := startClusterState(cfg, node, mgr, bus, log)
		if err != nil {
			return err
		}
		closers = append(closers, state.Close)
		apiCluster, metricsCluster = state, state
	}
	if node != nil {
		node.OnPipe(sig.ServePipe)
	}
	var hooks *events.Webhooks
	if len(cfg.Webhooks.URLs) > 0 {
		wc := cfg.webhookConfig()
		wc.Key, wc.Secret = sig.SigningKey()
		if hooks, err = events.NewWebhooks(wc, log.With("part", "webhooks")); err != nil {
			return err
		}
		bus.OnEvent(hooks.Enqueue)
		closers = append(closers, hooks.Close)
	}
	api := admin.New(admin.Config{Rooms: mgr, Bus: bus, Tokens: sig, Log: log.With("part", "admin"), Cluster: apiCluster, Totals: func() admin.Totals {
		rs, es := mgr.Stats(), engine.Stats()
		return admin.Totals{Rooms: rs.Rooms, Participants: rs.Participants, PublishedTracks: rs.PublishedTracks,
			SubscribedTracks: rs.SubscribedTracks, PacketsIn: es.PacketsIn, PacketsOut: es.PacketsOut, BytesIn: es.BytesIn, BytesOut: es.BytesOut}
	}})

	mux := http.NewServeMux()
	mux.Handle("/", web.Handler())
	mux.Handle("/rtc", sig)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if mgr.Draining() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		if node != nil {
			if err := node.Healthy(); err != nil {
				http.Error(w, fmt.Sprintf("not ready: %v (calls in progress go on; new rooms need Redis)", err), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	if sig.DevMode() {
		mux.Handle("/api/dev-token", sig.DevTokenHandler())
	}
	api.Register(mux)

	var metricsAddr net.Addr
	if cfg.Metrics.Listen != "" {
		mln, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			return fmt.Errorf("metrics.listen %s: %w (is another server using the port? empty switches metrics off)", cfg.Metrics.Listen, err)
		}
		metricsAddr = mln.Addr()
		mmux := http.NewServeMux()
		mmux.Handle("/metrics", metrics.Handler(metrics.Sources{Rooms: mgr, Engine: engine, Signaling: sig, TURN: ts, Webhooks: hooks, Cluster: metricsCluster}))
		// Profiles for operators and the load tests, on the same private address.
		mmux.HandleFunc("/debug/pprof/", pprof.Index)
		mmux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mmux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		ms := &http.Server{Handler: mmux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = ms.Serve(mln) }()
		closers = append(closers, func() { _ = ms.Close() })
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	errc := make(chan error, 1)
	go func() {
		if cfg.HTTP.TLSCert != "" {
			errc <- hs.ServeTLS(ln, cfg.HTTP.TLSCert, cfg.HTTP.TLSKey)
		} else {
			errc <- hs.Serve(ln)
		}
	}()

	if sig.DevMode() {
		log.Warn("DEVELOPMENT MODE: no API keys are configured, so anyone who can reach this server can mint join tokens at /api/dev-token. " +
			"Configure keys before exposing it: keys: {mykey: <secret of 32+ characters>} in the config file, or PARLEY_KEYS=mykey:<secret>; " +
			"then mint tokens with parley token.")
	}
	iceTCP := "off"
	if a := engine.TCPAddr(); a != nil {
		iceTCP = a.String()
	}
	metricsAt := "off"
	if metricsAddr != nil {
		metricsAt = metricsAddr.String()
	}
	log.Info("listening", "http", ln.Addr().String(), "media_udp", engine.UDPAddr().String(), "ice_tcp", iceTCP,
		"metrics", metricsAt, "dev_mode", sig.DevMode())
	page := openURL(cfg, ln.Addr())
	fmt.Fprintf(os.Stderr, "\n  Parley is running: open %s in two browser tabs\n  Dashboard: %s\n\n", page,
		strings.Replace(page, "/?room=demo", "/dashboard.html", 1))
	if ready != nil {
		ready(Addrs{HTTP: ln.Addr(), UDP: engine.UDPAddr(), TCP: engine.TCPAddr(), Metrics: metricsAddr, TURN: ts})
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case <-drain:
		log.Info("draining: no new participants; waiting for the rooms to empty", "timeout", cfg.DrainTimeout)
		mgr.Drain()
		if node != nil {
			// Other nodes take the rooms: participants join again there.
			leavePlacement(ctx, node)
			mgr.MoveAll()
		}
		dctx, cancel := context.WithTimeout(ctx, cfg.DrainTimeout)
		if err := mgr.WaitEmpty(dctx); err != nil {
			log.Info("draining ended before the rooms emptied", "why", context.Cause(dctx), "rooms", len(mgr.Rooms()))
		} else {
			log.Info("drained: every room is empty")
		}
		cancel()
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			serveErr = fmt.Errorf("http server: %w", err)
		}
	}
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	list := closers
	closers = nil
	done := make(chan struct{})
	if node != nil {
		// Out of placement before the participants are told to move.
		leavePlacement(sctx, node)
	}
	go func() {
		defer close(done)
		api.Close() // event streams end, so the HTTP shutdown need not wait for them
		if err := sig.Shutdown(sctx); err != nil {
			log.Warn("signaling shutdown", "err", err)
		}
		if err := hs.Shutdown(sctx); err != nil {
			log.Warn("http shutdown", "err", err)
			_ = hs.Close()
		}
		closeAll(list)
	}()
	select {
	case <-done:
	case <-sctx.Done():
		// A connection that never finished (or never sent) a request must
		// not keep the server up: close what is left and finish.
		log.Warn("shutdown_timeout reached; closing the remaining connections", "timeout", cfg.ShutdownTimeout)
		_ = hs.Close()
		<-done
	}
	log.Info("stopped")
	return serveErr
}

// openURL is the demo page address to print: localhost when listening on
// every interface.
func openURL(cfg Config, addr net.Addr) string {
	scheme := "http"
	if cfg.HTTP.TLSCert != "" {
		scheme = "https"
	}
	host := "localhost"
	if h, _, _ := net.SplitHostPort(cfg.HTTP.Listen); h != "" && h != "0.0.0.0" && h != "::" {
		host = h
	}
	port := addr.(*net.TCPAddr).Port
	return fmt.Sprintf("%s://%s/?room=demo", scheme, net.JoinHostPort(host, strconv.Itoa(port)))
}

func newLogger(cfg Config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(strings.ToUpper(cfg.Log.Level)))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// leavePlacement takes a node out of placement and frees its rooms, so
// that the next joins place them on other nodes.
func leavePlacement(ctx context.Context, node *cluster.Node) {
	node.SetDraining(true)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	node.ReleaseAll(ctx)
}

func randomSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
