//! The engine's read phase: log chunks and their records, index and time-run scans, scattered
//! reads by several threads, blobs, and the projections rebuilt from the log. Readers are clones
//! of the sled trees, usable while the writer writes; how a query picks its scan is [`super::query`].

use super::super::keys;
use super::super::projection::{self, AppState, Projections, RevisionEntry};
use super::super::{EventRead, Order, Page, Query, Selector, SeqPage, StoreError, blob};
use super::format::META_SCHEMA;
use super::{SledStore, StoreReader};
use crate::event::{Digest, Envelope, Event, EventKind};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub(crate) type Records = Vec<(u64, Vec<u8>)>;

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
/// Reads of the `events` tree, counted so that what a query costs from a cold cache can be
/// checked by a test rather than only timed: every `seek` descends sled's tree from the root
/// (from a cold cache, a disk read per level not cached yet); every `value` is a key read
/// (neighbours often share a leaf, so this bounds the leaves a query touched).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    pub seeks: u64,
    pub values: u64,
}

impl Reads {
    /// The reads made since `earlier`.
    pub fn since(self, earlier: Reads) -> Reads {
        Reads {
            seeks: self.seeks - earlier.seeks,
            values: self.values - earlier.values,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct ReadCounter {
    seeks: AtomicU64,
    values: AtomicU64,
}

/// A range of the `events` tree whose keys read are counted.
pub(super) struct Counted {
    inner: sled::Iter,
    counter: Arc<ReadCounter>,
}

impl Counted {
    fn counted(&self, item: Option<KeyValue>) -> Option<KeyValue> {
        if item.is_some() {
            self.counter.values.fetch_add(1, Relaxed);
        }
        item
    }
}

type KeyValue = sled::Result<(sled::IVec, sled::IVec)>;

impl Iterator for Counted {
    type Item = KeyValue;
    fn next(&mut self) -> Option<KeyValue> {
        let item = self.inner.next();
        self.counted(item)
    }
}

impl DoubleEndedIterator for Counted {
    fn next_back(&mut self) -> Option<KeyValue> {
        let item = self.inner.next_back();
        self.counted(item)
    }
}

pub(super) type EnvIter<'a> = Box<dyn Iterator<Item = Result<Envelope, StoreError>> + 'a>;

impl EventRead for SledStore {
    fn get(&self, seq: u64) -> Result<Option<Envelope>, StoreError> {
        self.reader.get(seq)
    }
    fn get_many(&self, seqs: &[u64]) -> Result<Vec<Option<Envelope>>, StoreError> {
        self.reader.get_many(seqs)
    }
    fn postings(&self, q: &Query) -> Result<SeqPage, StoreError> {
        self.reader.postings(q)
    }
    fn query(&self, q: &Query) -> Result<Page, StoreError> {
        self.reader.query(q)
    }
    fn blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        self.reader.blob(digest)
    }
    fn stored_revisions(
        &self,
        app: &str,
        epoch: u64,
        prefix: &str,
    ) -> Result<Vec<(String, RevisionEntry)>, StoreError> {
        self.reader.stored_revisions_of(app, epoch, prefix)
    }
}

impl StoreReader {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The reads of `events` this reader and its clones made so far.
    pub fn reads(&self) -> Reads {
        Reads {
            seeks: self.reads.seeks.load(Relaxed),
            values: self.reads.values.load(Relaxed),
        }
    }

    /// `events.range`, counted ([`Reads`]).
    pub(super) fn tree_range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Counted {
        self.reads.seeks.fetch_add(1, Relaxed);
        Counted {
            inner: self.events.range(range),
            counter: self.reads.clone(),
        }
    }

    /// `events.get`, counted ([`Reads`]).
    pub(super) fn tree_get<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<Option<sled::IVec>> {
        self.reads.seeks.fetch_add(1, Relaxed);
        let v = self.events.get(key)?;
        if v.is_some() {
            self.reads.values.fetch_add(1, Relaxed);
        }
        Ok(v)
    }

    pub(super) fn err(&self, op: &'static str) -> impl Fn(sled::Error) -> StoreError + '_ {
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
    pub(super) fn chunk_value_for(
        &self,
        seq: u64,
    ) -> Result<Option<(sled::IVec, sled::IVec)>, StoreError> {
        // A chunk holds consecutive seqs and at most CHUNK_EVENTS of them, so its base is at
        // most that far below `seq`: walk that window forwards and keep the last chunk in it.
        // sled 0.34 searches from the root at every backwards step; this forward window halved
        // a scattered read (perf: the backwards seek was half of it). The greatest base in the
        // window is the greatest at or below `seq` overall; only an empty window needs the
        // backwards search (a gap in the log, or no chunk at all).
        let low = seq.saturating_sub(keys::CHUNK_EVENTS as u64 - 1);
        let mut found = None;
        for item in self.tree_range(keys::log_key(low)..=keys::log_key(seq)) {
            found = Some(item.map_err(self.err("reading the log"))?);
        }
        if found.is_some() {
            return Ok(found);
        }
        self.tree_range(keys::log_key(0)..=keys::log_key(seq))
            .next_back()
            .transpose()
            .map_err(self.err("reading the log"))
    }

    /// The newest live event.
    pub(crate) fn last_event(&self) -> Result<Option<Envelope>, StoreError> {
        let last = self
            .tree_range(keys::log_key(0)..=keys::log_key(u64::MAX))
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

    /// The stored hash of event `seq`, live or a retention tombstone; zero for seq 0 (what event
    /// 1 links to); `None` when the log has no such seq.
    pub fn hash_at(&self, seq: u64) -> Result<Option<Digest>, StoreError> {
        if seq == 0 {
            return Ok(Some(Digest::ZERO));
        }
        if let Some(env) = self.get(seq)? {
            return Ok(Some(env.hash));
        }
        let tomb = self
            .tree_get(keys::tombstone_key(seq))
            .map_err(self.err("reading a tombstone"))?;
        Ok(tomb
            .and_then(|v| v.get(..32).and_then(|h| <[u8; 32]>::try_from(h).ok()))
            .map(Digest))
    }

    /// The newest live sequence number (0 for an empty log).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        Ok(self.last_event()?.map(|e| e.body.seq).unwrap_or(0))
    }

    pub fn schema(&self) -> Result<u32, StoreError> {
        let v = self
            .tree_get(META_SCHEMA)
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
    pub(super) fn scan_log(&self, lo: u64, hi: u64, order: Order) -> EnvIter<'_> {
        // Start at the chunk holding `lo` (its base may be below `lo`).
        let start = match self
            .tree_range(keys::log_key(0)..=keys::log_key(lo))
            .next_back()
        {
            Some(Ok((k, _))) => k.to_vec(),
            _ => keys::log_key(lo).to_vec(),
        };
        let range = self.tree_range(start..=keys::log_key(hi).to_vec());
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

    /// Every live record `(seq, stored bytes)` from `from` on, in sequence order, unopened.
    pub(crate) fn records_from(
        &self,
        from: u64,
    ) -> impl Iterator<Item = Result<(u64, Vec<u8>), StoreError>> + '_ {
        let start = match self
            .tree_range(keys::log_key(0)..=keys::log_key(from))
            .next_back()
        {
            Some(Ok((k, _))) => k.to_vec(),
            _ => keys::log_key(from).to_vec(),
        };
        self.tree_range(start..=keys::log_key(u64::MAX).to_vec())
            .flat_map(move |item| -> Vec<Result<(u64, Vec<u8>), StoreError>> {
                match item
                    .map_err(self.err("reading the log"))
                    .and_then(|(k, v)| self.decode_chunk_at(&k, &v))
                {
                    Err(e) => vec![Err(e)],
                    Ok(recs) => recs
                        .into_iter()
                        .filter(|(s, _)| *s >= from)
                        .map(Ok)
                        .collect(),
                }
            })
    }

    /// Every event in sequence order, from `from` on.
    pub fn iter_from(&self, from: u64) -> impl Iterator<Item = Result<Envelope, StoreError>> + '_ {
        self.scan_log(from, u64::MAX, Order::OldestFirst)
    }

    /// Sequence numbers in the posting blocks of `term` within `[lo, hi]`, in `order`.
    pub(super) fn scan_postings(
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
        let start = match self.tree_range(key(0)..=key(lo)).next_back() {
            Some(Ok((k, _))) => k.to_vec(),
            _ => key(lo),
        };
        let blocks: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = match order {
            Order::OldestFirst => Box::new(self.tree_range(start..=key(hi))),
            // sled 0.34 walks backwards by searching from the root at every step (measured: a
            // newest-first page by object took twice as long as oldest-first). Blocks of one term
            // never overlap in seqs, so read windows of block keys forwards, newest window first,
            // doubling the window until a page is full or `lo`'s block is reached.
            Order::NewestFirst => {
                let floor = keys::seq_of(&start).unwrap_or(lo);
                // Windows start at the newest block at or below `hi` (one backwards seek).
                let mut end = match self.tree_range(key(0)..=key(hi)).next_back() {
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
                        buffered = self.tree_range(key(begin)..=key(e)).collect();
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
    pub(super) fn time_floor(&self, t: DateTime<Utc>) -> Result<Option<u64>, StoreError> {
        let lo = keys::time_key(i64::MIN, 0);
        let hi = keys::time_key(t.timestamp_micros(), 0);
        Ok(self
            .tree_range(lo..hi)
            .next_back()
            .transpose()
            .map_err(self.err("reading the time index"))?
            .and_then(|(k, _)| keys::seq_of(&k)))
    }

    /// The seq of the first time-run entry strictly after `t`: every event from it on is newer.
    pub(super) fn time_ceiling(&self, t: DateTime<Utc>) -> Result<Option<u64>, StoreError> {
        let Some(after) = t.timestamp_micros().checked_add(1) else {
            return Ok(None);
        };
        let lo = keys::time_key(after, 0);
        let hi = keys::time_key(i64::MAX, u64::MAX);
        Ok(self
            .tree_range(lo..=hi)
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
    pub(super) fn get_scattered(
        &self,
        seqs: &[u64],
    ) -> Result<Option<Vec<Option<Envelope>>>, StoreError> {
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
    pub(super) fn get_cached(
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

    fn postings(&self, q: &Query) -> Result<SeqPage, StoreError> {
        self.plan_postings(q)
    }

    fn stored_revisions(
        &self,
        app: &str,
        epoch: u64,
        prefix: &str,
    ) -> Result<Vec<(String, RevisionEntry)>, StoreError> {
        self.stored_revisions_of(app, epoch, prefix)
    }

    fn query(&self, q: &Query) -> Result<Page, StoreError> {
        self.plan_query(q)
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
    use super::super::super::EventStore;
    use super::super::OpenOptions;
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

    /// The counter sees every read of the tree, by any clone of the reader: one `get` of an
    /// event is one seek that lands on its chunk.
    #[test]
    fn reads_of_the_tree_are_counted_across_clones() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SledStore::open(dir.path().join("s"), OpenOptions::create()).unwrap();
        let drafts = (0..100).map(|j| samples::stream(j, 3, 5)).collect();
        store.append(drafts).unwrap();
        let reader = store.reader();
        let before = reader.reads();
        assert!(reader.get(50).unwrap().is_some());
        let one = Reads {
            seeks: 1,
            values: 1,
        };
        assert_eq!(reader.reads().since(before), one);
        let clone = reader.clone();
        assert!(clone.get(60).unwrap().is_some());
        assert_eq!(store.reader().reads().since(before).seeks, 2);
    }
}
