//! The volunteer work loop, written once for the browser (wasm in a Web Worker) and native
//! (`qg-volunteer`): register, request work, compute on the GPU (or the CPU reference), report,
//! repeat. What differs between the two lives behind [`Host`]: HTTP, timers, a small persistent
//! key-value store (IndexedDB in the browser, files natively), events for the UI, and controls.
//!
//! Nothing is dropped: a result is written to the store (`pending/<assignment>`) before it is
//! sent and removed only once the coordinator acknowledged it (or said it can never take it).
//! An assignment is remembered while it computes (`assignment/<id>`), and GPU runs save their
//! state at every checkpoint (`checkpoint/<id>`): after the tab or process comes back, held
//! assignments are finished first, from their last checkpoint.

use crate::gpu::{Gpu, Resume, Run};
use protocol::Checkpoint;
use protocol::api::{
    AdapterInfo, Assignment, ChallengeAnswer, RegisterResponse, ReportAck, ResultReport,
    WorkResponse,
};
use protocol::package::{PackageFiles, PackageRun};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shaders::Job;
use shaders::package::PackageJob;
use shaders::program::Plan;

/// What the volunteer controls while the loop runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Controls {
    pub paused: bool,
    /// Fraction of time the GPU works, 0.05..=1.
    pub duty: f64,
    /// End the loop (after the current segment).
    pub stop: bool,
}

impl Default for Controls {
    fn default() -> Self {
        Self {
            paused: false,
            duty: 1.0,
            stop: false,
        }
    }
}

/// What the UI is told.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// What the work runs on.
    Adapter {
        name: String,
        vendor: String,
        architecture: String,
        backend: String,
        device_type: String,
        /// False when computing with the CPU reference.
        gpu: bool,
    },
    /// No usable GPU; the volunteer may agree to use the CPU instead.
    NoGpu {
        reason: String,
    },
    Registered {
        volunteer_id: i64,
    },
    Unit {
        assignment_id: i64,
        unit_id: i64,
        kernel: String,
        params: Value,
        total: u64,
        resumed_at: u64,
        /// The batch, as its scientist describes it.
        #[serde(skip_serializing_if = "Option::is_none")]
        batch: Option<protocol::api::BatchAbout>,
        /// Whose code it is, when a scientist's package: name, author, hash, approval.
        #[serde(skip_serializing_if = "Option::is_none")]
        package: Option<PackageAbout>,
    },
    Progress {
        assignment_id: i64,
        done: u64,
        total: u64,
    },
    /// A verifier worker's recomputation was accepted by the coordinator.
    Verified {
        job_id: String,
        elapsed_s: f64,
    },
    /// A resume point was saved: reopening continues from step `done`.
    Saved {
        assignment_id: i64,
        done: u64,
    },
    Computed {
        assignment_id: i64,
        digest: String,
        elapsed_s: f64,
    },
    Reported {
        assignment_id: i64,
        replica_state: String,
        unit_state: String,
    },
    Stats {
        stats: Value,
    },
    Idle {
        retry_after_s: u64,
    },
    /// The live view now shows the state after step `done` of the unit.
    Frame {
        assignment_id: i64,
        done: u64,
        total: u64,
    },
    Paused,
    Offline {
        error: String,
        retry_in_s: u64,
    },
    Error {
        message: String,
    },
}

/// What a volunteer is told of a package it computes: whose code it runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackageAbout {
    pub name: String,
    pub author: String,
    pub hash: String,
    /// Approved by this coordinator's operator.
    pub approved: bool,
}

