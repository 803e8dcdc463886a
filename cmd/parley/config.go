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
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/parley-rtc/parley/cluster"
	"github.com/parley-rtc/parley/events"
	"github.com/parley-rtc/parley/rooms"
	"github.com/parley-rtc/parley/sfu"
	"github.com/parley-rtc/parley/signaling"
	"github.com/parley-rtc/parley/turn"
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
		BatchSend       bool     `yaml:"batch_send" usage:"batch the media socket's system calls: read with recvmmsg, send the copies made meanwhile with one sendmmsg (UDP GSO where the kernel takes it); Linux"`
		DirectSend      bool     `yaml:"direct_send" usage:"encrypt subscribers' media and write it to the UDP port directly, past pion's per-packet SRTP and ICE chain (false = pion's path)"`
		DirectReceive   bool     `yaml:"direct_receive" usage:"read and decrypt publishers' media off the UDP port directly and forward it there, past pion's per-packet ICE, SRTP and read chain (false = pion's path)"`
		AdaptiveProcs   bool     `yaml:"adaptive_procs" usage:"run on as many cores (GOMAXPROCS) as the load needs, up to all: idle cores cost CPU per packet"`
	} `yaml:"rtc"`
	Signaling struct {
		MaxMessageBytes    int64         `yaml:"max_message_bytes" usage:"largest signaling message accepted"`
		PingInterval       time.Duration `yaml:"ping_interval" usage:"WebSocket ping interval"`
		PongTimeout        time.Duration `yaml:"pong_timeout" usage:"close a socket silent for this long"`
		WriteTimeout       time.Duration `yaml:"write_timeout" usage:"deadline for one WebSocket write"`
		NegotiationTimeout time.Duration `yaml:"negotiation_timeout" usage:"drop a participant that does not answer an offer within this"`
		AllowedOrigins     []string      `yaml:"allowed_origins" usage:"extra Origins allowed to open the WebSocket (the server's own host always is)"`
		ResumeGrace        time.Duration `yaml:"resume_grace" usage:"a participant whose socket dropped (or whose ICE failed) stays this long, resumable"`
		MaxConnsPerIP      int           `yaml:"max_connections_per_ip" usage:"open WebSockets one client address may have"`
		RateLimit          int           `yaml:"rate_limit" usage:"messages one WebSocket may send per rate_window; more get rate_limited"`
		RateWindow         time.Duration `yaml:"rate_window" usage:"sliding window of rate_limit"`
	} `yaml:"signaling"`
	Rooms struct {
		MaxParticipants         int `yaml:"max_participants" usage:"participants per room"`
		MaxRooms                int `yaml:"max_rooms" usage:"rooms per server"`
		MaxTracksPerParticipant int `yaml:"max_tracks_per_participant" usage:"published tracks per participant"`
	} `yaml:"rooms"`
	Data struct {
		History          int           `yaml:"history" usage:"chat messages kept per room and sent to late joiners"`
		HistoryRetention time.Duration `yaml:"history_retention" usage:"keep an emptied room's chat history (and message ids) this long"`
		MaxMessageBytes  int           `yaml:"max_message_bytes" usage:"largest data channel message (chat, presence, data); at most 65536"`
		MaxMetadataBytes int           `yaml:"max_metadata_bytes" usage:"largest presence metadata"`
		RateLimit        int           `yaml:"rate_limit" usage:"reliable data messages a participant may send per rate_window"`
		RateWindow       time.Duration `yaml:"rate_window" usage:"sliding window of rate_limit"`
		LossyRateLimit   int           `yaml:"lossy_rate_limit" usage:"lossy data messages (pointer) a participant may send per second"`
		TypingTimeout    time.Duration `yaml:"typing_timeout" usage:"a typing indicator clears itself after this"`
		AwayAfter        time.Duration `yaml:"away_after" usage:"a participant that sends nothing (no heartbeat) for this long is away"`
		OfflineGrace     time.Duration `yaml:"offline_grace" usage:"a participant whose connection was lost shows offline this long"`
		StallTimeout     time.Duration `yaml:"stall_timeout" usage:"disconnect a client that does not read its data channel for this long"`
	} `yaml:"data"`
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
	Metrics struct {
		Listen string `yaml:"listen" usage:"address of the Prometheus endpoint /metrics (empty = off)"`
	} `yaml:"metrics"`
	Webhooks struct {
		URLs  []string `yaml:"urls" usage:"URLs that receive every room event as a signed POST"`
		Queue int      `yaml:"queue" usage:"events waiting per webhook URL; the oldest is dropped beyond"`
	} `yaml:"webhooks"`
	Redis struct {
		Addr     string `yaml:"addr" usage:"Redis host:port shared by every node of a cluster (empty = a single node)"`
		Username string `yaml:"username" usage:"Redis ACL user (empty = default)"`
		Password string `yaml:"password" usage:"Redis password"`
		DB       int    `yaml:"db" usage:"Redis database number"`
		TLS      bool   `yaml:"tls" usage:"connect to Redis over TLS"`
		// Redis Sentinel, instead of addr.
		SentinelMaster   string   `yaml:"sentinel_master" usage:"the primary's name in Redis Sentinel: find Redis through the sentinels instead of redis.addr"`
		SentinelAddrs    []string `yaml:"sentinel_addrs" usage:"the sentinels, host:port each (with sentinel_master)"`
		SentinelPassword string   `yaml:"sentinel_password" usage:"password of the sentinels (requirepass in sentinel.conf)"`
	} `yaml:"redis"`
	Cluster struct {
		NodeID       string        `yaml:"node_id" usage:"this node's name in the cluster (default: host name and a random suffix)"`
		AdvertiseURL string        `yaml:"advertise_url" usage:"URL the other nodes reach this node's HTTP server at (default: http://<http.listen host, or 127.0.0.1>:<port>)"`
		Heartbeat    time.Duration `yaml:"heartbeat" usage:"how often the node renews its registration in Redis"`
		NodeTTL      time.Duration `yaml:"node_ttl" usage:"a node silent this long is dead: its rooms are placed again"`
		MaxTracks    int           `yaml:"max_tracks" usage:"forwarded tracks beyond which the node takes no new rooms (0 = no limit)"`
		MaxCPU       float64       `yaml:"max_cpu" usage:"share of the node's CPU (0-1) beyond which it takes no new rooms"`
	} `yaml:"cluster"`
	Keys map[string]string `yaml:"keys" usage:"API key -> secret (at least 32 characters); empty = development mode"`
	Log  struct {
		Level  string `yaml:"level" usage:"debug, info, warn or error"`
		Format string `yaml:"format" usage:"text or json"`
	} `yaml:"log"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout" usage:"how long a graceful shutdown may take"`
	DrainTimeout    time.Duration `yaml:"drain_timeout" usage:"on SIGTERM, wait this long for rooms to empty before shutting down"`
}

