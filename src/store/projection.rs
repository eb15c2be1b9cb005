//! Owns the projections: per-App state derived by folding events (current intent, inventory with
//! the last applied digest per object, revision table; beside it the status of [`status`] and
//! the bookkeeping of the revisions kept in the store, [`stored`]), and their versioned snapshot
//! encoding.
//!
//! Projections are never the source of truth: `fold` over the log rebuilds them from nothing.
//! Snapshots only save replay time; a snapshot that disagrees with the log is discarded.

use crate::codec::{self, CodecError};
use crate::event::{
    ApplyAction, Digest, EnvelopeBody, Event, IntentKind, ObjectOrphaned, ObjectPruned, ObjectRef,
    SyncOutcome, envelope::Envelope,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub mod status;
pub mod stored;
pub use status::StatusState;

/// Version byte in front of every snapshot (whole projections or one App's base state).
/// 2: AppState gained the source heads (version 1 never left development).
/// 3: revisions gained their commit's seq and changed-object count, inventory entries the start
///    of the object's lifecycle and the fields changed since (migrations/0004_drift_index.md).
///    A version-2 snapshot of the whole projections is rebuilt from the log; a version-2 App
///    base state (inside a RetentionCompacted event, so it is read forever) is converted.
/// 4: the same layout; a sync whose writes all succeeded but whose objects were not ready in
///    time (recorded `Failed` before event schema 3) now counts as applied
///    (migrations/0006_superseded_and_blocked.md), so a version-3 snapshot of the whole
///    projections is rebuilt from the log once. A version-3 App base state is read as it is.
pub const SNAPSHOT_VERSION: u8 = 4;

/// Version byte of the whole projections' snapshot (the `snapshots` tree), which since 5 has its
/// own layout: `5 · hash (32) · bincode(Projections)`, the hash being the stored hash of event
/// `covered_seq` (the last event folded). It ties the snapshot to one history: a snapshot
/// whose hash is not the log's at that seq was made from another log (a restored or rewritten
/// store) and is rebuilt, and `store verify` reports it (migrations/0008_checkpoints.md).
/// Versions 2–4 carried no hash and used [`SNAPSHOT_VERSION`]; they are rebuilt from the log.
/// App base states (inside RetentionCompacted events) keep [`SNAPSHOT_VERSION`].
/// 6: `Projections` gained `status` (migrations/0012_status_projection.md); a version-5
/// snapshot is rebuilt from the log once.
/// 7: `Projections` gained `stored`, and the snapshot holds only each App's resident revisions;
/// the others are stored beside it (migrations/0014_revisions_in_the_store.md). A version-6
/// snapshot is rebuilt from the log once.
pub const PROJECTIONS_SNAPSHOT_VERSION: u8 = 7;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("snapshot version {0} is not one this reckon reads")]
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
    /// Per App what `status` shows beyond its state (last sync, health, open drift, failures),
    /// kept apart so that App base states inside events keep their layout.
    pub status: BTreeMap<String, StatusState>,
    /// Per App the epoch and count of its revisions kept in the store rather than in
    /// `apps[app].revisions` ([`stored`]); absent: none, epoch 0.
    pub stored: BTreeMap<String, stored::Stored>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppState {
    pub intent: Intent,
    pub suspended: bool,
    /// Objects the App owns, by [`ObjectRef::identity`].
    pub inventory: BTreeMap<String, InventoryEntry>,
    /// The App's revisions by commit SHA: every one it observed when folded from its events;
    /// in the store's projections only the resident ones ([`stored::resident`]), the others
    /// being in the store (read them through `StoreReader::complete_app`).
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
    /// The apply that began the object's current life: its creation, or the first apply after
    /// it entered the inventory (`None`: unknown, from a version-2 base state). Blame credits
    /// every field no later apply changed to it without reading the applies in between.
    pub lifecycle_seq: Option<u64>,
    /// `changed_fields` of every apply since `lifecycle_seq`, sorted and deduplicated: bounded
    /// by the object's own fields, whatever the number of applies.
    pub changed_since: Vec<String>,
    /// `first_seq` of the revision under which the object was last counted as changed, so a
    /// drift correction re-applying it under the same revision does not count it again.
    pub counted_for: u64,
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
    /// The event that first named the revision for this App (its identity in `counted_for`).
    pub first_seq: u64,
    /// The App's CommitObserved (or, for a chart revision, ChartObserved) of it: author and
    /// message, or chart and version, are read from there.
    pub commit_seq: Option<u64>,
    /// Objects that applies of this revision created, configured or pruned, each counted once
    /// per stay of the App on the revision (a drift correction does not count it again; coming
    /// back to the revision by a rollback and changing it again does).
    pub objects_changed: u32,
}

