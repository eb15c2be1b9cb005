//! The reconciler against the real control plane and real Git repositories: each pass of an
//! App (fetch, render, plan, apply, prune, health) and what it records in the event log.
//! First sync, a changed field, a removed file (pruned), broken YAML (recorded, nothing
//! pruned), a CRD with a custom resource of it in one commit, two Apps side by side, and a
//! steady state that sends no write request and records nothing.

use crate::support;

use reckon::config;
use reckon::event::{ApplyAction, Event, EventKind, SyncOutcome};
use reckon::reconcile::{PassStatus, Reconciler};
use support::harness::{pass, synced};
use support::sync::{api_for, writes};

const CONFIGMAP: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  color: blue\n";
const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n    - port: 80\n";
const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 0\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n        - name: web\n          image: nginx:1.25\n          ports:\n            - containerPort: 80\n";

/// The shared harness (`tests/support/harness.rs`) with this file's conveniences.
struct Harness(support::harness::Harness);

impl std::ops::Deref for Harness {
    type Target = support::harness::Harness;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Harness {
    async fn new(prefix: &str) -> Self {
        Harness(support::harness::Harness::new(prefix).await)
    }

    fn reconciler(&self, app: config::App) -> Reconciler {
        self.0.reconciler(app, [9; 32])
    }

    fn kinds(&self, app: &str) -> Vec<EventKind> {
        self.events(app).iter().map(Event::kind).collect()
    }

    async fn close(self) {
        self.0.close().await
    }
}

fn applied(events: &[Event]) -> Vec<(String, ApplyAction, Vec<String>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ObjectApplied(a) => Some((
                format!("{}/{}", a.object.kind, a.object.name),
                a.action,
                a.changed_fields.clone(),
            )),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_field_change_prune_and_a_silent_steady_state() {
    let h = Harness::new("recon").await;
    let first = h.commit(
        "Add web",
        &[
            ("app/cm.yaml", Some(CONFIGMAP)),
            ("app/svc.yaml", Some(SERVICE)),
            ("app/deploy.yaml", Some(DEPLOYMENT)),
            ("README.md", Some("not a manifest")),
        ],
    );
    let mut r = h.reconciler(h.app("web", "app", ""));

    // First sync: the commit, the render, three creations, a finished sync.
    let report = pass(&mut r).await;
    assert_eq!(report.revision.as_deref(), Some(first.as_str()));
    let (outcome, counts) = synced(&report);
    assert_eq!(outcome, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(counts.created, 3);
    assert_eq!(report.health, reckon::event::Health::Healthy);
    let kinds = h.kinds("web");
    assert_eq!(kinds[0], EventKind::CommitObserved);
    assert_eq!(kinds[1], EventKind::RenderSucceeded);
    assert_eq!(kinds[2], EventKind::SyncStarted);
    assert_eq!(*kinds.last().unwrap(), EventKind::SyncFinished);
    let mut created = applied(&h.events("web"));
    created.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        created,
        vec![
            ("ConfigMap/settings".into(), ApplyAction::Created, vec![]),
            ("Deployment/web".into(), ApplyAction::Created, vec![]),
            ("Service/web".into(), ApplyAction::Created, vec![]),
        ]
    );
    // The inventory is the log's projection.
    let state = h.store.app_state("web").await.unwrap().unwrap();
    assert_eq!(state.inventory.len(), 3, "{:?}", state.inventory.keys());
    let client = h.catalog.client().clone();
    let cm = api_for(&client, "v1", "ConfigMap", "configmaps", Some(&h.ns.name))
        .get("settings")
        .await
        .unwrap();
    assert_eq!(cm.data["data"]["color"], "blue");
    assert_eq!(cm.metadata.labels.unwrap()["reckon.dev/app"], "web");

    // Steady state: nothing new, no write request, no event.
    h.requests.take();
    let before = h.kinds("web").len();
    let report = pass(&mut r).await;
    assert_eq!(report.status, PassStatus::InSync);
    assert_eq!(report.appended, 0);
    assert_eq!(h.kinds("web").len(), before);
    let sent = h.requests.take();
    assert!(
        writes(&sent).is_empty(),
        "writes in steady state: {:?}",
        writes(&sent)
    );

    // A commit changing one field: configured, with the field named.
    let second = h.commit(
        "Make it red",
        &[("app/cm.yaml", Some(&CONFIGMAP.replace("blue", "red")))],
    );
    let report = pass(&mut r).await;
    assert_eq!(report.revision.as_deref(), Some(second.as_str()));
    let since = &h.events("web")[before..];
    assert_eq!(
        applied(since),
        vec![(
            "ConfigMap/settings".into(),
            ApplyAction::Configured,
            vec!["/data/color".into()]
        )]
    );
    let cm = api_for(&client, "v1", "ConfigMap", "configmaps", Some(&h.ns.name))
        .get("settings")
        .await
        .unwrap();
    assert_eq!(cm.data["data"]["color"], "red");

    // A commit removing a file: that object is pruned, the rest untouched.
    let before = h.kinds("web").len();
    h.commit("Drop the service", &[("app/svc.yaml", None)]);
    let report = pass(&mut r).await;
    let (_, counts) = synced(&report);
    assert_eq!((counts.pruned, counts.unchanged), (1, 2), "{counts:?}");
    let pruned: Vec<String> = h.events("web")[before..]
        .iter()
        .filter_map(|e| match e {
            Event::ObjectPruned(p) => Some(p.object.identity()),
            _ => None,
        })
        .collect();
    assert_eq!(pruned, vec![format!("/Service/{}/web", h.ns.name)]);
    let svc = api_for(&client, "v1", "Service", "services", Some(&h.ns.name));
    assert!(
        svc.get_opt("web").await.unwrap().is_none(),
        "the Service is gone"
    );
    let state = h.store.app_state("web").await.unwrap().unwrap();
    assert_eq!(state.inventory.len(), 2);
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_yaml_is_recorded_with_file_and_line_and_nothing_is_pruned() {
    let h = Harness::new("broken").await;
    h.commit(
        "Add",
        &[
            ("app/cm.yaml", Some(CONFIGMAP)),
            ("app/svc.yaml", Some(SERVICE)),
        ],
    );
    let mut r = h.reconciler(h.app("broken", "app", ""));
    assert!(matches!(
        pass(&mut r).await.status,
        PassStatus::Synced { .. }
    ));

    let bad = h.commit(
        "Oops",
        &[(
            "app/svc.yaml",
            Some("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n spec: [\n"),
        )],
    );
    let before = h.kinds("broken").len();
    let report = pass(&mut r).await;
    let PassStatus::RenderFailed { error } = &report.status else {
        panic!("{:?}", report.status)
    };
    assert!(
        error.contains("svc.yaml:"),
        "names the file and line: {error}"
    );
    let since = h.events("broken")[before..].to_vec();
    let failed: Vec<&reckon::event::RenderFailed> = since
        .iter()
        .filter_map(|e| match e {
            Event::RenderFailed(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{since:?}");
    assert_eq!(failed[0].revision, bad);
    assert!(
        failed[0].error.contains("svc.yaml:5"),
        "{}",
        failed[0].error
    );
    let skipped = since
        .iter()
        .filter(|e| matches!(e, Event::PruneSkipped(_)))
        .count();
    assert_eq!(skipped, 2, "every inventory object kept, with the reason");
    assert!(
        !since
            .iter()
            .any(|e| matches!(e, Event::ObjectPruned(_) | Event::SyncStarted(_)))
    );
    let client = h.catalog.client().clone();
    for (kind, plural, name) in [
        ("ConfigMap", "configmaps", "settings"),
        ("Service", "services", "web"),
    ] {
        let api = api_for(&client, "v1", kind, plural, Some(&h.ns.name));
        assert!(api.get_opt(name).await.unwrap().is_some(), "{kind} kept");
    }
    // The same failure is not recorded again at the next pass.
    let n = h.kinds("broken").len();
    assert!(matches!(
        pass(&mut r).await.status,
        PassStatus::RenderFailed { .. }
    ));
    assert_eq!(h.kinds("broken").len(), n);

    // Fixing it syncs again.
    h.commit("Fix", &[("app/svc.yaml", Some(SERVICE))]);
    assert!(matches!(
        pass(&mut r).await.status,
        PassStatus::Synced { .. }
    ));
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_and_its_custom_resource_in_one_commit() {
    let h = Harness::new("crd").await;
    let group = format!("{}.reckon.test", support::suffix());
    let crd = format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names:\n    plural: widgets\n    singular: widget\n    kind: Widget\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      schema:\n        openAPIV3Schema:\n          type: object\n          properties:\n            spec:\n              type: object\n              x-kubernetes-preserve-unknown-fields: true\n"
    );
    let cr = format!(
        "apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: gizmo\nspec:\n  size: 3\n"
    );
    h.commit(
        "Widgets",
        &[("app/crd.yaml", Some(&crd)), ("app/widget.yaml", Some(&cr))],
    );
    let mut r = h.reconciler(h.app("widgets", "app", ""));
    let report = pass(&mut r).await;
    let (outcome, counts) = synced(&report);
    assert_eq!(
        (outcome, counts.created, counts.failed),
        (SyncOutcome::Succeeded, 2, 0),
        "{report:?}"
    );
    let client = h.catalog.client().clone();
    let widgets = api_for(
        &client,
        &format!("{group}/v1"),
        "Widget",
        "widgets",
        Some(&h.ns.name),
    );
    let w = widgets.get("gizmo").await.unwrap();
    assert_eq!(w.data["spec"]["size"], 3);
    // Steady state again.
    assert_eq!(pass(&mut r).await.status, PassStatus::InSync);
    // Clean up the cluster-scoped CRD (the namespace guard removes the rest).
    let crds = api_for(
        &client,
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        None,
    );
    let _ = crds
        .delete(&format!("widgets.{group}"), &Default::default())
        .await;
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apps_never_prune_each_others_objects() {
    let h = Harness::new("two").await;
    let other_cm = CONFIGMAP.replace("settings", "other");
    h.commit(
        "Two apps",
        &[
            ("one/cm.yaml", Some(CONFIGMAP)),
            ("one/svc.yaml", Some(SERVICE)),
            ("two/cm.yaml", Some(&other_cm)),
        ],
    );
    let mut one = h.reconciler(h.app("one", "one", ""));
    let mut two = h.reconciler(h.app("two", "two", ""));
    assert!(matches!(
        pass(&mut one).await.status,
        PassStatus::Synced { .. }
    ));
    assert!(matches!(
        pass(&mut two).await.status,
        PassStatus::Synced { .. }
    ));

    // App two loses every file but one; App one's objects are not its to prune.
    h.commit(
        "Two empties",
        &[(
            "two/cm.yaml",
            Some(SERVICE.replace("web", "two-svc").as_str()),
        )],
    );
    let report = pass(&mut two).await;
    let (_, counts) = synced(&report);
    assert_eq!((counts.created, counts.pruned), (1, 1), "{counts:?}");
    let pruned: Vec<String> = h
        .events("two")
        .iter()
        .filter_map(|e| match e {
            Event::ObjectPruned(p) => Some(p.object.name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(pruned, vec!["other"]);
    assert!(
        h.events("one")
            .iter()
            .all(|e| !matches!(e, Event::ObjectPruned(_)))
    );
    let client = h.catalog.client().clone();
    let cms = api_for(&client, "v1", "ConfigMap", "configmaps", Some(&h.ns.name));
    assert!(
        cms.get_opt("settings").await.unwrap().is_some(),
        "App one's ConfigMap stays"
    );
    // App one moves to the new revision (recorded as applied) without touching anything.
    let report = pass(&mut one).await;
    let (_, counts) = synced(&report);
    assert_eq!(
        (counts.unchanged, counts.configured, counts.pruned),
        (2, 0, 0),
        "{counts:?}"
    );
    assert_eq!(pass(&mut one).await.status, PassStatus::InSync);
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_desired_set_prunes_nothing_unless_allowed() {
    let h = Harness::new("empty").await;
    h.commit("Add", &[("app/cm.yaml", Some(CONFIGMAP))]);
    let mut r = h.reconciler(h.app("empty", "app", ""));
    assert!(matches!(
        pass(&mut r).await.status,
        PassStatus::Synced { .. }
    ));
    h.commit(
        "Remove all",
        &[("app/cm.yaml", None), ("app/keep.txt", Some("x"))],
    );
    let report = pass(&mut r).await;
    let (_, counts) = synced(&report);
    assert_eq!((counts.pruned, counts.prune_skipped), (0, 1), "{counts:?}");
    let reasons: Vec<String> = h
        .events("empty")
        .iter()
        .filter_map(|e| match e {
            Event::PruneSkipped(p) => Some(p.reason.clone()),
            _ => None,
        })
        .collect();
    assert!(reasons[0].contains("empty"), "{reasons:?}");
    let client = h.catalog.client().clone();
    let cms = api_for(&client, "v1", "ConfigMap", "configmaps", Some(&h.ns.name));
    assert!(cms.get_opt("settings").await.unwrap().is_some());

    // With allow_empty the same state prunes.
    let mut r = h.reconciler(h.app("empty", "app", "    prune:\n      allow_empty: true\n"));
    let report = pass(&mut r).await;
    let (_, counts) = synced(&report);
    assert_eq!(counts.pruned, 1, "{counts:?}");
    assert!(cms.get_opt("settings").await.unwrap().is_none());
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_reach_neither_the_log_nor_the_blobs_and_their_drift_names_the_key() {
    let h = Harness::new("secret").await;
    const VALUE: &str = "hunter2-very-secret";
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: {VALUE}\n"
    );
    h.commit("Add creds", &[("app/secret.yaml", Some(&secret))]);
    let mut r = h.reconciler(h.app("sec", "app", ""));
    assert!(matches!(
        pass(&mut r).await.status,
        PassStatus::Synced { .. }
    ));

    // Someone changes the password by hand.
    let client = h.catalog.client().clone();
    let secrets = api_for(&client, "v1", "Secret", "secrets", Some(&h.ns.name));
    let patch = serde_json::json!({"stringData": {"password": "changed-by-hand"}});
    secrets
        .patch(
            "creds",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let before = h.kinds("sec").len();
    assert!(matches!(
        pass(&mut r).await.status,
        PassStatus::Synced { .. }
    ));
    let drift: Vec<reckon::event::DriftDetected> = h.events("sec")[before..]
        .iter()
        .filter_map(|e| match e {
            Event::DriftDetected(d) => Some(d.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(drift[0].diffs.len(), 1, "{:?}", drift[0].diffs);
    assert_eq!(drift[0].diffs[0].path, "/data/password");
    assert_eq!(
        drift[0].diffs[0].actual.as_deref(),
        Some(reckon::reconcile::events::REDACTED)
    );
    let live = secrets.get("creds").await.unwrap();
    assert_eq!(
        live.data["data"]["password"],
        base64_of(VALUE),
        "the drift was corrected"
    );

    // Neither the plain value nor its base64 form is anywhere in the store: events or blobs.
    let reader = h.store.reader();
    let mut text = String::new();
    for e in reader.iter_from(1) {
        let e = e.unwrap();
        text.push_str(&format!("{:?}", e.body));
        let blobs = match &e.body.event {
            Event::RenderSucceeded(r) => vec![r.digest],
            Event::ObjectApplied(a) => vec![a.digest],
            _ => vec![],
        };
        for digest in blobs {
            let bytes = reckon::store::EventRead::blob(reader, &digest)
                .unwrap()
                .unwrap();
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    assert!(
        text.contains("hmac-sha256:"),
        "the keyed hash is what is kept"
    );
    for needle in [VALUE, "changed-by-hand", &base64_of(VALUE)] {
        assert!(!text.contains(needle), "{needle} leaked into the store");
    }
    h.close().await;
}

/// Sealing takes a random nonce, so each render of a Secret seals to other bytes. A fresh
/// reconciler (a restarted agent) renders the revision again and records no second set for it
/// and applies nothing; a changed value is recorded as a new set. Two Secrets holding the same
/// value record unrelated sealed values and hashes (migration 0010).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_records_no_new_set_for_an_unchanged_secret_and_equal_values_look_unrelated() {
    let h = Harness::new("reseal").await;
    let secrets = |password: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: a\nstringData:\n  password: {password}\n\
             ---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: b\nstringData:\n  password: same-value-both\n"
        )
    };
    h.commit(
        "Add",
        &[("app/secret.yaml", Some(&secrets("same-value-both")))],
    );
    let app = h.app("rs", "app", "");
    let renders = |h: &Harness| -> Vec<reckon::event::RenderSucceeded> {
        h.events("rs")
            .into_iter()
            .filter_map(|e| match e {
                Event::RenderSucceeded(r) => Some(r),
                _ => None,
            })
            .collect()
    };
    let mut r = h.reconciler(app.clone());
    let (_, counts) = synced(&pass(&mut r).await);
    assert_eq!(counts.created, 2, "{counts:?}");
    assert_eq!(renders(&h).len(), 1);

    // Restarted: nothing in memory, the revision rendered and sealed again.
    let before = h.events("rs").len();
    let mut restarted = h.reconciler(app.clone());
    let report = pass(&mut restarted).await;
    assert!(matches!(report.status, PassStatus::InSync), "{report:?}");
    let since = &h.events("rs")[before..];
    assert!(
        !since
            .iter()
            .any(|e| matches!(e, Event::RenderSucceeded(_) | Event::ObjectApplied(_))),
        "recorded again: {since:?}"
    );

    // The recorded set: the two equal passwords sealed to unrelated values, and the two applied
    // Secrets' stored hashes differ.
    let reader = h.store.reader();
    let blob = |d: reckon::event::Digest| {
        let bytes = reckon::store::EventRead::blob(reader, &d).unwrap().unwrap();
        String::from_utf8(bytes).unwrap()
    };
    let lines: Vec<serde_json::Value> = blob(renders(&h)[0].digest)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sealed = |name: &str| {
        lines
            .iter()
            .find(|v| v["metadata"]["name"] == name)
            .unwrap()["data"]["password"]
            .clone()
    };
    assert!(sealed("a").as_str().unwrap().starts_with("sealed-v2:"));
    assert_ne!(sealed("a"), sealed("b"));
    let hashes: Vec<serde_json::Value> = h
        .events("rs")
        .iter()
        .filter_map(|e| match e {
            Event::ObjectApplied(a) => {
                let stored: serde_json::Value = serde_json::from_str(&blob(a.digest)).unwrap();
                Some(stored["data"]["password"].clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(hashes.len(), 2);
    assert_ne!(hashes[0], hashes[1], "equal values, unrelated hashes");

    // A changed value is a new render: recorded, and applied.
    h.commit(
        "Change a",
        &[("app/secret.yaml", Some(&secrets("another-value")))],
    );
    let (_, counts) = synced(&pass(&mut restarted).await);
    assert_eq!(counts.configured, 1, "{counts:?}");
    assert_eq!(renders(&h).len(), 2);
    h.close().await;
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kind_fails_alone_and_is_named() {
    let h = Harness::new("unknown").await;
    h.commit(
        "Add",
        &[
            ("app/cm.yaml", Some(CONFIGMAP)),
            (
                "app/gadget.yaml",
                Some("apiVersion: nowhere.example.com/v1\nkind: Gadget\nmetadata:\n  name: g\n"),
            ),
        ],
    );
    let mut r = h.reconciler(h.app("unk", "app", ""));
    let report = pass(&mut r).await;
    let (outcome, counts) = synced(&report);
    assert_eq!(
        (outcome, counts.created, counts.failed),
        (SyncOutcome::PartiallyFailed, 1, 1)
    );
    let errors: Vec<String> = h
        .events("unk")
        .iter()
        .filter_map(|e| match e {
            Event::ApplyFailed(f) => Some(f.error.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("Gadget") && errors[0].contains("not served"),
        "{errors:?}"
    );
    h.close().await;
}

/// Issue 15, observations 1, 2 and 4 (applied is not healthy): a Deployment with a replica that
/// is not ready when the health timeout ends. Its sync applied every object, so the revision is
/// applied (revisions, status, rollback), health is recorded apart, a pass that finds nothing
/// to write records nothing, and the App turning healthy later is recorded without a sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_is_not_healthy_and_a_late_readiness_is_recorded_without_a_sync() {
    let h = Harness::new("health").await;
    // The replica is ready only when the test says so: on v1.20 no Pod is ever scheduled (the
    // test plays the kubelet below); with simulated nodes the annotation (a KWOK stage matches
    // it) keeps the Pod from becoming Ready on its own.
    let first = h.commit(
        "One replica",
        &[(
            "app/deploy.yaml",
            Some(
                &DEPLOYMENT.replace("replicas: 0", "replicas: 1").replace(
                    "    metadata:\n      labels:",
                    "    metadata:\n      annotations:\n        reckon.test/never-ready: \"true\"\n      labels:",
                ),
            ),
        )],
    );
    let mut r = h.reconciler(h.app("hl", "app", "    health_timeout: 3s\n"));
    let started = std::time::Instant::now();
    let report = pass(&mut r).await;
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(3),
        "waited for the health timeout"
    );
    // Every object was accepted: the sync applied its revision, whatever the health reached.
    let (outcome, counts) = synced(&report);
    assert_eq!((outcome, counts.created), (SyncOutcome::Succeeded, 1));
    assert_eq!(report.health, reckon::event::Health::Progressing);
    let changes = |h: &Harness| -> Vec<reckon::event::HealthChanged> {
        h.events("hl")
            .iter()
            .filter_map(|e| match e {
                Event::HealthChanged(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    };
    let recorded = changes(&h);
    assert!(
        recorded
            .iter()
            .any(|c| c.object.as_ref().is_some_and(|o| o.name == "web")
                && c.to == reckon::event::Health::Progressing
                && c.message.is_some()),
        "{recorded:?}"
    );
    // The App's own health names the object still unready and why.
    assert!(
        recorded.iter().any(|c| c.object.is_none()
            && c.to == reckon::event::Health::Progressing
            && c.message.as_deref().is_some_and(|m| m.contains("web"))),
        "the App's health: {recorded:?}"
    );
    let state = h.store.app_state("hl").await.unwrap().unwrap();
    assert!(
        state.revisions[&first].applied_at.is_some(),
        "the revision is applied: {:?}",
        state.revisions[&first]
    );

    // Observation 4: unready, unchanged: a pass writes nothing and records nothing.
    let before = h.events("hl").len();
    let report = pass(&mut r).await;
    assert_eq!(report.status, PassStatus::InSync, "{report:?}");
    assert_eq!(
        h.events("hl").len(),
        before,
        "{:?}",
        &h.events("hl")[before..]
    );

    // Observation 2: rollback accepts an applied revision that was never healthy, saying so;
    // --require-healthy refuses it.
    let second = h.commit("Zero", &[("app/deploy.yaml", Some(DEPLOYMENT))]);
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(report.health, reckon::event::Health::Healthy);
    let strict = reckon::reconcile::rollback::RollbackOptions {
        require_healthy: true,
    };
    let target = || reckon::reconcile::rollback::RollbackTarget::Revision(first.clone());
    let refused = reckon::reconcile::rollback::request_rollback_with(
        &h.store,
        "hl",
        target(),
        "alice".into(),
        None,
        strict,
    )
    .await
    .unwrap_err();
    assert!(
        refused.to_string().contains("never reported healthy"),
        "{refused}"
    );
    let plan = reckon::reconcile::rollback::request_rollback_with(
        &h.store,
        "hl",
        target(),
        "alice".into(),
        Some("back to one replica".into()),
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(plan.revision, first);
    assert!(!plan.ever_healthy);
    assert!(plan.warning.is_some(), "{plan:?}");
    assert_eq!(plan.previous.as_deref(), Some(second.as_str()));
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(report.health, reckon::event::Health::Progressing);

    // The replica becomes ready after the health timeout: the next pass (a poll; nothing to
    // apply) records the App healthy, and no sync.
    let client = support::client().await;
    support::readiness::make_deployment_ready(&client, &h.ns.name, "web").await;
    let before = h.envelopes("hl", 1).len();
    let report = pass(&mut r).await;
    assert_eq!(report.status, PassStatus::InSync, "{report:?}");
    assert_eq!(report.health, reckon::event::Health::Healthy);
    let new: Vec<Event> = h.events("hl")[before..].to_vec();
    assert!(
        new.iter().all(|e| matches!(e, Event::HealthChanged(_))),
        "only health was recorded: {new:?}"
    );
    assert!(
        new.iter().any(|e| matches!(e, Event::HealthChanged(c)
            if c.object.is_none() && c.to == reckon::event::Health::Healthy)),
        "{new:?}"
    );
    // Now the rolled-back revision has been healthy: the strict form accepts it.
    let bodies: Vec<reckon::event::EnvelopeBody> =
        h.envelopes("hl", 1).into_iter().map(|e| e.body).collect();
    let healthy = reckon::reconcile::rollback::healthy_revisions(bodies.iter());
    assert!(healthy.contains(&first), "{healthy:?}");
    assert!(healthy.contains(&second), "{healthy:?}");
    h.close().await;
}

/// Issue 15, observation 8: a target namespace that does not exist fails every object for one
/// reason. It is recorded once, as one event naming the objects; the same failure again records
/// nothing (the retries show in the report and metrics); `target.create_namespace` applies the
/// Namespace like any object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_namespace_is_one_event_recorded_once_until_it_is_created() {
    let h = Harness::new("nons").await;
    let mut files = Vec::new();
    for i in 0..5 {
        files.push((
            format!("app/cm-{i}.yaml"),
            CONFIGMAP.replace("name: settings", &format!("name: settings-{i}")),
        ));
    }
    let refs: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), Some(c.as_str())))
        .collect();
    h.commit("Five settings", &refs);
    let missing = format!("{}-missing", h.ns.name);
    let app = |create_namespace: bool| {
        let mut app = h.app("nons", "app", "");
        app.target.namespace = missing.clone();
        app.target.create_namespace = create_namespace;
        app
    };
    let mut r = h.reconciler(app(false));
    let report = pass(&mut r).await;
    assert_eq!(
        synced(&report),
        (
            SyncOutcome::Failed,
            reckon::event::SyncCounts {
                failed: 5,
                ..Default::default()
            }
        )
    );
    assert_eq!(report.failed_attempts, 1);
    let events = h.events("nons");
    let blocked: Vec<&reckon::event::ApplyBlocked> = events
        .iter()
        .filter_map(|e| match e {
            Event::ApplyBlocked(b) => Some(b),
            _ => None,
        })
        .collect();
    assert_eq!(blocked.len(), 1, "{events:?}");
    assert_eq!(blocked[0].cause, "NamespaceMissing");
    assert_eq!(blocked[0].objects.len(), 5);
    assert!(
        !events.iter().any(|e| matches!(e, Event::ApplyFailed(_))),
        "one event for the shared cause, not one per object: {events:?}"
    );

    // The same failure again: nothing recorded, the attempt counted.
    let before = events.len();
    for attempt in 2..=3 {
        let report = pass(&mut r).await;
        assert!(report.unrecorded_retry, "{report:?}");
        assert_eq!(report.failed_attempts, attempt);
        assert_eq!(
            h.events("nons").len(),
            before,
            "{:?}",
            &h.events("nons")[before..]
        );
    }

    // Asked to create it, the Namespace is applied (and recorded) before its objects.
    let mut r = h.reconciler(app(true));
    let report = pass(&mut r).await;
    let (outcome, counts) = synced(&report);
    assert_eq!(
        (outcome, counts.created, counts.failed),
        (SyncOutcome::Succeeded, 6, 0),
        "{report:?}"
    );
    assert_eq!(report.failed_attempts, 0);
    let created: Vec<String> = applied(&h.events("nons")[before..])
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    assert_eq!(created[0], format!("Namespace/{missing}"), "{created:?}");
    let client = support::client().await;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    namespaces
        .delete(&missing, &Default::default())
        .await
        .unwrap();
    h.close().await;
}

/// Issue 15, observation 3 and blame's rule: drift found by hand is recorded once (detect
/// mode); when a commit later re-applies the object, a drifted field the commit leaves alone is
/// put back (`DriftCorrected`, also for a drift recorded by an earlier pass), and a drifted
/// field the commit sets anew is the commit's (`DriftSuperseded`), never "put back".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_over_a_drift_puts_back_what_it_leaves_and_supersedes_what_it_sets() {
    let h = Harness::new("supersede").await;
    let two = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  color: blue\n  size: small\n";
    h.commit("Settings", &[("app/cm.yaml", Some(two))]);
    let mut r = h.reconciler(h.app("sup", "app", "    drift: detect\n"));
    assert!(matches!(
        pass(&mut r).await.status,
        PassStatus::Synced { .. }
    ));

    // By hand: both fields change.
    let client = h.catalog.client().clone();
    let cms = api_for(&client, "v1", "ConfigMap", "configmaps", Some(&h.ns.name));
    let patch = serde_json::json!({"data": {"color": "red", "size": "huge"}});
    cms.patch(
        "settings",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    let before = h.events("sup").len();
    let report = pass(&mut r).await;
    assert_eq!(
        report.status,
        PassStatus::InSync,
        "detect mode records, corrects nothing"
    );
    let detected = h.events("sup")[before..]
        .iter()
        .filter(|e| matches!(e, Event::DriftDetected(_)))
        .count();
    assert_eq!(detected, 1);
    // Seen again: not recorded again.
    let before = h.events("sup").len();
    pass(&mut r).await;
    assert_eq!(h.events("sup").len(), before);

    // A commit sets a new colour and leaves the size: the colour is the commit's, the size is
    // put back to what was applied.
    let green = h.commit(
        "Green",
        &[(
            "app/cm.yaml",
            Some(&two.replace("color: blue", "color: green")),
        )],
    );
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    let new = h.events("sup")[before..].to_vec();
    let superseded: Vec<&reckon::event::DriftSuperseded> = new
        .iter()
        .filter_map(|e| match e {
            Event::DriftSuperseded(s) => Some(s),
            _ => None,
        })
        .collect();
    let corrected: Vec<&reckon::event::DriftCorrected> = new
        .iter()
        .filter_map(|e| match e {
            Event::DriftCorrected(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(superseded.len(), 1, "{new:?}");
    assert_eq!(superseded[0].fields, vec!["/data/color".to_string()]);
    assert_eq!(superseded[0].revision, green);
    assert_eq!(corrected.len(), 1, "{new:?}");
    assert_eq!(corrected[0].fields, vec!["/data/size".to_string()]);
    let live = cms.get("settings").await.unwrap();
    assert_eq!(live.data["data"]["color"], "green");
    assert_eq!(live.data["data"]["size"], "small");
    h.close().await;
}
