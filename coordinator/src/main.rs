//! `coordinator serve` runs the coordinator; `coordinator keys create --name NAME` makes a
//! scientist API key.

use anyhow::Result;
use clap::{Parser, Subcommand};
use coordinator::server::{Config, FileConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Quorum Grid coordinator")]
struct Cli {
    /// TOML config file (flags and QG_* env vars override it)
    #[arg(long, env = "QG_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Data directory (default ./qg-data)
    #[arg(long, env = "QG_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// SQLite database file (default DATA_DIR/coordinator.db), or a PostgreSQL URL
    /// (postgres://user@host:port/db) that several coordinators share
    #[arg(long, env = "QG_DB", global = true)]
    db: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the API and the web pages
    Serve {
        /// Address to listen on (default 127.0.0.1:8080)
        #[arg(long, env = "QG_BIND")]
        bind: Option<SocketAddr>,
        /// Directory of static web pages (default ./web)
        #[arg(long, env = "QG_WEB_DIR")]
        web_dir: Option<PathBuf>,
        /// Do not create the demo batch in an empty database
        #[arg(long)]
        no_demo: bool,
        /// The transparency log's name (its checkpoints' origin) [default: localhost/quorum-grid]
        #[arg(long, env = "QG_LOG_ORIGIN")]
        log_origin: Option<String>,
        /// The log's private key file [default: DATA_DIR/log-key, created on first start];
        /// coordinators sharing a database share it
        #[arg(long, env = "QG_LOG_KEY")]
        log_key: Option<PathBuf>,
        /// A witness whose cosignatures the log accepts (repeat for several): its public key
        /// (`qg witness serve --print-key` shows one), or "KEY URL" for one the log pushes its
        /// checkpoints to (C2SP tlog-witness, e.g. `qg witness serve`)
        #[arg(long = "witness")]
        witnesses: Vec<String>,
        /// Volunteer registrations per minute from one network (/24, /48) [default: 10; 0:
        /// unlimited]
        #[arg(long, env = "QG_REGISTRATIONS_PER_MINUTE")]
        registrations_per_minute: Option<f64>,
        /// Replicas a new volunteer may hold at once; one more per valid result, fewer with
        /// errors [default: 2]
        #[arg(long, env = "QG_WORK_IN_FLIGHT")]
        work_in_flight: Option<u32>,
        /// Built-in CPU recomputation workers (spot-checks); 0 leaves them to verifier
        /// workers [default: 2]
        #[arg(long, env = "QG_SPOT_WORKERS")]
        spot_workers: Option<usize>,
        /// The most work the coordinator recomputes for one unit; costlier units are verified
        /// by quorum and challenges [default: 5e9]
        #[arg(long, env = "QG_MAX_RECOMPUTE_WORK")]
        max_recompute_work: Option<u64>,
    },
    /// Manage scientist API keys
    Keys {
        #[command(subcommand)]
        command: KeysCmd,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create a key; it is printed once and stored only hashed
    Create {
        #[arg(long)]
        name: String,
        /// An operator key sees every batch
        #[arg(long)]
        operator: bool,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let file = match &cli.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    match cli.command {
        Cmd::Serve {
            bind,
            web_dir,
            no_demo,
            log_origin,
            log_key,
            witnesses,
            registrations_per_minute,
            work_in_flight,
            spot_workers,
            max_recompute_work,
        } => {
            let mut cfg = Config::resolve(file, bind, cli.data_dir, cli.db, web_dir);
            if no_demo {
                cfg.demo = false;
            }
            if let Some(o) = log_origin {
                cfg.log_origin = o;
            }
            if let Some(k) = log_key {
                cfg.log_key = k;
            }
            if !witnesses.is_empty() {
                cfg.witnesses = witnesses;
            }
            if let Some(r) = registrations_per_minute {
                cfg.registrations_per_minute = r.max(0.0);
            }
            if let Some(w) = spot_workers {
                cfg.spot_workers = w;
            }
            if let Some(w) = max_recompute_work {
                cfg.max_recompute_work = w;
            }
            if let Some(w) = work_in_flight {
                cfg.work_in_flight = w.clamp(1, 64);
            }
            coordinator::server::serve(cfg).await
        }
        Cmd::Keys {
            command: KeysCmd::Create { name, operator },
        } => {
            let name = name.trim().to_owned();
            if name.is_empty() || name.len() > 100 {
                anyhow::bail!("--name: 1 to 100 characters");
            }
            let cfg = Config::resolve(file, None, cli.data_dir, cli.db, None);
            std::fs::create_dir_all(&cfg.data_dir)?;
            let store = coordinator::engine::Engine::open(&cfg.db)?;
            let key = coordinator::api::new_secret("qgk_");
            let id = store.create_key(
                &name,
                &coordinator::api::hash_secret(&key),
                operator,
                coordinator::api::now(),
            )?;
            eprintln!("created API key {id} for {name:?}; it is shown only once:");
            println!("{key}");
            Ok(())
        }
    }
}
