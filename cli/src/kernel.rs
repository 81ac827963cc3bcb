//! `qg kernel`: a scientist's own kernel package, from their machine to the volunteers. `check`
//! runs it here first (twice, and once resumed from a checkpoint: nondeterminism shows before
//! upload), `push` uploads it, `approve`/`suspend` are the operator's, `list` shows them all.

use crate::Api;
use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use protocol::package::{PackageFiles, package_hash};
use protocol::status::PackageStatus;
use serde_json::{Value, json};
use shaders::Job;
use shaders::package::Package;
use shaders::program::Plan;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Subcommand)]
pub enum KernelCmd {
    /// Check a package folder and run it on this machine's GPU (lavapipe will do): twice, and
    /// once resumed from a checkpoint; exit status 1 if the digests differ (nondeterminism)
    Check {
        dir: PathBuf,
        /// Params of the run as JSON (defaults: the manifest's)
        #[arg(long, default_value = "{}")]
        params: String,
    },
    /// Upload a package folder (kernel.toml, kernel.wgsl, view.wgsl); prints its name@hash,
    /// which batches name. It waits for an operator's approval before volunteers run it
    Push { dir: PathBuf },
    /// Packages on the coordinator, with their status
    List,
    /// An operator approves a package: its units are dispatched from now on
    Approve {
        hash: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// An operator suspends a package: its units are held, and its scientist sees why
    Suspend {
        hash: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

/// A package folder, checked as the coordinator will check it.
pub fn load(dir: &Path) -> Result<Arc<Package>> {
    let files = shaders::package::read_dir(dir).map_err(|e| anyhow!(e))?;
    let p = Package::from_files(files).map_err(|e| anyhow!("{}: {e}", dir.display()))?;
    Ok(Arc::new(p))
}

/// The package a `name@hash` kernel names, fetched from the coordinator and checked against
/// its hash (None for a built-in kernel).
pub fn fetch(api: &Api, kernel: &str) -> Result<Option<Arc<Package>>> {
    let Some(hash) = package_hash(kernel) else {
        return Ok(None);
    };
    let resp = api
        .http
        .get(api.url(&format!("/api/v1/kernels/{hash}")))
        .send()
        .map_err(|e| anyhow!("cannot reach the coordinator at {} ({e})", api.base))?;
    if resp.status().as_u16() == 404 {
        bail!(
            "kernel: no package {kernel} on {} (push it with `qg kernel push DIR`)",
            api.base
        );
    }
    let bytes = resp.bytes()?;
    let files = PackageFiles::from_canonical(&bytes, &hash)
        .ok_or_else(|| anyhow!("the coordinator's copy of {kernel} does not hash to its name"))?;
    let p = Package::from_files(files).map_err(|e| anyhow!("{kernel}: {e}"))?;
    if p.kernel() != kernel {
        bail!(
            "kernel: {kernel} is named {} on the coordinator",
            p.kernel()
        );
    }
    Ok(Some(Arc::new(p)))
}

fn show(s: &PackageStatus) {
    println!("{}  {}  by {}", s.kernel, s.status, s.author);
    if let Some(r) = &s.reason {
        println!("    {r}");
    }
}

/// The commands that talk to a coordinator.
pub fn run(api: &Api, cmd: KernelCmd) -> Result<()> {
    match cmd {
        KernelCmd::Check { .. } => bail!("qg kernel check runs apart"),
        KernelCmd::Push { dir } => {
            // The coordinator checks it too; checking here first names the problem sooner.
            let p = load(&dir)?;
            let resp = api.send(
                api.http.post(api.url("/api/v1/kernels")).json(&p.files),
                "kernel package",
            )?;
            let fresh = resp.status().as_u16() == 201;
            let s: PackageStatus = resp.json()?;
            show(&s);
            eprintln!(
                "{}; batches name it `kernel = \"{}\"`{}",
                if fresh {
                    "uploaded"
                } else {
                    "already uploaded"
                },
                s.kernel,
                if s.status == "pending" {
                    " (its units wait until an operator approves it: `qg kernel approve HASH`)"
                } else {
                    ""
                }
            );
        }
        KernelCmd::List => {
            let v: Value = api.get("/api/v1/kernels", "kernels")?;
            let list: Vec<PackageStatus> = serde_json::from_value(v["packages"].clone())?;
            if list.is_empty() {
                eprintln!("no kernel packages on {}", api.base);
            }
            for s in &list {
                show(s);
            }
        }
        KernelCmd::Approve { hash, reason } => decide(api, &hash, "approve", reason)?,
        KernelCmd::Suspend { hash, reason } => decide(api, &hash, "suspend", reason)?,
    }
    Ok(())
}

fn decide(api: &Api, hash: &str, verb: &str, reason: Option<String>) -> Result<()> {
    // A name@hash is taken as its hash.
    let hash = hash.rsplit('@').next().unwrap_or(hash);
    let s: PackageStatus = api
        .send(
            api.http
                .post(api.url(&format!("/api/v1/kernels/{hash}/{verb}")))
                .json(&json!({ "reason": reason })),
            "kernel package",
        )?
        .json()?;
    show(&s);
    Ok(())
}

/// `qg kernel check DIR`: Ok(true) when every run gave the same digests.
pub fn check(dir: &Path, params: &str) -> Result<bool> {
    let p = load(dir)?;
    let params: Value =
        serde_json::from_str(params).map_err(|e| anyhow!("--params is not JSON: {e}"))?;
    let job = Job::package(&p, &params).map_err(|e| anyhow!("--params: {e}"))?;
    println!(
        "{} checks: manifest, WGSL (naga), bindings, entry points{}",
        p.kernel(),
        if job.by_digest() {
            ", integer-only"
        } else {
            ""
        }
    );
    let gpu = pollster::block_on(client_wasm::Gpu::new())
        .context("a GPU adapter (lavapipe will do: apt-get install mesa-vulkan-drivers)")?;
    println!("adapter: {}", gpu.adapter().name);
    gpu.prepare(&job);
    let t0 = Instant::now();
    let first = pollster::block_on(client_wasm::run_gpu(&gpu, &job, &mut |_, _| {}))?;
    let elapsed = t0.elapsed().as_secs_f64();
    let second = pollster::block_on(client_wasm::run_gpu(&gpu, &job, &mut |_, _| {}))?;
    let half = job.segment_count() / 2;
    let resumed = pollster::block_on(client_wasm::run_gpu_resumed(&gpu, &job, half))?;
    let agree = |r: &shaders::RunResult| {
        if job.by_digest() {
            r.digest == first.digest && r.checkpoints == first.checkpoints
        } else {
            job.equivalent(&r.output, &first.output)
        }
    };
    let (again, from) = (agree(&second), agree(&resumed));
    println!(
        "run 1: digest {} in {elapsed:.3} s ({:.3e} {} per second)",
        first.digest,
        job.work() as f64 / elapsed.max(1e-9),
        p.manifest.work_unit
    );
    println!(
        "run 2: {}",
        if again {
            "the same".into()
        } else {
            format!("DIFFERENT digest {}", second.digest)
        }
    );
    println!(
        "run 3, resumed after segment {half} of {}: {}",
        job.segment_count(),
        if from {
            "the same".into()
        } else {
            format!("DIFFERENT digest {}", resumed.digest)
        }
    );
    println!("summary: {}", first.summary);
    if !(again && from) {
        println!(
            "NONDETERMINISTIC: volunteers' results would disagree (a race between invocations, \
             an out-of-bounds read, or state kept outside the state buffers); the coordinator \
             would suspend it"
        );
    }
    Ok(again && from)
}
