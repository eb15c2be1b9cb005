//! Owns the registry of running Apps (each one's inbox and remote URL) and the cluster catalogs
//! they reach. The supervisor is its only writer: starting or stopping an App publishes a new
//! immutable snapshot over a watch channel, so every reader (the webhook and API handlers, the
//! watch routers, the audit attributor) sees an App either wholly there or wholly gone. Which
//! App manages which object is an index of its own, owned by each cluster's router task.

use super::schedule::Wake;
use crate::apply::Catalog;
use crate::plan::{GroupKind, ObjectKey};
use crate::watch::Change;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// One running App, as the rest of the agent sees it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its task's inbox: a full one already holds a pending pass, so wake-ups are `try_send`.
    pub inbox: mpsc::Sender<Wake>,
    /// Its source's remote URL (webhooks name repositories).
    pub url: String,
}

/// An immutable snapshot of the running Apps and the clusters they reach.
#[derive(Clone, Default)]
pub struct Registry {
    /// A persistent map: each App started or stopped publishes a new snapshot, and copying a
    /// `BTreeMap` for it made starting N Apps O(N²) — at 10,000 Apps the largest share of the
    /// agent's CPU (the scale benchmark's profile). A new snapshot shares all but one path.
    apps: imbl::OrdMap<String, Entry>,
    /// One catalog per connected cluster, in the order they were connected.
    catalogs: Vec<Arc<Catalog>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("apps", &self.apps)
            .field("catalogs", &self.catalogs.len())
            .finish()
    }
}

impl Registry {
    pub fn with_app(&self, name: &str, entry: Entry) -> Registry {
        let mut next = self.clone();
        next.apps.insert(name.to_string(), entry);
        next
    }

    pub fn without_app(&self, name: &str) -> Registry {
        let mut next = self.clone();
        next.apps.remove(name);
        next
    }

    pub fn with_catalog(&self, catalog: Arc<Catalog>) -> Registry {
        let mut next = self.clone();
        next.catalogs.push(catalog);
        next
    }

    pub fn contains(&self, app: &str) -> bool {
        self.apps.contains_key(app)
    }

    /// Sends `app` a wake-up; false when no such App runs. A full inbox already holds a pass,
    /// which will see whatever this wake-up was about.
    pub fn wake(&self, app: &str, wake: Wake) -> bool {
        match self.apps.get(app) {
            Some(entry) => {
                let _ = entry.inbox.try_send(wake);
                true
            }
            None => false,
        }
    }

    /// The Apps whose source URL `matches`.
    pub fn apps_where(&self, matches: &dyn Fn(&str) -> bool) -> Vec<String> {
        self.apps
            .iter()
            .filter(|(_, e)| matches(&e.url))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The users the agent's credentials are on its clusters (those that can say).
    pub fn reckon_users(&self) -> Vec<String> {
        self.catalogs
            .iter()
            .filter_map(|c| c.whoami().map(str::to_string))
            .collect()
    }

    /// The plural resource of a kind, from the first catalog that serves it.
    pub fn resource_of(&self, kind: &GroupKind) -> Option<String> {
        self.catalogs
            .iter()
            .find_map(|c| c.resolve_kind(kind))
            .map(|r| r.resource.plural)
    }
}

/// The readers' side: a snapshot is taken with `borrow().clone()` (an `Arc`), never held
/// across an await.
pub type Snapshot = watch::Receiver<Arc<Registry>>;

/// The webhook receiver's view: the sources it may trigger are the running Apps.
#[derive(Debug)]
pub struct WebhookSources(pub Snapshot);

impl crate::source::webhook::SourceList for WebhookSources {
    fn ids_where(&self, matches: &dyn Fn(&str) -> bool) -> Vec<String> {
        self.0.borrow().clone().apps_where(matches)
    }
}

/// A change to the index of which App manages which object on one cluster.
#[derive(Debug)]
pub enum RouteUpdate {
    /// `app` manages exactly these objects now.
    Managed { app: String, keys: Vec<ObjectKey> },
    /// `app` stopped: it manages nothing.
    Forget(String),
}

/// Which App manages which object: the objects' App label says which Apps may own it, this
/// says which one does now (after its last pass).
#[derive(Debug, Default)]
pub struct Routes {
    owner: HashMap<ObjectKey, String>,
    by_app: HashMap<String, Vec<ObjectKey>>,
}

impl Routes {
    pub fn update(&mut self, update: RouteUpdate) {
        let (app, keys) = match update {
            RouteUpdate::Managed { app, keys } => (app, keys),
            RouteUpdate::Forget(app) => (app, Vec::new()),
        };
        // Another App may have taken an object over since: only this App's routes go.
        for key in self.by_app.remove(&app).unwrap_or_default() {
            if self.owner.get(&key) == Some(&app) {
                self.owner.remove(&key);
            }
        }
        for key in &keys {
            self.owner.insert(key.clone(), app.clone());
        }
        if !keys.is_empty() {
            self.by_app.insert(app, keys);
        }
    }

