//! Owns the running Apps: starts, restarts and stops their tasks as Apps come and go (from the
//! file at start, from App objects while the agent runs), connects them to their clusters
//! through one pool, and is the only writer of the [`Registry`] every other part reads.

use super::app::{AppTask, Readiness};
use super::registry::{self, Entry, Registry, RouteUpdate};
use super::{AgentError, AgentOptions, objects, real_path};
use crate::config;
use crate::pool::{ClusterKey, Pool, PoolError, PoolOptions, WatchScope};
use crate::reconcile::{Limits, Reconciler};
use crate::render::SecretKey;
use crate::source::config::source_for;
use crate::store::writer::StoreHandle;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Where a running App came from: the file, or an App object (its namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    File,
    Object { namespace: String, name: String },
}

impl Origin {
    fn describe(&self) -> String {
        match self {
            Origin::File => "the configuration file".to_string(),
            Origin::Object { namespace, name } => format!("App object {namespace}/{name}"),
        }
    }
}

struct RunningApp {
    app: config::App,
    origin: Origin,
    cluster: ClusterKey,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Whether an App object is this agent's to reconcile.
enum Admission {
    App(Box<config::App>),
    /// Another shard's (or pinned away since): only its owner writes its status.
    NotOurs,
    /// Refused: `reason` and `message` go to its status when `report`.
    Refused {
        reason: &'static str,
        message: String,
        report: bool,
    },
}

pub(super) struct Supervisor {
    options: AgentOptions,
    store: StoreHandle,
    key: SecretKey,
    stop: watch::Receiver<bool>,
    pool: Pool,
    /// Each connected cluster's router (which App manages which object).
    routers: HashMap<ClusterKey, mpsc::UnboundedSender<RouteUpdate>>,
    /// The one writer's end of the registry.
    registry: watch::Sender<Arc<Registry>>,
    ready: Arc<Readiness>,
    limits: Limits,
    running: BTreeMap<String, RunningApp>,
    /// The client App objects are watched with (their status is written with it).
    pub(super) objects_client: Option<kube::Client>,
    /// The configuration file's policies, which App objects may reference.
    pub(super) policies: Vec<config::Policy>,
    /// The configuration file's App names (all of them, this shard's or not): a previous
    /// reckon's history under such a name is the file App's, never an App object's.
    pub(super) file_apps: BTreeSet<String>,
    /// Policy objects by name, as read (App objects may reference them).
    object_policies: BTreeMap<String, config::Policy>,
    /// The App objects as last seen, to admit again when a Policy they reference changes.
    objects: BTreeMap<(String, String), crate::crd::App>,
}

impl Supervisor {
    pub(super) fn new(
        options: &AgentOptions,
        store: StoreHandle,
        key: SecretKey,
        stop: watch::Receiver<bool>,
        fence: Option<crate::lease::Fence>,
    ) -> Supervisor {
        let pool = Pool::new(PoolOptions {
            key: key.clone(),
            watch: options.watch.clone(),
            scope: WatchScope::AllApps,
            settle: Some(Duration::from_secs(30)),
            fence,
        });
        Supervisor {
            options: options.clone(),
            store,
            key,
            stop,
            pool,
            routers: HashMap::new(),
            registry: watch::channel(Arc::default()).0,
            ready: Arc::new(watch::channel(BTreeMap::new()).0),
            limits: Limits::default(),
            running: BTreeMap::new(),
            objects_client: None,
            policies: Vec::new(),
            file_apps: BTreeSet::new(),
            object_policies: BTreeMap::new(),
            objects: BTreeMap::new(),
        }
    }

    /// What every App's source may cost from now on (`limits:` of the configuration file).
    pub(super) fn set_input_limits(&mut self, input: crate::config::InputLimits) {
        self.limits.input = input;
    }

    /// A reader of the registry.
    pub(super) fn registry(&self) -> registry::Snapshot {
        self.registry.subscribe()
    }

