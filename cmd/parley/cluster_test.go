package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/parley-rtc/parley/internal/redistest"
	"github.com/parley-rtc/parley/loadtest"
)

// TestMain lets a test start this binary as a whole server in its own
// process (childServe), so that it can be killed with SIGKILL.
func TestMain(m *testing.M) {
	if args := os.Getenv("PARLEY_TEST_CHILD_ARGS"); args != "" {
		var list []string
		if err := json.Unmarshal([]byte(args), &list); err != nil {
			panic(err)
		}
		os.Exit(realMain(list, os.Getenv, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// hostAddr is a host:port as a net.Addr, for joinPeer.
type hostAddr string

func (a hostAddr) Network() string { return "tcp" }
func (a hostAddr) String() string  { return string(a) }

// roomOwner reads the room's node from Redis.
func roomOwner(t *testing.T, rdb *redis.Client, room string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	owner, err := rdb.Get(ctx, "parley:room:"+room).Result()
	if err != nil && err != redis.Nil {
		t.Fatal(err)
	}
	return owner
}

// nodeIDs maps each launched node's HTTP address to its cluster id, read
// from the registry.
func nodeIDs(t *testing.T, rdb *redis.Client, want int) map[string]string {
	t.Helper()
	out := map[string]string{}
	eventually(t, 5*time.Second, fmt.Sprintf("%d nodes registered", want), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ids, err := rdb.SMembers(ctx, "parley:nodes").Result()
		if err != nil {
			return false
		}
		for _, id := range ids {
			raw, err := rdb.Get(ctx, "parley:node:"+id).Result()
			if err != nil {
				continue
			}
			var info struct{ URL string }
			if json.Unmarshal([]byte(raw), &info) == nil {
				out[strings.TrimPrefix(info.URL, "http://")] = id
			}
		}
		return len(out) >= want
	})
	return out
}

// roster is the identities p saw in the room: the joined list and every
// participant_joined, less those that left.
func (p *peer) roster() map[string]bool {
	out := map[string]bool{}
	for _, raw := range p.messages("joined") {
		var j struct {
			Participants []struct{ Identity string }
		}
		_ = json.Unmarshal(raw, &j)
		for _, x := range j.Participants {
			out[x.Identity] = true
		}
	}
	for _, raw := range p.messages("participant_joined") {
		var j struct{ Participant struct{ Identity string } }
		_ = json.Unmarshal(raw, &j)
		out[j.Participant.Identity] = true
	}
	for _, raw := range p.messages("participant_left") {
		var l struct{ Identity string }
		_ = json.Unmarshal(raw, &l)
		delete(out, l.Identity)
	}
	return out
}

// receiving waits until every peer's received count grows by at least n.
func receiving(t *testing.T, within time.Duration, n int64, peers ...*peer) {
	t.Helper()
	base := make([]int64, len(peers))
	for i, p := range peers {
		base[i] = p.received.Load()
	}
	eventually(t, within, "media flows to every participant", func() bool {
		for i, p := range peers {
			if p.received.Load()-base[i] < n {
				return false
			}
		}
		return true
	})
}

// TestClusterThreeNodes: participants whose WebSockets reach three
// different nodes join one room, which lives on one node; they see the
// same roster, exchange media and chat. Many rooms opened through one node are
// spread over the three.
func TestClusterThreeNodes(t *testing.T) {
	r := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer rdb.Close()
	var addrs []Addrs
	for range 3 {
		_, a, stop := launch(t, inCluster(r.Addr(), ""))
		defer stop()
		addrs = append(addrs, a)
	}
	ids := nodeIDs(t, rdb, 3)

	var peers []*peer
	for i, a := range addrs {
		id := fmt.Sprintf("p%d", i)
		p, ok := joinPeer(t, a.HTTP, "shared", id, mint(t, "shared", id, participantGrants))
		if !ok {
			t.Fatalf("%s on node %d: %s", id, i, p.messages("error"))
		}
		p.publishAudio()
		peers = append(peers, p)
	}
	owner := roomOwner(t, rdb, "shared")
	if owner == "" {
		t.Fatal("the room is not placed in Redis")
	}
	for _, a := range addrs {
		st := scrape(t, a)
		want := 0.0
		if ids[a.HTTP.String()] == owner {
			want = 3
		}
		if got := st["parley_participants"]; got != want {
			t.Errorf("node %s (%s) holds %v participants, want %v (the room is on %s)", a.HTTP, ids[a.HTTP.String()], got, want, owner)
		}
		// Two sockets relayed: each relaying node has one pipe, the
		// room's node two.
		wantPipes := 1.0
		if want == 3 {
			wantPipes = 2
		}
		eventually(t, 3*time.Second, "every node's registry read lists 3 nodes", func() bool { return scrape(t, a)["parley_cluster_nodes"] == 3 })
		if st["parley_cluster_redis_up"] != 1 || st["parley_cluster_relayed_sessions"] != wantPipes {
			t.Errorf("node %s cluster metrics: redis_up %v, relayed %v (want 1, %v)", a.HTTP,
				st["parley_cluster_redis_up"], st["parley_cluster_relayed_sessions"], wantPipes)
		}
	}
	eventually(t, 10*time.Second, "every roster lists the three", func() bool {
		for _, p := range peers {
			ro := p.roster()
			for _, q := range peers {
				if q != p && !ro[q.identity] {
					return false
				}
			}
		}
		return true
	})
	// Two audio tracks of 50 packets a second reach each participant.
	receiving(t, 15*time.Second, 150, peers...)
	// Chat from the participant on each node reaches the other two.
	for i, p := range peers {
		id := fmt.Sprintf("hello-from-%d-%d", i, time.Now().UnixNano())
		watchChat(p).send(t, `{"type":"chat","id":"`+id+`","text":"hi"}`)
		for _, q := range peers {
			if q != p {
				watchChat(q).wait(t, "chat", id)
			}
		}
	}
	// What relaying costs a signaling round trip (logged, not asserted:
	// the machine is shared).
	for i, p := range peers {
		how := "relayed"
		if ids[addrs[i].HTTP.String()] == owner {
			how = "direct"
		}
		t.Logf("%s (%s): signaling round trip median %s", p.identity, how, p.pingRTT(t, 20))
	}

	// Rooms opened through one node spread over the nodes by load: the
	// two idle ones take them before the one forwarding six tracks.
	counts := map[string]int{}
	for i := range 5 {
		room := fmt.Sprintf("spread-%d", i)
		p, ok := joinPeer(t, addrs[0].HTTP, room, "x", mint(t, room, "x", participantGrants))
		if !ok {
			t.Fatalf("%s: %s", room, p.messages("error"))
		}
		counts[roomOwner(t, rdb, room)]++
	}
	for _, id := range ids {
		if id != owner && (counts[id] < 2 || counts[id] > 3) {
			t.Errorf("new rooms per node %v (%s holds the busy room): want 2-3 on each idle node", counts, owner)
			break
		}
	}
}

// TestClusterRedisOutage: with Redis stopped, a call in progress goes on,
// a join that needs Redis gets cluster_unavailable, /readyz says why, and
// once Redis is back joins work again without restarting a node.
func TestClusterRedisOutage(t *testing.T) {
	r := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer rdb.Close()
	baseA, a, stopA := launch(t, inCluster(r.Addr(), ""))
	defer stopA()
	baseB, b, stopB := launch(t, inCluster(r.Addr(), ""))
	defer stopB()
	nodeIDs(t, rdb, 2)
	pa, ok := joinPeer(t, a.HTTP, "call", "pa", mint(t, "call", "pa", participantGrants))
	if !ok {
		t.Fatal(pa.messages("error"))
	}
	pb, ok := joinPeer(t, b.HTTP, "call", "pb", mint(t, "call", "pb", participantGrants))
	if !ok {
		t.Fatal(pb.messages("error"))
	}
	pa.publishAudio()
	pb.publishAudio()
	receiving(t, 15*time.Second, 50, pa, pb)
	owner := roomOwner(t, rdb, "call")
	ownerBase, ownerAddr := baseA, a.HTTP
	if resp, body := get(t, baseB+"/readyz"); resp.StatusCode == 200 && strings.Contains(body, "ready") && owner != "" {
		ids := nodeIDs(t, rdb, 2)
		if ids[b.HTTP.String()] == owner {
			ownerBase, ownerAddr = baseB, b.HTTP
		}
	}

	r.Stop()
	outage := time.Now()
	eventually(t, 5*time.Second, "/readyz reports Redis", func() bool {
		resp, body := get(t, baseA+"/readyz")
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(body, "Redis")
	})
	// The call goes on, both ways (one of them relayed).
	receiving(t, 10*time.Second, 100, pa, pb)
	if pa.isClosed() || pb.isClosed() {
		t.Fatal("a socket closed during the Redis outage")
	}
	// A new room cannot be placed: a clear, documented error.
	px, ok := joinPeer(t, a.HTTP, "new-room", "px", mint(t, "new-room", "px", participantGrants))
	if ok {
		t.Fatal("joined a new room while Redis was down")
	}
	if errs := px.messages("error"); len(errs) == 0 || !strings.Contains(string(errs[0]), "cluster_unavailable") {
		t.Fatalf("join without Redis: %s", errs)
	}
	// The room's own node still takes joins to it.
	pc, ok := joinPeer(t, ownerAddr, "call", "pc", mint(t, "call", "pc", participantGrants))
	if !ok {
		t.Fatalf("join to the room on its own node without Redis: %s", pc.messages("error"))
	}
	t.Logf("outage checks took %s", time.Since(outage).Round(time.Millisecond))

	r.Restart()
	eventually(t, 10*time.Second, "/readyz ready again", func() bool {
		resp, _ := get(t, ownerBase+"/readyz")
		return resp.StatusCode == http.StatusOK
	})
	var joined bool
	eventually(t, 10*time.Second, "a new room joinable again", func() bool {
		p, ok := joinPeer(t, a.HTTP, "after", "py", mint(t, "after", "py", participantGrants))
		p.close()
		joined = ok
		return ok
	})
	if !joined || roomOwner(t, rdb, "after") == "" {
		t.Fatal("room after the outage not placed")
	}
	if got := roomOwner(t, rdb, "call"); got != owner {
		t.Fatalf("the call's room is on %q after the outage, was %q (re-claimed by its node)", got, owner)
	}
	receiving(t, 10*time.Second, 50, pa, pb)
}

// child is a server in its own process.
type child struct {
	cmd  *exec.Cmd
	addr string // host:port of HTTP
	mu   sync.Mutex
	log  strings.Builder
}

var runningAt = regexp.MustCompile(`Parley is running: open https?://([^/]+)/`)

// childServe starts this test binary as `parley serve` with args.
func childServe(t *testing.T, args ...string) *child {
	t.Helper()
	list, _ := json.Marshal(append([]string{"serve"}, args...))
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PARLEY_TEST_CHILD_ARGS="+string(list))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() || os.Getenv("PARLEY_TEST_DEBUG") != "" {
			c.mu.Lock()
			t.Logf("server %s log:\n%s", c.addr, c.log.String())
			c.mu.Unlock()
		}
	})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			c.log.WriteString(line + "\n")
			c.mu.Unlock()
			if m := runningAt.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case c.addr = <-found:
	case <-time.After(20 * time.Second):
		t.Fatal("child server did not start within 20s")
	}
	return c
}

