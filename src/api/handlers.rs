//! Owns the API's request handlers: parameters in, the store's answer out as JSON. Store reads
//! are blocking (sled), so each runs on tokio's blocking pool and the async workers stay free.

use super::auth::Identity;
use super::{ApiError, ApiState};
use crate::query::{
    self, AppStatus, Blame, Category, HistoryFilter, ObjectSpec, QueryError, ReplayedApp,
    RevisionDiff, RevisionsPage, Shown,
};
use crate::reconcile::rollback::{
    ErrorClass, ResumePlan, RollbackError, RollbackOptions, RollbackPlan, RollbackTarget,
    request_resume, request_rollback_with,
};
use crate::shard::merge::Page;
use axum::Json;
use axum::extract::{Extension, Path, Query as Params, State};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Runs a blocking store read off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("read task: {e}")))?
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::UnknownApp(_)
            | QueryError::UnknownRevision { .. }
            | QueryError::NotRendered { .. }
            | QueryError::NotManaged { .. }
            | QueryError::NothingAt { .. } => ApiError::NotFound(e.to_string()),
            QueryError::Store(_) | QueryError::Blob { .. } => ApiError::Internal(e.to_string()),
            QueryError::AmbiguousRevision { .. }
            | QueryError::BadObject { .. }
            | QueryError::ManagedBySeveral { .. }
            | QueryError::BadCategory(_)
            | QueryError::BadField(_) => ApiError::BadRequest(e.to_string()),
        }
    }
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

/// Query parameters of `GET /api/v1/events`.
#[derive(Debug, Default, Deserialize)]
pub struct EventsParams {
    pub app: Option<String>,
    pub object: Option<String>,
    pub author: Option<String>,
    pub revision: Option<String>,
    /// A Kubernetes username: the changes the audit log attributes to them.
    pub user: Option<String>,
    /// A category: commit, drift, apply, prune, rollback or error.
    pub kind: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<usize>,
    /// The `next` of the previous page (older events): a sequence number, or a fleet's
    /// `SHARD:POS,...` (docs/api.md, Sharding).
    pub cursor: Option<String>,
    /// Events appended after this position, oldest first (how `--follow` polls): a sequence
    /// number, or a fleet's `SHARD:POS,...`.
    pub after: Option<String>,
    /// In a fleet: answer without the shards that do not answer (listed in `missing`) instead
    /// of failing with 502.
    pub partial: Option<bool>,
}

impl EventsParams {
    /// The filter without its position (`cursor`/`after` are a sequence number for one store
    /// and a composite cursor for a fleet; their callers read them).
    pub fn filter(&self) -> Result<HistoryFilter, ApiError> {
        let limit = self.limit.unwrap_or(100);
        if limit == 0 || limit > query::MAX_LIMIT {
            return Err(ApiError::BadRequest(format!(
                "limit={limit}: must be between 1 and {}",
                query::MAX_LIMIT
            )));
        }
        if self.cursor.is_some() && self.after.is_some() {
            return Err(ApiError::BadRequest(
                "cursor and after: give one (cursor pages back, after follows forward)".into(),
            ));
        }
        Ok(HistoryFilter {
            app: self.app.clone(),
            object: self.object.clone(),
            author: self.author.clone(),
            revision: self.revision.clone(),
            user: self.user.clone(),
            category: self
                .kind
                .as_deref()
                .map(|k| k.parse::<Category>())
                .transpose()?,
            since: self
                .since
                .as_deref()
                .map(|v| parse_time("since", v))
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(|v| parse_time("until", v))
                .transpose()?,
            limit,
            cursor: None,
        })
    }
}

/// The history page the parameters select (see [`query::history`] and
/// [`query::history_after`]); in a fleet this answers for this shard only (the fan-out in
/// [`super::fanout`] merges the shards).
pub async fn events(
    State(state): State<ApiState>,
    Params(params): Params<EventsParams>,
) -> Result<Json<Page>, ApiError> {
    let mut filter = params.filter()?;
    let seq = |name: &str, v: &Option<String>| -> Result<Option<u64>, ApiError> {
        v.as_deref()
            .map(|text| {
                text.parse::<u64>().map_err(|_| {
                    ApiError::BadRequest(format!(
                        "{name}={text}: expected a sequence number (the `next` of a page of \
                         this agent, which is not sharded)"
                    ))
                })
            })
            .transpose()
    };
    filter.cursor = seq("cursor", &params.cursor)?;
    let after = seq("after", &params.after)?;
    let projections = state.projections().await?;
    let reader = state.store.reader().clone();
    blocking(move || {
        Ok(Json(
            match after {
                Some(after) => query::history_after(&reader, &projections, &filter, after)?,
                None => query::history(&reader, &projections, &filter)?,
            }
            .into(),
        ))
    })
    .await
}

