package main

import (
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"gopkg.in/yaml.v3"
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

var secret32 = strings.Repeat("a", 32)

func TestConfigLayers(t *testing.T) {
	file := writeFile(t, "rtc:\n  udp_port: 9000\n  public_ips: [203.0.113.7]\nrooms:\n  max_participants: 5\n"+
		"signaling:\n  ping_interval: 3s\nkeys:\n  k0: "+secret32+"\n")
	cases := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(c Config) bool
	}{
		{"defaults", nil, nil, func(c Config) bool {
			return reflect.DeepEqual(c, defaults()) && c.HTTP.Listen == ":7880" && c.RTC.UDPPort == 7882 &&
				c.RTC.IncludeLoopback && c.Signaling.PingInterval == 10*time.Second && len(c.Keys) == 0 &&
				c.ShutdownTimeout == 10*time.Second && c.Log.Level == "info" && c.Log.Format == "text"
		}},
		{"yaml via --config", []string{"--config", file}, nil, func(c Config) bool {
			return c.RTC.UDPPort == 9000 && c.Rooms.MaxParticipants == 5 && c.Signaling.PingInterval == 3*time.Second &&
				reflect.DeepEqual(c.RTC.PublicIPs, []string{"203.0.113.7"}) && c.Keys["k0"] == secret32 &&
				c.Rooms.MaxRooms == 1000 // untouched keys keep their defaults
		}},
		{"yaml via PARLEY_CONFIG", nil, map[string]string{"PARLEY_CONFIG": file}, func(c Config) bool {
			return c.RTC.UDPPort == 9000
		}},
		{"env over yaml", []string{"--config", file}, map[string]string{
			"PARLEY_RTC_UDP_PORT": "9100", "PARLEY_KEYS": "k1:" + secret32 + ",k2:" + secret32 + "b",
			"PARLEY_SIGNALING_ALLOWED_ORIGINS": "a.example, b.example", "PARLEY_RTC_INCLUDE_LOOPBACK": "false",
			"PARLEY_SHUTDOWN_TIMEOUT": "3s", "PARLEY_HTTP_LISTEN": "127.0.0.1:8000",
		}, func(c Config) bool {
			return c.RTC.UDPPort == 9100 && c.Rooms.MaxParticipants == 5 && len(c.Keys) == 2 && c.Keys["k2"] == secret32+"b" &&
				reflect.DeepEqual(c.Signaling.AllowedOrigins, []string{"a.example", "b.example"}) && !c.RTC.IncludeLoopback &&
				c.ShutdownTimeout == 3*time.Second && c.HTTP.Listen == "127.0.0.1:8000"
		}},
		{"flags over env", []string{"--config", file, "--rtc.udp_port", "9200", "--turn.enabled", "--turn.public_ip", "198.51.100.1",
			"--rtc.include_loopback=false", "--signaling.ping_interval=4s", "--log.format", "json"},
			map[string]string{"PARLEY_RTC_UDP_PORT": "9100", "PARLEY_SIGNALING_PING_INTERVAL": "5s"}, func(c Config) bool {
				return c.RTC.UDPPort == 9200 && c.TURN.Enabled && c.TURN.PublicIP == "198.51.100.1" && !c.RTC.IncludeLoopback &&
					c.Signaling.PingInterval == 4*time.Second && c.Log.Format == "json"
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := loadConfig(tc.args, envOf(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Fatalf("got %+v", c)
			}
		})
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  map[string]string
		file string
		want []string // every one must be in the message
	}{
		{name: "unknown nested key", file: "http:\n  listen: ':7880'\nrtc:\n  udp_prot: 1\n", want: []string{"rtc.udp_prot", "line 4"}},
		{name: "unknown top-level key", file: "nonsense: true\n", want: []string{"nonsense", "line 1"}},
		{name: "yaml: bad duration", file: "signaling:\n  ping_interval: soon\n", want: []string{"signaling.ping_interval", "line 2", "duration"}},
		{name: "yaml: bad number", file: "rtc:\n  udp_port: lots\n", want: []string{"rtc.udp_port", "line 2"}},
		{name: "yaml: bad port", file: "rtc:\n  udp_port: 70000\n", want: []string{"config: rtc.udp_port: 70000 is not a port (1-65535)"}},
		{name: "yaml: short secret", file: "keys:\n  mykey: short\n", want: []string{"keys.mykey", "32"}},
		{name: "yaml: syntax", file: "rtc:\n udp_port: 1\n  x: [\n", want: []string{"line"}},
		{name: "flag: port out of range", args: []string{"--rtc.udp_port", "70000"}, want: []string{"rtc.udp_port", "70000"}},
		{name: "flag: not a number", args: []string{"--rtc.udp_port", "abc"}, want: []string{"rtc.udp_port", "--rtc.udp_port"}},
		{name: "flag: tcp port", args: []string{"--rtc.tcp_port", "-5"}, want: []string{"rtc.tcp_port"}},
		{name: "env: bad duration", env: map[string]string{"PARLEY_SIGNALING_PING_INTERVAL": "soon"},
			want: []string{"signaling.ping_interval", "PARLEY_SIGNALING_PING_INTERVAL"}},
		{name: "env: bad bool", env: map[string]string{"PARLEY_RTC_INCLUDE_LOOPBACK": "maybe"}, want: []string{"rtc.include_loopback"}},
		{name: "env: bad keys", env: map[string]string{"PARLEY_KEYS": "nocolon"}, want: []string{"keys", "PARLEY_KEYS"}},
		{name: "zero participants", args: []string{"--rooms.max_participants", "0"}, want: []string{"rooms.max_participants"}},
		{name: "negative rooms", args: []string{"--rooms.max_rooms", "-1"}, want: []string{"rooms.max_rooms"}},
		{name: "negative tracks", args: []string{"--rooms.max_tracks_per_participant", "-3"}, want: []string{"rooms.max_tracks_per_participant"}},
		{name: "negative message size", args: []string{"--signaling.max_message_bytes", "-1"}, want: []string{"signaling.max_message_bytes"}},
		{name: "tiny message size", args: []string{"--signaling.max_message_bytes", "100"}, want: []string{"signaling.max_message_bytes"}},
		{name: "zero pong timeout", args: []string{"--signaling.pong_timeout", "0s"}, want: []string{"signaling.pong_timeout"}},
		{name: "pong before ping", args: []string{"--signaling.pong_timeout", "5s"}, want: []string{"signaling.pong_timeout"}},
		{name: "negative write timeout", args: []string{"--signaling.write_timeout", "-1s"}, want: []string{"signaling.write_timeout"}},
		{name: "zero negotiation timeout", args: []string{"--signaling.negotiation_timeout", "0s"}, want: []string{"signaling.negotiation_timeout"}},
		{name: "zero shutdown timeout", args: []string{"--shutdown_timeout", "0s"}, want: []string{"shutdown_timeout"}},
		{name: "short secret", args: []string{"--keys", "k:short"}, want: []string{"keys.k"}},
		{name: "bad api key", args: []string{"--keys", "a b:" + secret32}, want: []string{"keys"}},
		{name: "listen without port", args: []string{"--http.listen", "nowhere"}, want: []string{"http.listen"}},
		{name: "listen port out of range", args: []string{"--http.listen", ":99999"}, want: []string{"http.listen"}},
		{name: "cert without key", args: []string{"--http.tls_cert", "c.pem"}, want: []string{"http.tls_key"}},
		{name: "listen ip", args: []string{"--rtc.listen_ip", "localhost"}, want: []string{"rtc.listen_ip"}},
		{name: "public ip", args: []string{"--rtc.public_ips", "203.0.113.1,example.com"}, want: []string{"rtc.public_ips"}},
		{name: "log level", args: []string{"--log.level", "loud"}, want: []string{"log.level"}},
		{name: "log format", args: []string{"--log.format", "xml"}, want: []string{"log.format"}},
		{name: "turn without public ip", args: []string{"--turn.enabled"}, want: []string{"turn.public_ip"}},
		{name: "turn port", args: []string{"--turn.enabled", "--turn.public_ip", "198.51.100.1", "--turn.udp_port", "70000"},
			want: []string{"turn.udp_port"}},
		{name: "turn relay range", args: []string{"--turn.enabled", "--turn.public_ip", "198.51.100.1", "--turn.relay_port_min", "80"},
			want: []string{"turn.relay_port_min"}},
		{name: "turn short secret", args: []string{"--turn.enabled", "--turn.public_ip", "198.51.100.1", "--turn.secret", "x"},
			want: []string{"turn.secret"}},
		{name: "external turn without secret", args: []string{"--turn.external_urls", "turn:t.example.com:3478"}, want: []string{"turn.secret"}},
		{name: "redis addr not host:port", args: []string{"--redis.addr", "redis"}, want: []string{"redis.addr", "host:port"}},
		{name: "sentinel without sentinels", args: []string{"--redis.sentinel_master", "main"}, want: []string{"redis.sentinel_addrs"}},
		{name: "sentinel and addr", args: []string{"--redis.sentinel_master", "main", "--redis.sentinel_addrs", "127.0.0.1:26379", "--redis.addr", "127.0.0.1:6379"}, want: []string{"redis.addr", "redis.sentinel_master"}},
		{name: "cluster ttl below two heartbeats", args: []string{"--redis.addr", "127.0.0.1:6379", "--cluster.node_ttl", "1s"}, want: []string{"cluster.node_ttl", "cluster.heartbeat"}},
		{name: "turn credential ttl", args: []string{"--turn.credential_ttl", "-1h"}, want: []string{"turn.credential_ttl"}},
		{name: "stray argument", args: []string{"extra"}, want: []string{"extra"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				args = append([]string{"--config", writeFile(t, tc.file)}, args...)
			}
			_, err := loadConfig(args, envOf(tc.env))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "usage:") {
				t.Errorf("error %q leaks struct tags", err)
			}
		})
	}
}

