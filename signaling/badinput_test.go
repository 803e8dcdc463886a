package signaling

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/parley-rtc/parley/rooms"
)

// raw is a bare WebSocket client for sending bad input.
type raw struct {
	t  *testing.T
	ws *websocket.Conn
}

func rawDial(t *testing.T, s *testServer) *raw {
	t.Helper()
	r := &raw{t: t, ws: dial(t, s.url)}
	t.Cleanup(func() { _ = r.ws.Close() })
	return r
}

func (r *raw) send(typ string, payload any) {
	data, _ := json.Marshal(payload)
	_ = r.ws.WriteJSON(Envelope{Type: typ, Data: data})
}

// next returns the next message of type typ, skipping others; it fails if
// the socket closes first.
func (r *raw) next(typ string) Envelope {
	r.t.Helper()
	_ = r.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		var env Envelope
		if err := r.ws.ReadJSON(&env); err != nil {
			r.t.Fatalf("waiting for %s: %v", typ, err)
		}
		if env.Type == typ {
			return env
		}
	}
}

func (r *raw) expectError(code string) Error {
	r.t.Helper()
	env := r.next(TypeError)
	var e Error
	_ = json.Unmarshal(env.Data, &e)
	if e.Code != code {
		r.t.Fatalf("error code %q (%s), want %q", e.Code, e.Message, code)
	}
	if e.Message == "" {
		r.t.Fatalf("error %q without a message", code)
	}
	return e
}

// expectClose reads until the server closes with the close code.
func (r *raw) expectClose(code int) {
	r.t.Helper()
	_ = r.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := r.ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != code {
			r.t.Fatalf("closed with %v, want close code %d", err, code)
		}
		return
	}
}

// stillOpen proves the session survives: a ping gets its pong.
func (r *raw) stillOpen() {
	r.t.Helper()
	r.send(TypePing, Ping{Timestamp: 42})
	env := r.next(TypePong)
	var p Ping
	_ = json.Unmarshal(env.Data, &p)
	if p.Timestamp != 42 {
		r.t.Fatalf("pong %+v", p)
	}
}

func (r *raw) join(tok, room string) {
	r.send(TypeJoin, Join{Token: tok, Protocol: ProtocolVersion, Room: room})
}

func TestBadInputDisturbsNoOne(t *testing.T) {
	s := newTestServer(t, rooms.Config{MaxParticipants: 4, NegotiationTimeout: 2 * time.Second}, Config{MaxMessageBytes: 8192})
	alice := joinClient(t, s, "call", "alice")
	bob := joinClient(t, s, "call", "bob")
	alice.publish(true, true)
	bob.publish(true, true)
	kinds := []string{"audio", "video"}
	waitErr(t, 20*time.Second, func() error { return alice.mediaFrom([]string{"bob"}, kinds, 30) })
	waitErr(t, 20*time.Second, func() error { return bob.mediaFrom([]string{"alice"}, kinds, 30) })

	t.Run("garbage token", func(t *testing.T) {
		r := rawDial(t, s)
		r.join("garbage", "call")
		r.expectError(CodeInvalidToken)
		r.expectClose(websocket.ClosePolicyViolation)
	})
	t.Run("expired token", func(t *testing.T) {
		c := claimsFor(time.Now().Add(-time.Hour))
		c.Room = "call"
		tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(testSecret))
		r := rawDial(t, s)
		r.join(tok, "call")
		r.expectError(CodeTokenExpired)
		r.expectClose(websocket.ClosePolicyViolation)
	})
	t.Run("token for another room", func(t *testing.T) {
		r := rawDial(t, s)
		r.join(s.token(t, "elsewhere", "mallory"), "call")
		r.expectError(CodeRoomMismatch)
		r.expectClose(websocket.ClosePolicyViolation)
	})
	t.Run("wrong protocol", func(t *testing.T) {
		r := rawDial(t, s)
		r.send(TypeJoin, Join{Token: s.token(t, "call", "old"), Protocol: 99})
		r.expectError(CodeUnsupportedProtocol)
		r.expectClose(websocket.ClosePolicyViolation)
	})
	t.Run("message before join", func(t *testing.T) {
		r := rawDial(t, s)
		r.send(TypeOffer, Offer{SDP: "v=0"})
		r.expectError(CodeNotJoined)
		r.expectClose(websocket.ClosePolicyViolation)
	})
	t.Run("malformed json, unknown type, garbage sdp keep the session", func(t *testing.T) {
		r := rawDial(t, s)
		r.join(s.token(t, "call", "eve"), "call")
		r.next(TypeJoined)
		r.next(TypeOffer)
		r.send(TypeAnswer, Answer{SDP: "v=0\r\nnonsense"})
		r.expectError(CodeBadSDP)
		_ = r.ws.WriteMessage(websocket.TextMessage, []byte(`{"type": "offer", "data": {`))
		r.expectError(CodeBadRequest)
		r.send("frobnicate", map[string]int{"x": 1})
		r.expectError(CodeUnknownType)
		r.send(TypeOffer, Offer{SDP: "this is not sdp"})
		if e := r.expectError(CodeBadSDP); e.Request != TypeOffer {
			t.Fatalf("bad_sdp error names request %q, want offer", e.Request)
		}
		r.send(TypeOffer, Offer{SDP: "v=0", Tracks: []TrackDesc{{TrackID: "x", Source: "hologram"}}})
		r.expectError(CodeBadRequest)
		r.send(TypeMute, Mute{TrackSID: "TR_nope", Muted: true})
		r.expectError(CodeBadRequest)
		r.stillOpen()
		r.send(TypeLeave, Leave{})
		r.expectClose(websocket.CloseNormalClosure)
	})
	t.Run("oversized message", func(t *testing.T) {
		r := rawDial(t, s)
		r.join(s.token(t, "call", "big"), "call")
		r.next(TypeJoined)
		r.send(TypeOffer, Offer{SDP: strings.Repeat("a", 20000)})
		r.expectClose(websocket.CloseMessageTooBig)
	})
	t.Run("room full", func(t *testing.T) {
		a := rawDial(t, s)
		a.join(s.token(t, "call", "third"), "call")
		a.next(TypeJoined)
		b := rawDial(t, s)
		b.join(s.token(t, "call", "fourth"), "call")
		b.next(TypeJoined)
		c := rawDial(t, s)
		c.join(s.token(t, "call", "fifth"), "call")
		c.expectError(CodeRoomFull)
		c.expectClose(websocket.ClosePolicyViolation)
		a.send(TypeLeave, Leave{})
		b.send(TypeLeave, Leave{})
	})
	t.Run("participant that never answers", func(t *testing.T) {
		r := rawDial(t, s)
		r.join(s.token(t, "call", "mute-client"), "call")
		r.next(TypeJoined)
		r.next(TypeOffer) // subscriber offer with alice's and bob's tracks; never answered
		r.expectError(CodeNegotiationTimeout)
		r.expectClose(websocket.CloseNormalClosure)
	})
	t.Run("no permission to publish", func(t *testing.T) {
		tok, _ := MintToken(testKey, testSecret, TokenSpec{Room: "call", Identity: "viewer", Grants: rooms.Grants{Subscribe: true}})
		r := rawDial(t, s)
		r.join(tok, "call")
		r.next(TypeJoined)
		r.send(TypeOffer, Offer{SDP: "v=0"})
		r.expectError(CodePermissionDenied)
		r.stillOpen()
	})

	// The call carried on: both still receive, intact and continuous.
	before := map[string]int{}
	for sid, rc := range alice.snapshot() {
		before[sid] = rc.packets
	}
	waitErr(t, 10*time.Second, func() error {
		for sid, rc := range alice.snapshot() {
			if rc.packets < before[sid]+30 {
				return errors.New("alice's media stalled after the bad input")
			}
		}
		return nil
	})
	checkIntact(t, alice)
	checkIntact(t, bob)
	for _, c := range []*testClient{alice, bob} {
		c.mu.Lock()
		if len(c.errors) > 0 {
			t.Errorf("%s got errors: %+v", c.identity, c.errors)
		}
		c.mu.Unlock()
	}
}

