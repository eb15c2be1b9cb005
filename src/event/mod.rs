//! Owns the event model: every fact reckon records (commits, intents, renders, syncs, applies,
//! drift, prunes, health, store housekeeping), typed object references and digests.
//!
//! These types are stored with bincode, which is not self-describing: **never reorder, remove or
//! insert fields or variants**. Add a variant at the end of [`Event`], or a new versioned type and
//! an upgrade on read (see [`envelope`]). The golden-bytes tests in `envelope` fail on any change.
//! No `#[serde(flatten)]`, `untagged` or `skip_serializing_if` here: bincode cannot decode them.

pub mod envelope;

use crate::codec;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

pub use crate::model::{Digest, Health};
pub use envelope::{Draft, Envelope, EnvelopeBody, EnvelopeError};

/// A reference as recorded: the object as every stage names it ([`crate::model::ObjectRef`],
/// whose fields it derefs to) and its uid, known once the object exists (it tells a re-created
/// object apart). Stored and shown as six fields in a row — group, version, kind, namespace,
/// name, uid — exactly as before the model type existed, so neither the bytes on disk nor the
/// events' JSON changed (the golden tests hold them).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub object: crate::model::ObjectRef,
    pub uid: Option<String>,
}

impl ObjectRef {
    /// `object` before its uid is known.
    pub fn new(object: crate::model::ObjectRef) -> Self {
        ObjectRef { object, uid: None }
    }

    pub fn with_uid(object: crate::model::ObjectRef, uid: Option<String>) -> Self {
        ObjectRef { object, uid }
    }
}

impl std::ops::Deref for ObjectRef {
    type Target = crate::model::ObjectRef;
    fn deref(&self) -> &crate::model::ObjectRef {
        &self.object
    }
}

impl std::ops::DerefMut for ObjectRef {
    fn deref_mut(&mut self) -> &mut crate::model::ObjectRef {
        &mut self.object
    }
}

/// The stored form's six fields, in their order.
#[derive(Serialize)]
#[serde(rename = "ObjectRef")]
struct StoredRef<'a> {
    group: &'a String,
    version: &'a String,
    kind: &'a String,
    namespace: &'a Option<String>,
    name: &'a String,
    uid: &'a Option<String>,
}

#[derive(Deserialize)]
#[serde(rename = "ObjectRef")]
struct StoredRefOwned {
    group: String,
    version: String,
    kind: String,
    namespace: Option<String>,
    name: String,
    uid: Option<String>,
}

impl Serialize for ObjectRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let o = &self.object;
        StoredRef {
            group: &o.group,
            version: &o.version,
            kind: &o.kind,
            namespace: &o.namespace,
            name: &o.name,
            uid: &self.uid,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ObjectRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = StoredRefOwned::deserialize(d)?;
        Ok(ObjectRef::with_uid(
            crate::model::ObjectRef {
                group: r.group,
                version: r.version,
                kind: r.kind,
                namespace: r.namespace,
                name: r.name,
            },
            r.uid,
        ))
    }
}

impl ObjectRef {
    /// The identity an App's history follows: group, kind, namespace and name. The API version
    /// is left out (the same object is served at several) and so is the uid (a deleted and
    /// recreated object is still "the same" object for "who changed what").
    pub fn identity(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.group,
            self.kind,
            self.namespace.as_deref().unwrap_or(""),
            self.name
        )
    }
}

