//! What `store verify` proves against someone with write access to the store's disk: a history
//! edited and re-chained passes the chain check but not signed checkpoints taken before; a
//! projections snapshot edited on disk (it drives pruning and is not in the chain) fails the
//! rebuild-and-compare; a snapshot from another history is discarded on open and reported.
//! Real stores in temp dirs, the attacker working only with the files and reckon's own code.

use crate::support::store as common;

use chrono::Utc;
use common::*;
use reckon::event::{Digest, Envelope, EnvelopeBody};
use reckon::store::checkpoint::{self, Signer};
use reckon::store::projection::{self, InventoryEntry};
use reckon::store::verify::{self, Problem, Report};
use reckon::store::{EventStore, OpenOptions, SledStore, exchange};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;

/// The checkpoint key the operator keeps: the test's, and someone else's.
fn signer() -> Signer {
    Signer::from_seed([11; 32])
}

/// `verify` with the checkpoints in `file`, checked with `key`, as `store verify --checkpoint`.
fn verify_with(path: &Path, file: &Path, key: &ed25519_dalek::VerifyingKey) -> Report {
    let store = SledStore::open(path, OpenOptions::default()).unwrap();
    let mut sigs = Report::default();
    let anchors = verify::check_checkpoints(&checkpoint::read(file).unwrap(), key, &mut sigs);
    let mut report = verify::verify_against(&store.reader(), &anchors, &mut |_| {}).unwrap();
    for p in sigs.problems {
        report.add(p);
    }
    verify::check_projections(&store, &mut report).unwrap();
    store.close().unwrap();
    report
}

/// What an attacker with the store's disk does: export, change who recorded event `target`,
/// recompute that event's hash and every later one (each links to the one before), import
/// into a new store and put it in the old one's place. Every line the import reads is
/// self-consistent, so the import accepts it.
fn rewrite_and_rechain(path: &Path, target: u64) {
    let export = path.with_extension("jsonl");
    {
        let store = SledStore::open(path, OpenOptions::default()).unwrap();
        let mut out = std::fs::File::create(&export).unwrap();
        exchange::export(&store.reader(), &mut out, true, &mut |_| {}).unwrap();
        store.close().unwrap();
    }
    let originals: Vec<Envelope> = {
        let store = SledStore::open(path, OpenOptions::default()).unwrap();
        let all = store.reader().iter_from(1).map(|e| e.unwrap()).collect();
        store.close().unwrap();
        all
    };
    let mut prev = Digest::ZERO;
    let mut lines = Vec::new();
    for line in BufReader::new(std::fs::File::open(&export).unwrap()).lines() {
        let line = line.unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let Some(seq) = v.get("seq").and_then(|s| s.as_u64()) else {
            lines.push(line); // blobs
            continue;
        };
        let original = &originals[seq as usize - 1];
        assert_eq!(original.body.seq, seq);
        let mut body: EnvelopeBody = original.body.clone();
        if seq == target {
            body.actor = Some("mallory".into());
            v["actor"] = serde_json::json!("mallory");
        }
        body.prev_hash = prev;
        let (env, _) = Envelope::seal(body).unwrap();
        v["prev_hash"] = serde_json::to_value(env.body.prev_hash).unwrap();
        v["hash"] = serde_json::to_value(env.hash).unwrap();
        prev = env.hash;
        lines.push(v.to_string());
    }
    let forged = path.with_extension("forged");
    let mut input = std::io::Cursor::new(lines.join("\n").into_bytes());
    exchange::import(&forged, &mut input, &mut |_| {}).unwrap();
    std::fs::remove_dir_all(path).unwrap();
    std::fs::rename(&forged, path).unwrap();
}

