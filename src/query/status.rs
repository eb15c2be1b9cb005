//! Owns `status`: per App what it is meant to run (intent), what it runs (revision), how the
//! last sync went, its health, its open drift and whether it is pinned.

use super::{QueryError, object_name};
use crate::event::{Health, IntentKind, SyncCounts, SyncOutcome};
use crate::store::projection::{AppState, StatusState};
use crate::store::{EventRead, Projections};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

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
    /// [`FAILURES_KEPT`](crate::store::projection::status::FAILURES_KEPT)): an object refused as another App's or tool's says so here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    /// The shard whose store answered, in a fleet's App list (the API's fan-out sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
}

/// The revision whose sync last finished without failing outright.
pub(crate) fn applied_revision(state: &AppState) -> Option<String> {
    state.applied_revision().map(str::to_owned)
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

/// Status of one App, or of every App in the store (by name), from the projections alone: its
/// cost is the number of Apps, whatever the log's size. The reader is not needed any more; it is
/// kept so callers stay as they are.
pub fn status<R: EventRead + ?Sized>(
    _reader: &R,
    projections: &Projections,
    app: Option<&str>,
) -> Result<Vec<AppStatus>, QueryError> {
    if let Some(a) = app
        && !projections.apps.contains_key(a)
    {
        return Err(QueryError::UnknownApp(a.to_string()));
    }
    let empty = StatusState::default();
    let mut out = Vec::new();
    for (name, state) in &projections.apps {
        if app.is_some_and(|a| a != name) {
            continue;
        }
        // Folded as the events were written (store::projection::status): nothing is read.
        let folded = projections.status.get(name);
        let folded = folded.unwrap_or(&empty);
        let last_sync = folded.last_sync.as_ref().map(|s| LastSync {
            revision: s.revision.clone(),
            time: s.time,
            outcome: s.outcome,
            counts: s.counts.clone(),
            duration_ms: s.duration_ms,
        });
        let (health, health_since) = match &folded.health {
            Some(h) => (Some(h.health), Some(h.time)),
            None => (None, None),
        };
        let drifted: BTreeSet<String> = folded
            .drift
            .values()
            .map(|d| object_name(&d.object))
            .collect();
        let drifted: Vec<String> = drifted.into_iter().collect();
        let failures = folded.failures.iter().map(|f| f.error.clone()).collect();
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

/// The projection against how status was computed before it existed: by reading each App's log
/// (kept here, as it was, to prove the fold gives the same answers).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventKind, samples, *};
    use crate::query::{EventRow, app_kind_page};
    use crate::store::projection::status::FAILURES_KEPT;
    use crate::store::{EventStore, OpenOptions, Query, Selector, SledStore};
    use std::collections::BTreeMap;

    /// The newest event of `kind` for `app` that `pick` accepts.
    fn latest(
        reader: &(impl EventRead + ?Sized),
        app: &str,
        kind: EventKind,
        pick: impl Fn(&EventRow) -> bool,
    ) -> Option<EventRow> {
        let mut cursor = None;
        loop {
            let page = app_kind_page(reader, app, kind, cursor, 100).unwrap();
            if let Some(e) = page.events.into_iter().find(|e| pick(e)) {
                return Some(e);
            }
            cursor = Some(page.next?);
        }
    }

    fn last_failures(reader: &(impl EventRead + ?Sized), app: &str) -> Vec<String> {
        let Some(started) = latest(reader, app, EventKind::SyncStarted, |_| true) else {
            return Vec::new();
        };
        let page = app_kind_page(reader, app, EventKind::ApplyFailed, None, FAILURES_KEPT).unwrap();
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
        out
    }

    fn open_drift(reader: &(impl EventRead + ?Sized), app: &str) -> Vec<String> {
        let mut newest: BTreeMap<String, (u64, ObjectRef)> = BTreeMap::new();
        let mut cursor = None;
        loop {
            let page = app_kind_page(reader, app, EventKind::DriftDetected, cursor, 500).unwrap();
            for e in &page.events {
                if let Event::DriftDetected(d) = &e.event {
                    newest
                        .entry(d.object.identity())
                        .or_insert((e.seq, d.object.clone()));
                }
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        let mut open = BTreeSet::new();
        for (seq, object) in newest.values() {
            let later = Query::new(Selector::Object(object.clone()))
                .oldest_first()
                .after(Some(*seq))
                .limit(100_000);
            let closed = reader.query(&later).unwrap().events.iter().any(|e| {
                e.body.app.as_deref() == Some(app)
                    && matches!(
                        e.body.event,
                        Event::DriftCorrected(_) | Event::ObjectApplied(_) | Event::ObjectPruned(_)
                    )
            });
            if !closed {
                open.insert(object_name(object));
            }
        }
        open.into_iter().collect()
    }

    /// Status as it was computed from the log.
    fn from_log(reader: &(impl EventRead + ?Sized), projections: &Projections) -> Vec<AppStatus> {
        let mut out = status(reader, projections, None).unwrap();
        for s in &mut out {
            let name = s.app.as_str();
            s.last_sync = latest(reader, name, EventKind::SyncFinished, |_| true).and_then(|e| {
                match e.event {
                    Event::SyncFinished(f) => Some(LastSync {
                        revision: f.revision,
                        time: e.time,
                        outcome: f.outcome,
                        counts: f.counts,
                        duration_ms: f.duration_ms,
                    }),
                    _ => None,
                }
            });
            let health = latest(
                reader,
                name,
                EventKind::HealthChanged,
                |e| matches!(&e.event, Event::HealthChanged(h) if h.object.is_none()),
            );
            (s.health, s.health_since) = match health.map(|e| (e.event, e.time)) {
                Some((Event::HealthChanged(h), t)) => (Some(h.to), Some(t)),
                _ => (None, None),
            };
            s.drifted = open_drift(reader, name);
            s.drift_count = s.drifted.len() as u64;
            s.failures = last_failures(reader, name);
        }
        out
    }

    /// A random history of a few Apps with every kind of event status reads, interleaved:
    /// syncs that fail some objects, health of the App and of objects, drifts corrected,
    /// re-applied, pruned, superseded, orphaned or left open.
    fn random_history(n: u64, seed: u64) -> Vec<Draft> {
        let mut x = seed | 1;
        let mut next = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let health = [Health::Healthy, Health::Degraded, Health::Progressing];
        (0..n)
            .map(|i| {
                let app = format!("app-{}", next(4));
                let object = samples::object(
                    "apps",
                    "v1",
                    "Deployment",
                    Some("web"),
                    &format!("svc-{}", next(6)),
                );
                let revision = samples::sha(i / 50);
                let event = match next(12) {
                    0 => Event::SyncStarted(SyncStarted {
                        revision,
                        digest: None,
                    }),
                    1 => Event::SyncFinished(SyncFinished {
                        revision,
                        outcome: [SyncOutcome::Succeeded, SyncOutcome::Failed][next(2) as usize],
                        counts: SyncCounts {
                            failed: next(3) as u32,
                            ..Default::default()
                        },
                        duration_ms: next(1000),
                    }),
                    2 | 3 => Event::ApplyFailed(ApplyFailed {
                        revision,
                        object,
                        error: format!("refused {i}"),
                    }),
                    4 => Event::HealthChanged(HealthChanged {
                        object: (next(2) == 0).then_some(object),
                        from: Health::Unknown,
                        to: health[next(3) as usize],
                        message: None,
                    }),
                    5..=7 => Event::DriftDetected(DriftDetected {
                        object,
                        diffs: vec![],
                        managers: vec![],
                    }),
                    8 => Event::DriftCorrected(DriftCorrected {
                        revision,
                        object,
                        fields: vec![],
                    }),
                    9 => Event::ObjectApplied(ObjectApplied {
                        revision,
                        object,
                        action: ApplyAction::Configured,
                        changed_fields: vec![],
                        digest: Digest([1; 32]),
                    }),
                    10 => Event::ObjectPruned(ObjectPruned { revision, object }),
                    _ => Event::DriftSuperseded(DriftSuperseded {
                        revision,
                        object,
                        fields: vec![],
                    }),
                };
                Draft::new(Some(&app), event)
            })
            .collect()
    }

    /// On a generated store the projection answers what reading the log answered, and so does
    /// the projection restored from the store's snapshot and the one rebuilt from its log.
    #[test]
    fn the_status_projection_answers_what_the_log_did() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        for seed in [1, 7, 42] {
            let _ = std::fs::remove_dir_all(&path);
            let opts = || OpenOptions {
                create: true,
                cache_bytes: 1 << 20,
                ..Default::default()
            };
            let mut store = SledStore::open(&path, opts()).unwrap();
            for batch in random_history(3000, seed).chunks(250) {
                store.append(batch.to_vec()).unwrap();
            }
            let folded = status(&store.reader(), store.projections(), None).unwrap();
            let logged = from_log(&store.reader(), store.projections());
            assert_eq!(folded, logged, "seed {seed}");
            assert!(folded.iter().any(|s| !s.failures.is_empty()));
            assert!(folded.iter().any(|s| s.drift_count > 0));
            store.close().unwrap();
            let mut store = SledStore::open(&path, opts()).unwrap();
            assert_eq!(
                status(&store.reader(), store.projections(), None).unwrap(),
                logged
            );
            let rebuilt = store.rebuild(&mut |_| {}).unwrap().clone();
            assert_eq!(status(&store.reader(), &rebuilt, None).unwrap(), logged);
            store.close().unwrap();
        }
    }
}
