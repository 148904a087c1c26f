//! Prometheus metrics: the families a worker and `spool serve` export at `/metrics`.
//!
//! One [`Metrics`] holds a [`Registry`] and the handles of every family registered in it;
//! [`Metrics::encode`] renders them in the OpenMetrics text format, which Prometheus scrapes.

use std::fmt;

use prometheus_client::registry::Registry;

/// The metric families of one process, registered under the `spool` prefix.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// A registry with every Spool family registered.
    pub fn new() -> Self {
        Self {
            registry: Registry::with_prefix("spool"),
        }
    }

    /// The families in the OpenMetrics text format (`Content-Type:
    /// application/openmetrics-text; version=1.0.0; charset=utf-8`).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}
