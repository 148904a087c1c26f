//! `hostile`: a plugin that misbehaves on request, to test the sandbox's limits.
//!
//! Payload: `{"behaviour": "<name>"}` with one of these names.
//!
//! | behaviour     | what it does                                          | expected on a locked-down host     |
//! |---------------|-------------------------------------------------------|------------------------------------|
//! | `spin`        | infinite CPU loop                                     | interrupted at the timeout         |
//! | `sleep`       | `std::thread::sleep` for one hour                     | interrupted at the timeout         |
//! | `alloc`       | allocates and fills 1 MiB blocks forever              | trap when memory runs out          |
//! | `recurse`     | unbounded recursion                                   | stack-overflow trap                |
//! | `panic`       | `panic!`                                              | trap (wasm `unreachable`)          |
//! | `read-file`   | reads `/etc/passwd`, lists `/`                        | output with both errors            |
//! | `read-env`    | reads the environment, `HOME` and `PATH`              | output with no variables           |
//! | `socket`      | TCP connect to `127.0.0.1:4222`                       | output with the connect error      |
//! | `huge-output` | returns 16 MiB of output                              | whatever the output limit says     |
//! | `huge-stdout` | writes 16 MiB to stdout and 16 MiB to stderr          | output with byte/error counts      |
//! | `empty-logs`  | 300,000 `log` calls with no message and no fields     | kept within the log budget         |
//! | `empty-fields`| 100 `log` calls of 1,000 empty fields each            | kept within the log budget         |
//! | `empty-lines` | 1,000,000 empty lines to stdout                       | kept within the log budget         |
//! | `checkpoints` | checkpoints 16 bytes in a loop, forever               | timed out at the timeout           |
//! | `big-checkpoint` | one checkpoint of 2 MiB                            | trap naming `max_checkpoint`       |
//! | `big-steps`   | 20 steps with results of 1 MiB each                   | trap naming `max_step_output`      |
//! | `big-children`| enqueues children of 4 MiB until one is refused       | output with how many were accepted |
//!
//! Probes report each attempt as `{"ok": ...}` or `{"error": "<message>"}`, never trap:
//!
//! - `read-file`: `{"read_file": {"ok": <bytes read>} | {"error": ..}, "list_root": {"ok": [<names>]} | {"error": ..}}`
//! - `read-env`: `{"vars": {<name>: <value>}, "home": {"ok": <value>} | {"error": ..}, "path": ..}`
//! - `socket`: `{"connect": {"ok": "<peer address>"} | {"error": ..}}`
//! - `huge-output`: 16 MiB (16,777,216 bytes) of `x`, not JSON
//! - `huge-stdout`: `{"stdout": {"written": <bytes>, "errors": <count>}, "stderr": {..}}`
//! - `empty-logs`, `empty-fields`, `empty-lines`: `{"calls": <count>}`
//! - `big-children`: `{"accepted": <count>, "refused": "<why>"}` (at most 64 tried)

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use spool_sdk::{Job, JobError, Raw};

const MIB: usize = 1 << 20;

