//! PostgreSQL for the tests and benchmarks, found or made: `QG_TEST_DATABASE_URL` if set; else
//! a server on 127.0.0.1:5432 if one answers; else Debian's `postgresql` (installed with
//! apt-get when root) in a throwaway cluster in a temporary directory on a free port, stopped
//! and removed when the run ends (`QG_TEST_POSTGRES=throwaway` asks for that cluster even when
//! a server answers). Tests create (and drop) a database of their own on it.

use anyhow::{Context, Result, bail};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A server for this run; a cluster started for it is stopped when this is dropped.
pub struct Postgres {
    /// A URL of the server (its `postgres` database); tests make their own databases on it.
    pub url: String,
    cluster: Option<Cluster>,
}

struct Cluster {
    dir: PathBuf,
    pg_ctl: PathBuf,
    user: Option<&'static str>,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(c) = &self.cluster {
            let _ = as_user(
                c.user,
                &c.pg_ctl,
                &["-D", &c.dir.to_string_lossy(), "-m", "immediate", "stop"],
            )
            .output();
            let _ = std::fs::remove_dir_all(&c.dir);
        }
    }
}

fn answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// The server the tests use (see the module doc).
pub fn ensure() -> Result<Postgres> {
    if let Ok(url) = std::env::var("QG_TEST_DATABASE_URL") {
        eprintln!("==> PostgreSQL: QG_TEST_DATABASE_URL");
        return Ok(Postgres { url, cluster: None });
    }
    // QG_TEST_POSTGRES=throwaway: a private cluster even when a server answers.
    let throwaway = std::env::var("QG_TEST_POSTGRES").as_deref() == Ok("throwaway");
    if !throwaway && answers(SocketAddr::from(([127, 0, 0, 1], 5432))) {
        eprintln!("==> PostgreSQL: the server on 127.0.0.1:5432");
        return Ok(Postgres {
            url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            cluster: None,
        });
    }
    throwaway_cluster()
}

/// `initdb` and `pg_ctl`: on PATH, or Debian's versioned directory.
fn binaries() -> Option<(PathBuf, PathBuf)> {
    let on_path = |name: &str| {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|f| f.exists())
        })
    };
    if let (Some(i), Some(c)) = (on_path("initdb"), on_path("pg_ctl")) {
        return Some((i, c));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    versions.sort();
    let bin = versions.pop()?;
    Some((bin.join("initdb"), bin.join("pg_ctl")))
}

fn as_user(user: Option<&str>, program: &Path, args: &[&str]) -> Command {
    match user {
        // initdb refuses to run as root.
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(program).args(args);
            c
        }
        None => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    }
}

fn throwaway_cluster() -> Result<Postgres> {
    if binaries().is_none() {
        crate::deps::ensure(&crate::deps::POSTGRES)?;
    }
    let (initdb, pg_ctl) = binaries()
        .context("PostgreSQL's initdb and pg_ctl not found (Debian package `postgresql`)")?;
    let root = crate::deps::is_root();
    let user = root.then_some("postgres");
    let dir = std::env::temp_dir().join(format!("qg-postgres-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    if root {
        crate::run(
            "chown the throwaway cluster to postgres",
            Command::new("chown").args(["postgres:postgres"]).arg(&dir),
        )?;
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let d = dir.to_string_lossy().into_owned();
    crate::run(
        "initdb (throwaway PostgreSQL cluster)",
        as_user(
            user,
            &initdb,
            &["-D", &d, "-A", "trust", "-U", "postgres", "--no-sync"],
        )
        .stdout(std::process::Stdio::null()),
    )?;
    let cluster = Cluster {
        dir: dir.clone(),
        pg_ctl: pg_ctl.clone(),
        user,
    };
    let opts = format!("-p {port} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off");
    let log = format!("{d}/server.log");
    let pg = Postgres {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        cluster: Some(cluster),
    };
    crate::run(
        &format!("pg_ctl start (port {port})"),
        &mut as_user(
            user,
            &pg_ctl,
            &["-D", &d, "-o", &opts, "-l", &log, "-w", "start"],
        ),
    )?;
    if !answers(SocketAddr::from(([127, 0, 0, 1], port))) {
        bail!("the throwaway PostgreSQL did not start; see {log}");
    }
    Ok(pg)
}
