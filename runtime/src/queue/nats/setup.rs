//! Creating Spool's streams, buckets and consumers on first use, and refusing existing ones
//! whose settings disagree.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, kv};

use super::names::{Lane, Names};
use super::{NatsOptions, Storage};
use crate::queue::QueueError;

/// A store error from anything displayable.
pub fn store(what: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::Store(format!("NATS: {what}: {e}"))
}

fn storage(options: &NatsOptions) -> StorageType {
    match options.storage {
        Storage::File => StorageType::File,
        Storage::Memory => StorageType::Memory,
    }
}

fn not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(je)
            if je.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// The streams the backend uses, created or checked.
pub struct Streams {
    pub jobs: stream::Stream,
    pub events: stream::Stream,
    pub dlq: stream::Stream,
    pub leases: stream::Stream,
    pub records: kv::Store,
    pub records_stream: stream::Stream,
    pub keys: kv::Store,
    pub staging: kv::Store,
    pub staging_stream: stream::Stream,
    pub flow: kv::Store,
    pub schedules: kv::Store,
    pub workers: kv::Store,
}

pub async fn streams(
    js: &jetstream::Context,
    names: &Names,
    options: &NatsOptions,
) -> Result<Streams, QueueError> {
    let base = stream::Config {
        storage: storage(options),
        num_replicas: options.replicas,
        allow_direct: true,
        ..stream::Config::default()
    };
    let jobs = ensure_stream(
        js,
        stream::Config {
            name: names.jobs_stream(),
            description: Some("Spool: every queue's job messages (work queue)".into()),
            subjects: vec![names.jobs_all()],
            retention: RetentionPolicy::WorkQueue,
            duplicate_window: options.duplicate_window,
            ..base.clone()
        },
    )
    .await?;
    let events = ensure_stream(
        js,
        stream::Config {
            name: names.events_stream(),
            description: Some("Spool: the event log, one subject per queue and job".into()),
            subjects: vec![names.events_all()],
            ..base.clone()
        },
    )
    .await?;
    let dlq = ensure_stream(
        js,
        stream::Config {
            name: names.dlq_stream(),
            description: Some("Spool: the dead-letter queue's envelopes".into()),
            subjects: vec![names.dlq_all()],
            ..base.clone()
        },
    )
    .await?;
    let leases = ensure_stream(
        js,
        stream::Config {
            name: names.leases_stream(),
            description: Some("Spool: running leases, for the lease sweeper".into()),
            subjects: vec![names.leases_all()],
            max_messages_per_subject: 1,
            ..base.clone()
        },
    )
    .await?;
    let forever = Duration::ZERO;
    let records = ensure_bucket(js, &names.records_bucket(), options, forever).await?;
    let records_stream = records.stream.clone();
    let keys = ensure_bucket(js, &names.keys_bucket(), options, forever).await?;
    let staging = ensure_bucket(js, &names.staging_bucket(), options, forever).await?;
    let staging_stream = staging.stream.clone();
    let flow = ensure_bucket(js, &names.flow_bucket(), options, forever).await?;
    let schedules = ensure_bucket(js, &names.schedules_bucket(), options, forever).await?;
    let workers = ensure_bucket(
        js,
        &names.workers_bucket(),
        options,
        crate::queue::MAX_WORKER_TTL,
    )
    .await?;
    Ok(Streams {
        jobs,
        events,
        dlq,
        leases,
        records,
        records_stream,
        keys,
        staging,
        staging_stream,
        flow,
        schedules,
        workers,
    })
}

/// The settings Spool relies on that an existing stream does not have, in words.
fn mismatches(want: &stream::Config, have: &stream::Config) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut check = |what: &str, ok: bool, want: String, have: String| {
        if !ok {
            wrong.push(format!("{what} is {have}, Spool needs {want}"));
        }
    };
    check(
        "subjects",
        want.subjects == have.subjects,
        format!("{:?}", want.subjects),
        format!("{:?}", have.subjects),
    );
    check(
        "retention",
        want.retention == have.retention,
        format!("{:?}", want.retention),
        format!("{:?}", have.retention),
    );
    check(
        "storage",
        want.storage == have.storage,
        format!("{:?}", want.storage),
        format!("{:?}", have.storage),
    );
    check(
        "replicas",
        want.num_replicas == have.num_replicas,
        want.num_replicas.to_string(),
        have.num_replicas.to_string(),
    );
    check(
        "max messages per subject",
        want.max_messages_per_subject.max(0) == have.max_messages_per_subject.max(0),
        want.max_messages_per_subject.to_string(),
        have.max_messages_per_subject.to_string(),
    );
    check(
        "max messages",
        have.max_messages <= 0,
        "no limit".into(),
        have.max_messages.to_string(),
    );
    check(
        "max age",
        have.max_age.is_zero(),
        "no limit".into(),
        format!("{:?}", have.max_age),
    );
    check(
        "discard policy",
        have.discard == DiscardPolicy::Old || have.max_messages <= 0,
        "old".into(),
        format!("{:?}", have.discard),
    );
    wrong
}

async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, QueueError> {
    match js.get_stream(&config.name).await {
        Ok(mut existing) => {
            let have = existing
                .info()
                .await
                .map_err(|e| store(&format!("reading stream {}", config.name), e))?
                .config
                .clone();
            let wrong = mismatches(&config, &have);
            if wrong.is_empty() {
                Ok(existing)
            } else {
                Err(QueueError::Store(format!(
                    "NATS stream {} exists with settings Spool cannot use (it is left as it is): {}",
                    config.name,
                    wrong.join("; ")
                )))
            }
        }
        Err(e) if not_found(&e) => {
            let name = config.name.clone();
            match js.create_stream(config.clone()).await {
                Ok(created) => Ok(created),
                // Another process created it meanwhile: check that one.
                Err(_) => Box::pin(ensure_stream(js, config))
                    .await
                    .map_err(|e| store(&format!("creating stream {name}"), e)),
            }
        }
        Err(e) => Err(store(&format!("looking up stream {}", config.name), e)),
    }
}