func TestDuplicateIdentityReplacesOldSession(t *testing.T) {
	s := newTestServer(t, rooms.Config{}, Config{})
	old := rawDial(t, s)
	old.join(s.token(t, "r", "alice"), "r")
	old.next(TypeJoined)
	again := rawDial(t, s)
	again.join(s.token(t, "r", "alice"), "r")
	again.next(TypeJoined)
	env := old.next(TypeLeave)
	var l Leave
	_ = json.Unmarshal(env.Data, &l)
	if l.Reason != "duplicate_identity" {
		t.Fatalf("leave reason %q", l.Reason)
	}
	if n := len(s.mgr.Room("r").Participants()); n != 1 {
		t.Fatalf("%d participants, want 1", n)
	}
}

func TestShutdownTellsParticipants(t *testing.T) {
	s := newTestServer(t, rooms.Config{}, Config{})
	r := rawDial(t, s)
	r.join(s.token(t, "r", "alice"), "r")
	r.next(TypeJoined)
	go func() { _ = s.srv.Shutdown(t.Context()) }()
	env := r.next(TypeLeave)
	var l Leave
	_ = json.Unmarshal(env.Data, &l)
	if l.Reason != "server_shutdown" {
		t.Fatalf("leave reason %q", l.Reason)
	}
	r.expectClose(websocket.CloseGoingAway)
}

func FuzzParseMessage(f *testing.F) {
	f.Add([]byte(`{"type":"join","data":{"token":"x","protocol":1}}`))
	f.Add([]byte(`{"type":"candidate","data":{"target":"publisher","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0"}}}`))
	f.Add([]byte(`{"type":"offer","data":{"sdp":"v=0","tracks":[{"track_id":"a","source":"camera"}]}}`))
	f.Add([]byte(`{"type":"mute","data":{"track_sid":"TR_x","muted":true}}`))
	f.Add([]byte(`{"type":"ping","data":{"ts":1}}`))
	f.Add([]byte(`{"type":`))
	f.Fuzz(func(t *testing.T, data []byte) {
		typ, payload, err := parseMessage(data)
		if err == nil && payload == nil && typ != TypeLeave && typ != TypePong {
			t.Fatalf("type %q parsed to nothing without an error", typ)
		}
	})
}
