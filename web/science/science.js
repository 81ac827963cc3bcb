// The scientist's page: validate and submit batch specs, follow batches (progress, pace,
// finish), plot and download verified results, check their receipts, cancel.
import { $, duration, el, fmt, getJson, kernelCell, kernelInfo, keyField, request, row, saveFile, si, words } from '/lib/qg.js';
import { plot, pngBlob, svgBlob } from '/lib/plot.js';

const key = keyField($('key'), 'qg-key', () => refresh());
const call = (path, opts = {}) => request(path, { key: key(), ...opts });
const json = (path, opts = {}) => getJson(path, { key: key(), ...opts });

const page = { expanded: null, shown: null, bundle: null, logMarks: null, verified: null, results: null, xChosen: false };

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
  // Once verified here, the plots are drawn from the verified units only.
  const verified = page.verified?.batch === id ? page.verified : null;
  plots(st, verified ? verified.aggregate : agg, obs);
  $('plots-source').textContent = verified
    ? `Plotted from the ${verified.units} results verified in this browser.`
    : "Plotted from the coordinator's aggregates, not yet verified here: Verify receipts to plot only the numbers receipts bind.";
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

// ---- The transparency log: a batch's proofs checked in this browser by the log's own rules ----
// (transparency::verify_bundle, what qg verify runs, compiled to wasm: /pkg/verify/).

let verifier = null;
async function loadVerifier() {
  if (!verifier) {
    const m = await import('/pkg/verify/verify_wasm.js');
    await m.default();
    verifier = m;
  }
  return verifier;
}

// The keys checked against are the scientist's, kept in this browser: the log's key and the
// witnesses' keys, pinned on first use from what the coordinator states (compare them with
// what its operator publishes elsewhere), and how many cosignatures are needed.
const pins = {
  logKey: $('pin-log-key'),
  witnesses: $('pin-witnesses'),
  min: $('pin-min-witnesses'),
};
for (const [name, input] of Object.entries(pins)) {
  input.value = localStorage.getItem(`qg-pin-${name}`) ?? input.value;
  input.addEventListener('change', () => {
    localStorage.setItem(`qg-pin-${name}`, input.value.trim());
    // What was verified under other keys no longer stands.
    page.verified = null;
    page.logMarks = null;
    say('log-result', 'The pinned keys changed: verify the receipts again.');
    if (page.shown != null) detail(page.shown);
  });
}
async function pinOnFirstUse() {
  let info;
  try {
    info = await getJson('/api/v1/log');
  } catch {
    return;
  }
  if (localStorage.getItem('qg-pin-logKey') === null) {
    pins.logKey.value = info.key;
    pins.witnesses.value = info.witnesses.join('\n');
    pins.min.value = String(Math.min(1, info.witnesses.length));
    for (const [name, input] of Object.entries(pins)) localStorage.setItem(`qg-pin-${name}`, input.value.trim());
    $('pin-note').textContent = 'Pinned on first use from what this coordinator states: compare them with the keys its operator publishes.';
  } else {
    const pinned = new Set(pins.witnesses.value.split('\n').map((k) => k.trim()).filter((k) => k));
    const changed = [];
    if (info.key !== pins.logKey.value.trim()) changed.push(`another log key (${info.key})`);
    const unpinned = info.witnesses.filter((k) => !pinned.has(k));
    if (unpinned.length) changed.push(`witness keys you have not pinned (${unpinned.join(', ')})`);
    if (changed.length) {
      $('pin-note').textContent = `This coordinator now states ${changed.join(' and ')}: receipts are verified against the keys pinned here until you change them.`;
      $('pin-note').className = 'err';
    }
  }
}

