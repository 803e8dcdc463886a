package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole server configuration. Every key is settable, in
// increasing precedence, by the built-in default, configs/parley.yaml style
// file (--config or PARLEY_CONFIG), an environment variable
// (PARLEY_SECTION_KEY) and a flag (--section.key).
type Config struct {
	HTTP struct {
		Listen  string `yaml:"listen" usage:"HTTP address for the demo page, the WebSocket (/rtc) and health checks"`
		TLSCert string `yaml:"tls_cert" usage:"certificate file: serve HTTPS (browsers need HTTPS for cameras off localhost)"`
		TLSKey  string `yaml:"tls_key" usage:"private key file for tls_cert"`
	} `yaml:"http"`
	RTC struct {
		UDPPort         int      `yaml:"udp_port" usage:"the one UDP port all media is multiplexed on"`
		TCPPort         int      `yaml:"tcp_port" usage:"ICE over TCP fallback port for networks that block UDP (0 = off)"`
		ListenIP        string   `yaml:"listen_ip" usage:"bind media ports to this address (empty = all)"`
		PublicIPs       []string `yaml:"public_ips" usage:"public addresses to announce in ICE candidates (1:1 NAT, cloud VMs)"`
		IncludeLoopback bool     `yaml:"include_loopback" usage:"offer loopback candidates (local development)"`
	} `yaml:"rtc"`
	Signaling struct {
		MaxMessageBytes    int64         `yaml:"max_message_bytes" usage:"largest signaling message accepted"`
		PingInterval       time.Duration `yaml:"ping_interval" usage:"WebSocket ping interval"`
		PongTimeout        time.Duration `yaml:"pong_timeout" usage:"close a socket silent for this long"`
		WriteTimeout       time.Duration `yaml:"write_timeout" usage:"deadline for one WebSocket write"`
		NegotiationTimeout time.Duration `yaml:"negotiation_timeout" usage:"drop a participant that does not answer an offer within this"`
		AllowedOrigins     []string      `yaml:"allowed_origins" usage:"extra Origins allowed to open the WebSocket (the server's own host always is)"`
	} `yaml:"signaling"`
	Rooms struct {
		MaxParticipants         int `yaml:"max_participants" usage:"participants per room"`
		MaxRooms                int `yaml:"max_rooms" usage:"rooms per server"`
		MaxTracksPerParticipant int `yaml:"max_tracks_per_participant" usage:"published tracks per participant"`
	} `yaml:"rooms"`
	TURN struct {
		Enabled       bool          `yaml:"enabled" usage:"run the embedded TURN server"`
		Host          string        `yaml:"host" usage:"host name clients use in turn: URLs (default public_ip)"`
		PublicIP      string        `yaml:"public_ip" usage:"relay address (the server's public IP)"`
		ListenIP      string        `yaml:"listen_ip" usage:"bind TURN listeners to this address (empty = all)"`
		UDPPort       int           `yaml:"udp_port" usage:"TURN over UDP (0 = off)"`
		TCPPort       int           `yaml:"tcp_port" usage:"TURN over TCP (0 = off)"`
		TLSPort       int           `yaml:"tls_port" usage:"TURN over TLS, e.g. 5349 or 443 (0 = off)"`
		CertFile      string        `yaml:"cert_file" usage:"certificate for tls_port"`
		KeyFile       string        `yaml:"key_file" usage:"private key for tls_port"`
		RelayPortMin  int           `yaml:"relay_port_min" usage:"lowest relay port"`
		RelayPortMax  int           `yaml:"relay_port_max" usage:"highest relay port"`
		Secret        string        `yaml:"secret" usage:"shared secret for TURN credentials (also coturn's static-auth-secret); random when empty"`
		CredentialTTL time.Duration `yaml:"credential_ttl" usage:"lifetime of minted TURN credentials"`
		AllowPeers    []string      `yaml:"allow_peers" usage:"CIDRs relaying may reach although internal (e.g. 10.0.0.0/8 on a LAN)"`
		DenyPeers     []string      `yaml:"deny_peers" usage:"CIDRs relaying may never reach"`
		UserQuota     int           `yaml:"user_quota" usage:"allocations one user may hold"`
		TotalQuota    int           `yaml:"total_quota" usage:"allocations the server holds"`
		ExternalURLs  []string      `yaml:"external_urls" usage:"use an external TURN server (coturn use-auth-secret with secret) instead, e.g. turn:turn.example.com:3478"`
	} `yaml:"turn"`
	Keys map[string]string `yaml:"keys" usage:"API key -> secret (at least 32 characters); empty = development mode"`
	Log  struct {
		Level  string `yaml:"level" usage:"debug, info, warn or error"`
		Format string `yaml:"format" usage:"text or json"`
	} `yaml:"log"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout" usage:"how long a graceful shutdown may take"`
}

