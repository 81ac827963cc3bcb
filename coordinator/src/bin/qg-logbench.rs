//! `cargo xtask bench log`: the transparency log's costs, one JSON line each.
//!
//! 1. `append`: receipts moved into the tree per second by the sequencer (queued beforehand;
//!    one transaction per batch of 4096, stored hashes and a signed checkpoint included).
//! 2. `latency`: from a receipt being queued (in the transaction that makes a unit canonical)
//!    to its inclusion in a checkpoint cosigned by two witnesses: a producer queues receipts
//!    at a steady rate, the sequencer runs as the server runs it (every 200 ms), and two
//!    witnesses poll every 100 ms, check consistency and cosign (in process, over the engine
//!    rather than HTTP).
//! 3. `verify`: checking 10^6 inclusion proofs offline, as `qg verify` does.

use anyhow::{Context, Result};
use clap::Parser;
use coordinator::engine::{Database, Engine};
use coordinator::store::postgres::ScratchDatabase;
use protocol::policy::Replication;
use protocol::{Checkpoint, Digest};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use transparency::witness::{self, WitnessState};
use transparency::{
    ALG_COSIGNATURE_V1, ALG_ED25519, Agreeing, EntryKind, Evidence, LogEntry, MemoryLog, NoteKey,
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> Result<()> {
    let args = Args::parse();
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

    // 2. Latency to a checkpoint cosigned by two witnesses.
    {
        let (engine, _db) = open(&args, dir.path(), "latency")?;
        let engine = Arc::new(engine);
        let witnesses: Vec<NoteKey> = (0..2)
            .map(|i| NoteKey::from_seed(&format!("w{i}.bench"), ALG_COSIGNATURE_V1, [i + 2; 32]))
            .collect::<Result<_, _>>()?;
        let verifiers: Vec<_> = witnesses.iter().map(NoteKey::verifier).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let total = (args.rate as f64 * args.seconds) as usize;
        let mut threads = Vec::new();
        // The sequencer, as the server runs it.
        threads.push(std::thread::spawn({
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
        }));
        for w in witnesses {
            let (engine, stop, verifiers) = (engine.clone(), stop.clone(), verifiers.clone());
            let log = key.verifier();
            threads.push(std::thread::spawn(move || -> Result<()> {
                let mut last: Option<WitnessState> = None;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(note) = engine.log_checkpoint()? {
                        let t = open_checkpoint(note.as_bytes(), &log, &[], 0)?;
                        let size = t.checkpoint.size();
                        if last.as_ref().is_none_or(|l| l.size < size) {
                            let proof = match &last {
                                Some(l) => engine.log_consistency(l.size, size)?,
                                None => Vec::new(),
                            };
                            let (_, next, line) =
                                witness::cosign(last.as_ref(), &t, &proof, &w, 1)?;
                            engine.add_cosignature(size, &line, &verifiers, 0)?;
                            last = Some(next);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(())
            }));
        }
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
            // What two witnesses have cosigned so far.
            if let Some(note) = engine.log_checkpoint()? {
                let t = open_checkpoint(note.as_bytes(), &key.verifier(), &verifiers, 0)?;
                if t.witnesses.len() == 2 {
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
        for t in threads {
            t.join()
                .map_err(|_| anyhow::anyhow!("a bench thread panicked"))??;
        }
        latencies.sort_by(f64::total_cmp);
        println!(
            "{}",
            json!({"bench": "log", "measure": "latency_to_two_cosignatures", "db": args.db,
                   "rate_per_s": args.rate, "entries": latencies.len(), "queued": total,
                   "sequencer_every_ms": 200, "witness_poll_ms": 100,
                   "p50_s": percentile(&latencies, 0.5), "p99_s": percentile(&latencies, 0.99),
                   "max_s": latencies.last().copied().unwrap_or(f64::NAN)})
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
