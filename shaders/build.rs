//! Ships the kernels' WGSL without its comments and indentation (they are a third of the
//! browser client's download): every `src/**/*.wgsl` is copied into `OUT_DIR` minified, and
//! the crate includes those copies with [`wgsl!`](src/lib.rs). The sources stay the one
//! commented truth; line breaks are kept, so a compiler error still names a line.

use std::path::Path;

fn minify(text: &str) -> String {
    text.lines()
        .map(|l| l.split_once("//").map_or(l, |(code, _)| code).trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn walk(src: &Path, rel: &Path, out: &Path) {
    let Ok(entries) = std::fs::read_dir(src.join(rel)) else {
        return;
    };
    for e in entries.flatten() {
        let name = rel.join(e.file_name());
        let path = src.join(&name);
        if path.is_dir() {
            walk(src, &name, out);
        } else if path.extension().is_some_and(|x| x == "wgsl") {
            let text = std::fs::read_to_string(&path).expect("WGSL is UTF-8");
            let dest = out.join(&name);
            std::fs::create_dir_all(dest.parent().expect("a parent")).expect("OUT_DIR is writable");
            std::fs::write(dest, minify(&text)).expect("OUT_DIR is writable");
        }
    }
}

fn main() {
    println!("cargo:rerun-if-changed=src");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    walk(Path::new("src"), Path::new(""), Path::new(&out));
}