#[derive(Deserialize)]
struct Orders {
    behaviour: Behaviour,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Behaviour {
    Spin,
    Sleep,
    Alloc,
    Recurse,
    Panic,
    ReadFile,
    ReadEnv,
    Socket,
    HugeOutput,
    HugeStdout,
    EmptyLogs,
    EmptyFields,
    EmptyLines,
    Checkpoints,
    BigCheckpoint,
    BigSteps,
    BigChildren,
}

fn misbehave(job: &Job, orders: Orders) -> Result<Raw, JobError> {
    let report = match orders.behaviour {
        Behaviour::Spin => spin(),
        Behaviour::Sleep => {
            std::thread::sleep(Duration::from_secs(60 * 60));
            json!({"slept_s": 3600})
        }
        Behaviour::Alloc => alloc(),
        Behaviour::Recurse => json!({"depth": recurse(0)}),
        Behaviour::Panic => panic_on_purpose(),
        Behaviour::ReadFile => read_file(),
        Behaviour::ReadEnv => read_env(),
        Behaviour::Socket => socket(),
        Behaviour::HugeOutput => return Ok(Raw(vec![b'x'; 16 * MIB])),
        Behaviour::HugeStdout => huge_stdout(),
        Behaviour::EmptyLogs => {
            for _ in 0..300_000 {
                spool_sdk::log(spool_sdk::Level::Info, "", &[]);
            }
            json!({"calls": 300_000})
        }
        Behaviour::EmptyFields => {
            let empty: Vec<(&str, &dyn std::fmt::Display)> = vec![("", &""); 1_000];
            for _ in 0..100 {
                spool_sdk::log(spool_sdk::Level::Info, "", &empty);
            }
            json!({"calls": 100})
        }
        Behaviour::BigCheckpoint => {
            spool_sdk::checkpoint_bytes(&vec![0xC0; 2 * MIB]);
            json!({"checkpointed": 2 * MIB})
        }
        Behaviour::BigSteps => {
            for i in 0..20 {
                job.step(&format!("step-{i}"), || Ok("x".repeat(MIB)))?;
            }
            json!({"steps": 20})
        }
        Behaviour::BigChildren => {
            let payload = vec![b'x'; 4 * MIB];
            let mut accepted = 0;
            let mut refused = Value::Null;
            for _ in 0..64 {
                match spool_sdk::enqueue_bytes("hostile", &payload, Default::default()) {
                    Ok(_) => accepted += 1,
                    Err(e) => {
                        refused = json!(e.to_string());
                        break;
                    }
                }
            }
            json!({"accepted": accepted, "refused": refused})
        }
        Behaviour::Checkpoints => loop {
            spool_sdk::checkpoint_bytes(&[0xC0; 16]);
        },
        Behaviour::EmptyLines => {
            let lines = vec![b'\n'; MIB];
            let written = std::io::stdout().lock().write_all(&lines).is_ok();
            json!({"calls": 1, "written": written})
        }
    };
    Ok(Raw(serde_json::to_vec(&report)?))
}

/// Burns CPU until the host stops it; `black_box` keeps the loop from being optimised away.
fn spin() -> ! {
    let mut x: u64 = 1;
    loop {
        x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}

/// Grows the heap 1 MiB at a time, writing every byte so the memory is really used.
fn alloc() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let block = vec![0xA5_u8; MIB];
        hoard.push(black_box(block));
    }
}

/// Recurses until the stack runs out. The result is used after the call, so it is not a tail
/// call, and `black_box` hides that the exit condition never holds.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return depth;
    }
    black_box(recurse(depth + 1)).wrapping_add(depth)
}

#[allow(clippy::panic, reason = "panicking is this behaviour's whole point")]
fn panic_on_purpose() -> ! {
    panic!("hostile plugin panics on purpose")
}

fn read_file() -> Value {
    let read_file = probe(std::fs::read_to_string("/etc/passwd").map(|text| json!(text.len())));
    let list_root = probe(std::fs::read_dir("/").and_then(|entries| {
        let names = entries
            .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(json!(names))
    }));
    json!({"read_file": read_file, "list_root": list_root})
}

fn read_env() -> Value {
    // `vars_os`, not `vars`: a variable that is not UTF-8 must not panic.
    let vars: serde_json::Map<String, Value> = std::env::vars_os()
        .map(|(k, v)| (k.to_string_lossy().into_owned(), json!(v.to_string_lossy())))
        .collect();
    let home = probe(std::env::var("HOME").map(Value::from));
    let path = probe(std::env::var("PATH").map(Value::from));
    json!({"vars": vars, "home": home, "path": path})
}

fn socket() -> Value {
    let connect = std::net::TcpStream::connect("127.0.0.1:4222")
        .and_then(|stream| stream.peer_addr())
        .map(|peer| json!(peer.to_string()));
    json!({"connect": probe(connect)})
}

/// Writes 16 MiB to each of stdout and stderr in 64 KiB chunks. `write_all`, not `println!`,
/// so a host that refuses the writes makes errors to count rather than a panic.
fn huge_stdout() -> Value {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 16 * MIB / CHUNK;
    let chunk = [b'o'; CHUNK];
    let flood = |out: &mut dyn Write| {
        let (mut written, mut errors) = (0_usize, 0_usize);
        for _ in 0..CHUNKS {
            match out.write_all(&chunk) {
                Ok(()) => written += CHUNK,
                Err(_) => errors += 1,
            }
        }
        if out.flush().is_err() {
            errors += 1;
        }
        json!({"written": written, "errors": errors})
    };
    let stdout = flood(&mut std::io::stdout().lock());
    let stderr = flood(&mut std::io::stderr().lock());
    json!({"stdout": stdout, "stderr": stderr})
}

fn probe<E: std::fmt::Display>(result: Result<Value, E>) -> Value {
    match result {
        Ok(value) => json!({"ok": value}),
        Err(e) => json!({"error": e.to_string()}),
    }
}

spool_sdk::export!(misbehave);
