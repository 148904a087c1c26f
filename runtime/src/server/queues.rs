//! `/api/v1/queues`: counts per queue and state, with each queue's handler (`spool queues`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::ServerState;
use super::error::ApiError;
use crate::queue::{Backend as _, QueueCounts};

/// One queue.
#[derive(Serialize, ToSchema)]
pub struct QueueRow {
    /// The queue's name.
    name: String,
    /// Jobs per state: scheduled, ready, running, waiting, succeeded, dead, cancelled.
    #[schema(value_type = Object)]
    counts: serde_json::Value,
    /// The plugin serving it, per the config; `null` when the config has no such queue.
    handler: Option<String>,
    /// The plugin file's sha-256 digest; `null` when there is no handler or no file.
    digest: Option<String>,
    /// How long finished jobs are kept, when there is a config.
    retention: Option<Retention>,
    /// How many live workers serve the queue (0: its jobs wait for a worker).
    workers: usize,
}

/// A retention in seconds per finished state; dead jobs are kept until purged.
#[derive(Serialize, ToSchema, Clone, Copy)]
pub struct Retention {
    /// Succeeded jobs.
    succeeded_secs: u64,
    /// Cancelled jobs.
    cancelled_secs: u64,
}

/// The queues.
#[derive(Serialize, ToSchema)]
pub struct Queues {
    /// Every queue that has jobs or a `[queues]` entry, by name.
    queues: Vec<QueueRow>,
}

/// Counts per queue and state, each queue's plugin and live workers, and queues with jobs
/// but no handler.
#[utoipa::path(
    get,
    path = "/api/v1/queues",
    tag = "queues",
    responses((status = 200, body = Queues))
)]
pub async fn list(State(state): State<ServerState>) -> Result<Json<Queues>, ApiError> {
    let mut counts = state.backend().queues().await?;
    let workers = state.backend().workers().await?;
    let serving = |queue: &str| {
        workers
            .iter()
            .filter(|w| w.queues.iter().any(|q| q == queue))
            .count()
    };
    let config = state.config();
    if let Some(config) = config {
        for name in config.queues.keys() {
            if !counts.iter().any(|c| &c.queue == name) {
                counts.push(QueueCounts {
                    queue: name.clone(),
                    ..QueueCounts::default()
                });
            }
        }
    }
    // A queue that only a live worker knows of (it serves it with another config).
    for queue in workers.iter().flat_map(|w| &w.queues) {
        if !counts.iter().any(|c| &c.queue == queue) {
            counts.push(QueueCounts {
                queue: queue.clone(),
                ..QueueCounts::default()
            });
        }
    }
    counts.sort_by(|a, b| a.queue.cmp(&b.queue));
    let retention = config.map(|c| Retention {
        succeeded_secs: c.worker.retention.succeeded.as_secs(),
        cancelled_secs: c.worker.retention.cancelled.as_secs(),
    });
    let mut queues = Vec::with_capacity(counts.len());
    for c in counts {
        let plugin = config.and_then(|config| config.queues.get(&c.queue).map(|q| &q.plugin));
        let digest = match plugin {
            Some(path) => state.digests.of(path).await,
            None => None,
        };
        queues.push(QueueRow {
            handler: plugin.map(|p| p.display().to_string()),
            digest,
            retention,
            workers: serving(&c.queue),
            counts: serde_json::json!({
                "scheduled": c.scheduled,
                "ready": c.ready,
                "running": c.running,
                "waiting": c.waiting,
                "succeeded": c.succeeded,
                "dead": c.dead,
                "cancelled": c.cancelled,
            }),
            name: c.queue,
        });
    }
    Ok(Json(Queues { queues }))
}

/// The plugin files' digests, read again only when a file's size or modification time
/// changes: a dashboard asks for the queues at every event, and hashing a plugin of tens of
/// megabytes each time would keep a core busy.
#[derive(Default)]
pub struct Digests {
    known: Mutex<HashMap<PathBuf, (u64, SystemTime, String)>>,
}

impl Digests {
    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, (u64, SystemTime, String)>> {
        // A panic while holding it leaves at worst a stale entry, which the stamp catches.
        self.known
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The sha-256 digest of the file at `path`; `None` when it cannot be read.
    async fn of(&self, path: &Path) -> Option<String> {
        let meta = tokio::fs::metadata(path).await.ok()?;
        let stamp = (meta.len(), meta.modified().ok()?);
        if let Some((len, modified, digest)) = self.known().get(path)
            && (*len, *modified) == stamp
        {
            return Some(digest.clone());
        }
        let file = path.to_owned();
        let digest = tokio::task::spawn_blocking(move || {
            std::fs::read(file).map(|bytes| crate::Digest::of(&bytes).as_str().to_owned())
        })
        .await
        .ok()?
        .ok()?;
        self.known()
            .insert(path.to_owned(), (stamp.0, stamp.1, digest.clone()));
        Some(digest)
    }
}
