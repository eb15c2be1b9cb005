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
