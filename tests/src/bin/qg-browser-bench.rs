//! `cargo xtask bench browser`: the same `ising2d` unit in headless Chromium (WebGPU, without
//! and with the live view drawing), native wgpu and the CPU reference, measured in one run, and
//! the time from opening the page to the first unit computing. One JSON line.
//!
//! On this machine the browser's WebGPU is SwiftShader and native wgpu is lavapipe: two
//! different CPU devices, so their ratio says little; on a machine with a real GPU both run on
//! it and the ratio is the browser's overhead.

use protocol::api::PolicySpec;
use qg_tests::browser::{click_start, js, wait_js, world};
use serde_json::{Value, json};
use shaders::Job;
use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let params = json!({"L": 256, "beta": 0.44, "sweeps": 100, "seed": 1});
    let job = Job::new("ising2d", params.clone()).expect("valid params");
    let w = world().await;
    w.batch(
        vec![json!({"L": 32, "beta": 0.44, "sweeps": 50, "seed": 1})],
        PolicySpec::default(),
    );
    let profile = tempfile::tempdir().expect("temp dir");
    let page = w.browser(profile.path(), true).await;
    click_start(&page).await;
    let first_unit_ms = wait_js(
        &page,
        "return document.getElementById('kernel').textContent ? Math.round(performance.now()) : null",
        Duration::from_secs(120),
    )
    .await;
    js(&page, "document.getElementById('start').click()").await; // pause: the bench needs the GPU
    // The same unit on the bench page, without and with the live view drawing.
    let mut runs = Vec::new();
    for view in [0, 1] {
        let url = format!(
            "http://{}/bench/?kernel=ising2d&backend=gpu&view={view}&params={}",
            w.addr,
            urlencode(&params.to_string())
        );
        page.goto(&url).await.expect("the bench page");
        let text = wait_js(
            &page,
            "const r = document.getElementById('result'); return r.dataset.done ? r.textContent : null",
            Duration::from_secs(600),
        )
        .await;
        let v: Value = serde_json::from_str(text.as_str().unwrap_or("{}")).expect("a JSON report");
        runs.push(v);
    }
    let _ = page.close().await;
    let (browser, with_view) = (&runs[0], &runs[1]);

    let gpu = pollster::block_on(client_wasm::Gpu::new()).expect("a native GPU adapter");
    let t = Instant::now();
    let native =
        pollster::block_on(client_wasm::run_gpu(&gpu, &job, &mut |_, _| {})).expect("native run");
    let native_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let cpu = job.run_cpu(1, &mut |_, _| {}).expect("cpu run");
    let cpu_s = t.elapsed().as_secs_f64();

    let work = job.work() as f64;
    let browser_rate = browser["rate_per_s"].as_f64().unwrap_or(f64::NAN);
    let native_rate = work / native_s;
    let cpu_rate = work / cpu_s;
    println!(
        "{}",
        json!({
            "bench": "browser", "kernel": "ising2d", "params": params,
            "browser_adapter": browser["adapter"], "native_adapter": gpu.adapter().name,
            "browser_webgpu_spin_updates_per_s": browser_rate,
            "native_gpu_spin_updates_per_s": native_rate,
            "cpu_1_thread_spin_updates_per_s": cpu_rate,
            "browser_vs_native": browser_rate / native_rate,
            "browser_vs_cpu": browser_rate / cpu_rate,
            "same_digest": browser["digest"] == json!(native.digest) && native.digest == cpu.digest
                && with_view["digest"] == browser["digest"],
            "browser_webgpu_with_live_view_spin_updates_per_s": with_view["rate_per_s"],
            "live_view_frames": with_view["frames"],
            "live_view_cost": 1.0 - with_view["rate_per_s"].as_f64().unwrap_or(f64::NAN) / browser_rate,
            "page_open_to_first_unit_ms": first_unit_ms,
            "units_in_db": w.store.unit_count().unwrap_or(0),
        })
    );
}

/// `text` for a URL's query.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
