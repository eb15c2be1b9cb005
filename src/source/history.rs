//! Owns what a fetch observed in history: the commits new since the last observed head (first-parent
//! order), each with people, times, message, changed paths under the App's path and signature
//! status, and whether the old head was rewritten away (force-push).

use gix::bstr::ByteSlice;
use gix::objs::tree::EntryKind;

use super::mirror::chain;
use super::signature::Verifier;
use super::{HistoryRewrite, ObservedCommit, Person, tree};

pub(crate) struct Observed {
    pub commits: Vec<ObservedCommit>,
    pub truncated: bool,
    pub rewrite: Option<HistoryRewrite>,
}

/// Commits from `previous` (exclusive) to `head` (inclusive), oldest first.
///
/// - No previous head (first observation): only `head`; a fresh App has no "new" history.
/// - `previous` is an ancestor of `head`: the first-parent chain from `head` down to the commits
///   `previous` already covers.
/// - Otherwise history was rewritten: reported, and the new commits are the first-parent chain of
///   `head` not reachable from `previous`. If `previous` is not in the mirror at all (its objects
///   are gone, e.g. after a re-clone), only `head` is reported, as nothing can be said about the rest.
pub(crate) fn observe(
    repo: &gix::Repository,
    head: gix::ObjectId,
    previous: Option<&str>,
    path: &str,
    max: usize,
    verifier: &Verifier,
) -> Result<Observed, String> {
    let mut rewrite = None;
    let previous = match previous {
        None => None,
        Some(p) => {
            let known = gix::ObjectId::from_hex(p.as_bytes())
                .ok()
                .filter(|id| repo.find_commit(*id).is_ok());
            match known {
                Some(id) if id == head => {
                    return Ok(Observed {
                        commits: Vec::new(),
                        truncated: false,
                        rewrite: None,
                    });
                }
                Some(id) => {
                    let base = repo
                        .merge_base(id, head)
                        .map_err(|e| format!("merge base of {id} and {head}: {}", chain(&e)))?
                        .map(|b| b.detach());
                    if base != Some(id) {
                        rewrite = Some(HistoryRewrite {
                            old_head: p.to_string(),
                            new_head: head.to_string(),
                            merge_base: base.map(|b| b.to_string()),
                        });
                    }
                    Some(id)
                }
                None => {
                    rewrite = Some(HistoryRewrite {
                        old_head: p.to_string(),
                        new_head: head.to_string(),
                        merge_base: None,
                    });
                    None
                }
            }
        }
    };
    let mut ids = Vec::new();
    let mut truncated = false;
    match previous {
        Some(prev) => {
            let walk = repo
                .rev_walk([head])
                .first_parent_only()
                .with_hidden([prev])
                .all()
                .map_err(|e| format!("walking {head}: {}", chain(&e)))?;
            for info in walk {
                let info = info.map_err(|e| format!("walking {head}: {}", chain(&e)))?;
                if ids.len() == max {
                    truncated = true;
                    break;
                }
                ids.push(info.id);
            }
        }
        None => ids.push(head),
    }
    ids.reverse();
    let commits = ids
        .into_iter()
        .map(|id| describe(repo, id, path, verifier))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Observed {
        commits,
        truncated,
        rewrite,
    })
}

fn person(sig: gix::actor::SignatureRef<'_>) -> Result<Person, String> {
    let time = sig
        .time()
        .map_err(|e| format!("time of {}: {}", sig.name, chain(&e)))?;
    Ok(Person {
        name: sig.name.to_str_lossy().into_owned(),
        email: sig.email.to_str_lossy().into_owned(),
        time: time.seconds,
        offset_seconds: time.offset,
    })
}

/// One commit as an [`ObservedCommit`].
pub(crate) fn describe(
    repo: &gix::Repository,
    id: gix::ObjectId,
    path: &str,
    verifier: &Verifier,
) -> Result<ObservedCommit, String> {
    let commit = repo
        .find_commit(id)
        .map_err(|e| format!("commit {id}: {}", chain(&e)))?;
    let decoded = commit
        .decode()
        .map_err(|e| format!("commit {id}: {}", chain(&e)))?;
    let parents: Vec<gix::ObjectId> = decoded.parents().collect();
    let author = person(
        decoded
            .author()
            .map_err(|e| format!("author of {id}: {}", chain(&e)))?,
    )?;
    let committer = person(
        decoded
            .committer()
            .map_err(|e| format!("committer of {id}: {}", chain(&e)))?,
    )?;
    let message = decoded.message.to_str_lossy().into_owned();
    let tree_id = decoded.tree();
    let parent_tree = match parents.first() {
        Some(p) => Some(
            repo.find_commit(*p)
                .and_then(|c| c.tree_id().map(|t| t.detach()))
                .map_err(|e| format!("parent {p} of {id}: {}", chain(&e)))?,
        ),
        None => None,
    };
    let changed_paths = changed_paths(repo, parent_tree, tree_id, path)?;
    let signature = verifier.verify(&commit.data, id);
    Ok(ObservedCommit {
        sha: id.to_string(),
        parents: parents.iter().map(|p| p.to_string()).collect(),
        author,
        committer,
        message,
        changed_paths,
        signature,
    })
}

/// Paths (full repository paths) that differ between two root trees, only under `path`, sorted.
/// Subtrees with equal ids are skipped without being read, so a commit outside the App's path
/// costs a handful of tree reads however large the repository is.
pub(crate) fn changed_paths(
    repo: &gix::Repository,
    old_root: Option<gix::ObjectId>,
    new_root: gix::ObjectId,
    path: &str,
) -> Result<Vec<String>, String> {
    let path = path.trim_matches('/');
    let old = match old_root {
        Some(root) => tree::lookup(repo, root, path)?,
        None => None,
    };
    let new = tree::lookup(repo, new_root, path)?;
    let mut out = Vec::new();
    diff_entry(repo, path, old, new, &mut out)?;
    out.sort();
    Ok(out)
}

type Entry = Option<(gix::ObjectId, EntryKind)>;

fn diff_entry(
    repo: &gix::Repository,
    path: &str,
    old: Entry,
    new: Entry,
    out: &mut Vec<String>,
) -> Result<(), String> {
    if old == new {
        return Ok(());
    }
    let is_tree = |e: &Entry| matches!(e, Some((_, EntryKind::Tree)));
    let old_tree = old.filter(|_| is_tree(&old)).map(|e| e.0);
    let new_tree = new.filter(|_| is_tree(&new)).map(|e| e.0);
    // A non-tree entry on either side is itself a changed path (added, removed, modified, or a
    // file replaced by a directory and vice versa).
    if (old.is_some() && old_tree.is_none()) || (new.is_some() && new_tree.is_none()) {
        out.push(path.to_string());
    }
    if old_tree.is_none() && new_tree.is_none() {
        return Ok(());
    }
    let old_entries = match old_tree {
        Some(t) => tree::entries(repo, t)?,
        None => Default::default(),
    };
    let new_entries = match new_tree {
        Some(t) => tree::entries(repo, t)?,
        None => Default::default(),
    };
    let names: std::collections::BTreeSet<&String> =
        old_entries.keys().chain(new_entries.keys()).collect();
    for name in names {
        let child = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}/{name}")
        };
        diff_entry(
            repo,
            &child,
            old_entries.get(name).copied(),
            new_entries.get(name).copied(),
            out,
        )?;
    }
    Ok(())
}
