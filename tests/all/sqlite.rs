//! The SQLite backend: the conformance suite on a real database file, and what only a shared
//! file can show (reopening, several processes on one file, durability modes).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use spool::queue::sqlite::{SqliteBackend, SqliteOptions, Synchronous};
use spool::queue::{
    AttemptRecord, Backend, Claimed, JobState, LeaseLost, NewJob, Next, QueueClaim, QueueError,
    Settle, now,
};
use tempfile::TempDir;

/// A backend on a new database file in its own temporary directory.
async fn fresh() -> (SqliteBackend, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let backend = SqliteBackend::open(&dir.path().join("spool.db"), SqliteOptions::default())
        .expect("open a new database");
    (backend, dir)
}

mod conformance {
    crate::conformance::backend_conformance!(super::fresh);
}

fn job(queue: &str, payload: &[u8]) -> NewJob {
    NewJob {
        queue: queue.into(),
        payload: payload.to_vec(),
        ..NewJob::default()
    }
}

fn wanted(queue: &str, limit: usize) -> [QueueClaim; 1] {
    [QueueClaim {
        queue: queue.into(),
        limit,
        ..QueueClaim::default()
    }]
}

fn succeeded(claimed: &Claimed) -> Settle {
    let at = now();
    Settle {
        lease: claimed.lease.clone(),
        next: Next::Succeeded {
            output: claimed.payload.clone(),
        },
        attempt: AttemptRecord {
            attempt: claimed.attempt,
            worker: claimed.lease.worker.clone(),
            started_at: at,
            finished_at: at,
            outcome: "succeeded".into(),
            phase: None,
            error: None,
            digest: None,
            logs: Vec::new(),
            http: Default::default(),
        },
        checkpoint: None,
        children: Vec::new(),
        progress: None,
    }
}

/// A second, independent connection to the file, as another program would open it.
fn inspect(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

#[tokio::test]
async fn reopening_the_file_keeps_the_jobs_and_their_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    let (done, waiting) = {
        let backend = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
        let enqueued = backend
            .enqueue(vec![job("q", b"first"), job("q", b"second")])
            .await
            .unwrap();
        let claimed = backend
            .claim("w1", &wanted("q", 1), Duration::from_secs(30))
            .await
            .unwrap();
        let results = backend.settle(vec![succeeded(&claimed[0])]).await.unwrap();
        assert_eq!(results, [Ok(())]);
        (enqueued[0].id.clone(), enqueued[1].id.clone())
    };

    let backend = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    let done = backend.job(&done).await.unwrap().unwrap();
    assert_eq!(done.summary.state, JobState::Succeeded);
    assert_eq!(done.output.as_deref(), Some(&b"first"[..]));
    assert_eq!(done.attempts.len(), 1);
    assert_eq!(done.events.len(), 3);
    let claimed = backend
        .claim("w1", &wanted("q", 10), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].lease.job_id, waiting);
    assert_eq!(claimed[0].payload, b"second");

    // The file says what it is.
    let conn = inspect(&path);
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 6);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_backends_on_one_file_never_claim_the_same_job() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    // Two opens share nothing but the file, as two worker processes would.
    let first = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    let second = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    first
        .enqueue(
            (0..1000)
                .map(|i| job("q", format!("{i}").as_bytes()))
                .collect(),
        )
        .await
        .unwrap();

    let mut workers = Vec::new();
    for (n, backend) in [first.clone(), second.clone()]
        .into_iter()
        .cycle()
        .take(8)
        .enumerate()
    {
        workers.push(tokio::spawn(async move {
            let worker = format!("w{n}");
            let mut mine = Vec::new();
            for _ in 0..=1000 {
                let claimed = backend
                    .claim(&worker, &wanted("q", 16), Duration::from_secs(30))
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    return mine;
                }
                let settles = claimed.iter().map(succeeded).collect();
                let results = backend.settle(settles).await.unwrap();
                assert!(results.iter().all(Result::is_ok), "{results:?}");
                mine.extend(claimed.into_iter().map(|c| c.lease.job_id));
            }
            panic!("{worker} kept claiming after every job was taken");
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    assert_eq!(all.len(), 1000);
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 1000);
    let counts = second.queues().await.unwrap();
    assert_eq!((counts[0].succeeded, counts[0].running), (1000, 0));
}

#[tokio::test]
async fn a_lease_swept_by_another_process_fences_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    let crashed = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    let sweeper = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    crashed.enqueue(vec![job("q", b"x")]).await.unwrap();
    let stale = crashed
        .claim("w1", &wanted("q", 1), Duration::from_millis(50))
        .await
        .unwrap()
        .remove(0);

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        sweeper.expire_leases(5).await.unwrap(),
        std::slice::from_ref(&stale.lease.job_id)
    );
    let fresh = sweeper
        .claim("w2", &wanted("q", 1), Duration::from_secs(30))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(fresh.attempt, 2);

    let late = crashed.settle(vec![succeeded(&stale)]).await.unwrap();
    assert_eq!(
        late,
        [Err(LeaseLost {
            job_id: stale.lease.job_id.clone(),
            token: stale.lease.token
        })]
    );
    assert_eq!(
        sweeper.settle(vec![succeeded(&fresh)]).await.unwrap(),
        [Ok(())]
    );
    let done = crashed.job(&fresh.lease.job_id).await.unwrap().unwrap();
    assert_eq!(done.summary.state, JobState::Succeeded);
    assert_eq!(
        done.attempts
            .iter()
            .map(|a| a.worker.as_str())
            .collect::<Vec<_>>(),
        ["w1", "w2"]
    );
}

