package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-rtc/parley/rooms"
	"github.com/parley-rtc/parley/signaling"
)

// The operations side (docs/api.md) against a whole server: the admin
// API's auth and actions with real pion peers, the event stream, metrics,
// webhooks and draining.

const opsKey, opsSecret = "opskey", "ops-secret-0123456789abcdef0123456789"

func withKeys(c *Config) { c.Keys = map[string]string{opsKey: opsSecret} }

func mint(t *testing.T, room, identity string, g rooms.Grants) string {
	t.Helper()
	tok, err := signaling.MintToken(opsKey, opsSecret, signaling.TokenSpec{Room: room, Identity: identity, Name: identity, Grants: g, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

var (
	participantGrants = rooms.Grants{Publish: true, Subscribe: true, Data: true}
	adminGrants       = rooms.Grants{Admin: true}
)

// call makes an admin API request and returns the status and body.
func call(t *testing.T, base, method, path, token string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// scrape reads the server's metrics: "name{labels}" -> value.
func scrape(t *testing.T, a Addrs) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + a.Metrics.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// TestAdminAuth: every endpoint refuses a request without a token (401),
// with a participant's token (403) and with an admin token for another
// room (403), and serves an admin token.
func TestAdminAuth(t *testing.T) {
	base, _ := startServer(t, withKeys)
	admin := mint(t, "*", "ops", adminGrants)
	other := mint(t, "elsewhere", "ops", adminGrants)
	participant := mint(t, "r1", "alice", participantGrants)
	if st, b := call(t, base, "POST", "/api/rooms", admin, map[string]any{"name": "r1"}); st != http.StatusCreated {
		t.Fatalf("create r1: %d %s", st, b)
	}
	endpoints := []struct {
		method, path string
		body         any
		ok           int // with the admin token
	}{
		{"GET", "/api/rooms", nil, 200},
		{"POST", "/api/rooms", map[string]any{"name": "r2"}, 201},
		{"GET", "/api/rooms/r1", nil, 200},
		{"PATCH", "/api/rooms/r1/participants/nobody", map[string]any{"name": "x"}, 404},
		{"POST", "/api/rooms/r1/participants/nobody/tracks/TR_x/mute", map[string]any{"muted": true}, 404},
		{"DELETE", "/api/rooms/r1/participants/nobody", nil, 404},
		{"GET", "/api/events?last_event_id=999999", nil, 200},
		{"DELETE", "/api/rooms/r1", nil, 204},
	}
	for _, e := range endpoints {
		if st, _ := call(t, base, e.method, e.path, "", e.body); st != http.StatusUnauthorized {
			t.Errorf("%s %s without a token: %d, want 401", e.method, e.path, st)
		}
		if st, _ := call(t, base, e.method, e.path, "not.a.token", e.body); st != http.StatusUnauthorized {
			t.Errorf("%s %s with a bad token: %d, want 401", e.method, e.path, st)
		}
		if st, _ := call(t, base, e.method, e.path, participant, e.body); st != http.StatusForbidden {
			t.Errorf("%s %s with a participant token: %d, want 403", e.method, e.path, st)
		}
		if e.path != "/api/rooms" && e.path != "/api/events?last_event_id=999999" {
			if st, _ := call(t, base, e.method, e.path, other, e.body); st != http.StatusForbidden {
				t.Errorf("%s %s with an admin token for another room: %d, want 403", e.method, e.path, st)
			}
		}
		if e.path == "/api/events?last_event_id=999999" {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			req, _ := http.NewRequestWithContext(ctx, "GET", base+e.path+"&access_token="+admin, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				t.Errorf("event stream with ?access_token: %v %v", err, resp)
			}
			if resp != nil {
				resp.Body.Close()
			}
			cancel()
			continue
		}
		if st, b := call(t, base, e.method, e.path, admin, e.body); st != e.ok {
			t.Errorf("%s %s with the admin token: %d %s, want %d", e.method, e.path, st, b, e.ok)
		}
	}
	// A room-scoped admin token lists only its room.
	_, b := call(t, base, "GET", "/api/rooms", other, nil)
	if strings.Contains(string(b), `"r2"`) {
		t.Errorf("a token for room elsewhere lists r2: %s", b)
	}
	// Errors are JSON with a code.
	_, b = call(t, base, "GET", "/api/rooms", participant, nil)
	var e struct {
		Error struct{ Code, Message string }
	}
	if json.Unmarshal(b, &e) != nil || e.Error.Code != "forbidden" || e.Error.Message == "" {
		t.Errorf("403 body: %s", b)
	}
	// The development admin token does not exist once keys are configured.
	if st, _ := call(t, base, "GET", "/api/dev-admin-token", "", nil); st != http.StatusNotFound {
		t.Errorf("dev admin token with keys: %d", st)
	}
}

// sse is an event stream client.
type sse struct {
	mu     sync.Mutex
	events []sseEvent
	cancel context.CancelFunc
}

type sseEvent struct {
	id    int64
	event string
	data  string
}

func openEvents(t *testing.T, base, token string, lastID int64) *sse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/events", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if lastID >= 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(lastID, 10))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		cancel()
		t.Fatalf("event stream: %v %v", err, resp)
	}
	s := &sse{cancel: cancel}
	t.Cleanup(cancel)
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var cur sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if cur.event != "" {
					s.mu.Lock()
					s.events = append(s.events, cur)
					s.mu.Unlock()
				}
				cur = sseEvent{}
			case strings.HasPrefix(line, "id: "):
				cur.id, _ = strconv.ParseInt(line[4:], 10, 64)
			case strings.HasPrefix(line, "event: "):
				cur.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				cur.data = line[6:]
			}
		}
	}()
	return s
}

