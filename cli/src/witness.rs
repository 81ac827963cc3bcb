//! `qg witness`: a witness of transparency logs, in either direction.
//!
//! - `qg witness serve` is the witness side of C2SP tlog-witness: logs `POST /add-checkpoint`
//!   (the size they believe it cosigned last, a consistency proof, the checkpoint) and get its
//!   cosignature, or the status the spec gives each refusal. What it decides is
//!   `transparency::witness::add_checkpoint`'s; this file checks and persists under one lock,
//!   so two requests can never roll its state back, and persists before it answers.
//! - `qg witness follow` pulls instead: it follows one log's checkpoints and hands its
//!   cosignatures back (`POST /api/v1/log/cosignatures`), for a log that cannot push.
//!
//! Both keep the witness's key in the state directory, and refuse forks and rollbacks.

use crate::log::{consistency_hashes, write_atomically};
use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use transparency::witness::{self, AddCheckpoint, Refusal, Verdict, WitnessState};
use transparency::{ALG_COSIGNATURE_V1, ALG_ED25519, NoteKey, NoteVerifier, open_checkpoint};

/// What `qg witness follow` was asked.
pub struct FollowArgs {
    pub log: String,
    pub state: PathBuf,
    pub name: String,
    pub log_key: Option<String>,
    pub once: bool,
    pub interval: f64,
    pub print_key: bool,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    /// The log's key, pinned on first contact (or given with --log-key).
    log_key: String,
    last: Option<WitnessState>,
}

/// This process's hold on the state directory, for as long as it runs: one witness process
/// per key, and one mode per state directory (a serving and a following witness with one key
/// and two records of what it cosigned could cosign two trees of one size).
fn claim(dir: &Path, mode: &str) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .with_context(|| format!("opening {}", dir.join("lock").display()))?;
    if lock.try_lock().is_err() {
        bail!(
            "another qg witness is running with --state {}: one process per witness key",
            dir.display()
        );
    }
    let (other, other_file) = match mode {
        "serve" => ("follow", FOLLOW_STATE),
        _ => ("serve", SERVE_STATE),
    };
    if dir.join(other_file).exists() {
        bail!(
            "--state {} belongs to a `qg witness {other}` (it holds {other_file}): a witness key \
             keeps one record of what it cosigned, so give this mode its own key and directory",
            dir.display()
        );
    }
    Ok(lock)
}

/// What `qg witness follow` and `qg witness serve` record of what they cosigned.
const FOLLOW_STATE: &str = "witness-state.json";
const SERVE_STATE: &str = "witness-logs.json";

