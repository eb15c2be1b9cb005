//! Owns what a kustomize unit may read of the repository: the [`RepoTree`] a render is given,
//! and the closure of one unit — the directories and files its kustomizations reach — bounded
//! by the repository root, with remote references refused.
//!
//! kustomize is run with `--load-restrictor LoadRestrictionsNone` so that an overlay may use a
//! patch kept beside its base (`../../shared/patch.yaml`); the bound it gives up is enforced
//! here instead: every reference in every kustomization the unit loads is resolved against the
//! repository, and one that leaves the root, is absolute, or names a remote base fails the
//! render before kustomize runs. kustomize only sees a temporary copy of the closure, which
//! holds no symlinks.

use std::collections::{BTreeMap, BTreeSet};

use super::{KUSTOMIZATION_FILES, SourceFile};

/// A repository at one revision, read lazily: paths are repository-relative, `/`-separated,
/// "" for the root. Symlinks and submodules are not entries (a link could lead outside).
pub trait RepoTree {
    /// The App's directory in the repository ("" for the root).
    fn app_dir(&self) -> &str;
    /// The entries of the directory at `dir`, or `None` when there is no directory there.
    fn list(&self, dir: &str) -> Result<Option<Vec<(String, EntryKind)>>, String>;
    /// The bytes of the file at `path`.
    fn read(&self, path: &str) -> Result<Vec<u8>, String>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
}

/// Why a kustomization's reference is refused; each names the kustomization file (repository
/// path) and the reference as written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error(
        "{file}: {reference:?} points outside the repository; a render sees only the \
         repository's own files"
    )]
    EscapesRepository { file: String, reference: String },
    #[error("{file}: {reference:?} is an absolute path; use a path relative to {file}")]
    Absolute { file: String, reference: String },
    #[error(
        "{file}: {reference:?} is a remote base; reckon renders without network access: \
         copy it into the repository"
    )]
    Remote { file: String, reference: String },
    #[error(
        "{file}: helmCharts entry {chart:?} names the chart repository {repo:?}; reckon renders \
         without network access: vendor the chart under the kustomization's helmGlobals.chartHome \
         (default charts/) and remove repo"
    )]
    RemoteChart {
        file: String,
        chart: String,
        repo: String,
    },
    #[error("{file}: not valid YAML: {message}")]
    Unreadable { file: String, message: String },
    #[error("reading {path} from the repository: {message}")]
    Read { path: String, message: String },
}

/// Fields whose entries are kustomizations (or files) to load: a directory among them is a
/// kustomization root whose own kustomization is loaded in turn.
/// A kustomization's `helmGlobals.chartHome` (the vendored charts of its `helmCharts`) is copied
/// whole in the same way, though it holds charts, not a kustomization.
const ROOT_FIELDS: [&str; 4] = ["resources", "bases", "components", "helmGlobals.chartHome"];

/// Fields (or `field.subfield` under a list) whose values are files to load.
const FILE_FIELDS: [&str; 14] = [
    "crds",
    "configurations",
    "patchesStrategicMerge",
    "generators",
    "transformers",
    "validators",
    "patches.path",
    "patchesJson6902.path",
    "replacements.path",
    "openapi.path",
    "configMapGenerator.files",
    "secretGenerator.files",
    "helmCharts.valuesFile",
    "helmCharts.additionalValuesFiles",
];

/// Generator env files: `envs` (a list) and the older `env` (one file).
const ENV_FIELDS: [&str; 4] = [
    "configMapGenerator.envs",
    "configMapGenerator.env",
    "secretGenerator.envs",
    "secretGenerator.env",
];

/// The repository paths one unit reads: directories copied whole (kustomization roots) and
/// single files outside them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Closure {
    pub dirs: BTreeSet<String>,
    pub files: BTreeSet<String>,
    /// Some kustomization of the unit inflates Helm charts (`helmCharts`): kustomize needs Helm.
    pub helm: bool,
}

impl Closure {
    fn covers(&self, path: &str) -> bool {
        self.dirs
            .iter()
            .any(|dir| super::is_under(path, dir) || dir == path)
    }
}

/// The closure of the kustomization root at `unit` (a repository directory).
pub fn closure(repo: &dyn RepoTree, unit: &str) -> Result<Closure, ReferenceError> {
    let mut out = Closure::default();
    let mut loaded: BTreeSet<String> = BTreeSet::new();
    let mut roots = vec![unit.to_string()];
    while let Some(root) = roots.pop() {
        if !loaded.insert(root.clone()) {
            continue;
        }
        if !out.covers(&root) {
            // A root inside this one is copied with it from now on: keep only the outermost.
            out.dirs.retain(|dir| !super::is_under(dir, &root));
            out.dirs.insert(root.clone());
        }
        let Some(entries) = list(repo, &root)? else {
            continue;
        };
        let Some(name) = KUSTOMIZATION_FILES.into_iter().find(|name| {
            entries
                .iter()
                .any(|(n, k)| n == name && *k == EntryKind::File)
        }) else {
            continue;
        };
        let file = join(&root, name);
        let bytes = read(repo, &file)?;
        out.helm |= helm_charts(&file, &bytes)?;
        for (field, reference) in references(&file, &bytes)? {
            match resolve(repo, &root, &file, field, &reference)? {
                Some((path, EntryKind::Dir)) => roots.push(path),
                Some((path, EntryKind::File)) => {
                    out.files.insert(path);
                }
                None => {}
            }
        }
    }
    let covered: Vec<String> = out
        .files
        .iter()
        .filter(|f| out.covers(f))
        .cloned()
        .collect();
    for file in covered {
        out.files.remove(&file);
    }
    Ok(out)
}

