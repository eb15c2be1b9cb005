//! Owns the tenancy decision on a plan: which objects an App may write at all, whatever RBAC
//! would let it (an App object confined to its own namespace, the App's policy of allowed
//! namespaces and kinds). Pure: [`violation`] judges one object, [`confine`] turns the plan's
//! writes of objects outside the boundary into refusals before anything is sent.

use super::{Action, ObjectRef, Plan, PruneSkipReason, RefuseReason};
use crate::config::policy::{Boundary, KindPattern, OnViolation, glob};

/// The rule an object breaks, said so that whoever reads the `ApplyFailed` knows which key to
/// look at; `None`: the object is inside the boundary. `object` has its namespace resolved
/// (`None`: cluster-scoped).
pub fn violation(boundary: &Boundary, object: &ObjectRef) -> Option<String> {
    let kind = object.group_kind().to_string();
    let cluster_allowed =
        |rules: &[KindPattern]| rules.iter().any(|p| p.matches(&object.group, &object.kind));
    if let Some(home) = &boundary.confined_to {
        match &object.namespace {
            Some(ns) if ns != home => {
                return Some(format!(
                    "namespace {ns} is not this App object's namespace {home}: the agent does \
                     not let App objects write to other namespaces \
                     (--allow-cross-namespace-targets)"
                ));
            }
            Some(_) => {}
            // With a policy, its cluster_kinds decide below (allowed and not denied), and the
            // reason names the rule; without one, no cluster-scoped kind is allowed.
            None if boundary.policy.is_some() => {}
            None => {
                return Some(format!(
                    "{kind} is cluster-scoped: an App object may write cluster-scoped \
                     objects only of the kinds its policy allows (cluster_kinds.allow)"
                ));
            }
        }
    }
    let policy = boundary.policy.as_ref()?;
    let name = &policy.name;
    let rules = match &object.namespace {
        Some(ns) => {
            if !policy.namespaces.iter().any(|g| glob(g, ns)) {
                return Some(format!(
                    "policy {name}: namespace {ns} matches none of namespaces [{}]",
                    policy.namespaces.join(", ")
                ));
            }
            &policy.namespaced_kinds
        }
        None => &policy.cluster_kinds,
    };
    let key = if object.namespace.is_some() {
        "namespaced_kinds"
    } else {
        "cluster_kinds"
    };
    if let Some(rule) = rules
        .deny
        .iter()
        .find(|p| p.matches(&object.group, &object.kind))
    {
        return Some(format!("policy {name}: {key}.deny {rule} matches {kind}"));
    }
    // An empty allow list allows every namespaced kind and no cluster-scoped one.
    let allowed = if rules.allow.is_empty() {
        object.namespace.is_some()
    } else {
        cluster_allowed(&rules.allow)
    };
    if !allowed {
        return Some(if rules.allow.is_empty() {
            format!("policy {name}: {kind} is cluster-scoped and {key}.allow is empty")
        } else {
            format!("policy {name}: {kind} matches nothing in {key}.allow")
        });
    }
    None
}

