package cluster

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/parley-rtc/parley/internal/redistest"
)

// TestDialNodeGone: a pipe to a node that listens to no pipe fails with
// ErrNodeGone, not ErrUnavailable: signaling tells the client
// node_unavailable (join) or resume_failed (resume) on it, and
// cluster_unavailable only when Redis itself does not answer.
func TestDialNodeGone(t *testing.T) {
	r := redistest.Start(t)
	n, err := New(Config{Addr: r.Addr(), NodeID: "dialer"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = n.Dial(ctx, "nobody", "127.0.0.1:1", []byte(`{}`))
	if !errors.Is(err, ErrNodeGone) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("Dial to a node that does not listen: %v, want ErrNodeGone", err)
	}
	r.Stop()
	_, err = n.Dial(ctx, "nobody", "127.0.0.1:1", []byte(`{}`))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Dial with Redis stopped: %v, want ErrUnavailable", err)
	}
}
