//! Owns the cache: one bare mirror per remote URL under the cache root, brought up to date by
//! fetching every branch and tag (the first fetch into an empty mirror is the clone), pruned of refs
//! the remote deleted, checked for readability, and removed and cloned again when corrupt.
//!
//! Invariants: after a successful fetch, `refs/heads/*` and `refs/tags/*` equal the remote's, and
//! `HEAD` points at the remote's default branch. Objects of rewritten history stay (no gc), so the
//! previous head of a force-pushed branch can still be compared against.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use gix::bstr::ByteSlice;
use sha2::Digest;

use super::{DeployDecision, FetchOutcome, GitSource, SourceError, history, refs, signature};

/// Tunables for one fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// At most this many new commits are reported per fetch (the newest ones); a push of a huge
    /// imported history must not produce an unbounded event batch.
    pub max_new_commits: usize,
    /// Bytes of each commit message recorded (`limits.commit_message_bytes`).
    pub commit_message_bytes: usize,
    /// Changed paths recorded per commit (`limits.changed_paths`).
    pub changed_paths: usize,
    /// Longest one fetch may take (`limits.fetch_timeout`).
    pub timeout: std::time::Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        let limits = crate::config::InputLimits::default();
        Self {
            max_new_commits: 1000,
            commit_message_bytes: limits.commit_message_bytes,
            changed_paths: limits.changed_paths,
            timeout: limits.fetch_timeout,
        }
    }
}

/// `<root>/<last URL segment>-<16 hex of sha256(url, credential identity)>`: stable per URL and
/// credentials, readable; two URLs never share a mirror, and neither do two credential
/// identities of one URL (an App without credentials is never served what another App fetched
/// with them). Without credentials the digest is the URL's alone, as before credentials were
/// part of the key, so existing anonymous mirrors keep their place.
pub fn cache_dir_for(root: &Path, url: &str, identity: &str) -> PathBuf {
    let digest = if identity.is_empty() {
        sha2::Sha256::digest(url.as_bytes())
    } else {
        sha2::Sha256::digest(format!("{url}\0{identity}").as_bytes())
    };
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let tail: String = url
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("repo")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    root.join(format!("{tail}-{hex}"))
}

/// Why one attempt failed: either for good, or because the cache looks corrupt (worth one reclone).
enum AttemptError {
    Final(SourceError),
    Corrupt(String),
}

/// What this process knows about a mirror, kept under its lock.
#[derive(Default)]
pub(crate) struct MirrorState {
    /// When the last successful network fetch into it started, and the remote's default branch
    /// it reported. A fetch requested before that instant is answered from the mirror without
    /// going to the network again: the remote was read after the request was made. This is
    /// what lets a thousand Apps on one repository cost one fetch per poll round, not a
    /// thousand.
    fetched: Option<(Instant, Option<String>)>,
    /// The mirror opened for reading, shared by every tree read until the next network fetch:
    /// opening reads the repository's config and pack directory each time, and a thousand Apps
    /// reading their trees each pass spent 3% of the agent's CPU on it. A fetch (which holds the
    /// lock alone) drops it, so reads after it see its packs and refs from a fresh open.
    opened: Mutex<Option<gix::ThreadSafeRepository>>,
}

impl MirrorState {
    /// The mirror at `dir`, opened once and shared (see `opened`); a thread-local handle with its
    /// own object cache. Called under the shared lock.
    pub(crate) fn repository(&self, dir: &Path) -> Result<gix::Repository, String> {
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(repo) = opened.as_ref() {
            return Ok(repo.to_thread_local());
        }
        let repo = gix::ThreadSafeRepository::open(dir).map_err(|e| chain(&e))?;
        let local = repo.to_thread_local();
        *opened = Some(repo);
        Ok(local)
    }

    /// Under the exclusive lock, before the mirror is written: the next read opens it again.
    fn forget_opened(&mut self) {
        *self.opened.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The remote default branch of a network fetch that started after `requested`, if any.
    fn fresh_since(&self, requested: Instant) -> Option<Option<String>> {
        self.fetched
            .as_ref()
            .filter(|(started, _)| *started >= requested)
            .map(|(_, default)| default.clone())
    }
}

/// One lock per mirror directory in this process: two Apps on the same remote share a mirror, and
/// a fetch that prunes refs or wipes a corrupt mirror must not run under another's feet. Readers
/// (tree reads, and fetches answered from the mirror) share it; network fetches hold it alone.
pub(crate) fn lock_for(dir: &Path) -> Arc<RwLock<MirrorState>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<RwLock<MirrorState>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    locks.entry(dir.to_path_buf()).or_default().clone()
}

