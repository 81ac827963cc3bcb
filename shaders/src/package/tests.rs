//! The example packages (`examples/kernels/`) checked and resolved on the CPU, and hostile
//! packages refused with the field or line named.

use super::*;
use crate::Job;
use crate::program::Plan;
use serde_json::json;
use std::path::Path;

fn example(name: &str) -> Arc<Package> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/kernels")
        .join(name);
    let files = read_dir(&dir).unwrap();
    Arc::new(Package::from_files(files).unwrap_or_else(|e| panic!("{name}: {e}")))
}

/// The percolation2d port runs the built-in's very program: same buffers, entry points,
/// dispatches and words, segment by segment (so the same digests on any device; the GPU test
/// in tests/ runs both).
#[test]
fn ported_percolation_has_the_builtins_program() {
    let pkg = example("percolation2d");
    for params in [
        json!({"L": 16, "p": 0.59, "samples": 20, "seed": 7}),
        json!({"L": 9, "p": 0.3, "samples": 3, "seed": 12345678901u64, "checkpoint_every": 2}),
    ] {
        let builtin = Job::new("percolation2d", params.clone()).unwrap();
        let port = Job::package(&pkg, &params).unwrap();
        assert_eq!(port.schedule(), builtin.schedule());
        assert_eq!(port.output_len(), builtin.output_len());
        assert_eq!(port.state_len(), builtin.state_len());
        let (a, b) = (port.program(), builtin.program());
        assert_eq!(a.entries.to_vec(), b.entries.to_vec());
        assert_eq!(a.init_ops, b.init_ops);
        assert_eq!(a.buffers.len(), b.buffers.len());
        for (x, y) in a.buffers.iter().zip(&b.buffers) {
            assert_eq!(
                (x.init.len(), x.state),
                (y.init.len(), y.state),
                "{}",
                y.label
            );
        }
        for i in 0..builtin.segment_count() {
            assert_eq!(port.segment(i), builtin.segment(i), "segment {i}");
        }
        // The summary from the same output bytes agrees with the built-in's observables.
        let out = builtin.run_cpu(1, &mut |_, _| {}).unwrap();
        let ours = port.summarize(&out.output).unwrap();
        for k in ["spanning_fraction", "largest_fraction", "clusters_per_site"] {
            let (x, y) = (ours[k].as_f64().unwrap(), out.summary[k].as_f64().unwrap());
            assert!((x - y).abs() < 1e-12, "{k}: {x} vs {y}");
        }
        assert!(ours["spanning_fraction_err"].is_number(), "{ours}");
        assert_eq!(port.kernel(), format!("percolation2d@{}", pkg.hash));
        assert!(port.view().is_some());
    }
}

#[test]
fn params_are_checked_and_named() {
    let pkg = example("percolation2d");
    let bad = |p: serde_json::Value| Job::package(&pkg, &p).unwrap_err();
    let e = bad(json!({"L": 2, "p": 0.5, "samples": 1, "seed": 1}));
    assert_eq!(e.field(), Some("L"), "{e}");
    let e = bad(json!({"L": 8, "p": 1.5, "samples": 1, "seed": 1}));
    assert_eq!(e.field(), Some("p"), "{e}");
    let e = bad(json!({"L": 8, "p": 0.5, "samples": 1}));
    assert_eq!(e.field(), Some("seed"), "{e}");
    assert!(e.to_string().contains("missing"), "{e}");
    let e = bad(json!({"L": 8, "p": 0.5, "samples": 1, "seed": 1, "pp": 2}));
    assert_eq!(e.field(), Some("pp"), "{e}");
    let e = bad(json!({"L": 8.5, "p": 0.5, "samples": 1, "seed": 1}));
    assert_eq!(e.field(), Some("L"), "{e}");
    let e = bad(json!({"L": 8, "p": 0.5, "samples": 1, "seed": -1}));
    assert_eq!(e.field(), Some("seed"), "{e}");
    // The normalized params carry the default.
    let j = Job::package(&pkg, &json!({"L": 8, "p": 0.5, "samples": 1, "seed": 1})).unwrap();
    assert_eq!(j.params_json()["checkpoint_every"], 0);
}

