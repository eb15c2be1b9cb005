//! Owns `reckon run`: every App reconciled concurrently until a stop signal. Each App is one
//! task woken by its poll timer (with jitter), a webhook, or the cluster's shared watch when
//! one of its objects changes; Apps wait for the Apps they depend on to be synced and healthy.
//! On stop, in-flight passes finish, the store is flushed and closed, and `run` returns.
//!
//! Apps come from two places behind one seam (the supervisor's `Control` messages): the file
//! (`reckon.yaml`, fixed for the process) and, with `app_objects`, App objects in the cluster,
//! which may be created, changed and deleted while the agent runs; each change starts, restarts
//! or stops that App's task. Another source (a shard's share of the Apps) plugs in the same way.

pub mod app;
pub mod key;
pub mod objects;
pub mod registry;
pub mod schedule;
pub mod standby;
mod supervisor;

use crate::config::{self, Config};
use crate::event::{self, Draft, Event};
use crate::plan::GroupKind;
use crate::render::SecretKey;
use crate::source::webhook::{self, WebhookConfig, WebhookTrigger};
use crate::store::writer::{self, StoreHandle};
use crate::store::{OpenOptions, SledStore, StoreError};
use crate::watch::WatchOptions;
use schedule::Wake;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use supervisor::{Origin, Supervisor};
use tokio::sync::{mpsc, watch};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("opening the store {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("App {app}: {source}")]
    Source {
        app: String,
        #[source]
        source: crate::source::config::SpecError,
    },
    #[error("App {app}: connecting to its cluster: {source}")]
    Cluster {
        app: String,
        #[source]
        source: crate::cluster::ClusterError,
    },
    #[error("App {app}: discovering its cluster's API: {source}")]
    Discovery {
        app: String,
        #[source]
        source: crate::apply::DiscoveryError,
    },
    #[error(transparent)]
    Key(#[from] key::KeyError),
    #[error(transparent)]
    Checkpoint(#[from] crate::store::checkpoint::CheckpointError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("App {app}: {source}")]
    SourceRefused {
        app: String,
        source: crate::source::allow::SourceRefused,
    },
    #[error("closing the store: {0}")]
    Close(#[source] StoreError),
    #[error("connecting to the cluster to watch App objects: {0}")]
    AppObjects(#[source] crate::cluster::ClusterError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("connecting to the cluster of the Lease: {0}")]
    LeaseCluster(#[source] crate::cluster::ClusterError),
    #[error(transparent)]
    Lease(#[from] crate::lease::LeaseError),
    /// Another replica may be writing now: this one stopped its writes and must not go on.
    #[error(
        "lost the Lease {name}: {reason}; stopped every write (exit code {})",
        LEASE_LOST_EXIT
    )]
    LeaseLost {
        name: String,
        reason: crate::lease::Lost,
    },
}

/// The exit code of `reckon run --lease` after losing the Lease (0: stopped, 1: any other
/// error): Kubernetes restarts the pod, which waits in standby.
pub const LEASE_LOST_EXIT: u8 = 3;

/// How long a new holder keeps retrying to open a store another process still holds: the
/// previous holder, having lost the Lease, flushes and exits within seconds (a killed one
/// releases sled's file lock at once).
const STORE_OPEN_RETRY: Duration = Duration::from_secs(30);

/// `reckon run --lease`: hold this Lease before opening the store or writing to a cluster.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    /// Default: the client's namespace (in a pod: its own, from the service account).
    pub namespace: Option<String>,
    pub identity: String,
    pub duration: Duration,
    /// The cluster holding the Lease (`None`: KUBECONFIG, ~/.kube/config, in-cluster).
    pub kubeconfig: Option<PathBuf>,
}

/// Where App objects are watched (`reckon run --watch-apps`).
#[derive(Clone, Debug, Default)]
pub struct AppObjects {
    /// Only this namespace (namespaced mode); all namespaces when `None`.
    pub namespace: Option<String>,
    /// The cluster holding them (`None`: KUBECONFIG, ~/.kube/config, in-cluster); also the
    /// default target of the Apps they describe.
    pub kubeconfig: Option<PathBuf>,
    /// Also watch Policy objects (cluster-scoped: the agent needs to list and watch
    /// `policies.reckon.dev` cluster-wide), which App objects may reference besides the
    /// configuration file's policies.
    pub policies: bool,
}

/// Webhook secrets (a provider without one has no endpoint).
#[derive(Clone, Default)]
pub struct WebhookSecrets {
    pub github: Option<String>,
    pub gitlab: Option<String>,
    pub generic: Option<String>,
}

/// `reckon run --checkpoint-key --checkpoint-file`: signed checkpoints of the store's head.
#[derive(Clone, Debug)]
pub struct CheckpointOptions {
    /// The ed25519 signing key's seed file (created when missing).
    pub key: PathBuf,
    /// The append-only file the checkpoints go to.
    pub file: PathBuf,
    /// How often the head is checkpointed when it moved.
    pub every: Duration,
}

/// The agent's store page cache unless `--store-cache-mib` says otherwise.
pub const STORE_CACHE_BYTES: u64 = 256 << 20;

/// Everything `reckon run` is told.
#[derive(Clone)]
pub struct AgentOptions {
    pub config: PathBuf,
    pub store: PathBuf,
    pub cache: PathBuf,
    /// The store's page cache (`--store-cache-mib`).
    pub store_cache_bytes: u64,
    /// The key for keyed hashes of Secret values; created (0600) when missing.
    pub key_file: PathBuf,
    /// Where the HTTP endpoints (health, webhooks) listen; none when `None`.
    pub listen: Option<SocketAddr>,
    /// The bounds of that listener (and of the audit receiver's).
    pub listen_limits: crate::listen::ListenLimits,
    /// Serve that listener over TLS with this configuration (`--tls-cert`, `--tls-key`); plain
    /// HTTP when `None`.
    pub listen_tls: Option<Arc<rustls::ServerConfig>>,
    pub webhooks: WebhookSecrets,
    pub watch: WatchOptions,
    /// Up to this fraction of a poll interval is added at random to each wait.
    pub jitter: f64,
    /// Bearer tokens of the `/api/v1` routes; none configured means the API refuses every
    /// request (see docs/api.md).
    pub api_tokens: Arc<crate::api::auth::Tokens>,
    /// Also reconcile the App objects found here; the configuration file is then optional.
    pub app_objects: Option<AppObjects>,
    /// The audit webhook receiver and drift attribution (docs/audit.md); off when `None`.
    pub audit: Option<crate::audit::AuditOptions>,
    /// This replica's shard: it reconciles only the Apps it owns (see [`crate::shard`]).
    pub shards: crate::shard::Shards,
    /// The other shards, whom the API asks for fleet answers; `None` when not sharded.
    pub fleet: Option<Arc<crate::api::fanout::Fleet>>,
    /// One writer per shard: write only while holding this Lease; off (local use) when `None`.
    pub lease: Option<LeaseConfig>,
    /// The schemes and hosts App objects may name (`--app-source-schemes`,
    /// `--app-source-hosts`). The agent's cache and store are added at start: no App, from the
    /// file or an object, may point into them.
    pub sources: crate::source::allow::SourceRules,
    /// What App objects may write and as whom (`--default-service-account`,
    /// `--allow-cross-namespace-targets`).
    pub tenancy: crate::config::policy::ObjectRules,
    /// Signed checkpoints of the store's head, written outside it; off when `None`.
    pub checkpoints: Option<CheckpointOptions>,
    /// The latest checkpoint written, for App objects' status (set by the agent itself while it
    /// runs; never configured).
    pub latest_checkpoint: watch::Receiver<Option<crate::crd::StatusCheckpoint>>,
}

impl AgentOptions {
    pub fn new(config: PathBuf, store: PathBuf, cache: PathBuf) -> Self {
        let key_file = key::default_path(&store);
        Self {
            config,
            store,
            cache,
            store_cache_bytes: STORE_CACHE_BYTES,
            key_file,
            listen: None,
            listen_limits: crate::listen::ListenLimits::default(),
            listen_tls: None,
            webhooks: WebhookSecrets::default(),
            watch: WatchOptions::default(),
            jitter: 0.1,
            api_tokens: Arc::default(),
            app_objects: None,
            audit: None,
            shards: crate::shard::Shards::default(),
            fleet: None,
            lease: None,
            sources: crate::source::allow::SourceRules::default(),
            tenancy: crate::config::policy::ObjectRules::default(),
            checkpoints: None,
            latest_checkpoint: watch::channel(None).1,
        }
    }

    /// The source rules with the agent's own directories in them.
    fn source_rules(&self) -> crate::source::allow::SourceRules {
        let mut rules = self.sources.clone();
        rules.agent_dirs = vec![("cache", self.cache.clone()), ("store", self.store.clone())];
        rules
    }
}

/// A path's real location (symlinks resolved), where it exists.
fn real_path(path: &std::path::Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok()
}

/// Opens the store, connects to each cluster and reconciles every App until `stop` resolves.
/// With a Lease, first waits in standby until it holds it, and returns
/// [`AgentError::LeaseLost`] when it loses it.
pub async fn run(
    options: AgentOptions,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        stop.await;
        let _ = stop_tx.send(true);
    });
    // With App objects the file is optional: a cluster install may keep every App as an object.
    let cfg = match config::load(&options.config) {
        Err(config::ConfigError::Read { source, .. })
            if options.app_objects.is_some() && source.kind() == std::io::ErrorKind::NotFound =>
        {
            tracing::info!(file = %options.config.display(), "no configuration file: App objects only");
            Config {
                apps: Vec::new(),
                limits: config::InputLimits::default(),
                policies: Vec::new(),
            }
        }
        other => other?,
    };
    // The Lease comes before the store and before any write: a standby may share the store's
    // volume with the holder (a re-attached PVC) and must not touch either.
    let holder = match &options.lease {
        Some(lease) => match hold_lease(lease, &options, stop_rx.clone()).await? {
            Some(h) => Some(h),
            // Stopped in standby: nothing was opened or written.
            None => return Ok(()),
        },
        None => None,
    };
    // Without a Lease the sender is gone at once: never lost.
    let lost_rx = match &holder {
        Some(h) => h.lost(),
        None => watch::channel(None).1,
    };
    let fence = holder.as_ref().map(|h| h.fence());
    let result = run_holding(cfg, &options, stop_rx, lost_rx.clone(), fence).await;
    let lost = lost_rx.borrow().clone();
    let lease_name = options
        .lease
        .as_ref()
        .map(|l| l.name.clone())
        .unwrap_or_default();
    match (holder, lost) {
        (_, Some(reason)) => {
            // The store is flushed and closed by now; the log cannot say it (no event kind
            // for it), so the error log and the exit code do.
            if let Err(e) = &result {
                tracing::error!(error = %e, "while stopping after losing the Lease");
            }
            Err(AgentError::LeaseLost {
                name: lease_name,
                reason,
            })
        }
        (Some(h), None) => {
            // After the store is closed, so the next holder opens it at once.
            let released = h.release().await;
            result?;
            released.map_err(AgentError::from)
        }
        (None, None) => result,
    }
}

/// Waits in standby (serving the standby endpoints on `--listen`) until this process holds
/// the Lease; `None` when stopped first.
async fn hold_lease(
    lease: &LeaseConfig,
    options: &AgentOptions,
    stop: watch::Receiver<bool>,
) -> Result<Option<crate::lease::Holder>, AgentError> {
    let client = crate::cluster::client(lease.kubeconfig.as_deref(), None)
        .await
        .map_err(AgentError::LeaseCluster)?;
    let lease_options = crate::lease::LeaseOptions {
        name: lease.name.clone(),
        namespace: lease
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string()),
        identity: lease.identity.clone(),
        duration: lease.duration,
    };
    tracing::info!(
        lease = %lease_options.name,
        namespace = %lease_options.namespace,
        identity = %lease_options.identity,
        duration_secs = lease_options.duration.as_secs(),
        "standby: waiting for the Lease before opening the store or writing anything"
    );
    let standby = match options.listen {
        Some(addr) => {
            let (done, done_rx) = tokio::sync::oneshot::channel();
            let task = standby::serve(
                addr,
                lease_options.name.clone(),
                options.listen_limits,
                done_rx,
            )
            .await
            .map_err(|source| AgentError::Listen { addr, source })?;
            Some((done, task))
        }
        None => None,
    };
    let holder = crate::lease::acquire(client, lease_options, stop).await;
    if let Some((done, task)) = standby {
        // The holder's server binds the same address next.
        let _ = done.send(());
        let _ = task.await;
    }
    Ok(holder)
}

