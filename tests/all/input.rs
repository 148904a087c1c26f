//! What goes in through the CLI: payloads from standard input and files, bulk enqueues,
//! the payload limit, unknown queues, and read commands that only read.

use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;

use serde_json::Value;
use spool::queue::sqlite::{APPLICATION_ID, SqliteBackend, SqliteOptions};
use spool::queue::{Backend, JobFilter, JobId, NewJob};

use crate::support::{NatsServer, Setup};

/// A config whose queues need no plugin to take jobs.
const CONFIG: &str =
    "[queues.email]\nplugin = \"email.wasm\"\n\n[queues.sms]\nplugin = \"sms.wasm\"\n";

/// `spool args` in `s` with `input` on standard input: (exit code, stdout, stderr).
fn run_with_stdin(s: &Setup, args: &[&str], input: &[u8]) -> (Option<i32>, String, String) {
    let mut child = s
        .cmd()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A JSON payload of exactly `size` bytes.
fn payload_of(size: usize) -> Vec<u8> {
    let mut payload = b"{\"blob\":\"".to_vec();
    let fill = size - payload.len() - 2;
    payload.extend((0..fill).map(|i| b"abcdefghijklmnopqrstuvwxyz"[i % 26]));
    payload.extend(b"\"}");
    assert_eq!(payload.len(), size);
    payload
}

fn sqlite(path: &Path) -> SqliteBackend {
    SqliteBackend::open_read_only(path, SqliteOptions::default()).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_twenty_megabyte_payload_goes_in_from_standard_input_and_from_a_file() {
    let s = Setup::new(&format!("[worker]\nmax_payload = \"32MiB\"\n\n{CONFIG}"));
    let payload = payload_of(20_000_000);

    let (code, stdout, stderr) = run_with_stdin(&s, &["enqueue", "email", "-"], &payload);
    assert_eq!(code, Some(0), "{stderr}");
    let from_stdin = JobId(stdout.trim().to_owned());

    let file = s.dir.path().join("payload.json");
    std::fs::write(&file, &payload).unwrap();
    let (code, stdout, stderr) = s.run(&["enqueue", "email", &format!("@{}", file.display())]);
    assert_eq!(code, Some(0), "{stderr}");
    let from_file = JobId(stdout.trim().to_owned());

    let backend = sqlite(&s.db());
    runtime().block_on(async {
        for id in [from_stdin, from_file] {
            let job = backend.job(&id).await.unwrap().unwrap();
            assert!(
                job.payload == payload,
                "job {id}: the payload is kept whole"
            );
        }
    });
}

#[test]
fn a_payload_over_max_payload_is_refused_naming_the_limit() {
    let s = Setup::new(CONFIG);
    let payload = payload_of(20_000_000);
    let (code, _, stderr) = run_with_stdin(&s, &["enqueue", "email", "-"], &payload);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("payload of 20000000 bytes")
            && stderr.contains("maximum payload of 16777216 bytes (16.0 MiB)"),
        "{stderr}"
    );
    // A payload that is not JSON is refused wherever it comes from.
    let (code, _, stderr) = run_with_stdin(&s, &["enqueue", "email", "-"], b"{oops");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("bad payload in standard input"), "{stderr}");
    let (code, _, stderr) = s.run(&["enqueue", "email", "@no/such/file.json"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("no/such/file.json"), "{stderr}");
}

#[test]
fn on_nats_a_payload_the_server_cannot_hold_is_refused_naming_both_limits() {
    let server = NatsServer::start();
    let s = Setup::nats(CONFIG, &server.url());
    let file = s.dir.path().join("big.json");
    std::fs::write(&file, payload_of(2_000_000)).unwrap();
    let (code, _, stderr) = s.run(&["enqueue", "email", &format!("@{}", file.display())]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("payload of 2000000 bytes")
            && stderr.contains("max_payload of 1048576 bytes (1.0 MiB)")
            && stderr.contains("16777216 bytes (16.0 MiB)"),
        "{stderr}"
    );
    // One that fits goes in.
    std::fs::write(&file, payload_of(500_000)).unwrap();
    let (code, _, stderr) = s.run(&["enqueue", "email", &format!("@{}", file.display())]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn bulk_enqueues_a_hundred_thousand_lines_with_the_same_options_and_prints_the_count() {
    let s = Setup::new(CONFIG);
    let file = s.dir.path().join("jobs.jsonl");
    let mut lines = String::new();
    for i in 0..100_000 {
        lines.push_str(&format!("{{\"n\":{i}}}\n"));
    }
    std::fs::write(&file, lines).unwrap();
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = s.run(&[
        "enqueue",
        "email",
        "--bulk",
        file.to_str().unwrap(),
        "--priority",
        "3",
        "--tenant",
        "acme",
        "--delay",
        "1h",
    ]);
    let took = started.elapsed();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.starts_with("enqueued 100000 job(s) on email (jobs 1 to 100000)"),
        "{stdout}"
    );
    assert!(
        !stderr.contains('\r'),
        "no progress line off a terminal: {stderr:?}"
    );
    eprintln!("100,000 lines enqueued in {took:?}");

    let backend = sqlite(&s.db());
    runtime().block_on(async {
        let counts = backend.queues().await.unwrap();
        assert_eq!(counts.len(), 1);
        assert_eq!(counts[0].scheduled, 100_000);
        let last = backend.job(&JobId("100000".into())).await.unwrap().unwrap();
        assert_eq!(last.payload, b"{\"n\":99999}");
        assert_eq!(last.summary.priority, 3);
        assert_eq!(last.summary.tenant.as_deref(), Some("acme"));
    });
}

#[test]
fn bulk_stops_at_a_bad_line_naming_it_and_the_lines_before_it_stay_enqueued() {
    let s = Setup::new(CONFIG);
    let mut lines = String::new();
    for i in 0..2_500 {
        lines.push_str(&format!("{{\"n\":{i}}}\n"));
        if i == 10 {
            lines.push('\n'); // blank lines are skipped, but counted
        }
    }
    lines.push_str("{\"n\": oops}\n{\"n\":2501}\n");
    let (code, stdout, stderr) =
        run_with_stdin(&s, &["enqueue", "email", "--bulk", "-"], lines.as_bytes());
    assert_eq!(code, Some(2), "{stdout}");
    assert!(
        stderr.contains("line 2502 of -: not JSON")
            && stderr
                .contains("2500 job(s) from the lines before it were enqueued (jobs 1 to 2500)"),
        "{stderr}"
    );
    let backend = sqlite(&s.db());
    runtime().block_on(async {
        assert_eq!(backend.queues().await.unwrap()[0].ready, 2_500);
    });
}

#[test]
fn bulk_works_the_same_on_nats() {
    let server = NatsServer::start();
    let s = Setup::nats(CONFIG, &server.url());
    let lines: String = (0..3_000).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    let (code, stdout, stderr) = run_with_stdin(
        &s,
        &["enqueue", "sms", "--bulk", "-", "--json"],
        lines.as_bytes(),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let tally: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(tally["enqueued"], 3_000);
    assert_eq!(tally["duplicates"], 0);
    let counts = s.json_lines(&["queues", "--json"]);
    let sms = counts
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "sms")
        .unwrap();
    assert_eq!(sms["ready"], 3_000, "{counts:#}");
}

#[test]
fn enqueue_refuses_a_queue_the_config_does_not_have_unless_forced() {
    let s = Setup::new(CONFIG);
    let (code, _, stderr) = s.run(&["enqueue", "emial", "{}"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("unknown queue `emial`") && stderr.contains("email, sms"),
        "{stderr}"
    );
    assert!(!s.db().exists(), "nothing was created");
    let (code, _, stderr) = s.run(&["enqueue", "emial", "{}", "--force"]);
    assert_eq!(code, Some(0), "{stderr}");
    // A bad name is refused even with --force, by the rule every backend shares.
    let (code, _, stderr) = s.run(&["enqueue", "bad queue/name", "{}", "--force"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("bad queue name `bad queue/name`"),
        "{stderr}"
    );
    // And a config naming such a queue does not load.
    let s = Setup::new("[queues.\"a.b\"]\nplugin = \"x.wasm\"\n");
    let (code, _, stderr) = s.run(&["enqueue", "a.b", "{}"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("queues.a.b: bad queue name"), "{stderr}");
}

/// Every read command, on the database `db`.
const READS: &[&[&str]] = &[
    &["jobs"],
    &["job", "1"],
    &["queues"],
    &["events"],
    &["dlq", "list"],
    &["dlq", "show", "1"],
    &["schedule", "list"],
];

#[test]
fn read_commands_refuse_another_applications_database_and_leave_it_untouched() {
    let s = Setup::new(CONFIG);
    let foreign = s.dir.path().join("app.db");
    {
        let conn = rusqlite::Connection::open(&foreign).unwrap();
        conn.execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users (name) VALUES ('ada');")
            .unwrap();
    }
    let before = std::fs::read(&foreign).unwrap();
    for args in READS
        .iter()
        .copied()
        .chain([&["enqueue", "email", "{}"][..]])
    {
        let (code, _, stderr) = s.run(&[&["--db", foreign.to_str().unwrap()][..], args].concat());
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("not a Spool database: it has tables of its own (users)"),
            "{args:?}: {stderr}"
        );
    }
    assert!(
        std::fs::read(&foreign).unwrap() == before,
        "the file is unchanged"
    );
    let names: Vec<String> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("app.db-")),
        "no journal left beside it: {names:?}"
    );
}

#[test]
fn read_commands_read_a_database_they_may_not_write_and_change_nothing() {
    use std::os::unix::fs::PermissionsExt as _;
    let s = Setup::new(CONFIG);
    s.enqueue("email", "{\"to\":\"ada@example.com\"}");
    let db = s.db();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
    let before = std::fs::read(&db).unwrap();
    for &args in READS {
        let (code, stdout, stderr) = s.run(args);
        let expected = if args.starts_with(&["dlq", "show"]) {
            2
        } else {
            0
        };
        assert_eq!(code, Some(expected), "{args:?}: {stdout} {stderr}");
        assert!(!stderr.contains("readonly"), "{args:?}: {stderr}");
    }
    assert!(
        std::fs::read(&db).unwrap() == before,
        "the file is unchanged"
    );

    // Root may write any file: run them again as a user who may not write the file nor its
    // directory (so SQLite cannot make the WAL's shared-memory file beside it either).
    use std::os::unix::fs::MetadataExt as _;
    if std::fs::metadata(&db).unwrap().uid() == 0 {
        std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for &args in READS {
            let out = std::process::Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(env!("CARGO_BIN_EXE_spool"))
                .arg("--db")
                .arg(&db)
                .args(args)
                .current_dir(s.dir.path())
                .output()
                .expect("setpriv (util-linux) runs a command as another user");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let expected = if args.starts_with(&["dlq", "show"]) {
                2
            } else {
                0
            };
            assert_eq!(out.status.code(), Some(expected), "{args:?}: {stderr}");
        }
        assert!(
            std::fs::read(&db).unwrap() == before,
            "the file is unchanged"
        );
    }

    // The backend a read command opens cannot write at all.
    let backend = sqlite(&db);
    runtime().block_on(async {
        assert_eq!(backend.jobs(&JobFilter::default()).await.unwrap().len(), 1);
        let refused = backend
            .enqueue(vec![NewJob {
                queue: "email".into(),
                ..NewJob::default()
            }])
            .await;
        assert!(refused.is_err(), "{refused:?}");
    });
}

#[test]
fn a_database_from_before_the_marker_is_read_as_it_is_and_marked_by_the_next_write() {
    let s = Setup::new(CONFIG);
    s.enqueue("email", "{}");
    let db = s.db();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "application_id", 0).unwrap();
    drop(conn);
    let id = |path: &Path| -> i32 {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.pragma_query_value(None, "application_id", |r| r.get(0))
            .unwrap()
    };
    assert_eq!(id(&db), 0);
    let (code, stdout, stderr) = s.run(&["jobs"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.lines().count() == 2, "{stdout}");
    assert_eq!(id(&db), 0, "a read marks nothing");
    s.enqueue("email", "{}");
    assert_eq!(id(&db), APPLICATION_ID, "a write marks it");
}

#[test]
fn jobs_and_events_filter_through_the_cli() {
    let s = Setup::new(CONFIG);
    let a = s.enqueue("email", "{}");
    let (code, _, stderr) = s.run(&["enqueue", "sms", "{}", "--tenant", "acme"]);
    assert_eq!(code, Some(0), "{stderr}");
    let c = s.enqueue("email", "{}");

    let ids = |value: Value| -> Vec<String> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(s.json_lines(&["jobs", "--json", "--tenant", "acme"])).len(),
        1
    );
    assert_eq!(
        ids(s.json_lines(&["jobs", "--json", "--limit", "1"]))[..],
        [c.as_str()]
    );
    assert_eq!(
        ids(s.json_lines(&["jobs", "--json", "--limit", "1", "--after", &c])).len(),
        1
    );
    assert_eq!(
        ids(s.json_lines(&["jobs", "--json", "--since", "1h"])).len(),
        3
    );
    assert!(ids(s.json_lines(&["jobs", "--json", "--after", &a])).is_empty());

    let (code, stdout, stderr) = s.run(&["events", "--queue", "sms"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    // The newest first, with a note when older ones were left out.
    let (code, stdout, stderr) = s.run(&["events", "--limit", "2"]);
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[1].contains(&format!("job {c}")), "{stdout}");
    assert!(stderr.contains("older ones were left out"), "{stderr}");
    let (_, _, stderr) = s.run(&["events", "--limit", "3"]);
    assert!(!stderr.contains("left out"), "{stderr}");
}

#[test]
fn on_nats_read_commands_create_nothing_on_a_server_without_spool() {
    let server = NatsServer::start();
    let s = Setup::nats(CONFIG, &server.url());
    for _ in 0..2 {
        let (code, _, stderr) = s.run(&["jobs"]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains("no Spool installation with prefix `spool` on this server"),
            "{stderr}"
        );
    }
    s.enqueue("email", "{}");
    let (code, stdout, stderr) = s.run(&["jobs"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
}
