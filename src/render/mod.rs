//! Owns turning an App's source files into the normalised, labelled, digested objects to apply.
//!
//! Input is a list of (relative path, bytes) — what the Git source reads from a tree without a
//! worktree. A directory holding a `kustomization.yaml` (or `.yml`, or `Kustomization`) is built
//! as one unit by `kustomize build` / `kubectl kustomize` (see [`kustomize`]); every other
//! `.yaml`, `.yml` and `.json` file is read as manifests, multi-document, in byte order of its
//! path. Anything else, and anything under a directory whose name starts with `.`, is skipped.
//!
//! Every object is then normalised ([`normalize`]) and given a canonical digest ([`digest`]).
//! Secret values never leave this module in plain text except inside the manifests to apply
//! ([`Manifest`], which hides them from `Debug` and cannot be serialised):
//! [`digest::storable`] replaces them with keyed hashes for the log and the blob store, and the
//! digest of a Secret is taken over that storable form, so a digest cannot be used to guess a
//! weak secret offline.

pub mod digest;
pub mod helm;
pub mod kustomize;
pub mod normalize;
mod parse;
pub use parse::DEFAULT_YAML_EXPANDED_BYTES;
pub mod repo;

use crate::model::{Digest, ObjectKey, ObjectRef};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::model::Manifest;
pub use digest::{
    SecretKey, canonical_json, object_digest, open_sealed, sealed_object, set_digest,
    set_digest_of, storable,
};

/// Errors while rendering, each naming the file (and document and line where there is one).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("reading {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A source path that would escape the render directory (absolute, or with `..`).
    #[error("{path}: unsafe path in source tree")]
    UnsafePath { path: String },
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        file: String,
        line: u64,
        column: u64,
        message: String,
    },
    /// A document that is not a Kubernetes object (no apiVersion, kind or metadata.name).
    #[error("{file}: document {document}: {reason}")]
    NotAnObject {
        file: String,
        /// Zero-based index of the document in the file (after empty documents are skipped).
        document: usize,
        reason: String,
    },
    #[error(
        "{key} is defined twice: in {first_file} (document {first_document}) and in \
         {second_file} (document {second_document})"
    )]
    Duplicate {
        // Boxed: the largest variant sets the size of every `Result` in this module.
        key: Box<ObjectKey>,
        first_file: String,
        first_document: usize,
        second_file: String,
        second_document: usize,
    },
    #[error("writing {path} for kustomize: {source}")]
    WriteTemp {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kustomize build of {dir}: {message}")]
    Kustomize { dir: String, message: String },
    /// A kustomization reference refused before kustomize runs (outside the repository,
    /// absolute, remote), or a repository read that failed.
    #[error("kustomize build of {dir}: {source}")]
    Reference {
        dir: String,
        #[source]
        source: repo::ReferenceError,
    },
    /// A Helm chart directory below the App's path: its templates are not manifests and must
    /// not be read as YAML. (A chart at the App's path is rendered by [`helm`].)
    #[error(
        "{dir} is a Helm chart (Chart.yaml); a chart is rendered by Helm only when it is the \
         App's path: point the App's path at it"
    )]
    HelmChart { dir: String },
    /// `helm template` failed, or the chart could not be prepared for it; names the chart
    /// (`name version`), and the template and line when Helm's message names them.
    #[error("helm chart {chart}: {}", helm_location(template.as_deref(), *line, message))]
    Helm {
        chart: String,
        template: Option<String>,
        line: Option<u64>,
        message: String,
    },
    /// A recorded set (a revision's blob) that does not read back as objects.
    #[error("recorded manifests, object {index}: {reason}")]
    Recorded { index: usize, reason: String },
    /// A recorded Secret whose values cannot be opened (see [`digest::open_sealed`]).
    #[error("recorded Secret {object}: {source}")]
    Sealed {
        object: String,
        #[source]
        source: digest::SealError,
    },
}

fn helm_location(template: Option<&str>, line: Option<u64>, message: &str) -> String {
    match (template, line) {
        (Some(t), Some(l)) => format!("{t}:{l}: {message}"),
        (Some(t), None) => format!("{t}: {message}"),
        _ => message.to_string(),
    }
}

/// Settings for one render.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// The owning App's name, written into every object's labels.
    pub app: String,
    /// Key for the keyed hashes of Secret values (see [`digest::storable`]).
    pub secret_key: SecretKey,
    /// Longest a kustomize build may run before it is killed.
    pub kustomize_timeout: Duration,
    /// Bytes of scalars a YAML file may expand to with its aliases replaced
    /// (`limits.yaml_expanded_bytes`; default [`parse::DEFAULT_YAML_EXPANDED_BYTES`]).
    pub yaml_expanded_bytes: usize,
    /// Write `protocol: TCP` into ports that name none. Servers before v1.21 refuse such a port
    /// in server-side apply (`protocol` is part of the list's key and they did not default it
    /// first, kubernetes#98576); later ones default it themselves, so the manifest stays as
    /// written. Set from the server's version ([`crate::version::ServerVersion`]).
    pub fill_port_protocol: bool,
}

