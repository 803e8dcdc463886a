package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-rtc/parley/events"
	"github.com/parley-rtc/parley/rooms"
	"github.com/parley-rtc/parley/sfu"
	"github.com/parley-rtc/parley/signaling"
)

const testKey, testSecret = "k", "secret-0123456789abcdef0123456789abcdef"

// fakeCluster is a Cluster whose answers the test sets.
type fakeCluster struct {
	mu       sync.Mutex
	remote   []rooms.RoomDetails
	owner    map[string]string // room -> node
	urls     map[string]string // node -> URL
	err      error             // every call fails with it
	placed   []string
	located  []string
	nodes    []NodeStatus
	placeErr error
}

func (f *fakeCluster) NodeID() string { return "here" }

func (f *fakeCluster) RemoteRooms(context.Context) ([]rooms.RoomDetails, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]rooms.RoomDetails(nil), f.remote...), f.err
}

func (f *fakeCluster) RemoteRoom(_ context.Context, name string) (rooms.RoomDetails, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range f.remote {
		if d.Name == name {
			return d, true, f.err
		}
	}
	return rooms.RoomDetails{}, false, f.err
}

func (f *fakeCluster) Locate(_ context.Context, room string) (string, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.located = append(f.located, room)
	if f.err != nil {
		return "", "", f.err
	}
	node := f.owner[room]
	return node, f.urls[node], nil
}

func (f *fakeCluster) Place(_ context.Context, room string) (string, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.placed = append(f.placed, room)
	if f.placeErr != nil {
		return "", "", f.placeErr
	}
	node := f.owner[room]
	if node == "" {
		node = "here"
	}
	return node, f.urls[node], nil
}

func (f *fakeCluster) Nodes() []NodeStatus { return f.nodes }

// newTestAPI serves an API with its own rooms, and cluster when not nil.
func newTestAPI(t *testing.T, cluster Cluster) (*httptest.Server, *rooms.Manager) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	engine, err := sfu.NewEngine(sfu.Config{ListenIP: "127.0.0.1", IncludeLoopback: true}, log)
	if err != nil {
		t.Fatal(err)
	}
	mgr := rooms.NewManager(rooms.Config{}, engine, log)
	sig, err := signaling.NewServer(signaling.Config{Keys: map[string]string{testKey: testSecret}}, mgr, log)
	if err != nil {
		t.Fatal(err)
	}
	api := New(Config{Rooms: mgr, Bus: events.NewBus(0), Tokens: sig, Log: log, Cluster: cluster})
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { srv.Close(); api.Close(); mgr.Close(); _ = engine.Close() })
	return srv, mgr
}

