//! Claims and leases: claim, renew, release, the lease sweeper.

use std::time::Duration;

use async_nats::jetstream::Message;
use async_nats::jetstream::consumer::pull::Batch;
use futures::StreamExt as _;

use super::children;
use super::flow;
use super::names::{Band, Lane, check_queue};
use super::record::{self, Held, Record, WAKE, Wire};
use super::setup::{REQUEST_TIMEOUT, store};
use super::store::{Answer, Inner, TableEntry};
use crate::queue::{
    AttemptRecord, Claimed, EventKind, JobId, JobState, Lease, NewEvent, Phase, QueueClaim,
    QueueError, StepRecord, Timestamp, now,
};

/// How long a message whose job is leased elsewhere, with a lapsed lease, waits for the
/// sweeper before it is looked at again.
const SWEEP_WAIT: Duration = Duration::from_secs(1);

/// How often claims publish the connection's lease table at most (a quarter of the lease, if
/// that is shorter). Renewals publish it every time.
const TABLE_EVERY: Duration = Duration::from_secs(1);

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn until(at: Timestamp, now: Timestamp) -> Duration {
    Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
}

pub async fn claim(
    inner: &Inner,
    worker: &str,
    queues: &[QueueClaim],
    lease: Duration,
) -> Result<Vec<Claimed>, QueueError> {
    for q in queues {
        check_queue(&q.queue)?;
    }
    // Queues are claimed from at once; within a queue, bands in order.
    let rounds = queues
        .iter()
        .map(|q| Box::pin(claim_queue(inner, q, worker, lease)));
    let mut claimed = Vec::new();
    let mut events = Vec::new();
    for round in futures::future::join_all(rounds).await {
        let (mut c, mut e) = round?;
        claimed.append(&mut c);
        events.append(&mut e);
    }
    if !claimed.is_empty() {
        inner.table_hold(claimed.iter().map(|c| &c.lease));
        inner
            .publish_table_within(TABLE_EVERY.min(lease / 4))
            .await?;
    }
    // The jobs start without waiting for the log: their records hold their `started`.
    inner.publish_events_unconfirmed(events).await?;
    Ok(claimed)
}

/// Claim up to `q.limit` jobs of one queue, band by band from the highest, within the queue's
/// flow limits. Within a band, the shared lane and the tenant lanes with messages get even
/// shares; what a lane cannot fill goes to the lanes that filled theirs.
async fn claim_queue(
    inner: &Inner,
    q: &QueueClaim,
    worker: &str,
    lease: Duration,
) -> Result<(Vec<Claimed>, Vec<Wire>), QueueError> {
    let queue = q.queue.as_str();
    let mut room = q.limit;
    // The queue's own limits: slots reserved and tokens taken before fetching anything.
    let mut reservation = None;
    if let Some(limit) = q.flow.concurrency {
        let key = flow::queue_slots(queue);
        let (granted, id) = flow::reserve(inner, &key, limit, room).await?;
        room = granted;
        if granted > 0 {
            reservation = Some((key, id));
        }
    }
    if let (Some(rate), true) = (q.flow.rate, room > 0) {
        room = flow::take(inner, &flow::queue_rate(queue), rate, room).await?;
    }
    let tokens = room;
    let queue_slots: Vec<String> = reservation.iter().map(|(k, _)| k.clone()).collect();

    let mut claimed = Vec::new();
    let mut events = Vec::new();
    let tenants = if room > 0 {
        flow::tenant_lanes(inner, queue).await?
    } else {
        Vec::new()
    };
    for band in Band::ALL {
        let mut open: Vec<Lane> = std::iter::once(Lane::shared(band))
            .chain(tenants.iter().filter(|l| l.band == band).cloned())
            .collect();
        // Which lane goes first changes from claim to claim, so that when there are more
        // lanes than jobs wanted, each gets its turn.
        let first = fastrand::usize(..open.len());
        open.rotate_left(first);
        while room > 0 && !open.is_empty() {
            let n = open.len();
            let mut shares: Vec<(Lane, usize)> = open
                .iter()
                .enumerate()
                .map(|(i, lane)| (lane.clone(), room / n + usize::from(i < room % n)))
                .collect();
            // Lanes without a share this pass wait for the next one.
            let waiting: Vec<Lane> = shares
                .iter()
                .filter(|(_, share)| *share == 0)
                .map(|(lane, _)| lane.clone())
                .collect();
            shares.retain(|(_, share)| *share > 0);
            let rounds = shares.iter().map(|(lane, share)| {
                Box::pin(claim_lane(
                    inner,
                    q,
                    lane,
                    *share,
                    worker,
                    lease,
                    &queue_slots,
                ))
            });
            let results = futures::future::join_all(rounds).await;
            open = waiting;
            for ((lane, _), result) in shares.into_iter().zip(results) {
                let (mut c, mut e, more) = result?;
                room -= c.len();
                claimed.append(&mut c);
                events.append(&mut e);
                if more {
                    open.push(lane);
                }
            }
        }
    }
    if let Some((key, id)) = reservation {
        let taken: Vec<_> = claimed
            .iter()
            .map(|c| (c.lease.job_id.clone(), c.lease.token, c.lease.expires_at))
            .collect();
        flow::commit(inner, &key, id, &taken).await?;
    }
    if let Some(rate) = q.flow.rate {
        let unused = tokens.saturating_sub(claimed.len());
        flow::give_back(inner, &flow::queue_rate(queue), rate, unused).await?;
    }
    Ok((claimed, events))
}

