//! Owns ref selection: which commit of the mirror an App follows — a branch, a tag, the highest tag
//! matching a semver range, an exact commit, or the remote's default branch.

use std::fmt;

use gix::bstr::ByteSlice;

/// What an App follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefSelector {
    /// The remote's default branch (its HEAD), as advertised at each fetch.
    DefaultBranch,
    Branch(String),
    Tag(String),
    /// The highest tag whose name (with an optional leading `v`) is a semver version matching the
    /// range. Pre-releases match only ranges that name a pre-release, as in Cargo.
    Semver(semver::VersionReq),
    /// A full 40-hex commit SHA that must be reachable from a branch or tag of the remote.
    Commit(String),
}

impl fmt::Display for RefSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefSelector::DefaultBranch => write!(f, "the default branch"),
            RefSelector::Branch(b) => write!(f, "branch {b}"),
            RefSelector::Tag(t) => write!(f, "tag {t}"),
            RefSelector::Semver(r) => write!(f, "a tag matching semver {r}"),
            RefSelector::Commit(c) => write!(f, "commit {c}"),
        }
    }
}

#[derive(Debug)]
pub(crate) enum ResolveError {
    /// The selector matches nothing: the reason is the selector, described.
    Missing(String),
    /// The mirror could not be read.
    Unreadable(String),
}

/// Resolves `selector` in the mirror to `(full ref name or SHA, commit id)`.
pub(crate) fn resolve(
    repo: &gix::Repository,
    selector: &RefSelector,
    remote_default: Option<&str>,
) -> Result<(String, gix::ObjectId), ResolveError> {
    let missing = || ResolveError::Missing(selector.to_string());
    match selector {
        RefSelector::DefaultBranch => {
            let branch = remote_default.ok_or_else(missing)?;
            let id = peel(repo, branch)?.ok_or_else(missing)?;
            Ok((branch.to_string(), id))
        }
        RefSelector::Branch(b) => {
            let name = format!("refs/heads/{b}");
            let id = peel(repo, &name)?.ok_or_else(missing)?;
            Ok((name, id))
        }
        RefSelector::Tag(t) => {
            let name = format!("refs/tags/{t}");
            let id = peel(repo, &name)?.ok_or_else(missing)?;
            Ok((name, id))
        }
        RefSelector::Semver(req) => {
            let name = highest_matching_tag(&tag_names(repo)?, req).ok_or_else(missing)?;
            let full = format!("refs/tags/{name}");
            let id = peel(repo, &full)?.ok_or_else(missing)?;
            Ok((full, id))
        }
        RefSelector::Commit(sha) => {
            let id = gix::ObjectId::from_hex(sha.as_bytes()).map_err(|_| missing())?;
            match repo.find_commit(id) {
                Ok(_) => Ok((sha.clone(), id)),
                Err(_) => Err(missing()),
            }
        }
    }
}

/// The commit `name` ultimately points to (through annotated tags), or None if there is no such
/// ref or it does not lead to a commit.
fn peel(repo: &gix::Repository, name: &str) -> Result<Option<gix::ObjectId>, ResolveError> {
    let Some(mut r) = repo
        .try_find_reference(name)
        .map_err(|e| ResolveError::Unreadable(super::mirror::chain(&e)))?
    else {
        return Ok(None);
    };
    let id = r
        .peel_to_id()
        .map_err(|e| {
            ResolveError::Unreadable(format!("peeling {name}: {}", super::mirror::chain(&e)))
        })?
        .detach();
    let object = repo.find_object(id).map_err(|e| {
        ResolveError::Unreadable(format!("{name} -> {id}: {}", super::mirror::chain(&e)))
    })?;
    Ok((object.kind == gix::object::Kind::Commit).then_some(id))
}

fn tag_names(repo: &gix::Repository) -> Result<Vec<String>, ResolveError> {
    let unreadable = |e: &dyn std::error::Error| ResolveError::Unreadable(e.to_string());
    let platform = repo.references().map_err(|e| unreadable(&e))?;
    let mut names = Vec::new();
    for r in platform.tags().map_err(|e| unreadable(&e))? {
        let r = r.map_err(|e| ResolveError::Unreadable(e.to_string()))?;
        let full = r.name().as_bstr().to_str_lossy();
        if let Some(short) = full.strip_prefix("refs/tags/") {
            names.push(short.to_string());
        }
    }
    Ok(names)
}

/// The tag with the highest version matching `req`; on equal versions (`v1.0.0` and `1.0.0`) the
/// lexicographically smaller name, so the choice is deterministic.
pub fn highest_matching_tag(names: &[String], req: &semver::VersionReq) -> Option<String> {
    names
        .iter()
        .filter_map(|n| {
            let v = semver::Version::parse(n.strip_prefix('v').unwrap_or(n)).ok()?;
            req.matches(&v).then_some((v, n))
        })
        .max_by(|(va, na), (vb, nb)| va.cmp(vb).then_with(|| nb.cmp(na)))
        .map(|(_, n)| n.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn semver_picks_the_highest_match_and_ignores_non_versions() {
        let tags = names(&[
            "v1.0.0",
            "v1.2.3",
            "1.10.0",
            "v2.0.0",
            "latest",
            "v1.11.0-rc.1",
        ]);
        let req = semver::VersionReq::parse("^1").unwrap();
        assert_eq!(highest_matching_tag(&tags, &req).as_deref(), Some("1.10.0"));
        let req = semver::VersionReq::parse(">=2").unwrap();
        assert_eq!(highest_matching_tag(&tags, &req).as_deref(), Some("v2.0.0"));
        let req = semver::VersionReq::parse(">=1.11.0-rc.0, <2").unwrap();
        assert_eq!(
            highest_matching_tag(&tags, &req).as_deref(),
            Some("v1.11.0-rc.1")
        );
        let req = semver::VersionReq::parse("^3").unwrap();
        assert_eq!(highest_matching_tag(&tags, &req), None);
    }

    #[test]
    fn equal_versions_resolve_deterministically() {
        let req = semver::VersionReq::STAR;
        let a = highest_matching_tag(&names(&["v1.0.0", "1.0.0"]), &req);
        let b = highest_matching_tag(&names(&["1.0.0", "v1.0.0"]), &req);
        assert_eq!(a, b);
    }
}
