//! The executor against the real v1.20 control plane: render a directory → plan → execute,
//! with the inventory folded from outcomes the way the event store's projection will.
//!
//! Requests are counted by a tower layer wrapped around kube's own service stack, so "a
//! steady-state sync writes nothing" is checked on the wire, not inferred.

use crate::support;

use kube::api::{DeleteParams, Patch, PatchParams};
use reckon::apply::wait::{self as health, WaitOptions};
use reckon::apply::{self, ApplyOptions, DiffOutcome, FailureCause, Outcome, SkipReason};
use reckon::config::ConflictPolicy;
use reckon::health::Status;
use reckon::plan::{Action, ObjectRef, PruneSkipReason};
use serde_json::json;
use std::time::Duration;
use support::TestNamespace;
use support::sync::{TestApp, api_for, catalog, counting_client, outcomes_by_name, writes};

const CONFIG: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: fast
"#;

const WORKLOAD: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata:
  name: web
---
apiVersion: v1
kind: Secret
metadata:
  name: db
stringData:
  password: hunter2
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      serviceAccountName: web
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 8080
"#;

#[tokio::test]
async fn create_then_zero_writes_then_configure_and_prune() {
    let (client, requests) = counting_client().await;
    let catalog = catalog(client.clone()).await;
    // The server's version is read once: fieldValidation (1.25+) is sent exactly to servers
    // that have it — strict on the current end of the matrix, never to v1.20.
    let strict = catalog.server().supports_field_validation();
    assert_eq!(
        strict,
        catalog.server().minor >= 25,
        "{:?}",
        catalog.server()
    );
    let ns = TestNamespace::create(&client, "apply").await;
    let mut app = TestApp::new("shop", &ns.name);
    app.write("config.yaml", CONFIG);
    app.write("workload.yaml", WORKLOAD);
    let options = ApplyOptions::default();

    // First sync: everything created, in stage order, all healthy.
    requests.take();
    let (plan, changes) = app.sync(&catalog, &options).await;
    let outcomes = outcomes_by_name(&changes);
    assert_eq!(changes.outcomes.len(), 5, "{:#?}", changes.outcomes);
    for (name, outcome) in &outcomes {
        assert_eq!(**outcome, Outcome::Created, "{name}");
    }
    let sent = requests.take();
    let patches: Vec<_> = sent
        .iter()
        .filter(|(m, _)| *m == http::Method::PATCH)
        .collect();
    assert_eq!(patches.len(), 5, "{patches:#?}");
    // fieldValidation does not exist on v1.20 and is never sent to it; where it exists every
    // apply asks for Strict.
    if strict {
        assert!(
            patches
                .iter()
                .all(|(_, uri)| uri.contains("fieldValidation=Strict")),
            "{patches:#?}"
        );
    } else {
        assert!(
            sent.iter().all(|(_, uri)| !uri.contains("fieldValidation")),
            "{sent:#?}"
        );
    }
    assert!(
        patches
            .iter()
            .all(|(_, uri)| uri.contains("fieldManager=reckon") && uri.contains("force=true"))
    );

    // The Deployment has a replica: healthy only once its Pod is ready (the test plays the
    // kubelet where the control plane has none; simulated nodes start it by themselves).
    support::readiness::make_deployment_ready(&support::client().await, &ns.name, "web").await;
    let objects: Vec<ObjectRef> = plan.actions.iter().map(|a| a.object().clone()).collect();
    let health = health::wait(
        &catalog,
        &objects,
        &WaitOptions {
            timeout: Duration::from_secs(60),
            interval: Duration::from_millis(250),
            concurrency: 8,
        },
    )
    .await;
    for (object, health) in &health {
        assert_eq!(
            health.status,
            Status::Current,
            "{object}: {}",
            health.message
        );
    }

    // Second sync of the same input: all Unchanged and not one write on the wire.
    requests.take();
    let (_, changes) = app.sync(&catalog, &options).await;
    assert!(
        changes
            .outcomes
            .iter()
            .all(|o| o.outcome == Outcome::Unchanged),
        "{:#?}",
        changes.outcomes
    );
    let sent = requests.take();
    assert_eq!(writes(&sent), Vec::<&(http::Method, String)>::new());
    // The reads were the observation (one GET per object), none from the executor itself.
    assert_eq!(sent.len(), 5, "{sent:#?}");
    let desired = app.desired();
    let observed = app.observed(&catalog, &desired).await;
    let plan = app.plan_with(&catalog, &desired, &observed);
    requests.take();
    let changes = apply::execute(&catalog, &plan, &options).await;
    assert_eq!(changes.counts().get("Unchanged"), Some(&5));
    assert_eq!(
        requests.take(),
        Vec::new(),
        "executing an all-unchanged plan sends nothing"
    );

    // A changed field configures; a removed object is pruned.
    app.write("config.yaml", &CONFIG.replace("fast", "safe"));
    app.write(
        "workload.yaml",
        &WORKLOAD.replace(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\n---\n",
            "",
        ),
    );
    let (_, changes) = app.sync(&catalog, &options).await;
    let outcomes = outcomes_by_name(&changes);
    match outcomes["ConfigMap/settings"] {
        Outcome::Configured { changed } => {
            let pointers: Vec<&str> = changed.iter().map(|c| c.pointer.as_str()).collect();
            assert_eq!(pointers, ["/data/mode"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(*outcomes["ServiceAccount/web"], Outcome::Pruned);
    assert_eq!(*outcomes["Deployment/web"], Outcome::Unchanged);
    let sas = api_for(
        &client,
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        Some(&ns.name),
    );
    assert!(
        sas.get_opt("web").await.unwrap().is_none(),
        "pruned object still there"
    );
    let cms = api_for(&client, "v1", "ConfigMap", "configmaps", Some(&ns.name));
    let live = cms.get("settings").await.unwrap();
    assert_eq!(live.data["data"]["mode"], "safe");
}

#[tokio::test]
async fn prune_never_touches_another_apps_objects() {
    let (client, _) = counting_client().await;
    let catalog = catalog(client.clone()).await;
    let ns = TestNamespace::create(&client, "twoapps").await;
    let options = ApplyOptions::default();
    let mut shop = TestApp::new("shop", &ns.name);
    shop.write("a.yaml", &CONFIG.replace("settings", "shop-a"));
    shop.write("b.yaml", &CONFIG.replace("settings", "shared"));
    let mut blog = TestApp::new("blog", &ns.name);
    blog.write("a.yaml", &CONFIG.replace("settings", "blog-a"));
    shop.sync(&catalog, &options).await;
    blog.sync(&catalog, &options).await;

    // blog takes over `shared` (now in both Apps' Git; blog applies last, its label wins):
    // taking another App's object needs `adopt: always`, and is an adoption.
    blog.adopt = reckon::config::AdoptPolicy::Always;
    blog.write("b.yaml", &CONFIG.replace("settings", "shared"));
    let (_, changes) = blog.sync(&catalog, &options).await;
    match outcomes_by_name(&changes)["ConfigMap/shared"] {
        Outcome::Adopted { changed } => {
            let pointers: Vec<&str> = changed.iter().map(|c| c.pointer.as_str()).collect();
            assert_eq!(pointers, ["/metadata/labels/reckon.dev~1app"]);
        }
        other => panic!("{other:?}"),
    }

    // shop drops both files: its own object goes, the one blog now owns stays, and blog's
    // own object was never shop's to prune.
    shop.remove("b.yaml");
    shop.write("a.yaml", &CONFIG.replace("settings", "shop-c"));
    let (_, changes) = shop.sync(&catalog, &options).await;
    let outcomes = outcomes_by_name(&changes);
    assert_eq!(*outcomes["ConfigMap/shop-a"], Outcome::Pruned);
    assert_eq!(
        *outcomes["ConfigMap/shared"],
        Outcome::Skipped {
            reason: SkipReason::Prune(PruneSkipReason::OwnedByOtherApp {
                owner: "blog".into()
            })
        }
    );
    assert!(!outcomes.contains_key("ConfigMap/blog-a"));
    let cms = api_for(&client, "v1", "ConfigMap", "configmaps", Some(&ns.name));
    assert!(cms.get_opt("shop-a").await.unwrap().is_none());
    assert!(cms.get_opt("shared").await.unwrap().is_some());
    assert!(cms.get_opt("blog-a").await.unwrap().is_some());
}

fn crd(group: &str) -> String {
    format!(
        r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.{group}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"#
    )
}

/// Deletes a cluster-scoped CRD when dropped, also when the test fails.
struct CrdGuard(String);

impl Drop for CrdGuard {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let client = support::client().await;
                let api = api_for(
                    &client,
                    "apiextensions.k8s.io/v1",
                    "CustomResourceDefinition",
                    "customresourcedefinitions",
                    None,
                );
                let _ = api.delete(&name, &DeleteParams::background()).await;
            });
        })
        .join();
    }
}

