//! Owns the audit webhook receiver: `POST /audit/v1/events` (an `audit.k8s.io/v1` EventList) over
//! TLS, authenticated by a bearer token from a token file or a client certificate signed by a
//! given CA that names one of the configured identities (anything else: 401), rate-limited per
//! sender (429 past the rate), queueing each successful write with its sender into a bounded
//! channel.
//!
//! It never makes the API server wait: a batch is parsed and answered in the request, and a full
//! queue drops the write and counts it (`reckon_audit_events_dropped_total`) instead of applying
//! back-pressure — the webhook backend blocks its own batches on a slow sink, and a stalled
//! audit backend is the API server's problem, not reckon's to create. TLS because the v1.20
//! webhook backend sends its kubeconfig's bearer token only over https (measured: none reached a
//! plain-http sink).
//!
//! A client certificate alone proves little: with the cluster's CA as `--audit-client-ca`, every
//! user and kubelet holds one. So a certificate counts only when its subject common name or a
//! subject alternative name is on `--audit-client-identity`.

use super::AuditError;
use super::buffer::Sender;
use super::model::{AuditRecord, EventList};
use crate::api::auth::Tokens;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use governor::clock::Clock;
use std::num::NonZeroU32;
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

/// The identity a verified client certificate named from the allowlist (`None`: no certificate,
/// or one naming nobody allowed).
#[derive(Clone, Debug)]
struct ClientCert(Option<Sender>);

/// How many writes one sender may deliver: a sustained rate and a burst (a webhook batch is at
/// most `--audit-webhook-batch-max-size`, 400 by default, so the burst must hold one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderRate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Default for SenderRate {
    /// A few writes per change by hand are the norm under the shipped policy; 200 a second
    /// with a burst of ten default batches leaves room for automation and stops a flood.
    fn default() -> SenderRate {
        SenderRate {
            per_second: NonZeroU32::new(200).expect("non-zero"),
            burst: NonZeroU32::new(4_000).expect("non-zero"),
        }
    }
}

type Limiter = governor::DefaultKeyedRateLimiter<Sender>;

#[derive(Clone)]
struct Receiver {
    tokens: Arc<Tokens>,
    queue: mpsc::Sender<(Sender, AuditRecord)>,
    limiter: Arc<Limiter>,
}

/// How the receiver authenticates, limits and where it queues.
pub struct ReceiverConfig {
    pub tokens: Arc<Tokens>,
    pub queue: mpsc::Sender<(Sender, AuditRecord)>,
    pub rate: SenderRate,
    /// Names a client certificate must carry (subject CN or a SAN) to count.
    pub client_identities: Vec<String>,
}

/// The router of the receiver (also used by tests without TLS, with the client certificate's
/// identity given per request).
fn router(
    tokens: Arc<Tokens>,
    queue: mpsc::Sender<(Sender, AuditRecord)>,
    rate: SenderRate,
) -> Router {
    let quota = governor::Quota::per_second(rate.per_second).allow_burst(rate.burst);
    let state = Receiver {
        tokens,
        queue,
        limiter: Arc::new(governor::RateLimiter::keyed(quota)),
    };
    let routes = Router::new().route(ROUTE, post(receive)).with_state(state);
    crate::listen::body_limits(routes, BODY_LIMITS)
}

/// Who sent the request: the allowed identity of its client certificate, else the name of its
/// bearer token; `None`: neither.
fn sender_of(state: &Receiver, cert: Option<&ClientCert>, headers: &HeaderMap) -> Option<Sender> {
    if let Some(ClientCert(Some(identity))) = cert {
        return Some(format!("cert:{identity}").into());
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::api::auth::bearer)?;
    let identity = state.tokens.check(token)?;
    let name = identity
        .actor
        .strip_prefix("api:")
        .unwrap_or(&identity.actor);
    Some(format!("token:{name}").into())
}

/// The first of `names` (a certificate's common names and alternative names) on the allowlist.
fn allowed_identity(names: &[String], allowed: &[String]) -> Option<String> {
    names.iter().find(|n| allowed.contains(n)).cloned()
}

