package signaling

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"github.com/parley-rtc/parley/cluster"
	"github.com/parley-rtc/parley/internal/queue"
	"github.com/parley-rtc/parley/limit"
	"github.com/parley-rtc/parley/rooms"
	"github.com/parley-rtc/parley/sfu"
)

const (
	outQueueLen   = 512              // messages waiting for the writer
	maxPending    = 4096             // room events waiting for the owner
	joinTimeout   = 10 * time.Second // a socket must join within this
	maxBadLogging = 1                // bad messages logged per connection
)

type outMsg struct {
	data      []byte
	closeCode int
	closeText string
}

type inbound struct {
	data []byte
	err  error
}

// conn is one signaling session. A reader and a writer goroutine feed the
// owner goroutine (run), which alone touches the session state (NOTES 5).
// Room events arrive through Send, which never blocks.
type conn struct {
	s      *Server
	ws     socket
	remote string
	log    *slog.Logger
	in     chan inbound
	out    *queue.Queue[outMsg]
	done   chan struct{} // owner finished
	wdone  chan struct{} // writer finished
	stop   chan struct{} // server shutdown
	stopMu sync.Once

	evMu     sync.Mutex
	evs      []any
	evOver   bool
	evNotify chan struct{}

	part     *rooms.Participant
	sess     *session
	finished bool
	badLogs  int
	limit    *limit.Window
	kick     chan struct{} // another socket resumed the session
	kickOnce sync.Once

	// Several nodes (forward.go): relayed is a session whose socket is
	// held by another node; fwd the pipe of a socket this node holds for
	// a room another node holds, and frame the client message in hand.
	relayed bool
	fwd     *cluster.Pipe
	frame   []byte
}

// socket is the client side of a session: a WebSocket, or a pipe from
// the node that holds the WebSocket (pipeSocket).
type socket interface {
	SetReadLimit(limit int64)
	SetReadDeadline(t time.Time) error
	SetPongHandler(h func(string) error)
	ReadMessage() (messageType int, p []byte, err error)
	SetWriteDeadline(t time.Time) error
	WriteMessage(messageType int, data []byte) error
	WriteControl(messageType int, data []byte, deadline time.Time) error
	Close() error
}

func newConn(s *Server, ws socket, remote string) *conn {
	return &conn{
		s: s, ws: ws, remote: remote, log: s.log.With("remote", remote),
		in: make(chan inbound), out: queue.New[outMsg](outQueueLen),
		done: make(chan struct{}), wdone: make(chan struct{}), stop: make(chan struct{}),
		evNotify: make(chan struct{}, 1), kick: make(chan struct{}),
		limit: limit.NewWindow(s.cfg.RateLimit, s.cfg.RateWindow),
	}
}

// Send implements rooms.Sink.
func (c *conn) Send(ev any) {
	c.evMu.Lock()
	if len(c.evs) >= maxPending {
		c.evOver = true
	} else {
		c.evs = append(c.evs, ev)
	}
	c.evMu.Unlock()
	select {
	case c.evNotify <- struct{}{}:
	default:
	}
}

func (c *conn) shutdown() { c.stopMu.Do(func() { close(c.stop) }) }

// closeResumedElsewhere closes a socket whose session another one resumed.
const closeResumedElsewhere = 4001

func (c *conn) takenOver() { c.kickOnce.Do(func() { close(c.kick) }) }

