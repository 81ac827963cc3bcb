//! Debian packages the tests need, installed with apt-get when run as root on Debian, or
//! named exactly when they cannot be installed from here.

use anyhow::{Result, bail};
use std::path::Path;
use std::process::Command;

pub struct Need {
    pub what: &'static str,
    /// Files any one of which shows the need is met.
    pub present_if_any: &'static [&'static str],
    pub packages: &'static [&'static str],
}

/// Vulkan loader plus Mesa's lavapipe (a CPU Vulkan device) for GPU tests without a GPU.
pub const GPU: [Need; 2] = [
    Need {
        what: "the Vulkan loader",
        present_if_any: &[
            "/usr/lib/x86_64-linux-gnu/libvulkan.so.1",
            "/usr/lib/aarch64-linux-gnu/libvulkan.so.1",
            "/usr/lib/libvulkan.so.1",
            "/usr/lib64/libvulkan.so.1",
        ],
        packages: &["libvulkan1"],
    },
    Need {
        what: "Mesa's Vulkan drivers (lavapipe)",
        present_if_any: &[
            "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json",
            "/usr/share/vulkan/icd.d/lvp_icd.aarch64.json",
            "/usr/share/vulkan/icd.d/lvp_icd.json",
        ],
        packages: &["mesa-vulkan-drivers"],
    },
];

/// Headless Chromium and its WebDriver for the browser end-to-end tests.
pub const BROWSER: [Need; 2] = [
    Need {
        what: "Chromium",
        present_if_any: &["/usr/bin/chromium"],
        packages: &["chromium"],
    },
    Need {
        what: "ChromeDriver",
        present_if_any: &["/usr/bin/chromedriver"],
        packages: &["chromium-driver"],
    },
];

/// Node.js runs Dawn (Chromium's WebGPU engine, npm package `webgpu`) for the third-engine test;
/// Dawn itself runs on Chromium's SwiftShader (see [`BROWSER`]).
pub const NODE: [Need; 1] = [Need {
    what: "Node.js and npm",
    present_if_any: &["/usr/bin/npm", "/usr/local/bin/npm"],
    packages: &["nodejs", "npm"],
}];

/// Go and its x/mod module (sumdb note and tlog, Go's reference transparency-log code) for the
/// interop test `coordinator/tests/go_interop.rs`; from Debian, no Go module proxy needed.
pub const GO: [Need; 1] = [Need {
    what: "Go's x/mod (sumdb/tlog, sumdb/note)",
    present_if_any: &["/usr/share/gocode/src/golang.org/x/mod/sumdb/tlog"],
    packages: &["golang-go", "golang-golang-x-mod-dev"],
}];

/// PostgreSQL for the conformance suite and the multi-coordinator test, when no server is
/// at hand (see `pg.rs`).
pub const POSTGRES: [Need; 1] = [Need {
    what: "PostgreSQL",
    present_if_any: &["/usr/lib/postgresql"],
    packages: &["postgresql"],
}];

/// Installs `tests/dawn`'s npm packages (Dawn for node) from its lockfile when they are missing.
pub fn ensure_dawn() -> Result<()> {
    let dir = crate::root().join("tests/dawn");
    if dir.join("node_modules/webgpu/package.json").exists() {
        return Ok(());
    }
    crate::run(
        "npm ci (Dawn for node, tests/dawn)",
        Command::new("npm").current_dir(&dir).args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
        ]),
    )
}

/// Biome, the JavaScript linter, at the version `xtask/biome/package-lock.json` pins.
pub fn ensure_biome() -> Result<std::path::PathBuf> {
    let dir = crate::root().join("xtask/biome");
    let bin = dir.join("node_modules/@biomejs/biome/bin/biome");
    if !bin.exists() {
        crate::run(
            "npm ci (Biome, xtask/biome)",
            Command::new("npm").current_dir(&dir).args([
                "ci",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
            ]),
        )?;
    }
    Ok(bin)
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn ensure(needs: &[Need]) -> Result<()> {
    ensure_all(&needs.iter().collect::<Vec<_>>())
}

/// Installs whatever of `needs` is missing, in one apt-get run.
pub fn ensure_all(needs: &[&Need]) -> Result<()> {
    let missing: Vec<&Need> = needs
        .iter()
        .copied()
        .filter(|n| !n.present_if_any.iter().any(|p| Path::new(p).exists()))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing
        .iter()
        .flat_map(|n| n.packages.iter().copied())
        .collect();
    let what: Vec<&str> = missing.iter().map(|n| n.what).collect();
    let apt = Path::new("/usr/bin/apt-get").exists();
    if !(apt && is_root()) {
        bail!(
            "missing {}: install the Debian packages `{}` (e.g. `sudo apt-get install {}`), then run again",
            what.join(" and "),
            packages.join(" "),
            packages.join(" ")
        );
    }
    eprintln!(
        "==> installing {} ({})",
        packages.join(" "),
        what.join(", ")
    );
    crate::run(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )?;
    crate::run(
        "apt-get install",
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&packages),
    )?;
    Ok(())
}

/// The wasm32 standard library for the browser client. rust-toolchain.toml names the target,
/// but rustup only installs it with a fresh toolchain, so add it when it is missing.
pub fn ensure_wasm_target() -> Result<()> {
    const TARGET: &str = "wasm32-unknown-unknown";
    let installed = Command::new("rustup")
        .current_dir(crate::root())
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(o)
            if String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TARGET) =>
        {
            Ok(())
        }
        Ok(_) => crate::run(
            "rustup target add wasm32-unknown-unknown",
            Command::new("rustup")
                .current_dir(crate::root())
                .args(["target", "add", TARGET]),
        ),
        Err(_) => {
            bail!("rustup not found: install the `{TARGET}` standard library for this toolchain")
        }
    }
}
