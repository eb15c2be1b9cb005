//! Owns rollback and resume intents: resolving a requested target (a SHA prefix, or N applied
//! revisions back) against what the App recorded, and recording the intent with its actor and
//! reason. The CLI (`reckon rollback`, `reckon resume`) and the HTTP API both call
//! [`request_rollback`] and [`request_resume`]; the next pass does the work (a pinned App applies
//! the manifests recorded for its revision, see [`super::Reconciler::pass`]).

use crate::event::{Digest, Draft, EnvelopeBody, Event, Health, IntentKind, IntentRecorded};
use crate::store::projection::{self, AppState};
use crate::store::{EventRead, Query, Selector, StoreError, writer::StoreHandle};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeSet;

/// Shortest SHA prefix accepted: shorter ones are too likely to be ambiguous to mean anything.
pub const MIN_PREFIX: usize = 4;

/// Why a rollback or resume was refused. Each names the App and what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("no App named {app:?} in the store (it has never been fetched or synced)")]
    UnknownApp { app: String },
    #[error("an intent needs an actor (who asks for it); got an empty one")]
    EmptyActor,
    #[error(
        "App {app}: {prefix:?} is not a revision: give a commit SHA or a unique prefix of at \
         least {MIN_PREFIX} hex digits"
    )]
    BadRevision { app: String, prefix: String },
    #[error("App {app}: no recorded revision starts with {prefix} (see `reckon revisions {app}`)")]
    UnknownRevision { app: String, prefix: String },
    #[error("App {app}: revision prefix {prefix} is ambiguous: it matches {}", candidates.join(", "))]
    AmbiguousRevision {
        app: String,
        prefix: String,
        candidates: Vec<String>,
    },
    #[error("App {app}: revision {revision} cannot be rolled back to: {why}")]
    NotApplied {
        app: String,
        revision: String,
        why: &'static str,
    },
    #[error("App {app}: --steps must be at least 1")]
    ZeroSteps { app: String },
    #[error("App {app}: no revision has been applied yet, so there is nothing to roll back to")]
    NothingApplied { app: String },
    #[error(
        "App {app}: cannot go back {steps} applied revision(s) from {current}: only {available} \
         other applied revision(s) are recorded"
    )]
    NotEnoughHistory {
        app: String,
        steps: u32,
        current: String,
        available: usize,
    },
    #[error(
        "App {app}: revision {revision} was applied but never reported healthy; \
         --require-healthy refuses it (leave it out to roll back anyway)"
    )]
    NeverHealthy { app: String, revision: String },
    #[error(
        "App {app}: no applied revision is chart version {version} (recorded versions: {})",
        if recorded.is_empty() { "none".to_string() } else { recorded.join(", ") }
    )]
    UnknownChartVersion {
        app: String,
        version: String,
        recorded: Vec<String>,
    },
    #[error(
        "App {app}: chart version {version} was applied as more than one chart archive (it was \
         published again): give one's digest prefix: {}",
        candidates.join(", ")
    )]
    AmbiguousChartVersion {
        app: String,
        version: String,
        candidates: Vec<String>,
    },
    #[error("App {app} is not pinned (it follows Git); there is nothing to resume")]
    NotPinned { app: String },
    #[error("App {app}: recording the intent: {source}")]
    Store {
        app: String,
        #[source]
        source: StoreError,
    },
}

/// How a caller should report a [`RollbackError`] (the HTTP API maps it to a status code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The App is unknown (404).
    NotFound,
    /// The request names no usable target (400/422).
    Invalid,
    /// The App's state does not allow it: resume of an App that is not pinned (409).
    Conflict,
    /// The store failed (500).
    Internal,
}

