//! `/api/v1/schedules`: list, create or replace, and delete schedules (`spool schedule`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::ServerState;
use super::error::{ApiError, Body, ErrorBody};
use crate::queue::{Backend as _, now};
use crate::schedule::{Missed, Schedule, Spec};

/// The schedules.
#[derive(Serialize, ToSchema)]
pub struct Schedules {
    /// By name, as `spool schedule list --json` prints them.
    #[schema(value_type = Vec<Object>)]
    schedules: Vec<serde_json::Value>,
}

/// Every schedule: spec, queue, next tick, last fire.
#[utoipa::path(
    get,
    path = "/api/v1/schedules",
    tag = "schedules",
    responses((status = 200, body = Schedules))
)]
pub async fn list(State(state): State<ServerState>) -> Result<Json<Schedules>, ApiError> {
    let schedules = state.backend().schedules().await?;
    Ok(Json(Schedules {
        schedules: schedules.iter().map(crate::json::schedule).collect(),
    }))
}

/// A schedule, as `spool schedule add` takes it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// The queue its jobs go to.
    queue: String,
    /// A cron expression, in UTC: five fields (`0 3 * * *`) or six with seconds first.
    cron: Option<String>,
    /// A fixed interval (`30s`, `1h`), at least `1s`; ticks fall on multiples of it.
    every: Option<String>,
    /// Every job's payload, any JSON value (default: empty).
    #[schema(value_type = Option<Object>)]
    payload: Option<Box<RawValue>>,
    /// What to do with ticks missed while no worker ran: `skip` (default) or `catch-up`.
    missed: Option<String>,
    /// The jobs' priority.
    #[serde(default)]
    priority: i32,
    /// The jobs' tenant.
    tenant: Option<String>,
    /// The jobs' group.
    group: Option<String>,
    /// The jobs' max attempts (default: the queue's).
    max_attempts: Option<u32>,
}

/// The schedule as stored.
#[derive(Serialize, ToSchema)]
pub struct SchedulePut {
    /// Whether it was new (`false`: it replaced one of the same name).
    created: bool,
    /// The schedule, as listed.
    #[schema(value_type = Object)]
    schedule: serde_json::Value,
    /// Set when the config has no such queue: its jobs wait until a worker serves it.
    warning: Option<String>,
}

/// Create a schedule, or replace the one of that name (one with the same spec keeps its next
/// and last ticks).
#[utoipa::path(
    put,
    path = "/api/v1/schedules/{name}",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name: letters, digits, `-` and `_`")),
    request_body = ScheduleRequest,
    responses(
        (status = 201, description = "Created", body = SchedulePut),
        (status = 200, description = "Replaced", body = SchedulePut),
        (status = 400, body = ErrorBody),
    )
)]
pub async fn put(
    State(state): State<ServerState>,
    Path(name): Path<String>,
    Body(body): Body<ScheduleRequest>,
) -> Result<(StatusCode, Json<SchedulePut>), ApiError> {
    let bad = |e: crate::schedule::ScheduleError| ApiError::bad_request(e.to_string());
    let spec = match (&body.cron, &body.every) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give cron or every, not both")),
        (Some(expr), None) => Spec::cron(expr).map_err(bad)?,
        (None, Some(every)) => {
            let every = crate::units::parse_duration(every)
                .map_err(|e| ApiError::bad_request(format!("bad every `{every}`: {e}")))?;
            Spec::every(every).map_err(bad)?
        }
        (None, None) => return Err(ApiError::bad_request("give cron or every")),
    };
    let missed = match body.missed.as_deref() {
        None => Missed::default(),
        Some(text) => text.parse().map_err(|_| {
            ApiError::bad_request(format!("bad missed `{text}`: use skip or catch-up"))
        })?,
    };
    if body.max_attempts == Some(0) {
        return Err(ApiError::bad_request("max_attempts must be at least 1"));
    }
    crate::queue::check::check_queue_name(&body.queue)?;
    let schedule = Schedule {
        name: name.clone(),
        spec,
        queue: body.queue,
        payload: body
            .payload
            .map(|p| p.get().as_bytes().to_vec())
            .unwrap_or_default(),
        missed,
        priority: body.priority,
        tenant: body.tenant,
        group: body.group,
        max_attempts: body.max_attempts,
        from_config: false,
    };
    schedule.check().map_err(bad)?;
    // The workers' config may live elsewhere: a queue it does not name is worth a warning,
    // not a refusal (as `spool schedule add` has it).
    let warning = state
        .config()
        .filter(|c| !c.queues.is_empty())
        .and_then(|c| c.known_queue(&schedule.queue).err())
        .map(|unknown| format!("{unknown}: its jobs wait until a worker serves that queue"));
    let next = schedule.spec.next_after(now()).map_err(bad)?;
    let created = state.backend().put_schedule(schedule, next).await?;
    let stored = state
        .backend()
        .schedules()
        .await?
        .into_iter()
        .find(|s| s.schedule.name == name)
        .ok_or_else(|| ApiError::internal(format!("schedule {name} was not stored")))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(SchedulePut {
            created,
            schedule: crate::json::schedule(&stored),
            warning,
        }),
    ))
}

/// Whether a schedule was removed.
#[derive(Serialize, ToSchema)]
pub struct Removed {
    /// Always `true` (an unknown name is a 404).
    removed: bool,
}

/// Delete a schedule: it fires no more.
#[utoipa::path(
    delete,
    path = "/api/v1/schedules/{name}",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses((status = 200, body = Removed), (status = 404, body = ErrorBody))
)]
pub async fn delete(
    State(state): State<ServerState>,
    Path(name): Path<String>,
) -> Result<Json<Removed>, ApiError> {
    if state.backend().remove_schedule(&name).await? {
        Ok(Json(Removed { removed: true }))
    } else {
        Err(ApiError::not_found(format!("no schedule named {name}")))
    }
}
