//! Owns following one chart of an HTTP(S) Helm chart repository as an App's source: looking at
//! the repository's index (conditionally: an unchanged index is one request answered `304` and
//! nothing else), choosing the version the App wants, downloading and checking the chosen
//! archive, keeping it unpacked in the cache by its digest, and reporting every new matching
//! version as plain data for `ChartObserved` events.
//!
//! A chart revision is named by the archive's SHA-256 in hex: it fixes the chart, its version and
//! its bytes, it is what the App's revision table, rollback and blame key it by, and (hex like a
//! commit id) it takes the same prefixes on the command line. The network half is
//! [`super::chart_repo`]'s, the choice of a version [`super::chart_index`]'s; failures are
//! [`SourceError`]s, so the caller records a `SourceFetchFailed` and keeps the last good revision
//! exactly as for Git.

use super::chart_index::{self, ChartIndexError, ChartVersion, RawVersion, Wanted};
use super::chart_oci::{self, ChartOciError, OciChart, RegistryCause};
use super::chart_repo::{self, ChartLimits, ChartRepo, ChartRepoError, IndexFetch, RepoAuth};
use super::cosign::{self, CosignStatus};
use super::signature::{SignatureFormat, SignatureMode, SignatureStatus};
use super::{GitSource, SecretSource, SourceError};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Which chart of the repository (the source's URL) an App follows, and how it gets in.
#[derive(Debug, Clone)]
pub struct ChartSpec {
    pub name: String,
    pub wanted: Wanted,
    pub auth: ChartAuth,
    pub limits: ChartLimits,
    /// What is done with an OCI chart's cosign signatures (off for a chart repository).
    pub signature: ChartSignaturePolicy,
    /// An OCI registry over plain HTTP (the configuration allows it on loopback only).
    pub plain_http: bool,
}

/// An OCI chart's signature policy, as a commit's: `record` writes the check's result into
/// the chart's `ChartObserved`, `require` deploys only a chart signed by one of `keys`.
#[derive(Debug, Clone, Default)]
pub struct ChartSignaturePolicy {
    pub mode: SignatureMode,
    /// cosign public keys (PEM, ECDSA P-256), read at every check.
    pub keys: Vec<PathBuf>,
}

/// Credentials for a chart repository, read at every look (a rotated secret needs no restart)
/// and sent only to the repository's own origin.
#[derive(Debug, Clone, Default)]
pub enum ChartAuth {
    #[default]
    None,
    Basic {
        username: String,
        password: SecretSource,
    },
    Bearer(SecretSource),
}

/// One chart version observed: the payload of a `ChartObserved`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedChart {
    /// The archive's SHA-256, lowercase hex.
    pub revision: String,
    pub name: String,
    pub version: String,
    pub app_version: Option<String>,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Downloaded and checked by reckon (the version deployed), or taken from the index (a
    /// version passed over on the way there).
    pub verified: bool,
    pub created: Option<String>,
    /// The cosign check of an OCI chart under the App's policy; `NotChecked` otherwise.
    pub signature: SignatureStatus,
}

/// What one look at the repository found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartOutcome {
    /// New matching versions, oldest first; the one to deploy last. Empty: nothing new.
    pub new_versions: Vec<ObservedChart>,
    /// Whether the index was answered `304 Not Modified` (nothing was parsed or downloaded).
    pub not_modified: bool,
}

/// What the last successful look left for the next: the index's validators and the revision
/// chosen from it, so a `304` means "still that revision".
#[derive(Debug, Clone)]
struct Memo {
    validators: chart_repo::Validators,
    head: String,
    /// For an OCI chart: the manifest digest the chosen tag stood for (the pin: the same
    /// digest next time means the same chart, and nothing is pulled).
    manifest: Option<String>,
}

/// The per-source memory of the last look; shared by the clones of one [`GitSource`].
#[derive(Debug, Clone, Default)]
pub(crate) struct ChartMemo(Arc<Mutex<Option<Memo>>>);

/// `sha256:<hex>` → `<hex>`, lowercased.
fn hex_of(digest: &str) -> String {
    digest
        .strip_prefix("sha256:")
        .unwrap_or(digest)
        .to_ascii_lowercase()
}

