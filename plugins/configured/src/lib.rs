//! `configured`: reports the values it reads through `wasi:config`, for the config tests.
//!
//! Payload: `{"show"?: [key], "fingerprint"?: [key], "log"?: [key], "fail_with"?: key}`.
//! Output: `{"keys": [every key it may read, sorted], "values": {key: value or null} for
//! `show`, "fingerprints": {key: FNV-1a-64 hex of the value, or null} for `fingerprint`}`.
//! A test proves the guest read a secret through its fingerprint without the secret itself
//! being stored as output. `log` writes each named value to the attempt's log (a `host.log`
//! line and its field, stdout, stderr and the progress note), and `fail_with` fails the job
//! with the named value in the error message: what the host must redact.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spool_sdk::{Job, JobError};

#[derive(Deserialize)]
struct Ask {
    #[serde(default)]
    show: Vec<String>,
    #[serde(default)]
    fingerprint: Vec<String>,
    #[serde(default)]
    log: Vec<String>,
    #[serde(default)]
    fail_with: Option<String>,
}

#[derive(Serialize)]
struct Seen {
    keys: Vec<String>,
    values: BTreeMap<String, Option<String>>,
    fingerprints: BTreeMap<String, Option<String>>,
}

/// FNV-1a, 64 bits, in hex: the test computes the same from the value it configured.
fn fnv1a(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

fn configured(_: &Job, ask: Ask) -> Result<Seen, JobError> {
    for key in &ask.log {
        let value = spool_sdk::config::get(key).unwrap_or_default();
        spool_sdk::log(
            spool_sdk::Level::Info,
            &format!("read {key} = {value}"),
            &[("value", &value)],
        );
        println!("stdout {key} = {value}");
        eprintln!("stderr {key} = {value}");
        spool_sdk::progress(50, Some(&format!("using {value}")));
    }
    if let Some(key) = &ask.fail_with {
        let value = spool_sdk::secret(key)
            .map(|s| s.into_inner())
            .unwrap_or_default();
        return Err(JobError::fail(format!("the API refused key {value}")));
    }
    let mut keys: Vec<String> = spool_sdk::config::get_all()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    keys.sort();
    Ok(Seen {
        keys,
        values: ask
            .show
            .into_iter()
            .map(|k| {
                let v = spool_sdk::config::get(&k);
                (k, v)
            })
            .collect(),
        fingerprints: ask
            .fingerprint
            .into_iter()
            .map(|k| {
                let v = spool_sdk::secret(&k).map(|s| fnv1a(s.expose()));
                (k, v)
            })
            .collect(),
    })
}

spool_sdk::export!(configured);
