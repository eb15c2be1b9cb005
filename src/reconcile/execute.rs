//! Owns the pass's execute-and-record stage: a recorded sync runs the plan and records each
//! outcome as the executor reports it (or, for a retry of the attempt that failed last, only
//! once it is known to end differently), then the corrections of the drifts it re-applied.
//! What is recorded is decided by pure functions here and in [`super::events`].

use super::planning::{DriftRecord, DriftTriage, Prepared, plan_stored};
use super::{PassOptions, ReconcileError, Reconciler, by_agent, events, retry};
use crate::apply::{self, ApplyOptions, ChangeSet, ObjectOutcome, Outcome};
use crate::event::{self, Digest, Draft, Event};
use crate::plan::{Action, DesiredObject, ObjectKey, Plan, Rejected};
use crate::render;
use std::collections::{HashMap, HashSet};
use tokio::sync::mpsc;

/// Whether an outcome wrote the object (so it is applied, and its stored form recorded).
pub(super) fn wrote(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Created | Outcome::Configured { .. } | Outcome::Adopted { .. }
    )
}

/// The records that open a sync: SyncStarted, the drifts not recorded before, the objects
/// the planner rejected.
pub(super) fn sync_opening(
    app: &str,
    revision: &str,
    digest: Digest,
    new_drifts: &[DriftRecord],
    rejected: &[Rejected],
) -> Vec<Draft> {
    let mut drafts = vec![Draft::new(
        Some(app),
        Event::SyncStarted(event::SyncStarted {
            revision: revision.to_string(),
            digest: Some(digest),
        }),
    )];
    for (object, drift, _) in new_drifts {
        drafts.push(events::drift_detected(app, object, drift));
    }
    for rejected in rejected {
        drafts.push(events::rejected_draft(app, revision, rejected));
    }
    drafts
}

/// Whether this sync retries the attempt that failed last (the same revision and rendered
/// set, and no new drift to report): then it is recorded only when it ends differently.
pub(super) fn is_retry(
    last_failure: Option<&retry::FailureSignature>,
    revision: &str,
    digest: Digest,
    triage: &DriftTriage,
) -> bool {
    last_failure.is_some_and(|f| f.revision == revision && f.digest == digest)
        && triage.new.is_empty()
}

/// Failed attempts in a row after a sync whose failures are `signature` (`None`: none).
pub(super) fn failed_attempts_after(
    signature: Option<&retry::FailureSignature>,
    before: u32,
) -> u32 {
    if signature.is_some() { before + 1 } else { 0 }
}

/// The events ending the drifts this sync corrected: for each drift the plan re-applies whose
/// object was written, DriftCorrected and DriftSuperseded ([`events::drift_ended`]).
pub(super) fn drift_endings(
    app: &str,
    revision: &str,
    triage: &DriftTriage,
    plan: &Plan,
    outcomes: &[ObjectOutcome],
) -> Vec<Draft> {
    let mut drafts = Vec::new();
    for (object, drift, corrected) in triage.new.iter().chain(&triage.corrected) {
        if !corrected {
            continue;
        }
        let key = object.key();
        let ok = outcomes
            .iter()
            .any(|o| o.object.key() == key && wrote(&o.outcome));
        // Fields the new revision set are superseded, not put back (issue 15).
        let apply = plan.actions.iter().find(|a| {
            matches!(a, Action::Create { .. } | Action::Configure { .. }) && a.object().key() == key
        });
        if let (true, Some(apply)) = (ok, apply) {
            drafts.extend(events::drift_ended(app, revision, object, drift, apply));
        }
    }
    drafts
}

