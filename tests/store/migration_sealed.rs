//! Migration 0003 (sealed Secret values in recorded sets) against a store written by the
//! previous reckon (commit c05680b, `reckon sync` of three revisions against a real cluster:
//! tests/fixtures/store-0.1-hashed-secrets). Nothing is rewritten on open; old records read
//! back: a revision without Secrets rolls back from its record with the digests it was applied
//! with, and one with a Secret names the Secret it cannot restore (the pass then renders it from
//! Git, tested live in tests/live/rollback.rs).

use crate::support::store as common;

use common::copy_dir;
use reckon::event::{Digest, Event, IntentKind};
use reckon::reconcile::rollback::{self, RollbackTarget};
use reckon::render::{self, RenderError, digest::SealError};
use reckon::store::verify::verify;
use reckon::store::{EventRead, OpenOptions, SledStore, writer};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-0.1-hashed-secrets")
}

/// The fixture's three revisions, oldest first, as its Git history had them.
const BLUE: &str = "5ffc8cdf194751bafc304cb615833403f4f2e204";
const RED_CREDS: &str = "855cd1bf6f9090d61b58df17e2ff3696b61431a7";
const GREEN_CREDS: &str = "1aaa70ea41e502bb48cfa779bdae6b0244e13793";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_before_sealing_reads_back_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    copy_dir(&fixture(), &path);
    let key = reckon::agent::key::load_or_create(&path.join("secret.key")).unwrap();
    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    // Sealing changed no layout: the only migrations are the later drift index (0004) and
    // object copies (0013).
    let steps: Vec<String> = store
        .reader()
        .iter_from(1)
        .filter_map(|e| match e.unwrap().body.event {
            reckon::event::Event::StoreMigrated(m) => Some(m.step),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            "0004_drift_index".to_string(),
            "0013_object_copies".to_string()
        ]
    );
    let r = verify(&store.reader(), &mut |_| {}).unwrap();
    assert!(r.ok(), "{:?}", r.problems);

    // What each revision recorded: its set and each object's applied digest.
    let reader = store.reader();
    let mut sets: BTreeMap<String, Digest> = BTreeMap::new();
    let mut applied: BTreeMap<(String, String), Digest> = BTreeMap::new();
    for e in reader.iter_from(1) {
        match e.unwrap().body.event {
            Event::RenderSucceeded(r) => {
                sets.insert(r.revision, r.digest);
            }
            Event::ObjectApplied(a) => {
                applied.insert((a.revision, a.object.object.name), a.digest);
            }
            _ => {}
        }
    }
    assert_eq!(sets.len(), 3);
    let set = |rev: &str| reader.blob(&sets[rev]).unwrap().expect("the blob is there");

    // The previous version kept keyed hashes only: no plain value, no sealed one.
    let red = String::from_utf8(set(RED_CREDS)).unwrap();
    assert!(red.contains("hmac-sha256:"), "{red}");
    assert!(!red.contains("fixture-one-plover") && !red.contains("sealed-"));

    // A set without Secrets reads back as it was applied: same object digests.
    let blue = render::from_recorded(&set(BLUE), &key).unwrap();
    assert_eq!(blue.objects.len(), 1);
    let settings = &blue.objects[0];
    assert_eq!(settings.manifest["data"]["color"], "blue");
    assert_eq!(
        Some(settings.digest),
        Some(applied[&(BLUE.to_string(), "settings".to_string())])
    );

    // A set with a Secret names the Secret and why it cannot be restored from the record.
    for rev in [RED_CREDS, GREEN_CREDS] {
        match render::from_recorded(&set(rev), &key) {
            Err(RenderError::Sealed {
                object,
                source: SealError::HashedOnly { field, key },
            }) => {
                assert_eq!(
                    (object.as_str(), field.as_str(), key.as_str()),
                    ("Secret/creds", "data", "password")
                );
            }
            other => panic!("{rev}: expected a hashed-only Secret, got {other:?}"),
        }
    }

    // Rollback intents resolve against the old revision table and are recorded as before.
    let (handle, task) = writer::spawn(store);
    let plan = rollback::request_rollback(
        &handle,
        "shop",
        RollbackTarget::Steps(2),
        "alice".into(),
        Some("back to blue".into()),
    )
    .await
    .unwrap();
    assert_eq!(plan.revision, BLUE);
    assert_eq!(plan.previous.as_deref(), Some(GREEN_CREDS));
    let state = handle.app_state("shop").await.unwrap().unwrap();
    assert_eq!(state.intent.kind, IntentKind::Rollback);
    assert_eq!(state.intent.revision.as_deref(), Some(BLUE));
    assert_eq!(state.intent.actor.as_deref(), Some("alice"));
    handle.close().await.unwrap();
    task.await.unwrap().unwrap();
}