impl RollbackError {
    pub fn class(&self) -> ErrorClass {
        match self {
            RollbackError::UnknownApp { .. } => ErrorClass::NotFound,
            RollbackError::NotPinned { .. } | RollbackError::NeverHealthy { .. } => {
                ErrorClass::Conflict
            }
            RollbackError::Store { .. } => ErrorClass::Internal,
            RollbackError::EmptyActor
            | RollbackError::BadRevision { .. }
            | RollbackError::UnknownRevision { .. }
            | RollbackError::AmbiguousRevision { .. }
            | RollbackError::UnknownChartVersion { .. }
            | RollbackError::AmbiguousChartVersion { .. }
            | RollbackError::NotApplied { .. }
            | RollbackError::ZeroSteps { .. }
            | RollbackError::NothingApplied { .. }
            | RollbackError::NotEnoughHistory { .. } => ErrorClass::Invalid,
        }
    }
}

/// What to roll back to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackTarget {
    /// A full commit SHA or a unique prefix of one the App recorded.
    Revision(String),
    /// This many applied revisions back from the one currently applied, by applied time.
    Steps(u32),
}

/// A recorded rollback: the revision the App is now pinned to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RollbackPlan {
    pub app: String,
    /// The full SHA the App is pinned to.
    pub revision: String,
    /// The blob address of the manifests recorded for it (what the next pass applies).
    pub digest: String,
    /// When a sync of it last finished.
    pub applied_at: DateTime<Utc>,
    /// The revision applied before the rollback, if any.
    pub previous: Option<String>,
    /// Whether the App was ever reported healthy while the revision was the applied one.
    /// Applied is not healthy: a revision that never became ready can still be rolled back to
    /// (it is what was running), with a warning.
    pub ever_healthy: bool,
    /// Said to the user when the rollback goes ahead with a caveat (never healthy).
    pub warning: Option<String>,
    /// The IntentRecorded event's sequence number.
    pub seq: u64,
}

/// How strict a rollback is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RollbackOptions {
    /// Refuse a revision the App was never reported healthy on.
    pub require_healthy: bool,
}

/// A recorded resume: the App follows Git again from the next pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResumePlan {
    pub app: String,
    /// The revision the App was pinned to.
    pub unpinned: Option<String>,
    /// The revision the next pass deploys (the source's deployable head), if one is known.
    pub follows: Option<String>,
    pub seq: u64,
}

/// A target resolved against the App's recorded revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub revision: String,
    pub digest: Digest,
    pub applied_at: DateTime<Utc>,
    pub previous: Option<String>,
}

/// Revisions a sync finished for (not outright failed), newest last applied first.
fn applied_newest_first(state: &AppState) -> Vec<(&str, DateTime<Utc>)> {
    let mut applied: Vec<(&str, DateTime<Utc>)> = state
        .revisions
        .iter()
        .filter_map(|(sha, r)| Some((sha.as_str(), r.applied_at?)))
        .collect();
    // Ties (same microsecond) broken by SHA so the order is stable.
    applied.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    applied
}

