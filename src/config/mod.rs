//! Owns the declarative configuration file (`reckon.yaml`): its schema, defaults and validation.
//!
//! Loading is strict because a typo in a GitOps config is silent damage: `prnue: false` that is
//! ignored means objects get deleted. Every unknown key and invalid value is an error that names
//! the file, the line and the key path (`apps[1].source.interval`). Per-value checks run inside
//! deserialisation (so serde-saphyr supplies the location); checks that span several values
//! (unique names, `depends_on`, cycles, auth versus URL scheme) run afterwards on a private
//! mirror of [`App`] that keeps the locations of the values they point at.
//!
//! `docs/configuration.md` documents every key for users; the doc comments here are the source.

pub mod duration;
mod graph;
pub mod limits;

pub use limits::InputLimits;
pub mod policy;

pub use policy::{Boundary, OnViolation, Policy, ServiceAccount};

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors while loading `reckon.yaml`, each naming the file and, when it has one, the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    /// The YAML does not match the schema: an unknown key, a wrong type, an invalid value.
    #[error("{file}:{line}:{column}: {key}: {message}")]
    Parse {
        file: PathBuf,
        line: u64,
        column: u64,
        /// Path of the offending key, e.g. `apps[0].source.interval` (`.` for the document).
        key: String,
        message: String,
    },
    /// The values parse but contradict each other (duplicate names, unknown dependency, ...).
    #[error("{file}:{line}: {key}: {message}")]
    Invalid {
        file: PathBuf,
        line: u64,
        key: String,
        message: String,
    },
    /// `depends_on` forms a cycle; `cycle` lists it with the first App repeated at the end.
    #[error("{file}:{line}: apps: dependency cycle {}", cycle.join(" -> "))]
    DependencyCycle {
        file: PathBuf,
        line: u64,
        cycle: Vec<String>,
    },
}

/// The whole `reckon.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// The Apps to reconcile, in file order. Required (may be empty).
    pub apps: Vec<App>,
    /// Bounds on what every App's source may cost (`limits:`); App objects get the same.
    /// Default: [`InputLimits::default`].
    pub limits: InputLimits,
    /// Rules Apps may be held to (`policy:`). Default: none.
    pub policies: Vec<Policy>,
}

/// One unit of sync: a Git source rendered and applied to one cluster with one policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct App {
    /// Unique name; a DNS-1123 label (lowercase alphanumerics and `-`, at most 63 characters)
    /// because it becomes the value of the `reckon.dev/app` label on every object. Required.
    /// For an App object, its identity `NAMESPACE.NAME` ([`crate::model::identity`]), which no
    /// name of the file can be.
    pub name: String,
    /// The App object this App comes from (`None`: the configuration file's).
    #[serde(skip)]
    pub object: Option<AppObjectName>,
    /// Where the manifests come from. Required.
    pub source: Source,
    /// Which cluster and default namespace to apply to. Default: inferred cluster, `default`.
    pub target: Target,
    /// Whether objects that left Git are deleted. Default: enabled, not when empty.
    pub prune: Prune,
    /// What to do when a live object differs from what reckon applied. Default: `correct`.
    pub drift: DriftMode,
    /// Fields reckon neither reports nor corrects as drift. Default: none.
    pub ignore: Vec<IgnoreRule>,
    /// When true, the App is neither synced nor corrected (its history is kept). Default: false.
    pub suspend: bool,
    /// Apps that must be synced and healthy before this one is synced. Default: none.
    pub depends_on: Vec<String>,
    /// What server-side apply does when another field manager owns a field. Default: `force`.
    pub conflicts: ConflictPolicy,
    /// Which existing objects outside the inventory the App may take over. Default: `unowned`.
    pub adopt: AdoptPolicy,
    /// How long applied objects may take to become healthy before the sync fails. Default: 5m.
    #[serde(with = "duration")]
    pub health_timeout: Duration,
    /// Pins the App to this shard of a sharded fleet (`reckon run --shards N`), like the
    /// `reckon.dev/shard` label of an App object. Default: a consistent hash of the name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    /// The ServiceAccount every Kubernetes request for this App impersonates (`NAME` in the
    /// target namespace, or `NAMESPACE/NAME`), so the cluster's RBAC decides what it may do.
    /// Default: none, the agent's own rights (for App objects, see `--default-service-account`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccount>,
    /// The name of the policy (`policies:`) its objects are checked against. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// What it may write, resolved from `policy` and, for an App object, the agent's rules.
    /// Not written back: it is derived (from `policy`, or by the agent).
    #[serde(skip)]
    pub boundary: Boundary,
    /// How the Helm chart at the source's `path` is rendered (release name, values). A
    /// `Chart.yaml` at `path` makes the App a Helm App with or without this block; the block
    /// without a chart there is a render error. Default: none (release = the App's name, the
    /// chart's own `values.yaml` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helm: Option<Helm>,
}

/// An App object's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppObjectName {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for AppObjectName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl App {
    /// The name a person gave the App: the file's name, or the App object's own name (Helm's
    /// default release name).
    pub fn given_name(&self) -> &str {
        self.object.as_ref().map_or(&self.name, |o| &o.name)
    }
}

