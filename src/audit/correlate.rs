//! Owns correlation, the pure half of attribution: which recorded audit writes explain a drift
//! (or a creation outside Git). No I/O; the attributor feeds it records and drifts.
//!
//! A write is a candidate for a drift when it hit the same object (API group, plural resource,
//! namespace, name; any subresource, since `kubectl scale` writes `deployments/scale`), succeeded,
//! was not reckon's own (field manager `reckon` sent by reckon's own user), and took effect inside the drift's window (after
//! reckon last wrote the object, before the drift was seen, both widened by the clock skew
//! allowed between the API server and reckon). A candidate explains a drifted path when its
//! recorded request body set the path to the drifted value (merge/strategic patches and full
//! objects by JSON pointer, JSON patches by their operations), or when it is the deletion that
//! removed the object. Without any request body (audit level `Metadata`) the only write in the
//! window explains the drift; two or more leave it unexplained. Nothing else is inferred.

use super::model::AuditRecord;
use crate::event::{AuditWriter, FieldDiff, ObjectRef};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use std::collections::BTreeSet;

/// A drift to attribute, with what the attributor knows around it.
#[derive(Clone, Debug)]
pub struct DriftWindow<'a> {
    pub object: &'a ObjectRef,
    /// The object's plural resource name (from discovery), as audit events name it.
    pub resource: &'a str,
    pub diffs: &'a [FieldDiff],
    /// When reckon recorded the drift.
    pub detected: DateTime<Utc>,
    /// When reckon last wrote the object before the drift (writes before it were overwritten).
    pub since: DateTime<Utc>,
    /// Whose writes are reckon's own.
    pub reckon: &'a Reckon,
}

/// What correlation concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribution {
    pub writers: Vec<AuditWriter>,
    pub unexplained: Vec<String>,
}

impl Attribution {
    /// Every drifted path is explained: waiting for more audit events cannot change the answer
    /// except to add a later writer of the same value, which the window rules out.
    pub fn complete(&self) -> bool {
        self.unexplained.is_empty() && !self.writers.is_empty()
    }
}

/// Who reckon is on the API server: the users its own credentials authenticate as (from the
/// server's `SelfSubjectReview`, or `--audit-own-user`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reckon {
    users: BTreeSet<String>,
}

/// reckon's users not known: the field manager alone decides (see [`Reckon::wrote`]).
pub static UNKNOWN: Reckon = Reckon {
    users: BTreeSet::new(),
};

impl Reckon {
    pub fn new(users: impl IntoIterator<Item = String>) -> Reckon {
        Reckon {
            users: users.into_iter().filter(|u| !u.is_empty()).collect(),
        }
    }

