//! The object copies (store schema 4, `store::copies`) on real stores: pages by object read
//! from them answer what the log says, across open tails, a crash that loses the tails, a
//! compaction and a close; `store verify` finds copies that are missing or not the log's.

use crate::support::store as common;

use common::*;
use reckon::event::{Envelope, samples};
use reckon::store::copies;
use reckon::store::verify::{Problem, verify};
use reckon::store::{
    EventRead, OpenOptions, Query, Selector, SledStore, StoreError, retention::Policy,
};
use std::path::Path;

/// The events naming `o`, newest first, by a brute-force walk of the log.
fn by_walk(store: &impl EventRead, o: &reckon::event::ObjectRef) -> Vec<Envelope> {
    let mut all = store
        .query(&Query::new(Selector::All).limit(usize::MAX))
        .unwrap()
        .events;
    all.retain(|e| {
        e.body
            .event
            .objects()
            .iter()
            .any(|x| x.identity() == o.identity())
    });
    all
}

/// Every page of `o`'s history (pages of 30), newest first.
fn by_pages(store: &impl EventRead, o: &reckon::event::ObjectRef) -> Vec<Envelope> {
    let mut out = vec![];
    let mut cursor = None;
    loop {
        let page = store
            .query(
                &Query::new(Selector::Object(o.clone()))
                    .limit(30)
                    .after(cursor),
            )
            .unwrap();
        out.extend(page.events);
        match page.next {
            Some(n) => cursor = Some(n),
            None => return out,
        }
    }
}

fn objects() -> Vec<reckon::event::ObjectRef> {
    (0..APPS)
        .flat_map(|a| {
            (0..OBJECTS).map(move |k| {
                samples::object(
                    "apps",
                    "v1",
                    "Deployment",
                    Some(&format!("ns-{a}")),
                    &format!("svc-{k}"),
                )
            })
        })
        .collect()
}

fn check_pages(store: &impl EventRead) {
    for o in objects() {
        let expected = by_walk(store, &o);
        assert!(!expected.is_empty());
        assert_eq!(by_pages(store, &o), expected, "{}", o.identity());
    }
}

/// `(Mcopied, copies in blocks)` of a closed store, read raw.
fn copies_on_disk(path: &Path) -> (u64, u64) {
    // Retried: after a drop without close, sled lets go of its lock a moment later.
    let started = std::time::Instant::now();
    let db = loop {
        match reckon::store::sled_engine::sled_config(path, 1 << 20).open() {
            Err(_) if started.elapsed().as_secs() < 10 => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => break other.unwrap(),
        }
    };
    let t = db.open_tree("events").unwrap();
    let copied = t
        .get(copies::META_COPIED)
        .unwrap()
        .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap()))
        .unwrap_or(0);
    let mut n = 0;
    for item in t.scan_prefix([copies::PREFIX]) {
        let (_, v) = item.unwrap();
        n += reckon::store::keys::decode_chunk(&v).unwrap().len() as u64;
    }
    release_raw(path, db, t);
    (copied, n)
}

/// Object events of the sample stream among its first `n`.
fn object_events(store: &impl EventRead) -> u64 {
    objects()
        .iter()
        .map(|o| by_walk(store, o).len() as u64)
        .sum()
}

fn verify_ok(store: &SledStore) {
    let r = verify(&store.reader(), &mut |_| {}).unwrap();
    assert!(r.ok(), "{:?}", r.problems);
}

/// Opens `path` once sled has let go of it after a store was dropped without `close` (as after
/// a crash of the process: nothing of close's work was done).
fn open_after_drop(path: &Path) -> SledStore {
    let started = std::time::Instant::now();
    loop {
        match SledStore::open(path, OpenOptions::default()) {
            Err(StoreError::Locked { .. }) if started.elapsed().as_secs() < 10 => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other.unwrap(),
        }
    }
}

