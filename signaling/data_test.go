package signaling

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/parley-rtc/parley/rooms"
	"github.com/parley-rtc/parley/sfu"
)

// The data channel protocol (docs/protocol.md, "Data channels") with real
// pion peers: presence, chat, application data and pointers, limits.

// dataRecv is one message a client got on a data channel.
type dataRecv struct {
	typ   string
	lossy bool
	raw   json.RawMessage
}

// Decoded server messages, as a client reads them.
type (
	presenceEntry struct {
		Identity, SID, Name, Status string
		Camera, Mic, Screen, Hand   bool
		Typing, Speaking            bool
		Metadata                    json.RawMessage
	}
	chatMsg struct {
		ID, From, To, Text string
		FromName           string `json:"from_name"`
		FromSID            string `json:"from_sid"`
		TS                 int64
	}
	dataErr struct {
		Code, Message, Request, ID string
		RetryAfterMS               int64 `json:"retry_after_ms"`
	}
)

func (c *testClient) onDataChannel(dc *webrtc.DataChannel) {
	lossy := dc.Label() == sfu.LabelLossy
	c.mu.Lock()
	if lossy {
		c.lossyDC = dc
	} else {
		c.dc = dc
	}
	c.mu.Unlock()
	dc.OnMessage(func(m webrtc.DataChannelMessage) {
		var h struct{ Type string }
		if err := json.Unmarshal(m.Data, &h); err != nil {
			c.errorf("%s: data message is not JSON: %q", c.identity, m.Data)
			return
		}
		c.mu.Lock()
		c.dmsgs = append(c.dmsgs, dataRecv{typ: h.Type, lossy: lossy, raw: append(json.RawMessage(nil), m.Data...)})
		c.mu.Unlock()
	})
}

// channel waits until the reliable (or lossy) channel is open.
func (c *testClient) channel(lossy bool) *webrtc.DataChannel {
	c.t.Helper()
	var dc *webrtc.DataChannel
	waitFor(c.t, 15*time.Second, c.identity+"'s data channel opens", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		dc = c.dc
		if lossy {
			dc = c.lossyDC
		}
		return dc != nil && dc.ReadyState() == webrtc.DataChannelStateOpen
	})
	return dc
}

// say sends one message (a struct, map or raw string) on the reliable
// channel.
func (c *testClient) say(v any) { c.sayOn(false, v) }

func (c *testClient) sayOn(lossy bool, v any) {
	c.t.Helper()
	var s string
	switch x := v.(type) {
	case string:
		s = x
	default:
		b, err := json.Marshal(v)
		if err != nil {
			c.t.Fatal(err)
		}
		s = string(b)
	}
	if err := c.channel(lossy).SendText(s); err != nil {
		c.t.Fatalf("%s: send %s: %v", c.identity, s, err)
	}
}

// got returns the data messages of a type received so far, in order.
func (c *testClient) got(typ string) []dataRecv {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []dataRecv
	for _, m := range c.dmsgs {
		if m.typ == typ {
			out = append(out, m)
		}
	}
	return out
}

func (c *testClient) chats() []chatMsg {
	var out []chatMsg
	for _, m := range c.got("chat") {
		var x chatMsg
		mustDecode(c.t, m.raw, &x)
		out = append(out, x)
	}
	return out
}

func (c *testClient) chatCount(id string) int {
	n := 0
	for _, m := range c.chats() {
		if m.ID == id {
			n++
		}
	}
	return n
}

func (c *testClient) dataErrors() []dataErr {
	var out []dataErr
	for _, m := range c.got("error") {
		var x dataErr
		mustDecode(c.t, m.raw, &x)
		out = append(out, x)
	}
	return out
}

// lastPresence is the newest presence entry c has for identity, from the
// roster or updates; ok is false when it has none or it was removed.
func (c *testClient) lastPresence(identity string) (presenceEntry, bool) {
	c.mu.Lock()
	msgs := append([]dataRecv(nil), c.dmsgs...)
	c.mu.Unlock()
	var cur presenceEntry
	have := false
	for _, m := range msgs {
		switch m.typ {
		case "roster":
			var r struct{ Participants []presenceEntry }
			mustDecode(c.t, m.raw, &r)
			have = false
			for _, p := range r.Participants {
				if p.Identity == identity {
					cur, have = p, true
				}
			}
		case "presence":
			var p struct{ Participant presenceEntry }
			mustDecode(c.t, m.raw, &p)
			if p.Participant.Identity == identity {
				cur, have = p.Participant, true
			}
		case "presence_left":
			var l struct{ Identity string }
			mustDecode(c.t, m.raw, &l)
			if l.Identity == identity {
				have = false
			}
		}
	}
	return cur, have
}

