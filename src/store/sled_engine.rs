//! Owns the sled engine: opening (with the checks that refuse what is not ours), the single
//! writer's append path, reads and index scans, blobs, flush with the HEAD file, snapshots.
//!
//! Directory layout (see docs/storage.md): `RECKON_STORE` (marker: format name and store schema,
//! readable without opening sled), `HEAD` (last flushed seq and hash, synced; rewritten in place
//! at each flush, see [`HEAD_BYTES`]), `db/` (sled).
//! sled trees: `events` (log chunks, posting indexes, tombstones and meta under one-byte prefixes
//! — see [`super::keys`] — so that one
//! `apply_batch` makes an event and its index entries atomic), `blobs`, `snapshots`.

use super::keys::{self, Index, Term};
use super::projection::{self, AppState, Projections};
use super::{
    Appended, EventRead, EventStore, Order, Page, Query, STORE_SCHEMA, Selector, StoreError, blob,
};
use crate::event::envelope::EVENT_SCHEMA;
use crate::event::{Digest, Draft, Envelope, EnvelopeBody, Event, EventKind};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const MARKER_FILE: &str = "RECKON_STORE";
pub const HEAD_FILE: &str = "HEAD";
pub const SLED_DIR: &str = "db";
const MARKER_MAGIC: &str = "reckon-store";
const META_SCHEMA: &[u8] = b"Mschema";
const SNAPSHOT_KEY: &[u8] = b"projections";
/// sled log segment size. sled reclaims a segment only once half of it is garbage and writes
/// large nodes out of line above a quarter segment; at 1M events the default 512 KiB measured
/// 657 bytes/event on disk, 8 MiB 343 (and faster appends). sled persists it in `db/conf`:
/// changing it is a format change.
const SEGMENT_BYTES: usize = 8 << 20;
/// `HEAD`'s size: its two lines, then spaces up to a final newline (readers trim lines and
/// ignore others, so reckon before this padding reads it too). A fixed size lets each flush
/// rewrite it in place — one `pwrite` at offset 0 and one `fdatasync` — instead of a temp file,
/// `fsync`, rename and directory `fsync` (four syscalls that touch the file system's journal,
/// 12% of the agent's CPU at a thousand Apps). Why that is as safe: the file never changes
/// size or name, so syncing its data is all there is to sync; a process crash leaves whatever
/// the last `pwrite` put in the kernel's page cache, whole; after a power loss the write is
/// one write inside the first 512-byte sector, which disks write atomically — the assumption
/// PostgreSQL's `pg_control` rests on (`PG_CONTROL_MAX_SAFE_SIZE`). Should a disk tear it
/// anyway, the HEAD is unparsable or names a hash the log does not have, and opening says so
/// (`Corrupt`): loud, never a silent loss.
pub const HEAD_BYTES: usize = 128;

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
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            create: false,
            snapshot_every: 100_000,
            cache_bytes: 256 << 20,
            allow_truncated: false,
            schema: STORE_SCHEMA,
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
    /// Counts the live readers (clones share it): sled's lock goes with the last tree handle,
    /// so [`SledStore::close`] can only wait for the lock when no other reader is alive.
    handles: std::sync::Arc<()>,
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
    unsnapshotted: u64,
    snapshot_every: u64,
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
}

fn parse_marker(text: &str) -> Result<u32, String> {
    let mut lines = text.lines();
    if lines.next() != Some(MARKER_MAGIC) {
        return Err(format!(
            "{MARKER_FILE} does not start with `{MARKER_MAGIC}`"
        ));
    }
    lines
        .find_map(|l| l.strip_prefix("schema "))
        .ok_or_else(|| format!("{MARKER_FILE} has no `schema` line"))?
        .trim()
        .parse()
        .map_err(|e| format!("{MARKER_FILE}: bad schema: {e}"))
}

fn marker_text(schema: u32) -> String {
    format!("{MARKER_MAGIC}\nschema {schema}\n")
}

/// Writes `name` in `dir` atomically and durably: temp file, fsync, rename, fsync the directory.
fn write_durably(dir: &Path, name: &str, content: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let op = "writing a control file";
    let mut f = fs::File::create(&tmp).map_err(|e| StoreError::io(&tmp, op, e))?;
    f.write_all(content)
        .and_then(|_| f.sync_all())
        .map_err(|e| StoreError::io(&tmp, op, e))?;
    fs::rename(&tmp, dir.join(name)).map_err(|e| StoreError::io(dir, op, e))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, op, e))
}

/// `HEAD`'s content: `seq N`, `hash H`, padded to [`HEAD_BYTES`] with a line of spaces.
fn head_text(seq: u64, hash: Digest) -> Vec<u8> {
    let mut text = format!("seq {seq}\nhash {hash}\n").into_bytes();
    // 25 + 70 bytes at most (a u64 and a 32-byte hash in hex): the padding line always fits.
    text.resize(HEAD_BYTES - 1, b' ');
    text.push(b'\n');
    text
}

fn parse_head(text: &str) -> Option<(u64, Digest)> {
    let mut seq = None;
    let mut hash = None;
    for l in text.lines() {
        if let Some(s) = l.strip_prefix("seq ") {
            seq = s.trim().parse().ok();
        } else if let Some(h) = l.strip_prefix("hash ") {
            hash = Digest::from_hex(h.trim());
        }
    }
    Some((seq?, hash?))
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// The sled configuration of a store (the settings sled persists must match on every open).
/// Public for tools and fault-injection tests that open the raw database of a closed store.
pub fn sled_config(store: &Path, cache_bytes: u64) -> sled::Config {
    sled::Config::new()
        .path(store.join(SLED_DIR))
        .cache_capacity(cache_bytes)
        .mode(sled::Mode::HighThroughput)
        .segment_size(SEGMENT_BYTES)
}

/// Bytes the store occupies: `(apparent, allocated)` over all files (all trees, control files).
pub fn size_on_disk(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        let m = entry.metadata()?;
        if m.is_dir() {
            let (a, b) = size_on_disk(&entry.path())?;
            total = (total.0 + a, total.1 + b);
        } else {
            total = (total.0 + m.len(), total.1 + m.blocks() * 512);
        }
    }
    Ok(total)
}