/// Claim up to `share` jobs from one lane of a queue, within its tenant's limits. Returns the
/// claims, their events, and whether the lane filled its share (and may hold more).
async fn claim_lane(
    inner: &Inner,
    q: &QueueClaim,
    lane: &Lane,
    share: usize,
    worker: &str,
    lease: Duration,
    queue_slots: &[String],
) -> Result<(Vec<Claimed>, Vec<Wire>, bool), QueueError> {
    let queue = q.queue.as_str();
    let mut need = share;
    let mut slots = queue_slots.to_vec();
    let mut reservation = None;
    let mut rate = None;
    if let Some(token) = &lane.tenant {
        if let Some(limit) = q.flow.tenant_concurrency {
            let key = flow::tenant_slots(queue, token);
            let (granted, id) = flow::reserve(inner, &key, limit, need).await?;
            need = granted;
            if granted > 0 {
                slots.push(key.clone());
                reservation = Some((key, id));
            }
        }
        if let (Some(r), true) = (q.flow.tenant_rate, need > 0) {
            let key = flow::tenant_rate(queue, token);
            need = flow::take(inner, &key, r, need).await?;
            rate = Some((key, r, need));
        }
    }
    let limited = need < share;
    let mut claimed = Vec::new();
    let mut events = Vec::new();
    let mut drained = false;
    // Messages that turn out not to be claimable (not due yet, finished, group busy) do not
    // count: fetch again, a few times, while the lane has messages.
    for _ in 0..4 {
        if need == 0 {
            break;
        }
        let consumer = inner.consumer(queue, lane).await?;
        // Sending the pull request goes through the client, which can wait while the
        // connection is down: bounded like a request.
        let fetched = tokio::time::timeout(
            REQUEST_TIMEOUT,
            consumer.fetch().max_messages(need).messages(),
        )
        .await
        .map_err(|_| store("fetching jobs", "the pull request timed out"))?;
        let mut batch = match fetched {
            Ok(batch) => batch,
            Err(e) if lane.tenant.is_some() => {
                // An idle tenant lane's consumer the server deleted: made again next time.
                tracing::debug!(queue, error = %e, "fetching from a tenant lane");
                inner.forget_consumer(queue, lane).await;
                drained = true;
                break;
            }
            Err(e) => return Err(store("fetching jobs", e)),
        };
        let messages = collect(&mut batch, queue).await?;
        let asked = need;
        if messages.is_empty() {
            drained = true;
            break;
        }
        let fetched = messages.len();
        let taken = futures::future::join_all(
            messages
                .into_iter()
                // Boxed: a claim's state is large, and moving it costs more than the
                // allocation.
                .map(|m| Box::pin(take(inner, queue, m, worker, lease, &slots, q.max_attempts))),
        )
        .await;
        for t in taken {
            if let Some((c, mut e)) = t? {
                claimed.push(c);
                events.append(&mut e);
                need -= 1;
            }
        }
        if fetched < asked {
            drained = true;
            break;
        }
    }
    if let Some((key, id)) = reservation {
        let taken: Vec<_> = claimed
            .iter()
            .map(|c: &Claimed| (c.lease.job_id.clone(), c.lease.token, c.lease.expires_at))
            .collect();
        flow::commit(inner, &key, id, &taken).await?;
    }
    if let Some((key, r, tokens)) = rate {
        flow::give_back(inner, &key, r, tokens.saturating_sub(claimed.len())).await?;
    }
    let more = !drained && !limited && claimed.len() == share;
    Ok((claimed, events, more))
}

