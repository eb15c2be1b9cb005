//! Owns the pass's plan stage: the preparation a sync and a diff share (inventory, live view,
//! plan, Namespace guard), and the pure decisions on a plan: whether a sync is needed, which
//! drifts are news, which objects were refused, what the inventory keeps of each apply.

use super::desired::Rendered;
use super::{ReconcileError, Reconciler, events};
use crate::plan::{
    self, Action, DesiredObject, Drift, InventoryEntry, ObjectKey, ObjectRef, Observed, Plan,
};
use crate::store::projection::AppState;
use std::collections::HashMap;

/// What a sync and a diff plan from: the desired set, the inventory, the live state and the
/// plan made of them.
pub(super) struct Prepared {
    pub rendered: Rendered,
    pub inventory: Vec<InventoryEntry>,
    pub observed: Observed,
    pub plan: Plan,
}

impl Reconciler {
    /// Inventory, live view and plan for `rendered`.
    pub(super) async fn prepare(
        &mut self,
        state: &AppState,
        rendered: Rendered,
    ) -> Result<Prepared, ReconcileError> {
        let desired: &[DesiredObject] = &rendered.desired;
        let inventory = self.inventory(state, desired)?;
        let observed = self.live.observe(desired, &inventory).await?;
        let mut policy = plan::Policy::from_app(&self.app);
        policy.former_names = self.former_names()?;
        let lookup = |gk: &plan::GroupKind| self.catalog.scope(gk);
        let mut plan = plan::plan(desired, &inventory, &observed, &policy, &lookup);
        // Before anything that reads or writes for the plan: what is outside the App's
        // boundary is neither sent nor looked into.
        let refused = plan::boundary::confine(&mut plan, &self.app.boundary);
        if !refused.is_empty() {
            tracing::warn!(app = %self.app.name, ?refused, "objects outside what the App may write");
        }
        self.guard_namespaces(&mut plan, &policy).await;
        Ok(Prepared {
            rendered,
            inventory,
            observed,
            plan,
        })
    }

    /// The names the App's history was recorded under before ([`plan::Policy::former_names`]).
    fn former_names(&mut self) -> Result<Vec<String>, ReconcileError> {
        if let Some(names) = &self.memory.former_names {
            return Ok(names.clone());
        }
        use crate::store::{EventRead as _, Query, Selector};
        // Renames are rare in a whole store (one per App object at most, at an upgrade): the
        // kind index lists them all.
        let query = Query::new(Selector::Kind(crate::event::EventKind::AppRenamed)).limit(100_000);
        let page = self
            .store
            .reader()
            .query(&query)
            .map_err(|e| self.store_err(e))?;
        let names: Vec<String> = page
            .events
            .iter()
            .filter(|e| e.body.app.as_deref() == Some(self.app.name.as_str()))
            .filter_map(|e| match &e.body.event {
                crate::event::Event::AppRenamed(r) => Some(r.from.clone()),
                _ => None,
            })
            .collect();
        self.memory.former_names = Some(names.clone());
        Ok(names)
    }

    /// Keeps the plan's Namespace prunes whose Namespace holds objects the plan does not delete
    /// ([`plan::guard_namespaces`]); lists those Namespaces first (only when there are any).
    async fn guard_namespaces(&self, plan: &mut Plan, policy: &plan::Policy) {
        if policy.prune_non_empty_namespaces {
            return;
        }
        let mut residents = std::collections::BTreeMap::new();
        for namespace in plan::pruned_namespaces(plan) {
            match crate::apply::residents(&self.catalog, &namespace).await {
                Ok(list) => {
                    residents.insert(namespace, list);
                }
                Err(error) => {
                    tracing::warn!(app = %self.app.name, %namespace, %error, "listing a Namespace before pruning it; kept");
                }
            }
        }
        plan::guard_namespaces(plan, &residents, policy);
    }
}

/// Whether `revision` has not been synced to completion yet: not the revision last applied, or
/// never finished a sync.
pub(super) fn is_new_revision(state: &AppState, revision: &str) -> bool {
    state.applied_revision() != Some(revision)
        || state
            .revisions
            .get(revision)
            .is_none_or(|r| r.outcome.is_none())
}

/// Whether the plan writes anything. A refusal counts: it is a failure to report, so it goes
/// through the sync (recorded once, then retried without a record while it fails the same
/// way), never through "in sync".
pub(super) fn writes(plan: &Plan) -> bool {
    plan.actions.iter().any(|a| {
        matches!(
            a,
            Action::Create { .. }
                | Action::Configure { .. }
                | Action::Prune { .. }
                | Action::Orphan { .. }
                | Action::Refuse { .. }
        )
    })
}

/// Whether a pass runs a recorded sync (otherwise the App is in sync, or has drift only
/// detected): the plan writes, or the revision was never synced to completion.
pub(super) fn sync_needed(plan: &Plan, new_revision: bool) -> bool {
    writes(plan) || new_revision
}

