// Package redistest runs a real redis-server for tests, on a free
// loopback port, without persistence. With CI=true a missing redis-server
// fails the test instead of skipping it.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server is one redis-server process.
type Server struct {
	t    testing.TB
	port int
	dir  string
	args []string // extra arguments (replica of, sentinel)

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Start runs redis-server on 127.0.0.1 and a free port until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server is not installed (make deps installs it)")
		}
		t.Skip("redis-server is not installed: run make deps")
	}
	s := &Server{t: t, port: freePort(t), dir: t.TempDir()}
	s.start()
	t.Cleanup(s.Stop)
	t.Cleanup(s.logOnFailure)
	return s
}

// StartReplica runs a replica of primary.
func StartReplica(t testing.TB, primary *Server) *Server {
	t.Helper()
	s := &Server{t: t, port: freePort(t), dir: t.TempDir(), args: []string{"--replicaof", "127.0.0.1", strconv.Itoa(primary.port)}}
	s.start()
	t.Cleanup(s.Stop)
	t.Cleanup(s.logOnFailure)
	return s
}

// StartSentinel runs a Redis Sentinel watching primary under the name
// master, quick to fail over (1 s down, quorum 1).
func StartSentinel(t testing.TB, primary *Server, master string) *Server {
	t.Helper()
	s := &Server{t: t, port: freePort(t), dir: t.TempDir(), args: []string{"--sentinel",
		"sentinel monitor " + master + " 127.0.0.1 " + strconv.Itoa(primary.port) + " 1",
		"sentinel down-after-milliseconds " + master + " 1000",
		"sentinel failover-timeout " + master + " 5000",
		"sentinel parallel-syncs " + master + " 1"}}
	s.start()
	t.Cleanup(s.Stop)
	t.Cleanup(s.logOnFailure)
	return s
}

// Addr is host:port of the server.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

func (s *Server) start() {
	s.t.Helper()
	args := []string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--protected-mode", "no", "--loglevel", "warning", "--logfile", filepath.Join(s.dir, "redis.log")}
	cmd := exec.Command("redis-server", append(args, s.args...)...)
	if len(s.args) > 0 && s.args[0] == "--sentinel" {
		// A sentinel takes its configuration from a file it rewrites.
		conf := filepath.Join(s.dir, "sentinel.conf")
		if _, err := os.Stat(conf); err != nil {
			if err := os.WriteFile(conf, []byte(strings.Join(s.args[1:], "\n")+"\n"), 0o600); err != nil {
				s.t.Fatal(err)
			}
		}
		cmd = exec.Command("redis-server", append([]string{conf, "--sentinel"}, args...)...)
	}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s.ping() == nil {
			return
		}
		if time.Now().After(deadline) {
			s.Stop()
			s.t.Fatalf("redis-server on %s did not answer PING within 10s", s.Addr())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ping sends one PING over a fresh connection.
func (s *Server) ping() error {
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("unexpected answer %q", line)
	}
	return nil
}

// logOnFailure shows the server's log when the test failed.
func (s *Server) logOnFailure() {
	if !s.t.Failed() {
		return
	}
	if b, err := os.ReadFile(filepath.Join(s.dir, "redis.log")); err == nil {
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		s.t.Logf("redis-server %s log (%v):\n%s", s.Addr(), s.args, b)
	}
}

// Stop kills the server (its data is gone: no persistence).
func (s *Server) Stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// Restart starts a stopped server again on the same port, empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
