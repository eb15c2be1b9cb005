//! Owns deterministic example events: one of every kind, plus a realistic sync-shaped stream for
//! benchmarks, crash tests and the fixture generator.

use super::*;

pub fn object(group: &str, version: &str, kind: &str, ns: Option<&str>, name: &str) -> ObjectRef {
    ObjectRef::with_uid(
        crate::model::ObjectRef {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            namespace: ns.map(Into::into),
            name: name.into(),
        },
        Some(format!("uid-{name}")),
    )
}

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("valid")
}

pub fn sha(n: u64) -> String {
    format!("{:040x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

pub fn commit(n: u64, email: &str) -> CommitObserved {
    CommitObserved {
        sha: sha(n),
        parents: vec![sha(n.wrapping_sub(1))],
        ref_name: "refs/heads/main".into(),
        author: Person {
            name: "Alice".into(),
            email: email.into(),
            time: t(1_764_000_000 + n as i64),
            offset_seconds: 3600,
        },
        committer: Person {
            name: "Alice".into(),
            email: email.into(),
            time: t(1_764_000_000 + n as i64),
            offset_seconds: 3600,
        },
        message: format!("Scale web to {n} replicas"),
        signature: SignatureStatus::NotChecked,
        changed_paths: vec!["apps/web/deployment.yaml".into()],
    }
}

/// One event of every kind, in kind order, with every optional field exercised somewhere.
pub fn all_events() -> Vec<Event> {
    let dep = object("apps", "v1", "Deployment", Some("web"), "api");
    let ns = object("", "v1", "Namespace", None, "web");
    let mut c = commit(1, "alice@example.com");
    c.signature = SignatureStatus::Good {
        format: "ssh".into(),
        signer: "alice@example.com".into(),
        key: "SHA256:abc".into(),
    };
    c.committer.email = "bot@example.com".into();
    vec![
        Event::AgentStarted(AgentStarted {
            version: "0.1.0".into(),
            host: Some("node-1".into()),
            pid: 4242,
        }),
        Event::CommitObserved(c),
        Event::IntentRecorded(IntentRecorded {
            intent: IntentKind::Rollback,
            revision: Some(sha(1)),
            reason: Some("bad release".into()),
        }),
        Event::RenderSucceeded(RenderSucceeded {
            revision: sha(1),
            digest: Digest([0xab; 32]),
            object_count: 12,
        }),
        Event::RenderFailed(RenderFailed {
            revision: sha(2),
            error: "kustomize: missing resource".into(),
        }),
        Event::SyncStarted(SyncStarted {
            revision: sha(1),
            digest: Some(Digest([0xab; 32])),
        }),
        Event::SyncFinished(SyncFinished {
            revision: sha(1),
            outcome: SyncOutcome::PartiallyFailed,
            counts: SyncCounts {
                created: 1,
                configured: 2,
                unchanged: 3,
                pruned: 4,
                prune_skipped: 5,
                failed: 6,
            },
            duration_ms: 1234,
        }),
        Event::ObjectApplied(ObjectApplied {
            revision: sha(1),
            object: dep.clone(),
            action: ApplyAction::Configured,
            changed_fields: vec!["spec.replicas".into()],
            digest: Digest([0x11; 32]),
        }),
        Event::ApplyFailed(ApplyFailed {
            revision: sha(1),
            object: dep.clone(),
            error: "admission webhook denied".into(),
        }),
        Event::DriftDetected(DriftDetected {
            object: dep.clone(),
            diffs: vec![FieldDiff {
                path: "spec.replicas".into(),
                expected: Some("3".into()),
                actual: Some("5".into()),
            }],
            managers: vec![FieldManager {
                manager: "kubectl-edit".into(),
                operation: "Update".into(),
                fields: vec!["spec.replicas".into()],
                time: Some(t(1_764_000_100)),
            }],
        }),
        Event::DriftCorrected(DriftCorrected {
            revision: sha(1),
            object: dep.clone(),
            fields: vec!["spec.replicas".into()],
        }),
        Event::ObjectPruned(ObjectPruned {
            revision: sha(1),
            object: ns.clone(),
        }),
        Event::PruneSkipped(PruneSkipped {
            revision: sha(1),
            object: ns,
            reason: "annotation reckon.dev/prune=false".into(),
        }),
        Event::HealthChanged(HealthChanged {
            object: Some(dep.clone()),
            from: Health::Progressing,
            to: Health::Healthy,
            message: None,
        }),
        Event::AppSuspended(AppSuspended {
            reason: Some("maintenance".into()),
        }),
        Event::AppResumed(AppResumed { reason: None }),
        Event::StoreMigrated(StoreMigrated {
            from_schema: 1,
            to_schema: 2,
            step: "0002_kind_time_indexes".into(),
            backup: "/var/lib/reckon.backup-schema-1".into(),
        }),
        Event::SourceFetchFailed(SourceFetchFailed {
            url: "https://git.example.com/shop.git".into(),
            ref_name: "refs/heads/main".into(),
            error: "connection refused".into(),
            reason: "Unreachable".into(),
        }),
        Event::HistoryRewritten(HistoryRewritten {
            ref_name: "refs/heads/main".into(),
            old_head: sha(3),
            new_head: sha(4),
            merge_base: Some(sha(2)),
        }),
        Event::StoreGap(StoreGap {
            expected_seq: Some(100),
            found_seq: 97,
            reason: "log ends before HEAD".into(),
        }),
        Event::RetentionCompacted(RetentionCompacted {
            policy: "max-age=30d".into(),
            first_seq: 1,
            last_seq: 90,
            removed: 80,
            removed_bytes: 16000,
            by_kind: vec![("ObjectApplied".into(), 80)],
            first_time: Some(t(1_764_000_000)),
            last_time: None,
            tombstones_digest: Digest([0x22; 32]),
            base_state: vec![1, 2, 3],
        }),
        Event::SourceCacheRecovered(SourceCacheRecovered {
            url: "https://git.example.com/shop.git".into(),
            reason: "pack file truncated".into(),
        }),
        Event::RevisionBlocked(RevisionBlocked {
            revision: sha(5),
            reason: "head is unsigned".into(),
            kept: Some(sha(4)),
        }),
        Event::DriftAttributed(DriftAttributed {
            object: dep.clone(),
            drift_seq: Some(41),
            writers: vec![AuditWriter {
                username: "alice".into(),
                uid: Some("1001".into()),
                groups: vec!["system:authenticated".into(), "web-team".into()],
                impersonated: None,
                user_agent: Some("kubectl/v1.32.4 (linux/amd64) kubernetes/59526cd".into()),
                source_ips: vec!["10.0.0.7".into()],
                audit_id: "0f5ba1a6-bd3b-4e0a-9b33-1d0e7c1c2a11".into(),
                verb: "update".into(),
                subresource: Some("scale".into()),
                time: t(1_764_000_099),
                fields: vec!["spec.replicas".into()],
                evidence: "request-body".into(),
            }],
            unexplained: vec![],
        }),
        Event::DriftAttributed(DriftAttributed {
            object: dep.clone(),
            drift_seq: None,
            writers: vec![],
            unexplained: vec!["".into()],
        }),
        Event::DriftSuperseded(DriftSuperseded {
            revision: sha(6),
            object: dep.clone(),
            fields: vec!["spec.template.spec.containers.0.image".into()],
        }),
        Event::ApplyBlocked(ApplyBlocked {
            revision: sha(6),
            cause: "NamespaceMissing".into(),
            error: "namespaces \"shop\" not found".into(),
            objects: vec![
                dep.clone(),
                object("", "v1", "Service", Some("shop"), "web"),
            ],
        }),
        Event::ObjectApplied(ObjectApplied {
            revision: sha(7),
            object: object("", "v1", "ConfigMap", Some("shop"), "settings"),
            action: ApplyAction::Adopted,
            changed_fields: vec!["/metadata/labels/reckon.dev~1app".into()],
            digest: Digest([0x12; 32]),
        }),
        Event::ObjectOrphaned(ObjectOrphaned {
            revision: sha(8),
            object: object("", "v1", "ConfigMap", Some("shop"), "settings"),
            reason: "adopted, and prune.adopted is off".into(),
        }),
        Event::AppRenamed(AppRenamed {
            from: "web".into(),
            anchor_seq: Some(41),
            reason: "the App object's status names web's last event".into(),
            base_state: vec![4, 0, 0, 1],
        }),
        Event::AppReset(AppReset {
            previous_seq: 41,
            reason: "a new App object of the same namespace and name".into(),
        }),
        Event::ChartObserved(ChartObserved {
            revision: format!("{:064x}", 0xc4a27u64),
            repository: "https://charts.example.com/stable".into(),
            name: "web".into(),
            version: "1.2.0".into(),
            app_version: Some("2.0".into()),
            digest: format!("sha256:{:064x}", 0xc4a27u64),
            verified: true,
            created: Some("2026-12-01T10:00:00Z".into()),
            signature: SignatureStatus::Good {
                format: "cosign".into(),
                signer: "cosign".into(),
                key: format!("sha256:{:064x}", 0xc05u64),
            },
        }),
    ]
}

/// A realistic stream: per App, a commit, a render, a sync with `objects` applies, a drift now and
/// then. `i` is the event number; the same `i` always yields the same draft.
pub fn stream(i: u64, apps: u64, objects: u64) -> Draft {
    let app_n = i % apps;
    let app = format!("app-{app_n}");
    let round = i / apps;
    let cycle = objects + 4;
    let step = round % cycle;
    let rev = round / cycle;
    let revision = sha(rev * apps + app_n);
    let event = match step {
        0 => {
            let mut c = commit(rev * apps + app_n, &format!("dev{}@example.com", rev % 50));
            c.message = format!("Update {app} (change {rev})");
            Event::CommitObserved(c)
        }
        1 => Event::RenderSucceeded(RenderSucceeded {
            revision,
            digest: Digest::of(format!("{app}/{rev}").as_bytes()),
            object_count: objects as u32,
        }),
        2 => Event::SyncStarted(SyncStarted {
            revision,
            digest: Some(Digest::of(format!("{app}/{rev}").as_bytes())),
        }),
        s if s == cycle - 1 => Event::SyncFinished(SyncFinished {
            revision,
            outcome: SyncOutcome::Succeeded,
            counts: SyncCounts {
                configured: objects as u32,
                ..Default::default()
            },
            duration_ms: 800 + rev % 400,
        }),
        s => {
            let k = s - 3;
            let obj = object(
                "apps",
                "v1",
                "Deployment",
                Some(&format!("ns-{app_n}")),
                &format!("svc-{k}"),
            );
            if (rev + k).is_multiple_of(17) {
                Event::DriftDetected(DriftDetected {
                    object: obj,
                    diffs: vec![FieldDiff {
                        path: "spec.replicas".into(),
                        expected: Some("3".into()),
                        actual: Some("5".into()),
                    }],
                    managers: vec![FieldManager {
                        manager: "kubectl-edit".into(),
                        operation: "Update".into(),
                        fields: vec!["spec.replicas".into()],
                        time: Some(t(1_764_000_000 + rev as i64)),
                    }],
                })
            } else {
                Event::ObjectApplied(ObjectApplied {
                    revision,
                    object: obj,
                    action: if rev == 0 {
                        ApplyAction::Created
                    } else {
                        ApplyAction::Configured
                    },
                    changed_fields: vec!["spec.template.spec.containers[0].image".into()],
                    digest: Digest::of(format!("{app}/{rev}/{k}").as_bytes()),
                })
            }
        }
    };
    let d = Draft::new(Some(&app), event);
    if step == 0 { d.by("reckon") } else { d }
}

/// The canonical manifests behind the `RenderSucceeded` that [`stream`] yields at `i`, if it
/// yields one there: writers store it as a blob so that `verify` finds every referenced blob.
pub fn stream_blob(i: u64, apps: u64, objects: u64) -> Option<Vec<u8>> {
    let app_n = i % apps;
    let round = i / apps;
    let cycle = objects + 4;
    (round % cycle == 1).then(|| format!("app-{app_n}/{}", round / cycle).into_bytes())
}
