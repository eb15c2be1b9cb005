//! The engine's write phase, the single writer's: sealing drafts onto the hash chain, staging
//! each batch's log chunks, posting blocks and time-run entries into one atomic sled batch,
//! imports of sealed records, blobs, snapshots, flush with the `HEAD` file, the gap record after
//! a lost tail, and closing (waiting for sled to let go of its lock).

use super::super::keys::{self, Index};
use super::super::projection::{self, Projections};
use super::super::{Appended, EventStore, StoreError, blob};
use super::SledStore;
use super::format::{HEAD_FILE, SLED_DIR, SNAPSHOT_KEY, head_text, write_durably};
use crate::event::envelope::EVENT_SCHEMA;
use crate::event::{Digest, Draft, Envelope, EnvelopeBody, Event};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

impl SledStore {
    /// Writes the projections' snapshot and, in the same batch, the revisions that need not
    /// stay resident (`projection::stored`): the snapshot and the stored revisions are always
    /// one state. After a rebuild every stored revision is replaced first.
    pub(crate) fn write_snapshot(&mut self) -> Result<(), StoreError> {
        if self.clear_stored {
            self.replace_stored()?;
        }
        // The writer folds every event it appends, so the projections cover the head; a store
        // rebuilt from a log with a lost tail covers less, and its hash is read back.
        let covered = self.proj.covered_seq;
        let hash = if covered + 1 == self.next_seq {
            self.head
        } else {
            self.reader
                .hash_at(covered)?
                .ok_or_else(|| StoreError::Invalid {
                    path: self.reader.path.clone(),
                    reason: format!("the projections cover seq {covered}, which the log lacks"),
                })?
        };
        let mut batch = sled::Batch::default();
        let moved = self.evict(&mut batch)?;
        let written = projection::encode_projections(&self.proj, hash)
            .map_err(|e| StoreError::Invalid {
                path: self.reader.path.clone(),
                reason: format!("encoding the snapshot: {e}"),
            })
            .and_then(|bytes| {
                batch.insert(SNAPSHOT_KEY, bytes);
                self.snapshots
                    .apply_batch(batch)
                    .map_err(self.err("writing the snapshot"))
            });
        if let Err(e) = written {
            self.undo_evict(moved);
            return Err(e);
        }
        self.stale.clear();
        self.unsnapshotted = 0;
        Ok(())
    }

    /// Stages log chunks, posting blocks and time-run entries for `events` (ascending seqs).
    /// `prev_micros` is the time of the event before the first one, if any.
    pub(super) fn stage(
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
            super::super::clock::stamp(Utc::now().timestamp_micros(), self.last_micros, self.clock);
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
        // Revisions the batch names are read back before anything is staged in memory, so a
        // failed read leaves the open copy tails untouched.
        let named = sealed
            .iter()
            .map(|(e, _)| (e.body.app.as_deref(), &e.body.event));
        self.fault_in(named)?;
        let copied = self.stage_copies(&mut batch, &sealed, seq - 1);
        if let Err(e) = self.reader.events.apply_batch(batch) {
            self.recover_copies();
            return Err(self.err("appending a batch")(e));
        }
        self.set_copied(copied);
        let first_seq = self.next_seq;
        self.next_seq = seq;
        self.head = head;
        self.last_micros = micros;
        self.clock = stamp.state;
        for (env, _) in &sealed {
            self.fold_one(&env.body);
        }
        self.unsnapshotted += sealed.len() as u64;
        self.appended += sealed.len() as u64;
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
        self.fault_in(
            live.iter()
                .map(|(e, _)| (e.body.app.as_deref(), &e.body.event)),
        )?;
        let copied = self.stage_copies(&mut batch, &live, next - 1);
        if let Err(e) = self.reader.events.apply_batch(batch) {
            self.recover_copies();
            return Err(self.err("importing a batch")(e));
        }
        self.set_copied(copied);
        self.next_seq = next;
        self.head = head;
        if let Some((env, _)) = live.last() {
            self.last_micros = env.body.time.timestamp_micros();
        }
        for (env, _) in &live {
            self.fold_one(&env.body);
        }
        Ok(())
    }

    /// Writes the snapshot (if due), flushes sled, then records the flushed head in `HEAD`.
    pub(super) fn flush_inner(&mut self, force_snapshot: bool) -> Result<(), StoreError> {
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
    pub(super) fn record_head(&mut self, (seq, hash): (u64, Digest)) -> Result<(), StoreError> {
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
        self.write_tails()?;
        self.flush_inner(true)?;
        let others = std::sync::Arc::strong_count(&self.reader.handles) - 1;
        let path = self.reader.path.clone();
        let long_session = self.appended >= super::format::SLED_SNAPSHOT_AFTER;
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
        release(&path, db)?;
        // Only a speed-up of the next open: a failure (another process took the store in
        // between) is no reason to fail the close.
        if long_session && let Err(e) = super::open::snapshot_sled(&path) {
            tracing::warn!(store = %path.display(), error = %e, "could not have sled write its snapshot at close; the next open replays sled's log");
        }
        Ok(())
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
