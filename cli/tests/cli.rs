//! `qg` against a real coordinator on a free port: submit a spec, let simulated volunteers
//! (the real work loop on the CPU reference) finish it, and read results that match the CPU
//! reference; plus the errors a scientist meets.

use client_wasm::native::NativeHost;
use client_wasm::volunteer::{self, Engine, Options};
use coordinator::api::{hash_secret, new_secret, now};
use coordinator::engine::Engine as Coordinator;
use coordinator::server::{Config, FileConfig, start};
use shaders::Job;
use std::process::Command;
use std::sync::Arc;

const SPEC: &str = r#"
name = "cli test"
kernel = "ising2d"
seeds = 2
[params]
L = 16
sweeps = 40
[sweep]
beta = { from = 0.3, to = 0.5, steps = 3 }
[policy]
spot_check_rate = 0.0
"#;

/// A coordinator on a free port with one scientist key: (its dir, store, key, URL).
async fn coordinator_with_key() -> (tempfile::TempDir, Arc<Coordinator>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::resolve(
        FileConfig::default(),
        Some("127.0.0.1:0".parse().unwrap()),
        Some(dir.path().into()),
        None,
        Some(dir.path().into()),
    );
    let store = Arc::new(Coordinator::open(&cfg.db).unwrap());
    let key = new_secret("qgk_");
    store
        .create_key("cli", &hash_secret(&key), false, now())
        .unwrap();
    let (addr, _server) = start(store.clone(), &cfg).await.unwrap();
    (dir, store, key, format!("http://{addr}"))
}