/// The platform under the loop.
#[allow(async_fn_in_trait)] // wasm futures are not Send; the loop runs on one thread.
pub trait Host {
    /// POSTs JSON (or GETs, when `body` is None) to `path` on the coordinator. Err: the
    /// network failed (the request may or may not have arrived).
    async fn request(
        &self,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Result<(u16, String), String>;
    async fn sleep_ms(&self, ms: u64);
    async fn kv_get(&self, key: &str) -> Option<String>;
    async fn kv_set(&self, key: &str, value: &str) -> Result<(), String>;
    async fn kv_delete(&self, key: &str);
    async fn kv_keys(&self, prefix: &str) -> Vec<String>;
    fn emit(&self, event: Event);
    fn controls(&self) -> Controls;
    fn now_ms(&self) -> f64;
    /// Draws `run`'s state into the host's live view, if it has one that is on and due for a
    /// frame (`force`: a unit's first or last segment). True when a frame was drawn.
    async fn draw(&self, _run: &Run<'_>, _force: bool) -> bool {
        false
    }
}

/// Where the work runs.
pub enum Engine<'a> {
    Gpu(&'a Gpu),
    /// The CPU reference (no usable GPU): slower, same digests.
    Cpu,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub nickname: Option<String>,
    pub adapter: AdapterInfo,
    /// Stop after this many units (None: run until stopped).
    pub max_units: Option<u64>,
    /// Save a GPU unit's state to resume from at least this often (BOINC's default checkpoint
    /// period is 60 s), and more often only while saving takes at most 1% of the time: each
    /// save reads the whole state back from the device and writes it to the store.
    pub save_every_s: f64,
    /// Built-in kernels only, no scientist's package.
    pub builtin_only: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nickname: None,
            adapter: AdapterInfo::default(),
            max_units: None,
            save_every_s: 60.0,
            builtin_only: false,
        }
    }
}

/// A saved GPU checkpoint of an assignment.
#[derive(Serialize, Deserialize)]
struct Saved {
    segment: usize,
    done: u64,
    state: Vec<String>,
    checkpoints: Vec<Checkpoint>,
}

enum Flush {
    Done,
    Offline(String),
    Unauthorized,
}

struct Backoff(u64);

impl Backoff {
    fn next(&mut self) -> u64 {
        let s = self.0;
        self.0 = (self.0 * 2).min(60);
        s
    }
    fn reset(&mut self) {
        self.0 = 1;
    }
}

async fn sleep_s<H: Host>(host: &H, seconds: u64) {
    // In short naps, so pause and stop take effect quickly.
    let until = host.now_ms() + seconds as f64 * 1000.0;
    while host.now_ms() < until && !host.controls().stop {
        host.sleep_ms(250).await;
    }
}

async fn token<H: Host>(host: &H, opts: &Options) -> Result<String, String> {
    if let Some(t) = host.kv_get("token").await {
        return Ok(t);
    }
    let body = json!({ "nickname": opts.nickname }).to_string();
    let (status, text) = host
        .request("/api/v1/volunteers", None, Some(&body))
        .await?;
    if status != 201 {
        return Err(format!("registering: HTTP {status}: {text}"));
    }
    let r: RegisterResponse = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    host.kv_set("token", &r.token).await?;
    host.emit(Event::Registered {
        volunteer_id: r.volunteer_id,
    });
    Ok(r.token)
}

/// Checkpoint states of computed units, kept in memory until their report is acknowledged,
/// to answer a challenge (the coordinator recomputes the segment after one of them).
#[derive(Default)]
struct Kept {
    /// By assignment: a few at a time, so a list (a hash map's code is in no other part of
    /// the browser's download).
    states: Vec<(i64, States)>,
    bytes: usize,
}

impl Kept {
    /// At most this much state is kept over all unacknowledged reports (each unit's states
    /// are already at most `protocol::KEPT_STATE_BYTES`); beyond it, a challenge goes
    /// unanswered, which the coordinator counts as a failed check (without blacklisting).
    const MAX_BYTES: usize = 64 << 20;

    fn keep(&mut self, assignment: i64, states: States) {
        let size: usize = states
            .iter()
            .flat_map(|(_, s)| s.iter().map(Vec::len))
            .sum();
        if self.bytes + size <= Self::MAX_BYTES {
            self.take(assignment);
            self.bytes += size;
            self.states.push((assignment, states));
        }
    }

    fn take(&mut self, assignment: i64) -> States {
        let states = match self.states.iter().position(|(a, _)| *a == assignment) {
            Some(i) => self.states.swap_remove(i).1,
            None => Vec::new(),
        };
        self.bytes -= states
            .iter()
            .flat_map(|(_, s)| s.iter().map(Vec::len))
            .sum::<usize>();
        states
    }
}

