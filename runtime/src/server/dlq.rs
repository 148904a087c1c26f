//! `/api/v1/dlq`: list, replay and purge dead jobs (`spool dlq`).
//!
//! Replay and purge take ids or a filter. Each id must name a dead job: an unknown id is a
//! 404, a job that is not dead a 409, and then nothing is touched.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ServerState;
use super::error::{ApiError, Body, ErrorBody, Params};
use super::params;
use crate::json::JobLine;
use crate::queue::{Backend as _, DlqFilter, JobId, JobState, Phase};

/// Which dead jobs to list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DlqQuery {
    /// Only this queue.
    queue: Option<String>,
    /// Only this tenant's.
    tenant: Option<String>,
    /// Only jobs whose last attempt failed in this phase.
    phase: Option<String>,
    /// Only jobs that died since this time (RFC 3339, or a duration ago like `1h`).
    since: Option<String>,
    /// Only jobs that died before this time.
    until: Option<String>,
    /// At most this many (default 50, at most 1000).
    limit: Option<usize>,
}

/// Dead jobs, most recently dead first.
#[derive(Serialize, ToSchema)]
pub struct DeadJobs {
    /// As `spool dlq list --json` prints them.
    #[schema(value_type = Vec<Object>)]
    jobs: Vec<JobLine>,
}

/// The dead-letter queue.
#[utoipa::path(
    get,
    path = "/api/v1/dlq",
    tag = "dlq",
    params(DlqQuery),
    responses((status = 200, body = DeadJobs), (status = 400, body = ErrorBody))
)]
pub async fn list(
    State(state): State<ServerState>,
    Params(query): Params<DlqQuery>,
) -> Result<Json<DeadJobs>, ApiError> {
    let limit = params::limit(query.limit, 50, 1000)?;
    let filter = DlqFilter {
        id: None,
        queue: query.queue,
        phase: phase(query.phase.as_deref())?,
        since: params::time_opt("since", query.since.as_deref())?,
        until: params::time_opt("until", query.until.as_deref())?,
        // The store does not filter by tenant: then the page is cut here.
        limit: query.tenant.is_none().then_some(limit),
    };
    let mut dead = state.backend().dead(&filter).await?;
    if let Some(tenant) = &query.tenant {
        dead.retain(|j| j.tenant.as_ref() == Some(tenant));
        dead.truncate(limit);
    }
    Ok(Json(DeadJobs {
        jobs: dead.iter().map(JobLine::from).collect(),
    }))
}

fn phase(text: Option<&str>) -> Result<Option<Phase>, ApiError> {
    text.map(|p| params::one_of::<Phase>("phase", p))
        .transpose()
}

/// Which dead jobs to replay or purge: ids, or a filter.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DlqSelection {
    /// These dead jobs.
    ids: Vec<String>,
    /// Only this queue.
    queue: Option<String>,
    /// Only jobs whose last attempt failed in this phase.
    phase: Option<String>,
    /// Only jobs that died since this time.
    since: Option<String>,
    /// Only jobs that died before this time.
    until: Option<String>,
    /// Every dead job (purge only; needed when nothing else is given).
    all: bool,
}

impl DlqSelection {
    /// The filters the selection stands for, one per id or one for the filter; the ids are
    /// checked to name dead jobs.
    async fn filters(self, state: &ServerState, what: &str) -> Result<Vec<DlqFilter>, ApiError> {
        let filter = DlqFilter {
            id: None,
            queue: self.queue,
            phase: phase(self.phase.as_deref())?,
            since: params::time_opt("since", self.since.as_deref())?,
            until: params::time_opt("until", self.until.as_deref())?,
            limit: None,
        };
        let filtered = filter != DlqFilter::default();
        if self.ids.is_empty() {
            let everything = self.all && what == "purge";
            if !filtered && !everything {
                return Err(ApiError::bad_request(if what == "purge" {
                    "say which dead jobs to purge: ids, a filter (queue, phase, since, until), or \"all\": true"
                } else {
                    "say which dead jobs to replay: ids, or a filter (queue, phase, since, until)"
                }));
            }
            return Ok(vec![filter]);
        }
        if filtered || self.all {
            return Err(ApiError::bad_request("give ids or a filter, not both"));
        }
        let mut filters = Vec::with_capacity(self.ids.len());
        for id in self.ids {
            let Some(job) = state.backend().job(&JobId(id.clone())).await? else {
                return Err(ApiError::not_found(format!("no job with id {id}")));
            };
            if job.summary.state != JobState::Dead {
                return Err(ApiError::conflict(format!(
                    "job {id} is not in the dead-letter queue (it is {})",
                    job.summary.state
                )));
            }
            filters.push(DlqFilter {
                id: Some(JobId(id)),
                ..DlqFilter::default()
            });
        }
        Ok(filters)
    }
}

/// How many jobs were replayed.
#[derive(Serialize, ToSchema)]
pub struct Replayed {
    /// Dead jobs given fresh attempts.
    replayed: u64,
}

/// Give dead jobs fresh attempts: ready at once, attempt count reset, history kept.
#[utoipa::path(
    post,
    path = "/api/v1/dlq/replay",
    tag = "dlq",
    request_body = DlqSelection,
    responses(
        (status = 200, body = Replayed),
        (status = 400, body = ErrorBody),
        (status = 404, description = "An id names no job", body = ErrorBody),
        (status = 409, description = "An id names a job that is not dead", body = ErrorBody),
    )
)]
pub async fn replay(
    State(state): State<ServerState>,
    Body(selection): Body<DlqSelection>,
) -> Result<Json<Replayed>, ApiError> {
    let mut replayed = 0;
    for filter in selection.filters(&state, "replay").await? {
        replayed += state.backend().replay(&filter).await?;
    }
    Ok(Json(Replayed { replayed }))
}

/// How many jobs were purged.
#[derive(Serialize, ToSchema)]
pub struct Purged {
    /// Dead jobs deleted with their history.
    purged: u64,
}

/// Delete dead jobs for good.
#[utoipa::path(
    post,
    path = "/api/v1/dlq/purge",
    tag = "dlq",
    request_body = DlqSelection,
    responses(
        (status = 200, body = Purged),
        (status = 400, body = ErrorBody),
        (status = 404, description = "An id names no job", body = ErrorBody),
        (status = 409, description = "An id names a job that is not dead", body = ErrorBody),
    )
)]
pub async fn purge(
    State(state): State<ServerState>,
    Body(selection): Body<DlqSelection>,
) -> Result<Json<Purged>, ApiError> {
    let mut purged = 0;
    for filter in selection.filters(&state, "purge").await? {
        purged += state.backend().purge(&filter).await?;
    }
    Ok(Json(Purged { purged }))
}
