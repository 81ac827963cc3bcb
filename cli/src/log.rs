//! The transparency log from the scientist's side: `qg results --proofs` (fetch a batch's
//! proof bundle) and `qg verify` (check one offline, and recompute a sample of its units).

use anyhow::{Context, Result, anyhow, bail};
use protocol::policy::UnitState;
use serde_json::Value;
use shaders::Job;
use std::path::{Path, PathBuf};
use std::time::Duration;
use transparency::{EntryKind, LogEntry, ProofBundle, VerifyOptions, hash_from_b64, verify_bundle};

/// What `qg verify` was asked to check.
pub struct VerifyArgs {
    pub file: PathBuf,
    pub log_key: Option<String>,
    pub witnesses: Vec<String>,
    pub min_witnesses: Option<usize>,
    /// Percent of the canonical units to recompute with the CPU reference.
    pub recompute: f64,
    /// The recompute sample's seed (drawn from the operating system when not given).
    pub seed: Option<u64>,
    /// Write the verified results here as CSV, and their aggregate per swept point as JSON.
    pub csv: Option<PathBuf>,
    pub aggregate: Option<PathBuf>,
    pub threads: usize,
    /// Kernel package folders to recompute with (beside those the bundle carries).
    pub packages: Vec<PathBuf>,
}

