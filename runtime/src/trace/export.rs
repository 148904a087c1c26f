//! The OTLP/HTTP exporter: attempt spans, batched, sent as JSON to a collector's
//! `/v1/traces`.
//!
//! The worker hands each finished [`AttemptSpan`] to a [`Tracer`] (a bounded channel, so a
//! slow or absent collector never holds an attempt up); one task sends whatever has
//! accumulated in one request, on a fresh HTTP/1.1 connection (TLS for `https`). A span the
//! collector refuses or never gets is dropped with a warning: telemetry, not a job.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Uri};
use http_body_util::{BodyExt as _, Full};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use wasmtime_wasi_http::io::TokioIo;

use super::span::{AttemptSpan, export_request};

/// Spans waiting to be sent at most; more are dropped (with a warning) until the exporter
/// catches up.
const QUEUE: usize = 8192;
/// Spans in one request at most.
const BATCH: usize = 512;
/// How long one export request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an exporter's settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// The endpoint is not an `http` or `https` URL with a host.
    #[error("bad OTLP endpoint `{endpoint}`: {why}")]
    Endpoint {
        /// The endpoint given.
        endpoint: String,
        /// What is wrong with it.
        why: String,
    },
    /// A header's name or value cannot be sent.
    #[error("bad OTLP header `{name}`: {why}")]
    Header {
        /// The header's name.
        name: String,
        /// What is wrong with it.
        why: String,
    },
}

/// Where spans go: an OTLP/HTTP collector's base URL (`http://127.0.0.1:4318`); requests go to
/// its path plus `/v1/traces`, as OpenTelemetry's `OTEL_EXPORTER_OTLP_ENDPOINT` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    url: String,
    https: bool,
    host: String,
    port: u16,
    path: String,
}

impl std::str::FromStr for Endpoint {
    type Err = ExportError;

