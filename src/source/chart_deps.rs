//! Owns a Git chart's dependencies that are not vendored under its `charts/`: reading the
//! `dependencies` of `Chart.yaml` and the exact versions `Chart.lock` fixed for them, checking
//! that the lock is the one Helm would accept for them (its digest, computed as Helm computes
//! it), choosing where each locked version comes from (a chart repository, an OCI registry, or a
//! directory of the same Git revision for `file://`), fetching each archive once into a cache
//! named by its digest, and handing the render the files to add to its private copy of the
//! chart — so `helm template` runs with every subchart in `charts/` and no network.
//!
//! What is refused, and why: a dependency with no lock entry, or a lock whose digest does not
//! match `Chart.yaml` (reckon never resolves a version range itself: what is deployed is what
//! the lock committed); a repository the App does not list in `helm.repositories` (whoever writes
//! the chart chooses among the repositories the App's owner listed, and cannot make the agent
//! fetch from anywhere else); a repository named by Helm's local configuration (`@name`,
//! `alias:name`: reckon reads no `repositories.yaml`); a `file://` path that leaves the
//! repository. Archives get the checks of a chart source's: the index's digest or the OCI
//! manifest's, the size limit as they stream, and the path-traversal and size bounds of
//! [`super::chart_repo::unpack`], plus their `Chart.yaml` naming the locked chart and version.
//!
//! The pure half (parsing, the lock digest, choosing the origin, what must be fetched) is free
//! of I/O and tested without it; [`Fetcher`] is the network half, blocking like the chart
//! source it reuses ([`super::chart_repo::ChartRepo`], [`super::chart_oci::OciChart`]).

use super::SourceError;
use super::chart::{ChartAuth, oci_error, source_error};
use super::chart_index::{self, Wanted};
use super::chart_oci::OciChart;
use super::chart_repo::{self, ChartLimits, ChartRepo, IndexFetch, RepoAuth};
use crate::render::repo::{EntryKind, RepoTree};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::path::PathBuf;
use std::time::Duration;

/// A file of the chart: path relative to the chart's directory and its bytes.
pub type ChartFile = (String, Vec<u8>);

/// Why a chart's dependencies could not be made ready for its render. Each is a render failure
/// of the revision (it prunes nothing and keeps what was applied); the message names the
/// dependency and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ChartDepsError {
    #[error("Chart.yaml: {0}")]
    ChartYaml(String),
    #[error("Chart.lock: {0}")]
    ChartLock(String),
    #[error(
        "dependencies {names} are not vendored under charts/ and there is no Chart.lock: run \
         `helm dependency update` and commit Chart.lock (reckon fetches the exact versions a \
         lock names, never a range)"
    )]
    NoLock { names: String },
    #[error(
        "Chart.lock: dependency {name} of Chart.yaml has no entry: run `helm dependency update` \
         and commit Chart.lock"
    )]
    NotLocked { name: String },
    #[error(
        "Chart.lock is out of sync with the dependencies of Chart.yaml (the lock says \
         {recorded}, Chart.yaml and the lock's entries give {computed}): run `helm dependency \
         update` and commit Chart.lock"
    )]
    OutOfSync { recorded: String, computed: String },
    /// The repository cannot be used: not listed by the App, of a kind reckon does not fetch,
    /// or a `file://` path outside the repository.
    #[error("dependency {name} {version}: repository {repository:?} {reason}")]
    Repository {
        name: String,
        version: String,
        repository: String,
        reason: String,
    },
    /// The repository or registry failed (unreachable, credentials, no such version, over a
    /// limit): the source failure it would be for a chart source, with its reason code.
    #[error("dependency {name} {version}: {source}")]
    Fetch {
        name: String,
        version: String,
        #[source]
        source: SourceError,
    },
    /// A `file://` dependency that cannot be read from the revision.
    #[error("dependency {name} {version}: {path}: {reason}")]
    Local {
        name: String,
        version: String,
        path: String,
        reason: String,
    },
    #[error("chart dependency cache {}: {reason}", path.display())]
    Cache { path: PathBuf, reason: String },
}

impl ChartDepsError {
    /// The source failure's reason code (`Unreachable`, `AuthFailed`, ...) when a repository
    /// failed; `None` for a chart that is wrong in Git.
    pub fn fetch_reason(&self) -> Option<&'static str> {
        match self {
            ChartDepsError::Fetch { source, .. } => Some(source.reason()),
            _ => None,
        }
    }
}

/// One entry of `dependencies` (in `Chart.yaml` or `Chart.lock`), with every field Helm's
/// `chart.Dependency` has, in its order: the lock digest is taken over them.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Dependency {
    pub name: String,
    #[serde(default, deserialize_with = "de_text")]
    pub version: String,
    #[serde(default, deserialize_with = "de_text")]
    pub repository: String,
    #[serde(default, deserialize_with = "de_text")]
    pub condition: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, rename = "import-values")]
    pub import_values: Vec<Value>,
    #[serde(default, deserialize_with = "de_text")]
    pub alias: String,
}

