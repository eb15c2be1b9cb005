//! The executor's pure parts: error classification from API statuses, CRD kinds, diff
//! normalisation. Everything that talks to a server is tested in `tests/live/apply.rs`.

use super::*;
use serde_json::json;

fn api_error(status: Value) -> kube::Error {
    kube::Error::Api(Box::new(serde_json::from_value(status).unwrap()))
}

#[test]
fn a_field_manager_conflict_names_managers_and_fields() {
    // The body v1.20 returns for an apply without force over a field `kubectl-edit` owns.
    let error = api_error(json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409,
        "reason": "Conflict",
        "message": "Apply failed with 2 conflicts: conflicts with \"kubectl-edit\" using apps/v1:\n- .spec.replicas\nconflicts with \"helm\" using v1:\n- .data.mode",
        "details": {"causes": [
            {"reason": "FieldManagerConflict", "message": "conflict with \"kubectl-edit\" using apps/v1", "field": ".spec.replicas"},
            {"reason": "FieldManagerConflict", "message": "conflict with \"helm\" using v1 at 2026-01-01T00:00:00Z", "field": ".data.mode"}
        ]}
    }));
    let (message, cause) = classify(&error);
    assert!(
        message.starts_with("Apply failed with 2 conflicts"),
        "{message}"
    );
    let FailureCause::Conflict { conflicts } = cause else {
        panic!("{cause:?}");
    };
    let pairs: Vec<(&str, &str)> = conflicts
        .iter()
        .map(|c| (c.manager.as_str(), c.field.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [("kubectl-edit", ".spec.replicas"), ("helm", ".data.mode")]
    );
}

#[test]
fn other_statuses_map_to_causes_with_the_server_message() {
    let invalid = api_error(json!({"code": 422, "reason": "Invalid",
        "message": "Service \"web\" is invalid: spec.ports[0].port: Invalid value: 0",
        "details": {"causes": [{"reason": "FieldValueInvalid", "message": "Invalid value: 0", "field": "spec.ports[0].port"}]}}));
    let (message, cause) = classify(&invalid);
    assert!(message.contains("is invalid"), "{message}");
    assert_eq!(
        cause,
        FailureCause::Invalid {
            causes: vec!["spec.ports[0].port: Invalid value: 0".into()]
        }
    );
    let cases = [
        (403, "Forbidden", FailureCause::Forbidden),
        (404, "NotFound", FailureCause::NotFound),
        (
            500,
            "InternalError",
            FailureCause::Api {
                code: 500,
                reason: "InternalError".into(),
            },
        ),
        // A 409 that is not a field conflict (e.g. AlreadyExists) is not a Conflict.
        (
            409,
            "AlreadyExists",
            FailureCause::Api {
                code: 409,
                reason: "AlreadyExists".into(),
            },
        ),
    ];
    for (code, reason, want) in cases {
        let (message, cause) = classify(&api_error(
            json!({"code": code, "reason": reason, "message": "m"}),
        ));
        assert_eq!((message.as_str(), cause), ("m", want), "{code}");
    }
    // No message: the reason and code stand in for it.
    let (message, _) = classify(&api_error(
        json!({"code": 503, "reason": "ServiceUnavailable"}),
    ));
    assert_eq!(message, "ServiceUnavailable (503)");
}

#[test]
fn undeclared_and_unknown_fields_are_invalid_with_their_path() {
    // What v1.37 answers a server-side apply of a field no schema declares (a built-in kind or
    // a custom resource), whatever the fieldValidation asked for: a 500, but not a server fault.
    let undeclared = api_error(json!({"code": 500, "status": "Failure",
        "message": "failed to create typed patch object (/w; t.example/v1, Kind=Widget): .spec.colour: field not declared in schema"}));
    let (message, cause) = classify(&undeclared);
    assert!(message.contains(".spec.colour"), "{message}");
    assert_eq!(
        cause,
        FailureCause::Invalid {
            causes: vec![".spec.colour: field not declared in schema".into()]
        }
    );
    // v1.20 says the same without naming the object.
    let floor = api_error(json!({"code": 500, "status": "Failure",
        "message": "failed to create typed patch object: .datta: field not declared in schema"}));
    assert_eq!(
        classify(&floor).1,
        FailureCause::Invalid {
            causes: vec![".datta: field not declared in schema".into()]
        }
    );
    // Strict field validation on a decoded body lists every finding.
    let strict = api_error(json!({"code": 400, "reason": "BadRequest",
        "message": "Widget in version \"v1\" cannot be handled as a Widget: strict decoding error: unknown field \"spec.colour\", duplicate field \"spec.size\""}));
    assert_eq!(
        classify(&strict).1,
        FailureCause::Invalid {
            causes: vec![
                "unknown field \"spec.colour\"".into(),
                "duplicate field \"spec.size\"".into()
            ]
        }
    );
    // Any other 500 stays a server error (retried with backoff).
    let other = api_error(
        json!({"code": 500, "reason": "InternalError", "message": "etcdserver: request timed out"}),
    );
    assert!(matches!(
        classify(&other).1,
        FailureCause::Api { code: 500, .. }
    ));
}

#[test]
fn errors_name_the_object_and_the_operation() {
    let object = ObjectRef::from_api_version("apps/v1", "Deployment", Some("shop"), "web");
    let error = ApplyError::Apply {
        object: object.clone(),
        message: "the server said no".into(),
        source: api_error(json!({"code": 400})),
    };
    assert_eq!(
        error.to_string(),
        "Deployment.apps/shop/web: server-side apply: the server said no"
    );
    let error = ApplyError::Resolve { object };
    assert_eq!(
        error.to_string(),
        "Deployment.apps/shop/web: the cluster does not serve apps/v1 Deployment"
    );
}

#[test]
fn crd_kind_reads_group_and_kind() {
    let crd = json!({"spec": {"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"},
        "scope": "Namespaced", "versions": [{"name": "v1", "served": true}]}});
    assert_eq!(
        crd_kind(&crd),
        Some(GroupKind::new("example.com", "Widget"))
    );
    assert_eq!(crd_kind(&json!({"spec": {"group": "example.com"}})), None);
}

#[test]
fn diff_ignores_volatile_metadata_and_status() {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "n", "resourceVersion": "12", "uid": "u",
            "generation": 3, "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{"manager": "reckon"}], "labels": {"a": "b"}},
        "data": {"k": "v"}, "status": {"x": 1}
    }))
    .unwrap();
    assert_eq!(
        comparable(&object),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "n", "labels": {"a": "b"}},
            "data": {"k": "v"}})
    );
}

#[test]
fn secret_values_are_redacted_from_diffs() {
    let secret = ObjectRef::from_api_version("v1", "Secret", Some("n"), "s");
    let fields = changed_fields(
        &json!({"data": {"p": "b2xk"}}),
        &json!({"data": {"p": "bmV3"}}),
    );
    let redacted = redact(&secret, fields.clone());
    assert_eq!(redacted[0].pointer, "/data/p");
    assert_eq!(
        (redacted[0].before.clone(), redacted[0].after.clone()),
        (None, None)
    );
    let cm = ObjectRef::from_api_version("v1", "ConfigMap", Some("n"), "s");
    assert_eq!(redact(&cm, fields.clone()), fields);
}
