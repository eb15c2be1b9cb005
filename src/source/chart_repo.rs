//! Owns the network half of an HTTP(S) Helm chart repository: fetching its `index.yaml` with a
//! conditional request (an unchanged index costs one request that transfers nothing), downloading
//! a chart archive and checking it against the index's digest, and unpacking it under limits
//! (size, file count, paths that stay inside the chart's directory). Choosing a version from the
//! index is [`super::chart_index`]'s; turning a chart into objects is `render::helm`'s.
//!
//! Blocking, like the Git fetch it sits beside: the agent runs sources on blocking threads.

use super::chart_index::ChartVersion;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ChartRepoError {
    #[error("chart repository {url}: {reason}")]
    Client { url: String, reason: String },
    #[error("chart repository {url}: {reason}")]
    Request { url: String, reason: String },
    #[error("chart repository {url}: HTTP {status}{}", hint(*status))]
    Status { url: String, status: u16 },
    #[error("chart repository {url}: more than {limit} bytes (limits for charts)")]
    TooLarge { url: String, limit: u64 },
    #[error("chart {chart}: the archive's digest is {actual}, the index says {expected}")]
    Digest {
        chart: String,
        expected: String,
        actual: String,
    },
    #[error("chart {chart}: refused archive: {reason}")]
    Archive { chart: String, reason: String },
}

fn hint(status: u16) -> &'static str {
    match status {
        401 | 403 => " (check the repository's credentials)",
        404 => " (no such repository or chart archive)",
        _ => "",
    }
}

/// How the repository is reached.
#[derive(Clone, Debug, Default)]
pub enum RepoAuth {
    #[default]
    None,
    Basic {
        username: String,
        password: String,
    },
    Bearer(String),
}

/// Bounds on what a repository may make reckon hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChartLimits {
    /// The index (`index.yaml` of 1,000 versions is about 1 MiB).
    pub index_bytes: u64,
    /// One chart archive as downloaded (gzip).
    pub archive_bytes: u64,
    /// The archive unpacked: all files together, and how many.
    pub unpacked_bytes: u64,
    pub files: usize,
}

impl Default for ChartLimits {
    fn default() -> ChartLimits {
        ChartLimits {
            index_bytes: 32 << 20,
            archive_bytes: 16 << 20,
            unpacked_bytes: 64 << 20,
            files: 5_000,
        }
    }
}

/// The validators of an index as last fetched, sent back so an unchanged index is not sent again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// What asking for the index found.
#[derive(Debug, PartialEq, Eq)]
pub enum IndexFetch {
    /// 304: the index is as it was.
    NotModified,
    Fetched {
        body: Vec<u8>,
        validators: Validators,
    },
}

/// One HTTP(S) chart repository.
pub struct ChartRepo {
    base: String,
    auth: RepoAuth,
    limits: ChartLimits,
    http: reqwest::blocking::Client,
}

