//! Owns turning an App's `source:` section of `reckon.yaml` into a [`SourceSpec`]: refs,
//! credentials (env var or file references, never values), CA bundle and signature policy; and
//! into the [`GitSource`] that follows it (a Git remote, or a chart of a chart repository); and
//! a Helm App's `helm.repositories` into the [`Fetcher`] of its chart's dependencies.

use super::GitSource;
use super::chart::{ChartAuth, ChartSignaturePolicy, ChartSpec};
use super::chart_deps::{DependencyRepository, Fetcher};
use super::{
    Access, HttpCredentials, RefSelector, SecretSource, SignatureMode, SignaturePolicy, SourceSpec,
    SshAccess,
};
use crate::config;
use std::path::Path;

fn secret(r: &config::SecretRef) -> SecretSource {
    match r {
        config::SecretRef::Env(v) => SecretSource::Env(v.clone()),
        config::SecretRef::File(p) => SecretSource::File(p.clone()),
    }
}

/// A configured source that cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("app {app}: ref semver {range:?} is not a semver range: {source}")]
    Semver {
        app: String,
        range: String,
        source: semver::Error,
    },
    #[error(
        "app {app}: chart version {version:?} is neither a version nor a semver range: {source}"
    )]
    ChartVersion {
        app: String,
        version: String,
        source: semver::Error,
    },
}

/// The source `app` follows, with its mirror (or chart cache) under `cache_root`.
pub fn source_for(app: &config::App, cache_root: &Path) -> Result<GitSource, SpecError> {
    let source = GitSource::new(spec_for(app)?, cache_root);
    let Some(chart) = &app.source.chart else {
        return Ok(source);
    };
    let wanted = chart.wanted().map_err(|source| SpecError::ChartVersion {
        app: app.name.clone(),
        version: chart.version.clone(),
        source,
    })?;
    let auth = chart_auth(app.source.auth.as_ref());
    Ok(source.with_chart(ChartSpec {
        name: chart.name.clone(),
        wanted,
        auth,
        limits: Default::default(),
        signature: chart
            .signature
            .as_ref()
            .map(|s| ChartSignaturePolicy {
                mode: mode_of(s.mode),
                keys: s.keys.clone(),
            })
            .unwrap_or_default(),
        plain_http: chart.insecure_http,
    }))
}

/// The credentials of a chart source or dependency repository as the chart clients take them
/// (the configuration refuses ssh auth on an http(s) or oci URL).
fn chart_auth(auth: Option<&config::Auth>) -> ChartAuth {
    match auth {
        Some(config::Auth::Token(t)) => ChartAuth::Bearer(secret(t)),
        Some(config::Auth::Basic(b)) => ChartAuth::Basic {
            username: b.username.clone(),
            password: secret(&b.password),
        },
        Some(config::Auth::Ssh(_)) | None => ChartAuth::None,
    }
}

/// What fetches a Helm App's unvendored `Chart.lock` dependencies: the App's
/// `helm.repositories`, archives kept in `CACHE_ROOT/chart-deps` (shared by every App: an
/// archive is named by its digest), each request within `timeout`.
pub fn dependency_fetcher(
    app: &config::App,
    cache_root: &Path,
    timeout: std::time::Duration,
) -> Fetcher {
    let repositories = app
        .helm
        .as_ref()
        .map(|h| h.repositories.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|r| DependencyRepository {
            url: r.url.clone(),
            auth: chart_auth(r.auth.as_ref()),
            ca_file: r.ca_file.clone(),
            plain_http: r.insecure_http,
        })
        .collect();
    Fetcher {
        repositories,
        cache: cache_root.join("chart-deps"),
        limits: Default::default(),
        timeout,
    }
}

