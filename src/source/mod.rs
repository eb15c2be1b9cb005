//! Owns Git sources: keeping a bare mirror of a remote in a local cache, resolving the App's ref to
//! a commit, and reporting every newly observed commit (with people, times, message, changed paths
//! and signature status), rewritten history and failures as plain data.
//!
//! Nothing here writes events: [`FetchOutcome`], [`ObservedCommit`] and [`SourceError`] carry every
//! datum the CommitObserved / HistoryRewritten / SourceFetchFailed events need, and the caller keeps
//! the App's last good revision when a fetch fails. gix is blocking; [`GitSource::fetch_async`] runs
//! it on tokio's blocking pool.
//!
//! Mapping onto events (the integration step): each [`ObservedCommit`] in
//! [`FetchOutcome::new_commits`] is one CommitObserved; [`FetchOutcome::history_rewritten`] is a
//! HistoryRewritten; [`FetchOutcome::cache_recovered`] is worth recording (the mirror was removed
//! and cloned again, and why); [`DeployDecision::Blocked`] is the signature policy refusing a head;
//! a [`SourceError`] is a SourceFetchFailed with [`SourceError::reason`] as its reason.
//!
//! Layout: [`access`] (credentials, CA bundle, ssh command), [`mirror`] (clone/fetch into the cache,
//! corruption recovery), [`refs`] (ref selection), [`history`] (new commits, rewrites, changed
//! paths), [`tree`] (files at a revision), [`signature`] (SSH/GPG verification) and [`webhook`]
//! (push notifications). A source whose URL is an HTTP(S) Helm chart repository follows one chart
//! there instead of a ref: [`chart`] (observing versions, keeping archives by digest), with
//! [`chart_index`] (`index.yaml`, choosing a version) and [`chart_repo`] (conditional requests,
//! checked downloads, safe unpacking). When a source is fetched (interval with jitter, webhooks) is the
//! agent's schedule (`agent::schedule`).

pub mod access;
pub mod allow;
pub mod chart;
pub mod chart_deps;
pub mod chart_index;
pub mod chart_oci;
pub mod chart_repo;
pub mod config;
pub mod cosign;
pub mod history;
pub mod mirror;
pub mod refs;
pub mod signature;
pub mod tree;
pub mod webhook;

use std::path::{Path, PathBuf};

pub use access::{Access, HttpCredentials, SecretSource, SshAccess};
pub use refs::RefSelector;
pub use signature::{SignatureMode, SignaturePolicy, SignatureStatus};

/// The name reckon gives a source (usually the App's name); webhooks and polls are routed by it.
pub type SourceId = String;

/// Everything needed to follow one Git source.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub id: SourceId,
    /// A local path, `file://`, `git://`, `http(s)://`, `ssh://` or scp-style `user@host:path`.
    pub url: String,
    pub reference: RefSelector,
    /// The App's directory inside the repository; empty for the root. Changed paths are reported
    /// only under it and [`GitSource::read_tree`] reads it.
    pub path: String,
    pub access: Access,
    pub signatures: SignaturePolicy,
}

/// A commit author or committer exactly as recorded in the commit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Person {
    pub name: String,
    pub email: String,
    /// Seconds since the Unix epoch (UTC).
    pub time: i64,
    /// The UTC offset the person's clock had, in seconds (e.g. 7200 for +0200).
    pub offset_seconds: i32,
}

impl Person {
    /// The time with its original offset, e.g. for display as the author saw it.
    pub fn time_with_offset(&self) -> Option<chrono::DateTime<chrono::FixedOffset>> {
        let offset = chrono::FixedOffset::east_opt(self.offset_seconds)?;
        chrono::DateTime::from_timestamp(self.time, 0).map(|t| t.with_timezone(&offset))
    }
}

/// One observed commit: the payload of a CommitObserved event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObservedCommit {
    pub sha: String,
    pub parents: Vec<String>,
    pub author: Person,
    pub committer: Person,
    /// The message, byte for byte (lossily decoded as UTF-8), up to `limits.commit_message_bytes`
    /// (beyond, cut with a marker line saying so).
    pub message: String,
    /// Repository paths added, modified or deleted against the first parent (against the empty tree
    /// for a root commit), only under the source's path, sorted; the first
    /// `limits.changed_paths` of them (a marker in the message counts the rest).
    pub changed_paths: Vec<String>,
    pub signature: SignatureStatus,
}