/// A copy of the percolation port with one edit, checked.
fn edited(edit: impl Fn(&mut PackageFiles)) -> Result<Package, PackageError> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kernels/percolation2d");
    let mut files = read_dir(&dir).unwrap();
    edit(&mut files);
    Package::from_files(files)
}

#[test]
fn hostile_packages_are_refused_naming_the_place() {
    // A syntax error: its line and column in kernel.wgsl (not the prelude's).
    let e =
        edited(|f| f.wgsl = format!("fn ok() {{}}\nfn broken( {{\n}}\n{}", f.wgsl)).unwrap_err();
    assert_eq!((e.file, e.line), ("kernel.wgsl", Some(2)), "{e}");
    assert!(e.column.is_some(), "{e}");
    // Floats in a digest package, named by line.
    let e = edited(|f| {
        f.wgsl = f.wgsl.replace(
            "let L = word(0u);\n    let q",
            "let L = word(0u);\n    let half = f32(L) * 0.5;\n    let q",
        )
    })
    .unwrap_err();
    assert!(e.message.contains("integer-only"), "{e}");
    let line = e.line.expect("a line");
    let src =
        read_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kernels/percolation2d"))
            .unwrap();
    let edited_src = src.wgsl.replace(
        "let L = word(0u);\n    let q",
        "let L = word(0u);\n    let half = f32(L) * 0.5;\n    let q",
    );
    assert!(
        edited_src.lines().nth(line - 1).unwrap().contains("f32(L)"),
        "line {line}"
    );
    // A float buffer in a digest package (the manifest).
    let e = edited(|f| {
        f.manifest = f.manifest.replacen(
            "type = \"u32\"\nlength = \"L * L\"\nstate",
            "type = \"f32\"\nlength = \"L * L\"\nstate",
            1,
        )
    })
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("buffers[0].type"), "{e}");
    // Wrong bindings: a buffer at binding 9, a type that does not match.
    let e = edited(|f| f.wgsl = f.wgsl.replace("@binding(4)", "@binding(9)")).unwrap_err();
    assert!(e.message.contains("@binding(9)"), "{e}");
    assert_eq!(e.line, Some(10), "{e}");
    // A WGSL type the manifest does not declare for that buffer.
    let e = edited(|f| {
        f.manifest = f.manifest.replace(
            "name = \"top\"\ntype = \"u32\"",
            "name = \"top\"\ntype = \"i32\"",
        );
    })
    .unwrap_err();
    assert!(e.message.contains("binding 4 is buffer `top`"), "{e}");
    assert_eq!(e.line, Some(10), "{e}");
    // A type error in the code, at its line and column.
    let e = edited(|f| {
        f.wgsl = f
            .wgsl
            .replace("atomicStore(&top[i], 0u);", "atomicStore(&top[i], 0.5);")
    })
    .unwrap_err();
    assert_eq!(e.file, "kernel.wgsl");
    let l = e.line.expect("a line");
    assert!(edited_src_line(l).contains("atomicStore(&top[i]"), "{e}");
    let e = edited(|f| {
        f.wgsl = f.wgsl.replace(
            "@group(0) @binding(4) var<storage, read_write> top: array<atomic<u32>>;",
            "",
        )
    })
    .unwrap_err();
    // The shader no longer compiles (top is used), or the binding is missing: either names it.
    assert_eq!(e.file, "kernel.wgsl", "{e}");
    // A 10 MB shader.
    let e = edited(|f| f.wgsl.push_str(&"//".repeat(5 << 20))).unwrap_err();
    assert!(e.message.contains("at most 262144"), "{e}");
    // Entry points and workgroup sizes as declared.
    let e = edited(|f| {
        f.manifest = f
            .manifest
            .replacen("workgroup_size = 256", "workgroup_size = 64", 1)
    })
    .unwrap_err();
    assert!(e.message.contains("perc_init"), "{e}");
    let e = edited(|f| {
        f.manifest = f
            .manifest
            .replace("name = \"perc_stats\"", "name = \"perc_nothing\"")
            .replace("entry = \"perc_stats\"", "entry = \"perc_nothing\"")
    })
    .unwrap_err();
    assert!(e.message.contains("no entry point `perc_nothing`"), "{e}");
    // Manifest errors name the field.
    let e = edited(|f| {
        f.manifest = f
            .manifest
            .replace("length = \"3 * samples\"", "length = \"3 * sample\"")
    })
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("buffers[1].length"), "{e}");
    assert!(e.message.contains("`sample`"), "{e}");
    let e = edited(|f| {
        f.manifest = f
            .manifest
            .replace("buffers = [\"stats\"]", "buffers = [\"sizes\"]")
    })
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("output.buffers[0]"), "{e}");
    let e = edited(|f| f.manifest = f.manifest.replace("[params.p]", "[params.p]\nunits = 3"))
        .unwrap_err();
    assert_eq!((e.file, e.line.is_some()), ("kernel.toml", true), "{e}");
    let e = edited(|f| {
        f.manifest = f.manifest.replace(
            "words = [\"L\", \"step\"]",
            "words = [\"L\", \"mean(step)\"]",
        )
    })
    .unwrap_err();
    assert!(e.message.contains("mean"), "{e}");
    // A buffer over the limit is refused when a batch's params are known, naming the param.
    let pkg = Arc::new(
        edited(|f| f.manifest = f.manifest.replace("max = 4096", "max = 100000")).unwrap(),
    );
    let e = Job::package(
        &pkg,
        &json!({"L": 10000, "p": 0.5, "samples": 1, "seed": 1}),
    )
    .unwrap_err();
    assert_eq!(e.field(), Some("L"), "{e}");
    assert!(e.to_string().contains("labels"), "{e}");
}

