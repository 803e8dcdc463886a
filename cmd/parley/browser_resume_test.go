package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The resume browser tests: a page whose WebSocket drops keeps its session
// (docs/protocol.md, "Resuming a session"). The page under test goes
// through a TCP proxy that the test cuts; its media goes straight to the
// server's UDP port, so it flows on while the socket is down.

// framesOf sums framesDecoded of the subscriber's inbound video shown in
// one participant's tile (source "camera" or "screen").
func framesOf(psid, source string) string {
	return fmt.Sprintf(`(async () => {
  const v = document.querySelector('.tile[data-participant-sid=%q][data-source=%q] video');
  const track = v && v.srcObject && v.srcObject.getVideoTracks()[0];
  const pc = window.parley && window.parley.subscriberPC;
  if (!track || !pc) return 0;
  const stats = await pc.getStats();
  let n = 0;
  stats.forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video' && r.trackIdentifier === track.id) n += r.framesDecoded || 0; });
  return n;
})()`, psid, source)
}

// keepsDecoding waits until the frames counted by expr grow by more than
// ten from now.
func keepsDecoding(t *testing.T, p *page, what, expr string, timeout time.Duration) {
	t.Helper()
	before := p.waitFor(t, what+" (frames so far)", expr, 5*time.Second, func(float64) bool { return true })
	p.waitFor(t, what, expr, timeout, func(v float64) bool { return v > before+10 })
}

// departures lists what participant_left said about sid on p, as JSON.
func departuresOf(t *testing.T, p *page, sid string) string {
	t.Helper()
	return value[string](t, p, fmt.Sprintf(`JSON.stringify(window.parley.departures().filter((d) => d.sid === %q).map((d) => d.reason))`, sid))
}

func cameraTile(psid string) string {
	return fmt.Sprintf(`.tile[data-participant-sid=%q][data-source="camera"]`, psid)
}

const (
	reconnecting = `window.parley.state === 'reconnecting' && !document.querySelector('#btn-retry').hidden`
	connected    = `window.parley.state === 'connected' && document.querySelector('#btn-retry').hidden`
)

