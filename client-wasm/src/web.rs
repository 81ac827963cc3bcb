//! The browser side: `volunteer(host, options)` runs the shared work loop in a module Web
//! Worker. `host` is a small JS object from `web/worker.js` (fetch, timers, an IndexedDB
//! key-value store, `emit` to post events to the page, `controls` the page sets).

use crate::gpu::{Gpu, Run};
use crate::view::{LiveView, Screen};
use crate::volunteer::{self, Controls, Engine, Event, Host, Options};
use js_sys::{Array, Function, Promise, Reflect};
use protocol::api::AdapterInfo;
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

struct WebHost {
    js: JsValue,
    /// The page's canvas, when it gave one and the adapter can draw into it.
    view: Option<LiveView>,
}

/// How long after showing its first frame a device that the canvas took away is known lost.
const PROBE_MS: u64 = 500;

impl WebHost {
    fn call_sync(&self, name: &str, args: &[JsValue]) -> Result<JsValue, String> {
        let f: Function = Reflect::get(&self.js, &JsValue::from_str(name))
            .ok()
            .and_then(|f| f.dyn_into().ok())
            .ok_or_else(|| format!("host.{name} is missing"))?;
        f.apply(&self.js, &args.iter().collect::<Array>())
            .map_err(|e| format!("{e:?}"))
    }

    /// The controls the page sets, read once: `key` → `host.controls()[key]`.
    fn control(&self) -> impl Fn(&str) -> Option<JsValue> {
        let c = self.call_sync("controls", &[]).ok();
        move |key| Reflect::get(c.as_ref()?, &JsValue::from_str(key)).ok()
    }

    async fn call(&self, name: &str, args: &[JsValue]) -> Result<JsValue, String> {
        let p = self.call_sync(name, args)?;
        JsFuture::from(Promise::resolve(&p))
            .await
            .map_err(|e| e.as_string().unwrap_or_else(|| format!("{e:?}")))
    }
}

fn opt(s: Option<&str>) -> JsValue {
    s.map_or(JsValue::NULL, JsValue::from_str)
}

impl Host for WebHost {
    async fn request(
        &self,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        let r = self
            .call("request", &[path.into(), opt(token), opt(body)])
            .await?;
        let status = Reflect::get(&r, &0.into())
            .ok()
            .and_then(|v| v.as_f64())
            .ok_or("bad response")?;
        let text = Reflect::get(&r, &1.into())
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_default();
        Ok((status as u16, text))
    }

    async fn sleep_ms(&self, ms: u64) {
        let _ = self.call("sleep", &[JsValue::from_f64(ms as f64)]).await;
    }

    async fn kv_get(&self, key: &str) -> Option<String> {
        self.call("kvGet", &[key.into()]).await.ok()?.as_string()
    }

    async fn kv_set(&self, key: &str, value: &str) -> Result<(), String> {
        self.call("kvSet", &[key.into(), value.into()])
            .await
            .map(|_| ())
    }

    async fn kv_delete(&self, key: &str) {
        let _ = self.call("kvDelete", &[key.into()]).await;
    }

