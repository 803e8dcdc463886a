package turn

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	pionturn "github.com/pion/turn/v4"
)

const testSecret = "test-secret-0123456789abcdef0123456789"

func startTURN(t *testing.T, mutate func(*Config)) *Server {
	t.Helper()
	cfg := Config{Enabled: true, PublicIP: "127.0.0.1", ListenIP: "127.0.0.1", UDPPort: -1, TCPPort: -1,
		RelayPortMin: 42000, RelayPortMax: 42999, Secret: testSecret, AllowPeers: []string{"127.0.0.0/8"}}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func uclient(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("turnutils_uclient")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("turnutils_uclient (Debian package coturn) is required in CI")
		}
		t.Skip("turnutils_uclient not installed (apt-get install coturn)")
	}
	return path
}

var lostRe = regexp.MustCompile(`Total lost packets (\d+)`)
var sentRe = regexp.MustCompile(`Total sent packets:?\s*(\d+)|tot_send_msgs=(\d+)`)

// runUclient runs coturn's client in client-to-client mode (-y) through our
// server and returns its output.
func runUclient(t *testing.T, s *Server, user, pass string, extra ...string) (string, error) {
	t.Helper()
	network := "udp"
	for _, e := range extra {
		if e == "-t" {
			network = "tcp"
		}
	}
	args := append([]string{"-u", user, "-w", pass, "-y", "-n", "20", "-m", "2", "-c", "-L", "127.0.0.1",
		"-p", strconv.Itoa(port(s.Addr(network)))}, extra...)
	args = append(args, "127.0.0.1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, uclient(t), args...).CombinedOutput()
	return string(out), err
}

func TestUclientRelaysWithValidCredentials(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			s := startTURN(t, nil)
			user, pass := s.Credentials("alice")
			var extra []string
			if transport == "tcp" {
				extra = []string{"-t"}
			}
			out, err := runUclient(t, s, user, pass, extra...)
			t.Log(out)
			if err != nil {
				t.Fatalf("uclient: %v", err)
			}
			m := lostRe.FindStringSubmatch(out)
			if m == nil {
				t.Fatal("no loss report in uclient output")
			}
			if m[1] != "0" {
				t.Fatalf("lost %s packets", m[1])
			}
			if st := s.Stats(); st.AllocationsTotal < 2 || st.BytesRelayed == 0 {
				t.Fatalf("stats %+v: expected allocations and relayed bytes", st)
			}
		})
	}
}

// refused: uclient exits non-zero after a 4xx answer to its Allocate
// (401 for unknown or expired credentials, 400 when the integrity check
// with the wrong password fails).
func refused(out string, err error) bool {
	return err != nil && regexp.MustCompile(`error 4\d\d`).MatchString(out) && !strings.Contains(out, "Total lost packets")
}

func TestUclientRefusals(t *testing.T) {
	s := startTURN(t, nil)
	user, _ := s.Credentials("mallory")
	out, err := runUclient(t, s, user, "wrong-password")
	if !refused(out, err) {
		t.Fatalf("wrong password accepted:\n%s", out)
	}
	expUser, expPass := Credentials(testSecret, "old", -time.Hour, time.Now())
	out, err = runUclient(t, s, expUser, expPass)
	if !refused(out, err) {
		t.Fatalf("expired credential accepted:\n%s", out)
	}
	if s.Stats().AuthFailures == 0 {
		t.Fatal("auth failures not counted")
	}

	// Without the loopback allow-list, relaying to 127.0.0.1 peers is refused.
	strict := startTURN(t, func(c *Config) { c.AllowPeers = nil })
	u, p := strict.Credentials("bob")
	out, err = runUclient(t, strict, u, p)
	if m := lostRe.FindStringSubmatch(out); err == nil && m != nil && m[1] == "0" {
		t.Fatalf("relay to a loopback peer went through:\n%s", out)
	}
	if strict.Stats().PeersRefused == 0 {
		t.Fatalf("no peer was refused:\n%s", out)
	}
}

func TestUserQuota(t *testing.T) {
	s := startTURN(t, func(c *Config) { c.UserQuota = 2 })
	user, pass := s.Credentials("carol")
	var clients []*pionturn.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	var lastErr error
	for i := 0; i < 3; i++ {
		conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c, err := pionturn.NewClient(&pionturn.ClientConfig{STUNServerAddr: s.Addr("udp").String(), TURNServerAddr: s.Addr("udp").String(),
			Conn: conn, Username: user, Password: pass, Realm: "parley"})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Listen(); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		relay, err := c.Allocate()
		if i < 2 {
			if err != nil {
				t.Fatalf("allocation %d: %v", i+1, err)
			}
			defer relay.Close()
			continue
		}
		lastErr = err
	}
	if lastErr == nil || !strings.Contains(lastErr.Error(), "486") {
		t.Fatalf("third allocation: got %v, want a 486 Allocation Quota Reached error", lastErr)
	}
	if s.Stats().QuotaRefusals != 1 {
		t.Fatalf("stats %+v", s.Stats())
	}
}

func TestCredentials(t *testing.T) {
	now := time.Unix(1700000000, 0)
	u, p := Credentials("secret", "alice", time.Hour, now)
	if u != "1700003600:alice" {
		t.Fatalf("username %q", u)
	}
	if got, ok := checkUsername("secret", u, now); !ok || got != p {
		t.Fatal("fresh credential refused")
	}
	if _, ok := checkUsername("secret", u, now.Add(2*time.Hour)); ok {
		t.Fatal("expired credential accepted")
	}
	for _, bad := range []string{"alice", "x:alice", "", ":"} {
		if _, ok := checkUsername("secret", bad, now); ok {
			t.Fatalf("%q accepted", bad)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	bad := []Config{
		{Enabled: true},
		{Enabled: true, PublicIP: "nope"},
		{Enabled: true, PublicIP: "1.2.3.4", UDPPort: 70000},
		{Enabled: true, PublicIP: "1.2.3.4", TLSPort: 5349},
		{Enabled: true, PublicIP: "1.2.3.4", UDPPort: 3478, RelayPortMin: 60000, RelayPortMax: 50000},
		{Enabled: true, PublicIP: "1.2.3.4", UDPPort: 3478, Secret: "short"},
		{Enabled: true, PublicIP: "1.2.3.4", UDPPort: 3478, AllowPeers: []string{"x"}},
	}
	for i, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("case %d: %+v accepted", i, c)
		}
	}
	good := Config{Enabled: true, PublicIP: "1.2.3.4", UDPPort: 3478}
	if err := good.Validate(); err != nil || good.Host != "1.2.3.4" || good.UserQuota == 0 {
		t.Fatalf("%v %+v", err, good)
	}
}
