//! Owns field-level comparison of manifests as sets of JSON pointers (RFC 6901).
//!
//! Two comparisons with different questions:
//! - [`drifted_fields`]: which fields reckon manages (present in what it applied) differ in the
//!   live object. Fields only in the live object belong to the server or other managers and
//!   are never drift. Resource quantities compare by amount ("1024Mi" reads back as "1Gi").
//!   Lists of objects are matched by a merge key when they have one
//!   (`name`, ports, `mountPath`, ...), because the server appends defaults to elements and
//!   other managers add elements (sidecars); lists of scalars are compared whole, as atomic.
//! - [`changed_fields`]: how two applied manifests differ (what a Git change will change),
//!   symmetric and positional.

use serde_json::Value;

/// How a field differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum ChangeKind {
    /// Present on both sides with different values.
    Changed,
    /// Present in the first manifest only (applied but gone from live; or dropped from Git).
    Removed,
    /// Present in the second manifest only (only reported by [`changed_fields`]).
    Added,
}

/// One differing field, with the values on each side (`None` where absent).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldChange {
    pub pointer: String,
    pub kind: ChangeKind,
    /// Value in the first manifest (what was applied, or the old desired state).
    pub before: Option<Value>,
    /// Value in the second manifest (the live object, or the new desired state).
    pub after: Option<Value>,
}

fn change(
    pointer: String,
    kind: ChangeKind,
    before: Option<&Value>,
    after: Option<&Value>,
) -> FieldChange {
    FieldChange {
        pointer,
        kind,
        before: before.cloned(),
        after: after.cloned(),
    }
}

fn sort(changes: &mut [FieldChange]) {
    changes.sort_by(|a, b| a.pointer.cmp(&b.pointer));
}

/// Escapes one reference token (RFC 6901: `~` → `~0`, `/` → `~1`).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Whether `pointer` is `prefix` or lies beneath it (on a token boundary).
pub fn covers(prefix: &str, pointer: &str) -> bool {
    pointer == prefix
        || (pointer.starts_with(prefix) && pointer.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// Equality as the API server sees it: `1` and `1.0` are the same number.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || (x.as_f64().is_some() && x.as_f64() == y.as_f64())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Whether two values of a quantity field (`resources.limits.cpu`, ...) denote the same
/// amount: the API server stores quantities canonically, so "1024Mi" applied reads back "1Gi".
fn same_quantity(pointer: &str, a: &Value, b: &Value) -> bool {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    super::quantity::is_quantity_field(pointer)
        && matches!((text(a), text(b)), (Some(a), Some(b)) if super::quantity::equal(&a, &b))
}

/// Merge keys of common associative lists, most specific first. An element matches by the
/// first key set all applied elements carry.
const MERGE_KEYS: &[&[&str]] = &[
    &["containerPort", "protocol"],
    &["port", "protocol"],
    &["name"],
    &["mountPath"],
    &["devicePath"],
    &["ip"],
    &["topologyKey"],
];

/// A merge key's value in a list element, or the server's default for a key it fills in: a
/// port's `protocol` is `TCP` when the manifest names none (servers from v1.21 accept such a
/// port in server-side apply and store it with the default).
/// The default stands as `Null` (a `Value::String` cannot be built in a `static`), which
/// [`same_key`] reads as `TCP`.
fn key_value<'a>(item: &'a Value, key: &str) -> Option<&'a Value> {
    static DEFAULTED: Value = Value::Null;
    item.get(key).or(match key {
        "protocol" => Some(&DEFAULTED),
        _ => None,
    })
}

/// Whether two merge-key values name the same element; `Null` stands for the default `TCP`.
fn same_key(a: &Value, b: &Value) -> bool {
    let tcp = |v: &Value| v.is_null() || v.as_str() == Some("TCP");
    same(a, b) || (tcp(a) && tcp(b))
}

fn merge_key(items: &[Value]) -> Option<&'static [&'static str]> {
    MERGE_KEYS.iter().copied().find(|keys| {
        !items.is_empty()
            && items
                .iter()
                .all(|item| item.is_object() && keys.iter().all(|k| key_value(item, k).is_some()))
    })
}

/// The live fields reckon manages that differ from what it applied, sorted, with fields under
/// any of `ignored` left out.
pub fn drifted_fields(applied: &Value, live: &Value, ignored: &[&str]) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk_managed(applied, Some(live), String::new(), ignored, &mut out);
    sort(&mut out);
    out
}

