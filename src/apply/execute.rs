//! Owns running a plan in stages ([`execute`]): what is recorded without a request (refusals,
//! unchanged objects, skipped prunes), CRDs applied and waited for, Namespaces, the rest
//! (minus what depends on a CRD or Namespace that failed), then prunes one stage at a time.
//! Which action goes where is decided by pure functions; each stage is one function.

use super::{
    ApplyOptions, Catalog, ChangeSet, FailureCause, ObjectOutcome, Outcome, SkipReason, apply_all,
    crd_kind, execute_orphan, execute_prune, is_apply, manifest_of, object_stage, report, skipped,
    wait_established,
};
use crate::plan::{Action, GroupKind, ObjectRef, Plan, Stage};
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Outcomes by the index of their action in the plan (the change set is in plan order).
type Outcomes = BTreeMap<usize, ObjectOutcome>;

/// Executes a plan: applies by stage, waits for CRDs, prunes; one outcome per object.
pub async fn execute(catalog: &Catalog, plan: &Plan, options: &ApplyOptions) -> ChangeSet {
    let started = Instant::now();
    let mut outcomes = Outcomes::new();
    for (i, outcome) in refusals(plan) {
        report(options, &outcome);
        outcomes.insert(i, outcome);
    }
    outcomes.extend(unchanged(plan));
    let not_ready = apply_crds(catalog, plan, options, &mut outcomes).await;
    wait_for_new_kinds(catalog, plan, &not_ready, options).await;
    let failed_namespaces = apply_namespaces(catalog, plan, options, &mut outcomes).await;
    let (skips, work) = resource_work(plan, &not_ready, &failed_namespaces);
    for (i, outcome) in skips {
        report(options, &outcome);
        outcomes.insert(i, outcome);
    }
    outcomes.extend(apply_all(catalog, plan, work, options).await);
    let (skips, groups) = prune_work(plan);
    for (i, outcome) in skips {
        report(options, &outcome);
        outcomes.insert(i, outcome);
    }
    for members in groups {
        outcomes.extend(prune_all(catalog, plan, members, options).await);
    }
    ChangeSet {
        outcomes: outcomes.into_values().collect(),
        duration: started.elapsed(),
    }
}

/// The plan's actions of `stage` that apply (by index).
fn applies_of(plan: &Plan, stage: Stage) -> Vec<usize> {
    (0..plan.actions.len())
        .filter(|&i| plan.actions[i].stage() == stage && is_apply(&plan.actions[i]))
        .collect()
}

/// Refused objects: nothing is sent; each is a failure with its reason.
pub(super) fn refusals(plan: &Plan) -> Vec<(usize, ObjectOutcome)> {
    let mut out = Vec::new();
    for (i, action) in plan.actions.iter().enumerate() {
        if let Action::Refuse {
            object,
            digest,
            reason,
        } = action
        {
            let outcome = ObjectOutcome {
                object: object.clone(),
                outcome: Outcome::Failed {
                    error: reason.describe(object),
                    cause: FailureCause::Refused {
                        reason: reason.clone(),
                    },
                },
                digest: Some(*digest),
                reason: None,
                resource_version: None,
                uid: None,
            };
            out.push((i, outcome));
        }
    }
    out
}

/// Unchanged objects: recorded, never sent (and not reported as progress).
pub(super) fn unchanged(plan: &Plan) -> Vec<(usize, ObjectOutcome)> {
    let mut out = Vec::new();
    for (i, action) in plan.actions.iter().enumerate() {
        if let Action::Unchanged { object, digest } = action {
            let outcome = ObjectOutcome {
                object: object.clone(),
                outcome: Outcome::Unchanged,
                digest: Some(*digest),
                reason: None,
                resource_version: None,
                uid: None,
            };
            out.push((i, outcome));
        }
    }
    out
}