/// Rendering settings of a Helm App. Values are merged by Helm in this order, later winning:
/// the chart's own `values.yaml`, `values_files` in order, `values_from` in order, `values`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Helm {
    /// `.Release.Name`. Default: the App's name.
    #[serde(
        default,
        deserialize_with = "de_some_release",
        skip_serializing_if = "Option::is_none"
    )]
    pub release: Option<String>,
    /// Values files in the App's source, relative to `path` (no `..`), merged in order.
    /// Default: none.
    #[serde(default, deserialize_with = "de_values_files")]
    pub values_files: Vec<String>,
    /// Values read from ConfigMaps and Secrets in the target cluster at every render, merged in
    /// order. A Secret's values are never recorded: only a keyed digest of them. Default: none.
    #[serde(default)]
    pub values_from: Vec<ValuesFrom>,
    /// Inline values (a map), merged last. Default: none.
    #[serde(
        default,
        deserialize_with = "de_inline_values",
        skip_serializing_if = "Option::is_none"
    )]
    pub values: Option<serde_json::Value>,
    /// The repositories the chart's `Chart.lock` dependencies may be fetched from when they are
    /// not vendored under `charts/`, each with how to get in. A dependency whose repository is
    /// not listed here is a render error: whoever writes the chart in Git chooses among these,
    /// and does not make the agent fetch from anywhere else. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<HelmRepository>,
}

/// `helm.repositories` entry: `{url: https://charts.example.com, auth: {basic: ...}, ca_file:
/// ...}` or `{url: oci://registry.example.com/charts, ...}`, the URL as `Chart.yaml` and
/// `Chart.lock` write a dependency's `repository`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawHelmRepository")]
pub struct HelmRepository {
    /// `https://` or `http://` (a chart repository, `index.yaml` under it) or `oci://HOST/PATH`
    /// (the dependency's chart is `oci://HOST/PATH/NAME`). Required.
    pub url: String,
    /// `token` or `basic`, read at every fetch. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// A PEM CA bundle trusted for this repository. Default: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// `oci://` only: talk plain HTTP to the registry (Helm's `--plain-http`). Allowed only for a
    /// loopback host (`127.0.0.1`, `[::1]`, `localhost`): credentials and charts would cross
    /// any other network in the clear. Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_http: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHelmRepository {
    url: String,
    #[serde(default)]
    auth: Option<Auth>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure_http: bool,
}

impl TryFrom<RawHelmRepository> for HelmRepository {
    type Error = String;

    fn try_from(raw: RawHelmRepository) -> Result<Self, String> {
        let url = raw.url.trim_end_matches('/').to_string();
        let scheme = ["https://", "http://", "oci://"]
            .into_iter()
            .find(|s| url.starts_with(s))
            .ok_or_else(|| {
                format!(
                    "helm repository {url:?}: an https://, http:// or oci:// URL, as Chart.lock \
                     names it"
                )
            })?;
        let rest = &url[scheme.len()..];
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty() || host.contains('@') {
            return Err(format!(
                "helm repository {url:?}: a URL with a host and no credentials (use auth)"
            ));
        }
        if matches!(raw.auth, Some(Auth::Ssh(_))) {
            return Err(format!(
                "helm repository {url:?}: ssh auth is for Git; use token or basic"
            ));
        }
        if raw.insecure_http {
            if scheme != "oci://" {
                return Err(format!(
                    "helm repository {url:?}: insecure_http is for oci:// registries (a chart \
                     repository says http:// in its URL)"
                ));
            }
            if !is_loopback_host(host) {
                return Err(format!(
                    "helm repository {url:?}: insecure_http is allowed only for a loopback \
                     registry (127.0.0.1, [::1], localhost): elsewhere credentials and charts \
                     would cross the network in the clear"
                ));
            }
        }
        Ok(HelmRepository {
            url,
            auth: raw.auth,
            ca_file: raw.ca_file,
            insecure_http: raw.insecure_http,
        })
    }
}

/// `HOST[:PORT]` names this machine's loopback interface.
pub fn is_loopback_host(host_port: &str) -> bool {
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One ConfigMap or Secret key holding a values document, e.g.
/// `{kind: Secret, name: db-values, key: values.yaml}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValuesFrom {
    pub kind: ValuesKind,
    pub name: String,
    /// The key in `data` holding the YAML. Default: `values.yaml`.
    #[serde(default = "default_values_key")]
    pub key: String,
    /// Default: the App's target namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// When true, a missing object or key is no values instead of a render error. Default: false.
    #[serde(default)]
    pub optional: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValuesKind {
    ConfigMap,
    Secret,
}

fn default_values_key() -> String {
    "values.yaml".to_string()
}

fn de_some_release<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    let name = String::deserialize(de)?;
    // Helm's own rule for release names: a DNS-1123 subdomain, at most 53 characters.
    let valid = !name.is_empty()
        && name.len() <= 53
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid {
        return Err(D::Error::custom(format!(
            "invalid release name {name:?}: lowercase alphanumerics, '-' and '.', at most 53 \
             characters"
        )));
    }
    Ok(Some(name))
}

fn de_values_files<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    let files = Vec::<String>::deserialize(de)?;
    for path in &files {
        if path.starts_with('/')
            || path.is_empty()
            || path
                .split('/')
                .any(|part| part == ".." || part == "." || part.is_empty())
        {
            return Err(D::Error::custom(format!(
                "invalid values file {path:?}: a file relative to the App's path, without '..'"
            )));
        }
    }
    Ok(files)
}

fn de_inline_values<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    let value = serde_json::Value::deserialize(de)?;
    if !value.is_object() {
        return Err(D::Error::custom("values must be a map"));
    }
    Ok(Some(value))
}

