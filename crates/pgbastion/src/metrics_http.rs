//! The metrics and health endpoint (`[metrics] address`): `/metrics` and `/vars` (the same
//! Prometheus text), `/health` (200 while the process runs) and `/ready` (200 when the proxy
//! listens, its configuration is loaded, it is not draining and a backend answers; else 503).
//!
//! HTTP/1.1 by hyper, which the binary already links (reqwest's client uses it): a parser
//! that has met hostile input for years beats a hand-written one. What one peer can hold is
//! bounded: the request head (16 KiB, and 5 s to send it), the connection's life (30 s), and
//! the connections at once (64; more are closed at accept).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use pgbastion_proxy::Metrics;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;
/// The longest request head read.
const MAX_HEAD: usize = 16 * 1024;
/// Time to send a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection is kept (a scraper reconnects after it).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// How long to wait after a failed accept (out of descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The media type of the exposition `prometheus-client` writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The endpoint, served by a task of its own.
#[derive(Debug)]
pub struct Endpoint {
    /// A duplicate of its listening socket, for an upgrade to pass on.
    pub socket: OwnedFd,
    task: JoinHandle<()>,
}

impl Endpoint {
    /// Serves `metrics` on `inherited` (a socket taken over from the process this one
    /// replaces), or else on a new socket bound to `address`.
    pub async fn start(
        address: SocketAddr,
        inherited: Option<std::net::TcpListener>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let cannot =
            |error| anyhow::anyhow!("cannot listen on {address} ([metrics] address): {error}");
        let listener = match inherited {
            Some(socket) => socket
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(socket)),
            None => TcpListener::bind(address).await,
        }
        .map_err(cannot)?;
        let socket = listener.as_fd().try_clone_to_owned().map_err(cannot)?;
        tracing::info!(%address, "metrics endpoint listening (/metrics, /vars, /health, /ready)");
        let task = tokio::spawn(serve(listener, metrics));
        Ok(Self { socket, task })
    }

    /// Stops serving (after an upgrade the new process answers on the same socket).
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// Serves the endpoint until the process ends.
async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Over the limit: closed at once, and the scraper retries.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            serve_connection(stream, metrics).await;
            drop(slot);
        });
    }
}

async fn serve_connection(stream: TcpStream, metrics: Arc<Metrics>) {
    let service = service_fn(move |request| {
        let metrics = metrics.clone();
        async move { Ok::<_, Infallible>(respond(&request, &metrics).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        // One request per connection: a peer that keeps a connection alive must not hold a
        // slot (of MAX_CONNECTIONS) beyond one answer.
        .keep_alive(false)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service);
    // Errors (a malformed request, a peer gone) end only this connection; hyper answers
    // what can be answered (400, 431) itself.
    let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
}

async fn respond(request: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if !matches!(path, "/metrics" | "/vars" | "/health" | "/ready") {
        return text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /health or /ready\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/health" => text(StatusCode::OK, "ok\n"),
        "/ready" => match metrics.readiness.check().await {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: {why}\n"),
            ),
        },
        _ => match metrics.encode() {
            Ok(exposition) => {
                let mut response = Response::new(Full::new(Bytes::from(exposition)));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
                response
            }
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the metrics\n",
            ),
        },
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
