//! `cargo xtask bench kernels`: one JSON line per kernel and backend, all measured in the same
//! run by the release `qg-run`: the CPU reference on 1 thread and on all cores, and the native
//! GPU runner, with the ratios.

use anyhow::{Result, bail};
use serde_json::{Value, json};

pub fn run(args: &[&str]) -> Result<()> {
    match args.first().copied() {
        Some("kernels") => kernels(&args[1..]),
        Some("coordinator") => coordinator(&args[1..]),
        Some("browser") => browser(&args[1..]),
        Some("sabotage") => sabotage(&args[1..]),
        Some("log") => log(&args[1..]),
        Some("reliability") => reliability(&args[1..]),
        other => bail!(
            "usage: cargo xtask bench kernels [--bandwidth-gbs N] [--ising-l N] [--sweeps N] [--repeat N] | coordinator [--db sqlite,postgres] [--coordinators 1,2,4] [--sizes 10000,100000,1000000] [--seconds 5] | browser [--engine chromium|dawn] [--ising-l N] [--sweeps N] | sabotage [--units N] [--volunteers N] [--population a,b] [--strategy a,b] [--target-error 1e-3,1e-4] [--seed N] | log [--db sqlite,postgres] [--appends N] [--rate N] [--seconds S] [--proofs N] | reliability [--only sybil_errors,sybil_hoard,spot_hog,memory_bomb,flood,squat,kill9,soak,soak_closed_loop] [--connections N] [--soak-seconds S] [--volunteers N] (got {other:?})"
        ),
    }
}

/// The value after `flag` in `args`, parsed.
fn flag<T: std::str::FromStr>(args: &[&str], flag: &str) -> Result<Option<T>> {
    match args.iter().position(|a| *a == flag) {
        None => Ok(None),
        Some(i) => match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(v) => Ok(Some(v)),
            None => bail!("{flag} needs a number"),
        },
    }
}

/// The fastest of `n` native GPU runs.
fn fastest(kernel: &str, params: &Value, n: usize) -> Result<Value> {
    let mut best: Option<Value> = None;
    for _ in 0..n {
        let v = crate::qg_run(kernel, params, "gpu", None)?;
        let t = |v: &Value| v["elapsed_s"].as_f64().unwrap_or(f64::INFINITY);
        if best.as_ref().is_none_or(|b| t(&v) < t(b)) {
            best = Some(v);
        }
    }
    best.ok_or_else(|| anyhow::anyhow!("no run"))
}

