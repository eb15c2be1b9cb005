//! Owns the object copies (store schema 4): each object's events copied, in the object's order,
//! into blocks of up to [`BLOCK_EVENTS`] records under `E · h64(object) · first seq`, so that a
//! page of an object's history is one or two reads instead of one per event (its events are
//! scattered over the log: an object's page of 100 at 10M events touched 100 log chunks).
//!
//! The log stays the source of truth: a copy is the record's exact bytes (its hash is checked on
//! every read), `store verify` checks every copy against the log, and readers fall back to the
//! log for any event without a copy. What the writer keeps here is the open tail of each object,
//! its events not yet in a block. A tail is written as a block when it is full, when its oldest
//! event falls [`HORIZON`] events behind the head (so the tails stay bounded, in memory and in
//! what a crash leaves to redo), and at close. With each batch the writer records `Mcopied`: every
//! event at or below it has its copies (the oldest open tail starts after it). After a crash, the
//! tails are rebuilt from the log after `Mcopied` ([`Copies::rebuild`]'s caller replays at most
//! about [`HORIZON`] events).
//!
//! Pure: the decisions (which block a record goes to, which tails are due) and the block
//! encoding; the engine does the reads and writes.

use super::keys;
use crate::event::EnvelopeBody;
use std::collections::{BTreeSet, HashMap};

/// Key prefix of the copies' blocks.
pub const PREFIX: u8 = b'E';
/// The store schema that introduced the copies (migration 0013).
pub const SINCE_SCHEMA: u32 = 4;
/// Records per block: a page of 100 spans two or three blocks; a block is ~9 KB compressed.
pub const BLOCK_EVENTS: usize = 64;
/// An open tail whose oldest event is this many events behind the head is written out, full or
/// not: it bounds the writer's memory (the tails hold at most the last ~`HORIZON` events) and
/// the replay after a crash.
pub const HORIZON: u64 = 100_000;
/// Meta key: every event with a seq at or below its value (u64, big-endian) has its copies.
pub const META_COPIED: &[u8] = b"Mcopied";

/// The term part of a block key: `E · h64(object identity)`.
pub type Term = [u8; 9];

pub fn term(object_identity: &str) -> Term {
    let mut t = [PREFIX; 9];
    t[1..].copy_from_slice(&keys::h64(PREFIX, object_identity));
    t
}

