//! The compiled-component cache: plugins compiled once are kept on disk, so that a restarted
//! worker (or the next `spool exec`) loads them in milliseconds instead of compiling again.
//!
//! A cache file is named after the plugin's digest (the sha-256 of its `.wasm`) and the
//! engine's key (a sha-256 of everything wasmtime says a compiled artifact depends on: its
//! version, the target, the compiler flags and the engine's tunables and features), so a
//! changed plugin, a new Spool build or another engine configuration never reads a stale file.
//! Each file holds a magic tag, the sha-256 of the compiled bytes and the bytes; a file that
//! is short, corrupt or refused by wasmtime is compiled again and replaced, never used. Files
//! are written to a temporary name and renamed into place, so a reader sees a whole file or
//! none, and two processes filling the cache at once do not see each other's halves.
//!
//! The directory is trusted as much as the `spool` binary itself: loading a compiled artifact
//! runs its machine code, so it must be writable only by the user running Spool (it is created
//! with mode 0700).
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use spool::{CompileCache, Limits, Sandbox, SandboxConfig};
//!
//! let sandbox = Sandbox::new(SandboxConfig::default())?
//!     .with_cache(CompileCache::default_dir().map(CompileCache::new));
//! let plugin = sandbox.load_plugin("email.wasm".as_ref(), Limits::default())?;
//! println!("{:?}", plugin.cache_status()); // Stored the first time, Hit afterwards
//! # Ok(()) }
//! ```

use std::hash::{Hash as _, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::Sandbox;
use super::plugin::{Digest, LoadError};

/// The first bytes of every cache file; bump the digit when the layout changes.
const MAGIC: &[u8; 8] = b"SPOOLCC1";
/// Magic, then the sha-256 of the compiled bytes.
const HEADER: usize = MAGIC.len() + 32;

/// Where compiled plugins are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// A cache in `dir`, created on first write.
    pub fn new(dir: PathBuf) -> Self {
        CompileCache { dir }
    }

    /// `$XDG_CACHE_HOME/spool`, else `$HOME/.cache/spool`; `None` when neither is set.
    pub fn default_dir() -> Option<PathBuf> {
        let absolute = |var: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        absolute("XDG_CACHE_HOME")
            .map(|d| d.join("spool"))
            .or_else(|| absolute("HOME").map(|h| h.join(".cache/spool")))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Where a loaded plugin's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum CacheStatus {
    /// No cache: compiled.
    Off,
    /// Read from the cache, not compiled.
    Hit,
    /// Not in the cache: compiled and stored.
    Stored,
    /// The cache file was corrupt or did not fit this engine: compiled again and replaced.
    Replaced,
    /// Compiled, but the cache could not be written (the reason is logged as a warning).
    Unwritable,
}

/// A `Hasher` that feeds sha-256, so the engine key is stable across Rust releases (std's
/// `DefaultHasher` promises no such thing).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        // Only `write` is used; the key is read from the full sha-256 below.
        0
    }
}

/// The key of everything a compiled artifact depends on besides the plugin's own bytes.
pub(super) fn engine_key(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.write(MAGIC);
    hex::encode(hasher.0.finalize())
}

impl Sandbox {
    /// Compile `bytes`, or read them compiled from the cache when one is set.
    pub(super) fn compile(
        &self,
        bytes: &[u8],
        digest: &Digest,
    ) -> Result<(Component, CacheStatus), LoadError> {
        let compile = || {
            Component::new(&self.engine, bytes).map_err(|e| LoadError::Malformed {
                reason: format!("{e:#}"),
            })
        };
        let Some((cache, key)) = &self.cache else {
            return Ok((compile()?, CacheStatus::Off));
        };
        let path = cache
            .dir
            .join(format!("{}-{}.cwasm", digest.as_str(), &key[..16]));
        let mut status = CacheStatus::Stored;
        match std::fs::read(&path) {
            Ok(file) => match self.deserialize(&file) {
                Ok(component) => return Ok((component, CacheStatus::Hit)),
                Err(reason) => {
                    tracing::warn!(path = %path.display(), "compiling again: {reason}");
                    status = CacheStatus::Replaced;
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), "compiling again: cannot read: {e}");
                status = CacheStatus::Replaced;
            }
        }
        let component = compile()?;
        if let Err(e) = store(&cache.dir, &path, &component) {
            tracing::warn!(path = %path.display(), "cannot write the compile cache: {e}");
            status = CacheStatus::Unwritable;
        }
        Ok((component, status))
    }

    /// A component from a cache file, after checking its header and checksum.
    fn deserialize(&self, file: &[u8]) -> Result<Component, String> {
        let (header, body) = file
            .split_at_checked(HEADER)
            .ok_or("truncated cache file")?;
        if &header[..MAGIC.len()] != MAGIC {
            return Err("not a Spool cache file".to_owned());
        }
        if header[MAGIC.len()..] != Sha256::digest(body)[..] {
            return Err("checksum mismatch".to_owned());
        }
        // SAFETY: `body` is what `Component::serialize` wrote into a file of our own cache
        // (the checksum above rules out truncation and corruption on disk), and wasmtime
        // checks that it was compiled by this version with a compatible configuration. The
        // cache directory is trusted like the binary (see the module docs).
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.engine, body) };
        component.map_err(|e| format!("refused by wasmtime: {e:#}"))
    }
}

/// Write `component` compiled to `path`, through a temporary file and a rename.
fn store(dir: &Path, path: &Path, component: &Component) -> Result<(), String> {
    create_private_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let body = component
        .serialize()
        .map_err(|e| format!("cannot serialize: {e:#}"))?;
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("cwasm"),
        std::process::id(),
        fastrand::u64(..)
    ));
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(MAGIC)?;
        file.write_all(&Sha256::digest(&body))?;
        file.write_all(&body)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write: {e}")
    })
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}
