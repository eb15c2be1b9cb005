//! The engine's open and recover phases, in order: refuse what is not a reckon store or is newer
//! than this reckon (before sled touches a file), create it or copy it aside before a migration,
//! open sled (its panics on damaged files become errors naming the store), read the schema; then
//! recover: the head from the log checked against `HEAD`, the migration steps, and the
//! projections from the snapshot and the log's tail.

use super::super::projection::{self, Projections};
use super::super::{EventRead, Query, STORE_SCHEMA, Selector, StoreError};
use super::format::{
    HEAD_FILE, MARKER_FILE, META_SCHEMA, SLED_DIR, SNAPSHOT_KEY, copy_dir, marker_text, parse_head,
    parse_marker, sled_config, write_durably,
};
use super::{OpenOptions, SledStore, StoreReader};
use crate::event::{Digest, EventKind};
use chrono::Utc;
use std::fs;
use std::path::{Path, PathBuf};

impl SledStore {
    /// Opens (or creates) a store, refusing anything that is not a reckon store or is newer than
    /// this reckon, migrating older stores after taking a backup copy.
    pub fn open(path: impl AsRef<Path>, opts: OpenOptions) -> Result<SledStore, StoreError> {
        let path = path.as_ref().to_owned();
        let on_disk = read_marker(&path, &opts)?;
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
        let backup = prepare(&path, on_disk, &opts)?;
        let db = open_sled(&path, opts.cache_bytes)?;
        let mut store = SledStore::from_db(path.clone(), db, on_disk, &opts)?;
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
        store.restore_copies()?;
        Ok(store)
    }

