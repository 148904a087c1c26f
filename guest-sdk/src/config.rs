//! The values the operator configured for the job: [`get`] and [`get_all`] here, and
//! [`secret`](crate::secret) for secrets.
//!
//! Values come from `spool.toml`: `[queues.Q.config]` (plain values) and `[queues.Q.secrets]`
//! (read by the worker when it starts, from an environment variable or a file), overlaid per
//! tenant by `[tenants.T.queues.Q.config]` / `.secrets`. An attempt sees the values of its
//! job's tenant, or its queue's. Config and secrets share one namespace (the WIT world
//! `spool:job/configured-plugin`, through `wasi:config/store`), so [`get`] also returns a
//! secret; [`secret`](crate::secret) wraps it in a [`Secret`] that does not print.
//!
//! A plugin that never calls these functions does not import `wasi:config` at all.
//!
//! ```
//! use spool_sdk::{Job, JobError, Raw};
//!
//! fn send(_: &Job, _: Raw) -> Result<String, JobError> {
//!     let base = spool_sdk::config::get("api_base")
//!         .ok_or_else(|| JobError::fail("`api_base` is not configured for this queue"))?;
//!     let key = spool_sdk::secret("api_key");
//!     Ok(format!("{base}/send (authenticated: {})", key.is_some()))
//! }
//! # fn main() {
//! #     spool_sdk::config::set("api_base", "http://127.0.0.1:8025");
//! #     let job = Job::new("job-1", "email", "{}");
//! #     assert_eq!(
//! #         send(&job, Raw::default()).unwrap(),
//! #         "http://127.0.0.1:8025/send (authenticated: false)"
//! #     );
//! # }
//! ```
//!
//! Outside wasm32 (native unit tests) there is no host: the values are those set with
//! [`set`] on the current thread.

use std::fmt;

/// The value under `key`, or `None` when neither the queue nor the job's tenant sets it.
pub fn get(key: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    {
        // Spool's host never fails a read; an error from another host reads as unset.
        crate::wit::wasi::config::store::get(key).ok().flatten()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        native::VALUES.with(|values| values.borrow().get(key).cloned())
    }
}

/// Every value the job may read (config and secrets alike), as `(key, value)` pairs.
pub fn get_all() -> Vec<(String, String)> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::wit::wasi::config::store::get_all().unwrap_or_default()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        native::VALUES.with(|values| {
            values
                .borrow()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }
}

/// Outside wasm32 only: set the value [`get`] returns for `key` on this thread, so handlers
/// that read config can be unit-tested natively.
#[cfg(not(target_arch = "wasm32"))]
pub fn set(key: &str, value: &str) {
    native::VALUES.with(|values| {
        values.borrow_mut().insert(key.to_owned(), value.to_owned());
    });
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    thread_local! {
        pub(super) static VALUES: RefCell<BTreeMap<String, String>> =
            const { RefCell::new(BTreeMap::new()) };
    }
}

/// A secret value read with [`secret`](crate::secret): `Debug` and `Display` print
/// `[redacted]`, so it cannot end up in a log line or an error by accident. Use
/// [`Secret::expose`] where the value itself is needed (an `Authorization` header).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret's value.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret's value, taking it out.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The secret under `key` (`[queues.Q.secrets]` or the job's tenant's), or `None` when it is
/// not set. It is read through the same `wasi:config` store as [`get`]: the host does not
/// tell secrets from plain values to the guest, so this is [`get`] with a value that does not
/// print.
///
/// ```
/// # spool_sdk::config::set("api_key", "k-123");
/// let key = spool_sdk::secret("api_key").expect("api_key is configured");
/// assert_eq!(format!("{key}"), "[redacted]");
/// let header = format!("Bearer {}", key.expose());
/// # assert_eq!(header, "Bearer k-123");
/// ```
pub fn secret(key: &str) -> Option<Secret> {
    get(key).map(Secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_set_natively_read_back_and_secrets_do_not_print() {
        assert_eq!(get("missing"), None);
        set("api_key", "k-123");
        set("api_base", "http://x");
        let key = secret("api_key").unwrap();
        assert_eq!(key.expose(), "k-123");
        assert_eq!(format!("{key} {key:?}"), "[redacted] [redacted]");
        assert_eq!(
            get_all(),
            [
                ("api_base".to_owned(), "http://x".to_owned()),
                ("api_key".to_owned(), "k-123".to_owned())
            ]
        );
    }
}
