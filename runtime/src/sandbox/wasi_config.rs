//! Configuration and secrets: what a plugin reads through `wasi:config/store@0.2.0-rc.1`.
//!
//! The operator gives a queue plain values (`[queues.Q.config]`) and secrets
//! (`[queues.Q.secrets]`, read from the environment or a file when the worker starts), and may
//! overlay both per tenant (`[tenants.T.queues.Q.config]` / `.secrets`). Config and secrets
//! share the one `wasi:config` namespace: the guest cannot tell them apart, the host can. A
//! [`ConfigValues`] is one resolved set; a [`ConfigStore`] holds a queue's set and, per
//! tenant, that set overlaid by the tenant's, and is attached to a [`Plugin`](super::Plugin)
//! with [`Plugin::with_config`](super::Plugin::with_config). Each attempt reads the set of its
//! job's tenant (the queue's when the job has none, or the tenant has no overlay), so a job of
//! one tenant can never read another tenant's values.
//!
//! A secret's value lives in a [`Secret`], which neither prints nor serializes it. What an
//! attempt hands back for people to read (its log lines, its error message, its progress note)
//! has every secret value of its set replaced by [`REDACTED`]; data the plugin returns on
//! purpose (output, checkpoints, step results, child payloads) is kept as it is.
//!
//! `wasi:config` is linked for every plugin and needs no grant: a queue without values gives
//! its plugin an empty store.
//!
//! ```
//! use spool::sandbox::{ConfigStore, ConfigValues, Secret};
//!
//! let queue = ConfigValues::new(
//!     [("api_base".to_owned(), "http://127.0.0.1:8025".to_owned())].into(),
//!     [("api_key".to_owned(), Secret::new("queue-key"))].into(),
//! )?;
//! let acme = ConfigValues::new(
//!     Default::default(),
//!     [("api_key".to_owned(), Secret::new("acme-key"))].into(),
//! )?;
//! let store = ConfigStore::new(queue, [("acme".to_owned(), acme)].into());
//! assert_eq!(store.for_tenant(Some("acme")).get("api_key"), Some("acme-key"));
//! assert_eq!(store.for_tenant(Some("other")).get("api_key"), Some("queue-key"));
//! assert_eq!(store.for_tenant(None).get("api_base"), Some("http://127.0.0.1:8025"));
//! assert!(!format!("{store:?}").contains("acme-key"));
//! # Ok::<(), spool::sandbox::ConfigValuesError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use wasmtime::component::Linker;
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};

use super::state::RunState;
use crate::outcome::{AttemptReport, Outcome};

/// What a secret's value is replaced with wherever an attempt's text is shown.
pub const REDACTED: &str = "[redacted]";

/// A secret value: its `Debug` and `Display` print [`REDACTED`], and it cannot be serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for handing it to the guest.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Why a set of values was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigValuesError {
    /// The same key is both a config value and a secret.
    #[error("`{key}` is both a config value and a secret: config and secrets share one namespace")]
    Duplicate {
        /// The key.
        key: String,
    },
}

/// One resolved set of values a plugin reads through `wasi:config`: plain values and secrets,
/// under distinct keys. `Debug` shows the keys and the plain values, never a secret's value.
///
/// Cloning is cheap (the set is shared).
#[derive(Clone, Default)]
pub struct ConfigValues(Arc<Values>);

#[derive(Default)]
struct Values {
    config: BTreeMap<String, String>,
    secrets: BTreeMap<String, Secret>,
    /// Both maps, in the form `wasmtime-wasi-config` serves, built once for every attempt.
    vars: WasiConfigVariables,
}

impl ConfigValues {
    /// The set of `config` values and `secrets`; a key in both is refused.
    pub fn new(
        config: BTreeMap<String, String>,
        secrets: BTreeMap<String, Secret>,
    ) -> Result<Self, ConfigValuesError> {
        if let Some(key) = config.keys().find(|k| secrets.contains_key(*k)) {
            return Err(ConfigValuesError::Duplicate { key: key.clone() });
        }
        Ok(Self::build(config, secrets))
    }

    fn build(config: BTreeMap<String, String>, secrets: BTreeMap<String, Secret>) -> Self {
        let vars = config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(secrets.iter().map(|(k, s)| (k.as_str(), s.expose())))
            .collect();
        ConfigValues(Arc::new(Values {
            config,
            secrets,
            vars,
        }))
    }

    /// This set with `over`'s values on top: a key `over` has (as a value or a secret)
    /// replaces the same key here, whatever its kind.
    pub fn overlay(&self, over: &ConfigValues) -> ConfigValues {
        let mut config = self.0.config.clone();
        let mut secrets = self.0.secrets.clone();
        for (key, value) in &over.0.config {
            secrets.remove(key);
            config.insert(key.clone(), value.clone());
        }
        for (key, secret) in &over.0.secrets {
            config.remove(key);
            secrets.insert(key.clone(), secret.clone());
        }
        Self::build(config, secrets)
    }

