//! Owns the key and value encoding of the `events` tree: one byte of prefix per record family,
//! then big-endian fields, so that sled's lexicographic order is sequence (or time) order.
//!
//! | prefix | key                                   | value                                    | since |
//! |--------|---------------------------------------|------------------------------------------|-------|
//! | `L`    | base seq (u64)                        | log chunk: up to 32 records, lz4         | 1     |
//! | `A`    | h64(app) · first seq                  | posting block: the rest of the seqs      | 1     |
//! | `O`    | h64(object identity) · first seq      | posting block                            | 1     |
//! | `C`    | h64(commit sha) · first seq           | posting block                            | 1     |
//! | `U`    | h64(lowercased email) · first seq     | posting block                            | 1     |
//! | `K`    | kind (u8) · first seq                 | posting block                            | 2     |
//! | `T`    | time (i64 µs, sign-flipped) · seq     | empty: first seq of a run of equal times | 2     |
//! | `D`    | h64(object identity) · first seq      | posting block: its drift-family events   | 3     |
//! | `E`    | h64(object identity) · first seq      | object copies: up to 64 records, lz4     | 4     |
//! | `X`    | seq                                   | tombstone: hash (32) · summary seq (u64) | 1     |
//! | `M`    | name                                  | meta (`Mschema`: u32, `Mcopied`: u64)    | 1     |
//!
//! Why chunks and posting blocks: sled's cost is per key (it rewrites whole leaves and keeps the
//! old versions until it cleans a segment), measured at ~800 bytes/event for one key per record
//! and ~2,300 with one key per index entry. Grouping the records of a batch into compressed
//! chunks, and each term's sequence numbers of a batch into one delta-encoded block, brings that
//! to one key per ~32 records plus about one per distinct term in a batch.
//!
//! `h64(term) = SHA-256(prefix · term)[..8]`: fixed-size keys whatever the length of a name. Two
//! terms may share an h64 (p ≈ n²/2⁶⁵), so readers check every hit against the event itself.
//!
//! An index **entry** (what `verify` counts and fingerprints) is `term prefix · seq`, i.e. the
//! block key with each of the block's sequence numbers. The object copies (`E`) are records,
//! not entries: `super::copies` owns them.

use crate::event::{EnvelopeBody, Event, EventKind, ObjectRef};
use sha2::{Digest as _, Sha256};

pub const LOG: u8 = b'L';
pub const TOMBSTONE: u8 = b'X';

/// A secondary index. The prefix byte is part of the on-disk format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Index {
    App,
    Object,
    Commit,
    Author,
    Kind,
    Time,
    /// An object's DriftDetected, DriftCorrected, DriftSuperseded and DriftAttributed events: blame lists every
    /// drift of an object, and who made it,
    /// without reading its (far more numerous) applies.
    Drift,
}

impl Index {
    pub const ALL: [Index; 7] = [
        Index::App,
        Index::Object,
        Index::Commit,
        Index::Author,
        Index::Kind,
        Index::Time,
        Index::Drift,
    ];

    pub fn prefix(self) -> u8 {
        match self {
            Index::App => b'A',
            Index::Object => b'O',
            Index::Commit => b'C',
            Index::Author => b'U',
            Index::Kind => b'K',
            Index::Time => b'T',
            Index::Drift => b'D',
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Index::App => "app",
            Index::Object => "object",
            Index::Commit => "commit",
            Index::Author => "author",
            Index::Kind => "kind",
            Index::Time => "time",
            Index::Drift => "drift",
        }
    }

    /// The store schema that introduced this index (migration 0002 added kind and time, 0004
    /// the object drift index).
    pub fn since_schema(self) -> u32 {
        match self {
            Index::Kind | Index::Time => 2,
            Index::Drift => 3,
            _ => 1,
        }
    }

    /// The indexes a store of `schema` maintains.
    pub fn for_schema(schema: u32) -> impl Iterator<Item = Index> {
        Index::ALL
            .into_iter()
            .filter(move |i| i.since_schema() <= schema)
    }
}

/// Records per log chunk: small enough that a point read decompresses ~4 KB, large enough that
/// sled's per-key overhead is spread thin.
pub const CHUNK_EVENTS: usize = 32;
pub const CHUNK_FORMAT: u8 = 1;

