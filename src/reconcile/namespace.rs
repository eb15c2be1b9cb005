//! Owns the App's target namespace in its rendered set: `target.create_namespace` adds the
//! Namespace when the set does not declare it, so a first sync into a new namespace applies (and
//! records) the Namespace like any other object instead of failing every object for the same
//! reason; and a Secret that names no namespace is placed in the target before its values are
//! hashed for comparison (the hash binds the namespace). Pure.

use crate::plan::ObjectRef;
use crate::render::{self, Manifest, Origin, RenderedObject, RenderedSet, SecretKey};

/// Where the added Namespace says it came from (shown in messages).
pub const ORIGIN: &str = "target.create_namespace";

/// `set` with a Namespace named `namespace` first, unless it already has one of that name.
pub fn with_target_namespace(
    mut set: RenderedSet,
    namespace: &str,
    app: &str,
    key: &SecretKey,
) -> RenderedSet {
    let declared = set.objects.iter().any(|o| {
        o.object.group.is_empty() && o.object.kind == "Namespace" && o.object.name == namespace
    });
    if declared {
        return set;
    }
    let mut manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace},
    });
    // A Namespace has no ports: the protocol setting changes nothing.
    render::normalize::normalize(&mut manifest, app, false);
    let digest = render::object_digest(&manifest, key);
    set.objects.insert(
        0,
        RenderedObject {
            object: ObjectRef {
                group: String::new(),
                version: "v1".into(),
                kind: "Namespace".into(),
                namespace: None,
                name: namespace.to_string(),
            },
            manifest: Manifest::new(manifest),
            digest,
            origin: Origin {
                file: ORIGIN.into(),
                document: 0,
            },
        },
    );
    set.digest = render::set_digest_of(set.objects.iter().map(|o| &o.digest));
    set
}

/// `set` with every core `v1` Secret that names no namespace placed in `namespace` (the App's
/// target, where the planner would apply it), its digest taken again. A Secret's keyed hashes
/// and sealed values are bound to its namespace: hashed without one, a rendered Secret would
/// never compare equal to the live object, which always has one.
pub fn with_secret_namespaces(
    mut set: RenderedSet,
    namespace: &str,
    key: &SecretKey,
) -> RenderedSet {
    let mut placed = false;
    for object in &mut set.objects {
        let secret = object.object.group.is_empty()
            && object.object.version == "v1"
            && object.object.kind == "Secret";
        if !secret || object.object.namespace.is_some() {
            continue;
        }
        let mut manifest = object.manifest.as_value().clone();
        let Some(metadata) = manifest.get_mut("metadata").and_then(|m| m.as_object_mut()) else {
            continue;
        };
        metadata.insert(
            "namespace".into(),
            serde_json::Value::String(namespace.to_string()),
        );
        object.object.namespace = Some(namespace.to_string());
        object.digest = render::object_digest(&manifest, key);
        object.manifest = Manifest::new(manifest);
        placed = true;
    }
    if placed {
        set.digest = render::set_digest_of(set.objects.iter().map(|o| &o.digest));
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rendered(yaml: &str) -> RenderedSet {
        let options = render::RenderOptions {
            app: "shop".into(),
            secret_key: SecretKey::new([3; 32]),
            kustomize_timeout: Duration::from_secs(5),
            yaml_expanded_bytes: render::DEFAULT_YAML_EXPANDED_BYTES,
            fill_port_protocol: false,
        };
        render::render(&[("app.yaml".into(), yaml.as_bytes().to_vec())], &options).unwrap()
    }

    #[test]
    fn the_target_namespace_is_added_first_and_labelled_for_the_app() {
        let set = rendered("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n");
        let before = set.digest;
        let set = with_target_namespace(set, "shop", "shop", &SecretKey::new([3; 32]));
        assert_eq!(set.objects.len(), 2);
        let ns = &set.objects[0];
        assert_eq!(
            (ns.object.kind.as_str(), ns.object.name.as_str()),
            ("Namespace", "shop")
        );
        assert_eq!(
            ns.manifest.as_value()["metadata"]["labels"][render::normalize::APP_LABEL],
            "shop"
        );
        assert_ne!(
            set.digest, before,
            "the set's digest covers the added Namespace"
        );
    }

    #[test]
    fn a_set_that_declares_the_namespace_is_left_as_it_is() {
        let set = rendered(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: a}}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
        );
        let same = with_target_namespace(set.clone(), "shop", "shop", &SecretKey::new([3; 32]));
        assert_eq!(same, set);
    }

    #[test]
    fn a_secret_naming_no_namespace_hashes_like_the_live_one_in_the_target() {
        let key = SecretKey::new([3; 32]);
        let set = rendered(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\ndata: {p: aHVudGVyMg==}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {name: other, namespace: elsewhere}\n\
             data: {p: aHVudGVyMg==}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
        );
        let before = set.clone();
        let set = with_secret_namespaces(set, "shop", &key);
        let creds = &set.objects[0];
        assert_eq!(creds.object.namespace.as_deref(), Some("shop"));
        assert_eq!(creds.manifest.as_value()["metadata"]["namespace"], "shop");
        // The live Secret (the API server always names its namespace) hashes alike: no drift.
        let live = creds.manifest.as_value().clone();
        assert_eq!(
            render::digest::storable_object(&live, &key),
            crate::plan::DesiredObject::from_rendered(creds, &key)
                .comparable()
                .clone()
        );
        assert_eq!(creds.digest, render::object_digest(&live, &key));
        assert_ne!(
            creds.digest, before.objects[0].digest,
            "hashed in its namespace"
        );
        // A Secret naming its namespace, and anything else, is left as it is.
        assert_eq!(set.objects[1], before.objects[1]);
        assert_eq!(set.objects[2], before.objects[2]);
        assert_ne!(set.digest, before.digest);
        assert_eq!(with_secret_namespaces(set.clone(), "shop", &key), set);
    }
}
