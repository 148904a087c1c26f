//! Loading a plugin: read, check against the WIT world, digest, compile once, pre-instantiate.
//!
//! A file is refused here, with an error naming what is wrong, rather than at the first
//! attempt: not WebAssembly, a core module instead of a component, no `spool:job/handler`
//! export, a `spool:job` version this host does not implement, or an import Spool does not
//! grant.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::Sandbox;
use super::cache::CacheStatus;
use super::http::HttpGrant;
use super::limits::Limits;
use super::state::RunState;
use super::wasi_config::ConfigStore;
use crate::bindings::{self, HANDLER_INTERFACE, PACKAGE, VERSION, VERSIONS};

/// The sha-256 of a plugin file, in lowercase hex: the plugin's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(hex::encode(Sha256::digest(bytes)))
    }

    /// The hex string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for display.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// Why a plugin file was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read. The message includes the I/O error, which is therefore
    /// not also given as the error's `source` (a printed chain would repeat it).
    #[error("cannot read plugin {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file (no `\\0asm` header)")]
    NotWasm,
    /// The bytes are a core module, not a component.
    #[error(
        "a core WebAssembly module, not a component: build the plugin for the wasm32-wasip2 \
         target (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    /// The component is malformed or uses features the host does not enable.
    #[error("malformed component: {reason}")]
    Malformed {
        /// wasmtime's validation error.
        reason: String,
    },
    /// The component does not export the handler interface.
    #[error("missing export `{expected}`: the component exports {found}")]
    MissingExport {
        /// The interface Spool looks for.
        expected: String,
        /// What the component does export.
        found: String,
    },
    /// The component targets a version of `spool:job` this host does not implement.
    #[error(
        "wrong package version: `{name}` targets {package}@{found}, this host implements \
         {package}@{supported}"
    )]
    WrongVersion {
        /// The import or export that carries the version.
        name: String,
        /// The package.
        package: &'static str,
        /// The version the component was built against.
        found: String,
        /// The versions this host implements.
        supported: &'static str,
    },
    /// The component imports something the host does not grant.
    #[error("import `{name}` is not granted: Spool links only {granted}")]
    UngrantedImport {
        /// The import.
        name: String,
        /// What the host does link.
        granted: &'static str,
    },
    /// The component imports an interface its queue does not grant.
    #[error(
        "import `{name}` needs the `{grant}` grant, which {granted_by} does not give (in \
         spool.toml: [queues.<queue>.grants] {example})"
    )]
    MissingGrant {
        /// The import.
        name: String,
        /// The grant it needs.
        grant: Grant,
        /// Who was asked: `queue \`email\``, or `spool exec`.
        granted_by: String,
        /// A grant that would do.
        example: &'static str,
    },
    /// The component's imports or exports have the right names but the wrong types.
    #[error("does not match the {PACKAGE} world it targets: {reason}")]
    Mismatch {
        /// wasmtime's description of the mismatch.
        reason: String,
    },
    /// The file is larger, or its components and modules more numerous or more deeply
    /// nested, than a plugin may be: refused before it is compiled, which would take time and
    /// memory in proportion (see [`MAX_PLUGIN_BYTES`], [`MAX_NESTING`], [`MAX_PARTS`]).
    #[error("is beyond what a plugin may be: {found}, more than the {limit} allowed")]
    TooComplex {
        /// What the file has.
        found: String,
        /// The limit it passes.
        limit: String,
    },
    /// The component's start functions trapped (or ran past their deadline) when an
    /// instance of it was made at load.
    #[error("cannot be instantiated: {reason}")]
    Start {
        /// wasmtime's description of the trap.
        reason: String,
    },
    /// The plugin's limits do not fit the sandbox.
    #[error("bad limits: {reason}")]
    Limits {
        /// What is wrong.
        reason: String,
    },
}

