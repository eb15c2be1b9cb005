//! Owns rewriting rendered manifests into the form reckon applies: server defaults SSA needs,
//! no server-owned fields, and the labels that tie each object to its App.

use base64::Engine as _;
use serde_json::{Map, Value};

pub use crate::model::labels::{APP_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Metadata the API server sets; a manifest exported from a cluster carries them, and applying
/// them fails (resourceVersion conflicts) or is meaningless.
const SERVER_METADATA: [&str; 6] = [
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "managedFields",
    "generation",
    "selfLink",
];

/// Normalises one manifest in place. Idempotent. `fill_port_protocol`: see
/// [`super::RenderOptions::fill_port_protocol`].
pub fn normalize(manifest: &mut Value, app: &str, fill_port_protocol: bool) {
    let Value::Object(object) = manifest else {
        return;
    };
    object.remove("status");
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);

    if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
        for key in SERVER_METADATA {
            metadata.remove(key);
        }
        let labels = metadata
            .entry("labels")
            .or_insert_with(|| Value::Object(Map::new()));
        if !labels.is_object() {
            *labels = Value::Object(Map::new());
        }
        if let Value::Object(labels) = labels {
            labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
            labels.insert(APP_LABEL.into(), app.into());
        }
    }

    match (group, kind.as_str()) {
        ("", "Service") => {
            if fill_port_protocol && let Some(ports) = pointer_mut(object, &["spec", "ports"]) {
                default_protocol(ports);
            }
        }
        ("", "Pod") => {
            if let Some(spec) = pointer_mut(object, &["spec"]) {
                default_pod_spec(spec, fill_port_protocol);
            }
        }
        ("", "ReplicationController" | "PodTemplate")
        | ("apps" | "extensions", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch", "Job") => {
            let path: &[&str] = if kind == "PodTemplate" {
                &["template", "spec"]
            } else {
                &["spec", "template", "spec"]
            };
            if let Some(spec) = pointer_mut(object, path) {
                default_pod_spec(spec, fill_port_protocol);
            }
        }
        ("batch", "CronJob") => {
            let path = ["spec", "jobTemplate", "spec", "template", "spec"];
            if let Some(spec) = pointer_mut(object, &path) {
                default_pod_spec(spec, fill_port_protocol);
            }
        }
        ("", "Secret") => fold_string_data(object),
        ("", "PersistentVolumeClaim") => {
            if let Some(resources) = pointer_mut(object, &["spec", "resources"]) {
                resource_quantities(resources);
            }
        }
        ("", "ResourceQuota") => {
            if let Some(hard) = pointer_mut(object, &["spec", "hard"]) {
                quantities_to_strings(hard);
            }
        }
        ("", "LimitRange") => {
            if let Some(Value::Array(limits)) = pointer_mut(object, &["spec", "limits"]) {
                for limit in limits {
                    if let Value::Object(limit) = limit {
                        for key in [
                            "max",
                            "min",
                            "default",
                            "defaultRequest",
                            "maxLimitRequestRatio",
                        ] {
                            if let Some(values) = limit.get_mut(key) {
                                quantities_to_strings(values);
                            }
                        }
                    }
                }
            }
        }
        _ => {}
    }
    // StatefulSets also carry PVC templates, beside the pod template handled above.
    if (group, kind.as_str()) == ("apps", "StatefulSet")
        && let Some(Value::Array(templates)) =
            pointer_mut(object, &["spec", "volumeClaimTemplates"])
    {
        for template in templates {
            if let Some(resources) = template.pointer_mut("/spec/resources") {
                resource_quantities(resources);
            }
        }
    }
}

/// v1.20 server-side apply rejects a quantity written as a YAML number ("expected string, got
/// 0.25") where client-side apply accepted it, so numbers become the quantity strings they mean.
fn quantities_to_strings(values: &mut Value) {
    if let Value::Object(values) = values {
        for value in values.values_mut() {
            if let Value::Number(number) = value {
                *value = Value::String(quantity_text(number));
            }
        }
    }
}

fn quantity_text(number: &serde_json::Number) -> String {
    match number.as_f64() {
        // "1000.0" is a valid quantity but not what anyone wrote; keep integers integral.
        Some(f) if number.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => number.to_string(),
    }
}

/// `limits` and `requests` of a `resources` block.
fn resource_quantities(resources: &mut Value) {
    for key in ["limits", "requests"] {
        if let Some(values) = resources.get_mut(key) {
            quantities_to_strings(values);
        }
    }
}

fn pointer_mut<'a>(object: &'a mut Map<String, Value>, path: &[&str]) -> Option<&'a mut Value> {
    let (first, rest) = path.split_first()?;
    let mut current = object.get_mut(*first)?;
    for key in rest {
        current = current.as_object_mut()?.get_mut(*key)?;
    }
    Some(current)
}

