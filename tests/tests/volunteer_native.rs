//! The shared work loop run natively (as `qg-volunteer` runs it) against a real coordinator:
//! a GPU volunteer (lavapipe) and a CPU volunteer agree byte for byte, and a volunteer that
//! starts while the coordinator is down backs off, retries and loses nothing.

use client_wasm::native::NativeHost;
use client_wasm::volunteer::{self, Engine, Host, Options};
use coordinator::api::{new_batch, now};
use coordinator::engine::Engine as Coordinator;
use coordinator::server::{Config, FileConfig, start};
use protocol::api::{AdapterInfo, BatchRequest, PolicySpec};
use serde_json::json;
use shaders::Job;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn config(dir: &std::path::Path, bind: SocketAddr) -> Config {
    let mut cfg = Config::resolve(
        FileConfig::default(),
        Some(bind),
        Some(dir.to_path_buf()),
        None,
        Some(dir.to_path_buf()),
    );
    cfg.expire_every = Duration::from_millis(250);
    cfg
}

fn batch(store: &Coordinator, n: u64, policy: PolicySpec) -> i64 {
    let units = (0..n)
        .map(|i| json!({"L": 32, "beta": 0.4, "sweeps": 30, "seed": i + 1}))
        .collect();
    let b = new_batch(
        BatchRequest {
            name: None,
            description: None,
            kernel: "ising2d".into(),
            units,
            policy,
            axes: Vec::new(),
        },
        None,
        &coordinator::api::Admission {
            default_spot: 0.0,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{:?}", e.body));
    store.create_batch(&b, now()).unwrap()
}

fn assert_reference(store: &Coordinator, batch: i64) {
    for r in store.batch_results(batch, None).unwrap() {
        let want = Job::new("ising2d", r.params.clone())
            .unwrap()
            .run_cpu(1, &mut |_, _| {})
            .unwrap()
            .digest;
        assert_eq!(r.digest, Some(want), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_and_cpu_volunteers_agree_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "127.0.0.1:0".parse().unwrap());
    let store = Arc::new(Coordinator::open(&cfg.db).unwrap());
    // Every report is challenged: each volunteer sends its state at a checkpoint, and the
    // coordinator recomputes the next segment on the CPU from it.
    let id = batch(
        &store,
        4,
        PolicySpec {
            challenge_rate: Some(1.0),
            ..Default::default()
        },
    );
    let (addr, _server) = start(store.clone(), &cfg).await.unwrap();
    let url = format!("http://{addr}");
    let gpu_dir = dir.path().join("gpu");
    let cpu_dir = dir.path().join("cpu");
    let gpu_task = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let gpu = qg_tests::gpu();
            let host = NativeHost::new(&url, gpu_dir).unwrap();
            let opts = Options {
                adapter: AdapterInfo {
                    name: gpu.adapter().name,
                    backend: "vulkan".into(),
                    ..Default::default()
                },
                max_units: Some(4),
                ..Default::default()
            };
            // Its own runtime on its own thread: the GPU loop runs beside the CPU one.
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(volunteer::run(&host, &Engine::Gpu(gpu), &opts))
        })
    };
    let cpu_host = NativeHost::new(&url, cpu_dir.clone()).unwrap();
    let opts = Options {
        adapter: AdapterInfo {
            name: "cpu".into(),
            backend: "cpu".into(),
            ..Default::default()
        },
        max_units: Some(4),
        ..Default::default()
    };
    let n = volunteer::run(&cpu_host, &Engine::Cpu, &opts).await;
    assert_eq!(n, 4);
    assert_eq!(gpu_task.await.unwrap(), 4);
    let st = store.batch_status(id, None).unwrap();
    assert!(st.done, "{st:?}");
    assert_reference(&store, id);
    for r in store.batch_results(id, None).unwrap() {
        let p = store.unit_provenance(r.unit_id, None).unwrap();
        let backends: Vec<_> = p
            .replicas
            .iter()
            .filter_map(|r| r.adapter.clone())
            .map(|a| a.backend)
            .collect();
        assert!(
            backends.contains(&"vulkan".to_owned()) && backends.contains(&"cpu".to_owned()),
            "{backends:?}"
        );
    }
    // Every challenge (GPU states and CPU states alike) passes.
    let mut counts = Default::default();
    for _ in 0..100 {
        counts = store.challenge_counts().unwrap();
        if counts.get("passed") == Some(&8) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counts.get("passed"), Some(&8), "{counts:?}");
    // Nothing left pending or held.
    assert!(cpu_host.kv_keys("pending/").await.is_empty());
    assert!(cpu_host.kv_keys("assignment/").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volunteer_rides_out_a_coordinator_that_is_down() {
    let dir = tempfile::tempdir().unwrap();
    // Reserve a port, then leave nothing listening on it for a while.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let cfg = config(&dir.path().join("coordinator"), addr);
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let store = Arc::new(Coordinator::open(&cfg.db).unwrap());
    let id = batch(&store, 2, PolicySpec::default());
    let host = NativeHost::new(&format!("http://{addr}"), dir.path().join("volunteer")).unwrap();
    let opts = Options {
        max_units: Some(2),
        ..Default::default()
    };
    let t0 = Instant::now();
    let (n, _) = tokio::join!(volunteer::run(&host, &Engine::Cpu, &opts), async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        start(store.clone(), &cfg).await.unwrap()
    });
    assert_eq!(n, 2);
    assert!(t0.elapsed() >= Duration::from_secs(2));
    // Both replicas reported; the units wait for a second volunteer.
    let st = store.batch_status(id, None).unwrap();
    assert_eq!(st.by_state["in_progress"], 2, "{st:?}");
    assert_eq!(store.status().unwrap().replicas["success"], 2);
    assert!(host.kv_keys("pending/").await.is_empty());
}

/// Verification at GPU speed: a coordinator with no recomputation of its own (`spot_workers =
/// 0`) leaves every spot-check and challenge segment to a trusted verifier worker on the GPU
/// (lavapipe here), which runs them with the volunteer's runner; the units settle with the
/// reference digests and every challenge passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_verifier_worker_does_the_coordinators_recomputation() {
    use client_wasm::verifier;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "127.0.0.1:0".parse().unwrap());
    cfg.spot_workers = 0;
    let store = Arc::new(Coordinator::open(&cfg.db).unwrap());
    let key = coordinator::api::new_secret("qgk_");
    store
        .create_key(
            "verifier",
            &coordinator::api::hash_secret(&key),
            true,
            now(),
        )
        .unwrap();
    let units = 3;
    let id = batch(
        &store,
        units,
        PolicySpec {
            min_quorum: Some(1),
            target_results: Some(1),
            spot_check_rate: Some(1.0),
            challenge_rate: Some(1.0),
            ..Default::default()
        },
    );
    let (addr, _server) = start(store.clone(), &cfg).await.unwrap();
    let url = format!("http://{addr}");
    let verifier_task = {
        let (url, dir) = (url.clone(), dir.path().join("verifier"));
        tokio::task::spawn_blocking(move || {
            let gpu = qg_tests::gpu();
            let host = NativeHost::new(&url, dir).unwrap();
            // One spot-check and one challenge per unit.
            let jobs = 2 * units;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(verifier::run(
                    &host,
                    &Engine::Gpu(gpu),
                    &key,
                    "lavapipe",
                    Some(jobs),
                ))
        })
    };
    let host = NativeHost::new(&url, dir.path().join("cpu")).unwrap();
    let opts = Options {
        max_units: Some(units),
        ..Default::default()
    };
    assert_eq!(volunteer::run(&host, &Engine::Cpu, &opts).await, units);
    let done = tokio::time::timeout(Duration::from_secs(120), verifier_task)
        .await
        .expect("the verifier finished its jobs")
        .unwrap();
    assert_eq!(done, 2 * units);
    let st = store.batch_status(id, None).unwrap();
    assert!(st.done, "{st:?}");
    assert_reference(&store, id);
    let counts = store.challenge_counts().unwrap();
    assert_eq!(counts.get("passed"), Some(&units), "{counts:?}");
    assert!(
        store
            .claim_spot_checks(10, 0, 0, &Default::default(), usize::MAX)
            .unwrap()
            .is_empty()
    );
}