fn qg(server: &str, key: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qg"))
        .args(args)
        .env("QG_SERVER", server)
        .env("QG_API_KEY", key)
        .env_remove("QG_CONFIG")
        .env_remove("HOME")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_watch_and_download_verified_results() {
    let (dir, store, key, url) = coordinator_with_key().await;
    let spec = dir.path().join("spec.toml");
    std::fs::write(&spec, SPEC).unwrap();

    let (code, out, err) = tokio::task::spawn_blocking({
        let (url, key, spec) = (url.clone(), key.clone(), spec.clone());
        move || qg(&url, &key, &["submit", spec.to_str().unwrap(), "--dry-run"])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("6 units of ising2d"), "{err}");
    assert!(out.contains("\"units\": 6"), "{out}");
    assert_eq!(
        store.status().unwrap().batches,
        0,
        "a dry run submits nothing"
    );

    let (code, out, err) = tokio::task::spawn_blocking({
        let (url, key, spec) = (url.clone(), key.clone(), spec.clone());
        move || qg(&url, &key, &["submit", spec.to_str().unwrap()])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let batch: i64 = out.trim().parse().unwrap();

    let vols: Vec<_> = (0..2)
        .map(|i| NativeHost::new(&url, dir.path().join(format!("v{i}"))).unwrap())
        .collect();
    let opts = Options {
        max_units: Some(6),
        ..Default::default()
    };
    let (a, b) = tokio::join!(
        volunteer::run(&vols[0], &Engine::Cpu, &opts),
        volunteer::run(&vols[1], &Engine::Cpu, &opts)
    );
    assert_eq!(a + b, 12);

    let run = |args: Vec<String>| {
        let (url, key) = (url.clone(), key.clone());
        tokio::task::spawn_blocking(move || {
            qg(
                &url,
                &key,
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        })
    };
    let (code, _, err) = run(vec![
        "watch".into(),
        batch.to_string(),
        "--interval".into(),
        "0.2".into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("done: 6 canonical, 0 failed"), "{err}");
    let (code, out, _) = run(vec!["status".into(), batch.to_string()]).await.unwrap();
    assert_eq!(code, 0);
    assert!(
        out.contains("6 of 6 units finished") && out.contains("ETA: done"),
        "{out}"
    );
    let (_, out, _) = run(vec!["status".into()]).await.unwrap();
    assert!(out.contains("cli test") && out.contains("done"), "{out}");

    let csv_path = dir.path().join("r.csv");
    let (code, _, err) = run(vec![
        "results".into(),
        batch.to_string(),
        "--format".into(),
        "csv".into(),
        "-o".into(),
        csv_path.to_str().unwrap().into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    assert_eq!(csv.lines().count(), 7, "{csv}");
    let (code, out, _) = run(vec!["results".into(), batch.to_string()])
        .await
        .unwrap();
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    for u in json["units"].as_array().unwrap() {
        let want = Job::new("ising2d", u["params"].clone())
            .unwrap()
            .run_cpu(1, &mut |_, _| {})
            .unwrap()
            .digest;
        assert_eq!(u["digest"], serde_json::json!(want));
        assert!(csv.contains(&want.to_hex()));
    }
    let (code, out, _) = run(vec![
        "results".into(),
        batch.to_string(),
        "--aggregate".into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0);
    let agg: serde_json::Value = serde_json::from_str(&out).unwrap();
    let points = agg["points"].as_array().unwrap();
    assert_eq!(points.len(), 3, "{agg}");
    assert_eq!(points[0]["n"], 2);
    assert!(points[0]["mean"]["abs_m"].is_number() && points[0]["sem"]["abs_m"].is_number());
    let unit = json["units"][0]["unit_id"].as_i64().unwrap();
    let (code, out, _) = run(vec!["unit".into(), unit.to_string()]).await.unwrap();
    assert_eq!(code, 0);
    assert!(
        out.contains("canonical")
            && out
                .contains("reproduce: cargo run --release -p client-wasm --bin qg-run -- ising2d"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_helpful_and_change_nothing() {
    let (dir, store, key, url) = coordinator_with_key().await;
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "kernel = \"ising2d\"\n[params]\nL = 63\nsweeps = 10\nbeta = 0.4\n",
    )
    .unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, SPEC).unwrap();
    let dead = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let cases: Vec<(String, String, Vec<String>, &str)> = vec![
        (
            url.clone(),
            key.clone(),
            vec!["submit".into(), bad.to_str().unwrap().into()],
            "params.L: must be even",
        ),
        (
            url.clone(),
            key.clone(),
            vec!["submit".into(), "/nonexistent.toml".into()],
            "reading /nonexistent.toml",
        ),
        (
            url.clone(),
            "qgk_wrong".into(),
            vec!["submit".into(), good.to_str().unwrap().into()],
            "did not accept the API key",
        ),
        (
            url.clone(),
            key.clone(),
            vec!["status".into(), "999".into()],
            "no batch 999",
        ),
        (
            url.clone(),
            key.clone(),
            vec!["unit".into(), "999".into()],
            "no unit 999",
        ),
        (
            dead,
            key.clone(),
            vec!["status".into()],
            "cannot reach the coordinator",
        ),
        (
            "localhost:8080".into(),
            key.clone(),
            vec!["status".into()],
            "--server must be an http://",
        ),
    ];
    for (server, k, args, want) in cases {
        let (code, out, err) = tokio::task::spawn_blocking(move || {
            qg(
                &server,
                &k,
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        })
        .await
        .unwrap();
        assert_eq!(code, 2, "{want}: {err}");
        assert!(out.is_empty(), "{out}");
        assert!(err.contains(want), "wanted {want:?} in {err:?}");
    }
    assert_eq!(store.status().unwrap().batches, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witnessed_results_verify_offline_and_tampering_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &str| dir.path().join(p).to_str().unwrap().to_owned();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            qg("", "", &args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let argv = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // Two witnesses make their keys; the coordinator is told them.
    let mut witness_keys = Vec::new();
    for w in ["w1", "w2"] {
        let (code, out, err) = run(argv(&[
            "witness",
            "follow",
            "--state",
            &path(w),
            "--name",
            &format!("{w}.test"),
            "--print-key",
        ]))
        .await
        .unwrap();
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with(&format!("{w}.test+")), "{out}");
        witness_keys.push(out.trim().to_owned());
    }
    let mut cfg = Config::resolve(
        FileConfig::default(),
        Some("127.0.0.1:0".parse().unwrap()),
        Some(dir.path().into()),
        None,
        Some(dir.path().into()),
    );
    cfg.witnesses = witness_keys.clone();
    let store = Arc::new(Coordinator::open(&cfg.db).unwrap());
    let key = new_secret("qgk_");
    store
        .create_key("cli", &hash_secret(&key), false, now())
        .unwrap();
    let (addr, _server) = start(store.clone(), &cfg).await.unwrap();
    let url = format!("http://{addr}");
    let log_key = coordinator::server::load_log_key(&cfg.log_key, &cfg.log_origin)
        .unwrap()
        .verifier_key();

    std::fs::write(dir.path().join("spec.toml"), SPEC).unwrap();
    let qg_at = |args: Vec<String>| {
        let (url, key) = (url.clone(), key.clone());
        tokio::task::spawn_blocking(move || {
            qg(
                &url,
                &key,
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        })
    };
    let (code, out, err) = qg_at(argv(&["submit", &path("spec.toml")])).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let batch = out.trim().to_owned();
    let vols: Vec<_> = (0..2)
        .map(|i| NativeHost::new(&url, dir.path().join(format!("v{i}"))).unwrap())
        .collect();
    let opts = Options {
        max_units: Some(6),
        ..Default::default()
    };
    let (a, b) = tokio::join!(
        volunteer::run(&vols[0], &Engine::Cpu, &opts),
        volunteer::run(&vols[1], &Engine::Cpu, &opts)
    );
    assert_eq!(a + b, 12);
    // The sequencer logs the six results within moments.
    for _ in 0..100 {
        if store.log_queue_len().unwrap() == 0 && store.log_checkpoint().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(store.log_queue_len().unwrap(), 0);

    // Both witnesses cosign the checkpoint.
    for w in ["w1", "w2"] {
        let (code, _, err) = qg_at(argv(&[
            "witness",
            "follow",
            "--log",
            &url,
            "--state",
            &path(w),
            "--once",
        ]))
        .await
        .unwrap();
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("cosigned"), "{err}");
    }
    // The dashboard shows each witness's newest cosignature: both at the log's size, a third
    // configured one never.
    let names = ["w1.test", "w2.test", "w3.test"].map(String::from);
    let d = store
        .dashboard(&store.status().unwrap(), &names, now())
        .unwrap();
    assert_eq!(d.log_size, 7);
    let sizes: Vec<_> = d
        .witnesses
        .iter()
        .map(|w| (w.name.as_str(), w.size))
        .collect();
    assert_eq!(
        sizes,
        [
            ("w1.test", Some(7)),
            ("w2.test", Some(7)),
            ("w3.test", None)
        ]
    );
    assert!(d.witnesses[0].cosigned_at.unwrap() > 0);
    // A monitor that pins both witnesses checks the tree they cosigned.
    let mut mon = argv(&[
        "monitor",
        "--log",
        &url,
        "--state",
        &path("mon"),
        "--log-key",
        &log_key,
    ]);
    for w in &witness_keys {
        mon.extend(["--witness".to_owned(), w.clone()]);
    }
    mon.extend(argv(&["--min-witnesses", "2", "--once"]));
    let (code, out, err) = qg_at(mon.clone()).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("checkpoint 7: every entry checked (6 units, 1 batches)"),
        "{err}"
    );
    mon.splice(mon.len() - 2.., argv(&["3", "--once"]));
    let (code, _, err) = qg_at(mon).await.unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--min-witnesses 3: only 2 witness key(s) given"),
        "{err}"
    );
    let bundle = path("bundle.json");
    let (code, _, err) = qg_at(argv(&["results", &batch, "--proofs", "-o", &bundle]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");

    let verify = |file: &str, extra: &[&str]| {
        let mut args = argv(&["verify", file, "--log-key", &log_key]);
        for w in &witness_keys {
            args.extend(["--witness".to_owned(), w.clone()]);
        }
        args.extend(argv(extra));
        run(args)
    };
    let (code, out, err) = verify(&bundle, &["--recompute", "50%"]).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(&format!("OK batch {batch}: 6 of 6 units")),
        "{out}"
    );
    assert!(out.contains("cosigned by w1.test, w2.test"), "{out}");
    assert!(out.contains("3 recomputed and reproduced"), "{out}");
    // The sample is drawn here, at random, and a seed repeats it.
    let seed_of = |err: &str| {
        err.split("drawn with seed ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("{err}"))
            .to_owned()
    };
    let (_, _, again) = verify(&bundle, &["--recompute", "50%"]).await.unwrap();
    assert_ne!(seed_of(&err), seed_of(&again), "{err}{again}");
    let (code, out, seeded) = verify(&bundle, &["--recompute", "50", "--seed", "7"])
        .await
        .unwrap();
    assert_eq!(
        (code, seed_of(&seeded)),
        (0, "7".to_owned()),
        "{out}{seeded}"
    );

    // Results written from the bundle are the receipts': here, what the coordinator serves.
    let (csv, agg) = (path("verified.csv"), path("verified.json"));
    let (code, _, err) = verify(&bundle, &["--csv", &csv, "--aggregate", &agg])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let (_, served_csv, _) = qg_at(argv(&["results", &batch, "--format", "csv"]))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap(),
        served_csv.trim_end().to_owned() + "\n"
    );
    let (_, served_agg, _) = qg_at(argv(&["results", &batch, "--aggregate"]))
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&agg).unwrap()).unwrap(),
        serde_json::from_str::<serde_json::Value>(&served_agg).unwrap()
    );

    // The science page's verifier (the same rules, compiled to wasm there) agrees: every unit
    // verified, and the aggregate of the verified units is what the coordinator serves.
    let text = std::fs::read_to_string(&bundle).unwrap();
    let axes = verify_wasm::Axes {
        axes: vec!["beta".into(), "seed".into()],
        own_error: vec![],
    };
    let page = verify_wasm::check(&text, &log_key, &witness_keys.join("\n"), 2, &axes);
    assert!(page.ok, "{page:?}");
    assert_eq!((page.verified.len(), page.canonical), (6, 6));
    assert_eq!(page.witnesses, ["w1.test", "w2.test"]);
    let served: serde_json::Value = serde_json::from_str(&served_agg).unwrap();
    assert_eq!(page.aggregate["points"], served["points"]);
    // Unpinned, or short of cosignatures, it verifies nothing.
    let page = verify_wasm::check(&text, "", "", 0, &axes);
    assert!(!page.ok && page.verified.is_empty());
    assert!(page.problems[0].message.contains("not pinned"), "{page:?}");
    let page = verify_wasm::check(&text, &log_key, &witness_keys[0], 2, &axes);
    assert!(!page.ok && page.verified.is_empty(), "{page:?}");

    // Pins are required: the log's key, and a witness.
    let (code, out, _) = run(argv(&["verify", &bundle])).await.unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the log's key is not pinned"), "{out}");
    let (code, out, _) = run(argv(&["verify", &bundle, "--log-key", &log_key]))
        .await
        .unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("0 witness key(s) pinned, 1 cosignature(s) needed"),
        "{out}"
    );

    // The numbers edited in the bundle, or a unit left out: caught, and no results written.
    let text = std::fs::read_to_string(&bundle).unwrap();
    let honest: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut v = honest.clone();
    let unit = v["units"][0]["unit"].as_i64().unwrap();
    let mut forged: serde_json::Value =
        serde_json::from_str(v["units"][0]["summary"].as_str().unwrap()).unwrap();
    let (k, x) = forged
        .as_object()
        .unwrap()
        .iter()
        .find_map(|(k, x)| Some((k.clone(), x.as_f64()?)))
        .unwrap();
    forged[&k] = (x + 0.5).into();
    v["units"][0]["summary"] = forged.to_string().into();
    let edited = path("edited-summary.json");
    std::fs::write(&edited, v.to_string()).unwrap();
    let (code, out, err) = verify(&edited, &["--csv", &path("forged.csv")])
        .await
        .unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(&format!(
            "FAIL unit {unit}: the summary presented is not the one log entry #"
        )),
        "{out}"
    );
    assert!(err.contains("no results written"), "{err}");
    assert!(!dir.path().join("forged.csv").exists());
    let mut v = honest.clone();
    v["units"].as_array_mut().unwrap().pop();
    std::fs::write(&edited, v.to_string()).unwrap();
    let (code, out, _) = verify(&edited, &[]).await.unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("the batch was committed with 6 units (log entry #0), the bundle presents 5"),
        "{out}"
    );

    // A result edited in the bundle fails, naming the unit.
    let text = std::fs::read_to_string(&bundle).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let unit = v["units"][2]["unit"].as_i64().unwrap();
    v["units"][2]["digest"] = serde_json::json!("ab".repeat(32));
    let edited = path("edited.json");
    std::fs::write(&edited, v.to_string()).unwrap();
    let (code, out, _) = verify(&edited, &[]).await.unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(&format!("FAIL unit {unit}: the result presented is abab")),
        "{out}"
    );
    assert!(out.contains("FAILED batch"), "{out}");
    let (code, _, err) = verify(&bundle, &["--recompute", "150"]).await.unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--recompute"), "{err}");
    // A third witness that never cosigned: not enough cosignatures.
    let w3 = transparency::NoteKey::from_seed("w3.test", transparency::ALG_COSIGNATURE_V1, [5; 32])
        .unwrap()
        .verifier_key();
    let (code, out, _) = verify(&bundle, &["--witness", &w3, "--min-witnesses", "3"])
        .await
        .unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("2 valid witness cosignature(s), 3 needed"),
        "{out}"
    );

    // A witness whose last cosigned checkpoint the log contradicts refuses to cosign: a fork
    // (same size, other root), then a rollback (the log is smaller than what it cosigned).
    let state_file = dir.path().join("w1/witness-state.json");
    let mut st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    st["last"]["root"] = serde_json::json!("A".repeat(43) + "=");
    std::fs::write(&state_file, st.to_string()).unwrap();
    let (code, _, err) = qg_at(argv(&[
        "witness",
        "follow",
        "--log",
        &url,
        "--state",
        &path("w1"),
        "--once",
    ]))
    .await
    .unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("REFUSED: fork: two checkpoints of size 7"),
        "{err}"
    );
    st["last"]["size"] = serde_json::json!(100);
    std::fs::write(&state_file, st.to_string()).unwrap();
    let (code, _, err) = qg_at(argv(&[
        "witness",
        "follow",
        "--log",
        &url,
        "--state",
        &path("w1"),
        "--once",
    ]))
    .await
    .unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("REFUSED: rollback"), "{err}");
    // The refused witness saved nothing new.
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    assert_eq!(after["last"]["size"], 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scientist_cancels_a_batch() {
    let (dir, _store, key, url) = coordinator_with_key().await;
    std::fs::write(dir.path().join("spec.toml"), SPEC).unwrap();
    let run = |args: Vec<String>| {
        let (url, key) = (url.clone(), key.clone());
        tokio::task::spawn_blocking(move || {
            qg(
                &url,
                &key,
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        })
    };
    let spec = dir.path().join("spec.toml").to_str().unwrap().to_owned();
    let (code, out, err) = run(vec!["submit".into(), spec]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let batch = out.trim().to_owned();
    let (code, out, err) = run(vec!["cancel".into(), batch.clone()]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!("batch {batch} cancelled: 0 result(s) kept, 6 unit(s) stopped")
    );
    let (code, out, _) = run(vec!["status".into(), batch.clone()]).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("6 of 6 units finished: failed 6"), "{out}");
    assert!(out.contains("cancelled"), "{out}");
    let (code, _, err) = run(vec!["cancel".into(), "999".into()]).await.unwrap();
    assert_eq!(code, 2);
    assert!(err.contains("no batch 999"), "{err}");
}

/// A scientist's own kernels end to end, as a new user would go: `qg kernel check` on this
/// machine's GPU (lavapipe), `qg kernel push`, an operator's `qg kernel approve`, `qg submit`
/// of a spec naming `name@hash`, volunteers computing it on lavapipe, results whose provenance
/// and receipts carry the hash, and `qg verify --recompute` through the package itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scientists_own_kernels_are_computed_and_verified_end_to_end() {
    let (dir, store, key, url) = coordinator_with_key().await;
    let operator = new_secret("qgk_");
    store
        .create_key("op", &hash_secret(&operator), true, now())
        .unwrap();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kernels");
    let qg_as = |who: &str, args: Vec<String>| {
        let (url, who) = (url.clone(), who.to_owned());
        tokio::task::spawn_blocking(move || {
            qg(
                &url,
                &who,
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        })
    };
    let argv = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let specs = [
        (
            "percolation2d",
            r#"seeds = 2
[params]
L = 24
samples = 4
[sweep]
p = [0.5, 0.7]"#,
        ),
        (
            "potts3",
            r#"seeds = 2
[params]
L = 16
sweeps = 60
thermalize = 20
[sweep]
beta = [0.9, 1.1]"#,
        ),
        (
            "gray_scott",
            r#"seeds = 2
[params]
L = 32
steps = 100"#,
        ),
    ];
    let mut batches = Vec::new();
    for (name, body) in specs {
        let pkg = examples.join(name);
        let pkg = pkg.to_str().unwrap();
        let (code, out, err) = qg_as(
            &key,
            argv(&[
                "kernel",
                "check",
                pkg,
                "--params",
                match name {
                    "percolation2d" => r#"{"L":16,"p":0.6,"samples":4,"seed":1}"#,
                    "potts3" => r#"{"L":16,"beta":1.0,"sweeps":40,"seed":1}"#,
                    _ => r#"{"L":32,"steps":40,"seed":1}"#,
                },
            ]),
        )
        .await
        .unwrap();
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert!(
            out.contains("run 2: the same") && out.contains("the same"),
            "{out}"
        );
        let (code, _, err) = qg_as(&key, argv(&["kernel", "push", pkg])).await.unwrap();
        assert_eq!(code, 0, "{err}");
        let kernel = err
            .split('"')
            .find(|s| s.starts_with(&format!("{name}@")))
            .unwrap_or_else(|| panic!("{err}"))
            .to_owned();
        // Pending until an operator approves it; a scientist may not.
        let hash = kernel.split_once('@').unwrap().1.to_owned();
        let (code, _, err) = qg_as(&key, argv(&["kernel", "approve", &hash]))
            .await
            .unwrap();
        assert_ne!(code, 0, "a scientist key cannot approve: {err}");
        let (code, out, err) = qg_as(&operator, argv(&["kernel", "approve", &kernel]))
            .await
            .unwrap();
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("approved"), "{out}");
        let spec = dir.path().join(format!("{name}.toml"));
        std::fs::write(&spec, format!("name = \"{name} study\"\nkernel = \"{kernel}\"\n{body}\n[policy]\nspot_check_rate = 0.0\n")).unwrap();
        let (code, out, err) = qg_as(&key, argv(&["submit", spec.to_str().unwrap()]))
            .await
            .unwrap();
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains("quorum only"),
            "no verifier here, and the scientist is told: {err}"
        );
        let batch = out.trim().to_owned();
        let (code, out, _) = qg_as(&key, argv(&["status", &batch])).await.unwrap();
        assert_eq!(code, 0);
        assert!(
            out.contains(&format!("kernel package {kernel}: approved")),
            "{out}"
        );
        batches.push((name, kernel, batch.parse::<i64>().unwrap()));
    }
    let (code, out, _) = qg_as(&key, argv(&["kernel", "list"])).await.unwrap();
    assert_eq!(code, 0);
    assert_eq!(out.matches("  approved  ").count(), 3, "{out}");
    // Two GPU volunteers (lavapipe) compute everything.
    let gpu = client_wasm::Gpu::new()
        .await
        .expect("lavapipe: cargo xtask test installs it");
    let vols: Vec<_> = (0..2)
        .map(|i| NativeHost::new(&url, dir.path().join(format!("gpu{i}"))).unwrap())
        .collect();
    let opts = Options {
        max_units: Some(10),
        ..Default::default()
    };
    let engine = Engine::Gpu(&gpu);
    let (a, b) = tokio::join!(
        volunteer::run(&vols[0], &engine, &opts),
        volunteer::run(&vols[1], &engine, &opts)
    );
    assert_eq!(a + b, 20, "4 + 4 + 2 units, two replicas each");
    // The files were fetched once by hash and kept.
    assert!(
        std::fs::read_dir(dir.path().join("gpu0"))
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("package~"))
    );
    for (name, kernel, batch) in &batches {
        let st = store.batch_status(*batch, None).unwrap();
        assert!(
            st.done && st.by_state["canonical"] == st.units,
            "{name}: {st:?}"
        );
        for r in store.batch_results(*batch, None).unwrap() {
            let p = store.unit_provenance(r.unit_id, None).unwrap();
            assert_eq!(&p.kernel, kernel);
            assert!(
                r.summary
                    .as_ref()
                    .is_some_and(|s| s.as_object().is_some_and(|o| !o.is_empty())),
                "{r:?}"
            );
            // The ported built-in gives the built-in's digest.
            if *name == "percolation2d" {
                let want = Job::new("percolation2d", r.params.clone())
                    .unwrap()
                    .run_cpu(1, &mut |_, _| {})
                    .unwrap()
                    .digest;
                assert_eq!(r.digest, Some(want), "{r:?}");
            }
        }
    }
    // Receipts in the log name the hash; the bundle verifies offline, recomputed.
    for _ in 0..100 {
        if store.log_queue_len().unwrap() == 0 && store.log_checkpoint().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let log_key = reqwest::get(format!("{url}/api/v1/log"))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    for (name, kernel, batch) in &batches {
        let bundle = dir.path().join(format!("{name}-bundle.json"));
        let bundle = bundle.to_str().unwrap();
        let (code, _, err) = qg_as(
            &key,
            argv(&[
                "results",
                &batch.to_string(),
                "--proofs",
                "--witnesses",
                "0",
                "-o",
                bundle,
            ]),
        )
        .await
        .unwrap();
        assert_eq!(code, 0, "{err}");
        let text = std::fs::read_to_string(bundle).unwrap();
        let hash = kernel.split_once('@').unwrap().1;
        assert!(
            text.contains(&format!("\\\"kernel\\\":\\\"{kernel}\\\"")) || text.contains(hash),
            "receipts name the hash"
        );
        let (code, out, err) = qg_as(
            &key,
            argv(&[
                "verify",
                bundle,
                "--log-key",
                &log_key,
                "--min-witnesses",
                "0",
                "--recompute",
                "100",
            ]),
        )
        .await
        .unwrap();
        assert_eq!(code, 0, "{name}: {out}{err}");
        if *name == "gray_scott" {
            assert!(err.contains("tolerance"), "{err}");
        } else {
            assert!(out.contains("recomputed and reproduced"), "{name}: {out}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_catches_a_re_acceptance_forged_through_the_logs_own_signer() {
    let (dir, store, key, url) = coordinator_with_key().await;
    std::fs::write(dir.path().join("spec.toml"), SPEC).unwrap();
    let state = dir.path().join("monitor").to_str().unwrap().to_owned();
    let qg_at = |args: Vec<&str>| {
        let (url, key) = (url.clone(), key.clone());
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        tokio::task::spawn_blocking(move || {
            qg(
                &url,
                &key,
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        })
    };
    let monitor = || qg_at(vec!["monitor", "--state", &state, "--once"]);
    let spec = dir.path().join("spec.toml").to_str().unwrap().to_owned();
    let (code, out, err) = qg_at(vec!["submit", &spec]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let batch: i64 = out.trim().parse().unwrap();
    let vols: Vec<_> = (0..2)
        .map(|i| NativeHost::new(&url, dir.path().join(format!("v{i}"))).unwrap())
        .collect();
    let opts = Options {
        max_units: Some(6),
        ..Default::default()
    };
    let logged = || async {
        for _ in 0..100 {
            if store.log_queue_len().unwrap() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the sequencer did not log the receipts");
    };
    // Half done, then the rest: the monitor picks up where it stopped.
    volunteer::run(&vols[0], &Engine::Cpu, &opts).await;
    logged().await;
    let (code, out, err) = monitor().await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("every entry checked"), "{err}");
    volunteer::run(&vols[1], &Engine::Cpu, &opts).await;
    logged().await;
    let (code, out, err) = monitor().await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("every entry checked (6 units, 1 batches)"),
        "{err}"
    );

    // The coordinator's owner appends, through its own signer, a second acceptance of a unit
    // with another result: a consistent extension, which witnesses cosign.
    let proofs = store.batch_proofs(batch, None, 0).unwrap().bundle;
    let unit = &proofs.units[3];
    let mut forged =
        transparency::LogEntry::parse(unit.entries.last().unwrap().entry.as_bytes()).unwrap();
    forged.digest = protocol::Digest([0x66; 32]);
    store.queue_receipts(&[forged]).unwrap();
    logged().await;
    let (code, out, err) = monitor().await.unwrap();
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.starts_with(&format!(
            "ANOMALY log entry #7: unit {} is accepted again (6666",
            unit.unit
        )) && out.contains("needs a revocation before it"),
        "{out}"
    );
    // It keeps its state: the anomaly is found again, and nothing past it is taken in.
    let (code, again, _) = monitor().await.unwrap();
    assert_eq!((code, again), (1, out));
}
