//! Tests of the App custom resource without a cluster: an App object yields the same App as
//! the file, errors name the object's keys, the committed CRD is current, and the status
//! conditions and their transition times.

use super::*;
use crate::event::{Health, SyncOutcome};

fn object(namespace: &str, name: &str, spec: serde_json::Value) -> App {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "reckon.dev/v1alpha1",
        "kind": "App",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
    .expect("a valid App object")
}

/// App `web` of a file with these keys (and an App `db` it may depend on).
/// An App object's App with what only an App object has taken back to the file's form: its
/// identity (`NAMESPACE.NAME`) becomes its name, its dependencies (App objects of its namespace)
/// their names.
fn as_file_app(mut app: config::App) -> config::App {
    let object = app
        .object
        .take()
        .expect("an App object's App names its object");
    assert_eq!(
        app.name,
        format!("{}.{}", object.namespace, object.name),
        "identified by namespace and name"
    );
    let prefix = format!("{}.", object.namespace);
    app.name = object.name;
    for dep in &mut app.depends_on {
        *dep = dep
            .strip_prefix(&prefix)
            .expect("a dependency of its namespace")
            .to_string();
    }
    app
}

fn file_app(yaml_keys: &str) -> config::App {
    let text = format!(
        "apps:\n  - name: web\n{yaml_keys}  - name: db\n    source:\n      url: https://e.com/db.git\n"
    );
    config::parse(&text, Path::new("reckon.yaml"))
        .expect("valid file")
        .apps
        .remove(0)
}

#[test]
fn every_key_of_an_app_object_means_what_it_means_in_the_file() {
    let spec = serde_json::json!({
        "source": {
            "url": "https://example.com/repo.git",
            "ref": {"tag": "v1.2.0"},
            "path": "deploy/prod",
            "interval": "30s",
            "auth": {"basic": {"username": "bot", "password": {"env": "GIT_PASSWORD"}}},
            "caFile": "/etc/ca.pem",
            "signature": {"mode": "require", "allowedSigners": "/etc/signers", "keys": ["/k.asc"]}
        },
        "target": {"kubeconfig": "/kc", "context": "prod", "namespace": "shop"},
        "prune": {"enabled": false, "allowEmpty": true},
        "drift": "detect",
        "ignore": [{"select": {"group": "apps", "kind": "Deployment"}, "pointers": ["/spec/replicas"]}],
        "suspend": true,
        "dependsOn": ["db"],
        "conflicts": "report",
        "healthTimeout": "2m"
    });
    let from_object = as_file_app(to_config(&object("team", "web", spec), None).unwrap());
    let from_file = file_app(
        "    source:
      url: https://example.com/repo.git
      ref: {tag: v1.2.0}
      path: deploy/prod
      interval: 30s
      auth: {basic: {username: bot, password: {env: GIT_PASSWORD}}}
      ca_file: /etc/ca.pem
      signature: {mode: require, allowed_signers: /etc/signers, keys: [/k.asc]}
    target: {kubeconfig: /kc, context: prod, namespace: shop}
    prune: {enabled: false, allow_empty: true}
    drift: detect
    ignore:
      - select: {group: apps, kind: Deployment}
        pointers: [/spec/replicas]
    suspend: true
    depends_on: [db]
    conflicts: report
    health_timeout: 2m
",
    );
    assert_eq!(from_object, from_file);
}

