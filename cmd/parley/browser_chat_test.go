package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The chat and presence browser tests: real pages exchange chat messages
// and presence over the data channels (docs/protocol.md, "Data channels").

// waitTrue polls a boolean JavaScript expression until it is true.
func (p *page) waitTrue(t *testing.T, what, cond string, timeout time.Duration) {
	t.Helper()
	p.waitFor(t, what, fmt.Sprintf(`(%s) ? 1 : 0`, cond), timeout, func(v float64) bool { return v == 1 })
}

// value evaluates a JavaScript expression once.
func value[T any](t *testing.T, p *page, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	v, err := eval[T](ctx, expr)
	if err != nil {
		t.Fatalf("%s: %s: %v", p.name, expr, err)
	}
	return v
}

// openChatPage opens a tab at link and waits for its data channel.
func openChatPage(t *testing.T, browser context.Context, name, link string) *page {
	t.Helper()
	p := newPage(t, browser, name)
	p.run(t, 15*time.Second, chromedp.Navigate(link))
	p.waitTrue(t, "the data channel opens", `window.parley && window.parley.dataOpen`, 20*time.Second)
	return p
}

// sendChat types text into the chat input (the chat panel must be open)
// and sends it with the Send button, or with Enter.
func sendChat(t *testing.T, p *page, text string, enter bool) {
	t.Helper()
	if enter {
		p.run(t, 5*time.Second, chromedp.SendKeys(chromedp.CSS("#chat-input"), text+"\r"))
		return
	}
	p.run(t, 5*time.Second, chromedp.SendKeys(chromedp.CSS("#chat-input"), text), chromedp.Click(chromedp.CSS("#chat-send")))
}

// chatEntries counts the chat list's entries with this text, also
// matching a CSS class (e.g. ".direct") and a sender name prefix.
func chatEntries(text, class, from string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('#chat-list li.chat-msg%s')].filter((li) =>
  li.querySelector('.chat-text').textContent === %q && li.querySelector('.chat-from').textContent.startsWith(%q)).length`, class, text, from)
}

// chatCount counts window.parley.chat() entries with this text.
func chatCount(text string) string {
	return fmt.Sprintf(`window.parley.chat().filter((m) => m.text === %q).length`, text)
}

// deliveries sums how often the server delivered messages with this text live.
func deliveries(text string) string {
	return fmt.Sprintf(`window.parley.chat().filter((m) => m.text === %q).reduce((n, m) => n + m.deliveries, 0)`, text)
}

// exactlyOnce waits for text to show on p, then checks, after a pause
// that would let a duplicate arrive, that it shows once and was delivered
// once.
func exactlyOnce(t *testing.T, p *page, text, from string, timeout time.Duration) {
	t.Helper()
	p.waitTrue(t, fmt.Sprintf("%q arrives", text), chatEntries(text, "", from)+` >= 1`, timeout)
	time.Sleep(time.Second)
	if n := value[float64](t, p, chatEntries(text, "", from)); n != 1 {
		t.Fatalf("%s: %q shows %v times in the chat list, want once", p.name, text, n)
	}
	exactlyOnceNow(t, p, text)
}

// exactlyOnceNow checks that text shows and was delivered once on p.
func exactlyOnceNow(t *testing.T, p *page, text string) {
	t.Helper()
	if n := value[float64](t, p, chatCount(text)); n != 1 {
		t.Fatalf("%s: %q is %v times in window.parley.chat(), want once", p.name, text, n)
	}
	if n := value[float64](t, p, deliveries(text)); n != 1 {
		t.Fatalf("%s: %q was delivered %v times, want once", p.name, text, n)
	}
}

func openPanel(t *testing.T, p *page, name string) {
	t.Helper()
	btn := "#btn-" + name
	if value[bool](t, p, fmt.Sprintf(`document.querySelector(%q).getAttribute('aria-expanded') === 'true'`, btn)) {
		return
	}
	p.run(t, 5*time.Second, chromedp.Click(chromedp.CSS(btn)), chromedp.WaitVisible(chromedp.CSS("#"+name+"-panel")))
}

func closePanel(t *testing.T, p *page, name string) {
	t.Helper()
	p.run(t, 5*time.Second, chromedp.Click(chromedp.CSS("#btn-"+name)), chromedp.WaitNotVisible(chromedp.CSS("#"+name+"-panel")))
}

// person selects identity's entry in the People panel.
func person(identity string) string {
	return fmt.Sprintf(`#people li.person[data-identity=%q]`, identity)
}