impl SledStore {
    /// Opens (or creates) a store, refusing anything that is not a reckon store or is newer than
    /// this reckon, migrating older stores after taking a backup copy.
    pub fn open(path: impl AsRef<Path>, opts: OpenOptions) -> Result<SledStore, StoreError> {
        let path = path.as_ref().to_owned();
        match fs::metadata(&path) {
            Ok(m) if !m.is_dir() => {
                return Err(StoreError::NotAStore {
                    path,
                    reason: "it is a file, not a directory".into(),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !opts.create {
                    return Err(StoreError::NotFound { path });
                }
                fs::create_dir_all(&path)
                    .map_err(|e| StoreError::io(&path, "creating the store directory", e))?;
            }
            Err(e) => return Err(StoreError::io(&path, "reading the store directory", e)),
        }
        let marker_path = path.join(MARKER_FILE);
        let on_disk = match fs::read_to_string(&marker_path) {
            Ok(text) => Some(parse_marker(&text).map_err(|reason| StoreError::NotAStore {
                path: path.clone(),
                reason,
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let nonempty = fs::read_dir(&path)
                    .map_err(|e| StoreError::io(&path, "listing the store directory", e))?
                    .next()
                    .is_some();
                if nonempty {
                    return Err(StoreError::NotAStore {
                        path,
                        reason: format!(
                            "the directory holds other files and no {MARKER_FILE} marker"
                        ),
                    });
                }
                if !opts.create {
                    return Err(StoreError::NotFound { path });
                }
                None
            }
            Err(e) => return Err(StoreError::io(&marker_path, "reading the marker", e)),
        };
        // Refuse newer stores before sled touches a single file.
        if let Some(found) = on_disk
            && found > STORE_SCHEMA
        {
            return Err(StoreError::NewerSchema {
                path,
                found,
                supported: STORE_SCHEMA,
            });
        }
        let mut backup = None;
        match on_disk {
            None => write_durably(&path, MARKER_FILE, marker_text(opts.schema).as_bytes())?,
            Some(from) if from < opts.schema => {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "store".into());
                let to = path.with_file_name(format!(
                    "{name}.backup-schema-{from}-{}",
                    Utc::now().format("%Y%m%dT%H%M%S%.6fZ")
                ));
                copy_dir(&path, &to)
                    .map_err(|e| StoreError::io(&to, "copying the store before migrating", e))?;
                backup = Some(to);
            }
            Some(_) => {}
        }
        let sled_path = path.join(SLED_DIR);
        let config = sled_config(&path, opts.cache_bytes);
        // sled 0.34 panics on some damaged files while recovering (e.g. "tried to serialize
        // Uninitialized"): turn that into an error that names the store instead of a crash.
        let db = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
            .map_err(|panic| StoreError::Corrupt {
                path: path.clone(),
                seq: None,
                reason: format!(
                    "sled could not recover {} (it panicked: {}); restore from a backup or export",
                    sled_path.display(),
                    panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into())
                ),
            })?
            .map_err(|e| StoreError::sled(&path, "opening sled", e))?;
        let tree = |name: &str| {
            db.open_tree(name)
                .map_err(|e| StoreError::sled(&path, "opening a tree", e))
        };
        let events = tree("events")?;
        let blobs = tree("blobs")?;
        let snapshots = tree("snapshots")?;
        let schema = match events
            .get(META_SCHEMA)
            .map_err(|e| StoreError::sled(&path, "reading the schema", e))?
        {
            Some(v) => {
                u32::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    path: path.clone(),
                    seq: None,
                    reason: "meta schema is not 4 bytes".into(),
                })?)
            }
            None => {
                let s = on_disk.unwrap_or(opts.schema);
                events
                    .insert(META_SCHEMA, &s.to_be_bytes())
                    .map_err(|e| StoreError::sled(&path, "writing the schema", e))?;
                s
            }
        };
        if schema > STORE_SCHEMA {
            return Err(StoreError::NewerSchema {
                path,
                found: schema,
                supported: STORE_SCHEMA,
            });
        }
        let mut store = SledStore {
            reader: StoreReader {
                path: path.clone(),
                events,
                blobs,
                handles: std::sync::Arc::new(()),
            },
            db,
            snapshots,
            schema,
            next_seq: 1,
            head: Digest::ZERO,
            last_micros: i64::MIN,
            clock: super::clock::ClockState::default(),
            proj: Projections::default(),
            unsnapshotted: 0,
            snapshot_every: opts.snapshot_every.max(1),
            migrated_backup: None,
            truncated: None,
            head_file: None,
            head_recorded: None,
        };
        store.load_head(opts.allow_truncated)?;
        if store.schema < opts.schema {
            let backup = backup.ok_or_else(|| StoreError::Migration {
                path: path.clone(),
                step: "open",
                reason: format!(
                    "the marker says schema {:?} but sled says {}",
                    on_disk, store.schema
                ),
            })?;
            super::migrate::run(&mut store, opts.schema, &backup)?;
            store.migrated_backup = Some(backup);
        }
        if on_disk != Some(store.schema) {
            write_durably(&path, MARKER_FILE, marker_text(store.schema).as_bytes())?;
        }
        store.restore_projections()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.reader.path
    }

    pub fn schema(&self) -> u32 {
        self.schema
    }

    pub fn reader(&self) -> StoreReader {
        self.reader.clone()
    }

    fn err(&self, op: &'static str) -> impl Fn(sled::Error) -> StoreError + '_ {
        move |e| StoreError::sled(&self.reader.path, op, e)
    }

    fn load_head(&mut self, allow_truncated: bool) -> Result<(), StoreError> {
        let path = self.reader.path.clone();
        let log_seq = match self.reader.last_event()? {
            Some(env) => {
                self.next_seq = env.body.seq + 1;
                self.head = env.hash;
                self.last_micros = env.body.time.timestamp_micros();
                env.body.seq
            }
            None => 0,
        };
        match fs::read_to_string(path.join(HEAD_FILE)) {
            Ok(text) => {
                let (head_seq, head_hash) =
                    parse_head(&text).ok_or_else(|| StoreError::Corrupt {
                        path: path.join(HEAD_FILE),
                        seq: None,
                        reason: "unparsable HEAD file".into(),
                    })?;
                if head_seq > log_seq {
                    if !allow_truncated {
                        return Err(StoreError::Truncated {
                            path,
                            head_seq,
                            log_seq,
                        });
                    }
                    self.truncated = Some((head_seq, head_hash, log_seq));
                }
                if let Some(env) = self.reader.get(head_seq)?
                    && env.hash != head_hash
                {
                    return Err(StoreError::Corrupt {
                        path,
                        seq: Some(head_seq),
                        reason: format!(
                            "HEAD recorded hash {head_hash} for this seq, the log has {}",
                            env.hash
                        ),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(&path, "reading HEAD", e)),
        }
        Ok(())
    }

    /// Loads the snapshot and replays the tail; falls back to a full rebuild when the snapshot is
    /// missing, unreadable, ahead of the log, or older than a compaction.
    fn restore_projections(&mut self) -> Result<(), StoreError> {
        let snap = self
            .snapshots
            .get(SNAPSHOT_KEY)
            .map_err(self.err("reading the snapshot"))?
            .and_then(|b| projection::decode_snapshot::<Projections>(&b).ok());
        let last_seq = self.next_seq - 1;
        let latest_compaction = self
            .reader
            .query(&Query::new(Selector::Kind(EventKind::RetentionCompacted)).limit(1))?
            .events
            .first()
            .map(|e| e.body.seq)
            .unwrap_or(0);
        match snap {
            Some(p) if p.covered_seq <= last_seq && p.covered_seq >= latest_compaction => {
                let mut p = p;
                for env in self.reader.iter_from(p.covered_seq + 1) {
                    p.fold(&env?.body);
                }
                self.unsnapshotted = last_seq - p.covered_seq;
                self.proj = p;
            }
            _ => {
                self.proj = self.reader.rebuild_projections(&mut |_| {})?;
                self.write_snapshot()?;
            }
        }
        Ok(())
    }

    /// Replays the whole log into fresh projections and stores them as the snapshot.
    pub fn rebuild(&mut self, progress: &mut dyn FnMut(u64)) -> Result<&Projections, StoreError> {
        self.proj = self.reader.rebuild_projections(progress)?;
        self.write_snapshot()?;
        self.db.flush().map_err(self.err("flushing"))?;
        Ok(&self.proj)
    }

    pub(crate) fn write_snapshot(&mut self) -> Result<(), StoreError> {
        let bytes = projection::encode_snapshot(&self.proj).map_err(|e| StoreError::Invalid {
            path: self.reader.path.clone(),
            reason: format!("encoding the snapshot: {e}"),
        })?;
        self.snapshots
            .insert(SNAPSHOT_KEY, bytes)
            .map_err(self.err("writing the snapshot"))?;
        self.unsnapshotted = 0;
        Ok(())
    }

    /// Stages log chunks, posting blocks and time-run entries for `events` (ascending seqs).
    /// `prev_micros` is the time of the event before the first one, if any.
    fn stage(
        &self,
        batch: &mut sled::Batch,
        events: &[(Envelope, Vec<u8>)],
        prev_micros: Option<i64>,
    ) {
        for group in events.chunks(keys::CHUNK_EVENTS) {
            batch.insert(
                &keys::log_key(group[0].0.body.seq)[..],
                keys::encode_chunk(group.iter().map(|(e, r)| (e.body.seq, &r[..]))),
            );
        }
        let mut postings: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
        let mut prev = prev_micros;
        let timed = self.schema >= Index::Time.since_schema();
        for (env, _) in events {
            for mut k in keys::index_keys(&env.body, self.schema) {
                k.truncate(k.len() - 8);
                postings.entry(k).or_default().push(env.body.seq);
            }
            let t = env.body.time.timestamp_micros();
            if timed && prev != Some(t) {
                batch.insert(keys::time_key(t, env.body.seq), &[][..]);
            }
            prev = Some(t);
        }
        for (mut term, seqs) in postings {
            term.extend_from_slice(&seqs[0].to_be_bytes());
            batch.insert(term, keys::encode_postings(&seqs));
        }
    }

    /// Seals `drafts` onto the chain and applies them, their index entries and whatever `batch`
    /// already holds as one atomic sled batch.
    pub(crate) fn append_with(
        &mut self,
        drafts: Vec<Draft>,
        mut batch: sled::Batch,
    ) -> Result<Appended, StoreError> {
        // Time never goes backwards along the sequence: time ranges map onto sequence ranges.
        let stamp =
            super::clock::stamp(Utc::now().timestamp_micros(), self.last_micros, self.clock);
        if let Some(back) = stamp.jumped_back {
            tracing::warn!(
                behind = %humantime::format_duration(back),
                "the wall clock jumped back behind the last recorded event; events are stamped \
                 with that event's time until the clock catches up"
            );
            crate::metrics::METRICS.clock_jumps_back.inc();
        }
        let micros = stamp.micros;
        let time = DateTime::from_timestamp_micros(micros).expect("now is in range");
        let mut seq = self.next_seq;
        let mut head = self.head;
        let mut sealed = Vec::with_capacity(drafts.len());
        for d in drafts {
            let body = EnvelopeBody {
                schema: EVENT_SCHEMA,
                seq,
                time,
                app: d.app,
                actor: d.actor,
                prev_hash: head,
                event: d.event,
            };
            let (env, record) = Envelope::seal(body).map_err(|e| StoreError::Invalid {
                path: self.reader.path.clone(),
                reason: e.to_string(),
            })?;
            head = env.hash;
            seq += 1;
            sealed.push((env, record));
        }
        let prev = (self.next_seq > 1).then_some(self.last_micros);
        self.stage(&mut batch, &sealed, prev);
        self.reader
            .events
            .apply_batch(batch)
            .map_err(self.err("appending a batch"))?;
        let first_seq = self.next_seq;
        self.next_seq = seq;
        self.head = head;
        self.last_micros = micros;
        self.clock = stamp.state;
        for (env, _) in &sealed {
            self.proj.fold(&env.body);
        }
        self.unsnapshotted += sealed.len() as u64;
        Ok(Appended {
            first_seq,
            last_seq: seq - 1,
            head,
        })
    }

    /// Writes raw, already sealed records and tombstones (import). They must continue the
    /// sequence and the chain exactly.
    pub(crate) fn append_sealed(
        &mut self,
        records: Vec<(Envelope, Vec<u8>)>,
        tombstones: Vec<(u64, Digest, u64)>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut tombs = tombstones.into_iter().peekable();
        let mut records = records.into_iter().peekable();
        let mut live = Vec::new();
        let mut next = self.next_seq;
        let mut head = self.head;
        loop {
            let take_tomb = match (records.peek(), tombs.peek()) {
                (None, None) => break,
                (Some((e, _)), Some(t)) => t.0 < e.body.seq,
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            let (seq, hash) = if take_tomb {
                let (seq, hash, voucher) = tombs.next().expect("peeked");
                let mut v = hash.0.to_vec();
                v.extend_from_slice(&voucher.to_be_bytes());
                batch.insert(&keys::tombstone_key(seq)[..], v);
                (seq, hash)
            } else {
                let (env, record) = records.next().expect("peeked");
                if env.body.seq == next && env.body.prev_hash != head {
                    return Err(StoreError::Import {
                        line: env.body.seq,
                        reason: format!(
                            "seq {}: prev_hash does not link to the previous event",
                            env.body.seq
                        ),
                    });
                }
                let r = (env.body.seq, env.hash);
                live.push((env, record));
                r
            };
            if seq != next {
                return Err(StoreError::Import {
                    line: seq,
                    reason: format!("expected seq {next}, got {seq}: the export has a gap"),
                });
            }
            head = hash;
            next += 1;
        }
        let prev = (self.next_seq > 1).then_some(self.last_micros);
        self.stage(&mut batch, &live, prev);
        self.reader
            .events
            .apply_batch(batch)
            .map_err(self.err("importing a batch"))?;
        self.next_seq = next;
        self.head = head;
        if let Some((env, _)) = live.last() {
            self.last_micros = env.body.time.timestamp_micros();
        }
        for (env, _) in &live {
            self.proj.fold(&env.body);
        }
        Ok(())
    }

    /// Writes the snapshot (if due), flushes sled, then records the flushed head in `HEAD`.
    fn flush_inner(&mut self, force_snapshot: bool) -> Result<(), StoreError> {
        if force_snapshot || self.unsnapshotted >= self.snapshot_every {
            self.write_snapshot()?;
        }
        self.db.flush().map_err(self.err("flushing"))?;
        let head = (self.next_seq - 1, self.head);
        if self.next_seq > 1 && self.head_recorded != Some(head) {
            self.record_head(head)?;
        }
        Ok(())
    }

    /// Records `head` in `HEAD` durably: in place when this process already wrote the file
    /// whole, otherwise (the first time, or a HEAD of another size from an older reckon) by
    /// replacing it atomically. [`HEAD_BYTES`] says why in place is safe.
    fn record_head(&mut self, (seq, hash): (u64, Digest)) -> Result<(), StoreError> {
        let text = head_text(seq, hash);
        let path = self.reader.path.join(HEAD_FILE);
        let op = "writing HEAD";
        match &self.head_file {
            Some(file) => file
                .write_all_at(&text, 0)
                .and_then(|()| file.sync_data())
                .map_err(|e| StoreError::io(&path, op, e))?,
            None => {
                write_durably(&self.reader.path, HEAD_FILE, &text)?;
                let file = fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| StoreError::io(&path, op, e))?;
                self.head_file = Some(file);
            }
        }
        self.head_recorded = Some((seq, hash));
        Ok(())
    }

    /// After a lost tail (see [`StoreError::Truncated`]): records the loss as a `StoreGap` event
    /// and moves HEAD to it, so that writers can open the store again. The lost events' sequence
    /// numbers are reused from here on; the gap event says which ones and the lost head's hash.
    /// Returns the gap event's seq, or `None` when nothing was lost. Needs `allow_truncated`.
    pub fn record_gap(&mut self, actor: Option<&str>) -> Result<Option<u64>, StoreError> {
        let Some((head_seq, head_hash, log_seq)) = self.truncated else {
            return Ok(None);
        };
        let mut draft = Draft::new(
            None,
            Event::StoreGap(crate::event::StoreGap {
                expected_seq: Some(head_seq),
                found_seq: log_seq,
                reason: format!(
                    "events {}..={head_seq} were flushed (HEAD hash {head_hash}) but are not in \
                     the log after reopening",
                    log_seq + 1
                ),
            }),
        );
        draft.actor = actor.map(str::to_owned);
        let appended = self.append(vec![draft])?;
        self.flush_inner(true)?;
        self.truncated = None;
        Ok(Some(appended.last_seq))
    }

    /// Flushes with a fresh snapshot and lets go of the store: the shutdown path. When no
    /// reader handle is alive elsewhere, sled's file lock is free when this returns, so the
    /// store can be opened again at once (by this process or another). A reader still held
    /// elsewhere keeps the lock until it is dropped; that is logged, not waited for.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.flush_inner(true)?;
        let others = std::sync::Arc::strong_count(&self.reader.handles) - 1;
        let path = self.reader.path.clone();
        let SledStore {
            reader,
            db,
            snapshots,
            ..
        } = self;
        drop((reader, snapshots));
        if others > 0 {
            tracing::debug!(store = %path.display(), readers = others, "closed with other reader handles alive: the lock goes with the last of them");
            return Ok(());
        }
        release(&path, db)
    }
}

/// Longest [`release`] waits for sled to let go of its file lock. Dropping the last handle
/// does not close sled's file at once: writes sled had already handed to its I/O thread pool
/// hold the file until they finish (milliseconds), and the lock goes with the file.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Drops `db`, the caller's last handle on the sled database of the store at `store`, and
/// returns once sled's exclusive lock on it is free.
pub fn release(store: &Path, db: sled::Db) -> Result<(), StoreError> {
    drop(db);
    wait_unlocked(&store.join(SLED_DIR).join("db"), RELEASE_WAIT)
}

/// Waits until nothing holds the `flock` sled takes on `file`. flock locks belong to open file
/// descriptions, so a fresh descriptor of our own conflicts with sled's even in this process.
fn wait_unlocked(file: &Path, wait: std::time::Duration) -> Result<(), StoreError> {
    let probe = fs::File::open(file).map_err(|e| StoreError::io(file, "opening sled's file", e))?;
    let start = std::time::Instant::now();
    loop {
        match probe.try_lock() {
            // Dropping the probe releases the lock it just took.
            Ok(()) => return Ok(()),
            Err(fs::TryLockError::WouldBlock) if start.elapsed() < wait => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Invalid {
                    path: file.to_owned(),
                    reason: format!(
                        "sled still holds the store's lock {} after its last handle was \
                         dropped",
                        crate::config::duration::format(wait)
                    ),
                });
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(StoreError::io(file, "testing sled's lock", e));
            }
        }
    }
}

