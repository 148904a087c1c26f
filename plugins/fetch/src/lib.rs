//! `fetch`: makes the HTTP requests its payload lists, for the outbound HTTP tests.
//!
//! Payload: `{"requests": [{"url": string, "method"?: "GET" | "POST", "body"?: string,
//! "body_bytes"?: u64}], "delay_ms"?: u64}`. The plugin first sleeps `delay_ms` (default 0),
//! then sends every request at once (`body_bytes` sends that many `x` bytes instead of
//! `body`) and reads each response body to its end.
//!
//! Output: one entry per request, in order: `{"status": u16, "bytes": u64, "body": string}`
//! (the body cut to 200 bytes), or `{"error": string}` with wasi:http's error code (for
//! example `HttpRequestDenied`). The job succeeds whatever the requests did: the tests read
//! the outcome of each one from the output.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_sdk::{Job, JobError};
use wstd::http::{Client, Method, Request};

#[derive(Deserialize)]
struct Fetch {
    requests: Vec<Req>,
    #[serde(default)]
    delay_ms: u64,
}

#[derive(Deserialize)]
struct Req {
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_bytes: Option<u64>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Done {
    Answered {
        status: u16,
        bytes: u64,
        body: String,
    },
    Failed {
        error: String,
    },
}

async fn one(req: &Req) -> Done {
    let body = match (req.body_bytes, &req.body) {
        (Some(n), _) => vec![b'x'; usize::try_from(n).unwrap_or(usize::MAX)],
        (None, Some(text)) => text.clone().into_bytes(),
        (None, None) => Vec::new(),
    };
    let method = match req.method.as_deref() {
        Some("POST") => Method::POST,
        _ if !body.is_empty() => Method::POST,
        _ => Method::GET,
    };
    let request = match Request::builder().method(method).uri(&req.url).body(body) {
        Ok(request) => request,
        Err(e) => {
            return Done::Failed {
                error: format!("bad request: {e}"),
            };
        }
    };
    let failed = |e: wstd::http::Error| Done::Failed {
        error: match e.downcast_ref::<wstd::http::error::ErrorCode>() {
            Some(code) => format!("{code:?}"),
            None => format!("{e:#}"),
        },
    };
    let mut response = match Client::new().send(request).await {
        Ok(response) => response,
        Err(e) => return failed(e),
    };
    let status = response.status().as_u16();
    match response.body_mut().contents().await {
        Ok(bytes) => Done::Answered {
            status,
            bytes: bytes.len() as u64,
            body: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
        },
        Err(e) => failed(e),
    }
}

/// Polls every future to its end, concurrently, and returns their outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    futures_lite::future::poll_fn(|cx| {
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none()
                && let std::task::Poll::Ready(done) = future.as_mut().poll(cx)
            {
                *output = Some(done);
            }
        }
        if outputs.iter().all(Option::is_some) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

fn fetch(_: &Job, fetch: Fetch) -> Result<Vec<Done>, JobError> {
    Ok(wstd::runtime::block_on(async {
        if fetch.delay_ms > 0 {
            wstd::task::sleep(Duration::from_millis(fetch.delay_ms).into()).await;
        }
        join_all(fetch.requests.iter().map(one).collect()).await
    }))
}

spool_sdk::export!(fetch);
