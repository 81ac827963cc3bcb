//! The Quorum Grid volunteer client: runs kernels on the GPU through [`gpu::Gpu`] (WebGPU in
//! the browser, Vulkan/Metal/DX12 natively: one code path) or on the CPU reference, and turns
//! the result into what a replica reports.

pub mod gpu;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
pub mod verifier;
pub mod view;
pub mod volunteer;
#[cfg(target_arch = "wasm32")]
pub mod web;

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
