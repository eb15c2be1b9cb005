//! Migration 0010 (Secret values sealed with a random nonce and bound to their object) against
//! a store whose recorded sets hold values sealed the previous way
//! (tests/fixtures/store-sealed-v1), plus the generator that wrote that store.

use reckon::event::{
    ApplyAction, CommitObserved, Digest, Draft, Event, ObjectApplied, RenderSucceeded, SyncCounts,
    SyncFinished, SyncOutcome, SyncStarted,
};
use reckon::plan::DesiredObject;
use reckon::render::{self, RenderOptions, SecretKey};
use reckon::store::{OpenOptions, SledStore};
use std::path::PathBuf;
use std::time::Duration;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-sealed-v1")
}

/// The App of the fixture and the namespace it deploys to (its Secret `creds` names none).
const APP: &str = "shop";
const NAMESPACE: &str = "shop";

/// The Secret values each revision rendered (test values: the fixture's key is a test key).
const PASSWORD_1: &str = "fixture-pw-one";
const PASSWORD_2: &str = "fixture-pw-two";
const USER: &str = "fixture-admin";
const TOKEN: &str = "fixture-token";

/// The manifests of revision `n` (1 or 2): ConfigMap `settings`; Secret `creds` (no namespace:
/// the App's), `data` password and user, `stringData` token; Secret `mirror` of namespace shop
/// holding the same password as `creds` (equal values in two Secrets). Revision 2 changes the
/// password of `creds` only.
fn files(n: u8) -> Vec<render::SourceFile> {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let password = if n == 1 { PASSWORD_1 } else { PASSWORD_2 };
    let text = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: shop}}\n\
         data: {{color: blue}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\n\
         data: {{password: {}, user: {}}}\nstringData: {{token: {TOKEN}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: mirror, namespace: shop}}\n\
         data: {{password: {}}}\n",
        b64(password),
        b64(USER),
        b64(PASSWORD_1),
    );
    vec![("app.yaml".into(), text.into_bytes())]
}

fn options(key: &SecretKey) -> RenderOptions {
    RenderOptions {
        app: APP.into(),
        secret_key: key.clone(),
        kustomize_timeout: Duration::from_secs(5),
        yaml_expanded_bytes: render::DEFAULT_YAML_EXPANDED_BYTES,
        fill_port_protocol: false,
    }
}

/// Revision `n`'s desired objects as the agent makes them from its render.
fn desired(n: u8, key: &SecretKey) -> Vec<DesiredObject> {
    render::render(&files(n), &options(key))
        .unwrap()
        .objects
        .iter()
        .map(|o| DesiredObject::from_rendered(o, key))
        .collect()
}

/// What the agent records for revision `n` (as `reconcile::desired::render_records` and
/// `reconcile::execute::outcome_records` do): the set's blob with Secret values sealed and a
/// `RenderSucceeded` naming it, then a sync whose applies name each object's storable blob.
/// `applied` says which objects the sync wrote (by name).
fn revision_records(
    n: u8,
    key: &SecretKey,
    applied: &[(&str, ApplyAction)],
) -> (Vec<Vec<u8>>, Vec<Draft>) {
    let desired = desired(n, key);
    let commit: CommitObserved = reckon::event::samples::commit(u64::from(n), "alice@example.com");
    let revision = commit.sha.clone();
    let recorded: Vec<serde_json::Value> = desired
        .iter()
        .map(|d| match d.stored {
            Some(_) => render::sealed_object(d.manifest.as_value(), key),
            None => d.manifest.as_value().clone(),
        })
        .collect();
    let set = reckon::store::blob::canonical(&recorded);
    let mut blobs = vec![set.clone()];
    let draft = |e: Event| Draft::new(Some(APP), e);
    let mut drafts = vec![
        draft(Event::CommitObserved(commit)),
        draft(Event::RenderSucceeded(RenderSucceeded {
            revision: revision.clone(),
            digest: Digest::of(&set),
            object_count: desired.len() as u32,
        })),
        draft(Event::SyncStarted(SyncStarted {
            revision: revision.clone(),
            digest: Some(Digest::of(&set)),
        })),
    ];
    let mut counts = SyncCounts::default();
    for d in &desired {
        let Some((_, action)) = applied.iter().find(|(name, _)| *name == d.object.name) else {
            counts.unchanged += 1;
            continue;
        };
        let bytes = render::canonical_json(d.comparable()).into_bytes();
        assert_eq!(
            Digest::of(&bytes),
            d.digest,
            "the storable form is the digest"
        );
        blobs.push(bytes);
        let mut object = d.object.clone();
        object.namespace = Some(NAMESPACE.into());
        match action {
            ApplyAction::Created => counts.created += 1,
            _ => counts.configured += 1,
        }
        drafts.push(draft(Event::ObjectApplied(ObjectApplied {
            revision: revision.clone(),
            object: reckon::event::ObjectRef::new(object),
            action: *action,
            changed_fields: match action {
                ApplyAction::Created => vec![],
                _ => vec!["/data/password".into()],
            },
            digest: d.digest,
        })));
    }
    drafts.push(draft(Event::SyncFinished(SyncFinished {
        revision,
        outcome: SyncOutcome::Succeeded,
        counts,
        duration_ms: 30,
    })));
    (blobs, drafts)
}

