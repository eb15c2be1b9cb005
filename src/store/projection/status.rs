//! Owns the status projection: per App what `status` shows beyond the App's state — its last
//! sync, aggregate health, open drift and the last sync's failures — folded as events are written,
//! so that one App's status and the fleet list cost O(Apps), not a scan of each App's log.
//!
//! It is kept beside [`super::AppState`], not inside it: App base states are carried forever in
//! `RetentionCompacted` and `AppRenamed` events, whose layout must not change. Like every
//! projection it is rebuilt from the log by the same fold, and it must equal that rebuild after a
//! compaction too (`store verify` compares them): a compaction drops what the removed events
//! contributed, which is exactly what folding the remaining events gives.

use crate::codec;
use crate::event::{EnvelopeBody, Event, Health, ObjectRef, SyncCounts, SyncOutcome};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Failures of a sync kept (and shown by status) at most: the newest ones.
pub const FAILURES_KEPT: usize = 10;

/// One App's folded status. Every part remembers the seq of the event it came from, so that a
/// compaction can drop what it removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusState {
    /// The `AppRenamed` that moved this status from an earlier name, or the `AppReset` that
    /// cleared it (0: neither). Parts older than it came with the rename.
    pub since: u64,
    /// The App's newest `SyncFinished`.
    pub last_sync: Option<SyncRecord>,
    /// The App's newest aggregate `HealthChanged` (one without an object).
    pub health: Option<HealthRecord>,
    /// Open drift by [`ObjectRef::identity`]: objects whose newest `DriftDetected` was not
    /// followed by a correction, an apply or a prune of the object by this App.
    pub drift: BTreeMap<String, DriftRecord>,
    /// The App's newest `SyncStarted`.
    pub sync_started: Option<u64>,
    /// The newest [`FAILURES_KEPT`] `ApplyFailed` errors after `sync_started`, oldest first (a
    /// retry that failed the same way records no sync, so these stay what the App faces).
    pub failures: Vec<FailureRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRecord {
    pub seq: u64,
    #[serde(with = "codec::time")]
    pub time: DateTime<Utc>,
    pub revision: String,
    pub outcome: SyncOutcome,
    pub counts: SyncCounts,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecord {
    pub seq: u64,
    /// Since when the App has had this health.
    #[serde(with = "codec::time")]
    pub time: DateTime<Utc>,
    pub health: Health,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftRecord {
    /// The object's newest `DriftDetected`.
    pub seq: u64,
    pub object: ObjectRef,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub seq: u64,
    pub error: String,
}

impl StatusState {
    /// Folds one event of this App. Pure: no I/O, no clock. A rename is folded by
    /// [`move_on_rename`], which needs the other name's status.
    pub fn fold(&mut self, body: &EnvelopeBody) {
        let seq = body.seq;
        match &body.event {
            Event::SyncFinished(e) => {
                self.last_sync = Some(SyncRecord {
                    seq,
                    time: body.time,
                    revision: e.revision.clone(),
                    outcome: e.outcome,
                    counts: e.counts.clone(),
                    duration_ms: e.duration_ms,
                });
            }
            Event::HealthChanged(h) if h.object.is_none() => {
                self.health = Some(HealthRecord {
                    seq,
                    time: body.time,
                    health: h.to,
                });
            }
            Event::DriftDetected(d) => {
                self.drift.insert(
                    d.object.identity(),
                    DriftRecord {
                        seq,
                        object: d.object.clone(),
                    },
                );
            }
            // Put back, re-applied or taken away: no longer drifted. (Orphaning and a drift
            // superseded by a new revision do not close it: the apply that follows does.)
            Event::DriftCorrected(crate::event::DriftCorrected { object, .. })
            | Event::ObjectApplied(crate::event::ObjectApplied { object, .. })
            | Event::ObjectPruned(crate::event::ObjectPruned { object, .. }) => {
                self.drift.remove(&object.identity());
            }
            Event::SyncStarted(_) => {
                self.sync_started = Some(seq);
                self.failures.clear();
            }
            Event::ApplyFailed(f) if self.sync_started.is_some() => {
                self.failures.push(FailureRecord {
                    seq,
                    error: f.error.clone(),
                });
                if self.failures.len() > FAILURES_KEPT {
                    self.failures.remove(0);
                }
            }
            // The App is another object now: what it showed was the earlier one's.
            Event::AppReset(_) => {
                *self = StatusState {
                    since: seq,
                    ..Default::default()
                }
            }
            Event::RetentionCompacted(c) => self.compact(c.last_seq),
            _ => {}
        }
    }

    /// What the log shows once this App's events up to `cut` are removed: the parts those
    /// events contributed go. A part's event is the newest of its kind (or of its object), so no
    /// remaining event would have given it another value. When the rename or reset this status
    /// began at is itself removed, a rebuild never folds it: the parts it brought go too (they
    /// are all older than it), and the status no longer began at it.
    pub fn compact(&mut self, cut: u64) {
        if cut < self.since {
            // Only events before the rename or reset went, and they contribute nothing since.
            return;
        }
        self.since = 0;
        let gone = |seq: u64| seq <= cut;
        if self.last_sync.as_ref().is_some_and(|s| gone(s.seq)) {
            self.last_sync = None;
        }
        if self.health.as_ref().is_some_and(|h| gone(h.seq)) {
            self.health = None;
        }
        self.drift.retain(|_, d| !gone(d.seq));
        if self.sync_started.is_some_and(gone) {
            // Its failures came after it: a rebuild finds no sync for them to belong to.
            self.sync_started = None;
            self.failures.clear();
        }
        self.failures.retain(|f| !gone(f.seq));
    }
}

/// Folds an `AppRenamed` of `to` (from another name) into `status`: the earlier name's status
/// moves to `to` along with its state (the App is the same object under a new name), and the
/// earlier name keeps none.
pub fn move_on_rename(status: &mut BTreeMap<String, StatusState>, from: &str, to: &str, seq: u64) {
    let mut moved = status.remove(from).unwrap_or_default();
    moved.since = seq;
    status.insert(to.to_owned(), moved);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{samples, *};

    fn body(seq: u64, event: Event) -> EnvelopeBody {
        EnvelopeBody {
            schema: 1,
            seq,
            time: DateTime::from_timestamp(1_764_000_000 + seq as i64, 0).unwrap(),
            app: Some("shop".into()),
            actor: None,
            prev_hash: Digest::ZERO,
            event,
        }
    }

    fn web(name: &str) -> ObjectRef {
        samples::object("apps", "v1", "Deployment", Some("web"), name)
    }

    fn drift(name: &str) -> Event {
        Event::DriftDetected(DriftDetected {
            object: web(name),
            diffs: vec![],
            managers: vec![],
        })
    }

    fn finished(outcome: SyncOutcome) -> Event {
        Event::SyncFinished(SyncFinished {
            revision: samples::sha(1),
            outcome,
            counts: SyncCounts::default(),
            duration_ms: 7,
        })
    }

    fn health(object: Option<ObjectRef>, to: Health) -> Event {
        Event::HealthChanged(HealthChanged {
            object,
            from: Health::Unknown,
            to,
            message: None,
        })
    }

    fn started() -> Event {
        Event::SyncStarted(SyncStarted {
            revision: samples::sha(1),
            digest: None,
        })
    }

    fn failed(n: usize) -> Event {
        Event::ApplyFailed(ApplyFailed {
            revision: samples::sha(1),
            object: web("api"),
            error: format!("refused {n}"),
        })
    }

    fn fold(events: impl IntoIterator<Item = Event>) -> StatusState {
        let mut s = StatusState::default();
        for (i, e) in events.into_iter().enumerate() {
            s.fold(&body(i as u64 + 1, e));
        }
        s
    }

    fn open(s: &StatusState) -> Vec<&str> {
        s.drift.values().map(|d| d.object.name.as_str()).collect()
    }

    #[test]
    fn the_newest_sync_and_aggregate_health_count_object_health_does_not() {
        let s = fold([
            finished(SyncOutcome::Failed),
            health(None, Health::Degraded),
            finished(SyncOutcome::Succeeded),
            health(None, Health::Healthy),
            health(Some(web("api")), Health::Degraded),
        ]);
        let sync = s.last_sync.as_ref().unwrap();
        assert_eq!((sync.seq, sync.outcome), (3, SyncOutcome::Succeeded));
        let h = s.health.as_ref().unwrap();
        assert_eq!((h.seq, h.health), (4, Health::Healthy));
        assert_eq!(h.time, DateTime::from_timestamp(1_764_000_004, 0).unwrap());
    }

    #[test]
    fn drift_stays_open_until_corrected_reapplied_or_pruned() {
        let applied = |name: &str| {
            Event::ObjectApplied(ObjectApplied {
                revision: samples::sha(1),
                object: web(name),
                action: ApplyAction::Configured,
                changed_fields: vec![],
                digest: Digest([1; 32]),
            })
        };
        let s = fold([
            drift("a"),
            drift("b"),
            drift("c"),
            drift("d"),
            drift("e"),
            Event::DriftCorrected(DriftCorrected {
                revision: samples::sha(1),
                object: web("a"),
                fields: vec![],
            }),
            applied("b"),
            Event::ObjectPruned(ObjectPruned {
                revision: samples::sha(1),
                object: web("c"),
            }),
            // Superseded and orphaned leave it open (status always read it so).
            Event::DriftSuperseded(DriftSuperseded {
                revision: samples::sha(2),
                object: web("d"),
                fields: vec![],
            }),
            Event::ObjectOrphaned(ObjectOrphaned {
                revision: samples::sha(1),
                object: web("e"),
                reason: "released".into(),
            }),
            // Drifted again after its correction: open again.
            drift("a"),
        ]);
        assert_eq!(open(&s), ["a", "d", "e"]);
        assert_eq!(s.drift[&web("a").identity()].seq, 11);
    }

    #[test]
    fn failures_are_the_last_syncs_newest_ten() {
        // Before any sync started, a failure belongs to none.
        let s = fold([failed(0)]);
        assert!(s.failures.is_empty());
        let mut events = vec![started(), failed(0), started()];
        events.extend((1..=12).map(failed));
        let s = fold(events);
        let errors: Vec<_> = s.failures.iter().map(|f| f.error.as_str()).collect();
        assert_eq!(errors.len(), FAILURES_KEPT);
        assert_eq!(errors[0], "refused 3");
        assert_eq!(errors[9], "refused 12");
        // A new sync starts clean.
        let mut s = s;
        s.fold(&body(99, started()));
        assert!(s.failures.is_empty());
    }

    /// Compaction leaves what folding the remaining events alone gives.
    #[test]
    fn compaction_equals_folding_what_remains() {
        let events = vec![
            started(),                        // 1
            failed(1),                        // 2
            finished(SyncOutcome::Failed),    // 3
            health(None, Health::Degraded),   // 4
            drift("a"),                       // 5
            drift("b"),                       // 6
            started(),                        // 7
            failed(2),                        // 8
            finished(SyncOutcome::Succeeded), // 9
            drift("b"),                       // 10
            health(None, Health::Healthy),    // 11
        ];
        for cut in 0..=events.len() as u64 {
            let mut all = StatusState::default();
            let mut rest = StatusState::default();
            for (i, e) in events.iter().enumerate() {
                let b = body(i as u64 + 1, e.clone());
                all.fold(&b);
                if b.seq > cut {
                    rest.fold(&b);
                }
            }
            all.compact(cut);
            assert_eq!(all, rest, "cut at {cut}");
        }
    }

    #[test]
    fn a_reset_clears_and_a_compaction_before_it_keeps_what_came_after() {
        let mut s = fold([
            finished(SyncOutcome::Succeeded),
            drift("a"),
            Event::AppReset(AppReset {
                previous_seq: 2,
                reason: "recreated".into(),
            }),
            drift("b"),
        ]);
        assert_eq!((s.since, open(&s)), (3, vec!["b"]));
        assert!(s.last_sync.is_none());
        let kept = s.clone();
        s.compact(2);
        assert_eq!(s, kept);
        // The reset removed too: a rebuild never saw it.
        s.compact(3);
        assert_eq!((s.since, open(&s)), (0, vec!["b"]));
    }

    #[test]
    fn a_rename_moves_the_status_and_its_compaction_drops_what_came_with_it() {
        let mut map = BTreeMap::from([("web".to_string(), fold([drift("a"), drift("b")]))]);
        move_on_rename(&mut map, "web", "team-a.web", 10);
        assert!(!map.contains_key("web"));
        let moved = map.get_mut("team-a.web").unwrap();
        assert_eq!((moved.since, open(moved)), (10, vec!["a", "b"]));
        moved.fold(&body(11, drift("c")));
        // Events of the new name before the rename (none contribute) leave it as it is.
        let before = moved.clone();
        moved.compact(9);
        assert_eq!(*moved, before);
        // The rename itself removed: a rebuild does not move the earlier name's status.
        moved.compact(10);
        assert_eq!((moved.since, open(moved)), (0, vec!["c"]));
    }
}