/// A person in a commit: name, email and the time they signed the commit with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub name: String,
    pub email: String,
    #[serde(with = "codec::time")]
    pub time: DateTime<Utc>,
    /// The UTC offset of the person's clock when they wrote it, in seconds east (+0200 = 7200):
    /// "committed at 09:00 in Berlin" is part of the audit record, not only the instant.
    pub offset_seconds: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignatureStatus {
    Unsigned,
    /// Signature checking was not configured (policy `off`).
    NotChecked,
    /// A good signature by an allowed key: `format` is `ssh` or `gpg`, `signer` the
    /// allowed-signers principal or GPG user id, `key` the key's fingerprint.
    Good {
        format: String,
        signer: String,
        key: String,
    },
    /// A signature by a key that is not allowed (or no keys are configured for its format).
    Untrusted {
        format: String,
        detail: String,
    },
    /// A signature that does not verify (tampered commit, wrong or expired key, unsupported
    /// format).
    Invalid {
        format: String,
        detail: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntentKind {
    /// Follow the source ref's head.
    Follow,
    /// Go back to a recorded revision and stay there until resumed.
    Rollback,
    /// Stay at a revision (not necessarily an older one) until resumed.
    Pin,
    /// Leave a rollback or pin and follow the source again.
    Resume,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyAction {
    Created,
    Configured,
    Unchanged,
    /// Event schema 4: the object existed outside the inventory and the App took it over
    /// (`adopt` policy); never `Created`, so that pruning it later is the App's choice.
    Adopted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncOutcome {
    Succeeded,
    /// Some objects failed to apply or prune; the rest were applied.
    PartiallyFailed,
    Failed,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCounts {
    pub created: u32,
    pub configured: u32,
    pub unchanged: u32,
    pub pruned: u32,
    pub prune_skipped: u32,
    pub failed: u32,
}

/// One drifted field: its path (JSON pointer-ish, e.g. `spec.replicas`) and both values as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDiff {
    pub path: String,
    /// What reckon last applied (`None`: the field was not set by reckon).
    pub expected: Option<String>,
    /// What the cluster has (`None`: the field is gone).
    pub actual: Option<String>,
}

/// A field manager from `metadata.managedFields` that owns drifted fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldManager {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The drifted field paths this manager owns.
    pub fields: Vec<String>,
    /// When the manager last wrote (managedFields `time`), if the server said.
    #[serde(with = "codec::time_opt")]
    pub time: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStarted {
    pub version: String,
    pub host: Option<String>,
    pub pid: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitObserved {
    pub sha: String,
    pub parents: Vec<String>,
    /// The ref it was observed on (e.g. `refs/heads/main`).
    pub ref_name: String,
    pub author: Person,
    pub committer: Person,
    pub message: String,
    pub signature: SignatureStatus,
    /// Paths changed against the first parent, limited to the App's source path.
    pub changed_paths: Vec<String>,
}

/// The actor of an intent is the envelope's `actor`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentRecorded {
    pub intent: IntentKind,
    /// The target revision of a rollback or pin; `None` for follow / resume.
    pub revision: Option<String>,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderSucceeded {
    pub revision: String,
    /// Address of the canonical rendered manifests in the blob store.
    pub digest: Digest,
    pub object_count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderFailed {
    pub revision: String,
    pub error: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStarted {
    pub revision: String,
    pub digest: Option<Digest>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncFinished {
    pub revision: String,
    pub outcome: SyncOutcome,
    pub counts: SyncCounts,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectApplied {
    pub revision: String,
    pub object: ObjectRef,
    pub action: ApplyAction,
    pub changed_fields: Vec<String>,
    /// Digest of the object's canonical manifest as applied.
    pub digest: Digest,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyFailed {
    pub revision: String,
    pub object: ObjectRef,
    pub error: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftDetected {
    pub object: ObjectRef,
    pub diffs: Vec<FieldDiff>,
    pub managers: Vec<FieldManager>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftCorrected {
    pub revision: String,
    pub object: ObjectRef,
    pub fields: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectPruned {
    pub revision: String,
    pub object: ObjectRef,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneSkipped {
    pub revision: String,
    pub object: ObjectRef,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthChanged {
    /// `None`: the App's aggregate health.
    pub object: Option<ObjectRef>,
    pub from: Health,
    pub to: Health,
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSuspended {
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppResumed {
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreMigrated {
    pub from_schema: u32,
    pub to_schema: u32,
    /// The migration step's name, e.g. `0002_kind_time_indexes`.
    pub step: String,
    /// Where the pre-migration copy was written.
    pub backup: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFetchFailed {
    pub url: String,
    pub ref_name: String,
    pub error: String,
    /// A short stable code (`Unreachable`, `AuthFailed`, `HostKeyRejected`, `TlsUntrusted`,
    /// `MissingRef`, `Credentials`, `CorruptCache`, `FetchFailed`, ...) for filters and alerts.
    pub reason: String,
}

/// A force push: the ref moved to a commit that does not descend from the old head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRewritten {
    pub ref_name: String,
    pub old_head: String,
    pub new_head: String,
    /// The newest commit both histories share, when the old head is still known.
    pub merge_base: Option<String>,
}

/// The source's local mirror was unusable (damaged pack, unreadable ref, ...) and was removed
/// and cloned again; nothing was lost on the remote side, but the damage is worth knowing about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCacheRecovered {
    pub url: String,
    pub reason: String,
}

/// The signature policy (`require`) refused to deploy a revision; the App keeps `kept`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionBlocked {
    pub revision: String,
    pub reason: String,
    /// The revision the App stays on (its last deployable head), if it had one.
    pub kept: Option<String>,
}

/// The agent knows it could not record what happened for a while (e.g. the store lost its tail
/// after a power loss, or the store was unavailable).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreGap {
    /// The last sequence number known to have been written, when known.
    pub expected_seq: Option<u64>,
    pub found_seq: u64,
    pub reason: String,
}

/// Old events of one App were removed by a retention policy and summarised here. The removed
/// events' hashes stay in the store (tombstones), so the chain still verifies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionCompacted {
    pub policy: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub removed: u64,
    pub removed_bytes: u64,
    /// `(event kind name, count)` of what was removed.
    pub by_kind: Vec<(String, u64)>,
    #[serde(with = "codec::time_opt")]
    pub first_time: Option<DateTime<Utc>>,
    #[serde(with = "codec::time_opt")]
    pub last_time: Option<DateTime<Utc>>,
    /// SHA-256 over `seq (u64 BE) || hash` of every removed event, in sequence order: it vouches
    /// for the tombstones.
    pub tombstones_digest: Digest,
    /// The App's projection as of the removed events (a versioned snapshot), so that replay after
    /// compaction yields the same state.
    #[serde(with = "codec::bytes")]
    pub base_state: Vec<u8>,
}

/// One write the Kubernetes audit log recorded on a drifted object: who made it and how
/// (see docs/audit.md). Everything here comes from the API server's audit event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditWriter {
    /// `user.username` (for a token user, the name in the token file; for a service account,
    /// `system:serviceaccount:NS:NAME`).
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    /// `impersonatedUser.username` when the request impersonated someone: `username` is then
    /// the person who asked, this the identity they wrote as.
    pub impersonated: Option<String>,
    pub user_agent: Option<String>,
    pub source_ips: Vec<String>,
    /// `auditID`: find the full record in the API server's own audit log.
    pub audit_id: String,
    /// `create`, `update`, `patch` or `delete`.
    pub verb: String,
    /// `scale`, `status`, ... when the write went to a subresource.
    pub subresource: Option<String>,
    /// When the API server finished the request (`stageTimestamp`).
    #[serde(with = "codec::time")]
    pub time: DateTime<Utc>,
    /// The drifted paths this write explains (`""`: the whole object, deleted or created).
    pub fields: Vec<String>,
    /// Why: `request-body` (the recorded request set the drifted value, or the verb was the
    /// deletion/creation itself), or `only-write` (no request body was recorded — audit level
    /// `Metadata` — and this was the only write to the object in the drift's window).
    pub evidence: String,
}

/// Who made a drift, from the Kubernetes audit log; or that nobody could be named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftAttributed {
    pub object: ObjectRef,
    /// The `DriftDetected` this attributes; `None` for a write reckon learnt of only through
    /// the audit log (an object created by hand in a namespace an App manages).
    pub drift_seq: Option<u64>,
    /// The writes that explain the drift, oldest first. Empty: unattributed (no audit event
    /// matched; reckon never guesses).
    pub writers: Vec<AuditWriter>,
    /// Drifted paths no writer explains (all of them when `writers` is empty).
    pub unexplained: Vec<String>,
}

/// Drifted fields that a new revision's apply wrote in the same pass: the value now in the
/// cluster is the revision's (blame credits that apply), not a drift put back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftSuperseded {
    pub revision: String,
    pub object: ObjectRef,
    /// The drifted paths (as in the `DriftDetected`) the revision set to a new value.
    pub fields: Vec<String>,
}

/// One failure shared by several objects of a sync (a missing namespace, a kind the agent may
/// not write, an unreachable API server), recorded once for all of them instead of one
/// `ApplyFailed` each, and recorded again only when the cause changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyBlocked {
    pub revision: String,
    /// A short stable code (`NamespaceMissing`, `Forbidden`, `Unreachable`, ...).
    pub cause: String,
    /// The server's message for the first object (the others said the same).
    pub error: String,
    /// Every object the cause stopped, in apply order.
    pub objects: Vec<ObjectRef>,
}

/// An adopted object that left Git and was released instead of deleted (`prune.adopted` off):
/// the App's label was taken off, the object stays in the cluster and leaves the inventory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectOrphaned {
    pub revision: String,
    pub object: ObjectRef,
    pub reason: String,
}

/// The history and inventory an App recorded under an earlier name continue under this event's
/// App (migration 0009): a store written before App objects were identified by namespace and
/// name keeps an App object's history under its bare name, and it becomes the object's only
/// when the object's status anchor proves it (its `lastEventSeq` is the last event recorded
/// under that name). Recorded once, before the App's first pass under its identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRenamed {
    /// The name the history was recorded under until now.
    pub from: String,
    /// The App object's status anchor that proved it (its `lastEventSeq`).
    pub anchor_seq: Option<u64>,
    pub reason: String,
    /// `from`'s projection at the rename (a versioned App base state, as in
    /// [`RetentionCompacted`]): folding this App's own events alone yields its whole state.
    #[serde(with = "codec::bytes")]
    pub base_state: Vec<u8>,
}

/// An App starts anew under an identity the store already knows: an App object deleted and
/// created again under the same namespace and name, whose status (empty: the API server keeps
/// no status across a deletion) cannot prove it is the App that recorded the earlier events.
/// Its inventory, revisions and intent start empty; its earlier history stays in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppReset {
    /// The identity's last event before the reset.
    pub previous_seq: u64,
    pub reason: String,
}

/// A chart version an App following an HTTP(S) chart repository observed (event schema 6): one
/// per new version that matches the App's version or range, oldest first, the one it deploys
/// last. Its `revision` is what the App's revision table, rollback, blame and the commit index
/// key it by: the archive's SHA-256 in hex, which names the chart, its version and its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChartObserved {
    /// The archive's SHA-256 in lowercase hex (the `digest` without its `sha256:`).
    pub revision: String,
    /// The repository URL, credentials replaced by `***`.
    pub repository: String,
    /// The chart's name as the index lists it.
    pub name: String,
    pub version: String,
    pub app_version: Option<String>,
    /// `sha256:<hex>` of the archive: checked against the downloaded bytes for the version the
    /// App deploys, as the index gives it for a version passed over on the way there.
    pub digest: String,
    /// Whether reckon downloaded the archive and checked the digest itself (the deployed
    /// version) or took it from the index (a version between the previous one and it).
    pub verified: bool,
    /// The index's `created` time of the version, as written there.
    pub created: Option<String>,
    /// The chart's cosign signature as checked under the App's `chart.signature` policy (an
    /// OCI chart; `NotChecked` for a chart repository's and when the policy is off).
    pub signature: SignatureStatus,
}

/// Every event. **Append new variants at the end only**: the variant index is the stored tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    AgentStarted(AgentStarted),
    CommitObserved(CommitObserved),
    IntentRecorded(IntentRecorded),
    RenderSucceeded(RenderSucceeded),
    RenderFailed(RenderFailed),
    SyncStarted(SyncStarted),
    SyncFinished(SyncFinished),
    ObjectApplied(ObjectApplied),
    ApplyFailed(ApplyFailed),
    DriftDetected(DriftDetected),
    DriftCorrected(DriftCorrected),
    ObjectPruned(ObjectPruned),
    PruneSkipped(PruneSkipped),
    HealthChanged(HealthChanged),
    AppSuspended(AppSuspended),
    AppResumed(AppResumed),
    StoreMigrated(StoreMigrated),
    SourceFetchFailed(SourceFetchFailed),
    HistoryRewritten(HistoryRewritten),
    StoreGap(StoreGap),
    RetentionCompacted(RetentionCompacted),
    SourceCacheRecovered(SourceCacheRecovered),
    RevisionBlocked(RevisionBlocked),
    /// Event schema 2.
    DriftAttributed(DriftAttributed),
    /// Event schema 3.
    DriftSuperseded(DriftSuperseded),
    ApplyBlocked(ApplyBlocked),
    /// Event schema 4.
    ObjectOrphaned(ObjectOrphaned),
    /// Event schema 5.
    AppRenamed(AppRenamed),
    AppReset(AppReset),
    /// Event schema 6.
    ChartObserved(ChartObserved),
}

/// The kind of an event, as stored in the kind index (one byte; values are part of the format).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum EventKind {
    AgentStarted = 0,
    CommitObserved = 1,
    IntentRecorded = 2,
    RenderSucceeded = 3,
    RenderFailed = 4,
    SyncStarted = 5,
    SyncFinished = 6,
    ObjectApplied = 7,
    ApplyFailed = 8,
    DriftDetected = 9,
    DriftCorrected = 10,
    ObjectPruned = 11,
    PruneSkipped = 12,
    HealthChanged = 13,
    AppSuspended = 14,
    AppResumed = 15,
    StoreMigrated = 16,
    SourceFetchFailed = 17,
    HistoryRewritten = 18,
    StoreGap = 19,
    RetentionCompacted = 20,
    SourceCacheRecovered = 21,
    RevisionBlocked = 22,
    DriftAttributed = 23,
    DriftSuperseded = 24,
    ApplyBlocked = 25,
    ObjectOrphaned = 26,
    AppRenamed = 27,
    AppReset = 28,
    ChartObserved = 29,
}

impl EventKind {
    pub const ALL: [EventKind; 30] = [
        EventKind::AgentStarted,
        EventKind::CommitObserved,
        EventKind::IntentRecorded,
        EventKind::RenderSucceeded,
        EventKind::RenderFailed,
        EventKind::SyncStarted,
        EventKind::SyncFinished,
        EventKind::ObjectApplied,
        EventKind::ApplyFailed,
        EventKind::DriftDetected,
        EventKind::DriftCorrected,
        EventKind::ObjectPruned,
        EventKind::PruneSkipped,
        EventKind::HealthChanged,
        EventKind::AppSuspended,
        EventKind::AppResumed,
        EventKind::StoreMigrated,
        EventKind::SourceFetchFailed,
        EventKind::HistoryRewritten,
        EventKind::StoreGap,
        EventKind::RetentionCompacted,
        EventKind::SourceCacheRecovered,
        EventKind::RevisionBlocked,
        EventKind::DriftAttributed,
        EventKind::DriftSuperseded,
        EventKind::ApplyBlocked,
        EventKind::ObjectOrphaned,
        EventKind::AppRenamed,
        EventKind::AppReset,
        EventKind::ChartObserved,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::AgentStarted => "AgentStarted",
            EventKind::CommitObserved => "CommitObserved",
            EventKind::IntentRecorded => "IntentRecorded",
            EventKind::RenderSucceeded => "RenderSucceeded",
            EventKind::RenderFailed => "RenderFailed",
            EventKind::SyncStarted => "SyncStarted",
            EventKind::SyncFinished => "SyncFinished",
            EventKind::ObjectApplied => "ObjectApplied",
            EventKind::ApplyFailed => "ApplyFailed",
            EventKind::DriftDetected => "DriftDetected",
            EventKind::DriftCorrected => "DriftCorrected",
            EventKind::ObjectPruned => "ObjectPruned",
            EventKind::PruneSkipped => "PruneSkipped",
            EventKind::HealthChanged => "HealthChanged",
            EventKind::AppSuspended => "AppSuspended",
            EventKind::AppResumed => "AppResumed",
            EventKind::StoreMigrated => "StoreMigrated",
            EventKind::SourceFetchFailed => "SourceFetchFailed",
            EventKind::HistoryRewritten => "HistoryRewritten",
            EventKind::StoreGap => "StoreGap",
            EventKind::RetentionCompacted => "RetentionCompacted",
            EventKind::SourceCacheRecovered => "SourceCacheRecovered",
            EventKind::RevisionBlocked => "RevisionBlocked",
            EventKind::DriftAttributed => "DriftAttributed",
            EventKind::DriftSuperseded => "DriftSuperseded",
            EventKind::ApplyBlocked => "ApplyBlocked",
            EventKind::ObjectOrphaned => "ObjectOrphaned",
            EventKind::AppRenamed => "AppRenamed",
            EventKind::AppReset => "AppReset",
            EventKind::ChartObserved => "ChartObserved",
        }
    }

    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn from_u8(v: u8) -> Option<EventKind> {
        EventKind::ALL.get(v as usize).copied()
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::AgentStarted(_) => EventKind::AgentStarted,
            Event::CommitObserved(_) => EventKind::CommitObserved,
            Event::IntentRecorded(_) => EventKind::IntentRecorded,
            Event::RenderSucceeded(_) => EventKind::RenderSucceeded,
            Event::RenderFailed(_) => EventKind::RenderFailed,
            Event::SyncStarted(_) => EventKind::SyncStarted,
            Event::SyncFinished(_) => EventKind::SyncFinished,
            Event::ObjectApplied(_) => EventKind::ObjectApplied,
            Event::ApplyFailed(_) => EventKind::ApplyFailed,
            Event::DriftDetected(_) => EventKind::DriftDetected,
            Event::DriftCorrected(_) => EventKind::DriftCorrected,
            Event::ObjectPruned(_) => EventKind::ObjectPruned,
            Event::PruneSkipped(_) => EventKind::PruneSkipped,
            Event::HealthChanged(_) => EventKind::HealthChanged,
            Event::AppSuspended(_) => EventKind::AppSuspended,
            Event::AppResumed(_) => EventKind::AppResumed,
            Event::StoreMigrated(_) => EventKind::StoreMigrated,
            Event::SourceFetchFailed(_) => EventKind::SourceFetchFailed,
            Event::HistoryRewritten(_) => EventKind::HistoryRewritten,
            Event::StoreGap(_) => EventKind::StoreGap,
            Event::RetentionCompacted(_) => EventKind::RetentionCompacted,
            Event::SourceCacheRecovered(_) => EventKind::SourceCacheRecovered,
            Event::RevisionBlocked(_) => EventKind::RevisionBlocked,
            Event::DriftAttributed(_) => EventKind::DriftAttributed,
            Event::DriftSuperseded(_) => EventKind::DriftSuperseded,
            Event::ApplyBlocked(_) => EventKind::ApplyBlocked,
            Event::ObjectOrphaned(_) => EventKind::ObjectOrphaned,
            Event::AppRenamed(_) => EventKind::AppRenamed,
            Event::AppReset(_) => EventKind::AppReset,
            Event::ChartObserved(_) => EventKind::ChartObserved,
        }
    }

    /// The object this event is about, if any (drives the object index).
    pub fn object(&self) -> Option<&ObjectRef> {
        match self {
            Event::ObjectApplied(e) => Some(&e.object),
            Event::ApplyFailed(e) => Some(&e.object),
            Event::DriftDetected(e) => Some(&e.object),
            Event::DriftCorrected(e) => Some(&e.object),
            Event::DriftAttributed(e) => Some(&e.object),
            Event::DriftSuperseded(e) => Some(&e.object),
            Event::ObjectPruned(e) => Some(&e.object),
            Event::PruneSkipped(e) => Some(&e.object),
            Event::ObjectOrphaned(e) => Some(&e.object),
            Event::HealthChanged(e) => e.object.as_ref(),
            _ => None,
        }
    }

    /// Every object this event is about (drives the object index): [`Event::object`], or each
    /// object of an [`ApplyBlocked`].
    pub fn objects(&self) -> Vec<&ObjectRef> {
        match self {
            Event::ApplyBlocked(e) => e.objects.iter().collect(),
            other => other.object().into_iter().collect(),
        }
    }

    /// The revisions this event mentions (drives the commit index): commit SHAs, and a chart
    /// revision's archive digest.
    pub fn revisions(&self) -> Vec<&str> {
        match self {
            Event::CommitObserved(e) => vec![e.sha.as_str()],
            Event::IntentRecorded(e) => e.revision.as_deref().into_iter().collect(),
            Event::RenderSucceeded(e) => vec![e.revision.as_str()],
            Event::RenderFailed(e) => vec![e.revision.as_str()],
            Event::SyncStarted(e) => vec![e.revision.as_str()],
            Event::SyncFinished(e) => vec![e.revision.as_str()],
            Event::ObjectApplied(e) => vec![e.revision.as_str()],
            Event::ApplyFailed(e) => vec![e.revision.as_str()],
            Event::DriftCorrected(e) => vec![e.revision.as_str()],
            Event::DriftSuperseded(e) => vec![e.revision.as_str()],
            Event::ApplyBlocked(e) => vec![e.revision.as_str()],
            Event::ObjectPruned(e) => vec![e.revision.as_str()],
            Event::PruneSkipped(e) => vec![e.revision.as_str()],
            Event::ObjectOrphaned(e) => vec![e.revision.as_str()],
            Event::HistoryRewritten(e) => vec![e.old_head.as_str(), e.new_head.as_str()],
            Event::RevisionBlocked(e) => vec![e.revision.as_str()],
            Event::ChartObserved(e) => vec![e.revision.as_str()],
            _ => vec![],
        }
    }

    /// The commit author and committer emails this event carries (drives the author index).
    /// Emails are compared case-insensitively (lowercased) in the index.
    pub fn authors(&self) -> Vec<&str> {
        match self {
            Event::CommitObserved(e) if e.author.email == e.committer.email => {
                vec![e.author.email.as_str()]
            }
            Event::CommitObserved(e) => vec![e.author.email.as_str(), e.committer.email.as_str()],
            _ => vec![],
        }
    }
}

/// Deterministic example events, shared by unit tests, integration tests, benches and the fixture
/// generator (one source of realistic data instead of several drifting copies).
#[doc(hidden)]
pub mod samples;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_dense_and_named_like_variants() {
        for (i, k) in EventKind::ALL.iter().enumerate() {
            assert_eq!(*k as u8 as usize, i);
            assert_eq!(EventKind::from_u8(i as u8), Some(*k));
            assert_eq!(EventKind::from_name(k.name()), Some(*k));
        }
        assert_eq!(EventKind::from_u8(EventKind::ALL.len() as u8), None);
        // The JSON tag of every sample is its kind's name (export relies on it).
        for e in samples::all_events() {
            let v = serde_json::to_value(&e).unwrap();
            let tag = v.as_object().unwrap().keys().next().unwrap().clone();
            assert_eq!(tag, e.kind().name());
        }
    }

    #[test]
    fn object_identity_ignores_version_and_uid() {
        let a = samples::object("apps", "v1", "Deployment", Some("web"), "api");
        let mut b = a.clone();
        b.version = "v1beta1".into();
        b.uid = None;
        assert_eq!(a.identity(), b.identity());
        let mut c = a.clone();
        c.namespace = Some("other".into());
        assert_ne!(a.identity(), c.identity());
        let cluster_scoped = samples::object("", "v1", "Namespace", None, "web");
        assert_eq!(cluster_scoped.identity(), "/Namespace//web");
    }

    #[test]
    fn digest_hex_round_trip() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Digest::from_hex("abcd"), None);
    }
}
