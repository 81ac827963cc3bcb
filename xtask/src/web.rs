//! `cargo xtask build-web`: compiles the volunteer client to wasm32 and generates its JS glue
//! into `web/pkg/` (git-ignored) with wasm-bindgen as a library, the exact version Cargo.lock
//! pins for the client.

use anyhow::{Context, Result, bail};
use std::io::Write;

/// The wasm-bindgen version this xtask was built with (see xtask/Cargo.toml).
const BINDGEN: &str = "0.2.130";

fn locked_wasm_bindgen() -> Result<String> {
    let lock = std::fs::read_to_string(crate::root().join("Cargo.lock")).context("Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l == "name = \"wasm-bindgen\""
            && let Some(v) = lines.next().and_then(|v| v.strip_prefix("version = \""))
        {
            return Ok(v.trim_end_matches('"').to_owned());
        }
    }
    bail!("wasm-bindgen is not in Cargo.lock")
}

pub fn build() -> Result<()> {
    crate::deps::ensure_wasm_target()?;
    let locked = locked_wasm_bindgen()?;
    if locked != BINDGEN {
        bail!(
            "Cargo.lock has wasm-bindgen {locked} but xtask generates glue with {BINDGEN}: pin both to the same version"
        );
    }
    crate::run(
        "cargo build (wasm32 client)",
        crate::cargo().args([
            "build",
            "-q",
            "-p",
            "client-wasm",
            "--lib",
            "--target",
            "wasm32-unknown-unknown",
            "--profile",
            "wasm-release",
        ]),
    )?;
    let input = crate::root().join("target/wasm32-unknown-unknown/wasm-release/client_wasm.wasm");
    let out = crate::root().join("web/pkg");
    std::fs::create_dir_all(&out)?;
    eprintln!("==> wasm-bindgen {BINDGEN} → web/pkg");
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&input)
        .web(true)?
        .omit_default_module_path(false)
        // Function names for debuggers only: they were 30% of the shipped file.
        .remove_name_section(true)
        .remove_producers_section(true)
        .generate(&out)
        .map_err(|e| anyhow::anyhow!("wasm-bindgen: {e}"))?;
    let wasm = std::fs::read(out.join("client_wasm_bg.wasm"))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&wasm)?;
    let gz = gz.finish()?;
    println!(
        "{}",
        serde_json::json!({"build": "web", "wasm_bytes": wasm.len(), "wasm_gzip_bytes": gz.len()})
    );
    Ok(())
}
