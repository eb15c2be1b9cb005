//! Owns the OCI half of the Helm chart sources: a chart in an OCI registry
//! (`oci://HOST/PATH/CHART`, as `helm push` puts it there), its versions (the repository's tags),
//! which tag an App asking for a version or a semver range gets, the manifest digest a tag stands
//! for (the version is pinned by that digest once seen), and the chart archive pulled by digest,
//! checked against the manifest (Helm's media types, the layer's size and SHA-256) under the same
//! limits as a chart repository's archive. Unpacking is [`super::chart_repo::unpack`]'s; turning
//! a chart into objects is `render::helm`'s.
//!
//! The registry protocol (token and basic auth, paged tag lists, content digests) is the ORAS
//! project's `oci-client`; this module adds only what Helm charts need on top of it.

use super::chart_index::Wanted;
use super::chart_repo::{ChartLimits, RepoAuth};
use super::cosign::{self, FoundSignature};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OciDescriptor, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Helm's media types (helm.sh/helm/v4/pkg/registry): a chart is one layer of the first,
/// described by a config of the second.
pub const CHART_LAYER_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
pub const CHART_CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.helm.config.v1+json";
/// A chart's config (its `Chart.yaml` as JSON) is small; a registry sending more is refused.
const CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ChartOciError {
    #[error("{url:?} is not an OCI chart reference: {reason}")]
    Url { url: String, reason: String },
    #[error("OCI registry {registry}: {reason}")]
    Client { registry: String, reason: String },
    #[error("OCI chart {chart}: {reason}")]
    Registry {
        chart: String,
        reason: String,
        cause: RegistryCause,
    },
    #[error("OCI chart {chart}: no tag matching {wanted}{}", skipped_note(*skipped))]
    NoMatch {
        chart: String,
        wanted: String,
        /// Tags that are not semver and could not be compared.
        skipped: usize,
    },
    #[error("OCI chart {chart}@{digest}: not a Helm chart: {reason}")]
    NotAChart {
        chart: String,
        digest: String,
        reason: String,
    },
    #[error(
        "OCI chart {chart}@{digest}: the layer is {size} bytes, more than {limit} (limits for charts)"
    )]
    TooLarge {
        chart: String,
        digest: String,
        size: u64,
        limit: u64,
    },
}

/// What kind of registry failure it was, for the source failure it is recorded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryCause {
    /// Nobody answered, or not in time.
    Unreachable,
    /// The registry's certificate is not trusted.
    Tls,
    /// 401/403, or the token exchange refused the credentials.
    Auth,
    Other,
}

impl RegistryCause {
    fn of(error: &OciDistributionError) -> RegistryCause {
        match error {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => RegistryCause::Auth,
            OciDistributionError::RequestError(e) => {
                let text = format!("{e:?}").to_ascii_lowercase();
                if text.contains("certificate") || text.contains("tls") {
                    RegistryCause::Tls
                } else if e.is_connect() || e.is_timeout() {
                    RegistryCause::Unreachable
                } else {
                    RegistryCause::Other
                }
            }
            _ => RegistryCause::Other,
        }
    }
}

fn skipped_note(skipped: usize) -> String {
    match skipped {
        0 => String::new(),
        n => format!(" ({n} tags that are not semver were not compared)"),
    }
}

/// Where a chart lives in a registry, from `oci://HOST[:PORT]/PATH/CHART`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartLocation {
    /// `HOST[:PORT]`.
    pub registry: String,
    /// `PATH/CHART` (the chart's name is its last segment, as Helm pushes it).
    pub repository: String,
}

