//! `reckon store …` end to end through the binary, and crash safety: a child process that
//! appends in a loop is SIGKILLed; every batch it reported as flushed must be there afterwards.

use crate::support::store as common;

use common::*;
use reckon::store::verify::verify;
use reckon::store::{EventRead, EventStore, OpenOptions, SledStore};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn reckon(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reckon"))
        .arg("store")
        .args(args)
        .arg("--store")
        .arg(store)
        .env_remove("RECKON_STORE")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn verify_export_import_compact_rebuild_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let mut store = create(&src);
    fill(&mut store, 0, 500, 100);
    store.close().unwrap();

    let out = reckon(&src, &["verify"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("checked 500 events"), "{stdout}");
    assert!(stdout.contains("OK"), "{stdout}");

    let export = dir.path().join("export.jsonl");
    let out = reckon(
        &src,
        &[
            "export",
            "--format",
            "jsonl",
            "--with-blobs",
            "-o",
            export.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dst = dir.path().join("dst");
    let out = reckon(&dst, &["import", "-i", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("imported 500 events"));
    // Exporting the imported store yields the same bytes.
    let again = dir.path().join("again.jsonl");
    let out = reckon(
        &dst,
        &["export", "--with-blobs", "-o", again.to_str().unwrap()],
    );
    assert!(out.status.success());
    assert_eq!(
        std::fs::read(&export).unwrap(),
        std::fs::read(&again).unwrap()
    );

    let out = reckon(&src, &["compact", "--app", "app-0", "--max-bytes", "3000"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("removed"),
        "{}",
        text(&out.stdout)
    );
    let out = reckon(&src, &["verify"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("tombstones"));
    let out = reckon(&src, &["recover"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("nothing to recover"));
    let out = reckon(&src, &["rebuild"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("3 apps"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn verify_exits_non_zero_and_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = create(&path);
    fill(&mut store, 0, 100, 50);
    store.close().unwrap();
    {
        let (db, t) = raw_events(&path);
        edit_record(&t, 30, |_| false);
        db.flush().unwrap();
        release_raw(&path, db, t);
    }
    let out = reckon(&path, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("checked 99 events"), "{stdout}");
    assert!(stdout.contains("PROBLEM: gap: expected seq 30"), "{stdout}");
}

#[test]
fn bad_stores_fail_with_the_path_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x"), "x").unwrap();
    let out = reckon(dir.path(), &["verify"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&dir.path().display().to_string()) && err.contains("not a reckon store"),
        "{err}"
    );

    let missing = dir.path().join("nope");
    let out = reckon(&missing, &["verify"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no reckon store here"));
    assert!(!missing.exists(), "verify must not create a store");

    let newer = dir.path().join("newer");
    std::fs::create_dir(&newer).unwrap();
    std::fs::write(newer.join("RECKON_STORE"), "reckon-store\nschema 99\n").unwrap();
    let out = reckon(&newer, &["export"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("schema 99 is newer"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(&newer).unwrap().count(), 1, "untouched");
}

const CHILD_ENV: &str = "RECKON_CRASH_CHILD_STORE";

/// The child side of the crash test: appends and flushes batches forever, reporting each flushed
/// head on stdout. Runs only when the crash test starts it.
#[test]
#[ignore]
fn crash_child_appends_until_killed() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let mut store = SledStore::open(&path, OpenOptions::create()).unwrap();
    let mut i = store.head().map(|h| h.0).unwrap_or(0);
    loop {
        fill(&mut store, i, 50, 50);
        i += 50;
        let (seq, hash) = store.head().unwrap();
        println!("flushed {seq} {hash}");
    }
}

#[test]
fn sigkill_during_appends_loses_no_flushed_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "cli::crash_child_appends_until_killed",
                "--nocapture",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut last = None;
        // Let it write a while, then kill it mid-loop (Child::kill is SIGKILL on Unix).
        let target = 600 * (round + 1);
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("flushed ") {
                let mut it = rest.split(' ');
                let seq: u64 = it.next().unwrap().parse().unwrap();
                last = Some((seq, it.next().unwrap().to_owned()));
                if seq >= target {
                    break;
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let (flushed, hash) = last.expect("the child reported flushed batches");

        let store = SledStore::open(&path, OpenOptions::default()).unwrap();
        let (head, _) = store.head().unwrap();
        assert!(
            head >= flushed,
            "round {round}: head {head} < flushed {flushed}"
        );
        assert_eq!(store.get(flushed).unwrap().unwrap().hash.to_hex(), hash);
        for seq in 1..=flushed {
            assert!(
                store.get(seq).unwrap().is_some(),
                "round {round}: seq {seq} lost"
            );
        }
        let r = verify(&store.reader(), &mut |_| {}).unwrap();
        assert!(r.ok(), "round {round}: {:?}", r.problems);
        assert_eq!(r.events, head);
        store.close().unwrap();
    }
}
