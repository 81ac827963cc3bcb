//! Driving the volunteer page in real headless Chromium over WebDriver, against a real
//! coordinator in this process: shared by the browser tests and `qg-browser-bench`. Needs
//! `cargo xtask build-web` (web/pkg) and Debian's chromium and chromium-driver.

use coordinator::api::{new_batch, now};
use coordinator::engine::Engine;
use coordinator::server::{Config, FileConfig, start};
use fantoccini::{Client, ClientBuilder, Locator};
use protocol::api::{BatchRequest, PolicySpec};
use serde_json::{Value, json};
use shaders::Job;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One browser test at a time: SwiftShader is CPU-hungry on a 2-core machine.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct World {
    pub store: Arc<Engine>,
    pub addr: SocketAddr,
    /// The coordinator's SQLite file.
    pub db: PathBuf,
    /// The log's one witness (configured; it cosigns when `cosign_newest` says so).
    pub witness: transparency::NoteKey,
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

pub async fn world() -> World {
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
    let witness = transparency::NoteKey::from_seed(
        "w.browser.test",
        transparency::ALG_COSIGNATURE_V1,
        [9; 32],
    )
    .unwrap();
    cfg.witnesses = vec![witness.verifier_key()];
    let store = Arc::new(Engine::open(&cfg.db).unwrap());
    let db = match &cfg.db {
        coordinator::engine::Database::Sqlite(p) => p.clone(),
        coordinator::engine::Database::Postgres(_) => unreachable!("the embedded default"),
    };
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
        db,
        witness,
        driver,
        driver_url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

impl World {
    /// The witness cosigns the log's newest checkpoint (what `qg witness follow` does once).
    pub fn cosign_newest(&self) -> u64 {
        let note = self.store.log_checkpoint().unwrap().expect("a checkpoint");
        let text = transparency::note_text(&note);
        let size: u64 = text.lines().nth(1).unwrap().parse().unwrap();
        let line = self.witness.cosign(text.as_bytes(), 1).unwrap().to_bytes();
        self.store
            .add_cosignature(
                size,
                &String::from_utf8(line).unwrap(),
                &[self.witness.verifier()],
                1,
            )
            .unwrap();
        size
    }

    /// A browser session; `profile` is its user-data dir (reuse one to reopen "the same"
    /// browser), `webgpu` whether WebGPU is on.
    pub async fn browser(&self, profile: &Path, webgpu: bool) -> Client {
        let mut args = Vec::new();
        if webgpu {
            args.push("--enable-unsafe-webgpu".into());
            // Without a GPU, headless Chromium can show a WebGPU canvas only when its compositor
            // runs on Vulkan (SwiftShader) too; otherwise presenting a frame loses the device.
            args.extend(
                [
                    "--enable-features=Vulkan",
                    "--use-vulkan=swiftshader",
                    "--use-angle=vulkan",
                ]
                .map(String::from),
            );
        } else {
            args.push("--disable-features=WebGPU".into());
        }
        self.browser_with(profile, args).await
    }

    /// A browser session with these Chromium flags besides the usual headless ones.
    pub async fn browser_with(&self, profile: &Path, extra: Vec<String>) -> Client {
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
        args.extend(extra);
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": args,
                // Downloads land in the profile's downloads/ (see `downloaded`).
                "prefs": {
                    "download.default_directory": profile.join("downloads"),
                    "download.prompt_for_download": false,
                },
            },
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

    pub fn batch(&self, units: Vec<Value>, policy: PolicySpec) -> i64 {
        let b = new_batch(
            BatchRequest {
                name: Some("e2e".into()),
                description: Some("An end-to-end test batch.".into()),
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
        self.store.create_batch(&b, now()).unwrap()
    }

    pub async fn wait_done(&self, batch: i64, limit: Duration) {
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
    pub fn assert_reference_digests(&self, batch: i64) -> Vec<coordinator::store::UnitProvenance> {
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

pub async fn click_start(c: &Client) {
    let start = c
        .wait()
        .for_element(Locator::Css("#start:not([disabled])"))
        .await
        .unwrap();
    start.click().await.unwrap();
}

pub async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

pub async fn wait_js(c: &Client, script: &str, limit: Duration) -> Value {
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

pub async fn screenshot(c: &Client, name: &str) {
    let dir = root().join("target/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// The file `name` the page downloaded into `profile`'s downloads/, once complete.
pub async fn downloaded(profile: &Path, name: &str, limit: Duration) -> Vec<u8> {
    let path = profile.join("downloads").join(name);
    let t0 = Instant::now();
    loop {
        if let Ok(bytes) = std::fs::read(&path)
            && !bytes.is_empty()
            && !profile
                .join("downloads")
                .join(format!("{name}.crdownload"))
                .exists()
        {
            return bytes;
        }
        assert!(
            t0.elapsed() < limit,
            "{name} was not downloaded in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An element's screenshot as RGBA8 pixels: (width, height, pixels).
pub async fn element_pixels(c: &Client, css: &str) -> (u32, u32, Vec<u8>) {
    let png = c
        .find(Locator::Css(css))
        .await
        .unwrap()
        .screenshot()
        .await
        .unwrap();
    decode_png(&png)
}

/// RGBA8 pixels of a PNG: (width, height, pixels).
pub fn decode_png(png: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut d = png::Decoder::new(std::io::Cursor::new(png));
    d.set_transformations(png::Transformations::EXPAND | png::Transformations::ALPHA);
    let mut r = d.read_info().expect("a PNG");
    let mut buf = vec![0; r.output_buffer_size().expect("a size")];
    let info = r.next_frame(&mut buf).expect("a frame");
    buf.truncate(info.buffer_size());
    let rgba = match info.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::Rgb => buf
            .chunks(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        png::ColorType::GrayscaleAlpha => buf
            .chunks(2)
            .flat_map(|p| [p[0], p[0], p[0], p[1]])
            .collect(),
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    (info.width, info.height, rgba)
}

/// Clicks the science page's "Verify receipts" and waits for its verdict (the line it says).
pub async fn verify_receipts(c: &Client) -> String {
    c.find(fantoccini::Locator::Id("verify-log"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        c,
        "const t = document.getElementById('log-result').textContent; \
         return t === 'checking…' ? null : t",
        Duration::from_secs(15),
    )
    .await
    .as_str()
    .unwrap()
    .to_owned()
}

pub async fn text(c: &Client, id: &str) -> String {
    c.find(Locator::Id(id)).await.unwrap().text().await.unwrap()
}