#[tokio::test]
async fn a_crd_and_its_custom_resource_in_one_sync() {
    let (client, _) = counting_client().await;
    let catalog = catalog(client.clone()).await;
    let ns = TestNamespace::create(&client, "crd").await;
    let group = format!("{}.reckon.test", support::suffix());
    let _guard = CrdGuard(format!("widgets.{group}"));
    let mut app = TestApp::new("widgets", &ns.name);
    app.write("crd.yaml", &crd(&group));
    app.write(
        "widget.yaml",
        &format!(
            "apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: gizmo\nspec:\n  size: 3\n"
        ),
    );
    let options = ApplyOptions::default();

    // The dry run cannot ask the server about a kind that is not installed yet; it says so.
    let plan = app.plan(&catalog).await;
    let diff = apply::diff(&catalog, &plan, &options).await;
    let widget = diff.iter().find(|d| d.object.kind == "Widget").unwrap();
    assert!(
        matches!(&widget.outcome, DiffOutcome::Create { validated: false, fields } if !fields.is_empty()),
        "{widget:?}"
    );

    // The planner knows the Widget's scope from the CRD in the set; the executor waits for
    // the CRD to be Established and served before applying the Widget.
    let (plan, changes) = app.sync(&catalog, &options).await;
    assert_eq!(plan.actions[0].object().kind, "CustomResourceDefinition");
    let outcomes = outcomes_by_name(&changes);
    assert_eq!(
        *outcomes[&format!("CustomResourceDefinition/widgets.{group}")],
        Outcome::Created
    );
    assert_eq!(*outcomes["Widget/gizmo"], Outcome::Created, "{changes:#?}");
    let widgets = api_for(
        &client,
        &format!("{group}/v1"),
        "Widget",
        "widgets",
        Some(&ns.name),
    );
    assert_eq!(widgets.get("gizmo").await.unwrap().data["spec"]["size"], 3);

    // Steady state, then removing both prunes the Widget before its CRD.
    let (_, changes) = app.sync(&catalog, &options).await;
    assert_eq!(changes.counts().get("Unchanged"), Some(&2), "{changes:#?}");
    app.remove("crd.yaml");
    app.remove("widget.yaml");
    app.write("other.yaml", CONFIG);
    let (plan, changes) = app.sync(&catalog, &options).await;
    let prunes: Vec<&str> = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Prune { .. }))
        .map(|a| a.object().kind.as_str())
        .collect();
    assert_eq!(prunes, ["Widget", "CustomResourceDefinition"]);
    let outcomes = outcomes_by_name(&changes);
    assert_eq!(*outcomes["Widget/gizmo"], Outcome::Pruned, "{changes:#?}");
    assert_eq!(
        *outcomes[&format!("CustomResourceDefinition/widgets.{group}")],
        Outcome::Pruned
    );
}

