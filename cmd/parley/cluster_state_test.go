package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/parley-rtc/parley/admin"
	"github.com/parley-rtc/parley/internal/redistest"
	"github.com/parley-rtc/parley/rooms"
)

// Several whole servers sharing one Redis (docs/api.md, "Several nodes"):
// the admin API, the event stream and the chat history of any node cover
// every room of the cluster.

// inCluster makes a node of the cluster on redisAddr (named id; empty: the
// default name), with a fast heartbeat and the shared API keys.
func inCluster(redisAddr, id string) func(*Config) {
	return func(c *Config) {
		withKeys(c)
		c.Redis.Addr = redisAddr
		c.Cluster.NodeID = id
		c.Cluster.Heartbeat = 200 * time.Millisecond
		c.Cluster.NodeTTL = time.Second
	}
}

// clusterNode is one node started by startCluster.
type clusterNode struct {
	id   string
	base string
	a    Addrs
	stop func() error
}

// startCluster starts one node per id and waits until each sees all.
func startCluster(t *testing.T, redisAddr string, ids []string, overrides ...func(*Config)) map[string]*clusterNode {
	t.Helper()
	nodes := map[string]*clusterNode{}
	for _, id := range ids {
		base, a, stop := launch(t, append([]func(*Config){inCluster(redisAddr, id)}, overrides...)...)
		n := &clusterNode{id: id, base: base, a: a, stop: stop}
		nodes[id] = n
		t.Cleanup(func() {
			if err := n.stop(); err != nil {
				t.Errorf("node %s stopped with: %v", n.id, err)
			}
		})
	}
	admin := mint(t, "*", "ops", adminGrants)
	for _, n := range nodes {
		eventually(t, 5*time.Second, "node "+n.id+" sees every node", func() bool {
			st, b := call(t, n.base, "GET", "/api/nodes", admin, nil)
			var out struct{ Nodes []struct{ ID, URL string } }
			if st != 200 || json.Unmarshal(b, &out) != nil || len(out.Nodes) != len(ids) {
				return false
			}
			for _, x := range out.Nodes {
				if x.URL != nodes[x.ID].base {
					t.Fatalf("node %s registered URL %q, serves %s", x.ID, x.URL, nodes[x.ID].base)
				}
			}
			return true
		})
	}
	return nodes
}

// roomList is GET /api/rooms: name -> node.
func roomList(t *testing.T, base, token string) map[string]string {
	t.Helper()
	st, b := call(t, base, "GET", "/api/rooms", token, nil)
	var out struct {
		Rooms      []rooms.RoomDetails
		Incomplete string
	}
	if st != 200 || json.Unmarshal(b, &out) != nil || out.Incomplete != "" {
		t.Fatalf("GET /api/rooms: %d %s", st, b)
	}
	m := map[string]string{}
	for _, d := range out.Rooms {
		if d.Participants != nil {
			t.Fatalf("the listing carries participants: %s", b)
		}
		m[d.Name] = d.Node
	}
	return m
}

// hookCounter is a webhook receiver counting deliveries by type/room/node.
type hookCounter struct {
	mu  sync.Mutex
	got map[string]int
}

func startHookReceiver(t *testing.T) (*hookCounter, string) {
	h := &hookCounter{got: map[string]int{}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ev struct{ Type, Room, Node string }
		_ = json.Unmarshal(body, &ev)
		h.mu.Lock()
		h.got[ev.Type+"/"+ev.Room+"@"+ev.Node]++
		h.mu.Unlock()
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return h, "http://" + ln.Addr().String() + "/hook"
}

func (h *hookCounter) counts() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{}
	for k, v := range h.got {
		out[k] = v
	}
	return out
}

