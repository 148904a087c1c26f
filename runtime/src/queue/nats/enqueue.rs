//! Enqueue: one message per job on its queue's band subject, and the idempotency keys. The
//! job's record is written by whoever first claims (or cancels) it, from the message.

use std::collections::HashMap;

use async_nats::jetstream::message::PublishMessage;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;

use super::names::Lane;
use super::read::unclaimed;
use super::record::{Wire, headers};
use super::setup::store;
use super::store::Inner;
use crate::queue::{Enqueued, EventKind, JobId, NewEvent, NewJob, QueueError, Timestamp, now};

/// The key-bucket key of an idempotency key on a queue.
pub fn key_name(queue: &str, key: &str) -> String {
    format!("{queue}.{}", URL_SAFE_NO_PAD.encode(key))
}

/// Who an idempotency key belongs to.
enum Holder {
    /// An unfinished job: the new one is its duplicate.
    Job(JobId),
    /// An earlier job of this batch.
    Batch(usize),
    /// Nobody (or a finished job): the new job takes it over from this key revision (0: the
    /// key was never used).
    Free(u64),
}

/// Room in a job's record for everything but its payload (state, history, timeline).
const RECORD_ROOM: usize = 64 << 10;

/// The largest payload the backend takes, and, when it is less than Spool's own
/// `max_payload`, why: the server's `max_payload` must hold the job's record, which carries
/// the payload in base64 (4 bytes for every 3) beside [`RECORD_ROOM`] of the rest.
pub fn max_payload(inner: &Inner) -> (usize, Option<String>) {
    let own = inner.options.max_payload;
    let server = inner.client.server_info().max_payload;
    if server == 0 {
        return (own, None);
    }
    let room = server.saturating_sub(RECORD_ROOM) / 4 * 3;
    if room >= own {
        return (own, None);
    }
    let why = format!(
        "the NATS server's max_payload of {} leaves room for no more; Spool's own max_payload is {}: raise the server's to take larger payloads",
        crate::queue::check::bytes(server),
        crate::queue::check::bytes(own)
    );
    (room, Some(why))
}

/// Check every job of a batch (queue name, payload size) against this server's limits.
pub fn check(inner: &Inner, jobs: &[NewJob]) -> Result<(), QueueError> {
    let (limit, why) = max_payload(inner);
    crate::queue::check::check_jobs(jobs, limit).map_err(|e| match e {
        QueueError::PayloadTooLarge { size, limit, .. } => QueueError::PayloadTooLarge {
            size,
            limit,
            why: why.clone(),
        },
        other => other,
    })
}

pub async fn enqueue(inner: &Inner, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, QueueError> {
    check(inner, &jobs)?;
    let at = now();

    // Idempotency keys, in batch order.
    let mut holders: Vec<Holder> = Vec::with_capacity(jobs.len());
    let mut in_batch: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        let Some(key) = job.key.as_deref() else {
            holders.push(Holder::Free(0));
            continue;
        };
        if let Some(&first) = in_batch.get(&(job.queue.as_str(), key)) {
            holders.push(Holder::Batch(first));
            continue;
        }
        in_batch.insert((job.queue.as_str(), key), i);
        holders.push(key_holder(inner, &job.queue, key).await?);
    }

    // One message per new job, published in claim order (within a band a consumer delivers
    // in stream order), pipelined.
    let mut order: Vec<usize> = (0..jobs.len())
        .filter(|&i| matches!(holders[i], Holder::Free(_)))
        .collect();
    order.sort_by_key(|&i| {
        (
            std::cmp::Reverse(jobs[i].priority),
            jobs[i].run_at.unwrap_or(at),
            i,
        )
    });
    let mut acks = Vec::with_capacity(order.len());
    for &i in &order {
        let job = &jobs[i];
        let mut publish = PublishMessage::build()
            .payload(Bytes::from(job.payload.clone()))
            .headers(headers(job, at));
        if let (Some(key), Holder::Free(generation)) = (&job.key, &holders[i]) {
            // Two producers racing for a free key publish the same id: the stream keeps one.
            publish = publish.message_id(format!("{}:{generation}", key_name(&job.queue, key)));
        }
        // A job with a tenant waits in its tenant's lane.
        let lane = Lane::of(job.tenant.as_deref(), job.priority);
        let subject = inner.names.lane_subject(&job.queue, &lane);
        let ack = inner
            .js
            .send_publish(subject, publish)
            .await
            .map_err(|e| store("publishing a job", e))?;
        acks.push((i, ack));
    }
    let mut answers: Vec<Option<Enqueued>> = vec![None; jobs.len()];
    for (i, ack) in acks {
        let ack = ack.await.map_err(|e| store("publishing a job", e))?;
        answers[i] = Some(Enqueued {
            id: JobId(ack.sequence.to_string()),
            duplicate: ack.duplicate,
        });
    }

    // The message is the job until a worker first claims it (or a cancel comes first):
    // whoever does writes its record, from the message. Here only the keys of the new jobs
    // are taken, pipelined, and their `enqueued` events logged.
    let mut log = Vec::with_capacity(jobs.len());
    let mut keys = Vec::new();
    for &i in &order {
        let Some(answer) = answers[i].as_ref().filter(|a| !a.duplicate) else {
            continue;
        };
        let job = &jobs[i];
        log.push(Wire {
            at,
            event: NewEvent {
                job_id: Some(answer.id.clone()),
                queue: Some(job.queue.clone()),
                tenant: job.tenant.clone(),
                ..enqueued(job, at)
            },
        });
        if let (Some(key), Holder::Free(generation)) = (&job.key, &holders[i]) {
            keys.push(claim_key(inner, &job.queue, key, &answer.id, *generation));
        }
    }
    for result in futures::future::join_all(keys).await {
        result?;
    }

    // Answers in batch order; a duplicate joins the timeline of the job it duplicates.
    let mut out = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        let answer = match &holders[i] {
            Holder::Free(_) => answers[i].clone(),
            Holder::Job(id) => Some(Enqueued {
                id: id.clone(),
                duplicate: true,
            }),
            Holder::Batch(first) => answers[*first].clone().map(|a| Enqueued {
                id: a.id,
                duplicate: true,
            }),
        };
        let Some(answer) = answer else {
            return Err(QueueError::Store("an enqueue lost track of a job".into()));
        };
        if answer.duplicate {
            let event = NewEvent {
                message: job.key.as_ref().map(|k| format!("idempotency key {k}")),
                ..NewEvent::new(EventKind::Duplicate)
            };
            log.extend(inner.append(&answer.id, event).await?);
        }
        out.push(answer);
    }
    inner.publish_events(log).await?;
    Ok(out)
}