#[test]
fn object_pages_from_copies_match_the_log_across_a_crash_and_a_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = create(&path);
    // 15 objects, one event of each per 27: ~110 each, so full blocks and open tails.
    fill(&mut store, 0, 3000, 100);
    check_pages(&store);
    verify_ok(&store);
    // A crash: the open tails (in memory) are lost, Mcopied on disk is behind the head.
    drop(store);
    let (copied, in_blocks) = copies_on_disk(&path);
    assert!(
        copied < 3000,
        "the tails were not written: Mcopied {copied}"
    );
    assert!(in_blocks >= 15 * copies::BLOCK_EVENTS as u64);
    let mut store = open_after_drop(&path);
    check_pages(&store);
    verify_ok(&store);
    fill(&mut store, 3000, 1000, 100);
    check_pages(&store);
    let expected = object_events(&store);
    store.close().unwrap();
    // After a close every object event has exactly one copy, and Mcopied is the head.
    let (copied, in_blocks) = copies_on_disk(&path);
    assert_eq!((copied, in_blocks), (4000, expected));
    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    check_pages(&store);
    verify_ok(&store);
}

#[test]
fn compaction_takes_copies_out_with_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = create(&path);
    fill(&mut store, 0, 3000, 100);
    let c = store
        .compact(
            "app-0",
            &Policy {
                max_age: None,
                max_bytes: Some(20_000),
            },
            chrono::Utc::now(),
            None,
        )
        .unwrap()
        .expect("something to compact");
    assert!(c.removed > 500);
    check_pages(&store);
    verify_ok(&store);
    let expected = object_events(&store);
    store.close().unwrap();
    let (_, in_blocks) = copies_on_disk(&path);
    assert_eq!(
        in_blocks, expected,
        "the removed events' copies went with them"
    );
    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    check_pages(&store);
    verify_ok(&store);
}

/// A closed store with one fault injected into its copies, verified.
fn verify_after_copies_fault(fault: impl FnOnce(&sled::Tree)) -> Vec<Problem> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = create(&path);
    fill(&mut store, 0, 1000, 100);
    store.close().unwrap();
    let (db, t) = raw_events(&path);
    fault(&t);
    db.flush().unwrap();
    release_raw(&path, db, t);
    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    verify(&store.reader(), &mut |_| {}).unwrap().problems
}

fn first_block(t: &sled::Tree) -> (sled::IVec, Vec<(u64, Vec<u8>)>) {
    let (k, v) = t.scan_prefix([copies::PREFIX]).next().unwrap().unwrap();
    (k, reckon::store::keys::decode_chunk(&v).unwrap())
}

#[test]
fn verify_reports_missing_and_foreign_copies() {
    assert_eq!(verify_after_copies_fault(|_| {}), vec![]);
    // A block lost: fewer copies than the log implies.
    let p = verify_after_copies_fault(|t| {
        let (k, _) = first_block(t);
        t.remove(k).unwrap();
    });
    assert!(
        matches!(
            p.as_slice(),
            [Problem::IndexMismatch {
                index: "copies",
                ..
            }]
        ),
        "{p:?}"
    );
    // A copy replaced by another event's record (valid on its own, under the wrong seq).
    let p = verify_after_copies_fault(|t| {
        let (k, mut recs) = first_block(t);
        recs[0].1 = recs[1].1.clone();
        t.insert(
            k,
            reckon::store::keys::encode_chunk(recs.iter().map(|(s, r)| (*s, &r[..]))),
        )
        .unwrap();
    });
    assert!(
        p.iter().any(|p| matches!(
            p,
            Problem::CorruptIndexBlock {
                index: "copies",
                ..
            }
        )),
        "{p:?}"
    );
    // A copy of one object's event moved under another object's term: each copy is valid,
    // the sum says they are not the copies the log implies.
    let p = verify_after_copies_fault(|t| {
        let (k, v) = t.scan_prefix([copies::PREFIX]).next().unwrap().unwrap();
        let mut other = k.to_vec();
        other[1] ^= 0xff;
        t.remove(&k).unwrap();
        t.insert(other, v).unwrap();
    });
    assert!(
        matches!(
            p.as_slice(),
            [Problem::IndexMismatch {
                index: "copies",
                ..
            }]
        ),
        "{p:?}"
    );
}
