//! Owns the API's request handlers: parameters in, the store's answer out as JSON. Store reads
//! are blocking (sled), so each runs on tokio's blocking pool and the async workers stay free.

use super::auth::Identity;
use super::{ApiError, ApiState};
use crate::event::{Envelope, EventKind, IntentKind};
use crate::reconcile::rollback::{
    ResumePlan, RollbackError, RollbackPlan, RollbackTarget, request_resume, request_rollback,
};
use crate::store::projection::AppState;
use crate::store::{EventRead, Order, Query, Selector, StoreReader};
use axum::Json;
use axum::extract::{Extension, Path, Query as Params, State};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The largest page a client may ask for.
pub const MAX_LIMIT: usize = 1000;
/// How many events one events request examines at most when filters are combined; past that the
/// page is returned short with a cursor (documented: a page may hold fewer than `limit`).
const SCAN_BUDGET: usize = 20_000;

/// Runs a blocking store read off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("read task: {e}")))?
}

/// One event as the API shows it (the export's line without the chain fields but its hash).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct EventView {
    pub seq: u64,
    pub time: String,
    pub app: Option<String>,
    pub actor: Option<String>,
    pub kind: String,
    pub data: serde_json::Value,
    pub hash: String,
}

impl EventView {
    pub fn of(env: &Envelope) -> EventView {
        let kind = env.body.event.kind().name();
        let data = serde_json::to_value(&env.body.event)
            .ok()
            .and_then(|mut v| v.as_object_mut().and_then(|m| m.remove(kind)))
            .unwrap_or(serde_json::Value::Null);
        EventView {
            seq: env.body.seq,
            time: env
                .body
                .time
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            app: env.body.app.clone(),
            actor: env.body.actor.clone(),
            kind: kind.to_string(),
            data,
            hash: env.hash.to_hex(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EventsPage {
    pub events: Vec<EventView>,
    /// Pass as `cursor` for the next page; null when there is nothing more.
    pub next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct EventsParams {
    pub app: Option<String>,
    pub object: Option<String>,
    pub author: Option<String>,
    pub revision: Option<String>,
    pub kind: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    /// `newest` (default) or `oldest`.
    pub order: Option<String>,
}

/// `RFC 3339` or a duration back from now (`30m`, `2h`, `7d`).
pub fn parse_time(name: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    match humantime::parse_duration(value) {
        Ok(d) => chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| Utc::now().checked_sub_signed(d))
            .ok_or_else(|| ApiError::BadRequest(format!("{name}={value}: too far back"))),
        Err(_) => Err(ApiError::BadRequest(format!(
            "{name}={value}: expected an RFC 3339 time (2026-01-31T12:00:00Z) or a duration \
             back from now (30m, 2h, 7d)"
        ))),
    }
}

/// `KIND/NAMESPACE/NAME` or `KIND/NAME` (cluster-scoped); `KIND` may carry its group as
/// `Deployment.apps`. Compared by kind, namespace and name (and group when given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectFilter {
    pub kind: String,
    pub group: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectFilter {
    pub fn parse(value: &str) -> Result<ObjectFilter, ApiError> {
        let parts: Vec<&str> = value.split('/').collect();
        let (kind, namespace, name) = match parts.as_slice() {
            [k, ns, n] if !k.is_empty() && !n.is_empty() => {
                (*k, (!ns.is_empty()).then(|| ns.to_string()), *n)
            }
            [k, n] if !k.is_empty() && !n.is_empty() => (*k, None, *n),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "object={value}: expected KIND/NAMESPACE/NAME or KIND/NAME"
                )));
            }
        };
        let (kind, group) = match kind.split_once('.') {
            Some((k, g)) => (k.to_string(), Some(g.to_string())),
            None => (kind.to_string(), None),
        };
        Ok(ObjectFilter {
            kind,
            group,
            namespace,
            name: name.to_string(),
        })
    }

    fn matches(&self, o: &crate::event::ObjectRef) -> bool {
        o.kind == self.kind
            && o.name == self.name
            && o.namespace == self.namespace
            && self.group.as_ref().is_none_or(|g| &o.group == g)
    }
}

/// The filters of an events request, validated.
struct Filters {
    app: Option<String>,
    object: Option<ObjectFilter>,
    author: Option<String>,
    revision: Option<String>,
    kind: Option<EventKind>,
}