/// Resolves `target` against the App's recorded revisions. Pure: the state is the App's
/// projection. Only a revision that was rendered (its manifests are in the blob store) and whose
/// last sync did not fail outright can be a target.
pub fn resolve(
    app: &str,
    state: &AppState,
    target: &RollbackTarget,
) -> Result<Resolved, RollbackError> {
    let applied = applied_newest_first(state);
    let previous = applied.first().map(|(sha, _)| sha.to_string());
    let revision = match target {
        RollbackTarget::Revision(prefix) => {
            let prefix = prefix.trim().to_ascii_lowercase();
            if prefix.len() < MIN_PREFIX || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(RollbackError::BadRevision {
                    app: app.into(),
                    prefix,
                });
            }
            let candidates: Vec<&String> = state
                .revisions
                .range(prefix.clone()..)
                .take_while(|(sha, _)| sha.starts_with(&prefix))
                .map(|(sha, _)| sha)
                .collect();
            match candidates.as_slice() {
                [] => {
                    return Err(RollbackError::UnknownRevision {
                        app: app.into(),
                        prefix,
                    });
                }
                [one] => (*one).clone(),
                many => {
                    return Err(RollbackError::AmbiguousRevision {
                        app: app.into(),
                        prefix,
                        candidates: many.iter().map(|s| s.to_string()).collect(),
                    });
                }
            }
        }
        RollbackTarget::Steps(0) => return Err(RollbackError::ZeroSteps { app: app.into() }),
        RollbackTarget::Steps(steps) => {
            let Some((current, _)) = applied.first() else {
                return Err(RollbackError::NothingApplied { app: app.into() });
            };
            match applied.get(*steps as usize) {
                Some((sha, _)) => sha.to_string(),
                None => {
                    return Err(RollbackError::NotEnoughHistory {
                        app: app.into(),
                        steps: *steps,
                        current: current.to_string(),
                        available: applied.len() - 1,
                    });
                }
            }
        }
    };
    let entry = &state.revisions[&revision];
    let not_applied = |why| RollbackError::NotApplied {
        app: app.into(),
        revision: revision.clone(),
        why,
    };
    let Some(digest) = entry.digest else {
        return Err(not_applied(
            "it was never rendered, so no manifests are recorded for it",
        ));
    };
    let Some(applied_at) = entry.applied_at else {
        return Err(not_applied(
            "no sync of it ever finished without failing outright",
        ));
    };
    Ok(Resolved {
        revision,
        digest,
        applied_at,
        previous,
    })
}

/// Whether a rollback target names a chart version (`1.2.3`, `v1.2.3-rc.1`) rather than a
/// revision: a semver version has dots, a digest prefix never does.
pub fn is_chart_version(target: &str) -> bool {
    let target = target.trim();
    target.contains('.')
        && semver::Version::parse(target.strip_prefix('v').unwrap_or(target)).is_ok()
}

/// The revision a chart App applied as chart `version`: `charts` holds each recorded revision
/// with the version its `ChartObserved` named. Only applied revisions count (a version passed
/// over was never rendered); the same version applied as two archives (published again) is
/// ambiguous, and the error lists both. Pure.
pub fn revision_of_chart_version(
    app: &str,
    state: &AppState,
    charts: &[(String, String)],
    version: &str,
) -> Result<String, RollbackError> {
    let bare = |v: &str| v.trim().trim_start_matches('v').to_string();
    let wanted = bare(version);
    let matching: Vec<&String> = charts
        .iter()
        .filter(|(_, v)| bare(v) == wanted)
        .map(|(sha, _)| sha)
        .collect();
    let applied: Vec<&String> = matching
        .iter()
        .copied()
        .filter(|sha| {
            state
                .revisions
                .get(*sha)
                .is_some_and(|r| r.applied_at.is_some() && r.digest.is_some())
        })
        .collect();
    match (applied.as_slice(), matching.as_slice()) {
        ([one], _) => Ok((*one).clone()),
        // Seen but never applied: resolving it says why it cannot be a target.
        ([], [one]) => Ok((*one).clone()),
        ([], []) => {
            let mut recorded: Vec<String> = charts.iter().map(|(_, v)| v.clone()).collect();
            recorded.sort();
            recorded.dedup();
            Err(RollbackError::UnknownChartVersion {
                app: app.into(),
                version: version.trim().into(),
                recorded,
            })
        }
        (applied, matching) => {
            let many = if applied.is_empty() {
                matching
            } else {
                applied
            };
            Err(RollbackError::AmbiguousChartVersion {
                app: app.into(),
                version: version.trim().into(),
                candidates: many
                    .iter()
                    .map(|sha| {
                        let applied = state
                            .revisions
                            .get(*sha)
                            .and_then(|r| r.applied_at)
                            .map(|t| format!(" (applied {})", t.to_rfc3339()))
                            .unwrap_or_default();
                        format!("{}{applied}", &sha[..sha.len().min(12)])
                    })
                    .collect(),
            })
        }
    }
}

