//! Owns reading files from the mirror without a worktree: the tree at a revision under a path, as
//! (path, bytes) pairs in a deterministic order; the whole repository at a revision, read lazily
//! for kustomize ([`GitTree`]); and the tree lookups history diffs share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gix::bstr::ByteSlice;
use gix::objs::tree::EntryKind;

use super::SourceError;
use super::mirror::chain;
use crate::render::repo::EntryKind as RepoEntry;

/// What one read of an App's files ([`read_tree`]) may load: a commit that exceeds any of them
/// fails to render (recorded as a render failure, so nothing is pruned) instead of loading
/// without bound into the agent's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeLimits {
    /// Files under the App's path.
    pub max_files: usize,
    /// Their bytes together.
    pub max_bytes: u64,
    /// One file's bytes (checked from the object header, before the file is loaded).
    pub max_file_bytes: u64,
    /// Directories nested under the App's path.
    pub max_depth: usize,
}

impl Default for TreeLimits {
    fn default() -> Self {
        // Far above real Apps (the largest CRD bundles are a few MiB in a few hundred files),
        // far below what would take an agent's usual memory limit.
        TreeLimits {
            max_files: 10_000,
            max_bytes: 64 << 20,
            max_file_bytes: 16 << 20,
            max_depth: 32,
        }
    }
}

/// The running totals of one read, checked as each entry is met (pure).
#[derive(Debug, Default)]
struct Budget {
    files: usize,
    bytes: u64,
}

impl Budget {
    /// Accounts for one more file of `size` bytes at `path`, or says which limit it breaks.
    fn add_file(&mut self, limits: &TreeLimits, path: &str, size: u64) -> Result<(), String> {
        if size > limits.max_file_bytes {
            return Err(format!(
                "limit: {path} is {size} bytes, more than the {} allowed for one file",
                limits.max_file_bytes
            ));
        }
        self.files += 1;
        self.bytes += size;
        if self.files > limits.max_files {
            return Err(format!(
                "limit: more than {} files under the App's path (at {path})",
                limits.max_files
            ));
        }
        if self.bytes > limits.max_bytes {
            return Err(format!(
                "limit: the App's files exceed {} bytes together (at {path})",
                limits.max_bytes
            ));
        }
        Ok(())
    }
}

/// Whether a directory at `depth` (the App's path itself is 0) may be entered.
fn check_depth(limits: &TreeLimits, path: &str, depth: usize) -> Result<(), String> {
    if depth > limits.max_depth {
        return Err(format!(
            "limit: {path} is nested more than {} directories deep",
            limits.max_depth
        ));
    }
    Ok(())
}

/// One tree's entries by name (BTreeMap: byte order of names, which is also git's for files).
pub(crate) fn entries(
    repo: &gix::Repository,
    tree: gix::ObjectId,
) -> Result<BTreeMap<String, (gix::ObjectId, EntryKind)>, String> {
    let tree = repo
        .find_tree(tree)
        .map_err(|e| format!("tree {tree}: {}", chain(&e)))?;
    let decoded = tree
        .decode()
        .map_err(|e| format!("tree {}: {}", tree.id, chain(&e)))?;
    Ok(decoded
        .entries
        .iter()
        .map(|e| {
            (
                e.filename.to_str_lossy().into_owned(),
                (e.oid.to_owned(), e.mode.kind()),
            )
        })
        .collect())
}

/// The entry at `path` (slash-separated, empty for the root) under `root`, or None.
pub(crate) fn lookup(
    repo: &gix::Repository,
    root: gix::ObjectId,
    path: &str,
) -> Result<Option<(gix::ObjectId, EntryKind)>, String> {
    let mut current = (root, EntryKind::Tree);
    for component in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if current.1 != EntryKind::Tree {
            return Ok(None);
        }
        match entries(repo, current.0)?.remove(component) {
            Some(entry) => current = entry,
            None => return Ok(None),
        }
    }
    Ok(Some(current))
}

