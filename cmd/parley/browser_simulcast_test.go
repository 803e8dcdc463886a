package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// The media quality browser tests (docs/protocol.md, "Media quality"): a
// page publishes its camera as three simulcast layers; the pages that
// watch it tell the server how large they show it (track_settings), get a
// layer to match, and get nothing while the tile is hidden; the publisher
// encodes only the layers somebody watches (set_layers); and a page
// highlights who speaks (speakers).

// noCameraJS runs in a tab before the page: getUserMedia finds no camera,
// so the page joins with its microphone only and only the publisher
// encodes video on the test's two cores.
const noCameraJS = `(() => {
  const md = navigator.mediaDevices;
  const gum = md.getUserMedia.bind(md);
  md.getUserMedia = (c) => (c && c.video
    ? Promise.reject(new DOMException('this test page has no camera', 'NotFoundError'))
    : gum(c));
})()`

// withoutCamera makes the tab's next pages find no camera.
func withoutCamera(t *testing.T, p *page) {
	t.Helper()
	p.run(t, 5*time.Second, func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{Source: noCameraJS})
		return chromedp.Void{}, err
	})
}

// videoIn is the subscriber's inbound-rtp of one participant's camera.
type videoIn struct {
	Found  bool    `json:"found"`
	Width  float64 `json:"width"`
	Height float64 `json:"height"`
	Bytes  float64 `json:"bytes"`
	Frames float64 `json:"frames"`
}

// inboundOf reads videoIn for the video shown in psid's camera tile.
func inboundOf(psid string) string {
	return fmt.Sprintf(`(async () => {
  const out = {found: false, width: 0, height: 0, bytes: 0, frames: 0};
  const v = document.querySelector('.tile[data-participant-sid=%q][data-source="camera"] video');
  const track = v && v.srcObject && v.srcObject.getVideoTracks()[0];
  const pc = window.parley && window.parley.subscriberPC;
  if (!track || !pc) return out;
  (await pc.getStats()).forEach((r) => {
    if (r.type !== 'inbound-rtp' || r.kind !== 'video' || r.trackIdentifier !== track.id) return;
    Object.assign(out, {found: true, width: r.frameWidth || 0, height: r.frameHeight || 0, bytes: r.bytesReceived || 0, frames: r.framesDecoded || 0});
  });
  return out;
})()`, psid)
}

// layerOut is the publisher's outbound-rtp of one simulcast layer.
type layerOut struct {
	Rid    string  `json:"rid"`
	Width  float64 `json:"width"`
	Height float64 `json:"height"`
	Bytes  float64 `json:"bytes"`
	Active bool    `json:"active"`
	Limit  string  `json:"limit"`
	// PLIs received for the layer and keyframes encoded.
	PLIs      float64 `json:"plis"`
	Keyframes float64 `json:"keyframes"`
}

// outboundLayers lists the publisher connection's outbound video with a
// rid, by rid.
const outboundLayers = `(async () => {
  const pc = window.parley && window.parley.publisherPC;
  const out = [];
  if (!pc) return out;
  (await pc.getStats()).forEach((r) => {
    if (r.type !== 'outbound-rtp' || r.kind !== 'video' || !r.rid) return;
    out.push({rid: r.rid, width: r.frameWidth || 0, height: r.frameHeight || 0, bytes: r.bytesSent || 0,
      active: r.active !== false, limit: r.qualityLimitationReason || '', plis: r.pliCount || 0, keyframes: r.keyFramesEncoded || 0});
  });
  return out.sort((a, b) => a.rid.localeCompare(b.rid));
})()`

// sizeTile pins psid's camera tile to the top left corner at w×h CSS
// pixels (the CSP allows CSSOM changes).
func sizeTile(psid string, w, h int) string {
	return fmt.Sprintf(`(() => {
  const el = document.querySelector('.tile[data-participant-sid=%q][data-source="camera"]');
  if (!el) return false;
  Object.assign(el.style, {position: 'fixed', left: '0', top: '0', width: '%dpx', height: '%dpx', zIndex: '10'});
  return true;
})()`, psid, w, h)
}