func (c *conn) run() {
	defer close(c.done)
	go c.readLoop()
	go c.writeLoop()
	joinTimer := time.NewTimer(joinTimeout)
	defer joinTimer.Stop()
	for !c.finished {
		var fwd <-chan []byte
		if c.fwd != nil {
			fwd = c.fwd.Recv()
		}
		select {
		case in := <-c.in:
			if in.err != nil {
				c.readFailed(in.err)
				continue
			}
			if c.fwd != nil {
				c.forwardIn(in.data)
				continue
			}
			c.handle(in.data)
		case data, ok := <-fwd:
			c.forwardOut(data, ok)
		case <-c.evNotify:
			c.drainEvents()
		case <-c.stop:
			if c.fwd != nil {
				c.forwardShutdown()
				continue
			}
			if c.s.cfg.Cluster != nil {
				// Another node takes the room: join again there.
				c.send(TypeLeave, Leave{Reason: "room_moved"})
				c.finish("room_moved", websocket.CloseServiceRestart, "room_moved")
				continue
			}
			c.send(TypeLeave, Leave{Reason: "server_shutdown"})
			c.finish("server_shutdown", websocket.CloseGoingAway, "server shutting down")
		case <-c.kick:
			// The session lives on on the socket that resumed it.
			c.part, c.sess = nil, nil
			c.finish("", closeResumedElsewhere, "resumed elsewhere")
		case <-joinTimer.C:
			if c.part == nil && c.fwd == nil {
				c.fail(CodeNotJoined, "no join message within 10 seconds", websocket.ClosePolicyViolation)
			}
		}
	}
}

func (c *conn) readLoop() {
	c.ws.SetReadLimit(c.s.cfg.MaxMessageBytes)
	_ = c.ws.SetReadDeadline(time.Now().Add(c.s.cfg.PongTimeout))
	c.ws.SetPongHandler(func(string) error {
		return c.ws.SetReadDeadline(time.Now().Add(c.s.cfg.PongTimeout))
	})
	for {
		_, data, err := c.ws.ReadMessage()
		if err == nil {
			_ = c.ws.SetReadDeadline(time.Now().Add(c.s.cfg.PongTimeout))
		}
		select {
		case c.in <- inbound{data: data, err: err}:
		case <-c.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// writeLoop writes what send queues, and pings. It never closes the socket
// itself: a failed write only shortens the reader's deadline, so that a
// leave the client sent just before its connection broke is still read
// (the owner closes the socket).
func (c *conn) writeLoop() {
	defer close(c.wdone)
	write := c.write // one method value, not one per wake-up
	ping := time.NewTicker(c.s.cfg.PingInterval)
	defer ping.Stop()
	for {
		select {
		case <-c.out.Ready():
			if !c.out.Drain(c.done, write) {
				return
			}
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.s.cfg.WriteTimeout)); err != nil {
				c.writeFailed()
				return
			}
		case <-c.done:
			return
		}
	}
}

// write writes one queued message; false ends the writer (a close frame,
// or a failed write).
func (c *conn) write(m outMsg) bool {
	deadline := time.Now().Add(c.s.cfg.WriteTimeout)
	if m.closeCode != 0 {
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(m.closeCode, m.closeText), deadline)
		return false
	}
	_ = c.ws.SetWriteDeadline(deadline)
	if err := c.ws.WriteMessage(websocket.TextMessage, m.data); err != nil {
		c.writeFailed()
		return false
	}
	return true
}

// writeFailed shortens the reader's deadline: the socket is broken, and
// the reader ends the session after reading what the client sent last.
func (c *conn) writeFailed() { _ = c.ws.SetReadDeadline(time.Now().Add(time.Second)) }

// send queues one message for the writer. A client that does not read
// fills its queue and is disconnected; it never blocks the room.
func (c *conn) send(typ string, payload any) {
	if c.finished {
		return
	}
	data, err := json.Marshal(payload)
	if err != nil {
		c.log.Error("encode message", "type", typ, "err", err)
		return
	}
	frame, _ := json.Marshal(Envelope{Type: typ, Data: data})
	if !c.out.Push(outMsg{data: frame}) {
		c.log.Warn("client is not reading its messages; disconnecting")
		c.finish("slow_client", websocket.ClosePolicyViolation, "send queue full")
	}
}

func (c *conn) sendError(code, msg string) {
	c.s.countError(code)
	c.send(TypeError, Error{Code: code, Message: msg})
}

// fail sends an error and ends the session.
func (c *conn) fail(code, msg string, closeCode int) {
	c.sendError(code, msg)
	c.log.Info("session refused", "code", code, "msg", msg)
	c.finish(code, closeCode, code)
}