/// What `spool plugin check` reports about a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// The file the plugin was loaded from, if any.
    pub path: Option<PathBuf>,
    /// The sha-256 of the file.
    pub digest: Digest,
    /// The file's size in bytes.
    pub size: usize,
    /// The world the component targets, e.g. `spool:job/plugin@0.1.0`.
    pub world: String,
    /// Each import and how the host satisfies it.
    pub imports: Vec<Import>,
    /// The component's exports.
    pub exports: Vec<String>,
}

/// One import of a plugin and how the host satisfies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Import {
    /// The import's name, e.g. `wasi:clocks/monotonic-clock@0.2.0`.
    pub name: String,
    /// How it is linked.
    pub grant: Grant,
}

/// How the host satisfies an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Grant {
    /// Spool's own host interface.
    Spool,
    /// WASI clocks or random: real clocks, real randomness.
    Wasi,
    /// A WASI interface linked with nothing behind it: no preopened directories, no
    /// environment or arguments, no network, stdout/stderr into the attempt's log.
    LockedDown,
    /// `wasi:config`: the values the operator configured for the job's queue and tenant
    /// (none unless configured); needs no grant.
    Config,
    /// `wasi:http`: outbound requests to what the queue's `http` grant allows.
    Http,
}

impl Grant {
    /// The queue grant this import needs, if any (`http`).
    pub fn needs(self) -> Option<&'static str> {
        match self {
            Grant::Http => Some("http"),
            Grant::Spool | Grant::Wasi | Grant::LockedDown | Grant::Config => None,
        }
    }
}

/// What a plugin's queue grants it beyond computing; deny by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Who grants these, for errors: `queue \`email\``, or `spool exec`.
    pub granted_by: String,
    /// Outbound HTTP (`wasi:http`); `None`: a plugin importing it is refused at load.
    pub http: Option<Arc<HttpGrant>>,
}

/// A loaded plugin: compiled, checked and pre-instantiated, ready for any number of attempts.
///
/// Cloning is cheap.
#[derive(Clone)]
pub struct Plugin(Arc<PluginInner>);

struct PluginInner {
    info: PluginInfo,
    limits: Limits,
    grants: Grants,
    pre: Pre,
    cache: CacheStatus,
    config: ConfigStore,
}

/// A plugin pre-instantiated against the `spool:job` version it was built for.
#[derive(Clone)]
pub(crate) enum Pre {
    /// Built against `spool:job@0.1`.
    V1(bindings::v1::PluginPre<RunState>),
    /// Built against `spool:job@0.2`.
    V2(bindings::v2::PluginPre<RunState>),
}

impl Plugin {
    /// What was learned about the plugin at load.
    pub fn info(&self) -> &PluginInfo {
        &self.0.info
    }

    /// The plugin's digest.
    pub fn digest(&self) -> &Digest {
        &self.0.info.digest
    }

    /// The limits each attempt of this plugin runs under.
    pub fn limits(&self) -> &Limits {
        &self.0.limits
    }

    /// What the plugin's queue grants it.
    pub fn grants(&self) -> &Grants {
        &self.0.grants
    }

    /// Whether the plugin's compiled code was read from the compile cache.
    pub fn cache_status(&self) -> CacheStatus {
        self.0.cache
    }

    pub(crate) fn pre(&self) -> &Pre {
        &self.0.pre
    }

    /// The values its attempts read through `wasi:config` (empty unless attached).
    pub fn config(&self) -> &ConfigStore {
        &self.0.config
    }

    /// The same plugin, its attempts reading `config` through `wasi:config` (a job reads its
    /// tenant's values: [`ConfigStore::for_tenant`]). Nothing is compiled again.
    pub fn with_config(&self, config: ConfigStore) -> Plugin {
        Plugin(Arc::new(PluginInner {
            info: self.0.info.clone(),
            limits: self.0.limits,
            grants: self.0.grants.clone(),
            pre: self.0.pre.clone(),
            cache: self.0.cache,
            config,
        }))
    }
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("info", &self.0.info)
            .field("limits", &self.0.limits)
            .finish_non_exhaustive()
    }
}

