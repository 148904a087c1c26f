//! `/api/v1/events`: the event log, listed or streamed as Server-Sent Events.
//!
//! The stream tails the store's committed log (reading what follows the last event sent, a
//! few times a second while idle, and at once when this process commits events), so it shows
//! what every process committed — the workers usually run elsewhere — and nothing that was
//! not committed. Each message's `id` is the
//! event's `seq`: a client that reconnects with `Last-Event-ID` (browsers do) gets exactly
//! the events after it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use utoipa::{IntoParams, ToSchema};

use super::ServerState;
use super::error::{ApiError, ErrorBody, Params};
use super::params;
use crate::queue::{AnyBackend, Backend as _, Event, EventFilter, JobId};

/// How long an idle stream waits before it reads the log again.
const POLL: Duration = Duration::from_millis(150);
/// Events read from the store at once by a stream.
const BATCH: usize = 500;

/// Which events to list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this job's.
    job: Option<String>,
    /// Only this queue's.
    queue: Option<String>,
    /// Only events recorded since this time (RFC 3339, or a duration ago like `1h`).
    since: Option<String>,
    /// Only events after this `seq`: then the oldest ones after it, else the newest.
    after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

/// Events in order of their `seq`.
#[derive(Serialize, ToSchema)]
pub struct Events {
    /// Each with `seq`, `at`, `kind`, `job_id`, `queue`, `tenant`, `attempt`, `phase`,
    /// `message`, `digest`, `worker`, `duration_ms`.
    #[schema(value_type = Vec<Object>)]
    events: Vec<Event>,
}

/// A 404 for a job filter that names no job.
async fn known_job(state: &ServerState, job: Option<&str>) -> Result<(), ApiError> {
    if let Some(id) = job
        && state.backend().job(&JobId(id.to_owned())).await?.is_none()
    {
        return Err(ApiError::not_found(format!("no job with id {id}")));
    }
    Ok(())
}

/// The event log: the newest `limit` events, or with `after` the oldest after it.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    params(EventsQuery),
    responses((status = 200, body = Events), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn list(
    State(state): State<ServerState>,
    Params(query): Params<EventsQuery>,
) -> Result<Json<Events>, ApiError> {
    known_job(&state, query.job.as_deref()).await?;
    let limit = params::limit(query.limit, 100, 1000)?;
    let filter = EventFilter {
        job: query.job.map(JobId),
        after: query.after,
        limit: Some(limit),
        queue: query.queue,
        since: params::time_opt("since", query.since.as_deref())?,
        newest: query.after.is_none(),
    };
    let events = state.backend().events(&filter).await?;
    Ok(Json(Events { events }))
}

/// Which events to stream.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Only this job's.
    job: Option<String>,
    /// Only this queue's.
    queue: Option<String>,
    /// Start after this `seq` (the `Last-Event-ID` header wins); default: only new events.
    after: Option<i64>,
}

/// New events as they are committed, as Server-Sent Events: `id: <seq>`, `event: <kind>`,
/// `data: <event JSON>`; a comment every 15 s keeps the connection alive.
#[utoipa::path(
    get,
    path = "/api/v1/events/stream",
    tag = "events",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this seq"),
    ),
    responses(
        (status = 200, description = "An endless text/event-stream", content_type = "text/event-stream"),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn stream(
    State(state): State<ServerState>,
    Params(query): Params<StreamQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let last_id = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("bad Last-Event-ID: it must be an event's seq")
                })?,
        ),
    };
    known_job(&state, query.job.as_deref()).await?;
    let filter = EventFilter {
        job: query.job.map(JobId),
        queue: query.queue,
        ..EventFilter::default()
    };
    let after = match last_id.or(query.after) {
        Some(after) => after,
        // Only what comes next: after the newest event there is now.
        None => state
            .backend()
            .events(&EventFilter {
                limit: Some(1),
                newest: true,
                ..filter.clone()
            })
            .await?
            .last()
            .map_or(0, |e| e.seq),
    };
    let tail = Tail {
        live: Some(state.backend().sink().subscribe()),
        backend: state.backend().clone(),
        filter,
        after,
        pending: VecDeque::new(),
        stopping: state.stopping(),
    };
    let stream = futures::stream::unfold(tail, |mut tail| async move {
        let event = tail.next().await?;
        Some((Ok(message(&event)), tail))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// One event as an SSE message.
fn message(event: &Event) -> SseEvent {
    let message = SseEvent::default()
        .id(event.seq.to_string())
        .event(event.kind.to_string());
    let data = serde_json::to_string(event).unwrap_or_default();
    message.data(data)
}

/// A reader of the log from `after` on.
struct Tail {
    /// Events this process commits, as they are committed: a wake-up (the events themselves
    /// are read from the store, in the log's order, with everything other processes
    /// committed), so a stream served by a worker's own process follows it at once rather
    /// than at the next poll.
    live: Option<broadcast::Receiver<Event>>,
    backend: AnyBackend,
    filter: EventFilter,
    after: i64,
    pending: VecDeque<Event>,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Tail {
    /// The next event, once committed; `None` when the server stops.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.after = event.seq;
                return Some(event);
            }
            if *self.stopping.borrow() {
                return None;
            }
            let read = self
                .backend
                .events(&EventFilter {
                    after: Some(self.after),
                    limit: Some(BATCH),
                    ..self.filter.clone()
                })
                .await;
            let wait = match read {
                Ok(events) if !events.is_empty() => {
                    self.pending.extend(events);
                    continue;
                }
                Ok(_) => POLL,
                Err(e) => {
                    tracing::warn!("the event stream cannot read the event log: {e}");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = woken(&mut self.live) => {}
                _ = self.stopping.changed() => return None,
            }
        }
    }
}

/// Wait until this process commits events, taking every event already waiting (one read of
/// the store follows, not one per event). Never, once the broadcast has closed.
async fn woken(live: &mut Option<broadcast::Receiver<Event>>) {
    let Some(rx) = live else {
        return std::future::pending().await;
    };
    if let Err(RecvError::Closed) = rx.recv().await {
        *live = None;
        return std::future::pending().await;
    }
    while matches!(rx.try_recv(), Ok(_) | Err(TryRecvError::Lagged(_))) {}
}