/// v1.20 server-side apply rejects a port without `protocol` ("associative list with keys has
/// an element that omits key field"), since `protocol` is part of the list's merge key.
fn default_protocol(ports: &mut Value) {
    if let Value::Array(ports) = ports {
        for port in ports {
            if let Value::Object(port) = port {
                port.entry("protocol").or_insert_with(|| "TCP".into());
            }
        }
    }
}

fn default_pod_spec(spec: &mut Value, fill_port_protocol: bool) {
    let Value::Object(spec) = spec else {
        return;
    };
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for container in containers {
                if let Some(ports) = container.get_mut("ports").filter(|_| fill_port_protocol) {
                    default_protocol(ports);
                }
                if let Some(resources) = container.get_mut("resources") {
                    resource_quantities(resources);
                }
            }
        }
    }
    if let Some(overhead) = spec.get_mut("overhead") {
        quantities_to_strings(overhead);
    }
    if let Some(Value::Array(volumes)) = spec.get_mut("volumes") {
        for volume in volumes {
            if let Some(size) = volume.pointer_mut("/emptyDir/sizeLimit")
                && let Value::Number(number) = size
            {
                *size = Value::String(quantity_text(number));
            }
        }
    }
}

/// Moves `stringData` into `data` as the API server does (stringData wins on a shared key), so
/// the applied form, the live form and their drift compare in one representation. A non-string
/// value is left in `stringData` for the API server to reject with its own message.
fn fold_string_data(secret: &mut Map<String, Value>) {
    let Some(Value::Object(string_data)) = secret.remove("stringData") else {
        return;
    };
    let data = secret
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    if !data.is_object() {
        *data = Value::Object(Map::new());
    }
    let mut rejected = Map::new();
    if let Value::Object(data) = data {
        for (key, value) in string_data {
            match value {
                Value::String(text) => {
                    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                    data.insert(key, Value::String(encoded));
                }
                other => {
                    rejected.insert(key, other);
                }
            }
        }
    }
    if !rejected.is_empty() {
        secret.insert("stringData".into(), Value::Object(rejected));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// As for a server before v1.21, which needs ports' `protocol` filled in.
    fn normalized(mut value: Value) -> Value {
        normalize(&mut value, "shop", true);
        value
    }

    fn ports_at(value: &Value, pointer: &str) -> Vec<Value> {
        value
            .pointer(pointer)
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("no ports at {pointer} in {value}"))
            .iter()
            .map(|p| p["protocol"].clone())
            .collect()
    }

    #[test]
    fn drops_status_and_server_metadata_and_labels_the_app() {
        let out = normalized(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "n", "resourceVersion": "5", "uid": "u",
                         "creationTimestamp": null, "managedFields": [], "generation": 3,
                         "selfLink": "/x", "labels": {"team": "a"},
                         "annotations": {"note": "kept"}},
            "data": {"k": "v"},
            "status": {"phase": "x"}
        }));
        assert_eq!(
            out,
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "n",
                             "labels": {"team": "a", "app.kubernetes.io/managed-by": "reckon",
                                        "reckon.dev/app": "shop"},
                             "annotations": {"note": "kept"}},
                "data": {"k": "v"}
            })
        );
        assert_eq!(normalized(out.clone()), out, "idempotent");
    }

    #[test]
    fn labels_override_a_foreign_manager_label() {
        let out = normalized(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"app.kubernetes.io/managed-by": "Helm"}}}));
        assert_eq!(out["metadata"]["labels"][MANAGED_BY_LABEL], "reckon");
    }

    #[test]
    fn service_ports_default_to_tcp_and_keep_udp() {
        let out = normalized(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}}));
        assert_eq!(ports_at(&out, "/spec/ports"), [json!("TCP"), json!("UDP")]);
    }

    #[test]
    fn ports_stay_as_written_for_servers_that_default_the_protocol() {
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}});
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"}, "spec": {"template": {"spec": pod_spec()}}});
        for (mut body, pointer) in [
            (service, "/spec/ports"),
            (deployment, "/spec/template/spec/containers/0/ports"),
        ] {
            let written = body.pointer(pointer).cloned();
            normalize(&mut body, "shop", false);
            assert_eq!(body.pointer(pointer).cloned(), written, "{pointer}");
        }
    }

    fn pod_spec() -> Value {
        json!({
            "containers": [{"name": "a", "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}]},
                           {"name": "b"}],
            "initContainers": [{"name": "i", "ports": [{"containerPort": 9000}]}]
        })
    }

    fn assert_pod_spec_defaulted(out: &Value, at: &str) {
        assert_eq!(
            ports_at(out, &format!("{at}/containers/0/ports")),
            [json!("TCP"), json!("UDP")]
        );
        assert_eq!(
            ports_at(out, &format!("{at}/initContainers/0/ports")),
            [json!("TCP")]
        );
        assert_eq!(
            out.pointer(&format!("{at}/containers/1")),
            Some(&json!({"name": "b"}))
        );
    }

    #[test]
    fn container_ports_default_to_tcp_in_every_pod_template_kind() {
        let template = json!({"metadata": {"labels": {"a": "b"}}, "spec": pod_spec()});
        let cases = [
            ("v1", "Pod", json!({"spec": pod_spec()}), "/spec"),
            (
                "v1",
                "PodTemplate",
                json!({"template": template}),
                "/template/spec",
            ),
            (
                "v1",
                "ReplicationController",
                json!({"spec": {"template": template}}),
                "/spec/template/spec",
            ),
            (
                "apps/v1",
                "Deployment",
                json!({"spec": {"template": template}}),
                "/spec/template/spec",
            ),
            (
                "apps/v1",
                "StatefulSet",
                json!({"spec": {"template": template}}),
                "/spec/template/spec",
            ),
            (
                "apps/v1",
                "DaemonSet",
                json!({"spec": {"template": template}}),
                "/spec/template/spec",
            ),
            (
                "apps/v1",
                "ReplicaSet",
                json!({"spec": {"template": template}}),
                "/spec/template/spec",
            ),
            (
                "extensions/v1beta1",
                "Deployment",
                json!({"spec": {"template": template}}),
                "/spec/template/spec",
            ),
            (
                "batch/v1",
                "Job",
                json!({"spec": {"template": template}}),
                "/spec/template/spec",
            ),
            (
                "batch/v1beta1",
                "CronJob",
                json!({"spec": {"jobTemplate": {"spec": {"template": template}}}}),
                "/spec/jobTemplate/spec/template/spec",
            ),
        ];
        for (api_version, kind, mut body, at) in cases {
            body["apiVersion"] = api_version.into();
            body["kind"] = kind.into();
            body["metadata"] = json!({"name": "x"});
            let out = normalized(body);
            assert_pod_spec_defaulted(&out, at);
        }
    }

    #[test]
    fn other_groups_with_the_same_kind_are_untouched() {
        let body = json!({"apiVersion": "example.com/v1", "kind": "Deployment",
            "metadata": {"name": "x"}, "spec": {"template": {"spec": pod_spec()}}});
        let out = normalized(body.clone());
        assert_eq!(out["spec"], body["spec"]);
    }

    #[test]
    fn malformed_shapes_do_not_panic() {
        for body in [
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": "80"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [80]}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": []}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": "x"}}),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "p"}, "data": 1, "stringData": {"a": "b"}}),
            json!("not an object"),
        ] {
            normalized(body);
        }
    }

    #[test]
    fn numeric_quantities_become_strings() {
        let out = normalized(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {
                "containers": [{"name": "a", "resources": {"limits": {"cpu": 0.25, "memory": "64Mi"},
                                                           "requests": {"cpu": 1, "ephemeral-storage": 1000.0}}}],
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": 2}}}],
                "overhead": {"cpu": 0.1},
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": 100}}]}}}}),
        );
        let spec = &out["spec"]["template"]["spec"];
        assert_eq!(
            spec["containers"][0]["resources"],
            json!({"limits": {"cpu": "0.25", "memory": "64Mi"},
                                                              "requests": {"cpu": "1", "ephemeral-storage": "1000"}})
        );
        assert_eq!(
            spec["initContainers"][0]["resources"]["requests"]["cpu"],
            "2"
        );
        assert_eq!(spec["overhead"]["cpu"], "0.1");
        assert_eq!(spec["volumes"][0]["emptyDir"]["sizeLimit"], "100");

        let pvc = normalized(
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "p"},
            "spec": {"resources": {"requests": {"storage": 10}}}}),
        );
        assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "10");
        let quota = normalized(
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
            "spec": {"hard": {"pods": 10, "requests.cpu": 1.5}}}),
        );
        assert_eq!(
            quota["spec"]["hard"],
            json!({"pods": "10", "requests.cpu": "1.5"})
        );
        let range = normalized(
            json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "l"},
            "spec": {"limits": [{"type": "Container", "max": {"cpu": 2}, "defaultRequest": {"memory": "1Gi"}}]}}),
        );
        assert_eq!(
            range["spec"]["limits"][0],
            json!({"type": "Container", "max": {"cpu": "2"}, "defaultRequest": {"memory": "1Gi"}})
        );
        let sts = normalized(
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s"},
            "spec": {"volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": 5}}}}]}}),
        );
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
            "5"
        );
        // Quantities elsewhere (a ConfigMap's data) are left alone.
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"limits": 1}});
        assert_eq!(normalized(cm)["data"]["limits"], 1);
    }

    #[test]
    fn secret_string_data_is_folded_into_data() {
        let out = normalized(
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"a": "b2xk", "keep": "eA=="},
            "stringData": {"a": "new", "plain": "hello", "bad": 5}}),
        );
        assert_eq!(
            out["data"],
            json!({"a": "bmV3", "keep": "eA==", "plain": "aGVsbG8="})
        );
        assert_eq!(out["stringData"], json!({"bad": 5}));
    }
}