/// Answers a challenge with the state at `step`, if it was kept.
async fn answer<H: Host>(host: &H, token: &str, assignment: i64, step: u64, kept: &mut Kept) {
    let states = kept.take(assignment);
    let Some((_, state)) = states.into_iter().find(|(s, _)| *s == step) else {
        return;
    };
    let body = ChallengeAnswer {
        step,
        state: state.iter().map(|b| crate::b64::encode(b)).collect(),
    };
    let Ok(body) = serde_json::to_string(&body) else {
        return;
    };
    if let Ok((status, text)) = host
        .request(
            &format!("/api/v1/challenges/{assignment}"),
            Some(token),
            Some(&body),
        )
        .await
        && status != 202
    {
        host.emit(Event::Error {
            message: format!("challenge answer rejected (HTTP {status}): {text}"),
        });
    }
}

/// Drops the kept states of the report stored under `pending/<id>`.
fn forget(kept: &mut Kept, key: &str) {
    if let Some(id) = key.strip_prefix("pending/").and_then(|id| id.parse().ok()) {
        kept.take(id);
    }
}

/// Sends every pending report; removes those the coordinator took or can never take.
async fn flush<H: Host>(host: &H, token: &str, kept: &mut Kept) -> Flush {
    for key in host.kv_keys("pending/").await {
        let Some(body) = host.kv_get(&key).await else {
            continue;
        };
        match host
            .request("/api/v1/results", Some(token), Some(&body))
            .await
        {
            Err(e) => return Flush::Offline(e),
            Ok((401, _)) => return Flush::Unauthorized,
            Ok((202, text)) => {
                host.kv_delete(&key).await;
                if let Ok(ack) = serde_json::from_str::<ReportAck>(&text) {
                    host.emit(Event::Reported {
                        assignment_id: ack.assignment_id,
                        replica_state: ack.replica_state,
                        unit_state: ack.unit_state,
                    });
                    match ack.challenge {
                        Some(c) => answer(host, token, ack.assignment_id, c.step, kept).await,
                        None => drop(kept.take(ack.assignment_id)),
                    }
                }
            }
            // Already stored (a retry after a lost reply), or gone: nothing more to do.
            Ok((409 | 404 | 403, _)) => {
                host.kv_delete(&key).await;
                forget(kept, &key);
            }
            Ok((status, text)) if status < 500 => {
                host.kv_delete(&key).await;
                forget(kept, &key);
                host.emit(Event::Error {
                    message: format!("report rejected (HTTP {status}): {text}"),
                });
            }
            Ok((status, _)) => return Flush::Offline(format!("coordinator answered {status}")),
        }
    }
    Flush::Done
}

async fn refresh_stats<H: Host>(host: &H, token: &str) {
    if let Ok((200, text)) = host
        .request("/api/v1/volunteers/me", Some(token), None)
        .await
        && let Ok(stats) = serde_json::from_str(&text)
    {
        host.emit(Event::Stats { stats });
    }
}