fn walk_managed(
    applied: &Value,
    live: Option<&Value>,
    pointer: String,
    ignored: &[&str],
    out: &mut Vec<FieldChange>,
) {
    if ignored.iter().any(|prefix| covers(prefix, &pointer)) {
        return;
    }
    // A null in an applied manifest asks for the field to be absent; nothing is managed there.
    if applied.is_null() {
        return;
    }
    let Some(live) = live.filter(|l| !l.is_null()) else {
        out.push(change(pointer, ChangeKind::Removed, Some(applied), None));
        return;
    };
    match (applied, live) {
        (Value::Object(applied), Value::Object(live)) => {
            for (key, value) in applied {
                let child = format!("{pointer}/{}", escape(key));
                walk_managed(value, live.get(key), child, ignored, out);
            }
        }
        (Value::Array(applied_items), Value::Array(live_items)) => {
            match merge_key(applied_items) {
                Some(keys) => {
                    for (i, item) in applied_items.iter().enumerate() {
                        let found = live_items.iter().find(|candidate| {
                            keys.iter().all(|k| {
                                match (key_value(item, k), key_value(candidate, k)) {
                                    (Some(a), Some(b)) => same_key(a, b),
                                    _ => false,
                                }
                            })
                        });
                        walk_managed(item, found, format!("{pointer}/{i}"), ignored, out);
                    }
                }
                None if applied_items.iter().all(Value::is_object) => {
                    // Objects without a known merge key: positional, each a subset.
                    for (i, item) in applied_items.iter().enumerate() {
                        let child = format!("{pointer}/{i}");
                        walk_managed(item, live_items.get(i), child, ignored, out);
                    }
                }
                None => {
                    let (a, l) = (
                        Value::Array(applied_items.clone()),
                        Value::Array(live_items.clone()),
                    );
                    if !same(&a, &l) {
                        out.push(change(pointer, ChangeKind::Changed, Some(&a), Some(&l)));
                    }
                }
            }
        }
        (applied, live) => {
            if !same(applied, live) && !same_quantity(&pointer, applied, live) {
                out.push(change(
                    pointer,
                    ChangeKind::Changed,
                    Some(applied),
                    Some(live),
                ));
            }
        }
    }
}

/// Every field that differs between two manifests, sorted; objects are compared key by key
/// and lists position by position.
pub fn changed_fields(before: &Value, after: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk_both(before, after, String::new(), &mut out);
    sort(&mut out);
    out
}

