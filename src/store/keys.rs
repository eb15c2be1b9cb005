//! Owns the key encoding of the `events` tree: one byte of prefix per record family, then
//! big-endian fields, so that sled's lexicographic order is sequence (or time) order.
//!
//! | prefix | key                                | value                        | since schema |
//! |--------|------------------------------------|------------------------------|--------------|
//! | `L`    | seq (u64 BE)                       | envelope record              | 1            |
//! | `A`    | h64(app) · seq                     | empty                        | 1            |
//! | `O`    | h64(object identity) · seq         | empty                        | 1            |
//! | `C`    | h64(commit sha) · seq              | empty                        | 1            |
//! | `U`    | h64(lowercased author email) · seq | empty                        | 1            |
//! | `K`    | kind (u8) · seq                    | empty                        | 2            |
//! | `T`    | time (i64 µs, sign-flipped BE) · seq | empty                      | 2            |
//! | `X`    | seq                                | hash (32) · summary seq (u64 BE) | 1 (retention tombstone) |
//!
//! `h64(term) = SHA-256(prefix · term)[..8]`: fixed-size keys keep index entries at 17 bytes
//! whatever the length of an App name or email. Two terms may share an h64 (p ≈ n²/2⁶⁵), so
//! readers check every hit against the event itself; an index is a superset, never trusted alone.

use crate::event::{EnvelopeBody, EventKind, ObjectRef};
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
}

impl Index {
    pub const ALL: [Index; 6] = [
        Index::App,
        Index::Object,
        Index::Commit,
        Index::Author,
        Index::Kind,
        Index::Time,
    ];

    pub fn prefix(self) -> u8 {
        match self {
            Index::App => b'A',
            Index::Object => b'O',
            Index::Commit => b'C',
            Index::Author => b'U',
            Index::Kind => b'K',
            Index::Time => b'T',
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
        }
    }

    /// The store schema that introduced this index (migration 0002 added kind and time).
    pub fn since_schema(self) -> u32 {
        match self {
            Index::Kind | Index::Time => 2,
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

pub fn author_term(email: &str) -> String {
    email.to_lowercase()
}

/// Every index key of one event in a store of `schema`, in index order.
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
                if let Some(o) = body.event.object() {
                    push(index, Term::Str(&object_term(o)));
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
            Index::Time => push(index, Term::Time(body.time.timestamp_micros())),
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
        assert_eq!(prefixes, b"ACUUKT".to_vec());
        assert!(keys.iter().all(|k| seq_of(k) == Some(258)));
        // Schema 1 has no kind/time index.
        assert_eq!(index_keys(&body(1), 1).len(), 4);
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
        assert_eq!(prefixes, b"AOCKT".to_vec());
        let mut agent = body(0); // AgentStarted without an App
        agent.app = None;
        assert_eq!(index_keys(&agent, 2).len(), 2);
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
        entries.push(("tombstone-key-258".into(), tombstone_key(258).to_vec()));
        crate::golden::check("keys", entries);
    }
}