/// Log chunk value: `CHUNK_FORMAT · lz4(size-prepended)[ (seq u64 LE · len u32 LE · record)* ]`.
pub fn encode_chunk<'a>(records: impl IntoIterator<Item = (u64, &'a [u8])>) -> Vec<u8> {
    let mut raw = Vec::with_capacity(CHUNK_EVENTS * 300);
    for (seq, rec) in records {
        raw.extend_from_slice(&seq.to_le_bytes());
        raw.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        raw.extend_from_slice(rec);
    }
    let mut out = vec![CHUNK_FORMAT];
    out.extend(lz4_flex::compress_prepend_size(&raw));
    out
}

/// A decompressed log chunk, read in place: a point read finds its record without copying the
/// chunk's other records out (they were most of the allocations of a scattered read).
pub struct RawChunk(Vec<u8>);

impl RawChunk {
    pub fn decompress(value: &[u8]) -> Result<RawChunk, String> {
        let (&format, data) = value.split_first().ok_or("empty log chunk")?;
        if format != CHUNK_FORMAT {
            return Err(format!("unknown log chunk format {format}"));
        }
        let raw =
            lz4_flex::decompress_size_prepended(data).map_err(|e| format!("log chunk: {e}"))?;
        Ok(RawChunk(raw))
    }

    /// The `(seq, record)` pairs, in sequence order.
    pub fn records(&self) -> impl Iterator<Item = Result<(u64, &[u8]), String>> {
        let mut rest = &self.0[..];
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            if rest.len() < 12 {
                rest = &[];
                return Some(Err("log chunk: truncated record header".into()));
            }
            let seq = u64::from_le_bytes(rest[..8].try_into().expect("8"));
            let len = u32::from_le_bytes(rest[8..12].try_into().expect("4")) as usize;
            match rest.get(12..12 + len) {
                Some(rec) => {
                    rest = &rest[12 + len..];
                    Some(Ok((seq, rec)))
                }
                None => {
                    rest = &[];
                    Some(Err("log chunk: truncated record".into()))
                }
            }
        })
    }

    /// The record of `seq`, if the chunk holds it.
    pub fn find(&self, seq: u64) -> Result<Option<&[u8]>, String> {
        for r in self.records() {
            let (s, rec) = r?;
            if s == seq {
                return Ok(Some(rec));
            }
            if s > seq {
                break;
            }
        }
        Ok(None)
    }

    /// The newest sequence number in the chunk (`None` when it is empty or damaged).
    pub fn last_seq(&self) -> Option<u64> {
        self.records().filter_map(Result::ok).last().map(|(s, _)| s)
    }
}

/// The `(seq, record)` pairs of a chunk, in sequence order.
pub fn decode_chunk(value: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let chunk = RawChunk::decompress(value)?;
    let mut out = Vec::with_capacity(CHUNK_EVENTS);
    for r in chunk.records() {
        let (seq, rec) = r?;
        out.push((seq, rec.to_vec()));
    }
    Ok(out)
}

/// Posting block value: LEB128 deltas of the seqs after the first (which is in the key).
pub fn encode_postings(seqs: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(seqs.len() * 2);
    for w in seqs.windows(2) {
        let mut d = w[1] - w[0];
        loop {
            let b = (d & 0x7f) as u8;
            d >>= 7;
            if d == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }
    out
}

/// All seqs of a posting block, ascending.
pub fn decode_postings(key: &[u8], value: &[u8]) -> Result<Vec<u64>, String> {
    let first = seq_of(key).ok_or("posting key too short")?;
    let mut out = vec![first];
    let (mut cur, mut d, mut shift) = (first, 0u64, 0u32);
    for &b in value {
        if shift > 63 {
            return Err("posting block: delta overflows".into());
        }
        d |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            cur = cur
                .checked_add(d)
                .filter(|_| d > 0)
                .ok_or("posting block: deltas not increasing")?;
            out.push(cur);
            d = 0;
            shift = 0;
        }
    }
    if shift != 0 {
        return Err("posting block: truncated delta".into());
    }
    Ok(out)
}

