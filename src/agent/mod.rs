//! Owns `reckon run`: every App reconciled concurrently until a stop signal. Each App is one
//! task woken by its poll timer (with jitter), a webhook, or the cluster's shared watch when
//! one of its objects changes; Apps wait for the Apps they depend on to be synced and healthy.
//! On stop, in-flight passes finish, the store is flushed and closed, and `run` returns.
//!
//! Apps come from two places behind one seam (the supervisor's `Control` messages): the file
//! (`reckon.yaml`, fixed for the process) and, with `app_objects`, App objects in the cluster,
//! which may be created, changed and deleted while the agent runs; each change starts, restarts
//! or stops that App's task. Another source (a shard's share of the Apps) plugs in the same way.

pub mod key;
pub mod objects;
pub mod standby;

use crate::apply::Catalog;
use crate::config::{self, Config};
use crate::event::{self, Draft, Event};
use crate::plan::{GroupKind, ObjectKey};
use crate::reconcile::{Limits, Live, PassOptions, PassStatus, Reconciler};
use crate::render::SecretKey;
use crate::source::poll::PollSchedule;
use crate::source::webhook::{self, WebhookConfig, WebhookTrigger};
use crate::source::{GitSource, config::spec_for};
use crate::store::writer::{self, StoreHandle};
use crate::store::{OpenOptions, SledStore, StoreError};
use crate::watch::{AppWatch, Change, WatchOptions};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
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
}

/// Webhook secrets (a provider without one has no endpoint).
#[derive(Clone, Default)]
pub struct WebhookSecrets {
    pub github: Option<String>,
    pub gitlab: Option<String>,
    pub generic: Option<String>,
}

/// Everything `reckon run` is told.
#[derive(Clone)]
pub struct AgentOptions {
    pub config: PathBuf,
    pub store: PathBuf,
    pub cache: PathBuf,
    /// The key for keyed hashes of Secret values; created (0600) when missing.
    pub key_file: PathBuf,
    /// Where the HTTP endpoints (health, webhooks) listen; none when `None`.
    pub listen: Option<SocketAddr>,
    /// The bounds of that listener (and of the audit receiver's).
    pub listen_limits: crate::listen::ListenLimits,
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
}

impl AgentOptions {
    pub fn new(config: PathBuf, store: PathBuf, cache: PathBuf) -> Self {
        let key_file = key::default_path(&store);
        Self {
            config,
            store,
            cache,
            key_file,
            listen: None,
            listen_limits: crate::listen::ListenLimits::default(),
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

/// Why an App task runs a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// Poll timer or webhook: fetch first.
    Fetch,
    /// One of its objects changed: re-plan from the watch cache.
    Changed,
}

/// The Apps on one cluster: one catalog and one shared watch.
struct Cluster {
    catalog: Arc<Catalog>,
    watch: Arc<RwLock<AppWatch>>,
}

/// Which App manages which object, for routing watch notifications.
type Routes = Arc<RwLock<HashMap<ObjectKey, String>>>;

/// Each running App's inbox, by name (Apps come and go while the agent runs).
type Wakers = Arc<RwLock<HashMap<String, mpsc::Sender<Wake>>>>;

/// An App is ready for its dependents once a pass left it synced and healthy.
type Readiness = watch::Sender<BTreeMap<String, bool>>;

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
            Config { apps: Vec::new() }
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
    let (handle, writer_task) = writer::spawn(store);
    let started = Draft::new(
        None,
        Event::AgentStarted(event::AgentStarted {
            version: crate::version::VERSION.to_string(),
            host: std::env::var("HOSTNAME").ok(),
            pid: std::process::id(),
        }),
    );
    let appended = handle.append(vec![started]).await;
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
    result?;
    closed.map_err(AgentError::Close)?;
    match joined {
        Ok(r) => r.map_err(AgentError::Close),
        Err(e) => Err(AgentError::Close(StoreError::GroupFlush {
            reason: format!("writer task: {e}"),
        })),
    }
}

async fn connect(
    app: &config::App,
    key: &SecretKey,
    options: &WatchOptions,
    routes: &Routes,
    wakers: &Wakers,
    fence: Option<&crate::lease::Fence>,
) -> Result<Cluster, AgentError> {
    let client = crate::cluster::fenced_client(
        app.target.kubeconfig.as_deref(),
        app.target.context.as_deref(),
        fence,
    )
    .await
    .map_err(|source| AgentError::Cluster {
        app: app.name.clone(),
        source,
    })?;
    let catalog = Catalog::new(client.clone())
        .await
        .map_err(|source| AgentError::Discovery {
            app: app.name.clone(),
            source,
        })?;
    // Right after an API server starts, discovery can miss groups; give them a moment.
    let builtin = [
        GroupKind::new("apps", "Deployment"),
        GroupKind::new("apiextensions.k8s.io", "CustomResourceDefinition"),
    ];
    let missing = catalog
        .wait_for_kinds(&builtin, Duration::from_secs(30))
        .await;
    if !missing.is_empty() {
        tracing::warn!(?missing, "the cluster does not serve these kinds yet");
    }
    let (shared, batches) = AppWatch::for_all_apps(client, key.clone(), options.clone());
    tokio::spawn(route(batches, routes.clone(), wakers.clone()));
    Ok(Cluster {
        catalog: Arc::new(catalog),
        watch: Arc::new(RwLock::new(shared)),
    })
}

/// Sends each changed object's App a wake-up (merged: one pending wake-up is enough).
async fn route(mut batches: mpsc::Receiver<Vec<Change>>, routes: Routes, wakers: Wakers) {
    while let Some(batch) = batches.recv().await {
        let apps: std::collections::BTreeSet<String> = {
            let routes = routes.read().expect("routes lock");
            batch
                .iter()
                .filter_map(|c| routes.get(&c.object.key()).cloned())
                .collect()
        };
        let wakers = wakers.read().expect("wakers lock");
        for app in apps {
            if let Some(waker) = wakers.get(&app) {
                let _ = waker.try_send(Wake::Changed);
            }
        }
    }
}

/// Where a running App came from: the file, or an App object (its namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Origin {
    File,
    Object { namespace: String },
}