/// The terms an event is copied under: one per distinct object it names (two objects with the
/// same h64 share one copy).
pub fn terms_of(body: &EnvelopeBody) -> Vec<Term> {
    let mut out: Vec<Term> = body
        .event
        .objects()
        .into_iter()
        .map(|o| term(&keys::object_term(o)))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

pub fn block_key(term: &Term, first_seq: u64) -> [u8; 17] {
    let mut k = [0; 17];
    k[..9].copy_from_slice(term);
    k[9..].copy_from_slice(&first_seq.to_be_bytes());
    k
}

/// A block to write: its key and its records, ascending.
#[derive(Debug, PartialEq, Eq)]
pub struct Block {
    pub term: Term,
    pub records: Vec<(u64, Vec<u8>)>,
}

impl Block {
    pub fn key(&self) -> [u8; 17] {
        block_key(&self.term, self.records[0].0)
    }

    /// The log chunk encoding (`keys::encode_chunk`): copies read like the log.
    pub fn value(&self) -> Vec<u8> {
        keys::encode_chunk(self.records.iter().map(|(s, r)| (*s, &r[..])))
    }
}

/// The writer's open tails.
#[derive(Debug, Default)]
pub struct Copies {
    tails: HashMap<Term, Vec<(u64, Vec<u8>)>>,
    /// `(first seq, term)` of every open tail: the oldest is what `Mcopied` stops before.
    oldest: BTreeSet<(u64, Term)>,
}

impl Copies {
    /// Adds `seq`'s record to `term`'s tail; returns the block when that fills it.
    pub fn push(&mut self, term: Term, seq: u64, record: &[u8]) -> Option<Block> {
        let tail = self.tails.entry(term).or_default();
        if tail.is_empty() {
            self.oldest.insert((seq, term));
        }
        tail.push((seq, record.to_vec()));
        if tail.len() < BLOCK_EVENTS {
            return None;
        }
        Some(self.take(term))
    }

    fn take(&mut self, term: Term) -> Block {
        let records = self.tails.remove(&term).unwrap_or_default();
        if let Some((first, _)) = records.first() {
            self.oldest.remove(&(*first, term));
        }
        Block { term, records }
    }

    /// The tails that are due with the head at `head`: when the oldest is [`HORIZON`] behind,
    /// every tail more than half of it behind (so that this happens in bulk, not every batch).
    pub fn due(&mut self, head: u64) -> Vec<Block> {
        let behind = |first: u64, by: u64| first.saturating_add(by) <= head;
        if !self
            .oldest
            .first()
            .is_some_and(|(f, _)| behind(*f, HORIZON))
        {
            return vec![];
        }
        let due: Vec<Term> = self
            .oldest
            .iter()
            .take_while(|(f, _)| behind(*f, HORIZON / 2))
            .map(|(_, t)| *t)
            .collect();
        due.into_iter().map(|t| self.take(t)).collect()
    }

    /// Every open tail, as blocks (at close, and at the end of a migration).
    pub fn drain(&mut self) -> Vec<Block> {
        let terms: Vec<Term> = self.oldest.iter().map(|(_, t)| *t).collect();
        terms.into_iter().map(|t| self.take(t)).collect()
    }

    /// What `Mcopied` may say with the head at `head`: everything before the oldest open tail.
    pub fn copied_through(&self, head: u64) -> u64 {
        self.oldest
            .first()
            .map_or(head, |(first, _)| first.saturating_sub(1))
    }

    /// Takes `seq` out of `term`'s open tail (retention); whether it was there.
    pub fn remove(&mut self, term: Term, seq: u64) -> bool {
        let Some(tail) = self.tails.get_mut(&term) else {
            return false;
        };
        let Some(at) = tail.iter().position(|(s, _)| *s == seq) else {
            return false;
        };
        let first = tail[0].0;
        tail.remove(at);
        self.oldest.remove(&(first, term));
        match tail.first() {
            Some((f, _)) => {
                self.oldest.insert((*f, term));
            }
            None => {
                self.tails.remove(&term);
            }
        }
        true
    }

    /// Whether `term`'s open tail holds `seq`.
    pub fn holds(&self, term: &Term, seq: u64) -> bool {
        self.tails
            .get(term)
            .is_some_and(|t| t.iter().any(|(s, _)| *s == seq))
    }

    /// Records held in open tails.
    pub fn pending(&self) -> usize {
        self.tails.values().map(Vec::len).sum()
    }
}

/// The blocks, out of `first..=last` block keys of one term (ascending), a page of `seqs` needs:
/// from the last block starting at or before the smallest seq to the largest. `None` when
/// `seqs` is empty.
pub fn read_range(term: &Term, seqs: &[u64]) -> Option<([u8; 17], [u8; 17])> {
    let lo = *seqs.iter().min()?;
    let hi = *seqs.iter().max()?;
    Some((block_key(term, lo), block_key(term, hi)))
}

/// Where a page by object finds its events within a seq range: up to `Mcopied` every event has
/// its copy, so the copies' blocks, read newest first, give the page's events themselves (two
/// or three blocks for a page of 100); above it only the object's index postings know them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Every event of the object in `lo..=hi` is in its blocks.
    Copies { lo: u64, hi: u64 },
    /// The object's events in `lo..=hi` are found through its index postings.
    Postings { lo: u64, hi: u64 },
}