// finish leaves the room and closes the socket after what is queued.
func (c *conn) finish(reason string, closeCode int, closeText string) {
	if c.finished {
		return
	}
	if c.sess != nil {
		c.s.dropSession(c.sess)
	}
	if c.part != nil {
		c.part.Leave(reason)
	}
	c.finished = true
	if c.out.Push(outMsg{closeCode: closeCode, closeText: closeText}) {
		select {
		case <-c.wdone:
		case <-time.After(c.s.cfg.WriteTimeout):
		}
	}
	_ = c.ws.Close()
}

func (c *conn) readFailed(err error) {
	if c.fwd != nil {
		c.forwardFailed(err)
		return
	}
	var ce *websocket.CloseError
	tooBig := errors.As(err, &ce) && ce.Code == websocket.CloseMessageTooBig || errors.Is(err, websocket.ErrReadLimit)
	if tooBig {
		c.log.Info("message over the size limit; closed", "limit", c.s.cfg.MaxMessageBytes)
	} else {
		c.log.Debug("socket closed", "err", err)
	}
	c.finished = true
	_ = c.ws.Close()
	switch {
	case c.sess == nil: // not joined, or the session moved to another socket
	case tooBig: // the client broke the protocol: no resume
		c.s.dropSession(c.sess)
		c.part.Leave("disconnected")
	case c.s.detach(c.sess, c): // resumable for the grace period
		c.log.Info("socket dropped; the session can be resumed", "grace", c.s.cfg.ResumeGrace)
	}
}

// bad answers a client message of type req that could not be handled; the
// session stays open.
func (c *conn) bad(req, code, msg string) {
	if c.badLogs < maxBadLogging {
		c.log.Info("bad message from client", "request", req, "code", code, "msg", msg)
	}
	c.badLogs++
	c.s.countError(code)
	c.send(TypeError, Error{Code: code, Message: msg, Request: req})
}

// parseMessage decodes one client message into its payload struct. It is
// the only parser of client input on the socket.
func parseMessage(data []byte) (string, any, error) {
	var env Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return "", nil, fmt.Errorf("%w: message is not a JSON object {\"type\":...,\"data\":...}: %v", errBadPayload, err)
	}
	var v any
	switch env.Type {
	case TypeJoin:
		v = &Join{}
	case TypeResume:
		v = &Resume{}
	case TypeICERestart:
		v = &ICERestart{}
	case TypeOffer:
		v = &Offer{}
	case TypeAnswer:
		v = &Answer{}
	case TypeCandidate:
		v = &Candidate{}
	case TypeMute:
		v = &Mute{}
	case TypeUnpublish:
		v = &Unpublish{}
	case TypeTrackSettings:
		v = &TrackSettings{}
	case TypeLeave, TypePong:
		return env.Type, nil, nil
	case TypePing:
		var p Ping
		_ = json.Unmarshal(env.Data, &p)
		return env.Type, &p, nil
	default:
		return env.Type, nil, fmt.Errorf("%w: unknown message type %q (protocol %d)", errUnknownType, env.Type, ProtocolVersion)
	}
	if err := decode(env.Data, v); err != nil {
		return env.Type, nil, fmt.Errorf("%s: %w", env.Type, err)
	}
	if c, ok := v.(*Candidate); ok && c.Candidate != nil && string(*c.Candidate) != "null" {
		var ci webrtc.ICECandidateInit
		if err := json.Unmarshal(*c.Candidate, &ci); err != nil {
			return env.Type, nil, fmt.Errorf("candidate: %w: %v", errBadPayload, err)
		}
	}
	return env.Type, v, nil
}

var errUnknownType = errors.New("unknown type")

