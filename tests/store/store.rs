//! Store behaviour on real sled stores in temp dirs: queries against a brute-force oracle,
//! reopen and projections, verify under injected faults, retention, export/import, bad input.

use crate::support::store as common;

use common::*;
use reckon::event::{Digest, Envelope, EnvelopeBody, Event, EventKind, samples};
use reckon::store::verify::{Problem, verify};
use reckon::store::{
    EventRead, EventStore, OpenOptions, Order, Query, STORE_SCHEMA, Selector, SledStore,
    StoreError, exchange, retention::Policy,
};

fn all(store: &impl EventRead) -> Vec<Envelope> {
    store
        .query(&Query::new(Selector::All).oldest_first().limit(usize::MAX))
        .unwrap()
        .events
}

fn paginate(store: &impl EventRead, q: Query) -> Vec<u64> {
    let mut seqs = vec![];
    let mut cursor = None;
    loop {
        let page = store.query(&q.clone().after(cursor)).unwrap();
        assert!(page.events.len() <= q.limit);
        seqs.extend(page.events.iter().map(|e| e.body.seq));
        match page.next {
            Some(n) => cursor = Some(n),
            None => return seqs,
        }
    }
}

#[test]
fn queries_match_a_brute_force_filter() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = create(&dir.path().join("s"));
    // Two batches with a pause, so the time range below splits them.
    fill(&mut store, 0, 1200, 100);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let split_time =
        store.get(1200).unwrap().unwrap().body.time + chrono::Duration::microseconds(1);
    fill(&mut store, 1200, 800, 100);
    let events = all(&store);
    assert_eq!(events.len(), 2000);
    let obj = samples::object("apps", "v1", "Deployment", Some("ns-1"), "svc-2");
    let some_sha = samples::sha(4);
    type Predicate = Box<dyn Fn(&EnvelopeBody) -> bool>;
    let cases: Vec<(Selector, Predicate)> = vec![
        (Selector::All, Box::new(|_| true)),
        (
            Selector::App("app-1".into()),
            Box::new(|b| b.app.as_deref() == Some("app-1")),
        ),
        (
            Selector::Object(obj.clone()),
            Box::new(move |b| {
                b.event
                    .object()
                    .is_some_and(|o| o.identity() == obj.identity())
            }),
        ),
        (
            Selector::Commit(some_sha.clone()),
            Box::new(move |b| b.event.revisions().contains(&some_sha.as_str())),
        ),
        (
            Selector::Author("DEV3@example.com".into()),
            Box::new(|b| b.event.authors().contains(&"dev3@example.com")),
        ),
        (
            Selector::Kind(EventKind::DriftDetected),
            Box::new(|b| b.event.kind() == EventKind::DriftDetected),
        ),
    ];
    for (sel, pred) in &cases {
        let expected: Vec<u64> = events
            .iter()
            .filter(|e| pred(&e.body))
            .map(|e| e.body.seq)
            .collect();
        assert!(!expected.is_empty(), "{sel:?} selects something");
        let mut rev = expected.clone();
        rev.reverse();
        // Small pages, and pages large enough that sparse terms are read by several threads.
        for limit in [7, 100, 500] {
            let oldest = paginate(&store, Query::new(sel.clone()).oldest_first().limit(limit));
            assert_eq!(oldest, expected, "{sel:?} oldest first, pages of {limit}");
            let newest = paginate(&store, Query::new(sel.clone()).limit(limit));
            assert_eq!(newest, rev, "{sel:?} newest first, pages of {limit}");
        }
        // Time ranges: before and after the split.
        let late: Vec<u64> = events
            .iter()
            .filter(|e| pred(&e.body) && e.body.time >= split_time)
            .map(|e| e.body.seq)
            .collect();
        let q = Query::new(sel.clone())
            .oldest_first()
            .limit(13)
            .between(Some(split_time), None);
        assert_eq!(paginate(&store, q), late, "{sel:?} since split");
        let early: Vec<u64> = events
            .iter()
            .filter(|e| pred(&e.body) && e.body.time < split_time)
            .map(|e| e.body.seq)
            .rev()
            .collect();
        let q = Query::new(sel.clone())
            .limit(13)
            .between(None, Some(split_time - chrono::Duration::microseconds(1)));
        assert_eq!(
            paginate(&store, q),
            early,
            "{sel:?} until split, newest first"
        );
    }
    // A limited page says where to continue.
    let p = store.query(&Query::new(Selector::All).limit(10)).unwrap();
    assert_eq!(p.events.first().unwrap().body.seq, 2000);
    assert_eq!(p.next, Some(1991));
    assert_eq!(Order::default(), Order::NewestFirst);
}

