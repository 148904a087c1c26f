//! Schedules end to end, on both backends: two real `spool worker` processes share a schedule
//! `every = "1s"` from the config (one job per tick, whichever of them is the leader), the
//! leader is SIGKILLed and the other carries on; a schedule added with `spool schedule add`
//! fires through a worker until `spool schedule remove`; and the commands' output and refusals
//! through the real binary.

use std::collections::{BTreeMap, HashSet};
use std::process::Child;
use std::time::{Duration, Instant};

use spool::queue::nats::{NatsBackend, NatsOptions};
use spool::queue::sqlite::{SqliteBackend, SqliteOptions};
use spool::queue::{Backend, Event, EventFilter, EventKind, JobFilter, Timestamp};
use spool::schedule::{SCHEDULE_METADATA, TICK_METADATA};

use crate::support::{NatsServer, Setup, stop};

/// Workers with a short lease: the scheduler lock lasts one lease, so a dead leader's
/// schedules move on within about two seconds.
const CONFIG: &str = r#"
[worker]
concurrency = 4
lease = "2s"
shutdown_grace = "1s"

[nats]
ack-wait = "2s"

[queues.noop]
plugin = "NOOP"

[schedules.pulse]
queue = "noop"
every = "1s"
payload = { beat = true }
"#;

/// Generous bounds: a debug build on a shared machine.
const BOUND: Duration = Duration::from_secs(40);

async fn fired<B: Backend>(backend: &B) -> Vec<Event> {
    backend
        .events(&EventFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::ScheduleFired)
        .collect()
}

/// The pid in a worker id (`worker-<pid>-<hex>`).
fn pid_of(worker: &str) -> u32 {
    worker.split('-').nth(1).unwrap().parse().unwrap()
}

