package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The browser tests drive real headless Chromium tabs (the demo page in
// web/static) against a whole Parley server. Run them in a network namespace
// that has only loopback, so ICE can use nothing but 127.0.0.1:
//
//	go test -c -o /dev/null ./cmd/parley/ # fetch modules first
//	unshare -n sh -c 'ip link set lo up && go test -race -run Browser -v ./cmd/parley/'

const chromiumPath = "/usr/bin/chromium"

// browserFlags are exactly the flags the browser runs with: headless, fake
// camera, microphone and screen, and loopback ICE candidates.
var browserFlags = []string{
	"headless", "no-sandbox", "disable-gpu", "disable-quic", "no-first-run",
	"disable-background-networking", "disable-component-update", "disable-sync",
	"allow-loopback-in-peer-connection", "use-fake-device-for-media-stream", "use-fake-ui-for-media-stream",
}

// requireChromium skips the test without Chromium, or fails it when CI=true.
func requireChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("browser test needs %s: %v", chromiumPath, err)
		}
		t.Skipf("browser test skipped: %s not found (install chromium)", chromiumPath)
	}
}

// startBrowser starts one Chromium for the test and returns a context whose
// children are tabs. It skips (or, with CI=true, fails) without Chromium.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	requireChromium(t)
	opts := []chromedp.ExecAllocatorOption{chromedp.ExecPath(chromiumPath), chromedp.UserDataDir(t.TempDir())}
	for _, f := range browserFlags {
		opts = append(opts, chromedp.Flag(f, true))
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	// The first run starts the browser and must not carry a timeout (the
	// timeout would stop the browser); a watchdog bounds it instead.
	watchdog := time.AfterFunc(30*time.Second, cancelBrowser)
	defer watchdog.Stop()
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// page is one browser tab; it keeps the tab's console output, shown when
// the test fails.
type page struct {
	name  string
	ctx   context.Context
	close context.CancelFunc // closes the tab

	mu   sync.Mutex
	logs []string
}

func newPage(t *testing.T, browser context.Context, name string) *page {
	t.Helper()
	p := &page{name: name}
	listen := func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			var b strings.Builder
			for _, a := range ev.Args {
				b.WriteString(" ")
				if a.Value != nil {
					b.Write(a.Value)
				} else {
					b.WriteString(a.Description)
				}
			}
			p.log(fmt.Sprintf("console.%s:%s", ev.Type, b.String()))
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			p.log(fmt.Sprintf("exception: %s (%s:%d)", msg, d.URL, d.LineNumber+1))
		}
	}
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithListener(listen))
	p.ctx, p.close = ctx, cancel
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		t.Fatalf("%s: open tab: %v", name, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			p.mu.Lock()
			t.Logf("%s: browser console:\n  %s", name, strings.Join(p.logs, "\n  "))
			p.mu.Unlock()
		}
		cancel()
	})
	return p
}

func (p *page) log(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.logs) < 500 {
		p.logs = append(p.logs, time.Now().Format("15:04:05.000")+" "+s)
	}
}

// run runs actions on the tab, bounded by timeout.
func (p *page) run(t *testing.T, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
}

