//! The query commands on a log produced by real syncs against the real control plane: three
//! commits by three authors (a field changed, a file added and one removed, so an object is
//! pruned), a manual drift by another field manager that the next sync puts back. Then every
//! query through the real `reckon` binary: `-o json` parsed and checked exactly, tables checked
//! for their key content, and `history --follow` seeing a sync made while it runs.
//!
//! One test per step. The steps that only read the log share one, built once per test run
//! (`support::fixture::shared`), each on a copy of its own; the steps that change it (a fourth
//! commit synced while `history --follow` runs, then a rollback) build their own.

use crate::support;

use chrono::{DateTime, Utc};
use reckon_testenv::git::{Fixture, Person};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::TestNamespace;
use support::sync::api_for;
use support::workload::config_map as cm;

fn reckon(dir: &Path) -> Command {
    let mut c = support::reckon(dir);
    c.env("RUST_LOG", "warn").env_remove("NO_COLOR");
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    let out = reckon(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "reckon {args:?}: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let out = run(dir, &args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "reckon {args:?} printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn text(dir: &Path, args: &[&str]) -> String {
    String::from_utf8(run(dir, args).stdout).unwrap()
}

/// `reckon sync`, retried while a follower holds the store for a moment.
fn sync(dir: &Path) {
    let start = Instant::now();
    loop {
        let out = reckon(dir).args(["sync", "shop"]).output().unwrap();
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            (err.contains("could not acquire lock") || err.contains("in use by another reckon"))
                && start.elapsed() < Duration::from_secs(30),
            "reckon sync: {:?}\n{}{err}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn kinds(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

fn time_of(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

/// The log every step queries: three commits by three authors synced with `reckon sync` (a field
/// changed, a file added and one removed, so an object is pruned) and a manual drift by another
/// field manager that the next sync put back. Fields drop in order: the namespace last.
struct Log {
    dir: tempfile::TempDir,
    f: Fixture,
    cms: kube::Api<kube::api::DynamicObject>,
    sha1: String,
    sha2: String,
    sha3: String,
    /// An instant between the first sync and the second commit.
    after_first: DateTime<Utc>,
    settings: String,
    old: String,
    new: String,
    _ns: TestNamespace,
}

impl Log {
    async fn new() -> Log {
        let client = support::client().await;
        let ns = TestNamespace::create(&client, "query").await;
        let n = &ns.name;
        let f = Fixture::new().unwrap();
        let alice = Person::new("Alice", "alice@example.com").at(1_767_000_000, 60);
        let bob = Person::new("Bob", "Bob@Example.com").at(1_767_000_100, 0);
        let carol = Person::new("Carol", "carol@example.com").at(1_767_000_200, -300);
        let sha1 = f
            .commit("Add settings and old\n\nThe first cut.")
            .author(alice)
            .write("app/settings.yaml", cm("settings", "blue"))
            .write("app/old.yaml", cm("old", "grey"))
            .create()
            .unwrap();
        f.push().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("reckon.yaml"),
            support::one_app_config(
                "shop",
                &f.file_url(),
                "app",
                None,
                &support::kubeconfig(),
                n,
            ),
        )
        .unwrap();
        sync(d);
        let after_first = Utc::now();
        std::thread::sleep(Duration::from_millis(50));

        let sha2 = f
            .commit("Make settings green")
            .author(bob)
            .write("app/settings.yaml", cm("settings", "green"))
            .create()
            .unwrap();
        f.push().unwrap();
        sync(d);

        // Someone edits the object by hand; the next sync records the drift and puts it back.
        let cms = api_for(&client, "v1", "ConfigMap", "configmaps", Some(n));
        let patch = serde_json::json!({"data": {"color": "red"}});
        cms.patch(
            "settings",
            &kube::api::PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
        sync(d);
        let live = cms.get("settings").await.unwrap();
        assert_eq!(
            live.data["data"]["color"], "green",
            "the drift was put back"
        );

        let sha3 = f
            .commit("Replace old by new")
            .author(carol)
            .remove("app/old.yaml")
            .write("app/new.yaml", cm("new", "white"))
            .create()
            .unwrap();
        f.push().unwrap();
        sync(d);
        assert!(
            cms.get_opt("old").await.unwrap().is_none(),
            "old was pruned"
        );

        let settings = format!("ConfigMap/{n}/settings");
        let old = format!("ConfigMap/{n}/old");
        let new = format!("ConfigMap/{n}/new");
        Log {
            dir,
            f,
            cms,
            sha1,
            sha2,
            sha3,
            after_first,
            settings,
            old,
            new,
            _ns: ns,
        }
    }
}

/// What the read-only steps know about the shared log besides its directory.
#[derive(Serialize, Deserialize)]
struct Facts {
    sha1: String,
    sha2: String,
    sha3: String,
    after_first: DateTime<Utc>,
    settings: String,
    old: String,
    new: String,
}

/// A private copy of the shared log: the steps that only read run `reckon` in it.
struct Recorded {
    dir: tempfile::TempDir,
    facts: Facts,
}

impl std::ops::Deref for Recorded {
    type Target = Facts;
    fn deref(&self) -> &Facts {
        &self.facts
    }
}

/// The shared log, built by the first step of the run to ask for it (its namespace and Git
/// repository go when it is built: the read-only steps need only the store and reckon.yaml).
fn recorded() -> Recorded {
    let (dir, facts) = support::fixture::shared("process-query-log", |into| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let log = Log::new().await;
            support::fixture::copy_dir(log.dir.path(), into);
            Facts {
                sha1: log.sha1.clone(),
                sha2: log.sha2.clone(),
                sha3: log.sha3.clone(),
                after_first: log.after_first,
                settings: log.settings.clone(),
                old: log.old.clone(),
                new: log.new.clone(),
            }
        })
    });
    Recorded { dir, facts }
}

/// The log's sequence numbers, newest first.
fn newest_first(d: &Path) -> Vec<u64> {
    let all = json(d, &["history", "shop", "--limit", "1000"]);
    all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

/// The steps that change the log, on one of their own: a fourth commit synced while
/// `history --follow` runs, then a rollback (which builds on that commit) across the pruned
/// object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_then_rollback_on_a_log_of_their_own() {
    let log = Log::new().await;
    let seqs = newest_first(log.dir.path());
    let sha4 = history_follow_sees_a_sync_made_while_it_runs(&log, &seqs);
    a_rollback_across_the_pruned_object(&log, &sha4).await;
}

/// `history`: every filter, pages by cursor, time windows, jsonl and the table.
#[test]
fn history() {
    let log = &recorded();
    let d = log.dir.path();
    let (sha1, sha2, sha3) = (log.sha1.clone(), log.sha2.clone(), log.sha3.clone());
    let (settings, old) = (log.settings.clone(), log.old.clone());
    let after_first = log.after_first;

    let all = json(d, &["history", "shop", "--limit", "1000"]);
    let events = all["events"].as_array().unwrap();
    assert_eq!(all["next"], Value::Null);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    assert!(events.iter().all(|e| e["app"] == "shop"));
    let count = |k: &str| kinds(&all["events"]).iter().filter(|x| *x == k).count();
    assert_eq!(count("CommitObserved"), 3);
    assert_eq!(count("SyncFinished"), 4);
    assert_eq!(count("DriftDetected"), 1);
    assert_eq!(count("DriftCorrected"), 1);
    assert_eq!(count("ObjectPruned"), 1);

    // Pages of 3 continue exactly where the previous one ended.
    let mut paged = Vec::new();
    let mut cursor: Option<u64> = None;
    loop {
        let mut args = vec!["history", "shop", "--limit", "3"];
        let c = cursor.map(|c| c.to_string());
        if let Some(c) = &c {
            args.extend(["--cursor", c]);
        }
        let page = json(d, &args);
        let evs = page["events"].as_array().unwrap();
        assert!(evs.len() <= 3);
        paged.extend(evs.iter().map(|e| e["seq"].as_u64().unwrap()));
        match page["next"].as_u64() {
            Some(next) => {
                assert_eq!(Some(next), paged.last().copied());
                cursor = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(paged, seqs, "pagination yields the same events, none twice");

    let pruned = json(d, &["history", "shop", "--kind", "prune"]);
    assert_eq!(kinds(&pruned["events"]), vec!["ObjectPruned"]);
    assert_eq!(pruned["events"][0]["object"], Value::String(old.clone()));
    assert_eq!(pruned["events"][0]["revision"], Value::String(sha3.clone()));
    assert_eq!(pruned["events"][0]["category"], "prune");

    let by_bob = json(d, &["history", "--author", "bob@example.com"]);
    assert_eq!(kinds(&by_bob["events"]), vec!["CommitObserved"]);
    let commit = &by_bob["events"][0]["event"]["CommitObserved"];
    assert_eq!(commit["sha"], Value::String(sha2.clone()));
    assert_eq!(commit["author"]["name"], "Bob");
    assert_eq!(
        commit["message"].as_str().unwrap().trim(),
        "Make settings green"
    );

    let about2 = json(d, &["history", "--revision", &sha2[..10], "--limit", "100"]);
    let about2_kinds = kinds(&about2["events"]);
    assert!(
        about2["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["revision"] == Value::String(sha2.clone())),
        "{about2_kinds:?}"
    );
    for k in [
        "CommitObserved",
        "RenderSucceeded",
        "SyncStarted",
        "ObjectApplied",
        "DriftCorrected",
        "SyncFinished",
    ] {
        assert!(
            about2_kinds.contains(&k.to_string()),
            "{k}: {about2_kinds:?}"
        );
    }

    let drift = json(d, &["history", "--object", &settings, "--kind", "drift"]);
    assert_eq!(
        kinds(&drift["events"]),
        vec!["DriftCorrected", "DriftDetected"]
    );
    let detected = &drift["events"][1]["event"]["DriftDetected"];
    assert_eq!(detected["diffs"][0]["path"], "/data/color");
    assert_eq!(detected["diffs"][0]["expected"], "\"green\"");
    assert_eq!(detected["diffs"][0]["actual"], "\"red\"");
    assert!(
        detected["managers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["manager"] == "kubectl-edit"),
        "{detected}"
    );

    // Time windows: everything up to the end of the first sync is the first commit's.
    let until = after_first.to_rfc3339();
    let early = json(
        d,
        &["history", "shop", "--until", &until, "--limit", "1000"],
    );
    let early_revs: Vec<&Value> = early["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["revision"])
        .filter(|r| !r.is_null())
        .collect();
    assert!(!early_revs.is_empty());
    assert!(
        early_revs
            .iter()
            .all(|r| **r == Value::String(sha1.clone()))
    );
    let late = json(
        d,
        &["history", "shop", "--since", &until, "--limit", "1000"],
    );
    assert_eq!(
        early["events"].as_array().unwrap().len() + late["events"].as_array().unwrap().len(),
        events.len(),
        "--since and --until split the log at one instant"
    );
    let recent = json(d, &["history", "shop", "--since", "1h", "--limit", "1000"]);
    assert_eq!(recent["events"].as_array().unwrap().len(), events.len());
    let none = json(d, &["history", "shop", "--until", "1h"]);
    assert_eq!(none["events"], Value::Array(vec![]));

    // jsonl: one event per line; the table names the key facts.
    let lines = text(d, &["history", "shop", "--kind", "commit", "-o", "jsonl"]);
    let parsed: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed.len(), 3);
    assert_eq!(
        parsed[0]["event"]["CommitObserved"]["sha"],
        Value::String(sha3.clone())
    );
    let table = text(d, &["history", "shop", "--kind", "prune"]);
    assert!(table.starts_with("SEQ"), "{table}");
    assert!(
        table.contains("ObjectPruned") && table.contains(&old),
        "{table}"
    );
    assert!(!table.contains("\x1b["), "no colour when not a terminal");
}

/// `revisions`: one row per commit with its author, summary and objects changed.
#[test]
fn revisions() {
    let log = &recorded();
    let d = log.dir.path();
    let (sha1, sha2, sha3) = (log.sha1.clone(), log.sha2.clone(), log.sha3.clone());

    let revs = json(d, &["revisions", "shop"]);
    let revs = revs.as_array().unwrap();
    let shas: Vec<&str> = revs.iter().map(|r| r["sha"].as_str().unwrap()).collect();
    assert_eq!(shas, vec![sha3.as_str(), sha2.as_str(), sha1.as_str()]);
    let row = |i: usize, field: &str| revs[i][field].clone();
    assert_eq!(row(2, "author_email"), "alice@example.com");
    assert_eq!(row(2, "summary"), "Add settings and old");
    assert_eq!(row(2, "objects_changed"), 2);
    assert_eq!(row(1, "author_email"), "Bob@Example.com");
    assert_eq!(
        row(1, "objects_changed"),
        1,
        "the drift re-apply is the same object"
    );
    assert_eq!(row(0, "author_name"), "Carol");
    assert_eq!(row(0, "objects_changed"), 2, "new created, old pruned");
    assert_eq!(
        time_of(&row(0, "authored_at")),
        DateTime::from_timestamp(1_767_000_200, 0).unwrap()
    );
    for r in revs {
        assert_eq!(r["outcome"], "Succeeded");
        assert!(time_of(&r["applied_at"]) >= time_of(&r["first_seen"]));
        assert_eq!(r["digest"].as_str().unwrap().len(), 64);
    }
    let table = text(d, &["revisions", "shop"]);
    assert!(
        table.contains(&sha2[..12]) && table.contains("Make settings green"),
        "{table}"
    );
}

/// `blame`: each field credited to the commit that set it, with the drift that was put back.
#[test]
fn blame() {
    let log = &recorded();
    let d = log.dir.path();
    let (sha1, sha2) = (log.sha1.clone(), log.sha2.clone());
    let (settings, old) = (log.settings.clone(), log.old.clone());

    let blame = json(d, &["blame", &settings]);
    assert_eq!(blame["app"], "shop");
    assert_eq!(blame["object"], Value::String(settings.clone()));
    let fields = blame["fields"].as_array().unwrap();
    let field = |p: &str| {
        fields
            .iter()
            .find(|f| f["path"] == p)
            .unwrap_or_else(|| panic!("{p} in {fields:?}"))
    };
    let color = field("/data/color");
    assert_eq!(color["value"], "green");
    assert_eq!(color["set_by"]["revision"], Value::String(sha2.clone()));
    assert_eq!(color["set_by"]["author_email"], "Bob@Example.com");
    assert_eq!(color["set_by"]["summary"], "Make settings green");
    // Credited to the apply of Bob's commit, not to the later re-apply that put the drift back.
    let applies = json(d, &["history", "--object", &settings, "--kind", "apply"]);
    let applies: Vec<(u64, &str)> = applies["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap(), e["revision"].as_str().unwrap()))
        .collect();
    let of_bob: Vec<u64> = applies
        .iter()
        .filter(|(_, r)| *r == sha2)
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(
        of_bob.len(),
        2,
        "Bob's apply and the correction: {applies:?}"
    );
    assert_eq!(
        color["set_by"]["applied_seq"].as_u64(),
        of_bob.last().copied()
    );
    let drifts = color["drifts"].as_array().unwrap();
    assert_eq!(drifts.len(), 1);
    assert_eq!(drifts[0]["actual"], "\"red\"");
    assert_eq!(drifts[0]["corrected"], true);
    assert!(
        drifts[0]["managers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["manager"] == "kubectl-edit")
    );
    let name = field("/metadata/name");
    assert_eq!(name["set_by"]["revision"], Value::String(sha1.clone()));
    assert_eq!(name["set_by"]["author_name"], "Alice");
    assert!(name["drifts"].as_array().unwrap().is_empty());
    let narrowed = json(d, &["blame", &settings, "--field", "data.color"]);
    assert_eq!(narrowed["fields"].as_array().unwrap().len(), 1);
    assert_eq!(narrowed["fields"][0]["path"], "/data/color");
    let table = text(d, &["blame", &settings]);
    assert!(
        table.contains("/data/color")
            && table.contains("kubectl-edit")
            && table.contains("put back"),
        "{table}"
    );
    let gone = reckon(d).args(["blame", &old]).output().unwrap();
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("is not managed by any App"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
}

/// `show` of a recorded revision and `diff` between two.
#[test]
fn show_and_diff() {
    let log = &recorded();
    let d = log.dir.path();
    let (sha1, sha2, sha3) = (log.sha1.clone(), log.sha2.clone(), log.sha3.clone());

    let shown = json(d, &["show", &format!("shop@{}", &sha1[..8])]);
    assert_eq!(shown["revision"], Value::String(sha1.clone()));
    let names: Vec<&str> = shown["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["old", "settings"]);
    assert_eq!(shown["manifests"][1]["data"]["color"], "blue");
    let yaml = text(d, &["show", &format!("shop@{sha3}")]);
    assert!(
        yaml.contains("name: new") && yaml.contains("color: white"),
        "{yaml}"
    );
    assert!(!yaml.contains("name: old"), "{yaml}");
    let unknown = reckon(d).args(["show", "shop@ffffff"]).output().unwrap();
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no recorded revision starts with it"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );

    let out = reckon(d)
        .args([
            "diff",
            "shop",
            "--from",
            &sha1,
            "--to",
            &sha3[..12],
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "the revisions differ");
    let diff: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(diff["added"], serde_json::json!(["ConfigMap/new"]));
    assert_eq!(diff["removed"], serde_json::json!(["ConfigMap/old"]));
    let changed = diff["changed"].as_array().unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["object"], "ConfigMap/settings");
    assert_eq!(
        changed[0]["fields"],
        serde_json::json!([{"path": "/data/color", "change": "changed", "from": "blue", "to": "green"}])
    );
    let out = reckon(d)
        .args(["diff", "shop", "--from", &sha2, "--to", &sha2])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no differences"));
}

/// `status`: following Git at the third commit, healthy, the drift put back.
#[test]
fn status() {
    let log = &recorded();
    let d = log.dir.path();
    let sha3 = log.sha3.clone();

    let status = json(d, &["status"]);
    let shop = &status[0];
    assert_eq!(status.as_array().unwrap().len(), 1);
    assert_eq!(shop["app"], "shop");
    assert_eq!(shop["pinned"], false);
    assert_eq!(shop["intent"]["kind"], "follow");
    assert_eq!(shop["applied_revision"], Value::String(sha3.clone()));
    assert_eq!(shop["observed_revision"], Value::String(sha3.clone()));
    assert_eq!(shop["last_sync"]["revision"], Value::String(sha3.clone()));
    assert_eq!(shop["last_sync"]["outcome"], "Succeeded");
    assert_eq!(shop["last_sync"]["counts"]["pruned"], 1);
    assert_eq!(shop["health"], "Healthy");
    assert_eq!(shop["drift_count"], 0, "the drift was put back");
    assert_eq!(shop["objects"], 2);
    let table = text(d, &["status", "shop"]);
    assert!(table.contains("shop") && table.contains("follow") && table.contains(&sha3[..12]));
}

/// `replay`: the App as it stood after the first sync, and now.
#[test]
fn replay() {
    let log = &recorded();
    let d = log.dir.path();
    let after_first = log.after_first;
    let sha1 = log.sha1.clone();
    let (settings, old, new) = (log.settings.clone(), log.old.clone(), log.new.clone());

    let at = after_first.to_rfc3339();
    let then = json(d, &["replay", "--at", &at, "shop"]);
    let then = &then[0];
    assert_eq!(then["applied_revision"], Value::String(sha1.clone()));
    let inventory: Vec<(&str, &str)> = then["inventory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["object"].as_str().unwrap(),
                o["revision"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        inventory,
        vec![
            (old.as_str(), sha1.as_str()),
            (settings.as_str(), sha1.as_str())
        ]
    );
    let now = json(d, &["replay", "--at", "0s"]);
    let inventory: Vec<&str> = now[0]["inventory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["object"].as_str().unwrap())
        .collect();
    assert_eq!(inventory, vec![new.as_str(), settings.as_str()]);
    let table = text(d, &["replay", "--at", &at]);
    assert!(
        table.contains(&old) && table.contains(&sha1[..12]),
        "{table}"
    );
}

/// `history --follow` sees a sync made while it runs (of a fourth commit, whose SHA it returns).
fn history_follow_sees_a_sync_made_while_it_runs(log: &Log, seqs: &[u64]) -> String {
    let d = log.dir.path();
    let f = &log.f;

    let mut follower = reckon(d)
        .args([
            "history",
            "shop",
            "--follow",
            "--limit",
            "1",
            "-o",
            "jsonl",
            "--interval",
            "0.3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        first["seq"].as_u64(),
        seqs.first().copied(),
        "the newest event first"
    );
    let sha4 = f
        .commit("Make settings purple")
        .write("app/settings.yaml", cm("settings", "purple"))
        .create()
        .unwrap();
    f.push().unwrap();
    sync(d);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.contains(&"SyncFinished".to_string()) {
        assert!(Instant::now() < deadline, "follow printed {seen:?}");
        let line = lines.next().unwrap().unwrap();
        let e: Value = serde_json::from_str(&line).unwrap();
        if e["kind"] == "CommitObserved" {
            assert_eq!(
                e["event"]["CommitObserved"]["sha"],
                Value::String(sha4.clone())
            );
        }
        seen.push(e["kind"].as_str().unwrap().to_string());
    }
    assert_eq!(seen[0], "CommitObserved", "{seen:?}");
    assert!(seen.contains(&"ObjectApplied".to_string()), "{seen:?}");
    support::signal(&follower, "-INT");
    let exit = support::wait_exit(&mut follower, Duration::from_secs(10));
    assert!(exit.success(), "Ctrl-C ends following cleanly: {exit:?}");
    sha4
}

/// A rollback across the pruned object, as the queries see it.
async fn a_rollback_across_the_pruned_object(log: &Log, sha4: &str) {
    let d = log.dir.path();
    let cms = &log.cms;
    let sha1 = log.sha1.clone();
    let sha4 = sha4.to_string();
    let (settings, old, new) = (log.settings.clone(), log.old.clone(), log.new.clone());

    let before_rollback = Utc::now();
    std::thread::sleep(Duration::from_millis(50));
    run(
        d,
        &[
            "rollback",
            "shop",
            "--to",
            &sha1[..8],
            "--reason",
            "green breaks checkout",
            "--actor",
            "ana@example.com",
        ],
    );
    assert!(cms.get_opt("old").await.unwrap().is_some(), "old is back");
    assert!(
        cms.get_opt("new").await.unwrap().is_none(),
        "new did not exist at sha1"
    );
    let status = json(d, &["status", "shop"]);
    let shop = &status[0];
    assert_eq!(shop["pinned"], true);
    assert_eq!(shop["intent"]["kind"], "rollback");
    assert_eq!(shop["intent"]["revision"], Value::String(sha1.clone()));
    assert_eq!(shop["intent"]["actor"], "ana@example.com");
    assert_eq!(shop["intent"]["reason"], "green breaks checkout");
    assert_eq!(shop["applied_revision"], Value::String(sha1.clone()));
    assert_eq!(shop["observed_revision"], Value::String(sha4.clone()));
    let table = text(d, &["status"]);
    assert!(
        table.contains("PINNED (rollback)") && table.contains("ana@example.com"),
        "{table}"
    );
    let intents = json(d, &["history", "shop", "--kind", "rollback"]);
    assert_eq!(kinds(&intents["events"]), vec!["IntentRecorded"]);
    assert_eq!(intents["events"][0]["actor"], "ana@example.com");
    assert_eq!(
        intents["events"][0]["revision"],
        Value::String(sha1.clone())
    );
    let table = text(d, &["history", "shop", "--kind", "rollback"]);
    assert!(table.contains("(by ana@example.com)"), "{table}");
    // The rollback's prune and re-creation are history of those objects.
    let new_events = json(d, &["history", "--object", &new, "--kind", "prune"]);
    assert_eq!(
        new_events["events"][0]["revision"],
        Value::String(sha1.clone()),
        "pruned by the rollback to sha1"
    );
    // Replay: before the rollback the App followed Git at sha4; now it is pinned to sha1.
    let then = json(
        d,
        &["replay", "--at", &before_rollback.to_rfc3339(), "shop"],
    );
    assert_eq!(then[0]["pinned"], false);
    assert_eq!(then[0]["applied_revision"], Value::String(sha4.clone()));
    let now = json(d, &["replay", "--at", "0s", "shop"]);
    assert_eq!(now[0]["pinned"], true);
    let inventory: Vec<&str> = now[0]["inventory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["object"].as_str().unwrap())
        .collect();
    assert_eq!(inventory, vec![old.as_str(), settings.as_str()]);
    // Blame after the rollback credits the re-applied value to the rollback's revision.
    let blame = json(d, &["blame", &settings, "--field", "/data/color"]);
    assert_eq!(blame["fields"][0]["value"], "blue");
    assert_eq!(
        blame["fields"][0]["set_by"]["revision"],
        Value::String(sha1.clone())
    );
}

#[test]
fn a_store_held_by_another_process_is_refused_with_a_pointer_to_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reckon-store");
    let held = reckon::store::SledStore::open(&path, reckon::store::OpenOptions::create()).unwrap();
    for args in [
        vec!["status"],
        vec!["history"],
        vec!["revisions", "shop"],
        vec!["show", "shop@abc"],
    ] {
        let out = reckon(dir.path()).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("locked by another reckon process") && err.contains("--server"),
            "{args:?}: {err}"
        );
    }
    drop(held);
    let missing = reckon(dir.path())
        .args(["status", "--store", "nowhere"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("nowhere") && err.contains("no reckon store here"),
        "{err}"
    );
    assert!(!dir.path().join("nowhere").exists(), "never created");
}