fn walk_both(before: &Value, after: &Value, pointer: String, out: &mut Vec<FieldChange>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (key, value) in b {
                let child = format!("{pointer}/{}", escape(key));
                match a.get(key) {
                    Some(other) => walk_both(value, other, child, out),
                    None => out.push(change(child, ChangeKind::Removed, Some(value), None)),
                }
            }
            for (key, value) in a.iter().filter(|(k, _)| !b.contains_key(*k)) {
                let child = format!("{pointer}/{}", escape(key));
                out.push(change(child, ChangeKind::Added, None, Some(value)));
            }
        }
        (Value::Array(b), Value::Array(a)) => {
            for i in 0..b.len().max(a.len()) {
                let child = format!("{pointer}/{i}");
                match (b.get(i), a.get(i)) {
                    (Some(x), Some(y)) => walk_both(x, y, child, out),
                    (x, y) => {
                        let kind = if x.is_some() {
                            ChangeKind::Removed
                        } else {
                            ChangeKind::Added
                        };
                        out.push(change(child, kind, x, y));
                    }
                }
            }
        }
        (b, a) => {
            if !same(b, a) {
                out.push(change(pointer, ChangeKind::Changed, Some(b), Some(a)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pointers(changes: &[FieldChange]) -> Vec<(&str, ChangeKind)> {
        changes
            .iter()
            .map(|c| (c.pointer.as_str(), c.kind))
            .collect()
    }

    #[test]
    fn escaping_and_covering_follow_rfc_6901() {
        assert_eq!(escape("example.com/owner"), "example.com~1owner");
        assert_eq!(escape("a~b"), "a~0b");
        assert!(covers("/spec", "/spec/replicas"));
        assert!(covers("/spec/replicas", "/spec/replicas"));
        assert!(!covers("/spec/rep", "/spec/replicas"));
        assert!(!covers("/spec/replicas", "/spec"));
    }

    #[test]
    fn fields_only_in_live_are_not_drift() {
        let applied = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "a:1"}]}}}});
        let live = json!({"spec": {"replicas": 2, "revisionHistoryLimit": 10,
            "template": {"spec": {"dnsPolicy": "ClusterFirst",
                "containers": [{"name": "web", "image": "a:1", "imagePullPolicy": "IfNotPresent"}]}}},
            "status": {"replicas": 2}, "metadata": {"uid": "x"}});
        assert_eq!(drifted_fields(&applied, &live, &[]), vec![]);
    }

    #[test]
    fn changed_and_removed_managed_fields_are_drift() {
        let applied = json!({"metadata": {"labels": {"a": "1", "team": "x"}}, "spec": {"replicas": 2, "paused": false}});
        let live =
            json!({"metadata": {"labels": {"a": "2"}}, "spec": {"replicas": 5, "paused": false}});
        assert_eq!(
            pointers(&drifted_fields(&applied, &live, &[])),
            [
                ("/metadata/labels/a", ChangeKind::Changed),
                ("/metadata/labels/team", ChangeKind::Removed),
                ("/spec/replicas", ChangeKind::Changed),
            ]
        );
    }

    #[test]
    fn ignore_pointers_exclude_fields_and_subtrees() {
        let applied = json!({"metadata": {"annotations": {"example.com/owner": "a", "keep": "x"}}, "spec": {"replicas": 2, "template": {"x": 1}}});
        let live = json!({"metadata": {"annotations": {"example.com/owner": "b", "keep": "y"}}, "spec": {"replicas": 3, "template": {"x": 2}}});
        let all = drifted_fields(&applied, &live, &[]);
        assert_eq!(all.len(), 4);
        let some = drifted_fields(
            &applied,
            &live,
            &[
                "/spec/replicas",
                "/metadata/annotations/example.com~1owner",
                "/spec/template",
            ],
        );
        assert_eq!(
            pointers(&some),
            [("/metadata/annotations/keep", ChangeKind::Changed)]
        );
        // A prefix of a token does not cover it.
        assert_eq!(drifted_fields(&applied, &live, &["/spec/rep"]).len(), 4);
    }

    #[test]
    fn keyed_lists_match_by_merge_key_not_position() {
        let applied = json!({"containers": [{"name": "web", "image": "a:1"}, {"name": "log", "image": "b:1"}]});
        // A sidecar was injected first and elements were reordered: no drift.
        let live = json!({"containers": [{"name": "mesh", "image": "m"}, {"name": "log", "image": "b:1"}, {"name": "web", "image": "a:1"}]});
        assert_eq!(drifted_fields(&applied, &live, &[]), vec![]);
        // An image edited and a container removed are reported at the applied index.
        let live = json!({"containers": [{"name": "web", "image": "a:2"}]});
        assert_eq!(
            pointers(&drifted_fields(&applied, &live, &[])),
            [
                ("/containers/0/image", ChangeKind::Changed),
                ("/containers/1", ChangeKind::Removed),
            ]
        );
    }

    #[test]
    fn ports_match_by_port_and_protocol() {
        let applied = json!({"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP", "name": "dns-tcp"}]});
        let live = json!({"ports": [{"port": 53, "protocol": "TCP", "name": "dns-tcp", "targetPort": 53}, {"port": 53, "protocol": "UDP", "targetPort": 53}]});
        assert_eq!(drifted_fields(&applied, &live, &[]), vec![]);
    }

    #[test]
    fn ports_without_protocol_match_the_servers_tcp_default() {
        // As applied to a server from v1.21 (the manifest as written) and as it stores it.
        let applied =
            json!({"ports": [{"port": 80, "targetPort": 8080}, {"port": 53, "protocol": "UDP"}]});
        let live = json!({"ports": [{"port": 53, "protocol": "UDP", "targetPort": 53},
                                    {"port": 80, "protocol": "TCP", "targetPort": 8080}]});
        assert_eq!(drifted_fields(&applied, &live, &[]), vec![]);
        // A hand edit of the TCP port's target is still seen on the right element.
        let edited = json!({"ports": [{"port": 53, "protocol": "UDP", "targetPort": 53},
                                      {"port": 80, "protocol": "TCP", "targetPort": 9090}]});
        assert_eq!(
            pointers(&drifted_fields(&applied, &edited, &[])),
            [("/ports/0/targetPort", ChangeKind::Changed)]
        );
        // A port whose protocol was changed to UDP is not the TCP port that was applied.
        let udp = json!({"ports": [{"port": 53, "protocol": "UDP"}, {"port": 80, "protocol": "UDP", "targetPort": 8080}]});
        assert_eq!(
            pointers(&drifted_fields(&applied, &udp, &[])),
            [("/ports/0", ChangeKind::Removed)]
        );
    }

    #[test]
    fn scalar_lists_are_atomic() {
        let applied = json!({"args": ["--a", "--b"]});
        assert_eq!(
            drifted_fields(&applied, &json!({"args": ["--a", "--b"]}), &[]),
            vec![]
        );
        for live in [
            json!({"args": ["--a"]}),
            json!({"args": ["--a", "--b", "--c"]}),
            json!({"args": ["--b", "--a"]}),
        ] {
            assert_eq!(
                pointers(&drifted_fields(&applied, &live, &[])),
                [("/args", ChangeKind::Changed)],
                "{live}"
            );
        }
    }

    #[test]
    fn numbers_compare_by_value_and_nulls_are_unmanaged() {
        let applied = json!({"a": 1, "b": null, "c": 2.5});
        let live = json!({"a": 1.0, "b": "server-set", "c": 2.5});
        assert_eq!(drifted_fields(&applied, &live, &[]), vec![]);
        let live = json!({"a": 2, "c": 2.5});
        assert_eq!(
            pointers(&drifted_fields(&applied, &live, &[])),
            [("/a", ChangeKind::Changed)]
        );
    }

    #[test]
    fn changes_carry_both_values() {
        let applied = json!({"spec": {"replicas": 2, "paused": true}});
        let live = json!({"spec": {"replicas": 5}});
        let changes = drifted_fields(&applied, &live, &[]);
        assert_eq!(changes[0].pointer, "/spec/paused");
        assert_eq!(
            (changes[0].before.clone(), changes[0].after.clone()),
            (Some(json!(true)), None)
        );
        assert_eq!(
            (changes[1].before.clone(), changes[1].after.clone()),
            (Some(json!(2)), Some(json!(5)))
        );
        let changes = changed_fields(&json!({"a": 1}), &json!({"b": 2}));
        assert_eq!(
            (changes[0].before.clone(), changes[0].after.clone()),
            (Some(json!(1)), None)
        );
        assert_eq!(
            (changes[1].before.clone(), changes[1].after.clone()),
            (None, Some(json!(2)))
        );
    }

    #[test]
    fn quantities_compare_by_amount_in_quantity_fields_only() {
        let applied = json!({"resources": {"limits": {"memory": "1024Mi", "cpu": "0.5"}}, "data": {"size": "1024Mi"}});
        let live = json!({"resources": {"limits": {"memory": "1Gi", "cpu": "500m"}}, "data": {"size": "1Gi"}});
        assert_eq!(
            pointers(&drifted_fields(&applied, &live, &[])),
            [("/data/size", ChangeKind::Changed)]
        );
        let live = json!({"resources": {"limits": {"memory": "2Gi", "cpu": "500m"}}, "data": {"size": "1024Mi"}});
        assert_eq!(
            pointers(&drifted_fields(&applied, &live, &[])),
            [("/resources/limits/memory", ChangeKind::Changed)]
        );
    }

    #[test]
    fn type_changes_are_drift() {
        let applied = json!({"spec": {"selector": {"app": "x"}}});
        let live = json!({"spec": {"selector": "x"}});
        assert_eq!(
            pointers(&drifted_fields(&applied, &live, &[])),
            [("/spec/selector", ChangeKind::Changed)]
        );
    }

    #[test]
    fn changed_fields_is_symmetric_and_positional() {
        let before = json!({"data": {"a": "1", "b": "2"}, "list": [1, 2, 3], "same": {"x": 1}});
        let after = json!({"data": {"a": "9", "c": "3"}, "list": [1, 5], "same": {"x": 1}});
        assert_eq!(
            pointers(&changed_fields(&before, &after)),
            [
                ("/data/a", ChangeKind::Changed),
                ("/data/b", ChangeKind::Removed),
                ("/data/c", ChangeKind::Added),
                ("/list/1", ChangeKind::Changed),
                ("/list/2", ChangeKind::Removed),
            ]
        );
        assert_eq!(changed_fields(&before, &before), vec![]);
        let grown = json!({"list": [1, 2]});
        assert_eq!(
            pointers(&changed_fields(&json!({"list": [1]}), &grown)),
            [("/list/1", ChangeKind::Added)]
        );
    }
}
