//! The GPU runner against the CPU references: byte for byte for the integer kernels, within
//! the declared tolerance for `lj_md`, and the WGSL Philox against Random123's vectors.

use client_wasm::run_gpu;
use qg_tests::gpu;
use serde_json::{Value, json};
use shaders::philox::{KNOWN_ANSWERS, mulhilo, philox4x32_10};
use shaders::selftest::SelfTest;
use shaders::{Job, RunResult};

fn both(kernel: &str, params: Value) -> (Job, RunResult, RunResult) {
    let job = Job::new(kernel, params).unwrap();
    let cpu = job.run_cpu(2, &mut |_, _| {}).unwrap();
    let g = pollster::block_on(run_gpu(gpu(), &job, &mut |_, _| {})).unwrap();
    (job, cpu, g)
}

#[test]
fn philox_known_answers_and_wide_multiply_on_the_gpu() {
    let mut cases: Vec<([u32; 4], [u32; 2])> =
        KNOWN_ANSWERS.iter().map(|(c, k, _)| (*c, *k)).collect();
    for i in 0..1000u32 {
        let r = philox4x32_10([i, 1, 2, 3], [4, 5]);
        cases.push(([r[0], r[1], r[2], r[3]], [r[1] ^ i, r[3]]));
    }
    // Edge values for the carry of the 16-bit emulation, then many random pairs.
    let edge = [
        0u32,
        1,
        0xffff,
        0x1_0000,
        0x1_ffff,
        0x8000_0000,
        0xffff_ffff,
        0xd251_1f53,
        0xcd9e_8d57,
    ];
    let mut pairs: Vec<(u32, u32)> = edge
        .iter()
        .flat_map(|&a| edge.iter().map(move |&b| (a, b)))
        .collect();
    for i in 0..100_000u32 {
        let r = philox4x32_10([i, 0, 9, 0], [7, 7]);
        pairs.push((r[0], r[1]));
        pairs.push((r[2] | 0xffff, r[3] | 0xffff_0000));
    }
    let test = SelfTest {
        philox_cases: cases.clone(),
        mul_pairs: pairs.clone(),
    };
    let out = pollster::block_on(gpu().run(&test, &mut |_, _| {})).unwrap();
    let (got_philox, got_mul) = SelfTest::decode(&out.state);
    for (i, (c, k, want)) in KNOWN_ANSWERS.iter().enumerate() {
        assert_eq!(
            &got_philox[i], want,
            "known answer {i}: counter {c:08x?} key {k:08x?}"
        );
    }
    for (i, (c, k)) in cases.iter().enumerate() {
        assert_eq!(got_philox[i], philox4x32_10(*c, *k), "case {i}");
    }
    for (i, &(a, b)) in pairs.iter().enumerate() {
        assert_eq!(got_mul[i], mulhilo(a, b), "{a:08x} * {b:08x}");
    }
}

/// The device's data digest is `protocol::Digest::of_data`, byte for byte, on random inputs of
/// awkward sizes: empty, around SHA-256's 55/56/64-byte padding edges, around the 4 KiB chunk,
/// and large enough for three levels of the tree.
#[test]
fn data_digest_on_the_gpu_is_the_cpu_definition() {
    use protocol::{DATA_CHUNK, Digest};
    let sizes = [
        0usize,
        1,
        3,
        4,
        55,
        56,
        63,
        64,
        65,
        119,
        120,
        1000,
        DATA_CHUNK - 1,
        DATA_CHUNK,
        DATA_CHUNK + 1,
        DATA_CHUNK + 57,
        3 * DATA_CHUNK + 130,
        128 * DATA_CHUNK,
        128 * DATA_CHUNK + 3,
        130 * DATA_CHUNK + 4001,
    ];
    for (i, &n) in sizes.iter().enumerate() {
        let bytes: Vec<u8> = (0..n.div_ceil(16) as u32)
            .flat_map(|k| philox4x32_10([k, i as u32, 77, 0], [5, 6]))
            .flat_map(u32::to_le_bytes)
            .take(n)
            .collect();
        let got = pollster::block_on(gpu().data_digest(&bytes)).unwrap();
        assert_eq!(got, Digest::of_data(&bytes), "{n} bytes");
    }
}

#[test]
fn ising2d_is_bit_exact_across_sizes_temperatures_and_seeds() {
    let cases = [
        json!({"L": 16, "beta": 0.44, "sweeps": 40, "seed": 1}),
        // Rows of 9, 10 and 11 sites per colour: every padding case of the 4-spin words.
        json!({"L": 20, "beta": 0.3, "sweeps": 12, "seed": 7, "start": "hot"}),
        json!({"L": 22, "beta": 0.5, "sweeps": 12, "seed": 8, "start": "hot", "checkpoint_every": 1}),
        // L²/2 = 162: not a multiple of the workgroup size.
        json!({"L": 18, "beta": 0.2, "sweeps": 30, "seed": 2, "start": "hot"}),
        json!({"L": 34, "beta": 0.7, "h": 0.3, "sweeps": 25, "thermalize": 5, "seed": 3}),
        json!({"L": 100, "beta": 0.44, "sweeps": 20, "measure_every": 3, "seed": 18446744073709551615u64, "start": "hot"}),
        json!({"L": 258, "beta": 0.35, "h": -0.1, "sweeps": 6, "seed": 5, "start": "hot", "checkpoint_every": 2}),
    ];
    for params in cases {
        let (job, cpu, g) = both("ising2d", params.clone());
        assert_eq!(g.output.len() as u64, job.output_len());
        assert_eq!(g.digest, cpu.digest, "{params}");
        assert_eq!(g.checkpoints, cpu.checkpoints, "{params}");
        assert_eq!(g.summary, cpu.summary);
        assert!(!g.checkpoints.is_empty());
    }
}

