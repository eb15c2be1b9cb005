//! Tenancy against the real control plane (issue 17, item 3): an App acting as a ServiceAccount
//! writes only what that ServiceAccount's RBAC allows (the rest is an `ApplyFailed` naming the
//! identity and the verb, nothing else touched), an App without one acts with the agent's rights
//! as before, an App object may not write outside its own namespace (nor cluster-scoped objects)
//! unless the agent allows it, the `--default-service-account` lockdown, and a policy that
//! denies a cluster-scoped kind refuses it while the rest of the App applies — in the
//! configuration file, and as a `Policy` object, edited while the App runs.

use crate::support;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, PostParams};
use reckon::config::{self, policy::ObjectRules};
use reckon::crd::{App, TargetSpec};
use reckon::event::{Envelope, Event, SyncOutcome};
use reckon::pool::{Pool, PoolOptions, WatchScope};
use reckon::reconcile::Reconciler;
use reckon::render::SecretKey;
use reckon::source::{GitSource, config::spec_for};
use reckon::watch::WatchOptions;
use reckon_testenv::git::Fixture;
use std::time::Duration;
use support::TestNamespace;
use support::crd::{ObjectAgent, condition, install_app_crd, until};
use support::harness::{Harness, pass, synced};

const KEY: [u8; 32] = [17; 32];

fn config_map(name: &str, ns: Option<&str>) -> String {
    let ns = ns
        .map(|n| format!("  namespace: {n}\n"))
        .unwrap_or_default();
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{ns}data:\n  k: v\n")
}

const SECRET: &str =
    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: hunter2\n";

fn cluster_role(name: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {name}\nrules: []\n"
    )
}

/// A ServiceAccount `name` in `ns` whose Role lets it manage ConfigMaps there and nothing else.
async fn config_map_writer(client: &kube::Client, ns: &str, name: &str) {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let pp = PostParams::default();
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&pp, &sa)
        .await
        .unwrap();
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                   "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(client.clone(), ns)
        .create(&pp, &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&pp, &binding)
        .await
        .unwrap();
}

/// A reconciler connected the way the agent and `reckon sync` connect an App: through the
/// cluster pool, as the App's identity.
async fn connected(h: &Harness, app: config::App) -> Reconciler {
    let key = SecretKey::new(KEY);
    let (cluster, _) = Pool::new(PoolOptions {
        key: key.clone(),
        watch: WatchOptions::default(),
        scope: WatchScope::None,
        settle: None,
        fence: None,
    })
    .connect(&app)
    .await
    .unwrap();
    let (catalog, live) = cluster.for_app(&app).unwrap();
    let source = GitSource::new(spec_for(&app).unwrap(), h.cache.path());
    Reconciler::new(app, source, h.store.clone(), key, catalog, live)
}

fn applied(events: &[Event]) -> Vec<String> {
    let mut out: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::ObjectApplied(a) => Some(format!("{}/{}", a.object.kind, a.object.name)),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn failures(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ApplyFailed(f) => Some((f.object.kind.clone(), f.error.clone())),
            _ => None,
        })
        .collect()
}