// waitPresence waits until c's entry for identity satisfies ok.
func waitPresence(t *testing.T, c *testClient, identity, what string, ok func(presenceEntry, bool) bool) {
	t.Helper()
	waitErr(t, 10*time.Second, func() error {
		p, have := c.lastPresence(identity)
		if ok(p, have) {
			return nil
		}
		return fmt.Errorf("%s: %s's presence: %s; have %v %+v", c.identity, identity, what, have, p)
	})
}

func mustDecode(t testing.TB, raw []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
}

func chat(id, text string) map[string]any {
	return map[string]any{"type": "chat", "id": id, "text": text}
}

func dm(id, text, to string) map[string]any {
	return map[string]any{"type": "chat", "id": id, "text": text, "to": to}
}

// waitChat waits until c has received the chat message with this id.
func waitChat(t *testing.T, c *testClient, id string) chatMsg {
	t.Helper()
	var m chatMsg
	waitFor(t, 10*time.Second, c.identity+" receives chat "+id, func() bool {
		for _, x := range c.chats() {
			if x.ID == id {
				m = x
				return true
			}
		}
		return false
	})
	return m
}

func waitAck(t *testing.T, c *testClient, id string, n int) []map[string]any {
	t.Helper()
	var acks []map[string]any
	waitFor(t, 10*time.Second, fmt.Sprintf("%s gets %d acks of %s", c.identity, n, id), func() bool {
		acks = nil
		for _, m := range c.got("chat_ack") {
			var a map[string]any
			mustDecode(t, m.raw, &a)
			if a["id"] == id {
				acks = append(acks, a)
			}
		}
		return len(acks) >= n
	})
	return acks
}

func waitDataError(t *testing.T, c *testClient, code string, n int) []dataErr {
	t.Helper()
	var errs []dataErr
	waitFor(t, 10*time.Second, fmt.Sprintf("%s gets %d %s errors", c.identity, n, code), func() bool {
		errs = nil
		for _, e := range c.dataErrors() {
			if e.Code == code {
				errs = append(errs, e)
			}
		}
		return len(errs) >= n
	})
	return errs
}

func dataServer(t *testing.T, d rooms.DataConfig) *testServer {
	return newTestServer(t, rooms.Config{Data: d}, Config{})
}