// eval evaluates a JavaScript expression, awaiting a promise.
func eval[T any](ctx context.Context, expr string) (T, error) {
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// waitFor polls a numeric JavaScript expression until ok accepts it.
func (p *page) waitFor(t *testing.T, what, expr string, timeout time.Duration, ok func(float64) bool) float64 {
	t.Helper()
	return poll(t, p, what, expr, timeout, ok)
}

// poll evaluates a JavaScript expression every 20 ms until ok accepts its
// value, and returns that value; it fails the test after timeout, saying
// the last value and the page's connection state.
func poll[T any](t *testing.T, p *page, what, expr string, timeout time.Duration, ok func(T) bool) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	var last T
	var lastErr error
	for {
		v, err := eval[T](ctx, expr)
		if err == nil {
			last = v
			if ok(v) {
				return v
			}
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(p.ctx, 2*time.Second)
			state, _ := eval[string](sctx, `String(window.parley && window.parley.state)`)
			cancel()
			t.Fatalf("%s: %s: not after %s (last value %+v, last error %v, page state %q)", p.name, what, timeout, last, lastErr, state)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// decodingVideos counts the subscriber connection's inbound video streams
// that have decoded at least one frame, from RTCPeerConnection.getStats().
const decodingVideos = `(async () => {
  const pc = window.parley && window.parley.subscriberPC;
  if (!pc) return 0;
  const stats = await pc.getStats();
  let n = 0;
  stats.forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video' && r.framesDecoded > 0) n++; });
  return n;
})()`

// framesDecoded sums framesDecoded over the subscriber's inbound video.
// remoteOutbound counts the subscriber connection's remote-outbound-rtp
// stats with a sender report in them (one per track the server reports on).
const remoteOutbound = `(async () => {
  const pc = window.parley && window.parley.subscriberPC;
  if (!pc) return 0;
  const stats = await pc.getStats();
  let n = 0;
  stats.forEach((r) => { if (r.type === 'remote-outbound-rtp' && r.reportsSent > 0 && r.packetsSent > 0) n++; });
  return n;
})()`

// outgoingEstimate is the publisher connection's bandwidth estimate
// (availableOutgoingBitrate of its selected candidate pair, bit/s).
const outgoingEstimate = `(async () => {
  const pc = window.parley && window.parley.publisherPC;
  if (!pc) return 0;
  const stats = await pc.getStats();
  let v = 0;
  stats.forEach((r) => { if (r.type === 'candidate-pair' && r.nominated && r.availableOutgoingBitrate > v) v = r.availableOutgoingBitrate; });
  return v;
})()`

// remoteInbound counts the publisher connection's kinds (audio, video)
// with a remote-inbound-rtp entry, which only receiver reports make, that
// has a round-trip time, which needs their LSR to answer the browser's
// sender reports.
const remoteInbound = `(async () => {
  const pc = window.parley && window.parley.publisherPC;
  if (!pc) return 0;
  const stats = await pc.getStats();
  const kinds = new Set();
  stats.forEach((r) => { if (r.type === 'remote-inbound-rtp' && r.packetsLost !== undefined && r.roundTripTime > 0) kinds.add(r.kind); });
  return kinds.size;
})()`

const framesDecoded = `(async () => {
  const pc = window.parley && window.parley.subscriberPC;
  if (!pc) return 0;
  const stats = await pc.getStats();
  let n = 0;
  stats.forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded || 0; });
  return n;
})()`

// dropSockets closes every WebSocket of the page from the client side, as a
// network failure would, and returns how many it closed. The page keeps its
// socket private, so this finds them through the DevTools heap query.
func dropSockets(t *testing.T, p *page) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	n, err := chromedp.Run(ctx, func(ctx context.Context, tg *chromedp.Target) (int, error) {
		proto, err := cdp.Call(ctx, tg, runtime.Evaluate, runtime.EvaluateParams{Expression: "WebSocket.prototype"})
		if err != nil {
			return 0, err
		}
		found, err := cdp.Call(ctx, tg, runtime.QueryObjects, runtime.QueryObjectsParams{PrototypeObjectID: proto.Result.ObjectID})
		if err != nil {
			return 0, err
		}
		byValue := true
		res, err := cdp.Call(ctx, tg, runtime.CallFunctionOn, runtime.CallFunctionOnParams{
			FunctionDeclaration: `function () { this.forEach((ws) => ws.close(4000, 'test drops the socket')); return this.length; }`,
			ObjectID:            found.Objects.ObjectID,
			ReturnByValue:       &byValue,
		})
		if err != nil {
			return 0, err
		}
		var n int
		err = json.Unmarshal(res.Result.Value, &n)
		return n, err
	})
	if err != nil {
		t.Fatalf("%s: drop the WebSocket: %v", p.name, err)
	}
	return n
}

// shot saves a screenshot of the tab to $PARLEY_BROWSER_SHOTS/name.png,
// when that variable names a directory.
func shot(t *testing.T, p *page, name string) {
	dir := os.Getenv("PARLEY_BROWSER_SHOTS")
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644)
	}
	if err != nil {
		t.Logf("screenshot %s: %v", name, err)
	}
}

// tiles counts the tiles matching a CSS selector.
func tiles(selector string) string {
	return fmt.Sprintf(`document.querySelectorAll(%q).length`, selector)
}

func deepLink(base, room, name string) string {
	q := url.Values{"room": {room}, "name": {name}}
	return base + "/?" + q.Encode()
}

func selfField(t *testing.T, p *page, field string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	v, err := eval[string](ctx, fmt.Sprintf(`String(window.parley.self && window.parley.self.%s || '')`, field))
	if err != nil || v == "" {
		t.Fatalf("%s: window.parley.self.%s: %q, %v", p.name, field, v, err)
	}
	return v
}