fn semver_of(version: &str) -> Option<semver::Version> {
    semver::Version::parse(version.strip_prefix('v').unwrap_or(version)).ok()
}

/// The versions passed over between `previous` and `chosen` that the App's range also matches,
/// oldest first: recorded from the index (its digests), as the commits between two heads are.
/// Only for a range (an exact version has nothing between) and only when the previous version is
/// known (the first look records only what it deploys, as a first Git fetch does).
pub fn passed_over(
    versions: &[RawVersion],
    wanted: &Wanted,
    previous: Option<&str>,
    chosen: &ChartVersion,
) -> Vec<ObservedChart> {
    let Wanted::Range(req) = wanted else {
        return Vec::new();
    };
    let (Some(previous), Some(chosen_v)) =
        (previous.and_then(semver_of), semver_of(&chosen.version))
    else {
        return Vec::new();
    };
    let mut between: Vec<(semver::Version, ObservedChart)> = versions
        .iter()
        .filter_map(|v| {
            let parsed = semver_of(&v.version)?;
            let digest = v.digest.clone()?;
            (req.matches(&parsed) && parsed > previous && parsed < chosen_v).then(|| {
                (
                    parsed,
                    ObservedChart {
                        revision: hex_of(&digest),
                        name: v.name.clone(),
                        version: v.version.clone(),
                        app_version: v.app_version.clone(),
                        digest: format!("sha256:{}", hex_of(&digest)),
                        verified: false,
                        created: v.created.clone(),
                        signature: SignatureStatus::NotChecked,
                    },
                )
            })
        })
        .collect();
    between.sort_by(|a, b| a.0.cmp(&b.0));
    between.into_iter().map(|(_, o)| o).collect()
}

/// Whether the index's entry for `chosen` already says it is the revision the App has: then no
/// archive is downloaded.
pub fn is_previous(chosen: &ChartVersion, previous_head: Option<&str>) -> bool {
    match (&chosen.digest, previous_head) {
        (Some(digest), Some(head)) => hex_of(digest) == head.to_ascii_lowercase(),
        _ => false,
    }
}

/// A chart repository failure as the source failure it is recorded as.
pub(super) fn source_error(url: &str, err: ChartRepoError) -> SourceError {
    let text = err.to_string();
    match err {
        ChartRepoError::Client { .. } => SourceError::Credentials {
            url: url.to_string(),
            detail: text,
        },
        ChartRepoError::Request { reason, .. } => {
            let lower = reason.to_ascii_lowercase();
            if lower.contains("certificate") || lower.contains("tls") || lower.contains("ssl") {
                SourceError::TlsUntrusted {
                    url: url.to_string(),
                    detail: reason,
                }
            } else {
                SourceError::Unreachable {
                    url: url.to_string(),
                    detail: reason,
                }
            }
        }
        ChartRepoError::Status { status, .. } if status == 401 || status == 403 => {
            SourceError::AuthFailed {
                url: url.to_string(),
                detail: text,
            }
        }
        ChartRepoError::Status { .. } => SourceError::Fetch {
            url: url.to_string(),
            detail: text,
        },
        ChartRepoError::TooLarge { .. } => SourceError::Limit {
            what: "chart repository response".to_string(),
            detail: text,
        },
        ChartRepoError::Digest {
            chart,
            expected,
            actual,
        } => SourceError::ChartRefused {
            chart,
            detail: format!("the archive's digest is {actual}, the index says {expected}"),
        },
        ChartRepoError::Archive { chart, reason } => SourceError::ChartRefused {
            chart,
            detail: format!("hostile archive: {reason}"),
        },
    }
}

fn index_error(url: &str, err: ChartIndexError) -> SourceError {
    match err {
        ChartIndexError::NoChart { ref chart, .. } => SourceError::MissingRef {
            url: url.to_string(),
            selector: format!("chart {chart:?}"),
        },
        ChartIndexError::NoMatch {
            ref chart,
            ref wanted,
            ..
        } => SourceError::MissingRef {
            url: url.to_string(),
            selector: format!("chart {chart:?} {wanted}"),
        },
        other => SourceError::Fetch {
            url: url.to_string(),
            detail: other.to_string(),
        },
    }
}