// defaults are what Parley runs with when nothing is configured.
func defaults() Config {
	var c Config
	c.HTTP.Listen = ":7880"
	c.RTC.UDPPort = 7882
	c.RTC.TCPPort = 7881
	c.RTC.IncludeLoopback = true
	c.RTC.AdaptiveProcs = true
	c.RTC.DirectSend = true
	c.RTC.BatchSend = true
	c.RTC.DirectReceive = true
	c.Signaling.MaxMessageBytes = 64 << 10
	c.Signaling.PingInterval = 10 * time.Second
	c.Signaling.PongTimeout = 30 * time.Second
	c.Signaling.WriteTimeout = 10 * time.Second
	c.Signaling.NegotiationTimeout = 20 * time.Second
	c.Signaling.ResumeGrace = 30 * time.Second
	c.Signaling.MaxConnsPerIP = 50
	c.Signaling.RateLimit = 200
	c.Signaling.RateWindow = 10 * time.Second
	c.Rooms.MaxParticipants = 100
	c.Rooms.MaxRooms = 1000
	c.Rooms.MaxTracksPerParticipant = 8
	c.Data.History = 200
	c.Data.HistoryRetention = 10 * time.Minute
	c.Data.MaxMessageBytes = 16 << 10
	c.Data.MaxMetadataBytes = 1 << 10
	c.Data.RateLimit = 30
	c.Data.RateWindow = 10 * time.Second
	c.Data.LossyRateLimit = 60
	c.Data.TypingTimeout = 6 * time.Second
	c.Data.AwayAfter = 20 * time.Second
	c.Data.OfflineGrace = 30 * time.Second
	c.Data.StallTimeout = 10 * time.Second
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
	c.DrainTimeout = 10 * time.Minute
	c.Metrics.Listen = "127.0.0.1:7889"
	c.Webhooks.Queue = 1000
	c.Cluster.Heartbeat = time.Second
	c.Cluster.NodeTTL = 5 * time.Second
	c.Cluster.MaxCPU = 0.9
	return c
}