impl Origin {
    fn describe(&self) -> String {
        match self {
            Origin::File => "the configuration file".to_string(),
            Origin::Object { namespace } => format!("an App object in namespace {namespace}"),
        }
    }
}

struct RunningApp {
    app: config::App,
    origin: Origin,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts, restarts and stops App tasks as Apps come and go; owns everything they share.
/// Cluster catalogs, shared between the supervisor (which adds one per cluster it connects)
/// and the audit attributor.
type Catalogs = Arc<std::sync::RwLock<Vec<Arc<Catalog>>>>;

struct Supervisor {
    options: AgentOptions,
    store: StoreHandle,
    key: SecretKey,
    stop: watch::Receiver<bool>,
    routes: Routes,
    wakers: Wakers,
    clusters: HashMap<(Option<PathBuf>, Option<String>), Arc<Cluster>>,
    /// The catalogs of `clusters`, shared with the audit attributor.
    catalogs: Catalogs,
    ready: Arc<Readiness>,
    limits: Limits,
    running: BTreeMap<String, RunningApp>,
    /// Shared with the HTTP server: the names the API acts on, the webhook sources.
    api_apps: crate::api::AppNames,
    hook_sources: webhook::Sources,
    /// The client App objects are watched with (their status is written with it).
    objects_client: Option<kube::Client>,
    /// With a Lease: every client that writes to a cluster refuses to once it may be lost.
    fence: Option<crate::lease::Fence>,
}

impl Supervisor {
    /// Starts `app`'s task; `status` writes its App object's status, if it has one.
    async fn start(
        &mut self,
        app: config::App,
        origin: Origin,
        status: Option<objects::StatusWriter>,
    ) -> Result<(), AgentError> {
        let target = (app.target.kubeconfig.clone(), app.target.context.clone());
        let cluster = match self.clusters.get(&target) {
            Some(c) => c.clone(),
            None => {
                let c = Arc::new(
                    connect(
                        &app,
                        &self.key,
                        &self.options.watch,
                        &self.routes,
                        &self.wakers,
                        self.fence.as_ref(),
                    )
                    .await?,
                );
                self.clusters.insert(target, c.clone());
                self.catalogs
                    .write()
                    .expect("catalogs lock")
                    .push(c.catalog.clone());
                c
            }
        };
        let spec = spec_for(&app).map_err(|source| AgentError::Source {
            app: app.name.clone(),
            source,
        })?;
        let source = GitSource::new(spec, &self.options.cache);
        let reconciler = Reconciler::new(
            app.clone(),
            source,
            self.store.clone(),
            self.key.clone(),
            cluster.catalog.clone(),
            Live::Watch(cluster.watch.clone()),
        )
        .with_limits(self.limits.clone());
        // Room for a fetch and a change at once; more is merged away.
        let (tx, inbox) = mpsc::channel(4);
        let (own_stop, own_stop_rx) = watch::channel(false);
        self.wakers
            .write()
            .expect("wakers lock")
            .insert(app.name.clone(), tx);
        self.api_apps
            .write()
            .expect("API app names lock")
            .push(app.name.clone());
        self.hook_sources
            .write()
            .expect("webhook sources lock")
            .push((app.name.clone(), app.source.url.clone()));
        let task = tokio::spawn(app_task(
            reconciler,
            inbox,
            self.routes.clone(),
            self.ready.clone(),
            [self.stop.clone(), own_stop_rx],
            self.options.jitter,
            status.map(|w| (w, self.store.clone())),
        ));
        tracing::info!(app = %app.name, from = %origin.describe(), "reconciling");
        self.running.insert(
            app.name.clone(),
            RunningApp {
                app,
                origin,
                stop: own_stop,
                task,
            },
        );
        Ok(())
    }