/// The messages a fetch delivers, until the server says there are no more.
///
/// A fetch asks for what is there now (`no_wait`) and the server answers at once, but its
/// answer can be lost: a server killed or a connection dropped after the pull request left
/// leaves the client's batch waiting without end, and async-nats bounds a batch only when it
/// has an `expires`. So each message is waited for at most [`REQUEST_TIMEOUT`]; on a silence
/// the messages that came are claimed and the rest, delivered to an inbox no longer read, are
/// redelivered after their ack wait, as any unanswered delivery is.
async fn collect(batch: &mut Batch, queue: &str) -> Result<Vec<Message>, QueueError> {
    let mut messages = Vec::new();
    loop {
        match tokio::time::timeout(REQUEST_TIMEOUT, batch.next()).await {
            Ok(Some(m)) => messages.push(m.map_err(|e| store("fetching jobs", e))?),
            Ok(None) => return Ok(messages),
            Err(_) => {
                tracing::warn!(
                    queue,
                    received = messages.len(),
                    "a fetch got no answer in {REQUEST_TIMEOUT:?}; claiming what came"
                );
                return Ok(messages);
            }
        }
    }
}

/// Wait for a message on any of `queues`' subjects (a core NATS subscription sees every
/// publish to a stream's subjects too), or `timeout`. Retries and delays coming due are not
/// publishes: the caller's timeout (its poll interval) finds those.
pub async fn wait(inner: &Inner, queues: &[String], timeout: Duration) {
    let mut subscriptions = Vec::with_capacity(queues.len() * 2);
    for queue in queues {
        // The normal band's own subject, and everything under the queue (bands, tenant lanes).
        for subject in [
            inner.names.job_subject(queue, Band::Normal),
            inner.names.queue_lanes(queue),
        ] {
            match inner.client.subscribe(subject).await {
                Ok(s) => subscriptions.push(s),
                Err(_) => {
                    // Disconnected: wait out the timeout instead.
                    tokio::time::sleep(timeout).await;
                    return;
                }
            }
        }
    }
    let mut any = futures::stream::select_all(subscriptions);
    if let Ok(Some(message)) = tokio::time::timeout(timeout, any.next()).await
        && let Some((queue, lane)) = inner.names.lane_of(&message.subject)
        && lane.tenant.is_some()
    {
        // A tenant lane the last listing may not have: list again.
        flow::lanes_changed(inner, &queue);
    }
}

/// How long a job whose group is busy waits before it is looked at again, times the number of
/// times its message was delivered (up to 20).
const GROUP_WAIT: Duration = Duration::from_millis(250);

/// Put a claim just made back to ready (with a `released` event saying why), freeing what it
/// held; its message is the caller's to answer.
async fn give_back(
    inner: &Inner,
    id: &JobId,
    known: (Record, u64),
    why: &str,
) -> Result<(), QueueError> {
    let token = known.0.token;
    let now = now();
    let released = inner
        .update(id, Some(known), |r| {
            let held = r.leased_with(token)?.clone();
            r.state = JobState::Ready;
            r.run_at = now;
            r.updated_at = now;
            r.lease = None;
            let slots = std::mem::take(&mut r.slots);
            let attempt = r.attempts + 1;
            let event = r.note(
                id,
                now,
                NewEvent {
                    attempt: Some(attempt),
                    worker: Some(held.worker),
                    message: Some(why.to_owned()),
                    ..NewEvent::new(EventKind::Released)
                },
            );
            Some((slots, event))
        })
        .await?;
    if let Some(((slots, event), r, _)) = released {
        flow::let_go(inner, &r.queue, id, token, &slots, None).await?;
        inner.publish_events(vec![event]).await?;
    }
    Ok(())
}

/// What became of one fetched message.
enum Verdict {
    /// Claimed.
    Take,
    /// Finished (or gone): drop the message.
    Drop,
    /// Not claimable until then: deliver it again after this long.
    Later(Duration),
}

