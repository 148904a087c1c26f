//! The web dashboard: one page of vanilla HTML, JavaScript and CSS, embedded in the binary so
//! it works offline and always matches the API it calls.
//!
//! `/` serves `index.html`; it loads `/dashboard/app.js` and `/dashboard/style.css`. The page
//! reads everything through `/api/v1` with the token the user gives it (kept in the browser's
//! `localStorage`) and follows `/api/v1/events/stream` for live updates, so these routes
//! themselves need no token: they hold no data.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// The page's files, as the binary carries them.
const INDEX: &str = include_str!("dashboard/index.html");
const APP: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// Only the page's own files may load, and it may only talk to this server.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The dashboard's routes, merged into the server's router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| file("text/html; charset=utf-8", INDEX)))
        .route(
            "/dashboard/app.js",
            get(|| file("text/javascript; charset=utf-8", APP)),
        )
        .route(
            "/dashboard/style.css",
            get(|| file("text/css; charset=utf-8", STYLE)),
        )
}

/// One embedded file. `no-cache` makes the browser ask again (cheaply) so a new binary's page
/// is never mixed with an old one's script.
async fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}