/// A CRD with a closed schema (no unknown fields kept) and, where the server has CEL rules
/// (v1.25+), an `x-kubernetes-validations` rule.
fn gadget_crd(group: &str, rules: bool) -> String {
    let validations = if rules {
        "\n            x-kubernetes-validations:\n            - rule: \"self.min <= self.max\"\n              message: \"min must not exceed max\""
    } else {
        ""
    };
    format!(
        r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.{group}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: gadgets, singular: gadget, kind: Gadget, listKind: GadgetList}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object{validations}
            properties:
              min: {{type: integer}}
              max: {{type: integer}}
"#
    )
}

/// An unknown field is refused per object with its path, not dropped, and so is a value a
/// CEL rule refuses (where the server has them, v1.25+); the rest of the set is applied.
#[tokio::test]
async fn unknown_fields_and_validation_rules_fail_per_object_with_the_path() {
    let (client, _) = counting_client().await;
    let catalog = catalog(client.clone()).await;
    let server = catalog.server().clone();
    let rules = server.at_least(1, 25);
    let ns = TestNamespace::create(&client, "fieldval").await;
    let group = format!("{}.reckon.test", support::suffix());
    let _guard = CrdGuard(format!("gadgets.{group}"));
    let mut app = TestApp::new("gadgets", &ns.name);
    app.write("crd.yaml", &gadget_crd(&group, rules));
    app.write("config.yaml", CONFIG);
    let gadget = |name: &str, spec: &str| {
        format!("apiVersion: {group}/v1\nkind: Gadget\nmetadata:\n  name: {name}\nspec: {spec}\n")
    };
    app.write("good.yaml", &gadget("good", "{min: 1, max: 3}"));
    app.write(
        "extra.yaml",
        &gadget("extra", "{min: 1, max: 3, colour: red}"),
    );
    app.write(
        "typo.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\ndata: {a: b}\ndatta: {c: d}\n",
    );
    if rules {
        app.write("backwards.yaml", &gadget("backwards", "{min: 5, max: 3}"));
    }
    let (_, changes) = app.sync(&catalog, &ApplyOptions::default()).await;
    let outcomes = outcomes_by_name(&changes);
    assert_eq!(*outcomes["Gadget/good"], Outcome::Created, "{changes:#?}");
    assert_eq!(
        *outcomes["ConfigMap/settings"],
        Outcome::Created,
        "{changes:#?}"
    );
    let invalid = |name: &str| match outcomes[name] {
        Outcome::Failed {
            cause: FailureCause::Invalid { causes },
            ..
        } => causes.clone(),
        other => panic!("{name} on {}: {other:?}", server.git_version),
    };
    // A field no built-in schema declares: refused by every release, with the path.
    assert_eq!(
        invalid("ConfigMap/typo"),
        [".datta: field not declared in schema"]
    );
    let gadgets = api_for(
        &client,
        &format!("{group}/v1"),
        "Gadget",
        "gadgets",
        Some(&ns.name),
    );
    // Server-side apply builds a typed patch from the CRD's schema before anything else, so
    // an undeclared field of a custom resource is refused the same way on both ends (not
    // pruned, as a create or update of the same body would be without fieldValidation).
    assert_eq!(
        invalid("Gadget/extra"),
        [".spec.colour: field not declared in schema"]
    );
    assert!(gadgets.get_opt("extra").await.unwrap().is_none());
    if rules {
        let causes = invalid("Gadget/backwards");
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert!(
            causes[0].starts_with("spec: ") && causes[0].contains("min must not exceed max"),
            "{causes:?}"
        );
        assert!(gadgets.get_opt("backwards").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn a_custom_resource_whose_crd_is_rejected_is_skipped_with_the_reason() {
    let (client, _) = counting_client().await;
    let catalog = catalog(client.clone()).await;
    let ns = TestNamespace::create(&client, "badcrd").await;
    let group = format!("{}.reckon.test", support::suffix());
    let _guard = CrdGuard(format!("widgets.{group}"));
    let mut app = TestApp::new("widgets", &ns.name);
    // The CRD's name must be <plural>.<group>: the server refuses it.
    app.write(
        "crd.yaml",
        &crd(&group).replace(
            &format!("name: widgets.{group}"),
            &format!("name: gadgets.{group}"),
        ),
    );
    app.write(
        "widget.yaml",
        &format!("apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: gizmo\nspec: {{}}\n"),
    );
    let (_, changes) = app.sync(&catalog, &ApplyOptions::default()).await;
    let outcomes = outcomes_by_name(&changes);
    match outcomes[&format!("CustomResourceDefinition/gadgets.{group}")] {
        Outcome::Failed { error, cause } => {
            assert!(matches!(cause, FailureCause::Invalid { .. }), "{cause:?}");
            assert!(
                error.starts_with(&format!("CustomResourceDefinition.apiextensions.k8s.io/gadgets.{group}: server-side apply: ")),
                "{error}"
            );
            assert!(
                error.contains("must be spec.names.plural+\".\"+spec.group"),
                "{error}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        *outcomes["Widget/gizmo"],
        Outcome::Skipped {
            reason: SkipReason::CrdNotReady {
                crd: format!("gadgets.{group}")
            }
        }
    );
}

#[tokio::test]
async fn conflicts_are_reported_or_forced_by_policy_and_diff_shows_them() {
    let (client, requests) = counting_client().await;
    let catalog = catalog(client.clone()).await;
    let ns = TestNamespace::create(&client, "conflict").await;
    let mut app = TestApp::new("shop", &ns.name);
    app.write("workload.yaml", WORKLOAD);
    let force = ApplyOptions::default();
    let report = ApplyOptions {
        conflicts: ConflictPolicy::Report,
        ..ApplyOptions::default()
    };
    app.sync(&catalog, &report).await;

    // Someone scales the Deployment with their own field manager.
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
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();

    // The plan corrects the drift; a dry run under `report` shows the conflict, writes nothing.
    let plan = app.plan(&catalog).await;
    assert!(
        plan.actions
            .iter()
            .any(|a| matches!(a, Action::Configure { object, .. } if object.kind == "Deployment"))
    );
    requests.take();
    let diff = apply::diff(&catalog, &plan, &report).await;
    let sent = requests.take();
    assert!(
        sent.iter()
            .filter(|(m, _)| *m == http::Method::PATCH)
            .all(|(_, uri)| uri.contains("dryRun=All")),
        "{sent:#?}"
    );
    let deploy_diff = diff.iter().find(|d| d.object.kind == "Deployment").unwrap();
    assert!(
        matches!(
            &deploy_diff.outcome,
            DiffOutcome::Failed {
                cause: FailureCause::Conflict { .. },
                ..
            }
        ),
        "{deploy_diff:?}"
    );
    // Under `force` the dry run shows the field it would take back.
    let diff = apply::diff(&catalog, &plan, &force).await;
    let deploy_diff = diff.iter().find(|d| d.object.kind == "Deployment").unwrap();
    match &deploy_diff.outcome {
        DiffOutcome::Configure { fields } => {
            let replicas = fields
                .iter()
                .find(|f| f.pointer == "/spec/replicas")
                .expect("replicas in diff");
            assert_eq!(
                (replicas.before.clone(), replicas.after.clone()),
                (Some(json!(2)), Some(json!(1)))
            );
        }
        other => panic!("{other:?}"),
    }
    // Not written: a forced apply would have set replicas back to 1. (resourceVersion is no
    // witness here: the Deployment controller updates the status after the scale.)
    assert_eq!(
        deploys.get("web").await.unwrap().data["spec"]["replicas"],
        2
    );

    // report: a Failed outcome naming the other manager and the field; nothing changes.
    let changes = apply::execute(&catalog, &plan, &report).await;
    match outcomes_by_name(&changes)["Deployment/web"] {
        Outcome::Failed {
            error,
            cause: FailureCause::Conflict { conflicts },
        } => {
            assert!(
                error.starts_with(&format!(
                    "Deployment.apps/{}/web: server-side apply: ",
                    ns.name
                )),
                "{error}"
            );
            assert_eq!(conflicts.len(), 1, "{conflicts:?}");
            assert_eq!(
                (conflicts[0].manager.as_str(), conflicts[0].field.as_str()),
                ("kubectl-scale", ".spec.replicas")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        deploys.get("web").await.unwrap().data["spec"]["replicas"],
        2
    );

    // force: reckon takes the field back and owns it.
    let changes = apply::execute(&catalog, &plan, &force).await;
    assert!(
        matches!(
            outcomes_by_name(&changes)["Deployment/web"],
            Outcome::Configured { .. }
        ),
        "{changes:#?}"
    );
    let live = deploys.get("web").await.unwrap();
    assert_eq!(live.data["spec"]["replicas"], 1);
    let owners: Vec<String> = live
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
        })
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(owners, ["reckon"]);
}

#[tokio::test]
async fn objects_in_a_namespace_that_failed_are_skipped_and_health_wait_times_out_honestly() {
    let (client, _) = counting_client().await;
    let catalog = catalog(client.clone()).await;
    let ns = TestNamespace::create(&client, "nsfail").await;
    let mut app = TestApp::new("nsfail", &ns.name);
    // A Namespace the server refuses (names are DNS labels), an object in it, and a PVC in
    // the test namespace that no provisioner will ever bind.
    app.write(
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: Not_A_Label\n",
    );
    app.write(
        "inside.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: inside\n  namespace: Not_A_Label\ndata: {a: b}\n",
    );
    app.write(
        "pvc.yaml",
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Gi}}\n",
    );
    let (plan, changes) = app.sync(&catalog, &ApplyOptions::default()).await;
    let outcomes = outcomes_by_name(&changes);
    match outcomes["Namespace/Not_A_Label"] {
        Outcome::Failed { error, cause } => {
            assert!(matches!(cause, FailureCause::Invalid { .. }), "{cause:?}");
            assert!(
                error.starts_with("Namespace/Not_A_Label: server-side apply: "),
                "{error}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        *outcomes["ConfigMap/inside"],
        Outcome::Skipped {
            reason: SkipReason::NamespaceNotApplied {
                namespace: "Not_A_Label".into()
            }
        }
    );
    assert_eq!(*outcomes["PersistentVolumeClaim/data"], Outcome::Created);

    // Waiting on the PVC ends at the timeout with its last status, not an error.
    let pvc = plan
        .actions
        .iter()
        .map(|a| a.object().clone())
        .find(|o| o.kind == "PersistentVolumeClaim")
        .unwrap();
    let started = std::time::Instant::now();
    let health = health::wait(
        &catalog,
        &[pvc],
        &WaitOptions {
            timeout: Duration::from_secs(1),
            interval: Duration::from_millis(200),
            concurrency: 8,
        },
    )
    .await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(health[0].1.status, Status::InProgress, "{:?}", health[0].1);
    assert_eq!(health[0].1.message, "phase Pending");
}

/// Deletes an APIService when dropped, also when the test fails.
struct ApiServiceGuard(String);

impl Drop for ApiServiceGuard {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let client = support::client().await;
                let api = api_for(
                    &client,
                    "apiregistration.k8s.io/v1",
                    "APIService",
                    "apiservices",
                    None,
                );
                let _ = api.delete(&name, &DeleteParams::background()).await;
            });
        })
        .join();
    }
}

