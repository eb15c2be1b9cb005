//! Owns the identity of a Kubernetes object in reckon's domain, free of kube types.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where an object lives and which API version addresses it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectRef {
    /// API group; empty for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// `None` for cluster-scoped objects, and for namespaced objects before defaulting.
    pub namespace: Option<String>,
    pub name: String,
}

/// An object's identity: [`ObjectRef`] without the version, because one object can be read and
/// written through several versions (`apps/v1` and `apps/v1beta2`) and must not be pruned and
/// re-created when a manifest moves to a newer version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

/// Whether a kind's objects live in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Scope {
    Namespaced,
    Cluster,
}

/// Group and kind: what scope (namespaced or cluster-wide) is decided by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupKind {
    pub group: String,
    pub kind: String,
}

impl ObjectRef {
    /// Splits `apiVersion` ("apps/v1" or "v1") into group and version.
    pub fn from_api_version(
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Self {
        let (group, version) = match api_version.rsplit_once('/') {
            Some((group, version)) => (group, version),
            None => ("", api_version),
        };
        Self {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        }
    }

    /// The identity, without the version.
    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            group: self.group.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    pub fn group_kind(&self) -> GroupKind {
        GroupKind {
            group: self.group.clone(),
            kind: self.kind.clone(),
        }
    }

    /// `apiVersion` as written in a manifest.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

impl ObjectKey {
    pub fn group_kind(&self) -> GroupKind {
        GroupKind {
            group: self.group.clone(),
            kind: self.kind.clone(),
        }
    }
}

impl GroupKind {
    pub fn new(group: &str, kind: &str) -> Self {
        Self {
            group: group.to_string(),
            kind: kind.to_string(),
        }
    }
}

/// `Kind.group/namespace/name`, kubectl's spelling (`Deployment.apps/web/frontend`), with
/// the group left out for the core group and the namespace for cluster-scoped objects.
impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kind)?;
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, "/{ns}")?;
        }
        write!(f, "/{}", self.name)
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.key().fmt(f)
    }
}

impl fmt::Display for GroupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.kind)
        } else {
            write!(f, "{}.{}", self.kind, self.group)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_splits_and_joins() {
        let deploy = ObjectRef::from_api_version("apps/v1", "Deployment", Some("web"), "front");
        assert_eq!(
            (deploy.group.as_str(), deploy.version.as_str()),
            ("apps", "v1")
        );
        assert_eq!(deploy.api_version(), "apps/v1");
        assert_eq!(deploy.to_string(), "Deployment.apps/web/front");
        let ns = ObjectRef::from_api_version("v1", "Namespace", None, "web");
        assert_eq!((ns.group.as_str(), ns.version.as_str()), ("", "v1"));
        assert_eq!(ns.api_version(), "v1");
        assert_eq!(ns.to_string(), "Namespace/web");
    }

    #[test]
    fn key_ignores_the_version() {
        let a = ObjectRef::from_api_version("apps/v1", "Deployment", Some("n"), "x");
        let b = ObjectRef::from_api_version("apps/v1beta2", "Deployment", Some("n"), "x");
        assert_ne!(a, b);
        assert_eq!(a.key(), b.key());
    }
}
