//! `fanout`: a parent job that spawns child jobs and adds up what they return.
//!
//! One component plays both roles; the payload says which (a payload with `n` and `queue` is a
//! parent, one with `value` a child; anything else is a bad payload).
//!
//! **Parent** payload: `{"n": u32, "queue": string, "on_failure"?: "fail-parent" | "report",
//! "fail_child"?: u32, "pad"?: u32}`.
//!
//! - First run (no children yet): enqueues `n` children on `queue`, child `i` (for `i` in
//!   `1..=n`, in that order) with payload `{"value": i}`, or `{"value": i, "fail": true}` when
//!   `i` is `fail_child`; with `pad`, each child's payload also carries `"pad"`, a string of
//!   that many `x` (large children, for the host's limits and outputs). Every child gets `on_failure` (default `fail-parent`) as its
//!   on-failure option and no other options. Logs `info` `enqueued children` with fields `n` and
//!   `queue`, then waits for the children.
//! - Woken with every child finished: succeeds with `{"sum": S, "children": C, "failed": F}`,
//!   where `S` is the sum of the `value`s in the succeeded children's outputs, `C` the number of
//!   children and `F` how many of them are dead or cancelled. With no failures
//!   `S = 1² + … + n² = n(n+1)(2n+1)/6`, e.g. `{"sum": 14, "children": 3, "failed": 0}` for
//!   `n = 3`.
//! - `n = 0` succeeds at once with `{"sum": 0, "children": 0, "failed": 0}`.
//! - Woken while a child is still pending (the host promises that never happens), or with a
//!   succeeded child whose output is not `{"value": i64}`: fails for good.
//!
//! **Child** payload: `{"value": i64, "fail"?: bool, "pad"?: string}` (`pad` is ignored). Succeeds with `{"value": value²}`; with
//! `"fail": true` it fails for good at once (`child asked to fail`), so it is dead after one
//! attempt.

use serde::{Deserialize, Serialize};
use spool_sdk::{ChildState, EnqueueOptions, Job, JobError, OnChildFailure};

#[derive(Deserialize)]
#[serde(untagged)]
enum Orders {
    Parent(Parent),
    Child(ChildOrders),
}

#[derive(Deserialize)]
struct Parent {
    n: u32,
    queue: String,
    #[serde(default)]
    on_failure: OnFailure,
    fail_child: Option<u32>,
    #[serde(default)]
    pad: usize,
}

/// The parent payload's spelling of [`OnChildFailure`].
#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum OnFailure {
    #[default]
    FailParent,
    Report,
}

impl From<OnFailure> for OnChildFailure {
    fn from(on_failure: OnFailure) -> Self {
        match on_failure {
            OnFailure::FailParent => Self::FailParent,
            OnFailure::Report => Self::Report,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ChildOrders {
    value: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    fail: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pad: String,
}

/// A child's output.
#[derive(Serialize, Deserialize)]
struct Square {
    value: i64,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Done {
    Parent(Sum),
    Child(Square),
}

#[derive(Serialize, Default)]
struct Sum {
    sum: i64,
    children: usize,
    failed: usize,
}

fn run(job: &Job, orders: Orders) -> Result<Done, JobError> {
    match orders {
        Orders::Parent(parent) => fan_out(job, parent).map(Done::Parent),
        Orders::Child(child) => square(child).map(Done::Child),
    }
}

fn fan_out(job: &Job, parent: Parent) -> Result<Sum, JobError> {
    if parent.n == 0 {
        return Ok(Sum::default());
    }
    if job.children().is_empty() {
        for i in 1..=parent.n {
            let orders = ChildOrders {
                value: i64::from(i),
                fail: parent.fail_child == Some(i),
                pad: "x".repeat(parent.pad),
            };
            let options = EnqueueOptions::default().on_failure(parent.on_failure.into());
            spool_sdk::enqueue(&parent.queue, &orders, options)?;
        }
        spool_sdk::info!("enqueued children", n = parent.n, queue = parent.queue);
        return Err(JobError::wait_for_children());
    }
    add_up(job)
}

fn add_up(job: &Job) -> Result<Sum, JobError> {
    let mut sum = Sum {
        children: job.children().len(),
        ..Sum::default()
    };
    for child in job.children() {
        match child.state() {
            ChildState::Pending => {
                return Err(JobError::fail(format_args!(
                    "woken while child {} is still pending",
                    child.id()
                )));
            }
            ChildState::Succeeded => {
                let square: Square = child.output_json().unwrap_or_else(|| {
                    Err(JobError::fail(format_args!(
                        "child {} succeeded without output",
                        child.id()
                    )))
                })?;
                sum.sum = sum
                    .sum
                    .checked_add(square.value)
                    .ok_or_else(|| JobError::fail("sum overflows i64"))?;
            }
            ChildState::Dead | ChildState::Cancelled => sum.failed += 1,
        }
    }
    Ok(sum)
}

fn square(child: ChildOrders) -> Result<Square, JobError> {
    if child.fail {
        return Err(JobError::fail("child asked to fail"));
    }
    let value = child
        .value
        .checked_mul(child.value)
        .ok_or_else(|| JobError::fail("value² overflows i64"))?;
    Ok(Square { value })
}

spool_sdk::export!(run);
