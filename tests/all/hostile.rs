//! Hostile plugins are contained and their ends classified by type.

use std::time::{Duration, Instant};

use serde_json::json;
use spool::{Limits, Outcome, TrapKind};

use crate::support::{job, limits, log_text, plugin, plugin_with, sandbox};

fn behaviour(name: &str) -> spool::JobInput {
    job(json!({ "behaviour": name }))
}

fn with_timeout(timeout: Duration) -> Limits {
    Limits {
        timeout: Some(timeout),
        ..limits()
    }
}

fn trap_kind(outcome: &Outcome) -> Option<TrapKind> {
    match outcome {
        Outcome::Trapped { kind, .. } => Some(*kind),
        _ => None,
    }
}

#[tokio::test]
async fn a_spin_loop_is_aborted_well_before_twice_its_deadline() {
    let deadline = Duration::from_millis(200);
    let hostile = plugin_with("hostile", with_timeout(deadline));
    let started = Instant::now();
    let report = sandbox().run(&hostile, &behaviour("spin")).await.unwrap();
    let wall = started.elapsed();
    let Outcome::TimedOut { elapsed } = report.outcome else {
        panic!("expected a timeout, got {:?}", report.outcome);
    };
    assert!(elapsed >= deadline, "aborted early: {elapsed:?}");
    assert!(wall < deadline * 2, "aborted late: {wall:?}");
}

#[tokio::test]
async fn an_hour_long_sleep_is_aborted_well_before_twice_its_deadline() {
    let deadline = Duration::from_millis(200);
    let hostile = plugin_with("hostile", with_timeout(deadline));
    let started = Instant::now();
    let report = sandbox().run(&hostile, &behaviour("sleep")).await.unwrap();
    let wall = started.elapsed();
    let Outcome::TimedOut { elapsed } = report.outcome else {
        panic!("expected a timeout, got {:?}", report.outcome);
    };
    assert!(elapsed >= deadline, "aborted early: {elapsed:?}");
    assert!(wall < deadline * 2, "aborted late: {wall:?}");
}

#[tokio::test]
async fn unbounded_allocation_is_stopped_at_the_memory_cap_as_out_of_memory() {
    let hostile = plugin_with(
        "hostile",
        Limits {
            memory: 32 << 20,
            ..limits()
        },
    );
    let report = sandbox().run(&hostile, &behaviour("alloc")).await.unwrap();
    assert_eq!(
        trap_kind(&report.outcome),
        Some(TrapKind::OutOfMemory),
        "{:?}",
        report.outcome
    );
}

#[tokio::test]
async fn unbounded_recursion_is_a_stack_overflow() {
    let report = sandbox()
        .run(&plugin("hostile"), &behaviour("recurse"))
        .await
        .unwrap();
    assert_eq!(
        trap_kind(&report.outcome),
        Some(TrapKind::StackOverflow),
        "{:?}",
        report.outcome
    );
}

#[tokio::test]
async fn a_panic_is_classified_as_such_and_its_message_kept_in_the_log() {
    let report = sandbox()
        .run(&plugin("hostile"), &behaviour("panic"))
        .await
        .unwrap();
    assert_eq!(
        trap_kind(&report.outcome),
        Some(TrapKind::Panic),
        "{:?}",
        report.outcome
    );
    assert!(log_text(&report).contains("panicked"), "{:#?}", report.logs);
}

async fn output_of(name: &str) -> serde_json::Value {
    let report = sandbox()
        .run(&plugin("hostile"), &behaviour(name))
        .await
        .unwrap();
    let Outcome::Succeeded { output } = report.outcome else {
        panic!(
            "{name}: expected the plugin to report what it saw, got {:?}",
            report.outcome
        );
    };
    serde_json::from_slice(&output).unwrap()
}

#[tokio::test]
async fn the_filesystem_is_out_of_reach() {
    let seen = output_of("read-file").await.to_string();
    assert!(!seen.contains("root:"), "read /etc/passwd: {seen}");
    assert!(seen.contains("error"), "{seen}");
}

#[tokio::test]
async fn the_environment_is_empty() {
    let seen = output_of("read-env").await;
    let text = seen.to_string();
    assert!(!text.contains("/usr/bin"), "saw the host's PATH: {text}");
    assert!(!text.contains("/root"), "saw the host's HOME: {text}");
}

#[tokio::test]
async fn sockets_are_refused() {
    let seen = output_of("socket").await.to_string();
    assert!(seen.contains("error"), "{seen}");
    assert!(!seen.contains("connected"), "{seen}");
}

#[tokio::test]
async fn a_huge_output_is_refused_at_the_output_limit() {
    let report = sandbox()
        .run(&plugin("hostile"), &behaviour("huge-output"))
        .await
        .unwrap();
    assert_eq!(
        trap_kind(&report.outcome),
        Some(TrapKind::OutputTooLarge),
        "{:?}",
        report.outcome.name()
    );
}

#[tokio::test]
async fn huge_stdout_is_captured_up_to_the_log_limit_and_the_rest_counted() {
    let hostile = plugin_with(
        "hostile",
        Limits {
            max_log_bytes: 64 << 10,
            // 32 MiB through a debug build of the host is slow when the tests run in parallel.
            timeout: Some(Duration::from_secs(30)),
            ..limits()
        },
    );
    let report = sandbox()
        .run(&hostile, &behaviour("huge-stdout"))
        .await
        .unwrap();
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    let kept: usize = report.logs.iter().map(|l| l.message.len()).sum();
    assert!(kept <= (64 << 10) + 1024, "kept {kept} bytes of log");
    assert!(kept >= 32 << 10, "kept only {kept} bytes of log");
    assert!(
        report.logs_dropped.stdio_bytes > 16 << 20,
        "{:?}",
        report.logs_dropped
    );
    assert!(log_text(&report).contains("log limit reached"));
}

