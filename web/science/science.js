// The scientist's page: validate and submit batch specs, follow batches (progress, pace,
// finish), plot and download verified results, check their receipts, cancel.
import { $, duration, el, fmt, getJson, kernelCell, kernelInfo, keyField, request, row, saveFile, si, words } from '/lib/qg.js';
import { plot, pngBlob, svgBlob } from '/lib/plot.js';

const key = keyField($('key'), 'qg-key', () => refresh());
const call = (path, opts = {}) => request(path, { key: key(), ...opts });
const json = (path, opts = {}) => getJson(path, { key: key(), ...opts });

const page = { expanded: null, shown: null, bundle: null, logMarks: null, results: null, xChosen: false };

function say(id, text, ok) {
  $(id).className = ok === undefined ? 'muted' : ok ? 'ok' : 'err';
  $(id).textContent = text;
}

$('spec-file').onchange = async (e) => {
  const f = e.target.files[0];
  if (f) $('spec').value = await f.text();
};

$('validate').onclick = async () => {
  $('submit').disabled = true;
  try {
    const e = await json('/api/v1/specs', { body: $('spec').value, type: 'text/plain' });
    page.expanded = e;
    say('spec-result', `${e.count} units of ${e.kernel} (“${e.name}”), swept over ${e.axes.length ? e.axes.join(' × ') : 'nothing'}. ${e.verification ?? ''}`, true);
    $('submit').disabled = false;
  } catch (err) {
    page.expanded = null;
    say('spec-result', err.message, false);
  }
};

$('submit').onclick = async () => {
  const e = page.expanded;
  if (!e) return;
  $('submit').disabled = true;
  try {
    const b = await json('/api/v1/batches', {
      body: { name: e.name, description: e.description, kernel: e.kernel, units: e.units, policy: e.policy, axes: e.axes },
    });
    say('spec-result', `Submitted batch ${b.batch_id} (${b.units} units). ${b.verification ?? ''}`, true);
    page.expanded = null;
    await show(b.batch_id);
  } catch (err) {
    say('spec-result', err.message, false);
  }
};

/** The packages the coordinator holds, with their status. */
async function packages() {
  try {
    const { packages: list } = await getJson('/api/v1/kernels');
    $('packages').tBodies[0].replaceChildren(
      ...list.map((p) => row([{ text: p.kernel, cls: 'mono' }, p.author, p.status, p.reason ?? ''])),
    );
  } catch (err) {
    say('pkg-result', err.message, false);
  }
}

$('pkg-push').onclick = async () => {
  const text = async (id) => (await $(id).files[0]?.text()) ?? null;
  const files = { 'kernel.toml': await text('pkg-manifest'), 'kernel.wgsl': await text('pkg-wgsl') };
  const view = await text('pkg-view');
  if (view !== null) files['view.wgsl'] = view;
  if (files['kernel.toml'] === null || files['kernel.wgsl'] === null) {
    say('pkg-result', 'Choose kernel.toml and kernel.wgsl first.', false);
    return;
  }
  try {
    const st = await json('/api/v1/kernels', { body: files });
    say('pkg-result', `Uploaded ${st.kernel}: ${st.status}${st.status === 'pending' ? ' until an operator approves it' : ''}. Name it in a spec as kernel = "${st.kernel}".`, true);
    await packages();
  } catch (err) {
    const where = err.body?.field ? `${err.body.field}: ` : '';
    say('pkg-result', `${where}${err.message}`, false);
  }
};
packages();

const settled = (b) => b.by_state.canonical + b.by_state.failed;

async function refresh() {
  if (!key()) return;
  try {
    const { batches } = await json('/api/v1/batches');
    $('batches').tBodies[0].replaceChildren(
      ...batches.map((b) => {
        const bar = el('progress', { max: b.units, value: settled(b) });
        bar.setAttribute('aria-label', `batch ${b.batch_id}: ${settled(b)} of ${b.units} units settled`);
        const open = el('button', { type: 'button', className: 'secondary', textContent: 'Open' });
        open.setAttribute('aria-label', `Open batch ${b.batch_id}`);
        open.onclick = () => show(b.batch_id);
        const progress = el('span', {}, bar, ` ${settled(b)}/${b.units}${b.cancelled_at ? ' cancelled' : b.done ? ' done' : ''}`);
        return row([b.batch_id, b.name, kernelCell(b.kernel), progress, open], b.batch_id === page.shown ? 'sel' : undefined);
      }),
    );
    if (page.shown) await detail(page.shown);
  } catch (err) {
    say('spec-result', err.message, false);
  }
}