/// Claim the job behind one fetched message, or answer the message with why not.
async fn take(
    inner: &Inner,
    queue: &str,
    message: Message,
    worker: &str,
    lease: Duration,
    slots: &[String],
    max_attempts: Option<u32>,
) -> Result<Option<(Claimed, Vec<Wire>)>, QueueError> {
    let reply = message
        .reply
        .as_ref()
        .map(ToString::to_string)
        .ok_or_else(|| store("fetching jobs", "a message came without an ack subject"))?;
    let info = message.info().map_err(|e| store("fetching jobs", e))?;
    let (seq, published) = (info.stream_sequence, record::millis(info.published));
    let wake = message
        .headers
        .as_ref()
        .and_then(|h| h.get(WAKE))
        .map(|v| JobId(v.as_str().to_owned()));
    let id = wake.clone().unwrap_or_else(|| JobId(seq.to_string()));
    let mut events = Vec::new();

    // A job message delivered for the first time has no record yet (enqueueing publishes the
    // message alone): build it from the message and create it with the claim's
    // compare-and-set, no read first. Should a record exist after all (a cancel came first),
    // that write fails and `update` reads the record and decides again.
    let first = info.delivered == 1 && wake.is_none();
    let found = if first { None } else { inner.get(&id).await? };
    let known = match found {
        Some(found) => found,
        None if wake.is_some() => {
            // A wake for a job since purged.
            Box::pin(inner.answer(&reply, Answer::Ack)).await?;
            return Ok(None);
        }
        None => {
            // The first sight of a job: its producer published the message, and no record
            // exists yet.
            let spool_client = message
                .headers
                .as_ref()
                .is_some_and(|h| h.get(record::ENQUEUED_AT).is_some());
            match record::parse(queue, message.headers.as_ref(), &message.payload, published) {
                Ok((job, enqueued_at)) => {
                    let mut fresh = Record::new(&job, enqueued_at);
                    let run_at = fresh.run_at;
                    let enqueued = fresh.note(
                        &id,
                        enqueued_at,
                        NewEvent {
                            message: (!spool_client)
                                .then(|| format!("published on {}", message.subject)),
                            duration_ms: (run_at > enqueued_at)
                                .then(|| u64::try_from(run_at - enqueued_at).unwrap_or(0)),
                            ..NewEvent::new(EventKind::Enqueued)
                        },
                    );
                    // Spool's own client logs the event itself; a plain publish has no one
                    // else to.
                    if !spool_client {
                        events.push(enqueued);
                    }
                    (fresh, 0)
                }
                Err(why) => {
                    return Box::pin(poison(inner, queue, &id, &message, published, &reply, why))
                        .await;
                }
            }
        }
    };

    // Finish what a crashed writer left undone before anything else (see `children::heal`).
    let known = if known.1 != 0 && (!known.0.spawn.is_empty() || known.0.state == JobState::Waiting)
    {
        let (fresh, mut healed) = Box::pin(children::heal(inner, &id, known)).await?;
        events.append(&mut healed);
        match fresh {
            Some(fresh) => fresh,
            None => {
                Box::pin(inner.publish_events(events)).await?;
                Box::pin(inner.answer(&reply, Answer::Ack)).await?;
                return Ok(None);
            }
        }
    } else {
        known
    };

    // A job of a group waits while another job of its group runs.
    let group = known.0.group.as_deref().map(|g| flow::group_key(queue, g));
    let mut group_revision = 0;
    if let Some(key) = &group
        && !known.0.is_finished()
    {
        match Box::pin(flow::group(inner, key)).await? {
            flow::Group::Held(holder) if holder != id => {
                if known.1 == 0 {
                    // Seen for the first time: its record still goes in, so it can be found.
                    Box::pin(inner.cas(&id, &known.0, 0)).await?;
                }
                let turns = u32::try_from(info.delivered).unwrap_or(u32::MAX).min(20);
                Box::pin(inner.publish_events(events)).await?;
                Box::pin(inner.answer(&reply, Answer::Nak(GROUP_WAIT * turns))).await?;
                return Ok(None);
            }
            flow::Group::Held(_) => {}
            flow::Group::Free(revision) => group_revision = revision,
        }
    }

    let now = now();
    // A job seen for the first time that is not claimable yet still gets its record, so it
    // can be found.
    let first_sight = (known.1 == 0).then(|| known.0.clone());
    let mut verdict = Verdict::Drop;
    let mut orphan = None;
    // An ended child whose message comes back may not have told its parent yet.
    let mut ended = None;
    let taken = inner
        .update(&id, Some(known), |r| {
            verdict = match r.state {
                s if s.is_finished() => {
                    ended = r.parent.is_some().then(|| r.clone());
                    Verdict::Drop
                }
                JobState::Running => match &r.lease {
                    Some(held) if held.expires_at > now => {
                        Verdict::Later(until(held.expires_at, now) + SWEEP_WAIT)
                    }
                    lapsed => {
                        // A claimer that died between writing the lease and publishing its
                        // lease table left a lease no table names: adopt it into this
                        // connection's table, so a sweep returns the job.
                        orphan = Some(Lease {
                            job_id: id.clone(),
                            token: r.token,
                            worker: lapsed
                                .as_ref()
                                .map(|h| h.worker.clone())
                                .unwrap_or_default(),
                            expires_at: lapsed.as_ref().map_or(now, |h| h.expires_at),
                        });
                        Verdict::Later(SWEEP_WAIT)
                    }
                },
                // Woken by its last child's end, which sends a message of its own.
                JobState::Waiting => Verdict::Drop,
                _ if r.run_at > now => Verdict::Later(until(r.run_at, now)),
                _ => Verdict::Take,
            };
            match verdict {
                Verdict::Take => {
                    r.state = JobState::Running;
                    r.token += 1;
                    r.started += 1;
                    r.updated_at = now;
                    r.lease = Some(Held {
                        worker: worker.to_owned(),
                        since: now,
                        expires_at: now + ms(lease),
                        reply: reply.clone(),
                    });
                    r.slots = slots.to_vec();
                    // Settled at the first claim, for good (see `QueueClaim::max_attempts`).
                    r.max_attempts = r.max_attempts.or(max_attempts);
                    let attempt = r.attempts + 1;
                    Some(r.note(
                        &id,
                        now,
                        NewEvent {
                            attempt: Some(attempt),
                            worker: Some(worker.to_owned()),
                            ..NewEvent::new(EventKind::Started)
                        },
                    ))
                }
                _ => None,
            }
        })
        .await?;
    let Some((started, r, revision)) = taken else {
        match verdict {
            Verdict::Drop => {
                if let Some(child) = ended {
                    events.append(&mut Box::pin(children::ended(inner, &id, &child)).await?);
                }
                Box::pin(inner.publish_events(events)).await?;
                Box::pin(inner.answer(&reply, Answer::Ack)).await?;
            }
            Verdict::Later(after) => {
                if let Some(first) = first_sight {
                    Box::pin(inner.cas(&id, &first, 0)).await?;
                }
                if let Some(orphan) = orphan {
                    inner.table_hold([&orphan]);
                    Box::pin(inner.publish_table()).await?;
                }
                Box::pin(inner.publish_events(events)).await?;
                Box::pin(inner.answer(&reply, Answer::Nak(after))).await?;
            }
            Verdict::Take => {}
        }
        return Ok(None);
    };
    // The claim just wrote the lease.
    let Some(held) = r.lease.clone() else {
        return Err(store("claiming", "a claimed record has no lease"));
    };
    if let Some(key) = &group
        && !Box::pin(flow::hold_group(inner, key, group_revision, &id, r.token)).await?
    {
        // Another claimer took the group in between: give the job back for later.
        Box::pin(give_back(inner, &id, (r, revision), "its group is busy")).await?;
        Box::pin(inner.answer(&held.reply, Answer::Nak(GROUP_WAIT))).await?;
        events.push(started);
        Box::pin(inner.publish_events(events)).await?;
        return Ok(None);
    }
    let claimed = Claimed {
        lease: Lease {
            job_id: id.clone(),
            token: r.token,
            worker: held.worker,
            expires_at: held.expires_at,
        },
        queue: r.queue.clone(),
        payload: r.payload.clone(),
        attempt: r.attempts + 1,
        max_attempts: r.max_attempts,
        started: r.started,
        checkpoint: r.checkpoint.clone(),
        tenant: r.tenant.clone(),
        metadata: r.metadata.clone(),
        enqueued_at: r.enqueued_at,
        parent: r.parent.clone(),
        steps: r.steps.iter().cloned().map(StepRecord::from).collect(),
        children: Box::pin(children::outcomes(inner, &id, &r)).await?,
        traceparent: r.traceparent,
    };
    events.push(started);
    inner.hold(&id, Some((r, revision)));
    Ok(Some((claimed, events)))
}

