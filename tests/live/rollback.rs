//! Rollback and resume against the real control plane and real Git repositories: a rollback
//! across a pruned object (it comes back; what did not exist then is pruned), new commits
//! observed but not applied while pinned, resume following Git again, `--steps`, bad targets,
//! a rollback after the commit was force-pushed away and the mirror lost (a Secret restored from
//! the sealed record), and a revision recorded before sealing (Git fallback, or a clear error).

use crate::support;

use reckon::config;
use reckon::event::{ApplyAction, Event, IntentKind};
use reckon::reconcile::rollback::{self, RollbackError, RollbackTarget};
use reckon::reconcile::{PassReport, PassStatus, Reconciler};
use reckon::render::SecretKey;
use reckon::store::EventRead;
use support::harness::pass_with as pass;
use support::sync::api_for;
use support::workload::config_map;

const KEY: [u8; 32] = [9; 32];

fn secret(password: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: {password}\n"
    )
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The shared harness (`tests/support/harness.rs`) with this file's conveniences.
struct Harness(support::harness::Harness);

impl std::ops::Deref for Harness {
    type Target = support::harness::Harness;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Harness {
    async fn new(prefix: &str) -> Self {
        Harness(support::harness::Harness::new(prefix).await)
    }

    fn app(&self, name: &str) -> config::App {
        self.0.app(name, "app", "")
    }

    /// A fresh reconciler (nothing in memory: what a restarted agent or `reckon sync` has).
    fn reconciler(&self, name: &str) -> Reconciler {
        self.0.reconciler(self.app(name), KEY)
    }

    /// Every event of `app` from sequence `from` on, with its actor.
    fn events_since(&self, app: &str, from: u64) -> Vec<(Option<String>, Event)> {
        self.envelopes(app, from)
            .into_iter()
            .map(|e| (e.body.actor, e.body.event))
            .collect()
    }

    fn next_seq(&self) -> u64 {
        self.store.reader().last_seq().unwrap() + 1
    }

    async fn color(&self, name: &str) -> Option<String> {
        let client = self.catalog.client().clone();
        let cms = api_for(
            &client,
            "v1",
            "ConfigMap",
            "configmaps",
            Some(&self.ns.name),
        );
        cms.get_opt(name)
            .await
            .unwrap()
            .map(|cm| cm.data["data"]["color"].as_str().unwrap().to_string())
    }

    async fn password(&self) -> Option<String> {
        let client = self.catalog.client().clone();
        let secrets = api_for(&client, "v1", "Secret", "secrets", Some(&self.ns.name));
        secrets
            .get_opt("creds")
            .await
            .unwrap()
            .map(|s| s.data["data"]["password"].as_str().unwrap().to_string())
    }

    async fn close(self) {
        self.0.close().await
    }
}

fn assert_synced(report: &PassReport) {
    assert!(
        matches!(report.status, PassStatus::Synced { .. }),
        "expected a sync, got {report:?}"
    );
}

/// (kind/name, action, revision) of each ObjectApplied, and (kind/name, revision) of each
/// ObjectPruned, sorted.
type Applied = Vec<(String, ApplyAction, String)>;
fn applied_and_pruned(events: &[(Option<String>, Event)]) -> (Applied, Vec<(String, String)>) {
    let mut applied = Vec::new();
    let mut pruned = Vec::new();
    for (_, e) in events {
        match e {
            Event::ObjectApplied(a) => applied.push((
                format!("{}/{}", a.object.kind, a.object.name),
                a.action,
                a.revision.clone(),
            )),
            Event::ObjectPruned(p) => pruned.push((
                format!("{}/{}", p.object.kind, p.object.name),
                p.revision.clone(),
            )),
            _ => {}
        }
    }
    applied.sort_by(|a, b| (&a.0, &a.2).cmp(&(&b.0, &b.2)));
    pruned.sort();
    (applied, pruned)
}

/// (actor, intent, revision, reason) of an IntentRecorded.
type Intent = (Option<String>, IntentKind, Option<String>, Option<String>);

fn intents(events: &[(Option<String>, Event)]) -> Vec<Intent> {
    events
        .iter()
        .filter_map(|(actor, e)| match e {
            Event::IntentRecorded(i) => Some((
                actor.clone(),
                i.intent,
                i.revision.clone(),
                i.reason.clone(),
            )),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_across_a_pruned_object_stays_pinned_and_resume_follows_git_again() {
    let h = Harness::new("rb").await;
    let app = "shop";
    let c1 = h.commit(
        "Blue, with legacy",
        &[
            ("app/settings.yaml", Some(&config_map("settings", "blue"))),
            ("app/legacy.yaml", Some(&config_map("legacy", "grey"))),
        ],
    );
    let mut r = h.reconciler(app);
    assert_synced(&pass(&mut r, true).await);
    let c2 = h.commit(
        "Red; legacy goes, extra comes",
        &[
            ("app/settings.yaml", Some(&config_map("settings", "red"))),
            ("app/legacy.yaml", None),
            ("app/extra.yaml", Some(&config_map("extra", "green"))),
            (
                "app/keeper.yaml",
                Some(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: keeper\n  annotations:\n    reckon.dev/prune: disabled\ndata:\n  color: white\n",
                ),
            ),
        ],
    );
    assert_synced(&pass(&mut r, true).await);
    assert_eq!(h.color("legacy").await, None, "pruned at c2");
    assert_eq!(h.color("settings").await.as_deref(), Some("red"));

    // Bad targets are refused by name, and record nothing.
    let before = h.next_seq();
    let err = rollback::request_rollback(
        &h.store,
        app,
        RollbackTarget::Revision("ffffffff".into()),
        "alice".into(),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "App shop: no recorded revision starts with ffffffff (see `reckon revisions shop`)"
    );
    let err = rollback::request_rollback(
        &h.store,
        "nope",
        RollbackTarget::Steps(1),
        "alice".into(),
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RollbackError::UnknownApp { .. }), "{err}");
    let err = rollback::request_rollback(
        &h.store,
        app,
        RollbackTarget::Steps(2),
        "alice".into(),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "App shop: cannot go back 2 applied revision(s) from {c2}: only 1 other applied revision(s) are recorded"
        )
    );
    let err = rollback::request_resume(&h.store, app, "alice".into(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, RollbackError::NotPinned { .. }), "{err}");
    assert_eq!(h.next_seq(), before, "refusals record nothing");

    // Roll back one step: to c1, by alice, with her reason.
    let plan = rollback::request_rollback(
        &h.store,
        app,
        RollbackTarget::Steps(1),
        "alice".into(),
        Some("red breaks checkout".into()),
    )
    .await
    .unwrap();
    assert_eq!(plan.revision, c1);
    assert_eq!(plan.previous.as_deref(), Some(c2.as_str()));
    assert_eq!(plan.seq, before);
    let report = pass(&mut r, true).await;
    assert_synced(&report);
    assert_eq!(report.revision.as_deref(), Some(c1.as_str()));
    let events = h.events_since(app, before);
    assert_eq!(
        intents(&events),
        vec![(
            Some("alice".into()),
            IntentKind::Rollback,
            Some(c1.clone()),
            Some("red breaks checkout".into())
        )]
    );
    let (applied, pruned) = applied_and_pruned(&events);
    assert_eq!(
        applied,
        vec![
            ("ConfigMap/legacy".into(), ApplyAction::Created, c1.clone()),
            (
                "ConfigMap/settings".into(),
                ApplyAction::Configured,
                c1.clone()
            ),
        ]
    );
    assert_eq!(pruned, vec![("ConfigMap/extra".into(), c1.clone())]);
    // The normal prune rules hold: an object that opts out stays, and the skip is recorded.
    let skipped: Vec<(String, String)> = events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::PruneSkipped(p) => Some((p.object.name.clone(), p.revision.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(skipped, vec![("keeper".to_string(), c1.clone())]);
    assert_eq!(h.color("keeper").await.as_deref(), Some("white"));
    assert_eq!(
        h.color("legacy").await.as_deref(),
        Some("grey"),
        "it came back"
    );
    assert_eq!(h.color("extra").await, None, "it did not exist at c1");
    assert_eq!(h.color("settings").await.as_deref(), Some("blue"));
    // The rollback was applied from the record: no render of c1 was recorded again.
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, Event::RenderSucceeded(_))),
        "{events:?}"
    );

    // A new commit is observed but not applied while pinned, also by a fresh reconciler (a
    // restarted agent, or `reckon sync`).
    let c3 = h.commit(
        "Yellow",
        &[("app/settings.yaml", Some(&config_map("settings", "yellow")))],
    );
    let before = h.next_seq();
    let mut fresh = h.reconciler(app);
    let report = pass(&mut fresh, true).await;
    assert_eq!(report.status, PassStatus::InSync, "{report:?}");
    assert_eq!(report.revision.as_deref(), Some(c1.as_str()));
    let events = h.events_since(app, before);
    let observed: Vec<&str> = events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::CommitObserved(c) => Some(c.sha.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(observed, vec![c3.as_str()]);
    assert_eq!(applied_and_pruned(&events), (vec![], vec![]));
    assert_eq!(h.color("settings").await.as_deref(), Some("blue"));
    // A revision observed but never applied is no rollback target.
    let err = rollback::request_rollback(
        &h.store,
        app,
        RollbackTarget::Revision(c3[..10].into()),
        "alice".into(),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "App shop: revision {c3} cannot be rolled back to: it was never rendered, so no manifests are recorded for it"
        )
    );

    // Resume: recorded by bob, and the next pass follows Git's head again.
    let before = h.next_seq();
    let resumed = rollback::request_resume(&h.store, app, "bob".into(), Some("fixed in c3".into()))
        .await
        .unwrap();
    assert_eq!(resumed.unpinned.as_deref(), Some(c1.as_str()));
    assert_eq!(resumed.follows.as_deref(), Some(c3.as_str()));
    let report = pass(&mut fresh, true).await;
    assert_synced(&report);
    assert_eq!(report.revision.as_deref(), Some(c3.as_str()));
    let events = h.events_since(app, before);
    assert_eq!(
        intents(&events),
        vec![(
            Some("bob".into()),
            IntentKind::Resume,
            None,
            Some("fixed in c3".into())
        )]
    );
    let (applied, pruned) = applied_and_pruned(&events);
    assert_eq!(
        applied,
        vec![
            ("ConfigMap/extra".into(), ApplyAction::Created, c3.clone()),
            (
                "ConfigMap/settings".into(),
                ApplyAction::Configured,
                c3.clone()
            ),
        ]
    );
    assert_eq!(pruned, vec![("ConfigMap/legacy".into(), c3.clone())]);
    assert_eq!(h.color("settings").await.as_deref(), Some("yellow"));
    let state = h.store.app_state(app).await.unwrap().unwrap();
    assert!(!state.intent.is_pinned());

    // By last applied time the order is now c3, c1 (re-applied by the rollback), c2.
    let two_back = rollback::request_rollback(
        &h.store,
        app,
        RollbackTarget::Steps(2),
        "carol".into(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(two_back.revision, c2);
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_after_a_force_push_and_a_lost_mirror_restores_a_secret_from_the_record() {
    let h = Harness::new("rbfp").await;
    let app = "vault";
    let base = h.commit("Base", &[("README.md", Some("base"))]);
    let c1 = h.commit(
        "Password one",
        &[
            ("app/settings.yaml", Some(&config_map("settings", "blue"))),
            ("app/secret.yaml", Some(&secret("password-one-xyzzy"))),
        ],
    );
    let mut r = h.reconciler(app);
    assert_synced(&pass(&mut r, true).await);
    assert_eq!(h.password().await, Some(base64_of("password-one-xyzzy")));

    // History is rewritten: c1 is gone from the remote, and the mirror is deleted, so a fresh
    // clone cannot have it either.
    h.fixture.reset_hard(&base).unwrap();
    let c2 = h.commit(
        "Password two, rewritten history",
        &[
            ("app/settings.yaml", Some(&config_map("settings", "red"))),
            ("app/secret.yaml", Some(&secret("password-two-plugh"))),
        ],
    );
    std::fs::remove_dir_all(h.cache.path()).unwrap();
    std::fs::create_dir_all(h.cache.path()).unwrap();
    let mut r = h.reconciler(app);
    let report = pass(&mut r, true).await;
    assert_synced(&report);
    assert_eq!(report.revision.as_deref(), Some(c2.as_str()));
    assert_eq!(h.password().await, Some(base64_of("password-two-plugh")));
    assert!(
        r.source().read_tree_async(c1.clone()).await.is_err(),
        "c1 is in neither the remote nor the mirror"
    );

    // Roll back to c1 by a prefix: applied from the record, the Secret's value included.
    let before = h.next_seq();
    let plan = rollback::request_rollback(
        &h.store,
        app,
        RollbackTarget::Revision(c1[..8].to_uppercase()),
        "alice".into(),
        Some("two leaked".into()),
    )
    .await
    .unwrap();
    assert_eq!(plan.revision, c1);
    let report = pass(&mut r, true).await;
    assert_synced(&report);
    assert_eq!(report.revision.as_deref(), Some(c1.as_str()));
    assert_eq!(h.password().await, Some(base64_of("password-one-xyzzy")));
    assert_eq!(h.color("settings").await.as_deref(), Some("blue"));
    let events = h.events_since(app, before);
    let (applied, pruned) = applied_and_pruned(&events);
    assert_eq!(
        applied,
        vec![
            (
                "ConfigMap/settings".into(),
                ApplyAction::Configured,
                c1.clone()
            ),
            ("Secret/creds".into(), ApplyAction::Configured, c1.clone()),
        ]
    );
    assert_eq!(pruned, vec![]);

    // The Secret's digest is the one recorded when c1 was first applied: the sealed record
    // opens to exactly what was rendered.
    let digests = |rev: &str| -> Vec<reckon::event::Digest> {
        h.events_since(app, 1)
            .into_iter()
            .filter_map(|(_, e)| match e {
                Event::ObjectApplied(a) if a.revision == rev && a.object.kind == "Secret" => {
                    Some(a.digest)
                }
                _ => None,
            })
            .collect()
    };
    let d = digests(&c1);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(d[0], d[1]);

    // No plain value, nor its base64 form, anywhere in the store: events or blobs.
    let reader = h.store.reader();
    let mut text = String::new();
    for e in reader.iter_from(1) {
        let e = e.unwrap();
        text.push_str(&format!("{:?}", e.body));
        let blobs = match &e.body.event {
            Event::RenderSucceeded(r) => vec![r.digest],
            Event::ObjectApplied(a) => vec![a.digest],
            _ => vec![],
        };
        for digest in blobs {
            let bytes = reader.blob(&digest).unwrap().unwrap();
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    // Sealed by the current scheme (migration 0010: random nonce, bound to the object).
    assert!(text.contains("sealed-v2:"), "the sealed form is kept");
    assert!(!text.contains("sealed-aes256gcmsiv:"), "no scheme-1 value");
    for plain in ["password-one-xyzzy", "password-two-plugh"] {
        for needle in [plain.to_string(), base64_of(plain)] {
            assert!(!text.contains(&needle), "{needle} leaked into the store");
        }
    }
    h.close().await;
}

/// What reckon before sealing recorded for a rendered set: each object's storable form, Secret
/// values as keyed hashes (`set_bytes` of that version; object digests and events unchanged).
fn hashed_only_set(files: &[(&str, String)]) -> Vec<u8> {
    let options = reckon::render::RenderOptions {
        yaml_expanded_bytes: reckon::render::DEFAULT_YAML_EXPANDED_BYTES,
        app: "legacy".into(),
        secret_key: SecretKey::new(KEY),
        kustomize_timeout: std::time::Duration::from_secs(60),
        // Filled in as for the floor (v1.20), which needs it; any later release accepts it too.
        fill_port_protocol: true,
    };
    let files: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec()))
        .collect();
    let set = reckon::render::render(&files, &options).unwrap();
    reckon::store::blob::canonical(&reckon::render::storable(&set, &options.secret_key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_recorded_before_sealing_rolls_back_from_git_or_fails_naming_the_secret() {
    let h = Harness::new("rbold").await;
    let app = "legacy";
    let base = h.commit("Base", &[("README.md", Some("base"))]);
    let files1 = [
        ("settings.yaml", config_map("settings", "blue")),
        ("secret.yaml", secret("old-one-frobozz")),
    ];
    let c1 = h.commit(
        "One",
        &[
            ("app/settings.yaml", Some(&files1[0].1)),
            ("app/secret.yaml", Some(&files1[1].1)),
        ],
    );
    let mut r = h.reconciler(app);
    assert_synced(&pass(&mut r, true).await);
    // The log as the previous version left it: c1's set recorded with hashed Secret values.
    let old = hashed_only_set(&files1);
    let old_digest = reckon::event::Digest::of(&old);
    let record_old = || async {
        h.store
            .append_with_blobs(
                vec![old.clone()],
                vec![reckon::event::Draft::new(
                    Some(app),
                    Event::RenderSucceeded(reckon::event::RenderSucceeded {
                        revision: c1.clone(),
                        digest: old_digest,
                        object_count: 2,
                    }),
                )],
            )
            .await
            .unwrap();
    };
    record_old().await;
    let c2 = h.commit(
        "Two",
        &[("app/secret.yaml", Some(&secret("old-two-xyzzy")))],
    );
    assert_synced(&pass(&mut r, true).await);

    // c1 is still in Git: the rollback renders it from there and records the sealed set.
    rollback::request_rollback(
        &h.store,
        app,
        RollbackTarget::Revision(c1.clone()),
        "alice".into(),
        None,
    )
    .await
    .unwrap();
    let before = h.next_seq();
    let mut r = h.reconciler(app);
    assert_synced(&pass(&mut r, false).await);
    assert_eq!(h.password().await, Some(base64_of("old-one-frobozz")));
    let state = h.store.app_state(app).await.unwrap().unwrap();
    let sealed_digest = state.revisions[&c1].digest.unwrap();
    assert_ne!(
        sealed_digest, old_digest,
        "the render was recorded again, sealed"
    );
    assert!(h.events_since(app, before).iter().any(
        |(_, e)| matches!(e, Event::RenderSucceeded(r) if r.revision == c1 && r.digest == sealed_digest)
    ));

    // Once c1 is gone from Git, a set recorded with hashes only cannot be applied: the pass
    // records a render failure naming the Secret and both causes, and applies nothing.
    rollback::request_resume(&h.store, app, "alice".into(), None)
        .await
        .unwrap();
    assert_synced(&pass(&mut r, false).await);
    assert_eq!(h.password().await, Some(base64_of("old-two-xyzzy")));
    h.fixture.reset_hard(&base).unwrap();
    h.commit(
        "Three",
        &[("app/settings.yaml", Some(&config_map("settings", "red")))],
    );
    std::fs::remove_dir_all(h.cache.path()).unwrap();
    std::fs::create_dir_all(h.cache.path()).unwrap();
    record_old().await;
    rollback::request_rollback(
        &h.store,
        app,
        RollbackTarget::Revision(c1.clone()),
        "alice".into(),
        None,
    )
    .await
    .unwrap();
    let before = h.next_seq();
    let mut r = h.reconciler(app);
    let report = pass(&mut r, true).await;
    let PassStatus::RenderFailed { error } = &report.status else {
        panic!("expected a render failure, got {report:?}");
    };
    assert!(
        error.starts_with(&format!(
            "the manifests recorded for {c1} cannot be applied (recorded Secret Secret/creds: data.password is stored as a keyed hash only (recorded by an older reckon), so its value cannot be restored from the store), and rendering it from Git failed: reading revision {c1}:"
        )),
        "{error}"
    );
    let events = h.events_since(app, before);
    assert_eq!(applied_and_pruned(&events), (vec![], vec![]));
    assert!(
        events
            .iter()
            .any(|(_, e)| matches!(e, Event::RenderFailed(f) if f.revision == c1))
    );
    assert_eq!(
        h.password().await,
        Some(base64_of("old-two-xyzzy")),
        "nothing changed"
    );
    let _ = c2;
    h.close().await;
}