/// Stage 1: CRDs, then wait until each applied one is Established. Returns the kinds whose CRD
/// is not ready, with the CRD's name (their custom resources are skipped).
async fn apply_crds(
    catalog: &Catalog,
    plan: &Plan,
    options: &ApplyOptions,
    outcomes: &mut Outcomes,
) -> BTreeMap<GroupKind, String> {
    let crds = applies_of(plan, Stage::Crds);
    // Reported only once established (or not): a CRD that never becomes Established failed.
    let quiet = ApplyOptions {
        progress: None,
        ..options.clone()
    };
    outcomes.extend(apply_all(catalog, plan, crds.clone(), &quiet).await);
    let mut not_ready: BTreeMap<GroupKind, String> = BTreeMap::new();
    let (applied, failed): (Vec<usize>, Vec<usize>) = crds
        .iter()
        .partition(|i| outcomes.get(i).is_some_and(|o| !o.is_failure()));
    for i in failed {
        // An older version of the CRD may still serve the kind; only without one are its
        // custom resources bound to fail.
        let action = &plan.actions[i];
        if let Some(gk) = manifest_of(action).and_then(crd_kind)
            && catalog.resolve_kind(&gk).is_none()
        {
            not_ready.insert(gk, action.object().name.clone());
        }
    }
    let waits = stream::iter(applied)
        .map(|i| async move {
            let object = plan.actions[i].object();
            (
                i,
                wait_established(catalog, object, options.crd_timeout).await,
            )
        })
        .buffer_unordered(options.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    for (i, waited) in waits {
        let Err(error) = waited else {
            continue;
        };
        let action = &plan.actions[i];
        tracing::warn!(%error, "CRD not ready; its custom resources are skipped");
        if let Some(outcome) = outcomes.get_mut(&i) {
            // The apply itself succeeded, but a CRD that never becomes Established is a
            // failed sync of that object.
            outcome.outcome = Outcome::Failed {
                error: error.to_string(),
                cause: FailureCause::NotEstablished,
            };
        }
        if let Some(gk) = manifest_of(action).and_then(crd_kind) {
            not_ready.insert(gk, action.object().name.clone());
        }
    }
    for i in &crds {
        if let Some(outcome) = outcomes.get(i) {
            report(options, outcome);
        }
    }
    not_ready
}

/// Established is not yet served: the group appears in discovery a little later. Waits (up
/// to the CRD timeout) until the kinds of the resources to apply are served.
async fn wait_for_new_kinds(
    catalog: &Catalog,
    plan: &Plan,
    not_ready: &BTreeMap<GroupKind, String>,
    options: &ApplyOptions,
) {
    let new_kinds: Vec<ObjectRef> = plan
        .actions
        .iter()
        .filter(|a| is_apply(a) && a.stage() == Stage::Resources)
        .map(Action::object)
        .filter(|o| catalog.resolve(o).is_none() && !not_ready.contains_key(&o.group_kind()))
        .cloned()
        .collect();
    if new_kinds.is_empty() {
        return;
    }
    let unserved = catalog
        .wait_until_served(&new_kinds, options.crd_timeout)
        .await;
    for object in unserved {
        tracing::warn!(%object, "kind still not served after waiting");
    }
}

/// Stage 2: Namespaces. Returns the names of those that failed.
async fn apply_namespaces(
    catalog: &Catalog,
    plan: &Plan,
    options: &ApplyOptions,
    outcomes: &mut Outcomes,
) -> BTreeSet<String> {
    let namespaces = applies_of(plan, Stage::Namespaces);
    outcomes.extend(apply_all(catalog, plan, namespaces.clone(), options).await);
    namespaces
        .iter()
        .filter(|i| outcomes.get(i).is_some_and(ObjectOutcome::is_failure))
        .map(|&i| plan.actions[i].object().name.clone())
        .collect()
}

/// Stage 3: everything else, minus what depends on a CRD that is not ready or a Namespace
/// that failed (skipped with the reason, in plan order); returns those skips and the rest.
pub(super) fn resource_work(
    plan: &Plan,
    not_ready: &BTreeMap<GroupKind, String>,
    failed_namespaces: &BTreeSet<String>,
) -> (Vec<(usize, ObjectOutcome)>, Vec<usize>) {
    let mut skips = Vec::new();
    let mut work = Vec::new();
    for i in applies_of(plan, Stage::Resources) {
        let action = &plan.actions[i];
        let object = action.object();
        if let Some(crd) = not_ready.get(&object.group_kind()) {
            skips.push((
                i,
                skipped(action, SkipReason::CrdNotReady { crd: crd.clone() }),
            ));
        } else if let Some(ns) = object
            .namespace
            .as_ref()
            .filter(|ns| failed_namespaces.contains(*ns))
        {
            let reason = SkipReason::NamespaceNotApplied {
                namespace: ns.clone(),
            };
            skips.push((i, skipped(action, reason)));
        } else {
            work.push(i);
        }
    }
    (skips, work)
}

/// Stage 4: the prunes not done (skipped with their reason) and the prunes and orphans to do,
/// in the planner's order, grouped by consecutive apply stage (custom resources before their
/// CRDs, namespaced objects before their Namespace): one group runs at a time.
pub(super) fn prune_work(plan: &Plan) -> (Vec<(usize, ObjectOutcome)>, Vec<Vec<usize>>) {
    let mut skips = Vec::new();
    let mut groups: Vec<(Stage, Vec<usize>)> = Vec::new();
    for i in (0..plan.actions.len()).filter(|&i| plan.actions[i].stage() == Stage::Prune) {
        match &plan.actions[i] {
            Action::PruneSkipped { object, reason } => {
                let outcome = ObjectOutcome {
                    object: object.clone(),
                    outcome: Outcome::Skipped {
                        reason: SkipReason::Prune(reason.clone()),
                    },
                    digest: None,
                    reason: None,
                    resource_version: None,
                    uid: None,
                };
                skips.push((i, outcome));
            }
            Action::Prune { object } | Action::Orphan { object } => {
                let stage = object_stage(object);
                match groups.last_mut() {
                    Some((s, members)) if *s == stage => members.push(i),
                    _ => groups.push((stage, vec![i])),
                }
            }
            _ => {}
        }
    }
    (skips, groups.into_iter().map(|(_, m)| m).collect())
}

/// Runs one group of prunes and orphans concurrently.
async fn prune_all(
    catalog: &Catalog,
    plan: &Plan,
    members: Vec<usize>,
    options: &ApplyOptions,
) -> Vec<(usize, ObjectOutcome)> {
    stream::iter(members)
        .map(|i| async move {
            let outcome = match &plan.actions[i] {
                Action::Orphan { object } => execute_orphan(catalog, object, options).await,
                action => execute_prune(catalog, action.object(), options).await,
            };
            (i, outcome)
        })
        .buffer_unordered(options.concurrency.max(1))
        .inspect(|(_, outcome)| report(options, outcome))
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Digest;
    use crate::plan::{ApplyReason, PruneSkipReason, RefuseReason};
    use crate::render::Manifest;

    fn obj(kind: &str, ns: Option<&str>, name: &str) -> ObjectRef {
        let api_version = match kind {
            "Widget" => "example.com/v1",
            "CustomResourceDefinition" => "apiextensions.k8s.io/v1",
            _ => "v1",
        };
        ObjectRef::from_api_version(api_version, kind, ns, name)
    }

    fn create(object: ObjectRef) -> Action {
        Action::Create {
            object,
            manifest: Manifest::new(serde_json::json!({})),
            digest: Digest([0; 32]),
            reason: ApplyReason::New,
        }
    }

    #[test]
    fn refusals_fail_with_their_reason_and_unchanged_objects_send_nothing() {
        let plan = Plan {
            actions: vec![
                Action::Unchanged {
                    object: obj("ConfigMap", Some("shop"), "same"),
                    digest: Digest([1; 32]),
                },
                Action::Refuse {
                    object: obj("ConfigMap", Some("shop"), "theirs"),
                    digest: Digest([2; 32]),
                    reason: RefuseReason::TakenOver {
                        owner: "other".into(),
                    },
                },
            ],
            rejected: vec![],
        };
        let refused = refusals(&plan);
        assert!(matches!(
            &refused[..],
            [(
                1,
                ObjectOutcome {
                    outcome: Outcome::Failed {
                        cause: FailureCause::Refused { .. },
                        ..
                    },
                    ..
                }
            )]
        ));
        let same = unchanged(&plan);
        assert!(matches!(
            &same[..],
            [(
                0,
                ObjectOutcome {
                    outcome: Outcome::Unchanged,
                    ..
                }
            )]
        ));
    }

    #[test]
    fn resources_of_a_crd_not_ready_or_in_a_failed_namespace_are_skipped() {
        let plan = Plan {
            actions: vec![
                create(obj("Widget", Some("shop"), "w")),
                create(obj("ConfigMap", Some("broken"), "c")),
                create(obj("ConfigMap", Some("shop"), "ok")),
            ],
            rejected: vec![],
        };
        let not_ready: BTreeMap<GroupKind, String> = [(
            GroupKind::new("example.com", "Widget"),
            "widgets.example.com".into(),
        )]
        .into();
        let failed: BTreeSet<String> = ["broken".to_string()].into();
        let (skips, work) = resource_work(&plan, &not_ready, &failed);
        assert_eq!(work, vec![2]);
        assert!(matches!(
            &skips[..],
            [
                (
                    0,
                    ObjectOutcome {
                        outcome: Outcome::Skipped {
                            reason: SkipReason::CrdNotReady { .. }
                        },
                        ..
                    }
                ),
                (
                    1,
                    ObjectOutcome {
                        outcome: Outcome::Skipped {
                            reason: SkipReason::NamespaceNotApplied { .. }
                        },
                        ..
                    }
                ),
            ]
        ));
    }

    #[test]
    fn prunes_run_one_stage_at_a_time_in_the_planners_order() {
        let plan = Plan {
            actions: vec![
                Action::Prune {
                    object: obj("Widget", Some("shop"), "w"),
                },
                Action::Orphan {
                    object: obj("ConfigMap", Some("shop"), "adopted"),
                },
                Action::PruneSkipped {
                    object: obj("ConfigMap", Some("shop"), "kept"),
                    reason: PruneSkipReason::PruningDisabled,
                },
                Action::Prune {
                    object: obj("CustomResourceDefinition", None, "widgets.example.com"),
                },
                Action::Prune {
                    object: obj("Namespace", None, "shop"),
                },
            ],
            rejected: vec![],
        };
        let (skips, groups) = prune_work(&plan);
        assert_eq!(groups, vec![vec![0, 1], vec![3], vec![4]]);
        assert!(matches!(
            &skips[..],
            [(
                2,
                ObjectOutcome {
                    outcome: Outcome::Skipped {
                        reason: SkipReason::Prune(_)
                    },
                    ..
                }
            )]
        ));
    }
}
