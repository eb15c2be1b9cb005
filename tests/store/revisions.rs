//! Revisions kept in the store rather than in memory (`projection::stored`): which stay
//! resident, that every reader still sees all of them, that events naming a stored revision
//! fold as if it had stayed, resets and renames, rebuilds, and that a stored revision that does
//! not read is an error.

use crate::support::store::{folded, whole};
use reckon::event::{
    ApplyAction, Digest, Draft, Event, IntentKind, IntentRecorded, ObjectApplied, RenderSucceeded,
    SyncCounts, SyncFinished, SyncOutcome, samples,
};
use reckon::query::{self, HistoryFilter, QueryError};
use reckon::store::projection::stored::RECENT;
use reckon::store::verify::{check_projections, verify};
use reckon::store::{EventStore, OpenOptions, RevisionView, SledStore, StoreError};
use std::path::Path;

const SHOP: &str = "shop";

/// The SHA of revision `n` of `app`.
fn sha(app: &str, n: u64) -> String {
    samples::sha(n * 1_000 + app.len() as u64)
}

/// Revision `n` of `app` observed, rendered (to `digest`) and synced.
fn revision(app: &str, n: u64, digest: Digest) -> Vec<Draft> {
    let mut c = samples::commit(n, "dev@example.com");
    c.sha = sha(app, n);
    let at = |e| Draft::new(Some(app), e);
    vec![
        at(Event::CommitObserved(c)),
        at(Event::RenderSucceeded(RenderSucceeded {
            revision: sha(app, n),
            digest,
            object_count: 1,
        })),
        at(Event::SyncFinished(SyncFinished {
            revision: sha(app, n),
            outcome: SyncOutcome::Succeeded,
            counts: SyncCounts {
                configured: 1,
                ..Default::default()
            },
            duration_ms: 5,
        })),
    ]
}

fn opts(snapshot_every: u64) -> OpenOptions {
    OpenOptions {
        create: true,
        snapshot_every,
        cache_bytes: 1 << 20,
        ..Default::default()
    }
}

/// A store at `path` where `shop` has 30 revisions and `web` 3, a snapshot written at every
/// flush (so eviction runs at each). Returns it and the digest of the one recorded set.
fn thirty(path: &Path) -> (SledStore, Digest) {
    let mut store = SledStore::open(path, opts(1)).unwrap();
    let set = reckon::store::blob::canonical(&[serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}
    })]);
    let digest = store.put_blob(&set).unwrap();
    for n in 1..=30 {
        store.append(revision(SHOP, n, digest)).unwrap();
        store.flush().unwrap();
    }
    for n in 1..=3 {
        store.append(revision("web", n, digest)).unwrap();
    }
    store.flush().unwrap();
    (store, digest)
}

fn assert_whole_is_the_fold(store: &SledStore, what: &str) {
    let (got, want) = (whole(store), folded(store));
    assert_eq!(got.apps, want.apps, "{what}");
    assert_eq!(got.status, want.status, "{what}");
    let mut r = verify(&store.reader(), &mut |_| {}).unwrap();
    check_projections(store, &mut r).unwrap();
    assert!(r.ok(), "{what}: {:?}", r.problems);
}

/// Opens `path` again once the previous handle's lock is gone (a store dropped without
/// `close`, as a crash leaves it, lets go of sled's lock a moment later).
fn reopen(path: &Path, snapshot_every: u64) -> SledStore {
    let started = std::time::Instant::now();
    loop {
        match SledStore::open(path, opts(snapshot_every)) {
            Err(StoreError::Locked { .. }) if started.elapsed().as_secs() < 10 => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other.unwrap(),
        }
    }
}

