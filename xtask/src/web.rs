//! `cargo xtask build-web`: compiles the volunteer client to wasm32 and generates its JS glue
//! with wasm-bindgen as a library, the exact version Cargo.lock pins for the client, twice:
//! `web/pkg/` (git-ignored) with the benchmark's export (`bench browser`, Dawn in tests, the
//! GPU probe), and `web/pkg/volunteer/`, what the volunteer page downloads, within the budget;
//! and the science page's proof-bundle verifier (`verify-wasm`) into `web/pkg/verify/`.

use anyhow::{Context, Result, bail};
use std::io::Write;

/// What a volunteer downloads before computing: the client wasm, gzipped, at most this.
const GZIP_BUDGET: usize = 150_000;

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
    // The benchmark's build first: the volunteer's is the one left in target/ for twiggy.
    bindgen(&["--features", "bench"], "web/pkg", None)?;
    bindgen(&[], "web/pkg/volunteer", Some(GZIP_BUDGET))?;
    verifier()
}

/// The science page's verifier: `transparency::verify_bundle` as its own module, loaded only
/// when a scientist checks receipts (its size is no volunteer's download).
fn verifier() -> Result<()> {
    crate::run(
        "cargo build (wasm32 verifier)",
        crate::cargo().args([
            "build",
            "-q",
            "-p",
            "verify-wasm",
            "--lib",
            "--target",
            "wasm32-unknown-unknown",
            "--profile",
            "wasm-release",
        ]),
    )?;
    let dir = "web/pkg/verify";
    let out = glue("verify_wasm", dir)?;
    let wasm = std::fs::read(out.join("verify_wasm_bg.wasm"))?;
    println!(
        "{}",
        serde_json::json!({"build": dir, "wasm_bytes": wasm.len(), "wasm_gzip_bytes": gzipped(&wasm)?})
    );
    Ok(())
}

/// Generates the JS glue of the wasm32 build of `lib` (a crate's library name) into `dir`.
fn glue(lib: &str, dir: &str) -> Result<std::path::PathBuf> {
    let input = crate::root().join(format!(
        "target/wasm32-unknown-unknown/wasm-release/{lib}.wasm"
    ));
    let out = crate::root().join(dir);
    std::fs::create_dir_all(&out)?;
    eprintln!("==> wasm-bindgen {BINDGEN} → {dir}");
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&input)
        .web(true)?
        .omit_default_module_path(false)
        // Function names for debuggers only: they were 30% of the shipped file.
        .remove_name_section(true)
        .remove_producers_section(true)
        .generate(&out)
        .map_err(|e| anyhow::anyhow!("wasm-bindgen: {e}"))?;
    Ok(out)
}

fn gzipped(bytes: &[u8]) -> Result<usize> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes)?;
    Ok(gz.finish()?.len())
}

/// Builds the client with `features` and generates its glue into `dir`; with a budget, fails
/// if the wasm gzipped is over it.
fn bindgen(features: &[&str], dir: &str, budget: Option<usize>) -> Result<()> {
    crate::run(
        &format!(
            "cargo build (wasm32 client{})",
            features.join(" ").replace("--features", ",")
        ),
        crate::cargo()
            .args([
                "build",
                "-q",
                "-p",
                "client-wasm",
                "--lib",
                "--target",
                "wasm32-unknown-unknown",
                "--profile",
                "wasm-release",
            ])
            .args(features),
    )?;
    let out = glue("client_wasm", dir)?;
    minify_imports(&out)?;
    let wasm = std::fs::read(out.join("client_wasm_bg.wasm"))?;
    let gz = gzipped(&wasm)?;
    println!(
        "{}",
        serde_json::json!({"build": dir, "wasm_bytes": wasm.len(), "wasm_gzip_bytes": gz, "budget_gzip_bytes": budget})
    );
    if let Some(budget) = budget
        && gz > budget
    {
        bail!(
            "{dir}/client_wasm_bg.wasm is {gz} bytes gzipped, over the {budget}-byte budget: see what takes the space with `twiggy top target/wasm32-unknown-unknown/wasm-release/client_wasm.wasm` and cut it"
        );
    }
    Ok(())
}