/// The source of an App: a Git repository, or (with `chart`) a chart of a Helm chart repository.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// Repository URL: `https://`, `http://`, `ssh://`, `git://`, `file://` or scp-like
    /// `user@host:path`. Required.
    pub url: String,
    /// What to follow: exactly one of `branch`, `tag`, `semver` (a range over tags such as
    /// `">=1.2, <2"`) or `commit` (a full SHA). Default: `{branch: main}`.
    pub reference: GitRef,
    /// Directory inside the repository holding the manifests; relative, no `..`. Default: `.`.
    pub path: String,
    /// How often the remote is polled. Default: `1m`. Must be at least 1s.
    pub interval: Duration,
    /// Credentials for the remote. Default: none (public repository or ambient SSH agent).
    pub auth: Option<Auth>,
    /// A PEM bundle of CA certificates for an `https://` remote. It replaces the system roots
    /// for this remote (like git's `http.sslCAInfo`): only these CAs are trusted. Default: none.
    pub ca_file: Option<PathBuf>,
    /// Commit signature verification. Default: `{mode: record}`.
    pub signature: SignaturePolicy,
    /// When set, `url` is an HTTP(S) Helm chart repository (its `index.yaml` is under it) and
    /// the App deploys this chart from it: `ref`, `path` and `signature` do not apply. Default:
    /// none (a Git repository).
    pub chart: Option<ChartRef>,
}

/// How a [`Source`] is written back: a chart repository source without the Git-only keys it
/// would be refused with (`ref`, `path`, `signature`), so a loaded configuration serialises to
/// one that loads again.
#[derive(Serialize)]
struct SourceOut<'a> {
    url: &'a String,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a GitRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a String>,
    #[serde(with = "duration")]
    interval: Duration,
    auth: &'a Option<Auth>,
    ca_file: &'a Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<&'a SignaturePolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chart: Option<&'a ChartRef>,
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let git = self.chart.is_none();
        SourceOut {
            url: &self.url,
            reference: git.then_some(&self.reference),
            path: git.then_some(&self.path),
            interval: self.interval,
            auth: &self.auth,
            ca_file: &self.ca_file,
            signature: git.then_some(&self.signature),
            chart: self.chart.as_ref(),
        }
        .serialize(ser)
    }
}

/// Which chart of a chart repository an App deploys: `{name: web, version: "1.2.0"}` or a
/// semver range `{name: web, version: ">=1.2, <2"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartRef {
    /// The chart's name in the repository's index. Required.
    #[serde(deserialize_with = "de_nonempty")]
    pub name: String,
    /// One version as the index writes it (`1.2.0`: exactly that one), or a semver range
    /// (`>=1.2, <2`, `^1`, `~1.4`: the highest match). Default: `*`, the highest release.
    #[serde(
        default = "default_chart_version",
        deserialize_with = "de_chart_version"
    )]
    pub version: String,
    /// cosign signatures of an OCI chart (`oci://` only): `mode` as for commits (default
    /// `off` here: most charts are unsigned), `keys` the cosign public keys (PEM) trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ChartSignature>,
    /// `oci://` only: talk plain HTTP to the registry (Helm's `--plain-http`). Refused unless
    /// the registry's host is loopback (`127.0.0.1`, `[::1]`, `localhost`): anywhere else
    /// credentials and charts would cross the network in the clear. Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_http: bool,
}

/// `chart.signature`: `{mode: record|require, keys: [cosign.pub]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartSignature {
    #[serde(default = "chart_signature_mode")]
    pub mode: SignatureMode,
    #[serde(default)]
    pub keys: Vec<PathBuf>,
}

fn chart_signature_mode() -> SignatureMode {
    SignatureMode::Record
}

impl ChartRef {
    /// What the version asks for: a plain version is that version, anything else a range.
    pub fn wanted(&self) -> Result<crate::source::chart_index::Wanted, semver::Error> {
        use crate::source::chart_index::Wanted;
        let bare = self.version.strip_prefix('v').unwrap_or(&self.version);
        if semver::Version::parse(bare).is_ok() {
            return Ok(Wanted::Exact(self.version.clone()));
        }
        semver::VersionReq::parse(&self.version).map(Wanted::Range)
    }
}

fn default_chart_version() -> String {
    "*".to_string()
}

fn de_chart_version<'de, D: serde::Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    let version = String::deserialize(de)?;
    let chart = ChartRef {
        name: String::new(),
        version: version.clone(),
        signature: None,
        insecure_http: false,
    };
    chart.wanted().map_err(|err| {
        D::Error::custom(format!(
            "invalid chart version {version:?}: neither a version nor a semver range: {err}"
        ))
    })?;
    Ok(version)
}

/// A Git reference to follow; written as a one-key map, e.g. `ref: {tag: v1.2.0}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "RawGitRef")]
pub enum GitRef {
    /// The tip of a branch.
    Branch(String),
    /// One tag; follows it if it is moved.
    Tag(String),
    /// The highest tag matching a semver range (tags may carry a leading `v`).
    Semver(String),
    /// One commit, by its full SHA-1 (40) or SHA-256 (64) hex id.
    Commit(String),
}

// One-key maps are read through structs of options: serde's own enum support reports two keys
// as "expected end of mapping", where "exactly one of ..." tells the user what to fix.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGitRef {
    #[serde(default, deserialize_with = "de_some_nonempty")]
    branch: Option<String>,
    #[serde(default, deserialize_with = "de_some_nonempty")]
    tag: Option<String>,
    #[serde(default, deserialize_with = "de_some_semver")]
    semver: Option<String>,
    #[serde(default, deserialize_with = "de_some_commit")]
    commit: Option<String>,
}

/// The one `Some` of `options`, or an error naming the keys.
fn exactly_one<T>(what: &str, keys: &str, options: Vec<Option<T>>) -> Result<T, String> {
    let mut present = options.into_iter().flatten();
    match (present.next(), present.next()) {
        (Some(one), None) => Ok(one),
        _ => Err(format!("{what} needs exactly one of {keys}")),
    }
}

