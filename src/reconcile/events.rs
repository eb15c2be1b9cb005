//! Owns the translation of plans, apply outcomes and health into event drafts: pure functions,
//! so what a sync records is unit-tested without a cluster.

use crate::apply::{FailureCause, ObjectOutcome, Outcome, SkipReason};
use crate::event::{self, Digest, Draft, Event, FieldDiff, FieldManager};
use crate::health;
use crate::plan::{
    self, ChangeKind, Drift, FieldChange, PruneSkipReason, RefuseReason, RejectReason,
};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

fn json(value: &Option<serde_json::Value>) -> Option<String> {
    value.as_ref().map(|v| v.to_string())
}

/// What a Secret value is recorded as: the planner withholds both sides of a Secret's changes,
/// so the log says "key K changed" (or was added or removed) and never what it was.
pub const REDACTED: &str = "\"<redacted>\"";

fn field_diff(change: &FieldChange) -> FieldDiff {
    let redacted = change.before.is_none() && change.after.is_none();
    let side = |value: &Option<serde_json::Value>, absent: bool| {
        if absent {
            None
        } else if redacted {
            Some(REDACTED.to_string())
        } else {
            json(value)
        }
    };
    FieldDiff {
        path: change.pointer.clone(),
        expected: side(&change.before, change.kind == ChangeKind::Added),
        actual: side(&change.after, change.kind == ChangeKind::Removed),
    }
}