/// One pass that applies part of the App and is refused the rest, ending well before the
/// health timeout (20 s): objects that were never created are not waited for.
async fn partly_refused_without_waiting(r: &mut Reconciler) -> reckon::reconcile::PassReport {
    let report = pass(r).await;
    let (outcome, _) = synced(&report);
    assert_eq!(outcome, SyncOutcome::PartiallyFailed);
    assert!(
        report.duration < Duration::from_secs(15),
        "{:?}",
        report.duration
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_acting_as_a_service_account_writes_only_what_its_role_allows() {
    let h = Harness::new("sa").await;
    let client = support::client().await;
    config_map_writer(&client, &h.ns.name, "tenant").await;
    h.commit(
        "Two ConfigMaps and a Secret",
        &[
            ("app/a.yaml", Some(&config_map("a", None))),
            ("app/b.yaml", Some(&config_map("b", None))),
            ("app/db.yaml", Some(SECRET)),
        ],
    );
    let app = h.app(
        "tenant-app",
        "app",
        "    service_account: tenant\n    health_timeout: 20s\n",
    );
    let mut r = connected(&h, app).await;
    // The Secret that was never created is not waited for until the health timeout.
    partly_refused_without_waiting(&mut r).await;

    let events = h.events("tenant-app");
    assert_eq!(applied(&events), ["ConfigMap/a", "ConfigMap/b"]);
    let failed = failures(&events);
    assert_eq!(failed.len(), 1, "{failed:?}");
    let (kind, error) = &failed[0];
    assert_eq!(kind, "Secret");
    let user = format!("system:serviceaccount:{}:tenant", h.ns.name);
    assert!(error.contains(&user), "names the identity: {error}");
    assert!(error.contains("cannot patch"), "names the verb: {error}");
    assert!(error.contains("forbidden"), "{error}");

    // Nothing else written: the ConfigMaps are there, the Secret is not.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &h.ns.name);
    assert!(cms.get_opt("a").await.unwrap().is_some());
    assert!(cms.get_opt("b").await.unwrap().is_some());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &h.ns.name);
    assert!(secrets.get_opt("db").await.unwrap().is_none());
    drop(r);
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_without_a_service_account_acts_with_the_agents_rights_as_before() {
    let h = Harness::new("nosa").await;
    let client = support::client().await;
    h.commit(
        "A ConfigMap and a Secret",
        &[
            ("app/a.yaml", Some(&config_map("a", None))),
            ("app/db.yaml", Some(SECRET)),
        ],
    );
    let app = h.app("plain", "app", "");
    let mut r = connected(&h, app).await;
    let (outcome, _) = synced(&pass(&mut r).await);
    assert_eq!(outcome, SyncOutcome::Succeeded);
    assert_eq!(applied(&h.events("plain")), ["ConfigMap/a", "Secret/db"]);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &h.ns.name);
    assert!(secrets.get_opt("db").await.unwrap().is_some());
    drop(r);
    h.close().await;
}

/// An App of `reckon.yaml` on `h`'s repository held to `policy` (YAML of one `policies[]` entry).
fn app_with_policy(h: &Harness, name: &str, path: &str, policy: &str) -> config::App {
    let text = format!(
        "policies:\n  - {policy}\napps:\n  - name: {name}\n    source:\n      url: {url}\n      path: {path}\n    target:\n      kubeconfig: {kc}\n      namespace: {ns}\n    policy: p\n    health_timeout: 20s\n",
        url = h.fixture.file_url(),
        kc = support::kubeconfig().display(),
        ns = h.ns.name,
    );
    let cfg = config::parse(&text, std::path::Path::new("reckon.yaml")).unwrap();
    cfg.apps.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_denying_a_cluster_scoped_kind_refuses_it_and_the_rest_applies() {
    let h = Harness::new("policy").await;
    let client = support::client().await;
    let role = format!("{}-reader", h.ns.name);
    h.commit(
        "A ConfigMap and a ClusterRole",
        &[
            ("app/a.yaml", Some(&config_map("a", None))),
            ("app/role.yaml", Some(&cluster_role(&role))),
        ],
    );
    let app = app_with_policy(
        &h,
        "governed",
        "app",
        &format!(
            "{{name: p, namespaces: [{}], cluster_kinds: {{allow: [{{kind: \"*\"}}], \
             deny: [{{group: rbac.authorization.k8s.io, kind: ClusterRole}}]}}}}",
            h.ns.name
        ),
    );
    let mut r = connected(&h, app).await;
    let report = partly_refused_without_waiting(&mut r).await;
    let events = h.events("governed");
    assert_eq!(applied(&events), ["ConfigMap/a"]);
    let failed = failures(&events);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "ClusterRole");
    assert!(
        failed[0].1.contains(
            "policy p: cluster_kinds.deny {group: \"rbac.authorization.k8s.io\", kind: ClusterRole}"
        ),
        "names the rule: {}",
        failed[0].1
    );
    let roles: Api<ClusterRole> = Api::all(client.clone());
    assert!(roles.get_opt(&role).await.unwrap().is_none(), "never sent");
    assert_eq!(
        report.outside_boundary.len(),
        1,
        "{:?}",
        report.outside_boundary
    );
    assert!(report.refused.is_empty(), "not an ownership conflict");

    // fail_app: one object outside the policy and nothing of the App is written.
    h.commit(
        "Another ConfigMap",
        &[("app/b.yaml", Some(&config_map("b", None)))],
    );
    let app = app_with_policy(
        &h,
        "governed",
        "app",
        &format!(
            "{{name: p, namespaces: [{}], on_violation: fail_app}}",
            h.ns.name
        ),
    );
    let mut r = connected(&h, app).await;
    let (outcome, _) = synced(&pass(&mut r).await);
    assert_eq!(outcome, SyncOutcome::Failed);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &h.ns.name);
    assert!(
        cms.get_opt("b").await.unwrap().is_none(),
        "fail_app wrote b"
    );
    assert!(roles.get_opt(&role).await.unwrap().is_none());
    drop(r);
    h.close().await;
}

