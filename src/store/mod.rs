//! Owns the event store: the append-only, hash-chained, indexed log, its blob store, projections,
//! verification, retention, migrations and export/import. The on-disk layout and its invariants
//! are documented in `docs/storage.md` and [`keys`].
//!
//! The rest of reckon sees two traits: [`EventRead`] (any number of readers, on clones of the
//! database) and [`EventStore`] (one writer). [`sled_engine::SledStore`] implements them on sled
//! 0.34.7; [`writer`] puts the single writer behind a bounded channel for tokio code.

pub mod blob;
pub mod checkpoint;
pub mod clock;
pub mod copies;
pub mod exchange;
pub mod keys;
pub mod last_verify;
pub mod projection;
pub mod retention;
pub mod revisions;
pub mod sled_engine;
pub mod verify;
pub mod writer;

use crate::event::{Digest, Draft, Envelope, EnvelopeError, EventKind, ObjectRef};
use chrono::{DateTime, Utc};
use std::path::PathBuf;

pub use projection::Projections;
pub use revisions::RevisionView;
/// The migration steps run when a store of an older schema is opened (part of the engine's open
/// phase; here under the name the docs and `migrations/` use).
pub use sled_engine::migrate;
pub use sled_engine::{OpenOptions, SledStore, StoreReader};

/// The store layout schema this reckon writes. See `migrations/`.
pub const STORE_SCHEMA: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The flush shared by a group of appends failed; the first of them got the cause itself.
    #[error("the flush this batch was part of failed: {reason}")]
    GroupFlush { reason: String },
    #[error("{path}: no reckon store here (use a command that creates one, or check --store)")]
    NotFound { path: PathBuf },
    #[error("{path}: not a reckon store: {reason}")]
    NotAStore { path: PathBuf, reason: String },
    #[error(
        "{path}: store schema {found} is newer than this reckon supports ({supported}); upgrade \
         reckon. The store was not modified."
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "{path}: disk full while {op}; free space and retry (nothing after the last flush was lost silently: the failed batch was not acknowledged)"
    )]
    DiskFull { path: PathBuf, op: &'static str },
    /// Another process holds the store (sled's file lock): a running agent, or a command.
    /// Its own variant so that callers that wait or explain it need not match message text.
    #[error("{path}: the store is in use by another process ({reason})")]
    Locked { path: PathBuf, reason: String },
    #[error("{path}: I/O error while {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: sled error while {op}: {source}")]
    Sled {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error("{path}: corrupt record{}: {reason}", seq.map(|s| format!(" at seq {s}")).unwrap_or_default())]
    Corrupt {
        path: PathBuf,
        seq: Option<u64>,
        reason: String,
    },
    #[error(
        "{path}: the log ends at seq {log_seq} but HEAD recorded seq {head_seq} as flushed: \
         events were lost (e.g. power loss; sled syncs with sync_file_range). Run `reckon store \
         verify`; restore from a backup or export, or run `reckon store recover` to record the \
         loss as a StoreGap event and go on"
    )]
    Truncated {
        path: PathBuf,
        head_seq: u64,
        log_seq: u64,
    },
    #[error("{path}: migration {step} failed: {reason}")]
    Migration {
        path: PathBuf,
        step: &'static str,
        reason: String,
    },
    #[error("import line {line}: {reason}")]
    Import { line: u64, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("the store writer task has stopped")]
    WriterGone,
}

impl StoreError {
    pub(crate) fn sled(path: &std::path::Path, op: &'static str, e: sled::Error) -> StoreError {
        match e {
            // sled reports its lock as an `Other` I/O error: its text is the only mark, so it
            // is read here, once, where sled's errors become reckon's.
            sled::Error::Io(io) if io.to_string().contains(SLED_LOCKED) => StoreError::Locked {
                path: path.to_owned(),
                reason: io.to_string(),
            },
            sled::Error::Io(io) => StoreError::io(path, op, io),
            sled::Error::Corruption { at, .. } => StoreError::Corrupt {
                path: path.to_owned(),
                seq: None,
                reason: format!("sled reports corruption at {at:?} while {op}"),
            },
            other => StoreError::Sled {
                path: path.to_owned(),
                op,
                source: other,
            },
        }
    }

    pub(crate) fn io(path: &std::path::Path, op: &'static str, e: std::io::Error) -> StoreError {
        if is_disk_full(&e) {
            StoreError::DiskFull {
                path: path.to_owned(),
                op,
            }
        } else {
            StoreError::Io {
                path: path.to_owned(),
                op,
                source: e,
            }
        }
    }

