//! Sending one granted request: resolve, check the addresses, connect to a checked one,
//! TLS, HTTP/1.1, with the attempt's limits on the way.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, Result, WasiBody};

use super::grant::{HttpGrant, default_port};
use super::{Meter, Report};

/// Where a request that passed the grant check goes.
pub(super) struct Target {
    https: bool,
    host: String,
    port: u16,
}

/// Check a request against the grant, before anything is resolved or connected.
pub(super) fn check(
    grant: &HttpGrant,
    request: &http::Request<WasiBody>,
    report: &Report,
) -> Result<Target> {
    let uri = request.uri();
    let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
    let Some(host) = uri.host() else {
        report.refused("the URL has no host");
        return Err(Error::HttpRequestUriInvalid);
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let Some(port) = uri.port_u16().or_else(|| default_port(&scheme)) else {
        report.refused(&format!("the scheme `{scheme}` is not http or https"));
        return Err(Error::HttpRequestDenied);
    };
    if let Some(why) = grant.refusal(&scheme, host, port) {
        report.refused(&why);
        return Err(Error::HttpRequestDenied);
    }
    let max = grant.limits.max_request_bytes;
    let length = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(length) = length.filter(|&n| n > max) {
        report.refused(&format!(
            "its body of {length} bytes is over the limit (http.max_request_bytes) of {max}"
        ));
        return Err(Error::HttpRequestBodySize(Some(max)));
    }
    Ok(Target {
        https: scheme == "https",
        host: host.to_owned(),
        port,
    })
}

/// Anything a connection can run over: plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

type IoFuture = Box<dyn Future<Output = Result<()>> + Send>;

/// Send a checked request; the permit (one of the attempt's requests in flight) is held until
/// the response body ends or is dropped.
pub(super) async fn send(
    grant: Arc<HttpGrant>,
    target: Target,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    report: Report,
    permit: OwnedSemaphorePermit,
) -> Result<(http::Response<WasiBody>, IoFuture)> {
    let limits = grant.limits;
    // A plugin may shorten the timeouts, never lengthen them.
    let connect_timeout = shorter(
        limits.connect_timeout,
        options.and_then(|o| o.connect_timeout),
    );
    let first_byte_timeout = shorter(
        limits.first_byte_timeout,
        options.and_then(|o| o.first_byte_timeout),
    );

    let (mut sender, conn) = match connect(&grant, &target, connect_timeout, &report).await {
        Ok(connected) => connected,
        Err(e) => {
            drain(
                request.into_body(),
                limits.max_request_bytes,
                connect_timeout,
            )
            .await;
            return Err(e);
        }
    };

    // The request line carries the path only; scheme and authority are for proxies.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|e| Error::InternalError(Some(e.to_string())))?;
    let max_sent = limits.max_request_bytes;
    let request = request.map(|body| Metered {
        inner: Drained {
            body: Some(body),
            max: max_sent,
        },
        meter: report.meter.clone(),
        direction: Direction::Sent,
        counted: 0,
        max: max_sent,
        permit: None,
    });

    let mut conn = Some(conn);
    let mut sent = std::pin::pin!(tokio::time::timeout(
        first_byte_timeout,
        sender.send_request(request)
    ));
    // Drive the connection while waiting for the response.
    let response = std::future::poll_fn(|cx| match sent.as_mut().poll(cx) {
        Poll::Ready(result) => Poll::Ready(result),
        Poll::Pending => {
            if let Some(c) = conn.as_mut()
                && let Poll::Ready(ended) = Pin::new(c).poll(cx)
            {
                conn = None;
                if let Err(e) = ended {
                    return Poll::Ready(Ok(Err(e)));
                }
                return sent.as_mut().poll(cx);
            }
            Poll::Pending
        }
    })
    .await;
    let response = match response {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            // The request body going over its limit fails the send with the body's error.
            if let Some((error, why)) = over_limit(&e) {
                report.failed(&why);
                return Err(error);
            }
            report.failed(&e.to_string());
            return Err(Error::from(e));
        }
        Err(_) => {
            report.failed(&format!(
                "no response within the first-byte timeout (http.first_byte_timeout) of \
                 {first_byte_timeout:?}"
            ));
            return Err(Error::ConnectionReadTimeout);
        }
    };

    let max_received = limits.max_response_bytes;
    let length = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(length) = length.filter(|&n| n > max_received) {
        report.failed(&format!(
            "the response body of {length} bytes is over the limit (http.max_response_bytes) \
             of {max_received}"
        ));
        return Err(Error::HttpResponseBodySize(Some(max_received)));
    }
    let response = response.map(|body| {
        Metered {
            inner: body,
            meter: report.meter.clone(),
            direction: Direction::Received,
            counted: 0,
            max: max_received,
            permit: Some(permit),
        }
        .map_err(Error::from)
        .boxed_unsync()
    });
    let io: IoFuture = Box::new(async move {
        match conn {
            Some(conn) => conn.await.map_err(Error::from),
            None => Ok(()),
        }
    });
    Ok((response, io))
}