// TestExampleConfig: the shipped example loads, its values are the
// defaults, and it documents every key of Config by its full path.
func TestExampleConfig(t *testing.T) {
	path := filepath.Join("..", "..", "configs", "parley.yaml")
	c, err := loadConfig([]string{"--config", path}, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := normalized(c), normalized(defaults()); !reflect.DeepEqual(got, want) {
		t.Errorf("configs/parley.yaml differs from the defaults:\n got %+v\nwant %+v", got, want)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	inFile := map[string]bool{}
	for _, k := range keyLines(&doc) {
		inFile[k.path] = true
	}
	for _, l := range leaves(&c) {
		if !inFile[l.name] {
			t.Errorf("configs/parley.yaml does not document %s", l.name)
		}
	}
}

// normalized makes empty lists and maps nil, as the defaults have them.
func normalized(c Config) Config {
	for _, l := range leaves(&c) {
		if (l.v.Kind() == reflect.Slice || l.v.Kind() == reflect.Map) && l.v.Len() == 0 {
			l.v.Set(reflect.Zero(l.v.Type()))
		}
	}
	return c
}

func TestServeHelpListsEveryKey(t *testing.T) {
	// --help prints the flag list and is not an error for main.
	if _, err := loadConfig([]string{"--help"}, envOf(nil)); err == nil || !strings.Contains(err.Error(), "help") {
		t.Fatalf("--help: %v", err)
	}
	c := defaults()
	for _, l := range leaves(&c) {
		if l.usage == "" {
			t.Errorf("%s has no usage text", l.name)
		}
	}
}

// TestTokenKeyFromConfig: parley token takes the key from --config (the
// first alphabetically, or the one --key names) or PARLEY_KEYS, and the
// token verifies with that key's secret.
func TestTokenKeyFromConfig(t *testing.T) {
	sa, sb := strings.Repeat("a", 32), strings.Repeat("b", 32)
	file := writeFile(t, "keys:\n  zeta: "+sb+"\n  alpha: "+sa+"\n")
	cases := []struct {
		name       string
		args       []string
		env        map[string]string
		key, sec   string
		wantStatus int
	}{
		{"first key of --config", []string{"--config", file}, nil, "alpha", sa, 0},
		{"--key picks from --config", []string{"--config", file, "--key", "zeta"}, nil, "zeta", sb, 0},
		{"PARLEY_CONFIG", nil, map[string]string{"PARLEY_CONFIG": file}, "alpha", sa, 0},
		{"PARLEY_KEYS", nil, map[string]string{"PARLEY_KEYS": "envkey:" + sb}, "envkey", sb, 0},
		{"env key and secret", nil, map[string]string{"PARLEY_API_KEY": "k", "PARLEY_API_SECRET": sa}, "k", sa, 0},
		{"unknown --key", []string{"--config", file, "--key", "nope"}, nil, "", "", 2},
		{"no key at all", nil, nil, "", "", 2},
		{"bad ttl", []string{"--key", "k", "--secret", sa, "--ttl", "-1h"}, nil, "", "", 2},
		{"bad grant", []string{"--key", "k", "--secret", sa, "--grants", "publish,fly"}, nil, "", "", 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb strings.Builder
			args := append([]string{"token", "--room", "r", "--identity", "i", "--grants", "publish,admin"}, tc.args...)
			code := realMain(args, envOf(tc.env), &out, &errb)
			if code != tc.wantStatus {
				t.Fatalf("exit %d, want %d: %s", code, tc.wantStatus, errb.String())
			}
			if code != 0 {
				if errb.Len() == 0 {
					t.Fatal("no message")
				}
				return
			}
			claims := jwt.MapClaims{}
			_, err := jwt.ParseWithClaims(strings.TrimSpace(out.String()), claims,
				func(*jwt.Token) (any, error) { return []byte(tc.sec), nil }, jwt.WithValidMethods([]string{"HS256"}))
			if err != nil {
				t.Fatal(err)
			}
			g, _ := claims["grants"].(map[string]any)
			if claims["iss"] != tc.key || claims["room"] != "r" || claims["sub"] != "i" || g["publish"] != true || g["admin"] != true || g["subscribe"] == true {
				t.Fatalf("claims %v", claims)
			}
		})
	}
}

// TestServeGCDefault: serve lowers the collector's goal to serveGCPercent
// unless the operator set GOGC, which wins.
func TestServeGCDefault(t *testing.T) {
	was := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(was) })
	if got := setGCDefault(envOf(nil)); got != serveGCPercent {
		t.Fatalf("GOGC unset: %d", got)
	}
	if p := debug.SetGCPercent(100); p != serveGCPercent {
		t.Fatalf("GOGC unset: the runtime's percent is %d, want %d", p, serveGCPercent)
	}
	debug.SetGCPercent(200) // what the runtime does for GOGC=200
	if got := setGCDefault(envOf(map[string]string{"GOGC": "200"})); got != 200 {
		t.Fatalf("GOGC=200: %d", got)
	}
	if p := debug.SetGCPercent(100); p != 200 {
		t.Fatalf("GOGC=200 was overridden: %d", p)
	}
}