    async fn kv_keys(&self, prefix: &str) -> Vec<String> {
        match self.call("kvKeys", &[prefix.into()]).await {
            Ok(v) => Array::from(&v)
                .iter()
                .filter_map(|k| k.as_string())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn emit(&self, event: Event) {
        if let Ok(json) = serde_json::to_string(&event) {
            let _ = self.call_sync("emit", &[json.into()]);
        }
    }

    fn controls(&self) -> Controls {
        let (d, get) = (Controls::default(), self.control());
        Controls {
            paused: get("paused").and_then(|v| v.as_bool()).unwrap_or(d.paused),
            duty: get("duty").and_then(|v| v.as_f64()).unwrap_or(d.duty),
            stop: get("stop").and_then(|v| v.as_bool()).unwrap_or(d.stop),
        }
    }

    fn now_ms(&self) -> f64 {
        js_sys::Date::now()
    }

    async fn draw(&self, run: &Run<'_>, force: bool) -> bool {
        let Some(view) = &self.view else {
            return false;
        };
        // The page turns the view off when it is hidden or the volunteer says so.
        if !self.control()("view")
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
        {
            return false;
        }
        match view.frame(run, force).await {
            Ok(drawn) => drawn,
            Err(e) => {
                // The view is a courtesy: it stops, the computation goes on.
                self.emit(Event::Error {
                    message: format!("the live view is off: {e}"),
                });
                false
            }
        }
    }
}

/// The browser's own description of its adapter (`GPUAdapterInfo`), read by the worker.
#[derive(Deserialize, Default)]
struct GpuInfo {
    #[serde(default)]
    vendor: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize, Default)]
struct WebOptions {
    #[serde(default)]
    gpu_info: Option<GpuInfo>,
    #[serde(default)]
    nickname: Option<String>,
    /// The volunteer agreed to compute on the CPU when there is no WebGPU.
    #[serde(default)]
    allow_cpu: bool,
    #[serde(default)]
    max_units: Option<u64>,
    /// The volunteer computes built-in kernels only (no scientist's package).
    #[serde(default)]
    builtin_only: bool,
}

/// Runs the volunteer loop until the page says stop. `canvas`: an `OffscreenCanvas` the page
/// transferred for the live view, or null.
#[wasm_bindgen]
pub async fn volunteer(host: JsValue, options: String, canvas: JsValue) -> Result<(), JsValue> {
    let o: WebOptions =
        serde_json::from_str(&options).map_err(|e| JsValue::from_str(&e.to_string()))?;
    let mut host = WebHost {
        js: host,
        view: None,
    };
    let mut gpu = Gpu::new().await;
    if let (Ok(g), false) = (&gpu, canvas.is_null() || canvas.is_undefined()) {
        let screen = match Screen::new(g, &canvas) {
            Ok(s) => match s.clear(g).await {
                Ok(()) => {
                    host.sleep_ms(PROBE_MS).await;
                    if g.is_lost() {
                        Err("showing it took the GPU away".into())
                    } else {
                        Ok(s)
                    }
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e.to_string()),
        };
        match screen {
            Ok(s) => host.view = Some(LiveView::new(s, g)),
            Err(e) => {
                host.emit(Event::Error {
                    message: format!("the live view is off: {e}"),
                });
                // The device may have gone with the canvas (the browser's GPU process restarts):
                // compute on a fresh one, once the browser has one to give.
                if gpu.as_ref().is_ok_and(Gpu::is_lost) {
                    for _ in 0..5 {
                        host.sleep_ms(1500).await;
                        gpu = Gpu::new().await;
                        host.sleep_ms(PROBE_MS).await;
                        if gpu.as_ref().is_ok_and(|g| !g.is_lost()) {
                            break;
                        }
                    }
                    if gpu.as_ref().is_ok_and(Gpu::is_lost) {
                        // No device to compute on: the page offers the CPU instead.
                        gpu = Err(crate::GpuError::Device(
                            "the browser lost the GPU and gave no new one".into(),
                        ));
                    }
                }
            }
        }
    }
    let (adapter, gpu) = match gpu {
        Ok(g) => {
            let mut a = g.adapter();
            let info = o.gpu_info.unwrap_or_default();
            if a.name.is_empty() {
                a.name = if info.description.is_empty() {
                    format!("{} {}", info.vendor, info.architecture)
                        .trim()
                        .to_owned()
                } else {
                    info.description
                };
            }
            if a.vendor.is_empty() {
                a.vendor = info.vendor;
            }
            a.architecture = info.architecture;
            host.emit(Event::Adapter {
                name: a.name.clone(),
                vendor: a.vendor.clone(),
                architecture: a.architecture.clone(),
                backend: "webgpu".into(),
                device_type: a.device_type.clone(),
                gpu: true,
            });
            let info = AdapterInfo {
                name: a.name,
                backend: "webgpu".into(),
                vendor: a.vendor,
                device_type: a.device_type,
                client: concat!("qg-web/", env!("CARGO_PKG_VERSION")).into(),
            };
            (info, Some(g))
        }
        Err(e) => {
            host.emit(Event::NoGpu {
                reason: e.to_string(),
            });
            if !o.allow_cpu {
                return Ok(());
            }
            host.emit(Event::Adapter {
                name: "CPU reference (WebAssembly)".into(),
                vendor: String::new(),
                architecture: String::new(),
                backend: "cpu".into(),
                device_type: "Cpu".into(),
                gpu: false,
            });
            let info = AdapterInfo {
                name: "cpu-reference-wasm".into(),
                backend: "cpu".into(),
                client: concat!("qg-web/", env!("CARGO_PKG_VERSION")).into(),
                ..Default::default()
            };
            (info, None)
        }
    };
    let engine = match &gpu {
        Some(g) => Engine::Gpu(g),
        None => Engine::Cpu,
    };
    let opts = Options {
        nickname: o.nickname,
        adapter,
        max_units: o.max_units,
        builtin_only: o.builtin_only,
        ..Options::default()
    };
    volunteer::run(&host, &engine, &opts).await;
    Ok(())
}

/// Runs one kernel invocation on this browser's GPU (or CPU) and returns a JSON report with
/// its rate: the browser side of `cargo xtask bench browser`. With `canvas` (an
/// `OffscreenCanvas`), the live view draws into it as the volunteer page's does, so the two
/// rates say what the view costs. Not in the volunteer's build (the `bench` feature).
#[cfg(feature = "bench")]
#[wasm_bindgen]
pub async fn bench(
    kernel: String,
    params: String,
    backend: String,
    canvas: JsValue,
) -> Result<String, JsValue> {
    let err = |e: String| JsValue::from_str(&e);

    let mut frames = 0u64;
    let params = serde_json::from_str(&params).map_err(|e| err(e.to_string()))?;
    let job = shaders::Job::new(&kernel, params).map_err(|e| err(e.to_string()))?;
    let (result, adapter, ms) = if backend == "cpu" {
        let t0 = js_sys::Date::now();
        let (r, _) = job
            .run_cpu_keeping_states(1, &mut |_, _| {})
            .map_err(|e| err(e.to_string()))?;
        (r, "cpu-reference-wasm".to_owned(), js_sys::Date::now() - t0)
    } else {
        let gpu = Gpu::new().await.map_err(|e| err(e.to_string()))?;
        let name = gpu.adapter().name;
        let view = if canvas.is_null() || canvas.is_undefined() {
            None
        } else {
            let screen = Screen::new(&gpu, &canvas).map_err(|e| err(e.to_string()))?;
            Some(LiveView::new(screen, &gpu))
        };
        // Compilation is setup, as in qg-run: a volunteer compiles a kernel once.
        gpu.prepare(&job);
        let t0 = js_sys::Date::now();
        let mut run = gpu.start(&job, None).map_err(|e| err(e.to_string()))?;
        while run.step().await.map_err(|e| err(e.to_string()))?.is_some() {
            if let Some(v) = &view {
                frames += u64::from(v.frame(&run, false).await.map_err(err)?);
            }
        }
        let out = run.finish().await.map_err(|e| err(e.to_string()))?;
        let r = job
            .output(&out.state, out.checkpoints)
            .map_err(|e| err(e.to_string()))?;
        (r, name, js_sys::Date::now() - t0)
    };
    Ok(serde_json::json!({
        "kernel": kernel, "backend": backend, "adapter": adapter,
        "digest": result.digest, "checkpoints": result.checkpoints, "elapsed_s": ms / 1000.0,
        "rate_per_s": job.work() as f64 / (ms / 1000.0).max(1e-9), "frames": frames,
    })
    .to_string())
}