type Connected = (
    hyper::client::conn::http1::SendRequest<Metered<Drained>>,
    hyper::client::conn::http1::Connection<TokioIo<Box<dyn Io>>, Metered<Drained>>,
);

/// Resolve, check the addresses, connect to a checked one, TLS, HTTP/1.1 handshake.
async fn connect(
    grant: &HttpGrant,
    target: &Target,
    connect_timeout: Duration,
    report: &Report,
) -> Result<Connected> {
    let addr = resolve(grant, target, connect_timeout, report).await?;
    let tcp = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            report.failed(&format!("cannot connect to {addr}: {e}"));
            return Err(Error::ConnectionRefused);
        }
        Err(_) => {
            report.failed(&format!(
                "no connection to {addr} within the connect timeout (http.connect_timeout) of \
                 {connect_timeout:?}"
            ));
            return Err(Error::ConnectionTimeout);
        }
    };
    let stream: Box<dyn Io> = if target.https {
        let name = server_name(&target.host)?;
        let tls = tokio_rustls::TlsConnector::from(tls_config()?);
        match tokio::time::timeout(connect_timeout, tls.connect(name, tcp)).await {
            Ok(Ok(tls)) => Box::new(tls),
            Ok(Err(e)) => {
                report.failed(&format!("TLS with {addr} failed: {e}"));
                return Err(Error::TlsProtocolError);
            }
            Err(_) => {
                report.failed(&format!(
                    "no TLS session with {addr} within the connect timeout of {connect_timeout:?}"
                ));
                return Err(Error::ConnectionTimeout);
            }
        }
    } else {
        Box::new(tcp)
    };
    hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Error::from)
}

/// Read and discard a request body that will not be sent (up to `max` bytes, for at most
/// `limit`), so that the plugin's writes to it succeed and it learns why the request failed
/// from the response, not from a broken body stream.
pub(super) async fn drain(mut body: WasiBody, max: u64, limit: Duration) {
    let mut read = 0u64;
    let _ = tokio::time::timeout(limit, async {
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |d| d.len() as u64);
            if read > max {
                break;
            }
        }
    })
    .await;
}

/// The body-limit error a request body raised, if that is why hyper failed.
fn over_limit(e: &hyper::Error) -> Option<(Error, String)> {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(over) = cause.downcast_ref::<OverLimit>() {
            return Some((Error::HttpRequestBodySize(Some(over.max)), over.to_string()));
        }
        source = cause.source();
    }
    None
}

fn shorter(limit: Duration, asked: Option<Duration>) -> Duration {
    asked.map_or(limit, |asked| asked.min(limit))
}

/// Resolve the target and pick the first address the grant allows connecting to.
async fn resolve(
    grant: &HttpGrant,
    target: &Target,
    timeout: Duration,
    report: &Report,
) -> Result<SocketAddr> {
    let scheme = if target.https { "https" } else { "http" };
    let addrs: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, target.port)],
        Err(_) => {
            let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
            match tokio::time::timeout(timeout, lookup).await {
                Ok(Ok(addrs)) => addrs.collect(),
                Ok(Err(e)) => {
                    report.failed(&format!("cannot resolve {}: {e}", target.host));
                    return Err(Error::DnsError {
                        rcode: Some(e.to_string()),
                        info_code: None,
                    });
                }
                Err(_) => {
                    report.failed(&format!("resolving {} timed out", target.host));
                    return Err(Error::DnsTimeout);
                }
            }
        }
    };
    if let Some(addr) = addrs
        .iter()
        .find(|a| grant.address_allowed(scheme, target.port, a.ip()))
    {
        return Ok(*addr);
    }
    let Some(first) = addrs.first() else {
        report.failed(&format!("{} resolves to no address", target.host));
        return Err(Error::DestinationNotFound);
    };
    report.refused(&format!(
        "{} resolves to {}, an internal address not named literally by {} (grant \
         \"{scheme}://{}:{}\" to allow it)",
        target.host,
        first.ip(),
        grant.granted_by,
        HostLiteral(first.ip()),
        target.port,
    ));
    Err(Error::DestinationIpProhibited)
}

