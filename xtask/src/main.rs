//! `cargo xtask plugins` builds the Rust plugin components; `cargo xtask polyglot` the Python
//! and JavaScript ones; `cargo xtask guides` runs the author guides' commands
//! (`docs/guides/`) in temporary folders; `cargo xtask demo` builds the plugins and `spool`,
//! then runs `spool demo`.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    let result = match task.as_deref() {
        Some("plugins") => xtask::build_plugins().map(|dir| {
            println!("plugins built in {}", dir.display());
        }),
        Some("polyglot") => xtask::build_python_plugin()
            .and_then(|py| Ok((py, xtask::build_js_plugin()?)))
            .map(|(py, js)| println!("built {} and {}", py.display(), js.display())),
        Some("guides") => xtask::guides::run_all().map(|ran| {
            for guide in ran {
                println!("{guide}: ok");
            }
        }),
        Some("demo") => demo(),
        _ => Err("usage: cargo xtask <plugins|polyglot|guides|demo>".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo() -> Result<(), String> {
    let plugins = xtask::build_plugins()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let built = Command::new(&cargo)
        .current_dir(xtask::root())
        .args(["build", "--quiet", "--release", "--bin", "spool"])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !built.success() {
        return Err("building spool failed".to_owned());
    }
    let spool = xtask::root().join("target/release/spool");
    let status = Command::new(&spool)
        .current_dir(xtask::root())
        .arg("demo")
        .arg("--plugins")
        .arg(&plugins)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", spool.display()))?;
    if status.success() {
        println!(
            "\n(`spool` is at {}; add it to your PATH or call it by that path.)",
            spool.display()
        );
        Ok(())
    } else {
        Err(format!("the demo failed ({status})"))
    }
}