async function show(id) {
  page.shown = id;
  $('detail').hidden = false;
  $('detail').dataset.batch = id;
  await refresh();
}

/** "3 of 84 settled · 1.2 units/min · 4.1e8 spin updates/s · about 20 min left (by 14:05)". */
function paceText(st, info) {
  const left = st.units - settled(st);
  if (st.cancelled_at) return `Cancelled at ${new Date(st.cancelled_at * 1000).toLocaleString()}; results verified before then stand.`;
  if (!st.pace) return left ? 'Waiting for the first verified results: the pace and finish are measured from them.' : '';
  const p = st.pace;
  const perMin = p.units_per_s * 60;
  const rate = perMin >= 1 ? `${perMin.toPrecision(3)} units/min` : `${(perMin * 60).toPrecision(3)} units/h`;
  const work = `${si(p.work_per_s)} ${info?.work_unit ?? 'work'}/s`;
  if (!left) return `All ${st.units} units settled. Last pace: ${rate} (${work}).`;
  const eta = p.eta_at - Date.now() / 1000;
  const finish = eta > 0
    ? `about ${duration(eta)} left (by ${new Date(p.eta_at * 1000).toLocaleString()})`
    : 'behind its pace: no unit has settled lately; waiting for volunteers';
  return `${settled(st)} of ${st.units} settled · ${rate} · ${work} · ${finish}.`;
}

async function detail(id) {
  const [st, res, agg, kernels] = await Promise.all([
    json(`/api/v1/batches/${id}`),
    json(`/api/v1/batches/${id}/results`),
    json(`/api/v1/batches/${id}/aggregate`),
    kernelInfo(),
  ]);
  if (page.shown !== id) return;
  page.results = res;
  const info = kernels[st.kernel];
  $('detail').dataset.done = st.done;
  $('detail-title').textContent = `Batch ${id}: ${st.name}`;
  $('detail-description').textContent = st.description ?? '';
  $('detail-counts').textContent =
    Object.entries(st.by_state)
      .filter(([, n]) => n)
      .map(([k, n]) => `${words(k)} ${n}`)
      .join(' · ') + (st.cancelled_at ? ' · cancelled' : st.done ? ' · done' : '');
  $('detail-pace').textContent = paceText(st, info);
  $('cancel').hidden = st.done;
  const axes = st.axes;
  const obs = (info?.observables ?? []).filter((o) => agg.points.some((p) => p.mean[o.key] != null));
  const heads = ['unit', ...axes, 'state', 'digest', 'log', ...obs.map((o) => o.key)];
  $('units').tHead.replaceChildren(el('tr', {}, ...heads.map((h) => el('th', { scope: 'col', textContent: h }))));
  const marks = page.logMarks?.batch === id ? page.logMarks.units : {};
  $('units').tBodies[0].replaceChildren(
    ...res.units.slice(0, 500).map((u) =>
      row([
        u.unit_id,
        ...axes.map((a) => ({ text: fmt(u.params[a]), cls: 'num' })),
        words(u.state),
        u.digest ? `${u.digest.slice(0, 12)}…` : '',
        { text: u.log_index == null ? '' : `#${u.log_index} ${marks[u.unit_id]?.mark ?? ''}`, title: marks[u.unit_id]?.why ?? '' },
        ...obs.map((o) => ({ text: fmt(u.summary?.[o.key]), cls: 'num' })),
      ]),
    ),
  );
  plots(st, agg, obs);
}