// Checks the batch's proof bundle: the checkpoint's signature under the pinned log key, its
// cosignatures from the pinned witnesses, each result's current receipt included in it,
// params against the batch's commitment, summaries against the receipts. Then the numbers
// shown and plotted are only those: the table's units are marked, and the plots are redrawn
// from the verified units' aggregate.
async function verifyLog() {
  const id = page.shown;
  say('log-result', 'checking…');
  try {
    let v;
    try {
      v = await loadVerifier();
    } catch (err) {
      say('log-result', `the verifier did not load (${err.message}): download the proofs and run qg verify`, false);
      return;
    }
    const min = Math.max(0, Number.parseInt(pins.min.value, 10) || 0);
    let text;
    try {
      text = await call(`/api/v1/batches/${id}/proofs?witnesses=${min}`);
    } catch (err) {
      say('log-result', `the coordinator gave no proofs: ${err.message}`, false);
      return;
    }
    const [st, kernels] = await Promise.all([json(`/api/v1/batches/${id}`), kernelInfo()]);
    const ownError = (kernels[st.kernel]?.observables ?? []).filter((o) => o.error).map((o) => [o.key, o.error]);
    const report = JSON.parse(v.verify(text, pins.logKey.value, pins.witnesses.value, min, JSON.stringify({ axes: st.axes, own_error: ownError })));
    const bundle = JSON.parse(text);
    delete bundle.pending;
    const byUnit = {};
    for (const p of report.problems) {
      if (p.unit == null) continue;
      byUnit[p.unit] ??= [];
      byUnit[p.unit].push(p.message);
    }
    const whole = report.problems.filter((p) => p.unit == null).map((p) => p.message);
    const units = {};
    let shownWrong = 0;
    for (const u of bundle.units) {
      if (u.state !== 'canonical') continue;
      const good = report.verified[u.unit];
      const shown = page.results?.units.find((r) => r.unit_id === u.unit);
      let why = `its receipt accepts this result, in checkpoint ${report.size} of ${report.origin} (checked in this browser)`;
      let ok = Boolean(good);
      if (!good) why = (byUnit[u.unit] ?? whole).join('; ') || 'not verified';
      else if (shown && !(sameJson(shown.summary ?? null, good.summary) && sameJson(shown.params, good.params))) {
        why = 'the numbers or params shown are not the ones its receipt and the commitment bind';
        ok = false;
        shownWrong += 1;
      }
      units[u.unit] = { mark: ok ? '✓' : '✗', why };
    }
    page.bundle = bundle;
    page.logMarks = { batch: id, units };
    page.verified = report.aggregate ? { batch: id, aggregate: report.aggregate, units: Object.keys(report.verified).length } : null;
    const count = Object.keys(report.verified).length;
    const cosigned = report.witnesses.length ? `cosigned by ${report.witnesses.join(', ')}` : 'with no witness cosignature checked';
    const head = report.size == null ? 'Nothing verified' : `${count} of ${report.canonical} canonical results verified against checkpoint ${report.size} of ${report.origin}, ${cosigned}`;
    const problems = report.problems.length ? ` Problems: ${report.problems.map((p) => (p.unit == null ? p.message : `unit ${p.unit}: ${p.message}`)).join('; ')}.` : '';
    const wrong = shownWrong ? ` ${shownWrong} unit(s) shown with other numbers than their receipts bind.` : '';
    const notes = report.notes.length ? ` Note: ${report.notes.join('; ')}.` : '';
    say('log-result', `${head}. The plots now show the verified results only.${problems}${wrong}${notes}`, report.ok && !shownWrong);
    $('dl-proofs').disabled = false;
    await detail(id);
  } catch (err) {
    say('log-result', `verification failed: ${err.message}`, false);
  }
}

// JSON with sorted keys, to compare two parsed values.
const sorted = (v) =>
  v && typeof v === 'object' && !Array.isArray(v)
    ? Object.fromEntries(
        Object.keys(v)
          .sort()
          .map((k) => [k, sorted(v[k])]),
      )
    : Array.isArray(v)
      ? v.map(sorted)
      : v;
const sameJson = (a, b) => JSON.stringify(sorted(a)) === JSON.stringify(sorted(b));

pinOnFirstUse();
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