    /// Stops `name`'s task (its pass in flight finishes) and forgets its routes and readiness.
    async fn stop_app(&mut self, name: &str) {
        let Some(running) = self.running.remove(name) else {
            return;
        };
        let _ = running.stop.send(true);
        match running.task.await {
            Err(e) if e.is_cancelled() => {
                tracing::warn!(app = %name, "pass cancelled: the Lease was lost")
            }
            Err(e) => tracing::error!(app = %name, error = %e, "an App task ended abnormally"),
            Ok(()) => {}
        }
        self.wakers.write().expect("wakers lock").remove(name);
        self.api_apps
            .write()
            .expect("API app names lock")
            .retain(|a| a != name);
        self.hook_sources
            .write()
            .expect("webhook sources lock")
            .retain(|(id, _)| id != name);
        self.routes
            .write()
            .expect("routes lock")
            .retain(|_, app| app != name);
        self.ready.send_if_modified(|r| r.remove(name).is_some());
        tracing::info!(app = %name, "stopped reconciling");
    }

    /// An App object was created or changed: start, restart or leave its App; refuse it (in its
    /// status) when its spec is invalid or its name is taken.
    async fn object_applied(&mut self, object: crate::crd::App) {
        let Some(client) = self.objects_client.clone() else {
            return;
        };
        let (namespace, name) = objects::key_of(&object);
        let origin = Origin::Object {
            namespace: namespace.clone(),
        };
        let kubeconfig = self
            .options
            .app_objects
            .as_ref()
            .and_then(|o| o.kubeconfig.clone());
        let mut writer = objects::StatusWriter::new(client, &object, self.options.shards);
        let pin = object
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(crate::shard::LABEL))
            .cloned();
        match self.options.shards.owns(&namespace, &name, pin.as_deref()) {
            Ok(true) => {}
            Ok(false) => {
                // Another shard's (or pinned away since): only the owner writes its status.
                if self.running.get(&name).is_some_and(|r| r.origin == origin) {
                    tracing::info!(app = %name, %namespace, "now another shard's App");
                    self.stop_app(&name).await;
                }
                return;
            }
            Err(e) => {
                tracing::error!(app = %name, %namespace, error = %e, "App not reconciled");
                if self.running.get(&name).is_some_and(|r| r.origin == origin) {
                    self.stop_app(&name).await;
                }
                // It has no owner to write its status: shard 0 says why, once for the fleet.
                if self.options.shards.index == 0
                    && let Err(e) = writer.refuse("InvalidShard", e.to_string()).await
                {
                    tracing::warn!(error = %e, "writing the status of a refused App object");
                }
                return;
            }
        }
        let app = match crate::crd::to_config(&object, kubeconfig.as_deref()) {
            Ok(app) => app,
            Err(e) => {
                tracing::error!(error = %e, "App object refused");
                if self.running.get(&name).is_some_and(|r| r.origin == origin) {
                    self.stop_app(&name).await;
                }
                let message = match &e {
                    crate::crd::CrdError::InvalidSpec { key, message, .. } => {
                        format!("{key}: {message}")
                    }
                    other => other.to_string(),
                };
                if let Err(e) = writer.refuse("InvalidSpec", message).await {
                    tracing::warn!(error = %e, "writing the status of a refused App object");
                }
                return;
            }
        };
        // What an App object may read is the operator's call, not its creator's.
        if let Err(e) = crate::source::allow::check_object_source(
            &app.source.url,
            &self.options.source_rules(),
            &real_path,
        ) {
            tracing::error!(app = %name, %namespace, error = %e, "App object refused");
            if self.running.get(&name).is_some_and(|r| r.origin == origin) {
                self.stop_app(&name).await;
            }
            if let Err(e) = writer.refuse("SourceNotAllowed", e.to_string()).await {
                tracing::warn!(error = %e, "writing the status of a refused App object");
            }
            return;
        }
        if let Some(running) = self.running.get(&name) {
            if running.origin != origin {
                let message = format!(
                    "an App named {name} already comes from {}; App names are unique per agent",
                    running.origin.describe()
                );
                tracing::error!(app = %name, %namespace, "App object refused: {message}");
                if let Err(e) = writer.refuse("NameConflict", message).await {
                    tracing::warn!(error = %e, "writing the status of a refused App object");
                }
                return;
            }
            if running.app == app {
                // A status write (ours) or a change that does not change the App.
                return;
            }
            self.stop_app(&name).await;
        }
        if let Err(e) = self.start(app, origin, Some(writer)).await {
            tracing::error!(app = %name, error = %e, "starting an App from its object");
        }
    }

