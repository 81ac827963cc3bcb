//! `cargo xtask bench log`: the transparency log's costs, one JSON line each.
//!
//! 1. `append`: receipts moved into the tree per second by the sequencer (queued beforehand;
//!    one transaction per batch of 4096, stored hashes and a signed checkpoint included).
//! 2. `latency`: from a receipt being queued (in the transaction that makes a unit canonical)
//!    to its inclusion in a checkpoint cosigned by two witnesses: a producer queues receipts
//!    at a steady rate, the sequencer runs as the server runs it (every 200 ms), and the
//!    coordinator's own push (`coordinator::push`) sends each checkpoint to two `qg witness
//!    serve` processes over HTTP (C2SP tlog-witness). Then the same with the second witness
//!    down: the first's latency, and how long the second takes to catch up once back.
//! 3. `verify`: checking 10^6 inclusion proofs offline, as `qg verify` does.

mod common;

use anyhow::{Context, Result};
use clap::Parser;
use common::percentile;
use coordinator::engine::{Database, Engine};
use coordinator::push::Pusher;
use coordinator::store::postgres::ScratchDatabase;
use protocol::policy::Replication;
use protocol::{Checkpoint, Digest};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use transparency::{
    ALG_ED25519, Agreeing, EntryKind, Evidence, LogEntry, MemoryLog, NoteKey, NoteVerifier,
    open_checkpoint, record_hash,
};

#[derive(Parser)]
struct Args {
    /// sqlite or postgres (QG_TEST_DATABASE_URL names the server)
    #[arg(long, default_value = "sqlite")]
    db: String,
    /// Receipts for the append measurement
    #[arg(long, default_value_t = 100_000)]
    appends: u64,
    /// Receipts per second queued in the latency measurement
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Seconds of the latency measurement
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Receipts the sequencer appends per transaction
    #[arg(long, default_value_t = coordinator::log::SEQUENCE_BATCH)]
    batch: usize,
    /// The qg binary, whose `qg witness serve` the log pushes to [default: next to this one]
    #[arg(long)]
    qg: Option<std::path::PathBuf>,
    /// Inclusion proofs for the verify measurement
    #[arg(long, default_value_t = 1_000_000)]
    proofs: u64,
}

/// A receipt of the usual size: two agreeing replicas, sixteen checkpoint digests.
fn receipt(unit: i64) -> LogEntry {
    let d = Digest::of(&unit.to_le_bytes());
    LogEntry {
        kind: EntryKind::Accepted,
        unit,
        batch: 1 + unit / 10_000,
        kernel: "ising2d".into(),
        kernel_version: 2,
        params_sha256: transparency::params_hash(&json!({"L": 64, "seed": unit})),
        digest: d,
        summary_sha256: Some(Digest::of(b"{\"m\":0.5}")),
        checkpoints: (1..=16)
            .map(|i| Checkpoint {
                step: i * 64,
                digest: Digest::of(&[i as u8]),
            })
            .collect(),
        replicas: (0..2)
            .map(|i| Agreeing {
                volunteer: format!("v-{:08x}", unit * 2 + i),
                digest: d,
            })
            .collect(),
        evidence: Evidence {
            replication: Replication::Quorum,
            min_quorum: 2,
            target_error: None,
            error_bound: None,
            spot_check: "none".into(),
            challenges_passed: 0,
            challenges_failed: 0,
        },
        reason: None,
        supersedes: None,
        time: 1_800_000_000,
    }
}

fn open(
    args: &Args,
    dir: &std::path::Path,
    tag: &str,
) -> Result<(Engine, Option<ScratchDatabase>)> {
    match args.db.as_str() {
        "sqlite" => Ok((
            Engine::open(&Database::Sqlite(dir.join(format!("{tag}.db"))))?,
            None,
        )),
        "postgres" => {
            let server = std::env::var("QG_TEST_DATABASE_URL")
                .context("--db postgres needs QG_TEST_DATABASE_URL")?;
            let db = ScratchDatabase::create(&server, tag)?;
            Ok((Engine::postgres(&db.url)?, Some(db)))
        }
        other => anyhow::bail!("--db: sqlite or postgres, got {other:?}"),
    }
}

/// A scratch directory, removed at the end.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `qg witness serve` process for the benchmark, killed when dropped.
struct Witness {
    child: Option<std::process::Child>,
    url: String,
    state: std::path::PathBuf,
    verifier: NoteVerifier,
}