// roomEvents lists the numbered events (not snapshot, stats, reset).
func (s *sse) roomEvents() []sseEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []sseEvent
	for _, e := range s.events {
		if e.id > 0 {
			out = append(out, e)
		}
	}
	return out
}

func (s *sse) has(event string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.events {
		if e.event == event {
			return true
		}
	}
	return false
}

func eventNames(evs []sseEvent) string {
	var out []string
	for _, e := range evs {
		out = append(out, e.event)
	}
	return strings.Join(out, ",")
}

// TestAdminActionsWithPeers: with two pion peers in a call, metrics move,
// the event stream tells it in order (and again from Last-Event-ID),
// muting stops the forwarded packets, and removing a participant
// disconnects its peer.
func TestAdminActionsWithPeers(t *testing.T) {
	base, a := startServer(t, withKeys)
	admin := mint(t, "*", "ops", adminGrants)
	stream := openEvents(t, base, admin, -1)
	eventually(t, 5*time.Second, "snapshot and first stats", func() bool { return stream.has("snapshot") && stream.has("stats") })

	alice, ok := joinPeer(t, a.HTTP, "call", "alice", mint(t, "call", "alice", participantGrants))
	if !ok {
		t.Fatal("alice could not join")
	}
	alice.publishAudio()
	eventually(t, 10*time.Second, "alice's track is published", func() bool { return len(alice.messages("track_published")) > 0 })
	bob, ok := joinPeer(t, a.HTTP, "call", "bob", mint(t, "call", "bob", participantGrants))
	if !ok {
		t.Fatal("bob could not join")
	}
	eventually(t, 15*time.Second, "bob receives alice's audio", func() bool { return bob.received.Load() > 20 })

	t.Run("metrics", func(t *testing.T) {
		m1 := scrape(t, a)
		if m1["parley_participants"] != 2 || m1["parley_rooms"] != 1 || m1["parley_published_tracks"] != 1 ||
			m1["parley_subscribed_tracks"] != 1 || m1["parley_websocket_connections"] != 3-1 {
			t.Errorf("gauges: participants %v rooms %v published %v subscribed %v websockets %v", m1["parley_participants"], m1["parley_rooms"],
				m1["parley_published_tracks"], m1["parley_subscribed_tracks"], m1["parley_websocket_connections"])
		}
		time.Sleep(500 * time.Millisecond)
		m2 := scrape(t, a)
		if m2["parley_packets_out_total"] <= m1["parley_packets_out_total"] || m2["parley_packets_in_total"] <= m1["parley_packets_in_total"] ||
			m2["parley_bytes_out_total"] <= m1["parley_bytes_out_total"] {
			t.Errorf("forwarding counters did not grow: out %v -> %v, in %v -> %v", m1["parley_packets_out_total"], m2["parley_packets_out_total"],
				m1["parley_packets_in_total"], m2["parley_packets_in_total"])
		}
		delay, inf := m2["parley_forward_delay_seconds_count"], m2[`parley_forward_delay_seconds_bucket{le="+Inf"}`]
		if delay <= m1["parley_forward_delay_seconds_count"] || inf != delay || m2["parley_forward_delay_seconds_sum"] <= 0 ||
			delay > m2["parley_packets_out_total"]+100 {
			t.Errorf("forwarding delay histogram: count %v -> %v (+Inf bucket %v, sum %v), packets out %v", m1["parley_forward_delay_seconds_count"],
				delay, inf, m2["parley_forward_delay_seconds_sum"], m2["parley_packets_out_total"])
		}
		if m2["process_resident_memory_bytes"] <= 0 || m2["go_goroutines"] <= 0 || m2[`parley_data_messages_total{type="heartbeat"}`] < 0 {
			t.Error("runtime and process metrics are missing")
		}
		// Every unlabeled metric docs/api.md lists is served (TURN's, the
		// webhooks' and the cluster's only when those are on; this server
		// has none).
		doc, err := os.ReadFile("../../docs/api.md")
		if err != nil {
			t.Fatal(err)
		}
		names := regexp.MustCompile("`(parley_[a-z_]+)`").FindAllStringSubmatch(string(doc), -1)
		if len(names) < 20 {
			t.Fatalf("found only %d metric names in docs/api.md", len(names))
		}
		for _, n := range names {
			if strings.HasPrefix(n[1], "parley_turn_") || strings.HasPrefix(n[1], "parley_webhook_") || strings.HasPrefix(n[1], "parley_cluster_") {
				continue
			}
			if _, ok := m2[n[1]]; !ok {
				t.Errorf("docs/api.md lists %s, /metrics does not serve it", n[1])
			}
		}
	})

	var trackSID string
	t.Run("room details", func(t *testing.T) {
		st, b := call(t, base, "GET", "/api/rooms/call", admin, nil)
		var d rooms.RoomDetails
		if st != 200 || json.Unmarshal(b, &d) != nil || d.NumParticipants != 2 || len(d.Participants) != 2 {
			t.Fatalf("room: %d %s", st, b)
		}
		for _, p := range d.Participants {
			if p.Identity == "alice" && len(p.Tracks) == 1 {
				trackSID = p.Tracks[0].SID
				if p.Tracks[0].Packets == 0 || p.Tracks[0].Subscribers != 1 || p.Tracks[0].Source != "microphone" {
					t.Errorf("alice's track: %+v", p.Tracks[0])
				}
			}
		}
		if trackSID == "" {
			t.Fatalf("alice's track is not listed: %s", b)
		}
	})

	t.Run("mute stops forwarding", func(t *testing.T) {
		st, b := call(t, base, "POST", "/api/rooms/call/participants/alice/tracks/"+trackSID+"/mute", admin, map[string]bool{"muted": true})
		if st != 200 || !strings.Contains(string(b), `"muted":true`) {
			t.Fatalf("mute: %d %s", st, b)
		}
		eventually(t, 5*time.Second, "alice is told her track is muted", func() bool { return len(alice.messages("track_muted")) > 0 })
		time.Sleep(300 * time.Millisecond) // what was in flight
		before := bob.received.Load()
		time.Sleep(time.Second)
		if got := bob.received.Load() - before; got > 0 {
			t.Fatalf("bob received %d packets in the second after the mute", got)
		}
		call(t, base, "POST", "/api/rooms/call/participants/alice/tracks/"+trackSID+"/mute", admin, map[string]bool{"muted": false})
		before = bob.received.Load()
		eventually(t, 5*time.Second, "forwarding resumes after unmute", func() bool { return bob.received.Load() > before+10 })
	})

	t.Run("remove disconnects the peer", func(t *testing.T) {
		if st, b := call(t, base, "DELETE", "/api/rooms/call/participants/bob", admin, nil); st != http.StatusNoContent {
			t.Fatalf("remove: %d %s", st, b)
		}
		eventually(t, 5*time.Second, "bob is told he was removed and his socket closes", func() bool { return bob.hasLeave("removed") && bob.isClosed() })
		eventually(t, 5*time.Second, "participants gauge back to 1", func() bool { return scrape(t, a)["parley_participants"] == 1 })
	})

	t.Run("events in order, and again from Last-Event-ID", func(t *testing.T) {
		want := "participant_joined,track_published,participant_joined,track_muted,track_muted,participant_left"
		var evs []sseEvent
		deadline := time.Now().Add(5 * time.Second)
		for evs = stream.roomEvents(); !strings.HasPrefix(eventNames(evs), "room_started,"+want); evs = stream.roomEvents() {
			if time.Now().After(deadline) {
				t.Fatalf("events %s, want room_started,%s", eventNames(evs), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
		for i := 1; i < len(evs); i++ {
			if evs[i].id != evs[i-1].id+1 {
				t.Fatalf("ids are not consecutive: %d then %d", evs[i-1].id, evs[i].id)
			}
		}
		var left struct {
			Room, Reason string
			Participant  struct{ Identity string }
		}
		_ = json.Unmarshal([]byte(evs[6].data), &left)
		if left.Room != "call" || left.Reason != "removed" || left.Participant.Identity != "bob" {
			t.Fatalf("participant_left: %s", evs[6].data)
		}
		// A client that saw up to the second event gets exactly the rest.
		again := openEvents(t, base, admin, evs[1].id)
		eventually(t, 5*time.Second, "the missed events", func() bool { return len(again.roomEvents()) >= len(evs)-2 })
		got := again.roomEvents()
		if eventNames(got) != eventNames(evs[2:]) || got[0].id != evs[2].id || again.has("snapshot") {
			t.Fatalf("after Last-Event-ID %d: %s (ids from %d), want %s", evs[1].id, eventNames(got), got[0].id, eventNames(evs[2:]))
		}
	})

	t.Run("reset for an id this server never gave", func(t *testing.T) {
		future := openEvents(t, base, admin, 1_000_000)
		eventually(t, 5*time.Second, "reset", func() bool { return future.has("reset") })
		alice.send("mute", map[string]any{"track_sid": trackSID, "muted": true})
		eventually(t, 5*time.Second, "live events after the reset", func() bool { return len(future.roomEvents()) > 0 })
	})

	t.Run("close the room", func(t *testing.T) {
		if st, _ := call(t, base, "DELETE", "/api/rooms/call", admin, nil); st != http.StatusNoContent {
			t.Fatalf("close room: %d", st)
		}
		eventually(t, 5*time.Second, "alice is told the room closed", func() bool { return alice.hasLeave("room_closed") && alice.isClosed() })
		if st, _ := call(t, base, "GET", "/api/rooms/call", admin, nil); st != http.StatusNotFound {
			t.Fatalf("closed room still there: %d", st)
		}
		eventually(t, 5*time.Second, "room_finished", func() bool { return stream.has("room_finished") })
	})
}

// TestAdminRoomLimitsAndUpdates: a room created with limits refuses the
// participant over its own limit and waits for its first participant;
// updating grants and name takes effect at once.
func TestAdminRoomLimitsAndUpdates(t *testing.T) {
	base, a := startServer(t, withKeys)
	admin := mint(t, "*", "ops", adminGrants)
	st, b := call(t, base, "POST", "/api/rooms", admin, map[string]any{"name": "small", "max_participants": 1, "empty_timeout_seconds": 60})
	if st != 201 || !strings.Contains(string(b), `"max_participants":1`) {
		t.Fatalf("create: %d %s", st, b)
	}
	if st, _ := call(t, base, "POST", "/api/rooms", admin, map[string]any{"name": "small"}); st != http.StatusConflict {
		t.Fatalf("create twice: %d, want 409", st)
	}
	if st, _ := call(t, base, "POST", "/api/rooms", admin, map[string]any{"name": "x", "max_participants": "many"}); st != http.StatusBadRequest {
		t.Fatalf("bad body: %d, want 400", st)
	}
	alice, ok := joinPeer(t, a.HTTP, "small", "alice", mint(t, "small", "alice", participantGrants))
	if !ok {
		t.Fatal("alice could not join")
	}
	alice.publishAudio()
	if _, ok := joinPeer(t, a.HTTP, "small", "bob", mint(t, "small", "bob", participantGrants)); ok {
		t.Fatal("bob joined a room of at most one")
	}
	eventually(t, 10*time.Second, "alice's track is published", func() bool { return len(alice.messages("track_published")) > 0 })

	st, b = call(t, base, "PATCH", "/api/rooms/small/participants/alice", admin, map[string]any{
		"name": "Alice (host)", "metadata": map[string]string{"role": "host"}, "grants": map[string]bool{"subscribe": true, "data": true}})
	if st != 200 || !strings.Contains(string(b), `"name":"Alice (host)"`) || !strings.Contains(string(b), `"role":"host"`) ||
		!strings.Contains(string(b), `"publish":false`) {
		t.Fatalf("update: %d %s", st, b)
	}
	eventually(t, 5*time.Second, "alice is told, and her track is unpublished", func() bool {
		return len(alice.messages("participant_updated")) == 1 && len(alice.messages("track_unpublished")) == 1
	})
	if st, _ := call(t, base, "PATCH", "/api/rooms/small/participants/alice", admin, map[string]any{"grants": map[string]bool{"admin": true}}); st != 400 {
		t.Fatalf("giving the admin grant: %d, want 400", st)
	}
	// The room outlives its last participant for its empty timeout.
	alice.send("leave", map[string]any{})
	time.Sleep(300 * time.Millisecond)
	if st, _ := call(t, base, "GET", "/api/rooms/small", admin, nil); st != 200 {
		t.Fatalf("room with a 60 s empty timeout gone after its participant left: %d", st)
	}
}

// TestWebhooks: a receiver gets every event, signed; a receiver that is
// down delays nobody and its failures are counted.
func TestWebhooks(t *testing.T) {
	var mu sync.Mutex
	var got []string
	good := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		m := hmac.New(sha256.New, []byte(opsSecret))
		m.Write(body)
		if r.Header.Get("X-Parley-Signature") != "sha256="+hex.EncodeToString(m.Sum(nil)) || r.Header.Get("X-Parley-Key") != opsKey {
			t.Errorf("bad signature on %s", body)
			w.WriteHeader(400)
			return
		}
		var ev struct {
			ID   int64
			Type string
		}
		_ = json.Unmarshal(body, &ev)
		if r.Header.Get("X-Parley-Event-Id") != strconv.FormatInt(ev.ID, 10) {
			t.Errorf("event id header %q for %s", r.Header.Get("X-Parley-Event-Id"), body)
		}
		mu.Lock()
		got = append(got, ev.Type)
		mu.Unlock()
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = good.Serve(ln) }()
	t.Cleanup(func() { _ = good.Close() })
	down, err := net.Listen("tcp", "127.0.0.1:0") // a port nobody answers on
	if err != nil {
		t.Fatal(err)
	}
	downURL := "http://" + down.Addr().String() + "/hook"
	down.Close()

	base, a := startServer(t, withKeys, func(c *Config) { c.Webhooks.URLs = []string{downURL, "http://" + ln.Addr().String() + "/hook"} })
	admin := mint(t, "*", "ops", adminGrants)
	start := time.Now()
	call(t, base, "POST", "/api/rooms", admin, map[string]any{"name": "hooked"}) // waits 300 s for its participants
	p, ok := joinPeer(t, a.HTTP, "hooked", "alice", mint(t, "hooked", "alice", participantGrants))
	if !ok {
		t.Fatal("join")
	}
	p.send("leave", map[string]any{})
	eventually(t, 5*time.Second, "alice's socket closes", p.isClosed)
	call(t, base, "DELETE", "/api/rooms/hooked", admin, nil)
	want := "room_started,participant_joined,participant_left,room_finished"
	eventually(t, 5*time.Second, "the receiver gets "+want, func() bool {
		mu.Lock()
		defer mu.Unlock()
		if !strings.HasPrefix(want, strings.Join(got, ",")) {
			t.Fatalf("the receiver got %s, want %s", strings.Join(got, ","), want)
		}
		return strings.Join(got, ",") == want
	})
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("events took %s to arrive: the receiver that is down delayed them", d)
	}
	eventually(t, 5*time.Second, "failures to the receiver that is down are counted", func() bool {
		return scrape(t, a)["parley_webhook_failures_total"] >= 1
	})
	if m := scrape(t, a); m["parley_webhook_sent_total"] < 4 {
		t.Errorf("webhook_sent_total %v", m["parley_webhook_sent_total"])
	}
}

// TestDrain: SIGTERM's drain refuses new joins, fails /readyz, keeps the
// call going, and the server stops once the room is empty; with a
// participant that stays, it stops at drain_timeout.
func TestDrain(t *testing.T) {
	for _, stay := range []bool{false, true} {
		t.Run(fmt.Sprintf("participant stays %v", stay), func(t *testing.T) {
			cfg := testConfig(withKeys, func(c *Config) { c.DrainTimeout = 2 * time.Second })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			drain := make(chan struct{})
			ready := make(chan Addrs, 1)
			done := make(chan error, 1)
			go func() { done <- run(ctx, cfg, testLogger(), func(a Addrs) { ready <- a }, drain) }()
			var a Addrs
			select {
			case a = <-ready:
			case err := <-done:
				t.Fatal(err)
			}
			base := "http://" + a.HTTP.String()
			alice, ok := joinPeer(t, a.HTTP, "d", "alice", mint(t, "d", "alice", participantGrants))
			if !ok {
				t.Fatal("join")
			}
			if resp, err := http.Get(base + "/readyz"); err != nil || resp.StatusCode != 200 {
				t.Fatalf("readyz before draining: %v %v", err, resp)
			}
			close(drain)
			eventually(t, 5*time.Second, "readyz says draining", func() bool {
				resp, err := http.Get(base + "/readyz")
				if err != nil {
					return false
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return resp.StatusCode == 503 && strings.Contains(string(b), "draining")
			})
			bob, ok := joinPeer(t, a.HTTP, "d", "bob", mint(t, "d", "bob", participantGrants))
			if ok || !strings.Contains(string(bob.msgs[0].Data), `"draining"`) {
				t.Fatalf("a join while draining: %s %s", bob.msgs[0].Type, bob.msgs[0].Data)
			}
			if st, _ := call(t, base, "POST", "/api/rooms", mint(t, "*", "ops", adminGrants), map[string]any{"name": "new"}); st != 503 {
				t.Fatalf("create a room while draining: %d, want 503", st)
			}
			start := time.Now()
			if !stay {
				alice.send("leave", map[string]any{})
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the server did not stop after draining")
			}
			took := time.Since(start)
			if stay {
				eventually(t, 5*time.Second, "alice is told the server shuts down", func() bool { return alice.hasLeave("server_shutdown") })
				if took < 1500*time.Millisecond {
					t.Fatalf("with alice staying the server stopped after %s, before drain_timeout", took)
				}
			}
			if !stay && took > time.Second {
				t.Fatalf("the server took %s to stop after the room emptied", took)
			}
		})
	}
}

// TestAdminCommands: parley rooms and parley participants against a
// server in development mode (the token comes from /api/dev-admin-token)
// and one with keys (the token is minted from --key/--secret).
func TestAdminCommands(t *testing.T) {
	base, _ := startServer(t)
	keyed, _ := startServer(t, withKeys)
	env := envOf(nil)
	runCmd := func(args ...string) (int, string, string) {
		var out, errb strings.Builder
		code := realMain(args, env, &out, &errb)
		return code, out.String(), errb.String()
	}
	if code, out, errs := runCmd("rooms", "create", "weekly", "--url", base, "--max-participants", "5", "--empty-timeout", "90s"); code != 0 ||
		!strings.Contains(out, `"max_participants": 5`) || !strings.Contains(out, `"empty_timeout_seconds": 90`) {
		t.Fatalf("rooms create: %d %s %s", code, out, errs)
	}
	if code, out, _ := runCmd("rooms", "list", "--url", base); code != 0 || !strings.Contains(out, "weekly") || !strings.Contains(out, "PARTICIPANTS") {
		t.Fatalf("rooms list: %d %s", code, out)
	}
	if code, out, _ := runCmd("rooms", "show", "--url", base, "weekly"); code != 0 || !strings.Contains(out, `"name": "weekly"`) {
		t.Fatalf("rooms show: %d %s", code, out)
	}
	if code, _, errs := runCmd("participants", "remove", "weekly", "nobody", "--url", base); code != 1 || !strings.Contains(errs, "not_found") {
		t.Fatalf("remove nobody: %d %s", code, errs)
	}
	if code, _, errs := runCmd("rooms", "close", "weekly", "--url", base); code != 0 {
		t.Fatalf("rooms close: %d %s", code, errs)
	}
	if code, _, errs := runCmd("rooms", "show", "weekly", "--url", base); code != 1 || !strings.Contains(errs, "no such room") {
		t.Fatalf("show a closed room: %d %s", code, errs)
	}
	if code, _, errs := runCmd("rooms", "frobnicate", "--url", base); code != 2 || !strings.Contains(errs, "usage") {
		t.Fatalf("unknown subcommand: %d %s", code, errs)
	}
	// With keys: no development token; the key mints one.
	if code, _, errs := runCmd("rooms", "list", "--url", keyed); code != 2 || !strings.Contains(errs, "--token") {
		t.Fatalf("keyed server without credentials: %d %s", code, errs)
	}
	if code, out, errs := runCmd("rooms", "create", "k1", "--url", keyed, "--key", opsKey, "--secret", opsSecret); code != 0 || !strings.Contains(out, `"k1"`) {
		t.Fatalf("keyed create: %d %s %s", code, out, errs)
	}
	code, tok, _ := runCmd("token", "--admin", "--key", opsKey, "--secret", opsSecret)
	if code != 0 {
		t.Fatal("token --admin")
	}
	if code, out, errs := runCmd("rooms", "list", "--url", keyed, "--token", strings.TrimSpace(tok)); code != 0 || !strings.Contains(out, "k1") {
		t.Fatalf("list with parley token --admin: %d %s %s", code, out, errs)
	}
}
