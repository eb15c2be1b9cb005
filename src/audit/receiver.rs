//! Owns the audit webhook receiver: `POST /audit/v1/events` (an `audit.k8s.io/v1` EventList) over
//! TLS, authenticated by a bearer token from a token file or a client certificate signed by a
//! given CA (anything else: 401), queueing each successful write into a bounded channel.
//!
//! It never makes the API server wait: a batch is parsed and answered in the request, and a full
//! queue drops the write and counts it (`reckon_audit_events_dropped_total`) instead of applying
//! back-pressure — the webhook backend blocks its own batches on a slow sink, and a stalled
//! audit backend is the API server's problem, not reckon's to create. TLS because the v1.20
//! webhook backend sends its kubeconfig's bearer token only over https (measured: none reached a
//! plain-http sink).

use super::AuditError;
use super::model::{AuditRecord, EventList};
use crate::api::auth::Tokens;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// The receiver's one route.
pub const ROUTE: &str = "/audit/v1/events";

/// A batch is at most `--audit-webhook-batch-max-size` (400 by default) events; at the Request
/// level with bodies a few KiB each that stays well under 16 MiB. Only authenticated senders get
/// their body read (the credential is checked first), and at most four at once: 64 MiB in the
/// worst case, from senders the operator configured.
const BODY_LIMITS: crate::listen::BodyLimits = crate::listen::BodyLimits {
    max_bytes: 16 << 20,
    in_flight: 4,
    timeout: std::time::Duration::from_secs(30),
};

/// Whether the TLS connection presented a client certificate the CA verified.
#[derive(Clone, Copy, Debug)]
struct ClientCert(bool);

#[derive(Clone)]
struct Receiver {
    tokens: Arc<Tokens>,
    queue: mpsc::Sender<AuditRecord>,
}

/// How the receiver authenticates and where it queues.
pub struct ReceiverConfig {
    pub tokens: Arc<Tokens>,
    pub queue: mpsc::Sender<AuditRecord>,
}

/// The router of the receiver (also used by tests without TLS, with the client-certificate flag
/// given per request).
fn router(config: ReceiverConfig) -> Router {
    let state = Receiver {
        tokens: config.tokens,
        queue: config.queue,
    };
    let routes = Router::new().route(ROUTE, post(receive)).with_state(state);
    crate::listen::body_limits(routes, BODY_LIMITS)
}

async fn receive(
    State(state): State<Receiver>,
    cert: Option<axum::Extension<ClientCert>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let by_cert = cert.is_some_and(|c| c.0.0);
    let by_token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::api::auth::bearer)
        .is_some_and(|t| state.tokens.check(t).is_some());
    if !(by_cert || by_token) {
        crate::metrics::METRICS.audit_rejected.inc();
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"reckon-audit\"")],
            "the audit receiver needs the webhook's bearer token or client certificate\n",
        )
            .into_response();
    }
    // Read only now that the sender is known: an anonymous client never gets a byte buffered.
    let body = match axum::body::to_bytes(body, BODY_LIMITS.max_bytes).await {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("reading the EventList: {e}\n"),
            )
                .into_response();
        }
    };
    let list: EventList = match serde_json::from_slice(&body) {
        Ok(l) => l,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not an audit.k8s.io/v1 EventList: {e}\n"),
            )
                .into_response();
        }
    };
    if list
        .api_version
        .as_deref()
        .is_some_and(|v| v != "audit.k8s.io/v1")
    {
        return (
            StatusCode::BAD_REQUEST,
            "only audit.k8s.io/v1 is read (set --audit-webhook-version=audit.k8s.io/v1)\n",
        )
            .into_response();
    }
    for item in list.items {
        let Ok(record) = AuditRecord::from_event(item) else {
            continue;
        };
        match state.queue.try_send(record) {
            Ok(()) => {
                crate::metrics::METRICS.audit_received.inc();
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                crate::metrics::METRICS.audit_dropped.inc();
            }
            // The attributor stopped (the agent is shutting down): nothing to keep them for.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        };
    }
    StatusCode::OK.into_response()
}