func token(t *testing.T, room string) string {
	t.Helper()
	tok, err := signaling.MintToken(testKey, testSecret, signaling.TokenSpec{Room: room, Identity: "ops", Grants: rooms.Grants{Admin: true}})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func do(t *testing.T, method, url, tok, body string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestForwarding: an action on a room another node holds goes to that
// node with the same method, path, body and token, marked as forwarded;
// a forwarded request is answered where it arrives; the room's node
// answers as it would itself.
func TestForwarding(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, fmt.Sprintf("%s %s %s %s by=%s", r.Method, r.URL.RequestURI(), body, r.Header.Get("Authorization"), r.Header.Get(forwardedHeader)))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTeapot)
		_, _ = w.Write([]byte(`{"from":"owner"}`))
	}))
	defer owner.Close()
	fc := &fakeCluster{owner: map[string]string{"far": "there", "new": "there"}, urls: map[string]string{"there": owner.URL}}
	srv, _ := newTestAPI(t, fc)
	tok := token(t, "*")

	for _, c := range []struct{ method, path, body string }{
		{"DELETE", "/api/rooms/far", ""},
		{"DELETE", "/api/rooms/far/participants/alice", ""},
		{"PATCH", "/api/rooms/far/participants/alice?x=1", `{"name":"A"}`},
		{"POST", "/api/rooms/far/participants/alice/tracks/TR_1/mute", `{"muted":true}`},
		{"POST", "/api/rooms", `{"name":"new","max_participants":3}`},
	} {
		resp, body := do(t, c.method, srv.URL+c.path, tok, c.body)
		if resp.StatusCode != http.StatusTeapot || body != `{"from":"owner"}` || resp.Header.Get("X-Parley-Node") != "there" {
			t.Errorf("%s %s: %d %s (node %q), want the owner's answer", c.method, c.path, resp.StatusCode, body, resp.Header.Get("X-Parley-Node"))
		}
		mu.Lock()
		last := seen[len(seen)-1]
		mu.Unlock()
		if want := fmt.Sprintf("%s %s %s Bearer %s by=here", c.method, c.path, c.body, tok); last != want {
			t.Errorf("the owner got %q\nwant %q", last, want)
		}
	}
	// A request another node forwarded is never forwarded again.
	n := len(fc.located)
	resp, body := do(t, "DELETE", srv.URL+"/api/rooms/far", tok, "", forwardedHeader, "elsewhere")
	if resp.StatusCode != 404 || len(fc.located) != n {
		t.Fatalf("a forwarded request: %d %s, located %v", resp.StatusCode, body, fc.located)
	}
	resp, body = do(t, "POST", srv.URL+"/api/rooms", tok, `{"name":"new"}`, forwardedHeader, "elsewhere")
	if resp.StatusCode != 201 || !strings.Contains(body, `"node":"here"`) {
		t.Fatalf("a forwarded create is made here: %d %s", resp.StatusCode, body)
	}
	// A room open here is acted on here, whatever the placement says.
	fc.mu.Lock()
	fc.owner["new"] = "there"
	fc.mu.Unlock()
	if resp, body := do(t, "DELETE", srv.URL+"/api/rooms/new", tok, ""); resp.StatusCode != 204 {
		t.Fatalf("closing a room open here: %d %s", resp.StatusCode, body)
	}
	// Token checks come first: a token for another room is refused here.
	if resp, _ := do(t, "DELETE", srv.URL+"/api/rooms/far", token(t, "other"), ""); resp.StatusCode != 403 {
		t.Fatalf("a token for another room: %d", resp.StatusCode)
	}
}

// TestForwardingFailures: a room's node that does not answer, a node
// missing from the registry and a Redis that does not answer each get an
// answer that says so.
func TestForwardingFailures(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + ln.Addr().String()
	ln.Close() // nobody listens there any more
	fc := &fakeCluster{owner: map[string]string{"far": "gone"}, urls: map[string]string{"gone": deadURL}}
	srv, _ := newTestAPI(t, fc)
	tok := token(t, "*")

	start := time.Now()
	resp, body := do(t, "DELETE", srv.URL+"/api/rooms/far", tok, "")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, `"node_unavailable"`) ||
		!strings.Contains(body, `room \"far\" is on node gone (`+deadURL+`), which does not answer`) {
		t.Fatalf("a node that does not answer: %d %s", resp.StatusCode, body)
	}
	if d := time.Since(start); d > forwardTimeout+time.Second {
		t.Fatalf("the answer took %s", d)
	}

	fc.mu.Lock()
	fc.err = fmt.Errorf("%w: dial tcp: connection refused", ErrNodeGone)
	fc.mu.Unlock()
	if resp, body := do(t, "DELETE", srv.URL+"/api/rooms/far", tok, ""); resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "registry") {
		t.Fatalf("a node gone from the registry: %d %s", resp.StatusCode, body)
	}
	fc.mu.Lock()
	fc.err = fmt.Errorf("%w: dial tcp: connection refused", ErrClusterUnavailable)
	fc.placeErr = fmt.Errorf("%w (2 live)", ErrNoNode)
	fc.mu.Unlock()
	if resp, body := do(t, "DELETE", srv.URL+"/api/rooms/far", tok, ""); resp.StatusCode != 503 || !strings.Contains(body, `"cluster_unavailable"`) {
		t.Fatalf("Redis away: %d %s", resp.StatusCode, body)
	}
	if resp, body := do(t, "POST", srv.URL+"/api/rooms", tok, `{"name":"x"}`); resp.StatusCode != 503 || !strings.Contains(body, `"no_node"`) {
		t.Fatalf("every node full: %d %s", resp.StatusCode, body)
	}
	// The listing still shows this node's rooms, and says it is incomplete.
	if resp, body := do(t, "POST", srv.URL+"/api/rooms", tok, `{"name":"mine"}`, forwardedHeader, "x"); resp.StatusCode != 201 {
		t.Fatalf("create here: %d %s", resp.StatusCode, body)
	}
	resp, body = do(t, "GET", srv.URL+"/api/rooms", tok, "")
	var list struct {
		Rooms      []rooms.RoomDetails
		Incomplete string
	}
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &list) != nil || len(list.Rooms) != 1 || list.Rooms[0].Node != "here" ||
		!strings.Contains(list.Incomplete, "only this node's rooms") {
		t.Fatalf("listing with Redis away: %d %s", resp.StatusCode, body)
	}
}