/// Every file of the closure, repository-relative (hidden entries under a copied directory are
/// skipped, as for plain manifests), in path order.
pub fn files(repo: &dyn RepoTree, closure: &Closure) -> Result<Vec<String>, ReferenceError> {
    let mut out: BTreeSet<String> = closure.files.clone();
    for dir in &closure.dirs {
        walk(repo, dir, &mut out)?;
    }
    Ok(out.into_iter().collect())
}

fn walk(repo: &dyn RepoTree, dir: &str, out: &mut BTreeSet<String>) -> Result<(), ReferenceError> {
    for (name, kind) in list(repo, dir)?.unwrap_or_default() {
        if name.starts_with('.') {
            continue;
        }
        let path = join(dir, &name);
        match kind {
            EntryKind::Dir => walk(repo, &path, out)?,
            EntryKind::File => {
                out.insert(path);
            }
        }
    }
    Ok(())
}

fn list(
    repo: &dyn RepoTree,
    dir: &str,
) -> Result<Option<Vec<(String, EntryKind)>>, ReferenceError> {
    repo.list(dir).map_err(|message| ReferenceError::Read {
        path: shown(dir),
        message,
    })
}

pub(super) fn read(repo: &dyn RepoTree, path: &str) -> Result<Vec<u8>, ReferenceError> {
    repo.read(path).map_err(|message| ReferenceError::Read {
        path: shown(path),
        message,
    })
}

fn shown(path: &str) -> String {
    if path.is_empty() {
        ".".into()
    } else {
        path.into()
    }
}

pub(super) fn join(dir: &str, name: &str) -> String {
    match (dir, name) {
        ("", name) => name.to_string(),
        // The App's own root as a unit: the App's directory itself.
        (dir, "") => dir.to_string(),
        (dir, name) => format!("{dir}/{name}"),
    }
}

/// Checks one reference and finds what it names in the repository (`None`: nothing there —
/// kustomize reports a missing file in its own words; an inline patch or plugin config is not
/// a path at all).
fn resolve(
    repo: &dyn RepoTree,
    dir: &str,
    file: &str,
    field: &str,
    reference: &str,
) -> Result<Option<(String, EntryKind)>, ReferenceError> {
    let refused = |make: fn(String, String) -> ReferenceError| {
        Err(make(file.to_string(), reference.to_string()))
    };
    if is_remote(reference) {
        return refused(|file, reference| ReferenceError::Remote { file, reference });
    }
    if reference.starts_with('/') {
        return refused(|file, reference| ReferenceError::Absolute { file, reference });
    }
    let Some(path) = normalize(dir, reference) else {
        return refused(|file, reference| ReferenceError::EscapesRepository { file, reference });
    };
    let found = kind_of(repo, &path)?;
    // `github.com/org/repo/path?ref=v1` has no scheme: kustomize fetches a root reference that
    // is not a local path and whose first part looks like a host.
    if found.is_none() && ROOT_FIELDS.contains(&field) && looks_like_host(reference) {
        return refused(|file, reference| ReferenceError::Remote { file, reference });
    }
    Ok(found.map(|kind| (path, kind)))
}

fn kind_of(repo: &dyn RepoTree, path: &str) -> Result<Option<EntryKind>, ReferenceError> {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    if path.is_empty() {
        return Ok(Some(EntryKind::Dir));
    }
    Ok(list(repo, dir)?
        .unwrap_or_default()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, kind)| kind))
}

fn is_remote(reference: &str) -> bool {
    reference.contains("://") || reference.starts_with("git@") || reference.starts_with("git::")
}

fn looks_like_host(reference: &str) -> bool {
    let first = reference.split('/').next().unwrap_or("");
    first.contains('.') && first != "." && first != ".." && reference.contains('/')
}