/// An App object as the tenancy tests use it: targeting `target` when given, with a health
/// timeout short enough for refused objects.
fn app_object(name: &str, url: &str, path: &str, target: Option<&str>) -> App {
    let mut app = support::crd::app_object(name, url, path);
    app.spec.target = target.map(|ns| TargetSpec {
        namespace: Some(ns.to_string()),
        ..Default::default()
    });
    app.spec.health_timeout = Some("20s".to_string());
    app
}

fn app_failures(events: &[Envelope], app: &str) -> Vec<(String, String)> {
    let mine: Vec<Event> = events
        .iter()
        .filter(|e| e.body.app.as_deref() == Some(app))
        .map(|e| e.body.event.clone())
        .collect();
    failures(&mine)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_object_may_not_write_outside_its_namespace() {
    let client = support::client().await;
    install_app_crd(&client).await;
    let ns = TestNamespace::create(&client, "home").await;
    // Another tenant's namespace, which the App object's manifests name.
    let other = TestNamespace::create(&client, "other").await;
    let role = format!("{}-role", ns.name);
    let fixture = Fixture::new().unwrap();
    fixture
        .commit("Own, someone else's, cluster-wide")
        .write("app/own.yaml", config_map("own", None))
        .write("app/theirs.yaml", config_map("theirs", Some(&other.name)))
        .write("app/role.yaml", cluster_role(&role))
        .create()
        .unwrap();
    fixture.push().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent = ObjectAgent::start(dir.path(), &ns.name, ObjectRules::default());
    let apps: Api<App> = Api::namespaced(client.clone(), &ns.name);
    apps.create(
        &PostParams::default(),
        &app_object("web", &fixture.file_url(), "app", None),
    )
    .await
    .unwrap();
    // Targeting another namespace is refused before anything runs.
    apps.create(
        &PostParams::default(),
        &app_object("away", &fixture.file_url(), "app", Some(&other.name)),
    )
    .await
    .unwrap();

    let own: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    until("web's own ConfigMap", Duration::from_secs(60), || async {
        own.get_opt("own").await.unwrap().map(|_| ())
    })
    .await;
    let stalled = until("away refused", Duration::from_secs(60), || async {
        let app = apps.get("away").await.unwrap();
        let c = condition(&app, "Stalled")?;
        (c.status == "True").then(|| c.clone())
    })
    .await;
    assert_eq!(stalled.reason, "TargetNotAllowed");
    let message = stalled.message.unwrap_or_default();
    assert!(
        message.contains("--allow-cross-namespace-targets"),
        "{message}"
    );
    // The refused objects are named in web's status once its pass is done.
    until(
        "web's refusals in its status",
        Duration::from_secs(60),
        || async {
            let app = apps.get("web").await.unwrap();
            let c = condition(&app, "Ready")?;
            (c.reason == "OutsideBoundary" && c.message.as_deref()?.contains("ClusterRole"))
                .then_some(())
        },
    )
    .await;
    let events = agent.stop().await;

    let theirs: Api<ConfigMap> = Api::namespaced(client.clone(), &other.name);
    assert!(theirs.get_opt("theirs").await.unwrap().is_none());
    assert!(theirs.get_opt("own").await.unwrap().is_none(), "away ran");
    let roles: Api<ClusterRole> = Api::all(client.clone());
    assert!(roles.get_opt(&role).await.unwrap().is_none());
    let mut failed = app_failures(
        &events,
        &reckon::model::identity::of_object(&ns.name, "web"),
    );
    failed.sort();
    failed.dedup_by(|a, b| a.0 == b.0);
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(failed[0].0, "ClusterRole");
    assert!(failed[0].1.contains("cluster-scoped"), "{}", failed[0].1);
    assert_eq!(failed[1].0, "ConfigMap");
    assert!(
        failed[1]
            .1
            .contains(&format!("namespace {} is not", other.name)),
        "{}",
        failed[1].1
    );
    assert!(
        events.iter().all(|e| e.body.app.as_deref()
            != Some(reckon::model::identity::of_object(&ns.name, "away").as_str())),
        "a refused App object records nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_service_account_locks_app_objects_down_to_their_rbac() {
    let client = support::client().await;
    install_app_crd(&client).await;
    let ns = TestNamespace::create(&client, "lock").await;
    config_map_writer(&client, &ns.name, "reckon-app").await;
    let fixture = Fixture::new().unwrap();
    fixture
        .commit("A ConfigMap and a Secret")
        .write("app/a.yaml", config_map("a", None))
        .write("app/db.yaml", SECRET)
        .create()
        .unwrap();
    fixture.push().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rules = ObjectRules {
        default_service_account: Some("reckon-app".into()),
        ..ObjectRules::default()
    };
    let agent = ObjectAgent::start(dir.path(), &ns.name, rules);
    let apps: Api<App> = Api::namespaced(client.clone(), &ns.name);
    apps.create(
        &PostParams::default(),
        &app_object("locked", &fixture.file_url(), "app", None),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    until("the ConfigMap", Duration::from_secs(60), || async {
        cms.get_opt("a").await.unwrap().map(|_| ())
    })
    .await;
    until("the pass to finish", Duration::from_secs(60), || async {
        let app = apps.get("locked").await.unwrap();
        let c = condition(&app, "Ready")?;
        (c.status == "False").then_some(())
    })
    .await;
    let events = agent.stop().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    assert!(secrets.get_opt("db").await.unwrap().is_none());
    let failed = app_failures(
        &events,
        &reckon::model::identity::of_object(&ns.name, "locked"),
    );
    assert!(!failed.is_empty());
    let user = format!("system:serviceaccount:{}:reckon-app", ns.name);
    for (kind, error) in &failed {
        assert_eq!(kind, "Secret", "{error}");
        assert!(
            error.contains(&user) && error.contains("cannot patch"),
            "{error}"
        );
    }
}

/// Issue 17, item 3: a `Policy` object (cluster-scoped) that App objects reference by name. One
/// that denies a cluster-scoped kind refuses it while the rest of the App applies; editing it to
/// allow the kind makes the next pass (the App is admitted again at once) apply it. An App object
/// naming a Policy that does not exist is `Stalled` (`PolicyNotFound`) and applies nothing, until
/// the Policy is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_object_denying_a_cluster_scoped_kind_refuses_it_until_edited_to_allow_it() {
    use kube::api::{DeleteParams, Patch, PatchParams};
    use reckon::crd::policy::{KindPatternSpec, KindRulesSpec, Policy, PolicySpec};
    let client = support::client().await;
    install_app_crd(&client).await;
    let ns = TestNamespace::create(&client, "polobj").await;
    let role = format!("{}-role", ns.name);
    let fixture = Fixture::new().unwrap();
    fixture
        .commit("A ConfigMap and a ClusterRole")
        .write("app/a.yaml", config_map("a", None))
        .write("app/role.yaml", cluster_role(&role))
        .write("other/b.yaml", config_map("b", None))
        .create()
        .unwrap();
    fixture.push().unwrap();
    let name = format!("{}-policy", ns.name);
    let rbac = || KindPatternSpec {
        group: Some("rbac.authorization.k8s.io".into()),
        kind: "ClusterRole".into(),
    };
    let policy = Policy::new(
        &name,
        PolicySpec {
            namespaces: vec![ns.name.clone()],
            cluster_kinds: Some(KindRulesSpec {
                allow: vec![KindPatternSpec {
                    group: None,
                    kind: "*".into(),
                }],
                deny: vec![rbac()],
            }),
            app_namespaces: vec![ns.name.clone()],
            ..Default::default()
        },
    );
    let policies: Api<Policy> = Api::all(client.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent = ObjectAgent::start(dir.path(), &ns.name, ObjectRules::default());
    let apps: Api<App> = Api::namespaced(client.clone(), &ns.name);
    let mut governed = app_object("governed", &fixture.file_url(), "app", None);
    governed.spec.policy = Some(name.clone());
    apps.create(&PostParams::default(), &governed)
        .await
        .unwrap();
    // And one naming a Policy nobody created.
    let missing = format!("{}-missing", ns.name);
    let mut orphan = app_object("orphan", &fixture.file_url(), "other", None);
    orphan.spec.policy = Some(missing.clone());
    apps.create(&PostParams::default(), &orphan).await.unwrap();

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let roles: Api<ClusterRole> = Api::all(client.clone());
    until(
        "the ClusterRole refused by the policy, in the status",
        Duration::from_secs(60),
        || async {
            let app = apps.get("governed").await.unwrap();
            let c = condition(&app, "Ready")?;
            (c.reason == "OutsideBoundary" && c.message.as_deref()?.contains("ClusterRole"))
                .then_some(())
        },
    )
    .await;
    assert!(
        cms.get_opt("a").await.unwrap().is_some(),
        "the rest applied"
    );
    assert!(roles.get_opt(&role).await.unwrap().is_none(), "never sent");
    let stalled = until("orphan Stalled", Duration::from_secs(30), || async {
        let app = apps.get("orphan").await.unwrap();
        let c = condition(&app, "Stalled")?;
        (c.status == "True").then(|| c.clone())
    })
    .await;
    assert_eq!(stalled.reason, "PolicyNotFound");
    assert!(
        stalled
            .message
            .as_deref()
            .unwrap_or_default()
            .contains(&missing),
        "{stalled:?}"
    );
    assert!(cms.get_opt("b").await.unwrap().is_none(), "nothing applied");

    // The Policy now allows ClusterRoles: the App's next pass applies it.
    policies
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"clusterKinds": {"deny": []}}})),
        )
        .await
        .unwrap();
    until(
        "the ClusterRole applied",
        Duration::from_secs(60),
        || async { roles.get_opt(&role).await.unwrap().map(|_| ()) },
    )
    .await;
    // The missing Policy created: the other App runs.
    let created = Policy::new(
        &missing,
        PolicySpec {
            namespaces: vec![ns.name.clone()],
            app_namespaces: vec![ns.name.clone()],
            ..Default::default()
        },
    );
    policies
        .create(&PostParams::default(), &created)
        .await
        .unwrap();
    until("b applied", Duration::from_secs(60), || async {
        cms.get_opt("b").await.unwrap().map(|_| ())
    })
    .await;
    let events = agent.stop().await;

    let id = reckon::model::identity::of_object(&ns.name, "governed");
    let failed = app_failures(&events, &id);
    assert!(!failed.is_empty());
    for (kind, error) in &failed {
        assert_eq!(kind, "ClusterRole");
        assert!(
            error.contains(&format!(
                "policy {name}: cluster_kinds.deny {{group: \"rbac.authorization.k8s.io\", kind: ClusterRole}}"
            )),
            "names the rule: {error}"
        );
    }
    let applied_role = events.iter().any(|e| {
        e.body.app.as_deref() == Some(id.as_str())
            && matches!(&e.body.event, Event::ObjectApplied(a) if a.object.kind == "ClusterRole")
    });
    assert!(applied_role, "the ClusterRole's apply is recorded");
    // Cluster-scoped objects outlive the test's namespace.
    for p in [&name, &missing] {
        policies.delete(p, &DeleteParams::default()).await.unwrap();
    }
    roles.delete(&role, &DeleteParams::default()).await.unwrap();
}
