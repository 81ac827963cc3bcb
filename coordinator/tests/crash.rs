//! Nothing acknowledged is lost: the coordinator is killed with SIGKILL while reports stream
//! in, restarted on the same database, and every report it answered 202 is still there; the
//! batch then finishes with the CPU reference's digests. On SQLite, or with
//! `QG_TEST_BACKEND=postgres` on a scratch PostgreSQL database.

use base64::Engine as _;
use coordinator::store::postgres::ScratchDatabase;
use protocol::Digest;
use serde_json::{Value, json};
use shaders::Job;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::BIN;

struct Server {
    child: Child,
    base: String,
}

/// Where the coordinator keeps its state: `dir`, or a scratch PostgreSQL database.
fn database(dir: &Path) -> (Vec<String>, Option<ScratchDatabase>) {
    let mut args = vec!["--data-dir".to_owned(), dir.display().to_string()];
    if std::env::var("QG_TEST_BACKEND").as_deref() == Ok("postgres") {
        let server = std::env::var("QG_TEST_DATABASE_URL")
            .expect("QG_TEST_BACKEND=postgres needs QG_TEST_DATABASE_URL");
        let db = ScratchDatabase::create(&server, "crash").unwrap();
        args.extend(["--db".to_owned(), db.url.clone()]);
        return (args, Some(db));
    }
    (args, None)
}

