//! Owns the webhook receiver: an axum router (to be mounted on the agent's API server) for GitHub
//! push events (`X-Hub-Signature-256`), GitLab (`X-Gitlab-Token`) and a generic HMAC endpoint
//! (signed with a timestamp and the source, accepted once within a window). A
//! verified request triggers an immediate fetch of every source whose URL names the pushed
//! repository; a missing or wrong signature gets 401, is logged, and triggers nothing.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

use super::SourceId;

/// Why a fetch was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    Webhook { provider: String },
}

/// Secrets per provider; a provider without a secret has no endpoint (404).
#[derive(Clone)]
pub struct WebhookConfig {
    pub github_secret: Option<String>,
    pub gitlab_token: Option<String>,
    pub generic_secret: Option<String>,
    /// The sources and their remote URLs, matched against the pushed repository's URLs. Shared
    /// with the agent, which adds and removes Apps while it runs (App objects).
    pub sources: Sources,
}

/// The sources a webhook may trigger, as of the request: the agent's running Apps (which come
/// and go), or a fixed list.
pub type Sources = Arc<dyn SourceList>;

/// Sources by id and remote URL.
pub trait SourceList: Send + Sync + std::fmt::Debug {
    /// The ids of the sources whose remote URL `matches`.
    fn ids_where(&self, matches: &dyn Fn(&str) -> bool) -> Vec<SourceId>;

    fn contains(&self, id: &str) -> bool {
        self.ids_where(&|_| true).iter().any(|s| s == id)
    }
}

/// A list of `(id, url)` pairs that may be changed in place.
impl SourceList for std::sync::RwLock<Vec<(SourceId, String)>> {
    fn ids_where(&self, matches: &dyn Fn(&str) -> bool) -> Vec<SourceId> {
        self.read()
            .expect("webhook sources lock")
            .iter()
            .filter(|(_, url)| matches(url))
            .map(|(id, _)| id.clone())
            .collect()
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("github", &self.github_secret.is_some())
            .field("gitlab", &self.gitlab_token.is_some())
            .field("generic", &self.generic_secret.is_some())
            .field("sources", &self.sources)
            .finish()
    }
}

/// A fetch request for one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTrigger {
    pub source: SourceId,
    pub trigger: Trigger,
}

/// Why a webhook request was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no {0} endpoint is configured")]
    NotConfigured(&'static str),
    #[error("missing signature header {0}")]
    MissingSignature(&'static str),
    #[error("signature does not match")]
    BadSignature,
    #[error("payload is not valid JSON: {0}")]
    BadPayload(String),
    /// The body was not read to its end: larger than the limit, cut off, or too slow (the
    /// deadline itself answers 408 before this is seen).
    #[error("reading the payload: {0}")]
    ReadBody(String),
    #[error("payload is larger than {0} bytes")]
    TooLarge(usize),
    #[error("unknown source {0}")]
    UnknownSource(String),
    #[error("{GENERIC_TIMESTAMP_HEADER} {0:?} is not a Unix time in seconds")]
    BadTimestamp(String),
    #[error(
        "{GENERIC_TIMESTAMP_HEADER} {timestamp} is more than {window} s from this server's clock \
         ({now}): a late or replayed delivery, or a skewed clock"
    )]
    Stale {
        timestamp: u64,
        now: u64,
        window: u64,
    },
    #[error("this delivery (same timestamp and signature) was already accepted")]
    Replayed,
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebhookError::NotConfigured(_) | WebhookError::UnknownSource(_) => {
                StatusCode::NOT_FOUND
            }
            WebhookError::MissingSignature(_)
            | WebhookError::BadSignature
            | WebhookError::BadTimestamp(_)
            | WebhookError::Stale { .. } => StatusCode::UNAUTHORIZED,
            WebhookError::Replayed => StatusCode::CONFLICT,
            WebhookError::BadPayload(_) | WebhookError::ReadBody(_) => StatusCode::BAD_REQUEST,
            WebhookError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        };
        (status, format!("{self}\n")).into_response()
    }
}

