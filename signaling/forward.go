package signaling

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parley-rtc/parley/cluster"
)

// Several nodes (docs/scaling.md): a room lives on one node. A socket that
// joins a room held by another node stays here, and its frames travel both
// ways through a cluster.Pipe; the room's node runs the session (a conn
// whose socket is a pipeSocket) as if the client were its own.

// tokenNodeSep separates the node id from the rest of a resume token.
const tokenNodeSep = "."

// placeHere finds the room's node. It reports true when the session is to
// run here; otherwise the socket now relays to that node, or has failed.
func (c *conn) placeHere(room string) bool {
	cl := c.s.cfg.Cluster
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if c.relayed {
		// The node that holds the socket chose this one: take the room
		// unless a live node took it meanwhile.
		owner, err := cl.Claim(ctx, room)
		if err != nil {
			c.clusterFail(err)
			return false
		}
		if owner != cl.ID() {
			c.fail(CodeRoomMoved, "the room moved to another node while you joined: join again", websocket.CloseServiceRestart)
			return false
		}
		return true
	}
	owner, err := cl.Place(ctx, room)
	if err != nil {
		if c.s.mgr.Room(room) != nil {
			// The room is here: joining it needs no Redis.
			c.log.Warn("Redis unavailable; joining a room this node holds", "err", err)
			return true
		}
		c.clusterFail(err)
		return false
	}
	if owner == cl.ID() {
		return true
	}
	return c.forwardTo(ctx, owner, CodeNodeUnavailable)
}

// resumeHere reports true when the session of token is (or was) here.
func (c *conn) resumeHere(token string) bool {
	node, _, ok := strings.Cut(token, tokenNodeSep)
	if !ok || c.relayed || node == c.s.cfg.Cluster.ID() {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return c.forwardTo(ctx, node, CodeResumeFailed)
}

// forwardTo opens a pipe to node with the message in hand. gone is the
// error code when the node does not listen.
func (c *conn) forwardTo(ctx context.Context, node, gone string) bool {
	p, err := c.s.cfg.Cluster.Dial(ctx, node, c.remote, c.frame)
	switch {
	case errors.Is(err, cluster.ErrNodeGone) && gone == CodeResumeFailed:
		c.fail(CodeResumeFailed, "the node that held your session is gone: join again with a token", websocket.ClosePolicyViolation)
		return false
	case err != nil:
		c.clusterFail(err)
		return false
	}
	c.fwd = p
	c.log = c.log.With("room_node", node)
	c.log.Debug("relaying the session to the room's node")
	return false
}

// clusterFail ends a session the cluster could not place.
func (c *conn) clusterFail(err error) {
	switch {
	case errors.Is(err, cluster.ErrNoNode):
		c.fail(CodeNoNode, "no node can take this room now: every node is full or draining; try again later", websocket.CloseTryAgainLater)
	case errors.Is(err, cluster.ErrNodeGone):
		c.fail(CodeNodeUnavailable, "the node that holds this room does not answer; it is being replaced: try again in a few seconds", websocket.CloseTryAgainLater)
	default:
		c.log.Warn("cannot place the room", "err", err)
		c.fail(CodeClusterUnavailable, "the cluster's shared state (Redis) does not answer, so the room cannot be found or placed: try again in a few seconds", websocket.CloseTryAgainLater)
	}
}

// forwardIn relays a client frame to the room's node. The socket's rate
// limit applies here too, so that a flood does not cross Redis.
func (c *conn) forwardIn(data []byte) {
	if ok, wait := c.limit.Allow(time.Now()); !ok {
		c.bad("", CodeRateLimited, fmt.Sprintf("more than %d messages in %s; this one was ignored: wait %s",
			c.s.cfg.RateLimit, c.s.cfg.RateWindow, wait.Round(time.Millisecond)))
		return
	}
	if err := c.fwd.Send(data); err != nil && !errors.Is(err, cluster.ErrClosed) {
		c.log.Warn("a message could not be relayed to the room's node; it is lost", "err", err)
		c.send(TypeError, Error{Code: CodeClusterUnavailable, Message: "this message could not reach the room's node (Redis does not answer) and was lost: send it again later"})
	}
}

// forwardOut writes a frame of the room's node to the client; !ok is the
// pipe's end.
func (c *conn) forwardOut(data []byte, ok bool) {
	if ok {
		if !c.out.Push(outMsg{data: data}) {
			c.log.Warn("client is not reading its messages; disconnecting")
			c.fwd.Close(websocket.ClosePolicyViolation, "send queue full")
			c.finish("", websocket.ClosePolicyViolation, "send queue full")
		}
		return
	}
	code, text := c.fwd.CloseStatus()
	switch code {
	case cluster.CloseNodeFailed, cluster.CloseUnknownSession:
		c.log.Info("the room's node stopped; the client is told to join again")
		c.send(TypeError, Error{Code: CodeRoomMoved, Message: "the node that held your room stopped: join again with your token (the room moves to a live node)"})
		c.send(TypeLeave, Leave{Reason: "room_moved"})
		c.finish("", websocket.CloseServiceRestart, "room_moved")
	case 0, websocket.CloseNoStatusReceived, websocket.CloseAbnormalClosure:
		c.finish("", websocket.CloseNormalClosure, text)
	default:
		c.finish("", code, text)
	}
}

// forwardFailed passes the end of the client's socket to the room's node:
// the session there stays resumable, as for a socket of its own.
func (c *conn) forwardFailed(err error) {
	code, text := websocket.CloseAbnormalClosure, "socket dropped"
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		code, text = ce.Code, ce.Text
	} else if errors.Is(err, websocket.ErrReadLimit) {
		code, text = websocket.CloseMessageTooBig, "message too big"
	}
	c.fwd.Close(code, text)
	c.finished = true
	_ = c.ws.Close()
}