impl EventStore for SledStore {
    fn append(&mut self, drafts: Vec<Draft>) -> Result<Appended, StoreError> {
        self.append_with(drafts, sled::Batch::default())
    }

    fn put_blob(&mut self, canonical: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of(canonical);
        let exists = self
            .reader
            .blobs
            .contains_key(digest.0)
            .map_err(self.err("looking up a blob"))?;
        if !exists {
            self.reader
                .blobs
                .insert(digest.0, blob::compress(canonical))
                .map_err(self.err("writing a blob"))?;
        }
        Ok(digest)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.flush_inner(false)
    }

    fn projections(&self) -> &Projections {
        &self.proj
    }

    fn head(&self) -> Option<(u64, Digest)> {
        (self.next_seq > 1).then_some((self.next_seq - 1, self.head))
    }
}

impl EventRead for SledStore {
    fn get(&self, seq: u64) -> Result<Option<Envelope>, StoreError> {
        self.reader.get(seq)
    }
    fn get_many(&self, seqs: &[u64]) -> Result<Vec<Option<Envelope>>, StoreError> {
        self.reader.get_many(seqs)
    }
    fn postings(&self, q: &Query) -> Result<super::SeqPage, StoreError> {
        self.reader.postings(q)
    }
    fn query(&self, q: &Query) -> Result<Page, StoreError> {
        self.reader.query(q)
    }
    fn blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        self.reader.blob(digest)
    }
}

