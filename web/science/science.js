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
  $('detail-counts').textContent = Object.entries(st.by_state).filter(([, n]) => n).map(([k, n]) => `${k.replace('_', ' ')} ${n}`).join(' · ') + (st.done ? ' · done' : '');
  const axes = st.axes.length ? st.axes : [];
  const obs = PLOTS[st.kernel] ?? [];
  $('units').tHead.replaceChildren(Object.assign(document.createElement('tr'), { innerHTML: '' }));
  const head = $('units').tHead.rows[0];
  for (const h of ['unit', ...axes, 'state', 'digest', ...obs]) head.append(Object.assign(document.createElement('th'), { textContent: h }));
  $('units').tBodies[0].replaceChildren(...res.units.slice(0, 500).map((u) => {
    const tr = document.createElement('tr');
    tr.append(cell(u.unit_id), ...axes.map((a) => cell(fmt(u.params[a]), 'num')), cell(u.state.replace('_', ' ')),
      cell(u.digest ? u.digest.slice(0, 12) + '…' : ''), ...obs.map((o) => cell(fmt(u.summary?.[o]), 'num')));
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
$('dl-csv').onclick = () => download('csv');
$('dl-json').onclick = () => download('json');

refresh();
setInterval(refresh, 2000);
