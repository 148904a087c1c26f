//! Build helpers shared by `cargo xtask`, the integration tests and the benchmarks.
//!
//! The plugins in `plugins/` are guests: they build for `wasm32-wasip2` in a cargo workspace
//! of their own with its own target directory. They are built by running cargo from here
//! rather than from a `build.rs`, so the host build never runs cargo inside cargo (which would
//! fight over the target directory's lock) and `cargo build` of the host stays fast.
//!
//! The Python and JavaScript plugins (`plugins/python`, `plugins/javascript`) are built by
//! their own `build.sh`, which installs the pinned toolchain (a venv, `npm ci`) in the plugin's
//! folder on first use; [`build_python_plugin`] and [`build_js_plugin`] run it when an input is
//! newer than the component, so a test run pays the 20-30 s build once, not every time.

pub mod guides;
pub mod nats_server;
pub mod target;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

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
            target::ensure_wasm_target()?;
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

/// A plugin written in another language than Rust, built by its folder's `build.sh`.
struct Polyglot {
    /// The folder under `plugins/`.
    folder: &'static str,
    /// The component `build.sh` writes.
    output: &'static str,
    /// The files whose change calls for a rebuild, besides `build.sh` and `wit/`.
    inputs: &'static [&'static str],
    /// Commands the build needs, and what to tell someone who lacks them.
    needs: &'static [(&'static str, &'static str)],
}

const PYTHON: Polyglot = Polyglot {
    folder: "python",
    output: "email-py.wasm",
    inputs: &["app.py", "spool_http.py", "requirements.txt"],
    needs: &[(
        "python3",
        "install Python 3.10 or later with its venv module (Debian: python3-venv)",
    )],
};

const JAVASCRIPT: Polyglot = Polyglot {
    folder: "javascript",
    output: "email-js.wasm",
    inputs: &["email.js", "build.mjs", "package.json", "package-lock.json"],
    needs: &[
        ("node", "install Node.js 20 or later"),
        ("npm", "install npm (it comes with Node.js)"),
    ],
};

/// Build the Python plugin (`plugins/python`, componentize-py) if it is missing or stale, once
/// per process, and return the component's path.
pub fn build_python_plugin() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(|| build_polyglot(&PYTHON)).clone()
}

/// Build the JavaScript plugin (`plugins/javascript`, ComponentizeJS) if it is missing or
/// stale, once per process, and return the component's path.
pub fn build_js_plugin() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(|| build_polyglot(&JAVASCRIPT)).clone()
}

fn build_polyglot(lang: &Polyglot) -> Result<PathBuf, String> {
    let folder = root().join("plugins").join(lang.folder);
    let out_dir = root().join("plugins/target").join(lang.folder);
    let output = out_dir.join(lang.output);
    for (tool, advice) in lang.needs {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!(
                "`{tool}` not found on PATH, and plugins/{}/ needs it to build: {advice}",
                lang.folder
            ));
        }
    }
    let mut inputs: Vec<PathBuf> = lang.inputs.iter().map(|f| folder.join(f)).collect();
    inputs.push(folder.join("build.sh"));
    if let Ok(wit) = std::fs::read_dir(root().join("wit")) {
        inputs.extend(wit.flatten().map(|e| e.path()).filter(|p| p.is_file()));
    }
    let built_at = modified(&output);
    if built_at.is_some() && inputs.iter().all(|i| modified(i) <= built_at) {
        return Ok(output);
    }
    let status = Command::new("sh")
        .arg(folder.join("build.sh"))
        .arg(&out_dir)
        .status()
        .map_err(|e| format!("cannot run plugins/{}/build.sh: {e}", lang.folder))?;
    if status.success() && output.is_file() {
        Ok(output)
    } else {
        Err(format!(
            "plugins/{}/build.sh failed ({status}); its output is above",
            lang.folder
        ))
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