#[test]
fn a_helm_block_means_what_it_means_in_the_file_and_its_values_keep_their_keys() {
    let spec = serde_json::json!({
        "source": {"url": "https://example.com/repo.git", "path": "charts/web"},
        "target": {"namespace": "shop"},
        "helm": {
            "release": "web-prod",
            "valuesFiles": ["values-prod.yaml"],
            "valuesFrom": [{"kind": "Secret", "name": "db-values", "optional": true}],
            "values": {"replicaCount": 2, "image": {"pullPolicy": "Always"}}
        }
    });
    let mut from_object = as_file_app(to_config(&object("team", "web", spec), None).unwrap());
    let from_file = file_app(
        "    source:
      url: https://example.com/repo.git
      path: charts/web
    target: {namespace: shop}
    helm:
      release: web-prod
      values_files: [values-prod.yaml]
      values_from: [{kind: Secret, name: db-values, optional: true}]
      values: {replicaCount: 2, image: {pullPolicy: Always}}
",
    );
    // An App object's values come from its own namespace, whatever its target's.
    let from = &mut from_object.helm.as_mut().unwrap().values_from[0];
    assert_eq!(from.namespace.as_deref(), Some("team"));
    from.namespace = None;
    assert_eq!(from_object, from_file);
    assert_eq!(
        from_object.helm.unwrap().values.unwrap()["image"]["pullPolicy"],
        "Always",
        "the chart's keys are not renamed"
    );
    let elsewhere = serde_json::json!({
        "source": {"url": "https://example.com/repo.git"},
        "helm": {"valuesFrom": [{"kind": "Secret", "name": "db", "namespace": "kube-system"}]}
    });
    match to_config(&object("team", "web", elsewhere), None) {
        Err(CrdError::InvalidSpec { key, message, .. }) => {
            assert_eq!(key, "spec.helm.valuesFrom[0].namespace");
            assert!(message.contains("only from its own namespace"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let bad = serde_json::json!({
        "source": {"url": "https://example.com/repo.git"},
        "helm": {"valuesFrom": [{"kind": "Pod", "name": "x"}]}
    });
    match to_config(&object("team", "web", bad), None) {
        Err(CrdError::InvalidSpec { key, .. }) => {
            assert!(key.starts_with("spec.helm.valuesFrom"), "{key}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn helm_repositories_mean_what_they_mean_in_the_file() {
    let spec = serde_json::json!({
        "source": {"url": "https://example.com/repo.git", "path": "charts/web"},
        "target": {"namespace": "shop"},
        "helm": {"repositories": [
            {"url": "https://charts.example.com/stable/", "caFile": "/etc/ca.pem",
             "auth": {"basic": {"username": "deploy", "password": {"file": "/run/pw"}}}},
            {"url": "oci://127.0.0.1:5000/charts", "insecureHttp": true}
        ]}
    });
    let from_object = as_file_app(to_config(&object("team", "web", spec), None).unwrap());
    let from_file = file_app(
        "    source:
      url: https://example.com/repo.git
      path: charts/web
    target: {namespace: shop}
    helm:
      repositories:
        - url: https://charts.example.com/stable/
          ca_file: /etc/ca.pem
          auth: {basic: {username: deploy, password: {file: /run/pw}}}
        - {url: \"oci://127.0.0.1:5000/charts\", insecure_http: true}
",
    );
    assert_eq!(from_object, from_file);
    let repositories = &from_object.helm.as_ref().unwrap().repositories;
    assert_eq!(repositories[0].url, "https://charts.example.com/stable");
    assert!(repositories[1].insecure_http);
    let remote_plain = serde_json::json!({
        "source": {"url": "https://example.com/repo.git"},
        "helm": {"repositories": [{"url": "oci://registry.example.com/charts", "insecureHttp": true}]}
    });
    match to_config(&object("team", "web", remote_plain), None) {
        Err(CrdError::InvalidSpec { key, message, .. }) => {
            assert!(key.starts_with("spec.helm.repositories"), "{key}");
            assert!(message.contains("loopback"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn defaults_are_the_files_except_the_namespace_and_cluster() {
    let spec = serde_json::json!({"source": {"url": "https://example.com/repo.git"}});
    let app = to_config(&object("team-a", "web", spec), Some(Path::new("/agent/kc"))).unwrap();
    assert_eq!(app.given_name(), "web", "Helm's default release name");
    let app = as_file_app(app);
    let mut expected = file_app("    source:\n      url: https://example.com/repo.git\n");
    expected.target.namespace = "team-a".into();
    expected.target.kubeconfig = Some(PathBuf::from("/agent/kc"));
    assert_eq!(app, expected);
    assert_eq!(app.source.interval, std::time::Duration::from_secs(60));
    assert!(app.prune.enabled);
}

#[test]
fn a_dependency_defined_elsewhere_is_an_app_object_of_the_same_namespace() {
    let spec = serde_json::json!({"source": {"url": "https://e.com/r.git"}, "dependsOn": ["db"]});
    let app = to_config(&object("ns", "web", spec), None).unwrap();
    assert_eq!(app.name, "ns.web");
    assert_eq!(app.depends_on, vec!["ns.db".to_string()]);
}

fn stored(last_seq: u64, secs: i64) -> Option<StoredUnder> {
    Some(StoredUnder {
        last_seq,
        last_time: DateTime::from_timestamp(secs, 0).unwrap(),
    })
}

fn legacy_status(anchor: Option<u64>) -> AppStatus {
    AppStatus {
        last_event_seq: anchor,
        ..Default::default()
    }
}

#[test]
fn a_previous_reckons_history_under_the_bare_name_is_the_objects_only_when_its_anchor_proves_it() {
    let created = DateTime::from_timestamp(1_000, 0);
    let status = legacy_status(Some(42));
    // The anchor is the last event under the name: nobody recorded there after it.
    assert_eq!(
        continuity(
            Some(&status),
            created,
            true,
            None,
            stored(42, 900),
            "web",
            false
        ),
        Continuity::Rename {
            from: "web".into(),
            anchor: 42
        }
    );
    // Someone recorded under the name after the object's status saw it (another namespace's
    // object of the same name, under the old keying): not provably this object's.
    assert_eq!(
        continuity(
            Some(&status),
            created,
            true,
            None,
            stored(50, 900),
            "web",
            false
        ),
        Continuity::Continue
    );
    // No anchor, no history, a file App of that name, an anchor of another shard's store,
    // or a status already written with identities: nothing to rename.
    for (status, under_name, file_app, here) in [
        (legacy_status(None), stored(42, 900), false, true),
        (legacy_status(Some(42)), None, false, true),
        (legacy_status(Some(42)), stored(42, 900), true, true),
        (legacy_status(Some(42)), stored(42, 900), false, false),
        (
            AppStatus {
                identity: Some("ns.web".into()),
                ..legacy_status(Some(42))
            },
            stored(42, 900),
            false,
            true,
        ),
    ] {
        assert_eq!(
            continuity(
                Some(&status),
                created,
                here,
                None,
                under_name,
                "web",
                file_app
            ),
            Continuity::Continue,
            "{status:?}"
        );
    }
    // Renamed already (history under the identity): carry on.
    assert_eq!(
        continuity(
            Some(&status),
            created,
            true,
            stored(60, 950),
            stored(42, 900),
            "web",
            false
        ),
        Continuity::Continue
    );
}

#[test]
fn a_new_object_with_the_identity_of_a_deleted_one_starts_anew() {
    let created = DateTime::from_timestamp(1_000, 0);
    // History under the identity, all before the object was created, and no status: an
    // earlier object's.
    assert_eq!(
        continuity(None, created, true, stored(7, 999), None, "web", false),
        Continuity::Fresh { previous_seq: 7 }
    );
    // History recorded since it was created is its own (its first status write failed).
    assert_eq!(
        continuity(None, created, true, stored(7, 1_000), None, "web", false),
        Continuity::Continue
    );
    // A status written with identities is the anchor of continuity.
    let status = AppStatus {
        identity: Some("ns.web".into()),
        last_event_seq: Some(7),
        ..Default::default()
    };
    assert_eq!(
        continuity(
            Some(&status),
            created,
            true,
            stored(7, 999),
            None,
            "web",
            false
        ),
        Continuity::Continue
    );
    // Nothing under the identity: nothing to reset.
    assert_eq!(
        continuity(None, created, true, None, stored(3, 10), "web", false),
        Continuity::Continue
    );
}

fn spec_error(spec: serde_json::Value) -> (String, String) {
    match to_config(&object("ns", "web", spec), None) {
        Err(CrdError::InvalidSpec { key, message, .. }) => (key, message),
        other => panic!("expected an invalid spec, got {other:?}"),
    }
}

#[test]
fn errors_name_the_objects_key_paths() {
    let (key, message) = spec_error(serde_json::json!({
        "source": {"url": "https://e.com/r.git", "interval": "0s"}
    }));
    assert_eq!(key, "spec.source.interval");
    assert!(message.contains("at least 1s"), "{message}");

    let (key, message) = spec_error(serde_json::json!({
        "source": {"url": "http://e.com/r.git", "caFile": "/ca.pem"}
    }));
    assert_eq!(key, "spec.source.caFile");
    assert!(message.contains("https://"), "{message}");

    let (key, message) = spec_error(serde_json::json!({
        "source": {"url": "https://e.com/r.git", "ref": {"branch": "a", "tag": "b"}}
    }));
    assert_eq!(key, "spec.source.ref");
    assert!(message.contains("exactly one"), "{message}");

    let (key, _) = spec_error(serde_json::json!({
        "source": {"url": "https://e.com/r.git"},
        "ignore": [{"pointers": ["spec/replicas"]}]
    }));
    assert_eq!(key, "spec.ignore[0].pointers");
}

#[test]
fn an_invalid_object_name_is_refused_as_in_the_file() {
    let spec = serde_json::json!({"source": {"url": "https://e.com/r.git"}});
    let name = "a".repeat(64);
    match to_config(&object("ns", &name, spec), None) {
        Err(CrdError::InvalidSpec { key, message, .. }) => {
            assert_eq!(key, "spec.name");
            assert!(message.contains("at most 63"), "{message}");
        }
        other => panic!("expected an invalid name, got {other:?}"),
    }
}

#[test]
fn the_committed_crd_is_the_generated_one() {
    let committed = include_str!("../../deploy/base/crd.yaml");
    assert!(
        crd_yaml().unwrap() == committed,
        "deploy/base/crd.yaml is stale: run `cargo run -- crd > deploy/base/crd.yaml`"
    );
}

#[test]
fn the_crd_has_a_status_subresource_and_a_structural_schema() {
    use kube::CustomResourceExt as _;
    let crd = serde_json::to_value(App::crd()).unwrap();
    let version = &crd["spec"]["versions"][0];
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["required"], serde_json::json!(["source"]));
    assert_eq!(
        spec["properties"]["drift"]["enum"],
        serde_json::json!(["correct", "detect", "off"])
    );
    let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    assert!(status["lastEventSeq"].is_object());
    // A structural schema has a type at every level (Kubernetes rejects one without).
    fn typed(schema: &serde_json::Value, at: &str) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (k, v) in props {
                assert!(v.get("type").is_some(), "{at}.{k} has no type: {v}");
                // kubectl's client-side validation rejects a null among enum values.
                if let Some(values) = v.get("enum").and_then(|e| e.as_array()) {
                    assert!(values.iter().all(|e| !e.is_null()), "{at}.{k}: null in {v}");
                }
                typed(v, &format!("{at}.{k}"));
            }
        }
        if let Some(items) = schema.get("items") {
            typed(items, &format!("{at}[]"));
        }
    }
    typed(&version["schema"]["openAPIV3Schema"], "");
}

fn done(outcome: SyncOutcome, health: Health) -> PassSummary {
    PassSummary::Done {
        outcome,
        health,
        fetch_failure: None,
        failed_attempts: 0,
        refused: Vec::new(),
        outside_boundary: Vec::new(),
    }
}

fn summary(facts: &[ConditionFact; 3]) -> Vec<(&'static str, bool, &str)> {
    facts
        .iter()
        .map(|f| (f.type_, f.status, f.reason.as_str()))
        .collect()
}

#[test]
fn conditions_say_ready_reconciling_or_stalled() {
    assert_eq!(
        summary(&pass_conditions(&done(
            SyncOutcome::Succeeded,
            Health::Healthy
        ))),
        vec![
            ("Ready", true, "Synced"),
            ("Reconciling", false, "Synced"),
            ("Stalled", false, "Synced")
        ]
    );
    assert_eq!(
        summary(&pass_conditions(&done(
            SyncOutcome::Succeeded,
            Health::Progressing
        ))),
        vec![
            ("Ready", false, "Progressing"),
            ("Reconciling", true, "Progressing"),
            ("Stalled", false, "Progressing")
        ]
    );
    assert_eq!(
        summary(&pass_conditions(&PassSummary::RenderFailed(
            "bad yaml".into()
        ))),
        vec![
            ("Ready", false, "RenderFailed"),
            ("Reconciling", false, "RenderFailed"),
            ("Stalled", true, "RenderFailed")
        ]
    );
    assert_eq!(
        summary(&pass_conditions(&done(
            SyncOutcome::Failed,
            Health::Healthy
        ))),
        vec![
            ("Ready", false, "SyncFailed"),
            ("Reconciling", false, "SyncFailed"),
            ("Stalled", true, "SyncFailed")
        ]
    );
    let unreachable = PassSummary::NoRevision {
        fetch_failure: Some("connection refused".into()),
    };
    let facts = pass_conditions(&unreachable);
    assert_eq!(
        summary(&facts),
        vec![
            ("Ready", false, "NoRevision"),
            ("Reconciling", false, "Fetching"),
            ("Stalled", true, "FetchFailed")
        ]
    );
    assert_eq!(facts[0].message, "connection refused");
    assert_eq!(
        summary(&pass_conditions(&PassSummary::Suspended))[0],
        ("Ready", false, "Suspended")
    );
}

#[test]
fn an_unchanged_condition_keeps_its_transition_time() {
    let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let t1 = t0 + chrono::Duration::minutes(5);
    let first = with_times(
        &pass_conditions(&done(SyncOutcome::Succeeded, Health::Progressing)),
        &[],
        Some(1),
        t0,
    );
    assert!(
        first
            .iter()
            .all(|c| c.last_transition_time == "2026-01-01T00:00:00Z")
    );
    // Same facts later: identical conditions, so the status does not change.
    let again = with_times(
        &pass_conditions(&done(SyncOutcome::Succeeded, Health::Progressing)),
        &first,
        Some(1),
        t1,
    );
    assert_eq!(again, first);
    // Ready flips: Ready and Reconciling move to t1, Stalled (still False) keeps t0.
    let ready = with_times(
        &pass_conditions(&done(SyncOutcome::Succeeded, Health::Healthy)),
        &first,
        Some(1),
        t1,
    );
    assert_eq!(ready[0].last_transition_time, "2026-01-01T00:05:00Z");
    assert_eq!(ready[1].last_transition_time, "2026-01-01T00:05:00Z");
    assert_eq!(ready[2].last_transition_time, "2026-01-01T00:00:00Z");
}

#[test]
fn long_messages_are_cut_on_a_character_boundary() {
    let long = "é".repeat(2000);
    let c = with_times(
        &[fact("Ready", false, "RenderFailed", long)],
        &[],
        None,
        Utc::now(),
    );
    let message = c[0].message.as_deref().unwrap();
    assert!(message.len() <= 1024 + '…'.len_utf8());
    assert!(message.ends_with('…'));
}

#[test]
fn the_store_is_behind_only_when_the_status_saw_more() {
    assert_eq!(store_behind(None, 0), None);
    assert_eq!(store_behind(Some(10), 10), None);
    assert_eq!(store_behind(Some(10), 42), None);
    assert_eq!(store_behind(Some(10), 3), Some(10));
    assert_eq!(store_behind(Some(10), 0), Some(10));
}

#[test]
fn the_anchor_holds_only_for_the_shard_that_wrote_the_status() {
    // Written by an unsharded agent or shard 0: anchors shard 0 (the same store, reckon-0's).
    assert!(anchor_applies(None, 0));
    assert!(anchor_applies(Some(0), 0));
    assert!(anchor_applies(Some(2), 2));
    // Moved: the status counts events of another shard's store.
    assert!(!anchor_applies(None, 1));
    assert!(!anchor_applies(Some(1), 0));
}

#[test]
fn an_app_object_acts_only_as_a_service_account_of_its_own_namespace() {
    let url = serde_json::json!({"url": "https://example.com/repo.git"});
    let spec = serde_json::json!({"source": url, "serviceAccount": "deployer", "policy": "p"});
    let app = to_config(&object("team-b", "web", spec), None).unwrap();
    assert_eq!(
        app.service_account.unwrap().user(),
        "system:serviceaccount:team-b:deployer"
    );
    assert_eq!(app.policy.as_deref(), Some("p"));
    // Unresolved here: the agent resolves it against its own policies when it admits the App.
    assert_eq!(app.boundary.policy, None);
    let spec = serde_json::json!({"source": url, "serviceAccount": "kube-system/admin"});
    let (key, message) = spec_error(spec);
    assert_eq!(key, "spec.serviceAccount");
    assert!(message.contains("its own namespace (ns)"), "{message}");
}

#[test]
fn writes_outside_the_boundary_stall_the_app_with_their_reasons() {
    let summary_of = |outside: Vec<String>| PassSummary::Done {
        outcome: SyncOutcome::Failed,
        health: Health::Healthy,
        fetch_failure: None,
        failed_attempts: 1,
        refused: Vec::new(),
        outside_boundary: outside,
    };
    let facts = pass_conditions(&summary_of(vec![
        "ClusterRole.rbac.authorization.k8s.io/r is not applied: policy p".into(),
    ]));
    assert_eq!(
        summary(&facts),
        vec![
            ("Ready", false, "OutsideBoundary"),
            ("Reconciling", false, "OutsideBoundary"),
            ("Stalled", true, "OutsideBoundary")
        ]
    );
    assert!(facts[0].message.contains("policy p"));
}

#[test]
fn a_chart_source_means_what_it_means_in_the_file() {
    let spec = serde_json::json!({
        "source": {
            "url": "https://charts.example.com/stable",
            "chart": {"name": "web", "version": ">=1.2, <2"},
            "auth": {"basic": {"username": "deploy", "password": {"env": "CHARTS_PW"}}},
            "caFile": "/etc/ca.pem"
        },
        "target": {"namespace": "shop"}
    });
    let from_object = as_file_app(to_config(&object("team", "web", spec), None).unwrap());
    let from_file = file_app(
        "    source:
      url: https://charts.example.com/stable
      chart: {name: web, version: \">=1.2, <2\"}
      auth: {basic: {username: deploy, password: {env: CHARTS_PW}}}
      ca_file: /etc/ca.pem
    target: {namespace: shop}
",
    );
    assert_eq!(from_object, from_file);
    let chart = from_object.source.chart.unwrap();
    assert_eq!(
        (chart.name.as_str(), chart.version.as_str()),
        ("web", ">=1.2, <2")
    );
    let with_path = serde_json::json!({
        "source": {"url": "https://charts.example.com", "path": "x", "chart": {"name": "web"}}
    });
    match to_config(&object("team", "web", with_path), None) {
        Err(CrdError::InvalidSpec { key, message, .. }) => {
            assert_eq!(key, "spec.source.path");
            assert!(message.contains("for Git sources"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
