//! Owns the `App` custom resource (`apps.reckon.dev/v1alpha1`, and in [`policy`] the `Policy`
//! resource App objects reference): its spec and status types, the generated
//! CustomResourceDefinitions, the conversion of an App object into the same
//! [`config::App`] that `reckon.yaml` yields, and the status computed from a pass (pure).
//!
//! The spec mirrors one `apps[]` entry of `reckon.yaml` with Kubernetes' camelCase keys. It is
//! not validated twice in two ways: an object's spec is re-encoded with the file's keys and read
//! by [`config::parse_app`], so an App object and the same App in the file get the same
//! defaults, the same checks and the same errors (named by the object's key path). Only the
//! default target namespace differs: the App object's own namespace, not `default`.
//!
//! The status carries what an operator needs at a glance (revisions, intent, conditions, last
//! sync, drift count) and the sequence number of the App's last event — never the history:
//! that lives in the store, and history in status hits etcd's object size limit.

pub mod policy;

use crate::config::{self, AdoptPolicy, ConflictPolicy, DriftMode, SignatureMode};
use chrono::{DateTime, SecondsFormat, Utc};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The API group of reckon's custom resources.
pub const GROUP: &str = "reckon.dev";

#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// The spec does not make a valid App; `key` is its path in the object (`spec.source.url`).
    #[error("App {namespace}/{name}: {key}: {message}")]
    InvalidSpec {
        namespace: String,
        name: String,
        key: String,
        message: String,
    },
    #[error("App object without {0}")]
    Metadata(&'static str),
    #[error("encoding the CustomResourceDefinition: {0}")]
    Encode(String),
}

/// One unit of sync, as a Kubernetes object: the keys of one App of `reckon.yaml` (see
/// docs/configuration.md for each), camelCased. The App is identified by the object's namespace
/// and name (`NAMESPACE.NAME` in the store and the `reckon.dev/app` label).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "reckon.dev",
    version = "v1alpha1",
    kind = "App",
    namespaced,
    status = "AppStatus",
    shortname = "rapp",
    category = "reckon",
    derive = "PartialEq",
    doc = "A Git source rendered and applied to a cluster under a policy, reconciled and recorded by reckon.",
    // Raw JSON columns: clippy takes repeated `printcolumn(type_ = ...)` for duplicated
    // attributes.
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Applied","type":"string","jsonPath":".status.appliedRevision"}"#,
    printcolumn = r#"{"name":"Intent","type":"string","jsonPath":".status.intent.kind"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
// Absent optional keys are left out, not sent as null: Kubernetes 1.20 checks a null against
// an enum's values and refuses it.
#[serde(rename_all = "camelCase")]
pub struct AppSpec {
    /// Where the manifests come from.
    pub source: SourceSpec,
    /// Which cluster and default namespace to apply to. Default: the agent's cluster and the
    /// App object's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetSpec>,
    /// Whether objects that left Git are deleted. Default: enabled, not when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneSpec>,
    /// `correct` (default), `detect` or `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftMode>,
    /// Fields neither reported nor corrected as drift.
    #[serde(default)]
    pub ignore: Vec<IgnoreSpec>,
    /// When true, the App is neither synced nor corrected (its history is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// App objects of this namespace (by name) that must be synced and healthy first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// `force` (default) or `report`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<ConflictPolicy>,
    /// `never`, `unowned` (default) or `always`: which existing objects the App may take over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<AdoptPolicy>,
    /// How long applied objects may take to become healthy, e.g. `5m` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_timeout: Option<String>,
    /// A ServiceAccount of this App object's namespace: every request for the App impersonates
    /// it. Default: the agent's `--default-service-account`, else the agent's own rights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// The policy the App's objects are checked against: a `Policy` object (cluster-scoped) or
    /// a `policies:` entry of the agent's configuration file (which wins when both have the
    /// name); it must list this namespace in its `appNamespaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// How the Helm chart at the source's path is rendered: release name and values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmSpec>,
}

/// The file's `helm` block. Values merge in this order, later winning: the chart's
/// values.yaml, valuesFiles, valuesFrom, values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelmSpec {
    /// `.Release.Name`. Default: the App's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Values files in the source, relative to its path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_files: Vec<String>,
    /// ConfigMap or Secret keys holding values documents, read at every pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_from: Vec<ValuesFromSpec>,
    /// Inline values, merged last; free-form (the keys are the chart's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_map")]
    pub values: Option<serde_json::Value>,
    /// Where the chart's Chart.lock dependencies that are not vendored under charts/ may be
    /// fetched from, with how to get in; a dependency of any other repository is a render error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<HelmRepositorySpec>,
}