/// The events and blobs recording `outcomes`: an apply's stored form goes to the blob
/// store; failures that share one cause become one `ApplyBlocked`, the rest one event each.
pub(super) fn outcome_records(
    app: &str,
    stored: &HashMap<ObjectKey, &serde_json::Value>,
    revision: &str,
    outcomes: &[ObjectOutcome],
) -> (Vec<Vec<u8>>, Vec<Draft>) {
    let grouped = retry::group_failures(outcomes);
    let blocked: HashSet<usize> = grouped
        .blocked
        .iter()
        .flat_map(|(_, members)| members.iter().copied())
        .collect();
    let mut blobs = Vec::new();
    let mut drafts = Vec::new();
    for (i, outcome) in outcomes.iter().enumerate() {
        if blocked.contains(&i) {
            continue;
        }
        let mut address = None;
        if wrote(&outcome.outcome)
            && let Some(value) = stored.get(&outcome.object.key())
        {
            let bytes = render::canonical_json(value).into_bytes();
            let digest = Digest::of(&bytes);
            debug_assert_eq!(
                outcome.digest,
                Some(digest),
                "the stored form hashes to the render digest"
            );
            blobs.push(bytes);
            address = Some(digest);
        }
        drafts.extend(events::outcome_draft(app, revision, outcome, address));
    }
    for (cause, members) in &grouped.blocked {
        let members: Vec<&ObjectOutcome> = members.iter().map(|&i| &outcomes[i]).collect();
        drafts.push(Draft::new(
            Some(app),
            Event::ApplyBlocked(retry::blocked_event(revision, cause, &members)),
        ));
    }
    (blobs, drafts)
}

/// Which outcomes of a batch can be recorded now: those that may share a cause with later
/// ones are held until the last batch, so they are recorded together.
pub(super) fn releasable(
    batch: Vec<ObjectOutcome>,
    held: &mut Vec<ObjectOutcome>,
    last: bool,
) -> Vec<ObjectOutcome> {
    let (shared, mut ready): (Vec<ObjectOutcome>, Vec<ObjectOutcome>) = batch
        .into_iter()
        .partition(|o| retry::shared_cause(o).is_some());
    held.extend(shared);
    if last {
        ready.append(held);
    }
    ready
}

/// How a recorded sync's execution ended.
pub(super) struct Executed {
    pub changes: ChangeSet,
    /// Events appended.
    pub appended: usize,
    /// The sync failed exactly as the recorded attempt before it and recorded nothing.
    pub unrecorded_retry: bool,
}

impl Reconciler {
    /// Runs a recorded sync of `prepared`: its opening (with `render`, the rendered set's
    /// record if new), the plan's execution and each outcome, then the drifts' corrections.
    pub(super) async fn execute_and_record(
        &mut self,
        prepared: &Prepared,
        triage: &DriftTriage,
        render: (Vec<Vec<u8>>, Vec<Draft>),
        options: &PassOptions,
    ) -> Result<Executed, ReconcileError> {
        let (revision, digest) = (&prepared.rendered.revision, prepared.rendered.digest);
        let plan = &prepared.plan;
        let desired: &[DesiredObject] = &prepared.rendered.desired;
        let retrying = is_retry(self.memory.failure.as_ref(), revision, digest, triage);
        let (blobs, mut drafts) = render;
        drafts.extend(sync_opening(
            &self.app.name,
            revision,
            digest,
            &triage.new,
            &plan.rejected,
        ));
        let mut opening = Some((blobs, drafts));
        let mut appended = 0;
        if !retrying && let Some((blobs, drafts)) = opening.take() {
            appended += self.append(blobs, drafts).await?;
        }
        let (changes, n) = self
            .execute(plan, desired, revision, options, !retrying)
            .await?;
        appended += n;
        let signature = retry::signature(revision, digest, &changes.outcomes);
        if retrying
            && retry::repeats(
                self.memory.failure.as_ref(),
                signature.as_ref(),
                &changes.outcomes,
            )
        {
            self.memory.failed_attempts += 1;
            crate::metrics::METRICS.sync_retries.inc();
            tracing::info!(app = %self.app.name, %revision, attempts = self.memory.failed_attempts, "sync failed again for the same causes; not recorded again");
            return Ok(Executed {
                changes,
                appended,
                unrecorded_retry: true,
            });
        }
        if let Some((blobs, drafts)) = opening.take() {
            // A retry that ended differently: recorded now, in the order a first try is.
            appended += self.append(blobs, drafts).await?;
            let stored = plan_stored(plan, desired);
            let (blobs, drafts) =
                outcome_records(&self.app.name, &stored, revision, &changes.outcomes);
            appended += self.append(blobs, drafts).await?;
        }
        self.memory.failed_attempts =
            failed_attempts_after(signature.as_ref(), self.memory.failed_attempts);
        self.memory.failure = signature;
        // Every change is on the server now (the health wait can take much longer): the
        // moment "applied" is what `kubectl apply` returning corresponds to.
        tracing::info!(app = %self.app.name, %revision, objects = changes.outcomes.len(), "applied");
        let endings = drift_endings(&self.app.name, revision, triage, plan, &changes.outcomes);
        appended += self.append(vec![], endings).await?;
        Ok(Executed {
            changes,
            appended,
            unrecorded_retry: false,
        })
    }