#[test]
fn get_many_reads_what_get_reads_in_the_order_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = create(&dir.path().join("s"));
    fill(&mut store, 0, 3000, 250);
    let one_by_one = |seqs: &[u64]| -> Vec<Option<Envelope>> {
        seqs.iter().map(|s| store.get(*s).unwrap()).collect()
    };
    let cases: Vec<Vec<u64>> = vec![
        vec![],
        // Neighbours (one reader), and spread far apart (several readers).
        (1..=200).collect(),
        (1..=3000).step_by(37).collect(),
        (1..=3000).rev().step_by(29).collect(),
        // Unordered, repeated, and sequence numbers nothing holds (0, past the head).
        vec![
            2999, 5, 5, 0, 1800, 3001, 40, 1_000_000, 2400, 17, 1200, 2999, 640, 900, 3, 77,
        ]
        .into_iter()
        .cycle()
        .take(160)
        .collect(),
    ];
    for seqs in &cases {
        let got = store.get_many(seqs).unwrap();
        assert_eq!(got.len(), seqs.len());
        assert_eq!(
            got,
            one_by_one(seqs),
            "{} seqs from {:?}",
            seqs.len(),
            seqs.first()
        );
        for (seq, env) in seqs.iter().zip(&got) {
            if let Some(env) = env {
                assert_eq!(env.body.seq, *seq);
            }
        }
    }
    assert!(
        store
            .get_many(&[0, 3001])
            .unwrap()
            .iter()
            .all(Option::is_none)
    );
}

#[test]
fn reopen_restores_head_and_projections_from_snapshot_plus_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let opts = OpenOptions {
        create: true,
        snapshot_every: 300,
        ..Default::default()
    };
    let mut store = SledStore::open(&path, opts.clone()).unwrap();
    fill(&mut store, 0, 1000, 64);
    let head = store.head().unwrap();
    let before = store.projections().clone();
    let whole_before = whole(&store);
    assert_eq!(head.0, 1000);
    assert_eq!(before.apps.len(), 3);
    assert!(before.apps["app-0"].inventory.len() == 5);
    // No close: drop without the final snapshot, so restore must replay a tail.
    drop(store);
    let mut store = SledStore::open(&path, opts).unwrap();
    assert_eq!(store.head(), Some(head));
    assert_eq!(store.projections(), &before);
    // A rebuild stores old revisions anew (which ones are resident may differ): the whole
    // projections are the same.
    store.rebuild(&mut |_| {}).unwrap();
    assert_eq!(whole(&store), whole_before);
    // The chain continues across the reopen.
    fill(&mut store, 1000, 10, 10);
    assert_eq!(store.get(1001).unwrap().unwrap().body.prev_hash, head.1);
    let r = verify(&store.reader(), &mut |_| {}).unwrap();
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!(r.events, 1010);
}

#[test]
fn blobs_are_content_addressed_and_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = create(&dir.path().join("s"));
    let objs = vec![
        serde_json::json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v"}}),
    ];
    let canonical = reckon::store::blob::canonical(&objs);
    let d1 = store.put_blob(&canonical).unwrap();
    let d2 = store.put_blob(&canonical).unwrap();
    assert_eq!(d1, d2);
    assert_eq!(d1, Digest::of(&canonical));
    assert_eq!(store.reader().blob(&d1).unwrap().unwrap(), canonical);
    assert_eq!(store.blob(&Digest::ZERO).unwrap(), None);
    store.flush().unwrap();
    let r = verify(&store.reader(), &mut |_| {}).unwrap();
    assert_eq!(r.blobs, 1);
}

fn verify_after(fault: impl FnOnce(&sled::Tree)) -> Vec<Problem> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = create(&path);
    fill(&mut store, 0, 200, 50);
    store.close().unwrap();
    {
        let (db, t) = raw_events(&path);
        fault(&t);
        db.flush().unwrap();
        release_raw(&path, db, t);
    }
    let store = SledStore::open(
        &path,
        OpenOptions {
            allow_truncated: true,
            ..Default::default()
        },
    );
    let store = match store {
        Ok(s) => s,
        Err(e) => panic!("open after fault: {e}"),
    };
    verify(&store.reader(), &mut |_| {}).unwrap().problems
}

