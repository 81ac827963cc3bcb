//! Configuration and the running server: HTTP, the spot-check worker pool, the deadline
//! sweeper, and the demo batch for an empty database.

use crate::api::{self, AppState, Shared};
use crate::engine::{Database, Engine};
use anyhow::{Context, Result};
use axum::extract::DefaultBodyLimit;
use protocol::api::{BatchRequest, PolicySpec};
use serde::Deserialize;
use serde_json::json;
use shaders::Job;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tower_http::services::ServeDir;
use transparency::{ALG_COSIGNATURE_V1, ALG_ED25519, NoteKey, NoteVerifier};

/// Settings from a TOML file; every field optional. Flags and `QG_*` environment variables
/// override it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub bind: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    /// A SQLite file, or a PostgreSQL URL (`postgres://…`) that several coordinators share.
    pub db: Option<String>,
    pub web_dir: Option<PathBuf>,
    /// Built-in CPU recomputation (spot-checks, challenge segments): 0 leaves it all to
    /// verifier workers (`qg-volunteer --verifier`). Default 2; one batch holds at most all
    /// but one of them, so another batch's checks never wait behind it.
    pub spot_workers: Option<usize>,
    /// The most work (the kernel's estimate: spin updates, site visits, pair interactions)
    /// the coordinator recomputes for one unit (default 5e9, about half a minute on one core);
    /// units over it are verified by quorum and challenges, and submission says so.
    pub max_recompute_work: Option<u64>,
    pub spot_check_rate: Option<f64>,
    /// Seconds a verifier worker holds a job before it may go to another (default 3600).
    pub verifier_lease_s: Option<i64>,
    pub max_body_bytes: Option<usize>,
    pub max_units_per_batch: Option<usize>,
    pub demo: Option<bool>,
    /// A failed spot-check blacklists the volunteer and backtracks its work (default true).
    pub blacklist_on_spot_failure: Option<bool>,
    /// The transparency log's name: its checkpoints' origin and its key's name (default
    /// `localhost/quorum-grid`; a schema-less URL where the log is served, by convention).
    pub log_origin: Option<String>,
    /// The log's private key (default DATA_DIR/log-key, created on first start).
    pub log_key: Option<PathBuf>,
    /// Witnesses whose cosignatures the log accepts and serves: each its public key (it pulls,
    /// `qg witness follow`), or its key, a space and its URL (the log pushes each checkpoint
    /// to `URL/add-checkpoint`, C2SP tlog-witness, as to `qg witness serve`).
    pub witnesses: Option<Vec<String>>,
    /// Volunteer registrations per minute from one network prefix (/24, /48), three times
    /// that at once (default 10; 0: unlimited).
    pub registrations_per_minute: Option<f64>,
    /// Batches one API key may submit per minute, three times that at once (default 30; 0:
    /// unlimited).
    pub batches_per_minute_per_key: Option<f64>,
    /// Units not yet finished one API key may have, its batches' together (default 1,000,000).
    pub key_open_units: Option<u64>,
    /// Replicas a new volunteer may hold at once; one more per valid result, fewer with
    /// errors (default 2).
    pub work_in_flight: Option<u32>,
    /// Connections open at once (default 4096); beyond it, 503 and `Retry-After`.
    pub max_connections: Option<usize>,
    /// Connections open at once from one address (default 256).
    pub max_connections_per_ip: Option<usize>,
    /// Connections open at once from one network, its /24 (IPv4) or /64 (IPv6) (default 1024).
    pub max_connections_per_prefix: Option<usize>,
    /// Seconds a connection may move no byte before it is closed (default 30).
    pub idle_timeout_s: Option<u64>,
    /// Seconds a request's head may take to arrive, however it trickles (default 10).
    pub header_timeout_s: Option<u64>,
    /// Seconds a request's body may take to arrive after its head (default 60).
    pub body_timeout_s: Option<u64>,
    /// Distinct volunteers, each with a record, whose errors with a kernel package suspend it
    /// (default 3).
    pub package_error_volunteers: Option<u64>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config {}", path.display()))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub db: Database,
    pub web_dir: PathBuf,
    pub spot_workers: usize,
    pub spot_check_rate: f64,
    pub max_recompute_work: u64,
    pub verifier_lease_s: i64,
    pub max_body_bytes: usize,
    pub max_units_per_batch: usize,
    pub demo: bool,
    pub blacklist_on_spot_failure: bool,
    pub expire_every: Duration,
    pub log_origin: String,
    pub log_key: PathBuf,
    pub witnesses: Vec<String>,
    pub registrations_per_minute: f64,
    pub batches_per_minute_per_key: f64,
    pub key_open_units: u64,
    pub work_in_flight: u32,
    pub connections: crate::conn::Limits,
    /// How often the sequencer moves queued receipts into the log and signs a checkpoint.
    pub log_every: Duration,
    /// How old the shared status and dashboard snapshot may get (one per tick).
    pub snapshot_max_age: Duration,
    pub package_error_volunteers: u64,
}

