//! `/healthz`, `/readyz` and `/metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ServerState;
use crate::queue::{Backend as _, EventFilter};

/// How long the store has to answer `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    security(()),
    responses((status = 200, description = "`ok`", content_type = "text/plain"))
)]
pub async fn healthz() -> &'static str {
    "ok"
}

/// The store answers (a read of the newest event, within 2 s).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "meta",
    security(()),
    responses(
        (status = 200, description = "`ready`", content_type = "text/plain"),
        (status = 503, description = "The store did not answer, and why", content_type = "text/plain"),
    )
)]
pub async fn readyz(State(state): State<ServerState>) -> Response {
    let newest = EventFilter {
        limit: Some(1),
        newest: true,
        ..EventFilter::default()
    };
    let probe = state.backend().events(&newest);
    match tokio::time::timeout(READY_TIMEOUT, probe).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready").into_response(),
        Ok(Err(e)) => {
            tracing::warn!("not ready: the store failed: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}")).into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the store did not answer within {}",
                humantime::format_duration(READY_TIMEOUT)
            ),
        )
            .into_response(),
    }
}

/// The process's metrics, in the OpenMetrics text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text"))
)]
pub async fn metrics(State(state): State<ServerState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().encode(),
    )
        .into_response()
}
