//! Owns the `Policy` custom resource (`policies.reckon.dev/v1alpha1`, cluster-scoped): the
//! keys of one `policies:` entry of `reckon.yaml` as a Kubernetes object, read into the same
//! [`config::Policy`] so both forms mean the same.
//!
//! Cluster-scoped, like a ClusterRole: a policy bounds what tenants' Apps may write, so it must
//! be written by someone the tenants are not. Writing a cluster-scoped object takes cluster-level
//! RBAC that namespace admins do not have; a namespaced Policy could be loosened by whoever may
//! create App objects in that namespace. Which namespaces' App objects may reference it is the
//! Policy's own `appNamespaces` (Argo CD's AppProject `sourceNamespaces`), as in the file.

use crate::config::{self, OnViolation};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Rules for the objects of the App objects that reference it (`spec.policy`): the keys of one
/// `policies:` entry of `reckon.yaml` (docs/configuration.md, "Policies"), camelCased; the
/// object's name is the policy's name.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "reckon.dev",
    version = "v1alpha1",
    kind = "Policy",
    shortname = "rpol",
    category = "reckon",
    derive = "PartialEq",
    doc = "Allowed namespaces and kinds for the objects of the reckon App objects that reference it."
)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// Namespaces (globs: `*` any run of characters, `?` one) a namespaced object may be in.
    /// At least one.
    pub namespaces: Vec<String>,
    /// Namespaced kinds. Default: every kind allowed, none denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaced_kinds: Option<KindRulesSpec>,
    /// Cluster-scoped kinds. Default: none allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_kinds: Option<KindRulesSpec>,
    /// Namespaces (globs) whose App objects may reference this policy. Default: none.
    #[serde(default)]
    pub app_namespaces: Vec<String>,
    /// `skip_object` (default: the object is refused, the rest applied) or `fail_app`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_violation: Option<OnViolation>,
}

/// Allowed and denied kinds; `deny` wins.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KindRulesSpec {
    #[serde(default)]
    pub allow: Vec<KindPatternSpec>,
    #[serde(default)]
    pub deny: Vec<KindPatternSpec>,
}

/// A group and kind, each a glob; `group: ""` is the core group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KindPatternSpec {
    /// Default: `*`, any group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub kind: String,
}

/// The policy a Policy object describes, as `reckon.yaml` would give it.
pub fn to_config(object: &Policy) -> Result<config::Policy, super::CrdError> {
    let name = object
        .metadata
        .name
        .clone()
        .ok_or(super::CrdError::Metadata("a name"))?;
    let invalid = |message: String| super::CrdError::InvalidSpec {
        namespace: String::new(),
        name: name.clone(),
        key: "spec".to_string(),
        message,
    };
    let mut entry =
        super::file_keys(serde_json::to_value(&object.spec).map_err(|e| invalid(e.to_string()))?);
    entry
        .as_object_mut()
        .expect("a struct encodes as a map")
        .insert("name".to_string(), name.clone().into());
    let policy: config::Policy =
        serde_json::from_value(entry).map_err(|e| invalid(e.to_string()))?;
    if policy.namespaces.is_empty() {
        return Err(invalid(
            "namespaces: name at least one namespace (glob) the policy's Apps may write to".into(),
        ));
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_object_means_what_the_files_entry_means() {
        let object: Policy = serde_json::from_value(serde_json::json!({
            "apiVersion": "reckon.dev/v1alpha1",
            "kind": "Policy",
            "metadata": {"name": "tenants"},
            "spec": {
                "namespaces": ["team-*"],
                "namespacedKinds": {"deny": [{"group": "", "kind": "Secret"}]},
                "clusterKinds": {"allow": [{"kind": "*"}],
                                 "deny": [{"group": "rbac.authorization.k8s.io", "kind": "ClusterRole"}]},
                "appNamespaces": ["team-a"],
                "onViolation": "fail_app"
            }
        }))
        .unwrap();
        let from_file: config::Config = config::parse(
            "policies:\n  - name: tenants\n    namespaces: [team-*]\n    namespaced_kinds: {deny: [{group: \"\", kind: Secret}]}\n    cluster_kinds: {allow: [{kind: \"*\"}], deny: [{group: rbac.authorization.k8s.io, kind: ClusterRole}]}\n    app_namespaces: [team-a]\n    on_violation: fail_app\napps: []\n",
            std::path::Path::new("reckon.yaml"),
        )
        .unwrap();
        assert_eq!(to_config(&object).unwrap(), from_file.policies[0]);
        let empty = Policy::new("open", PolicySpec::default());
        let e = to_config(&empty).unwrap_err().to_string();
        assert!(e.contains("at least one namespace"), "{e}");
    }
}