/// A chart repository (https://, http://) or OCI registry (oci://HOST/PATH) as Chart.lock
/// names it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelmRepositorySpec {
    pub url: String,
    /// token or basic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// A PEM CA bundle file in the agent's filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// oci:// on a loopback host only: plain HTTP. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_http: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ValuesFromSpec {
    /// `ConfigMap` or `Secret`.
    pub kind: String,
    pub name: String,
    /// Default: `values.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Default: the App's target namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A missing object or key is no values instead of a render error. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// A map whose keys are the user's, kept as written by the API server.
fn free_form_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// Repository URL: https://, http://, ssh://, git://, file:// or user@host:path.
    pub url: String,
    /// Exactly one of branch, tag, semver, commit. Default: {branch: main}.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<RefSpec>,
    /// Directory inside the repository. Default: `.`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Poll interval, e.g. `1m` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// A PEM CA bundle file in the agent's filesystem, for https:// remotes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureSpec>,
    /// When set, url is an http(s) Helm chart repository and the App deploys this chart from
    /// it (ref, path and signature do not apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartSpec>,
}

/// A chart of a chart repository: its name in the index and a version or semver range.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChartSpec {
    pub name: String,
    /// One version (`1.2.0`) or a semver range (`>=1.2, <2`). Default: `*`, the highest release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// oci:// on a loopback host only: plain HTTP. Default: false.
    #[serde(
        default,
        rename = "insecureHttp",
        skip_serializing_if = "Option::is_none"
    )]
    pub insecure_http: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RefSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// Exactly one of token, basic, ssh; secrets are read from the agent's environment or files.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuthSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretRefSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshSpec>,
}

/// Exactly one of env (a variable of the agent) and file (a file the agent can read).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretRefSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BasicSpec {
    pub username: String,
    pub password: SecretRefSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SshSpec {
    pub key_file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts_file: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignatureSpec {
    /// `off`, `record` (default) or `require`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SignatureMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_signers: Option<String>,
    #[serde(default)]
    pub keys: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetSpec {
    /// A kubeconfig file in the agent's filesystem. Default: the cluster the agent watches
    /// App objects on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Default: the App object's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Apply the target namespace as a Namespace of the App when the rendered set does not
    /// declare it. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_namespace: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PruneSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_empty: Option<bool>,
    /// Delete adopted objects that left Git (default false: they are orphaned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted: Option<bool>,
    /// Delete a Namespace that holds objects outside the App's inventory (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_empty_namespaces: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IgnoreSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<SelectorSpec>,
    /// RFC 6901 JSON pointers, e.g. /spec/replicas.
    pub pointers: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SelectorSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What the agent reports about an App. Never its history (that is in the store): only the
/// current facts and the sequence number of the App's last event, the external anchor that
/// reveals a store lost or restored from an old backup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    /// The object generation this status describes.
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// The newest commit observed on the source ref.
    #[serde(default)]
    pub observed_revision: Option<String>,
    /// The revision whose sync last finished without failing outright.
    #[serde(default)]
    pub applied_revision: Option<String>,
    #[serde(default)]
    pub intent: Option<IntentStatus>,
    /// Ready, Reconciling, Stalled (always), StoreGap (when the store lost events of this App).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// When the last sync finished (RFC 3339).
    #[serde(default)]
    pub last_sync_time: Option<String>,
    /// Objects whose drift is detected and not corrected.
    #[serde(default)]
    pub drift_count: u64,
    /// The sequence number of the App's newest event in the store.
    #[serde(default)]
    pub last_event_seq: Option<u64>,
    /// The shard whose store `lastEventSeq` counts in (written by sharded agents; absent: shard
    /// 0, or an agent that is not sharded).
    #[serde(default)]
    pub shard: Option<u32>,
    /// Sync attempts that failed in a row. A retry that fails exactly like the attempt recorded
    /// before it is not recorded again; this counts it.
    #[serde(default)]
    pub failed_attempts: u32,
    /// When the last failed attempt ended (RFC 3339); absent once a sync succeeds.
    #[serde(default)]
    pub last_attempt_time: Option<String>,
    /// The agent's latest signed checkpoint of its whole store's head (`reckon run
    /// --checkpoint-key`): kept here, outside the store, so that `reckon store verify
    /// --checkpoint` can prove the log was not rewritten up to it (docs/storage.md).
    #[serde(default)]
    pub checkpoint: Option<StatusCheckpoint>,
    /// The App's identity in the store, the API and its objects' `reckon.dev/app` label
    /// (`NAMESPACE.NAME`, hashed past 63 characters), which `lastEventSeq` counts in. Absent:
    /// written by a reckon that keyed App objects by their name alone.
    #[serde(default)]
    pub identity: Option<String>,
}

/// A signed checkpoint of the store's head as the App status carries it: the fields of one
/// line of the checkpoint file (`store::checkpoint`), so the line can be rebuilt from it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusCheckpoint {
    pub seq: u64,
    /// The event's hash (hex).
    pub hash: String,
    /// When it was signed (RFC 3339, µs).
    pub time: String,
    /// The ed25519 public key that signed it (hex).
    pub key: String,
    /// The signature (hex).
    pub signature: String,
}

/// What the App runs: follows Git, or pinned by a rollback or pin — by whom, and why.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IntentStatus {
    /// `follow`, `rollback`, `pin` or `resume`.
    pub kind: String,
    #[serde(default)]
    pub revision: Option<String>,
    #[serde(default)]
    pub actor: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A Kubernetes-style condition (the shape of metav1.Condition).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    /// Absent when there is nothing to add to the reason. (Not a defaulted string: Kubernetes
    /// 1.20 rejects the CRD's `default: ""` for it.)
    #[serde(default)]
    pub message: Option<String>,
    pub last_transition_time: String,
    #[serde(default)]
    pub observed_generation: Option<i64>,
}