/// A string field that YAML may have read as a number (`version: 1.0`), or null.
fn de_text<'de, D: serde::Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(de)? {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    })
}

#[derive(Deserialize)]
struct RawChart {
    #[serde(default, deserialize_with = "de_text")]
    name: String,
    #[serde(default, deserialize_with = "de_text")]
    version: String,
    #[serde(default)]
    dependencies: Vec<Dependency>,
}

/// `Chart.lock`: the versions `helm dependency update` resolved, and its digest over them and
/// `Chart.yaml`'s dependencies.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Lock {
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
    #[serde(default)]
    pub digest: String,
}

fn yaml<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    // A Chart.yaml is small; the budget bounds alias bombs.
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(4 * 1024 * 1024),
            max_aliases: 100,
            max_depth: 32,
            max_documents: 1,
        },
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| e.to_string())
}

/// A chart's name, version and dependencies from its `Chart.yaml`.
pub fn chart_yaml(bytes: &[u8]) -> Result<(String, String, Vec<Dependency>), ChartDepsError> {
    let raw: RawChart = yaml(bytes).map_err(ChartDepsError::ChartYaml)?;
    Ok((raw.name, raw.version, raw.dependencies))
}

pub fn lock(bytes: &[u8]) -> Result<Lock, ChartDepsError> {
    yaml(bytes).map_err(ChartDepsError::ChartLock)
}

/// Helm's digest of a lock (`resolver.HashReq`): SHA-256 of the JSON of `[requested, locked]`
/// as Go's `encoding/json` writes it (fields in struct order, empty ones omitted, `<`, `>` and
/// `&` escaped, map keys sorted).
pub fn lock_digest(requested: &[Dependency], locked: &[Dependency]) -> String {
    let mut json = String::from("[");
    for (i, list) in [requested, locked].into_iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push('[');
        for (j, d) in list.iter().enumerate() {
            if j > 0 {
                json.push(',');
            }
            go_dependency(d, &mut json);
        }
        json.push(']');
    }
    json.push(']');
    format!("sha256:{}", hex::encode(Sha256::digest(json.as_bytes())))
}

fn go_dependency(d: &Dependency, out: &mut String) {
    out.push_str("{\"name\":");
    go_string(&d.name, out);
    if !d.version.is_empty() {
        out.push_str(",\"version\":");
        go_string(&d.version, out);
    }
    out.push_str(",\"repository\":");
    go_string(&d.repository, out);
    if !d.condition.is_empty() {
        out.push_str(",\"condition\":");
        go_string(&d.condition, out);
    }
    if !d.tags.is_empty() {
        out.push_str(",\"tags\":[");
        for (i, t) in d.tags.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            go_string(t, out);
        }
        out.push(']');
    }
    if d.enabled {
        out.push_str(",\"enabled\":true");
    }
    if !d.import_values.is_empty() {
        out.push_str(",\"import-values\":");
        go_value(&Value::Array(d.import_values.clone()), out);
    }
    if !d.alias.is_empty() {
        out.push_str(",\"alias\":");
        go_string(&d.alias, out);
    }
    out.push('}');
}

fn go_value(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => go_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_string(k, out);
                out.push(':');
                go_value(&map[k], out);
            }
            out.push('}');
        }
    }
}

/// A string as Go's `encoding/json` writes it (HTML-safe escaping).
fn go_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Where a locked dependency comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An HTTP(S) chart repository (its URL, no trailing `/`).
    ChartRepository(String),
    /// An OCI registry: the chart's own reference, `oci://HOST/PATH/NAME`.
    Oci(String),
    /// A chart directory of the same revision, repository-relative.
    Local(String),
}

/// One dependency to fetch: as locked, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    pub name: String,
    pub version: String,
    /// As `Chart.lock` writes it.
    pub repository: String,
    pub origin: Origin,
}

/// Where the lock's `repository` for `name` is fetched from; `chart_dir` is the chart's
/// directory in the repository (for `file://`). Pure.
pub fn origin_of(
    name: &str,
    version: &str,
    repository: &str,
    chart_dir: &str,
) -> Result<Origin, ChartDepsError> {
    let refuse = |reason: &str| ChartDepsError::Repository {
        name: name.to_string(),
        version: version.to_string(),
        repository: repository.to_string(),
        reason: reason.to_string(),
    };
    if repository.is_empty() {
        return Err(refuse(
            "is empty and the chart is not vendored under charts/: vendor it or name its \
             repository",
        ));
    }
    if repository.starts_with('@') || repository.starts_with("alias:") {
        return Err(refuse(
            "names a repository of Helm's local configuration, which reckon does not read: \
             write the repository's URL in Chart.yaml and Chart.lock",
        ));
    }
    if let Some(path) = repository.strip_prefix("file://") {
        if path.starts_with('/') {
            return Err(refuse(
                "is an absolute path; a file:// dependency is a directory of the same \
                 repository, relative to the chart",
            ));
        }
        return normalize(chart_dir, path)
            .map(Origin::Local)
            .ok_or_else(|| {
                refuse(
                    "points outside the repository; a render sees only the repository's own files",
                )
            });
    }
    if repository.starts_with("oci://") {
        let url = format!("{}/{name}", repository.trim_end_matches('/'));
        super::chart_oci::ChartLocation::parse(&url).map_err(|e| refuse(&e.to_string()))?;
        return Ok(Origin::Oci(url));
    }
    if repository.starts_with("https://") || repository.starts_with("http://") {
        return Ok(Origin::ChartRepository(
            repository.trim_end_matches('/').to_string(),
        ));
    }
    Err(refuse(
        "is not a chart repository (https://, http://), an OCI registry (oci://) or a file:// \
         directory",
    ))
}