/// Resolves once the Lease is lost; never without a Lease (its sender is gone at once).
async fn lost_signal(mut lost: watch::Receiver<Option<crate::lease::Lost>>) {
    if lost.wait_for(|l| l.is_some()).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Opens the store, retrying while another process holds it when this one holds the Lease
/// (the previous holder is still flushing after losing it).
async fn open_store(options: &AgentOptions) -> Result<SledStore, AgentError> {
    let deadline = tokio::time::Instant::now() + STORE_OPEN_RETRY;
    loop {
        let opened = SledStore::open(
            &options.store,
            OpenOptions {
                create: true,
                cache_bytes: options.store_cache_bytes,
                ..Default::default()
            },
        );
        match opened {
            Err(e)
                if options.lease.is_some()
                    && tokio::time::Instant::now() < deadline
                    && matches!(e, StoreError::Locked { .. }) =>
            {
                tracing::info!(store = %options.store.display(), "the store is still held by the previous holder; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => {
                return other.map_err(|source| AgentError::Store {
                    path: options.store.clone(),
                    source,
                });
            }
        }
    }
}

/// The agent proper: opens the store, records AgentStarted and reconciles until `stop`, or
/// until `lost` names why the Lease was lost (then every App task is cancelled at once).
async fn run_holding(
    cfg: Config,
    options: &AgentOptions,
    stop_rx: watch::Receiver<bool>,
    lost: watch::Receiver<Option<crate::lease::Lost>>,
    fence: Option<crate::lease::Fence>,
) -> Result<(), AgentError> {
    let store = tokio::select! {
        opened = open_store(options) => opened?,
        // Lost while waiting for the store: nothing was written.
        _ = lost_signal(lost.clone()) => return Ok(()),
    };
    let key = key::load_or_create(&options.key_file)?;
    // Loaded before anything is written: a key that cannot be read stops the start, not the
    // first checkpoint minutes later.
    let checkpointer = match &options.checkpoints {
        Some(c) => Some(Checkpointer::new(c, &options.store)?),
        None => None,
    };
    let (handle, writer_task) = writer::spawn(store);
    let mut options = options.clone();
    if let Some(c) = &checkpointer {
        options.latest_checkpoint = c.published.subscribe();
    }
    let options = &options;
    let started = Draft::new(
        None,
        Event::AgentStarted(event::AgentStarted {
            version: crate::version::VERSION.to_string(),
            host: std::env::var("HOSTNAME").ok(),
            pid: std::process::id(),
        }),
    );
    let appended = handle.append(vec![started]).await;
    // From AgentStarted on (flushed by now): the first checkpoint at once, so a restart also
    // anchors the head it found, then every period while the head moves.
    let periodic = checkpointer.clone().map(|c| {
        let stop = stop_rx.clone();
        let appended = handle.appended();
        tokio::spawn(c.run(stop, appended))
    });
    // Migration 0010, before any App's first pass reads a recorded set.
    let appended = match appended {
        Ok(a) => crate::reconcile::reseal::reseal_recorded_sets(&handle, &key)
            .await
            .map(|_| a)
            .map_err(|crate::reconcile::reseal::ResealError::Store(e)| e),
        Err(e) => Err(e),
    };
    let result = match appended {
        Ok(_) => reconcile_all(&cfg, options, handle.clone(), key, stop_rx, lost, fence).await,
        Err(source) => Err(AgentError::Store {
            path: options.store.clone(),
            source,
        }),
    };
    // Flush and close whatever happened: the log is the product.
    let closed = handle.close().await;
    let joined = writer_task.await;
    if let Some(task) = periodic {
        task.abort();
    }
    // On stop, the head the store closed with (also after an error: what was flushed is
    // history worth anchoring).
    if let Some(c) = &checkpointer
        && let Err(e) = c.write_now().await
    {
        tracing::error!(error = %e, "writing the checkpoint on stop");
    }
    result?;
    closed.map_err(AgentError::Close)?;
    match joined {
        Ok(r) => r.map_err(AgentError::Close),
        Err(e) => Err(AgentError::Close(StoreError::GroupFlush {
            reason: format!("writer task: {e}"),
        })),
    }
}

/// Writes signed checkpoints of the store's flushed head (its `HEAD` file) to the checkpoint
/// file: every `every` while the head moves, and once more on stop.
#[derive(Clone)]
struct Checkpointer {
    signer: Arc<crate::store::checkpoint::Signer>,
    file: PathBuf,
    store: PathBuf,
    every: Duration,
    /// The latest checkpoint written, for App objects' status.
    published: Arc<watch::Sender<Option<crate::crd::StatusCheckpoint>>>,
    /// The last head written, so an idle agent does not repeat itself.
    last: Arc<tokio::sync::Mutex<Option<(u64, crate::event::Digest)>>>,
}

impl Checkpointer {
    fn new(c: &CheckpointOptions, store: &std::path::Path) -> Result<Self, AgentError> {
        let signer = crate::store::checkpoint::Signer::load_or_create(&c.key)?;
        tracing::info!(
            file = %c.file.display(),
            public_key = %hex::encode(signer.public_key().to_bytes()),
            "checkpointing the store's head"
        );
        Ok(Checkpointer {
            signer: Arc::new(signer),
            file: c.file.clone(),
            store: store.to_owned(),
            every: c.every,
            published: Arc::new(watch::channel(None).0),
            last: Arc::default(),
        })
    }

    async fn run(self, mut stop: watch::Receiver<bool>, mut appended: watch::Receiver<u64>) {
        appended.mark_unchanged();
        if let Err(e) = self.write_now().await {
            tracing::error!(error = %e, "writing a checkpoint");
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if !appended.has_changed().unwrap_or(false) {
                continue;
            }
            appended.mark_unchanged();
            if let Err(e) = self.write_now().await {
                // Logged, not fatal: reconciling goes on; the next period tries again.
                tracing::error!(error = %e, "writing a checkpoint");
            }
        }
    }

    /// Signs and appends the current flushed head, unless it was the last one written.
    async fn write_now(&self) -> Result<(), crate::store::checkpoint::CheckpointError> {
        use crate::store::checkpoint;
        let mut last = self.last.lock().await;
        let this = self.clone();
        let previous = *last;
        let written =
            tokio::task::spawn_blocking(move || -> Result<_, checkpoint::CheckpointError> {
                use crate::store::checkpoint;
                let Some(cp) = checkpoint::of_store(&this.store, &this.signer, chrono::Utc::now())?
                else {
                    return Ok(None);
                };
                if previous == Some((cp.seq, cp.hash)) {
                    return Ok(None);
                }
                checkpoint::append(&this.file, &cp)?;
                this.published.send_replace(Some((&cp).into()));
                Ok(Some((cp.seq, cp.hash)))
            });
        let seq = match written.await {
            Ok(r) => r?,
            Err(e) => {
                return Err(crate::store::checkpoint::CheckpointError::Write {
                    path: self.file.clone(),
                    source: std::io::Error::other(e.to_string()),
                });
            }
        };
        if seq.is_some() {
            *last = seq;
        }
        Ok(())
    }
}

/// A stop for everything that runs until the agent stops: set on a requested stop, and when the
/// Lease is lost.
fn halt_on(
    requested: watch::Receiver<bool>,
    lost: watch::Receiver<Option<crate::lease::Lost>>,
) -> watch::Receiver<bool> {
    let (halt, stop) = watch::channel(false);
    let mut requested = requested;
    tokio::spawn(async move {
        tokio::select! {
            _ = async { let _ = requested.wait_for(|s| *s).await; } => {}
            _ = lost_signal(lost) => {}
        }
        let _ = halt.send(true);
    });
    stop
}

/// Starts the file's Apps in dependency order; a file App that cannot start stops the agent
/// (as before App objects existed: the file is the operator's own, checked at start).
async fn start_file_apps(
    cfg: &Config,
    options: &AgentOptions,
    supervisor: &mut Supervisor,
) -> Result<(), AgentError> {
    let rules = options.source_rules();
    for app in cfg.sync_order() {
        // The file is the operator's: any scheme, but never the agent's own cache or store.
        crate::source::allow::into_agent_dir(&app.source.url, &rules, &real_path).map_err(
            |source| AgentError::SourceRefused {
                app: app.name.clone(),
                source,
            },
        )?;
        let pin = app.shard.map(|s| s.to_string());
        match options.shards.owns("", &app.name, pin.as_deref()) {
            Ok(true) => supervisor.start(app.clone(), Origin::File, None).await?,
            Ok(false) => tracing::debug!(app = %app.name, "another shard reconciles it"),
            // Not fatal: the other Apps of the file still run; every shard logs it.
            Err(e) => tracing::error!(app = %app.name, error = %e, "App not reconciled"),
        }
    }
    Ok(())
}

/// With `--watch-apps`, the watch of App objects; their changes arrive on the receiver.
async fn watch_app_objects(
    options: &AgentOptions,
    supervisor: &mut Supervisor,
    fence: Option<&crate::lease::Fence>,
) -> Result<Option<mpsc::Receiver<objects::ObjectChange>>, AgentError> {
    let Some(objects) = &options.app_objects else {
        return Ok(None);
    };
    let client = crate::cluster::fenced_client(objects.kubeconfig.as_deref(), None, fence)
        .await
        .map_err(AgentError::AppObjects)?;
    supervisor.objects_client = Some(client.clone());
    let (changes_tx, changes) = mpsc::channel::<objects::ObjectChange>(64);
    if objects.policies {
        tokio::spawn(objects::watch_policies(client.clone(), changes_tx.clone()));
    }
    tokio::spawn(objects::watch(
        client,
        objects.namespace.clone(),
        changes_tx,
    ));
    Ok(Some(changes))
}

/// Runs every App until `stop` (or the Lease is lost): the file's, and with `--watch-apps`
/// those of App objects as they come and go; serves the HTTP endpoints and the audit receiver
/// meanwhile.
async fn reconcile_all(
    cfg: &Config,
    options: &AgentOptions,
    store: StoreHandle,
    key: SecretKey,
    stop: watch::Receiver<bool>,
    lost: watch::Receiver<Option<crate::lease::Lost>>,
    fence: Option<crate::lease::Fence>,
) -> Result<(), AgentError> {
    // Everything that runs until the agent stops also stops when the Lease is lost.
    let stop = halt_on(stop, lost.clone());
    let mut supervisor = Supervisor::new(options, store.clone(), key, stop.clone(), fence.clone());
    // The file's limits hold for every App, App objects' too.
    supervisor.set_input_limits(cfg.limits);
    supervisor.policies = cfg.policies.clone();
    supervisor.file_apps = cfg.apps.iter().map(|a| a.name.clone()).collect();
    start_file_apps(cfg, options, &mut supervisor).await?;
    let changes = watch_app_objects(options, &mut supervisor, fence.as_ref()).await?;
    let mut watching = changes.is_some();
    // Without App objects the channel is closed at once and never read.
    let mut changes = changes.unwrap_or_else(|| mpsc::channel(1).1);
    let server = match options.listen {
        Some(addr) => Some(
            serve(
                addr,
                options,
                store.clone(),
                supervisor.registry(),
                stop.clone(),
            )
            .await?,
        ),
        None => None,
    };
    // Every cluster an App reaches, present and future (App objects start later): the audit
    // log names resources, drifts name kinds.
    let audit = match &options.audit {
        Some(audit) => Some(
            crate::audit::start(
                audit.clone(),
                store.clone(),
                resource_of(supervisor.registry()),
                reckon_users(supervisor.registry()),
                stop.clone(),
            )
            .await?,
        ),
        None => None,
    };
    if supervisor.is_idle() && !watching {
        // Nothing to reconcile yet is not a reason to exit (a supervisor would restart it in
        // a loop): serve the health endpoints until stopped.
        tracing::warn!("the configuration lists no Apps; idle until stopped");
    }
    let mut stop_rx = stop.clone();
    loop {
        tokio::select! {
            // Not the `Ref` itself: it is not Send, and the other arm awaits.
            _ = async { let _ = stop_rx.wait_for(|s| *s).await; } => break,
            change = changes.recv(), if watching => match change {
                Some(change) => supervisor.object_changed(change).await,
                None => watching = false,
            },
        }
    }
    // Every task sees the stop too; wait for their passes in flight (or their cancellation).
    let cancel = lost.borrow().is_some();
    supervisor.stop_all(cancel).await;
    if let Some(server) = server {
        let _ = server.await;
    }
    if let Some(audit) = audit {
        let _ = audit.await;
    }
    Ok(())
}

/// The plural resource of an object, from the first cluster catalog that serves its kind (the
/// audit log names resources, drifts name kinds).
fn resource_of(registry: registry::Snapshot) -> crate::audit::ResourceOf {
    Arc::new(move |object| {
        let registry = registry.borrow().clone();
        registry.resource_of(&GroupKind::new(&object.group, &object.kind))
    })
}

/// Who the agent is on its clusters, as they connect (attribution tells reckon's writes by it).
fn reckon_users(registry: registry::Snapshot) -> crate::audit::ReckonUsers {
    Arc::new(move || registry.borrow().clone().reckon_users())
}

/// Serves `/healthz`, `/readyz`, the webhook endpoints, `/metrics` and the `/api/v1` routes
/// until stop.
async fn serve(
    addr: SocketAddr,
    options: &AgentOptions,
    store: StoreHandle,
    registry: registry::Snapshot,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, AgentError> {
    let (tx, mut rx) = mpsc::channel::<WebhookTrigger>(64);
    let hooks = WebhookConfig {
        github_secret: options.webhooks.github.clone(),
        gitlab_token: options.webhooks.gitlab.clone(),
        generic_secret: options.webhooks.generic.clone(),
        sources: Arc::new(registry::WebhookSources(registry.clone())),
    };
    let hook_registry = registry.clone();
    tokio::spawn(async move {
        while let Some(t) = rx.recv().await {
            let registry = hook_registry.borrow().clone();
            registry.wake(&t.source, Wake::Fetch);
        }
    });
    if options.api_tokens.is_empty() {
        tracing::warn!(
            "no API tokens configured (--api-token-file, --admin-token-file): /api/v1 refuses \
             every request"
        );
    }
    // A recorded rollback or resume is acted on by a pass now; the pass reads the intent from
    // the store, so a plain re-plan (no fetch) is enough. A full inbox already holds a pending
    // pass, which will read the new intent too.
    let waker_registry = registry.clone();
    let waker: crate::api::Waker = Arc::new(move |app: &str| {
        let registry = waker_registry.borrow().clone();
        registry.wake(app, Wake::Changed)
    });
    let mut api =
        crate::api::ApiState::new(store, options.api_tokens.clone(), Vec::new(), Some(waker));
    api.apps = Arc::new(move |app: &str| registry.borrow().contains(app));
    api.fleet = options.fleet.clone();
    api.stop = Some(stop.clone());
    let limits = options.listen_limits;
    let hook_limits = crate::listen::BodyLimits {
        timeout: limits
            .body_timeout
            .min(webhook::DEFAULT_BODY_LIMITS.timeout),
        ..webhook::DEFAULT_BODY_LIMITS
    };
    let app = webhook::router(hooks, tx, hook_limits).merge(crate::api::router(api));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Listen { addr, source })?;
    let tls = options.listen_tls.clone();
    let scheme = if tls.is_some() { "https" } else { "http" };
    // The web UI's address, so whoever started the agent can open it (docs/ui.md).
    tracing::info!(%addr, ui = %format!("{scheme}://{addr}{}", crate::ui::PATH), "listening");
    Ok(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match tls {
            Some(tls) => crate::listen::serve_tls(listener, app, tls, limits, shutdown).await,
            None => crate::listen::serve(listener, app, limits, shutdown).await,
        }
    }))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("stop requested: finishing in-flight work");
}
