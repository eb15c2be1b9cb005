//! Owns reading live objects into the planner's [`Observed`] input: the conversion shared with
//! the watch cache, and a one-shot observer (one GET per object) for runs without watches
//! (`reckon diff`, a single sync, tests).

use super::Catalog;
use crate::plan::{
    DesiredObject, InventoryEntry, LiveObject, ManagedFields, ObjectRef, Observation, Observed,
    Resident, Scope,
};
use crate::render::SecretKey;
use crate::render::digest::storable_object;
use futures::stream::{self, StreamExt};
use serde_json::Value;

/// A live object as the planner wants it: its manifest in storable form (Secret values as
/// keyed hashes, so they compare with what was applied and never sit in the cache in plain
/// text) and its managedFields. `None` when the JSON is not an object with kind and name.
pub fn live_object(value: &Value, key: &SecretKey) -> Option<LiveObject> {
    let api_version = value.get("apiVersion")?.as_str()?;
    let kind = value.get("kind")?.as_str()?;
    let name = value.pointer("/metadata/name")?.as_str()?;
    let namespace = value.pointer("/metadata/namespace").and_then(Value::as_str);
    let object = ObjectRef::from_api_version(api_version, kind, namespace, name);
    let managed_fields = value
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|entry| ManagedFields {
            manager: entry["manager"].as_str().unwrap_or_default().into(),
            operation: entry["operation"].as_str().unwrap_or_default().into(),
            time: entry["time"].as_str().map(str::to_string),
            fields_v1: entry["fieldsV1"].clone(),
        })
        .collect();
    Some(LiveObject {
        object,
        manifest: storable_object(value, key),
        managed_fields,
    })
}

/// Where a desired object lives once its namespace is defaulted the way the planner does it;
/// `None` when the kind's scope is unknown (not served and not defined by a CRD in the set).
pub fn resolve_namespace(
    object: &ObjectRef,
    scope: Option<Scope>,
    default_namespace: &str,
) -> Option<ObjectRef> {
    let mut resolved = object.clone();
    match scope? {
        Scope::Namespaced => {
            resolved
                .namespace
                .get_or_insert_with(|| default_namespace.to_string());
        }
        Scope::Cluster => resolved.namespace = None,
    }
    Some(resolved)
}

/// Objects listed per kind when looking into a Namespace: enough to see whether it holds
/// anything, and to name what it holds, without reading a big Namespace whole.
const RESIDENTS_PAGE: u32 = 200;

