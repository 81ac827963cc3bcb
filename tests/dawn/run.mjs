// Runs one kernel invocation of the project's browser build (web/pkg) on Dawn, Chromium's WebGPU
// engine, in node (npm package `webgpu`), and prints the wasm's JSON report (digest, adapter,
// rate). Used by `tests/tests/dawn.rs` and `cargo xtask bench browser --engine dawn`.
//
// usage: node run.mjs PKGDIR KERNEL PARAMS_JSON [BACKEND]
// Without a GPU, point Vulkan at Chromium's SwiftShader:
//   VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const [pkg, kernel, params, backend = 'gpu'] = process.argv.slice(2);
if (!pkg || !kernel || !params) {
  console.error('usage: node run.mjs PKGDIR KERNEL PARAMS_JSON [BACKEND]');
  process.exit(2);
}
const { create, globals } = await import('webgpu');
Object.assign(globalThis, globals);
// wgpu's WebGPU backend looks for `navigator.gpu` and a `Window` class, as in a browser tab.
globalThis.Window = class Window {};
globalThis.navigator = { gpu: create([]) };
const m = await import(pathToFileURL(`${pkg}/client_wasm.js`).href);
m.initSync({ module: readFileSync(`${pkg}/client_wasm_bg.wasm`) });
try {
  console.log(await m.bench(kernel, params, backend));
} catch (e) {
  console.error('dawn run failed:', e);
  process.exit(1);
}
// Dawn keeps the process alive otherwise.
process.exit(0);