// The parameter to plot against: the volunteer's choice, else the one swept over the most values.
function xAxis(agg, units) {
  const values = (a) => new Set(units.map((u) => JSON.stringify(u.params[a]))).size;
  const byCount = [...agg.axes].sort((a, b) => values(b) - values(a));
  const select = $('x-axis');
  if ([...select.options].map((o) => o.value).join() !== agg.axes.join()) {
    select.replaceChildren(...agg.axes.map((a) => el('option', { value: a, textContent: a })));
    page.xChosen = false;
  }
  if (!page.xChosen) select.value = byCount[0] ?? '';
  select.closest('p').hidden = agg.axes.length < 2;
  return select.value || byCount[0];
}
$('x-axis').onchange = () => {
  page.xChosen = true;
  if (page.shown) detail(page.shown);
};

// One figure per observable: against the chosen swept parameter, one series per value of the
// others, mean ± standard error across seeds.
let drawn = '';
function plots(st, agg, obs) {
  const x = xAxis(agg, page.results.units);
  const rest = agg.axes.filter((a) => a !== x);
  const signature = JSON.stringify([st.batch_id, x, agg.points, obs.map((o) => o.key)]);
  if (signature === drawn) return; // unchanged: keep the figures (and any focus on them)
  drawn = signature;
  if (!x) {
    $('plots').replaceChildren(el('p', { className: 'muted', textContent: 'Nothing is swept: no plot (download the results instead).' }));
    return;
  }
  const groups = new Map();
  for (const p of agg.points) {
    const name = rest.map((a) => `${a} = ${fmt(p.values[a])}`).join(', ');
    if (!groups.has(name)) groups.set(name, []);
    groups.get(name).push(p);
  }
  $('plots').replaceChildren(
    ...obs.map((o) => {
      const series = [...groups].map(([name, points]) => ({
        name,
        points: points.map((p) => ({ x: Number(p.values[x]), y: p.mean[o.key], err: p.sem[o.key] ?? null })),
      }));
      const svg = plot({ title: `${st.name}: ${o.label}`, xLabel: x, yLabel: o.label, series });
      const base = `batch-${st.batch_id}-${o.key}`;
      const png = el('button', { type: 'button', className: 'secondary', textContent: 'PNG' });
      png.setAttribute('aria-label', `Download the ${o.label} plot as PNG`);
      png.onclick = async () => saveFile(`${base}.png`, await pngBlob(svg));
      const svgButton = el('button', { type: 'button', className: 'secondary', textContent: 'SVG' });
      svgButton.setAttribute('aria-label', `Download the ${o.label} plot as SVG`);
      svgButton.onclick = () => saveFile(`${base}.svg`, svgBlob(svg));
      const caption = el('figcaption', {}, `${o.label} against ${x}: mean ± standard error over seeds (a lone unit: its own error estimate). `, png, ' ', svgButton);
      const fig = el('figure', {}, svg, caption);
      fig.dataset.observable = o.key;
      return fig;
    }),
  );
}

async function download(format) {
  const id = page.shown;
  try {
    const text = await call(`/api/v1/batches/${id}/results${format === 'csv' ? '?format=csv' : ''}`);
    saveFile(`batch-${id}.${format}`, new Blob([text], { type: format === 'csv' ? 'text/csv' : 'application/json' }));
  } catch (err) {
    say('log-result', `download failed: ${err.message}`, false);
  }
}

// ---- The transparency log: each result's receipt, checked here against the checkpoint ----

const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const sha256 = async (...parts) => {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return new Uint8Array(await crypto.subtle.digest('SHA-256', all));
};
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const hex = (bytes) => [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
const utf8 = (s) => new TextEncoder().encode(s);
// JSON with sorted keys, to compare two parsed values.
const sorted = (v) =>
  v && typeof v === 'object' && !Array.isArray(v)
    ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, sorted(v[k])]))
    : Array.isArray(v)
      ? v.map(sorted)
      : v;
const sameJson = (a, b) => JSON.stringify(sorted(a)) === JSON.stringify(sorted(b));

