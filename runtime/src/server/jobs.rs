//! `/api/v1/jobs` and `/api/v1/queues/{queue}/jobs`: enqueue, list, show and cancel jobs.
//!
//! An enqueue follows `spool enqueue`'s rules: a queue the config does not have is refused
//! (400, naming the queues it has) unless `?force=true`; a payload over the store's
//! `max_payload` is refused (413, naming the limit); a job whose idempotency key an unfinished
//! job holds comes back as that job, with `duplicate: true`. A batch is one backend call: one
//! bad job refuses it whole. A `traceparent` header (W3C trace context) puts every job of
//! the request in the producer's trace, unless a job names its own.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::ServerState;
use super::error::{ApiError, Body, ErrorBody, Params};
use super::params;
use crate::json::{JobJson, JobLine};
use crate::queue::{Backend as _, CancelFilter, Enqueued, JobFilter, JobId, JobState, NewJob};
use crate::trace::TraceParent;

/// One job to enqueue: the options of `spool enqueue`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// The payload: any JSON value, stored as its text; with `payload_encoding: "base64"`, a
    /// base64 string of the payload's bytes.
    #[schema(value_type = Object)]
    payload: Box<RawValue>,
    /// `"base64"` when `payload` is base64 text of bytes that are not JSON.
    payload_encoding: Option<String>,
    /// Idempotency key: while an unfinished job on the queue has it, no new job is made.
    key: Option<String>,
    /// Higher runs first within the queue (default 0).
    priority: Option<i32>,
    /// Run no earlier than this long from now (`30s`, `5m`).
    delay: Option<String>,
    /// Run no earlier than this time (RFC 3339).
    run_at: Option<String>,
    /// Attempts allowed in all (default: the queue's `max_attempts` in the config).
    max_attempts: Option<u32>,
    /// The tenant the job belongs to.
    tenant: Option<String>,
    /// The job's group: it never runs while another job of its queue and group runs.
    group: Option<String>,
    /// The W3C trace context the job belongs to (`00-<trace id>-<span id>-<flags>`); by
    /// default the request's `traceparent` header.
    traceparent: Option<String>,
}

/// A batch of jobs for one queue.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The jobs, each as a single job's body.
    jobs: Vec<JobRequest>,
}

/// One job, or a batch.
#[derive(ToSchema)]
#[allow(dead_code)] // Only documents the body, which is read in two steps (see `enqueue`).
pub enum EnqueueRequest {
    /// One job.
    One(JobRequest),
    /// A batch: `{"jobs": [...]}`.
    Batch(BatchRequest),
}

/// `?force=true`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EnqueueQuery {
    /// Accept a queue the config does not have (a worker with another config serves it).
    #[serde(default)]
    force: bool,
}

/// The jobs enqueued, in the order given.
#[derive(Serialize, ToSchema)]
pub struct EnqueueResponse {
    /// Each job's id and whether it was a duplicate of an unfinished job with its key.
    #[schema(value_type = Vec<Object>)]
    jobs: Vec<Enqueued>,
}

/// Put one job or a batch on a queue.
#[utoipa::path(
    post,
    path = "/api/v1/queues/{queue}/jobs",
    tag = "jobs",
    params(("queue" = String, Path, description = "The queue"), EnqueueQuery),
    request_body(content = EnqueueRequest, description = "One job, or `{\"jobs\": [...]}`"),
    responses(
        (status = 201, body = EnqueueResponse),
        (status = 400, description = "Bad body, bad queue name, or a queue the config does not have", body = ErrorBody),
        (status = 413, description = "A payload over the store's max_payload", body = ErrorBody),
    )
)]
pub async fn enqueue(
    State(state): State<ServerState>,
    Path(queue): Path<String>,
    Params(query): Params<EnqueueQuery>,
    headers: HeaderMap,
    Body(body): Body<Box<RawValue>>,
) -> Result<(StatusCode, Json<EnqueueResponse>), ApiError> {
    let traceparent = match headers.get("traceparent") {
        None => None,
        Some(value) => Some(traceparent(value.to_str().unwrap_or_default())?),
    };
    if let Some(config) = state.config()
        && !query.force
        && let Err(unknown) = config.known_queue(&queue)
    {
        return Err(ApiError::bad_request(format!(
            "{unknown} (pass ?force=true if a worker with another config serves it)"
        )));
    }
    crate::queue::check::check_queue_name(&queue)?;
    let bad = |e: serde_json::Error| ApiError::bad_request(format!("bad request body: {e}"));
    #[derive(Deserialize)]
    struct Probe {
        jobs: Option<serde::de::IgnoredAny>,
    }
    let probe: Probe = serde_json::from_str(body.get()).map_err(bad)?;
    let jobs = if probe.jobs.is_some() {
        let batch: BatchRequest = serde_json::from_str(body.get()).map_err(bad)?;
        if batch.jobs.is_empty() {
            return Err(ApiError::bad_request("the batch has no jobs"));
        }
        let mut jobs = Vec::with_capacity(batch.jobs.len());
        for (n, job) in batch.jobs.into_iter().enumerate() {
            jobs.push(new_job(&state, &queue, job, traceparent).map_err(|e| {
                ApiError::bad_request(format!("job {} of the batch: {}", n + 1, e.message()))
            })?);
        }
        jobs
    } else {
        vec![new_job(
            &state,
            &queue,
            serde_json::from_str(body.get()).map_err(bad)?,
            traceparent,
        )?]
    };
    let jobs = state.enqueuer.enqueue(state.backend(), jobs).await?;
    Ok((StatusCode::CREATED, Json(EnqueueResponse { jobs })))
}