impl Config {
    /// Defaults, then the file, then explicit values (flags or env vars, already merged by clap).
    pub fn resolve(
        file: FileConfig,
        bind: Option<SocketAddr>,
        data_dir: Option<PathBuf>,
        db: Option<String>,
        web_dir: Option<PathBuf>,
    ) -> Self {
        let data_dir = data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("qg-data"));
        let db = db.or(file.db).map_or_else(
            || Database::Sqlite(data_dir.join("coordinator.db")),
            |d| Database::parse(&d),
        );
        Self {
            bind: bind
                .or(file.bind)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            db,
            web_dir: web_dir
                .or(file.web_dir)
                .unwrap_or_else(|| PathBuf::from("web")),
            spot_workers: file.spot_workers.unwrap_or(2),
            max_recompute_work: file
                .max_recompute_work
                .unwrap_or(api::DEFAULT_MAX_RECOMPUTE_WORK),
            spot_check_rate: file.spot_check_rate.unwrap_or(0.05),
            verifier_lease_s: file.verifier_lease_s.unwrap_or(3600).max(1),
            max_body_bytes: file.max_body_bytes.unwrap_or(32 << 20),
            max_units_per_batch: file.max_units_per_batch.unwrap_or(100_000),
            demo: file.demo.unwrap_or(true),
            blacklist_on_spot_failure: file.blacklist_on_spot_failure.unwrap_or(true),
            expire_every: Duration::from_millis(500),
            log_origin: file
                .log_origin
                .unwrap_or_else(|| "localhost/quorum-grid".to_owned()),
            log_key: file.log_key.unwrap_or_else(|| data_dir.join("log-key")),
            witnesses: file.witnesses.unwrap_or_default(),
            registrations_per_minute: file.registrations_per_minute.unwrap_or(10.0).max(0.0),
            batches_per_minute_per_key: file.batches_per_minute_per_key.unwrap_or(30.0).max(0.0),
            key_open_units: file.key_open_units.unwrap_or(1_000_000),
            work_in_flight: file.work_in_flight.unwrap_or(2).clamp(1, 64),
            connections: crate::conn::Limits {
                max: file.max_connections.unwrap_or(4096).max(1),
                per_ip: file.max_connections_per_ip.unwrap_or(256).max(1),
                per_prefix: file.max_connections_per_prefix.unwrap_or(1024).max(1),
                idle: Duration::from_secs(file.idle_timeout_s.unwrap_or(30).max(1)),
                header: Duration::from_secs(file.header_timeout_s.unwrap_or(10).max(1)),
                body: Duration::from_secs(file.body_timeout_s.unwrap_or(60).max(1)),
            },
            log_every: Duration::from_millis(200),
            snapshot_max_age: Duration::from_secs(1),
            package_error_volunteers: file
                .package_error_volunteers
                .unwrap_or(crate::decide::PACKAGE_ERROR_VOLUNTEERS)
                .max(1),
            data_dir,
        }
    }
}

/// The demo batch: the 2D Ising model across its phase transition.
pub fn demo_batch() -> BatchRequest {
    let mut units = Vec::new();
    for i in 0..7 {
        let beta = 0.30 + 0.05 * f64::from(i);
        for seed in 1..=2u64 {
            units.push(
                json!({"L": 64, "beta": (beta * 100.0).round() / 100.0, "sweeps": 1000,
                              "thermalize": 200, "measure_every": 2, "seed": seed}),
            );
        }
    }
    BatchRequest {
        name: Some("demo: 2D Ising across the transition".into()),
        description: Some(
            "How does a magnet lose its order as it warms up? Each unit simulates a 64×64 \
             lattice of atomic magnets at one temperature; together they trace the transition \
             at β ≈ 0.4407 that Onsager solved exactly in 1944, a check that every volunteer's \
             GPU computes the physics right."
                .into(),
        ),
        kernel: "ising2d".into(),
        units,
        policy: PolicySpec {
            deadline_s: Some(600),
            ..Default::default()
        },
        axes: vec!["beta".into(), "seed".into()],
    }
}

