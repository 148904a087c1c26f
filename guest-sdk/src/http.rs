//! Outgoing HTTP requests through `wasi:http`, with failures already turned into [`JobError`]s.
//!
//! Enabled by the crate feature `http` (`spool-sdk = { ..., features = ["http"] }`): a plugin
//! built without it has no `wasi:http` import, so it runs on queues that grant no HTTP. A plugin
//! built with it runs only where its queue grants the hosts it calls:
//!
//! ```toml
//! [queues.email.grants]
//! http = ["http://127.0.0.1:8025"]
//! ```
//!
//! A request is built with [`Request`] (or [`post_json`]) and sent with [`Request::send`], which
//! blocks the handler until the whole answer is in and maps every failure onto what the host
//! should do next:
//!
//! | what happened                                          | [`JobError`]                      |
//! |--------------------------------------------------------|-----------------------------------|
//! | a 2xx or 3xx answer                                    | none: `Ok(`[`Response`]`)`        |
//! | 429 Too Many Requests, or any 5xx                      | [`JobError::retry`], or [`JobError::retry_after`] when the answer has `Retry-After: <seconds>` |
//! | any other 4xx                                          | [`JobError::fail`]                |
//! | the host refused the request (not granted to the queue) | [`JobError::fail`], naming the URL and the queue |
//! | an invalid URL or a body over the host's limit         | [`JobError::fail`]                |
//! | no connection, a timeout, a reset, a DNS failure       | [`JobError::retry`]               |
//!
//! (A refusal is recognised by wasi:http's `HTTP-request-denied` code. A host that reports it
//! only in the response, after failing the body's stream, shows the stream's error first: the
//! request is then retried as a connection failure, and the attempt's log names the refusal.)
//!
//! [`Request::fetch`] sends without looking at the status, for handlers that treat some 4xx as
//! normal; [`Response::error_for_status`] is the status half of the table on its own.
//!
//! # Example
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use spool_sdk::{Job, JobError, http};
//!
//! #[derive(Deserialize, Serialize)]
//! struct Ping { to: String }
//!
//! fn ping(job: &Job, ping: Ping) -> Result<u16, JobError> {
//!     let resp = http::post_json("http://127.0.0.1:8025/send", &ping).bearer("key").send()?;
//!     Ok(resp.status())
//! }
//! # fn main() {
//! #     // Outside wasm there is no host to send through: the request fails for good.
//! #     let job = Job::new("job-1", "email", "{}");
//! #     assert!(matches!(ping(&job, Ping { to: "ada".into() }), Err(JobError::Fail { .. })));
//! # }
//! ```
//!
//! # Limits
//!
//! Bodies are sent and received whole, in memory (no streaming); the host bounds their size, the
//! number of requests in flight and how long one may take, and drops every request still in
//! flight when the attempt ends (deadline, cancel, lost lease). `Retry-After` is honoured in its
//! seconds form only (an HTTP date is ignored and the host's backoff decides).

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::JobError;

/// How much of an error answer's body is quoted in the [`JobError`] message.
const QUOTED_BODY: usize = 200;

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        })
    }
}

/// `POST url` with `body` encoded as JSON: the usual API call, ready to [`send`](Request::send).
pub fn post_json<T: Serialize + ?Sized>(url: impl Into<String>, body: &T) -> Request {
    Request::post(url).json(body)
}

/// An outgoing request, built in steps and sent with [`send`](Self::send) or
/// [`fetch`](Self::fetch).
#[derive(Debug, Clone)]
#[must_use = "a request does nothing until it is sent"]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Why the request cannot be sent (a body that did not encode), reported by `send`.
    invalid: Option<String>,
}

