//! A small HTTP/1.1 server on 127.0.0.1 for the outbound HTTP tests: it counts connections
//! and requests, and notices when a client closes a connection it is holding open.
//!
//! Paths: `/ok` answers `200 ok`; `/big?n=N` answers N bytes of body; `/slow?ms=N` answers
//! `200 ok` after N ms; `/hold` never answers, and records when the client hangs up. Every
//! answer closes the connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the server has seen.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: Mutex<Vec<Received>>,
    /// When each held connection was closed by the client.
    hangups: Mutex<Vec<Instant>>,
}

/// One request, as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `GET /ok`, ...
    pub line: String,
    /// The body's length.
    pub body_len: usize,
    /// When its head arrived.
    pub at: Instant,
}

/// A running server; it stops with the test process.
pub struct TestServer {
    addr: SocketAddr,
    seen: Arc<Seen>,
}

impl TestServer {
    /// Start a server on a free port of 127.0.0.1.
    pub fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let shared = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let seen = shared.clone();
                std::thread::spawn(move || serve(stream, &seen));
            }
        });
        TestServer { addr, seen }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Received> {
        self.seen.requests.lock().unwrap().clone()
    }

    /// When held connections were closed by the client, so far.
    pub fn hangups(&self) -> Vec<Instant> {
        self.seen.hangups.lock().unwrap().clone()
    }

    /// Wait until `n` requests have arrived, or panic after `limit`.
    pub fn wait_requests(&self, n: usize, limit: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let requests = self.requests();
            if requests.len() >= n {
                return requests;
            }
            assert!(
                start.elapsed() < limit,
                "the server got {} requests in {limit:?}, waiting for {n}",
                requests.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until `n` held connections have been closed by the client, or panic after `limit`.
    pub fn wait_hangups(&self, n: usize, limit: Duration) -> Vec<Instant> {
        let start = Instant::now();
        loop {
            let hangups = self.hangups();
            if hangups.len() >= n {
                return hangups;
            }
            assert!(
                start.elapsed() < limit,
                "the client closed {} held connections in {limit:?}, waiting for {n}",
                hangups.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve(mut stream: TcpStream, seen: &Seen) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let at = Instant::now();
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let line = head.lines().next().unwrap_or("").to_owned();
    let header = |wanted: &str| {
        head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case(wanted)
                .then(|| value.trim().to_ascii_lowercase())
        })
    };
    let mut rest = buf.split_off(head_end);
    let mut fill = |rest: &mut Vec<u8>, want: usize| -> bool {
        while rest.len() < want {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
            }
        }
        true
    };
    let body_len = if header("transfer-encoding").as_deref() == Some("chunked") {
        // Chunked: `<hex size>\r\n<data>\r\n`, until a chunk of size 0 (no trailers).
        let mut total = 0;
        loop {
            let size_end = loop {
                if let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
                    break end;
                }
                let have = rest.len();
                if !fill(&mut rest, have + 1) {
                    return;
                }
            };
            let size_text = String::from_utf8_lossy(&rest[..size_end]).into_owned();
            let size =
                usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap_or(0);
            if !fill(&mut rest, size_end + 2 + size + 2) {
                return;
            }
            rest.drain(..size_end + 2 + size + 2);
            total += size;
            if size == 0 {
                break total;
            }
        }
    } else {
        let length = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if !fill(&mut rest, length) {
            return;
        }
        length
    };
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    seen.requests
        .lock()
        .unwrap()
        .push(Received { line, body_len, at });
    let query = |key: &str| -> Option<u64> {
        path.split_once('?')?
            .1
            .split('&')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    };
    let body = if path.starts_with("/hold") {
        // Never answer: wait for the client to hang up.
        loop {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    seen.hangups.lock().unwrap().push(Instant::now());
                    return;
                }
                Ok(_) => {}
            }
        }
    } else if path.starts_with("/big") {
        vec![b'y'; query("n").unwrap_or(0) as usize]
    } else if path.starts_with("/slow") {
        std::thread::sleep(Duration::from_millis(query("ms").unwrap_or(0)));
        b"ok".to_vec()
    } else {
        b"ok".to_vec()
    };
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(&body);
}
