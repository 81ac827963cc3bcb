//! The volunteer page in real headless Chromium (WebGPU on SwiftShader), driven over WebDriver
//! against a real coordinator: volunteers click Start and their results become canonical with
//! the CPU reference's digests. Needs `cargo xtask build-web` (web/pkg) and Debian's chromium
//! and chromium-driver: `cargo xtask test` provides both. Screenshots go to target/e2e/.

use coordinator::api::{new_batch, now};
use coordinator::server::{Config, FileConfig, start};
use coordinator::sqlite::SqliteStore;
use coordinator::store::Store;
use fantoccini::{Client, ClientBuilder, Locator};
use protocol::api::{BatchRequest, PolicySpec};
use serde_json::{Value, json};
use shaders::Job;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One browser test at a time: SwiftShader is CPU-hungry on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct World {
    store: Arc<SqliteStore>,
    addr: SocketAddr,
    driver: tokio::process::Child,
    driver_url: String,
    _dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.driver.start_kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn world() -> World {
    assert!(
        root().join("web/pkg/client_wasm_bg.wasm").exists(),
        "web/pkg is missing: run `cargo xtask build-web` (or `cargo xtask test`)"
    );
    for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: apt-get install chromium chromium-driver (or `cargo xtask test`)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::resolve(
        FileConfig::default(),
        Some("127.0.0.1:0".parse().unwrap()),
        Some(dir.path().to_path_buf()),
        None,
        Some(root().join("web")),
    );
    cfg.expire_every = Duration::from_millis(250);
    let store = Arc::new(SqliteStore::open(&cfg.db).unwrap());
    let (addr, _task) = start(store.clone(), &cfg).await.unwrap();
    let port = free_port();
    let driver = tokio::process::Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let t0 = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    World {
        store,
        addr,
        driver,
        driver_url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

impl World {
    /// A browser session; `profile` is its user-data dir (reuse one to reopen "the same"
    /// browser), `webgpu` whether WebGPU is on.
    async fn browser(&self, profile: &Path, webgpu: bool) -> Client {
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            format!("--user-data-dir={}", profile.display()),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1100,1500".into(),
        ];
        if webgpu {
            args.push("--enable-unsafe-webgpu".into());
        } else {
            args.push("--disable-features=WebGPU".into());
        }
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }))
        .unwrap();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.driver_url)
            .await
            .expect("a WebDriver session");
        client
            .goto(&format!("http://{}/", self.addr))
            .await
            .unwrap();
        client
    }

    fn batch(&self, units: Vec<Value>, policy: PolicySpec) -> i64 {
        let b = new_batch(
            BatchRequest {
                name: Some("e2e".into()),
                kernel: "ising2d".into(),
                units,
                policy,
            },
            None,
            usize::MAX,
            0.0,
        )
        .unwrap_or_else(|e| panic!("{:?}", e.body));
        self.store.create_batch(&b, now()).unwrap()
    }

    async fn wait_done(&self, batch: i64, limit: Duration) {
        let t0 = Instant::now();
        loop {
            let st = self.store.batch_status(batch, None).unwrap();
            if st.done {
                return;
            }
            assert!(
                t0.elapsed() < limit,
                "batch not done in {limit:?}: {:?}",
                st.by_state
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Every unit canonical with the CPU reference's digest; returns the provenances.
    fn assert_reference_digests(&self, batch: i64) -> Vec<coordinator::store::UnitProvenance> {
        let rows = self.store.batch_results(batch, None).unwrap();
        rows.iter()
            .map(|r| {
                let want = Job::new("ising2d", r.params.clone())
                    .unwrap()
                    .run_cpu(1, &mut |_, _| {})
                    .unwrap()
                    .digest;
                assert_eq!(
                    r.state,
                    coordinator::lifecycle::UnitState::Canonical,
                    "{r:?}"
                );
                assert_eq!(r.digest, Some(want), "unit {}", r.unit_id);
                self.store.unit_provenance(r.unit_id, None).unwrap()
            })
            .collect()
    }
}

async fn click_start(c: &Client) {
    let start = c
        .wait()
        .for_element(Locator::Css("#start:not([disabled])"))
        .await
        .unwrap();
    start.click().await.unwrap();
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

async fn wait_js(c: &Client, script: &str, limit: Duration) -> Value {
    let t0 = Instant::now();
    loop {
        let v = js(c, script).await;
        if !v.is_null() && v != json!(false) {
            return v;
        }
        assert!(t0.elapsed() < limit, "timed out waiting for `{script}`");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn screenshot(c: &Client, name: &str) {
    let dir = root().join("target/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn text(c: &Client, id: &str) -> String {
    c.find(Locator::Id(id)).await.unwrap().text().await.unwrap()
}

fn units(n: u64, l: u32, sweeps: u64) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"L": l, "beta": 0.35 + 0.05 * i as f64, "sweeps": sweeps, "seed": i + 1}))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browser_volunteers_produce_verified_results_on_webgpu() {
    let _serial = SERIAL.lock().await;
    let w = world().await;
    let batch = w.batch(units(4, 32, 100), PolicySpec::default());
    let profiles = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = w.browser(profiles[0].path(), true).await;
    let b = w.browser(profiles[1].path(), true).await;
    click_start(&a).await;
    click_start(&b).await;
    w.wait_done(batch, Duration::from_secs(240)).await;
    for prov in w.assert_reference_digests(batch) {
        let valid: Vec<_> = prov
            .replicas
            .iter()
            .filter(|r| r.state == coordinator::lifecycle::ReplicaState::Valid)
            .collect();
        assert_eq!(valid.len(), 2, "{prov:?}");
        for r in valid {
            assert_eq!(
                r.adapter.as_ref().map(|a| a.backend.as_str()),
                Some("webgpu"),
                "{r:?}"
            );
        }
    }
    for (c, name) in [(&a, "volunteer-a"), (&b, "volunteer-b")] {
        // The adapter was WebGPU (SwiftShader here), progress was shown, credit granted.
        let adapter = wait_js(
            c,
            "return window.qg.events.find(e => e.type === 'adapter') || null",
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(adapter["gpu"], true, "{adapter}");
        assert!(text(c, "adapter").await.contains("WebGPU"));
        let progress = js(
            c,
            "return window.qg.events.filter(e => e.type === 'progress').length",
        )
        .await;
        assert!(progress.as_u64().unwrap() >= 1);
        let credit = wait_js(
            c,
            "return Number(document.getElementById('credit').textContent) > 0",
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(credit, true);
        assert!(text(c, "units-done").await.parse::<u32>().unwrap() >= 1);
        screenshot(c, name).await;
    }
    let adapter_name = js(
        &a,
        "return window.qg.events.find(e => e.type === 'adapter').name",
    )
    .await;
    eprintln!("browser adapter: {adapter_name}");
    // Without a GPU device on this machine, Chromium's WebGPU runs on SwiftShader.
    if !Path::new("/dev/dri").exists() {
        let name = adapter_name.as_str().unwrap_or("").to_lowercase();
        assert!(name.contains("swiftshader"), "{adapter_name}");
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_closed_mid_unit_is_reissued_after_its_deadline() {
    let _serial = SERIAL.lock().await;
    let w = world().await;
    // One long unit, one replica needed, a short deadline.
    let batch = w.batch(
        units(1, 64, 3000),
        PolicySpec {
            min_quorum: Some(1),
            target_results: Some(1),
            deadline_s: Some(6),
            ..Default::default()
        },
    );
    let profile_a = tempfile::tempdir().unwrap();
    let a = w.browser(profile_a.path(), true).await;
    click_start(&a).await;
    wait_js(
        &a,
        "return window.qg.events.some(e => e.type === 'progress')",
        Duration::from_secs(60),
    )
    .await;
    screenshot(&a, "closed-mid-unit").await;
    a.close().await.unwrap(); // the tab (and browser) is gone mid-unit
    let profile_b = tempfile::tempdir().unwrap();
    let b = w.browser(profile_b.path(), true).await;
    click_start(&b).await;
    w.wait_done(batch, Duration::from_secs(240)).await;
    let prov = w.assert_reference_digests(batch).remove(0);
    let states: Vec<_> = prov.replicas.iter().map(|r| r.state).collect();
    use coordinator::lifecycle::ReplicaState::*;
    assert_eq!(states, vec![NoReply, Valid], "{prov:?}");
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_the_browser_resumes_the_unit_from_its_checkpoint() {
    let _serial = SERIAL.lock().await;
    let w = world().await;
    let mut unit = units(1, 64, 3000);
    unit[0]["checkpoint_every"] = json!(200);
    let batch = w.batch(
        unit,
        PolicySpec {
            min_quorum: Some(1),
            target_results: Some(1),
            ..Default::default()
        },
    );
    let profile = tempfile::tempdir().unwrap();
    let a = w.browser(profile.path(), true).await;
    click_start(&a).await;
    // Past the first checkpoint (step 200), then the browser goes away.
    wait_js(
        &a,
        "return window.qg.events.some(e => e.type === 'progress' && e.done >= 400)",
        Duration::from_secs(120),
    )
    .await;
    a.close().await.unwrap();
    let a = w.browser(profile.path(), true).await;
    click_start(&a).await;
    let unit_ev = wait_js(
        &a,
        "return window.qg.events.find(e => e.type === 'unit') || null",
        Duration::from_secs(60),
    )
    .await;
    assert!(
        unit_ev["resumed_at"].as_u64().unwrap() >= 200,
        "did not resume: {unit_ev}"
    );
    w.wait_done(batch, Duration::from_secs(240)).await;
    let prov = w.assert_reference_digests(batch).remove(0);
    assert_eq!(
        prov.replicas.len(),
        1,
        "the same replica finished: {prov:?}"
    );
    screenshot(&a, "resumed").await;
    a.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_webgpu_the_volunteer_can_compute_on_the_cpu() {
    let _serial = SERIAL.lock().await;
    let w = world().await;
    let batch = w.batch(
        units(2, 16, 50),
        PolicySpec {
            min_quorum: Some(1),
            target_results: Some(1),
            ..Default::default()
        },
    );
    let profile = tempfile::tempdir().unwrap();
    let c = w.browser(profile.path(), false).await;
    click_start(&c).await;
    // Said plainly on the page, computing only once the volunteer agrees.
    c.wait()
        .for_element(Locator::Css("#no-webgpu:not([hidden])"))
        .await
        .unwrap();
    screenshot(&c, "no-webgpu").await;
    assert_eq!(
        w.store.batch_status(batch, None).unwrap().by_state["unsent"],
        2
    );
    c.find(Locator::Id("use-cpu"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    w.wait_done(batch, Duration::from_secs(120)).await;
    for prov in w.assert_reference_digests(batch) {
        assert_eq!(prov.replicas[0].adapter.as_ref().unwrap().backend, "cpu");
    }
    assert!(text(&c, "adapter").await.contains("CPU"));
    screenshot(&c, "cpu-fallback").await;
    c.close().await.unwrap();
}
