// Package turn runs Parley's embedded TURN server (pion/turn): UDP, TCP and
// TLS listeners, short-lived credentials from a shared secret, a peer
// policy that refuses internal addresses, and allocation quotas.
package turn

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	pionturn "github.com/pion/turn/v4"
)

// Config of the TURN server; the zero value with Enabled=false runs nothing.
type Config struct {
	Enabled bool
	// Realm of long-term credentials.
	Realm string
	// Host is the name or address clients use in turn: URLs (the public
	// name of the server); defaults to PublicIP.
	Host string
	// PublicIP is the relay address put in allocations.
	PublicIP string
	// ListenIP binds the listeners; empty means all interfaces.
	ListenIP string
	// UDPPort and TCPPort (usually both 3478); 0 switches one off, -1
	// picks a free port (tests).
	UDPPort, TCPPort int
	// TLSPort (5349 or 443) with CertFile and KeyFile; 0 switches it off.
	TLSPort           int
	CertFile, KeyFile string
	// RelayPortMin and RelayPortMax bound the relay ports.
	RelayPortMin, RelayPortMax int
	// Secret signs credentials; generated at start when empty.
	Secret string
	// CredentialTTL is how long minted credentials stay valid.
	CredentialTTL time.Duration
	// AllowPeers and DenyPeers override the built-in peer policy (CIDRs).
	AllowPeers, DenyPeers []string
	// UserQuota is the most allocations one username may hold; TotalQuota
	// the most the server holds.
	UserQuota, TotalQuota int
}

// Validate fills defaults and names the first bad key.
func (c *Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	if c.Realm == "" {
		c.Realm = "parley"
	}
	if c.PublicIP == "" {
		return fmt.Errorf("%w: turn.public_ip is required when TURN is enabled (the address clients relay through)", ErrBadConfig)
	}
	if net.ParseIP(c.PublicIP) == nil {
		return fmt.Errorf("%w: turn.public_ip: %q is not an IP address", ErrBadConfig, c.PublicIP)
	}
	if c.Host == "" {
		c.Host = c.PublicIP
	}
	if c.ListenIP != "" && net.ParseIP(c.ListenIP) == nil {
		return fmt.Errorf("%w: turn.listen_ip: %q is not an IP address", ErrBadConfig, c.ListenIP)
	}
	for key, p := range map[string]int{"turn.udp_port": c.UDPPort, "turn.tcp_port": c.TCPPort, "turn.tls_port": c.TLSPort} {
		if p < -1 || p > 65535 {
			return fmt.Errorf("%w: %s: %d is not a port (0 switches it off)", ErrBadConfig, key, p)
		}
	}
	if c.UDPPort == 0 && c.TCPPort == 0 && c.TLSPort == 0 {
		return fmt.Errorf("%w: turn: every listener is off (set turn.udp_port, turn.tcp_port or turn.tls_port)", ErrBadConfig)
	}
	if c.TLSPort != 0 && (c.CertFile == "" || c.KeyFile == "") {
		return fmt.Errorf("%w: turn.tls_port needs turn.cert_file and turn.key_file", ErrBadConfig)
	}
	if c.RelayPortMin == 0 && c.RelayPortMax == 0 {
		c.RelayPortMin, c.RelayPortMax = 49152, 65535
	}
	if c.RelayPortMin < 1024 || c.RelayPortMax > 65535 || c.RelayPortMin > c.RelayPortMax {
		return fmt.Errorf("%w: turn.relay_port_min/max: %d-%d is not a port range within 1024-65535", ErrBadConfig, c.RelayPortMin, c.RelayPortMax)
	}
	if c.Secret != "" && len(c.Secret) < 32 {
		return fmt.Errorf("%w: turn.secret must be at least 32 characters", ErrBadConfig)
	}
	if c.CredentialTTL == 0 {
		c.CredentialTTL = 12 * time.Hour
	}
	if c.CredentialTTL < time.Minute {
		return fmt.Errorf("%w: turn.credential_ttl: %s is shorter than a minute", ErrBadConfig, c.CredentialTTL)
	}
	if c.UserQuota == 0 {
		c.UserQuota = 10
	}
	if c.TotalQuota == 0 {
		c.TotalQuota = 10000
	}
	if c.UserQuota < 0 || c.TotalQuota < 0 {
		return fmt.Errorf("%w: turn.user_quota and turn.total_quota must not be negative", ErrBadConfig)
	}
	if _, err := NewPeerPolicy(c.AllowPeers, c.DenyPeers); err != nil {
		return err
	}
	return nil
}

