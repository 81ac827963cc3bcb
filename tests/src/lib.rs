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
