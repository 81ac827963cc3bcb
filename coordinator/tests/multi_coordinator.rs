//! Several coordinators on one PostgreSQL database, as an operator scales out: three
//! coordinator processes, 48 simulated volunteers spread over them, and one coordinator killed
//! with SIGKILL mid-batch (its volunteers move to the others). Every report a coordinator
//! acknowledged is kept, no replica is handed out twice (nor two replicas of one unit to one
//! volunteer), and every unit ends canonical with the CPU reference's digest.
//!
//! Needs a PostgreSQL server: `cargo xtask test` provides one (`QG_TEST_DATABASE_URL`).

use base64::Engine as _;
use coordinator::store::postgres::ScratchDatabase;
use serde_json::{Value, json};
use shaders::Job;
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

mod common;
use common::BIN;
const UNITS: u64 = 240;
const VOLUNTEERS: usize = 48;

/// Coordinator processes, killed however the test ends.
struct Fleet(Vec<Child>);

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One of the coordinators: all share the database and the data directory (so the log key).
fn start(db: &str, dir: &std::path::Path) -> (Child, String) {
    let args = ["--db", db, "--data-dir", &dir.to_string_lossy()].map(str::to_owned);
    common::start(&args, &[], dir)
}

/// What the CPU reference reports for a unit.
struct Answer {
    digest: String,
    checkpoints: Value,
    output: String,
    version: u32,
}

fn answer(cache: &Mutex<HashMap<String, Arc<Answer>>>, params: &Value) -> Arc<Answer> {
    let key = params.to_string();
    if let Some(a) = cache.lock().unwrap().get(&key) {
        return a.clone();
    }
    let job = Job::new("ising2d", params.clone()).unwrap();
    let r = job.run_cpu(1, &mut |_, _| {}).unwrap();
    let a = Arc::new(Answer {
        digest: r.digest.to_hex(),
        checkpoints: serde_json::to_value(&r.checkpoints).unwrap(),
        output: base64::engine::general_purpose::STANDARD.encode(&r.output),
        version: job.version(),
    });
    cache.lock().unwrap().insert(key, a.clone());
    a
}

