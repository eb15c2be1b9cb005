//! Owns `reckon run`: every App reconciled concurrently until a stop signal. Each App is one
//! task woken by its poll timer (with jitter), a webhook, or the cluster's shared watch when
//! one of its objects changes; Apps wait for the Apps they depend on to be synced and healthy.
//! On stop, in-flight passes finish, the store is flushed and closed, and `run` returns.

pub mod key;

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
    #[error("closing the store: {0}")]
    Close(#[source] StoreError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
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
    pub webhooks: WebhookSecrets,
    pub watch: WatchOptions,
    /// Up to this fraction of a poll interval is added at random to each wait.
    pub jitter: f64,
    /// Bearer tokens of the `/api/v1` routes; none configured means the API refuses every
    /// request (see docs/api.md).
    pub api_tokens: Arc<crate::api::auth::Tokens>,
    /// The audit webhook receiver and drift attribution (docs/audit.md); off when `None`.
    pub audit: Option<crate::audit::AuditOptions>,
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
            webhooks: WebhookSecrets::default(),
            watch: WatchOptions::default(),
            jitter: 0.1,
            api_tokens: Arc::default(),
            audit: None,
        }
    }
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

/// An App is ready for its dependents once a pass left it synced and healthy.
type Readiness = watch::Sender<BTreeMap<String, bool>>;

