// What every page shares: DOM helpers, the coordinator's API (keys in a header, never in a
// URL; every answer's status checked; errors as the API's JSON says them), and downloads.

export const $ = (id) => document.getElementById(id);

/** An element with properties and children (strings or nodes; null and undefined skipped). */
export function el(tag, props = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children.filter((c) => c != null));
  return e;
}

/** A table row of cells: each a string, a number, a node, or `{ text, cls, title }`. */
export function row(cells, cls) {
  const tr = el('tr', cls ? { className: cls } : {});
  for (const c of cells) {
    if (c instanceof Node) tr.append(el('td', {}, c));
    else if (c !== null && typeof c === 'object') {
      tr.append(el('td', { textContent: c.text ?? '', className: c.cls ?? '', title: c.title ?? '' }));
    } else tr.append(el('td', { textContent: c ?? '' }));
  }
  return tr;
}

/** A kernel as people read it: a package's `name@<64 hex>` is `name@<12 hex>…`. */
export const shortKernel = (k) => String(k ?? '').replace(/@([0-9a-f]{12})[0-9a-f]{52}$/, '@$1…');

/** A table cell naming a kernel, shortened, the whole name in its title. */
export const kernelCell = (k) => ({ text: shortKernel(k), title: k ?? '' });

/** A state name as people read it: `in_progress` → `in progress`. */
export const words = (s) => String(s).replaceAll('_', ' ');

/** Numbers as people read them: integers whole, others to 5 significant digits (0.3, not 0.30000). */
export const fmt = (x) => (typeof x === 'number' ? (Number.isInteger(x) ? String(x) : String(Number(x.toPrecision(5)))) : (x ?? ''));

/** A rate for people: 3.07e5 is "307 k", 1.2e9 is "1.2 G". */
export function si(x) {
  const units = ['', ' k', ' M', ' G', ' T', ' P'];
  let i = 0;
  while (Math.abs(x) >= 1000 && i < units.length - 1) {
    x /= 1000;
    i += 1;
  }
  return `${Number(x.toPrecision(3))}${units[i]}`;
}

/** A duration in words: "40 s", "12 min", "3.5 h", "2.1 days". */
export function duration(s) {
  if (s < 90) return `${Math.max(0, Math.round(s))} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} days`;
}

/** A failed API call: the HTTP status (0: the coordinator was unreachable) and its JSON body. */
export class ApiError extends Error {
  constructor(status, body) {
    // The API's messages name their field already; `field` is kept for forms to point at.
    super(body?.error ?? `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/**
 * Calls the coordinator and returns the answer's text; throws ApiError unless it is 2xx.
 * `body`: a string is sent as is (with `type`), anything else as JSON.
 */
export async function request(path, { key, method, body, type } = {}) {
  const headers = {};
  if (key) headers.authorization = `Bearer ${key}`;
  if (body !== undefined) headers['content-type'] = type ?? 'application/json';
  let r;
  try {
    r = await fetch(path, {
      method: method ?? (body === undefined ? 'GET' : 'POST'),
      headers,
      body: body === undefined || typeof body === 'string' ? body : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, { error: 'the coordinator is unreachable' });
  }
  const text = await r.text();
  if (!r.ok) {
    let err;
    try {
      err = JSON.parse(text);
    } catch {
      err = { error: text || `HTTP ${r.status}` };
    }
    throw new ApiError(r.status, err);
  }
  return text;
}

/** [`request`], parsed as JSON. */
export const getJson = async (path, opts) => JSON.parse(await request(path, opts));

/** Offers `blob` as a file named `name`. */
export function saveFile(name, blob) {
  const a = el('a', { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

/** A key field kept in this browser's localStorage under `storageKey`; `onChange` on edits. */
export function keyField(input, storageKey, onChange) {
  input.value = localStorage.getItem(storageKey) ?? '';
  input.addEventListener('change', () => {
    localStorage.setItem(storageKey, input.value.trim());
    onChange();
  });
  return () => input.value.trim();
}

/** The kernels' metadata (`/api/v1/kernels`), fetched once per page, by name. */
let kernels = null;
export async function kernelInfo() {
  kernels ??= getJson('/api/v1/kernels').then((k) => Object.fromEntries(k.kernels.map((x) => [x.name, x])));
  try {
    return await kernels;
  } catch (e) {
    kernels = null;
    throw e;
  }
}