/// Why each refused object was refused, as recorded in its `ApplyFailed`.
pub(super) fn refusals(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Refuse {
                reason: plan::RefuseReason::OutsideBoundary { .. },
                ..
            } => None,
            Action::Refuse { object, reason, .. } => Some(reason.describe(object)),
            _ => None,
        })
        .collect()
}

/// The plan's writes refused because they are outside the App's boundary (its App object's
/// namespace, its policy), described: applies and prunes.
pub(super) fn outside_boundary(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Refuse {
                object,
                reason: reason @ plan::RefuseReason::OutsideBoundary { .. },
                ..
            } => Some(reason.describe(object)),
            Action::PruneSkipped {
                object,
                reason: plan::PruneSkipReason::OutsideBoundary { rule },
            } => Some(format!("{object} is not pruned: {rule}")),
            _ => None,
        })
        .collect()
}

/// One drift of a plan: the object, how it drifted, and whether the plan corrects it.
pub(super) type DriftRecord = (ObjectRef, Drift, bool);

/// A plan's drifts sorted by what to record.
#[derive(Debug, Default, PartialEq)]
pub(super) struct DriftTriage {
    /// Not recorded before: each is recorded (DriftDetected), and ended if corrected.
    pub new: Vec<DriftRecord>,
    /// Recorded before and corrected by this plan (Git changed, or the mode became `correct`):
    /// it still ends with its correction.
    pub corrected: Vec<DriftRecord>,
    /// Drifts left uncorrected (detect mode) by object: next pass's `seen`.
    pub uncorrected: HashMap<ObjectKey, String>,
}

/// Sorts the plan's drifts against those recorded and not yet corrected (`seen`): a drift
/// seen before and still uncorrected is not recorded again.
pub(super) fn triage_drifts(plan: &Plan, seen: &HashMap<ObjectKey, String>) -> DriftTriage {
    let mut triage = DriftTriage::default();
    for action in &plan.actions {
        let Action::Drift {
            object,
            drift,
            corrected,
        } = action
        else {
            continue;
        };
        let signature = events::drift_signature(drift);
        let was_seen = seen.get(&object.key()) == Some(&signature);
        if !corrected {
            triage.uncorrected.insert(object.key(), signature);
        }
        if !was_seen {
            triage.new.push((object.clone(), drift.clone(), *corrected));
        } else if *corrected {
            triage.corrected.push((object.clone(), drift.clone(), true));
        }
    }
    triage
}

/// What the inventory keeps of each object the plan applies: its storable rendered form, whose
/// canonical JSON hashes to the render digest the planner compares with next time.
pub(super) fn plan_stored<'a>(
    plan: &Plan,
    desired: &'a [DesiredObject],
) -> HashMap<ObjectKey, &'a serde_json::Value> {
    let mut by_name: HashMap<(&str, &str, &str), Vec<&DesiredObject>> = HashMap::new();
    for d in desired {
        by_name
            .entry((&d.object.group, &d.object.kind, &d.object.name))
            .or_default()
            .push(d);
    }
    plan.actions
        .iter()
        .filter(|a| matches!(a, Action::Create { .. } | Action::Configure { .. }))
        .filter_map(|a| {
            let o = a.object();
            let candidates = by_name.get(&(o.group.as_str(), o.kind.as_str(), o.name.as_str()))?;
            // The planner defaulted the namespace of those that had none.
            let d = candidates
                .iter()
                .find(|d| d.object.namespace == o.namespace)
                .or_else(|| candidates.iter().find(|d| d.object.namespace.is_none()))?;
            Some((o.key(), d.comparable()))
        })
        .collect()
}

#[cfg(test)]
// `&[x.clone()]` reads as "a desired set of one", as in the planner's tests.
#[allow(clippy::cloned_ref_to_slice_refs)]
mod tests {
    use super::*;
    use crate::config::DriftMode;
    use crate::event::SyncOutcome;
    use crate::reconcile::desired::tests::revision_entry;
    use crate::reconcile::fixtures::*;

    #[test]
    fn an_unchanged_app_needs_no_sync() {
        let web = config_map("web", "1", true);
        let plan = plan_against_live(&web, "1", DriftMode::Correct);
        assert!(!writes(&plan));
        assert!(!sync_needed(&plan, false));
        assert!(
            sync_needed(&plan, true),
            "a revision never synced to completion is synced"
        );
    }

    #[test]
    fn a_git_change_needs_a_sync() {
        let old = config_map("web", "1", true);
        let new = config_map("web", "2", true);
        let plan = plan_of(
            &[new],
            &[applied(&old)],
            &observed(vec![live(&old, "1")]),
            DriftMode::Correct,
        );
        assert!(writes(&plan));
        assert!(sync_needed(&plan, false));
    }

