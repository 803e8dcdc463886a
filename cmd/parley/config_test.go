package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func writeFile(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "parley.yaml")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigPrecedence(t *testing.T) {
	c, err := loadConfig(nil, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.Listen != ":7880" || c.RTC.UDPPort != 7882 || c.Signaling.PingInterval != 10*time.Second || len(c.Keys) != 0 {
		t.Fatalf("defaults: %+v", c)
	}
	file := writeFile(t, "rtc:\n  udp_port: 9000\n  public_ips: [203.0.113.7]\nrooms:\n  max_participants: 5\nsignaling:\n  ping_interval: 3s\n")
	c, err = loadConfig([]string{"--config", file}, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.RTC.UDPPort != 9000 || c.Rooms.MaxParticipants != 5 || c.Signaling.PingInterval != 3*time.Second || c.RTC.PublicIPs[0] != "203.0.113.7" {
		t.Fatalf("file: %+v", c)
	}
	env := envOf(map[string]string{"PARLEY_CONFIG": file, "PARLEY_RTC_UDP_PORT": "9100", "PARLEY_KEYS": "k1:" + strings.Repeat("a", 32),
		"PARLEY_SIGNALING_ALLOWED_ORIGINS": "a.example, b.example"})
	c, err = loadConfig(nil, env)
	if err != nil {
		t.Fatal(err)
	}
	if c.RTC.UDPPort != 9100 || c.Rooms.MaxParticipants != 5 || len(c.Keys["k1"]) != 32 || len(c.Signaling.AllowedOrigins) != 2 {
		t.Fatalf("env over file: %+v", c)
	}
	c, err = loadConfig([]string{"--rtc.udp_port", "9200", "--turn.enabled=true", "--turn.public_ip", "198.51.100.1"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if c.RTC.UDPPort != 9200 || !c.TURN.Enabled {
		t.Fatalf("flag over env: %+v", c)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		args []string
		env  map[string]string
		file string
		key  string
	}{
		{file: "rtc:\n  udp_prot: 1\n", key: "udp_prot"},
		{file: "nonsense: true\n", key: "nonsense"},
		{args: []string{"--rtc.udp_port", "70000"}, key: "rtc.udp_port"},
		{args: []string{"--rtc.udp_port", "abc"}, key: "rtc.udp_port"},
		{env: map[string]string{"PARLEY_SIGNALING_PING_INTERVAL": "soon"}, key: "signaling.ping_interval"},
		{args: []string{"--rooms.max_participants", "0"}, key: "rooms.max_participants"},
		{args: []string{"--keys", "k:short"}, key: "keys.k"},
		{args: []string{"--http.listen", "nowhere"}, key: "http.listen"},
		{args: []string{"--log.level", "loud"}, key: "log.level"},
		{args: []string{"--http.tls_cert", "c.pem"}, key: "http.tls_key"},
	}
	for _, c := range cases {
		args := c.args
		if c.file != "" {
			args = append([]string{"--config", writeFile(t, c.file)}, args...)
		}
		_, err := loadConfig(args, envOf(c.env))
		if err == nil || !strings.Contains(err.Error(), c.key) {
			t.Errorf("%v %v %q: error %v does not name %s", c.args, c.env, c.file, err, c.key)
		}
	}
}

// TestExampleConfig: the shipped example loads and documents every key.
func TestExampleConfig(t *testing.T) {
	path := filepath.Join("..", "..", "configs", "parley.yaml")
	c, err := loadConfig([]string{"--config", path}, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if d := defaults(); c.HTTP.Listen != d.HTTP.Listen || c.RTC.UDPPort != d.RTC.UDPPort {
		t.Fatal("the example's values differ from the defaults")
	}
	raw, _ := os.ReadFile(path)
	text := string(raw)
	for _, l := range leaves(&c) {
		parts := strings.Split(l.name, ".")
		leafKey := parts[len(parts)-1]
		if !regexp.MustCompile(`(?m)^\s*#?\s*` + regexp.QuoteMeta(leafKey) + `:`).MatchString(text) {
			t.Errorf("configs/parley.yaml does not document %s", l.name)
		}
	}
}