impl TryFrom<RawGitRef> for GitRef {
    type Error = String;

    fn try_from(raw: RawGitRef) -> Result<Self, String> {
        exactly_one(
            "ref",
            "branch, tag, semver, commit",
            vec![
                raw.branch.map(GitRef::Branch),
                raw.tag.map(GitRef::Tag),
                raw.semver.map(GitRef::Semver),
                raw.commit.map(GitRef::Commit),
            ],
        )
    }
}

impl Default for GitRef {
    fn default() -> Self {
        GitRef::Branch("main".to_string())
    }
}

/// Credentials for a Git remote: exactly one of `token`, `basic` or `ssh`.
/// Secret material is never written in `reckon.yaml` itself, only where to read it from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "RawAuth")]
pub enum Auth {
    /// HTTP bearer token (GitHub/GitLab personal or app tokens). `https://`/`http://` only.
    Token(SecretRef),
    /// HTTP basic authentication. `https://`/`http://` only.
    Basic(BasicAuth),
    /// SSH private key. `ssh://` or scp-like URLs only.
    Ssh(SshAuth),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default)]
    token: Option<SecretRef>,
    #[serde(default)]
    basic: Option<BasicAuth>,
    #[serde(default)]
    ssh: Option<SshAuth>,
}

impl TryFrom<RawAuth> for Auth {
    type Error = String;

    fn try_from(raw: RawAuth) -> Result<Self, String> {
        exactly_one(
            "auth",
            "token, basic, ssh",
            vec![
                raw.token.map(Auth::Token),
                raw.basic.map(Auth::Basic),
                raw.ssh.map(Auth::Ssh),
            ],
        )
    }
}

/// Where to read a secret: `{env: NAME}` or `{file: /path}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "RawSecretRef")]
pub enum SecretRef {
    /// An environment variable of the agent process.
    Env(String),
    /// A file readable by the agent (e.g. a mounted Kubernetes Secret).
    File(PathBuf),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecretRef {
    #[serde(default, deserialize_with = "de_some_env_name")]
    env: Option<String>,
    #[serde(default)]
    file: Option<PathBuf>,
}

impl TryFrom<RawSecretRef> for SecretRef {
    type Error = String;

    fn try_from(raw: RawSecretRef) -> Result<Self, String> {
        exactly_one(
            "a secret reference",
            "env, file",
            vec![raw.env.map(SecretRef::Env), raw.file.map(SecretRef::File)],
        )
    }
}

/// `basic: {username: ..., password: {env: ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name (not secret). Required.
    #[serde(deserialize_with = "de_nonempty")]
    pub username: String,
    /// Where to read the password. Required.
    pub password: SecretRef,
}

/// `ssh: {key_file: ..., known_hosts_file: ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshAuth {
    /// Private key file. Required.
    pub key_file: PathBuf,
    /// known_hosts file pinning the server's host key. Default: none, meaning the system's
    /// `ssh` defaults (`~/.ssh/known_hosts`); set it in production.
    #[serde(default)]
    pub known_hosts_file: Option<PathBuf>,
}

/// Commit signature policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignaturePolicy {
    /// `off`: not checked; `record`: the status is recorded with each observed commit;
    /// `require`: an unsigned commit, or one not signed by an allowed signer, is not synced.
    /// Default: `record`.
    #[serde(default)]
    pub mode: SignatureMode,
    /// An SSH `allowed_signers` file (as used by `git -c gpg.ssh.allowedSignersFile`).
    #[serde(default)]
    pub allowed_signers: Option<PathBuf>,
    /// OpenPGP public key files (ASCII-armoured or binary) trusted for signatures.
    #[serde(default)]
    pub keys: Vec<PathBuf>,
}

impl Default for SignaturePolicy {
    fn default() -> Self {
        Self {
            mode: SignatureMode::Record,
            allowed_signers: None,
            keys: Vec::new(),
        }
    }
}

/// Commit signature verification: `off`, `record` (default) or `require` (see [`SignaturePolicy::mode`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SignatureMode {
    /// Signatures are not checked.
    Off,
    /// Each observed commit's signature status is recorded.
    #[default]
    Record,
    /// Only commits signed by an allowed signer are synced.
    Require,
}

/// The cluster an App applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// kubeconfig file. Default: none, meaning `KUBECONFIG`, then `~/.kube/config`, then the
    /// in-cluster service account.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Context in the kubeconfig. Default: its current context.
    #[serde(default)]
    pub context: Option<String>,
    /// Namespace given to namespaced objects that do not name one. Default: `default`.
    #[serde(default = "default_namespace", deserialize_with = "de_namespace")]
    pub namespace: String,
    /// Apply `namespace` as a Namespace of the App (recorded like any apply) when the rendered
    /// set does not declare it. Default: false (a missing namespace is an `ApplyBlocked`).
    #[serde(default)]
    pub create_namespace: bool,
}

impl Default for Target {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            context: None,
            namespace: default_namespace(),
            create_namespace: false,
        }
    }
}

/// Pruning policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prune {
    /// Delete objects of this App's inventory that left the desired set. Default: true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Allow a sync whose desired set is empty to prune everything. Default: false, because an
    /// empty render is far more often a wrong `path` or a broken commit than intent.
    #[serde(default)]
    pub allow_empty: bool,
    /// Delete objects the App adopted (found existing, not created) when they leave the
    /// desired set. Default: false: they are orphaned (released, left in the cluster), because
    /// whoever made them may still need them.
    #[serde(default)]
    pub adopted: bool,
    /// Delete a Namespace of the inventory even while it holds objects outside the App's
    /// inventory (deleting a Namespace deletes everything in it). Default: false.
    #[serde(default)]
    pub non_empty_namespaces: bool,
}

