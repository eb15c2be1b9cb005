//! Owns retention: the optional per-App policy (by age or by size) and compaction, which removes
//! an App's oldest events, keeps their hashes as tombstones and appends one `RetentionCompacted`
//! summary (with the App's folded base state) so the chain, `verify` and `rebuild` still hold.
//!
//! The default is to keep everything: compaction runs only when asked (`reckon store compact`).

use super::projection::{self, AppState};
use super::sled_engine::SledStore;
use super::{EventRead, EventStore, Query, Selector, StoreError};
use super::{copies, keys};
use crate::event::{Digest, Draft, Envelope, Event, RetentionCompacted};
use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Remove events older than this.
    pub max_age: Option<Duration>,
    /// Keep at most this many bytes of the App's newest event records.
    pub max_bytes: Option<u64>,
}

impl Policy {
    pub fn describe(&self) -> String {
        let mut parts = vec![];
        if let Some(a) = self.max_age {
            parts.push(format!("max-age={}", humantime::format_duration(a)));
        }
        if let Some(b) = self.max_bytes {
            parts.push(format!("max-bytes={b}"));
        }
        if parts.is_empty() {
            "keep-all".into()
        } else {
            parts.join(",")
        }
    }
}

/// One of the App's events as retention sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    pub seq: u64,
    pub micros: i64,
    pub bytes: u64,
}

/// The last sequence number to remove (a prefix of `items`, which are oldest first), if any.
/// Pure: the clock comes in as `now`.
pub fn cut(items: &[Item], policy: &Policy, now: DateTime<Utc>) -> Option<u64> {
    let mut cut = None;
    if let Some(age) = policy.max_age {
        let limit = now.timestamp_micros() - age.as_micros().min(i64::MAX as u128) as i64;
        cut = items
            .iter()
            .take_while(|i| i.micros < limit)
            .last()
            .map(|i| i.seq);
    }
    if let Some(max) = policy.max_bytes {
        let mut kept = 0u64;
        let by_size = items
            .iter()
            .rev()
            .find(|i| {
                kept += i.bytes;
                kept > max
            })
            .map(|i| i.seq);
        cut = cut.max(by_size);
    }
    cut
}

/// What a compaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compacted {
    pub summary_seq: u64,
    pub removed: u64,
    pub removed_bytes: u64,
}

/// What pass 2 of a compaction gathers as it takes the removed prefix out: the sled batch, the
/// touched log chunks and posting blocks (each read once, rewritten once by [`Removal::finish`]),
/// the tombstones' digest, the counts for the summary and the App's base state folded forward.
struct Removal {
    summary_seq: u64,
    batch: sled::Batch,
    digest: Sha256,
    by_kind: BTreeMap<&'static str, u64>,
    removed: u64,
    removed_bytes: u64,
    first_time: Option<DateTime<Utc>>,
    last_time: Option<DateTime<Utc>>,
    chunks: BTreeMap<u64, Vec<(u64, Vec<u8>)>>,
    blocks: BTreeMap<Vec<u8>, Vec<u64>>,
    /// Object copies' blocks touched (read once, rewritten once), and copies still in the
    /// writer's open tails, taken out of them just before the batch is applied.
    copy_blocks: BTreeMap<Vec<u8>, Vec<(u64, Vec<u8>)>>,
    from_tails: Vec<(copies::Term, u64)>,
    base: AppState,
}

impl Removal {
    fn new(summary_seq: u64, base: AppState) -> Self {
        Removal {
            summary_seq,
            batch: sled::Batch::default(),
            digest: Sha256::new(),
            by_kind: BTreeMap::new(),
            removed: 0,
            removed_bytes: 0,
            first_time: None,
            last_time: None,
            chunks: BTreeMap::new(),
            blocks: BTreeMap::new(),
            copy_blocks: BTreeMap::new(),
            from_tails: Vec::new(),
            base,
        }
    }

    /// Accounts for one removed event: its time key goes, its hash stays as a tombstone naming
    /// the summary, and it is folded into the base state.
    fn count(&mut self, env: &Envelope, item: &Item) {
        let seq = item.seq;
        self.batch
            .remove(keys::time_key(env.body.time.timestamp_micros(), seq));
        let mut tomb = env.hash.0.to_vec();
        tomb.extend_from_slice(&self.summary_seq.to_be_bytes());
        self.batch.insert(&keys::tombstone_key(seq)[..], tomb);
        self.digest.update(seq.to_be_bytes());
        self.digest.update(env.hash.0);
        *self
            .by_kind
            .entry(env.body.event.kind().name())
            .or_default() += 1;
        self.removed += 1;
        self.removed_bytes += item.bytes;
        self.first_time.get_or_insert(env.body.time);
        self.last_time = Some(env.body.time);
        self.base.fold(&env.body);
    }