/// Each recorded revision of the App with the chart version its `ChartObserved` named.
fn chart_versions(
    store: &StoreHandle,
    app: &str,
    state: &AppState,
) -> Result<Vec<(String, String)>, RollbackError> {
    let mut out = Vec::new();
    for (sha, entry) in &state.revisions {
        let Some(seq) = entry.commit_seq else {
            continue;
        };
        let envelope = store
            .reader()
            .get(seq)
            .map_err(|source| RollbackError::Store {
                app: app.into(),
                source,
            })?;
        if let Some(Event::ChartObserved(c)) = envelope.map(|e| e.body.event) {
            out.push((sha.clone(), c.version));
        }
    }
    Ok(out)
}

/// The revisions the App was reported healthy on, from its events oldest first. Pure.
///
/// A pass records the health its applies reached before its `SyncFinished`, so an App-level
/// `HealthChanged` belongs to the revision whose sync is running (after `SyncStarted`), or else
/// to the revision applied last; and an App that was healthy before a sync and recorded no change
/// during it stayed healthy on the new revision.
pub fn healthy_revisions<'a>(
    events: impl IntoIterator<Item = &'a EnvelopeBody>,
) -> BTreeSet<String> {
    let mut healthy = BTreeSet::new();
    let mut applied: Option<&str> = None;
    let mut syncing: Option<&str> = None;
    let mut health = Health::Unknown;
    for body in events {
        match &body.event {
            Event::SyncStarted(s) => syncing = Some(&s.revision),
            Event::HealthChanged(h) if h.object.is_none() => {
                health = h.to;
                if let (Health::Healthy, Some(rev)) = (health, syncing.or(applied)) {
                    healthy.insert(rev.to_string());
                }
            }
            Event::SyncFinished(f) => {
                syncing = None;
                if projection::applied(f) {
                    applied = Some(&f.revision);
                    if health == Health::Healthy {
                        healthy.insert(f.revision.clone());
                    }
                }
            }
            _ => {}
        }
    }
    healthy
}

/// Whether the App was ever reported healthy on `revision` (reads the App's events).
fn ever_healthy(store: &StoreHandle, app: &str, revision: &str) -> Result<bool, RollbackError> {
    let err = |source| RollbackError::Store {
        app: app.into(),
        source,
    };
    let mut query = Query::new(Selector::App(app.to_string()))
        .oldest_first()
        .limit(1000);
    let mut bodies = Vec::new();
    loop {
        let page = store.reader().query(&query).map_err(err)?;
        bodies.extend(page.events.into_iter().filter(|e| {
            matches!(
                e.body.event,
                Event::SyncStarted(_) | Event::SyncFinished(_) | Event::HealthChanged(_)
            )
        }));
        if page.next.is_none() {
            break;
        }
        query = query.after(page.next);
    }
    Ok(healthy_revisions(bodies.iter().map(|e| &e.body)).contains(revision))
}

fn check_actor(actor: &str) -> Result<(), RollbackError> {
    if actor.trim().is_empty() {
        return Err(RollbackError::EmptyActor);
    }
    Ok(())
}

async fn app_state(store: &StoreHandle, app: &str) -> Result<AppState, RollbackError> {
    found(app, store.app_state(app).await)
}

/// The App's state with its whole revision table, stored revisions included: a rollback may
/// go back to any of them.
async fn complete_state(store: &StoreHandle, app: &str) -> Result<AppState, RollbackError> {
    found(app, store.complete_app_state(app).await)
}

/// A state read for `app`: a store failure or an unknown App as the rollback's error.
fn found(
    app: &str,
    read: Result<Option<AppState>, crate::store::StoreError>,
) -> Result<AppState, RollbackError> {
    read.map_err(|source| RollbackError::Store {
        app: app.into(),
        source,
    })?
    .ok_or_else(|| RollbackError::UnknownApp { app: app.into() })
}