/// The serving certificate chain and key, and optionally the CA that client certificates must
/// chain to.
pub fn tls_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<rustls::ServerConfig, AuditError> {
    crate::tls::server_config(cert, key, client_ca).map_err(|e| AuditError::Tls {
        path: e.path,
        reason: e.reason,
    })
}

/// Serves the receiver over TLS on `listener` until `stop` turns true, under `limits` (the TLS
/// handshake counts against the header deadline).
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: rustls::ServerConfig,
    config: ReceiverConfig,
    limits: crate::listen::ListenLimits,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let app = router(config);
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    crate::listen::serve_with(listener, limits, shutdown, move |stream| {
        let acceptor = acceptor.clone();
        let app = app.clone();
        async move {
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(error = %e, "audit receiver: TLS handshake failed");
                    return None;
                }
            };
            let verified = tls.get_ref().1.peer_certificates().is_some();
            Some((tls, app.layer(axum::Extension(ClientCert(verified)))))
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn receiver(capacity: usize) -> (Router, mpsc::Receiver<AuditRecord>) {
        let mut tokens = Tokens::default();
        tokens.add(
            "webhook-token-0123456789",
            Some("apiserver"),
            crate::api::auth::Role::Read,
        );
        let (tx, rx) = mpsc::channel(capacity);
        (
            router(ReceiverConfig {
                tokens: Arc::new(tokens),
                queue: tx,
            }),
            rx,
        )
    }

    fn post(token: Option<&str>, cert: bool, body: &str) -> Request<Body> {
        let mut r = Request::post(ROUTE);
        if let Some(t) = token {
            r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let mut req = r.body(Body::from(body.to_string())).unwrap();
        req.extensions_mut().insert(ClientCert(cert));
        req
    }

    #[tokio::test]
    async fn credentials_are_required_and_a_full_queue_drops_and_counts() {
        let (app, mut rx) = receiver(1);
        let batch = super::super::model::tests::SCALE;
        let status = |r: Response| r.status();
        let r = app.clone().oneshot(post(None, false, batch)).await.unwrap();
        assert_eq!(status(r), StatusCode::UNAUTHORIZED);
        let r = app
            .clone()
            .oneshot(post(Some("wrong-token-0123456789"), false, batch))
            .await
            .unwrap();
        assert_eq!(status(r), StatusCode::UNAUTHORIZED);
        assert!(
            rx.try_recv().is_err(),
            "nothing queued from refused requests"
        );

        let dropped = crate::metrics::METRICS.audit_dropped.get();
        let r = app
            .clone()
            .oneshot(post(Some("webhook-token-0123456789"), false, batch))
            .await
            .unwrap();
        assert_eq!(status(r), StatusCode::OK);
        // Two writes in the batch, room for one: the second is dropped, not waited for.
        assert_eq!(rx.try_recv().unwrap().username, "alice");
        assert!(rx.try_recv().is_err());
        assert!(crate::metrics::METRICS.audit_dropped.get() > dropped);

        // A verified client certificate is enough on its own.
        let r = app.clone().oneshot(post(None, true, batch)).await.unwrap();
        assert_eq!(status(r), StatusCode::OK);
        let r = app
            .oneshot(post(
                Some("webhook-token-0123456789"),
                false,
                "{\"items\": 5}",
            ))
            .await
            .unwrap();
        assert_eq!(status(r), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn an_unauthenticated_body_is_never_read() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (app, _rx) = receiver(1);
        let read = Arc::new(AtomicBool::new(false));
        let noted = read.clone();
        let body = Body::from_stream(futures::stream::poll_fn(move |_| {
            noted.store(true, Ordering::SeqCst);
            std::task::Poll::<Option<Result<axum::body::Bytes, std::io::Error>>>::Ready(None)
        }));
        let mut req = Request::post(ROUTE)
            .header(header::AUTHORIZATION, "Bearer wrong-token-0123456789")
            .body(body)
            .unwrap();
        req.extensions_mut().insert(ClientCert(false));
        let r = app.oneshot(req).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(
            !read.load(Ordering::SeqCst),
            "the body was read before the token was checked"
        );
    }
}
