//! The API's errors: `{"error": "<code>", "message": "..."}` with the status the code stands
//! for, and the extractors that answer bad input with one.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ServerState;
use crate::queue::QueueError;

/// An error answer: its status and its JSON body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// The body of every error answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `payload_too_large` or `internal`.
    pub error: &'static str,
    /// What went wrong, in words.
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// What went wrong, in words.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 400: the request is malformed or names what cannot be (an unknown queue).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: no token, or one the server does not know.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: a token whose role does not allow the request.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: no such job, schedule or route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the thing is not in a state that allows the request.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 413: a payload or a body larger than the server takes.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 500: the store failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::NotFound(_) => ApiError::not_found(e.to_string()),
            QueueError::BadRequest(_) => ApiError::bad_request(e.to_string()),
            QueueError::PayloadTooLarge { .. } => ApiError::too_large(e.to_string()),
            QueueError::Store(_) => ApiError::internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), "{}", self.message);
        }
        let body = ErrorBody {
            error: self.code,
            message: self.message,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// The answer to a path under `/api/v1` that names no route.
pub async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route {} (the routes are listed at /api/v1/openapi.json)",
        uri.path()
    ))
}

/// A JSON request body; an empty body reads as `{}`. Bad JSON is a 400, a body over the
/// server's limit a 413, both as JSON errors.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<ServerState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ServerState) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::too_large(format!(
                        "the request body is larger than the server takes ({})",
                        crate::queue::check::bytes(state.body_limit())
                    ))
                } else {
                    ApiError::bad_request(rejection.body_text())
                }
            })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(Body)
            .map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))
    }
}

/// Query parameters; a bad one is a 400 naming it.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Params(q.0))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}