#[test]
fn verify_passes_a_clean_store() {
    assert_eq!(verify_after(|_| {}), vec![]);
}

#[test]
fn verify_reports_a_corrupt_record() {
    let p = verify_after(|t| {
        edit_record(t, 50, |v| {
            let mid = v.len() / 2;
            v[mid] ^= 0x40;
            true
        });
    });
    assert!(
        matches!(p.first(), Some(Problem::CorruptRecord { seq: 50, .. })),
        "{p:?}"
    );
}

#[test]
fn verify_reports_a_gap_and_the_index_entries_left_dangling() {
    let p = verify_after(|t| {
        edit_record(t, 77, |_| false);
    });
    assert!(
        p.contains(&Problem::Gap {
            expected: 77,
            found: 78
        }),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|x| matches!(x, Problem::DanglingIndexEntry { seq: 77, .. })),
        "{p:?}"
    );
}

#[test]
fn verify_reports_a_broken_link_even_when_the_record_hash_is_valid() {
    let p = verify_after(|t| {
        // Re-seal event 10 onto a different predecessor: its own hash is right, its link is not.
        edit_record(t, 10, |r| {
            let env = Envelope::open(r).unwrap();
            let mut body = env.body;
            body.prev_hash = Digest([9; 32]);
            *r = Envelope::seal(body).unwrap().1;
            true
        });
    });
    assert!(p.contains(&Problem::BrokenLink { seq: 10 }), "{p:?}");
    // ...and 11's link to the re-sealed 10 breaks too, but only the first is reported.
    assert_eq!(
        p.iter()
            .filter(|x| matches!(x, Problem::BrokenLink { .. }))
            .count(),
        1
    );
}

#[test]
fn verify_reports_dangling_and_missing_index_entries() {
    let p = verify_after(|t| {
        let mut k = vec![b'A'];
        k.extend_from_slice(&[1; 8]);
        k.extend_from_slice(&9999u64.to_be_bytes());
        t.insert(k, &[][..]).unwrap();
    });
    assert!(
        p.contains(&Problem::DanglingIndexEntry {
            index: "app",
            seq: 9999
        }),
        "{p:?}"
    );
    let p = verify_after(|t| {
        let k = t.scan_prefix(b"O").keys().next().unwrap().unwrap();
        t.remove(k).unwrap();
    });
    assert!(
        p.iter().any(|x| matches!(
            x,
            Problem::IndexMismatch {
                index: "object",
                ..
            }
        )),
        "{p:?}"
    );
    // An entry moved to another live event: same count, wrong content.
    let p = verify_after(|t| {
        let k = t.scan_prefix(b"C").keys().next().unwrap().unwrap().to_vec();
        t.remove(&k).unwrap();
        let mut moved = k.clone();
        let n = moved.len();
        moved[n - 1] ^= 1;
        t.insert(moved, &[][..]).unwrap();
    });
    assert!(
        p.iter().any(|x| matches!(
            x,
            Problem::IndexMismatch {
                index: "commit",
                ..
            }
        )),
        "{p:?}"
    );
}