impl GitSource {
    /// The chart this source follows, when its URL is a chart repository.
    pub fn chart(&self) -> Option<&ChartSpec> {
        self.chart.as_ref()
    }

    /// Follows `chart` in the repository at the source's URL instead of a Git ref.
    pub fn with_chart(mut self, chart: ChartSpec) -> Self {
        self.chart = Some(chart);
        self
    }

    fn chart_spec(&self) -> Result<&ChartSpec, SourceError> {
        self.chart.as_ref().ok_or_else(|| SourceError::Read {
            what: "a chart".to_string(),
            detail: format!("{} is a Git source", self.spec.url),
        })
    }

    /// Where this repository's charts are kept unpacked, one directory per revision: beside the
    /// Git mirrors, keyed like them by URL and credentials' identity.
    pub fn chart_cache(&self) -> PathBuf {
        self.cache_dir
            .parent()
            .unwrap_or(Path::new("."))
            .join("charts")
            .join(self.cache_dir.file_name().unwrap_or_default())
    }

    /// The credentials as they are now (read at every look: a rotated secret needs no restart).
    fn repo_auth(&self, spec: &ChartSpec) -> Result<RepoAuth, SourceError> {
        let credentials = |e: String| SourceError::Credentials {
            url: self.spec.url.clone(),
            detail: e,
        };
        Ok(match &spec.auth {
            ChartAuth::None => RepoAuth::None,
            ChartAuth::Basic { username, password } => RepoAuth::Basic {
                username: username.clone(),
                password: password.read().map_err(credentials)?,
            },
            ChartAuth::Bearer(token) => RepoAuth::Bearer(token.read().map_err(credentials)?),
        })
    }

    fn chart_repo(&self, spec: &ChartSpec) -> Result<ChartRepo, SourceError> {
        let url = &self.spec.url;
        let auth = self.repo_auth(spec)?;
        ChartRepo::new(
            url,
            auth,
            self.spec.access.ca_bundle.as_deref(),
            spec.limits,
            self.options.timeout,
        )
        .map_err(|e| source_error(url, e))
    }

    /// Looks at the repository once. `previous_head` is the revision the App last observed and
    /// `previous_version` its chart version (from its `ChartObserved`). Blocking.
    pub fn observe_chart(
        &self,
        previous_head: Option<&str>,
        previous_version: Option<&str>,
    ) -> Result<ChartOutcome, SourceError> {
        let spec = self.chart_spec()?;
        if self.is_oci() {
            return self.observe_oci(spec, previous_head, previous_version);
        }
        let url = self.spec.url.clone();
        let repo = self.chart_repo(spec)?;
        let memo = self.chart_memo.0.lock().expect("not poisoned").clone();
        // Validators answer for the revision they were chosen with, nothing else.
        let conditional = memo
            .as_ref()
            .filter(|m| previous_head == Some(m.head.as_str()))
            .map(|m| m.validators.clone());
        let (body, validators) = match repo
            .index(conditional.as_ref())
            .map_err(|e| source_error(&url, e))?
        {
            IndexFetch::NotModified => {
                return Ok(ChartOutcome {
                    new_versions: Vec::new(),
                    not_modified: true,
                });
            }
            IndexFetch::Fetched { body, validators } => (body, validators),
        };
        let versions =
            chart_index::parse(repo.base(), &body, &spec.name).map_err(|e| index_error(&url, e))?;
        let chosen = chart_index::select(repo.base(), &spec.name, &versions, &spec.wanted)
            .map_err(|e| index_error(&url, e))?;
        let remember = |head: String| {
            *self.chart_memo.0.lock().expect("not poisoned") = Some(Memo {
                validators: validators.clone(),
                head,
                manifest: None,
            });
        };
        if is_previous(&chosen, previous_head) {
            remember(previous_head.unwrap_or_default().to_string());
            return Ok(ChartOutcome {
                new_versions: Vec::new(),
                not_modified: false,
            });
        }
        let archive = repo.archive(&chosen).map_err(|e| source_error(&url, e))?;
        let revision = hex::encode(Sha256::digest(&archive));
        if previous_head == Some(revision.as_str()) {
            remember(revision);
            return Ok(ChartOutcome {
                new_versions: Vec::new(),
                not_modified: false,
            });
        }
        self.keep_unpacked(&chosen, &archive, &revision, spec)?;
        let mut new_versions = passed_over(&versions, &spec.wanted, previous_version, &chosen);
        new_versions.retain(|v| Some(v.revision.as_str()) != previous_head);
        new_versions.push(ObservedChart {
            digest: format!("sha256:{revision}"),
            revision: revision.clone(),
            name: chosen.name.clone(),
            version: chosen.version.clone(),
            app_version: chosen.app_version.clone(),
            verified: true,
            created: chosen.created.clone(),
            signature: SignatureStatus::NotChecked,
        });
        remember(revision);
        Ok(ChartOutcome {
            new_versions,
            not_modified: false,
        })
    }

