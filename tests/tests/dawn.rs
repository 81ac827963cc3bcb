//! A third WebGPU engine: the project's own browser build (web/pkg) on Dawn, Chromium's WebGPU
//! implementation, run in node through the npm package `webgpu` (`tests/dawn/run.mjs`). Without
//! a GPU Dawn runs on Chromium's SwiftShader Vulkan driver (it refuses lavapipe). The digest
//! must be the CPU reference's and wgpu-on-lavapipe's: three implementations, one digest.
//! `cargo xtask test` installs node's package and builds web/pkg before this runs.

use client_wasm::run_gpu;
use qg_tests::gpu;
use serde_json::{Value, json};
use shaders::Job;
use std::path::{Path, PathBuf};
use std::process::Command;

const SWIFTSHADER_ICD: &str = "/usr/lib/chromium/vk_swiftshader_icd.json";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs `kernel` with `params` on Dawn and returns the wasm's JSON report.
fn on_dawn(kernel: &str, params: &Value) -> Value {
    let root = root();
    let dawn = root.join("tests/dawn");
    let pkg = root.join("web/pkg");
    for (what, path, fix) in [
        (
            "node's `webgpu` package",
            dawn.join("node_modules/webgpu"),
            "cargo xtask test (it runs npm ci in tests/dawn)",
        ),
        (
            "the browser build",
            pkg.join("client_wasm_bg.wasm"),
            "cargo xtask build-web",
        ),
        (
            "Chromium's SwiftShader",
            PathBuf::from(SWIFTSHADER_ICD),
            "apt-get install chromium",
        ),
    ] {
        assert!(
            path.exists(),
            "{what} is missing ({}): run {fix}",
            path.display()
        );
    }
    let mut cmd = Command::new("node");
    cmd.current_dir(&dawn)
        .arg("run.mjs")
        .arg(&pkg)
        .arg(kernel)
        .arg(params.to_string());
    if std::env::var_os("VK_ICD_FILENAMES").is_none() {
        cmd.env("VK_ICD_FILENAMES", SWIFTSHADER_ICD);
    }
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = std::env::temp_dir().join("qg-xdg");
        let _ = std::fs::create_dir_all(&dir);
        cmd.env("XDG_RUNTIME_DIR", dir);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("node could not start ({e}): install Node.js (apt-get install nodejs npm)")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dawn run failed ({}): {}{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn dawn_wgpu_and_the_cpu_reference_give_one_digest() {
    let cases = [
        (
            "ising2d",
            json!({"L": 64, "beta": 0.44, "sweeps": 40, "seed": 3, "start": "hot"}),
        ),
        // Rows of 11 sites per colour: a padded word; checkpoints hashed on the device.
        (
            "ising2d",
            json!({"L": 22, "beta": 0.3, "h": 0.2, "sweeps": 17, "seed": 9, "checkpoint_every": 3}),
        ),
        (
            "percolation2d",
            json!({"L": 37, "p": 0.593, "samples": 5, "seed": 4}),
        ),
    ];
    for (kernel, params) in cases {
        let job = Job::new(kernel, params.clone()).unwrap();
        let cpu = job.run_cpu(2, &mut |_, _| {}).unwrap();
        let wgpu = pollster::block_on(run_gpu(gpu(), &job, &mut |_, _| {})).unwrap();
        let dawn = on_dawn(kernel, &params);
        assert!(
            dawn["adapter"]
                .as_str()
                .unwrap_or_default()
                .contains("SwiftShader")
                || std::env::var_os("VK_ICD_FILENAMES").is_some(),
            "Dawn ran on {}",
            dawn["adapter"]
        );
        assert_eq!(wgpu.digest, cpu.digest, "wgpu vs CPU: {kernel} {params}");
        assert_eq!(wgpu.checkpoints, cpu.checkpoints, "{kernel} {params}");
        assert_eq!(
            dawn["digest"],
            json!(cpu.digest),
            "Dawn vs CPU: {kernel} {params}: {dawn}"
        );
        // Checkpoint digests come from the WGSL SHA-256 on Dawn's device.
        assert_eq!(
            dawn["checkpoints"],
            json!(cpu.checkpoints),
            "Dawn checkpoints: {kernel} {params}"
        );
    }
}