/// Renames the wasm's imports from its JS glue (`__wbg_getMappedRange_0e8a…`, 260 of them) to
/// short names, in the wasm's import section and the glue's import object alike: their names
/// were a twentieth of the gzipped download (binaryen's MinifyImportsAndExports does the same
/// for emscripten). Every renamed key must occur exactly once in the glue, or nothing changes.
fn minify_imports(dir: &std::path::Path) -> Result<()> {
    let wasm_path = dir.join("client_wasm_bg.wasm");
    let js_path = dir.join("client_wasm.js");
    let wasm = std::fs::read(&wasm_path)?;
    let mut js = std::fs::read_to_string(&js_path)?;
    let glue_module: &[u8] = b"./client_wasm_bg.js";
    let (start, end) = section(&wasm, 2).context("the wasm has no import section")?;
    let mut at = start;
    let count = leb(&wasm, &mut at)?;
    let mut imports = Vec::new();
    leb_write(&mut imports, count);
    for i in 0..count {
        let module = name(&wasm, &mut at)?;
        let field = name(&wasm, &mut at)?;
        let desc_start = at;
        skip_import_desc(&wasm, &mut at)?;
        let field = if module == glue_module {
            let old = std::str::from_utf8(field).context("import name")?;
            let new = short_name(i);
            let key = format!("{old}:");
            if js.matches(&key).count() != 1 || js.contains(&format!("{new}:")) {
                bail!("minify_imports: `{old}` is not one key of the glue's imports");
            }
            js = js.replacen(&key, &format!("{new}:"), 1);
            new.into_bytes()
        } else {
            field.to_vec()
        };
        leb_write(&mut imports, module.len() as u64);
        imports.extend_from_slice(module);
        leb_write(&mut imports, field.len() as u64);
        imports.extend_from_slice(&field);
        imports.extend_from_slice(&wasm[desc_start..at]);
    }
    if at != end {
        bail!("minify_imports: the import section did not parse to its end");
    }
    // The section's header (id and size) starts before `start`; rebuild it around the new body.
    let mut header_start = start - 1;
    while wasm[header_start - 1] & 0x80 != 0 {
        header_start -= 1;
    }
    header_start -= 1; // the section id
    let mut out = wasm[..header_start].to_vec();
    out.push(2);
    leb_write(&mut out, imports.len() as u64);
    out.extend_from_slice(&imports);
    out.extend_from_slice(&wasm[end..]);
    std::fs::write(&wasm_path, out)?;
    std::fs::write(&js_path, js)?;
    Ok(())
}

/// `q0`, `q1`, …, `qZ`, `q10`, …: unique, and not a word of the glue.
fn short_name(i: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut n = i;
    let mut s = Vec::new();
    loop {
        s.push(DIGITS[(n % 62) as usize]);
        n /= 62;
        if n == 0 {
            break;
        }
    }
    s.push(b'q');
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

/// The body (start, end) of the first section with id `id`.
fn section(wasm: &[u8], id: u8) -> Result<(usize, usize)> {
    if wasm.get(..8) != Some(b"\0asm\x01\0\0\0".as_slice()) {
        bail!("not a wasm module");
    }
    let mut at = 8;
    while at < wasm.len() {
        let sid = wasm[at];
        at += 1;
        let len = leb(wasm, &mut at)? as usize;
        if sid == id {
            return Ok((at, at + len));
        }
        at += len;
    }
    bail!("no section {id}")
}

fn leb(b: &[u8], at: &mut usize) -> Result<u64> {
    let (mut value, mut shift) = (0u64, 0);
    loop {
        let byte = *b.get(*at).context("truncated wasm")?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
    }
}

fn leb_write(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn name<'a>(b: &'a [u8], at: &mut usize) -> Result<&'a [u8]> {
    let len = leb(b, at)? as usize;
    let s = b.get(*at..*at + len).context("truncated wasm")?;
    *at += len;
    Ok(s)
}

fn limits(b: &[u8], at: &mut usize) -> Result<()> {
    let flags = *b.get(*at).context("truncated wasm")?;
    *at += 1;
    leb(b, at)?;
    if flags & 1 != 0 {
        leb(b, at)?;
    }
    Ok(())
}

/// Skips an import's description: a function's type index, a table, a memory or a global.
fn skip_import_desc(b: &[u8], at: &mut usize) -> Result<()> {
    let kind = *b.get(*at).context("truncated wasm")?;
    *at += 1;
    match kind {
        0 => {
            leb(b, at)?;
        }
        1 => {
            *at += 1; // element type
            limits(b, at)?;
        }
        2 => limits(b, at)?,
        3 => *at += 2, // value type, mutability
        other => bail!("unknown import kind {other}"),
    }
    Ok(())
}
