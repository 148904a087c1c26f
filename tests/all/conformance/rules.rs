//! The rules every backend applies before it stores a job: one queue-name rule, one payload
//! limit.

use super::*;
use spool::queue::check::{DEFAULT_MAX_PAYLOAD, MAX_QUEUE_NAME};

pub async fn queue_names_follow_one_rule_on_every_backend<B: Backend>(b: B) {
    let long = "q".repeat(MAX_QUEUE_NAME + 1);
    for bad in ["bad queue/name", "a.b", "a*", "a>", "é", "", long.as_str()] {
        let err = b
            .enqueue(vec![job("fine", b"1"), job(bad, b"2")])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, QueueError::BadRequest(why) if why.contains("bad queue name")),
            "{bad:?}: got {err:?}"
        );
    }
    assert!(b.jobs(&JobFilter::default()).await.unwrap().is_empty());

    let longest = "Q".repeat(MAX_QUEUE_NAME);
    for good in ["email-v2_EU", "0", longest.as_str()] {
        let id = enqueue_one(&b, job(good, b"x")).await;
        assert_eq!(detail(&b, &id).await.summary.queue, good);
    }
}

pub async fn a_payload_over_the_backends_limit_is_refused_and_one_at_it_is_kept<B: Backend>(b: B) {
    let limit = b.max_payload();
    assert!(limit > 0 && limit <= DEFAULT_MAX_PAYLOAD, "{limit}");

    let err = b
        .enqueue(vec![job("q", b"small"), job("q", &vec![b'x'; limit + 1])])
        .await
        .unwrap_err();
    match &err {
        QueueError::PayloadTooLarge {
            size, limit: said, ..
        } => {
            assert_eq!((*size, *said), (limit + 1, limit));
        }
        other => panic!("got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains(&format!("{limit} bytes")), "{message}");
    assert!(
        b.jobs(&JobFilter::default()).await.unwrap().is_empty(),
        "a refused batch enqueues nothing"
    );

    let payload: Vec<u8> = (0..limit).map(|i| (i % 251) as u8).collect();
    let id = enqueue_one(&b, job("q", &payload)).await;
    assert!(
        detail(&b, &id).await.payload == payload,
        "the payload is kept whole"
    );
}

pub async fn a_job_with_the_largest_payload_runs_and_dies_with_it_kept<B: Backend>(b: B) {
    let limit = b.max_payload();
    let payload: Vec<u8> = (0..limit).map(|i| (i % 253) as u8).collect();
    let id = enqueue_one(&b, job("q", &payload)).await;
    let claimed = claim_one(&b, "q").await;
    assert!(
        claimed.payload == payload,
        "the attempt gets the payload whole"
    );
    settle_ok(&b, dead(&claimed, Phase::Run, "refused")).await;
    let dead = b.dead(&DlqFilter::default()).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert!(
        detail(&b, &id).await.payload == payload,
        "the dead job keeps it"
    );
}