fn edited_src_line(line: usize) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kernels/percolation2d");
    read_dir(&dir)
        .unwrap()
        .wgsl
        .lines()
        .nth(line - 1)
        .unwrap_or("")
        .to_owned()
}

#[test]
fn the_hash_names_the_canonical_bytes() {
    let pkg = example("percolation2d");
    assert_eq!(pkg.hash, protocol::Digest::of(&pkg.files.canonical_bytes()));
    let again = edited(|_| {}).unwrap();
    assert_eq!(again.hash, pkg.hash, "the same files, the same hash");
    let other = edited(|f| f.wgsl.push('\n')).unwrap();
    assert_ne!(other.hash, pkg.hash, "any byte makes a new package");
}

#[test]
fn every_example_package_checks_and_resolves() {
    for (name, params) in [
        (
            "potts3",
            json!({"L": 16, "beta": 1.0, "sweeps": 100, "thermalize": 10, "measure_every": 2, "seed": 3}),
        ),
        ("gray_scott", json!({"L": 32, "steps": 50, "seed": 1})),
        (
            "percolation2d",
            json!({"L": 16, "p": 0.5, "samples": 4, "seed": 1}),
        ),
    ] {
        let pkg = example(name);
        let job = Job::package(&pkg, &params).unwrap_or_else(|e| panic!("{name}: {e}"));
        let prog = job.program();
        assert!(prog.untrusted);
        let ops: usize = (0..job.segment_count())
            .map(|i| job.segment(i).ops.len())
            .sum();
        assert!(ops > 0, "{name}");
        let d = pkg.describe();
        assert_eq!(d["name"], format!("{name}@{}", pkg.hash));
        assert!(
            d["observables"].as_array().is_some_and(|o| !o.is_empty()),
            "{name}"
        );
    }
    // potts3: the measurement runs after each measure_every-th measured sweep, into its slot.
    let pkg = example("potts3");
    let job = Job::package(
        &pkg,
        &json!({"L": 8, "beta": 0.5, "sweeps": 6, "thermalize": 3, "measure_every": 2, "seed": 1}),
    )
    .unwrap();
    let slots: Vec<u32> = (0..job.segment_count())
        .flat_map(|i| job.segment(i).ops)
        .filter(|d| d.entry == 2)
        .map(|d| d.words[1])
        .collect();
    assert_eq!(slots, [0, 1, 2]);
    // L must be even, said of L.
    let e = Job::package(&pkg, &json!({"L": 9, "beta": 0.5, "sweeps": 6, "seed": 1})).unwrap_err();
    assert_eq!(e.field(), Some("L"), "{e}");
    assert!(e.to_string().contains("even"), "{e}");
    // Its thresholds are the built-in rule's, from beta in double precision.
    let prog = job.program();
    let Init::Bytes(t) = &prog.buffers[2].init else {
        panic!("thresholds are uploaded")
    };
    let t = program::u32s_from_le(t);
    assert_eq!(t[4], crate::philox::ALWAYS);
    assert_eq!(t[5], crate::philox::threshold((-0.5f64).exp()));
}