struct Shared {
    config: WebhookConfig,
    triggers: mpsc::Sender<WebhookTrigger>,
    max_body: usize,
    /// Generic deliveries accepted within the replay window, so each is accepted once.
    seen: std::sync::Mutex<Seen>,
}

/// Header of the generic webhook carrying the sender's clock (Unix seconds), signed with the
/// source and the body.
pub const GENERIC_TIMESTAMP_HEADER: &str = "x-reckon-timestamp";

/// How far a generic delivery's timestamp may be from this server's clock, either way. Five
/// minutes, as Slack and Stripe allow: room for clock skew and a sender's retries, little for a
/// captured request.
pub const GENERIC_WINDOW_SECS: u64 = 300;

/// At most this many generic deliveries are remembered; beyond it the one expiring first is
/// forgotten. Only authenticated deliveries are remembered, so only a secret holder fills it.
const SEEN_CAPACITY: usize = 4096;

/// The MACs of accepted generic deliveries, each with the time it leaves the window.
#[derive(Debug, Default)]
struct Seen {
    expires: std::collections::HashMap<[u8; 32], u64>,
}

impl Seen {
    /// Remembers `mac` until `now + window`; false when it is already remembered (a replay).
    /// Entries past their expiry are dropped first, then, when still full, the one expiring
    /// soonest.
    fn insert(&mut self, mac: [u8; 32], now: u64, window: u64, capacity: usize) -> bool {
        self.expires.retain(|_, expiry| *expiry > now);
        if self.expires.contains_key(&mac) {
            return false;
        }
        if self.expires.len() >= capacity
            && let Some(first) = self
                .expires
                .iter()
                .min_by_key(|(_, expiry)| **expiry)
                .map(|(m, _)| *m)
        {
            self.expires.remove(&first);
        }
        self.expires.insert(mac, now + window);
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.expires.len()
    }
}