// TestDataRosterAndPresence: the roster on join, then updates: a new
// participant, its camera and microphone, a raised hand, metadata, a mute
// and a leave.
func TestDataRosterAndPresence(t *testing.T) {
	s := dataServer(t, rooms.DataConfig{})
	alice := joinClient(t, s, "presence", "alice")
	alice.channel(false)
	waitFor(t, 10*time.Second, "alice's roster", func() bool { return len(alice.got("roster")) == 1 })
	var roster struct {
		Self         string
		Participants []presenceEntry
		Limits       map[string]int64
	}
	mustDecode(t, alice.got("roster")[0].raw, &roster)
	if roster.Self != "alice" || len(roster.Participants) != 1 || roster.Participants[0].Identity != "alice" ||
		roster.Participants[0].Status != rooms.StatusOnline || roster.Participants[0].SID != alice.sid() {
		t.Fatalf("alice's roster: %+v", roster)
	}
	if roster.Limits["rate_limit"] != 30 || roster.Limits["max_message_bytes"] != 16384 || roster.Limits["heartbeat_interval_ms"] != 5000 {
		t.Fatalf("limits in the roster: %v", roster.Limits)
	}
	if h := alice.got("history"); len(h) != 1 {
		t.Fatalf("alice got %d history messages, want 1 (empty)", len(h))
	}

	bob := joinClient(t, s, "presence", "bob")
	waitPresence(t, alice, "bob", "online", func(p presenceEntry, ok bool) bool { return ok && p.Status == rooms.StatusOnline && p.Name == "BOB" })
	waitPresence(t, bob, "alice", "in bob's roster", func(p presenceEntry, ok bool) bool { return ok && p.Status == rooms.StatusOnline })
	if _, ok := bob.lastPresence("bob"); !ok {
		t.Fatal("bob's roster lacks bob himself")
	}

	alice.publish(true, true)
	waitPresence(t, bob, "alice", "camera and mic on", func(p presenceEntry, ok bool) bool { return p.Camera && p.Mic && !p.Screen })

	alice.say(map[string]any{"type": "presence", "hand": true})
	waitPresence(t, bob, "alice", "hand raised", func(p presenceEntry, ok bool) bool { return p.Hand })
	waitPresence(t, alice, "alice", "her own hand raised", func(p presenceEntry, ok bool) bool { return p.Hand })

	alice.say(map[string]any{"type": "presence", "metadata": map[string]string{"role": "host"}})
	waitPresence(t, bob, "alice", "metadata", func(p presenceEntry, ok bool) bool { return string(p.Metadata) == `{"role":"host"}` })
	alice.say(map[string]any{"type": "presence", "metadata": strings.Repeat("x", 2000)})
	if e := waitDataError(t, alice, rooms.DataTooLarge, 1)[0]; e.Request != "presence" {
		t.Fatalf("metadata too large: %+v", e)
	}
	alice.say(`{"type":"presence","metadata":null}`)
	waitPresence(t, bob, "alice", "metadata cleared", func(p presenceEntry, ok bool) bool { return string(p.Metadata) == "null" })

	// A mute through signaling turns the camera off in presence.
	var camSID string
	waitFor(t, 10*time.Second, "alice's camera track sid", func() bool {
		alice.mu.Lock()
		defer alice.mu.Unlock()
		for _, e := range alice.events {
			var tp TrackPublished
			if e.Type == TypeTrackPub && json.Unmarshal(e.Data, &tp) == nil && tp.Track.Source == "camera" {
				camSID = tp.Track.SID
			}
		}
		return camSID != ""
	})
	alice.write(TypeMute, Mute{TrackSID: camSID, Muted: true})
	waitPresence(t, bob, "alice", "camera off after mute", func(p presenceEntry, ok bool) bool { return !p.Camera && p.Mic })

	bob.leave()
	waitPresence(t, alice, "bob", "removed after his leave", func(p presenceEntry, ok bool) bool { return !ok })
}