impl Default for Prune {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_empty: false,
            adopted: false,
            non_empty_namespaces: false,
        }
    }
}

/// Which existing objects (found in the cluster, not in the App's inventory) an App may take
/// over: apply to, label as its own, and record as `Adopted`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AdoptPolicy {
    /// Never: an existing object is refused (`ApplyFailed`), whoever made it.
    Never,
    /// Objects without an owner's marks: no other App's `reckon.dev/app` label, no other
    /// tool's ownership labels or annotations (Argo CD, Flux, Helm, kapp).
    #[default]
    Unowned,
    /// Any existing object, even one another App or tool owns.
    Always,
}

/// What reckon does about drift (a live managed field differing from what it applied).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DriftMode {
    /// Record the drift and re-apply the last applied state.
    #[default]
    Correct,
    /// Record the drift only.
    Detect,
    /// Neither look for drift nor correct it (objects are still applied when Git changes).
    Off,
}

/// What server-side apply does when another field manager owns a field reckon sets.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ConflictPolicy {
    /// Take ownership (`force=true`), as Flux does; needed to correct drift made by
    /// `kubectl edit`, which becomes an owner of the fields it changed.
    #[default]
    Force,
    /// Do not take ownership: the apply fails with the conflicting managers, which are recorded.
    Report,
}

/// Fields excluded from drift detection and correction, like Flux `spec.ignore` and Argo CD
/// `ignoreDifferences`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IgnoreRule {
    /// Which objects the rule applies to. Default: all objects of the App.
    #[serde(default)]
    pub select: Selector,
    /// RFC 6901 JSON pointers into the object, e.g. `/spec/replicas`,
    /// `/metadata/annotations/example.com~1owner`. At least one. Required.
    #[serde(deserialize_with = "de_pointers")]
    pub pointers: Vec<String>,
}

/// Matches objects by exact group, kind, namespace and name; an absent field matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// API group; `""` is the core group (Service, ConfigMap, ...).
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

impl Selector {
    /// Whether an object with these coordinates is selected (`namespace` is `None` for
    /// cluster-scoped objects, which a selector naming a namespace never matches).
    pub fn matches(&self, group: &str, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        self.group.as_deref().is_none_or(|g| g == group)
            && self.kind.as_deref().is_none_or(|k| k == kind)
            && self
                .namespace
                .as_deref()
                .is_none_or(|n| Some(n) == namespace)
            && self.name.as_deref().is_none_or(|n| n == name)
    }
}

impl Config {
    /// Apps in an order where every App comes after the Apps it depends on; ties keep file
    /// order, so the result is deterministic.
    pub fn sync_order(&self) -> Vec<&App> {
        let order = graph::topological_order(&self.apps);
        order.into_iter().map(|i| &self.apps[i]).collect()
    }

    /// The App with this name.
    pub fn app(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|app| app.name == name)
    }
}

/// Reads and validates `reckon.yaml`.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    use std::io::Read as _;
    let read_err = |source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    };
    // Read at most one byte past the limit: a huge (or endless, like /dev/zero) file is
    // rejected without being loaded into memory.
    let mut text = String::new();
    std::fs::File::open(file)
        .map_err(read_err)?
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::Invalid {
            file: file.to_path_buf(),
            line: 0,
            key: ".".to_string(),
            message: format!("larger than {} MiB", MAX_CONFIG_BYTES >> 20),
        });
    }
    parse(&text, file)
}

/// Largest accepted configuration file; thousands of Apps fit in a fraction of it.
const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// Parses and validates configuration text; `file` is only used in error messages.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    validate(parse_raw::<RawConfig>(text, file)?, file, true)
}

/// Parses and validates one App given alone (the keys of one `apps[]` entry, as YAML or JSON):
/// the same per-value and per-App checks as the file, so an App from an App object behaves as
/// the same App in `reckon.yaml`. `depends_on` may name Apps defined elsewhere (other objects
/// or the file): an App waits for a dependency it does not know yet. `what` names the App in
/// error messages.
pub fn parse_app(text: &str, what: &Path) -> Result<App, ConfigError> {
    let raw = parse_raw::<RawApp>(text, what)?;
    let raw = RawConfig {
        apps: vec![raw],
        policies: Vec::new(),
        limits: InputLimits::default(),
    };
    let mut cfg = validate(raw, what, false)?;
    Ok(cfg.apps.pop().expect("one App in, one App out"))
}

fn parse_raw<T: serde::de::DeserializeOwned>(text: &str, file: &Path) -> Result<T, ConfigError> {
    // Budgets sized for a fleet's file (25,000 Apps of about 40 nodes each: a node costs at
    // least two bytes, so MAX_CONFIG_BYTES bounds the nodes too) bound the work an alias bomb or
    // a pathological file can cause before it is rejected: aliases are few in any real file.
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(MAX_CONFIG_BYTES as usize),
            max_events: 4_000_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_depth: 32,
            max_documents: 1,
            max_nodes: 1_000_000,
            max_total_scalar_bytes: MAX_CONFIG_BYTES as usize,
        },
        with_snippet: false,
    };
    let mut failed_key = String::new();
    let raw: Result<T, serde_saphyr::Error> =
        serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
            serde_path_to_error::deserialize(de).map_err(|err| {
                failed_key = err.path().to_string();
                err.into_inner()
            })
        });
    raw.map_err(|err| {
        let location = err.location();
        ConfigError::Parse {
            file: file.to_path_buf(),
            line: location.map_or(0, |l| l.line()),
            column: location.map_or(0, |l| l.column()),
            key: if failed_key.is_empty() {
                ".".to_string()
            } else {
                failed_key
            },
            message: strip_location(&err.without_snippet().to_string()),
        }
    })
}

