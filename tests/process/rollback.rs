//! `reckon rollback` and `reckon resume` as processes, with the agent (`reckon run`) in between:
//! the agent observes new commits but does not undo a rollback, a restarted agent stays pinned,
//! and resume follows Git again. The recorded intents carry the OS user (or `--actor`) and the
//! reason; bad targets fail with a message naming them.

use crate::support;
use support::events;
use support::workload::config_map;

use reckon::event::{Envelope, Event, IntentKind};
use reckon_testenv::git::Fixture;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::TestNamespace;
use support::sync::api_for;

fn reckon(dir: &Path) -> Command {
    let mut c = support::reckon(dir);
    c.env("RUST_LOG", "warn").env("USER", "alice");
    c
}

fn run_ok(dir: &Path, args: &[&str]) -> String {
    let out = reckon(dir).args(args).output().unwrap();
    let text = show(&out);
    assert!(out.status.success(), "reckon {args:?}: {text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the agent for `seconds` (it polls every second), then stops it with SIGTERM. Meanwhile
/// the store is the agent's: `reckon rollback` says so instead of a bare lock error.
fn run_agent_for(dir: &Path, seconds: u64) {
    let mut agent = reckon(dir)
        .arg("run")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(seconds));
    let out = reckon(dir)
        .args(["rollback", "shop", "--steps", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        show(&out).contains(
            "opening the store ./reckon-store: it is in use by another reckon process (a running agent?)"
        ),
        "{}",
        show(&out)
    );
    support::signal(&agent, "-TERM");
    let status = support::wait_exit(&mut agent, Duration::from_secs(60));
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
}

/// Objects applied or pruned from event `from` on: (what, revision), sorted (applies run
/// concurrently).
fn changes_since(events: &[Envelope], from: u64) -> Vec<(String, String)> {
    let mut changes: Vec<(String, String)> = events
        .iter()
        .filter(|e| e.body.seq >= from)
        .filter_map(|e| match &e.body.event {
            Event::ObjectApplied(a) => {
                Some((format!("applied {}", a.object.name), a.revision.clone()))
            }
            Event::ObjectPruned(p) => {
                Some((format!("pruned {}", p.object.name), p.revision.clone()))
            }
            _ => None,
        })
        .collect();
    changes.sort();
    changes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_does_not_undo_a_rollback_and_stays_pinned_across_a_restart() {
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "rbagent").await;
    let f = Fixture::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("reckon.yaml"),
        support::one_app_config(
            "shop",
            &f.file_url(),
            "app",
            Some("1s"),
            &support::kubeconfig(),
            &ns.name,
        ),
    )
    .unwrap();
    let commit = |message: &str, files: &[(&str, Option<String>)]| {
        let mut c = f.commit(message);
        for (path, text) in files {
            c = match text {
                Some(t) => c.write(path, t),
                None => c.remove(path),
            };
        }
        let sha = c.create().unwrap();
        f.push().unwrap();
        sha
    };
    let cms = api_for(&client, "v1", "ConfigMap", "configmaps", Some(&ns.name));
    let color = |name: &'static str| {
        let cms = cms.clone();
        async move {
            cms.get_opt(name)
                .await
                .unwrap()
                .map(|cm| cm.data["data"]["color"].as_str().unwrap().to_string())
        }
    };

    let c1 = commit(
        "Blue, with legacy",
        &[
            ("app/settings.yaml", Some(config_map("settings", "blue"))),
            ("app/legacy.yaml", Some(config_map("legacy", "grey"))),
        ],
    );
    run_ok(dir.path(), &["sync", "shop"]);
    let c2 = commit(
        "Red, no legacy",
        &[
            ("app/settings.yaml", Some(config_map("settings", "red"))),
            ("app/legacy.yaml", None),
        ],
    );
    run_ok(dir.path(), &["sync", "shop"]);
    assert_eq!(color("legacy").await, None);

    // Bad targets fail by name and record nothing.
    let before = events(dir.path()).len();
    let out = reckon(dir.path())
        .args(["rollback", "shop", "--to", "main"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        show(&out).contains("App shop: \"main\" is not a revision"),
        "{}",
        show(&out)
    );
    let out = reckon(dir.path())
        .args(["rollback", "shop", "--steps", "5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        show(&out).contains("cannot go back 5 applied revision(s)"),
        "{}",
        show(&out)
    );
    let out = reckon(dir.path())
        .args(["resume", "shop"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        show(&out).contains("App shop is not pinned"),
        "{}",
        show(&out)
    );
    assert_eq!(events(dir.path()).len(), before);

    // Roll back (the actor is the OS user) and apply in the same command.
    let out = run_ok(
        dir.path(),
        &[
            "rollback",
            "shop",
            "--steps",
            "1",
            "--reason",
            "red breaks checkout",
        ],
    );
    assert!(
        out.contains(&format!(
            "shop: rolled back to {} (was {})",
            &c1[..12],
            &c2[..12]
        )),
        "{out}"
    );
    assert!(out.contains("shop: synced"), "{out}");
    assert_eq!(color("legacy").await.as_deref(), Some("grey"));
    assert_eq!(color("settings").await.as_deref(), Some("blue"));
    let log = events(dir.path());
    let rollback = log
        .iter()
        .find(|e| matches!(&e.body.event, Event::IntentRecorded(i) if i.intent == IntentKind::Rollback))
        .expect("the rollback is recorded");
    assert_eq!(rollback.body.actor.as_deref(), Some("alice"));
    let Event::IntentRecorded(intent) = &rollback.body.event else {
        unreachable!()
    };
    assert_eq!(intent.revision.as_deref(), Some(c1.as_str()));
    assert_eq!(intent.reason.as_deref(), Some("red breaks checkout"));
    assert_eq!(
        changes_since(&log, rollback.body.seq),
        vec![
            ("applied legacy".to_string(), c1.clone()),
            ("applied settings".to_string(), c1.clone()),
        ]
    );
    let pinned_at = log.last().unwrap().body.seq + 1;

    // A new commit: the agent observes it and applies nothing.
    let c3 = commit(
        "Yellow",
        &[("app/settings.yaml", Some(config_map("settings", "yellow")))],
    );
    run_agent_for(dir.path(), 4);
    assert_eq!(color("settings").await.as_deref(), Some("blue"));
    // Restarted, with another new commit: still pinned, still nothing applied.
    let c4 = commit(
        "Purple",
        &[("app/settings.yaml", Some(config_map("settings", "purple")))],
    );
    run_agent_for(dir.path(), 4);
    assert_eq!(color("settings").await.as_deref(), Some("blue"));
    assert_eq!(color("legacy").await.as_deref(), Some("grey"));
    let log = events(dir.path());
    let observed: Vec<&str> = log
        .iter()
        .filter(|e| e.body.seq >= pinned_at)
        .filter_map(|e| match &e.body.event {
            Event::CommitObserved(c) => Some(c.sha.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        observed,
        vec![c3.as_str(), c4.as_str()],
        "observed, by both runs"
    );
    let starts = log
        .iter()
        .filter(|e| e.body.seq >= pinned_at && matches!(e.body.event, Event::AgentStarted(_)))
        .count();
    assert_eq!(starts, 2);
    assert_eq!(
        changes_since(&log, pinned_at),
        vec![],
        "nothing applied while pinned"
    );
    // `reckon sync` keeps it there too, and says why.
    let out = run_ok(dir.path(), &["sync", "shop"]);
    assert!(
        out.contains(
            "shop: pinned by a rollback; new commits are not applied until `reckon resume shop`"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!("shop: in sync at {}", &c1[..12])),
        "{out}"
    );
    let log = events(dir.path());
    assert_eq!(changes_since(&log, pinned_at), vec![]);

    // Resume by bob: Git's head again.
    let before = log.last().unwrap().body.seq + 1;
    let out = run_ok(
        dir.path(),
        &["resume", "shop", "--actor", "bob", "--reason", "fixed"],
    );
    assert!(
        out.contains(&format!(
            "shop: resumed by bob (was pinned to {})",
            &c1[..12]
        )),
        "{out}"
    );
    assert_eq!(color("settings").await.as_deref(), Some("purple"));
    assert_eq!(color("legacy").await, None);
    let log = events(dir.path());
    let resume = log
        .iter()
        .find(|e| e.body.seq >= before && matches!(&e.body.event, Event::IntentRecorded(_)))
        .unwrap();
    assert_eq!(resume.body.actor.as_deref(), Some("bob"));
    assert_eq!(
        resume.body.event,
        Event::IntentRecorded(reckon::event::IntentRecorded {
            intent: IntentKind::Resume,
            revision: None,
            reason: Some("fixed".into()),
        })
    );
    assert_eq!(
        changes_since(&log, before),
        vec![
            ("applied settings".to_string(), c4.clone()),
            ("pruned legacy".to_string(), c4.clone()),
        ]
    );
}

/// Where `$USER` is unset (a Pod, a CI job), rollback and resume record the OS account name of
/// the process's uid instead of refusing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_user_the_actor_is_the_os_account() {
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "rbnouser").await;
    let f = Fixture::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("reckon.yaml"),
        support::one_app_config(
            "shop",
            &f.file_url(),
            "app",
            None,
            &support::kubeconfig(),
            &ns.name,
        ),
    )
    .unwrap();
    for colour in ["blue", "red"] {
        f.commit(colour)
            .write("app/settings.yaml", config_map("settings", colour))
            .create()
            .unwrap();
        f.push().unwrap();
        run_ok(dir.path(), &["sync", "shop"]);
    }
    let account = Command::new("id").arg("-un").output().unwrap();
    assert!(account.status.success(), "id -un: {}", show(&account));
    let account = String::from_utf8(account.stdout)
        .unwrap()
        .trim()
        .to_string();
    let anonymous = |args: &[&str]| {
        let out = reckon(dir.path())
            .env_remove("USER")
            .env_remove("USERNAME")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "reckon {args:?}: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = anonymous(&["rollback", "shop", "--steps", "1", "--no-sync"]);
    assert!(out.contains(&format!("by {account};")), "{out}");
    let out = anonymous(&["resume", "shop", "--no-sync"]);
    assert!(out.contains(&format!("resumed by {account} ")), "{out}");
    let intents: Vec<(IntentKind, Option<String>)> = events(dir.path())
        .iter()
        .filter_map(|e| match &e.body.event {
            Event::IntentRecorded(i) if i.intent != IntentKind::Follow => {
                Some((i.intent, e.body.actor.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        intents,
        [
            (IntentKind::Rollback, Some(account.clone())),
            (IntentKind::Resume, Some(account)),
        ]
    );
}
