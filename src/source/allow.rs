//! Owns which sources an App may name: the schemes and hosts App resources may use and the
//! agent's own directories no source may point into. Pure. How a URL is taken apart and shown
//! with its credentials taken out (before it reaches an event, a status or a log) is
//! `model::url`, re-exported here.
//!
//! Why: whoever may create an App resource could otherwise read the agent's disk through a
//! `file://` URL (another tenant's private mirror in the agent's cache among it), and a URL
//! carrying `user:secret@` would copy the secret wherever the URL is written.

use std::path::{Component, Path, PathBuf};

/// A source an App may not use, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceRefused {
    #[error(
        "source {url}: scheme {scheme} is not allowed for App resources (allowed: {allowed}; the \
         agent's --app-source-schemes sets them)"
    )]
    Scheme {
        url: String,
        scheme: String,
        allowed: String,
    },
    #[error(
        "source {url}: host {host} is not allowed for App resources (allowed: {allowed}; the \
         agent's --app-source-hosts sets them)"
    )]
    Host {
        url: String,
        host: String,
        allowed: String,
    },
    #[error("source {url}: points into the agent's own {what} ({dir}); no App may read it")]
    AgentDir {
        url: String,
        what: &'static str,
        dir: String,
    },
}

/// What the operator allows App resources to name, and the agent's own directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRules {
    /// Schemes App resources may use (`https`, `ssh`, `http`, `git`, `file`); scp-like
    /// `user@host:path` counts as `ssh`.
    pub schemes: Vec<String>,
    /// Hosts App resources may name (exact, or `*.example.com` for its subdomains); empty: any.
    pub hosts: Vec<String>,
    /// The agent's directories no source (of the file or of an object) may point into, named:
    /// `("cache", path)`, `("store", path)`.
    pub agent_dirs: Vec<(&'static str, PathBuf)>,
}

impl Default for SourceRules {
    /// `https` and `ssh` only, any host: what a tenant needs, nothing on the agent's disk.
    fn default() -> Self {
        Self {
            schemes: vec!["https".into(), "ssh".into()],
            hosts: Vec::new(),
            agent_dirs: Vec::new(),
        }
    }
}

pub use crate::model::url::{credentials_in_url, host, redact, scheme, userinfo};

/// A path with `.` and `..` resolved without touching the disk (the directory may not exist
/// yet), so `/cache/../cache/x` and `/cache/x` compare equal.
fn normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The local path a `file://` URL names.
fn local_path(url: &str) -> Option<PathBuf> {
    url.strip_prefix("file://").map(PathBuf::from)
}

/// Whether `url` points into one of the agent's own directories. `resolve` turns a path into
/// its real location (symlinks resolved) where it exists; the check is made on both forms.
pub fn into_agent_dir(
    url: &str,
    rules: &SourceRules,
    resolve: &dyn Fn(&Path) -> Option<PathBuf>,
) -> Result<(), SourceRefused> {
    let Some(path) = local_path(url) else {
        return Ok(());
    };
    let forms = |p: &Path| -> Vec<PathBuf> {
        let mut v = vec![normal(p)];
        v.extend(resolve(p));
        v
    };
    for (what, dir) in &rules.agent_dirs {
        let inside = forms(&path)
            .iter()
            .any(|p| forms(dir).iter().any(|d| p.starts_with(d)));
        if inside {
            return Err(SourceRefused::AgentDir {
                url: redact(url),
                what,
                dir: dir.display().to_string(),
            });
        }
    }
    Ok(())
}

fn host_allowed(host: &str, patterns: &[String]) -> bool {
    patterns.is_empty()
        || patterns.iter().any(|p| match p.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
            None => p.eq_ignore_ascii_case(host),
        })
}

/// Whether an App defined by an App resource may use `url`: an allowed scheme and host, and
/// nothing inside the agent's own directories.
pub fn check_object_source(
    url: &str,
    rules: &SourceRules,
    resolve: &dyn Fn(&Path) -> Option<PathBuf>,
) -> Result<(), SourceRefused> {
    let scheme = scheme(url);
    if !rules.schemes.iter().any(|s| s == scheme) {
        return Err(SourceRefused::Scheme {
            url: redact(url),
            scheme: scheme.to_string(),
            allowed: rules.schemes.join(", "),
        });
    }
    if let Some(host) = host(url)
        && !host_allowed(host, &rules.hosts)
    {
        return Err(SourceRefused::Host {
            url: redact(url),
            host: host.to_string(),
            allowed: rules.hosts.join(", "),
        });
    }
    into_agent_dir(url, rules, resolve)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &Path) -> Option<PathBuf> {
        None
    }

    #[test]
    fn app_resources_use_only_allowed_schemes_and_hosts() {
        let rules = SourceRules::default();
        assert!(check_object_source("https://h/r.git", &rules, &none).is_ok());
        assert!(check_object_source("git@h:r.git", &rules, &none).is_ok());
        for url in ["file:///srv/r.git", "http://h/r.git", "git://h/r.git"] {
            assert!(
                matches!(
                    check_object_source(url, &rules, &none),
                    Err(SourceRefused::Scheme { .. })
                ),
                "{url}"
            );
        }
        let hosts = SourceRules {
            hosts: vec!["git.example.com".into(), "*.corp.example".into()],
            ..SourceRules::default()
        };
        assert!(check_object_source("https://git.example.com/r", &hosts, &none).is_ok());
        assert!(check_object_source("https://a.corp.example/r", &hosts, &none).is_ok());
        assert!(check_object_source("https://corp.example/r", &hosts, &none).is_err());
        assert!(check_object_source("https://evilcorp.example/r", &hosts, &none).is_err());
        let err = check_object_source("https://other.org/r", &hosts, &none).unwrap_err();
        assert!(err.to_string().contains("--app-source-hosts"), "{err}");
    }

    #[test]
    fn no_source_points_into_the_agents_own_directories() {
        let rules = SourceRules {
            schemes: vec!["https".into(), "ssh".into(), "file".into()],
            hosts: vec![],
            agent_dirs: vec![
                ("cache", PathBuf::from("/var/lib/reckon/cache")),
                ("store", PathBuf::from("/var/lib/reckon/store")),
            ],
        };
        let err =
            check_object_source("file:///var/lib/reckon/cache/r-0123", &rules, &none).unwrap_err();
        assert!(
            matches!(err, SourceRefused::AgentDir { what: "cache", .. }),
            "{err}"
        );
        assert!(
            into_agent_dir("file:///var/lib/reckon/x/../store/db", &rules, &none).is_err(),
            "dot-dot does not get around it"
        );
        // A symlink elsewhere that resolves into the cache.
        let resolve = |p: &Path| {
            (p == Path::new("/tmp/link")).then(|| PathBuf::from("/var/lib/reckon/cache/r"))
        };
        assert!(into_agent_dir("file:///tmp/link", &rules, &resolve).is_err());
        assert!(into_agent_dir("file:///srv/git/r.git", &rules, &none).is_ok());
        assert!(into_agent_dir("https://h/var/lib/reckon/cache", &rules, &none).is_ok());
    }
}