/// Runs until `max_units` are done or the host says stop; returns units computed.
pub async fn run<H: Host>(host: &H, engine: &Engine<'_>, opts: &Options) -> u64 {
    let mut backoff = Backoff(1);
    let mut kept = Kept::default();
    let mut done = 0u64;
    let mut was_paused = false;
    loop {
        let c = host.controls();
        if c.stop {
            return done;
        }
        if c.paused {
            if !was_paused {
                host.emit(Event::Paused);
                was_paused = true;
            }
            host.sleep_ms(250).await;
            continue;
        }
        was_paused = false;
        let tok = match token(host, opts).await {
            Ok(t) => t,
            Err(e) => {
                offline(host, e, &mut backoff).await;
                continue;
            }
        };
        match flush(host, &tok, &mut kept).await {
            Flush::Done => {}
            Flush::Offline(e) => {
                offline(host, e, &mut backoff).await;
                continue;
            }
            Flush::Unauthorized => {
                // The coordinator no longer knows this token (e.g. a fresh database).
                host.kv_delete("token").await;
                continue;
            }
        }
        if opts.max_units.is_some_and(|m| done >= m) {
            return done;
        }
        // Assignments held from before a restart come first (the coordinator will not hand
        // them out again); then new work.
        let mut held = Vec::new();
        for key in host.kv_keys("assignment/").await {
            match host
                .kv_get(&key)
                .await
                .map(|t| serde_json::from_str::<Assignment>(&t))
            {
                Some(Ok(a)) => held.push(a),
                _ => host.kv_delete(&key).await,
            }
        }
        let assignments = if held.is_empty() {
            // It holds nothing: any open assignment the coordinator has for it was lost on the
            // way (a dropped connection, a cleared store) and comes back first.
            let holding: [i64; 0] = [];
            // Packages run on GPUs only.
            let builtin_only = opts.builtin_only || matches!(engine, Engine::Cpu);
            let body = json!({ "max_units": 1, "adapter": opts.adapter, "holding": holding,
                               "builtin_only": builtin_only })
            .to_string();
            let work: WorkResponse =
                match host.request("/api/v1/work", Some(&tok), Some(&body)).await {
                    Err(e) => {
                        offline(host, e, &mut backoff).await;
                        continue;
                    }
                    Ok((401, _)) => {
                        host.kv_delete("token").await;
                        continue;
                    }
                    Ok((200, text)) => match serde_json::from_str(&text) {
                        Ok(w) => w,
                        Err(e) => {
                            offline(host, format!("bad work response: {e}"), &mut backoff).await;
                            continue;
                        }
                    },
                    Ok((status, text)) => {
                        offline(host, format!("HTTP {status}: {text}"), &mut backoff).await;
                        continue;
                    }
                };
            backoff.reset();
            if work.assignments.is_empty() {
                host.emit(Event::Idle {
                    retry_after_s: work.retry_after_s,
                });
                sleep_s(host, work.retry_after_s.max(1)).await;
                continue;
            }
            work.assignments
        } else {
            held
        };
        for a in &assignments {
            let a_key = format!("assignment/{}", a.assignment_id);
            if let Ok(text) = serde_json::to_string(a) {
                let _ = host.kv_set(&a_key, &text).await;
            }
            let Some((report, states)) = compute(host, engine, opts, a).await else {
                return done; // stopped mid-unit; it stays held, with its checkpoint
            };
            kept.keep(a.assignment_id, states);
            let text = serde_json::to_string(&report).unwrap_or_default();
            if let Err(e) = host
                .kv_set(&format!("pending/{}", a.assignment_id), &text)
                .await
            {
                host.emit(Event::Error {
                    message: format!("could not save the result: {e}"),
                });
            }
            host.kv_delete(&a_key).await;
            host.kv_delete(&format!("checkpoint/{}", a.assignment_id))
                .await;
            done += 1;
            if let Engine::Gpu(g) = engine
                && g.is_lost()
            {
                // Nothing more can run on it: say what happened and stop, once the
                // coordinator has the reports.
                let _ = flush(host, &tok, &mut kept).await;
                host.emit(Event::Error {
                    message: "the GPU was lost or is stuck; computing stopped (reload or restart to go on)".into(),
                });
                return done;
            }
        }
        if let Flush::Offline(e) = flush(host, &tok, &mut kept).await {
            offline(host, e, &mut backoff).await;
        }
        refresh_stats(host, &tok).await;
    }
}

async fn offline<H: Host>(host: &H, error: String, backoff: &mut Backoff) {
    let wait = backoff.next();
    host.emit(Event::Offline {
        error,
        retry_in_s: wait,
    });
    sleep_s(host, wait).await;
}

fn error_report(a: &Assignment, message: String) -> ResultReport {
    ResultReport {
        assignment_id: a.assignment_id,
        digest: None,
        checkpoints: Vec::new(),
        summary: Value::Null,
        output: None,
        error: Some(message),
        kernel_version: shaders::kernel_version(&a.kernel),
    }
}

/// The job of an assignment (or a verification job): a built-in kernel's, or a package's plan
/// with the package's files, fetched by hash (and checked against it) once and kept in the
/// store (IndexedDB in the browser, the data directory natively).
pub async fn job_of<H: Host>(
    host: &H,
    kernel: &str,
    params: &Value,
    package: Option<&PackageRun>,
) -> Result<Job, String> {
    let Some(run) = package else {
        return Job::new(kernel, params.clone()).map_err(|e| e.to_string());
    };
    let key = format!("package/{}", run.hash);
    let cached = host.kv_get(&key).await;
    let files = match cached.and_then(|t| PackageFiles::from_canonical(t.as_bytes(), &run.hash)) {
        Some(f) => f,
        None => {
            let (status, text) = host
                .request(&format!("/api/v1/kernels/{}", run.hash), None, None)
                .await?;
            let f = (status == 200)
                .then(|| PackageFiles::from_canonical(text.as_bytes(), &run.hash))
                .flatten()
                .ok_or(format!(
                    "fetching its files: HTTP {status}, or they do not hash to its name"
                ))?;
            let _ = host.kv_set(&key, &text).await;
            f
        }
    };
    Ok(Job::Package(Box::new(PackageJob::from_run(
        run,
        &files,
        params.clone(),
    )?)))
}