#[test]
fn old_revisions_leave_memory_and_every_reader_still_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let (store, digest) = thirty(&path);
    let p = store.projections();
    // The newest RECENT (the heads and the applied revision are among them) stay.
    let resident = p.apps[SHOP].revisions.len();
    assert_eq!(resident, RECENT, "{:?}", p.apps[SHOP].revisions.keys());
    assert!(p.apps[SHOP].revisions.contains_key(&sha(SHOP, 30)));
    assert!(!p.apps[SHOP].revisions.contains_key(&sha(SHOP, 1)));
    assert_eq!(p.stored(SHOP).count, 30 - RECENT as u64);
    assert_eq!(p.apps["web"].revisions.len(), 3);
    let view = RevisionView::new(&store, p, SHOP).unwrap();
    assert_eq!(view.len(), 30, "counted, not scanned");
    assert_eq!(view.all().unwrap().len(), 30);
    assert_eq!(
        view.get(&sha(SHOP, 1)).unwrap().unwrap().digest,
        Some(digest)
    );
    assert_eq!(view.get(&samples::sha(999_999)).unwrap(), None);
    assert_whole_is_the_fold(&store, "after eviction");

    // Every query answers from the whole table, as on projections holding everything.
    let all = folded(&store);
    let rows = query::revisions(&store, p, SHOP).unwrap();
    assert_eq!(rows, query::revisions(&store, &all, SHOP).unwrap());
    assert_eq!(rows.len(), 30);
    let mut cursor = None;
    let mut paged = vec![];
    loop {
        let page = query::revisions_page(&store, p, SHOP, 7, cursor.as_deref()).unwrap();
        paged.extend(page.revisions);
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(paged, rows);
    let old = sha(SHOP, 2);
    let shown = query::show(&store, p, SHOP, &old[..38]).unwrap();
    assert_eq!(shown.revision, old);
    assert_eq!(shown.digest, digest.to_hex());
    let filter = HistoryFilter {
        revision: Some(old[..38].to_string()),
        ..Default::default()
    };
    let page = query::history(&store, p, &filter).unwrap();
    assert_eq!(page.events.len(), 3, "its commit, render and sync");
    let diff = query::diff_revisions(&store, p, SHOP, &sha(SHOP, 1), &sha(SHOP, 30)).unwrap();
    assert!(diff.changed.is_empty() && diff.added.is_empty());
    assert_eq!(
        store.reader().complete_app(p, SHOP).unwrap().unwrap(),
        all.apps[SHOP]
    );
    store.close().unwrap();
}

/// The writer faults a stored revision in before folding an event that names it: a sync,
/// an apply, a render and a rollback of old revisions give what a fold of the whole log gives,
/// before and after a reopen, and after a crash (a tail replayed over the snapshot).
#[test]
fn events_naming_a_stored_revision_fold_as_if_it_had_stayed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let (mut store, _) = thirty(&path);
    let other = store.put_blob(b"[]").unwrap();
    let at = |e| Draft::new(Some(SHOP), e);
    store
        .append(vec![
            at(Event::SyncFinished(SyncFinished {
                revision: sha(SHOP, 2),
                outcome: SyncOutcome::Failed,
                counts: SyncCounts {
                    failed: 1,
                    ..Default::default()
                },
                duration_ms: 5,
            })),
            at(Event::ObjectApplied(ObjectApplied {
                revision: sha(SHOP, 3),
                object: samples::object("", "v1", "ConfigMap", Some("shop"), "settings"),
                action: ApplyAction::Configured,
                changed_fields: vec!["data.a".into()],
                digest: Digest([3; 32]),
            })),
            at(Event::RenderSucceeded(RenderSucceeded {
                revision: sha(SHOP, 4),
                digest: other,
                object_count: 2,
            })),
            at(Event::IntentRecorded(IntentRecorded {
                intent: IntentKind::Rollback,
                revision: Some(sha(SHOP, 5)),
                reason: None,
            })),
        ])
        .unwrap();
    store.flush().unwrap();
    assert_whole_is_the_fold(&store, "after folding events of stored revisions");
    let p = store.projections();
    // The pinned revision stays resident: the App's passes read it.
    assert!(p.apps[SHOP].revisions.contains_key(&sha(SHOP, 5)));
    let entry = |s: &SledStore, n| {
        RevisionView::new(s, s.projections(), SHOP)
            .unwrap()
            .get(&sha(SHOP, n))
            .unwrap()
            .unwrap()
    };
    assert_eq!(entry(&store, 2).outcome, Some(SyncOutcome::Failed));
    assert_eq!(entry(&store, 4).digest, Some(other));
    assert_eq!(entry(&store, 3).objects_changed, 1);
    store.close().unwrap();
    let mut store = reopen(&path, u64::MAX);
    assert_whole_is_the_fold(&store, "reopened");

    // A crash: appended and flushed, but no snapshot since. The tail is replayed over the
    // snapshot, faulting in what it names, and counts each change once.
    store
        .append(vec![at(Event::ObjectApplied(ObjectApplied {
            revision: sha(SHOP, 6),
            object: samples::object("", "v1", "ConfigMap", Some("shop"), "other"),
            action: ApplyAction::Created,
            changed_fields: vec![],
            digest: Digest([6; 32]),
        }))])
        .unwrap();
    store.flush().unwrap();
    let before = whole(&store);
    drop(store);
    let store = reopen(&path, u64::MAX);
    assert_eq!(whole(&store), before);
    assert_whole_is_the_fold(&store, "after a crash");
    assert_eq!(entry(&store, 6).objects_changed, 1);
    store.close().unwrap();
}