/// The old head is no longer an ancestor of the new one: someone rewrote history (force-push).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HistoryRewrite {
    pub old_head: String,
    pub new_head: String,
    /// The newest commit both histories share, if any (None also when the old head is gone).
    pub merge_base: Option<String>,
}

/// Whether the resolved head may be deployed under the source's signature policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeployDecision {
    Deploy {
        sha: String,
    },
    /// Under `require`, the head is unsigned or badly signed: the App keeps its last good revision.
    Blocked {
        sha: String,
        reason: String,
    },
}

/// What one fetch observed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FetchOutcome {
    /// The full ref name the selector resolved to (`refs/heads/main`, `refs/tags/v1.2.0`), or the
    /// SHA itself for an exact-commit selector.
    pub resolved_ref: String,
    /// The commit the selector resolved to now.
    pub head: String,
    /// The head the caller last observed (as passed in).
    pub previous_head: Option<String>,
    /// Commits new since `previous_head`, oldest first, following first parents from `head`. On the
    /// first observation (no previous head) only the head itself.
    pub new_commits: Vec<ObservedCommit>,
    /// True when more new commits existed than [`mirror::FetchOptions::max_new_commits`].
    pub new_commits_truncated: bool,
    pub history_rewritten: Option<HistoryRewrite>,
    /// The cache was unusable and was removed and cloned again; the reason it was unusable.
    pub cache_recovered: Option<String>,
    /// The head's signature status (also on its commit when the head is new).
    pub head_signature: SignatureStatus,
    pub decision: DeployDecision,
}

/// Why a fetch failed. Each variant is one SourceFetchFailed reason; the App keeps its last good
/// revision.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("remote {url} is unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("authentication to {url} failed: {detail}")]
    AuthFailed { url: String, detail: String },
    #[error("host key of {url} is unknown or changed, refusing to connect: {detail}")]
    HostKeyRejected { url: String, detail: String },
    #[error("TLS certificate of {url} is not trusted: {detail}")]
    TlsUntrusted { url: String, detail: String },
    #[error("{selector} not found on {url}")]
    MissingRef { url: String, selector: String },
    #[error("credentials for {url} unavailable: {detail}")]
    Credentials { url: String, detail: String },
    #[error("cache {path} is corrupt and could not be recovered: {detail}")]
    CorruptCache { path: PathBuf, detail: String },
    #[error("fetching {url} failed: {detail}")]
    Fetch { url: String, detail: String },
    #[error("reading {what} from the cache failed: {detail}")]
    Read { what: String, detail: String },
    /// The files under the App's path exceed a [`tree::TreeLimits`] bound.
    #[error("{what} is over a limit: {detail}")]
    Limit { what: String, detail: String },
    #[error("the fetch task failed: {0}")]
    Task(String),
    /// A chart archive that does not match its digest, or is hostile (paths outside its
    /// directory, links, too many files or bytes unpacked): not deployed.
    #[error("chart {chart} refused: {detail}")]
    ChartRefused { chart: String, detail: String },
}

impl SourceError {
    /// A short stable reason code for events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SourceError::Unreachable { .. } => "Unreachable",
            SourceError::AuthFailed { .. } => "AuthFailed",
            SourceError::HostKeyRejected { .. } => "HostKeyRejected",
            SourceError::TlsUntrusted { .. } => "TlsUntrusted",
            SourceError::MissingRef { .. } => "MissingRef",
            SourceError::Credentials { .. } => "Credentials",
            SourceError::CorruptCache { .. } => "CorruptCache",
            SourceError::Fetch { .. } => "FetchFailed",
            SourceError::Read { .. } => "ReadFailed",
            SourceError::Limit { .. } => "OverLimit",
            SourceError::Task(_) => "TaskFailed",
            SourceError::ChartRefused { .. } => "ChartRefused",
        }
    }
}

/// One followed source and its cache directory: a Git remote, or (with [`Self::with_chart`]) a
/// chart of a Helm chart repository, whose revisions are chart archives instead of commits.
#[derive(Debug, Clone)]
pub struct GitSource {
    spec: SourceSpec,
    cache_dir: PathBuf,
    options: mirror::FetchOptions,
    tree_limits: tree::TreeLimits,
    chart: Option<chart::ChartSpec>,
    chart_memo: chart::ChartMemo,
}