// TestDataChat: chat both ways, a direct message reaches only its target,
// duplicate ids are dropped (also after a reconnect), and a late joiner
// gets the history in order.
func TestDataChat(t *testing.T) {
	s := dataServer(t, rooms.DataConfig{})
	alice := joinClient(t, s, "chat", "alice")
	bob := joinClient(t, s, "chat", "bob")
	carol := joinClient(t, s, "chat", "carol")
	for _, c := range []*testClient{alice, bob, carol} {
		for _, o := range []string{"alice", "bob", "carol"} {
			waitPresence(t, c, o, "present", func(p presenceEntry, ok bool) bool { return ok })
		}
	}

	alice.say(chat("a1", "hello everyone"))
	ack := waitAck(t, alice, "a1", 1)[0]
	for _, c := range []*testClient{bob, carol} {
		m := waitChat(t, c, "a1")
		if m.From != "alice" || m.FromName != "ALICE" || m.FromSID != alice.sid() || m.Text != "hello everyone" || m.To != "" ||
			float64(m.TS) != ack["ts"].(float64) {
			t.Fatalf("%s got %+v (ack %v)", c.identity, m, ack)
		}
	}
	if alice.chatCount("a1") != 0 {
		t.Fatal("the sender got its own message back (the ack is enough)")
	}

	bob.say(chat("b1", "hi alice"))
	waitChat(t, alice, "b1")

	t.Run("direct message", func(t *testing.T) {
		alice.say(dm("a2", "psst bob", "bob"))
		if m := waitChat(t, bob, "a2"); m.To != "bob" {
			t.Fatalf("bob's direct message: %+v", m)
		}
		// Everything is delivered in order: once carol has a3, which alice
		// sent after a2, a2 would have reached her if it were going to.
		alice.say(chat("a3", "back to everyone"))
		waitChat(t, carol, "a3")
		waitChat(t, bob, "a3")
		if carol.chatCount("a2") != 0 {
			t.Fatal("carol received a direct message to bob")
		}
		alice.say(dm("a9", "hello?", "nobody"))
		if e := waitDataError(t, alice, rooms.DataUnknownParticipant, 1)[0]; e.ID != "a9" || e.Request != "chat" {
			t.Fatalf("direct message to nobody: %+v", e)
		}
	})

	t.Run("duplicate ids", func(t *testing.T) {
		alice.say(chat("a1", "hello everyone"))
		acks := waitAck(t, alice, "a1", 2)
		if acks[1]["duplicate"] != true || acks[1]["ts"] != acks[0]["ts"] {
			t.Fatalf("second ack of a1: %v, first %v", acks[1], acks[0])
		}
		// The same id from another sender is refused, not taken as a resend.
		bob.say(chat("a1", "stolen id"))
		if e := waitDataError(t, bob, rooms.DataBadRequest, 1)[0]; e.ID != "a1" {
			t.Fatalf("bob reusing alice's id: %+v", e)
		}
		alice.say(chat("a4", "marker"))
		waitChat(t, bob, "a4")
		waitChat(t, carol, "a4")
		if n := bob.chatCount("a1"); n != 1 {
			t.Fatalf("bob got a1 %d times", n)
		}
		if n := carol.chatCount("a1"); n != 1 {
			t.Fatalf("carol got a1 %d times", n)
		}
	})

	t.Run("late joiner gets the history", func(t *testing.T) {
		dave := joinClient(t, s, "chat", "dave")
		waitFor(t, 10*time.Second, "dave's history", func() bool { return len(dave.got("history")) == 1 })
		var h struct{ Messages []chatMsg }
		mustDecode(t, dave.got("history")[0].raw, &h)
		var ids []string
		for _, m := range h.Messages {
			ids = append(ids, m.ID)
		}
		if got := strings.Join(ids, ","); got != "a1,b1,a3,a4" {
			t.Fatalf("dave's history %s, want a1,b1,a3,a4 (no direct message, no duplicate)", got)
		}
		for i := 1; i < len(h.Messages); i++ {
			if h.Messages[i].TS < h.Messages[i-1].TS {
				t.Fatalf("history out of order: %+v", h.Messages)
			}
		}
		// bob's history includes the direct message to him.
		bob2 := joinClient(t, s, "chat", "bob")
		waitFor(t, 10*time.Second, "bob's new history", func() bool { return len(bob2.got("history")) == 1 })
		mustDecode(t, bob2.got("history")[0].raw, &h)
		ids = ids[:0]
		for _, m := range h.Messages {
			ids = append(ids, m.ID)
		}
		if got := strings.Join(ids, ","); got != "a1,b1,a2,a3,a4" {
			t.Fatalf("bob's history %s, want a1,b1,a2,a3,a4", got)
		}
		bob = bob2
	})

	t.Run("resend after a reconnect", func(t *testing.T) {
		_ = alice.ws.Close() // the network drops; no leave
		alice2 := joinClient(t, s, "chat", "alice")
		alice2.say(chat("a4", "marker")) // the outbox resends what had no ack
		alice2.say(chat("a5", "new"))
		if a := waitAck(t, alice2, "a4", 1)[0]; a["duplicate"] != true {
			t.Fatalf("resent a4 acked as %v", a)
		}
		waitChat(t, carol, "a5")
		if n := carol.chatCount("a4"); n != 1 {
			t.Fatalf("carol got a4 %d times", n)
		}
	})
}

