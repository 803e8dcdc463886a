package signaling

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"github.com/parley-rtc/parley/rooms"
)

// Resuming a session after a dropped WebSocket, ICE restart and the
// per-socket limits (docs/protocol.md).

// drop closes c's WebSocket as a network failure would: no leave.
func (c *testClient) drop() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.Close()
}

// resumeToken is the token of c's session, from joined or resumed.
func (c *testClient) resumeToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.joined.ResumeToken
}

// resume opens a new socket and resumes c's session on it; it returns the
// first message the server answered with.
func (c *testClient) resume(s *testServer, token string) Envelope {
	c.t.Helper()
	ws := dial(c.t, s.url)
	data, _ := json.Marshal(Resume{Token: token, Protocol: ProtocolVersion})
	_ = ws.WriteJSON(Envelope{Type: TypeResume, Data: data})
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var env Envelope
	if err := ws.ReadJSON(&env); err != nil {
		c.t.Fatalf("%s: resume: %v", c.identity, err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	c.mu.Lock()
	c.events = append(c.events, env)
	c.mu.Unlock()
	if env.Type != TypeResumed {
		_ = ws.Close()
		return env
	}
	var j Joined
	_ = json.Unmarshal(env.Data, &j)
	c.wmu.Lock()
	old := c.ws
	c.ws = ws
	c.wmu.Unlock()
	_ = old.Close()
	c.mu.Lock()
	c.joined, c.closed = &j, false
	c.mu.Unlock()
	go c.readLoop(ws)
	return env
}

func (c *testClient) count(typ string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, e := range c.events {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// TestResumeKeepsTheCall: a participant whose socket drops mid-call and
// resumes within the grace period keeps its identity, tracks and
// subscriptions; the others see continuous media and no leave; what the
// room did meanwhile (a new track) reaches it after the resume.
func TestResumeKeepsTheCall(t *testing.T) {
	s := newTestServer(t, rooms.Config{}, Config{ResumeGrace: 10 * time.Second})
	names := []string{"alice", "bob", "carol"}
	var cs []*testClient
	for _, n := range names {
		c := joinClient(t, s, "resume", n)
		c.publish(true, true)
		cs = append(cs, c)
	}
	alice, bob, carol := cs[0], cs[1], cs[2]
	kinds := []string{"audio", "video"}
	for i, c := range cs {
		others := append(append([]string{}, names[:i]...), names[i+1:]...)
		waitErr(t, 20*time.Second, func() error { return c.mediaFrom(others, kinds, 30) })
	}
	bobSID, token := bob.sid(), bob.resumeToken()
	if token == "" {
		t.Fatal("joined has no resume_token")
	}
	before := alice.snapshot()

	bob.drop()
	// While bob is away, media keeps flowing both ways (the peer
	// connections do not need the socket), and carol starts a screen share
	// whose subscriber offer waits for bob.
	time.Sleep(time.Second)
	screen := publishScreen(t, carol)
	waitPresence(t, alice, "bob", "offline while away", func(p presenceEntry, ok bool) bool { return ok && p.Status == rooms.StatusOffline })
	for _, r := range alice.snapshot() {
		if r.from == "bob" && r.packets <= before[r.sid].packets {
			t.Fatalf("alice got no media from bob while his socket was down")
		}
	}

	env := bob.resume(s, token)
	if env.Type != TypeResumed {
		t.Fatalf("resume: %s %s", env.Type, env.Data)
	}
	var j Joined
	_ = json.Unmarshal(env.Data, &j)
	if j.Participant.SID != bobSID || j.ResumeToken != token || len(j.Participants) != 2 || j.ResumeGrace != 10000 {
		t.Fatalf("resumed: %s", env.Data)
	}
	waitPresence(t, alice, "bob", "online again", func(p presenceEntry, ok bool) bool { return p.Status == rooms.StatusOnline && p.SID == bobSID })
	// The offer kept while bob was away arrives now: he gets carol's screen.
	waitFor(t, 15*time.Second, "bob receives carol's screen share", func() bool {
		r, ok := bob.snapshot()[screen]
		return ok && r.packets > 10
	})
	waitErr(t, 10*time.Second, func() error { return bob.mediaFrom([]string{"alice", "carol"}, kinds, 100) })
	for _, c := range []*testClient{alice, carol} {
		c.mu.Lock()
		left := c.left[bobSID]
		c.mu.Unlock()
		if left {
			t.Fatalf("%s was told bob left", c.identity)
		}
		for sid, r := range c.snapshot() {
			if r.from == "bob" && r.ended {
				t.Fatalf("%s: bob's track %s ended across his resume", c.identity, sid)
			}
		}
		checkIntact(t, c, screen) // sequence numbers continuous, payloads intact
	}
	checkIntact(t, bob, screen)
}

// TestResumeAfterGraceFails: after the grace period the participant has
// left (the others are told, reason disconnected), a resume is refused
// with resume_failed, and a fresh join works.
func TestResumeAfterGraceFails(t *testing.T) {
	s := newTestServer(t, rooms.Config{}, Config{ResumeGrace: 500 * time.Millisecond})
	alice := joinClient(t, s, "late", "alice")
	bob := joinClient(t, s, "late", "bob")
	waitPresence(t, alice, "bob", "present", func(p presenceEntry, ok bool) bool { return ok })
	bobSID, token := bob.sid(), bob.resumeToken()
	bob.drop()
	waitFor(t, 5*time.Second, "alice is told bob left", func() bool {
		alice.mu.Lock()
		defer alice.mu.Unlock()
		return alice.left[bobSID]
	})
	var pl ParticipantLeft
	for _, e := range alice.events {
		if e.Type == TypePartLeft {
			_ = json.Unmarshal(e.Data, &pl)
		}
	}
	if pl.Reason != "disconnected" {
		t.Fatalf("leave reason %q, want disconnected", pl.Reason)
	}
	env := bob.resume(s, token)
	var e Error
	_ = json.Unmarshal(env.Data, &e)
	if env.Type != TypeError || e.Code != CodeResumeFailed {
		t.Fatalf("late resume: %s %s", env.Type, env.Data)
	}
	bob2 := joinClient(t, s, "late", "bob")
	if bob2.sid() == bobSID {
		t.Fatal("a fresh join kept the old session id")
	}
	waitPresence(t, alice, "bob", "back with a new session", func(p presenceEntry, ok bool) bool { return ok && p.SID == bob2.sid() })
	// An unknown token is refused the same way.
	if env := bob2.resume(s, "not-a-token"); env.Type != TypeError || !strings.Contains(string(env.Data), CodeResumeFailed) {
		t.Fatalf("unknown token: %s %s", env.Type, env.Data)
	}
}

// TestResumeTakesOverAHalfOpenSocket: a resume while the old socket still
// looks open moves the session; the old socket is closed with 4001 and
// the participant never leaves.
func TestResumeTakesOverAHalfOpenSocket(t *testing.T) {
	s := newTestServer(t, rooms.Config{}, Config{})
	alice := joinClient(t, s, "takeover", "alice")
	bob := joinClient(t, s, "takeover", "bob")
	waitPresence(t, alice, "bob", "present", func(p presenceEntry, ok bool) bool { return ok })
	old := bob.ws
	env := bob.resume(s, bob.resumeToken()) // closes old itself afterwards, but the server acts first
	if env.Type != TypeResumed {
		t.Fatalf("resume: %s %s", env.Type, env.Data)
	}
	_ = old.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := old.ReadMessage(); err != nil {
			if !websocket.IsCloseError(err, closeResumedElsewhere) && !strings.Contains(err.Error(), "use of closed") {
				t.Fatalf("old socket: %v, want close 4001", err)
			}
			break
		}
	}
	bob.write(TypePing, Ping{Timestamp: 7})
	waitFor(t, 5*time.Second, "a pong on the new socket", func() bool { return bob.count(TypePong) > 0 })
	time.Sleep(200 * time.Millisecond)
	if alice.count(TypePartLeft) != 0 {
		t.Fatal("alice was told bob left")
	}
}

// TestSubscriberICERestart: ice_restart gets a subscriber offer with new
// ICE credentials, and media goes on after the client answers it.
func TestSubscriberICERestart(t *testing.T) {
	s := newTestServer(t, rooms.Config{}, Config{})
	alice := joinClient(t, s, "ice", "alice")
	alice.publish(true, false)
	bob := joinClient(t, s, "ice", "bob")
	waitErr(t, 15*time.Second, func() error { return bob.mediaFrom([]string{"alice"}, []string{"audio"}, 20) })
	ufrag := func() string {
		d := bob.sub.RemoteDescription()
		if d == nil {
			return ""
		}
		for _, l := range strings.Split(d.SDP, "\n") {
			if strings.HasPrefix(l, "a=ice-ufrag:") {
				return strings.TrimSpace(l)
			}
		}
		return ""
	}
	first, offers := ufrag(), bob.count(TypeOffer)
	bob.write(TypeICERestart, ICERestart{Target: "subscriber"})
	waitFor(t, 10*time.Second, "a new subscriber offer", func() bool { return bob.count(TypeOffer) > offers })
	waitFor(t, 10*time.Second, "new ICE credentials", func() bool { return ufrag() != first && ufrag() != "" })
	waitFor(t, 10*time.Second, "bob's subscriber connection is connected", func() bool {
		return bob.sub.ConnectionState() == webrtc.PeerConnectionStateConnected
	})
	n := bob.snapshot()
	waitErr(t, 10*time.Second, func() error {
		for sid, r := range bob.snapshot() {
			if r.packets > n[sid].packets+20 {
				return nil
			}
		}
		return errWait
	})
	// The media after the restart went on the direct send path, which
	// followed the new pair (nothing fell back to pion's).
	if st := s.engine.Stats(); st.DirectConnections != 2 || st.PionConnections != 0 {
		t.Errorf("subscriber connections by send path: direct %d, pion %d; want 2 and 0", st.DirectConnections, st.PionConnections)
	}
	bob.write(TypeICERestart, ICERestart{Target: "publisher"})
	waitFor(t, 5*time.Second, "publisher ice_restart refused", func() bool {
		bob.mu.Lock()
		defer bob.mu.Unlock()
		return len(bob.errors) > 0 && bob.errors[len(bob.errors)-1].Code == CodeBadRequest
	})
}

// TestPublisherICERestart: the client restarts ICE on its publisher
// connection (an offer made with iceRestart); its media goes on, on the
// direct receive path, which followed the pair.
func TestPublisherICERestart(t *testing.T) {
	s := newTestServer(t, rooms.Config{}, Config{})
	alice := joinClient(t, s, "pub-ice", "alice")
	alice.publish(true, false)
	bob := joinClient(t, s, "pub-ice", "bob")
	waitErr(t, 15*time.Second, func() error { return bob.mediaFrom([]string{"alice"}, []string{"audio"}, 20) })
	answers := alice.count(TypeAnswer)
	offer, err := alice.pub.CreateOffer(&webrtc.OfferOptions{ICERestart: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.pub.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	alice.mu.Lock()
	descs := append([]TrackDesc(nil), alice.descs...)
	alice.mu.Unlock()
	alice.write(TypeOffer, Offer{SDP: offer.SDP, Tracks: descs})
	waitFor(t, 10*time.Second, "the answer to the restart", func() bool { return alice.count(TypeAnswer) > answers })
	waitFor(t, 10*time.Second, "alice's publisher connection is connected", func() bool {
		return alice.pub.ConnectionState() == webrtc.PeerConnectionStateConnected
	})
	taken := s.engine.Stats().DirectRTP
	n := bob.snapshot()
	waitErr(t, 10*time.Second, func() error {
		for sid, r := range bob.snapshot() {
			if r.packets > n[sid].packets+50 {
				return nil
			}
		}
		return errWait
	})
	if st := s.engine.Stats(); st.DirectReceive != 1 || st.PionReceive != 0 || st.DirectRTP < taken+50 || st.DirectRTPBad != 0 {
		t.Errorf("after the restart: publisher connections direct %d, pion %d; media taken %d (%d before), refused %d",
			st.DirectReceive, st.PionReceive, st.DirectRTP, taken, st.DirectRTPBad)
	}
}

var errWait = &waitError{}

type waitError struct{}

func (*waitError) Error() string { return "not yet" }

// TestSocketLimits: a flood of messages gets rate_limited and the socket
// stays; one address may not open more sockets than the limit.
func TestSocketLimits(t *testing.T) {
	s := newTestServer(t, rooms.Config{}, Config{RateLimit: 20, RateWindow: 10 * time.Second, MaxConnectionsPerIP: 3})
	alice := joinClient(t, s, "limits", "alice")
	for i := 0; i < 40; i++ {
		alice.write(TypePing, Ping{Timestamp: int64(i)})
	}
	waitFor(t, 5*time.Second, "rate_limited errors", func() bool {
		alice.mu.Lock()
		defer alice.mu.Unlock()
		n := 0
		for _, e := range alice.errors {
			if e.Code == CodeRateLimited && e.Request == TypePing {
				n++
			}
		}
		return n >= 15
	})
	if alice.count(TypePong) > 20 {
		t.Fatalf("%d pongs for a limit of 20", alice.count(TypePong))
	}
	if alice.closed {
		t.Fatal("the socket was closed for flooding")
	}
	// alice holds one socket; two more fit, the fourth is refused.
	a, b := dial(t, s.url), dial(t, s.url)
	defer a.Close()
	defer b.Close()
	_, resp, err := websocket.DefaultDialer.Dial(s.url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth socket from one address: %v %v", err, resp)
	}
	a.Close()
	waitErr(t, 5*time.Second, func() error {
		ws, _, err := websocket.DefaultDialer.Dial(s.url, nil)
		if err == nil {
			ws.Close()
		}
		return err
	})
}