/// Regenerates the fixture: App `shop`'s two revisions, each rendered, recorded (Secret values
/// sealed the v1 way: deterministic, bound to field and key only) and synced, with the test key
/// `secret.key` that sealed them. It must be written by the release before migration 0010
/// (commit 0ec7c5d plus this function): run
/// `cargo test --test store -- --ignored migration_sealed_v2::generate_sealed_v1_fixture` there
/// and copy `tests/fixtures/store-sealed-v1` here. The current code seals the v2 way.
#[test]
#[ignore]
fn generate_sealed_v1_fixture() {
    let path = fixture();
    let _ = std::fs::remove_dir_all(&path);
    let mut store = SledStore::open(
        &path,
        OpenOptions {
            create: true,
            cache_bytes: 1 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let key = reckon::agent::key::load_or_create(&path.join("secret.key")).unwrap();
    use reckon::store::EventStore as _;
    let all = [
        ("settings", ApplyAction::Created),
        ("creds", ApplyAction::Created),
        ("mirror", ApplyAction::Created),
    ];
    for (n, applied) in [
        (1, &all[..]),
        (2, &[("creds", ApplyAction::Configured)][..]),
    ] {
        let (blobs, drafts) = revision_records(n, &key, applied);
        for blob in blobs {
            store.put_blob(&blob).unwrap();
        }
        store.append(drafts).unwrap();
        store.flush().unwrap();
    }
    let set = |n: u64| {
        let sha = reckon::event::samples::sha(n);
        store.projections().apps[APP].revisions[&sha]
            .digest
            .unwrap()
    };
    let text = String::from_utf8(
        reckon::store::EventRead::blob(&store.reader(), &set(2))
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(text.contains("sealed-aes256gcmsiv:"), "{text}");
    assert!(!text.contains(PASSWORD_2) && !text.contains(TOKEN));
    store.close().unwrap();
}

/// Revision `n` as a pass renders it now: its Secret naming no namespace placed in the App's.
fn rendered_now(n: u8, key: &SecretKey) -> render::RenderedSet {
    reckon::reconcile::namespace::with_secret_namespaces(
        render::render(&files(n), &options(key)).unwrap(),
        NAMESPACE,
        key,
    )
}

/// A recorded set opened as a pass opens it (values opened, Secrets placed), by object name.
fn opened(
    bytes: &[u8],
    key: &SecretKey,
) -> std::collections::BTreeMap<String, render::RenderedObject> {
    let set = reckon::reconcile::namespace::with_secret_namespaces(
        render::from_recorded(bytes, key).unwrap(),
        NAMESPACE,
        key,
    );
    set.objects
        .into_iter()
        .map(|o| (o.object.name.clone(), o))
        .collect()
}

/// Migration 0010 on a store the previous release wrote: each revision's set is re-sealed once
/// (a new blob and a `RenderSucceeded` pointing the revision at it, then one `StoreMigrated`),
/// the old records stay as they were, the chain and the projections verify, the new sets hold
/// no scheme-1 value and no plain value, open to exactly what was rendered, compare with live
/// Secrets and with each other as before, and a second run records nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sealed_v1_fixture_is_resealed_once_and_opens_to_what_was_rendered() {
    use reckon::reconcile::reseal::{self, Resealed};
    use reckon::render::digest::{
        SEALED_PREFIX, SEALED_V1_PREFIX, SecretKeyChange, secret_changes, storable_from_recorded,
        storable_object,
    };
    use reckon::store::verify::{check_projections, verify};
    use reckon::store::{EventRead as _, EventStore as _};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    crate::support::store::copy_dir(&fixture(), &path);
    let key = reckon::agent::key::load_or_create(&path.join("secret.key")).unwrap();
    // At the fixture's store schema (3): resealing is independent of migration 0013 (object
    // copies), which has its own fixture.
    let at_schema_3 = || OpenOptions {
        schema: 3,
        ..Default::default()
    };
    let store = SledStore::open(&path, at_schema_3()).unwrap();
    assert!(store.migrated_backup.is_none(), "no store layout change");
    let before: Vec<_> = store.reader().iter_from(1).map(|e| e.unwrap()).collect();
    let old = store.projections().apps[APP].clone();
    let sha = |n: u8| reckon::event::samples::sha(u64::from(n));
    let old_set = |n: u8| old.revisions[&sha(n)].digest.unwrap();
    let old_applied: std::collections::BTreeMap<String, Digest> = before
        .iter()
        .filter_map(|e| match &e.body.event {
            Event::ObjectApplied(a) => Some((a.object.name.clone(), a.digest)),
            _ => None,
        })
        .collect();

    let (handle, task) = reckon::store::writer::spawn(store);
    let done = reseal::reseal_recorded_sets(&handle, &key).await.unwrap();
    assert_eq!(
        done,
        Resealed {
            sets: 2,
            unopened: vec![]
        }
    );
    // Idempotent: nothing of scheme 1 is left, so nothing more is recorded.
    assert_eq!(
        reseal::reseal_recorded_sets(&handle, &key).await.unwrap(),
        Resealed::default()
    );
    handle.close().await.unwrap();
    task.await.unwrap().unwrap();

    let store = SledStore::open(&path, at_schema_3()).unwrap();
    let after: Vec<_> = store.reader().iter_from(1).map(|e| e.unwrap()).collect();
    assert_eq!(&after[..before.len()], &before[..], "old records unchanged");
    assert_eq!(after.len(), before.len() + 3);
    let state = store.projections().apps[APP].clone();
    // One RenderSucceeded per revision (in the projections' order), by the agent.
    let mut resealed: Vec<String> = Vec::new();
    for e in &after[before.len()..after.len() - 1] {
        assert_eq!(e.body.app.as_deref(), Some(APP));
        assert_eq!(e.body.actor.as_deref(), Some("reckon"));
        match &e.body.event {
            Event::RenderSucceeded(r) => {
                assert_eq!(Some(r.digest), state.revisions[&r.revision].digest);
                assert_eq!(r.object_count, 3);
                resealed.push(r.revision.clone());
            }
            other => panic!("{other:?}"),
        }
    }
    resealed.sort();
    let mut expected = vec![sha(1), sha(2)];
    expected.sort();
    assert_eq!(resealed, expected);
    for n in [1u8, 2] {
        assert_ne!(state.revisions[&sha(n)].digest, Some(old_set(n)));
    }
    match &after.last().unwrap().body.event {
        Event::StoreMigrated(m) => assert_eq!(m.step, reseal::STEP),
        other => panic!("{other:?}"),
    }
    let mut report = verify(&store.reader(), &mut |_| {}).unwrap();
    check_projections(&store, &mut report).unwrap();
    assert!(report.ok(), "{:?}", report.problems);

    let reader = store.reader();
    let blob = |d: Digest| reader.blob(&d).unwrap().expect("the blob is there");
    for n in [1u8, 2] {
        let (old_bytes, new_bytes) = (
            blob(old_set(n)),
            blob(state.revisions[&sha(n)].digest.unwrap()),
        );
        let text = String::from_utf8(new_bytes.clone()).unwrap();
        assert!(text.contains(SEALED_PREFIX), "{text}");
        assert!(!text.contains(SEALED_V1_PREFIX), "{text}");
        for plain in [PASSWORD_1, PASSWORD_2, USER, TOKEN] {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD.encode(plain);
            assert!(
                !text.contains(plain) && !text.contains(&b64),
                "{plain}: {text}"
            );
        }
        // The values open to exactly what was rendered, from the old set and the new one.
        let expected: std::collections::BTreeMap<String, render::RenderedObject> =
            rendered_now(n, &key)
                .objects
                .into_iter()
                .map(|o| (o.object.name.clone(), o))
                .collect();
        for set in [opened(&old_bytes, &key), opened(&new_bytes, &key)] {
            assert_eq!(set.len(), 3);
            for (name, object) in &expected {
                assert_eq!(set[name].manifest, object.manifest, "{name}");
                assert_eq!(set[name].digest, object.digest, "{name}");
            }
        }
        let old_lines: Vec<serde_json::Value> = String::from_utf8(old_bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let new_lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let by_name = |lines: &[serde_json::Value], name: &str| {
            lines
                .iter()
                .find(|v| v["metadata"]["name"] == name)
                .unwrap()
                .clone()
        };
        // Scheme 1 showed equal values in two Secrets as equal; scheme 2 does not.
        if n == 1 {
            assert_eq!(
                by_name(&old_lines, "creds")["data"]["password"],
                by_name(&old_lines, "mirror")["data"]["password"],
                "the defect the migration removes"
            );
        }
        assert_ne!(
            by_name(&new_lines, "creds")["data"]["password"],
            by_name(&new_lines, "mirror")["data"]["password"]
        );
        // The ConfigMap's record is what it was.
        assert_eq!(
            by_name(&new_lines, "settings"),
            by_name(&old_lines, "settings")
        );
    }

    // Drift comparison: the live Secrets, as the API server holds them (namespace named, the
    // values the revision applied), compare equal to what the new set opens to; a changed live
    // value does not, and is named by key.
    let current = opened(&blob(state.revisions[&sha(2)].digest.unwrap()), &key);
    for name in ["creds", "mirror"] {
        let desired = DesiredObject::from_rendered(&current[name], &key);
        let mut live = current[name].manifest.as_value().clone();
        live["metadata"]["uid"] = serde_json::json!(format!("uid-{name}"));
        live["metadata"]["resourceVersion"] = serde_json::json!("7");
        let mut stored = storable_object(&live, &key);
        for field in ["uid", "resourceVersion"] {
            stored["metadata"].as_object_mut().unwrap().remove(field);
        }
        assert_eq!(&stored, desired.comparable(), "{name}: no drift");
        live["data"]["password"] = serde_json::json!("Y2hhbmdlZA==");
        assert_eq!(
            secret_changes(desired.comparable(), &storable_object(&live, &key)),
            vec![SecretKeyChange::Changed("password".into())]
        );
    }
    // Between revisions: revision 2 changed the password of creds, not of mirror.
    let recorded = |n: u8, name: &str| {
        let bytes = blob(state.revisions[&sha(n)].digest.unwrap());
        let line = String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["metadata"]["name"] == name)
            .unwrap();
        storable_from_recorded(&line, &key).unwrap()
    };
    assert_eq!(
        secret_changes(&recorded(1, "creds"), &recorded(2, "creds")),
        vec![SecretKeyChange::Changed("password".into())]
    );
    assert_eq!(
        secret_changes(&recorded(1, "mirror"), &recorded(2, "mirror")),
        vec![]
    );

    // `reckon diff` between the two revisions (no key: the stored forms sealed with the values):
    // only creds' password changed, although every value was sealed with its own nonce.
    let diff =
        reckon::query::diff_revisions(&store, store.projections(), APP, &sha(1), &sha(2)).unwrap();
    let changed: Vec<(&str, Vec<&str>)> = diff
        .changed
        .iter()
        .map(|c| {
            (
                c.object.as_str(),
                c.fields.iter().map(|f| f.path.as_str()).collect(),
            )
        })
        .collect();
    assert_eq!(
        changed,
        vec![("Secret/creds", vec!["/data/password"])],
        "{diff:?}"
    );
    for value in [
        &diff.changed[0].fields[0].from,
        &diff.changed[0].fields[0].to,
    ] {
        let text = value.as_ref().unwrap().as_str().unwrap();
        assert!(text.starts_with("hmac-sha256:"), "{text}");
    }

    // The object-bound hash changes each Secret's digest once: the digests the fixture's
    // applies recorded (scheme-1 hashes) differ from the new ones, so the first pass after the
    // upgrade re-applies each Secret once; the ConfigMap's is unchanged.
    assert_eq!(old_applied["settings"], current["settings"].digest);
    assert_ne!(old_applied["creds"], current["creds"].digest);
    assert_ne!(old_applied["mirror"], current["mirror"].digest);
    store.close().unwrap();
}

/// A store whose sets this release recorded (scheme 2 only) has nothing to re-seal: the step
/// appends nothing, not even its `StoreMigrated`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_sealed_by_this_release_has_nothing_to_reseal() {
    use reckon::reconcile::reseal::{self, Resealed};
    use reckon::store::EventStore as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut store = SledStore::open(
        &path,
        OpenOptions {
            create: true,
            ..Default::default()
        },
    )
    .unwrap();
    let key = SecretKey::new([4; 32]);
    let (blobs, drafts) = revision_records(1, &key, &[("creds", ApplyAction::Created)]);
    let set = String::from_utf8(blobs[0].clone()).unwrap();
    assert!(set.contains("sealed-v2:") && !set.contains("sealed-aes256gcmsiv:"));
    for blob in blobs {
        store.put_blob(&blob).unwrap();
    }
    store.append(drafts).unwrap();
    let last = store.reader().iter_from(1).count();
    let (handle, task) = reckon::store::writer::spawn(store);
    assert_eq!(
        reseal::reseal_recorded_sets(&handle, &key).await.unwrap(),
        Resealed::default()
    );
    assert_eq!(
        handle.reader().iter_from(1).count(),
        last,
        "nothing appended"
    );
    handle.close().await.unwrap();
    task.await.unwrap().unwrap();
}

/// What the step costs at a start before it is recorded done (a store without a scheme-1 value
/// never records it): 1000 Apps with 10 rendered revisions each, sets of five Deployments
/// (about 6 KB), none with a Secret. Prints the time one run takes to read them all. Run:
/// `cargo test --release --test store -- --ignored migration_sealed_v2::reseal_scan_cost --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn reseal_scan_cost() {
    use reckon::reconcile::reseal::{self, Resealed};
    use reckon::store::EventStore as _;
    const APPS: usize = 1000;
    const REVISIONS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let mut store = SledStore::open(
        dir.path().join("store"),
        OpenOptions {
            create: true,
            ..Default::default()
        },
    )
    .unwrap();
    for app in 0..APPS {
        let name = format!("app-{app}");
        let mut drafts = Vec::new();
        for rev in 0..REVISIONS {
            let objects: Vec<serde_json::Value> = (0..5)
                .map(|k| {
                    serde_json::json!({
                        "apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": format!("svc-{k}"), "namespace": name,
                                     "labels": {"reckon.dev/app": name, "tier": "web"}},
                        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": format!("svc-{k}")}},
                                 "template": {"metadata": {"labels": {"app": format!("svc-{k}")}},
                                 "spec": {"containers": [{"name": "web", "image": format!("registry.example.com/web:{rev}"),
                                          "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                                          "env": (0..12).map(|e| serde_json::json!({"name": format!("VAR_{e}"), "value": format!("value-{e}-{rev}")})).collect::<Vec<_>>()}]}}}
                    })
                })
                .collect();
            let set = reckon::store::blob::canonical(&objects);
            let digest = store.put_blob(&set).unwrap();
            drafts.push(Draft::new(
                Some(&name),
                Event::RenderSucceeded(RenderSucceeded {
                    revision: format!("{:040x}", app * 100 + rev),
                    digest,
                    object_count: 5,
                }),
            ));
        }
        store.append(drafts).unwrap();
    }
    store.flush().unwrap();
    let (handle, task) = reckon::store::writer::spawn(store);
    let key = SecretKey::new([4; 32]);
    let started = std::time::Instant::now();
    let done = reseal::reseal_recorded_sets(&handle, &key).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(done, Resealed::default());
    println!(
        "reseal scan: {} sets of {} Apps read in {:.0} ms",
        APPS * REVISIONS,
        APPS,
        elapsed.as_secs_f64() * 1000.0
    );
    handle.close().await.unwrap();
    task.await.unwrap().unwrap();
}
