//! Schedules: one job per tick whoever fires it, the leader lock, missed ticks, removal.
//! Time is driven explicitly: every call takes the "now" it runs at.

use spool::schedule::{self, FireAction, Missed, Schedule, ScheduleState, Spec};
use spool::scheduler;

use super::*;

/// A whole second some way in the past, so ticks counted from it are whole seconds.
fn second_ago(seconds: i64) -> Timestamp {
    (now() / 1000 - seconds) * 1000
}

fn every_second(name: &str, queue: &str, missed: Missed) -> Schedule {
    Schedule {
        payload: br#"{"tick":true}"#.to_vec(),
        missed,
        ..Schedule::new(name, queue, Spec::every(Duration::from_secs(1)).unwrap())
    }
}

async fn state_of<B: Backend>(b: &B, name: &str) -> ScheduleState {
    b.schedules()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.schedule.name == name)
        .unwrap_or_else(|| panic!("no schedule {name}"))
}

async fn jobs_on<B: Backend>(b: &B, queue: &str) -> Vec<JobDetail> {
    let filter = JobFilter {
        queue: Some(queue.into()),
        ..JobFilter::default()
    };
    let mut out = Vec::new();
    for summary in b.jobs(&filter).await.unwrap() {
        out.push(detail(b, &summary.id).await);
    }
    out
}

