//! Shared by the tests that run the real coordinator binary.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_coordinator");

/// Starts `coordinator ARGS serve SERVE` on a free port with pages from `dir`; returns the
/// process and its base URL.
pub fn start(args: &[String], serve: &[&str], dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("serve")
        .args(serve)
        .args(["--bind", "127.0.0.1:0", "--no-demo", "--web-dir"])
        .arg(dir)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("coordinator starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let base = line
        .trim()
        .strip_prefix("coordinator listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, base)
}