var errConfig = errors.New("config")

// loadFile merges a YAML file over c. Unknown keys and values of the wrong
// type are errors that name the key and its line.
func loadFile(c *Config, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: %v", errConfig, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err = dec.Decode(c)
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("%w: %s: %v", errConfig, path, err)
	}
	var doc yaml.Node
	_ = yaml.Unmarshal(data, &doc)
	keys := keyLines(&doc)
	types := map[string]reflect.Type{}
	for _, l := range leaves(c) {
		types[l.name] = l.v.Type()
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		msgs = append(msgs, explainYAMLError(e, keys, types))
	}
	return fmt.Errorf("%w: %s: %s (configs/parley.yaml documents every key)", errConfig, path, strings.Join(msgs, "; "))
}

// keyLine is one mapping key of a YAML document and the line it is on.
type keyLine struct {
	line int
	path string
}

// keyLines lists every mapping key of doc, in document order, by dotted path.
func keyLines(doc *yaml.Node) []keyLine {
	var out []keyLine
	var walk func(prefix string, n *yaml.Node)
	walk = func(prefix string, n *yaml.Node) {
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, ch := range n.Content {
				walk(prefix, ch)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				path := n.Content[i].Value
				if prefix != "" {
					path = prefix + "." + path
				}
				out = append(out, keyLine{n.Content[i].Line, path})
				walk(path, n.Content[i+1])
			}
		}
	}
	walk("", doc)
	return out
}

var (
	yamlErrLine    = regexp.MustCompile(`^line (\d+): (.*)$`)
	yamlErrUnknown = regexp.MustCompile(`^field (\S+) not found in type`)
)

// explainYAMLError turns one of yaml.v3's type errors ("line 2: field x not
// found in type struct {...}", "line 4: cannot unmarshal !!str `soon` into
// time.Duration") into a message that names the key.
func explainYAMLError(e string, keys []keyLine, types map[string]reflect.Type) string {
	m := yamlErrLine.FindStringSubmatch(e)
	if m == nil {
		return e
	}
	line, _ := strconv.Atoi(m[1])
	msg := m[2]
	if u := yamlErrUnknown.FindStringSubmatch(msg); u != nil {
		for _, k := range keys {
			if k.line == line && (k.path == u[1] || strings.HasSuffix(k.path, "."+u[1])) {
				return fmt.Sprintf("line %d: unknown key %s", line, k.path)
			}
		}
		return fmt.Sprintf("line %d: unknown key %s", line, u[1])
	}
	// The value on this line belongs to the last key at or before it.
	key := ""
	for _, k := range keys {
		if k.line <= line {
			key = k.path
		}
	}
	if key == "" {
		return e
	}
	for {
		if t, ok := types[key]; ok {
			return fmt.Sprintf("line %d: %s: want %s (%s)", line, key, wantOf(t), msg)
		}
		i := strings.LastIndex(key, ".")
		if i < 0 {
			break
		}
		key = key[:i] // e.g. keys.mykey -> keys
	}
	return fmt.Sprintf("line %d: %s", line, msg)
}

// wantOf describes what a value of type t looks like.
func wantOf(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[time.Duration]():
		return "a duration such as 10s or 1m30s"
	case reflect.TypeFor[[]string]():
		return "a list such as [a, b]"
	case reflect.TypeFor[map[string]string]():
		return "a map of API key to secret"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64:
		return "a whole number"
	}
	return "a string"
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

// applyEnv sets every key that has a non-empty PARLEY_SECTION_KEY variable.
func applyEnv(c *Config, env func(string) string) error {
	for _, l := range leaves(c) {
		if s := env(envName(l.name)); s != "" {
			if err := l.set(s); err != nil {
				return fmt.Errorf("%w (from %s)", err, envName(l.name))
			}
		}
	}
	return nil
}

