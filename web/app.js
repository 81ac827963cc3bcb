// The volunteer page: controls and display. All computing happens in worker.js; the live view
// is a canvas handed to the worker, where the GPU draws the state it computes.
import { $, getJson, kernelCell, kernelInfo, row, shortKernel, words } from './lib/qg.js';

const state = { running: false, paused: false, unitsDone: 0, allowCpu: false, canvasSent: false, unit: null };
const worker = new Worker('worker.js', { type: 'module' });
const send = (msg, transfer) => worker.postMessage(msg, transfer ?? []);

function setStatus(text) {
  $('status-line').textContent = text;
}
const fmtParams = (p) =>
  Object.entries(p)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');

/** The adapter named once: "google swiftshader · google · swiftshader" is "google swiftshader". */
function adapterName(ev) {
  if (!ev.gpu) return 'CPU fallback (WebAssembly)';
  const parts = [];
  for (const p of [ev.name || 'WebGPU adapter', ev.vendor, ev.architecture]) {
    const t = (p ?? '').trim();
    if (t && !parts.some((q) => q.toLowerCase().includes(t.toLowerCase()))) parts.push(t);
  }
  return `${parts.join(' · ')} (WebGPU)`;
}

async function showUnit(ev) {
  state.unit = ev;
  $('batch-name').textContent = ev.batch ? `For “${ev.batch.name}”` : 'For a batch with no name';
  $('batch-description').textContent = ev.batch?.description ?? '';
  $('kernel').textContent = `${shortKernel(ev.kernel)}, unit ${ev.unit_id}`;
  $('kernel').title = ev.kernel;
  $('params').textContent = fmtParams(ev.params);
  $('progress').max = ev.total;
  $('progress').value = ev.resumed_at;
  $('progress-text').textContent = ev.resumed_at ? `resumed at ${ev.resumed_at} / ${ev.total}` : '';
  $('resumed').textContent = ev.resumed_at ? `Resumed from step ${ev.resumed_at}, saved before this tab closed.` : '';
  $('saved').textContent = '';
  const pkg = ev.package;
  $('package').hidden = !pkg;
  if (pkg) {
    $('package-author').textContent = pkg.author;
    $('package-name').textContent = pkg.name;
    $('package-hash').textContent = `${pkg.hash.slice(0, 12)}…`;
    $('package-hash').title = pkg.hash;
    $('package-approved').textContent = pkg.approved ? 'approved by this coordinator' : 'not approved';
  }
  try {
    const k = (await kernelInfo())[ev.kernel];
    $('kernel-plain').textContent = k?.plain ?? '';
  } catch {
    $('kernel-plain').textContent = '';
  }
}

function showFrame(ev) {
  const u = state.unit;
  const what = u ? `${shortKernel(u.kernel)} unit ${u.unit_id}` : 'the unit';
  const text = `${what} at step ${ev.done} of ${ev.total}`;
  $('view-caption').textContent = `Live: ${text}.`;
  $('view').setAttribute('aria-label', `The simulation: ${text}`);
  $('view').dataset.step = ev.done;
  $('view').dataset.unit = u?.unit_id ?? '';
}

function render(ev) {
  switch (ev.type) {
    case 'ready':
      $('start').disabled = false;
      setStatus('ready');
      break;
    case 'adapter':
      $('adapter').textContent = adapterName(ev);
      $('no-webgpu').hidden = true;
      if (!ev.gpu) $('view-caption').textContent = 'The live view needs WebGPU; computing on the CPU draws nothing.';
      break;
    case 'no_gpu':
      $('no-webgpu-reason').textContent = ev.reason;
      $('no-webgpu-reason').title = ev.detail ?? '';
      $('no-webgpu').hidden = state.allowCpu;
      if (!state.allowCpu) {
        state.running = false;
        updateButton();
        setStatus('no WebGPU');
      }
      break;
    case 'registered':
      setStatus(`registered as volunteer ${ev.volunteer_id}`);
      break;
    case 'unit':
      showUnit(ev);
      setStatus('computing');
      break;
    case 'progress':
      $('progress').max = ev.total;
      $('progress').value = ev.done;
      $('progress-text').textContent = `${ev.done} / ${ev.total} steps`;
      break;
    case 'frame':
      showFrame(ev);
      break;
    case 'saved':
      $('saved').textContent = `Progress saved at step ${ev.done}: closing this tab now loses nothing.`;
      break;
    case 'computed':
      $('saved').textContent = '';
      state.unitsDone += 1;
      $('units-done').textContent = state.unitsDone;
      break;
    case 'reported':
      setStatus(`result ${ev.assignment_id} accepted (${words(ev.replica_state)})`);
      break;
    case 'stats':
      $('valid').textContent = ev.stats.valid;
      $('invalid').textContent = ev.stats.invalid;
      $('credit').textContent = Number(ev.stats.credit).toFixed(2);
      $('rank').textContent = ev.stats.rank;
      if (ev.stats.nickname && !$('nickname').value) $('nickname').value = ev.stats.nickname;
      showResults(ev.stats);
      break;
    case 'idle':
      setStatus(`no work right now; asking again in ${ev.retry_after_s} s`);
      break;
    case 'paused':
      setStatus('paused');
      break;
    case 'offline':
      setStatus(`coordinator unreachable (${ev.error}); retrying in ${ev.retry_in_s} s`);
      break;
    case 'error':
      setStatus(`error: ${ev.message}`);
      if (ev.message.startsWith('the live view is off')) {
        $('view-caption').textContent = `The live view is off in this browser (${ev.message.replace('the live view is off: ', '')}); computing goes on.`;
      }
      break;
    case 'stopped':
      state.running = false;
      updateButton();
      setStatus($('no-webgpu').hidden ? 'stopped' : 'no WebGPU: your choice below');
      break;
  }
}

