use super::*;
use crate::apply::FieldConflict;
use crate::plan::{DriftedField, FieldOwner, ObjectRef};
use serde_json::{Value, json};

fn deploy() -> ObjectRef {
    ObjectRef::from_api_version("apps/v1", "Deployment", Some("ns"), "web")
}

fn outcome(outcome: Outcome) -> ObjectOutcome {
    ObjectOutcome {
        object: deploy(),
        outcome,
        digest: Some(Digest([0xab; 32])),
        reason: None,
        resource_version: None,
        uid: None,
    }
}

#[test]
fn a_recorded_reference_is_the_model_reference_and_no_uid_yet() {
    let e = event::ObjectRef::new(deploy());
    assert_eq!(e.uid, None);
    assert_eq!(e.identity(), "apps/Deployment/ns/web");
    assert_eq!(e.object, deploy());
}

#[test]
fn a_drift_names_each_field_both_values_and_the_managers_that_own_them() {
    let drift = Drift::Modified(vec![
        DriftedField {
            change: FieldChange {
                pointer: "/spec/replicas".into(),
                kind: ChangeKind::Changed,
                before: Some(json!(2)),
                after: Some(json!(5)),
            },
            owners: vec![FieldOwner {
                manager: "kubectl".into(),
                operation: "Update".into(),
                time: Some("2026-11-27T10:00:00Z".into()),
            }],
        },
        DriftedField {
            change: FieldChange {
                pointer: "/metadata/labels/tier".into(),
                kind: ChangeKind::Removed,
                before: Some(json!("web")),
                after: None,
            },
            owners: vec![FieldOwner {
                manager: "kubectl".into(),
                operation: "Update".into(),
                time: Some("2026-11-27T10:05:00Z".into()),
            }],
        },
    ]);
    let draft = drift_detected("shop", &deploy(), &drift);
    assert_eq!(draft.app.as_deref(), Some("shop"));
    let Event::DriftDetected(e) = draft.event else {
        panic!("not a DriftDetected: {:?}", draft.event)
    };
    assert_eq!(e.object.name, "web");
    assert_eq!(
        e.diffs,
        vec![
            FieldDiff {
                path: "/spec/replicas".into(),
                expected: Some("2".into()),
                actual: Some("5".into()),
            },
            FieldDiff {
                path: "/metadata/labels/tier".into(),
                expected: Some("\"web\"".into()),
                actual: None,
            },
        ]
    );
    assert_eq!(
        e.managers.len(),
        1,
        "one entry per manager: {:?}",
        e.managers
    );
    assert_eq!(e.managers[0].manager, "kubectl");
    assert_eq!(
        e.managers[0].fields,
        vec!["/spec/replicas", "/metadata/labels/tier"]
    );
    assert_eq!(
        e.managers[0].time.unwrap().to_rfc3339(),
        "2026-11-27T10:05:00+00:00",
        "the latest write time of the manager"
    );
    assert_eq!(
        drift_fields(&drift),
        vec!["/spec/replicas", "/metadata/labels/tier"]
    );
}

#[test]
fn a_deleted_object_is_a_drift_of_the_whole_object() {
    let Event::DriftDetected(e) = drift_detected("a", &deploy(), &Drift::Deleted).event else {
        panic!()
    };
    assert_eq!(e.diffs.len(), 1);
    assert_eq!(e.diffs[0].path, "");
    assert_eq!(e.diffs[0].actual, None);
    assert_eq!(drift_signature(&Drift::Deleted), "deleted");
}

#[test]
fn drift_signatures_differ_when_the_live_value_differs() {
    let with = |after: i64| {
        Drift::Modified(vec![DriftedField {
            change: FieldChange {
                pointer: "/spec/replicas".into(),
                kind: ChangeKind::Changed,
                before: Some(json!(1)),
                after: Some(json!(after)),
            },
            owners: vec![],
        }])
    };
    assert_eq!(drift_signature(&with(3)), drift_signature(&with(3)));
    assert_ne!(drift_signature(&with(3)), drift_signature(&with(4)));
}

