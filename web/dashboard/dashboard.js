// The operator dashboard: one Server-Sent Events stream of coordinator snapshots.
import { $, el, getJson, row } from '/lib/qg.js';

const state = { last: null };

const chart = new Chart($('throughput'), {
  type: 'line',
  data: { labels: [], datasets: [
    { label: 'validated', data: [], borderColor: '#2b8a3e', pointRadius: 0 },
    { label: 'dispatched', data: [], borderColor: '#2e63e0', pointRadius: 0 },
  ] },
  options: { animation: false, scales: { y: { beginAtZero: true } } },
});

const num = (text) => ({ text, cls: 'num' });
const sum = (o) => Object.values(o).reduce((a, b) => a + b, 0);

function render(d) {
  for (const [k, v] of Object.entries(d.status.units)) { const el = $(`units-${k}`); if (el) el.textContent = v; }
  $('in-flight').textContent = d.status.replicas.in_progress;
  $('agreement').textContent = d.agreement_rate == null ? '–' : `${(100 * d.agreement_rate).toFixed(1)}%`;
  $('spot-failures').textContent = d.spot_check_failures;
  $('blacklisted').textContent = d.status.blacklisted;
  $('ringers').textContent = d.status.ringers;
  const ch = d.status.challenges;
  $('challenges').textContent = `${ch.passed ?? 0} / ${ch.failed ?? 0} / ${ch.expired ?? 0}`;
  $('doubted-classes').textContent = d.status.doubted_classes;
  $('volunteers').textContent = d.status.volunteers;
  if (state.last) {
    const dt = Math.max(1, d.at - state.last.at);
    const judged = (s) => s.replicas.valid + s.replicas.invalid;
    chart.data.labels.push(new Date(d.at * 1000).toLocaleTimeString());
    chart.data.datasets[0].data.push((judged(d.status) - judged(state.last.status)) / dt);
    chart.data.datasets[1].data.push((sum(d.status.replicas) - sum(state.last.status.replicas)) / dt);
    if (chart.data.labels.length > 300) { chart.data.labels.shift(); for (const s of chart.data.datasets) s.data.shift(); }
    chart.update();
  }
  $('problems').tBodies[0].replaceChildren(...d.problems.map((p) => row([p.unit_id, p.batch_id, p.state, p.reason ?? ''])));
  $('hosts').tBodies[0].replaceChildren(
    ...d.hosts.map((h) =>
      row([
        h.volunteer,
        h.nickname ?? '',
        num(h.valid),
        num(h.invalid),
        num(h.errors),
        num(h.spot_failed),
        num(h.reliability == null ? '–' : `${(100 * h.reliability).toFixed(1)}%`),
        num(h.checks),
        num(h.blacklisted ? 'blacklisted' : credibility(h.credibility)),
        new Date(h.last_seen * 1000).toLocaleTimeString(),
      ]),
    ),
  );
  $('witnesses').tBodies[0].replaceChildren(
    ...d.witnesses.map((w) => {
      const behind = w.size == null ? d.log_size : d.log_size - w.size;
      const age = w.cosigned_at == null ? 'never' : `${Math.max(0, d.at - w.cosigned_at)} s ago`;
      // Behind for a minute: it is down, slow or refusing (a cosignature follows each checkpoint within seconds).
      const stale = w.size == null || (behind > 0 && d.at - w.cosigned_at > 60);
      // A witness the log pushes to: how the last push went (the witness's refusal, or unreachable).
      const push = w.url == null ? 'pulls' : w.error == null ? `pushed to ${w.url}` : `${w.url}: ${w.error} (failing for ${Math.max(0, d.at - w.failing_since)} s)`;
      return row([w.name, num(w.size ?? '–'), num(behind), age, push], stale || w.error != null ? 'bad' : undefined);
    }),
  );
  $('classes').tBodies[0].replaceChildren(
    ...d.classes.map((c) =>
      row([c.class, num(c.passed), num(c.failed), num(c.doubt > 0 ? `doubted: ${credibility(1 - c.doubt)}` : 'not doubted')], c.doubt > 0 ? 'bad' : undefined),
    ),
  );
  state.last = d;
}

// Credibility as "1 − 4.1e-4": the doubt is what tells volunteers apart.
function credibility(c) {
  const doubt = 1 - c;
  return doubt <= 0 ? '1' : `1 − ${doubt.toExponential(1)}`;
}

let source = null;
// The key goes in a header, never in a URL: it buys a short-lived ticket that opens the stream
// (EventSource cannot send headers). A ticket opens one stream, which ends when the ticket
// expires (a minute): a stream the coordinator closed gets a new ticket.
async function connect() {
  const key = $('key').value.trim();
  localStorage.setItem('qg-operator-key', key);
  if (source) source.close();
  source = null;
  if (!key) return;
  let ticket;
  try {
    const r = await fetch('/api/v1/dashboard/ticket', { method: 'POST', headers: { authorization: `Bearer ${key}` } });
    if (!r.ok) {
      $('conn').textContent = r.status === 401 || r.status === 403
        ? 'refused: is this an operator key? (change it to retry)'
        : `coordinator error (HTTP ${r.status}); retrying…`;
      if (r.status >= 500) setTimeout(connect, 5000);
      return;
    }
    ticket = (await r.json()).ticket;
  } catch {
    $('conn').textContent = 'coordinator unreachable; retrying…';
    setTimeout(connect, 3000);
    return;
  }
  source = new EventSource(`/api/v1/dashboard/events?ticket=${encodeURIComponent(ticket)}`);
  source.addEventListener('snapshot', (e) => { $('conn').textContent = 'live'; render(JSON.parse(e.data)); });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      $('conn').textContent = 'reconnecting…';
      setTimeout(connect, 1000);
    } else {
      $('conn').textContent = 'coordinator unreachable; reconnecting…';
    }
  };
}
/** Packages with their status, and the operator's approve / suspend. */
async function packages() {
  const key = $('key').value.trim();
  try {
    const { packages: list } = await getJson('/api/v1/kernels');
    $('packages').tBodies[0].replaceChildren(
      ...list.map((p) => {
        const verb = p.status === 'approved' ? 'suspend' : 'approve';
        const act = el('button', { type: 'button', className: 'secondary', textContent: verb === 'approve' ? 'Approve' : 'Suspend' });
        act.setAttribute('aria-label', `${verb} ${p.kernel}`);
        act.disabled = !key;
        act.onclick = async () => {
          try {
            await getJson(`/api/v1/kernels/${p.hash}/${verb}`, { key, body: {} });
            $('packages-result').textContent = `${p.kernel}: ${verb === 'approve' ? 'approved' : 'suspended'}`;
          } catch (err) {
            $('packages-result').textContent = `${p.kernel}: ${err.message}`;
          }
          await packages();
        };
        return row([{ text: p.kernel, cls: 'mono' }, p.author, p.status, p.reason ?? '', num(p.error_volunteers), num(`${p.class_disagreements} / ${p.class_pairs}`), act]);
      }),
    );
  } catch (err) {
    $('packages-result').textContent = err.message;
  }
}
$('key').value = localStorage.getItem('qg-operator-key') ?? '';
$('key').onchange = () => {
  connect();
  packages();
};
connect();
packages();
setInterval(packages, 10000);
