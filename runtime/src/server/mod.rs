//! The operator HTTP server: the JSON API under `/api/v1`, its OpenAPI document, Server-Sent
//! Events of the event log, Prometheus `/metrics` and health checks.
//!
//! One [`router`] serves them all, standalone (`spool serve`) or inside a worker process
//! (`[worker] http`). Every handler reads and writes through the store ([`AnyBackend`]), never
//! through a worker's memory, so a server in another process sees exactly what the workers
//! committed. [`auth`] decides who may call what: bearer tokens with a [`Role`], read for the
//! `GET` routes and admin for the rest; with no token configured the server only binds to
//! loopback ([`bind`]) and every caller is admin. The OpenAPI document is generated from the
//! handlers' annotations ([`openapi`]), so it lists every route the router serves.
//!
//! ```no_run
//! # async fn example(backend: spool::queue::AnyBackend) -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use spool::server::{Auth, ServerState};
//!
//! let state = ServerState::new(backend, Arc::new(spool::metrics::Metrics::new()))
//!     .with_auth(Auth::from_env(None)?);
//! let listener = spool::server::bind("127.0.0.1:7070".parse()?, &state).await?;
//! spool::server::serve(listener, state, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

pub mod auth;
mod dashboard;
mod dlq;
mod error;
mod events;
mod group;
mod health;
mod jobs;
mod params;
mod queues;
mod schedules;
mod workers;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::any;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::auth::BearerScheme;
pub use self::auth::{Auth, AuthError};
use crate::config::Config;
pub use crate::config::Role;
use crate::metrics::Metrics;
use crate::queue::{AnyBackend, Backend as _};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address is not loopback and no token is configured: anyone who reaches it could
    /// enqueue, cancel and purge.
    #[error(
        "refusing to serve the HTTP API on {addr} without a token: it is not a loopback address, so anyone who reaches it could enqueue, cancel and purge; configure [http] tokens (or set SPOOL_ADMIN_TOKEN), or bind to 127.0.0.1"
    )]
    Unprotected {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What every handler shares: the store, the metrics, the configuration and the tokens.
/// Cheap to clone (every field is shared).
#[derive(Clone)]
pub struct ServerState {
    backend: AnyBackend,
    metrics: Arc<Metrics>,
    config: Option<Arc<Config>>,
    auth: Arc<Auth>,
    demo: bool,
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
    enqueuer: group::Enqueuer,
    digests: Arc<queues::Digests>,
}

impl ServerState {
    /// A server on `backend` exporting `metrics`, with no configuration (every queue is
    /// accepted) and no tokens (loopback only, every caller admin).
    pub fn new(backend: AnyBackend, metrics: Arc<Metrics>) -> Self {
        ServerState {
            backend,
            metrics,
            config: None,
            auth: Arc::new(Auth::none()),
            demo: false,
            stopping: Arc::new(tokio::sync::watch::Sender::new(false)),
            enqueuer: group::Enqueuer::default(),
            digests: Arc::default(),
        }
    }

    /// The configuration the API applies: its queues (an enqueue on another queue is refused
    /// unless forced), their max attempts and plugins, the retention.
    pub fn with_config(mut self, config: Option<Config>) -> Self {
        self.config = config.map(Arc::new);
        self
    }

    /// Who may call what.
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = Arc::new(auth);
        self
    }

    /// Mark the server as `spool demo`'s (shown by `GET /api/v1/auth`).
    pub fn with_demo(mut self, demo: bool) -> Self {
        self.demo = demo;
        self
    }

    /// The store.
    pub fn backend(&self) -> &AnyBackend {
        &self.backend
    }

    /// The metrics `/metrics` renders.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The configuration, if there is one.
    pub fn config(&self) -> Option<&Config> {
        self.config.as_deref()
    }

    /// The tokens.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Whether this is `spool demo`'s server.
    pub fn demo(&self) -> bool {
        self.demo
    }

    /// The largest request body taken: room for a batch of payloads of the store's maximum.
    fn body_limit(&self) -> usize {
        self.backend
            .max_payload()
            .saturating_mul(2)
            .saturating_add(1 << 20)
            .max(64 << 20)
    }

    /// A receiver that turns `true` when the server stops (long-lived streams end then).
    fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }
}

/// The routes that need a token (when tokens are configured): the API and `/metrics`.
fn guarded() -> OpenApiRouter<ServerState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(jobs::enqueue))
        .routes(routes!(jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::cancel_one))
        .routes(routes!(jobs::cancel_matching))
        .routes(routes!(queues::list))
        .routes(routes!(dlq::list))
        .routes(routes!(dlq::replay))
        .routes(routes!(dlq::purge))
        .routes(routes!(schedules::list))
        .routes(routes!(schedules::put, schedules::delete))
        .routes(routes!(events::list))
        .routes(routes!(events::stream))
        .routes(routes!(workers::list))
        .routes(routes!(health::metrics))
}

/// The routes anyone may call: health checks, `/api/v1/auth` and the OpenAPI document.
fn open() -> OpenApiRouter<ServerState> {
    OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(auth::whoami))
        .routes(routes!(openapi_json))
}

/// The OpenAPI 3.1 document of every route [`router`] serves (the dashboard's aside).
pub fn openapi() -> utoipa::openapi::OpenApi {
    guarded().merge(open()).into_openapi()
}

/// The OpenAPI document, as served.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json"))
)]
async fn openapi_json() -> axum::response::Response {
    static JSON: OnceLock<String> = OnceLock::new();
    let json = JSON.get_or_init(|| openapi().to_json().unwrap_or_default());
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json.clone(),
    )
        .into_response()
}

use axum::response::IntoResponse as _;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Spool operator API",
        description = "Jobs, queues, the dead-letter queue, schedules and events of a Spool installation. Bearer tokens: `read` for GET, `admin` for the rest; errors are `{\"error\": code, \"message\": text}`."
    ),
    modifiers(&BearerScheme),
    components(schemas(error::ErrorBody)),
    security(("bearer" = [])),
    tags(
        (name = "jobs", description = "Enqueue, list, show and cancel jobs"),
        (name = "queues", description = "Counts per queue and state"),
        (name = "dlq", description = "The dead-letter queue"),
        (name = "schedules", description = "Repeating jobs kept in the store"),
        (name = "events", description = "The event log, listed or streamed"),
        (name = "meta", description = "Health, metrics, auth and this document"),
    )
)]
struct ApiDoc;

/// The whole server: the API, `/metrics`, the health checks (and the dashboard), on `state`.
pub fn router(state: ServerState) -> Router {
    let (guarded, _) = guarded().split_for_parts();
    let guarded = guarded.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::authorize,
    ));
    let (open, _) = open().split_for_parts();
    let limit = state.body_limit();
    // The dashboard's routes are merged here: `.merge(dashboard::routes())`.
    guarded
        .merge(open)
        .merge(dashboard::routes())
        .route("/api/v1/{*rest}", any(error::no_route))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Bind `addr` for `state`: refused when the address is not loopback and no token is
/// configured.
pub async fn bind(
    addr: SocketAddr,
    state: &ServerState,
) -> Result<tokio::net::TcpListener, ServerError> {
    if !addr.ip().is_loopback() && !state.auth.required() {
        return Err(ServerError::Unprotected { addr });
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Serve [`router`] on `listener` until `shutdown` completes; then open event streams end
/// and the server waits for the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ServerState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stopping = state.stopping.clone();
    let app = router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            stopping.send_replace(true);
        })
        .await
}