// loadConfig builds the configuration from, in increasing precedence, the
// defaults, the file (--config or PARLEY_CONFIG), the environment and the
// flags in args, and validates it.
func loadConfig(args []string, env func(string) string) (Config, error) {
	c := defaults()
	fs := flag.NewFlagSet("parley serve", flag.ContinueOnError)
	configPath := fs.String("config", env("PARLEY_CONFIG"), "YAML config file, see configs/parley.yaml (env PARLEY_CONFIG)")
	// Flags win over the file and env, so they are collected here and
	// applied last.
	type pending struct {
		l leaf
		s string
	}
	var fromFlags []pending
	for _, l := range leaves(&c) {
		usage := fmt.Sprintf("%s (env %s)", l.usage, envName(l.name))
		if d := fmt.Sprint(l.v.Interface()); d != "" && d != "[]" && d != "map[]" && d != "0" && d != "false" {
			usage = fmt.Sprintf("%s (default %s, env %s)", l.usage, d, envName(l.name))
		}
		collect := func(s string) error {
			fromFlags = append(fromFlags, pending{l, s})
			return nil
		}
		if l.v.Kind() == reflect.Bool {
			fs.BoolFunc(l.name, usage, collect) // --rtc.include_loopback=false
		} else {
			fs.Func(l.name, usage, collect)
		}
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
	if err := applyEnv(&c, env); err != nil {
		return c, err
	}
	byName := map[string]leaf{}
	for _, l := range leaves(&c) {
		byName[l.name] = l
	}
	for _, p := range fromFlags {
		if err := byName[p.l.name].set(p.s); err != nil {
			return c, fmt.Errorf("%w (from --%s)", err, p.l.name)
		}
	}
	return c, c.Validate()
}

// The packages' own configs, built from this one.

func (c *Config) sfuConfig() sfu.Config {
	return sfu.Config{UDPPort: c.RTC.UDPPort, TCPPort: c.RTC.TCPPort, ListenIP: c.RTC.ListenIP,
		PublicIPs: c.RTC.PublicIPs, IncludeLoopback: c.RTC.IncludeLoopback, ICEFailGrace: c.Signaling.ResumeGrace,
		NoBatch: !c.RTC.BatchSend, PionSend: !c.RTC.DirectSend, PionReceive: !c.RTC.DirectReceive}
}

func (c *Config) roomsConfig() rooms.Config {
	d := c.Data
	return rooms.Config{MaxParticipants: c.Rooms.MaxParticipants, MaxRooms: c.Rooms.MaxRooms,
		MaxTracksPerParticipant: c.Rooms.MaxTracksPerParticipant, NegotiationTimeout: c.Signaling.NegotiationTimeout,
		Data: rooms.DataConfig{History: d.History, HistoryRetention: d.HistoryRetention, MaxMessageBytes: d.MaxMessageBytes,
			MaxMetadataBytes: d.MaxMetadataBytes, RateLimit: d.RateLimit, RateWindow: d.RateWindow, LossyRateLimit: d.LossyRateLimit,
			TypingTimeout: d.TypingTimeout, AwayAfter: d.AwayAfter, OfflineGrace: d.OfflineGrace, StallTimeout: d.StallTimeout}}
}

// signalingConfig leaves ICEServersFor to serve, which knows the TURN server.
func (c *Config) signalingConfig() signaling.Config {
	return signaling.Config{MaxMessageBytes: c.Signaling.MaxMessageBytes, PingInterval: c.Signaling.PingInterval,
		PongTimeout: c.Signaling.PongTimeout, WriteTimeout: c.Signaling.WriteTimeout,
		NegotiationTimeout: c.Signaling.NegotiationTimeout, AllowedOrigins: c.Signaling.AllowedOrigins, Keys: c.Keys,
		ResumeGrace: c.Signaling.ResumeGrace, MaxConnectionsPerIP: c.Signaling.MaxConnsPerIP, RateLimit: c.Signaling.RateLimit,
		RateWindow: c.Signaling.RateWindow}
}

// webhookConfig leaves the signing key to serve, which knows the keys.
func (c *Config) webhookConfig() events.WebhookConfig {
	return events.WebhookConfig{URLs: c.Webhooks.URLs, Queue: c.Webhooks.Queue}
}

// clustered reports whether the server is a node of several (Redis is
// configured).
func (c *Config) clustered() bool { return c.Redis.Addr != "" || c.Redis.SentinelMaster != "" }

// clusterConfig leaves Load and Rooms to serve; httpAddr is where the HTTP
// server listens (nil before it does).
func (c *Config) clusterConfig(httpAddr net.Addr) cluster.Config {
	cc := cluster.Config{Addr: c.Redis.Addr, Username: c.Redis.Username, Password: c.Redis.Password, DB: c.Redis.DB,
		TLS: c.Redis.TLS, SentinelMaster: c.Redis.SentinelMaster, SentinelAddrs: c.Redis.SentinelAddrs, SentinelPassword: c.Redis.SentinelPassword, NodeID: c.Cluster.NodeID, AdvertiseURL: c.Cluster.AdvertiseURL, PublicAddrs: c.RTC.PublicIPs,
		Heartbeat: c.Cluster.Heartbeat, NodeTTL: c.Cluster.NodeTTL, MaxTracks: c.Cluster.MaxTracks, MaxCPU: c.Cluster.MaxCPU, MaxRooms: c.Rooms.MaxRooms}
	if cc.AdvertiseURL == "" && httpAddr != nil {
		scheme := "http"
		if c.HTTP.TLSCert != "" {
			scheme = "https"
		}
		host, _, _ := net.SplitHostPort(c.HTTP.Listen)
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		cc.AdvertiseURL = scheme + "://" + net.JoinHostPort(host, strconv.Itoa(httpAddr.(*net.TCPAddr).Port))
	}
	return cc
}

func (c *Config) turnConfig() turn.Config {
	t := c.TURN
	return turn.Config{Enabled: t.Enabled, Realm: "parley", Host: t.Host, PublicIP: t.PublicIP, ListenIP: t.ListenIP,
		UDPPort: t.UDPPort, TCPPort: t.TCPPort, TLSPort: t.TLSPort, CertFile: t.CertFile, KeyFile: t.KeyFile,
		RelayPortMin: t.RelayPortMin, RelayPortMax: t.RelayPortMax, Secret: t.Secret, CredentialTTL: t.CredentialTTL,
		AllowPeers: t.AllowPeers, DenyPeers: t.DenyPeers, UserQuota: t.UserQuota, TotalQuota: t.TotalQuota}
}

// Validate checks every key, so that a bad value stops the server before it
// opens a port; each message names the key, e.g.
// "config: rtc.udp_port: 70000 is not a port (1-65535)".
func (c *Config) Validate() error {
	if _, port, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
		return fmt.Errorf("%w: http.listen: %q is not host:port (e.g. :7880)", errConfig, c.HTTP.Listen)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%w: http.listen: %q has no valid port (1-65535)", errConfig, c.HTTP.Listen)
	}
	if (c.HTTP.TLSCert == "") != (c.HTTP.TLSKey == "") {
		return fmt.Errorf("%w: http.tls_cert and http.tls_key go together (set both or neither)", errConfig)
	}
	// 0 picks a free port (tests); not worth advertising in the message.
	if c.RTC.UDPPort < 0 || c.RTC.UDPPort > 65535 {
		return fmt.Errorf("%w: rtc.udp_port: %d is not a port (1-65535)", errConfig, c.RTC.UDPPort)
	}
	if c.RTC.TCPPort < -1 || c.RTC.TCPPort > 65535 {
		return fmt.Errorf("%w: rtc.tcp_port: %d is not a port (1-65535, 0 = off)", errConfig, c.RTC.TCPPort)
	}
	if c.Signaling.MaxMessageBytes < 1 {
		return fmt.Errorf("%w: signaling.max_message_bytes: %d must be positive", errConfig, c.Signaling.MaxMessageBytes)
	}
	for _, kv := range []struct {
		key string
		n   int
	}{{"rooms.max_participants", c.Rooms.MaxParticipants}, {"rooms.max_rooms", c.Rooms.MaxRooms},
		{"rooms.max_tracks_per_participant", c.Rooms.MaxTracksPerParticipant}, {"data.history", c.Data.History},
		{"signaling.max_connections_per_ip", c.Signaling.MaxConnsPerIP}, {"signaling.rate_limit", c.Signaling.RateLimit},
		{"data.max_message_bytes", c.Data.MaxMessageBytes}, {"data.max_metadata_bytes", c.Data.MaxMetadataBytes},
		{"data.rate_limit", c.Data.RateLimit}, {"data.lossy_rate_limit", c.Data.LossyRateLimit}} {
		if kv.n < 1 {
			return fmt.Errorf("%w: %s: %d must be at least 1", errConfig, kv.key, kv.n)
		}
	}
	for _, kv := range []struct {
		key string
		d   time.Duration
	}{{"signaling.ping_interval", c.Signaling.PingInterval}, {"signaling.pong_timeout", c.Signaling.PongTimeout},
		{"signaling.write_timeout", c.Signaling.WriteTimeout}, {"signaling.negotiation_timeout", c.Signaling.NegotiationTimeout},
		{"signaling.resume_grace", c.Signaling.ResumeGrace}, {"signaling.rate_window", c.Signaling.RateWindow},
		{"turn.credential_ttl", c.TURN.CredentialTTL}, {"shutdown_timeout", c.ShutdownTimeout},
		{"data.history_retention", c.Data.HistoryRetention}, {"data.rate_window", c.Data.RateWindow},
		{"data.typing_timeout", c.Data.TypingTimeout}, {"data.away_after", c.Data.AwayAfter},
		{"data.offline_grace", c.Data.OfflineGrace}, {"data.stall_timeout", c.Data.StallTimeout},
		{"drain_timeout", c.DrainTimeout}} {
		if kv.d <= 0 {
			return fmt.Errorf("%w: %s: %s must be positive", errConfig, kv.key, kv.d)
		}
	}
	for _, k := range sortedKeys(c.Keys) {
		if len(c.Keys[k]) < signaling.MinSecretLen {
			return fmt.Errorf("%w: keys.%s: the secret must be at least %d characters (e.g. openssl rand -base64 32)",
				errConfig, k, signaling.MinSecretLen)
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
	if c.Metrics.Listen != "" {
		if _, port, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			return fmt.Errorf("%w: metrics.listen: %q is not host:port (e.g. 127.0.0.1:7889; empty switches metrics off)", errConfig, c.Metrics.Listen)
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			return fmt.Errorf("%w: metrics.listen: %q has no valid port (1-65535)", errConfig, c.Metrics.Listen)
		}
	}
	if wc := c.webhookConfig(); wc.Validate() != nil {
		return fmt.Errorf("%w: %v", errConfig, wc.Validate())
	}
	if c.TURN.Enabled && len(c.TURN.ExternalURLs) > 0 {
		return fmt.Errorf("%w: turn.external_urls replaces the embedded TURN server: set it or turn.enabled, not both", errConfig)
	}
	if len(c.TURN.ExternalURLs) > 0 && len(c.TURN.Secret) < 32 {
		return fmt.Errorf("%w: turn.secret: turn.external_urls needs coturn's static-auth-secret here (at least 32 characters)", errConfig)
	}
	if c.clustered() {
		cc := c.clusterConfig(nil)
		if err := cc.Validate(); err != nil {
			return fmt.Errorf("%w: %s", errConfig, strings.TrimPrefix(err.Error(), cluster.ErrBadConfig.Error()+": "))
		}
		if _, _, err := net.SplitHostPort(c.Redis.Addr); c.Redis.Addr != "" && err != nil {
			return fmt.Errorf("%w: redis.addr: %q is not host:port (e.g. 127.0.0.1:6379)", errConfig, c.Redis.Addr)
		}
		for _, a := range c.Redis.SentinelAddrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return fmt.Errorf("%w: redis.sentinel_addrs: %q is not host:port (e.g. 10.0.0.5:26379)", errConfig, a)
			}
		}
	}
	// What the packages check themselves (on copies: their Validate fills
	// defaults). Their messages already name the key.
	sc, rc, sg, tc := c.sfuConfig(), c.roomsConfig(), c.signalingConfig(), c.turnConfig()
	for _, v := range []struct {
		validate func() error
		pkgErr   error
	}{{sc.Validate, sfu.ErrBadConfig}, {rc.Validate, rooms.ErrBadConfig}, {sg.Validate, signaling.ErrBadConfig}, {tc.Validate, turn.ErrBadConfig}} {
		if err := v.validate(); err != nil {
			return fmt.Errorf("%w: %s", errConfig, strings.TrimPrefix(err.Error(), v.pkgErr.Error()+": "))
		}
	}
	return nil
}

// sortedKeys returns the API keys in order, so choices and messages are
// the same on every run.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
