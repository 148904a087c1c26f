//! Shared setup: one sandbox per test binary, plugins built from source and compiled once;
//! the `spool` binary on a temporary directory ([`Setup`]); a throwaway NATS server
//! ([`NatsServer`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use spool::queue::{Backend, EventFilter, EventKind};
use spool::{JobInput, Limits, Plugin, Sandbox, SandboxConfig};

pub use xtask::nats_server::NatsServer;

/// The sandbox every test shares, as a worker process would.
pub fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        Sandbox::new(SandboxConfig {
            concurrency: 8,
            max_memory: 256 << 20,
            ..SandboxConfig::default()
        })
        .expect("sandbox")
    })
}

/// The path of a plugin built from `plugins/<name>`.
pub fn plugin_path(name: &str) -> PathBuf {
    xtask::plugin(name).expect("plugins build")
}

/// The plugin `name`, compiled once per test binary, under `limits`.
pub fn plugin_with(name: &str, limits: Limits) -> Plugin {
    static LOADED: OnceLock<Mutex<HashMap<String, Plugin>>> = OnceLock::new();
    let loaded = LOADED.get_or_init(Default::default);
    let compiled = {
        let mut loaded = loaded.lock().expect("plugin cache");
        match loaded.get(name) {
            Some(plugin) => plugin.clone(),
            None => {
                let plugin = sandbox()
                    .load_plugin_with(&plugin_path(name), Limits::default(), grants(name))
                    .unwrap_or_else(|e| panic!("plugin {name} refused: {e}"));
                loaded.insert(name.to_owned(), plugin.clone());
                plugin
            }
        }
    };
    sandbox().with_limits(&compiled, limits).expect("limits")
}

/// What plugin `name` needs granted: the `email` plugin imports wasi:http (it sends when its
/// queue configures `api_base`), granted to 127.0.0.1 on any port.
pub fn grants(name: &str) -> spool::Grants {
    let mut queue = spool::config::QueueConfig::new(plugin_path(name));
    if name == "email" {
        queue.grants.http = vec!["http://127.0.0.1:*".parse().unwrap()];
    }
    queue.grants(name)
}

/// The plugin `name` with a short timeout and a small memory cap.
pub fn plugin(name: &str) -> Plugin {
    plugin_with(name, limits())
}

/// Limits for tests: 2 s timeout, 64 MiB memory.
pub fn limits() -> Limits {
    Limits {
        timeout: Some(Duration::from_secs(2)),
        memory: 64 << 20,
        ..Limits::default()
    }
}

/// A first attempt of a job with this JSON payload.
pub fn job(payload: serde_json::Value) -> JobInput {
    JobInput {
        id: "job-1".to_owned(),
        max_attempts: 3,
        ..JobInput::new("test", payload.to_string().into_bytes())
    }
}

/// The `spool` binary, with a compile cache of this test process's own (never the user's
/// `~/.cache/spool`), shared by every `spool` command the tests run.
pub fn spool() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spool"));
    cmd.env("SPOOL_CACHE_DIR", cache_dir())
        .env_remove("XDG_CACHE_HOME");
    cmd
}

/// `spool exec PLUGIN --payload PAYLOAD --json EXTRA...`: its exit code and its JSON report.
pub fn exec_json(plugin: &std::path::Path, payload: &str, extra: &[&str]) -> (Option<i32>, Value) {
    let out = spool()
        .arg("exec")
        .arg(plugin)
        .args(["--payload", payload, "--json"])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{}: not JSON ({e}): {stdout}\nstderr: {}",
            plugin.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), json)
}

