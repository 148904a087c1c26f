//! The `wasm32-wasip2` target the plugins build for, added to the toolchain when it is missing.
//!
//! rustup installs the targets `rust-toolchain.toml` lists when it installs the toolchain, but
//! not for a toolchain that was already there without them, nor at all when it is set not to
//! install anything by itself (`RUSTUP_AUTO_INSTALL=0`). Then the plugins' build would fail
//! with "can't find crate for `std`", so every build of the plugins checks first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The target the plugins build for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// Add [`WASM_TARGET`] to the toolchain that builds the plugins when it is missing, saying so
/// in one line on stderr (checked once per process).
///
/// The toolchain is the one cargo uses in `plugins/`: `RUSTUP_TOOLCHAIN` when it is set,
/// else the `channel` of `rust-toolchain.toml`. A toolchain that cannot even be asked for its
/// sysroot is left for cargo to report.
pub fn ensure_wasm_target() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = crate::root().join("plugins");
        let Some(sysroot) = sysroot(&dir) else {
            return Ok(());
        };
        if has_target(&sysroot) {
            return Ok(());
        }
        add_target(&dir, toolchain().as_deref())
    })
    .clone()
}

/// Whether the toolchain at `sysroot` has the standard library for [`WASM_TARGET`].
pub fn has_target(sysroot: &Path) -> bool {
    sysroot
        .join("lib/rustlib")
        .join(WASM_TARGET)
        .join("lib")
        .is_dir()
}

/// The toolchain to name to rustup: `RUSTUP_TOOLCHAIN`, else `rust-toolchain.toml`'s channel.
pub fn toolchain() -> Option<String> {
    std::env::var("RUSTUP_TOOLCHAIN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(crate::guides::toolchain_channel)
}

/// The sysroot of the `rustc` cargo runs in `dir` (`RUSTC`, else `rustc` on the PATH).
fn sysroot(dir: &Path) -> Option<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .current_dir(dir)
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let path = String::from_utf8(out.stdout).ok()?;
    Some(PathBuf::from(path.trim()))
}

/// `rustup target add WASM_TARGET [--toolchain TOOLCHAIN]`, run in `dir`.
fn add_target(dir: &Path, toolchain: Option<&str>) -> Result<(), String> {
    eprintln!(
        "adding the {WASM_TARGET} target to the {} toolchain (rustup target add {WASM_TARGET})",
        toolchain.unwrap_or("active")
    );
    let mut rustup = Command::new("rustup");
    rustup
        .current_dir(dir)
        .args(["--quiet", "target", "add", WASM_TARGET]);
    if let Some(toolchain) = toolchain {
        rustup.args(["--toolchain", toolchain]);
    }
    let status = rustup.status().map_err(|e| {
        format!(
            "the {WASM_TARGET} target is not installed and rustup cannot be run ({e}): \
             install the target for your Rust toolchain"
        )
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`rustup target add {WASM_TARGET}` failed ({status}); the plugins build for that target"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sysroot_without_the_wasm_standard_library_lacks_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("lib/rustlib/x86_64-unknown-linux-gnu/lib");
        std::fs::create_dir_all(&host).unwrap();
        assert!(!has_target(dir.path()));
        // A folder without the library in it is not the target.
        let wasm = dir.path().join("lib/rustlib").join(WASM_TARGET);
        std::fs::create_dir_all(&wasm).unwrap();
        assert!(!has_target(dir.path()));
        std::fs::create_dir_all(wasm.join("lib")).unwrap();
        assert!(has_target(dir.path()));
    }

    #[test]
    fn the_toolchain_that_builds_the_plugins_has_the_target_after_the_check() {
        ensure_wasm_target().unwrap();
        let sysroot = sysroot(&crate::root().join("plugins")).unwrap();
        assert!(has_target(&sysroot), "{}", sysroot.display());
    }
}