// Stats are the server's counters, ready for the metrics endpoint.
type Stats struct {
	Allocations      int64 // current
	AllocationsTotal int64
	AuthFailures     int64
	QuotaRefusals    int64
	PeersRefused     int64
	BytesRelayed     int64
}

// Server is a running TURN server.
type Server struct {
	cfg    Config
	log    *slog.Logger
	policy *PeerPolicy
	srv    *pionturn.Server
	addrs  map[string]net.Addr // udp, tcp, tls

	mu      sync.Mutex
	perUser map[string]int

	allocs, allocsTotal, authFail, quotaRefused, peersRefused, bytes atomic.Int64
}

// New starts the listeners and the server.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled {
		return nil, fmt.Errorf("%w: turn is not enabled", ErrBadConfig)
	}
	if log == nil {
		log = slog.Default()
	}
	if cfg.Secret == "" {
		var b [32]byte
		_, _ = rand.Read(b[:])
		cfg.Secret = base64.RawURLEncoding.EncodeToString(b[:])
	}
	policy, _ := NewPeerPolicy(cfg.AllowPeers, cfg.DenyPeers)
	s := &Server{cfg: cfg, log: log, policy: policy, addrs: map[string]net.Addr{}, perUser: map[string]int{}}

	listenIP := cfg.ListenIP
	if listenIP == "" {
		listenIP = "0.0.0.0"
	}
	gen := &countingGenerator{s: s, inner: &pionturn.RelayAddressGeneratorPortRange{
		RelayAddress: net.ParseIP(cfg.PublicIP), Address: listenIP,
		MinPort: uint16(cfg.RelayPortMin), MaxPort: uint16(cfg.RelayPortMax),
	}}
	perm := func(_ net.Addr, peer net.IP) bool {
		if s.policy.Allowed(peer) {
			return true
		}
		s.peersRefused.Add(1)
		s.log.Info("turn: peer refused by policy (turn.allow_peers to permit)", "peer", peer.String())
		return false
	}
	sc := pionturn.ServerConfig{Realm: cfg.Realm, AuthHandler: s.auth, QuotaHandler: s.quota, EventHandler: pionturn.EventHandler{
		OnAllocationCreated: func(_, _ net.Addr, _, username, _ string, _ net.Addr, _ int) {
			s.allocs.Add(1)
			s.allocsTotal.Add(1)
			s.mu.Lock()
			s.perUser[username]++
			s.mu.Unlock()
		},
		OnAllocationDeleted: func(_, _ net.Addr, _, username, _ string) {
			s.allocs.Add(-1)
			s.mu.Lock()
			if s.perUser[username]--; s.perUser[username] <= 0 {
				delete(s.perUser, username)
			}
			s.mu.Unlock()
		},
	}}
	var closers []func()
	fail := func(err error) (*Server, error) {
		for _, c := range closers {
			c()
		}
		return nil, err
	}
	if cfg.UDPPort != 0 {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(listenIP, strconv.Itoa(max(cfg.UDPPort, 0))))
		if err != nil {
			return fail(fmt.Errorf("turn: listen udp %d (turn.udp_port): %w", cfg.UDPPort, err))
		}
		closers = append(closers, func() { _ = pc.Close() })
		s.addrs["udp"] = pc.LocalAddr()
		sc.PacketConnConfigs = append(sc.PacketConnConfigs, pionturn.PacketConnConfig{PacketConn: pc, RelayAddressGenerator: gen, PermissionHandler: perm})
	}
	if cfg.TCPPort != 0 {
		l, err := net.Listen("tcp", net.JoinHostPort(listenIP, strconv.Itoa(max(cfg.TCPPort, 0))))
		if err != nil {
			return fail(fmt.Errorf("turn: listen tcp %d (turn.tcp_port): %w", cfg.TCPPort, err))
		}
		closers = append(closers, func() { _ = l.Close() })
		s.addrs["tcp"] = l.Addr()
		sc.ListenerConfigs = append(sc.ListenerConfigs, pionturn.ListenerConfig{Listener: l, RelayAddressGenerator: gen, PermissionHandler: perm})
	}
	if cfg.TLSPort != 0 {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return fail(fmt.Errorf("turn: turn.cert_file/turn.key_file: %w", err))
		}
		l, err := tls.Listen("tcp", net.JoinHostPort(listenIP, strconv.Itoa(max(cfg.TLSPort, 0))), &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		if err != nil {
			return fail(fmt.Errorf("turn: listen tls %d (turn.tls_port): %w", cfg.TLSPort, err))
		}
		closers = append(closers, func() { _ = l.Close() })
		s.addrs["tls"] = l.Addr()
		sc.ListenerConfigs = append(sc.ListenerConfigs, pionturn.ListenerConfig{Listener: l, RelayAddressGenerator: gen, PermissionHandler: perm})
	}
	srv, err := pionturn.NewServer(sc)
	if err != nil {
		return fail(fmt.Errorf("turn: %w", err))
	}
	s.srv = srv
	log.Info("TURN server listening", "udp", s.addrs["udp"], "tcp", s.addrs["tcp"], "tls", s.addrs["tls"], "relay_ip", cfg.PublicIP,
		"relay_ports", fmt.Sprintf("%d-%d", cfg.RelayPortMin, cfg.RelayPortMax))
	return s, nil
}

