//! `cargo xtask bench reliability`: the attacks of issue #13 against release coordinators on
//! loopback, one JSON line each (the soak is qg-loadgen's, run by xtask alongside):
//!
//! * `sybil_errors`: N fresh tokens answer every assignment with an error; how many units
//!   they fail, and how long an honest volunteer waits for work meanwhile.
//! * `sybil_hoard`: N fresh tokens take all the work they are given and never report; how
//!   many replicas they hold, until when, and the honest volunteer's wait.
//! * `flood`: half-open connections from many loopback networks (one address per /24, so only
//!   the global cap binds); `/api/v1/status` asked on a new connection every 20 ms throughout
//!   (refusals, latency), and the coordinator's RSS before, at the peak and after.
//! * `squat`: 17 networks × 256 keep-alive connections (more than the global cap), each asking
//!   `/api/v1/status` every ~12 s and reconnecting at once when closed; new clients' refusals
//!   and latency meanwhile, and an honest volunteer's wait for work on new connections.
//! * `memory_bomb`: four 30 MiB JSON arrays posted to `/api/v1/results` at once, twice; the
//!   coordinator's RSS peak above its baseline (sampled every 5 ms), against the body limit.
//! * `spot_hog`: a batch of costly units with `spot_check_rate: 1.0`, then a small batch; how
//!   long until the small batch's spot-checks are computed.
//! * `kill9`: honest volunteers report while the coordinator is killed with SIGKILL at 10
//!   random moments and restarted on the same database; every acknowledged report must still
//!   be there and every canonical digest must be the CPU reference's.

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// The coordinator binary.
    #[arg(long)]
    coordinator: PathBuf,
    /// Attacker tokens in the Sybil scenarios.
    #[arg(long, default_value_t = 3)]
    attackers: usize,
    /// Units in the attacked batch.
    #[arg(long, default_value_t = 10_000)]
    units: usize,
    /// Seconds each Sybil attack runs.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Half-open connections in the flood.
    #[arg(long, default_value_t = 20_000)]
    connections: usize,
    /// Keep-alive connections in the squat (over 17 networks).
    #[arg(long, default_value_t = 17 * 256)]
    squatters: usize,
    /// Only these scenarios (comma-separated); all by default.
    #[arg(long)]
    only: Option<String>,
}

#[path = "common/mod.rs"]
mod common;
use common::percentile;

struct Coordinator {
    child: Child,
    base: String,
    key: String,
    /// Its data directory, shared with the coordinators restarted on it.
    dir: Arc<Scratch>,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory, removed when the last coordinator on it is gone.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Arc<Self>> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("qg-reliability-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Arc::new(Self(dir)))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Coordinator {
    /// A coordinator on a fresh scratch directory with a scientist key, on a free port.
    fn start(bin: &Path, extra: &[&str]) -> Result<Self> {
        Self::start_on(bin, Scratch::new()?, "127.0.0.1:0", extra)
    }

    /// A coordinator on a fresh `dir` with a scientist key, listening on `bind`.
    fn start_on(bin: &Path, dir: Arc<Scratch>, bind: &str, extra: &[&str]) -> Result<Self> {
        let out = Command::new(bin)
            .arg("--data-dir")
            .arg(&dir.0)
            .args(["keys", "create", "--name", "bench"])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let key = text
            .split_whitespace()
            .find(|w| w.starts_with("qgk_"))
            .context("no key printed")?
            .to_owned();
        Self::serve(bin, dir, bind, extra, key)
    }

    /// A coordinator on `dir` as it is (a restart), listening on `bind`.
    fn serve(
        bin: &Path,
        dir: Arc<Scratch>,
        bind: &str,
        extra: &[&str],
        key: String,
    ) -> Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.arg("--data-dir")
            .arg(&dir.0)
            .args(["serve", "--bind", bind, "--no-demo", "--web-dir"])
            .arg(&dir.0)
            .args(extra);
        let (child, base) = common::serve(cmd)?;
        Ok(Self {
            base,
            child,
            key,
            dir,
        })
    }

