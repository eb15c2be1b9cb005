//! Owns build identity: the crate version, the commit it was built from, and the Kubernetes
//! versions reckon is tested against; and a server's release (`ServerVersion`): which request
//! options it has and where it stands against that range (pure).

use serde::Serialize;

/// The crate version from Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit this binary was built from (`-dirty` when the tree had local changes).
pub const GIT_COMMIT: &str = env!("RECKON_GIT_COMMIT");
/// Kubernetes server versions the test suite runs against, the two ends of its version matrix:
/// the newest release (built from Go modules, the whole suite) and the floor (built from Debian's
/// source package, the live apply, plan, watch, discovery and reconcile tests). The newest must
/// match `tests/testenv/k8s/kubernetes/go.mod` (a unit test checks).
pub const TESTED_KUBERNETES: &[&str] = &["v1.20.2", "v1.37.2"];
/// The minor releases reckon supports, oldest and newest (`major.minor`): the ends of
/// [`TESTED_KUBERNETES`]. Releases between them are expected to work; neither end is a guess.
pub const SUPPORTED_KUBERNETES: SupportedRange = SupportedRange {
    oldest: (1, 20),
    newest: (1, 37),
};
/// The Kubernetes API version whose types are compiled in (k8s-openapi feature).
pub const COMPILED_KUBERNETES_API: &str = "v1.33";

/// A range of Kubernetes minor releases, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupportedRange {
    pub oldest: (u32, u32),
    pub newest: (u32, u32),
}

impl SupportedRange {
    /// Where a server of release `major.minor` stands.
    pub fn support_of(&self, major: u32, minor: u32) -> Support {
        if (major, minor) < self.oldest {
            Support::OlderThanSupported
        } else if (major, minor) > self.newest {
            Support::NewerThanTested
        } else {
            Support::Supported
        }
    }
}

impl Serialize for SupportedRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("SupportedRange", 2)?;
        st.serialize_field("oldest", &format!("v{}.{}", self.oldest.0, self.oldest.1))?;
        st.serialize_field("newest", &format!("v{}.{}", self.newest.0, self.newest.1))?;
        st.end()
    }
}

impl std::fmt::Display for SupportedRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (o, n) = (self.oldest, self.newest);
        write!(f, "v{}.{} to v{}.{}", o.0, o.1, n.0, n.1)
    }
}

/// The API server's version, read once per catalog; decides which request options exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
    /// As reported, e.g. `v1.20.2`.
    pub git_version: String,
}

impl ServerVersion {
    /// From `/version`'s fields; `minor` may carry a suffix (`"20+"` on managed clusters).
    /// Unparseable numbers read as 0, i.e. as the oldest server: options a server may not
    /// know are then left out rather than sent.
    pub fn parse(major: &str, minor: &str, git_version: &str) -> Self {
        let number = |s: &str| {
            s.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap_or(0)
        };
        Self {
            major: number(major),
            minor: number(minor),
            git_version: git_version.to_string(),
        }
    }

    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// `fieldValidation` (and kube's `validation_strict()`) exists from 1.25; older servers
    /// reject or ignore it depending on the version, so it is only sent to 1.25+.
    pub fn supports_field_validation(&self) -> bool {
        self.at_least(1, 25)
    }

    /// Whether ports must name their `protocol` for server-side apply: servers before v1.21
    /// refuse a port without one (kubernetes#98576 made the server default it first).
    pub fn needs_port_protocol(&self) -> bool {
        !self.at_least(1, 21)
    }

    /// Aggregated discovery (`apidiscovery.k8s.io`, beta from 1.26, GA in 1.30): the whole
    /// catalog in two requests.
    pub fn supports_aggregated_discovery(&self) -> bool {
        self.at_least(1, 26)
    }

    /// Where this release stands against the range reckon supports.
    pub fn support(&self) -> Support {
        SUPPORTED_KUBERNETES.support_of(self.major, self.minor)
    }
}

/// Whether a cluster's release is one reckon supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Support {
    Supported,
    /// Older than the floor: server-side apply and discovery differ in ways reckon does not
    /// handle (before v1.20, for example, no `apiextensions.k8s.io/v1` defaults for SSA).
    OlderThanSupported,
    /// Newer than any release tested: expected to work, not shown to.
    NewerThanTested,
}