/// Whether `timestamp` is within `window` seconds of `now`, either way.
fn check_fresh(now: u64, timestamp: u64, window: u64) -> Result<(), WebhookError> {
    if now.abs_diff(timestamp) > window {
        return Err(WebhookError::Stale {
            timestamp,
            now,
            window,
        });
    }
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the generic webhook's HMAC covers: a version tag, the timestamp and the source, then
/// the body, so a signature is good for one source at one time only.
fn generic_message(timestamp: u64, source: &str, body: &[u8]) -> Vec<u8> {
    let mut message = format!("v1:{timestamp}:{source}:").into_bytes();
    message.extend_from_slice(body);
    message
}

/// The two headers a generic sender puts on a delivery for `source` at `timestamp`:
/// ([`GENERIC_TIMESTAMP_HEADER`], `X-Signature-256`).
pub fn sign_generic(secret: &str, timestamp: u64, source: &str, body: &[u8]) -> (String, String) {
    (
        timestamp.to_string(),
        sign(secret, &generic_message(timestamp, source, body)),
    )
}

/// The router: `POST /hooks/github`, `POST /hooks/gitlab`, `POST /hooks/generic/{source}`.
///
/// Triggers go out with `try_send`: a full channel means fetches are already queued, and a webhook
/// sender must not wait on reckon's fetch queue (GitHub gives up after 10 s). A dropped trigger
/// is logged; the next poll catches up.
/// The webhook endpoints (all POST), in the order [`router`] mounts them; the API's route table
/// and its OpenAPI document list them from here.
pub const ROUTES: [&str; 3] = ["/hooks/github", "/hooks/gitlab", "/hooks/generic/{source}"];

///
/// Every handler looks at the headers first and reads the body only when the request could be
/// genuine (the endpoint exists and carries its signature header; GitLab's token is compared in
/// full); the body is read under `limits` ([`crate::listen::body_limits`]).
pub fn router(
    config: WebhookConfig,
    triggers: mpsc::Sender<WebhookTrigger>,
    limits: crate::listen::BodyLimits,
) -> Router {
    let shared = Arc::new(Shared {
        config,
        triggers,
        max_body: limits.max_bytes,
        seen: std::sync::Mutex::new(Seen::default()),
    });
    let routes = Router::new()
        .route(ROUTES[0], post(github))
        .route(ROUTES[1], post(gitlab))
        .route(ROUTES[2], post(generic))
        .with_state(shared);
    crate::listen::body_limits(routes, limits)
}

/// The webhook routes' body bounds by default. GitHub and GitLab push payloads are a few KiB to
/// a few hundred KiB (GitHub caps deliveries at 25 MB, but only for events reckon ignores);
/// eight bodies of 2 MiB at once bound what unauthenticated senders can make reckon hold at
/// 16 MiB, and Git hosts retry a 503.
pub const DEFAULT_BODY_LIMITS: crate::listen::BodyLimits = crate::listen::BodyLimits {
    max_bytes: 2 << 20,
    in_flight: 8,
    timeout: std::time::Duration::from_secs(10),
};

/// Reads the body to its end, at most `max` bytes (the limit layer refuses a larger declared
/// length before this runs; this catches a body that grows past it while streaming).
async fn read_body(body: Body, max: usize) -> Result<Bytes, WebhookError> {
    axum::body::to_bytes(body, max).await.map_err(|e| {
        // The limit error sits somewhere in the chain (axum's and tower-http's wrappers).
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        let mut too_large = false;
        while let Some(c) = cause {
            too_large |= c.is::<http_body_util::LengthLimitError>();
            cause = c.source();
        }
        if too_large {
            WebhookError::TooLarge(max)
        } else {
            WebhookError::ReadBody(e.to_string())
        }
    })
}

fn refused(provider: &str, err: WebhookError) -> Response {
    tracing::warn!(provider, error = %err, "webhook refused");
    err.into_response()
}

/// The MAC of a `sha256=<hex>` header: 32 bytes, or the request is refused before its body is
/// read (a malformed header can never verify).
fn parse_signature(header: &str) -> Result<Vec<u8>, WebhookError> {
    header
        .strip_prefix("sha256=")
        .and_then(decode_hex)
        .filter(|mac| mac.len() == 32)
        .ok_or(WebhookError::BadSignature)
}

/// Checks `sha256=<hex>` against HMAC-SHA256(secret, body) in constant time.
fn verify_hmac(secret: &str, body: &[u8], header: &str) -> Result<(), WebhookError> {
    let expected = parse_signature(header)?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| WebhookError::BadSignature)?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| WebhookError::BadSignature)
}

/// `sha256=<hex>` for `body`: what a sender puts in the signature header.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `host/path` without scheme, user, port, `.git` or trailing slash, lowercased, so that
/// `https://h/o/r.git`, `git@h:o/r` and `ssh://git@h:22/o/r` all name the same repository.
pub fn normalize_repo_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    let url = url.strip_suffix(".git").unwrap_or(url);
    let (rest, scp) = match url.split_once("://") {
        Some((_, rest)) => (rest, false),
        None => (url, true),
    };
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    let (host, path) = if scp {
        rest.split_once(':').unwrap_or((rest, ""))
    } else {
        rest.split_once('/').unwrap_or((rest, ""))
    };
    let host = host.split(':').next().unwrap_or(host);
    format!("{}/{}", host, path.trim_start_matches('/')).to_lowercase()
}

impl Shared {
    /// Sends a trigger to every source whose URL matches one of `repo_urls`; returns their ids.
    fn trigger_matching(&self, provider: &str, repo_urls: &[String]) -> Vec<SourceId> {
        let wanted: Vec<String> = repo_urls.iter().map(|u| normalize_repo_url(u)).collect();
        let ids: Vec<SourceId> = self
            .config
            .sources
            .ids_where(&|url| wanted.contains(&normalize_repo_url(url)));
        for id in &ids {
            self.send(provider, id);
        }
        ids
    }

