//! Witnesses over C2SP tlog-witness: `qg witness serve` answers `add-checkpoint` as the spec
//! says (each status, persisted before it answers, across restarts), and a coordinator pushes
//! its checkpoints to two of them, unheld by one that is down, wiped (409) or refusing (403).

use coordinator::api::{hash_secret, new_secret, now};
use coordinator::engine::Engine as Coordinator;
use coordinator::server::{Config, FileConfig, load_log_key, start};
use protocol::Digest;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use transparency::witness::AddCheckpoint;
use transparency::{
    ALG_ED25519, LogEntry, MemoryLog, NoteKey, NoteVerifier, check_cosignature, params_hash,
    sign_checkpoint,
};

/// A `qg witness serve` process, killed when dropped.
struct Witness {
    child: Child,
    url: String,
}

impl Drop for Witness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn qg(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qg"))
        .args(args)
        .env_remove("QG_CONFIG")
        .env_remove("HOME")
        .output()
        .unwrap()
}

/// The witness's public key (made in `state` on first use).
fn witness_key(state: &Path, name: &str) -> String {
    let out = qg(&[
        "witness",
        "serve",
        "--state",
        state.to_str().unwrap(),
        "--name",
        name,
        "--print-key",
    ]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Starts `qg witness serve` on `listen` following `log_keys`; waits for its line.
fn serve(state: &Path, listen: &str, log_keys: &[String]) -> Witness {
    let mut args = vec![
        "witness".to_owned(),
        "serve".into(),
        "--state".into(),
        state.to_str().unwrap().into(),
        "--listen".into(),
        listen.into(),
    ];
    for k in log_keys {
        args.extend(["--log-key".to_owned(), k.clone()]);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_qg"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("qg witness listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_owned();
    Witness { child, url }
}

fn tree(n: u32) -> MemoryLog {
    let mut t = MemoryLog::default();
    for i in 0..n {
        t.append(&i.to_be_bytes()).unwrap();
    }
    t
}

/// An add-checkpoint request for the test log grown from `old` to `size` entries.
fn request(log: &NoteKey, old: u64, size: u32) -> AddCheckpoint {
    let t = tree(size);
    AddCheckpoint {
        old,
        proof: if old == 0 || old == u64::from(size) {
            Vec::new()
        } else {
            t.prove_consistency(size.into(), old).unwrap()
        },
        checkpoint: sign_checkpoint(log, size.into(), t.root().unwrap())
            .unwrap()
            .into_bytes(),
    }
}

/// POSTs a request: (status, content type, body).
fn post(url: &str, body: Vec<u8>) -> (u16, String, String) {
    let r = reqwest::blocking::Client::new()
        .post(format!("{url}/add-checkpoint"))
        .body(body)
        .send()
        .unwrap();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.status().as_u16(), ctype, r.text().unwrap())
}

#[test]
fn qg_witness_serve_answers_add_checkpoint_as_c2sp_tlog_witness_says() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("w");
    let wkey = NoteVerifier::parse(&witness_key(&state, "w.test")).unwrap();
    let log = NoteKey::from_seed("log.test", ALG_ED25519, [5; 32]).unwrap();
    let w = serve(&state, "127.0.0.1:0", &[log.verifier_key()]);

    // First contact: old 0, cosigned; the line is the witness's cosignature of the text.
    let req = request(&log, 0, 10);
    let (status, _, body) = post(&w.url, req.to_body());
    assert_eq!(status, 200, "{body}");
    let text = String::from_utf8(req.checkpoint.clone()).unwrap();
    let signed = transparency::note_text(&text);
    assert!(
        body.ends_with('\n') && body.matches('\n').count() == 1,
        "{body:?}"
    );
    assert_eq!(
        check_cosignature(
            signed.as_bytes(),
            body.trim_end(),
            std::slice::from_ref(&wkey)
        )
        .unwrap(),
        "w.test"
    );
    // A stale old size: 409 with the witness's size, in its content type.
    let (status, ctype, body) = post(&w.url, request(&log, 0, 20).to_body());
    assert_eq!(
        (status, ctype.as_str(), body.as_str()),
        (409, "text/x.tlog.size", "10\n")
    );
    // A consistency proof that does not verify: 422.
    let mut bad = request(&log, 10, 20);
    bad.proof[0] = tree(3).root().unwrap();
    assert_eq!(post(&w.url, bad.to_body()).0, 422);
    // Signed by another key of the log's name: 403; a log it does not follow: 404.
    let mut forged = request(&log, 10, 20);
    let impostor = NoteKey::from_seed("log.test", ALG_ED25519, [6; 32]).unwrap();
    forged.checkpoint = sign_checkpoint(&impostor, 20, tree(20).root().unwrap())
        .unwrap()
        .into_bytes();
    assert_eq!(post(&w.url, forged.to_body()).0, 403);
    let stranger = NoteKey::from_seed("other.test", ALG_ED25519, [6; 32]).unwrap();
    assert_eq!(post(&w.url, request(&stranger, 0, 5).to_body()).0, 404);
    // Malformed, or old beyond the checkpoint: 400.
    assert_eq!(post(&w.url, b"old x\n\n".to_vec()).0, 400);
    let mut beyond = request(&log, 10, 10);
    beyond.old = 11;
    assert_eq!(post(&w.url, beyond.to_body()).0, 400);
    // None of those moved it: the consistent extension from 10 is cosigned.
    let (status, _, body) = post(&w.url, request(&log, 10, 20).to_body());
    assert_eq!(status, 200, "{body}");
    // The same checkpoint again: cosigned again.
    assert_eq!(post(&w.url, request(&log, 20, 20).to_body()).0, 200);
    // Persisted before it answered: a restarted witness holds size 20.
    drop(w);
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("witness-logs.json")).unwrap())
            .unwrap();
    assert_eq!(saved["log.test"]["size"], 20);
    let w = serve(&state, "127.0.0.1:0", &[log.verifier_key()]);
    let (status, _, body) = post(&w.url, request(&log, 10, 30).to_body());
    assert_eq!((status, body.as_str()), (409, "20\n"));
    // Concurrent requests from one size: exactly one extension wins, the others get 409 with
    // the winner's size, and the state never goes back.
    let results: Vec<(u16, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = (21..29)
            .map(|n| {
                let (url, log) = (&w.url, &log);
                s.spawn(move || {
                    let (st, _, b) = post(url, request(log, 20, n).to_body());
                    (st, b)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won: Vec<_> = results.iter().filter(|r| r.0 == 200).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("witness-logs.json")).unwrap())
            .unwrap();
    let size = saved["log.test"]["size"].as_u64().unwrap();
    assert!((21..29).contains(&size));
    for r in &results {
        assert!(
            r.0 == 200 || (r.0 == 409 && r.1 == format!("{size}\n")),
            "{r:?}"
        );
    }
    // One process per witness key, and one mode per state directory.
    let out = qg(&[
        "witness",
        "serve",
        "--state",
        state.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--log-key",
        &log.verifier_key(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another qg witness is running"),
        "{out:?}"
    );
    drop(w);
    let out = qg(&[
        "witness",
        "follow",
        "--state",
        state.to_str().unwrap(),
        "--log",
        "http://127.0.0.1:9",
        "--once",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("belongs to a `qg witness serve`"),
        "{out:?}"
    );
    // Without a log to follow it says so.
    let out = qg(&["witness", "serve", "--state", state.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-key"));
}

fn receipt(unit: i64) -> LogEntry {
    serde_json::from_value(json!({
        "kind": "accepted", "unit": unit, "batch": 1, "kernel": "ising2d",
        "kernel_version": 2, "params_sha256": params_hash(&json!({"seed": unit})),
        "digest": Digest::of(&unit.to_be_bytes()), "summary_sha256": null, "checkpoints": [],
        "replicas": [], "evidence": {"replication": "quorum", "min_quorum": 2,
        "target_error": null, "error_bound": null, "spot_check": "none",
        "challenges_passed": 0, "challenges_failed": 0}, "reason": null, "supersedes": null,
        "time": 1
    }))
    .unwrap()
}

/// Waits until `done` holds (a minute at most).
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < Duration::from_secs(60), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_pushes_to_its_witnesses_and_one_down_wiped_or_refusing_holds_nothing_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::resolve(
        FileConfig::default(),
        Some("127.0.0.1:0".parse().unwrap()),
        Some(dir.path().into()),
        None,
        Some(dir.path().into()),
    );
    cfg.demo = false;
    let log_key = load_log_key(&cfg.log_key, &cfg.log_origin)
        .unwrap()
        .verifier_key();
    let (s1, s2, s3) = (
        dir.path().join("w1"),
        dir.path().join("w2"),
        dir.path().join("w3"),
    );
    let keys = [
        witness_key(&s1, "w1.test"),
        witness_key(&s2, "w2.test"),
        witness_key(&s3, "w3.test"),
    ];
    let w1 = serve(&s1, "127.0.0.1:0", std::slice::from_ref(&log_key));
    let w2 = serve(&s2, "127.0.0.1:0", std::slice::from_ref(&log_key));
    // w3 trusts another key for this log's origin: it refuses every checkpoint (403).
    let impostor = NoteKey::from_seed(&cfg.log_origin, ALG_ED25519, [8; 32]).unwrap();
    let w3 = serve(&s3, "127.0.0.1:0", &[impostor.verifier_key()]);
    let w2_addr = w2.url.trim_start_matches("http://").to_owned();
    cfg.witnesses = vec![
        format!("{} {}", keys[0], w1.url),
        format!("{} {}", keys[1], w2.url),
        format!("{} {}", keys[2], w3.url),
    ];
    let store = Arc::new(Coordinator::open(&cfg.db).unwrap());
    let op = new_secret("qgk_");
    store
        .create_key("op", &hash_secret(&op), true, now())
        .unwrap();
    let (addr, _server) = start(store.clone(), &cfg).await.unwrap();
    let url = format!("http://{addr}");
    let log = NoteVerifier::parse(&log_key).unwrap();
    let wv: Vec<NoteVerifier> = keys
        .iter()
        .map(|k| NoteVerifier::parse(k).unwrap())
        .collect();
    // Who cosigned the newest checkpoint, and its size.
    let cosigned = || {
        let note = store.log_checkpoint().unwrap().unwrap_or_default();
        transparency::open_checkpoint(note.as_bytes(), &log, &wv, 0)
            .map(|t| (t.checkpoint.size(), t.witnesses))
            .unwrap_or((0, Vec::new()))
    };
    let dashboard = || {
        let (url, op) = (url.clone(), op.clone());
        async move {
            let d: Value = reqwest::Client::new()
                .get(format!("{url}/api/v1/dashboard"))
                .bearer_auth(op)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            d["witnesses"].as_array().unwrap().clone()
        }
    };

    // Receipts are pushed: both trusting witnesses cosign the checkpoint that holds them.
    store
        .queue_receipts(&(1..=30).map(receipt).collect::<Vec<_>>())
        .unwrap();
    until("both cosign size 30", || {
        cosigned() == (30, vec!["w1.test".to_owned(), "w2.test".to_owned()])
    })
    .await;
    // The refusing one is on the dashboard with its answer; it delayed nothing.
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = dashboard().await;
        if rows[2]["error"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        rows[2]["error"].as_str().unwrap().contains("403 Forbidden"),
        "{rows:?}"
    );
    assert_eq!(rows[2]["url"], w3.url.as_str());
    assert!(rows[2]["failing_since"].is_i64());
    assert!(
        rows[0]["error"].is_null() && rows[0]["size"] == 30,
        "{rows:?}"
    );

    // w2 goes down: appends and w1's cosignatures go on; w2 is shown unreachable.
    drop(w2);
    store
        .queue_receipts(&(31..=60).map(receipt).collect::<Vec<_>>())
        .unwrap();
    until("w1 cosigns size 60 alone", || {
        let (size, who) = cosigned();
        size == 60 && who == vec!["w1.test".to_owned()]
    })
    .await;
    store
        .queue_receipts(&(61..=70).map(receipt).collect::<Vec<_>>())
        .unwrap();
    until("w1 cosigns size 70", || cosigned().0 == 70).await;
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = dashboard().await;
        if rows[1]["error"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        rows[1]["error"].as_str().unwrap().contains("cannot reach"),
        "{rows:?}"
    );
    assert_eq!(rows[1]["size"], 30);

    // Back, its state wiped: it expects old 0 and says so (409 "0"); the log pushes again
    // from 0 and w2 catches up with one request.
    std::fs::remove_file(s2.join("witness-logs.json")).unwrap();
    let _w2 = serve(&s2, &w2_addr, std::slice::from_ref(&log_key));
    until("w2 catches up at 70", || {
        cosigned() == (70, vec!["w1.test".to_owned(), "w2.test".to_owned()])
    })
    .await;
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(s2.join("witness-logs.json")).unwrap())
            .unwrap();
    assert_eq!(saved[&cfg.log_origin]["size"], 70);
    let mut cleared = false;
    for _ in 0..100 {
        if dashboard().await[1]["error"].is_null() {
            cleared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cleared);
    // The refusing witness still refuses and cosigned nothing.
    assert!(!s3.join("witness-logs.json").exists());
}

/// Go's reference code is a log that pushes to `qg witness serve` and checks what it answers
/// (`coordinator/tests/interop/witnesscheck.go`). Skipped, saying so, where Go or x/mod is not
/// installed (`cargo xtask test` installs them as root).
#[test]
fn qg_witness_serve_cosigns_a_log_built_by_go_and_go_verifies_the_cosignature() {
    const GOPATH: &str = "/usr/share/gocode";
    let go =
        std::env::var_os("QG_GO").map_or_else(|| "/usr/bin/go".into(), std::path::PathBuf::from);
    if !go.exists()
        || !Path::new(GOPATH)
            .join("src/golang.org/x/mod/sumdb/tlog")
            .exists()
    {
        eprintln!(
            "SKIPPED: Go's x/mod is not installed (apt-get install golang-go \
             golang-golang-x-mod-dev; cargo xtask test installs them as root)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("witnesscheck");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../coordinator/tests/interop");
    let built = Command::new(&go)
        .args(["build", "-o"])
        .arg(&bin)
        .arg(src.join("witnesscheck.go"))
        .arg(src.join("cosig.go"))
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOCACHE", dir.path().join("gocache"))
        .env("GOFLAGS", "")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let out = Command::new(&bin)
        .arg("key")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let log_key = std::fs::read_to_string(dir.path().join("log.vkey")).unwrap();
    let state = dir.path().join("w");
    let wkey = witness_key(&state, "w.test");
    let w = serve(&state, "127.0.0.1:0", &[log_key.trim().to_owned()]);
    let out = Command::new(&bin)
        .arg("push")
        .arg(dir.path())
        .arg(&w.url)
        .arg(&wkey)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.starts_with("ok go.test/log"),
        "{said}"
    );
    // And a cosignature tampered with on the way fails Go's check: the program's last step;
    // the witness holds the Go log's newest tree.
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("witness-logs.json")).unwrap())
            .unwrap();
    assert_eq!(saved["go.test/log"]["size"], 334);
}