/// `reference` resolved against repository directory `dir`, or `None` when it leaves the root.
pub(super) fn normalize(dir: &str, reference: &str) -> Option<String> {
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

/// The path references of one kustomization, with the field each came from. Strings that are
/// not paths (inline patches, plugin configs: they span lines) are left out; every other
/// single-line string anywhere in the file that climbs out with `..` is returned under the
/// field "" so that a field this list does not know cannot reach outside either.
pub fn references(file: &str, bytes: &[u8]) -> Result<Vec<(&'static str, String)>, ReferenceError> {
    let value: serde_json::Value = super::parse::documents(file, bytes)
        .map_err(|e| ReferenceError::Unreadable {
            file: file.to_string(),
            message: e.to_string(),
        })?
        .into_iter()
        .next()
        .unwrap_or(serde_json::Value::Null);
    let mut out = Vec::new();
    let mut known: BTreeSet<String> = BTreeSet::new();
    for field in ROOT_FIELDS.iter().chain(&FILE_FIELDS).chain(&ENV_FIELDS) {
        for reference in strings_at(&value, field) {
            let reference = if field.ends_with(".files") {
                // `key=path` names the data key; the file is after the `=`.
                reference
                    .rsplit_once('=')
                    .map_or(reference, |(_, path)| path)
            } else {
                reference
            };
            known.insert(reference.to_string());
            out.push((*field, reference.to_string()));
        }
    }
    let mut all = Vec::new();
    every_string(&value, &mut all);
    for text in all {
        let climbs = text.split('/').any(|part| part == "..");
        if climbs && !known.contains(text) {
            out.push(("", text.to_string()));
        }
    }
    Ok(out)
}

/// Whether a kustomization inflates Helm charts; refused when one is to be pulled from a chart
/// repository (kustomize would fetch it at render time).
pub fn helm_charts(file: &str, bytes: &[u8]) -> Result<bool, ReferenceError> {
    let value: serde_json::Value = super::parse::documents(file, bytes)
        .map_err(|e| ReferenceError::Unreadable {
            file: file.to_string(),
            message: e.to_string(),
        })?
        .into_iter()
        .next()
        .unwrap_or(serde_json::Value::Null);
    let charts = value
        .get("helmCharts")
        .and_then(serde_json::Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for chart in charts {
        if let Some(repo) = chart.get("repo").and_then(serde_json::Value::as_str)
            && !repo.trim().is_empty()
        {
            return Err(ReferenceError::RemoteChart {
                file: file.to_string(),
                chart: chart
                    .get("name")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                repo: repo.to_string(),
            });
        }
    }
    Ok(!charts.is_empty())
}

/// Single-line strings at `field` (`a` or `a.b`, where `a` is a list of maps or a map).
fn strings_at<'v>(value: &'v serde_json::Value, field: &str) -> Vec<&'v str> {
    let (head, rest) = field
        .split_once('.')
        .map_or((field, None), |(h, r)| (h, Some(r)));
    let Some(found) = value.get(head) else {
        return Vec::new();
    };
    let items: Vec<&serde_json::Value> = match found {
        serde_json::Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut out = Vec::new();
    for item in items {
        match rest {
            Some(rest) => out.extend(strings_at(item, rest)),
            None => out.extend(single_line(item)),
        }
    }
    out
}

fn single_line(value: &serde_json::Value) -> Vec<&str> {
    match value {
        serde_json::Value::String(s) if !s.contains('\n') && !s.trim().is_empty() => {
            vec![s.trim()]
        }
        serde_json::Value::Array(items) => items.iter().flat_map(single_line).collect(),
        _ => Vec::new(),
    }
}

fn every_string<'v>(value: &'v serde_json::Value, out: &mut Vec<&'v str>) {
    match value {
        serde_json::Value::String(s) if !s.contains('\n') => out.push(s.trim()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| every_string(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| every_string(v, out)),
        _ => {}
    }
}

/// The App's own files seen as the whole repository: for renders given no repository (local
/// directories, tests), where a unit can reach nothing outside the App's directory.
pub struct FilesTree<'a> {
    files: BTreeMap<&'a str, &'a [u8]>,
    app_dir: &'a str,
}

impl<'a> FilesTree<'a> {
    pub fn new(files: &'a [SourceFile]) -> FilesTree<'a> {
        FilesTree::at(files, "")
    }

    /// `files` as a whole repository (repository-relative paths) whose App is at `app_dir`.
    pub fn at(files: &'a [SourceFile], app_dir: &'a str) -> FilesTree<'a> {
        FilesTree {
            files: files
                .iter()
                .map(|(path, bytes)| (path.as_str(), bytes.as_slice()))
                .collect(),
            app_dir,
        }
    }
}

impl RepoTree for FilesTree<'_> {
    fn app_dir(&self) -> &str {
        self.app_dir
    }

    fn list(&self, dir: &str) -> Result<Option<Vec<(String, EntryKind)>>, String> {
        let mut entries: BTreeMap<String, EntryKind> = BTreeMap::new();
        for path in self.files.keys() {
            let rest = if dir.is_empty() {
                Some(*path)
            } else {
                path.strip_prefix(dir).and_then(|r| r.strip_prefix('/'))
            };
            if let Some(rest) = rest {
                match rest.split_once('/') {
                    Some((name, _)) => entries.insert(name.to_string(), EntryKind::Dir),
                    None => entries.insert(rest.to_string(), EntryKind::File),
                };
            }
        }
        Ok((!entries.is_empty() || dir.is_empty()).then(|| entries.into_iter().collect()))
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        self.files
            .get(path)
            .map(|bytes| bytes.to_vec())
            .ok_or_else(|| "no such file".to_string())
    }
}

#[cfg(test)]
mod tests;
