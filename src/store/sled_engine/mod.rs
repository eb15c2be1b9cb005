//! Owns the sled engine, one file per phase: [`format`] (the directory layout, marker and
//! `HEAD` file, sled's settings), [`open`] (open checks, then recovery: head, migrations,
//! projections), [`write`] (the single writer's append path, blobs, snapshots, flush, close),
//! [`read`] (log chunks, index scans, scattered reads, blobs) and [`query`] (which scan answers
//! a history query), [`revisions`] (the revisions kept beside the snapshot: fault-in, eviction,
//! reads); [`migrate`] holds the steps the open phase runs on older stores, and [`copies`] the
//! object copies' staging, recovery and reads (`store::copies`).
//!
//! Directory layout (see docs/storage.md): `RECKON_STORE` (marker: format name and store schema,
//! readable without opening sled), `HEAD` (last flushed seq and hash, synced; rewritten in place
//! at each flush, see [`HEAD_BYTES`]), `db/` (sled).
//! sled trees: `events` (log chunks, posting indexes, tombstones and meta under one-byte prefixes
//! — see [`super::keys`] — so that one
//! `apply_batch` makes an event and its index entries atomic), `blobs`, `snapshots` (the
//! projections' snapshot and, beside it, the revisions not resident in it, so that one batch
//! writes both).

mod copies;
mod format;
pub mod migrate;
mod open;
mod query;
mod read;
mod revisions;
mod write;

use super::projection::Projections;
use super::{STORE_SCHEMA, StoreError};
use crate::event::Digest;
use std::fs;
use std::path::{Path, PathBuf};

pub(crate) use format::write_durably;
pub use format::{
    HEAD_BYTES, HEAD_FILE, MARKER_FILE, SLED_DIR, read_head, size_on_disk, sled_config,
};
pub use read::Reads;
pub use write::release;

#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Create the store if the directory is missing or empty.
    pub create: bool,
    /// Write a projection snapshot at a flush once this many events were appended since the last.
    pub snapshot_every: u64,
    /// sled page cache size.
    pub cache_bytes: u64,
    /// Open even when the log ends before the flushed head recorded in `HEAD` (lost events), so
    /// that `verify` can report it and `export` can salvage what is left. Writers must not.
    pub allow_truncated: bool,
    /// The schema to create or migrate to. Only the fixture generator and migration tests set
    /// anything but [`STORE_SCHEMA`].
    #[doc(hidden)]
    pub schema: u32,
    /// Pages by object take their seqs from the object's index postings even where the copies
    /// have every event (the read path before it, kept for the benchmark to compare in one
    /// build).
    #[doc(hidden)]
    pub pages_from_postings: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            create: false,
            snapshot_every: 100_000,
            cache_bytes: 256 << 20,
            allow_truncated: false,
            schema: STORE_SCHEMA,
            pages_from_postings: false,
        }
    }
}

impl OpenOptions {
    pub fn create() -> Self {
        OpenOptions {
            create: true,
            ..Default::default()
        }
    }
}

/// A read handle: clones of the sled trees (cheap, thread-safe), usable while the writer writes.
#[derive(Clone)]
pub struct StoreReader {
    pub(crate) path: PathBuf,
    pub(crate) events: sled::Tree,
    pub(crate) blobs: sled::Tree,
    /// The snapshot's tree, read for the revisions kept there (`projection::stored`).
    pub(crate) snapshots: sled::Tree,
    /// Counts the live readers (clones share it): sled's lock goes with the last tree handle,
    /// so [`SledStore::close`] can only wait for the lock when no other reader is alive.
    handles: std::sync::Arc<()>,
    /// Reads of `events` made through this reader and its clones ([`StoreReader::reads`]).
    pub(crate) reads: std::sync::Arc<read::ReadCounter>,
    /// `Mcopied` as the writer last applied it, for pages by object to read their events up to
    /// it from the copies (`store::copies::page_parts`); 0 until known, or when the store was
    /// opened with [`OpenOptions::pages_from_postings`]. Behind the value on disk, never ahead:
    /// the writer raises it only once the batch that wrote it is applied.
    pub(crate) copied_view: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pages_from_postings: bool,
}

pub struct SledStore {
    pub(crate) reader: StoreReader,
    pub(crate) db: sled::Db,
    pub(crate) snapshots: sled::Tree,
    pub(crate) schema: u32,
    pub(crate) next_seq: u64,
    pub(crate) head: Digest,
    pub(crate) last_micros: i64,
    /// Whether the wall clock is behind the log after a reported jump (`store::clock`).
    clock: super::clock::ClockState,
    pub(crate) proj: Projections,
    /// Apps whose epoch changed (AppReset, AppRenamed) since the last snapshot: their stored
    /// revisions of other epochs are deleted with the next one.
    stale: std::collections::BTreeSet<String>,
    /// The projections were rebuilt from the log: every stored revision is replaced at the
    /// next snapshot.
    clear_stored: bool,
    unsnapshotted: u64,
    snapshot_every: u64,
    /// Why the projections snapshot found on open was discarded, when it was made from another
    /// history than the log's (not when it was merely missing, old or behind a compaction).
    pub snapshot_discarded: Option<String>,
    /// Where the pre-migration copy went, if this open migrated.
    pub migrated_backup: Option<PathBuf>,
    /// `(HEAD seq, HEAD hash, last seq in the log)` when opened with `allow_truncated` and the
    /// log ends before HEAD.
    truncated: Option<(u64, Digest, u64)>,
    /// `HEAD` once this process wrote it whole ([`HEAD_BYTES`] long): later flushes rewrite it
    /// in place. `None` until the first flush that records a head.
    head_file: Option<fs::File>,
    /// The head `HEAD` records now, so a flush that appended nothing does not rewrite it.
    head_recorded: Option<(u64, Digest)>,
    /// The objects' open tails of copies not yet written as blocks (schema 4, `store::copies`).
    pub(crate) copies: super::copies::Copies,
    /// `Mcopied` as last written: every event at or below it has its copies.
    pub(crate) copied: u64,
    /// Events appended since this store was opened: at close, past
    /// [`format::SLED_SNAPSHOT_AFTER`] sled is made to write its snapshot.
    appended: u64,
}

impl SledStore {
    pub fn path(&self) -> &Path {
        &self.reader.path
    }

    pub fn schema(&self) -> u32 {
        self.schema
    }

    pub fn reader(&self) -> StoreReader {
        self.reader.clone()
    }

    pub(super) fn err(&self, op: &'static str) -> impl Fn(sled::Error) -> StoreError + '_ {
        move |e| StoreError::sled(&self.reader.path, op, e)
    }
}