// TestDataHistoryLimitAndRetention: the history keeps the last N; a room
// that empties keeps it (and its ids) for its next participants.
func TestDataHistoryLimitAndRetention(t *testing.T) {
	s := dataServer(t, rooms.DataConfig{History: 3})
	alice := joinClient(t, s, "limit", "alice")
	for i := 1; i <= 5; i++ {
		alice.say(chat(fmt.Sprintf("m%d", i), fmt.Sprintf("message %d", i)))
	}
	waitAck(t, alice, "m5", 1)
	alice.leave() // the room empties
	waitFor(t, 5*time.Second, "the room is gone", func() bool { return s.mgr.Room("limit") == nil })

	bob := joinClient(t, s, "limit", "bob")
	waitFor(t, 10*time.Second, "bob's history", func() bool { return len(bob.got("history")) == 1 })
	var h struct{ Messages []chatMsg }
	mustDecode(t, bob.got("history")[0].raw, &h)
	var ids []string
	for _, m := range h.Messages {
		ids = append(ids, m.ID)
	}
	if got := strings.Join(ids, ","); got != "m3,m4,m5" {
		t.Fatalf("history %s, want the last three m3,m4,m5", got)
	}
	bob.say(chat("m2", "an id the room has seen, from someone else"))
	waitDataError(t, bob, rooms.DataBadRequest, 1)
}

// TestDataRateLimit: a participant over the limit gets an error for each
// message over it, keeps its connection, and nobody else is affected.
func TestDataRateLimit(t *testing.T) {
	s := dataServer(t, rooms.DataConfig{RateLimit: 5, RateWindow: 10 * time.Second})
	alice := joinClient(t, s, "rate", "alice")
	bob := joinClient(t, s, "rate", "bob")
	waitPresence(t, alice, "bob", "present", func(p presenceEntry, ok bool) bool { return ok })
	waitPresence(t, bob, "alice", "present", func(p presenceEntry, ok bool) bool { return ok })
	for i := 1; i <= 8; i++ {
		alice.say(chat(fmt.Sprintf("r%d", i), "flood"))
	}
	errs := waitDataError(t, alice, rooms.DataRateLimited, 3)
	for i, e := range errs {
		if e.Request != "chat" || e.ID != fmt.Sprintf("r%d", 6+i) || e.RetryAfterMS <= 0 || e.RetryAfterMS > 10000 {
			t.Fatalf("rate limit error %d: %+v", i, e)
		}
	}
	waitAck(t, alice, "r5", 1)
	waitChat(t, bob, "r5")
	// Heartbeats are not counted and keep working.
	alice.say(map[string]any{"type": "heartbeat"})
	// Others are not limited by alice's flood.
	bob.say(chat("b1", "I can still talk"))
	waitChat(t, alice, "b1")
	time.Sleep(200 * time.Millisecond)
	if n := len(bob.chats()); n != 5 {
		t.Fatalf("bob got %d of alice's messages, want 5", n)
	}
	// alice's signaling session is untouched.
	alice.write(TypePing, Ping{Timestamp: 42})
	waitFor(t, 5*time.Second, "alice's pong", func() bool {
		alice.mu.Lock()
		defer alice.mu.Unlock()
		for _, e := range alice.events {
			if e.Type == TypePong {
				return true
			}
		}
		return false
	})
	if len(alice.got("chat_ack")) != 5 {
		t.Fatalf("alice has %d acks, want 5", len(alice.got("chat_ack")))
	}
}