type Records = Vec<(u64, Vec<u8>)>;

/// Most threads one [`EventRead::get_many`] reads with: enough to keep a disk's queue busy
/// (cold reads are latency-bound, not CPU-bound), few enough to spawn in microseconds.
const MAX_READERS: usize = 8;
/// Scattered events below which one more reader thread is not worth starting.
const READS_PER_READER: usize = 8;
/// How often [`EventRead::get_many`] looks at its pace, in reads.
const PROBE_READS: usize = 4;
/// A pace slower than this per read means the reads come from disk, not the page cache (a
/// warm scattered read measured 20–40 µs, a cold one 0.6 ms and more).
const SLOW_READ: std::time::Duration = std::time::Duration::from_micros(200);
type EnvIter<'a> = Box<dyn Iterator<Item = Result<Envelope, StoreError>> + 'a>;

fn matches(sel: &Selector, body: &EnvelopeBody) -> bool {
    match sel {
        Selector::All => true,
        Selector::App(a) => body.app.as_deref() == Some(a.as_str()),
        Selector::Object(o) => body
            .event
            .objects()
            .iter()
            .any(|x| x.identity() == o.identity()),
        Selector::Commit(c) => body.event.revisions().contains(&c.as_str()),
        Selector::Author(a) => {
            let a = a.to_lowercase();
            body.event.authors().iter().any(|x| x.to_lowercase() == a)
        }
        Selector::Kind(k) => body.event.kind() == *k,
        Selector::Drift(o) => {
            keys::drift_object(&body.event).is_some_and(|x| x.identity() == o.identity())
        }
    }
}