#[test]
#[ignore = "needs PostgreSQL: cargo xtask test runs it with QG_TEST_DATABASE_URL"]
fn three_coordinators_one_killed_lose_nothing_and_hand_out_nothing_twice() {
    let server = std::env::var("QG_TEST_DATABASE_URL")
        .expect("QG_TEST_DATABASE_URL names a PostgreSQL server (cargo xtask test sets it)");
    let scratch = ScratchDatabase::create(&server, "multi").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_out = Command::new(BIN)
        .args(["--db", &scratch.url, "--data-dir"])
        .arg(dir.path())
        .args(["keys", "create", "--name", "multi"])
        .output()
        .unwrap();
    assert!(key_out.status.success(), "{key_out:?}");
    let key = String::from_utf8(key_out.stdout).unwrap().trim().to_owned();

    let (children, bases): (Vec<Child>, Vec<String>) =
        (0..3).map(|_| start(&scratch.url, dir.path())).unzip();
    let mut fleet = Fleet(children);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let units: Vec<Value> = (0..UNITS)
        .map(|i| json!({"L": 16, "beta": 0.3 + 0.001 * i as f64, "sweeps": 4, "seed": i + 1}))
        .collect();
    // The CPU reference's report for each unit, by its params as the coordinator sends them.
    let answers: Mutex<HashMap<String, Arc<Answer>>> = Mutex::default();
    let answers = Arc::new(answers);
    let r = http
        .post(format!("{}/api/v1/batches", bases[1]))
        .bearer_auth(&key)
        .json(&json!({"kernel": "ising2d", "units": units,
                     // Replicas handed out by the coordinator that dies, whose response never
                     // reached the volunteer, are reissued at their deadline.
                     "policy": {"spot_check_rate": 0.1, "deadline_s": 10}}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let batch = r.json::<Value>().unwrap()["batch_id"].as_i64().unwrap();

    // Which coordinators are up (volunteers of a dead one move on).
    let alive: Arc<RwLock<Vec<bool>>> = Arc::new(RwLock::new(vec![true; 3]));
    let acked: Arc<Mutex<Vec<(i64, i64, String)>>> = Arc::default();
    // Reports stored by a request whose answer was lost with the coordinator, sent again.
    let conflicts = Arc::new(AtomicUsize::new(0));
    let assigned: Arc<Mutex<Vec<(i64, i64, usize)>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let reports = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for v in 0..VOLUNTEERS {
        let conflicts = conflicts.clone();
        let (bases, alive, acked, assigned, done, reports, answers) = (
            bases.clone(),
            alive.clone(),
            acked.clone(),
            assigned.clone(),
            done.clone(),
            reports.clone(),
            answers.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let mut home = v % 3;
            let mut token = None;
            let mut held: Vec<Value> = Vec::new();
            while !done.load(Ordering::SeqCst) {
                if !alive.read().unwrap()[home] {
                    home = (home + 1) % 3;
                    continue;
                }
                let base = &bases[home];
                let t = match &token {
                    Some(t) => t,
                    None => match http.post(format!("{base}/api/v1/volunteers")).send() {
                        Ok(r) => {
                            token = r.json::<Value>().unwrap()["token"]
                                .as_str()
                                .map(str::to_owned);
                            continue;
                        }
                        Err(_) => continue,
                    },
                };
                if held.is_empty() {
                    match http
                        .post(format!("{base}/api/v1/work"))
                        .bearer_auth(t)
                        .json(&json!({"max_units": 3}))
                        .send()
                    {
                        Ok(r) if r.status().is_success() => {
                            let w: Value = r.json().unwrap();
                            held = w["assignments"].as_array().cloned().unwrap_or_default();
                            for a in &held {
                                assigned.lock().unwrap().push((
                                    a["assignment_id"].as_i64().unwrap(),
                                    a["unit_id"].as_i64().unwrap(),
                                    v,
                                ));
                            }
                            if held.is_empty() {
                                std::thread::sleep(Duration::from_millis(100));
                            }
                        }
                        // The coordinator died under the request: try again (maybe elsewhere).
                        _ => std::thread::sleep(Duration::from_millis(20)),
                    }
                    continue;
                }
                let body: Vec<Value> = held
                    .iter()
                    .map(|a| {
                        let ans = answer(&answers, &a["params"]);
                        json!({"assignment_id": a["assignment_id"], "digest": ans.digest,
                               "checkpoints": ans.checkpoints, "output": ans.output,
                               "kernel_version": ans.version})
                    })
                    .collect();
                match http
                    .post(format!("{base}/api/v1/results"))
                    .bearer_auth(t)
                    .json(&body)
                    .send()
                {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let out: Value = r.json().unwrap();
                        for (a, res) in held.iter().zip(out.as_array().unwrap()) {
                            // Accepted now, or (re-sent after a crash) stored already.
                            match res["status"].as_u64() {
                                Some(202) => acked.lock().unwrap().push((
                                    a["assignment_id"].as_i64().unwrap(),
                                    a["unit_id"].as_i64().unwrap(),
                                    a["params"].to_string(),
                                )),
                                Some(409) => {
                                    conflicts.fetch_add(1, Ordering::SeqCst);
                                }
                                _ => panic!("report refused: {res}"),
                            }
                        }
                        reports.fetch_add(held.len(), Ordering::SeqCst);
                        held.clear();
                    }
                    // Not acknowledged: sent again, to whichever coordinator is up.
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }));
    }

    // Kill one coordinator a third of the way through.
    let t0 = Instant::now();
    while reports.load(Ordering::SeqCst) < (UNITS as usize * 2) / 3 {
        assert!(t0.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    alive.write().unwrap()[0] = false;
    fleet.0[0].kill().unwrap(); // SIGKILL
    fleet.0[0].wait().unwrap();

    let status_url = format!("{}/api/v1/batches/{batch}", bases[2]);
    loop {
        let s: Value = http
            .get(&status_url)
            .bearer_auth(&key)
            .send()
            .unwrap()
            .json()
            .unwrap();
        if s["done"] == true {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "batch not done: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    done.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }

    // No replica handed out twice; no unit twice to one volunteer.
    let assigned = assigned.lock().unwrap().clone();
    let ids: HashSet<i64> = assigned.iter().map(|a| a.0).collect();
    assert_eq!(
        ids.len(),
        assigned.len(),
        "an assignment id was handed out twice"
    );
    let pairs: HashSet<(i64, usize)> = assigned.iter().map(|a| (a.1, a.2)).collect();
    assert_eq!(
        pairs.len(),
        assigned.len(),
        "a volunteer got two replicas of one unit"
    );

    // Every unit canonical with the reference digest.
    let res: Value = http
        .get(format!("{}/api/v1/batches/{batch}/results", bases[1]))
        .bearer_auth(&key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let rows = res["units"].as_array().unwrap();
    assert_eq!(rows.len(), UNITS as usize);
    for row in rows {
        assert_eq!(row["state"], "canonical", "{row}");
        assert_eq!(
            row["digest"],
            answer(&answers, &row["params"]).digest,
            "{row}"
        );
    }

    // Every acknowledged report is kept, whichever coordinator took it.
    let acked = acked.lock().unwrap().clone();
    let conflicts = conflicts.load(Ordering::SeqCst);
    assert!(
        acked.len() + conflicts >= UNITS as usize * 2 && conflicts < 48,
        "{} acked, {conflicts} sent again after the crash",
        acked.len()
    );
    let mut by_unit: HashMap<i64, Vec<i64>> = HashMap::new();
    for (assignment, unit, _) in &acked {
        by_unit.entry(*unit).or_default().push(*assignment);
    }
    for (unit, assignments) in by_unit {
        let prov: Value = http
            .get(format!("{}/api/v1/units/{unit}", bases[2]))
            .bearer_auth(&key)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let reps = prov["replicas"].as_array().unwrap();
        for a in assignments {
            let rep = reps
                .iter()
                .find(|r| r["replica_id"] == a)
                .unwrap_or_else(|| panic!("acknowledged replica {a} of unit {unit} lost"));
            assert!(
                matches!(rep["state"].as_str(), Some("valid" | "success")),
                "acknowledged replica {a} of unit {unit}: {rep}"
            );
            assert!(rep["digest"].is_string(), "{rep}");
        }
    }

    // Every canonical result is in the one log the coordinators sign together: its receipt
    // proven against a checkpoint, whichever coordinator sequenced it.
    let t0 = Instant::now();
    let bundle = loop {
        let v: Value = http
            .get(format!("{}/api/v1/batches/{batch}/proofs", bases[1]))
            .bearer_auth(&key)
            .send()
            .unwrap()
            .json()
            .unwrap();
        if v["pending"] == 0 {
            break v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "receipts not logged: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let bundle: transparency::ProofBundle = serde_json::from_value(bundle).unwrap();
    // The key the log signs with (this test's own coordinator: no witness here).
    let pinned = transparency::VerifyOptions {
        log_key: Some(bundle.log_key.clone()),
        ..Default::default()
    };
    let report = transparency::verify_bundle(&bundle, &pinned);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.verified.len(), UNITS as usize);
    drop(fleet);
}
