//! A Helm App from Git whose chart locks its dependencies in `Chart.lock` instead of vendoring
//! them, against the real control plane: one dependency in a chart repository over HTTPS with
//! basic auth, one in an OCI registry over TLS with basic auth, both listed in the App's
//! `helm.repositories`. The App syncs with both subcharts' objects; a dependency pushed again
//! under its locked version is noticed at the next poll and the commit rendered and applied
//! again; with the chart repository
//! gone, a new commit fails to render naming the dependency (once), nothing is pruned and the
//! objects applied before stay as they were.

use crate::support;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use reckon::event::{Event, SyncOutcome};
use reckon::reconcile::PassStatus;
use reckon::source::chart_deps::{Dependency, lock_digest};
use reckon_testenv::git::charts::package;
use reckon_testenv::git::{ChartRepoServer, HttpAuth, OciRegistry};
use std::path::Path;
use support::harness::{Harness, pass, synced};

const KEY: [u8; 32] = [9; 32];

fn credentials() -> HttpAuth {
    HttpAuth {
        username: "charts".into(),
        password: "s3cret-password".into(),
    }
}

/// A subchart whose one ConfigMap is `<release>-<name>`, saying `from: <data>`.
fn subchart(work: &Path, name: &str, data: &str) -> std::path::PathBuf {
    let dir = work.join(format!("{name}-{data}"));
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: 1.0.0\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("templates/cm.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ .Release.Name }}}}-{name}\ndata:\n  from: {data}\n"
        ),
    )
    .unwrap();
    dir
}

fn dependency(name: &str, version: &str, repository: &str) -> Dependency {
    Dependency {
        name: name.into(),
        version: version.into(),
        repository: repository.into(),
        ..Dependency::default()
    }
}

/// The parent chart's files: `Chart.yaml` asking for `db` (`^1.0.0`, chart repository) and
/// `cache` (`1.0.0`, OCI), the `Chart.lock` Helm writes for them, one ConfigMap saying `note`.
fn parent(repo: &str, oci: &str, note: &str) -> Vec<(String, String)> {
    let requested = [
        dependency("db", "^1.0.0", repo),
        dependency("cache", "1.0.0", oci),
    ];
    let locked = [
        dependency("db", "1.0.0", repo),
        dependency("cache", "1.0.0", oci),
    ];
    let mut chart = String::from("apiVersion: v2\nname: web\nversion: 0.1.0\ndependencies:\n");
    let mut lock = String::from("dependencies:\n");
    for (r, l) in requested.iter().zip(&locked) {
        chart.push_str(&format!(
            "  - name: {}\n    version: \"{}\"\n    repository: \"{}\"\n",
            r.name, r.version, r.repository
        ));
        lock.push_str(&format!(
            "- name: {}\n  repository: \"{}\"\n  version: {}\n",
            l.name, l.repository, l.version
        ));
    }
    lock.push_str(&format!(
        "digest: {}\ngenerated: \"2026-12-07T10:00:00Z\"\n",
        lock_digest(&requested, &locked)
    ));
    vec![
        ("chart/Chart.yaml".into(), chart),
        ("chart/Chart.lock".into(), lock),
        (
            "chart/templates/cm.yaml".into(),
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ .Release.Name }}}}\ndata:\n  note: {note}\n"
            ),
        ),
    ]
}

