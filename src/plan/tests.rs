//! Tests of the planner: every action kind, every skip reason, ordering and ownership.
// `&[x.clone()]` reads as "a desired set of one" next to sets of several.
#![allow(clippy::cloned_ref_to_slice_refs)]

use super::*;
use crate::config::Selector;
use crate::render::{SecretKey, object_digest};
use serde_json::json;

fn key() -> SecretKey {
    SecretKey::new([5; 32])
}

fn policy() -> Policy {
    Policy {
        app: "shop".into(),
        field_manager: FIELD_MANAGER.into(),
        default_namespace: "shop".into(),
        prune: true,
        allow_empty: false,
        drift: DriftMode::Correct,
        ignore: Vec::new(),
        adopt: AdoptPolicy::Unowned,
        prune_adopted: false,
        prune_non_empty_namespaces: false,
        former_names: Vec::new(),
    }
}

fn scopes(gk: &GroupKind) -> Option<Scope> {
    match (gk.group.as_str(), gk.kind.as_str()) {
        ("", "ConfigMap" | "Secret" | "Service") | ("apps", "Deployment") => {
            Some(Scope::Namespaced)
        }
        ("", "Namespace") | ("rbac.authorization.k8s.io", "ClusterRole") => Some(Scope::Cluster),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => Some(Scope::Cluster),
        _ => None,
    }
}

fn run(desired: &[DesiredObject], inventory: &[InventoryEntry], observed: &Observed) -> Plan {
    plan(desired, inventory, observed, &policy(), &scopes)
}

fn run_with(
    policy: &Policy,
    desired: &[DesiredObject],
    inventory: &[InventoryEntry],
    observed: &Observed,
) -> Plan {
    plan(desired, inventory, observed, policy, &scopes)
}

/// A desired object from a manifest, labelled and digested the way render does.
fn desired(mut manifest: Value) -> DesiredObject {
    crate::render::normalize::normalize(&mut manifest, "shop", true);
    let m = &manifest;
    let object = ObjectRef::from_api_version(
        m["apiVersion"].as_str().unwrap(),
        m["kind"].as_str().unwrap(),
        m["metadata"]["namespace"].as_str(),
        m["metadata"]["name"].as_str().unwrap(),
    );
    let rendered = crate::render::RenderedObject {
        object,
        digest: object_digest(&manifest, &key()),
        manifest: crate::render::Manifest::new(manifest),
        origin: crate::render::Origin {
            file: "test.yaml".into(),
            document: 0,
        },
    };
    DesiredObject::from_rendered(&rendered, &key())
}

fn config_map(name: &str, ns: Option<&str>, data: Value) -> DesiredObject {
    let mut metadata = json!({"name": name});
    if let Some(ns) = ns {
        metadata["namespace"] = ns.into();
    }
    desired(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}))
}

fn deployment(name: &str, replicas: u64, image: &str) -> DesiredObject {
    desired(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "web", "image": image}]}}}
    }))
}

fn cluster_object(kind: &str, name: &str) -> DesiredObject {
    let api_version = match kind {
        "CustomResourceDefinition" => "apiextensions.k8s.io/v1",
        "ClusterRole" => "rbac.authorization.k8s.io/v1",
        _ => "v1",
    };
    desired(json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}}))
}

/// The desired object as the planner resolves it (namespace defaulted to `shop`).
fn resolved(d: &DesiredObject) -> DesiredObject {
    let mut d = d.clone();
    if d.object.namespace.is_none() && scopes(&d.object.group_kind()) == Some(Scope::Namespaced) {
        d.object.namespace = Some("shop".into());
        set_namespace(&mut d.manifest, Some("shop"));
        if let Some(stored) = &mut d.stored {
            set_namespace(stored, Some("shop"));
        }
    }
    d
}

/// The inventory entry reckon would hold after applying `d`.
fn applied(d: &DesiredObject) -> InventoryEntry {
    let d = resolved(d);
    InventoryEntry {
        object: d.object.clone(),
        last_applied_digest: d.digest,
        last_applied: d.comparable().clone(),
        adopted: false,
    }
}