impl Request {
    /// A request with `method` to `url` (`scheme://host[:port]/path?query`), no headers, no body.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Self {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            invalid: None,
        }
    }

    /// `GET url`.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }

    /// `POST url`.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new(Method::Post, url)
    }

    /// `PUT url`.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new(Method::Put, url)
    }

    /// `DELETE url`.
    pub fn delete(url: impl Into<String>) -> Self {
        Self::new(Method::Delete, url)
    }

    /// Add a header (names are case-insensitive; adding one twice sends it twice).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// `Authorization: Bearer <token>`, typically a secret's value
    /// (`spool_sdk::secret("api_key")` and its `expose()`).
    pub fn bearer(self, token: impl AsRef<str>) -> Self {
        let header = format!("Bearer {}", token.as_ref());
        self.header("authorization", header)
    }

    /// The body, as bytes.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The body `value` encoded as JSON, with `Content-Type: application/json`.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => self.body = body,
            Err(error) => self.invalid = Some(format!("cannot encode the body as JSON: {error}")),
        }
        self.header("content-type", "application/json")
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Send the request and wait for the whole answer; an error status becomes a [`JobError`]
    /// as [`Response::error_for_status`] maps it, and so does a request that could not be made
    /// (see the [module docs](self)).
    pub fn send(self) -> Result<Response, JobError> {
        self.fetch()?.error_for_status()
    }

    /// Send the request and wait for the whole answer, whatever its status; only a request that
    /// could not be made is an error.
    pub fn fetch(self) -> Result<Response, JobError> {
        if let Some(why) = &self.invalid {
            return Err(JobError::fail(format_args!(
                "{} {}: {why}",
                self.method, self.url
            )));
        }
        transport::send(self)
    }
}

/// An answer: status, headers and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    method: Method,
    url: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// An answer to `method url`, as the host returned it; for tests of code that reads
    /// responses.
    pub fn new(
        method: Method,
        url: impl Into<String>,
        status: u16,
        headers: Vec<(String, String)>,
        body: impl Into<Vec<u8>>,
    ) -> Self {
        Self {
            method,
            url: url.into(),
            status,
            headers,
            body: body.into(),
        }
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header, as received.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body decoded from JSON; a body that does not decode is a retryable error (the API
    /// answered something unexpected, which may not last).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_slice(&self.body).map_err(|error| {
            JobError::retry(format_args!(
                "{} {} answered {} with a body that is not the expected JSON: {error}",
                self.method, self.url, self.status
            ))
        })
    }

    /// This response if its status is below 400, otherwise the [`JobError`] it calls for:
    /// 429 and 5xx are retryable (after `Retry-After` seconds when the answer says so), any
    /// other 4xx is permanent. The message names the request, the status and the start of the
    /// body.
    ///
    /// ```
    /// use std::time::Duration;
    /// use spool_sdk::JobError;
    /// use spool_sdk::http::{Method, Response};
    ///
    /// let limited = Response::new(
    ///     Method::Post,
    ///     "https://api.example.com/send",
    ///     429,
    ///     vec![("Retry-After".into(), "30".into())],
    ///     "slow down",
    /// );
    /// assert_eq!(
    ///     limited.error_for_status(),
    ///     Err(JobError::retry_after(
    ///         "POST https://api.example.com/send answered 429: slow down",
    ///         Duration::from_secs(30),
    ///     )),
    /// );
    /// ```
    pub fn error_for_status(self) -> Result<Self, JobError> {
        if self.status < 400 {
            return Ok(self);
        }
        let mut message = format!("{} {} answered {}", self.method, self.url, self.status);
        let quoted = quote(&self.body);
        if !quoted.is_empty() {
            message.push_str(": ");
            message.push_str(&quoted);
        }
        Err(if self.status == 429 || self.status >= 500 {
            match self.header("retry-after").and_then(retry_after) {
                Some(after) => JobError::retry_after(message, after),
                None => JobError::retry(message),
            }
        } else {
            JobError::fail(message)
        })
    }
}