/// What a Namespace holds: the objects of every namespaced kind the server can list (one
/// LIST per kind, first page), each with the metadata (and a Secret's `type`) that
/// [`crate::plan::ownership`] judges. A kind the agent may not list fails the whole call: what
/// the Namespace holds is then unknown.
pub async fn residents(
    catalog: &Catalog,
    namespace: &str,
) -> Result<Vec<Resident>, super::ApplyError> {
    // Events come and go with everything and never keep a Namespace: not even listed (an agent
    // that may not list them then still sees the rest).
    let kinds: Vec<_> = catalog
        .namespaced_listable()
        .into_iter()
        .filter(|k| {
            !(k.resource.kind == "Event"
                && (k.resource.group.is_empty() || k.resource.group == "events.k8s.io"))
        })
        .collect();
    let lists = stream::iter(kinds)
        .map(|kind| async move {
            let api = catalog.api(&kind, Some(namespace));
            let params = kube::api::ListParams::default().limit(RESIDENTS_PAGE);
            (kind, api.list(&params).await)
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let mut out = Vec::new();
    for (kind, list) in lists {
        let list = match list {
            Ok(list) => list,
            // Served for discovery but not listable here (aggregated APIs that are down,
            // kinds that only exist as subresources): nothing of it can be in the way.
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 405 => continue,
            Err(source) => {
                let object = ObjectRef {
                    group: kind.resource.group.clone(),
                    version: kind.resource.version.clone(),
                    kind: kind.resource.kind.clone(),
                    namespace: Some(namespace.to_string()),
                    name: "*".into(),
                };
                return Err(super::ApplyError::Get {
                    object,
                    message: source.to_string(),
                    source,
                });
            }
        };
        for item in list.items {
            let object = ObjectRef {
                group: kind.resource.group.clone(),
                version: kind.resource.version.clone(),
                kind: kind.resource.kind.clone(),
                namespace: Some(namespace.to_string()),
                name: item.metadata.name.clone().unwrap_or_default(),
            };
            let mut manifest = serde_json::json!({
                "metadata": {"ownerReferences": item.metadata.owner_references.clone().unwrap_or_default()},
            });
            if let Some(kind) = item.data.get("type") {
                manifest["type"] = kind.clone();
            }
            out.push(Resident { object, manifest });
        }
    }
    Ok(out)
}

/// Reads every desired and inventory object once. Objects whose kind is not served are
/// `Absent` (nothing of an unserved kind can exist); objects that cannot be read are left out,
/// which the planner takes as "unknown" and claims no drift for.
pub async fn observe(
    catalog: &Catalog,
    desired: &[DesiredObject],
    inventory: &[InventoryEntry],
    default_namespace: &str,
    key: &SecretKey,
    concurrency: usize,
) -> Observed {
    let mut targets: Vec<ObjectRef> = desired
        .iter()
        .filter_map(|d| {
            resolve_namespace(
                &d.object,
                catalog.scope(&d.object.group_kind()),
                default_namespace,
            )
        })
        .collect();
    targets.extend(inventory.iter().map(|e| e.object.clone()));
    observe_objects(catalog, targets, key, concurrency).await
}

/// Reads each of `targets` (namespaces resolved) once, as [`observe`] does.
pub async fn observe_objects(
    catalog: &Catalog,
    mut targets: Vec<ObjectRef>,
    key: &SecretKey,
    concurrency: usize,
) -> Observed {
    targets.sort_by_key(ObjectRef::key);
    targets.dedup_by_key(|o| o.key());
    stream::iter(targets)
        .map(|object| async move {
            let Some(resolved) = catalog
                .resolve(&object)
                .or_else(|| catalog.resolve_kind(&object.group_kind()))
            else {
                return Some((object.key(), Observation::Absent));
            };
            let api = catalog.api(&resolved, object.namespace.as_deref());
            match api.get_opt(&object.name).await {
                Ok(None) => Some((object.key(), Observation::Absent)),
                Ok(Some(live)) => {
                    let value = serde_json::to_value(&live).ok()?;
                    let mut live = live_object(&value, key)?;
                    // Keep the caller's identity (version) so the observation matches its key.
                    live.object = object.clone();
                    Some((object.key(), Observation::Present(live)))
                }
                Err(error) => {
                    tracing::warn!(%object, %error, "reading live object; treated as unknown");
                    None
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .filter_map(|x| async move { x })
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn live_objects_keep_managed_fields_and_hide_secret_values() {
        let key = SecretKey::new([1; 32]);
        let value = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "shop", "managedFields": [
                {"manager": "reckon", "operation": "Apply", "time": "2026-01-01T00:00:00Z",
                 "fieldsV1": {"f:data": {"f:password": {}}}}]},
            "data": {"password": "aHVudGVyMg=="}});
        let live = live_object(&value, &key).unwrap();
        assert_eq!(live.object.to_string(), "Secret/shop/db");
        assert_eq!(live.managed_fields.len(), 1);
        assert_eq!(live.managed_fields[0].manager, "reckon");
        assert_eq!(
            live.managed_fields[0].time.as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        assert!(!live.manifest.to_string().contains("aHVudGVyMg"));
        assert!(live_object(&json!({"kind": "X"}), &key).is_none());
    }

    #[test]
    fn namespaces_default_like_the_planner() {
        let cm = ObjectRef::from_api_version("v1", "ConfigMap", None, "c");
        assert_eq!(
            resolve_namespace(&cm, Some(Scope::Namespaced), "shop")
                .unwrap()
                .namespace
                .as_deref(),
            Some("shop")
        );
        let explicit = ObjectRef::from_api_version("v1", "ConfigMap", Some("other"), "c");
        assert_eq!(
            resolve_namespace(&explicit, Some(Scope::Namespaced), "shop")
                .unwrap()
                .namespace
                .as_deref(),
            Some("other")
        );
        let ns = ObjectRef::from_api_version("v1", "Namespace", Some("ignored"), "n");
        assert_eq!(
            resolve_namespace(&ns, Some(Scope::Cluster), "shop")
                .unwrap()
                .namespace,
            None
        );
        assert_eq!(resolve_namespace(&cm, None, "shop"), None);
    }
}