/// The term prefix of an indexed selector (`None` for the log itself).
fn selector_term(sel: &Selector) -> Option<Vec<u8>> {
    Some(match sel {
        Selector::All => return None,
        Selector::App(a) => keys::term_prefix(Index::App, &Term::Str(a)),
        Selector::Object(o) => keys::term_prefix(Index::Object, &Term::Str(&keys::object_term(o))),
        Selector::Commit(c) => keys::term_prefix(Index::Commit, &Term::Str(c)),
        Selector::Author(a) => keys::term_prefix(Index::Author, &Term::Str(&keys::author_term(a))),
        Selector::Kind(k) => keys::term_prefix(Index::Kind, &Term::Kind(*k)),
        Selector::Drift(o) => keys::term_prefix(Index::Drift, &Term::Str(&keys::object_term(o))),
    })
}

impl StoreReader {
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, op: &'static str) -> impl Fn(sled::Error) -> StoreError + '_ {
        move |e| StoreError::sled(&self.path, op, e)
    }

    pub(crate) fn decode_chunk_at(&self, key: &[u8], value: &[u8]) -> Result<Records, StoreError> {
        keys::decode_chunk(value).map_err(|reason| StoreError::Corrupt {
            path: self.path.clone(),
            seq: keys::seq_of(key),
            reason,
        })
    }

    /// The log chunk that holds `seq` if it is live: the last chunk whose base is `<= seq`.
    pub(crate) fn chunk_for(&self, seq: u64) -> Result<Option<(u64, Records)>, StoreError> {
        match self.chunk_value_for(seq)? {
            None => Ok(None),
            Some((k, v)) => Ok(Some((
                keys::seq_of(&k).unwrap_or(0),
                self.decode_chunk_at(&k, &v)?,
            ))),
        }
    }

    /// The key and stored value of the log chunk that holds `seq`, undecoded.
    fn chunk_value_for(&self, seq: u64) -> Result<Option<(sled::IVec, sled::IVec)>, StoreError> {
        // A chunk holds consecutive seqs and at most CHUNK_EVENTS of them, so its base is at
        // most that far below `seq`: walk that window forwards and keep the last chunk in it.
        // sled 0.34 searches from the root at every backwards step; this forward window halved
        // a scattered read (perf: the backwards seek was half of it). The greatest base in the
        // window is the greatest at or below `seq` overall; only an empty window needs the
        // backwards search (a gap in the log, or no chunk at all).
        let low = seq.saturating_sub(keys::CHUNK_EVENTS as u64 - 1);
        let mut found = None;
        for item in self.events.range(keys::log_key(low)..=keys::log_key(seq)) {
            found = Some(item.map_err(self.err("reading the log"))?);
        }
        if found.is_some() {
            return Ok(found);
        }
        self.events
            .range(keys::log_key(0)..=keys::log_key(seq))
            .next_back()
            .transpose()
            .map_err(self.err("reading the log"))
    }