    /// [`Self::observe_chart`] on tokio's blocking pool.
    pub async fn observe_chart_async(
        &self,
        previous_head: Option<String>,
        previous_version: Option<String>,
    ) -> Result<ChartOutcome, SourceError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.observe_chart(previous_head.as_deref(), previous_version.as_deref())
        })
        .await
        .map_err(|e| SourceError::Task(e.to_string()))?
    }

    /// Unpacks a checked archive into the cache as `revision` (refusing hostile archives with
    /// nothing left behind); a revision already there is kept.
    fn keep_unpacked(
        &self,
        chosen: &ChartVersion,
        archive: &[u8],
        revision: &str,
        spec: &ChartSpec,
    ) -> Result<PathBuf, SourceError> {
        let root = self.chart_cache();
        let dir = root.join(revision);
        if dir.is_dir() {
            return Ok(dir);
        }
        std::fs::create_dir_all(&root).map_err(|e| SourceError::Read {
            what: root.display().to_string(),
            detail: e.to_string(),
        })?;
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let tmp = root.join(format!(
            ".unpack-{revision}-{}-{unique}",
            std::process::id()
        ));
        let label = format!("{} {}", chosen.name, chosen.version);
        chart_repo::unpack(&label, archive, &tmp, &spec.limits)
            .map_err(|e| source_error(&self.spec.url, e))?;
        // Another App on the same repository may have put it there meanwhile: theirs is the
        // same bytes (the name is their digest).
        if let Err(e) = std::fs::rename(&tmp, &dir) {
            let _ = std::fs::remove_dir_all(&tmp);
            if !dir.is_dir() {
                return Err(SourceError::Read {
                    what: dir.display().to_string(),
                    detail: e.to_string(),
                });
            }
        }
        Ok(dir)
    }

    /// Downloads the archive of `revision` again (the cache lost it): the index is read whole,
    /// the version whose digest is `revision` downloaded and checked.
    fn fetch_revision(&self, revision: &str) -> Result<PathBuf, SourceError> {
        let spec = self.chart_spec()?;
        if self.is_oci() {
            return self.fetch_oci_revision(spec, revision);
        }
        let url = self.spec.url.clone();
        let repo = self.chart_repo(spec)?;
        let body = match repo.index(None).map_err(|e| source_error(&url, e))? {
            IndexFetch::Fetched { body, .. } => body,
            IndexFetch::NotModified => {
                return Err(SourceError::Fetch {
                    url,
                    detail: "the index was answered 304 to an unconditional request".into(),
                });
            }
        };
        let versions =
            chart_index::parse(repo.base(), &body, &spec.name).map_err(|e| index_error(&url, e))?;
        let listed = versions
            .iter()
            .find(|v| v.digest.as_deref().map(hex_of).as_deref() == Some(revision))
            .ok_or_else(|| SourceError::MissingRef {
                url: url.clone(),
                selector: format!(
                    "chart {:?} with digest sha256:{revision} (no longer in the index; a \
                     rollback to it applies what was recorded)",
                    spec.name
                ),
            })?;
        let chosen = chart_index::select(
            repo.base(),
            &spec.name,
            std::slice::from_ref(listed),
            &Wanted::Exact(listed.version.clone()),
        )
        .map_err(|e| index_error(&url, e))?;
        let archive = repo.archive(&chosen).map_err(|e| source_error(&url, e))?;
        let actual = hex::encode(Sha256::digest(&archive));
        if actual != revision {
            return Err(SourceError::ChartRefused {
                chart: format!("{} {}", chosen.name, chosen.version),
                detail: format!("the archive's digest is sha256:{actual}, not sha256:{revision}"),
            });
        }
        self.keep_unpacked(&chosen, &archive, revision, spec)
    }

    /// The files of the chart at `revision`, relative to the chart's directory and sorted (as
    /// [`Self::read_tree`] gives a Git App's path): from the cache, downloaded again when the
    /// cache lost them. Blocking.
    pub fn chart_files(&self, revision: &str) -> Result<Vec<(String, Vec<u8>)>, SourceError> {
        if revision.len() != 64 || !revision.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SourceError::Read {
                what: format!("chart revision {revision:?}"),
                detail: "not a chart archive digest".into(),
            });
        }
        let dir = self.chart_cache().join(revision);
        let dir = if dir.is_dir() {
            dir
        } else {
            self.fetch_revision(revision)?
        };
        let read_err = |e: std::io::Error| SourceError::Read {
            what: format!("chart revision {revision}"),
            detail: e.to_string(),
        };
        // The unpacked archive holds one directory, the chart's.
        let mut tops = std::fs::read_dir(&dir)
            .map_err(read_err)?
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir());
        let top = match (tops.next(), tops.next()) {
            (Some(top), None) => top.path(),
            _ => {
                return Err(SourceError::Read {
                    what: format!("chart revision {revision}"),
                    detail: format!("{} does not hold one chart directory", dir.display()),
                });
            }
        };
        let mut files = Vec::new();
        collect(&top, &top, &mut files).map_err(read_err)?;
        files.sort_by(|a, b| a.0.cmp(&b.0));
        if !files.iter().any(|(p, _)| p == "Chart.yaml") {
            return Err(SourceError::ChartRefused {
                chart: spec_name(self),
                detail: "the archive holds no Chart.yaml".into(),
            });
        }
        Ok(files)
    }
}