#[tokio::test]
async fn an_unavailable_aggregated_api_does_not_hide_the_other_groups() {
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "aggr").await;
    let group = format!("{}.reckon.test", support::suffix());
    let name = format!("v1.{group}");
    let _guard = ApiServiceGuard(name.clone());
    // An aggregated API whose backing Service does not exist, like a metrics-server that is
    // down: the group is listed, and asking it for its resources answers 503.
    let apiservices = api_for(
        &client,
        "apiregistration.k8s.io/v1",
        "APIService",
        "apiservices",
        None,
    );
    let apiservice: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": name},
        "spec": {"group": group, "version": "v1", "groupPriorityMinimum": 1000,
            "versionPriority": 15, "insecureSkipTLSVerify": true,
            "service": {"name": "absent", "namespace": ns.name, "port": 443}}
    }))
    .unwrap();
    apiservices
        .create(&kube::api::PostParams::default(), &apiservice)
        .await
        .unwrap();
    // Precondition: kube's one-shot discovery now fails as a whole.
    let started = std::time::Instant::now();
    while kube::Discovery::new(client.clone()).run().await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "discovery never noticed the broken group"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let catalog = reckon::apply::Catalog::new(client.clone())
        .await
        .expect("catalog despite one broken group");
    assert_eq!(catalog.unavailable_groups(), [group]);
    // A current server lists the broken group as stale in one aggregated answer; an old one
    // is asked group by group after the full run failed.
    let expected = if catalog.server().supports_aggregated_discovery() {
        reckon::apply::DiscoveryMode::Aggregated
    } else {
        reckon::apply::DiscoveryMode::GroupByGroup
    };
    assert_eq!(catalog.discovery_mode(), expected);
    for (g, k) in [("", "ConfigMap"), ("apps", "Deployment")] {
        assert!(
            catalog.scope(&reckon::plan::GroupKind::new(g, k)).is_some(),
            "{k} lost"
        );
    }
}