/// serde-saphyr appends " at line L, column C" to messages; the error already carries both.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

// ---- private mirror holding the locations cross-value checks report ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    apps: Vec<RawApp>,
    #[serde(default)]
    policies: Vec<Spanned<Policy>>,
    #[serde(default, deserialize_with = "de_limits")]
    limits: InputLimits,
}

/// The limits, checked while they are read so that an error names their line.
fn de_limits<'de, D: serde::Deserializer<'de>>(de: D) -> Result<InputLimits, D::Error> {
    let limits = InputLimits::deserialize(de)?;
    limits.check().map_err(D::Error::custom)?;
    Ok(limits)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    #[serde(deserialize_with = "de_app_name")]
    name: Spanned<String>,
    source: RawSource,
    #[serde(default)]
    target: Target,
    #[serde(default)]
    prune: Prune,
    #[serde(default)]
    drift: DriftMode,
    #[serde(default)]
    ignore: Vec<IgnoreRule>,
    #[serde(default)]
    suspend: bool,
    #[serde(default)]
    depends_on: Vec<Spanned<String>>,
    #[serde(default)]
    conflicts: ConflictPolicy,
    #[serde(default)]
    adopt: AdoptPolicy,
    #[serde(default = "default_health_timeout", deserialize_with = "de_positive")]
    health_timeout: Duration,
    #[serde(default)]
    shard: Option<u32>,
    #[serde(default)]
    service_account: Option<Spanned<String>>,
    #[serde(default)]
    policy: Option<Spanned<String>>,
    helm: Option<Helm>,
}

/// Mirrors [`Source`]; only `url` and `signature.mode` need locations (auth and signature checks).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    #[serde(deserialize_with = "de_spanned_url")]
    url: Spanned<String>,
    #[serde(default, rename = "ref")]
    reference: Option<GitRef>,
    #[serde(default, deserialize_with = "de_some_repo_path")]
    path: Option<String>,
    #[serde(default = "default_interval", deserialize_with = "de_interval")]
    interval: Duration,
    #[serde(default)]
    auth: Option<Auth>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    signature: Option<Spanned<SignaturePolicy>>,
    #[serde(default)]
    chart: Option<ChartRef>,
}

