//! The volunteer page in real headless Chromium (WebGPU on SwiftShader), driven over WebDriver
//! against a real coordinator: volunteers click Start and their results become canonical with
//! the CPU reference's digests. Screenshots go to target/e2e/.

use fantoccini::Locator;
use protocol::api::PolicySpec;
use qg_tests::browser::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

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
        // The volunteer's own results, and the name the log knows it by.
        let mine = wait_js(
            c,
            "const rows = [...document.querySelectorAll('#my-results tbody tr')].map((r) => r.cells.length); \
             return rows.length >= 1 && rows.every((n) => n === 5) && document.getElementById('anon-id').textContent.startsWith('v-')",
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(mine, true);
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
    // A resume point past the first checkpoint (step 200) is saved, then the browser goes away.
    wait_js(
        &a,
        "return window.qg.events.some(e => e.type === 'saved' && e.done >= 200)",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn science_and_dashboard_pages_follow_a_batch_to_verified_results() {
    use client_wasm::native::NativeHost;
    use client_wasm::volunteer::{self, Engine, Options};
    use coordinator::api::{hash_secret, new_secret, now};
    let _serial = SERIAL.lock().await;
    let w = world().await;
    let key = new_secret("qgk_");
    w.store
        .create_key("scientist", &hash_secret(&key), false, now())
        .unwrap();
    let op = new_secret("qgk_");
    w.store
        .create_key("operator", &hash_secret(&op), true, now())
        .unwrap();

    let p1 = tempfile::tempdir().unwrap();
    let sci = w.browser(p1.path(), false).await;
    sci.goto(&format!("http://{}/science/", w.addr))
        .await
        .unwrap();
    let p2 = tempfile::tempdir().unwrap();
    let dash = w.browser(p2.path(), false).await;
    dash.goto(&format!("http://{}/dashboard/", w.addr))
        .await
        .unwrap();
    for (c, k) in [(&sci, &key), (&dash, &op)] {
        c.execute(
            "const k = document.getElementById('key'); k.value = arguments[0]; k.dispatchEvent(new Event('change'));",
            vec![json!(k)],
        )
        .await
        .unwrap();
    }
    let spec = "name = \"page test\"\nkernel = \"ising2d\"\nseeds = 2\n[params]\nL = 16\nsweeps = 40\n[sweep]\nbeta = { from = 0.3, to = 0.5, steps = 3 }\n[policy]\nspot_check_rate = 0.0\n";
    // A bad spec first: the page names the field and nothing is created.
    sci.execute(
        "document.getElementById('spec').value = arguments[0]",
        vec![json!(spec.replace("L = 16", "L = 15"))],
    )
    .await
    .unwrap();
    sci.find(Locator::Id("validate"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &sci,
        "return document.getElementById('spec-result').textContent.includes('params.L')",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        js(&sci, "return document.getElementById('submit').disabled").await,
        true
    );
    sci.execute(
        "document.getElementById('spec').value = arguments[0]",
        vec![json!(spec)],
    )
    .await
    .unwrap();
    sci.find(Locator::Id("validate"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &sci,
        "return document.getElementById('spec-result').textContent.includes('6 units of ising2d')",
        Duration::from_secs(10),
    )
    .await;
    sci.find(Locator::Id("submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let batch = wait_js(
        &sci,
        "return window.qgScience.state.shown ?? null",
        Duration::from_secs(10),
    )
    .await;
    let batch = batch.as_i64().unwrap();
    // The operator sees the new units waiting.
    wait_js(
        &dash,
        "return document.getElementById('units-unsent').textContent === '6'",
        Duration::from_secs(15),
    )
    .await;

    let url = format!("http://{}", w.addr);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let hosts: Vec<_> = dirs
        .iter()
        .map(|d| NativeHost::new(&url, d.path().into()).unwrap())
        .collect();
    let opts = Options {
        max_units: Some(6),
        // As qg-volunteer describes its CPU engine.
        adapter: protocol::api::AdapterInfo {
            name: "cpu-reference".into(),
            backend: "cpu".into(),
            client: "qg-volunteer/test".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let (a, b) = tokio::join!(
        volunteer::run(&hosts[0], &Engine::Cpu, &opts),
        volunteer::run(&hosts[1], &Engine::Cpu, &opts)
    );
    assert_eq!(a + b, 12);
    w.wait_done(batch, Duration::from_secs(60)).await;
    w.assert_reference_digests(batch);

    // The science page shows the batch done, plots 3 points with error bars, downloads CSV.
    wait_js(&sci, "return window.qgScience.state.detail?.st.done === true && window.qgScience.state.chartPoints === 3", Duration::from_secs(15)).await;
    sci.find(Locator::Id("dl-csv"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let csv = wait_js(
        &sci,
        "return window.qgScience.state.lastDownload ?? null",
        Duration::from_secs(10),
    )
    .await;
    let csv = csv.as_str().unwrap();
    assert_eq!(csv.lines().count(), 7, "{csv}");
    assert!(csv.starts_with("unit_id,state,digest,"));
    assert_eq!(csv.matches(",canonical,").count(), 6);
    // Each result's receipt, checked in the page against the log's checkpoint.
    wait_js(
        &sci,
        "return window.qgScience.state.detail?.res.units.every((u) => u.log_index != null) ?? false",
        Duration::from_secs(15),
    )
    .await;
    sci.find(Locator::Id("verify-log"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &sci,
        "return window.qgScience.state.logVerified === 6",
        Duration::from_secs(15),
    )
    .await;
    let marks = js(
        &sci,
        "return [...document.querySelectorAll('#units tbody tr')].filter((r) => r.textContent.includes('✓')).length",
    )
    .await;
    assert_eq!(marks, 6);
    assert!(
        text(&sci, "log-result")
            .await
            .starts_with("6 of 6 canonical results")
    );
    // A finished batch offers no cancelling.
    assert_eq!(
        js(&sci, "return document.getElementById('cancel').hidden").await,
        true
    );
    screenshot(&sci, "science").await;

    // The dashboard's counts moved as the volunteers worked.
    wait_js(
        &dash,
        "return document.getElementById('units-canonical').textContent === '6'",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(text(&dash, "agreement").await, "100.0%");
    let hosts_rows = js(
        &dash,
        "return document.querySelectorAll('#hosts tbody tr').length",
    )
    .await;
    assert_eq!(hosts_rows, 2);
    // Both volunteers are one adapter class (the native CPU client), with no failed check.
    let classes = js(
        &dash,
        "return [...document.querySelectorAll('#classes tbody tr')].map((r) => [r.firstChild.textContent, r.lastChild.textContent])",
    )
    .await;
    assert_eq!(classes, json!([["qg-volunteer/test/cpu//", "not doubted"]]));
    assert_eq!(text(&dash, "doubted-classes").await, "0");
    screenshot(&dash, "dashboard").await;
    sci.close().await.unwrap();
    dash.close().await.unwrap();
}