/// Whether a sync put its revision in the cluster: the API server accepted its writes (all, or
/// some). Applied is not healthy: before event schema 3 a sync whose every write succeeded but
/// whose objects were not ready in time was recorded `Failed` with no failed object, and it
/// applied its revision all the same.
pub fn applied(finished: &crate::event::SyncFinished) -> bool {
    finished.outcome != SyncOutcome::Failed || finished.counts.failed == 0
}

impl AppState {
    /// The revision whose sync last finished without failing outright: the latest `applied_at`
    /// (ties: the greatest SHA). One rule for the reconciler, `status` and which revisions stay
    /// resident, which must agree.
    pub fn applied_revision(&self) -> Option<&str> {
        self.revisions
            .iter()
            .filter_map(|(sha, r)| r.applied_at.map(|t| (t, sha)))
            .max()
            .map(|(_, sha)| sha.as_str())
    }

    /// Folds one event of this App. Pure: no I/O, no clock.
    pub fn fold(&mut self, body: &EnvelopeBody) {
        let time = body.time;
        let seq = body.seq;
        let revision = |revs: &mut BTreeMap<String, RevisionEntry>, sha: &str| -> () {
            revs.entry(sha.to_owned()).or_insert(RevisionEntry {
                first_seen: time,
                applied_at: None,
                outcome: None,
                digest: None,
                first_seq: seq,
                commit_seq: None,
                objects_changed: 0,
            });
        };
        match &body.event {
            Event::CommitObserved(e) => {
                revision(&mut self.revisions, &e.sha);
                if let Some(r) = self.revisions.get_mut(&e.sha) {
                    r.commit_seq.get_or_insert(seq);
                }
                self.observed_head = Some(e.sha.clone());
                self.deployable_head = Some(e.sha.clone());
            }
            // A chart version is to a chart App what a commit is to a Git one.
            Event::ChartObserved(e) => {
                revision(&mut self.revisions, &e.revision);
                if let Some(r) = self.revisions.get_mut(&e.revision) {
                    r.commit_seq.get_or_insert(seq);
                }
                self.observed_head = Some(e.revision.clone());
                self.deployable_head = Some(e.revision.clone());
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
                    if applied(e) {
                        r.applied_at = Some(time);
                    }
                }
            }
            Event::ObjectApplied(e) => {
                let identity = e.object.identity();
                let prev = self.inventory.remove(&identity);
                // A creation begins a new life (the object may have been deleted behind reckon's
                // back and created again); so does the first apply of an object not owned.
                let (lifecycle_seq, mut changed_since, mut counted_for) = match prev {
                    Some(p) if e.action != ApplyAction::Created => {
                        (p.lifecycle_seq, p.changed_since, p.counted_for)
                    }
                    Some(p) => (Some(seq), vec![], p.counted_for),
                    None => (Some(seq), vec![], 0),
                };
                if e.action == ApplyAction::Configured && lifecycle_seq != Some(seq) {
                    changed_since.extend(e.changed_fields.iter().cloned());
                    changed_since.sort();
                    changed_since.dedup();
                }
                if e.action != ApplyAction::Unchanged
                    && let Some(r) = self.revisions.get_mut(&e.revision)
                    && counted_for != r.first_seq
                {
                    r.objects_changed += 1;
                    counted_for = r.first_seq;
                }
                self.inventory.insert(
                    identity,
                    InventoryEntry {
                        object: e.object.clone(),
                        last_digest: e.digest,
                        revision: e.revision.clone(),
                        applied_seq: seq,
                        applied_at: time,
                        lifecycle_seq,
                        changed_since,
                        counted_for,
                    },
                );
            }
            // Released: no longer the App's, the same as pruned for the inventory.
            Event::ObjectPruned(ObjectPruned { revision, object })
            | Event::ObjectOrphaned(ObjectOrphaned {
                revision, object, ..
            }) => {
                let counted = self
                    .inventory
                    .remove(&object.identity())
                    .map(|p| p.counted_for);
                if let Some(r) = self.revisions.get_mut(revision)
                    && counted != Some(r.first_seq)
                {
                    r.objects_changed += 1;
                }
            }
            Event::AppSuspended(_) => self.suspended = true,
            Event::AppResumed(_) => self.suspended = false,
            // The state recorded under the earlier name, carried in the event so that this
            // App's own events fold to its whole state. One that does not decode (it was
            // encoded by reckon, so a damaged store) starts the App empty: it then owns
            // nothing, and prunes nothing, rather than something half-known.
            Event::AppRenamed(e) => {
                *self = decode_app_state(&e.base_state).unwrap_or_else(|err| {
                    tracing::error!(seq, from = %e.from, error = %err, "AppRenamed base state does not decode; the App starts empty");
                    AppState::default()
                });
            }
            Event::AppReset(_) => *self = AppState::default(),
            // Compaction does not change state: its base state is used by `rebuild` only.
            _ => {}
        }
        self.last_seq = body.seq;
    }
}