/// A job whose lease expired goes back where it was in its queue, not behind the jobs
/// enqueued while it ran.
#[tokio::test]
async fn a_job_whose_lease_expired_keeps_its_place_in_the_queue() {
    let (backend, _dir) = fresh().await;
    let first = backend.enqueue(vec![job("q", b"first")]).await.unwrap()[0]
        .id
        .clone();
    let orphan = backend
        .claim("w1", &wanted("q", 1), Duration::from_millis(50))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(orphan.lease.job_id, first);
    tokio::time::sleep(Duration::from_millis(20)).await;
    backend.enqueue(vec![job("q", b"later")]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        backend.expire_leases(5).await.unwrap(),
        std::slice::from_ref(&first)
    );
    let next = backend
        .claim("w2", &wanted("q", 1), Duration::from_secs(30))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        next.lease.job_id, first,
        "the returned job went behind a later one"
    );
    assert_eq!(next.attempt, 2);
}

#[tokio::test]
async fn synchronous_normal_opens_and_works() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    let options = SqliteOptions {
        synchronous: Synchronous::Normal,
        busy_timeout: Duration::from_secs(1),
        ..SqliteOptions::default()
    };
    let backend = SqliteBackend::open(&path, options).unwrap();
    let id = backend.enqueue(vec![job("q", b"x")]).await.unwrap()[0]
        .id
        .clone();
    let claimed = backend
        .claim("w1", &wanted("q", 1), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        backend.settle(vec![succeeded(&claimed[0])]).await.unwrap(),
        [Ok(())]
    );
    drop(backend);

    let reopened = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    let job = reopened.job(&id).await.unwrap().unwrap();
    assert_eq!(job.summary.state, JobState::Succeeded);
}

#[tokio::test]
async fn a_database_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    drop(SqliteBackend::open(&path, SqliteOptions::default()).unwrap());
    inspect(&path)
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteBackend::open(&path, SqliteOptions::default()).unwrap_err();
    assert!(
        matches!(&err, QueueError::Store(message) if message.contains("schema version 99")),
        "got {err:?}"
    );
}

#[tokio::test]
async fn a_version_4_database_gains_the_attempts_http_counts_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    drop(SqliteBackend::open(&path, SqliteOptions::default()).unwrap());
    let conn = inspect(&path);
    conn.execute_batch(
        "ALTER TABLE attempts DROP COLUMN http; ALTER TABLE jobs DROP COLUMN progress; \
             PRAGMA user_version = 4;",
    )
    .unwrap();
    drop(conn);
    drop(SqliteBackend::open(&path, SqliteOptions::default()).unwrap());
    let conn = inspect(&path);
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 6);
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('attempts')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(columns.contains(&"http".to_owned()), "{columns:?}");
}

#[tokio::test]
async fn an_unusable_path_is_a_store_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-directory").join("spool.db");
    let err = SqliteBackend::open(&path, SqliteOptions::default()).unwrap_err();
    assert!(
        matches!(&err, QueueError::Store(message) if message.contains("missing-directory")),
        "got {err:?}"
    );
}

