//! App objects (apps.reckon.dev) against the real control plane: the agent (`reckon run
//! --watch-apps`, confined to the test's namespace) syncs an App object pointing at a file://
//! repository and writes its status (revision, Ready, last event seq); editing the object's path
//! and suspend takes effect; deleting it stops reconciling it; a steady App's status is not
//! rewritten, also not by a restarted agent; an invalid spec and a name the file already uses are
//! refused in the status; a status that saw more events than the store has (the store lost)
//! records a StoreGap event and says so in a condition.

use crate::support;

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use reckon::crd::App;
use reckon::event::{Envelope, Event};
use reckon_testenv::git::Fixture;
use std::time::{Duration, Instant};
use support::TestNamespace;
use support::crd::{
    AppObjects, ObjectAgent, app_object, condition, install_app_crd, until, until_ready,
};

const SETTINGS: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  color: blue\n";
const OTHER: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\ndata:\n  shape: round\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_object_is_synced_edited_and_deleted_with_its_status_kept() {
    let AppObjects {
        ns,
        fixture,
        sha,
        apps,
        cms,
        ..
    } = AppObjects::new(
        "crd",
        "Two directories",
        &[("web/settings.yaml", SETTINGS), ("other/other.yaml", OTHER)],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let agent = ObjectAgent::start(dir.path(), &ns.name, Default::default());

    apps.create(
        &PostParams::default(),
        &app_object("web", &fixture.file_url(), "web"),
    )
    .await
    .unwrap();

    // Synced: the object exists in the App object's namespace (the default target), and the
    // status says Ready at the commit, following Git, with the App's last event.
    let ready = until_ready(&apps, "web").await;
    assert!(cms.get_opt("settings").await.unwrap().is_some());
    let status = ready.status.clone().unwrap();
    assert_eq!(status.applied_revision.as_deref(), Some(sha.as_str()));
    assert_eq!(status.observed_revision.as_deref(), Some(sha.as_str()));
    assert_eq!(status.intent.as_ref().unwrap().kind, "follow");
    assert_eq!(status.drift_count, 0);
    assert!(status.last_sync_time.is_some());
    assert_eq!(condition(&ready, "Ready").unwrap().reason, "Synced");
    assert_eq!(condition(&ready, "Stalled").unwrap().status, "False");
    assert_eq!(status.observed_generation, ready.metadata.generation);
    let seq_when_ready = status.last_event_seq.expect("the App's last event seq");

    // Steady: polls every second find nothing new, so the status is not written again.
    let version = ready.metadata.resource_version.clone();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let steady = apps.get("web").await.unwrap();
    assert_eq!(
        steady.metadata.resource_version, version,
        "an unchanged App's status was rewritten: {:?}",
        steady.status
    );

    // A restarted agent with nothing new does not rewrite the status either: the App keeps it
    // until its first pass, which finds it unchanged.
    let events_before = agent.stop().await.len();
    let agent = ObjectAgent::start(dir.path(), &ns.name, Default::default());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let restarted = apps.get("web").await.unwrap();
    assert_eq!(
        restarted.metadata.resource_version, version,
        "a restart rewrote an unchanged App's status: {:?}",
        restarted.status
    );

    // Editing the path takes effect: the other directory is applied and settings pruned.
    apps.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"source": {"path": "other"}}})),
    )
    .await
    .unwrap();
    until(
        "other applied and settings pruned",
        Duration::from_secs(60),
        || async {
            let other = cms.get_opt("other").await.unwrap();
            let settings = cms.get_opt("settings").await.unwrap();
            (other.is_some() && settings.is_none()).then_some(())
        },
    )
    .await;
    let edited = until(
        "the status after the edit",
        Duration::from_secs(30),
        || async {
            let app = apps.get("web").await.unwrap();
            let s = app.status.clone()?;
            (s.last_event_seq? > seq_when_ready
                && s.observed_generation == app.metadata.generation
                && condition(&app, "Ready")?.status == "True")
                .then_some(s)
        },
    )
    .await;

    // Suspending takes effect and says so.
    apps.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"suspend": true}})),
    )
    .await
    .unwrap();
    until("web Suspended", Duration::from_secs(30), || async {
        let app = apps.get("web").await.unwrap();
        (condition(&app, "Ready")?.reason == "Suspended").then_some(())
    })
    .await;
    // Resume, then delete the object: reckon stops reconciling it. A deleted managed object
    // stays deleted (a reconciled App re-creates one within a second or two).
    apps.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    until("web Ready again", Duration::from_secs(30), || async {
        let app = apps.get("web").await.unwrap();
        (condition(&app, "Ready")?.reason == "Synced").then_some(())
    })
    .await;
    cms.delete("other", &DeleteParams::default()).await.unwrap();
    until(
        "other re-created while the App exists",
        Duration::from_secs(30),
        || async { cms.get_opt("other").await.unwrap().map(|_| ()) },
    )
    .await;
    apps.delete("web", &DeleteParams::default()).await.unwrap();
    until("the App object gone", Duration::from_secs(30), || async {
        apps.get_opt("web").await.unwrap().is_none().then_some(())
    })
    .await;
    // Give the agent a moment to see the deletion, then delete a managed object again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cms.delete("other", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        cms.get_opt("other").await.unwrap().is_none(),
        "a deleted App object's objects are still reconciled"
    );

    let events = agent.stop().await;
    assert!(events.len() > events_before);
    // Recorded under its identity, namespace and name (also in its status).
    let identity = reckon::model::identity::of_object(&ns.name, "web");
    assert_eq!(status.identity.as_deref(), Some(identity.as_str()));
    let web: Vec<&Envelope> = events
        .iter()
        .filter(|e| e.body.app.as_deref() == Some(identity.as_str()))
        .collect();
    // The status named real events of this App.
    assert!(web.iter().any(|e| e.body.seq == seq_when_ready));
    assert!(
        web.iter()
            .any(|e| e.body.seq == edited.last_event_seq.unwrap())
    );
    assert!(
        web.iter()
            .any(|e| matches!(e.body.event, Event::AppSuspended(_)))
    );
    // No StoreGap: the store was never behind.
    assert!(
        !web.iter()
            .any(|e| matches!(e.body.event, Event::StoreGap(_)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_ahead_of_the_store_records_a_store_gap_and_a_bad_spec_is_refused() {
    let AppObjects {
        ns, fixture, apps, ..
    } = AppObjects::new(
        "crd-gap",
        "Settings",
        &[
            ("web/settings.yaml", SETTINGS),
            // The file's App has objects of its own, and so has the App object of the same name.
            ("taken/other.yaml", OTHER),
            (
                "taken-object/object.yaml",
                &OTHER.replace("other", "object-taken"),
            ),
        ],
    )
    .await;

    // An App whose status says its last event was 1,000,000: a store that had it is gone.
    apps.create(
        &PostParams::default(),
        &app_object("restored", &fixture.file_url(), "web"),
    )
    .await
    .unwrap();
    apps.patch_status(
        "restored",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {"lastEventSeq": 1_000_000}})),
    )
    .await
    .unwrap();
    // And one the agent must refuse: an interval under 1s.
    let mut bad = app_object("bad", &fixture.file_url(), "web");
    bad.spec.source.interval = Some("0s".to_string());
    apps.create(&PostParams::default(), &bad).await.unwrap();

    // And one whose name the configuration file already uses: a different App (its identity is
    // its namespace and name), which runs beside the file's.
    apps.create(
        &PostParams::default(),
        &app_object("taken", &fixture.file_url(), "taken-object"),
    )
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("reckon.yaml"),
        support::one_app_config(
            "taken",
            &fixture.file_url(),
            "taken",
            None,
            &support::kubeconfig(),
            &ns.name,
        ),
    )
    .unwrap();
    let agent = ObjectAgent::start(dir.path(), &ns.name, Default::default());
    let gapped = until(
        "the StoreGap condition and Ready",
        Duration::from_secs(60),
        || async {
            let app = apps.get("restored").await.unwrap();
            (condition(&app, "StoreGap")?.status == "True"
                && condition(&app, "Ready")?.status == "True")
                .then_some(app)
        },
    )
    .await;
    let gap = condition(&gapped, "StoreGap").unwrap();
    assert_eq!(gap.reason, "StoreBehindStatus");
    let message = gap.message.as_deref().unwrap_or_default();
    assert!(message.contains("1000000"), "{message}");
    // The anchor now is this store's: far below what the lost store had reached.
    assert!(gapped.status.as_ref().unwrap().last_event_seq.unwrap() < 1_000_000);

    let refused = until("bad Stalled", Duration::from_secs(30), || async {
        let app = apps.get("bad").await.unwrap();
        (condition(&app, "Stalled")?.status == "True").then_some(app)
    })
    .await;
    let stalled = condition(&refused, "Stalled").unwrap();
    assert_eq!(stalled.reason, "InvalidSpec");
    let message = stalled.message.as_deref().unwrap_or_default();
    assert!(message.starts_with("spec.source.interval:"), "{message}");
    assert_eq!(condition(&refused, "Ready").unwrap().status, "False");

    let beside = until_ready(&apps, "taken").await;
    let taken = reckon::model::identity::of_object(&ns.name, "taken");
    assert_eq!(
        beside.status.as_ref().unwrap().identity.as_deref(),
        Some(taken.as_str())
    );

    let events = agent.stop().await;
    // The file's App ran, and so did the object of its name, each in a history of its own.
    let synced = |app: &str| {
        events.iter().any(|e| {
            e.body.app.as_deref() == Some(app) && matches!(e.body.event, Event::SyncFinished(_))
        })
    };
    assert!(synced("taken") && synced(&taken));
    let applied_by = |app: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.body.app.as_deref() == Some(app))
            .filter_map(|e| match &e.body.event {
                Event::ObjectApplied(a) => Some(a.object.name.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(applied_by("taken"), ["other"]);
    assert_eq!(applied_by(&taken), ["object-taken"]);
    let restored = reckon::model::identity::of_object(&ns.name, "restored");
    let gaps: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.body.event {
            Event::StoreGap(g) if e.body.app.as_deref() == Some(restored.as_str()) => {
                Some(g.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(gaps.len(), 1, "one StoreGap: {gaps:?}");
    assert_eq!(gaps[0].expected_seq, Some(1_000_000));
    assert_eq!(gaps[0].found_seq, 0);
    // The refused App recorded nothing.
    let bad = reckon::model::identity::of_object(&ns.name, "bad");
    assert!(
        !events
            .iter()
            .any(|e| e.body.app.as_deref() == Some(bad.as_str()))
    );
}

/// Measurement, not run by default (`--run-ignored only`): N App objects (RECKON_BENCH_APPS,
/// default 50) on one repository, each with one ConfigMap. Prints the time from creating them
/// to all Ready, the status writes per App until then (counted by a watch on the objects), and
/// asserts that a steady period of three poll intervals writes no status at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn many_app_objects_reach_ready_with_few_status_writes() {
    use futures::StreamExt;
    use kube::runtime::watcher;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    let n: usize = std::env::var("RECKON_BENCH_APPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let client = support::client().await;
    install_app_crd(&client).await;
    let ns = TestNamespace::create(&client, "crd-bench").await;
    let fixture = Fixture::new().unwrap();
    let mut commit = fixture.commit("Apps");
    for i in 0..n {
        commit = commit.write(
            &format!("app-{i}/cm.yaml"),
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  i: \"{i}\"\n"
            ),
        );
    }
    commit.create().unwrap();
    fixture.push().unwrap();

    let apps: Api<App> = Api::namespaced(client.clone(), &ns.name);
    // Status writes per App, from a watch (each modification of an object is one event).
    let writes: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let counter = writes.clone();
    let watch_api = apps.clone();
    let counting = tokio::spawn(async move {
        let mut stream = watcher(watch_api, watcher::Config::default()).boxed();
        while let Some(Ok(event)) = stream.next().await {
            if let watcher::Event::Apply(app) = event
                && app.status.is_some()
            {
                *counter
                    .lock()
                    .unwrap()
                    .entry(app.metadata.name.clone().unwrap())
                    .or_default() += 1;
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let agent = ObjectAgent::start(dir.path(), &ns.name, Default::default());
    let start = Instant::now();
    for i in 0..n {
        let mut app = app_object(
            &format!("app-{i}"),
            &fixture.file_url(),
            &format!("app-{i}"),
        );
        app.spec.source.interval = Some("2s".to_string());
        apps.create(&PostParams::default(), &app).await.unwrap();
    }
    let created = start.elapsed();
    until("every App Ready", Duration::from_secs(600), || async {
        let list = apps.list(&Default::default()).await.unwrap();
        let ready = list
            .items
            .iter()
            .filter(|a| condition(a, "Ready").is_some_and(|c| c.status == "True"))
            .count();
        (ready == n).then_some(())
    })
    .await;
    let all_ready = start.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let until_ready: usize = writes.lock().unwrap().values().sum();
    let versions = |list: kube::core::ObjectList<App>| -> Vec<Option<String>> {
        list.items
            .into_iter()
            .map(|a| a.metadata.resource_version)
            .collect()
    };
    let before = versions(apps.list(&Default::default()).await.unwrap());
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = versions(apps.list(&Default::default()).await.unwrap());
    let steady: usize = writes.lock().unwrap().values().sum::<usize>() - until_ready;
    println!(
        "App objects: {n}; created in {:.2}s; all Ready {:.2}s after the first create; status \
         writes until Ready: {until_ready} ({:.2} per App); status writes in 6s steady (3 polls \
         each): {steady}",
        created.as_secs_f64(),
        all_ready.as_secs_f64(),
        until_ready as f64 / n as f64
    );
    assert_eq!(before, after, "status written while steady");
    counting.abort();
    agent.stop().await;
}

/// Issue 17, "An App resource can read the agent's disk" and "Credentials in URLs": an App
/// object whose source is `file://` into the agent's own cache (another App's mirror there) is
/// refused, so is a scheme the operator did not allow, and a URL with credentials in it is
/// refused without the secret reaching the App's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_object_may_not_read_the_agents_disk_or_carry_credentials_in_its_url() {
    let AppObjects {
        ns, fixture, apps, ..
    } = AppObjects::new("crd-src", "Settings", &[("web/settings.yaml", SETTINGS)]).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = ObjectAgent::start(dir.path(), &ns.name, Default::default());

    // Team A's App: its repository is mirrored in the agent's cache.
    apps.create(
        &PostParams::default(),
        &app_object("team-a", &fixture.file_url(), "web"),
    )
    .await
    .unwrap();
    until_ready(&apps, "team-a").await;
    let mirror =
        reckon::source::mirror::cache_dir_for(&dir.path().join("cache"), &fixture.file_url(), "");
    assert!(mirror.exists(), "{}", mirror.display());

    // A tenant points at that mirror, at a scheme not allowed, and puts a secret in a URL.
    let stolen = format!("file://{}", mirror.display());
    for (name, url) in [
        ("team-b", stolen.as_str()),
        ("daemon", "git://127.0.0.1:9/r.git"),
        ("leaky", "https://alice:s3cret@git.example.com/r.git"),
    ] {
        apps.create(&PostParams::default(), &app_object(name, url, "web"))
            .await
            .unwrap();
    }
    // A chart's dependency repositories are checked like the source: plain http is not allowed.
    let mut charts = app_object("charts", &fixture.file_url(), "web");
    charts.spec.source.url = "https://git.example.com/r.git".into();
    charts.spec.helm = Some(reckon::crd::HelmSpec {
        repositories: vec![reckon::crd::HelmRepositorySpec {
            url: "http://127.0.0.1:9/charts".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    apps.create(&PostParams::default(), &charts).await.unwrap();
    let stalled = |name: &'static str| {
        let apps = apps.clone();
        async move {
            until(
                &format!("{name} Stalled"),
                Duration::from_secs(30),
                || async {
                    let app = apps.get(name).await.unwrap();
                    (condition(&app, "Stalled")?.status == "True").then_some(app)
                },
            )
            .await
        }
    };
    let b = stalled("team-b").await;
    let c = condition(&b, "Stalled").unwrap();
    assert_eq!(c.reason, "SourceNotAllowed");
    let message = c.message.as_deref().unwrap_or_default();
    assert!(message.contains("agent's own cache"), "{message}");
    assert_ne!(condition(&b, "Ready").unwrap().status, "True");

    let d = stalled("daemon").await;
    let c = condition(&d, "Stalled").unwrap();
    assert_eq!(c.reason, "SourceNotAllowed");
    assert!(
        c.message
            .as_deref()
            .unwrap_or_default()
            .contains("scheme git"),
        "{c:?}"
    );

    let c = stalled("charts").await;
    let c = condition(&c, "Stalled").unwrap();
    assert_eq!(c.reason, "SourceNotAllowed");
    let message = c.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("http://127.0.0.1:9/charts") && message.contains("scheme http"),
        "{message}"
    );

    let leaky = stalled("leaky").await;
    let c = condition(&leaky, "Stalled").unwrap();
    assert_eq!(c.reason, "InvalidSpec");
    let message = c.message.as_deref().unwrap_or_default();
    assert!(message.contains("source.auth"), "{message}");
    let status = serde_json::to_string(&leaky.status).unwrap();
    assert!(!status.contains("s3cret"), "{status}");

    let events = agent.stop().await;
    for app in ["team-b", "daemon", "leaky", "charts"] {
        let app = reckon::model::identity::of_object(&ns.name, app);
        assert!(
            !events
                .iter()
                .any(|e| e.body.app.as_deref() == Some(app.as_str())),
            "{app} recorded events: it never ran"
        );
    }
    let text = format!("{events:?}");
    assert!(!text.contains("s3cret"));
}

/// Issue 17, "App identity is the bare name": App object `web` of namespace A syncs its
/// ConfigMap and is deleted; an App object `web` of namespace B created afterwards (the agent
/// allows cross-namespace targets, as an operator may) is a new App. It must not inherit A's
/// history or inventory, so it must not prune A's ConfigMap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_object_of_another_namespace_with_the_same_name_is_a_new_app() {
    use reckon::config::policy::ObjectRules;
    let client = support::client().await;
    install_app_crd(&client).await;
    let a = TestNamespace::create(&client, "ida").await;
    let b = TestNamespace::create(&client, "idb").await;
    let fixture = Fixture::new().unwrap();
    fixture
        .commit("A's settings, B's other")
        .write("a/settings.yaml", SETTINGS)
        .write("b/other.yaml", OTHER)
        .create()
        .unwrap();
    fixture.push().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let open = || ObjectRules {
        allow_cross_namespace_targets: true,
        ..ObjectRules::default()
    };

    // A's App runs, then its object is deleted (its ConfigMap stays, as after any deletion).
    let a_apps: Api<App> = Api::namespaced(client.clone(), &a.name);
    let agent = ObjectAgent::start(dir.path(), &a.name, open());
    a_apps
        .create(
            &PostParams::default(),
            &app_object("web", &fixture.file_url(), "a"),
        )
        .await
        .unwrap();
    until_ready(&a_apps, "web").await;
    agent.stop().await;
    a_apps
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    until("A's App object gone", Duration::from_secs(30), || async {
        a_apps.get_opt("web").await.unwrap().is_none().then_some(())
    })
    .await;

    // B's App of the same name, on the same agent's store.
    let b_apps: Api<App> = Api::namespaced(client.clone(), &b.name);
    let agent = ObjectAgent::start(dir.path(), &b.name, open());
    b_apps
        .create(
            &PostParams::default(),
            &app_object("web", &fixture.file_url(), "b"),
        )
        .await
        .unwrap();
    until_ready(&b_apps, "web").await;
    // A pass that prunes has done so before Ready; give a second pass the chance too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = agent.stop().await;

    let a_cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), &a.name);
    let b_cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), &b.name);
    assert!(b_cms.get_opt("other").await.unwrap().is_some());
    // Two Apps, two histories: A's under its identity, B's under its own, neither under the
    // bare name; each labels its objects with its identity.
    let (a_id, b_id) = (
        reckon::model::identity::of_object(&a.name, "web"),
        reckon::model::identity::of_object(&b.name, "web"),
    );
    let label = |cm: Option<k8s_openapi::api::core::v1::ConfigMap>| {
        cm.and_then(|c| c.metadata.labels?.get("reckon.dev/app").cloned())
    };
    assert_eq!(
        label(a_cms.get_opt("settings").await.unwrap()),
        Some(a_id.clone())
    );
    assert_eq!(
        label(b_cms.get_opt("other").await.unwrap()),
        Some(b_id.clone())
    );
    assert!(events.iter().all(|e| e.body.app.as_deref() != Some("web")));
    let touched = |app: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.body.app.as_deref() == Some(app))
            .filter_map(|e| e.body.event.object().map(|o| o.name.clone()))
            .collect()
    };
    assert!(touched(&a_id).iter().all(|n| n == "settings"));
    assert!(!touched(&a_id).is_empty());
    assert!(
        touched(&b_id).iter().all(|n| n == "other"),
        "{:?}",
        touched(&b_id)
    );
    assert!(
        a_cms.get_opt("settings").await.unwrap().is_some(),
        "B's App pruned A's ConfigMap: it inherited A's inventory. Events: {:#?}",
        events
            .iter()
            .map(|e| (e.body.seq, e.body.app.clone(), e.body.event.kind()))
            .collect::<Vec<_>>()
    );
}

/// An App object deleted and created again under the same namespace and name is a new App
/// (`AppReset`): it starts with an empty inventory, so it does not prune what its predecessor
/// applied and no longer names; what it names again it adopts, as anything it did not create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_object_created_again_after_its_deletion_is_a_new_app() {
    let AppObjects {
        ns,
        fixture,
        apps,
        cms,
        ..
    } = AppObjects::new(
        "again",
        "Two directories",
        &[
            ("first/settings.yaml", SETTINGS),
            ("first/other.yaml", OTHER),
            ("second/other.yaml", OTHER),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let agent = ObjectAgent::start(dir.path(), &ns.name, Default::default());
    apps.create(
        &PostParams::default(),
        &app_object("web", &fixture.file_url(), "first"),
    )
    .await
    .unwrap();
    until_ready(&apps, "web").await;
    apps.delete("web", &DeleteParams::default()).await.unwrap();
    until("the App object gone", Duration::from_secs(30), || async {
        apps.get_opt("web").await.unwrap().is_none().then_some(())
    })
    .await;
    // Creation times have whole seconds: the new object is created in a later one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    apps.create(
        &PostParams::default(),
        &app_object("web", &fixture.file_url(), "second"),
    )
    .await
    .unwrap();
    until_ready(&apps, "web").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = agent.stop().await;

    assert!(
        cms.get_opt("settings").await.unwrap().is_some(),
        "the new App pruned its predecessor's object"
    );
    let id = reckon::model::identity::of_object(&ns.name, "web");
    let mine: Vec<&Envelope> = events
        .iter()
        .filter(|e| e.body.app.as_deref() == Some(id.as_str()))
        .collect();
    let reset = mine
        .iter()
        .position(|e| matches!(e.body.event, Event::AppReset(_)))
        .expect("an AppReset");
    assert_eq!(
        mine.iter()
            .filter(|e| matches!(e.body.event, Event::AppReset(_)))
            .count(),
        1
    );
    let after: Vec<&Envelope> = mine[reset..].to_vec();
    assert!(
        !after.iter().any(|e| matches!(
            e.body.event,
            Event::ObjectPruned(_) | Event::ObjectOrphaned(_)
        )),
        "nothing pruned or released after the reset"
    );
    // `other` is named again: adopted, never created.
    let other = after
        .iter()
        .find_map(|e| match &e.body.event {
            Event::ObjectApplied(a) if a.object.name == "other" => Some(a.action),
            _ => None,
        })
        .expect("other applied by the new App");
    assert_eq!(other, reckon::event::ApplyAction::Adopted);
}

/// Item 4 of issue 18: with `--checkpoint-key` and `--checkpoint-file`, the agent signs its
/// store's head at start, while it moves and on stop; the checkpoints go to the file (outside
/// the store) and into the App object's status, and both verify against the store with the
/// public key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_checkpoints_its_head_to_a_file_and_the_app_status() {
    use reckon::store::checkpoint::{self, Checkpoint, Signer};
    let AppObjects {
        ns, fixture, apps, ..
    } = AppObjects::new("crd-cp", "Settings", &[("web/settings.yaml", SETTINGS)]).await;
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let key = outside.path().join("keys/checkpoint.key");
    let file = outside.path().join("checkpoints.jsonl");
    let options = {
        let (key, file) = (key.clone(), file.clone());
        move |o: &mut reckon::agent::AgentOptions| {
            o.checkpoints = Some(reckon::agent::CheckpointOptions {
                key,
                file,
                every: Duration::from_secs(1),
            });
        }
    };
    let agent = ObjectAgent::start_with(dir.path(), &ns.name, Default::default(), options);
    apps.create(
        &PostParams::default(),
        &app_object("web", &fixture.file_url(), "web"),
    )
    .await
    .unwrap();
    // Ready, and its status carries a checkpoint that covers the sync.
    let in_status = until(
        "a checkpoint in web's status",
        Duration::from_secs(60),
        || async {
            let app = apps.get("web").await.unwrap();
            let status = app.status.as_ref()?;
            let cp = status.checkpoint.clone()?;
            (condition(&app, "Ready")?.status == "True" && cp.seq >= status.last_event_seq?)
                .then_some(cp)
        },
    )
    .await;
    agent.stop().await;

    let public = Signer::load_or_create(&key).unwrap().public_key();
    let from_status = Checkpoint::try_from(&in_status).unwrap();
    from_status.verify(&public).unwrap();
    let lines = checkpoint::read(&file).unwrap();
    assert!(lines.len() >= 2, "at start and on stop at least: {lines:?}");
    assert!(lines.windows(2).all(|w| w[0].seq < w[1].seq), "{lines:?}");
    assert!(
        lines.contains(&from_status),
        "the status carries one of the file's"
    );
    // The last one is the head the store closed with.
    let store_path = dir.path().join("store");
    let (seq, hash) = reckon::store::sled_engine::read_head(&store_path)
        .unwrap()
        .unwrap();
    let last = lines.last().unwrap();
    assert_eq!((last.seq, last.hash), (seq, hash), "written on stop");
    for cp in &lines {
        cp.verify(&public).unwrap();
    }
    let store =
        reckon::store::SledStore::open(&store_path, reckon::store::OpenOptions::default()).unwrap();
    let mut report = reckon::store::verify::Report::default();
    let anchors = reckon::store::verify::check_checkpoints(&lines, &public, &mut report);
    let r = reckon::store::verify::verify_against(&store.reader(), &anchors, &mut |_| {}).unwrap();
    assert!(
        report.ok() && r.ok(),
        "{:?} {:?}",
        report.problems,
        r.problems
    );
    assert_eq!(r.checkpoints as usize, lines.len());
    store.close().unwrap();
}