    /// The newest live event.
    pub(crate) fn last_event(&self) -> Result<Option<Envelope>, StoreError> {
        let last = self
            .events
            .range(keys::log_key(0)..=keys::log_key(u64::MAX))
            .next_back()
            .transpose()
            .map_err(self.err("reading the last event"))?;
        let Some((k, v)) = last else { return Ok(None) };
        let recs = self.decode_chunk_at(&k, &v)?;
        let (seq, rec) = recs.last().ok_or_else(|| StoreError::Corrupt {
            path: self.path.clone(),
            seq: keys::seq_of(&k),
            reason: "empty log chunk".into(),
        })?;
        self.open_record(*seq, rec).map(Some)
    }

    /// The newest live sequence number (0 for an empty log).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        Ok(self.last_event()?.map(|e| e.body.seq).unwrap_or(0))
    }

    pub fn schema(&self) -> Result<u32, StoreError> {
        let v = self
            .events
            .get(META_SCHEMA)
            .map_err(self.err("reading the schema"))?;
        Ok(v.and_then(|v| v.as_ref().try_into().ok())
            .map(u32::from_be_bytes)
            .unwrap_or(0))
    }

    /// Opens a stored record as event `seq`, checking its hash and that it is the event asked for.
    pub(crate) fn open_record(&self, seq: u64, record: &[u8]) -> Result<Envelope, StoreError> {
        let env = Envelope::open(record).map_err(|e| StoreError::envelope(&self.path, seq, e))?;
        if env.body.seq != seq {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                seq: Some(seq),
                reason: format!("the record stored as seq {seq} says seq {}", env.body.seq),
            });
        }
        Ok(env)
    }

    /// Live events with `lo <= seq <= hi`, in `order`.
    fn scan_log(&self, lo: u64, hi: u64, order: Order) -> EnvIter<'_> {
        // Start at the chunk holding `lo` (its base may be below `lo`).
        let start = match self
            .events
            .range(keys::log_key(0)..=keys::log_key(lo))
            .next_back()
        {
            Some(Ok((k, _))) => k.to_vec(),
            _ => keys::log_key(lo).to_vec(),
        };
        let range = self.events.range(start..=keys::log_key(hi).to_vec());
        let chunks: Box<dyn Iterator<Item = _>> = match order {
            Order::OldestFirst => Box::new(range),
            Order::NewestFirst => Box::new(range.rev()),
        };
        Box::new(
            chunks.flat_map(move |item| -> Vec<Result<Envelope, StoreError>> {
                let recs = item
                    .map_err(self.err("scanning the log"))
                    .and_then(|(k, v)| self.decode_chunk_at(&k, &v));
                match recs {
                    Err(e) => vec![Err(e)],
                    Ok(recs) => {
                        let mut out: Vec<_> = recs
                            .into_iter()
                            .filter(|(s, _)| (lo..=hi).contains(s))
                            .map(|(s, r)| self.open_record(s, &r))
                            .collect();
                        if order == Order::NewestFirst {
                            out.reverse();
                        }
                        out
                    }
                }
            }),
        )
    }

    /// The sequence range `[lo, hi]` a query may return, from its cursor and time range; `None`
    /// when nothing can match. Time is non-decreasing along the sequence, so a time range
    /// narrows the seq range.
    fn seq_range(&self, q: &Query) -> Result<Option<(u64, u64)>, StoreError> {
        let (mut lo, mut hi) = match (q.order, q.cursor) {
            (_, None) => (1, u64::MAX),
            (Order::OldestFirst, Some(c)) => match c.checked_add(1) {
                Some(lo) => (lo, u64::MAX),
                None => return Ok(None),
            },
            (Order::NewestFirst, Some(c)) => (1, c.saturating_sub(1)),
        };
        if let Some(s) = q.since
            && let Some(seq) = self.time_floor(s)?
        {
            lo = lo.max(seq);
        }
        if let Some(u) = q.until
            && let Some(seq) = self.time_ceiling(u)?
        {
            hi = hi.min(seq.saturating_sub(1));
        }
        Ok((lo <= hi).then_some((lo, hi)))
    }

    /// Every event in sequence order, from `from` on.
    pub fn iter_from(&self, from: u64) -> impl Iterator<Item = Result<Envelope, StoreError>> + '_ {
        self.scan_log(from, u64::MAX, Order::OldestFirst)
    }

    /// Sequence numbers in the posting blocks of `term` within `[lo, hi]`, in `order`.
    fn scan_postings(
        &self,
        term: Vec<u8>,
        lo: u64,
        hi: u64,
        order: Order,
    ) -> Box<dyn Iterator<Item = Result<u64, StoreError>> + '_> {
        let key = move |s: u64| {
            let mut k = term.clone();
            k.extend_from_slice(&s.to_be_bytes());
            k
        };
        // The first block to read is the one holding `lo` (its first seq may be below `lo`).
        let start = match self.events.range(key(0)..=key(lo)).next_back() {
            Some(Ok((k, _))) => k.to_vec(),
            _ => key(lo),
        };
        let blocks: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = match order {
            Order::OldestFirst => Box::new(self.events.range(start..=key(hi))),
            // sled 0.34 walks backwards by searching from the root at every step (measured: a
            // newest-first page by object took twice as long as oldest-first). Blocks of one term
            // never overlap in seqs, so read windows of block keys forwards, newest window first,
            // doubling the window until a page is full or `lo`'s block is reached.
            Order::NewestFirst => {
                let floor = keys::seq_of(&start).unwrap_or(lo);
                // Windows start at the newest block at or below `hi` (one backwards seek).
                let mut end = match self.events.range(key(0)..=key(hi)).next_back() {
                    Some(Ok((k, _))) => keys::seq_of(&k).filter(|s| *s >= floor),
                    Some(Err(e)) => {
                        return Box::new(std::iter::once(Err(StoreError::sled(
                            &self.path,
                            "scanning an index",
                            e,
                        ))));
                    }
                    None => None,
                };
                let mut width = 1024u64;
                let mut buffered: Vec<sled::Result<(sled::IVec, sled::IVec)>> = Vec::new();
                Box::new(std::iter::from_fn(move || {
                    while buffered.is_empty() {
                        let e = end?;
                        let begin = e.saturating_sub(width - 1).max(floor);
                        // Ascending; popped from the end, so newest first.
                        buffered = self.events.range(key(begin)..=key(e)).collect();
                        end = begin.checked_sub(1).filter(|_| begin > floor);
                        width = width.saturating_mul(2);
                    }
                    buffered.pop()
                }))
            }
        };
        Box::new(
            blocks.flat_map(move |item| -> Vec<Result<u64, StoreError>> {
                let seqs = item
                    .map_err(self.err("scanning an index"))
                    .and_then(|(k, v)| {
                        keys::decode_postings(&k, &v).map_err(|reason| StoreError::Corrupt {
                            path: self.path.clone(),
                            seq: keys::seq_of(&k),
                            reason: format!("index block: {reason}"),
                        })
                    });
                match seqs {
                    Err(e) => vec![Err(e)],
                    Ok(seqs) => {
                        let mut out: Vec<_> = seqs
                            .into_iter()
                            .filter(|s| (lo..=hi).contains(s))
                            .map(Ok)
                            .collect();
                        if order == Order::NewestFirst {
                            out.reverse();
                        }
                        out
                    }
                }
            }),
        )
    }

    /// The seq of the last time-run entry strictly before `t`: every event before it is older
    /// than `t`, whatever entries retention may have removed.
    fn time_floor(&self, t: DateTime<Utc>) -> Result<Option<u64>, StoreError> {
        let lo = keys::time_key(i64::MIN, 0);
        let hi = keys::time_key(t.timestamp_micros(), 0);
        Ok(self
            .events
            .range(lo..hi)
            .next_back()
            .transpose()
            .map_err(self.err("reading the time index"))?
            .and_then(|(k, _)| keys::seq_of(&k)))
    }

    /// The seq of the first time-run entry strictly after `t`: every event from it on is newer.
    fn time_ceiling(&self, t: DateTime<Utc>) -> Result<Option<u64>, StoreError> {
        let Some(after) = t.timestamp_micros().checked_add(1) else {
            return Ok(None);
        };
        let lo = keys::time_key(after, 0);
        let hi = keys::time_key(i64::MAX, u64::MAX);
        Ok(self
            .events
            .range(lo..=hi)
            .next()
            .transpose()
            .map_err(self.err("reading the time index"))?
            .and_then(|(k, _)| keys::seq_of(&k)))
    }

    pub(crate) fn rebuild_projections(
        &self,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Projections, StoreError> {
        // Compacted Apps start from the base state of their latest RetentionCompacted event.
        let mut bases: BTreeMap<String, AppState> = BTreeMap::new();
        let mut cursor = None;
        loop {
            let page = self.query(
                &Query::new(Selector::Kind(EventKind::RetentionCompacted))
                    .oldest_first()
                    .limit(1000)
                    .after(cursor),
            )?;
            for e in &page.events {
                if let (Some(app), Event::RetentionCompacted(c)) = (&e.body.app, &e.body.event) {
                    let base = projection::decode_app_state(&c.base_state).map_err(|err| {
                        StoreError::Corrupt {
                            path: self.path.clone(),
                            seq: Some(e.body.seq),
                            reason: format!("base state: {err}"),
                        }
                    })?;
                    bases.insert(app.clone(), base);
                }
            }
            if page.next.is_none() {
                break;
            }
            cursor = page.next;
        }
        let mut n = 0u64;
        Projections::replay(
            bases,
            self.iter_from(1).inspect(|_| {
                n += 1;
                if n.is_multiple_of(10_000) {
                    progress(n);
                }
            }),
        )
    }

    /// `seqs` read by several threads when they are scattered over enough chunks to keep them
    /// busy; `None` (nothing read) when they are not.
    fn get_scattered(&self, seqs: &[u64]) -> Result<Option<Vec<Option<Envelope>>>, StoreError> {
        // Chunks the rest touches, roughly: neighbours closer than a chunk usually share one.
        let spread = seqs
            .windows(2)
            .filter(|w| w[0].abs_diff(w[1]) >= keys::CHUNK_EVENTS as u64)
            .count();
        let readers = (spread / READS_PER_READER).min(MAX_READERS);
        if readers < 2 {
            return Ok(None);
        }
        let read = |part: &[u64]| -> Result<Vec<Option<Envelope>>, StoreError> {
            let mut cache = None;
            part.iter()
                .map(|s| self.get_cached(*s, &mut cache))
                .collect()
        };
        // Contiguous parts, so that neighbours in one chunk still share it.
        let part = seqs.len().div_ceil(readers);
        std::thread::scope(|scope| {
            let handles: Vec<_> = seqs
                .chunks(part)
                .map(|p| scope.spawn(move || read(p)))
                .collect();
            let mut out = Vec::with_capacity(seqs.len());
            for h in handles {
                out.extend(h.join().expect("a store reader thread panicked")?);
            }
            Ok(Some(out))
        })
    }

    /// `get` with a one-chunk cache, for index scans that land in the same chunk repeatedly.
    /// The chunk stays decompressed but unsplit: only the record asked for is decoded.
    fn get_cached(
        &self,
        seq: u64,
        cache: &mut Option<(u64, u64, keys::RawChunk)>,
    ) -> Result<Option<Envelope>, StoreError> {
        let hit = cache
            .as_ref()
            .is_some_and(|(base, last, _)| *base <= seq && seq <= *last);
        if !hit {
            *cache = None;
            let Some((k, v)) = self.chunk_value_for(seq)? else {
                return Ok(None);
            };
            let corrupt = |reason: String| StoreError::Corrupt {
                path: self.path.clone(),
                seq: keys::seq_of(&k),
                reason,
            };
            let chunk = keys::RawChunk::decompress(&v).map_err(corrupt)?;
            let base = keys::seq_of(&k).unwrap_or(0);
            let last = chunk.last_seq().unwrap_or(base);
            *cache = Some((base, last, chunk));
        }
        let Some((base, _, chunk)) = cache.as_ref() else {
            return Ok(None);
        };
        match chunk.find(seq) {
            Ok(Some(rec)) => self.open_record(seq, rec).map(Some),
            Ok(None) => Ok(None),
            Err(reason) => Err(StoreError::Corrupt {
                path: self.path.clone(),
                seq: Some(*base),
                reason,
            }),
        }
    }
}