#[test]
fn a_rewritten_and_rechained_history_passes_plain_verify_but_not_its_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let cps = dir.path().join("outside/checkpoints.jsonl");
    std::fs::create_dir_all(cps.parent().unwrap()).unwrap();
    let s = signer();
    let mut store = create(&path);
    fill(&mut store, 0, 120, 40);
    store.close().unwrap();
    let first = checkpoint::of_store(&path, &s, Utc::now())
        .unwrap()
        .unwrap();
    assert_eq!(first.seq, 120);
    checkpoint::append(&cps, &first).unwrap();
    let mut store = SledStore::open(&path, OpenOptions::default()).unwrap();
    fill(&mut store, 120, 60, 40);
    store.close().unwrap();
    checkpoint::append(
        &cps,
        &checkpoint::of_store(&path, &s, Utc::now())
            .unwrap()
            .unwrap(),
    )
    .unwrap();

    // Untouched: the log matches both checkpoints.
    let r = verify_with(&path, &cps, &s.public_key());
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!(r.checkpoints, 2);

    rewrite_and_rechain(&path, 50);
    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(
        store
            .reader()
            .iter_from(50)
            .next()
            .unwrap()
            .unwrap()
            .body
            .actor
            .as_deref(),
        Some("mallory"),
        "the history was rewritten"
    );
    // The chain is whole again: verify without checkpoints cannot tell.
    let plain = verify::verify(&store.reader(), &mut |_| {}).unwrap();
    assert!(plain.ok(), "{:?}", plain.problems);
    store.close().unwrap();

    let r = verify_with(&path, &cps, &s.public_key());
    assert!(!r.ok());
    match &r.problems[..] {
        [Problem::Checkpoint { seq: 120, reason }] => {
            assert!(reason.contains("rewritten"), "{reason}")
        }
        other => panic!("expected the first checkpoint (seq 120) to fail: {other:?}"),
    }

    // Through the binary, as an operator runs it: exit 1, the checkpoint's seq named.
    let out = Command::new(env!("CARGO_BIN_EXE_reckon"))
        .args(["store", "--store"])
        .arg(&path)
        .args(["verify", "--checkpoint"])
        .arg(&cps)
        .args(["--checkpoint-key", &hex::encode(s.public_key().to_bytes())])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("checkpoint of seq 120"), "{stdout}");
}

#[test]
fn checkpoints_signed_with_another_key_or_altered_prove_nothing_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let cps = dir.path().join("checkpoints.jsonl");
    let mut store = create(&path);
    fill(&mut store, 0, 30, 10);
    store.close().unwrap();
    // The attacker signs the head of their own history with their own key.
    let theirs = Signer::from_seed([66; 32]);
    checkpoint::append(
        &cps,
        &checkpoint::of_store(&path, &theirs, Utc::now())
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let r = verify_with(&path, &cps, &signer().public_key());
    assert!(
        matches!(&r.problems[..], [Problem::Checkpoint { seq: 30, reason }] if reason.contains("not the key given")),
        "{:?}",
        r.problems
    );
    // A genuine line whose hash was edited to match a rewritten log.
    let mut cp = checkpoint::of_store(&path, &signer(), Utc::now())
        .unwrap()
        .unwrap();
    cp.hash = Digest([9; 32]);
    std::fs::write(&cps, format!("{}\n", cp.to_line())).unwrap();
    let r = verify_with(&path, &cps, &signer().public_key());
    assert!(
        matches!(&r.problems[..], [Problem::Checkpoint { seq: 30, reason }] if reason.contains("does not verify")),
        "{:?}",
        r.problems
    );
}

#[test]
fn a_checkpoint_beyond_the_log_reveals_a_store_replaced_by_an_older_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let old = dir.path().join("old-copy");
    let cps = dir.path().join("checkpoints.jsonl");
    let mut store = create(&path);
    fill(&mut store, 0, 30, 10);
    store.close().unwrap();
    copy_dir(&path, &old);
    let mut store = SledStore::open(&path, OpenOptions::default()).unwrap();
    fill(&mut store, 30, 30, 10);
    store.close().unwrap();
    checkpoint::append(
        &cps,
        &checkpoint::of_store(&path, &signer(), Utc::now())
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let r = verify_with(&old, &cps, &signer().public_key());
    assert!(
        matches!(&r.problems[..], [Problem::Checkpoint { seq: 60, reason }] if reason.contains("ends at seq 30")),
        "{:?}",
        r.problems
    );
}

/// The raw `snapshots` tree of a closed store.
fn with_raw_snapshot(path: &Path, f: impl FnOnce(&sled::Tree)) {
    let db = reckon::store::sled_engine::sled_config(path, 1 << 20)
        .open()
        .unwrap();
    let t = db.open_tree("snapshots").unwrap();
    f(&t);
    t.flush().unwrap();
    drop(t);
    reckon::store::sled_engine::release(path, db).unwrap();
}