    /// Runs the plan, recording each outcome as the executor reports it (`stream`), or only
    /// running it (a retry: the caller records the outcomes once it knows they are news).
    /// Failures that may share a cause with others are held until the end and recorded
    /// together ([`outcome_records`]).
    async fn execute(
        &mut self,
        plan: &Plan,
        desired: &[DesiredObject],
        revision: &str,
        options: &PassOptions,
        stream: bool,
    ) -> Result<(ChangeSet, usize), ReconcileError> {
        let stored = plan_stored(plan, desired);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let apply_options = ApplyOptions {
            progress: Some(tx),
            ..self.apply.clone()
        };
        let catalog = self.catalog.clone();
        let limits = self.limits.clone();
        // Held while requests are in flight, released when the executor returns: recording the
        // last outcomes waits for a flush, and other Apps need not wait for that.
        let mut permit = Some(limits.applies.acquire().await.expect("never closed"));
        let run = apply::execute(&catalog, plan, &apply_options);
        tokio::pin!(run);
        let mut appended = 0;
        let mut finished: Option<ChangeSet> = None;
        // Outcomes are queued to the store as they arrive and waited for at the end: waiting
        // for each flush here would stop polling the executor, holding the apply limit (and
        // the requests not yet started) for a flush that other Apps' applies need not wait for.
        let mut queued = Vec::new();
        let mut held: Vec<ObjectOutcome> = Vec::new();
        // Record outcomes while the executor runs; after it returns, drain what is left.
        loop {
            let mut batch: Vec<ObjectOutcome> = Vec::new();
            if finished.is_none() {
                tokio::select! {
                    done = &mut run => { finished = Some(done); drop(permit.take()); }
                    Some(first) = rx.recv() => { batch.push(first); }
                }
            }
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            if let Some(progress) = &options.progress {
                for outcome in &batch {
                    let _ = progress.send(outcome.clone());
                }
            }
            let last = finished.is_some() && rx.is_empty();
            let ready = releasable(batch, &mut held, last);
            if stream && !ready.is_empty() {
                let (blobs, drafts) = outcome_records(&self.app.name, &stored, revision, &ready);
                appended += drafts.len();
                queued.push(
                    self.store
                        .queue_with_blobs(blobs, by_agent(drafts))
                        .await
                        .map_err(|e| self.store_err(e))?,
                );
            }
            if last {
                for q in queued {
                    q.durable().await.map_err(|e| self.store_err(e))?;
                }
                let done = finished.take().expect("finished");
                return Ok((done, appended));
            }
        }
    }
}

#[cfg(test)]
// `&[x.clone()]` reads as "a desired set of one", as in the planner's tests.
#[allow(clippy::cloned_ref_to_slice_refs)]
mod tests {
    use super::*;
    use crate::apply::FailureCause;
    use crate::config::DriftMode;
    use crate::reconcile::fixtures::*;
    use crate::reconcile::planning::triage_drifts;

    fn outcome(d: &DesiredObject, outcome: Outcome) -> ObjectOutcome {
        ObjectOutcome {
            object: resolved(d),
            outcome,
            digest: Some(d.digest),
            reason: None,
            resource_version: None,
            uid: None,
        }
    }

    fn failed(d: &DesiredObject, cause: FailureCause) -> ObjectOutcome {
        outcome(
            d,
            Outcome::Failed {
                error: "no".into(),
                cause,
            },
        )
    }

    fn signature(revision: &str, digest: Digest) -> retry::FailureSignature {
        retry::FailureSignature {
            revision: revision.into(),
            digest,
            failures: Default::default(),
        }
    }