// TestDataNeedsGrant: a token without the data grant cannot send chat or
// data, but may say it is away, and still receives.
func TestDataNeedsGrant(t *testing.T) {
	s := dataServer(t, rooms.DataConfig{})
	tok, err := MintToken(s.key, s.secret, TokenSpec{Room: "grant", Identity: "viewer", Grants: rooms.Grants{Subscribe: true}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	alice := joinClient(t, s, "grant", "alice")
	viewer := joinToken(t, s, "grant", "viewer", tok, false)
	waitPresence(t, alice, "viewer", "present", func(p presenceEntry, ok bool) bool { return ok })

	viewer.say(chat("v1", "can I talk?"))
	viewer.say(map[string]any{"type": "presence", "hand": true})
	viewer.say(map[string]any{"type": "data", "topic": "x", "payload": 1})
	errs := waitDataError(t, viewer, rooms.DataPermissionDenied, 3)
	if errs[0].Request != "chat" || errs[0].ID != "v1" || errs[1].Request != "presence" || errs[2].Request != "data" {
		t.Fatalf("errors %+v", errs)
	}
	viewer.say(map[string]any{"type": "presence", "away": true})
	waitPresence(t, alice, "viewer", "away", func(p presenceEntry, ok bool) bool { return p.Status == rooms.StatusAway })

	alice.say(chat("a1", "you can read this"))
	waitChat(t, viewer, "a1")
	if alice.chatCount("v1") != 0 || len(alice.got("data")) != 0 {
		t.Fatal("alice received what the viewer may not send")
	}
	if p, _ := alice.lastPresence("viewer"); p.Hand {
		t.Fatal("the viewer raised its hand without the data grant")
	}
}

// TestDataTypingAwayOffline: typing clears itself; no heartbeats make a
// participant away until it speaks again; a lost connection shows offline
// for the grace period, then the entry goes, unless the identity comes
// back first.
func TestDataTypingAwayOffline(t *testing.T) {
	s := newTestServer(t, rooms.Config{Data: rooms.DataConfig{TypingTimeout: 500 * time.Millisecond, AwayAfter: 1500 * time.Millisecond,
		OfflineGrace: 1500 * time.Millisecond}}, Config{ResumeGrace: 300 * time.Millisecond})
	alice := joinClient(t, s, "typing", "alice")
	bob := joinClient(t, s, "typing", "bob")
	waitPresence(t, alice, "bob", "present", func(p presenceEntry, ok bool) bool { return ok })
	waitPresence(t, bob, "alice", "present", func(p presenceEntry, ok bool) bool { return ok })

	t.Run("typing expires", func(t *testing.T) {
		alice.say(map[string]any{"type": "presence", "typing": true})
		waitPresence(t, bob, "alice", "typing", func(p presenceEntry, ok bool) bool { return p.Typing })
		start := time.Now()
		waitPresence(t, bob, "alice", "typing cleared by the server", func(p presenceEntry, ok bool) bool { return !p.Typing })
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("typing cleared after %s, want about 500ms", d)
		}
	})

	t.Run("away without heartbeats", func(t *testing.T) {
		waitPresence(t, bob, "alice", "away (no heartbeat for 1.5s)", func(p presenceEntry, ok bool) bool { return p.Status == rooms.StatusAway })
		alice.say(map[string]any{"type": "heartbeat"})
		waitPresence(t, bob, "alice", "online after a heartbeat", func(p presenceEntry, ok bool) bool { return p.Status == rooms.StatusOnline })
		alice.say(map[string]any{"type": "presence", "away": true})
		waitPresence(t, bob, "alice", "away as she says", func(p presenceEntry, ok bool) bool { return p.Status == rooms.StatusAway })
		alice.say(map[string]any{"type": "presence", "away": false})
		waitPresence(t, bob, "alice", "online as she says", func(p presenceEntry, ok bool) bool { return p.Status == rooms.StatusOnline })
	})

	t.Run("offline then gone", func(t *testing.T) {
		_ = alice.ws.Close() // the connection is lost, no leave
		waitPresence(t, bob, "alice", "offline", func(p presenceEntry, ok bool) bool { return ok && p.Status == rooms.StatusOffline })
		waitPresence(t, bob, "alice", "gone after the grace period", func(p presenceEntry, ok bool) bool { return !ok })
	})

	t.Run("back within the grace period", func(t *testing.T) {
		carol := joinClient(t, s, "typing", "carol")
		waitPresence(t, bob, "carol", "present", func(p presenceEntry, ok bool) bool { return ok })
		first := carol.sid()
		_ = carol.ws.Close()
		waitPresence(t, bob, "carol", "offline", func(p presenceEntry, ok bool) bool { return p.Status == rooms.StatusOffline })
		carol2 := joinClient(t, s, "typing", "carol")
		waitPresence(t, bob, "carol", "online again with a new session", func(p presenceEntry, ok bool) bool {
			return ok && p.Status == rooms.StatusOnline && p.SID == carol2.sid() && p.SID != first
		})
		time.Sleep(2 * time.Second) // past the first session's grace period
		for _, m := range bob.got("presence_left") {
			if strings.Contains(string(m.raw), `"carol"`) {
				t.Fatalf("bob was told carol left: %s", m.raw)
			}
		}
	})
}

// TestDataAppMessagesAndPointer: application data to the room and to named
// participants, reliable and lossy, and pointers at a screen share.
func TestDataAppMessagesAndPointer(t *testing.T) {
	s := dataServer(t, rooms.DataConfig{})
	alice := joinClient(t, s, "app", "alice")
	bob := joinClient(t, s, "app", "bob")
	carol := joinClient(t, s, "app", "carol")
	for _, c := range []*testClient{alice, bob, carol} {
		waitPresence(t, c, "carol", "present", func(p presenceEntry, ok bool) bool { return ok })
		c.channel(true)
	}
	type appData struct {
		From, Topic string
		FromSID     string `json:"from_sid"`
		Payload     json.RawMessage
	}
	gotData := func(c *testClient, lossy bool) []appData {
		var out []appData
		for _, m := range c.got("data") {
			if m.lossy == lossy {
				var d appData
				mustDecode(t, m.raw, &d)
				out = append(out, d)
			}
		}
		return out
	}

	alice.say(map[string]any{"type": "data", "topic": "wb", "payload": map[string]any{"stroke": []int{1, 2}}})
	for _, c := range []*testClient{bob, carol} {
		waitFor(t, 5*time.Second, c.identity+" gets alice's data", func() bool { return len(gotData(c, false)) == 1 })
		d := gotData(c, false)[0]
		if d.From != "alice" || d.FromSID != alice.sid() || d.Topic != "wb" || string(d.Payload) != `{"stroke":[1,2]}` {
			t.Fatalf("%s got %+v", c.identity, d)
		}
	}
	alice.say(map[string]any{"type": "data", "topic": "private", "payload": "AAEC", "to": []string{"bob", "bob"}})
	alice.say(map[string]any{"type": "data", "payload": 1, "to": []string{"bob", "zed"}, "id": "d3"})
	alice.say(map[string]any{"type": "data", "topic": "marker", "payload": true})
	waitFor(t, 5*time.Second, "carol gets the marker", func() bool { return len(gotData(carol, false)) == 2 })
	waitFor(t, 5*time.Second, "bob gets the private message once", func() bool { return len(gotData(bob, false)) == 3 })
	if d := gotData(carol, false); d[1].Topic != "marker" {
		t.Fatalf("carol got %+v; the private message was for bob", d)
	}
	if d := gotData(bob, false); d[1].Topic != "private" || d[2].Topic != "marker" {
		t.Fatalf("bob got %+v", d)
	}
	if e := waitDataError(t, alice, rooms.DataUnknownParticipant, 1)[0]; e.ID != "d3" || !strings.Contains(e.Message, "zed") {
		t.Fatalf("data to nobody: %+v", e)
	}

	// Lossy data goes on the lossy channel (nothing is lost on loopback).
	alice.sayOn(true, map[string]any{"type": "data", "topic": "cursor", "payload": []float64{0.5, 0.5}})
	waitFor(t, 5*time.Second, "bob gets lossy data on the lossy channel", func() bool { return len(gotData(bob, true)) == 1 })

	t.Run("pointer", func(t *testing.T) {
		// No screen share: a pointer goes nowhere.
		bob.sayOn(true, map[string]any{"type": "pointer", "track_sid": "TR_none", "x": 0.5, "y": 0.5})
		screenSID := publishScreen(t, alice)
		waitPresence(t, bob, "alice", "screen on", func(p presenceEntry, ok bool) bool { return p.Screen })
		bob.sayOn(true, map[string]any{"type": "pointer", "track_sid": screenSID, "x": 0.25, "y": 0.75})
		waitFor(t, 5*time.Second, "alice gets bob's pointer", func() bool { return len(alice.got("pointer")) >= 1 })
		var ptr struct {
			From     string
			TrackSID string `json:"track_sid"`
			X, Y     float64
		}
		p := alice.got("pointer")
		mustDecode(t, p[0].raw, &ptr)
		if len(p) != 1 || !p[0].lossy || ptr.TrackSID != screenSID || ptr.X != 0.25 || ptr.Y != 0.75 {
			t.Fatalf("alice's pointers: %d, %+v", len(p), ptr)
		}
		if !strings.Contains(string(p[0].raw), `"from":"bob"`) {
			t.Fatalf("pointer without its sender: %s", p[0].raw)
		}
		bob.sayOn(true, map[string]any{"type": "pointer", "track_sid": screenSID, "x": 2, "y": 0})
		if e := waitDataError(t, bob, rooms.DataBadRequest, 1)[0]; e.Request != "pointer" {
			t.Fatalf("pointer outside the screen: %+v", e)
		}
	})
}

// publishScreen publishes a VP8 track with source screen and returns its
// sid once the server announces it.
func publishScreen(t *testing.T, c *testClient) string {
	t.Helper()
	v, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, c.identity+"-screen", c.identity+"-screen")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.pub.AddTransceiverFromTrack(v, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	offer, err := c.pub.CreateOffer(nil)
	if err == nil {
		err = c.pub.SetLocalDescription(offer)
	}
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.descs = append(c.descs, TrackDesc{TrackID: v.ID(), Source: "screen"})
	descs := append([]TrackDesc(nil), c.descs...)
	c.mu.Unlock()
	c.write(TypeOffer, Offer{SDP: offer.SDP, Tracks: descs}) // every track, or the others are unpublished
	c.sendWG.Add(1)
	go func() {
		defer c.sendWG.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for seq := uint16(1); ; seq++ {
			select {
			case <-c.stopSend:
				return
			case <-tick.C:
			}
			pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 3000, Marker: true},
				Payload: []byte{0x10, 0x00, 1, 2, 3}}
			if v.WriteRTP(pkt) != nil {
				return
			}
		}
	}()
	var sid string
	waitFor(t, 10*time.Second, c.identity+"'s screen track is published", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, e := range c.events {
			var tp TrackPublished
			if e.Type == TypeTrackPub && json.Unmarshal(e.Data, &tp) == nil && tp.Track.Source == "screen" {
				sid = tp.Track.SID
			}
		}
		return sid != ""
	})
	return sid
}