// settingsOf is what the page last told the server about the video of
// psid's camera tile (track_settings), as JSON; "null" before it did.
func settingsOf(psid string) string {
	return fmt.Sprintf(`JSON.stringify((() => {
  const v = window.parley.tracks().find((t) => t.participant_sid === %q && t.kind === 'video' && t.source === 'camera');
  return (v && window.parley.trackSettings()[v.sid]) || null;
})())`, psid)
}

// blockSockets makes the page's next WebSockets fail to connect, until
// window.WebSocket = window.RealWebSocket. The sockets already open stay,
// and dropSockets still finds them by their prototype.
const blockSockets = `(() => {
  const Real = WebSocket;
  const blocked = function () { return new Real('ws://127.0.0.1:9/'); };
  Object.assign(blocked, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
  blocked.prototype = Real.prototype;
  window.RealWebSocket = Real;
  window.WebSocket = blocked;
  return true;
})()`

// allInbound describes every inbound RTP stream of the subscriber
// connection, and the tracks of the tiles, as JSON (for failures).
const allInbound = `(async () => {
  const out = {inbound: [], tiles: []};
  const pc = window.parley && window.parley.subscriberPC;
  if (pc) (await pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp') out.inbound.push({kind: r.kind, mid: r.mid, ssrc: r.ssrc, track: r.trackIdentifier, packets: r.packetsReceived,
      frames: r.framesDecoded, keyframes: r.keyFramesDecoded, plis: r.pliCount, firs: r.firCount, nacks: r.nackCount});
    // What arrives at all, whether or not it belongs to a known stream.
    if (r.type === 'transport') out.transport = {packets: r.packetsReceived, bytes: r.bytesReceived, srtp: r.srtpCipher, dtls: r.dtlsState};
  });
  for (const v of document.querySelectorAll('.tile:not(.local) video')) {
    for (const tr of v.srcObject.getTracks()) out.tiles.push({kind: tr.kind, id: tr.id, state: tr.readyState, muted: tr.muted});
  }
  out.mids = pc ? pc.getTransceivers().map((t) => [t.mid, t.receiver.track.kind, t.receiver.track.id, t.currentDirection]) : [];
  return JSON.stringify(out);
})()`

// logMedia logs what viewer receives of psid's camera and what pub
// encodes, when a test failed.
func logMedia(t *testing.T, viewer, pub *page, psid string) {
	ctx, cancel := context.WithTimeout(viewer.ctx, 5*time.Second)
	defer cancel()
	in, _ := eval[string](ctx, allInbound)
	told, _ := eval[string](ctx, settingsOf(psid))
	pctx, pcancel := context.WithTimeout(pub.ctx, 5*time.Second)
	defer pcancel()
	out, _ := eval[[]layerOut](pctx, outboundLayers)
	enc, _ := eval[string](pctx, activeLayers)
	t.Logf("%s receives %s and told %s; %s encodes %q: %+v", viewer.name, in, told, pub.name, enc, out)
}

// activeLayers lists the RIDs the publisher page encodes, sorted.
const activeLayers = `[...window.parley.cameraLayers()].sort().join(',')`

// ridOf names the camera layer (sendEncodings in simulcast.js, from a
// 1280x720 capture) nearest to a decoded frame width.
func ridOf(width float64) string {
	best, dist := "", math.Inf(1)
	for rid, w := range map[string]float64{"q": 320, "h": 640, "f": 1280} {
		if d := math.Abs(w - width); d < dist {
			best, dist = rid, d
		}
	}
	return best
}