/// A `traceparent` value, or a 400 naming what is wrong with it.
fn traceparent(value: &str) -> Result<TraceParent, ApiError> {
    value
        .parse()
        .map_err(|e| ApiError::bad_request(format!("bad traceparent `{value}`: {e}")))
}

/// The job `request` stands for on `queue`, in `default_trace` unless it names its own.
fn new_job(
    state: &ServerState,
    queue: &str,
    request: JobRequest,
    default_trace: Option<TraceParent>,
) -> Result<NewJob, ApiError> {
    let traceparent = match &request.traceparent {
        Some(value) => Some(traceparent(value)?),
        None => default_trace,
    };
    let payload = match request.payload_encoding.as_deref() {
        None => request.payload.get().as_bytes().to_vec(),
        Some("base64") => {
            let text: String = serde_json::from_str(request.payload.get()).map_err(|_| {
                ApiError::bad_request("payload_encoding is base64 but the payload is not a string")
            })?;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| ApiError::bad_request(format!("bad base64 payload: {e}")))?
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "bad payload_encoding `{other}`: the only one is base64"
            )));
        }
    };
    let run_at = match (&request.delay, &request.run_at) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give delay or run_at, not both"));
        }
        (Some(delay), None) => {
            let delay = crate::units::parse_duration(delay)
                .map_err(|e| ApiError::bad_request(format!("bad delay `{delay}`: {e}")))?;
            Some(crate::queue::now() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
        }
        (None, Some(at)) => Some(params::time("run_at", at, true)?),
        (None, None) => None,
    };
    if request.max_attempts == Some(0) {
        return Err(ApiError::bad_request("max_attempts must be at least 1"));
    }
    // Settled now when the config knows the queue; otherwise at the job's first claim.
    let max_attempts = request.max_attempts.or_else(|| {
        state
            .config()
            .and_then(|c| c.queues.get(queue).map(|q| q.max_attempts))
    });
    Ok(NewJob {
        queue: queue.to_owned(),
        payload,
        run_at,
        priority: request.priority.unwrap_or(0),
        max_attempts,
        tenant: request.tenant,
        key: request.key,
        metadata: Vec::new(),
        group: request.group,
        traceparent,
    })
}

/// One job with its attempts, steps, children and timeline (`spool job --json`).
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job, as `spool job --json` prints it", body = Object),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<JobJson>, ApiError> {
    match state.backend().job(&JobId(id.clone())).await? {
        Some(job) => Ok(Json(JobJson::from(&job))),
        None => Err(ApiError::not_found(format!("no job with id {id}"))),
    }
}

/// Which jobs to list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// Only this queue.
    queue: Option<String>,
    /// Only this state (scheduled, ready, running, succeeded, dead, cancelled, waiting).
    state: Option<String>,
    /// Only this tenant's.
    tenant: Option<String>,
    /// Only the children of this job.
    parent: Option<String>,
    /// Only jobs enqueued since this time (RFC 3339, or a duration ago like `1h`).
    since: Option<String>,
    /// The cursor: the previous page's `next`.
    after: Option<String>,
    /// At most this many (default 50, at most 1000).
    limit: Option<usize>,
}

/// A page of jobs, newest first.
#[derive(Serialize, ToSchema)]
pub struct JobsPage {
    /// The jobs, as `spool jobs --json` prints them.
    #[schema(value_type = Vec<Object>)]
    jobs: Vec<JobLine>,
    /// Pass as `after` for the next page; `null` on the last page.
    next: Option<String>,
}

