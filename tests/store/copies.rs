//! The object copies (store schema 4, `store::copies`) on real stores: pages by object read
//! from them answer what the log says, across open tails, a crash that loses the tails, a
//! compaction and a close, and over cursors, orders, limits and time ranges across block
//! boundaries, `Mcopied` and a colliding term; a page of 100 reads its blocks and no postings
//! (counted reads); `store verify` finds copies that are missing or not the log's.

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

/// `o`'s events in `log` (every event, oldest first): `(seq, time)`, by brute force.
fn history_of(
    log: &[Envelope],
    o: &reckon::event::ObjectRef,
) -> Vec<(u64, chrono::DateTime<chrono::Utc>)> {
    log.iter()
        .filter(|e| {
            e.body
                .event
                .objects()
                .iter()
                .any(|x| x.identity() == o.identity())
        })
        .map(|e| (e.body.seq, e.body.time))
        .collect()
}

/// The page `q` (a page by object) must be, from the object's `history` (oldest first): its
/// events after the cursor in scan order, within the time range, at most `limit`; a full page
/// continues after its last event. `(seqs, next)`.
fn expected_page(
    history: &[(u64, chrono::DateTime<chrono::Utc>)],
    q: &Query,
) -> (Vec<u64>, Option<u64>) {
    let newest_first = q.order == reckon::store::Order::NewestFirst;
    let mut seqs: Vec<u64> = history
        .iter()
        .filter(|(seq, time)| {
            q.cursor
                .is_none_or(|c| if newest_first { *seq < c } else { *seq > c })
                && q.since.is_none_or(|t| *time >= t)
                && q.until.is_none_or(|t| *time <= t)
        })
        .map(|(seq, _)| *seq)
        .collect();
    if newest_first {
        seqs.reverse();
    }
    seqs.truncate(q.limit);
    let next = (q.limit > 0 && seqs.len() == q.limit).then(|| *seqs.last().unwrap());
    (seqs, next)
}

/// Every page by `o` over a matrix of cursors (around the object's block boundaries, around
/// `copied`, and spread over the log), orders, limits and time ranges answers what the log
/// says.
fn check_page_matrix(store: &SledStore, o: &reckon::event::ObjectRef, copied: u64) {
    let log = store
        .query(&Query::new(Selector::All).oldest_first().limit(usize::MAX))
        .unwrap()
        .events;
    let head = log.last().unwrap().body.seq;
    let history = history_of(&log, o);
    let mut cursors: Vec<Option<u64>> = vec![None, Some(0), Some(1), Some(head), Some(head + 1)];
    for at in [63, 64, 65, 128, 150] {
        if let Some((s, _)) = history.get(at) {
            cursors.extend([Some(s - 1), Some(*s), Some(s + 1)]);
        }
    }
    cursors.extend([
        Some(copied.saturating_sub(1)),
        Some(copied),
        Some(copied + 1),
    ]);
    cursors.extend((1..head).step_by(1201).map(Some));
    // A time range from the times of two events a third and two thirds into the log.
    let t = |i: usize| log[i].body.time;
    let ranges = [
        (None, None),
        (Some(t(log.len() / 3)), Some(t(2 * log.len() / 3))),
    ];
    for cursor in cursors {
        for newest_first in [true, false] {
            for limit in [1, 30, 100, 250] {
                for (since, until) in ranges {
                    let mut q = Query::new(Selector::Object(o.clone()))
                        .limit(limit)
                        .after(cursor)
                        .between(since, until);
                    if !newest_first {
                        q = q.oldest_first();
                    }
                    let page = store.query(&q).unwrap();
                    let got: Vec<u64> = page.events.iter().map(|e| e.body.seq).collect();
                    assert_eq!(
                        (got, page.next),
                        expected_page(&history, &q),
                        "{} cursor {cursor:?} newest first {newest_first} limit {limit} \
                         range {since:?}..{until:?} (Mcopied {copied})",
                        o.identity()
                    );
                }
            }
        }
    }
}