    /// Rewrites the touched chunks and posting blocks into the batch: an emptied chunk goes, and a
    /// block is keyed by its first seq, so it is re-keyed when that one went.
    fn finish(&mut self) {
        for (chunk_base, recs) in std::mem::take(&mut self.chunks) {
            if recs.is_empty() {
                self.batch.remove(&keys::log_key(chunk_base)[..]);
            } else {
                self.batch.insert(
                    &keys::log_key(chunk_base)[..],
                    keys::encode_chunk(recs.iter().map(|(s, r)| (*s, &r[..]))),
                );
            }
        }
        for (old_key, recs) in std::mem::take(&mut self.copy_blocks) {
            self.batch.remove(old_key.clone());
            if let Some((first, _)) = recs.first() {
                let mut key = old_key[..old_key.len() - 8].to_vec();
                key.extend_from_slice(&first.to_be_bytes());
                self.batch.insert(
                    key,
                    keys::encode_chunk(recs.iter().map(|(s, r)| (*s, &r[..]))),
                );
            }
        }
        for (old_key, seqs) in std::mem::take(&mut self.blocks) {
            self.batch.remove(old_key.clone());
            if let Some(first) = seqs.first() {
                let mut key = old_key[..old_key.len() - 8].to_vec();
                key.extend_from_slice(&first.to_be_bytes());
                self.batch.insert(key, keys::encode_postings(&seqs));
            }
        }
    }

    /// The `RetentionCompacted` summary of what was removed, `first_seq..=cut`.
    fn summary(
        self,
        policy: &Policy,
        first_seq: u64,
        cut: u64,
        base_state: Vec<u8>,
    ) -> RetentionCompacted {
        RetentionCompacted {
            policy: policy.describe(),
            first_seq,
            last_seq: cut,
            removed: self.removed,
            removed_bytes: self.removed_bytes,
            by_kind: self
                .by_kind
                .into_iter()
                .map(|(k, n)| (k.to_owned(), n))
                .collect(),
            first_time: self.first_time,
            last_time: self.last_time,
            tombstones_digest: Digest(self.digest.finalize().into()),
            base_state,
        }
    }
}

impl SledStore {
    /// Applies `policy` to `app`. Returns `None` when nothing is old or big enough to remove.
    pub fn compact(
        &mut self,
        app: &str,
        policy: &Policy,
        now: DateTime<Utc>,
        actor: Option<&str>,
    ) -> Result<Option<Compacted>, StoreError> {
        let (items, base) = self.retention_items(app)?;
        let Some(cut) = cut(&items, policy, now) else {
            return Ok(None);
        };
        // Pass 2: remove the prefix from its chunks and posting blocks, keep its hashes, fold it
        // into the base state.
        let mut removal = Removal::new(self.next_seq, base);
        for item in items.iter().take_while(|i| i.seq <= cut) {
            self.take_out(&mut removal, item)?;
        }
        removal.finish();
        let base_state =
            projection::encode_snapshot(&removal.base).map_err(|e| StoreError::Invalid {
                path: self.path().to_owned(),
                reason: format!("encoding the base state: {e}"),
            })?;
        let first_seq = items.first().map(|i| i.seq).unwrap_or(0);
        let batch = std::mem::take(&mut removal.batch);
        // A failed batch rebuilds the tails from the log, where these still are.
        for (term, seq) in std::mem::take(&mut removal.from_tails) {
            self.copies.remove(term, seq);
        }
        let (removed, removed_bytes) = (removal.removed, removal.removed_bytes);
        let summary = removal.summary(policy, first_seq, cut, base_state);
        let mut draft = Draft::new(Some(app), Event::RetentionCompacted(summary));
        draft.actor = actor.map(str::to_owned);
        let appended = self.append_with(vec![draft], batch)?;
        // A snapshot covering the summary: restore never replays across a compaction.
        self.write_snapshot()?;
        self.flush()?;
        Ok(Some(Compacted {
            summary_seq: appended.last_seq,
            removed,
            removed_bytes,
        }))
    }

