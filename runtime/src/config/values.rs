//! The values plugins read through `wasi:config`: `[queues.Q.config]`, `[queues.Q.secrets]`
//! and their per-tenant overlays `[tenants.T.queues.Q.config]` / `.secrets`.
//!
//! ```toml
//! [queues.email.config]
//! api_base = "http://127.0.0.1:8025"
//! from = "jobs@example.com"
//! [queues.email.secrets]
//! api_key = { env = "MAIL_API_KEY" }        # or { file = "/run/secrets/mail" }
//!
//! [tenants.acme.queues.email.secrets]       # acme's jobs on `email` use acme's own key
//! api_key = { file = "secrets/acme-mail" }  # relative to the config file
//! ```
//!
//! Only where a secret comes from is in the file; its value is read by the worker when it
//! starts ([`QueueConfig::values`]), and a secret that cannot be read refuses the start,
//! naming the secret (never its value). Config and secrets share the one `wasi:config`
//! namespace, so a key may not be in both tables of one queue or tenant overlay.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use super::QueueConfig;
use crate::sandbox::{ConfigStore, ConfigValues, Secret};

/// Where a secret's value is read from when the worker starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the worker process: `{ env = "MAIL_API_KEY" }`.
    Env(String),
    /// A file (a relative path is relative to the config file), its content without the
    /// trailing line end: `{ file = "/run/secrets/mail" }`.
    File(PathBuf),
}

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let expected = "a secret is read from `{ env = \"VAR\" }` or `{ file = \"PATH\" }`, never written in the config";
        let value = toml::Value::deserialize(d)?;
        let toml::Value::Table(table) = value else {
            return Err(D::Error::custom(expected));
        };
        let mut entries = table.into_iter();
        match (entries.next(), entries.next()) {
            (Some((kind, toml::Value::String(text))), None)
                if kind == "env" && !text.is_empty() =>
            {
                Ok(SecretSource::Env(text))
            }
            (Some((kind, toml::Value::String(text))), None)
                if kind == "file" && !text.is_empty() =>
            {
                Ok(SecretSource::File(PathBuf::from(text)))
            }
            _ => Err(D::Error::custom(expected)),
        }
    }
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Env(var) => write!(f, "environment variable `{var}`"),
            SecretSource::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// One tenant's overlay of one queue's values: `[tenants.T.queues.Q.config]` and `.secrets`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValuesConfig {
    /// Plain values, by key.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Secrets, by key: where each one's value is read from.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
}

/// One `[tenants.NAME]` table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The tenant's overlay of each queue's values, by queue.
    #[serde(default)]
    pub queues: BTreeMap<String, ValuesConfig>,
}

/// Why a queue's values could not be resolved when the worker started. The message names
/// the secret and where it was to come from, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is not set (or not UTF-8).
    #[error("{scope}.secrets.{key}: environment variable `{var}` is not set")]
    Env {
        /// `queues.Q` or `tenants.T.queues.Q`.
        scope: String,
        /// The secret's key.
        key: String,
        /// The variable.
        var: String,
    },
    /// The file cannot be read.
    #[error("{scope}.secrets.{key}: cannot read {}: {source}", path.display())]
    File {
        /// `queues.Q` or `tenants.T.queues.Q`.
        scope: String,
        /// The secret's key.
        key: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The value read is empty.
    #[error("{scope}.secrets.{key}: the {from} is empty")]
    Empty {
        /// `queues.Q` or `tenants.T.queues.Q`.
        scope: String,
        /// The secret's key.
        key: String,
        /// Where it was read from.
        from: String,
    },
    /// A key is both a config value and a secret.
    #[error("{scope}: {source}")]
    Values {
        /// `queues.Q` or `tenants.T.queues.Q`.
        scope: String,
        /// Which key.
        source: crate::sandbox::ConfigValuesError,
    },
}

impl SecretSource {
    /// Read the secret named `key` of `scope` (for the error messages).
    fn read(&self, scope: &str, key: &str) -> Result<Secret, SecretError> {
        let value = match self {
            SecretSource::Env(var) => std::env::var(var).map_err(|_| SecretError::Env {
                scope: scope.to_owned(),
                key: key.to_owned(),
                var: var.clone(),
            })?,
            SecretSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    scope: scope.to_owned(),
                    key: key.to_owned(),
                    path: path.clone(),
                    source,
                })?;
                // Files written by `echo` or an editor end with a line end that is not part
                // of the secret.
                text.strip_suffix('\n')
                    .map(|t| t.strip_suffix('\r').unwrap_or(t))
                    .unwrap_or(&text)
                    .to_owned()
            }
        };
        if value.is_empty() {
            return Err(SecretError::Empty {
                scope: scope.to_owned(),
                key: key.to_owned(),
                from: self.to_string(),
            });
        }
        Ok(Secret::new(value))
    }

    pub(super) fn resolve_against(&mut self, base: &Path) {
        if let SecretSource::File(path) = self
            && path.is_relative()
        {
            *path = base.join(&*path);
        }
    }
}