/// Builds the app (API + static pages) over a store.
pub fn app(state: Shared, cfg: &Config) -> axum::Router {
    let budget = crate::conn::BodyBudget::new(cfg.max_body_bytes);
    api::router(state)
        .fallback_service(ServeDir::new(&cfg.web_dir))
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(axum::middleware::from_fn(move |req, next| {
            budget.clone().admit(req, next)
        }))
        // Spans name the path only: a query string may carry a stream ticket.
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<_>| {
                    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
                },
            ),
        )
}

/// The log's key at `path`, created there (readable by its owner only) if there is none; it
/// must be named `origin`.
pub fn load_log_key(path: &Path, origin: &str) -> Result<NoteKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = NoteKey::parse(&text)
                .with_context(|| format!("reading the log key {}", path.display()))?;
            if key.name() != origin {
                anyhow::bail!(
                    "the log key {} is for the log {:?}, not {origin:?}: set log_origin to it, \
                     or move the key away to start a new log",
                    path.display(),
                    key.name()
                );
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = NoteKey::from_seed(origin, ALG_ED25519, rand::random())
                .with_context(|| format!("log_origin {origin:?}"))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let mut open = std::fs::OpenOptions::new();
            open.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
            match open.open(path) {
                Ok(mut f) => {
                    use std::io::Write;
                    writeln!(f, "{}", key.to_private_text())?;
                    f.sync_all()?;
                    tracing::info!(path = %path.display(), "created the log key");
                    Ok(key)
                }
                // Another process made it first: use that one.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    load_log_key(path, origin)
                }
                Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The state every handler shares; loads (or creates) the log key.
pub fn state(store: Arc<Engine>, cfg: &Config) -> Result<Shared> {
    store.set_work_in_flight(cfg.work_in_flight);
    store.set_challenge_cap(cfg.max_recompute_work);
    store.set_package_error_volunteers(cfg.package_error_volunteers);
    let log_key = Arc::new(load_log_key(&cfg.log_key, &cfg.log_origin)?);
    // Witnesses and scientists pin this key (also at GET /api/v1/log).
    tracing::info!(origin = %cfg.log_origin, key = %log_key.verifier_key(), "transparency log");
    let mut witnesses = Vec::new();
    let mut pushers = Vec::new();
    for w in &cfg.witnesses {
        let (key, url) = match w.trim().split_once(char::is_whitespace) {
            Some((k, u)) => (k, Some(u.trim())),
            None => (w.trim(), None),
        };
        let v = NoteVerifier::parse(key).with_context(|| format!("witness key {key:?}"))?;
        if v.alg() != ALG_COSIGNATURE_V1 {
            anyhow::bail!("witness key {key:?} is not a cosignature (type 0x04) key");
        }
        if let Some(url) = url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                anyhow::bail!("witness {key:?}: its URL {url:?} is not http:// or https://");
            }
            pushers.push(Arc::new(crate::push::Pusher::new(v.clone(), url)));
        }
        witnesses.push(v);
    }
    Ok(Arc::new(AppState {
        store,
        metrics: Default::default(),
        spot_wake: Arc::new(Notify::new()),
        admission: api::Admission {
            max_units: cfg.max_units_per_batch,
            default_spot: cfg.spot_check_rate,
            max_recompute_work: cfg.max_recompute_work,
            max_output_bytes: api::Admission::output_limit(cfg.max_body_bytes),
        },
        leases: Default::default(),
        verifier_lease_s: cfg.verifier_lease_s,
        log_key,
        witnesses: Arc::new(witnesses),
        pushers: Arc::new(pushers),
        tickets: Default::default(),
        registrations: api::RateLimit::new(cfg.registrations_per_minute),
        submissions: api::RateLimit::new(cfg.batches_per_minute_per_key),
        key_open_units: cfg.key_open_units,
        snapshots: api::Snapshots::new(cfg.snapshot_max_age),
    }))
}