// TestClusterAdminAndEvents: with two nodes, a room created through one
// node's API goes where placement puts it; the other node lists it and
// its details, forwards mute, update, remove and close to the room's
// node, and streams its events (naming that node); each event reaches
// the webhook once, from the room's node.
func TestClusterAdminAndEvents(t *testing.T) {
	rs := redistest.Start(t)
	hooks, hookURL := startHookReceiver(t)
	nodes := startCluster(t, rs.Addr(), []string{"a", "b"}, func(c *Config) { c.Webhooks.URLs = []string{hookURL} })
	admin := mint(t, "*", "ops", adminGrants)
	streams := map[string]*sse{"a": openEvents(t, nodes["a"].base, admin, -1), "b": openEvents(t, nodes["b"].base, admin, -1)}

	st, b := call(t, nodes["a"].base, "POST", "/api/rooms", admin, map[string]any{"name": "call", "empty_timeout_seconds": 60})
	var created rooms.RoomDetails
	if st != http.StatusCreated || json.Unmarshal(b, &created) != nil || nodes[created.Node] == nil {
		t.Fatalf("create through a: %d %s", st, b)
	}
	holder := nodes[created.Node]
	other := nodes["a"]
	if holder.id == "a" {
		other = nodes["b"]
	}
	t.Logf("room call is on node %s; node %s is the other", holder.id, other.id)
	if st, b := call(t, other.base, "POST", "/api/rooms", admin, map[string]any{"name": "call"}); st != http.StatusConflict {
		t.Fatalf("creating it again through %s: %d %s, want 409 from its node", other.id, st, b)
	}
	eventually(t, 5*time.Second, "both nodes list the room on its node", func() bool {
		return roomList(t, other.base, admin)["call"] == holder.id && roomList(t, holder.base, admin)["call"] == holder.id
	})

	alice, ok := joinPeer(t, holder.a.HTTP, "call", "alice", mint(t, "call", "alice", participantGrants))
	if !ok {
		t.Fatalf("alice could not join: %s", alice.msgs[0].Data)
	}
	alice.publishAudio()
	eventually(t, 10*time.Second, "alice's track is published", func() bool { return len(alice.messages("track_published")) > 0 })
	bob, ok := joinPeer(t, holder.a.HTTP, "call", "bob", mint(t, "call", "bob", participantGrants))
	if !ok {
		t.Fatalf("bob could not join: %s", bob.msgs[0].Data)
	}
	eventually(t, 15*time.Second, "bob receives alice's audio", func() bool { return bob.received.Load() > 10 })

	var trackSID string
	eventually(t, 5*time.Second, "the other node shows both participants and alice's track", func() bool {
		st, b := call(t, other.base, "GET", "/api/rooms/call", admin, nil)
		var d rooms.RoomDetails
		if st != 200 || json.Unmarshal(b, &d) != nil || d.Node != holder.id || len(d.Participants) != 2 {
			return false
		}
		for _, p := range d.Participants {
			if p.Identity == "alice" && len(p.Tracks) == 1 {
				trackSID = p.Tracks[0].SID
			}
		}
		return trackSID != ""
	})

	// Actions through the other node reach the room.
	req, _ := http.NewRequest("POST", other.base+"/api/rooms/call/participants/alice/tracks/"+trackSID+"/mute", strings.NewReader(`{"muted":true}`))
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"muted":true`) || resp.Header.Get("X-Parley-Node") != holder.id {
		t.Fatalf("mute through %s: %d %s (answered by %q)", other.id, resp.StatusCode, body, resp.Header.Get("X-Parley-Node"))
	}
	eventually(t, 5*time.Second, "alice is told her track is muted", func() bool { return len(alice.messages("track_muted")) > 0 })
	st, b = call(t, other.base, "PATCH", "/api/rooms/call/participants/alice", admin, map[string]any{"name": "Alice (host)"})
	if st != 200 || !strings.Contains(string(b), `"name":"Alice (host)"`) {
		t.Fatalf("update through %s: %d %s", other.id, st, b)
	}
	eventually(t, 5*time.Second, "alice is told she was updated", func() bool { return len(alice.messages("participant_updated")) == 1 })
	if st, b := call(t, other.base, "DELETE", "/api/rooms/call/participants/nobody", admin, nil); st != 404 {
		t.Fatalf("removing nobody through %s: %d %s, want its node's 404", other.id, st, b)
	}
	if st, b := call(t, other.base, "DELETE", "/api/rooms/call/participants/bob", admin, nil); st != http.StatusNoContent {
		t.Fatalf("remove bob through %s: %d %s", other.id, st, b)
	}
	eventually(t, 5*time.Second, "bob is removed", func() bool { return bob.hasLeave("removed") && bob.isClosed() })
	// A room-scoped token for another room cannot act through the other
	// node either (it is checked before forwarding, and again there).
	if st, _ := call(t, other.base, "DELETE", "/api/rooms/call", mint(t, "elsewhere", "ops", adminGrants), nil); st != http.StatusForbidden {
		t.Fatalf("close with a token for another room: %d", st)
	}
	if st, b := call(t, other.base, "DELETE", "/api/rooms/call", admin, nil); st != http.StatusNoContent {
		t.Fatalf("close through %s: %d %s", other.id, st, b)
	}
	eventually(t, 5*time.Second, "alice is told the room closed", func() bool { return alice.hasLeave("room_closed") })
	eventually(t, 5*time.Second, "the room leaves both listings", func() bool {
		_, onOther := roomList(t, other.base, admin)["call"]
		_, onHolder := roomList(t, holder.base, admin)["call"]
		return !onOther && !onHolder
	})
	if st, _ := call(t, other.base, "GET", "/api/rooms/call", admin, nil); st != 404 {
		t.Fatalf("a closed room through %s: %d", other.id, st)
	}

	// Both streams tell the room's story in order, naming its node.
	want := "room_started,participant_joined,track_published,participant_joined,track_muted,participant_left,track_unpublished,participant_left,room_finished"
	for id, s := range streams {
		eventually(t, 5*time.Second, "node "+id+"'s stream has the room's events", func() bool { return s.has("room_finished") })
		var evs []string
		for _, e := range s.roomEvents() {
			var ev struct{ Room, Node string }
			_ = json.Unmarshal([]byte(e.data), &ev)
			if ev.Room != "call" {
				continue
			}
			if ev.Node != holder.id {
				t.Errorf("node %s streamed %s naming node %q, want %s", id, e.event, ev.Node, holder.id)
			}
			evs = append(evs, e.event)
		}
		if strings.Join(evs, ",") != want {
			t.Errorf("node %s streamed %s\nwant %s", id, strings.Join(evs, ","), want)
		}
	}

	// Each event reached the webhook once, sent by the room's node.
	wantHooks := map[string]int{}
	for _, typ := range strings.Split(want, ",") {
		wantHooks[typ+"/call@"+holder.id]++
	}
	eventually(t, 5*time.Second, "the webhook gets room_finished", func() bool { return hooks.counts()["room_finished/call@"+holder.id] > 0 })
	time.Sleep(300 * time.Millisecond) // a second delivery would come by now
	got := hooks.counts()
	if fmt.Sprint(got) != fmt.Sprint(wantHooks) {
		t.Fatalf("webhook deliveries %v\nwant %v", got, wantHooks)
	}
}

// TestClusterNodesAndErrors: GET /api/nodes needs a token for every room;
// an action on a room nowhere is this node's 404; single-node answers
// carry no node.
func TestClusterNodesAndErrors(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startCluster(t, rs.Addr(), []string{"a", "b"})
	tok := mint(t, "*", "ops", adminGrants)
	st, b := call(t, nodes["a"].base, "GET", "/api/nodes", tok, nil)
	var out struct{ Nodes []admin.NodeStatus }
	if st != 200 || json.Unmarshal(b, &out) != nil || len(out.Nodes) != 2 || out.Nodes[0].ID != "a" || out.Nodes[1].ID != "b" ||
		out.Nodes[0].Heartbeat == 0 || out.Nodes[0].Started == 0 {
		t.Fatalf("nodes: %d %s", st, b)
	}
	if st, _ := call(t, nodes["a"].base, "GET", "/api/nodes", mint(t, "r", "ops", adminGrants), nil); st != http.StatusForbidden {
		t.Fatalf("nodes with a room-scoped token: %d, want 403", st)
	}
	if st, _ := call(t, nodes["a"].base, "GET", "/api/nodes", mint(t, "*", "alice", participantGrants), nil); st != http.StatusForbidden {
		t.Fatalf("nodes with a participant token: %d, want 403", st)
	}
	if st, b := call(t, nodes["a"].base, "DELETE", "/api/rooms/nowhere", tok, nil); st != 404 || !strings.Contains(string(b), "not_found") {
		t.Fatalf("closing a room nowhere: %d %s", st, b)
	}

	single, _ := startServer(t, withKeys)
	if st, b := call(t, single, "GET", "/api/nodes", tok, nil); st != 200 || strings.TrimSpace(string(b)) != `{"nodes":[]}` {
		t.Fatalf("nodes of a single server: %d %s", st, b)
	}
	if st, b := call(t, single, "POST", "/api/rooms", tok, map[string]any{"name": "solo"}); st != 201 || strings.Contains(string(b), `"node"`) {
		t.Fatalf("a single server's room names a node: %d %s", st, b)
	}
}

// chatChannel is a peer's reliable data channel (dialPeer catches it).
type chatChannel struct{ p *peer }

func watchChat(p *peer) *chatChannel { return &chatChannel{p: p} }

func (c *chatChannel) send(t *testing.T, msg string) {
	t.Helper()
	eventually(t, 15*time.Second, "the data channel opens", func() bool {
		c.p.mu.Lock()
		defer c.p.mu.Unlock()
		return c.p.dc != nil && c.p.dc.ReadyState() == webrtc.DataChannelStateOpen
	})
	c.p.mu.Lock()
	dc := c.p.dc
	c.p.mu.Unlock()
	if err := dc.SendText(msg); err != nil {
		t.Fatal(err)
	}
}

// wait returns the first message of type typ containing sub.
func (c *chatChannel) wait(t *testing.T, typ, sub string) string {
	t.Helper()
	var found string
	eventually(t, 15*time.Second, typ+" "+sub, func() bool {
		c.p.mu.Lock()
		defer c.p.mu.Unlock()
		for _, m := range c.p.data {
			if strings.HasPrefix(m, `{"type":"`+typ+`"`) && strings.Contains(m, sub) {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

// TestClusterChatSurvivesItsNode: a room's chat history outlives the node
// it was on: when that node stops, the room opens again on the other one
// with the last data.history messages, and a message resent after the
// move is still recognized (its id survived too).
func TestClusterChatSurvivesItsNode(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startCluster(t, rs.Addr(), []string{"a", "b"}, func(c *Config) { c.Data.History = 3 })
	alice, ok := joinPeer(t, nodes["a"].a.HTTP, "chat", "alice", mint(t, "chat", "alice", participantGrants))
	if !ok {
		t.Fatalf("alice could not join: %s", alice.msgs[0].Data)
	}
	ac := watchChat(alice)
	ac.wait(t, "history", "")
	for i := 1; i <= 5; i++ {
		ac.send(t, fmt.Sprintf(`{"type":"chat","id":"c%d","text":"message %d"}`, i, i))
		ac.wait(t, "chat_ack", fmt.Sprintf(`"id":"c%d"`, i))
	}
	admin := mint(t, "*", "ops", adminGrants)
	var holder string
	eventually(t, 5*time.Second, "the room in the listing", func() bool {
		holder = roomList(t, nodes["a"].base, admin)["chat"]
		return holder != ""
	})
	survivor := "a"
	if holder == "a" {
		survivor = "b"
	}
	t.Logf("room chat was on node %s; stopping it", holder)
	if err := nodes[holder].stop(); err != nil {
		t.Fatalf("stopping node %s: %v", holder, err)
	}
	eventually(t, 5*time.Second, "alice's session ends with the node", alice.isClosed)

	bob, ok := joinPeer(t, nodes[survivor].a.HTTP, "chat", "bob", mint(t, "chat", "bob", participantGrants))
	if !ok {
		t.Fatalf("bob could not join on %s: %s", survivor, bob.msgs[0].Data)
	}
	bc := watchChat(bob)
	var h struct{ Messages []rooms.ChatMessage }
	_ = json.Unmarshal([]byte(bc.wait(t, "history", "")), &h)
	var ids []string
	for _, m := range h.Messages {
		if m.From != "alice" {
			t.Errorf("message %s from %q", m.ID, m.From)
		}
		ids = append(ids, m.ID)
	}
	if strings.Join(ids, ",") != "c3,c4,c5" {
		t.Fatalf("bob's history on node %s: %v, want c3,c4,c5", survivor, ids)
	}
	if node := roomList(t, nodes[survivor].base, admin)["chat"]; node != survivor {
		t.Fatalf("the room is on %q, want %s", node, survivor)
	}

	alice2, ok := joinPeer(t, nodes[survivor].a.HTTP, "chat", "alice", mint(t, "chat", "alice", participantGrants))
	if !ok {
		t.Fatalf("alice could not join again: %s", alice2.msgs[0].Data)
	}
	ac2 := watchChat(alice2)
	ac2.send(t, `{"type":"chat","id":"c1","text":"message 1"}`) // out of the history, id kept
	if ack := ac2.wait(t, "chat_ack", `"id":"c1"`); !strings.Contains(ack, `"duplicate":true`) {
		t.Fatalf("a resent message after the move: %s", ack)
	}
	ac2.send(t, `{"type":"chat","id":"c6","text":"message 6"}`)
	bc.wait(t, "chat", `"id":"c6"`)
}