    async fn object_deleted(&mut self, namespace: &str, name: &str) {
        let origin = Origin::Object {
            namespace: namespace.to_string(),
        };
        if self.running.get(name).is_some_and(|r| r.origin == origin) {
            self.stop_app(name).await;
        }
    }

    /// After a (re-)list: Apps from objects that no longer exist stop.
    async fn objects_listed(&mut self, present: &std::collections::BTreeSet<(String, String)>) {
        let gone: Vec<(String, String)> = self
            .running
            .iter()
            .filter_map(|(name, r)| match &r.origin {
                Origin::Object { namespace }
                    if !present.contains(&(namespace.clone(), name.clone())) =>
                {
                    Some((namespace.clone(), name.clone()))
                }
                _ => None,
            })
            .collect();
        for (namespace, name) in gone {
            self.object_deleted(&namespace, &name).await;
        }
    }
}

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
    let requested = stop;
    let (halt, stop) = watch::channel(false);
    {
        let mut requested = requested.clone();
        let lost = lost.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = async { let _ = requested.wait_for(|s| *s).await; } => {}
                _ = lost_signal(lost) => {}
            }
            let _ = halt.send(true);
        });
    }
    let (ready, _) = watch::channel(BTreeMap::new());
    let mut supervisor = Supervisor {
        options: options.clone(),
        store: store.clone(),
        key,
        stop: stop.clone(),
        routes: Arc::default(),
        wakers: Arc::default(),
        clusters: HashMap::new(),
        catalogs: Arc::default(),
        ready: Arc::new(ready),
        limits: Limits::default(),
        running: BTreeMap::new(),
        api_apps: Arc::default(),
        hook_sources: Arc::default(),
        objects_client: None,
        fence,
    };
    // The file's Apps in dependency order; a file App that cannot start stops the agent (as
    // before App objects existed: the file is the operator's own, checked at start).
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

    let (changes_tx, mut changes) = mpsc::channel::<objects::ObjectChange>(64);
    if let Some(objects) = &options.app_objects {
        let client = crate::cluster::fenced_client(
            objects.kubeconfig.as_deref(),
            None,
            supervisor.fence.as_ref(),
        )
        .await
        .map_err(AgentError::AppObjects)?;
        supervisor.objects_client = Some(client.clone());
        tokio::spawn(objects::watch(
            client,
            objects.namespace.clone(),
            changes_tx,
        ));
    } else {
        drop(changes_tx);
    }

    let server = match options.listen {
        Some(addr) => Some(
            serve(
                addr,
                options,
                store.clone(),
                supervisor.wakers.clone(),
                supervisor.api_apps.clone(),
                supervisor.hook_sources.clone(),
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
                resource_of(supervisor.catalogs.clone()),
                stop.clone(),
            )
            .await?,
        ),
        None => None,
    };

    if supervisor.running.is_empty() && options.app_objects.is_none() {
        // Nothing to reconcile yet is not a reason to exit (a supervisor would restart it in
        // a loop): serve the health endpoints until stopped.
        tracing::warn!("the configuration lists no Apps; idle until stopped");
    }
    let mut stop_rx = stop.clone();
    let mut watching = options.app_objects.is_some();
    loop {
        tokio::select! {
            // Not the `Ref` itself: it is not Send, and the other arm awaits.
            _ = async { let _ = stop_rx.wait_for(|s| *s).await; } => break,
            change = changes.recv(), if watching => match change {
                Some(objects::ObjectChange::Applied(object)) => supervisor.object_applied(*object).await,
                Some(objects::ObjectChange::Deleted { namespace, name }) => {
                    supervisor.object_deleted(&namespace, &name).await
                }
                Some(objects::ObjectChange::Listed(present)) => supervisor.objects_listed(&present).await,
                None => watching = false,
            },
        }
    }
    let names: Vec<String> = supervisor.running.keys().cloned().collect();
    if lost.borrow().is_some() {
        // Another replica may be writing now: cancel the passes in flight (their applies,
        // prunes and status patches stop at their next await) instead of letting them finish.
        for running in supervisor.running.values() {
            running.task.abort();
        }
    }
    // Every task sees the stop too; wait for their passes in flight (or their cancellation).
    for name in names {
        supervisor.stop_app(&name).await;
    }
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
fn resource_of(catalogs: Catalogs) -> crate::audit::ResourceOf {
    Arc::new(move |object| {
        catalogs
            .read()
            .expect("catalogs lock")
            .iter()
            .find_map(|c| c.resolve_kind(&GroupKind::new(&object.group, &object.kind)))
            .map(|r| r.resource.plural)
    })
}