/// Fetches, unless a network fetch of the mirror started at or after `requested` (when the
/// fetch was asked for: a poll's due time, a webhook's arrival): its result is as fresh as the
/// request needs, and the outcome is read from the mirror.
pub(crate) fn fetch(
    src: &GitSource,
    previous_head: Option<&str>,
    requested: Instant,
) -> Result<FetchOutcome, SourceError> {
    let lock = lock_for(&src.cache_dir);
    // Answered from the mirror under the shared lock when a fetch started after this request:
    // nothing is written then, so many Apps read at once.
    {
        // A panic in another fetch leaves no half-state the next one cannot handle: ignore poison.
        let state = lock.read().unwrap_or_else(|p| p.into_inner());
        if let Some(default) = state.fresh_since(requested) {
            match attempt(src, previous_head, Some(default)) {
                Ok((outcome, _)) => return Ok(outcome),
                Err(AttemptError::Final(e)) => return Err(e),
                // Damage found while reading: the exclusive path below clones again.
                Err(AttemptError::Corrupt(_)) => {}
            }
        }
    }
    let mut state = lock.write().unwrap_or_else(|p| p.into_inner());
    state.forget_opened();
    // Another fetch may have run while this one waited for the lock.
    let fresh = state.fresh_since(requested);
    let started = Instant::now();
    match attempt(src, previous_head, fresh.clone()) {
        Ok((outcome, default)) => {
            if fresh.is_none() {
                state.fetched = Some((started, default));
            }
            Ok(outcome)
        }
        Err(AttemptError::Final(e)) => Err(e),
        Err(AttemptError::Corrupt(reason)) => {
            tracing::warn!(cache = %src.cache_dir.display(), %reason, "corrupt Git cache, cloning again");
            state.fetched = None;
            remove_cache(&src.cache_dir)?;
            let started = Instant::now();
            match attempt(src, previous_head, None) {
                Ok((mut outcome, default)) => {
                    state.fetched = Some((started, default));
                    outcome.cache_recovered = Some(reason);
                    Ok(outcome)
                }
                Err(AttemptError::Final(e)) => Err(e),
                Err(AttemptError::Corrupt(detail)) => Err(SourceError::CorruptCache {
                    path: src.cache_dir.clone(),
                    detail,
                }),
            }
        }
    }
}

fn remove_cache(dir: &Path) -> Result<(), SourceError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SourceError::CorruptCache {
            path: dir.into(),
            detail: format!("could not remove it: {e}"),
        }),
    }
}