#[test]
fn compaction_keeps_the_chain_the_state_and_the_other_apps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = create(&path);
    fill(&mut store, 0, 3000, 100);
    let before = store.projections().clone();
    let others_before = paginate(&store, Query::new(Selector::App("app-1".into())).limit(500));
    let app0_before = paginate(&store, Query::new(Selector::App("app-0".into())).limit(500));

    let c = store
        .compact(
            "app-0",
            &Policy {
                max_age: None,
                max_bytes: Some(20_000),
            },
            chrono::Utc::now(),
            Some("ops"),
        )
        .unwrap()
        .expect("something to compact");
    assert!(c.removed > 500, "{c:?}");
    let app0_after = paginate(&store, Query::new(Selector::App("app-0".into())).limit(500));
    assert_eq!(
        app0_after.len() as u64,
        app0_before.len() as u64 - c.removed + 1
    );
    assert_eq!(app0_after[0], c.summary_seq);
    assert_eq!(
        paginate(&store, Query::new(Selector::App("app-1".into())).limit(500)),
        others_before
    );
    let r = verify(&store.reader(), &mut |_| {}).unwrap();
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!(r.tombstones, c.removed);
    // Time ranges still work across the holes (their time-run entries went with them).
    let everything = all(&store);
    let mid = everything[everything.len() / 2].body.time;
    let expected: Vec<u64> = everything
        .iter()
        .filter(|e| e.body.time >= mid)
        .map(|e| e.body.seq)
        .collect();
    let q = Query::new(Selector::All)
        .oldest_first()
        .limit(333)
        .between(Some(mid), None);
    assert_eq!(paginate(&store, q), expected);
    // Replay from nothing gives the same state as before compaction.
    store.rebuild(&mut |_| {}).unwrap();
    assert_eq!(whole(&store).apps, before.apps);

    // A second, age-based compaction of the same App folds onto the first base state.
    let c2 = store
        .compact(
            "app-0",
            &Policy {
                max_age: Some(std::time::Duration::from_secs(1)),
                max_bytes: None,
            },
            chrono::Utc::now() + chrono::Duration::hours(1),
            None,
        )
        .unwrap()
        .expect("everything is older than an hour from now");
    assert!(c2.removed > 0);
    store.close().unwrap();
    let mut store = SledStore::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(whole(&store).apps, before.apps);
    store.rebuild(&mut |_| {}).unwrap();
    assert_eq!(whole(&store).apps, before.apps);
    let r = verify(&store.reader(), &mut |_| {}).unwrap();
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!(r.tombstones, c.removed + c2.removed);
}