// TestBrowserCall: two tabs meet in one room and see each other; one
// shares its screen, which the other decodes as a second video; then it
// leaves and disappears from the other tab.
func TestBrowserCall(t *testing.T) {
	requireChromium(t)
	// The server first, so that cleanup closes the browser (and its pooled
	// HTTP connections) before the server shuts down.
	base, a := startServer(t)
	browser := startBrowser(t)
	const room = "browser-call"
	const decodeTimeout = 20 * time.Second

	alice := newPage(t, browser, "alice")
	alice.run(t, 15*time.Second, chromedp.Navigate(deepLink(base, room, "Alice")))
	alice.waitFor(t, "alice joined and publishes", `window.parley && window.parley.publisherPC && window.parley.publisherPC.connectionState === 'connected' ? 1 : 0`,
		decodeTimeout, func(v float64) bool { return v == 1 })
	aliceSID := selfField(t, alice, "sid")

	bob := newPage(t, browser, "bob")
	start := time.Now()
	bob.run(t, 15*time.Second, chromedp.Navigate(deepLink(base, room, "Bob")))
	bob.waitFor(t, "bob decodes alice's video", decodingVideos, decodeTimeout, func(v float64) bool { return v >= 1 })
	t.Logf("bob joined and decoded alice's video in %d ms (cold browser)", time.Since(start).Milliseconds())
	// Chromium decrypts the direct path's SRTP (both subscriber
	// connections are on it) and takes Parley's sender reports: it has a
	// remote-outbound-rtp entry, which only sender reports make, for
	// alice's audio and video. Parley decrypts Chromium's RTCP.
	bob.waitFor(t, "bob has sender reports of alice's audio and video", remoteOutbound, 10*time.Second, func(v float64) bool { return v >= 2 })
	if m := scrape(t, a); m[`parley_subscriber_connections_total{send_path="direct"}`] < 2 || m[`parley_subscriber_connections_total{send_path="pion"}`] != 0 ||
		m["parley_direct_rtcp_packets_total"] == 0 {
		t.Errorf("subscriber connections by send path: direct %v, pion %v; want both browsers direct; RTCP read directly: %v",
			m[`parley_subscriber_connections_total{send_path="direct"}`], m[`parley_subscriber_connections_total{send_path="pion"}`], m["parley_direct_rtcp_packets_total"])
	}
	// What Chromium decodes went through the batched system calls
	// (rtc.batch_send, the default): recvmmsg in, sendmmsg out.
	if m := scrape(t, a); m["parley_batch_send_packets_total"] == 0 || m["parley_batch_recv_packets_total"] == 0 || m["parley_batch_send_errors_total"] != 0 {
		t.Errorf("batched I/O: %v packets sent, %v datagrams read, %v errors", m["parley_batch_send_packets_total"],
			m["parley_batch_recv_packets_total"], m["parley_batch_send_errors_total"])
	}
	// Both publisher connections are on the direct receive path: Parley
	// decrypts Chromium's simulcast media off the socket and sends it
	// transport-wide feedback and receiver reports. Chromium's bandwidth
	// estimate climbs from its 300 kbit/s start only on that feedback, and
	// its remote-inbound-rtp entries (with a round-trip time: the reports
	// answer its sender reports) come from the receiver reports.
	if m := scrape(t, a); m[`parley_publisher_connections_total{receive_path="direct"}`] < 2 || m[`parley_publisher_connections_total{receive_path="pion"}`] != 0 ||
		m["parley_direct_rtp_packets_total"] == 0 || m["parley_direct_rtp_refused_total"] != 0 {
		t.Errorf("publisher connections by receive path: direct %v, pion %v; want both browsers direct; media read directly: %v, refused %v",
			m[`parley_publisher_connections_total{receive_path="direct"}`], m[`parley_publisher_connections_total{receive_path="pion"}`],
			m["parley_direct_rtp_packets_total"], m["parley_direct_rtp_refused_total"])
	}
	est := alice.waitFor(t, "alice's bandwidth estimate climbs on Parley's feedback", outgoingEstimate, 20*time.Second, func(v float64) bool { return v > 600_000 })
	t.Logf("alice's bandwidth estimate: %.0f bit/s", est)
	alice.waitFor(t, "alice has receiver reports and a round-trip time on her audio and video", remoteInbound, 10*time.Second, func(v float64) bool { return v >= 2 })
	bobSID := selfField(t, bob, "sid")
	// logBob logs, when a subtest fails, what bob receives of alice.
	logBob := func(t *testing.T) {
		t.Cleanup(func() {
			if t.Failed() {
				logMedia(t, bob, alice, aliceSID)
			}
		})
	}

	t.Run("both decode each other", func(t *testing.T) {
		alice.waitFor(t, "alice decodes bob's video", decodingVideos, decodeTimeout, func(v float64) bool { return v >= 1 })
		alice.waitFor(t, "alice shows bob's tile", tiles(fmt.Sprintf(`[data-participant-sid=%q][data-source="camera"]`, bobSID)),
			5*time.Second, func(v float64) bool { return v == 1 })
		bob.waitFor(t, "bob shows alice's tile", tiles(fmt.Sprintf(`[data-participant-sid=%q][data-source="camera"]`, aliceSID)),
			5*time.Second, func(v float64) bool { return v == 1 })
	})

	aliceTile := fmt.Sprintf(`[data-participant-sid=%q][data-source="camera"]`, aliceSID)
	t.Run("mute", func(t *testing.T) {
		logBob(t)
		alice.run(t, 5*time.Second, chromedp.Click(chromedp.CSS("#btn-mic")))
		bob.waitFor(t, "bob sees alice's microphone off", tiles(aliceTile+" .flag-mic"), 5*time.Second, func(v float64) bool { return v == 1 })
		alice.run(t, 5*time.Second, chromedp.Click(chromedp.CSS("#btn-mic")))
		bob.waitFor(t, "bob sees alice's microphone on", tiles(aliceTile+" .flag-mic"), 5*time.Second, func(v float64) bool { return v == 0 })

		alice.run(t, 5*time.Second, chromedp.Click(chromedp.CSS("#btn-cam")))
		bob.waitFor(t, "bob sees alice's camera off", tiles(aliceTile+".no-video"), 5*time.Second, func(v float64) bool { return v == 1 })
		before := bob.waitFor(t, "frames decoded", framesDecoded, 5*time.Second, func(float64) bool { return true })
		alice.run(t, 5*time.Second, chromedp.Click(chromedp.CSS("#btn-cam")))
		bob.waitFor(t, "bob sees alice's camera on", tiles(aliceTile+".no-video"), 10*time.Second, func(v float64) bool { return v == 0 })
		bob.waitFor(t, "bob decodes alice's video again", framesDecoded, 10*time.Second, func(v float64) bool { return v > before+10 })
	})
	// Off and on again faster than the server's echo: the echo of the
	// first click must not undo the second (it did: the page took its own
	// echo for an administrator's mute).
	t.Run("mute and unmute at once", func(t *testing.T) {
		before := bob.waitFor(t, "frames decoded", framesDecoded, 5*time.Second, func(float64) bool { return true })
		value[bool](t, alice, `(document.querySelector('#btn-cam').click(), document.querySelector('#btn-cam').click(),
  document.querySelector('#btn-mic').click(), document.querySelector('#btn-mic').click(), true)`)
		time.Sleep(time.Second) // every echo is back
		if !value[bool](t, alice, `window.parley.publisherPC.getSenders().every((s) => !s.track || s.track.enabled)`) {
			t.Fatal("alice's camera or microphone ended up off after off-on")
		}
		if muted := value[string](t, alice, `JSON.stringify(window.parley.tracks().filter((x) => x.participant_sid === window.parley.self.sid && x.muted).map((x) => x.source))`); muted != "[]" {
			t.Fatalf("the server has alice's %s muted after off-on", muted)
		}
		bob.waitFor(t, "bob sees alice's camera on", tiles(aliceTile+".no-video"), 5*time.Second, func(v float64) bool { return v == 0 })
		bob.waitFor(t, "bob sees alice's microphone on", tiles(aliceTile+" .flag-mic"), 5*time.Second, func(v float64) bool { return v == 0 })
		bob.waitFor(t, "bob decodes alice's video", framesDecoded, 10*time.Second, func(v float64) bool { return v > before+10 })
	})
	shot(t, alice, "alice-call")

	// A dropped WebSocket is resumed: bob keeps his session (sid), his
	// peer connections and tiles, and the media never stopped.
	t.Run("reconnect", func(t *testing.T) {
		logBob(t)
		// The badge may say "reconnecting" for a few milliseconds only (the
		// first retry waits 0-500 ms): every state it shows is recorded.
		value[bool](t, bob, `(window.keptPC = window.parley.subscriberPC, window.seenStates = [],
  new MutationObserver(() => window.seenStates.push(document.querySelector('#conn-state').dataset.state))
    .observe(document.querySelector('#conn-state'), {attributes: true, attributeFilter: ['data-state']}), true)`)
		if n := dropSockets(t, bob); n != 1 {
			t.Fatalf("bob had %d WebSockets, want 1", n)
		}
		bob.waitFor(t, "bob reconnects", `window.seenStates.includes('reconnecting') ? 1 : 0`, 5*time.Second, func(v float64) bool { return v == 1 })
		bob.waitFor(t, "bob is back", `window.parley.state === 'connected' ? 1 : 0`, 15*time.Second, func(v float64) bool { return v == 1 })
		if sid := selfField(t, bob, "sid"); sid != bobSID {
			t.Fatalf("bob is %s after the reconnect, want his session %s resumed", sid, bobSID)
		}
		if !value[bool](t, bob, `window.parley.subscriberPC === window.keptPC`) {
			t.Fatal("bob's subscriber connection was replaced: the session was not resumed")
		}
		before := bob.waitFor(t, "frames decoded", framesDecoded, 5*time.Second, func(float64) bool { return true })
		bob.waitFor(t, "bob decodes alice's video still", framesDecoded, decodeTimeout, func(v float64) bool { return v > before+10 })
		alice.waitFor(t, "alice still shows bob's one tile", tiles(`.tile:not(.local)[data-source="camera"]`)+` === 1 && `+
			tiles(fmt.Sprintf(`[data-participant-sid=%q]`, bobSID))+` === 1 ? 1 : 0`, 10*time.Second, func(v float64) bool { return v == 1 })
		if left := value[string](t, alice, `JSON.stringify(window.parley.departures())`); left != "[]" {
			t.Fatalf("alice was told that somebody left: %s", left)
		}
		before = alice.waitFor(t, "frames decoded", framesDecoded, 5*time.Second, func(float64) bool { return true })
		alice.waitFor(t, "alice decodes bob's video still", framesDecoded, decodeTimeout, func(v float64) bool { return v > before+10 })
	})

	aliceScreen := tiles(fmt.Sprintf(`[data-participant-sid=%q][data-source="screen"]`, aliceSID))
	t.Run("screen share", func(t *testing.T) {
		alice.run(t, 10*time.Second, chromedp.WaitEnabled(chromedp.CSS("#btn-screen")), chromedp.Click(chromedp.CSS("#btn-screen")))
		bob.waitFor(t, "bob decodes alice's camera and screen", decodingVideos, decodeTimeout, func(v float64) bool { return v >= 2 })
		bob.waitFor(t, "bob shows alice's screen tile", aliceScreen, 5*time.Second, func(v float64) bool { return v == 1 })

		// Stopping the share takes the tile away again.
		alice.run(t, 10*time.Second, chromedp.Click(chromedp.CSS("#btn-screen")))
		bob.waitFor(t, "alice's screen tile leaves bob's page", aliceScreen, 10*time.Second, func(v float64) bool { return v == 0 })
		bob.waitFor(t, "bob still shows alice's camera", tiles(fmt.Sprintf(`[data-participant-sid=%q][data-source="camera"]`, aliceSID)),
			5*time.Second, func(v float64) bool { return v == 1 })

		// Share again, so that leaving below also has a screen to take away.
		alice.run(t, 10*time.Second, chromedp.WaitEnabled(chromedp.CSS("#btn-screen")), chromedp.Click(chromedp.CSS("#btn-screen")))
		bob.waitFor(t, "bob shows alice's second screen share", aliceScreen, decodeTimeout, func(v float64) bool { return v == 1 })
		shot(t, bob, "bob-screen")
	})

	t.Run("leave", func(t *testing.T) {
		alice.run(t, 10*time.Second, chromedp.Click(chromedp.CSS("#btn-leave")))
		bob.waitFor(t, "alice's tiles leave bob's page", tiles(fmt.Sprintf(`[data-participant-sid=%q]`, aliceSID)),
			10*time.Second, func(v float64) bool { return v == 0 })
		bob.waitFor(t, "bob keeps his own tile", tiles(fmt.Sprintf(`[data-participant-sid=%q]`, bobSID)),
			5*time.Second, func(v float64) bool { return v >= 1 })
	})
}