/// Checks a bundle offline; prints one line per problem and a verdict. Ok(true) when all is
/// well.
pub fn verify(a: &VerifyArgs) -> Result<bool> {
    if !(0.0..=100.0).contains(&a.recompute) {
        bail!("--recompute: a percentage, 0 to 100, got {}", a.recompute);
    }
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let bundle: ProofBundle = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a proof bundle (made by `qg results BATCH --proofs`)",
            a.file.display()
        )
    })?;
    let opts = VerifyOptions {
        log_key: a.log_key.clone(),
        witnesses: a.witnesses.clone(),
        min_witnesses: a.min_witnesses.unwrap_or(1),
    };
    let report = verify_bundle(&bundle, &opts);
    for n in &report.notes {
        eprintln!("note: {n}");
    }
    let mut problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();

    // Recompute a sample of the proven units and compare with what the log accepted. A
    // package's units are recomputed with the package (checked against the hash its receipts
    // name) through the GPU runner, on any adapter: lavapipe will do.
    let mut packages = Vec::new();
    for f in &bundle.packages {
        if let Ok(p) = shaders::package::Package::from_files(f.clone()) {
            packages.push(std::sync::Arc::new(p));
        }
    }
    for dir in &a.packages {
        packages.push(crate::kernel::load(dir)?);
    }
    let mut gpu: Option<client_wasm::Gpu> = None;
    let mut recomputed = 0;
    let mut skipped = Vec::new();
    let verified: std::collections::HashSet<i64> = report.verified.iter().copied().collect();
    if a.recompute > 0.0 && report.checkpoint.is_some() {
        let proven: Vec<_> = bundle
            .units
            .iter()
            .filter(|u| verified.contains(&u.unit))
            .collect();
        let want = ((proven.len() as f64 * a.recompute / 100.0).ceil() as usize).min(proven.len());
        // Drawn from this machine's randomness, nothing the coordinator chose: it cannot know
        // which units will be recomputed. The seed is printed, so an audit can be repeated.
        let seed = a.seed.unwrap_or_else(rand::random);
        eprintln!(
            "recomputing {want} of {} units, drawn with seed {seed} (--seed {seed} draws them again)",
            proven.len()
        );
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
        let mut picks = rand::seq::index::sample(&mut rng, proven.len(), want).into_vec();
        picks.sort_unstable();
        for i in picks {
            let u = proven[i];
            let Some(accepted) = u.digest else { continue };
            // The latest in the log, whatever order the bundle lists them in.
            let newest = u.entries.iter().max_by_key(|e| e.index);
            let latest = newest.and_then(|e| LogEntry::parse(e.entry.as_bytes()).ok());
            let Some(e) = latest.filter(|e| e.kind == EntryKind::Accepted) else {
                skipped.push(format!("unit {}: no accepted entry", u.unit));
                continue;
            };
            let job = if protocol::package::package_hash(&u.kernel).is_some() {
                let Some(p) = packages.iter().find(|p| p.kernel() == u.kernel) else {
                    skipped.push(format!(
                        "unit {}: kernel package {} is neither in the bundle nor given with --package",
                        u.unit, u.kernel
                    ));
                    continue;
                };
                Job::package(p, &u.params).map_err(|e| anyhow!("unit {}: params: {e}", u.unit))?
            } else {
                let Some(info) = shaders::kernels().into_iter().find(|k| k.name == u.kernel) else {
                    skipped.push(format!("unit {}: unknown kernel {}", u.unit, u.kernel));
                    continue;
                };
                if e.kernel_version != info.version {
                    skipped.push(format!(
                        "unit {}: kernel {} version {} (this qg runs version {})",
                        u.unit, u.kernel, e.kernel_version, info.version
                    ));
                    continue;
                }
                Job::new(&u.kernel, u.params.clone())
                    .map_err(|e| anyhow!("unit {}: params: {e}", u.unit))?
            };
            if !job.by_digest() {
                skipped.push(format!(
                    "unit {}: {} results agree within a tolerance, not bit for bit",
                    u.unit, u.kernel
                ));
                continue;
            }
            let (r, how) = if job.has_cpu_reference() {
                let r = job
                    .run_cpu(a.threads, &mut |_, _| {})
                    .map_err(|e| anyhow!("unit {}: recomputing: {e}", u.unit))?;
                (r, "the CPU reference")
            } else {
                if gpu.is_none() {
                    gpu = Some(pollster::block_on(client_wasm::Gpu::new()).context(
                        "recomputing a kernel package needs a GPU adapter (lavapipe will do)",
                    )?);
                }
                let g = gpu.as_ref().ok_or_else(|| anyhow!("no GPU"))?;
                let r = pollster::block_on(client_wasm::run_gpu(g, &job, &mut |_, _| {}))
                    .map_err(|e| anyhow!("unit {}: recomputing: {e}", u.unit))?;
                (r, "its kernel package")
            };
            recomputed += 1;
            if r.digest != accepted {
                problems.push(format!(
                    "unit {}: recomputed with {how}, its digest is {}, not the accepted {}",
                    u.unit, r.digest, accepted
                ));
                continue;
            }
            // The numbers too: the summary of the recomputed output is the one the receipt
            // binds (which the bundle's check tied to the summary presented).
            let summary = job.summarize(&r.output).ok();
            if summary.as_ref().map(transparency::summary_hash) != e.summary_sha256 {
                problems.push(format!(
                    "unit {}: recomputed with {how}, its summary is {}, not {}, the one log entry #{} accepted",
                    u.unit,
                    summary.map_or("none".into(), |s| s.to_string()),
                    u.summary.as_deref().unwrap_or("none"),
                    newest.map_or(0, |e| e.index)
                ));
            }
        }
    }
    for s in &skipped {
        eprintln!("not recomputed: {s}");
    }
    for p in &problems {
        println!("FAIL {p}");
    }
    let canonical = bundle
        .units
        .iter()
        .filter(|u| u.state == UnitState::Canonical)
        .count();
    match &report.checkpoint {
        Some(cp) if problems.is_empty() => {
            println!(
                "OK batch {}: {} of {} units canonical, each proven in the log at checkpoint {} ({}){}",
                bundle.batch,
                report.verified.len(),
                bundle.units.len(),
                cp.checkpoint.size(),
                if cp.witnesses.is_empty() {
                    "no witness cosignature checked".to_owned()
                } else {
                    format!("cosigned by {}", cp.witnesses.join(", "))
                },
                match (recomputed, skipped.len()) {
                    (0, 0) => String::new(),
                    (r, 0) => format!("; {r} recomputed and reproduced"),
                    (r, s) => format!(
                        "; {r} recomputed and reproduced, {s} of the sample not recomputed (said above)"
                    ),
                }
            );
            debug_assert_eq!(report.verified.len(), canonical);
            write_verified(&bundle, &verified, a)?;
            Ok(true)
        }
        _ => {
            if a.csv.is_some() || a.aggregate.is_some() {
                eprintln!("no results written: the bundle did not verify");
            }
            println!(
                "FAILED batch {}: {} problem(s) in {}",
                bundle.batch,
                problems.len(),
                a.file.display()
            );
            Ok(false)
        }
    }
}

