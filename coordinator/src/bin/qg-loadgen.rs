//! Load generator for `cargo xtask bench coordinator`: fills a fresh database with N units,
//! starts the release coordinator on it, and runs simulated volunteers over loopback HTTP
//! (batched work requests and batched reports). Prints one JSON line: replicas dispatched and
//! validated per second, and request latencies.

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use clap::Parser;
use coordinator::api::{hash_secret, new_secret, now};
use coordinator::engine::{Database, Engine};
use coordinator::lifecycle::Policy;
use coordinator::store::postgres::ScratchDatabase;
use coordinator::store::{NewBatch, NewUnit};
use serde_json::{Value, json};
use shaders::Job;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Finished units (each with two valid replicas) in the database before the run.
    #[arg(long, default_value_t = 10_000)]
    units: u64,
    /// Fresh units to work on during the run (enough that the run never runs out).
    #[arg(long, default_value_t = 200_000)]
    work_units: u64,
    /// Concurrent simulated volunteers.
    #[arg(long, default_value_t = 32)]
    volunteers: usize,
    /// Assignments per work request (and reports per results request).
    #[arg(long, default_value_t = 32)]
    batch: u32,
    /// Measured seconds (after one second of warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// The coordinator binary.
    #[arg(long)]
    coordinator: std::path::PathBuf,
    /// The store: sqlite (a fresh file) or postgres (a scratch database on the server that
    /// QG_TEST_DATABASE_URL names, else 127.0.0.1:5432).
    #[arg(long, default_value = "sqlite")]
    db: String,
    /// Coordinator processes sharing the database (PostgreSQL only); volunteers are spread
    /// over them.
    #[arg(long, default_value_t = 1)]
    coordinators: usize,
    /// Pin the coordinator to this CPU (with `taskset`), so the load generator, pinned
    /// elsewhere, does not share its core.
    #[arg(long)]
    coordinator_cpu: Option<usize>,
    /// Mean milliseconds each simulated volunteer spends computing its assignments before it
    /// reports them, uniformly 0.5 to 1.5 times this (0: it reports at once, a closed loop
    /// that measures the coordinator's ceiling rather than volunteers).
    #[arg(long, default_value_t = 0)]
    think_ms: u64,
}