    pub(crate) fn envelope(path: &std::path::Path, seq: u64, e: EnvelopeError) -> StoreError {
        StoreError::Corrupt {
            path: path.to_owned(),
            seq: Some(seq),
            reason: e.to_string(),
        }
    }
}

/// How sled 0.34 words the error of a store another process holds.
const SLED_LOCKED: &str = "could not acquire lock";

/// ENOSPC and EDQUOT, whichever way the platform reports them.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(28) | Some(122))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    NewestFirst,
    OldestFirst,
}

/// Which events a query walks. Every selector yields events in sequence order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// The whole log (a range scan).
    All,
    App(String),
    /// By identity (group, kind, namespace, name): version and uid are ignored.
    Object(ObjectRef),
    Commit(String),
    /// Commit author or committer email, case-insensitive.
    Author(String),
    Kind(EventKind),
    /// An object's DriftDetected, DriftCorrected and DriftAttributed events (by identity,
    /// like `Object`).
    Drift(ObjectRef),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub selector: Selector,
    pub order: Order,
    pub limit: usize,
    /// Continue after this sequence number (the `next` of the previous page).
    pub cursor: Option<u64>,
    /// Time range (inclusive). With [`Selector::All`] it uses the time index.
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl Query {
    pub fn new(selector: Selector) -> Query {
        Query {
            selector,
            order: Order::NewestFirst,
            limit: 100,
            cursor: None,
            since: None,
            until: None,
        }
    }

    pub fn oldest_first(mut self) -> Query {
        self.order = Order::OldestFirst;
        self
    }

    pub fn limit(mut self, n: usize) -> Query {
        self.limit = n;
        self
    }

    pub fn after(mut self, cursor: Option<u64>) -> Query {
        self.cursor = cursor;
        self
    }

    pub fn between(mut self, since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> Query {
        self.since = since;
        self.until = until;
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub events: Vec<Envelope>,
    /// Pass as `cursor` to get the next page; `None` when the scan is exhausted.
    pub next: Option<u64>,
}

/// The result of one appended batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub first_seq: u64,
    pub last_seq: u64,
    pub head: Digest,
}

/// A page of sequence numbers from an index, without the events (see [`EventRead::postings`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqPage {
    pub seqs: Vec<u64>,
    /// Pass as `cursor` to continue; `None` when the index is exhausted in the range.
    pub next: Option<u64>,
}

pub trait EventRead {
    fn get(&self, seq: u64) -> Result<Option<Envelope>, StoreError>;
    /// The events at `seqs`, in that order (`None` where none is live). A store may read them
    /// concurrently (a page of one object's events lies in as many chunks as events, each a
    /// disk read when cold); the default reads them one after another.
    fn get_many(&self, seqs: &[u64]) -> Result<Vec<Option<Envelope>>, StoreError> {
        seqs.iter().map(|s| self.get(*s)).collect()
    }
    fn query(&self, q: &Query) -> Result<Page, StoreError>;
    /// The decompressed, address-checked canonical manifests.
    fn blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError>;
    /// The sequence numbers `q` selects, read from the index alone (no event is decoded), so
    /// that several indexes can be intersected cheaply. May include events of another term
    /// whose 8-byte hash collides: callers check the events they keep. Time bounds narrow the
    /// sequence range only. The default decodes the events (stores without an index).
    fn postings(&self, q: &Query) -> Result<SeqPage, StoreError> {
        let page = self.query(q)?;
        Ok(SeqPage {
            seqs: page.events.iter().map(|e| e.body.seq).collect(),
            next: page.next,
        })
    }
    /// The revisions of `app` (generation `epoch`) the store keeps beside its snapshot rather
    /// than in the projections, whose SHA starts with `prefix`, in SHA order. Read them through
    /// [`RevisionView`], which merges them with the resident ones.
    fn stored_revisions(
        &self,
        app: &str,
        epoch: u64,
        prefix: &str,
    ) -> Result<Vec<(String, projection::RevisionEntry)>, StoreError>;
}

/// The single writer's interface.
pub trait EventStore: EventRead {
    /// Appends one logical batch atomically (events and their index entries). Not yet durable:
    /// call [`EventStore::flush`] at the end of a logical batch.
    fn append(&mut self, drafts: Vec<Draft>) -> Result<Appended, StoreError>;
    /// Stores canonical manifests (deduplicated); returns their address.
    fn put_blob(&mut self, canonical: &[u8]) -> Result<Digest, StoreError>;
    /// Makes everything appended so far durable (as far as sled can: see docs/storage.md).
    fn flush(&mut self) -> Result<(), StoreError>;
    fn projections(&self) -> &Projections;
    /// `(seq, hash)` of the newest event.
    fn head(&self) -> Option<(u64, Digest)>;
}