impl Filters {
    fn matches(&self, env: &Envelope) -> bool {
        let e = &env.body.event;
        self.app
            .as_ref()
            .is_none_or(|a| env.body.app.as_ref() == Some(a))
            && self.kind.is_none_or(|k| e.kind() == k)
            && self
                .object
                .as_ref()
                .is_none_or(|f| e.object().is_some_and(|o| f.matches(o)))
            && self
                .author
                .as_ref()
                .is_none_or(|a| e.authors().iter().any(|x| x.eq_ignore_ascii_case(a)))
            && self
                .revision
                .as_ref()
                .is_none_or(|r| e.revisions().iter().any(|x| x.starts_with(r.as_str())))
    }

    /// The most selective index for these filters; the others are checked per event.
    fn selector(&self) -> Selector {
        if let Some(r) = self.revision.as_ref().filter(|r| r.len() == 40) {
            Selector::Commit(r.clone())
        } else if let Some(a) = &self.author {
            Selector::Author(a.clone())
        } else if let Some(a) = &self.app {
            Selector::App(a.clone())
        } else if let Some(k) = self.kind {
            Selector::Kind(k)
        } else {
            Selector::All
        }
    }
}

fn parse_kind(value: &str) -> Result<EventKind, ApiError> {
    EventKind::from_name(value).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "kind={value}: unknown event kind (one of {})",
            EventKind::ALL.map(|k| k.name()).join(", ")
        ))
    })
}

/// One page of events matching every given filter, newest first unless `order=oldest`.
pub fn events_page(reader: &StoreReader, p: &EventsParams) -> Result<EventsPage, ApiError> {
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit={limit}: must be between 1 and {MAX_LIMIT}"
        )));
    }
    let order = match p.order.as_deref() {
        None | Some("newest") => Order::NewestFirst,
        Some("oldest") => Order::OldestFirst,
        Some(o) => {
            return Err(ApiError::BadRequest(format!(
                "order={o}: expected newest or oldest"
            )));
        }
    };
    let cursor = match p.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(c.parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!("cursor={c}: not a cursor this API returned"))
        })?),
    };
    let filters = Filters {
        app: p.app.clone(),
        object: p.object.as_deref().map(ObjectFilter::parse).transpose()?,
        author: p.author.clone(),
        revision: p.revision.clone(),
        kind: p.kind.as_deref().map(parse_kind).transpose()?,
    };
    let since = p
        .since
        .as_deref()
        .map(|v| parse_time("since", v))
        .transpose()?;
    let until = p
        .until
        .as_deref()
        .map(|v| parse_time("until", v))
        .transpose()?;
    let selector = filters.selector();
    let mut query = Query {
        selector,
        order,
        limit,
        cursor,
        since,
        until,
    };
    let mut events = Vec::new();
    let mut scanned = 0;
    loop {
        let page = reader.query(&query)?;
        scanned += page.events.len();
        for env in &page.events {
            if filters.matches(env) {
                events.push(EventView::of(env));
                if events.len() == limit {
                    return Ok(EventsPage {
                        events,
                        next: Some(env.body.seq.to_string()),
                    });
                }
            }
        }
        match page.next {
            None => return Ok(EventsPage { events, next: None }),
            Some(next) if scanned >= SCAN_BUDGET => {
                return Ok(EventsPage {
                    events,
                    next: Some(next.to_string()),
                });
            }
            Some(next) => query.cursor = Some(next),
        }
    }
}

pub async fn events(
    State(state): State<ApiState>,
    Params(params): Params<EventsParams>,
) -> Result<Json<EventsPage>, ApiError> {
    let reader = state.store.reader().clone();
    blocking(move || events_page(&reader, &params).map(Json)).await
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct IntentView {
    pub kind: IntentKind,
    pub revision: Option<String>,
    pub actor: Option<String>,
    pub reason: Option<String>,
    pub seq: u64,
}

/// One App as the API lists it: its intent, where it is, and whether it is pinned.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct AppView {
    pub name: String,
    pub intent: IntentView,
    pub pinned: bool,
    pub suspended: bool,
    /// The revision applied last (null before the first sync).
    pub revision: Option<String>,
    pub applied_at: Option<String>,
    pub observed_head: Option<String>,
    pub deployable_head: Option<String>,
    /// Objects in the inventory (applied and not pruned).
    pub objects: usize,
    pub last_seq: u64,
}

