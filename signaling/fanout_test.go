package signaling

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-rtc/parley/rooms"
	"github.com/parley-rtc/parley/sfu"
)

// childServerEnv makes the test binary a bare Parley server (engine, rooms,
// signaling on 127.0.0.1) instead of running tests, so that a benchmark can
// read the server's own memory from /proc while its clients live in the
// parent process.
const childServerEnv = "PARLEY_TEST_CHILD_SERVER"

func TestMain(m *testing.M) {
	if os.Getenv(childServerEnv) == "1" {
		os.Exit(childServer())
	}
	os.Exit(m.Run())
}

// childServer serves until its stdin closes; it prints "url <ws url>".
func childServer() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	engine, err := sfu.NewEngine(sfu.Config{ListenIP: "127.0.0.1", IncludeLoopback: true}, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Rate limits that let a benchmark push the relay: 100 messages per
	// participant per 100 ms.
	mgr := rooms.NewManager(rooms.Config{MaxParticipants: 500, Data: rooms.DataConfig{RateLimit: 100, RateWindow: 100 * time.Millisecond}}, engine, log)
	// Every client comes from 127.0.0.1: lift the per-address socket limit.
	srv, err := NewServer(Config{Keys: map[string]string{testKey: testSecret}, MaxConnectionsPerIP: 1000}, mgr, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	fmt.Printf("url ws://%s/rtc\n", ln.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	if out := os.Getenv("PARLEY_TEST_CHILD_HEAP"); out != "" { // where the memory goes
		if f, err := os.Create(out); err == nil {
			_ = pprof.WriteHeapProfile(f)
			_ = f.Close()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	mgr.Close()
	_ = hs.Close()
	_ = engine.Close()
	return 0
}

// rssKiB reads a process's resident memory.
func rssKiB(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// BenchmarkDataRoom100 is the whole thing with real peers: a server in its
// own process and 100 pion participants in one room, all with their data
// channels open. It reports the server's resident memory per participant
// (two peer connections, DTLS, SCTP, data channels, presence) and the chat
// deliveries per second it relays end to end (every participant in turn
// sends a message that the 99 others receive), with the clients' own
// SCTP and DTLS on the same two cores. Run it with a fixed count of
// messages, e.g. -benchtime 3000x.
func BenchmarkDataRoom100(b *testing.B) {
	const n = 100
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childServerEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "url ") {
		b.Fatalf("child server: %q %v", line, err)
	}
	s := &testServer{url: strings.TrimSpace(strings.TrimPrefix(line, "url ")), key: testKey, secret: testSecret}
	time.Sleep(500 * time.Millisecond)
	idle := rssKiB(b, cmd.Process.Pid)

	clients := make([]*testClient, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 10)
	for i := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			clients[i] = joinClient(b, s, "fanout", fmt.Sprintf("p%03d", i))
			clients[i].channel(false)
		}()
	}
	wg.Wait()
	for _, c := range clients {
		waitFor(b, 60*time.Second, c.identity+" has everyone in its roster", func() bool { _, ok := c.lastPresence("p099"); return ok })
	}
	time.Sleep(2 * time.Second)
	joined := rssKiB(b, cmd.Process.Pid)

	received := func() (sum int64) {
		for _, c := range clients {
			sum += int64(len(c.got("chat")))
		}
		return sum
	}
	b.ResetTimer()
	t0 := time.Now()
	deadline := t0.Add(5 * time.Minute)
	for i := 0; i < b.N; i++ {
		clients[i%n].say(map[string]any{"type": "chat", "id": fmt.Sprintf("m%d", i), "text": "hello, this is one message to the whole room"})
		if i%n == n-1 || i == b.N-1 {
			// A round of 100 messages, then let the deliveries catch up,
			// as rate limits would.
			want := int64(i+1) * (n - 1)
			for received() < want {
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d deliveries after 5 minutes", received(), want)
				}
				time.Sleep(time.Millisecond)
			}
		}
	}
	elapsed := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(b.N)*(n-1)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(joined-idle)/n, "server-KiB/participant")
	b.ReportMetric(float64(rssKiB(b, cmd.Process.Pid)-idle)/n, "server-KiB/participant-after")
	for _, c := range clients {
		for _, e := range c.dataErrors() {
			b.Fatalf("%s got an error: %+v", c.identity, e)
		}
	}
	var sample chatMsg
	if m := clients[1].got("chat"); len(m) > 0 {
		_ = json.Unmarshal(m[0].raw, &sample)
	}
	if sample.Text == "" {
		b.Fatal("no chat message decoded")
	}
}