impl std::fmt::Display for Support {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Support::Supported => "supported",
            Support::OlderThanSupported => "older than supported",
            Support::NewerThanTested => "newer than tested",
        })
    }
}

/// Everything `reckon version` reports about the binary itself.
#[derive(Debug, Clone, Serialize)]
pub struct BuildInfo {
    pub version: &'static str,
    pub git_commit: &'static str,
    pub tested_kubernetes: &'static [&'static str],
    pub supported_kubernetes: SupportedRange,
    pub compiled_kubernetes_api: &'static str,
}

/// The build identity of the running binary.
pub fn build_info() -> BuildInfo {
    BuildInfo {
        version: VERSION,
        git_commit: GIT_COMMIT,
        tested_kubernetes: TESTED_KUBERNETES,
        supported_kubernetes: SUPPORTED_KUBERNETES,
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

    #[test]
    fn the_tested_releases_are_the_ends_of_the_supported_range_and_the_pinned_build() {
        let minor = |v: &str| -> (u32, u32) {
            let mut it = v
                .trim_start_matches('v')
                .split('.')
                .map(|n| n.parse().unwrap());
            (it.next().unwrap(), it.next().unwrap())
        };
        let first = minor(TESTED_KUBERNETES[0]);
        let last = minor(TESTED_KUBERNETES[TESTED_KUBERNETES.len() - 1]);
        assert_eq!(
            (first, last),
            (SUPPORTED_KUBERNETES.oldest, SUPPORTED_KUBERNETES.newest)
        );
        // The newest tested release is the one the test environment builds.
        let go_mod = include_str!("../tests/testenv/k8s/kubernetes/go.mod");
        let pinned = go_mod
            .lines()
            .find_map(|l| l.trim().strip_prefix("k8s.io/kubernetes "))
            .expect("the go.mod requires k8s.io/kubernetes");
        assert_eq!(pinned.trim(), *TESTED_KUBERNETES.last().unwrap());
    }

    #[test]
    fn support_is_decided_by_minor_release() {
        let r = SUPPORTED_KUBERNETES;
        assert_eq!(r.support_of(1, 19), Support::OlderThanSupported);
        assert_eq!(r.support_of(1, 20), Support::Supported);
        assert_eq!(r.support_of(1, 33), Support::Supported);
        assert_eq!(r.support_of(1, 37), Support::Supported);
        assert_eq!(r.support_of(1, 38), Support::NewerThanTested);
        assert_eq!(r.support_of(2, 0), Support::NewerThanTested);
        assert_eq!(r.to_string(), "v1.20 to v1.37");
        assert_eq!(
            serde_json::to_value(r).unwrap(),
            serde_json::json!({"oldest": "v1.20", "newest": "v1.37"})
        );
    }

    #[test]
    fn server_versions_parse_with_suffixes_and_compare() {
        let v = ServerVersion::parse("1", "20", "v1.20.2");
        assert_eq!((v.major, v.minor), (1, 20));
        assert!(!v.supports_field_validation());
        let eks = ServerVersion::parse("1", "27+", "v1.27.3-eks-1");
        assert_eq!((eks.major, eks.minor), (1, 27));
        assert!(eks.supports_field_validation());
        assert!(v.needs_port_protocol() && !eks.needs_port_protocol());
        assert!(!v.supports_aggregated_discovery() && eks.supports_aggregated_discovery());
        assert!(!ServerVersion::parse("1", "25", "").supports_aggregated_discovery());
        assert!(!ServerVersion::parse("1", "21", "").needs_port_protocol());
        assert_eq!(v.support(), crate::version::Support::Supported);
        assert_eq!(
            ServerVersion::parse("1", "19", "").support(),
            crate::version::Support::OlderThanSupported
        );
        assert!(ServerVersion::parse("1", "25", "").supports_field_validation());
        assert!(!ServerVersion::parse("1", "24", "").supports_field_validation());
        assert!(ServerVersion::parse("2", "0", "").supports_field_validation());
        // Unreadable: treated as the oldest server, so nothing version-gated is sent.
        let odd = ServerVersion::parse("", "x", "weird");
        assert_eq!((odd.major, odd.minor), (0, 0));
        assert!(!odd.supports_field_validation());
    }
}
