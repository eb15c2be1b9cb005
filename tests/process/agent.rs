//! `reckon run`, `reckon sync` and `reckon diff` as processes against the real control plane:
//! SIGTERM finishes and flushes (exit 0); SIGKILL in the middle of a sync, then a restart,
//! resumes from the log with no object applied twice and none lost; `diff` exits 1 while a
//! sync would change something and 0 after it.

use crate::support;
use support::{events, signal};

use reckon::event::{ApplyAction, Event};
use reckon_testenv::git::Fixture;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::TestNamespace;
use support::sync::api_for;

fn reckon(dir: &Path) -> Command {
    let mut c = support::reckon(dir);
    c.env("RUST_LOG", "warn");
    c
}

fn write_config(dir: &Path, url: &str, ns: &str) {
    std::fs::write(
        dir.join("reckon.yaml"),
        support::one_app_config("many", url, "app", Some("1s"), &support::kubeconfig(), ns),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_sync_the_agent_resumes_without_repeating_or_losing_anything() {
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "kill").await;
    let f = Fixture::new().unwrap();
    const N: usize = 300;
    let mut c = f.commit("Many");
    for i in 0..N {
        c = c.write(
            &format!("app/cm-{i:03}.yaml"),
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i:03}\ndata:\n  n: \"{i}\"\n"),
        );
    }
    c.create().unwrap();
    f.push().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &f.file_url(), &ns.name);

    let cms = api_for(&client, "v1", "ConfigMap", "configmaps", Some(&ns.name));
    let count = || async {
        cms.list(&kube::api::ListParams::default().labels("reckon.dev/app=many"))
            .await
            .unwrap()
            .items
            .len()
    };
    let mut agent = reckon(dir.path())
        .arg("run")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the sync is under way and not finished.
    let start = Instant::now();
    loop {
        let n = count().await;
        if (20..N).contains(&n) {
            break;
        }
        assert!(
            n < N,
            "the sync finished before it could be interrupted; raise N"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the sync never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&agent, "-KILL");
    let _ = agent.wait();
    let interrupted = count().await;
    assert!(
        interrupted < N,
        "killed mid-sync ({interrupted} of {N} applied)"
    );

    // Restart and let it finish, then stop it with SIGTERM: exit 0.
    let mut agent = reckon(dir.path())
        .arg("run")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while count().await < N {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the restarted agent did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The sync may still be recording its last outcomes: SIGTERM lets in-flight work finish.
    signal(&agent, "-TERM");
    let status = support::wait_exit(&mut agent, Duration::from_secs(60));
    assert!(status.success(), "SIGTERM exits 0: {status:?}");

    let events = events(dir.path());
    let mut applied: BTreeMap<String, Vec<ApplyAction>> = BTreeMap::new();
    for e in &events {
        if let Event::ObjectApplied(a) = &e.body.event {
            applied
                .entry(a.object.name.clone())
                .or_default()
                .push(a.action);
        }
    }
    assert_eq!(applied.len(), N, "every object recorded");
    let twice: Vec<_> = applied.iter().filter(|(_, a)| a.len() != 1).collect();
    assert!(
        twice.is_empty(),
        "applied (and recorded) once each: {twice:?}"
    );
    let starts = events
        .iter()
        .filter(|e| matches!(e.body.event, Event::SyncStarted(_)))
        .count();
    let finishes = events
        .iter()
        .filter(|e| matches!(e.body.event, Event::SyncFinished(_)))
        .count();
    assert_eq!(
        (starts, finishes),
        (2, 1),
        "the interrupted sync and the one that finished it"
    );
    let agent_starts = events
        .iter()
        .filter(|e| matches!(e.body.event, Event::AgentStarted(_)))
        .count();
    assert_eq!(agent_starts, 2);
    let commits = events
        .iter()
        .filter(|e| matches!(e.body.event, Event::CommitObserved(_)))
        .count();
    assert_eq!(commits, 1, "the restart resumed from the recorded head");

    let verify = reckon(dir.path())
        .args(["store", "verify"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_reports_changes_until_sync_applies_them() {
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "diff").await;
    let f = Fixture::new().unwrap();
    f.commit("Add")
        .write(
            "app/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  color: blue\n",
        )
        .create()
        .unwrap();
    f.push().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &f.file_url(), &ns.name);

    let out = reckon(dir.path()).args(["diff", "many"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("+ ConfigMap/") && stdout.contains("settings  create"),
        "{stdout}"
    );
    let cms = api_for(&client, "v1", "ConfigMap", "configmaps", Some(&ns.name));
    assert!(
        cms.get_opt("settings").await.unwrap().is_none(),
        "diff changes nothing"
    );

    let out = reckon(dir.path()).args(["sync", "many"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("created"),
        "progress names each object: {stdout}"
    );
    assert!(
        stdout.contains("synced") && stdout.contains("Succeeded"),
        "{stdout}"
    );

    let out = reckon(dir.path()).args(["diff", "many"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("no changes"), "{stdout}");

    // A manual edit shows up as a change a sync would make.
    let mut cm = cms.get("settings").await.unwrap();
    cm.data["data"]["color"] = "green".into();
    cm.metadata.managed_fields = None;
    cms.replace("settings", &Default::default(), &cm)
        .await
        .unwrap();
    let out = reckon(dir.path()).args(["diff", "many"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("/data/color: \"green\" -> \"blue\""),
        "{stdout}"
    );
}
