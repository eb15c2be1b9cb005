//! The watch cache against the real v1.20 control plane: another field manager's edit and a
//! deletion arrive as notifications within seconds, the cache reflects them, and a plan made
//! from the cache corrects them; objects of other Apps are not seen.

use crate::support;

use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use reckon::apply::{self, ApplyOptions, Catalog, Outcome};
use reckon::plan::{Action, Drift, GroupKind, Observation};
use reckon::watch::{AppWatch, Change, ChangeKind, WatchOptions};
use serde_json::json;
use std::time::{Duration, Instant};
use support::TestNamespace;
use support::sync::{TestApp, api_for, catalog, outcomes_by_name};
use tokio::sync::mpsc;

const MANIFESTS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: fast
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 0
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
"#;

/// Receives batches until one mentions `name` with `kind`, or `within` passes; returns how
/// long it took and the change.
async fn wait_for_change(
    rx: &mut mpsc::Receiver<Vec<Change>>,
    name: &str,
    kind: ChangeKind,
    within: Duration,
) -> (Duration, Change) {
    let started = Instant::now();
    loop {
        let left = within.saturating_sub(started.elapsed());
        let batch = tokio::time::timeout(left, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {kind:?} notification for {name} within {within:?}"))
            .expect("watch channel open");
        if let Some(change) = batch
            .into_iter()
            .find(|c| c.object.name == name && c.kind == kind)
        {
            return (started.elapsed(), change);
        }
    }
}

/// Drains batches for `quiet`; returns what arrived.
async fn drain(rx: &mut mpsc::Receiver<Vec<Change>>, quiet: Duration) -> Vec<Change> {
    let mut all = Vec::new();
    while let Ok(Some(batch)) = tokio::time::timeout(quiet, rx.recv()).await {
        all.extend(batch);
    }
    all
}

fn watch_kinds(watch: &mut AppWatch, catalog: &Catalog, kinds: &[(&str, &str)]) {
    watch.watch_kinds(
        kinds
            .iter()
            .map(|(g, k)| catalog.resolve_kind(&GroupKind::new(g, k)).expect("served")),
    );
}

#[tokio::test]
async fn drift_by_another_manager_and_a_deletion_are_seen_and_corrected() {
    let client = support::client().await;
    let catalog = catalog(client.clone()).await;
    let ns = TestNamespace::create(&client, "watch").await;
    // The App's name is unique per test: watches select cluster-wide by the App label.
    let app_name = format!("shop-{}", support::suffix());
    let mut app = TestApp::new(&app_name, &ns.name);
    app.write("app.yaml", MANIFESTS);
    let options = ApplyOptions::default();
    let (_, changes) = app.sync(&catalog, &options).await;
    assert!(changes.failures().next().is_none(), "{changes:#?}");

    let (mut watch, mut rx) = AppWatch::new(
        client.clone(),
        &app_name,
        app.key.clone(),
        WatchOptions::default(),
    );
    watch_kinds(
        &mut watch,
        &catalog,
        &[("", "ConfigMap"), ("apps", "Deployment")],
    );
    watch
        .wait_synced(Duration::from_secs(30))
        .await
        .expect("synced");
    // Status updates by the Deployment controller right after creation may still arrive.
    drain(&mut rx, Duration::from_millis(800)).await;

    // A plan from the cache: nothing to do.
    let scope = |gk: &GroupKind| catalog.scope(gk);
    let desired = app.desired();
    let observed = watch.observe_for(&desired, &app.inventory, &ns.name, &scope);
    assert_eq!(observed.len(), 2, "{observed:#?}");
    let plan = app.plan_with(&catalog, &desired, &observed);
    assert!(
        plan.actions
            .iter()
            .all(|a| matches!(a, Action::Unchanged { .. })),
        "{:#?}",
        plan.actions
    );

    // `kubectl scale` by another field manager: a notification within seconds, in the cache.
    let deploys = api_for(
        &client,
        "apps/v1",
        "Deployment",
        "deployments",
        Some(&ns.name),
    );
    deploys
        .patch(
            "web",
            &PatchParams {
                field_manager: Some("kubectl-scale".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    let (took, _) =
        wait_for_change(&mut rx, "web", ChangeKind::Applied, Duration::from_secs(3)).await;
    eprintln!("scale noticed after {took:?}");
    let observed = watch.observe_for(&desired, &app.inventory, &ns.name, &scope);
    let plan = app.plan_with(&catalog, &desired, &observed);
    let drift = plan
        .actions
        .iter()
        .find_map(|a| match a {
            Action::Drift { object, drift, .. } if object.name == "web" => Some(drift.clone()),
            _ => None,
        })
        .expect("drift on the Deployment");
    match drift {
        Drift::Modified(fields) => {
            assert_eq!(fields[0].change.pointer, "/spec/replicas");
            assert_eq!(fields[0].owners[0].manager, "kubectl-scale");
        }
        other => panic!("{other:?}"),
    }

    // The correction is reckon's own write: it arrives too, and the cache is back in line.
    let changes = apply::execute(&catalog, &plan, &options).await;
    app.fold(&plan, &changes);
    assert!(
        matches!(
            outcomes_by_name(&changes)["Deployment/web"],
            Outcome::Configured { .. }
        ),
        "{changes:#?}"
    );
    wait_for_change(&mut rx, "web", ChangeKind::Applied, Duration::from_secs(3)).await;
    let observed = watch.observe_for(&desired, &app.inventory, &ns.name, &scope);
    let web = observed.values().find_map(|o| match o {
        Observation::Present(live) if live.object.name == "web" => Some(live),
        _ => None,
    });
    assert_eq!(web.unwrap().manifest["spec"]["replicas"], 0);

    // A deletion: notified, Absent in the cache, re-created by the plan.
    let cms = api_for(&client, "v1", "ConfigMap", "configmaps", Some(&ns.name));
    cms.delete("settings", &DeleteParams::default())
        .await
        .unwrap();
    let (took, _) = wait_for_change(
        &mut rx,
        "settings",
        ChangeKind::Deleted,
        Duration::from_secs(3),
    )
    .await;
    eprintln!("delete noticed after {took:?}");
    let observed = watch.observe_for(&desired, &app.inventory, &ns.name, &scope);
    assert!(
        observed
            .iter()
            .any(|(k, o)| k.name == "settings" && *o == Observation::Absent)
    );
    let plan = app.plan_with(&catalog, &desired, &observed);
    let changes = apply::execute(&catalog, &plan, &options).await;
    assert_eq!(
        *outcomes_by_name(&changes)["ConfigMap/settings"],
        Outcome::Created
    );
    assert!(cms.get_opt("settings").await.unwrap().is_some());
    // reckon's own write is notified with the resourceVersion the executor reported, which
    // is how the agent can tell it from someone else's (no controller writes ConfigMaps).
    let ours = changes
        .outcomes
        .iter()
        .find(|o| o.object.name == "settings")
        .and_then(|o| o.resource_version.clone());
    assert!(ours.is_some());
    let (_, change) = wait_for_change(
        &mut rx,
        "settings",
        ChangeKind::Applied,
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(change.resource_version, ours);
}

/// A ConfigMap watch of `app` re-listing every 300 ms (other settings from `options`), once
/// synced and once 1.5 s of resyncs have notified nothing, as they must when nothing changed.
async fn quiet_resyncs(
    client: &kube::Client,
    catalog: &Catalog,
    app: &TestApp,
    options: WatchOptions,
) -> (AppWatch, mpsc::Receiver<Vec<Change>>) {
    let options = WatchOptions {
        resync: Duration::from_millis(300),
        ..options
    };
    let (mut watch, mut rx) = AppWatch::new(client.clone(), &app.name, app.key.clone(), options);
    watch_kinds(&mut watch, catalog, &[("", "ConfigMap")]);
    watch
        .wait_synced(Duration::from_secs(30))
        .await
        .expect("synced");
    let noise = drain(&mut rx, Duration::from_millis(1500)).await;
    assert_eq!(noise, vec![], "resyncs of an unchanged kind notified");
    (watch, rx)
}

#[tokio::test]
async fn objects_of_other_apps_are_not_watched_and_resyncs_are_quiet() {
    let client = support::client().await;
    let catalog = catalog(client.clone()).await;
    let ns = TestNamespace::create(&client, "watchsel").await;
    let app_name = format!("blog-{}", support::suffix());
    let mut app = TestApp::new(&app_name, &ns.name);
    app.write("app.yaml", &MANIFESTS.replace("settings", "blog"));
    let options = ApplyOptions::default();
    app.sync(&catalog, &options).await;

    // A resync every 300 ms: re-lists that find nothing new must not notify.
    let (mut watch, mut rx) = quiet_resyncs(&client, &catalog, &app, WatchOptions::default()).await;

    // Another App's ConfigMap in the same namespace: never notified, never in the cache.
    let cms = api_for(&client, "v1", "ConfigMap", "configmaps", Some(&ns.name));
    let other: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "foreign", "labels": {"reckon.dev/app": "someone-else"}},
        "data": {"a": "b"}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &other).await.unwrap();
    // And an edit of our own object, as a marker that the watch is live.
    cms.patch(
        "blog",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"mode": "slow"}})),
    )
    .await
    .unwrap();
    let seen = drain(&mut rx, Duration::from_millis(1500)).await;
    let names: Vec<&str> = seen.iter().map(|c| c.object.name.as_str()).collect();
    assert_eq!(names, ["blog"], "{seen:#?}");
    let foreign =
        reckon::plan::ObjectRef::from_api_version("v1", "ConfigMap", Some(&ns.name), "foreign");
    assert_eq!(
        watch
            .observe(std::slice::from_ref(&foreign))
            .get(&foreign.key()),
        Some(&Observation::Absent)
    );

    // Stopping a kind's watch leaves its objects unknown rather than absent.
    watch.watch_kinds(std::iter::empty());
    assert!(watch.observe(&[foreign]).is_empty());
}