// TestDataBadInput: every kind of bad message gets its error code and the
// channel stays usable.
func TestDataBadInput(t *testing.T) {
	s := dataServer(t, rooms.DataConfig{MaxMessageBytes: 4096, MaxMetadataBytes: 512, RateLimit: 100})
	alice := joinClient(t, s, "bad", "alice")
	bob := joinClient(t, s, "bad", "bob")
	waitPresence(t, alice, "bob", "present", func(p presenceEntry, ok bool) bool { return ok })
	cases := []struct {
		msg, code string
	}{
		{`not json`, rooms.DataBadRequest},
		{`[1,2,3]`, rooms.DataBadRequest},
		{`{"type":"teleport"}`, rooms.DataUnknownType},
		{`{"type":"chat","id":"x1"}`, rooms.DataBadRequest},                         // no text
		{`{"type":"chat","id":"x2","text":"   "}`, rooms.DataBadRequest},            // blank
		{`{"type":"chat","text":"no id"}`, rooms.DataBadRequest},                    // no id
		{`{"type":"chat","id":"has space","text":"x"}`, rooms.DataBadRequest},       // bad id
		{`{"type":"chat","id":"x3","text":42}`, rooms.DataBadRequest},               // wrong type
		{`{"type":"chat","id":"x4","text":"x","to":["bob"]}`, rooms.DataBadRequest}, // wrong type
		{`{"type":"presence","hand":"yes"}`, rooms.DataBadRequest},
		{`{"type":"data","topic":"t"}`, rooms.DataBadRequest}, // no payload
		{`{"type":"data","topic":"` + strings.Repeat("t", 200) + `","payload":1}`, rooms.DataBadRequest},
		{`{"type":"pointer","track_sid":"TR_x"}`, rooms.DataBadRequest},
		{`{"type":"chat","id":"x5","text":"` + strings.Repeat("a", 5000) + `"}`, rooms.DataTooLarge},
	}
	for i, c := range cases {
		alice.say(c.msg)
		var errs []dataErr
		waitFor(t, 5*time.Second, fmt.Sprintf("error for case %d", i), func() bool { errs = alice.dataErrors(); return len(errs) == i+1 })
		if errs[i].Code != c.code {
			t.Errorf("%.60s: error %+v, want code %s", c.msg, errs[i], c.code)
		}
	}
	if e := alice.dataErrors()[len(cases)-1]; e.Request != "chat" || e.ID != "x5" {
		t.Errorf("too_large does not name the message it refuses: %+v", e)
	}
	// The channel is still usable, and bob saw none of it.
	alice.say(chat("ok1", "still here"))
	waitChat(t, bob, "ok1")
	if n := len(bob.chats()); n != 1 {
		t.Fatalf("bob got %d chat messages, want 1", n)
	}
}
