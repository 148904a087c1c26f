//! The demo's mail API: a real HTTP server on 127.0.0.1 that records what the `email` plugin
//! sends it, so `spool demo` can show which sends reached the world, and when.
//!
//! It accepts `POST /send` with the plugin's JSON (`{"to", "job", "attempt"}`) and answers
//! `200 {"queued": true}`; it counts a delivery only once its whole body has arrived, so a
//! request cut off mid-way (an attempt aborted at its deadline) is not one.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use tokio::net::TcpListener;
use wasmtime_wasi_http::io::TokioIo;

/// One delivery the mail API accepted.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// When it arrived, from the time the server was started with.
    pub at: Duration,
    /// The recipient.
    pub to: String,
    /// The job that sent it.
    pub job: String,
    /// The attempt that sent it.
    pub attempt: u32,
    /// Whether it carried `Authorization: Bearer <the API key>`.
    pub authorized: bool,
}

/// The body the `email` plugin posts.
#[derive(Deserialize)]
struct Sent {
    to: String,
    job: String,
    attempt: u32,
}

/// A running mail API; stopped when dropped.
pub struct MailApi {
    addr: SocketAddr,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    server: tokio::task::JoinHandle<()>,
}

impl MailApi {
    /// Listen on a free port of 127.0.0.1; deliveries are timed from `epoch` and are authorized
    /// when they carry `Bearer <api_key>`.
    pub async fn start(epoch: Instant, api_key: String) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            epoch,
            bearer: format!("Bearer {api_key}"),
            deliveries: deliveries.clone(),
        });
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(shared.receive(request).await) }
                    });
                    // A connection the client drops mid-request ends here, unrecorded.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            deliveries,
            server,
        })
    }

    /// `http://127.0.0.1:<port>`: the address to grant and to configure as `api_base`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every delivery so far, in the order they arrived.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries
            .lock()
            .map(|d| d.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }
}

impl Drop for MailApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What every connection's handler shares.
struct Shared {
    epoch: Instant,
    bearer: String,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
}

impl Shared {
    async fn receive(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::POST || request.uri().path() != "/send" {
            return answer(StatusCode::NOT_FOUND, "only POST /send is served here");
        }
        let authorized = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == self.bearer.as_bytes());
        let Ok(body) = request.into_body().collect().await else {
            return answer(StatusCode::BAD_REQUEST, "the body did not arrive whole");
        };
        let sent: Sent = match serde_json::from_slice(&body.to_bytes()) {
            Ok(sent) => sent,
            Err(e) => return answer(StatusCode::BAD_REQUEST, &format!("bad delivery: {e}")),
        };
        let delivery = Delivery {
            at: self.epoch.elapsed(),
            to: sent.to,
            job: sent.job,
            attempt: sent.attempt,
            authorized,
        };
        match self.deliveries.lock() {
            Ok(mut d) => d.push(delivery),
            Err(poisoned) => poisoned.into_inner().push(delivery),
        }
        answer(StatusCode::OK, r#"{"queued": true}"#)
    }
}

fn answer(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response
}
