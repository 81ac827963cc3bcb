//! Helpers shared by the cross-crate tests.

pub mod browser;

use client_wasm::Gpu;
use std::sync::OnceLock;

/// The test process's GPU (lavapipe in CI), opened once. A missing adapter fails the test:
/// `cargo xtask test` installs Mesa's Vulkan drivers, so no GPU means a broken setup, not a skip.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        // Lavapipe needs a writable runtime dir; keep the GL backend out of it.
        if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
            let dir = std::env::temp_dir().join("qg-xdg");
            let _ = std::fs::create_dir_all(&dir);
            // SAFETY: set once, before any thread of this process reads the environment.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", dir) };
        }
        pollster::block_on(Gpu::new()).unwrap_or_else(|e| {
            panic!("{e}. Install Mesa's Vulkan drivers (apt-get install mesa-vulkan-drivers libvulkan1) or run `cargo xtask test`.")
        })
    })
}

/// An example package of `examples/kernels/`, checked.
pub fn example_package(name: &str) -> std::sync::Arc<shaders::package::Package> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/kernels")
        .join(name);
    let files = shaders::package::read_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    std::sync::Arc::new(
        shaders::package::Package::from_files(files).unwrap_or_else(|e| panic!("{name}: {e}")),
    )
}

/// A package from its three texts, checked.
pub fn package_from(
    manifest: &str,
    wgsl: &str,
) -> Result<std::sync::Arc<shaders::package::Package>, shaders::package::PackageError> {
    shaders::package::Package::from_files(shaders::package::PackageFiles {
        manifest: manifest.to_owned(),
        wgsl: wgsl.to_owned(),
        view: None,
    })
    .map(std::sync::Arc::new)
}
