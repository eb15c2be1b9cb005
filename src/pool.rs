//! Owns the cluster pool: one connection per target cluster (kubeconfig and context) — a kube
//! client, its discovery catalog and, when asked for, a watch of its Apps' objects — shared by
//! every App on that cluster. The agent and `reckon sync` both connect their Apps through it.

use crate::apply::{Catalog, DiscoveryError};
use crate::cluster::ClusterError;
use crate::config::App;
use crate::plan::GroupKind;
use crate::render::SecretKey;
use crate::watch::{AppWatch, Change, WatchOptions};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}

/// A target cluster: kubeconfig path and context.
pub type ClusterKey = (Option<PathBuf>, Option<String>);

/// The cluster an App reaches.
pub fn key_of(app: &App) -> ClusterKey {
    (app.target.kubeconfig.clone(), app.target.context.clone())
}

/// Which objects a cluster's watch follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchScope {
    /// No watch: the Apps read live objects directly.
    None,
    /// The objects of the first App connected (a single App watches only its own).
    OneApp,
    /// The objects of every App, one shared set of watches (one list per kind).
    AllApps,
}

/// How the pool connects.
#[derive(Clone)]
pub struct PoolOptions {
    pub key: SecretKey,
    pub watch: WatchOptions,
    pub scope: WatchScope,
    /// Wait this long for the built-in kinds to be served: right after an API server starts,
    /// discovery can miss groups (the agent may start with its cluster).
    pub settle: Option<Duration>,
    /// With a Lease: every client that writes refuses to once it may be lost.
    pub fence: Option<crate::lease::Fence>,
}

/// One connected cluster.
pub struct Connected {
    /// Discovery and requests with the agent's own credentials.
    pub catalog: Arc<Catalog>,
    pub watch: Option<Arc<RwLock<AppWatch>>>,
    /// What the agent's client was built from: impersonating clients are built from it.
    config: kube::Config,
    fence: Option<crate::lease::Fence>,
    /// One catalog per identity Apps act as (`service_account`), made when first asked for.
    identities: Mutex<HashMap<String, Arc<Catalog>>>,
}

impl Connected {
    /// The catalog `app` makes its requests through, and how it reads live objects. An App
    /// with a `service_account` makes every request (reads of its objects, applies, prunes,
    /// health reads, the listing of a Namespace before pruning it) impersonating it, so the
    /// cluster's RBAC decides what it may do; it reads its objects with one GET each, not from
    /// the shared watch, which lists with the agent's rights. Discovery stays the agent's.
    pub fn for_app(
        &self,
        app: &App,
    ) -> Result<(Arc<Catalog>, crate::reconcile::Live), ClusterError> {
        let Some(sa) = &app.service_account else {
            let live = match &self.watch {
                Some(watch) => crate::reconcile::Live::Watch(watch.clone()),
                None => crate::reconcile::Live::Direct,
            };
            return Ok((self.catalog.clone(), live));
        };
        let user = sa.user();
        let mut identities = self.identities.lock().unwrap_or_else(|e| e.into_inner());
        let catalog = match identities.get(&user) {
            Some(c) => c.clone(),
            None => {
                let config = crate::cluster::impersonating(&self.config, &user);
                let client = crate::cluster::build_client(config, self.fence.as_ref())?;
                let c = Arc::new(self.catalog.acting_as(client, &user));
                identities.insert(user, c.clone());
                c
            }
        };
        Ok((catalog, crate::reconcile::Live::Direct))
    }
}

/// The connected clusters, by key.
pub struct Pool {
    options: PoolOptions,
    clusters: HashMap<ClusterKey, Arc<Connected>>,
}

/// A connection just made: the watch's change batches go to whoever routes them (unread, the
/// debouncer merges them; dropped, the watch stops updating its cache).
pub struct NewCluster {
    pub connected: Arc<Connected>,
    pub changes: Option<mpsc::Receiver<Vec<Change>>>,
}

impl Pool {
    pub fn new(options: PoolOptions) -> Pool {
        Pool {
            options,
            clusters: HashMap::new(),
        }
    }

    /// `app`'s cluster, connected now if no App reached it before (then with its changes).
    pub async fn connect(
        &mut self,
        app: &App,
    ) -> Result<(Arc<Connected>, Option<NewCluster>), PoolError> {
        let key = key_of(app);
        if let Some(c) = self.clusters.get(&key) {
            return Ok((c.clone(), None));
        }
        let new = self.open(app).await?;
        self.clusters.insert(key, new.connected.clone());
        Ok((new.connected.clone(), Some(new)))
    }

    async fn open(&self, app: &App) -> Result<NewCluster, PoolError> {
        let o = &self.options;
        let config = crate::cluster::load_config(
            app.target.kubeconfig.as_deref(),
            app.target.context.as_deref(),
        )
        .await?;
        let client = crate::cluster::build_client(config.clone(), o.fence.as_ref())?;
        let catalog = Catalog::new(client.clone()).await?;
        if let Some(wait) = o.settle {
            let builtin = [
                GroupKind::new("apps", "Deployment"),
                GroupKind::new("apiextensions.k8s.io", "CustomResourceDefinition"),
            ];
            let missing = catalog.wait_for_kinds(&builtin, wait).await;
            if !missing.is_empty() {
                tracing::warn!(?missing, "the cluster does not serve these kinds yet");
            }
        }
        let (watch, changes) = match o.scope {
            WatchScope::None => (None, None),
            WatchScope::OneApp => {
                let (w, c) = AppWatch::new(client, &app.name, o.key.clone(), o.watch.clone());
                (Some(w), Some(c))
            }
            WatchScope::AllApps => {
                let (w, c) = AppWatch::for_all_apps(client, o.key.clone(), o.watch.clone());
                (Some(w), Some(c))
            }
        };
        Ok(NewCluster {
            connected: Arc::new(Connected {
                catalog: Arc::new(catalog),
                watch: watch.map(|w| Arc::new(RwLock::new(w))),
                config,
                fence: o.fence.clone(),
                identities: Mutex::new(HashMap::new()),
            }),
            changes,
        })
    }
}
