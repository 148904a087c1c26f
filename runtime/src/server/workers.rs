//! `/api/v1/workers`: the live workers from the store's worker registry (`spool workers`).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::ServerState;
use super::error::ApiError;
use crate::queue::{Backend as _, WorkerInfo};

/// The live workers.
#[derive(Serialize, ToSchema)]
pub struct Workers {
    /// Every worker whose last heartbeat is within its TTL, by id: `id`, `host`, `pid`,
    /// `version`, `queues`, `concurrency`, `running`, `started_at` and `last_heartbeat`
    /// (milliseconds since the Unix epoch).
    #[schema(value_type = Vec<Object>)]
    workers: Vec<WorkerInfo>,
}

/// The live workers of the installation, on any machine, with what each serves and runs.
#[utoipa::path(
    get,
    path = "/api/v1/workers",
    tag = "workers",
    responses((status = 200, body = Workers))
)]
pub async fn list(State(state): State<ServerState>) -> Result<Json<Workers>, ApiError> {
    let workers = state.backend().workers().await?;
    Ok(Json(Workers { workers }))
}
