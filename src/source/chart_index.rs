//! Owns what an HTTP(S) Helm chart repository's `index.yaml` says about one chart: its
//! versions (name, version, digest, app version, where the archive is), and which of them an App
//! asking for an exact version or a semver range gets.
//!
//! The pure part of the chart repository source: no network. Fetching the index and the archive
//! is [`super::chart_repo`]'s; following a chart as an App's source (polling, the chart revision,
//! what a `ChartObserved` carries) is [`super::chart`]'s.

use serde::Deserialize;
use std::collections::BTreeMap;

/// Why an index or a choice from it failed; each names the repository.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChartIndexError {
    #[error("{repository}: index.yaml is not a chart repository index: {message}")]
    Parse { repository: String, message: String },
    #[error("{repository}: index.yaml has no chart {chart:?}")]
    NoChart { repository: String, chart: String },
    #[error("{repository}: chart {chart:?} has no version matching {wanted}{}", skipped_note(*skipped))]
    NoMatch {
        repository: String,
        chart: String,
        wanted: String,
        /// Versions that are not semver and could not be compared.
        skipped: usize,
    },
    #[error("{repository}: chart {chart} {version} lists no archive URL")]
    NoUrl {
        repository: String,
        chart: String,
        version: String,
    },
    #[error("{repository}: chart {chart} {version}: archive URL {url:?} is not valid: {message}")]
    BadUrl {
        repository: String,
        chart: String,
        version: String,
        url: String,
        message: String,
    },
}

fn skipped_note(skipped: usize) -> String {
    if skipped == 0 {
        String::new()
    } else {
        format!(" ({skipped} versions that are not semver were not compared)")
    }
}

/// Which version of a chart an App wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// One version, as the index writes it (a leading `v` on either side is ignored).
    Exact(String),
    /// The highest version matching a semver range (`>=1.2, <2`); pre-releases only when the
    /// range names one, as the semver crate (and Helm) match them.
    Range(semver::VersionReq),
}

impl std::fmt::Display for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wanted::Exact(v) => write!(f, "version {v}"),
            Wanted::Range(r) => write!(f, "range {r}"),
        }
    }
}

/// One version of a chart as the index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartVersion {
    pub name: String,
    pub version: String,
    pub app_version: Option<String>,
    /// `sha256:<hex>` of the archive, when the index gives one.
    pub digest: Option<String>,
    /// The archive's absolute URL (relative URLs resolved against the repository's).
    pub url: String,
    pub created: Option<String>,
}

#[derive(Deserialize)]
struct RawIndex {
    #[serde(default)]
    entries: BTreeMap<String, Vec<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEntry {
    #[serde(default)]
    name: String,
    version: String,
    #[serde(default)]
    app_version: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    created: Option<String>,
}

/// The versions of `chart` in the index at `repository` (its base URL, for relative archive
/// URLs), in the index's order.
pub fn parse(
    repository: &str,
    index: &[u8],
    chart: &str,
) -> Result<Vec<RawVersion>, ChartIndexError> {
    let parse_err = |message: String| ChartIndexError::Parse {
        repository: repository.to_string(),
        message,
    };
    let text = std::str::from_utf8(index).map_err(|e| parse_err(e.to_string()))?;
    // An index of thousands of versions is megabytes; the budgets bound alias bombs, not size.
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(64 * 1024 * 1024),
            max_aliases: 1_000,
            max_depth: 32,
            max_documents: 1,
        },
        with_snippet: false,
    };
    let raw: RawIndex =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| parse_err(e.to_string()))?;
    let entries = raw
        .entries
        .get(chart)
        .ok_or_else(|| ChartIndexError::NoChart {
            repository: repository.to_string(),
            chart: chart.to_string(),
        })?;
    Ok(entries
        .iter()
        .map(|e| RawVersion {
            name: if e.name.is_empty() {
                chart.to_string()
            } else {
                e.name.clone()
            },
            version: e.version.clone(),
            app_version: e.app_version.clone(),
            digest: e.digest.as_ref().map(|d| {
                if d.starts_with("sha256:") {
                    d.clone()
                } else {
                    format!("sha256:{d}")
                }
            }),
            urls: e.urls.clone(),
            created: e.created.clone(),
        })
        .collect())
}

