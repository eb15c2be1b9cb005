//! The agent's HTTP API after real syncs: `reckon run --listen` as a process against the real
//! control plane and a real Git repository. Tokens give 401/403/200; every query route answers
//! what the log says (revisions with their authors, the manifests and diff of two recorded
//! revisions, blame with the drift a `kubectl patch` made and its correction, history filters,
//! replay); `/metrics` counters moved; a rollback POSTed with the admin token (through
//! `reckon rollback --server`) pins the App and the agent applies it across a pruned object;
//! a new commit is observed but not applied while pinned, also after an agent restart; resume
//! follows Git again; and the CLI's `--server` answers equal its local answers on the same log.
//!
//! One test per step, each on an agent of its own (`support::api_agent::Run`): a running agent
//! cannot be shared between tests, which nextest runs as processes of their own. A step that
//! starts from what earlier ones did (pinned by a rollback, a commit while pinned) gets there
//! through the same helpers, with their assertions.

use crate::support;

use reckon::query::{AppStatus, Blame, HistoryPage, RevisionDiff, RevisionRow, Shown};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use support::api_agent::{
    ADMIN, Agent, READ, Run, cm, eventually, reckon, start_agent, status, stop_agent,
};

/// Runs a reckon command and returns its stdout (which must be JSON with `-o json`). `diff`
/// exits 1 when the two sides differ, like diff(1).
fn cli(dir: &Path, args: &[&str]) -> Value {
    let out = reckon(dir).args(args).output().unwrap();
    let ok = out.status.success() || (args[0] == "diff" && out.status.code() == Some(1));
    assert!(
        ok,
        "reckon {args:?}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "reckon {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Tokens against the real agent.
#[test]
fn tokens_give_401_403_and_200() {
    let run = &Run::start();
    let (http, base) = (&run.http, &run.base);
    let events_url = format!("{base}/api/v1/events");
    let r = http.get(&events_url).send().unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = http
        .get(&events_url)
        .bearer_auth("wrong-token-0000000000")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/api/v1/apps/web/resume"))
        .bearer_auth(READ)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http.get(&events_url).bearer_auth(READ).send().unwrap();
    assert_eq!(r.status(), 200);
}

/// Each query route, checked against what happened; `/metrics`; the CLI through the agent prints
/// exactly what the API answers.
#[test]
fn each_query_route_answers_what_happened() {
    let run = &Run::start();
    let (reader, spec, http, base, ns) = (&run.reader, &run.spec, &run.http, &run.base, &run.ns);
    let d = run.dir.path();
    let (rev_a, rev_b, between) = (run.rev_a.clone(), run.rev_b.clone(), run.between);
    let page: Value = reader.get("/api/v1/apps/web/revisions", &[]).unwrap();
    spec.validate(
        spec.response_schema("GET", "/api/v1/apps/{app}/revisions", 200),
        &page,
    )
    .unwrap();
    assert_eq!(page["next"], Value::Null, "two revisions fit one page");
    let revs_json = page["revisions"].clone();
    let revs: Vec<RevisionRow> = serde_json::from_value(revs_json.clone()).unwrap();
    let shas: Vec<&str> = revs.iter().map(|r| r.sha.as_str()).collect();
    assert_eq!(shas, [rev_b.as_str(), rev_a.as_str()], "newest first");
    assert_eq!(revs[0].author_email.as_deref(), Some("bob@example.com"));
    assert_eq!(revs[0].summary.as_deref(), Some("Replace a by b"));
    assert_eq!(revs[1].author_email.as_deref(), Some("ann@example.com"));
    assert!(revs.iter().all(|r| r.applied_at.is_some()));

    let shown: Shown = reader
        .get(
            &format!("/api/v1/apps/web/revisions/{}/manifests", &rev_a[..10]),
            &[],
        )
        .unwrap();
    let names: Vec<&str> = shown
        .manifests
        .iter()
        .filter_map(|m| m["metadata"]["name"].as_str())
        .collect();
    assert_eq!(shown.revision, rev_a);
    assert!(names.contains(&"a") && names.contains(&"keep"), "{names:?}");

    let diff_json: Value = reader
        .get(
            "/api/v1/apps/web/diff",
            &[("from", Some(rev_a.clone())), ("to", Some(rev_b.clone()))],
        )
        .unwrap();
    spec.validate(
        spec.response_schema("GET", "/api/v1/apps/{app}/diff", 200),
        &diff_json,
    )
    .unwrap();
    let diff: RevisionDiff = serde_json::from_value(diff_json).unwrap();
    // The recorded manifests name no namespace (the App's target gives it): KIND/NAME.
    assert_eq!(diff.removed, ["ConfigMap/a"]);
    assert_eq!(diff.added, ["ConfigMap/b"]);
    assert_eq!(diff.changed.len(), 1);
    assert_eq!(diff.changed[0].object, "ConfigMap/keep");

    let object = run.object.clone();
    let blame_json: Value = reader
        .get(
            "/api/v1/blame",
            &[
                ("object", Some(object.clone())),
                ("field", Some("data.n".into())),
            ],
        )
        .unwrap();
    spec.validate(
        spec.response_schema("GET", "/api/v1/blame", 200),
        &blame_json,
    )
    .unwrap();
    let blame: Blame = serde_json::from_value(blame_json).unwrap();
    assert_eq!(blame.fields.len(), 1, "{blame:?}");
    let field = &blame.fields[0];
    let set_by = field.set_by.as_ref().expect("set by a commit");
    assert_eq!(set_by.revision, rev_b);
    assert_eq!(set_by.author_email.as_deref(), Some("bob@example.com"));
    let drift = field.drifts.last().expect("the patch is a drift on data.n");
    assert!(drift.corrected, "{drift:?}");
    assert!(
        drift
            .managers
            .iter()
            .any(|m| m.manager.starts_with("kubectl")),
        "{drift:?}"
    );

    let commits: HistoryPage = reader
        .get(
            "/api/v1/events",
            &[("app", Some("web".into())), ("kind", Some("commit".into()))],
        )
        .unwrap();
    let seen: Vec<Option<&str>> = commits
        .events
        .iter()
        .map(|e| e.revision.as_deref())
        .collect();
    assert_eq!(seen, [Some(rev_b.as_str()), Some(rev_a.as_str())]);
    let by_ann: HistoryPage = reader
        .get(
            "/api/v1/events",
            &[("author", Some("ANN@example.com".into()))],
        )
        .unwrap();
    assert_eq!(by_ann.events.len(), 1);
    assert_eq!(by_ann.events[0].revision.as_deref(), Some(rev_a.as_str()));
    let page_json: Value = reader
        .get(
            "/api/v1/events",
            &[
                ("object", Some(object.clone())),
                ("limit", Some("2".into())),
            ],
        )
        .unwrap();
    spec.validate(
        spec.response_schema("GET", "/api/v1/events", 200),
        &page_json,
    )
    .unwrap();

    let replay: Value = reader
        .get(
            "/api/v1/replay",
            &[
                ("at", Some(between.to_rfc3339())),
                ("app", Some("web".into())),
            ],
        )
        .unwrap();
    spec.validate(spec.response_schema("GET", "/api/v1/replay", 200), &replay)
        .unwrap();
    assert_eq!(replay[0]["applied_revision"], Value::String(rev_a.clone()));
    let inventory: Vec<&str> = replay[0]["inventory"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["object"].as_str())
        .collect();
    assert_eq!(
        inventory,
        [
            format!("ConfigMap/{}/a", ns.name),
            format!("ConfigMap/{}/keep", ns.name)
        ]
    );

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metric(
            &metrics,
            "reckon_events_appended_total{kind=\"ObjectApplied\"}"
        ) >= 4.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "reckon_drift_detected_total") >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "reckon_drift_corrected_total") >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "reckon_reconcile_duration_seconds_count") >= 2.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "reckon_git_fetch_duration_seconds_count") >= 2.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "reckon_store_size_bytes") > 0.0,
        "{metrics}"
    );

    // The CLI through the agent prints exactly what the API answers.
    let server = ["--server", base.as_str(), "--token", READ];
    let cli_revs = cli(
        d,
        &[&["revisions", "web", "-o", "json"][..], &server[..]].concat(),
    );
    assert_eq!(cli_revs, revs_json);
}

