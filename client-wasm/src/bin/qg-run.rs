//! `qg-run KERNEL --params JSON [--backend gpu|cpu]`: runs one kernel invocation natively and
//! prints a JSON line (kernel, params, digest, checkpoints, summary, elapsed, adapter). This is
//! also the command a unit's provenance gives for reproducing it with the CPU reference.
//! `qg-run --package DIR --params JSON` runs a kernel package from its folder (on a GPU; a
//! software one such as lavapipe will do): a scientist's loop before uploading it.

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    native::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use clap::Parser;
    use client_wasm::native::Backend;
    use serde_json::{Value, json};
    use shaders::Job;
    use std::process::ExitCode;
    use std::time::Instant;

    #[derive(Parser, Debug)]
    #[command(
        version,
        about = "Run one Quorum Grid kernel on the GPU or the CPU reference"
    )]
    struct Args {
        /// ising2d, percolation2d or lj_md (or --package DIR)
        #[arg(required_unless_present = "package")]
        kernel: Option<String>,
        /// A kernel package's folder (kernel.toml, kernel.wgsl, view.wgsl), instead of KERNEL
        #[arg(long, conflicts_with = "kernel")]
        package: Option<std::path::PathBuf>,
        /// Parameters as a JSON object, e.g. '{"L":256,"beta":0.44,"sweeps":1000,"seed":1}'
        #[arg(long)]
        params: String,
        #[arg(long, value_enum, default_value = "gpu")]
        backend: Backend,
        /// CPU reference threads (default: all cores)
        #[arg(long)]
        threads: Option<usize>,
        /// Also write the canonical output bytes to this file
        #[arg(long)]
        output: Option<std::path::PathBuf>,
        /// Print progress to stderr
        #[arg(long)]
        progress: bool,
    }

    pub fn main() -> ExitCode {
        let args = Args::parse();
        match run(&args) {
            Ok(v) => {
                println!("{v}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("qg-run: {e}");
                ExitCode::from(2)
            }
        }
    }

    fn run(args: &Args) -> anyhow::Result<Value> {
        let params: Value = serde_json::from_str(&args.params)
            .map_err(|e| anyhow::anyhow!("--params is not valid JSON: {e}"))?;
        let job = match (&args.package, &args.kernel) {
            (Some(dir), _) => {
                let files = shaders::package::read_dir(dir).map_err(anyhow::Error::msg)?;
                let p = shaders::package::Package::from_files(files)?;
                Job::package(&std::sync::Arc::new(p), &params)?
            }
            (None, Some(k)) => Job::new(k, params)?,
            (None, None) => anyhow::bail!("name a KERNEL or --package DIR"),
        };
        let show = args.progress;
        let mut progress = |done: u64, total: u64| {
            if show {
                eprintln!("{done}/{total}");
            }
        };
        // Compute time only: opening the adapter and device and compiling the shaders are
        // reported apart (setup_s).
        let setup = Instant::now();
        let mut started = Instant::now();
        let (result, adapter) = match args.backend {
            Backend::Cpu => {
                let threads = args
                    .threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
                let r = job.run_cpu(threads, &mut progress)?;
                (r, json!({"name": "cpu-reference", "threads": threads}))
            }
            Backend::Gpu => {
                let gpu = pollster::block_on(client_wasm::Gpu::new())?;
                let adapter = serde_json::to_value(gpu.adapter())?;
                // Shader compilation is setup too: a volunteer compiles a kernel once.
                gpu.prepare(&job);
                started = Instant::now();
                let r = pollster::block_on(client_wasm::run_gpu(&gpu, &job, &mut progress))?;
                (r, adapter)
            }
        };
        let elapsed = started.elapsed().as_secs_f64();
        if let Some(path) = &args.output {
            std::fs::write(path, &result.output)
                .map_err(|e| anyhow::anyhow!("--output {}: {e}", path.display()))?;
        }
        Ok(json!({
            "kernel": job.kernel(),
            "params": job.params_json(),
            "backend": format!("{:?}", args.backend).to_lowercase(),
            "adapter": adapter,
            "digest": result.digest,
            "checkpoints": result.checkpoints,
            "summary": result.summary,
            "output_len": result.output.len(),
            "work": job.work(),
            "elapsed_s": elapsed,
            "setup_s": (started - setup).as_secs_f64(),
            "rate_per_s": job.work() as f64 / elapsed.max(1e-9),
        }))
    }
}
