//! Build helpers shared by `cargo xtask`, the integration tests and the benchmarks.
//!
//! The plugins in `plugins/` are guests: they build for `wasm32-wasip2` in a cargo workspace
//! of their own with its own target directory. They are built by running cargo from here
//! rather than from a `build.rs`, so the host build never runs cargo inside cargo (which would
//! fight over the target directory's lock) and `cargo build` of the host stays fast.

pub mod nats_server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository's root directory.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Where the built plugin components land.
pub fn plugin_dir() -> PathBuf {
    root().join("plugins/target/wasm32-wasip2/release")
}

/// Build every plugin in `plugins/` (once per process) and return the directory holding the
/// `.wasm` files.
pub fn build_plugins() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let manifest = root().join("plugins/Cargo.toml");
            let status = Command::new(cargo)
                .current_dir(root().join("plugins"))
                .args([
                    "build",
                    "--release",
                    "--target",
                    "wasm32-wasip2",
                    "--manifest-path",
                ])
                .arg(&manifest)
                // The plugins have their own target directory; never the host's.
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("CARGO_BUILD_TARGET")
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .status()
                .map_err(|e| format!("cannot run cargo to build the plugins: {e}"))?;
            if status.success() {
                Ok(plugin_dir())
            } else {
                Err(format!("building the plugins failed ({status})"))
            }
        })
        .clone()
}

/// The path of the built plugin `name` (building the plugins first if needed).
pub fn plugin(name: &str) -> Result<PathBuf, String> {
    Ok(build_plugins()?.join(format!("{name}.wasm")))
}