/// One fetch and observation. `fresh`: the mirror was fetched after this request was made
/// (with the remote default branch it reported), so the network step is skipped. Returns the
/// outcome and the remote's default branch.
fn attempt(
    src: &GitSource,
    previous_head: Option<&str>,
    fresh: Option<Option<String>>,
) -> Result<(FetchOutcome, Option<String>), AttemptError> {
    let spec = &src.spec;
    let url = spec.url.as_str();
    let final_err = AttemptError::Final;
    let credentials = spec.access.resolved_http().map_err(|detail| {
        final_err(SourceError::Credentials {
            url: url.into(),
            detail,
        })
    })?;
    let backend = spec
        .access
        .http_backend(src.options.timeout)
        .map_err(|detail| {
            final_err(SourceError::Credentials {
                url: url.into(),
                detail,
            })
        })?;
    // ssh's own log for this attempt; see Access::ssh_command.
    let scratch = tempfile::tempdir().map_err(|e| {
        final_err(SourceError::Fetch {
            url: url.into(),
            detail: format!("temporary directory: {e}"),
        })
    })?;
    let ssh_log = scratch.path().join("ssh.log");
    let overrides = spec.access.config_overrides(&ssh_log);

    let existed = src.cache_dir.join("HEAD").exists() || src.cache_dir.join("objects").exists();
    let repo = open_or_init(&src.cache_dir, &overrides).map_err(|e| {
        if existed {
            AttemptError::Corrupt(format!("opening the mirror failed: {e}"))
        } else {
            final_err(SourceError::Fetch {
                url: url.into(),
                detail: format!("creating the mirror at {}: {e}", src.cache_dir.display()),
            })
        }
    })?;

    let fetched = match fresh {
        Some(default) => Ok(default),
        None => fetch_into(&repo, url, credentials, backend, src.options.timeout),
    };
    let remote_default = match fetched {
        Ok(d) => d,
        Err(detail) => {
            let ssh = std::fs::read_to_string(&ssh_log).unwrap_or_default();
            let err = classify(url, &detail, &ssh);
            // A failure that names the mirror's own data (packs, objects, refs, lock files left by
            // a killed fetch) is the mirror's fault: worth one fresh clone. Anything else is
            // reported as is, and the mirror kept for the next try.
            return Err(match err {
                SourceError::Fetch { detail, .. } if existed && looks_local(&detail) => {
                    AttemptError::Corrupt(format!("fetch failed: {detail}"))
                }
                other => final_err(other),
            });
        }
    };

    let (resolved_ref, head) = refs::resolve(&repo, &spec.reference, remote_default.as_deref())
        .map_err(|e| match e {
            refs::ResolveError::Missing(selector) => final_err(SourceError::MissingRef {
                url: url.into(),
                selector,
            }),
            refs::ResolveError::Unreadable(detail) => AttemptError::Corrupt(detail),
        })?;
    // A mirror whose refs are fine but whose objects are damaged fails here, not later in render.
    check_readable(&repo, head).map_err(AttemptError::Corrupt)?;

    let verifier = signature::Verifier::new(&spec.signatures);
    let observed = history::observe(
        &repo,
        head,
        previous_head,
        &spec.path,
        &history::Bounds {
            commits: src.options.max_new_commits,
            message_bytes: src.options.commit_message_bytes,
            changed_paths: src.options.changed_paths,
        },
        &verifier,
    )
    .map_err(AttemptError::Corrupt)?;

    let head_hex = head.to_string();
    // The head's status is usually already known from the walk; verify it only when it is not new.
    let head_signature = match observed.commits.last() {
        Some(c) if c.sha == head_hex => c.signature.clone(),
        _ => {
            let commit = repo
                .find_commit(head)
                .map_err(|e| AttemptError::Corrupt(format!("head commit {head}: {}", chain(&e))))?;
            verifier.verify(&commit.data, head)
        }
    };
    let decision = match signature::block_reason(&spec.signatures, &head_signature) {
        None => DeployDecision::Deploy {
            sha: head_hex.clone(),
        },
        Some(reason) => DeployDecision::Blocked {
            sha: head_hex.clone(),
            reason,
        },
    };
    Ok((
        FetchOutcome {
            resolved_ref,
            head: head_hex,
            previous_head: previous_head.map(str::to_string),
            new_commits: observed.commits,
            new_commits_truncated: observed.truncated,
            history_rewritten: observed.rewrite,
            cache_recovered: None,
            head_signature,
            decision,
        },
        remote_default,
    ))
}

fn open_or_init(dir: &Path, overrides: &[String]) -> Result<gix::Repository, String> {
    let open = gix::open::Options::default().config_overrides(overrides.iter().map(String::as_str));
    if dir.join("HEAD").exists() {
        let repo = gix::open_opts(dir, open).map_err(|e| chain(&e))?;
        if !repo.is_bare() {
            return Err("the cache is not a bare repository".into());
        }
        Ok(repo)
    } else {
        if dir.exists() {
            // A half-created mirror (e.g. killed during the first clone) is started over.
            std::fs::remove_dir_all(dir).map_err(|e| e.to_string())?;
        }
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        gix::ThreadSafeRepository::init_opts(dir, gix::create::Kind::Bare, Default::default(), open)
            .map(|r| r.to_thread_local())
            .map_err(|e| chain(&e))
    }
}

/// The full error chain, `outer: inner: ...`; gix's errors put the useful part deep inside.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let s = inner.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = inner.source();
    }
    out
}