// TestClusterNodeKilled: kill -9 of the node holding a room. Its
// participants, whether their sockets were on it or relayed through the
// others, are back in the room on a live node, exchanging media, within
// 15 s; the chat history is intact.
func TestClusterNodeKilled(t *testing.T) {
	r := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer rdb.Close()
	var nodes []*child
	for range 3 {
		nodes = append(nodes, childServe(t, "--http.listen", "127.0.0.1:0", "--rtc.udp_port", "0", "--rtc.tcp_port", "-1",
			"--rtc.listen_ip", "127.0.0.1", "--metrics.listen", "", "--redis.addr", r.Addr(), "--keys", opsKey+":"+opsSecret,
			"--log.level", "debug"))
	}
	ids := nodeIDs(t, rdb, 3)
	tokens := map[string]string{}
	connect := func(id string, addr string) (*peer, bool) {
		if tokens[id] == "" {
			tokens[id] = mint(t, "survive", id, participantGrants)
		}
		return joinPeer(t, hostAddr(addr), "survive", id, tokens[id])
	}
	peers := map[string]*peer{}
	for i, n := range nodes {
		id := fmt.Sprintf("p%d", i)
		p, ok := connect(id, n.addr)
		if !ok {
			t.Fatalf("%s: %s", id, p.messages("error"))
		}
		p.publishAudio()
		peers[id] = p
	}
	all := func() []*peer {
		var out []*peer
		for _, p := range peers {
			out = append(out, p)
		}
		return out
	}
	receiving(t, 15*time.Second, 100, all()...)
	chat := fmt.Sprintf("p1-%d", time.Now().UnixNano())
	watchChat(peers["p1"]).send(t, `{"type":"chat","id":"`+chat+`","text":"before the crash"}`)
	watchChat(peers["p0"]).wait(t, "chat", chat)
	owner := roomOwner(t, rdb, "survive")
	var victim *child
	var survivors []*child
	for _, n := range nodes {
		if ids[n.addr] == owner {
			victim = n
		} else {
			survivors = append(survivors, n)
		}
	}
	if victim == nil {
		t.Fatalf("room on %q, not one of %v", owner, ids)
	}

	_ = victim.cmd.Process.Signal(syscall.SIGKILL)
	killed := time.Now()
	// Each participant notices (its socket dropped, or its relaying node
	// says room_moved) and joins again through a surviving node, as the
	// demo page does, retrying while the room is being re-placed.
	var wg sync.WaitGroup
	var mu sync.Mutex
	back := map[string]time.Duration{}
	fresh := map[string]*peer{}
	for id, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.Now().Add(15 * time.Second)
			for !p.isClosed() && !p.hasLeave("room_moved") && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			t.Logf("%s: noticed after %s (socket closed %v)", id, time.Since(killed).Round(time.Millisecond), p.isClosed())
			go p.close()
			for attempt := 0; time.Now().Before(deadline); attempt++ {
				n := survivors[attempt%len(survivors)]
				q, ok := tryJoin(n.addr, "survive", id, tokens[id])
				if q != nil && !ok && attempt == 0 {
					t.Logf("%s: attempt %d after %s: %s", id, attempt, time.Since(killed).Round(time.Millisecond), q.messages("error"))
				}
				if ok {
					mu.Lock()
					fresh[id] = q
					back[id] = time.Since(killed)
					mu.Unlock()
					return
				}
				time.Sleep(300 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if len(back) != len(peers) {
		t.Fatalf("rejoined within 15s: %v", back)
	}
	peers = fresh
	for _, p := range peers {
		p.t = t
		t.Cleanup(p.close)
		p.publishAudio()
	}
	receiving(t, 15*time.Second-time.Since(killed), 50, all()...)
	t.Logf("after kill -9 of %s: rejoined %v; media again %s after the kill", owner, back, time.Since(killed).Round(time.Millisecond))
	newOwner := roomOwner(t, rdb, "survive")
	if newOwner == owner || newOwner == "" {
		t.Fatalf("room on %q after its node %q died", newOwner, owner)
	}
	watchChat(peers["p2"]).wait(t, "history", chat)
}

// tryJoin joins, or reports false (refused, or no answer) for a retry.
func tryJoin(addr, room, identity, token string) (*peer, bool) {
	p, ok, err := dialPeer(addr, room, identity, token)
	if err != nil {
		return nil, false
	}
	if !ok {
		p.close()
	}
	return p, ok
}

// launchDrainable is launch with a drain channel (SIGTERM); done is
// closed when run returns.
func launchDrainable(t *testing.T, overrides ...func(*Config)) (a Addrs, drain chan struct{}, done chan struct{}) {
	t.Helper()
	cfg := testConfig(overrides...)
	ctx, cancel := context.WithCancel(context.Background())
	drain = make(chan struct{})
	ready := make(chan Addrs, 1)
	done = make(chan struct{})
	var runErr error
	go func() { runErr = run(ctx, cfg, testLogger(), func(a Addrs) { ready <- a }, drain); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
			if runErr != nil {
				t.Errorf("server: %v", runErr)
			}
		case <-time.After(20 * time.Second):
			t.Error("server did not stop")
		}
	})
	select {
	case a = <-ready:
	case <-done:
		t.Fatalf("server did not start: %v", runErr)
	}
	return a, drain, done
}