/// WASI packages (at 0.2.x) that standard libraries import even when a plugin uses none of
/// them; they are linked locked down.
const LOCKED_DOWN: &[&str] = &["wasi:cli", "wasi:filesystem", "wasi:sockets", "wasi:io"];
/// WASI packages (at 0.2.x) linked for real.
const REAL_WASI: &[&str] = &["wasi:clocks", "wasi:random"];
/// The `wasi:config` version linked (`wasmtime-wasi-config`'s), serving the operator's values.
const WASI_CONFIG: &str = "wasi:config/store@0.2.0-rc.1";
const GRANTED: &str = "spool:job/host, wasi:clocks, wasi:random, wasi:config/store@0.2.0-rc.1, \
                       (locked down) wasi:io, wasi:cli, wasi:filesystem and wasi:sockets at 0.2, \
                       and wasi:http at 0.2 with the `http` grant";
/// WASI packages (at 0.2.x) linked behind a queue's grant.
const GRANTED_WASI: &[(&str, Grant)] = &[("wasi:http", Grant::Http)];

impl Sandbox {
    /// Load the plugin at `path`, to run under `limits` with no grants.
    pub fn load_plugin(&self, path: &Path, limits: Limits) -> Result<Plugin, LoadError> {
        self.load_plugin_with(path, limits, Grants::default())
    }

    /// Load the plugin at `path`, to run under `limits` with `grants`; a plugin importing an
    /// interface whose grant is missing is refused.
    pub fn load_plugin_with(
        &self,
        path: &Path,
        limits: Limits,
        grants: Grants,
    ) -> Result<Plugin, LoadError> {
        let bytes = std::fs::read(path).map_err(|error| LoadError::Read {
            path: path.to_owned(),
            error,
        })?;
        let mut plugin = self.load_plugin_bytes_with(&bytes, limits, grants)?;
        if let Some(inner) = Arc::get_mut(&mut plugin.0) {
            inner.info.path = Some(path.to_owned());
        }
        Ok(plugin)
    }

    /// The same compiled plugin under other limits, without compiling it again.
    pub fn with_limits(&self, plugin: &Plugin, limits: Limits) -> Result<Plugin, LoadError> {
        self.check_limits(&limits)?;
        Ok(Plugin(Arc::new(PluginInner {
            info: plugin.0.info.clone(),
            limits,
            grants: plugin.0.grants.clone(),
            pre: plugin.0.pre.clone(),
            cache: plugin.0.cache,
            config: plugin.0.config.clone(),
        })))
    }

    /// Load a plugin from the bytes of a component, with no grants.
    pub fn load_plugin_bytes(&self, bytes: &[u8], limits: Limits) -> Result<Plugin, LoadError> {
        self.load_plugin_bytes_with(bytes, limits, Grants::default())
    }

    /// Load a plugin from the bytes of a component, with `grants`.
    pub fn load_plugin_bytes_with(
        &self,
        bytes: &[u8],
        limits: Limits,
        grants: Grants,
    ) -> Result<Plugin, LoadError> {
        self.check_limits(&limits)?;
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', _, _, 1, 0]) => {}
            Some([0, b'a', b's', b'm', _, _, 0, 0]) => return Err(LoadError::CoreModule),
            _ => return Err(LoadError::NotWasm),
        }
        check_shape(bytes)?;
        let digest = Digest::of(bytes);
        let (component, cache) = self.compile(bytes, &digest)?;
        let ty = component.component_type();

        let mut imports = Vec::new();
        for (name, _) in ty.imports(&self.engine) {
            let grant = grant_for(name)?;
            check_granted(name, grant, &grants)?;
            imports.push(Import {
                name: name.to_owned(),
                grant,
            });
        }
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let handler = exports
            .iter()
            .find(|name| interface_of(name).0 == HANDLER_INTERFACE)
            .ok_or_else(|| LoadError::MissingExport {
                expected: format!("{HANDLER_INTERFACE}@{VERSION}"),
                found: if exports.is_empty() {
                    "nothing".to_owned()
                } else {
                    exports.join(", ")
                },
            })?;
        let version = check_version(handler)?;