// forwardShutdown: this node stops, the room's node goes on. The session
// there stays resumable; the client reconnects (to another node) and
// resumes.
func (c *conn) forwardShutdown() {
	c.fwd.Close(websocket.CloseGoingAway, "relaying node going away")
	c.finish("", websocket.CloseServiceRestart, "server restarting: reconnect and resume")
}

// ServePipe runs a session whose socket another node holds.
func (s *Server) ServePipe(p *cluster.Pipe) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		p.Close(websocket.CloseServiceRestart, "server_shutdown")
		return
	}
	c := newConn(s, &pipeSocket{p: p, log: s.log}, p.Remote())
	c.relayed = true
	c.log = c.log.With("via_node", p.Peer())
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	c.run()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// pipeSocket is the socket of a relayed session: frames come and go
// through the pipe; pings, deadlines and limits are the business of the
// node holding the WebSocket.
type pipeSocket struct {
	p   *cluster.Pipe
	log *slog.Logger
}

func (s *pipeSocket) SetReadLimit(int64)                 {}
func (s *pipeSocket) SetReadDeadline(time.Time) error    { return nil }
func (s *pipeSocket) SetPongHandler(func(string) error)  {}
func (s *pipeSocket) SetWriteDeadline(t time.Time) error { return nil }

func (s *pipeSocket) ReadMessage() (int, []byte, error) {
	data, ok := <-s.p.Recv()
	if !ok {
		code, text := s.p.CloseStatus()
		return 0, nil, &websocket.CloseError{Code: code, Text: text}
	}
	return websocket.TextMessage, data, nil
}

func (s *pipeSocket) WriteMessage(_ int, data []byte) error {
	err := s.p.Send(data)
	if err != nil && !errors.Is(err, cluster.ErrClosed) {
		// Redis is away: the message is lost, the session goes on.
		s.log.Warn("a message to a relayed client was lost", "err", err)
		return nil
	}
	return err
}

func (s *pipeSocket) WriteControl(typ int, data []byte, _ time.Time) error {
	if typ != websocket.CloseMessage {
		return nil
	}
	code, text := websocket.CloseNormalClosure, ""
	if len(data) >= 2 {
		code, text = int(binary.BigEndian.Uint16(data)), string(data[2:])
	}
	s.p.Close(code, text)
	return nil
}

func (s *pipeSocket) Close() error {
	s.p.Close(websocket.CloseNormalClosure, "")
	return nil
}