    pub fn known(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether `r` is reckon's own write, which never explains a drift: it names reckon's field
    /// manager AND was sent by one of reckon's users, acting as itself or as a ServiceAccount
    /// (an App's `service_account`). The field manager is only a query parameter any writer
    /// may set (`kubectl patch --field-manager=reckon`); without the user check such a write
    /// escaped attribution. With no user known the field manager alone decides, as before.
    pub fn wrote(&self, r: &AuditRecord) -> bool {
        if r.field_manager.as_deref() != Some(crate::plan::FIELD_MANAGER) {
            return false;
        }
        if !self.known() {
            return true;
        }
        self.users.contains(&r.username)
            && r.impersonated
                .as_deref()
                .is_none_or(|u| u.starts_with("system:serviceaccount:"))
    }
}

/// Whether `r` is a successful write to the drifted object inside the window.
fn candidate(r: &AuditRecord, d: &DriftWindow<'_>, skew: Duration) -> bool {
    r.group == d.object.group
        && r.resource == d.resource
        && r.namespace == d.object.namespace
        && r.name.as_deref() == Some(d.object.name.as_str())
        && !d.reckon.wrote(r)
        && r.time >= d.since - skew
        && r.time <= d.detected + skew
}

/// A deleted object: the drift's one diff has the empty path and no actual value.
fn is_deletion(diffs: &[FieldDiff]) -> bool {
    diffs
        .iter()
        .any(|f| f.path.is_empty() && f.actual.is_none())
}

/// Secret values are recorded redacted: then only the path can be compared.
const REDACTED: &str = "\"<redacted>\"";

/// Whether a request body carried `actual` at `pointer`. `actual: None` (the field was removed)
/// matches an explicit `null` (merge patch) or a JSON patch `remove`.
fn body_sets(body: &Value, pointer: &str, actual: Option<&str>) -> bool {
    let wanted: Option<Value> = match actual {
        None => None,
        Some(a) if a == REDACTED => Some(Value::Null),
        Some(a) => match serde_json::from_str(a) {
            Ok(v) => Some(v),
            Err(_) => return false,
        },
    };
    let redacted = actual == Some(REDACTED);
    let value_matches = |v: &Value| match (&wanted, redacted) {
        (_, true) => !v.is_null(),
        (None, false) => v.is_null(),
        (Some(w), false) => same(v, w),
    };
    match body {
        // A JSON patch: its operations name paths.
        Value::Array(ops) => ops.iter().any(|op| {
            let path = op.get("path").and_then(Value::as_str).unwrap_or("");
            if !paths_match(path, pointer) {
                return false;
            }
            match op.get("op").and_then(Value::as_str) {
                Some("remove") => wanted.is_none() && !redacted,
                Some("add") | Some("replace") => op.get("value").is_some_and(value_matches),
                _ => false,
            }
        }),
        _ => lookup(body, pointer).iter().any(|v| value_matches(v)),
    }
}

/// The values at `pointer` in `body`; a list index in the pointer also matches any element of
/// the list, because a strategic merge patch lists only the changed elements (by key), so the
/// position in the patch differs from the position in the object.
fn lookup<'v>(body: &'v Value, pointer: &str) -> Vec<&'v Value> {
    if pointer.is_empty() {
        return vec![body];
    }
    let mut current = vec![body];
    for token in pointer.trim_start_matches('/').split('/') {
        let token = token.replace("~1", "/").replace("~0", "~");
        let mut next = Vec::new();
        for v in current {
            match v {
                Value::Object(m) => {
                    if let Some(c) = m.get(&token) {
                        next.push(c);
                    }
                }
                Value::Array(a) if token.parse::<usize>().is_ok() => next.extend(a.iter()),
                _ => {}
            }
        }
        current = next;
    }
    current
}

/// JSON patch paths against a drift pointer: equal, with list indexes treated as any index.
fn paths_match(a: &str, b: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split('/').collect(), b.split('/').collect());
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(x, y)| x == y || (x.parse::<usize>().is_ok() && y.parse::<usize>().is_ok()))
}

/// Equality as the API server sees it: `1` and `1.0` are the same number.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// The event form of a record, explaining `fields`.
pub fn writer(r: &AuditRecord, fields: Vec<String>, evidence: &str) -> AuditWriter {
    AuditWriter {
        username: r.username.clone(),
        uid: r.uid.clone(),
        groups: r.groups.clone(),
        impersonated: r.impersonated.clone(),
        user_agent: r.user_agent.clone(),
        source_ips: r.source_ips.clone(),
        audit_id: r.audit_id.clone(),
        verb: r.verb.clone(),
        subresource: r.subresource.clone(),
        time: r.time,
        fields,
        evidence: evidence.to_string(),
    }
}