/// A message no job can be made of (a header that does not parse): straight to the
/// dead-letter queue with phase `decode`, so it is kept and can be found.
async fn poison(
    inner: &Inner,
    queue: &str,
    id: &JobId,
    message: &Message,
    published: Timestamp,
    reply: &str,
    why: String,
) -> Result<Option<(Claimed, Vec<Wire>)>, QueueError> {
    let now = now();
    let mut r = Record::new(
        &crate::queue::NewJob {
            queue: queue.to_owned(),
            payload: message.payload.to_vec(),
            ..crate::queue::NewJob::default()
        },
        published,
    );
    r.state = JobState::Dead;
    r.updated_at = now;
    r.attempts = 1;
    r.last_error = Some(why.clone());
    r.last_phase = Some(Phase::Decode);
    let dead = r.note(
        id,
        now,
        NewEvent {
            phase: Some(Phase::Decode),
            message: Some(why),
            ..NewEvent::new(EventKind::DeadLettered)
        },
    );
    inner.cas(id, &r, 0).await?;
    inner.publish_events(vec![dead]).await?;
    super::settle::dead_letter(inner, id, &r).await?;
    inner.answer(reply, Answer::Term).await?;
    Ok(None)
}

pub async fn renew(
    inner: &Inner,
    leases: &[Lease],
    lease: Duration,
) -> Result<Vec<bool>, QueueError> {
    let renewals = leases.iter().map(|l| async move {
        let now = now();
        let expires_at = now + ms(lease);
        let known = inner.held(&l.job_id, l.token);
        let renewed = inner
            .update(&l.job_id, known, |r| {
                let held = r.lease.as_mut()?;
                (r.state == JobState::Running && r.token == l.token).then(|| {
                    held.expires_at = expires_at;
                    held.reply.clone()
                })
            })
            .await?;
        match renewed {
            None => {
                inner.table_drop(&l.job_id, l.token);
                Ok::<_, QueueError>(None)
            }
            Some((reply, r, revision)) => {
                let slots = r.slots.clone();
                inner.hold(&l.job_id, Some((r, revision)));
                inner.answer(&reply, Answer::Progress).await?;
                Ok(Some((
                    Lease {
                        expires_at,
                        ..l.clone()
                    },
                    slots,
                )))
            }
        }
    });
    let results = futures::future::join_all(renewals).await;
    let mut kept = Vec::with_capacity(results.len());
    let mut renewed = Vec::new();
    // The renewed claims' concurrency slots last as long as their leases now.
    let mut slots: std::collections::BTreeMap<String, Vec<(JobId, i64, Timestamp)>> =
        std::collections::BTreeMap::new();
    for r in results {
        let r = r?;
        kept.push(r.is_some());
        if let Some((lease, keys)) = r {
            for key in keys {
                slots.entry(key).or_default().push((
                    lease.job_id.clone(),
                    lease.token,
                    lease.expires_at,
                ));
            }
            renewed.push(lease);
        }
    }
    for (key, claims) in &slots {
        flow::refresh(inner, key, claims).await?;
    }
    inner.table_hold(renewed.iter());
    inner.publish_table().await?;
    Ok(kept)
}

