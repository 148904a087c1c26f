//! Every outcome an attempt can end in, through the `email` demo plugin.

use std::time::Duration;

use serde_json::json;
use spool::{LogLevel, LogSource, Outcome};

use crate::support::{job, limits, log_text, plugin, plugin_with, sandbox};

#[tokio::test]
async fn ok_mode_succeeds_with_output_and_a_structured_log_line() {
    let report = sandbox()
        .run(
            &plugin("email"),
            &job(json!({"to": "ada@example.com", "mode": "ok"})),
        )
        .await
        .unwrap();
    let Outcome::Succeeded { output } = &report.outcome else {
        panic!("expected success, got {:?}", report.outcome);
    };
    let output: serde_json::Value = serde_json::from_slice(output).unwrap();
    assert_eq!(output["sent_to"], "ada@example.com");
    let line = report
        .logs
        .iter()
        .find(|l| l.source == LogSource::Plugin)
        .expect("a log line from the plugin");
    assert_eq!(line.level, LogLevel::Info);
    assert!(
        line.fields
            .contains(&("to".to_owned(), "ada@example.com".to_owned()))
    );
    assert_eq!(&report.digest, plugin("email").digest());
}

#[tokio::test]
async fn flaky_mode_asks_for_a_retry_then_succeeds_on_the_second_attempt() {
    let email = plugin("email");
    let mut input = job(json!({"to": "ada@example.com", "mode": "flaky"}));
    let first = sandbox().run(&email, &input).await.unwrap();
    assert!(
        matches!(first.outcome, Outcome::Retry { .. }),
        "{:?}",
        first.outcome
    );
    input.attempt = 2;
    let second = sandbox().run(&email, &input).await.unwrap();
    assert!(second.outcome.is_success(), "{:?}", second.outcome);
}

#[tokio::test]
async fn fail_mode_asks_for_a_retry_on_every_attempt() {
    let email = plugin("email");
    for attempt in 1..=3 {
        let mut input = job(json!({"to": "ada@example.com", "mode": "fail"}));
        input.attempt = attempt;
        let report = sandbox().run(&email, &input).await.unwrap();
        let Outcome::Retry { message, .. } = &report.outcome else {
            panic!(
                "attempt {attempt}: expected retry, got {:?}",
                report.outcome
            );
        };
        assert!(!message.is_empty());
    }
}

#[tokio::test]
async fn reject_mode_fails_permanently() {
    let report = sandbox()
        .run(
            &plugin("email"),
            &job(json!({"to": "nobody", "mode": "reject"})),
        )
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, Outcome::Fail { .. }),
        "{:?}",
        report.outcome
    );
}

#[tokio::test]
async fn delay_mode_asks_to_run_again_later_without_spending_an_attempt() {
    let report = sandbox()
        .run(
            &plugin("email"),
            &job(json!({"to": "ada@example.com", "mode": "delay", "delay_ms": 1500})),
        )
        .await
        .unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Delay {
            duration: Duration::from_millis(1500)
        }
    );
}

#[tokio::test]
async fn hang_mode_is_aborted_at_its_timeout_keeping_the_checkpoint_it_saved_first() {
    let email = plugin_with(
        "email",
        spool::Limits {
            timeout: Some(Duration::from_millis(300)),
            ..limits()
        },
    );
    let report = sandbox()
        .run(
            &email,
            &job(json!({"to": "ada@example.com", "mode": "hang"})),
        )
        .await
        .unwrap();
    let Outcome::TimedOut { elapsed } = report.outcome else {
        panic!("expected a timeout, got {:?}", report.outcome);
    };
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");
    assert!(
        report.checkpoint.is_some(),
        "the checkpoint saved before the hang"
    );
    assert!(log_text(&report).contains("aborted at the deadline"));
}

#[tokio::test]
async fn a_payload_that_does_not_decode_fails_naming_the_field() {
    let email = plugin("email");
    let missing = sandbox()
        .run(&email, &job(json!({"mode": "ok"})))
        .await
        .unwrap();
    let Outcome::InvalidPayload { message } = &missing.outcome else {
        panic!("expected invalid-payload, got {:?}", missing.outcome);
    };
    assert!(message.contains("`to`"), "{message}");

    let wrong_type = sandbox()
        .run(
            &email,
            &job(json!({"to": "ada@example.com", "mode": "hang", "delay_ms": "soon"})),
        )
        .await
        .unwrap();
    let Outcome::InvalidPayload { message } = &wrong_type.outcome else {
        panic!("expected invalid-payload, got {:?}", wrong_type.outcome);
    };
    assert!(message.contains("delay_ms"), "{message}");

    let not_json = sandbox()
        .run(&email, &spool::JobInput::new("test", b"not json".to_vec()))
        .await
        .unwrap();
    assert!(
        matches!(not_json.outcome, Outcome::InvalidPayload { .. }),
        "{:?}",
        not_json.outcome
    );
}

#[tokio::test]
async fn the_job_record_reaches_the_plugin() {
    // `ok` echoes the attempt it ran as.
    let mut input = job(json!({"to": "ada@example.com", "mode": "ok"}));
    input.attempt = 2;
    let report = sandbox().run(&plugin("email"), &input).await.unwrap();
    let Outcome::Succeeded { output } = &report.outcome else {
        panic!("{:?}", report.outcome);
    };
    let output: serde_json::Value = serde_json::from_slice(output).unwrap();
    assert_eq!(output["attempt"], 2);
}