impl Witness {
    /// Makes the witness's key in `state` and serves on `listen`, following `logs`.
    fn start(
        qg: &std::path::Path,
        state: std::path::PathBuf,
        logs: &[String],
        listen: &str,
    ) -> Result<Self> {
        let name = state
            .file_name()
            .map_or("w".into(), |n| n.to_string_lossy());
        let out = std::process::Command::new(qg)
            .args(["witness", "serve", "--print-key", "--name"])
            .arg(format!("{name}.bench"))
            .arg("--state")
            .arg(&state)
            .output()
            .with_context(|| format!("running {}", qg.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "qg witness serve --print-key: {out:?}"
        );
        let verifier = NoteVerifier::parse(String::from_utf8_lossy(&out.stdout).trim())?;
        let mut w = Witness {
            child: None,
            url: format!("http://{listen}"),
            state,
            verifier,
        };
        w.restart(qg, logs)?;
        Ok(w)
    }

    /// (Re)starts the process on the address it had (any free one the first time).
    fn restart(&mut self, qg: &std::path::Path, logs: &[String]) -> Result<()> {
        let mut cmd = std::process::Command::new(qg);
        cmd.args(["witness", "serve", "--state"])
            .arg(&self.state)
            .arg("--listen")
            .arg(self.url.trim_start_matches("http://"));
        for k in logs {
            cmd.args(["--log-key", k]);
        }
        cmd.stderr(std::process::Stdio::null());
        let (child, url) = common::listening(cmd, "qg witness listening on ")?;
        self.child = Some(child);
        self.url = url;
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The coordinator's own push to each witness (`coordinator::push::run`), on `rt`.
fn push(
    rt: &tokio::runtime::Runtime,
    engine: &Arc<Engine>,
    witnesses: &[Witness],
) -> Vec<tokio::task::JoinHandle<()>> {
    let http = reqwest::Client::new();
    witnesses
        .iter()
        .map(|w| {
            let p = Arc::new(Pusher::new(w.verifier.clone(), &w.url));
            rt.spawn(coordinator::push::run(
                engine.clone(),
                p,
                http.clone(),
                Duration::from_millis(100),
            ))
        })
        .collect()
}

/// Receipts queued at `args.rate` for `args.seconds` while the sequencer runs as the server
/// runs it (every 200 ms): each one's seconds from being queued to being in a checkpoint that
/// all of `needed` cosigned (the caller pushes to them).
fn latency(
    args: &Args,
    engine: &Arc<Engine>,
    key: &NoteKey,
    needed: &[&NoteVerifier],
) -> Result<Vec<f64>> {
    let verifiers: Vec<NoteVerifier> = needed.iter().map(|v| (*v).clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let total = (args.rate as f64 * args.seconds) as usize;
    let sequencer = std::thread::spawn({
        let (engine, stop) = (engine.clone(), stop.clone());
        let key = NoteKey::parse(&key.to_private_text())?;
        move || -> Result<()> {
            while !stop.load(Ordering::Relaxed) {
                while engine
                    .sequence_log(&key, coordinator::log::SEQUENCE_BATCH, 0)?
                    .is_some()
                {}
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(())
        }
    });
    // The producer: receipts at a steady rate, in small transactions, as decisions make
    // them; the k-th queued is the k-th appended (one producer, one sequencer).
    let mut queued_at = Vec::with_capacity(total);
    let mut latencies = Vec::with_capacity(total);
    let mut covered = 0usize;
    let per_tick = (args.rate / 100).max(1) as usize;
    let tick = Duration::from_secs_f64(per_tick as f64 / args.rate as f64);
    let mut next = Instant::now();
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds + 30.0);
    while covered < total && Instant::now() < deadline {
        if queued_at.len() < total && Instant::now() >= next {
            let k = queued_at.len();
            let batch: Vec<LogEntry> = (k..(k + per_tick).min(total))
                .map(|u| receipt(u as i64))
                .collect();
            engine.queue_receipts(&batch)?;
            let t = start.elapsed().as_secs_f64();
            queued_at.extend(std::iter::repeat_n(t, batch.len()));
            next += tick;
        }
        // What the needed witnesses have cosigned so far.
        if let Some(note) = engine.log_checkpoint()? {
            let t = open_checkpoint(note.as_bytes(), &key.verifier(), &verifiers, 0)?;
            if t.witnesses.len() == verifiers.len() {
                let size = t.checkpoint.size() as usize;
                let now = start.elapsed().as_secs_f64();
                while covered < size.min(queued_at.len()) {
                    latencies.push(now - queued_at[covered]);
                    covered += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    sequencer
        .join()
        .map_err(|_| anyhow::anyhow!("the sequencer thread panicked"))??;
    Ok(latencies)
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.qg.is_none() {
        args.qg = Some(std::env::current_exe()?.with_file_name("qg"));
    }
    let dir = TempDir(std::env::temp_dir().join(format!("qg-logbench-{}", std::process::id())));
    std::fs::create_dir_all(dir.path())?;
    let key = NoteKey::from_seed("bench.local/log", ALG_ED25519, [1; 32])?;

    // 1. Appends.
    {
        let (engine, _db) = open(&args, dir.path(), "append")?;
        let entries: Vec<LogEntry> = (0..args.appends as i64).map(receipt).collect();
        for chunk in entries.chunks(10_000) {
            engine.queue_receipts(chunk)?;
        }
        let t = Instant::now();
        let mut size = 0;
        while let Some(n) = engine.sequence_log(&key, args.batch, 0)? {
            size = n;
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "{}",
            json!({"bench": "log", "measure": "append", "db": args.db, "entries": size,
                   "per_transaction": args.batch,
                   "entry_bytes": entries[0].to_bytes().len(), "wall_s": s,
                   "entries_per_s": size as f64 / s})
        );
    }

    // 2. Latency to a checkpoint cosigned by two witnesses, `qg witness serve` processes the
    //    log pushes to over HTTP; then with one of them down, and its catching up once back.
    //    The second run is another log (another origin), so the witnesses see no fork.
    {
        let qg = args.qg.as_deref().context("--qg")?;
        let down_key = NoteKey::from_seed("bench.local/log-down", ALG_ED25519, [7; 32])?;
        let logs = [key.verifier_key(), down_key.verifier_key()];
        let mut w = (0..2)
            .map(|i| Witness::start(qg, dir.path().join(format!("w{i}")), &logs, "127.0.0.1:0"))
            .collect::<Result<Vec<_>>>()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (engine, _db) = open(&args, dir.path(), "latency")?;
        let engine = Arc::new(engine);
        let pushes = push(&rt, &engine, &w);
        let mut both = latency(&args, &engine, &key, &[&w[0].verifier, &w[1].verifier])?;
        pushes.iter().for_each(tokio::task::JoinHandle::abort);
        println!(
            "{}",
            json!({"bench": "log", "measure": "latency_to_two_cosignatures", "db": args.db,
                   "witnesses": "two qg witness serve, pushed to over HTTP (C2SP tlog-witness)",
                   "rate_per_s": args.rate, "entries": both.len(),
                   "queued": (args.rate as f64 * args.seconds) as usize,
                   "sequencer_every_ms": 200, "push_looks_every_ms": 100,
                   "p50_s": percentile(&mut both, 0.5), "p99_s": percentile(&mut both, 0.99),
                   "max_s": both.last().copied().unwrap_or(f64::NAN)})
        );

        // The second witness down (its port closed): the first's cosignatures are unheld.
        w[1].stop();
        let (engine, _db2) = open(&args, dir.path(), "down")?;
        let engine = Arc::new(engine);
        let pushes = push(&rt, &engine, &w);
        let mut alone = latency(&args, &engine, &down_key, &[&w[0].verifier])?;
        // Back on its port, its state kept: how long until it cosigned the newest checkpoint.
        let size = engine
            .log_push_view(w[1].verifier.name())?
            .map_or(0, |v| v.0);
        let back = Instant::now();
        w[1].restart(qg, &logs)?;
        let caught_up = loop {
            let head = engine
                .log_push_view(w[1].verifier.name())?
                .and_then(|v| v.2);
            if head.is_some_and(|h| h >= size) {
                break back.elapsed().as_secs_f64();
            }
            if back.elapsed() > Duration::from_secs(120) {
                break f64::NAN;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        pushes.iter().for_each(tokio::task::JoinHandle::abort);
        println!(
            "{}",
            json!({"bench": "log", "measure": "latency_with_one_witness_down", "db": args.db,
                   "rate_per_s": args.rate, "entries": alone.len(),
                   "p50_s": percentile(&mut alone, 0.5), "p99_s": percentile(&mut alone, 0.99),
                   "max_s": alone.last().copied().unwrap_or(f64::NAN),
                   "down_s": args.seconds, "caught_up_s_after_back": caught_up,
                   "caught_up_size": size})
        );
    }

    // 3. Offline verification of inclusion proofs.
    {
        let mut log = MemoryLog::default();
        let bodies: Vec<Vec<u8>> = (0..args.proofs as i64)
            .map(|u| receipt(u).to_bytes())
            .collect();
        for b in &bodies {
            log.append(b)?;
        }
        let size = log.size();
        let root = log.root()?;
        let proofs: Vec<_> = (0..size)
            .map(|i| log.prove(size, i))
            .collect::<Result<_, _>>()?;
        let t = Instant::now();
        let mut ok = 0u64;
        for (i, (b, p)) in bodies.iter().zip(&proofs).enumerate() {
            if transparency::tlog_tiles::check_record(p, size, root, i as u64, record_hash(b))
                .is_ok()
            {
                ok += 1;
            }
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "{}",
            json!({"bench": "log", "measure": "verify_inclusion_proofs", "proofs": size,
                   "valid": ok, "proof_hashes": proofs.last().map_or(0, Vec::len),
                   "wall_s": s, "proofs_per_s": ok as f64 / s})
        );
        anyhow::ensure!(ok == size, "{} of {size} proofs failed", size - ok);
    }
    Ok(())
}
