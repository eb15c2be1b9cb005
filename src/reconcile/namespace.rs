//! Owns `target.create_namespace`: the App's target Namespace added to its rendered set when the
//! set does not declare it, so a first sync into a new namespace applies (and records) the
//! Namespace like any other object instead of failing every object for the same reason. Pure.

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
}
