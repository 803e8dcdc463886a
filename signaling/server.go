// Package signaling speaks the Parley WebSocket protocol (docs/protocol.md):
// join with a signed token, SDP offer/answer, trickle ICE, mute, leave.
package signaling

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/gorilla/websocket"

	"github.com/parley-rtc/parley/cluster"
	"github.com/parley-rtc/parley/rooms"
)

// Config of the signaling server.
type Config struct {
	MaxMessageBytes    int64
	PingInterval       time.Duration
	PongTimeout        time.Duration
	WriteTimeout       time.Duration
	NegotiationTimeout time.Duration
	// AllowedOrigins are extra Origin hosts (or full origins) allowed to
	// open the WebSocket; the server's own host is always allowed, and in
	// development mode so is localhost.
	AllowedOrigins []string
	// Keys maps API key to secret. Empty means development mode.
	Keys       map[string]string
	ICEServers []ICEServer
	// ICEServersFor, when set, gives each participant its own ICE servers
	// (e.g. TURN credentials minted for its identity), after ICEServers.
	ICEServersFor func(identity string) []ICEServer
	// ResumeGrace is how long a participant whose socket dropped stays in
	// its room, resumable (default 30s).
	ResumeGrace time.Duration
	// MaxConnectionsPerIP bounds the open sockets of one client address
	// (default 50); RateLimit the messages of one socket per RateWindow
	// (default 200 per 10s).
	MaxConnectionsPerIP int
	RateLimit           int
	RateWindow          time.Duration
	// Cluster, when set, places each room on one node of several and
	// relays the signaling of sockets held here for rooms held elsewhere
	// (docs/scaling.md).
	Cluster Cluster
	// DevSecret, in development mode, is the secret of the dev-token key
	// (shared by the nodes of a cluster); random when empty.
	DevSecret string
}

// Cluster is what signaling needs of several nodes (cluster.Node).
type Cluster interface {
	ID() string
	// Place finds (or chooses) the node of a room; Claim takes it for
	// this node unless a live node holds it; Release frees it.
	Place(ctx context.Context, room string) (string, error)
	Claim(ctx context.Context, room string) (string, error)
	Release(room string)
	// Dial opens a pipe to node for a client at remote, with its first
	// frame.
	Dial(ctx context.Context, node, remote string, first []byte) (*cluster.Pipe, error)
}

// Validate fills defaults and names the first bad key.
func (c *Config) Validate() error {
	if c.MaxMessageBytes < 0 || c.PingInterval < 0 || c.PongTimeout < 0 || c.WriteTimeout < 0 || c.NegotiationTimeout < 0 ||
		c.ResumeGrace < 0 || c.MaxConnectionsPerIP < 0 || c.RateLimit < 0 || c.RateWindow < 0 {
		return fmt.Errorf("%w: signaling limits and timeouts must not be negative", ErrBadConfig)
	}
	if c.ResumeGrace == 0 {
		c.ResumeGrace = 30 * time.Second
	}
	if c.MaxConnectionsPerIP == 0 {
		c.MaxConnectionsPerIP = 50
	}
	if c.RateLimit == 0 {
		c.RateLimit = 200
	}
	if c.RateWindow == 0 {
		c.RateWindow = 10 * time.Second
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 64 << 10
	}
	if c.MaxMessageBytes < 4096 {
		return fmt.Errorf("%w: signaling.max_message_bytes: %d is too small for an SDP (at least 4096)", ErrBadConfig, c.MaxMessageBytes)
	}
	if c.PingInterval == 0 {
		c.PingInterval = 10 * time.Second
	}
	if c.PongTimeout == 0 {
		c.PongTimeout = 30 * time.Second
	}
	if c.PongTimeout <= c.PingInterval {
		return fmt.Errorf("%w: signaling.pong_timeout (%s) must be longer than signaling.ping_interval (%s)", ErrBadConfig, c.PongTimeout, c.PingInterval)
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.NegotiationTimeout == 0 {
		c.NegotiationTimeout = 20 * time.Second
	}
	for k, s := range c.Keys {
		if k == "" || strings.ContainsAny(k, ": ") {
			return fmt.Errorf("%w: keys: API key %q must be non-empty, without spaces or colons", ErrBadConfig, k)
		}
		if len(s) < MinSecretLen {
			return fmt.Errorf("%w: keys.%s: the secret must be at least %d characters", ErrBadConfig, k, MinSecretLen)
		}
	}
	return nil
}

// Server accepts WebSocket signaling connections.
type Server struct {
	cfg      Config
	mgr      *rooms.Manager
	log      *slog.Logger
	dev      bool
	devKey   string
	upgrader websocket.Upgrader

	mu       sync.Mutex
	conns    map[*conn]struct{}
	perIP    map[string]int
	sessions map[string]*session // by resume token
	errCount errorCounts
	closing  bool
	wg       sync.WaitGroup
}

// NewServer makes a signaling server for mgr's rooms.
func NewServer(cfg Config, mgr *rooms.Manager, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cfg: cfg, mgr: mgr, log: log, conns: map[*conn]struct{}{}, perIP: map[string]int{}, sessions: map[string]*session{}}
	if len(cfg.Keys) == 0 {
		// Development mode: a random key only this process knows, used by
		// the dev-token endpoint.
		var b [32]byte
		_, _ = rand.Read(b[:])
		s.dev = true
		s.devKey = "dev"
		secret := cfg.DevSecret
		if secret == "" {
			secret = base64.RawURLEncoding.EncodeToString(b[:])
		}
		s.cfg.Keys = map[string]string{s.devKey: secret}
	}
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   4096,
		WriteBufferSize:  4096,
		CheckOrigin:      s.checkOrigin,
	}
	return s, nil
}