    fn from_str(url: &str) -> Result<Endpoint, ExportError> {
        let refuse = |why: &str| ExportError::Endpoint {
            endpoint: url.to_owned(),
            why: why.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|e| refuse(&format!("{e}")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(refuse("the scheme must be http or https")),
        };
        let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
            return Err(refuse("no host"));
        };
        if uri.query().is_some() {
            return Err(refuse("a query is not allowed"));
        }
        let base = uri.path().trim_end_matches('/');
        Ok(Endpoint {
            url: url.to_owned(),
            https,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
            path: format!("{base}/v1/traces"),
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl Endpoint {
    /// The URL spans are posted to.
    pub fn traces_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority(), self.path)
    }

    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{host}:{}", self.port)
    }
}

/// What an [`OtlpExporter`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpOptions {
    /// The collector.
    pub endpoint: Endpoint,
    /// Headers sent with every request (an API key, say).
    pub headers: Vec<(String, String)>,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

/// Hands finished spans to an exporter; cheap to clone.
#[derive(Debug, Clone)]
pub struct Tracer {
    tx: mpsc::Sender<AttemptSpan>,
}

impl Tracer {
    /// Queue a span for export; dropped, with a warning, if the exporter is far behind or
    /// stopped.
    pub fn export(&self, span: AttemptSpan) {
        if let Err(e) = self.tx.try_send(span) {
            tracing::warn!(error = %e, "OTLP exporter queue unavailable: span dropped");
        }
    }
}

/// A running OTLP/HTTP exporter: [`tracer`](OtlpExporter::tracer) feeds it,
/// [`shutdown`](OtlpExporter::shutdown) sends what is left and stops it.
pub struct OtlpExporter {
    tracer: Tracer,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl OtlpExporter {
    /// Start exporting to `options.endpoint` (on the current Tokio runtime). Refuses a header
    /// that cannot be sent.
    pub fn start(options: OtlpOptions) -> Result<OtlpExporter, ExportError> {
        let headers = options
            .headers
            .iter()
            .map(|(name, value)| header(name, value))
            .collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let (stop, stopped) = oneshot::channel();
        let sender = Sender {
            endpoint: options.endpoint,
            headers,
            service_name: options.service_name,
        };
        Ok(OtlpExporter {
            tracer: Tracer { tx },
            stop,
            task: tokio::spawn(sender.run(rx, stopped)),
        })
    }

    /// A handle that queues spans for this exporter.
    pub fn tracer(&self) -> Tracer {
        self.tracer.clone()
    }

    /// Send the spans still queued (waiting at most `limit`), then stop.
    pub async fn shutdown(self, limit: Duration) {
        let _ = self.stop.send(());
        if tokio::time::timeout(limit, self.task).await.is_err() {
            tracing::warn!("OTLP exporter did not finish within {limit:?}: spans dropped");
        }
    }
}

/// Check one configured header.
pub fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), ExportError> {
    let refuse = |why: String| ExportError::Header {
        name: name.to_owned(),
        why,
    };
    let name_ok = HeaderName::try_from(name).map_err(|e| refuse(e.to_string()))?;
    let value_ok = HeaderValue::try_from(value)
        .map_err(|_| refuse("the value has characters a header cannot carry".to_owned()))?;
    Ok((name_ok, value_ok))
}

struct Sender {
    endpoint: Endpoint,
    headers: Vec<(HeaderName, HeaderValue)>,
    service_name: String,
}

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<AttemptSpan>, mut stop: oneshot::Receiver<()>) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let last = tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => n == 0,
                _ = &mut stop => true,
            };
            if last {
                while let Ok(span) = rx.try_recv() {
                    batch.push(span);
                }
            }
            for chunk in batch.chunks(BATCH) {
                self.send(chunk).await;
            }
            batch.clear();
            if last {
                return;
            }
        }
    }

    async fn send(&self, spans: &[AttemptSpan]) {
        if spans.is_empty() {
            return;
        }
        let body = export_request(&self.service_name, spans).to_string();
        let result = tokio::time::timeout(REQUEST_TIMEOUT, self.post(body))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")));
        if let Err(e) = result {
            tracing::warn!(
                endpoint = %self.endpoint.traces_url(),
                spans = spans.len(),
                error = %e,
                "OTLP export failed: spans dropped"
            );
        }
    }

    async fn post(&self, body: String) -> Result<(), String> {
        let e = &self.endpoint;
        let tcp = TcpStream::connect((e.host.as_str(), e.port))
            .await
            .map_err(|err| format!("cannot connect to {}: {err}", e.authority()))?;
        let io: Box<dyn Io> = if e.https {
            let name = rustls::pki_types::ServerName::try_from(e.host.clone())
                .map_err(|err| format!("bad TLS name {}: {err}", e.host))?;
            let config = crate::sandbox::tls_client_config()
                .ok_or_else(|| "no TLS configuration".to_owned())?;
            let tls = tokio_rustls::TlsConnector::from(config);
            Box::new(
                tls.connect(name, tcp)
                    .await
                    .map_err(|err| format!("TLS with {} failed: {err}", e.authority()))?,
            )
        } else {
            Box::new(tcp)
        };
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|err| err.to_string())?;
        let conn = tokio::spawn(conn);
        let mut request = http::Request::post(e.path.as_str())
            .header(http::header::HOST, e.authority())
            .header(http::header::CONTENT_TYPE, "application/json");
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|err| err.to_string())?;
        let response = send
            .send_request(request)
            .await
            .map_err(|err| err.to_string())?;
        let status = response.status();
        let answer = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        conn.abort();
        if status.is_success() {
            Ok(())
        } else {
            let text = String::from_utf8_lossy(&answer);
            Err(format!(
                "the collector answered {status}: {}",
                text.chars().take(200).collect::<String>()
            ))
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_base_urls_and_bad_ones_are_refused() {
        let e: Endpoint = "http://127.0.0.1:4318".parse().unwrap();
        assert_eq!(e.traces_url(), "http://127.0.0.1:4318/v1/traces");
        let e: Endpoint = "https://otel.example.com/base/".parse().unwrap();
        assert_eq!(
            e.traces_url(),
            "https://otel.example.com:443/base/v1/traces"
        );
        for bad in ["127.0.0.1:4318", "ftp://x", "http://", "http://h/x?q=1"] {
            let e = bad.parse::<Endpoint>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert!(header("x-api-key", "secret").is_ok());
        assert!(header("bad name", "v").is_err());
        assert!(header("x", "line\nbreak").is_err());
    }
}
