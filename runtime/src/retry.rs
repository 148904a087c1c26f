//! The retry policy: what happens to a job after an attempt, given how it ended.
//!
//! | outcome | next |
//! |---|---|
//! | succeeded | succeeded |
//! | retry, timed out, trapped | another attempt after the backoff (a plugin's retry-after wins), or dead when attempts are used up |
//! | fail | dead at once (phase `run`) |
//! | invalid payload | dead at once (phase `decode`) |
//! | delay | run again after the delay without spending an attempt, or dead (phase `max-started`) once the job has started `max_started` times |
//! | wait for children | wait until the job's children are finished, then run again without spending an attempt; bounded by `max_started` like a delay |

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::outcome::Outcome;
use crate::queue::{Next, Phase, Timestamp};

/// Exponential backoff between failed attempts: `initial * factor^(n-1)`, capped at `max`,
/// then spread by ±`jitter` (a fraction) so that jobs that failed together do not retry
/// together.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// The wait after the first failed attempt.
    pub initial: Duration,
    /// How much each further failure multiplies the wait.
    pub factor: f64,
    /// The longest wait.
    pub max: Duration,
    /// How much to spread each wait, as a fraction of it (0 = none, 0.2 = ±20%).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(600),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = self.initial.as_secs_f64() * self.factor.max(1.0).powi(exponent);
        let capped = base.min(self.max.as_secs_f64());
        let spread = if self.jitter > 0.0 {
            1.0 + self.jitter.min(1.0) * (fastrand::f64() * 2.0 - 1.0)
        } else {
            1.0
        };
        Duration::try_from_secs_f64((capped * spread).max(0.0)).unwrap_or(self.max)
    }
}

/// The limits the policy applies to one job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// How many times a job may be started (delays included) before it is dead.
    pub max_started: u32,
    /// The backoff between failed attempts.
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// Decide what follows an attempt that ended in `outcome`: the job's next step and, for a
    /// failure, its phase. `attempt` is the attempt's number, `started` how many times the job
    /// has been started including this one.
    pub fn decide(
        &self,
        outcome: &Outcome,
        attempt: u32,
        started: u32,
        now: Timestamp,
    ) -> (Next, Option<Phase>) {
        let later = |wait: Duration| {
            now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
        };
        let retry_or_dead = |phase: Phase, retry_after: Option<Duration>| {
            if attempt >= self.max_attempts {
                (Next::Dead, Some(phase))
            } else {
                let wait = retry_after.unwrap_or_else(|| self.backoff.delay(attempt));
                (
                    Next::Retry {
                        run_at: later(wait),
                    },
                    Some(phase),
                )
            }
        };
        match outcome {
            Outcome::Succeeded { output } => (
                Next::Succeeded {
                    output: output.clone(),
                },
                None,
            ),
            Outcome::Retry { retry_after, .. } => retry_or_dead(Phase::Run, *retry_after),
            Outcome::TimedOut { .. } => retry_or_dead(Phase::Timeout, None),
            Outcome::Trapped { .. } => retry_or_dead(Phase::Trap, None),
            Outcome::Fail { .. } => (Next::Dead, Some(Phase::Run)),
            Outcome::InvalidPayload { .. } => (Next::Dead, Some(Phase::Decode)),
            Outcome::WaitForChildren => {
                if started >= self.max_started {
                    (Next::Dead, Some(Phase::MaxStarted))
                } else {
                    (Next::Wait, None)
                }
            }
            Outcome::Delay { duration } => {
                if started >= self.max_started {
                    (Next::Dead, Some(Phase::MaxStarted))
                } else {
                    (
                        Next::Delay {
                            run_at: later(*duration),
                        },
                        None,
                    )
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            max_started: 5,
            backoff: Backoff {
                initial: Duration::from_secs(1),
                factor: 2.0,
                max: Duration::from_secs(3),
                jitter: 0.0,
            },
        }
    }

    fn retry() -> Outcome {
        Outcome::Retry {
            message: "smtp down".to_owned(),
            retry_after: None,
        }
    }

    #[test]
    fn backoff_grows_by_the_factor_up_to_the_max() {
        let b = policy().backoff;
        assert_eq!(b.delay(1), Duration::from_secs(1));
        assert_eq!(b.delay(2), Duration::from_secs(2));
        assert_eq!(b.delay(3), Duration::from_secs(3));
        assert_eq!(b.delay(30), Duration::from_secs(3));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let b = Backoff {
            jitter: 0.5,
            ..policy().backoff
        };
        for _ in 0..1000 {
            let d = b.delay(2).as_secs_f64();
            assert!((1.0..=3.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn retries_until_the_last_attempt_then_dead() {
        let p = policy();
        assert_eq!(
            p.decide(&retry(), 1, 1, 0),
            (Next::Retry { run_at: 1000 }, Some(Phase::Run))
        );
        assert_eq!(
            p.decide(&retry(), 2, 2, 0),
            (Next::Retry { run_at: 2000 }, Some(Phase::Run))
        );
        assert_eq!(p.decide(&retry(), 3, 3, 0), (Next::Dead, Some(Phase::Run)));
    }

    #[test]
    fn a_plugins_retry_after_wins_over_the_backoff() {
        let outcome = Outcome::Retry {
            message: "rate limited".to_owned(),
            retry_after: Some(Duration::from_millis(250)),
        };
        assert_eq!(
            policy().decide(&outcome, 1, 1, 0).0,
            Next::Retry { run_at: 250 }
        );
    }

    #[test]
    fn timeouts_and_traps_are_failed_attempts_with_their_phase() {
        let timed_out = Outcome::TimedOut {
            elapsed: Duration::from_secs(5),
        };
        assert_eq!(policy().decide(&timed_out, 1, 1, 0).1, Some(Phase::Timeout));
        assert_eq!(
            policy().decide(&timed_out, 3, 3, 0),
            (Next::Dead, Some(Phase::Timeout))
        );
        let trapped = Outcome::Trapped {
            kind: crate::TrapKind::Panic,
            message: "unreachable".to_owned(),
        };
        assert_eq!(policy().decide(&trapped, 1, 1, 0).1, Some(Phase::Trap));
    }

    #[test]
    fn fail_and_invalid_payload_are_dead_at_once() {
        let fail = Outcome::Fail {
            message: "invalid recipient".to_owned(),
        };
        assert_eq!(
            policy().decide(&fail, 1, 1, 0),
            (Next::Dead, Some(Phase::Run))
        );
        let invalid = Outcome::InvalidPayload {
            message: "missing field `to`".to_owned(),
        };
        assert_eq!(
            policy().decide(&invalid, 1, 1, 0),
            (Next::Dead, Some(Phase::Decode))
        );
    }

    #[test]
    fn delays_do_not_spend_attempts_but_are_bounded_by_max_started() {
        let delay = Outcome::Delay {
            duration: Duration::from_millis(500),
        };
        assert_eq!(
            policy().decide(&delay, 1, 4, 0),
            (Next::Delay { run_at: 500 }, None)
        );
        assert_eq!(
            policy().decide(&delay, 1, 5, 0),
            (Next::Dead, Some(Phase::MaxStarted))
        );
    }
}
