//! Owns build identity: the crate version, the commit it was built from, and the Kubernetes
//! versions reckon is tested against.

use serde::Serialize;

/// The crate version from Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit this binary was built from (`-dirty` when the tree had local changes).
pub const GIT_COMMIT: &str = env!("RECKON_GIT_COMMIT");
/// Kubernetes server versions the test suite runs against. v1.20 is the control plane built from
/// Debian's source package in CI; the k8s-openapi feature sets the newest API types compiled in.
pub const TESTED_KUBERNETES: &[&str] = &["v1.20.2"];
/// The Kubernetes API version whose types are compiled in (k8s-openapi feature).
pub const COMPILED_KUBERNETES_API: &str = "v1.33";

/// Everything `reckon version` reports about the binary itself.
#[derive(Debug, Clone, Serialize)]
pub struct BuildInfo {
    pub version: &'static str,
    pub git_commit: &'static str,
    pub tested_kubernetes: &'static [&'static str],
    pub compiled_kubernetes_api: &'static str,
}

/// The build identity of the running binary.
pub fn build_info() -> BuildInfo {
    BuildInfo {
        version: VERSION,
        git_commit: GIT_COMMIT,
        tested_kubernetes: TESTED_KUBERNETES,
        compiled_kubernetes_api: COMPILED_KUBERNETES_API,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_is_filled_in() {
        let info = build_info();
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert!(!info.git_commit.is_empty());
        assert!(info.tested_kubernetes.iter().all(|v| v.starts_with('v')));
    }
}