/// `bench kernels --package DIR [--params JSON] [--repeat N]`: the package's rate on the native
/// GPU end to end, and beside it, where the package ports a built-in kernel of its name, the
/// built-in's with the same params, runs alternating (one JSON line).
fn package(dir: &str, args: &[&str]) -> Result<()> {
    let repeat: usize = flag(args, "--repeat")?.unwrap_or(3).max(1);
    let manifest = std::fs::read_to_string(std::path::Path::new(dir).join("kernel.toml"))
        .map_err(|e| anyhow::anyhow!("{dir}/kernel.toml: {e}"))?;
    let name = manifest
        .lines()
        .find_map(|l| l.strip_prefix("name = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or("")
        .to_owned();
    // The built-in kernels (the xtask builds without the crates it drives).
    let twin = ["ising2d", "percolation2d", "lj_md"].contains(&name.as_str());
    let params: Value = match args.iter().position(|a| *a == "--params") {
        Some(i) => serde_json::from_str(args.get(i + 1).copied().unwrap_or(""))
            .map_err(|e| anyhow::anyhow!("--params: {e}"))?,
        None if name == "percolation2d" => {
            json!({"L": 1024, "p": 0.5927, "samples": 16, "seed": 1})
        }
        None => json!({"seed": 1}),
    };
    let target = format!("package:{dir}");
    // Warm-ups (driver shader caches), then alternating runs, the fastest of each.
    crate::qg_run(&target, &params, "gpu", None)?;
    if twin {
        crate::qg_run(&name, &params, "gpu", None)?;
    }
    let t = |v: &Value| v["elapsed_s"].as_f64().unwrap_or(f64::INFINITY);
    let (mut best, mut best_twin): (Option<Value>, Option<Value>) = (None, None);
    for _ in 0..repeat {
        let v = crate::qg_run(&target, &params, "gpu", None)?;
        if best.as_ref().is_none_or(|b| t(&v) < t(b)) {
            best = Some(v);
        }
        if twin {
            let v = crate::qg_run(&name, &params, "gpu", None)?;
            if best_twin.as_ref().is_none_or(|b| t(&v) < t(b)) {
                best_twin = Some(v);
            }
        }
    }
    let p = best.ok_or_else(|| anyhow::anyhow!("no run"))?;
    let rate = |v: &Value| v["rate_per_s"].as_f64().unwrap_or(f64::NAN);
    let mut line = json!({
        "bench": "kernels", "package": p["kernel"], "backend": "gpu",
        "rate_per_s": rate(&p), "elapsed_s": p["elapsed_s"], "adapter": p["adapter"]["name"],
        "params": params, "repeat": repeat,
    });
    if let Some(b) = best_twin {
        line["builtin"] =
            json!({"kernel": name, "rate_per_s": rate(&b), "elapsed_s": b["elapsed_s"]});
        line["package_vs_builtin"] = json!(rate(&p) / rate(&b));
        line["same_digest_as_builtin"] = json!(p["digest"] == b["digest"]);
    }
    println!("{line}");
    Ok(())
}

/// Per kernel: the CPU reference on 1 thread and on all cores, and the native GPU end to end
/// (setup excluded; checkpoint digests, final readback and output included) and kernel-only
/// (the marginal cost of a run four times as long, with as many checkpoints and measurements:
/// what the device does per step, without the fixed costs).
fn kernels(args: &[&str]) -> Result<()> {
    crate::deps::ensure(&crate::deps::GPU)?;
    if let Some(i) = args.iter().position(|a| *a == "--package") {
        let dir = args
            .get(i + 1)
            .ok_or_else(|| anyhow::anyhow!("--package needs a kernel package's folder"))?;
        return package(dir, args);
    }
    // Peak memory bandwidth of the GPU, if known, for the ising2d bound: one byte per spin, so
    // about 3 bytes moved per flip (the spin read and written, its share of neighbour reads).
    let bandwidth_gbs: Option<f64> = flag(args, "--bandwidth-gbs")?;
    let l: u32 = flag(args, "--ising-l")?.unwrap_or(1024);
    let sweeps: u64 = flag(args, "--sweeps")?.unwrap_or(100);
    let repeat: usize = flag(args, "--repeat")?.unwrap_or(3).max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // (kernel, params, the field that scales the run, rate unit). ising2d at default
    // checkpoints (16) and one measurement.
    let cases = [
        (
            "ising2d",
            json!({"L": l, "beta": 0.44, "sweeps": sweeps, "measure_every": sweeps, "seed": 1}),
            "sweeps",
            "spin_updates_per_s",
        ),
        (
            "percolation2d",
            json!({"L": 1024, "p": 0.5927, "samples": 16, "seed": 1}),
            "samples",
            "site_visits_per_s",
        ),
        (
            "lj_md",
            json!({"n": 2048, "density": 0.8, "temperature": 1.0, "dt": 0.005, "steps": 20, "seed": 1}),
            "steps",
            "pair_interactions_per_s",
        ),
    ];
    for (kernel, params, scale, unit) in cases {
        let cpu1 = crate::qg_run(kernel, &params, "cpu", Some(1))?;
        let cpun = crate::qg_run(kernel, &params, "cpu", Some(cores))?;
        // A first run warms the driver's shader cache, so the timed runs compile alike; each
        // figure is the fastest of `repeat` runs (the marginal cost is a small difference of
        // two noisy times).
        crate::qg_run(kernel, &params, "gpu", None)?;
        let gpu = fastest(kernel, &params, repeat)?;
        // Four times as long: the marginal cost is a difference of two noisy times, so the
        // longer run is made long enough to dwarf the noise.
        let mut longer = params.clone();
        longer[scale] = json!(4 * params[scale].as_u64().unwrap_or(1));
        if kernel == "ising2d" {
            longer["measure_every"] = longer["sweeps"].clone();
        }
        let gpu2 = fastest(kernel, &longer, repeat)?;
        let num = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let rate = |v: &Value| num(v, "rate_per_s");
        let (r1, rn, rg) = (rate(&cpu1), rate(&cpun), rate(&gpu));
        let kernel_only = (num(&gpu2, "work") - num(&gpu, "work"))
            / (num(&gpu2, "elapsed_s") - num(&gpu, "elapsed_s"));
        for (backend, v, r) in [
            ("cpu-1-thread", &cpu1, r1),
            (&*format!("cpu-{cores}-threads"), &cpun, rn),
        ] {
            println!(
                "{}",
                json!({"bench": "kernels", "kernel": kernel, "backend": backend, unit: r,
                       "elapsed_s": v["elapsed_s"], "params": params})
            );
        }
        let mut line = json!({
            "bench": "kernels", "kernel": kernel, "backend": "gpu", unit: rg,
            "kernel_only": {unit: kernel_only, "method": "marginal cost of a run four times as long"},
            "end_to_end_vs_kernel_only": rg / kernel_only,
            "adapter": gpu["adapter"]["name"], "elapsed_s": gpu["elapsed_s"], "params": params,
            "checkpoints": gpu["checkpoints"].as_array().map_or(0, Vec::len),
            "gpu_vs_cpu_1_thread": rg / r1, "gpu_vs_cpu_all_threads": rg / rn,
        });
        if kernel == "lj_md" {
            // A float kernel: compared within its declared tolerance (tests/gpu_vs_cpu.rs),
            // never by digest.
            line["comparison"] = json!("tolerance");
        } else {
            line["same_digest_as_cpu"] = json!(gpu["digest"] == cpu1["digest"]);
            line["same_checkpoints_as_cpu"] = json!(gpu["checkpoints"] == cpu1["checkpoints"]);
        }
        if kernel == "ising2d" {
            line["spin_flips_per_ns"] = json!(rg / 1e9);
            line["kernel_only"]["spin_flips_per_ns"] = json!(kernel_only / 1e9);
            if let Some(bw) = bandwidth_gbs {
                let bound = bw / 3.0;
                line["bandwidth_bound_flips_per_ns"] = json!(bound);
                line["fraction_of_bound"] = json!(rg / 1e9 / bound);
                line["kernel_only"]["fraction_of_bound"] = json!(kernel_only / 1e9 / bound);
            }
        }
        println!("{line}");
    }
    Ok(())
}

/// Replicas dispatched and validated per second against release coordinators, with 10⁴, 10⁵
/// and 10⁶ finished units already in the database: on SQLite (one coordinator) and on
/// PostgreSQL with 1, 2 and 4 coordinators sharing it. One JSON line per configuration.
fn coordinator(args: &[&str]) -> Result<()> {
    let list = |name: &str, default: &[&str]| -> Vec<String> {
        args.iter()
            .position(|a| *a == name)
            .and_then(|i| args.get(i + 1))
            .map(|s| s.split(',').map(str::to_owned).collect())
            .unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect())
    };
    let sizes = list("--sizes", &["10000", "100000", "1000000"]);
    let dbs = list("--db", &["sqlite", "postgres"]);
    let coordinators = list("--coordinators", &["1", "2", "4"]);
    let seconds = list("--seconds", &["5"]);
    crate::run(
        "cargo build --release -p coordinator",
        crate::cargo().args(["build", "--release", "-q", "-p", "coordinator"]),
    )?;
    let pg = match dbs.iter().any(|d| d == "postgres") {
        true => Some(crate::pg::ensure()?),
        false => None,
    };
    let bin_dir = crate::root().join("target").join("release");
    for db in &dbs {
        for units in &sizes {
            // SQLite is one coordinator's embedded store.
            let counts: Vec<&String> = match db.as_str() {
                "sqlite" => coordinators.iter().filter(|c| *c == "1").take(1).collect(),
                _ => coordinators.iter().collect(),
            };
            let counts = if counts.is_empty() && db == "sqlite" {
                vec![&coordinators[0]]
            } else {
                counts
            };
            for n in counts {
                let mut c = std::process::Command::new(bin_dir.join("qg-loadgen"));
                c.args(["--units", units, "--db", db, "--coordinators", n])
                    .args(["--seconds", &seconds[0], "--coordinator"])
                    .arg(bin_dir.join("coordinator"));
                if let Some(pg) = &pg {
                    c.env("QG_TEST_DATABASE_URL", &pg.url);
                }
                let status = c.status()?;
                if !status.success() {
                    bail!(
                        "qg-loadgen --units {units} --db {db} --coordinators {n} failed ({status})"
                    );
                }
            }
        }
    }
    Ok(())
}

/// Populations of simulated volunteers under fixed quorum 2, BOINC adaptive replication and
/// credibility-based replication (`coordinator/src/sim.rs`): one JSON line per run.
fn sabotage(args: &[&str]) -> Result<()> {
    crate::run(
        "cargo build --release -p coordinator --bin qg-sabotage",
        crate::cargo().args([
            "build",
            "--release",
            "-q",
            "-p",
            "coordinator",
            "--bin",
            "qg-sabotage",
        ]),
    )?;
    let bin = crate::root()
        .join("target")
        .join("release")
        .join("qg-sabotage");
    let status = std::process::Command::new(bin).args(args).status()?;
    if !status.success() {
        bail!("qg-sabotage failed ({status})");
    }
    Ok(())
}

/// The transparency log (`coordinator/src/bin/qg-logbench.rs`): appends per second, the time
/// from a unit's receipt to a checkpoint cosigned by two witnesses (`qg witness serve`, over
/// HTTP; and with one down), and offline verification
/// of inclusion proofs; one JSON line each, per database.
fn log(args: &[&str]) -> Result<()> {
    // qg: the witnesses the log pushes to are `qg witness serve` processes.
    crate::run(
        "cargo build --release -p coordinator --bin qg-logbench -p qg --bin qg",
        crate::cargo().args([
            "build",
            "--release",
            "-q",
            "-p",
            "coordinator",
            "--bin",
            "qg-logbench",
            "-p",
            "qg",
            "--bin",
            "qg",
        ]),
    )?;
    let bin = crate::root()
        .join("target")
        .join("release")
        .join("qg-logbench");
    let dbs: Vec<&str> = match args.iter().position(|a| *a == "--db") {
        Some(i) => args
            .get(i + 1)
            .map_or(vec!["sqlite"], |s| s.split(',').collect()),
        None => vec!["sqlite"],
    };
    let rest: Vec<&str> = match args.iter().position(|a| *a == "--db") {
        Some(i) => args[..i]
            .iter()
            .chain(args.iter().skip(i + 2))
            .copied()
            .collect(),
        None => args.to_vec(),
    };
    for db in dbs {
        let mut c = std::process::Command::new(&bin);
        c.args(["--db", db]).args(&rest);
        // Held until the run ends (a throwaway cluster goes when it is dropped).
        let pg = match db {
            "postgres" => Some(crate::pg::ensure()?),
            _ => None,
        };
        if let Some(pg) = &pg {
            c.env("QG_TEST_DATABASE_URL", &pg.url);
        }
        let status = c.status()?;
        if !status.success() {
            bail!("qg-logbench --db {db} failed ({status})");
        }
    }
    Ok(())
}

/// The same ising2d unit in a browser engine and in native wgpu: headless Chromium (WebGPU,
/// with the page open → first unit computing), or Dawn (Chromium's WebGPU engine) in node.
fn browser(args: &[&str]) -> Result<()> {
    let engine = args
        .iter()
        .position(|a| *a == "--engine")
        .and_then(|i| args.get(i + 1))
        .copied()
        .unwrap_or("chromium");
    match engine {
        "chromium" => chromium(),
        "dawn" => dawn(args),
        other => bail!("--engine: chromium or dawn, got {other}"),
    }
}

fn chromium() -> Result<()> {
    let needs: Vec<&crate::deps::Need> = crate::deps::GPU
        .iter()
        .chain(&crate::deps::BROWSER)
        .collect();
    crate::deps::ensure_all(&needs)?;
    crate::web::build()?;
    let mut c = crate::cargo();
    c.args([
        "run",
        "-q",
        "--release",
        "-p",
        "qg-tests",
        "--bin",
        "qg-browser-bench",
    ]);
    crate::run("qg-browser-bench", crate::gpu_env(&mut c))
}

/// The project's wasm on Dawn in node (tests/dawn/run.mjs) next to the native runner, on the
/// default adapter of each (the same GPU on a machine with one). Without a GPU, Dawn refuses
/// lavapipe and runs on Chromium's SwiftShader: two CPU devices, so the ratio says little.
fn dawn(args: &[&str]) -> Result<()> {
    let needs: Vec<&crate::deps::Need> = crate::deps::GPU
        .iter()
        .chain(&crate::deps::BROWSER)
        .chain(&crate::deps::NODE)
        .collect();
    crate::deps::ensure_all(&needs)?;
    crate::deps::ensure_dawn()?;
    crate::web::build()?;
    let l: u32 = flag(args, "--ising-l")?.unwrap_or(256);
    let sweeps: u64 = flag(args, "--sweeps")?.unwrap_or(100);
    let params =
        json!({"L": l, "beta": 0.44, "sweeps": sweeps, "measure_every": sweeps, "seed": 1});
    let native = crate::qg_run("ising2d", &params, "gpu", None)?;
    let root = crate::root();
    let run_dawn = |icd: Option<&str>| -> Result<Value> {
        let mut c = std::process::Command::new("node");
        c.current_dir(root.join("tests/dawn"))
            .arg("run.mjs")
            .arg(root.join("web/pkg"))
            .arg("ising2d")
            .arg(params.to_string());
        if let Some(icd) = icd {
            c.env("VK_ICD_FILENAMES", icd);
        }
        let out = crate::gpu_env(&mut c).output()?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(serde_json::from_str(
            text.lines().last().unwrap_or_default(),
        )?)
    };
    let (dawn, note) = match run_dawn(None) {
        Ok(v) => (v, "default adapter"),
        Err(e) => {
            eprintln!("Dawn found no adapter of its own ({e}); retrying on SwiftShader");
            (
                run_dawn(Some("/usr/lib/chromium/vk_swiftshader_icd.json"))?,
                "SwiftShader (no GPU Dawn accepts)",
            )
        }
    };
    let rate = |v: &Value| v["rate_per_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "{}",
        json!({
            "bench": "browser", "engine": "dawn", "kernel": "ising2d", "params": params,
            "dawn_adapter": dawn["adapter"], "dawn_device": note,
            "native_adapter": native["adapter"]["name"],
            "dawn_spin_updates_per_s": rate(&dawn),
            "native_spin_updates_per_s": rate(&native),
            "dawn_spin_flips_per_ns": rate(&dawn) / 1e9,
            "native_spin_flips_per_ns": rate(&native) / 1e9,
            "dawn_vs_native": rate(&dawn) / rate(&native),
            "same_digest": dawn["digest"] == native["digest"],
            "same_checkpoints": dawn["checkpoints"] == native["checkpoints"],
        })
    );
    Ok(())
}

/// The attacks of issue #13 against release coordinators (qg-reliability: Sybil tokens that
/// error or hoard, the spot-check hog, a flood of half-open connections, keep-alive squatters, SIGKILL at 10 random
/// moments), then the soak: 1,000
/// simulated volunteers, one report per request, with the coordinator and the load generator
/// pinned to separate cores (qg-loadgen). One JSON line each.
fn reliability(args: &[&str]) -> Result<()> {
    crate::run(
        "cargo build --release -p coordinator",
        crate::cargo().args(["build", "--release", "-q", "-p", "coordinator"]),
    )?;
    let bin = crate::root().join("target").join("release");
    let value = |f: &str| {
        args.iter()
            .position(|a| *a == f)
            .and_then(|i| args.get(i + 1))
            .map(|s| s.to_string())
    };
    let only = value("--only");
    let want = |s: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == s));
    let attacks: Vec<&str> = [
        "sybil_errors",
        "sybil_hoard",
        "spot_hog",
        "flood",
        "squat",
        "kill9",
    ]
    .into_iter()
    .filter(|s| want(s))
    .collect();
    if !attacks.is_empty() {
        // The flood needs more file descriptors than a shell's default.
        let mut cmd = format!(
            "ulimit -n $(ulimit -Hn); exec '{}' --coordinator '{}' --only {}",
            bin.join("qg-reliability").display(),
            bin.join("coordinator").display(),
            attacks.join(",")
        );
        if let Some(n) = value("--connections") {
            cmd.push_str(&format!(" --connections {n}"));
        }
        let status = std::process::Command::new("bash")
            .args(["-c", &cmd])
            .status()?;
        if !status.success() {
            bail!("qg-reliability failed ({status})");
        }
    }
    // The soak: volunteers that compute about a second per unit (jittered), and the closed
    // loop (they report at once and ask again: the coordinator's ceiling, not volunteers).
    for (scenario, think, default_s) in [("soak", "1000", "60"), ("soak_closed_loop", "0", "10")] {
        if !want(scenario) {
            continue;
        }
        let seconds = match scenario {
            "soak" => value("--soak-seconds").unwrap_or_else(|| default_s.into()),
            _ => default_s.to_owned(),
        };
        let volunteers = value("--volunteers").unwrap_or_else(|| "1000".into());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut c = if cores >= 2 {
            let mut c = std::process::Command::new("taskset");
            c.args(["-c", "1"]).arg(bin.join("qg-loadgen"));
            c.args(["--coordinator-cpu", "0"]);
            c
        } else {
            std::process::Command::new(bin.join("qg-loadgen"))
        };
        c.args([
            "--units",
            "10000",
            "--batch",
            "1",
            "--volunteers",
            &volunteers,
        ])
        .args(["--think-ms", think, "--seconds", &seconds, "--coordinator"])
        .arg(bin.join("coordinator"));
        let out = c.output()?;
        if !out.status.success() {
            bail!(
                "qg-loadgen failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut v: Value = serde_json::from_slice(&out.stdout)?;
        v["scenario"] = json!(scenario);
        v["think_ms_mean"] = json!(think.parse::<u64>().unwrap_or(0));
        v["pinned"] = json!(cores >= 2);
        v["goal"] = json!("work and report p99 < 50 ms, 0 errors");
        println!("{v}");
    }
    Ok(())
}
