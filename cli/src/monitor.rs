//! `qg monitor`: follows a transparency log from entry 0, as anyone can, and checks what a
//! witness does not: every entry against the log's rules ([`transparency::monitor`]), each
//! entry's bytes against the tree its checkpoint signs (tiles authenticated by
//! `tlog_tiles::TileHashReader`), and each new checkpoint's consistency with the last one seen.
//! It keeps its state in a folder and stops, exit status 1, at the first anomaly, naming it.

use crate::log::write_atomically;
use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use transparency::monitor::MonitorState;
use transparency::tlog_tiles::{
    self, HashReader, Tile, TileHashReader, TileReader, record_hash, stored_hash_index,
};
use transparency::witness::{self, WitnessState};
use transparency::{NoteVerifier, TILE_HEIGHT, open_checkpoint};

pub struct MonitorArgs {
    pub log: String,
    pub state: PathBuf,
    pub log_key: Option<String>,
    /// Witnesses' keys: each checkpoint must carry `min_witnesses` of their cosignatures, so
    /// that the tree checked here is the one scientists verify against (not a fork shown to
    /// monitors).
    pub witnesses: Vec<String>,
    pub min_witnesses: Option<usize>,
    pub once: bool,
    pub interval: f64,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    /// The log's key, pinned on first contact (or given with --log-key).
    log_key: String,
    /// The last checkpoint whose entries were all checked.
    checkpoint: Option<WitnessState>,
    rules: MonitorState,
}

/// What stops a monitor: the log broke a rule (exit status 1), or it cannot be read (an error).
enum Stop {
    Anomaly(String),
    Error(anyhow::Error),
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Self {
        Stop::Error(e)
    }
}

struct Http {
    client: reqwest::blocking::Client,
    base: String,
}

impl Http {
    /// The body at `path`, or None for a 404.
    fn get(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .with_context(|| format!("cannot reach the log at {}", self.base))?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !r.status().is_success() {
            bail!("{}{path}: HTTP {}", self.base, r.status());
        }
        Ok(Some(r.bytes()?.to_vec()))
    }
}

/// The log's tiles over HTTP (C2SP paths), kept for one checkpoint's reads. What they hold is
/// authenticated by the `TileHashReader` that asks for them, not here.
struct HttpTiles<'a> {
    http: &'a Http,
    cache: RefCell<HashMap<String, Vec<u8>>>,
}

/// A tile's URL path on the log.
fn c2sp_path(t: &Tile) -> String {
    format!("/log/{}", transparency::tile_path(t))
}

impl TileReader for HttpTiles<'_> {
    fn height(&self) -> u8 {
        TILE_HEIGHT
    }

    fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        tiles
            .iter()
            .map(|t| {
                let path = c2sp_path(t);
                if let Some(d) = self.cache.borrow().get(&path) {
                    return Ok(d.clone());
                }
                let data = self
                    .http
                    .get(&path)
                    .ok()
                    .flatten()
                    .filter(|d| d.len() == t.width() as usize * 32)
                    .ok_or_else(|| tlog_tiles::Error::InvalidInput(format!("tile {path}")))?;
                self.cache.borrow_mut().insert(path, data.clone());
                Ok(data)
            })
            .collect()
    }

    fn save_tiles(&self, _: &[Tile], _: &[Vec<u8>]) {}
}