/// The KV bucket `bucket` with a history of one, whose entries the server drops `max_age`
/// after their last write (zero: never).
async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: &str,
    options: &NatsOptions,
    max_age: Duration,
) -> Result<kv::Store, QueueError> {
    let stream_name = format!("KV_{bucket}");
    match js.get_stream(&stream_name).await {
        Ok(mut existing) => {
            let have = existing
                .info()
                .await
                .map_err(|e| store(&format!("reading bucket {bucket}"), e))?
                .config
                .clone();
            let mut wrong = Vec::new();
            if have.max_messages_per_subject != 1 {
                wrong.push(format!(
                    "history is {}, Spool needs 1",
                    have.max_messages_per_subject
                ));
            }
            if have.storage != storage(options) {
                wrong.push(format!(
                    "storage is {:?}, Spool is set to {:?}",
                    have.storage,
                    storage(options)
                ));
            }
            if have.num_replicas != options.replicas {
                wrong.push(format!(
                    "replicas is {}, Spool is set to {}",
                    have.num_replicas, options.replicas
                ));
            }
            if have.max_age != max_age {
                wrong.push(if max_age.is_zero() {
                    format!("max age is {:?}, Spool needs none", have.max_age)
                } else {
                    format!("max age is {:?}, Spool needs {max_age:?}", have.max_age)
                });
            }
            if !wrong.is_empty() {
                return Err(QueueError::Store(format!(
                    "NATS bucket {bucket} exists with settings Spool cannot use (it is left as it is): {}",
                    wrong.join("; ")
                )));
            }
            js.get_key_value(bucket)
                .await
                .map_err(|e| store(&format!("opening bucket {bucket}"), e))
        }
        Err(e) if not_found(&e) => {
            // The bucket's stream, as a KV bucket with a history of one is laid out.
            let config = stream::Config {
                name: stream_name,
                description: Some(format!("Spool: bucket {bucket}")),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                discard: DiscardPolicy::New,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                storage: storage(options),
                num_replicas: options.replicas,
                max_age,
                ..stream::Config::default()
            };
            if let Err(e) = js.create_stream(config).await {
                // Another process may have created it meanwhile; opening it below tells.
                tracing::debug!(error = %e, bucket, "creating a bucket");
            }
            js.get_key_value(bucket)
                .await
                .map_err(|e| store(&format!("opening bucket {bucket}"), e))
        }
        Err(e) => Err(store(&format!("looking up bucket {bucket}"), e)),
    }
}

/// How long a tenant lane's consumer outlives its last fetch: the server deletes it after
/// that (and a claim creates it again when the tenant has jobs).
const TENANT_LANE_IDLE: Duration = Duration::from_secs(24 * 3600);

/// The durable pull consumer that serves one lane of one queue, created on first use. All
/// workers share it: each message goes to one of them at a time.
pub async fn consumer(
    jobs: &stream::Stream,
    names: &Names,
    options: &NatsOptions,
    queue: &str,
    lane: &Lane,
) -> Result<PullConsumer, QueueError> {
    let name = names.lane_consumer(queue, lane);
    let band = lane.band;
    let want = pull::Config {
        durable_name: Some(name.clone()),
        description: Some(match &lane.tenant {
            None => format!("Spool: queue {queue}, {band:?} priority"),
            Some(t) => format!("Spool: queue {queue}, tenant {t}, {band:?} priority"),
        }),
        filter_subject: names.lane_subject(queue, lane),
        inactive_threshold: if lane.tenant.is_some() {
            TENANT_LANE_IDLE
        } else {
            Duration::ZERO
        },
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: options.ack_wait,
        // Spool counts attempts itself; the server redelivers for as long as it is asked to.
        max_deliver: -1,
        // Scheduled jobs wait as delayed naks, which count as pending acks: no limit, or a
        // backlog of scheduled jobs would stop ready ones from being delivered.
        max_ack_pending: -1,
        max_waiting: 512,
        ..pull::Config::default()
    };
    match jobs.get_consumer::<pull::Config>(&name).await {
        Ok(existing) => {
            let have = &existing.cached_info().config;
            let mut wrong = Vec::new();
            if have.filter_subject != want.filter_subject {
                wrong.push(format!("filter subject is {:?}", have.filter_subject));
            }
            if have.ack_policy != AckPolicy::Explicit {
                wrong.push(format!("ack policy is {:?}", have.ack_policy));
            }
            if have.ack_wait != want.ack_wait {
                wrong.push(format!(
                    "ack wait is {:?}, Spool is set to {:?}",
                    have.ack_wait, want.ack_wait
                ));
            }
            if have.max_deliver > 0 {
                wrong.push(format!("max deliver is {}", have.max_deliver));
            }
            if !wrong.is_empty() {
                return Err(QueueError::Store(format!(
                    "NATS consumer {name} exists with settings Spool cannot use (it is left as it is): {}",
                    wrong.join("; ")
                )));
            }
            Ok(existing)
        }
        Err(_) => jobs
            .get_or_create_consumer(&name, want)
            .await
            .map_err(|e| store(&format!("creating consumer {name}"), e)),
    }
}

/// How long a request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