/// Every App's status (intent, revisions, last sync, health, drift, pinned).
pub async fn apps(State(state): State<ApiState>) -> Result<Json<Vec<AppStatus>>, ApiError> {
    let projections = state.projections().await?;
    let reader = state.store.reader().clone();
    blocking(move || Ok(Json(query::status(&reader, &projections, None)?))).await
}

/// One App's status.
pub async fn app(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<AppStatus>, ApiError> {
    let projections = state.projections().await?;
    let reader = state.store.reader().clone();
    blocking(move || {
        let mut all = query::status(&reader, &projections, Some(&name))?;
        all.pop()
            .map(Json)
            .ok_or_else(|| ApiError::NotFound(format!("no App named {name}")))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
pub struct PageParams {
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// Every revision the App observed or applied, newest first, a page at a time (`next`: the SHA
/// to pass as `cursor`; the order is stable while revisions are added).
pub async fn revisions(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Params(params): Params<PageParams>,
) -> Result<Json<RevisionsPage>, ApiError> {
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > query::MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit={limit}: must be between 1 and {}",
            query::MAX_LIMIT
        )));
    }
    let projections = state.projections().await?;
    let reader = state.store.reader().clone();
    blocking(move || {
        Ok(Json(query::revisions_page(
            &reader,
            &projections,
            &app,
            limit,
            params.cursor.as_deref(),
        )?))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
pub struct BlameParams {
    /// `KIND/NAMESPACE/NAME` or `KIND/NAME`.
    pub object: Option<String>,
    pub field: Option<String>,
    /// Needed only when several Apps manage the object.
    pub app: Option<String>,
}

pub async fn blame(
    State(state): State<ApiState>,
    Params(params): Params<BlameParams>,
) -> Result<Json<Blame>, ApiError> {
    let object: ObjectSpec = params
        .object
        .as_deref()
        .ok_or_else(|| ApiError::BadRequest("object: required (KIND/NAMESPACE/NAME)".into()))?
        .parse()?;
    let projections = state.projections().await?;
    let reader = state.store.reader().clone();
    blocking(move || {
        Ok(Json(query::blame(
            &reader,
            &projections,
            &object,
            params.app.as_deref(),
            params.field.as_deref(),
        )?))
    })
    .await
}

/// The manifests recorded for one revision (from the blob store).
pub async fn manifests(
    State(state): State<ApiState>,
    Path((app, rev)): Path<(String, String)>,
) -> Result<Json<Shown>, ApiError> {
    let projections = state.projections().await?;
    let reader = state.store.reader().clone();
    blocking(move || Ok(Json(query::show(&reader, &projections, &app, &rev)?))).await
}

#[derive(Debug, Default, Deserialize)]
pub struct DiffParams {
    pub from: Option<String>,
    pub to: Option<String>,
}

pub async fn diff(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Params(params): Params<DiffParams>,
) -> Result<Json<RevisionDiff>, ApiError> {
    let (Some(from), Some(to)) = (params.from, params.to) else {
        return Err(ApiError::BadRequest(
            "from and to: both required (recorded revisions, SHA or prefix)".into(),
        ));
    };
    let projections = state.projections().await?;
    let reader = state.store.reader().clone();
    blocking(move || {
        Ok(Json(query::diff_revisions(
            &reader,
            &projections,
            &app,
            &from,
            &to,
        )?))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
pub struct ReplayParams {
    pub at: Option<String>,
    pub app: Option<String>,
}

/// Intent and inventory as they were at `at`, folded from the log alone.
pub async fn replay(
    State(state): State<ApiState>,
    Params(params): Params<ReplayParams>,
) -> Result<Json<Vec<ReplayedApp>>, ApiError> {
    let at = params
        .at
        .as_deref()
        .ok_or_else(|| ApiError::BadRequest("at: required (RFC 3339 or a duration ago)".into()))
        .and_then(|v| parse_time("at", v))?;
    let reader = state.store.reader().clone();
    blocking(move || Ok(Json(query::replay(&reader, at, params.app.as_deref())?))).await
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
    /// Refuse (409) a revision the App was never reported healthy on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_healthy: Option<bool>,
}

/// Body of `POST /api/v1/apps/{app}/resume` (optional).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ResumeRequest {
    pub reason: Option<String>,
}

impl From<RollbackError> for ApiError {
    fn from(e: RollbackError) -> Self {
        match e.class() {
            ErrorClass::NotFound => ApiError::NotFound(e.to_string()),
            ErrorClass::Invalid => ApiError::BadRequest(e.to_string()),
            ErrorClass::Conflict => ApiError::Conflict(e.to_string()),
            ErrorClass::Internal => ApiError::Internal(e.to_string()),
        }
    }
}

fn reconciled(state: &ApiState, app: &str) -> Result<(), ApiError> {
    if state
        .apps
        .read()
        .expect("API app names lock")
        .iter()
        .any(|a| a == app)
    {
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
    let options = RollbackOptions {
        require_healthy: req.require_healthy.unwrap_or(false),
    };
    let plan =
        request_rollback_with(&state.store, &app, target, who.actor, req.reason, options).await?;
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