/// `reference` (a `/`-separated relative path) taken from `dir`, normalised; `None` when it
/// climbs above the repository root.
fn normalize(dir: &str, reference: &str) -> Option<String> {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in reference.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

/// Whether the chart's `charts/` already holds `name` (a directory with a `Chart.yaml`, or an
/// archive `NAME-VERSION.tgz`), as Helm looks for it.
fn is_vendored(files: &[ChartFile], name: &str) -> bool {
    let dir = format!("charts/{name}/Chart.yaml");
    let prefix = format!("charts/{name}-");
    files.iter().any(|(path, _)| {
        *path == dir
            || path
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".tgz"))
                .is_some_and(|version| {
                    !version.contains('/')
                        && version.starts_with(|c: char| c.is_ascii_digit() || c == 'v')
                })
    })
}

/// The dependencies of the chart in `files` (chart-relative; `chart_dir` its directory in the
/// repository) that must be fetched for its render, each at its locked version, without
/// duplicates. Nothing when the chart has no dependencies or all are vendored (as before: Helm
/// checks them). Pure.
pub fn needed(files: &[ChartFile], chart_dir: &str) -> Result<Vec<Needed>, ChartDepsError> {
    let Some((_, chart)) = files.iter().find(|(p, _)| p == "Chart.yaml") else {
        return Ok(Vec::new());
    };
    let (_, _, requested) = chart_yaml(chart)?;
    let missing: Vec<&Dependency> = requested
        .iter()
        .filter(|d| !is_vendored(files, &d.name))
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let Some((_, lock_bytes)) = files.iter().find(|(p, _)| p == "Chart.lock") else {
        // A chart used twice (two aliases) is named once.
        let mut names: Vec<&str> = Vec::new();
        for d in &missing {
            if !names.contains(&d.name.as_str()) {
                names.push(&d.name);
            }
        }
        return Err(ChartDepsError::NoLock {
            names: names.join(", "),
        });
    };
    let lock = lock(lock_bytes)?;
    let computed = lock_digest(&requested, &lock.dependencies);
    if computed != lock.digest {
        return Err(ChartDepsError::OutOfSync {
            recorded: if lock.digest.is_empty() {
                "no digest".into()
            } else {
                lock.digest.clone()
            },
            computed,
        });
    }
    let mut out: Vec<Needed> = Vec::new();
    for dependency in missing {
        let locked = lock
            .dependencies
            .iter()
            .find(|l| {
                l.name == dependency.name
                    && l.repository.trim_end_matches('/')
                        == dependency.repository.trim_end_matches('/')
            })
            .ok_or_else(|| ChartDepsError::NotLocked {
                name: dependency.name.clone(),
            })?;
        let origin = origin_of(&locked.name, &locked.version, &locked.repository, chart_dir)?;
        let need = Needed {
            name: locked.name.clone(),
            version: locked.version.clone(),
            repository: locked.repository.clone(),
            origin,
        };
        if !out.contains(&need) {
            out.push(need);
        }
    }
    Ok(out)
}

/// A chart's label for messages, `name version`, from its `Chart.yaml` ("chart" when it has
/// none that reads).
pub fn chart_label(files: &[ChartFile]) -> String {
    files
        .iter()
        .find(|(p, _)| p == "Chart.yaml")
        .and_then(|(_, b)| chart_yaml(b).ok())
        .map_or_else(|| "chart".to_string(), |(n, v, _)| format!("{n} {v}"))
}

/// A repository the App lets dependencies come from (`helm.repositories`), with how to get in.
#[derive(Debug, Clone)]
pub struct DependencyRepository {
    /// As `Chart.lock` names it, without a trailing `/`.
    pub url: String,
    pub auth: ChartAuth,
    pub ca_file: Option<PathBuf>,
    /// An OCI registry over plain HTTP (the configuration allows it on loopback only).
    pub plain_http: bool,
}

/// The entry of `repositories` for a lock's `repository` (compared without trailing `/`).
/// Pure.
pub fn repository_for<'a>(
    repositories: &'a [DependencyRepository],
    repository: &str,
) -> Option<&'a DependencyRepository> {
    let wanted = repository.trim_end_matches('/');
    repositories
        .iter()
        .find(|r| r.url.trim_end_matches('/') == wanted)
}