// encodesWatched waits until the publisher encodes exactly the layers the
// viewers decode (dynacast), and returns them. The viewers' layers may
// change meanwhile (bandwidth estimates), so both sides are read afresh
// each time.
func encodesWatched(t *testing.T, pub *page, psid string, timeout time.Duration, viewers ...*page) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var rids, seen []string
		for _, v := range viewers {
			in := value[videoIn](t, v, inboundOf(psid))
			rids = append(rids, ridOf(in.Width))
			seen = append(seen, fmt.Sprintf("%s %vx%v", v.name, in.Width, in.Height))
		}
		slices.Sort(rids)
		want := strings.Join(slices.Compact(rids), ",")
		got := value[string](t, pub, activeLayers)
		if got == want {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s the publisher encodes %q; the viewers decode %s (layers %s)", timeout, got, strings.Join(seen, ", "), want)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// bytesOver measures how many video bytes of psid's camera p receives in d.
func bytesOver(t *testing.T, p *page, psid string, d time.Duration) float64 {
	t.Helper()
	before := value[videoIn](t, p, inboundOf(psid))
	time.Sleep(d)
	after := value[videoIn](t, p, inboundOf(psid))
	return after.Bytes - before.Bytes
}

// TestBrowserSimulcast: a publisher sends its camera as simulcast; one
// page shows it small (160x90) and one large (1280x720).
//   - the publisher sends three RID layers and lists them in its offer;
//   - the small page decodes a narrower layer than the large one, and the
//     large one the top layer;
//   - the publisher encodes only the layers watched (set_layers);
//   - the small page hides its tile: its video stops, then resumes when
//     shown again; hidden while its socket is down, the page tells the
//     server after the resume;
//   - the Quality choice "low" caps the large page at the lowest layer;
//   - active speaker: the publisher's fake microphone beeps and the other
//     pages highlight its tile and People entry; muted, it is not.
func TestBrowserSimulcast(t *testing.T) {
	requireChromium(t)
	base, _ := startServer(t)
	browser := startBrowser(t)
	const room = "browser-simulcast"
	const mediaTimeout = 30 * time.Second
	start := time.Now()

	pub := newPage(t, browser, "publisher")
	pub.run(t, 15*time.Second, chromedp.Navigate(deepLink(base, room, "Pub")))
	pub.waitTrue(t, "the publisher connects", `window.parley && window.parley.publisherPC && window.parley.publisherPC.connectionState === 'connected'`, mediaTimeout)
	pubSID := selfField(t, pub, "sid")
	pubID := selfField(t, pub, "identity")

	t.Run("publishes three layers", func(t *testing.T) {
		rids := value[string](t, pub, `(() => {
  const s = window.parley.publisherPC.getSenders().find((x) => x.track && x.track.kind === 'video');
  return s ? s.getParameters().encodings.map((e) => e.rid).join(',') : '';
})()`)
		if rids != "q,h,f" {
			t.Fatalf("the camera sender's encodings are %q, want q,h,f", rids)
		}
		// Alone in the room, the publisher may soon be told to pause every
		// layer (nobody watches), and the top one may not have gone out
		// yet (the browser's own estimate starts low): the three streams
		// are there, and at least the lowest went out.
		layers := poll(t, pub, "three layers are set up", outboundLayers, mediaTimeout, func(ls []layerOut) bool {
			return len(ls) == 3 && ls[0].Rid == "f" && ls[1].Rid == "h" && ls[2].Rid == "q" && ls[2].Bytes > 0
		})
		t.Logf("publisher layers: %+v", layers)
		capture := value[string](t, pub, `(() => { const s = window.parley.publisherPC.getSenders().find((x) => x.track && x.track.kind === 'video').track.getSettings(); return s.width + 'x' + s.height; })()`)
		t.Logf("camera capture %s", capture)
	})

	watch := func(name string, w, h int) *page {
		p := newPage(t, browser, name)
		withoutCamera(t, p)
		p.run(t, 15*time.Second, chromedp.Navigate(deepLink(base, room, name)))
		p.waitTrue(t, "joined", `window.parley && window.parley.state === 'connected'`, mediaTimeout)
		// Muted, so that only the publisher can be the speaker.
		p.run(t, 5*time.Second, chromedp.WaitEnabled(chromedp.CSS("#btn-mic")), chromedp.Click(chromedp.CSS("#btn-mic")))
		p.waitTrue(t, "the microphone is off", `document.querySelector('#btn-mic').getAttribute('aria-pressed') === 'false'`, 5*time.Second)
		p.waitTrue(t, "the publisher's tile", sizeTile(pubSID, w, h), mediaTimeout)
		ctx, cancel := context.WithTimeout(context.Background(), mediaTimeout)
		defer cancel()
		for value[videoIn](t, p, inboundOf(pubSID)).Frames == 0 {
			select {
			case <-ctx.Done():
				t.Fatalf("%s: does not decode the publisher's camera after %s: it receives %+v (inbound: %s), told %s; the publisher encodes %s: %+v",
					name, mediaTimeout, value[videoIn](t, p, inboundOf(pubSID)), value[string](t, p, allInbound), value[string](t, p, settingsOf(pubSID)),
					value[string](t, pub, activeLayers), value[[]layerOut](t, pub, outboundLayers))
			case <-time.After(100 * time.Millisecond):
			}
		}
		return p
	}
	small := watch("small", 160, 90)
	// With one small viewer, the publisher encodes only the lowest layer;
	// the large viewer comes in while the others are off.
	only := poll(t, pub, "encodes only the small layer", activeLayers, 15*time.Second, func(s string) bool { return s == "q" })
	t.Logf("with the small viewer alone the publisher encodes %s", only)
	large := watch("large", 1280, 720)
	smallSID, largeSID := selfField(t, small, "sid"), selfField(t, large, "sid")
	t.Logf("three pages decode after %s", time.Since(start).Round(time.Millisecond))

	t.Run("track_settings", func(t *testing.T) {
		for _, c := range []struct {
			p    *page
			want string
		}{{small, `{"track_sid":%q,"width":160,"height":90}`}, {large, `{"track_sid":%q,"width":1280,"height":720}`}} {
			sid := value[string](t, c.p, fmt.Sprintf(`window.parley.tracks().find((t) => t.participant_sid === %q && t.kind === 'video').sid`, pubSID))
			want := fmt.Sprintf(c.want, sid)
			poll(t, c.p, "tells the tile's size", settingsOf(pubSID), 10*time.Second, func(s string) bool { return s == want })
		}
	})

	t.Run("layers in track_published", func(t *testing.T) {
		got := poll(t, small, "the publisher's camera has layers", fmt.Sprintf(`JSON.stringify((window.parley.tracks().find((t) => t.participant_sid === %q && t.kind === 'video') || {}).layers || null)`, pubSID),
			5*time.Second, func(s string) bool { return s != "null" })
		for _, want := range []string{`"rid":"q","quality":"low"`, `"rid":"h","quality":"medium"`, `"rid":"f","quality":"high"`, `"width":320,"height":180`} {
			if !strings.Contains(got, want) {
				t.Errorf("track_published layers %s lack %s", got, want)
			}
		}
	})

	// The small page decodes a narrower layer than the large one.
	var smallIn, largeIn videoIn
	t.Run("small and large", func(t *testing.T) {
		began := time.Now()
		var timeline []string // what both decode, as it changes
		ctx, cancel := context.WithTimeout(context.Background(), mediaTimeout)
		defer cancel()
		for {
			smallIn = value[videoIn](t, small, inboundOf(pubSID))
			largeIn = value[videoIn](t, large, inboundOf(pubSID))
			now := fmt.Sprintf("small %vx%v, large %vx%v", smallIn.Width, smallIn.Height, largeIn.Width, largeIn.Height)
			if len(timeline) == 0 || !strings.HasSuffix(timeline[len(timeline)-1], now) {
				timeline = append(timeline, fmt.Sprintf("%.1fs: %s", time.Since(began).Seconds(), now))
			}
			if smallIn.Width > 0 && largeIn.Width > 0 && smallIn.Width < largeIn.Width {
				break
			}
			select {
			case <-ctx.Done():
				layers := value[[]layerOut](t, pub, outboundLayers)
				t.Fatalf("small decodes %vx%v, large %vx%v after %s (%s); the publisher sends %+v", smallIn.Width, smallIn.Height,
					largeIn.Width, largeIn.Height, mediaTimeout, strings.Join(timeline, "; "), layers)
			case <-time.After(200 * time.Millisecond):
			}
		}
		t.Logf("small decodes %vx%v, large %vx%v [%s]; the publisher sends %+v", smallIn.Width, smallIn.Height,
			largeIn.Width, largeIn.Height, strings.Join(timeline, "; "), value[[]layerOut](t, pub, outboundLayers))
	})

	// On loopback nothing limits the bandwidth: the large tile gets the
	// top layer, the one the capture's own size.
	t.Run("large gets the top layer", func(t *testing.T) {
		began := time.Now()
		in := poll(t, large, "decodes 1280 wide", inboundOf(pubSID), mediaTimeout, func(v videoIn) bool { return v.Width >= 1280 })
		t.Logf("large decodes %vx%v (after %s more)", in.Width, in.Height, time.Since(began).Round(100*time.Millisecond))
	})

	t.Run("dynacast", func(t *testing.T) {
		got := encodesWatched(t, pub, pubSID, 15*time.Second, small, large)
		t.Logf("the publisher encodes %s", got)
	})

	t.Run("hidden tile pauses", func(t *testing.T) {
		value[bool](t, small, fmt.Sprintf(`(document.querySelector(%q).hidden = true)`, cameraTile(pubSID)))
		poll(t, small, "tells paused", settingsOf(pubSID), 5*time.Second, func(s string) bool { return strings.Contains(s, `"paused":true`) })
		hiddenAt := time.Now()
		// Wait for the video to stop, then measure it stopped.
		deadline := time.Now().Add(10 * time.Second)
		for {
			if n := bytesOver(t, small, pubSID, time.Second); n < 1000 {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("the hidden tile still receives %.0f bytes/s after %s", n, time.Since(hiddenAt).Round(time.Millisecond))
			}
		}
		stopped := time.Since(hiddenAt)
		n := bytesOver(t, small, pubSID, 3*time.Second)
		t.Logf("hidden: the video stopped within %s; then %.0f bytes in 3s", stopped.Round(100*time.Millisecond), n)
		if n > 4096 {
			t.Fatalf("the hidden tile received %.0f bytes in 3s, want under 4 KiB", n)
		}
		keepsDecoding(t, large, "the large page keeps decoding", framesOf(pubSID, "camera"), 10*time.Second)
		got := encodesWatched(t, pub, pubSID, 15*time.Second, large)
		t.Logf("the publisher encodes %s", got)
	})

	t.Run("shown again resumes", func(t *testing.T) {
		value[bool](t, small, fmt.Sprintf(`(document.querySelector(%q).hidden = false, true)`, cameraTile(pubSID)))
		shownAt := time.Now()
		poll(t, small, "tells the size again", settingsOf(pubSID), 5*time.Second, func(s string) bool { return strings.Contains(s, `"width":160`) })
		keepsDecoding(t, small, "decodes again", framesOf(pubSID, "camera"), 15*time.Second)
		t.Logf("shown: decoding again after %s", time.Since(shownAt).Round(100*time.Millisecond))
		if n := bytesOver(t, small, pubSID, 2*time.Second); n < 4096 {
			t.Fatalf("the shown tile received %.0f bytes in 2s", n)
		}
		encodesWatched(t, pub, pubSID, 15*time.Second, small, large)
	})

	// The page hides the tile while its socket is down: it cannot tell the
	// server then, and does once the session is resumed.
	t.Run("resume tells again", func(t *testing.T) {
		value[bool](t, small, blockSockets)
		if n := dropSockets(t, small); n < 1 {
			t.Fatal("the small page had no WebSocket")
		}
		small.waitTrue(t, "reconnecting", `window.parley.state === 'reconnecting'`, 5*time.Second)
		value[bool](t, small, fmt.Sprintf(`(document.querySelector(%q).hidden = true)`, cameraTile(pubSID)))
		time.Sleep(time.Second) // the page would have told "paused" by now
		if s := value[string](t, small, settingsOf(pubSID)); !strings.Contains(s, `"width":160`) {
			t.Fatalf("while the socket was down the page told %s", s)
		}
		value[bool](t, small, `(window.WebSocket = window.RealWebSocket, document.querySelector('#btn-retry').click(), true)`)
		small.waitTrue(t, "resumed", `window.parley.state === 'connected'`, 15*time.Second)
		if sid := selfField(t, small, "sid"); sid != smallSID {
			t.Fatalf("the small page is %s after the reconnect, want its session %s resumed", sid, smallSID)
		}
		poll(t, small, "tells paused after the resume", settingsOf(pubSID), 10*time.Second, func(s string) bool { return strings.Contains(s, `"paused":true`) })
		deadline := time.Now().Add(10 * time.Second)
		for n := bytesOver(t, small, pubSID, time.Second); n >= 1000; n = bytesOver(t, small, pubSID, time.Second) {
			if time.Now().After(deadline) {
				t.Fatalf("the tile hidden during the outage still receives %.0f bytes/s", n)
			}
		}
		value[bool](t, small, fmt.Sprintf(`(document.querySelector(%q).hidden = false, true)`, cameraTile(pubSID)))
		keepsDecoding(t, small, "decodes again", framesOf(pubSID, "camera"), 15*time.Second)
	})

	// The page's Quality choice caps what it receives, whatever the size.
	t.Run("quality low", func(t *testing.T) {
		choose := func(q string) {
			value[bool](t, large, fmt.Sprintf(`(() => { const s = document.querySelector('#sel-quality'); s.value = %q; s.dispatchEvent(new Event('change')); return true; })()`, q))
		}
		choose("low")
		poll(t, large, "tells quality low", settingsOf(pubSID), 5*time.Second, func(s string) bool { return strings.Contains(s, `"quality":"low"`) })
		in := poll(t, large, "decodes the low layer", inboundOf(pubSID), 15*time.Second, func(v videoIn) bool { return v.Width > 0 && v.Width <= 320 })
		t.Logf("quality low: the large tile decodes %vx%v", in.Width, in.Height)
		choose("auto")
		poll(t, large, "tells no quality", settingsOf(pubSID), 5*time.Second, func(s string) bool { return !strings.Contains(s, `"quality"`) && strings.Contains(s, `"width":1280`) })
		keepsDecoding(t, large, "keeps decoding", framesOf(pubSID, "camera"), 10*time.Second)
	})

	t.Run("active speaker", func(t *testing.T) {
		speaking := fmt.Sprintf(`(() => {
  const sp = window.parley.speakers().map((x) => x.sid);
  return sp[0] === %q && !sp.includes(%q) && !sp.includes(%q) &&
    !!document.querySelector(%q + '.speaking.loudest') && !!document.querySelector(%q + '.speaking');
})()`, pubSID, smallSID, largeSID, cameraTile(pubSID), person(pubID))
		// The large tile covers the People button: click it from the page.
		value[bool](t, large, `(document.querySelector('#btn-people').click(), true)`)
		large.waitTrue(t, "the People panel opens", `!document.querySelector('#people-panel').hidden`, 5*time.Second)
		large.waitTrue(t, "highlights the beeping publisher", speaking, 15*time.Second)
		small.waitTrue(t, "highlights the beeping publisher", fmt.Sprintf(`!!document.querySelector(%q)`, cameraTile(pubSID)+".speaking"), 15*time.Second)
		pub.waitTrue(t, "the publisher sees itself speak", fmt.Sprintf(`!!document.querySelector(%q)`, `.tile.local[data-source="camera"].speaking`), 15*time.Second)

		// Muted, the publisher stops being a speaker, and stays so.
		pub.run(t, 5*time.Second, chromedp.Click(chromedp.CSS("#btn-mic")))
		notSpeaking := fmt.Sprintf(`!window.parley.speakers().some((x) => x.sid === %q) && !document.querySelector(%q)`, pubSID, cameraTile(pubSID)+".speaking")
		large.waitTrue(t, "the muted publisher is no speaker", notSpeaking, 10*time.Second)
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			if !value[bool](t, large, notSpeaking) {
				t.Fatal("the muted publisher is a speaker again")
			}
		}
	})
	t.Logf("TestBrowserSimulcast took %s", time.Since(start).Round(time.Millisecond))
}

