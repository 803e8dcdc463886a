//go:build linux

package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parley-rtc/parley/rooms"
)

// dialSlowReader opens a WebSocket whose receive side is as small as the
// kernel allows: a receive buffer of 1 KiB set before connecting (so the
// window it announces is small from the start; after the handshake
// SetReadBuffer alone leaves the window open to megabytes) and a small
// MSS, which keeps the server's send buffer from autotuning to megabytes.
// Whoever calls it never reads: what the server sends piles up in the
// server's socket, then in its queue.
func dialSlowReader(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	small := func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024)
			if serr == nil {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 536)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
	d := websocket.Dialer{
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   1024,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{Control: small}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			_ = c.(*net.TCPConn).SetReadBuffer(1024)
			return c, nil
		},
	}
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	return ws
}

// joinAndLeave joins room as identity on a fresh socket and leaves at
// once: two messages (participant_joined, participant_left) for everybody
// in the room, about 1 KB with an identity and a name of 256 bytes.
func joinAndLeave(s *testServer, room, identity string) error {
	tok, err := MintToken(s.key, s.secret, TokenSpec{Room: room, Identity: identity, Name: strings.Repeat("N", 256),
		Grants: rooms.Grants{Subscribe: true}})
	if err != nil {
		return err
	}
	ws, _, err := websocket.DefaultDialer.Dial(s.url, nil)
	if err != nil {
		return err
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	data, _ := json.Marshal(Join{Token: tok, Protocol: ProtocolVersion, Room: room})
	if err := ws.WriteJSON(Envelope{Type: TypeJoin, Data: data}); err != nil {
		return err
	}
	for {
		var env Envelope
		if err := ws.ReadJSON(&env); err != nil {
			return fmt.Errorf("%s: join: %w", identity, err)
		}
		if env.Type == TypeJoined {
			break
		}
	}
	if err := ws.WriteJSON(Envelope{Type: TypeLeave, Data: json.RawMessage(`{}`)}); err != nil {
		return err
	}
	for { // the server closes after leave
		if _, _, err := ws.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) && ce.Code == websocket.CloseNormalClosure {
				return nil
			}
			return fmt.Errorf("%s: after leave: %w", identity, err)
		}
	}
}

// TestClientThatStopsReadingIsDropped: a participant whose socket stops
// reading while the room keeps sending it messages (people joining and
// leaving) is disconnected once its writes block for WriteTimeout or its
// queue fills, in bounded time; the others keep their media, intact, and
// see it leave.
func TestClientThatStopsReadingIsDropped(t *testing.T) {
	const writeTimeout, grace = time.Second, time.Second
	// The slow client never answers its subscriber offer: a long
	// negotiation timeout keeps that from ending it first, and the default
	// pong timeout (30 s) is far away too; its own writes keep its read
	// deadline fresh anyway.
	s := newTestServer(t, rooms.Config{NegotiationTimeout: time.Minute},
		Config{WriteTimeout: writeTimeout, ResumeGrace: grace})
	alice := joinClient(t, s, "busy", "alice")
	bob := joinClient(t, s, "busy", "bob")
	alice.publish(true, true)
	bob.publish(true, true)
	kinds := []string{"audio", "video"}
	waitErr(t, 20*time.Second, func() error { return alice.mediaFrom([]string{"bob"}, kinds, 30) })
	waitErr(t, 20*time.Second, func() error { return bob.mediaFrom([]string{"alice"}, kinds, 30) })

	slow := dialSlowReader(t, s.url)
	data, _ := json.Marshal(Join{Token: s.token(t, "busy", "slow"), Protocol: ProtocolVersion, Room: "busy"})
	if err := slow.WriteJSON(Envelope{Type: TypeJoin, Data: data}); err != nil {
		t.Fatal(err)
	}
	var slowSID string
	waitFor(t, 10*time.Second, "slow in the room", func() bool {
		for _, p := range s.mgr.Room("busy").Participants() {
			if p.Identity == "slow" {
				slowSID = p.SID
			}
		}
		return slowSID != ""
	})

	// The slow client writes a pong every 50 ms (never rate-limited, and
	// it keeps its read deadline fresh): the first write that fails shows
	// that the server has closed the socket.
	pressure := time.Now()
	var dropped atomic.Int64 // unix nanoseconds
	go func() {
		for dropped.Load() == 0 {
			_ = slow.SetWriteDeadline(time.Now().Add(time.Second))
			if err := slow.WriteMessage(websocket.TextMessage, []byte(`{"type":"pong","data":{}}`)); err != nil {
				dropped.Store(time.Now().UnixNano())
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	joiners := 0
	for dropped.Load() == 0 && time.Since(pressure) < 60*time.Second {
		if err := joinAndLeave(s, "busy", fmt.Sprintf("j%03d-%s", joiners, strings.Repeat("x", 250))); err != nil {
			t.Fatal(err)
		}
		joiners++
	}
	if dropped.Load() == 0 {
		t.Fatalf("the server still holds the socket of a client that reads nothing after %s and %d people joined and left",
			time.Since(pressure).Round(time.Millisecond), joiners)
	}
	dropAt := time.Unix(0, dropped.Load())
	took := dropAt.Sub(pressure)
	t.Logf("the slow client was dropped %s after the pressure began, after %d joins and leaves (about %d KB for it)",
		took.Round(time.Millisecond), joiners, joiners)
	// What is buffered for a client is bounded (its queue of 512 messages
	// and the sockets' buffers): 256 joins and leaves fill the queue by
	// themselves, and then the socket buffers take some tens more. Time:
	// producing that plus one WriteTimeout.
	if joiners > 400 {
		t.Errorf("%d joins and leaves before the slow client was dropped: the server buffers too much for it", joiners)
	}
	if took > 20*time.Second {
		t.Errorf("the slow client was dropped only %s after the pressure began", took)
	}

	// Its participant leaves: at once (queue full) or after the resume
	// grace (a write timed out, which looks like a dropped socket).
	for _, c := range []*testClient{alice, bob} {
		waitFor(t, grace+5*time.Second, c.identity+" sees slow leave", func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.left[slowSID]
		})
	}
	reason := ""
	alice.mu.Lock()
	for _, env := range alice.events {
		var m ParticipantLeft
		if env.Type == TypePartLeft && json.Unmarshal(env.Data, &m) == nil && m.SID == slowSID {
			reason = m.Reason
		}
	}
	alice.mu.Unlock()
	t.Logf("the others saw it leave (%s) %s after it was dropped", reason, time.Since(dropAt).Round(time.Millisecond))
	if reason != "slow_client" && reason != "disconnected" {
		t.Errorf("slow left with reason %q, want slow_client (queue full) or disconnected (write timeout, then the resume grace)", reason)
	}
	for _, p := range s.mgr.Room("busy").Participants() {
		if p.Identity == "slow" {
			t.Fatalf("slow is still in the room")
		}
	}

	// The call carried on: both still receive, intact and continuous.
	before := map[string]int{}
	for sid, rc := range alice.snapshot() {
		before[sid] = rc.packets
	}
	waitErr(t, 10*time.Second, func() error {
		for sid, rc := range alice.snapshot() {
			if rc.packets < before[sid]+30 {
				return fmt.Errorf("alice's media from %s stalled: %d packets, %d before", rc.from, rc.packets, before[sid])
			}
		}
		return nil
	})
	if err := alice.mediaFrom([]string{"bob"}, kinds, 30); err != nil {
		t.Error(err)
	}
	if err := bob.mediaFrom([]string{"alice"}, kinds, 30); err != nil {
		t.Error(err)
	}
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