/// Writes what `--csv` and `--aggregate` ask for from the verified units only: their params
/// and the summaries their receipts bind.
fn write_verified(
    bundle: &ProofBundle,
    verified: &std::collections::HashSet<i64>,
    a: &VerifyArgs,
) -> Result<()> {
    if a.csv.is_none() && a.aggregate.is_none() {
        return Ok(());
    }
    let rows: Vec<protocol::status::UnitResult> = bundle
        .units
        .iter()
        .filter(|u| verified.contains(&u.unit))
        .map(|u| protocol::status::UnitResult {
            unit_id: u.unit,
            params: u.params.clone(),
            state: u.state,
            digest: u.digest,
            summary: u.summary_value(),
            fail_reason: None,
            log_index: u.entries.iter().map(|e| e.index).max(),
        })
        .collect();
    if let Some(path) = &a.csv {
        std::fs::write(path, protocol::status::results_csv(&rows))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {} ({} verified results)", path.display(), rows.len());
    }
    if let Some(path) = &a.aggregate {
        let axes: Vec<String> = bundle
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_value(s["axes"].clone()).ok())
            .unwrap_or_default();
        let kernel = bundle.units.first().map_or("", |u| u.kernel.as_str());
        let mut out = shaders::aggregate(kernel, &axes, &rows);
        out["batch_id"] = bundle.batch.into();
        out["kernel"] = kernel.into();
        std::fs::write(path, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Fetches a batch's bundle, waiting (up to `wait`) for its newest receipts to be in a
/// checkpoint with the cosignatures asked for. Returns the bundle's JSON.
pub fn fetch_proofs(
    get: &dyn Fn(&str) -> Result<Value>,
    batch: i64,
    witnesses: Option<usize>,
    wait: Duration,
) -> Result<String> {
    let path = match witnesses {
        Some(n) => format!("/api/v1/batches/{batch}/proofs?witnesses={n}"),
        None => format!("/api/v1/batches/{batch}/proofs"),
    };
    let deadline = std::time::Instant::now() + wait;
    loop {
        let got = get(&path);
        let ready = match &got {
            Ok(v) => v["pending"].as_u64() == Some(0),
            Err(_) => false,
        };
        if ready || std::time::Instant::now() >= deadline {
            let mut v = match got {
                Ok(v) => v,
                Err(e) => {
                    return Err(e.context(
                        "no checkpoint with the cosignatures asked for yet (are the witnesses running?)",
                    ));
                }
            };
            let pending = v["pending"].as_u64().unwrap_or(0);
            if pending > 0 {
                eprintln!(
                    "warning: {pending} receipt(s) of batch {batch} are not in a cosigned checkpoint yet; \
                     their units will not verify until you fetch the proofs again"
                );
            }
            if let Value::Object(m) = &mut v {
                m.remove("pending");
            }
            return Ok(serde_json::to_string_pretty(&v)?);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The hashes of a `GET /api/v1/log/consistency` answer.
pub(crate) fn consistency_hashes(v: &Value) -> Result<Vec<transparency::Hash>> {
    v["proof"]
        .as_array()
        .ok_or_else(|| anyhow!("no consistency proof"))?
        .iter()
        .map(|h| {
            hash_from_b64(h.as_str().unwrap_or_default())
                .map_err(|e| anyhow!("the consistency proof: {e}"))
        })
        .collect()
}

/// Writes `text` to `path` so that a crash leaves the old file or the new one, never half.
pub(crate) fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    // The rename itself is durable once the directory is.
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    std::fs::File::open(dir.unwrap_or(Path::new(".")))?.sync_all()?;
    Ok(())
}