func present(selector string) string {
	return fmt.Sprintf(`!!document.querySelector(%q)`, selector)
}

// setHidden makes the page believe it is hidden (or shown again) and tells
// it so with a visibilitychange event; headless tabs are always visible.
func setHidden(t *testing.T, p *page, hidden bool) {
	t.Helper()
	js := `delete document.visibilityState`
	if hidden {
		js = `Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'hidden'})`
	}
	value[bool](t, p, js+`, document.dispatchEvent(new Event('visibilitychange'))`)
}

// TestBrowserChat: two pages chat in the room and directly, the unread
// badge counts what arrives while the chat is closed, the People panel
// shows the other participant's camera, microphone, raised hand and away
// state, and refused messages show as not sent, with the reason.
func TestBrowserChat(t *testing.T) {
	requireChromium(t)
	const maxBytes = 512
	base, _ := startServer(t, func(c *Config) {
		c.Data.MaxMessageBytes = maxBytes
		c.Data.MaxMetadataBytes = maxBytes / 2
	})
	browser := startBrowser(t)
	const room = "browser-chat"

	alice := openChatPage(t, browser, "alice", deepLink(base, room, "Alice"))
	bob := openChatPage(t, browser, "bob", deepLink(base, room, "Bob"))
	aliceID := selfField(t, alice, "identity")
	bobID := selfField(t, bob, "identity")
	alice.waitTrue(t, "bob is in alice's roster", fmt.Sprintf(`window.parley.roster().some((p) => p.identity === %q)`, bobID), 10*time.Second)

	if !t.Run("room chat", func(t *testing.T) {
		openPanel(t, alice, "chat")
		openPanel(t, bob, "chat")
		sendChat(t, alice, "hello from alice", false)
		alice.waitTrue(t, "alice's message is acknowledged",
			`window.parley.chat().some((m) => m.text === 'hello from alice' && m.mine && !m.pending) && window.parley.outbox().length === 0`, 10*time.Second)
		alice.waitTrue(t, "alice's input is empty again", `document.querySelector('#chat-input').value === ''`, time.Second)
		exactlyOnce(t, bob, "hello from alice", "Alice", 10*time.Second)
		bob.waitTrue(t, "bob shows alice's message as hers", chatEntries("hello from alice", ":not(.mine):not(.direct)", "Alice")+` === 1`, time.Second)

		// Alice closes her chat; Bob's reply (sent with Enter) counts as unread.
		closePanel(t, alice, "chat")
		sendChat(t, bob, "hi alice", true)
		alice.waitTrue(t, "alice's unread badge shows 1",
			`window.parley.unread === 1 && !document.querySelector('#chat-unread').hidden && document.querySelector('#chat-unread').textContent === '1'`, 10*time.Second)
		alice.waitTrue(t, "bob's reply is in alice's chat list", chatEntries("hi alice", "", "Bob")+` === 1`, time.Second)
		openPanel(t, alice, "chat")
		alice.waitTrue(t, "opening the chat clears the badge", `window.parley.unread === 0 && document.querySelector('#chat-unread').hidden`, 2*time.Second)
	}) {
		return
	}

	t.Run("direct message", func(t *testing.T) {
		alice.run(t, 5*time.Second, chromedp.SetValue(chromedp.CSS("#chat-to"), bobID))
		if got := value[string](t, alice, `document.querySelector('#chat-to').value`); got != bobID {
			t.Fatalf("alice's recipient select: %q, want %q (options: %s)", got, bobID,
				value[string](t, alice, `[...document.querySelector('#chat-to').options].map((o) => o.value + '=' + o.textContent).join(', ')`))
		}
		sendChat(t, alice, "psst bob", false)
		bob.waitTrue(t, "bob shows the direct message as direct", chatEntries("psst bob", ".direct", "Alice")+` === 1`, 10*time.Second)
		bob.waitTrue(t, "bob's chat() marks it direct to him",
			fmt.Sprintf(`window.parley.chat().some((m) => m.text === 'psst bob' && m.direct && m.to === %q && m.from === %q)`, bobID, aliceID), time.Second)
		alice.waitTrue(t, "alice shows it as her direct message", chatEntries("psst bob", ".direct.mine", "Alice")+` === 1`, 5*time.Second)
		if s := value[string](t, bob, `[...document.querySelectorAll('#chat-list li.direct .chat-dm')].map((e) => e.textContent).join('|')`); !strings.Contains(s, "direct") {
			t.Fatalf("bob's direct message is not marked direct: %q", s)
		}
	})

	t.Run("roster", func(t *testing.T) {
		openPanel(t, bob, "people")
		alicePerson := person(aliceID)
		bob.waitTrue(t, "bob's roster shows alice online with camera and mic on",
			present(alicePerson+`[data-status="online"][data-camera="on"][data-mic="on"][data-hand="false"]`), 20*time.Second)
		bob.waitTrue(t, "bob's roster shows bob himself", present(person(bobID)+`.self`), time.Second)

		alice.run(t, 5*time.Second, chromedp.Click(chromedp.CSS("#btn-hand")))
		bob.waitTrue(t, "bob sees alice's raised hand", present(alicePerson+`[data-hand="true"]`)+` &&
  document.querySelector(`+fmt.Sprintf("%q", alicePerson)+`).textContent.includes('hand raised')`, 5*time.Second)
		alice.waitTrue(t, "alice's hand button is pressed", `document.querySelector('#btn-hand').getAttribute('aria-pressed') === 'true'`, time.Second)

		alice.run(t, 5*time.Second, chromedp.Click(chromedp.CSS("#btn-mic")))
		bob.waitTrue(t, "bob sees alice's microphone off", present(alicePerson+`[data-mic="off"][data-camera="on"]`), 5*time.Second)
		alice.run(t, 5*time.Second, chromedp.Click(chromedp.CSS("#btn-mic")), chromedp.Click(chromedp.CSS("#btn-hand")))
		bob.waitTrue(t, "bob sees alice's microphone on and hand down", present(alicePerson+`[data-mic="on"][data-hand="false"]`), 5*time.Second)
		shot(t, bob, "bob-chat")
	})

	t.Run("hidden page", func(t *testing.T) {
		// A hidden page is away, and counts what arrives as unread although
		// its chat panel is open; shown again, it is back and has read it.
		setHidden(t, alice, true)
		bob.waitTrue(t, "bob sees alice away", present(person(aliceID)+`[data-status="away"]`), 5*time.Second)
		sendChat(t, bob, "are you there?", false)
		alice.waitTrue(t, "alice's hidden page counts bob's message", `window.parley.unread === 1`, 5*time.Second)
		setHidden(t, alice, false)
		bob.waitTrue(t, "bob sees alice online again", present(person(aliceID)+`[data-status="online"]`), 5*time.Second)
		alice.waitTrue(t, "shown again, alice has read it", `window.parley.unread === 0 && document.querySelector('#chat-unread').hidden`, time.Second)
	})

	t.Run("refused", func(t *testing.T) {
		failed := func(text, reason string) string {
			return fmt.Sprintf(`window.parley.chat().some((m) => m.text === %q && m.failed && !m.pending && m.reason === %q) &&
  [...document.querySelectorAll('#chat-list li.chat-msg.failed.mine')].some((li) => li.querySelector('.chat-text').textContent === %[1]q &&
    li.querySelector('.chat-status').textContent === 'not sent: ' + %[2]q) && window.parley.outbox().length === 0`, text, reason)
		}
		long := strings.Repeat("x", maxBytes+10)
		alice.run(t, 5*time.Second, chromedp.SetValue(chromedp.CSS("#chat-to"), ""), chromedp.SetValue(chromedp.CSS("#chat-input"), long),
			chromedp.Click(chromedp.CSS("#chat-send")))
		alice.waitTrue(t, "a message over data.max_message_bytes shows as not sent", failed(long, "too long"), 5*time.Second)

		// Bob leaves while Alice has him chosen: she keeps writing to him
		// (not to the room), and the server refuses it.
		alice.run(t, 5*time.Second, chromedp.SetValue(chromedp.CSS("#chat-to"), bobID))
		bob.run(t, 5*time.Second, chromedp.Click(chromedp.CSS("#btn-leave")))
		alice.waitTrue(t, "bob leaves alice's roster", fmt.Sprintf(`!window.parley.roster().some((p) => p.identity === %q)`, bobID), 10*time.Second)
		alice.waitTrue(t, "alice still writes to bob, who left", `document.querySelector('#chat-to').value === `+fmt.Sprintf("%q", bobID)+` &&
  document.querySelector('#chat-to').selectedOptions[0].textContent === 'Bob (left)'`, time.Second)
		sendChat(t, alice, "still there?", false)
		alice.waitTrue(t, "a direct message to nobody shows as not sent", failed("still there?", "the recipient is not in the room"), 5*time.Second)
	})
}