fn parse_time(text: &Option<String>) -> Option<DateTime<Utc>> {
    text.as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The DriftDetected event for a planner drift record: every drifted field with both values,
/// and the field managers other than reckon that own them, with when they wrote.
pub fn drift_detected(app: &str, object: &plan::ObjectRef, drift: &Drift) -> Draft {
    let (diffs, managers) = match drift {
        Drift::Deleted => (
            vec![FieldDiff {
                path: String::new(),
                expected: Some("(object)".into()),
                actual: None,
            }],
            Vec::new(),
        ),
        Drift::Modified(fields) => {
            let diffs = fields.iter().map(|f| field_diff(&f.change)).collect();
            // One entry per manager (and operation), listing the fields it owns.
            let mut managers: BTreeMap<(String, String), FieldManager> = BTreeMap::new();
            for field in fields {
                for owner in &field.owners {
                    let entry = managers
                        .entry((owner.manager.clone(), owner.operation.clone()))
                        .or_insert_with(|| FieldManager {
                            manager: owner.manager.clone(),
                            operation: owner.operation.clone(),
                            fields: Vec::new(),
                            time: parse_time(&owner.time),
                        });
                    if !entry.fields.contains(&field.change.pointer) {
                        entry.fields.push(field.change.pointer.clone());
                    }
                    entry.time = entry.time.max(parse_time(&owner.time));
                }
            }
            (diffs, managers.into_values().collect())
        }
    };
    Draft::new(
        Some(app),
        Event::DriftDetected(event::DriftDetected {
            object: event::ObjectRef::new(object.clone()),
            diffs,
            managers,
        }),
    )
}

/// A stable description of a drift, so the agent records a drift it keeps seeing (detect mode)
/// once, not at every pass.
pub fn drift_signature(drift: &Drift) -> String {
    match drift {
        Drift::Deleted => "deleted".into(),
        Drift::Modified(fields) => fields
            .iter()
            .map(|f| {
                format!(
                    "{}={}",
                    f.change.pointer,
                    json(&f.change.after).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(";"),
    }
}

/// The drifted field pointers of a drift (`""`, the whole object, for a deletion).
pub fn drift_fields(drift: &Drift) -> Vec<String> {
    match drift {
        Drift::Deleted => vec![String::new()],
        Drift::Modified(fields) => fields.iter().map(|f| f.change.pointer.clone()).collect(),
    }
}

/// How the drifted fields of an object this pass re-applied ended, given the plan's apply of
/// it: `(put_back, superseded)`. A field the apply sets to a value of a new revision (the
/// `changed` of a `DesiredChanged` configure touches it) was not put back: the new revision
/// wrote it, so blame owes the value to that apply. The rest were re-written with the value
/// last applied. A deleted object re-created is put back whatever the revision: what drifted
/// is its existence, and the `ObjectApplied` (Created) of the new revision already credits
/// every value to the apply that wrote it.
pub fn split_drift(drift: &Drift, apply: &plan::Action) -> (Vec<String>, Vec<String>) {
    let fields = drift_fields(drift);
    let changed = match (drift, apply) {
        (
            Drift::Modified(_),
            plan::Action::Configure {
                changed,
                reason: plan::ApplyReason::DesiredChanged,
                ..
            },
        ) => changed,
        _ => return (fields, Vec::new()),
    };
    let touches = |f: &str| {
        changed
            .iter()
            .any(|c| plan::covers(&c.pointer, f) || plan::covers(f, &c.pointer))
    };
    fields.into_iter().partition(|f| !touches(f))
}

/// The events that end the drifts of an object re-applied under `revision` ([`split_drift`]):
/// a `DriftSuperseded` for the fields the new revision set, a `DriftCorrected` for the fields
/// put back, each only when it has fields.
pub fn drift_ended(
    app: &str,
    revision: &str,
    object: &plan::ObjectRef,
    drift: &Drift,
    apply: &plan::Action,
) -> Vec<Draft> {
    let (put_back, superseded) = split_drift(drift, apply);
    let mut out = Vec::new();
    if !superseded.is_empty() {
        out.push(Draft::new(
            Some(app),
            Event::DriftSuperseded(event::DriftSuperseded {
                revision: revision.to_string(),
                object: event::ObjectRef::new(object.clone()),
                fields: superseded,
            }),
        ));
    }
    if !put_back.is_empty() {
        out.push(Draft::new(
            Some(app),
            Event::DriftCorrected(event::DriftCorrected {
                revision: revision.to_string(),
                object: event::ObjectRef::new(object.clone()),
                fields: put_back,
            }),
        ));
    }
    out
}

fn prune_reason(reason: &PruneSkipReason) -> String {
    match reason {
        PruneSkipReason::PruningDisabled => "pruning is disabled for this App".into(),
        PruneSkipReason::EmptyDesiredSet => {
            "the desired set is empty and prune.allow_empty is off".into()
        }
        PruneSkipReason::Annotation => "annotated reckon.dev/prune: disabled".into(),
        PruneSkipReason::OwnedByOtherApp { owner } => {
            format!("the live object now belongs to App {owner}")
        }
        PruneSkipReason::RenderFailed => "rendering failed: the desired set is unknown".into(),
        PruneSkipReason::OutsideBoundary { rule } => format!("not pruned: {rule}"),
        PruneSkipReason::NamespaceNotEmpty { residents, more } => {
            let more = if *more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!(
                "the Namespace holds objects this App does not prune ({}{more}); deleting it \
                 would delete them (prune.non_empty_namespaces: true allows it)",
                residents.join(", ")
            )
        }
    }
}

fn cause_text(cause: &FailureCause) -> String {
    match cause {
        FailureCause::Conflict { conflicts } => {
            let fields: Vec<String> = conflicts
                .iter()
                .map(|c| format!("{} owned by {}", c.field, c.manager))
                .collect();
            format!("conflict: {}", fields.join(", "))
        }
        FailureCause::Invalid { causes } if !causes.is_empty() => {
            format!("invalid: {}", causes.join("; "))
        }
        FailureCause::Invalid { .. } => "invalid".into(),
        FailureCause::Forbidden => "forbidden".into(),
        FailureCause::NotFound => "not found".into(),
        FailureCause::UnknownKind => "kind not served".into(),
        FailureCause::NotEstablished => "CRD not established".into(),
        FailureCause::Api { code, reason } => format!("API error {code} {reason}"),
        FailureCause::Transport => "transport".into(),
        FailureCause::Refused {
            reason: RefuseReason::OutsideBoundary { .. },
        } => "refused: outside what this App may write".into(),
        FailureCause::Refused { .. } => "refused: not this App's to write".into(),
    }
}

/// Whether an apply event began an object's life in the App by taking it over from outside:
/// an adoption that had to put the App's label on (an object already labelled as this App's
/// was the App's own, applied before its event was lost, and is not "adopted" for pruning).
pub fn adopted_from_outside(event: &Event) -> bool {
    let label = format!(
        "/metadata/labels/{}",
        plan::escape(crate::render::normalize::APP_LABEL)
    );
    // An object without labels at all gets the whole map (`/metadata/labels`).
    matches!(event, Event::ObjectApplied(a)
        if a.action == event::ApplyAction::Adopted
            && a.changed_fields.iter().any(|c| plan::covers(c, &label)))
}

/// The event for one outcome of work, `None` for an unchanged object (counted, not recorded).
/// `blob` is the store address of the applied object's storable manifest.
pub fn outcome_draft(
    app: &str,
    revision: &str,
    outcome: &ObjectOutcome,
    blob: Option<Digest>,
) -> Option<Draft> {
    let object = event::ObjectRef::with_uid(outcome.object.clone(), outcome.uid.clone());
    let event = match &outcome.outcome {
        Outcome::Unchanged => return None,
        Outcome::Created | Outcome::Configured { .. } | Outcome::Adopted { .. } => {
            let (action, changed_fields) = match &outcome.outcome {
                Outcome::Configured { changed } => (
                    event::ApplyAction::Configured,
                    changed.iter().map(|c| c.pointer.clone()).collect(),
                ),
                Outcome::Adopted { changed } => (
                    event::ApplyAction::Adopted,
                    changed.iter().map(|c| c.pointer.clone()).collect(),
                ),
                _ => (event::ApplyAction::Created, Vec::new()),
            };
            Event::ObjectApplied(event::ObjectApplied {
                revision: revision.to_string(),
                object,
                action,
                changed_fields,
                digest: blob.or(outcome.digest).unwrap_or(Digest::ZERO),
            })
        }
        Outcome::Failed { error, cause } | Outcome::PruneFailed { error, cause } => {
            let verb = if matches!(outcome.outcome, Outcome::PruneFailed { .. }) {
                "prune"
            } else {
                "apply"
            };
            Event::ApplyFailed(event::ApplyFailed {
                revision: revision.to_string(),
                object,
                error: format!(
                    "{verb} of {}: {} ({error})",
                    outcome.object,
                    cause_text(cause)
                ),
            })
        }
        Outcome::Pruned => Event::ObjectPruned(event::ObjectPruned {
            revision: revision.to_string(),
            object,
        }),
        Outcome::Orphaned => Event::ObjectOrphaned(event::ObjectOrphaned {
            revision: revision.to_string(),
            object,
            reason: "adopted (it existed before this App took it over) and prune.adopted is \
                     off: released, its reckon.dev/app label removed, left in the cluster"
                .into(),
        }),
        Outcome::Skipped {
            reason: SkipReason::Prune(reason),
        } => Event::PruneSkipped(event::PruneSkipped {
            revision: revision.to_string(),
            object,
            reason: prune_reason(reason),
        }),
        Outcome::Skipped { reason } => Event::ApplyFailed(event::ApplyFailed {
            revision: revision.to_string(),
            object,
            error: match reason {
                SkipReason::CrdNotReady { crd } => {
                    format!("not applied: its CRD {crd} did not become established")
                }
                SkipReason::NamespaceNotApplied { namespace } => {
                    format!("not applied: its Namespace {namespace} failed to apply")
                }
                SkipReason::Prune(_) => unreachable!("matched above"),
            },
        }),
    };
    Some(Draft::new(Some(app), event))
}

/// ApplyFailed for a desired object the planner rejected (neither applied nor pruned).
pub fn rejected_draft(app: &str, revision: &str, rejected: &plan::Rejected) -> Draft {
    let error = match rejected.reason {
        RejectReason::UnknownKind => format!(
            "{}: kind {} is not served by the cluster and no CRD in this revision defines it",
            rejected.object,
            rejected.object.api_version() + "/" + &rejected.object.kind
        ),
        RejectReason::Duplicate => format!(
            "{}: defined twice once namespaces are defaulted",
            rejected.object
        ),
    };
    Draft::new(
        Some(app),
        Event::ApplyFailed(event::ApplyFailed {
            revision: revision.to_string(),
            object: event::ObjectRef::new(rejected.object.clone()),
            error,
        }),
    )
}

/// An App's aggregate health: the worst of its objects (Missing counts as Degraded-like),
/// Healthy for an App with no objects.
pub fn aggregate(objects: &[event::Health]) -> event::Health {
    use event::Health as H;
    let rank = |h: &H| match h {
        H::Healthy => 0,
        H::Unknown => 1,
        H::Progressing => 2,
        H::Missing => 3,
        H::Degraded => 4,
    };
    objects
        .iter()
        .copied()
        .max_by_key(rank)
        .unwrap_or(H::Healthy)
}

/// HealthChanged for one object (or the App when `object` is `None`).
pub fn health_changed(
    app: &str,
    object: Option<&plan::ObjectRef>,
    from: event::Health,
    to: event::Health,
    message: Option<String>,
) -> Draft {
    Draft::new(
        Some(app),
        Event::HealthChanged(event::HealthChanged {
            object: object.map(|o| event::ObjectRef::new(o.clone())),
            from,
            to,
            message,
        }),
    )
}

/// Objects named in an App's health message at most (the rest are counted).
const UNREADY_NAMED: usize = 5;

/// Why an App is not healthy: how many of its objects are not, and the first few with their
/// reason (`None` when every object is healthy).
pub fn unready_message(readings: &[(plan::ObjectRef, event::Health, String)]) -> Option<String> {
    let unready: Vec<&(plan::ObjectRef, event::Health, String)> = readings
        .iter()
        .filter(|(_, h, _)| *h != event::Health::Healthy)
        .collect();
    if unready.is_empty() {
        return None;
    }
    let mut named: Vec<String> = unready
        .iter()
        .take(UNREADY_NAMED)
        .map(|(o, h, why)| {
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            };
            format!("{o} {h:?}{why}")
        })
        .collect();
    if unready.len() > UNREADY_NAMED {
        named.push(format!("and {} more", unready.len() - UNREADY_NAMED));
    }
    Some(format!(
        "{} of {} objects not healthy: {}",
        unready.len(),
        readings.len(),
        named.join("; ")
    ))
}

/// The counts of a sync, from its outcomes (rejected objects count as failed).
pub fn counts(outcomes: &[ObjectOutcome], rejected: usize) -> event::SyncCounts {
    let mut c = event::SyncCounts {
        failed: rejected as u32,
        ..Default::default()
    };
    for o in outcomes {
        match o.outcome {
            Outcome::Created => c.created += 1,
            // SyncCounts has no field for them (its layout is stored): an adoption writes to
            // an existing object, as a configure does; the ObjectApplied event says Adopted.
            Outcome::Configured { .. } | Outcome::Adopted { .. } => c.configured += 1,
            Outcome::Unchanged => c.unchanged += 1,
            // Released rather than deleted; counted with the prunes it replaces.
            Outcome::Pruned | Outcome::Orphaned => c.pruned += 1,
            Outcome::Skipped {
                reason: SkipReason::Prune(_),
            } => c.prune_skipped += 1,
            Outcome::Failed { .. } | Outcome::PruneFailed { .. } | Outcome::Skipped { .. } => {
                c.failed += 1
            }
        }
    }
    c
}

/// A sync's outcome: Failed when nothing that was tried worked (or the objects did not become
/// healthy in time), PartiallyFailed when some objects failed, Succeeded otherwise.
pub fn sync_outcome(counts: &event::SyncCounts) -> event::SyncOutcome {
    // Applied is not healthy: the outcome says what the API server accepted, and health is
    // recorded apart (HealthChanged). An unready App's revision is still the applied one.
    let done = counts.created + counts.configured + counts.pruned;
    if counts.failed > 0 && done == 0 {
        event::SyncOutcome::Failed
    } else if counts.failed > 0 {
        event::SyncOutcome::PartiallyFailed
    } else {
        event::SyncOutcome::Succeeded
    }
}

/// Health of a live object as recorded: its readiness, `Missing` when it is absent.
pub fn observed_health(observation: Option<&plan::Observation>) -> (event::Health, String) {
    match observation {
        Some(plan::Observation::Present(live)) => {
            let h = health::assess(&live.manifest);
            (h.status.recorded(), h.message)
        }
        Some(plan::Observation::Absent) => (event::Health::Missing, "not found".into()),
        None => (event::Health::Unknown, "not observed yet".into()),
    }
}

#[cfg(test)]
mod tests;