    /// Pass 1: the App's events as retention sees them, oldest first, and the base state of its
    /// last compaction (summaries are never removed: they vouch for tombstones).
    fn retention_items(&self, app: &str) -> Result<(Vec<Item>, AppState), StoreError> {
        let mut items = Vec::new();
        let mut base = AppState::default();
        let mut cursor = None;
        loop {
            let page = self.query(
                &Query::new(Selector::App(app.to_owned()))
                    .oldest_first()
                    .limit(10_000)
                    .after(cursor),
            )?;
            for e in &page.events {
                match &e.body.event {
                    Event::RetentionCompacted(c) => {
                        base = projection::decode_app_state(&c.base_state).map_err(|err| {
                            StoreError::Corrupt {
                                path: self.path().to_owned(),
                                seq: Some(e.body.seq),
                                reason: format!("base state: {err}"),
                            }
                        })?;
                    }
                    _ => {
                        // The record's size: format byte, encoded body, hash.
                        let bytes = crate::codec::encode(&e.body)
                            .map(|b| b.len() as u64 + 33)
                            .unwrap_or(0);
                        items.push(Item {
                            seq: e.body.seq,
                            micros: e.body.time.timestamp_micros(),
                            bytes,
                        })
                    }
                }
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        Ok((items, base))
    }

    fn corrupt(&self, seq: u64, reason: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path().to_owned(),
            seq: Some(seq),
            reason,
        }
    }

    /// Takes one event out of its log chunk and its posting blocks (each read into `removal`
    /// the first time it is touched) and accounts for it.
    fn take_out(&self, removal: &mut Removal, item: &Item) -> Result<(), StoreError> {
        let env = self
            .get(item.seq)?
            .ok_or_else(|| self.corrupt(item.seq, "vanished during compaction".into()))?;
        let (chunk_base, recs) = self
            .reader
            .chunk_for(item.seq)?
            .ok_or_else(|| self.corrupt(item.seq, "no log chunk".into()))?;
        removal
            .chunks
            .entry(chunk_base)
            .or_insert(recs)
            .retain(|(s, _)| *s != item.seq);
        for entry in keys::index_keys(&env.body, self.schema) {
            let term = &entry[..entry.len() - 8];
            let mut lo = term.to_vec();
            lo.extend_from_slice(&0u64.to_be_bytes());
            let (block_key, block) = self
                .reader
                .events
                .range(lo..=entry.clone())
                .next_back()
                .transpose()
                .map_err(|e| StoreError::sled(self.path(), "reading an index block", e))?
                .ok_or_else(|| self.corrupt(item.seq, "missing index entry".into()))?;
            let seqs = match removal.blocks.entry(block_key.to_vec()) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => v.insert(
                    keys::decode_postings(&block_key, &block)
                        .map_err(|r| self.corrupt(item.seq, r))?,
                ),
            };
            seqs.retain(|s| *s != item.seq);
        }
        if self.schema >= copies::SINCE_SCHEMA {
            self.take_copies_out(removal, &env)?;
        }
        removal.count(&env, item);
        Ok(())
    }

    /// Takes an event's copies out of its objects' blocks, or notes them in the open tails.
    fn take_copies_out(&self, removal: &mut Removal, env: &Envelope) -> Result<(), StoreError> {
        let seq = env.body.seq;
        for term in copies::terms_of(&env.body) {
            if self.copies.holds(&term, seq) {
                removal.from_tails.push((term, seq));
                continue;
            }
            let block = self
                .reader
                .events
                .range(copies::block_key(&term, 0)..=copies::block_key(&term, seq))
                .next_back()
                .transpose()
                .map_err(|e| StoreError::sled(self.path(), "reading object copies", e))?;
            // No block holds it: a copy lost with a crash's open tail; nothing to take out.
            let Some((key, value)) = block else { continue };
            let recs = match removal.copy_blocks.entry(key.to_vec()) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(keys::decode_chunk(&value).map_err(|r| self.corrupt(seq, r))?)
                }
            };
            recs.retain(|(s, _)| *s != seq);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> Vec<Item> {
        (1..=10)
            .map(|s| Item {
                seq: s * 2,
                micros: s as i64 * 1_000_000,
                bytes: 100,
            })
            .collect()
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn keep_all_by_default() {
        assert_eq!(cut(&items(), &Policy::default(), at(1_000_000)), None);
    }

    #[test]
    fn by_age_removes_what_is_strictly_older() {
        let p = Policy {
            max_age: Some(Duration::from_secs(5)),
            max_bytes: None,
        };
        // now = 9s: limit 4s; events at 1,2,3 s are older → seqs 2,4,6.
        assert_eq!(cut(&items(), &p, at(9)), Some(6));
        assert_eq!(cut(&items(), &p, at(5)), None);
    }

    #[test]
    fn by_size_keeps_the_newest_that_fit() {
        let p = Policy {
            max_age: None,
            max_bytes: Some(350),
        };
        // Newest 3 events (300 bytes) fit; the 4th newest (seq 14) and older go.
        assert_eq!(cut(&items(), &p, at(0)), Some(14));
        let all_fit = Policy {
            max_bytes: Some(1000),
            ..p
        };
        assert_eq!(cut(&items(), &all_fit, at(0)), None);
    }

    #[test]
    fn both_limits_take_the_later_cut() {
        let p = Policy {
            max_age: Some(Duration::from_secs(5)),
            max_bytes: Some(350),
        };
        assert_eq!(cut(&items(), &p, at(9)), Some(14));
        assert_eq!(p.describe(), "max-age=5s,max-bytes=350");
    }
}