// TestBrowserChatRateLimit: with a tight data.rate_limit, a burst of
// messages is refused in part with rate_limited; the page keeps them in the
// outbox, sends them again after retry_after_ms, and every one reaches the
// other page once, in order.
func TestBrowserChatRateLimit(t *testing.T) {
	requireChromium(t)
	base, _ := startServer(t, func(c *Config) {
		c.Data.RateLimit = 4
		c.Data.RateWindow = 2 * time.Second
	})
	browser := startBrowser(t)
	const room = "browser-rate"
	alice := openChatPage(t, browser, "alice", deepLink(base, room, "Alice"))
	bob := openChatPage(t, browser, "bob", deepLink(base, room, "Bob"))
	openPanel(t, alice, "chat")

	var want []string
	for i := 1; i <= 8; i++ {
		text := fmt.Sprintf("burst %d", i)
		want = append(want, text)
		sendChat(t, alice, text, true)
	}
	poll(t, bob, "bob gets the burst in order", `window.parley.chat().map((m) => m.text).join('|')`, 15*time.Second,
		func(got string) bool { return got == strings.Join(want, "|") })
	for _, text := range want {
		exactlyOnceNow(t, bob, text)
	}
	alice.waitTrue(t, "alice's outbox empties", `window.parley.outbox().length === 0 && window.parley.chat().every((m) => !m.pending && !m.failed)`, 5*time.Second)
	alice.mu.Lock()
	limited := strings.Contains(strings.Join(alice.logs, "\n"), "rate limited")
	alice.mu.Unlock()
	if !limited {
		t.Fatal("alice was never rate limited: the test did not exercise retry_after_ms")
	}
}