func (c *conn) handle(data []byte) {
	c.frame = data
	typ, payload, err := parseMessage(data)
	if c.part != nil && typ != TypePong {
		if ok, wait := c.limit.Allow(time.Now()); !ok {
			c.bad(typ, CodeRateLimited, fmt.Sprintf("more than %d messages in %s; this one was ignored: wait %s",
				c.s.cfg.RateLimit, c.s.cfg.RateWindow, wait.Round(time.Millisecond)))
			return
		}
	}
	if err != nil {
		switch {
		case c.part != nil: // in a session: answer, stay open
			code := CodeBadRequest
			if errors.Is(err, errUnknownType) {
				code = CodeUnknownType
			}
			c.bad(typ, code, err.Error())
		case typ == TypeJoin || typ == TypeResume:
			c.fail(CodeBadRequest, err.Error(), websocket.ClosePolicyViolation)
		default:
			c.fail(CodeNotJoined, "the first message must be join (or resume)", websocket.ClosePolicyViolation)
		}
		return
	}
	if c.part == nil && typ != TypeJoin && typ != TypeResume {
		c.fail(CodeNotJoined, "the first message must be join (or resume)", websocket.ClosePolicyViolation)
		return
	}
	switch m := payload.(type) {
	case *Join:
		if c.part != nil {
			c.bad(typ, CodeBadRequest, "already joined")
			return
		}
		c.join(m)
		return
	case *Resume:
		if c.part != nil {
			c.bad(typ, CodeBadRequest, "already in a session")
			return
		}
		c.resume(m)
		return
	case *ICERestart:
		err = c.part.RestartICE(m.Target)
	case *Offer:
		descs := make([]rooms.TrackDesc, len(m.Tracks))
		for i, t := range m.Tracks {
			descs[i] = rooms.TrackDesc{TrackID: t.TrackID, Source: t.Source, Muted: t.Muted}
			for _, l := range t.Layers {
				descs[i].Layers = append(descs[i].Layers, sfu.LayerDesc{RID: l.RID, Width: l.Width, Height: l.Height, MaxBitrate: l.MaxBitrate})
			}
		}
		err = c.part.HandleOffer(m.SDP, descs)
	case *Answer:
		err = c.part.HandleAnswer(m.SDP)
	case *Candidate:
		if m.Candidate != nil && string(*m.Candidate) != "null" {
			var ci webrtc.ICECandidateInit
			_ = json.Unmarshal(*m.Candidate, &ci)
			if ci.Candidate != "" {
				err = c.part.AddCandidate(m.Target, ci)
			}
		}
	case *Mute:
		err = c.part.SetMuted(m.TrackSID, m.Muted)
	case *Unpublish:
		err = c.part.Unpublish(m.TrackSID)
	case *TrackSettings:
		err = c.part.SetTrackSettings(m.TrackSID, sfu.TrackSettings{Width: m.Width, Height: m.Height, Quality: m.Quality, Paused: m.Paused})
	case *Ping:
		c.send(TypePong, m)
		return
	default:
		if typ == TypeLeave {
			c.finish("left", websocket.CloseNormalClosure, "left")
		}
		return
	}
	if err != nil {
		c.bad(typ, errorCode(err), fmt.Sprintf("%s: %v", typ, err))
	}
}

var errBadPayload = errors.New("bad payload")

func decode(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return fmt.Errorf("%w: data is missing", errBadPayload)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: %v", errBadPayload, err)
	}
	return nil
}

func errorCode(err error) string {
	switch {
	case errors.Is(err, errBadPayload), errors.Is(err, rooms.ErrBadDescription), errors.Is(err, rooms.ErrUnknownTrack),
		errors.Is(err, rooms.ErrBadTarget), errors.Is(err, sfu.ErrNotNegotiated), errors.Is(err, sfu.ErrBadCandidate):
		return CodeBadRequest
	case errors.Is(err, sfu.ErrBadSDP):
		return CodeBadSDP
	case errors.Is(err, rooms.ErrTooManyTracks):
		return CodeTooManyTracks
	case errors.Is(err, rooms.ErrPermission):
		return CodePermissionDenied
	case errors.Is(err, rooms.ErrRoomFull):
		return CodeRoomFull
	case errors.Is(err, rooms.ErrTooManyRooms):
		return CodeTooManyRooms
	case errors.Is(err, rooms.ErrClosed):
		return CodeShuttingDown
	case errors.Is(err, rooms.ErrDraining):
		return CodeDraining
	case errors.Is(err, ErrTokenExpired):
		return CodeTokenExpired
	case errors.Is(err, ErrInvalidToken):
		return CodeInvalidToken
	}
	return CodeInternal
}

