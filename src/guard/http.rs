//! The guard's `/metrics` server: `GET /metrics` on a TCP listener (loopback by default), on
//! the guard's own single-threaded tokio runtime, bounded against slow and greedy clients.
//!
//! hyper 1 (http1 only, with hyper-util's tokio glue) rather than axum: one route needs no
//! router, and axum would add tower and its layers on top of the same hyper for nothing. hyper
//! gives what a public port needs: a header read timeout, a bounded header buffer, and no
//! body read unless we ask for one.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    ACCEPT, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, TRANSFER_ENCODING,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::metrics::Metrics;

/// The content type of the OpenMetrics text format, what Prometheus asks for first.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text format, for everyone else (curl, `promtool`).
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Connections served at once; more are closed as soon as they are accepted. Prometheus
/// needs one per server scraping; the rest is room for a person with curl.
pub const MAX_CONNECTIONS: usize = 16;
/// A client must send its request headers within this (a slow-loris holds a slot no longer).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer than this, kept alive or not (Prometheus simply reconnects).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// hyper's smallest read buffer: the request line and headers must fit.
const MAX_HEADER_BYTES: usize = 8192;

/// `--metrics`/`metrics =` cannot be listened on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Not an `IP:PORT`.
    #[error("invalid metrics address '{addr}': expected IP:PORT (127.0.0.1:9731, [::1]:9731)")]
    BadAddress {
        /// The address given.
        addr: String,
    },
    /// The kernel refused to bind or listen.
    #[error("listen on {addr}: {source}")]
    Bind {
        /// The address given.
        addr: String,
        /// Why.
        source: io::Error,
    },
}

/// Binds the metrics listener (non-blocking, ready for `tokio::net::TcpListener::from_std`):
/// `addr` is `IP:PORT`; a host name or a missing port is a [`HttpError::BadAddress`].
pub fn bind(addr: &str) -> Result<std::net::TcpListener, HttpError> {
    let sock: SocketAddr =
        addr.parse().map_err(|_| HttpError::BadAddress { addr: addr.to_string() })?;
    let bind = |source| HttpError::Bind { addr: addr.to_string(), source };
    let listener = std::net::TcpListener::bind(sock).map_err(bind)?;
    listener.set_nonblocking(true).map_err(bind)?;
    Ok(listener)
}

/// Serves `GET /metrics` until `shutdown` resolves; then stops accepting and drops the open
/// connections. Must run on a tokio runtime with IO and time enabled (the guard's
/// current-thread runtime).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    super::serve::each(listener, MAX_CONNECTIONS, shutdown, move |stream| {
        let metrics = Arc::clone(&metrics);
        async move {
            let service = service_fn(move |req| {
                let metrics = Arc::clone(&metrics);
                async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
        }
    })
    .await
}

/// The media type to answer with: OpenMetrics when the client's `Accept` prefers it (what
/// Prometheus sends: OpenMetrics first, text/plain 0.0.4 at a lower `q`), else the Prometheus
/// text format, which every client reads.
pub fn negotiate(accept: Option<&str>) -> &'static str {
    let (mut om, mut text) = (0.0f32, 0.0f32);
    for item in accept.unwrap_or("").split(',') {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, v)| v.trim().parse().unwrap_or(0.0));
        match media.as_str() {
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    if om > 0.0 && om >= text { OPENMETRICS } else { PROMETHEUS_TEXT }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn respond(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    // No request has a body here: one announced is refused, unread, and the connection closed
    // (hyper would otherwise drain it to reuse the connection).
    let h = req.headers();
    let has_body = h.contains_key(TRANSFER_ENCODING)
        || h.get(CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        let mut r = plain(StatusCode::PAYLOAD_TOO_LARGE, "no request bodies\n");
        r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    if req.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found: the guard serves /metrics\n");
    }
    if req.method() != Method::GET {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    let kind = negotiate(h.get(ACCEPT).and_then(|v| v.to_str().ok()));
    let mut body = String::with_capacity(16 << 10);
    let encoded = if kind == OPENMETRICS {
        metrics.encode(&mut body)
    } else {
        metrics.encode_prometheus(&mut body)
    };
    if encoded.is_err() {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "encoding the metrics failed\n");
    }
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_13_negotiation_follows_prometheus_accept() {
        // Prometheus 2.x/3.x scrape_protocols default, as sent.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                    version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(prom)), OPENMETRICS);
        assert_eq!(negotiate(None), PROMETHEUS_TEXT);
        assert_eq!(negotiate(Some("*/*")), PROMETHEUS_TEXT);
        assert_eq!(negotiate(Some("text/plain;version=0.0.4")), PROMETHEUS_TEXT);
        assert_eq!(negotiate(Some("application/openmetrics-text;q=0,text/plain")), PROMETHEUS_TEXT);
        assert_eq!(negotiate(Some("text/plain;q=0.5,application/openmetrics-text")), OPENMETRICS);
    }

    #[test]
    fn issue_13_a_bad_address_is_a_typed_error() {
        for bad in ["localhost:9731", "127.0.0.1", "", "1.2.3.4:99999"] {
            assert!(matches!(bind(bad), Err(HttpError::BadAddress { .. })), "{bad}");
        }
        let l = bind("127.0.0.1:0").unwrap();
        let taken = l.local_addr().unwrap().to_string();
        assert!(matches!(bind(&taken), Err(HttpError::Bind { .. })));
    }
}