/// Regular and executable files under `path` at commit `sha`, paths relative to `path`, sorted by
/// path bytes. Symlinks and submodules are skipped: reckon renders files, and a link could point
/// outside the App's directory.
pub(crate) fn read_tree(
    cache_dir: &Path,
    sha: &str,
    path: &str,
    limits: &TreeLimits,
) -> Result<Vec<(String, Vec<u8>)>, SourceError> {
    let read = |detail: String| SourceError::Read {
        what: format!("{path:?} at {sha}"),
        detail,
    };
    let lock = super::mirror::lock_for(cache_dir);
    // Shared: reads run side by side; only a network fetch excludes them.
    let state = lock.read().unwrap_or_else(|p| p.into_inner());
    let repo = state.repository(cache_dir).map_err(read)?;
    let id = gix::ObjectId::from_hex(sha.as_bytes()).map_err(|e| read(e.to_string()))?;
    let commit = repo.find_commit(id).map_err(|e| read(chain(&e)))?;
    let root = commit.tree_id().map_err(|e| read(chain(&e)))?.detach();
    let Some((id, kind)) = lookup(&repo, root, path).map_err(read)? else {
        return Err(read("no such path in this commit".into()));
    };
    let mut out = Vec::new();
    let mut budget = Budget::default();
    let limited = |detail: String| match detail.strip_prefix("limit: ") {
        Some(limit) => SourceError::Limit {
            what: format!("{path:?} at {sha}"),
            detail: limit.to_string(),
        },
        None => read(detail),
    };
    match kind {
        EntryKind::Tree => {
            collect(&repo, id, "", 0, limits, &mut budget, &mut out).map_err(limited)?
        }
        EntryKind::Blob | EntryKind::BlobExecutable => {
            let name = path.rsplit('/').next().unwrap_or(path).to_string();
            budget
                .add_file(limits, &name, size(&repo, id).map_err(read)?)
                .map_err(limited)?;
            out.push((name, blob(&repo, id).map_err(read)?));
        }
        EntryKind::Link | EntryKind::Commit => {
            return Err(read("the path is a symlink or submodule".into()));
        }
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out)
}

fn blob(repo: &gix::Repository, id: gix::ObjectId) -> Result<Vec<u8>, String> {
    let object = repo
        .find_object(id)
        .map_err(|e| format!("blob {id}: {}", chain(&e)))?;
    Ok(object.detach().data)
}

/// A blob's size from its header, without loading it.
fn size(repo: &gix::Repository, id: gix::ObjectId) -> Result<u64, String> {
    repo.find_header(id)
        .map(|h| h.size())
        .map_err(|e| format!("blob {id}: {}", chain(&e)))
}

fn collect(
    repo: &gix::Repository,
    tree: gix::ObjectId,
    prefix: &str,
    depth: usize,
    limits: &TreeLimits,
    budget: &mut Budget,
    out: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), String> {
    for (name, (id, kind)) in entries(repo, tree)? {
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        match kind {
            EntryKind::Tree => {
                check_depth(limits, &path, depth + 1)?;
                collect(repo, id, &path, depth + 1, limits, budget, out)?
            }
            EntryKind::Blob | EntryKind::BlobExecutable => {
                budget.add_file(limits, &path, size(repo, id)?)?;
                out.push((path, blob(repo, id)?))
            }
            EntryKind::Link | EntryKind::Commit => {}
        }
    }
    Ok(())
}

/// The repository at one commit, read one tree or blob at a time: what a kustomize unit may reach
/// beyond the App's path (`../../base`). Nothing is loaded until asked for, so a large
/// repository costs only the files a unit uses.
pub struct GitTree {
    cache_dir: PathBuf,
    repo: gix::Repository,
    root: gix::ObjectId,
    app_dir: String,
}