impl Projections {
    /// Folds one event. Events without an App (agent/store events) change no App state.
    pub fn fold(&mut self, body: &EnvelopeBody) {
        // The earlier name's state moved to this App (it is in the event): the earlier name
        // owns nothing any more.
        if let Event::AppRenamed(e) = &body.event
            && body.app.as_deref() != Some(e.from.as_str())
        {
            self.apps.remove(&e.from);
            // A new epoch, not none: an App by that name recorded later must not find the
            // revisions stored under the old one as its own before they are deleted.
            let gone = stored::Stored {
                epoch: body.seq,
                count: 0,
            };
            self.stored.insert(e.from.clone(), gone);
            match &body.app {
                Some(app) => status::move_on_rename(&mut self.status, &e.from, app, body.seq),
                None => drop(self.status.remove(&e.from)),
            }
        }
        if let Some(app) = &body.app {
            if !matches!(body.event, Event::RetentionCompacted(_)) {
                self.apps.entry(app.clone()).or_default().fold(body);
            }
            // The App's state was replaced whole: what the store holds of it is not its any more.
            if matches!(body.event, Event::AppRenamed(_) | Event::AppReset(_)) {
                let fresh = stored::Stored {
                    epoch: body.seq,
                    count: 0,
                };
                self.stored.insert(app.clone(), fresh);
            }
            // A compaction does change the status: what its removed events showed goes.
            self.status.entry(app.clone()).or_default().fold(body);
        }
        self.covered_seq = self.covered_seq.max(body.seq);
    }

    /// These projections with `app` alone (its state and status), for one App's views.
    pub fn only(&self, app: &str) -> Projections {
        Projections {
            covered_seq: self.covered_seq,
            apps: self
                .apps
                .get_key_value(app)
                .map(|(k, v)| (k.clone(), v.clone()))
                .into_iter()
                .collect(),
            status: self
                .status
                .get_key_value(app)
                .map(|(k, v)| (k.clone(), v.clone()))
                .into_iter()
                .collect(),
            stored: self
                .stored
                .get_key_value(app)
                .map(|(k, v)| (k.clone(), *v))
                .into_iter()
                .collect(),
        }
    }

    /// What `app` has in the store: its epoch and how many of its revisions are only there.
    pub fn stored(&self, app: &str) -> stored::Stored {
        self.stored.get(app).copied().unwrap_or_default()
    }

