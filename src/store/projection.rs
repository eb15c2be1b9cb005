//! Owns the projections: per-App state derived by folding events (current intent, inventory with
//! the last applied digest per object, revision table), and their versioned snapshot encoding.
//!
//! Projections are never the source of truth: `fold` over the log rebuilds them from nothing.
//! Snapshots only save replay time; a snapshot that disagrees with the log is discarded.

use crate::codec::{self, CodecError};
use crate::event::{
    Digest, EnvelopeBody, Event, IntentKind, ObjectRef, SyncOutcome, envelope::Envelope,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version byte in front of every snapshot (whole projections or one App's base state).
/// 2: AppState gained the source heads (version 1 never left development).
pub const SNAPSHOT_VERSION: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("snapshot version {0} is not one this reckon reads ({SNAPSHOT_VERSION})")]
    UnknownVersion(u8),
    #[error("empty snapshot")]
    Empty,
    #[error("snapshot: {0}")]
    Codec(#[from] CodecError),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Projections {
    /// The last sequence number folded in.
    pub covered_seq: u64,
    pub apps: BTreeMap<String, AppState>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppState {
    pub intent: Intent,
    pub suspended: bool,
    /// Objects the App owns, by [`ObjectRef::identity`].
    pub inventory: BTreeMap<String, InventoryEntry>,
    /// Every revision the App observed, by commit SHA.
    pub revisions: BTreeMap<String, RevisionEntry>,
    pub last_seq: u64,
    /// The newest commit observed on the source's ref (CommitObserved, HistoryRewritten): the
    /// previous head for the next fetch, so a restart resumes without asking Git.
    pub observed_head: Option<String>,
    /// The newest observed commit the App may deploy when following Git: the observed head unless
    /// the signature policy blocked it (RevisionBlocked keeps the previous one). A failed fetch
    /// changes neither head: the App keeps its last good revision.
    pub deployable_head: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub kind: IntentKind,
    /// The pinned revision of a rollback or pin.
    pub revision: Option<String>,
    pub actor: Option<String>,
    pub reason: Option<String>,
    /// The IntentRecorded event (0: the default, never recorded).
    pub seq: u64,
}

impl Default for Intent {
    fn default() -> Self {
        Intent {
            kind: IntentKind::Follow,
            revision: None,
            actor: None,
            reason: None,
            seq: 0,
        }
    }
}

impl Intent {
    /// Whether auto-sync must stay on `revision` instead of following Git.
    pub fn is_pinned(&self) -> bool {
        matches!(self.kind, IntentKind::Rollback | IntentKind::Pin)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryEntry {
    pub object: ObjectRef,
    /// Digest of the object's manifest as last applied.
    pub last_digest: Digest,
    pub revision: String,
    pub applied_seq: u64,
    #[serde(with = "codec::time")]
    pub applied_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionEntry {
    #[serde(with = "codec::time")]
    pub first_seen: DateTime<Utc>,
    /// When a sync of this revision last finished without failing outright.
    #[serde(with = "codec::time_opt")]
    pub applied_at: Option<DateTime<Utc>>,
    pub outcome: Option<SyncOutcome>,
    /// The rendered manifests' blob address.
    pub digest: Option<Digest>,
}

impl AppState {
    /// Folds one event of this App. Pure: no I/O, no clock.
    pub fn fold(&mut self, body: &EnvelopeBody) {
        let time = body.time;
        let revision = |revs: &mut BTreeMap<String, RevisionEntry>, sha: &str| -> () {
            revs.entry(sha.to_owned()).or_insert(RevisionEntry {
                first_seen: time,
                applied_at: None,
                outcome: None,
                digest: None,
            });
        };
        match &body.event {
            Event::CommitObserved(e) => {
                revision(&mut self.revisions, &e.sha);
                self.observed_head = Some(e.sha.clone());
                self.deployable_head = Some(e.sha.clone());
            }
            Event::HistoryRewritten(e) => {
                self.observed_head = Some(e.new_head.clone());
            }
            Event::RevisionBlocked(e)
                if self.deployable_head.as_deref() == Some(e.revision.as_str()) =>
            {
                self.deployable_head = e.kept.clone();
            }
            Event::IntentRecorded(e) => {
                self.intent = Intent {
                    kind: e.intent,
                    revision: match e.intent {
                        IntentKind::Rollback | IntentKind::Pin => e.revision.clone(),
                        IntentKind::Follow | IntentKind::Resume => None,
                    },
                    actor: body.actor.clone(),
                    reason: e.reason.clone(),
                    seq: body.seq,
                }
            }
            Event::RenderSucceeded(e) => {
                revision(&mut self.revisions, &e.revision);
                if let Some(r) = self.revisions.get_mut(&e.revision) {
                    r.digest = Some(e.digest);
                }
            }
            Event::SyncFinished(e) => {
                revision(&mut self.revisions, &e.revision);
                if let Some(r) = self.revisions.get_mut(&e.revision) {
                    r.outcome = Some(e.outcome);
                    if e.outcome != SyncOutcome::Failed {
                        r.applied_at = Some(time);
                    }
                }
            }
            Event::ObjectApplied(e) => {
                self.inventory.insert(
                    e.object.identity(),
                    InventoryEntry {
                        object: e.object.clone(),
                        last_digest: e.digest,
                        revision: e.revision.clone(),
                        applied_seq: body.seq,
                        applied_at: time,
                    },
                );
            }
            Event::ObjectPruned(e) => {
                self.inventory.remove(&e.object.identity());
            }
            Event::AppSuspended(_) => self.suspended = true,
            Event::AppResumed(_) => self.suspended = false,
            // Compaction does not change state: its base state is used by `rebuild` only.
            _ => {}
        }
        self.last_seq = body.seq;
    }
}

impl Projections {
    /// Folds one event. Events without an App (agent/store events) change no App state.
    pub fn fold(&mut self, body: &EnvelopeBody) {
        if let Some(app) = &body.app
            && !matches!(body.event, Event::RetentionCompacted(_))
        {
            self.apps.entry(app.clone()).or_default().fold(body);
        }
        self.covered_seq = self.covered_seq.max(body.seq);
    }

    /// Rebuilds from an ordered event stream. `bases` are the base states of compacted Apps
    /// (from their latest RetentionCompacted event): the compacted prefix is folded into them.
    pub fn replay<I, E>(bases: BTreeMap<String, AppState>, events: I) -> Result<Projections, E>
    where
        I: IntoIterator<Item = Result<Envelope, E>>,
    {
        let mut p = Projections {
            covered_seq: 0,
            apps: bases,
        };
        for e in events {
            p.fold(&e?.body);
        }
        Ok(p)
    }
}

pub fn encode_snapshot<T: Serialize>(value: &T) -> Result<Vec<u8>, ProjectionError> {
    let mut out = vec![SNAPSHOT_VERSION];
    out.extend(codec::encode(value)?);
    Ok(out)
}

pub fn decode_snapshot<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ProjectionError> {
    match bytes.first() {
        None => Err(ProjectionError::Empty),
        Some(&SNAPSHOT_VERSION) => Ok(codec::decode(&bytes[1..])?),
        Some(&v) => Err(ProjectionError::UnknownVersion(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{samples, *};

    fn body(seq: u64, app: &str, actor: Option<&str>, event: Event) -> EnvelopeBody {
        EnvelopeBody {
            schema: 1,
            seq,
            time: DateTime::from_timestamp(1_764_000_000 + seq as i64, 0).unwrap(),
            app: Some(app.into()),
            actor: actor.map(Into::into),
            prev_hash: Digest::ZERO,
            event,
        }
    }

    fn applied(rev: &str, name: &str, d: u8) -> Event {
        Event::ObjectApplied(ObjectApplied {
            revision: rev.into(),
            object: samples::object("apps", "v1", "Deployment", Some("web"), name),
            action: ApplyAction::Created,
            changed_fields: vec![],
            digest: Digest([d; 32]),
        })
    }

    fn history() -> Vec<EnvelopeBody> {
        let c1 = samples::commit(1, "a@x");
        let c2 = samples::commit(2, "a@x");
        let (r1, r2) = (c1.sha.clone(), c2.sha.clone());
        vec![
            body(1, "shop", None, Event::CommitObserved(c1)),
            body(2, "shop", None, applied(&r1, "api", 1)),
            body(3, "shop", None, applied(&r1, "db", 2)),
            body(
                4,
                "shop",
                None,
                Event::SyncFinished(SyncFinished {
                    revision: r1.clone(),
                    outcome: SyncOutcome::Succeeded,
                    counts: SyncCounts::default(),
                    duration_ms: 5,
                }),
            ),
            body(5, "other", None, applied(&r1, "api", 9)),
            body(6, "shop", None, Event::CommitObserved(c2)),
            body(7, "shop", None, applied(&r2, "api", 3)),
            body(
                8,
                "shop",
                None,
                Event::ObjectPruned(ObjectPruned {
                    revision: r2.clone(),
                    object: samples::object("apps", "v1", "Deployment", Some("web"), "db"),
                }),
            ),
            body(
                9,
                "shop",
                None,
                Event::SyncFinished(SyncFinished {
                    revision: r2.clone(),
                    outcome: SyncOutcome::Failed,
                    counts: SyncCounts::default(),
                    duration_ms: 5,
                }),
            ),
            body(
                10,
                "shop",
                Some("bob"),
                Event::IntentRecorded(IntentRecorded {
                    intent: IntentKind::Rollback,
                    revision: Some(r1.clone()),
                    reason: Some("r2 broke checkout".into()),
                }),
            ),
        ]
    }

    #[test]
    fn source_heads_follow_commits_blocks_and_rewrites_but_not_failures() {
        let c = |n: u64| {
            let mut c = samples::commit(n, "dev@example.com");
            c.sha = samples::sha(n);
            Event::CommitObserved(c)
        };
        let mut p = Projections::default();
        let mut seq = 0;
        let mut fold = |p: &mut Projections, e: Event| {
            seq += 1;
            p.fold(&body(seq, "shop", None, e));
        };
        fold(&mut p, c(1));
        fold(&mut p, c(2));
        let heads = |p: &Projections| {
            let a = &p.apps["shop"];
            (a.observed_head.clone(), a.deployable_head.clone())
        };
        assert_eq!(heads(&p), (Some(samples::sha(2)), Some(samples::sha(2))));
        // Under `require` an unsigned head is observed but the App keeps the previous one.
        fold(&mut p, c(3));
        fold(
            &mut p,
            Event::RevisionBlocked(RevisionBlocked {
                revision: samples::sha(3),
                reason: "unsigned".into(),
                kept: Some(samples::sha(2)),
            }),
        );
        assert_eq!(heads(&p), (Some(samples::sha(3)), Some(samples::sha(2))));
        // A failed fetch changes nothing.
        fold(
            &mut p,
            Event::SourceFetchFailed(SourceFetchFailed {
                url: "u".into(),
                ref_name: "refs/heads/main".into(),
                error: "refused".into(),
                reason: "Unreachable".into(),
            }),
        );
        assert_eq!(heads(&p), (Some(samples::sha(3)), Some(samples::sha(2))));
        // A force-push moves the observed head; the new head's commit event makes it deployable.
        fold(
            &mut p,
            Event::HistoryRewritten(HistoryRewritten {
                ref_name: "refs/heads/main".into(),
                old_head: samples::sha(3),
                new_head: samples::sha(9),
                merge_base: Some(samples::sha(1)),
            }),
        );
        assert_eq!(heads(&p), (Some(samples::sha(9)), Some(samples::sha(2))));
        fold(&mut p, c(9));
        assert_eq!(heads(&p), (Some(samples::sha(9)), Some(samples::sha(9))));
    }

    #[test]
    fn fold_tracks_intent_inventory_digests_and_revisions() {
        let mut p = Projections::default();
        for b in history() {
            p.fold(&b);
        }
        assert_eq!(p.covered_seq, 10);
        let shop = &p.apps["shop"];
        assert!(shop.intent.is_pinned());
        assert_eq!(shop.intent.actor.as_deref(), Some("bob"));
        assert_eq!(shop.intent.revision, Some(samples::sha(1)));
        // db was pruned; api's digest is the r2 apply's.
        assert_eq!(shop.inventory.len(), 1);
        let api = shop.inventory.values().next().unwrap();
        assert_eq!(api.last_digest, Digest([3; 32]));
        assert_eq!(api.applied_seq, 7);
        let r1 = &shop.revisions[&samples::sha(1)];
        assert_eq!(r1.outcome, Some(SyncOutcome::Succeeded));
        assert_eq!(r1.applied_at, DateTime::from_timestamp(1_764_000_004, 0));
        let r2 = &shop.revisions[&samples::sha(2)];
        assert_eq!(r2.outcome, Some(SyncOutcome::Failed));
        assert_eq!(r2.applied_at, None);
        assert_eq!(
            r2.first_seen,
            DateTime::from_timestamp(1_764_000_006, 0).unwrap()
        );
        // The other App's apply did not leak into shop.
        assert_eq!(
            p.apps["other"]
                .inventory
                .values()
                .next()
                .unwrap()
                .last_digest,
            Digest([9; 32])
        );
    }

    #[test]
    fn resume_clears_the_pin() {
        let mut s = AppState::default();
        for b in history() {
            s.fold(&b);
        }
        s.fold(&body(
            11,
            "shop",
            Some("bob"),
            Event::IntentRecorded(IntentRecorded {
                intent: IntentKind::Resume,
                revision: None,
                reason: None,
            }),
        ));
        assert!(!s.intent.is_pinned());
        assert_eq!(s.intent.seq, 11);
    }

    #[test]
    fn base_state_plus_tail_equals_full_fold() {
        let h = history();
        let mut full = Projections::default();
        h.iter().for_each(|b| full.fold(b));
        // Fold shop's first 4 events into a base, then replay the rest without them.
        let mut base = AppState::default();
        h[..4].iter().for_each(|b| base.fold(b));
        let bases = BTreeMap::from([("shop".to_string(), base)]);
        let tail = h[4..].iter().map(|b| {
            Ok::<_, ()>(Envelope {
                body: b.clone(),
                hash: Digest::ZERO,
            })
        });
        let replayed = Projections::replay(bases, tail).unwrap();
        assert_eq!(replayed.apps, full.apps);
    }

    #[test]
    fn snapshot_round_trip_and_golden_bytes() {
        let mut p = Projections::default();
        history().iter().for_each(|b| p.fold(b));
        let bytes = encode_snapshot(&p).unwrap();
        assert_eq!(decode_snapshot::<Projections>(&bytes).unwrap(), p);
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(matches!(
            decode_snapshot::<Projections>(&bad),
            Err(ProjectionError::UnknownVersion(9))
        ));
        crate::golden::check(
            "snapshots",
            vec![
                ("projections".into(), bytes),
                (
                    "app-state".into(),
                    encode_snapshot(&p.apps["shop"]).unwrap(),
                ),
            ],
        );
    }
}