/// Jobs, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    tag = "jobs",
    params(JobsQuery),
    responses((status = 200, body = JobsPage), (status = 400, body = ErrorBody))
)]
pub async fn list(
    State(state): State<ServerState>,
    Params(query): Params<JobsQuery>,
) -> Result<Json<JobsPage>, ApiError> {
    let limit = params::limit(query.limit, 50, 1000)?;
    let filter = JobFilter {
        queue: query.queue,
        state: query
            .state
            .as_deref()
            .map(|s| params::one_of::<JobState>("state", s))
            .transpose()?,
        parent: query.parent.map(JobId),
        // One more than the page tells whether there is a next one.
        limit: Some(limit + 1),
        tenant: query.tenant,
        since: params::time_opt("since", query.since.as_deref())?,
        after: query.after.map(JobId),
    };
    let mut jobs = state.backend().jobs(&filter).await?;
    let next = if jobs.len() > limit {
        jobs.truncate(limit);
        jobs.last().map(|j| j.id.0.clone())
    } else {
        None
    };
    Ok(Json(JobsPage {
        jobs: jobs.iter().map(JobLine::from).collect(),
        next,
    }))
}

/// Why a job is cancelled.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CancelOne {
    /// Recorded in the `cancelled` event (default "cancelled by operator").
    reason: Option<String>,
}

/// Whether the cancel found the job unfinished.
#[derive(Serialize, ToSchema)]
pub struct Cancelled {
    /// `false` when the job had already finished.
    cancelled: bool,
}

const DEFAULT_REASON: &str = "cancelled by operator";

/// Cancel one job (and its unfinished children).
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/cancel",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    request_body(content = CancelOne, description = "Optional"),
    responses((status = 200, body = Cancelled), (status = 404, body = ErrorBody))
)]
pub async fn cancel_one(
    State(state): State<ServerState>,
    Path(id): Path<String>,
    Body(body): Body<CancelOne>,
) -> Result<Json<Cancelled>, ApiError> {
    let reason = body.reason.as_deref().unwrap_or(DEFAULT_REASON);
    let cancelled = state.backend().cancel(&JobId(id), reason).await?;
    Ok(Json(Cancelled { cancelled }))
}

/// Which unfinished jobs to cancel (`spool cancel --queue ... | --all`).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CancelMatching {
    /// Only this queue.
    queue: Option<String>,
    /// Only jobs in these states: scheduled, ready, queued (both), running, waiting.
    states: Vec<String>,
    /// Only this tenant's jobs.
    tenant: Option<String>,
    /// Only this group's jobs.
    group: Option<String>,
    /// Cancel every unfinished job (needed when no other field is given).
    all: bool,
    /// Recorded in each `cancelled` event (default "cancelled by operator").
    reason: Option<String>,
}

/// The jobs a filter cancelled.
#[derive(Serialize, ToSchema)]
pub struct CancelledIds {
    /// Their ids, children cancelled with their parents included.
    cancelled: Vec<String>,
}

/// Cancel every unfinished job a filter matches.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/cancel",
    tag = "jobs",
    request_body = CancelMatching,
    responses((status = 200, body = CancelledIds), (status = 400, body = ErrorBody))
)]
pub async fn cancel_matching(
    State(state): State<ServerState>,
    Body(body): Body<CancelMatching>,
) -> Result<Json<CancelledIds>, ApiError> {
    let mut states = Vec::new();
    for name in &body.states {
        if name == "queued" {
            states.extend([JobState::Ready, JobState::Scheduled]);
            continue;
        }
        let state: JobState = name.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "bad state `{name}`: use scheduled, ready, queued, running or waiting"
            ))
        })?;
        if state.is_finished() {
            return Err(ApiError::bad_request(format!(
                "{state} jobs are finished: there is nothing to cancel (states that can be \
                 cancelled: scheduled, ready, queued, running, waiting)"
            )));
        }
        states.push(state);
    }
    let filter = CancelFilter {
        queue: body.queue,
        states,
        tenant: body.tenant,
        group: body.group,
    };
    if filter.is_empty() && !body.all {
        return Err(ApiError::bad_request(
            "refusing to cancel every unfinished job: filter with queue/states/tenant/group, or pass \"all\": true",
        ));
    }
    let reason = body.reason.as_deref().unwrap_or(DEFAULT_REASON);
    let cancelled = state.backend().cancel_matching(&filter, reason).await?;
    Ok(Json(CancelledIds {
        cancelled: cancelled.into_iter().map(|id| id.0).collect(),
    }))
}