/// Following a chart in an OCI registry (`oci://HOST/PATH/CHART`): the tags are the versions,
/// a tag is pinned by the manifest digest it stood for, and the revision is the chart archive's
/// SHA-256 as for a chart repository, so everything after the observation is shared.
impl GitSource {
    fn is_oci(&self) -> bool {
        self.spec.url.starts_with("oci://")
    }

    fn oci_chart(&self, spec: &ChartSpec) -> Result<OciChart, SourceError> {
        let url = &self.spec.url;
        let auth = self.repo_auth(spec)?;
        OciChart::new(
            url,
            auth,
            self.spec.access.ca_bundle.as_deref(),
            spec.plain_http,
            spec.limits,
            self.options.timeout,
        )
        .map_err(|e| oci_error(url, e))
    }

    /// One look at the registry: the tags listed, one chosen, resolved to its manifest digest;
    /// the same digest as last time costs nothing more. Blocking: runs the registry client on
    /// the runtime the caller's blocking thread belongs to.
    fn observe_oci(
        &self,
        spec: &ChartSpec,
        previous_head: Option<&str>,
        previous_version: Option<&str>,
    ) -> Result<ChartOutcome, SourceError> {
        let url = self.spec.url.clone();
        let oci = self.oci_chart(spec)?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|e| SourceError::Task(e.to_string()))?;
        let memo = self.chart_memo.0.lock().expect("not poisoned").clone();
        runtime.block_on(async {
            let tags = oci.tags().await.map_err(|e| oci_error(&url, e))?;
            let tag = chart_oci::choose_tag(&spec.name, &tags, &spec.wanted)
                .map_err(|e| oci_error(&url, e))?;
            let manifest = oci.resolve(&tag).await.map_err(|e| oci_error(&url, e))?;
            let pinned = memo
                .as_ref()
                .filter(|m| previous_head == Some(m.head.as_str()))
                .and_then(|m| m.manifest.as_deref());
            if pinned == Some(manifest.as_str()) {
                return Ok(ChartOutcome {
                    new_versions: Vec::new(),
                    not_modified: true,
                });
            }
            let pulled = oci.pull(&manifest).await.map_err(|e| oci_error(&url, e))?;
            let signature = self.check_signature(&oci, spec, &manifest).await?;
            let revision = hex::encode(Sha256::digest(&pulled.archive));
            let remember = |head: String| {
                *self.chart_memo.0.lock().expect("not poisoned") = Some(Memo {
                    validators: Default::default(),
                    head,
                    manifest: Some(manifest.clone()),
                });
            };
            if previous_head == Some(revision.as_str()) {
                remember(revision);
                return Ok(ChartOutcome {
                    new_versions: Vec::new(),
                    not_modified: false,
                });
            }
            let chosen = oci_version(&pulled, &url, &manifest, &revision);
            // Versions passed over since the last look: each tag's manifest read (not its
            // archive) for the archive's digest, recorded unverified as an index's are. Before
            // the chart is kept, so a failure here leaves the next poll to record them all.
            let mut new_versions = Vec::new();
            let between =
                chart_oci::passed_over_tags(&tags, &spec.wanted, previous_version, &chosen.version);
            for tag in between {
                let manifest = oci.resolve(&tag).await.map_err(|e| oci_error(&url, e))?;
                let layer = oci
                    .layer_digest(&manifest)
                    .await
                    .map_err(|e| oci_error(&url, e))?;
                if Some(hex_of(&layer).as_str()) == previous_head {
                    continue;
                }
                new_versions.push(ObservedChart {
                    revision: hex_of(&layer),
                    name: chosen.name.clone(),
                    version: chart_oci::version_of_tag(&tag),
                    app_version: None,
                    digest: layer,
                    verified: false,
                    created: None,
                    signature: SignatureStatus::NotChecked,
                });
            }
            self.keep_unpacked(&chosen, &pulled.archive, &revision, spec)?;
            remember(revision.clone());
            new_versions.push(ObservedChart {
                digest: format!("sha256:{revision}"),
                revision,
                name: chosen.name,
                version: chosen.version,
                app_version: chosen.app_version,
                verified: true,
                created: None,
                signature,
            });
            Ok(ChartOutcome {
                new_versions,
                not_modified: false,
            })
        })
    }

    /// The chart's cosign signatures checked under the App's policy: off is `NotChecked`;
    /// `require` refuses (a `SourceFetchFailed`, nothing observed, the App stays where it is)
    /// anything but a signature by one of the keys.
    async fn check_signature(
        &self,
        oci: &OciChart,
        spec: &ChartSpec,
        manifest: &str,
    ) -> Result<SignatureStatus, SourceError> {
        let policy = &spec.signature;
        if policy.mode == SignatureMode::Off {
            return Ok(SignatureStatus::NotChecked);
        }
        let mut keys = Vec::new();
        for path in &policy.keys {
            let pem = std::fs::read(path).map_err(|e| SourceError::Credentials {
                url: self.spec.url.clone(),
                detail: format!("cosign public key {}: {e}", path.display()),
            })?;
            keys.push(cosign::PublicKey::from_pem(path, &pem).map_err(|e| {
                SourceError::Credentials {
                    url: self.spec.url.clone(),
                    detail: e.to_string(),
                }
            })?);
        }
        let found = oci
            .signatures(manifest)
            .await
            .map_err(|e| oci_error(&self.spec.url, e))?;
        let status = match cosign::check(manifest, &found, &keys) {
            CosignStatus::NotChecked => SignatureStatus::NotChecked,
            CosignStatus::Unsigned => SignatureStatus::Unsigned,
            CosignStatus::Verified { key } => SignatureStatus::Verified {
                format: SignatureFormat::Cosign,
                signer: "cosign".into(),
                key,
            },
            CosignStatus::Untrusted { detail } => SignatureStatus::Untrusted {
                format: SignatureFormat::Cosign,
                detail,
            },
            CosignStatus::Invalid { detail } => SignatureStatus::Invalid {
                format: SignatureFormat::Cosign,
                detail,
            },
        };
        if policy.mode == SignatureMode::Require
            && !matches!(status, SignatureStatus::Verified { .. })
        {
            return Err(SourceError::ChartRefused {
                chart: format!("{}@{manifest}", spec.name),
                detail: format!("a cosign signature by a trusted key is required: {status:?}"),
            });
        }
        Ok(status)
    }

    /// The cache lost an OCI chart: the tags' manifests are read (small) until one whose chart
    /// layer is `revision`, and that chart pulled again by its manifest digest.
    fn fetch_oci_revision(&self, spec: &ChartSpec, revision: &str) -> Result<PathBuf, SourceError> {
        let url = self.spec.url.clone();
        let oci = self.oci_chart(spec)?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|e| SourceError::Task(e.to_string()))?;
        runtime.block_on(async {
            let tags = oci.tags().await.map_err(|e| oci_error(&url, e))?;
            for tag in &tags {
                let manifest = oci.resolve(tag).await.map_err(|e| oci_error(&url, e))?;
                if oci.layer_digest(&manifest).await.ok().as_deref()
                    != Some(format!("sha256:{revision}").as_str())
                {
                    continue;
                }
                let pulled = oci.pull(&manifest).await.map_err(|e| oci_error(&url, e))?;
                let chosen = oci_version(&pulled, &url, &manifest, revision);
                return self.keep_unpacked(&chosen, &pulled.archive, revision, spec);
            }
            Err(SourceError::MissingRef {
                url: url.clone(),
                selector: format!(
                    "chart {:?} with digest sha256:{revision} (no tag holds it any more; a \
                     rollback to it applies what was recorded)",
                    spec.name
                ),
            })
        })
    }
}