// DevMode reports whether no API keys are configured.
func (s *Server) DevMode() bool { return s.dev }

func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, a := range s.cfg.AllowedOrigins {
		if strings.EqualFold(a, u.Host) || strings.EqualFold(a, origin) || a == "*" {
			return true
		}
	}
	if s.dev {
		host := u.Hostname()
		if host == "localhost" || net.ParseIP(host).IsLoopback() {
			return true
		}
	}
	s.log.Warn("websocket origin refused; add it to signaling.allowed_origins", "origin", origin, "host", r.Host)
	return false
}

// ServeHTTP upgrades to a WebSocket and runs one signaling session.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
		return
	}
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	if !s.admit(ip) {
		s.countError("too_many_connections")
		s.log.Warn("too many WebSockets from one address; refused (signaling.max_connections_per_ip)", "ip", ip, "limit", s.cfg.MaxConnectionsPerIP)
		http.Error(w, "too many connections from your address", http.StatusTooManyRequests)
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.release(ip)
		return // the upgrader has answered
	}
	c := newConn(s, ws, r.RemoteAddr)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		s.release(ip)
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, CodeShuttingDown), time.Now().Add(time.Second))
		_ = ws.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		c.run()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.release(ip)
	}()
}

// admit counts a new socket of ip, unless ip has too many.
func (s *Server) admit(ip string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perIP[ip] >= s.cfg.MaxConnectionsPerIP {
		return false
	}
	s.perIP[ip]++
	return true
}

func (s *Server) release(ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perIP[ip]--; s.perIP[ip] <= 0 {
		delete(s.perIP, ip)
	}
}

// Shutdown tells every participant the server is going away, closes the
// sockets and waits for the sessions to end (or ctx).
func (s *Server) Shutdown(ctx context.Context) error {
	defer s.dropAllSessions()
	s.mu.Lock()
	s.closing = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.shutdown()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// devName reports whether s is 1 to limit letters, digits, '_', '.', '-'
// and, with spaces, ' ' (what the development tokens accept for a room, a
// name, an identity). It replaces the regular expressions
// ^[\p{L}\p{N}_.\- ]{1,64}$ and ^[\p{L}\p{N}_.\-]{1,80}$, whose
// compiled programs repeat the Unicode classes 64 and 80 times: 4 MB
// allocated at start-up and about 2 MB kept for as long as the server
// runs.
func devName(s string, limit int, spaces bool) bool {
	n := 0
	for _, r := range s { // invalid UTF-8 is U+FFFD, neither letter nor digit
		n++
		if n > limit {
			return false
		}
		switch {
		case unicode.IsLetter(r), unicode.IsNumber(r), r == '_', r == '.', r == '-':
		case r == ' ' && spaces:
		default:
			return false
		}
	}
	return n > 0
}

// DevTokenHandler mints tokens for anyone, in development mode only:
// GET /api/dev-token?room=R&name=N[&identity=I]. It returns nil when keys
// are configured.
func (s *Server) DevTokenHandler() http.Handler {
	if !s.dev {
		return nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "use GET", http.StatusMethodNotAllowed)
			return
		}
		room := strings.TrimSpace(r.URL.Query().Get("room"))
		name := strings.TrimSpace(r.URL.Query().Get("name"))
		if name == "" {
			name = "guest"
		}
		if !devName(room, 64, true) || !devName(name, 64, true) {
			http.Error(w, "room and name: 1-64 letters, digits, spaces, '.', '_' or '-'", http.StatusBadRequest)
			return
		}
		// A page may ask for the identity it had before (kept per tab), so
		// that a reload is the same person: presence and the chat outbox
		// carry over. Anyone may mint any identity here anyway: development
		// mode has no authentication.
		identity := r.URL.Query().Get("identity")
		if identity == "" {
			identity = strings.ToLower(strings.ReplaceAll(name, " ", "-")) + "-" + randomSuffix()
		} else if !devName(identity, 80, false) {
			http.Error(w, "identity: 1-80 letters, digits, '.', '_' or '-'", http.StatusBadRequest)
			return
		}
		tok, err := MintToken(s.devKey, s.cfg.Keys[s.devKey], TokenSpec{
			Room: room, Identity: identity, Name: name, TTL: 6 * time.Hour,
			Grants: rooms.Grants{Publish: true, Subscribe: true, Data: true},
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(map[string]string{"token": tok, "identity": identity, "room": room})
	})
}

func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%x", b[:])
}
