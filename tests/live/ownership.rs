//! Ownership against the real control plane: reckon never takes over or deletes what is not its
//! own. Each test first sets up the accident or attack of issue 17 (an existing object named in
//! Git, then removed; an object another tool or App owns; two Apps naming one object) and shows
//! what reckon does instead: adopts explicitly and records it, refuses with the reason, orphans
//! rather than deletes, and keeps a Namespace that holds someone else's objects.

use crate::support;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};
use reckon::config;
use reckon::event::{Event, SyncOutcome};
use reckon::reconcile::{Live, PassStatus, Reconciler};
use reckon::render::SecretKey;
use reckon::source::{GitSource, config::spec_for};
use reckon::watch::{AppWatch, Change, WatchOptions};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use support::TestNamespace;
use support::harness::{Harness, pass};
use support::sync::writes;
use support::workload::config_map;

const KEY: [u8; 32] = [9; 32];

fn namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

/// A reconciler reading live state from the agent's watch cache (what `reckon run` uses): the
/// watch selects objects by the App label, so it alone never sees an unlabelled object.
/// Keep the returned receiver as long as the reconciler: a watch whose receiver is gone stops.
fn watching(
    h: &Harness,
    app: config::App,
) -> (Reconciler, tokio::sync::mpsc::Receiver<Vec<Change>>) {
    let key = SecretKey::new(KEY);
    let (watch, changes) = AppWatch::new(
        h.catalog.client().clone(),
        &app.name,
        key.clone(),
        WatchOptions::default(),
    );
    let source = GitSource::new(spec_for(&app).unwrap(), h.cache.path());
    let r = Reconciler::new(
        app,
        source,
        h.store.clone(),
        key,
        h.catalog.clone(),
        Live::Watch(Arc::new(RwLock::new(watch))),
    );
    (r, changes)
}

/// `Kind/name action` of every ObjectApplied in `events`, sorted.
fn applied(events: &[Event]) -> Vec<String> {
    let mut out: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::ObjectApplied(a) => Some(format!(
                "{}/{} {:?}",
                a.object.kind, a.object.name, a.action
            )),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn failures(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ApplyFailed(f) => Some(f.error.clone()),
            _ => None,
        })
        .collect()
}

/// Creates a ConfigMap as someone else would (not through reckon).
async fn make_config_map(
    client: &kube::Client,
    ns: &str,
    name: &str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.metadata.labels = Some(labels);
    cm.metadata.annotations = Some(annotations);
    cm.data = Some([("color".to_string(), "green".to_string())].into());
    api.create(&PostParams::default(), &cm)
        .await
        .unwrap_or_else(|e| panic!("creating ConfigMap {ns}/{name}: {e}"));
}

