//! `spool plugin check`: what a plugin file is, or why it is refused.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use super::cache::CacheArgs;
use super::store::StoreArgs;
use spool::{Grants, HttpGrant, HttpLimits, Limits, Sandbox, SandboxConfig};

#[derive(clap::Subcommand)]
pub enum PluginCommand {
    /// Print a plugin's digest, world and imports (and the grants they need), or why the file
    /// is refused.
    Check {
        /// The plugin component (`.wasm`).
        plugin: PathBuf,
        /// Check it against this queue's grants in the config (`--config`, or `spool.toml`):
        /// refused if it imports what the queue does not grant.
        #[arg(long)]
        queue: Option<String>,
        /// Print one JSON object instead of text (README: "JSON output").
        #[arg(long)]
        json: bool,
    },
}

pub fn run(
    store: &StoreArgs,
    cache: &CacheArgs,
    command: PluginCommand,
) -> anyhow::Result<ExitCode> {
    let PluginCommand::Check {
        plugin: path,
        queue,
        json,
    } = command;
    let grants = match &queue {
        Some(name) => {
            let config = store.config()?;
            let q = config
                .as_ref()
                .and_then(|c| c.queues.get(name))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown queue `{name}`: {} has no [queues.{name}] section",
                        store.config_path().display()
                    )
                })?;
            q.grants(name)
        }
        // No queue: every grant, with nothing behind it, to list what the plugin would need.
        None => Grants {
            granted_by: "plugin check".to_owned(),
            http: Some(Arc::new(HttpGrant {
                granted_by: "plugin check".to_owned(),
                patterns: Vec::new(),
                limits: HttpLimits::default(),
            })),
        },
    };
    let sandbox = Sandbox::new(SandboxConfig {
        concurrency: 1,
        ..SandboxConfig::default()
    })?;
    let sandbox = cache.apply(sandbox);
    match sandbox.load_plugin_with(&path, Limits::default(), grants) {
        Ok(plugin) => {
            let info = plugin.info();
            let mut needs: Vec<&str> = info
                .imports
                .iter()
                .filter_map(|i| i.grant.needs())
                .collect();
            needs.dedup();
            if json {
                let mut value = serde_json::to_value(info)?;
                if let Some(object) = value.as_object_mut() {
                    object.insert("ok".to_owned(), true.into());
                    object.insert("needs_grants".to_owned(), needs.clone().into());
                }
                outln!("{value}");
            } else {
                outln!("{}: ok", path.display());
                outln!("  digest   {}", info.digest);
                outln!("  size     {} bytes", info.size);
                outln!("  world    {}", info.world);
                outln!("  exports  {}", info.exports.join(", "));
                match (needs.is_empty(), &queue) {
                    (true, _) => outln!("  grants   none needed"),
                    (false, Some(q)) => {
                        outln!("  grants   {} (granted by queue `{q}`)", needs.join(", "))
                    }
                    (false, None) => outln!(
                        "  grants   {} (its queue must grant: [queues.<queue>.grants])",
                        needs.join(", ")
                    ),
                }
                outln!("  imports");
                for import in &info.imports {
                    match import.grant.needs() {
                        Some(grant) => outln!(
                            "    {:<48} {} (needs the `{grant}` grant)",
                            import.name,
                            import.grant
                        ),
                        None => outln!("    {:<48} {}", import.name, import.grant),
                    }
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