/// The witness's key in `dir` (created, owner-only, on first use).
fn witness_key(dir: &Path, name: &str) -> Result<NoteKey> {
    let path = dir.join("witness-key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return NoteKey::parse(&text).with_context(|| format!("reading {}", path.display()));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = NoteKey::from_seed(name, ALG_COSIGNATURE_V1, rand::random())
        .map_err(|e| anyhow!("--name {name:?}: {e}"))?;
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    use std::io::Write;
    let mut f = open
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{}", key.to_private_text())?;
    f.sync_all()?;
    Ok(key)
}

/// Follows a log: each new checkpoint must extend the last one cosigned (a consistency proof),
/// then it is cosigned and the cosignature handed back. A fork or a rollback is refused:
/// reported, nothing cosigned, exit status 1.
pub fn follow(a: &FollowArgs) -> Result<bool> {
    let key = witness_key(&a.state, &a.name)?;
    if a.print_key {
        println!("{}", key.verifier_key());
        return Ok(true);
    }
    let _lock = claim(&a.state, "follow")?;
    eprintln!("witness {} following {}", key.verifier_key(), a.log);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = a.log.trim_end_matches('/').to_owned();
    let get = |path: &str| -> Result<reqwest::blocking::Response> {
        let r = http
            .get(format!("{base}{path}"))
            .send()
            .with_context(|| format!("cannot reach the log at {base}"))?;
        if !r.status().is_success() {
            bail!("{base}{path}: HTTP {}", r.status());
        }
        Ok(r)
    };
    let state_path = a.state.join(FOLLOW_STATE);
    let mut saved: Option<Saved> = match std::fs::read_to_string(&state_path) {
        Ok(t) => Some(serde_json::from_str(&t).context("the witness state file is corrupt")?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", state_path.display())),
    };
    loop {
        let served_key = get("/api/v1/log")?
            .json::<Value>()?
            .get("key")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("{base} does not say its log key"))?;
        let pinned = match (&saved, &a.log_key) {
            (Some(s), _) => s.log_key.clone(),
            (None, Some(k)) => k.clone(),
            (None, None) => served_key.clone(),
        };
        if served_key != pinned {
            eprintln!(
                "qg witness: REFUSED: the log now names key {served_key}, not {pinned} that this witness follows"
            );
            return Ok(false);
        }
        let log = NoteVerifier::parse(&pinned).map_err(|e| anyhow!("log key: {e}"))?;
        let state = match &mut saved {
            Some(s) => s,
            None => {
                // Pin the log's key on first contact.
                let s = Saved {
                    log_key: pinned,
                    last: None,
                };
                write_atomically(&state_path, &serde_json::to_string_pretty(&s)?)?;
                saved.insert(s)
            }
        };
        match step(&key, &log, state, &state_path, &get, &http, &base) {
            Ok(()) => {}
            Err(Refused(msg)) => {
                eprintln!("qg witness: REFUSED: {msg}");
                return Ok(false);
            }
        }
        if a.once {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_secs_f64(a.interval.clamp(0.05, 3600.0)));
    }
}

struct Refused(String);

impl<E: std::fmt::Display> From<E> for Refused {
    fn from(e: E) -> Self {
        Refused(e.to_string())
    }
}

/// One look at the log: a new checkpoint that extends the last one cosigned becomes the new
/// `state` (saved at `state_path`), then it is cosigned and handed back.
fn step(
    key: &NoteKey,
    log: &NoteVerifier,
    state: &mut Saved,
    state_path: &Path,
    get: &dyn Fn(&str) -> Result<reqwest::blocking::Response>,
    http: &reqwest::blocking::Client,
    base: &str,
) -> std::result::Result<(), Refused> {
    let note = match get("/log/checkpoint") {
        Ok(r) => r.bytes().map_err(|e| Refused(e.to_string()))?.to_vec(),
        // No checkpoint yet: nothing to witness.
        Err(e) if e.to_string().contains("HTTP 404") => return Ok(()),
        Err(e) => {
            eprintln!("qg witness: {e:#}");
            return Ok(());
        }
    };
    let trusted = open_checkpoint(&note, log, &[], 0)?;
    let cp = &trusted.checkpoint;
    let last = state.last.as_ref();
    let proof = match last {
        Some(l) if l.size > 0 && cp.size() > l.size => {
            let v: Value = get(&format!(
                "/api/v1/log/consistency?from={}&to={}",
                l.size,
                cp.size()
            ))
            .map_err(|e| Refused(format!("{e:#}")))?
            .json()
            .map_err(|e| Refused(e.to_string()))?;
            consistency_hashes(&v).map_err(|e| Refused(format!("{e:#}")))?
        }
        _ => Vec::new(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (verdict, next, line) = witness::cosign(last, &trusted, &proof, key, now)?;
    let mine = format!("— {} ", key.name());
    let already = String::from_utf8_lossy(&note)
        .lines()
        .any(|l| l.starts_with(&mine));
    if verdict == Verdict::Same && already {
        return Ok(());
    }
    // Saved before the cosignature is handed out: never two trees of one size.
    if verdict == Verdict::Extends {
        state.last = Some(next);
        write_atomically(
            state_path,
            &serde_json::to_string_pretty(state).map_err(|e| Refused(e.to_string()))?,
        )
        .map_err(|e| Refused(format!("{e:#}")))?;
    }
    let r = http
        .post(format!("{base}/api/v1/log/cosignatures"))
        .json(&serde_json::json!({"size": cp.size(), "cosignature": line}))
        .send();
    match r {
        Ok(r) if r.status().is_success() => {
            eprintln!("cosigned {} at size {}", cp.origin(), cp.size())
        }
        Ok(r) => eprintln!(
            "qg witness: the log did not take the cosignature of size {}: HTTP {} {}",
            cp.size(),
            r.status(),
            r.text().unwrap_or_default()
        ),
        Err(e) => eprintln!("qg witness: handing back the cosignature: {e}"),
    }
    Ok(())
}

// ---- qg witness serve ----

/// What `qg witness serve` was asked.
pub struct ServeArgs {
    pub listen: SocketAddr,
    pub state: PathBuf,
    pub name: String,
    pub log_keys: Vec<String>,
    pub print_key: bool,
}

/// The largest request taken: 63 proof lines and a checkpoint with its signatures fit many
/// times over.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// How long one request may take, its body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A serving witness: its key, the logs it follows, and the latest checkpoint it cosigned of
/// each (by origin), as persisted in `path`.
struct Served {
    key: NoteKey,
    logs: Vec<NoteVerifier>,
    path: PathBuf,
    state: Mutex<BTreeMap<String, WitnessState>>,
}

impl Served {
    /// One `add-checkpoint`: decided and, when the state moves, persisted under the lock,
    /// before the cosignature line is handed out.
    fn add(&self, body: &[u8]) -> std::result::Result<String, Refusal> {
        let req = AddCheckpoint::parse(body)?;
        let mut state = self
            .state
            .lock()
            .map_err(|_| Refusal::Internal("a request panicked holding the state".into()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (next, line) = witness::add_checkpoint(
            &self.logs,
            |origin| state.get(origin).cloned(),
            &req,
            &self.key,
            now,
        )?;
        if state.get(&next.origin) != Some(&next) {
            let mut new = state.clone();
            new.insert(next.origin.clone(), next);
            let text =
                serde_json::to_string_pretty(&new).map_err(|e| Refusal::Internal(e.to_string()))?;
            write_atomically(&self.path, &text).map_err(|e| Refusal::Internal(format!("{e:#}")))?;
            *state = new;
        }
        Ok(line)
    }
}

async fn add_checkpoint(
    axum::extract::State(w): axum::extract::State<Arc<Served>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let answer = tokio::task::spawn_blocking(move || w.add(&body))
        .await
        .unwrap_or_else(|e| Err(Refusal::Internal(e.to_string())));
    match answer {
        Ok(line) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], line).into_response(),
        Err(Refusal::Conflict { size, why }) => {
            eprintln!("qg witness: refused (409): {why}");
            (
                StatusCode::CONFLICT,
                [(header::CONTENT_TYPE, witness::SIZE_CONTENT_TYPE)],
                format!("{size}\n"),
            )
                .into_response()
        }
        Err(e) => {
            eprintln!("qg witness: refused ({}): {e}", e.status());
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{e}\n"),
            )
                .into_response()
        }
    }
}

/// Serves C2SP tlog-witness's `add-checkpoint` for the logs of `log_keys` until interrupted.
pub fn serve(a: &ServeArgs) -> Result<bool> {
    let key = witness_key(&a.state, &a.name)?;
    if a.print_key {
        println!("{}", key.verifier_key());
        return Ok(true);
    }
    if a.log_keys.is_empty() {
        bail!(
            "--log-key: name each log this witness follows by its public key (GET /api/v1/log \
             on a Quorum Grid coordinator says it)"
        );
    }
    let logs = a
        .log_keys
        .iter()
        .map(|k| {
            let v = NoteVerifier::parse(k).map_err(|e| anyhow!("--log-key {k:?}: {e}"))?;
            if v.alg() != ALG_ED25519 {
                bail!("--log-key {k:?}: not a log's Ed25519 (type 0x01) key");
            }
            Ok(v)
        })
        .collect::<Result<Vec<_>>>()?;
    let _lock = claim(&a.state, "serve")?;
    let path = a.state.join(SERVE_STATE);
    let state: BTreeMap<String, WitnessState> = match std::fs::read_to_string(&path) {
        Ok(t) => {
            serde_json::from_str(&t).with_context(|| format!("{} is corrupt", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let served = Arc::new(Served {
        key,
        logs,
        path,
        state: Mutex::new(state),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("--listen {}", a.listen))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "witness {} serving C2SP tlog-witness for {}",
            served.key.verifier_key(),
            a.log_keys.join(", ")
        );
        // Tests and scripts read this line to find the port.
        println!("qg witness listening on http://{addr}");
        use std::io::Write;
        std::io::stdout().flush()?;
        let app = axum::Router::new()
            .route("/add-checkpoint", axum::routing::post(add_checkpoint))
            .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
            // A request, its body included, has this long (a slow sender holds nothing).
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                REQUEST_TIMEOUT,
            ))
            .with_state(served);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(true)
    })
}