/// The CustomResourceDefinition as YAML: what `reckon crd` prints and `deploy/` commits.
pub fn crd_yaml() -> Result<String, CrdError> {
    use kube::CustomResourceExt as _;
    let encode = |crd| serde_saphyr::to_string(&crd).map_err(|e| CrdError::Encode(e.to_string()));
    let app = encode(App::crd())?;
    let policy = encode(policy::Policy::crd())?;
    Ok(format!(
        "# Generated by `reckon crd` from src/crd/mod.rs and src/crd/policy.rs; do not edit (src/crd/tests.rs fails when it is stale).\n{app}---\n{policy}"
    ))
}

// ---- spec -> config::App ----

/// The App an App object describes, as `reckon.yaml` would give it. `agent_kubeconfig` is the
/// kubeconfig the agent watches App objects with (`None`: inferred): the default target.
pub fn to_config(object: &App, agent_kubeconfig: Option<&Path>) -> Result<config::App, CrdError> {
    let name = object
        .metadata
        .name
        .clone()
        .ok_or(CrdError::Metadata("a name"))?;
    let namespace = object
        .metadata
        .namespace
        .clone()
        .ok_or(CrdError::Metadata("a namespace"))?;
    let invalid = |key: String, message: String| CrdError::InvalidSpec {
        namespace: namespace.clone(),
        name: name.clone(),
        key,
        message,
    };
    let spec = serde_json::to_value(&object.spec)
        .map_err(|e| invalid("spec".to_string(), e.to_string()))?;
    // Inline Helm values are the chart's keys, not the schema's: they keep their case.
    let mut spec = spec;
    let values = spec
        .get_mut("helm")
        .and_then(|h| h.as_object_mut())
        .and_then(|h| h.remove("values"));
    let mut entry = file_keys(spec);
    if let Some(values) = values.filter(|v| !v.is_null())
        && let Some(helm) = entry.get_mut("helm").and_then(|h| h.as_object_mut())
    {
        helm.insert("values".to_string(), values);
    }
    let map = entry.as_object_mut().expect("a struct encodes as a map");
    map.insert("name".to_string(), name.clone().into());
    // An App object acts only as a ServiceAccount of its own namespace: naming another
    // namespace's would let whoever creates App objects borrow that namespace's rights.
    if let Some(sa) = map.get_mut("service_account") {
        let text = sa.as_str().unwrap_or_default().to_string();
        if text.contains('/') {
            return Err(invalid(
                "spec.serviceAccount".to_string(),
                format!(
                    "{text:?}: an App object may only name a ServiceAccount of its own \
                     namespace ({namespace}); write its name alone"
                ),
            ));
        }
        *sa = format!("{namespace}/{text}").into();
    }
    let target = map
        .entry("target")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .expect("target is a map");
    target
        .entry("namespace")
        .or_insert_with(|| namespace.clone().into());
    if let Some(kc) = agent_kubeconfig {
        target
            .entry("kubeconfig")
            .or_insert_with(|| kc.display().to_string().into());
    }
    let text = entry.to_string();
    let what = PathBuf::from(format!("App {namespace}/{name}"));
    let mut app = config::parse_app(&text, &what).map_err(|e| match e {
        config::ConfigError::Parse { key, message, .. } => invalid(object_key(&key), message),
        config::ConfigError::Invalid { key, message, .. } => invalid(object_key(&key), message),
        other => invalid("spec".to_string(), other.to_string()),
    })?;
    // Identified by namespace and name (docs/security.md, "App identity"): two objects of one
    // name in two namespaces are two Apps, and no file App (whose names have no dot) is either.
    app.name = crate::model::identity::of_object(&namespace, &name);
    app.object = Some(config::AppObjectName {
        namespace: namespace.clone(),
        name: name.clone(),
    });
    // Its dependencies are App objects of its own namespace, named as they are there.
    for dep in &mut app.depends_on {
        *dep = crate::model::identity::of_object(&namespace, dep);
    }
    // Values read from the cluster end up in the objects the App applies: an App object may
    // read them only from its own namespace, or its creator could copy any Secret the agent can
    // read into a namespace they can read. (The file's Apps are the operator's: no such bound.)
    if let Some(helm) = app.helm.as_mut() {
        for (i, from) in helm.values_from.iter_mut().enumerate() {
            match &from.namespace {
                None => from.namespace = Some(namespace.clone()),
                Some(ns) if *ns == namespace => {}
                Some(ns) => {
                    return Err(invalid(
                        format!("spec.helm.valuesFrom[{i}].namespace"),
                        format!(
                            "an App object reads values only from its own namespace \
                             {namespace:?}, not {ns:?}"
                        ),
                    ));
                }
            }
        }
    }
    Ok(app)
}

