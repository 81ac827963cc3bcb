//! Build glue in Rust (the `cargo xtask` pattern): `cargo xtask test | serve | bench | build-web`.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod bench;
mod deps;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match args.first().map(String::as_str) {
        Some("test") => test(&rest),
        Some("bench") => bench::run(&rest),
        Some("serve") => serve(&rest),
        Some("help") | Some("--help") | Some("-h") | None => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => bail!("unknown command `{other}`\n{HELP}"),
    }
}

const HELP: &str = "\
cargo xtask <command>

  test                 everything CI runs: installs missing Debian packages (as root),
                       then fmt, clippy (native and wasm32), unit, integration and GPU tests
  bench kernels        kernel throughput: CPU reference (1 thread, all cores) and native GPU
  serve                runs the kernels demo on this machine's GPU and CPU
";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The environment every GPU-touching command gets: Vulkan only (lavapipe in CI), and a
/// writable runtime dir for Mesa.
pub fn gpu_env(cmd: &mut Command) -> &mut Command {
    if std::env::var_os("WGPU_BACKEND").is_none() {
        cmd.env("WGPU_BACKEND", "vulkan");
    }
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = std::env::temp_dir().join("qg-xdg");
        let _ = std::fs::create_dir_all(&dir);
        cmd.env("XDG_RUNTIME_DIR", dir);
    }
    cmd
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

pub fn run(step: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("==> {step}");
    let status = cmd
        .status()
        .with_context(|| format!("{step}: could not start"))?;
    if !status.success() {
        bail!("{step} failed ({status})");
    }
    Ok(())
}

fn test(args: &[&str]) -> Result<()> {
    let started = std::time::Instant::now();
    deps::ensure(&deps::GPU)?;
    deps::ensure_wasm_target()?;
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    run(
        "clippy (native)",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run(
        "clippy (wasm32 client)",
        cargo().args([
            "clippy",
            "-p",
            "client-wasm",
            "--lib",
            "--target",
            "wasm32-unknown-unknown",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    let mut t = cargo();
    t.args(["test", "--workspace"]).args(args);
    run(
        "tests (unit, integration, GPU on lavapipe)",
        gpu_env(&mut t),
    )?;
    eprintln!(
        "==> all checks passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Until the coordinator lands, `serve` demonstrates the kernels on this machine.
fn serve(_args: &[&str]) -> Result<()> {
    deps::ensure(&deps::GPU)?;
    let demos = [
        (
            "ising2d",
            json!({"L": 256, "beta": 0.44, "sweeps": 200, "thermalize": 50, "seed": 1}),
        ),
        (
            "percolation2d",
            json!({"L": 256, "p": 0.5927, "samples": 8, "seed": 1}),
        ),
        (
            "lj_md",
            json!({"n": 500, "density": 0.8, "temperature": 1.0, "dt": 0.005, "steps": 200, "seed": 1}),
        ),
    ];
    for (kernel, params) in demos {
        for backend in ["gpu", "cpu"] {
            let v = qg_run(kernel, &params, backend, None)?;
            println!(
                "{kernel:>14} {backend}: digest {} in {:.3} s on {}",
                v["digest"].as_str().unwrap_or("?"),
                v["elapsed_s"].as_f64().unwrap_or(f64::NAN),
                v["adapter"]["name"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

/// Runs the release `qg-run` and parses its JSON line.
pub fn qg_run(
    kernel: &str,
    params: &Value,
    backend: &str,
    threads: Option<usize>,
) -> Result<Value> {
    let mut c = cargo();
    c.args([
        "run",
        "--quiet",
        "--release",
        "-p",
        "client-wasm",
        "--bin",
        "qg-run",
        "--",
        kernel,
        "--params",
        &params.to_string(),
        "--backend",
        backend,
    ]);
    if let Some(t) = threads {
        c.args(["--threads", &t.to_string()]);
    }
    let out = gpu_env(&mut c)
        .stderr(Stdio::inherit())
        .output()
        .context("running qg-run")?;
    if !out.status.success() {
        bail!(
            "qg-run {kernel} --backend {backend} failed ({})",
            out.status
        );
    }
    serde_json::from_slice(&out.stdout).context("qg-run printed no JSON")
}
