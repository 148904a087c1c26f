//! `spool plugin check`: what a plugin file is, or why it is refused.

use std::path::PathBuf;
use std::process::ExitCode;

use super::cache::CacheArgs;
use spool::{Limits, Sandbox, SandboxConfig};

#[derive(clap::Subcommand)]
pub enum PluginCommand {
    /// Print a plugin's digest, world and imports, or why the file is refused.
    Check {
        /// The plugin component (`.wasm`).
        plugin: PathBuf,
        /// Print one JSON object instead of text (README: "JSON output").
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cache: &CacheArgs, command: PluginCommand) -> anyhow::Result<ExitCode> {
    let PluginCommand::Check { plugin: path, json } = command;
    let sandbox = Sandbox::new(SandboxConfig {
        concurrency: 1,
        ..SandboxConfig::default()
    })?;
    let sandbox = cache.apply(sandbox);
    match sandbox.load_plugin(&path, Limits::default()) {
        Ok(plugin) => {
            let info = plugin.info();
            if json {
                let mut value = serde_json::to_value(info)?;
                if let Some(object) = value.as_object_mut() {
                    object.insert("ok".to_owned(), true.into());
                }
                outln!("{value}");
            } else {
                outln!("{}: ok", path.display());
                outln!("  digest   {}", info.digest);
                outln!("  size     {} bytes", info.size);
                outln!("  world    {}", info.world);
                outln!("  exports  {}", info.exports.join(", "));
                outln!("  imports");
                for import in &info.imports {
                    outln!("    {:<48} {}", import.name, import.grant);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if json {
                let value = serde_json::json!({
                    "ok": false,
                    "path": path,
                    "error": e.to_string(),
                });
                outln!("{value}");
            } else {
                eprintln!("error: {} refused: {e}", path.display());
            }
            Ok(ExitCode::from(2))
        }
    }
}
