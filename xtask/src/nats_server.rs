//! A throwaway `nats-server` with JetStream for the NATS backend's tests and benchmarks.
//!
//! Each [`NatsServer`] is its own process on its own port with its own store directory, so a
//! test can SIGKILL it and start it again on the same port and store, as a crash and a restart
//! would, and the workers connected to it see the same server come back.
//!
//! # What a kill can lose
//!
//! The file store of nats-server 2.9 (what CI installs) `write`s each message to its block file
//! before it acknowledges the publish, and fsyncs the store only every two minutes (traced on
//! 2.9.10: a publish at 09:10:53.578 was fsynced at 09:12:53.579, nothing in between). A SIGKILL
//! of the server, which is what these tests do, therefore loses nothing acknowledged: the bytes
//! are in the kernel's page cache and the restarted server reads them back. A power loss or a
//! kernel crash could lose up to the last two minutes of acknowledged writes of a single server;
//! in production, replicas on a cluster are what cover that.
//!
//! Later servers (2.10 and up) take `jetstream { sync_interval: ... }`; `always` fsyncs every
//! write before the ack, so nothing acknowledged is lost even to a power loss, at the price of
//! one sync per write. 2.9.10 refuses the key (`unknown field "sync_interval"`), so the fixture
//! asks the installed server once (`nats-server -c <config> -t`) and sets `sync_interval: always`
//! only where it is accepted; on 2.9 the two-minute sync above applies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// A fixture for tests and benchmarks: a panic naming what went wrong is how it reports.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a start or restart may take, store recovery included: generous for a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A `nats-server -js` on 127.0.0.1, killed when dropped.
///
/// ```ignore
/// let mut server = NatsServer::start();
/// let backend = NatsBackend::connect(&server.url(), NatsOptions::default()).await?;
/// server.kill(); // SIGKILL: the port refuses connections, the store stays as it was
/// server.restart(); // the same port and store; returns once JetStream answers again
/// ```
pub struct NatsServer {
    port: u16,
    /// The HTTP monitoring port (`/varz`, `/jsz`), the same across restarts.
    monitor: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Start a server on a free port with a new, empty store, and wait until JetStream answers.
    pub fn start() -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let mut failure = String::new();
        // Another process may take the port between the check and the server's bind.
        for _ in 0..5 {
            let (port, monitor) = (free_port(), free_port());
            match launch(port, monitor, dir.path()) {
                Ok(child) => {
                    return NatsServer {
                        port,
                        monitor,
                        dir,
                        child: Some(child),
                    };
                }
                Err(log) if log.contains("address already in use") => failure = log,
                Err(log) => panic!("nats-server did not start: {log}"),
            }
        }
        panic!("nats-server found no free port: {failure}");
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring port, the same across restarts.
    pub fn monitor_port(&self) -> u16 {
        self.monitor
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The JetStream store directory, the same across restarts.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// SIGKILL the server, as a crash would, and reap it: nothing is flushed or closed
    /// cleanly. Does nothing when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL on Unix
            child.wait().unwrap();
        }
    }

    /// Start the server again on the same port and store directory (killing it first if it
    /// runs), and wait until JetStream answers, its streams recovered from the store.
    pub fn restart(&mut self) {
        self.kill();
        let child = launch(self.port, self.monitor, self.dir.path())
            .unwrap_or_else(|log| panic!("nats-server did not restart: {log}"));
        self.child = Some(child);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The store and the log go with the directory: show the log of a failed test first.
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            eprintln!("nats-server on port {} logged:\n{}", self.port, tail(&log));
        }
    }
}