async fn get_config_map(client: &kube::Client, ns: &str, name: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

fn labels<T: kube::Resource>(o: &T) -> BTreeMap<String, String> {
    o.meta().labels.clone().unwrap_or_default()
}

/// Issue 17, "Adopt, then prune": a commit names an existing Namespace (holding someone else's
/// ConfigMap) and an existing ConfigMap, then a second commit removes them. Before: the watch
/// saw neither (unlabelled), so both were "created", and the removal deleted the Namespace with
/// everything in it. Now: both are adopted and recorded so, and the removal releases them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_namespace_named_then_removed_is_adopted_then_orphaned_never_deleted() {
    let h = Harness::new("adopt").await;
    let client = h.catalog.client().clone();
    let victim = TestNamespace::create(&client, "victim").await;
    make_config_map(&client, &victim.name, "theirs", [].into(), [].into()).await;
    make_config_map(&client, &h.ns.name, "existing", [].into(), [].into()).await;

    h.commit(
        "Name what exists",
        &[
            ("app/ns.yaml", Some(&namespace(&victim.name))),
            ("app/existing.yaml", Some(&config_map("existing", "blue"))),
            ("app/keep.yaml", Some(&config_map("keep", "blue"))),
        ],
    );
    let (mut r, _keep) = watching(&h, h.app("own", "app", ""));
    let report = pass(&mut r).await;
    assert!(
        matches!(
            report.status,
            PassStatus::Synced {
                outcome: SyncOutcome::Succeeded,
                ..
            }
        ),
        "{report:?}"
    );
    assert_eq!(
        applied(&h.events("own")),
        [
            "ConfigMap/existing Adopted".to_string(),
            "ConfigMap/keep Created".to_string(),
            format!("Namespace/{} Adopted", victim.name),
        ],
        "an existing object is adopted, never created"
    );
    let existing = get_config_map(&client, &h.ns.name, "existing")
        .await
        .unwrap();
    assert_eq!(labels(&existing)["reckon.dev/app"], "own");
    assert_eq!(existing.data.unwrap()["color"], "blue");

    // Git drops them: released (label off, out of the inventory), not deleted.
    let before = h.events("own").len();
    h.commit(
        "Drop them",
        &[("app/ns.yaml", None), ("app/existing.yaml", None)],
    );
    let report = pass(&mut r).await;
    assert!(
        matches!(report.status, PassStatus::Synced { .. }),
        "{report:?}"
    );
    let since = &h.events("own")[before..];
    let mut orphaned: Vec<String> = since
        .iter()
        .filter_map(|e| match e {
            Event::ObjectOrphaned(o) => Some(format!("{}/{}", o.object.kind, o.object.name)),
            _ => None,
        })
        .collect();
    orphaned.sort();
    assert_eq!(
        orphaned,
        [
            "ConfigMap/existing".to_string(),
            format!("Namespace/{}", victim.name)
        ]
    );
    assert!(
        !since.iter().any(|e| matches!(e, Event::ObjectPruned(_))),
        "nothing pruned: {since:?}"
    );
    let ns = Api::<Namespace>::all(client.clone())
        .get(&victim.name)
        .await
        .unwrap();
    assert!(
        ns.metadata.deletion_timestamp.is_none(),
        "the Namespace stays"
    );
    assert!(
        !labels(&ns).contains_key("reckon.dev/app"),
        "{:?}",
        labels(&ns)
    );
    assert!(
        get_config_map(&client, &victim.name, "theirs")
            .await
            .is_some()
    );
    let existing = get_config_map(&client, &h.ns.name, "existing")
        .await
        .unwrap();
    assert!(!labels(&existing).contains_key("reckon.dev/app"));
    let state = h.store.app_state("own").await.unwrap().unwrap();
    assert_eq!(state.inventory.len(), 1, "{:?}", state.inventory.keys());

    // Released for good: the next pass neither writes nor records anything.
    h.requests.take();
    let report = pass(&mut r).await;
    assert_eq!(report.status, PassStatus::InSync);
    assert_eq!(report.appended, 0);
    assert!(writes(&h.requests.take()).is_empty());
    drop(r);
    h.close().await;
}