pub async fn release(inner: &Inner, leases: &[Lease]) -> Result<u64, QueueError> {
    let releases = leases.iter().map(|l| async move {
        let known = inner.held(&l.job_id, l.token);
        let now = now();
        let released = inner
            .update(&l.job_id, known, |r| {
                let held = r.leased_with(l.token)?.clone();
                r.state = JobState::Ready;
                r.run_at = now;
                r.updated_at = now;
                r.lease = None;
                let slots = std::mem::take(&mut r.slots);
                let attempt = r.attempts + 1;
                let event = r.note(
                    &l.job_id,
                    now,
                    NewEvent {
                        attempt: Some(attempt),
                        worker: Some(held.worker.clone()),
                        ..NewEvent::new(EventKind::Released)
                    },
                );
                Some((held, event, slots))
            })
            .await?;
        inner.hold(&l.job_id, None);
        let Some(((held, event, slots), r, _)) = released else {
            return Ok::<_, QueueError>(None);
        };
        inner.table_drop(&l.job_id, l.token);
        flow::let_go(
            inner,
            &r.queue,
            &l.job_id,
            l.token,
            &slots,
            r.group.as_deref(),
        )
        .await?;
        inner
            .answer(&held.reply, Answer::Nak(Duration::ZERO))
            .await?;
        Ok(Some(event))
    });
    let mut events = Vec::new();
    for r in futures::future::join_all(releases).await {
        events.extend(r?);
    }
    let n = events.len() as u64;
    inner.publish_events(events).await?;
    Ok(n)
}

