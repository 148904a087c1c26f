//! Creating children: staged before the parent's settle commits them, created once it has.
//!
//! Every step may run twice (a crashed writer's job is finished by whoever holds the job's
//! message next), so each is a no-op the second time: a record is created only if absent, a
//! message carries a `Nats-Msg-Id`, a staged child is dropped only once its record exists.

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};

use super::children::tell;
use super::enqueue::take_key;
use super::names::{Lane, child_of, is_token, parent_of, staged_key, staged_of};
use super::record::{Record, Spawn, TRACEPARENT, WAKE, Wire};
use super::setup::store;
use super::store::Inner;
use crate::queue::{EventKind, JobId, JobState, NewChild, NewEvent, QueueError, Timestamp, now};

/// How many children are read or written at once.
pub const PARALLEL: usize = 32;

/// How long a staged child is kept before `prune` may take it for the leftover of a settle
/// that never committed: far longer than a settle takes.
const STAGE_KEEP_MS: i64 = 60 * 60 * 1000;

/// Stage the children an attempt's settle is about to commit, each under its id and the
/// attempt's token, so that the settle's compare-and-set only has to name them.
pub async fn stage(
    inner: &Inner,
    parent: &JobId,
    token: i64,
    children: &[NewChild],
    now: Timestamp,
) -> Result<(), QueueError> {
    // By index: a closure over borrowed items would not be `Send` for every lifetime.
    futures::stream::iter(0..children.len())
        .map(|i| async move {
            let c = &children[i];
            let mut r = Record::new(&c.job, now);
            r.parent = Some(parent.clone());
            r.on_failure = Some(c.on_failure);
            inner
                .s
                .staging
                .put(staged_key(&c.id, token), Bytes::from(r.encode()))
                .await
                .map(drop)
                .map_err(|e| store("staging a child", e))
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
}

/// Drop what a settle that did not commit staged. Best effort: `prune` takes what is left.
pub async fn unstage(inner: &Inner, children: &[NewChild], token: i64) {
    futures::stream::iter(0..children.len())
        .for_each_concurrent(PARALLEL, |i| async move {
            let c = &children[i];
            let subject = inner.names.staged_subject(&staged_key(&c.id, token));
            if let Err(e) = inner.purge(&inner.s.staging_stream, subject).await {
                tracing::debug!(child = %c.id, error = %e, "dropping a staged child");
            }
        })
        .await;
}

/// Create the children `parent`'s settles committed (`record.spawn`): each child's record
/// (if absent) with its `enqueued` event, then the children's job messages in enqueue order
/// (so a band delivers siblings in that order), then drop their stages; tell the parent of
/// those that ended at once (cancelled: their idempotency key was taken) and clear the spawns
/// from it. Returns the parent's events.
pub async fn spawn(
    inner: &Inner,
    parent: &JobId,
    record: &Record,
) -> Result<Vec<Wire>, QueueError> {
    if record.spawn.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: Vec<(JobId, String)> = record
        .spawn
        .iter()
        .flat_map(|s| (s.from..=s.to).map(|i| (i, s.token)))
        .map(|(i, token)| {
            let id = child_of(parent, i);
            let key = staged_key(&id, token);
            (id, key)
        })
        .collect();
    let created: Vec<Record> = futures::stream::iter(0..wanted.len())
        .map(|i| create(inner, parent, record, &wanted[i].0, &wanted[i].1))
        .buffered(PARALLEL)
        .try_collect()
        .await?;

    // Queued unless claimed since (or never to run): the message id makes a repeat within the
    // duplicate window a no-op, and a later one is dropped by its claimer.
    let mut acks = Vec::new();
    for ((id, _), r) in wanted.iter().zip(&created) {
        if matches!(r.state, JobState::Ready | JobState::Scheduled) && r.started == 0 {
            let message = PublishMessage::build()
                .headers(wake_headers(id, r))
                .message_id(format!("{id}.spawn"));
            let lane = Lane::of(r.tenant.as_deref(), r.priority);
            let subject = inner.names.lane_subject(&r.queue, &lane);
            let ack = inner
                .js
                .send_publish(subject, message)
                .await
                .map_err(|e| store("queueing a child", e))?;
            acks.push(ack);
        }
    }
    for ack in acks {
        ack.await.map_err(|e| store("queueing a child", e))?;
    }
    futures::stream::iter(0..wanted.len())
        .map(|i| {
            let subject = inner.names.staged_subject(&wanted[i].1);
            inner.purge(&inner.s.staging_stream, subject)
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<u64>>()
        .await?;

    // Told before the spawns are cleared: a crash in between creates nothing twice and tells
    // the parent again.
    let ended: Vec<(JobId, Record)> = wanted
        .into_iter()
        .zip(created)
        .filter(|(_, r)| r.is_finished())
        .map(|((id, _), r)| (id, r))
        .collect();
    let mut events = Vec::new();
    if !ended.is_empty() {
        events = tell(inner, parent, &ended, true).await?.1;
    }
    let done: Vec<Spawn> = record.spawn.clone();
    inner
        .update(parent, None, |p| {
            let before = p.spawn.len();
            p.spawn.retain(|s| !done.contains(s));
            (p.spawn.len() != before).then_some(())
        })
        .await?;
    Ok(events)
}

/// Child `id`'s record: created from its stage (`key`) unless it exists, with its events.
async fn create(
    inner: &Inner,
    parent: &JobId,
    parent_record: &Record,
    id: &JobId,
    key: &str,
) -> Result<Record, QueueError> {
    if let Some((r, _)) = inner.get(id).await? {
        return Ok(r);
    }
    let staged = inner
        .s
        .staging
        .get(key)
        .await
        .map_err(|e| store("reading a staged child", e))?;
    let missing = staged.is_none();
    let mut r = match staged {
        Some(bytes) => Record::decode(&bytes)?,
        None => lost(parent, parent_record),
    };
    let refused = admit(inner, id, &mut r).await?;
    let at = now();
    let mut events = vec![
        r.note(
            id,
            at,
            NewEvent {
                message: Some(format!("child of job {parent}")),
                duration_ms: (r.run_at > r.enqueued_at)
                    .then(|| u64::try_from(r.run_at - r.enqueued_at).unwrap_or(0)),
                ..NewEvent::new(EventKind::Enqueued)
            },
        ),
    ];
    if let Some(why) = refused {
        events.push(r.note(
            id,
            at,
            NewEvent {
                message: Some(why),
                ..NewEvent::new(EventKind::Cancelled)
            },
        ));
    }
    if inner.cas(id, &r, 0).await?.is_none() {
        // Another holder of the parent's message created it meanwhile.
        return inner
            .get(id)
            .await?
            .map(|(r, _)| r)
            .ok_or_else(|| store("creating a child", format!("job {id} vanished")));
    }
    if missing {
        tracing::warn!(job = %id, "a committed child's staged record was missing");
    }
    inner.publish_events(events).await?;
    Ok(r)
}

/// A child whose stage is gone though its parent's spawn names it (pruned by hand, say):
/// created cancelled, so that its parent does not wait for it forever.
fn lost(parent: &JobId, parent_record: &Record) -> Record {
    let mut r = Record::new(
        &crate::queue::NewJob {
            queue: parent_record.queue.clone(),
            tenant: parent_record.tenant.clone(),
            ..crate::queue::NewJob::default()
        },
        now(),
    );
    r.parent = Some(parent.clone());
    r.state = JobState::Cancelled;
    r.last_error = Some("not created: its staged record was lost".into());
    r
}

/// Whether a child can be created as enqueued: a queue NATS can name, and an idempotency key
/// no unfinished job holds (as an enqueue would make it a duplicate, the child is created
/// cancelled, naming the holder). Returns why not, having marked `r` cancelled.
async fn admit(inner: &Inner, id: &JobId, r: &mut Record) -> Result<Option<String>, QueueError> {
    if r.state != JobState::Ready {
        return Ok(None);
    }
    let why = if !is_token(&r.queue) {
        Some(format!(
            "not created: bad queue name `{}` for NATS: use letters, digits, `-` and `_` (at most 128)",
            r.queue
        ))
    } else if let Some(key) = r.key.clone() {
        take_key(inner, &r.queue, &key, id)
            .await?
            .map(|holder| format!("not created: job {holder} holds idempotency key {key}"))
    } else {
        None
    };
    if let Some(why) = &why {
        r.state = JobState::Cancelled;
        r.key = None;
        r.last_error = Some(why.clone());
    }
    Ok(why)
}

/// Put a message on a job's queue that makes a worker claim it (its id in the `Spool-Job`
/// header). `dedupe` becomes its `Nats-Msg-Id`.
pub async fn wake(
    inner: &Inner,
    id: &JobId,
    r: &Record,
    dedupe: Option<String>,
) -> Result<(), QueueError> {
    let mut message = PublishMessage::build().headers(wake_headers(id, r));
    if let Some(dedupe) = dedupe {
        message = message.message_id(dedupe);
    }
    let lane = Lane::of(r.tenant.as_deref(), r.priority);
    let subject = inner.names.lane_subject(&r.queue, &lane);
    inner
        .js
        .send_publish(subject, message)
        .await
        .map_err(|e| store("waking a job", e))?
        .await
        .map_err(|e| store("waking a job", e))?;
    Ok(())
}

/// The headers of a message that names the job it is for.
/// It carries the job's `traceparent` too, for whoever watches the stream.
fn wake_headers(id: &JobId, r: &Record) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(WAKE, id.0.as_str());
    if let Some(tp) = &r.traceparent {
        headers.insert(TRACEPARENT, tp.to_string().as_str());
    }
    headers
}

/// Drop staged children that no pending spawn names and that are older than both `before`
/// and an hour: what settles that never committed left behind.
pub async fn prune_stage(inner: &Inner, before: Timestamp) -> Result<(), QueueError> {
    let cutoff = before.min(now() - STAGE_KEEP_MS);
    let prefix = format!("$KV.{}.", inner.s.staging.name);
    let scanned = inner
        .scan(&inner.s.staging_stream, format!("{prefix}>"), None, None)
        .await?;
    for m in scanned {
        let key = m.subject.trim_start_matches(&prefix);
        let Some((child, token)) = staged_of(key) else {
            continue;
        };
        let Some((parent, index)) = parent_of(&child) else {
            continue;
        };
        let old = Record::decode(&m.payload).map_or(true, |r| r.enqueued_at < cutoff);
        if !old {
            continue;
        }
        let wanted = inner
            .get(&parent)
            .await?
            .is_some_and(|(p, _)| p.spawn.iter().any(|s| s.covers(index, token)));
        if !wanted {
            inner.purge(&inner.s.staging_stream, m.subject).await?;
        }
    }
    Ok(())
}