/// One dependency made ready: what the render records of it and the archive Helm reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub name: String,
    pub version: String,
    pub repository: String,
    /// `sha256:` of the archive (for a `file://` dependency, of its files).
    pub digest: String,
    pub origin: Origin,
}

/// Fetches dependency archives from the App's repositories into a cache named by digest.
#[derive(Debug, Clone)]
pub struct Fetcher {
    pub repositories: Vec<DependencyRepository>,
    /// `CACHE/chart-deps`: one `<sha256 hex>.tgz` per archive, shared by every App (a name is
    /// its bytes' digest, checked again when read).
    pub cache: PathBuf,
    pub limits: ChartLimits,
    /// Every request ends within it.
    pub timeout: Duration,
}

/// Where a locked version's archive is, found by [`Fetcher::locate`].
enum Located {
    Index {
        url: String,
        client: ChartRepo,
        chosen: chart_index::ChartVersion,
    },
    Oci {
        url: String,
        client: OciChart,
        runtime: tokio::runtime::Handle,
        manifest: String,
        layer: String,
    },
}

impl Fetcher {
    /// The chart `files` with every dependency that is not vendored added under `charts/`
    /// (archives as `charts/NAME-VERSION.tgz`, `file://` directories as `charts/NAME/...` read
    /// from `tree`, opened only when one is needed), and what each was. Blocking: an OCI
    /// registry is spoken to on the runtime of the caller's blocking thread.
    pub fn vendor(
        &self,
        mut files: Vec<ChartFile>,
        tree: impl FnOnce() -> Result<Box<dyn RepoTree>, String>,
        chart_dir: &str,
    ) -> Result<(Vec<ChartFile>, Vec<Resolved>), ChartDepsError> {
        let needed = needed(&files, chart_dir)?;
        if needed.is_empty() {
            return Ok((files, Vec::new()));
        }
        let mut tree = Some(tree);
        let mut opened: Option<Box<dyn RepoTree>> = None;
        let mut resolved = Vec::new();
        for need in &needed {
            match &need.origin {
                Origin::Local(dir) => {
                    if opened.is_none() {
                        let open = tree.take().expect("opened once");
                        opened = Some(open().map_err(|reason| ChartDepsError::Local {
                            name: need.name.clone(),
                            version: need.version.clone(),
                            path: dir.clone(),
                            reason,
                        })?);
                    }
                    let local =
                        local_chart(opened.as_deref().expect("opened"), need, dir, &self.limits)?;
                    let digest = crate::render::helm::chart_digest(&local);
                    files.extend(
                        local
                            .into_iter()
                            .map(|(p, b)| (format!("charts/{}/{p}", need.name), b)),
                    );
                    resolved.push(Resolved {
                        name: need.name.clone(),
                        version: need.version.clone(),
                        repository: need.repository.clone(),
                        digest,
                        origin: need.origin.clone(),
                    });
                }
                Origin::ChartRepository(_) | Origin::Oci(_) => {
                    let (digest, archive) = self.archive(need)?;
                    files.push((
                        format!("charts/{}-{}.tgz", need.name, need.version),
                        archive,
                    ));
                    resolved.push(Resolved {
                        name: need.name.clone(),
                        version: need.version.clone(),
                        repository: need.repository.clone(),
                        digest,
                        origin: need.origin.clone(),
                    });
                }
            }
        }
        Ok((files, resolved))
    }

    fn repository(&self, need: &Needed) -> Result<&DependencyRepository, ChartDepsError> {
        repository_for(&self.repositories, &need.repository).ok_or_else(|| {
            ChartDepsError::Repository {
                name: need.name.clone(),
                version: need.version.clone(),
                repository: need.repository.clone(),
                reason: "is not one of the App's helm.repositories; list it there (with its \
                         auth and CA) to let reckon fetch from it"
                    .into(),
            }
        })
    }

    fn auth(&self, repo: &DependencyRepository) -> Result<RepoAuth, SourceError> {
        let credentials = |detail: String| SourceError::Credentials {
            url: repo.url.clone(),
            detail,
        };
        Ok(match &repo.auth {
            ChartAuth::None => RepoAuth::None,
            ChartAuth::Basic { username, password } => RepoAuth::Basic {
                username: username.clone(),
                password: password.read().map_err(credentials)?,
            },
            ChartAuth::Bearer(token) => RepoAuth::Bearer(token.read().map_err(credentials)?),
        })
    }

