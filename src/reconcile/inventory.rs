//! Owns the pass's inventory stage: the objects the App owns, folded from the log, as the
//! planner wants them (each with its last applied manifest, read from the blob the log names,
//! and whether it was adopted from outside the App).

use super::{ReconcileError, Reconciler, events};
use crate::event::Digest;
use crate::plan::{DesiredObject, InventoryEntry, ObjectKey};
use crate::store::EventRead;
use crate::store::projection::{self, AppState};
use std::collections::{HashMap, HashSet};

/// The desired objects' keys, namespaces defaulted to the App's target namespace.
pub(super) fn desired_keys(desired: &[DesiredObject], namespace: &str) -> HashSet<ObjectKey> {
    desired
        .iter()
        .map(|d| {
            let mut key = d.object.key();
            key.namespace.get_or_insert_with(|| namespace.to_string());
            key
        })
        .collect()
}

/// The applies (by seq) to read to know whether an entry was adopted: whether it was matters
/// only to a prune, so only for entries no desired object names, and each is read once.
pub(super) fn adoption_lookups(
    state: &AppState,
    desired: &HashSet<ObjectKey>,
    known: &HashMap<u64, bool>,
) -> Vec<u64> {
    state
        .inventory
        .values()
        .filter(|e| !desired.contains(&e.object.key()))
        .filter_map(|e| e.lifecycle_seq)
        .filter(|seq| !known.contains_key(seq))
        .collect()
}

/// The planner's entry for a logged one whose last applied manifest is `value`. The blob is
/// the rendered form (it hashes to the render digest); the planner compares live objects with
/// it as applied, namespace defaulted.
pub(super) fn planner_entry(
    entry: &projection::InventoryEntry,
    mut value: serde_json::Value,
    adopted: bool,
) -> InventoryEntry {
    if let (Some(ns), Some(meta)) = (
        &entry.object.namespace,
        value.get_mut("metadata").and_then(|m| m.as_object_mut()),
    ) {
        meta.entry("namespace")
            .or_insert_with(|| serde_json::Value::String(ns.clone()));
    }
    InventoryEntry {
        object: entry.object.object.clone(),
        last_applied_digest: entry.last_digest,
        last_applied: value,
        adopted,
    }
}

impl Reconciler {
    /// The inventory as the planner wants it: each entry's last applied manifest, which is the
    /// blob the log names. A desired object with the same digest has the same content, so the
    /// common case (nothing changed) reads no blob and keeps no second copy in memory.
    pub(super) fn inventory(
        &mut self,
        state: &AppState,
        desired: &[DesiredObject],
    ) -> Result<Vec<InventoryEntry>, ReconcileError> {
        self.recall_adoptions(state, desired)?;
        let by_digest: HashMap<Digest, &DesiredObject> =
            desired.iter().map(|d| (d.digest, d)).collect();
        let mut entries = Vec::with_capacity(state.inventory.len());
        for entry in state.inventory.values() {
            let digest = entry.last_digest;
            let value = match by_digest.get(&digest) {
                Some(d) => d.comparable().clone(),
                None => self.last_applied(entry)?,
            };
            let adopted = entry
                .lifecycle_seq
                .and_then(|seq| self.memory.adoptions.get(&seq).copied())
                .unwrap_or(false);
            entries.push(planner_entry(entry, value, adopted));
        }
        Ok(entries)
    }

    /// Reads (once) whether the applies that began the lives of entries no desired object names
    /// were adoptions.
    fn recall_adoptions(
        &mut self,
        state: &AppState,
        desired: &[DesiredObject],
    ) -> Result<(), ReconcileError> {
        let keys = desired_keys(desired, &self.app.target.namespace);
        let lookups = adoption_lookups(state, &keys, &self.memory.adoptions);
        if lookups.is_empty() {
            return Ok(());
        }
        let found = self
            .store
            .reader()
            .get_many(&lookups)
            .map_err(|e| self.store_err(e))?;
        for (seq, env) in lookups.iter().zip(found) {
            let adopted = env.is_some_and(|e| events::adopted_from_outside(&e.body.event));
            self.memory.adoptions.insert(*seq, adopted);
        }
        Ok(())
    }