/// An error with the package it happened in named (whose code failed).
fn named(a: &Assignment, e: String) -> String {
    match &a.package {
        Some(p) => format!("kernel package {}@{} by {}: {e}", p.name, p.hash, p.author),
        None => e,
    }
}

/// The states at the latest checkpoints before the last that fit in
/// `protocol::KEPT_STATE_BYTES`, kept to answer a challenge.
type States = Vec<shaders::CheckpointState>;

/// Computes one assignment, keeping its checkpoint states; None if stopped before the end.
async fn compute<H: Host>(
    host: &H,
    engine: &Engine<'_>,
    opts: &Options,
    a: &Assignment,
) -> Option<(ResultReport, States)> {
    if a.package.is_some() && matches!(engine, Engine::Cpu) {
        let e = named(
            a,
            "packages run on a GPU; this client computes on the CPU".into(),
        );
        return Some((error_report(a, e), Vec::new()));
    }
    let job = match job_of(host, &a.kernel, &a.params, a.package.as_ref()).await {
        Ok(j) if j.version() == a.kernel_version => j,
        Ok(j) => {
            // A result of another version could never be compared: say so, compute nothing.
            let e = format!(
                "this client runs {} version {}, the unit needs version {}",
                a.kernel,
                j.version(),
                a.kernel_version
            );
            return Some((error_report(a, e), Vec::new()));
        }
        Err(e) => {
            let e = named(a, format!("cannot run: {e}"));
            return Some((error_report(a, e), Vec::new()));
        }
    };
    let mut states = Vec::new();
    let total = job.schedule().total;
    let started = host.now_ms();
    let ck_key = format!("checkpoint/{}", a.assignment_id);
    let result = match engine {
        Engine::Cpu => {
            host.emit(unit_event(a, total, 0));
            let id = a.assignment_id;
            job.run_cpu_keeping_states(1, &mut |done, total| {
                host.emit(Event::Progress {
                    assignment_id: id,
                    done,
                    total,
                })
            })
            .map(|(r, mut s)| {
                s.pop(); // the final state is the output's
                states = s;
                r
            })
            .map_err(|e| e.to_string())
        }
        Engine::Gpu(gpu) => {
            let saved: Option<Saved> = host
                .kv_get(&ck_key)
                .await
                .and_then(|s| serde_json::from_str(&s).ok());
            let resumed_at = saved.as_ref().map_or(0, |s| s.done);
            let resume = saved.and_then(|s| {
                let state: Result<Vec<Vec<u8>>, _> =
                    s.state.iter().map(|b| crate::b64::decode(b)).collect();
                Some(Resume {
                    segment: s.segment,
                    state: state.ok()?,
                    checkpoints: s.checkpoints,
                })
            });
            host.emit(unit_event(a, total, resumed_at));
            match gpu_run(
                host,
                gpu,
                &job,
                a.assignment_id,
                resume,
                (&ck_key, opts.save_every_s),
                &mut states,
            )
            .await
            {
                Some(r) => r,
                None => return None,
            }
        }
    };
    let report = match result {
        Ok(r) => {
            host.emit(Event::Computed {
                assignment_id: a.assignment_id,
                digest: r.digest.to_hex(),
                elapsed_s: (host.now_ms() - started) / 1000.0,
            });
            ResultReport {
                assignment_id: a.assignment_id,
                digest: Some(r.digest),
                checkpoints: r.checkpoints,
                summary: r.summary,
                output: Some(crate::b64::encode(&r.output)),
                error: None,
                kernel_version: job.version(),
            }
        }
        Err(e) => error_report(a, named(a, e)),
    };
    Some((report, states))
}