/// An IP address as a URL's host: IPv6 in brackets.
struct HostLiteral(IpAddr);

impl std::fmt::Display for HostLiteral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(ip) => write!(f, "{ip}"),
            IpAddr::V6(ip) => write!(f, "[{ip}]"),
        }
    }
}

fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>> {
    use rustls::pki_types::ServerName;
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(ServerName::from(ip)),
        Err(_) => ServerName::try_from(host.to_owned()).map_err(|_| Error::HttpRequestUriInvalid),
    }
}

/// One TLS client configuration per process, for every outbound HTTPS connection Spool
/// makes (plugins' requests, the trace exporter): the webpki root certificates, ring's
/// crypto. `None` if rustls cannot build one.
pub(crate) fn tls_client_config() -> Option<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .ok()
                .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
        })
        .clone()
}

/// [`tls_client_config`], or the error a plugin's request gets without one.
fn tls_config() -> Result<Arc<rustls::ClientConfig>> {
    tls_client_config().ok_or_else(|| Error::InternalError(Some("no TLS configuration".to_owned())))
}

/// A request body that, dropped before its end (the server answered early, or the request
/// failed), is read to its end and discarded, so that the plugin writing it sees the request's
/// outcome rather than a broken stream. The draining task reads only from the store's channel:
/// it ends when the plugin finishes the body or when the store, holding the channel's other end,
/// is dropped.
struct Drained {
    body: Option<WasiBody>,
    max: u64,
}

impl Body for Drained {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>>>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            self.body = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        if let Some(body) = self.body.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(drain(body, self.max, Duration::from_secs(60)));
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    Sent,
    Received,
}

/// A body over its limit.
#[derive(Debug)]
struct OverLimit {
    direction: Direction,
    max: u64,
}

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.direction {
            Direction::Sent => write!(
                f,
                "the request body is over the limit (http.max_request_bytes) of {} bytes",
                self.max
            ),
            Direction::Received => write!(
                f,
                "the response body is over the limit (http.max_response_bytes) of {} bytes",
                self.max
            ),
        }
    }
}

impl std::error::Error for OverLimit {}

/// A body that counts its bytes into the attempt's meter and fails past its limit; a
/// response body also holds the request's in-flight permit until it ends or is dropped.
struct Metered<B> {
    inner: B,
    meter: Arc<Meter>,
    direction: Direction,
    counted: u64,
    max: u64,
    permit: Option<OwnedSemaphorePermit>,
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Error>,
{
    type Data = Bytes;
    type Error = MeteredError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, MeteredError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    this.counted += n;
                    let counter = match this.direction {
                        Direction::Sent => &this.meter.sent,
                        Direction::Received => &this.meter.received,
                    };
                    counter.fetch_add(n, Ordering::Relaxed);
                    if this.counted > this.max {
                        this.permit = None;
                        return Poll::Ready(Some(Err(MeteredError::Over(OverLimit {
                            direction: this.direction,
                            max: this.max,
                        }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.permit = None;
                Poll::Ready(Some(Err(MeteredError::Inner(e.into()))))
            }
            Poll::Ready(None) => {
                this.permit = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A metered body's error: its own, or the limit.
#[derive(Debug)]
enum MeteredError {
    Inner(Error),
    Over(OverLimit),
}

impl std::fmt::Display for MeteredError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MeteredError::Inner(e) => write!(f, "{e:?}"),
            MeteredError::Over(over) => over.fmt(f),
        }
    }
}

impl std::error::Error for MeteredError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MeteredError::Inner(_) => None,
            MeteredError::Over(over) => Some(over),
        }
    }
}

impl From<MeteredError> for Error {
    fn from(e: MeteredError) -> Self {
        match e {
            MeteredError::Inner(e) => e,
            MeteredError::Over(over) => match over.direction {
                Direction::Sent => Error::HttpRequestBodySize(Some(over.max)),
                Direction::Received => Error::HttpResponseBodySize(Some(over.max)),
            },
        }
    }
}
