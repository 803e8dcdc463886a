// A small live line chart on a <canvas>: a few series over a sliding time
// window, a zero-based y axis with a rounded maximum, no library. Colours
// come from CSS custom properties (--chart-1, --chart-2, --chart-grid,
// --chart-text), so the look stays in the style sheet.

const GAP_MS = 6000; // samples further apart than this are not joined

export class LineChart {
  // series: [{key, label}], drawn in the colours --chart-1, --chart-2, …
  // format: value -> axis label. integer: the values are counts, so the
  // axis labels are whole numbers. windowMs: how much history is shown.
  constructor(canvas, { series, format = String, integer = false, windowMs = 5 * 60 * 1000 }) {
    this.canvas = canvas;
    this.series = series;
    this.format = format;
    this.integer = integer;
    this.windowMs = windowMs;
    this.samples = [];
    this.now = 0;
    if (typeof ResizeObserver === 'function') {
      new ResizeObserver(() => this.draw()).observe(canvas);
    }
  }

  // update draws samples ({time, [key]: number}, oldest first) up to now.
  update(samples, now) {
    this.samples = samples;
    this.now = now;
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth;
    const h = c.clientHeight;
    if (!w || !h) return; // hidden
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const ctx = c.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);

    const css = getComputedStyle(c);
    const color = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
    const text = color('--chart-text', '#8a94a3');
    const grid = color('--chart-grid', '#2a3038');
    ctx.font = '11px system-ui, sans-serif';

    const end = this.now || Date.now();
    const start = end - this.windowMs;
    const shown = this.samples.filter((s) => s.time >= start - GAP_MS);
    let max = 0;
    for (const s of shown) for (const { key } of this.series) max = Math.max(max, Number(s[key]) || 0);
    let top = niceCeil(max);
    if (this.integer && top % 2) top++; // 1 -> 2, 5 -> 6: a whole middle line

    // Plot area: room on the left for the y labels, below for the x labels.
    const labels = [top, top / 2, 0].map((v) => this.format(v));
    const left = Math.ceil(Math.max(...labels.map((l) => ctx.measureText(l).width))) + 8;
    const right = w - 6;
    const yTop = 8;
    const yBottom = h - 18;
    const x = (t) => left + ((t - start) / this.windowMs) * (right - left);
    const y = (v) => yBottom - (v / top) * (yBottom - yTop);

    ctx.strokeStyle = grid;
    ctx.fillStyle = text;
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    [top, top / 2, 0].forEach((v, i) => {
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, yy);
      ctx.lineTo(right, yy);
      ctx.stroke();
      ctx.fillText(labels[i], left - 4, yy);
    });
    ctx.textBaseline = 'top';
    ctx.textAlign = 'left';
    ctx.fillText(`−${Math.round(this.windowMs / 60000)} min`, left, yBottom + 4);
    ctx.textAlign = 'right';
    ctx.fillText('now', right, yBottom + 4);

    ctx.save();
    ctx.beginPath();
    ctx.rect(left, 0, right - left, h);
    ctx.clip();
    ctx.lineWidth = 1.5;
    ctx.lineJoin = 'round';
    this.series.forEach(({ key }, i) => {
      ctx.strokeStyle = color(`--chart-${i + 1}`, i ? '#30a46c' : '#4f8cff');
      ctx.beginPath();
      let prev = null;
      for (const s of shown) {
        const v = Number(s[key]);
        if (!Number.isFinite(v)) {
          prev = null;
          continue;
        }
        if (prev && s.time - prev.time <= GAP_MS) ctx.lineTo(x(s.time), y(v));
        else ctx.moveTo(x(s.time), y(v));
        prev = s;
      }
      ctx.stroke();
      // The latest value as a dot, so that a single sample shows.
      const last = shown[shown.length - 1];
      if (last && Number.isFinite(Number(last[key]))) {
        ctx.fillStyle = ctx.strokeStyle;
        ctx.beginPath();
        ctx.arc(x(last.time), y(Number(last[key])), 2.5, 0, 2 * Math.PI);
        ctx.fill();
      }
    });
    ctx.restore();
  }
}

// niceCeil rounds up to 1, 2 or 5 times a power of ten (at least 1).
export function niceCeil(v) {
  if (!(v > 1)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// formatBitrate: 0 bps, 950 kbps, 6.8 Mbps.
export function formatBitrate(bps) {
  const v = Number(bps) || 0;
  if (v >= 1e9) return `${trim(v / 1e9)} Gbps`;
  if (v >= 1e6) return `${trim(v / 1e6)} Mbps`;
  if (v >= 1e3) return `${trim(v / 1e3)} kbps`;
  return `${Math.round(v)} bps`;
}

function trim(x) {
  return x >= 100 ? String(Math.round(x)) : String(Number(x.toPrecision(2)));
}