fn unit_event(a: &Assignment, total: u64, resumed_at: u64) -> Event {
    Event::Unit {
        assignment_id: a.assignment_id,
        unit_id: a.unit_id,
        kernel: a.kernel.clone(),
        params: a.params.clone(),
        total,
        resumed_at,
        batch: a.batch.clone(),
        package: a.package.as_ref().map(|p| PackageAbout {
            name: p.name.clone(),
            author: p.author.clone(),
            hash: p.hash.to_hex(),
            approved: p.approved,
        }),
    }
}

/// Runs on the GPU segment by segment: pause, duty cycle and resume points in between.
/// Checkpoint digests are taken on the device; the state crosses to the host only to be kept
/// for a challenge (the checkpoints whose states the coordinator may ask for), to be saved as a
/// resume point (see [`Options::save_every_s`]), and at the end.
async fn gpu_run<H: Host>(
    host: &H,
    gpu: &Gpu,
    job: &Job,
    id: i64,
    resume: Option<Resume>,
    save: (&str, f64),
    states: &mut States,
) -> Option<Result<shaders::RunResult, String>> {
    let (ck_key, save_every_s) = save;
    let mut run = match resume.and_then(|r| gpu.start(job, Some(r)).ok()) {
        Some(run) => run,
        None => match gpu.start(job, None) {
            Ok(run) => run,
            Err(e) => return Some(Err(e.to_string())),
        },
    };
    let segments = job.segment_count();
    // Checkpoints (0-based) whose states are kept: the latest before the last that fit.
    let before_last = (job.schedule().checkpoint_count() as usize).saturating_sub(1);
    let keep_from = before_last - protocol::kept_states(before_last, job.state_len());
    let mut saved_at = host.now_ms();
    // What the last save took; the first is made at the first segment's end.
    let mut save_cost_ms = 0.0f64;
    let mut drawn_any = false;
    loop {
        loop {
            let c = host.controls();
            if c.stop {
                return None;
            }
            if !c.paused {
                break;
            }
            host.sleep_ms(250).await;
        }
        let t0 = host.now_ms();
        let step = match run.step().await {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(e) => return Some(Err(e.to_string())),
        };
        host.emit(Event::Progress {
            assignment_id: id,
            done: step.done,
            total: step.total,
        });
        let edge = step.next_segment >= segments || !drawn_any;
        if host.draw(&run, edge).await {
            drawn_any = true;
            host.emit(Event::Frame {
                assignment_id: id,
                done: step.done,
                total: step.total,
            });
        }
        if step.next_segment < segments {
            let index = run.checkpoints_done().wrapping_sub(1);
            let keep = step.checkpoint.is_some() && index >= keep_from;
            let since = host.now_ms() - saved_at;
            let save = since >= (100.0 * save_cost_ms).min(save_every_s * 1000.0);
            if keep || save {
                let t_save = host.now_ms();
                let state = match run.state().await {
                    Ok(s) => s,
                    Err(e) => return Some(Err(e.to_string())),
                };
                if save {
                    saved_at = host.now_ms();
                    let saved = Saved {
                        segment: step.next_segment,
                        done: step.done,
                        state: state.iter().map(|b| crate::b64::encode(b)).collect(),
                        checkpoints: run.checkpoints().to_vec(),
                    };
                    if let Ok(text) = serde_json::to_string(&saved)
                        && host.kv_set(ck_key, &text).await.is_ok()
                    {
                        host.emit(Event::Saved {
                            assignment_id: id,
                            done: step.done,
                        });
                    }
                    save_cost_ms = host.now_ms() - t_save;
                }
                if keep {
                    states.push((step.done, state));
                    shaders::program::drop_oldest_states(states, 0);
                }
            }
        }
        // Duty cycle: rest so that work is `duty` of the time.
        let duty = host.controls().duty.clamp(0.05, 1.0);
        if duty < 1.0 {
            let worked = host.now_ms() - t0;
            host.sleep_ms((worked * (1.0 / duty - 1.0)) as u64).await;
        }
    }
    let out = match run.finish().await {
        Ok(out) => out,
        Err(e) => return Some(Err(e.to_string())),
    };
    Some(
        job.output(&out.state, out.checkpoints)
            .map_err(|e| e.to_string()),
    )
}
