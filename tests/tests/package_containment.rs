//! Hostile kernel packages against real native volunteers on lavapipe and a real coordinator:
//! a racy kernel is flagged as nondeterministic and suspended; an endless loop makes each
//! volunteer report an error and give its device up, and errors from two distinct volunteers
//! suspend the package while the coordinator goes on handing out other work. (A test binary
//! of its own: lavapipe spins in the endless shader until the process exits.)

use client_wasm::native::NativeHost;
use client_wasm::volunteer::{self, Engine, Options};
use coordinator::api::{Admission, new_batch, new_batch_of, now};
use coordinator::engine::{Engine as Coordinator, PackageAction};
use coordinator::server::{Config, FileConfig, start};
use protocol::api::{AdapterInfo, BatchRequest, PolicySpec};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const RACY: (&str, &str) = (
    r#"
name = "racy"
author = "A hurried scientist <h@example.org>"
comparison = "digest"
seed = "seed"
steps = "4"
work = "n * 4"
[params.n]
type = "u32"
default = 1048576
[params.seed]
type = "u64"
[[buffers]]
name = "out"
type = "u32"
length = "64"
state = true
[[entries]]
name = "race"
workgroup_size = 64
[[step]]
entry = "race"
threads = "n"
words = ["n"]
[output]
buffers = ["out"]
"#,
    r#"
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64)
fn race(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg, 64u);
    if (i >= word(0u)) {
        return;
    }
    // Unsynchronised read-modify-write of 64 slots from a million invocations.
    let slot = (i * 2654435761u) % 64u;
    out[slot] = out[slot] + i;
}
"#,
);

const ENDLESS: (&str, &str) = (
    r#"
name = "endless"
author = "A buggy scientist <b@example.org>"
comparison = "digest"
seed = "seed"
steps = "2"
work = "1"
[params.seed]
type = "u64"
[[buffers]]
name = "a"
type = "u32"
length = "64"
state = true
[[entries]]
name = "spin"
workgroup_size = 64
[[step]]
entry = "spin"
threads = "16777216"
[output]
buffers = ["a"]
"#,
    r#"
@group(0) @binding(1) var<storage, read_write> a: array<atomic<u32>>;
@compute @workgroup_size(64)
fn spin(@builtin(local_invocation_id) lid: vec3<u32>) {
    loop {
        if (atomicAdd(&a[lid.x], 1u) == 0xffffffffu && word(0u) == 12345u) {
            break;
        }
    }
}
"#,
);

fn package(store: &Coordinator, (manifest, wgsl): (&str, &str)) -> Arc<shaders::package::Package> {
    let p = qg_tests::package_from(manifest, wgsl).unwrap();
    let again = shaders::package::Package::from_files(p.files.clone()).unwrap();
    store.put_package(again, None, now()).unwrap();
    store
        .set_package(&p.hash, PackageAction::Approve, "test", now())
        .unwrap();
    p
}

fn batch(
    store: &Coordinator,
    kernel: &str,
    units: Vec<Value>,
    p: Option<&Arc<shaders::package::Package>>,
) -> i64 {
    let req = BatchRequest {
        name: None,
        description: None,
        kernel: kernel.into(),
        units,
        policy: PolicySpec {
            max_total_results: Some(8),
            ..Default::default()
        },
        axes: Vec::new(),
    };
    let terms = Admission {
        default_spot: 0.0,
        ..Default::default()
    };
    let b = match p {
        Some(p) => new_batch_of(req, None, &terms, Some(p), false),
        None => new_batch(req, None, &terms),
    }
    .unwrap_or_else(|e| panic!("{:?}", e.body));
    store.create_batch(&b, now()).unwrap()
}

