//! The sabotage benchmark behind `cargo xtask bench sabotage`: runs each population of
//! simulated volunteers (`coordinator::sim`) under fixed quorum 2, BOINC's adaptive
//! replication and our credibility-based replication, and prints one JSON line per run.

use anyhow::{Result, bail};
use clap::Parser;
use coordinator::sim::{self, Population, SimConfig, Strategy};
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Parser)]
struct Args {
    /// Work units per run.
    #[arg(long, default_value_t = 100_000)]
    units: u64,
    /// Simulated volunteers per run (1,000 units each by default).
    #[arg(long, default_value_t = 100)]
    volunteers: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Only these populations (comma-separated names; default: all).
    #[arg(long)]
    population: Option<String>,
    /// Only these strategies: fixed_quorum_2, boinc_adaptive, credibility (default: all).
    #[arg(long)]
    strategy: Option<String>,
    /// target_error of the credibility strategy (a comma-separated list runs each).
    #[arg(long, default_value = "1e-3,1e-4")]
    target_error: String,
    /// Runs in parallel (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let cfg = SimConfig {
        seed: args.seed,
        units: args.units,
        volunteers: args.volunteers,
        ..SimConfig::default()
    };
    let wanted = |list: &Option<String>, name: &str| {
        list.as_ref()
            .is_none_or(|l| l.split(',').any(|x| name.starts_with(x.trim())))
    };
    let mut strategies = vec![Strategy::fixed_quorum_2(), Strategy::boinc_adaptive()];
    for t in args.target_error.split(',') {
        let Ok(t) = t.trim().parse::<f64>() else {
            bail!("--target-error: not a number: {t:?}");
        };
        strategies.push(Strategy::credibility(t));
    }
    let populations: Vec<Population> = Population::standard()
        .into_iter()
        .filter(|p| wanted(&args.population, p.name))
        .collect();
    if populations.is_empty() {
        bail!("--population: no such population");
    }
    let runs: Vec<(&Population, &Strategy)> = populations
        .iter()
        .flat_map(|p| {
            strategies
                .iter()
                .filter(|s| wanted(&args.strategy, &s.name))
                .map(move |s| (p, s))
        })
        .collect();
    if runs.is_empty() {
        bail!("--strategy: no such strategy (fixed_quorum_2, boinc_adaptive, credibility)");
    }
    // Independent runs in parallel; each line is printed as its run ends.
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let next = AtomicUsize::new(0);
    let out = Mutex::new(std::io::stdout());
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((p, s)) = runs.get(i) else {
                            return Ok(());
                        };
                        let r = sim::run(&cfg, p, s)?;
                        let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
                        writeln!(o, "{}", serde_json::to_string(&r)?)?;
                        o.flush()?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a simulation panicked"))??;
        }
        Ok(())
    })
}
