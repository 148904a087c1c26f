//! Runs the plugin author guides (`docs/guides/*.md`) as written, so their commands cannot rot.
//!
//! A guide marks what a reader types and writes with the fenced blocks' info strings:
//!
//! - ```` ```sh step ```` is a command the reader runs (a guide has at most [`MAX_STEPS`]);
//! - ```` ```<lang> file=<path> ```` is a file the reader writes, shown in full.
//!
//! [`run`] turns the marked blocks, in order, into one shell script (each file block becomes a
//! `cat > path` of its text) and runs it with `sh -eu` in a new empty folder (each step is
//! one line, and the script exits at the first that fails), as a reader
//! would in one terminal: a `cd` in one step holds for the next. Other fenced blocks are prose.
//! The script gets `SPOOL_REPO` (this repository: where the WIT and the Rust SDK are) and finds
//! `spool` on its `PATH`; the guides tell the reader to set up both the same way.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The most commands a guide may ask a reader to type.
pub const MAX_STEPS: usize = 5;

/// The guides, by file name under `docs/guides/`.
pub const GUIDES: &[&str] = &["rust.md", "python.md", "javascript.md"];

/// One marked block of a guide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// A command to run.
    Step(String),
    /// A file to write.
    File {
        /// Its path, relative to the folder the commands run in at that point.
        path: String,
        /// Its text.
        text: String,
    },
}

/// The marked blocks of `markdown`, in order.
pub fn parse(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| l.trim_start() != "```")
            .collect();
        let text = body.join("\n") + "\n";
        let mut words = info.split_whitespace();
        let lang = words.next().unwrap_or("");
        for word in words {
            if lang == "sh" && word == "step" {
                blocks.push(Block::Step(text.clone()));
            } else if let Some(path) = word.strip_prefix("file=") {
                blocks.push(Block::File {
                    path: path.to_owned(),
                    text: text.clone(),
                });
            }
        }
    }
    blocks
}

/// The shell script that does what `blocks` say.
pub fn script(blocks: &[Block]) -> String {
    let mut script = String::new();
    for block in blocks {
        match block {
            // `sh -e` does not stop at a failure inside `a && b`: the exit does.
            Block::Step(command) => {
                script.push_str(command.trim_end());
                script.push_str(" || exit $?\n");
            }
            Block::File { path, text } => {
                let quoted = path.replace('\'', r"'\''");
                script.push_str(&format!(
                    "mkdir -p \"$(dirname '{quoted}')\"\ncat > '{quoted}' <<'SPOOL_GUIDE_EOF'\n{text}SPOOL_GUIDE_EOF\n"
                ));
            }
        }
    }
    script
}

/// What a guide's run printed.
#[derive(Debug, Clone)]
pub struct Ran {
    /// Standard output of all its commands.
    pub stdout: String,
    /// Standard error of all its commands (with `sh -x`'s trace).
    pub stderr: String,
}

