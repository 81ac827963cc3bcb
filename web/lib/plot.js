// Publication plots as SVG: an observable against a swept parameter, mean ± standard error,
// one series per value of the other swept parameters, log axes where the data span decades.
// The SVG downloads as it is; PNG is the same SVG drawn onto a canvas.

const NS = 'http://www.w3.org/2000/svg';
// Okabe & Ito's palette: told apart with any colour vision.
const COLOURS = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#F0E442'];
const W = 640;
const H = 400;
const M = { left: 72, right: 150, top: 34, bottom: 54 };

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text != null) e.textContent = text;
  return e;
}

/** Whether values this spread read better on a log axis: all positive, over 1.5 decades. */
export function suitsLog(values) {
  const v = values.filter(Number.isFinite);
  return v.length > 1 && v.every((x) => x > 0) && Math.max(...v) / Math.min(...v) >= 30;
}

/** Tick values for [lo, hi]: 1-2-5 steps on a linear axis, decades (and 2, 5) on a log one. */
export function ticks(lo, hi, log) {
  if (log) {
    const out = [];
    const few = Math.log10(hi / lo) <= 2;
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      for (const m of few ? [1, 2, 5] : [1]) {
        const t = m * 10 ** e;
        if (t >= lo * (1 - 1e-9) && t <= hi * (1 + 1e-9)) out.push(t);
      }
    }
    return out;
  }
  const raw = (hi - lo) / 5 || Math.abs(hi) || 1;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Math.abs(t) < step * 1e-9 ? 0 : t);
  return out;
}

const label = (t) => {
  const a = Math.abs(t);
  return a !== 0 && (a >= 1e5 || a < 1e-3) ? t.toExponential(0) : String(Number(t.toPrecision(6)));
};

function axis(lo, hi, log, from, to) {
  if (log) {
    [lo, hi] = [Math.log10(lo), Math.log10(hi)];
  }
  const f = (v) => {
    const x = log ? Math.log10(v) : v;
    return from + ((x - lo) / (hi - lo || 1)) * (to - from);
  };
  return f;
}

function range(values, log) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (log) return [lo / 1.15, hi * 1.15];
  if (lo === hi) return [lo - (Math.abs(lo) || 1) * 0.1, hi + (Math.abs(hi) || 1) * 0.1];
  const pad = (hi - lo) * 0.06;
  lo -= pad;
  hi += pad;
  return [lo, hi];
}

/**
 * The plot: `series` is `[{ name, points: [{ x, y, err }] }]` (err null: no bar). Returns an
 * <svg> whose series are `g.series` (with `data-series`), each point a `circle` and each error
 * bar a `g.err`.
 */