fn opened(path: &Path, pages_from_postings: bool) -> SledStore {
    SledStore::open(
        path,
        OpenOptions {
            pages_from_postings,
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn pages_from_blocks_match_the_log_across_blocks_mcopied_cursors_and_time_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = create(&path);
    // ~270 events per object: four full blocks each and open tails, Mcopied inside every
    // object's history.
    fill(&mut store, 0, 7500, 100);
    let copied = store.reader().copied().unwrap();
    assert!((1000..7000).contains(&copied), "Mcopied {copied}");
    let some = &objects()[..2];
    // The object whose open tail starts right after Mcopied: its newest events are in no block.
    let tail = store.get(copied + 1).unwrap().unwrap();
    let tail_object = tail.body.event.objects()[0].clone();
    for o in some.iter().chain([&tail_object]) {
        check_page_matrix(&store, o, copied);
    }
    // Closed: everything is copied; then the path through the postings alone, the same.
    store.close().unwrap();
    for pages_from_postings in [false, true] {
        let store = opened(&path, pages_from_postings);
        let copied = store.reader().copied().unwrap();
        assert_eq!(copied, 7500);
        for o in some {
            check_page_matrix(&store, o, copied);
        }
        store.close().unwrap();
    }
}

/// The sled reads of one page of 100 by object, newest first, from `cursor`.
fn reads_of_page(
    store: &SledStore,
    o: &reckon::event::ObjectRef,
    cursor: Option<u64>,
) -> reckon::store::sled_engine::Reads {
    let reader = store.reader();
    let before = reader.reads();
    let page = reader
        .query(
            &Query::new(Selector::Object(o.clone()))
                .limit(100)
                .after(cursor),
        )
        .unwrap();
    assert_eq!(page.events.len(), 100);
    reader.reads().since(before)
}

#[test]
fn a_page_of_100_by_object_reads_its_blocks_and_no_postings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = create(&path);
    fill(&mut store, 0, 7500, 100);
    store.close().unwrap();
    let o = &objects()[4];
    let store = opened(&path, false);
    let all = by_walk(&store, o);
    assert!(all.len() >= 250, "{} events", all.len());
    // From a cursor (below Mcopied, the head here): one seek, and the two or three blocks
    // that hold 100 consecutive events of the object.
    let cursor = Some(all[120].body.seq);
    let new = reads_of_page(&store, o, cursor);
    assert_eq!(new.seeks, 1, "{new:?}");
    assert!(new.values <= 3, "{new:?}");
    // From the top: the same, and the (empty) postings above Mcopied.
    let top = reads_of_page(&store, o, None);
    assert!(top.values <= 3 + 3, "{top:?}");
    store.close().unwrap();
    // The same pages through the postings first, as before: more of both.
    let store = opened(&path, true);
    let old = reads_of_page(&store, o, cursor);
    assert!(
        old.seeks > new.seeks && old.values > new.values,
        "{old:?} vs {new:?}"
    );
    let old_top = reads_of_page(&store, o, None);
    assert!(old_top.values > top.values, "{old_top:?} vs {top:?}");
    store.close().unwrap();
}

/// Two objects whose h64 collide share a term, so one term's blocks hold both objects'
/// events, interleaved. A collision of 8 bytes of SHA-256 cannot be found for a test: one is
/// made by merging object B's copies into object A's blocks, as the writer would have written
/// them had the two terms been equal. A's pages must still hold A's events only.
#[test]
fn pages_from_blocks_skip_a_colliding_objects_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = create(&path);
    fill(&mut store, 0, 4000, 100);
    store.close().unwrap();
    let all = objects();
    let (a, b) = (&all[0], &all[1]);
    let term = |o: &reckon::event::ObjectRef| copies::term(&reckon::store::keys::object_term(o));
    let (db, t) = raw_events(&path);
    let mut merged: Vec<(u64, Vec<u8>)> = vec![];
    for o in [a, b] {
        for item in t.scan_prefix(term(o)) {
            let (k, v) = item.unwrap();
            merged.extend(reckon::store::keys::decode_chunk(&v).unwrap());
            if std::ptr::eq(o, a) {
                t.remove(k).unwrap();
            }
        }
    }
    merged.sort_by_key(|(s, _)| *s);
    for records in merged.chunks(copies::BLOCK_EVENTS) {
        let block = copies::Block {
            term: term(a),
            records: records.to_vec(),
        };
        t.insert(&block.key()[..], block.value()).unwrap();
    }
    release_raw(&path, db, t);
    let store = opened(&path, false);
    check_page_matrix(&store, a, 4000);
    check_page_matrix(&store, b, 4000);
    store.close().unwrap();
}