// TestClusterListing: the listing merges this node's rooms (named as
// here) with the others' snapshots, by name, without participants; a
// room's details come from its snapshot; without a cluster nothing
// names a node.
func TestClusterListing(t *testing.T) {
	far := rooms.RoomDetails{Name: "b-far", Node: "there", NumParticipants: 1,
		Participants: []rooms.ParticipantDetails{{Identity: "zed", Metadata: json.RawMessage("null"), Tracks: []rooms.TrackDetails{}}}}
	dup := rooms.RoomDetails{Name: "c-here", Node: "there"} // moving: listed once, as here
	fc := &fakeCluster{remote: []rooms.RoomDetails{far, dup}, nodes: []NodeStatus{{ID: "here"}, {ID: "there", Draining: true}}}
	srv, mgr := newTestAPI(t, fc)
	tok := token(t, "*")
	for _, n := range []string{"c-here", "a-here"} {
		if _, err := mgr.CreateRoom(n, rooms.RoomOptions{EmptyTimeout: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	_, body := do(t, "GET", srv.URL+"/api/rooms", tok, "")
	var list struct{ Rooms []rooms.RoomDetails }
	_ = json.Unmarshal([]byte(body), &list)
	var got []string
	for _, d := range list.Rooms {
		got = append(got, d.Node+"/"+d.Name)
		if d.Participants != nil {
			t.Errorf("%s listed with participants", d.Name)
		}
	}
	if strings.Join(got, ",") != "here/a-here,there/b-far,here/c-here" {
		t.Fatalf("listing %v", got)
	}
	if _, body := do(t, "GET", srv.URL+"/api/rooms", token(t, "b-far"), ""); strings.Contains(body, `-here"`) {
		t.Fatalf("a room-scoped token lists other rooms: %s", body)
	}
	resp, body := do(t, "GET", srv.URL+"/api/rooms/b-far", tok, "")
	if resp.StatusCode != 200 || !strings.Contains(body, `"node":"there"`) || !strings.Contains(body, `"identity":"zed"`) {
		t.Fatalf("another node's room: %d %s", resp.StatusCode, body)
	}
	if resp, body := do(t, "GET", srv.URL+"/api/rooms/a-here", tok, ""); resp.StatusCode != 200 || !strings.Contains(body, `"node":"here"`) {
		t.Fatalf("a room here: %d %s", resp.StatusCode, body)
	}
	if resp, body := do(t, "GET", srv.URL+"/api/nodes", tok, ""); resp.StatusCode != 200 || !strings.Contains(body, `{"id":"there","url":"","started":0,"heartbeat":0,"rooms":0,"participants":0,"tracks":0,"cpu":0,"draining":true}`) {
		t.Fatalf("nodes: %d %s", resp.StatusCode, body)
	}

	alone, amgr := newTestAPI(t, nil)
	if _, err := amgr.CreateRoom("solo", rooms.RoomOptions{EmptyTimeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/api/rooms", "/api/rooms/solo"} {
		if _, body := do(t, "GET", alone.URL+path, tok, ""); strings.Contains(body, `"node"`) || strings.Contains(body, "incomplete") {
			t.Errorf("a single node's %s: %s", path, body)
		}
	}
	if _, body := do(t, "GET", alone.URL+"/api/nodes", tok, ""); strings.TrimSpace(body) != `{"nodes":[]}` {
		t.Errorf("a single node's nodes: %s", body)
	}
}
