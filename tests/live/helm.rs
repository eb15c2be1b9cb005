//! Helm Apps against the real control plane with the real `helm` (built from its pinned module
//! by the test environment): a chart kept in Git syncs (its Deployment goes Healthy on the
//! simulated nodes), a drift is corrected, a values change and a chart version bump upgrade it,
//! the record answers `revisions`, `show`, `diff` and `blame` for it, a rollback applies the
//! recorded set, hooks are skipped with a note naming each, values from a Secret are used but
//! never stored in plain text, `blame` names the values source (a `values_from` ConfigMap or
//! Secret, the inline values) that changed a field, and a chart that fails to render prunes
//! nothing.
//!
//! `helm` must be on PATH (`scripts/test.sh` puts the test environment's first). Only on the
//! floor of the version matrix, whose build has no helm, may it be missing: the tests say so and
//! check nothing else.

use crate::support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use reckon::event::{Event, Health, SyncOutcome};
use reckon::query;
use reckon::reconcile::PassStatus;
use reckon::reconcile::rollback::{self, RollbackTarget};
use support::harness::{Harness, pass, synced};

const KEY: [u8; 32] = [5; 32];

/// Whether `helm` is on PATH. Missing is a failure except on the floor of the version matrix.
pub(crate) fn helm_available() -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("helm").is_file()));
    if found {
        return true;
    }
    let version = std::env::var("RECKON_K8S_VERSION").unwrap_or_default();
    assert_eq!(
        version, "1.20.2",
        "helm is not on PATH: scripts/provision-testenv.sh builds it into the control plane's \
         bin directory (scripts/test.sh puts that first on PATH)"
    );
    eprintln!("helm is not on PATH on the floor of the version matrix (v{version}); skipped");
    false
}

const CHART: &str = "apiVersion: v2\nname: web\nversion: 0.1.0\nappVersion: \"1.0\"\n";

const VALUES: &str = "replicas: 1\ncolor: blue\ngreeting: hello\nimage: example.invalid/web:1\n";

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels:
    app: {{ .Release.Name }}
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
          image: {{ .Values.image }}
"#;

const CONFIG_MAP: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
data:
  color: {{ .Values.color | quote }}
  greeting: {{ .Values.greeting | quote }}
  chart: {{ .Chart.Version | quote }}
  namespace: {{ .Release.Namespace | quote }}
  {{- if .Capabilities.APIVersions.Has "apps/v1/Deployment" }}
  deployments: "served"
  {{- end }}
"#;

const HOOK: &str = r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-migrate
  annotations:
    "helm.sh/hook": pre-install,pre-upgrade
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: migrate
          image: example.invalid/migrate:1
"#;

fn chart_files(version: &str, prod_color: &str) -> Vec<(String, String)> {
    vec![
        (
            "chart/Chart.yaml".into(),
            CHART.replace("0.1.0", version).to_string(),
        ),
        ("chart/values.yaml".into(), VALUES.into()),
        (
            "chart/values-prod.yaml".into(),
            format!("color: {prod_color}\ngreeting: hi\n"),
        ),
        ("chart/templates/deployment.yaml".into(), DEPLOYMENT.into()),
        ("chart/templates/settings.yaml".into(), CONFIG_MAP.into()),
        ("chart/templates/migrate.yaml".into(), HOOK.into()),
    ]
}

fn commit(h: &Harness, message: &str, files: &[(String, String)]) -> String {
    let files: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), Some(t.as_str())))
        .collect();
    h.commit(message, &files)
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

