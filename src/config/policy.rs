//! Owns the tenancy keys of the configuration: the ServiceAccount an App acts as, the
//! `policies:` an App may be held to (allowed namespaces and kinds, like Argo CD's AppProject),
//! and the [`Boundary`] an App's writes are checked against, which the planner enforces
//! ([`crate::plan::boundary`]).

use serde::{Deserialize, Serialize};

/// Why an App object may not run as it is written (the agent's rules for App objects).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenancyError {
    #[error(
        "target.namespace {target} is not the App object's namespace {home}: the agent does not \
         let App objects target other namespaces (--allow-cross-namespace-targets)"
    )]
    TargetNamespace { target: String, home: String },
    #[error(
        "policy {0:?} is defined neither as a Policy object nor in the agent's configuration \
         (policies:)"
    )]
    UnknownPolicy(String),
    #[error(
        "policy {policy:?} is not for App objects of namespace {namespace} (its app_namespaces \
         do not list it)"
    )]
    PolicyNotForNamespace { policy: String, namespace: String },
}

impl TenancyError {
    /// The reason an App object's status gives.
    pub fn reason(&self) -> &'static str {
        match self {
            TenancyError::TargetNamespace { .. } => "TargetNotAllowed",
            // Nothing is applied until the policy exists: it may be created after the App.
            TenancyError::UnknownPolicy(_) => "PolicyNotFound",
            TenancyError::PolicyNotForNamespace { .. } => "PolicyNotAllowed",
        }
    }
}

/// The agent's rules for App objects (`reckon run` flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectRules {
    /// `--default-service-account`: an App object naming no ServiceAccount acts as this one of
    /// its own namespace (the lockdown: no App object acts with the agent's rights).
    pub default_service_account: Option<String>,
    /// `--allow-cross-namespace-targets`: App objects may write outside their own namespace
    /// (and cluster-scoped objects) as far as their policy and RBAC allow.
    pub allow_cross_namespace_targets: bool,
}

/// Holds an App read from an App object in `namespace` to the agent's `rules`: its identity
/// (the default ServiceAccount), its confinement to its namespace, and its policy (the first of
/// `policies` of its name — the file's come before Policy objects' — which must list the
/// namespace in `app_namespaces`). Pure.
pub fn bound_app_object(
    app: &mut super::App,
    namespace: &str,
    rules: &ObjectRules,
    policies: &[Policy],
) -> Result<(), TenancyError> {
    if app.service_account.is_none()
        && let Some(name) = &rules.default_service_account
    {
        app.service_account = Some(ServiceAccount {
            namespace: namespace.to_string(),
            name: name.clone(),
        });
    }
    let mut boundary = Boundary::default();
    if !rules.allow_cross_namespace_targets {
        if app.target.namespace != namespace {
            return Err(TenancyError::TargetNamespace {
                target: app.target.namespace.clone(),
                home: namespace.to_string(),
            });
        }
        boundary.confined_to = Some(namespace.to_string());
    }
    if let Some(name) = &app.policy {
        let policy = policies
            .iter()
            .find(|p| &p.name == name)
            .ok_or_else(|| TenancyError::UnknownPolicy(name.clone()))?;
        if !policy.app_namespaces.iter().any(|g| glob(g, namespace)) {
            return Err(TenancyError::PolicyNotForNamespace {
                policy: name.clone(),
                namespace: namespace.to_string(),
            });
        }
        boundary.policy = Some(policy.clone());
    }
    app.boundary = boundary;
    Ok(())
}

/// A ServiceAccount an App's requests impersonate. Written back as `NAMESPACE/NAME`, which
/// reads as the same ServiceAccount whatever the App's target namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

impl Serialize for ServiceAccount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The Kubernetes user an App's requests are made as when it names a ServiceAccount.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

impl ServiceAccount {
    /// The Kubernetes user name the API server knows it by.
    pub fn user(&self) -> String {
        service_account_user(&self.namespace, &self.name)
    }