// TestClusterDrain: a draining node (SIGTERM) takes no new rooms and
// moves its rooms' participants (leave room_moved; they join again and
// land on the other node), and a session it only relayed survives: the
// client's socket closes with 1012 and a resume through the other node
// finds the session.
func TestClusterDrain(t *testing.T) {
	r := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer rdb.Close()
	opts := []func(*Config){inCluster(r.Addr(), ""), func(c *Config) { c.DrainTimeout = 5 * time.Second }}
	a0, drain0, done0 := launchDrainable(t, opts...)
	a1, drain1, done1 := launchDrainable(t, opts...)
	ids := nodeIDs(t, rdb, 2)
	join := func(a Addrs, room, id string) *peer {
		p, ok := joinPeer(t, a.HTTP, room, id, mint(t, room, id, participantGrants))
		if !ok {
			t.Fatalf("%s: %s", id, p.messages("error"))
		}
		return p
	}
	first := join(a0, "moving", "m0")
	x := roomOwner(t, rdb, "moving")
	ax, ay, drainX, doneX := a0, a1, drain0, done0
	if ids[a1.HTTP.String()] == x {
		ax, ay, drainX, doneX = a1, a0, drain1, done1
	}
	second := join(ay, "moving", "m1")
	if roomOwner(t, rdb, "staying") != "" {
		t.Fatal("staying placed already")
	}
	stayer := join(ay, "staying", "s0") // placed on the less loaded node, y
	if y := roomOwner(t, rdb, "staying"); y == x {
		t.Fatalf("second room also on %s", x)
	}
	relayed := join(ax, "staying", "s1") // its socket on x, its room on y
	var resume struct {
		ResumeToken string `json:"resume_token"`
	}
	_ = json.Unmarshal(relayed.messages("joined")[0], &resume)

	close(drainX)
	for _, p := range []*peer{first, second} {
		eventually(t, 5*time.Second, p.identity+" told to move", func() bool { return p.hasLeave("room_moved") })
	}
	// Joining again lands on y, the node that does not drain.
	again := join(ay, "moving", "m0")
	if got := roomOwner(t, rdb, "moving"); got == x || got == "" {
		t.Fatalf("moving re-placed on %q, the draining node is %s", got, x)
	}
	again.close()
	select {
	case <-doneX:
	case <-time.After(10 * time.Second):
		t.Fatal("the draining node did not stop once its rooms moved")
	}
	// It left the registry on its way out, without waiting for its TTL.
	if n, err := rdb.Exists(context.Background(), "parley:node:"+x).Result(); err != nil || n != 0 {
		t.Fatalf("stopped node %s still registered: %v %v", x, n, err)
	}
	// The relayed session lives on y: its socket was closed without a
	// leave, and a resume through y takes it over.
	eventually(t, 5*time.Second, "relayed socket closed", relayed.isClosed)
	if relayed.hasLeave("server_shutdown") || relayed.hasLeave("room_moved") {
		t.Fatal("a session relayed through the stopping node was ended")
	}
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+ay.HTTP.String()+"/rtc", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.WriteJSON(map[string]any{"type": "resume", "data": map[string]any{"token": resume.ResumeToken, "protocol": 1}})
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var m wsMsg
	if err := ws.ReadJSON(&m); err != nil || m.Type != "resumed" {
		t.Fatalf("resume through the other node: %v %s %s", err, m.Type, m.Data)
	}
	if stayer.isClosed() {
		t.Fatal("the participant on the other node lost its session")
	}
}