impl EventRead for StoreReader {
    fn get(&self, seq: u64) -> Result<Option<Envelope>, StoreError> {
        self.get_cached(seq, &mut None)
    }

    fn get_many(&self, seqs: &[u64]) -> Result<Vec<Option<Envelope>>, StoreError> {
        // One reader with the chunk cache first: from the page cache a chunk takes tens of
        // microseconds and threads would only add scheduling latency (measured: p50 3.5 ms
        // became 8.1 ms on the loaded 2 cores). When the reads so far are slow (from disk, each
        // scattered event is its own read), the rest is read by several threads, which overlap
        // the disk's latency (cold: p50 63 ms became 29 ms; docs/api.md).
        let mut cache = None;
        let mut out = Vec::with_capacity(seqs.len());
        let started = std::time::Instant::now();
        for (i, seq) in seqs.iter().enumerate() {
            out.push(self.get_cached(*seq, &mut cache)?);
            let done = i + 1;
            if done % PROBE_READS == 0
                && started.elapsed() > SLOW_READ * done as u32
                && let Some(rest) = self.get_scattered(&seqs[done..])?
            {
                out.extend(rest);
                return Ok(out);
            }
        }
        Ok(out)
    }

    fn postings(&self, q: &Query) -> Result<super::SeqPage, StoreError> {
        let Some(term) = selector_term(&q.selector) else {
            // The log itself: its sequence numbers are what it holds.
            let page = self.query(q)?;
            return Ok(super::SeqPage {
                seqs: page.events.iter().map(|e| e.body.seq).collect(),
                next: page.next,
            });
        };
        let empty = super::SeqPage {
            seqs: vec![],
            next: None,
        };
        if q.limit == 0 {
            return Ok(empty);
        }
        let Some((lo, hi)) = self.seq_range(q)? else {
            return Ok(empty);
        };
        let mut seqs = Vec::with_capacity(q.limit.min(4096));
        for seq in self.scan_postings(term, lo, hi, q.order) {
            seqs.push(seq?);
            if seqs.len() == q.limit {
                let next = seqs.last().copied();
                return Ok(super::SeqPage { seqs, next });
            }
        }
        Ok(super::SeqPage { seqs, next: None })
    }