// defaults are what Parley runs with when nothing is configured.
func defaults() Config {
	var c Config
	c.HTTP.Listen = ":7880"
	c.RTC.UDPPort = 7882
	c.RTC.TCPPort = 7881
	c.RTC.IncludeLoopback = true
	c.Signaling.MaxMessageBytes = 64 << 10
	c.Signaling.PingInterval = 10 * time.Second
	c.Signaling.PongTimeout = 30 * time.Second
	c.Signaling.WriteTimeout = 10 * time.Second
	c.Signaling.NegotiationTimeout = 20 * time.Second
	c.Rooms.MaxParticipants = 100
	c.Rooms.MaxRooms = 1000
	c.Rooms.MaxTracksPerParticipant = 8
	c.TURN.UDPPort = 3478
	c.TURN.TCPPort = 3478
	c.TURN.RelayPortMin = 49152
	c.TURN.RelayPortMax = 65535
	c.TURN.CredentialTTL = 12 * time.Hour
	c.TURN.UserQuota = 10
	c.TURN.TotalQuota = 10000
	c.Log.Level = "info"
	c.Log.Format = "text"
	c.ShutdownTimeout = 10 * time.Second
	return c
}

var errConfig = errors.New("config")

// loadFile merges a YAML file over c; unknown keys are errors.
func loadFile(c *Config, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: %v", errConfig, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %s: %v (see configs/parley.yaml for every key)", errConfig, path, err)
	}
	return nil
}

// leaf is one configurable key: its dotted name and where it lives.
type leaf struct {
	name  string // e.g. rtc.udp_port
	usage string
	v     reflect.Value
}

func leaves(c *Config) []leaf {
	var out []leaf
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if prefix != "" {
				name = prefix + "." + name
			}
			if f.Type.Kind() == reflect.Struct {
				walk(name, v.Field(i))
				continue
			}
			out = append(out, leaf{name: name, usage: f.Tag.Get("usage"), v: v.Field(i)})
		}
	}
	walk("", reflect.ValueOf(c).Elem())
	return out
}

// set parses s into the leaf's value.
func (l leaf) set(s string) error {
	bad := func(err error) error { return fmt.Errorf("%w: %s: %q: %v", errConfig, l.name, s, err) }
	switch l.v.Interface().(type) {
	case string:
		l.v.SetString(s)
	case bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return bad(errors.New("want true or false"))
		}
		l.v.SetBool(b)
	case int, int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return bad(errors.New("want a whole number"))
		}
		l.v.SetInt(n)
	case time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return bad(errors.New("want a duration such as 10s or 1m30s"))
		}
		l.v.SetInt(int64(d))
	case []string:
		var list []string
		for _, x := range strings.Split(s, ",") {
			if x = strings.TrimSpace(x); x != "" {
				list = append(list, x)
			}
		}
		l.v.Set(reflect.ValueOf(list))
	case map[string]string:
		m := map[string]string{}
		for _, kv := range strings.Split(s, ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(kv), ":")
			if !ok || k == "" {
				return bad(errors.New("want key:secret pairs separated by commas"))
			}
			m[k] = v
		}
		l.v.Set(reflect.ValueOf(m))
	default:
		return bad(errors.New("unsupported type"))
	}
	return nil
}