    /// An entry's last applied manifest from the blob store (remembered).
    fn last_applied(
        &mut self,
        entry: &projection::InventoryEntry,
    ) -> Result<serde_json::Value, ReconcileError> {
        let digest = entry.last_digest;
        if let Some(v) = self.memory.blobs.get(&digest) {
            return Ok(v.clone());
        }
        let problem = |p: String| ReconcileError::Blob {
            app: self.app.name.clone(),
            object: entry.object.identity(),
            digest,
            problem: p,
        };
        let bytes = self
            .store
            .reader()
            .blob(&digest)
            .map_err(|e| problem(format!("cannot read it: {e}")))?
            .ok_or_else(|| problem("does not hold it".into()))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| problem(format!("holds no JSON object: {e}")))?;
        self.memory.blobs.insert(digest, v.clone());
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ObjectRef;

    fn logged(
        kind: &str,
        ns: Option<&str>,
        name: &str,
        lifecycle: Option<u64>,
    ) -> projection::InventoryEntry {
        projection::InventoryEntry {
            object: ObjectRef::with_uid(
                crate::model::ObjectRef {
                    group: String::new(),
                    version: "v1".into(),
                    kind: kind.into(),
                    namespace: ns.map(String::from),
                    name: name.into(),
                },
                None,
            ),
            last_digest: Digest::of(name.as_bytes()),
            revision: "abc".into(),
            applied_seq: 1,
            applied_at: chrono::Utc::now(),
            lifecycle_seq: lifecycle,
            changed_since: Vec::new(),
            counted_for: 0,
        }
    }

    #[test]
    fn adoptions_are_looked_up_once_and_only_for_objects_leaving_git() {
        let mut state = AppState::default();
        for e in [
            logged("ConfigMap", Some("shop"), "kept", Some(3)),
            logged("ConfigMap", Some("shop"), "leaving", Some(5)),
            logged("ConfigMap", Some("shop"), "known", Some(7)),
            logged("ConfigMap", Some("shop"), "old", None),
        ] {
            state.inventory.insert(e.object.identity(), e);
        }
        let kept = state.inventory.values().find(|e| e.object.name == "kept");
        let desired: HashSet<ObjectKey> = [kept.unwrap().object.key()].into();
        let known: HashMap<u64, bool> = [(7, true)].into();
        assert_eq!(adoption_lookups(&state, &desired, &known), vec![5]);
    }

    #[test]
    fn an_entry_is_compared_as_applied_with_its_namespace_defaulted() {
        let entry = logged("ConfigMap", Some("shop"), "web", Some(3));
        let e = planner_entry(
            &entry,
            serde_json::json!({"metadata": {"name": "web"}}),
            true,
        );
        assert_eq!(e.last_applied["metadata"]["namespace"], "shop");
        assert_eq!(
            e.last_applied_digest.prefixed(),
            format!("sha256:{}", entry.last_digest.to_hex())
        );
        assert!(e.adopted);
        // A namespace the manifest names is kept; a cluster-scoped object gets none.
        let e = planner_entry(
            &entry,
            serde_json::json!({"metadata": {"name": "web", "namespace": "other"}}),
            false,
        );
        assert_eq!(e.last_applied["metadata"]["namespace"], "other");
        let entry = logged("Namespace", None, "shop", None);
        let e = planner_entry(
            &entry,
            serde_json::json!({"metadata": {"name": "shop"}}),
            false,
        );
        assert!(e.last_applied["metadata"].get("namespace").is_none());
    }

    #[test]
    fn desired_keys_default_the_namespace() {
        let desired = [crate::reconcile::fixtures::config_map("web", "1", false)];
        assert_eq!(desired[0].object.namespace, None);
        let keys = desired_keys(&desired, "shop");
        assert!(keys.contains(
            &crate::plan::ObjectRef::from_api_version("v1", "ConfigMap", Some("shop"), "web").key()
        ));
    }
}