func (c *conn) join(j *Join) {
	if j.Protocol != ProtocolVersion {
		c.fail(CodeUnsupportedProtocol, fmt.Sprintf("this server speaks protocol %d, the client asked for %d: update the client", ProtocolVersion, j.Protocol), websocket.ClosePolicyViolation)
		return
	}
	claims, err := VerifyToken(c.s.cfg.Keys, j.Token)
	if err != nil {
		code := errorCode(err)
		hint := "ask your application for a new token"
		c.fail(code, fmt.Sprintf("%v: %s", err, hint), websocket.ClosePolicyViolation)
		return
	}
	if j.Room != "" && j.Room != claims.Room {
		c.fail(CodeRoomMismatch, fmt.Sprintf("the token is for room %q, not %q", claims.Room, j.Room), websocket.ClosePolicyViolation)
		return
	}
	if c.s.cfg.Cluster != nil && !c.placeHere(claims.Room) {
		return
	}
	name := claims.Name
	if name == "" {
		name = claims.Subject
	}
	rl := &relay{to: c}
	p, err := c.s.mgr.Join(rooms.JoinParams{Room: claims.Room, Identity: claims.Subject, Name: name, Grants: claims.Grants, Sink: rl})
	if err != nil {
		if c.s.cfg.Cluster != nil && c.s.mgr.Room(claims.Room) == nil {
			// Placed here but refused (full, draining): free the room so
			// that the next join places it elsewhere.
			c.s.cfg.Cluster.Release(claims.Room)
		}
		code := errorCode(err)
		c.fail(code, err.Error(), websocket.ClosePolicyViolation)
		return
	}
	c.part = p
	c.sess = c.s.addSession(p, rl, c)
	c.log = c.log.With("room", claims.Room, "participant", p.SID())
}

// resume takes over the session of r.Token: the participant, its tracks
// and subscriptions stay; what the room sent meanwhile follows resumed.
func (c *conn) resume(r *Resume) {
	if r.Protocol != ProtocolVersion {
		c.fail(CodeUnsupportedProtocol, fmt.Sprintf("this server speaks protocol %d, the client asked for %d: update the client", ProtocolVersion, r.Protocol), websocket.ClosePolicyViolation)
		return
	}
	if c.s.cfg.Cluster != nil && !c.resumeHere(r.Token) {
		return
	}
	sess, old := c.s.resumeSession(r.Token, c)
	if sess == nil {
		c.fail(CodeResumeFailed, "no session to resume (its grace period is over, or the server restarted): join again with a token", websocket.ClosePolicyViolation)
		return
	}
	if old != nil {
		old.takenOver()
	}
	c.part, c.sess = sess.part, sess
	c.log = c.log.With("room", sess.part.Room(), "participant", sess.part.SID())
	others := []rooms.ParticipantInfo{}
	if r := c.s.mgr.Room(sess.part.Room()); r != nil {
		for _, info := range r.Participants() {
			if info.SID != sess.part.SID() {
				others = append(others, info)
			}
		}
	}
	c.send(TypeResumed, c.joinedPayload(sess.part.Info(), others, sess.part.Grants()))
	sess.part.SetDetached(false)
	if lost := sess.relay.attach(c); lost {
		c.log.Warn("messages were lost while the socket was away; ending the session")
		c.fail(CodeResumeFailed, "too many messages were waiting while you were away: join again", websocket.ClosePolicyViolation)
		return
	}
	c.log.Info("session resumed")
}

func (c *conn) joinedPayload(self rooms.ParticipantInfo, others []rooms.ParticipantInfo, grants rooms.Grants) Joined {
	j := Joined{Protocol: ProtocolVersion, Room: c.roomName(), Participant: self, Participants: others, Grants: grants,
		ICEServers: c.iceServers(), PingInterval: int(c.s.cfg.PingInterval / time.Millisecond),
		ResumeGrace: c.s.cfg.ResumeGrace.Milliseconds()}
	if c.sess != nil {
		j.ResumeToken = c.sess.token
	}
	return j
}