    /// Its `/proc/PID/status`, opened now so it can be read while this process has no file
    /// descriptor to spare.
    fn status_file(&self) -> Result<std::fs::File> {
        Ok(std::fs::File::open(format!(
            "/proc/{}/status",
            self.child.id()
        ))?)
    }

    fn rss_mb(f: &mut std::fs::File) -> f64 {
        use std::io::{Read, Seek};
        let mut s = String::new();
        if f.rewind().is_err() || f.read_to_string(&mut s).is_err() {
            return f64::NAN;
        }
        Some(s)
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(base: &str) -> Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            base: base.to_owned(),
        })
    }

    /// A client that opens a new connection for every request, as a newcomer would.
    fn fresh(base: &str) -> Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(0)
                .build()?,
            base: base.to_owned(),
        })
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Result<(u16, Value)> {
        let mut r = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Result<(u16, Value)> {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    async fn register(&self) -> Result<String> {
        let (s, v) = self.post("/api/v1/volunteers", None, json!({})).await?;
        if s != 201 {
            bail!("registration: {s} {v}");
        }
        Ok(v["token"].as_str().context("token")?.to_owned())
    }

    async fn batch(&self, key: &str, units: Vec<Value>, policy: Value) -> Result<i64> {
        let body = json!({"kernel": "ising2d", "units": units, "policy": policy});
        let (s, v) = self.post("/api/v1/batches", Some(key), body).await?;
        if s != 201 {
            bail!("batch: {s} {v}");
        }
        v["batch_id"].as_i64().context("batch_id")
    }
}

fn small_units(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"L": 16, "beta": 0.4, "sweeps": 10, "seed": i + 1}))
        .collect()
}

/// The honest report of an assignment: the CPU reference's answer.
fn honest_report(a: &Value) -> Result<Value> {
    use base64::Engine as _;
    let job = shaders::Job::new(a["kernel"].as_str().unwrap_or(""), a["params"].clone())?;
    let r = job.run_cpu(1, &mut |_, _| {})?;
    Ok(json!({
        "assignment_id": a["assignment_id"],
        "digest": r.digest,
        "checkpoints": r.checkpoints,
        "summary": r.summary,
        "output": base64::engine::general_purpose::STANDARD.encode(&r.output),
        "kernel_version": a["kernel_version"],
    }))
}

