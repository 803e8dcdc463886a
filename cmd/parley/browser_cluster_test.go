package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/redis/go-redis/v9"

	"github.com/parley-rtc/parley/internal/redistest"
)

// The cluster browser test: two whole servers share rooms through one real
// redis-server (docs/scaling.md), and real pages open on either node meet
// in one room held by one of them.

// devNode makes a development-mode server a node of the cluster at addr,
// named id.
func devNode(addr, id string) func(*Config) {
	return func(c *Config) {
		c.Redis.Addr = addr
		c.Cluster.NodeID = id
	}
}

// recordBadge makes the page keep every state and text its badge shows
// (window.badges), so that a state shown for a moment is not missed.
const recordBadge = `(window.badges = [], new MutationObserver(() => {
  const b = document.querySelector('#conn-state');
  window.badges.push(b.dataset.state + ': ' + b.textContent);
}).observe(document.querySelector('#conn-state'), {attributes: true, childList: true, characterData: true, subtree: true}), true)`

// TestBrowserTwoNodes: node-a and node-b share one Redis. Alice opens the
// page on node-a, Bob on node-b, in the same room.
//   - one room: the room is placed on one node (Redis says which; that
//     node counts both participants, the other none): the other page's
//     signaling is relayed. Both decode each other's video; chat goes
//     both ways.
//   - room moves: Carol joins through the node that does not hold the
//     room (relayed too), then the room's node is stopped. The two pages
//     relayed through the survivor hear room_moved, show that the room is
//     moving, join again by themselves (new sessions, new peer
//     connections), the room is placed on the survivor, they decode each
//     other again, and a chat message typed during the move arrives once.
//   - relaying node stops: Erin reaches the room through a load balancer
//     (a proxy) and node-c; node-c stops and the balancer sends her to
//     node-d. Her socket closes without a leave, she resumes through
//     node-d (relayed to the room's node): same session, same peer
//     connections, nobody sees her leave.
//   - room of a dead node: Redis says a room is held by a node that
//     registered and died without a word. A page joining it says the room
//     is moving (node_unavailable) and retries until the registration
//     expires, then joins on the survivor.
//   - Redis outage: Redis is stopped. The call on the survivor goes on; a
//     page that joins another room is refused (cluster_unavailable), shows
//     that it waits for the servers and retries with a growing backoff (no
//     tight loop); Redis is back, empty, and the page joins by itself.
func TestBrowserTwoNodes(t *testing.T) {
	requireChromium(t)
	r := redistest.Start(t)
	// The servers before the browser, so that cleanup closes the browser
	// first; stopping a node twice is harmless.
	baseA, addrsA, stopA := launch(t, devNode(r.Addr(), "node-a"))
	t.Cleanup(func() { _ = stopA() })
	baseB, addrsB, stopB := launch(t, devNode(r.Addr(), "node-b"))
	t.Cleanup(func() { _ = stopB() })
	browser := startBrowser(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	const room = "two-nodes"
	const decodeTimeout = 20 * time.Second

	owner := func(room string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		id, err := rdb.Get(ctx, "parley:room:"+room).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatalf("read the owner of %s from Redis: %v", room, err)
		}
		return id
	}
	type node struct {
		id, base string
		addrs    Addrs
		stop     func() error
	}
	nodes := map[string]node{"node-a": {"node-a", baseA, addrsA, stopA}, "node-b": {"node-b", baseB, addrsB, stopB}}
	// participantsOn waits until n's metrics count want participants.
	participantsOn := func(t *testing.T, n node, want float64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := scrape(t, n.addrs)["parley_participants"]
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s counts %v participants, want %v", n.id, got, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	alice := newPage(t, browser, "alice@node-a")
	alice.run(t, 15*time.Second, chromedp.Navigate(deepLink(baseA, room, "Alice")))
	bob := newPage(t, browser, "bob@node-b")
	bob.run(t, 15*time.Second, chromedp.Navigate(deepLink(baseB, room, "Bob")))
	pageOn := map[string]*page{"node-a": alice, "node-b": bob}
	nameOn := map[string]string{"node-a": "Alice", "node-b": "Bob"}

	var holder, survivor node
	if !t.Run("one room", func(t *testing.T) {
		alice.waitFor(t, "alice decodes bob's video", decodingVideos, decodeTimeout, func(v float64) bool { return v >= 1 })
		bob.waitFor(t, "bob decodes alice's video", decodingVideos, decodeTimeout, func(v float64) bool { return v >= 1 })
		keepsDecoding(t, alice, "alice keeps decoding bob", framesDecoded, 10*time.Second)
		keepsDecoding(t, bob, "bob keeps decoding alice", framesDecoded, 10*time.Second)

		id := owner(room)
		h, ok := nodes[id]
		if !ok {
			t.Fatalf("Redis places room %s on %q, want node-a or node-b", room, id)
		}
		holder = h
		for _, n := range nodes {
			if n.id != holder.id {
				survivor = n
			}
		}
		participantsOn(t, holder, 2)
		participantsOn(t, survivor, 0)
		t.Logf("the room is on %s; %s's page is relayed through %s", holder.id, pageOn[survivor.id].name, survivor.id)

		openPanel(t, alice, "chat")
		openPanel(t, bob, "chat")
		sendChat(t, alice, "hello from node-a", false)
		exactlyOnce(t, bob, "hello from node-a", "Alice", 10*time.Second)
		sendChat(t, bob, "hello from node-b", true)
		exactlyOnce(t, alice, "hello from node-b", "Bob", 10*time.Second)
	}) {
		return
	}

	// The pages relayed through the survivor: the first one's, and Carol's.
	moved := pageOn[survivor.id]
	carol := newPage(t, browser, "carol@"+survivor.id)
	if !t.Run("room moves", func(t *testing.T) {
		carol.run(t, 15*time.Second, chromedp.Navigate(deepLink(survivor.base, room, "Carol")))
		carol.waitFor(t, "carol decodes two videos", decodingVideos, decodeTimeout, func(v float64) bool { return v >= 2 })
		openPanel(t, carol, "chat")
		movedSID, carolSID := selfField(t, moved, "sid"), selfField(t, carol, "sid")
		movedID := selfField(t, moved, "identity")
		participantsOn(t, holder, 3)
		for _, p := range []*page{moved, carol} {
			value[bool](t, p, `(window.keptSub = window.parley.subscriberPC, true)`)
			value[bool](t, p, recordBadge)
		}

		stopped := make(chan error, 1)
		start := time.Now()
		go func() { stopped <- holder.stop() }()
		// Typed while the room moves: the outbox sends it once the page
		// is in the room again (or it went out before the move).
		sendChat(t, moved, "while the room moves", false)
		for _, p := range []*page{moved, carol} {
			p.waitTrue(t, "the page joins again as a new session", fmt.Sprintf(`window.parley.state === 'connected' && window.parley.self &&
  ![%q, %q].includes(window.parley.self.sid) && window.parley.subscriberPC !== window.keptSub`, movedSID, carolSID), 20*time.Second)
		}
		if err := <-stopped; err != nil {
			t.Fatalf("%s stopped with %v", holder.id, err)
		}
		for _, p := range []*page{moved, carol} {
			badges := value[string](t, p, `window.badges.join(' | ')`)
			if !strings.Contains(badges, "reconnecting: the room is moving to another server") {
				t.Fatalf("%s never said the room is moving; its badge showed: %s", p.name, badges)
			}
			if !logged(p, "the room moved to another server") {
				t.Fatalf("%s never heard room_moved (leave or error)", p.name)
			}
		}
		newSID := selfField(t, moved, "sid")
		if id := selfField(t, moved, "identity"); id != movedID {
			t.Fatalf("%s joined again as %q, want %q", moved.name, id, movedID)
		}
		moved.waitFor(t, moved.name+" decodes carol's new video", framesOf(selfField(t, carol, "sid"), "camera"), decodeTimeout, func(v float64) bool { return v > 10 })
		carol.waitFor(t, "carol decodes "+moved.name+"'s new video", framesOf(newSID, "camera"), decodeTimeout, func(v float64) bool { return v > 10 })
		t.Logf("both pages decode each other again %d ms after %s was told to stop", time.Since(start).Milliseconds(), holder.id)
		if id := owner(room); id != survivor.id {
			t.Fatalf("after the move Redis places the room on %q, want %s", id, survivor.id)
		}
		participantsOn(t, survivor, 2)
		carol.waitTrue(t, "carol shows one tile per other participant", tiles(`.tile:not(.local)[data-source="camera"]`)+` === 1`, 10*time.Second)
		// Live or in the new room's history (when it went out before Carol
		// was back), but once.
		const text = "while the room moves"
		carol.waitTrue(t, "the message typed during the move arrives", chatEntries(text, "", nameOn[survivor.id])+` >= 1`, 15*time.Second)
		time.Sleep(time.Second)
		if n := value[float64](t, carol, chatEntries(text, "", nameOn[survivor.id])+` + `+chatCount(text)); n != 2 {
			t.Fatalf("carol shows %q %v times in the list and window.parley.chat() together, want once in each", text, n)
		}
		moved.waitTrue(t, moved.name+"'s outbox empties", `window.parley.outbox().length === 0`, 5*time.Second)
	}) {
		return
	}

	if !t.Run("relaying node stops", func(t *testing.T) {
		// Two more nodes, behind a load balancer (a proxy) that sends Erin
		// to node-c first; the room stays on the survivor.
		_, addrsC, stopC := launch(t, devNode(r.Addr(), "node-c"))
		defer stopC()
		_, addrsD, stopD := launch(t, devNode(r.Addr(), "node-d"))
		defer stopD()
		lb := startProxy(t, addrsC.HTTP.String())
		erin := newPage(t, browser, "erin@lb")
		erin.run(t, 15*time.Second, chromedp.Navigate(deepLink(lb.URL(), room, "Erin")))
		erin.waitFor(t, "erin decodes two videos", decodingVideos, decodeTimeout, func(v float64) bool { return v >= 2 })
		erinSID := selfField(t, erin, "sid")
		carol.waitFor(t, "carol decodes erin", framesOf(erinSID, "camera"), decodeTimeout, func(v float64) bool { return v > 0 })
		participantsOn(t, survivor, 3)
		participantsOn(t, node{id: "node-c", addrs: addrsC}, 0)
		value[bool](t, erin, `(window.keptPub = window.parley.publisherPC, window.keptSub = window.parley.subscriberPC, true)`)
		value[bool](t, erin, recordBadge)

		// node-c stops: Erin's socket closes without a leave (1012), the
		// balancer sends her new socket to node-d, which relays her resume
		// to the survivor: same session, same peer connections.
		lb.retarget(addrsD.HTTP.String())
		start := time.Now()
		if err := stopC(); err != nil {
			t.Fatalf("node-c stopped with %v", err)
		}
		erin.waitTrue(t, "erin's socket drops", `window.badges.some((b) => b.startsWith('reconnecting'))`, 10*time.Second)
		erin.waitTrue(t, "erin resumed through node-d", `window.parley.state === 'connected' && window.parley.subscriberPC === window.keptSub &&
  window.parley.publisherPC === window.keptPub`, 15*time.Second)
		if !logged(erin, "the connection to the server dropped\" 1012") {
			t.Fatal("erin's socket did not close with 1012")
		}
		if sid := selfField(t, erin, "sid"); sid != erinSID {
			t.Fatalf("erin is %s after node-c stopped, want her session %s resumed", sid, erinSID)
		}
		if logged(erin, "the room moved to another server") {
			t.Fatal("erin was told the room moved: only the node relaying her socket stopped")
		}
		keepsDecoding(t, erin, "erin decodes still", framesDecoded, 10*time.Second)
		t.Logf("erin resumed %d ms after node-c was told to stop", time.Since(start).Milliseconds())
		if left := departuresOf(t, carol, erinSID); left != "[]" {
			t.Fatalf("carol was told erin left: %s", left)
		}
		erin.run(t, 10*time.Second, chromedp.Click(chromedp.CSS("#btn-leave")))
		participantsOn(t, survivor, 2)
	}) {
		return
	}

	dave := newPage(t, browser, "dave@"+survivor.id)
	if !t.Run("room of a dead node", func(t *testing.T) {
		// A node that registered, holds a room, and stopped without a
		// word: its registration lives until its TTL runs out, and it
		// listens to no pipe.
		const ghostRoom = "two-nodes-ghost"
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		const ttl = 3 * time.Second
		if err := rdb.Set(ctx, "parley:node:ghost", `{"id":"ghost"}`, ttl).Err(); err != nil {
			t.Fatal(err)
		}
		if err := rdb.Set(ctx, "parley:room:"+ghostRoom, "ghost", 0).Err(); err != nil {
			t.Fatal(err)
		}
		died := time.Now()
		dave.run(t, 15*time.Second, chromedp.Navigate(deepLink(survivor.base, ghostRoom, "Dave")))
		value[bool](t, dave, recordBadge)
		dave.waitTrue(t, "dave says the room is moving, with Retry now", `window.parley.state === 'reconnecting' &&
  document.querySelector('#conn-state').textContent === 'the room is moving to another server…' && !document.querySelector('#btn-retry').hidden`, 10*time.Second)
		dave.waitTrue(t, "dave joins by himself once the dead node's registration expired", `window.parley.state === 'connected' && window.parley.self`, 20*time.Second)
		if d := time.Since(died); d < ttl-200*time.Millisecond {
			t.Fatalf("dave joined %s after the ghost registered, before its registration (%s) expired", d, ttl)
		}
		if n := countLogged(dave, "node_unavailable"); n < 1 {
			t.Fatal("dave was never refused with node_unavailable")
		}
		t.Logf("dave joined %d ms after the dead node's last heartbeat (TTL %s), refused %d times before", time.Since(died).Milliseconds(), ttl, countLogged(dave, "node_unavailable"))
		if id := owner(ghostRoom); id != survivor.id {
			t.Fatalf("Redis places %s on %q, want %s", ghostRoom, id, survivor.id)
		}
	}) {
		return
	}

	t.Run("Redis outage", func(t *testing.T) {
		const other = "two-nodes-outage"
		r.Stop()
		// The call on the survivor needs no Redis.
		keepsDecoding(t, carol, "carol decodes during the outage", framesDecoded, 10*time.Second)
		before := countLogged(dave, "cluster_unavailable")
		dave.run(t, 15*time.Second, chromedp.Navigate(deepLink(survivor.base, other, "Dave")))
		value[bool](t, dave, recordBadge)
		dave.waitTrue(t, "dave waits for the servers, with Retry now", `window.parley.state === 'reconnecting' &&
  document.querySelector('#conn-state').textContent === 'waiting for the servers…' && !document.querySelector('#btn-retry').hidden &&
  document.querySelector('#message').textContent.includes('Trying again')`, 10*time.Second)
		// Attempts 0.5-1 s, 1-2 s, 2-4 s, 4-8 s apart: in 5 s at most
		// four refusals (a tight loop would make hundreds), at least two.
		first := time.Now()
		time.Sleep(5 * time.Second)
		refusals := countLogged(dave, "cluster_unavailable") - before
		t.Logf("dave was refused %d times in the first %s of the outage", refusals, time.Since(first).Round(time.Millisecond))
		if refusals < 2 || refusals > 5 {
			t.Fatalf("dave was refused %d times in 5 s, want 2-5 (a backoff of 0.5-1, 1-2, 2-4 s)", refusals)
		}
		// Between two refusals: an attempt is scheduled, or under way (the
		// node waits for Redis before it refuses) and the next one is
		// scheduled when it is refused. The page never gives up.
		dave.waitTrue(t, "dave has an attempt scheduled", `window.parley.retryIn >= 0`, 10*time.Second)

		r.Restart()
		back := time.Now()
		dave.waitTrue(t, "dave joins by himself once Redis is back", `window.parley.state === 'connected' && window.parley.self`, 20*time.Second)
		t.Logf("dave joined %d ms after Redis came back", time.Since(back).Milliseconds())
		if id := owner(other); id != survivor.id {
			t.Fatalf("Redis places %s on %q, want %s", other, id, survivor.id)
		}
		if msg := value[string](t, dave, `document.querySelector('#message').hidden ? '' : document.querySelector('#message').textContent`); msg != "" {
			t.Fatalf("dave still shows %q after joining", msg)
		}
		keepsDecoding(t, carol, "carol still decodes", framesDecoded, 10*time.Second)
	})
}

// logged reports whether the page's console output contains s.
func logged(p *page, s string) bool { return countLogged(p, s) > 0 }

// countLogged counts the page's console lines that contain s.
func countLogged(p *page, s string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.logs {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}