/// With `prune.adopted: true` an adopted object is deleted when it leaves Git, but a Namespace
/// still holding objects outside the App's inventory never is (deleting it deletes them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_holding_someone_elses_objects_is_never_pruned() {
    let h = Harness::new("nsguard").await;
    let client = h.catalog.client().clone();
    let victim = TestNamespace::create(&client, "victim").await;
    make_config_map(&client, &victim.name, "theirs", [].into(), [].into()).await;
    make_config_map(&client, &h.ns.name, "existing", [].into(), [].into()).await;
    h.commit(
        "Name what exists",
        &[
            ("app/ns.yaml", Some(&namespace(&victim.name))),
            ("app/existing.yaml", Some(&config_map("existing", "blue"))),
            ("app/keep.yaml", Some(&config_map("keep", "blue"))),
        ],
    );
    let app = h.app("own", "app", "    prune:\n      adopted: true\n");
    let mut r = h.reconciler(app, KEY);
    pass(&mut r).await;
    let before = h.events("own").len();
    h.commit(
        "Drop them",
        &[("app/ns.yaml", None), ("app/existing.yaml", None)],
    );
    pass(&mut r).await;
    let since = &h.events("own")[before..];
    let pruned: Vec<String> = since
        .iter()
        .filter_map(|e| match e {
            Event::ObjectPruned(p) => Some(format!("{}/{}", p.object.kind, p.object.name)),
            _ => None,
        })
        .collect();
    assert_eq!(pruned, ["ConfigMap/existing"]);
    let skipped: Vec<&str> = since
        .iter()
        .filter_map(|e| match e {
            Event::PruneSkipped(p) if p.object.kind == "Namespace" => Some(p.reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(skipped.len(), 1, "{since:?}");
    assert!(
        skipped[0].contains(&format!("ConfigMap/{}/theirs", victim.name)),
        "{}",
        skipped[0]
    );
    assert!(
        get_config_map(&client, &h.ns.name, "existing")
            .await
            .is_none()
    );
    let ns = Api::<Namespace>::all(client.clone())
        .get(&victim.name)
        .await
        .unwrap();
    assert!(
        ns.metadata.deletion_timestamp.is_none(),
        "the Namespace stays"
    );
    assert!(
        get_config_map(&client, &victim.name, "theirs")
            .await
            .is_some()
    );
    drop(r);
    h.close().await;
}

/// Objects carrying another tool's ownership marks are refused with the owner named, recorded
/// once, and left untouched; `adopt: always` takes them, `adopt: never` refuses even an
/// unmarked one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_other_tools_own_are_refused_unless_the_app_adopts_always() {
    let h = Harness::new("marks").await;
    let client = h.catalog.client().clone();
    let ns = h.ns.name.clone();
    make_config_map(
        &client,
        &ns,
        "flux-owned",
        [(
            "kustomize.toolkit.fluxcd.io/name".to_string(),
            "infra".to_string(),
        )]
        .into(),
        [].into(),
    )
    .await;
    make_config_map(
        &client,
        &ns,
        "helm-owned",
        [].into(),
        [("meta.helm.sh/release-name".to_string(), "redis".to_string())].into(),
    )
    .await;
    make_config_map(&client, &ns, "unmarked", [].into(), [].into()).await;
    h.commit(
        "Name other tools' objects",
        &[
            ("marked/flux.yaml", Some(&config_map("flux-owned", "blue"))),
            ("marked/helm.yaml", Some(&config_map("helm-owned", "blue"))),
            ("plain/unmarked.yaml", Some(&config_map("unmarked", "blue"))),
        ],
    );

    let (mut r, _keep) = watching(&h, h.app("polite", "marked", ""));
    let report = pass(&mut r).await;
    assert!(
        matches!(
            report.status,
            PassStatus::Synced {
                outcome: SyncOutcome::Failed,
                ..
            }
        ),
        "{report:?}"
    );
    let mut errors = failures(&h.events("polite"));
    errors.sort();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("belongs to Flux (label kustomize.toolkit.fluxcd.io/name=infra)"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("belongs to Helm (annotation meta.helm.sh/release-name=redis)"),
        "{}",
        errors[1]
    );
    assert!(applied(&h.events("polite")).is_empty());
    for name in ["flux-owned", "helm-owned"] {
        let cm = get_config_map(&client, &ns, name).await.unwrap();
        assert_eq!(
            cm.data.as_ref().unwrap()["color"],
            "green",
            "{name} untouched"
        );
        assert!(!labels(&cm).contains_key("reckon.dev/app"));
    }
    // Recorded once: the same refusal at the next passes records nothing and writes nothing.
    h.requests.take();
    let before = h.events("polite").len();
    for _ in 0..2 {
        let report = pass(&mut r).await;
        assert_eq!(report.appended, 0, "{report:?}");
        assert_eq!(report.refused.len(), 2);
    }
    assert_eq!(h.events("polite").len(), before);
    assert!(writes(&h.requests.take()).is_empty());

    // `adopt: always` takes them, and records the adoption.
    let mut r = h.reconciler(h.app("taker", "marked", "    adopt: always\n"), KEY);
    pass(&mut r).await;
    assert_eq!(
        applied(&h.events("taker")),
        [
            "ConfigMap/flux-owned Adopted",
            "ConfigMap/helm-owned Adopted"
        ]
    );

    // `adopt: never` refuses even an object nobody marked.
    let mut r = h.reconciler(h.app("strict", "plain", "    adopt: never\n"), KEY);
    pass(&mut r).await;
    let errors = failures(&h.events("strict"));
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("adopt: never"), "{}", errors[0]);
    let cm = get_config_map(&client, &ns, "unmarked").await.unwrap();
    assert_eq!(cm.data.unwrap()["color"], "green");
    h.close().await;
}

