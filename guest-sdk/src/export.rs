//! [`export!`](crate::export): turn one typed function into the component's `handler` export.
//!
//! The macro implements the generated `Guest` trait for a hidden type whose `handle` calls
//! [`__private::handle`], which decodes the payload, runs the handler and encodes its result.
//! The handler's signature is checked through the [`Handler`] bound, so a mistake is a compile
//! error at the `export!` call.

use crate::{Job, JobError, Output, Payload};

/// A function that can handle jobs: `fn(&Job, P) -> Result<O, JobError>`.
///
/// Implemented for every such function or closure whose `P` is a [`Payload`] and whose `O` is an
/// [`Output`]; there is nothing to implement by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Spool job handler",
    label = "expected `fn(&Job, P) -> Result<O, JobError>`",
    note = "a handler takes `&spool_sdk::Job` and a payload `P: serde::Deserialize` (or \
            `spool_sdk::Raw`) and returns `Result<O, spool_sdk::JobError>` with \
            `O: serde::Serialize` (or `spool_sdk::Raw`)"
)]
pub trait Handler<P, O> {
    /// Run one attempt.
    fn call(self, job: &Job, payload: P) -> Result<O, JobError>;
}

impl<F, P, O> Handler<P, O> for F
where
    F: FnOnce(&Job, P) -> Result<O, JobError>,
    P: Payload,
    O: Output,
{
    fn call(self, job: &Job, payload: P) -> Result<O, JobError> {
        self(job, payload)
    }
}

/// Export `handler` as this component's job handler.
///
/// `handler` is a function (or closure) `fn(&Job, P) -> Result<O, JobError>`: `P` is decoded from
/// the JSON payload (or is [`Raw`](crate::Raw)), `O` is encoded as JSON output (or is `Raw`). Use
/// it once per plugin crate, at item level.
///
/// ```
/// fn echo(_: &spool_sdk::Job, text: String) -> Result<String, spool_sdk::JobError> {
///     Ok(text)
/// }
/// spool_sdk::export!(echo);
/// # fn main() {}
/// ```
///
/// Outside wasm32 it only checks the handler's signature, so plugin crates still build and
/// test natively.
#[macro_export]
macro_rules! export {
    ($handler:expr $(,)?) => {
        const _: () = {
            #[allow(dead_code, reason = "only exported on wasm32")]
            struct SpoolPlugin;

            impl $crate::wit::exports::spool::job::handler::Guest for SpoolPlugin {
                fn handle(
                    job: $crate::wit::spool::job::types::Job,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<u8>,
                    $crate::wit::spool::job::types::JobError,
                > {
                    $crate::__private::handle(job, $handler)
                }
            }

            #[cfg(target_arch = "wasm32")]
    $crate::wit::__export_plugin!(SpoolPlugin with_types_in $crate::wit);
        };
    };
}

/// Support for [`export!`](crate::export); not part of the API.
#[doc(hidden)]
pub mod __private {
    use super::Handler;
    use crate::wit::spool::job::types as wit;
    use crate::{Job, Output, Payload};

    /// Run one attempt through `handler`, from WIT job to WIT result.
    pub fn handle<P, O>(
        job: wit::Job,
        handler: impl Handler<P, O>,
    ) -> Result<Vec<u8>, wit::JobError>
    where
        P: Payload,
        O: Output,
    {
        let job = Job::from(job);
        P::from_payload(job.payload())
            .and_then(|payload| handler.call(&job, payload))
            .and_then(Output::into_output)
            .map_err(wit::JobError::from)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::__private::handle;
    use crate::wit::spool::job::types as wit;
    use crate::{Job, JobError, Raw};

    #[derive(Deserialize)]
    struct Greet {
        name: String,
    }

    #[derive(Serialize)]
    struct Greeting {
        text: String,
        attempt: u32,
    }

    fn greet(job: &Job, greet: Greet) -> Result<Greeting, JobError> {
        if greet.name.is_empty() {
            return Err(JobError::retry("nobody to greet yet"));
        }
        Ok(Greeting {
            text: format!("hello {}", greet.name),
            attempt: job.attempt(),
        })
    }

    fn wit_job(payload: &str) -> wit::Job {
        wit::Job {
            id: "j1".into(),
            queue: "q".into(),
            payload: payload.as_bytes().to_vec(),
            attempt: 2,
            max_attempts: 3,
            checkpoint: None,
            tenant: None,
            metadata: Vec::new(),
            parent: None,
            steps: Vec::new(),
            children: Vec::new(),
        }
    }

    #[test]
    fn typed_handler_gets_decoded_payload_and_returns_json() {
        let out = handle(wit_job(r#"{"name": "ada"}"#), greet);
        assert_eq!(
            out.ok(),
            Some(br#"{"text":"hello ada","attempt":2}"#.to_vec())
        );
    }

    #[test]
    fn handler_errors_reach_the_host_as_wit_errors() {
        let out = handle(wit_job(r#"{"name": ""}"#), greet);
        assert!(matches!(
            out,
            Err(wit::JobError::Retry(wit::RetryError { message, retry_after_ms: None }))
                if message == "nobody to greet yet"
        ));
    }

    #[test]
    fn bad_payload_fails_without_calling_the_handler() {
        let out = handle(
            wit_job(r#"{"name": 3}"#),
            |_: &Job, _: Greet| -> Result<Raw, JobError> { unreachable!("handler must not run") },
        );
        assert!(matches!(
            out,
            Err(wit::JobError::InvalidPayload(message))
                if message == "bad payload: name: invalid type: integer `3`, expected a string"
        ));
    }

    #[test]
    fn raw_handler_sees_bytes_as_enqueued() {
        let out = handle(wit_job("not json"), |_: &Job, raw: Raw| {
            Ok::<_, JobError>(raw)
        });
        assert_eq!(out.ok(), Some(b"not json".to_vec()));
    }

    // The macro itself, natively: it must type-check a handler without exporting anything.
    crate::export!(greet);
}
