//! Durable steps: [`Job::step`] runs a piece of work once per job rather than once per attempt.
//!
//! When a step's closure succeeds, its result is encoded as JSON and handed to the host
//! (`host.step-done`), which stores it before `step` returns. Every later attempt receives the
//! stored results as [`Job::steps`], and `step` returns them without running the closure again.
//! A step whose closure fails stores nothing, and neither does an attempt that crashes inside
//! it, so such a step runs again on the next attempt.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::payload::decode_json;
use crate::wit::spool::job::types as wit;
use crate::{Job, JobError, host};

/// A step an earlier attempt completed, with its stored result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    name: String,
    output: Vec<u8>,
}

impl Step {
    pub(crate) fn new(name: String, output: Vec<u8>) -> Self {
        Self { name, output }
    }

    /// The step's name, unique within the job.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The step's result as stored: JSON, for steps run through [`Job::step`].
    pub fn output(&self) -> &[u8] {
        &self.output
    }
}

impl From<wit::Step> for Step {
    fn from(step: wit::Step) -> Self {
        Self::new(step.name, step.output)
    }
}

impl Job {
    /// Run the step `name` unless it already completed, and return its result.
    ///
    /// If an earlier attempt (or an earlier call in this attempt) completed a step named `name`,
    /// its stored result is decoded from JSON and returned, and `run` is not called. Otherwise
    /// `run` is called; an `Ok` result is stored durably as JSON before it is returned, and an
    /// error is returned as it is, storing nothing.
    ///
    /// A stored result that does not decode as `T` is a [`JobError::fail`] naming the step,
    /// as is a result that cannot be encoded as JSON. Outside wasm32 the result is only
    /// remembered for the rest of this `Job`'s life.
    ///
    /// ```
    /// use spool_sdk::{Job, JobError};
    ///
    /// fn order(job: &Job, amount: u64) -> Result<String, JobError> {
    ///     // Charged once, even if shipping fails and the job is retried.
    ///     let receipt: String = job.step("charge", || Ok(format!("charged {amount}")))?;
    ///     job.step("ship", || Ok(format!("shipped after {receipt}")))
    /// }
    /// # fn main() {
    /// #     let retry = Job::new("o1", "orders", "5").with_step("charge", r#""charged 3""#);
    /// #     assert_eq!(order(&retry, 5), Ok("shipped after charged 3".to_owned()));
    /// # }
    /// ```
    pub fn step<T, F>(&self, name: &str, run: F) -> Result<T, JobError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Result<T, JobError>,
    {
        if let Some(stored) = self.step_output(name) {
            return decode_json(&stored, &format!("bad stored result of step {name:?}"));
        }
        let value = run()?;
        let output = serde_json::to_vec(&value)
            .map_err(|e| JobError::fail(format_args!("bad result of step {name:?}: {e}")))?;
        host::step_done(name, &output);
        self.remember_step(Step::new(name.to_owned(), output));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_new_step_runs_once_and_is_remembered_for_the_rest_of_the_attempt() {
        let job = Job::new("j1", "q", "{}");
        let runs = Cell::new(0);
        let charge = || {
            runs.set(runs.get() + 1);
            Ok(42_u32)
        };
        assert_eq!(job.step("charge", charge), Ok(42));
        assert_eq!(job.step("charge", charge), Ok(42));
        assert_eq!(runs.get(), 1);
        // Only earlier attempts' steps are listed.
        assert!(job.steps().is_empty());
    }

    #[test]
    fn a_step_stored_by_an_earlier_attempt_is_returned_without_running() {
        let job = Job::new("j1", "q", "{}").with_step("charge", r#"{"cents": 250}"#);
        let stored: Result<BTreeMap<String, u32>, _> =
            job.step("charge", || unreachable!("stored steps must not run again"));
        assert_eq!(stored, Ok(BTreeMap::from([("cents".to_owned(), 250)])));
    }

    #[test]
    fn a_failed_step_stores_nothing_and_runs_again() {
        let job = Job::new("j1", "q", "{}");
        let failed: Result<u32, _> = job.step("charge", || Err(JobError::retry("card declined")));
        assert_eq!(failed, Err(JobError::retry("card declined")));
        assert_eq!(job.step("charge", || Ok(7_u32)), Ok(7));
    }

    #[test]
    fn steps_nest_and_keep_their_own_results() {
        let job = Job::new("j1", "q", "{}");
        let outer = job.step("outer", || {
            let inner = job.step("inner", || Ok(2_u32))?;
            Ok(inner * 10)
        });
        assert_eq!(outer, Ok(20));
        assert_eq!(job.step("inner", || Ok(0_u32)), Ok(2));
        assert_eq!(job.step("outer", || Ok(0_u32)), Ok(20));
    }

    #[test]
    fn a_stored_result_of_the_wrong_type_fails_naming_the_step() {
        let job = Job::new("j1", "q", "{}").with_step("charge", r#"{"cents": "lots"}"#);
        let stored: Result<BTreeMap<String, u32>, _> =
            job.step("charge", || unreachable!("stored steps must not run again"));
        assert_eq!(
            stored,
            Err(JobError::fail(
                r#"bad stored result of step "charge": cents: invalid type: string "lots", expected u32"#
            ))
        );
    }

    #[test]
    fn a_result_that_cannot_be_json_fails_and_is_not_remembered() {
        let job = Job::new("j1", "q", "{}");
        let tuple_keys = BTreeMap::from([((1, 2), 3)]);
        let result: Result<BTreeMap<(u8, u8), u8>, _> = job.step("bad", || Ok(tuple_keys));
        assert_eq!(
            result,
            Err(JobError::fail(
                r#"bad result of step "bad": key must be a string"#
            ))
        );
        assert_eq!(job.step("bad", || Ok(5_u8)), Ok(5));
    }
}