impl ValuesConfig {
    /// The first key that is both a config value and a secret, if any.
    pub(super) fn duplicate(&self) -> Option<&str> {
        self.config
            .keys()
            .find(|k| self.secrets.contains_key(*k))
            .map(String::as_str)
    }

    fn resolve(&self, scope: &str) -> Result<ConfigValues, SecretError> {
        let secrets = self
            .secrets
            .iter()
            .map(|(key, source)| Ok((key.clone(), source.read(scope, key)?)))
            .collect::<Result<_, SecretError>>()?;
        ConfigValues::new(self.config.clone(), secrets).map_err(|source| SecretError::Values {
            scope: scope.to_owned(),
            source,
        })
    }

    pub(super) fn resolve_paths(&mut self, base: &Path) {
        for source in self.secrets.values_mut() {
            source.resolve_against(base);
        }
    }
}

impl QueueConfig {
    /// Read the secrets of queue `name` and of its tenant overlays, and build the values its
    /// attempts read through `wasi:config` (a job reads its tenant's: queue values overlaid by
    /// the tenant's). A secret that cannot be read, or is empty, is an error naming it.
    pub fn values(&self, name: &str) -> Result<ConfigStore, SecretError> {
        let own = ValuesConfig {
            config: self.config.clone(),
            secrets: self.secrets.clone(),
        };
        let queue = own.resolve(&format!("queues.{name}"))?;
        let tenants = self
            .tenant_values
            .iter()
            .map(|(tenant, values)| {
                let scope = format!("tenants.{tenant}.queues.{name}");
                Ok((tenant.clone(), values.resolve(&scope)?))
            })
            .collect::<Result<_, SecretError>>()?;
        Ok(ConfigStore::new(queue, tenants))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn queue_and_tenant_values_read_and_resolve() {
        let config = Config::parse(
            r#"
            [queues.email]
            plugin = "e.wasm"
            [queues.email.config]
            api_base = "http://127.0.0.1:8025"
            [queues.email.secrets]
            api_key = { env = "SPOOL_TEST_VALUES_KEY" }
            [tenants.acme.queues.email.config]
            api_base = "http://acme"
            "#,
        )
        .unwrap();
        let email = &config.queues["email"];
        assert_eq!(
            email.secrets["api_key"],
            super::SecretSource::Env("SPOOL_TEST_VALUES_KEY".into())
        );
        assert_eq!(
            email.tenant_values["acme"].config["api_base"],
            "http://acme"
        );
        let err = email.values("email").unwrap_err().to_string();
        assert_eq!(
            err,
            "queues.email.secrets.api_key: environment variable `SPOOL_TEST_VALUES_KEY` is not set"
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let cases = [
            (
                "[queues.q.secrets]\nk = \"literal\"",
                "never written in the config",
            ),
            (
                "[queues.q.secrets]\nk = { env = \"A\", file = \"b\" }",
                "`{ env",
            ),
            ("[queues.q.secrets]\nk = { vault = \"x\" }", "`{ env"),
            ("[queues.q.config]\nk = 3", "invalid type"),
            (
                "[queues.q.config]\nk = \"v\"\n[queues.q.secrets]\nk = { env = \"K\" }",
                "queues.q: `k` is both a config value and a secret",
            ),
            (
                "[tenants.t.queues.nope.config]\nk = \"v\"",
                "tenants.t.queues.nope: unknown queue `nope`",
            ),
            (
                "[tenants.t.queues.q.config]\nk = \"v\"\n[tenants.t.queues.q.secrets]\nk = { env = \"K\" }",
                "tenants.t.queues.q: `k` is both",
            ),
            ("[tenants.t.queues.q]\nplugin = \"x\"", "plugin"),
        ];
        for (body, expected) in cases {
            let text = format!("[queues.q]\nplugin = \"e.wasm\"\n{body}\n");
            let err = Config::parse(&text).unwrap_err();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }

    #[test]
    fn secret_files_are_relative_to_the_config_and_lose_their_line_end() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "s3cret-from-file\n").unwrap();
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let path = dir.path().join("spool.toml");
        std::fs::write(
            &path,
            "[queues.q]\nplugin = \"e.wasm\"\n[queues.q.secrets]\nk = { file = \"key\" }\n\
             [tenants.t.queues.q.secrets]\nk = { file = \"empty\" }\n",
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        let q = &config.queues["q"];
        let err = q.values("q").unwrap_err().to_string();
        assert!(
            err.starts_with("tenants.t.queues.q.secrets.k: the file "),
            "{err}"
        );
        assert!(err.ends_with("is empty"), "{err}");
        let mut q = q.clone();
        q.tenant_values.clear();
        let store = q.values("q").unwrap();
        assert_eq!(store.for_tenant(None).get("k"), Some("s3cret-from-file"));
    }
}
