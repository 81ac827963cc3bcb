// The scientist's page: validate and submit batch specs, follow batches, plot and download
// verified results. Talks to /api/v1 with the API key from the field (kept in this browser).
const $ = (id) => document.getElementById(id);
const api = {
  key: () => $('key').value.trim(),
  async call(path, opts = {}) {
    const r = await fetch(path, { ...opts, headers: { authorization: 'Bearer ' + api.key(), ...(opts.headers ?? {}) } });
    const text = await r.text();
    if (!r.ok) {
      let msg = text;
      try { const e = JSON.parse(text); msg = e.error; } catch {}
      throw new Error(msg || `HTTP ${r.status}`);
    }
    return text;
  },
  json: async (path, opts) => JSON.parse(await api.call(path, opts)),
};
window.qgScience = { api, state: {} };
const state = window.qgScience.state;

$('key').value = localStorage.getItem('qg-key') ?? '';
$('key').onchange = () => { localStorage.setItem('qg-key', api.key()); refresh(); };
$('spec-file').onchange = async (e) => { const f = e.target.files[0]; if (f) $('spec').value = await f.text(); };

// Which observables to plot, by kernel.
const PLOTS = { ising2d: ['abs_m', 'binder'], percolation2d: ['spanning_fraction', 'largest_fraction'], lj_md: ['e_total', 'e_potential'] };

$('validate').onclick = async () => {
  $('submit').disabled = true;
  try {
    const e = await api.json('/api/v1/specs', { method: 'POST', body: $('spec').value, headers: { 'content-type': 'text/plain' } });
    state.expanded = e;
    $('spec-result').className = 'ok';
    $('spec-result').textContent = `${e.count} units of ${e.kernel} (“${e.name}”), swept over ${e.axes.length ? e.axes.join(' × ') : 'nothing'}.`;
    $('submit').disabled = false;
  } catch (err) {
    state.expanded = null;
    $('spec-result').className = 'err';
    $('spec-result').textContent = err.message;
  }
};

$('submit').onclick = async () => {
  const e = state.expanded;
  if (!e) return;
  $('submit').disabled = true;
  try {
    const b = await api.json('/api/v1/batches', { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: e.name, kernel: e.kernel, units: e.units, policy: e.policy, axes: e.axes }) });
    $('spec-result').className = 'ok';
    $('spec-result').textContent = `Submitted batch ${b.batch_id} (${b.units} units).`;
    state.expanded = null;
    await refresh();
    show(b.batch_id);
  } catch (err) {
    $('spec-result').className = 'err';
    $('spec-result').textContent = err.message;
  }
};

function cell(text, cls) { const td = document.createElement('td'); td.textContent = text; if (cls) td.className = cls; return td; }
const finished = (b) => b.by_state.canonical + b.by_state.failed;

async function refresh() {
  if (!api.key()) return;
  try {
    const { batches } = await api.json('/api/v1/batches');
    state.batches = batches;
    $('batches').tBodies[0].replaceChildren(...batches.map((b) => {
      const tr = document.createElement('tr');
      if (b.batch_id === state.shown) tr.className = 'sel';
      const prog = document.createElement('progress'); prog.max = b.units; prog.value = finished(b);
      const td = document.createElement('td'); td.append(prog, ` ${finished(b)}/${b.units}${b.done ? ' done' : ''}`);
      const open = document.createElement('button'); open.textContent = 'Open'; open.className = 'secondary'; open.onclick = () => show(b.batch_id);
      const tdo = document.createElement('td'); tdo.append(open);
      tr.append(cell(b.batch_id), cell(b.name), cell(b.kernel), td, tdo);
      return tr;
    }));
    if (state.shown) await detail(state.shown);
  } catch (err) { $('spec-result').textContent = err.message; }
}

async function show(id) { state.shown = id; $('detail').hidden = false; await detail(id); }

const fmt = (x) => (typeof x === 'number' ? (Number.isInteger(x) ? String(x) : x.toPrecision(5)) : x ?? '');

async function detail(id) {
  const [st, res, agg] = await Promise.all([
    api.json(`/api/v1/batches/${id}`), api.json(`/api/v1/batches/${id}/results`), api.json(`/api/v1/batches/${id}/aggregate`),
  ]);
  state.detail = { st, res, agg };
  $('detail-title').textContent = `Batch ${id}: ${st.name}`;
  $('detail-counts').textContent = Object.entries(st.by_state).filter(([, n]) => n).map(([k, n]) => `${k.replace('_', ' ')} ${n}`).join(' · ') + (st.cancelled_at ? ' · cancelled' : st.done ? ' · done' : '');
  $('cancel').hidden = st.done;
  const axes = st.axes.length ? st.axes : [];
  const obs = PLOTS[st.kernel] ?? [];
  $('units').tHead.replaceChildren(Object.assign(document.createElement('tr'), { innerHTML: '' }));
  const head = $('units').tHead.rows[0];
  for (const h of ['unit', ...axes, 'state', 'digest', 'log', ...obs]) head.append(Object.assign(document.createElement('th'), { textContent: h }));
  const marks = state.logMarks?.batch === id ? state.logMarks.units : {};
  $('units').tBodies[0].replaceChildren(...res.units.slice(0, 500).map((u) => {
    const tr = document.createElement('tr');
    const log = cell(u.log_index == null ? '' : `#${u.log_index} ${marks[u.unit_id]?.mark ?? ''}`);
    if (marks[u.unit_id]) log.title = marks[u.unit_id].why;
    tr.append(cell(u.unit_id), ...axes.map((a) => cell(fmt(u.params[a]), 'num')), cell(u.state.replace('_', ' ')),
      cell(u.digest ? u.digest.slice(0, 12) + '…' : ''), log, ...obs.map((o) => cell(fmt(u.summary?.[o]), 'num')));
    return tr;
  }));
  plot(agg, obs);
}