/// The spec with the file's keys: nulls (absent optional keys) dropped so the file's defaults
/// apply, camelCase keys snake_cased. Every key in a spec is a schema key except inside
/// `helm.values` (the one free-form map, taken out before and put back after), so renaming every
/// key renames nothing a user wrote as data.
pub(crate) fn file_keys(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (snake(&k), file_keys(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(file_keys).collect()),
        other => other,
    }
}

fn snake(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A key path of the file's form (`apps[0].source.ca_file`, `source.ca_file`) as the object's
/// (`spec.source.caFile`).
fn object_key(key: &str) -> String {
    let key = key.strip_prefix("apps[0]").unwrap_or(key);
    let key = key.trim_start_matches('.');
    if key.is_empty() {
        return "spec".to_string();
    }
    let mut out = String::from("spec.");
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

// ---- status (pure) ----

/// How the App's last pass went, as the status reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum PassSummary {
    /// No pass has finished since the agent took the App on.
    NotYet,
    /// The pass could not run to the end (the store, the watch cache, ...).
    Error(String),
    NoRevision {
        fetch_failure: Option<String>,
    },
    Suspended,
    RenderFailed(String),
    /// In sync, or a sync ran with this outcome; with the App's health after it.
    Done {
        outcome: crate::event::SyncOutcome,
        health: crate::event::Health,
        fetch_failure: Option<String>,
        /// Failed sync attempts in a row (retries that failed like the recorded one are not
        /// in the log: the status counts them).
        failed_attempts: u32,
        /// Objects refused because they are not the App's (ownership conflicts), described.
        refused: Vec<String>,
        /// Writes refused because they are outside the App's namespace or policy, described.
        outside_boundary: Vec<String>,
    },
}

/// A condition before its transition time is decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionFact {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

fn fact(type_: &'static str, status: bool, reason: &str, message: String) -> ConditionFact {
    ConditionFact {
        type_,
        status,
        reason: reason.to_string(),
        message,
    }
}

/// Ready, Reconciling and Stalled from the last pass. Ready: synced and healthy. Reconciling:
/// the agent expects to get there without anyone's help (waiting for a first revision, objects
/// progressing). Stalled: it will not get there until someone changes something (Git, the spec).
pub fn pass_conditions(pass: &PassSummary) -> [ConditionFact; 3] {
    use crate::event::{Health, SyncOutcome};
    let short = |s: &Option<String>| s.clone().unwrap_or_default();
    // (status, reason) of each condition; Ready also has a message.
    type Ready<'a> = (bool, &'a str, String);
    type Other<'a> = (bool, &'a str);
    let (ready, reconciling, stalled): (Ready, Other, Other) = match pass {
        PassSummary::NotYet => (
            (false, "Starting", "the first pass has not finished".into()),
            (true, "Starting"),
            (false, "Starting"),
        ),
        PassSummary::Error(e) => (
            (false, "ReconcileError", e.clone()),
            (true, "Retrying"),
            (false, "Retrying"),
        ),
        PassSummary::NoRevision { fetch_failure } => (
            (false, "NoRevision", short(fetch_failure)),
            (fetch_failure.is_none(), "Fetching"),
            (fetch_failure.is_some(), "FetchFailed"),
        ),
        PassSummary::Suspended => (
            (false, "Suspended", "spec.suspend is true".into()),
            (false, "Suspended"),
            (false, "Suspended"),
        ),
        PassSummary::RenderFailed(e) => (
            (false, "RenderFailed", e.clone()),
            (false, "RenderFailed"),
            (true, "RenderFailed"),
        ),
        // Not the App's to write: nothing changes until someone decides who owns the objects
        // (Git, the `adopt` policy, or the other App).
        PassSummary::Done { refused, .. } if !refused.is_empty() => (
            (false, "OwnershipConflict", refused.join("; ")),
            (false, "OwnershipConflict"),
            (true, "OwnershipConflict"),
        ),
        // Likewise until Git, the App's policy or the agent's rules change.
        PassSummary::Done {
            outside_boundary, ..
        } if !outside_boundary.is_empty() => (
            (false, "OutsideBoundary", outside_boundary.join("; ")),
            (false, "OutsideBoundary"),
            (true, "OutsideBoundary"),
        ),
        PassSummary::Done {
            outcome,
            health,
            fetch_failure,
            ..
        } => match (outcome, health) {
            (SyncOutcome::Failed, _) => (
                (false, "SyncFailed", "the last sync failed".into()),
                (false, "SyncFailed"),
                (true, "SyncFailed"),
            ),
            (SyncOutcome::PartiallyFailed, _) => (
                (
                    false,
                    "SyncPartiallyFailed",
                    "some objects failed to apply or prune".into(),
                ),
                (false, "SyncPartiallyFailed"),
                (true, "SyncPartiallyFailed"),
            ),
            (SyncOutcome::Succeeded, Health::Healthy) => (
                (true, "Synced", short(fetch_failure)),
                (false, "Synced"),
                (false, "Synced"),
            ),
            (SyncOutcome::Succeeded, Health::Progressing | Health::Unknown) => (
                (
                    false,
                    "Progressing",
                    "applied objects are not ready yet".into(),
                ),
                (true, "Progressing"),
                (false, "Progressing"),
            ),
            (SyncOutcome::Succeeded, Health::Degraded | Health::Missing) => (
                (false, "Unhealthy", format!("health {health:?}")),
                (false, "Unhealthy"),
                (true, "Unhealthy"),
            ),
        },
    };
    [
        fact("Ready", ready.0, ready.1, ready.2),
        fact("Reconciling", reconciling.0, reconciling.1, String::new()),
        fact("Stalled", stalled.0, stalled.1, String::new()),
    ]
}