    /// Reads `NAME` (in `default_namespace`) or `NAMESPACE/NAME`.
    pub fn parse(text: &str, default_namespace: &str) -> Result<Self, String> {
        let (namespace, name) = match text.split_once('/') {
            Some((ns, name)) => (ns, name),
            None => (default_namespace, text),
        };
        if !super::is_dns_label(namespace) {
            return Err(format!(
                "invalid ServiceAccount {text:?}: namespace {namespace:?} is not a DNS-1123 label"
            ));
        }
        if !is_dns_subdomain(name) {
            return Err(format!(
                "invalid ServiceAccount {text:?}: write NAME or NAMESPACE/NAME, NAME a DNS-1123 \
                 subdomain (lowercase letters, digits, '-' and '.')"
            ));
        }
        Ok(Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

impl std::fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

fn is_dns_subdomain(text: &str) -> bool {
    !text.is_empty() && text.len() <= 253 && text.split('.').all(super::is_dns_label)
}

/// A named set of rules for the objects of the Apps that reference it (`policy:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Referenced by Apps' `policy:`. Required, unique.
    pub name: String,
    /// Namespaces (globs: `*` any run of characters, `?` one) a namespaced object may be in.
    /// Required: a policy says where its Apps may write.
    pub namespaces: Vec<String>,
    /// Namespaced kinds. Default: every kind allowed, none denied.
    #[serde(default)]
    pub namespaced_kinds: KindRules,
    /// Cluster-scoped kinds. Default: none allowed (an empty `allow` allows no cluster-scoped
    /// kind, as in Argo CD's AppProject).
    #[serde(default)]
    pub cluster_kinds: KindRules,
    /// Namespaces (globs) whose App objects may reference this policy. Default: none (only
    /// Apps of the configuration file may): an App object's creator must not pick a wider
    /// policy than the operator meant for their namespace.
    #[serde(default)]
    pub app_namespaces: Vec<String>,
    /// What happens to the rest of an App when one of its objects is outside the policy.
    /// Default: `skip_object`.
    #[serde(default)]
    pub on_violation: OnViolation,
}

/// Allowed and denied kinds; a kind matching `deny` is refused whatever `allow` says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindRules {
    #[serde(default)]
    pub allow: Vec<KindPattern>,
    #[serde(default)]
    pub deny: Vec<KindPattern>,
}

/// A group and kind, each a glob; `group: ""` is the core group (ConfigMap, Secret, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindPattern {
    /// Default: `*`, any group.
    #[serde(default = "any")]
    pub group: String,
    pub kind: String,
}

fn any() -> String {
    "*".to_string()
}

impl KindPattern {
    pub fn matches(&self, group: &str, kind: &str) -> bool {
        glob(&self.group, group) && glob(&self.kind, kind)
    }
}

impl std::fmt::Display for KindPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // As written in the policy, so a reason names the entry to look for.
        write!(f, "{{group: {:?}, kind: {}}}", self.group, self.kind)
    }
}

/// What an object outside the policy does to the rest of its App.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OnViolation {
    /// The object is refused (`ApplyFailed`, nothing sent); the rest of the App is applied.
    #[default]
    SkipObject,
    /// Nothing of the App is written (every apply refused, every prune kept) while any of its
    /// objects is outside the policy.
    FailApp,
}

/// What an App may write, besides what RBAC lets its identity do: checked before any request.
/// Open (no rule) for an App of the configuration file without a policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Boundary {
    /// The namespace of the App object this App comes from, when the agent does not allow
    /// App objects to write elsewhere: namespaced objects only there, cluster-scoped objects
    /// only the kinds its policy allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confined_to: Option<String>,
    /// The App's policy, resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
}

impl Boundary {
    pub fn is_open(&self) -> bool {
        self.confined_to.is_none() && self.policy.is_none()
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters and `?` for one.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Iterative matching with one backtrack point (the last `*`): linear in practice, no
    // recursion a long pattern could exhaust.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_runs_and_single_characters() {
        assert!(glob("*", ""));
        assert!(glob("*", "team-a"));
        assert!(glob("team-*", "team-a"));
        assert!(!glob("team-*", "teams"));
        assert!(glob("team-?", "team-b"));
        assert!(!glob("team-?", "team-bb"));
        assert!(glob("*.k8s.io", "rbac.authorization.k8s.io"));
        assert!(!glob("*.k8s.io", "example.com"));
        assert!(glob("a*b*c", "aXbYbZc"));
        assert!(!glob("", "x"));
        assert!(glob("", ""));
    }