// TestBrowserTyping: while Alice types (without sending), Bob sees "Alice
// is typing…"; it goes away by itself once the server's typing timeout
// passes without keystrokes, and comes back with the next ones.
func TestBrowserTyping(t *testing.T) {
	requireChromium(t)
	const typingTimeout = 2 * time.Second
	base, _ := startServer(t, func(c *Config) { c.Data.TypingTimeout = typingTimeout })
	browser := startBrowser(t)
	const room = "browser-typing"

	alice := openChatPage(t, browser, "alice", deepLink(base, room, "Alice"))
	bob := openChatPage(t, browser, "bob", deepLink(base, room, "Bob"))
	aliceID := selfField(t, alice, "identity")
	openPanel(t, alice, "chat")
	openPanel(t, bob, "chat")
	bob.waitTrue(t, "nobody types yet", `document.querySelector('#chat-typing').textContent === ''`, 5*time.Second)

	typing := `document.querySelector('#chat-typing').textContent === 'Alice is typing…'`
	alice.run(t, 5*time.Second, chromedp.SendKeys(chromedp.CSS("#chat-input"), "hel"))
	start := time.Now()
	bob.waitTrue(t, "bob sees alice typing", typing, 5*time.Second)
	bob.waitTrue(t, "bob's roster marks alice typing", fmt.Sprintf(`window.parley.roster().some((p) => p.identity === %q && p.typing)`, aliceID), time.Second)
	bob.waitTrue(t, "the typing line goes away by itself", `document.querySelector('#chat-typing').textContent === ''`, typingTimeout+4*time.Second)
	gone := time.Since(start)
	t.Logf("the typing line showed for about %d ms", gone.Milliseconds())
	if gone < typingTimeout/2 {
		t.Fatalf("the typing line went away after %s, before the server's typing timeout (%s)", gone, typingTimeout)
	}
	if v := value[string](t, alice, `document.querySelector('#chat-input').value`); v != "hel" {
		t.Fatalf("alice's input holds %q, want the unsent %q", v, "hel")
	}

	// More keys, after a pause longer than 2 s: typing again.
	alice.run(t, 5*time.Second, chromedp.SendKeys(chromedp.CSS("#chat-input"), "lo"))
	bob.waitTrue(t, "bob sees alice typing again", typing, 5*time.Second)
	// Sending the text ends typing at once.
	alice.run(t, 5*time.Second, chromedp.Click(chromedp.CSS("#chat-send")))
	bob.waitTrue(t, "sending ends typing", `document.querySelector('#chat-typing').textContent === ''`, typingTimeout/2)
	bob.waitTrue(t, "the message arrives", chatEntries("hello", "", "Alice")+` === 1`, 5*time.Second)
}

