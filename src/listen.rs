//! Owns how reckon serves HTTP on a listener it opened (`--listen`, the standby's listener and
//! `--audit-listen`): a cap on open connections, a deadline for a request's headers, the bounds
//! every route group puts on bodies (a limit enforced while the body streams in, a deadline for
//! reading it, how many bodies are read at once), and a graceful stop.
//!
//! Why not `axum::serve`: it takes every connection it is offered and sets no header deadline,
//! so a few hundred stalled clients hold as many tasks and buffers as they like before any
//! credential is looked at. Here a connection beyond the cap waits in the kernel's accept queue
//! (it costs the process nothing), a client that does not finish its headers in time is
//! disconnected by hyper, and what a route may buffer is bounded per route group by tower layers
//! ([`body_limits`]).

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceBuilder;

/// Bounds of one listener. The defaults hold for the agent's listener and the audit receiver;
/// `reckon run` lets the operator change them (`docs/configuration.md`, "Listeners").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenLimits {
    /// Connections served at once; more wait in the kernel's accept queue until one closes.
    pub max_connections: usize,
    /// How long a client has to send a request's headers (also how long an idle keep-alive
    /// connection is kept).
    pub header_timeout: Duration,
    /// How long a client has to send a request's body, counted from its headers.
    pub body_timeout: Duration,
}

impl Default for ListenLimits {
    fn default() -> Self {
        ListenLimits {
            // Well above what probes, scrapers, API clients and Git hosts open together; low
            // enough that the per-connection cost (a task and hyper's read buffer, a few KiB
            // while no body is read) stays a few MiB.
            max_connections: 1024,
            // A request head is a few hundred bytes; 10 s allows a very slow client and keeps a
            // slowloris from holding a connection for long.
            header_timeout: Duration::from_secs(10),
            // GitHub gives up on a webhook after 10 s; an audit batch of 16 MiB on loopback or a
            // cluster network takes well under a second.
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// How one group of routes reads bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimits {
    /// The largest body accepted: a larger declared `Content-Length` is refused (413) before
    /// anything is read, and a body that grows past it while streaming fails as it does.
    pub max_bytes: usize,
    /// Requests of this group handled at once; one more is refused at once (503), before its
    /// body is read, so memory held by bodies is at most `max_bytes * in_flight`.
    pub in_flight: usize,
    /// How long one request of this group may take, its body included (408 after).
    pub timeout: Duration,
}

/// The layers that put `limits` on a group of routes: outermost the refusal of a request beyond
/// `in_flight` (503, `Retry-After`), then the body limit (413), then the deadline (408).
pub fn body_limits(router: Router, limits: BodyLimits) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(axum::http::header::RETRY_AFTER, "1")],
                    "too many requests in flight; retry later\n",
                )
                    .into_response()
            }))
            .load_shed()
            .concurrency_limit(limits.in_flight)
            .layer(tower_http::limit::RequestBodyLimitLayer::new(
                limits.max_bytes,
            ))
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                limits.timeout,
            )),
    )
}

/// Serves `app` on `listener` over plain HTTP/1.1 until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ListenLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve_with(listener, limits, shutdown, move |stream| {
        let app = app.clone();
        async move { Some((stream, app)) }
    })
    .await
}

/// Serves `app` on `listener` over TLS (HTTP/1.1) until `shutdown` completes; the handshake
/// counts against the header deadline, and a failed one drops the connection.
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    tls: Arc<rustls::ServerConfig>,
    limits: ListenLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    serve_with(listener, limits, shutdown, move |stream| {
        let acceptor = acceptor.clone();
        let app = app.clone();
        async move {
            match acceptor.accept(stream).await {
                Ok(tls) => Some((tls, app)),
                Err(e) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    None
                }
            }
        }
    })
    .await
}

/// Serves on `listener` until `shutdown` completes: `accept` turns a TCP connection into the
/// stream to speak HTTP/1.1 on and the router to serve it with (a TLS handshake, a per-connection
/// extension), or `None` to drop it. It runs in the connection's own task, under the header
/// deadline, so a slow handshake holds up nobody else.
///
/// On shutdown the listener is closed at once; connections finish their request in flight
/// (at most the body deadline) and are closed.
pub async fn serve_with<A, Fut, Io>(
    listener: TcpListener,
    limits: ListenLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    accept: A,
) where
    A: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<(Io, Router)>> + Send + 'static,
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // A slot first: beyond the cap, connections wait in the accept queue, not in memory.
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let handshake = accept(stream);
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(Some((io, app))) = tokio::time::timeout(limits.header_timeout, handshake).await
            else {
                return;
            };
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                // Not the `Ref` itself: it is not Send, and the arm awaits.
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(limits.body_timeout, conn).await;
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Wait for the connections (each holds a slot) so that a caller that awaits this knows
    // nothing is served any more.
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(
        limits.body_timeout + Duration::from_secs(1),
        slots.acquire_many(all),
    )
    .await;
}
