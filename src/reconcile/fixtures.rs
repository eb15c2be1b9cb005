//! Test fixtures shared by the stages' unit tests: desired objects rendered the way `render`
//! makes them, the planner's policy and scopes, live objects.

use crate::config::{AdoptPolicy, DriftMode};
use crate::plan::{
    self, DesiredObject, GroupKind, InventoryEntry, LiveObject, ObjectRef, Observation, Observed,
    Plan, Policy, Scope,
};
use crate::render::{self, SecretKey, object_digest};
use serde_json::{Value, json};

pub fn key() -> SecretKey {
    SecretKey::new([5; 32])
}

pub fn policy(drift: DriftMode) -> Policy {
    Policy {
        app: "shop".into(),
        field_manager: plan::FIELD_MANAGER.into(),
        default_namespace: "shop".into(),
        prune: true,
        allow_empty: false,
        drift,
        ignore: Vec::new(),
        adopt: AdoptPolicy::Unowned,
        prune_adopted: false,
        prune_non_empty_namespaces: false,
        former_names: Vec::new(),
    }
}

pub fn scopes(gk: &GroupKind) -> Option<Scope> {
    match (gk.group.as_str(), gk.kind.as_str()) {
        ("", "ConfigMap" | "Secret" | "Service") | ("apps", "Deployment") => {
            Some(Scope::Namespaced)
        }
        ("", "Namespace") => Some(Scope::Cluster),
        _ => None,
    }
}

/// A desired object from a manifest, labelled and digested the way render does.
pub fn desired(mut manifest: Value) -> DesiredObject {
    render::normalize::normalize(&mut manifest, "shop", true);
    let m = &manifest;
    let object = ObjectRef::from_api_version(
        m["apiVersion"].as_str().unwrap(),
        m["kind"].as_str().unwrap(),
        m["metadata"]["namespace"].as_str(),
        m["metadata"]["name"].as_str().unwrap(),
    );
    let rendered = render::RenderedObject {
        object,
        digest: object_digest(&manifest, &key()),
        manifest: render::Manifest::new(manifest),
        origin: render::Origin {
            file: "test.yaml".into(),
            document: 0,
        },
    };
    DesiredObject::from_rendered(&rendered, &key())
}

/// A ConfigMap in namespace `shop` (named there, or defaulted when `named_ns` is false).
pub fn config_map(name: &str, value: &str, named_ns: bool) -> DesiredObject {
    let mut metadata = json!({"name": name});
    if named_ns {
        metadata["namespace"] = json!("shop");
    }
    desired(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"k": value}}),
    )
}

/// `d` with its namespace defaulted to `shop`, as applied.
pub fn resolved(d: &DesiredObject) -> ObjectRef {
    let mut o = d.object.clone();
    o.namespace.get_or_insert_with(|| "shop".into());
    o
}

/// The inventory entry of `d` as last applied.
pub fn applied(d: &DesiredObject) -> InventoryEntry {
    let mut last = d.comparable().clone();
    last["metadata"]["namespace"] = json!("shop");
    InventoryEntry {
        object: resolved(d),
        last_applied_digest: d.digest,
        last_applied: last,
        adopted: false,
    }
}

/// `d` live as applied, with `data.k` set to `value` by someone else when it differs.
pub fn live(d: &DesiredObject, value: &str) -> LiveObject {
    let mut manifest = d.comparable().clone();
    manifest["metadata"]["namespace"] = json!("shop");
    manifest["data"]["k"] = json!(value);
    LiveObject {
        object: resolved(d),
        manifest,
        managed_fields: Vec::new(),
    }
}

pub fn observed(lives: Vec<LiveObject>) -> Observed {
    lives
        .into_iter()
        .map(|l| (l.object.key(), Observation::Present(l)))
        .collect()
}

/// The plan for `desired` against what was applied (`inventory`) and what is live.
pub fn plan_of(
    desired: &[DesiredObject],
    inventory: &[InventoryEntry],
    observed: &Observed,
    drift: DriftMode,
) -> Plan {
    plan::plan(desired, inventory, observed, &policy(drift), &scopes)
}

/// The plan for `d` as it was applied, against a live copy whose value is `live_value` (in
/// sync when it is `d`'s own value, drifted otherwise).
pub fn plan_against_live(d: &DesiredObject, live_value: &str, drift: DriftMode) -> Plan {
    plan_of(
        std::slice::from_ref(d),
        &[applied(d)],
        &observed(vec![live(d, live_value)]),
        drift,
    )
}