/// A version as listed, before its archive URL is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawVersion {
    pub name: String,
    pub version: String,
    pub app_version: Option<String>,
    pub digest: Option<String>,
    pub urls: Vec<String>,
    pub created: Option<String>,
}

fn semver_of(version: &str) -> Option<semver::Version> {
    semver::Version::parse(version.strip_prefix('v').unwrap_or(version)).ok()
}

/// The version of `versions` an App wanting `wanted` gets, its archive URL resolved against
/// `repository`.
pub fn select(
    repository: &str,
    chart: &str,
    versions: &[RawVersion],
    wanted: &Wanted,
) -> Result<ChartVersion, ChartIndexError> {
    let bare = |v: &str| v.strip_prefix('v').unwrap_or(v).to_string();
    let mut skipped = 0;
    let chosen = match wanted {
        Wanted::Exact(want) => versions.iter().find(|v| bare(&v.version) == bare(want)),
        Wanted::Range(req) => {
            let mut best: Option<(semver::Version, &RawVersion)> = None;
            for v in versions {
                let Some(parsed) = semver_of(&v.version) else {
                    skipped += 1;
                    continue;
                };
                if req.matches(&parsed) && best.as_ref().is_none_or(|(b, _)| parsed > *b) {
                    best = Some((parsed, v));
                }
            }
            best.map(|(_, v)| v)
        }
    };
    let chosen = chosen.ok_or_else(|| ChartIndexError::NoMatch {
        repository: repository.to_string(),
        chart: chart.to_string(),
        wanted: wanted.to_string(),
        skipped,
    })?;
    let first = chosen.urls.first().ok_or_else(|| ChartIndexError::NoUrl {
        repository: repository.to_string(),
        chart: chart.to_string(),
        version: chosen.version.clone(),
    })?;
    let url = resolve(repository, first).map_err(|message| ChartIndexError::BadUrl {
        repository: repository.to_string(),
        chart: chart.to_string(),
        version: chosen.version.clone(),
        url: first.clone(),
        message,
    })?;
    Ok(ChartVersion {
        name: chosen.name.clone(),
        version: chosen.version.clone(),
        app_version: chosen.app_version.clone(),
        digest: chosen.digest.clone(),
        url,
        created: chosen.created.clone(),
    })
}