func (s *Server) auth(username, realm string, src net.Addr) ([]byte, bool) {
	pw, ok := checkUsername(s.cfg.Secret, username, time.Now())
	if !ok {
		s.authFail.Add(1)
		s.log.Info("turn: credential refused (malformed or expired)", "username", username, "src", src.String())
		return nil, false
	}
	return pionturn.GenerateAuthKey(username, realm, pw), true
}

func (s *Server) quota(username, _ string, src net.Addr) bool {
	s.mu.Lock()
	n := s.perUser[username]
	s.mu.Unlock()
	if n >= s.cfg.UserQuota || s.allocs.Load() >= int64(s.cfg.TotalQuota) {
		s.quotaRefused.Add(1)
		s.log.Info("turn: allocation quota reached", "username", username, "src", src.String(), "user_allocations", n)
		return false
	}
	return true
}

// Addr returns the listening address for "udp", "tcp" or "tls", or nil.
func (s *Server) Addr(network string) net.Addr { return s.addrs[network] }

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	return Stats{Allocations: s.allocs.Load(), AllocationsTotal: s.allocsTotal.Load(), AuthFailures: s.authFail.Load(),
		QuotaRefusals: s.quotaRefused.Load(), PeersRefused: s.peersRefused.Load(), BytesRelayed: s.bytes.Load()}
}

// Credentials mints credentials for identity with the server's secret.
func (s *Server) Credentials(identity string) (username, password string) {
	return Credentials(s.cfg.Secret, identity, s.cfg.CredentialTTL, time.Now())
}

// URLs are the STUN and TURN URLs clients should use.
func (s *Server) URLs() (stun, turn []string) {
	host := s.cfg.Host
	if net.ParseIP(host) != nil && net.ParseIP(host).To4() == nil {
		host = "[" + host + "]"
	}
	if s.cfg.UDPPort != 0 {
		stun = append(stun, fmt.Sprintf("stun:%s:%d", host, port(s.addrs["udp"])))
		turn = append(turn, fmt.Sprintf("turn:%s:%d?transport=udp", host, port(s.addrs["udp"])))
	}
	if s.cfg.TCPPort != 0 {
		turn = append(turn, fmt.Sprintf("turn:%s:%d?transport=tcp", host, port(s.addrs["tcp"])))
	}
	if s.cfg.TLSPort != 0 {
		turn = append(turn, fmt.Sprintf("turns:%s:%d?transport=tcp", host, port(s.addrs["tls"])))
	}
	return stun, turn
}

func port(a net.Addr) int {
	switch v := a.(type) {
	case *net.UDPAddr:
		return v.Port
	case *net.TCPAddr:
		return v.Port
	}
	return 0
}

// Close stops the server and its listeners.
func (s *Server) Close() error { return s.srv.Close() }

// countingGenerator wraps the port-range generator to count relayed bytes.
type countingGenerator struct {
	s     *Server
	inner *pionturn.RelayAddressGeneratorPortRange
}

func (g *countingGenerator) Validate() error { return g.inner.Validate() }

func (g *countingGenerator) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	pc, addr, err := g.inner.AllocatePacketConn(network, requestedPort)
	if err != nil {
		return nil, nil, err
	}
	return &countingConn{PacketConn: pc, n: &g.s.bytes}, addr, nil
}

func (g *countingGenerator) AllocateConn(network string, requestedPort int) (net.Conn, net.Addr, error) {
	return g.inner.AllocateConn(network, requestedPort)
}

type countingConn struct {
	net.PacketConn
	n *atomic.Int64
}

func (c *countingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	c.n.Add(int64(n))
	return n, a, err
}

func (c *countingConn) WriteTo(b []byte, a net.Addr) (int, error) {
	n, err := c.PacketConn.WriteTo(b, a)
	c.n.Add(int64(n))
	return n, err
}
