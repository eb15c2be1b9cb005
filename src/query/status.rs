//! Owns `status`: per App what it is meant to run (intent), what it runs (revision), how the
//! last sync went, its health, its open drift and whether it is pinned.

use super::{EventRow, QueryError, app_kind_page, object_name};
use crate::event::{Event, EventKind, Health, IntentKind, SyncCounts, SyncOutcome};
use crate::store::projection::AppState;
use crate::store::{EventRead, Projections, Query, Selector};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How far back status looks for an App's last sync, health and drift, in events of that kind
/// (bounded so that status stays fast on a huge log; an App whose last record of a kind lies
/// further back shows it as unknown).
const LOOKBACK: usize = 50_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentView {
    /// `follow`, `rollback`, `pin` or `resume`.
    pub kind: String,
    /// The pinned revision of a rollback or pin.
    pub revision: Option<String>,
    pub actor: Option<String>,
    pub reason: Option<String>,
    /// The IntentRecorded event (`None`: never recorded, the App follows Git by default).
    pub seq: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSync {
    pub revision: String,
    pub time: DateTime<Utc>,
    pub outcome: SyncOutcome,
    pub counts: SyncCounts,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatus {
    pub app: String,
    pub intent: IntentView,
    /// Rollback or pin: auto-sync stays on `intent.revision` and does not follow Git.
    pub pinned: bool,
    pub suspended: bool,
    /// The newest commit observed on the source ref.
    pub observed_revision: Option<String>,
    /// The revision whose sync last finished without failing outright.
    pub applied_revision: Option<String>,
    pub last_sync: Option<LastSync>,
    /// The App's aggregate health as last recorded, and since when.
    pub health: Option<Health>,
    pub health_since: Option<DateTime<Utc>>,
    /// Open drift: objects whose last drift record (DriftDetected) was not followed by a
    /// correction, a new apply or a prune of that object.
    pub drift_count: u64,
    /// Those objects, named as [`super::object_name`] does.
    pub drifted: Vec<String>,
    /// Objects the App manages now.
    pub objects: u64,
    /// What failed in the App's last recorded sync (each `ApplyFailed` error, the first
    /// [`FAILURES_SHOWN`]): an object refused as another App's or tool's says so here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    /// The shard whose store answered, in a fleet's App list (the API's fan-out sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
}

/// The newest event of `kind` for `app` that `pick` accepts, looking back [`LOOKBACK`] events
/// of that App and kind (read through the intersection of the App and kind indexes).
fn latest(
    reader: &(impl EventRead + ?Sized),
    app: &str,
    kind: EventKind,
    pick: impl Fn(&EventRow) -> bool,
) -> Result<Option<EventRow>, QueryError> {
    let mut cursor = None;
    let mut seen = 0;
    // Every event of a page is read and decoded, and the newest one usually answers: start
    // with a page of a few and grow it only while nothing matches (a page of 500 decoded 500
    // events per lookup, most of the fleet list's time on a large log).
    let mut size = 4;
    loop {
        let page = app_kind_page(reader, app, kind, cursor, size)?;
        seen += page.events.len();
        if let Some(e) = page.events.into_iter().find(|e| pick(e)) {
            return Ok(Some(e));
        }
        match page.next {
            Some(n) if seen < LOOKBACK => cursor = Some(n),
            _ => return Ok(None),
        }
        size = (size * 8).min(500);
    }
}

/// Failures of a sync shown by status at most.
pub const FAILURES_SHOWN: usize = 10;

/// The `ApplyFailed` errors of `app`'s last recorded sync (after its last SyncStarted), oldest
/// first. A retry that failed the same way records no sync, so these stay what the App faces.
fn last_failures(reader: &(impl EventRead + ?Sized), app: &str) -> Result<Vec<String>, QueryError> {
    let Some(started) = latest(reader, app, EventKind::SyncStarted, |_| true)? else {
        return Ok(Vec::new());
    };
    let page = app_kind_page(reader, app, EventKind::ApplyFailed, None, FAILURES_SHOWN)?;
    let mut out: Vec<String> = page
        .events
        .into_iter()
        .filter(|e| e.seq > started.seq)
        .filter_map(|e| match e.event {
            Event::ApplyFailed(f) => Some(f.error),
            _ => None,
        })
        .collect();
    out.reverse();
    Ok(out)
}

/// Objects of `app` whose newest drift record is an uncorrected DriftDetected.
fn open_drift(reader: &(impl EventRead + ?Sized), app: &str) -> Result<Vec<String>, QueryError> {
    // Newest DriftDetected per object within the look-back.
    let mut newest: BTreeMap<String, (u64, crate::event::ObjectRef)> = BTreeMap::new();
    let mut cursor = None;
    let mut seen = 0;
    loop {
        let page = app_kind_page(reader, app, EventKind::DriftDetected, cursor, 500)?;
        seen += page.events.len();
        for e in &page.events {
            if let Event::DriftDetected(d) = &e.event {
                newest
                    .entry(d.object.identity())
                    .or_insert((e.seq, d.object.clone()));
            }
        }
        match page.next {
            Some(n) if seen < LOOKBACK => cursor = Some(n),
            _ => break,
        }
    }
    let mut open = BTreeSet::new();
    for (seq, object) in newest.values() {
        // Anything after it that put the object back (or took it away) closes it.
        let mut later = Query::new(Selector::Object(object.clone()))
            .oldest_first()
            .after(Some(*seq))
            .limit(100);
        let mut closed = false;
        'scan: loop {
            let page = reader.query(&later)?;
            for e in &page.events {
                if e.body.app.as_deref() == Some(app)
                    && matches!(
                        e.body.event,
                        Event::DriftCorrected(_) | Event::ObjectApplied(_) | Event::ObjectPruned(_)
                    )
                {
                    closed = true;
                    break 'scan;
                }
            }
            match page.next {
                Some(n) => later.cursor = Some(n),
                None => break,
            }
        }
        if !closed {
            open.insert(object_name(object));
        }
    }
    Ok(open.into_iter().collect())
}

/// The revision whose sync last finished without failing outright.
pub(crate) fn applied_revision(state: &AppState) -> Option<String> {
    state
        .revisions
        .iter()
        .filter_map(|(sha, r)| r.applied_at.map(|t| (t, sha)))
        .max()
        .map(|(_, sha)| sha.clone())
}

pub(crate) fn intent_view(state: &AppState) -> IntentView {
    let i = &state.intent;
    IntentView {
        kind: match i.kind {
            IntentKind::Follow => "follow",
            IntentKind::Rollback => "rollback",
            IntentKind::Pin => "pin",
            IntentKind::Resume => "resume",
        }
        .to_string(),
        revision: i.revision.clone(),
        actor: i.actor.clone(),
        reason: i.reason.clone(),
        seq: (i.seq != 0).then_some(i.seq),
    }
}

/// Status of one App, or of every App in the store (by name).
pub fn status<R: EventRead + ?Sized>(
    reader: &R,
    projections: &Projections,
    app: Option<&str>,
) -> Result<Vec<AppStatus>, QueryError> {
    if let Some(a) = app
        && !projections.apps.contains_key(a)
    {
        return Err(QueryError::UnknownApp(a.to_string()));
    }
    let mut out = Vec::new();
    for (name, state) in &projections.apps {
        if app.is_some_and(|a| a != name) {
            continue;
        }
        let last_sync =
            latest(reader, name, EventKind::SyncFinished, |_| true)?.and_then(|e| match e.event {
                Event::SyncFinished(s) => Some(LastSync {
                    revision: s.revision,
                    time: e.time,
                    outcome: s.outcome,
                    counts: s.counts,
                    duration_ms: s.duration_ms,
                }),
                _ => None,
            });
        let health = latest(
            reader,
            name,
            EventKind::HealthChanged,
            |e| matches!(&e.event, Event::HealthChanged(h) if h.object.is_none()),
        )?;
        let (health, health_since) = match health {
            Some(e) => match e.event {
                Event::HealthChanged(h) => (Some(h.to), Some(e.time)),
                _ => (None, None),
            },
            None => (None, None),
        };
        let drifted = open_drift(reader, name)?;
        let failures = last_failures(reader, name)?;
        out.push(AppStatus {
            app: name.clone(),
            intent: intent_view(state),
            pinned: state.intent.is_pinned(),
            suspended: state.suspended,
            observed_revision: state.observed_head.clone(),
            applied_revision: applied_revision(state),
            last_sync,
            health,
            health_since,
            drift_count: drifted.len() as u64,
            drifted,
            objects: state.inventory.len() as u64,
            failures,
            shard: None,
        });
    }
    Ok(out)
}

impl crate::crd::StoredApp for AppStatus {
    fn observed_revision(&self) -> Option<String> {
        self.observed_revision.clone()
    }

    fn applied_revision(&self) -> Option<String> {
        self.applied_revision.clone()
    }

    fn intent(&self) -> crate::crd::IntentStatus {
        crate::crd::IntentStatus {
            kind: self.intent.kind.clone(),
            revision: self.intent.revision.clone(),
            actor: self.intent.actor.clone(),
            reason: self.intent.reason.clone(),
        }
    }

    fn last_sync_time(&self) -> Option<DateTime<Utc>> {
        self.last_sync.as_ref().map(|l| l.time)
    }

    fn drift_count(&self) -> u64 {
        self.drift_count
    }
}