/// Follows the log: Ok(true) when `--once` found nothing wrong, Ok(false) at an anomaly.
pub fn run_monitor(a: &MonitorArgs) -> Result<bool> {
    let http = Http {
        client: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        base: a.log.trim_end_matches('/').to_owned(),
    };
    std::fs::create_dir_all(&a.state).with_context(|| format!("creating {}", a.state.display()))?;
    let state_path = a.state.join("monitor-state.json");
    let mut saved: Saved = match std::fs::read_to_string(&state_path) {
        Ok(t) => serde_json::from_str(&t).context("the monitor's state file is corrupt")?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let log_key = match &a.log_key {
                Some(k) => k.clone(),
                None => {
                    let v: Value = serde_json::from_slice(
                        &http
                            .get("/api/v1/log")?
                            .ok_or_else(|| anyhow!("{} serves no log", http.base))?,
                    )?;
                    let k = v["key"]
                        .as_str()
                        .ok_or_else(|| anyhow!("{} does not say its log key", http.base))?;
                    eprintln!(
                        "note: pinned the key the log names, {k} (pin your own with --log-key)"
                    );
                    k.to_owned()
                }
            };
            Saved {
                log_key,
                checkpoint: None,
                rules: MonitorState::default(),
            }
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", state_path.display())),
    };
    if let Some(k) = &a.log_key
        && *k != saved.log_key
    {
        bail!(
            "--log-key {k} is not the key this monitor's state follows ({})",
            saved.log_key
        );
    }
    let log = NoteVerifier::parse(&saved.log_key).map_err(|e| anyhow!("log key: {e}"))?;
    let witnesses = a
        .witnesses
        .iter()
        .map(|w| NoteVerifier::parse(w).map_err(|e| anyhow!("--witness {w}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let min = a
        .min_witnesses
        .unwrap_or(usize::from(!witnesses.is_empty()));
    if min > witnesses.len() {
        bail!(
            "--min-witnesses {min}: only {} witness key(s) given (--witness)",
            witnesses.len()
        );
    }
    if min == 0 {
        eprintln!(
            "note: no witness cosignature is checked: a log could show this monitor a tree of its own (--witness)"
        );
    }
    let trust = (&log, &witnesses[..], min);
    loop {
        match look(&http, trust, &mut saved, &state_path) {
            Ok(()) => {}
            Err(Stop::Anomaly(what)) => {
                println!("ANOMALY {what}");
                return Ok(false);
            }
            Err(Stop::Error(e)) if a.once => return Err(e),
            Err(Stop::Error(e)) => eprintln!("qg monitor: {e:#}"),
        }
        if a.once {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_secs_f64(a.interval.clamp(0.05, 3600.0)));
    }
}

/// One look: the newest checkpoint, consistent with the last one seen; then every entry up to
/// it, each authenticated against it and checked against the rules; then the state saved.
fn look(
    http: &Http,
    (log, witnesses, min): (&NoteVerifier, &[NoteVerifier], usize),
    saved: &mut Saved,
    state_path: &Path,
) -> Result<(), Stop> {
    let Some(note) = http.get("/log/checkpoint")? else {
        return Ok(()); // nothing signed yet
    };
    let trusted = match open_checkpoint(&note, log, witnesses, min) {
        Ok(t) => t,
        // Witnesses cosign moments after the log signs: look again later.
        Err(e @ transparency::LogError::NotEnoughWitnesses { .. }) => {
            eprintln!("not checked yet: {e}");
            return Ok(());
        }
        Err(e) => return Err(Stop::Anomaly(format!("the checkpoint served: {e}"))),
    };
    let cp = &trusted.checkpoint;
    let proof = match &saved.checkpoint {
        Some(l) if l.size > 0 && cp.size() > l.size => {
            let v: Value = serde_json::from_slice(
                &http
                    .get(&format!(
                        "/api/v1/log/consistency?from={}&to={}",
                        l.size,
                        cp.size()
                    ))?
                    .ok_or_else(|| anyhow!("no consistency proof"))?,
            )
            .map_err(|e| anyhow!("the consistency proof: {e}"))?;
            crate::log::consistency_hashes(&v)?
        }
        _ => Vec::new(),
    };
    let verdict = witness::check(saved.checkpoint.as_ref(), cp, &proof)
        .map_err(|e| Stop::Anomaly(format!("checkpoint {}: {e}", cp.size())))?;
    let size = cp.size();
    if verdict == witness::Verdict::Same && saved.rules.next == size {
        return Ok(()); // nothing new
    }
    let mut rules = saved.rules.clone();
    let tiles = HttpTiles {
        http,
        cache: RefCell::new(HashMap::new()),
    };
    let tree = TileHashReader::new(size, *cp.hash(), &tiles);
    let width = 1u64 << TILE_HEIGHT;
    while rules.next < size {
        let n = rules.next / width;
        let (lo, hi) = (n * width, (n * width + width).min(size));
        let bundle = Tile::new(TILE_HEIGHT, 0, n, (hi - lo) as u32, true);
        let path = c2sp_path(&bundle);
        let data = http
            .get(&path)?
            .ok_or_else(|| anyhow!("{path}: not served"))?;
        let entries = transparency::split_entry_bundle(&data)
            .filter(|e| e.len() as u64 == hi - lo)
            .ok_or_else(|| Stop::Anomaly(format!("{path} does not hold {} entries", hi - lo)))?;
        let indexes: Vec<u64> = (rules.next..hi).map(|i| stored_hash_index(0, i)).collect();
        let hashes = tree.read_hashes(&indexes).map_err(|e| {
            Stop::Anomaly(format!(
                "the tiles served do not make checkpoint {size}'s tree: {e}"
            ))
        })?;
        for (i, h) in (rules.next..hi).zip(hashes) {
            let entry = entries[(i - lo) as usize];
            if record_hash(entry) != h {
                return Err(Stop::Anomaly(format!(
                    "log entry #{i} served in {path} is not the one in checkpoint {size}'s tree"
                )));
            }
            rules
                .apply(i, entry)
                .map_err(|e| Stop::Anomaly(e.to_string()))?;
        }
    }
    let grew = saved.checkpoint.as_ref().is_none_or(|l| l.size != size);
    saved.rules = rules;
    saved.checkpoint = Some(WitnessState::of(cp));
    write_atomically(
        state_path,
        &serde_json::to_string(saved).map_err(|e| anyhow!("{e}"))?,
    )?;
    if grew {
        eprintln!(
            "checkpoint {size}: every entry checked ({} units, {} batches)",
            saved.rules.units.len(),
            saved.rules.batches.len()
        );
    }
    Ok(())
}
