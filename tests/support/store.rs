//! Shared helpers for the store integration tests: filling real stores and raw sled access for
//! fault injection.
#![allow(dead_code)]

use reckon::event::samples;
use reckon::store::{EventStore, OpenOptions, SledStore};
use std::path::Path;

pub const APPS: u64 = 3;
pub const OBJECTS: u64 = 5;

/// Appends stream events `from..from+n` in batches of `batch`, storing their blobs; flushes.
pub fn fill(store: &mut SledStore, from: u64, n: u64, batch: u64) {
    let mut i = from;
    while i < from + n {
        let end = (i + batch).min(from + n);
        let mut drafts = Vec::new();
        for j in i..end {
            if let Some(b) = samples::stream_blob(j, APPS, OBJECTS) {
                store.put_blob(&b).unwrap();
            }
            drafts.push(samples::stream(j, APPS, OBJECTS));
        }
        store.append(drafts).unwrap();
        store.flush().unwrap();
        i = end;
    }
}

pub fn create(path: &Path) -> SledStore {
    SledStore::open(path, OpenOptions::create()).unwrap()
}

/// Opens the raw sled `events` tree of a closed store (fault injection).
pub fn raw_events(path: &Path) -> (sled::Db, sled::Tree) {
    let db = reckon::store::sled_engine::sled_config(path, 1 << 20)
        .open()
        .unwrap();
    let t = db.open_tree("events").unwrap();
    (db, t)
}

/// Drops the raw handles from [`raw_events`] and returns once sled has let go of the store's
/// file lock, so that the next open (here or in a `reckon` process) finds it free.
pub fn release_raw(path: &Path, db: sled::Db, tree: sled::Tree) {
    drop(tree);
    reckon::store::sled_engine::release(path, db).unwrap();
}

pub fn log_key(seq: u64) -> Vec<u8> {
    let mut k = vec![b'L'];
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Every file under `dir` with its bytes, for "untouched" checks.
pub fn snapshot_dir(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(snapshot_dir(&e.path()));
        } else {
            out.push((
                e.path().display().to_string(),
                std::fs::read(e.path()).unwrap(),
            ));
        }
    }
    out.sort();
    out
}

/// Rewrites (or, when `f` returns false, removes) record `seq` inside its log chunk: simulates a
/// damaged or tampered record below the store's API.
pub fn edit_record(t: &sled::Tree, seq: u64, f: impl FnOnce(&mut Vec<u8>) -> bool) {
    use reckon::store::keys;
    let (k, v) = t
        .range(log_key(0)..=log_key(seq))
        .next_back()
        .unwrap()
        .unwrap();
    let mut recs = keys::decode_chunk(&v).unwrap();
    let i = recs.iter().position(|(s, _)| *s == seq).unwrap();
    if !f(&mut recs[i].1) {
        recs.remove(i);
    }
    if recs.is_empty() {
        t.remove(k).unwrap();
    } else {
        t.insert(
            k,
            keys::encode_chunk(recs.iter().map(|(s, r)| (*s, &r[..]))),
        )
        .unwrap();
    }
}

pub fn record(t: &sled::Tree, seq: u64) -> Vec<u8> {
    let (_, v) = t
        .range(log_key(0)..=log_key(seq))
        .next_back()
        .unwrap()
        .unwrap();
    let recs = reckon::store::keys::decode_chunk(&v).unwrap();
    recs.into_iter().find(|(s, _)| *s == seq).unwrap().1
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// References computed from the raw log, for checking what the query layer reads from indexes
/// and projections.
pub mod oracle {
    use reckon::event::{ApplyAction, Envelope, Event};
    use reckon::query::{self, Blame, RevisionRow};
    use std::collections::{BTreeMap, BTreeSet};

    /// Each row of `rows` (an App's revisions) against `log` (the whole log, oldest first): the
    /// distinct objects its applies created, configured or pruned, and its CommitObserved's
    /// author and message summary.
    pub fn check_revisions(log: &[Envelope], app: &str, rows: &[RevisionRow]) {
        let mut changed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut commits = BTreeMap::new();
        for e in log.iter().filter(|e| e.body.app.as_deref() == Some(app)) {
            let (rev, object) = match &e.body.event {
                Event::ObjectApplied(a) if a.action != ApplyAction::Unchanged => {
                    (&a.revision, &a.object)
                }
                Event::ObjectPruned(p) => (&p.revision, &p.object),
                Event::CommitObserved(c) => {
                    commits.entry(c.sha.clone()).or_insert_with(|| c.clone());
                    continue;
                }
                _ => continue,
            };
            changed
                .entry(rev.clone())
                .or_default()
                .insert(object.identity());
        }
        for r in rows {
            let want = changed.get(&r.sha).map_or(0, |s| s.len() as u64);
            assert_eq!(r.objects_changed, want, "{app} {}: objects changed", r.sha);
            let c = commits.get(&r.sha);
            assert_eq!(
                r.author_email.as_deref(),
                c.map(|c| c.author.email.as_str()),
                "{app} {}: author",
                r.sha
            );
            assert_eq!(
                r.summary.as_deref(),
                c.and_then(|c| c.message.lines().next()),
                "{app} {}: summary",
                r.sha
            );
        }
    }

    /// `got` (what `query::blame` read) against the whole walk over `events` (every event of
    /// the object for its App, oldest first) with `current` (the manifest it last applied).
    pub fn check_blame(got: &Blame, events: &[Envelope], current: &serde_json::Value, what: &str) {
        let whole = query::blame_walk(events, current, None);
        let mine: Vec<_> = got
            .fields
            .iter()
            .map(|f| {
                let by = f.set_by.as_ref();
                let by = by.map(|c| (c.applied_seq, c.revision.clone()));
                (f.path.clone(), by, f.drifts.clone())
            })
            .collect();
        let reference: Vec<_> = whole
            .fields
            .iter()
            .map(|f| {
                let by = f.set_by.as_ref().map(|c| (c.0, c.2.clone()));
                (f.path.clone(), by, f.drifts.clone())
            })
            .collect();
        assert_eq!(mine, reference, "{what}");
        assert_eq!(got.object_drifts, whole.object_drifts, "{what}");
    }
}

/// The store's projections whole: every App's stored revisions read back into its table
/// (what folding the whole log gives; `store.projections()` holds the resident ones only).
pub fn whole(store: &SledStore) -> reckon::store::Projections {
    store.reader().complete(store.projections()).unwrap()
}

/// What folding the whole log of `store` from nothing gives, every revision resident.
pub fn folded(store: &SledStore) -> reckon::store::Projections {
    let reader = store.reader();
    let mut p =
        reckon::store::Projections::replay(Default::default(), reader.iter_from(1)).unwrap();
    p.stored.clear();
    p
}