    pub(super) fn is_idle(&self) -> bool {
        self.running.is_empty()
    }

    /// Publishes the next snapshot, made from the current one.
    fn publish(&self, next: impl FnOnce(&Registry) -> Registry) {
        let next = next(&self.registry.borrow());
        self.registry.send_replace(Arc::new(next));
    }

    /// `app`'s cluster; a new one gets its router and its catalog in the registry.
    async fn cluster(
        &mut self,
        app: &config::App,
    ) -> Result<Arc<crate::pool::Connected>, AgentError> {
        let (cluster, new) = self.pool.connect(app).await.map_err(|e| match e {
            PoolError::Cluster(source) => AgentError::Cluster {
                app: app.name.clone(),
                source,
            },
            PoolError::Discovery(source) => AgentError::Discovery {
                app: app.name.clone(),
                source,
            },
        })?;
        if let Some(new) = new {
            let (tx, updates) = mpsc::unbounded_channel();
            if let Some(changes) = new.changes {
                tokio::spawn(registry::route(changes, updates, self.registry()));
            }
            self.routers.insert(crate::pool::key_of(app), tx);
            self.publish(|r| r.with_catalog(cluster.catalog.clone()));
        }
        Ok(cluster)
    }

    /// Starts `app`'s task; `status` writes its App object's status, if it has one.
    pub(super) async fn start(
        &mut self,
        app: config::App,
        origin: Origin,
        status: Option<objects::StatusWriter>,
    ) -> Result<(), AgentError> {
        let cluster = self.cluster(&app).await?;
        let source =
            source_for(&app, &self.options.cache).map_err(|source| AgentError::Source {
                app: app.name.clone(),
                source,
            })?;
        let (catalog, live) = cluster
            .for_app(&app)
            .map_err(|source| AgentError::Cluster {
                app: app.name.clone(),
                source,
            })?;
        let reconciler = Reconciler::new(
            app.clone(),
            source,
            self.store.clone(),
            self.key.clone(),
            catalog,
            live,
        )
        .with_limits(self.limits.clone());
        // Room for a fetch and a change at once; more is merged away.
        let (tx, inbox) = mpsc::channel(4);
        let (own_stop, own_stop_rx) = watch::channel(false);
        let key = crate::pool::key_of(&app);
        let entry = Entry {
            inbox: tx,
            url: app.source.url.clone(),
        };
        self.publish(|r| r.with_app(&app.name, entry));
        let task = tokio::spawn(
            AppTask {
                reconciler,
                inbox,
                routes: self.routers[&key].clone(),
                ready: self.ready.clone(),
                stops: [self.stop.clone(), own_stop_rx],
                jitter: self.options.jitter,
                status: status.map(|w| (w, self.store.clone())),
            }
            .run(),
        );
        tracing::info!(app = %app.name, from = %origin.describe(), "reconciling");
        let running = RunningApp {
            app,
            origin,
            cluster: key,
            stop: own_stop,
            task,
        };
        self.running.insert(running.app.name.clone(), running);
        Ok(())
    }

    /// Stops `name`'s task (its pass in flight finishes) and forgets its routes and readiness.
    pub(super) async fn stop_app(&mut self, name: &str) {
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
        self.publish(|r| r.without_app(name));
        if let Some(router) = self.routers.get(&running.cluster) {
            let _ = router.send(RouteUpdate::Forget(name.to_string()));
        }
        self.ready.send_if_modified(|r| r.remove(name).is_some());
        tracing::info!(app = %name, "stopped reconciling");
    }

    /// Stops every App: at once (their passes cancelled) when the Lease was lost, else after
    /// their passes in flight.
    pub(super) async fn stop_all(&mut self, cancel: bool) {
        if cancel {
            // Another replica may be writing now: cancel the passes in flight (their applies,
            // prunes and status patches stop at their next await) instead of letting them
            // finish.
            for running in self.running.values() {
                running.task.abort();
            }
        }
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            self.stop_app(&name).await;
        }
    }