// pingRTT sends n pings, one at a time, and returns the median time to
// their pongs.
func (p *peer) pingRTT(t *testing.T, n int) time.Duration {
	t.Helper()
	var rtts []time.Duration
	for range n {
		before := len(p.messages("pong"))
		start := time.Now()
		p.send("ping", map[string]any{"ts": start.UnixMilli()})
		for len(p.messages("pong")) == before {
			if time.Since(start) > 5*time.Second {
				t.Fatal("no pong within 5s")
			}
			time.Sleep(100 * time.Microsecond)
		}
		rtts = append(rtts, time.Since(start))
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2].Round(10 * time.Microsecond)
}

// TestLoadtestCluster: parley loadtest --nodes spreads its clients over
// two nodes; every client connects and media crosses the cluster (half
// the sockets relayed) without loss.
func TestLoadtestCluster(t *testing.T) {
	r := redistest.Start(t)
	base0, _ := startServer(t, inCluster(r.Addr(), ""))
	base1, _ := startServer(t, inCluster(r.Addr(), ""))
	cfg := loadtest.Config{URL: base0, Nodes: []string{base1}, Rooms: 2, Publishers: 1, Subscribers: 3, VideoBitrate: 300_000,
		Audio: true, Duration: 3 * time.Second, Key: opsKey, Secret: opsSecret, Loopback: true}
	rep := runClean(t, cfg, 8)
	t.Logf("2 nodes: join p50 %.1f ms p95 %.1f ms; %d packets, loss %.3f%%, latency p50 %.2f ms p99 %.2f ms",
		rep.JoinMS.P50, rep.JoinMS.P95, rep.PacketsReceived, 100*rep.LossRatio, rep.LatencyMS.P50, rep.LatencyMS.P99)
}
