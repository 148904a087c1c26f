//! Durable steps and flows: fenced saves, children committed with their parent's settle, and
//! parents that wait for their children.

use spool::queue::{
    AttemptSave, Backend, Claimed, EventKind, JobFilter, JobId, JobState, LeaseLost, NewChild,
    Next, OnChildFailure, Phase, Save, Settle, now,
};

use super::*;

fn save(claimed: &Claimed, what: Save) -> AttemptSave {
    AttemptSave {
        lease: claimed.lease.clone(),
        attempt: claimed.attempt,
        not_after: None,
        save: what,
    }
}

fn step(name: &str, output: &[u8]) -> Save {
    Save::Step {
        name: name.into(),
        output: output.to_vec(),
    }
}

pub(super) async fn child<B: Backend>(
    b: &B,
    parent: &Claimed,
    index: u32,
    queue: &str,
    on_failure: OnChildFailure,
) -> NewChild {
    NewChild {
        id: b.child_id(&parent.lease, index).await.unwrap(),
        job: job(queue, format!("child {index}").as_bytes()),
        on_failure,
    }
}

pub(super) fn wait(claimed: &Claimed, children: Vec<NewChild>) -> Settle {
    Settle {
        next: Next::Wait,
        attempt: record(claimed, "wait-for-children", None, None),
        children,
        ..succeeded(claimed, b"")
    }
}

async fn children_of<B: Backend>(b: &B, parent: &JobId) -> Vec<JobId> {
    let filter = JobFilter {
        parent: Some(parent.clone()),
        ..JobFilter::default()
    };
    let mut ids: Vec<JobId> = b
        .jobs(&filter)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    ids.sort();
    ids
}

pub async fn steps_and_checkpoints_are_saved_at_once_and_handed_to_the_next_attempt<B: Backend>(
    b: B,
) {
    let id = enqueue_one(&b, job("q", b"p")).await;
    let first = claim_one(&b, "q").await;
    assert!(first.steps.is_empty());
    assert_eq!(
        b.save(save(&first, step("one", b"1"))).await.unwrap(),
        Ok(())
    );
    assert_eq!(
        b.save(save(&first, step("two", b"2"))).await.unwrap(),
        Ok(())
    );
    assert_eq!(
        b.save(save(&first, Save::Checkpoint(b"after two".to_vec())))
            .await
            .unwrap(),
        Ok(())
    );
    // Stored before the attempt settles: a crash now would lose none of it.
    let stored = detail(&b, &id).await;
    let names: Vec<&str> = stored.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["one", "two"]);
    assert_eq!(stored.steps[1].output, b"2");
    assert_eq!(stored.steps[1].attempt, 1);
    assert_eq!(stored.checkpoint.as_deref(), Some(&b"after two"[..]));

    settle_ok(&b, retry(&first, now(), "crashed after two")).await;
    let second = claim_one(&b, "q").await;
    assert_eq!(second.attempt, 2);
    let names: Vec<&str> = second.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["one", "two"]);
    assert_eq!(second.checkpoint.as_deref(), Some(&b"after two"[..]));
    // Storing a name again replaces its output in place.
    assert_eq!(
        b.save(save(&second, step("one", b"1b"))).await.unwrap(),
        Ok(())
    );
    let stored = detail(&b, &id).await;
    let outputs: Vec<&[u8]> = stored.steps.iter().map(|s| s.output.as_slice()).collect();
    assert_eq!(outputs, [&b"1b"[..], b"2"]);

    let events = timeline(&b, &id).await;
    assert_eq!(
        events
            .iter()
            .filter(|k| **k == EventKind::StepCompleted)
            .count(),
        3
    );
    assert!(events.contains(&EventKind::Checkpointed));
}

pub async fn a_stale_attempt_can_neither_save_nor_enqueue_nor_settle<B: Backend>(b: B) {
    let id = enqueue_one(&b, job("q", b"p")).await;
    let stale = claim(&b, "q", 1, SHORT_LEASE).await.remove(0);
    assert_eq!(
        b.save(save(&stale, Save::Checkpoint(b"before".to_vec())))
            .await
            .unwrap(),
        Ok(())
    );
    tokio::time::sleep(PAST_SHORT_LEASE).await;
    assert_eq!(b.expire_leases(3).await.unwrap(), vec![id.clone()]);
    let fresh = claim_one(&b, "q").await;

    let lost = Err(LeaseLost {
        job_id: id.clone(),
        token: stale.lease.token,
    });
    assert_eq!(
        b.save(save(&stale, Save::Checkpoint(b"late".to_vec())))
            .await
            .unwrap(),
        lost
    );
    assert_eq!(
        b.save(save(&stale, step("one", b"late"))).await.unwrap(),
        lost
    );
    let orphan = child(&b, &stale, 0, "children", OnChildFailure::FailParent).await;
    let orphan_id = orphan.id.clone();
    let mut late = wait(&stale, vec![orphan]);
    late.next = Next::Succeeded {
        output: b"late".to_vec(),
    };
    assert_eq!(b.settle(vec![late]).await.unwrap(), vec![lost]);

    let stored = detail(&b, &id).await;
    assert_eq!(stored.checkpoint.as_deref(), Some(&b"before"[..]));
    assert!(stored.steps.is_empty());
    assert!(stored.children.is_empty());
    assert_eq!(stored.summary.state, JobState::Running);
    assert!(b.job(&orphan_id).await.unwrap().is_none());
    assert!(children_of(&b, &id).await.is_empty());
    assert!(claim(&b, "children", 10, LEASE).await.is_empty());
    // The live attempt still writes.
    assert_eq!(
        b.save(save(&fresh, Save::Checkpoint(b"fresh".to_vec())))
            .await
            .unwrap(),
        Ok(())
    );
}