/// The `enqueued` event of a job enqueued at `at`.
fn enqueued(job: &NewJob, at: Timestamp) -> NewEvent {
    let run_at = job.run_at.unwrap_or(at);
    NewEvent {
        duration_ms: (run_at > at).then(|| u64::try_from(run_at - at).unwrap_or(0)),
        ..NewEvent::new(EventKind::Enqueued)
    }
}

/// Who holds `key` on `queue` now.
async fn key_holder(inner: &Inner, queue: &str, key: &str) -> Result<Holder, QueueError> {
    let entry = inner
        .s
        .keys
        .entry(key_name(queue, key))
        .await
        .map_err(|e| store("reading an idempotency key", e))?;
    let Some(entry) = entry else {
        return Ok(Holder::Free(0));
    };
    let id = JobId(String::from_utf8_lossy(&entry.value).into_owned());
    if unfinished(inner, &id).await? {
        Ok(Holder::Job(id))
    } else {
        Ok(Holder::Free(entry.revision))
    }
}

/// Whether job `id` exists and is not finished (a job no worker has claimed yet is its
/// message).
async fn unfinished(inner: &Inner, id: &JobId) -> Result<bool, QueueError> {
    Ok(match inner.get(id).await? {
        Some((record, _)) => !record.is_finished(),
        None => unclaimed(inner, id).await?.is_some(),
    })
}

/// Point `key` at `id`, if nobody moved it since `generation`.
pub async fn claim_key(
    inner: &Inner,
    queue: &str,
    key: &str,
    id: &JobId,
    generation: u64,
) -> Result<bool, QueueError> {
    let name = key_name(queue, key);
    let value = Bytes::from(id.0.clone());
    let result = if generation == 0 {
        inner
            .s
            .keys
            .create(&name, value)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    } else {
        inner
            .s
            .keys
            .update(&name, value, generation)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    match result {
        Ok(()) => Ok(true),
        Err(e) => {
            tracing::debug!(job = %id, error = %e, "idempotency key moved meanwhile");
            Ok(false)
        }
    }
}

/// Point `key` at `id` unless an unfinished job other than `id` holds it: `Ok(None)` once it
/// is `id`'s, `Ok(Some(holder))` when the holder keeps it.
pub async fn take_key(
    inner: &Inner,
    queue: &str,
    key: &str,
    id: &JobId,
) -> Result<Option<JobId>, QueueError> {
    // Each round loses only to a writer that moved the key meanwhile.
    for _ in 0..8 {
        let entry = inner
            .s
            .keys
            .entry(key_name(queue, key))
            .await
            .map_err(|e| store("reading an idempotency key", e))?;
        let generation = match entry {
            None => 0,
            Some(entry) => {
                let holder = JobId(String::from_utf8_lossy(&entry.value).into_owned());
                if holder == *id {
                    return Ok(None);
                }
                if unfinished(inner, &holder).await? {
                    return Ok(Some(holder));
                }
                entry.revision
            }
        };
        if claim_key(inner, queue, key, id, generation).await? {
            return Ok(None);
        }
    }
    Err(QueueError::Store(format!(
        "idempotency key {key} on queue {queue} kept changing"
    )))
}
