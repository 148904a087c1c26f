//! What a parent hears of its children: a child that ends tells its parent, which is what
//! wakes or fails a waiting parent, and what a job sees of its children.
//!
//! Hearing a child that was already heard changes nothing, so a child's end may be told
//! again by whoever holds its message next (see the module docs: crash windows).

use futures::{StreamExt as _, TryStreamExt as _};

use super::names::{child_of, parent_of, staged_key};
use super::record::{Heard, Record, Wire};
use super::setup::store;
use super::spawn::{PARALLEL, spawn, wake};
use super::store::Inner;
use crate::queue::{
    ChildOutcome, EventKind, JobId, JobState, NewEvent, OnChildFailure, Phase, QueueError,
    Timestamp, now,
};

/// What hearing children did to a waiting parent.
enum Resolved {
    /// A child with `fail-parent` died: so did the parent.
    Died(String),
    /// Every child has ended: ready again.
    Woke,
}

/// Tell `parent` how children ended (or, replayed, that they have not). A waiting parent
/// dies of a child newly heard dead with `fail-parent`, and is ready once every child has
/// been heard to end: the wake message is published before the record says so (with `wake`;
/// without, the caller holds a message of the parent already). Returns the parent's record
/// as it now stands (`None`: gone) and the parent's events.
pub async fn tell(
    inner: &Inner,
    parent: &JobId,
    news: &[(JobId, Record)],
    wake: bool,
) -> Result<(Option<Record>, Vec<Wire>), QueueError> {
    let now = now();
    let mut woken = !wake;
    loop {
        let mut seen = None;
        let mut resolved = None;
        let mut to_wake = None;
        let told = inner
            .update(parent, None, |p| {
                seen = Some(p.clone());
                let mut changed = false;
                let mut died = None;
                for (id, child) in news {
                    let Some((_, index)) = parent_of(id) else {
                        continue;
                    };
                    let Some(slot) = index.checked_sub(1).and_then(|i| p.children.get_mut(i))
                    else {
                        continue;
                    };
                    let heard = Heard::of(child) as u8;
                    if *slot == heard {
                        continue;
                    }
                    *slot = heard;
                    changed = true;
                    if died.is_none()
                        && child.state == JobState::Dead
                        && child.on_failure.unwrap_or_default() == OnChildFailure::FailParent
                    {
                        died = Some(format!(
                            "child {id} died: {}",
                            child.last_error.as_deref().unwrap_or("no error recorded")
                        ));
                    }
                }
                let outcome = resolve(p, died, now);
                if matches!(outcome, Some(Resolved::Woke)) && !woken {
                    to_wake = Some(p.clone());
                    return None;
                }
                let write = changed || outcome.is_some();
                let events = match &outcome {
                    None => Vec::new(),
                    Some(Resolved::Woke) => {
                        vec![p.note(parent, now, NewEvent::new(EventKind::ChildrenFinished))]
                    }
                    Some(Resolved::Died(message)) => {
                        let fill = |kind| NewEvent {
                            phase: Some(Phase::ChildFailed),
                            message: Some(message.clone()),
                            ..NewEvent::new(kind)
                        };
                        vec![
                            p.note(parent, now, fill(EventKind::Failed)),
                            p.note(parent, now, fill(EventKind::DeadLettered)),
                        ]
                    }
                };
                resolved = outcome;
                write.then_some(events)
            })
            .await?;
        if let Some(p) = to_wake {
            // One wake per wait: the token is the one of the claim that waited.
            let dedupe = format!("{parent}.wake.{}", p.token);
            self::wake(inner, parent, &p, Some(dedupe)).await?;
            woken = true;
            continue;
        }
        let Some((events, p, _)) = told else {
            return Ok((seen, Vec::new()));
        };
        if let Some(Resolved::Died(_)) = resolved {
            super::settle::dead_letter(inner, parent, &p).await?;
        }
        return Ok((Some(p), events));
    }
}

/// Apply what a waiting parent's children tell: death of a `fail-parent` child, or readiness.
fn resolve(p: &mut Record, died: Option<String>, now: Timestamp) -> Option<Resolved> {
    if p.state != JobState::Waiting {
        return None;
    }
    p.updated_at = now;
    if let Some(message) = died {
        p.state = JobState::Dead;
        p.last_error = Some(message.clone());
        p.last_phase = Some(Phase::ChildFailed);
        return Some(Resolved::Died(message));
    }
    if p.has_unfinished_children() {
        return None;
    }
    p.state = JobState::Ready;
    p.run_at = now;
    Some(Resolved::Woke)
}

/// Job `id` has ended (`r`): tell its parent, and on up the tree while the parent has ended
/// too (it may have just died of this child, or a crash may have kept it from telling its
/// own parent). Returns the ancestors' events.
pub async fn ended(inner: &Inner, id: &JobId, r: &Record) -> Result<Vec<Wire>, QueueError> {
    let mut events = Vec::new();
    let (mut id, mut r) = (id.clone(), r.clone());
    while let Some(parent) = r.parent.clone() {
        let (after, mut told) = tell(inner, &parent, &[(id, r)], true).await?;
        events.append(&mut told);
        match after {
            Some(p) if p.is_finished() => (id, r) = (parent, p),
            _ => break,
        }
    }
    Ok(events)
}