/// `closed`: every `depends_on` must name an App of `raw` (a whole file); an App checked alone
/// may depend on Apps defined elsewhere.
fn validate(raw: RawConfig, file: &Path, closed: bool) -> Result<Config, ConfigError> {
    let invalid = |line: u64, key: String, message: String| ConfigError::Invalid {
        file: file.to_path_buf(),
        line,
        key,
        message,
    };
    let mut policies: Vec<Policy> = Vec::with_capacity(raw.policies.len());
    for (i, spanned) in raw.policies.into_iter().enumerate() {
        let line = spanned.referenced.line();
        let policy = spanned.value;
        if policies.iter().any(|p| p.name == policy.name) {
            return Err(invalid(
                line,
                format!("policies[{i}].name"),
                format!("duplicate policy name {:?}", policy.name),
            ));
        }
        if policy.namespaces.is_empty() {
            return Err(invalid(
                line,
                format!("policies[{i}].namespaces"),
                "name at least one namespace (glob) the policy's Apps may write to".to_string(),
            ));
        }
        policies.push(policy);
    }
    let mut apps = Vec::with_capacity(raw.apps.len());
    let mut first_line = std::collections::HashMap::new();
    for (i, app) in raw.apps.iter().enumerate() {
        let line = app.name.referenced.line();
        if let Some(previous) = first_line.insert(app.name.value.clone(), line) {
            return Err(invalid(
                line,
                format!("apps[{i}].name"),
                format!(
                    "duplicate App name {:?} (first defined on line {previous})",
                    app.name.value
                ),
            ));
        }
    }
    for (i, app) in raw.apps.into_iter().enumerate() {
        for (j, dep) in app.depends_on.iter().enumerate() {
            let key = format!("apps[{i}].depends_on[{j}]");
            if closed && !first_line.contains_key(&dep.value) {
                return Err(invalid(
                    dep.referenced.line(),
                    key,
                    format!("unknown App {:?}", dep.value),
                ));
            }
        }
        let source = app.source;
        let url_line = source.url.referenced.line();
        let url = source.url.value;
        if let Some(auth) = &source.auth {
            let ssh_url = is_ssh_url(&url);
            // An OCI registry (a chart source) takes the same basic or token auth as HTTPS.
            let http_url = url.starts_with("https://")
                || url.starts_with("http://")
                || (source.chart.is_some() && url.starts_with("oci://"));
            let (kind, fits) = match auth {
                Auth::Token(_) => ("token", http_url),
                Auth::Basic(_) => ("basic", http_url),
                Auth::Ssh(_) => ("ssh", ssh_url),
            };
            if !fits {
                let wants = if kind == "ssh" {
                    "an ssh:// or user@host:path URL"
                } else {
                    "an https:// or http:// URL"
                };
                return Err(invalid(
                    url_line,
                    format!("apps[{i}].source.auth"),
                    format!("{kind} auth needs {wants}, but url is {url:?}"),
                ));
            }
        }
        if source.chart.is_none() && url.starts_with("oci://") {
            return Err(invalid(
                url_line,
                format!("apps[{i}].source.url"),
                format!(
                    "{url:?} is an OCI registry: name the chart to deploy from it under chart \
                     ({{name, version}}), Git is not served from oci://"
                ),
            ));
        }
        if let Some(signature) = source.chart.as_ref().and_then(|c| c.signature.as_ref()) {
            if !url.starts_with("oci://") {
                return Err(invalid(
                    url_line,
                    format!("apps[{i}].source.chart.signature"),
                    "cosign signatures are checked for OCI charts (oci:// URLs); a chart \
                     repository's provenance files are not"
                        .to_string(),
                ));
            }
            if signature.mode == SignatureMode::Require && signature.keys.is_empty() {
                return Err(invalid(
                    url_line,
                    format!("apps[{i}].source.chart.signature.keys"),
                    "mode require needs at least one cosign public key".to_string(),
                ));
            }
        }
        if let Some(chart) = &source.chart {
            if url.starts_with("oci://") {
                // The chart's name is the repository's last segment, as `helm push` makes it.
                let located =
                    crate::source::chart_oci::ChartLocation::parse(&url).map_err(|e| {
                        invalid(url_line, format!("apps[{i}].source.url"), e.to_string())
                    })?;
                if chart.insecure_http && !is_loopback_host(&located.registry) {
                    return Err(invalid(
                        url_line,
                        format!("apps[{i}].source.chart.insecure_http"),
                        format!(
                            "insecure_http is allowed only for a loopback registry (127.0.0.1, \
                             [::1], localhost), not {:?}: elsewhere credentials and charts would \
                             cross the network in the clear",
                            located.registry
                        ),
                    ));
                }
                if located.chart() != chart.name {
                    return Err(invalid(
                        url_line,
                        format!("apps[{i}].source.chart.name"),
                        format!(
                            "an OCI chart is named by the URL's last segment ({:?}), but \
                             chart.name is {:?}",
                            located.chart(),
                            chart.name
                        ),
                    ));
                }
            } else if chart.insecure_http {
                return Err(invalid(
                    url_line,
                    format!("apps[{i}].source.chart.insecure_http"),
                    "insecure_http is for oci:// registries (a chart repository says http:// in \
                     its URL)"
                        .to_string(),
                ));
            } else if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(invalid(
                    url_line,
                    format!("apps[{i}].source.chart"),
                    format!(
                        "a chart repository is an https:// or http:// URL, or an OCI registry's \
                         oci://HOST/PATH/CHART, but url is {url:?}"
                    ),
                ));
            }
            let git_only = [
                ("ref", source.reference.is_some()),
                ("path", source.path.is_some()),
                ("signature", source.signature.is_some()),
            ];
            if let Some((key, _)) = git_only.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    url_line,
                    format!("apps[{i}].source.{key}"),
                    format!(
                        "{key} is for Git sources; a chart repository source names its chart \
                         and version under chart"
                    ),
                ));
            }
        }
        // An OCI registry is reached over HTTPS too.
        if source.ca_file.is_some() && !url.starts_with("https://") && !url.starts_with("oci://") {
            return Err(invalid(
                url_line,
                format!("apps[{i}].source.ca_file"),
                format!("ca_file only applies to https:// and oci:// URLs, but url is {url:?}"),
            ));
        }
        let signature = match source.signature {
            Some(spanned) => {
                let policy = spanned.value;
                if policy.mode == SignatureMode::Require
                    && policy.allowed_signers.is_none()
                    && policy.keys.is_empty()
                {
                    return Err(invalid(
                        spanned.referenced.line(),
                        format!("apps[{i}].source.signature"),
                        "mode require needs allowed_signers or keys to check signatures against"
                            .to_string(),
                    ));
                }
                policy
            }
            None => SignaturePolicy::default(),
        };
        let service_account = match app.service_account {
            Some(sa) => Some(
                ServiceAccount::parse(&sa.value, &app.target.namespace).map_err(|message| {
                    invalid(
                        sa.referenced.line(),
                        format!("apps[{i}].service_account"),
                        message,
                    )
                })?,
            ),
            None => None,
        };
        let mut boundary = Boundary::default();
        if let Some(name) = &app.policy {
            match policies.iter().find(|p| p.name == name.value) {
                Some(policy) => boundary.policy = Some(policy.clone()),
                // An App given alone (an App object) resolves its policy where it is admitted.
                None if closed => {
                    return Err(invalid(
                        name.referenced.line(),
                        format!("apps[{i}].policy"),
                        format!("unknown policy {:?}", name.value),
                    ));
                }
                None => {}
            }
        }
        apps.push(App {
            name: app.name.value,
            object: None,
            source: Source {
                url,
                reference: source.reference.unwrap_or_default(),
                path: source.path.unwrap_or_else(default_path),
                interval: source.interval,
                auth: source.auth,
                ca_file: source.ca_file,
                signature,
                chart: source.chart,
            },
            target: app.target,
            prune: app.prune,
            drift: app.drift,
            ignore: app.ignore,
            suspend: app.suspend,
            depends_on: app.depends_on.into_iter().map(|d| d.value).collect(),
            conflicts: app.conflicts,
            adopt: app.adopt,
            health_timeout: app.health_timeout,
            shard: app.shard,
            service_account,
            policy: app.policy.map(|p| p.value),
            boundary,
            helm: app.helm,
        });
    }
    if let Some(cycle) = graph::find_cycle(&apps) {
        let line = first_line.get(&cycle[0]).copied().unwrap_or(0);
        return Err(ConfigError::DependencyCycle {
            file: file.to_path_buf(),
            line,
            cycle,
        });
    }
    Ok(Config {
        apps,
        policies,
        limits: raw.limits,
    })
}

// ---- defaults ----

fn default_path() -> String {
    ".".to_string()
}
fn default_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_namespace() -> String {
    "default".to_string()
}
fn yes() -> bool {
    true
}

