//! Owns what a fetch observed in history: the commits new since the last observed head (first-parent
//! order), each with people, times, message, changed paths under the App's path and signature
//! status, and whether the old head was rewritten away (force-push).

use gix::bstr::ByteSlice;
use gix::objs::tree::EntryKind;

use super::mirror::chain;
use super::signature::Verifier;
use super::{HistoryRewrite, ObservedCommit, Person, tree};

/// How much of new history one fetch records: commits, and per commit the message's bytes and
/// the changed paths (`limits:` in `reckon.yaml`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub commits: usize,
    pub message_bytes: usize,
    pub changed_paths: usize,
}

impl Bounds {
    /// The commit as recorded: a longer message cut at a character boundary and more changed
    /// paths dropped, each with a marker in the message saying how much was left out.
    pub(crate) fn apply(&self, mut commit: ObservedCommit) -> ObservedCommit {
        let mut notes = Vec::new();
        if commit.message.len() > self.message_bytes {
            let full = commit.message.len();
            let mut end = self.message_bytes;
            while !commit.message.is_char_boundary(end) {
                end -= 1;
            }
            commit.message.truncate(end);
            notes.push(format!(
                "[reckon: message cut at {end} of {full} bytes (limits.commit_message_bytes)]"
            ));
        }
        if commit.changed_paths.len() > self.changed_paths {
            let more = commit.changed_paths.len() - self.changed_paths;
            commit.changed_paths.truncate(self.changed_paths);
            notes.push(format!(
                "[reckon: {more} more changed paths not recorded (limits.changed_paths)]"
            ));
        }
        if !notes.is_empty() {
            if !commit.message.is_empty() && !commit.message.ends_with('\n') {
                commit.message.push('\n');
            }
            commit.message.push_str(&notes.join("\n"));
            commit.message.push('\n');
        }
        commit
    }
}

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
    bounds: &Bounds,
    verifier: &Verifier,
) -> Result<Observed, String> {
    let max = bounds.commits;
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
        .map(|id| describe(repo, id, path, verifier).map(|c| bounds.apply(c)))
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

#[cfg(test)]
mod bounds_tests {
    use super::*;

    fn commit(message: &str, paths: usize) -> ObservedCommit {
        let person = Person {
            name: "a".into(),
            email: "a@x".into(),
            time: 0,
            offset_seconds: 0,
        };
        ObservedCommit {
            sha: "0".repeat(40),
            parents: Vec::new(),
            author: person.clone(),
            committer: person,
            message: message.to_string(),
            changed_paths: (0..paths).map(|i| format!("app/{i}.yaml")).collect(),
            signature: crate::source::SignatureStatus::NotChecked,
        }
    }

    /// Issue 18, item 3: a commit message and a changed-path list were recorded whole, however
    /// large; now each is cut to its bound with a marker saying what was left out.
    #[test]
    fn long_messages_and_path_lists_are_cut_with_a_marker() {
        let bounds = Bounds {
            commits: 10,
            message_bytes: 8,
            changed_paths: 2,
        };
        let within = bounds.apply(commit("Short\n", 2));
        assert_eq!(within.message, "Short\n");
        assert_eq!(within.changed_paths.len(), 2);
        // "é" is two bytes: the cut falls back to a character boundary.
        let cut = bounds.apply(commit("abcdefgé and much more", 5));
        assert_eq!(
            cut.message,
            "abcdefg\n[reckon: message cut at 7 of 23 bytes (limits.commit_message_bytes)]\n\
             [reckon: 3 more changed paths not recorded (limits.changed_paths)]\n"
        );
        assert_eq!(cut.changed_paths, vec!["app/0.yaml", "app/1.yaml"]);
    }
}