// TestBrowserResume: Alice's page goes through a proxy, Bob's and Carol's
// do not.
//   - resume: the proxy is cut for a few seconds. Alice shows
//     "reconnecting", both keep decoding each other, Bob sees no
//     participant_left. Meanwhile Carol leaves, Bob mutes his microphone
//     and shares his screen (messages the server keeps for Alice), and
//     Alice shares her screen (an offer that cannot go out). Restored,
//     Alice resumes by herself: same sid, same peer connections, Carol
//     gone, Bob's microphone off, both screens decoded.
//   - retry now: cut again; once the next attempt is seconds away, the
//     proxy is restored and "Retry now" resumes before that attempt.
//   - resume refused: with a 3 s signaling.resume_grace, a longer cut ends
//     Alice's session on the server (Bob sees her leave, reason
//     disconnected). Restored, her page tries to resume, gets
//     resume_failed and joins afresh by itself (new sid, same identity);
//     both decode each other again.
//   - long outage: with a 3 s grace and a 1 s ping interval, the page
//     gives up resuming by itself once the grace has certainly passed,
//     while the network is still away, and joins afresh when it is back.
func TestBrowserResume(t *testing.T) {
	requireChromium(t)
	const shortGrace = 3 * time.Second
	// The servers first, so that cleanup closes the browser before them.
	base, a := startServer(t)
	_, short := startServer(t, func(c *Config) { c.Signaling.ResumeGrace = shortGrace })
	_, fast := startServer(t, func(c *Config) {
		c.Signaling.ResumeGrace = shortGrace
		c.Signaling.PingInterval = time.Second
		c.Signaling.PongTimeout = 3 * time.Second
	})
	browser := startBrowser(t)
	const decodeTimeout = 20 * time.Second

	proxy := startProxy(t, a.HTTP.String())
	const room = "resume"
	alice := newPage(t, browser, "alice")
	alice.run(t, 15*time.Second, chromedp.Navigate(deepLink(proxy.URL(), room, "Alice")))
	bob := newPage(t, browser, "bob")
	bob.run(t, 15*time.Second, chromedp.Navigate(deepLink(base, room, "Bob")))
	alice.waitFor(t, "alice decodes bob", decodingVideos, decodeTimeout, func(v float64) bool { return v >= 1 })
	bob.waitFor(t, "bob decodes alice", decodingVideos, decodeTimeout, func(v float64) bool { return v >= 1 })
	alice.waitTrue(t, "alice is connected", connected, 10*time.Second)
	aliceSID := selfField(t, alice, "sid")
	bobSID := selfField(t, bob, "sid")
	// Carol is there to leave during the cut; her media does not matter.
	carol := newPage(t, browser, "carol")
	carol.run(t, 15*time.Second, chromedp.Navigate(deepLink(base, room, "Carol")))
	carol.waitTrue(t, "carol joined", `window.parley && window.parley.self`, 15*time.Second)
	carolSID := selfField(t, carol, "sid")
	alice.waitTrue(t, "alice shows carol", tiles(cameraTile(carolSID))+` === 1`, 10*time.Second)
	bob.waitTrue(t, "bob shows carol", tiles(cameraTile(carolSID))+` === 1`, 10*time.Second)

	if !t.Run("resume", func(t *testing.T) {
		value[bool](t, alice, `(window.keptPub = window.parley.publisherPC, window.keptSub = window.parley.subscriberPC, true)`)
		alice.waitTrue(t, "alice shows bob's microphone on", tiles(cameraTile(bobSID)+" .flag-mic")+` === 0`, 5*time.Second)
		proxy.cut()
		alice.waitTrue(t, "alice shows reconnecting and Retry now", reconnecting, 5*time.Second)

		// Media does not need the socket.
		keepsDecoding(t, bob, "bob decodes alice during the cut", framesOf(aliceSID, "camera"), 10*time.Second)
		keepsDecoding(t, alice, "alice decodes bob during the cut", framesOf(bobSID, "camera"), 10*time.Second)

		// What happens meanwhile: the server keeps it for alice.
		carol.run(t, 10*time.Second, chromedp.Click(chromedp.CSS("#btn-leave")))
		bob.waitTrue(t, "carol leaves bob's page", tiles(cameraTile(carolSID))+` === 0`, 10*time.Second)
		bob.run(t, 10*time.Second, chromedp.Click(chromedp.CSS("#btn-mic")))
		bob.run(t, 20*time.Second, chromedp.WaitEnabled(chromedp.CSS("#btn-screen")), chromedp.Click(chromedp.CSS("#btn-screen")))
		bob.waitTrue(t, "bob shares his screen", `document.querySelector('#btn-screen').textContent === 'Stop sharing'`, 10*time.Second)
		// Alice's offer for her screen cannot go out yet.
		alice.run(t, 20*time.Second, chromedp.WaitEnabled(chromedp.CSS("#btn-screen")), chromedp.Click(chromedp.CSS("#btn-screen")))
		alice.waitTrue(t, "alice shares her screen", `document.querySelector('#btn-screen').textContent === 'Stop sharing'`, 10*time.Second)
		alice.waitTrue(t, "alice is still reconnecting", reconnecting, time.Second)
		bob.waitTrue(t, "bob still shows alice", tiles(cameraTile(aliceSID))+` === 1`, time.Second)

		proxy.restore()
		restored := time.Now()
		alice.waitTrue(t, "alice resumes by herself", connected, 10*time.Second)
		if sid := selfField(t, alice, "sid"); sid != aliceSID {
			t.Fatalf("alice is %s after the cut, want her session %s resumed", sid, aliceSID)
		}
		if !value[bool](t, alice, `window.parley.publisherPC === window.keptPub && window.parley.subscriberPC === window.keptSub`) {
			t.Fatal("alice's peer connections were replaced")
		}
		keepsDecoding(t, alice, "alice decodes bob's video within 10 s of the restore", framesOf(bobSID, "camera"), 10*time.Second-time.Since(restored))
		t.Logf("alice resumed and decodes bob %d ms after the restore", time.Since(restored).Milliseconds())

		// The participants as they are now, then the kept messages.
		alice.waitTrue(t, "carol is gone from alice's page", tiles(fmt.Sprintf(`[data-participant-sid=%q]`, carolSID))+` === 0 &&
  !window.parley.participants().some((p) => p.sid === `+fmt.Sprintf("%q", carolSID)+`)`, 5*time.Second)
		alice.waitTrue(t, "alice shows bob's microphone off", tiles(cameraTile(bobSID)+" .flag-mic")+` === 1`, 5*time.Second)
		alice.waitFor(t, "alice decodes bob's screen", framesOf(bobSID, "screen"), decodeTimeout, func(v float64) bool { return v > 0 })
		bob.waitFor(t, "bob decodes alice's screen, offered after the resume", framesOf(aliceSID, "screen"), decodeTimeout, func(v float64) bool { return v > 0 })
		keepsDecoding(t, bob, "bob decodes alice's camera still", framesOf(aliceSID, "camera"), 5*time.Second)
		if n := value[float64](t, bob, tiles(cameraTile(aliceSID))); n != 1 {
			t.Fatalf("bob shows %v camera tiles of alice, want 1", n)
		}
		if left := departuresOf(t, bob, aliceSID); left != "[]" {
			t.Fatalf("bob was told alice left: %s", left)
		}
		if left := departuresOf(t, alice, carolSID); left != `["left"]` {
			t.Fatalf("alice heard of carol's leaving: %s, want [\"left\"]", left)
		}
		shot(t, alice, "alice-resumed")
	}) {
		return
	}

	t.Run("retry now", func(t *testing.T) {
		// One click, timed in the page: it notes how far away the next
		// scheduled attempt was and when the badge turned connected.
		const click = `(() => {
  const btn = document.querySelector('#btn-retry');
  if (btn.hidden || !btn.offsetParent) return -2;
  const r = window.parley.retryIn;
  const rec = window.retryClick = {retryIn: r, at: performance.now(), connectedAt: 0};
  const badge = document.querySelector('#conn-state');
  new MutationObserver((_, obs) => {
    if (badge.dataset.state === 'connected') { rec.connectedAt = performance.now(); obs.disconnect(); }
  }).observe(badge, {attributes: true});
  btn.click();
  return r;
})()`
		for try := 1; ; try++ {
			proxy.cut()
			alice.waitTrue(t, "alice shows reconnecting and Retry now", reconnecting, 5*time.Second)
			// Attempts fail at once while the proxy is cut; the backoff
			// grows until the next attempt is seconds away.
			alice.waitTrue(t, "the next attempt is seconds away", `window.parley.retryIn >= 3000`, 30*time.Second)
			proxy.restore()
			due := value[float64](t, alice, click)
			if due == -2 {
				t.Fatal("the Retry now button is not shown while reconnecting")
			}
			alice.waitTrue(t, "alice is back", connected, 10*time.Second)
			if due < 1000 {
				// A slow machine: the scheduled attempt came (nearly) first.
				if try == 3 {
					t.Fatalf("the click came %v ms before the scheduled attempt, three times: too slow to tell", due)
				}
				t.Logf("try %d: the click came only %v ms before the scheduled attempt; again", try, due)
				continue
			}
			took := value[float64](t, alice, `window.retryClick.connectedAt - window.retryClick.at`)
			t.Logf("connected %.0f ms after the click; the next attempt was %.0f ms away", took, due)
			if took <= 0 || took >= due {
				t.Fatalf("connected %.0f ms after the click, not before the attempt scheduled in %.0f ms", took, due)
			}
			break
		}
		if sid := selfField(t, alice, "sid"); sid != aliceSID {
			t.Fatalf("alice is %s after the retry, want %s", sid, aliceSID)
		}
		keepsDecoding(t, alice, "alice decodes bob", framesOf(bobSID, "camera"), 10*time.Second) // as after the first resume: a loaded machine decodes at a few frames a second
		if left := departuresOf(t, bob, aliceSID); left != "[]" {
			t.Fatalf("bob was told alice left: %s", left)
		}
	})

	// pair opens Alice through a new proxy and Bob directly in a room of
	// the server at addr; both decode each other.
	pair := func(t *testing.T, addr, room string) (alice, bob *page, proxy *tcpProxy) {
		proxy = startProxy(t, addr)
		alice = newPage(t, browser, "alice-"+room)
		alice.run(t, 15*time.Second, chromedp.Navigate(deepLink(proxy.URL(), room, "Alice")))
		bob = newPage(t, browser, "bob-"+room)
		bob.run(t, 15*time.Second, chromedp.Navigate(deepLink("http://"+addr, room, "Bob")))
		alice.waitFor(t, "alice decodes bob", decodingVideos, decodeTimeout, func(v float64) bool { return v >= 1 })
		bob.waitFor(t, "bob decodes alice", decodingVideos, decodeTimeout, func(v float64) bool { return v >= 1 })
		return alice, bob, proxy
	}
	// backAfresh: Alice joined again by herself, as herself, and both
	// decode each other; Bob heard her old session leave, disconnected.
	backAfresh := func(t *testing.T, alice, bob *page, oldSID, identity, bobSID string) {
		alice.waitTrue(t, "alice joins afresh by herself", connected+fmt.Sprintf(` && window.parley.self && window.parley.self.sid !== %q`, oldSID), 20*time.Second)
		newSID := selfField(t, alice, "sid")
		if id := selfField(t, alice, "identity"); id != identity {
			t.Fatalf("alice joined again as %q, want her identity %q", id, identity)
		}
		alice.waitFor(t, "alice decodes bob's video again", framesOf(bobSID, "camera"), decodeTimeout, func(v float64) bool { return v > 10 })
		bob.waitTrue(t, "bob shows alice back, once", tiles(fmt.Sprintf(`.tile[data-identity=%q]`, identity))+` === 1 && `+
			tiles(cameraTile(newSID))+` === 1`, 10*time.Second)
		bob.waitFor(t, "bob decodes alice's new video", framesOf(newSID, "camera"), decodeTimeout, func(v float64) bool { return v > 10 })
		if left := departuresOf(t, bob, oldSID); left != `["disconnected"]` {
			t.Fatalf("bob heard of alice's leaving: %s, want [\"disconnected\"]", left)
		}
		if left := departuresOf(t, bob, newSID); left != "[]" {
			t.Fatalf("bob was told alice's new session left: %s", left)
		}
	}
	logged := func(p *page, s string) bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return strings.Contains(strings.Join(p.logs, "\n"), s)
	}

	t.Run("resume refused", func(t *testing.T) {
		alice, bob, proxy := pair(t, short.HTTP.String(), "resume-refused")
		aliceSID := selfField(t, alice, "sid")
		aliceID := selfField(t, alice, "identity")
		bobSID := selfField(t, bob, "sid")

		proxy.cut()
		cut := time.Now()
		alice.waitTrue(t, "alice shows reconnecting", reconnecting, 5*time.Second)
		bob.waitTrue(t, "bob sees alice leave after the grace period, reason disconnected",
			fmt.Sprintf(`window.parley.departures().some((d) => d.sid === %q && d.reason === 'disconnected')`, aliceSID), shortGrace+5*time.Second)
		if d := time.Since(cut); d < shortGrace-500*time.Millisecond {
			t.Fatalf("alice left %s after the cut, before the grace period (%s)", d, shortGrace)
		}
		bob.waitTrue(t, "alice's tile leaves bob's page", tiles(fmt.Sprintf(`[data-participant-sid=%q]`, aliceSID))+` === 0`, 5*time.Second)
		time.Sleep(time.Until(cut.Add(shortGrace + time.Second)))
		// The server may have noticed the drop later than the page: the page
		// still means to resume.
		alice.waitTrue(t, "alice still means to resume", reconnecting+fmt.Sprintf(` && window.parley.self && window.parley.self.sid === %q`, aliceSID), time.Second)

		proxy.restore()
		backAfresh(t, alice, bob, aliceSID, aliceID, bobSID)
		if !logged(alice, "resume_failed") {
			t.Fatal("alice's page never heard resume_failed")
		}
	})

	t.Run("long outage", func(t *testing.T) {
		alice, bob, proxy := pair(t, fast.HTTP.String(), "resume-outage")
		aliceSID := selfField(t, alice, "sid")
		aliceID := selfField(t, alice, "identity")
		bobSID := selfField(t, bob, "sid")

		proxy.cut()
		cut := time.Now()
		alice.waitTrue(t, "alice shows reconnecting", reconnecting, 5*time.Second)
		// Grace (3 s) and three ping intervals (3 s) after the drop the
		// page ends the session itself and tries to join afresh.
		alice.waitTrue(t, "alice gives up resuming while the network is away", reconnecting+` && !window.parley.self && !window.parley.subscriberPC`, 15*time.Second)
		if d := time.Since(cut); d < 2*shortGrace-500*time.Millisecond {
			t.Fatalf("alice gave up %s after the cut, before the grace period had certainly passed", d)
		}
		bob.waitTrue(t, "bob saw alice leave, reason disconnected",
			fmt.Sprintf(`window.parley.departures().some((d) => d.sid === %q && d.reason === 'disconnected')`, aliceSID), 5*time.Second)

		proxy.restore()
		backAfresh(t, alice, bob, aliceSID, aliceID, bobSID)
		if logged(alice, "resume_failed") {
			t.Fatal("alice's page tried to resume after the grace period had certainly passed")
		}
	})
}