impl ChartLocation {
    /// Parses an App's `oci://` URL. Refused: another scheme, credentials in the URL (they are
    /// given as auth, never written to the record), a tag or digest in the URL (the App's
    /// version or range chooses the tag), a query or fragment, an empty path.
    pub fn parse(url: &str) -> Result<ChartLocation, ChartOciError> {
        let refuse = |reason: &str| ChartOciError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix("oci://")
            .ok_or_else(|| refuse("it must start with oci://"))?;
        if rest.contains('@') {
            return Err(refuse(
                "credentials or a digest do not go in the URL: use auth, and the App's version",
            ));
        }
        if rest.contains(['?', '#', ' ']) {
            return Err(refuse(
                "a query, fragment or space is not part of a chart reference",
            ));
        }
        let (registry, repository) = rest
            .trim_end_matches('/')
            .split_once('/')
            .ok_or_else(|| refuse("it names no chart: oci://HOST/PATH/CHART"))?;
        if registry.is_empty() || repository.is_empty() || repository.split('/').any(str::is_empty)
        {
            return Err(refuse("it names no chart: oci://HOST/PATH/CHART"));
        }
        let last = repository.rsplit('/').next().unwrap_or_default();
        if last.contains(':') {
            return Err(refuse(
                "a tag does not go in the URL: use the App's version",
            ));
        }
        if repository != repository.to_ascii_lowercase() {
            return Err(refuse("OCI repository names are lower case"));
        }
        Ok(ChartLocation {
            registry: registry.to_string(),
            repository: repository.to_string(),
        })
    }

    /// The chart's name: the repository's last segment.
    pub fn chart(&self) -> &str {
        self.repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository)
    }

    fn reference(&self, tag_or_digest: Pinned<'_>) -> Reference {
        match tag_or_digest {
            Pinned::Tag(tag) => Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                tag.to_string(),
            ),
            Pinned::Digest(digest) => Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                digest.to_string(),
            ),
        }
    }

    fn display(&self) -> String {
        format!("oci://{}/{}", self.registry, self.repository)
    }
}

enum Pinned<'a> {
    Tag(&'a str),
    Digest(&'a str),
}

/// The chart version a tag names: Helm writes a version's `+` as `_` in the tag (OCI tags
/// have no `+`).
pub fn version_of_tag(tag: &str) -> String {
    tag.replace('_', "+")
}

/// The tag of `tags` an App wanting `wanted` gets: the exact version (a leading `v` on either
/// side ignored), or the highest matching the range. Pure.
pub fn choose_tag(chart: &str, tags: &[String], wanted: &Wanted) -> Result<String, ChartOciError> {
    let bare = |v: &str| v.strip_prefix('v').unwrap_or(v).to_string();
    let mut skipped = 0;
    let chosen = match wanted {
        Wanted::Exact(want) => tags
            .iter()
            .find(|t| bare(&version_of_tag(t)) == bare(want))
            .cloned(),
        Wanted::Range(req) => {
            let mut best: Option<(semver::Version, &String)> = None;
            for tag in tags {
                let Ok(version) = semver::Version::parse(&bare(&version_of_tag(tag))) else {
                    skipped += 1;
                    continue;
                };
                if req.matches(&version) && best.as_ref().is_none_or(|(b, _)| version > *b) {
                    best = Some((version, tag));
                }
            }
            best.map(|(_, tag)| tag.clone())
        }
    };
    chosen.ok_or_else(|| ChartOciError::NoMatch {
        chart: chart.to_string(),
        wanted: wanted.to_string(),
        skipped,
    })
}

/// The tags of `tags` a range also matches strictly between the `previous` version and the
/// `chosen` one, oldest first: the versions passed over since the last look, recorded as a chart
/// repository's are. None for an exact version or when the previous version is unknown (a first
/// look records only what it deploys). Pure.
pub fn passed_over_tags(
    tags: &[String],
    wanted: &Wanted,
    previous: Option<&str>,
    chosen: &str,
) -> Vec<String> {
    let parse = |v: &str| semver::Version::parse(v.strip_prefix('v').unwrap_or(v)).ok();
    let Wanted::Range(req) = wanted else {
        return Vec::new();
    };
    let (Some(previous), Some(chosen)) = (previous.and_then(parse), parse(chosen)) else {
        return Vec::new();
    };
    let mut between: Vec<(semver::Version, String)> = tags
        .iter()
        .filter_map(|tag| {
            let version = parse(&version_of_tag(tag))?;
            (req.matches(&version) && version > previous && version < chosen)
                .then(|| (version, tag.clone()))
        })
        .collect();
    between.sort();
    between.into_iter().map(|(_, tag)| tag).collect()
}

/// What a chart's manifest says, checked: Helm's config and exactly one chart layer.
#[derive(Debug, Clone)]
pub struct ChartManifest {
    pub config: OciDescriptor,
    pub layer: OciDescriptor,
}

/// Checks that a pulled manifest is a Helm chart's, and that its layer fits `limits`. Pure.
pub fn chart_manifest(
    chart: &str,
    digest: &str,
    manifest: &OciManifest,
    limits: &ChartLimits,
) -> Result<ChartManifest, ChartOciError> {
    let not_a_chart = |reason: String| ChartOciError::NotAChart {
        chart: chart.to_string(),
        digest: digest.to_string(),
        reason,
    };
    let OciManifest::Image(image) = manifest else {
        return Err(not_a_chart("the reference is an index of manifests".into()));
    };
    if image.config.media_type != CHART_CONFIG_MEDIA_TYPE {
        return Err(not_a_chart(format!(
            "its config is {:?}, not {CHART_CONFIG_MEDIA_TYPE}",
            image.config.media_type
        )));
    }
    let mut layers = image
        .layers
        .iter()
        .filter(|l| l.media_type == CHART_LAYER_MEDIA_TYPE);
    let layer = layers
        .next()
        .ok_or_else(|| not_a_chart(format!("it has no {CHART_LAYER_MEDIA_TYPE} layer")))?;
    if layers.next().is_some() {
        return Err(not_a_chart("it has more than one chart layer".into()));
    }
    let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
    if size > limits.archive_bytes {
        return Err(ChartOciError::TooLarge {
            chart: chart.to_string(),
            digest: digest.to_string(),
            size,
            limit: limits.archive_bytes,
        });
    }
    Ok(ChartManifest {
        config: image.config.clone(),
        layer: layer.clone(),
    })
}

/// The chart's metadata from its config blob (Helm writes `Chart.yaml` there as JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartConfig {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub app_version: Option<String>,
}

