package signaling

import (
	"encoding/json"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parley-rtc/parley/rooms"
)

// halfFrame is the start of a masked client text frame that announces a
// 100-byte payload but carries only 10 of them: the server's reader waits
// in the middle of a message, for bytes that never come.
var halfFrame = append([]byte{0x81, 0x80 | 100, 1, 2, 3, 4}, []byte("0123456789")...)

// stall sends halfFrame on r's socket and stops writing: pings are no
// longer answered (a pong written now would only feed the half frame). It
// returns when the frame was sent.
func (r *raw) stall() time.Time {
	r.t.Helper()
	r.ws.SetPingHandler(func(string) error { return nil })
	r.ws.SetCloseHandler(func(int, string) error { return nil })
	nc := r.ws.UnderlyingConn()
	_ = nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write(halfFrame); err != nil {
		r.t.Fatalf("write half a frame: %v", err)
	}
	return time.Now()
}

// closedAt reads (without answering anything) until the server closes the
// socket and returns when it did and how.
func (r *raw) closedAt(within time.Duration) (time.Time, error) {
	r.t.Helper()
	_ = r.ws.SetReadDeadline(time.Now().Add(within))
	for {
		if _, _, err := r.ws.ReadMessage(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				r.t.Fatalf("the server did not close the socket within %s", within)
			}
			return time.Now(), err
		}
	}
}

// leftReason waits until c sees the participant sid leave and returns the
// reason and when it arrived.
func leftReason(t *testing.T, c *testClient, sid string, within time.Duration) (string, time.Time) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		for _, env := range c.events {
			var m ParticipantLeft
			if env.Type == TypePartLeft && json.Unmarshal(env.Data, &m) == nil && m.SID == sid {
				c.mu.Unlock()
				return m.Reason, time.Now()
			}
		}
		c.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s did not see %s leave within %s", c.identity, sid, within)
	return "", time.Time{}
}

func inRoom(s *testServer, room, sid string) bool {
	r := s.mgr.Room(room)
	if r == nil {
		return false
	}
	for _, p := range r.Participants() {
		if p.SID == sid {
			return true
		}
	}
	return false
}

// TestHalfOpenSocket: a client that stops in the middle of a frame is
// closed after PongTimeout, before and after joining. After joining its
// participant is kept, resumable, for ResumeGrace, then leaves with reason
// disconnected; a resume in time takes the session over from the stalled
// socket, which is closed with 4001.
func TestHalfOpenSocket(t *testing.T) {
	const ping, pongTimeout, grace = 200 * time.Millisecond, time.Second, 1500 * time.Millisecond
	const slack = 1500 * time.Millisecond // scheduling under -race on two busy cores
	s := newTestServer(t, rooms.Config{NegotiationTimeout: time.Minute},
		Config{PingInterval: ping, PongTimeout: pongTimeout, ResumeGrace: grace})
	watcher := joinClient(t, s, "half", "watcher") // reads all the time: answers every ping

	t.Run("before join", func(t *testing.T) {
		r := rawDial(t, s)
		sent := r.stall()
		at, err := r.closedAt(pongTimeout + slack + time.Second)
		took := at.Sub(sent)
		t.Logf("closed %s after the half frame: %v", took.Round(time.Millisecond), err)
		if took < pongTimeout/2 || took > pongTimeout+slack {
			t.Errorf("closed after %s, want about the pong timeout (%s)", took, pongTimeout)
		}
	})

	t.Run("after join", func(t *testing.T) {
		r := rawDial(t, s)
		r.join(s.token(t, "half", "stuck"), "half")
		var j Joined
		_ = json.Unmarshal(r.next(TypeJoined).Data, &j)
		if j.ResumeToken == "" || j.ResumeGrace != grace.Milliseconds() {
			t.Fatalf("joined without a resume token or with resume_grace_ms %d", j.ResumeGrace)
		}
		sid := j.Participant.SID
		sent := r.stall()
		closed, err := r.closedAt(pongTimeout + slack + time.Second)
		took := closed.Sub(sent)
		t.Logf("closed %s after the half frame: %v", took.Round(time.Millisecond), err)
		if took > pongTimeout+slack {
			t.Errorf("closed after %s, want about the pong timeout (%s)", took, pongTimeout)
		}
		// Resumable for the grace period: still in the room, and nobody
		// has seen it leave.
		if !inRoom(s, "half", sid) {
			t.Fatalf("the participant left as its socket closed; want it kept for the resume grace (%s)", grace)
		}
		reason, left := leftReason(t, watcher, sid, grace+slack+time.Second)
		kept := left.Sub(closed)
		t.Logf("left (%s) %s after its socket closed, %s after the half frame", reason, kept.Round(time.Millisecond), left.Sub(sent).Round(time.Millisecond))
		if reason != "disconnected" {
			t.Errorf("left with reason %q, want disconnected", reason)
		}
		if kept < grace-200*time.Millisecond || left.Sub(sent) > pongTimeout+grace+slack {
			t.Errorf("left %s after its socket closed (%s after the half frame); want the resume grace, %s", kept, left.Sub(sent), grace)
		}
		if inRoom(s, "half", sid) {
			t.Errorf("still in the room after leaving")
		}
	})

	t.Run("resume takes over a stalled socket", func(t *testing.T) {
		old := rawDial(t, s)
		old.join(s.token(t, "half", "mover"), "half")
		var j Joined
		_ = json.Unmarshal(old.next(TypeJoined).Data, &j)
		old.stall()

		// The new socket must answer pings while the test watches.
		fresh := rawDial(t, s)
		fresh.send(TypeResume, Resume{Token: j.ResumeToken, Protocol: ProtocolVersion})
		var rs Joined
		_ = json.Unmarshal(fresh.next(TypeResumed).Data, &rs)
		if rs.Participant.SID != j.Participant.SID || rs.ResumeToken != j.ResumeToken {
			t.Fatalf("resumed as %s (token %q), want %s (token %q)", rs.Participant.SID, rs.ResumeToken, j.Participant.SID, j.ResumeToken)
		}
		readerDone := make(chan struct{})
		go func() {
			defer close(readerDone)
			for {
				if _, _, err := fresh.ws.ReadMessage(); err != nil {
					return
				}
			}
		}()

		_, err := old.closedAt(pongTimeout + slack)
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != closeResumedElsewhere {
			t.Errorf("the stalled socket closed with %v, want close code %d", err, closeResumedElsewhere)
		}
		// Well past the pong timeout and the grace of the old socket, the
		// participant is still there, on the new socket.
		time.Sleep(pongTimeout + grace)
		if !inRoom(s, "half", j.Participant.SID) {
			t.Errorf("the resumed participant left")
		}
		watcher.mu.Lock()
		if watcher.left[j.Participant.SID] {
			t.Errorf("the watcher saw the resumed participant leave")
		}
		watcher.mu.Unlock()
		fresh.send(TypeLeave, Leave{})
		<-readerDone
		reason, _ := leftReason(t, watcher, j.Participant.SID, 5*time.Second)
		if reason != "left" {
			t.Errorf("left with reason %q, want left", reason)
		}
	})
}