func (c *conn) drainEvents() {
	c.evMu.Lock()
	evs := c.evs
	c.evs = nil
	over := c.evOver
	c.evMu.Unlock()
	if over {
		c.log.Warn("too many events pending for this client; disconnecting")
		c.finish("slow_client", websocket.ClosePolicyViolation, "event queue full")
		return
	}
	for _, ev := range evs {
		if c.finished {
			return
		}
		c.deliver(ev)
	}
}

func (c *conn) deliver(ev any) {
	switch e := ev.(type) {
	case rooms.Joined:
		c.send(TypeJoined, c.joinedPayload(e.Self, e.Others, e.Grants))
	case rooms.ParticipantJoined:
		c.send(TypePartJoined, ParticipantJoined{Participant: e.Participant})
	case rooms.ParticipantLeft:
		c.send(TypePartLeft, ParticipantLeft{SID: e.SID, Identity: e.Identity, Reason: e.Reason})
	case rooms.TrackPublished:
		c.send(TypeTrackPub, TrackPublished{ParticipantSID: e.ParticipantSID, Track: e.Track})
	case rooms.TrackUnpublished:
		c.send(TypeTrackUnpub, TrackUnpublished{ParticipantSID: e.ParticipantSID, TrackSID: e.TrackSID})
	case rooms.TrackMuted:
		c.send(TypeTrackMuted, TrackMuted{ParticipantSID: e.ParticipantSID, TrackSID: e.TrackSID, Muted: e.Muted})
	case rooms.SetLayers:
		c.send(TypeSetLayers, SetLayers{TrackSID: e.TrackSID, Active: e.Active})
	case rooms.Speakers:
		c.send(TypeSpeakers, Speakers{Speakers: e.Speakers})
	case rooms.ParticipantUpdated:
		c.send(TypePartUpdated, ParticipantUpdated{Participant: e.Participant, Grants: e.Grants})
	case rooms.Answer:
		c.send(TypeAnswer, Answer{SDP: e.SDP})
	case rooms.Offer:
		c.send(TypeOffer, Offer{SDP: e.SDP, Mids: e.Mids})
	case rooms.Candidate:
		raw := json.RawMessage("null")
		if e.Candidate != nil {
			raw, _ = json.Marshal(e.Candidate)
		}
		c.send(TypeCandidate, Candidate{Target: e.Target, Candidate: &raw})
	case rooms.Closed:
		switch e.Reason {
		case "duplicate_identity", "server_shutdown", "removed", "room_closed", "room_moved":
			c.send(TypeLeave, Leave{Reason: e.Reason})
		default:
			code := CodeInternal
			switch {
			case errors.Is(e.Err, sfu.ErrNegotiationTimeout):
				code = CodeNegotiationTimeout
			case errors.Is(e.Err, sfu.ErrDataStalled):
				code = CodeSlowClient
			}
			c.sendError(code, fmt.Sprintf("%s: %v", e.Reason, e.Err))
			c.send(TypeLeave, Leave{Reason: e.Reason})
		}
		closeCode := websocket.CloseNormalClosure
		switch e.Reason {
		case "server_shutdown":
			closeCode = websocket.CloseGoingAway
		case "room_moved":
			closeCode = websocket.CloseServiceRestart
		}
		c.finish(e.Reason, closeCode, e.Reason)
	}
}

func (c *conn) roomName() string {
	if c.part == nil {
		return ""
	}
	return c.part.Room()
}

func (c *conn) iceServers() []ICEServer {
	all := append([]ICEServer{}, c.s.cfg.ICEServers...)
	if c.s.cfg.ICEServersFor != nil && c.part != nil {
		all = append(all, c.s.cfg.ICEServersFor(c.part.Identity())...)
	}
	// Browsers refuse the whole configuration if one entry has no URL.
	out := all[:0]
	for _, s := range all {
		if len(s.URLs) > 0 {
			out = append(out, s)
		}
	}
	return out
}