pub fn app_view(name: &str, s: &AppState) -> AppView {
    let applied = s
        .revisions
        .iter()
        .filter_map(|(sha, r)| r.applied_at.map(|t| (t, sha)))
        .max();
    AppView {
        name: name.to_string(),
        intent: IntentView {
            kind: s.intent.kind,
            revision: s.intent.revision.clone(),
            actor: s.intent.actor.clone(),
            reason: s.intent.reason.clone(),
            seq: s.intent.seq,
        },
        pinned: s.intent.is_pinned(),
        suspended: s.suspended,
        revision: applied.map(|(_, sha)| sha.clone()),
        applied_at: applied.map(|(t, _)| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        observed_head: s.observed_head.clone(),
        deployable_head: s.deployable_head.clone(),
        objects: s.inventory.len(),
        last_seq: s.last_seq,
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AppsList {
    pub apps: Vec<AppView>,
}

/// The configured Apps first (in configuration order), then any App only the log knows.
pub async fn apps(State(state): State<ApiState>) -> Result<Json<AppsList>, ApiError> {
    let projections = state.store.projections().await?;
    let mut names: Vec<String> = state.apps.iter().cloned().collect();
    for name in projections.apps.keys() {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let default = AppState::default();
    let apps = names
        .iter()
        .map(|n| app_view(n, projections.apps.get(n).unwrap_or(&default)))
        .collect();
    Ok(Json(AppsList { apps }))
}

pub async fn app(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<AppView>, ApiError> {
    let found = state.store.app_state(&name).await?;
    match found {
        Some(s) => Ok(Json(app_view(&name, &s))),
        None if state.apps.contains(&name) => Ok(Json(app_view(&name, &AppState::default()))),
        None => Err(ApiError::NotFound(format!("no App named {name}"))),
    }
}

pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let path = state.store.reader().path().to_owned();
    let text = tokio::task::spawn_blocking(move || crate::metrics::METRICS.encode(Some(&path)))
        .await
        .unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

/// Body of `POST /api/v1/apps/{app}/rollback`: exactly one of `to` and `steps`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// A recorded revision: full SHA or a unique prefix.
    pub to: Option<String>,
    /// This many applied revisions back from the current one.
    pub steps: Option<u32>,
    pub reason: Option<String>,
}

/// Body of `POST /api/v1/apps/{app}/resume` (optional).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ResumeRequest {
    pub reason: Option<String>,
}

impl From<RollbackError> for ApiError {
    fn from(e: RollbackError) -> Self {
        match e {
            RollbackError::UnknownApp { .. } | RollbackError::UnknownRevision { .. } => {
                ApiError::NotFound(e.to_string())
            }
            RollbackError::NotPinned { .. } => ApiError::Conflict(e.to_string()),
            RollbackError::Store { .. } => ApiError::Internal(e.to_string()),
            _ => ApiError::BadRequest(e.to_string()),
        }
    }
}

fn reconciled(state: &ApiState, app: &str) -> Result<(), ApiError> {
    if state.apps.iter().any(|a| a == app) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!(
            "this agent does not reconcile an App named {app}"
        )))
    }
}

/// Records the rollback by the token's identity, then wakes the App so it applies now.
pub async fn rollback(
    State(state): State<ApiState>,
    Extension(who): Extension<Identity>,
    Path(app): Path<String>,
    body: Option<Json<RollbackRequest>>,
) -> Result<Json<RollbackPlan>, ApiError> {
    reconciled(&state, &app)?;
    let Json(req) = body.unwrap_or_default();
    let target = match (req.to, req.steps) {
        (Some(to), None) => RollbackTarget::Revision(to),
        (None, Some(steps)) => RollbackTarget::Steps(steps),
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of \"to\" (a revision) and \"steps\" (applied revisions back)"
                    .into(),
            ));
        }
    };
    let plan = request_rollback(&state.store, &app, target, who.actor, req.reason).await?;
    if let Some(wake) = &state.waker {
        wake(&app);
    }
    Ok(Json(plan))
}

/// Records the resume by the token's identity, then wakes the App so it follows Git now.
pub async fn resume(
    State(state): State<ApiState>,
    Extension(who): Extension<Identity>,
    Path(app): Path<String>,
    body: Option<Json<ResumeRequest>>,
) -> Result<Json<ResumePlan>, ApiError> {
    reconciled(&state, &app)?;
    let Json(req) = body.unwrap_or_default();
    let plan = request_resume(&state.store, &app, who.actor, req.reason).await?;
    if let Some(wake) = &state.waker {
        wake(&app);
    }
    Ok(Json(plan))
}