worker.onmessage = ({ data }) => render(data);

function updateButton() {
  $('start').textContent = state.running && !state.paused ? 'Pause' : 'Start';
}

// The view draws only while it is wanted and seen.
const viewWanted = () => $('show-view').checked && !document.hidden;
function updateView() {
  send({ cmd: 'view', value: viewWanted() });
  $('view').hidden = !$('show-view').checked;
}

function start() {
  state.running = true;
  state.paused = false;
  updateButton();
  const msg = {
    cmd: 'start',
    options: { nickname: $('nickname').value || null, allow_cpu: state.allowCpu, builtin_only: $('builtin-only').checked },
  };
  // The canvas goes to the worker once; the worker keeps it across restarts.
  const transfer = [];
  if (!state.canvasSent && 'transferControlToOffscreen' in $('view')) {
    msg.canvas = $('view').transferControlToOffscreen();
    transfer.push(msg.canvas);
    state.canvasSent = true;
  }
  updateView();
  send(msg, transfer);
  send({ cmd: 'duty', value: $('duty').value });
}

$('start').onclick = () => {
  if (!state.running) return start();
  state.paused = !state.paused;
  updateButton();
  send({ cmd: state.paused ? 'pause' : 'resume' });
};
$('use-cpu').onclick = () => {
  state.allowCpu = true;
  $('no-webgpu').hidden = true;
  start();
};
$('duty').onchange = () => send({ cmd: 'duty', value: $('duty').value });
$('save-nickname').onclick = () => send({ cmd: 'nickname', value: $('nickname').value });
$('show-view').onchange = updateView;
// The choice of kernels is kept on this device.
$('builtin-only').checked = localStorage.getItem('qg-builtin-only') === '1';
$('builtin-only').onchange = () => localStorage.setItem('qg-builtin-only', $('builtin-only').checked ? '1' : '0');

// Automatic pauses (tab hidden, on battery) never override the volunteer's own Pause.
let autoPaused = false;
function autoPause(reason, on) {
  if (!state.running || state.paused) return;
  if (on && !autoPaused) {
    autoPaused = true;
    send({ cmd: 'pause' });
    setStatus(`paused: ${reason}`);
  }
  if (!on && autoPaused) {
    autoPaused = false;
    send({ cmd: 'resume' });
  }
}
document.addEventListener('visibilitychange', () => {
  updateView();
  autoPause('tab hidden', $('pause-hidden').checked && document.hidden);
});
if (navigator.getBattery) {
  navigator.getBattery().then((b) => {
    const check = () => autoPause('on battery', $('pause-battery').checked && !b.charging);
    b.addEventListener('chargingchange', check);
    $('pause-battery').onchange = check;
    check();
  });
}

async function refresh() {
  try {
    const s = await getJson('/api/v1/status');
    const rows = [['volunteers', s.volunteers], ...Object.entries(s.units).map(([k, v]) => [`units ${words(k)}`, v])];
    $('status').tBodies[0].replaceChildren(...rows.map((r) => row(r)));
    const l = await getJson('/api/v1/leaderboard');
    $('leaderboard').tBodies[0].replaceChildren(...l.leaders.map((x) => row([x.rank, x.name, x.credit.toFixed(2), x.valid])));
  } catch {
    // The status line says when the coordinator is unreachable.
  }
}

// The volunteer's latest results, with the log entry of each one that counted.
function showResults(stats) {
  if (stats.anon_id) $('anon-id').textContent = stats.anon_id;
  const recent = stats.recent ?? [];
  if (!recent.length) return;
  $('my-results').tBodies[0].replaceChildren(
    ...recent.map((r) =>
      row([r.unit_id, r.batch_id, kernelCell(r.kernel), words(r.state), r.log_index == null ? (r.state === 'valid' ? 'waiting for the log' : '—') : `#${r.log_index}`]),
    ),
  );
}

refresh();
setInterval(refresh, 3000);