/// Rollback to A through the CLI and the admin token: b is pruned, a comes back.
#[test]
fn a_rollback_through_the_cli_with_the_admin_token() {
    rollback_to_a(&Run::start());
}

/// [`a_rollback_through_the_cli_with_the_admin_token`]: where the steps after it start.
fn rollback_to_a(run: &Run) {
    let (reader, base, long) = (&run.reader, run.base.clone(), run.long);
    let d = run.dir.path();
    let rev_a = run.rev_a.clone();
    let data = |name: &str| run.data(name);
    let out = reckon(d)
        .args([
            "rollback",
            "web",
            "--to",
            &rev_a[..10],
            "--reason",
            "b is broken",
        ])
        .args(["--server", &base, "--token", ADMIN])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = status(reader);
    assert!(st.pinned);
    assert_eq!(st.intent.kind, "rollback");
    assert_eq!(st.intent.actor.as_deref(), Some("api:ops"));
    assert_eq!(st.intent.reason.as_deref(), Some("b is broken"));
    assert_eq!(st.intent.revision.as_deref(), Some(rev_a.as_str()));
    eventually("the rollback applied", long, || {
        data("a").as_deref() == Some("1")
            && data("b").is_none()
            && data("keep").as_deref() == Some("1")
    });
}

/// A new commit is observed but not applied while pinned, also across a restart.
#[test]
fn pinned_across_a_restart() {
    let run = &mut Run::start();
    rollback_to_a(run);
    commit_c_while_pinned(run);
    let (long, port) = (run.long, run.port);
    let d = run.dir.path().to_path_buf();
    let d = d.as_path();
    let rev_a = run.rev_a.clone();
    stop_agent(std::mem::replace(&mut run.agent, Agent(None)));
    run.agent = start_agent(d, port);
    let reader = &run.reader;
    let data = |name: &str| run.data(name);
    eventually("the restarted agent serving", long, || {
        reader.get::<AppStatus>("/api/v1/apps/web", &[]).is_ok()
    });
    std::thread::sleep(Duration::from_secs(4)); // several 1 s polls
    let st = status(reader);
    assert!(st.pinned, "still pinned after the restart: {st:?}");
    assert_eq!(st.applied_revision.as_deref(), Some(rev_a.as_str()));
    assert_eq!(data("c"), None, "C not applied while pinned");
    assert_eq!(data("a").as_deref(), Some("1"));
}