/// The compile cache the `spool` commands of this test process share.
pub fn cache_dir() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// A plugin written in another language, built by `plugins/<lang>/build.sh` and compiled into
/// the tests' compile cache once (by `spool plugin check`), so the tests that run it in
/// parallel do not all compile it at once.
pub fn polyglot(lang: Lang) -> PathBuf {
    static WARM: [OnceLock<PathBuf>; 2] = [OnceLock::new(), OnceLock::new()];
    WARM[lang as usize]
        .get_or_init(|| {
            let path = match lang {
                Lang::Python => xtask::build_python_plugin(),
                Lang::JavaScript => xtask::build_js_plugin(),
            }
            .unwrap_or_else(|e| panic!("{e}"));
            let out = spool()
                .args(["plugin", "check"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            path
        })
        .clone()
}

/// The languages besides Rust that plugins are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// `plugins/python`, componentize-py.
    Python = 0,
    /// `plugins/javascript`, ComponentizeJS.
    JavaScript = 1,
}

/// Every log line's message, joined, for assertions.
pub fn log_text(report: &spool::AttemptReport) -> String {
    report
        .logs
        .iter()
        .map(|l| l.message.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A temporary directory with a `spool.toml`, and the store every `spool` command there uses:
/// a SQLite file in the directory, or a NATS server.
pub struct Setup {
    /// The directory: `spool.toml`, and `spool.db` for SQLite.
    pub dir: tempfile::TempDir,
    nats: Option<String>,
    workers: AtomicUsize,
    /// The worker processes started, killed when the setup is dropped (a failed test must not
    /// leave them running for the rest of the run).
    pids: Mutex<Vec<u32>>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let dir = self.dir.path().display().to_string();
        for pid in self.pids.get_mut().map(std::mem::take).unwrap_or_default() {
            // Only a process still running in this setup's directory: an exited worker's pid
            // may have been given to another process since.
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            if cwd.display().to_string() == dir {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

impl Setup {
    /// `config` as `spool.toml` (`EMAIL`, `NOOP`, `STEPS`, `FANOUT`, `LEGACY` and `FETCH` stand for
    /// those plugins' paths, `EMAIL_PY` and `EMAIL_JS` for the Python and JavaScript email
    /// plugins'), on SQLite.
    pub fn new(config: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config.to_owned();
        for (placeholder, plugin) in [
            ("EMAIL", "email"),
            ("NOOP", "noop"),
            ("STEPS", "steps"),
            ("FANOUT", "fanout"),
            ("LEGACY", "legacy"),
            ("FETCH", "fetch"),
            ("HOSTILE", "hostile"),
        ] {
            let quoted = format!("\"{placeholder}\"");
            if config.contains(&quoted) {
                config = config.replace(&quoted, &format!("\"{}\"", plugin_path(plugin).display()));
            }
        }
        for (placeholder, lang) in [("EMAIL_PY", Lang::Python), ("EMAIL_JS", Lang::JavaScript)] {
            let quoted = format!("\"{placeholder}\"");
            if config.contains(&quoted) {
                config = config.replace(&quoted, &format!("\"{}\"", polyglot(lang).display()));
            }
        }
        std::fs::write(dir.path().join("spool.toml"), config).unwrap();
        Setup {
            dir,
            nats: None,
            workers: AtomicUsize::new(0),
            pids: Mutex::new(Vec::new()),
        }
    }

    /// As [`Setup::new`], with every command on the NATS server at `url` (`--nats URL`).
    pub fn nats(config: &str, url: &str) -> Setup {
        let mut setup = Setup::new(config);
        setup.nats = Some(url.to_owned());
        setup
    }

    /// The SQLite database's path (unused on NATS).
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("spool.db")
    }

    /// `spool` in the directory, on this setup's store whatever the caller's environment says.
    pub fn cmd(&self) -> Command {
        let mut cmd = spool();
        cmd.current_dir(self.dir.path())
            .env_remove("SPOOL_DB")
            .env_remove("SPOOL_NATS_URL");
        match &self.nats {
            None => cmd.env("SPOOL_DB", self.db()),
            Some(url) => cmd.args(["--nats", url.as_str()]),
        };
        cmd
    }

    /// Run `spool args`: (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let out = self.cmd().args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Run `spool args`, which must succeed, and parse its stdout as JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let (code, stdout, stderr) = self.run(args);
        assert_eq!(code, Some(0), "spool {args:?}: {stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// Run `spool args` for a list command, which must succeed, and parse its stdout as JSON
    /// Lines (one object per line), gathered in an array.
    pub fn json_lines(&self, args: &[&str]) -> Value {
        let (code, stdout, stderr) = self.run(args);
        assert_eq!(code, Some(0), "spool {args:?}: {stderr}");
        stdout
            .lines()
            .map(|line| {
                serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"))
            })
            .collect()
    }

    /// `spool enqueue queue payload`: the new job's id.
    pub fn enqueue(&self, queue: &str, payload: &str) -> String {
        let (code, stdout, stderr) = self.run(&["enqueue", queue, payload]);
        assert_eq!(code, Some(0), "{stderr}");
        stdout.split_whitespace().next().unwrap().to_owned()
    }

    /// Start `spool worker extra...` in the background, its stderr in `worker-N.log` (a file,
    /// not a pipe: a pipe nobody reads would block a worker that logs a lot).
    pub fn worker(&self, extra: &[&str]) -> Child {
        let n = self.workers.fetch_add(1, Ordering::Relaxed);
        let log = std::fs::File::create(self.dir.path().join(format!("worker-{n}.log"))).unwrap();
        let child = self
            .cmd()
            .arg("worker")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child.id());
        child
    }

    /// What the workers started so far wrote to stderr, for failure messages.
    pub fn worker_logs(&self) -> String {
        (0..self.workers.load(Ordering::Relaxed))
            .map(|n| {
                let log = log_tail(&self.dir.path().join(format!("worker-{n}.log")), 3000);
                format!("--- worker {n}:\n{log}\n")
            })
            .collect()
    }

    /// Panic, with the workers' logs, if one of `workers` has exited.
    pub fn assert_running(&self, workers: &mut [Child]) {
        for worker in workers.iter_mut() {
            if let Some(status) = worker.try_wait().unwrap() {
                panic!(
                    "worker pid {} exited ({status}):\n{}",
                    worker.id(),
                    self.worker_logs()
                );
            }
        }
    }

    /// `spool job id --json`.
    pub fn job(&self, id: &str) -> Value {
        self.json(&["job", id, "--json"])
    }

    /// Wait until `done` holds for job `id`, or panic after `limit`.
    pub fn wait_for(&self, id: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let job = self.job(id);
            if done(&job) {
                return job;
            }
            assert!(
                start.elapsed() < limit,
                "job {id} did not get there: {job:#}\n{}",
                self.worker_logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The kinds of a job's events (`spool job --json`), in order.
pub fn event_kinds(job: &Value) -> Vec<&str> {
    job["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect()
}

/// A job's state (`spool job --json`).
pub fn state(job: &Value) -> &str {
    job["state"].as_str().unwrap_or("")
}

/// How long a signalled process may take to exit: a worker's shutdown grace (30 s) and the
/// release of its jobs, with room for a loaded machine.
const EXIT_BOUND: Duration = Duration::from_secs(120);

/// Send `signal` (`-TERM`, `-KILL`) to a process and reap it. One that has not exited
/// within [`EXIT_BOUND`] is killed and the test fails, with the process's log if it is a
/// worker: a stuck shutdown is a bug, and must not hang the suite.
pub fn stop(mut child: Child, signal: &str) {
    let pid = child.id();
    Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > EXIT_BOUND {
            // A worker's stderr is its log file: read through the process while it lives.
            let log = log_tail(Path::new(&format!("/proc/{pid}/fd/2")), 6000);
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "pid {pid} did not exit within {EXIT_BOUND:?} of kill {signal}; its stderr ends:\n{log}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `bytes` (or so, on a character boundary) of the file at `path`; empty if it
/// cannot be read.
fn log_tail(path: &Path, bytes: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let mut start = log.len().saturating_sub(bytes);
    while !log.is_char_boundary(start) {
        start += 1;
    }
    log[start..].to_owned()
}

/// How many events of each kind `backend` holds, read page by page.
pub async fn event_counts<B: Backend>(backend: &B) -> HashMap<EventKind, u64> {
    let mut counts = HashMap::new();
    let mut after = None;
    loop {
        let events = backend
            .events(&EventFilter {
                after,
                limit: Some(5000),
                ..Default::default()
            })
            .await
            .unwrap();
        let Some(last) = events.last() else {
            return counts;
        };
        after = Some(last.seq);
        for event in &events {
            *counts.entry(event.kind).or_default() += 1;
        }
    }
}
