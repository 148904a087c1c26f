//! Who may call what: bearer tokens, each `read` or `admin`.
//!
//! Tokens come from the config's `[http] tokens` (by value, or by the name of an environment
//! variable) and from `SPOOL_ADMIN_TOKEN` and `SPOOL_READ_TOKEN`. `GET` routes need `read`,
//! every other method `admin`; `/healthz`, `/readyz`, `/api/v1/auth` and the OpenAPI document
//! need nothing. With no token at all every caller is admin, which [`bind`](super::bind)
//! allows on loopback only. Tokens are kept as SHA-256 digests, compared in constant time and
//! never logged; a refused request is logged with its method, path and why.

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::ServerState;
use super::error::ApiError;
use crate::config::{HttpConfig, Role};

/// The environment variable holding an admin token.
pub const ADMIN_TOKEN_ENV: &str = "SPOOL_ADMIN_TOKEN";
/// The environment variable holding a read token.
pub const READ_TOKEN_ENV: &str = "SPOOL_READ_TOKEN";

/// A token the configuration names but that cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// `[http] tokens` names an environment variable that is unset or empty.
    #[error("http.tokens[{index}]: the environment variable {var} is not set (or empty)")]
    MissingEnv {
        /// The token's place in `[http] tokens`.
        index: usize,
        /// The variable.
        var: String,
    },
}

/// The tokens a server accepts.
#[derive(Default)]
pub struct Auth {
    tokens: Vec<([u8; 32], Role)>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl Auth {
    /// No token: every caller is admin (loopback only).
    pub fn none() -> Auth {
        Auth::default()
    }

    /// The tokens of `[http]` (if any) and of `SPOOL_ADMIN_TOKEN` / `SPOOL_READ_TOKEN`.
    pub fn from_env(http: Option<&HttpConfig>) -> Result<Auth, AuthError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut auth = Auth::none();
        for (index, token) in http
            .map(|h| h.tokens.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let value = match (&token.value, &token.env) {
                (Some(value), _) => value.clone(),
                (None, Some(name)) => var(name).ok_or_else(|| AuthError::MissingEnv {
                    index,
                    var: name.clone(),
                })?,
                (None, None) => continue,
            };
            auth = auth.with_token(&value, token.role);
        }
        if let Some(token) = var(ADMIN_TOKEN_ENV) {
            auth = auth.with_token(&token, Role::Admin);
        }
        if let Some(token) = var(READ_TOKEN_ENV) {
            auth = auth.with_token(&token, Role::Read);
        }
        Ok(auth)
    }

    /// Accept `token` with `role` too.
    pub fn with_token(mut self, token: &str, role: Role) -> Auth {
        self.tokens.push((Sha256::digest(token).into(), role));
        self
    }

    /// Whether requests need a token (some token is configured).
    pub fn required(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The role of a caller presenting `token` (`None`: no token): admin for everyone when no
    /// token is configured, else the token's role, or `None` for an unknown or absent token.
    pub fn role(&self, token: Option<&str>) -> Option<Role> {
        if !self.required() {
            return Some(Role::Admin);
        }
        let digest: [u8; 32] = Sha256::digest(token?).into();
        // Every token is compared, whatever matched before: the time taken says nothing
        // about which token (or how much of one) matched.
        let mut role = None;
        for (known, known_role) in &self.tokens {
            if bool::from(known.ct_eq(&digest)) {
                role = role.max(Some(*known_role));
            }
        }
        role
    }
}

/// The bearer token of a request, if it has one.
fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The guard in front of the API: 401 without a known token (when tokens are required), 403
/// for a read token on a route that changes something.
pub async fn authorize(State(state): State<ServerState>, req: Request, next: Next) -> Response {
    let need = if matches!(*req.method(), Method::GET | Method::HEAD) {
        Role::Read
    } else {
        Role::Admin
    };
    let presented = bearer(&req).is_some();
    let refusal = match state.auth.role(bearer(&req)) {
        Some(role) if role >= need => return next.run(req).await,
        Some(role) => ApiError::forbidden(format!(
            "this token's role is {role}; {} {} needs an admin token",
            req.method(),
            req.uri().path()
        )),
        None if presented => {
            ApiError::unauthorized("the bearer token is not one this server knows")
        }
        None => ApiError::unauthorized(
            "this server needs a bearer token: send `Authorization: Bearer <token>`",
        ),
    };
    tracing::warn!(
        method = %req.method(),
        path = req.uri().path(),
        token_presented = presented,
        "refused an HTTP API request: {}",
        refusal.message()
    );
    let mut response = refusal.into_response();
    if response.status() == axum::http::StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// What `GET /api/v1/auth` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    /// The caller's role: `admin`, `read`, or `null` without a valid token.
    #[schema(value_type = Option<String>)]
    pub role: Option<Role>,
    /// Whether the server needs a token.
    pub auth_required: bool,
    /// Whether this is `spool demo`'s server.
    pub demo: bool,
}

/// The caller's role (never refused: the dashboard asks it to know what to offer).
#[utoipa::path(
    get,
    path = "/api/v1/auth",
    tag = "meta",
    security(()),
    responses((status = 200, body = WhoAmI))
)]
pub async fn whoami(State(state): State<ServerState>, req: Request) -> axum::Json<WhoAmI> {
    axum::Json(WhoAmI {
        role: state.auth.role(bearer(&req)),
        auth_required: state.auth.required(),
        demo: state.demo,
    })
}

/// Declares the `bearer` security scheme in the OpenAPI document.
pub struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
