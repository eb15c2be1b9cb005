//! Owns `store verify`: walks the log, tombstones, indexes and blobs and reports the first broken
//! link, gap, corrupt record, dangling or missing index entry and missing or corrupt blob.
//!
//! One pass over the log in sequence order (log chunks and tombstones merged) checks each record's
//! own hash, its link to the predecessor and the sequence's continuity, and accumulates, per
//! index, the count and an order-independent sum of the index entries the log implies. One pass
//! over each index's posting blocks checks that every entry points to a live event and
//! accumulates the same sums: equal sums mean no entry is missing, extra or pointing at the wrong
//! event. The sparse time index is checked entry by entry: each points to a live event with that
//! time, and every change of time along the log has one. The object copies (schema 4) are
//! checked against the log the same way, with a keyed fingerprint.

use super::copies;
use super::keys::{self, Index};
use super::sled_engine::{HEAD_FILE, StoreReader};
use super::{StoreError, blob};
use crate::event::{Digest, Event};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    Gap {
        expected: u64,
        found: u64,
    },
    CorruptRecord {
        seq: u64,
        reason: String,
    },
    BrokenLink {
        seq: u64,
    },
    DanglingIndexEntry {
        index: &'static str,
        seq: u64,
    },
    CorruptIndexBlock {
        index: &'static str,
        reason: String,
    },
    TimeIndex {
        seq: u64,
        reason: &'static str,
    },
    IndexMismatch {
        index: &'static str,
        expected: u64,
        found: u64,
    },
    TombstoneUnvouched {
        seq: u64,
        reason: String,
    },
    MissingBlob {
        seq: u64,
        digest: Digest,
    },
    CorruptBlob {
        digest: Digest,
        reason: String,
    },
    Head {
        reason: String,
    },
    /// The log disagrees with a signed checkpoint of its head (or the checkpoint is not one).
    Checkpoint {
        seq: u64,
        reason: String,
    },
    /// The projections snapshot is not what the log folds to.
    Snapshot {
        reason: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Gap { expected, found } => {
                write!(f, "gap: expected seq {expected}, next present is {found}")
            }
            Problem::CorruptRecord { seq, reason } => {
                write!(f, "corrupt record at seq {seq}: {reason}")
            }
            Problem::BrokenLink { seq } => write!(
                f,
                "broken link at seq {seq}: its prev_hash is not the hash of seq {}",
                seq - 1
            ),
            Problem::DanglingIndexEntry { index, seq } => {
                write!(
                    f,
                    "{index} index entry points to seq {seq}, which is not in the log"
                )
            }
            Problem::CorruptIndexBlock { index, reason } => {
                write!(f, "{index} index block: {reason}")
            }
            Problem::TimeIndex { seq, reason } => write!(f, "time index at seq {seq}: {reason}"),
            Problem::IndexMismatch {
                index,
                expected,
                found,
            } => write!(
                f,
                "{index} index does not match the log: the log implies {expected} entries, the index has {found} (or the same count with different entries)"
            ),
            Problem::TombstoneUnvouched { seq, reason } => {
                write!(f, "tombstone at seq {seq}: {reason}")
            }
            Problem::MissingBlob { seq, digest } => {
                write!(f, "seq {seq} references blob {digest}, which is not stored")
            }
            Problem::CorruptBlob { digest, reason } => write!(f, "blob {digest}: {reason}"),
            Problem::Head { reason } => write!(f, "HEAD: {reason}"),
            Problem::Checkpoint { seq, reason } => write!(f, "checkpoint of seq {seq}: {reason}"),
            Problem::Snapshot { reason } => write!(f, "projections snapshot: {reason}"),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub events: u64,
    pub tombstones: u64,
    pub index_entries: u64,
    pub blobs: u64,
    /// Signed checkpoints the log was checked against.
    pub checkpoints: u64,
    pub last_seq: u64,
    /// The first problem of each kind, in the order found.
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn add(&mut self, p: Problem) {
        let same_kind = self
            .problems
            .iter()
            .any(|q| std::mem::discriminant(q) == std::mem::discriminant(&p));
        if !same_kind {
            self.problems.push(p);
        }
    }
}

