//! A Helm App whose source is a chart repository, against the real control plane: a chart
//! packaged and indexed by the real `helm` and served on loopback (basic auth, validators) is
//! deployed (its Deployment goes Ready on the simulated nodes), a drift is corrected, an
//! unchanged repository costs one conditional request and records nothing, a new chart version
//! is observed and upgrades the App, `revisions`, `show`, `diff`, `blame` and `history --kind`
//! answer with the chart versions, the repository going away keeps the App on its last good
//! revision, and a rollback to the first version applies the recorded set with the repository
//! still gone.

use crate::support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use reckon::event::{Event, EventKind, Health, SyncOutcome};
use reckon::query;
use reckon::reconcile::rollback::{self, RollbackTarget};
use reckon::reconcile::{Live, PassStatus, Reconciler};
use reckon::render::SecretKey;
use reckon::store::{EventRead, Query, Selector};
use reckon_testenv::git::charts::package;
use reckon_testenv::git::{ChartRepoServer, HttpAuth, OciRegistry};
use sha2::{Digest, Sha256};
use std::path::Path;
use support::harness::{Harness, pass, synced};

const KEY: [u8; 32] = [7; 32];

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels:
      app: {{ .Release.Name }}
  template:
    metadata:
      labels:
        app: {{ .Release.Name }}
    spec:
      containers:
        - name: main
          image: example.invalid/web:{{ .Chart.AppVersion }}
"#;

const CONFIG_MAP: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
data:
  color: {{ .Values.color | quote }}
  chart: {{ .Chart.Version | quote }}
"#;

/// The chart `web` at `version`, its ConfigMap's color `color`, in a directory of `work`.
fn chart(work: &Path, version: &str, color: &str) -> std::path::PathBuf {
    let dir = work.join(format!("web-{version}"));
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("Chart.yaml"),
        format!("apiVersion: v2\nname: web\nversion: {version}\nappVersion: \"{version}\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("values.yaml"),
        format!("replicas: 1\ncolor: {color}\n"),
    )
    .unwrap();
    std::fs::write(dir.join("templates/deployment.yaml"), DEPLOYMENT).unwrap();
    std::fs::write(dir.join("templates/settings.yaml"), CONFIG_MAP).unwrap();
    dir
}

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

async fn settings(h: &Harness) -> ConfigMap {
    let cms: Api<ConfigMap> = Api::namespaced(h.catalog.client().clone(), &h.ns.name);
    cms.get("web-settings").await.unwrap()
}

fn data(cm: &ConfigMap, key: &str) -> Option<String> {
    cm.data.as_ref()?.get(key).cloned()
}

fn annotation(cm: &ConfigMap, key: &str) -> Option<String> {
    cm.metadata.annotations.as_ref()?.get(key).cloned()
}

/// The App following chart `web` (`>=1.0.0, <2`) at `url`, as `reckon.yaml` gives it.
fn app(h: &Harness, url: &str, password: &Path) -> reckon::config::App {
    app_trusting(h, url, password, None)
}

/// [`app`], trusting `ca` for the source's TLS.
fn app_trusting(h: &Harness, url: &str, password: &Path, ca: Option<&Path>) -> reckon::config::App {
    let ca = ca
        .map(|ca| format!("      ca_file: {}\n", ca.display()))
        .unwrap_or_default();
    let text = format!(
        "apps:\n  - name: web\n    source:\n      url: {url}\n      chart: {{name: web, version: \">=1.0.0, <2\"}}\n{ca}      auth: {{basic: {{username: charts, password: {{file: {pw}}}}}}}\n      interval: 1s\n    target:\n      kubeconfig: {kc}\n      namespace: {ns}\n",
        pw = password.display(),
        kc = support::kubeconfig().display(),
        ns = h.ns.name,
    );
    let cfg = reckon::config::parse(&text, Path::new("reckon.yaml")).unwrap();
    cfg.apps.into_iter().next().unwrap()
}

