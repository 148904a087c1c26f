//! `--cache-dir` / `--no-cache`: where the commands that load plugins keep them compiled.

use std::path::PathBuf;

use spool::{CompileCache, Sandbox};

/// The compile-cache flags, global to every command.
#[derive(clap::Args)]
pub struct CacheArgs {
    /// Keep compiled plugins in DIR, keyed by digest, so a restart does not compile them
    /// again [env: SPOOL_CACHE_DIR] [default: $XDG_CACHE_HOME/spool, else ~/.cache/spool]
    // The variable is read in `apply`, not by clap, which would show it in usage lines as if
    // it had been typed.
    #[arg(long, global = true, value_name = "DIR", help_heading = super::GLOBAL)]
    cache_dir: Option<PathBuf>,
    /// Compile plugins at every load; read and write no cache.
    #[arg(long, global = true, help_heading = super::GLOBAL)]
    no_cache: bool,
}

impl CacheArgs {
    /// `sandbox` with the cache these flags ask for.
    pub fn apply(&self, sandbox: Sandbox) -> Sandbox {
        let cache = if self.no_cache {
            None
        } else {
            self.cache_dir
                .clone()
                .or_else(|| std::env::var_os("SPOOL_CACHE_DIR").map(PathBuf::from))
                .filter(|d| !d.as_os_str().is_empty())
                .or_else(CompileCache::default_dir)
                .map(CompileCache::new)
        };
        sandbox.with_cache(cache)
    }
}