    /// Rebuilds from an ordered event stream. `bases` are the base states of compacted Apps
    /// (from their latest RetentionCompacted event): the compacted prefix is folded into them.
    pub fn replay<I, E>(bases: BTreeMap<String, AppState>, events: I) -> Result<Projections, E>
    where
        I: IntoIterator<Item = Result<Envelope, E>>,
    {
        // Status starts empty: what the compacted prefix showed is gone with it (as the
        // status a compaction leaves says).
        let mut p = Projections {
            covered_seq: 0,
            apps: bases,
            status: BTreeMap::new(),
            stored: BTreeMap::new(),
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

/// The whole projections' snapshot: [`PROJECTIONS_SNAPSHOT_VERSION`], then the hash of the last
/// event folded (`p.covered_seq`; zero for an empty log), then the projections.
pub fn encode_projections(
    p: &Projections,
    covered_hash: Digest,
) -> Result<Vec<u8>, ProjectionError> {
    let mut out = vec![PROJECTIONS_SNAPSHOT_VERSION];
    out.extend_from_slice(&covered_hash.0);
    out.extend(codec::encode(p)?);
    Ok(out)
}

/// The projections and the hash of the last event they folded.
pub fn decode_projections(bytes: &[u8]) -> Result<(Projections, Digest), ProjectionError> {
    match bytes.first() {
        None => Err(ProjectionError::Empty),
        Some(&PROJECTIONS_SNAPSHOT_VERSION) => {
            let hash: [u8; 32] = bytes
                .get(1..33)
                .and_then(|h| h.try_into().ok())
                .ok_or(ProjectionError::Empty)?;
            Ok((codec::decode(&bytes[33..])?, Digest(hash)))
        }
        Some(&v) => Err(ProjectionError::UnknownVersion(v)),
    }
}

/// A version-6 snapshot of the whole projections (before `stored`), converted: every revision
/// resident, nothing stored. The store reads it once, on its first open by this version, and
/// writes a version-7 snapshot at once, storing the revisions that need not stay resident
/// (migrations/0014_revisions_in_the_store.md); converting spares replaying the whole log.
pub fn decode_projections_v6(bytes: &[u8]) -> Result<(Projections, Digest), ProjectionError> {
    #[derive(Deserialize)]
    struct V6 {
        covered_seq: u64,
        apps: BTreeMap<String, AppState>,
        status: BTreeMap<String, StatusState>,
    }
    match bytes.first() {
        None => Err(ProjectionError::Empty),
        Some(&6) => {
            let hash: [u8; 32] = bytes
                .get(1..33)
                .and_then(|h| h.try_into().ok())
                .ok_or(ProjectionError::Empty)?;
            let v6: V6 = codec::decode(&bytes[33..])?;
            let p = Projections {
                covered_seq: v6.covered_seq,
                apps: v6.apps,
                status: v6.status,
                stored: BTreeMap::new(),
            };
            Ok((p, Digest(hash)))
        }
        Some(&v) => Err(ProjectionError::UnknownVersion(v)),
    }
}

/// One App's base state from a RetentionCompacted event, of this version or version 2.
pub fn decode_app_state(bytes: &[u8]) -> Result<AppState, ProjectionError> {
    match bytes.first() {
        Some(&2) => Ok(codec::decode::<v2::AppState>(&bytes[1..])?.into()),
        // Version 3 has this layout (4 changed how the log is folded, not the bytes).
        Some(&3) => Ok(codec::decode(&bytes[1..])?),
        _ => decode_snapshot(bytes),
    }
}

/// The version-2 layout, kept to read the base states compacted Apps carry in the log.
mod v2 {
    use super::{DateTime, Digest, Intent, ObjectRef, SyncOutcome, Utc};
    use crate::codec;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize)]
    pub struct AppState {
        intent: Intent,
        suspended: bool,
        inventory: BTreeMap<String, InventoryEntry>,
        revisions: BTreeMap<String, RevisionEntry>,
        last_seq: u64,
        observed_head: Option<String>,
        deployable_head: Option<String>,
    }

    #[derive(Deserialize)]
    struct InventoryEntry {
        object: ObjectRef,
        last_digest: Digest,
        revision: String,
        applied_seq: u64,
        #[serde(with = "codec::time")]
        applied_at: DateTime<Utc>,
    }

    #[derive(Deserialize)]
    struct RevisionEntry {
        #[serde(with = "codec::time")]
        first_seen: DateTime<Utc>,
        #[serde(with = "codec::time_opt")]
        applied_at: Option<DateTime<Utc>>,
        outcome: Option<SyncOutcome>,
        digest: Option<Digest>,
    }

    impl From<AppState> for super::AppState {
        /// What version 2 did not record stays unknown: no lifecycle start (blame walks the
        /// object's events instead), no commit event (its author is looked up by the commit
        /// index), and no changed objects counted before the compaction.
        fn from(s: AppState) -> Self {
            super::AppState {
                intent: s.intent,
                suspended: s.suspended,
                inventory: s
                    .inventory
                    .into_iter()
                    .map(|(k, e)| {
                        let entry = super::InventoryEntry {
                            object: e.object,
                            last_digest: e.last_digest,
                            revision: e.revision,
                            applied_seq: e.applied_seq,
                            applied_at: e.applied_at,
                            lifecycle_seq: None,
                            changed_since: vec![],
                            counted_for: 0,
                        };
                        (k, entry)
                    })
                    .collect(),
                revisions: s
                    .revisions
                    .into_iter()
                    .enumerate()
                    .map(|(i, (k, r))| {
                        let entry = super::RevisionEntry {
                            first_seen: r.first_seen,
                            applied_at: r.applied_at,
                            outcome: r.outcome,
                            digest: r.digest,
                            // Unknown; distinct per revision and never a real seq, so that
                            // counting changed objects still tells revisions apart.
                            first_seq: u64::MAX - i as u64,
                            commit_seq: None,
                            objects_changed: 0,
                        };
                        (k, entry)
                    })
                    .collect(),
                last_seq: s.last_seq,
                observed_head: s.observed_head,
                deployable_head: s.deployable_head,
            }
        }
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
                    // Failed outright: objects the API server refused.
                    counts: SyncCounts {
                        failed: 2,
                        ..Default::default()
                    },
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
    fn an_adoption_begins_a_life_and_an_orphaned_object_leaves_the_inventory() {
        let c = samples::commit(1, "a@x");
        let r = c.sha.clone();
        let settings = samples::object("", "v1", "ConfigMap", Some("web"), "settings");
        let mut p = Projections::default();
        p.fold(&body(1, "shop", None, Event::CommitObserved(c)));
        p.fold(&body(
            2,
            "shop",
            None,
            Event::ObjectApplied(ObjectApplied {
                revision: r.clone(),
                object: settings.clone(),
                action: ApplyAction::Adopted,
                changed_fields: vec!["/metadata/labels/reckon.dev~1app".into()],
                digest: Digest([4; 32]),
            }),
        ));
        let entry = &p.apps["shop"].inventory[&settings.identity()];
        assert_eq!(entry.lifecycle_seq, Some(2), "the adoption begins its life");
        assert!(entry.changed_since.is_empty());
        p.fold(&body(
            3,
            "shop",
            None,
            Event::ObjectOrphaned(ObjectOrphaned {
                revision: r,
                object: settings.clone(),
                reason: "adopted".into(),
            }),
        ));
        assert!(p.apps["shop"].inventory.is_empty());
    }

    #[test]
    fn a_chart_version_is_a_revision_and_the_head_like_a_commit() {
        let chart = |version: &str, n: u64| {
            Event::ChartObserved(crate::event::ChartObserved {
                revision: format!("{n:064x}"),
                repository: "https://charts.example".into(),
                name: "web".into(),
                version: version.into(),
                app_version: None,
                digest: format!("sha256:{n:064x}"),
                verified: true,
                created: None,
                signature: crate::event::SignatureStatus::NotChecked,
            })
        };
        let mut p = Projections::default();
        p.fold(&body(1, "web", None, chart("1.0.0", 1)));
        p.fold(&body(2, "web", None, chart("1.1.0", 2)));
        let a = &p.apps["web"];
        let head = format!("{:064x}", 2);
        assert_eq!(a.observed_head.as_deref(), Some(head.as_str()));
        assert_eq!(a.deployable_head.as_deref(), Some(head.as_str()));
        assert_eq!(a.revisions.len(), 2);
        assert_eq!(
            a.revisions[&format!("{:064x}", 1)].commit_seq,
            Some(1),
            "revisions and blame read the chart and version from its ChartObserved"
        );
        assert_eq!(a.revisions[&head].commit_seq, Some(2));
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

    /// Applied is not healthy (issue 15): before event schema 3 a sync whose every write was
    /// accepted but whose objects were not ready in time was recorded `Failed` with nothing
    /// failed. It applied its revision, and the fold says so; a sync that wrote nothing because
    /// every write was refused did not.
    #[test]
    fn a_sync_recorded_failed_only_for_health_counts_as_applied() {
        let c1 = samples::commit(1, "a@x");
        let r1 = c1.sha.clone();
        let finished = |seq, failed| {
            body(
                seq,
                "shop",
                None,
                Event::SyncFinished(SyncFinished {
                    revision: r1.clone(),
                    outcome: SyncOutcome::Failed,
                    counts: SyncCounts {
                        created: u32::from(failed == 0),
                        failed,
                        ..Default::default()
                    },
                    duration_ms: 5,
                }),
            )
        };
        let mut refused = AppState::default();
        refused.fold(&body(1, "shop", None, Event::CommitObserved(c1.clone())));
        refused.fold(&finished(2, 3));
        assert_eq!(refused.revisions[&r1].applied_at, None);
        let mut unready = AppState::default();
        unready.fold(&body(1, "shop", None, Event::CommitObserved(c1.clone())));
        unready.fold(&finished(2, 0));
        assert_eq!(
            unready.revisions[&r1].applied_at,
            DateTime::from_timestamp(1_764_000_002, 0)
        );
        assert_eq!(unready.revisions[&r1].outcome, Some(SyncOutcome::Failed));
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
        let p = folded_history();
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

    /// The bytes named `key` in the committed golden file `file` (an older version's snapshot).
    fn golden_snapshot(file: &str, key: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(file);
        let text = std::fs::read_to_string(path).unwrap();
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .unwrap();
        hex::decode(line.trim()).unwrap()
    }

    /// The projections kept in golden `file`, behind their own `version` byte and a head hash
    /// of sevens: bytes an older store wrote, which this version must refuse to read as its own.
    fn refused_old_projections(file: &str, version: u8) -> Vec<u8> {
        let old = golden_snapshot(file, "projections");
        let mut bytes = vec![version];
        bytes.extend_from_slice(&[7; 32]);
        bytes.extend_from_slice(&old[1..]);
        assert!(matches!(
            decode_projections(&bytes),
            Err(ProjectionError::UnknownVersion(v)) if v == version
        ));
        bytes
    }

    /// The projections of [`history`].
    fn folded_history() -> Projections {
        let mut p = Projections::default();
        history().iter().for_each(|b| p.fold(b));
        p
    }

    /// A version-6 projections snapshot (the projections before `stored`, whose bytes
    /// tests/golden/snapshots-v6.hex keeps) is not read as version 7: it is converted, every
    /// revision resident and nothing stored (the store then stores what need not stay).
    #[test]
    fn version_6_projections_snapshots_convert() {
        let v6 = refused_old_projections("snapshots-v6.hex", 6);
        let p = folded_history();
        assert!(p.stored.is_empty());
        let (back, hash) = decode_projections_v6(&v6).unwrap();
        assert_eq!((back, hash), (p, Digest([7; 32])));
        assert!(matches!(
            decode_projections_v6(
                &encode_projections(&Projections::default(), Digest::ZERO).unwrap()
            ),
            Err(ProjectionError::UnknownVersion(7))
        ));
    }

    /// A reset or a rename gives the App (and the earlier name) a new epoch of stored
    /// revisions: what the store holds under the old one is no longer theirs.
    #[test]
    fn resets_and_renames_start_a_new_epoch_of_stored_revisions() {
        let mut p = folded_history();
        p.stored
            .insert("shop".into(), stored::Stored { epoch: 0, count: 5 });
        let shop = p.apps["shop"].clone();
        p.fold(&body(
            20,
            "team-a.shop",
            None,
            Event::AppRenamed(AppRenamed {
                from: "shop".into(),
                anchor_seq: Some(shop.last_seq),
                reason: "proved".into(),
                base_state: encode_snapshot(&shop).unwrap(),
            }),
        ));
        let fresh = |epoch| stored::Stored { epoch, count: 0 };
        assert_eq!(p.stored("shop"), fresh(20));
        assert_eq!(p.stored("team-a.shop"), fresh(20));
        p.fold(&body(
            21,
            "team-a.shop",
            None,
            Event::AppReset(AppReset {
                previous_seq: 20,
                reason: "recreated".into(),
            }),
        ));
        assert_eq!(p.stored("team-a.shop"), fresh(21));
        assert_eq!(p.stored("other"), stored::Stored::default());
    }

    /// A version-5 projections snapshot (the projections before `status`, whose bytes
    /// tests/golden/snapshots-v5.hex keeps) is not read as version 6: the store rebuilds it from
    /// the log. App base states did not change.
    #[test]
    fn version_5_projections_snapshots_are_rebuilt_and_base_states_stay() {
        refused_old_projections("snapshots-v5.hex", 5);
        let p = folded_history();
        assert_eq!(
            golden_snapshot("snapshots-v5.hex", "app-state"),
            encode_snapshot(&p.apps["shop"]).unwrap()
        );
        let (back, hash) =
            decode_projections(&encode_projections(&p, Digest([7; 32])).unwrap()).unwrap();
        assert_eq!((back, hash), (p, Digest([7; 32])));
    }

    /// A version-3 App base state (tests/golden/snapshots-v3.hex, written before version 4,
    /// which changed how a sync is folded, not the layout) reads as it was.
    #[test]
    fn version_3_app_base_states_read_as_they_are() {
        let bytes = golden_snapshot("snapshots-v3.hex", "app-state");
        assert_eq!(bytes[0], 3);
        assert!(matches!(
            decode_snapshot::<AppState>(&bytes),
            Err(ProjectionError::UnknownVersion(3))
        ));
        let old = decode_app_state(&bytes).unwrap();
        let p = folded_history();
        assert_eq!(old, p.apps["shop"]);
    }

    /// A version-2 App base state (the bytes version 2 wrote for the same history, kept in
    /// tests/golden/snapshots-v2.hex) still reads: what version 2 recorded is kept, what it did
    /// not is unknown rather than invented.
    #[test]
    fn version_2_app_base_states_convert() {
        let bytes = golden_snapshot("snapshots-v2.hex", "app-state-v2");
        assert_eq!(bytes[0], 2);
        assert!(matches!(
            decode_snapshot::<AppState>(&bytes),
            Err(ProjectionError::UnknownVersion(2))
        ));
        let old = decode_app_state(&bytes).unwrap();
        let p = folded_history();
        let now = &p.apps["shop"];
        assert_eq!(old.intent, now.intent);
        assert_eq!(old.last_seq, now.last_seq);
        assert_eq!(
            old.inventory.keys().collect::<Vec<_>>(),
            now.inventory.keys().collect::<Vec<_>>()
        );
        for (k, e) in &old.inventory {
            let n = &now.inventory[k];
            assert_eq!(
                (&e.object, e.last_digest, &e.revision, e.applied_seq),
                (&n.object, n.last_digest, &n.revision, n.applied_seq)
            );
            assert_eq!((e.lifecycle_seq, e.changed_since.len()), (None, 0));
        }
        assert_eq!(
            old.revisions.keys().collect::<Vec<_>>(),
            now.revisions.keys().collect::<Vec<_>>()
        );
        let mut firsts = std::collections::BTreeSet::new();
        for (k, r) in &old.revisions {
            let n = &now.revisions[k];
            assert_eq!(
                (r.first_seen, r.applied_at, r.outcome, r.digest),
                (n.first_seen, n.applied_at, n.outcome, n.digest)
            );
            assert_eq!((r.commit_seq, r.objects_changed), (None, 0));
            assert!(firsts.insert(r.first_seq), "revisions stay distinct");
        }
    }

    #[test]
    fn a_rename_carries_the_state_and_the_earlier_name_keeps_none() {
        let mut p = Projections::default();
        for b in history() {
            p.fold(&b);
        }
        let shop = p.apps["shop"].clone();
        assert!(!shop.inventory.is_empty());
        let renamed = body(
            20,
            "team-a.shop",
            Some("reckon"),
            Event::AppRenamed(AppRenamed {
                from: "shop".into(),
                anchor_seq: Some(shop.last_seq),
                reason: "proved".into(),
                base_state: encode_snapshot(&shop).unwrap(),
            }),
        );
        p.fold(&renamed);
        assert!(
            !p.apps.contains_key("shop"),
            "the earlier name owns nothing"
        );
        let moved = &p.apps["team-a.shop"];
        assert_eq!(moved.inventory, shop.inventory);
        assert_eq!(moved.revisions, shop.revisions);
        assert_eq!(moved.last_seq, 20);
        // The App's own events alone fold to the same state (per-App readers, retention).
        let mut alone = AppState::default();
        alone.fold(&renamed);
        assert_eq!(&alone, moved);
        // An undecodable base state starts the App empty, owning nothing.
        let mut broken = AppState::default();
        let mut bad = renamed.clone();
        if let Event::AppRenamed(e) = &mut bad.event {
            e.base_state = vec![99];
        }
        broken.fold(&bad);
        assert!(broken.inventory.is_empty());

        // A reset: inventory, revisions and intent start over; the seq goes on.
        p.fold(&body(
            21,
            "team-a.shop",
            None,
            Event::AppReset(AppReset {
                previous_seq: 20,
                reason: "recreated".into(),
            }),
        ));
        let reset = &p.apps["team-a.shop"];
        assert!(reset.inventory.is_empty() && reset.revisions.is_empty());
        assert_eq!(reset.last_seq, 21);
    }
}