impl ChartRepo {
    /// `base`: the repository URL (`index.yaml` is under it); `ca_file`: PEM certificates to
    /// trust besides the system's; every request ends within `timeout`.
    pub fn new(
        base: &str,
        auth: RepoAuth,
        ca_file: Option<&Path>,
        limits: ChartLimits,
        timeout: Duration,
    ) -> Result<ChartRepo, ChartRepoError> {
        let client_err = |reason: String| ChartRepoError::Client {
            url: base.to_string(),
            reason,
        };
        let mut http = reqwest::blocking::Client::builder()
            .timeout(timeout)
            // Credentials go only where they were configured for.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| client_err(format!("{}: {e}", ca.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| client_err(format!("{}: {e}", ca.display())))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build().map_err(|e| client_err(e.to_string()))?;
        Ok(ChartRepo {
            base: base.trim_end_matches('/').to_string(),
            auth,
            limits,
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn get(&self, url: &str) -> reqwest::blocking::RequestBuilder {
        let request = self.http.get(url);
        // Only to the repository's own host: an archive listed elsewhere gets no credentials.
        if !same_origin(&self.base, url) {
            return request;
        }
        match &self.auth {
            RepoAuth::None => request,
            RepoAuth::Basic { username, password } => request.basic_auth(username, Some(password)),
            RepoAuth::Bearer(token) => request.bearer_auth(token),
        }
    }

    /// The index, unless it is unchanged since `previous` was fetched.
    pub fn index(&self, previous: Option<&Validators>) -> Result<IndexFetch, ChartRepoError> {
        let url = format!("{}/index.yaml", self.base);
        let mut request = self.get(&url);
        if let Some(v) = previous {
            if let Some(etag) = &v.etag {
                request = request.header(reqwest::header::IF_NONE_MATCH, etag);
            }
            if let Some(date) = &v.last_modified {
                request = request.header(reqwest::header::IF_MODIFIED_SINCE, date);
            }
        }
        let response = self.send(&url, request)?;
        if response.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(IndexFetch::NotModified);
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let validators = Validators {
            etag: header(reqwest::header::ETAG),
            last_modified: header(reqwest::header::LAST_MODIFIED),
        };
        let body = read_bounded(&url, response, self.limits.index_bytes)?;
        Ok(IndexFetch::Fetched { body, validators })
    }

    /// The archive of `version`, checked against the index's digest when it gives one.
    pub fn archive(&self, version: &ChartVersion) -> Result<Vec<u8>, ChartRepoError> {
        let response = self.send(&version.url, self.get(&version.url))?;
        let body = read_bounded(&version.url, response, self.limits.archive_bytes)?;
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        if let Some(expected) = &version.digest
            && !expected.eq_ignore_ascii_case(&actual)
        {
            return Err(ChartRepoError::Digest {
                chart: format!("{} {}", version.name, version.version),
                expected: expected.clone(),
                actual,
            });
        }
        Ok(body)
    }

    fn send(
        &self,
        url: &str,
        request: reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response, ChartRepoError> {
        let response = request.send().map_err(|e| ChartRepoError::Request {
            url: url.to_string(),
            reason: crate::source::mirror::chain(&e),
        })?;
        let status = response.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_MODIFIED {
            Ok(response)
        } else {
            Err(ChartRepoError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            })
        }
    }
}

/// Whether `url` is on the same scheme, host and port as `base`.
fn same_origin(base: &str, url: &str) -> bool {
    match (reqwest::Url::parse(base), reqwest::Url::parse(url)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// The body, refused once it passes `limit` (read as it streams: a declared length can lie).
fn read_bounded(
    url: &str,
    response: reqwest::blocking::Response,
    limit: u64,
) -> Result<Vec<u8>, ChartRepoError> {
    let too_large = || ChartRepoError::TooLarge {
        url: url.to_string(),
        limit,
    };
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    response
        .take(limit + 1)
        .read_to_end(&mut body)
        .map_err(|e| ChartRepoError::Request {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    if body.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(body)
}

/// Unpacks a chart archive (`.tgz`) into `into`, returning the chart's directory. Refused, with
/// nothing left behind: entries outside one top-level directory, absolute paths or `..`, links
/// and devices, more than `limits.files` entries or `limits.unpacked_bytes` bytes (counted as
/// they inflate, so a small archive cannot expand without bound).
pub fn unpack(
    chart: &str,
    archive: &[u8],
    into: &Path,
    limits: &ChartLimits,
) -> Result<PathBuf, ChartRepoError> {
    let refuse = |reason: String| ChartRepoError::Archive {
        chart: chart.to_string(),
        reason,
    };
    let result = unpack_entries(archive, into, limits).map_err(refuse);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(into);
    }
    result
}

fn unpack_entries(archive: &[u8], into: &Path, limits: &ChartLimits) -> Result<PathBuf, String> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let mut top: Option<String> = None;
    let (mut files, mut bytes) = (0usize, 0u64);
    for entry in tar.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let raw = entry.path_bytes().into_owned();
        let name =
            String::from_utf8(raw).map_err(|_| "an entry's path is not UTF-8".to_string())?;
        let relative = checked_path(&name)?;
        let first = relative
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        match &top {
            None => top = Some(first.clone()),
            Some(t) if *t != first => {
                return Err(format!("{name:?} is outside the chart's directory {t:?}"));
            }
            Some(_) => {}
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        // pax headers and GNU long names carry metadata the tar crate applies itself.
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
        {
            continue;
        }
        if !kind.is_file() {
            return Err(format!("{name:?} is not a regular file ({kind:?})"));
        }
        files += 1;
        if files > limits.files {
            return Err(format!("more than {} files", limits.files));
        }
        let target = into.join(&relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let left = limits.unpacked_bytes.saturating_sub(bytes);
        let mut out =
            std::fs::File::create(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        let written = std::io::copy(&mut (&mut entry).take(left + 1), &mut out)
            .map_err(|e| format!("{name}: {e}"))?;
        bytes += written;
        if bytes > limits.unpacked_bytes {
            return Err(format!(
                "more than {} bytes unpacked",
                limits.unpacked_bytes
            ));
        }
    }
    let top = top.ok_or("the archive is empty")?;
    Ok(into.join(top))
}

/// `name` as a relative path of normal components only.
fn checked_path(name: &str) -> Result<PathBuf, String> {
    let path = Path::new(name);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(format!("{name:?} leaves the chart's directory"));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("{name:?} names no file"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gzip tar with `entries` (path, kind, content), written header by header so that hostile
    /// names the tar crate's builder would refuse can be made.
    fn archive(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for (path, kind, content) in entries {
            let mut header = tar::Header::new_old();
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_entry_type(*kind);
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append(&header, *content).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    const FILE: tar::EntryType = tar::EntryType::Regular;

    #[test]
    fn a_chart_unpacks_into_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let tgz = archive(&[
            ("web/Chart.yaml", FILE, b"name: web\nversion: 1.0.0\n"),
            ("web/templates/cm.yaml", FILE, b"kind: ConfigMap\n"),
        ]);
        let chart = unpack("web", &tgz, dir.path(), &ChartLimits::default()).unwrap();
        assert_eq!(chart, dir.path().join("web"));
        assert!(chart.join("templates/cm.yaml").is_file());
    }

    #[test]
    fn hostile_archives_are_refused_and_leave_nothing() {
        let limits = ChartLimits::default();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "traversal",
                archive(&[("web/../../etc/x", FILE, b"x")]),
                "leaves the chart's directory",
            ),
            ("absolute", archive(&[("/etc/x", FILE, b"x")]), "leaves"),
            (
                "second top directory",
                archive(&[("web/Chart.yaml", FILE, b"x"), ("other/x", FILE, b"x")]),
                "outside the chart's directory",
            ),
            (
                "symlink",
                archive(&[("web/link", tar::EntryType::Symlink, b"")]),
                "not a regular file",
            ),
            (
                "hard link",
                archive(&[("web/link", tar::EntryType::Link, b"")]),
                "not a regular file",
            ),
            ("not gzip", b"plain text".to_vec(), ""),
        ];
        for (what, tgz, says) in cases {
            let dir = tempfile::tempdir().unwrap();
            let into = dir.path().join("unpacked");
            let err = unpack("web", &tgz, &into, &limits).unwrap_err().to_string();
            assert!(
                err.contains("refused archive") && err.contains(says),
                "{what}: {err}"
            );
            assert!(!into.exists(), "{what}: left files behind");
            assert!(!dir.path().join("etc").exists());
        }
    }

    #[test]
    fn size_and_count_limits_hold_while_inflating() {
        // 8 MiB of zeros compresses to a few KiB: the bound is on what comes out.
        let big = vec![0u8; 8 << 20];
        let tgz = archive(&[("web/big", FILE, &big)]);
        assert!(tgz.len() < 64 << 10, "{}", tgz.len());
        let limits = ChartLimits {
            unpacked_bytes: 1 << 20,
            ..ChartLimits::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let err = unpack("web", &tgz, &dir.path().join("u"), &limits).unwrap_err();
        assert!(err.to_string().contains("bytes unpacked"), "{err}");
        let many: Vec<(String, tar::EntryType, &[u8])> = (0..20)
            .map(|i| (format!("web/f{i}"), FILE, &b"x"[..]))
            .collect();
        let many: Vec<(&str, tar::EntryType, &[u8])> =
            many.iter().map(|(p, k, c)| (p.as_str(), *k, *c)).collect();
        let limits = ChartLimits {
            files: 10,
            ..ChartLimits::default()
        };
        let err = unpack("web", &archive(&many), &dir.path().join("v"), &limits).unwrap_err();
        assert!(err.to_string().contains("more than 10 files"), "{err}");
    }

    #[test]
    fn credentials_go_only_to_the_repositorys_origin() {
        assert!(same_origin(
            "https://charts.example/repo",
            "https://charts.example/repo/web-1.tgz"
        ));
        assert!(!same_origin(
            "https://charts.example/repo",
            "https://cdn.example/web-1.tgz"
        ));
        assert!(!same_origin(
            "https://charts.example",
            "http://charts.example/web-1.tgz"
        ));
        assert!(!same_origin(
            "https://charts.example",
            "https://charts.example:8443/x"
        ));
    }
}