    /// The store over an open database: its trees and the schema sled records (written now
    /// when missing: a new store, or one from before the schema was kept in sled).
    fn from_db(
        path: PathBuf,
        db: sled::Db,
        on_disk: Option<u32>,
        opts: &OpenOptions,
    ) -> Result<SledStore, StoreError> {
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
        Ok(SledStore {
            reader: StoreReader {
                path,
                events,
                blobs,
                snapshots: snapshots.clone(),
                handles: std::sync::Arc::new(()),
                reads: Default::default(),
                copied_view: Default::default(),
                pages_from_postings: opts.pages_from_postings,
            },
            db,
            snapshots,
            schema,
            next_seq: 1,
            head: Digest::ZERO,
            last_micros: i64::MIN,
            clock: super::super::clock::ClockState::default(),
            proj: Projections::default(),
            stale: Default::default(),
            clear_stored: false,
            unsnapshotted: 0,
            snapshot_discarded: None,
            snapshot_every: opts.snapshot_every.max(1),
            migrated_backup: None,
            truncated: None,
            head_file: None,
            head_recorded: None,
            copies: Default::default(),
            copied: 0,
            appended: 0,
        })
    }
    pub(super) fn load_head(&mut self, allow_truncated: bool) -> Result<(), StoreError> {
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
    /// missing, unreadable, of an older version, ahead of the log, older than a compaction, or
    /// made from another history (its hash of the last event it folded is not the log's). The
    /// last is not a cache miss but a sign of a restored or rewritten store: it is logged and
    /// kept in [`SledStore::snapshot_discarded`] for `store verify` to report.
    pub(super) fn restore_projections(&mut self) -> Result<(), StoreError> {
        let raw = self
            .snapshots
            .get(SNAPSHOT_KEY)
            .map_err(self.err("reading the snapshot"))?;
        // A version-6 snapshot (every revision in it) is converted rather than rebuilt.
        let converted = raw.as_ref().is_some_and(|b| b.first() == Some(&6));
        let snap = raw.and_then(|b| match converted {
            true => projection::decode_projections_v6(&b).ok(),
            false => projection::decode_projections(&b).ok(),
        });
        let last_seq = self.next_seq - 1;
        let latest_compaction = self
            .reader
            .query(&Query::new(Selector::Kind(EventKind::RetentionCompacted)).limit(1))?
            .events
            .first()
            .map(|e| e.body.seq)
            .unwrap_or(0);
        let usable = match snap {
            Some((p, hash)) if p.covered_seq <= last_seq && p.covered_seq >= latest_compaction => {
                let logged = self.reader.hash_at(p.covered_seq)?;
                if logged == Some(hash) {
                    Some(p)
                } else {
                    let reason = format!(
                        "it folded seq {} with hash {hash}, but the log's hash there is {}: it was made from another history; rebuilt from the log",
                        p.covered_seq,
                        logged.map_or_else(|| "missing".to_string(), |h| h.to_string())
                    );
                    tracing::warn!(store = %self.reader.path.display(), "projections snapshot: {reason}");
                    self.snapshot_discarded = Some(reason);
                    None
                }
            }
            _ => None,
        };
        match usable {
            Some(p) => {
                self.unsnapshotted = last_seq - p.covered_seq;
                let from = p.covered_seq + 1;
                self.proj = p;
                // The tail is folded as the writer folds an append: what it names from the
                // stored revisions is brought back in first.
                let reader = self.reader.clone();
                for env in reader.iter_from(from) {
                    let env = env?;
                    self.fault_in([(env.body.app.as_deref(), &env.body.event)])?;
                    self.fold_one(&env.body);
                }
                if converted {
                    self.clear_stored = true;
                    self.write_snapshot()?;
                }
            }
            None => {
                self.proj = self.reader.rebuild_projections(&mut |_| {})?;
                self.clear_stored = true;
                self.write_snapshot()?;
            }
        }
        Ok(())
    }

    /// Replays the whole log into fresh projections and stores them as the snapshot.
    pub fn rebuild(&mut self, progress: &mut dyn FnMut(u64)) -> Result<&Projections, StoreError> {
        self.proj = self.reader.rebuild_projections(progress)?;
        self.clear_stored = true;
        self.write_snapshot()?;
        self.db.flush().map_err(self.err("flushing"))?;
        Ok(&self.proj)
    }
}

/// The schema the marker names; `None` for a new store (a missing or empty directory, when
/// `opts.create`). Refuses a file, a foreign directory, and a missing store when not creating.
fn read_marker(path: &Path, opts: &OpenOptions) -> Result<Option<u32>, StoreError> {
    match fs::metadata(path) {
        Ok(m) if !m.is_dir() => {
            return Err(StoreError::NotAStore {
                path: path.to_owned(),
                reason: "it is a file, not a directory".into(),
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !opts.create {
                return Err(StoreError::NotFound {
                    path: path.to_owned(),
                });
            }
            fs::create_dir_all(path)
                .map_err(|e| StoreError::io(path, "creating the store directory", e))?;
        }
        Err(e) => return Err(StoreError::io(path, "reading the store directory", e)),
    }
    let marker_path = path.join(MARKER_FILE);
    match fs::read_to_string(&marker_path) {
        Ok(text) => Ok(Some(parse_marker(&text).map_err(|reason| {
            StoreError::NotAStore {
                path: path.to_owned(),
                reason,
            }
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let nonempty = fs::read_dir(path)
                .map_err(|e| StoreError::io(path, "listing the store directory", e))?
                .next()
                .is_some();
            if nonempty {
                return Err(StoreError::NotAStore {
                    path: path.to_owned(),
                    reason: format!("the directory holds other files and no {MARKER_FILE} marker"),
                });
            }
            if !opts.create {
                return Err(StoreError::NotFound {
                    path: path.to_owned(),
                });
            }
            Ok(None)
        }
        Err(e) => Err(StoreError::io(&marker_path, "reading the marker", e)),
    }
}

/// Before sled opens: a new store gets its marker; an older one is copied aside (the backup
/// a migration needs, returned).
fn prepare(
    path: &Path,
    on_disk: Option<u32>,
    opts: &OpenOptions,
) -> Result<Option<PathBuf>, StoreError> {
    match on_disk {
        None => {
            write_durably(path, MARKER_FILE, marker_text(opts.schema).as_bytes())?;
            Ok(None)
        }
        Some(from) if from < opts.schema => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "store".into());
            let to = path.with_file_name(format!(
                "{name}.backup-schema-{from}-{}",
                Utc::now().format("%Y%m%dT%H%M%S%.6fZ")
            ));
            copy_dir(path, &to)
                .map_err(|e| StoreError::io(&to, "copying the store before migrating", e))?;
            Ok(Some(to))
        }
        Some(_) => Ok(None),
    }
}

/// Has sled write its snapshot of the store at `path`, closed by this process: sled 0.34
/// writes one only while it recovers on open (its `snapshot_after_ops` does nothing), so the
/// first open after a long write session replays everything written since the last open (1.7 s
/// and more after 10M events). Opening once more at close moves that replay to shutdown, where
/// it is paid once with the log in the page cache, and the next start opens fast.
pub(super) fn snapshot_sled(path: &Path) -> Result<(), StoreError> {
    let db = open_sled(path, 16 << 20)?;
    super::release(path, db)
}

/// Opens the store's sled database.
pub(super) fn open_sled(path: &Path, cache_bytes: u64) -> Result<sled::Db, StoreError> {
    let sled_path = path.join(SLED_DIR);
    let config = sled_config(path, cache_bytes);
    // sled 0.34 panics on some damaged files while recovering (e.g. "tried to serialize
    // Uninitialized"): turn that into an error that names the store instead of a crash.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
        .map_err(|panic| StoreError::Corrupt {
            path: path.to_owned(),
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
        .map_err(|e| StoreError::sled(path, "opening sled", e))
}