/// An archive URL as written in the index, made absolute: relative ones are relative to the
/// repository's URL taken as a directory (`https://h/charts` + `web-1.0.0.tgz` is
/// `https://h/charts/web-1.0.0.tgz`, as Helm resolves them). Only http(s) archives are fetched.
fn resolve(repository: &str, url: &str) -> Result<String, String> {
    let base = if repository.ends_with('/') {
        repository.to_string()
    } else {
        format!("{repository}/")
    };
    let base = reqwest::Url::parse(&base).map_err(|e| e.to_string())?;
    let joined = base.join(url).map_err(|e| e.to_string())?;
    match joined.scheme() {
        "http" | "https" => Ok(joined.to_string()),
        other => Err(format!(
            "scheme {other} is not fetched (http and https only)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPO: &str = "https://charts.example.com/stable";

    const INDEX: &str = r#"apiVersion: v1
entries:
  web:
    - name: web
      version: 1.2.0
      appVersion: "2.0"
      digest: 0123abcd
      urls: [web-1.2.0.tgz]
      created: "2026-12-01T10:00:00Z"
    - name: web
      version: 1.10.0
      digest: sha256:ffff
      urls: ["https://mirror.example.com/web-1.10.0.tgz"]
    - name: web
      version: 2.0.0-rc.1
      urls: [web-2.0.0-rc.1.tgz]
    - name: web
      version: latest
      urls: [web-latest.tgz]
    - name: web
      version: v0.9.0
      urls: [web-0.9.0.tgz]
  db:
    - version: 3.0.0
      urls: []
generated: "2026-12-01T10:00:00Z"
"#;

    fn versions(chart: &str) -> Vec<RawVersion> {
        parse(REPO, INDEX.as_bytes(), chart).unwrap()
    }

    fn range(r: &str) -> Wanted {
        Wanted::Range(semver::VersionReq::parse(r).unwrap())
    }

    #[test]
    fn a_range_gets_the_highest_match_by_semver_not_by_text_and_no_prerelease() {
        let v = select(REPO, "web", &versions("web"), &range(">=1, <3")).unwrap();
        assert_eq!(v.version, "1.10.0", "1.10 > 1.2 by semver");
        assert_eq!(v.url, "https://mirror.example.com/web-1.10.0.tgz");
        assert_eq!(v.digest.as_deref(), Some("sha256:ffff"));
        let v = select(REPO, "web", &versions("web"), &range(">=2.0.0-rc.1")).unwrap();
        assert_eq!(
            v.version, "2.0.0-rc.1",
            "a range naming a pre-release gets it"
        );
        let v = select(REPO, "web", &versions("web"), &range("<1")).unwrap();
        assert_eq!(v.version, "v0.9.0", "a leading v is read");
    }

    #[test]
    fn an_exact_version_is_found_with_its_relative_url_resolved() {
        let v = select(
            REPO,
            "web",
            &versions("web"),
            &Wanted::Exact("v1.2.0".into()),
        )
        .unwrap();
        assert_eq!(
            v,
            ChartVersion {
                name: "web".into(),
                version: "1.2.0".into(),
                app_version: Some("2.0".into()),
                digest: Some("sha256:0123abcd".into()),
                url: "https://charts.example.com/stable/web-1.2.0.tgz".into(),
                created: Some("2026-12-01T10:00:00Z".into()),
            }
        );
        let v = select(
            REPO,
            "web",
            &versions("web"),
            &Wanted::Exact("latest".into()),
        )
        .unwrap();
        assert_eq!(v.version, "latest", "an exact version need not be semver");
    }

    #[test]
    fn what_cannot_be_had_is_named() {
        let err = select(REPO, "web", &versions("web"), &range(">=5")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "https://charts.example.com/stable: chart \"web\" has no version matching range \
             >=5 (1 versions that are not semver were not compared)"
        );
        let err = parse(REPO, INDEX.as_bytes(), "cache").unwrap_err();
        assert!(matches!(err, ChartIndexError::NoChart { .. }), "{err}");
        let err = select(REPO, "db", &versions("db"), &range("*")).unwrap_err();
        assert!(matches!(err, ChartIndexError::NoUrl { .. }), "{err}");
        assert_eq!(
            versions("db")[0].name,
            "db",
            "an entry without a name is the chart's"
        );
        let err = parse(REPO, b"entries: [1, 2]", "web").unwrap_err();
        assert!(matches!(err, ChartIndexError::Parse { .. }), "{err}");
    }

    #[test]
    fn archive_urls_resolve_like_helm_and_only_over_http() {
        assert_eq!(
            resolve("https://h/charts", "web-1.0.0.tgz").unwrap(),
            "https://h/charts/web-1.0.0.tgz"
        );
        assert_eq!(
            resolve("https://h/charts/", "../other/web.tgz").unwrap(),
            "https://h/other/web.tgz"
        );
        assert!(resolve("https://h/charts", "file:///etc/passwd").is_err());
    }

    #[test]
    fn an_index_of_a_thousand_versions_parses() {
        let mut text = String::from("apiVersion: v1\nentries:\n  web:\n");
        for i in 0..1000 {
            text.push_str(&format!(
                "    - name: web\n      version: 1.{i}.0\n      digest: {i:064x}\n      urls: [web-1.{i}.0.tgz]\n"
            ));
        }
        let all = parse(REPO, text.as_bytes(), "web").unwrap();
        assert_eq!(all.len(), 1000);
        let v = select(REPO, "web", &all, &range("^1")).unwrap();
        assert_eq!(v.version, "1.999.0");
    }
}