/// A chart pulled by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledChart {
    /// The manifest digest it was pulled by (what the App pins).
    pub digest: String,
    pub config: ChartConfig,
    /// The chart archive (`.tgz`), its SHA-256 checked against the manifest's layer.
    pub archive: Vec<u8>,
}

/// One chart in one OCI registry.
pub struct OciChart {
    location: ChartLocation,
    auth: RegistryAuth,
    limits: ChartLimits,
    client: Client,
    timeout: Duration,
}

impl OciChart {
    /// `url`: `oci://HOST/PATH/CHART`; `ca_file`: PEM certificates to trust besides the
    /// system's; `plain_http`: talk HTTP instead of HTTPS (Helm's `--plain-http`, for a registry
    /// on a private network); every registry call ends within `timeout`.
    pub fn new(
        url: &str,
        auth: RepoAuth,
        ca_file: Option<&Path>,
        plain_http: bool,
        limits: ChartLimits,
        timeout: Duration,
    ) -> Result<OciChart, ChartOciError> {
        let location = ChartLocation::parse(url)?;
        let client_err = |reason: String| ChartOciError::Client {
            registry: location.registry.clone(),
            reason,
        };
        let mut extra_root_certificates = Vec::new();
        if let Some(ca) = ca_file {
            let data =
                std::fs::read(ca).map_err(|e| client_err(format!("{}: {e}", ca.display())))?;
            extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let config = ClientConfig {
            protocol: if plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates,
            // A chart is one manifest: an index of platforms is refused, not resolved.
            platform_resolver: None,
            read_timeout: Some(timeout),
            connect_timeout: Some(timeout),
            ..ClientConfig::default()
        };
        let auth = match auth {
            RepoAuth::None => RegistryAuth::Anonymous,
            RepoAuth::Basic { username, password } => RegistryAuth::Basic(username, password),
            RepoAuth::Bearer(token) => RegistryAuth::Bearer(token),
        };
        Ok(OciChart {
            location,
            auth,
            limits,
            client: Client::new(config),
            timeout,
        })
    }

    pub fn location(&self) -> &ChartLocation {
        &self.location
    }

    fn registry_err(&self, error: impl std::fmt::Display) -> ChartOciError {
        self.registry_failure(error, RegistryCause::Other)
    }

    fn registry_failure(
        &self,
        error: impl std::fmt::Display,
        cause: RegistryCause,
    ) -> ChartOciError {
        ChartOciError::Registry {
            chart: self.location.display(),
            reason: error.to_string(),
            cause,
        }
    }

    fn client_failure(&self, error: OciDistributionError) -> ChartOciError {
        let cause = RegistryCause::of(&error);
        self.registry_failure(format!("{error}{}", hint(&error)), cause)
    }

    /// Runs one registry call within the timeout (reads and connects have their own; this
    /// bounds a registry that trickles).
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, OciDistributionError>>,
    ) -> Result<T, ChartOciError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(|e| self.client_failure(e)),
            Err(_) => Err(self.registry_failure(
                format!("no answer within {:?}", self.timeout),
                RegistryCause::Unreachable,
            )),
        }
    }

    /// Every tag of the chart's repository (the registry pages them; all pages are read).
    pub async fn tags(&self) -> Result<Vec<String>, ChartOciError> {
        let reference = self.location.reference(Pinned::Tag("latest"));
        // A registry that pages forever is bounded like an index of that many versions.
        const PAGE: usize = 1000;
        const MAX_TAGS: usize = 100_000;
        let mut tags: Vec<String> = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = self
                .bounded(
                    self.client
                        .list_tags(&reference, &self.auth, Some(PAGE), last.as_deref()),
                )
                .await?;
            let n = page.tags.len();
            tags.extend(page.tags);
            if n < PAGE || tags.len() > MAX_TAGS {
                break;
            }
            last = tags.last().cloned();
        }
        if tags.len() > MAX_TAGS {
            return Err(self.registry_err(format!("more than {MAX_TAGS} tags")));
        }
        Ok(tags)
    }

    /// The manifest digest `tag` stands for now (one `HEAD` request where the registry answers
    /// it with the digest).
    pub async fn resolve(&self, tag: &str) -> Result<String, ChartOciError> {
        let reference = self.location.reference(Pinned::Tag(tag));
        self.bounded(self.client.fetch_manifest_digest(&reference, &self.auth))
            .await
    }

    /// The chart at `digest`: manifest checked, config read, archive pulled and its digest
    /// checked by the client as it streams, bounded by the layer size the manifest declared.
    pub async fn pull(&self, digest: &str) -> Result<PulledChart, ChartOciError> {
        let reference = self.location.reference(Pinned::Digest(digest));
        let (manifest, pulled_digest) = self
            .bounded(self.client.pull_manifest(&reference, &self.auth))
            .await?;
        if pulled_digest != digest {
            return Err(self.registry_err(format!(
                "asked for manifest {digest}, the registry sent {pulled_digest}"
            )));
        }
        let chart = self.location.display();
        let checked = chart_manifest(&chart, digest, &manifest, &self.limits)?;
        let config_limit = CONFIG_BYTES.min(u64::try_from(checked.config.size).unwrap_or(0));
        let config = self.blob(&reference, &checked.config, config_limit).await?;
        let config: ChartConfig =
            serde_json::from_slice(&config).map_err(|e| ChartOciError::NotAChart {
                chart: chart.clone(),
                digest: digest.to_string(),
                reason: format!("its config is not a chart's metadata: {e}"),
            })?;
        let layer_limit = u64::try_from(checked.layer.size).unwrap_or(0);
        let archive = self.blob(&reference, &checked.layer, layer_limit).await?;
        Ok(PulledChart {
            digest: digest.to_string(),
            config,
            archive,
        })
    }

    /// Every cosign signature stored for the manifest `digest`: Sigstore bundles among its OCI
    /// referrers (the registry's referrers API, or the `sha256-<hex>` tag where it has none) and
    /// simple signatures under the `sha256-<hex>.sig` tag. What they prove is
    /// [`super::cosign::check`]'s.
    pub async fn signatures(&self, digest: &str) -> Result<Vec<FoundSignature>, ChartOciError> {
        let mut found = self.bundles(digest).await?;
        found.extend(self.simple_signatures(digest).await?);
        Ok(found)
    }

    async fn bundles(&self, digest: &str) -> Result<Vec<FoundSignature>, ChartOciError> {
        let subject = self.location.reference(Pinned::Digest(digest));
        self.client
            .store_auth_if_needed(subject.resolve_registry(), &self.auth)
            .await;
        let referrers = self
            .bounded(
                self.client
                    .pull_referrers(&subject, Some(cosign::BUNDLE_MEDIA_TYPE)),
            )
            .await?;
        let mut found = Vec::new();
        for entry in &referrers.manifests {
            let Some(image) = self.manifest_if_any(Pinned::Digest(&entry.digest)).await? else {
                continue;
            };
            let reference = self.location.reference(Pinned::Digest(&entry.digest));
            for layer in image
                .layers
                .iter()
                .filter(|l| l.media_type == cosign::BUNDLE_MEDIA_TYPE)
            {
                let limit = cosign::BUNDLE_BYTES.min(u64::try_from(layer.size).unwrap_or(0));
                found.push(FoundSignature::Bundle(
                    self.blob(&reference, layer, limit).await?,
                ));
            }
        }
        Ok(found)
    }

    async fn simple_signatures(&self, digest: &str) -> Result<Vec<FoundSignature>, ChartOciError> {
        let tag = cosign::signature_tag(digest);
        let Some(image) = self.manifest_if_any(Pinned::Tag(&tag)).await? else {
            return Ok(Vec::new());
        };
        let reference = self.location.reference(Pinned::Tag(&tag));
        let mut found = Vec::new();
        for layer in &image.layers {
            let signature = layer
                .annotations
                .as_ref()
                .and_then(|a| a.get(cosign::SIGNATURE_ANNOTATION));
            let (true, Some(signature)) = (
                layer.media_type == cosign::SIMPLE_SIGNING_MEDIA_TYPE,
                signature,
            ) else {
                continue;
            };
            let limit = cosign::PAYLOAD_BYTES.min(u64::try_from(layer.size).unwrap_or(0));
            found.push(FoundSignature::SimpleSigning {
                payload: self.blob(&reference, layer, limit).await?,
                signature: signature.clone(),
            });
        }
        Ok(found)
    }

    /// The image manifest at `at`, or none when the registry has no such manifest (or it is an
    /// index, which no signature is).
    async fn manifest_if_any(
        &self,
        at: Pinned<'_>,
    ) -> Result<Option<oci_client::manifest::OciImageManifest>, ChartOciError> {
        let reference = self.location.reference(at);
        let pulled = tokio::time::timeout(
            self.timeout,
            self.client.pull_manifest(&reference, &self.auth),
        )
        .await
        .map_err(|_| {
            self.registry_failure(
                format!("no answer within {:?}", self.timeout),
                RegistryCause::Unreachable,
            )
        })?;
        match pulled {
            Ok((OciManifest::Image(image), _)) => Ok(Some(image)),
            Ok((OciManifest::ImageIndex(_), _)) => Ok(None),
            Err(e) if manifest_unknown(&e) => Ok(None),
            Err(e) => Err(self.client_failure(e)),
        }
    }

    /// The digest of the chart layer in the manifest `digest` (the manifest alone is read).
    pub async fn layer_digest(&self, digest: &str) -> Result<String, ChartOciError> {
        let reference = self.location.reference(Pinned::Digest(digest));
        let (manifest, _) = self
            .bounded(self.client.pull_manifest(&reference, &self.auth))
            .await?;
        let checked = chart_manifest(&self.location.display(), digest, &manifest, &self.limits)?;
        Ok(checked.layer.digest)
    }

    /// One blob, no more than `limit` bytes (the size the manifest declared, itself bounded).
    async fn blob(
        &self,
        reference: &Reference,
        descriptor: &OciDescriptor,
        limit: u64,
    ) -> Result<Vec<u8>, ChartOciError> {
        let mut out = Bounded {
            bytes: Vec::new(),
            limit,
        };
        self.bounded(self.client.pull_blob(reference, descriptor, &mut out))
            .await?;
        Ok(out.bytes)
    }
}