/// The catalog finds every kind the server serves, with the same resource and scope, whichever
/// way it discovers them: aggregated on a current server, per group on the floor.
#[tokio::test]
async fn discovery_finds_what_the_server_serves_by_the_servers_means() {
    let client = support::client().await;
    let catalog = reckon::apply::Catalog::new(client.clone()).await.unwrap();
    let server = catalog.server().clone();
    let expected = if server.supports_aggregated_discovery() {
        reckon::apply::DiscoveryMode::Aggregated
    } else {
        reckon::apply::DiscoveryMode::PerGroup
    };
    assert_eq!(catalog.discovery_mode(), expected, "{}", server.git_version);
    // The reference: kube's discovery one request per group and version, for Kubernetes' own
    // groups (tests running beside this one add and remove CRDs and a broken APIService).
    let own = |g: &str| g.is_empty() || !g.contains('.') || g.ends_with(".k8s.io");
    let mut names: Vec<String> = vec![String::new()];
    names.extend(
        client
            .list_api_groups()
            .await
            .unwrap()
            .groups
            .into_iter()
            .map(|g| g.name)
            .filter(|g| own(g)),
    );
    let filter: Vec<&str> = names.iter().map(String::as_str).collect();
    let reference = kube::Discovery::new(client.clone())
        .filter(&filter)
        .run()
        .await
        .unwrap();
    let mut checked = 0;
    for group in reference.groups() {
        for version in group.versions() {
            for (ar, caps) in group.versioned_resources(version) {
                let object = ObjectRef {
                    group: ar.group.clone(),
                    version: ar.version.clone(),
                    kind: ar.kind.clone(),
                    namespace: None,
                    name: "x".into(),
                };
                let found = catalog.resolve(&object).unwrap_or_else(|| {
                    panic!("{}/{} {} not in the catalog", ar.group, ar.version, ar.kind)
                });
                assert_eq!(found.resource.plural, ar.plural, "{}", ar.kind);
                let namespaced = matches!(found.scope, reckon::plan::Scope::Namespaced);
                assert_eq!(
                    namespaced,
                    caps.scope == kube::discovery::Scope::Namespaced,
                    "{}",
                    ar.kind
                );
                checked += 1;
            }
        }
    }
    // Every release serves far more than this; a catalog that found nothing fails above.
    assert!(checked > 40, "only {checked} resources discovered");
    // The newest release serves the current API versions the floor did not.
    // (GA in: CronJob and PodDisruptionBudget v1.21, HorizontalPodAutoscaler v2 v1.23.)
    for (group, version, kind, since) in [
        ("batch", "v1", "CronJob", 21),
        ("autoscaling", "v2", "HorizontalPodAutoscaler", 23),
        ("policy", "v1", "PodDisruptionBudget", 21),
    ] {
        let object = ObjectRef {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            namespace: None,
            name: "x".into(),
        };
        assert_eq!(
            catalog.resolve(&object).is_some(),
            server.at_least(1, since),
            "{group}/{version} {kind} on {}",
            server.git_version
        );
    }
}