/// Order-independent multiset fingerprint of keys (wrapping sum of a 128-bit mix per key).
#[derive(Default, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    count: u64,
    sum: u128,
}

impl Fingerprint {
    fn add(&mut self, key: &[u8]) {
        // splitmix64 over 8-byte words, twice with different seeds: fast and well mixed; this
        // guards against accidents (lost or misdirected entries), the chain guards the log.
        let mix = |seed: u64| {
            let mut h = seed ^ key.len() as u64;
            for chunk in key.chunks(8) {
                let mut w = [0u8; 8];
                w[..chunk.len()].copy_from_slice(chunk);
                h = h
                    .wrapping_add(u64::from_le_bytes(w))
                    .wrapping_add(0x9e37_79b9_7f4a_7c15);
                h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                h ^= h >> 31;
            }
            h
        };
        self.count += 1;
        self.sum = self
            .sum
            .wrapping_add(((mix(1) as u128) << 64) | mix(0x5eed) as u128);
    }
}

#[derive(Default)]
struct SeqSet(Vec<u64>);

impl SeqSet {
    fn insert(&mut self, seq: u64) {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << b;
    }

    fn contains(&self, seq: &u64) -> bool {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        self.0.get(w).is_some_and(|x| x & (1 << b) != 0)
    }
}

fn sled_err(path: &std::path::Path, op: &'static str) -> impl Fn(sled::Error) -> StoreError {
    let path = path.to_owned();
    move |e| StoreError::sled(&path, op, e)
}

/// Walks everything; `progress` is called with the number of records checked so far.
pub fn verify(reader: &StoreReader, progress: &mut dyn FnMut(u64)) -> Result<Report, StoreError> {
    verify_against(reader, &[], progress)
}

/// [`verify`], and the log's hash at each anchor's seq must be the anchor's hash. Anchors are
/// heads recorded outside the store (signed checkpoints whose signatures were checked, see
/// [`check_checkpoints`]): a history rewritten and re-chained after one was taken differs
/// there, though its own chain is whole.
pub fn verify_against(
    reader: &StoreReader,
    anchors: &[(u64, Digest)],
    progress: &mut dyn FnMut(u64),
) -> Result<Report, StoreError> {
    let path = reader.path().to_owned();
    let schema = reader.schema()?;
    let mut report = Report::default();
    // The sparse time index first: it is small (one entry per run of equal times).
    let time_entries = read_time_index(reader, &mut report)?;
    let mut walk = LogWalk::new(schema, time_entries);
    if schema >= copies::SINCE_SCHEMA {
        walk.copies = Some(CopiesWalk::new(reader.copied()?));
    }
    for (seq, hash) in anchors {
        walk.anchors.entry(*seq).or_default().push(*hash);
        report.checkpoints += 1;
    }
    walk.run(reader, &mut report, progress)?;
    for seq in walk.anchors.keys() {
        report.add(Problem::Checkpoint {
            seq: *seq,
            reason: format!(
                "the log ends at seq {}, before it: events were lost, or the store was replaced by an older copy",
                report.last_seq
            ),
        });
    }
    for seq in walk.time_entries.keys() {
        if !walk.live.contains(seq) {
            report.add(Problem::DanglingIndexEntry {
                index: "time",
                seq: *seq,
            });
        }
    }
    check_vouchers(walk.vouched, &walk.summaries, &mut report);
    let mut checked = walk.checked;
    for (index, expected) in &walk.expected_fp {
        check_index(
            reader,
            *index,
            expected,
            &walk.live,
            &mut report,
            &mut checked,
            progress,
        )?;
    }
    if let Some(expected) = walk.copies.take() {
        check_copies(reader, expected, &walk.live, &mut report, &mut checked)?;
    }
    check_blobs(reader, &walk.blob_refs, &mut report)?;
    check_head(&path, &mut report)?;
    progress(checked);
    Ok(report)
}