/// An honest volunteer asking for one unit at a time, computing and reporting it: the
/// longest it waited for work, in ms, while `until` has not passed, units it reported, and
/// reports it had to send again after a 503.
async fn honest_waits(c: &Client, token: &str, until: Instant) -> Result<(f64, u64, u64)> {
    let mut worst: f64 = 0.0;
    let mut reported = 0;
    let mut retried = 0;
    let mut asked = Instant::now();
    while Instant::now() < until {
        // A refused connection is more waiting, not the end.
        let (s, v) = c
            .post("/api/v1/work", Some(token), json!({"max_units": 1}))
            .await
            .unwrap_or((0, Value::Null));
        let a = v["assignments"].as_array().cloned().unwrap_or_default();
        if s != 200 || a.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        worst = worst.max(asked.elapsed().as_secs_f64() * 1e3);
        let reports = Value::from(a.iter().map(honest_report).collect::<Result<Vec<_>>>()?);
        let mut tries = 0;
        loop {
            let (s, v) = c
                .post("/api/v1/results", Some(token), reports.clone())
                .await
                .unwrap_or((503, Value::Null));
            match s {
                202 => break,
                // Over a connection cap: again, as a volunteer would (counted).
                503 if tries < 10 => {
                    tries += 1;
                    retried += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                _ => bail!("honest report refused: {s} {v}"),
            }
        }
        reported += a.len() as u64;
        asked = Instant::now();
    }
    Ok((
        worst.max(asked.elapsed().as_secs_f64() * 1e3),
        reported,
        retried,
    ))
}

async fn sybil(args: &Args, hoard: bool) -> Result<Value> {
    let co = Coordinator::start(&args.coordinator, &[])?;
    let c = Client::new(&co.base)?;
    let batch = c
        .batch(
            &co.key,
            small_units(args.units),
            json!({"spot_check_rate": 0.0}),
        )
        .await?;
    let until = Instant::now() + Duration::from_secs_f64(args.seconds);
    let mut attackers = Vec::new();
    for _ in 0..args.attackers {
        attackers.push(c.register().await?);
    }
    let honest = c.register().await?;
    let mut tasks = Vec::new();
    for token in attackers {
        let c = Client::new(&co.base)?;
        tasks.push(tokio::spawn(async move {
            let (mut requests, mut taken, mut refused) = (0u64, 0u64, 0u64);
            while Instant::now() < until {
                let (s, v) = c
                    .post("/api/v1/work", Some(&token), json!({"max_units": 64}))
                    .await?;
                requests += 1;
                let a = v["assignments"].as_array().cloned().unwrap_or_default();
                if s != 200 || a.is_empty() {
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                taken += a.len() as u64;
                if !hoard {
                    let reports: Vec<Value> = a
                        .iter()
                        .map(|x| json!({"assignment_id": x["assignment_id"], "error": "x"}))
                        .collect();
                    c.post("/api/v1/results", Some(&token), Value::from(reports))
                        .await?;
                    requests += 1;
                }
            }
            Ok::<_, anyhow::Error>((requests, taken, refused))
        }));
    }
    let (honest_wait_ms, honest_reported, _) = {
        let c = Client::new(&co.base)?;
        honest_waits(&c, &honest, until).await?
    };
    let (mut requests, mut taken, mut refused) = (0, 0, 0);
    for t in tasks {
        let (r, k, f) = t.await??;
        requests += r;
        taken += k;
        refused += f;
    }
    let (_, st) = c
        .get(&format!("/api/v1/batches/{batch}"), Some(&co.key))
        .await?;
    let failed = st["by_state"]["failed"].as_u64().unwrap_or(0);
    Ok(json!({
        "scenario": if hoard { "sybil_hoard" } else { "sybil_errors" },
        "attackers": args.attackers,
        "units": args.units,
        "seconds": args.seconds,
        "attacker_requests": requests,
        "replicas_taken_by_attackers": taken,
        "attacker_requests_refused_or_empty": refused,
        "units_failed": failed,
        "units_by_state": st["by_state"],
        "honest_longest_wait_for_work_ms": honest_wait_ms,
        "honest_units_reported": honest_reported,
        "goal": "no unit fails; honest volunteers get work within 1 s",
    }))
}

async fn flood(args: &Args) -> Result<Value> {
    let co = Coordinator::start(&args.coordinator, &[])?;
    let c = Client::new(&co.base)?;
    c.batch(&co.key, small_units(1000), json!({})).await?;
    let addr: std::net::SocketAddr = co.base.trim_start_matches("http://").parse()?;
    // Warm up, then the baseline.
    for _ in 0..20 {
        c.get("/api/v1/status", None).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut proc_status = co.status_file()?;
    let rss_before = Coordinator::rss_mb(&mut proc_status);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = tokio::spawn(new_clients(addr, stop.clone()));
    // Half-open requests, 200 per address, each address in a /24 of its own (127.1.0.2,
    // 127.1.1.2, ...): the per-network caps do not bind, the global one does.
    let started = Instant::now();
    let mut held = Vec::new();
    let mut failed_to_open = 0usize;
    // The probes must not run out of file descriptors here.
    let connections = args.connections.min(descriptors_to_spare());
    for i in 0..connections {
        let a = i / 200;
        let ip = std::net::Ipv4Addr::new(127, 1 + (a / 250) as u8, (a % 250) as u8, 2);
        let Ok(s) = tokio::net::TcpSocket::new_v4() else {
            // Out of file descriptors here (see `ulimit -n`): the rest are not opened.
            failed_to_open += connections - i;
            break;
        };
        if s.bind((ip, 0).into()).is_err() {
            failed_to_open += 1;
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(2), s.connect(addr)).await {
            Ok(Ok(mut stream)) => {
                use tokio::io::AsyncWriteExt;
                let _ = stream
                    .write_all(b"POST /api/v1/work HTTP/1.1\r\nHost: qg\r\nContent-Length: 100\r\n")
                    .await;
                held.push(stream);
            }
            _ => failed_to_open += 1,
        }
    }
    let open_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_peak = Coordinator::rss_mb(&mut proc_status);
    drop(held);
    // The coordinator hands freed memory back to the system every few seconds.
    tokio::time::sleep(Duration::from_secs(12)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let probe = prober.await?;
    let rss_after = Coordinator::rss_mb(&mut proc_status);
    let mut out = json!({
        "scenario": "flood",
        "connections": connections,
        "could_not_open": failed_to_open,
        "open_s": open_s,
        "rss_mb_before": rss_before,
        "rss_mb_peak": rss_peak,
        "rss_mb_after": rss_after,
        "goal": "every new client served, status within 100 ms throughout, RSS back within 10%",
    });
    probe.write(&mut out);
    Ok(out)
}

/// What new clients saw: `/api/v1/status` on a new connection each time.
#[derive(Default)]
struct Probe {
    lat: Vec<f64>,
    refused: u64,
    errors: u64,
}

impl Probe {
    fn write(mut self, out: &mut Value) {
        out["probe"] = json!("GET /api/v1/status on a new connection from 127.0.0.1 every 20 ms");
        out["status_requests"] = json!(self.lat.len() as u64 + self.refused + self.errors);
        out["status_refused_503"] = json!(self.refused);
        out["status_errors"] = json!(self.errors);
        out["status_p50_ms"] = json!(percentile(&mut self.lat, 0.5));
        out["status_p99_ms"] = json!(percentile(&mut self.lat, 0.99));
        out["status_max_ms"] = json!(self.lat.last().copied().unwrap_or(f64::NAN));
    }
}

/// Asks `/api/v1/status` on a new connection every 20 ms until `stop`.
async fn new_clients(
    addr: std::net::SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Probe {
    let mut p = Probe::default();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let t = Instant::now();
        match one_request(addr).await {
            Some(200) => p.lat.push(t.elapsed().as_secs_f64() * 1e3),
            Some(503) => p.refused += 1,
            _ => p.errors += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p
}

/// One `GET /api/v1/status` on a new connection: the status code, if an answer came in 5 s.
async fn one_request(addr: std::net::SocketAddr) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(Duration::from_secs(5), async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: qg\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let head = std::str::from_utf8(buf.get(..12)?).ok()?;
        head.strip_prefix("HTTP/1.1 ")?.parse().ok()
    })
    .await
    .ok()
    .flatten()
}

/// File descriptors this process may open, less 256 for the probes and the clients.
fn descriptors_to_spare() -> usize {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 1024;
    }
    (r.rlim_cur as usize).saturating_sub(256)
}

/// Keep-alive connections that hold slots: 17 networks (one address each), each connection
/// asking `/api/v1/status` every 10–14 s and reconnecting at once whenever it is closed.
async fn squat(args: &Args) -> Result<Value> {
    let co = Coordinator::start(&args.coordinator, &[])?;
    let c = Client::new(&co.base)?;
    c.batch(&co.key, small_units(args.units), json!({})).await?;
    let addr: std::net::SocketAddr = co.base.trim_start_matches("http://").parse()?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reconnects = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let held = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let mut squatters = Vec::new();
    for i in 0..args.squatters {
        let ip = std::net::Ipv4Addr::new(127, 1 + (i / 256) as u8, 7, 2);
        let (stop, reconnects, held) = (stop.clone(), reconnects.clone(), held.clone());
        squatters.push(tokio::spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut first = true;
            while !stop.load(Relaxed) {
                if !first {
                    reconnects.fetch_add(1, Relaxed);
                }
                first = false;
                let Ok(sock) = tokio::net::TcpSocket::new_v4() else {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                };
                if sock.bind((ip, 0).into()).is_err() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                let Ok(mut s) = sock.connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let mut answered = false;
                held.fetch_add(1, Relaxed);
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let req = b"GET /api/v1/status HTTP/1.1\r\nHost: qg\r\n\r\n";
                    if s.write_all(req).await.is_err() {
                        break;
                    }
                    match s.read(&mut buf).await {
                        Ok(n) if n > 0 && buf.starts_with(b"HTTP/1.1 200") => answered = true,
                        _ => break,
                    }
                    // 10–14 s, spread by the connection's number.
                    let wait = 10_000 + (i as u64 * 7919) % 4_000;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                        r = s.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { break },
                    }
                    if stop.load(Relaxed) {
                        break;
                    }
                }
                held.fetch_sub(1, Relaxed);
                if !answered {
                    // Refused: again in 100 ms (a tenth of the Retry-After).
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    // Let them take their slots, then new clients and a new volunteer arrive.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let held_at_start = held.load(std::sync::atomic::Ordering::Relaxed);
    let prober = tokio::spawn(new_clients(addr, stop.clone()));
    let fresh = Client::fresh(&co.base)?;
    let until = Instant::now() + Duration::from_secs_f64(args.seconds.max(20.0));
    // A new volunteer registers (on a new connection, again until it gets in), then works.
    let registered = Instant::now();
    let mut token = None;
    while token.is_none() && Instant::now() < until {
        match fresh.register().await {
            Ok(t) => token = Some(t),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let registration_ms = registered.elapsed().as_secs_f64() * 1e3;
    let (honest_wait_ms, honest_reported, honest_retried) = match &token {
        Some(t) => honest_waits(&fresh, t, until).await?,
        None => (f64::NAN, 0, 0),
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let probe = prober.await?;
    for t in squatters {
        t.abort();
    }
    let mut out = json!({
        "scenario": "squat",
        "squatters": args.squatters,
        "squatter_networks": args.squatters.div_ceil(256),
        "squatters_connected_at_start": held_at_start,
        "squatter_reconnects": reconnects.load(std::sync::atomic::Ordering::Relaxed),
        "honest_registered": token.is_some(),
        "honest_registration_ms": registration_ms,
        "honest_longest_wait_for_work_ms": honest_wait_ms,
        "honest_units_reported": honest_reported,
        "honest_reports_sent_again_after_503": honest_retried,
        "goal": "every new client served; status p99 within 50 ms; honest work within 1 s",
    });
    probe.write(&mut out);
    Ok(out)
}

async fn memory_bomb(args: &Args) -> Result<Value> {
    let co = Coordinator::start(&args.coordinator, &[])?;
    let c = Client::new(&co.base)?;
    let token = c.register().await?;
    let mut proc_status = co.status_file()?;
    for _ in 0..20 {
        c.get("/api/v1/status", None).await?;
    }
    let rss_before = Coordinator::rss_mb(&mut proc_status);
    // 30 MiB of `[0,0,0,...]`: 15 million items.
    let mut bomb = String::with_capacity(30 << 20);
    bomb.push('[');
    while bomb.len() < (30 << 20) - 2 {
        bomb.push_str("0,");
    }
    bomb.push_str("0]");
    let bomb = axum::body::Bytes::from(bomb);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak: f64 = 0.0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(Coordinator::rss_mb(&mut proc_status));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            peak
        })
    };
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let mut posts = Vec::new();
        for _ in 0..4 {
            let (http, url, token, body) = (
                c.http.clone(),
                format!("{}/api/v1/results", co.base),
                token.clone(),
                bomb.clone(),
            );
            posts.push(tokio::spawn(async move {
                let r = http
                    .post(url)
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                Ok::<_, anyhow::Error>(r.status().as_u16())
            }));
        }
        for p in posts {
            statuses.push(p.await??);
        }
    }
    let t = Instant::now();
    let (s, _) = c.get("/api/v1/status", None).await?;
    let status_ms = t.elapsed().as_secs_f64() * 1e3;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rss_peak = sampler.await?;
    let body_limit_mb = 32.0;
    Ok(json!({
        "scenario": "memory_bomb",
        "bodies": "4 at once, twice: 30 MiB arrays of 15 M zeros",
        "answers": statuses,
        "rss_mb_before": rss_before,
        "rss_mb_peak": rss_peak,
        "rss_mb_peak_above_baseline": rss_peak - rss_before,
        "body_limit_mb": body_limit_mb,
        "status_after": s,
        "status_after_ms": status_ms,
        "goal": "peak ≤ 4× the body limit (128 MiB); each answered 400 naming `reports`",
    }))
}

async fn spot_hog(args: &Args) -> Result<Value> {
    let co = Coordinator::start(&args.coordinator, &[])?;
    let c = Client::new(&co.base)?;
    // Units of about a second or more of CPU each, all spot-checked.
    let costly: Vec<Value> = (0..40)
        .map(|i| json!({"L": 512, "beta": 0.4, "sweeps": 400, "seed": i + 1}))
        .collect();
    let hog = c
        .batch(&co.key, costly, json!({"spot_check_rate": 1.0}))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    let small = c
        .batch(&co.key, small_units(5), json!({"spot_check_rate": 1.0}))
        .await?;
    let (_, res) = c
        .get(&format!("/api/v1/batches/{small}/results"), Some(&co.key))
        .await?;
    let ids: Vec<i64> = res["units"]
        .as_array()
        .map(|u| u.iter().filter_map(|x| x["unit_id"].as_i64()).collect())
        .unwrap_or_default();
    let mut ready_after = None;
    while t.elapsed() < Duration::from_secs(120) {
        let mut all = !ids.is_empty();
        for id in &ids {
            let (_, u) = c.get(&format!("/api/v1/units/{id}"), Some(&co.key)).await?;
            all &= u["spot_check"]["state"] == "ready";
        }
        if all {
            ready_after = Some(t.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut hog_ready = 0;
    let (_, res) = c
        .get(&format!("/api/v1/batches/{hog}/results"), Some(&co.key))
        .await?;
    for u in res["units"].as_array().cloned().unwrap_or_default() {
        let (_, p) = c
            .get(&format!("/api/v1/units/{}", u["unit_id"]), Some(&co.key))
            .await?;
        hog_ready += usize::from(p["spot_check"]["state"] == "ready");
    }
    Ok(json!({
        "scenario": "spot_hog",
        "hog_units": 40,
        "hog_spot_checks_done_meanwhile": hog_ready,
        "small_batch_spot_checks_ready_s": ready_after,
        "goal": "other batches' checks within 5 s",
    }))
}

/// SIGKILL at 10 random moments while honest volunteers report; see the module docs.
async fn kill9(args: &Args) -> Result<Value> {
    const UNITS: usize = 4000;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let bind = format!("127.0.0.1:{port}");
    let first = Coordinator::start_on(&args.coordinator, Scratch::new()?, &bind, &[])?;
    let (dir, key, base) = (first.dir.clone(), first.key.clone(), first.base.clone());
    let c = Client::new(&base)?;
    let units: Vec<Value> = (0..UNITS)
        .map(|i| json!({"L": 32, "beta": 0.44, "sweeps": 20, "seed": i + 1}))
        .collect();
    let want: HashMap<String, String> = units
        .iter()
        .map(|u| {
            let r = shaders::Job::new("ising2d", u.clone())?.run_cpu(1, &mut |_, _| {})?;
            Ok((u["seed"].to_string(), r.digest.to_string()))
        })
        .collect::<Result<_>>()?;
    let batch = c
        .batch(&key, units, json!({"spot_check_rate": 0.0}))
        .await?;
    let mut tokens = Vec::new();
    for _ in 0..16 {
        tokens.push(c.register().await?);
    }
    // Acknowledged reports: assignment id → unit id.
    let acked: Arc<Mutex<HashMap<i64, i64>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for token in tokens {
        let (c, acked, stop) = (Client::new(&base)?, acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // It holds nothing between requests: what a kill cut off comes back.
                let body = json!({"max_units": 2, "holding": []});
                let Ok((200, v)) = c.post("/api/v1/work", Some(&token), body).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let a = v["assignments"].as_array().cloned().unwrap_or_default();
                if a.is_empty() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                let Ok(reports) = a.iter().map(honest_report).collect::<Result<Vec<_>>>() else {
                    continue;
                };
                if let Ok((202, _)) = c
                    .post("/api/v1/results", Some(&token), Value::from(reports))
                    .await
                {
                    let mut m = acked.lock().unwrap_or_else(|e| e.into_inner());
                    for x in &a {
                        if let (Some(id), Some(u)) =
                            (x["assignment_id"].as_i64(), x["unit_id"].as_i64())
                        {
                            m.insert(id, u);
                        }
                    }
                }
            }
        }));
    }
    let mut co = first;
    let mut kills = 0;
    let mut downtime = Vec::new();
    while kills < 10 {
        let wait = 0.1 + rand::random::<f64>() * 0.4;
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        // SIGKILL: no chance to flush or finish anything.
        co.child.kill()?;
        co.child.wait()?;
        kills += 1;
        let t = Instant::now();
        co = Coordinator::serve(&args.coordinator, dir.clone(), &bind, &[], key.clone())?;
        downtime.push(t.elapsed().as_secs_f64());
    }
    let acked_at_last_kill = acked.lock().unwrap_or_else(|e| e.into_inner()).len();
    // Until the batch is done or 5 s pass without progress: units whose assignment was
    // committed but whose answer a kill cut off wait for that replica's deadline.
    let (mut last, mut since) = (0, Instant::now());
    loop {
        let (_, st) = c
            .get(&format!("/api/v1/batches/{batch}"), Some(&key))
            .await?;
        let done = st["by_state"]["canonical"].as_u64().unwrap_or(0)
            + st["by_state"]["failed"].as_u64().unwrap_or(0);
        if done != last {
            (last, since) = (done, Instant::now());
        }
        if done == UNITS as u64 || since.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    // Every acknowledged report is there (reported, not in progress or lost).
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut by_unit: HashMap<i64, Vec<i64>> = HashMap::new();
    for (a, u) in &acked {
        by_unit.entry(*u).or_default().push(*a);
    }
    let mut lost = 0;
    for (u, ids) in &by_unit {
        let (_, p) = c.get(&format!("/api/v1/units/{u}"), Some(&key)).await?;
        let reps = p["replicas"].as_array().cloned().unwrap_or_default();
        for id in ids {
            let kept = reps
                .iter()
                .any(|r| r["replica_id"].as_i64() == Some(*id) && r["state"] != "in_progress");
            lost += usize::from(!kept);
        }
    }
    let (_, st) = c
        .get(&format!("/api/v1/batches/{batch}"), Some(&key))
        .await?;
    let (_, res) = c
        .get(&format!("/api/v1/batches/{batch}/results"), Some(&key))
        .await?;
    let (mut canonical, mut wrong) = (0, 0);
    for u in res["units"].as_array().cloned().unwrap_or_default() {
        if let Some(d) = u["digest"].as_str() {
            canonical += 1;
            wrong += usize::from(
                want.get(&u["params"]["seed"].to_string())
                    .map(String::as_str)
                    != Some(d),
            );
        }
    }
    downtime.sort_by(f64::total_cmp);
    Ok(json!({
        "scenario": "kill9",
        "kills": kills,
        "acknowledged_reports": acked.len(),
        "acknowledged_reports_lost": lost,
        "acknowledged_before_the_last_kill": acked_at_last_kill,
        "units": UNITS,
        "units_canonical": canonical,
        "units_not_finished": UNITS - canonical,
        "units_by_state": st["by_state"],
        "canonical_digests_not_the_cpu_reference": wrong,
        "restart_s_max": downtime.last().copied(),
        "goal": "0 acknowledged reports lost; every canonical digest the CPU reference's",
    }))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let only: Option<Vec<String>> = args
        .only
        .as_ref()
        .map(|s| s.split(',').map(str::to_owned).collect());
    let want = |s: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == s));
    if want("sybil_errors") {
        println!("{}", sybil(&args, false).await?);
    }
    if want("sybil_hoard") {
        println!("{}", sybil(&args, true).await?);
    }
    if want("memory_bomb") {
        println!("{}", memory_bomb(&args).await?);
    }
    if want("spot_hog") {
        println!("{}", spot_hog(&args).await?);
    }
    if want("flood") {
        println!("{}", flood(&args).await?);
    }
    if want("squat") {
        println!("{}", squat(&args).await?);
    }
    if want("kill9") {
        println!("{}", kill9(&args).await?);
    }
    Ok(())
}