/// The live object right after `d` was applied: its manifest plus server additions.
fn live_of(d: &DesiredObject) -> LiveObject {
    let d = resolved(d);
    let mut manifest = d.comparable().clone();
    manifest["metadata"]["uid"] = json!("0000-1111");
    manifest["metadata"]["resourceVersion"] = json!("42");
    if d.object.kind == "Deployment" {
        manifest["spec"]["revisionHistoryLimit"] = json!(10);
        manifest["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] =
            json!("IfNotPresent");
        manifest["status"] = json!({"replicas": 0});
    }
    LiveObject {
        object: d.object,
        manifest,
        managed_fields: vec![ManagedFields {
            manager: FIELD_MANAGER.into(),
            operation: "Apply".into(),
            time: Some("2026-11-25T10:00:00Z".into()),
            fields_v1: json!({"f:metadata": {"f:labels": {}}}),
        }],
    }
}

fn observed(lives: &[LiveObject], absent: &[&DesiredObject]) -> Observed {
    let mut map: Observed = lives
        .iter()
        .map(|l| (l.object.key(), Observation::Present(l.clone())))
        .collect();
    for d in absent {
        map.insert(resolved(d).object.key(), Observation::Absent);
    }
    map
}

/// A compact view of actions for order and kind assertions.
fn summary(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .map(|action| {
            let what = match action {
                Action::Create { reason, .. } => format!("create({reason:?})"),
                Action::Configure { reason, .. } => format!("configure({reason:?})"),
                Action::Unchanged { .. } => "unchanged".into(),
                Action::Drift {
                    drift: Drift::Deleted,
                    corrected,
                    ..
                } => format!("drift(deleted, corrected={corrected})"),
                Action::Drift {
                    drift: Drift::Modified(_),
                    corrected,
                    ..
                } => format!("drift(modified, corrected={corrected})"),
                Action::Prune { .. } => "prune".into(),
                Action::PruneSkipped { reason, .. } => format!("prune-skipped({reason:?})"),
                Action::Refuse { reason, .. } => format!("refuse({reason:?})"),
                Action::Orphan { .. } => "orphan".into(),
            };
            format!("{what} {}", action.object())
        })
        .collect()
}

fn drifted(plan: &Plan) -> Vec<DriftedField> {
    plan.actions
        .iter()
        .find_map(|a| match a {
            Action::Drift {
                drift: Drift::Modified(fields),
                ..
            } => Some(fields.clone()),
            _ => None,
        })
        .expect("a modified drift")
}

// ---- create / adopt / unchanged / configure ----

#[test]
fn new_objects_are_created_whether_absent_or_unobserved() {
    let a = config_map("a", Some("shop"), json!({"k": "v"}));
    let b = config_map("b", Some("shop"), json!({"k": "v"}));
    let plan = run(&[a.clone(), b], &[], &observed(&[], &[&a]));
    assert_eq!(
        summary(&plan),
        [
            "create(New) ConfigMap/shop/a",
            "create(New) ConfigMap/shop/b"
        ]
    );
    match &plan.actions[0] {
        Action::Create {
            manifest, digest, ..
        } => {
            assert_eq!(manifest, &a.manifest);
            assert_eq!(digest, &a.digest);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn existing_objects_outside_the_inventory_are_adopted_with_their_owner() {
    let a = config_map("a", Some("shop"), json!({"k": "v"}));
    let mut foreign = live_of(&a);
    foreign.manifest["metadata"]["labels"][APP_LABEL] = json!("other");
    foreign.manifest["data"]["k"] = json!("old");
    // Another App's object is taken only under `adopt: always`.
    let always = Policy {
        adopt: AdoptPolicy::Always,
        ..policy()
    };
    let plan = run_with(&always, &[a.clone()], &[], &observed(&[foreign], &[]));
    match &plan.actions[..] {
        [
            Action::Configure {
                reason, changed, ..
            },
        ] => {
            assert_eq!(
                reason,
                &ApplyReason::Adopt {
                    previous_owner: Some("other".into())
                }
            );
            let pointers: Vec<&str> = changed.iter().map(|c| c.pointer.as_str()).collect();
            assert_eq!(pointers, ["/data/k", "/metadata/labels/reckon.dev~1app"]);
        }
        other => panic!("{other:?}"),
    }
    // An unlabelled existing object has no previous owner.
    let mut bare = live_of(&a);
    bare.manifest["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("labels");
    let plan = run(&[a], &[], &observed(&[bare], &[]));
    assert_eq!(
        summary(&plan),
        ["configure(Adopt { previous_owner: None }) ConfigMap/shop/a"]
    );
}

#[test]
fn existing_objects_owned_by_others_are_refused_unless_the_policy_allows() {
    let a = config_map("a", Some("shop"), json!({"k": "v"}));
    let mut other_app = live_of(&a);
    other_app.manifest["metadata"]["labels"][APP_LABEL] = json!("billing");
    let mut flux = live_of(&a);
    flux.manifest["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove(APP_LABEL);
    flux.manifest["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] = json!("infra");
    for live in [other_app, flux] {
        let plan = run(&[a.clone()], &[], &observed(&[live.clone()], &[]));
        let [Action::Refuse { reason, digest, .. }] = &plan.actions[..] else {
            panic!("{:?}", plan.actions)
        };
        assert!(matches!(reason, RefuseReason::Owned { owners } if owners.len() == 1));
        assert_eq!(digest, &a.digest);
        let always = Policy {
            adopt: AdoptPolicy::Always,
            ..policy()
        };
        let plan = run_with(&always, &[a.clone()], &[], &observed(&[live], &[]));
        assert!(matches!(
            &plan.actions[..],
            [Action::Configure {
                reason: ApplyReason::Adopt { .. },
                ..
            }]
        ));
    }
    // `never`: even an unmarked existing object is refused; an absent one is still created.
    let never = Policy {
        adopt: AdoptPolicy::Never,
        ..policy()
    };
    let mut bare = live_of(&a);
    bare.manifest["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("labels");
    let plan = run_with(&never, &[a.clone()], &[], &observed(&[bare], &[]));
    assert_eq!(
        summary(&plan),
        ["refuse(AdoptionDisabled) ConfigMap/shop/a"]
    );
    let plan = run_with(&never, &[a.clone()], &[], &observed(&[], &[&a]));
    assert_eq!(summary(&plan), ["create(New) ConfigMap/shop/a"]);
}

#[test]
fn an_object_another_app_took_over_is_refused_not_taken_back() {
    let a = config_map("a", Some("shop"), json!({"k": "v"}));
    let mut taken = live_of(&a);
    taken.manifest["metadata"]["labels"][APP_LABEL] = json!("billing");
    let plan = run(&[a.clone()], &[applied(&a)], &observed(&[taken], &[]));
    assert_eq!(
        summary(&plan),
        ["refuse(TakenOver { owner: \"billing\" }) ConfigMap/shop/a"]
    );
}

#[test]
fn objects_labelled_with_a_former_name_of_the_app_are_its_own() {
    // App object team-a/shop, whose history a previous reckon kept under "shop": its objects
    // carry that label until its first pass applies them again.
    let renamed = Policy {
        app: "team-a.shop".into(),
        former_names: vec!["shop".into()],
        ..policy()
    };
    let a = config_map("a", Some("shop"), json!({"k": "v"}));
    let gone = config_map("gone", Some("shop"), json!({"k": "v"}));
    let fresh = config_map("fresh", Some("shop"), json!({"k": "v"}));
    let labelled = |d: &DesiredObject| {
        let mut live = live_of(d);
        live.manifest["metadata"]["labels"][APP_LABEL] = json!("shop");
        live
    };
    let lives = observed(&[labelled(&a), labelled(&gone), labelled(&fresh)], &[]);
    let plan = run_with(
        &renamed,
        &[a.clone(), fresh.clone()],
        &[applied(&a), applied(&gone)],
        &lives,
    );
    let mut got = summary(&plan);
    got.sort();
    // Not refused as another App's: in the inventory it is planned as usual; outside it, adopted
    // from nobody; leaving Git, pruned.
    assert!(!got.iter().any(|s| s.starts_with("refuse")), "{got:?}");
    assert!(
        got.contains(&"prune ConfigMap/shop/gone".to_string()),
        "{got:?}"
    );
    let adopt = plan
        .actions
        .iter()
        .find(|a| a.object().name == "fresh")
        .unwrap();
    assert!(
        matches!(
            adopt,
            Action::Configure {
                reason: ApplyReason::Adopt {
                    previous_owner: None
                },
                ..
            }
        ),
        "{adopt:?}"
    );
    // Without the former name, the same objects are another App's.
    let plan = run_with(
        &Policy {
            former_names: vec![],
            ..renamed
        },
        &[a.clone()],
        &[applied(&a)],
        &lives,
    );
    assert_eq!(
        summary(&plan),
        ["refuse(TakenOver { owner: \"shop\" }) ConfigMap/shop/a"]
    );
}

#[test]
fn adopted_objects_that_leave_git_are_orphaned_unless_pruning_them_is_allowed() {
    let a = config_map("a", Some("shop"), json!({"k": "v"}));
    let b = config_map("b", Some("shop"), json!({"k": "v"}));
    let adopted = InventoryEntry {
        adopted: true,
        ..applied(&a)
    };
    let lives = observed(&[live_of(&a), live_of(&b)], &[]);
    let plan = run(&[b.clone()], &[adopted.clone(), applied(&b)], &lives);
    assert_eq!(
        summary(&plan),
        ["unchanged ConfigMap/shop/b", "orphan ConfigMap/shop/a"]
    );
    let prune_adopted = Policy {
        prune_adopted: true,
        ..policy()
    };
    let plan = run_with(
        &prune_adopted,
        &[b.clone()],
        &[adopted.clone(), applied(&b)],
        &lives,
    );
    assert_eq!(
        summary(&plan),
        ["unchanged ConfigMap/shop/b", "prune ConfigMap/shop/a"]
    );
    // Pruning off keeps it, whatever its origin.
    let off = Policy {
        prune: false,
        ..policy()
    };
    let plan = run_with(&off, &[b.clone()], &[adopted, applied(&b)], &lives);
    assert_eq!(
        summary(&plan),
        [
            "unchanged ConfigMap/shop/b",
            "prune-skipped(PruningDisabled) ConfigMap/shop/a"
        ]
    );
}

#[test]
fn a_namespace_holding_objects_the_plan_does_not_prune_is_kept() {
    let ns =
        desired(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
    let a = config_map("a", Some("shop"), json!({"k": "v"}));
    let inventory = [applied(&ns), applied(&a)];
    let lives = observed(&[live_of(&ns), live_of(&a)], &[]);
    let keep = config_map("keep", Some("other"), json!({}));
    let base = run(&[keep.clone()], &inventory, &lives);
    assert_eq!(
        summary(&base),
        [
            "create(New) ConfigMap/other/keep",
            "prune ConfigMap/shop/a",
            "prune Namespace/shop"
        ]
    );
    let resident = |kind: &str, name: &str| Resident {
        object: ObjectRef::from_api_version("v1", kind, Some("shop"), name),
        manifest: json!({}),
    };
    // Only the App's own object and what every Namespace has: pruned.
    let own: BTreeMap<String, Vec<Resident>> = [(
        "shop".to_string(),
        vec![
            resident("ConfigMap", "a"),
            resident("ServiceAccount", "default"),
        ],
    )]
    .into();
    let mut plan = base.clone();
    guard_namespaces(&mut plan, &own, &policy());
    assert_eq!(plan, base);
    // Someone else's object in it: kept, the object named.
    let theirs: BTreeMap<String, Vec<Resident>> = [(
        "shop".to_string(),
        vec![resident("ConfigMap", "a"), resident("Secret", "theirs")],
    )]
    .into();
    let mut plan = base.clone();
    guard_namespaces(&mut plan, &theirs, &policy());
    assert_eq!(
        plan.actions[2],
        Action::PruneSkipped {
            object: resolved(&ns).object,
            reason: PruneSkipReason::NamespaceNotEmpty {
                residents: vec!["Secret/shop/theirs".into()],
                more: 0
            }
        }
    );
    // Unknown contents: kept.
    let mut plan = base.clone();
    guard_namespaces(&mut plan, &BTreeMap::new(), &policy());
    assert!(matches!(plan.actions[2], Action::PruneSkipped { .. }));
    // Unless the App says so.
    let allow = Policy {
        prune_non_empty_namespaces: true,
        ..policy()
    };
    let mut plan = base.clone();
    guard_namespaces(&mut plan, &theirs, &allow);
    assert_eq!(plan, base);
    // An orphaned adopted object stays in the Namespace: the Namespace is kept too.
    let adopted = [
        applied(&ns),
        InventoryEntry {
            adopted: true,
            ..applied(&a)
        },
    ];
    let mut plan = run(&[keep], &adopted, &lives);
    guard_namespaces(&mut plan, &own, &policy());
    assert_eq!(
        summary(&plan)[1..],
        [
            "orphan ConfigMap/shop/a".to_string(),
            "prune-skipped(NamespaceNotEmpty { residents: [\"ConfigMap/shop/a\"], more: 0 }) Namespace/shop".to_string()
        ]
    );
}

#[test]
fn same_digest_and_no_drift_is_unchanged() {
    let d = deployment("web", 2, "web:1");
    let plan = run(&[d.clone()], &[applied(&d)], &observed(&[live_of(&d)], &[]));
    assert_eq!(summary(&plan), ["unchanged Deployment.apps/shop/web"]);
    // Unobserved (watch not synced): no drift claimed.
    let plan = run(&[d.clone()], &[applied(&d)], &Observed::new());
    assert_eq!(summary(&plan), ["unchanged Deployment.apps/shop/web"]);
}

#[test]
fn a_git_change_configures_with_the_changed_fields() {
    let old = deployment("web", 2, "web:1");
    let new = deployment("web", 3, "web:2");
    let plan = run(
        &[new.clone()],
        &[applied(&old)],
        &observed(&[live_of(&old)], &[]),
    );
    match &plan.actions[..] {
        [
            Action::Configure {
                reason,
                changed,
                digest,
                manifest,
                ..
            },
        ] => {
            assert_eq!(reason, &ApplyReason::DesiredChanged);
            assert_eq!(digest, &new.digest);
            assert_eq!(manifest, &new.manifest);
            let got: Vec<(&str, Option<&Value>, Option<&Value>)> = changed
                .iter()
                .map(|c| (c.pointer.as_str(), c.before.as_ref(), c.after.as_ref()))
                .collect();
            assert_eq!(
                got,
                [
                    ("/spec/replicas", Some(&json!(2)), Some(&json!(3))),
                    (
                        "/spec/template/spec/containers/0/image",
                        Some(&json!("web:1")),
                        Some(&json!("web:2"))
                    ),
                ]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_new_api_version_configures_rather_than_prune_and_create() {
    let old = deployment("web", 2, "web:1");
    let mut new_manifest = old.manifest.clone().into_value();
    new_manifest["apiVersion"] = json!("apps/v1beta2");
    let new = desired(new_manifest);
    let plan = run(&[new], &[applied(&old)], &observed(&[live_of(&old)], &[]));
    assert_eq!(
        summary(&plan),
        ["configure(DesiredChanged) Deployment.apps/shop/web"]
    );
}

#[test]
fn a_git_change_to_a_deleted_object_recreates_it() {
    let old = config_map("a", Some("shop"), json!({"k": "1"}));
    let new = config_map("a", Some("shop"), json!({"k": "2"}));
    let plan = run(&[new.clone()], &[applied(&old)], &observed(&[], &[&old]));
    assert_eq!(
        summary(&plan),
        [
            "drift(deleted, corrected=true) ConfigMap/shop/a",
            "create(DesiredChanged) ConfigMap/shop/a"
        ]
    );
    let off = Policy {
        drift: DriftMode::Off,
        ..policy()
    };
    let plan = run_with(&off, &[new], &[applied(&old)], &observed(&[], &[&old]));
    assert_eq!(summary(&plan), ["create(DesiredChanged) ConfigMap/shop/a"]);
}

// ---- drift ----

fn scaled(d: &DesiredObject, replicas: u64) -> LiveObject {
    let mut live = live_of(d);
    live.manifest["spec"]["replicas"] = json!(replicas);
    live.managed_fields.push(ManagedFields {
        manager: "kubectl-scale".into(),
        operation: "Update".into(),
        time: Some("2026-11-25T12:00:00Z".into()),
        fields_v1: json!({"f:spec": {"f:replicas": {}}}),
    });
    live
}

#[test]
fn drift_in_correct_mode_is_recorded_and_reapplied() {
    let d = deployment("web", 2, "web:1");
    let plan = run(
        &[d.clone()],
        &[applied(&d)],
        &observed(&[scaled(&d, 5)], &[]),
    );
    assert_eq!(
        summary(&plan),
        [
            "drift(modified, corrected=true) Deployment.apps/shop/web",
            "configure(DriftCorrection) Deployment.apps/shop/web"
        ]
    );
    let fields = drifted(&plan);
    assert_eq!(fields.len(), 1);
    assert_eq!(fields[0].change.pointer, "/spec/replicas");
    assert_eq!(fields[0].change.before, Some(json!(2)));
    assert_eq!(fields[0].change.after, Some(json!(5)));
    assert_eq!(
        fields[0].owners,
        [FieldOwner {
            manager: "kubectl-scale".into(),
            operation: "Update".into(),
            time: Some("2026-11-25T12:00:00Z".into()),
        }]
    );
    match &plan.actions[1] {
        Action::Configure {
            changed, manifest, ..
        } => {
            assert_eq!(changed.len(), 1);
            assert_eq!(changed[0].pointer, "/spec/replicas");
            assert_eq!(manifest["spec"]["replicas"], 2, "re-applies what Git says");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn drift_in_detect_mode_is_recorded_only() {
    let d = deployment("web", 2, "web:1");
    let detect = Policy {
        drift: DriftMode::Detect,
        ..policy()
    };
    let plan = run_with(
        &detect,
        &[d.clone()],
        &[applied(&d)],
        &observed(&[scaled(&d, 5)], &[]),
    );
    assert_eq!(
        summary(&plan),
        [
            "drift(modified, corrected=false) Deployment.apps/shop/web",
            "unchanged Deployment.apps/shop/web"
        ]
    );
}

#[test]
fn drift_mode_off_looks_for_nothing() {
    let d = deployment("web", 2, "web:1");
    let off = Policy {
        drift: DriftMode::Off,
        ..policy()
    };
    let plan = run_with(
        &off,
        &[d.clone()],
        &[applied(&d)],
        &observed(&[scaled(&d, 5)], &[]),
    );
    assert_eq!(summary(&plan), ["unchanged Deployment.apps/shop/web"]);
    let plan = run_with(&off, &[d.clone()], &[applied(&d)], &observed(&[], &[&d]));
    assert_eq!(summary(&plan), ["unchanged Deployment.apps/shop/web"]);
}

#[test]
fn a_deleted_object_is_drift_and_recreated_in_correct_mode_only() {
    let d = config_map("a", None, json!({"k": "v"}));
    let plan = run(&[d.clone()], &[applied(&d)], &observed(&[], &[&d]));
    assert_eq!(
        summary(&plan),
        [
            "drift(deleted, corrected=true) ConfigMap/shop/a",
            "create(DriftCorrection) ConfigMap/shop/a"
        ]
    );
    let detect = Policy {
        drift: DriftMode::Detect,
        ..policy()
    };
    let plan = run_with(&detect, &[d.clone()], &[applied(&d)], &observed(&[], &[&d]));
    assert_eq!(
        summary(&plan),
        [
            "drift(deleted, corrected=false) ConfigMap/shop/a",
            "unchanged ConfigMap/shop/a"
        ]
    );
}

#[test]
fn drift_and_a_git_change_together_record_the_drift_and_apply_git() {
    let old = deployment("web", 2, "web:1");
    let new = deployment("web", 2, "web:2");
    for mode in [DriftMode::Detect, DriftMode::Correct] {
        let p = Policy {
            drift: mode,
            ..policy()
        };
        let plan = run_with(
            &p,
            &[new.clone()],
            &[applied(&old)],
            &observed(&[scaled(&old, 7)], &[]),
        );
        assert_eq!(
            summary(&plan),
            [
                "drift(modified, corrected=true) Deployment.apps/shop/web",
                "configure(DesiredChanged) Deployment.apps/shop/web"
            ],
            "{mode:?}"
        );
    }
}

#[test]
fn server_defaults_and_foreign_fields_are_not_drift() {
    let d = deployment("web", 2, "web:1");
    let mut live = live_of(&d);
    live.manifest["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "3"});
    live.manifest["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .insert(0, json!({"name": "istio-proxy", "image": "proxy"}));
    let plan = run(&[d.clone()], &[applied(&d)], &observed(&[live], &[]));
    assert_eq!(summary(&plan), ["unchanged Deployment.apps/shop/web"]);
}

#[test]
fn ignore_rules_exclude_matching_objects_fields_only() {
    let web = deployment("web", 2, "web:1");
    let api = deployment("api", 2, "api:1");
    let mut ignoring = policy();
    ignoring.ignore = vec![IgnoreRule {
        select: Selector {
            group: Some("apps".into()),
            kind: Some("Deployment".into()),
            namespace: None,
            name: Some("web".into()),
        },
        pointers: vec!["/spec/replicas".into()],
    }];
    let plan = run_with(
        &ignoring,
        &[web.clone(), api.clone()],
        &[applied(&web), applied(&api)],
        &observed(&[scaled(&web, 5), scaled(&api, 5)], &[]),
    );
    assert_eq!(
        summary(&plan),
        [
            "unchanged Deployment.apps/shop/web",
            "drift(modified, corrected=true) Deployment.apps/shop/api",
            "configure(DriftCorrection) Deployment.apps/shop/api"
        ]
    );
    // Ignoring one field does not hide another on the same object.
    let mut live = scaled(&web, 5);
    live.manifest["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil:1");
    let plan = run_with(
        &ignoring,
        &[web.clone()],
        &[applied(&web)],
        &observed(&[live], &[]),
    );
    let pointers: Vec<String> = drifted(&plan)
        .into_iter()
        .map(|f| f.change.pointer)
        .collect();
    assert_eq!(pointers, ["/spec/template/spec/containers/0/image"]);
}

#[test]
fn secret_drift_names_keys_without_values() {
    let secret = desired(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop"},
        "stringData": {"password": "hunter2", "user": "admin"}}));
    assert!(secret.stored.is_some());
    let mut live = live_of(&secret);
    // What the executor passes: the live Secret in storable form under the same key.
    let mut plain = secret.manifest.clone().into_value();
    plain["data"]["password"] = json!("Y2hhbmdlZA==");
    live.manifest = crate::render::digest::storable_object(&plain, &key());
    let plan = run(
        &[secret.clone()],
        &[applied(&secret)],
        &observed(&[live], &[]),
    );
    let fields = drifted(&plan);
    assert_eq!(fields.len(), 1);
    assert_eq!(fields[0].change.pointer, "/data/password");
    assert_eq!(
        (&fields[0].change.before, &fields[0].change.after),
        (&None, &None)
    );
    let text = serde_json::to_string(&plan.actions[0]).unwrap();
    for needle in [
        "hunter2",
        "aHVudGVyMg",
        "changed",
        "Y2hhbmdlZA",
        "hmac-sha256",
    ] {
        assert!(!text.contains(needle), "{needle} in {text}");
    }
    // An unchanged Secret is unchanged: stored forms compare equal.
    let plan = run(
        &[secret.clone()],
        &[applied(&secret)],
        &observed(&[live_of(&secret)], &[]),
    );
    assert_eq!(summary(&plan), ["unchanged Secret/shop/db"]);
}

#[test]
fn actions_on_secrets_neither_debug_nor_serialise_values() {
    let secret = desired(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop"}, "stringData": {"password": "hunter2"}}));
    let plan = run(std::slice::from_ref(&secret), &[], &Observed::new());
    let Action::Create { manifest, .. } = &plan.actions[0] else {
        panic!("{:?}", plan.actions);
    };
    // The manifest to apply does hold the value...
    assert_eq!(manifest["data"]["password"], "aHVudGVyMg==");
    // ...but neither a debug log line nor a serialised action shows it.
    for text in [format!("{plan:?}"), serde_json::to_string(&plan).unwrap()] {
        assert!(
            !text.contains("hunter2") && !text.contains("aHVudGVyMg"),
            "{text}"
        );
    }
}

#[test]
fn a_git_change_to_a_secret_lists_keys_without_values() {
    let old = desired(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop"}, "stringData": {"password": "one", "user": "u"}}));
    let new = desired(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop"}, "stringData": {"password": "two", "user": "u"}}));
    let plan = run(&[new], &[applied(&old)], &observed(&[live_of(&old)], &[]));
    match &plan.actions[..] {
        [Action::Configure { changed, .. }] => {
            assert_eq!(changed.len(), 1);
            assert_eq!(changed[0].pointer, "/data/password");
            assert_eq!((&changed[0].before, &changed[0].after), (&None, &None));
        }
        other => panic!("{other:?}"),
    }
}

// ---- prune ----

#[test]
fn objects_that_left_git_are_pruned() {
    let keep = config_map("keep", Some("shop"), json!({}));
    let gone = config_map("gone", Some("shop"), json!({}));
    let plan = run(
        &[keep.clone()],
        &[applied(&keep), applied(&gone)],
        &observed(&[live_of(&keep), live_of(&gone)], &[]),
    );
    assert_eq!(
        summary(&plan),
        ["unchanged ConfigMap/shop/keep", "prune ConfigMap/shop/gone"]
    );
    // Already deleted by someone: still a prune, so the inventory lets go of it.
    let plan = run(
        &[keep.clone()],
        &[applied(&keep), applied(&gone)],
        &observed(&[], &[&gone]),
    );
    assert_eq!(summary(&plan)[1], "prune ConfigMap/shop/gone");
}

#[test]
fn a_renamed_object_is_pruned_and_created() {
    let old = config_map("settings-v1", Some("shop"), json!({"k": "v"}));
    let new = config_map("settings-v2", Some("shop"), json!({"k": "v"}));
    let plan = run(&[new], &[applied(&old)], &observed(&[live_of(&old)], &[]));
    assert_eq!(
        summary(&plan),
        [
            "create(New) ConfigMap/shop/settings-v2",
            "prune ConfigMap/shop/settings-v1"
        ]
    );
}

#[test]
fn every_prune_skip_reason() {
    let keep = config_map("keep", Some("shop"), json!({}));
    let gone = config_map("gone", Some("shop"), json!({}));
    let inventory = [applied(&keep), applied(&gone)];
    let lives = observed(&[live_of(&keep), live_of(&gone)], &[]);

    let off = Policy {
        prune: false,
        ..policy()
    };
    let plan = run_with(&off, &[keep.clone()], &inventory, &lives);
    assert_eq!(
        summary(&plan)[1],
        "prune-skipped(PruningDisabled) ConfigMap/shop/gone"
    );

    // Empty desired set: nothing is pruned unless the App allows it.
    let plan = run(&[], &inventory, &lives);
    assert_eq!(
        summary(&plan),
        [
            "prune-skipped(EmptyDesiredSet) ConfigMap/shop/gone",
            "prune-skipped(EmptyDesiredSet) ConfigMap/shop/keep"
        ]
    );
    let allow = Policy {
        allow_empty: true,
        ..policy()
    };
    let plan = run_with(&allow, &[], &inventory, &lives);
    assert_eq!(
        summary(&plan),
        ["prune ConfigMap/shop/gone", "prune ConfigMap/shop/keep"]
    );

    // Opt-out annotation, in what Git last said or set on the live object.
    let mut annotated = applied(&gone);
    annotated.last_applied["metadata"]["annotations"] = json!({PRUNE_ANNOTATION: PRUNE_DISABLED});
    let plan = run(&[keep.clone()], &[applied(&keep), annotated], &lives);
    assert_eq!(
        summary(&plan)[1],
        "prune-skipped(Annotation) ConfigMap/shop/gone"
    );
    let mut live = live_of(&gone);
    live.manifest["metadata"]["annotations"] = json!({PRUNE_ANNOTATION: PRUNE_DISABLED});
    let plan = run(
        &[keep.clone()],
        &inventory,
        &observed(&[live_of(&keep), live], &[]),
    );
    assert_eq!(
        summary(&plan)[1],
        "prune-skipped(Annotation) ConfigMap/shop/gone"
    );
    // Another value of the annotation does not opt out.
    let mut live = live_of(&gone);
    live.manifest["metadata"]["annotations"] = json!({PRUNE_ANNOTATION: "enabled"});
    let plan = run(&[keep.clone()], &inventory, &observed(&[live], &[]));
    assert_eq!(summary(&plan)[1], "prune ConfigMap/shop/gone");

    // Taken over by another App since.
    let mut taken = live_of(&gone);
    taken.manifest["metadata"]["labels"][APP_LABEL] = json!("billing");
    let plan = run(&[keep.clone()], &inventory, &observed(&[taken], &[]));
    assert_eq!(
        summary(&plan)[1],
        "prune-skipped(OwnedByOtherApp { owner: \"billing\" }) ConfigMap/shop/gone"
    );

    // Render failed: the planner is not called; every inventory object is kept.
    let actions = render_failed(&inventory);
    let plan = Plan {
        actions,
        rejected: vec![],
    };
    assert_eq!(
        summary(&plan),
        [
            "prune-skipped(RenderFailed) ConfigMap/shop/gone",
            "prune-skipped(RenderFailed) ConfigMap/shop/keep"
        ]
    );
}

#[test]
fn two_apps_never_prune_each_others_objects() {
    let shop_cm = config_map("shop-settings", Some("shared"), json!({}));
    let billing_cm = config_map("billing-settings", Some("shared"), json!({}));
    let mut billing_live = live_of(&billing_cm);
    billing_live.manifest["metadata"]["labels"][APP_LABEL] = json!("billing");
    let everything = observed(&[live_of(&shop_cm), billing_live.clone()], &[]);

    // shop drops its object; billing's object is in the cluster but not in shop's inventory.
    let shop = Policy {
        allow_empty: true,
        ..policy()
    };
    let plan = run_with(&shop, &[], &[applied(&shop_cm)], &everything);
    assert_eq!(summary(&plan), ["prune ConfigMap/shared/shop-settings"]);

    // billing, planned with its own inventory, leaves shop's object alone too.
    let billing = Policy {
        app: "billing".into(),
        ..policy()
    };
    let mut billing_inventory = applied(&billing_cm);
    billing_inventory.last_applied["metadata"]["labels"][APP_LABEL] = json!("billing");
    let plan = run_with(
        &billing,
        &[billing_cm.clone()],
        &[billing_inventory],
        &everything,
    );
    assert_eq!(
        summary(&plan),
        ["unchanged ConfigMap/shared/billing-settings"]
    );
    assert!(
        plan.actions
            .iter()
            .all(|a| a.object().name != "shop-settings")
    );
}

// ---- ordering ----

#[test]
fn applies_are_staged_and_prunes_reversed() {
    let crd = desired(
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"}, "scope": "Namespaced"}}),
    );
    let ns = cluster_object("Namespace", "shop");
    let widget = desired(
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}),
    );
    let deploy = deployment("web", 1, "web:1");
    let cm = config_map("a", None, json!({}));
    let plan = run(&[widget, deploy, ns, cm, crd], &[], &Observed::new());
    assert_eq!(
        summary(&plan),
        [
            "create(New) CustomResourceDefinition.apiextensions.k8s.io/widgets.example.com",
            "create(New) Namespace/shop",
            "create(New) Widget.example.com/shop/w",
            "create(New) Deployment.apps/shop/web",
            "create(New) ConfigMap/shop/a",
        ]
    );
    let stages: Vec<Stage> = plan.actions.iter().map(Action::stage).collect();
    assert_eq!(
        stages,
        [
            Stage::Crds,
            Stage::Namespaces,
            Stage::Resources,
            Stage::Resources,
            Stage::Resources
        ]
    );

    let inventory: Vec<InventoryEntry> = [
        cluster_object("Namespace", "old-ns"),
        cluster_object("CustomResourceDefinition", "old.example.com"),
        config_map("z-old", Some("old-ns"), json!({})),
        cluster_object("ClusterRole", "old-role"),
        config_map("a-old", Some("old-ns"), json!({})),
    ]
    .iter()
    .map(applied)
    .collect();
    let keep = config_map("keep", None, json!({}));
    let plan = run(&[keep], &inventory, &Observed::new());
    assert_eq!(
        summary(&plan),
        [
            "create(New) ConfigMap/shop/keep",
            // Within a stage, by identity (group, kind, namespace, name): core group first.
            "prune ConfigMap/old-ns/a-old",
            "prune ConfigMap/old-ns/z-old",
            "prune ClusterRole.rbac.authorization.k8s.io/old-role",
            "prune Namespace/old-ns",
            "prune CustomResourceDefinition.apiextensions.k8s.io/old.example.com",
        ]
    );
    assert!(plan.actions[1..].iter().all(|a| a.stage() == Stage::Prune));
}

// ---- namespaces and scope ----

#[test]
fn namespaced_objects_get_the_default_namespace_in_ref_and_manifest() {
    let cm = config_map("a", None, json!({"k": "v"}));
    let plan = run(&[cm.clone()], &[], &Observed::new());
    match &plan.actions[0] {
        Action::Create {
            object, manifest, ..
        } => {
            assert_eq!(object.namespace.as_deref(), Some("shop"));
            assert_eq!(manifest["metadata"]["namespace"], "shop");
        }
        other => panic!("{other:?}"),
    }
    // The same object, once applied, is recognised under its defaulted identity.
    let plan = run(
        &[cm.clone()],
        &[applied(&cm)],
        &observed(&[live_of(&cm)], &[]),
    );
    assert_eq!(summary(&plan), ["unchanged ConfigMap/shop/a"]);
    // An explicit namespace is kept.
    let other = config_map("b", Some("other"), json!({}));
    let plan = run(&[other], &[], &Observed::new());
    assert_eq!(summary(&plan), ["create(New) ConfigMap/other/b"]);
}

#[test]
fn cluster_scoped_objects_lose_a_stray_namespace() {
    let mut role = cluster_object("ClusterRole", "reader");
    role.object.namespace = Some("shop".into());
    role.manifest["metadata"]["namespace"] = json!("shop");
    let plan = run(&[role], &[], &Observed::new());
    match &plan.actions[0] {
        Action::Create {
            object, manifest, ..
        } => {
            assert_eq!(object.namespace, None);
            assert!(manifest["metadata"].get("namespace").is_none());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_kinds_are_rejected_but_never_pruned() {
    let unknown = desired(
        json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}}),
    );
    // What an earlier sync applied (when the cluster served the kind), in the default namespace.
    let mut earlier = applied(&unknown);
    earlier.object.namespace = Some("shop".into());
    let plan = run(&[unknown.clone()], &[earlier], &Observed::new());
    assert_eq!(
        plan.rejected,
        [Rejected {
            object: unknown.object.clone(),
            reason: RejectReason::UnknownKind
        }]
    );
    assert!(plan.actions.is_empty(), "{:?}", summary(&plan));
}

#[test]
fn a_crd_in_the_set_gives_the_scope_of_its_resources() {
    let crd = desired(
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "names": {"kind": "Gadget"}, "scope": "Cluster"}}),
    );
    let mut gadget = desired(json!({"apiVersion": "example.com/v1", "kind": "Gadget",
        "metadata": {"name": "g", "namespace": "ignored"}}));
    gadget.object.namespace = Some("ignored".into());
    let plan = run(&[gadget, crd], &[], &Observed::new());
    assert_eq!(
        summary(&plan),
        [
            "create(New) CustomResourceDefinition.apiextensions.k8s.io/gadgets.example.com",
            "create(New) Gadget.example.com/g"
        ]
    );
    assert!(plan.rejected.is_empty());
}

#[test]
fn duplicates_after_defaulting_are_rejected() {
    let implicit = config_map("a", None, json!({"k": "1"}));
    let explicit = config_map("a", Some("shop"), json!({"k": "2"}));
    let plan = run(&[implicit, explicit.clone()], &[], &Observed::new());
    assert_eq!(summary(&plan), ["create(New) ConfigMap/shop/a"]);
    assert_eq!(plan.rejected.len(), 1);
    assert_eq!(plan.rejected[0].reason, RejectReason::Duplicate);
    assert_eq!(plan.rejected[0].object, explicit.object);
}

#[test]
fn policy_from_app_config() {
    let config = crate::config::parse(
        "apps:\n  - name: shop\n    source: {url: https://x/y}\n    target: {namespace: store}\n    prune: {enabled: false, allow_empty: true}\n    drift: detect\n    ignore: [{pointers: [/spec/replicas]}]\n",
        std::path::Path::new("reckon.yaml"),
    )
    .unwrap();
    let p = Policy::from_app(&config.apps[0]);
    assert_eq!(p.app, "shop");
    assert_eq!(p.field_manager, FIELD_MANAGER);
    assert_eq!(p.default_namespace, "store");
    assert!(!p.prune);
    assert!(p.allow_empty);
    assert_eq!(p.drift, DriftMode::Detect);
    assert_eq!(p.ignore.len(), 1);
}