#[test]
fn each_outcome_becomes_its_event_and_unchanged_records_nothing() {
    let blob = Digest::of(b"x");
    let created = outcome_draft("a", "r1", &outcome(Outcome::Created), Some(blob)).unwrap();
    let Event::ObjectApplied(e) = created.event else {
        panic!()
    };
    assert_eq!(e.action, event::ApplyAction::Created);
    assert_eq!(e.digest, blob);
    assert_eq!(e.revision, "r1");

    let configured = outcome(Outcome::Configured {
        changed: vec![FieldChange {
            pointer: "/spec/replicas".into(),
            kind: ChangeKind::Changed,
            before: Some(json!(1)),
            after: Some(json!(2)),
        }],
    });
    let Event::ObjectApplied(e) = outcome_draft("a", "r1", &configured, None).unwrap().event else {
        panic!()
    };
    assert_eq!(e.action, event::ApplyAction::Configured);
    assert_eq!(e.changed_fields, vec!["/spec/replicas"]);
    assert_eq!(
        e.digest.to_hex(),
        "ab".repeat(32),
        "falls back to the render digest"
    );

    assert!(outcome_draft("a", "r1", &outcome(Outcome::Unchanged), None).is_none());

    let Event::ObjectPruned(e) = outcome_draft("a", "r1", &outcome(Outcome::Pruned), None)
        .unwrap()
        .event
    else {
        panic!()
    };
    assert_eq!(e.object.name, "web");

    let failed = outcome(Outcome::Failed {
        error: "Apply failed with 1 conflict".into(),
        cause: FailureCause::Conflict {
            conflicts: vec![FieldConflict {
                manager: "kubectl-edit".into(),
                field: ".spec.replicas".into(),
                message: "conflict".into(),
            }],
        },
    });
    let Event::ApplyFailed(e) = outcome_draft("a", "r1", &failed, None).unwrap().event else {
        panic!()
    };
    assert!(
        e.error.contains("Deployment") && e.error.contains(".spec.replicas owned by kubectl-edit"),
        "{}",
        e.error
    );

    let skipped = outcome(Outcome::Skipped {
        reason: SkipReason::Prune(PruneSkipReason::RenderFailed),
    });
    let Event::PruneSkipped(e) = outcome_draft("a", "r1", &skipped, None).unwrap().event else {
        panic!()
    };
    assert!(e.reason.contains("rendering failed"), "{}", e.reason);

    let crd = outcome(Outcome::Skipped {
        reason: SkipReason::CrdNotReady {
            crd: "widgets.example.com".into(),
        },
    });
    let Event::ApplyFailed(e) = outcome_draft("a", "r1", &crd, None).unwrap().event else {
        panic!()
    };
    assert!(e.error.contains("widgets.example.com"), "{}", e.error);
}

#[test]
fn rejected_objects_are_apply_failures_that_say_why() {
    let rejected = plan::Rejected {
        object: ObjectRef::from_api_version("example.com/v1", "Widget", Some("ns"), "w"),
        reason: RejectReason::UnknownKind,
    };
    let Event::ApplyFailed(e) = rejected_draft("a", "r1", &rejected).event else {
        panic!()
    };
    assert!(e.error.contains("not served"), "{}", e.error);
    assert!(e.error.contains("example.com/v1/Widget"), "{}", e.error);
}

#[test]
fn counts_and_outcome_follow_the_outcomes_and_health() {
    let outcomes = vec![
        outcome(Outcome::Created),
        outcome(Outcome::Unchanged),
        outcome(Outcome::Pruned),
        outcome(Outcome::Skipped {
            reason: SkipReason::Prune(PruneSkipReason::Annotation),
        }),
    ];
    let c = counts(&outcomes, 0);
    assert_eq!(
        c,
        event::SyncCounts {
            created: 1,
            configured: 0,
            unchanged: 1,
            pruned: 1,
            prune_skipped: 1,
            failed: 0,
        }
    );
    // Whatever the health reached: applied is not healthy.
    assert_eq!(sync_outcome(&c), event::SyncOutcome::Succeeded);
    let c = counts(&outcomes, 1);
    assert_eq!(c.failed, 1);
    assert_eq!(sync_outcome(&c), event::SyncOutcome::PartiallyFailed);
    let only_failed = counts(&[], 2);
    assert_eq!(sync_outcome(&only_failed), event::SyncOutcome::Failed);
}