impl GitTree {
    pub(crate) fn open(cache_dir: &Path, sha: &str, path: &str) -> Result<GitTree, SourceError> {
        let read = |detail: String| SourceError::Read {
            what: format!("the repository at {sha}"),
            detail,
        };
        let lock = super::mirror::lock_for(cache_dir);
        let state = lock.read().unwrap_or_else(|p| p.into_inner());
        let repo = state.repository(cache_dir).map_err(read)?;
        let id = gix::ObjectId::from_hex(sha.as_bytes()).map_err(|e| read(e.to_string()))?;
        let root = {
            let commit = repo.find_commit(id).map_err(|e| read(chain(&e)))?;
            commit.tree_id().map_err(|e| read(chain(&e)))?.detach()
        };
        let app_dir = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect::<Vec<_>>()
            .join("/");
        Ok(GitTree {
            cache_dir: cache_dir.to_owned(),
            repo,
            root,
            app_dir,
        })
    }

    /// The entry at `path` under the commit's tree, read under the mirror's shared lock (a
    /// network fetch may be rewriting the mirror's packs otherwise).
    fn entry(&self, path: &str) -> Result<Option<(gix::ObjectId, EntryKind)>, String> {
        let lock = super::mirror::lock_for(&self.cache_dir);
        let _guard = lock.read().unwrap_or_else(|p| p.into_inner());
        lookup(&self.repo, self.root, path)
    }
}

impl crate::render::repo::RepoTree for GitTree {
    fn app_dir(&self) -> &str {
        &self.app_dir
    }

    fn list(&self, dir: &str) -> Result<Option<Vec<(String, RepoEntry)>>, String> {
        let Some((id, EntryKind::Tree)) = self.entry(dir)? else {
            return Ok(None);
        };
        let lock = super::mirror::lock_for(&self.cache_dir);
        let _guard = lock.read().unwrap_or_else(|p| p.into_inner());
        Ok(Some(
            entries(&self.repo, id)?
                .into_iter()
                .filter_map(|(name, (_, kind))| match kind {
                    EntryKind::Tree => Some((name, RepoEntry::Dir)),
                    EntryKind::Blob | EntryKind::BlobExecutable => Some((name, RepoEntry::File)),
                    // Links could lead outside the repository; submodules are other repositories.
                    EntryKind::Link | EntryKind::Commit => None,
                })
                .collect(),
        ))
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        match self.entry(path)? {
            Some((id, EntryKind::Blob | EntryKind::BlobExecutable)) => {
                let lock = super::mirror::lock_for(&self.cache_dir);
                let _guard = lock.read().unwrap_or_else(|p| p.into_inner());
                blob(&self.repo, id)
            }
            _ => Err("not a file in this commit".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> TreeLimits {
        TreeLimits {
            max_files: 2,
            max_bytes: 10,
            max_file_bytes: 6,
            max_depth: 1,
        }
    }

    #[test]
    fn the_budget_names_the_limit_it_breaks() {
        let mut b = Budget::default();
        assert!(b.add_file(&small(), "a", 4).is_ok());
        let e = b.add_file(&small(), "big", 7).unwrap_err();
        assert!(e.contains("big is 7 bytes"), "{e}");
        let roomy = TreeLimits {
            max_files: 10,
            ..small()
        };
        let mut b = Budget::default();
        b.add_file(&roomy, "a", 5).unwrap();
        b.add_file(&roomy, "b", 5).unwrap();
        let e = b.add_file(&roomy, "c", 1).unwrap_err();
        assert!(e.contains("exceed 10 bytes"), "{e}");
        let mut b = Budget::default();
        b.add_file(&small(), "a", 1).unwrap();
        b.add_file(&small(), "b", 1).unwrap();
        let e = b.add_file(&small(), "c", 1).unwrap_err();
        assert!(e.contains("more than 2 files"), "{e}");
    }

    #[test]
    fn depth_counts_directories_below_the_app_path() {
        assert!(check_depth(&small(), "a", 1).is_ok());
        let e = check_depth(&small(), "a/b", 2).unwrap_err();
        assert!(e.contains("a/b is nested more than 1"), "{e}");
    }
}