/// Which of `records` explain the drift. Each drifted path goes to the newest candidate whose
/// body set it (the last write decides the live value); a deletion to the newest deleting
/// candidate.
pub fn attribute<'r>(
    d: &DriftWindow<'_>,
    records: impl IntoIterator<Item = &'r AuditRecord>,
    skew: Duration,
) -> Attribution {
    let mut candidates: Vec<&AuditRecord> = records
        .into_iter()
        .filter(|r| candidate(r, d, skew))
        .collect();
    candidates.sort_by_key(|r| r.time);
    // (index into candidates, explained paths)
    let mut explained: Vec<(usize, Vec<String>)> = Vec::new();
    let mut unexplained = Vec::new();
    let mut credit = |i: usize, path: &str| match explained.iter_mut().find(|(j, _)| *j == i) {
        Some((_, paths)) => paths.push(path.to_string()),
        None => explained.push((i, vec![path.to_string()])),
    };
    if is_deletion(d.diffs) {
        match candidates
            .iter()
            .rposition(|r| r.verb == "delete" && r.subresource.is_none())
        {
            Some(i) => credit(i, ""),
            None => unexplained.push(String::new()),
        }
    } else {
        for diff in d.diffs {
            let by = candidates.iter().rposition(|r| {
                r.verb != "delete"
                    && r.request_object
                        .as_ref()
                        .is_some_and(|b| body_sets(b, &diff.path, diff.actual.as_deref()))
            });
            match by {
                Some(i) => credit(i, &diff.path),
                None => unexplained.push(diff.path.clone()),
            }
        }
    }
    let mut writers: Vec<AuditWriter> = {
        explained.sort_by_key(|(i, _)| *i);
        explained
            .into_iter()
            .map(|(i, fields)| writer(candidates[i], fields, "request-body"))
            .collect()
    };
    // Audit level Metadata: no body anywhere to compare; the only write in the window it is.
    if !unexplained.is_empty()
        && candidates.len() == 1
        && candidates[0].request_object.is_none()
        && writers.is_empty()
    {
        writers.push(writer(
            candidates[0],
            std::mem::take(&mut unexplained),
            "only-write",
        ));
    }
    Attribution {
        writers,
        unexplained,
    }
}

/// Whether `r` created an object by hand: a successful create (not through a subresource, not
/// by reckon) of an object no controller owns (ownerReferences in the body mean a controller
/// made it for an owner, like a Deployment's ReplicaSets).
pub fn is_manual_creation(r: &AuditRecord, reckon: &Reckon) -> bool {
    r.verb == "create"
        && r.subresource.is_none()
        && r.name.is_some()
        && !reckon.wrote(r)
        && r.request_object
            .as_ref()
            .and_then(|b| b.pointer("/metadata/ownerReferences"))
            .and_then(Value::as_array)
            .is_none_or(|o| o.is_empty())
}