#[test]
fn app_health_is_the_worst_of_its_objects() {
    use event::Health as H;
    assert_eq!(aggregate(&[]), H::Healthy);
    assert_eq!(aggregate(&[H::Healthy, H::Progressing]), H::Progressing);
    assert_eq!(aggregate(&[H::Missing, H::Progressing]), H::Missing);
    assert_eq!(
        aggregate(&[H::Degraded, H::Missing, H::Healthy]),
        H::Degraded
    );
    assert_eq!(aggregate(&[H::Unknown, H::Healthy]), H::Unknown);
}

#[test]
fn live_observations_map_to_recorded_health() {
    assert_eq!(observed_health(None).0, event::Health::Unknown);
    assert_eq!(
        observed_health(Some(&plan::Observation::Absent)).0,
        event::Health::Missing
    );
    let live = plan::LiveObject {
        object: ObjectRef::from_api_version("v1", "ConfigMap", Some("ns"), "c"),
        manifest: json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        managed_fields: vec![],
    };
    assert_eq!(
        observed_health(Some(&plan::Observation::Present(live))).0,
        event::Health::Healthy
    );
}

#[test]
fn a_secret_drift_says_which_key_changed_and_never_the_values() {
    let field = |kind: ChangeKind, key: &str| DriftedField {
        change: FieldChange {
            pointer: format!("/data/{key}"),
            kind,
            before: None,
            after: None,
        },
        owners: vec![],
    };
    let drift = Drift::Modified(vec![
        field(ChangeKind::Changed, "password"),
        field(ChangeKind::Removed, "token"),
    ]);
    let secret = ObjectRef::from_api_version("v1", "Secret", Some("ns"), "creds");
    let Event::DriftDetected(e) = drift_detected("a", &secret, &drift).event else {
        panic!()
    };
    assert_eq!(
        e.diffs,
        vec![
            FieldDiff {
                path: "/data/password".into(),
                expected: Some(REDACTED.into()),
                actual: Some(REDACTED.into()),
            },
            FieldDiff {
                path: "/data/token".into(),
                expected: Some(REDACTED.into()),
                actual: None,
            },
        ]
    );
}

#[test]
fn an_unhealthy_app_says_which_objects_are_not_ready_and_why() {
    use event::Health as H;
    let obj = |name: &str| plan::ObjectRef {
        group: "apps".into(),
        version: "v1".into(),
        kind: "Deployment".into(),
        namespace: Some("shop".into()),
        name: name.into(),
    };
    let healthy = vec![(obj("a"), H::Healthy, "ready".to_string())];
    assert_eq!(unready_message(&healthy), None);
    let mut readings = healthy.clone();
    readings.push((obj("b"), H::Progressing, "0 of 1 replicas available".into()));
    let m = unready_message(&readings).unwrap();
    assert!(m.starts_with("1 of 2 objects not healthy: "), "{m}");
    assert!(m.contains("Progressing: 0 of 1 replicas available"), "{m}");
    assert!(m.contains("b"), "{m}");
    for i in 0..7 {
        readings.push((obj(&format!("c{i}")), H::Degraded, String::new()));
    }
    let m = unready_message(&readings).unwrap();
    assert!(m.starts_with("8 of 9 objects not healthy: "), "{m}");
    assert!(m.ends_with("and 3 more"), "{m}");
}