// RFC 9162 §2.1.3.2: is the leaf with hash `leaf` at `index` in the tree of `size` with `root`?
async function included(index, size, leaf, proof, root) {
  if (index >= size) return false;
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(Uint8Array.of(1), p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      r = await sha256(Uint8Array.of(1), r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && same(r, root);
}

// Whether the batch's commitment is in the tree and commits as many units as the bundle has.
async function commitmentProblem(bundle, size, root) {
  const c = bundle.commitment;
  if (!c) return 'the batch has no commitment in the log';
  const leaf = await sha256(Uint8Array.of(0), utf8(c.entry));
  if (!(await included(c.index, size, leaf, c.proof.map(b64), root))) return `its commitment #${c.index} is not in checkpoint ${size}`;
  const e = JSON.parse(c.entry);
  if (e.kind !== 'batch' || e.batch !== bundle.batch) return `entry #${c.index} is not this batch's commitment`;
  if (e.units !== bundle.units.length) return `it was committed with ${e.units} units, the log's proofs present ${bundle.units.length}`;
  return null;
}

// Fetches the batch's proof bundle and checks each canonical result: its latest receipt is in
// the checkpoint's tree and accepts exactly this digest and this summary, which are the
// numbers the page shows; and the batch's commitment has as many units. Signatures,
// witnesses, params and recomputation are `qg verify`'s (the downloaded bundle is its input).
async function verifyLog() {
  const id = page.shown;
  say('log-result', 'checking…');
  try {
    const bundle = await json(`/api/v1/batches/${id}/proofs?witnesses=0`);
    const lines = bundle.checkpoint.split('\n');
    const size = Number(lines[1]);
    const root = b64(lines[2]);
    const units = {};
    let ok = 0;
    let bad = 0;
    let canonical = 0;
    for (const u of bundle.units) {
      if (u.state !== 'canonical') continue;
      canonical += 1;
      const last = u.entries.reduce((a, e) => (a && a.index > e.index ? a : e), null);
      let why = 'no receipt in the log';
      let good = false;
      if (last) {
        const leaf = await sha256(Uint8Array.of(0), utf8(last.entry));
        const entry = JSON.parse(last.entry);
        const summaryHash = u.summary == null ? null : hex(await sha256(utf8(u.summary)));
        const shown = page.results?.units.find((r) => r.unit_id === u.unit);
        if (!(await included(last.index, size, leaf, last.proof.map(b64), root))) why = `receipt #${last.index} is not in checkpoint ${size}`;
        else if (entry.unit !== u.unit || entry.batch !== bundle.batch) why = `receipt #${last.index} is about another unit`;
        else if (entry.kind !== 'accepted' || entry.digest !== u.digest) why = `receipt #${last.index} does not accept this result`;
        else if ((entry.summary_sha256 ?? null) !== summaryHash) why = `receipt #${last.index} does not accept this summary`;
        else if (shown && !sameJson(shown.summary ?? null, u.summary == null ? null : JSON.parse(u.summary)))
          why = `the numbers shown are not the ones receipt #${last.index} accepted`;
        else {
          good = true;
          why = `receipt #${last.index} accepts this result; included in checkpoint ${size} (checked in this browser)`;
        }
      }
      units[u.unit] = { mark: good ? '✓' : '✗', why };
      if (good) ok += 1;
      else bad += 1;
    }
    const incomplete = await commitmentProblem(bundle, size, root);
    delete bundle.pending;
    page.bundle = bundle;
    page.logMarks = { batch: id, units };
    say(
      'log-result',
      `${ok} of ${canonical} canonical results have a receipt included in checkpoint ${size} of ${lines[0]}${bad ? `; ${bad} do not` : ''}.${incomplete ? ` The batch is not complete: ${incomplete}.` : ''} For signatures, witnesses, params and recomputation: download the proofs and run qg verify.`,
      !bad && !incomplete,
    );
    $('dl-proofs').disabled = false;
    await detail(id);
  } catch (err) {
    say('log-result', `no receipts to check yet (${err.message})`, false);
  }
}

$('verify-log').onclick = verifyLog;
$('cancel').onclick = async () => {
  const id = page.shown;
  if (!confirm(`Cancel batch ${id}? Units not yet verified stop; verified results stay.`)) return;
  try {
    await json(`/api/v1/batches/${id}/cancel`, { method: 'POST' });
    await refresh();
  } catch (err) {
    say('spec-result', err.message, false);
  }
};
$('dl-proofs').onclick = () => saveFile(`batch-${page.shown}-proofs.json`, new Blob([JSON.stringify(page.bundle, null, 1)], { type: 'application/json' }));
$('dl-csv').onclick = () => download('csv');
$('dl-json').onclick = () => download('json');

refresh();
setInterval(refresh, 2000);