/// The status projection (last sync, health, open drift, failures) after a compaction is what
/// the remaining log folds to, so `store verify`'s snapshot check agrees, before and after a
/// reopen; and a compaction of everything leaves the App no sync or drift to show.
#[test]
fn compaction_leaves_the_status_the_log_folds_to() {
    use reckon::event::{ApplyFailed, Draft, Health, HealthChanged, SyncStarted};
    use reckon::store::verify::check_projections;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = create(&path);
    // What the sample stream lacks: drift left open (on objects it never applies), the App's
    // health, and a sync with failures.
    let app = |e: Event| Draft::new(Some("app-0"), e);
    let drift = |name: &str| {
        app(Event::DriftDetected(reckon::event::DriftDetected {
            object: samples::object("", "v1", "ConfigMap", Some("ns-0"), name),
            diffs: vec![],
            managers: vec![],
        }))
    };
    store.append(vec![drift("early")]).unwrap();
    fill(&mut store, 0, 3000, 100);
    let sha = samples::sha(1);
    store
        .append(vec![
            drift("late"),
            app(Event::HealthChanged(HealthChanged {
                object: None,
                from: Health::Unknown,
                to: Health::Degraded,
                message: None,
            })),
            app(Event::SyncStarted(SyncStarted {
                revision: sha.clone(),
                digest: None,
            })),
            app(Event::ApplyFailed(ApplyFailed {
                revision: sha,
                object: samples::object("apps", "v1", "Deployment", Some("ns-0"), "svc-1"),
                error: "refused".into(),
            })),
        ])
        .unwrap();
    let before = store.projections().status["app-0"].clone();
    let other_before = store.projections().status["app-1"].clone();
    assert!(before.last_sync.is_some() && before.health.is_some());
    assert!(!before.drift.is_empty() && !before.failures.is_empty());
    let agrees = |store: &SledStore| {
        let mut r = verify(&store.reader(), &mut |_| {}).unwrap();
        check_projections(store, &mut r).unwrap();
        assert!(r.ok(), "{:?}", r.problems);
    };

    // By size: the newest events stay, and with them the newest sync; older drifts go.
    store
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
    let after = store.projections().status["app-0"].clone();
    assert_eq!(after.last_sync, before.last_sync);
    assert_eq!(
        (&after.health, &after.failures),
        (&before.health, &before.failures)
    );
    let open = |s: &reckon::store::projection::StatusState| {
        s.drift
            .values()
            .map(|d| d.object.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(open(&before), ["early", "late"]);
    assert_eq!(
        open(&after),
        ["late"],
        "the early drift went with its event"
    );
    agrees(&store);

    // Everything: nothing is left to show but the compaction.
    store
        .compact(
            "app-0",
            &Policy {
                max_age: Some(std::time::Duration::from_secs(1)),
                max_bytes: None,
            },
            chrono::Utc::now() + chrono::Duration::hours(1),
            None,
        )
        .unwrap()
        .expect("everything is older than an hour from now");
    let emptied = store.projections().status["app-0"].clone();
    assert_eq!(emptied, Default::default());
    assert_eq!(
        store.projections().status["app-1"],
        other_before,
        "other Apps keep theirs"
    );
    agrees(&store);
    store.close().unwrap();
    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(store.projections().status["app-0"], emptied);
    agrees(&store);
}

#[test]
fn tampered_tombstones_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = create(&path);
    fill(&mut store, 0, 300, 100);
    let policy = Policy {
        max_age: None,
        max_bytes: Some(2_000),
    };
    store
        .compact("app-2", &policy, chrono::Utc::now(), None)
        .unwrap()
        .unwrap();
    store.close().unwrap();
    {
        let (db, t) = raw_events(&path);
        let (k, v) = t.scan_prefix(b"X").next().unwrap().unwrap();
        let mut v = v.to_vec();
        v[0] ^= 1;
        t.insert(k, v).unwrap();
        db.flush().unwrap();
        release_raw(&path, db, t);
    }
    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    let p = verify(&store.reader(), &mut |_| {}).unwrap().problems;
    assert!(
        p.iter()
            .any(|x| matches!(x, Problem::TombstoneUnvouched { .. })),
        "{p:?}"
    );
}

#[test]
fn export_import_reproduces_the_hashes_tombstones_and_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let mut store = create(&src);
    fill(&mut store, 0, 900, 100);
    store
        .append(
            samples::all_events()
                .into_iter()
                // The sample summary's base state is not a real snapshot and the sample render's
                // blob does not exist: only compaction and a real render write those.
                .filter(|e| {
                    ![EventKind::RetentionCompacted, EventKind::RenderSucceeded].contains(&e.kind())
                })
                .map(|e| reckon::event::Draft::new(Some("kitchen-sink"), e))
                .collect(),
        )
        .unwrap();
    store
        .compact(
            "app-1",
            &Policy {
                max_age: None,
                max_bytes: Some(5_000),
            },
            chrono::Utc::now(),
            None,
        )
        .unwrap()
        .unwrap();
    store.flush().unwrap();
    let original = all(&store);
    let projections = store.projections().clone();
    let mut out = Vec::new();
    let counts = exchange::export(&store.reader(), &mut out, true, &mut |_| {}).unwrap();
    assert_eq!(counts.events, original.len() as u64);
    assert!(counts.tombstones > 0 && counts.blobs > 0);
    let text = String::from_utf8(out.clone()).unwrap();
    let first_event: serde_json::Value =
        serde_json::from_str(text.lines().find(|l| l.starts_with("{\"seq\"")).unwrap()).unwrap();
    let keys: Vec<&str> = first_event
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "seq",
        "time",
        "app",
        "actor",
        "kind",
        "data",
        "prev_hash",
        "hash",
        "format",
        "schema",
    ] {
        assert!(keys.contains(&k), "field {k} in {keys:?}");
    }

    let dst = dir.path().join("dst");
    let c = exchange::import(&dst, &mut out.as_slice(), &mut |_| {}).unwrap();
    assert_eq!(c, counts);
    let imported = SledStore::open(&dst, OpenOptions::default()).unwrap();
    assert_eq!(all(&imported), original);
    assert_eq!(imported.head(), store.head());
    assert_eq!(imported.projections().apps, projections.apps);
    let r = verify(&imported.reader(), &mut |_| {}).unwrap();
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!(r.tombstones, counts.tombstones);

    // Importing over a store that holds events is refused.
    drop(imported);
    assert!(matches!(
        exchange::import(&dst, &mut out.as_slice(), &mut |_| {}),
        Err(StoreError::Invalid { .. })
    ));

    // An edited line is refused with its line number.
    let edited = text.replacen("\"app-2\"", "\"app-9\"", 1);
    let line = edited.lines().position(|l| l.contains("app-9")).unwrap() as u64 + 1;
    match exchange::import(&dir.path().join("bad"), &mut edited.as_bytes(), &mut |_| {}) {
        Err(StoreError::Import { line: l, reason }) => {
            assert_eq!(l, line);
            assert!(reason.contains("hash"), "{reason}");
        }
        other => panic!("expected an import error, got {other:?}"),
    }
}