/// A reset starts the App over: none of its stored revisions are its any more (the snapshot
/// after it deletes them), and a rename carries the whole table, stored revisions included, to
/// the new name; an App later recorded under the old name starts empty.
#[test]
fn resets_and_renames_disown_what_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let (mut store, digest) = thirty(&path);
    let complete = store
        .reader()
        .complete_app(store.projections(), SHOP)
        .unwrap()
        .unwrap();
    assert_eq!(complete.revisions.len(), 30);
    let base_state = reckon::store::projection::encode_snapshot(&complete).unwrap();
    store
        .append(vec![Draft::new(
            Some("team-a.shop"),
            Event::AppRenamed(reckon::event::AppRenamed {
                from: SHOP.into(),
                anchor_seq: None,
                reason: "test".into(),
                base_state,
            }),
        )])
        .unwrap();
    store.flush().unwrap();
    let p = store.projections();
    assert!(!p.apps.contains_key(SHOP));
    let moved = RevisionView::new(&store, p, "team-a.shop").unwrap();
    assert_eq!(moved.len(), 30);
    assert_eq!(moved.all().unwrap(), complete.revisions);
    let old_epoch = store.reader().stored_revisions_of(SHOP, 0, "").unwrap();
    assert!(
        old_epoch.is_empty(),
        "deleted with the snapshot after the rename"
    );
    // A new App under the old name owns none of it.
    store.append(revision(SHOP, 31, digest)).unwrap();
    store.flush().unwrap();
    let view = RevisionView::new(&store, store.projections(), SHOP).unwrap();
    assert_eq!(view.all().unwrap().len(), 1);
    assert_whole_is_the_fold(&store, "after the rename");

    store
        .append(vec![Draft::new(
            Some("team-a.shop"),
            Event::AppReset(reckon::event::AppReset {
                previous_seq: 1,
                reason: "recreated".into(),
            }),
        )])
        .unwrap();
    store.append(revision("team-a.shop", 1, digest)).unwrap();
    store.flush().unwrap();
    let view = RevisionView::new(&store, store.projections(), "team-a.shop").unwrap();
    assert_eq!(view.len(), 1);
    assert_eq!(
        view.get(&sha(SHOP, 1)).unwrap(),
        None,
        "the earlier life's revision"
    );
    assert_whole_is_the_fold(&store, "after the reset");
    store.close().unwrap();
    let store = reopen(&path, 1);
    assert_whole_is_the_fold(&store, "reset, reopened");
    store.close().unwrap();
}

/// `store rebuild` replaces every stored revision with the ones the log folds to.
#[test]
fn a_rebuild_replaces_what_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let (mut store, _) = thirty(&path);
    let before = whole(&store);
    let p = store.rebuild(&mut |_| {}).unwrap().clone();
    assert_eq!(p.apps[SHOP].revisions.len(), RECENT);
    assert_eq!(p.stored(SHOP).count, 30 - RECENT as u64);
    assert_eq!(whole(&store), before);
    assert_whole_is_the_fold(&store, "rebuilt");
    store.close().unwrap();
}

/// A stored revision that does not decode is an error wherever it is read: a query fails
/// rather than listing one revision fewer, and an append naming it writes nothing.
#[test]
fn a_stored_revision_that_does_not_read_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let (store, digest) = thirty(&path);
    let epoch = store.projections().stored(SHOP).epoch;
    store.close().unwrap();
    let db = reckon::store::sled_engine::sled_config(&path, 1 << 20)
        .open()
        .unwrap();
    let t = db.open_tree("snapshots").unwrap();
    let key = reckon::store::projection::stored::key(SHOP, epoch, &sha(SHOP, 2));
    assert!(t.insert(key, &[1][..]).unwrap().is_some());
    drop(t);
    reckon::store::sled_engine::release(&path, db).unwrap();

    let mut store = reopen(&path, 1);
    let p = store.projections().clone();
    let corrupt = |e: QueryError| matches!(e, QueryError::Store(StoreError::Corrupt { .. }));
    let e = query::revisions(&store, &p, SHOP).unwrap_err();
    assert!(corrupt(e));
    let e = query::show(&store, &p, SHOP, &sha(SHOP, 2)).unwrap_err();
    assert!(corrupt(e));
    // Others still read.
    assert!(query::show(&store, &p, SHOP, &sha(SHOP, 3)).is_ok());
    let head = store.head();
    let e = store.append(revision(SHOP, 2, digest)).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    assert_eq!(store.head(), head, "nothing appended");
}

fn fixture_v3_snapshot6() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v3-snapshot6")
}