/// Refuses, in `plan`, every write the boundary does not allow: an apply becomes a `Refuse`
/// with the rule (recorded as `ApplyFailed`, nothing sent), a prune is kept (`PruneSkipped`),
/// and a drift of such an object is recorded as not corrected. With `on_violation: fail_app`,
/// one object outside the policy refuses every write of the App. Returns the reasons, in plan
/// order.
pub fn confine(plan: &mut Plan, boundary: &Boundary) -> Vec<String> {
    if boundary.is_open() {
        return Vec::new();
    }
    let judged: Vec<Option<String>> = plan
        .actions
        .iter()
        .map(|a| match a {
            Action::Create { object, .. }
            | Action::Configure { object, .. }
            | Action::Drift { object, .. }
            | Action::Prune { object }
            | Action::Orphan { object } => violation(boundary, object),
            _ => None,
        })
        .collect();
    let reasons: Vec<String> = plan
        .actions
        .iter()
        .zip(&judged)
        .filter_map(|(a, v)| v.as_ref().map(|v| format!("{}: {v}", a.object())))
        .collect();
    let fail_app = boundary
        .policy
        .as_ref()
        .is_some_and(|p| p.on_violation == OnViolation::FailApp);
    let whole_app = match (&boundary.policy, reasons.first()) {
        (Some(p), Some(first)) if fail_app => Some(format!(
            "policy {}: on_violation: fail_app, and {first}",
            p.name
        )),
        _ => None,
    };
    for (action, rule) in plan.actions.iter_mut().zip(judged) {
        let Some(rule) = rule.or_else(|| whole_app.clone()) else {
            continue;
        };
        let refused = match action {
            Action::Create { object, digest, .. } | Action::Configure { object, digest, .. } => {
                Action::Refuse {
                    object: object.clone(),
                    digest: *digest,
                    reason: RefuseReason::OutsideBoundary { rule },
                }
            }
            Action::Prune { object } | Action::Orphan { object } => Action::PruneSkipped {
                object: object.clone(),
                reason: PruneSkipReason::OutsideBoundary { rule },
            },
            Action::Drift { corrected, .. } => {
                *corrected = false;
                continue;
            }
            _ => continue,
        };
        *action = refused;
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::policy::{KindRules, Policy};
    use crate::model::Digest;
    use crate::plan::ApplyReason;

    fn obj(group: &str, kind: &str, ns: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef {
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
            namespace: ns.map(str::to_string),
            name: name.into(),
        }
    }

    fn pattern(group: &str, kind: &str) -> KindPattern {
        KindPattern {
            group: group.into(),
            kind: kind.into(),
        }
    }

    fn policy() -> Policy {
        Policy {
            name: "team-a".into(),
            namespaces: vec!["team-a".into(), "team-a-*".into()],
            namespaced_kinds: KindRules {
                allow: Vec::new(),
                deny: vec![pattern("", "Secret")],
            },
            cluster_kinds: KindRules {
                allow: vec![pattern("rbac.authorization.k8s.io", "*")],
                deny: vec![pattern("*", "ClusterRoleBinding")],
            },
            app_namespaces: Vec::new(),
            on_violation: OnViolation::SkipObject,
        }
    }

    fn with(policy: Option<Policy>, confined_to: Option<&str>) -> Boundary {
        Boundary {
            confined_to: confined_to.map(str::to_string),
            policy,
        }
    }

    #[test]
    fn an_open_boundary_allows_everything() {
        let b = Boundary::default();
        assert_eq!(
            violation(&b, &obj("", "Secret", Some("kube-system"), "x")),
            None
        );
        assert_eq!(
            violation(&b, &obj("apps", "DaemonSet", Some("kube-system"), "x")),
            None
        );
        assert_eq!(
            violation(
                &b,
                &obj("rbac.authorization.k8s.io", "ClusterRole", None, "x")
            ),
            None
        );
    }

    #[test]
    fn an_app_object_is_confined_to_its_namespace_and_namespaced_kinds() {
        let b = with(None, Some("team-b"));
        assert_eq!(
            violation(&b, &obj("", "ConfigMap", Some("team-b"), "c")),
            None
        );
        let other = violation(&b, &obj("", "ConfigMap", Some("team-a"), "c")).unwrap();
        assert!(
            other.contains("namespace team-a") && other.contains("team-b"),
            "{other}"
        );
        assert!(other.contains("--allow-cross-namespace-targets"), "{other}");
        let cluster = violation(&b, &obj("", "Namespace", None, "team-a")).unwrap();
        assert!(cluster.contains("cluster-scoped"), "{cluster}");
        assert!(cluster.contains("cluster_kinds.allow"), "{cluster}");
    }

    #[test]
    fn a_confined_app_object_writes_cluster_scoped_kinds_its_policy_allows() {
        let mut p = policy();
        p.namespaces = vec!["*".into()];
        let b = with(Some(p), Some("team-b"));
        let role = obj("rbac.authorization.k8s.io", "ClusterRole", None, "r");
        assert_eq!(violation(&b, &role), None);
        let binding = obj("rbac.authorization.k8s.io", "ClusterRoleBinding", None, "r");
        // Refused by the policy's rule, which the reason names.
        assert_eq!(
            violation(&b, &binding).as_deref(),
            Some(
                r#"policy team-a: cluster_kinds.deny {group: "*", kind: ClusterRoleBinding} matches ClusterRoleBinding.rbac.authorization.k8s.io"#
            )
        );
        // The policy's namespaces do not widen the App object's own namespace.
        assert!(violation(&b, &obj("", "ConfigMap", Some("team-a"), "c")).is_some());
    }

    #[test]
    fn a_policy_names_the_rule_an_object_breaks() {
        let b = with(Some(policy()), None);
        assert_eq!(
            violation(&b, &obj("", "ConfigMap", Some("team-a"), "c")),
            None
        );
        assert_eq!(
            violation(&b, &obj("apps", "Deployment", Some("team-a-dev"), "d")),
            None
        );
        assert_eq!(
            violation(&b, &obj("", "ConfigMap", Some("kube-system"), "c")).as_deref(),
            Some(
                "policy team-a: namespace kube-system matches none of namespaces [team-a, team-a-*]"
            )
        );
        assert_eq!(
            violation(&b, &obj("", "Secret", Some("team-a"), "s")).as_deref(),
            Some(
                r#"policy team-a: namespaced_kinds.deny {group: "", kind: Secret} matches Secret"#
            )
        );
        assert_eq!(
            violation(
                &b,
                &obj("rbac.authorization.k8s.io", "ClusterRole", None, "r")
            ),
            None
        );
        assert_eq!(
            violation(
                &b,
                &obj("rbac.authorization.k8s.io", "ClusterRoleBinding", None, "r")
            )
            .as_deref(),
            Some(
                r#"policy team-a: cluster_kinds.deny {group: "*", kind: ClusterRoleBinding} matches ClusterRoleBinding.rbac.authorization.k8s.io"#
            )
        );
        assert_eq!(
            violation(&b, &obj("", "Namespace", None, "n")).as_deref(),
            Some("policy team-a: Namespace matches nothing in cluster_kinds.allow")
        );
        let mut none = policy();
        none.cluster_kinds = KindRules::default();
        assert_eq!(
            violation(&with(Some(none), None), &obj("", "Namespace", None, "n")).as_deref(),
            Some("policy team-a: Namespace is cluster-scoped and cluster_kinds.allow is empty")
        );
        let mut only = policy();
        only.namespaced_kinds.allow = vec![pattern("apps", "*")];
        assert_eq!(
            violation(
                &with(Some(only), None),
                &obj("", "ConfigMap", Some("team-a"), "c")
            )
            .as_deref(),
            Some("policy team-a: ConfigMap matches nothing in namespaced_kinds.allow")
        );
    }

    fn create(object: ObjectRef) -> Action {
        Action::Create {
            object,
            manifest: crate::model::Manifest::new(serde_json::json!({})),
            digest: Digest::ZERO,
            reason: ApplyReason::New,
        }
    }

    fn plan() -> Plan {
        Plan {
            actions: vec![
                create(obj("", "ConfigMap", Some("team-a"), "ok")),
                create(obj(
                    "rbac.authorization.k8s.io",
                    "ClusterRoleBinding",
                    None,
                    "no",
                )),
                Action::Prune {
                    object: obj("", "ConfigMap", Some("team-a"), "old"),
                },
                Action::Prune {
                    object: obj("", "ConfigMap", Some("elsewhere"), "old"),
                },
            ],
            rejected: Vec::new(),
        }
    }

    #[test]
    fn skip_object_refuses_only_what_is_outside_and_keeps_its_prunes() {
        let mut p = plan();
        let reasons = confine(&mut p, &with(Some(policy()), None));
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(matches!(p.actions[0], Action::Create { .. }));
        assert!(matches!(
            &p.actions[1],
            Action::Refuse { reason: RefuseReason::OutsideBoundary { rule }, .. }
                if rule.contains("cluster_kinds.deny")
        ));
        assert!(matches!(p.actions[2], Action::Prune { .. }));
        assert!(matches!(
            &p.actions[3],
            Action::PruneSkipped { reason: PruneSkipReason::OutsideBoundary { rule }, .. }
                if rule.contains("namespace elsewhere")
        ));
    }

    #[test]
    fn fail_app_refuses_every_write_of_the_app() {
        let mut pol = policy();
        pol.on_violation = OnViolation::FailApp;
        let mut p = plan();
        confine(&mut p, &with(Some(pol), None));
        assert!(matches!(
            &p.actions[0],
            Action::Refuse { reason: RefuseReason::OutsideBoundary { rule }, .. }
                if rule.contains("fail_app") && rule.contains("ClusterRoleBinding.rbac.authorization.k8s.io/no")
        ));
        assert!(matches!(p.actions[1], Action::Refuse { .. }));
        assert!(matches!(p.actions[2], Action::PruneSkipped { .. }));
        assert!(matches!(p.actions[3], Action::PruneSkipped { .. }));
    }

    #[test]
    fn a_plan_inside_the_boundary_is_left_alone() {
        let mut p = plan();
        p.actions.truncate(1);
        let before = p.actions.clone();
        let mut pol = policy();
        pol.on_violation = OnViolation::FailApp;
        assert!(confine(&mut p, &with(Some(pol), Some("team-a"))).is_empty());
        assert_eq!(p.actions, before);
    }
}