fn drifted(pointer: &str, before: Value, after: Value) -> DriftedField {
    DriftedField {
        change: FieldChange {
            pointer: pointer.into(),
            kind: ChangeKind::Changed,
            before: Some(before),
            after: Some(after),
        },
        owners: vec![],
    }
}

fn configure(reason: plan::ApplyReason, changed: &[&str]) -> plan::Action {
    plan::Action::Configure {
        object: deploy(),
        manifest: crate::render::Manifest::new(json!({})),
        digest: Digest::ZERO,
        changed: changed
            .iter()
            .map(|p| FieldChange {
                pointer: p.to_string(),
                kind: ChangeKind::Changed,
                before: Some(json!(1)),
                after: Some(json!(2)),
            })
            .collect(),
        reason,
    }
}

const IMAGE: &str = "/spec/template/spec/containers/0/image";

/// Issue 15, observation 3: a commit changes the image while a by-hand `kubectl set image` on it
/// is found in the same pass. The apply writes the new commit's image: the drift is superseded,
/// not put back; the other drifted field is put back.
#[test]
fn a_drifted_field_the_new_revision_sets_is_superseded_not_put_back() {
    let drift = Drift::Modified(vec![
        drifted(IMAGE, json!("api:1"), json!("api:hand")),
        drifted("/spec/replicas", json!(1), json!(3)),
    ]);
    let apply = configure(
        plan::ApplyReason::DesiredChanged,
        &[IMAGE, "/metadata/labels"],
    );
    assert_eq!(
        split_drift(&drift, &apply),
        (vec!["/spec/replicas".to_string()], vec![IMAGE.to_string()])
    );
    let drafts = drift_ended("shop", "rev2", &deploy(), &drift, &apply);
    match drafts
        .iter()
        .map(|d| &d.event)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [Event::DriftSuperseded(s), Event::DriftCorrected(c)] => {
            assert_eq!(
                (s.revision.as_str(), s.fields.clone()),
                ("rev2", vec![IMAGE.to_string()])
            );
            assert_eq!(c.fields, vec!["/spec/replicas".to_string()]);
            assert_eq!(s.object, event::ObjectRef::new(deploy()));
        }
        other => panic!("{other:?}"),
    }
    // Every drifted field superseded: no DriftCorrected at all.
    let only_image = Drift::Modified(vec![drifted(IMAGE, json!("api:1"), json!("api:hand"))]);
    let drafts = drift_ended("shop", "rev2", &deploy(), &only_image, &apply);
    assert!(matches!(
        drafts
            .iter()
            .map(|d| &d.event)
            .collect::<Vec<_>>()
            .as_slice(),
        [Event::DriftSuperseded(_)]
    ));
}

#[test]
fn coverage_either_way_supersedes_a_drift_and_siblings_do_not() {
    // A list replaced whole by the new revision covers a drifted item in it; a drifted map the
    // revision changed a key of holds a new value too.
    let drift = Drift::Modified(vec![
        drifted(
            "/spec/template/spec/containers/0/args/1",
            json!("a"),
            json!("b"),
        ),
        drifted("/metadata/labels", json!({"a": "1"}), json!({})),
        drifted("/metadata/annotations/x", json!("1"), json!("2")),
        drifted("/spec/replicas2", json!(1), json!(2)),
    ]);
    let apply = configure(
        plan::ApplyReason::DesiredChanged,
        &[
            "/spec/template/spec/containers/0/args",
            "/metadata/labels/tier",
            "/metadata/annotations/y",
            "/spec/replicas",
        ],
    );
    let (put_back, superseded) = split_drift(&drift, &apply);
    assert_eq!(
        superseded,
        vec![
            "/spec/template/spec/containers/0/args/1",
            "/metadata/labels"
        ]
    );
    assert_eq!(put_back, vec!["/metadata/annotations/x", "/spec/replicas2"]);
}