func envName(key string) string {
	return "PARLEY_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// loadConfig builds the configuration from defaults, file, env and args.
func loadConfig(args []string, env func(string) string) (Config, error) {
	c := defaults()
	fs := flag.NewFlagSet("parley serve", flag.ContinueOnError)
	configPath := fs.String("config", env("PARLEY_CONFIG"), "YAML config file (see configs/parley.yaml)")
	// Flags are applied after the file and env, so collect them first.
	type pending struct {
		l leaf
		s string
	}
	var fromFlags []pending
	for _, l := range leaves(&c) {
		l := l
		fs.Func(l.name, fmt.Sprintf("%s (env %s)", l.usage, envName(l.name)), func(s string) error {
			fromFlags = append(fromFlags, pending{l, s})
			return nil
		})
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("%w: unexpected argument %q", errConfig, fs.Arg(0))
	}
	if *configPath != "" {
		if err := loadFile(&c, *configPath); err != nil {
			return c, err
		}
	}
	ls := leaves(&c)
	for _, l := range ls {
		if s, ok := lookupEnv(env, envName(l.name)); ok {
			if err := l.set(s); err != nil {
				return c, fmt.Errorf("%w (from %s)", err, envName(l.name))
			}
		}
	}
	byName := map[string]leaf{}
	for _, l := range ls {
		byName[l.name] = l
	}
	for _, p := range fromFlags {
		if err := byName[p.l.name].set(p.s); err != nil {
			return c, err
		}
	}
	return c, c.Validate()
}

func lookupEnv(env func(string) string, name string) (string, bool) {
	v := env(name)
	return v, v != ""
}

// Validate checks what the packages do not: each message names its key.
func (c *Config) Validate() error {
	if _, port, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
		return fmt.Errorf("%w: http.listen: %q is not host:port (e.g. :7880)", errConfig, c.HTTP.Listen)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%w: http.listen: %q has no valid port", errConfig, c.HTTP.Listen)
	}
	if (c.HTTP.TLSCert == "") != (c.HTTP.TLSKey == "") {
		return fmt.Errorf("%w: http.tls_cert and http.tls_key go together", errConfig)
	}
	if c.RTC.UDPPort < 0 || c.RTC.UDPPort > 65535 {
		return fmt.Errorf("%w: rtc.udp_port: %d is not a port (1-65535)", errConfig, c.RTC.UDPPort)
	}
	if c.RTC.TCPPort < -1 || c.RTC.TCPPort > 65535 {
		return fmt.Errorf("%w: rtc.tcp_port: %d is not a port (0 = off)", errConfig, c.RTC.TCPPort)
	}
	for _, kv := range []struct {
		key string
		n   int
	}{{"rooms.max_participants", c.Rooms.MaxParticipants}, {"rooms.max_rooms", c.Rooms.MaxRooms},
		{"rooms.max_tracks_per_participant", c.Rooms.MaxTracksPerParticipant}} {
		if kv.n < 1 {
			return fmt.Errorf("%w: %s: %d must be at least 1", errConfig, kv.key, kv.n)
		}
	}
	for _, kv := range []struct {
		key string
		d   time.Duration
	}{{"signaling.ping_interval", c.Signaling.PingInterval}, {"signaling.pong_timeout", c.Signaling.PongTimeout},
		{"signaling.write_timeout", c.Signaling.WriteTimeout}, {"signaling.negotiation_timeout", c.Signaling.NegotiationTimeout},
		{"shutdown_timeout", c.ShutdownTimeout}} {
		if kv.d <= 0 {
			return fmt.Errorf("%w: %s: %s must be positive", errConfig, kv.key, kv.d)
		}
	}
	for k, s := range c.Keys {
		if len(s) < 32 {
			return fmt.Errorf("%w: keys.%s: the secret must be at least 32 characters (e.g. openssl rand -base64 32)", errConfig, k)
		}
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("%w: log.level: %q is not debug, info, warn or error", errConfig, c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("%w: log.format: %q is not text or json", errConfig, c.Log.Format)
	}
	return nil
}