    #[test]
    fn service_accounts_default_to_the_given_namespace() {
        let sa = ServiceAccount::parse("deployer", "team-a").unwrap();
        assert_eq!(sa.to_string(), "team-a/deployer");
        assert_eq!(sa.user(), "system:serviceaccount:team-a:deployer");
        let sa = ServiceAccount::parse("ops/deployer.v2", "team-a").unwrap();
        assert_eq!(sa.to_string(), "ops/deployer.v2");
        assert!(ServiceAccount::parse("a/b/c", "x").is_err());
        assert!(ServiceAccount::parse("Deployer", "x").is_err());
        assert!(ServiceAccount::parse("", "x").is_err());
        assert!(ServiceAccount::parse("system:admin", "x").is_err());
    }

    fn object_app(target: &str, extra: &str) -> super::super::App {
        let text = format!(
            "name: web\nsource:\n  url: https://git.example.com/r.git\ntarget:\n  namespace: {target}\n{extra}"
        );
        super::super::parse_app(&text, std::path::Path::new("App team-b/web")).unwrap()
    }

    fn team_policy(app_namespaces: &[&str]) -> Policy {
        Policy {
            name: "tenants".into(),
            namespaces: vec!["team-*".into()],
            namespaced_kinds: KindRules::default(),
            cluster_kinds: KindRules::default(),
            app_namespaces: app_namespaces.iter().map(|s| s.to_string()).collect(),
            on_violation: OnViolation::SkipObject,
        }
    }

    #[test]
    fn app_objects_are_confined_to_their_namespace_unless_the_agent_allows_more() {
        let rules = ObjectRules::default();
        let mut app = object_app("team-b", "");
        bound_app_object(&mut app, "team-b", &rules, &[]).unwrap();
        assert_eq!(app.boundary.confined_to.as_deref(), Some("team-b"));
        assert_eq!(
            app.service_account, None,
            "no flag: the agent's rights, as before"
        );
        let mut app = object_app("team-a", "");
        let e = bound_app_object(&mut app, "team-b", &rules, &[]).unwrap_err();
        assert_eq!(e.reason(), "TargetNotAllowed");
        assert!(
            e.to_string().contains("--allow-cross-namespace-targets"),
            "{e}"
        );
        let open = ObjectRules {
            allow_cross_namespace_targets: true,
            ..ObjectRules::default()
        };
        let mut app = object_app("team-a", "");
        bound_app_object(&mut app, "team-b", &open, &[]).unwrap();
        assert!(app.boundary.is_open());
    }

    #[test]
    fn the_default_service_account_is_the_app_objects_own_namespaces() {
        let rules = ObjectRules {
            default_service_account: Some("reckon-app".into()),
            ..ObjectRules::default()
        };
        let mut app = object_app("team-b", "");
        bound_app_object(&mut app, "team-b", &rules, &[]).unwrap();
        assert_eq!(
            app.service_account
                .as_ref()
                .map(ServiceAccount::user)
                .as_deref(),
            Some("system:serviceaccount:team-b:reckon-app")
        );
        let mut app = object_app("team-b", "service_account: team-b/deployer\n");
        bound_app_object(&mut app, "team-b", &rules, &[]).unwrap();
        assert_eq!(app.service_account.unwrap().name, "deployer");
    }

    #[test]
    fn an_app_object_uses_only_policies_meant_for_its_namespace() {
        let rules = ObjectRules::default();
        let mut app = object_app("team-b", "policy: tenants\n");
        let e = bound_app_object(&mut app, "team-b", &rules, &[]).unwrap_err();
        assert_eq!(e, TenancyError::UnknownPolicy("tenants".into()));
        let e = bound_app_object(&mut app, "team-b", &rules, &[team_policy(&[])]).unwrap_err();
        assert_eq!(e.reason(), "PolicyNotAllowed");
        bound_app_object(&mut app, "team-b", &rules, &[team_policy(&["team-*"])]).unwrap();
        assert_eq!(app.boundary.policy.unwrap().name, "tenants");
    }

    #[test]
    fn kind_patterns_default_to_any_group() {
        let p: KindPattern = serde_json::from_str(r#"{"kind": "ClusterRole"}"#).unwrap();
        assert!(p.matches("rbac.authorization.k8s.io", "ClusterRole"));
        assert!(!p.matches("rbac.authorization.k8s.io", "Role"));
        let core: KindPattern = serde_json::from_str(r#"{"group": "", "kind": "*"}"#).unwrap();
        assert!(core.matches("", "Secret"));
        assert!(!core.matches("apps", "Deployment"));
    }
}
