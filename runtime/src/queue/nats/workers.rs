//! The worker registry, in the bucket `<prefix>-workers`.
//!
//! A worker is the key `w.<base64url(id)>`, holding its [`WorkerInfo`] and `expires_at` (its
//! last heartbeat plus its TTL) as one JSON object; each heartbeat puts it again. The bucket's
//! max age ([`MAX_WORKER_TTL`](crate::queue::MAX_WORKER_TTL)) drops the key of a worker that
//! stopped heartbeating without removing itself; listing skips keys past `expires_at` before
//! that, so a killed worker drops out of the list once its own TTL has passed.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::setup::store;
use super::store::{Inner, entry_at};
use crate::queue::{QueueError, Timestamp, WorkerInfo, now, worker_expiry};

/// A worker's entry.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    #[serde(flatten)]
    info: WorkerInfo,
    expires_at: Timestamp,
}

fn key(id: &str) -> String {
    format!("w.{}", URL_SAFE_NO_PAD.encode(id))
}

async fn read(inner: &Inner, key: &str) -> Result<Option<Entry>, QueueError> {
    let (value, _) = entry_at(&inner.s.workers, key, "reading a worker").await?;
    value
        .map(|v| {
            serde_json::from_slice(&v)
                .map_err(|e| store(&format!("malformed worker entry {key}"), e))
        })
        .transpose()
}

pub async fn heartbeat(
    inner: &Inner,
    worker: &WorkerInfo,
    ttl: Duration,
) -> Result<(), QueueError> {
    let entry = Entry {
        info: worker.clone(),
        expires_at: worker_expiry(worker.last_heartbeat, ttl),
    };
    let body = serde_json::to_vec(&entry).map_err(|e| store("encoding a worker", e))?;
    inner
        .s
        .workers
        .put(key(&worker.id), Bytes::from(body))
        .await
        .map_err(|e| store("writing a worker's heartbeat", e))?;
    Ok(())
}

pub async fn remove(inner: &Inner, id: &str) -> Result<bool, QueueError> {
    let key = key(id);
    let Some(entry) = read(inner, &key).await? else {
        return Ok(false);
    };
    inner
        .s
        .workers
        .delete(&key)
        .await
        .map_err(|e| store("removing a worker", e))?;
    Ok(entry.expires_at > now())
}

pub async fn live(inner: &Inner) -> Result<Vec<WorkerInfo>, QueueError> {
    let mut keys = inner
        .s
        .workers
        .keys()
        .await
        .map_err(|e| store("listing workers", e))?;
    let mut names = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| store("listing workers", e))?;
        if key.starts_with("w.") {
            names.push(key);
        }
    }
    let at = now();
    let mut out = Vec::with_capacity(names.len());
    for key in names {
        // A key deleted or dropped since it was listed reads as none.
        if let Some(entry) = read(inner, &key).await?
            && entry.expires_at > at
        {
            out.push(entry.info);
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}
