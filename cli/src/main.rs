//! `qg`: the scientist's command line. Submit a batch spec, watch it, download verified results
//! with provenance.
//!
//! Server and API key come from `--server`/`--key`, the `QG_SERVER`/`QG_API_KEY` environment
//! variables, or a TOML config file (`--config`, `QG_CONFIG`, or
//! `~/.config/quorum-grid/qg.toml`) with `server = "..."` and `key = "..."`.

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use protocol::api::{BatchCreated, BatchRequest, ErrorBody};
use protocol::status::{BatchList, BatchStatus, UnitProvenance};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod kernel;
mod log;
mod monitor;
mod witness;

#[derive(Parser)]
#[command(
    version,
    about = "Quorum Grid: submit simulation batches and download verified results"
)]
struct Cli {
    /// Coordinator URL [default: http://127.0.0.1:8080]
    #[arg(long, env = "QG_SERVER", global = true)]
    server: Option<String>,
    /// Scientist API key (from `coordinator keys create --name NAME`)
    #[arg(long, env = "QG_API_KEY", global = true, hide_env_values = true)]
    key: Option<String>,
    /// Config file with `server` and `key` [default: ~/.config/quorum-grid/qg.toml]
    #[arg(long, env = "QG_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate and submit a batch spec (TOML or JSON); prints the batch id
    Submit {
        file: PathBuf,
        /// Validate and show the expansion only
        #[arg(long)]
        dry_run: bool,
    },
    /// Progress of one batch (counts by state, ETA), or a list of your batches
    Status { batch: Option<i64> },
    /// Live progress bars until the batch is done
    Watch {
        batch: i64,
        /// Seconds between updates
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Download results
    Results {
        batch: i64,
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
        /// Means and standard errors per swept value instead of one row per unit (json)
        #[arg(long)]
        aggregate: bool,
        /// Write to this file instead of standard output
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// A proof bundle instead: every unit with its log entries and inclusion proofs
        /// against a cosigned checkpoint, for `qg verify`
        #[arg(long)]
        proofs: bool,
        /// With --proofs: witness cosignatures the checkpoint must carry [default: all the
        /// log's witnesses]
        #[arg(long)]
        witnesses: Option<usize>,
        /// With --proofs: seconds to wait for the newest results to be in such a checkpoint
        #[arg(long, default_value_t = 30.0)]
        wait: f64,
    },
    /// A unit's provenance: replicas, digests, spot-check, how to reproduce it
    Unit { unit: i64 },
    /// Cancel a batch: its unsettled units stop (they fail, saying so), queued checks are
    /// dropped, results already verified stay
    Cancel { batch: i64 },
    /// Verify a proof bundle offline: the checkpoint's signature and witness cosignatures,
    /// each result's inclusion in the log and that it is current; recompute a sample.
    /// Exit status 0 when all holds, 1 with a line per problem
    Verify {
        /// A bundle from `qg results BATCH --proofs -o FILE`
        file: PathBuf,
        /// The log's public key, pinned (`GET /api/v1/log`, printed by the coordinator):
        /// required, a bundle's own key proves nothing
        #[arg(long)]
        log_key: Option<String>,
        /// A witness's public key (repeat for several)
        #[arg(long = "witness")]
        witnesses: Vec<String>,
        /// Cosignatures needed from those witnesses; 0 checks none [default: 1]
        #[arg(long)]
        min_witnesses: Option<usize>,
        /// Percent of the canonical units to recompute with the CPU reference (`5` or `5%`),
        /// drawn at random here
        #[arg(long, default_value = "0", value_parser = percent)]
        recompute: f64,
        /// The recompute sample's seed, to repeat an audit [default: drawn at random, printed]
        #[arg(long)]
        seed: Option<u64>,
        /// Write the verified results (params and the summaries their receipts bind) as CSV
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Write their means and standard errors per swept point as JSON
        #[arg(long)]
        aggregate: Option<PathBuf>,
        /// CPU threads for recomputation [default: all]
        #[arg(long)]
        threads: Option<usize>,
        /// A kernel package folder to recompute its units with (the bundle carries its
        /// batch's package already; repeat for several)
        #[arg(long = "package")]
        packages: Vec<PathBuf>,
    },
    /// Kernel packages: check one here, push it, list them, approve or suspend one (operator)
    Kernel {
        #[command(subcommand)]
        cmd: kernel::KernelCmd,
    },
    /// Witness transparency logs: cosign each checkpoint that consistently extends the last
    /// one cosigned, refuse forks and rollbacks (`serve`: logs push to it, C2SP tlog-witness;
    /// `follow`: it pulls one log's checkpoints)
    Witness {
        #[command(subcommand)]
        cmd: WitnessCmd,
    },
    /// Monitor a transparency log: check every entry from entry 0 against the log's rules
    /// (each unit's chain, a revocation before a re-acceptance, batch commitments) and the
    /// tree its checkpoints sign; stop (exit status 1) at the first anomaly, naming it
    Monitor {
        /// The coordinator whose log to follow [default: --server]
        #[arg(long)]
        log: Option<String>,
        /// Directory for the monitor's state (what it checked so far)
        #[arg(long)]
        state: PathBuf,
        /// The log's public key; without it the key the log names on first contact is pinned
        #[arg(long)]
        log_key: Option<String>,
        /// A witness's public key (repeat for several): checkpoints are checked only once
        /// cosigned, so the tree monitored is the one scientists verify
        #[arg(long = "witness")]
        witnesses: Vec<String>,
        /// Cosignatures needed from those witnesses [default: 1 if any is given]
        #[arg(long)]
        min_witnesses: Option<usize>,
        /// Look once and exit
        #[arg(long)]
        once: bool,
        /// Seconds between looks
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
}

/// The witness's key and name, both modes.
#[derive(clap::Args)]
struct WitnessKey {
    /// Directory for the witness's key and the last checkpoints it cosigned
    #[arg(long)]
    state: PathBuf,
    /// The witness's name (its key's name; a new key only)
    #[arg(long, default_value = "qg-witness")]
    name: String,
    /// Print the witness's public key (for the coordinator's `witnesses`) and exit
    #[arg(long)]
    print_key: bool,
}

#[derive(Subcommand)]
enum WitnessCmd {
    /// Serve C2SP tlog-witness: logs POST /add-checkpoint (old size, consistency proof,
    /// checkpoint) and get this witness's cosignature, or the spec's refusal (400, 403, 404,
    /// 409 with its size, 422)
    Serve {
        #[command(flatten)]
        key: WitnessKey,
        /// Address to listen on (port 0: any free one; the line on stdout says which)
        #[arg(long, default_value = "127.0.0.1:7380")]
        listen: std::net::SocketAddr,
        /// The public key of a log this witness follows (repeat for several); its name is
        /// the log's origin
        #[arg(long = "log-key")]
        log_keys: Vec<String>,
    },
    /// Follow one log: pull its checkpoints, cosign and hand the cosignatures back
    Follow {
        #[command(flatten)]
        key: WitnessKey,
        /// The coordinator whose log to follow [default: --server]
        #[arg(long)]
        log: Option<String>,
        /// The log's public key; without it the key the log names on first contact is pinned
        #[arg(long)]
        log_key: Option<String>,
        /// Look once and exit
        #[arg(long)]
        once: bool,
        /// Seconds between looks
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
}

/// `5`, `5%` or `0.5`: a percentage from 0 to 100.
fn percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("a percentage, like 5 or 5%, got {s:?}"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("a percentage from 0 to 100, got {s:?}"))
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Csv,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<String>,
    key: Option<String>,
}

pub(crate) struct Api {
    pub(crate) base: String,
    key: Option<String>,
    pub(crate) http: reqwest::blocking::Client,
}

impl Api {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn key(&self) -> Result<&str> {
        self.key.as_deref().ok_or_else(|| {
            anyhow!("no API key: pass --key, set QG_API_KEY, or put `key = \"...\"` in the config file (create one with `coordinator keys create --name NAME`)")
        })
    }

    pub(crate) fn send(
        &self,
        req: reqwest::blocking::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::blocking::Response> {
        let resp = req.bearer_auth(self.key()?).send().map_err(|e| {
            anyhow!("cannot reach the coordinator at {} ({e}); is it running (`cargo xtask serve`) and is --server right?", self.base)
        })?;
        let status = resp.status().as_u16();
        if status < 400 {
            return Ok(resp);
        }
        let text = resp.text().unwrap_or_default();
        let body: Option<ErrorBody> = serde_json::from_str(&text).ok();
        let detail = body
            .map(|b| match b.field {
                Some(f) => format!("{f}: {}", b.error.trim_start_matches(&format!("{f}: "))),
                None => b.error,
            })
            .unwrap_or(text);
        match status {
            401 => bail!("the coordinator did not accept the API key ({detail})"),
            403 => bail!("not allowed: {detail}"),
            404 => bail!("no {what} on {} (or it belongs to another key)", self.base),
            _ => bail!("{detail} (HTTP {status})"),
        }
    }

    pub(crate) fn get<T: serde::de::DeserializeOwned>(&self, path: &str, what: &str) -> Result<T> {
        self.send(self.http.get(self.url(path)), what)?
            .json()
            .context("the coordinator sent JSON this qg does not understand")
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn counts(status: &BatchStatus) -> String {
    [
        "canonical",
        "in_progress",
        "unsent",
        "needs_validation",
        "inconclusive",
        "failed",
    ]
    .iter()
    .filter_map(|s| {
        let n = status.by_state.get(*s).copied().unwrap_or(0);
        (n > 0).then(|| format!("{} {n}", s.replace('_', " ")))
    })
    .collect::<Vec<_>>()
    .join(", ")
}

fn count(status: &BatchStatus, state: &str) -> u64 {
    status.by_state.get(state).copied().unwrap_or(0)
}

fn finished(status: &BatchStatus) -> u64 {
    count(status, "canonical") + count(status, "failed")
}

fn eta(status: &BatchStatus) -> String {
    let done = finished(status);
    if status.done {
        return "done".into();
    }
    let elapsed = (now() - status.created_at).max(1) as f64;
    if done == 0 {
        return "unknown (no unit finished yet)".into();
    }
    let left = status.units.saturating_sub(done) as f64 * elapsed / done as f64;
    match left as u64 {
        s if s < 120 => format!("~{s} s"),
        s if s < 7200 => format!("~{} min", s / 60),
        s => format!("~{:.1} h", s as f64 / 3600.0),
    }
}

fn run(cli: Cli) -> Result<()> {
    let config_path = cli.config.clone().or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/quorum-grid/qg.toml"))
    });
    let file: FileConfig = match &config_path {
        Some(p) if p.exists() => toml::from_str(&std::fs::read_to_string(p)?)
            .with_context(|| format!("config file {}", p.display()))?,
        Some(p) if cli.config.is_some() => bail!("--config {}: no such file", p.display()),
        _ => FileConfig::default(),
    };
    let server = cli
        .server
        .or(file.server)
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        bail!("--server must be an http:// or https:// URL, got {server:?}");
    }
    let api = Api {
        base: server.trim_end_matches('/').to_owned(),
        key: cli.key.or(file.key),
        http: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?,
    };
    match cli.command {
        Cmd::Submit { file, dry_run } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            // A package's spec is checked against the package itself, fetched by its hash.
            let package = match shaders::spec::kernel_of(&text) {
                Some(k) => kernel::fetch(&api, &k)?,
                None => None,
            };
            let e = shaders::spec::expand_text_with(&text, package.as_ref())
                .map_err(|e| anyhow!("{}: {e}", file.display()))?;
            eprintln!(
                "{}: {} units of {} ({}), swept over {}",
                file.display(),
                e.units.len(),
                e.kernel,
                e.name,
                if e.axes.is_empty() {
                    "nothing".into()
                } else {
                    e.axes.join(" × ")
                }
            );
            if dry_run {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"name": e.name, "kernel": e.kernel, "axes": e.axes, "units": e.units.len(), "first_unit": e.units.first()})
                    )?
                );
                return Ok(());
            }
            let req = BatchRequest {
                name: Some(e.name),
                description: e.description,
                kernel: e.kernel,
                units: e.units,
                policy: e.policy,
                axes: e.axes,
            };
            let created: BatchCreated = api
                .send(
                    api.http.post(api.url("/api/v1/batches")).json(&req),
                    "batch",
                )?
                .json()?;
            eprintln!(
                "submitted batch {} ({} units); watch it with `qg watch {}`",
                created.batch_id, created.units, created.batch_id
            );
            if !created.verification.is_empty() {
                eprintln!("verification: {}", created.verification);
            }
            println!("{}", created.batch_id);
        }
        Cmd::Status { batch: Some(id) } => {
            let s: BatchStatus =
                api.get(&format!("/api/v1/batches/{id}"), &format!("batch {id}"))?;
            println!("batch {id}: {} ({})", s.name, s.kernel);
            println!(
                "  {} of {} units finished: {}",
                finished(&s),
                s.units,
                counts(&s)
            );
            match s.cancelled_at {
                Some(_) => println!("  cancelled"),
                None => println!("  ETA: {}", eta(&s)),
            }
            // A package's batch: whether its units go out, and why not.
            if let Some(p) = &s.package {
                match p.status.as_str() {
                    "approved" => println!("  kernel package {}: approved", p.kernel),
                    "pending" => println!(
                        "  kernel package {}: pending; its units wait until an operator approves it",
                        p.kernel
                    ),
                    other => println!(
                        "  kernel package {}: {other}: {}; its units are held",
                        p.kernel,
                        p.reason.as_deref().unwrap_or("no reason given")
                    ),
                }
            }
        }
        Cmd::Status { batch: None } => {
            let list: BatchList = api.get("/api/v1/batches", "batches")?;
            let batches = list.batches;
            if batches.is_empty() {
                println!("no batches yet: submit one with `qg submit SPEC.toml`");
            }
            for s in batches {
                println!(
                    "{:>6}  {:<14} {:>7}/{:<7} {}  {}",
                    s.batch_id,
                    s.kernel,
                    finished(&s),
                    s.units,
                    if s.done { "done" } else { "running" },
                    s.name
                );
            }
        }
        Cmd::Watch { batch, interval } => {
            let what = format!("batch {batch}");
            let s: BatchStatus = api.get(&format!("/api/v1/batches/{batch}"), &what)?;
            let bar = ProgressBar::new(s.units);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} units  {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            loop {
                let s: BatchStatus = api.get(&format!("/api/v1/batches/{batch}"), &what)?;
                bar.set_position(finished(&s));
                bar.set_message(format!("{} · ETA {}", counts(&s), eta(&s)));
                if s.done {
                    bar.finish();
                    eprintln!(
                        "batch {batch} done: {} canonical, {} failed",
                        count(&s, "canonical"),
                        count(&s, "failed")
                    );
                    break;
                }
                std::thread::sleep(Duration::from_secs_f64(interval.clamp(0.1, 60.0)));
            }
        }
        Cmd::Results {
            batch,
            format,
            aggregate,
            output,
            proofs,
            witnesses,
            wait,
        } => {
            let what = format!("batch {batch}");
            let body = match (format, aggregate) {
                _ if proofs && (aggregate || matches!(format, Format::Csv)) => {
                    bail!("--proofs writes a JSON bundle; drop --aggregate and --format csv")
                }
                _ if proofs => log::fetch_proofs(
                    &|path| api.get::<Value>(path, &what),
                    batch,
                    witnesses,
                    Duration::from_secs_f64(wait.clamp(0.0, 3600.0)),
                )?,
                (Format::Csv, true) => bail!("--aggregate gives JSON; drop --format csv"),
                (Format::Csv, false) => api
                    .send(
                        api.http
                            .get(api.url(&format!("/api/v1/batches/{batch}/results?format=csv"))),
                        &what,
                    )?
                    .text()?,
                (Format::Json, true) => serde_json::to_string_pretty(
                    &api.get::<Value>(&format!("/api/v1/batches/{batch}/aggregate"), &what)?,
                )?,
                (Format::Json, false) => serde_json::to_string_pretty(
                    &api.get::<Value>(&format!("/api/v1/batches/{batch}/results"), &what)?,
                )?,
            };
            match output {
                Some(path) => {
                    std::fs::write(&path, body)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => println!("{}", body.trim_end()),
            }
        }
        Cmd::Unit { unit } => {
            let p: UnitProvenance =
                api.get(&format!("/api/v1/units/{unit}"), &format!("unit {unit}"))?;
            println!(
                "unit {unit} of batch {}: {} ({})",
                p.batch_id,
                p.state.as_str(),
                p.kernel
            );
            println!("  params     {}", p.params);
            println!(
                "  digest     {}",
                p.canonical_digest.map_or("-".into(), |d| d.to_hex())
            );
            if let Some(r) = &p.fail_reason {
                println!("  failed     {r}");
            }
            println!(
                "  summary    {}",
                p.summary.as_ref().map_or("-".into(), Value::to_string)
            );
            let sc = &p.spot_check;
            println!(
                "  spot-check {}",
                if sc.sampled {
                    format!(
                        "{} (passed: {})",
                        sc.state,
                        sc.passed.map_or("not yet".into(), |b| b.to_string())
                    )
                } else {
                    "not sampled".into()
                }
            );
            println!("  replicas:");
            for r in &p.replicas {
                println!(
                    "    {:>8} {:<12} {:<11} {} {}{}{}{}",
                    r.replica_id,
                    r.volunteer,
                    r.state.as_str(),
                    r.digest.map_or("-".into(), |d| d.to_hex()[..16].to_owned()),
                    r.adapter.as_ref().map_or("", |a| a.name.as_str()),
                    r.diverged_at_step
                        .map_or(String::new(), |s| format!("  diverged at step {s}")),
                    if r.ringer { "  (ringer)" } else { "" },
                    r.challenge
                        .as_ref()
                        .map_or(String::new(), |c| format!("  challenge {c}")),
                );
            }
            println!("  reproduce: {}", p.reproduce);
        }
        Cmd::Cancel { batch } => {
            let s: BatchStatus = api
                .send(
                    api.http
                        .post(api.url(&format!("/api/v1/batches/{batch}/cancel"))),
                    &format!("batch {batch}"),
                )?
                .json()
                .context("the coordinator sent JSON this qg does not understand")?;
            println!(
                "batch {batch} cancelled: {} result(s) kept, {} unit(s) stopped",
                count(&s, "canonical"),
                count(&s, "failed")
            );
        }
        Cmd::Kernel { cmd } => kernel::run(&api, cmd)?,
        Cmd::Verify { .. } | Cmd::Witness { .. } | Cmd::Monitor { .. } => {
            bail!("qg verify, qg witness and qg monitor run apart")
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let Cli {
        server,
        key,
        config,
        command,
    } = Cli::parse();
    // The offline and log-following commands say pass or fail by their exit status.
    let verdict = match command {
        Cmd::Verify {
            file,
            log_key,
            witnesses,
            min_witnesses,
            recompute,
            seed,
            csv,
            aggregate,
            threads,
            packages,
        } => Ok(log::verify(&log::VerifyArgs {
            file,
            log_key,
            witnesses,
            min_witnesses,
            recompute,
            seed,
            csv,
            aggregate,
            packages,
            threads: threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        })),
        Cmd::Witness {
            cmd:
                WitnessCmd::Serve {
                    key,
                    listen,
                    log_keys,
                },
        } => Ok(witness::serve(&witness::ServeArgs {
            listen,
            state: key.state,
            name: key.name,
            log_keys,
            print_key: key.print_key,
        })),
        Cmd::Witness {
            cmd:
                WitnessCmd::Follow {
                    key,
                    log,
                    log_key,
                    once,
                    interval,
                },
        } => Ok(witness::follow(&witness::FollowArgs {
            log: log
                .or(server.clone())
                .unwrap_or_else(|| "http://127.0.0.1:8080".into()),
            state: key.state,
            name: key.name,
            log_key,
            once,
            interval,
            print_key: key.print_key,
        })),
        Cmd::Monitor {
            log,
            state,
            log_key,
            witnesses,
            min_witnesses,
            once,
            interval,
        } => Ok(monitor::run_monitor(&monitor::MonitorArgs {
            log: log
                .or(server.clone())
                .unwrap_or_else(|| "http://127.0.0.1:8080".into()),
            state,
            log_key,
            witnesses,
            min_witnesses,
            once,
            interval,
        })),
        Cmd::Kernel {
            cmd: kernel::KernelCmd::Check { dir, params },
        } => Ok(kernel::check(&dir, &params)),
        command => Err(Cli {
            server,
            key,
            config,
            command,
        }),
    };
    let cli = match verdict {
        Err(cli) => cli,
        Ok(v) => {
            return match v {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("qg: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qg: {e:#}");
            ExitCode::from(2)
        }
    }
}
