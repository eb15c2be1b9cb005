//! Owns reckon's HTTP API: the `/api/v1` routes (history, apps, revisions, blame, manifests,
//! diff, replay as JSON; rollback and resume as POST), bearer-token authentication, JSON errors,
//! `/metrics`, and the OpenAPI document that describes them (`docs/openapi.yaml`, embedded so a
//! test checks the committed file against the routes the server really has).
//!
//! The router is built from [`ROUTES`], one table of (method, path, handler); the same table is
//! what the OpenAPI test compares against, so a route cannot exist undocumented.

pub mod auth;
pub mod client;
pub mod extract;
pub mod fanout;
pub mod handlers;

use crate::store::Projections;
use crate::store::writer::StoreHandle;
use auth::{Identity, Role, Tokens};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde::Serialize;
use std::sync::Arc;

/// The OpenAPI 3 document of every route (the committed `docs/openapi.yaml`).
pub const OPENAPI: &str = include_str!("../../docs/openapi.yaml");

/// The largest request body the API reads: its bodies are small JSON objects (a rollback's
/// revision and reason).
pub const BODY_LIMIT: usize = 64 << 10;

/// Every API path starts with this.
pub const PREFIX: &str = "/api/v1";

/// Wakes an App's task so that a just-recorded intent is acted on now, not at the next poll.
/// Returns false when the agent has no such App.
pub type Waker = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Whether the agent reconciles an App now (Apps come and go while it runs).
pub type AppNames = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: StoreHandle,
    pub tokens: Arc<Tokens>,
    /// The Apps the agent reconciles now (from its file and App objects; it changes them).
    pub apps: AppNames,
    pub waker: Option<Waker>,
    /// The other shards, when this agent is one of several: requests are fanned out to all.
    pub fleet: Option<Arc<fanout::Fleet>>,
    /// Becomes true when the agent stops: live event streams end then, or the server's
    /// graceful shutdown would wait for them forever.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
    projections: Arc<tokio::sync::Mutex<Option<Arc<Projections>>>>,
}

impl ApiState {
    pub fn new(
        store: StoreHandle,
        tokens: Arc<Tokens>,
        apps: Vec<String>,
        waker: Option<Waker>,
    ) -> ApiState {
        ApiState {
            store,
            tokens,
            apps: Arc::new(move |app: &str| apps.iter().any(|a| a == app)),
            waker,
            fleet: None,
            stop: None,
            projections: Arc::default(),
        }
    }

    /// The projections as of the newest event. Queries need them (object groups, revision
    /// prefixes, inventories), and a copy from the writer costs as much as the projections are
    /// large; so one copy is shared by every request until the log grows.
    pub async fn projections(&self) -> Result<Arc<Projections>, ApiError> {
        let reader = self.store.reader().clone();
        let last = tokio::task::spawn_blocking(move || reader.last_seq())
            .await
            .map_err(|e| ApiError::Internal(format!("read task: {e}")))??;
        let mut cached = self.projections.lock().await;
        if let Some(p) = cached.as_ref()
            && p.covered_seq >= last
        {
            return Ok(p.clone());
        }
        let fresh = Arc::new(self.store.projections().await?);
        *cached = Some(fresh.clone());
        Ok(fresh)
    }
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No token (health, metrics; webhooks check their own signatures).
    Open,
    /// A read-only or an admin token.
    Read,
    /// An admin token.
    Admin,
}

/// One route: method, path (axum syntax, `{param}`), and who may call it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

/// The handler of each route, and the route table the router and the OpenAPI test share.
fn table() -> Vec<(Route, MethodRouter<ApiState>)> {
    use axum::routing::post;
    let r = |method, path, access| Route {
        method,
        path,
        access,
    };
    vec![
        (
            r("GET", "/api/v1/events", Access::Read),
            get(handlers::events),
        ),
        (r("GET", "/api/v1/apps", Access::Read), get(handlers::apps)),
        (
            r("GET", "/api/v1/whoami", Access::Read),
            get(handlers::whoami),
        ),
        (
            r("GET", "/api/v1/integrity", Access::Read),
            get(handlers::integrity),
        ),
        (
            r("GET", "/api/v1/apps/{app}", Access::Read),
            get(handlers::app),
        ),
        (
            r("GET", "/api/v1/apps/{app}/events/stream", Access::Read),
            get(handlers::event_stream),
        ),
        (
            r("GET", "/api/v1/apps/{app}/revisions", Access::Read),
            get(handlers::revisions),
        ),
        (
            r(
                "GET",
                "/api/v1/apps/{app}/revisions/{rev}/manifests",
                Access::Read,
            ),
            get(handlers::manifests),
        ),
        (
            r("GET", "/api/v1/apps/{app}/diff", Access::Read),
            get(handlers::diff),
        ),
        (
            r("GET", "/api/v1/blame", Access::Read),
            get(handlers::blame),
        ),
        (
            r("GET", "/api/v1/replay", Access::Read),
            get(handlers::replay),
        ),
        (
            r("POST", "/api/v1/apps/{app}/rollback", Access::Admin),
            post(handlers::rollback),
        ),
        (
            r("POST", "/api/v1/apps/{app}/resume", Access::Admin),
            post(handlers::resume),
        ),
    ]
}

