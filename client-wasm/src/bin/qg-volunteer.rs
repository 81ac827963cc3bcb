//! `qg-volunteer --server URL [--backend gpu|cpu] [--max-units N]`: the volunteer work loop
//! natively, for people donating a GPU server (and for tests). Prints one JSON event a line.

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
    use client_wasm::native::NativeHost;
    use client_wasm::verifier;
    use client_wasm::volunteer::{self, Engine, Options};
    use protocol::api::AdapterInfo;
    use std::process::ExitCode;

    #[derive(Parser, Debug)]
    #[command(
        version,
        about = "Donate this machine's GPU (or CPU) to a Quorum Grid coordinator"
    )]
    struct Args {
        /// Coordinator URL, e.g. http://127.0.0.1:8080
        #[arg(long)]
        server: String,
        #[arg(long, value_enum, default_value = "gpu")]
        backend: Backend,
        /// Stop after this many units
        #[arg(long)]
        max_units: Option<u64>,
        /// Where the token, pending results and checkpoints are kept
        #[arg(long, default_value = "qg-volunteer-data")]
        data_dir: std::path::PathBuf,
        #[arg(long)]
        nickname: Option<String>,
        /// Save a unit's state to resume from at least this often (seconds); more often only
        /// while saving takes at most 1% of the time
        #[arg(long, default_value_t = 60.0)]
        save_every_s: f64,
        /// Be a trusted verifier worker instead: take the coordinator's own recomputation jobs
        /// (spot-checks, challenge segments) with an operator key (--key or QG_API_KEY)
        #[arg(long)]
        verifier: bool,
        /// The operator key of a verifier worker
        #[arg(long, env = "QG_API_KEY", hide_env_values = true)]
        key: Option<String>,
        /// Compute the coordinator's built-in kernels only, no scientist's kernel package
        #[arg(long)]
        builtin_only: bool,
        /// Seconds one submission of a kernel package may run before the GPU counts as stuck
        /// (an endless loop): the unit is reported as an error and the process ends
        #[arg(long, default_value_t = 10.0)]
        budget_s: f64,
    }

    pub fn main() -> ExitCode {
        let args = Args::parse();
        if !(args.server.starts_with("http://") || args.server.starts_with("https://")) {
            eprintln!(
                "qg-volunteer: --server must be an http:// or https:// URL, got {:?}",
                args.server
            );
            return ExitCode::from(2);
        }
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("qg-volunteer: {e}");
                return ExitCode::FAILURE;
            }
        };
        rt.block_on(async {
            let host = match NativeHost::new(&args.server, args.data_dir.clone()) {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("qg-volunteer: --data-dir {}: {e}", args.data_dir.display());
                    return ExitCode::from(2);
                }
            };
            let controls = host.controls.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("qg-volunteer: stopping after the current segment");
                    controls.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
                }
            });
            let gpu = match args.backend {
                Backend::Gpu => match client_wasm::Gpu::new().await {
                    Ok(g) => Some(g),
                    Err(e) => {
                        eprintln!("qg-volunteer: {e} (use --backend cpu to compute on the CPU)");
                        return ExitCode::FAILURE;
                    }
                },
                Backend::Cpu => None,
            };
            let adapter = match &gpu {
                Some(g) => {
                    let a = g.adapter();
                    AdapterInfo {
                        name: a.name,
                        backend: a.backend,
                        vendor: a.vendor,
                        device_type: a.device_type,
                        client: concat!("qg-volunteer/", env!("CARGO_PKG_VERSION")).into(),
                    }
                }
                None => AdapterInfo {
                    name: "cpu-reference".into(),
                    backend: "cpu".into(),
                    client: concat!("qg-volunteer/", env!("CARGO_PKG_VERSION")).into(),
                    ..Default::default()
                },
            };
            eprintln!(
                "qg-volunteer: computing on {} ({})",
                adapter.name, adapter.backend
            );
            if let Some(g) = &gpu {
                g.set_budget(args.budget_s);
            }
            let engine = match &gpu {
                Some(g) => Engine::Gpu(g),
                None => Engine::Cpu,
            };
            if args.verifier {
                let Some(key) = args.key.as_deref() else {
                    eprintln!(
                        "qg-volunteer: --verifier needs an operator key (--key or QG_API_KEY)"
                    );
                    return ExitCode::from(2);
                };
                let n = verifier::run(&host, &engine, key, &adapter.name, args.max_units).await;
                eprintln!("qg-volunteer: {n} verification jobs done");
                return ExitCode::SUCCESS;
            }
            let opts = Options {
                nickname: args.nickname.clone(),
                adapter,
                max_units: args.max_units,
                save_every_s: args.save_every_s,
                builtin_only: args.builtin_only,
            };
            let n = volunteer::run(&host, &engine, &opts).await;
            eprintln!("qg-volunteer: {n} units computed");
            if gpu.as_ref().is_some_and(client_wasm::Gpu::is_lost) {
                // A stuck device never empties its queue: dropping it would wait forever.
                eprintln!("qg-volunteer: the GPU is lost or stuck; restart to go on");
                std::process::exit(3);
            }
            ExitCode::SUCCESS
        })
    }
}
