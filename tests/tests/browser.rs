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
        // The adapter was WebGPU (SwiftShader here), named once; progress was shown, credit
        // granted; what the unit is for was said.
        let adapter = text(c, "adapter").await;
        assert!(adapter.ends_with("(WebGPU)"), "{adapter}");
        let words: Vec<String> = adapter
            .trim_end_matches(" (WebGPU)")
            .split([' ', '·'])
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let mut unique = words.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            words.len(),
            "a word of the adapter repeats: {adapter}"
        );
        assert!(text(c, "progress-text").await.contains("steps"));
        assert_eq!(text(c, "batch-name").await, "For “e2e”");
        assert_eq!(
            text(c, "batch-description").await,
            "An end-to-end test batch."
        );
        assert!(
            text(c, "kernel-plain")
                .await
                .contains("how a magnet loses its order"),
            "{}",
            text(c, "kernel-plain").await
        );
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
    let adapter_name = text(&a, "adapter").await;
    eprintln!("browser adapter: {adapter_name}");
    // Without a GPU device on this machine, Chromium's WebGPU runs on SwiftShader.
    if !Path::new("/dev/dri").exists() {
        assert!(
            adapter_name.to_lowercase().contains("swiftshader"),
            "{adapter_name}"
        );
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
        "return document.getElementById('progress-text').textContent.includes('steps')",
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
    // Long enough for several resume points: saving takes at most 1% of the time.
    let mut unit = units(1, 64, 20000);
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
    // A resume point past the first checkpoint (step 200) is saved, and the page says so; then
    // the browser goes away.
    wait_js(
        &a,
        "const m = document.getElementById('saved').textContent.match(/saved at step (\\d+)/); \
         return m !== null && Number(m[1]) >= 200",
        Duration::from_secs(120),
    )
    .await;
    a.close().await.unwrap();
    let a = w.browser(profile.path(), true).await;
    click_start(&a).await;
    let resumed = wait_js(
        &a,
        "const m = document.getElementById('resumed').textContent.match(/^Resumed from step (\\d+)/); \
         return m === null ? null : Number(m[1])",
        Duration::from_secs(60),
    )
    .await;
    assert!(
        resumed.as_u64().unwrap() >= 200,
        "did not resume: {resumed}"
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
    // Two swept parameters: the plots draw one series per L, against beta.
    let spec = "name = \"page test\"\ndescription = \"Binder crossings, for the test.\"\nkernel = \"ising2d\"\nseeds = 2\n[params]\nsweeps = 40\n[sweep]\nbeta = { from = 0.3, to = 0.5, steps = 3 }\nL = [16, 32]\n[policy]\nspot_check_rate = 0.0\n";
    // A bad spec first: the page names the field and nothing is created.
    sci.execute(
        "document.getElementById('spec').value = arguments[0]",
        vec![json!(spec.replace("sweeps = 40", "sweeps = 0"))],
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
        "return document.getElementById('spec-result').textContent.includes('sweeps')",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        js(&sci, "return document.getElementById('submit').disabled").await,
        true
    );
    assert_eq!(w.store.status().unwrap().batches, 0);
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
        "return document.getElementById('spec-result').textContent.includes('12 units of ising2d')",
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
        "const b = document.getElementById('detail').dataset.batch; return b ? Number(b) : null",
        Duration::from_secs(10),
    )
    .await;
    let batch = batch.as_i64().unwrap();
    assert_eq!(
        text(&sci, "detail-description").await,
        "Binder crossings, for the test."
    );
    // Before any result: no pace yet, and the page says why.
    assert!(
        text(&sci, "detail-pace")
            .await
            .contains("first verified results")
    );
    // The operator sees the new units waiting.
    wait_js(
        &dash,
        "return document.getElementById('units-unsent').textContent === '12'",
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
        max_units: Some(12),
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
    assert_eq!(a + b, 24);
    w.wait_done(batch, Duration::from_secs(60)).await;
    w.assert_reference_digests(batch);

    // The science page shows the batch done with its pace, and plots every observable the
    // kernel lists: one series per L, each of 3 points with error bars (2 seeds each).
    wait_js(
        &sci,
        "return document.getElementById('detail').dataset.done === 'true' \
         && document.querySelectorAll('figure[data-observable]').length === 3",
        Duration::from_secs(15),
    )
    .await;
    assert!(
        text(&sci, "detail-pace")
            .await
            .starts_with("All 12 units settled")
    );
    let figures = js(
        &sci,
        "return [...document.querySelectorAll('figure[data-observable]')].map((f) => [f.dataset.observable, \
           [...f.querySelectorAll('svg g.series')].map((g) => [g.dataset.series, g.querySelectorAll('circle').length, g.querySelectorAll('g.err').length])])",
    )
    .await;
    let series = json!([["L = 16", 3, 3], ["L = 32", 3, 3]]);
    assert_eq!(
        figures,
        json!([["binder", series], ["abs_m", series], ["e", series]]),
        "{figures}"
    );
    // Each plot downloads as SVG and as PNG, beside the results as CSV.
    let click = |css: &'static str| {
        let sci = &sci;
        async move {
            sci.find(Locator::Css(css))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
        }
    };
    click("figure[data-observable='binder'] figcaption button:nth-of-type(2)").await;
    let svg = downloaded(
        p1.path(),
        &format!("batch-{batch}-binder.svg"),
        Duration::from_secs(15),
    )
    .await;
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("xmlns=\"http://www.w3.org/2000/svg\""));
    assert_eq!(svg.matches("class=\"series\"").count(), 2);
    assert_eq!(svg.matches("class=\"err\"").count(), 6);
    click("figure[data-observable='binder'] figcaption button:nth-of-type(1)").await;
    let png = downloaded(
        p1.path(),
        &format!("batch-{batch}-binder.png"),
        Duration::from_secs(15),
    )
    .await;
    let (width, height, px) = decode_png(&png);
    assert_eq!((width, height), (1280, 800));
    // The series' colours are in it (Okabe-Ito blue and vermilion), not only white and grey.
    let has = |rgb: [u8; 3]| px.chunks(4).any(|p| p[..3] == rgb);
    assert!(has([0x00, 0x72, 0xB2]) && has([0xD5, 0x5E, 0x00]));
    sci.find(Locator::Id("dl-csv"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let csv = downloaded(
        p1.path(),
        &format!("batch-{batch}.csv"),
        Duration::from_secs(10),
    )
    .await;
    let csv = String::from_utf8(csv).unwrap();
    assert_eq!(csv.lines().count(), 13, "{csv}");
    assert!(csv.starts_with("unit_id,state,digest,"));
    assert_eq!(csv.matches(",canonical,").count(), 12);
    // Each result's receipt, checked in the page against the log's checkpoint.
    wait_js(
        &sci,
        "const rows = [...document.querySelectorAll('#units tbody tr')]; \
         return rows.length === 12 && rows.every((r) => r.textContent.includes('#'))",
        Duration::from_secs(15),
    )
    .await;
    // The page pinned the log's key and its witness on first use (from /api/v1/log); the
    // witness cosigns the checkpoint that holds every receipt.
    assert_eq!(
        js(
            &sci,
            "return document.getElementById('pin-witnesses').value"
        )
        .await,
        w.witness.verifier_key()
    );
    w.cosign_newest();
    let said = verify_receipts(&sci).await;
    assert!(said.starts_with("12 of 12 canonical results"), "{said}");
    assert!(said.contains("cosigned by w.browser.test"), "{said}");
    // The plots are now the verified units' own.
    assert_eq!(
        text(&sci, "plots-source").await,
        "Plotted from the 12 results verified in this browser."
    );
    let marks = wait_js(
        &sci,
        "const n = [...document.querySelectorAll('#units tbody tr')].filter((r) => r.textContent.includes('✓')).length; \
         return n === 12 ? n : null",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(marks, 12);
    // The coordinator's owner edits a result's numbers in its database: the page shows them,
    // and says that no receipt accepted them.
    let unit = w.store.batch_results(batch, None).unwrap()[4].unit_id;
    rusqlite::Connection::open(&w.db)
        .unwrap()
        .execute(
            "UPDATE units SET summary = json_set(summary, '$.binder', 0.61) WHERE id = ?1",
            [unit],
        )
        .unwrap();
    let said = verify_receipts(&sci).await;
    assert!(said.starts_with("11 of 12 canonical results"), "{said}");
    // The forged numbers are left out of the plots.
    wait_js(
        &sci,
        "return document.getElementById('plots-source').textContent === 'Plotted from the 11 results verified in this browser.'",
        Duration::from_secs(10),
    )
    .await;
    let why = wait_js(
        &sci,
        "const r = [...document.querySelectorAll('#units tbody tr')].find((r) => r.textContent.includes('✗')); \
         return r ? [r.cells[0].textContent, [...r.cells].map((c) => c.title).find((t) => t)] : null",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(why[0], unit.to_string(), "{why}");
    assert!(
        why[1]
            .as_str()
            .unwrap()
            .contains("the summary presented is not the one log entry"),
        "{why}"
    );
    // Its params edited too (a unit presented as computed at another point): that unit fails
    // against its receipt and the batch's commitment, the rest still verify.
    let other = w.store.batch_results(batch, None).unwrap()[7].unit_id;
    rusqlite::Connection::open(&w.db)
        .unwrap()
        .execute(
            "UPDATE units SET params = json_set(params, '$.beta', 0.9) WHERE id = ?1",
            [other],
        )
        .unwrap();
    let said = verify_receipts(&sci).await;
    assert!(said.starts_with("10 of 12 canonical results"), "{said}");
    assert!(said.contains("not the ones committed"), "{said}");
    let why = js(
        &sci,
        &format!(
            "const r = [...document.querySelectorAll('#units tbody tr')].find((r) => r.cells[0].textContent === '{other}'); \
             return [...r.cells].map((c) => c.title).find((t) => t)"
        ),
    )
    .await;
    assert!(
        why.as_str().unwrap().contains("for other parameters"),
        "{why}"
    );
    // With another log key pinned, nothing verifies: the checkpoint is not signed by it.
    let other_key = transparency::NoteKey::from_seed(
        "localhost/quorum-grid",
        transparency::ALG_ED25519,
        [3; 32],
    )
    .unwrap()
    .verifier_key();
    js(
        &sci,
        &format!(
            "const k = document.getElementById('pin-log-key'); \
             k.value = '{other_key}'; \
             k.dispatchEvent(new Event('change')); return true"
        ),
    )
    .await;
    // Changing a pin withdraws what was verified under the old one.
    assert_eq!(
        text(&sci, "log-result").await,
        "The pinned keys changed: verify the receipts again."
    );
    let said = verify_receipts(&sci).await;
    assert!(said.starts_with("Nothing verified"), "{said}");
    assert!(said.contains("not signed by the log's key"), "{said}");
    // A finished batch offers no cancelling.
    assert_eq!(
        js(&sci, "return document.getElementById('cancel').hidden").await,
        true
    );
    screenshot(&sci, "science").await;

    // The dashboard's counts moved as the volunteers worked.
    wait_js(
        &dash,
        "return document.getElementById('units-canonical').textContent === '12'",
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
    assert_eq!(
        classes,
        json!([["qg-volunteer/test/cpu/?/?", "not doubted"]])
    );
    assert_eq!(text(&dash, "doubted-classes").await, "0");
    screenshot(&dash, "dashboard").await;
    sci.close().await.unwrap();
    dash.close().await.unwrap();
}

/// The reference's final Ising lattice of `unit` (params), up = true, row by row.
fn reference_lattice(params: &Value) -> Vec<bool> {
    let l = params["L"].as_u64().unwrap() as usize;
    let out = shaders::Job::new("ising2d", params.clone())
        .unwrap()
        .run_cpu(1, &mut |_, _| {})
        .unwrap()
        .output;
    let bits = &out[out.len() - l * l / 8..];
    (0..l * l)
        .map(|i| bits[i / 8] >> (i % 8) & 1 == 1)
        .collect()
}

/// The canvas's cells (of an l×l lattice), dark = up, read from an element screenshot.
fn canvas_cells(shot: &(u32, u32, Vec<u8>), l: usize) -> Vec<bool> {
    let (w, h, px) = shot;
    // The element's box includes its 1px border around the 256×256 drawing.
    let side = 256usize;
    let (ox, oy) = ((*w as usize - side) / 2, (*h as usize - side) / 2);
    let cell = side / l;
    (0..l * l)
        .map(|i| {
            let (r, c) = (i / l, i % l);
            let (x, y) = (ox + c * cell + cell / 2, oy + r * cell + cell / 2);
            let p = &px[4 * (y * *w as usize + x)..][..3];
            p.iter().map(|&v| u32::from(v)).sum::<u32>() < 3 * 128
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_view_draws_the_lattice_the_gpu_computes() {
    let _serial = SERIAL.lock().await;
    let w = world().await;
    // One unit from a hot (random) start: its frames change as it orders, and its last frame
    // is the final lattice, which the CPU reference knows.
    let params = json!({"L": 64, "beta": 0.45, "sweeps": 3000, "seed": 5, "start": "hot"});
    let batch = w.batch(
        vec![params.clone()],
        PolicySpec {
            min_quorum: Some(1),
            target_results: Some(1),
            ..Default::default()
        },
    );
    let profile = tempfile::tempdir().unwrap();
    let c = w.browser(profile.path(), true).await;
    click_start(&c).await;
    // Two frames at different steps differ in their pixels.
    let step = |c: &fantoccini::Client| {
        let c = c.clone();
        async move {
            let v = js(
                &c,
                "return Number(document.getElementById('view').dataset.step ?? 0)",
            )
            .await;
            v.as_u64().unwrap_or(0)
        }
    };
    wait_js(
        &c,
        "return Number(document.getElementById('view').dataset.step ?? 0) > 0",
        Duration::from_secs(60),
    )
    .await;
    let first_step = step(&c).await;
    let first = element_pixels(&c, "#view").await;
    screenshot(&c, "live-view-early").await;
    let t0 = std::time::Instant::now();
    while step(&c).await == first_step {
        if t0.elapsed() > Duration::from_secs(60) {
            let why = js(
                &c,
                "return [...['progress-text', 'status-line', 'view-caption']].map((id) => document.getElementById(id).textContent)",
            )
            .await;
            let prov = w.store.unit_provenance(1, None);
            panic!("the view stayed at step {first_step}: {why} {prov:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = element_pixels(&c, "#view").await;
    let changed = first
        .2
        .chunks(4)
        .zip(second.2.chunks(4))
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        changed > 500,
        "only {changed} pixels changed between frames"
    );
    // Done: the last frame is the final state, cell for cell the reference's lattice.
    w.wait_done(batch, Duration::from_secs(240)).await;
    wait_js(
        &c,
        "return document.getElementById('view').dataset.step === '3000'",
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the frame reaches the screen
    let shot = element_pixels(&c, "#view").await;
    let want = reference_lattice(&params);
    let got = canvas_cells(&shot, 64);
    let wrong = want.iter().zip(&got).filter(|(a, b)| a != b).count();
    assert_eq!(
        wrong, 0,
        "{wrong} of 4096 cells differ from the reference's final lattice"
    );
    assert!(
        want.iter().filter(|&&u| u).count() > 100 && want.iter().filter(|&&u| !u).count() > 100
    );
    let label = js(
        &c,
        "return document.getElementById('view').getAttribute('aria-label')",
    )
    .await;
    assert_eq!(
        label, "The simulation: ising2d unit 1 at step 3000 of 3000",
        "{label}"
    );
    // The volunteer's result is listed as theirs.
    wait_js(
        &c,
        "return [...document.querySelectorAll('#my-results tbody tr')].some((r) => r.cells[0].textContent === '1')",
        Duration::from_secs(30),
    )
    .await;
    screenshot(&c, "live-view-final").await;
    // The volunteer can turn the view off.
    c.find(Locator::Id("show-view"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        js(&c, "return document.getElementById('view').hidden").await,
        true
    );
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_volunteer_page_fits_a_narrow_screen_and_names_its_controls() {
    let _serial = SERIAL.lock().await;
    let w = world().await;
    let profile = tempfile::tempdir().unwrap();
    let c = w.browser(profile.path(), true).await;
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("http://{}/", w.addr)).await.unwrap();
    // Nothing wider than the screen; every control has a name a screen reader reads.
    let overflow = js(
        &c,
        "return document.documentElement.scrollWidth - window.innerWidth",
    )
    .await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the page is {overflow} px wider than the screen"
    );
    let unnamed = js(
        &c,
        "return [...document.querySelectorAll('button, input, select, canvas, progress')].filter((e) => \
           !(e.labels?.length || e.getAttribute('aria-label') || e.textContent.trim() || e.getAttribute('aria-labelledby'))).map((e) => e.id)",
    )
    .await;
    assert_eq!(unnamed, json!([]), "controls without a name: {unnamed}");
    let live = js(
        &c,
        "return document.getElementById('status-line').getAttribute('aria-live')",
    )
    .await;
    assert_eq!(live, "polite");
    // Start works from the keyboard.
    c.execute("document.getElementById('start').focus()", vec![])
        .await
        .unwrap();
    wait_js(
        &c,
        "return !document.getElementById('start').disabled",
        Duration::from_secs(20),
    )
    .await;
    c.active_element()
        .await
        .unwrap()
        .send_keys("\u{E007}")
        .await
        .unwrap(); // Enter
    wait_js(
        &c,
        "return document.getElementById('start').textContent === 'Pause'",
        Duration::from_secs(10),
    )
    .await;
    screenshot(&c, "volunteer-narrow").await;
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_cannot_show_the_view_still_computes() {
    let _serial = SERIAL.lock().await;
    let w = world().await;
    let batch = w.batch(
        units(1, 32, 100),
        PolicySpec {
            min_quorum: Some(1),
            target_results: Some(1),
            ..Default::default()
        },
    );
    // Headless Chromium's default compositor cannot show a WebGPU canvas: showing one loses
    // the device. The view's probe finds that out before any unit, and the work goes on.
    let profile = tempfile::tempdir().unwrap();
    let c = w
        .browser_with(profile.path(), vec!["--enable-unsafe-webgpu".into()])
        .await;
    click_start(&c).await;
    w.wait_done(batch, Duration::from_secs(120)).await;
    w.assert_reference_digests(batch);
    let caption = text(&c, "view-caption").await;
    assert!(
        caption.starts_with("The live view is off in this browser"),
        "{caption}"
    );
    screenshot(&c, "view-off").await;
    c.close().await.unwrap();
}

/// Scientists' kernel packages in the browser: the three examples, approved, computed by a
/// volunteer tab (WebGPU on SwiftShader) and a native volunteer (lavapipe), whose results
/// agree across the two devices (bit for bit for the digest packages, within tolerance for
/// Gray–Scott); the tab says whose code it ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_and_native_volunteers_compute_the_example_packages() {
    let _serial = SERIAL.lock().await;
    let w = world().await;
    let mut batches = Vec::new();
    for (name, params) in [
        ("percolation2d", json!({"L": 16, "p": 0.6, "samples": 4})),
        (
            "potts3",
            json!({"L": 16, "beta": 1.0, "sweeps": 40, "thermalize": 10}),
        ),
        ("gray_scott", json!({"L": 32, "steps": 60})),
    ] {
        let pkg = qg_tests::example_package(name);
        let files = pkg.files.clone();
        let p = shaders::package::Package::from_files(files).unwrap();
        let (st, _) = w
            .store
            .put_package(p, None, coordinator::api::now())
            .unwrap();
        w.store
            .set_package(
                &pkg.hash,
                coordinator::engine::PackageAction::Approve,
                "test",
                coordinator::api::now(),
            )
            .unwrap();
        let units = (1..=2)
            .map(|seed| {
                let mut u = params.clone();
                u["seed"] = json!(seed);
                u
            })
            .collect();
        let b = coordinator::api::new_batch_of(
            protocol::api::BatchRequest {
                name: Some(format!("{name} e2e")),
                description: None,
                kernel: st.kernel.clone(),
                units,
                policy: PolicySpec::default(),
                axes: Vec::new(),
            },
            None,
            &coordinator::api::Admission {
                default_spot: 0.0,
                ..Default::default()
            },
            Some(&pkg),
            false,
        )
        .unwrap_or_else(|e| panic!("{:?}", e.body));
        batches.push((
            name,
            st.kernel,
            w.store.create_batch(&b, coordinator::api::now()).unwrap(),
        ));
    }
    let profile = tempfile::tempdir().unwrap();
    let tab = w.browser(profile.path(), true).await;
    click_start(&tab).await;
    let url = format!("http://{}", w.addr);
    let native_dir = profile.path().join("native");
    let native = tokio::task::spawn_blocking(move || {
        let gpu = qg_tests::gpu();
        let host = client_wasm::native::NativeHost::new(&url, native_dir).unwrap();
        let opts = client_wasm::volunteer::Options {
            adapter: protocol::api::AdapterInfo {
                name: gpu.adapter().name,
                backend: "vulkan".into(),
                ..Default::default()
            },
            max_units: Some(6),
            ..Default::default()
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(client_wasm::volunteer::run(
                &host,
                &client_wasm::volunteer::Engine::Gpu(gpu),
                &opts,
            ))
    });
    for (_, _, batch) in &batches {
        w.wait_done(*batch, Duration::from_secs(300)).await;
    }
    assert_eq!(native.await.unwrap(), 6);
    for (name, kernel, batch) in &batches {
        for r in w.store.batch_results(*batch, None).unwrap() {
            assert_eq!(
                r.state,
                coordinator::lifecycle::UnitState::Canonical,
                "{name}: {r:?}"
            );
            let prov = w.store.unit_provenance(r.unit_id, None).unwrap();
            assert_eq!(&prov.kernel, kernel);
            let backends: Vec<_> = prov
                .replicas
                .iter()
                .filter(|x| x.state == coordinator::lifecycle::ReplicaState::Valid)
                .filter_map(|x| x.adapter.as_ref().map(|a| a.backend.clone()))
                .collect();
            assert!(
                backends.contains(&"webgpu".to_owned()) && backends.contains(&"vulkan".to_owned()),
                "{name}: both devices agreed: {backends:?}"
            );
            if *name == "percolation2d" {
                let want = shaders::Job::new("percolation2d", r.params.clone())
                    .unwrap()
                    .run_cpu(1, &mut |_, _| {})
                    .unwrap()
                    .digest;
                assert_eq!(r.digest, Some(want));
            }
        }
    }
    // The tab said whose code it ran.
    assert!(
        text(&tab, "package-author")
            .await
            .contains("Quorum Grid developers")
    );
    assert!(
        text(&tab, "package-approved")
            .await
            .contains("approved by this coordinator")
    );
    screenshot(&tab, "package-volunteer").await;
}