#[test]
fn a_pure_correction_and_a_re_creation_put_back_every_field() {
    let drift = Drift::Modified(vec![drifted(IMAGE, json!("api:1"), json!("api:hand"))]);
    // A drift correction's `changed` are the drifted fields themselves: still a put back.
    let apply = configure(plan::ApplyReason::DriftCorrection, &[IMAGE]);
    assert_eq!(
        split_drift(&drift, &apply),
        (vec![IMAGE.to_string()], vec![])
    );
    let drafts = drift_ended("shop", "rev1", &deploy(), &drift, &apply);
    assert!(matches!(
        drafts
            .iter()
            .map(|d| &d.event)
            .collect::<Vec<_>>()
            .as_slice(),
        [Event::DriftCorrected(_)]
    ));
    // Deleted by hand while a new revision came: the object is re-created (its existence put
    // back); the Created apply of the new revision credits its values.
    let create = plan::Action::Create {
        object: deploy(),
        manifest: crate::render::Manifest::new(json!({})),
        digest: Digest::ZERO,
        reason: plan::ApplyReason::DesiredChanged,
    };
    assert_eq!(
        split_drift(&Drift::Deleted, &create),
        (vec![String::new()], vec![])
    );
}

#[test]
fn an_adoption_is_recorded_as_adopted_and_a_release_as_orphaned() {
    let label = FieldChange {
        pointer: "/metadata/labels/reckon.dev~1app".into(),
        kind: ChangeKind::Added,
        before: None,
        after: Some(json!("a")),
    };
    let adopted = outcome_draft(
        "a",
        "r1",
        &outcome(Outcome::Adopted {
            changed: vec![label.clone()],
        }),
        None,
    )
    .unwrap()
    .event;
    let Event::ObjectApplied(e) = &adopted else {
        panic!("{adopted:?}")
    };
    assert_eq!(e.action, event::ApplyAction::Adopted);
    assert_eq!(e.changed_fields, vec![label.pointer.clone()]);
    assert!(adopted_from_outside(&adopted));
    // An object with no labels at all: the whole map was added.
    let unlabelled = outcome_draft(
        "a",
        "r1",
        &outcome(Outcome::Adopted {
            changed: vec![FieldChange {
                pointer: "/metadata/labels".into(),
                ..label.clone()
            }],
        }),
        None,
    )
    .unwrap()
    .event;
    assert!(adopted_from_outside(&unlabelled));
    // Counted with the configures: SyncCounts has no field for it.
    let c = counts(
        &[
            outcome(Outcome::Adopted { changed: vec![] }),
            outcome(Outcome::Orphaned),
        ],
        0,
    );
    assert_eq!((c.configured, c.pruned, c.created), (1, 1, 0));

    // Already labelled as the App's own (applied before its event was lost): not adopted from
    // outside, so pruning it is the App's call as for anything it created.
    let reclaimed = outcome_draft(
        "a",
        "r1",
        &outcome(Outcome::Adopted { changed: vec![] }),
        None,
    )
    .unwrap()
    .event;
    assert!(!adopted_from_outside(&reclaimed));
    let created = outcome_draft("a", "r1", &outcome(Outcome::Created), None)
        .unwrap()
        .event;
    assert!(!adopted_from_outside(&created));

    let Event::ObjectOrphaned(e) = outcome_draft("a", "r1", &outcome(Outcome::Orphaned), None)
        .unwrap()
        .event
    else {
        panic!()
    };
    assert_eq!(e.object.name, "web");
    assert!(e.reason.contains("prune.adopted"), "{}", e.reason);
}

#[test]
fn a_refusal_is_an_apply_failure_naming_the_owner() {
    let reason = plan::RefuseReason::Owned {
        owners: vec![plan::Owner::App("billing".into())],
    };
    let refused = outcome(Outcome::Failed {
        error: reason.describe(&deploy()),
        cause: FailureCause::Refused { reason },
    });
    let Event::ApplyFailed(e) = outcome_draft("a", "r1", &refused, None).unwrap().event else {
        panic!()
    };
    assert!(e.error.contains("refused"), "{}", e.error);
    assert!(e.error.contains("belongs to App billing"), "{}", e.error);
}