    fn send(&self, provider: &str, id: &str) {
        let trigger = WebhookTrigger {
            source: id.to_string(),
            trigger: Trigger::Webhook {
                provider: provider.to_string(),
            },
        };
        if let Err(e) = self.triggers.try_send(trigger) {
            tracing::warn!(provider, source = id, error = %e, "webhook trigger dropped");
        }
    }
}

fn accepted(ids: Vec<SourceId>) -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "triggered": ids })),
    )
        .into_response()
}

fn strings_at(payload: &serde_json::Value, object: &str, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .filter_map(|k| payload.get(object)?.get(*k)?.as_str().map(str::to_string))
        .collect()
}

/// The repository URLs a GitHub push payload names (any of which may match a source).
pub fn github_push_urls(body: &[u8]) -> Result<Vec<String>, WebhookError> {
    let payload: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::BadPayload(e.to_string()))?;
    Ok(strings_at(
        &payload,
        "repository",
        &["clone_url", "ssh_url", "git_url", "html_url", "url"],
    ))
}

/// The repository URLs a GitLab push or tag push payload names.
pub fn gitlab_push_urls(body: &[u8]) -> Result<Vec<String>, WebhookError> {
    let payload: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::BadPayload(e.to_string()))?;
    let mut urls = strings_at(
        &payload,
        "project",
        &["git_http_url", "git_ssh_url", "web_url"],
    );
    urls.extend(strings_at(
        &payload,
        "repository",
        &["git_http_url", "git_ssh_url", "url", "homepage"],
    ));
    Ok(urls)
}

async fn github(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let Some(secret) = &shared.config.github_secret else {
        return refused("github", WebhookError::NotConfigured("github"));
    };
    let Some(sig) = header(&headers, "x-hub-signature-256") else {
        return refused(
            "github",
            WebhookError::MissingSignature("X-Hub-Signature-256"),
        );
    };
    if let Err(e) = parse_signature(sig) {
        return refused("github", e);
    }
    let body = match read_body(body, shared.max_body).await {
        Ok(b) => b,
        Err(e) => return refused("github", e),
    };
    if let Err(e) = verify_hmac(secret, &body, sig) {
        return refused("github", e);
    }
    match header(&headers, "x-github-event") {
        Some("push") => {}
        // ping (sent when a hook is created) and other events are acknowledged, nothing fetched.
        _ => return accepted(Vec::new()),
    }
    match github_push_urls(&body) {
        Ok(urls) => accepted(shared.trigger_matching("github", &urls)),
        Err(e) => refused("github", e),
    }
}

async fn gitlab(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let Some(token) = &shared.config.gitlab_token else {
        return refused("gitlab", WebhookError::NotConfigured("gitlab"));
    };
    let Some(given) = header(&headers, "x-gitlab-token") else {
        return refused("gitlab", WebhookError::MissingSignature("X-Gitlab-Token"));
    };
    if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        return refused("gitlab", WebhookError::BadSignature);
    }
    match header(&headers, "x-gitlab-event") {
        Some("Push Hook") | Some("Tag Push Hook") => {}
        _ => return accepted(Vec::new()),
    }
    let body = match read_body(body, shared.max_body).await {
        Ok(b) => b,
        Err(e) => return refused("gitlab", e),
    };
    match gitlab_push_urls(&body) {
        Ok(urls) => accepted(shared.trigger_matching("gitlab", &urls)),
        Err(e) => refused("gitlab", e),
    }
}

async fn generic(
    State(shared): State<Arc<Shared>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match generic_delivery(&shared, &source, &headers, body).await {
        Ok(()) => {
            shared.send("generic", &source);
            accepted(vec![source])
        }
        Err(e) => refused("generic", e),
    }
}