    fn query(&self, q: &Query) -> Result<Page, StoreError> {
        let empty = Page {
            events: vec![],
            next: None,
        };
        if q.limit == 0 {
            return Ok(empty);
        }
        let Some((lo, hi)) = self.seq_range(q)? else {
            return Ok(empty);
        };
        let since = q.since.map(|t| t.timestamp_micros());
        let until = q.until.map(|t| t.timestamp_micros());
        let mut events = Vec::with_capacity(q.limit.min(1024));
        // Whether the page takes `env`; `None`: past the time range in scan order, so nothing
        // further can match.
        let step = |env: &Envelope| -> Option<bool> {
            if !matches(&q.selector, &env.body) {
                return Some(false); // an h64 collision: another term with the same 8-byte hash
            }
            let t = env.body.time.timestamp_micros();
            let (too_early, too_late) =
                (since.is_some_and(|s| t < s), until.is_some_and(|u| t > u));
            let beyond = match q.order {
                Order::OldestFirst => too_late,
                Order::NewestFirst => too_early,
            };
            if beyond {
                return None;
            }
            Some(!too_early && !too_late)
        };
        let Some(term) = selector_term(&q.selector) else {
            for env in self.scan_log(lo, hi, q.order) {
                let env = env?;
                match step(&env) {
                    None => break,
                    Some(false) => continue,
                    Some(true) => {}
                }
                let seq = env.body.seq;
                events.push(env);
                if events.len() == q.limit {
                    return Ok(Page {
                        next: Some(seq),
                        events,
                    });
                }
            }
            return Ok(Page { events, next: None });
        };
        // An index page: the postings a batch at a time (as many as the page still needs; more
        // only after collisions or time bounds dropped some), each batch's events read together.
        let mut postings = self.scan_postings(term, lo, hi, q.order);
        loop {
            let batch = postings
                .by_ref()
                .take(q.limit - events.len())
                .collect::<Result<Vec<u64>, _>>()?;
            if batch.is_empty() {
                return Ok(Page { events, next: None });
            }
            for (seq, env) in batch.iter().zip(self.get_many(&batch)?) {
                let env = env.ok_or_else(|| StoreError::Corrupt {
                    path: self.path.clone(),
                    seq: Some(*seq),
                    reason: "an index entry points to an event that is not in the log".into(),
                })?;
                match step(&env) {
                    None => return Ok(Page { events, next: None }),
                    Some(false) => continue,
                    Some(true) => {}
                }
                events.push(env);
                if events.len() == q.limit {
                    return Ok(Page {
                        next: Some(*seq),
                        events,
                    });
                }
            }
        }
    }

    fn blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        match self
            .blobs
            .get(digest.0)
            .map_err(self.err("reading a blob"))?
        {
            None => Ok(None),
            Some(v) => blob::decompress(digest, &v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    path: self.path.clone(),
                    seq: None,
                    reason: format!("blob {digest}: {e}"),
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::samples;

    /// The threaded path of `get_many` (taken only when reads are slow, i.e. cold, which a
    /// test store never is) answers exactly what `get` does, in order.
    #[test]
    fn scattered_reads_by_several_threads_match_get() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SledStore::open(dir.path().join("s"), OpenOptions::create()).unwrap();
        let drafts = (0..2000).map(|j| samples::stream(j, 3, 5)).collect();
        store.append(drafts).unwrap();
        let reader = &store.reader;
        let spread: Vec<u64> = (1..=2000).rev().step_by(37).collect();
        let got = reader
            .get_scattered(&spread)
            .unwrap()
            .expect("spread enough to thread");
        let one_by_one: Vec<_> = spread.iter().map(|s| reader.get(*s).unwrap()).collect();
        assert_eq!(got, one_by_one);
        assert!(got.iter().all(Option::is_some));
        // Neighbours (a chunk or two) stay with the caller.
        let near: Vec<u64> = (100..140).collect();
        assert!(reader.get_scattered(&near).unwrap().is_none());
        // Nothing live at 0 or past the head: None in place, not an error.
        let mut holes = spread.clone();
        holes[3] = 0;
        holes[40] = 9_999;
        let got = reader.get_scattered(&holes).unwrap().unwrap();
        assert!(got[3].is_none() && got[40].is_none());
        assert_eq!(got[4], one_by_one[4]);
    }
}