/// Starts the background work: the built-in recomputation (spot-checks and challenge
/// segments, unless `spot_workers` is 0) and the deadline sweeper.
pub fn spawn_background(state: &Shared, cfg: &Config) {
    if cfg.spot_workers > 0 {
        tokio::spawn(spot_checks(state.clone(), cfg.spot_workers));
        tokio::spawn(challenges(state.clone()));
    }
    tokio::spawn(expire_deadlines(state.store.clone(), cfg.expire_every));
    tokio::spawn(sequence_log(state.clone(), cfg.log_every));
    if !state.pushers.is_empty() {
        // One client: its connections to each witness are kept alive between checkpoints.
        let http = reqwest::Client::new();
        for p in state.pushers.iter() {
            tokio::spawn(crate::push::run(
                state.store.clone(),
                p.clone(),
                http.clone(),
                PUSH_EVERY,
            ));
        }
    }
}

/// How often each witness's push looks for a newer checkpoint (the sequencer signs at most
/// one per `log_every`).
const PUSH_EVERY: Duration = Duration::from_millis(100);

pub async fn serve(cfg: Config) -> Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let store = Arc::new(Engine::open(&cfg.db).with_context(|| format!("opening {}", cfg.db))?);
    if cfg.demo && store.unit_count()? == 0 {
        let terms = api::Admission {
            default_spot: cfg.spot_check_rate,
            max_recompute_work: cfg.max_recompute_work,
            ..Default::default()
        };
        let batch = api::new_batch(demo_batch(), None, &terms)
            .map_err(|e| anyhow::anyhow!("demo batch: {}", e.body.error))?;
        let id = store.create_batch(&batch, api::now())?;
        tracing::info!("created demo batch {id} ({} units)", batch.units.len());
    }
    let (addr, server) = start(store, &cfg).await?;
    // Tests and scripts read this line to find the port.
    println!("coordinator listening on http://{addr}");
    tracing::info!(db = %cfg.db, web = %cfg.web_dir.display(), "serving");
    tokio::select! {
        r = server => r??,
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
    }
    Ok(())
}

/// Binds `cfg.bind` and serves the API and pages over `store`, with the background workers.
/// Returns the bound address and the server task.
pub async fn start(
    store: Arc<Engine>,
    cfg: &Config,
) -> Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    store.set_blacklisting(cfg.blacklist_on_spot_failure)?;
    let state = state(store, cfg)?;
    spawn_background(&state, cfg);
    let listener = crate::conn::bind(cfg.bind).with_context(|| format!("binding {}", cfg.bind))?;
    let addr = listener.local_addr()?;
    // Bounded connections (small JSON requests and replies go out at once: TCP_NODELAY).
    let listener = crate::conn::BoundedListener::new(listener, cfg.connections);
    let app = app(state, cfg);
    let task = tokio::spawn(crate::conn::serve(listener, app));
    Ok((addr, task))
}