// TestBrowserJoinPaths: the lobby joins and updates the URL; a bad token
// and a server that needs tokens give clear messages.
func TestBrowserJoinPaths(t *testing.T) {
	requireChromium(t)
	base, _ := startServer(t)
	keyed, _ := startServer(t, func(c *Config) { c.Keys = map[string]string{"k1": strings.Repeat("s", 40)} })
	browser := startBrowser(t)
	p := newPage(t, browser, "carol")

	t.Run("lobby", func(t *testing.T) {
		p.run(t, 15*time.Second,
			chromedp.Navigate(base+"/"),
			chromedp.WaitVisible(chromedp.CSS("#lobby")),
			chromedp.SetValue(chromedp.CSS("#lobby-room"), "lobby-test"),
			chromedp.SetValue(chromedp.CSS("#lobby-name"), "Carol"),
			chromedp.Click(chromedp.CSS("#lobby button[type=submit]")),
		)
		p.waitFor(t, "carol joined", `window.parley.self ? 1 : 0`, 10*time.Second, func(v float64) bool { return v == 1 })
		p.waitFor(t, "the URL names room and name", `location.search.includes('room=lobby-test') && location.search.includes('name=Carol') ? 1 : 0`,
			time.Second, func(v float64) bool { return v == 1 })
		p.waitFor(t, "connected", `window.parley.state === 'connected' ? 1 : 0`, 10*time.Second, func(v float64) bool { return v == 1 })
		p.waitFor(t, "own tile", tiles(`.tile.local[data-source="camera"]`), time.Second, func(v float64) bool { return v == 1 })
		shot(t, p, "carol-alone")
		p.run(t, 5*time.Second, chromedp.Click(chromedp.CSS("#btn-leave")))
		p.waitFor(t, "left", `window.parley.state === 'disconnected' && !document.querySelector('#lobby').hidden ? 1 : 0`,
			5*time.Second, func(v float64) bool { return v == 1 })
	})

	t.Run("bad token", func(t *testing.T) {
		p.run(t, 15*time.Second, chromedp.Navigate(base+"/?room=x&token=not-a-token"))
		p.waitFor(t, "invalid token message", `document.querySelector('#message').textContent.includes('not valid') ? 1 : 0`,
			10*time.Second, func(v float64) bool { return v == 1 })
		p.waitFor(t, "disconnected", `window.parley.state === 'disconnected' ? 1 : 0`, 5*time.Second, func(v float64) bool { return v == 1 })
	})

	t.Run("server needs a token", func(t *testing.T) {
		p.run(t, 15*time.Second, chromedp.Navigate(keyed+"/?room=x&name=Dave"))
		p.waitFor(t, "needs-a-token message", `document.querySelector('#message').textContent.includes('needs a join token') ? 1 : 0`,
			10*time.Second, func(v float64) bool { return v == 1 })
		shot(t, p, "needs-token")
	})
}