    /// Where the locked version's archive is and what its digest is now: the chart
    /// repository's index entry (one request), or the OCI tag's manifest and its chart layer
    /// (two small requests). Nothing is downloaded.
    fn locate(&self, need: &Needed) -> Result<Located, ChartDepsError> {
        let repo = self.repository(need)?;
        let fetch_err = |source: SourceError| ChartDepsError::Fetch {
            name: need.name.clone(),
            version: need.version.clone(),
            source,
        };
        let auth = self.auth(repo).map_err(fetch_err)?;
        match &need.origin {
            Origin::ChartRepository(url) => {
                let client = ChartRepo::new(
                    url,
                    auth,
                    repo.ca_file.as_deref(),
                    self.limits,
                    self.timeout,
                )
                .map_err(|e| fetch_err(source_error(url, e)))?;
                let body = match client
                    .index(None)
                    .map_err(|e| fetch_err(source_error(url, e)))?
                {
                    IndexFetch::Fetched { body, .. } => body,
                    IndexFetch::NotModified => {
                        return Err(fetch_err(SourceError::Fetch {
                            url: url.clone(),
                            detail: "the index was answered 304 to an unconditional request".into(),
                        }));
                    }
                };
                let index_err = |e: chart_index::ChartIndexError| {
                    fetch_err(SourceError::MissingRef {
                        url: url.clone(),
                        selector: e.to_string(),
                    })
                };
                let versions =
                    chart_index::parse(client.base(), &body, &need.name).map_err(index_err)?;
                let chosen = chart_index::select(
                    client.base(),
                    &need.name,
                    &versions,
                    &Wanted::Exact(need.version.clone()),
                )
                .map_err(index_err)?;
                Ok(Located::Index {
                    url: url.clone(),
                    client,
                    chosen,
                })
            }
            Origin::Oci(url) => {
                let client = OciChart::new(
                    url,
                    auth,
                    repo.ca_file.as_deref(),
                    repo.plain_http,
                    self.limits,
                    self.timeout,
                )
                .map_err(|e| fetch_err(oci_error(url, e)))?;
                let runtime = tokio::runtime::Handle::try_current()
                    .map_err(|e| fetch_err(SourceError::Task(e.to_string())))?;
                // Helm writes a version's `+` as `_` in a tag.
                let tag = need.version.replace('+', "_");
                let (manifest, layer) = runtime
                    .block_on(async {
                        let manifest = client.resolve(&tag).await?;
                        let layer = client.layer_digest(&manifest).await?;
                        Ok((manifest, layer))
                    })
                    .map_err(|e| fetch_err(oci_error(url, e)))?;
                Ok(Located::Oci {
                    url: url.clone(),
                    client,
                    runtime,
                    manifest,
                    layer,
                })
            }
            Origin::Local(_) => Err(ChartDepsError::Local {
                name: need.name.clone(),
                version: need.version.clone(),
                path: need.repository.clone(),
                reason: "is read from the revision, not fetched".into(),
            }),
        }
    }

    /// The locked version's archive: located, then read from the cache by its digest or
    /// downloaded, checked and kept.
    fn archive(&self, need: &Needed) -> Result<(String, Vec<u8>), ChartDepsError> {
        let fetch_err = |source: SourceError| ChartDepsError::Fetch {
            name: need.name.clone(),
            version: need.version.clone(),
            source,
        };
        match self.locate(need)? {
            Located::Index {
                url,
                client,
                chosen,
            } => {
                if let Some(hex) = chosen.digest.as_deref().map(hex_of)
                    && let Some(cached) = self.cached(&hex)?
                {
                    return Ok((format!("sha256:{hex}"), cached));
                }
                let archive = client
                    .archive(&chosen)
                    .map_err(|e| fetch_err(source_error(&url, e)))?;
                self.keep(need, archive)
            }
            Located::Oci {
                url,
                client,
                runtime,
                manifest,
                layer,
            } => {
                if let Some(cached) = self.cached(&hex_of(&layer))? {
                    return Ok((format!("sha256:{}", hex_of(&layer)), cached));
                }
                let pulled = runtime
                    .block_on(client.pull(&manifest))
                    .map_err(|e| fetch_err(oci_error(&url, e)))?;
                self.keep(need, pulled.archive)
            }
        }
    }

    /// The dependencies of `resolved` whose repository now holds another archive under the
    /// locked version (a chart published again, an OCI tag pushed again), as `name version`:
    /// the render that used them is no longer what the repositories hold. Nothing is
    /// downloaded; a `file://` dependency is fixed by the revision and not looked at. Blocking.
    pub fn changed(&self, resolved: &[Resolved]) -> Result<Vec<String>, ChartDepsError> {
        let mut changed = Vec::new();
        for d in resolved {
            if matches!(d.origin, Origin::Local(_)) {
                continue;
            }
            let need = Needed {
                name: d.name.clone(),
                version: d.version.clone(),
                repository: d.repository.clone(),
                origin: d.origin.clone(),
            };
            let now = match self.locate(&need)? {
                Located::Index { chosen, .. } => {
                    chosen.digest.map(|d| format!("sha256:{}", hex_of(&d)))
                }
                Located::Oci { layer, .. } => Some(format!("sha256:{}", hex_of(&layer))),
            };
            if now.is_some_and(|now| now != d.digest) {
                changed.push(format!("{} {}", d.name, d.version));
            }
        }
        Ok(changed)
    }