/// Run guide `name` (e.g. `python.md`) in a new temporary folder, with the `spool` binary at
/// `spool` and the variables `env` set. Fails naming the guide, with everything it printed,
/// when a command fails.
pub fn run(name: &str, spool: &Path, env: &[(&str, &Path)]) -> Result<Ran, String> {
    // The Rust guide builds a plugin.
    crate::target::ensure_wasm_target()?;
    let path = crate::root().join("docs/guides").join(name);
    let markdown = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let blocks = parse(&markdown);
    let steps = blocks
        .iter()
        .filter(|b| matches!(b, Block::Step(_)))
        .count();
    if steps == 0 || steps > MAX_STEPS {
        return Err(format!(
            "{name} has {steps} `sh step` blocks; a guide has 1 to {MAX_STEPS}"
        ));
    }
    if let Some(Block::Step(long)) = blocks
        .iter()
        .find(|b| matches!(b, Block::Step(c) if c.trim_end().contains('\n')))
    {
        return Err(format!(
            "{name}: a step is one command on one line, not {long:?}"
        ));
    }
    let tmp = tempfile::tempdir().map_err(|e| format!("cannot make a temporary folder: {e}"))?;
    // An empty folder with an ordinary name (npm derives a package name from it).
    let dir = tmp.path().join("my-plugin");
    std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let bin = spool
        .parent()
        .ok_or_else(|| format!("no folder in {}", spool.display()))?;
    let path_var = std::env::join_paths(std::iter::once(bin.to_path_buf()).chain(
        std::env::var_os("PATH").map_or_else(Vec::new, |p| {
            std::env::split_paths(&p).collect::<Vec<PathBuf>>()
        }),
    ))
    .map_err(|e| format!("bad PATH: {e}"))?;
    let mut sh = Command::new("sh");
    // The folder is outside this repository, so its `rust-toolchain.toml` (the toolchain CI
    // installs the wasm target for) would not apply there on its own.
    if std::env::var_os("RUSTUP_TOOLCHAIN").is_none()
        && let Some(channel) = toolchain_channel()
    {
        sh.env("RUSTUP_TOOLCHAIN", channel);
    }
    let out = sh
        .args(["-eux", "-c", &script(&blocks)])
        .current_dir(&dir)
        .env("PATH", path_var)
        .env("SPOOL_REPO", crate::root())
        .envs(env.iter().copied())
        // A guide starts from a clean environment, not from the test's cargo.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_MANIFEST_DIR")
        .output()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    let ran = Ran {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if out.status.success() {
        Ok(ran)
    } else {
        Err(format!(
            "guide {name} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status, ran.stdout, ran.stderr
        ))
    }
}

/// The `channel` of this repository's `rust-toolchain.toml`.
pub(crate) fn toolchain_channel() -> Option<String> {
    let toml = std::fs::read_to_string(crate::root().join("rust-toolchain.toml")).ok()?;
    toml.lines().find_map(|line| {
        let value = line
            .trim()
            .strip_prefix("channel")?
            .trim()
            .strip_prefix('=')?;
        Some(value.trim().trim_matches('"').to_owned())
    })
}

/// Build `spool` (release) and run every guide with it; the names of the guides that ran.
pub fn run_all() -> Result<Vec<String>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let built = Command::new(&cargo)
        .current_dir(crate::root())
        .args(["build", "--quiet", "--release", "--bin", "spool"])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !built.success() {
        return Err("building spool failed".to_owned());
    }
    let spool = crate::root().join("target/release/spool");
    GUIDES
        .iter()
        .map(|g| run(g, &spool, &[]).map(|_| (*g).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_files_are_read_in_order_and_other_blocks_skipped() {
        let md = "# G\n```sh step\necho one\n```\ntext\n```sh\nnot run\n```\n\
                  ```python file=app.py\nprint('hi')\n```\n```sh step\ncat app.py\n```\n";
        assert_eq!(
            parse(md),
            vec![
                Block::Step("echo one\n".to_owned()),
                Block::File {
                    path: "app.py".to_owned(),
                    text: "print('hi')\n".to_owned()
                },
                Block::Step("cat app.py\n".to_owned()),
            ]
        );
        let script = script(&parse(md));
        assert!(
            script.contains("cat > 'app.py' <<'SPOOL_GUIDE_EOF'\nprint('hi')\nSPOOL_GUIDE_EOF\n")
        );
        assert!(!script.contains("not run"));
    }

    #[test]
    fn every_guide_fits_in_five_commands() {
        for name in GUIDES {
            let md = std::fs::read_to_string(crate::root().join("docs/guides").join(name))
                .unwrap_or_default();
            let steps = parse(&md)
                .iter()
                .filter(|b| matches!(b, Block::Step(_)))
                .count();
            assert!((1..=MAX_STEPS).contains(&steps), "{name}: {steps} steps");
        }
    }
}
