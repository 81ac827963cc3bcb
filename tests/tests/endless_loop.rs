//! A package whose shader never ends: the runner waits for one submission only as long as its
//! budget, then gives the device up and says so. (A test binary of its own: lavapipe keeps
//! spinning in the shader until the process exits.)

use client_wasm::{Gpu, GpuError};
use qg_tests::package_from;
use serde_json::json;
use shaders::Job;

#[test]
fn an_endless_loop_runs_over_its_budget_and_the_device_is_given_up() {
    let manifest = r#"
name = "spin"
author = "test"
comparison = "digest"
seed = "seed"
steps = "4"
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
"#;
    let wgsl = r#"
@group(0) @binding(1) var<storage, read_write> a: array<atomic<u32>>;
@compute @workgroup_size(64)
fn spin(@builtin(local_invocation_id) lid: vec3<u32>) {
    // Some drivers end a loop after so many iterations (llvmpipe after 65535): with 2²⁴
    // invocations that is still ~10¹² iterations, hours on a CPU.
    loop {
        if (atomicAdd(&a[lid.x], 1u) == 0xffffffffu && word(0u) == 12345u) {
            break;
        }
    }
}
"#;
    let pkg = package_from(manifest, wgsl).unwrap();
    let job = Job::package(&pkg, &json!({"seed": 1})).unwrap();
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = std::env::temp_dir().join("qg-xdg");
        let _ = std::fs::create_dir_all(&dir);
        // SAFETY: set before any other thread of this test process reads the environment.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", dir) };
    }
    let gpu = pollster::block_on(Gpu::new()).unwrap();
    gpu.set_budget(1.0);
    let t0 = std::time::Instant::now();
    let mut run = gpu.start(&job, None).unwrap();
    let e = match pollster::block_on(run.step()) {
        Err(e) => e,
        Ok(s) => panic!("an endless loop finished: {s:?}"),
    };
    assert!(matches!(e, GpuError::OverBudget { .. }), "{e}");
    assert!(e.to_string().contains("budget"), "{e}");
    assert!(t0.elapsed().as_secs_f64() < 30.0, "{:?}", t0.elapsed());
    assert!(gpu.is_lost(), "a stuck device is given up");
    // The next step says so at once rather than queueing behind the stuck shader.
    assert!(matches!(
        pollster::block_on(run.step()),
        Err(GpuError::Lost)
    ));
    // Dropping a device whose queue never empties would wait forever: leave it to the exit.
    std::mem::forget(run);
    std::mem::forget(gpu);
}