    #[test]
    fn a_sync_opens_with_sync_started_then_new_drifts_then_rejections() {
        let web = config_map("web", "1", true);
        let plan = plan_against_live(&web, "x", DriftMode::Correct);
        let triage = triage_drifts(&plan, &HashMap::new());
        let drafts = sync_opening(
            "shop",
            "abc",
            Digest::of(b"set"),
            &triage.new,
            &plan.rejected,
        );
        assert!(matches!(&drafts[0].event, Event::SyncStarted(s) if s.revision == "abc"));
        assert!(matches!(drafts[1].event, Event::DriftDetected(_)));
        assert_eq!(drafts.len(), 2);
    }

    #[test]
    fn only_the_same_revision_and_set_without_new_drift_is_a_retry() {
        let digest = Digest::of(b"set");
        let last = signature("abc", digest);
        let none = DriftTriage::default();
        assert!(!is_retry(None, "abc", digest, &none));
        assert!(is_retry(Some(&last), "abc", digest, &none));
        assert!(!is_retry(Some(&last), "def", digest, &none));
        assert!(!is_retry(Some(&last), "abc", Digest::of(b"other"), &none));
        let web = config_map("web", "1", true);
        let plan = plan_against_live(&web, "x", DriftMode::Correct);
        let drifted = triage_drifts(&plan, &HashMap::new());
        assert!(
            !is_retry(Some(&last), "abc", digest, &drifted),
            "a new drift is news"
        );
    }

    #[test]
    fn failed_attempts_count_up_while_failing_and_reset_on_success() {
        let last = signature("abc", Digest::of(b"set"));
        assert_eq!(failed_attempts_after(Some(&last), 0), 1);
        assert_eq!(failed_attempts_after(Some(&last), 4), 5);
        assert_eq!(failed_attempts_after(None, 4), 0);
    }

    #[test]
    fn a_corrected_drift_ends_only_when_its_object_was_written() {
        let web = config_map("web", "1", true);
        let plan = plan_against_live(&web, "x", DriftMode::Correct);
        let triage = triage_drifts(&plan, &HashMap::new());
        let written = [outcome(&web, Outcome::Configured { changed: vec![] })];
        let ended = drift_endings("shop", "abc", &triage, &plan, &written);
        assert_eq!(ended.len(), 1);
        assert!(matches!(ended[0].event, Event::DriftCorrected(_)));
        let failed = [failed(&web, FailureCause::Invalid { causes: vec![] })];
        assert!(drift_endings("shop", "abc", &triage, &plan, &failed).is_empty());
        // Detect mode: nothing is corrected, nothing ends.
        let detect = plan_against_live(&web, "x", DriftMode::Detect);
        let triage = triage_drifts(&detect, &HashMap::new());
        assert!(drift_endings("shop", "abc", &triage, &detect, &written).is_empty());
    }

    #[test]
    fn an_apply_is_recorded_with_its_stored_form_as_a_blob() {
        let web = config_map("web", "1", true);
        let plan = plan_of(&[web.clone()], &[], &observed(vec![]), DriftMode::Correct);
        let stored = plan_stored(&plan, std::slice::from_ref(&web));
        let (blobs, drafts) =
            outcome_records("shop", &stored, "abc", &[outcome(&web, Outcome::Created)]);
        assert_eq!(blobs.len(), 1);
        assert_eq!(Some(Digest::of(&blobs[0])), Some(web.digest));
        assert!(matches!(&drafts[..], [d] if matches!(d.event, Event::ObjectApplied(_))));
    }

    #[test]
    fn failures_sharing_a_cause_are_held_to_the_end_and_recorded_as_one() {
        let a = config_map("a", "1", true);
        let b = config_map("b", "1", true);
        let c = config_map("c", "1", true);
        let missing = || FailureCause::Forbidden;
        let mut held = Vec::new();
        let now = releasable(
            vec![failed(&a, missing()), outcome(&c, Outcome::Created)],
            &mut held,
            false,
        );
        assert_eq!(now.len(), 1, "the apply is recorded at once");
        assert_eq!(held.len(), 1);
        let last = releasable(vec![failed(&b, missing())], &mut held, true);
        assert_eq!(last.len(), 2);
        assert!(held.is_empty());
        let (blobs, drafts) = outcome_records("shop", &HashMap::new(), "abc", &last);
        assert!(blobs.is_empty());
        assert!(
            matches!(&drafts[..], [d] if matches!(d.event, Event::ApplyBlocked(_))),
            "{drafts:?}"
        );
    }
}
