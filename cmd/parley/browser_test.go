package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// newBrowser starts headless Chromium with a fake camera, microphone and
// screen. Tests carrying media run inside a loopback-only network
// namespace (see Makefile), so ICE only finds 127.0.0.1.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium is required in CI (apt-get install chromium)")
		}
		t.Skip("chromium not installed (apt-get install chromium)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelB := chromedp.NewContext(actx)
	if err := chromedp.Do(bctx); err != nil {
		cancelB()
		cancelA()
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() { cancelB(); cancelA() })
	return bctx
}

// tab opens a new tab on url.
func tab(t *testing.T, browser context.Context, url string) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	return ctx
}

func evalJS[T any](ctx context.Context, js string) (T, error) {
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return chromedp.Run(c, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

// click clicks a button by id, as a user would.
func click(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	if _, err := evalJS[bool](ctx, fmt.Sprintf(`(() => { const b = document.getElementById(%q); if (!b || b.disabled) return false; b.click(); return true; })()`, id)); err != nil {
		t.Fatalf("click #%s: %v", id, err)
	}
}

// decodedVideos counts inbound video streams with decoded frames.
const decodedVideos = `(async () => {
  const pc = window.parley && window.parley.subscriberPC;
  if (!pc) return 0;
  let n = 0;
  (await pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video' && r.framesDecoded > 0) n++; });
  return n;
})()`

func waitJS(t *testing.T, ctx context.Context, d time.Duration, what, js string, want func(float64) bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	var v float64
	var err error
	for time.Now().Before(deadline) {
		if v, err = evalJS[float64](ctx, js); err == nil && want(v) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s (last value %v, err %v)", d, what, v, err)
}

func atLeast(n float64) func(float64) bool { return func(v float64) bool { return v >= n } }

func TestBrowserCall(t *testing.T) {
	base, _ := startServer(t)
	browser := newBrowser(t)
	a := tab(t, browser, base+"/?room=e2e&name=Alice")
	b := tab(t, browser, base+"/?room=e2e&name=Bob")

	waitJS(t, a, 20*time.Second, "Alice decodes Bob's video", decodedVideos, atLeast(1))
	waitJS(t, b, 20*time.Second, "Bob decodes Alice's video", decodedVideos, atLeast(1))

	// Alice shares her screen: Bob decodes a second video in a screen tile.
	click(t, a, "btn-screen")
	waitJS(t, b, 20*time.Second, "Bob decodes Alice's screen", decodedVideos, atLeast(2))
	waitJS(t, b, 5*time.Second, "a screen tile on Bob's page",
		`document.querySelectorAll('.tile[data-source="screen"]').length`, atLeast(1))

	// Alice stops sharing: the screen tile goes away on Bob's page.
	click(t, a, "btn-screen")
	waitJS(t, b, 10*time.Second, "the screen tile to disappear",
		`document.querySelectorAll('.tile[data-source="screen"]').length`, func(v float64) bool { return v == 0 })

	// Alice leaves: her tile disappears on Bob's page.
	aliceSID, err := evalJS[string](a, `window.parley.self.sid`)
	if err != nil || aliceSID == "" {
		t.Fatalf("alice sid %q: %v", aliceSID, err)
	}
	waitJS(t, b, 5*time.Second, "Alice's tile on Bob's page",
		fmt.Sprintf(`document.querySelectorAll('.tile[data-participant-sid="%s"]').length`, aliceSID), atLeast(1))
	click(t, a, "btn-leave")
	waitJS(t, b, 10*time.Second, "Alice's tile to disappear",
		fmt.Sprintf(`document.querySelectorAll('.tile[data-participant-sid="%s"]').length`, aliceSID), func(v float64) bool { return v == 0 })
}

// TestBrowserFirstFrameTime measures, with one participant already in the
// room, the time from opening the deep link to the first decoded remote
// frame. The README quotes it.
func TestBrowserFirstFrameTime(t *testing.T) {
	base, _ := startServer(t)
	browser := newBrowser(t)
	first := tab(t, browser, base+"/?room=timing&name=First")
	waitJS(t, first, 20*time.Second, "first page publishing", `window.parley && window.parley.state === 'connected' ? 1 : 0`, atLeast(1))
	// Warm the browser (codec init, first page load) so the figure is the
	// join itself.
	warm := tab(t, browser, base+"/?room=warmup&name=Warm")
	_ = warm

	ctx, cancel := chromedp.NewContext(browser)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/?room=timing&name=Second")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, 20*time.Second, "first remote frame", decodedVideos, atLeast(1))
	elapsed := time.Since(start)
	t.Logf("first remote frame decoded after %d ms", elapsed.Milliseconds())
	if out := os.Getenv("PARLEY_FIRST_FRAME_OUT"); out != "" {
		_ = os.WriteFile(out, []byte(fmt.Sprintf("%d\n", elapsed.Milliseconds())), 0o644)
	}
}