    /// The value (plain or secret) under `key`, as the guest reads it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .config
            .get(key)
            .map(String::as_str)
            .or_else(|| self.0.secrets.get(key).map(Secret::expose))
    }

    /// Whether the set has no values at all.
    pub fn is_empty(&self) -> bool {
        self.0.config.is_empty() && self.0.secrets.is_empty()
    }

    /// The plain values' keys, in order.
    pub fn config_keys(&self) -> impl Iterator<Item = &str> {
        self.0.config.keys().map(String::as_str)
    }

    /// The secrets' keys, in order.
    pub fn secret_keys(&self) -> impl Iterator<Item = &str> {
        self.0.secrets.keys().map(String::as_str)
    }

    /// `text` with every secret value of this set replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        self.redact_in_place(&mut text);
        text
    }

    fn redact_in_place(&self, text: &mut String) {
        // Longest first, so that a secret containing another is replaced whole.
        let mut values: Vec<&str> = self
            .0
            .secrets
            .values()
            .map(Secret::expose)
            .filter(|v| !v.is_empty())
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        for value in values {
            if text.contains(value) {
                *text = text.replace(value, REDACTED);
            }
        }
    }

    /// Redact the text of an attempt's report meant for people: log lines and their fields,
    /// the error message and the progress note.
    pub(crate) fn redact_report(&self, report: &mut AttemptReport) {
        if self.0.secrets.is_empty() {
            return;
        }
        for line in &mut report.logs {
            self.redact_in_place(&mut line.message);
            for (_, value) in &mut line.fields {
                self.redact_in_place(value);
            }
        }
        match &mut report.outcome {
            Outcome::Retry { message, .. }
            | Outcome::Fail { message }
            | Outcome::InvalidPayload { message }
            | Outcome::Trapped { message, .. } => self.redact_in_place(message),
            _ => {}
        }
        if let Some(note) = report.progress.as_mut().and_then(|p| p.message.as_mut()) {
            self.redact_in_place(note);
        }
    }

    pub(crate) fn vars(&self) -> &WasiConfigVariables {
        &self.0.vars
    }
}

impl fmt::Debug for ConfigValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigValues")
            .field("config", &self.0.config)
            .field("secrets", &self.0.secrets)
            .finish()
    }
}

/// The values of one queue's attempts: the queue's own set, and per tenant, the queue's set
/// overlaid by the tenant's. Cloning is cheap.
#[derive(Clone, Default, Debug)]
pub struct ConfigStore {
    queue: ConfigValues,
    tenants: Arc<BTreeMap<String, ConfigValues>>,
}

impl ConfigStore {
    /// The store for a queue whose own values are `queue`, with each tenant's values in
    /// `tenants` laid over them.
    pub fn new(queue: ConfigValues, tenants: BTreeMap<String, ConfigValues>) -> Self {
        let tenants = tenants
            .into_iter()
            .map(|(tenant, values)| (tenant, queue.overlay(&values)))
            .collect();
        ConfigStore {
            queue,
            tenants: Arc::new(tenants),
        }
    }

    /// The values an attempt of a job of `tenant` reads: the tenant's overlay if it has one,
    /// else the queue's.
    pub fn for_tenant(&self, tenant: Option<&str>) -> &ConfigValues {
        tenant
            .and_then(|t| self.tenants.get(t))
            .unwrap_or(&self.queue)
    }

    /// Whether neither the queue nor any tenant has a value.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.tenants.values().all(ConfigValues::is_empty)
    }

    /// The tenants with values of their own, in order.
    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        self.tenants.keys().map(String::as_str)
    }
}

/// Link `wasi:config/store` to serve each attempt its [`RunState`]'s values.
pub(super) fn link(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    wasmtime_wasi_config::add_to_linker(linker, view)
}

fn view(state: &mut RunState) -> WasiConfig<'_> {
    WasiConfig::from(state.config.vars())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(config: &[(&str, &str)], secrets: &[(&str, &str)]) -> ConfigValues {
        ConfigValues::new(
            config
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            secrets
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Secret::new(*v)))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn a_key_both_config_and_secret_is_refused() {
        let err = ConfigValues::new(
            [("k".to_owned(), "v".to_owned())].into(),
            [("k".to_owned(), Secret::new("s"))].into(),
        )
        .unwrap_err();
        assert_eq!(err, ConfigValuesError::Duplicate { key: "k".into() });
    }

    #[test]
    fn a_tenant_overlay_replaces_keys_whatever_their_kind() {
        let queue = values(
            &[("base", "q"), ("from", "q@x")],
            &[("key", "queue-secret")],
        );
        let tenant = values(&[("key", "plain")], &[("from", "t-secret")]);
        let store = ConfigStore::new(queue, [("t".to_owned(), tenant)].into());
        let t = store.for_tenant(Some("t"));
        assert_eq!(t.get("base"), Some("q"));
        assert_eq!(t.get("key"), Some("plain"));
        assert_eq!(t.get("from"), Some("t-secret"));
        assert_eq!(t.secret_keys().collect::<Vec<_>>(), ["from"]);
        assert_eq!(store.for_tenant(Some("u")).get("key"), Some("queue-secret"));
        assert_eq!(store.for_tenant(None).get("from"), Some("q@x"));
    }

    #[test]
    fn debug_and_display_never_show_a_secret() {
        let v = values(&[("base", "http://x")], &[("key", "hunter2-secret")]);
        let store = ConfigStore::new(v.clone(), [("t".to_owned(), v.clone())].into());
        for text in [
            format!("{v:?}"),
            format!("{store:?}"),
            format!("{:?}", Secret::new("hunter2-secret")),
            Secret::new("hunter2-secret").to_string(),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
        }
        assert!(format!("{v:?}").contains("http://x"));
    }

    #[test]
    fn redaction_replaces_every_secret_value_longest_first() {
        let v = values(&[("base", "abc")], &[("a", "tok"), ("b", "token-long")]);
        assert_eq!(
            v.redact("tok token-long abc tok"),
            "[redacted] [redacted] abc [redacted]"
        );
        let empty = values(&[], &[("e", "")]);
        assert_eq!(empty.redact("text"), "text");
    }
}
