//! Flow control: how a queue's claims are limited across every worker — concurrency and rate
//! limits for the queue and for each tenant, and fair shares between tenants — and the token
//! bucket both backends keep rate limits in.
//!
//! A worker passes its queue's [`Flow`] with every claim ([`QueueClaim::flow`]); the backend
//! claims no more than the limits allow, counting what every worker runs (the limits live in
//! the store, not in one process). Job groups need no setting: a job with a group never runs
//! while another job of its queue and group runs.
//!
//! ```
//! use std::time::Duration;
//! use spool::queue::flow::{Flow, Rate};
//!
//! let flow = Flow {
//!     concurrency: Some(50),
//!     tenant_concurrency: Some(5),
//!     rate: Some("100/1s".parse::<Rate>().unwrap()),
//!     tenant_rate: None,
//!     fair: true,
//! };
//! assert_eq!(flow.rate, Some(Rate { limit: 100, per: Duration::from_secs(1) }));
//! assert!(flow.is_limited());
//! ```
//!
//! [`QueueClaim::flow`]: super::QueueClaim::flow

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// How a queue's claims are limited, across every worker. The default limits nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// Attempts of the queue running at once, across all workers.
    pub concurrency: Option<u32>,
    /// Attempts of one tenant's jobs running at once in the queue, across all workers (jobs
    /// without a tenant share one key).
    pub tenant_concurrency: Option<u32>,
    /// Attempts of the queue started per interval, across all workers.
    pub rate: Option<Rate>,
    /// Attempts of one tenant's jobs started per interval, across all workers.
    pub tenant_rate: Option<Rate>,
    /// Share claims between tenants: each claim takes from the tenants with the fewest
    /// attempts running first, so one tenant's backlog never starves another tenant's jobs.
    pub fair: bool,
}

impl Flow {
    /// Whether anything is limited or shared out (a claim then looks past the head of the
    /// queue).
    pub fn is_limited(&self) -> bool {
        self.concurrency.is_some()
            || self.tenant_concurrency.is_some()
            || self.rate.is_some()
            || self.tenant_rate.is_some()
            || self.fair
    }

    /// Whether anything is counted per tenant.
    pub fn per_tenant(&self) -> bool {
        self.tenant_concurrency.is_some() || self.tenant_rate.is_some() || self.fair
    }
}

/// A rate limit: at most `limit` starts per `per`, as a token bucket holding up to `limit`
/// tokens and refilled evenly over `per` (so a burst of `limit` is allowed after a quiet
/// interval). Written `"100/1s"`, `"10/1m"`, `"5/250ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// Starts allowed per interval (and the largest burst).
    pub limit: u32,
    /// The interval.
    pub per: Duration,
}

/// A rate that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad rate `{text}`: {why} (write it like \"100/1s\" or \"10/1m\")")]
pub struct BadRate {
    text: String,
    why: String,
}

impl std::str::FromStr for Rate {
    type Err = BadRate;

    fn from_str(text: &str) -> Result<Rate, BadRate> {
        let bad = |why: &str| BadRate {
            text: text.to_owned(),
            why: why.to_owned(),
        };
        let (limit, per) = text
            .split_once('/')
            .ok_or_else(|| bad("no `/` between the count and the interval"))?;
        let limit: u32 = limit
            .trim()
            .parse()
            .map_err(|_| bad("the count is not a whole number"))?;
        if limit == 0 {
            return Err(bad("the count must be at least 1"));
        }
        let per = crate::units::parse_duration(per.trim()).map_err(|e| bad(&e.to_string()))?;
        if per.is_zero() {
            return Err(bad("the interval must be longer than zero"));
        }
        Ok(Rate { limit, per })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.limit, humantime::format_duration(self.per))
    }
}

/// A rate limit's state: the tokens left at a time. Starts full.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Tokens left at `at` (fractions accrue between starts).
    pub tokens: f64,
    /// When `tokens` was counted, in milliseconds since the epoch.
    pub at: Timestamp,
}

impl Bucket {
    /// A full bucket for `rate` at `now`.
    pub fn full(rate: Rate, now: Timestamp) -> Bucket {
        Bucket {
            tokens: f64::from(rate.limit),
            at: now,
        }
    }

    /// The bucket refilled up to `now` (never above the limit; a clock that went back refills
    /// nothing).
    pub fn refilled(self, rate: Rate, now: Timestamp) -> Bucket {
        let elapsed = (now - self.at).max(0) as f64;
        let per = rate.per.as_millis().max(1) as f64;
        let limit = f64::from(rate.limit);
        Bucket {
            tokens: (self.tokens + elapsed * limit / per).min(limit),
            at: now.max(self.at),
        }
    }

    /// Whole starts available now.
    pub fn available(&self) -> usize {
        // Tokens are at most `limit` (a u32), so the cast cannot overflow.
        self.tokens.max(0.0).floor() as usize
    }

    /// Spend `n` tokens (at most what is available).
    pub fn take(&mut self, n: usize) {
        self.tokens -= n.min(self.available()) as f64;
    }

    /// How long until one more start is available.
    pub fn wait(&self, rate: Rate) -> Duration {
        if self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        let per = rate.per.as_secs_f64() / f64::from(rate.limit);
        Duration::from_secs_f64(((1.0 - self.tokens) * per).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_refuse_with_the_reason() {
        let r: Rate = "100/1s".parse().unwrap();
        assert_eq!((r.limit, r.per), (100, Duration::from_secs(1)));
        let r: Rate = " 5 / 250ms ".parse().unwrap();
        assert_eq!((r.limit, r.per), (5, Duration::from_millis(250)));
        assert_eq!(r.to_string(), "5/250ms");
        for (bad, why) in [
            ("100", "no `/`"),
            ("x/1s", "whole number"),
            ("0/1s", "at least 1"),
            ("10/0s", "longer than zero"),
            ("10/soon", "bad rate"),
        ] {
            let e = bad.parse::<Rate>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_bucket_refills_evenly_up_to_its_limit() {
        let rate: Rate = "10/1s".parse().unwrap();
        let mut b = Bucket::full(rate, 1_000);
        assert_eq!(b.available(), 10);
        b.take(10);
        assert_eq!(b.available(), 0);
        assert_eq!(b.wait(rate), Duration::from_millis(100));
        let b = b.refilled(rate, 1_250);
        assert_eq!(b.available(), 2);
        let b = b.refilled(rate, 60_000);
        assert_eq!(b.available(), 10, "never above the limit");
        let back = b.refilled(rate, 0);
        assert_eq!(back.at, 60_000, "a clock that went back refills nothing");
    }
}