    /// The Apps to wake for a batch of changed objects (each once).
    pub fn apps_for<'a>(
        &self,
        changed: impl IntoIterator<Item = &'a ObjectKey>,
    ) -> BTreeSet<String> {
        changed
            .into_iter()
            .filter_map(|k| self.owner.get(k).cloned())
            .collect()
    }
}

/// One cluster's router: owns its [`Routes`] and sends each changed object's App a wake-up
/// (merged: one pending wake-up is enough), until the watch ends.
pub async fn route(
    mut batches: mpsc::Receiver<Vec<Change>>,
    mut updates: mpsc::UnboundedReceiver<RouteUpdate>,
    registry: Snapshot,
) {
    let mut routes = Routes::default();
    loop {
        tokio::select! {
            // Updates first: a pass's new objects are routed before the changes it caused.
            biased;
            Some(update) = updates.recv() => routes.update(update),
            batch = batches.recv() => {
                let Some(batch) = batch else { break };
                let keys: Vec<ObjectKey> = batch.iter().map(|c| c.object.key()).collect();
                let apps = routes.apps_for(&keys);
                let registry = registry.borrow().clone();
                for app in apps {
                    registry.wake(&app, Wake::Changed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: Some("ns".into()),
            name: name.into(),
        }
    }

    fn managed(app: &str, names: &[&str]) -> RouteUpdate {
        RouteUpdate::Managed {
            app: app.into(),
            keys: names.iter().map(|n| key(n)).collect(),
        }
    }

    #[test]
    fn changes_route_to_the_managing_app_once() {
        let mut routes = Routes::default();
        routes.update(managed("web", &["a", "b"]));
        routes.update(managed("db", &["c"]));
        let apps = routes.apps_for(&[key("a"), key("b"), key("x")]);
        assert_eq!(apps, BTreeSet::from(["web".to_string()]));
        let apps = routes.apps_for(&[key("a"), key("c")]);
        assert_eq!(apps, BTreeSet::from(["db".to_string(), "web".to_string()]));
    }

    #[test]
    fn a_new_managed_set_replaces_the_old_one() {
        let mut routes = Routes::default();
        routes.update(managed("web", &["a", "b"]));
        routes.update(managed("web", &["b", "c"]));
        assert!(routes.apps_for(&[key("a")]).is_empty());
        assert_eq!(routes.apps_for(&[key("c")]).len(), 1);
    }

    #[test]
    fn forgetting_an_app_keeps_objects_another_app_took_over() {
        let mut routes = Routes::default();
        routes.update(managed("old", &["a", "b"]));
        routes.update(managed("new", &["b"]));
        routes.update(RouteUpdate::Forget("old".into()));
        assert!(routes.apps_for(&[key("a")]).is_empty());
        assert_eq!(
            routes.apps_for(&[key("b")]),
            BTreeSet::from(["new".to_string()])
        );
        assert!(!routes.by_app.contains_key("old"));
    }

    #[test]
    fn the_registry_wakes_only_running_apps_and_matches_urls() {
        let (tx, mut rx) = mpsc::channel(1);
        let entry = Entry {
            inbox: tx,
            url: "https://git.example.com/web.git".into(),
        };
        let registry = Registry::default().with_app("web", entry);
        assert!(registry.contains("web"));
        assert!(registry.wake("web", Wake::Fetch));
        // A full inbox merges the wake-up away, and still counts as woken.
        assert!(registry.wake("web", Wake::Changed));
        assert_eq!(rx.try_recv().ok(), Some(Wake::Fetch));
        assert!(rx.try_recv().is_err());
        assert!(!registry.wake("db", Wake::Fetch));
        assert_eq!(
            registry.apps_where(&|u| u.contains("web")),
            vec!["web".to_string()]
        );
        let gone = registry.without_app("web");
        assert!(!gone.contains("web"));
        // The old snapshot is unchanged: readers holding it see a consistent set.
        assert!(registry.contains("web"));
    }
}