/// Checks a generic delivery: the signature and timestamp headers, the window (before the body
/// is read), the HMAC over timestamp, source and body, the source, and that it is the first
/// time this delivery arrives.
async fn generic_delivery(
    shared: &Shared,
    source: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), WebhookError> {
    let secret =
        (shared.config.generic_secret.as_ref()).ok_or(WebhookError::NotConfigured("generic"))?;
    let sig = header(headers, "x-signature-256")
        .ok_or(WebhookError::MissingSignature("X-Signature-256"))?;
    let mac: [u8; 32] = parse_signature(sig)?
        .try_into()
        .map_err(|_| WebhookError::BadSignature)?;
    let stamp = header(headers, GENERIC_TIMESTAMP_HEADER)
        .ok_or(WebhookError::MissingSignature("X-Reckon-Timestamp"))?;
    let timestamp: u64 = stamp
        .parse()
        .map_err(|_| WebhookError::BadTimestamp(stamp.to_string()))?;
    let now = unix_now();
    check_fresh(now, timestamp, GENERIC_WINDOW_SECS)?;
    let body = read_body(body, shared.max_body).await?;
    verify_hmac(secret, &generic_message(timestamp, source, &body), sig)?;
    // Checked only after the signature, so unauthenticated callers cannot probe source names.
    if !shared.config.sources.contains(source) {
        return Err(WebhookError::UnknownSource(source.to_string()));
    }
    let mut seen = shared.seen.lock().expect("webhook replay set");
    if !seen.insert(mac, now, GENERIC_WINDOW_SECS, SEEN_CAPACITY) {
        return Err(WebhookError::Replayed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls_normalize_across_transports() {
        let want = "github.com/org/repo";
        for url in [
            "https://github.com/org/repo.git",
            "https://github.com/Org/Repo",
            "git@github.com:org/repo.git",
            "ssh://git@github.com:22/org/repo.git",
            "git://github.com/org/repo/",
        ] {
            assert_eq!(normalize_repo_url(url), want, "{url}");
        }
        assert_ne!(normalize_repo_url("https://github.com/org/other"), want);
    }

    #[test]
    fn hmac_accepts_its_own_signature_only() {
        let sig = sign("s3cret", b"{}");
        assert!(verify_hmac("s3cret", b"{}", &sig).is_ok());
        assert!(verify_hmac("other", b"{}", &sig).is_err());
        assert!(verify_hmac("s3cret", b"{ }", &sig).is_err());
        assert!(verify_hmac("s3cret", b"{}", "sha256=zz").is_err());
        assert!(verify_hmac("s3cret", b"{}", sig.trim_start_matches("sha256=")).is_err());
    }

    use axum::http::Request;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tower::ServiceExt;

    fn app(limits: crate::listen::BodyLimits) -> Router {
        let (tx, _rx) = mpsc::channel(8);
        let config = WebhookConfig {
            github_secret: Some("gh-secret".into()),
            gitlab_token: Some("gl-token".into()),
            generic_secret: Some("generic-secret".into()),
            sources: Arc::new(std::sync::RwLock::new(Vec::new())),
        };
        router(config, tx, limits)
    }

    /// A body that notes whether anyone read it.
    fn watched_body(read: Arc<AtomicBool>) -> Body {
        let mut sent = false;
        Body::from_stream(futures::stream::poll_fn(move |_| {
            read.store(true, Ordering::SeqCst);
            if sent {
                return std::task::Poll::Ready(None);
            }
            sent = true;
            std::task::Poll::Ready(Some(Ok::<_, std::io::Error>(Bytes::from_static(b"{}"))))
        }))
    }

    async fn status_and_read(req: axum::http::request::Builder) -> (StatusCode, bool) {
        let read = Arc::new(AtomicBool::new(false));
        let req = req.body(watched_body(read.clone())).unwrap();
        let resp = app(DEFAULT_BODY_LIMITS).oneshot(req).await.unwrap();
        (resp.status(), read.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn requests_without_their_credential_header_are_refused_unread() {
        let github = Request::post("/hooks/github").header("x-github-event", "push");
        assert_eq!(
            status_and_read(github).await,
            (StatusCode::UNAUTHORIZED, false)
        );
        let malformed = Request::post("/hooks/github")
            .header("x-github-event", "push")
            .header("x-hub-signature-256", "sha256=abcd");
        assert_eq!(
            status_and_read(malformed).await,
            (StatusCode::UNAUTHORIZED, false)
        );
        let gitlab = Request::post("/hooks/gitlab")
            .header("x-gitlab-event", "Push Hook")
            .header("x-gitlab-token", "wrong");
        assert_eq!(
            status_and_read(gitlab).await,
            (StatusCode::UNAUTHORIZED, false)
        );
        let generic = Request::post("/hooks/generic/app");
        assert_eq!(
            status_and_read(generic).await,
            (StatusCode::UNAUTHORIZED, false)
        );
        // A well-formed signature header is read and checked against the body.
        let signed = Request::post("/hooks/github")
            .header("x-github-event", "push")
            .header("x-hub-signature-256", sign("other", b"{}"));
        assert_eq!(
            status_and_read(signed).await,
            (StatusCode::UNAUTHORIZED, true)
        );
    }

    /// A generic request as a sender makes it, for `source`, stamped `at` (Unix seconds).
    fn generic_request(source: &str, at: u64, body: &[u8]) -> Request<Body> {
        let (timestamp, signature) = sign_generic("generic-secret", at, source, body);
        Request::post(format!("/hooks/generic/{source}"))
            .header(GENERIC_TIMESTAMP_HEADER, timestamp)
            .header("x-signature-256", signature)
            .body(Body::from(body.to_vec()))
            .unwrap()
    }

    fn app_with_source(source: &str) -> Router {
        let (tx, rx) = mpsc::channel(8);
        std::mem::forget(rx); // Keep the channel open: triggers are queued, never read.
        let config = WebhookConfig {
            github_secret: None,
            gitlab_token: None,
            generic_secret: Some("generic-secret".into()),
            sources: Arc::new(std::sync::RwLock::new(vec![(
                source.to_string(),
                "https://example.com/r.git".to_string(),
            )])),
        };
        router(config, tx, DEFAULT_BODY_LIMITS)
    }

    /// Issue 18, item 8: a captured generic request could be sent again at any time, and its
    /// signature did not name the source, so it could be replayed at another source too.
    #[tokio::test]
    async fn a_captured_generic_request_is_refused_replayed_late_or_at_another_source() {
        let app = app_with_source("web");
        let now = unix_now();
        let first = app.clone().oneshot(generic_request("web", now, b"{}"));
        assert_eq!(first.await.unwrap().status(), StatusCode::ACCEPTED);
        // The same delivery again: already accepted once.
        let again = app.clone().oneshot(generic_request("web", now, b"{}"));
        assert_eq!(again.await.unwrap().status(), StatusCode::CONFLICT);
        // Signed for one source, sent to another: the signature covers the source.
        let (timestamp, signature) = sign_generic("generic-secret", now, "other", b"{}");
        let moved = Request::post("/hooks/generic/web")
            .header(GENERIC_TIMESTAMP_HEADER, timestamp)
            .header("x-signature-256", signature)
            .body(Body::from("{}"))
            .unwrap();
        let resp = app.clone().oneshot(moved).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        // Captured long ago (or stamped far ahead): outside the window, refused unread.
        for at in [now - 301, now + 301] {
            let resp = app.clone().oneshot(generic_request("web", at, b"{}"));
            assert_eq!(
                resp.await.unwrap().status(),
                StatusCode::UNAUTHORIZED,
                "{at}"
            );
        }
        // Without a timestamp: refused.
        let bare = Request::post("/hooks/generic/web")
            .header("x-signature-256", sign("generic-secret", b"{}"))
            .body(Body::from("{}"))
            .unwrap();
        let resp = app.clone().oneshot(bare).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }

    /// What docs/sources.md's shell recipe (printf, openssl dgst -hmac) computes for this input.
    #[test]
    fn the_generic_signature_is_the_documented_one() {
        let (timestamp, signature) = sign_generic("s3cret", 1_700_000_000, "web", br#"{"a":1}"#);
        assert_eq!(timestamp, "1700000000");
        assert_eq!(
            signature,
            "sha256=38486e811532bdc029e65c3492dd3be9bf165c0f62b19157ca6675e886c586fe"
        );
    }

    #[test]
    fn freshness_is_a_window_around_now() {
        assert!(check_fresh(1_000, 1_000, 300).is_ok());
        assert!(check_fresh(1_000, 700, 300).is_ok());
        assert!(check_fresh(1_000, 1_300, 300).is_ok());
        assert!(matches!(
            check_fresh(1_000, 699, 300),
            Err(WebhookError::Stale { .. })
        ));
        assert!(matches!(
            check_fresh(1_000, 1_301, 300),
            Err(WebhookError::Stale { .. })
        ));
    }

    #[test]
    fn the_seen_set_forgets_expired_deliveries_and_stays_bounded() {
        let mut seen = Seen::default();
        assert!(seen.insert([1; 32], 100, 10, 2));
        assert!(!seen.insert([1; 32], 100, 10, 2), "a repeat is refused");
        assert!(seen.insert([2; 32], 100, 10, 2));
        // Full: the entry that expires first makes room.
        assert!(seen.insert([3; 32], 105, 10, 2));
        assert_eq!(seen.len(), 2);
        // Past its expiry a delivery is outside the window anyway; its entry is dropped.
        assert!(seen.insert([4; 32], 200, 10, 2));
        assert_eq!(seen.len(), 1);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_declared_or_streamed() {
        let limits = crate::listen::BodyLimits {
            max_bytes: 16,
            ..DEFAULT_BODY_LIMITS
        };
        let body = vec![b' '; 17];
        let (timestamp, signature) = sign_generic("generic-secret", unix_now(), "app", &body);
        let declared = Request::post("/hooks/generic/app")
            .header(GENERIC_TIMESTAMP_HEADER, &timestamp)
            .header("x-signature-256", &signature)
            .header("content-length", "17")
            .body(Body::from(body.clone()))
            .unwrap();
        let resp = app(limits).oneshot(declared).await.unwrap();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // No length declared (chunked): the limit is hit while the body streams in.
        let chunks = futures::stream::iter(
            body.chunks(4)
                .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        let streamed = Request::post("/hooks/generic/app")
            .header(GENERIC_TIMESTAMP_HEADER, &timestamp)
            .header("x-signature-256", &signature)
            .body(Body::from_stream(chunks))
            .unwrap();
        let resp = app(limits).oneshot(streamed).await.unwrap();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn a_request_beyond_the_in_flight_limit_is_refused_before_its_body_is_read() {
        let limits = crate::listen::BodyLimits {
            in_flight: 1,
            ..DEFAULT_BODY_LIMITS
        };
        let app = app(limits);
        // The first request's body starts and never ends: it holds the only slot.
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let mut started_tx = Some(started_tx);
        let stalled = Body::from_stream(futures::stream::poll_fn(move |_| {
            if let Some(tx) = started_tx.take() {
                let _ = tx.send(());
            }
            std::task::Poll::<Option<Result<Bytes, std::io::Error>>>::Pending
        }));
        let first = Request::post("/hooks/github")
            .header("x-hub-signature-256", sign("gh-secret", b"{}"))
            .body(stalled)
            .unwrap();
        let held = tokio::spawn(app.clone().oneshot(first));
        started.await.unwrap();

        let read = Arc::new(AtomicBool::new(false));
        let second = Request::post("/hooks/github")
            .header("x-hub-signature-256", sign("gh-secret", b"{}"))
            .body(watched_body(read.clone()))
            .unwrap();
        let resp = app.clone().oneshot(second).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!read.load(Ordering::SeqCst), "the refused body was read");
        held.abort();
    }
}