impl GitSource {
    /// `cache_root` holds one bare mirror per remote URL (see [`mirror::cache_dir_for`]).
    pub fn new(spec: SourceSpec, cache_root: &Path) -> Self {
        let cache_dir = mirror::cache_dir_for(cache_root, &spec.url, &spec.access.identity());
        Self {
            spec,
            cache_dir,
            options: mirror::FetchOptions::default(),
            tree_limits: tree::TreeLimits::default(),
            chart: None,
            chart_memo: chart::ChartMemo::default(),
        }
    }

    /// Bounds what [`Self::read_tree`] may load (defaults: [`tree::TreeLimits::default`]).
    pub fn with_tree_limits(mut self, limits: tree::TreeLimits) -> Self {
        self.tree_limits = limits;
        self
    }

    /// Reads, records and fetches within `limits` (`limits:` in `reckon.yaml`).
    pub fn with_input_limits(mut self, limits: &crate::config::InputLimits) -> Self {
        self.tree_limits = tree::TreeLimits {
            max_files: limits.files_per_render,
            max_bytes: limits.bytes_per_render,
            max_file_bytes: limits.bytes_per_file,
            max_depth: limits.tree_depth,
        };
        self.options.commit_message_bytes = limits.commit_message_bytes;
        self.options.changed_paths = limits.changed_paths;
        self.options.timeout = limits.fetch_timeout;
        self
    }

    pub fn with_options(mut self, options: mirror::FetchOptions) -> Self {
        self.options = options;
        self
    }

    pub fn spec(&self) -> &SourceSpec {
        &self.spec
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Fetches, resolves the ref and reports what is new since `previous_head`. Blocking.
    pub fn fetch(&self, previous_head: Option<&str>) -> Result<FetchOutcome, SourceError> {
        self.fetch_since(previous_head, std::time::Instant::now())
    }

    /// [`Self::fetch`] for a request made at `requested`: a network fetch of the mirror that
    /// started since then (for another App on the same remote) answers it from the mirror.
    pub fn fetch_since(
        &self,
        previous_head: Option<&str>,
        requested: std::time::Instant,
    ) -> Result<FetchOutcome, SourceError> {
        mirror::fetch(self, previous_head, requested)
    }

    /// [`Self::fetch`] on tokio's blocking pool (gix has no usable async transport).
    pub async fn fetch_async(
        &self,
        previous_head: Option<String>,
    ) -> Result<FetchOutcome, SourceError> {
        self.fetch_async_since(previous_head, std::time::Instant::now())
            .await
    }

    /// [`Self::fetch_since`] on tokio's blocking pool.
    pub async fn fetch_async_since(
        &self,
        previous_head: Option<String>,
        requested: std::time::Instant,
    ) -> Result<FetchOutcome, SourceError> {
        let this = self.clone();
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            this.fetch_since(previous_head.as_deref(), requested)
        })
        .await
        .map_err(|e| SourceError::Task(e.to_string()))?;
        crate::metrics::METRICS.observe_git_fetch(started.elapsed(), result.is_ok());
        result
    }

    /// The files under the source's path at `sha`, relative to that path, sorted. Blocking.
    /// For a chart repository source, the chart's files at that chart revision.
    pub fn read_tree(&self, sha: &str) -> Result<Vec<(String, Vec<u8>)>, SourceError> {
        if self.chart.is_some() {
            return self.chart_files(sha);
        }
        tree::read_tree(&self.cache_dir, sha, &self.spec.path, &self.tree_limits)
    }

    /// The whole repository at `sha`, read lazily: what a kustomize unit may reach beyond the
    /// source's path. Blocking.
    pub fn tree_at(&self, sha: &str) -> Result<tree::GitTree, SourceError> {
        if self.chart.is_some() {
            return Err(SourceError::Read {
                what: format!("revision {sha}"),
                detail: "a chart repository source has no Git tree: its revision is a chart".into(),
            });
        }
        tree::GitTree::open(&self.cache_dir, sha, &self.spec.path)
    }

    /// [`Self::read_tree`] on tokio's blocking pool.
    pub async fn read_tree_async(
        &self,
        sha: String,
    ) -> Result<Vec<(String, Vec<u8>)>, SourceError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.read_tree(&sha))
            .await
            .map_err(|e| SourceError::Task(e.to_string()))?
    }
}