#[test]
fn a_directory_that_is_not_a_store_is_refused_by_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    match SledStore::open(dir.path(), OpenOptions::create()) {
        Err(e @ StoreError::NotAStore { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
            assert!(msg.contains("not a reckon store"), "{msg}");
        }
        other => panic!("{:?}", other.err()),
    }
    // Nothing was created next to the user's file.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let file = dir.path().join("notes.txt");
    assert!(matches!(
        SledStore::open(&file, OpenOptions::create()),
        Err(StoreError::NotAStore { .. })
    ));
    let missing = dir.path().join("missing");
    assert!(matches!(
        SledStore::open(&missing, OpenOptions::default()),
        Err(StoreError::NotFound { .. })
    ));
    assert!(!missing.exists());
}

#[test]
fn a_newer_store_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = create(&path);
    fill(&mut store, 0, 50, 50);
    store.close().unwrap();
    std::fs::write(
        path.join("RECKON_STORE"),
        format!("reckon-store\nschema {}\n", STORE_SCHEMA + 1),
    )
    .unwrap();
    let before = snapshot_dir(&path);
    let err = SledStore::open(&path, OpenOptions::default())
        .err()
        .unwrap();
    assert!(
        matches!(err, StoreError::NewerSchema { found, supported, .. } if found == STORE_SCHEMA + 1 && supported == STORE_SCHEMA),
        "{err}"
    );
    assert!(err.to_string().contains(&path.display().to_string()));
    assert_eq!(snapshot_dir(&path), before, "not a byte changed");
}

#[test]
fn a_corrupt_record_is_an_error_naming_path_and_seq_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = create(&path);
    fill(&mut store, 0, 100, 50);
    store.close().unwrap();
    {
        let (db, t) = raw_events(&path);
        edit_record(&t, 42, |v| {
            v.truncate(v.len() - 5);
            true
        });
        db.flush().unwrap();
        release_raw(&path, db, t);
    }
    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    let err = store.get(42).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, StoreError::Corrupt { seq: Some(42), .. }),
        "{msg}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    // Queries that reach it fail loudly rather than skipping it.
    assert!(
        store
            .query(&Query::new(Selector::All).oldest_first().limit(100))
            .is_err()
    );
}

#[test]
fn a_log_shorter_than_head_is_reported_as_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = create(&path);
    fill(&mut store, 0, 90, 50);
    store.close().unwrap();
    // Simulate sled losing its last batch after a power loss, while HEAD (fsynced) survived:
    // put back the database as it was before that batch.
    let before = dir.path().join("db-at-90");
    copy_dir(&path.join("db"), &before);
    let mut store = SledStore::open(&path, OpenOptions::default()).unwrap();
    fill(&mut store, 90, 10, 10);
    store.close().unwrap();
    std::fs::remove_dir_all(path.join("db")).unwrap();
    copy_dir(&before, &path.join("db"));
    let err = SledStore::open(&path, OpenOptions::default())
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            StoreError::Truncated {
                head_seq: 100,
                log_seq: 90,
                ..
            }
        ),
        "{err}"
    );
    let store = SledStore::open(
        &path,
        OpenOptions {
            allow_truncated: true,
            ..Default::default()
        },
    )
    .unwrap();
    let p = verify(&store.reader(), &mut |_| {}).unwrap().problems;
    assert!(p.iter().any(|x| matches!(x, Problem::Head { .. })), "{p:?}");

    // Recording the loss makes the store writable again, with the loss on the record.
    let mut store = store;
    assert_eq!(store.record_gap(Some("ops")).unwrap(), Some(91));
    store.close().unwrap();
    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    match &store.get(91).unwrap().unwrap().body.event {
        Event::StoreGap(g) => {
            assert_eq!((g.expected_seq, g.found_seq), (Some(100), 90));
        }
        other => panic!("{other:?}"),
    }
    let r = verify(&store.reader(), &mut |_| {}).unwrap();
    assert!(r.ok(), "{:?}", r.problems);
}