    fn runs_from(&self, name: &str, origin: &Origin) -> bool {
        self.running.get(name).is_some_and(|r| r.origin == *origin)
    }

    /// Whether `object` is this agent's to reconcile, and as which App.
    fn admit(&self, object: &crate::crd::App, namespace: &str, name: &str) -> Admission {
        let pin = object
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(crate::shard::LABEL));
        match self
            .options
            .shards
            .owns(namespace, name, pin.map(String::as_str))
        {
            Ok(true) => {}
            Ok(false) => return Admission::NotOurs,
            Err(e) => {
                tracing::error!(app = %name, %namespace, error = %e, "App not reconciled");
                // It has no owner to write its status: shard 0 says why, once for the fleet.
                return Admission::Refused {
                    reason: "InvalidShard",
                    message: e.to_string(),
                    report: self.options.shards.index == 0,
                };
            }
        }
        let kubeconfig = self
            .options
            .app_objects
            .as_ref()
            .and_then(|o| o.kubeconfig.as_deref());
        let mut app = match crate::crd::to_config(object, kubeconfig) {
            Ok(app) => app,
            Err(e) => {
                tracing::error!(error = %e, "App object refused");
                let message = match &e {
                    crate::crd::CrdError::InvalidSpec { key, message, .. } => {
                        format!("{key}: {message}")
                    }
                    other => other.to_string(),
                };
                return Admission::Refused {
                    reason: "InvalidSpec",
                    message,
                    report: true,
                };
            }
        };
        // What an App object may read is the operator's call, not its creator's: its source
        // and the repositories its chart's dependencies may come from alike.
        let rules = self.options.source_rules();
        let dependency_repositories = app
            .helm
            .iter()
            .flat_map(|h| h.repositories.iter().map(|r| r.url.as_str()));
        if let Err(e) = std::iter::once(app.source.url.as_str())
            .chain(dependency_repositories)
            .try_for_each(|url| crate::source::allow::check_object_source(url, &rules, &real_path))
        {
            tracing::error!(app = %name, %namespace, error = %e, "App object refused");
            return Admission::Refused {
                reason: "SourceNotAllowed",
                message: e.to_string(),
                report: true,
            };
        }
        // As whom it acts and where it may write are the operator's call too. The file's
        // policies come first: of two of one name, the file's holds.
        let policies: Vec<config::Policy> = self
            .policies
            .iter()
            .chain(self.object_policies.values())
            .cloned()
            .collect();
        if let Err(e) = crate::config::policy::bound_app_object(
            &mut app,
            namespace,
            &self.options.tenancy,
            &policies,
        ) {
            tracing::error!(app = %name, %namespace, error = %e, "App object refused");
            return Admission::Refused {
                reason: e.reason(),
                message: e.to_string(),
                report: true,
            };
        }
        Admission::App(Box::new(app))
    }

    /// An App object was created or changed: start, restart or leave its App; refuse it (in its
    /// status) when its spec is invalid or its name is taken.
    pub(super) async fn object_applied(&mut self, object: crate::crd::App) {
        let Some(client) = self.objects_client.clone() else {
            return;
        };
        let (namespace, name) = objects::key_of(&object);
        self.objects
            .insert((namespace.clone(), name.clone()), object.clone());
        let identity = crate::model::identity::of_object(&namespace, &name);
        let origin = Origin::Object {
            namespace: namespace.clone(),
            name: name.clone(),
        };
        let mut writer = objects::StatusWriter::new(
            client,
            &object,
            self.options.shards,
            self.options.latest_checkpoint.clone(),
        );
        writer.shadows_file_app = self.file_apps.contains(&name);
        let app = match self.admit(&object, &namespace, &name) {
            Admission::App(app) => *app,
            Admission::NotOurs => {
                if self.runs_from(&identity, &origin) {
                    tracing::info!(app = %identity, "now another shard's App");
                    self.stop_app(&identity).await;
                }
                return;
            }
            Admission::Refused {
                reason,
                message,
                report,
            } => {
                if self.runs_from(&identity, &origin) {
                    self.stop_app(&identity).await;
                }
                if report && let Err(e) = writer.refuse(reason, message).await {
                    tracing::warn!(error = %e, "writing the status of a refused App object");
                }
                return;
            }
        };
        // Identities of App objects cannot equal a file App's name (they have a dot) nor each
        // other (namespace and name are unique): a clash means a bug, refused all the same.
        if let Some(running) = self.running.get(&app.name) {
            if running.origin != origin {
                let message = format!(
                    "App {} already comes from {}; App identities are unique per agent",
                    app.name,
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
            self.stop_app(&identity).await;
        }
        if let Err(e) = self.start(app, origin, Some(writer)).await {
            tracing::error!(app = %identity, error = %e, "starting an App from its object");
        }
    }

    pub(super) async fn object_deleted(&mut self, namespace: &str, name: &str) {
        self.objects
            .remove(&(namespace.to_string(), name.to_string()));
        let origin = Origin::Object {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let identity = crate::model::identity::of_object(namespace, name);
        if self.runs_from(&identity, &origin) {
            self.stop_app(&identity).await;
        }
    }

    /// After a (re-)list: Apps from objects that no longer exist stop.
    pub(super) async fn objects_listed(&mut self, present: &BTreeSet<(String, String)>) {
        self.objects.retain(|key, _| present.contains(key));
        let gone: Vec<(String, String)> = self
            .running
            .values()
            .filter_map(|r| match &r.origin {
                Origin::Object { namespace, name }
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

    pub(super) async fn object_changed(&mut self, change: objects::ObjectChange) {
        match change {
            objects::ObjectChange::Applied(object) => self.object_applied(*object).await,
            objects::ObjectChange::Deleted { namespace, name } => {
                self.object_deleted(&namespace, &name).await
            }
            objects::ObjectChange::Listed(present) => self.objects_listed(&present).await,
            objects::ObjectChange::PolicyApplied(policy) => self.policy_applied(&policy).await,
            objects::ObjectChange::PolicyDeleted(name) => self.policy_gone(&name).await,
            objects::ObjectChange::PoliciesListed(present) => {
                let gone: Vec<String> = self
                    .object_policies
                    .keys()
                    .filter(|n| !present.contains(*n))
                    .cloned()
                    .collect();
                for name in gone {
                    self.policy_gone(&name).await;
                }
            }
        }
    }

    /// A Policy object was created or changed: the App objects that reference it are admitted
    /// again, so an App whose bounds changed restarts and its next pass (at once) applies
    /// under them. A Policy that does not read as a policy counts as absent.
    async fn policy_applied(&mut self, object: &crate::crd::policy::Policy) {
        let name = object.metadata.name.clone().unwrap_or_default();
        match crate::crd::policy::to_config(object) {
            Ok(policy) => {
                if self.object_policies.get(&name) == Some(&policy) {
                    return;
                }
                tracing::info!(policy = %name, "Policy object read");
                self.object_policies.insert(name.clone(), policy);
            }
            Err(e) => {
                tracing::error!(policy = %name, error = %e, "Policy object refused: it counts as absent");
                if self.object_policies.remove(&name).is_none() {
                    return;
                }
            }
        }
        self.readmit(&name).await;
    }

    async fn policy_gone(&mut self, name: &str) {
        if self.object_policies.remove(name).is_some() {
            tracing::info!(policy = %name, "Policy object deleted");
            self.readmit(name).await;
        }
    }

    /// Admits again every App object that references the policy `name`.
    async fn readmit(&mut self, name: &str) {
        let using: Vec<crate::crd::App> = self
            .objects
            .values()
            .filter(|o| o.spec.policy.as_deref() == Some(name))
            .cloned()
            .collect();
        for object in using {
            self.object_applied(object).await;
        }
    }
}