/// Where an object was read from, for messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// Source-relative path, or `kustomize build <dir>` for kustomize output.
    pub file: String,
    /// Zero-based index of the document in the file.
    pub document: usize,
}

/// One rendered, normalised object. Not `Serialize`: it holds Secret values (see [`Manifest`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedObject {
    /// As rendered; `namespace` is `None` when the manifest names none (the planner defaults it).
    pub object: ObjectRef,
    pub manifest: Manifest,
    /// [`object_digest`] of the manifest (of its storable form for a Secret).
    pub digest: Digest,
    pub origin: Origin,
}

/// Everything one render produced, in deterministic order; persist it with [`storable`].
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedSet {
    pub objects: Vec<RenderedObject>,
    /// [`set_digest`] of the object digests: equal sets have equal digests whatever the order
    /// of files in the repository.
    pub digest: Digest,
}

/// A source file: path relative to the App's directory (`/`-separated) and its contents.
pub type SourceFile = (String, Vec<u8>);

const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

fn is_hidden(path: &str) -> bool {
    path.split('/').any(|part| part.starts_with('.'))
}

fn is_manifest(path: &str) -> bool {
    [".yaml", ".yml", ".json"]
        .iter()
        .any(|ext| path.to_ascii_lowercase().ends_with(ext))
}

/// Directory part of a `/`-separated path ("" for the root).
fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