/// Method and path of every route the agent serves: the `/api/v1` table, the open endpoints
/// ([`OPEN_ROUTES`]) and the webhooks (mounted by the agent from [`crate::source::webhook`]).
pub fn routes() -> Vec<Route> {
    let mut all: Vec<Route> = table().into_iter().map(|(r, _)| r).collect();
    for path in OPEN_ROUTES {
        all.push(Route {
            method: "GET",
            path,
            access: Access::Open,
        });
    }
    for path in crate::source::webhook::ROUTES {
        all.push(Route {
            method: "POST",
            path,
            access: Access::Open,
        });
    }
    all
}

/// Served without a token: liveness and readiness for probes, `/metrics` (Prometheus scrapers
/// rarely carry tokens, and it names no App), and the OpenAPI document (the committed
/// `docs/openapi.yaml`, public like the rest of the source: a client needs it to learn how to
/// authenticate, and it holds nothing of this agent's).
pub const OPEN_ROUTES: [&str; 5] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/openapi.json",
    "/api/v1/openapi.yaml",
];

/// [`OPENAPI`] as JSON, converted once (the YAML is compiled in and a test parses it, so the
/// error arm is for a broken build only).
fn openapi_json() -> Result<&'static str, &'static str> {
    static JSON: std::sync::LazyLock<Result<String, String>> = std::sync::LazyLock::new(|| {
        serde_saphyr::from_str::<serde_json::Value>(OPENAPI)
            .map_err(|e| format!("docs/openapi.yaml does not parse: {e}"))
            .and_then(|v| serde_json::to_string(&v).map_err(|e| e.to_string()))
    });
    JSON.as_deref().map_err(String::as_str)
}

async fn serve_openapi_json() -> Response {
    match openapi_json() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}

async fn serve_openapi_yaml() -> Response {
    // RFC 9512's media type for YAML.
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI).into_response()
}

/// The `/api/v1` routes (behind bearer tokens) and [`OPEN_ROUTES`]. Unknown paths fall through
/// to the caller's fallback.
pub fn router(state: ApiState) -> Router {
    let mut api = Router::new();
    for (route, handler) in table() {
        api = api.route(route.path, handler);
    }
    // Layers run outside in: authenticate first, then (in a fleet) the fan-out. A body is read
    // only by a handler, so only after the token was checked, and never more than
    // [`BODY_LIMIT`] of it.
    api.route_layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            fanout::fanout,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .route(OPEN_ROUTES[0], get(|| async { "ok\n" }))
        .route(OPEN_ROUTES[1], get(|| async { "ok\n" }))
        .route(OPEN_ROUTES[2], get(handlers::metrics))
        .route(OPEN_ROUTES[3], get(serve_openapi_json))
        .route(OPEN_ROUTES[4], get(serve_openapi_yaml))
        .merge(crate::ui::router())
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::NotFound(format!("no route {} (see docs/api.md)", uri.path()))
        })
        // Last, so that it covers every route above: axum's own 405 has an empty body.
        .method_not_allowed_fallback(|method: Method, uri: axum::http::Uri| async move {
            ApiError::MethodNotAllowed(format!(
                "{method} {}: not served (docs/openapi.yaml lists each path's methods)",
                uri.path()
            ))
        })
        .with_state(state)
}

/// Checks the bearer token: none or an unknown one → 401 with `WWW-Authenticate: Bearer`; a
/// read-only token on anything but GET/HEAD → 403. The identity goes into the request's
/// extensions for handlers that record who acted.
async fn authenticate(State(state): State<ApiState>, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::bearer)
        .map(str::to_owned);
    let identity: Option<Identity> = presented.as_deref().and_then(|t| state.tokens.check(t));
    let Some(identity) = identity else {
        let message = if state.tokens.is_empty() {
            "this agent has no API tokens configured (start it with --api-token-file and/or \
             --admin-token-file)"
        } else if presented.is_none() {
            "missing bearer token (Authorization: Bearer TOKEN)"
        } else {
            "unknown bearer token"
        };
        let mut resp = ApiError::Unauthorized(message.into()).into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"reckon\""),
        );
        return resp;
    };
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
    if !read_only && identity.role != Role::Admin {
        return ApiError::Forbidden(format!(
            "{} is a read-only token; {} needs an admin token",
            identity.actor,
            req.method()
        ))
        .into_response();
    }
    req.extensions_mut().insert(identity);
    next.run(req).await
}

/// Every error the API answers with; the body is `{"error": {"code", "message"}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
    /// A shard of the fleet did not answer (the message names it).
    #[error("{0}")]
    BadGateway(String),
    /// A request body that is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A method the path does not serve (the message lists those it does).
    #[error("{0}")]
    MethodNotAllowed(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::BadGateway(_) => (StatusCode::BAD_GATEWAY, "bad_gateway"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        }
    }

    /// The stable `code` of the JSON error (the document's `Error.code` enum).
    pub fn code(&self) -> &'static str {
        self.parts().1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = %self, "API request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
            },
        };
        (status, axum::Json(body)).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Internal(format!("reading the store: {e}"))
    }
}

/// Serves [`router`] (and `extra`, e.g. health and webhooks) on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}
