//! Migrations against a committed store written by the previous schema (tests/fixtures/store-v1),
//! plus the generator that wrote it.

mod common;

use common::*;
use reckon::event::{Event, EventKind};
use reckon::store::verify::verify;
use reckon::store::{EventRead, EventStore, OpenOptions, Query, STORE_SCHEMA, Selector, SledStore};
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1")
}

const FIXTURE_EVENTS: u64 = 60;

/// Regenerates the fixture with the schema-1 layout. Run only when the fixture must change:
/// `cargo test --test migration -- --ignored generate_v1_fixture`
#[test]
#[ignore]
fn generate_v1_fixture() {
    let path = fixture();
    let _ = std::fs::remove_dir_all(&path);
    let mut store = SledStore::open(
        &path,
        OpenOptions {
            create: true,
            schema: 1,
            cache_bytes: 1 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    fill(&mut store, 0, FIXTURE_EVENTS, 20);
    assert_eq!(store.schema(), 1);
    store.close().unwrap();
}

#[test]
fn the_v1_fixture_migrates_to_the_current_schema_after_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    copy_dir(&fixture(), &path);
    let original = snapshot_dir(&path);
    assert!(
        std::fs::read_to_string(path.join("RECKON_STORE"))
            .unwrap()
            .contains("schema 1")
    );

    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(store.schema(), STORE_SCHEMA);
    // The backup is a byte-for-byte copy of the store as it was.
    let backup = store.migrated_backup.clone().expect("a backup was taken");
    let rel = |v: Vec<(String, Vec<u8>)>, root: &Path| -> Vec<(String, Vec<u8>)> {
        v.into_iter()
            .map(|(p, b)| (p.replace(&root.display().to_string(), ""), b))
            .collect()
    };
    assert_eq!(rel(snapshot_dir(&backup), &backup), rel(original, &path));

    // The migration is an event: the newest one, by the new kind index too.
    let (head_seq, _) = store.head().unwrap();
    assert_eq!(head_seq, FIXTURE_EVENTS + 1);
    let migrated = store
        .query(&Query::new(Selector::Kind(EventKind::StoreMigrated)))
        .unwrap()
        .events;
    assert_eq!(migrated.len(), 1);
    match &migrated[0].body.event {
        Event::StoreMigrated(m) => {
            assert_eq!((m.from_schema, m.to_schema), (1, 2));
            assert_eq!(m.step, "0002_kind_time_indexes");
            assert_eq!(m.backup, backup.display().to_string());
        }
        other => panic!("{other:?}"),
    }
    // The new indexes cover the old events: compare with a brute-force filter.
    let all = store
        .query(&Query::new(Selector::All).oldest_first().limit(1000))
        .unwrap()
        .events;
    let commits: Vec<u64> = all
        .iter()
        .filter(|e| e.body.event.kind() == EventKind::CommitObserved)
        .map(|e| e.body.seq)
        .collect();
    assert!(!commits.is_empty());
    let by_index: Vec<u64> = store
        .query(
            &Query::new(Selector::Kind(EventKind::CommitObserved))
                .oldest_first()
                .limit(1000),
        )
        .unwrap()
        .events
        .iter()
        .map(|e| e.body.seq)
        .collect();
    assert_eq!(by_index, commits);
    let r = verify(&store.reader(), &mut |_| {}).unwrap();
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!(r.events, FIXTURE_EVENTS + 1);
    store.close().unwrap();
    assert!(
        std::fs::read_to_string(path.join("RECKON_STORE"))
            .unwrap()
            .contains(&format!("schema {STORE_SCHEMA}"))
    );

    // Opening again does not migrate again.
    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    assert!(store.migrated_backup.is_none());
    assert_eq!(store.head().unwrap().0, FIXTURE_EVENTS + 1);
}