pub async fn expire(inner: &Inner, default_max_attempts: u32) -> Result<Vec<JobId>, QueueError> {
    let now = now();
    let tables = inner
        .scan(&inner.s.leases, inner.names.leases_all(), None, None)
        .await?;
    let mut lapsed = std::collections::BTreeSet::new();
    // Tables with no live entry: a stopped connection's, or an idle one's. Purged once read
    // (only up to the version read: a newer one stays).
    let mut spent = Vec::new();
    // This connection's own table is read from memory: what it last published may be behind.
    lapsed.extend(
        inner
            .table()
            .into_iter()
            .filter(|e| e.expires_at <= now)
            .map(|e| (e.job, e.token)),
    );
    for m in tables {
        if inner.is_own_table(&m.subject) {
            continue;
        }
        // A table that does not parse (another version's) holds nothing this sweeper can use.
        let entries: Vec<TableEntry> = serde_json::from_slice(&m.payload).unwrap_or_default();
        if entries.iter().all(|e| e.expires_at <= now) {
            spent.push((m.subject, m.seq));
        }
        lapsed.extend(
            entries
                .into_iter()
                .filter(|e| e.expires_at <= now)
                .map(|e| (e.job, e.token)),
        );
    }
    let expiries = lapsed.into_iter().map(|(id, token)| async move {
        let expired = inner
            .update(&id, None, |r| {
                let held = r.leased_with(token)?.clone();
                if held.expires_at > now {
                    // Renewed since the index entry was read.
                    return None;
                }
                let attempt = r.attempts + 1;
                let dead = attempt >= r.max_attempts.unwrap_or(default_max_attempts);
                let error = format!("lease expired: worker {} stopped renewing it", held.worker);
                r.attempts = attempt;
                r.state = if dead {
                    JobState::Dead
                } else {
                    JobState::Ready
                };
                r.run_at = if dead { r.run_at } else { now };
                r.updated_at = now;
                r.lease = None;
                r.last_error = Some(error.clone());
                r.last_phase = Some(Phase::LeaseExpired);
                r.history.push(AttemptRecord {
                    attempt,
                    worker: held.worker.clone(),
                    started_at: held.since,
                    finished_at: now,
                    outcome: "lease-expired".into(),
                    phase: Some(Phase::LeaseExpired),
                    error: Some(error.clone()),
                    digest: None,
                    logs: Vec::new(),
                    http: Default::default(),
                });
                let fill = |kind| NewEvent {
                    attempt: Some(attempt),
                    phase: Some(Phase::LeaseExpired),
                    message: Some(error.clone()),
                    worker: Some(held.worker.clone()),
                    duration_ms: Some(u64::try_from(now - held.since).unwrap_or(0)),
                    ..NewEvent::new(kind)
                };
                let mut events = vec![r.note(&id, now, fill(EventKind::LeaseExpired))];
                if dead {
                    events.push(r.note(&id, now, fill(EventKind::DeadLettered)));
                }
                let slots = std::mem::take(&mut r.slots);
                Some((held, dead, events, slots))
            })
            .await?;
        let Some(((held, dead, mut events, slots), r, _)) = expired else {
            // Settled, released or renewed since the table was published.
            return Ok::<_, QueueError>(None);
        };
        inner.hold(&id, None);
        inner.table_drop(&id, token);
        flow::let_go(inner, &r.queue, &id, token, &slots, r.group.as_deref()).await?;
        if dead {
            super::settle::dead_letter(inner, &id, &r).await?;
            // Before the term: until then the message would come back and tell the parent.
            events.append(&mut children::ended(inner, &id, &r).await?);
            inner.answer(&held.reply, Answer::Term).await?;
        } else {
            inner
                .answer(&held.reply, Answer::Nak(Duration::ZERO))
                .await?;
        }
        Ok(Some((id, events)))
    });
    let mut returned = Vec::new();
    let mut events = Vec::new();
    for r in futures::future::join_all(expiries).await {
        if let Some((id, mut e)) = r? {
            returned.push(id);
            events.append(&mut e);
        }
    }
    inner.publish_events(events).await?;
    for (subject, seq) in spent {
        inner.purge_through(&inner.s.leases, subject, seq).await?;
    }
    Ok(returned)
}