/// The source an App follows, named after the App (webhooks and polls are routed by it).
/// `config::load` already validated the semver range; a `Config` built some other way gets the
/// error here.
pub fn spec_for(app: &config::App) -> Result<SourceSpec, SpecError> {
    let s = &app.source;
    let reference = match &s.reference {
        config::GitRef::Branch(b) => RefSelector::Branch(b.clone()),
        config::GitRef::Tag(t) => RefSelector::Tag(t.clone()),
        config::GitRef::Semver(r) => {
            RefSelector::Semver(semver::VersionReq::parse(r).map_err(|source| {
                SpecError::Semver {
                    app: app.name.clone(),
                    range: r.clone(),
                    source,
                }
            })?)
        }
        config::GitRef::Commit(c) => RefSelector::Commit(c.clone()),
    };
    let mut access = Access {
        ca_bundle: s.ca_file.clone(),
        ..Default::default()
    };
    match &s.auth {
        None => {}
        Some(config::Auth::Token(t)) => access.http = Some(HttpCredentials::token(secret(t))),
        Some(config::Auth::Basic(b)) => {
            access.http = Some(HttpCredentials {
                username: b.username.clone(),
                password: secret(&b.password),
            })
        }
        Some(config::Auth::Ssh(k)) => {
            access.ssh = Some(SshAccess {
                private_key: Some(k.key_file.clone()),
                known_hosts: k.known_hosts_file.clone(),
                options: Vec::new(),
            })
        }
    }
    let signatures = SignaturePolicy {
        mode: mode_of(s.signature.mode),
        ssh_allowed_signers: s.signature.allowed_signers.clone(),
        gpg_public_keys: s.signature.keys.clone(),
    };
    // The config writes the repository root as "." and may write "./dir/"; the source wants
    // plain repository paths ("" for the root).
    let mut path = s.path.trim_matches('/');
    while let Some(rest) = path.strip_prefix("./") {
        path = rest.trim_start_matches('/');
    }
    let path = if path == "." { "" } else { path }.to_string();
    Ok(SourceSpec {
        id: app.name.clone(),
        url: s.url.clone(),
        reference,
        path,
        access,
        signatures,
    })
}

/// The configuration's signature mode as the source's.
fn mode_of(mode: config::SignatureMode) -> SignatureMode {
    match mode {
        config::SignatureMode::Off => SignatureMode::Off,
        config::SignatureMode::Record => SignatureMode::Record,
        config::SignatureMode::Require => SignatureMode::Require,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_setting_reaches_the_spec() {
        let cfg = config::parse(
            r#"
apps:
  - name: shop
    source:
      url: https://git.example.com/shop.git
      ref: {semver: ">=1.2, <2"}
      path: ./apps/shop/
      auth: {basic: {username: deploy, password: {file: /run/secrets/pw}}}
      ca_file: /etc/ca.pem
      signature: {mode: require, allowed_signers: /etc/allowed}
  - name: root
    source:
      url: ssh://git@example.com/infra.git
      path: .
      auth: {ssh: {key_file: /k, known_hosts_file: /kh}}
      signature: {mode: off}
"#,
            std::path::Path::new("reckon.yaml"),
        )
        .unwrap();
        let shop = spec_for(&cfg.apps[0]).unwrap();
        assert_eq!(shop.id, "shop");
        assert_eq!(
            shop.reference,
            RefSelector::Semver(semver::VersionReq::parse(">=1.2, <2").unwrap())
        );
        assert_eq!(shop.path, "apps/shop");
        let http = shop.access.http.unwrap();
        assert_eq!(http.username, "deploy");
        assert_eq!(http.password, SecretSource::File("/run/secrets/pw".into()));
        assert_eq!(
            shop.access.ca_bundle.as_deref(),
            Some("/etc/ca.pem".as_ref())
        );
        assert_eq!(shop.signatures.mode, SignatureMode::Require);
        assert_eq!(
            shop.signatures.ssh_allowed_signers.as_deref(),
            Some("/etc/allowed".as_ref())
        );
        let root = spec_for(&cfg.apps[1]).unwrap();
        assert_eq!(root.path, "");
        assert_eq!(root.reference, RefSelector::Branch("main".into()));
        let ssh = root.access.ssh.unwrap();
        assert_eq!(
            (ssh.private_key.unwrap(), ssh.known_hosts.unwrap()),
            ("/k".into(), "/kh".into())
        );
        assert_eq!(root.signatures.mode, SignatureMode::Off);
    }
}
