package cluster

import (
	"io"
	"log/slog"
	"os"
	"testing"
	"time"
)

func testLog() *slog.Logger {
	var w io.Writer = io.Discard
	if os.Getenv("PARLEY_TEST_DEBUG") != "" {
		w = os.Stderr
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startNode joins a node to the Redis at addr until the test ends, with a
// fast heartbeat.
func startNode(t *testing.T, addr, id string) *Node {
	t.Helper()
	n, err := New(Config{Addr: addr, NodeID: id, AdvertiseURL: "http://" + id + ".invalid", Heartbeat: 100 * time.Millisecond,
		NodeTTL: 500 * time.Millisecond}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
