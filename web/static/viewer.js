// How this page shows each remote video track, told to the server with
// track_settings (docs/protocol.md, "Media quality"): the displayed size
// in device pixels, so that a small tile gets a small simulcast layer;
// paused while the tile is hidden, scrolled away or the page is in the
// background, so that nothing is sent for it; and the highest quality the
// user chose for the page.

// Sizes settle (a window being dragged, a grid reflowing) before they are
// told, at most once per DEBOUNCE_MS per track.
const DEBOUNCE_MS = 300;
// A size that changes by less than this (device pixels) is not told again.
const SIZE_SLACK = 16;

export const QUALITIES = Object.freeze(['auto', 'high', 'medium', 'low']);

// Viewer sends through send(type, data) -> bool (false while the socket is
// down: resend() after the resume tells everything again).
export class Viewer {
  constructor({ send, quality = 'auto' }) {
    this.sendMsg = send;
    this.quality = QUALITIES.includes(quality) ? quality : 'auto';
    this.views = new Map(); // video element -> view
    this.stopped = false;
    this.resizer = new ResizeObserver((entries) => {
      for (const e of entries) {
        const v = this.views.get(e.target);
        if (!v) continue;
        const dp = e.devicePixelContentBoxSize && e.devicePixelContentBoxSize[0];
        const dpr = window.devicePixelRatio || 1;
        v.width = Math.round(dp ? dp.inlineSize : e.contentRect.width * dpr);
        v.height = Math.round(dp ? dp.blockSize : e.contentRect.height * dpr);
        v.sized = true;
        this.schedule(v);
      }
    });
    this.intersector = new IntersectionObserver((entries) => {
      for (const e of entries) {
        const v = this.views.get(e.target);
        if (!v) continue;
        v.onScreen = e.isIntersecting;
        v.seen = true;
        this.schedule(v);
      }
    });
    this.onVisibility = () => this.scheduleAll();
    document.addEventListener('visibilitychange', this.onVisibility);
  }

  // watch tells the server how tile.video shows the remote video track
  // sid, from now on; an empty sid stops (the track is gone).
  watch(tile, sid) {
    if (this.stopped) return;
    const el = tile.video;
    let v = this.views.get(el);
    if (!sid) {
      if (v) this.forget(v);
      return;
    }
    if (v && v.sid === sid) return;
    if (v) this.forget(v);
    v = { el, sid, width: 0, height: 0, sized: false, onScreen: false, seen: false, timer: 0, sent: '' };
    this.views.set(el, v);
    this.resizer.observe(el);
    this.intersector.observe(el);
  }

  forget(v) {
    clearTimeout(v.timer);
    this.views.delete(v.el);
    this.resizer.unobserve(v.el);
    this.intersector.unobserve(v.el);
  }

  setQuality(q) {
    if (!QUALITIES.includes(q) || q === this.quality) return;
    this.quality = q;
    this.scheduleAll(0);
  }

  // resend tells every setting again, e.g. after a resumed session (what
  // was said while the socket was down is lost) or a refused message.
  resend() {
    for (const v of this.views.values()) v.sent = '';
    this.scheduleAll(0);
  }

  scheduleAll(delay) {
    for (const v of this.views.values()) this.schedule(v, delay);
  }

  schedule(v, delay = DEBOUNCE_MS) {
    if (this.stopped) return;
    clearTimeout(v.timer);
    v.timer = setTimeout(() => this.flush(v), delay);
  }

  // settings is what to tell about one view, or null before the browser
  // has said how it shows it.
  settings(v) {
    if (!v.sized || !v.seen) return null;
    const pip = document.pictureInPictureElement === v.el;
    const hidden = !pip && (document.visibilityState === 'hidden' || !v.onScreen || v.width === 0 || v.height === 0);
    const s = { track_sid: v.sid };
    if (hidden) {
      s.paused = true;
    } else if (!pip) {
      s.width = v.width;
      s.height = v.height;
    }
    if (this.quality !== 'auto') s.quality = this.quality;
    return s;
  }

  flush(v) {
    v.timer = 0;
    if (this.stopped || this.views.get(v.el) !== v) return;
    if (!v.el.isConnected) {
      this.forget(v); // its tile left the page
      return;
    }
    const s = this.settings(v);
    if (!s) return;
    const key = JSON.stringify(s);
    if (key === v.sent || nearlySent(s, v.sent)) return;
    if (this.sendMsg('track_settings', s)) v.sent = key;
  }

  // snapshot: what was last told per track sid (for tests and debugging).
  snapshot() {
    const out = {};
    for (const v of this.views.values()) out[v.sid] = v.sent ? JSON.parse(v.sent) : null;
    return out;
  }

  // stop ends the viewer for good (its session ended, or the server does
  // not know track_settings); snapshot still says what was told.
  stop() {
    if (this.stopped) return;
    this.stopped = true;
    for (const v of this.views.values()) clearTimeout(v.timer);
    this.resizer.disconnect();
    this.intersector.disconnect();
    document.removeEventListener('visibilitychange', this.onVisibility);
  }
}

// nearlySent: s differs from what was sent (sentKey) by a few device
// pixels only.
function nearlySent(s, sentKey) {
  if (!sentKey || s.paused) return false;
  const prev = JSON.parse(sentKey);
  if (prev.paused || prev.quality !== s.quality || prev.width === undefined || s.width === undefined) return false;
  return Math.abs(prev.width - s.width) < SIZE_SLACK && Math.abs(prev.height - s.height) < SIZE_SLACK;
}