fn commit(h: &Harness, message: &str, files: &[(String, String)]) -> String {
    let files: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), Some(t.as_str())))
        .collect();
    h.commit(message, &files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_dependencies_sync_and_a_repository_gone_prunes_nothing() {
    if !crate::helm::helm_available() {
        return;
    }
    reckon::tls::install_crypto_provider();
    let h = Harness::new("helm-lock").await;
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("repo");
    std::fs::create_dir_all(&root).unwrap();
    let repo = ChartRepoServer::start(&root, true, Some(credentials())).unwrap();
    repo.publish(&subchart(work.path(), "db", "db")).unwrap();
    let registry = OciRegistry::start(true, Some(credentials())).unwrap();
    let push = |data: &str| {
        let out = work.path().join(format!("archives-{data}"));
        std::fs::create_dir_all(&out).unwrap();
        let archive = package(&subchart(work.path(), "cache", data), &out).unwrap();
        registry.push(&archive, "charts").unwrap()
    };
    push("cache");
    let password = work.path().join("password");
    std::fs::write(&password, "s3cret-password\n").unwrap();
    // Copies of the CAs: they outlive the servers the test stops.
    let (repo_ca, oci_ca) = (
        work.path().join("repo-ca.pem"),
        work.path().join("oci-ca.pem"),
    );
    std::fs::copy(repo.ca().unwrap().bundle_path(), &repo_ca).unwrap();
    std::fs::copy(registry.ca().unwrap().bundle_path(), &oci_ca).unwrap();
    let oci = registry.url("charts");
    let auth = format!(
        "auth: {{basic: {{username: charts, password: {{file: {}}}}}}}",
        password.display()
    );
    let helm = format!(
        "    helm:\n      repositories:\n        - {{url: \"{}\", ca_file: {}, {auth}}}\n        - {{url: \"{oci}\", ca_file: {}, {auth}}}\n",
        repo.url(),
        repo_ca.display(),
        oci_ca.display(),
    );

    let repo_url = repo.url();
    let first = commit(
        &h,
        "web with locked dependencies",
        &parent(&repo_url, &oci, "one"),
    );
    let app = "web";
    // Polled every second, so the repositories are asked again at the next pass.
    let text = support::one_app_config(
        app,
        &h.fixture.file_url(),
        "chart",
        Some("1s"),
        &support::kubeconfig(),
        &h.ns.name,
    );
    let config = reckon::config::parse(&format!("{text}{helm}"), Path::new("reckon.yaml")).unwrap();
    let mut r = h.reconciler(config.apps.into_iter().next().unwrap(), KEY);
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    let cms: Api<ConfigMap> = Api::namespaced(h.catalog.client().clone(), &h.ns.name);
    for (name, from) in [("web-db", "db"), ("web-cache", "cache")] {
        let cm = cms.get(name).await.unwrap();
        assert_eq!(
            cm.data
                .as_ref()
                .and_then(|d| d.get("from"))
                .map(String::as_str),
            Some(from),
            "{name}"
        );
    }

    // cache 1.0.0 pushed again with other content: the same commit, rendered again with the
    // new archive (another chart digest: another RenderSucceeded of the revision), applied.
    push("cache-again");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let before = h.events(app).len();
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    let cache = cms.get("web-cache").await.unwrap();
    assert_eq!(
        cache
            .data
            .as_ref()
            .and_then(|d| d.get("from"))
            .map(String::as_str),
        Some("cache-again")
    );
    let renders: Vec<String> = h.events(app)[before..]
        .iter()
        .filter_map(|e| match e {
            Event::RenderSucceeded(s) => Some(s.revision.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        renders,
        std::slice::from_ref(&first),
        "the same revision, rendered again"
    );
    // Nothing changed since: the repositories are asked, nothing is rendered or recorded.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let before = h.events(app).len();
    let report = pass(&mut r).await;
    assert!(matches!(report.status, PassStatus::InSync), "{report:?}");
    assert_eq!(h.events(app).len(), before);

    // The chart repository goes away; the next commit cannot be rendered.
    drop(repo);
    commit(&h, "another note", &parent(&repo_url, &oci, "two"));
    let before = h.events(app).len();
    let report = pass(&mut r).await;
    let PassStatus::RenderFailed { error } = &report.status else {
        panic!("{report:?}");
    };
    assert!(
        error.starts_with("helm chart web 0.1.0: dependency db 1.0.0: remote https://")
            && error.contains("is unreachable"),
        "{error}"
    );
    let new = h.events(app)[before..].to_vec();
    assert!(
        new.iter()
            .any(|e| matches!(e, Event::RenderFailed(f) if f.error == *error)),
        "{new:?}"
    );
    assert!(
        !new.iter().any(|e| matches!(e, Event::ObjectPruned(_))),
        "nothing pruned: {new:?}"
    );
    // What was applied stays, as applied for the first commit.
    let web = cms.get("web").await.unwrap();
    assert_eq!(
        web.data
            .as_ref()
            .and_then(|d| d.get("note"))
            .map(String::as_str),
        Some("one")
    );
    assert!(cms.get_opt("web-db").await.unwrap().is_some());
    assert!(cms.get_opt("web-cache").await.unwrap().is_some());
    let synced_revisions: Vec<String> = h
        .events(app)
        .iter()
        .filter_map(|e| match e {
            Event::SyncFinished(s) => Some(s.revision.clone()),
            _ => None,
        })
        .collect();
    assert!(
        !synced_revisions.is_empty() && synced_revisions.iter().all(|r| *r == first),
        "only the first commit was synced: {synced_revisions:?}"
    );
    // Still gone at the next pass: the same failure is not recorded again.
    let before = h.events(app).len();
    let report = pass(&mut r).await;
    assert!(matches!(report.status, PassStatus::RenderFailed { .. }));
    assert_eq!(h.events(app).len(), before, "recorded once");
    h.close().await;
}
