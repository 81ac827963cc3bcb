//! The API against its own OpenAPI document: schemathesis (pinned, in a virtual environment
//! under target/) generates requests for every operation in `/api/v1/openapi.json` and runs
//! them against a real coordinator (the debug build the tests just built, on a scratch data
//! dir with an operator key). It must find no 5xx and no response that contradicts the schema.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The schemathesis release the check is pinned to.
const VERSION: &str = "4.32.5";
/// The check's time budget for fuzzing, in seconds.
const MAX_TIME_S: &str = "90";

/// `st` from the virtual environment, installed there first if it is not.
fn ensure() -> Result<PathBuf> {
    let venv = crate::root().join("target/schemathesis");
    let st = venv.join("bin/st");
    let pinned = venv.join(format!(".installed-{VERSION}"));
    if st.exists() && pinned.exists() {
        return Ok(st);
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        // Debian's python3 lacks venv until python3-venv is installed.
        crate::deps::ensure(&[crate::deps::Need {
            what: "Python 3 venv",
            present_if_any: &[],
            packages: &["python3-venv", "python3-pip"],
        }])?;
        crate::run(
            "python3 -m venv",
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
        )?;
    }
    crate::run(
        "pip install schemathesis",
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("schemathesis=={VERSION}"),
        ]),
    )?;
    std::fs::write(&pinned, VERSION)?;
    Ok(st)
}

/// A coordinator on a free port, killed when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(bin: &Path, data: &Path) -> Result<(Server, String, String)> {
    let out = Command::new(bin)
        .arg("--data-dir")
        .arg(data)
        .args(["keys", "create", "--name", "schemathesis", "--operator"])
        .output()
        .context("coordinator keys create")?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let key = text
        .split_whitespace()
        .find(|w| w.starts_with("qgk_"))
        .context("no key printed by `coordinator keys create`")?
        .to_owned();
    let mut child = Command::new(bin)
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--bind", "127.0.0.1:0", "--web-dir"])
        .arg(crate::root().join("web"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the coordinator")?;
    let stdout = child.stdout.take().context("coordinator stdout")?;
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("coordinator listening on ")
        .with_context(|| format!("unexpected first line from the coordinator: {line:?}"))?
        .to_owned();
    Ok((server, url, key))
}

pub fn run() -> Result<()> {
    let st = ensure()?;
    let bin = crate::root().join("target/debug/coordinator");
    crate::run(
        "build the coordinator",
        crate::cargo().args(["build", "-p", "coordinator", "--bin", "coordinator"]),
    )?;
    let data = tempfile_dir()?;
    let (server, url, key) = start(&bin, &data)?;
    let out = Command::new(&st)
        .arg("run")
        .arg(format!("{url}/api/v1/openapi.json"))
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance",
            "--phases",
            "coverage,fuzzing",
            "--max-examples",
            "20",
            "--max-time",
            MAX_TIME_S,
            "--workers",
            "2",
        ])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1")
        .stderr(Stdio::inherit())
        .output()
        .context("running schemathesis")?;
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
    let text = String::from_utf8_lossy(&out.stdout);
    // Its tracebacks of its own errors quote whole source files on one line: shortened.
    for line in text.lines() {
        match line.char_indices().nth(300) {
            Some((i, _)) => println!("{} …", &line[..i]),
            None => println!("{line}"),
        }
    }
    // A failed check is the API's fault; schemathesis's own runtime errors (its generator
    // tripping over the interpreter) are reported above but are not the API's.
    let failed_checks = text
        .lines()
        .any(|l| l.trim_start().starts_with("Failures:"));
    if failed_checks {
        bail!("schemathesis found responses that break the API's schema (above)");
    }
    if !text.contains(" generated, ") {
        bail!("schemathesis did not run (exit {})", out.status);
    }
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("qg-schemathesis-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
