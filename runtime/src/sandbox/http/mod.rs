//! Outbound HTTP (`wasi:http/outgoing-handler`), for plugins whose queue grants it.
//!
//! `wasmtime-wasi-http` implements the WIT interfaces; Spool supplies the hooks that send a
//! request ([`HttpHooks`]), so every request passes through three checks before a byte
//! leaves the host:
//!
//! 1. the request's scheme, host and port must match one of the grant's patterns
//!    ([`grant`]), or the guest gets `http-request-denied`;
//! 2. the name is resolved by the host, and each address is checked: a loopback, private,
//!    link-local or unspecified address is refused unless the grant names it literally — and
//!    the connection is made to that checked address, so a second resolution (DNS
//!    rebinding) cannot swap it;
//! 3. the attempt's limits ([`HttpLimits`]): requests in flight, body sizes, timeouts.
//!
//! Every refusal is a host line in the attempt's log naming the URL and who refused it, and
//! the attempt's [`HttpUsage`] counts requests, body bytes and refusals.
//!
//! Nothing outlives the attempt: each request runs in a task that `wasmtime-wasi-http` keeps
//! in the store's resource table behind an abort-on-drop handle (the pending response, and
//! once it arrives the connection's task, kept by the response body). The attempt's store is
//! dropped at its end, whatever ended it (the deadline, a cancel, a lost lease), which aborts
//! those tasks and closes their connections; and with the instance gone no request can start.

mod grant;
mod send;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpHooks};

pub use self::grant::{HttpGrant, HttpLimits, HttpPattern};
pub(crate) use self::send::tls_client_config;
use super::log::AttemptLog;
use crate::outcome::{HttpUsage, LogLevel};

/// The `wasi:http` state of one attempt's store.
pub(crate) struct HttpState {
    pub(crate) ctx: WasiHttpCtx,
    pub(crate) hooks: HttpHooks,
}

impl HttpState {
    /// No grant: the plugin cannot import `wasi:http` (it is refused at load), so nothing is
    /// set up beyond the empty context.
    pub(crate) fn new(grant: Option<&Arc<HttpGrant>>, log: &AttemptLog) -> Self {
        HttpState {
            ctx: WasiHttpCtx::new(),
            hooks: HttpHooks {
                granted: grant.map(|grant| Granted {
                    grant: grant.clone(),
                    meter: Arc::new(Meter {
                        requests: AtomicU64::new(0),
                        sent: AtomicU64::new(0),
                        received: AtomicU64::new(0),
                        refused: AtomicU64::new(0),
                        in_flight: Arc::new(tokio::sync::Semaphore::new(
                            grant.limits.max_concurrent as usize,
                        )),
                    }),
                    log: log.clone(),
                }),
            },
        }
    }

    /// What the attempt's requests used so far.
    pub(crate) fn usage(&self) -> HttpUsage {
        match &self.hooks.granted {
            Some(granted) => granted.meter.usage(),
            None => HttpUsage::default(),
        }
    }
}

/// Spool's `wasi:http` hooks: the grant check, the address check and the limits.
pub(crate) struct HttpHooks {
    granted: Option<Granted>,
}

struct Granted {
    grant: Arc<HttpGrant>,
    meter: Arc<Meter>,
    log: AttemptLog,
}

/// Counters shared by an attempt's requests, and the permits for requests in flight.
struct Meter {
    requests: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    refused: AtomicU64,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl Meter {
    fn usage(&self) -> HttpUsage {
        HttpUsage {
            requests: self.requests.load(Ordering::Relaxed),
            bytes_sent: self.sent.load(Ordering::Relaxed),
            bytes_received: self.received.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// Where a refusal or a failure is reported: the attempt's log and its counters.
#[derive(Clone)]
struct Report {
    url: String,
    meter: Arc<Meter>,
    log: AttemptLog,
}

impl Report {
    /// A request refused by a grant or a limit, before any connection.
    fn refused(&self, why: &str) {
        self.meter.refused.fetch_add(1, Ordering::Relaxed);
        self.log.host_line(
            LogLevel::Warn,
            format!("http request to {} refused: {why}", self.url),
        );
    }

    /// A request that failed once under way.
    fn failed(&self, why: &str) {
        self.log.host_line(
            LogLevel::Warn,
            format!("http request to {} failed: {why}", self.url),
        );
    }
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        let Some(granted) = &self.granted else {
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        };
        // A refused request's body is drained, so that the plugin learns of the refusal from
        // the response rather than from a body stream closed under it.
        let limits = granted.grant.limits;
        let denied = |e: wasmtime_wasi_http::Error, body| -> SendFuture {
            Box::new(async move {
                send::drain(body, limits.max_request_bytes, limits.connect_timeout).await;
                Err(e)
            })
        };
        let report = Report {
            url: request.uri().to_string(),
            meter: granted.meter.clone(),
            log: granted.log.clone(),
        };
        match send::check(&granted.grant, &request, &report) {
            Err(e) => denied(e, request.into_body()),
            Ok(target) => {
                let Ok(permit) = granted.meter.in_flight.clone().try_acquire_owned() else {
                    let max = granted.grant.limits.max_concurrent;
                    report.refused(&format!(
                        "{max} requests of this attempt are already in flight, the limit \
                         (http.max_concurrent) is {max}"
                    ));
                    return denied(
                        wasmtime_wasi_http::Error::ConnectionLimitReached,
                        request.into_body(),
                    );
                };
                granted.meter.requests.fetch_add(1, Ordering::Relaxed);
                Box::new(send::send(
                    granted.grant.clone(),
                    target,
                    request,
                    options,
                    report,
                    permit,
                ))
            }
        }
    }
}