#[test]
fn observables_are_jackknifed_from_the_records() {
    let pkg = example("potts3");
    let job = Job::package(&pkg, &json!({"L": 4, "beta": 0.5, "sweeps": 4, "seed": 1})).unwrap();
    // Four measurements: bonds 32, 16, 24, 8 and all spins in state 0, then mixed.
    let mut series = Vec::new();
    for (b, n) in [
        (32u32, [16u32, 0, 0]),
        (16, [8, 8, 0]),
        (24, [16, 0, 0]),
        (8, [6, 5, 5]),
    ] {
        series.extend([b, n[0], n[1], n[2]]);
    }
    let mut out = program::le_bytes_u32(&series);
    out.extend(vec![0u8; 4 * 16]);
    let s = job.summarize(&out).unwrap();
    assert!(
        (s["e"].as_f64().unwrap() - (-(32.0 + 16.0 + 24.0 + 8.0) / 4.0 / 16.0)).abs() < 1e-12,
        "{s}"
    );
    // The jackknife error of a mean is the standard error of the mean (blocks of one).
    let e: Vec<f64> = [32.0, 16.0, 24.0, 8.0].iter().map(|b| -b / 16.0).collect();
    let mean = e.iter().sum::<f64>() / 4.0;
    let sem = (e.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 3.0 / 4.0).sqrt();
    assert!((s["e_err"].as_f64().unwrap() - sem).abs() < 1e-12, "{s}");
    // |m| = 1 when every spin is in one state.
    let m2 = |n: [f64; 3]| {
        (n[0] * n[0] + n[1] * n[1] + n[2] * n[2] - n[0] * n[1] - n[1] * n[2] - n[0] * n[2]) / 256.0
    };
    let ms = [
        m2([16.0, 0.0, 0.0]),
        m2([8.0, 8.0, 0.0]),
        m2([16.0, 0.0, 0.0]),
        m2([6.0, 5.0, 5.0]),
    ];
    assert_eq!(ms[0], 1.0);
    let mean_m = ms.iter().map(|x| x.sqrt()).sum::<f64>() / 4.0;
    assert!((s["m"].as_f64().unwrap() - mean_m).abs() < 1e-12, "{s}");
    let binder = 2.0
        - (ms.iter().map(|x| x * x).sum::<f64>() / 4.0) / (ms.iter().sum::<f64>() / 4.0).powi(2);
    assert!(
        (s["binder"].as_f64().unwrap() - binder).abs() < 1e-12,
        "{s}"
    );
    assert!(s["binder_err"].as_f64().unwrap() > 0.0, "{s}");
}