/// Conditions for an App object the agent cannot run (invalid spec, name taken).
pub fn refused_conditions(reason: &str, message: String) -> [ConditionFact; 3] {
    [
        fact("Ready", false, reason, message.clone()),
        fact("Reconciling", false, reason, String::new()),
        fact("Stalled", true, reason, message),
    ]
}

/// The StoreGap condition: the store lacks events this App's status had seen.
pub fn gap_condition(message: String) -> ConditionFact {
    fact("StoreGap", true, "StoreBehindStatus", message)
}

/// Conditions with transition times: a condition whose status did not change keeps the time
/// it had in `previous`, so an unchanged App yields an unchanged status (and no write).
pub fn with_times(
    facts: &[ConditionFact],
    previous: &[Condition],
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    facts
        .iter()
        .map(|f| {
            let status = if f.status { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|p| p.type_ == f.type_ && p.status == status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| rfc3339(now));
            Condition {
                type_: f.type_.to_string(),
                status: status.to_string(),
                reason: f.reason.clone(),
                message: (!f.message.is_empty()).then(|| truncate(&f.message)),
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect()
}

/// A status message stays short: errors can quote whole manifests, and status is no log.
fn truncate(message: &str) -> String {
    const MAX: usize = 1024;
    if message.len() <= MAX {
        return message.to_string();
    }
    let mut end = MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// What an App's status takes from the store's view of the App (`query::status`, which
/// implements it): this types module depends on no reader of the store.
pub trait StoredApp {
    fn observed_revision(&self) -> Option<String>;
    fn applied_revision(&self) -> Option<String>;
    fn intent(&self) -> IntentStatus;
    fn last_sync_time(&self) -> Option<DateTime<Utc>>;
    fn drift_count(&self) -> u64;
}

/// The status of an App from the store's view of it and its conditions.
pub fn status_of(
    stored: Option<&impl StoredApp>,
    last_event_seq: Option<u64>,
    conditions: Vec<Condition>,
    generation: Option<i64>,
) -> AppStatus {
    AppStatus {
        observed_generation: generation,
        observed_revision: stored.and_then(|s| s.observed_revision()),
        applied_revision: stored.and_then(|s| s.applied_revision()),
        intent: stored.map(|s| s.intent()),
        conditions,
        last_sync_time: stored.and_then(|s| s.last_sync_time().map(rfc3339)),
        drift_count: stored.map_or(0, |s| s.drift_count()),
        last_event_seq,
        shard: None,
        failed_attempts: 0,
        last_attempt_time: None,
        checkpoint: None,
        identity: None,
    }
}

/// Whether a status's `lastEventSeq` anchors shard `mine`'s store: only when that shard wrote it
/// (absent means shard 0). After an App moves to another shard, the status names an event of
/// the old shard's store, which says nothing about the new owner's.
pub fn anchor_applies(status_shard: Option<u32>, mine: u32) -> bool {
    status_shard.unwrap_or(0) == mine
}

/// Where an App object's record goes on from, decided before its first pass (pure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Continuity {
    /// The history under the App's identity (if any) is its own: carry on.
    Continue,
    /// The history under `from` (its bare name, as a previous reckon keyed App objects) is
    /// the object's: its status anchor names that history's last event. Record an
    /// `AppRenamed`.
    Rename { from: String, anchor: u64 },
    /// The history under the identity is an earlier object's of the same namespace and name:
    /// this object was created after that history's last event and has no status. Record an
    /// `AppReset`.
    Fresh { previous_seq: u64 },
}

/// What the store holds under one name: its last event, and when it was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredUnder {
    pub last_seq: u64,
    pub last_time: DateTime<Utc>,
}

/// Decides [`Continuity`] for an App object whose identity is `identity` and name `name`:
/// `status` as the object has it (`None`: never written), `created` its creation time,
/// `anchor_here` whether its status's anchor counts in this shard's store,
/// `under_identity` and `under_name` what the store holds under each, and `file_app_named`
/// whether the configuration file has an App called `name` (the bare name's history is then
/// the file App's: as before, a file App took precedence over an object of its name).
pub fn continuity(
    status: Option<&AppStatus>,
    created: Option<DateTime<Utc>>,
    anchor_here: bool,
    under_identity: Option<StoredUnder>,
    under_name: Option<StoredUnder>,
    name: &str,
    file_app_named: bool,
) -> Continuity {
    match (status, under_identity) {
        // A new object (the API server keeps no status across a deletion) whose identity has
        // history from before the object existed: an earlier object's, not this one's. History
        // recorded after its creation may be its own (a status write that failed): carry on.
        (None, Some(stored)) => match created {
            Some(created) if stored.last_time < created => Continuity::Fresh {
                previous_seq: stored.last_seq,
            },
            _ => Continuity::Continue,
        },
        // A status of a reckon that keyed App objects by name, and nothing under the identity
        // yet: the bare name's history is the object's only if its anchor is that history's
        // last event (nobody recorded under the name after this object's status saw it).
        (Some(s), None) if s.identity.is_none() && anchor_here && !file_app_named => {
            match (s.last_event_seq, under_name) {
                (Some(anchor), Some(stored)) if stored.last_seq == anchor => Continuity::Rename {
                    from: name.to_string(),
                    anchor,
                },
                _ => Continuity::Continue,
            }
        }
        _ => Continuity::Continue,
    }
}

/// Whether the store is behind the App's status: the status saw event `status_seq` of this App,
/// the store's newest event of it is `store_seq` (0: none). A store lost, or restored from a
/// backup older than the status, is behind.
pub fn store_behind(status_seq: Option<u64>, store_seq: u64) -> Option<u64> {
    status_seq.filter(|s| *s > store_seq)
}

#[cfg(test)]
mod tests;