/// Opens the store, connects to each cluster and reconciles every App until `stop` resolves.
pub async fn run(
    options: AgentOptions,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let cfg = config::load(&options.config)?;
    let store = SledStore::open(
        &options.store,
        OpenOptions {
            create: true,
            ..Default::default()
        },
    )
    .map_err(|source| AgentError::Store {
        path: options.store.clone(),
        source,
    })?;
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
    handle
        .append(vec![started])
        .await
        .map_err(|source| AgentError::Store {
            path: options.store.clone(),
            source,
        })?;

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        stop.await;
        let _ = stop_tx.send(true);
    });

    let result = reconcile_all(&cfg, &options, handle.clone(), key, stop_rx).await;
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
    wakers: &Arc<HashMap<String, mpsc::Sender<Wake>>>,
) -> Result<Cluster, AgentError> {
    let client = crate::cluster::client(
        app.target.kubeconfig.as_deref(),
        app.target.context.as_deref(),
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
async fn route(
    mut batches: mpsc::Receiver<Vec<Change>>,
    routes: Routes,
    wakers: Arc<HashMap<String, mpsc::Sender<Wake>>>,
) {
    while let Some(batch) = batches.recv().await {
        let apps: std::collections::BTreeSet<String> = {
            let routes = routes.read().expect("routes lock");
            batch
                .iter()
                .filter_map(|c| routes.get(&c.object.key()).cloned())
                .collect()
        };
        for app in apps {
            if let Some(waker) = wakers.get(&app) {
                let _ = waker.try_send(Wake::Changed);
            }
        }
    }
}

async fn reconcile_all(
    cfg: &Config,
    options: &AgentOptions,
    store: StoreHandle,
    key: SecretKey,
    stop: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let routes: Routes = Arc::default();
    let mut wakers = HashMap::new();
    let mut inboxes = HashMap::new();
    for app in &cfg.apps {
        // Room for a fetch and a change at once; more is merged away.
        let (tx, rx) = mpsc::channel(4);
        wakers.insert(app.name.clone(), tx);
        inboxes.insert(app.name.clone(), rx);
    }
    let wakers = Arc::new(wakers);

    // One catalog and watch per cluster (kubeconfig and context).
    let mut clusters: HashMap<(Option<PathBuf>, Option<String>), Arc<Cluster>> = HashMap::new();
    let mut reconcilers = Vec::new();
    let limits = Limits::default();
    for app in cfg.sync_order() {
        let target = (app.target.kubeconfig.clone(), app.target.context.clone());
        let cluster = match clusters.get(&target) {
            Some(c) => c.clone(),
            None => {
                let c = Arc::new(connect(app, &key, &options.watch, &routes, &wakers).await?);
                clusters.insert(target, c.clone());
                c
            }
        };
        let spec = spec_for(app).map_err(|source| AgentError::Source {
            app: app.name.clone(),
            source,
        })?;
        let source = GitSource::new(spec, &options.cache);
        reconcilers.push(
            Reconciler::new(
                app.clone(),
                source,
                store.clone(),
                key.clone(),
                cluster.catalog.clone(),
                Live::Watch(cluster.watch.clone()),
            )
            .with_limits(limits.clone()),
        );
    }

    let server = match options.listen {
        Some(addr) => Some(
            serve(
                addr,
                cfg,
                options,
                store.clone(),
                wakers.clone(),
                stop.clone(),
            )
            .await?,
        ),
        None => None,
    };

    let audit = match &options.audit {
        Some(audit) => {
            let catalogs: Vec<Arc<Catalog>> =
                clusters.values().map(|c| c.catalog.clone()).collect();
            Some(
                crate::audit::start(
                    audit.clone(),
                    store.clone(),
                    resource_of(catalogs),
                    stop.clone(),
                )
                .await?,
            )
        }
        None => None,
    };

    let (ready, _) = watch::channel(BTreeMap::new());
    let ready = Arc::new(ready);
    let mut tasks = tokio::task::JoinSet::new();
    for reconciler in reconcilers {
        let inbox = inboxes
            .remove(&reconciler.app().name)
            .expect("an inbox per App");
        tasks.spawn(app_task(
            reconciler,
            inbox,
            routes.clone(),
            ready.clone(),
            stop.clone(),
            options.jitter,
        ));
    }
    if tasks.is_empty() {
        // Nothing to reconcile yet is not a reason to exit (a supervisor would restart it in
        // a loop): serve the health endpoints until stopped.
        tracing::warn!("the configuration lists no Apps; idle until stopped");
        let mut stop = stop.clone();
        let _ = stop.wait_for(|s| *s).await;
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            tracing::error!(error = %e, "an App task ended abnormally");
        }
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
fn resource_of(catalogs: Vec<Arc<Catalog>>) -> crate::audit::ResourceOf {
    Arc::new(move |object| {
        catalogs
            .iter()
            .find_map(|c| c.resolve_kind(&GroupKind::new(&object.group, &object.kind)))
            .map(|r| r.resource.plural)
    })
}

/// Serves `/healthz`, `/readyz`, the webhook endpoints, `/metrics` and the `/api/v1` routes
/// until stop.
async fn serve(
    addr: SocketAddr,
    cfg: &Config,
    options: &AgentOptions,
    store: StoreHandle,
    wakers: Arc<HashMap<String, mpsc::Sender<Wake>>>,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, AgentError> {
    let (tx, mut rx) = mpsc::channel::<WebhookTrigger>(64);
    let hooks = WebhookConfig {
        github_secret: options.webhooks.github.clone(),
        gitlab_token: options.webhooks.gitlab.clone(),
        generic_secret: options.webhooks.generic.clone(),
        sources: cfg
            .apps
            .iter()
            .map(|a| (a.name.clone(), a.source.url.clone()))
            .collect(),
    };
    let hook_wakers = wakers.clone();
    tokio::spawn(async move {
        while let Some(t) = rx.recv().await {
            if let Some(waker) = hook_wakers.get(&t.source) {
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
    let apps = cfg.apps.iter().map(|a| a.name.clone()).collect();
    // A recorded rollback or resume is acted on by a pass now; the pass reads the intent from
    // the store, so a plain re-plan (no fetch) is enough. A full inbox already holds a pending
    // pass, which will read the new intent too.
    let waker: crate::api::Waker = Arc::new(move |app: &str| match wakers.get(app) {
        Some(w) => {
            let _ = w.try_send(Wake::Changed);
            true
        }
        None => false,
    });
    let api = crate::api::ApiState::new(store, options.api_tokens.clone(), apps, Some(waker));
    let app = webhook::router(hooks, tx).merge(crate::api::router(api));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Listen { addr, source })?;
    tracing::info!(%addr, "listening");
    Ok(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "HTTP server failed");
        }
    }))
}

async fn app_task(
    mut reconciler: Reconciler,
    mut inbox: mpsc::Receiver<Wake>,
    routes: Routes,
    ready: Arc<Readiness>,
    mut stop: watch::Receiver<bool>,
    jitter: f64,
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
    let mut routed: Vec<ObjectKey> = Vec::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let mut changed = false;
        if !fetch_pending {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                wake = inbox.recv() => match wake {
                    Some(Wake::Fetch) => fetch_pending = true,
                    Some(Wake::Changed) => changed = true,
                    None => break,
                },
                _ = tokio::time::sleep_until(next_fetch) => fetch_pending = true,
                _ = ready_rx.changed(), if !deps.is_empty() => changed = true,
            }
        }
        // Merge whatever else is queued into this pass.
        while let Ok(wake) = inbox.try_recv() {
            match wake {
                Wake::Fetch => fetch_pending = true,
                Wake::Changed => changed = true,
            }
        }
        if !(fetch_pending || changed) {
            continue;
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
                progress: None,
            })
            .await;
        crate::metrics::METRICS.observe_reconcile(started.elapsed(), passed.is_ok());
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