/// The helm block of the App under test: a values file over the chart's, inline values last.
const HELM: &str =
    "    helm:\n      values_files: [values-prod.yaml]\n      values:\n        greeting: inline\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_from_git_syncs_is_corrected_upgrades_and_rolls_back_on_the_record() {
    if !helm_available() {
        return;
    }
    let h = Harness::new("helm").await;
    let client = h.catalog.client().clone();
    let nodes = support::simulated_nodes(&client).await > 0;
    let c1 = commit(&h, "Chart 0.1.0", &chart_files("0.1.0", "green"));
    let app = "web";
    let mut r = h.reconciler(h.app(app, "chart", HELM), KEY);

    // 1. It syncs: values merged in order (chart < values file < inline), the release's name
    //    and namespace and the cluster's capabilities in the templates.
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    let cm = settings(&h).await;
    assert_eq!(
        data(&cm, "color").as_deref(),
        Some("green"),
        "the values file wins over the chart's"
    );
    assert_eq!(
        data(&cm, "greeting").as_deref(),
        Some("inline"),
        "inline values win over files"
    );
    assert_eq!(data(&cm, "namespace").as_deref(), Some(h.ns.name.as_str()));
    assert_eq!(
        data(&cm, "deployments").as_deref(),
        Some("served"),
        "--api-versions from discovery"
    );
    assert_eq!(
        annotation(&cm, "reckon.dev/helm-chart").as_deref(),
        Some("web-0.1.0")
    );
    assert!(
        annotation(&cm, "reckon.dev/helm-chart-digest")
            .unwrap()
            .starts_with("sha256:")
    );
    let values_digest = annotation(&cm, "reckon.dev/helm-values-digest").unwrap();
    assert!(values_digest.starts_with("hmac-sha256:"), "{values_digest}");
    if nodes {
        assert_eq!(report.health, Health::Healthy, "{report:?}");
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &h.ns.name);
        let status = deployments.get("web").await.unwrap().status.unwrap();
        assert_eq!(status.ready_replicas, Some(1));
    }

    // 2. The hook is not applied, and the skip is recorded naming it.
    let jobs: Api<Job> = Api::namespaced(client.clone(), &h.ns.name);
    assert!(
        jobs.get_opt("web-migrate").await.unwrap().is_none(),
        "a hook is never applied"
    );
    let hook_notes: Vec<(String, String, String)> = h
        .events(app)
        .into_iter()
        .filter_map(|e| match e {
            Event::PruneSkipped(p) => Some((p.object.object.kind, p.object.object.name, p.reason)),
            _ => None,
        })
        .collect();
    assert_eq!(hook_notes.len(), 1, "{hook_notes:?}");
    assert_eq!(
        (hook_notes[0].0.as_str(), hook_notes[0].1.as_str()),
        ("Job", "web-migrate")
    );
    assert!(
        hook_notes[0]
            .2
            .contains("Helm hook pre-install,pre-upgrade from templates/migrate.yaml"),
        "{}",
        hook_notes[0].2
    );

    // 3. A drift is corrected.
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
    assert_eq!(data(&settings(&h).await, "color").as_deref(), Some("green"));
    let new = &h.events(app)[before..];
    assert!(
        new.iter().any(|e| matches!(e, Event::DriftDetected(_))),
        "{new:?}"
    );
    assert!(
        new.iter().any(|e| matches!(e, Event::DriftCorrected(_))),
        "{new:?}"
    );
    assert!(
        !new.iter().any(|e| matches!(e, Event::PruneSkipped(_))),
        "the hook's note is recorded once per render, not per pass: {new:?}"
    );

    // 4. A values change upgrades.
    let c2 = commit(&h, "Prod is yellow", &chart_files("0.1.0", "yellow"));
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(report.revision.as_deref(), Some(c2.as_str()));
    let cm = settings(&h).await;
    assert_eq!(data(&cm, "color").as_deref(), Some("yellow"));
    assert_ne!(
        annotation(&cm, "reckon.dev/helm-values-digest").unwrap(),
        values_digest
    );

    // 5. A chart version bump upgrades.
    let c3 = commit(&h, "Chart 0.2.0", &chart_files("0.2.0", "yellow"));
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    let cm = settings(&h).await;
    assert_eq!(data(&cm, "chart").as_deref(), Some("0.2.0"));
    assert_eq!(
        annotation(&cm, "reckon.dev/helm-chart").as_deref(),
        Some("web-0.2.0")
    );

    // 6. The record answers for it like for any App.
    let projections = h.store.projections().await.unwrap();
    let reader = h.store.reader();
    let rows = query::revisions(reader, &projections, app).unwrap();
    let shas: Vec<&str> = rows.iter().map(|r| r.sha.as_str()).collect();
    for c in [&c1, &c2, &c3] {
        assert!(shas.contains(&c.as_str()), "{shas:?}");
    }
    let shown = query::show(reader, &projections, app, &c1).unwrap();
    let recorded_cm = shown
        .manifests
        .iter()
        .find(|m| m["kind"] == "ConfigMap")
        .unwrap();
    assert_eq!(recorded_cm["data"]["color"], "green");
    assert_eq!(
        recorded_cm["metadata"]["annotations"]["reckon.dev/helm-chart"], "web-0.1.0",
        "the recorded set names the chart that made it"
    );
    assert!(
        !shown.manifests.iter().any(|m| m["kind"] == "Job"),
        "hooks are not in the recorded set"
    );
    let diff = query::diff_revisions(reader, &projections, app, &c2, &c3).unwrap();
    let changed: Vec<&str> = diff.changed.iter().map(|c| c.object.as_str()).collect();
    assert!(
        changed.iter().any(|o| o.contains("web-settings")),
        "{changed:?}"
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
    assert_eq!(
        color.set_by.as_ref().map(|c| c.revision.as_str()),
        Some(c2.as_str()),
        "the values change set the color: {blame:?}"
    );
    let by_commit = color.set_by.as_ref().unwrap();
    assert_eq!(
        (by_commit.summary.as_deref(), &by_commit.values),
        (Some("Prod is yellow"), &None),
        "a values file in Git is its commit's change: {blame:?}"
    );
    let blame = query::blame(reader, &projections, &spec, Some(app), Some("/data/chart")).unwrap();
    let chart = blame.fields[0].set_by.as_ref().unwrap();
    assert_eq!(
        (
            chart.revision.as_str(),
            chart.summary.as_deref(),
            &chart.values
        ),
        (c3.as_str(), Some("Chart 0.2.0"), &None),
        "a chart bump with the same values is the bump's: {blame:?}"
    );

    // 7. Rollback applies the recorded set of c1, without rendering it again.
    rollback::request_rollback(
        &h.store,
        app,
        RollbackTarget::Revision(c1.clone()),
        "alice".into(),
        Some("0.2.0 breaks checkout".into()),
    )
    .await
    .unwrap();
    let before = h.events(app).len();
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(report.revision.as_deref(), Some(c1.as_str()));
    let cm = settings(&h).await;
    assert_eq!(data(&cm, "color").as_deref(), Some("green"));
    assert_eq!(data(&cm, "chart").as_deref(), Some("0.1.0"));
    assert_eq!(
        annotation(&cm, "reckon.dev/helm-chart").as_deref(),
        Some("web-0.1.0")
    );
    let new = &h.events(app)[before..];
    assert!(
        !new.iter().any(|e| matches!(e, Event::RenderSucceeded(_))),
        "applied from the record: {new:?}"
    );
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_that_fails_to_render_names_template_and_line_and_prunes_nothing() {
    if !helm_available() {
        return;
    }
    let h = Harness::new("helm-bad").await;
    commit(&h, "Chart 0.1.0", &chart_files("0.1.0", "green"));
    let app = "web";
    let mut r = h.reconciler(h.app(app, "chart", ""), KEY);
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");

    // A required value that is missing.
    let mut files = chart_files("0.1.0", "green");
    files[3].1 = DEPLOYMENT.replace(
        "{{ .Values.image }}",
        "{{ required \"image.tag is required\" .Values.tag }}",
    );
    let c2 = commit(&h, "Needs a tag", &files);
    let before = h.events(app).len();
    let report = pass(&mut r).await;
    let PassStatus::RenderFailed { error } = &report.status else {
        panic!("{report:?}");
    };
    assert!(
        error.contains("helm chart web 0.1.0: templates/deployment.yaml:19: image.tag is required"),
        "{error}"
    );
    let new = &h.events(app)[before..];
    assert!(
        new.iter()
            .any(|e| matches!(e, Event::RenderFailed(f) if f.revision == c2)),
        "{new:?}"
    );
    assert!(
        !new.iter().any(|e| matches!(e, Event::ObjectPruned(_))),
        "{new:?}"
    );
    // Everything applied before is still there.
    settings(&h).await;
    let deployments: Api<Deployment> = Api::namespaced(h.catalog.client().clone(), &h.ns.name);
    assert!(deployments.get_opt("web").await.unwrap().is_some());

    // Values that fail the chart's schema.
    let mut files = chart_files("0.1.0", "green");
    files.push((
        "chart/values.schema.json".into(),
        r#"{"type": "object", "properties": {"replicas": {"type": "string"}}}"#.into(),
    ));
    commit(&h, "A schema", &files);
    let report = pass(&mut r).await;
    let PassStatus::RenderFailed { error } = &report.status else {
        panic!("{report:?}");
    };
    assert!(
        error.contains("helm chart web 0.1.0: values.schema.json: the values do not match")
            && error.contains("/replicas"),
        "{error}"
    );
    settings(&h).await;
    h.close().await;
}

/// Values from a Secret render into the chart (here into a Secret of its own), a change of the
/// Secret renders the same commit again, and neither the store's events nor its recorded
/// manifests hold the value in plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_from_a_secret_are_used_and_never_stored_in_plain_text() {
    if !helm_available() {
        return;
    }
    let h = Harness::new("helm-secret").await;
    let client = h.catalog.client().clone();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &h.ns.name);
    let values_secret = |password: &str| Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("db-values".into()),
            ..Default::default()
        },
        string_data: Some(
            [("values.yaml".to_string(), format!("password: {password}\n"))]
                .into_iter()
                .collect(),
        ),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &values_secret("correct-horse"))
        .await
        .unwrap();
    let files = vec![
        ("chart/Chart.yaml".to_string(), CHART.to_string()),
        ("chart/values.yaml".to_string(), "password: unset\n".to_string()),
        (
            "chart/templates/db.yaml".to_string(),
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {{ .Values.password | quote }}\n"
                .to_string(),
        ),
    ];
    let c1 = commit(&h, "A database secret", &files);
    let app = "db";
    let helm = "    helm:\n      values_from:\n        - {kind: Secret, name: db-values}\n";
    let mut r = h.reconciler(h.app(app, "chart", helm), KEY);
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    let password = |s: Secret| String::from_utf8(s.data.unwrap()["password"].0.clone()).unwrap();
    assert_eq!(password(secrets.get("db").await.unwrap()), "correct-horse");

    // The Secret changes, the commit does not: the same revision renders again.
    secrets
        .replace("db-values", &PostParams::default(), &{
            let mut s = values_secret("battery-staple");
            s.metadata.resource_version = secrets
                .get("db-values")
                .await
                .unwrap()
                .metadata
                .resource_version;
            s
        })
        .await
        .unwrap();
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(report.revision.as_deref(), Some(c1.as_str()));
    assert_eq!(password(secrets.get("db").await.unwrap()), "battery-staple");

    let events = format!("{:?}", h.events(app));
    let projections = h.store.projections().await.unwrap();
    let shown = query::show(h.store.reader(), &projections, app, &c1).unwrap();
    let recorded = serde_json::to_string(&shown.manifests).unwrap();
    for plain in ["correct-horse", "battery-staple"] {
        assert!(!events.contains(plain), "{plain} in the events");
        assert!(
            !recorded.contains(plain),
            "{plain} in the recorded manifests: {recorded}"
        );
    }
    let renders = h
        .events(app)
        .into_iter()
        .filter(|e| matches!(e, Event::RenderSucceeded(r) if r.revision == c1))
        .count();
    assert_eq!(
        renders, 2,
        "each distinct render of the revision is recorded"
    );

    // A missing values Secret is a render failure naming it, not a render without it.
    secrets
        .delete("db-values", &Default::default())
        .await
        .unwrap();
    let report = pass(&mut r).await;
    let PassStatus::RenderFailed { error } = &report.status else {
        panic!("{report:?}");
    };
    assert!(
        error.contains(&format!(
            "Secret {}/db-values key values.yaml: not found",
            h.ns.name
        )),
        "{error}"
    );
    h.close().await;
}

