//! Owns reading `metadata.managedFields` (FieldsV1) into the JSON pointers each manager owns,
//! so a drift can name who wrote the drifted fields.
//!
//! FieldsV1 is a trie: `f:<name>` is a map field, `k:<json>` a list element identified by its
//! merge-key values, `v:<json>` a set element by value, `i:<n>` a list element by index, and
//! `.` the node itself. Elements are resolved to indices in the live object; an element that
//! cannot be found (the trie and the object were read at different times) is skipped.

use super::diff::escape;
use serde_json::Value;

/// The pointers owned according to one FieldsV1 trie, resolved against the live object, sorted.
/// Leaves and `.` entries are owned; intermediate nodes are not (owning `/spec/replicas` does
/// not make a manager the owner of all of `/spec`).
pub fn owned_pointers(fields_v1: &Value, live: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(fields_v1, Some(live), String::new(), &mut out);
    out.sort();
    out.dedup();
    out
}

fn walk(trie: &Value, live: Option<&Value>, pointer: String, out: &mut Vec<String>) {
    let Some(entries) = trie.as_object() else {
        return;
    };
    if entries.is_empty() {
        out.push(pointer);
        return;
    }
    for (key, sub) in entries {
        if key == "." {
            out.push(pointer.clone());
        } else if let Some(name) = key.strip_prefix("f:") {
            let child = live.and_then(|l| l.get(name));
            walk(sub, child, format!("{pointer}/{}", escape(name)), out);
        } else if let Some(json) = key.strip_prefix("k:") {
            let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(json) else {
                continue;
            };
            let items = live.and_then(Value::as_array);
            let found = items.and_then(|items| {
                items.iter().position(|item| {
                    keys.iter()
                        .all(|(k, v)| item.get(k).is_some_and(|x| x == v))
                })
            });
            if let (Some(i), Some(items)) = (found, items) {
                walk(sub, items.get(i), format!("{pointer}/{i}"), out);
            }
        } else if let Some(json) = key.strip_prefix("v:") {
            let Ok(value) = serde_json::from_str::<Value>(json) else {
                continue;
            };
            let items = live.and_then(Value::as_array);
            if let Some(i) = items.and_then(|items| items.iter().position(|x| *x == value)) {
                out.push(format!("{pointer}/{i}"));
            }
        } else if let Some(Ok(i)) = key.strip_prefix("i:").map(str::parse::<usize>) {
            let child = live.and_then(|l| l.get(i));
            walk(sub, child, format!("{pointer}/{i}"), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolves_fields_keyed_elements_values_and_indices() {
        let live = json!({
            "metadata": {"labels": {"app": "web", "example.com/tier": "1"}, "finalizers": ["a", "b"]},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "mesh", "image": "m"}, {"name": "web", "image": "w:2", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}},
                "list": [{"x": 1}, {"x": 2}]}
        });
        let fields = json!({
            "f:metadata": {"f:labels": {".": {}, "f:example.com/tier": {}}, "f:finalizers": {"v:\"b\"": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                    ".": {}, "f:image": {},
                    "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}}}}}}},
                "f:list": {"i:1": {"f:x": {}}}
            }
        });
        assert_eq!(
            owned_pointers(&fields, &live),
            [
                "/metadata/finalizers/1",
                "/metadata/labels",
                "/metadata/labels/example.com~1tier",
                "/spec/list/1/x",
                "/spec/replicas",
                "/spec/template/spec/containers/1",
                "/spec/template/spec/containers/1/image",
                "/spec/template/spec/containers/1/ports/0",
            ]
        );
    }

    #[test]
    fn elements_missing_from_live_are_skipped() {
        let live = json!({"spec": {"containers": [{"name": "web"}]}});
        let fields = json!({"f:spec": {"f:containers": {"k:{\"name\":\"gone\"}": {"f:image": {}}, "k:not-json": {}}}});
        assert_eq!(owned_pointers(&fields, &live), Vec::<String>::new());
        // A plain field the live object lacks is still owned (it may have just been removed).
        let fields = json!({"f:spec": {"f:paused": {}}});
        assert_eq!(owned_pointers(&fields, &live), ["/spec/paused"]);
    }
}