/// The parts of `lo..=hi` in scan order, `copied` being `Mcopied` (0: nothing is known to be
/// copied, and the page is read through the postings alone, as before the copies).
pub fn page_parts(lo: u64, hi: u64, copied: u64, newest_first: bool) -> Vec<Part> {
    let mut parts = Vec::with_capacity(2);
    if lo <= copied {
        parts.push(Part::Copies {
            lo,
            hi: hi.min(copied),
        });
    }
    if hi > copied {
        parts.push(Part::Postings {
            lo: lo.max(copied + 1),
            hi,
        });
    }
    if newest_first {
        parts.reverse();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64) -> Vec<u8> {
        seq.to_le_bytes().to_vec()
    }

    #[test]
    fn a_tail_becomes_a_block_when_full() {
        let (a, b) = (term("a"), term("b"));
        let mut c = Copies::default();
        for i in 0..BLOCK_EVENTS as u64 - 1 {
            assert!(c.push(a, 10 + 2 * i, &rec(i)).is_none());
            assert!(c.push(b, 11 + 2 * i, &rec(i)).is_none());
        }
        assert_eq!(c.copied_through(1000), 9, "a's tail starts at 10");
        let block = c.push(a, 500, &rec(500)).expect("full");
        assert_eq!(block.records.len(), BLOCK_EVENTS);
        assert_eq!(block.key(), block_key(&a, 10));
        assert_eq!(block.records.last().unwrap().0, 500);
        assert_eq!(
            c.copied_through(1000),
            10,
            "now b's tail, from 11, is the oldest"
        );
        assert_eq!(c.pending(), BLOCK_EVENTS - 1);
        // The value decodes as a log chunk of the same records.
        assert_eq!(keys::decode_chunk(&block.value()).unwrap(), block.records);
        let rest = c.drain();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].term, b);
        assert_eq!(c.copied_through(1000), 1000, "nothing open: the head");
    }

    #[test]
    fn old_tails_are_written_in_bulk_once_the_oldest_passes_the_horizon() {
        let mut c = Copies::default();
        let (a, b, d) = (term("a"), term("b"), term("d"));
        c.push(a, 1, &rec(1));
        c.push(b, HORIZON / 2, &rec(2));
        c.push(d, HORIZON - 10, &rec(3));
        assert!(c.due(HORIZON).is_empty(), "a is not a whole horizon behind");
        let due = c.due(HORIZON + 1);
        let terms: Vec<Term> = due.iter().map(|b| b.term).collect();
        // a is a horizon behind, b half of one; d is recent and stays open.
        assert_eq!(terms, vec![a, b]);
        assert_eq!(c.copied_through(HORIZON + 1), HORIZON - 11);
        assert!(c.due(HORIZON + 2).is_empty());
    }

    #[test]
    fn retention_takes_records_out_of_open_tails() {
        let mut c = Copies::default();
        let a = term("a");
        c.push(a, 5, &rec(5));
        c.push(a, 7, &rec(7));
        assert!(!c.remove(a, 6));
        assert!(c.holds(&a, 7) && !c.holds(&a, 6));
        assert!(!c.remove(term("b"), 5));
        assert!(c.remove(a, 5));
        assert_eq!(c.copied_through(9), 6, "the tail now starts at 7");
        assert!(c.remove(a, 7));
        assert_eq!(c.pending(), 0);
        assert_eq!(c.copied_through(9), 9);
        assert!(c.drain().is_empty());
    }

    #[test]
    fn an_event_is_copied_once_per_distinct_object() {
        use crate::event::{Digest, samples};
        let body = |event| EnvelopeBody {
            schema: crate::event::envelope::EVENT_SCHEMA,
            seq: 1,
            time: chrono::DateTime::from_timestamp_micros(0).unwrap(),
            app: Some("shop".into()),
            actor: None,
            prev_hash: Digest::ZERO,
            event,
        };
        let applied = samples::stream(3, 1, 1).event; // an object event of the sample stream
        let terms = terms_of(&body(applied.clone()));
        assert_eq!(terms.len(), 1);
        assert_eq!(terms[0][0], PREFIX);
        let commit = samples::stream(0, 1, 1).event;
        assert!(terms_of(&body(commit)).is_empty());
    }

    #[test]
    fn golden_copies_bytes() {
        let block = Block {
            term: term("apps/Deployment/ns-0/svc-1"),
            records: vec![(5, b"five".to_vec()), (9, b"nine".to_vec())],
        };
        crate::golden::check(
            "copies",
            vec![
                ("block-key-5".into(), block.key().to_vec()),
                ("block-two-records".into(), block.value()),
                ("meta-copied-key".into(), META_COPIED.to_vec()),
            ],
        );
    }

    #[test]
    fn a_page_reads_from_the_block_holding_its_oldest_seq_to_its_newest() {
        let a = term("a");
        assert_eq!(read_range(&a, &[]), None);
        let (lo, hi) = read_range(&a, &[90, 40, 70]).unwrap();
        assert_eq!(lo, block_key(&a, 40));
        assert_eq!(hi, block_key(&a, 90));
        assert!(lo < hi);
        // Block keys sort by term, then seq: one term's blocks are contiguous.
        let (x, y) = (a.min(term("zz")), a.max(term("zz")));
        assert!(block_key(&x, u64::MAX) < block_key(&y, 0));
    }

    #[test]
    fn a_page_reads_copies_up_to_mcopied_and_postings_above_it() {
        use Part::*;
        // Nothing copied: the postings alone, as before the copies.
        assert_eq!(
            page_parts(1, u64::MAX, 0, true),
            vec![Postings {
                lo: 1,
                hi: u64::MAX
            }]
        );
        // Newest first: the postings above Mcopied first, then the copies.
        assert_eq!(
            page_parts(1, u64::MAX, 500, true),
            vec![
                Postings {
                    lo: 501,
                    hi: u64::MAX
                },
                Copies { lo: 1, hi: 500 }
            ]
        );
        assert_eq!(
            page_parts(1, u64::MAX, 500, false),
            vec![
                Copies { lo: 1, hi: 500 },
                Postings {
                    lo: 501,
                    hi: u64::MAX
                }
            ]
        );
        // A range wholly on one side, or ending exactly at Mcopied.
        assert_eq!(
            page_parts(10, 499, 500, true),
            vec![Copies { lo: 10, hi: 499 }]
        );
        assert_eq!(
            page_parts(10, 500, 500, true),
            vec![Copies { lo: 10, hi: 500 }]
        );
        assert_eq!(
            page_parts(501, 900, 500, false),
            vec![Postings { lo: 501, hi: 900 }]
        );
        assert_eq!(
            page_parts(500, 501, 500, false),
            vec![Copies { lo: 500, hi: 500 }, Postings { lo: 501, hi: 501 }]
        );
        // Everything copied (a closed store: Mcopied is the head): nothing can be above it.
        assert_eq!(
            page_parts(1, u64::MAX, u64::MAX, true),
            vec![Copies {
                lo: 1,
                hi: u64::MAX
            }]
        );
    }
}
