//! The engine's side of the object copies (`store::copies`, schema 4): staging blocks and
//! `Mcopied` with each batch, writing the open tails at close, rebuilding the tails from the log
//! on open (after a crash, or a failed batch), and reading an object's page from its blocks.

use super::super::copies::{self, Block, Copies, Term};
use super::super::{EventRead, Order, StoreError, keys};
use super::query::{Fill, Flow};
use super::{SledStore, StoreReader};
use crate::event::Envelope;
use std::collections::HashMap;

impl SledStore {
    fn copying(&self) -> bool {
        self.schema >= copies::SINCE_SCHEMA
    }

    /// Stages the copies of `events` (ascending, just sealed): the blocks their tails fill, the
    /// tails past the horizon, and `Mcopied`. The tails change before the batch is applied; a
    /// batch that fails rebuilds them ([`SledStore::recover_copies`]). Returns the new
    /// `Mcopied`, to keep once the batch is applied.
    pub(super) fn stage_copies(
        &mut self,
        batch: &mut sled::Batch,
        events: &[(Envelope, Vec<u8>)],
        head: u64,
    ) -> u64 {
        if !self.copying() {
            return self.copied;
        }
        let mut blocks = Vec::new();
        for (env, record) in events {
            for term in copies::terms_of(&env.body) {
                blocks.extend(self.copies.push(term, env.body.seq, record));
            }
        }
        blocks.extend(self.copies.due(head));
        stage_blocks(batch, &blocks);
        let copied = self.copies.copied_through(head);
        if copied != self.copied {
            batch.insert(copies::META_COPIED, &copied.to_be_bytes()[..]);
        }
        copied
    }

    /// Keeps `Mcopied` as just applied, and lets the readers' pages by object use it.
    pub(super) fn set_copied(&mut self, copied: u64) {
        self.copied = copied;
        if !self.reader.pages_from_postings {
            self.reader
                .copied_view
                .store(copied, std::sync::atomic::Ordering::Release);
        }
    }

    /// After a batch failed: the tails as the log says they are (the failed batch's events are
    /// not in it). A failure here is logged: the next open rebuilds them again.
    pub(super) fn recover_copies(&mut self) {
        if !self.copying() {
            return;
        }
        if let Err(e) = self.restore_copies() {
            tracing::error!(error = %e, "rebuilding the open tails of object copies failed");
        }
    }