/// The object a creation record names: kind and version from the body when recorded, else the
/// resource name stands in for the kind.
pub fn created_object(r: &AuditRecord) -> ObjectRef {
    let body = r.request_object.as_ref();
    let kind = body
        .and_then(|b| b.get("kind"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| r.resource.clone());
    ObjectRef::new(crate::model::ObjectRef {
        group: r.group.clone(),
        version: r.api_version.clone(),
        kind,
        namespace: r.namespace.clone(),
        name: r.name.clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_764_000_000_000 + ms).unwrap()
    }

    fn dep() -> ObjectRef {
        ObjectRef::new(crate::model::ObjectRef {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: "web".into(),
        })
    }

    fn rec(
        id: &str,
        user: &str,
        verb: &str,
        sub: Option<&str>,
        at: i64,
        body: Option<Value>,
    ) -> AuditRecord {
        AuditRecord {
            audit_id: id.into(),
            verb: verb.into(),
            username: user.into(),
            uid: None,
            groups: vec!["system:authenticated".into()],
            impersonated: None,
            user_agent: Some("kubectl/v1.32.4".into()),
            source_ips: vec!["127.0.0.1".into()],
            group: "apps".into(),
            api_version: "v1".into(),
            resource: "deployments".into(),
            subresource: sub.map(str::to_string),
            namespace: Some("shop".into()),
            name: Some("web".into()),
            field_manager: None,
            request_object: body,
            time: t(at),
        }
    }

    fn diff(path: &str, actual: Option<&str>) -> FieldDiff {
        FieldDiff {
            path: path.into(),
            expected: Some("1".into()),
            actual: actual.map(str::to_string),
        }
    }

    fn window<'a>(o: &'a ObjectRef, diffs: &'a [FieldDiff]) -> DriftWindow<'a> {
        DriftWindow {
            object: o,
            resource: "deployments",
            diffs,
            detected: t(10_000),
            since: t(0),
            reckon: &UNKNOWN,
        }
    }

    const SKEW: Duration = Duration::seconds(2);

    fn who(a: &Attribution) -> Vec<(&str, Vec<&str>, &str)> {
        a.writers
            .iter()
            .map(|w| {
                (
                    w.username.as_str(),
                    w.fields.iter().map(String::as_str).collect(),
                    w.evidence.as_str(),
                )
            })
            .collect()
    }

    #[test]
    fn a_scale_subresource_write_explains_the_replicas() {
        let o = dep();
        let diffs = [diff("/spec/replicas", Some("3"))];
        let records = [
            rec(
                "a",
                "alice",
                "patch",
                Some("scale"),
                5_000,
                Some(json!({"spec": {"replicas": 3}})),
            ),
            // bob wrote a label on the same object: his body does not set the replicas.
            rec(
                "b",
                "bob",
                "patch",
                None,
                6_000,
                Some(json!({"metadata": {"labels": {"x": "y"}}})),
            ),
        ];
        let a = attribute(&window(&o, &diffs), &records, SKEW);
        assert_eq!(
            who(&a),
            vec![("alice", vec!["/spec/replicas"], "request-body")]
        );
        assert_eq!(a.writers[0].subresource.as_deref(), Some("scale"));
        assert!(a.complete());
    }

    #[test]
    fn two_people_two_fields_each_credited_with_their_own() {
        let o = dep();
        let diffs = [
            diff("/spec/replicas", Some("3")),
            diff("/metadata/labels/team", Some("\"ops\"")),
        ];
        let records = [
            rec(
                "a",
                "alice",
                "update",
                Some("scale"),
                5_000,
                Some(json!({"kind": "Scale", "spec": {"replicas": 3}})),
            ),
            rec(
                "b",
                "bob",
                "patch",
                None,
                6_000,
                Some(json!({"metadata": {"labels": {"team": "ops"}}})),
            ),
        ];
        let a = attribute(&window(&o, &diffs), &records, SKEW);
        assert_eq!(
            who(&a),
            vec![
                ("alice", vec!["/spec/replicas"], "request-body"),
                ("bob", vec!["/metadata/labels/team"], "request-body")
            ]
        );
    }

    #[test]
    fn the_newest_writer_of_the_value_wins() {
        let o = dep();
        let diffs = [diff("/spec/replicas", Some("3"))];
        let records = [
            rec(
                "a",
                "alice",
                "patch",
                None,
                7_000,
                Some(json!({"spec": {"replicas": 3}})),
            ),
            rec(
                "b",
                "bob",
                "patch",
                None,
                2_000,
                Some(json!({"spec": {"replicas": 3}})),
            ),
        ];
        let a = attribute(&window(&o, &diffs), &records, SKEW);
        assert_eq!(
            who(&a),
            vec![("alice", vec!["/spec/replicas"], "request-body")]
        );
    }

    #[test]
    fn a_write_of_another_value_explains_nothing() {
        let o = dep();
        let diffs = [diff("/spec/replicas", Some("3"))];
        let records = [rec(
            "a",
            "alice",
            "patch",
            None,
            5_000,
            Some(json!({"spec": {"replicas": 4}})),
        )];
        let a = attribute(&window(&o, &diffs), &records, SKEW);
        assert!(a.writers.is_empty(), "{a:?}");
        assert_eq!(a.unexplained, vec!["/spec/replicas"]);
        assert!(!a.complete());
    }

    #[test]
    fn writes_outside_the_window_or_to_other_objects_or_by_reckon_are_not_candidates() {
        let o = dep();
        let diffs = [diff("/spec/replicas", Some("3"))];
        let body = || Some(json!({"spec": {"replicas": 3}}));
        let before = rec("a", "alice", "patch", None, -5_000, body());
        let after = rec("b", "bob", "patch", None, 20_000, body());
        let mut other_ns = rec("c", "carol", "patch", None, 5_000, body());
        other_ns.namespace = Some("else".into());
        let mut other_name = rec("d", "dave", "patch", None, 5_000, body());
        other_name.name = Some("api".into());
        let mut other_group = rec("e", "erin", "patch", None, 5_000, body());
        other_group.group = "extensions".into();
        let mut reckon = rec(
            "f",
            "system:serviceaccount:reckon:reckon",
            "patch",
            None,
            5_000,
            body(),
        );
        reckon.field_manager = Some("reckon".into());
        let records = [before, after, other_ns, other_name, other_group, reckon];
        let a = attribute(&window(&o, &diffs), &records, SKEW);
        assert!(a.writers.is_empty(), "{a:?}");
        // Inside the skew allowance either side counts.
        let early = rec("g", "gina", "patch", None, -1_500, body());
        let late = rec("h", "hal", "patch", None, 11_500, body());
        let a = attribute(&window(&o, &diffs), std::slice::from_ref(&early), SKEW);
        assert_eq!(who(&a)[0].0, "gina");
        let a = attribute(&window(&o, &diffs), &[late], SKEW);
        assert_eq!(who(&a)[0].0, "hal");
    }

    #[test]
    fn a_deletion_is_explained_by_the_delete_verb() {
        let o = dep();
        let diffs = [FieldDiff {
            path: String::new(),
            expected: None,
            actual: None,
        }];
        let records = [
            rec(
                "a",
                "alice",
                "patch",
                None,
                3_000,
                Some(json!({"spec": {"replicas": 3}})),
            ),
            rec(
                "b",
                "bob",
                "delete",
                None,
                4_000,
                Some(json!({"kind": "DeleteOptions"})),
            ),
        ];
        let a = attribute(&window(&o, &diffs), &records, SKEW);
        assert_eq!(who(&a), vec![("bob", vec![""], "request-body")]);
        assert!(a.complete());
        let a = attribute(&window(&o, &diffs), &records[..1], SKEW);
        assert_eq!(a.unexplained, vec![""]);
        assert!(a.writers.is_empty());
    }

    #[test]
    fn strategic_merge_lists_and_json_patches_match_by_key_and_path() {
        let o = dep();
        let diffs = [diff(
            "/spec/template/spec/containers/1/image",
            Some("\"web:v9\""),
        )];
        // The patch lists only the changed container (by name), at position 0.
        let smp = rec(
            "a",
            "alice",
            "patch",
            None,
            5_000,
            Some(
                json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:v9"}]}}}}),
            ),
        );
        let a = attribute(&window(&o, &diffs), &[smp], SKEW);
        assert_eq!(who(&a)[0].0, "alice");
        let jp = rec(
            "b",
            "bob",
            "patch",
            None,
            5_000,
            Some(
                json!([{"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "web:v9"}]),
            ),
        );
        let a = attribute(&window(&o, &diffs), &[jp], SKEW);
        assert_eq!(who(&a)[0].0, "bob");
        // A removed field: a merge patch's null or a JSON patch remove.
        let removed = [diff("/metadata/labels/team", None)];
        let null = rec(
            "c",
            "carol",
            "patch",
            None,
            5_000,
            Some(json!({"metadata": {"labels": {"team": null}}})),
        );
        assert_eq!(
            who(&attribute(&window(&o, &removed), &[null], SKEW))[0].0,
            "carol"
        );
        let rm = rec(
            "d",
            "dave",
            "patch",
            None,
            5_000,
            Some(json!([{"op": "remove", "path": "/metadata/labels/team"}])),
        );
        assert_eq!(
            who(&attribute(&window(&o, &removed), &[rm], SKEW))[0].0,
            "dave"
        );
    }

    #[test]
    fn without_request_bodies_only_a_single_write_is_named() {
        let o = dep();
        let diffs = [diff("/spec/replicas", Some("3"))];
        let one = [rec("a", "alice", "patch", Some("scale"), 5_000, None)];
        let a = attribute(&window(&o, &diffs), &one, SKEW);
        assert_eq!(
            who(&a),
            vec![("alice", vec!["/spec/replicas"], "only-write")]
        );
        assert!(a.complete());
        let two = [
            rec("a", "alice", "patch", None, 5_000, None),
            rec("b", "bob", "patch", None, 6_000, None),
        ];
        let a = attribute(&window(&o, &diffs), &two, SKEW);
        assert!(a.writers.is_empty(), "two writers and no body: no guess");
        assert_eq!(a.unexplained, vec!["/spec/replicas"]);
    }

    #[test]
    fn redacted_secret_values_match_by_path() {
        let mut o = dep();
        o.group = String::new();
        o.kind = "Secret".into();
        let diffs = [diff("/data/password", Some(REDACTED))];
        let mut r = rec(
            "a",
            "alice",
            "patch",
            None,
            5_000,
            Some(json!({"data": {"password": "aGk="}})),
        );
        r.group = String::new();
        r.resource = "secrets".into();
        let w = DriftWindow {
            resource: "secrets",
            ..window(&o, &diffs)
        };
        assert_eq!(who(&attribute(&w, &[r], SKEW))[0].0, "alice");
    }

    #[test]
    fn manual_creations_exclude_owned_objects_and_reckon() {
        let mut c = rec(
            "a",
            "bob",
            "create",
            None,
            0,
            Some(json!({"kind": "Deployment", "metadata": {"name": "web"}})),
        );
        assert!(is_manual_creation(&c, &UNKNOWN));
        assert_eq!(created_object(&c).kind, "Deployment");
        c.field_manager = Some("reckon".into());
        assert!(!is_manual_creation(&c, &UNKNOWN));
        let owned = rec(
            "b",
            "system:serviceaccount:kube-system:deployment-controller",
            "create",
            None,
            0,
            Some(
                json!({"metadata": {"name": "web-5d4", "ownerReferences": [{"kind": "Deployment"}]}}),
            ),
        );
        assert!(!is_manual_creation(&owned, &UNKNOWN));
    }

    #[test]
    fn reckons_field_manager_from_anyone_but_reckon_is_attributed() {
        let o = dep();
        let diffs = [diff("/spec/replicas", Some("3"))];
        let body = || Some(json!({"spec": {"replicas": 3}}));
        let as_reckon = |id: &str, user: &str, impersonated: Option<&str>| {
            let mut r = rec(id, user, "patch", None, 5_000, body());
            r.field_manager = Some("reckon".into());
            r.impersonated = impersonated.map(str::to_string);
            r
        };
        let agent = "system:serviceaccount:reckon:reckon";
        let reckon = Reckon::new([agent.to_string()]);
        let w = DriftWindow {
            reckon: &reckon,
            ..window(&o, &diffs)
        };
        // Someone else naming reckon's field manager is still named.
        let spoof = as_reckon("a", "mallory", None);
        assert_eq!(who(&attribute(&w, [&spoof], SKEW))[0].0, "mallory");
        // The agent itself, and the agent acting as an App's ServiceAccount, are reckon.
        let own = as_reckon("b", agent, None);
        assert!(attribute(&w, [&own], SKEW).writers.is_empty());
        let for_app = as_reckon("c", agent, Some("system:serviceaccount:team-a:deployer"));
        assert!(attribute(&w, [&for_app], SKEW).writers.is_empty());
        // The agent's credentials impersonating a person (a kubeconfig that may impersonate):
        // that is the person's write.
        let as_person = as_reckon("d", agent, Some("mallory"));
        assert_eq!(attribute(&w, [&as_person], SKEW).writers.len(), 1);
        // Not reckon's field manager: never reckon's, whoever sent it.
        let mut by_hand = rec("e", agent, "patch", None, 5_000, body());
        by_hand.field_manager = Some("kubectl-edit".into());
        assert!(!reckon.wrote(&by_hand));
        // Creations follow the same rule.
        let mut created = as_reckon("f", "mallory", None);
        created.verb = "create".into();
        created.request_object = Some(json!({"kind": "Deployment", "metadata": {"name": "x"}}));
        assert!(is_manual_creation(&created, &reckon));
        assert!(!is_manual_creation(&created, &UNKNOWN));
        // Unknown users: the field manager alone, as before (warned about at start).
        assert!(UNKNOWN.wrote(&spoof));
        assert!(!Reckon::new([String::new()]).known());
    }
}