// ---- per-value checks, run inside deserialisation so errors carry line and key ----

use serde::de::Error as _;

fn de_nonempty<'de, D: serde::Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    let text = String::deserialize(de)?;
    if text.trim().is_empty() {
        return Err(D::Error::custom("must not be empty"));
    }
    Ok(text)
}

/// A DNS-1123 label: what Kubernetes accepts as a label value and a namespace name.
pub(crate) fn is_dns_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

fn de_app_name<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Spanned<String>, D::Error> {
    let name = Spanned::<String>::deserialize(de)?;
    if !is_dns_label(&name.value) {
        return Err(D::Error::custom(format!(
            "invalid App name {:?}: use lowercase letters, digits and '-', at most 63 \
             characters, starting and ending with a letter or digit",
            name.value
        )));
    }
    Ok(name)
}

fn de_namespace<'de, D: serde::Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    let ns = String::deserialize(de)?;
    if !is_dns_label(&ns) {
        return Err(D::Error::custom(format!(
            "invalid namespace {ns:?}: a namespace is a DNS-1123 label"
        )));
    }
    Ok(ns)
}

fn is_ssh_url(url: &str) -> bool {
    if url.starts_with("ssh://") {
        return true;
    }
    // scp-like: [user@]host:path, with no scheme and the colon before any slash.
    match url.find(':') {
        Some(colon) => !url.contains("://") && !url[..colon].contains('/') && colon > 0,
        None => false,
    }
}

fn check_url(url: &str) -> Result<(), String> {
    // Before anything that could echo the URL back: the error itself shows it redacted.
    if let Some(why) = crate::model::url::credentials_in_url(url) {
        return Err(why);
    }
    // oci:// is a chart in an OCI registry: only with `chart` (checked with the App).
    const SCHEMES: [&str; 6] = [
        "https://", "http://", "ssh://", "git://", "file://", "oci://",
    ];
    if let Some(scheme) = SCHEMES.iter().find(|s| url.starts_with(**s)) {
        if url.len() == scheme.len() {
            return Err(format!("invalid url {url:?}: nothing after {scheme}"));
        }
        return Ok(());
    }
    if url.contains("://") {
        return Err(format!(
            "invalid url {url:?}: supported schemes are https, http, ssh, git, file and (for a \
             chart) oci"
        ));
    }
    if is_ssh_url(url) && !url.ends_with(':') {
        return Ok(());
    }
    Err(format!(
        "invalid url {url:?}: expected scheme://... or user@host:path"
    ))
}

fn de_spanned_url<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Spanned<String>, D::Error> {
    let url = Spanned::<String>::deserialize(de)?;
    check_url(&url.value).map_err(D::Error::custom)?;
    Ok(url)
}

fn de_repo_path<'de, D: serde::Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    let path = String::deserialize(de)?;
    if path.starts_with('/') || path.split('/').any(|part| part == "..") || path.is_empty() {
        return Err(D::Error::custom(format!(
            "invalid path {path:?}: a directory relative to the repository root, without '..'"
        )));
    }
    Ok(path)
}

fn de_some_repo_path<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    de_repo_path(de).map(Some)
}

fn de_interval<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let interval = duration::deserialize(de)?;
    if interval < Duration::from_secs(1) {
        return Err(D::Error::custom(format!(
            "interval {} is too short: at least 1s",
            duration::format(interval)
        )));
    }
    Ok(interval)
}

fn de_positive<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let value = duration::deserialize(de)?;
    if value.is_zero() {
        return Err(D::Error::custom("must be greater than 0s"));
    }
    Ok(value)
}

fn de_semver<'de, D: serde::Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    let range = String::deserialize(de)?;
    semver::VersionReq::parse(&range)
        .map_err(|err| D::Error::custom(format!("invalid semver range {range:?}: {err}")))?;
    Ok(range)
}

fn de_commit<'de, D: serde::Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    let sha = String::deserialize(de)?;
    let hex = sha
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !(hex && (sha.len() == 40 || sha.len() == 64)) {
        return Err(D::Error::custom(format!(
            "invalid commit {sha:?}: a full lowercase hex SHA (40 or 64 characters); \
             abbreviated ids are ambiguous as the repository grows"
        )));
    }
    Ok(sha)
}

// `Some(..)` wrappers for optional keys: serde calls them only when the key is present.
fn de_some_nonempty<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    de_nonempty(de).map(Some)
}
fn de_some_semver<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    de_semver(de).map(Some)
}
fn de_some_commit<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    de_commit(de).map(Some)
}
fn de_some_env_name<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    de_env_name(de).map(Some)
}

fn de_env_name<'de, D: serde::Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    let name = String::deserialize(de)?;
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(D::Error::custom(format!(
            "invalid environment variable name {name:?}"
        )));
    }
    Ok(name)
}

/// RFC 6901: empty (the whole document, never useful here) or `/`-separated tokens in which
/// `~` is only followed by `0` or `1`.
pub(crate) fn check_pointer(pointer: &str) -> Result<(), String> {
    if !pointer.starts_with('/') {
        return Err(format!(
            "invalid JSON pointer {pointer:?}: must start with '/', e.g. /spec/replicas"
        ));
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "invalid JSON pointer {pointer:?}: '~' must be followed by 0 ('~') or 1 ('/')"
            ));
        }
    }
    Ok(())
}

fn de_pointers<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    let pointers = Vec::<String>::deserialize(de)?;
    if pointers.is_empty() {
        return Err(D::Error::custom("at least one JSON pointer is required"));
    }
    for pointer in &pointers {
        check_pointer(pointer).map_err(D::Error::custom)?;
    }
    Ok(pointers)
}

#[cfg(test)]
mod tests;