/// Serves `/healthz`, `/readyz`, the webhook endpoints, `/metrics` and the `/api/v1` routes
/// until stop.
async fn serve(
    addr: SocketAddr,
    options: &AgentOptions,
    store: StoreHandle,
    wakers: Wakers,
    apps: crate::api::AppNames,
    sources: webhook::Sources,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, AgentError> {
    let (tx, mut rx) = mpsc::channel::<WebhookTrigger>(64);
    let hooks = WebhookConfig {
        github_secret: options.webhooks.github.clone(),
        gitlab_token: options.webhooks.gitlab.clone(),
        generic_secret: options.webhooks.generic.clone(),
        sources,
    };
    let hook_wakers = wakers.clone();
    tokio::spawn(async move {
        while let Some(t) = rx.recv().await {
            if let Some(waker) = hook_wakers.read().expect("wakers lock").get(&t.source) {
                let _ = waker.try_send(Wake::Fetch);
            }
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
    let waker: crate::api::Waker =
        Arc::new(
            move |app: &str| match wakers.read().expect("wakers lock").get(app) {
                Some(w) => {
                    let _ = w.try_send(Wake::Changed);
                    true
                }
                None => false,
            },
        );
    let mut api =
        crate::api::ApiState::new(store, options.api_tokens.clone(), Vec::new(), Some(waker));
    api.apps = apps;
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
    // The web UI's address, so whoever started the agent can open it (docs/ui.md).
    tracing::info!(%addr, ui = %format!("http://{addr}{}", crate::ui::PATH), "listening");
    Ok(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        crate::listen::serve(listener, app, limits, shutdown).await;
    }))
}

/// One App until either stop (the agent's, or its own when the App changes or goes away).
/// With `status`, its App object's status is brought up to date before the first pass (after
/// the external anchor check) and after every pass.
async fn app_task(
    mut reconciler: Reconciler,
    mut inbox: mpsc::Receiver<Wake>,
    routes: Routes,
    ready: Arc<Readiness>,
    [mut stop, mut own_stop]: [watch::Receiver<bool>; 2],
    jitter: f64,
    mut status: Option<(objects::StatusWriter, StoreHandle)>,
) {
    let name = reconciler.app().name.clone();
    let deps = reconciler.app().depends_on.clone();
    let schedule = PollSchedule {
        interval: reconciler.app().source.interval,
        jitter,
    };
    let mut ready_rx = ready.subscribe();
    let mut next_fetch = tokio::time::Instant::now();
    let mut fetch_pending = true;
    // When the pending fetch was asked for (the poll's due time, a webhook's arrival): a fetch
    // of the same remote started since then answers it, so Apps polled together share one.
    let mut fetch_requested = std::time::Instant::now();
    let mut routed: Vec<ObjectKey> = Vec::new();
    // After a failed sync the next attempt waits (backoff), whatever wakes the App meanwhile:
    // a failure that every object shares (a missing namespace) is not retried at once.
    let mut not_before: Option<tokio::time::Instant> = None;
    if let Some((writer, store)) = status.as_mut() {
        let gap = match writer.check_anchor(store).await {
            Ok(gap) => gap.is_some(),
            Err(e) => {
                tracing::error!(app = %name, error = %e, "checking the App's status against the store");
                false
            }
        };
        // A new App says it is starting; a known one keeps its status until its first pass
        // (a restart of a thousand Apps is not two thousand status writes), unless the anchor
        // just found a gap, which is worth saying at once.
        if (gap || !writer.has_status())
            && let Err(e) = writer
                .after_pass(store, crate::crd::PassSummary::NotYet)
                .await
        {
            tracing::warn!(app = %name, error = %e, "writing the App's status");
        }
    }
    loop {
        if *stop.borrow() || *own_stop.borrow() {
            break;
        }
        let mut changed = false;
        if !fetch_pending {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = own_stop.wait_for(|s| *s) => break,
                wake = inbox.recv() => match wake {
                    Some(Wake::Fetch) => {
                        fetch_pending = true;
                        fetch_requested = std::time::Instant::now();
                    }
                    Some(Wake::Changed) => changed = true,
                    None => break,
                },
                _ = tokio::time::sleep_until(next_fetch) => {
                    fetch_pending = true;
                    fetch_requested = next_fetch.into_std();
                }
                _ = ready_rx.changed(), if !deps.is_empty() => changed = true,
            }
        }
        // Merge whatever else is queued into this pass.
        while let Ok(wake) = inbox.try_recv() {
            match wake {
                Wake::Fetch if !fetch_pending => {
                    fetch_pending = true;
                    fetch_requested = std::time::Instant::now();
                }
                Wake::Fetch => {}
                Wake::Changed => changed = true,
            }
        }
        if !(fetch_pending || changed) {
            continue;
        }
        if let Some(at) = not_before.take()
            && at > tokio::time::Instant::now()
        {
            tracing::debug!(app = %name, wait = ?(at - tokio::time::Instant::now()), "backing off after a failed sync");
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = own_stop.wait_for(|s| *s) => break,
                _ = tokio::time::sleep_until(at) => {}
            }
        }
        let blocked: Vec<String> = {
            let ready = ready_rx.borrow_and_update();
            deps.iter()
                .filter(|d| !ready.get(*d).copied().unwrap_or(false))
                .cloned()
                .collect()
        };
        if !blocked.is_empty() {
            tracing::debug!(app = %name, ?blocked, "waiting for dependencies");
            if fetch_pending {
                next_fetch = tokio::time::Instant::now() + schedule.next_delay(&mut rand::rng());
            }
            fetch_pending = false;
            continue;
        }
        let fetch = fetch_pending;
        if fetch {
            next_fetch = tokio::time::Instant::now() + schedule.next_delay(&mut rand::rng());
        }
        fetch_pending = false;
        let started = std::time::Instant::now();
        let passed = reconciler
            .pass(&PassOptions {
                fetch,
                fetch_requested: fetch.then_some(fetch_requested),
                progress: None,
            })
            .await;
        crate::metrics::METRICS.observe_reconcile(started.elapsed(), passed.is_ok());
        let passed = passed.map_err(|e| e.to_string());
        if let Some((writer, store)) = status.as_mut()
            && let Err(e) = writer
                .after_pass(store, crate::crd::PassSummary::of(&passed))
                .await
        {
            // The next pass (or poll) tries again; the status is not the record.
            tracing::warn!(app = %name, error = %e, "writing the App's status");
        }
        match passed {
            Ok(report) => {
                let ok = matches!(
                    report.status,
                    PassStatus::InSync
                        | PassStatus::Synced {
                            outcome: event::SyncOutcome::Succeeded,
                            ..
                        }
                ) && report.health == event::Health::Healthy;
                ready.send_if_modified(|r| r.insert(name.clone(), ok) != Some(ok));
                not_before = crate::reconcile::retry::backoff(report.failed_attempts)
                    .map(|d| tokio::time::Instant::now() + d);
                tracing::debug!(app = %name, status = ?report.status, "pass done");
            }
            Err(e) => {
                tracing::error!(app = %name, error = %e, "pass failed");
                ready.send_if_modified(|r| r.insert(name.clone(), false) != Some(false));
            }
        }
        // Route watch notifications of the objects it manages now.
        let managed = reconciler.managed().to_vec();
        if managed != routed {
            let mut r = routes.write().expect("routes lock");
            for key in &routed {
                if r.get(key) == Some(&name) {
                    r.remove(key);
                }
            }
            for key in &managed {
                r.insert(key.clone(), name.clone());
            }
            routed = managed;
        }
    }
    tracing::debug!(app = %name, "stopped");
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