/// The events of the `store-v3-snapshot6` fixture, exported (JSONL, with blobs) to
/// `RECKON_FIXTURE_EXPORT`: App `shop` observes, renders and syncs 20 revisions and is rolled
/// back to its third; App `web` has 2. The fixture is this export imported by the release
/// before revisions moved to the store (commit d5faabe), which writes a version-6 projections
/// snapshot holding all 22: `cargo test --test store -- --ignored
/// revisions::generate_v3_snapshot6_export`, then with that release's binary
/// `reckon --store tests/fixtures/store-v3-snapshot6 store import -i FILE`.
#[test]
#[ignore]
fn generate_v3_snapshot6_export() {
    let out = std::env::var_os("RECKON_FIXTURE_EXPORT").expect("RECKON_FIXTURE_EXPORT=FILE");
    let dir = tempfile::tempdir().unwrap();
    let mut store = SledStore::open(dir.path().join("s"), opts(100_000)).unwrap();
    let set = reckon::store::blob::canonical(&[serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}
    })]);
    let digest = store.put_blob(&set).unwrap();
    for n in 1..=20 {
        store.append(revision(SHOP, n, digest)).unwrap();
    }
    let rollback = Event::IntentRecorded(IntentRecorded {
        intent: IntentKind::Rollback,
        revision: Some(sha(SHOP, 3)),
        reason: Some("fixture".into()),
    });
    store
        .append(vec![Draft::new(Some(SHOP), rollback).by("alice")])
        .unwrap();
    for n in 1..=2 {
        store.append(revision("web", n, digest)).unwrap();
    }
    let mut file = std::fs::File::create(out).unwrap();
    reckon::store::exchange::export(&store.reader(), &mut file, true, &mut |_| {}).unwrap();
    store.close().unwrap();
}

/// The snapshot's raw bytes (its first is its version), read with the store closed.
fn raw_snapshot(path: &Path) -> Vec<u8> {
    let db = reckon::store::sled_engine::sled_config(path, 1 << 20)
        .open()
        .unwrap();
    let t = db.open_tree("snapshots").unwrap();
    let bytes = t.get(b"projections").unwrap().unwrap().to_vec();
    drop(t);
    reckon::store::sled_engine::release(path, db).unwrap();
    bytes
}

/// Migration 0014: `store-v3-snapshot6` was written by the release before revisions moved to
/// the store, its version-6 snapshot holding every revision. The first open converts it (no
/// replay of the log) and writes a version-7 snapshot at once, holding `shop`'s resident
/// revisions (the newest 8 and the pinned one) and storing the other 11; every query still
/// sees all 20, and verify's snapshot check passes.
#[test]
fn the_v3_snapshot6_fixture_moves_old_revisions_to_the_store() {
    use reckon::store::projection::PROJECTIONS_SNAPSHOT_VERSION;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    crate::support::store::copy_dir(&fixture_v3_snapshot6(), &path);
    assert_eq!(raw_snapshot(&path)[0], 6, "written by the release before");
    // Opened at its store schema first: the snapshot's conversion alone, no store migration.
    let at_schema_3 = OpenOptions {
        schema: 3,
        ..Default::default()
    };
    let store = SledStore::open(&path, at_schema_3).unwrap();
    assert!(store.migrated_backup.is_none(), "no store migration");
    assert!(store.snapshot_discarded.is_none());
    let p = store.projections().clone();
    let shop = &p.apps[SHOP];
    assert_eq!(shop.intent.revision, Some(sha(SHOP, 3)));
    assert_eq!(shop.revisions.len(), RECENT + 1);
    assert!(shop.revisions.contains_key(&sha(SHOP, 3)), "pinned");
    assert_eq!(p.stored(SHOP).count, 20 - RECENT as u64 - 1);
    assert_eq!(p.apps["web"].revisions.len(), 2);
    assert_whole_is_the_fold(&store, "converted");
    let rows = query::revisions(&store, &p, SHOP).unwrap();
    assert_eq!(rows.len(), 20);
    assert_eq!(rows.last().unwrap().sha, sha(SHOP, 1));
    assert_eq!(
        rows.last().unwrap().author_email.as_deref(),
        Some("dev@example.com")
    );
    assert!(query::show(&store, &p, SHOP, &sha(SHOP, 1)).is_ok());
    store.close().unwrap();
    assert_eq!(raw_snapshot(&path)[0], PROJECTIONS_SNAPSHOT_VERSION);
    assert_eq!(PROJECTIONS_SNAPSHOT_VERSION, 7);
    // Then as this release opens it: migration 0013 (object copies) runs on the converted
    // store and keeps its version-7 snapshot.
    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    assert!(store.migrated_backup.is_some(), "migration 0013 ran");
    assert!(store.snapshot_discarded.is_none());
    // The migration's StoreMigrated event is the only thing folded since.
    let mut expected = p.clone();
    expected.covered_seq += 1;
    assert_eq!(store.projections(), &expected);
    assert_whole_is_the_fold(&store, "reopened");
    store.close().unwrap();
}