    #[test]
    fn drift_only_detected_needs_no_sync_but_corrected_drift_does() {
        let web = config_map("web", "1", true);
        let live = observed(vec![live(&web, "changed by hand")]);
        let detect = plan_of(&[web.clone()], &[applied(&web)], &live, DriftMode::Detect);
        assert!(
            detect
                .actions
                .iter()
                .any(|a| matches!(a, Action::Drift { .. }))
        );
        assert!(!sync_needed(&detect, false));
        let correct = plan_of(&[web.clone()], &[applied(&web)], &live, DriftMode::Correct);
        assert!(sync_needed(&correct, false));
    }

    #[test]
    fn a_drift_is_new_once_and_kept_while_uncorrected() {
        let web = config_map("web", "1", true);
        let live = observed(vec![live(&web, "changed by hand")]);
        let plan = plan_of(&[web.clone()], &[applied(&web)], &live, DriftMode::Detect);
        let first = triage_drifts(&plan, &HashMap::new());
        assert_eq!(first.new.len(), 1);
        assert!(!first.new[0].2, "detect mode does not correct");
        assert!(first.corrected.is_empty());
        assert_eq!(first.uncorrected.len(), 1);
        // The next pass sees the same drift: nothing new, still remembered.
        let again = triage_drifts(&plan, &first.uncorrected);
        assert!(again.new.is_empty() && again.corrected.is_empty());
        assert_eq!(again.uncorrected, first.uncorrected);
    }

    #[test]
    fn a_drift_that_changes_is_new_again() {
        let web = config_map("web", "1", true);
        let plan = plan_against_live(&web, "a", DriftMode::Detect);
        let seen = triage_drifts(&plan, &HashMap::new()).uncorrected;
        let plan = plan_against_live(&web, "b", DriftMode::Detect);
        assert_eq!(triage_drifts(&plan, &seen).new.len(), 1);
    }

    #[test]
    fn a_seen_drift_corrected_now_ends_without_being_recorded_again() {
        let web = config_map("web", "1", true);
        let live = observed(vec![live(&web, "changed by hand")]);
        let detect = plan_of(&[web.clone()], &[applied(&web)], &live, DriftMode::Detect);
        let seen = triage_drifts(&detect, &HashMap::new()).uncorrected;
        let correct = plan_of(&[web.clone()], &[applied(&web)], &live, DriftMode::Correct);
        let triage = triage_drifts(&correct, &seen);
        assert!(triage.new.is_empty());
        assert_eq!(triage.corrected.len(), 1);
        assert!(
            triage.uncorrected.is_empty(),
            "corrected drifts are forgotten"
        );
    }

    #[test]
    fn a_revision_is_new_until_a_sync_of_it_finished() {
        let mut state = AppState::default();
        assert!(is_new_revision(&state, "abc"));
        state.revisions.insert("abc".into(), revision_entry(None));
        assert!(is_new_revision(&state, "abc"), "seen, never synced");
        let entry = state.revisions.get_mut("abc").unwrap();
        entry.outcome = Some(SyncOutcome::Succeeded);
        entry.applied_at = Some(chrono::Utc::now());
        assert!(!is_new_revision(&state, "abc"));
        assert_eq!(state.applied_revision(), Some("abc"));
        // A later revision applied since makes "abc" new again (a rollback to it).
        let mut later = revision_entry(None);
        later.outcome = Some(SyncOutcome::Succeeded);
        later.applied_at = Some(chrono::Utc::now() + chrono::Duration::seconds(1));
        state.revisions.insert("def".into(), later);
        assert_eq!(state.applied_revision(), Some("def"));
        assert!(is_new_revision(&state, "abc"));
    }

    #[test]
    fn the_inventory_keeps_each_applied_object_in_its_stored_form_under_its_resolved_key() {
        let web = config_map("web", "1", false);
        let other = config_map("other", "1", true);
        let plan = plan_of(
            &[web.clone(), other.clone()],
            &[applied(&other)],
            &observed(vec![live(&other, "1")]),
            DriftMode::Correct,
        );
        let desired = [web.clone(), other.clone()];
        let stored = plan_stored(&plan, &desired);
        assert_eq!(stored.len(), 1, "only what the plan applies: {stored:?}");
        assert_eq!(stored.get(&resolved(&web).key()), Some(&web.comparable()));
    }

    #[test]
    fn refusals_name_each_refused_object() {
        let web = config_map("web", "1", true);
        let mut theirs = live(&web, "1");
        theirs.manifest["metadata"]["labels"]["reckon.dev/app"] = serde_json::json!("other-app");
        let plan = plan_of(
            &[web.clone()],
            &[],
            &observed(vec![theirs]),
            DriftMode::Correct,
        );
        let refused = refusals(&plan);
        assert_eq!(refused.len(), 1, "{plan:?}");
        assert!(refused[0].contains("other-app"), "{refused:?}");
        assert!(writes(&plan), "a refusal goes through the sync");
    }
}
