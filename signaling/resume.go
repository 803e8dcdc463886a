package signaling

import (
	"crypto/rand"
	"encoding/base64"
	"sync"
	"time"

	"github.com/parley-rtc/parley/rooms"
)

// A session is a participant's signaling state, which outlives one
// WebSocket: when the socket drops, the participant stays in its room for
// Config.ResumeGrace, its events are kept, and a new socket that sends
// resume with the session's token takes it over (docs/protocol.md,
// "Resuming a session").
type session struct {
	token string
	part  *rooms.Participant
	relay *relay

	mu    sync.Mutex
	conn  *conn       // the socket attached now; nil while detached
	timer *time.Timer // ends a detached session after the grace period
}

// relay is the rooms.Sink of a session: it passes events to the attached
// socket, and keeps them, in order and bounded, while none is.
type relay struct {
	mu   sync.Mutex
	to   rooms.Sink
	held []any
	over bool
}

// Send implements rooms.Sink; it never blocks.
func (r *relay) Send(ev any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.to == nil {
		r.dropStale(ev)
	}
	switch {
	case r.to != nil:
		r.to.Send(ev)
	case len(r.held) < maxPending:
		r.held = append(r.held, ev)
	default:
		r.over = true
	}
}

// dropStale forgets a kept event that ev replaces: only the latest
// speakers list, and the latest layer set of each track, matter.
func (r *relay) dropStale(ev any) {
	for i, old := range r.held {
		stale := false
		switch e := ev.(type) {
		case rooms.Speakers:
			_, stale = old.(rooms.Speakers)
		case rooms.SetLayers:
			o, ok := old.(rooms.SetLayers)
			stale = ok && o.TrackSID == e.TrackSID
		}
		if stale {
			r.held = append(r.held[:i], r.held[i+1:]...)
			return
		}
	}
}

// attach hands what was kept to s, then everything that comes; it reports
// whether events were lost while detached.
func (r *relay) attach(s rooms.Sink) (lost bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.held {
		s.Send(ev)
	}
	r.held, r.to = nil, s
	lost, r.over = r.over, false
	return lost
}

func (r *relay) detach() {
	r.mu.Lock()
	r.to = nil
	r.mu.Unlock()
}

func newResumeToken() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// addSession registers the session of a participant that just joined on c.
func (s *Server) addSession(part *rooms.Participant, rl *relay, c *conn) *session {
	token := newResumeToken()
	if s.cfg.Cluster != nil {
		// The node that holds the session, for a socket that resumes it
		// on another node (forward.go).
		token = s.cfg.Cluster.ID() + tokenNodeSep + token
	}
	sess := &session{token: token, part: part, relay: rl, conn: c}
	s.mu.Lock()
	s.sessions[sess.token] = sess
	s.mu.Unlock()
	return sess
}

func (s *Server) dropSession(sess *session) {
	s.mu.Lock()
	if s.sessions[sess.token] == sess {
		delete(s.sessions, sess.token)
	}
	s.mu.Unlock()
	sess.mu.Lock()
	if sess.timer != nil {
		sess.timer.Stop()
	}
	sess.conn = nil
	sess.mu.Unlock()
}

// detach keeps the session of c, whose socket dropped, for the grace
// period; it reports false when c no longer holds the session.
func (s *Server) detach(sess *session, c *conn) bool {
	sess.mu.Lock()
	if sess.conn != c {
		sess.mu.Unlock()
		return false
	}
	sess.conn = nil
	sess.relay.detach()
	sess.timer = time.AfterFunc(s.cfg.ResumeGrace, func() { s.expire(sess) })
	sess.mu.Unlock()
	sess.part.SetDetached(true)
	return true
}

// expire ends a session nobody resumed in time: its participant leaves.
func (s *Server) expire(sess *session) {
	sess.mu.Lock()
	attached := sess.conn != nil
	sess.mu.Unlock()
	if attached {
		return
	}
	s.dropSession(sess)
	sess.part.Leave("disconnected")
}

// resumeSession hands the session of token to c; the socket that held it,
// if any, is returned to be closed without leaving.
func (s *Server) resumeSession(token string, c *conn) (*session, *conn) {
	s.mu.Lock()
	sess := s.sessions[token]
	s.mu.Unlock()
	if sess == nil || sess.part.Left() {
		return nil, nil
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.timer != nil {
		sess.timer.Stop()
		sess.timer = nil
	}
	old := sess.conn
	sess.conn = c
	return sess, old
}

// dropAllSessions ends the grace periods (server shutdown).
func (s *Server) dropAllSessions() {
	s.mu.Lock()
	all := make([]*session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		all = append(all, sess)
	}
	s.mu.Unlock()
	for _, sess := range all {
		s.dropSession(sess)
	}
}