/// The time index's entries: seq -> time (µs).
fn read_time_index(
    reader: &StoreReader,
    report: &mut Report,
) -> Result<BTreeMap<u64, i64>, StoreError> {
    let mut time_entries = BTreeMap::new();
    for item in reader.events.scan_prefix([Index::Time.prefix()]) {
        let (k, _) = item.map_err(sled_err(reader.path(), "scanning the time index"))?;
        if k.len() != 17 {
            report.add(Problem::CorruptIndexBlock {
                index: "time",
                reason: format!("key of {} bytes", k.len()),
            });
            continue;
        }
        let micros = (u64::from_be_bytes(k[1..9].try_into().expect("8")) ^ (1 << 63)) as i64;
        time_entries.insert(keys::seq_of(&k).unwrap_or(0), micros);
        report.index_entries += 1;
    }
    Ok(time_entries)
}

/// The pass over the log in sequence order, log records merged with tombstones, and what it
/// gathers for the checks after it.
struct LogWalk {
    schema: u32,
    timed: bool,
    time_entries: BTreeMap<u64, i64>,
    /// Per index, the entries the log implies.
    expected_fp: BTreeMap<Index, Fingerprint>,
    /// One bit per seq (1.25 MB per 10M events), not a hash set (hundreds of MB).
    live: SeqSet,
    blob_refs: Vec<(u64, Digest)>,
    /// RetentionCompacted seq -> recorded tombstone digest; voucher -> running digest.
    summaries: BTreeMap<u64, Digest>,
    vouched: BTreeMap<u64, Sha256>,
    expected_seq: u64,
    prev: Option<Digest>,
    /// The time of the previous item if it was a live event; `Some(None)` at the start.
    prev_time: Option<Option<i64>>,
    checked: u64,
    /// Heads recorded outside the store, by seq; each is removed once its seq is reached.
    anchors: BTreeMap<u64, Vec<Digest>>,
    /// The object copies the log implies (schema 4).
    copies: Option<CopiesWalk>,
}

/// The object copies (`store::copies`) the log implies: at or below `Mcopied` exactly these,
/// as a keyed fingerprint; above it (the open tails a crash left, at most ~a horizon of events)
/// each one that exists must match, so they are kept whole.
struct CopiesWalk {
    copied: u64,
    expected: KeyedFingerprint,
    above: HashSet<Vec<u8>>,
}

impl CopiesWalk {
    fn new(copied: u64) -> CopiesWalk {
        CopiesWalk {
            copied,
            expected: KeyedFingerprint::new(),
            above: HashSet::new(),
        }
    }

    fn record(&mut self, body: &crate::event::EnvelopeBody, hash: &Digest) {
        for term in copies::terms_of(body) {
            let entry = copy_entry(&term, body.seq, hash);
            if body.seq <= self.copied {
                self.expected.add(&entry);
            } else {
                self.above.insert(entry);
            }
        }
    }
}

/// What a copy is checked by: its term, its seq and its record's hash.
fn copy_entry(term: &[u8], seq: u64, hash: &Digest) -> Vec<u8> {
    let mut e = Vec::with_capacity(term.len() + 40);
    e.extend_from_slice(term);
    e.extend_from_slice(&seq.to_be_bytes());
    e.extend_from_slice(&hash.0);
    e
}

/// An order-independent fingerprint keyed with a random key per run: a copy edited to match
/// the sum must know the key (copies are served instead of the log, so this one is not only a
/// guard against accidents like [`Fingerprint`]).
#[derive(PartialEq, Eq)]
struct KeyedFingerprint {
    key: [u8; 32],
    count: u64,
    sum: u128,
}

impl KeyedFingerprint {
    fn new() -> KeyedFingerprint {
        KeyedFingerprint {
            key: rand::random(),
            count: 0,
            sum: 0,
        }
    }

    fn with_key_of(other: &KeyedFingerprint) -> KeyedFingerprint {
        KeyedFingerprint {
            key: other.key,
            count: 0,
            sum: 0,
        }
    }

    fn add(&mut self, entry: &[u8]) {
        let h = Sha256::new()
            .chain_update(self.key)
            .chain_update(entry)
            .finalize();
        self.count += 1;
        self.sum = self
            .sum
            .wrapping_add(u128::from_le_bytes(h[..16].try_into().expect("16 of 32")));
    }
}

type Rec = Result<(u64, Vec<u8>), (u64, String)>;

