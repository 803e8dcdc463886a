package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// testConfig is a whole server on 127.0.0.1 with free ports, in
// development mode.
func testConfig(overrides ...func(*Config)) Config {
	cfg := defaults()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.RTC.UDPPort = 0
	cfg.RTC.TCPPort = -1
	cfg.RTC.ListenIP = "127.0.0.1"
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Metrics.Listen = "127.0.0.1:0"
	for _, o := range overrides {
		o(&cfg)
	}
	return cfg
}

func testLogger() *slog.Logger {
	var w io.Writer = io.Discard
	if os.Getenv("PARLEY_TEST_DEBUG") != "" {
		w = os.Stderr
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// launch starts run() and waits until it listens. stop cancels it and
// returns what run returned.
func launch(t testing.TB, overrides ...func(*Config)) (baseURL string, a Addrs, stop func() error) {
	t.Helper()
	cfg := testConfig(overrides...)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan Addrs, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, testLogger(), func(a Addrs) { ready <- a }, nil) }()
	select {
	case a = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("server did not start: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("server did not start within 10s")
	}
	var stopped bool
	var runErr error
	stop = func() error {
		if stopped {
			return runErr
		}
		stopped = true
		cancel()
		select {
		case runErr = <-done:
		case <-time.After(cfg.ShutdownTimeout + 10*time.Second):
			runErr = errors.New("server did not stop")
		}
		return runErr
	}
	return fmt.Sprintf("http://%s", a.HTTP), a, stop
}

// startServer runs a whole Parley server on loopback free ports, in
// development mode, until the test ends.
func startServer(t testing.TB, overrides ...func(*Config)) (string, Addrs) {
	t.Helper()
	base, a, stop := launch(t, overrides...)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("server stopped with: %v", err)
		}
	})
	return base, a
}

// TestShutdownTellsParticipants: on shutdown a joined participant gets
// leave with reason server_shutdown and a going-away close, run returns
// nil, and every port is released.
func TestShutdownTellsParticipants(t *testing.T) {
	base, a, stop := launch(t)
	resp, err := http.Get(base + "/api/dev-token?room=bye&name=Ann")
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	err = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if err != nil || tok.Token == "" {
		t.Fatalf("dev token: %v", err)
	}
	u := url.URL{Scheme: "ws", Host: a.HTTP.String(), Path: "/rtc"}
	ws, _, err := websocket.DefaultDialer.Dial(u.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	join := map[string]any{"type": "join", "data": map[string]any{"token": tok.Token, "protocol": 1, "room": "bye"}}
	if err := ws.WriteJSON(join); err != nil {
		t.Fatal(err)
	}
	type msg struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	read := func() msg {
		t.Helper()
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		var m msg
		if err := ws.ReadJSON(&m); err != nil {
			t.Fatalf("read: %v", err)
		}
		return m
	}
	if m := read(); m.Type != "joined" {
		t.Fatalf("first message %s %s, want joined", m.Type, m.Data)
	}

	stopErr := make(chan error, 1)
	go func() { stopErr <- stop() }()
	for {
		m := read()
		if m.Type != "leave" {
			continue // e.g. a subscriber offer
		}
		var l struct{ Reason string }
		_ = json.Unmarshal(m.Data, &l)
		if l.Reason != "server_shutdown" {
			t.Fatalf("leave reason %q, want server_shutdown", l.Reason)
		}
		break
	}
	_, _, err = ws.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("after leave: %v, want close 1001", err)
	}
	if err := <-stopErr; err != nil {
		t.Fatalf("run returned %v", err)
	}
	// The ports are free again.
	ln, err := net.Listen("tcp", a.HTTP.String())
	if err != nil {
		t.Fatalf("HTTP port still taken: %v", err)
	}
	ln.Close()
	pc, err := net.ListenPacket("udp", a.UDP.String())
	if err != nil {
		t.Fatalf("media port still taken: %v", err)
	}
	pc.Close()
}

// TestStartFailsCleanly: a taken HTTP port is an error naming http.listen,
// and what was already opened (the media port) is closed again.
func TestStartFailsCleanly(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	udpAddr := udp.LocalAddr().String()
	udp.Close()
	cfg := testConfig(func(c *Config) {
		c.HTTP.Listen = taken.Addr().String()
		_, p, _ := net.SplitHostPort(udpAddr)
		fmt.Sscan(p, &c.RTC.UDPPort)
	})
	err = run(context.Background(), cfg, testLogger(), func(Addrs) { t.Error("ready called") }, nil)
	if err == nil || !strings.Contains(err.Error(), "http.listen") {
		t.Fatalf("run: %v, want an error naming http.listen", err)
	}
	pc, err := net.ListenPacket("udp", udpAddr)
	if err != nil {
		t.Fatalf("media port not released after a failed start: %v", err)
	}
	pc.Close()

	// A bad config never gets as far as opening a port.
	bad := testConfig(func(c *Config) { c.Rooms.MaxRooms = -1 })
	if err := run(context.Background(), bad, testLogger(), nil, nil); err == nil || !strings.Contains(err.Error(), "rooms.max_rooms") {
		t.Fatalf("run with a bad config: %v", err)
	}
}

// TestMainExitCodes: config errors exit 2 and name the key; version works.
func TestMainExitCodes(t *testing.T) {
	var out, errb strings.Builder
	if code := realMain([]string{"serve", "--rtc.udp_port", "70000"}, envOf(nil), &out, &errb); code != 2 ||
		!strings.Contains(errb.String(), "rtc.udp_port") {
		t.Fatalf("bad port: exit %d, %q", code, errb.String())
	}
	errb.Reset()
	if code := realMain([]string{"--log.level", "loud"}, envOf(nil), &out, &errb); code != 2 || !strings.Contains(errb.String(), "log.level") {
		t.Fatalf("serve as the default command: exit %d, %q", code, errb.String())
	}
	errb.Reset()
	if code := realMain([]string{"frobnicate"}, envOf(nil), &out, &errb); code != 2 {
		t.Fatalf("unknown command: exit %d", code)
	}
	out.Reset()
	if code := realMain([]string{"version"}, envOf(nil), &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "parley ") {
		t.Fatalf("version: exit %d, %q", code, out.String())
	}
}