#[test]
fn percolation2d_is_bit_exact_across_sizes_and_probabilities() {
    for (l, p, samples, seed) in [
        (5, 0.6, 4, 1),
        (17, 0.5927, 6, 2),
        (64, 0.3, 3, 3),
        (64, 0.7, 3, 4),
        (130, 0.5927, 3, 5),
        (16, 1.0, 2, 6),
        (16, 0.0, 2, 7),
    ] {
        let params = json!({"L": l, "p": p, "samples": samples, "seed": seed});
        let (_, cpu, g) = both("percolation2d", params.clone());
        assert_eq!(g.digest, cpu.digest, "{params}");
        assert_eq!(g.checkpoints, cpu.checkpoints, "{params}");
    }
}

#[test]
fn lj_md_agrees_within_its_declared_tolerance() {
    for n in [100u32, 256] {
        let params = json!({"n": n, "density": 0.8, "temperature": 1.0, "dt": 0.005, "steps": 300, "seed": 11});
        let (job, cpu, g) = both("lj_md", params);
        assert!(
            job.equivalent(&cpu.output, &g.output),
            "n={n}: cpu {} gpu {}",
            cpu.summary,
            g.summary
        );
        let drift = g.summary["energy_drift"].as_f64().unwrap();
        assert!(drift < shaders::lj_md::DRIFT_BOUND, "GPU drift {drift}");
        // A different seed is a different trajectory, outside the tolerance.
        let other = Job::new("lj_md", json!({"n": n, "density": 0.8, "temperature": 1.2, "dt": 0.005, "steps": 300, "seed": 12})).unwrap();
        let o = other.run_cpu(2, &mut |_, _| {}).unwrap();
        assert!(!job.equivalent(&o.output, &g.output));
    }
}

#[test]
fn progress_reaches_the_total() {
    let job = Job::new(
        "ising2d",
        json!({"L": 16, "beta": 0.3, "sweeps": 300, "seed": 1}),
    )
    .unwrap();
    let mut seen = Vec::new();
    pollster::block_on(run_gpu(gpu(), &job, &mut |d, t| seen.push((d, t)))).unwrap();
    assert!(seen.len() > 2, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(seen.last(), Some(&(300, 300)));
}

#[test]
fn buffers_beyond_the_adapter_limit_name_the_field() {
    use shaders::program::Plan;
    let job = Job::new(
        "percolation2d",
        json!({"L": 1024, "p": 0.5, "samples": 1, "seed": 1}),
    )
    .unwrap();
    let mut limits = client_wasm::gpu::test_limits();
    limits.max_storage_buffer_binding_size = 1 << 20;
    let err = client_wasm::gpu::check_limits(&job.program(), &limits).unwrap_err();
    assert!(err.to_string().starts_with("L:"), "{err}");
    assert!(
        client_wasm::gpu::check_limits(&job.program(), &client_wasm::gpu::test_limits()).is_ok()
    );
}

/// A verifier worker's recomputation of every challenge segment (from the initial state and
/// from each checkpoint's state) on the GPU, resumed mid-plan, matches the CPU reference's
/// checkpoint digests and, at the last step, its output; and so does its spot-check.
#[test]
fn verifier_segments_on_the_gpu_match_the_reference() {
    use base64::Engine as _;
    use client_wasm::verifier::compute;
    use client_wasm::volunteer::Engine;
    use protocol::api::{VerifyJob, VerifyKind};
    for (kernel, params) in [
        (
            "ising2d",
            json!({"L": 22, "beta": 0.44, "sweeps": 30, "seed": 5, "start": "hot", "checkpoint_every": 7}),
        ),
        (
            "percolation2d",
            json!({"L": 19, "p": 0.6, "samples": 9, "seed": 2, "checkpoint_every": 4}),
        ),
    ] {
        let job = Job::new(kernel, params.clone()).unwrap();
        let (r, states) = job.run_cpu_keeping_states(1, &mut |_, _| {}).unwrap();
        let mut from: (u64, Vec<Vec<u8>>) = (0, Vec::new());
        for (to, state) in &states {
            let v = VerifyJob {
                job_id: format!("challenge:{to}"),
                kind: VerifyKind::Challenge,
                kernel: kernel.into(),
                kernel_version: job.version(),
                params: params.clone(),
                from: from.0,
                to: *to,
                state: from
                    .1
                    .iter()
                    .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
                    .collect(),
                lease_until: 0,
                package: None,
            };
            let want = protocol::Digest::of_data_parts(state.iter().map(Vec::as_slice));
            for engine in [Engine::Gpu(gpu()), Engine::Cpu] {
                let got = pollster::block_on(compute(&engine, &v)).unwrap();
                assert_eq!(got.state_digest, Some(want), "{kernel} {}..{to}", from.0);
                let last = *to == job.schedule().total;
                assert_eq!(got.output.as_deref(), last.then_some(r.output.as_slice()));
            }
            from = (*to, state.clone());
        }
        let spot = VerifyJob {
            job_id: "spot:1".into(),
            kind: VerifyKind::Spot,
            kernel: kernel.into(),
            kernel_version: job.version(),
            params: params.clone(),
            from: 0,
            to: 0,
            state: Vec::new(),
            lease_until: 0,
            package: None,
        };
        let got = pollster::block_on(compute(&Engine::Gpu(gpu()), &spot)).unwrap();
        assert_eq!(got.output, Some(r.output.clone()));
    }
}
