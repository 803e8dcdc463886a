package main

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

func TestScratchSimulcastRamp(t *testing.T) {
	requireChromium(t)
	base, _ := startServer(t)
	browser := startBrowser(t)
	const room = "scratch"
	pub := newPage(t, browser, "publisher")
	pub.run(t, 15*time.Second, chromedp.Navigate(deepLink(base, room, "Pub")))
	pub.waitTrue(t, "pub", `window.parley && window.parley.publisherPC && window.parley.publisherPC.connectionState === 'connected'`, 30*time.Second)
	pubSID := selfField(t, pub, "sid")
	large := newPage(t, browser, "large")
	withoutCamera(t, large)
	large.run(t, 15*time.Second, chromedp.Navigate(deepLink(base, room, "large")))
	large.waitTrue(t, "tile", sizeTile(pubSID, 1280, 720), 30*time.Second)
	start := time.Now()
	for time.Since(start) < 60*time.Second {
		in := value[videoIn](t, large, inboundOf(pubSID))
		ls := value[[]layerOut](t, pub, outboundLayers)
		est := value[float64](t, large, `(async () => { let v = 0; (await window.parley.subscriberPC.getStats()).forEach((r) => { if (r.type === 'candidate-pair' && r.nominated) v = r.availableIncomingBitrate || 0; }); return v; })()`)
		t.Logf("%5.1fs large %vx%v bytes %.0f | pub %s | est %.0f", time.Since(start).Seconds(), in.Width, in.Height, in.Bytes, fmtLayers(ls), est)
		time.Sleep(2 * time.Second)
	}
}

func fmtLayers(ls []layerOut) string {
	s := ""
	for _, l := range ls {
		a := "-"
		if l.Active {
			a = "+"
		}
		s += l.Rid + a + " " + itoa(l.Width) + " " + l.Limit + "; "
	}
	return s
}

func itoa(f float64) string { return time.Duration(f).String() }
