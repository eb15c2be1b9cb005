//! Owns the API's request handlers: parameters in, the store's answer out as JSON. Store reads
//! are blocking (sled), so each runs on tokio's blocking pool and the async workers stay free.

use super::auth::Identity;
use super::extract::{Body, Path, Query as Params, present};
use super::{ApiError, ApiState};
use crate::query::{
    self, AppStatus, Blame, Category, HistoryFilter, ObjectSpec, QueryError, ReplayedApp,
    RevisionDiff, RevisionsPage, Shown,
};
use crate::reconcile::rollback::{
    ErrorClass, MIN_PREFIX, ResumePlan, RollbackError, RollbackOptions, RollbackPlan,
    RollbackTarget, request_resume, request_rollback_with,
};
use crate::shard::merge::Page;
use axum::Json;
use axum::extract::{Extension, State};
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

/// An RFC 3339 time (`2026-01-31T12:00:00Z`) or a duration back from now: a whole number of
/// seconds, minutes, hours, days or weeks (`30m`, `2h`, `7d`). Exactly the document's grammar
/// (`format: date-time`, or the pattern `^[0-9]+[smhdw]$`): anything looser would be a contract
/// only this server knows.
pub fn parse_time(name: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "{name}={value}: expected an RFC 3339 time (2026-01-31T12:00:00Z) or a duration \
             back from now (30m, 2h, 7d; units s, m, h, d, w)"
        ))
    };
    // The last byte is the unit only on a char boundary (a multi-byte last char is no unit).
    let (digits, unit) = value
        .len()
        .checked_sub(1)
        .filter(|&i| value.is_char_boundary(i))
        .map_or(("", value), |i| value.split_at(i));
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let per: i64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return Err(bad()),
        };
        let too_far = || ApiError::BadRequest(format!("{name}={value}: too far back"));
        let secs = digits
            .parse::<i64>()
            .ok()
            .and_then(|n| n.checked_mul(per))
            .ok_or_else(too_far)?;
        return chrono::Duration::try_seconds(secs)
            .and_then(|d| Utc::now().checked_sub_signed(d))
            .ok_or_else(too_far);
    }
    if !rfc3339_shaped(value) {
        return Err(bad());
    }
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| bad())
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)`, `T` and `Z` in either case: RFC 3339's
/// date-time. chrono also takes a space for the `T`, which the document's format does not.
fn rfc3339_shaped(value: &str) -> bool {
    let b = value.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, set: &[u8]| b.get(i).is_some_and(|c| set.contains(c));
    if !(digits(0..4)
        && at(4, b"-")
        && digits(5..7)
        && at(7, b"-")
        && digits(8..10)
        && at(10, b"Tt")
        && digits(11..13)
        && at(13, b":")
        && digits(14..16)
        && at(16, b":")
        && digits(17..19))
    {
        return false;
    }
    let mut i = 19;
    if at(i, b".") {
        let start = i + 1;
        i = start;
        while at(i, b"0123456789") {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            digits(i + 1..i + 3) && at(i + 3, b":") && digits(i + 4..i + 6) && i + 6 == b.len()
        }
        _ => false,
    }
}

/// A position in one store's log: decimal digits only (`str::parse` would also take `+5`).
fn seq_param(name: &str, value: &Option<String>) -> Result<Option<u64>, ApiError> {
    value
        .as_deref()
        .map(|text| {
            text.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| text.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "{name}={text}: expected a sequence number (the `next` of a page of \
                         this agent, which is not sharded)"
                    ))
                })
        })
        .transpose()
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
            // Exactly the names (the document's enum); the CLI's own parser also takes `Drift`.
            category: self
                .kind
                .as_deref()
                .map(|k| {
                    Category::ALL
                        .into_iter()
                        .find(|c| c.name() == k)
                        .ok_or_else(|| QueryError::BadCategory(k.to_string()))
                })
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
    filter.cursor = seq_param("cursor", &params.cursor)?;
    let after = seq_param("after", &params.after)?;
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
    let text = tokio::task::spawn_blocking(move || {
        let size = crate::store::sled_engine::size_on_disk(&path).ok();
        crate::metrics::METRICS.encode(size.map(|(_, allocated)| allocated))
    })
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

/// Body of `POST /api/v1/apps/{app}/rollback`: exactly one of `to` and `steps`. Unknown fields
/// and explicit nulls are refused: a misspelt `require_healty` silently ignored would roll back
/// without the check the caller asked for.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// A recorded revision: full SHA or a unique prefix.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub to: Option<String>,
    /// This many applied revisions back from the current one.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub steps: Option<u32>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub reason: Option<String>,
    /// Refuse (409) a revision the App was never reported healthy on.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub require_healthy: Option<bool>,
}

/// Body of `POST /api/v1/apps/{app}/resume` (optional); unknown fields refused as for rollback.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub reason: Option<String>,
}

/// A SHA-1 in hex: no recorded revision has a longer name (the document's pattern for `to`
/// is 4 to 40 hex digits).
const MAX_PREFIX: usize = 40;

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
    if (state.apps)(app) {
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
    Body(body): Body<RollbackRequest>,
) -> Result<Json<RollbackPlan>, ApiError> {
    reconciled(&state, &app)?;
    let req = body.unwrap_or_default();
    let target = match (req.to, req.steps) {
        // Checked here, not only by the rollback: it trims and lowercases for the CLI, and the
        // API's contract is the document's pattern, nothing looser. Same words as the CLI's.
        (Some(to), None)
            if !crate::reconcile::rollback::is_chart_version(&to)
                && (!(MIN_PREFIX..=MAX_PREFIX).contains(&to.len())
                    || !to.bytes().all(|b| b.is_ascii_hexdigit())) =>
        {
            return Err(RollbackError::BadRevision { app, prefix: to }.into());
        }
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
    Body(body): Body<ResumeRequest>,
) -> Result<Json<ResumePlan>, ApiError> {
    reconciled(&state, &app)?;
    let req = body.unwrap_or_default();
    let plan = request_resume(&state.store, &app, who.actor, req.reason).await?;
    if let Some(wake) = &state.waker {
        wake(&app);
    }
    Ok(Json(plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_exactly_rfc_3339_or_a_whole_number_of_one_unit() {
        let ok = |v: &str| parse_time("at", v).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(
            ok("2026-01-31T12:00:00Z").to_rfc3339(),
            "2026-01-31T12:00:00+00:00"
        );
        assert_eq!(
            ok("2026-01-31t13:00:00.25+01:00").to_rfc3339(),
            "2026-01-31T12:00:00.250+00:00"
        );
        let now = Utc::now();
        let ago = now - ok("2h");
        assert!((7_199..=7_201).contains(&ago.num_seconds()), "{ago}");
        assert!(now - ok("0s") < chrono::Duration::seconds(2));
        ok("1w");
        for bad in [
            "",
            "h",
            "2",
            "1h30m",
            "2 h",
            "2hours",
            "+2h",
            "-2h",
            "2H",
            "é",
            "2é",
            "2026-01-31 12:00:00Z",
            "2026-01-31T12:00:00",
            "2026-01-31T12:00Z",
            "2026-02-30T12:00:00Z",
            "2026-01-31T12:00:00.Z",
            "2026-01-31T12:00:00+0100",
            "2026-01-31T12:00:00Zx",
        ] {
            let e = parse_time("at", bad).unwrap_err();
            assert_eq!(e.code(), "bad_request", "{bad:?}");
            assert!(
                e.to_string().starts_with(&format!("at={bad}:")),
                "{bad:?}: {e}"
            );
        }
        // Digits that overflow are refused, not wrapped.
        let e = parse_time("since", "99999999999999999999d").unwrap_err();
        assert!(e.to_string().contains("too far back"), "{e}");
    }

    #[test]
    fn positions_are_digits_only() {
        assert_eq!(seq_param("after", &Some("42".into())).unwrap(), Some(42));
        assert_eq!(seq_param("after", &None).unwrap(), None);
        for bad in ["+5", "-1", " 5", "5 ", "0:5", "18446744073709551616"] {
            let e = seq_param("after", &Some(bad.into())).unwrap_err();
            assert!(e.to_string().starts_with(&format!("after={bad}:")), "{e}");
        }
    }
}

/// The path suffix of the live event stream (the fan-out lets it through to this shard).
pub const STREAM_SUFFIX: &str = "/events/stream";

/// A live stream ends after this long; clients reconnect with the last id they saw, so a
/// connection never outlives a proxy's idle timeout or pins a server task forever.
const STREAM_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Query parameters of `GET /api/v1/apps/{app}/events/stream`: the filters of
/// `GET /api/v1/events` (the App is in the path) and where to start.
#[derive(Debug, Default, Deserialize)]
pub struct StreamParams {
    pub object: Option<String>,
    pub author: Option<String>,
    pub revision: Option<String>,
    pub user: Option<String>,
    pub kind: Option<String>,
    /// Events appended after this sequence number; default: after the newest one now.
    pub after: Option<String>,
    /// In a sharded fleet, the shard whose log `after` (or `Last-Event-ID`) counts in: a fleet's
    /// rows name their shard. A position in another shard's log says nothing about this one's
    /// (the App moved since), so the stream then starts after the newest event now.
    pub shard: Option<u32>,
}

/// Server-sent events: every event of the App that matches the filters, as it is appended,
/// oldest first (`id:` the sequence number, `event: event`, `data:` the EventRow as JSON). The
/// writer signals each durable flush, so an idle stream costs nothing but its keep-alive
/// comment; `Last-Event-ID` (a reconnecting EventSource) wins over `after`.
pub async fn event_stream(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    headers: axum::http::HeaderMap,
    Params(params): Params<StreamParams>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    use futures::StreamExt;
    let filter = EventsParams {
        app: Some(app.clone()),
        object: params.object,
        author: params.author,
        revision: params.revision,
        user: params.user,
        kind: params.kind,
        ..EventsParams::default()
    }
    .filter()?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let after = match seq_param("Last-Event-ID", &last_event_id)? {
        Some(seq) => Some(seq),
        None => seq_param("after", &params.after)?,
    };
    // An agent without shards is the one shard of its fleet (index 0).
    let here = state.fleet.as_ref().map(|f| f.shards.index);
    let after = after.filter(|_| params.shard.is_none_or(|s| s == here.unwrap_or(0)));
    let projections = state.projections().await?;
    let known = projections.apps.contains_key(&app) || (state.apps)(&app);
    if !known {
        return Err(ApiError::NotFound(format!("no App named {app}")));
    }
    let reader = state.store.reader().clone();
    let after = match after {
        Some(seq) => seq,
        None => blocking(move || Ok(reader.last_seq()?)).await?,
    };
    // In a fleet, a stream of an App this shard reconciles ends when the App moves to another
    // shard, which appends its events from then on: the client reconnects (with its last id and
    // this shard's index) and is streamed by the new owner.
    let owned_here = here.is_some() && (state.apps)(&app);
    let mut stop = state.stop.clone();
    let appended = state.store.appended();
    let events = futures::stream::unfold(
        (state, appended, after, std::collections::VecDeque::new()),
        move |(state, mut appended, mut after, mut queue)| {
            let filter = filter.clone();
            let app = app.clone();
            async move {
                loop {
                    if let Some(row) = queue.pop_front() {
                        return Some((row, (state, appended, after, queue)));
                    }
                    // Mark the signal seen before reading: an append between the read and
                    // the wait below then wakes the wait instead of being missed.
                    appended.borrow_and_update();
                    let projections = state.projections().await.ok()?;
                    let reader = state.store.reader().clone();
                    let f = filter.clone();
                    let page = blocking(move || {
                        Ok(query::history_after(&reader, &projections, &f, after)?)
                    })
                    .await
                    .ok()?;
                    let more = page.next.is_some();
                    if let Some(next) = page.next {
                        after = after.max(next);
                    }
                    for mut row in page.events {
                        after = after.max(row.seq);
                        row.shard = here;
                        let data = serde_json::to_string(&row).ok()?;
                        queue.push_back(
                            SseEvent::default()
                                .id(row.seq.to_string())
                                .event("event")
                                .data(data),
                        );
                    }
                    if queue.is_empty() && owned_here && !(state.apps)(&app) {
                        return None;
                    }
                    // A page that examined its limit without a match still moved `after`:
                    // read on before waiting.
                    if queue.is_empty() && !more && appended.changed().await.is_err() {
                        return None;
                    }
                }
            }
        },
    )
    .map(Ok::<_, std::convert::Infallible>);
    let stopped = async move {
        match stop.as_mut() {
            Some(stop) => {
                let _ = stop.wait_for(|s| *s).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    let ends = async move {
        tokio::select! {
            () = stopped => {}
            () = tokio::time::sleep(STREAM_MAX_AGE) => {}
        }
    };
    let stream = events.take_until(Box::pin(ends));
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The presented token's identity (`GET /api/v1/whoami`).
#[derive(Debug, Serialize)]
pub struct WhoAmI {
    pub actor: String,
    /// `read` or `admin`.
    pub role: &'static str,
}

/// Who the token is: the UI asks once at sign-in to decide whether to offer rollback and
/// resume (the POST routes refuse a read token whatever the UI shows).
pub async fn whoami(Extension(identity): Extension<Identity>) -> Json<WhoAmI> {
    Json(WhoAmI {
        actor: identity.actor,
        role: match identity.role {
            super::auth::Role::Admin => "admin",
            super::auth::Role::Read => "read",
        },
    })
}

/// Body of `GET /api/v1/integrity`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Integrity {
    /// This agent's store (in a sharded fleet: the shard asked).
    pub store: StoreSize,
    /// The last `reckon store verify` of this store; `None`: never verified (by a reckon that
    /// records the result).
    pub last_verify: Option<crate::store::last_verify::LastVerify>,
    /// Events appended after the last verification (not covered by it).
    pub appended_since: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StoreSize {
    /// Sum of the files' lengths.
    pub bytes: u64,
    /// Disk space the files take (what `du` reports).
    pub allocated_bytes: u64,
    /// The newest event's sequence number.
    pub last_seq: u64,
}

/// The last verification's record and the store's size: two file reads and a directory walk,
/// never a verification (see [`crate::store::last_verify`] for why).
pub async fn integrity(State(state): State<ApiState>) -> Result<Json<Integrity>, ApiError> {
    let reader = state.store.reader().clone();
    blocking(move || {
        let path = reader.path().to_owned();
        let io = |what: &str, e: std::io::Error| {
            ApiError::Internal(format!("{what} of the store {}: {e}", path.display()))
        };
        let (bytes, allocated_bytes) = crate::store::sled_engine::size_on_disk(&path)
            .map_err(|e| io("reading the size", e))?;
        let last_seq = reader.last_seq()?;
        let last_verify = crate::store::last_verify::read(&path)
            .map_err(|e| io("reading the last verification", e))?;
        Ok(Json(Integrity {
            appended_since: last_verify
                .as_ref()
                .map(|v| last_seq.saturating_sub(v.last_seq)),
            store: StoreSize {
                bytes,
                allocated_bytes,
                last_seq,
            },
            last_verify,
        }))
    })
    .await
}