// TestBrowserChatOutbox: what Alice sends without a connection waits in her
// outbox (localStorage) and reaches Bob exactly once when she is back, even
// for a message whose acknowledgement was lost; a pending message survives
// a reload of her tab, which keeps her identity. Alice's page goes through
// a proxy that the test cuts; her media goes straight to the server. Her
// session and data channels survive the cut (she resumes), but the page
// counts as offline for chat while its signaling socket is away.
func TestBrowserChatOutbox(t *testing.T) {
	requireChromium(t)
	base, a := startServer(t)
	browser := startBrowser(t)
	proxy := startProxy(t, a.HTTP.String())
	const room = "browser-outbox"

	alice := openChatPage(t, browser, "alice", deepLink(proxy.URL(), room, "Alice"))
	bob := openChatPage(t, browser, "bob", deepLink(base, room, "Bob"))
	aliceID := selfField(t, alice, "identity")
	openPanel(t, alice, "chat")
	openPanel(t, bob, "chat")

	sendChat(t, alice, "before the cut", false)
	exactlyOnce(t, bob, "before the cut", "Alice", 10*time.Second)
	sentID := value[string](t, alice, `window.parley.chat().find((m) => m.text === 'before the cut').id`)
	outboxKey := fmt.Sprintf("parley.outbox.%s.%s", room, aliceID)

	if !t.Run("offline", func(t *testing.T) {
		sid := selfField(t, alice, "sid")
		proxy.cut()
		alice.waitTrue(t, "alice reconnects", `window.parley.state === 'reconnecting' && !window.parley.dataOpen`, 5*time.Second)
		openPanel(t, bob, "people")
		bob.waitTrue(t, "bob's roster shows alice offline", present(person(aliceID)+`[data-status="offline"]`), 5*time.Second)
		sendChat(t, alice, "offline one", false)
		sendChat(t, alice, "offline two", true)
		alice.waitTrue(t, "both show pending", `document.querySelectorAll('#chat-list li.chat-msg.pending.mine').length === 2 &&
  window.parley.outbox().map((e) => e.text).join('|') === 'offline one|offline two'`, 2*time.Second)
		if got := value[string](t, alice, fmt.Sprintf(`JSON.parse(localStorage.getItem(%q)).map((e) => e.text).join('|')`, outboxKey)); got != "offline one|offline two" {
			t.Fatalf("alice's localStorage outbox %q holds %q", outboxKey, got)
		}
		// A message Bob already has, whose acknowledgement Alice "lost".
		n := value[float64](t, alice, fmt.Sprintf(`(() => {
  const list = JSON.parse(localStorage.getItem(%q));
  list.unshift({id: %q, text: 'before the cut', to: null, created: Date.now() - 1000});
  localStorage.setItem(%[1]q, JSON.stringify(list));
  return window.parley.outbox().length;
})()`, outboxKey, sentID))
		if n != 3 {
			t.Fatalf("alice's outbox has %v entries after adding the unacknowledged one, want 3", n)
		}
		time.Sleep(500 * time.Millisecond)
		bob.waitTrue(t, "bob has none of them yet", chatCount("offline one")+` + `+chatCount("offline two")+` === 0`, time.Second)

		proxy.restore()
		alice.waitTrue(t, "alice is back", `window.parley.state === 'connected' && window.parley.dataOpen`, 20*time.Second)
		// The cut was shorter than the grace period: she resumed her session.
		if got := selfField(t, alice, "sid"); got != sid {
			t.Fatalf("alice is %s after the cut, want her session %s resumed", got, sid)
		}
		bob.waitTrue(t, "bob's roster shows alice online again", present(person(aliceID)+`[data-status="online"]`), 5*time.Second)
		exactlyOnce(t, bob, "offline one", "Alice", 10*time.Second)
		exactlyOnce(t, bob, "offline two", "Alice", 5*time.Second)
		exactlyOnce(t, bob, "before the cut", "Alice", 5*time.Second)
		alice.waitTrue(t, "alice's outbox empties", `window.parley.outbox().length === 0 && localStorage.getItem(`+fmt.Sprintf("%q", outboxKey)+`) === null`, 5*time.Second)
		alice.waitTrue(t, "alice shows nothing pending", `document.querySelectorAll('#chat-list li.chat-msg.pending').length === 0`, time.Second)
		bob.waitTrue(t, "bob has them in order", `window.parley.chat().map((m) => m.text).join('|') === 'before the cut|offline one|offline two'`, time.Second)
	}) {
		return
	}

	t.Run("reload", func(t *testing.T) {
		proxy.blockWebSockets(true)
		alice.waitTrue(t, "alice lost the server", `window.parley.state !== 'connected' && !window.parley.dataOpen`, 5*time.Second)
		sendChat(t, alice, "across a reload", false)
		alice.waitTrue(t, "it is pending", `window.parley.outbox().length === 1`, time.Second)

		alice.run(t, 15*time.Second, chromedp.Reload())
		alice.waitTrue(t, "after the reload the outbox still holds it, shown pending", `window.parley.outbox().length === 1 &&
  window.parley.chat().some((m) => m.text === 'across a reload' && m.pending && m.mine) &&
  document.querySelectorAll('#chat-list li.chat-msg.pending.mine').length === 1`, 5*time.Second)
		if id := value[string](t, alice, `window.parley.identity`); id != aliceID {
			t.Fatalf("alice's identity after a reload: %q, want %q", id, aliceID)
		}
		if n := value[float64](t, bob, chatCount("across a reload")); n != 0 {
			t.Fatalf("bob has the message before alice is back")
		}

		proxy.blockWebSockets(false)
		alice.waitTrue(t, "alice is back after the reload", `window.parley.state === 'connected' && window.parley.dataOpen`, 20*time.Second)
		if id := selfField(t, alice, "identity"); id != aliceID {
			t.Fatalf("alice joined as %q after a reload, want %q", id, aliceID)
		}
		exactlyOnce(t, bob, "across a reload", "Alice", 10*time.Second)
		alice.waitTrue(t, "alice's outbox empties", `window.parley.outbox().length === 0`, 5*time.Second)
		alice.waitTrue(t, "alice's chat has the history and her message, once each", `['before the cut', 'offline one', 'offline two', 'across a reload']
  .every((x) => window.parley.chat().filter((m) => m.text === x && m.mine && !m.pending).length === 1)`, 5*time.Second)
		bob.waitTrue(t, "bob's roster has one alice", fmt.Sprintf(`window.parley.roster().filter((p) => p.identity === %q).length === 1`, aliceID), 5*time.Second)
	})
}