#[tokio::test]
async fn a_pruned_job_takes_its_pods_with_it() {
    let (client, _) = counting_client().await;
    let catalog = catalog(client.clone()).await;
    let ns = TestNamespace::create(&client, "jobprune").await;
    let mut app = TestApp::new("batch", &ns.name);
    app.write(
        "job.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: migrate\n        image: busybox:1.36\n        command: [sh, -c, \"true\"]\n",
    );
    app.write("keep.yaml", CONFIG);
    let options = ApplyOptions::default();
    app.sync(&catalog, &options).await;
    // The Job controller creates the Pod (it stays Pending: no scheduler on this cluster).
    let pods = api_for(&client, "v1", "Pod", "pods", Some(&ns.name));
    let by_job = kube::api::ListParams::default().labels("job-name=migrate");
    let started = std::time::Instant::now();
    while pods.list(&by_job).await.unwrap().items.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no Pod for the Job"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // batch/v1 Jobs orphan their Pods unless the delete says otherwise; the prune says
    // Background, so the garbage collector removes the Pod.
    app.remove("job.yaml");
    let (_, changes) = app.sync(&catalog, &options).await;
    assert_eq!(*outcomes_by_name(&changes)["Job/migrate"], Outcome::Pruned);
    let started = std::time::Instant::now();
    while !pods.list(&by_job).await.unwrap().items.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the pruned Job's Pod was left behind"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
