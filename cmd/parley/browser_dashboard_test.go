package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The operator dashboard (web/static/dashboard.html) in a real browser,
// against a whole server: the admin event stream (docs/api.md, "Events")
// drives its list and charts, and its buttons call the admin API.

// dashWait polls a boolean JavaScript expression on the dashboard tab until
// it is true; on failure it says what the dashboard showed.
func dashWait(t *testing.T, p *page, what, cond string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ok, err := evalOnce[bool](p, fmt.Sprintf(`!!(%s)`, cond))
		if err == nil && ok {
			return
		}
		if err != nil {
			lastErr = err
		}
		if time.Now().After(deadline) {
			state, _ := evalOnce[string](p, `JSON.stringify({state: window.parleyDashboard && window.parleyDashboard.state,
  message: window.parleyDashboard && window.parleyDashboard.message,
  statsCount: window.parleyDashboard && window.parleyDashboard.statsCount,
  rooms: window.parleyDashboard && window.parleyDashboard.rooms()})`)
			t.Fatalf("%s: %s: not after %s (last error %v); dashboard: %s", p.name, what, timeout, lastErr, state)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func evalOnce[T any](p *page, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, 2*time.Second)
	defer cancel()
	return eval[T](ctx, expr)
}

// dashParticipant selects a participant of a room in the dashboard's list.
func dashParticipant(room, identity string) string {
	return fmt.Sprintf(`.room[data-room=%q] .participant[data-identity=%q]`, room, identity)
}

// TestBrowserDashboard: the dashboard goes live in development mode, lists
// a demo-page participant and its tracks within seconds, mutes and unmutes
// one of its tracks for the room, removes it with the two-click Remove,
// closes a room, and draws the server's stats.
func TestBrowserDashboard(t *testing.T) {
	requireChromium(t)
	base, _ := startServer(t) // first, so that the browser closes before the server
	browser := startBrowser(t)
	const room = "ops"

	dash := newPage(t, browser, "dashboard")
	dash.run(t, 15*time.Second, chromedp.Navigate(base+"/dashboard.html"))
	dashWait(t, dash, "the dashboard is live", `window.parleyDashboard && window.parleyDashboard.state === 'live'`, 10*time.Second)
	dashWait(t, dash, "no rooms yet", `window.parleyDashboard.rooms().length === 0 && !document.querySelector('#no-rooms').hidden`, 5*time.Second)
	if v := value[string](t, dash, `sessionStorage.getItem('parley.adminToken') || ''`); v == "" {
		t.Fatal("the dashboard did not keep its development admin token in sessionStorage")
	}

	pat := newPage(t, browser, "pat")
	pat.run(t, 15*time.Second, chromedp.Navigate(deepLink(base, room, "Pat")))
	pat.waitTrue(t, "pat joined", `window.parley && window.parley.self`, 15*time.Second)
	identity := selfField(t, pat, "identity")
	sid := selfField(t, pat, "sid")
	who := dashParticipant(room, identity)

	t.Run("lists the participant", func(t *testing.T) {
		start := time.Now()
		dashWait(t, dash, "pat is listed", fmt.Sprintf(`document.querySelector(%q)?.querySelector('.p-name').textContent === 'Pat'`, who), 5*time.Second)
		t.Logf("the dashboard listed pat %d ms after pat's page joined", time.Since(start).Milliseconds())
		dashWait(t, dash, "the hook has pat", fmt.Sprintf(`window.parleyDashboard.rooms().some((r) => r.name === %q &&
  r.participants.some((p) => p.identity === %q && p.sid === %q && p.name === 'Pat' && p.joined_at > 0))`, room, identity, sid), time.Second)
		if got := value[string](t, dash, fmt.Sprintf(`document.querySelector(%q).querySelector('.p-joined').textContent`, who)); !strings.HasPrefix(got, "joined ") {
			t.Fatalf("joined time shows %q", got)
		}
		// The demo page publishes its camera and microphone.
		dashWait(t, dash, "pat's camera and microphone are listed", fmt.Sprintf(`(() => {
  const p = document.querySelector(%q);
  return p && p.querySelector('.track[data-kind="video"][data-source="camera"][data-muted="false"]') &&
    p.querySelector('.track[data-kind="audio"][data-source="microphone"][data-muted="false"]');
})()`, who), 20*time.Second)
	})

	t.Run("mute", func(t *testing.T) {
		track := who + ` .track[data-kind="audio"]`
		trackSID := value[string](t, dash, fmt.Sprintf(`document.querySelector(%q).dataset.sid`, track))
		patSees := func(muted bool) string {
			return fmt.Sprintf(`window.parley.tracks().some((t) => t.sid === %q && t.muted === %v)`, trackSID, muted)
		}
		pat.waitTrue(t, "pat knows its microphone track", patSees(false), 5*time.Second)

		dash.run(t, 5*time.Second, chromedp.Click(chromedp.CSS(track+" button.mute")))
		dashWait(t, dash, "the dashboard shows the microphone muted", fmt.Sprintf(`document.querySelector(%q + '[data-muted="true"]') &&
  document.querySelector(%q + ' button.mute').textContent === 'Unmute'`, track, track), 5*time.Second)
		pat.waitTrue(t, "the server told pat's page its microphone is muted", patSees(true), 5*time.Second)

		// A reloaded dashboard keeps its token and learns everything,
		// the muted microphone included, from the stream's snapshot.
		dash.run(t, 15*time.Second, chromedp.Reload())
		dashWait(t, dash, "the reloaded dashboard is live", `window.parleyDashboard && window.parleyDashboard.state === 'live'`, 10*time.Second)
		dashWait(t, dash, "the snapshot has pat's tracks, the microphone muted", fmt.Sprintf(`(() => {
  const p = document.querySelector(%q);
  return p && p.querySelector('.track[data-kind="video"][data-muted="false"]') &&
    document.querySelector(%q + '[data-sid=%q][data-muted="true"]');
})()`, who, track, trackSID), 5*time.Second)

		// Unmute: the server unmutes the track (track_muted false), but the
		// demo page does not let anybody else switch its microphone on and
		// mutes it again, so the dashboard ends showing it muted.
		dash.run(t, 5*time.Second, chromedp.Click(chromedp.CSS(track+" button.mute")))
		dashWait(t, dash, "the server unmuted the microphone", fmt.Sprintf(`window.parleyDashboard.events().some((e) =>
  e.type === 'track_muted' && e.track.sid === %q && e.track.muted === false)`, trackSID), 5*time.Second)
		dashWait(t, dash, "pat's page muted itself again", fmt.Sprintf(`(() => {
  const m = window.parleyDashboard.events().filter((e) => e.type === 'track_muted' && e.track.sid === %q).map((e) => e.track.muted);
  return m.lastIndexOf(true) > m.indexOf(false) && m.indexOf(false) >= 0 && m[m.length - 1] === true &&
    document.querySelector(%q + '[data-muted="true"]');
})()`, trackSID, track), 5*time.Second)
		pat.waitTrue(t, "pat's page shows its microphone muted", patSees(true)+` && document.querySelector('#btn-mic').getAttribute('aria-pressed') === 'false'`, 5*time.Second)

		// Pat switches the microphone on itself: the dashboard follows.
		pat.run(t, 5*time.Second, chromedp.Click(chromedp.CSS("#btn-mic")))
		dashWait(t, dash, "the dashboard shows the microphone live again", fmt.Sprintf(`document.querySelector(%q + '[data-muted="false"]') &&
  document.querySelector(%q + ' button.mute').textContent === 'Mute'`, track, track), 5*time.Second)
		pat.waitTrue(t, "pat's page knows it is unmuted", patSees(false), 5*time.Second)
		if msg := value[string](t, dash, `window.parleyDashboard.message`); msg != "" {
			t.Fatalf("the dashboard shows an error: %q", msg)
		}
	})

	t.Run("stats and charts", func(t *testing.T) {
		dashWait(t, dash, "stats arrived", `window.parleyDashboard.statsCount >= 1`, 5*time.Second)
		dashWait(t, dash, "the stats count pat", `window.parleyDashboard.stats.participants >= 1 &&
  document.querySelector('#t-participants').textContent !== '–'`, 5*time.Second)
		// Both charts drew something: lines, axes and labels.
		// Pat's media reaches the server, so bitrate in is above zero.
		dashWait(t, dash, "bitrate in shows", `window.parleyDashboard.stats.bitrate_in_bps > 0`, 5*time.Second)
		for _, id := range []string{"chart-participants", "chart-bitrate"} {
			dashWait(t, dash, id+" is drawn", fmt.Sprintf(`(() => {
  const c = document.getElementById(%q);
  if (!c.width || !c.height) return false;
  const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < px.length; i += 4) if (px[i]) n++;
  return n > 100;
})()`, id), 5*time.Second)
		}
		shot(t, dash, "dashboard-pat")
	})

	t.Run("remove", func(t *testing.T) {
		remove := chromedp.CSS(who + " button.remove")
		dash.run(t, 5*time.Second, chromedp.Click(remove))
		dashWait(t, dash, "remove asks to confirm", fmt.Sprintf(`document.querySelector(%q + ' button.remove.armed')?.textContent === 'Really remove?'`, who), 2*time.Second)
		if v := value[bool](t, pat, `window.parley.state === 'connected' || window.parley.state === 'connecting'`); !v {
			t.Fatalf("pat left on the first click, before the confirmation")
		}
		dash.run(t, 5*time.Second, chromedp.Click(remove))
		dashWait(t, dash, "pat leaves the list", fmt.Sprintf(`!document.querySelector(%q) &&
  !window.parleyDashboard.rooms().some((r) => r.participants.some((p) => p.identity === %q))`, who, identity), 5*time.Second)
		pat.waitTrue(t, "pat's page was told it was removed", `window.parley.state === 'disconnected'`, 5*time.Second)
		// A room created by a join closes when its last participant goes.
		dashWait(t, dash, "the empty room closes", fmt.Sprintf(`!document.querySelector('.room[data-room=%q]')`, room), 5*time.Second)
		if msg := value[string](t, dash, `window.parleyDashboard.message`); msg != "" {
			t.Fatalf("the dashboard shows an error: %q", msg)
		}
	})

	t.Run("close room", func(t *testing.T) {
		const other = "ops-close"
		pat.run(t, 15*time.Second, chromedp.Navigate(deepLink(base, other, "Pat")))
		pat.waitTrue(t, "pat joined again", `window.parley && window.parley.self`, 15*time.Second)
		patSID := selfField(t, pat, "sid")
		roomSel := fmt.Sprintf(`.room[data-room=%q]`, other)
		dashWait(t, dash, "the room is listed", fmt.Sprintf(`document.querySelector(%q + ' .participant')`, roomSel), 5*time.Second)
		closeBtn := chromedp.CSS(roomSel + " button.close-room")
		dash.run(t, 5*time.Second, chromedp.Click(closeBtn))
		dashWait(t, dash, "close asks to confirm", fmt.Sprintf(`document.querySelector(%q + ' button.close-room.armed')?.textContent === 'Really close?'`, roomSel), 2*time.Second)
		dash.run(t, 5*time.Second, chromedp.Click(closeBtn))
		dashWait(t, dash, "the room leaves the list", fmt.Sprintf(`!document.querySelector(%q) &&
  !window.parleyDashboard.rooms().some((r) => r.name === %q)`, roomSel, other), 5*time.Second)
		// The demo page joins again after room_closed, which opens the room
		// anew: its session ended either way.
		pat.waitTrue(t, "pat's session ended", fmt.Sprintf(`window.parley.state !== 'connected' || window.parley.self?.sid !== %q`, patSID), 5*time.Second)
		pat.run(t, 5*time.Second, chromedp.Navigate("about:blank"))
	})

	// The list agreed with the server's totals throughout (the dashboard
	// refetches everything when they disagree for three stats in a row).
	dash.mu.Lock()
	defer dash.mu.Unlock()
	for _, l := range dash.logs {
		if strings.Contains(l, "disagrees with the server totals") {
			t.Errorf("dashboard: %s", l)
		}
	}
}

// TestBrowserDashboardToken: a server with API keys gives the dashboard no
// development token, so it asks for one; a token the server refuses shows
// "token refused" and the form again.
func TestBrowserDashboardToken(t *testing.T) {
	requireChromium(t)
	keyed, _ := startServer(t, func(c *Config) { c.Keys = map[string]string{"k1": strings.Repeat("s", 40)} })
	browser := startBrowser(t)
	p := newPage(t, browser, "dashboard")

	p.run(t, 15*time.Second, chromedp.Navigate(keyed+"/dashboard.html"))
	dashWait(t, p, "the token form shows", `window.parleyDashboard.state === 'no-token' && !document.querySelector('#token-form').hidden`, 5*time.Second)

	p.run(t, 10*time.Second,
		chromedp.SetValue(chromedp.CSS("#token-input"), "not-a-token"),
		chromedp.Click(chromedp.CSS("#token-form button[type=submit]")))
	dashWait(t, p, "the token is refused", `window.parleyDashboard.state === 'unauthorized' &&
  document.querySelector('#conn-state').textContent === 'token refused' &&
  !document.querySelector('#token-form').hidden && document.querySelector('#token-reason').textContent.includes('refused')`, 5*time.Second)
	if v := value[string](t, p, `sessionStorage.getItem('parley.adminToken') || ''`); v != "" {
		t.Fatalf("the dashboard kept the refused token %q", v)
	}

	// A token in the link is taken, and taken out of the address bar.
	p.run(t, 15*time.Second, chromedp.Navigate(keyed+"/dashboard.html?token=also-bad"))
	dashWait(t, p, "the link's token is refused", `window.parleyDashboard.state === 'unauthorized' && !location.search.includes('token=')`, 5*time.Second)
	shot(t, p, "dashboard-refused")
}