/// Spawn a server on `port` with its store and log in `dir`, and wait until JetStream answers.
/// On failure the process is gone and the error is what it logged this time.
fn launch(port: u16, monitor: u16, dir: &Path) -> Result<Child, String> {
    let config = dir.join("nats.conf");
    std::fs::write(&config, config_text(port, monitor, &dir.join("store"))).unwrap();
    let log_path = dir.join("server.log");
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap();
    writeln!(log, "--- spool: starting on port {port}").unwrap();
    let logged_before = log.metadata().unwrap().len();
    let logged = || {
        let all = std::fs::read(&log_path).unwrap_or_default();
        let start = usize::try_from(logged_before).unwrap_or(0).min(all.len());
        tail(&String::from_utf8_lossy(&all[start..])).to_owned()
    };
    let mut child = Command::new(binary())
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary().display()));
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(format!("nats-server exited ({status}):\n{}", logged()));
        }
        if jetstream_answers(port) {
            return Ok(child);
        }
        if started.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "JetStream did not answer on port {port} within {START_TIMEOUT:?}:\n{}",
                logged()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The server's configuration: the equivalent of `-js -a 127.0.0.1 -p PORT -m MONITOR -sd
/// STORE`, with `sync_interval: always` where the server accepts it (see the module docs).
fn config_text(port: u16, monitor: u16, store: &Path) -> String {
    let sync = if accepts_sync_always() {
        "    sync_interval: always\n"
    } else {
        ""
    };
    format!(
        "listen: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor}\"\njetstream {{\n    store_dir: {:?}\n{sync}}}\n",
        store.display().to_string()
    )
}

/// Whether the installed server accepts `sync_interval: always` (2.10 and up; not 2.9).
fn accepts_sync_always() -> bool {
    static ACCEPTS: OnceLock<bool> = OnceLock::new();
    *ACCEPTS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("probe.conf");
        let store = dir.path().join("store").display().to_string();
        let text =
            format!("jetstream {{\n    store_dir: {store:?}\n    sync_interval: always\n}}\n");
        std::fs::write(&config, text).unwrap();
        // `-t` only checks the file: it binds nothing and writes nothing.
        Command::new(binary())
            .arg("-c")
            .arg(&config)
            .arg("-t")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// `nats-server` on `PATH`, or the Debian package's `/usr/sbin/nats-server`.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("nats-server"))
            .chain([PathBuf::from("/usr/sbin/nats-server")])
            .find(|path| path.is_file())
            .expect("nats-server is needed on PATH or at /usr/sbin/nats-server")
    })
}

/// A port nothing listens on, below Linux's ephemeral range (32768-60999): while a killed
/// server is down, no outgoing connection can be handed its port as a source port and take it
/// (a client reconnecting to 127.0.0.1:P from source port P would even connect to itself).
fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = fastrand::u16(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

/// Whether a JetStream API request on `port` gets an account-info answer: the server accepts
/// connections and JetStream, its streams recovered, serves requests. Spoken in the raw client
/// protocol, so the fixture depends on no client library.
fn jetstream_answers(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let ask = || -> std::io::Result<bool> {
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if !line.starts_with("INFO ") {
            return Ok(false);
        }
        (&stream).write_all(
            b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n\
              SUB _INBOX.spool-tests-ready 1\r\n\
              PUB $JS.API.INFO _INBOX.spool-tests-ready 0\r\n\r\n",
        )?;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 || line.starts_with("-ERR") {
                return Ok(false);
            }
            if line.starts_with("PING") {
                (&stream).write_all(b"PONG\r\n")?;
            } else if let Some(header) = line.strip_prefix("MSG ") {
                let len: usize = header
                    .split_whitespace()
                    .last()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len + 2]; // the payload and its CRLF
                reader.read_exact(&mut body)?;
                let reply: serde_json::Value =
                    serde_json::from_slice(&body[..len]).unwrap_or_default();
                return Ok(
                    reply["type"] == "io.nats.jetstream.api.v1.account_info_response"
                        && reply["error"].is_null(),
                );
            }
        }
    };
    ask().unwrap_or(false)
}

/// The last few thousand bytes of a log, on a character boundary.
fn tail(log: &str) -> &str {
    let mut start = log.len().saturating_sub(4000);
    while !log.is_char_boundary(start) {
        start += 1;
    }
    &log[start..]
}