/// Whether the registry said the manifest does not exist (404 or `MANIFEST_UNKNOWN`).
fn manifest_unknown(error: &OciDistributionError) -> bool {
    match error {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| e.code == oci_client::errors::OciErrorCode::ManifestUnknown),
        _ => false,
    }
}

/// What to check, for the errors whose text does not say it.
fn hint(error: &OciDistributionError) -> &'static str {
    match error {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => " (check the registry's credentials)",
        _ => "",
    }
}

/// An in-memory writer that fails past `limit` bytes, so a registry cannot send more than the
/// manifest declared whatever its `Content-Length` says.
struct Bounded {
    bytes: Vec<u8>,
    limit: u64,
}

impl tokio::io::AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if (self.bytes.len() + buf.len()) as u64 > self.limit {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "the blob is larger than its declared {} bytes",
                self.limit
            ))));
        }
        self.bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::manifest::OciImageManifest;

    #[test]
    fn an_oci_url_names_registry_and_repository_and_nothing_else() {
        let at = ChartLocation::parse("oci://127.0.0.1:5000/charts/web").unwrap();
        assert_eq!(
            (at.registry.as_str(), at.repository.as_str(), at.chart()),
            ("127.0.0.1:5000", "charts/web", "web")
        );
        assert_eq!(
            ChartLocation::parse("oci://ghcr.io/web/")
                .unwrap()
                .repository,
            "web"
        );
        for bad in [
            "https://ghcr.io/charts/web",
            "oci://user:secret@ghcr.io/charts/web",
            "oci://ghcr.io/charts/web@sha256:0000",
            "oci://ghcr.io/charts/web:1.0.0",
            "oci://ghcr.io",
            "oci://ghcr.io//web",
            "oci://ghcr.io/charts/web?x=1",
            "oci://ghcr.io/Charts/Web",
        ] {
            assert!(
                matches!(ChartLocation::parse(bad), Err(ChartOciError::Url { .. })),
                "{bad} refused"
            );
        }
    }

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn the_highest_matching_tag_is_chosen_and_helms_underscore_is_a_plus() {
        let all = tags(&[
            "1.0.0",
            "1.2.0",
            "2.0.0",
            "latest",
            "1.2.1_build.7",
            "v1.1.0",
        ]);
        let range = Wanted::Range(">=1.0.0, <2".parse().unwrap());
        assert_eq!(choose_tag("web", &all, &range).unwrap(), "1.2.1_build.7");
        assert_eq!(
            choose_tag("web", &all, &Wanted::Exact("1.1.0".into())).unwrap(),
            "v1.1.0"
        );
        assert_eq!(
            choose_tag("web", &all, &Wanted::Exact("1.2.1+build.7".into())).unwrap(),
            "1.2.1_build.7"
        );
        let err = choose_tag("web", &all, &Wanted::Range(">=3".parse().unwrap())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "OCI chart web: no tag matching range >=3 (1 tags that are not semver were not compared)"
        );
    }

    #[test]
    fn tags_passed_over_are_the_matching_ones_strictly_between_oldest_first() {
        let all = tags(&[
            "1.3.0",
            "1.0.0",
            "v1.1.0",
            "1.2.1_build.7",
            "2.0.0",
            "latest",
            "1.2.0",
        ]);
        let range = Wanted::Range(">=1.0.0, <2".parse().unwrap());
        assert_eq!(
            passed_over_tags(&all, &range, Some("1.0.0"), "1.3.0"),
            ["v1.1.0", "1.2.0", "1.2.1_build.7"]
        );
        // Nothing between neighbours, nothing before a first look, nothing for an exact version.
        assert!(passed_over_tags(&all, &range, Some("1.2.1+build.7"), "1.3.0").is_empty());
        assert!(passed_over_tags(&all, &range, None, "1.3.0").is_empty());
        assert!(
            passed_over_tags(&all, &Wanted::Exact("1.3.0".into()), Some("1.0.0"), "1.3.0")
                .is_empty()
        );
        // A range narrower than the tags between: only what it matches.
        let narrow = Wanted::Range(">=1.0.0, <1.2".parse().unwrap());
        assert_eq!(
            passed_over_tags(&all, &narrow, Some("1.0.0"), "1.3.0"),
            ["v1.1.0"]
        );
    }

    fn descriptor(media_type: &str, size: i64) -> OciDescriptor {
        OciDescriptor {
            media_type: media_type.into(),
            digest: "sha256:00".into(),
            size,
            ..OciDescriptor::default()
        }
    }

    fn manifest(config: &str, layers: &[(&str, i64)]) -> OciManifest {
        OciManifest::Image(OciImageManifest {
            config: descriptor(config, 200),
            layers: layers.iter().map(|(t, s)| descriptor(t, *s)).collect(),
            ..OciImageManifest::default()
        })
    }

    #[test]
    fn only_a_helm_chart_manifest_within_the_limits_is_accepted() {
        let limits = ChartLimits::default();
        let check = |m: &OciManifest| chart_manifest("web", "sha256:ab", m, &limits);
        let ok = manifest(CHART_CONFIG_MEDIA_TYPE, &[(CHART_LAYER_MEDIA_TYPE, 4096)]);
        assert_eq!(check(&ok).unwrap().layer.size, 4096);
        // A provenance layer beside the chart is fine.
        let with_prov = manifest(
            CHART_CONFIG_MEDIA_TYPE,
            &[
                (CHART_LAYER_MEDIA_TYPE, 4096),
                ("application/vnd.cncf.helm.chart.provenance.v1.prov", 800),
            ],
        );
        assert!(check(&with_prov).is_ok());
        let image = manifest(
            "application/vnd.oci.image.config.v1+json",
            &[("application/vnd.oci.image.layer.v1.tar+gzip", 4096)],
        );
        assert!(matches!(
            check(&image),
            Err(ChartOciError::NotAChart { .. })
        ));
        let no_layer = manifest(CHART_CONFIG_MEDIA_TYPE, &[]);
        assert!(matches!(
            check(&no_layer),
            Err(ChartOciError::NotAChart { .. })
        ));
        let two = manifest(
            CHART_CONFIG_MEDIA_TYPE,
            &[(CHART_LAYER_MEDIA_TYPE, 10), (CHART_LAYER_MEDIA_TYPE, 10)],
        );
        assert!(matches!(check(&two), Err(ChartOciError::NotAChart { .. })));
        let huge = manifest(
            CHART_CONFIG_MEDIA_TYPE,
            &[(CHART_LAYER_MEDIA_TYPE, 17 << 20)],
        );
        assert!(matches!(
            check(&huge),
            Err(ChartOciError::TooLarge { size, .. }) if size == 17 << 20
        ));
    }

    #[tokio::test]
    async fn a_blob_longer_than_declared_is_refused_as_it_streams() {
        use tokio::io::AsyncWriteExt;
        let mut out = Bounded {
            bytes: Vec::new(),
            limit: 8,
        };
        out.write_all(b"12345678").await.unwrap();
        assert!(out.write_all(b"9").await.is_err());
        assert_eq!(out.bytes, b"12345678");
    }
}