/// The subject common names and the DNS, URI and e-mail alternative names of a certificate.
fn names_of(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        use x509_parser::extensions::GeneralName;
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) | GeneralName::URI(n) | GeneralName::RFC822Name(n) => {
                    names.push(n.to_string())
                }
                _ => {}
            }
        }
    }
    names
}

/// 429 with the time until the sender's batch fits, or 413 for a batch no wait makes fit.
fn throttled(limiter: &Limiter, sender: &Sender, n: NonZeroU32) -> Option<Response> {
    let refused = match limiter.check_key_n(sender, n) {
        Ok(Ok(())) => return None,
        Ok(Err(not_until)) => {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, (wait.as_secs() + 1).to_string())],
                format!("{sender} is over its rate (--audit-sender-rate): retry later\n"),
            )
                .into_response()
        }
        Err(_) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a batch of {n} writes is more than {sender} may send at once \
                 (--audit-sender-burst)\n"
            ),
        )
            .into_response(),
    };
    crate::metrics::METRICS
        .audit_throttled
        .inc_by(u64::from(n.get()));
    Some(refused)
}

async fn receive(
    State(state): State<Receiver>,
    cert: Option<axum::Extension<ClientCert>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let Some(sender) = sender_of(&state, cert.as_ref().map(|c| &c.0), &headers) else {
        crate::metrics::METRICS.audit_rejected.inc();
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"reckon-audit\"")],
            "the audit receiver needs the webhook's bearer token or an allowed client \
             certificate\n",
        )
            .into_response();
    };
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
    let records: Vec<AuditRecord> = list
        .items
        .into_iter()
        .filter_map(|item| AuditRecord::from_event(item).ok())
        .collect();
    let n = u32::try_from(records.len()).unwrap_or(u32::MAX);
    if let Some(n) = NonZeroU32::new(n)
        && let Some(refused) = throttled(&state.limiter, &sender, n)
    {
        return refused;
    }
    for record in records {
        match state.queue.try_send((sender.clone(), record)) {
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
    let allowed = Arc::new(config.client_identities);
    let app = router(config.tokens, config.queue, config.rate);
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    crate::listen::serve_with(listener, limits, shutdown, move |stream| {
        let acceptor = acceptor.clone();
        let app = app.clone();
        let allowed = allowed.clone();
        async move {
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(error = %e, "audit receiver: TLS handshake failed");
                    return None;
                }
            };
            let names = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|der| names_of(der));
            let identity = names
                .as_deref()
                .and_then(|names| allowed_identity(names, &allowed));
            if let (Some(names), None) = (&names, &identity) {
                tracing::warn!(
                    ?names,
                    "audit receiver: a client certificate naming no --audit-client-identity"
                );
            }
            let cert = ClientCert(identity.map(Sender::from));
            Some((tls, app.layer(axum::Extension(cert))))
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

    type Queued = mpsc::Receiver<(Sender, AuditRecord)>;

    fn receiver_at(capacity: usize, rate: SenderRate) -> (Router, Queued) {
        let mut tokens = Tokens::default();
        tokens.add(
            "webhook-token-0123456789",
            Some("apiserver"),
            crate::api::auth::Role::Read,
        );
        tokens.add(
            "other-token-0123456789",
            Some("apiserver-2"),
            crate::api::auth::Role::Read,
        );
        let (tx, rx) = mpsc::channel(capacity);
        (router(Arc::new(tokens), tx, rate), rx)
    }

    fn receiver(capacity: usize) -> (Router, Queued) {
        receiver_at(capacity, SenderRate::default())
    }

    /// `cert`: the allowed identity the connection's certificate named.
    fn post(token: Option<&str>, cert: Option<&str>, body: &str) -> Request<Body> {
        let mut r = Request::post(ROUTE);
        if let Some(t) = token {
            r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let mut req = r.body(Body::from(body.to_string())).unwrap();
        req.extensions_mut()
            .insert(ClientCert(cert.map(Sender::from)));
        req
    }

    #[tokio::test]
    async fn credentials_are_required_and_a_full_queue_drops_and_counts() {
        let (app, mut rx) = receiver(1);
        let batch = super::super::model::tests::SCALE;
        let status = |r: Response| r.status();
        let r = app.clone().oneshot(post(None, None, batch)).await.unwrap();
        assert_eq!(status(r), StatusCode::UNAUTHORIZED);
        let r = app
            .clone()
            .oneshot(post(Some("wrong-token-0123456789"), None, batch))
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
            .oneshot(post(Some("webhook-token-0123456789"), None, batch))
            .await
            .unwrap();
        assert_eq!(status(r), StatusCode::OK);
        // Two writes in the batch, room for one: the second is dropped, not waited for.
        let (sender, record) = rx.try_recv().unwrap();
        assert_eq!(
            (&*sender, record.username.as_str()),
            ("token:apiserver", "alice")
        );
        assert!(rx.try_recv().is_err());
        assert!(crate::metrics::METRICS.audit_dropped.get() > dropped);

        // A verified client certificate naming an allowed identity is enough on its own.
        let r = app
            .clone()
            .oneshot(post(None, Some("kube-apiserver"), batch))
            .await
            .unwrap();
        assert_eq!(status(r), StatusCode::OK);
        assert_eq!(&*rx.try_recv().unwrap().0, "cert:kube-apiserver");
        let r = app
            .oneshot(post(
                Some("webhook-token-0123456789"),
                None,
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
        req.extensions_mut().insert(ClientCert(None));
        let r = app.oneshot(req).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(
            !read.load(Ordering::SeqCst),
            "the body was read before the token was checked"
        );
    }

    #[test]
    fn a_certificate_counts_only_for_an_allowed_name() {
        let allowed = vec!["kube-apiserver".to_string(), "audit.example".to_string()];
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            allowed_identity(&names(&["node-1", "audit.example"]), &allowed).as_deref(),
            Some("audit.example")
        );
        // The cluster CA signs every user's and kubelet's certificate: those name nobody allowed.
        assert_eq!(allowed_identity(&names(&["alice"]), &allowed), None);
        assert_eq!(
            allowed_identity(&names(&["system:node:n1"]), &allowed),
            None
        );
        assert_eq!(allowed_identity(&names(&["kube-apiserver"]), &[]), None);
        // Exact names only: no prefix or case folding.
        assert_eq!(
            allowed_identity(&names(&["kube-apiserver-x"]), &allowed),
            None
        );
        assert_eq!(
            allowed_identity(&names(&["Kube-Apiserver"]), &allowed),
            None
        );
        assert!(names_of(b"not a certificate").is_empty());
    }

    #[tokio::test]
    async fn a_sender_over_its_rate_is_refused_and_others_are_not() {
        let two = NonZeroU32::new(2).unwrap();
        let rate = SenderRate {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(4).unwrap(),
        };
        let (app, mut rx) = receiver_at(100, rate);
        // SCALE carries two writes (and reads and failures, which do not count).
        let batch = super::super::model::tests::SCALE;
        let send = |token: &'static str| {
            let app = app.clone();
            async move { app.oneshot(post(Some(token), None, batch)).await.unwrap() }
        };
        let throttled = crate::metrics::METRICS.audit_throttled.get();
        assert_eq!(
            send("webhook-token-0123456789").await.status(),
            StatusCode::OK
        );
        assert_eq!(
            send("webhook-token-0123456789").await.status(),
            StatusCode::OK
        );
        let refused = send("webhook-token-0123456789").await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = refused.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=3).contains(&retry), "{retry}");
        assert!(crate::metrics::METRICS.audit_throttled.get() >= throttled + u64::from(two.get()));
        // Another sender's budget is its own.
        assert_eq!(
            send("other-token-0123456789").await.status(),
            StatusCode::OK
        );
        let mut by = std::collections::BTreeMap::<String, usize>::new();
        while let Ok((s, _)) = rx.try_recv() {
            *by.entry(s.to_string()).or_default() += 1;
        }
        assert_eq!(by["token:apiserver"], 4);
        assert_eq!(by["token:apiserver-2"], 2);
        // A batch larger than the burst can never fit: 413, not a retry loop.
        let (app, _rx) = receiver_at(
            100,
            SenderRate {
                per_second: NonZeroU32::new(1).unwrap(),
                burst: NonZeroU32::new(1).unwrap(),
            },
        );
        let r = app
            .oneshot(post(Some("webhook-token-0123456789"), None, batch))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