fn reconciler(h: &Harness, app: reckon::config::App) -> Reconciler {
    let source = reckon::source::config::source_for(&app, h.cache.path()).unwrap();
    Reconciler::new(
        app,
        source,
        h.store.clone(),
        SecretKey::new(KEY),
        h.catalog.clone(),
        Live::Direct,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_from_a_repository_syncs_upgrades_survives_an_outage_and_rolls_back() {
    if !crate::helm::helm_available() {
        return;
    }
    let h = Harness::new("helm-repo").await;
    let client = h.catalog.client().clone();
    let nodes = support::simulated_nodes(&client).await > 0;
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("repo");
    std::fs::create_dir_all(&root).unwrap();
    let password = work.path().join("password");
    std::fs::write(&password, "s3cret-password\n").unwrap();
    let server = ChartRepoServer::start(
        &root,
        false,
        Some(HttpAuth {
            username: "charts".into(),
            password: "s3cret-password".into(),
        }),
    )
    .unwrap();
    let r1 = sha256(
        &server
            .publish(&chart(work.path(), "1.0.0", "blue"))
            .unwrap(),
    );
    let app = "web";
    let mut r = reconciler(&h, self::app(&h, &server.url(), &password));

    // 1. The chart is observed and deployed.
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(report.revision.as_deref(), Some(r1.as_str()));
    let cm = settings(&h).await;
    assert_eq!(data(&cm, "color").as_deref(), Some("blue"));
    assert_eq!(
        annotation(&cm, "reckon.dev/helm-chart").as_deref(),
        Some("web-1.0.0")
    );
    if nodes {
        assert_eq!(report.health, Health::Healthy, "{report:?}");
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &h.ns.name);
        let status = deployments.get("web").await.unwrap().status.unwrap();
        assert_eq!(status.ready_replicas, Some(1));
    }
    let observed: Vec<(String, String)> = h
        .events(app)
        .into_iter()
        .filter_map(|e| match e {
            Event::ChartObserved(c) => Some((c.version, c.revision)),
            _ => None,
        })
        .collect();
    assert_eq!(observed, vec![("1.0.0".to_string(), r1.clone())]);

    // 2. A drift is corrected.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &h.ns.name);
    let patch = serde_json::json!({"data": {"color": "red"}});
    cms.patch(
        "web-settings",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .unwrap();
    let before = h.events(app).len();
    let report = pass(&mut r).await;
    assert!(
        matches!(report.status, PassStatus::Synced { .. }),
        "{report:?}"
    );
    assert_eq!(data(&settings(&h).await, "color").as_deref(), Some("blue"));
    let new = &h.events(app)[before..];
    assert!(
        new.iter().any(|e| matches!(e, Event::DriftCorrected(_))),
        "{new:?}"
    );

    // 3. An unchanged repository: one conditional request, no render, nothing recorded.
    let requests = server.requests().len();
    let before = h.events(app).len();
    let report = pass(&mut r).await;
    assert_eq!(report.status, PassStatus::InSync, "{report:?}");
    assert_eq!(
        server.requests()[requests..].to_vec(),
        vec![("/index.yaml".to_string(), 304)]
    );
    assert_eq!(
        h.events(app).len(),
        before,
        "{:?}",
        &h.events(app)[before..]
    );

    // 4. A new chart version upgrades the App.
    let r2 = sha256(
        &server
            .publish(&chart(work.path(), "1.1.0", "green"))
            .unwrap(),
    );
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(report.revision.as_deref(), Some(r2.as_str()));
    let cm = settings(&h).await;
    assert_eq!(data(&cm, "color").as_deref(), Some("green"));
    assert_eq!(data(&cm, "chart").as_deref(), Some("1.1.0"));
    assert_eq!(
        annotation(&cm, "reckon.dev/helm-chart").as_deref(),
        Some("web-1.1.0")
    );

    // 5. The record answers with the chart versions.
    let projections = h.store.projections().await.unwrap();
    let reader = h.store.reader();
    let rows = query::revisions(reader, &projections, app).unwrap();
    let versions: Vec<(&str, Option<&str>)> = rows
        .iter()
        .map(|r| (r.sha.as_str(), r.chart.as_ref().map(|c| c.version.as_str())))
        .collect();
    assert_eq!(
        versions,
        vec![(r2.as_str(), Some("1.1.0")), (r1.as_str(), Some("1.0.0"))]
    );
    assert!(rows[0].applied_at.is_some() && rows[1].applied_at.is_some());
    let shown = query::show(reader, &projections, app, &r1).unwrap();
    let recorded_cm = shown
        .manifests
        .iter()
        .find(|m| m["kind"] == "ConfigMap")
        .unwrap();
    assert_eq!(recorded_cm["data"]["color"], "blue");
    let diff = query::diff_revisions(reader, &projections, app, &r1, &r2).unwrap();
    assert!(
        diff.changed
            .iter()
            .any(|c| c.object.contains("web-settings")),
        "{diff:?}"
    );
    let spec: query::ObjectSpec = format!("ConfigMap/{}/web-settings", h.ns.name)
        .parse()
        .unwrap();
    let blame = query::blame(reader, &projections, &spec, Some(app), Some("/data/color")).unwrap();
    let color = blame
        .fields
        .iter()
        .find(|f| f.path == "/data/color")
        .unwrap();
    let set_by = color.set_by.as_ref().unwrap();
    assert_eq!(
        set_by.revision, r2,
        "the chart bump set the color: {blame:?}"
    );
    let chart = set_by.chart.as_ref().unwrap();
    assert_eq!(
        (chart.name.as_str(), chart.version.as_str()),
        ("web", "1.1.0")
    );
    assert_eq!(chart.digest, format!("sha256:{r2}"));
    assert!(
        set_by
            .summary
            .as_deref()
            .unwrap()
            .starts_with("chart web 1.1.0"),
        "{set_by:?}"
    );
    let kind = reader
        .query(
            &Query::new(Selector::Kind(EventKind::ChartObserved))
                .oldest_first()
                .limit(10),
        )
        .unwrap();
    assert_eq!(kind.events.len(), 2, "history --kind ChartObserved");

    // 6. The repository goes away: the App stays on its last good revision.
    drop(server);
    let before = h.events(app).len();
    let report = pass(&mut r).await;
    assert_eq!(report.status, PassStatus::InSync, "{report:?}");
    assert_eq!(report.revision.as_deref(), Some(r2.as_str()));
    assert!(report.fetch_failure.is_some(), "{report:?}");
    let new = &h.events(app)[before..];
    assert!(
        matches!(new, [Event::SourceFetchFailed(f)] if f.reason == "Unreachable"),
        "{new:?}"
    );
    assert_eq!(data(&settings(&h).await, "color").as_deref(), Some("green"));

    // 7. A rollback to the first version, by a prefix of its revision, applies the recorded
    //    set: the repository is still gone.
    rollback::request_rollback(
        &h.store,
        app,
        RollbackTarget::Revision(r1[..12].to_string()),
        "alice".into(),
        Some("1.1.0 breaks checkout".into()),
    )
    .await
    .unwrap();
    let before = h.events(app).len();
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(report.revision.as_deref(), Some(r1.as_str()));
    let cm = settings(&h).await;
    assert_eq!(data(&cm, "color").as_deref(), Some("blue"));
    assert_eq!(data(&cm, "chart").as_deref(), Some("1.0.0"));
    let new = &h.events(app)[before..];
    assert!(
        !new.iter().any(|e| matches!(e, Event::RenderSucceeded(_))),
        "applied from the record: {new:?}"
    );
    h.close().await;
}

/// The same source on an App object (`spec.source.chart`), reconciled by the agent: deployed,
/// then upgraded by a new version, the status naming the chart revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_object_follows_a_chart_repository() {
    use reckon::crd::{App, AuthSpec, BasicSpec, ChartSpec, SecretRefSpec};
    use std::time::Duration;
    use support::crd::{ObjectAgent, app_object, condition, install_app_crd, until};
    if !crate::helm::helm_available() {
        return;
    }
    let client = support::client().await;
    install_app_crd(&client).await;
    let ns = support::TestNamespace::create(&client, "helm-repo-object").await;
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("repo");
    std::fs::create_dir_all(&root).unwrap();
    let password = work.path().join("password");
    std::fs::write(&password, "s3cret-password\n").unwrap();
    let server = ChartRepoServer::start(
        &root,
        false,
        Some(HttpAuth {
            username: "charts".into(),
            password: "s3cret-password".into(),
        }),
    )
    .unwrap();
    let r1 = sha256(
        &server
            .publish(&chart(work.path(), "1.0.0", "blue"))
            .unwrap(),
    );
    let agent = ObjectAgent::start_with(work.path(), &ns.name, Default::default(), |o| {
        // The repository is plain http on loopback.
        o.sources.schemes.push("http".into());
    });
    let mut object = app_object("web", &server.url(), ".");
    object.spec.source.path = None;
    object.spec.source.chart = Some(ChartSpec {
        name: "web".into(),
        version: Some("^1".into()),
        insecure_http: None,
    });
    object.spec.source.auth = Some(AuthSpec {
        basic: Some(BasicSpec {
            username: "charts".into(),
            password: SecretRefSpec {
                file: Some(password.display().to_string()),
                env: None,
            },
        }),
        ..Default::default()
    });
    let apps: Api<App> = Api::namespaced(client.clone(), &ns.name);
    apps.create(&kube::api::PostParams::default(), &object)
        .await
        .unwrap();
    let applied = |revision: String| {
        let apps = apps.clone();
        async move {
            until(
                "the chart revision applied",
                Duration::from_secs(90),
                || async {
                    let app = apps.get("web").await.unwrap();
                    let status = app.status.as_ref()?;
                    (condition(&app, "Ready")?.status == "True"
                        && status.applied_revision.as_deref() == Some(revision.as_str()))
                    .then_some(())
                },
            )
            .await
        }
    };
    applied(r1.clone()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let cm = cms.get("web-settings").await.unwrap();
    assert_eq!(data(&cm, "color").as_deref(), Some("blue"));

    let r2 = sha256(
        &server
            .publish(&chart(work.path(), "1.1.0", "green"))
            .unwrap(),
    );
    applied(r2.clone()).await;
    let cm = cms.get("web-settings").await.unwrap();
    assert_eq!(data(&cm, "color").as_deref(), Some("green"));
    assert_eq!(
        annotation(&cm, "reckon.dev/helm-chart").as_deref(),
        Some("web-1.1.0")
    );
    let events = agent.stop().await;
    let observed: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.body.event {
            Event::ChartObserved(c) => Some(c.version.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(observed, ["1.0.0", "1.1.0"]);
}

/// The same life as a repository's chart, for a chart `helm push`ed to an OCI registry (the real
/// distribution registry, over TLS with basic auth): deployed, drift corrected, an unchanged tag
/// pulls and records nothing, a new version upgrades, the registry going away keeps the App on
/// its revision, and a rollback by chart version applies the recorded set with the registry
/// still gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_from_an_oci_registry_syncs_upgrades_survives_an_outage_and_rolls_back() {
    if !crate::helm::helm_available() {
        return;
    }
    let h = Harness::new("helm-oci").await;
    let client = h.catalog.client().clone();
    let work = tempfile::tempdir().unwrap();
    let registry = OciRegistry::start(
        true,
        Some(HttpAuth {
            username: "charts".into(),
            password: "s3cret-password".into(),
        }),
    )
    .unwrap();
    let ca = work.path().join("ca.pem");
    std::fs::copy(registry.ca().unwrap().bundle_path(), &ca).unwrap();
    let password = work.path().join("password");
    std::fs::write(&password, "s3cret-password\n").unwrap();
    let archives = work.path().join("archives");
    std::fs::create_dir_all(&archives).unwrap();
    let publish = |version: &str, color: &str| {
        let archive = package(&chart(work.path(), version, color), &archives).unwrap();
        registry.push(&archive, "charts").unwrap();
        sha256(&archive)
    };
    let r1 = publish("1.0.0", "blue");
    let app = "web";
    let url = registry.url("charts/web");
    let mut r = reconciler(&h, app_trusting(&h, &url, &password, Some(&ca)));

    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(report.revision.as_deref(), Some(r1.as_str()));
    assert_eq!(data(&settings(&h).await, "color").as_deref(), Some("blue"));

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &h.ns.name);
    let patch = serde_json::json!({"data": {"color": "red"}});
    cms.patch(
        "web-settings",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .unwrap();
    let before = h.events(app).len();
    pass(&mut r).await;
    assert_eq!(data(&settings(&h).await, "color").as_deref(), Some("blue"));
    assert!(
        h.events(app)[before..]
            .iter()
            .any(|e| matches!(e, Event::DriftCorrected(_))),
        "the drift is corrected"
    );

    let before = h.events(app).len();
    let report = pass(&mut r).await;
    assert_eq!(report.status, PassStatus::InSync, "{report:?}");
    assert_eq!(
        h.events(app).len(),
        before,
        "an unchanged tag records nothing"
    );

    let r2 = publish("1.1.0", "green");
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(report.revision.as_deref(), Some(r2.as_str()));
    assert_eq!(data(&settings(&h).await, "chart").as_deref(), Some("1.1.0"));
    let projections = h.store.projections().await.unwrap();
    let rows = query::revisions(h.store.reader(), &projections, app).unwrap();
    let versions: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.chart.as_ref().map(|c| c.version.as_str()))
        .collect();
    assert_eq!(versions, vec![Some("1.1.0"), Some("1.0.0")]);
    assert_eq!(rows[0].chart.as_ref().unwrap().repository, url);

    drop(registry);
    let before = h.events(app).len();
    let report = pass(&mut r).await;
    assert_eq!(report.revision.as_deref(), Some(r2.as_str()));
    let new = &h.events(app)[before..];
    assert!(
        matches!(new, [Event::SourceFetchFailed(f)] if f.reason == "Unreachable"),
        "{new:?}"
    );

    // By chart version (the repository's test goes back by a digest prefix): a version the
    // App never applied is refused naming the ones it did, 1.0.0 is the revision that applied it.
    let err = rollback::request_rollback(
        &h.store,
        app,
        RollbackTarget::Revision("9.9.9".into()),
        "alice".into(),
        None,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(
            "no applied revision is chart version 9.9.9 (recorded versions: 1.0.0, 1.1.0)"
        ),
        "{err}"
    );
    let plan = rollback::request_rollback(
        &h.store,
        app,
        RollbackTarget::Revision("1.0.0".into()),
        "alice".into(),
        Some("1.1.0 breaks checkout".into()),
    )
    .await
    .unwrap();
    assert_eq!(plan.revision, r1);
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(report.revision.as_deref(), Some(r1.as_str()));
    assert_eq!(data(&settings(&h).await, "chart").as_deref(), Some("1.0.0"));
    h.close().await;
}