    /// The archive kept as `hex`, when it is there and still those bytes.
    fn cached(&self, hex: &str) -> Result<Option<Vec<u8>>, ChartDepsError> {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let path = self.cache.join(format!("{hex}.tgz"));
        match std::fs::read(&path) {
            Ok(bytes) if hex::encode(Sha256::digest(&bytes)) == hex => Ok(Some(bytes)),
            // Damaged: fetched again and rewritten.
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ChartDepsError::Cache {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// Checks a downloaded archive (it unpacks within the limits, inside one directory, and its
    /// `Chart.yaml` is the locked chart and version), then keeps it by its digest.
    fn keep(&self, need: &Needed, archive: Vec<u8>) -> Result<(String, Vec<u8>), ChartDepsError> {
        check_archive(need, &archive, &self.limits)?;
        let hex = hex::encode(Sha256::digest(&archive));
        let cache_err = |reason: String| ChartDepsError::Cache {
            path: self.cache.clone(),
            reason,
        };
        std::fs::create_dir_all(&self.cache).map_err(|e| cache_err(e.to_string()))?;
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let tmp = self
            .cache
            .join(format!(".{hex}-{}-{unique}", std::process::id()));
        std::fs::write(&tmp, &archive).map_err(|e| cache_err(e.to_string()))?;
        // Another App may have kept the same archive meanwhile: the same bytes (the name is
        // their digest).
        if let Err(e) = std::fs::rename(&tmp, self.cache.join(format!("{hex}.tgz"))) {
            let _ = std::fs::remove_file(&tmp);
            return Err(cache_err(e.to_string()));
        }
        Ok((format!("sha256:{hex}"), archive))
    }
}

fn hex_of(digest: &str) -> String {
    digest
        .strip_prefix("sha256:")
        .unwrap_or(digest)
        .to_ascii_lowercase()
}

/// An archive is unpacked (into a temporary directory, removed after) under the chart source's
/// bounds, and its `Chart.yaml` must name the locked chart and version.
fn check_archive(
    need: &Needed,
    archive: &[u8],
    limits: &ChartLimits,
) -> Result<(), ChartDepsError> {
    let label = format!("{} {}", need.name, need.version);
    let refused = |detail: String| ChartDepsError::Fetch {
        name: need.name.clone(),
        version: need.version.clone(),
        source: SourceError::ChartRefused {
            chart: label.clone(),
            detail,
        },
    };
    let temp = tempfile::tempdir().map_err(|e| ChartDepsError::Cache {
        path: std::env::temp_dir(),
        reason: e.to_string(),
    })?;
    let dir = chart_repo::unpack(&label, archive, &temp.path().join("chart"), limits)
        .map_err(|e| refused(format!("hostile archive: {e}")))?;
    let chart = std::fs::read(dir.join("Chart.yaml"))
        .map_err(|_| refused("the archive holds no Chart.yaml at its top".into()))?;
    let (name, version, _) = chart_yaml(&chart).map_err(|e| refused(e.to_string()))?;
    if name != need.name || version.trim_start_matches('v') != need.version.trim_start_matches('v')
    {
        return Err(refused(format!(
            "the archive is chart {name} {version}, not the locked {label}"
        )));
    }
    Ok(())
}

/// The files of a `file://` dependency's directory, chart-relative, within the chart limits.
fn local_chart(
    tree: &dyn RepoTree,
    need: &Needed,
    dir: &str,
    limits: &ChartLimits,
) -> Result<Vec<ChartFile>, ChartDepsError> {
    let local = |reason: String| ChartDepsError::Local {
        name: need.name.clone(),
        version: need.version.clone(),
        path: if dir.is_empty() {
            ".".into()
        } else {
            dir.to_string()
        },
        reason,
    };
    let mut out: Vec<ChartFile> = Vec::new();
    let mut bytes = 0u64;
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let here = join(dir, &rel);
        let entries = tree
            .list(&here)
            .map_err(local)?
            .ok_or_else(|| local("no such directory in the revision".to_string()))?;
        for (name, kind) in entries {
            let path = join(&rel, &name);
            match kind {
                EntryKind::Dir => stack.push(path),
                EntryKind::File => {
                    let content = tree.read(&join(dir, &path)).map_err(local)?;
                    bytes += content.len() as u64;
                    out.push((path, content));
                    if out.len() > limits.files || bytes > limits.unpacked_bytes {
                        return Err(local(format!(
                            "more than {} files or {} bytes",
                            limits.files, limits.unpacked_bytes
                        )));
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    let chart = out
        .iter()
        .find(|(p, _)| p == "Chart.yaml")
        .ok_or_else(|| local("holds no Chart.yaml".into()))?;
    let (name, _, _) = chart_yaml(&chart.1)?;
    if name != need.name {
        return Err(local(format!(
            "is chart {name:?}, not the dependency's {:?}",
            need.name
        )));
    }
    Ok(out)
}

fn join(dir: &str, name: &str) -> String {
    match (dir, name) {
        ("", name) => name.to_string(),
        (dir, "") => dir.to_string(),
        (dir, name) => format!("{dir}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by hand, locked by the real `helm dependency update` (Helm 4.3.2) against a
    /// chart repository on loopback: the digest below is Helm's.
    const CHART_YAML: &str = r#"apiVersion: v2
name: web
version: 0.1.0
dependencies:
  - name: db
    version: ">=1.0.0 <2.0.0"
    repository: http://127.0.0.1:18765
    condition: db.enabled
    tags: [backend, "a&b"]
    import-values:
      - child: exports.data
        parent: fromdb
      - simple
  - name: cache
    alias: redis
    version: "~1.2"
    repository: http://127.0.0.1:18765/
  - name: common
    version: 0.3.0
    repository: file://../lib/common
"#;

    const CHART_LOCK: &str = r#"dependencies:
- name: db
  repository: http://127.0.0.1:18765
  version: 1.2.0
- name: cache
  repository: http://127.0.0.1:18765/
  version: 1.2.0
- name: common
  repository: file://../lib/common
  version: 0.3.0
digest: sha256:69d683d7968f395d0cb3392445de6c8d5f3af5c97d420ae19f4960842c4bac86
generated: "2026-12-07T10:56:00.091587424Z"
"#;

    fn files(extra: &[(&str, &str)]) -> Vec<ChartFile> {
        let mut files = vec![
            ("Chart.yaml".to_string(), CHART_YAML.as_bytes().to_vec()),
            ("Chart.lock".to_string(), CHART_LOCK.as_bytes().to_vec()),
        ];
        files.extend(
            extra
                .iter()
                .map(|(p, b)| (p.to_string(), b.as_bytes().to_vec())),
        );
        files
    }

    #[test]
    fn the_lock_digest_is_the_one_helm_wrote() {
        let (name, version, requested) = chart_yaml(CHART_YAML.as_bytes()).unwrap();
        assert_eq!((name.as_str(), version.as_str()), ("web", "0.1.0"));
        assert_eq!(requested.len(), 3);
        assert_eq!(requested[1].alias, "redis");
        let lock = lock(CHART_LOCK.as_bytes()).unwrap();
        assert_eq!(lock_digest(&requested, &lock.dependencies), lock.digest);
        // Any change to what was asked or what was locked is another digest.
        let mut edited = requested.clone();
        edited[0].version = ">=1.0.0 <3.0.0".into();
        assert_ne!(lock_digest(&edited, &lock.dependencies), lock.digest);
        let mut relocked = lock.dependencies.clone();
        relocked[0].version = "1.3.0".into();
        assert_ne!(lock_digest(&requested, &relocked), lock.digest);
    }

    #[test]
    fn strings_are_escaped_as_go_writes_them() {
        let mut out = String::new();
        go_string("a<b>&\"c\\\n\u{1}\u{2028}é", &mut out);
        assert_eq!(out, r#""a\u003cb\u003e\u0026\"c\\\n\u0001\u2028é""#);
        let mut out = String::new();
        go_value(
            &serde_json::json!({"b": 1, "a": [true, null, "x"]}),
            &mut out,
        );
        assert_eq!(out, r#"{"a":[true,null,"x"],"b":1}"#);
    }

    #[test]
    fn what_is_not_vendored_is_fetched_at_its_locked_version_from_its_origin() {
        let all_needed = needed(&files(&[]), "apps/web").unwrap();
        assert_eq!(
            all_needed,
            [
                Needed {
                    name: "db".into(),
                    version: "1.2.0".into(),
                    repository: "http://127.0.0.1:18765".into(),
                    origin: Origin::ChartRepository("http://127.0.0.1:18765".into()),
                },
                Needed {
                    name: "cache".into(),
                    version: "1.2.0".into(),
                    repository: "http://127.0.0.1:18765/".into(),
                    origin: Origin::ChartRepository("http://127.0.0.1:18765".into()),
                },
                Needed {
                    name: "common".into(),
                    version: "0.3.0".into(),
                    repository: "file://../lib/common".into(),
                    origin: Origin::Local("apps/lib/common".into()),
                },
            ]
        );
        // Vendored ones are left to Helm, as an archive or a directory.
        let some = needed(
            &files(&[
                ("charts/db-1.2.0.tgz", ""),
                ("charts/common/Chart.yaml", "name: common"),
            ]),
            "apps/web",
        )
        .unwrap();
        assert_eq!(some.len(), 1);
        assert_eq!(some[0].name, "cache");
        // All vendored: nothing to do, the lock is not even read.
        let all = vec![
            ("Chart.yaml".to_string(), CHART_YAML.as_bytes().to_vec()),
            ("Chart.lock".to_string(), b"not: [a lock".to_vec()),
            ("charts/db-1.2.0.tgz".to_string(), Vec::new()),
            ("charts/cache-1.2.0.tgz".to_string(), Vec::new()),
            ("charts/common-0.3.0.tgz".to_string(), Vec::new()),
        ];
        assert_eq!(needed(&all, "").unwrap(), []);
        // A chart without dependencies has nothing to do.
        let plain = vec![(
            "Chart.yaml".to_string(),
            b"name: x\nversion: 1.0.0\n".to_vec(),
        )];
        assert_eq!(needed(&plain, "").unwrap(), []);
    }

    #[test]
    fn a_missing_or_stale_lock_is_refused_naming_what_to_do() {
        let no_lock = vec![("Chart.yaml".to_string(), CHART_YAML.as_bytes().to_vec())];
        let err = needed(&no_lock, "").unwrap_err();
        assert!(matches!(err, ChartDepsError::NoLock { .. }), "{err}");
        assert!(err.to_string().contains("db, cache, common"), "{err}");
        assert!(err.to_string().contains("helm dependency update"), "{err}");

        // Chart.yaml asks for another range than the lock was made for: never re-resolved.
        let edited = CHART_YAML.replace("~1.2", "~1.3");
        let stale = vec![
            ("Chart.yaml".to_string(), edited.into_bytes()),
            ("Chart.lock".to_string(), CHART_LOCK.as_bytes().to_vec()),
        ];
        let err = needed(&stale, "").unwrap_err();
        assert!(matches!(err, ChartDepsError::OutOfSync { .. }), "{err}");
        assert!(err.to_string().contains("out of sync"), "{err}");
        assert_eq!(
            err.fetch_reason(),
            None,
            "a chart wrong in Git, not a fetch"
        );

        // A lock edited by hand to another version, its digest left alone.
        let tampered = CHART_LOCK.replacen("version: 1.2.0", "version: 1.9.9", 1);
        let err = needed(
            &[
                ("Chart.yaml".to_string(), CHART_YAML.as_bytes().to_vec()),
                ("Chart.lock".to_string(), tampered.into_bytes()),
            ],
            "",
        )
        .unwrap_err();
        assert!(matches!(err, ChartDepsError::OutOfSync { .. }), "{err}");
    }

    #[test]
    fn each_repository_form_has_its_origin_or_a_reason() {
        let origin = |r: &str| origin_of("db", "1.0.0", r, "charts/web");
        assert_eq!(
            origin("https://charts.example.com/stable/").unwrap(),
            Origin::ChartRepository("https://charts.example.com/stable".into())
        );
        assert_eq!(
            origin("oci://registry.example.com/charts").unwrap(),
            Origin::Oci("oci://registry.example.com/charts/db".into())
        );
        assert_eq!(
            origin("file://../db").unwrap(),
            Origin::Local("charts/db".into())
        );
        assert_eq!(
            origin("file://./sub/db").unwrap(),
            Origin::Local("charts/web/sub/db".into())
        );
        for (repository, says) in [
            ("file://../../../etc", "outside the repository"),
            ("file:///etc/db", "absolute"),
            ("@stable", "Helm's local configuration"),
            ("alias:stable", "Helm's local configuration"),
            ("", "not vendored"),
            ("s3://bucket/charts", "is not a chart repository"),
            ("oci://registry.example.com/Charts", "lower case"),
        ] {
            let err = origin(repository).unwrap_err().to_string();
            assert!(err.contains(says), "{repository}: {err}");
            assert!(err.starts_with("dependency db 1.0.0"), "{err}");
        }
    }

    #[test]
    fn only_the_apps_repositories_are_fetched_from() {
        let repos = vec![DependencyRepository {
            url: "https://charts.example.com/stable".into(),
            auth: ChartAuth::None,
            ca_file: None,
            plain_http: false,
        }];
        assert!(repository_for(&repos, "https://charts.example.com/stable/").is_some());
        assert!(repository_for(&repos, "https://charts.example.com/stable").is_some());
        assert!(repository_for(&repos, "https://charts.example.com/other").is_none());
        assert!(repository_for(&repos, "https://evil.example.com/stable").is_none());
        let fetcher = Fetcher {
            repositories: repos,
            cache: std::env::temp_dir().join("reckon-never-written"),
            limits: ChartLimits::default(),
            timeout: Duration::from_secs(1),
        };
        let err = fetcher
            .vendor(
                vec![
                    (
                        "Chart.yaml".into(),
                        b"name: web\nversion: 1.0.0\ndependencies:\n  - {name: db, version: 1.0.0, repository: \"https://elsewhere.example.com\"}\n".to_vec(),
                    ),
                    (
                        "Chart.lock".into(),
                        format!(
                            "dependencies:\n- {{name: db, version: 1.0.0, repository: \"https://elsewhere.example.com\"}}\ndigest: {}\n",
                            lock_digest(
                                &[Dependency {
                                    name: "db".into(),
                                    version: "1.0.0".into(),
                                    repository: "https://elsewhere.example.com".into(),
                                    ..Dependency::default()
                                }],
                                &[Dependency {
                                    name: "db".into(),
                                    version: "1.0.0".into(),
                                    repository: "https://elsewhere.example.com".into(),
                                    ..Dependency::default()
                                }]
                            )
                        )
                        .into_bytes(),
                    ),
                ],
                || Err("no tree".into()),
                "",
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not one of the App's helm.repositories"),
            "{err}"
        );
    }
}
