//! The API end to end, in process: simulated volunteers (honest ones computing the CPU
//! reference, liars, colluders, vanishers) against the real router and store.
//!
//! This is also the backends' conformance suite: `QG_TEST_BACKEND=postgres` (with
//! `QG_TEST_DATABASE_URL` naming a server; `cargo xtask test` provides one) runs every test on a
//! throwaway PostgreSQL database instead of SQLite: lifecycle effects, limits, credibility,
//! ringers, challenges, backtracking, idempotent reports.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use coordinator::api::{hash_secret, new_secret, now};
use coordinator::engine::Engine;
use coordinator::server::{Config, FileConfig, app, load_log_key, state};
use coordinator::store::postgres::ScratchDatabase;
use http_body_util::BodyExt;
use protocol::Digest;
use serde_json::{Value, json};
use shaders::Job;
use std::collections::HashMap;
use std::sync::Arc;
use tower::ServiceExt;

/// The backend under test: SQLite in `dir`, or a scratch PostgreSQL database (dropped with
/// the guard) when `QG_TEST_BACKEND=postgres`.
fn open_engine(dir: &std::path::Path) -> (Engine, Option<ScratchDatabase>) {
    match std::env::var("QG_TEST_BACKEND").as_deref() {
        Ok("postgres") => {
            let server = std::env::var("QG_TEST_DATABASE_URL")
                .expect("QG_TEST_BACKEND=postgres needs QG_TEST_DATABASE_URL");
            let db = ScratchDatabase::create(&server, "api").unwrap();
            (Engine::postgres(&db.url).unwrap(), Some(db))
        }
        _ => (Engine::sqlite(&dir.join("qg.sqlite")).unwrap(), None),
    }
}

enum DbHandle {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

struct Harness {
    app: Router,
    store: Arc<Engine>,
    key: String,
    /// The log's signing key, as the coordinator loaded it.
    log_key: transparency::NoteKey,
    /// A second connection to the same database, for tests that tamper with it.
    db_url: DbHandle,
    // Dropped after the store: the scratch database goes once nothing uses it.
    _db: Option<ScratchDatabase>,
    _dir: tempfile::TempDir,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Honest,
    /// Returns a wrong output of its own (different for each liar).
    Liar(u8),
    /// Colluders all return the same wrong output.
    Colluder,
    /// Takes work and never reports.
    Vanisher,
}

struct Sim {
    token: String,
    kind: Kind,
}

impl Harness {
    fn new() -> Self {
        Self::with_witnesses(Vec::new())
    }

    /// A coordinator whose log accepts cosignatures from these witnesses.
    fn with_witnesses(witnesses: Vec<String>) -> Self {
        Self::build(witnesses, 64)
    }

    /// A coordinator with the default allowance of work in flight (2 for a new volunteer).
    fn with_default_allowance() -> Self {
        Self::build(Vec::new(), 2)
    }

    fn build(witnesses: Vec<String>, work_in_flight: u32) -> Self {
        // The conformance tests read counters right after changing them: no shared snapshot.
        Self::build_with(|cfg| {
            cfg.witnesses = witnesses;
            // The conformance tests hand out work in batches; the default allowance has its own.
            cfg.work_in_flight = work_in_flight;
            cfg.snapshot_max_age = std::time::Duration::ZERO;
        })
    }

    /// A coordinator with the defaults but what `tune` changes.
    fn build_with(tune: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::resolve(
            FileConfig::default(),
            None,
            Some(dir.path().to_path_buf()),
            None,
            Some(dir.path().to_path_buf()),
        );
        tune(&mut cfg);
        let (store, db) = open_engine(dir.path());
        let db_url = match &db {
            Some(d) => DbHandle::Postgres(d.url.clone()),
            None => DbHandle::Sqlite(dir.path().join("qg.sqlite")),
        };
        let store = Arc::new(store);
        let key = new_secret("qgk_");
        store
            .create_key("test", &hash_secret(&key), false, now())
            .unwrap();
        let app = app(state(store.clone(), &cfg).unwrap(), &cfg);
        let log_key = load_log_key(&cfg.log_key, &cfg.log_origin).unwrap();
        Self {
            app,
            store,
            key,
            log_key,
            db_url,
            _db: db,
            _dir: dir,
        }
    }

    /// Moves queued receipts into the log and signs a checkpoint, as the sequencer does;
    /// returns the log's size.
    fn seal(&self) -> u64 {
        self.store.sequence_log(&self.log_key, 4096, now()).unwrap();
        let note = self.store.log_checkpoint().unwrap().unwrap_or_default();
        note.lines().nth(1).map_or(0, |l| l.parse().unwrap())
    }

    /// Runs one statement on the database behind the coordinator's back.
    fn tamper(&self, sql: &str, blob: Option<Vec<u8>>) {
        match &self.db_url {
            DbHandle::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).unwrap();
                match blob {
                    Some(b) => c.execute(sql, [b]).unwrap(),
                    None => c.execute(sql, []).unwrap(),
                };
            }
            DbHandle::Postgres(url) => {
                let url = url.clone();
                let sql = sql.replace("?1", "$1");
                // The synchronous client runs its own runtime: off this one.
                std::thread::spawn(move || {
                    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                    match blob {
                        Some(b) => c.execute(&sql, &[&b]).unwrap(),
                        None => c.execute(&sql, &[]).unwrap(),
                    };
                })
                .join()
                .unwrap();
            }
        }
    }

    async fn call_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> (StatusCode, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b)
            }
            None => Body::empty(),
        };
        let resp = self
            .app
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, bytes.to_vec())
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let (status, bytes) = self.call_raw(method, path, token, body).await;
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, token, Some(body.to_string())).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call("GET", path, token, None).await
    }

    async fn volunteer(&self, kind: Kind) -> Sim {
        let (s, v) = self
            .post("/api/v1/volunteers", None, json!({"nickname": "sim"}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        Sim {
            token: v["token"].as_str().unwrap().to_owned(),
            kind,
        }
    }

    async fn batch(&self, kernel: &str, units: Vec<Value>, policy: Value) -> i64 {
        let (s, v) = self
            .post(
                "/api/v1/batches",
                Some(&self.key),
                json!({"kernel": kernel, "units": units, "policy": policy}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["batch_id"].as_i64().unwrap()
    }

    /// Answers the challenge of `assignment` with the state at `step`, as a client would.
    async fn answer(
        &self,
        token: &str,
        assignment: i64,
        step: u64,
        state: &[Vec<u8>],
    ) -> (StatusCode, Value) {
        let state: Vec<String> = state
            .iter()
            .map(|s| base64::engine::general_purpose::STANDARD.encode(s))
            .collect();
        self.post(
            &format!("/api/v1/challenges/{assignment}"),
            Some(token),
            json!({"step": step, "state": state}),
        )
        .await
    }

    /// Runs pending spot-checks the way the background pool does.
    fn run_spot_checks(&self) {
        let all = HashMap::new();
        for job in self
            .store
            .claim_spot_checks(1000, now(), 1, &all, usize::MAX)
            .unwrap()
        {
            let r = Job::new(&job.kernel, job.params)
                .unwrap()
                .run_cpu(1, &mut |_, _| {})
                .unwrap();
            self.store
                .spot_check_done(job.unit_id, &r.digest, &r.output, now())
                .unwrap();
        }
    }

    /// One round: every volunteer takes up to `max` assignments and handles them.
    async fn round(&self, sims: &[Sim], max: u32) -> usize {
        let mut taken = 0;
        for sim in sims {
            let (s, w) = self
                .post(
                    "/api/v1/work",
                    Some(&sim.token),
                    json!({"max_units": max, "adapter": {"name": "sim", "backend": "cpu"}}),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{w}");
            for a in w["assignments"].as_array().unwrap() {
                taken += 1;
                if sim.kind == Kind::Vanisher {
                    continue;
                }
                let report = report_for(a, sim.kind);
                let (s, ack) = self.post("/api/v1/results", Some(&sim.token), report).await;
                assert_eq!(s, StatusCode::ACCEPTED, "{ack}");
            }
        }
        taken
    }

    async fn run_to_completion(&self, batch: i64, sims: &[Sim], spot: bool) {
        for _ in 0..60 {
            if spot {
                self.run_spot_checks();
            }
            let taken = self.round(sims, 2).await;
            // Whatever vanishers hold is past its deadline.
            self.store.expire(now() + 100_000).unwrap();
            let (_, st) = self
                .get(&format!("/api/v1/batches/{batch}"), Some(&self.key))
                .await;
            if st["done"] == true {
                return;
            }
            assert!(taken > 0 || spot, "stuck: {st}");
        }
        panic!("batch {batch} did not finish");
    }
}

/// A report as a volunteer of `kind` would send it.
fn report_for(a: &Value, kind: Kind) -> Value {
    let job = Job::new(a["kernel"].as_str().unwrap(), a["params"].clone()).unwrap();
    let r = job.run_cpu(1, &mut |_, _| {}).unwrap();
    let mut output = r.output.clone();
    let mut checkpoints = r.checkpoints.clone();
    match kind {
        Kind::Liar(k) => output[0] ^= 1 + k,
        Kind::Colluder => output[0] ^= 0x80,
        _ => {}
    }
    if output != r.output {
        // A faulty device: its state diverges at the last checkpoint.
        if let Some(last) = checkpoints.last_mut() {
            last.digest = Digest::of_data(&output);
        }
    }
    json!({
        "assignment_id": a["assignment_id"],
        "digest": Digest::of_data(&output),
        "checkpoints": checkpoints,
        "summary": r.summary,
        "output": base64::engine::general_purpose::STANDARD.encode(&output),
        "kernel_version": a["kernel_version"],
    })
}

/// Units with four checkpoints (every two sweeps), for challenges.
fn checkpointed_units(n: u64) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"L": 16, "beta": 0.44, "sweeps": 8, "checkpoint_every": 2, "seed": i}))
        .collect()
}

/// The state at `step` of the CPU reference for an assignment.
fn state_at(a: &Value, step: u64) -> Vec<Vec<u8>> {
    let job = Job::new(a["kernel"].as_str().unwrap(), a["params"].clone()).unwrap();
    let (_, states) = job.run_cpu_keeping_states(1, &mut |_, _| {}).unwrap();
    states.into_iter().find(|(s, _)| *s == step).unwrap().1
}

fn ising_units(n: u64) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"L": 16, "beta": 0.3 + 0.02 * i as f64, "sweeps": 20, "seed": i + 1}))
        .collect()
}

fn reference_digests(units: &[Value]) -> Vec<Digest> {
    units
        .iter()
        .map(|p| {
            Job::new("ising2d", p.clone())
                .unwrap()
                .run_cpu(1, &mut |_, _| {})
                .unwrap()
                .digest
        })
        .collect()
}

async fn results(h: &Harness, batch: i64) -> Vec<Value> {
    let (s, v) = h
        .get(&format!("/api/v1/batches/{batch}/results"), Some(&h.key))
        .await;
    assert_eq!(s, StatusCode::OK);
    v["units"].as_array().unwrap().clone()
}

#[tokio::test]
async fn honest_liar_and_vanisher_every_unit_ends_with_the_reference_digest() {
    let h = Harness::new();
    let units = ising_units(8);
    let want = reference_digests(&units);
    let batch = h
        .batch("ising2d", units, json!({"spot_check_rate": 0.0}))
        .await;
    let sims = vec![
        h.volunteer(Kind::Honest).await,
        h.volunteer(Kind::Liar(0)).await,
        h.volunteer(Kind::Honest).await,
        h.volunteer(Kind::Vanisher).await,
        h.volunteer(Kind::Honest).await,
    ];
    h.run_to_completion(batch, &sims, false).await;
    let rows = results(&h, batch).await;
    assert_eq!(rows.len(), 8);
    for (row, want) in rows.iter().zip(&want) {
        assert_eq!(row["state"], "canonical", "{row}");
        assert_eq!(row["digest"], json!(want), "{row}");
        assert!(row["summary"]["e"].is_number());
    }
    // Every replica of the liar is invalid, every one of the vanisher no-reply.
    for row in &rows {
        let (_, prov) = h
            .get(&format!("/api/v1/units/{}", row["unit_id"]), Some(&h.key))
            .await;
        for r in prov["replicas"].as_array().unwrap() {
            let digest_ok = r["digest"] == row["digest"];
            match r["state"].as_str().unwrap() {
                "valid" => assert!(digest_ok),
                "invalid" => {
                    assert!(!digest_ok);
                    // Located at the faulty device's last checkpoint, the end of the run.
                    assert_eq!(r["diverged_at_step"], 20, "{r}");
                }
                "no_reply" | "in_progress" | "success" => {}
                s => panic!("unexpected state {s}"),
            }
        }
        assert!(
            prov["reproduce"]
                .as_str()
                .unwrap()
                .contains("--backend cpu")
        );
    }
    let (_, status) = h.get("/api/v1/status", None).await;
    assert_eq!(status["units"]["canonical"], 8);
    assert!(
        status["replicas"]["invalid"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert!(
        status["replicas"]["no_reply"].as_u64().unwrap() >= 1,
        "{status}"
    );
}

#[tokio::test]
async fn units_too_costly_to_recompute_are_not_spot_checked_and_submission_says_so() {
    let h = Harness::new();
    let mut units = ising_units(2);
    // 4096² spins × 10⁸ sweeps: months of CPU, far over the default cap.
    units.push(json!({"L": 4096, "beta": 0.4, "sweeps": 100_000_000, "measure_every": 1_000_000, "seed": 9}));
    let body = json!({"kernel": "ising2d", "units": units, "policy": {"spot_check_rate": 1.0}});
    let (s, v) = h.post("/api/v1/batches", Some(&h.key), body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["units"], 3, "{v}");
    assert_eq!(v["spot_checks"], 2, "{v}");
    assert_eq!(v["too_costly_to_recompute"], 1, "{v}");
    let note = v["verification"].as_str().unwrap();
    assert!(
        note.contains("1 units exceed the recomputation cap"),
        "{note}"
    );
    assert!(note.contains("quorum alone"), "{note}");
    // Only the two cheap units are queued for the coordinator.
    let all = HashMap::new();
    let jobs = h
        .store
        .claim_spot_checks(10, now(), 60, &all, usize::MAX)
        .unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|j| j.params["L"] == 16));
    // With challenges asked for, the note says those verify the costly unit.
    let units = vec![
        json!({"L": 4096, "beta": 0.4, "sweeps": 100_000_000, "measure_every": 1_000_000, "seed": 9}),
    ];
    let body = json!({"kernel": "ising2d", "units": units,
                      "policy": {"spot_check_rate": 1.0, "challenge_rate": 0.5}});
    let (_, v) = h.post("/api/v1/batches", Some(&h.key), body).await;
    assert_eq!(v["spot_checks"], 0, "{v}");
    assert!(
        v["verification"]
            .as_str()
            .unwrap()
            .contains("quorum and challenges"),
        "{v}"
    );
    // The spec dry run says it before anything is submitted.
    let spec = "kernel = \"ising2d\"\nseeds = 2\n[params]\nL = 4096\nbeta = 0.4\nsweeps = 100000000\nmeasure_every = 1000000\n";
    let (s, v) = h
        .call("POST", "/api/v1/specs", Some(&h.key), Some(spec.into()))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["too_costly_to_recompute"], 2, "{v}");
}

#[tokio::test]
async fn spot_checks_are_taken_fairly_across_batches() {
    let h = Harness::new();
    let a = h
        .batch("ising2d", ising_units(4), json!({"spot_check_rate": 1.0}))
        .await;
    let b = h
        .batch("ising2d", ising_units(2), json!({"spot_check_rate": 1.0}))
        .await;
    let all = HashMap::new();
    // Round-robin: the first two jobs are one from each batch, though A's units come first.
    let jobs = h
        .store
        .claim_spot_checks(2, now(), 60, &all, usize::MAX)
        .unwrap();
    let batches: Vec<i64> = jobs.iter().map(|j| j.batch_id).collect();
    assert_eq!(batches, vec![a, b]);
    // A batch already holding its share of workers gets none; the other batch gets its turn.
    let running = HashMap::from([(a, 1usize)]);
    let jobs = h
        .store
        .claim_spot_checks(2, now(), 60, &running, 1)
        .unwrap();
    let batches: Vec<i64> = jobs.iter().map(|j| j.batch_id).collect();
    assert_eq!(batches, vec![b]);
    // Claimed jobs are nobody else's until their claim runs out.
    let rest = h
        .store
        .claim_spot_checks(10, now(), 60, &all, usize::MAX)
        .unwrap();
    assert_eq!(rest.len(), 3, "A's three other units");
    assert!(rest.iter().all(|j| j.batch_id == a));
}