/// Dependencies come vendored under `charts/` (with values passed down by the parent); one
/// listed in `Chart.yaml` but neither vendored nor locked in `Chart.lock` fails the render
/// saying so — nothing is fetched — and prunes nothing. (Locked ones: `helm_deps.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendored_dependency_renders_and_a_missing_one_fails_without_fetching() {
    if !helm_available() {
        return;
    }
    let h = Harness::new("helm-deps").await;
    let parent =
        |deps: &str| format!("apiVersion: v2\nname: web\nversion: 0.1.0\ndependencies:\n{deps}");
    let cache_dep =
        "  - name: cache\n    version: 1.0.0\n    repository: https://charts.example.invalid\n";
    let mut files = vec![
        ("chart/Chart.yaml".to_string(), parent(cache_dep)),
        ("chart/values.yaml".to_string(), "cache:\n  size: large\n".to_string()),
        (
            "chart/charts/cache/Chart.yaml".to_string(),
            "apiVersion: v2\nname: cache\nversion: 1.0.0\n".to_string(),
        ),
        ("chart/charts/cache/values.yaml".to_string(), "size: small\n".to_string()),
        (
            "chart/charts/cache/templates/cm.yaml".to_string(),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cache\ndata:\n  size: {{ .Values.size | quote }}\n"
                .to_string(),
        ),
    ];
    commit(&h, "A chart with a vendored dependency", &files);
    let app = "web";
    let mut r = h.reconciler(h.app(app, "chart", ""), KEY);
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    let cms: Api<ConfigMap> = Api::namespaced(h.catalog.client().clone(), &h.ns.name);
    let cache = cms.get("web-cache").await.unwrap();
    assert_eq!(
        data(&cache, "size").as_deref(),
        Some("large"),
        "the parent's values reach it"
    );

    files[0].1 = parent(&format!(
        "{cache_dep}  - name: db\n    version: 1.0.0\n    repository: https://charts.example.invalid\n"
    ));
    commit(&h, "A dependency that is not vendored", &files);
    let before = h.events(app).len();
    let report = pass(&mut r).await;
    let PassStatus::RenderFailed { error } = &report.status else {
        panic!("{report:?}");
    };
    assert!(
        error.contains("helm chart web 0.1.0: ")
            && error.contains(
                "dependencies db are not vendored under charts/ and there is no Chart.lock"
            ),
        "{error}"
    );
    let new = &h.events(app)[before..];
    assert!(
        !new.iter().any(|e| matches!(e, Event::ObjectPruned(_))),
        "{new:?}"
    );
    assert!(cms.get_opt("web-cache").await.unwrap().is_some());
    h.close().await;
}