fn start(dir: &Path, db: &[String]) -> Server {
    // Two volunteers take the whole batch at once.
    let (child, base) = common::start(db, &["--work-in-flight", "64"], dir);
    Server { child, base }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn post(
    c: &reqwest::blocking::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> reqwest::Result<(u16, Value)> {
    let r = c.post(url).bearer_auth(token).json(body).send()?;
    let s = r.status().as_u16();
    Ok((s, r.json().unwrap_or(Value::Null)))
}

fn get(c: &reqwest::blocking::Client, url: &str, token: &str) -> Value {
    c.get(url)
        .bearer_auth(token)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn report(a: &Value) -> Value {
    let job = Job::new(a["kernel"].as_str().unwrap(), a["params"].clone()).unwrap();
    let r = job.run_cpu(1, &mut |_, _| {}).unwrap();
    json!({"assignment_id": a["assignment_id"], "digest": r.digest, "checkpoints": r.checkpoints,
           "output": base64::engine::general_purpose::STANDARD.encode(&r.output),
           "kernel_version": job.version()})
}

#[test]
fn kill_dash_nine_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _scratch) = database(dir.path());
    let key_out = Command::new(BIN)
        .args(&db)
        .args(["keys", "create", "--name", "crash-test"])
        .output()
        .unwrap();
    assert!(key_out.status.success());
    let key = String::from_utf8(key_out.stdout).unwrap().trim().to_owned();

    let mut server = start(dir.path(), &db);
    let c = http();
    let units: Vec<Value> = (0..40)
        .map(|i| json!({"L": 16, "beta": 0.4, "sweeps": 10, "seed": i + 1}))
        .collect();
    let want: Vec<Digest> = units
        .iter()
        .map(|p| {
            Job::new("ising2d", p.clone())
                .unwrap()
                .run_cpu(1, &mut |_, _| {})
                .unwrap()
                .digest
        })
        .collect();
    let (s, b) = post(
        &c,
        &format!("{}/api/v1/batches", server.base),
        &key,
        &json!({"kernel": "ising2d", "units": units, "policy": {"spot_check_rate": 0.0}}),
    )
    .unwrap();
    assert_eq!(s, 201, "{b}");
    let batch = b["batch_id"].as_i64().unwrap();

    let mut tokens = Vec::new();
    let mut reports = Vec::new();
    for _ in 0..2 {
        let r: Value = c
            .post(format!("{}/api/v1/volunteers", server.base))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let token = r["token"].as_str().unwrap().to_owned();
        let (_, w) = post(
            &c,
            &format!("{}/api/v1/work", server.base),
            &token,
            &json!({"max_units": 64}),
        )
        .unwrap();
        for a in w["assignments"].as_array().unwrap() {
            reports.push((token.clone(), a["unit_id"].as_i64().unwrap(), report(a)));
        }
        tokens.push(token);
    }
    assert_eq!(reports.len(), 80);

    // Stream the reports; kill the coordinator while they flow.
    let acked: Arc<Mutex<Vec<(i64, Value)>>> = Arc::default();
    let sent = Arc::new(AtomicUsize::new(0));
    let streamer = {
        let (acked, sent, base, reports) = (
            acked.clone(),
            sent.clone(),
            server.base.clone(),
            reports.clone(),
        );
        std::thread::spawn(move || {
            let c = http();
            for (token, unit, r) in reports {
                match post(&c, &format!("{base}/api/v1/results"), &token, &r) {
                    Ok((202, _)) => acked.lock().unwrap().push((unit, r)),
                    _ => break,
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let start_wait = Instant::now();
    while sent.load(Ordering::SeqCst) < 30 && start_wait.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(1));
    }
    // The log's checkpoint just before the crash (if the sequencer has signed one yet).
    let before = c
        .get(format!("{}/log/checkpoint", server.base))
        .send()
        .ok()
        .filter(|r| r.status().is_success())
        .and_then(|r| r.bytes().ok());
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    streamer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 30 && acked.len() < 80,
        "killed mid-stream: {} acked",
        acked.len()
    );

    let mut server = start(dir.path(), &db);
    for (unit, r) in &acked {
        let prov = get(&c, &format!("{}/api/v1/units/{unit}", server.base), &key);
        let rep = prov["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["replica_id"] == r["assignment_id"])
            .unwrap_or_else(|| panic!("replica {} lost", r["assignment_id"]));
        assert_eq!(
            rep["digest"], r["digest"],
            "acknowledged report lost: {rep}"
        );
        assert!(
            matches!(rep["state"].as_str(), Some("success" | "valid")),
            "{rep}"
        );
    }
    // Re-send everything: acknowledged ones conflict (already stored), the rest are accepted.
    for (token, _, r) in &reports {
        let (s, v) = post(&c, &format!("{}/api/v1/results", server.base), token, r).unwrap();
        assert!(s == 202 || s == 409, "{s} {v}");
    }
    let status = get(&c, &format!("{}/api/v1/batches/{batch}", server.base), &key);
    assert_eq!(status["done"], true, "{status}");
    let res = get(
        &c,
        &format!("{}/api/v1/batches/{batch}/results", server.base),
        &key,
    );
    for (row, want) in res["units"].as_array().unwrap().iter().zip(&want) {
        assert_eq!(row["state"], "canonical");
        assert_eq!(row["digest"], json!(want));
    }
    // Every result is in the log, receipts queued before the crash included, and the tree
    // after the restart extends the one signed before it.
    let t0 = Instant::now();
    let bundle = loop {
        let v = get(
            &c,
            &format!("{}/api/v1/batches/{batch}/proofs", server.base),
            &key,
        );
        if v["pending"] == 0 {
            break v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "receipts not logged: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let bundle: transparency::ProofBundle = serde_json::from_value(bundle).unwrap();
    // The key the log signs with (this test's own coordinator: no witness here).
    let pinned = transparency::VerifyOptions {
        log_key: Some(bundle.log_key.clone()),
        ..Default::default()
    };
    let report = transparency::verify_bundle(&bundle, &pinned);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.verified.len(), 40);
    let log = transparency::NoteVerifier::parse(&bundle.log_key).unwrap();
    let after = report.checkpoint.unwrap().checkpoint;
    if let Some(before) = before {
        let before = transparency::open_checkpoint(&before, &log, &[], 0)
            .unwrap()
            .checkpoint;
        assert!(after.size() >= before.size());
        let proof = get(
            &c,
            &format!(
                "{}/api/v1/log/consistency?from={}&to={}",
                server.base,
                before.size(),
                after.size()
            ),
            &key,
        );
        let proof: Vec<_> = proof["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| transparency::hash_from_b64(h.as_str().unwrap()).unwrap())
            .collect();
        // Every tree extends the empty one (signed at the first start).
        if before.size() > 0 {
            transparency::tlog_tiles::check_tree(
                &proof,
                after.size(),
                *after.hash(),
                before.size(),
                *before.hash(),
            )
            .unwrap();
        }
    }
    let _ = server.child.kill();
    let _ = server.child.wait();
    let _ = tokens;
}
