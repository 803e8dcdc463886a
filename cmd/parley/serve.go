package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/parley-rtc/parley/rooms"
	"github.com/parley-rtc/parley/sfu"
	"github.com/parley-rtc/parley/signaling"
	"github.com/parley-rtc/parley/turn"
	"github.com/parley-rtc/parley/web"
)

// Addrs are where a started server listens.
type Addrs struct {
	HTTP, UDP, TCP net.Addr
	TURN           *turn.Server
}

// run starts every part of the server and blocks until ctx is done, then
// shuts down gracefully. ready, when set, is called once it listens.
func run(ctx context.Context, cfg Config, log *slog.Logger, ready func(Addrs)) error {
	engine, err := sfu.NewEngine(sfu.Config{UDPPort: cfg.RTC.UDPPort, TCPPort: cfg.RTC.TCPPort, ListenIP: cfg.RTC.ListenIP,
		PublicIPs: cfg.RTC.PublicIPs, IncludeLoopback: cfg.RTC.IncludeLoopback}, log.With("part", "sfu"))
	if err != nil {
		return err
	}
	defer engine.Close()

	var ts *turn.Server
	scfg := signaling.Config{
		MaxMessageBytes: cfg.Signaling.MaxMessageBytes, PingInterval: cfg.Signaling.PingInterval,
		PongTimeout: cfg.Signaling.PongTimeout, WriteTimeout: cfg.Signaling.WriteTimeout,
		NegotiationTimeout: cfg.Signaling.NegotiationTimeout, AllowedOrigins: cfg.Signaling.AllowedOrigins, Keys: cfg.Keys,
	}
	switch {
	case cfg.TURN.Enabled:
		ts, err = turn.New(turn.Config{Enabled: true, Realm: "parley", Host: cfg.TURN.Host, PublicIP: cfg.TURN.PublicIP,
			ListenIP: cfg.TURN.ListenIP, UDPPort: cfg.TURN.UDPPort, TCPPort: cfg.TURN.TCPPort, TLSPort: cfg.TURN.TLSPort,
			CertFile: cfg.TURN.CertFile, KeyFile: cfg.TURN.KeyFile, RelayPortMin: cfg.TURN.RelayPortMin, RelayPortMax: cfg.TURN.RelayPortMax,
			Secret: cfg.TURN.Secret, CredentialTTL: cfg.TURN.CredentialTTL, AllowPeers: cfg.TURN.AllowPeers, DenyPeers: cfg.TURN.DenyPeers,
			UserQuota: cfg.TURN.UserQuota, TotalQuota: cfg.TURN.TotalQuota}, log.With("part", "turn"))
		if err != nil {
			return err
		}
		defer ts.Close()
		scfg.ICEServersFor = func(identity string) []signaling.ICEServer {
			stunURLs, turnURLs := ts.URLs()
			user, pass := ts.Credentials(identity)
			return []signaling.ICEServer{{URLs: stunURLs}, {URLs: turnURLs, Username: user, Credential: pass}}
		}
	case len(cfg.TURN.ExternalURLs) > 0:
		if len(cfg.TURN.Secret) < 32 {
			return fmt.Errorf("%w: turn.external_urls needs turn.secret (coturn's static-auth-secret, at least 32 characters)", errConfig)
		}
		ttl := cfg.TURN.CredentialTTL
		scfg.ICEServersFor = func(identity string) []signaling.ICEServer {
			user, pass := turn.Credentials(cfg.TURN.Secret, identity, ttl, time.Now())
			return []signaling.ICEServer{{URLs: cfg.TURN.ExternalURLs, Username: user, Credential: pass}}
		}
	}

	mgr := rooms.NewManager(rooms.Config{MaxParticipants: cfg.Rooms.MaxParticipants, MaxRooms: cfg.Rooms.MaxRooms,
		MaxTracksPerParticipant: cfg.Rooms.MaxTracksPerParticipant, NegotiationTimeout: cfg.Signaling.NegotiationTimeout},
		engine, log.With("part", "rooms"))
	defer mgr.Close()
	sig, err := signaling.NewServer(scfg, mgr, log.With("part", "signaling"))
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.Handle("/", web.Handler())
	mux.Handle("/rtc", sig)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	if h := sig.DevTokenHandler(); h != nil {
		mux.Handle("/api/dev-token", h)
	}
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http.listen %s: %w (is another server using the port?)", cfg.HTTP.Listen, err)
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

	scheme := "http"
	if cfg.HTTP.TLSCert != "" {
		scheme = "https"
	}
	host := "localhost"
	if h, _, _ := net.SplitHostPort(cfg.HTTP.Listen); h != "" && h != "0.0.0.0" && h != "::" {
		host = h
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if sig.DevMode() {
		log.Warn("DEVELOPMENT MODE: no API keys are configured, so anyone who can reach this server can mint join tokens at /api/dev-token. " +
			"Configure keys (keys: {mykey: <secret of 32+ characters>} in the config, or PARLEY_KEYS=mykey:secret) before exposing it.")
	}
	log.Info("media", "udp", engine.UDPAddr().String(), "ice_tcp", fmt.Sprint(engine.TCPAddr()))
	url := fmt.Sprintf("%s://%s/?room=demo", scheme, net.JoinHostPort(host, fmt.Sprint(port)))
	fmt.Fprintf(os.Stderr, "\n  Parley is running: open %s in two browser tabs\n\n", url)
	if ready != nil {
		a := Addrs{HTTP: ln.Addr(), UDP: engine.UDPAddr(), TCP: engine.TCPAddr(), TURN: ts}
		ready(a)
	}

	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server: %w", err)
		}
	}
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := sig.Shutdown(sctx); err != nil {
		log.Warn("signaling shutdown", "err", err)
	}
	_ = hs.Shutdown(sctx)
	return nil
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