/// A change of the values read outside Git — a `values_from` ConfigMap, the inline values, a
/// `values_from` Secret — renders the same commit again, and `blame` credits each field it
/// changed to that values source (not to the commit, whose author did not change it); the
/// Secret's values are nowhere in the store's export, blobs included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blame_names_the_values_source_that_changed_a_field() {
    if !helm_available() {
        return;
    }
    let h = Harness::new("helm-values").await;
    let client = h.catalog.client().clone();
    let ns = h.ns.name.clone();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let values_cm = |color: &str| ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("web-values".into()),
            ..Default::default()
        },
        data: Some(
            [("values.yaml".to_string(), format!("color: {color}\n"))]
                .into_iter()
                .collect(),
        ),
        ..Default::default()
    };
    let values_secret = |password: &str| Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("web-secret".into()),
            ..Default::default()
        },
        string_data: Some(
            [("values.yaml".to_string(), format!("password: {password}\n"))]
                .into_iter()
                .collect(),
        ),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &values_cm("teal"))
        .await
        .unwrap();
    secrets
        .create(&PostParams::default(), &values_secret("first-sesame"))
        .await
        .unwrap();
    let files = vec![
        ("chart/Chart.yaml".to_string(), CHART.to_string()),
        (
            "chart/values.yaml".to_string(),
            "color: blue\ngreeting: hello\npassword: unset\n".to_string(),
        ),
        (
            "chart/templates/settings.yaml".to_string(),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-settings\ndata:\n  color: {{ .Values.color | quote }}\n  greeting: {{ .Values.greeting | quote }}\n"
                .to_string(),
        ),
        (
            "chart/templates/db.yaml".to_string(),
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-db\nstringData:\n  password: {{ .Values.password | quote }}\n"
                .to_string(),
        ),
    ];
    let c1 = commit(&h, "Settings and a database secret", &files);
    let app = "web";
    let helm = |greeting: &str| {
        format!(
            "    helm:\n      values_from:\n        - {{kind: ConfigMap, name: web-values}}\n        - {{kind: Secret, name: web-secret}}\n      values:\n        greeting: {greeting}\n"
        )
    };
    let mut r = h.reconciler(h.app(app, "chart", &helm("inline-one")), KEY);
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(data(&settings(&h).await, "color").as_deref(), Some("teal"));

    let credit = |path: &str, object: &str| {
        let h = &h;
        let path = path.to_string();
        let object = object.to_string();
        async move {
            let projections = h.store.projections().await.unwrap();
            let spec: query::ObjectSpec = object.parse().unwrap();
            let blame =
                query::blame(h.store.reader(), &projections, &spec, Some(app), None).unwrap();
            blame
                .fields
                .into_iter()
                .find(|f| f.path.ends_with(&path))
                .unwrap_or_else(|| panic!("no field {path} on {object}"))
                .set_by
                .unwrap()
        }
    };
    let settings_object = format!("ConfigMap/{ns}/web-settings");
    let first = credit("/data/color", &settings_object).await;
    assert_eq!(
        (first.revision.as_str(), &first.values),
        (c1.as_str(), &None),
        "the creation is the commit's"
    );

    // 1. The values ConfigMap changes: the same commit renders again; the color is owed to it.
    cms.replace("web-values", &PostParams::default(), &{
        let mut cm = values_cm("olive");
        cm.metadata.resource_version = cms
            .get("web-values")
            .await
            .unwrap()
            .metadata
            .resource_version;
        cm
    })
    .await
    .unwrap();
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(report.revision.as_deref(), Some(c1.as_str()));
    assert_eq!(data(&settings(&h).await, "color").as_deref(), Some("olive"));
    let configmap_layer = format!("ConfigMap {ns}/web-values key values.yaml");
    let color = credit("/data/color", &settings_object).await;
    let values = color.values.as_ref().expect("owed to the values");
    assert_eq!(
        values
            .layers
            .iter()
            .map(|l| (l.source.as_str(), l.change))
            .collect::<Vec<_>>(),
        [(configmap_layer.as_str(), query::LayerChangeKind::Changed)],
        "{color:?}"
    );
    assert!(!values.with_revision);
    assert_eq!(
        color.revision, c1,
        "the apply of the same commit, rendered again"
    );
    assert_eq!(
        color.summary.as_deref(),
        Some(format!("values: {configmap_layer} changed").as_str())
    );
    assert_eq!(
        (color.author_email.as_deref(), &color.chart),
        (None, &None),
        "the commit's author did not change it"
    );
    let greeting = credit("/data/greeting", &settings_object).await;
    assert_eq!(
        (greeting.applied_seq, &greeting.values),
        (first.applied_seq, &None),
        "a field the values change left alone keeps its credit"
    );

    // 2. The inline values change (a new App configuration, as after an edit of reckon.yaml).
    let mut r = h.reconciler(h.app(app, "chart", &helm("inline-two")), KEY);
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(
        data(&settings(&h).await, "greeting").as_deref(),
        Some("inline-two")
    );
    let greeting = credit("/data/greeting", &settings_object).await;
    assert_eq!(
        greeting.summary.as_deref(),
        Some("values: inline values changed")
    );
    assert_eq!(greeting.revision, c1);
    let color_again = credit("/data/color", &settings_object).await;
    assert_eq!(
        (color_again.applied_seq, color_again.summary),
        (color.applied_seq, color.summary),
        "the color is still the ConfigMap's"
    );

    // 3. The values Secret changes: the rendered Secret's password is owed to it, by name only.
    secrets
        .replace("web-secret", &PostParams::default(), &{
            let mut s = values_secret("second-sesame");
            s.metadata.resource_version = secrets
                .get("web-secret")
                .await
                .unwrap()
                .metadata
                .resource_version;
            s
        })
        .await
        .unwrap();
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    let password = secrets.get("web-db").await.unwrap().data.unwrap()["password"]
        .0
        .clone();
    assert_eq!(password, b"second-sesame");
    let secret_layer = format!("Secret {ns}/web-secret key values.yaml");
    let by = credit("password", &format!("Secret/{ns}/web-db")).await;
    assert_eq!(
        by.summary.as_deref(),
        Some(format!("values: {secret_layer} changed").as_str()),
        "{by:?}"
    );
    let layer = &by.values.as_ref().unwrap().layers[0];
    assert!(
        layer.from.as_deref().unwrap().starts_with("hmac-sha256:")
            && layer.to.as_deref().unwrap().starts_with("hmac-sha256:")
            && layer.from != layer.to,
        "{layer:?}"
    );

    // 4. A new commit and new inline values in one apply: both are named, the commit with its
    //    author.
    let mut files = files;
    files[2].1 = files[2].1.replace(
        "  greeting:",
        "  chart: {{ .Chart.Version | quote }}\n  greeting:",
    );
    files[0].1 = CHART.replace("0.1.0", "0.2.0");
    let c2 = commit(&h, "Chart 0.2.0 says its version", &files);
    let mut r = h.reconciler(h.app(app, "chart", &helm("inline-three")), KEY);
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(report.revision.as_deref(), Some(c2.as_str()));
    let both = "Chart 0.2.0 says its version; and values: inline values changed";
    for field in ["/data/greeting", "/data/chart"] {
        let by = credit(field, &settings_object).await;
        assert_eq!(
            (by.revision.as_str(), by.summary.as_deref()),
            (c2.as_str(), Some(both)),
            "{field}: {by:?}"
        );
        assert!(by.values.as_ref().unwrap().with_revision, "{by:?}");
        assert!(
            by.author_email.is_some(),
            "the commit's author is named too: {by:?}"
        );
    }

    // No values of the Secret anywhere in the store: events, blobs, indexes' export.
    let mut export = Vec::new();
    reckon::store::exchange::export(h.store.reader(), &mut export, true, &mut |_| {}).unwrap();
    let export = String::from_utf8(export).unwrap();
    assert!(
        export.contains(&secret_layer),
        "the layer is named in the record"
    );
    use base64::Engine as _;
    for plain in ["first-sesame", "second-sesame"] {
        let encoded = base64::engine::general_purpose::STANDARD.encode(plain);
        assert!(!export.contains(plain), "{plain} in the store's export");
        assert!(
            !export.contains(&encoded),
            "{plain} (base64) in the store's export"
        );
    }
    h.close().await;
}