/// Runs the work loop as volunteer `dir` on `gpu` until `max` units, until it stops, or until
/// `done` says there is nothing more to wait for.
fn volunteer_on(
    url: &str,
    dir: &Path,
    gpu: &client_wasm::Gpu,
    max: u64,
    done: Arc<dyn Fn() -> bool + Send + Sync>,
) -> u64 {
    let host = NativeHost::new(url, dir.to_path_buf()).unwrap();
    let controls = host.controls.clone();
    let watch = std::thread::spawn(move || {
        while Arc::strong_count(&controls) > 1 {
            if done() {
                controls.lock().unwrap().stop = true;
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let opts = Options {
        adapter: AdapterInfo {
            name: gpu.adapter().name,
            backend: "vulkan".into(),
            client: "qg-test/1".into(),
            ..Default::default()
        },
        max_units: Some(max),
        ..Default::default()
    };
    let n = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(volunteer::run(&host, &Engine::Gpu(gpu), &opts));
    drop(host);
    let _ = watch.join();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racy_and_endless_packages_are_contained() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::resolve(
        FileConfig::default(),
        Some("127.0.0.1:0".parse().unwrap()),
        Some(dir.path().into()),
        None,
        Some(dir.path().into()),
    );
    cfg.package_error_volunteers = 2;
    let store = Arc::new(Coordinator::open(&cfg.db).unwrap());
    let (addr, _server) = start(store.clone(), &cfg).await.unwrap();
    let url = format!("http://{addr}");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let run = |who: std::path::PathBuf,
               max: u64,
               fresh: bool,
               done: Arc<dyn Fn() -> bool + Send + Sync>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            if fresh {
                // A device of its own, given up (never dropped: its queue is stuck) if it hangs.
                let gpu = pollster::block_on(client_wasm::Gpu::new()).unwrap();
                gpu.set_budget(1.0);
                let n = volunteer_on(&url, &who, &gpu, max, done);
                let lost = gpu.is_lost();
                std::mem::forget(gpu);
                (n, lost)
            } else {
                (volunteer_on(&url, &who, qg_tests::gpu(), max, done), false)
            }
        })
    };
    // Both volunteers earn a record on a built-in batch first.
    let units = (1..=2)
        .map(|s| json!({"L": 16, "beta": 0.4, "sweeps": 10, "seed": s}))
        .collect();
    let ising = batch(&store, "ising2d", units, None);
    let never: Arc<dyn Fn() -> bool + Send + Sync> = Arc::new(|| false);
    run(a.clone(), 2, false, never.clone()).await.unwrap();
    run(b.clone(), 2, false, never.clone()).await.unwrap();
    assert!(store.batch_status(ising, None).unwrap().done);

    // A race: the same device class gives different bytes; flagged after three pairs.
    let racy = package(&store, RACY);
    let racy_batch = batch(
        &store,
        &racy.kernel(),
        (1..=4).map(|s| json!({"seed": s})).collect(),
        Some(&racy),
    );
    run(a.clone(), 4, false, never.clone()).await.unwrap();
    // The second volunteer stops once the package is suspended (its units are held then).
    let held = {
        let store = store.clone();
        Arc::new(move || {
            store
                .batch_status(racy_batch, None)
                .is_ok_and(|st| st.package.is_some_and(|p| p.status == "suspended"))
        }) as Arc<dyn Fn() -> bool + Send + Sync>
    };
    run(b.clone(), 4, false, held).await.unwrap();
    let st = store.batch_status(racy_batch, None).unwrap();
    let p = st.package.expect("a package's batch");
    assert_eq!(p.status, "suspended", "{p:?}");
    assert!(
        p.reason
            .as_deref()
            .unwrap_or("")
            .contains("nondeterministic"),
        "{p:?}"
    );
    assert!(p.class_disagreements >= 3, "{p:?}");

    // An endless loop: each volunteer reports an error naming the package, gives its device
    // up, and stops; errors from the two suspend the package.
    let endless = package(&store, ENDLESS);
    let endless_batch = batch(
        &store,
        &endless.kernel(),
        vec![json!({"seed": 1}), json!({"seed": 2})],
        Some(&endless),
    );
    let t0 = std::time::Instant::now();
    let (n, lost) = run(a.clone(), 1, true, never.clone()).await.unwrap();
    assert_eq!(
        (n, lost),
        (1, true),
        "the volunteer computed one unit (an error) and gave the GPU up"
    );
    let (n, lost) = run(b.clone(), 1, true, never.clone()).await.unwrap();
    assert_eq!((n, lost), (1, true));
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    let st = store.batch_status(endless_batch, None).unwrap();
    let p = st.package.expect("a package's batch");
    assert_eq!(p.status, "suspended", "{p:?}");
    assert!(
        p.reason.as_deref().unwrap_or("").contains("budget"),
        "{p:?}"
    );
    let prov = store
        .unit_provenance(
            store.batch_results(endless_batch, None).unwrap()[0].unit_id,
            None,
        )
        .unwrap();
    let error = prov
        .replicas
        .iter()
        .find_map(|r| r.error.clone())
        .expect("an error report");
    assert!(
        error.contains(&endless.kernel()) && error.contains("budget"),
        "{error}"
    );
    // The coordinator goes on: new built-in work goes out (and no held unit with it).
    let more = batch(
        &store,
        "ising2d",
        vec![json!({"L": 16, "beta": 0.3, "sweeps": 5, "seed": 9})],
        None,
    );
    let v = store.register_volunteer(b"c-token", None, now()).unwrap();
    let got = store
        .request_work(v, 8, &AdapterInfo::default(), None, now())
        .unwrap();
    assert!(
        !got.is_empty() && got.iter().all(|a| a.kernel == "ising2d"),
        "{got:?}"
    );
    let _ = more;
}
