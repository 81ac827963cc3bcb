// Runs the benchmark the query names in the volunteer's worker and shows its JSON report.
import { $ } from '/lib/qg.js';

const q = new URLSearchParams(location.search);
const worker = new Worker('/worker.js?bench', { type: 'module' });
worker.onmessage = ({ data }) => {
  if (data.type === 'ready') {
    const msg = { cmd: 'bench', kernel: q.get('kernel') ?? 'ising2d', params: JSON.parse(q.get('params') ?? '{}'), backend: q.get('backend') ?? 'gpu' };
    const transfer = [];
    if (q.get('view') === '1') {
      msg.canvas = $('view').transferControlToOffscreen();
      transfer.push(msg.canvas);
    } else {
      $('view').hidden = true;
    }
    worker.postMessage(msg, transfer);
  }
  if (data.type === 'bench') {
    $('bench-status').textContent = data.error ? `failed: ${data.error}` : 'done';
    $('result').textContent = JSON.stringify(data.result ?? { error: data.error });
    $('result').dataset.done = 'true';
  }
};
