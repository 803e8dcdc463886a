package signaling

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-rtc/parley/rooms"
)

// Stats are the signaling server's counters, for metrics.
type Stats struct {
	Connections int               // open WebSockets
	Errors      map[string]uint64 // errors sent to clients, by code
}

// errorCounts counts errors by code without a lock on the common path.
type errorCounts struct {
	mu sync.Mutex
	m  map[string]*atomic.Uint64
}

func (e *errorCounts) add(code string) {
	e.mu.Lock()
	if e.m == nil {
		e.m = map[string]*atomic.Uint64{}
	}
	n, ok := e.m[code]
	if !ok {
		n = &atomic.Uint64{}
		e.m[code] = n
	}
	e.mu.Unlock()
	n.Add(1)
}

func (s *Server) countError(code string) { s.errCount.add(code) }

// Stats reads the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	st := Stats{Connections: len(s.conns), Errors: map[string]uint64{}}
	s.mu.Unlock()
	s.errCount.mu.Lock()
	codes := make([]string, 0, len(s.errCount.m))
	for code := range s.errCount.m {
		codes = append(codes, code)
	}
	sort.Strings(codes)
	for _, code := range codes {
		st.Errors[code] = s.errCount.m[code].Load()
	}
	s.errCount.mu.Unlock()
	return st
}

// Verify checks a token as a join would (signature, algorithm, expiry,
// claims) against the server's keys, the development key included.
func (s *Server) Verify(token string) (*Claims, error) { return VerifyToken(s.cfg.Keys, token) }

// SigningKey is the API key and secret that sign what the server itself
// signs (webhooks, development tokens): the first key alphabetically, or
// the development key.
func (s *Server) SigningKey() (key, secret string) {
	keys := make([]string, 0, len(s.cfg.Keys))
	for k := range s.cfg.Keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys[0], s.cfg.Keys[keys[0]]
}

// DevAdminToken mints an admin token for every room, in development mode
// only (ok is false otherwise).
func (s *Server) DevAdminToken(ttl time.Duration) (token string, ok bool, err error) {
	if !s.dev {
		return "", false, nil
	}
	tok, err := MintToken(s.devKey, s.cfg.Keys[s.devKey], TokenSpec{Room: "*", Identity: "admin", Name: "admin", TTL: ttl,
		Grants: rooms.Grants{Admin: true}})
	return tok, true, err
}
