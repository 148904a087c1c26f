//! `steps`: three durable steps, to test that a retried job skips the steps it already did.
//!
//! Payload: `{"n": i64, "crash_after"?: "one" | "two" | "three", "hang_after"?: "one" | "two" |
//! "three"}` (any other step name is a bad payload).
//!
//! The job runs three steps through [`Job::step`], in this order:
//!
//! | step    | result                  |
//! |---------|-------------------------|
//! | `one`   | `n + 1`                 |
//! | `two`   | the result of `one` × 2 |
//! | `three` | the result of `two` + 3 |
//!
//! A step that really runs, rather than being replayed from an earlier attempt, logs `info`
//! `step <name> ran` (for example `step one ran`) with no fields, so counting those lines over a
//! job's attempts tells how often each step ran.
//!
//! After each step (replayed or run), the plugin reports its progress: `33` with the note
//! `step one done`, then `67` (`step two done`), then `100` (`step three done`).
//!
//! On attempt 1 only, right after the step named by `crash_after` has completed (its result
//! already stored), the plugin panics, which traps; right after the step named by `hang_after`
//! it spins forever, until the host's timeout stops it. If both name the same step, the crash
//! wins. Later attempts run to the end.
//!
//! Output: `{"result": (n + 1) * 2 + 3}`, e.g. `{"result": 25}` for `n = 10`. Arithmetic that
//! overflows `i64` fails the job for good.

use std::hint::black_box;

use serde::{Deserialize, Serialize};
use spool_sdk::{Job, JobError};

#[derive(Deserialize)]
struct Orders {
    n: i64,
    crash_after: Option<Name>,
    hang_after: Option<Name>,
}

/// The name of one of the three steps.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Name {
    One,
    Two,
    Three,
}

impl Name {
    fn as_str(self) -> &'static str {
        match self {
            Self::One => "one",
            Self::Two => "two",
            Self::Three => "three",
        }
    }
}

#[derive(Serialize)]
struct Done {
    result: i64,
}

fn run(job: &Job, orders: Orders) -> Result<Done, JobError> {
    let one = step(job, &orders, Name::One, || orders.n.checked_add(1))?;
    let two = step(job, &orders, Name::Two, || one.checked_mul(2))?;
    let three = step(job, &orders, Name::Three, || two.checked_add(3))?;
    Ok(Done { result: three })
}

/// Runs step `name` (logging when it really runs), then crashes or hangs if the orders say so.
fn step(
    job: &Job,
    orders: &Orders,
    name: Name,
    compute: impl FnOnce() -> Option<i64>,
) -> Result<i64, JobError> {
    let name_str = name.as_str();
    let value = job.step(name_str, || {
        spool_sdk::info!("step {name_str} ran");
        compute().ok_or_else(|| JobError::fail(format_args!("step {name_str} overflows i64")))
    })?;
    let percent = match name {
        Name::One => 33,
        Name::Two => 67,
        Name::Three => 100,
    };
    spool_sdk::progress(percent, Some(&format!("step {name_str} done")));
    if job.attempt() == 1 {
        if orders.crash_after == Some(name) {
            crash(name_str);
        }
        if orders.hang_after == Some(name) {
            spin();
        }
    }
    Ok(value)
}

#[allow(clippy::panic, reason = "an injected crash is the point")]
fn crash(after: &str) -> ! {
    panic!("steps plugin crashes after step {after} on purpose")
}

/// Burns CPU until the host stops it; `black_box` keeps the loop from being optimised away.
fn spin() -> ! {
    let mut x: u64 = 1;
    loop {
        x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}

spool_sdk::export!(run);