async fn events_of<B: Backend>(b: &B, kind: EventKind) -> Vec<spool::queue::Event> {
    b.events(&EventFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

fn tick_of(job: &JobDetail) -> Timestamp {
    job.metadata
        .iter()
        .find(|(k, _)| k == schedule::TICK_METADATA)
        .map(|(_, v)| v.parse().unwrap())
        .expect("a scheduled job names its tick")
}

pub async fn a_tick_fires_exactly_once_when_schedulers_race<B: Backend>(b: B) {
    let b = Arc::new(b);
    let t0 = second_ago(10);
    let s = every_second("race", "ticks", Missed::Skip);
    assert!(b.put_schedule(s.clone(), t0).await.unwrap());

    for (round, at) in [(0, t0 + 100), (1, t0 + 1100)] {
        let fire = schedule::plan(&s, t0 + round * 1000, at).unwrap().unwrap();
        let racers = (0..8)
            .map(|n| {
                let b = Arc::clone(&b);
                let fire = spool::schedule::ScheduleFire {
                    worker: Some(format!("w{n}")),
                    ..fire.clone()
                };
                tokio::spawn(async move { b.fire_schedule(fire).await.unwrap() })
            })
            .collect::<Vec<_>>();
        let mut fired = Vec::new();
        for racer in racers {
            fired.extend(racer.await.unwrap());
        }
        assert_eq!(
            fired.len(),
            1,
            "round {round}: one scheduler fires the tick"
        );
        let state = state_of(&*b, "race").await;
        assert_eq!(state.next_run_at, t0 + (round + 1) * 1000);
        assert_eq!(state.last_run_at, Some(t0 + round * 1000));
        assert_eq!(state.last_job.as_ref(), Some(&fired[0]));
    }

    let jobs = jobs_on(&*b, "ticks").await;
    assert_eq!(jobs.len(), 2, "one job per tick");
    let mut ticks: Vec<Timestamp> = jobs.iter().map(tick_of).collect();
    ticks.sort_unstable();
    assert_eq!(ticks, [t0, t0 + 1000]);
    assert!(jobs.iter().all(|j| j.payload == br#"{"tick":true}"#));
    let fired = events_of(&*b, EventKind::ScheduleFired).await;
    assert_eq!(fired.len(), 2, "one schedule-fired event per tick");
    for event in &fired {
        assert!(
            jobs.iter()
                .any(|j| Some(&j.summary.id) == event.job_id.as_ref())
        );
        assert!(event.message.as_deref().unwrap().contains("schedule race"));
    }
    // The jobs run like any other.
    let claimed = claim(&*b, "ticks", 10, LEASE).await;
    assert_eq!(claimed.len(), 2);
}

pub async fn the_leader_lock_is_exclusive_and_passes_on_after_expiry<B: Backend>(b: B) {
    let b = Arc::new(b);
    let t = now();
    let ttl = Duration::from_secs(10);
    assert!(b.take_leadership("a", ttl, t).await.unwrap());
    assert!(!b.take_leadership("b", ttl, t + 1).await.unwrap());
    // The holder renews: its lock now lasts until t + 15 s.
    assert!(b.take_leadership("a", ttl, t + 5_000).await.unwrap());
    assert!(!b.take_leadership("b", ttl, t + 12_000).await.unwrap());
    // Once that has passed, another takes it, and the old holder is out.
    assert!(b.take_leadership("b", ttl, t + 15_000).await.unwrap());
    assert!(!b.take_leadership("a", ttl, t + 15_001).await.unwrap());

    // Racing for an expired lock: one winner.
    let at = t + 30_000;
    let racers = (0..8)
        .map(|n| {
            let b = Arc::clone(&b);
            tokio::spawn(async move { b.take_leadership(&format!("r{n}"), ttl, at).await.unwrap() })
        })
        .collect::<Vec<_>>();
    let mut winners = 0;
    for racer in racers {
        winners += usize::from(racer.await.unwrap());
    }
    assert_eq!(winners, 1, "one scheduler holds the lock");

    // Giving it up (a ttl of zero) frees it at once.
    let mut resigned = false;
    for n in 0..8 {
        let name = format!("r{n}");
        if b.take_leadership(&name, ttl, at + 1).await.unwrap() {
            assert!(
                b.take_leadership(&name, Duration::ZERO, at + 2)
                    .await
                    .unwrap()
            );
            resigned = true;
        }
    }
    assert!(resigned);
    assert!(b.take_leadership("c", ttl, at + 3).await.unwrap());

    // Only the leader's scheduling rounds fire.
    let t0 = second_ago(5);
    b.put_schedule(every_second("led", "led", Missed::CatchUp), t0)
        .await
        .unwrap();
    let (leader, _) = scheduler::round(&*b, "d", ttl, at + 4).await;
    assert!(!leader);
    assert!(jobs_on(&*b, "led").await.is_empty(), "a follower fired");
    let (leader, earliest) = scheduler::round(&*b, "c", ttl, at + 5).await;
    assert!(leader);
    assert_eq!(jobs_on(&*b, "led").await.len(), 1);
    assert!(earliest.is_some_and(|e| e > at + 5));
}

pub async fn missed_ticks_are_skipped_or_caught_up_once<B: Backend>(b: B) {
    let t0 = second_ago(20);
    for (name, missed) in [("skipper", Missed::Skip), ("catcher", Missed::CatchUp)] {
        b.put_schedule(every_second(name, name, missed), t0)
            .await
            .unwrap();
    }
    // A gap: six ticks (t0 .. t0 + 5 s) passed with no scheduler.
    let at = t0 + 5_500;
    for state in b.schedules().await.unwrap() {
        let fire = schedule::plan(&state.schedule, state.next_run_at, at)
            .unwrap()
            .unwrap();
        assert_eq!(fire.next, t0 + 6_000);
        match (&*state.schedule.name, &fire.action) {
            ("skipper", FireAction::Skip { ticks: 6 }) => {}
            (
                "catcher",
                FireAction::Enqueue {
                    tick, caught_up: 5, ..
                },
            ) => {
                assert_eq!(*tick, t0 + 5_000);
            }
            other => panic!("unexpected plan {other:?}"),
        }
        b.fire_schedule(fire).await.unwrap();
    }
    assert!(
        jobs_on(&b, "skipper").await.is_empty(),
        "skip fires nothing"
    );
    let caught = jobs_on(&b, "catcher").await;
    assert_eq!(
        caught.len(),
        1,
        "catch-up fires once, not once per missed tick"
    );
    assert_eq!(tick_of(&caught[0]), t0 + 5_000);
    let skipped = events_of(&b, EventKind::ScheduleSkipped).await;
    assert_eq!(skipped.len(), 1);
    let message = skipped[0].message.as_deref().unwrap();
    assert!(message.contains("skipper skipped 6"), "{message}");
    assert_eq!(skipped[0].queue.as_deref(), Some("skipper"));

    // Then both go on tick by tick.
    for state in b.schedules().await.unwrap() {
        assert_eq!(state.next_run_at, t0 + 6_000);
        let fire = schedule::plan(&state.schedule, state.next_run_at, t0 + 6_010)
            .unwrap()
            .unwrap();
        assert!(matches!(
            fire.action,
            FireAction::Enqueue { caught_up: 0, .. }
        ));
        assert!(b.fire_schedule(fire).await.unwrap().is_some());
    }
    assert_eq!(jobs_on(&b, "skipper").await.len(), 1);
    assert_eq!(jobs_on(&b, "catcher").await.len(), 2);
}

pub async fn an_unchanged_spec_keeps_its_tick_and_a_removed_schedule_fires_no_more<B: Backend>(
    b: B,
) {
    let t0 = second_ago(30);
    let s = every_second("gone", "gone", Missed::Skip);
    assert!(b.put_schedule(s.clone(), t0).await.unwrap());
    // Another worker starting with the same config keeps the stored tick...
    let changed_payload = Schedule {
        payload: b"{}".to_vec(),
        ..s.clone()
    };
    assert!(!b.put_schedule(changed_payload, t0 + 99_000).await.unwrap());
    let state = state_of(&b, "gone").await;
    assert_eq!(state.next_run_at, t0);
    assert_eq!(state.schedule.payload, b"{}");
    // ...and a new spec starts from the tick given.
    let hourly = Schedule {
        spec: Spec::cron("0 * * * *").unwrap(),
        ..s.clone()
    };
    b.put_schedule(hourly, t0 + 3_600_000).await.unwrap();
    assert_eq!(state_of(&b, "gone").await.next_run_at, t0 + 3_600_000);
    b.put_schedule(s.clone(), t0).await.unwrap();

    let fire = schedule::plan(&s, t0, t0 + 10).unwrap().unwrap();
    assert!(b.remove_schedule("gone").await.unwrap());
    assert!(!b.remove_schedule("gone").await.unwrap());
    assert!(b.schedules().await.unwrap().is_empty());
    assert_eq!(b.fire_schedule(fire).await.unwrap(), None);
    assert!(
        jobs_on(&b, "gone").await.is_empty(),
        "a removed schedule fired"
    );
    let (leader, earliest) = scheduler::round(&b, "w", LEASE, now()).await;
    assert!(leader);
    assert_eq!(earliest, None);
    assert!(jobs_on(&b, "gone").await.is_empty());
}