/// The built-in spot-check pool: computes the CPU reference of sampled units, off the request
/// path; the queue lives in the database, so it survives restarts, and jobs are claimed there,
/// so verifier workers and other coordinators never take the same one. Jobs are taken
/// round-robin across batches, and one batch holds at most all workers but one, so a batch of
/// costly units never makes another batch's checks wait.
async fn spot_checks(state: Shared, workers: usize) {
    let permits = Arc::new(Semaphore::new(workers));
    let per_batch = workers.saturating_sub(1).max(1);
    let mut broken: HashSet<i64> = HashSet::new();
    // Jobs being computed (unit → batch): their claims are renewed while they run.
    let running: Running = Arc::default();
    tokio::spawn(renew_spot_claims(state.clone(), running.clone()));
    loop {
        let store = state.store.clone();
        let free = permits.available_permits();
        let by_batch = {
            let mut by_batch: HashMap<i64, usize> = HashMap::new();
            for b in lock(&running).values() {
                *by_batch.entry(*b).or_default() += 1;
            }
            by_batch
        };
        let jobs = if free == 0 {
            Vec::new()
        } else {
            tokio::task::spawn_blocking(move || {
                store.claim_spot_checks(free, api::now(), SPOT_CLAIM_S, &by_batch, per_batch)
            })
            .await
            .ok()
            .and_then(|r| r.map_err(|e| tracing::error!("spot-check queue: {e}")).ok())
            .unwrap_or_default()
        };
        let mut started = 0;
        for job in jobs {
            if broken.contains(&job.unit_id) {
                continue;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let kernel_job = match Job::new(&job.kernel, job.params.clone()) {
                Ok(j) => j,
                Err(e) => {
                    tracing::error!(unit = job.unit_id, "spot-check params: {e}");
                    broken.insert(job.unit_id);
                    continue;
                }
            };
            started += 1;
            let state = state.clone();
            let running = running.clone();
            lock(&running).insert(job.unit_id, job.batch_id);
            tokio::task::spawn_blocking(move || {
                let unit = job.unit_id;
                match kernel_job.run_cpu(1, &mut |_, _| {}) {
                    Ok(r) => {
                        if let Err(e) =
                            state
                                .store
                                .spot_check_done(unit, &r.digest, &r.output, api::now())
                        {
                            tracing::error!(unit, "storing spot-check: {e}");
                        } else {
                            state.leases.settled(unit, r.digest);
                            tracing::debug!(unit, digest = %r.digest, "spot-check computed");
                        }
                    }
                    Err(e) => tracing::error!(unit, "spot-check run: {e}"),
                }
                lock(&running).remove(&unit);
                drop(permit);
                state.spot_wake.notify_one();
            });
        }
        if started == 0 {
            tokio::select! {
                _ = state.spot_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

/// Spot-checks being computed by the built-in pool: unit → batch.
type Running = Arc<std::sync::Mutex<HashMap<i64, i64>>>;

use crate::lock;

/// How long the built-in pool holds a spot-check it claimed, renewed every third of that while
/// it runs: if this coordinator dies, the job goes to another within a minute.
const SPOT_CLAIM_S: i64 = 60;

/// How long the built-in pool holds a challenge segment it claimed (one segment: seconds).
const CHALLENGE_CLAIM_S: i64 = 120;

async fn renew_spot_claims(state: Shared, running: Running) {
    let mut tick = tokio::time::interval(Duration::from_secs(SPOT_CLAIM_S as u64 / 3));
    loop {
        tick.tick().await;
        let units: Vec<i64> = lock(&running).keys().copied().collect();
        if units.is_empty() {
            continue;
        }
        let store = state.store.clone();
        let renewed = tokio::task::spawn_blocking(move || {
            store.renew_spot_claims(&units, api::now(), SPOT_CLAIM_S)
        })
        .await;
        if let Ok(Err(e)) = renewed {
            tracing::error!("renewing spot-check claims: {e}");
        }
    }
}

/// Verifies answered challenges: one segment each, recomputed with the CPU reference from the
/// volunteer's own checkpoint state. A segment is a fraction of a unit, so one worker keeps up.
async fn challenges(state: Shared) {
    loop {
        let s = state.clone();
        let done = tokio::task::spawn_blocking(move || -> crate::store::Result<usize> {
            let jobs = s
                .store
                .claim_challenges(16, api::now(), CHALLENGE_CLAIM_S, false)?;
            for job in &jobs {
                let passed = job.verify();
                tracing::info!(
                    replica = job.replica_id,
                    passed,
                    from = job.from,
                    to = job.to,
                    "challenge"
                );
                if let Err(e) = s.store.challenge_done(job.replica_id, passed, api::now()) {
                    tracing::error!(replica = job.replica_id, "storing a challenge verdict: {e}");
                }
            }
            Ok(jobs.len())
        })
        .await;
        match done {
            Ok(Ok(n)) if n > 0 => continue,
            Ok(Err(e)) => tracing::error!("challenge queue: {e}"),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The sequencer: moves queued receipts into the log and signs a checkpoint, every `every`
/// while there are any. With several coordinators on one database, one sequences at a time
/// (the database's log lock); all must share the log key.
async fn sequence_log(state: Shared, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        loop {
            let s = state.clone();
            let done = tokio::task::spawn_blocking(move || {
                s.store
                    .sequence_log(&s.log_key, crate::log::SEQUENCE_BATCH, api::now())
            })
            .await;
            match done {
                Ok(Ok(Some(size))) => {
                    tracing::debug!(size, "signed a log checkpoint");
                    // More may have been queued meanwhile: until the queue is empty.
                    continue;
                }
                Ok(Err(e)) => tracing::error!("sequencing the log: {e}"),
                _ => {}
            }
            break;
        }
    }
}

/// Marks replicas past their deadline as no-reply, which reissues them.
async fn expire_deadlines(store: Arc<Engine>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.expire(api::now())).await {
            Ok(Ok(n)) if n > 0 => {
                tracing::info!("{n} replicas or challenges missed their deadline")
            }
            Ok(Err(e)) => tracing::error!("expiring deadlines: {e}"),
            _ => {}
        }
    }
}