export function plot({ title, xLabel, yLabel, series, logX, logY }) {
  const pts = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  const xs = pts.map((p) => p.x);
  const ys = pts.flatMap((p) => (p.err > 0 ? [p.y - p.err, p.y + p.err] : [p.y]));
  logX ??= suitsLog(xs);
  logY ??= suitsLog(ys);
  const root = svg('svg', {
    xmlns: NS,
    viewBox: `0 0 ${W} ${H}`,
    width: W,
    height: H,
    'font-family': 'system-ui, sans-serif',
    'font-size': 13,
    role: 'img',
  });
  root.append(svg('title', {}, `${title}: ${yLabel} against ${xLabel}`));
  root.append(svg('rect', { x: 0, y: 0, width: W, height: H, fill: '#ffffff' }));
  root.append(svg('text', { x: M.left, y: 20, 'font-weight': 600 }, title));
  if (!pts.length) {
    root.append(svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', fill: '#5b6470' }, 'no verified results yet'));
    return root;
  }
  const [x0, x1] = range(xs, logX);
  const [y0, y1] = range(ys.filter((y) => !logY || y > 0), logY);
  const X = axis(x0, x1, logX, M.left, W - M.right);
  const Y = axis(y0, y1, logY, H - M.bottom, M.top);
  const frame = svg('g', { class: 'axes', stroke: '#1b1f24', 'stroke-width': 1 });
  frame.append(svg('rect', { x: M.left, y: M.top, width: W - M.left - M.right, height: H - M.top - M.bottom, fill: 'none' }));
  for (const t of ticks(x0, x1, logX)) {
    const x = X(t);
    frame.append(svg('line', { x1: x, x2: x, y1: H - M.bottom, y2: H - M.bottom + 5 }));
    frame.append(svg('text', { x, y: H - M.bottom + 19, 'text-anchor': 'middle', stroke: 'none', fill: '#1b1f24' }, label(t)));
  }
  for (const t of ticks(y0, y1, logY)) {
    const y = Y(t);
    frame.append(svg('line', { x1: M.left - 5, x2: M.left, y1: y, y2: y }));
    frame.append(svg('line', { x1: M.left, x2: W - M.right, y1: y, y2: y, stroke: '#e3e6ea' }));
    frame.append(svg('text', { x: M.left - 8, y: y + 4, 'text-anchor': 'end', stroke: 'none', fill: '#1b1f24' }, label(t)));
  }
  frame.append(svg('text', { x: (M.left + W - M.right) / 2, y: H - 12, 'text-anchor': 'middle', stroke: 'none', fill: '#1b1f24' }, xLabel + (logX ? ' (log)' : '')));
  const yl = svg('text', { x: 0, y: 0, 'text-anchor': 'middle', stroke: 'none', fill: '#1b1f24', transform: `translate(18 ${(M.top + H - M.bottom) / 2}) rotate(-90)` }, yLabel + (logY ? ' (log)' : ''));
  frame.append(yl);
  root.append(frame);
  series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const g = svg('g', { class: 'series', 'data-series': s.name, stroke: colour, fill: colour });
    const ok = s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y) && (!logY || p.y > 0)).sort((a, b) => a.x - b.x);
    if (ok.length > 1) {
      g.append(svg('path', { class: 'line', fill: 'none', 'stroke-width': 1.5, d: ok.map((p, j) => `${j ? 'L' : 'M'}${X(p.x).toFixed(1)} ${Y(p.y).toFixed(1)}`).join(' ') }));
    }
    for (const p of ok) {
      const x = X(p.x);
      if (p.err > 0) {
        const lo = Y(logY ? Math.max(p.y - p.err, y0) : p.y - p.err);
        const hi = Y(p.y + p.err);
        const bar = svg('g', { class: 'err', 'stroke-width': 1.2 });
        bar.append(svg('line', { x1: x, x2: x, y1: lo, y2: hi }), svg('line', { x1: x - 4, x2: x + 4, y1: lo, y2: lo }), svg('line', { x1: x - 4, x2: x + 4, y1: hi, y2: hi }));
        g.append(bar);
      }
      const c = svg('circle', { cx: x, cy: Y(p.y), r: 3.5 });
      c.append(svg('title', {}, `${s.name ? `${s.name}: ` : ''}${xLabel} = ${label(p.x)}, ${yLabel} = ${p.y.toPrecision(5)}${p.err > 0 ? ` ± ${p.err.toPrecision(2)}` : ''}`));
      g.append(c);
    }
    root.append(g);
    if (s.name) {
      const ly = M.top + 10 + i * 20;
      const key = svg('g', { class: 'legend' });
      key.append(svg('line', { x1: W - M.right + 14, x2: W - M.right + 36, y1: ly, y2: ly, stroke: colour, 'stroke-width': 2 }));
      key.append(svg('circle', { cx: W - M.right + 25, cy: ly, r: 3.5, fill: colour }));
      key.append(svg('text', { x: W - M.right + 42, y: ly + 4, fill: '#1b1f24' }, s.name));
      root.append(key);
    }
  });
  return root;
}

/** The plot as an SVG file. */
export function svgBlob(root) {
  return new Blob([new XMLSerializer().serializeToString(root)], { type: 'image/svg+xml' });
}

/** The plot as a PNG file, at `scale` × its size. */
export async function pngBlob(root, scale = 2) {
  const url = URL.createObjectURL(svgBlob(root));
  try {
    const img = new Image();
    img.src = url;
    await img.decode();
    const canvas = document.createElement('canvas');
    canvas.width = W * scale;
    canvas.height = H * scale;
    const ctx = canvas.getContext('2d');
    ctx.scale(scale, scale);
    ctx.drawImage(img, 0, 0, W, H);
    return await new Promise((resolve, reject) => canvas.toBlob((b) => (b ? resolve(b) : reject(new Error('PNG encoding failed'))), 'image/png'));
  } finally {
    URL.revokeObjectURL(url);
  }
}