/// Fetches all branches and tags (plus HEAD, to learn the default branch), then prunes refs the
/// remote no longer has and points HEAD at the remote's default branch. Returns that branch.
fn fetch_into(
    repo: &gix::Repository,
    url: &str,
    credentials: Option<(String, String)>,
    backend: super::access::HttpBackend,
    timeout: std::time::Duration,
) -> Result<Option<String>, String> {
    // The pack transfer checks this flag between reads; a watchdog sets it at the deadline (each
    // HTTP request is bounded by the backend's own timeout, ssh by its ServerAlive options).
    let interrupt = Arc::new(AtomicBool::new(false));
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let flag = interrupt.clone();
    let started = std::time::Instant::now();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(timeout) {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let deadline = started + timeout;
    let result = fetch_connected(repo, url, credentials, backend, &interrupt, deadline);
    drop(done);
    // The watchdog's flag, or an HTTP request that ran into the same deadline first.
    let timed_out =
        interrupt.load(std::sync::atomic::Ordering::SeqCst) || started.elapsed() >= timeout;
    result.map_err(|detail| {
        if timed_out {
            timed_out_detail(timeout)
        } else {
            detail
        }
    })
}

/// Why a fetch past its deadline failed, whatever gix said when it was stopped.
fn timed_out_detail(timeout: std::time::Duration) -> String {
    format!(
        "the fetch did not finish within {} (limits.fetch_timeout)",
        crate::config::duration::format(timeout)
    )
}

fn fetch_connected(
    repo: &gix::Repository,
    url: &str,
    credentials: Option<(String, String)>,
    backend: super::access::HttpBackend,
    interrupt: &AtomicBool,
    deadline: std::time::Instant,
) -> Result<Option<String>, String> {
    let e = |e: gix::Error| chain(&e);
    let remote = repo
        .remote_at(url)
        .map_err(e)?
        .with_refspecs(
            ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
            gix::remote::Direction::Fetch,
        )
        .map_err(e)?
        // Tags arrive through the explicit refspec; auto-following would only duplicate work.
        .with_fetch_tags(gix::remote::fetch::Tags::None);
    let (remote_url, version) = remote
        .sanitized_url_and_version(gix::remote::Direction::Fetch)
        .map_err(e)?;
    let mut connection = if remote_url.scheme == gix::url::Scheme::Git {
        remote.to_connection_with_transport(git_daemon(&remote_url, version, deadline)?)
    } else {
        remote.connect(gix::remote::Direction::Fetch).map_err(e)?
    };
    // Always set: without it gix would consult git's credential helpers and could prompt.
    connection.set_credentials(move |action| match (action, &credentials) {
        (gix::credentials::helper::Action::Get(ctx), Some((user, password))) => {
            Ok(Some(gix::credentials::protocol::Outcome {
                identity: gix::sec::identity::Account {
                    username: user.clone(),
                    password: password.clone(),
                    oauth_refresh_token: None,
                },
                next: ctx.into(),
            }))
        }
        _ => Ok(None),
    });
    {
        let mut options = repo.transport_options(url, None).map_err(e)?.and_then(|o| {
            o.downcast::<gix::protocol::transport::client::blocking_io::http::Options>()
                .ok()
        });
        if let Some(options) = options.as_mut() {
            options.backend = Some(backend);
            connection.set_transport_options(options.clone());
        }
    }
    let head_spec = gix::refspec::parse("HEAD".into(), gix::refspec::parse::Operation::Fetch)
        .map_err(|err| err.to_string())?
        .to_owned();
    let ref_map_options = gix::remote::ref_map::Options {
        extra_refspecs: vec![head_spec],
        ..Default::default()
    };
    let outcome = connection
        .prepare_fetch(gix::progress::Discard, ref_map_options)
        .map_err(e)?
        .receive(gix::progress::Discard, interrupt)
        .map_err(e)?;

    let mut advertised = HashSet::new();
    let mut default_branch = None;
    for r in &outcome.ref_map.remote_refs {
        use gix::protocol::handshake::Ref;
        match r {
            Ref::Symbolic {
                full_ref_name,
                target,
                ..
            }
            | Ref::Unborn {
                full_ref_name,
                target,
            } if full_ref_name == "HEAD" => {
                default_branch = Some(target.to_str_lossy().into_owned());
            }
            Ref::Peeled { full_ref_name, .. }
            | Ref::Direct { full_ref_name, .. }
            | Ref::Symbolic { full_ref_name, .. } => {
                advertised.insert(full_ref_name.to_str_lossy().into_owned());
            }
            Ref::Unborn { .. } => {}
        }
    }
    prune_and_set_head(repo, &advertised, default_branch.as_deref())?;
    Ok(default_branch)
}

/// A `git://` connection whose socket gives up at the fetch's deadline. gix's own git:// connect
/// sets no socket timeout, and before the pack transfer (where its interrupt flag is checked) a
/// daemon that accepted and never answered held the fetch, and the mirror's lock, for ever.
fn git_daemon(
    url: &gix::Url,
    version: gix::protocol::transport::Protocol,
    deadline: std::time::Instant,
) -> Result<Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>, String> {
    use gix::protocol::transport::client::git;
    use std::net::ToSocketAddrs;
    let host = url.host().ok_or("a git:// URL without a host")?;
    let port = url.port;
    let addr = (host, port.unwrap_or(9418))
        .to_socket_addrs()
        .map_err(|e| format!("resolving {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let left = deadline
        .saturating_duration_since(std::time::Instant::now())
        .max(std::time::Duration::from_millis(1));
    let stream = std::net::TcpStream::connect_timeout(&addr, left)
        .map_err(|e| format!("connecting to {host}: {e}"))?;
    // Each read or write waits at most what is left of the fetch's time: a stall anywhere fails
    // by the deadline, and a slow drip is still stopped by the interrupt flag.
    let left = deadline
        .saturating_duration_since(std::time::Instant::now())
        .max(std::time::Duration::from_millis(1));
    stream
        .set_read_timeout(Some(left))
        .and_then(|()| stream.set_write_timeout(Some(left)))
        .map_err(|e| e.to_string())?;
    let write = stream.try_clone().map_err(|e| e.to_string())?;
    Ok(Box::new(git::blocking_io::Connection::new(
        stream,
        write,
        version,
        url.path.clone(),
        Some((host.to_string(), port)),
        git::ConnectMode::Daemon,
        false,
    )))
}

/// gix's fetch does not prune: without this, a branch deleted on the remote would live on in the
/// mirror and a deleted ref would never be reported missing.
fn prune_and_set_head(
    repo: &gix::Repository,
    advertised: &HashSet<String>,
    default_branch: Option<&str>,
) -> Result<(), String> {
    use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
    let mut edits = Vec::new();
    let platform = repo.references().map_err(|e| chain(&e))?;
    for r in platform.all().map_err(|e| chain(&e))? {
        let r = r.map_err(|e| e.to_string())?;
        let name = r.name().as_bstr().to_str_lossy().into_owned();
        if (name.starts_with("refs/heads/") || name.starts_with("refs/tags/"))
            && !advertised.contains(&name)
        {
            edits.push(RefEdit {
                change: Change::Delete {
                    expected: PreviousValue::Any,
                    log: RefLog::AndReference,
                },
                name: r.name().to_owned(),
                deref: false,
            });
        }
    }
    if let Some(branch) = default_branch {
        let target: gix::refs::FullName = branch
            .try_into()
            .map_err(|e: gix::validate::reference::name::Error| e.to_string())?;
        edits.push(RefEdit {
            change: Change::Update {
                log: LogChange::default(),
                expected: PreviousValue::Any,
                new: gix::refs::Target::Symbolic(target),
            },
            name: "HEAD".try_into().expect("valid"),
            deref: false,
        });
    }
    if !edits.is_empty() {
        repo.edit_references(edits).map_err(|e| chain(&e))?;
    }
    Ok(())
}

/// The head commit and its tree can be read: the cheapest check that catches missing or damaged
/// packs, which a "nothing new" fetch would never touch.
fn check_readable(repo: &gix::Repository, head: gix::ObjectId) -> Result<(), String> {
    let commit = repo
        .find_commit(head)
        .map_err(|e| format!("head commit {head} unreadable: {}", chain(&e)))?;
    let tree = commit
        .tree_id()
        .map_err(|e| format!("head commit {head} undecodable: {}", chain(&e)))?;
    repo.find_tree(tree)
        .map_err(|e| format!("tree {tree} of {head} unreadable: {}", chain(&e)))?;
    Ok(())
}

fn looks_local(detail: &str) -> bool {
    let d = detail.to_lowercase();
    [
        "pack",
        "object",
        "corrupt",
        "checksum",
        "decompress",
        "index",
        "loose",
        "packed-refs",
        "reference",
        ".lock",
        "lock file",
    ]
    .iter()
    .any(|n| d.contains(n))
}

/// Maps a failed fetch to a reason, using gix's error chain and ssh's own log. The substrings are
/// pinned by the transport tests (tests/git/source.rs), which provoke each case for real.
/// `text` without the URLs in it (any token containing `://`, and the remote's own URL), so that
/// classification reads what went wrong, not where: a port like 40185 or a repository named
/// `credentials.git` must not look like an HTTP 401 or an auth error.
fn without_urls(text: &str, url: &str) -> String {
    text.replace(url, " ")
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter(|token| !token.contains("://"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn classify(url: &str, detail: &str, ssh_log: &str) -> SourceError {
    let d = without_urls(detail, url).to_lowercase();
    let s = ssh_log.to_lowercase();
    let any = |hay: &str, needles: &[&str]| needles.iter().any(|n| hay.contains(n));
    let detail = if ssh_log.trim().is_empty() {
        detail.to_string()
    } else {
        format!("{detail}; ssh: {}", ssh_log.trim().replace('\n', "; "))
    };
    let url = url.to_string();
    if any(
        &s,
        &[
            "host key verification failed",
            "remote host identification has changed",
            "no ed25519 host key is known",
            "host key for",
        ],
    ) {
        SourceError::HostKeyRejected { url, detail }
    } else if any(
        &s,
        &["permission denied", "too many authentication failures"],
    ) {
        SourceError::AuthFailed { url, detail }
    } else if any(
        &s,
        &[
            "connection refused",
            "could not resolve hostname",
            "connection timed out",
            "no route to host",
            "network is unreachable",
        ],
    ) {
        SourceError::Unreachable { url, detail }
    } else if any(
        &d,
        &[
            "certificate",
            "unknownissuer",
            "unknown issuer",
            "invalid peer",
        ],
    ) {
        SourceError::TlsUntrusted { url, detail }
    } else if any(
        &d,
        &[
            "401",
            "403",
            "authentication",
            "credentials",
            "clear text",
            "unauthorized",
        ],
    ) {
        SourceError::AuthFailed { url, detail }
    } else if any(
        &d,
        &[
            "connection refused",
            "error trying to connect",
            "error sending request",
            "dns error",
            "failed to lookup",
            "timed out",
            "could not connect",
            "does not appear to be a git repository",
            "not exported",
            "repository not found",
            "no such file or directory",
            "not found",
            "404",
        ],
    ) {
        SourceError::Unreachable { url, detail }
    } else {
        SourceError::Fetch { url, detail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mirror_is_keyed_by_url_and_credential_identity() {
        use crate::source::{Access, HttpCredentials, SecretSource};
        let root = Path::new("/cache");
        let url = "https://git.example.com/team-a/private.git";
        let anonymous = Access::default();
        let with_token = Access {
            http: Some(HttpCredentials::token(SecretSource::Env("TEAM_A".into()))),
            ..Access::default()
        };
        let other_token = Access {
            http: Some(HttpCredentials::token(SecretSource::Env("TEAM_B".into()))),
            ..Access::default()
        };
        let a = cache_dir_for(root, url, &anonymous.identity());
        let t = cache_dir_for(root, url, &with_token.identity());
        let o = cache_dir_for(root, url, &other_token.identity());
        assert_ne!(
            a, t,
            "an App without credentials never reads a credentialed mirror"
        );
        assert_ne!(t, o);
        assert_eq!(
            t,
            cache_dir_for(root, url, &with_token.identity()),
            "stable"
        );
        // Anonymous mirrors keep the directory they had before credentials were in the key.
        assert_eq!(anonymous.identity(), "");
        let old: String = sha2::Sha256::digest(url.as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(a, root.join(format!("private.git-{old}")));
        assert_ne!(cache_dir_for(root, "https://h/other.git", ""), a);
        // The identity names where secrets come from, never a secret.
        assert_eq!(with_token.identity(), "http:x-access-token:env:TEAM_A");
    }

    #[test]
    fn a_url_that_looks_like_a_status_does_not_decide_the_class() {
        // Seen in CI: a refused connection to port 40185 was taken for an HTTP 401.
        let url = "http://127.0.0.1:40185/credentials.git";
        let refused = "Transport handshake failed: An IO error occurred when talking to the \
            server: error sending request for url \
            (http://127.0.0.1:40185/credentials.git/info/refs?service=git-upload-pack): \
            client error (Connect): tcp connect error: Connection refused (os error 111)";
        let err = classify(url, refused, "");
        assert!(matches!(err, SourceError::Unreachable { .. }), "{err}");
        // The reported detail keeps the URL: only classification ignores it.
        assert!(
            err.to_string().contains("40185/credentials.git/info/refs"),
            "{err}"
        );
        // A real 401 is still an authentication failure.
        let denied = "Transport handshake failed: Received HTTP status 401";
        assert!(matches!(
            classify(url, denied, ""),
            SourceError::AuthFailed { .. }
        ));
    }

    fn git(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }

    /// A `file://` remote with one commit on `main` and a source following it (its mirror in
    /// the temp dir too).
    fn one_commit_remote() -> (tempfile::TempDir, std::path::PathBuf, GitSource) {
        let tmp = tempfile::tempdir().unwrap();
        let remote = tmp.path().join("remote");
        std::fs::create_dir(&remote).unwrap();
        git(&remote, &["init", "-q", "-b", "main"]);
        std::fs::write(remote.join("a.yaml"), "a: 1\n").unwrap();
        git(&remote, &["add", "-A"]);
        git(&remote, &["commit", "-q", "-m", "one"]);
        let spec = super::super::SourceSpec {
            id: "app".into(),
            url: format!("file://{}", remote.display()),
            reference: super::super::refs::RefSelector::Branch("main".into()),
            path: String::new(),
            access: Default::default(),
            signatures: Default::default(),
        };
        let source = GitSource::new(spec, &tmp.path().join("cache"));
        (tmp, remote, source)
    }

    #[test]
    fn a_poll_due_before_a_fetch_started_is_answered_by_it() {
        let (_tmp, remote, source) = one_commit_remote();
        // Two Apps' polls fall due together; the first one's fetch goes to the remote.
        let due = Instant::now();
        let head = source.fetch_since(None, due).unwrap().head;
        std::fs::remove_dir_all(&remote).unwrap();
        // The second, served later, is answered from the mirror: the remote was read after it
        // fell due (it is gone now, so going to it again would fail).
        let second = source.fetch_since(None, due);
        assert_eq!(second.map(|o| o.head).ok(), Some(head));
        // A poll due now goes to the remote.
        assert!(source.fetch_since(None, Instant::now()).is_err());
    }

    #[test]
    fn tree_reads_share_one_open_mirror_until_a_fetch_writes_it() {
        let (_tmp, remote, source) = one_commit_remote();
        let paths = |sha: &str| -> Vec<String> {
            super::super::tree::read_tree(source.cache_dir(), sha, "", &Default::default())
                .unwrap()
                .into_iter()
                .map(|(path, _)| path)
                .collect()
        };
        let is_open = || {
            let lock = lock_for(source.cache_dir());
            let state = lock.read().unwrap();
            state.opened.lock().unwrap().is_some()
        };
        let first = source.fetch(None).unwrap().head;
        assert!(!is_open(), "a fetch leaves nothing open");
        assert_eq!(paths(&first), ["a.yaml"]);
        assert!(is_open(), "the read kept the mirror open for the next");
        assert_eq!(paths(&first), ["a.yaml"]);

        // A fetch that brings a new commit drops the open mirror; the next read opens it again
        // and sees the commit.
        std::fs::write(remote.join("b.yaml"), "b: 1\n").unwrap();
        git(&remote, &["add", "-A"]);
        git(&remote, &["commit", "-q", "-m", "two"]);
        let second = source.fetch(Some(&first)).unwrap().head;
        assert_ne!(second, first);
        assert!(!is_open(), "the fetch dropped the open mirror");
        assert_eq!(paths(&second), ["a.yaml", "b.yaml"]);
        assert_eq!(paths(&first), ["a.yaml"]);
    }

    #[test]
    fn a_fetch_requested_before_another_started_is_answered_from_the_mirror() {
        let (_tmp, remote, source) = one_commit_remote();
        let head = source.fetch(None).unwrap().head;

        // A second fetch is requested while the mirror is busy; while it waits, another fetch
        // "starts" (recorded as the lock holder would) and the remote then disappears.
        let lock = lock_for(source.cache_dir());
        let guard = lock.write().unwrap();
        let waiting = {
            let source = source.clone();
            std::thread::spawn(move || source.fetch(Some(&head)))
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut guard = guard;
        guard.fetched = Some((Instant::now(), Some("main".into())));
        std::fs::remove_dir_all(&remote).unwrap();
        drop(guard);
        let served = waiting.join().unwrap();
        assert!(
            served.is_ok(),
            "served from the mirror without the network: {served:?}"
        );
        // A fetch requested now must go to the remote, which is gone.
        let err = source.fetch(None).unwrap_err();
        assert!(
            matches!(
                err,
                SourceError::Unreachable { .. } | SourceError::Fetch { .. }
            ),
            "{err}"
        );
    }
}
