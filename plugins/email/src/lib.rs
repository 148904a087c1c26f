//! `email`: the demo job, a mail sender whose payload picks how it behaves.
//!
//! Payload: `{"to": string, "mode"?: "ok" | "flaky" | "fail" | "reject" | "delay" | "hang",
//! "delay_ms"?: u64}` (`mode` defaults to `ok`; an unknown mode is a bad payload, which fails the
//! job at once naming the field).
//!
//! | mode     | what happens                                                                   |
//! |----------|--------------------------------------------------------------------------------|
//! | `ok`     | succeeds on the first attempt                                                  |
//! | `flaky`  | attempt 1 is a retryable error, attempt 2 and later succeed                    |
//! | `fail`   | every attempt is a retryable error ("smtp server unavailable")                 |
//! | `reject` | permanent error at once ("invalid recipient ...")                              |
//! | `delay`  | saves checkpoint `{"stage": "delayed", ..}` and asks to run again in `delay_ms` |
//! |          | (default 1000); the run that gets that checkpoint back succeeds                |
//! | `hang`   | saves checkpoint `{"stage": "connected", ..}`, sleeps `delay_ms` (default 8000) |
//! |          | on the monotonic clock, then sends and succeeds                                |
//!
//! Sending: when the queue's config sets `api_base`, each run that gets to succeed first POSTs
//! `{"to", "job", "attempt"}` as JSON to `{api_base}/send`, with `Authorization: Bearer
//! <api_key>` when the `api_key` secret is set (the queue must grant that address:
//! `[queues.<q>.grants] http = [...]`). The answer decides as `spool_sdk::http` maps it: 2xx
//! succeeds, 429 and 5xx are retryable errors, any other 4xx (or a refused request) a
//! permanent one. Without `api_base` the send is only pretended, as it always was.
//!
//! Every run first logs `info` "sending email" with fields `to`, `mode` and `attempt`.
//! Success output: `{"sent_to": to, "attempt": n}`. Checkpoints are
//! `{"stage": "delayed" | "connected", "attempt": n}`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_sdk::{Job, JobError};

/// How long `hang` sleeps when the payload gives no `delay_ms`.
const DEFAULT_HANG: Duration = Duration::from_millis(8_000);
/// How long `delay` asks to wait when the payload gives no `delay_ms`.
const DEFAULT_DELAY: Duration = Duration::from_millis(1_000);

#[derive(Deserialize)]
struct Email {
    to: String,
    #[serde(default)]
    mode: Mode,
    delay_ms: Option<u64>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Ok,
    Flaky,
    Fail,
    Reject,
    Delay,
    Hang,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Flaky => "flaky",
            Self::Fail => "fail",
            Self::Reject => "reject",
            Self::Delay => "delay",
            Self::Hang => "hang",
        }
    }
}

#[derive(Serialize)]
struct Sent {
    sent_to: String,
    attempt: u32,
}

/// What the mail API receives.
#[derive(Serialize)]
struct Delivery<'a> {
    to: &'a str,
    job: &'a str,
    attempt: u32,
}

/// What an earlier run got to, saved as the job's checkpoint.
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    stage: Stage,
    attempt: u32,
}

#[derive(Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Stage {
    /// `delay` asked to be run again.
    Delayed,
    /// `hang` reached the (pretend) server.
    Connected,
}

fn send(job: &Job, email: Email) -> Result<Sent, JobError> {
    let attempt = job.attempt();
    spool_sdk::info!(
        "sending email",
        to = email.to,
        mode = email.mode.name(),
        attempt = attempt
    );
    match email.mode {
        Mode::Ok => {}
        Mode::Flaky if attempt <= 1 => {
            return Err(JobError::retry(
                "smtp connection reset (flaky: first attempt fails)",
            ));
        }
        Mode::Flaky => {}
        Mode::Fail => return Err(JobError::retry("smtp server unavailable")),
        Mode::Reject => {
            return Err(JobError::fail(format_args!(
                "invalid recipient {:?}",
                email.to
            )));
        }
        Mode::Delay => {
            let delayed_before =
                matches!(job.checkpoint::<Checkpoint>(), Some(Ok(c)) if c.stage == Stage::Delayed);
            if !delayed_before {
                spool_sdk::checkpoint(&Checkpoint {
                    stage: Stage::Delayed,
                    attempt,
                })?;
                let delay = email.delay_ms.map_or(DEFAULT_DELAY, Duration::from_millis);
                return Err(JobError::delay(delay));
            }
        }
        Mode::Hang => {
            spool_sdk::checkpoint(&Checkpoint {
                stage: Stage::Connected,
                attempt,
            })?;
            let delay = email.delay_ms.map_or(DEFAULT_HANG, Duration::from_millis);
            spool_sdk::info!("waiting for the smtp server", delay_ms = delay.as_millis());
            std::thread::sleep(delay);
        }
    }
    deliver(job, &email.to)?;
    Ok(Sent {
        sent_to: email.to,
        attempt,
    })
}

/// Send through the mail API the queue configures, or pretend to when it configures none.
fn deliver(job: &Job, to: &str) -> Result<(), JobError> {
    let Some(api_base) = spool_sdk::config::get("api_base") else {
        return Ok(());
    };
    let url = format!("{}/send", api_base.trim_end_matches('/'));
    let delivery = Delivery {
        to,
        job: job.id(),
        attempt: job.attempt(),
    };
    let mut request = spool_sdk::http::post_json(url, &delivery);
    if let Some(key) = spool_sdk::secret("api_key") {
        request = request.bearer(key.expose());
    }
    request.send()?;
    Ok(())
}

spool_sdk::export!(send);