/// A new commit (C) while the App is pinned: observed, and where the steps after it start.
fn commit_c_while_pinned(run: &Run) {
    let (reader, f, long) = (&run.reader, &run.f, run.long);
    let ann = run.ann.clone();
    let rev_c = f
        .commit("Add c")
        .author(ann)
        .write("app/c.yaml", cm("c", "1"))
        .create()
        .unwrap();
    f.push().unwrap();
    eventually("C observed", long, || {
        status(reader).observed_revision.as_deref() == Some(rev_c.as_str())
    });
}

/// Resume through the API: C is applied.
#[test]
fn resume_through_the_api() {
    let run = &Run::start();
    rollback_to_a(run);
    commit_c_while_pinned(run);
    resume(run);
}

/// [`resume_through_the_api`].
fn resume(run: &Run) {
    let (http, base, long) = (&run.http, &run.base, run.long);
    let data = |name: &str| run.data(name);
    let r = http
        .post(format!("{base}/api/v1/apps/web/resume"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(r#"{"reason":"fixed"}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually("C applied after resume", long, || {
        data("c").as_deref() == Some("1") && data("a").is_none()
    });
}

/// `--server` and local answers on the same log: captured through the agent, compared with
/// the store opened locally once the agent has stopped. The log is the one every step before
/// makes: two syncs and a drift put back, a rollback, a commit while pinned, a resume.
#[test]
fn server_and_local_answers_are_equal() {
    let mut run = Run::start();
    rollback_to_a(&run);
    commit_c_while_pinned(&run);
    resume(&run);
    let d = run.dir.path().to_path_buf();
    let d = d.as_path();
    let (base, object) = (run.base.clone(), run.object.clone());
    let (rev_a, rev_b) = (run.rev_a.clone(), run.rev_b.clone());
    let server = ["--server", base.as_str(), "--token", READ];
    let agent = std::mem::replace(&mut run.agent, Agent(None));
    let until = chrono::Utc::now().to_rfc3339();
    let queries: Vec<Vec<&str>> = vec![
        vec!["revisions", "web", "-o", "json"],
        vec!["blame", &object, "-o", "json"],
        vec![
            "history", "web", "--until", &until, "--limit", "1000", "-o", "json",
        ],
        vec!["show", "-o", "json"],
        vec![
            "diff", "web", "--from", &rev_a, "--to", &rev_b, "-o", "json",
        ],
    ];
    let show_target = format!("web@{}", &rev_b[..10]);
    let with_target = |q: &Vec<&str>| -> Vec<String> {
        let mut v: Vec<String> = q.iter().map(|s| s.to_string()).collect();
        if v[0] == "show" {
            v.insert(1, show_target.clone());
        }
        v
    };
    let remote: Vec<Value> = queries
        .iter()
        .map(|q| {
            let mut args = with_target(q);
            args.extend(server.iter().map(|s| s.to_string()));
            cli(d, &args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .collect();
    stop_agent(agent);
    for (q, remote) in queries.iter().zip(remote) {
        let args = with_target(q);
        let local = cli(d, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(local, remote, "reckon {q:?}: local and --server differ");
    }
}
