//! The sabotage benchmark behind `cargo xtask bench sabotage`: runs each population of
//! simulated volunteers (`coordinator::sim`) under fixed quorum 2, BOINC's adaptive
//! replication and our credibility-based replication, and prints one JSON line per run.

use anyhow::{Result, bail};
use clap::Parser;
use coordinator::sim::{self, Population, SimConfig, Strategy};

#[derive(Parser)]
struct Args {
    /// Work units per run.
    #[arg(long, default_value_t = 100_000)]
    units: u64,
    /// Simulated volunteers per run.
    #[arg(long, default_value_t = 1000)]
    volunteers: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Only these populations (comma-separated names; default: all).
    #[arg(long)]
    population: Option<String>,
    /// Only these strategies: fixed_quorum_2, boinc_adaptive, credibility (default: all).
    #[arg(long)]
    strategy: Option<String>,
    /// target_error of the credibility strategy (repeatable comma-separated list).
    #[arg(long, default_value = "1e-4")]
    target_error: String,
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
    for p in &populations {
        for s in strategies
            .iter()
            .filter(|s| wanted(&args.strategy, &s.name))
        {
            let r = sim::run(&cfg, p, s)?;
            println!("{}", serde_json::to_string(&r)?);
        }
    }
    Ok(())
}
