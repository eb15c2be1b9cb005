//! Owns which sources an App may name and how a URL is shown: the schemes and hosts App
//! resources may use, the agent's own directories no source may point into, and URLs with any
//! credentials taken out before they reach an event, a status or a log. Pure.
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

/// The URL's scheme: `https`, `http`, `ssh`, `git`, `file`; `ssh` for scp-like `[user@]host:path`.
pub fn scheme(url: &str) -> &str {
    match url.split_once("://") {
        Some((scheme, _)) => scheme,
        None => "ssh",
    }
}

/// The part between the scheme and the path (`user:pass@host:port`), `None` for `file://`.
fn authority(url: &str) -> Option<&str> {
    match url.split_once("://") {
        Some(("file", _)) => None,
        Some((_, rest)) => Some(rest.split('/').next().unwrap_or(rest)),
        // scp-like: everything before the first ':'.
        None => url.split_once(':').map(|(a, _)| a),
    }
}

/// The user information of a URL (`user` or `user:password`), if any.
pub fn userinfo(url: &str) -> Option<&str> {
    authority(url)?.rsplit_once('@').map(|(u, _)| u)
}

/// The host of a URL (no user, no port); `None` for `file://`.
pub fn host(url: &str) -> Option<&str> {
    let a = authority(url)?;
    let a = a.rsplit_once('@').map_or(a, |(_, h)| h);
    // An IPv6 literal keeps its brackets; a port goes.
    if let Some(end) = a.find(']') {
        return Some(&a[..=end]);
    }
    Some(a.split(':').next().unwrap_or(a))
}

/// The URL as it may be shown anywhere: a password (or a token given as the user of an HTTP
/// URL) replaced by `***`. An ssh user name (`git@`) is not a secret and stays.
pub fn redact(url: &str) -> String {
    let Some(info) = userinfo(url) else {
        return url.to_string();
    };
    let shown = match (scheme(url), info.split_once(':')) {
        ("ssh", Some((user, _))) => format!("{user}:***"),
        ("ssh", None) => return url.to_string(),
        _ => "***".to_string(),
    };
    url.replacen(&format!("{info}@"), &format!("{shown}@"), 1)
}

/// Why a URL carries credentials it must not (`None`: it carries none, or only an ssh user).
pub fn credentials_in_url(url: &str) -> Option<String> {
    let info = userinfo(url)?;
    let bad = match scheme(url) {
        "ssh" => info.contains(':'),
        _ => true,
    };
    bad.then(|| {
        format!(
            "url {} carries credentials: put them in source.auth (token or basic, read from \
             {{env: NAME}} or {{file: PATH}}; ssh keys under auth.ssh), never in the URL, \
             which reaches events, status and logs",
            redact(url)
        )
    })
}

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
    fn urls_are_taken_apart() {
        assert_eq!(scheme("https://h/r.git"), "https");
        assert_eq!(scheme("git@github.com:o/r.git"), "ssh");
        assert_eq!(
            host("https://u:p@git.example.com:8443/r.git"),
            Some("git.example.com")
        );
        assert_eq!(host("git@github.com:o/r.git"), Some("github.com"));
        assert_eq!(host("ssh://git@[::1]:2222/r.git"), Some("[::1]"));
        assert_eq!(host("file:///srv/r.git"), None);
        assert_eq!(userinfo("https://tok@h/r"), Some("tok"));
        assert_eq!(
            userinfo("https://h/a@b"),
            None,
            "an @ in the path is not userinfo"
        );
    }

    #[test]
    fn credentials_never_show_and_are_refused_in_urls() {
        assert_eq!(
            redact("https://alice:s3cret@h/r.git"),
            "https://***@h/r.git"
        );
        assert_eq!(redact("https://ghp_token@h/r.git"), "https://***@h/r.git");
        assert_eq!(redact("ssh://git:pw@h/r.git"), "ssh://git:***@h/r.git");
        assert_eq!(redact("git@github.com:o/r.git"), "git@github.com:o/r.git");
        assert_eq!(redact("https://h/r.git"), "https://h/r.git");
        let why = credentials_in_url("https://alice:s3cret@h/r.git").unwrap();
        assert!(!why.contains("s3cret"), "{why}");
        assert!(why.contains("source.auth"), "{why}");
        assert!(credentials_in_url("https://tok@h/r").is_some());
        assert!(credentials_in_url("ssh://git:pw@h/r").is_some());
        assert!(credentials_in_url("ssh://git@h/r").is_none());
        assert!(credentials_in_url("git@h:r").is_none());
        assert!(credentials_in_url("https://h/r").is_none());
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