let chart = null;
function plot(agg, obs) {
  const x = agg.axes[0];
  if (!x || !window.Chart || !agg.points.length) { if (chart) { chart.destroy(); chart = null; } return; }
  const colors = ['#2e63e0', '#d9480f', '#2b8a3e'];
  const datasets = obs.map((o, i) => ({
    label: o, borderColor: colors[i], backgroundColor: colors[i], showLine: true,
    data: agg.points.map((p) => {
      const y = p.mean[o] ?? NaN, e = p.sem[o] ?? 0;
      return { x: p.values[x], y, yMin: y - e, yMax: y + e };
    }),
  }));
  if (chart) chart.destroy();
  chart = new Chart($('plot'), {
    type: 'scatterWithErrorBars',
    data: { datasets },
    options: { animation: false, scales: { x: { type: 'linear', title: { display: true, text: x } }, y: { title: { display: true, text: 'mean ± s.e. across seeds' } } } },
  });
  state.chartPoints = datasets[0]?.data.length ?? 0;
}
if (window.Chart && window.ChartErrorBars) {
  Chart.register(ChartErrorBars.ScatterWithErrorBarsController, ChartErrorBars.PointWithErrorBar);
}

async function download(format) {
  const id = state.shown;
  const text = await api.call(`/api/v1/batches/${id}/results${format === 'csv' ? '?format=csv' : ''}`);
  state.lastDownload = text;
  const a = Object.assign(document.createElement('a'), {
    href: URL.createObjectURL(new Blob([text], { type: format === 'csv' ? 'text/csv' : 'application/json' })),
    download: `batch-${id}.${format}`,
  });
  a.click();
  URL.revokeObjectURL(a.href);
}
// ---- The transparency log: each result's receipt, checked here against the checkpoint ----

const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const sha256 = async (...parts) => {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { all.set(p, at); at += p.length; }
  return new Uint8Array(await crypto.subtle.digest('SHA-256', all));
};
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// RFC 9162 §2.1.3.2: is the leaf with hash `leaf` at `index` in the tree of `size` with `root`?
async function included(index, size, leaf, proof, root) {
  if (index >= size) return false;
  let fn = index, sn = size - 1, r = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(Uint8Array.of(1), p, r);
      while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      r = await sha256(Uint8Array.of(1), r, p);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  return sn === 0 && same(r, root);
}

// Fetches the batch's proof bundle and checks each canonical result: its latest receipt is in
// the checkpoint's tree and accepts exactly this digest. Signatures, witnesses and
// recomputation are `qg verify`'s (the downloaded bundle is its input).
async function verifyLog() {
  const id = state.shown;
  $('log-result').textContent = 'checking…';
  try {
    const bundle = await api.json(`/api/v1/batches/${id}/proofs?witnesses=0`);
    const lines = bundle.checkpoint.split('\n');
    const size = Number(lines[1]);
    const root = b64(lines[2]);
    const units = {};
    let ok = 0, bad = 0, canonical = 0;
    for (const u of bundle.units) {
      if (u.state !== 'canonical') continue;
      canonical += 1;
      const last = u.entries[u.entries.length - 1];
      let why = 'no receipt in the log';
      let good = false;
      if (last) {
        const leaf = await sha256(Uint8Array.of(0), new TextEncoder().encode(last.entry));
        const entry = JSON.parse(last.entry);
        if (!(await included(last.index, size, leaf, last.proof.map(b64), root))) why = `receipt #${last.index} is not in checkpoint ${size}`;
        else if (entry.kind !== 'accepted' || entry.digest !== u.digest) why = `receipt #${last.index} does not accept this result`;
        else { good = true; why = `receipt #${last.index} accepts this result; included in checkpoint ${size} (checked in this browser)`; }
      }
      units[u.unit] = { mark: good ? '✓' : '✗', why };
      if (good) ok += 1; else bad += 1;
    }
    delete bundle.pending;
    state.bundle = bundle;
    state.logMarks = { batch: id, units };
    state.logVerified = ok;
    $('log-result').className = bad ? 'err' : 'ok';
    $('log-result').textContent = `${ok} of ${canonical} canonical results have a receipt included in checkpoint ${size} of ${lines[0]}${bad ? `; ${bad} do not` : ''}. For signatures, witnesses and recomputation: download the proofs and run qg verify.`;
    $('dl-proofs').disabled = false;
    await detail(id);
  } catch (err) {
    $('log-result').className = 'err';
    $('log-result').textContent = `no receipts to check yet (${err.message})`;
  }
}
$('verify-log').onclick = verifyLog;
$('cancel').onclick = async () => {
  const id = state.shown;
  if (!confirm(`Cancel batch ${id}? Units not yet verified stop; verified results stay.`)) return;
  try {
    await api.json(`/api/v1/batches/${id}/cancel`, { method: 'POST' });
    await refresh();
  } catch (err) { $('spec-result').className = 'err'; $('spec-result').textContent = err.message; }
};
$('dl-proofs').onclick = () => {
  const a = Object.assign(document.createElement('a'), {
    href: URL.createObjectURL(new Blob([JSON.stringify(state.bundle, null, 1)], { type: 'application/json' })),
    download: `batch-${state.shown}-proofs.json`,
  });
  a.click();
  URL.revokeObjectURL(a.href);
};

$('dl-csv').onclick = () => download('csv');
$('dl-json').onclick = () => download('json');

refresh();
setInterval(refresh, 2000);
