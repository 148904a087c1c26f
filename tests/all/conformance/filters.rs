//! Listing filters: jobs by tenant and enqueue time, pages through a cursor; events by queue
//! and time, and the newest ones.

use super::*;
use spool::queue::Event;

pub async fn jobs_filter_by_tenant_and_since_and_page_with_a_cursor<B: Backend>(b: B) {
    let tenant_job = |tenant: Option<&str>| NewJob {
        tenant: tenant.map(str::to_owned),
        ..job("q", b"x")
    };
    let mut ids = Vec::new();
    for tenant in [Some("acme"), Some("globex"), Some("acme")] {
        ids.push(enqueue_one(&b, tenant_job(tenant)).await);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mark = now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for tenant in [None, Some("acme")] {
        ids.push(enqueue_one(&b, tenant_job(tenant)).await);
    }
    let listed = |filter: JobFilter| {
        let b = &b;
        async move {
            b.jobs(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.id)
                .collect::<Vec<_>>()
        }
    };
    let acme = JobFilter {
        tenant: Some("acme".into()),
        ..JobFilter::default()
    };
    assert_eq!(
        listed(acme.clone()).await,
        [ids[4].clone(), ids[2].clone(), ids[0].clone()]
    );
    let since = JobFilter {
        since: Some(mark),
        ..JobFilter::default()
    };
    assert_eq!(listed(since).await, [ids[4].clone(), ids[3].clone()]);

    // Pages of two, each after the last id of the one before, cover the list once.
    let everything: Vec<JobId> = ids.iter().rev().cloned().collect();
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = listed(JobFilter {
            limit: Some(2),
            after: after.clone(),
            ..JobFilter::default()
        })
        .await;
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = page.last().cloned();
        paged.extend(page);
    }
    assert_eq!(paged, everything);
    // A cursor combines with the other filters.
    assert_eq!(
        listed(JobFilter {
            after: Some(ids[4].clone()),
            ..acme
        })
        .await,
        [ids[2].clone(), ids[0].clone()]
    );
}

pub async fn events_filter_by_queue_and_since_and_the_newest_come_last<B: Backend>(b: B) {
    let loaded = |queue: &str, i: usize| NewEvent {
        queue: Some(queue.into()),
        message: Some(format!("{queue} {i}")),
        ..NewEvent::new(EventKind::PluginLoaded)
    };
    for i in 0..3 {
        b.record(loaded("q1", i)).await.unwrap();
        b.record(loaded("q2", i)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mark = now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 3..5 {
        b.record(loaded("q1", i)).await.unwrap();
        b.record(loaded("q2", i)).await.unwrap();
    }
    let messages = |events: Vec<Event>| {
        assert!(events.windows(2).all(|w| w[0].seq < w[1].seq), "in order");
        events
            .into_iter()
            .map(|e| e.message.unwrap_or_default())
            .collect::<Vec<_>>()
    };
    let read = |filter: EventFilter| {
        let b = &b;
        async move { messages(b.events(&filter).await.unwrap()) }
    };
    assert_eq!(
        read(EventFilter {
            queue: Some("q1".into()),
            ..EventFilter::default()
        })
        .await,
        ["q1 0", "q1 1", "q1 2", "q1 3", "q1 4"]
    );
    assert_eq!(
        read(EventFilter {
            since: Some(mark),
            ..EventFilter::default()
        })
        .await,
        ["q1 3", "q2 3", "q1 4", "q2 4"]
    );
    assert_eq!(
        read(EventFilter {
            limit: Some(3),
            newest: true,
            ..EventFilter::default()
        })
        .await,
        ["q2 3", "q1 4", "q2 4"]
    );
    assert_eq!(
        read(EventFilter {
            queue: Some("q2".into()),
            limit: Some(2),
            newest: true,
            ..EventFilter::default()
        })
        .await,
        ["q2 3", "q2 4"]
    );
    assert_eq!(
        read(EventFilter {
            queue: Some("q2".into()),
            limit: Some(2),
            ..EventFilter::default()
        })
        .await,
        ["q2 0", "q2 1"]
    );
    assert_eq!(
        read(EventFilter {
            queue: Some("q1".into()),
            since: Some(mark),
            limit: Some(10),
            newest: true,
            ..EventFilter::default()
        })
        .await,
        ["q1 3", "q1 4"]
    );
    // A job's timeline takes the same filters.
    let id = enqueue_one(&b, job("q1", b"x")).await;
    b.cancel(&id, "enough").await.unwrap();
    let newest = b
        .events(&EventFilter {
            job: Some(id.clone()),
            limit: Some(1),
            newest: true,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].kind, EventKind::Cancelled);
    assert!(
        b.events(&EventFilter {
            job: Some(id),
            queue: Some("q2".into()),
            ..EventFilter::default()
        })
        .await
        .unwrap()
        .is_empty()
    );
}