pub async fn a_save_after_the_attempts_deadline_is_refused<B: Backend>(b: B) {
    let id = enqueue_one(&b, job("q", b"p")).await;
    let claimed = claim_one(&b, "q").await;
    let mut late = save(&claimed, Save::Checkpoint(b"late".to_vec()));
    late.not_after = Some(now() - 1);
    assert_eq!(
        b.save(late).await.unwrap(),
        Err(LeaseLost {
            job_id: id.clone(),
            token: claimed.lease.token,
        })
    );
    let mut in_time = save(&claimed, Save::Checkpoint(b"in time".to_vec()));
    in_time.not_after = Some(now() + 60_000);
    assert_eq!(b.save(in_time).await.unwrap(), Ok(()));
    assert_eq!(
        detail(&b, &id).await.checkpoint.as_deref(),
        Some(&b"in time"[..])
    );
}

pub async fn a_parent_waits_for_its_children_and_runs_again_with_their_outcomes<B: Backend>(b: B) {
    let parent = enqueue_one(&b, job("parents", b"sum")).await;
    let first = claim_one(&b, "parents").await;
    let kids = vec![
        child(&b, &first, 0, "children", OnChildFailure::FailParent).await,
        child(&b, &first, 1, "children", OnChildFailure::FailParent).await,
    ];
    let mut ids: Vec<JobId> = kids.iter().map(|c| c.id.clone()).collect();
    ids.sort();
    settle_ok(&b, wait(&first, kids)).await;
    assert_eq!(state(&b, &parent).await, JobState::Waiting);
    assert_eq!(children_of(&b, &parent).await, ids);
    let listed = detail(&b, &ids[0]).await;
    assert_eq!(listed.summary.parent.as_ref(), Some(&parent));
    // A waiting parent is not claimable, and spent no attempt.
    assert!(claim(&b, "parents", 10, LEASE).await.is_empty());
    assert_eq!(detail(&b, &parent).await.summary.attempts, 0);

    let mut running = claim(&b, "children", 10, LEASE).await;
    assert_eq!(running.len(), 2);
    running.sort_by(|x, y| x.lease.job_id.cmp(&y.lease.job_id));
    assert_eq!(running[0].parent.as_ref(), Some(&parent));
    settle_ok(&b, succeeded(&running[0], b"1")).await;
    assert_eq!(state(&b, &parent).await, JobState::Waiting);
    settle_ok(&b, succeeded(&running[1], b"4")).await;
    assert_eq!(state(&b, &parent).await, JobState::Ready);

    let again = claim_one(&b, "parents").await;
    assert_eq!(again.attempt, 1, "waiting spends no attempt");
    assert_eq!(again.children.len(), 2);
    let outputs: Vec<Option<&[u8]>> = again
        .children
        .iter()
        .map(|c| {
            assert_eq!(c.state, JobState::Succeeded);
            c.output.as_deref()
        })
        .collect();
    assert_eq!(outputs, [Some(&b"1"[..]), Some(&b"4"[..])]);
    settle_ok(&b, succeeded(&again, b"5")).await;
    let events = timeline(&b, &parent).await;
    assert!(events.contains(&EventKind::Waiting), "{events:?}");
    assert!(events.contains(&EventKind::ChildrenFinished), "{events:?}");
    assert_eq!(detail(&b, &parent).await.children.len(), 2);
}

pub async fn waiting_with_every_child_finished_is_ready_at_once<B: Backend>(b: B) {
    let parent = enqueue_one(&b, job("parents", b"p")).await;
    let first = claim_one(&b, "parents").await;
    settle_ok(&b, wait(&first, Vec::new())).await;
    assert_eq!(state(&b, &parent).await, JobState::Ready);
    let again = claim_one(&b, "parents").await;
    assert!(again.children.is_empty());
}

pub async fn a_dead_child_fails_its_parent_or_is_reported_as_asked<B: Backend>(b: B) {
    for (on_failure, parent_after) in [
        (OnChildFailure::FailParent, JobState::Dead),
        (OnChildFailure::Report, JobState::Ready),
    ] {
        let queue = format!("parents-{on_failure}");
        let kids = format!("children-{on_failure}");
        let parent = enqueue_one(&b, job(&queue, b"p")).await;
        let first = claim_one(&b, &queue).await;
        let doomed = child(&b, &first, 0, &kids, on_failure).await;
        settle_ok(&b, wait(&first, vec![doomed])).await;
        let running = claim_one(&b, &kids).await;
        settle_ok(&b, dead(&running, Phase::Run, "boom")).await;
        assert_eq!(state(&b, &parent).await, parent_after, "{on_failure}");
        let stored = detail(&b, &parent).await;
        assert_eq!(stored.children.len(), 1);
        assert_eq!(stored.children[0].state, JobState::Dead);
        assert_eq!(stored.children[0].on_failure, on_failure);
        if parent_after == JobState::Dead {
            assert_eq!(stored.summary.last_phase, Some(Phase::ChildFailed));
            assert!(
                stored
                    .summary
                    .last_error
                    .as_deref()
                    .unwrap_or("")
                    .contains("boom"),
                "{:?}",
                stored.summary.last_error
            );
        } else {
            let again = claim_one(&b, &queue).await;
            assert_eq!(again.children[0].state, JobState::Dead);
            assert_eq!(again.children[0].error.as_deref(), Some("boom"));
        }
    }
}