/// Another connection that takes the write lock back to back, as a busy worker in another
/// process does: it holds it for 10 ms and lets go for about 50 µs, counting in `taken`, until
/// `stop` is set.
fn hog_the_write_lock(path: &Path, taken: &AtomicU64, stop: &AtomicBool) {
    let mut conn = inspect(path);
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    while !stop.load(Ordering::SeqCst) {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        taken.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(10));
        tx.commit().unwrap();
        std::thread::sleep(Duration::from_micros(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_gets_the_lock_between_another_writers_back_to_back_commits() {
    let (backend, dir) = fresh().await;
    let path = dir.path().join("spool.db");
    let taken = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let hog = std::thread::spawn({
        let (taken, stop) = (taken.clone(), stop.clone());
        move || hog_the_write_lock(&path, &taken, &stop)
    });
    while taken.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The hog holds the lock all but 0.5% of the time. SQLite's own busy handler, sleeping up
    // to 100 ms between tries, found one of its gaps within 20 s only about half the time.
    let enqueued = tokio::time::timeout(
        Duration::from_secs(20),
        backend.enqueue(vec![job("q", b"x")]),
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    hog.join().unwrap();
    let enqueued = enqueued.expect("the enqueue waited 20 s for the write lock");
    assert_eq!(enqueued.unwrap().len(), 1);
}
#[tokio::test]
async fn a_writer_gives_up_after_the_busy_timeout_naming_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    let options = SqliteOptions {
        busy_timeout: Duration::from_millis(300),
        ..SqliteOptions::default()
    };
    let backend = SqliteBackend::open(&path, options).unwrap();
    let mut other = inspect(&path);
    let held = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    let started = std::time::Instant::now();
    let err = backend.enqueue(vec![job("q", b"x")]).await.unwrap_err();
    let waited = started.elapsed();
    held.rollback().unwrap();
    assert!(
        matches!(&err, QueueError::Store(message) if message.contains("enqueue") && message.contains("locked")),
        "got {err:?}"
    );
    assert!(
        waited >= Duration::from_millis(300),
        "gave up after {waited:?}, before its busy timeout"
    );
    // Nothing was written: the lock's holder let go, and the queue is empty.
    assert!(backend.queues().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_version_4_file_gains_the_progress_column_and_keeps_its_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    let id = {
        let backend = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
        backend.enqueue(vec![job("q", b"old")]).await.unwrap()[0]
            .id
            .clone()
    };
    // The file as a build of schema version 4 left it: no `progress` column (nor `http`).
    {
        let conn = inspect(&path);
        conn.execute_batch(
            "ALTER TABLE attempts DROP COLUMN http; ALTER TABLE jobs DROP COLUMN progress; \
             PRAGMA user_version = 4;",
        )
        .unwrap();
    }

    let backend = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    let version: i64 = inspect(&path)
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 6);
    let old = backend.job(&id).await.unwrap().unwrap();
    assert_eq!(
        (old.payload.as_slice(), old.summary.progress),
        (&b"old"[..], None)
    );
    let claimed = backend
        .claim("w1", &wanted("q", 1), Duration::from_secs(30))
        .await
        .unwrap();
    let mut settle = succeeded(&claimed[0]);
    settle.progress = Some(spool::outcome::Progress {
        percent: 100,
        message: None,
    });
    assert_eq!(backend.settle(vec![settle]).await.unwrap(), [Ok(())]);
    let done = backend.job(&id).await.unwrap().unwrap();
    assert_eq!(done.summary.progress.map(|p| p.percent), Some(100));
}

/// Processes that open one new file at the same moment (`spool enqueue` and `spool worker`
/// started together) all get it: none sees the schema one of them is creating half-made and
/// takes the file for another application's.
#[test]
fn opens_racing_on_a_new_file_all_find_a_spool_database() {
    for round in 0..200 {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("spool.db");
        let start = Arc::new(std::sync::Barrier::new(4));
        let openers: Vec<_> = (0..4u64)
            .map(|k| {
                let (path, start) = (path.clone(), start.clone());
                // Staggered by up to a few milliseconds, so that some open lands while
                // another is creating the schema.
                let stagger = Duration::from_micros(k * (round % 40) * 50);
                std::thread::spawn(move || {
                    start.wait();
                    std::thread::sleep(stagger);
                    SqliteBackend::open(&path, SqliteOptions::default()).map(|_| ())
                })
            })
            .collect();
        for opener in openers {
            if let Err(e) = opener.join().unwrap() {
                panic!("round {round}: {e}");
            }
        }
    }
}