// TestBrowserFirstFrameTime measures what a user waits for: with one
// participant already publishing, the time from opening the deep link to
// the first decoded remote video frame. It writes the milliseconds to
// $PARLEY_FIRST_FRAME_OUT when that is set (the README quotes the figure).
func TestBrowserFirstFrameTime(t *testing.T) {
	requireChromium(t)
	base, _ := startServer(t)
	browser := startBrowser(t)
	const room = "first-frame"

	first := newPage(t, browser, "first")
	first.run(t, 15*time.Second, chromedp.Navigate(deepLink(base, room, "First")))
	first.waitFor(t, "first page publishes", `window.parley && window.parley.state === 'connected' && window.parley.publisherPC ? 1 : 0`,
		20*time.Second, func(v float64) bool { return v == 1 })
	// Warm the browser (page load, codecs) in another room, so that the
	// figure is the join itself rather than the browser's first start.
	warm := newPage(t, browser, "warm")
	warm.run(t, 15*time.Second, chromedp.Navigate(deepLink(base, "warm-up", "Warm")))
	warm.waitFor(t, "warm-up page connected", `window.parley && window.parley.state === 'connected' ? 1 : 0`,
		20*time.Second, func(v float64) bool { return v == 1 })
	warm.close() // so that it does not load the CPU while we measure

	second := newPage(t, browser, "second")
	start := time.Now()
	second.run(t, 15*time.Second, chromedp.Navigate(deepLink(base, room, "Second")))
	second.waitFor(t, "first remote frame", decodingVideos, 20*time.Second, func(v float64) bool { return v >= 1 })
	elapsed := time.Since(start)
	t.Logf("first remote frame decoded after %d ms", elapsed.Milliseconds())
	if out := os.Getenv("PARLEY_FIRST_FRAME_OUT"); out != "" {
		if err := os.WriteFile(out, fmt.Appendf(nil, "%d\n", elapsed.Milliseconds()), 0o644); err != nil {
			t.Errorf("write %s: %v", out, err)
		}
	}
}