async fn record(
    store: &StoreHandle,
    app: &str,
    actor: &str,
    intent: IntentRecorded,
) -> Result<u64, RollbackError> {
    let draft = Draft::new(Some(app), Event::IntentRecorded(intent)).by(actor);
    let appended = store
        .append(vec![draft])
        .await
        .map_err(|source| RollbackError::Store {
            app: app.into(),
            source,
        })?;
    Ok(appended.last_seq)
}

/// Resolves `target` and records `IntentRecorded{Rollback, revision, reason}` by `actor`: the
/// App is pinned to that revision from the next pass on (by the agent or `reckon sync`), which
/// applies the manifests recorded for it and prunes what did not exist then.
pub async fn request_rollback(
    store: &StoreHandle,
    app: &str,
    target: RollbackTarget,
    actor: String,
    reason: Option<String>,
) -> Result<RollbackPlan, RollbackError> {
    let options = RollbackOptions::default();
    request_rollback_with(store, app, target, actor, reason, options).await
}

/// [`request_rollback`] with options: `require_healthy` refuses a revision the App was never
/// reported healthy on; without it such a rollback is recorded with a warning.
pub async fn request_rollback_with(
    store: &StoreHandle,
    app: &str,
    target: RollbackTarget,
    actor: String,
    reason: Option<String>,
    options: RollbackOptions,
) -> Result<RollbackPlan, RollbackError> {
    check_actor(&actor)?;
    let state = complete_state(store, app).await?;
    // A chart App may be rolled back to a chart version: the revision that applied it.
    let target = match target {
        RollbackTarget::Revision(to) if is_chart_version(&to) => {
            let charts = chart_versions(store, app, &state)?;
            RollbackTarget::Revision(revision_of_chart_version(app, &state, &charts, &to)?)
        }
        other => other,
    };
    let resolved = resolve(app, &state, &target)?;
    let healthy = ever_healthy(store, app, &resolved.revision)?;
    if options.require_healthy && !healthy {
        return Err(RollbackError::NeverHealthy {
            app: app.into(),
            revision: resolved.revision,
        });
    }
    let warning = (!healthy).then(|| {
        format!(
            "revision {} was applied but the App was never reported healthy on it",
            resolved.revision
        )
    });
    let seq = record(
        store,
        app,
        &actor,
        IntentRecorded {
            intent: IntentKind::Rollback,
            revision: Some(resolved.revision.clone()),
            reason: reason.filter(|r| !r.trim().is_empty()),
        },
    )
    .await?;
    tracing::info!(app, revision = %resolved.revision, %actor, "rollback recorded; the App is pinned");
    Ok(RollbackPlan {
        app: app.into(),
        revision: resolved.revision,
        digest: resolved.digest.to_hex(),
        applied_at: resolved.applied_at,
        previous: resolved.previous,
        ever_healthy: healthy,
        warning,
        seq,
    })
}