/// `Retry-After` in its delta-seconds form.
fn retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The start of a body, on one line, for an error message.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(QUOTED_BODY) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// What a request that could not be made becomes: a refusal by the queue's grants, a bad URL or
/// a body over a limit cannot get better by retrying; anything else (connection, DNS, timeout)
/// may.
#[cfg_attr(
    not(all(target_arch = "wasm32", feature = "http")),
    allow(dead_code, reason = "only the wasm32 transport reports request errors")
)]
fn request_error(request: &Request, code: RequestErrorKind, detail: &str) -> JobError {
    let what = format!("{} {}", request.method, request.url);
    match code {
        RequestErrorKind::Denied => {
            let queue = crate::job::current_queue();
            let queue = queue.as_deref().unwrap_or("this queue");
            JobError::fail(format_args!(
                "{what} refused by the host: the http grants of queue {queue:?} do not allow it \
                 (grant it with `http = [\"<scheme>://<host>:<port>\"]` under \
                 [queues.{queue}.grants])"
            ))
        }
        RequestErrorKind::Permanent => JobError::fail(format_args!("{what} failed: {detail}")),
        RequestErrorKind::Transient => JobError::retry(format_args!("{what} failed: {detail}")),
    }
}

/// How a request that could not be made is treated.
#[cfg_attr(
    not(all(target_arch = "wasm32", feature = "http")),
    allow(dead_code, reason = "only the wasm32 transport reports request errors")
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestErrorKind {
    /// The host's grants refused it.
    Denied,
    /// It cannot succeed as written.
    Permanent,
    /// It may succeed later.
    Transient,
}

#[cfg(all(target_arch = "wasm32", feature = "http"))]
mod transport {
    //! The request, sent through wstd's wasi:http client.

    use wstd::http::{Body, Client, ErrorCode};

    use super::{Method, Request, RequestErrorKind, Response, request_error};
    use crate::JobError;

    /// Send `request` and read the whole answer.
    pub(super) fn send(request: Request) -> Result<Response, JobError> {
        let outgoing = build(&request).map_err(|error| {
            request_error(&request, RequestErrorKind::Permanent, &error.to_string())
        })?;
        wstd::runtime::block_on(exchange(&request, outgoing))
            .map_err(|error| classify(&request, &error))
    }

    /// The request as wstd's client takes it; an error is a URL or header that is not valid.
    fn build(request: &Request) -> Result<wstd::http::Request<Body>, wstd::http::Error> {
        let method = match request.method {
            Method::Get => wstd::http::Method::GET,
            Method::Post => wstd::http::Method::POST,
            Method::Put => wstd::http::Method::PUT,
            Method::Patch => wstd::http::Method::PATCH,
            Method::Delete => wstd::http::Method::DELETE,
        };
        let mut builder = wstd::http::Request::builder()
            .method(method)
            .uri(request.url.as_str());
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        // A known length rather than a chunked body: some APIs refuse chunked requests.
        if !request
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            && (!request.body.is_empty() || request.method != Method::Get)
        {
            builder = builder.header("content-length", request.body.len());
        }
        Ok(builder.body(Body::from(request.body.clone()))?)
    }

    async fn exchange(
        request: &Request,
        outgoing: wstd::http::Request<Body>,
    ) -> wstd::http::Result<Response> {
        let response = Client::new().send(outgoing).await?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = response.into_body();
        let body = body.contents().await?.to_vec();
        Ok(Response::new(
            request.method,
            request.url.clone(),
            status,
            headers,
            body,
        ))
    }

    /// A wasi:http error code says whether the request was refused, cannot work, or may work
    /// later; anything else (a stream that broke while reading) may work later.
    fn classify(request: &Request, error: &wstd::http::Error) -> JobError {
        let kind = match error.downcast_ref::<ErrorCode>() {
            Some(ErrorCode::HttpRequestDenied) => RequestErrorKind::Denied,
            Some(
                ErrorCode::HttpRequestUriInvalid
                | ErrorCode::HttpRequestMethodInvalid
                | ErrorCode::HttpRequestBodySize(_)
                | ErrorCode::HttpResponseBodySize(_)
                | ErrorCode::HttpRequestHeaderSize(_)
                | ErrorCode::HttpResponseHeaderSize(_),
            ) => RequestErrorKind::Permanent,
            _ => RequestErrorKind::Transient,
        };
        request_error(request, kind, &format!("{error:#}"))
    }
}

#[cfg(not(all(target_arch = "wasm32", feature = "http")))]
mod transport {
    //! Outside wasm32 there is no host to send through.

