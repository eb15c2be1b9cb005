//! Owns the decisions that keep a failing App's record proportional to what happened: which
//! apply failures share one cause (recorded as one `ApplyBlocked` naming the objects), whether a
//! retry failed exactly as the recorded attempt did (then it records nothing), and how long to
//! wait before the next retry. Pure: no I/O, no clock.

use crate::apply::{FailureCause, ObjectOutcome, Outcome, SkipReason};
use crate::event::{self, Digest};
use std::collections::BTreeSet;
use std::time::Duration;

/// A cause that stops many objects at once, and what it is about (a namespace, a kind).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SharedCause {
    /// `NamespaceMissing`, `Forbidden`, `Unreachable` or `ServerError`.
    pub code: &'static str,
    /// The namespace, `group/kind in namespace`, or status code the cause is about.
    pub scope: String,
}

/// The cause `outcome` shares with other objects of the same pass, if its failure is of the
/// kinds that never concern one object alone.
pub fn shared_cause(outcome: &ObjectOutcome) -> Option<SharedCause> {
    let Outcome::Failed { error, cause } = &outcome.outcome else {
        return None;
    };
    let object = &outcome.object;
    let ns = object.namespace.as_deref().unwrap_or("");
    let (code, scope) = match cause {
        // The API server answers 404 to a write into a namespace that does not exist.
        FailureCause::NotFound
            if !ns.is_empty() && error.contains(&format!("namespaces \"{ns}\" not found")) =>
        {
            ("NamespaceMissing", ns.to_string())
        }
        FailureCause::Forbidden => (
            "Forbidden",
            format!("{}/{} in {}", object.group, object.kind, ns),
        ),
        FailureCause::Transport => ("Unreachable", String::new()),
        FailureCause::Api { code, .. } if *code >= 500 => ("ServerError", code.to_string()),
        _ => return None,
    };
    Some(SharedCause { code, scope })
}

/// Failures of one pass sorted for recording: groups of two or more objects stopped by one
/// cause (each becomes one `ApplyBlocked`), and the indexes of the failures recorded one by one.
#[derive(Debug, Default, PartialEq)]
pub struct Grouped {
    pub blocked: Vec<(SharedCause, Vec<usize>)>,
    pub single: Vec<usize>,
}

/// Sorts the failed `outcomes` (indexes into it) by shared cause, in first-failure order.
pub fn group_failures(outcomes: &[ObjectOutcome]) -> Grouped {
    let mut groups: Vec<(SharedCause, Vec<usize>)> = Vec::new();
    let mut single = Vec::new();
    for (i, o) in outcomes.iter().enumerate() {
        match shared_cause(o) {
            Some(cause) => match groups.iter_mut().find(|(c, _)| *c == cause) {
                Some((_, members)) => members.push(i),
                None => groups.push((cause, vec![i])),
            },
            None if o.is_failure() => single.push(i),
            None => {}
        }
    }
    let mut blocked = Vec::new();
    for (cause, members) in groups {
        if members.len() >= 2 {
            blocked.push((cause, members));
        } else {
            single.extend(members);
        }
    }
    single.sort_unstable();
    Grouped { blocked, single }
}