#[path = "common/mod.rs"]
mod common;
use common::percentile;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("qg-loadgen-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    // Every unit has the same params, so one precomputed output serves every report: the
    // volunteers cost next to nothing and the coordinator is what is measured.
    let params = json!({"L": 16, "beta": 0.44, "sweeps": 1, "seed": 1});
    let job = Job::new("ising2d", params.clone())?;
    let reference = job.run_cpu(1, &mut |_, _| {})?;
    let fill = Instant::now();
    let _scratch;
    let database = match args.db.as_str() {
        "sqlite" => {
            if args.coordinators != 1 {
                bail!("--coordinators: SQLite serves one coordinator; use --db postgres");
            }
            Database::Sqlite(dir.join("coordinator.db"))
        }
        "postgres" => {
            let server = std::env::var("QG_TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
            let scratch = ScratchDatabase::create(&server, "bench")?;
            let db = Database::Postgres(scratch.url.clone());
            _scratch = scratch;
            db
        }
        other => bail!("--db: sqlite or postgres, got {other:?}"),
    };
    {
        let store = Engine::open(&database)?;
        let batch = |n: u64| NewBatch {
            key_id: None,
            name: "load".into(),
            description: None,
            kernel: "ising2d".into(),
            policy: Policy::default(),
            spot_check_rate: 0.0,
            units: (0..n)
                .map(|_| NewUnit {
                    params: job.params_json(),
                    work: job.work(),
                    spot_check: false,
                })
                .collect(),
            axes: Vec::new(),
        };
        // History: N finished units, each with two valid replicas, as a long-running
        // coordinator accumulates them.
        let mut left = args.units;
        while left > 0 {
            let n = left.min(100_000);
            store.create_batch(&batch(n), now())?;
            left -= n;
        }
        drop(store);
        let history = |bytes: &str| {
            format!(
                "INSERT INTO volunteers(token_hash, created_at, last_seen) VALUES ({z}, 0, 0);
                 INSERT INTO replicas(unit_id, volunteer_id, state, sent_at, deadline_at, reported_at, digest)
                     SELECT id, 1, 'valid', 0, 3600, 1, {bytes} FROM units;
                 INSERT INTO replicas(unit_id, volunteer_id, state, sent_at, deadline_at, reported_at, digest)
                     SELECT id, 1, 'valid', 0, 3600, 1, {bytes} FROM units;
                 UPDATE units SET state = 'canonical', wanted = 0, canonical_digest = {bytes},
                     canonical_replica = (SELECT min(id) FROM replicas r WHERE r.unit_id = units.id),
                     done_at = 1;",
                z = if bytes.starts_with('x') { "x'00'" } else { "decode('00', 'hex')" },
            )
        };
        match &database {
            Database::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path)?;
                conn.execute_batch(&format!(
                    "BEGIN; {} COMMIT;",
                    history(&format!("x'{}'", reference.digest))
                ))?;
            }
            Database::Postgres(url) => {
                let url = url.clone();
                let sql = history(&format!("decode('{}', 'hex')", reference.digest));
                // The sync client blocks on a runtime of its own: not on this one's threads.
                std::thread::spawn(move || -> Result<()> {
                    let mut c = postgres::Client::connect(&url, postgres::NoTls)?;
                    c.batch_execute(&format!("BEGIN; {sql} COMMIT; ANALYZE;"))?;
                    Ok(())
                })
                .join()
                .map_err(|_| anyhow::anyhow!("filling PostgreSQL panicked"))??;
            }
        }
        let store = Engine::open(&database)?;
        let mut left = args.work_units;
        while left > 0 {
            let n = left.min(100_000);
            store.create_batch(&batch(n), now())?;
            left -= n;
        }
        let key = new_secret("qgk_");
        store.create_key("load", &hash_secret(&key), true, now())?;
    }
    let fill_s = fill.elapsed().as_secs_f64();

    let db_arg = match &database {
        Database::Sqlite(p) => p.display().to_string(),
        Database::Postgres(url) => url.clone(),
    };
    let mut children = Vec::new();
    // All simulated volunteers connect from one address: its connection caps fit them.
    let config = dir.join("loadgen.toml");
    let cap = args.volunteers * 4 + 64;
    std::fs::write(
        &config,
        format!(
            "max_connections_per_ip = {cap}\nmax_connections_per_prefix = {cap}\nmax_connections = {cap}\n"
        ),
    )?;
    let mut bases = Vec::new();
    for _ in 0..args.coordinators {
        let mut cmd = match args.coordinator_cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(&args.coordinator);
                c
            }
            None => Command::new(&args.coordinator),
        };
        cmd.arg("--config")
            .arg(&config)
            .args(["--db", &db_arg])
            // A thousand simulated volunteers register from one address and take work in
            // batches from the start (what is measured is the coordinator).
            .args([
                "serve",
                "--registrations-per-minute",
                "0",
                "--work-in-flight",
                "64",
            ])
            .args(["--bind", "127.0.0.1:0", "--no-demo", "--web-dir"])
            .arg(&dir);
        match common::serve(cmd) {
            Ok((child, base)) => {
                children.push(child);
                bases.push(base);
            }
            Err(e) => {
                for c in &mut children {
                    let _ = c.kill();
                }
                return Err(e);
            }
        }
    }
    let base = bases[0].clone();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.volunteers)
        .build()?;

    let output_b64 = base64::engine::general_purpose::STANDARD.encode(&reference.output);
    let report_tail = format!(
        r#","digest":"{}","checkpoints":{},"output":"{}","kernel_version":{}}}"#,
        reference.digest,
        serde_json::to_string(&reference.checkpoints)?,
        output_b64,
        job.version()
    );
    let report_tail = Arc::new(report_tail);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let reported = Arc::new(AtomicU64::new(0));
    let empty = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let errors = Arc::new(AtomicU64::new(0));
    for i in 0..args.volunteers {
        let (http, base, tail) = (
            http.clone(),
            bases[i % bases.len()].clone(),
            report_tail.clone(),
        );
        let errors = errors.clone();
        let (measuring, stop, reported) = (measuring.clone(), stop.clone(), reported.clone());
        let empty = empty.clone();
        let think_ms = args.think_ms;
        let batch = args.batch;
        tasks.push(tokio::spawn(async move {
            let reg: Value = http
                .post(format!("{base}/api/v1/volunteers"))
                .send()
                .await?
                .json()
                .await?;
            let token = reg["token"].as_str().context("token")?.to_owned();
            let mut work_lat = Vec::new();
            let mut report_lat = Vec::new();
            let think = think_ms;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let w: Value = http
                    .post(format!("{base}/api/v1/work"))
                    .bearer_auth(&token)
                    .json(&json!({"max_units": batch}))
                    .send()
                    .await?
                    .json()
                    .await?;
                let dt_work = t.elapsed().as_secs_f64();
                let assignments = w["assignments"].as_array().cloned().unwrap_or_default();
                if assignments.is_empty() {
                    // Counted: a run that runs out of work measures idling, not the server.
                    empty.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                if think > 0 {
                    // Volunteers' devices differ: 0.5 to 1.5 times the mean, so they do not
                    // all come back in one wave.
                    let ms = think as f64 * (0.5 + rand::random::<f64>());
                    tokio::time::sleep(Duration::from_secs_f64(ms / 1e3)).await;
                }
                let body: Vec<String> = assignments
                    .iter()
                    .map(|a| format!(r#"{{"assignment_id":{}{}"#, a["assignment_id"], tail))
                    .collect();
                let body = format!("[{}]", body.join(","));
                let t = Instant::now();
                let resp = http
                    .post(format!("{base}/api/v1/results"))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                if resp.status().as_u16() != 202 {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                let _ = resp.bytes().await?;
                let dt_report = t.elapsed().as_secs_f64();
                if measuring.load(Ordering::Relaxed) {
                    work_lat.push(dt_work);
                    report_lat.push(dt_report);
                    reported.fetch_add(assignments.len() as u64, Ordering::Relaxed);
                }
            }
            Ok::<_, anyhow::Error>((work_lat, report_lat))
        }));
    }
    let status = |http: reqwest::Client, base: String| async move {
        let s: Value = http
            .get(format!("{base}/api/v1/status"))
            .send()
            .await?
            .json()
            .await?;
        Ok::<u64, anyhow::Error>(s["replicas"]["valid"].as_u64().unwrap_or(0))
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let valid0 = status(http.clone(), base.clone()).await?;
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let valid1 = status(http.clone(), base.clone()).await?;
    stop.store(true, Ordering::Relaxed);
    let mut work_lat = Vec::new();
    let mut report_lat = Vec::new();
    for t in tasks {
        let (w, r) = t.await??;
        work_lat.extend(w);
        report_lat.extend(r);
    }
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let validated = valid1.saturating_sub(valid0);
    println!(
        "{}",
        json!({
            "bench": "coordinator",
            "db": args.db,
            "coordinators": args.coordinators,
            "errors": errors.load(Ordering::Relaxed),
            "units_in_db": args.units,
            "work_units": args.work_units,
            "volunteers": args.volunteers,
            "batch": args.batch,
            "seconds": elapsed,
            "replicas_dispatched_and_reported_per_s": reported.load(Ordering::Relaxed) as f64 / elapsed,
            "replicas_validated_per_s": validated as f64 / elapsed,
            "work_request_p50_ms": percentile(&mut work_lat.clone(), 0.5) * 1e3,
            "work_request_p99_ms": percentile(&mut work_lat, 0.99) * 1e3,
            "report_request_p50_ms": percentile(&mut report_lat.clone(), 0.5) * 1e3,
            "report_request_p99_ms": percentile(&mut report_lat, 0.99) * 1e3,
            "fill_s": fill_s,
            "empty_work_responses": empty.load(Ordering::Relaxed),
        })
    );
    Ok(())
}