/// A chart pulled from a registry as the version [`GitSource::keep_unpacked`] names it: its
/// config's name and versions, the archive's digest, and where it came from (URL and manifest).
fn oci_version(
    pulled: &chart_oci::PulledChart,
    url: &str,
    manifest: &str,
    revision: &str,
) -> ChartVersion {
    ChartVersion {
        name: pulled.config.name.clone(),
        version: pulled.config.version.clone(),
        app_version: pulled.config.app_version.clone(),
        digest: Some(format!("sha256:{revision}")),
        url: format!("{url}@{manifest}"),
        created: None,
    }
}

/// An OCI registry failure as the source failure it is recorded as.
pub(super) fn oci_error(url: &str, err: ChartOciError) -> SourceError {
    let text = err.to_string();
    match err {
        ChartOciError::Url { .. } | ChartOciError::Client { .. } => SourceError::Credentials {
            url: url.to_string(),
            detail: text,
        },
        ChartOciError::Registry { cause, reason, .. } => match cause {
            RegistryCause::Unreachable => SourceError::Unreachable {
                url: url.to_string(),
                detail: reason,
            },
            RegistryCause::Tls => SourceError::TlsUntrusted {
                url: url.to_string(),
                detail: reason,
            },
            RegistryCause::Auth => SourceError::AuthFailed {
                url: url.to_string(),
                detail: text,
            },
            RegistryCause::Other => SourceError::Fetch {
                url: url.to_string(),
                detail: text,
            },
        },
        ChartOciError::NoMatch { chart, wanted, .. } => SourceError::MissingRef {
            url: url.to_string(),
            selector: format!("chart {chart:?} {wanted}"),
        },
        ChartOciError::TooLarge { .. } => SourceError::Limit {
            what: "OCI chart layer".to_string(),
            detail: text,
        },
        ChartOciError::NotAChart { chart, reason, .. } => SourceError::ChartRefused {
            chart,
            detail: reason,
        },
    }
}

