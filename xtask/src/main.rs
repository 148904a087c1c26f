//! `cargo xtask plugins` builds the plugin components; `cargo xtask demo` builds them and runs
//! the `email` demo job in each of its modes through `spool exec`.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    let result = match task.as_deref() {
        Some("plugins") => xtask::build_plugins().map(|dir| {
            println!("plugins built in {}", dir.display());
        }),
        Some("demo") => demo(),
        _ => Err("usage: cargo xtask <plugins|demo>".to_owned()),
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
    let email = xtask::plugin("email")?;
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
    let runs: &[(&str, &str, &[&str])] = &[
        (
            "ok: succeeds first time",
            r#"{"to":"ada@example.com","mode":"ok"}"#,
            &[],
        ),
        (
            "flaky, attempt 1: a retryable error",
            r#"{"to":"ada@example.com","mode":"flaky"}"#,
            &["--attempt", "1"],
        ),
        (
            "flaky, attempt 2: succeeds",
            r#"{"to":"ada@example.com","mode":"flaky"}"#,
            &["--attempt", "2"],
        ),
        (
            "fail: a retryable error on every attempt",
            r#"{"to":"ada@example.com","mode":"fail"}"#,
            &[],
        ),
        (
            "reject: a permanent error",
            r#"{"to":"nobody","mode":"reject"}"#,
            &[],
        ),
        (
            "hang: sleeps 8 s, aborted at its 5 s timeout",
            r#"{"to":"ada@example.com","mode":"hang"}"#,
            &["--timeout", "5s"],
        ),
    ];
    for (title, payload, extra) in runs {
        println!(
            "\n== email {title}\n$ spool exec email.wasm --payload '{payload}' {}",
            extra.join(" ")
        );
        let status = Command::new(&spool)
            .arg("exec")
            .arg(&email)
            .args(["--payload", payload])
            .args(*extra)
            .status()
            .map_err(|e| format!("cannot run {}: {e}", spool.display()))?;
        println!("(exit status {})", status.code().unwrap_or(-1));
    }
    println!(
        "\nTry `spool plugin check {}` to see what the plugin imports.",
        email.display()
    );
    Ok(())
}