impl LogWalk {
    fn new(schema: u32, time_entries: BTreeMap<u64, i64>) -> LogWalk {
        LogWalk {
            schema,
            timed: schema >= Index::Time.since_schema(),
            time_entries,
            expected_fp: Index::for_schema(schema)
                .filter(|i| *i != Index::Time)
                .map(|i| (i, Fingerprint::default()))
                .collect(),
            live: SeqSet::default(),
            blob_refs: Vec::new(),
            summaries: BTreeMap::new(),
            vouched: BTreeMap::new(),
            expected_seq: 1,
            prev: Some(Digest::ZERO),
            prev_time: Some(None),
            checked: 0,
            anchors: BTreeMap::new(),
            copies: None,
        }
    }

    fn run(
        &mut self,
        reader: &StoreReader,
        report: &mut Report,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), StoreError> {
        let mut log = reader
            .events
            .range(keys::log_key(0)..=keys::log_key(u64::MAX))
            .flat_map(|item| -> Vec<Rec> {
                match item {
                    Err(e) => vec![Err((0, format!("sled: {e}")))],
                    Ok((k, v)) => {
                        let base = keys::seq_of(&k).unwrap_or(0);
                        match keys::decode_chunk(&v) {
                            Ok(recs) => recs.into_iter().map(Ok).collect(),
                            Err(reason) => vec![Err((base, reason))],
                        }
                    }
                }
            })
            .peekable();
        let mut tombs = reader
            .events
            .range(keys::tombstone_key(0)..=keys::tombstone_key(u64::MAX))
            .peekable();
        loop {
            let next_log = log.peek().map(|r| match r {
                Ok((s, _)) => *s,
                Err((s, _)) => *s,
            });
            let next_tomb = tombs.peek().map(|r| {
                r.as_ref()
                    .map(|(k, _)| keys::seq_of(k).unwrap_or(0))
                    .unwrap_or(0)
            });
            let take_log = match (next_log, next_tomb) {
                (None, None) => break,
                (Some(l), Some(t)) => l <= t,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            let (seq, hash, time) = if take_log {
                self.record(reader, log.next().expect("peeked"), report)
            } else {
                let (k, v) = tombs
                    .next()
                    .expect("peeked")
                    .map_err(sled_err(reader.path(), "scanning tombstones"))?;
                self.tombstone(&k, &v, report)
            };
            self.advance(seq, hash, time, report, progress);
        }
        Ok(())
    }

    /// One log record: its own hash, its link, its index entries, its time-run entry.
    fn record(
        &mut self,
        reader: &StoreReader,
        rec: Rec,
        report: &mut Report,
    ) -> (u64, Option<Digest>, Option<i64>) {
        let (seq, rec) = match rec {
            Err((seq, reason)) => {
                report.add(Problem::CorruptRecord { seq, reason });
                return (seq, None, None);
            }
            Ok(r) => r,
        };
        report.events += 1;
        let env = match reader.open_record(seq, &rec) {
            Err(e) => {
                report.add(Problem::CorruptRecord {
                    seq,
                    reason: e.to_string(),
                });
                return (seq, None, None);
            }
            Ok(env) => env,
        };
        if seq == self.expected_seq && self.prev.is_some_and(|p| p != env.body.prev_hash) {
            report.add(Problem::BrokenLink { seq });
        }
        self.live.insert(seq);
        if let Some(copies) = &mut self.copies {
            copies.record(&env.body, &env.hash);
        }
        for key in keys::index_keys(&env.body, self.schema) {
            if let Some(i) = Index::ALL.iter().find(|i| i.prefix() == key[0]) {
                self.expected_fp.entry(*i).or_default().add(&key);
            }
        }
        let t = env.body.time.timestamp_micros();
        if self.timed {
            let run_starts = matches!(self.prev_time, Some(p) if p != Some(t));
            match self.time_entries.get(&seq) {
                Some(&et) if et != t => report.add(Problem::TimeIndex {
                    seq,
                    reason: "the entry's time is not the event's",
                }),
                None if run_starts => report.add(Problem::TimeIndex {
                    seq,
                    reason: "the event starts a run of a new time but has no entry",
                }),
                _ => {}
            }
        }
        match &env.body.event {
            Event::RenderSucceeded(r) => self.blob_refs.push((seq, r.digest)),
            Event::RetentionCompacted(c) => {
                self.summaries.insert(seq, c.tombstones_digest);
            }
            _ => {}
        }
        (seq, Some(env.hash), Some(t))
    }

    /// One tombstone: the hash it stands for, added to its voucher's running digest.
    fn tombstone(
        &mut self,
        k: &[u8],
        v: &[u8],
        report: &mut Report,
    ) -> (u64, Option<Digest>, Option<i64>) {
        let seq = keys::seq_of(k).unwrap_or(0);
        report.tombstones += 1;
        if v.len() != 40 {
            report.add(Problem::TombstoneUnvouched {
                seq,
                reason: format!("{} bytes, expected 40", v.len()),
            });
            return (seq, None, None);
        }
        let hash = Digest(v[..32].try_into().expect("32 bytes"));
        let voucher = u64::from_be_bytes(v[32..].try_into().expect("8 bytes"));
        let h = self.vouched.entry(voucher).or_default();
        h.update(seq.to_be_bytes());
        h.update(hash.0);
        (seq, Some(hash), None)
    }

    /// The sequence's continuity, after each item.
    fn advance(
        &mut self,
        seq: u64,
        hash: Option<Digest>,
        time: Option<i64>,
        report: &mut Report,
        progress: &mut dyn FnMut(u64),
    ) {
        if seq != self.expected_seq {
            report.add(Problem::Gap {
                expected: self.expected_seq,
                found: seq,
            });
        }
        if let Some(expected) = self.anchors.remove(&seq) {
            for want in expected {
                let reason = match hash {
                    Some(h) if h == want => continue,
                    Some(h) => format!(
                        "the log's hash there is {h}, the signed checkpoint says {want}: the history up to seq {seq} was rewritten"
                    ),
                    None => "the record there is unreadable".to_string(),
                };
                report.add(Problem::Checkpoint { seq, reason });
            }
        }
        self.expected_seq = seq + 1;
        self.prev = hash;
        self.prev_time = time.map(Some);
        report.last_seq = seq;
        self.checked += 1;
        if self.checked.is_multiple_of(10_000) {
            progress(self.checked);
        }
    }
}

/// Each voucher's tombstones against the digest its RetentionCompacted event recorded.
fn check_vouchers(
    vouched: BTreeMap<u64, Sha256>,
    summaries: &BTreeMap<u64, Digest>,
    report: &mut Report,
) {
    for (voucher, hasher) in vouched {
        let got = Digest(hasher.finalize().into());
        match summaries.get(&voucher) {
            None => report.add(Problem::TombstoneUnvouched {
                seq: voucher,
                reason: "vouched for by a seq that is not a RetentionCompacted event".into(),
            }),
            Some(d) if *d != got => report.add(Problem::TombstoneUnvouched {
                seq: voucher,
                reason: "the tombstones do not match the summary's digest".into(),
            }),
            Some(_) => {}
        }
    }
}

/// One index's posting blocks: every entry points to a live event, and together they sum to
/// what the log implies.
fn check_index(
    reader: &StoreReader,
    index: Index,
    expected: &Fingerprint,
    live: &SeqSet,
    report: &mut Report,
    checked: &mut u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(), StoreError> {
    let mut found = Fingerprint::default();
    for item in reader.events.scan_prefix([index.prefix()]) {
        let (k, v) = item.map_err(sled_err(reader.path(), "scanning an index"))?;
        let seqs = match keys::decode_postings(&k, &v) {
            Ok(s) => s,
            Err(reason) => {
                report.add(Problem::CorruptIndexBlock {
                    index: index.name(),
                    reason,
                });
                continue;
            }
        };
        let mut entry = k[..k.len() - 8].to_vec();
        let term_len = entry.len();
        for seq in seqs {
            if !live.contains(&seq) {
                report.add(Problem::DanglingIndexEntry {
                    index: index.name(),
                    seq,
                });
            }
            entry.truncate(term_len);
            entry.extend_from_slice(&seq.to_be_bytes());
            found.add(&entry);
            report.index_entries += 1;
            *checked += 1;
            if checked.is_multiple_of(100_000) {
                progress(*checked);
            }
        }
    }
    if found != *expected {
        report.add(Problem::IndexMismatch {
            index: index.name(),
            expected: expected.count,
            found: found.count,
        });
    }
    Ok(())
}

/// The object copies' blocks: each decodes, is keyed by its first record and ascending, each
/// copy opens (its own hash holds) and is one the log implies, and together they are exactly
/// the copies the log implies up to `Mcopied`.
fn check_copies(
    reader: &StoreReader,
    mut walk: CopiesWalk,
    live: &SeqSet,
    report: &mut Report,
    checked: &mut u64,
) -> Result<(), StoreError> {
    let mut found = KeyedFingerprint::with_key_of(&walk.expected);
    let bad = |reason: String| Problem::CorruptIndexBlock {
        index: "copies",
        reason,
    };
    for item in reader.events.scan_prefix([copies::PREFIX]) {
        let (k, v) = item.map_err(sled_err(reader.path(), "scanning object copies"))?;
        let recs = match (k.len(), keys::decode_chunk(&v)) {
            (17, Ok(recs)) => recs,
            (17, Err(reason)) => {
                report.add(bad(reason));
                continue;
            }
            (len, _) => {
                report.add(bad(format!("key of {len} bytes")));
                continue;
            }
        };
        let first = keys::seq_of(&k).unwrap_or(0);
        if recs.first().map(|r| r.0) != Some(first) || recs.windows(2).any(|w| w[0].0 >= w[1].0) {
            report.add(bad(format!(
                "the block of seq {first} does not start with it or is not in ascending order"
            )));
        }
        for (seq, rec) in recs {
            report.index_entries += 1;
            *checked += 1;
            if !live.contains(&seq) {
                report.add(Problem::DanglingIndexEntry {
                    index: "copies",
                    seq,
                });
                continue;
            }
            let env = match reader.open_record(seq, &rec) {
                Ok(env) => env,
                Err(e) => {
                    report.add(bad(format!("copy of seq {seq}: {e}")));
                    continue;
                }
            };
            let entry = copy_entry(&k[..9], seq, &env.hash);
            if seq <= walk.copied {
                found.add(&entry);
            } else if !walk.above.remove(&entry) {
                report.add(bad(format!(
                    "the copy of seq {seq} is not the log's event or not of this object"
                )));
            }
        }
    }
    if found != walk.expected {
        report.add(Problem::IndexMismatch {
            index: "copies",
            expected: walk.expected.count,
            found: found.count,
        });
    }
    Ok(())
}

/// Every blob decompresses to its address; every recorded render's blob is present.
fn check_blobs(
    reader: &StoreReader,
    blob_refs: &[(u64, Digest)],
    report: &mut Report,
) -> Result<(), StoreError> {
    for item in reader.blobs.iter() {
        let (k, v) = item.map_err(sled_err(reader.path(), "scanning blobs"))?;
        report.blobs += 1;
        let digest = match <[u8; 32]>::try_from(k.as_ref()) {
            Ok(d) => Digest(d),
            Err(_) => {
                report.add(Problem::CorruptBlob {
                    digest: Digest::ZERO,
                    reason: format!("key of {} bytes", k.len()),
                });
                continue;
            }
        };
        if let Err(e) = blob::decompress(&digest, &v) {
            report.add(Problem::CorruptBlob {
                digest,
                reason: e.to_string(),
            });
        }
    }
    for (seq, digest) in blob_refs {
        let present = reader
            .blobs
            .contains_key(digest.0)
            .map_err(sled_err(reader.path(), "looking up a blob"))?;
        if !present {
            report.add(Problem::MissingBlob {
                seq: *seq,
                digest: *digest,
            });
        }
    }
    Ok(())
}

/// `HEAD` must not record a flushed seq beyond the log's end.
fn check_head(path: &std::path::Path, report: &mut Report) -> Result<(), StoreError> {
    match std::fs::read_to_string(path.join(HEAD_FILE)) {
        Ok(text) => {
            let seq = text
                .lines()
                .find_map(|l| l.strip_prefix("seq "))
                .and_then(|s| s.trim().parse::<u64>().ok());
            match seq {
                Some(s) if s > report.last_seq => report.add(Problem::Head {
                    reason: format!(
                        "records seq {s} as flushed but the log ends at {}: events were lost",
                        report.last_seq
                    ),
                }),
                Some(_) => {}
                None => report.add(Problem::Head {
                    reason: "unparsable".into(),
                }),
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(path, "reading HEAD", e)),
    }
}

/// The anchors of checkpoints that `key` signed; each one it did not sign is a problem (a
/// forged or altered line proves nothing, and must not pass silently).
pub fn check_checkpoints(
    checkpoints: &[super::checkpoint::Checkpoint],
    key: &ed25519_dalek::VerifyingKey,
    report: &mut Report,
) -> Vec<(u64, Digest)> {
    let mut anchors = Vec::new();
    for cp in checkpoints {
        match cp.verify(key) {
            Ok(()) => anchors.push((cp.seq, cp.hash)),
            Err(reason) => report.add(Problem::Checkpoint {
                seq: cp.seq,
                reason,
            }),
        }
    }
    anchors
}

/// The projections the store restored on open (its snapshot plus the log after it) against
/// the projections the whole log folds to: the snapshot supplies the inventory that drives
/// pruning and is not covered by the chain, so a snapshot edited on disk must not pass. Also
/// reports a snapshot discarded on open because it was made from another history.
pub fn check_projections(store: &super::SledStore, report: &mut Report) -> Result<(), StoreError> {
    if let Some(reason) = &store.snapshot_discarded {
        report.add(Problem::Snapshot {
            reason: reason.clone(),
        });
    }
    // Compared whole: the revisions kept in the store are part of the restored state, and
    // which ones are (and their epochs) is how it is kept, not what it is.
    let mut rebuilt = store.reader.rebuild_projections(&mut |_| {})?;
    rebuilt.stored.clear();
    let restored = store.reader.complete(&store.proj)?;
    if let Some(reason) = projection_difference(&restored, &rebuilt) {
        report.add(Problem::Snapshot { reason });
    }
    Ok(())
}

/// The first difference between restored and rebuilt projections, said for an operator.
fn projection_difference(
    restored: &super::Projections,
    rebuilt: &super::Projections,
) -> Option<String> {
    if restored == rebuilt {
        return None;
    }
    if restored.covered_seq != rebuilt.covered_seq {
        return Some(format!(
            "it covers seq {}, the log folds to seq {}",
            restored.covered_seq, rebuilt.covered_seq
        ));
    }
    let apps = restored.apps.keys().chain(rebuilt.apps.keys());
    for app in apps {
        let (a, b) = (restored.apps.get(app), rebuilt.apps.get(app));
        if a == b {
            continue;
        }
        let Some((a, b)) = a.zip(b) else {
            return Some(format!(
                "App {app} is in {} only",
                if a.is_some() {
                    "the snapshot"
                } else {
                    "the log"
                }
            ));
        };
        let what = if a.inventory != b.inventory {
            let only = |x: &super::projection::AppState, y: &super::projection::AppState| {
                x.inventory
                    .keys()
                    .filter(|k| !y.inventory.contains_key(*k))
                    .cloned()
                    .collect::<Vec<_>>()
            };
            format!(
                "its inventory differs (objects only in the snapshot: {:?}; only in the log: {:?}; a prune would act on the snapshot's)",
                only(a, b),
                only(b, a)
            )
        } else if a.revisions != b.revisions {
            "its revision table differs".to_string()
        } else if a.intent != b.intent {
            "its intent differs".to_string()
        } else {
            "its state differs".to_string()
        };
        return Some(format!(
            "App {app}: {what} from what the log folds to; `reckon store rebuild` replaces it"
        ));
    }
    let names = restored.status.keys().chain(rebuilt.status.keys());
    for app in names {
        if restored.status.get(app) != rebuilt.status.get(app) {
            return Some(format!(
                "App {app}: its status (last sync, health, open drift, failures) differs from what the log folds to; `reckon store rebuild` replaces it"
            ));
        }
    }
    Some("it differs from what the log folds to".into())
}