fn spec_name(source: &GitSource) -> String {
    source
        .chart
        .as_ref()
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

/// Every regular file under `dir`, as `/`-separated paths relative to `root`. Unpacking wrote
/// only regular files and directories.
fn collect(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), std::io::Error> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(root, &path, out)?;
        } else if kind.is_file() {
            let relative = path
                .strip_prefix(root)
                .expect("under root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((relative, std::fs::read(&path)?));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(version: &str, digest: Option<&str>) -> RawVersion {
        RawVersion {
            name: "web".into(),
            version: version.into(),
            app_version: None,
            digest: digest.map(str::to_string),
            urls: vec![format!("web-{version}.tgz")],
            created: None,
        }
    }

    fn chosen(version: &str, digest: Option<&str>) -> ChartVersion {
        ChartVersion {
            name: "web".into(),
            version: version.into(),
            app_version: None,
            digest: digest.map(str::to_string),
            url: format!("https://h/web-{version}.tgz"),
            created: None,
        }
    }

    fn range(r: &str) -> Wanted {
        Wanted::Range(semver::VersionReq::parse(r).unwrap())
    }

    #[test]
    fn versions_passed_over_are_the_matching_ones_between_oldest_first() {
        let all = vec![
            raw("1.3.0", Some("sha256:CC")),
            raw("1.0.0", Some("sha256:aa")),
            raw("1.1.0", Some("bb")),
            raw("1.2.0-rc.1", Some("sha256:dd")),
            raw("1.2.5", None),
            raw("2.0.0", Some("sha256:ee")),
            raw("1.4.0", Some("sha256:ff")),
        ];
        let got = passed_over(
            &all,
            &range("^1"),
            Some("1.0.0"),
            &chosen("1.4.0", Some("sha256:ff")),
        );
        let versions: Vec<(&str, &str)> = got
            .iter()
            .map(|o| (o.version.as_str(), o.revision.as_str()))
            .collect();
        // No pre-release (the range names none), none without a digest, nothing outside.
        assert_eq!(versions, [("1.1.0", "bb"), ("1.3.0", "cc")]);
        assert!(got.iter().all(|o| !o.verified));
        assert_eq!(got[1].digest, "sha256:cc");
        assert!(
            passed_over(&all, &range("^1"), None, &chosen("1.4.0", None)).is_empty(),
            "a first look records only what it deploys"
        );
        assert!(
            passed_over(
                &all,
                &Wanted::Exact("1.4.0".into()),
                Some("1.0.0"),
                &chosen("1.4.0", None)
            )
            .is_empty()
        );
    }

    #[test]
    fn an_index_digest_equal_to_the_head_downloads_nothing() {
        assert!(is_previous(
            &chosen("1.0.0", Some("sha256:ABCD")),
            Some("abcd")
        ));
        assert!(!is_previous(
            &chosen("1.0.0", Some("sha256:abcd")),
            Some("ef")
        ));
        assert!(!is_previous(&chosen("1.0.0", None), Some("abcd")));
        assert!(!is_previous(&chosen("1.0.0", Some("sha256:abcd")), None));
    }

    #[test]
    fn repository_failures_are_the_source_failures_they_are() {
        let url = "https://charts.example";
        let reason = |e| source_error(url, e).reason();
        assert_eq!(
            reason(ChartRepoError::Request {
                url: url.into(),
                reason: "error sending request: connection refused".into()
            }),
            "Unreachable"
        );
        assert_eq!(
            reason(ChartRepoError::Status {
                url: url.into(),
                status: 401
            }),
            "AuthFailed"
        );
        assert_eq!(
            reason(ChartRepoError::Digest {
                chart: "web 1.0.0".into(),
                expected: "sha256:aa".into(),
                actual: "sha256:bb".into()
            }),
            "ChartRefused"
        );
        assert_eq!(
            reason(ChartRepoError::Archive {
                chart: "web 1.0.0".into(),
                reason: "\"../x\" leaves the chart's directory".into()
            }),
            "ChartRefused"
        );
        assert_eq!(
            reason(ChartRepoError::TooLarge {
                url: url.into(),
                limit: 1
            }),
            "OverLimit"
        );
        let err = index_error(
            url,
            ChartIndexError::NoMatch {
                repository: url.into(),
                chart: "web".into(),
                wanted: "range ^9".into(),
                skipped: 0,
            },
        );
        assert_eq!(err.reason(), "MissingRef");
        assert_eq!(
            err.to_string(),
            "chart \"web\" range ^9 not found on https://charts.example"
        );
    }
}