/// Lines and fields without bytes still cost the log budget (a line 80 bytes, a field 48):
/// what one attempt keeps, in lines and in its stored form, stays within the budget however
/// it logs.
#[tokio::test]
async fn empty_log_lines_and_fields_are_kept_within_the_log_budget() {
    const BUDGET: usize = 256 << 10;
    for case in ["empty-logs", "empty-fields", "empty-lines"] {
        let hostile = plugin_with(
            "hostile",
            Limits {
                max_log_bytes: BUDGET,
                timeout: Some(Duration::from_secs(60)),
                ..limits()
            },
        );
        let report = sandbox().run(&hostile, &behaviour(case)).await.unwrap();
        assert!(report.outcome.is_success(), "{case}: {:?}", report.outcome);
        let stored = serde_json::to_vec(&report.logs).unwrap().len();
        assert!(
            stored <= BUDGET + 1024,
            "{case}: {} lines kept, {stored} bytes stored for a budget of {BUDGET}",
            report.logs.len()
        );
        assert!(
            report.logs.len() <= BUDGET / 80 + 1,
            "{case}: {} lines kept",
            report.logs.len()
        );
        // Not a log that keeps nothing: most of the budget is used, then lines are counted.
        let charged: usize = report
            .logs
            .iter()
            .map(|l| {
                80 + l.message.len()
                    + l.fields
                        .iter()
                        .map(|(k, v)| 48 + k.len() + v.len())
                        .sum::<usize>()
            })
            .sum();
        assert!(
            charged >= BUDGET / 2,
            "{case}: {} lines kept, {charged} bytes charged",
            report.logs.len()
        );
        let dropped = report.logs_dropped;
        assert!(
            dropped.lines > 0 || dropped.stdio_bytes > 0,
            "{case}: nothing counted as dropped"
        );
        assert!(log_text(&report).contains("log limit reached"), "{case}");
    }
}

/// What an attempt may store is capped, each cap named when it is hit: one checkpoint
/// (`max_checkpoint`), its step results together (`max_step_output`) and its children's
/// payloads together (`max_child_payload`, refused to the plugin, which goes on).
#[tokio::test]
async fn checkpoints_step_results_and_child_payloads_are_capped_per_attempt() {
    let limits = Limits {
        timeout: Some(Duration::from_secs(60)),
        ..limits()
    };
    let hostile = plugin_with("hostile", limits);
    for (case, cap) in [
        ("big-checkpoint", "max_checkpoint"),
        ("big-steps", "max_step_output"),
    ] {
        let report = sandbox().run(&hostile, &behaviour(case)).await.unwrap();
        let Outcome::Trapped { message, .. } = &report.outcome else {
            panic!("{case}: {:?}", report.outcome.name());
        };
        assert!(message.contains(cap), "{case}: {message}");
        assert!(log_text(&report).contains(cap), "{case}");
    }
    let report = sandbox()
        .run(&hostile, &behaviour("big-children"))
        .await
        .unwrap();
    let Outcome::Succeeded { output } = &report.outcome else {
        panic!("{:?}", report.outcome);
    };
    let output: serde_json::Value = serde_json::from_slice(output).unwrap();
    // 16 MiB by default: four children of 4 MiB fit, the fifth does not.
    assert_eq!(output["accepted"], 4, "{output}");
    assert!(
        output["refused"]
            .as_str()
            .unwrap()
            .contains("max_child_payload"),
        "{output}"
    );
    assert_eq!(report.children.len(), 4);
}

/// A thousand hostile attempts in a row, eight at a time, each classified as it should be,
/// and the host still serves a good job at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_keeps_serving_good_jobs_after_a_thousand_hostile_runs() {
    type Expected = fn(&Outcome) -> bool;
    let cases: [(&str, Limits, Expected); 5] = [
        ("panic", limits(), |o| trap_kind(o) == Some(TrapKind::Panic)),
        (
            "alloc",
            Limits {
                memory: 16 << 20,
                ..limits()
            },
            |o| trap_kind(o) == Some(TrapKind::OutOfMemory),
        ),
        ("recurse", limits(), |o| {
            trap_kind(o) == Some(TrapKind::StackOverflow)
        }),
        ("spin", with_timeout(Duration::from_millis(5)), |o| {
            matches!(o, Outcome::TimedOut { .. })
        }),
        ("sleep", with_timeout(Duration::from_millis(5)), |o| {
            matches!(o, Outcome::TimedOut { .. })
        }),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let (name, limits, expected) = cases[i % cases.len()];
        let hostile = plugin_with("hostile", limits);
        tasks.spawn(async move {
            let report = sandbox().run(&hostile, &behaviour(name)).await.unwrap();
            assert!(
                expected(&report.outcome),
                "run {i} ({name}): {:?}",
                report.outcome
            );
        });
        if tasks.len() >= 8 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let report = sandbox()
        .run(
            &plugin("email"),
            &job(json!({"to": "ada@example.com", "mode": "ok"})),
        )
        .await
        .unwrap();
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
}