/// Sparse time index key: the first seq of a run of events with the same time.
pub fn time_key(micros: i64, seq: u64) -> Vec<u8> {
    let mut k = vec![Index::Time.prefix()];
    k.extend_from_slice(&time_bytes(micros));
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub fn log_key(seq: u64) -> [u8; 9] {
    let mut k = [LOG; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub fn tombstone_key(seq: u64) -> [u8; 9] {
    let mut k = [TOMBSTONE; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The sequence number every key except meta keys ends with.
pub fn seq_of(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    (key.len() >= 9).then(|| u64::from_be_bytes(tail))
}

pub fn h64(prefix: u8, term: &str) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update([prefix]);
    h.update(term.as_bytes());
    h.finalize()[..8].try_into().expect("8 of 32 bytes")
}

/// Time as a big-endian key that sorts like the signed value (flip the sign bit).
pub fn time_bytes(micros: i64) -> [u8; 8] {
    ((micros as u64) ^ (1 << 63)).to_be_bytes()
}

/// The key prefix for one term of an index (everything but the trailing seq).
pub fn term_prefix(index: Index, term: &Term<'_>) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(index.prefix());
    match term {
        Term::Str(s) => k.extend_from_slice(&h64(index.prefix(), s)),
        Term::Kind(kind) => k.push(*kind as u8),
        Term::Time(micros) => k.extend_from_slice(&time_bytes(*micros)),
    }
    k
}

pub enum Term<'a> {
    Str(&'a str),
    Kind(EventKind),
    Time(i64),
}

pub fn object_term(o: &ObjectRef) -> String {
    o.identity()
}

/// The object of a drift-family event (what the drift index holds), `None` for other events.
pub fn drift_object(event: &Event) -> Option<&ObjectRef> {
    match event {
        Event::DriftDetected(d) => Some(&d.object),
        Event::DriftCorrected(c) => Some(&c.object),
        Event::DriftAttributed(a) => Some(&a.object),
        Event::DriftSuperseded(s) => Some(&s.object),
        _ => None,
    }
}

pub fn author_term(email: &str) -> String {
    email.to_lowercase()
}

/// Every posting-index entry (`term prefix · seq`) of one event in a store of `schema`, in
/// index order. The time index is sparse (per run, not per event) and not included.
pub fn index_keys(body: &EnvelopeBody, schema: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(6);
    let seq = body.seq.to_be_bytes();
    let mut push = |index: Index, term: Term<'_>| {
        let mut k = term_prefix(index, &term);
        k.extend_from_slice(&seq);
        out.push(k);
    };
    for index in Index::for_schema(schema) {
        match index {
            Index::App => {
                if let Some(app) = &body.app {
                    push(index, Term::Str(app));
                }
            }
            Index::Object => {
                let mut terms: Vec<String> =
                    body.event.objects().into_iter().map(object_term).collect();
                terms.sort();
                terms.dedup();
                for t in &terms {
                    push(index, Term::Str(t));
                }
            }
            Index::Commit => {
                let mut revs = body.event.revisions();
                revs.dedup();
                for r in revs {
                    push(index, Term::Str(r));
                }
            }
            Index::Author => {
                for a in body.event.authors() {
                    push(index, Term::Str(&author_term(a)));
                }
            }
            Index::Kind => push(index, Term::Kind(body.event.kind())),
            Index::Time => {}
            Index::Drift => {
                if let Some(o) = drift_object(&body.event) {
                    push(index, Term::Str(&object_term(o)));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Digest, envelope::EVENT_SCHEMA, samples};
    use chrono::DateTime;

    fn body(i: usize) -> EnvelopeBody {
        EnvelopeBody {
            schema: EVENT_SCHEMA,
            seq: 258,
            time: DateTime::from_timestamp_micros(1_764_000_000_000_000).unwrap(),
            app: Some("shop".into()),
            actor: None,
            prev_hash: Digest::ZERO,
            event: samples::all_events().remove(i),
        }
    }

    #[test]
    fn log_keys_sort_by_sequence() {
        let mut keys: Vec<_> = [300u64, 2, 1 << 40, 255, 256].map(log_key).to_vec();
        keys.sort();
        let seqs: Vec<_> = keys.iter().map(|k| seq_of(k).unwrap()).collect();
        assert_eq!(seqs, vec![2, 255, 256, 300, 1 << 40]);
    }

    #[test]
    fn time_keys_sort_like_signed_time() {
        let mut v = [5i64, -3, 0, i64::MIN, i64::MAX, -1]
            .map(time_bytes)
            .to_vec();
        v.sort();
        let back: Vec<i64> = v
            .iter()
            .map(|b| (u64::from_be_bytes(*b) ^ (1 << 63)) as i64)
            .collect();
        assert_eq!(back, vec![i64::MIN, -3, -1, 0, 5, i64::MAX]);
    }

    #[test]
    fn commit_event_gets_app_commit_author_kind_time_keys() {
        // Sample 1 is a CommitObserved with distinct author and committer emails.
        let keys = index_keys(&body(1), 2);
        let prefixes: Vec<u8> = keys.iter().map(|k| k[0]).collect();
        assert_eq!(prefixes, b"ACUUK".to_vec());
        assert!(keys.iter().all(|k| seq_of(k) == Some(258)));
        // Schema 1 has no kind/time index.
        assert_eq!(index_keys(&body(1), 1).len(), 4);
        assert_eq!(keys[0].len(), 17);
        assert_eq!(keys[4].len(), 10);
        // Emails are case-insensitive.
        let mut upper = body(1);
        if let crate::event::Event::CommitObserved(c) = &mut upper.event {
            c.author.email = c.author.email.to_uppercase();
        }
        assert_eq!(index_keys(&upper, 2)[2], keys[2]);
    }

    #[test]
    fn object_event_gets_object_key_and_no_author_key() {
        let keys = index_keys(&body(7), 2); // ObjectApplied
        let prefixes: Vec<u8> = keys.iter().map(|k| k[0]).collect();
        assert_eq!(prefixes, b"AOCK".to_vec());
        let mut agent = body(0); // AgentStarted without an App
        agent.app = None;
        assert_eq!(index_keys(&agent, 2).len(), 1);
    }

    #[test]
    fn chunks_round_trip_and_reject_damage() {
        let recs: Vec<(u64, Vec<u8>)> = vec![(7, b"abc".to_vec()), (9, vec![]), (10, vec![1; 300])];
        let enc = encode_chunk(recs.iter().map(|(s, r)| (*s, &r[..])));
        assert_eq!(decode_chunk(&enc).unwrap(), recs);
        let raw = RawChunk::decompress(&enc).unwrap();
        assert_eq!(raw.find(9).unwrap(), Some(&[][..]));
        assert_eq!(raw.find(10).unwrap(), Some(&[1; 300][..]));
        assert_eq!(raw.find(8).unwrap(), None, "a seq between two records");
        assert_eq!(raw.find(11).unwrap(), None);
        assert_eq!(raw.last_seq(), Some(10));
        assert!(decode_chunk(&[]).is_err());
        assert!(decode_chunk(&[2, 0]).is_err());
        let mut cut = enc.clone();
        cut.truncate(enc.len() - 3);
        assert!(decode_chunk(&cut).is_err());
    }

    #[test]
    fn postings_round_trip_with_large_gaps() {
        let seqs = vec![5u64, 6, 200, 70_000, 1 << 40, (1 << 40) + 1];
        let mut key = vec![b'A'; 9];
        key.extend_from_slice(&seqs[0].to_be_bytes());
        let v = encode_postings(&seqs);
        assert_eq!(v[0], 1); // delta 1 is one byte
        assert_eq!(decode_postings(&key, &v).unwrap(), seqs);
        assert_eq!(decode_postings(&key, &[]).unwrap(), vec![5]);
        assert!(decode_postings(&key, &[0x80]).is_err(), "truncated delta");
        assert!(decode_postings(&key, &[0]).is_err(), "zero delta");
    }

    #[test]
    fn golden_key_bytes() {
        let b = body(1);
        let mut entries: Vec<(String, Vec<u8>)> = index_keys(&b, 2)
            .into_iter()
            .enumerate()
            .map(|(i, k)| (format!("commit-event-key-{i}"), k))
            .collect();
        entries.push(("log-key-258".into(), log_key(258).to_vec()));
        entries.push(("time-key".into(), time_key(1_764_000_000_000_000, 258)));
        entries.push(("postings-5-6-200".into(), encode_postings(&[5, 6, 200])));
        entries.push((
            "chunk-two-records".into(),
            encode_chunk([(1, &b"one"[..]), (2, &b"two"[..])]),
        ));
        entries.push(("tombstone-key-258".into(), tombstone_key(258).to_vec()));
        crate::golden::check("keys", entries);
    }
}