/// Issue 17, "Two Apps naming the same object took it from each other on every pass": the
/// second App is refused as a conflict, recorded once, shown by status and by the App
/// resource's conditions; the first keeps the object and neither App records anything more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apps_naming_one_object_the_second_is_refused_once_and_says_why() {
    let h = Harness::new("twoapps").await;
    let client = h.catalog.client().clone();
    h.commit(
        "Two Apps, one ConfigMap",
        &[
            ("a/shared.yaml", Some(&config_map("shared", "blue"))),
            ("b/shared.yaml", Some(&config_map("shared", "red"))),
        ],
    );
    let mut a = h.reconciler(h.app("first", "a", ""), KEY);
    let (mut b, _keep) = watching(&h, h.app("second", "b", ""));
    pass(&mut a).await;
    let report = pass(&mut b).await;
    assert_eq!(
        report.refused.len(),
        1,
        "the second App is refused: {report:?}"
    );
    let errors = failures(&h.events("second"));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].contains("belongs to App first (label reckon.dev/app=first)"),
        "{}",
        errors[0]
    );
    let shared = get_config_map(&client, &h.ns.name, "shared").await.unwrap();
    assert_eq!(labels(&shared)["reckon.dev/app"], "first");
    assert_eq!(shared.data.unwrap()["color"], "blue");

    // The App resource's Ready condition names the conflict.
    let summary = reckon::crd::PassSummary::of(&Ok(report.clone()));
    let [ready, _, stalled] = reckon::crd::pass_conditions(&summary);
    assert!(!ready.status);
    assert_eq!(ready.reason, "OwnershipConflict");
    assert!(
        ready.message.contains("belongs to App first"),
        "{}",
        ready.message
    );
    assert!(stalled.status);

    // No fight: passes of both, in turn, write and record nothing.
    let counts = (h.events("first").len(), h.events("second").len());
    h.requests.take();
    for _ in 0..2 {
        assert_eq!(pass(&mut a).await.appended, 0);
        assert_eq!(pass(&mut b).await.appended, 0);
    }
    assert_eq!((h.events("first").len(), h.events("second").len()), counts);
    assert!(writes(&h.requests.take()).is_empty());

    // `reckon status` says what failed.
    let projections = h.store.projections().await.unwrap();
    let status = reckon::query::status(h.store.reader(), &projections, Some("second")).unwrap();
    assert_eq!(status[0].failures.len(), 1, "{:?}", status[0]);
    assert!(status[0].failures[0].contains("belongs to App first"));
    drop((a, b));
    h.close().await;
}

/// A sync that writes one object and refuses another that exists unlabelled (`adopt: never`)
/// then waits for the health of both. The watch selects by the App's label, so it never sees the
/// refused one: the wait must read it directly (`live::Waiting::ReadDirectly`) and end once
/// both are settled, not wait out its timeout for an object no watch will ever deliver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_wait_reads_an_unlabelled_object_directly_and_ends_when_it_is_settled() {
    let h = Harness::new("unlabelled-wait").await;
    let client = h.catalog.client().clone();
    let ns = h.ns.name.clone();
    make_config_map(&client, &ns, "by-hand", [].into(), [].into()).await;
    h.commit(
        "One new ConfigMap, one made by hand",
        &[
            ("mixed/by-hand.yaml", Some(&config_map("by-hand", "blue"))),
            ("mixed/fresh.yaml", Some(&config_map("fresh", "blue"))),
        ],
    );
    // Ten minutes: a wait that never read the refused object would last that long.
    let app = h.app(
        "waiter",
        "mixed",
        "    adopt: never\n    health_timeout: 10m\n",
    );
    let (mut r, _keep) = watching(&h, app);
    h.requests.take();
    let report = tokio::time::timeout(std::time::Duration::from_secs(120), pass(&mut r))
        .await
        .expect("the health wait ended by itself, not on its 10-minute timeout");
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert_eq!(
        applied(&h.events("waiter")),
        ["ConfigMap/fresh Created"],
        "{report:?}"
    );

    // The wait's direct read of the refused object comes after the sync's write.
    let requests = h.requests.take();
    let wrote = requests
        .iter()
        .position(|(m, p)| *m != http::Method::GET && p.contains("/configmaps/fresh"))
        .unwrap_or_else(|| panic!("the sync wrote ConfigMap fresh: {requests:?}"));
    assert!(
        requests[wrote..]
            .iter()
            .any(|(m, p)| *m == http::Method::GET && p.ends_with("/configmaps/by-hand")),
        "no direct read of ConfigMap by-hand after the write: {requests:?}"
    );
    // Both settled, and the one made by hand was read as it is: untouched, never recorded
    // missing.
    let missing: Vec<_> = h
        .events("waiter")
        .into_iter()
        .filter_map(|e| match e {
            Event::HealthChanged(c) if c.to == reckon::event::Health::Missing => Some(c),
            _ => None,
        })
        .collect();
    assert!(missing.is_empty(), "{missing:?}");
    let kept = get_config_map(&client, &ns, "by-hand").await.unwrap();
    assert_eq!(kept.data.as_ref().unwrap()["color"], "green");
    assert!(!labels(&kept).contains_key("reckon.dev/app"));
    drop(r);
    h.close().await;
}