/// Every job of schedule `pulse`, by tick, checking that no tick has two jobs.
async fn ticks<B: Backend>(backend: &B) -> BTreeMap<Timestamp, String> {
    let filter = JobFilter {
        queue: Some("noop".into()),
        limit: Some(10_000),
        ..JobFilter::default()
    };
    let mut by_tick = BTreeMap::new();
    for summary in backend.jobs(&filter).await.unwrap() {
        let job = backend.job(&summary.id).await.unwrap().unwrap();
        let meta: BTreeMap<_, _> = job.metadata.iter().cloned().collect();
        assert_eq!(
            meta.get(SCHEDULE_METADATA).map(String::as_str),
            Some("pulse")
        );
        assert_eq!(job.payload, br#"{"beat":true}"#);
        let tick: Timestamp = meta[TICK_METADATA].parse().unwrap();
        assert_eq!(tick % 1000, 0, "ticks fall on whole seconds");
        if let Some(other) = by_tick.insert(tick, summary.id.0.clone()) {
            panic!("tick {tick} fired twice: jobs {other} and {}", summary.id);
        }
    }
    by_tick
}

/// Wait until `enough` holds of the schedule-fired events, checking the workers live.
async fn wait_fired<B: Backend>(
    backend: &B,
    s: &Setup,
    workers: &mut [Child],
    what: &str,
    enough: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    let start = Instant::now();
    loop {
        s.assert_running(workers);
        let events = fired(backend).await;
        if enough(&events) {
            return events;
        }
        assert!(
            start.elapsed() < BOUND,
            "{what}: {} schedule-fired events so far\n{}",
            events.len(),
            s.worker_logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `orphans`: how many jobs may lack a `schedule-fired` event at the end (see below).
async fn two_workers_fire_each_tick_once_and_survive_the_leader<B: Backend>(
    backend: B,
    s: &Setup,
    orphans: usize,
) {
    let mut workers = vec![s.worker(&[]), s.worker(&[])];
    // A few seconds with both running.
    let events = wait_fired(&backend, s, &mut workers, "both workers", |e| e.len() >= 5).await;
    let by_tick = ticks(&backend).await;
    assert!(by_tick.len() >= 5);
    // While the leader lives it fires every tick (a tick it fired late by a whole interval
    // would be skipped, with an event saying so).
    let skipped: u64 = skipped_ticks(&backend).await;
    let first = *by_tick.keys().next().unwrap();
    let last = *by_tick.keys().last().unwrap();
    let span = u64::try_from((last - first) / 1000 + 1).unwrap();
    assert!(
        span <= by_tick.len() as u64 + skipped,
        "ticks {:?}, {skipped} skipped",
        by_tick.keys().collect::<Vec<_>>()
    );
    let leaders: HashSet<u32> = events
        .iter()
        .map(|e| pid_of(e.worker.as_deref().unwrap()))
        .collect();
    eprintln!(
        "{} ticks fired by {} leader(s), {skipped} skipped",
        events.len(),
        leaders.len()
    );
    if skipped > 0 {
        for e in backend.events(&EventFilter::default()).await.unwrap() {
            if matches!(
                e.kind,
                EventKind::ScheduleFired | EventKind::ScheduleSkipped
            ) {
                eprintln!("  {} {:?} {:?} {:?}", e.at, e.kind, e.worker, e.message);
            }
        }
    }

    // Kill the leader; the other takes over within about the lock's expiry.
    let leader = pid_of(events.last().unwrap().worker.as_deref().unwrap());
    let index = workers.iter().position(|w| w.id() == leader).unwrap();
    let killed = workers.remove(index);
    stop(killed, "-KILL");
    // Read again: the leader may have fired once more before it died.
    let before = fired(&backend).await.len();
    let killed_at = Instant::now();
    let events = wait_fired(&backend, s, &mut workers, "after the leader died", |e| {
        e.len() >= before + 3
            && e[before..]
                .iter()
                .all(|e| pid_of(e.worker.as_deref().unwrap()) != leader)
    })
    .await;
    eprintln!(
        "the survivor fired 3 ticks {:?} after the kill",
        killed_at.elapsed()
    );
    let survivor = workers[0].id();
    assert!(
        events[before..]
            .iter()
            .all(|e| pid_of(e.worker.as_deref().unwrap()) == survivor)
    );
    for worker in workers {
        stop(worker, "-TERM");
    }
    // The survivor led until it stopped, and gave the lock up on its way out: it is free now,
    // not for another lease.
    assert!(
        backend
            .take_leadership("probe", Duration::from_secs(60), spool::queue::now())
            .await
            .unwrap(),
        "a worker shut down gracefully kept the scheduler lock"
    );

    // Every fire's job, one per tick. On SQLite a job and its fire are one transaction; on
    // NATS a leader killed between publishing a tick's job and recording the fire leaves that
    // job without a `schedule-fired` event (a worker shut down gracefully finishes its round).
    let events = fired(&backend).await;
    let by_tick = ticks(&backend).await;
    for event in &events {
        let job = event.job_id.as_ref().unwrap();
        assert!(
            by_tick.values().any(|id| id == &job.0),
            "schedule-fired names job {job}, which is not there"
        );
    }
    assert!(
        (events.len()..=events.len() + orphans).contains(&by_tick.len()),
        "{} jobs for {} fires",
        by_tick.len(),
        events.len()
    );
}

/// How many ticks `schedule-skipped` events report.
async fn skipped_ticks<B: Backend>(backend: &B) -> u64 {
    backend
        .events(&EventFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::ScheduleSkipped)
        .map(|e| {
            let message = e.message.unwrap_or_default();
            let words: Vec<&str> = message.split_whitespace().collect();
            words[3].parse::<u64>().unwrap()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_two_workers_fire_each_tick_once_and_the_survivor_carries_on() {
    let s = Setup::new(CONFIG);
    // The test's connection creates the file; the workers share it.
    let backend = SqliteBackend::open(&s.db(), SqliteOptions::default()).unwrap();
    two_workers_fire_each_tick_once_and_survive_the_leader(backend, &s, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_nats_two_workers_fire_each_tick_once_and_the_survivor_carries_on() {
    let server = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap();
    let s = Setup::nats(CONFIG, &server.url());
    let options = NatsOptions {
        ack_wait: Duration::from_secs(2),
        ..NatsOptions::default()
    };
    let backend = NatsBackend::connect(&server.url(), options).await.unwrap();
    two_workers_fire_each_tick_once_and_survive_the_leader(backend, &s, 1).await;
}

/// For the commands that never load a plugin.
const CLI_CONFIG: &str = r#"
[queues.noop]
plugin = "noop.wasm"
"#;

fn cli_add_list_remove(s: &Setup) {
    let (code, out, err) = s.run(&[
        "schedule",
        "add",
        "nightly",
        "--queue",
        "noop",
        "--cron",
        "0 3 * * *",
        "--payload",
        r#"{"a":1}"#,
        "--missed",
        "catch-up",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("added schedule nightly"), "{out}");
    let (code, _, err) = s.run(&[
        "schedule", "add", "pulse", "--queue", "noop", "--every", "1m",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("warning"), "{err}");
    let (code, _, err) = s.run(&[
        "schedule",
        "add",
        "elsewhere",
        "--queue",
        "sms",
        "--every",
        "1m",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("warning: spool.toml has no [queues.sms]"),
        "{err}"
    );
    let (code, _, _) = s.run(&["schedule", "remove", "elsewhere"]);
    assert_eq!(code, Some(0));

    let (code, out, err) = s.run(&["schedule", "list", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let listed: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["name"], "nightly");
    assert_eq!(listed[0]["spec"], "cron \"0 3 * * *\"");
    assert_eq!(listed[0]["queue"], "noop");
    assert_eq!(listed[0]["missed"], "catch-up");
    assert_eq!(listed[0]["last_run_at"], serde_json::Value::Null);
    let next = listed[0]["next_run_at"].as_i64().unwrap();
    assert_eq!(next % 86_400_000, 3 * 3_600_000, "the next 03:00 UTC");
    assert_eq!(listed[1]["name"], "pulse");
    assert_eq!(listed[1]["spec"], "every 1m");
    assert_eq!(listed[1]["next_run_at"].as_i64().unwrap() % 60_000, 0);

    let (code, out, _) = s.run(&["schedule", "list"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("NEXT TICK"), "{out}");
    assert!(out.contains("nightly") && out.contains("never"), "{out}");

    let (code, out, err) = s.run(&["schedule", "remove", "nightly"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("removed schedule nightly"));
    let (code, _, err) = s.run(&["schedule", "remove", "nightly"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no schedule named nightly"), "{err}");
    let (_, out, _) = s.run(&["schedule", "list", "--json"]);
    assert_eq!(out.lines().count(), 1);

    // Bad input is refused with the problem named.
    for (args, expected) in [
        (
            &["--cron", "61 * * * *"][..],
            "bad cron expression `61 * * * *`",
        ),
        (&["--every", "200ms"][..], "every second at most"),
        (&["--every", "1m", "--payload", "{oops"][..], "not JSON"),
        (
            &["--every", "1m", "--missed", "later"][..],
            "use `skip` or `catch-up`",
        ),
        (
            &["--every", "1m", "--cron", "* * * * *"][..],
            "cannot be used with",
        ),
    ] {
        let mut all = vec!["schedule", "add", "bad", "--queue", "noop"];
        all.extend_from_slice(args);
        let (code, _, err) = s.run(&all);
        assert_eq!(code, Some(2), "{args:?}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let (code, _, err) = s.run(&["schedule", "add", "a.b", "--queue", "noop", "--every", "1m"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("bad schedule name `a.b`"), "{err}");
}

#[test]
fn schedule_add_list_and_remove_work_on_sqlite() {
    let s = Setup::new(CLI_CONFIG);
    cli_add_list_remove(&s);
}

#[test]
fn schedule_add_list_and_remove_work_on_nats() {
    let server = NatsServer::start();
    let s = Setup::nats(CLI_CONFIG, &server.url());
    cli_add_list_remove(&s);
}

#[test]
fn a_worker_refuses_a_config_with_a_bad_schedule_naming_it() {
    for (body, expected) in [
        ("queue = \"nope\"\nevery = \"1s\"", "unknown queue `nope`"),
        (
            "queue = \"noop\"\ncron = \"* * *\"",
            "bad cron expression `* * *`",
        ),
    ] {
        let s = Setup::new(&format!(
            "[queues.noop]\nplugin = \"noop.wasm\"\n[schedules.broken]\n{body}\n"
        ));
        let (code, _, err) = s.run(&["worker"]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("schedules.broken"), "{err}");
        assert!(err.contains(expected), "{err}");
    }
}

/// A worker with no schedule in its config, for schedules added from the command line.
const PLAIN_CONFIG: &str = r#"
[worker]
lease = "2s"
shutdown_grace = "1s"

[nats]
ack-wait = "2s"

[queues.noop]
plugin = "NOOP"
"#;

/// `spool events --json`: the schedule-fired events, as `spool events` prints them.
fn fired_via_cli(s: &Setup) -> Vec<serde_json::Value> {
    let (code, out, err) = s.run(&["events", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "schedule-fired")
        .collect()
}

fn a_schedule_added_from_the_cli_fires_until_removed(s: &Setup) {
    let (code, _, err) = s.run(&[
        "schedule",
        "add",
        "beat",
        "--queue",
        "noop",
        "--every",
        "1s",
        "--payload",
        "[1]",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let mut worker = [s.worker(&[])];
    let start = Instant::now();
    let fired = loop {
        s.assert_running(&mut worker);
        let fired = fired_via_cli(s);
        if fired.len() >= 2 {
            break fired;
        }
        assert!(start.elapsed() < BOUND, "no fires\n{}", s.worker_logs());
        std::thread::sleep(Duration::from_millis(200));
    };
    let message = fired[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("schedule beat fired for tick "),
        "{message}"
    );
    let job = s.job(fired[0]["job_id"].as_str().unwrap());
    assert_eq!(job["queue"], "noop");
    let (code, out, _) = s.run(&["schedule", "list", "--json"]);
    assert_eq!(code, Some(0));
    let listed: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(listed["last_job"].is_string(), "{listed}");

    let (code, _, err) = s.run(&["schedule", "remove", "beat"]);
    assert_eq!(code, Some(0), "{err}");
    // A fire already under way when the schedule went may still land; nothing after it.
    std::thread::sleep(Duration::from_millis(1500));
    let settled = fired_via_cli(s).len();
    std::thread::sleep(Duration::from_millis(2500));
    s.assert_running(&mut worker);
    assert_eq!(fired_via_cli(s).len(), settled, "a removed schedule fired");
    let [worker] = worker;
    stop(worker, "-TERM");
}

#[test]
fn on_sqlite_a_schedule_added_from_the_cli_fires_until_removed() {
    let s = Setup::new(PLAIN_CONFIG);
    a_schedule_added_from_the_cli_fires_until_removed(&s);
}

#[test]
fn on_nats_a_schedule_added_from_the_cli_fires_until_removed() {
    let server = NatsServer::start();
    let s = Setup::nats(PLAIN_CONFIG, &server.url());
    a_schedule_added_from_the_cli_fires_until_removed(&s);
}

/// Two schedules from the config, the second last so that the test can cut it out.
const TWO_SCHEDULES_CONFIG: &str = r#"
[worker]
lease = "2s"
shutdown_grace = "1s"

[nats]
ack-wait = "2s"

[queues.noop]
plugin = "NOOP"

[schedules.kept]
queue = "noop"
every = "1h"

[schedules.dropped]
queue = "noop"
every = "1h"
"#;

/// Start a worker, wait until it has stored the config's schedules, and stop it; its log.
fn start_and_stop_a_worker(s: &Setup) -> String {
    let before = s.worker_logs().matches("\n  store ").count();
    let mut worker = s.worker(&[]);
    let started = Instant::now();
    while s.worker_logs().matches("\n  store ").count() == before {
        s.assert_running(std::slice::from_mut(&mut worker));
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            s.worker_logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(worker, "-TERM");
    s.worker_logs()
}

fn listed(s: &Setup) -> Vec<(String, bool)> {
    let (code, out, err) = s.run(&["schedule", "list", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_owned(),
                v["from_config"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// A schedule deleted from `spool.toml` is removed by the next worker to start; one added with
/// `spool schedule add` stays whatever the config says.
fn a_schedule_deleted_from_the_config_is_removed_and_an_added_one_stays(s: &Setup) {
    start_and_stop_a_worker(s);
    let (code, _, err) = s.run(&[
        "schedule", "add", "manual", "--queue", "noop", "--every", "1h",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        listed(s),
        [
            ("dropped".to_owned(), true),
            ("kept".to_owned(), true),
            ("manual".to_owned(), false)
        ]
    );

    let path = s.dir.path().join("spool.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let cut = config.find("[schedules.dropped]").unwrap();
    std::fs::write(&path, &config[..cut]).unwrap();
    let logs = start_and_stop_a_worker(s);
    assert!(
        logs.contains("removed schedule(s) no longer in the config: dropped"),
        "{logs}"
    );
    assert_eq!(
        listed(s),
        [("kept".to_owned(), true), ("manual".to_owned(), false)]
    );
    let (_, out, _) = s.run(&["schedule", "list"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("manual") && l.contains(" added ")),
        "{out}"
    );
}

#[test]
fn on_sqlite_a_schedule_deleted_from_the_config_is_removed_and_an_added_one_stays() {
    let s = Setup::new(TWO_SCHEDULES_CONFIG);
    a_schedule_deleted_from_the_config_is_removed_and_an_added_one_stays(&s);
}

#[test]
fn on_nats_a_schedule_deleted_from_the_config_is_removed_and_an_added_one_stays() {
    let server = NatsServer::start();
    let s = Setup::nats(TWO_SCHEDULES_CONFIG, &server.url());
    a_schedule_deleted_from_the_config_is_removed_and_an_added_one_stays(&s);
}