// holdTopLayerJS runs in the publisher's tab before the page: the camera's
// top layer (rid f) starts inactive, as when a browser's bandwidth
// estimate is still too low for it when the server first pauses the
// layers nobody watches.
const holdTopLayerJS = `(() => {
  const add = RTCPeerConnection.prototype.addTransceiver;
  RTCPeerConnection.prototype.addTransceiver = function (track, init) {
    if (init && init.sendEncodings) {
      init = {...init, sendEncodings: init.sendEncodings.map((e) => (e.rid === 'f' ? {...e, active: false} : e))};
    }
    return add.call(this, track, init);
  };
})()`

// TestBrowserSimulcastTopLayerLate: the publisher's top layer has not gone
// out yet when it is alone in the room and its layers are paused (nobody
// watches). A viewer that then shows it at 1280x720 still gets the top
// layer: the offer described it, so the server asks for it (set_layers).
func TestBrowserSimulcastTopLayerLate(t *testing.T) {
	requireChromium(t)
	base, _ := startServer(t)
	browser := startBrowser(t)
	const room = "browser-simulcast-late"
	const mediaTimeout = 30 * time.Second
	start := time.Now()

	pub := newPage(t, browser, "publisher")
	pub.run(t, 5*time.Second, func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{Source: holdTopLayerJS})
		return chromedp.Void{}, err
	})
	pub.run(t, 15*time.Second, chromedp.Navigate(deepLink(base, room, "Pub")))
	pub.waitTrue(t, "the publisher connects", `window.parley && window.parley.publisherPC && window.parley.publisherPC.connectionState === 'connected'`, mediaTimeout)
	pubSID := selfField(t, pub, "sid")
	if got := value[string](t, pub, activeLayers); got != "h,q" {
		t.Fatalf("the publisher starts with %q, want h,q (the top layer held back)", got)
	}
	// Nobody watches: every layer is paused.
	poll(t, pub, "pauses every layer", activeLayers, 15*time.Second, func(s string) bool { return s == "" })

	large := newPage(t, browser, "large")
	withoutCamera(t, large)
	large.run(t, 15*time.Second, chromedp.Navigate(deepLink(base, room, "large")))
	large.waitTrue(t, "the publisher's tile", sizeTile(pubSID, 1280, 720), mediaTimeout)
	watched := time.Now()
	defer func() {
		if t.Failed() {
			ctx, cancel := context.WithTimeout(pub.ctx, 5*time.Second)
			defer cancel()
			enc, _ := eval[string](ctx, activeLayers)
			t.Logf("the publisher encodes %q", enc)
		}
	}()
	in := poll(t, large, "decodes the top layer", inboundOf(pubSID), mediaTimeout, func(v videoIn) bool { return v.Width >= 1280 })
	t.Logf("the late viewer decodes %vx%v after %s; the publisher encodes %s", in.Width, in.Height,
		time.Since(watched).Round(100*time.Millisecond), value[string](t, pub, activeLayers))
	t.Logf("TestBrowserSimulcastTopLayerLate took %s", time.Since(start).Round(time.Millisecond))
}