#[test]
fn a_snapshot_edited_to_change_pruning_is_caught_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut store = create(&path);
    fill(&mut store, 0, 120, 40);
    let app = "app-1".to_string();
    let owned = store.projections().apps[&app].inventory.clone();
    assert!(!owned.is_empty(), "the App owns objects");
    store.close().unwrap();
    // An object the App never applied, slipped into its inventory: the next sync of a revision
    // without it would prune (delete) it.
    let victim =
        reckon::event::samples::object("apps", "v1", "Deployment", Some("kube-system"), "coredns");
    with_raw_snapshot(&path, |t| {
        let bytes = t.get(b"projections").unwrap().unwrap();
        assert_eq!(bytes[0], projection::PROJECTIONS_SNAPSHOT_VERSION);
        let (mut p, hash) = projection::decode_projections(&bytes).unwrap();
        let template: InventoryEntry = owned.values().next().unwrap().clone();
        p.apps.get_mut(&app).unwrap().inventory.insert(
            victim.identity(),
            InventoryEntry {
                object: victim.clone(),
                ..template
            },
        );
        // The hash of the last folded event is kept: it ties the snapshot to this log, which
        // is unchanged.
        t.insert(
            b"projections",
            projection::encode_projections(&p, hash).unwrap(),
        )
        .unwrap();
    });
    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    assert!(
        store.projections().apps[&app]
            .inventory
            .contains_key(&victim.identity()),
        "the agent would act on the edited snapshot"
    );
    let mut r = verify::verify(&store.reader(), &mut |_| {}).unwrap();
    assert!(r.ok(), "the log itself is untouched: {:?}", r.problems);
    verify::check_projections(&store, &mut r).unwrap();
    match &r.problems[..] {
        [Problem::Snapshot { reason }] => {
            assert!(reason.contains("app-1"), "{reason}");
            assert!(reason.contains(&victim.identity()), "{reason}");
        }
        other => panic!("expected a snapshot problem: {other:?}"),
    }
    store.close().unwrap();
}

#[test]
fn a_snapshot_from_another_history_is_rebuilt_on_open_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut store = create(&path);
    fill(&mut store, 0, 60, 20);
    store.close().unwrap();
    with_raw_snapshot(&path, |t| {
        let bytes = t.get(b"projections").unwrap().unwrap();
        let (p, _) = projection::decode_projections(&bytes).unwrap();
        t.insert(
            b"projections",
            projection::encode_projections(&p, Digest([1; 32])).unwrap(),
        )
        .unwrap();
    });
    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    let reason = store.snapshot_discarded.clone().expect("discarded");
    assert!(reason.contains("another history"), "{reason}");
    let mut r = verify::verify(&store.reader(), &mut |_| {}).unwrap();
    verify::check_projections(&store, &mut r).unwrap();
    assert!(
        matches!(&r.problems[..], [Problem::Snapshot { .. }]),
        "{:?}",
        r.problems
    );
    store.close().unwrap();
    // Rebuilt and rewritten: the next open finds it whole.
    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    assert!(store.snapshot_discarded.is_none());
    store.close().unwrap();
}

/// `reckon store checkpoint` and `checkpoint-key` through the binary: the line it appends
/// verifies with the public key it prints, and the key file is created once.
#[test]
fn the_checkpoint_commands_sign_the_head_with_the_key_they_print() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let key = dir.path().join("keys/checkpoint.key");
    let cps = dir.path().join("checkpoints.jsonl");
    let mut store = create(&path);
    fill(&mut store, 0, 20, 10);
    store.close().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_reckon"))
            .args(["store", "--store"])
            .arg(&path)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let key_arg = key.to_str().unwrap();
    run(&[
        "checkpoint",
        "--checkpoint-key",
        key_arg,
        "--checkpoint-file",
        cps.to_str().unwrap(),
    ]);
    let public = run(&["checkpoint-key", "--checkpoint-key", key_arg]);
    let public = checkpoint::parse_public_key(public.trim()).unwrap();
    let read = checkpoint::read(&cps).unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].seq, 20);
    read[0].verify(&public).unwrap();
    let out = run(&[
        "verify",
        "--checkpoint",
        cps.to_str().unwrap(),
        "--checkpoint-key",
        &hex::encode(public.to_bytes()),
    ]);
    assert!(out.contains("matches every checkpoint"), "{out}");
}