fn is_under(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn check_path(path: &str) -> Result<(), RenderError> {
    let unsafe_path = path.is_empty()
        || path.starts_with('/')
        || path.contains('\\')
        || path
            .split('/')
            .any(|part| part.is_empty() || part == ".." || part == ".");
    if unsafe_path {
        return Err(RenderError::UnsafePath {
            path: path.to_string(),
        });
    }
    Ok(())
}

/// Renders source files into a normalised, labelled, digested set, with nothing outside the
/// App's files for kustomize to read (a local directory, tests).
pub fn render(files: &[SourceFile], options: &RenderOptions) -> Result<RenderedSet, RenderError> {
    render_in(files, &repo::FilesTree::new(files), options)
}

/// Renders the App's source files (`files`, App-relative) of a revision whose whole repository
/// `repo` is: a kustomize unit may read anything inside the repository (`../../base`), never
/// outside it.
pub fn render_in(
    files: &[SourceFile],
    repo: &dyn repo::RepoTree,
    options: &RenderOptions,
) -> Result<RenderedSet, RenderError> {
    let mut files: Vec<&SourceFile> = files.iter().collect();
    for (path, _) in &files {
        check_path(path)?;
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files.retain(|(path, _)| !is_hidden(path));

    // Outermost kustomization directories: each is built as one unit, and nothing beneath it
    // is read directly (its files are kustomize's inputs, not manifests of their own).
    let mut kustomize_dirs: Vec<&str> = Vec::new();
    for (path, _) in &files {
        let name = path.rsplit('/').next().unwrap_or(path);
        if KUSTOMIZATION_FILES.contains(&name) {
            let dir = parent(path);
            if !kustomize_dirs
                .iter()
                .any(|outer| is_under(dir, outer) || *outer == dir)
            {
                kustomize_dirs.retain(|inner| !is_under(inner, dir));
                kustomize_dirs.push(dir);
            }
        }
    }
    kustomize_dirs.sort_unstable();
    refuse_helm_charts(&files, &kustomize_dirs)?;

    // Units in path order: a kustomize directory sorts where its kustomization file would.
    enum Unit<'a> {
        File(&'a SourceFile),
        Kustomize(&'a str),
    }
    let mut units: Vec<(String, Unit)> = Vec::new();
    for dir in &kustomize_dirs {
        let sort_key = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        units.push((sort_key, Unit::Kustomize(dir)));
    }
    for file in &files {
        let (path, _) = file;
        let in_kustomize = kustomize_dirs.iter().any(|dir| is_under(path, dir));
        if !in_kustomize && is_manifest(path) {
            units.push((path.clone(), Unit::File(file)));
        }
    }
    units.sort_by(|a, b| a.0.cmp(&b.0));

    let mut documents: Vec<(Origin, serde_json::Value)> = Vec::new();
    for (_, unit) in units {
        let (file, docs) = match unit {
            Unit::File((path, bytes)) => (
                path.clone(),
                parse::documents_within(path, bytes, options.yaml_expanded_bytes)?,
            ),
            Unit::Kustomize(dir) => {
                let unit = repo::join(repo.app_dir(), dir);
                let output = kustomize::build(repo, &unit, dir, options.kustomize_timeout)?;
                let label = format!("kustomize build {}", if dir.is_empty() { "." } else { dir });
                let docs = parse::documents_within(
                    &label,
                    output.as_bytes(),
                    options.yaml_expanded_bytes,
                )?;
                (label, docs)
            }
        };
        for (document, value) in docs.into_iter().enumerate() {
            documents.push((
                Origin {
                    file: file.clone(),
                    document,
                },
                value,
            ));
        }
    }

    objects_from(documents, options)
}

/// Normalises, labels and digests parsed documents (each with where it came from) into a set;
/// two documents naming the same object fail the render.
fn objects_from(
    documents: Vec<(Origin, serde_json::Value)>,
    options: &RenderOptions,
) -> Result<RenderedSet, RenderError> {
    let mut objects: Vec<RenderedObject> = Vec::new();
    let mut seen: BTreeMap<ObjectKey, usize> = BTreeMap::new();
    for (origin, value) in documents {
        for mut manifest in parse::flatten_list(value) {
            let object =
                parse::object_ref(&manifest).map_err(|reason| RenderError::NotAnObject {
                    file: origin.file.clone(),
                    document: origin.document,
                    reason,
                })?;
            if let Some(&first) = seen.get(&object.key()) {
                let first: &RenderedObject = &objects[first];
                return Err(RenderError::Duplicate {
                    key: Box::new(object.key()),
                    first_file: first.origin.file.clone(),
                    first_document: first.origin.document,
                    second_file: origin.file.clone(),
                    second_document: origin.document,
                });
            }
            normalize::normalize(&mut manifest, &options.app, options.fill_port_protocol);
            let digest = object_digest(&manifest, &options.secret_key);
            seen.insert(object.key(), objects.len());
            objects.push(RenderedObject {
                object,
                manifest: Manifest::new(manifest),
                digest,
                origin: origin.clone(),
            });
        }
    }
    let digest = set_digest_of(objects.iter().map(|o| &o.digest));
    Ok(RenderedSet { objects, digest })
}

/// A `Chart.yaml` outside every kustomize unit makes its directory a Helm chart: its
/// `templates/` are Go templates, which would fail as YAML with a message that hides what the
/// directory is. (Inside a unit kustomize decides, and it is run without Helm.)
fn refuse_helm_charts(files: &[&SourceFile], kustomize_dirs: &[&str]) -> Result<(), RenderError> {
    let chart = files.iter().map(|(path, _)| path.as_str()).find(|path| {
        let name = path.rsplit('/').next().unwrap_or(path);
        name == "Chart.yaml" && !kustomize_dirs.iter().any(|dir| is_under(path, dir))
    });
    match chart {
        Some(path) => Err(RenderError::HelmChart {
            dir: match parent(path) {
                "" => ".".to_string(),
                dir => dir.to_string(),
            },
        }),
        None => Ok(()),
    }
}

/// The set recorded for a revision (the blob a `RenderSucceeded` names: canonical objects, one per
/// line, Secret values sealed) read back as a rendered set to apply, without Git. The objects
/// were normalised when they were rendered; their digests are computed again here, so they
/// match the digests recorded when the revision was applied.
pub fn from_recorded(blob: &[u8], key: &SecretKey) -> Result<RenderedSet, RenderError> {
    let mut objects = Vec::new();
    let text = std::str::from_utf8(blob).map_err(|e| RenderError::Recorded {
        index: 0,
        reason: format!("not UTF-8: {e}"),
    })?;
    // Canonical JSON escapes newlines inside strings: each line is one object.
    for (index, line) in text.split('\n').filter(|l| !l.is_empty()).enumerate() {
        let recorded: serde_json::Value =
            serde_json::from_str(line).map_err(|e| RenderError::Recorded {
                index,
                reason: e.to_string(),
            })?;
        let object = parse::object_ref(&recorded)
            .map_err(|reason| RenderError::Recorded { index, reason })?;
        let manifest =
            digest::open_sealed(&recorded, key).map_err(|source| RenderError::Sealed {
                object: object.to_string(),
                source,
            })?;
        let digest = object_digest(&manifest, key);
        objects.push(RenderedObject {
            object,
            manifest: Manifest::new(manifest),
            digest,
            origin: Origin {
                file: "recorded manifests".into(),
                document: index,
            },
        });
    }
    let digest = set_digest_of(objects.iter().map(|o| &o.digest));
    Ok(RenderedSet { objects, digest })
}

/// Reads a directory recursively into source files and renders them (for local use and tests;
/// the agent gets its files from the Git source).
pub fn render_dir(dir: &Path, options: &RenderOptions) -> Result<RenderedSet, RenderError> {
    let mut files = Vec::new();
    read_tree(dir, "", &mut files)?;
    render(&files, options)
}

fn read_tree(root: &Path, prefix: &str, out: &mut Vec<SourceFile>) -> Result<(), RenderError> {
    let here = root.join(prefix);
    let read_err = |source| RenderError::ReadDir {
        path: here.clone(),
        source,
    };
    let entries = std::fs::read_dir(&here).map_err(read_err)?;
    for entry in entries {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let file_type = entry.file_type().map_err(read_err)?;
        if file_type.is_dir() {
            read_tree(root, &rel, out)?;
        } else if file_type.is_file() {
            let bytes = std::fs::read(entry.path()).map_err(|source| RenderError::ReadDir {
                path: entry.path(),
                source,
            })?;
            out.push((rel, bytes));
        }
        // Symlinks are skipped: Git sources hand over blobs, and following a link could read
        // outside the App's directory.
    }
    Ok(())
}

#[cfg(test)]
mod tests;
