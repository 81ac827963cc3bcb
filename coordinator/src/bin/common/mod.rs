//! Shared by the benchmark binaries (qg-loadgen, qg-reliability, qg-logbench): starting a
//! coordinator or witness process and finding its address, and percentiles of latencies.

// Each benchmark binary uses part of this.
#![allow(dead_code)]

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Spawns `cmd` (a `coordinator … serve --bind 127.0.0.1:0 …`) and reads the line it prints
/// once listening; the process and its base URL. A process that does not start is killed.
pub fn serve(cmd: Command) -> Result<(Child, String)> {
    listening(cmd, "coordinator listening on ")
}

/// Spawns a server that prints `<prefix><URL>` once listening; the process and the URL.
pub fn listening(mut cmd: Command, prefix: &str) -> Result<(Child, String)> {
    let mut child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let Some(base) = line.trim().strip_prefix(prefix) else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{:?} did not start: {line:?}", cmd.get_program());
    };
    Ok((child, base.to_owned()))
}

/// The `p` quantile of `v` (sorted in place); NaN for none.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}