        let mismatch = |e: wasmtime::Error| LoadError::Mismatch {
            reason: format!("{e:#}"),
        };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(mismatch)?;
        let pre = if version.minor == 1 {
            bindings::v1::PluginPre::new(instance_pre).map(Pre::V1)
        } else {
            bindings::v2::PluginPre::new(instance_pre).map(Pre::V2)
        }
        .map_err(mismatch)?;
        self.check_instance(&pre, &limits).map_err(|e| {
            if e.downcast_ref::<wasmtime::Trap>().is_some() {
                LoadError::Start {
                    reason: format!("{e:#}"),
                }
            } else {
                LoadError::Mismatch {
                    reason: format!("its `{handler}` export cannot be used: {e:#}"),
                }
            }
        })?;

        Ok(Plugin(Arc::new(PluginInner {
            info: PluginInfo {
                path: None,
                digest,
                size: bytes.len(),
                world: format!("{PACKAGE}/plugin@{version}"),
                imports,
                exports,
            },
            limits,
            grants,
            pre,
            cache,
            config: ConfigStore::default(),
        })))
    }
}

/// The largest plugin file, in bytes (the Python runtime in a component is about 18 MB).
pub const MAX_PLUGIN_BYTES: usize = 256 << 20;
/// The deepest nesting of components and core modules in a plugin, the outermost counting 1
/// (a component built by `wit-component`, `componentize-py` or ComponentizeJS nests 2 or 3).
pub const MAX_NESTING: usize = 16;
/// The most components and core modules, nested ones included, in a plugin.
pub const MAX_PARTS: usize = 1_000;

/// Refuse a file whose translation would take time and memory out of proportion (thousands of
/// nested components in a few hundred kilobytes took gigabytes to translate) before wasmtime
/// sees it. Reads the binary's section headers only, with a parser that keeps its own stack:
/// microseconds for any depth. A malformed file passes, for wasmtime to name its fault.
fn check_shape(bytes: &[u8]) -> Result<(), LoadError> {
    let refuse = |found: String, limit: String| Err(LoadError::TooComplex { found, limit });
    if bytes.len() > MAX_PLUGIN_BYTES {
        return refuse(
            format!("{} bytes", bytes.len()),
            format!("{MAX_PLUGIN_BYTES} bytes"),
        );
    }
    let (mut depth, mut parts) = (0_usize, 0_usize);
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(wasmparser::Payload::Version { .. }) => {
                depth += 1;
                parts += 1;
                if depth > MAX_NESTING {
                    return refuse(
                        format!("components or modules nested {depth} deep"),
                        format!("{MAX_NESTING} levels"),
                    );
                }
                if parts > MAX_PARTS {
                    return refuse(
                        format!("more than {MAX_PARTS} components and modules"),
                        format!("{MAX_PARTS}"),
                    );
                }
            }
            Ok(wasmparser::Payload::End(_)) => depth = depth.saturating_sub(1),
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Splits `ns:pkg/iface@1.2.3` into (`ns:pkg/iface`, `Some("1.2.3")`).
fn interface_of(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((iface, version)) => (iface, Some(version)),
        None => (name, None),
    }
}

/// How [`LoadError::WrongVersion`] names the versions this host implements.
const SUPPORTED: &str = "0.1.0 and 0.2.0";