#[tokio::test]
async fn a_resync_in_pages_keeps_every_object_and_stays_quiet() {
    let client = support::client().await;
    let catalog = catalog(client.clone()).await;
    let ns = TestNamespace::create(&client, "watchpage").await;
    let app_name = format!("pages-{}", support::suffix());
    let mut app = TestApp::new(&app_name, &ns.name);
    let names: Vec<String> = (0..5).map(|i| format!("page-{i}")).collect();
    let manifests: Vec<String> = names
        .iter()
        .map(|n| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {n}\ndata:\n  a: b\n")
        })
        .collect();
    app.write("app.yaml", &manifests.join("---\n"));
    app.sync(&catalog, &ApplyOptions::default()).await;

    // Pages of two: every list (the watch's first, each resync) takes three pages. A resync
    // that kept only part of its pages would report the rest deleted and lose them.
    let options = WatchOptions {
        list_page: 2,
        ..WatchOptions::default()
    };
    let (watch, _rx) = quiet_resyncs(&client, &catalog, &app, options).await;
    let objects: Vec<reckon::plan::ObjectRef> = names
        .iter()
        .map(|n| reckon::plan::ObjectRef::from_api_version("v1", "ConfigMap", Some(&ns.name), n))
        .collect();
    let observed = watch.observe(&objects);
    for object in &objects {
        assert!(
            matches!(observed.get(&object.key()), Some(Observation::Present(_))),
            "{} lost by a paged resync: {observed:#?}",
            object.name
        );
    }
}