    use super::{Request, Response};
    use crate::JobError;

    /// Refuse: requests are made only by the Spool host.
    pub(super) fn send(request: Request) -> Result<Response, JobError> {
        Err(JobError::fail(format_args!(
            "{} {}: HTTP requests are sent only inside a Spool component (wasm32, feature `http`)",
            request.method, request.url
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response::new(
            Method::Post,
            "http://127.0.0.1:8025/send",
            status,
            headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body,
        )
    }

    #[test]
    fn success_and_redirect_statuses_are_not_errors() {
        for status in [200, 201, 204, 302] {
            assert_eq!(
                answer(status, &[], "ok")
                    .error_for_status()
                    .map(|r| r.status()),
                Ok(status)
            );
        }
    }

    #[test]
    fn server_errors_are_retryable_and_quote_the_body() {
        assert_eq!(
            answer(503, &[], "mail  server\n down").error_for_status(),
            Err(JobError::retry(
                "POST http://127.0.0.1:8025/send answered 503: mail server down"
            ))
        );
    }

    #[test]
    fn too_many_requests_honours_retry_after_seconds() {
        assert_eq!(
            answer(429, &[("retry-after", " 7 ")], "").error_for_status(),
            Err(JobError::retry_after(
                "POST http://127.0.0.1:8025/send answered 429",
                Duration::from_secs(7)
            ))
        );
        // An HTTP-date form is not understood: the host's backoff decides.
        assert_eq!(
            answer(429, &[("Retry-After", "Wed, 21 Oct 2026 07:28:00 GMT")], "").error_for_status(),
            Err(JobError::retry(
                "POST http://127.0.0.1:8025/send answered 429"
            ))
        );
    }

    #[test]
    fn other_client_errors_fail_for_good() {
        for status in [400, 401, 403, 404, 422] {
            assert!(matches!(
                answer(status, &[], "no").error_for_status(),
                Err(JobError::Fail { message }) if message.contains(&format!("answered {status}: no"))
            ));
        }
    }

    #[test]
    fn long_bodies_are_cut_in_the_message() {
        let long = "x".repeat(1_000);
        let Err(JobError::Retry { message, .. }) = answer(500, &[], &long).error_for_status()
        else {
            panic!("expected a retry")
        };
        assert!(message.ends_with(&format!("{}...", "x".repeat(QUOTED_BODY))));
    }

    #[test]
    fn a_refused_request_names_the_url_and_the_queue() {
        crate::job::set_current_queue("email");
        let request = Request::post("https://api.mailgun.net/v3/send");
        let error = request_error(&request, RequestErrorKind::Denied, "HTTP-request-denied");
        let JobError::Fail { message } = error else {
            panic!("expected fail, got {error:?}")
        };
        assert!(message.starts_with("POST https://api.mailgun.net/v3/send refused by the host"));
        assert!(message.contains("grants of queue \"email\""));
        assert!(message.contains("[queues.email.grants]"));
    }

    #[test]
    fn connection_failures_are_retryable() {
        let request = Request::get("http://127.0.0.1:1/");
        assert_eq!(
            request_error(&request, RequestErrorKind::Transient, "ConnectionRefused"),
            JobError::retry("GET http://127.0.0.1:1/ failed: ConnectionRefused")
        );
    }

    #[test]
    fn json_sets_the_body_and_content_type_and_bearer_the_authorization() {
        let request = post_json("http://h/send", &serde_json::json!({"to": "ada"})).bearer("k1");
        assert_eq!(request.body, br#"{"to":"ada"}"#);
        assert_eq!(
            request.headers,
            vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("authorization".to_owned(), "Bearer k1".to_owned()),
            ]
        );
    }

    #[test]
    fn responses_read_headers_case_insensitively_and_decode_json() {
        let response = answer(200, &[("Content-Type", "application/json")], r#"{"id": 4}"#);
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(
            response.json::<serde_json::Value>(),
            Ok(serde_json::json!({"id": 4}))
        );
        assert!(matches!(
            response.json::<Vec<u8>>(),
            Err(JobError::Retry { .. })
        ));
    }
}