/// Checks that a `spool:job/...` name targets a version compatible with one this host
/// implements, and returns that version.
fn check_version(name: &str) -> Result<semver::Version, LoadError> {
    let wrong = |found: &str| LoadError::WrongVersion {
        name: name.to_owned(),
        package: PACKAGE,
        found: found.to_owned(),
        supported: SUPPORTED,
    };
    let found = interface_of(name).1.ok_or_else(|| wrong("no version"))?;
    let version = semver::Version::parse(found).map_err(|_| wrong(found))?;
    // The component model's semver rule: 0.x releases are compatible within a minor version.
    let compatible = VERSIONS
        .iter()
        .filter_map(|v| semver::Version::parse(v).ok())
        .any(|supported| {
            version.major == supported.major
                && (supported.major > 0 || version.minor == supported.minor)
                && version <= supported
        });
    if compatible {
        Ok(version)
    } else {
        Err(wrong(found))
    }
}

fn grant_for(name: &str) -> Result<Grant, LoadError> {
    let (iface, version) = interface_of(name);
    let package = iface.split_once('/').map_or(iface, |(pkg, _)| pkg);
    if package == PACKAGE {
        check_version(name)?;
        return Ok(Grant::Spool);
    }
    let ungranted = || LoadError::UngrantedImport {
        name: name.to_owned(),
        granted: GRANTED,
    };
    let wasi_02 = version.is_some_and(|v| v.starts_with("0.2."));
    if name == WASI_CONFIG {
        Ok(Grant::Config)
    } else if let Some((_, grant)) = GRANTED_WASI.iter().find(|(pkg, _)| *pkg == package)
        && wasi_02
    {
        Ok(*grant)
    } else if REAL_WASI.contains(&package) && wasi_02 {
        Ok(Grant::Wasi)
    } else if LOCKED_DOWN.contains(&package) && wasi_02 {
        Ok(Grant::LockedDown)
    } else {
        Err(ungranted())
    }
}

/// Refuses an import whose grant the plugin's queue does not give.
fn check_granted(name: &str, grant: Grant, grants: &Grants) -> Result<(), LoadError> {
    let missing = match grant {
        Grant::Http => grants.http.is_none(),
        Grant::Spool | Grant::Wasi | Grant::LockedDown | Grant::Config => false,
    };
    if !missing {
        return Ok(());
    }
    Err(LoadError::MissingGrant {
        name: name.to_owned(),
        grant,
        granted_by: if grants.granted_by.is_empty() {
            "the host".to_owned()
        } else {
            grants.granted_by.clone()
        },
        example: "http = [\"https://api.example.com\"]",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_within_the_same_minor_are_compatible() {
        assert!(check_version("spool:job/handler@0.1.0").is_ok());
        assert!(check_version("spool:job/handler@0.2.0").is_ok());
        assert!(matches!(
            check_version("spool:job/handler@0.2.1"),
            Err(LoadError::WrongVersion { .. })
        ));
        assert!(matches!(
            check_version("spool:job/handler@0.3.0"),
            Err(LoadError::WrongVersion { .. })
        ));
        assert!(matches!(
            check_version("spool:job/handler"),
            Err(LoadError::WrongVersion { .. })
        ));
    }

    #[test]
    fn only_listed_packages_are_granted() {
        assert_eq!(
            grant_for("wasi:clocks/monotonic-clock@0.2.3").ok(),
            Some(Grant::Wasi)
        );
        assert_eq!(
            grant_for("wasi:sockets/tcp@0.2.0").ok(),
            Some(Grant::LockedDown)
        );
        assert_eq!(
            grant_for("wasi:http/outgoing-handler@0.2.0").ok(),
            Some(Grant::Http)
        );
        assert!(matches!(
            check_granted(
                "wasi:http/outgoing-handler@0.2.0",
                Grant::Http,
                &Grants::default()
            ),
            Err(LoadError::MissingGrant { .. })
        ));
        assert_eq!(
            grant_for("wasi:config/store@0.2.0-rc.1").ok(),
            Some(Grant::Config)
        );
        assert!(matches!(
            grant_for("wasi:config/store@0.2.0"),
            Err(LoadError::UngrantedImport { .. })
        ));
        assert!(matches!(
            grant_for("wasi:clocks/monotonic-clock@0.3.0"),
            Err(LoadError::UngrantedImport { .. })
        ));
    }
}
