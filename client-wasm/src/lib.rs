//! The Quorum Grid volunteer client: runs kernels on the GPU through [`gpu::Gpu`] (WebGPU in
//! the browser, Vulkan/Metal/DX12 natively: one code path) or on the CPU reference, and turns
//! the result into what a replica reports.

pub mod b64;
pub mod gpu;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
pub mod verifier;
pub mod view;
pub mod volunteer;
#[cfg(target_arch = "wasm32")]
pub mod web;

/// Talc in the browser (see Cargo.toml): the download is smaller than with dlmalloc.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static TALC: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

pub use gpu::{AdapterSummary, Gpu, GpuError, PlanOutput, Run};
use shaders::{Job, OutputError, RunResult};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// Runs `job` on `gpu`, reporting `(steps done, total)` as it goes.
pub async fn run_gpu(
    gpu: &Gpu,
    job: &Job,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RunResult, RunError> {
    let out = gpu.run(job, progress).await?;
    Ok(job.finish(&out.state, out.checkpoints)?)
}

/// Runs `job` on `gpu` as a volunteer's reopened tab does: to the end of segment `at`, where
/// its state is read back, then from that state on a fresh run. The result must be the
/// uninterrupted run's, bit for bit (what `qg kernel check` and the tests hold).
pub async fn run_gpu_resumed(gpu: &Gpu, job: &Job, at: usize) -> Result<RunResult, RunError> {
    let mut run = gpu.start(job, None)?;
    for _ in 0..at {
        if run.step().await?.is_none() {
            break;
        }
    }
    let state = run.state().await?;
    let checkpoints = run.checkpoints().to_vec();
    let segment = run.segments_done();
    drop(run);
    let resume = gpu::Resume {
        segment,
        state,
        checkpoints,
    };
    let mut run = gpu.start(job, Some(resume))?;
    while run.step().await?.is_some() {}
    let out = run.finish().await?;
    Ok(job.finish(&out.state, out.checkpoints)?)
}
