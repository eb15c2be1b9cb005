//! Owns what a Git URL is made of and how it may be shown: its scheme, user information and
//! host, the URL with any password or token replaced by `***`, and why a URL that carries
//! credentials is refused. Pure; `config` (validating `reckon.yaml`) and `source` (which
//! sources an App may name) both use it, so it sits below both.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
