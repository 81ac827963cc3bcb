//! Build glue in Rust (the `cargo xtask` pattern): `cargo xtask test | serve | bench | build-web`.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod bench;
mod deps;
mod pg;
mod schemathesis;
mod web;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match args.first().map(String::as_str) {
        Some("test") => test(&rest),
        Some("bench") => bench::run(&rest),
        Some("serve") => serve(&rest),
        Some("build-web") => web::build(),
        Some("schemathesis") => schemathesis::run(),
        Some("help") | Some("--help") | Some("-h") | None => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => bail!("unknown command `{other}`\n{HELP}"),
    }
}

const HELP: &str = "\
cargo xtask <command>

  test                 everything CI runs: installs missing Debian packages (as root) and
                       Dawn for node (npm), then fmt, clippy (native and wasm32), builds the web
                       client, and runs unit, integration, GPU (lavapipe), browser (headless
                       Chromium) and Dawn (node, SwiftShader) tests, the PostgreSQL suite, and
                       schemathesis against the API's OpenAPI document
  schemathesis         only that last step (no 5xx, no response contradicting the schema)
  bench kernels        kernel throughput: CPU reference (1 thread, all cores) and native GPU;
                       with --package DIR, a kernel package's beside its built-in twin
  bench reliability    Sybil tokens, the spot-check hog, a connection flood, a pinned soak
  build-web            compiles the browser client to wasm and its JS glue: web/pkg/volunteer
                       (the volunteer's download, within its budget) and web/pkg (with the
                       browser benchmark's export)
  serve [ARGS]         starts the coordinator (SQLite in ./qg-data, demo batch, pages on
                       http://127.0.0.1:8080); ARGS go to `coordinator serve`
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
    let needs: Vec<&deps::Need> = deps::GPU
        .iter()
        .chain(&deps::BROWSER)
        .chain(&deps::NODE)
        .collect();
    deps::ensure_all(&needs)?;
    // Where Go cannot be installed, its interop test says it is skipped (as PostgreSQL's
    // tests do without a server).
    if let Err(e) = deps::ensure(&deps::GO) {
        eprintln!("note: {e:#}: the Go interop test will be skipped");
    }
    deps::ensure_wasm_target()?;
    deps::ensure_dawn()?;
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
        "clippy (wasm32 client, with the benchmark's export)",
        cargo().args([
            "clippy",
            "-p",
            "client-wasm",
            "--lib",
            "--target",
            "wasm32-unknown-unknown",
            "--features",
            "bench",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    lint_js()?;
    web::build()?;
    let mut t = cargo();
    t.args(["test", "--workspace"]).args(args);
    run(
        "tests (unit, integration, GPU on lavapipe)",
        gpu_env(&mut t),
    )?;
    // The same store tests on PostgreSQL (the backends' conformance suite), its crash test,
    // and several coordinators sharing one database.
    let pg = pg::ensure()?;
    let mut t = cargo();
    t.args([
        "test",
        "-p",
        "coordinator",
        "--test",
        "api",
        "--test",
        "crash",
        "--test",
        "multi_coordinator",
    ])
    .args(["--", "--include-ignored"])
    .env("QG_TEST_BACKEND", "postgres")
    .env("QG_TEST_DATABASE_URL", &pg.url);
    run(
        "tests on PostgreSQL (conformance, crash, 3 coordinators)",
        &mut t,
    )?;
    drop(pg);
    eprintln!("==> schemathesis against /api/v1/openapi.json");
    schemathesis::run()?;
    eprintln!(
        "==> all checks passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Biome over the pages' JavaScript (biome.json says which files and rules): any diagnostic,
/// even a hint, fails.
fn lint_js() -> Result<()> {
    deps::ensure(&deps::NODE)?;
    let biome = deps::ensure_biome()?;
    eprintln!("==> biome lint (web/*.js)");
    let out = Command::new("node")
        .arg(&biome)
        .args(["lint", "--error-on-warnings", "--max-diagnostics=none"])
        .current_dir(root())
        .output()
        .context("running biome")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || text.contains("Found ") {
        eprintln!("{text}");
        bail!("biome lint: fix the diagnostics above (zero are allowed)");
    }
    Ok(())
}

/// Builds and starts the coordinator on its embedded default (SQLite in ./qg-data, a demo
/// batch when empty, the pages of web/ on http://127.0.0.1:8080). Extra arguments go to
/// `coordinator serve` (e.g. `--bind 0.0.0.0:8080`).
fn serve(args: &[&str]) -> Result<()> {
    web::build()?;
    let mut c = cargo();
    c.args([
        "run",
        "--release",
        "-p",
        "coordinator",
        "--bin",
        "coordinator",
        "--",
        "serve",
        "--web-dir",
    ])
    .arg(root().join("web"))
    .args(args);
    run("coordinator serve", &mut c)
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
    ]);
    // `package:DIR` is a kernel package's folder.
    match kernel.strip_prefix("package:") {
        Some(dir) => c.args(["--package", dir]),
        None => c.arg(kernel),
    };
    c.args(["--params", &params.to_string(), "--backend", backend]);
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