/// `HEAD` as its text says: the seq and hash it records.
fn head_of(path: &std::path::Path) -> (u64, String) {
    let text = std::fs::read_to_string(path.join("HEAD")).unwrap();
    let seq = text
        .lines()
        .find_map(|l| l.strip_prefix("seq "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let hash = text
        .lines()
        .find_map(|l| l.strip_prefix("hash "))
        .unwrap()
        .trim()
        .to_string();
    (seq, hash)
}

#[test]
fn head_is_rewritten_in_place_at_each_flush_and_a_previous_versions_head_still_opens() {
    use reckon::store::sled_engine::HEAD_BYTES;
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = create(&path);
    fill(&mut store, 0, 10, 5);
    let inode = std::fs::metadata(path.join("HEAD")).unwrap().ino();
    // Each flush records the new head, in the same file (no temp file and rename), at the
    // same size.
    for (from, expected) in [(10, 15), (15, 20)] {
        fill(&mut store, from, 5, 5);
        let meta = std::fs::metadata(path.join("HEAD")).unwrap();
        assert_eq!(meta.ino(), inode, "HEAD replaced instead of rewritten");
        assert_eq!(meta.len(), HEAD_BYTES as u64);
        let (seq, hash) = head_of(&path);
        assert_eq!(seq, expected);
        assert_eq!(hash, store.get(expected).unwrap().unwrap().hash.to_string());
    }
    store.close().unwrap();
    assert!(!path.join("HEAD.tmp").exists());

    // The previous version wrote HEAD unpadded, by temp file and rename: such a store opens,
    // its HEAD is checked against the log as before, and the next flush moves it on.
    let (seq, hash) = head_of(&path);
    std::fs::write(path.join("HEAD"), format!("seq {seq}\nhash {hash}\n")).unwrap();
    let mut store = SledStore::open(&path, OpenOptions::default()).unwrap();
    fill(&mut store, 20, 5, 5);
    store.close().unwrap();
    assert_eq!(head_of(&path).0, 25);
    assert_eq!(
        std::fs::metadata(path.join("HEAD")).unwrap().len(),
        HEAD_BYTES as u64
    );
    // And a padded HEAD that names a hash the log does not have is still refused.
    let text = std::fs::read_to_string(path.join("HEAD")).unwrap();
    let (_, hash) = head_of(&path);
    std::fs::write(
        path.join("HEAD"),
        text.replace(&hash, &Digest::of(b"not this").to_string()),
    )
    .unwrap();
    let err = SledStore::open(&path, OpenOptions::default())
        .err()
        .unwrap();
    assert!(
        matches!(err, StoreError::Corrupt { seq: Some(25), .. }),
        "{err}"
    );
}

#[test]
fn disk_full_errors_are_named_as_such() {
    let e = std::io::Error::from_raw_os_error(28);
    assert!(reckon::store::is_disk_full(&e));
    assert!(!reckon::store::is_disk_full(
        &std::io::Error::from_raw_os_error(13)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_task_serialises_concurrent_producers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let (handle, task) = reckon::store::writer::spawn(create(&path));
    let mut producers = vec![];
    for p in 0..4u64 {
        let h = handle.clone();
        producers.push(tokio::spawn(async move {
            for b in 0..10u64 {
                let drafts = (0..25)
                    .map(|i| samples::stream(p * 1000 + b * 25 + i, 3, 5))
                    .collect();
                for i in 0..25 {
                    if let Some(blob) = samples::stream_blob(p * 1000 + b * 25 + i, 3, 5) {
                        h.put_blob(blob).await.unwrap();
                    }
                }
                let a = h.append(drafts).await.unwrap();
                assert_eq!(a.last_seq - a.first_seq, 24);
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    let proj = handle.projections().await.unwrap();
    assert_eq!(proj.covered_seq, 1000);
    // The per-App query answers from the same state, without cloning every App.
    let (name, state) = proj.apps.iter().next().expect("an app was written");
    assert_eq!(handle.app_state(name).await.unwrap().as_ref(), Some(state));
    assert_eq!(handle.app_state("never-written").await.unwrap(), None);
    // Readers work alongside the writer.
    let page = handle
        .reader()
        .query(&Query::new(Selector::All).limit(5))
        .unwrap();
    assert_eq!(page.events[0].body.seq, 1000);
    handle.close().await.unwrap();
    task.await.unwrap().unwrap();
    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    let r = verify(&store.reader(), &mut |_| {}).unwrap();
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!(r.events, 1000);
    assert!(matches!(
        store.get(1).unwrap().unwrap().body.event,
        Event::CommitObserved(_)
            | Event::RenderSucceeded(_)
            | Event::SyncStarted(_)
            | Event::ObjectApplied(_)
            | Event::DriftDetected(_)
            | Event::SyncFinished(_)
    ));
}

/// Many Apps reading their projection between appends (what a thousand passes do): reads join
/// the writer's group commits and are answered after the flush, and each still sees its own
/// appends; appends queued without waiting keep their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_reads_between_appends_see_the_readers_own_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let (handle, task) = reckon::store::writer::spawn(create(&path));
    let mut producers = vec![];
    for p in 0..8u64 {
        let h = handle.clone();
        producers.push(tokio::spawn(async move {
            let app = format!("app{p}");
            for b in 0..20u64 {
                let n = p * 100 + b;
                let draft = reckon::event::Draft::new(
                    Some(&app),
                    Event::CommitObserved(samples::commit(n, "a@example.com")),
                );
                let appended = h.append(vec![draft]).await.unwrap();
                let state = h.app_state(&app).await.unwrap().expect("written");
                assert_eq!(
                    state.last_seq, appended.last_seq,
                    "{app} reads its own append"
                );
                assert_eq!(state.observed_head, Some(samples::sha(n)));
            }
            // Two batches queued back to back, waited for afterwards: in order, both durable.
            let drafts = |n: u64| {
                vec![reckon::event::Draft::new(
                    Some(&app),
                    Event::CommitObserved(samples::commit(n, "a@example.com")),
                )]
            };
            let first = h
                .queue_with_blobs(vec![], drafts(p * 100 + 50))
                .await
                .unwrap();
            let second = h
                .queue_with_blobs(vec![], drafts(p * 100 + 51))
                .await
                .unwrap();
            let (first, second) = (
                first.durable().await.unwrap(),
                second.durable().await.unwrap(),
            );
            assert!(second.first_seq > first.last_seq);
            let state = h.app_state(&app).await.unwrap().unwrap();
            assert_eq!(state.observed_head, Some(samples::sha(p * 100 + 51)));
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    handle.close().await.unwrap();
    task.await.unwrap().unwrap();
    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    let r = verify(&store.reader(), &mut |_| {}).unwrap();
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!(r.events, 8 * 22);
}

/// `close` returns only once sled's file lock is free: the agent reopens its own store after a
/// restart in the same process, and a second open must never see the lock still held.
#[test]
fn a_closed_store_reopens_at_once_in_the_same_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = create(&path);
    for round in 0..200u64 {
        fill(&mut store, round * 5, 5, 5);
        store.close().unwrap();
        store = SledStore::open(&path, OpenOptions::default())
            .unwrap_or_else(|e| panic!("round {round}: reopening a closed store: {e}"));
    }
    assert_eq!(all(&store).len(), 1000);
    store.close().unwrap();
}

/// The same for raw sled handles used by fault injection: once released, another process may
/// open the store.
#[test]
fn released_raw_handles_free_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = create(&path);
    fill(&mut store, 0, 10, 5);
    store.close().unwrap();
    for round in 0..200 {
        let (db, t) = raw_events(&path);
        // A write in a tree of its own, so the store's log stays as it was.
        db.open_tree("probe")
            .unwrap()
            .insert(b"round", &[round as u8])
            .unwrap();
        release_raw(&path, db, t);
        let store = SledStore::open(&path, OpenOptions::default())
            .unwrap_or_else(|e| panic!("round {round}: opening after the raw handles: {e}"));
        store.close().unwrap();
    }
}

/// Closing through the writer's handle frees the lock before `close` returns: the handle's own
/// reader was still alive when the writer closed, so the writer left the lock to "the last
/// reader", the handle dropped it right after, and an open at once raced sled's file close
/// (`migration::the_event_schema_4_fixture…` failed once in a full run with `Locked`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_through_the_writer_frees_the_lock_before_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = create(&path);
    fill(&mut store, 0, 10, 5);
    store.close().unwrap();
    for round in 0..100 {
        let store = SledStore::open(&path, OpenOptions::default())
            .unwrap_or_else(|e| panic!("round {round}: opening after the writer closed: {e}"));
        let (handle, task) = reckon::store::writer::spawn(store);
        handle.close().await.unwrap();
        // Not waiting for the task: a caller that has its close answered may open again.
        let reopened = SledStore::open(&path, OpenOptions::default())
            .unwrap_or_else(|e| panic!("round {round}: opening right after close: {e}"));
        reopened.close().unwrap();
        task.await.unwrap().unwrap();
    }
}