#[tokio::test]
async fn public_reads_share_one_snapshot_per_tick() {
    let h = Harness::build_with(|cfg| cfg.work_in_flight = 64);
    let computed = |m: &Value| -> u64 {
        let m = m.as_str().unwrap();
        let line = m
            .lines()
            .find(|l| l.starts_with("qg_snapshots_total "))
            .unwrap();
        line.split(' ').nth(1).unwrap().parse().unwrap()
    };
    let (_, before) = h.get("/metrics", None).await;
    let base = computed(&before);
    // Fifty readers at once within a tick: one snapshot between them.
    let reads = (0..50).map(|_| h.get("/api/v1/status", None));
    let all = futures_util::future::join_all(reads).await;
    assert!(
        all.iter()
            .all(|(s, v)| *s == StatusCode::OK && *v == all[0].1)
    );
    let (_, m) = h.get("/metrics", None).await;
    assert_eq!(computed(&m), base, "the status read by /metrics was reused");
    // A change shows once the tick has passed.
    h.batch("ising2d", ising_units(3), json!({"spot_check_rate": 0.0}))
        .await;
    let (_, st) = h.get("/api/v1/status", None).await;
    assert_eq!(st["batches"], 0, "still the tick's snapshot: {st}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (_, st) = h.get("/api/v1/status", None).await;
    assert_eq!(st["batches"], 1, "{st}");
    assert_eq!(st["units"]["unsent"], 3, "{st}");
}

#[tokio::test]
async fn each_key_has_a_quota_of_open_units_and_of_submissions() {
    let h = Harness::build_with(|cfg| {
        cfg.key_open_units = 5;
        cfg.batches_per_minute_per_key = 1.0;
        cfg.snapshot_max_age = std::time::Duration::ZERO;
    });
    h.batch("ising2d", ising_units(3), json!({})).await;
    // Two more would make 5: allowed; then the key is at its quota.
    h.batch("ising2d", ising_units(2), json!({})).await;
    let (_, before) = h.get("/api/v1/status", None).await;
    let body = json!({"kernel": "ising2d", "units": ising_units(1)});
    let (s, v) = h.post("/api/v1/batches", Some(&h.key), body.clone()).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["field"], "units", "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("at most 5 units"),
        "{v}"
    );
    let (_, after) = h.get("/api/v1/status", None).await;
    assert_eq!(before, after, "a refused batch stores nothing");
    // Another key has its own quota; its fourth submission at once is over the rate (burst 3).
    let other = new_secret("qgk_");
    h.store
        .create_key("other", &hash_secret(&other), false, now())
        .unwrap();
    for _ in 0..3 {
        let (s, v) = h.post("/api/v1/batches", Some(&other), body.clone()).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/batches")
        .header("authorization", format!("Bearer {other}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
}

#[tokio::test]
async fn a_batch_says_what_it_is_for_to_its_volunteers() {
    let h = Harness::new();
    let about = "Where a magnet loses its order.\nFor Ada's thesis.";
    // A description that is not plain text is refused, naming the field; nothing is created.
    let (s, v) = h
        .post(
            "/api/v1/batches",
            Some(&h.key),
            json!({"kernel": "ising2d", "units": ising_units(1), "description": "bell\u{7}"}),
        )
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("description")),
        "{v}"
    );
    assert_eq!(h.store.status().unwrap().batches, 0);
    // A spec's description is checked and returned by the dry run.
    let spec = format!(
        "name = \"magnet\"\ndescription = {about:?}\nkernel = \"ising2d\"\n[params]\nL = 16\nsweeps = 5\nbeta = 0.4\n"
    );
    let (s, v) = h
        .call("POST", "/api/v1/specs", Some(&h.key), Some(spec))
        .await;
    assert_eq!(
        (s, v["description"].as_str()),
        (StatusCode::OK, Some(about)),
        "{v}"
    );
    let (s, b) = h
        .post(
            "/api/v1/batches",
            Some(&h.key),
            json!({"name": "magnet", "kernel": "ising2d", "units": ising_units(2),
                   "description": format!("  {about}  ")}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let id = b["batch_id"].as_i64().unwrap();
    let (_, st) = h.get(&format!("/api/v1/batches/{id}"), Some(&h.key)).await;
    assert_eq!(st["description"], about, "{st}");
    // The volunteer computing it is told its name and description with the work.
    let v = h.volunteer(Kind::Honest).await;
    let (_, w) = h
        .post("/api/v1/work", Some(&v.token), json!({"max_units": 1}))
        .await;
    assert_eq!(
        w["assignments"][0]["batch"],
        json!({"id": id, "name": "magnet", "description": about}),
        "{w}"
    );
}

#[tokio::test]
async fn assignments_lost_on_the_way_are_sent_again_to_a_client_that_holds_none() {
    let h = Harness::with_default_allowance();
    h.batch("ising2d", ising_units(4), json!({"spot_check_rate": 0.0}))
        .await;
    let v = h.volunteer(Kind::Honest).await;
    // The answer to this request never reaches the client.
    let (_, lost) = h
        .post("/api/v1/work", Some(&v.token), json!({"max_units": 1}))
        .await;
    let lost = lost["assignments"][0].clone();
    // Asking again saying it holds nothing: the lost one comes back, the same assignment.
    let (s, w) = h
        .post(
            "/api/v1/work",
            Some(&v.token),
            json!({"max_units": 1, "holding": []}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{w}");
    assert_eq!(w["assignments"], json!([lost]), "{w}");
    // Saying it holds it: new work instead (its allowance of two has room for one more).
    let id = lost["assignment_id"].as_i64().unwrap();
    let (_, w) = h
        .post(
            "/api/v1/work",
            Some(&v.token),
            json!({"max_units": 2, "holding": [id]}),
        )
        .await;
    let got = w["assignments"].as_array().unwrap();
    assert_eq!(got.len(), 1, "{w}");
    assert_ne!(got[0]["assignment_id"], lost["assignment_id"]);
    // Reported, it is not resent; a client that does not say what it holds gets no resends.
    let r = report_for(&lost, Kind::Honest);
    let (s, _) = h.post("/api/v1/results", Some(&v.token), r).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (_, w) = h
        .post(
            "/api/v1/work",
            Some(&v.token),
            json!({"max_units": 1, "holding": []}),
        )
        .await;
    assert_eq!(
        w["assignments"][0]["assignment_id"], got[0]["assignment_id"],
        "{w}"
    );
    let (_, w) = h
        .post("/api/v1/work", Some(&v.token), json!({"max_units": 1}))
        .await;
    let ids: Vec<&Value> = w["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["assignment_id"])
        .collect();
    assert!(!ids.contains(&&got[0]["assignment_id"]), "{w}");
    let (s, v2) = h
        .post(
            "/api/v1/work",
            Some(&v.token),
            json!({"max_units": 1, "holding": vec![1; 65]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v2["field"], "holding");
}

#[tokio::test]
async fn a_lone_liar_is_caught_by_the_spot_check() {
    let h = Harness::new();
    let units = ising_units(3);
    let want = reference_digests(&units);
    // One replica per unit: without the spot-check the liar's answer would be accepted.
    let batch = h
        .batch(
            "ising2d",
            units,
            json!({"min_quorum": 1, "target_results": 1, "spot_check_rate": 1.0}),
        )
        .await;
    let liar = h.volunteer(Kind::Liar(3)).await;
    h.run_spot_checks();
    let (_, w) = h
        .post("/api/v1/work", Some(&liar.token), json!({"max_units": 3}))
        .await;
    let assignments = w["assignments"].as_array().unwrap().clone();
    assert_eq!(assignments.len(), 3);
    // The first lie is caught at once: the liar is blacklisted, its other reports refused.
    let statuses: Vec<StatusCode> = {
        let mut v = Vec::new();
        for a in &assignments {
            v.push(
                h.post(
                    "/api/v1/results",
                    Some(&liar.token),
                    report_for(a, liar.kind),
                )
                .await
                .0,
            );
        }
        v
    };
    assert_eq!(
        statuses,
        vec![
            StatusCode::ACCEPTED,
            StatusCode::FORBIDDEN,
            StatusCode::FORBIDDEN
        ]
    );
    for row in results(&h, batch).await {
        assert_ne!(row["state"], "canonical", "a lie was accepted: {row}");
    }
    let honest = h.volunteer(Kind::Honest).await;
    h.run_to_completion(batch, &[honest], true).await;
    for (row, want) in results(&h, batch).await.iter().zip(&want) {
        assert_eq!(row["digest"], json!(want));
        let (_, prov) = h
            .get(&format!("/api/v1/units/{}", row["unit_id"]), Some(&h.key))
            .await;
        assert_eq!(prov["spot_check"]["passed"], true);
        assert_eq!(prov["spot_check"]["expected_digest"], json!(want));
        let states: Vec<&str> = prov["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["state"].as_str().unwrap())
            .collect();
        // The lie is invalid; work the liar still held was reissued when it was caught.
        assert!(
            states == ["invalid", "valid"] || states == ["error", "valid"],
            "{states:?}"
        );
    }
    let (_, me) = h.get("/api/v1/volunteers/me", Some(&liar.token)).await;
    assert!(me["error"].as_str().unwrap().contains("blocked"), "{me}");
}

#[tokio::test]
async fn colluders_agreeing_on_a_wrong_answer_are_overruled_by_the_spot_check() {
    let h = Harness::new();
    let units = ising_units(2);
    let want = reference_digests(&units);
    let batch = h
        .batch("ising2d", units, json!({"spot_check_rate": 1.0}))
        .await;
    let colluders = vec![
        h.volunteer(Kind::Colluder).await,
        h.volunteer(Kind::Colluder).await,
    ];
    h.round(&colluders, 2).await;
    // Quorum reached by the colluders, but the coordinator's own answer is still pending.
    for row in results(&h, batch).await {
        assert_eq!(row["state"], "needs_validation", "{row}");
    }
    let honest = vec![
        h.volunteer(Kind::Honest).await,
        h.volunteer(Kind::Honest).await,
    ];
    h.run_to_completion(batch, &honest, true).await;
    for (row, want) in results(&h, batch).await.iter().zip(&want) {
        assert_eq!(row["state"], "canonical");
        assert_eq!(row["digest"], json!(want));
    }
}

#[tokio::test]
async fn float_kernel_replicas_agree_within_tolerance_not_by_digest() {
    let h = Harness::new();
    let params =
        json!({"n": 64, "density": 0.5, "temperature": 1.0, "dt": 0.005, "steps": 20, "seed": 1});
    let batch = h
        .batch(
            "lj_md",
            vec![params.clone()],
            json!({"spot_check_rate": 0.0}),
        )
        .await;
    let a = h.volunteer(Kind::Honest).await;
    let b = h.volunteer(Kind::Honest).await;
    let (_, w) = h
        .post("/api/v1/work", Some(&a.token), json!({"max_units": 1}))
        .await;
    let (s, _) = h
        .post(
            "/api/v1/results",
            Some(&a.token),
            report_for(&w["assignments"][0], Kind::Honest),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    // B's output differs in the last bit of one kinetic energy: a different digest, same physics.
    let (_, w) = h
        .post("/api/v1/work", Some(&b.token), json!({"max_units": 1}))
        .await;
    let mut report = report_for(&w["assignments"][0], Kind::Honest);
    let mut out = base64::engine::general_purpose::STANDARD
        .decode(report["output"].as_str().unwrap())
        .unwrap();
    out[0] ^= 1;
    report["output"] = json!(base64::engine::general_purpose::STANDARD.encode(&out));
    report["digest"] = json!(Digest::of_data(&out));
    let (s, ack) = h.post("/api/v1/results", Some(&b.token), report).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{ack}");
    assert_eq!(ack["unit_state"], "canonical");
    assert_eq!(ack["replica_state"], "valid");
    let rows = results(&h, batch).await;
    assert_eq!(rows[0]["state"], "canonical");
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let h = Harness::new();
    let batch = h
        .batch("ising2d", ising_units(2), json!({"spot_check_rate": 0.0}))
        .await;
    let a = h.volunteer(Kind::Honest).await;
    let b = h.volunteer(Kind::Honest).await;
    let (_, w) = h
        .post("/api/v1/work", Some(&a.token), json!({"max_units": 1}))
        .await;
    let assignment = w["assignments"][0].clone();
    let good = report_for(&assignment, Kind::Honest);

    let snapshot = |h: &Harness| {
        let s = h.store.status().unwrap();
        let p = h
            .store
            .unit_provenance(assignment["unit_id"].as_i64().unwrap(), None)
            .unwrap();
        (
            s,
            p.state,
            p.replicas
                .iter()
                .map(|r| (r.state, r.digest))
                .collect::<Vec<_>>(),
        )
    };
    let before = snapshot(&h);

    let mut wrong_len = good.clone();
    wrong_len["output"] = json!(base64::engine::general_purpose::STANDARD.encode([1u8, 2, 3]));
    let mut wrong_digest = good.clone();
    wrong_digest["digest"] = json!(Digest::of(b"nope"));
    let mut unknown = good.clone();
    unknown["assignment_id"] = json!(999_999);
    let mut both = good.clone();
    both["error"] = json!("oops");
    // A result of kernel version 1 (before the data digest and the byte-spin layout).
    let mut old_version = good.clone();
    old_version["kernel_version"] = json!(1);
    let mut bad_cps = good.clone();
    bad_cps["checkpoints"] =
        json!([{"step": 5, "digest": Digest::of(b"a")}, {"step": 5, "digest": Digest::of(b"a")}]);
    // One checkpoint at the last step: a challenge of it would recompute the whole unit.
    let mut lone_cp = good.clone();
    let last = good["checkpoints"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(good["checkpoints"].as_array().unwrap().len() > 1);
    lone_cp["checkpoints"] = json!([last]);

    // (what, token, body, expected status, field named)
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        String,
        StatusCode,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            Some(&a.token),
            "{\"assignment_id\": ".into(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "no token",
            None,
            good.to_string(),
            StatusCode::UNAUTHORIZED,
            None,
        ),
        (
            "wrong token",
            Some("qgv_nope"),
            good.to_string(),
            StatusCode::UNAUTHORIZED,
            None,
        ),
        (
            "unknown assignment",
            Some(&a.token),
            unknown.to_string(),
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            "someone else's assignment",
            Some(&b.token),
            good.to_string(),
            StatusCode::FORBIDDEN,
            None,
        ),
        (
            "wrong output length",
            Some(&a.token),
            wrong_len.to_string(),
            StatusCode::BAD_REQUEST,
            Some("output"),
        ),
        (
            "digest mismatch",
            Some(&a.token),
            wrong_digest.to_string(),
            StatusCode::BAD_REQUEST,
            Some("digest"),
        ),
        (
            "error and output",
            Some(&a.token),
            both.to_string(),
            StatusCode::BAD_REQUEST,
            Some("error"),
        ),
        (
            "another kernel version",
            Some(&a.token),
            old_version.to_string(),
            StatusCode::CONFLICT,
            Some("kernel_version"),
        ),
        (
            "bad checkpoints",
            Some(&a.token),
            bad_cps.to_string(),
            StatusCode::BAD_REQUEST,
            Some("checkpoints"),
        ),
        (
            "a lone checkpoint at the last step",
            Some(&a.token),
            lone_cp.to_string(),
            StatusCode::BAD_REQUEST,
            Some("checkpoints"),
        ),
        (
            "not base64",
            Some(&a.token),
            {
                let mut r = good.clone();
                r["output"] = json!("***");
                r.to_string()
            },
            StatusCode::BAD_REQUEST,
            Some("output"),
        ),
    ];
    for (what, token, body, status, field) in cases {
        let (s, v) = h.call("POST", "/api/v1/results", token, Some(body)).await;
        assert_eq!(s, status, "{what}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: not a JSON error: {v}"
        );
        if let Some(f) = field {
            assert_eq!(v["field"], f, "{what}: {v}");
        }
        assert_eq!(snapshot(&h), before, "{what} changed state");
    }

    // The good report is accepted once; a second report of the same replica conflicts.
    let (s, _) = h
        .post("/api/v1/results", Some(&a.token), good.clone())
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let after_first = snapshot(&h);
    let (s, v) = h
        .post("/api/v1/results", Some(&a.token), good.clone())
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(snapshot(&h), after_first);

    // Work requests and batches.
    let (s, v) = h
        .post("/api/v1/work", Some(&a.token), json!({"max_units": 0}))
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("max_units"))
    );
    let (s, v) = h
        .post(
            "/api/v1/work",
            Some(&a.token),
            json!({"max_units": 1, "extra": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // Adapter fields are bounded at the edge: they name a class the dashboard lists. A work
    // request is small: 4 MiB of adapter name is refused before it is decoded.
    let before = snapshot(&h);
    let (s, v) = h
        .post(
            "/api/v1/work",
            Some(&a.token),
            json!({"max_units": 1, "adapter": {"name": "x".repeat(4 << 20)}}),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].as_str().is_some(), "{v}");
    for (adapter, field) in [
        (json!({"name": "x".repeat(129)}), "adapter.name"),
        (json!({"vendor": "v".repeat(129)}), "adapter.vendor"),
        (json!({"client": "qg\u{7}"}), "adapter.client"),
    ] {
        let (s, v) = h
            .post(
                "/api/v1/work",
                Some(&a.token),
                json!({"max_units": 1, "adapter": adapter}),
            )
            .await;
        assert_eq!(
            (s, v["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{v}"
        );
    }
    assert_eq!(snapshot(&h), before, "a refused adapter changed state");
    let batches_before = h.store.status().unwrap().batches;
    for (body, field) in [
        (
            json!({"kernel": "ising2d", "units": [{"L": 16, "beta": 0.3, "sweeps": 5, "seed": 1}, {"L": 15, "beta": 0.3, "sweeps": 5, "seed": 1}]}),
            "units[1].L",
        ),
        (json!({"kernel": "nbody", "units": [{}]}), "kernel"),
        // An output no report could carry (a per-sweep series of 10^8 sweeps: 800 MB).
        (
            json!({"kernel": "ising2d", "units": [{"L": 16, "beta": 0.3, "sweeps": 5, "seed": 1}, {"L": 16, "beta": 0.4, "sweeps": 100_000_000, "seed": 1}]}),
            "units[1]",
        ),
        (json!({"kernel": "ising2d", "units": []}), "units"),
        (
            json!({"kernel": "ising2d", "units": ising_units(1), "policy": {"min_quorum": 3, "target_results": 2}}),
            "policy.target_results",
        ),
        (
            json!({"kernel": "ising2d", "units": ising_units(1), "policy": {"spot_check_rate": 2.0}}),
            "policy.spot_check_rate",
        ),
    ] {
        let (s, v) = h.post("/api/v1/batches", Some(&h.key), body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["field"], field, "{v}");
    }
    let (s, _) = h
        .post(
            "/api/v1/batches",
            Some("qgk_wrong"),
            json!({"kernel": "ising2d", "units": ising_units(1)}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h.store.status().unwrap().batches, batches_before);
    let (s, v) = h
        .get(
            &format!("/api/v1/batches/{batch}/results?format=xml"),
            Some(&h.key),
        )
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("format"))
    );
    let (s, _) = h.get("/api/v1/batches/424242", Some(&h.key)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let h = Harness::new();
    let a = h.volunteer(Kind::Honest).await;
    let big = format!(
        "{{\"assignment_id\": 1, \"output\": \"{}\"}}",
        "A".repeat(33 << 20)
    );
    let (s, v) = h
        .call("POST", "/api/v1/results", Some(&a.token), Some(big))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].is_string());
}

#[tokio::test]
async fn batched_reports_are_judged_item_by_item() {
    let h = Harness::new();
    h.batch("ising2d", ising_units(3), json!({"spot_check_rate": 0.0}))
        .await;
    let a = h.volunteer(Kind::Honest).await;
    let (_, w) = h
        .post("/api/v1/work", Some(&a.token), json!({"max_units": 3}))
        .await;
    let items: Vec<Value> = w["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| report_for(x, Kind::Honest))
        .collect();
    let mut bad = items[1].clone();
    bad["digest"] = json!(Digest::of(b"x"));
    let (s, v) = h
        .post(
            "/api/v1/results",
            Some(&a.token),
            json!([items[0], bad, items[2]]),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let statuses: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![202, 400, 202]);
    assert_eq!(v[1]["error"]["field"], "digest");
    assert_eq!(h.store.status().unwrap().replicas["success"], 2);
}

#[tokio::test]
async fn a_volunteer_never_gets_two_replicas_of_one_unit() {
    let h = Harness::new();
    h.batch(
        "ising2d",
        ising_units(3),
        json!({"spot_check_rate": 0.0, "min_quorum": 3}),
    )
    .await;
    let a = h.volunteer(Kind::Honest).await;
    let (_, w) = h
        .post("/api/v1/work", Some(&a.token), json!({"max_units": 64}))
        .await;
    let units: Vec<i64> = w["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["unit_id"].as_i64().unwrap())
        .collect();
    assert_eq!(units.len(), 3, "one replica of each of the 3 units");
    let (_, w) = h
        .post("/api/v1/work", Some(&a.token), json!({"max_units": 64}))
        .await;
    assert!(w["assignments"].as_array().unwrap().is_empty());
    assert!(w["retry_after_s"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn scientists_see_only_their_own_batches_and_csv_has_every_unit() {
    let h = Harness::new();
    let batch = h
        .batch("ising2d", ising_units(2), json!({"spot_check_rate": 0.0}))
        .await;
    let other = new_secret("qgk_");
    h.store
        .create_key("other", &hash_secret(&other), false, now())
        .unwrap();
    let op = new_secret("qgk_");
    h.store
        .create_key("ops", &hash_secret(&op), true, now())
        .unwrap();
    let (s, _) = h
        .get(&format!("/api/v1/batches/{batch}"), Some(&other))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h.get(&format!("/api/v1/batches/{batch}"), Some(&op)).await;
    assert_eq!(s, StatusCode::OK);
    // Another tenant's unit answers exactly as a unit that does not exist: ids cannot be probed.
    let (_, st) = h
        .get(&format!("/api/v1/batches/{batch}"), Some(&h.key))
        .await;
    let (_, res) = h
        .get(&format!("/api/v1/batches/{batch}/results"), Some(&h.key))
        .await;
    let unit = res["units"][0]["unit_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("{st} {res}"));
    let foreign = h.get(&format!("/api/v1/units/{unit}"), Some(&other)).await;
    let missing = h.get("/api/v1/units/987654321", Some(&other)).await;
    assert_eq!(foreign.0, StatusCode::NOT_FOUND);
    assert_eq!(foreign, missing);
    let sims = vec![
        h.volunteer(Kind::Honest).await,
        h.volunteer(Kind::Honest).await,
    ];
    h.run_to_completion(batch, &sims, false).await;
    let (s, csv) = h
        .get(
            &format!("/api/v1/batches/{batch}/results?format=csv"),
            Some(&h.key),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let csv = csv.as_str().unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines[0].starts_with("unit_id,state,digest,")
            && lines[0].contains(",beta,")
            && lines[0].contains(",abs_m,")
    );
    assert!(lines[1].contains(",canonical,"));
}

#[tokio::test]
async fn the_openapi_document_covers_every_route() {
    let h = Harness::new();
    let (s, doc) = h.get("/api/v1/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = [
        ("POST", "/api/v1/volunteers"),
        ("POST", "/api/v1/work"),
        ("POST", "/api/v1/results"),
        ("POST", "/api/v1/batches"),
        ("GET", "/api/v1/batches/{id}"),
        ("GET", "/api/v1/batches/{id}/results"),
        ("GET", "/api/v1/units/{id}"),
        ("GET", "/api/v1/status"),
        ("GET", "/api/v1/kernels"),
        ("POST", "/api/v1/kernels"),
        ("GET", "/api/v1/kernels/{hash}"),
        ("POST", "/api/v1/kernels/{hash}/approve"),
        ("POST", "/api/v1/kernels/{hash}/suspend"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/api/v1/volunteers/me"),
        ("POST", "/api/v1/volunteers/me"),
        ("GET", "/api/v1/leaderboard"),
        ("GET", "/api/v1/batches"),
        ("GET", "/api/v1/batches/{id}/aggregate"),
        ("POST", "/api/v1/specs"),
        ("GET", "/api/v1/dashboard"),
        ("GET", "/api/v1/dashboard/events"),
        ("POST", "/api/v1/dashboard/ticket"),
        ("GET", "/metrics"),
        ("POST", "/api/v1/challenges/{id}"),
        ("POST", "/api/v1/verifier/work"),
        ("POST", "/api/v1/verifier/results"),
        ("GET", "/api/v1/log"),
        ("GET", "/api/v1/log/consistency"),
        ("POST", "/api/v1/log/cosignatures"),
        ("GET", "/api/v1/batches/{id}/proofs"),
        ("POST", "/api/v1/batches/{id}/cancel"),
        ("GET", "/log/checkpoint"),
        ("GET", "/log/tile/{path}"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    expected.sort();
    assert_eq!(documented, expected);
    // Every documented route is served by the API (a JSON answer, not the static fallback).
    for (method, path) in &documented {
        let (s, v) = h
            .call(
                method,
                &path.replace("{id}", "1").replace("{hash}", "00"),
                None,
                None,
            )
            .await;
        if path == "/metrics" {
            assert!(v.as_str().is_some_and(|t| t.contains("qg_units")), "{s}");
            continue;
        }
        assert!(v.is_object(), "{method} {path}: {s} {v}");
    }
    let (s, _) = h.get("/api/v1/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (m, _) in &documented {
        *counts.entry(m.as_str()).or_default() += 1;
    }
    assert_eq!(counts["GET"], 19);
}

#[tokio::test]
async fn volunteers_see_their_credit_rank_and_the_leaderboard() {
    let h = Harness::new();
    let batch = h
        .batch("ising2d", ising_units(2), json!({"spot_check_rate": 0.0}))
        .await;
    let honest = vec![
        h.volunteer(Kind::Honest).await,
        h.volunteer(Kind::Honest).await,
    ];
    let liar = h.volunteer(Kind::Liar(0)).await;
    let (s, v) = h
        .post(
            "/api/v1/volunteers/me",
            Some(&honest[0].token),
            json!({"nickname": "  Ada  "}),
        )
        .await;
    assert_eq!((s, v["nickname"].as_str()), (StatusCode::OK, Some("Ada")));
    let (s, v) = h
        .post(
            "/api/v1/volunteers/me",
            Some(&honest[0].token),
            json!({"nickname": "x".repeat(41)}),
        )
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("nickname"))
    );
    h.round(std::slice::from_ref(&liar), 2).await;
    h.run_to_completion(batch, &honest, false).await;
    let (_, me) = h.get("/api/v1/volunteers/me", Some(&honest[0].token)).await;
    assert_eq!(me["nickname"], "Ada");
    assert!(me["valid"].as_u64().unwrap() >= 1, "{me}");
    assert!(me["credit"].as_f64().unwrap() > 0.0);
    assert_eq!(me["invalid"], 0);
    let (_, lie) = h.get("/api/v1/volunteers/me", Some(&liar.token)).await;
    assert_eq!(lie["credit"], 0.0, "no credit for invalid replicas: {lie}");
    assert!(lie["invalid"].as_u64().unwrap() >= 1);
    assert_eq!(lie["rank"], 3);
    let (_, board) = h.get("/api/v1/leaderboard", None).await;
    let leaders = board["leaders"].as_array().unwrap();
    assert_eq!(leaders.len(), 2, "the liar earned nothing: {board}");
    assert!(leaders.iter().any(|l| l["name"] == "Ada"));
    let (s, _) = h.get("/api/v1/volunteers/me", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn specs_are_validated_without_changing_anything() {
    let h = Harness::new();
    let spec = "kernel = \"ising2d\"\nseeds = 2\n[params]\nL = 16\nsweeps = 5\n[sweep]\nbeta = [0.3, 0.4, 0.5]\n";
    let (s, v) = h
        .call("POST", "/api/v1/specs", Some(&h.key), Some(spec.into()))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["count"], 6);
    assert_eq!(v["axes"], json!(["beta", "seed"]));
    let units = v["units"].clone();
    let bad = "kernel = \"ising2d\"\n[params]\nL = 17\nsweeps = 5\nbeta = 0.3\n";
    let (s, v) = h
        .call("POST", "/api/v1/specs", Some(&h.key), Some(bad.into()))
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("params.L")),
        "{v}"
    );
    let (s, _) = h
        .call("POST", "/api/v1/specs", None, Some(spec.into()))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h.store.status().unwrap().batches, 0);
    // Submitted with its axes, results aggregate per swept value.
    let (s, b) = h
        .post("/api/v1/batches", Some(&h.key), json!({"kernel": "ising2d", "units": units, "axes": ["beta", "seed"], "policy": {"spot_check_rate": 0.0}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let batch = b["batch_id"].as_i64().unwrap();
    let (s, v) = h
        .post(
            "/api/v1/batches",
            Some(&h.key),
            json!({"kernel": "ising2d", "units": ising_units(1), "axes": ["colour"]}),
        )
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("axes[0]"))
    );
    let sims = vec![
        h.volunteer(Kind::Honest).await,
        h.volunteer(Kind::Honest).await,
    ];
    h.run_to_completion(batch, &sims, false).await;
    let (_, agg) = h
        .get(&format!("/api/v1/batches/{batch}/aggregate"), Some(&h.key))
        .await;
    let points = agg["points"].as_array().unwrap();
    assert_eq!(points.len(), 3, "{agg}");
    assert_eq!(points[1]["values"], json!({"beta": 0.4}));
    assert_eq!(points[1]["n"], 2);
    let (_, list) = h.get("/api/v1/batches", Some(&h.key)).await;
    assert_eq!(list["batches"][0]["batch_id"], batch);
    assert_eq!(list["batches"][0]["done"], true);
}

#[tokio::test]
async fn operators_get_the_dashboard_metrics_and_a_live_stream() {
    let h = Harness::new();
    let batch = h
        .batch("ising2d", ising_units(2), json!({"spot_check_rate": 0.0}))
        .await;
    let sims = vec![
        h.volunteer(Kind::Honest).await,
        h.volunteer(Kind::Liar(1)).await,
        h.volunteer(Kind::Honest).await,
    ];
    h.run_to_completion(batch, &sims, false).await;
    let op = new_secret("qgk_");
    h.store
        .create_key("ops", &hash_secret(&op), true, now())
        .unwrap();
    let (s, _) = h.get("/api/v1/dashboard", Some(&h.key)).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a scientist key is not an operator key"
    );
    let (s, d) = h.get("/api/v1/dashboard", Some(&op)).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["status"]["units"]["canonical"], 2);
    assert_eq!(d["hosts"].as_array().unwrap().len(), 3);
    let rate = d["agreement_rate"].as_f64().unwrap();
    assert!(
        rate > 0.5 && rate < 1.0,
        "the liar lowers agreement: {rate}"
    );
    assert!(
        d["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["invalid"].as_u64() > Some(0) && x["reliability"].as_f64() < Some(1.0))
    );
    // The key never goes in a URL: not for the stream, not for the snapshot.
    for path in ["/api/v1/dashboard/events", "/api/v1/dashboard"] {
        let (s, v) = h.get(&format!("{path}?key={op}"), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}: {v}");
    }
    let (s, _) = h
        .post("/api/v1/dashboard/ticket", Some(&h.key), json!({}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a scientist gets no ticket");
    let (s, t) = h
        .post("/api/v1/dashboard/ticket", Some(&op), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let ticket = t["ticket"].as_str().unwrap();
    let (s, _) = h
        .get("/api/v1/dashboard/events?ticket=qgt_forged", None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // The live stream, opened with the ticket: its first event is a snapshot.
    let req = Request::builder()
        .uri(format!("/api/v1/dashboard/events?ticket={ticket}"))
        .body(Body::empty())
        .unwrap();
    let resp = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert!(text.starts_with("event: snapshot\ndata: {"), "{text}");
    // A ticket opens one stream: a second one with it is refused (the stream itself ends when
    // the ticket would have expired; the page buys a new one).
    let (s, v) = h
        .get(&format!("/api/v1/dashboard/events?ticket={ticket}"), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert!(v["error"].as_str().unwrap().contains("used"), "{v}");
    let (s, m) = h.get("/metrics", None).await;
    assert_eq!(s, StatusCode::OK);
    let m = m.as_str().unwrap();
    assert!(m.contains("qg_units{state=\"canonical\"} 2"), "{m}");
    assert!(m.contains("qg_replicas_dispatched_total"));
    assert!(
        m.contains("qg_http_request_duration_seconds_bucket{route=\"/api/v1/work\""),
        "{m}"
    );
}

#[tokio::test]
async fn a_volunteer_caught_by_a_spot_check_is_blacklisted_and_its_work_revalidated() {
    use coordinator::lifecycle::{ReplicaState, UnitState};
    let h = Harness::new();
    let units = ising_units(1);
    let want = reference_digests(&units);
    let b1 = h
        .batch("ising2d", units, json!({"spot_check_rate": 0.0}))
        .await;
    let x = h.volunteer(Kind::Honest).await;
    let y = h.volunteer(Kind::Honest).await;
    let x_token = x.token.clone();
    // X builds trust: it helps make b1's canonical result.
    h.run_to_completion(b1, &[x, y], false).await;
    let unit1 = results(&h, b1).await[0]["unit_id"].as_i64().unwrap();
    assert_eq!(
        h.store.unit_provenance(unit1, None).unwrap().state,
        UnitState::Canonical
    );

    // Then X turns bad on a spot-checked unit, and is caught.
    let b2 = h
        .batch(
            "ising2d",
            vec![json!({"L": 16, "beta": 0.7, "sweeps": 10, "seed": 99})],
            json!({"min_quorum": 1, "target_results": 1, "spot_check_rate": 1.0}),
        )
        .await;
    let turncoat = Sim {
        token: x_token.clone(),
        kind: Kind::Liar(2),
    };
    assert_eq!(h.round(std::slice::from_ref(&turncoat), 1).await, 1);
    h.run_spot_checks();

    // No more work for X...
    let (s, v) = h
        .post("/api/v1/work", Some(&x_token), json!({"max_units": 1}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    // ...and b1 is no longer canonical on X's word: X's replica is invalid, a new one is out.
    let p1 = h.store.unit_provenance(unit1, None).unwrap();
    assert_ne!(p1.state, UnitState::Canonical, "{p1:?}");
    let states: Vec<ReplicaState> = p1.replicas.iter().map(|r| r.state).collect();
    assert!(
        states.contains(&ReplicaState::Invalid) && states.contains(&ReplicaState::Valid),
        "{states:?}"
    );

    // An honest volunteer restores both batches.
    let z = h.volunteer(Kind::Honest).await;
    h.run_to_completion(b1, std::slice::from_ref(&z), true)
        .await;
    h.run_to_completion(b2, std::slice::from_ref(&z), true)
        .await;
    let rows = results(&h, b1).await;
    assert_eq!(rows[0]["state"], "canonical");
    assert_eq!(rows[0]["digest"], json!(want[0]));
    let p1 = h.store.unit_provenance(unit1, None).unwrap();
    assert_eq!(p1.replicas.len(), 3);
    let op = new_secret("qgk_");
    h.store
        .create_key("ops", &hash_secret(&op), true, now())
        .unwrap();
    let (_, d) = h.get("/api/v1/dashboard", Some(&op)).await;
    let blacklisted: Vec<&Value> = d["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["blacklisted"] == true)
        .collect();
    assert_eq!(blacklisted.len(), 1, "{d}");
    assert_eq!(blacklisted[0]["spot_failed"], 1);
    // A caught volunteer is no longer ranked: Y and Z are, X is not.
    let (_, board) = h.get("/api/v1/leaderboard", None).await;
    assert_eq!(
        board["leaders"].as_array().map(Vec::len),
        Some(2),
        "{board}"
    );
}

#[tokio::test]
async fn credibility_policy_ringers_and_credibility_on_the_dashboard() {
    use coordinator::lifecycle::UnitState;
    let h = Harness::new();
    h.store.seed(3);
    // Bad policies are named and change nothing.
    for (policy, field) in [
        (json!({"replication": "magic"}), "policy.replication"),
        (json!({"target_error": 0.5}), "policy.target_error"),
        (
            json!({"saboteur_fraction": 0.7}),
            "policy.saboteur_fraction",
        ),
        (json!({"ringer_rate": 2}), "policy.ringer_rate"),
    ] {
        let (s, v) = h
            .post(
                "/api/v1/batches",
                Some(&h.key),
                json!({"kernel": "ising2d", "units": ising_units(1), "policy": policy}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["field"], field, "{v}");
    }
    assert_eq!(h.store.unit_count().unwrap(), 0);

    // Every unit is recomputed by the coordinator: one matching replica settles it.
    let units = ising_units(8);
    let want = reference_digests(&units);
    let b = h
        .batch(
            "ising2d",
            units,
            json!({"replication": "credibility", "spot_check_rate": 1.0, "ringer_rate": 0.5}),
        )
        .await;
    let (_, st) = h.get(&format!("/api/v1/batches/{b}"), Some(&h.key)).await;
    assert_eq!(st["policy"]["replication"], "credibility");
    h.run_spot_checks();
    let x = h.volunteer(Kind::Honest).await;
    assert_eq!(h.round(std::slice::from_ref(&x), 4).await, 4);
    let rows = results(&h, b).await;
    let settled: Vec<&Value> = rows.iter().filter(|r| r["state"] == "canonical").collect();
    assert_eq!(settled.len(), 4, "one replica each: {rows:?}");
    for r in &settled {
        let i = rows.iter().position(|x| x == *r).unwrap();
        assert_eq!(r["digest"], json!(want[i]));
    }

    // A liar asks for work: at ringer_rate 0.5 some of it is settled units, sent like any
    // other; its wrong answer to one of them gets it caught.
    let liar = Sim {
        token: h.volunteer(Kind::Liar(1)).await.token,
        kind: Kind::Liar(1),
    };
    let (s, w) = h
        .post("/api/v1/work", Some(&liar.token), json!({"max_units": 4}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let assignments = w["assignments"].as_array().unwrap().clone();
    let ringers: Vec<&Value> = assignments
        .iter()
        .filter(|a| {
            let unit = a["unit_id"].as_i64().unwrap();
            h.store.unit_provenance(unit, None).unwrap().state == UnitState::Canonical
        })
        .collect();
    assert!(!ringers.is_empty(), "no ringer among {assignments:?}");
    // Same shape as new work.
    let keys = |a: &Value| a.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert!(assignments.iter().all(|a| keys(a) == keys(ringers[0])));
    let (s, ack) = h
        .post(
            "/api/v1/results",
            Some(&liar.token),
            report_for(ringers[0], liar.kind),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{ack}");
    let (s, _) = h
        .post("/api/v1/work", Some(&liar.token), json!({"max_units": 1}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "caught by a ringer");
    // The settled results stand.
    let after = results(&h, b).await;
    for r in &settled {
        assert!(after.contains(r));
    }

    // The operator sees the honest volunteer's passed checks and credibility.
    let op = new_secret("qgk_");
    h.store
        .create_key("ops", &hash_secret(&op), true, now())
        .unwrap();
    let (_, d) = h.get("/api/v1/dashboard", Some(&op)).await;
    let hosts = d["hosts"].as_array().unwrap();
    let honest = hosts.iter().find(|x| x["valid"] == 4).unwrap();
    assert_eq!(honest["checks"], 4, "{d}");
    let cred = honest["credibility"].as_f64().unwrap();
    // Sarmenta: 1 - f / ((1 - f) e k) with f = 0.1, k = 4.
    assert!(
        (cred - (1.0 - 0.1 / (0.9 * std::f64::consts::E * 4.0))).abs() < 1e-9,
        "{cred}"
    );
    let caught = hosts.iter().find(|x| x["blacklisted"] == true).unwrap();
    assert_eq!(caught["checks"], 0);
}

#[tokio::test]
async fn an_adapter_class_failing_its_checks_is_doubted_as_a_whole() {
    use coordinator::lifecycle::UnitState;
    let h = Harness::new();
    h.store.seed(9);
    // Every unit of the first batch is recomputed by the coordinator: each report is a check
    // of its volunteer and of its adapter class. At target_error 0.01 a volunteer is credible
    // alone after 5 passed checks (f = 0.1).
    let policy = |spot: f64| json!({"replication": "credibility", "spot_check_rate": spot, "target_error": 0.01});
    let checked = h.batch("ising2d", ising_units(10), policy(1.0)).await;
    h.run_spot_checks();
    let take = async |sim: &Sim, backend: &str, n: u32| {
        let (s, w) = h
            .post(
                "/api/v1/work",
                Some(&sim.token),
                json!({"max_units": n, "adapter": {"name": "x", "backend": backend}}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{w}");
        let mut acks = Vec::new();
        for a in w["assignments"].as_array().unwrap() {
            let (s, ack) = h
                .post("/api/v1/results", Some(&sim.token), report_for(a, sim.kind))
                .await;
            assert_eq!(s, StatusCode::ACCEPTED, "{ack}");
            acks.push(ack);
        }
        acks
    };
    // Three volunteers on a buggy driver, each with a record (a valid result first), return
    // wrong results; each is caught.
    for i in 0..3 {
        let v = h.volunteer(Kind::Honest).await;
        assert_eq!(take(&v, "buggy", 1).await.len(), 1);
        let v = Sim {
            kind: Kind::Liar(i),
            ..v
        };
        assert_eq!(take(&v, "buggy", 1).await.len(), 1);
    }
    // An honest volunteer on that driver and one on another pass five checks each.
    let b = h.volunteer(Kind::Honest).await;
    let g = h.volunteer(Kind::Honest).await;
    assert_eq!(take(&b, "buggy", 5).await.len(), 5);
    assert_eq!(take(&g, "good", 5).await.len(), 5);
    let (_, st) = h
        .get(&format!("/api/v1/batches/{checked}"), Some(&h.key))
        .await;
    assert_eq!(st["done"], true, "{st}");

    // The operator sees the buggy class doubted: 3 of its 7 counted checks failed (each
    // volunteer's first check, made before it had a record, is not counted), more than the
    // 10% saboteurs alone could explain; the good class is not.
    let op = new_secret("qgk_");
    h.store
        .create_key("ops", &hash_secret(&op), true, now())
        .unwrap();
    let (_, d) = h.get("/api/v1/dashboard", Some(&op)).await;
    let classes = d["classes"].as_array().unwrap();
    let buggy = classes
        .iter()
        .find(|c| c["class"].as_str().unwrap().contains("/buggy/"))
        .unwrap();
    assert_eq!(
        (buggy["passed"].clone(), buggy["failed"].clone()),
        (json!(4), json!(3))
    );
    assert_eq!(buggy["doubt"], 3.0 / 7.0, "{d}");
    let good = classes
        .iter()
        .find(|c| c["class"].as_str().unwrap().contains("/good/"))
        .unwrap();
    assert_eq!(good["doubt"], 0.0, "{d}");
    assert_eq!(d["status"]["doubted_classes"], 1, "{d}");
    let (_, m) = h.get("/metrics", None).await;
    assert!(
        m.as_str().unwrap().contains("qg_adapter_classes_doubted 1"),
        "{m}"
    );

    // Without spot-checks, the good-class volunteer's result alone is accepted; the buggy
    // class's, from a volunteer with as many passed checks, needs agreement.
    h.batch("ising2d", ising_units(2), policy(0.0)).await;
    let ack = take(&g, "good", 1).await;
    assert_eq!(ack[0]["unit_state"], "canonical", "{ack:?}");
    let ack = take(&b, "buggy", 1).await;
    assert_eq!(ack[0]["unit_state"], "in_progress", "{ack:?}");
    let unit = h.store.unit_count().unwrap() as i64;
    assert_eq!(
        h.store.unit_provenance(unit, None).unwrap().state,
        UnitState::InProgress
    );

    // Three fresh tokens that claim the good driver and lie are caught too, but they have no
    // record: the good class's record does not count them, and it stays undoubted.
    h.batch("ising2d", ising_units(3), policy(1.0)).await;
    h.run_spot_checks();
    for i in 0..3 {
        let v = h.volunteer(Kind::Liar(i)).await;
        assert_eq!(take(&v, "good", 1).await.len(), 1);
    }
    let (_, d) = h.get("/api/v1/dashboard", Some(&op)).await;
    let good = d["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"].as_str().unwrap().contains("/good/"))
        .unwrap()
        .clone();
    assert_eq!(
        (good["failed"].clone(), good["doubt"].clone()),
        (json!(0), json!(0.0)),
        "{d}"
    );
    assert_eq!(d["status"]["doubted_classes"], 1, "{d}");
}

#[test]
fn replicas_go_to_distinct_network_prefixes_when_asked() {
    use coordinator::api::network_prefix;
    use coordinator::lifecycle::Policy;
    use coordinator::store::{NewBatch, NewUnit};
    assert_eq!(network_prefix("10.1.2.3".parse().unwrap()), "10.1.2.0/24");
    assert_eq!(
        network_prefix("::ffff:10.1.2.3".parse().unwrap()),
        "10.1.2.0/24"
    );
    assert_eq!(
        network_prefix("2001:db8:7:1::5".parse().unwrap()),
        "2001:db8:7::/48"
    );
    let dir = tempfile::tempdir().unwrap();
    let (store, _db) = open_engine(dir.path());
    let units = ising_units(1)
        .into_iter()
        .map(|params| NewUnit {
            params,
            work: 1,
            spot_check: false,
        })
        .collect();
    for (distinct, same_prefix_gets) in [(true, 0), (false, 1)] {
        store
            .create_batch(
                &NewBatch {
                    key_id: None,
                    name: "b".into(),
                    description: None,
                    kernel: "ising2d".into(),
                    policy: Policy {
                        distinct_prefixes: distinct,
                        ..Policy::default()
                    },
                    spot_check_rate: 0.0,
                    units: Vec::clone(&units),
                    axes: vec![],
                },
                0,
            )
            .unwrap();
        let v: Vec<i64> = (0..3)
            .map(|i| {
                store
                    .register_volunteer(format!("{distinct}{i}").as_bytes(), None, 0)
                    .unwrap()
            })
            .collect();
        let adapter = Default::default();
        let a = store
            .request_work(v[0], 1, &adapter, Some("10.0.0.0/24"), 0)
            .unwrap();
        assert_eq!(a.len(), 1);
        let b = store
            .request_work(v[1], 1, &adapter, Some("10.0.0.0/24"), 0)
            .unwrap();
        assert_eq!(b.len(), same_prefix_gets);
        if distinct {
            let c = store
                .request_work(v[2], 1, &adapter, Some("10.0.1.0/24"), 0)
                .unwrap();
            assert_eq!(c.len(), 1);
            assert_eq!(c[0].unit_id, a[0].unit_id);
        }
    }
}

#[tokio::test]
async fn challenges_recompute_a_segment_from_the_volunteers_own_state() {
    let h = Harness::new();
    h.store.seed(11);
    h.batch(
        "ising2d",
        checkpointed_units(6),
        json!({"replication": "credibility", "spot_check_rate": 0.0, "challenge_rate": 1.0}),
    )
    .await;
    // Nothing to answer for an assignment that was never challenged.
    let x = h.volunteer(Kind::Honest).await;
    let work = |token: String| {
        let h = &h;
        async move {
            let (s, w) = h
                .post("/api/v1/work", Some(&token), json!({"max_units": 3}))
                .await;
            assert_eq!(s, StatusCode::OK, "{w}");
            w["assignments"].as_array().unwrap().clone()
        }
    };
    let (s, v) = h.answer(&x.token, 999, 2, &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

    // An honest volunteer answers with its true states and passes every challenge.
    let mut answered = 0;
    for a in work(x.token.clone()).await {
        let (s, ack) = h
            .post(
                "/api/v1/results",
                Some(&x.token),
                report_for(&a, Kind::Honest),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{ack}");
        let id = a["assignment_id"].as_i64().unwrap();
        if let Some(step) = ack["challenge"]["step"].as_u64() {
            let state = state_at(&a, step);
            // The wrong step is named; nothing changes.
            let (s, v) = h.answer(&x.token, id, step + 1, &state).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
            assert_eq!(v["field"], "step");
            let (s, v) = h.answer(&x.token, id, step, &state).await;
            assert_eq!(s, StatusCode::ACCEPTED, "{v}");
            let (s, _) = h.answer(&x.token, id, step, &state).await;
            assert_eq!(s, StatusCode::CONFLICT, "answered once");
            answered += 1;
        }
    }
    assert!(answered > 0, "no challenge asked for a state");
    let jobs = h.store.claim_challenges(100, now(), 1, false).unwrap();
    assert_eq!(jobs.len(), 3, "every report was challenged");
    for j in &jobs {
        assert!(j.verify(), "{j:?}");
        h.store.challenge_done(j.replica_id, true, now()).unwrap();
    }

    // A volunteer that answers with a state it did not report is caught at once.
    let y = h.volunteer(Kind::Honest).await;
    let mut caught = false;
    for a in work(y.token.clone()).await {
        let (_, ack) = h
            .post(
                "/api/v1/results",
                Some(&y.token),
                report_for(&a, Kind::Honest),
            )
            .await;
        if let Some(step) = ack["challenge"]["step"].as_u64() {
            let id = a["assignment_id"].as_i64().unwrap();
            let (s, v) = h
                .answer(&y.token, id, step, &[vec![0; 1024], vec![0; 32]])
                .await;
            assert_eq!(s, StatusCode::ACCEPTED, "{v}");
            caught = true;
            break;
        }
    }
    assert!(caught, "no challenge asked for a state");
    let (s, _) = h
        .post("/api/v1/work", Some(&y.token), json!({"max_units": 1}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // A tampered last segment fails its recomputation.
    let mut j = jobs[0].clone();
    j.end_digest = Digest::of(b"not the state");
    assert!(!j.verify());

    // The honest volunteer's passed challenges count as checks.
    let op = new_secret("qgk_");
    h.store
        .create_key("ops", &hash_secret(&op), true, now())
        .unwrap();
    let (_, d) = h.get("/api/v1/dashboard", Some(&op)).await;
    let hosts = d["hosts"].as_array().unwrap();
    assert!(hosts.iter().any(|x| x["checks"] == 3), "{d}");
    assert_eq!(d["status"]["challenges"]["passed"], 3, "{d}");
    assert_eq!(d["status"]["challenges"]["failed"], 1, "{d}");
    assert_eq!(d["status"]["blacklisted"], 1, "{d}");
    let (_, m) = h.get("/metrics", None).await;
    let m = m.as_str().unwrap();
    assert!(m.contains("qg_challenges{status=\"passed\"} 3"), "{m}");
    assert!(m.contains("qg_volunteers_blacklisted 1"), "{m}");
}

#[tokio::test]
async fn an_unanswered_challenge_is_a_check_not_passed() {
    use coordinator::decide::CHALLENGE_DEADLINE_S;
    use coordinator::lifecycle::{ReplicaState, UnitState};
    let h = Harness::new();
    h.store.seed(5);
    let units = checkpointed_units(6);
    let want = reference_digests(&units);
    // The coordinator's own answers settle each unit with one matching replica.
    h.batch(
        "ising2d",
        units,
        json!({"replication": "credibility", "spot_check_rate": 1.0, "challenge_rate": 1.0}),
    )
    .await;
    h.run_spot_checks();
    let ask = async |token: &str, n: u32| {
        let (s, w) = h
            .post("/api/v1/work", Some(token), json!({"max_units": n}))
            .await;
        (s, w["assignments"].as_array().cloned().unwrap_or_default())
    };

    // A volunteer reports and never answers the challenges that ask for a state.
    let x = h.volunteer(Kind::Honest).await;
    let mut dodged = Vec::new();
    for a in ask(&x.token, 6).await.1 {
        let (s, ack) = h
            .post(
                "/api/v1/results",
                Some(&x.token),
                report_for(&a, Kind::Honest),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{ack}");
        assert_eq!(ack["unit_state"], "canonical", "{ack}");
        if ack["challenge"]["step"].is_u64() {
            dodged.push((
                a["unit_id"].as_i64().unwrap(),
                a["assignment_id"].as_i64().unwrap(),
            ));
        }
    }
    assert!(!dodged.is_empty(), "no challenge asked for a state");
    // Before the deadline nothing changes.
    assert_eq!(
        h.store.expire(now() + CHALLENGE_DEADLINE_S - 60).unwrap(),
        0
    );
    assert_eq!(
        h.store.expire(now() + CHALLENGE_DEADLINE_S + 60).unwrap(),
        dodged.len()
    );
    // Each result it would not back up is invalid, its unit open again.
    for (unit, replica) in &dodged {
        let p = h.store.unit_provenance(*unit, None).unwrap();
        assert_ne!(p.state, UnitState::Canonical, "{p:?}");
        let r = p
            .replicas
            .iter()
            .find(|r| r.replica_id == *replica)
            .unwrap();
        assert_eq!(r.state, ReplicaState::Invalid);
        assert!(
            r.challenge
                .as_deref()
                .is_some_and(|c| c.starts_with("expired ")),
            "{r:?}"
        );
    }
    // Not blacklisted (an honest client may have been closed), but its credibility starts
    // over: the spot-checks it passed no longer count.
    let op = new_secret("qgk_");
    h.store
        .create_key("ops", &hash_secret(&op), true, now())
        .unwrap();
    let (_, d) = h.get("/api/v1/dashboard", Some(&op)).await;
    let host = &d["hosts"].as_array().unwrap()[0];
    assert_eq!(host["checks"], 0, "{d}");
    assert_eq!(host["invalid"], dodged.len(), "{d}");
    assert_eq!(host["blacklisted"], false, "{d}");
    assert_eq!(d["status"]["challenges"]["expired"], dodged.len(), "{d}");
    assert_eq!(ask(&x.token, 1).await.0, StatusCode::OK);

    // Another volunteer takes the reopened units; answering settles them with the reference.
    let y = h.volunteer(Kind::Honest).await;
    for a in ask(&y.token, 6).await.1 {
        let (_, ack) = h
            .post(
                "/api/v1/results",
                Some(&y.token),
                report_for(&a, Kind::Honest),
            )
            .await;
        if let Some(step) = ack["challenge"]["step"].as_u64() {
            let id = a["assignment_id"].as_i64().unwrap();
            let (s, v) = h.answer(&y.token, id, step, &state_at(&a, step)).await;
            assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        }
    }
    h.store.expire(now() + CHALLENGE_DEADLINE_S + 60).unwrap();
    let rows = results(&h, 1).await;
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["state"], "canonical", "{r}");
        assert_eq!(r["digest"], json!(want[i]));
    }
}

#[test]
fn challenges_ask_only_for_states_a_client_keeps() {
    use coordinator::lifecycle::{Policy, Replication};
    use coordinator::store::{NewBatch, NewUnit, ReportBody};
    // L = 3200: a state is 10 MB (a byte per spin), so a client keeps only the latest one
    // before the last (protocol::KEPT_STATE_BYTES); three checkpoints at sweeps 1, 2 and 3.
    let params = json!({"L": 3200, "beta": 0.44, "sweeps": 3, "checkpoint_every": 1, "seed": 1});
    let job = Job::new("ising2d", params.clone()).unwrap();
    assert_eq!(protocol::kept_states(2, job.state_len()), 1);
    let (r, states) = job.run_cpu_keeping_states(1, &mut |_, _| {}).unwrap();
    assert_eq!(r.checkpoints.len(), 3);
    assert_eq!(
        states.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [2, 3],
        "the client keeps the state at 2 (and the output's)"
    );
    let dir = tempfile::tempdir().unwrap();
    let (store, _db) = open_engine(dir.path());
    store.seed(2);
    let n = 12;
    store
        .create_batch(
            &NewBatch {
                key_id: None,
                name: "big".into(),
                description: None,
                kernel: "ising2d".into(),
                policy: Policy {
                    replication: Replication::Credibility,
                    challenge_rate: 1.0,
                    ..Policy::default()
                },
                spot_check_rate: 0.0,
                units: vec![
                    NewUnit {
                        params,
                        work: job.work(),
                        spot_check: false,
                    };
                    n
                ],
                axes: vec![],
            },
            0,
        )
        .unwrap();
    let mut asked = Vec::new();
    for i in 0..n {
        let v = store
            .register_volunteer(format!("v{i}").as_bytes(), None, 0)
            .unwrap();
        let a = store
            .request_work(v, 1, &Default::default(), None, 0)
            .unwrap();
        let body = ReportBody::Output {
            digest: r.digest,
            output: r.output.clone(),
            checkpoints: r.checkpoints.clone(),
            summary: r.summary.clone(),
        };
        let o = store.report(v, a[0].assignment_id, &body, 0).unwrap();
        asked.extend(o.challenge);
    }
    // Every report was challenged: from the initial state (nothing to send) or from the one
    // state the client kept, never from sweep 1.
    let pending = store.claim_challenges(100, 0, 1, false).unwrap();
    assert_eq!(pending.len() + asked.len(), n, "{asked:?}");
    assert!(
        pending.iter().all(|j| j.from == 0 && j.to == 1),
        "{pending:?}"
    );
    assert!(
        !asked.is_empty() && asked.iter().all(|&s| s == 2),
        "{asked:?}"
    );
    assert!(!pending.is_empty());
}

#[test]
fn the_example_specs_policies_are_accepted() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // Specs; kernels/ holds kernel packages.
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let spec = shaders::spec::expand_text(&text).unwrap();
        let r = coordinator::api::policy_from(&spec.policy, 0.05);
        assert!(
            r.is_ok(),
            "{}: {:?}",
            path.display(),
            r.err().map(|e| e.body)
        );
        n += 1;
    }
    assert!(n >= 3);
}

/// A batch submitted for a kernel version this coordinator no longer runs (here: one from
/// before the data digest, rewritten in the database) says so, and its units are not handed
/// out: nobody it serves could compute or validate them.
#[test]
fn units_of_a_retired_kernel_version_are_not_dispatched() {
    use coordinator::store::{NewBatch, NewUnit};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qg.sqlite");
    let store = Engine::sqlite(&path).unwrap();
    let params = json!({"L": 16, "beta": 0.4, "sweeps": 5, "seed": 1});
    let job = Job::new("ising2d", params.clone()).unwrap();
    let unit = NewUnit {
        params,
        work: job.work(),
        spot_check: false,
    };
    let batch = |name: &str| NewBatch {
        key_id: None,
        name: name.into(),
        description: None,
        kernel: "ising2d".into(),
        policy: coordinator::lifecycle::Policy::default(),
        spot_check_rate: 0.0,
        units: vec![unit.clone(); 2],
        axes: vec![],
    };
    let old = store.create_batch(&batch("old"), 0).unwrap();
    let status = store.batch_status(old, None).unwrap();
    assert_eq!(status.kernel_version, job.version());
    assert!(!status.retired);
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "UPDATE batches SET kernel_version = 1; UPDATE units SET kernel_version = 1;",
    )
    .unwrap();
    drop(raw);
    let current = store.create_batch(&batch("current"), 0).unwrap();
    let v = store.register_volunteer(b"v", None, 0).unwrap();
    let got = store
        .request_work(v, 8, &Default::default(), None, 0)
        .unwrap();
    let status = store.batch_status(old, None).unwrap();
    assert!(status.retired, "{status:?}");
    assert_eq!(status.kernel_version, 1);
    assert_eq!(got.len(), 2, "only the current batch's units: {got:?}");
    for a in &got {
        assert_eq!(a.kernel_version, job.version());
        assert_eq!(
            store.batch_status(current, None).unwrap().by_state["in_progress"],
            2
        );
    }
    assert_eq!(status.by_state["unsent"], 2, "{status:?}");
    // Asked again, still nothing of the old batch.
    let v2 = store.register_volunteer(b"v2", None, 0).unwrap();
    let more = store
        .request_work(v2, 8, &Default::default(), None, 0)
        .unwrap();
    assert!(
        more.iter().all(|a| a.kernel_version == job.version()),
        "{more:?}"
    );
    assert_eq!(
        more.len(),
        2,
        "the current batch's second replicas: {more:?}"
    );
}

/// Verifier workers: only operator keys; bad results are refused with the field named and
/// change nothing; a job is leased to one worker at a time, and only it may answer; a correct
/// spot-check result becomes the coordinator's answer.
#[tokio::test]
async fn verifier_workers_take_leased_recomputation_jobs() {
    let h = Harness::new();
    let op = new_secret("qgk_");
    h.store
        .create_key("verifier", &hash_secret(&op), true, now())
        .unwrap();
    let other_op = new_secret("qgk_");
    h.store
        .create_key("another verifier", &hash_secret(&other_op), true, now())
        .unwrap();
    let units = ising_units(2);
    h.batch("ising2d", units.clone(), json!({"spot_check_rate": 1.0}))
        .await;
    let ask = json!({"max_jobs": 16});
    let (s, _) = h.post("/api/v1/verifier/work", None, ask.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = h
        .post("/api/v1/verifier/work", Some(&h.key), ask.clone())
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a scientist key is no verifier: {v}"
    );
    let (s, v) = h
        .post("/api/v1/verifier/work", Some(&op), json!({"max_jobs": 0}))
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("max_jobs"))
    );

    let (s, work) = h
        .post("/api/v1/verifier/work", Some(&op), ask.clone())
        .await;
    assert_eq!(s, StatusCode::OK, "{work}");
    let jobs = work["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 2, "{work}");
    assert!(jobs.iter().all(|j| j["kind"] == "spot"));
    // Leased: a second worker gets none of them.
    let (_, again) = h
        .post("/api/v1/verifier/work", Some(&op), ask.clone())
        .await;
    assert_eq!(again["jobs"], json!([]), "{again}");
    assert_eq!(again["retry_after_s"], 5);

    let job = &jobs[0];
    let r = Job::new(job["kernel"].as_str().unwrap(), job["params"].clone())
        .unwrap()
        .run_cpu(1, &mut |_, _| {})
        .unwrap();
    let good = json!({
        "job_id": job["job_id"],
        "output": base64::engine::general_purpose::STANDARD.encode(&r.output),
        "kernel_version": job["kernel_version"],
        "adapter": "test",
    });
    let pending = || h.store.queued_spot_checks().unwrap();
    for (mut bad, status, field) in [
        (good.clone(), StatusCode::BAD_REQUEST, "output"),
        (good.clone(), StatusCode::NOT_FOUND, "job_id"),
        (good.clone(), StatusCode::CONFLICT, "kernel_version"),
    ] {
        match field {
            "output" => {
                bad["output"] = json!(base64::engine::general_purpose::STANDARD.encode([1u8, 2]))
            }
            "job_id" => bad["job_id"] = json!("spot:999999"),
            _ => bad["kernel_version"] = json!(1),
        }
        let (s, v) = h.post("/api/v1/verifier/results", Some(&op), bad).await;
        assert_eq!((s, v["field"].as_str()), (status, Some(field)), "{v}");
        assert_eq!(pending(), 2, "a refused result changes nothing");
    }
    // Another operator key cannot answer this worker's lease.
    let (s, v) = h
        .post("/api/v1/verifier/results", Some(&other_op), good.clone())
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::NOT_FOUND, Some("job_id")),
        "{v}"
    );
    assert_eq!(pending(), 2, "a refused result changes nothing");
    let (s, v) = h
        .post("/api/v1/verifier/results", Some(&op), good.clone())
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(pending(), 1);
    // Done: the job is no longer leased to anyone.
    let (s, _) = h.post("/api/v1/verifier/results", Some(&op), good).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The unit's spot-check is the verifier's answer, the reference digest.
    let want = reference_digests(&units);
    let unit_id = job["job_id"].as_str().unwrap()["spot:".len()..]
        .parse::<i64>()
        .unwrap();
    let (_, prov) = h
        .get(&format!("/api/v1/units/{unit_id}"), Some(&h.key))
        .await;
    assert!(
        want.iter().any(|d| prov.to_string().contains(&d.to_hex())),
        "{prov}"
    );
}

/// A verifier that lies against a credible quorum blacklists no one: its answer waits for a
/// second opinion (never its own), and another verifier's right answer settles the unit.
#[tokio::test]
async fn a_verifier_that_contradicts_a_credible_quorum_is_checked_again() {
    let h = Harness::new();
    let (liar, honest) = (new_secret("qgk_"), new_secret("qgk_"));
    for (name, k) in [("liar", &liar), ("honest", &honest)] {
        h.store
            .create_key(name, &hash_secret(k), true, now())
            .unwrap();
    }
    let sims = [
        h.volunteer(Kind::Honest).await,
        h.volunteer(Kind::Honest).await,
    ];
    // The volunteers earn a record first...
    let b0 = h
        .batch("ising2d", ising_units(2), json!({"spot_check_rate": 0.0}))
        .await;
    h.run_to_completion(b0, &sims, false).await;
    // ...then both report a spot-checked unit before any verifier answers.
    let units = vec![json!({"L": 16, "beta": 0.41, "sweeps": 20, "seed": 99})];
    let b = h
        .batch("ising2d", units.clone(), json!({"spot_check_rate": 1.0}))
        .await;
    assert_eq!(h.round(&sims, 1).await, 2);
    let pending = || h.store.queued_spot_checks().unwrap();
    assert_eq!(pending(), 1);

    let ask = json!({"max_jobs": 4});
    let (_, work) = h
        .post("/api/v1/verifier/work", Some(&liar), ask.clone())
        .await;
    let job = work["jobs"][0].clone();
    assert_eq!(job["kind"], "spot", "{work}");
    let mut wrong = Job::new("ising2d", units[0].clone())
        .unwrap()
        .run_cpu(1, &mut |_, _| {})
        .unwrap()
        .output;
    wrong[0] ^= 1;
    let answer = |out: &[u8]| {
        json!({
            "job_id": job["job_id"],
            "output": base64::engine::general_purpose::STANDARD.encode(out),
            "kernel_version": job["kernel_version"],
        })
    };
    let (s, v) = h
        .post("/api/v1/verifier/results", Some(&liar), answer(&wrong))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    // Held back: the spot-check is still to do, and nobody is blacklisted.
    assert_eq!(pending(), 1, "the lie was not taken");
    let blacklisted = |d: &Value| {
        d["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["blacklisted"] == true)
            .count()
    };
    let (_, d) = h.get("/api/v1/dashboard", Some(&honest)).await;
    assert_eq!(blacklisted(&d), 0, "{d}");
    // The liar does not get to second itself; another verifier does.
    let (_, again) = h
        .post("/api/v1/verifier/work", Some(&liar), ask.clone())
        .await;
    assert_eq!(again["jobs"], json!([]), "{again}");
    let (_, work) = h.post("/api/v1/verifier/work", Some(&honest), ask).await;
    assert_eq!(work["jobs"][0]["job_id"], job["job_id"], "{work}");
    let right = Job::new("ising2d", units[0].clone())
        .unwrap()
        .run_cpu(1, &mut |_, _| {})
        .unwrap()
        .output;
    let (s, v) = h
        .post("/api/v1/verifier/results", Some(&honest), answer(&right))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(pending(), 0);
    let (_, d) = h.get("/api/v1/dashboard", Some(&honest)).await;
    assert_eq!(blacklisted(&d), 0, "{d}");
    let rows = results(&h, b).await;
    assert_eq!(rows[0]["state"], "canonical", "{rows:?}");
    assert_eq!(rows[0]["digest"], json!(Digest::of_data(&right)));
}

// ---- The transparency log ----

fn bundle_of(v: Value) -> transparency::ProofBundle {
    serde_json::from_value(v).unwrap()
}

fn problems(h: &Harness, b: &transparency::ProofBundle) -> Vec<String> {
    let opts = transparency::VerifyOptions {
        log_key: Some(h.log_key.verifier_key()),
        ..Default::default()
    };
    transparency::verify_bundle(b, &opts)
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect()
}

#[tokio::test]
async fn accepted_results_are_logged_proven_and_served_as_tiles() {
    use transparency::{EntryKind, LogEntry, MemoryLog, open_checkpoint};
    let h = Harness::new();
    let units = ising_units(3);
    let want = reference_digests(&units);
    let b = h
        .batch("ising2d", units, json!({"spot_check_rate": 0.0}))
        .await;
    let sims = [
        h.volunteer(Kind::Honest).await,
        h.volunteer(Kind::Honest).await,
    ];
    h.run_to_completion(b, &sims, false).await;
    let proofs = format!("/api/v1/batches/{b}/proofs");
    // Receipts wait for the sequencer: no checkpoint yet.
    let (s, v) = h.get(&proofs, Some(&h.key)).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    // Three receipts, after the batch's commitment.
    assert_eq!(h.store.log_queue_len().unwrap(), 4);
    assert_eq!(h.seal(), 4);
    assert_eq!(h.store.log_queue_len().unwrap(), 0);
    let (s, v) = h.get(&proofs, Some(&h.key)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["pending"], 0);
    let bundle = bundle_of(v);
    assert_eq!(problems(&h, &bundle), Vec::<String>::new());
    // Each receipt says what was accepted, on whose word.
    for (u, d) in bundle.units.iter().zip(&want) {
        let e = LogEntry::parse(u.entries[0].entry.as_bytes()).unwrap();
        assert_eq!(e.kind, EntryKind::Accepted);
        assert_eq!(e.digest, *d);
        assert_eq!(e.unit, u.unit);
        assert_eq!(e.replicas.len(), 2);
        assert!(e.replicas.iter().all(|r| r.digest == *d));
        assert_eq!(e.evidence.min_quorum, 2);
        assert_eq!(e.supersedes, None);
    }
    let rows = results(&h, b).await;
    let mut indexes: Vec<u64> = rows
        .iter()
        .map(|r| r["log_index"].as_u64().unwrap())
        .collect();
    indexes.sort();
    assert_eq!(indexes, vec![1, 2, 3]);
    let c =
        transparency::BatchCommitment::parse(bundle.commitment.as_ref().unwrap().entry.as_bytes())
            .unwrap();
    assert_eq!(
        (c.batch, c.units, bundle.commitment.unwrap().index),
        (b, 3, 0)
    );
    assert_eq!(bundle.spec.unwrap()["kernel"], "ising2d");
    // Each receipt binds the summary the results serve.
    for (u, r) in bundle.units.iter().zip(&rows) {
        let e = LogEntry::parse(u.entries[0].entry.as_bytes()).unwrap();
        assert_eq!(
            e.summary_sha256,
            Some(transparency::summary_hash(&r["summary"]))
        );
        assert!(r["summary"]["abs_m"].is_number(), "{r}");
    }
    // Another scientist sees no proofs of this batch.
    let other = new_secret("qgk_");
    h.store
        .create_key("other", &hash_secret(&other), false, now())
        .unwrap();
    let (s, _) = h.get(&proofs, Some(&other)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The tree as C2SP tiles: the entry bundle rebuilds the checkpoint's root, and the
    // level-0 tile holds the entries' record hashes.
    let (s, note) = h.call_raw("GET", "/log/checkpoint", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let cp = open_checkpoint(&note, &h.log_key.verifier(), &[], 0).unwrap();
    assert_eq!(cp.checkpoint.size(), 4);
    let (s, bundle_bytes) = h
        .call_raw("GET", "/log/tile/entries/000.p/4", None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let mut rebuilt = MemoryLog::default();
    let mut rest = &bundle_bytes[..];
    let mut record_hashes = Vec::new();
    while !rest.is_empty() {
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        rebuilt.append(&rest[2..2 + len]).unwrap();
        record_hashes.extend(transparency::record_hash(&rest[2..2 + len]).0);
        rest = &rest[2 + len..];
    }
    assert_eq!(rebuilt.size(), 4);
    assert_eq!(rebuilt.root().unwrap(), *cp.checkpoint.hash());
    let (s, tile) = h.call_raw("GET", "/log/tile/0/000.p/4", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(tile, record_hashes);
    // Tiles the tree does not have yet, and paths that are not tiles.
    for path in [
        "/log/tile/0/000.p/5",
        "/log/tile/0/000",
        "/log/tile/1/000.p/1",
        "/log/tile/entries/001",
        "/log/tile/0/0",
        "/log/tile/x",
        // Levels and widths tlog_tiles asserts on (found by the request fuzzer).
        "/log/tile/64/64",
        "/log/tile/255/000",
        "/log/tile/0/000.p/0",
        "/log/tile/0/000.p/999",
    ] {
        let (s, v) = h.get(path, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {v}");
        assert!(v["error"].is_string(), "{path}: {v}");
    }
    let (s, v) = h.get("/api/v1/log", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["size"], 4);
    assert_eq!(v["key"], h.log_key.verifier_key());
}

#[tokio::test]
async fn a_new_log_serves_a_signed_empty_checkpoint() {
    use transparency::open_checkpoint;
    let h = Harness::new();
    let (s, _) = h.call_raw("GET", "/log/checkpoint", None, None).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "before the sequencer's first tick"
    );
    assert_eq!(
        h.store.sequence_log(&h.log_key, 100, now()).unwrap(),
        Some(0)
    );
    // Signed once: the next tick with nothing queued signs nothing.
    assert_eq!(h.store.sequence_log(&h.log_key, 100, now()).unwrap(), None);
    let (s, note) = h.call_raw("GET", "/log/checkpoint", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let cp = open_checkpoint(&note, &h.log_key.verifier(), &[], 0).unwrap();
    assert_eq!(cp.checkpoint.size(), 0);
    // RFC 6962's root of no entries: SHA-256 of the empty string.
    assert_eq!(
        cp.checkpoint.hash().0,
        protocol::Digest::of(b"").0,
        "{}",
        String::from_utf8_lossy(&note)
    );
}

#[tokio::test]
async fn tampering_with_results_or_the_log_is_caught() {
    let h = Harness::new();
    let b = h
        .batch("ising2d", ising_units(3), json!({"spot_check_rate": 0.0}))
        .await;
    let sims = [
        h.volunteer(Kind::Honest).await,
        h.volunteer(Kind::Honest).await,
    ];
    h.run_to_completion(b, &sims, false).await;
    h.seal();
    let fetch = || async {
        let (s, v) = h
            .get(&format!("/api/v1/batches/{b}/proofs"), Some(&h.key))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        bundle_of(v)
    };
    let honest = fetch().await;
    assert!(problems(&h, &honest).is_empty());
    let [u1, u2, u3] = [0, 1, 2].map(|i| honest.units[i].unit);

    // A canonical digest edited in the database.
    h.tamper(
        &format!("UPDATE units SET canonical_digest = ?1 WHERE id = {u1}"),
        Some(vec![7; 32]),
    );
    // A log entry edited: its digest changed to another hex string.
    let e2 = &honest.units[1].entries[0];
    let at = e2.entry.find("\"digest\":\"").unwrap() + 10;
    let flipped = if &e2.entry[at..at + 1] == "0" {
        "1"
    } else {
        "0"
    };
    let edited = format!("{}{flipped}{}", &e2.entry[..at], &e2.entry[at + 1..]);
    assert_ne!(edited, e2.entry);
    h.tamper(
        &format!("UPDATE log_entries SET body = ?1 WHERE idx = {}", e2.index),
        Some(edited.into_bytes()),
    );
    // A log entry removed.
    let e3 = honest.units[2].entries[0].index;
    h.tamper(&format!("DELETE FROM log_entries WHERE idx = {e3}"), None);

    let p = problems(&h, &fetch().await);
    assert_eq!(p.len(), 4, "{p:?}");
    assert!(
        p[0].starts_with(&format!("unit {u1}: the result presented is 0707")),
        "{p:?}"
    );
    assert!(
        p[1].starts_with(&format!(
            "unit {u2}: log entry #{} is not the one in the log",
            e2.index
        )),
        "{p:?}"
    );
    // The edited entry proves nothing, so nothing accepts unit 2's result either.
    assert_eq!(
        p[2..],
        [
            format!("unit {u2}: presented as canonical, but no log entry accepts it"),
            format!("unit {u3}: presented as canonical, but no log entry accepts it")
        ]
    );
}

#[tokio::test]
async fn edited_numbers_edited_params_and_a_unit_left_out_are_caught() {
    // What a coordinator's owner would edit that digests alone do not show: the summary
    // scientists use, a unit's params, and which units a batch has.
    let h = Harness::new();
    let b = h
        .batch("ising2d", ising_units(3), json!({"spot_check_rate": 0.0}))
        .await;
    let other = h
        .batch("ising2d", ising_units(1), json!({"spot_check_rate": 0.0}))
        .await;
    let sims = [
        h.volunteer(Kind::Honest).await,
        h.volunteer(Kind::Honest).await,
    ];
    h.run_to_completion(b, &sims, false).await;
    h.seal();
    let fetch = || async {
        let (s, v) = h
            .get(&format!("/api/v1/batches/{b}/proofs"), Some(&h.key))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        bundle_of(v)
    };
    let honest = fetch().await;
    assert!(problems(&h, &honest).is_empty());
    let [u1, u2, u3] = [0, 1, 2].map(|i| honest.units[i].unit);
    let index = |i: usize| honest.units[i].entries[0].index;

    h.tamper(
        &format!(
            "UPDATE units SET summary = '{{\"abs_m\":0.999,\"abs_m_err\":0.001}}' WHERE id = {u1}"
        ),
        None,
    );
    let p = problems(&h, &fetch().await);
    assert_eq!(
        p,
        vec![format!(
            "unit {u1}: the summary presented is not the one log entry #{} accepted",
            index(0)
        )]
    );

    h.tamper(
        &format!(
            "UPDATE units SET params = '{{\"L\":16,\"beta\":0.9,\"sweeps\":20,\"seed\":2}}' WHERE id = {u2}"
        ),
        None,
    );
    let p = problems(&h, &fetch().await);
    assert!(
        p.contains(&format!(
            "unit {u2}: log entry #{} is for other parameters or another kernel than presented",
            index(1)
        )),
        "{p:?}"
    );
    assert!(
        p.iter().any(|p| p.starts_with(
            "bundle: the units presented (their ids and parameters) are not the ones committed"
        )),
        "{p:?}"
    );

    // Unit 3 moved out of the batch: the bundle has 2 of the 3 units committed.
    h.tamper(
        &format!("UPDATE units SET batch_id = {other} WHERE id = {u3}"),
        None,
    );
    let p = problems(&h, &fetch().await);
    assert!(
        p.iter().any(|p| p.starts_with(
            "bundle: the batch was committed with 3 units (log entry #0), the bundle presents 2"
        )),
        "{p:?}"
    );
}

#[tokio::test]
async fn a_backtracked_result_is_revoked_and_superseded_in_the_log() {
    use transparency::{EntryKind, LogEntry};
    let h = Harness::new();
    let units = ising_units(1);
    let want = reference_digests(&units);
    let b1 = h
        .batch("ising2d", units, json!({"spot_check_rate": 0.0}))
        .await;
    let x = h.volunteer(Kind::Honest).await;
    let y = h.volunteer(Kind::Honest).await;
    let x_token = x.token.clone();
    h.run_to_completion(b1, &[x, y], false).await;
    h.seal();
    let before = {
        let (_, v) = h
            .get(&format!("/api/v1/batches/{b1}/proofs"), Some(&h.key))
            .await;
        bundle_of(v)
    };
    // X is caught lying on a spot-checked unit: b1's result, made on its word, is revoked.
    h.batch(
        "ising2d",
        vec![json!({"L": 16, "beta": 0.7, "sweeps": 10, "seed": 99})],
        json!({"min_quorum": 1, "target_results": 1, "spot_check_rate": 1.0}),
    )
    .await;
    let turncoat = Sim {
        token: x_token,
        kind: Kind::Liar(2),
    };
    assert_eq!(h.round(std::slice::from_ref(&turncoat), 1).await, 1);
    h.run_spot_checks();
    h.seal();
    let (_, v) = h
        .get(&format!("/api/v1/batches/{b1}/proofs"), Some(&h.key))
        .await;
    let revoked = bundle_of(v);
    assert!(
        problems(&h, &revoked).is_empty(),
        "{:?}",
        problems(&h, &revoked)
    );
    let entries: Vec<LogEntry> = revoked.units[0]
        .entries
        .iter()
        .map(|e| LogEntry::parse(e.entry.as_bytes()).unwrap())
        .collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].kind, EntryKind::Revoked);
    assert_eq!(
        entries[1].supersedes,
        Some(revoked.units[0].entries[0].index)
    );
    assert!(entries[1].reason.as_deref().unwrap().contains("caught"));
    // The old bundle, presented again with a newer checkpoint, is caught: the result it shows
    // as current was revoked.
    let mut stale = revoked.clone();
    stale.units[0].state = before.units[0].state;
    stale.units[0].digest = before.units[0].digest;
    let p = problems(&h, &stale);
    assert!(p.iter().any(|p| p.contains("revoked it")), "{p:?}");

    // An honest volunteer re-makes the result: accepted again, superseding the revocation.
    let z = h.volunteer(Kind::Honest).await;
    h.run_to_completion(b1, std::slice::from_ref(&z), true)
        .await;
    h.seal();
    let (_, v) = h
        .get(&format!("/api/v1/batches/{b1}/proofs"), Some(&h.key))
        .await;
    let remade = bundle_of(v);
    assert!(
        problems(&h, &remade).is_empty(),
        "{:?}",
        problems(&h, &remade)
    );
    let last = LogEntry::parse(remade.units[0].entries[2].entry.as_bytes()).unwrap();
    assert_eq!(last.kind, EntryKind::Accepted);
    assert_eq!(last.digest, want[0]);
    assert_eq!(last.supersedes, Some(remade.units[0].entries[1].index));
    // The whole log, revocation and re-acceptance included, keeps a monitor's rules.
    let size = h.seal();
    let bytes = h.store.log_entry_bundle(0, size as u32).unwrap().unwrap();
    let mut rules = transparency::monitor::MonitorState::default();
    let entries = transparency::split_entry_bundle(&bytes).unwrap();
    for (i, e) in entries.iter().enumerate() {
        rules.apply(i as u64, e).unwrap();
    }
    assert_eq!(entries.len() as u64, size);
}

#[tokio::test]
async fn witnesses_cosignatures_are_checked_kept_and_served() {
    use transparency::{ALG_COSIGNATURE_V1, NoteKey, open_checkpoint};
    let w1 = NoteKey::from_seed("w1.test", ALG_COSIGNATURE_V1, [1; 32]).unwrap();
    let w2 = NoteKey::from_seed("w2.test", ALG_COSIGNATURE_V1, [2; 32]).unwrap();
    let stranger = NoteKey::from_seed("w1.test", ALG_COSIGNATURE_V1, [3; 32]).unwrap();
    let h = Harness::with_witnesses(vec![w1.verifier_key(), w2.verifier_key()]);
    let b = h
        .batch("ising2d", ising_units(2), json!({"spot_check_rate": 0.0}))
        .await;
    let sims = [
        h.volunteer(Kind::Honest).await,
        h.volunteer(Kind::Honest).await,
    ];
    h.run_to_completion(b, &sims, false).await;
    let size = h.seal();
    let (_, note) = h.call_raw("GET", "/log/checkpoint", None, None).await;
    let note = String::from_utf8(note).unwrap();
    let text = note.split("\n\n").next().unwrap().to_owned() + "\n";
    let line = |k: &NoteKey| {
        String::from_utf8(k.cosign(text.as_bytes(), now() as u64).unwrap().to_bytes()).unwrap()
    };
    // Proofs want both witnesses by default: none has cosigned yet.
    let proofs = format!("/api/v1/batches/{b}/proofs");
    let (s, _) = h.get(&proofs, Some(&h.key)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = h.get(&format!("{proofs}?witnesses=3"), Some(&h.key)).await;
    assert_eq!(
        (s, &v["field"]),
        (StatusCode::BAD_REQUEST, &json!("witnesses"))
    );

    let post = |size: u64, line: String| {
        h.post(
            "/api/v1/log/cosignatures",
            None,
            json!({"size": size, "cosignature": line}),
        )
    };
    let (s, v) = post(size, line(&w1)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["witness"], "w1.test");
    // A key that is not the configured witness's, garbage, and an unknown checkpoint.
    let (s, v) = post(size, line(&stranger)).await;
    assert_eq!(
        (s, &v["field"]),
        (StatusCode::BAD_REQUEST, &json!("cosignature")),
        "{v}"
    );
    let (s, v) = post(size, "— w1.test AAAA".into()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = post(size + 5, line(&w2)).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = h
        .post("/api/v1/log/cosignatures", None, json!({"size": size}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    let (s, _) = post(size, line(&w2)).await;
    assert_eq!(s, StatusCode::OK);
    let (_, served) = h.call_raw("GET", "/log/checkpoint", None, None).await;
    let ws = [w1.verifier(), w2.verifier()];
    let cp = open_checkpoint(&served, &h.log_key.verifier(), &ws, 2).unwrap();
    assert_eq!(cp.witnesses, vec!["w1.test", "w2.test"]);
    let (s, v) = h.get(&proofs, Some(&h.key)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let opts = transparency::VerifyOptions {
        log_key: Some(h.log_key.verifier_key()),
        witnesses: vec![w1.verifier_key(), w2.verifier_key()],
        min_witnesses: 2,
    };
    let r = transparency::verify_bundle(&bundle_of(v), &opts);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.verified.len(), 2);
}

#[tokio::test]
async fn the_log_resumes_the_same_tree_and_refuses_another_key() {
    use transparency::{ALG_ED25519, NoteKey, hash_from_b64, open_checkpoint};
    let h = Harness::new();
    let b = h
        .batch("ising2d", ising_units(2), json!({"spot_check_rate": 0.0}))
        .await;
    let sims = [
        h.volunteer(Kind::Honest).await,
        h.volunteer(Kind::Honest).await,
    ];
    h.run_to_completion(b, &sims, false).await;
    // Each batch: its commitment, then two receipts.
    assert_eq!(h.seal(), 3);
    let (_, first) = h.call_raw("GET", "/log/checkpoint", None, None).await;
    let first = open_checkpoint(&first, &h.log_key.verifier(), &[], 0).unwrap();

    // A second coordinator on the same database (a restart, or a peer) continues the tree.
    let again = match &h.db_url {
        DbHandle::Sqlite(p) => Engine::sqlite(p).unwrap(),
        DbHandle::Postgres(url) => Engine::postgres(url).unwrap(),
    };
    let b2 = h
        .batch(
            "ising2d",
            ising_units(3)[1..].to_vec(),
            json!({"spot_check_rate": 0.0}),
        )
        .await;
    h.run_to_completion(b2, &sims, false).await;
    // Another key may not sign this log.
    let impostor = NoteKey::from_seed(h.log_key.name(), ALG_ED25519, [9; 32]).unwrap();
    let err = again.sequence_log(&impostor, 100, now()).unwrap_err();
    assert!(err.to_string().contains("same log key"), "{err}");
    assert_eq!(again.sequence_log(&h.log_key, 100, now()).unwrap(), Some(6));
    let (_, second) = h.call_raw("GET", "/log/checkpoint", None, None).await;
    let second = open_checkpoint(&second, &h.log_key.verifier(), &[], 0).unwrap();
    assert_eq!(second.checkpoint.size(), 6);
    let (s, v) = h.get("/api/v1/log/consistency?from=3&to=6", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let proof: Vec<_> = v["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| hash_from_b64(x.as_str().unwrap()).unwrap())
        .collect();
    transparency::tlog_tiles::check_tree(
        &proof,
        6,
        *second.checkpoint.hash(),
        3,
        *first.checkpoint.hash(),
    )
    .unwrap();
    for bad in ["from=3&to=2", "from=1&to=9", "from=x&to=1", ""] {
        let (s, v) = h.get(&format!("/api/v1/log/consistency?{bad}"), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
}

#[tokio::test]
async fn a_receipt_names_the_credibility_bound_its_result_reached() {
    use transparency::{EntryKind, LogEntry};
    let h = Harness::new();
    let b = h
        .batch(
            "ising2d",
            ising_units(2),
            json!({"replication": "credibility", "target_error": 0.01, "spot_check_rate": 0.0}),
        )
        .await;
    let sims = [
        h.volunteer(Kind::Honest).await,
        h.volunteer(Kind::Honest).await,
        h.volunteer(Kind::Honest).await,
    ];
    h.run_to_completion(b, &sims, false).await;
    h.seal();
    let (_, v) = h
        .get(&format!("/api/v1/batches/{b}/proofs"), Some(&h.key))
        .await;
    let bundle = bundle_of(v);
    assert!(problems(&h, &bundle).is_empty());
    for u in &bundle.units {
        let e = LogEntry::parse(u.entries.last().unwrap().entry.as_bytes()).unwrap();
        assert_eq!(e.kind, EntryKind::Accepted);
        assert_eq!(e.evidence.target_error, Some(0.01));
        let bound = e.evidence.error_bound.unwrap();
        // Reached, and no further than needed: new volunteers (doubt about f = 0.1 each,
        // less as they are confirmed) agree until the bound is met.
        assert!(bound > 0.0 && bound <= 0.01, "{bound}");
        assert!(e.replicas.len() >= 2, "{e:?}");
    }
}

#[tokio::test]
async fn a_cancelled_batch_stops_and_keeps_what_was_settled() {
    let h = Harness::new();
    let units = ising_units(4);
    let want = reference_digests(&units);
    let b = h
        .batch("ising2d", units, json!({"spot_check_rate": 1.0}))
        .await;
    h.run_spot_checks();
    let sims = [
        h.volunteer(Kind::Honest).await,
        h.volunteer(Kind::Honest).await,
    ];
    // One unit settled (both volunteers take the same first unit), the rest not yet.
    for s in &sims {
        let (_, w) = h
            .post("/api/v1/work", Some(&s.token), json!({"max_units": 1}))
            .await;
        let a = &w["assignments"][0];
        let (st, _) = h
            .post("/api/v1/results", Some(&s.token), report_for(a, s.kind))
            .await;
        assert_eq!(st, StatusCode::ACCEPTED);
    }
    // A volunteer holds a replica of another unit when the batch is cancelled.
    let (_, held) = h
        .post(
            "/api/v1/work",
            Some(&sims[0].token),
            json!({"max_units": 1}),
        )
        .await;
    let held = held["assignments"][0].clone();
    // Another spot-check waits in the queue.
    assert!(h.store.queued_spot_checks().unwrap() == 0);
    let b2 = h
        .batch("ising2d", ising_units(2), json!({"spot_check_rate": 1.0}))
        .await;
    assert_eq!(h.store.queued_spot_checks().unwrap(), 2);

    // Someone else's key cannot cancel it; the owner can, twice.
    let other = new_secret("qgk_");
    h.store
        .create_key("other", &hash_secret(&other), false, now())
        .unwrap();
    let cancel = format!("/api/v1/batches/{b2}/cancel");
    let (s, _) = h.post(&cancel, Some(&other), json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h
        .post(&format!("/api/v1/batches/{b}/cancel"), None, json!({}))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, st) = h.post(&cancel, Some(&h.key), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{st}");
    assert_eq!(st["done"], true);
    assert!(st["cancelled_at"].is_i64());
    assert_eq!(
        h.store.queued_spot_checks().unwrap(),
        0,
        "its queued checks went"
    );
    let (s, again) = h.post(&cancel, Some(&h.key), json!({})).await;
    assert_eq!(
        (s, &again["cancelled_at"]),
        (StatusCode::OK, &st["cancelled_at"])
    );

    let (s, st) = h
        .post(
            &format!("/api/v1/batches/{b}/cancel"),
            Some(&h.key),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{st}");
    assert_eq!(st["by_state"]["canonical"], 1, "{st}");
    assert_eq!(st["by_state"]["failed"], 3, "{st}");
    let rows = results(&h, b).await;
    let settled: Vec<&Value> = rows.iter().filter(|r| r["state"] == "canonical").collect();
    assert_eq!(settled.len(), 1);
    let i = rows.iter().position(|r| r["state"] == "canonical").unwrap();
    assert_eq!(rows[i]["digest"], json!(want[i]));
    for r in rows.iter().filter(|r| r["state"] == "failed") {
        assert!(
            r["fail_reason"].as_str().unwrap().starts_with("cancelled"),
            "{r}"
        );
    }
    // Nothing of it is handed out any more; the held replica may still report.
    let (s, w) = h
        .post(
            "/api/v1/work",
            Some(&sims[1].token),
            json!({"max_units": 4}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(w["assignments"].as_array().unwrap().len(), 0, "{w}");
    let (s, ack) = h
        .post(
            "/api/v1/results",
            Some(&sims[0].token),
            report_for(&held, Kind::Honest),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{ack}");
    assert_eq!(
        results(&h, b)
            .await
            .iter()
            .filter(|r| r["state"] == "failed")
            .count(),
        3
    );
}

#[tokio::test]
async fn errors_from_the_router_and_extractors_are_json_too() {
    let h = Harness::new();
    // A method the route does not take, with its Allow header kept.
    let (s, v) = h.get("/api/v1/results", None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{v}");
    assert!(v["error"].is_string(), "{v}");
    let req = Request::builder()
        .method("DELETE")
        .uri("/api/v1/batches")
        .body(Body::empty())
        .unwrap();
    let resp = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(resp.headers().contains_key("allow"));
    // A path parameter that is not a number.
    let (s, v) = h.get("/api/v1/batches/abc", Some(&h.key)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("abc"), "{v}");
    // A spec that is not UTF-8.
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/specs")
        .header("authorization", format!("Bearer {}", h.key))
        .header("content-type", "text/plain")
        .body(Body::from(vec![0xff, 0xfe, 0x00]))
        .unwrap();
    let resp = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(v["error"].is_string(), "{v}");
}

#[tokio::test]
async fn registrations_are_rate_limited_per_network() {
    let h = Harness::new();
    let register = |ip: &str| {
        let addr: std::net::SocketAddr = format!("{ip}:40000").parse().unwrap();
        let mut req = Request::builder()
            .method("POST")
            .uri("/api/v1/volunteers")
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
        h.app.clone().oneshot(req)
    };
    // The default: 10 a minute, 30 at once, per /24.
    for i in 0..30 {
        let r = register(&format!("198.51.100.{}", i % 200)).await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = register("198.51.100.77").await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=6).contains(&wait), "{wait}");
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("198.51.100.0/24"),
        "{v}"
    );
    // Another network registers as usual.
    let r = register("203.0.113.5").await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(h.store.status().unwrap().volunteers, 31);
}

#[tokio::test]
async fn volunteers_without_a_record_cannot_fail_or_hoard_a_batch() {
    let h = Harness::with_default_allowance();
    let units = ising_units(12);
    let want = reference_digests(&units);
    let b = h
        .batch(
            "ising2d",
            units,
            json!({"spot_check_rate": 0.0, "max_error_results": 2, "max_total_results": 4}),
        )
        .await;
    // Three fresh tokens answer everything they get with an error.
    let mut errors = 0;
    for _ in 0..3 {
        let sybil = h.volunteer(Kind::Honest).await;
        let mut held = Vec::new();
        loop {
            let (s, w) = h
                .post("/api/v1/work", Some(&sybil.token), json!({"max_units": 64}))
                .await;
            if s == StatusCode::FORBIDDEN {
                assert!(
                    w["error"].as_str().unwrap().contains("no valid result"),
                    "{w}"
                );
                break;
            }
            assert_eq!(s, StatusCode::OK, "{w}");
            let got = w["assignments"].as_array().unwrap().clone();
            // A new volunteer holds two at most; each error shrinks that.
            assert!(got.len() <= 2, "{w}");
            // What it holds comes back within ten minutes, not the batch's hour.
            for a in &got {
                let left = a["deadline"].as_i64().unwrap() - now();
                assert!((590..=600).contains(&left), "{a}");
            }
            held.push(got.len());
            for a in got {
                let (s, ack) = h
                    .post(
                        "/api/v1/results",
                        Some(&sybil.token),
                        json!({"assignment_id": a["assignment_id"], "error": "x",
                               "kernel_version": a["kernel_version"]}),
                    )
                    .await;
                assert_eq!(s, StatusCode::ACCEPTED, "{ack}");
                errors += 1;
            }
            assert!(held.len() < 20, "never refused: {held:?}");
        }
        assert_eq!(held[0], 2, "{held:?}");
        assert!(held[1..].iter().all(|n| *n == 1), "throttled: {held:?}");
    }
    assert_eq!(errors, 3 * 8);
    // 24 errors on 12 units that fail at 2: none failed; the errors cost nothing.
    let (_, st) = h.get(&format!("/api/v1/batches/{b}"), Some(&h.key)).await;
    assert_eq!(st["by_state"]["failed"], 0, "{st}");
    // Honest volunteers still get work, and finish the batch.
    let honest = [
        h.volunteer(Kind::Honest).await,
        h.volunteer(Kind::Honest).await,
    ];
    h.run_to_completion(b, &honest, false).await;
    let rows = results(&h, b).await;
    for (r, d) in rows.iter().zip(&want) {
        assert_eq!(r["state"], "canonical", "{r}");
        assert_eq!(r["digest"], json!(d));
    }
    // A volunteer with a record is allowed more at once.
    let (s, w) = h
        .post(
            "/api/v1/work",
            Some(&honest[0].token),
            json!({"max_units": 64}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{w}");
}

// ---- Kernel packages ----

/// An example package's files (`examples/kernels/NAME`) as the upload's JSON.
fn package_files(name: &str) -> protocol::package::PackageFiles {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/kernels")
        .join(name);
    shaders::package::read_dir(&dir).unwrap()
}

impl Harness {
    fn operator_key(&self) -> String {
        let k = new_secret("qgk_");
        self.store
            .create_key("operator", &hash_secret(&k), true, now())
            .unwrap();
        k
    }

    /// Uploads a package; its `name@hash`.
    async fn push(&self, files: &protocol::package::PackageFiles) -> String {
        let (s, v) = self
            .post("/api/v1/kernels", Some(&self.key), json!(files))
            .await;
        assert!(s == StatusCode::CREATED || s == StatusCode::OK, "{s} {v}");
        v["kernel"].as_str().unwrap().to_owned()
    }

    /// Asks for work as `sim` from one adapter class; the assignments.
    async fn work(&self, sim: &Sim, max: u32, builtin_only: bool) -> Vec<Value> {
        let (s, w) = self
            .post(
                "/api/v1/work",
                Some(&sim.token),
                json!({"max_units": max, "builtin_only": builtin_only,
                       "adapter": {"name": "llvmpipe", "backend": "vulkan", "client": "test/1"}}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{w}");
        w["assignments"].as_array().unwrap().clone()
    }

    /// Reports `output` (any bytes of the right length: no GPU here) for a package's unit.
    async fn report_bytes(&self, sim: &Sim, a: &Value, output: &[u8]) -> (StatusCode, Value) {
        self.post(
            "/api/v1/results",
            Some(&sim.token),
            json!({
                "assignment_id": a["assignment_id"],
                "digest": Digest::of_data(output),
                "output": base64::engine::general_purpose::STANDARD.encode(output),
                "kernel_version": a["kernel_version"],
            }),
        )
        .await
    }

    /// Two volunteers with a record: each computed a built-in unit that quorum validated.
    async fn proven_pair(&self) -> [Sim; 2] {
        let sims = [
            self.volunteer(Kind::Honest).await,
            self.volunteer(Kind::Honest).await,
        ];
        let batch = self
            .batch("ising2d", ising_units(1), json!({"spot_check_rate": 0.0}))
            .await;
        for sim in &sims {
            for a in self.work(sim, 1, true).await {
                let (s, ack) = self
                    .post(
                        "/api/v1/results",
                        Some(&sim.token),
                        report_for(&a, Kind::Honest),
                    )
                    .await;
                assert_eq!(s, StatusCode::ACCEPTED, "{ack}");
            }
        }
        let (_, st) = self
            .get(&format!("/api/v1/batches/{batch}"), Some(&self.key))
            .await;
        assert_eq!(st["by_state"]["canonical"], 1, "{st}");
        sims
    }
}

#[tokio::test]
async fn a_package_is_checked_before_it_is_stored_and_served_by_its_hash() {
    let h = Harness::new();
    let good = package_files("percolation2d");
    // Refusals name the file and the field or line; nothing is stored.
    let mut broken = good.clone();
    broken.wgsl = format!("fn nope( {{\n{}", broken.wgsl);
    let (s, v) = h.post("/api/v1/kernels", Some(&h.key), json!(broken)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(
        v["field"]
            .as_str()
            .unwrap()
            .split(':')
            .take(2)
            .collect::<Vec<_>>(),
        ["kernel.wgsl", "1"],
        "{v}"
    );
    let mut bad_manifest = good.clone();
    bad_manifest.manifest = bad_manifest
        .manifest
        .replace("length = \"3 * samples\"", "length = \"3 * sample\"");
    let (s, v) = h
        .post("/api/v1/kernels", Some(&h.key), json!(bad_manifest))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["field"], "kernel.toml: buffers[1].length", "{v}");
    let mut huge = good.clone();
    huge.wgsl.push_str(&"// padding\n".repeat(1 << 20));
    let (s, v) = h.post("/api/v1/kernels", Some(&h.key), json!(huge)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["field"], "kernel.wgsl", "{v}");
    let (s, _) = h.post("/api/v1/kernels", None, json!(good)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (_, list) = h.get("/api/v1/kernels", None).await;
    assert_eq!(list["packages"], json!([]), "nothing stored: {list}");
    // A good one: pending, the same again changes nothing.
    let (s, v) = h.post("/api/v1/kernels", Some(&h.key), json!(good)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["status"], "pending");
    let hash = good.hash();
    assert_eq!(v["kernel"], format!("percolation2d@{hash}"));
    let (s, _) = h.post("/api/v1/kernels", Some(&h.key), json!(good)).await;
    assert_eq!(s, StatusCode::OK);
    // Served by hash: the bytes hash to it.
    let (s, bytes) = h
        .call_raw("GET", &format!("/api/v1/kernels/{hash}"), None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        protocol::package::PackageFiles::from_canonical(&bytes, &hash),
        Some(good.clone())
    );
    let (s, _) = h
        .get(&format!("/api/v1/kernels/{}", Digest::of(b"none")), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h.get("/api/v1/kernels/zz", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Listed beside the built-ins, with what the science page plots.
    let (_, list) = h.get("/api/v1/kernels", None).await;
    let k = list["kernels"].as_array().unwrap();
    assert!(k.iter().any(|x| x["name"] == "ising2d"));
    let p = k.iter().find(|x| x["hash"] == json!(hash)).expect("listed");
    assert_eq!(p["status"], "pending");
    assert_eq!(p["observables"][0]["key"], "spanning_fraction");
    assert_eq!(list["packages"][0]["status"], "pending");
}

#[tokio::test]
async fn an_unapproved_package_is_never_dispatched_and_an_approved_one_is_verified_by_quorum() {
    let h = Harness::new();
    let op = h.operator_key();
    let kernel = h.push(&package_files("percolation2d")).await;
    let hash = kernel.split_once('@').unwrap().1.to_owned();
    let units: Vec<Value> = (0..3)
        .map(|i| json!({"L": 8, "p": 0.6, "samples": 2, "seed": i}))
        .collect();
    let (s, created) = h
        .post(
            "/api/v1/batches",
            Some(&h.key),
            json!({"kernel": kernel, "units": units, "policy": {}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let batch = created["batch_id"].as_i64().unwrap();
    // No verifier worker here: no spot-check, and the scientist is told.
    assert_eq!(created["spot_checks"], 0, "{created}");
    assert!(
        created["verification"]
            .as_str()
            .unwrap()
            .contains("quorum only"),
        "{created}"
    );
    let (_, st) = h
        .get(&format!("/api/v1/batches/{batch}"), Some(&h.key))
        .await;
    assert_eq!(st["package"]["status"], "pending", "{st}");
    let sims = [
        h.volunteer(Kind::Honest).await,
        h.volunteer(Kind::Honest).await,
    ];
    // A built-in batch beside it goes out; the pending package's units never do.
    h.batch("ising2d", ising_units(2), json!({"spot_check_rate": 0.0}))
        .await;
    let got = h.work(&sims[0], 8, false).await;
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|a| a["kernel"] == "ising2d"), "{got:?}");
    // Only an operator approves.
    let (s, _) = h
        .post(
            &format!("/api/v1/kernels/{hash}/approve"),
            Some(&h.key),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = h
        .post(
            &format!("/api/v1/kernels/{hash}/approve"),
            Some(&op),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "approved");
    // A volunteer that asks for built-in kernels only gets none of it.
    assert!(
        h.work(&sims[1], 8, true)
            .await
            .iter()
            .all(|a| a["kernel"] == "ising2d")
    );
    // Now it goes out, with whose code it is and the plan for its params.
    let a0 = h.work(&sims[0], 8, false).await;
    assert_eq!(a0.len(), 3, "{a0:?}");
    let a = &a0[0];
    assert_eq!(a["kernel"], kernel);
    assert_eq!(a["package"]["name"], "percolation2d");
    assert_eq!(a["package"]["approved"], true);
    let run: protocol::package::PackageRun = serde_json::from_value(a["package"].clone()).unwrap();
    let plan = protocol::package::PackagePlan::try_from(run.plan).unwrap();
    assert_eq!(plan.total_steps, 2);
    let len = a["output_len"].as_u64().unwrap() as usize;
    assert_eq!(len, 24);
    // Wrong length, wrong version: refused as for built-ins.
    let (s, _) = h.report_bytes(&sims[0], a, &[0; 12]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Two volunteers agree: canonical, with the package's summary, hash in the receipt.
    let a1 = h.work(&sims[1], 8, false).await;
    let out = [[1u8, 0, 0, 0, 20, 0, 0, 0, 1, 0, 0, 0]; 2].concat();
    for (sim, list) in [(&sims[0], &a0), (&sims[1], &a1)] {
        for a in list.iter().filter(|a| a["kernel"] == kernel) {
            let (s, ack) = h.report_bytes(sim, a, &out).await;
            assert_eq!(s, StatusCode::ACCEPTED, "{ack}");
        }
    }
    let rows = results(&h, batch).await;
    assert!(rows.iter().all(|r| r["state"] == "canonical"), "{rows:?}");
    assert_eq!(rows[0]["summary"]["spanning_fraction"], 1.0);
    assert!((rows[0]["summary"]["largest_fraction"].as_f64().unwrap() - 20.0 / 64.0).abs() < 1e-12);
    let (_, prov) = h
        .get(
            &format!("/api/v1/units/{}", rows[0]["unit_id"]),
            Some(&h.key),
        )
        .await;
    assert_eq!(prov["kernel"], kernel, "{prov}");
    h.seal();
    let (s, bundle) = h
        .get(
            &format!("/api/v1/batches/{batch}/proofs?witnesses=0"),
            Some(&h.key),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{bundle}");
    let entry = bundle["units"][0]["entries"][0]["entry"].as_str().unwrap();
    assert!(
        entry.contains(&hash),
        "the receipt names the package's hash: {entry}"
    );
    // Suspended: held again, and new batches are refused, saying why.
    let (s, v) = h
        .post(
            &format!("/api/v1/kernels/{hash}/suspend"),
            Some(&op),
            json!({"reason": "reviewing"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("reviewing"));
    let (s, v) = h
        .post(
            "/api/v1/batches",
            Some(&h.key),
            json!({"kernel": kernel, "units": [{"L": 8, "p": 0.5, "samples": 1, "seed": 1}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["error"].as_str().unwrap().contains("reviewing"), "{v}");
    // An unknown package is named.
    let (s, v) = h
        .post(
            "/api/v1/batches",
            Some(&h.key),
            json!({"kernel": format!("x@{}", Digest::of(b"x")), "units": [{}]}),
        )
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("kernel")),
        "{v}"
    );
}

#[tokio::test]
async fn errors_from_distinct_volunteers_suspend_a_package_and_its_scientist_is_told() {
    let h = Harness::build_with(|cfg| {
        cfg.work_in_flight = 64;
        cfg.snapshot_max_age = std::time::Duration::ZERO;
        cfg.package_error_volunteers = 2;
    });
    let op = h.operator_key();
    let kernel = h.push(&package_files("potts3")).await;
    let hash = kernel.split_once('@').unwrap().1.to_owned();
    h.post(
        &format!("/api/v1/kernels/{hash}/approve"),
        Some(&op),
        json!({}),
    )
    .await;
    let units: Vec<Value> = (0..4)
        .map(|i| json!({"L": 8, "beta": 1.0, "sweeps": 10, "seed": i}))
        .collect();
    let batch = h
        .batch(
            &kernel,
            units,
            json!({"max_error_results": 10, "max_total_results": 20}),
        )
        .await;
    // A fresh token's errors do not count (no record: a Sybil could suspend anyone's code).
    let fresh = h.volunteer(Kind::Honest).await;
    for a in h.work(&fresh, 1, false).await {
        let (s, _) = h.post("/api/v1/results", Some(&fresh.token), json!({"assignment_id": a["assignment_id"], "error": "lost the device", "kernel_version": 1})).await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    let (_, st) = h
        .get(&format!("/api/v1/batches/{batch}"), Some(&h.key))
        .await;
    assert_eq!(st["package"]["status"], "approved", "{st}");
    assert_eq!(st["package"]["error_volunteers"], 0);
    let sims = h.proven_pair().await;
    for (i, sim) in sims.iter().enumerate() {
        let a = h.work(sim, 1, false).await;
        assert_eq!(a.len(), 1, "volunteer {i} gets the package's work");
        let (s, _) = h
            .post("/api/v1/results", Some(&sim.token), json!({"assignment_id": a[0]["assignment_id"], "error": "a submission ran past its budget", "kernel_version": 1}))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    let (_, st) = h
        .get(&format!("/api/v1/batches/{batch}"), Some(&h.key))
        .await;
    assert_eq!(st["package"]["status"], "suspended", "{st}");
    assert!(
        st["package"]["reason"]
            .as_str()
            .unwrap()
            .contains("past its budget"),
        "{st}"
    );
    // Held: nobody gets its units any more; the coordinator goes on with other work.
    let other = h
        .batch("ising2d", ising_units(1), json!({"spot_check_rate": 0.0}))
        .await;
    let got = h.work(&sims[0], 8, false).await;
    assert!(
        got.iter().all(|a| a["kernel"] == "ising2d") && !got.is_empty(),
        "{got:?}"
    );
    let _ = other;
}

#[tokio::test]
async fn replicas_of_one_adapter_class_that_disagree_flag_a_package_as_nondeterministic() {
    let h = Harness::new();
    let op = h.operator_key();
    let kernel = h.push(&package_files("percolation2d")).await;
    let hash = kernel.split_once('@').unwrap().1.to_owned();
    h.post(
        &format!("/api/v1/kernels/{hash}/approve"),
        Some(&op),
        json!({}),
    )
    .await;
    let units: Vec<Value> = (0..4)
        .map(|i| json!({"L": 8, "p": 0.6, "samples": 1, "seed": i}))
        .collect();
    let batch = h.batch(&kernel, units, json!({})).await;
    let sims = h.proven_pair().await;
    // Same class (the same client, driver and device), different bytes: a race.
    for round in 0..3u8 {
        for (k, sim) in sims.iter().enumerate() {
            let a = h.work(sim, 1, false).await;
            assert_eq!(a.len(), 1, "round {round}, volunteer {k}");
            let out = [round, k as u8, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0];
            let (s, ack) = h.report_bytes(sim, &a[0], &out).await;
            assert_eq!(s, StatusCode::ACCEPTED, "{ack}");
        }
    }
    let (_, st) = h
        .get(&format!("/api/v1/batches/{batch}"), Some(&h.key))
        .await;
    assert_eq!(st["package"]["status"], "suspended", "{st}");
    assert!(
        st["package"]["reason"]
            .as_str()
            .unwrap()
            .contains("nondeterministic"),
        "{st}"
    );
    assert_eq!(st["package"]["class_disagreements"], 3);
}

#[tokio::test]
async fn a_package_is_spot_checked_by_verifier_workers_only() {
    let h = Harness::new();
    let op = h.operator_key();
    let kernel = h.push(&package_files("percolation2d")).await;
    let hash = kernel.split_once('@').unwrap().1.to_owned();
    h.post(
        &format!("/api/v1/kernels/{hash}/approve"),
        Some(&op),
        json!({}),
    )
    .await;
    // A verifier asks for work: from now on packages' units are sampled.
    let (s, w) = h
        .post("/api/v1/verifier/work", Some(&op), json!({"max_jobs": 1}))
        .await;
    assert_eq!(s, StatusCode::OK, "{w}");
    let units: Vec<Value> = (0..2)
        .map(|i| json!({"L": 8, "p": 0.6, "samples": 1, "seed": i}))
        .collect();
    let (s, created) = h
        .post(
            "/api/v1/batches",
            Some(&h.key),
            json!({"kernel": kernel, "units": units, "policy": {"spot_check_rate": 1.0}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["spot_checks"], 2, "{created}");
    // The built-in CPU pool leaves them alone; a verifier gets them with the plan.
    assert!(
        h.store
            .claim_spot_checks(10, now(), 1, &HashMap::new(), usize::MAX)
            .unwrap()
            .is_empty()
    );
    let (_, w) = h
        .post("/api/v1/verifier/work", Some(&op), json!({"max_jobs": 4}))
        .await;
    let jobs = w["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{w}");
    assert_eq!(jobs[0]["kernel"], kernel);
    assert_eq!(jobs[0]["package"]["hash"], json!(hash));
    // Its answer becomes the coordinator's.
    let out = [1u8, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0];
    let (s, v) = h
        .post("/api/v1/verifier/results", Some(&op), json!({"job_id": jobs[0]["job_id"], "output": base64::engine::general_purpose::STANDARD.encode(out), "kernel_version": 1}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
}
