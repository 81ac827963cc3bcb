//! `qg-run` as a user meets it: JSON out on success, a message naming the field and exit
//! code 2 on bad input, never a panic.

use std::process::Command;

fn qg_run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qg-run"))
        .args(args)
        .output()
        .expect("qg-run runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cpu_run_prints_a_json_report() {
    let (code, out, err) = qg_run(&[
        "ising2d",
        "--params",
        r#"{"L":16,"beta":0.44,"sweeps":10,"seed":1}"#,
        "--backend",
        "cpu",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kernel"], "ising2d");
    assert_eq!(v["digest"].as_str().unwrap().len(), 64);
    assert_eq!(v["params"]["measure_every"], 1);
    assert!(v["checkpoints"].as_array().unwrap().len() >= 2);
    assert!(v["summary"]["e"].is_number());
}

#[test]
fn bad_input_names_the_field() {
    let cases = [
        (
            "ising2d",
            r#"{"L":17,"beta":0.4,"sweeps":10,"seed":1}"#,
            "L:",
        ),
        (
            "ising2d",
            r#"{"L":16,"beta":-1,"sweeps":10,"seed":1}"#,
            "beta:",
        ),
        (
            "ising2d",
            r#"{"L":16,"beta":0.4,"sweeps":0,"seed":1}"#,
            "sweeps:",
        ),
        ("ising2d", r#"{"L":16,"beta":0.4,"seed":1}"#, "`sweeps`"),
        ("nbody", r#"{}"#, "unknown kernel `nbody`"),
        ("ising2d", r#"{"L":16,"#, "--params is not valid JSON"),
        (
            "lj_md",
            r#"{"n":64,"density":0.8,"temperature":1,"dt":0.5,"steps":10,"seed":1}"#,
            "dt:",
        ),
    ];
    for (kernel, params, want) in cases {
        let (code, out, err) = qg_run(&[kernel, "--params", params, "--backend", "cpu"]);
        assert_eq!(code, 2, "{kernel} {params}: {err}");
        assert!(out.is_empty());
        assert!(err.contains(want), "{kernel} {params}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