/// The `ApplyBlocked` event for one group: the first member's message stands for all.
pub fn blocked_event(
    revision: &str,
    cause: &SharedCause,
    members: &[&ObjectOutcome],
) -> event::ApplyBlocked {
    let error = members
        .first()
        .and_then(|o| match &o.outcome {
            Outcome::Failed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .unwrap_or_default();
    event::ApplyBlocked {
        revision: revision.to_string(),
        cause: cause.code.to_string(),
        error,
        objects: members
            .iter()
            .map(|o| event::ObjectRef::new(o.object.clone()))
            .collect(),
    }
}

/// What identifies a failed attempt: the revision and rendered set it applied, and each failure
/// by object and cause. A retry with the same signature that wrote nothing is not recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureSignature {
    pub revision: String,
    pub digest: Digest,
    pub failures: BTreeSet<(String, String)>,
}

/// The signature of a pass's outcomes, `None` when nothing failed.
pub fn signature(
    revision: &str,
    digest: Digest,
    outcomes: &[ObjectOutcome],
) -> Option<FailureSignature> {
    let failures: BTreeSet<(String, String)> = outcomes
        .iter()
        .filter_map(|o| {
            let why = match (&o.outcome, shared_cause(o)) {
                (_, Some(c)) => format!("{} {}", c.code, c.scope),
                (Outcome::Failed { error, .. } | Outcome::PruneFailed { error, .. }, None) => {
                    error.clone()
                }
                (Outcome::Skipped { reason }, None) if !matches!(reason, SkipReason::Prune(_)) => {
                    format!("{reason:?}")
                }
                _ => return None,
            };
            Some((o.object.to_string(), why))
        })
        .collect();
    (!failures.is_empty()).then(|| FailureSignature {
        revision: revision.to_string(),
        digest,
        failures,
    })
}

/// Whether anything in `outcomes` changed the cluster.
pub fn wrote_anything(outcomes: &[ObjectOutcome]) -> bool {
    outcomes.iter().any(|o| {
        matches!(
            o.outcome,
            Outcome::Created
                | Outcome::Configured { .. }
                | Outcome::Adopted { .. }
                | Outcome::Pruned
                | Outcome::Orphaned
        )
    })
}

/// Whether a pass that ended with `outcomes` repeats the recorded failed attempt `previous`:
/// it wrote nothing and failed the same objects for the same causes. Such a pass records nothing.
pub fn repeats(
    previous: Option<&FailureSignature>,
    current: Option<&FailureSignature>,
    outcomes: &[ObjectOutcome],
) -> bool {
    matches!((previous, current), (Some(p), Some(c)) if p == c) && !wrote_anything(outcomes)
}

/// Shortest and longest wait before retrying a failed pass.
pub const BACKOFF_MIN: Duration = Duration::from_secs(5);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The wait before the retry after `failures` failed passes in a row (0: none; retry at the
/// next poll or watch change as usual): 5 s, 10 s, 20 s ... up to 5 minutes.
pub fn backoff(failures: u32) -> Option<Duration> {
    if failures == 0 {
        return None;
    }
    let doublings = (failures - 1).min(16);
    Some(BACKOFF_MIN.saturating_mul(1 << doublings).min(BACKOFF_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ObjectRef;

    fn obj(kind: &str, ns: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef {
            group: String::new(),
            version: "v1".into(),
            kind: kind.into(),
            namespace: ns.map(str::to_string),
            name: name.into(),
        }
    }

    fn outcome(object: ObjectRef, outcome: Outcome) -> ObjectOutcome {
        ObjectOutcome {
            object,
            outcome,
            digest: None,
            reason: None,
            resource_version: None,
            uid: None,
        }
    }

    fn failed(object: ObjectRef, cause: FailureCause, error: &str) -> ObjectOutcome {
        outcome(
            object,
            Outcome::Failed {
                error: error.into(),
                cause,
            },
        )
    }

    fn ns_missing(name: &str) -> ObjectOutcome {
        failed(
            obj("ConfigMap", Some("shop"), name),
            FailureCause::NotFound,
            "namespaces \"shop\" not found",
        )
    }

    #[test]
    fn a_missing_namespace_is_one_cause_for_every_object_in_it() {
        let outcomes = vec![
            ns_missing("a"),
            outcome(obj("Namespace", None, "other"), Outcome::Created),
            ns_missing("b"),
            failed(
                obj("ConfigMap", Some("shop"), "c"),
                FailureCause::Invalid {
                    causes: vec!["data: bad".into()],
                },
                "invalid",
            ),
            ns_missing("d"),
        ];
        let g = group_failures(&outcomes);
        assert_eq!(g.blocked.len(), 1);
        assert_eq!(g.blocked[0].0.code, "NamespaceMissing");
        assert_eq!(g.blocked[0].0.scope, "shop");
        assert_eq!(g.blocked[0].1, vec![0, 2, 4]);
        assert_eq!(g.single, vec![3]);
        let members: Vec<&ObjectOutcome> = g.blocked[0].1.iter().map(|&i| &outcomes[i]).collect();
        let e = blocked_event("abc", &g.blocked[0].0, &members);
        assert_eq!(e.objects.len(), 3);
        assert_eq!(e.cause, "NamespaceMissing");
        assert_eq!(e.error, "namespaces \"shop\" not found");
    }

    #[test]
    fn a_cause_met_by_one_object_only_is_recorded_for_that_object() {
        let outcomes = vec![
            ns_missing("a"),
            failed(
                obj("Secret", Some("shop"), "s"),
                FailureCause::Forbidden,
                "forbidden",
            ),
        ];
        let g = group_failures(&outcomes);
        assert!(g.blocked.is_empty());
        assert_eq!(g.single, vec![0, 1]);
    }

    #[test]
    fn a_404_that_is_not_about_the_namespace_is_no_shared_cause() {
        let o = failed(
            obj("ConfigMap", Some("shop"), "a"),
            FailureCause::NotFound,
            "the server could not find the requested resource",
        );
        assert_eq!(shared_cause(&o), None);
        let unreachable = failed(
            obj("ConfigMap", Some("shop"), "a"),
            FailureCause::Transport,
            "connection refused",
        );
        assert_eq!(shared_cause(&unreachable).unwrap().code, "Unreachable");
        let server = failed(
            obj("ConfigMap", Some("shop"), "a"),
            FailureCause::Api {
                code: 503,
                reason: "ServiceUnavailable".into(),
            },
            "unavailable",
        );
        assert_eq!(shared_cause(&server).unwrap().code, "ServerError");
        let conflict = failed(
            obj("ConfigMap", Some("shop"), "a"),
            FailureCause::Api {
                code: 409,
                reason: "Conflict".into(),
            },
            "conflict",
        );
        assert_eq!(shared_cause(&conflict), None);
    }

    #[test]
    fn a_retry_that_fails_the_same_way_and_writes_nothing_repeats() {
        let d = Digest([1; 32]);
        let first = vec![ns_missing("a"), ns_missing("b")];
        let previous = signature("r1", d, &first);
        assert!(previous.is_some());
        let again = vec![ns_missing("a"), ns_missing("b")];
        let current = signature("r1", d, &again);
        assert!(repeats(previous.as_ref(), current.as_ref(), &again));

        // Another cause, another object, another revision or set: recorded.
        let other = vec![
            ns_missing("a"),
            failed(
                obj("ConfigMap", Some("shop"), "b"),
                FailureCause::Forbidden,
                "forbidden",
            ),
        ];
        let current = signature("r1", d, &other);
        assert!(!repeats(previous.as_ref(), current.as_ref(), &other));
        let fewer = vec![ns_missing("a")];
        let current = signature("r1", d, &fewer);
        assert!(!repeats(previous.as_ref(), current.as_ref(), &fewer));
        let current = signature("r2", d, &again);
        assert!(!repeats(previous.as_ref(), current.as_ref(), &again));
        let current = signature("r1", Digest([2; 32]), &again);
        assert!(!repeats(previous.as_ref(), current.as_ref(), &again));

        // The same failures, but this time something was written: recorded.
        let mut wrote = again.clone();
        wrote.push(outcome(obj("Namespace", None, "x"), Outcome::Created));
        let current = signature("r1", d, &wrote);
        assert!(!repeats(previous.as_ref(), current.as_ref(), &wrote));

        // No previous failure, or none now: recorded (a success is always news).
        assert!(!repeats(None, current.as_ref(), &again));
        assert!(!repeats(previous.as_ref(), None, &[]));
    }

    #[test]
    fn backoff_doubles_from_five_seconds_to_five_minutes() {
        assert_eq!(backoff(0), None);
        assert_eq!(backoff(1), Some(Duration::from_secs(5)));
        assert_eq!(backoff(2), Some(Duration::from_secs(10)));
        assert_eq!(backoff(4), Some(Duration::from_secs(40)));
        assert_eq!(backoff(7), Some(Duration::from_secs(300)));
        assert_eq!(backoff(u32::MAX), Some(Duration::from_secs(300)));
    }
}