    /// Writes every open tail as a block, with `Mcopied` at the head (at close).
    pub(super) fn write_tails(&mut self) -> Result<(), StoreError> {
        let head = self.next_seq - 1;
        if !self.copying() || (self.copies.pending() == 0 && self.copied == head) {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        stage_blocks(&mut batch, &self.copies.drain());
        batch.insert(copies::META_COPIED, &head.to_be_bytes()[..]);
        match self.reader.events.apply_batch(batch) {
            Ok(()) => {
                self.set_copied(head);
                Ok(())
            }
            Err(e) => {
                self.recover_copies();
                Err(StoreError::sled(self.path(), "writing object copies", e))
            }
        }
    }

    /// Reads `Mcopied` and rebuilds the open tails from the log after it: events there whose
    /// copies are not in a block yet (none after a clean close; after a crash, at most about
    /// [`copies::HORIZON`] events' worth). A tail found full (a store written otherwise) is
    /// written as its block at once.
    pub(super) fn restore_copies(&mut self) -> Result<(), StoreError> {
        if !self.copying() {
            return Ok(());
        }
        let copied = self.reader.copied()?;
        let mut tails = Copies::default();
        let mut full = Vec::new();
        let mut done: HashMap<Term, u64> = HashMap::new();
        for item in self.reader.records_from(copied + 1) {
            let (seq, record) = item?;
            let env = self.reader.open_record(seq, &record)?;
            for term in copies::terms_of(&env.body) {
                let last = match done.get(&term).copied() {
                    Some(last) => last,
                    None => {
                        let last = self.reader.last_copy(&term)?;
                        done.insert(term, last);
                        last
                    }
                };
                if seq > last {
                    full.extend(tails.push(term, seq, &record));
                }
            }
        }
        self.copies = tails;
        self.set_copied(copied);
        if !full.is_empty() {
            let mut batch = sled::Batch::default();
            stage_blocks(&mut batch, &full);
            self.reader
                .events
                .apply_batch(batch)
                .map_err(self.err("writing object copies"))?;
        }
        Ok(())
    }
}

fn stage_blocks(batch: &mut sled::Batch, blocks: &[Block]) {
    for b in blocks {
        batch.insert(&b.key()[..], b.value());
    }
}

impl StoreReader {
    /// `Mcopied`: every event at or below it has its copies (0 when not recorded).
    pub fn copied(&self) -> Result<u64, StoreError> {
        let v = self
            .tree_get(copies::META_COPIED)
            .map_err(self.err("reading Mcopied"))?;
        Ok(v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// The newest seq in `term`'s blocks (0 when it has none).
    pub(crate) fn last_copy(&self, term: &Term) -> Result<u64, StoreError> {
        let last = self
            .tree_range(copies::block_key(term, 0)..=copies::block_key(term, u64::MAX))
            .next_back()
            .transpose()
            .map_err(self.err("reading object copies"))?;
        let Some((k, v)) = last else { return Ok(0) };
        let chunk = self.decompress_copy(&k, &v)?;
        Ok(chunk.last_seq().unwrap_or(0))
    }

    fn decompress_copy(&self, k: &[u8], v: &[u8]) -> Result<keys::RawChunk, StoreError> {
        keys::RawChunk::decompress(v).map_err(|reason| StoreError::Corrupt {
            path: self.path.clone(),
            seq: keys::seq_of(k),
            reason: format!("object copies block: {reason}"),
        })
    }

    /// The events `seqs` (of one object's history, in any order) from `term`'s blocks, the
    /// ones without a copy from the log: one or two block reads for a page instead of a read
    /// per event. Reads every block from the oldest seq's to the newest's: meant for seqs that
    /// are dense in the object's history (a page by object). `None` in place where neither has
    /// the event, as [`EventRead::get_many`].
    pub(crate) fn get_copies(
        &self,
        term: &Term,
        seqs: &[u64],
    ) -> Result<Vec<Option<Envelope>>, StoreError> {
        let Some((lo, hi)) = copies::read_range(term, seqs) else {
            return Ok(vec![]);
        };
        // From the block holding the oldest seq: the last one starting at or before it.
        let start = self
            .tree_range(copies::block_key(term, 0)..=lo)
            .next_back()
            .transpose()
            .map_err(self.err("reading object copies"))?
            .map_or(lo.to_vec(), |(k, _)| k.to_vec());
        let mut found: HashMap<u64, Envelope> = HashMap::with_capacity(seqs.len());
        let mut wanted: Vec<u64> = seqs.to_vec();
        wanted.sort_unstable();
        for item in self.tree_range(start..=hi.to_vec()) {
            let (k, v) = item.map_err(self.err("reading object copies"))?;
            let chunk = self.decompress_copy(&k, &v)?;
            for r in chunk.records() {
                let (seq, record) = r.map_err(|reason| StoreError::Corrupt {
                    path: self.path.clone(),
                    seq: keys::seq_of(&k),
                    reason: format!("object copies block: {reason}"),
                })?;
                if wanted.binary_search(&seq).is_ok() {
                    found.insert(seq, self.open_record(seq, record)?);
                }
            }
        }
        let mut out: Vec<Option<Envelope>> = seqs.iter().map(|s| found.remove(s)).collect();
        let missing: Vec<u64> = seqs
            .iter()
            .zip(&out)
            .filter(|(_, e)| e.is_none())
            .map(|(s, _)| *s)
            .collect();
        if !missing.is_empty() {
            let mut from_log = self.get_many(&missing)?.into_iter();
            for slot in out.iter_mut().filter(|e| e.is_none()) {
                *slot = from_log.next().flatten();
            }
        }
        Ok(out)
    }

    /// Fills a page by object from `term`'s blocks with its events in `lo..=hi` (all of them
    /// are there: `hi` is at or below `Mcopied`), in the page's order: the blocks themselves
    /// say which events the page holds, with no index postings read first. A block may hold
    /// another object's events (the same h64): [`Fill::offer`] takes only the object asked for.
    pub(super) fn fill_from_copies(
        &self,
        fill: &mut Fill<'_>,
        term: &Term,
        lo: u64,
        hi: u64,
    ) -> Result<Flow, StoreError> {
        let newest_first = fill.q.order == Order::NewestFirst;
        let end = copies::block_key(term, hi);
        let blocks: Box<dyn Iterator<Item = _>> = if newest_first {
            // Blocks never overlap in seqs: the newest starting at or below `hi` first.
            Box::new(self.tree_range(copies::block_key(term, 0)..=end).rev())
        } else {
            // From the block holding `lo`: the last one starting at or before it.
            let start = self
                .tree_range(copies::block_key(term, 0)..=copies::block_key(term, lo))
                .next_back()
                .transpose()
                .map_err(self.err("reading object copies"))?
                .map_or(copies::block_key(term, lo).to_vec(), |(k, _)| k.to_vec());
            Box::new(self.tree_range(start..=end.to_vec()))
        };
        for item in blocks {
            let (k, v) = item.map_err(self.err("reading object copies"))?;
            let chunk = self.decompress_copy(&k, &v)?;
            let mut records = chunk
                .records()
                .filter(|r| match r {
                    Ok((s, _)) => (lo..=hi).contains(s),
                    Err(_) => true, // reported below
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| StoreError::Corrupt {
                    path: self.path.clone(),
                    seq: keys::seq_of(&k),
                    reason: format!("object copies block: {reason}"),
                })?;
            if newest_first {
                records.reverse();
            }
            for (seq, record) in records {
                if fill.offer(self.open_record(seq, record)?) == Flow::Stop {
                    return Ok(Flow::Stop);
                }
            }
            // Newest first, a block starting at or below `lo` is the last that can hold any.
            if newest_first && keys::seq_of(&k).is_some_and(|first| first <= lo) {
                break;
            }
        }
        Ok(Flow::Go)
    }
}