/// Jobs that ended together (one settle group): each parent is told of all its children at
/// once, then on up the tree as [`ended`] does. Returns the ancestors' events.
pub async fn ended_together(
    inner: &Inner,
    jobs: Vec<(JobId, Record)>,
) -> Result<Vec<Wire>, QueueError> {
    let mut families: std::collections::BTreeMap<JobId, Vec<(JobId, Record)>> =
        std::collections::BTreeMap::new();
    for (id, r) in jobs {
        if let Some(parent) = r.parent.clone() {
            families.entry(parent).or_default().push((id, r));
        }
    }
    let told = futures::future::join_all(families.into_iter().map(|(parent, news)| async move {
        let (after, mut events) = tell(inner, &parent, &news, true).await?;
        if let Some(p) = after.filter(Record::is_finished) {
            events.append(&mut ended(inner, &parent, &p).await?);
        }
        Ok::<_, QueueError>(events)
    }))
    .await;
    let mut events = Vec::new();
    for t in told {
        events.append(&mut t?);
    }
    Ok(events)
}

/// Finish what a crashed writer left undone on a job whose message is in hand: create the
/// children its settle committed, and for a waiting job, hear its children from their records
/// (one that ended while no one could tell it). Returns the job's record as it now stands and
/// the events.
pub async fn heal(
    inner: &Inner,
    id: &JobId,
    known: (Record, u64),
) -> Result<(Option<(Record, u64)>, Vec<Wire>), QueueError> {
    let mut events = Vec::new();
    let mut moved = false;
    if !known.0.spawn.is_empty() {
        events.append(&mut spawn(inner, id, &known.0).await?);
        moved = true;
    }
    let current = if moved {
        inner.get(id).await?
    } else {
        Some(known)
    };
    let Some(current) = current else {
        return Ok((None, events));
    };
    if current.0.state != JobState::Waiting {
        return Ok((Some(current), events));
    }
    let unheard: Vec<JobId> = current
        .0
        .children
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == Heard::Nothing as u8)
        .map(|(i, _)| child_of(id, i + 1))
        .collect();
    let news: Vec<(JobId, Record)> = fetch(inner, &unheard)
        .await?
        .into_iter()
        .zip(unheard)
        .filter_map(|(r, child)| r.filter(Record::is_finished).map(|r| (child, r)))
        .collect();
    if news.is_empty() {
        return Ok((Some(current), events));
    }
    events.append(&mut tell(inner, id, &news, false).await?.1);
    Ok((inner.get(id).await?, events))
}

/// The records of `ids`, in order (`None` where there is none).
async fn fetch(inner: &Inner, ids: &[JobId]) -> Result<Vec<Option<Record>>, QueueError> {
    futures::stream::iter(0..ids.len())
        .map(|i| async move { Ok::<_, QueueError>(inner.get(&ids[i]).await?.map(|(r, _)| r)) })
        .buffered(PARALLEL)
        .try_collect()
        .await
}

/// A job's children with their records, in enqueue order; those not created yet are left out.
pub async fn records(
    inner: &Inner,
    id: &JobId,
    r: &Record,
) -> Result<Vec<(JobId, Record)>, QueueError> {
    let ids: Vec<JobId> = (1..=r.children.len()).map(|i| child_of(id, i)).collect();
    let found = fetch(inner, &ids).await?;
    Ok(ids
        .into_iter()
        .zip(found)
        .filter_map(|(child, found)| found.map(|found| (child, found)))
        .collect())
}

/// What a job sees of its children, in enqueue order: each child's record, or for one not
/// created yet its stage, or for one pruned since what the job heard of its end.
pub async fn outcomes(
    inner: &Inner,
    id: &JobId,
    r: &Record,
) -> Result<Vec<ChildOutcome>, QueueError> {
    if r.children.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<JobId> = (1..=r.children.len()).map(|i| child_of(id, i)).collect();
    let found = fetch(inner, &ids).await?;
    let mut out = Vec::with_capacity(ids.len());
    for (i, (child, found)) in ids.into_iter().zip(found).enumerate() {
        if let Some(c) = found {
            out.push(c.outcome(&child));
            continue;
        }
        let stage = r.spawn.iter().find(|s| s.covers(i + 1, s.token));
        let staged = match stage {
            Some(s) => inner
                .s
                .staging
                .get(staged_key(&child, s.token))
                .await
                .map_err(|e| store("reading a staged child", e))?
                .map(|bytes| Record::decode(&bytes))
                .transpose()?,
            None => None,
        };
        out.push(match staged {
            Some(c) => c.outcome(&child),
            None => ChildOutcome {
                id: child,
                queue: String::new(),
                state: Heard::from_byte(r.children[i])
                    .state()
                    .unwrap_or(JobState::Cancelled),
                output: None,
                error: Some("its record is gone (pruned)".into()),
                on_failure: OnChildFailure::default(),
            },
        });
    }
    Ok(out)
}
