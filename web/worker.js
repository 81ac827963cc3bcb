// The volunteer's compute worker: runs the Rust work loop (web/pkg/volunteer, built by
// `cargo xtask build-web`) off the main thread, so the page never freezes. It gives the loop
// fetch, timers and a small IndexedDB key-value store (token, pending results, checkpoints,
// kernel packages: IndexedDB survives a browser crash where localStorage may not), and posts
// its events to the page. The benchmark's page starts it as `worker.js?bench`: that build
// (web/pkg) has the benchmark's export too.
const { default: init, volunteer, bench } = await import(
  self.location.search === '?bench' ? './pkg/client_wasm.js' : './pkg/volunteer/client_wasm.js'
);

// What the page controls: `view` is whether the live view draws (shown and the tab visible).
const controls = { paused: false, duty: 1, stop: false, view: false };
let running = false;
// The page's canvas for the live view, transferred once and kept across restarts.
let canvas = null;

const db = new Promise((resolve, reject) => {
  const open = indexedDB.open('quorum-grid', 1);
  open.onupgradeneeded = () => open.result.createObjectStore('kv');
  open.onsuccess = () => resolve(open.result);
  open.onerror = () => reject(open.error);
});

// One IndexedDB transaction; writes are 'strict' so they are on disk when it completes.
async function kv(mode, op) {
  const d = await db;
  return new Promise((resolve, reject) => {
    const t = d.transaction('kv', mode, { durability: mode === 'readwrite' ? 'strict' : 'default' });
    const req = op(t.objectStore('kv'));
    t.oncomplete = () => resolve(req.result);
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error);
  });
}

const host = {
  async request(path, token, body) {
    const headers = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== null) headers['content-type'] = 'application/json';
    const r = await fetch(path, { method: body === null ? 'GET' : 'POST', headers, body: body ?? undefined });
    return [r.status, await r.text()];
  },
  sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
  kvGet: (k) => kv('readonly', (s) => s.get(k)).then((v) => v ?? null),
  kvSet: (k, v) => kv('readwrite', (s) => s.put(v, k)).then(() => null),
  kvDelete: (k) => kv('readwrite', (s) => s.delete(k)).then(() => null),
  kvKeys: (prefix) => kv('readonly', (s) => s.getAllKeys(IDBKeyRange.bound(prefix, `${prefix}\uffff`))),
  emit: (json) => postMessage(JSON.parse(json)),
  controls: () => controls,
};

// What the browser says of its WebGPU adapter (wgpu exposes only the often-empty description).
async function gpuInfo() {
  if (!navigator.gpu) return { available: false };
  try {
    const a = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!a) return { available: true, adapter: false };
    const i = a.info ?? {};
    return { available: true, adapter: true, vendor: i.vendor ?? '', architecture: i.architecture ?? '', description: i.description ?? '' };
  } catch {
    return { available: true, adapter: false };
  }
}

async function setNickname(nickname) {
  const token = await host.kvGet('token');
  if (!token) return postMessage({ type: 'error', message: 'register first: click Start' });
  const [status, text] = await host.request('/api/v1/volunteers/me', token, JSON.stringify({ nickname }));
  postMessage(status === 200 ? { type: 'stats', stats: JSON.parse(text) } : { type: 'error', message: JSON.parse(text).error });
}

self.addEventListener('message', async ({ data }) => {
  switch (data.cmd) {
    case 'start':
      controls.paused = false;
      controls.stop = false;
      canvas = data.canvas ?? canvas;
      if (running) return;
      running = true;
      try {
        await init();
        const gpu = await gpuInfo();
        const plain = !gpu.available ? 'WebGPU is not available in this browser'
          : 'WebGPU is on, but it found no usable graphics adapter';
        host.emit = (json) => {
          const ev = JSON.parse(json);
          if (ev.type === 'no_gpu') { ev.detail = ev.reason; ev.reason = plain; }
          postMessage(ev);
        };
        await volunteer(host, JSON.stringify({ ...(data.options ?? {}), gpu_info: gpu.adapter ? gpu : null }), canvas);
        postMessage({ type: 'stopped' });
      } catch (e) {
        postMessage({ type: 'error', message: String(e) });
      }
      running = false;
      break;
    case 'pause': controls.paused = true; break;
    case 'resume': controls.paused = false; break;
    case 'duty': controls.duty = Number(data.value) || 1; break;
    case 'view': controls.view = Boolean(data.value); break;
    case 'stop': controls.stop = true; break;
    case 'nickname': setNickname(data.value); break;
    case 'bench':
      try {
        await init();
        const result = JSON.parse(await bench(data.kernel, JSON.stringify(data.params), data.backend, data.canvas ?? null));
        const gpu = await gpuInfo();
        if (!result.adapter && gpu.adapter) result.adapter = gpu.description || `${gpu.vendor} ${gpu.architecture}`.trim();
        postMessage({ type: 'bench', result });
      } catch (e) {
        postMessage({ type: 'bench', error: String(e) });
      }
      break;
  }
});
postMessage({ type: 'ready' });