/// Records `IntentRecorded{Resume}` by `actor` for a pinned App: from the next pass it follows
/// the source's deployable head again. Refused when the App is not pinned.
pub async fn request_resume(
    store: &StoreHandle,
    app: &str,
    actor: String,
    reason: Option<String>,
) -> Result<ResumePlan, RollbackError> {
    check_actor(&actor)?;
    let state = app_state(store, app).await?;
    if !state.intent.is_pinned() {
        return Err(RollbackError::NotPinned { app: app.into() });
    }
    let seq = record(
        store,
        app,
        &actor,
        IntentRecorded {
            intent: IntentKind::Resume,
            revision: None,
            reason: reason.filter(|r| !r.trim().is_empty()),
        },
    )
    .await?;
    tracing::info!(app, %actor, "resume recorded; the App follows Git again");
    Ok(ResumePlan {
        app: app.into(),
        unpinned: state.intent.revision.clone(),
        follows: state.deployable_head.clone(),
        seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SyncOutcome;
    use crate::store::projection::RevisionEntry;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_000_000 + s, 0).unwrap()
    }

    fn rev(
        applied: Option<i64>,
        digest: Option<u8>,
        outcome: Option<SyncOutcome>,
    ) -> RevisionEntry {
        RevisionEntry {
            first_seen: t(0),
            applied_at: applied.map(t),
            outcome,
            digest: digest.map(|d| Digest([d; 32])),
            first_seq: 0,
            commit_seq: None,
            objects_changed: 0,
        }
    }

    /// a1.. applied at 10, b2.. at 20, c3.. at 30 (current); d4.. rendered but its sync failed;
    /// e5.. observed only; ab.. shares a prefix with a1.. only from `a`.
    fn state() -> AppState {
        let mut s = AppState::default();
        let ok = Some(SyncOutcome::Succeeded);
        for (sha, r) in [
            ("a1".repeat(20), rev(Some(10), Some(1), ok)),
            ("b2".repeat(20), rev(Some(20), Some(2), ok)),
            ("c3".repeat(20), rev(Some(30), Some(3), ok)),
            (
                "d4".repeat(20),
                rev(None, Some(4), Some(SyncOutcome::Failed)),
            ),
            ("e5".repeat(20), rev(None, None, None)),
            ("ab".repeat(20), rev(Some(5), Some(6), ok)),
        ] {
            s.revisions.insert(sha, r);
        }
        s
    }

    #[test]
    fn a_chart_version_names_the_revision_that_applied_it() {
        assert!(is_chart_version("1.2.3"));
        assert!(is_chart_version("v1.2.3-rc.1"));
        assert!(!is_chart_version("a1a1"), "a digest prefix");
        assert!(
            !is_chart_version("1234"),
            "digits without dots are a prefix"
        );
        assert!(!is_chart_version("1.2"), "not a whole version");
        let s = state();
        let charts = vec![
            ("a1".repeat(20), "1.0.0".to_string()),
            ("b2".repeat(20), "1.1.0".to_string()),
            // 1.2.0 published twice: both archives applied.
            ("c3".repeat(20), "1.2.0".to_string()),
            ("ab".repeat(20), "1.2.0".to_string()),
            // Passed over, never rendered.
            ("e5".repeat(20), "1.3.0".to_string()),
        ];
        let of = |v: &str| revision_of_chart_version("web", &s, &charts, v);
        assert_eq!(of("1.1.0").unwrap(), "b2".repeat(20));
        assert_eq!(of("v1.0.0").unwrap(), "a1".repeat(20));
        match of("1.2.0").unwrap_err() {
            e @ RollbackError::AmbiguousChartVersion { .. } => {
                let text = e.to_string();
                assert!(text.contains("abababababab (applied "), "{text}");
                assert!(text.contains("c3c3c3c3c3c3 (applied "), "{text}");
                assert_eq!(e.class(), ErrorClass::Invalid);
            }
            other => panic!("{other:?}"),
        }
        // Never applied: handed on, and resolving it says why it cannot be a target.
        let never = of("1.3.0").unwrap();
        assert!(matches!(
            resolve("web", &s, &RollbackTarget::Revision(never)),
            Err(RollbackError::NotApplied { .. })
        ));
        let err = of("9.9.9").unwrap_err().to_string();
        assert!(
            err.contains("no applied revision is chart version 9.9.9")
                && err.contains("1.0.0, 1.1.0, 1.2.0, 1.3.0"),
            "{err}"
        );
    }

    fn by_sha(prefix: &str) -> RollbackTarget {
        RollbackTarget::Revision(prefix.into())
    }

    #[test]
    fn a_unique_prefix_or_full_sha_resolves_to_the_full_sha() {
        let s = state();
        let r = resolve("shop", &s, &by_sha("B2B2")).unwrap();
        assert_eq!(r.revision, "b2".repeat(20));
        assert_eq!(r.digest, Digest([2; 32]));
        assert_eq!(r.applied_at, t(20));
        assert_eq!(r.previous, Some("c3".repeat(20)));
        let full = resolve("shop", &s, &by_sha(&"a1".repeat(20))).unwrap();
        assert_eq!(full.revision, "a1".repeat(20));
    }

    #[test]
    fn ambiguous_unknown_and_malformed_prefixes_are_refused_by_name() {
        let s = state();
        // "a1a1" and "abab" both start with "a": four digits tell them apart, "a" alone is short.
        let err = resolve("shop", &s, &by_sha("a")).unwrap_err();
        assert!(matches!(err, RollbackError::BadRevision { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "App shop: \"a\" is not a revision: give a commit SHA or a unique prefix of at least 4 hex digits"
        );
        let err = resolve("shop", &s, &by_sha("main")).unwrap_err();
        assert!(matches!(err, RollbackError::BadRevision { .. }), "{err}");
        let err = resolve("shop", &s, &by_sha("ffff")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "App shop: no recorded revision starts with ffff (see `reckon revisions shop`)"
        );
        let mut s2 = s.clone();
        s2.revisions
            .insert(format!("b2b2{}", "0".repeat(36)), rev(None, None, None));
        let err = resolve("shop", &s2, &by_sha("b2b2")).unwrap_err();
        match &err {
            RollbackError::AmbiguousRevision { candidates, .. } => {
                assert_eq!(
                    candidates,
                    &vec![format!("b2b2{}", "0".repeat(36)), "b2".repeat(20)]
                );
            }
            other => panic!("expected ambiguous, got {other}"),
        }
        assert!(
            err.to_string()
                .contains("is ambiguous: it matches b2b20000")
        );
    }

    #[test]
    fn revisions_never_rendered_or_never_applied_are_refused_with_the_reason() {
        let s = state();
        let err = resolve("shop", &s, &by_sha("d4d4")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "App shop: revision {} cannot be rolled back to: no sync of it ever finished without failing outright",
                "d4".repeat(20)
            )
        );
        let err = resolve("shop", &s, &by_sha("e5e5")).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("it was never rendered, so no manifests are recorded for it"),
            "{err}"
        );
    }

    #[test]
    fn steps_count_applied_revisions_back_by_applied_time() {
        let s = state();
        let steps = |n| resolve("shop", &s, &RollbackTarget::Steps(n));
        assert_eq!(steps(1).unwrap().revision, "b2".repeat(20));
        assert_eq!(steps(2).unwrap().revision, "a1".repeat(20));
        assert_eq!(steps(3).unwrap().revision, "ab".repeat(20));
        let err = steps(4).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "App shop: cannot go back 4 applied revision(s) from {}: only 3 other applied revision(s) are recorded",
                "c3".repeat(20)
            )
        );
        assert!(matches!(steps(0), Err(RollbackError::ZeroSteps { .. })));
        assert!(matches!(
            resolve("shop", &AppState::default(), &RollbackTarget::Steps(1)),
            Err(RollbackError::NothingApplied { .. })
        ));
    }

    #[test]
    fn after_a_rollback_the_rolled_back_to_revision_is_the_current_one() {
        // Rolling back to a1 re-applies it: it becomes the newest applied, and one step back is
        // the revision that was current before the rollback.
        let mut s = state();
        s.revisions.get_mut(&"a1".repeat(20)).unwrap().applied_at = Some(t(40));
        let r = resolve("shop", &s, &RollbackTarget::Steps(1)).unwrap();
        assert_eq!(r.revision, "c3".repeat(20));
        assert_eq!(r.previous, Some("a1".repeat(20)));
    }

    #[test]
    fn targets_round_trip_as_json_for_the_api() {
        let t: RollbackTarget = serde_json::from_str(r#"{"steps": 2}"#).unwrap();
        assert_eq!(t, RollbackTarget::Steps(2));
        let t: RollbackTarget = serde_json::from_str(r#"{"revision": "abcd"}"#).unwrap();
        assert_eq!(t, RollbackTarget::Revision("abcd".into()));
    }

    #[test]
    fn errors_are_classed_for_the_api() {
        let s = state();
        let class = |t: RollbackTarget| resolve("shop", &s, &t).unwrap_err().class();
        assert_eq!(class(by_sha("ffff")), ErrorClass::Invalid);
        assert_eq!(class(RollbackTarget::Steps(0)), ErrorClass::Invalid);
        assert_eq!(
            RollbackError::UnknownApp { app: "x".into() }.class(),
            ErrorClass::NotFound
        );
        assert_eq!(
            RollbackError::NotPinned { app: "x".into() }.class(),
            ErrorClass::Conflict
        );
    }

    #[test]
    fn an_empty_actor_is_refused() {
        assert!(matches!(check_actor("  "), Err(RollbackError::EmptyActor)));
        assert!(check_actor("alice").is_ok());
    }
    fn body(seq: u64, event: Event) -> EnvelopeBody {
        EnvelopeBody {
            schema: crate::event::envelope::EVENT_SCHEMA,
            seq,
            time: t(seq as i64),
            app: Some("shop".into()),
            actor: None,
            prev_hash: Digest::ZERO,
            event,
        }
    }

    fn started(rev: &str) -> Event {
        Event::SyncStarted(crate::event::SyncStarted {
            revision: rev.into(),
            digest: None,
        })
    }

    fn finished(rev: &str, outcome: SyncOutcome, failed: u32) -> Event {
        Event::SyncFinished(crate::event::SyncFinished {
            revision: rev.into(),
            outcome,
            counts: crate::event::SyncCounts {
                created: 1,
                failed,
                ..Default::default()
            },
            duration_ms: 1,
        })
    }

    fn app_health(to: Health) -> Event {
        Event::HealthChanged(crate::event::HealthChanged {
            object: None,
            from: Health::Unknown,
            to,
            message: None,
        })
    }

    fn healthy_of(events: Vec<Event>) -> Vec<String> {
        let bodies: Vec<EnvelopeBody> = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| body(i as u64 + 1, e))
            .collect();
        healthy_revisions(bodies.iter()).into_iter().collect()
    }

    #[test]
    fn a_revision_is_healthy_when_the_app_became_healthy_on_it() {
        use SyncOutcome::*;
        // a: healthy within its sync. b: unready at the sync's end, healthy later (after the
        // health timeout, no other sync). c: unready, then d's sync starts: c never healthy.
        // d: the App stayed healthy through it (no change recorded): healthy.
        let events = vec![
            started("a"),
            app_health(Health::Healthy),
            finished("a", Succeeded, 0),
            started("b"),
            app_health(Health::Progressing),
            finished("b", Succeeded, 0),
            app_health(Health::Healthy),
            started("c"),
            app_health(Health::Degraded),
            finished("c", Succeeded, 0),
            started("d"),
            app_health(Health::Healthy),
            finished("d", Succeeded, 0),
            started("e"),
            finished("e", Succeeded, 0),
        ];
        assert_eq!(healthy_of(events), vec!["a", "b", "d", "e"]);
    }

    #[test]
    fn a_sync_that_applied_nothing_does_not_take_the_health_of_the_revision_before() {
        use SyncOutcome::*;
        let events = vec![
            started("a"),
            app_health(Health::Healthy),
            finished("a", Succeeded, 0),
            started("b"),
            finished("b", Failed, 3),
        ];
        assert_eq!(healthy_of(events), vec!["a"]);
        // Recorded before event schema 3: every write accepted, health not settled in time.
        let events = vec![
            started("a"),
            app_health(Health::Progressing),
            finished("a", Failed, 0),
            app_health(Health::Healthy),
        ];
        assert_eq!(healthy_of(events), vec!["a"]);
    }
}
