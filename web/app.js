// The volunteer page: controls and display. All computing happens in worker.js.
const $ = (id) => document.getElementById(id);
const state = { running: false, paused: false, unitsDone: 0, events: [], allowCpu: false, lastProgress: null };
window.qg = state; // for the curious, and for the end-to-end tests

const worker = new Worker('worker.js', { type: 'module' });
const send = (msg) => worker.postMessage(msg);

function setStatus(text) { $('status-line').textContent = text; }
function fmtParams(p) { return Object.entries(p).map(([k, v]) => `${k}=${v}`).join(' '); }

function render(ev) {
  switch (ev.type) {
    case 'ready': $('start').disabled = false; setStatus('ready'); break;
    case 'adapter':
      $('adapter').textContent = ev.gpu
        ? `${ev.name || 'WebGPU adapter'}${ev.vendor ? ' · ' + ev.vendor : ''}${ev.architecture ? ' · ' + ev.architecture : ''} (WebGPU)`
        : 'CPU fallback (WebAssembly)';
      $('no-webgpu').hidden = true;
      break;
    case 'no_gpu':
      $('no-webgpu-reason').textContent = ev.reason;
      $('no-webgpu-reason').title = ev.detail ?? '';
      $('no-webgpu').hidden = state.allowCpu;
      if (!state.allowCpu) { state.running = false; updateButton(); setStatus('no WebGPU'); }
      break;
    case 'registered': setStatus(`registered as volunteer ${ev.volunteer_id}`); break;
    case 'unit':
      state.firstUnitAt ??= Math.round(performance.now());
      $('kernel').textContent = `${ev.kernel}, unit ${ev.unit_id}`;
      $('params').textContent = fmtParams(ev.params);
      $('progress').max = ev.total; $('progress').value = ev.resumed_at;
      $('progress-text').textContent = ev.resumed_at ? `resumed at ${ev.resumed_at} / ${ev.total}` : '';
      setStatus('computing');
      break;
    case 'progress':
      $('progress').max = ev.total; $('progress').value = ev.done;
      $('progress-text').textContent = `${ev.done} / ${ev.total} steps`;
      state.lastProgress = ev;
      break;
    case 'computed': state.unitsDone += 1; $('units-done').textContent = state.unitsDone; break;
    case 'reported': setStatus(`result ${ev.assignment_id} accepted (${ev.replica_state.replace('_', ' ')})`); break;
    case 'stats':
      $('valid').textContent = ev.stats.valid; $('invalid').textContent = ev.stats.invalid;
      $('credit').textContent = Number(ev.stats.credit).toFixed(2); $('rank').textContent = ev.stats.rank;
      if (ev.stats.nickname && !$('nickname').value) $('nickname').value = ev.stats.nickname;
      showResults(ev.stats);
      break;
    case 'idle': setStatus(`no work right now; asking again in ${ev.retry_after_s} s`); break;
    case 'paused': setStatus('paused'); break;
    case 'offline': setStatus(`coordinator unreachable (${ev.error}); retrying in ${ev.retry_in_s} s`); break;
    case 'error': setStatus(`error: ${ev.message}`); break;
    case 'stopped':
      state.running = false; updateButton();
      setStatus($('no-webgpu').hidden ? 'stopped' : 'no WebGPU: your choice below');
      break;
  }
}

// Runs one kernel invocation in the worker and resolves with its rate (`cargo xtask bench browser`).
window.qgBench = (kernel, params, backend) => new Promise((resolve) => {
  const done = ({ data }) => {
    if (data.type !== 'bench') return;
    worker.removeEventListener('message', done);
    resolve(data);
  };
  worker.addEventListener('message', done);
  send({ cmd: 'bench', kernel, params, backend });
});

worker.onmessage = ({ data }) => { state.events.push(data); if (state.events.length > 500) state.events.shift(); render(data); };

function updateButton() { $('start').textContent = state.running && !state.paused ? 'Pause' : 'Start'; }

function start() {
  state.running = true; state.paused = false; updateButton();
  send({ cmd: 'start', options: { nickname: $('nickname').value || null, allow_cpu: state.allowCpu } });
  send({ cmd: 'duty', value: $('duty').value });
}

$('start').onclick = () => {
  if (!state.running) return start();
  state.paused = !state.paused; updateButton();
  send({ cmd: state.paused ? 'pause' : 'resume' });
};
$('use-cpu').onclick = () => { state.allowCpu = true; $('no-webgpu').hidden = true; start(); };
$('duty').onchange = () => send({ cmd: 'duty', value: $('duty').value });
$('save-nickname').onclick = () => send({ cmd: 'nickname', value: $('nickname').value });

// Automatic pauses (tab hidden, on battery) never override the volunteer's own Pause.
let autoPaused = false;
function autoPause(reason, on) {
  if (!state.running || state.paused) return;
  if (on && !autoPaused) { autoPaused = true; send({ cmd: 'pause' }); setStatus(`paused: ${reason}`); }
  if (!on && autoPaused) { autoPaused = false; send({ cmd: 'resume' }); }
}
document.addEventListener('visibilitychange', () => autoPause('tab hidden', $('pause-hidden').checked && document.hidden));
if (navigator.getBattery) {
  navigator.getBattery().then((b) => {
    const check = () => autoPause('on battery', $('pause-battery').checked && !b.charging);
    b.addEventListener('chargingchange', check); $('pause-battery').onchange = check; check();
  });
}

async function refresh() {
  try {
    const s = await (await fetch('/api/v1/status')).json();
    const rows = [['volunteers', s.volunteers], ...Object.entries(s.units).map(([k, v]) => ['units ' + k.replace('_', ' '), v])];
    $('status').replaceChildren(...rows.map((r) => tr(r)));
    const l = await (await fetch('/api/v1/leaderboard')).json();
    $('leaderboard').tBodies[0].replaceChildren(...l.leaders.map((x) => tr([x.rank, x.name, x.credit.toFixed(2), x.valid])));
  } catch (e) { /* the status line already says when the coordinator is unreachable */ }
}
// The volunteer's latest results, with the log entry of each one that counted.
function showResults(stats) {
  if (stats.anon_id) $('anon-id').textContent = stats.anon_id;
  const recent = stats.recent ?? [];
  if (!recent.length) return;
  $('my-results').tBodies[0].replaceChildren(...recent.map((r) => tr([
    r.unit_id, r.batch_id, r.kernel, r.state.replace('_', ' '),
    r.log_index == null ? (r.state === 'valid' ? 'waiting for the log' : '—') : `#${r.log_index}`,
  ])));
}
function tr(cells) {
  const row = document.createElement('tr');
  for (const c of cells) { const td = document.createElement('td'); td.textContent = c; row.append(td); }
  return row;
}
refresh(); setInterval(refresh, 3000);
