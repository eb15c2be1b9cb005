//! Owns drift signals: one kube-runtime watcher and compact live cache per kind an App manages
//! (selected by its `reckon.dev/app` label), the live cache that answers the planner's
//! [`Observed`] input, and debounced "object changed / deleted" notifications so the agent
//! re-plans soon after someone else touches an object.
//!
//! Each kind runs as one task owning its store writer: it applies watch events, and on a timer
//! re-lists the kind (a periodic full resync, the backup for anything a watch may miss) by
//! feeding the list through the same path as a watch restart. A restart or resync compares
//! the listed objects with the store and reports the differences, so an object deleted while
//! the watch was down is reported too. The very first list is not reported: the agent plans
//! once the cache is synced anyway.
//!
//! Notifications flow kind tasks → one debouncer → the consumer. The debouncer waits for a
//! quiet period (a rollout or a `kubectl apply` of many objects is one burst) but never longer
//! than a maximum, and while the consumer is busy it keeps merging rather than blocking the
//! watchers.

mod cache;
mod debounce;

pub use debounce::{Change, ChangeKind};

use crate::apply::{Resolved, live_object, resolve_namespace};
use crate::plan::{
    DesiredObject, GroupKind, InventoryEntry, ObjectKey, ObjectRef, Observation, Observed, Scope,
};
use crate::render::SecretKey;
use crate::render::normalize::APP_LABEL;
use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Errors of the watch module. Watch and list failures inside a kind's task are retried with
/// backoff and logged, never returned: a cache that is behind is still a cache.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("waiting for the watch cache of {kinds} to sync: timed out after {timeout:?}")]
    WaitSynced { kinds: String, timeout: Duration },
}

/// Timing and sizes of the watches.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Quiet period that closes a batch of notifications.
    pub debounce: Duration,
    /// Longest a notification waits in a batch while changes keep coming.
    pub max_delay: Duration,
    /// How often each kind is re-listed in full.
    pub resync: Duration,
    /// Watch namespaced kinds in this namespace only (an agent whose RBAC is a Role there, the
    /// namespaced install); every namespace when `None`.
    pub namespace: Option<String>,
    /// Objects per list page (the watch's own lists and the resync). A page is held parsed
    /// (`serde_json` maps per object, managedFields included) until its objects are packed
    /// into the cache: an unpaged list of a thousand Deployments was tens of megabytes at once.
    pub list_page: u32,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            // Long enough to fold one `kubectl apply -f dir/` into one batch, short enough
            // that a correction starts well within the "couple of seconds" users expect.
            debounce: Duration::from_millis(300),
            max_delay: Duration::from_secs(2),
            // Watches are reliable; the resync is a backup for a bug or a missed relist, and
            // costs one list per kind, so minutes rather than seconds.
            resync: Duration::from_secs(300),
            namespace: None,
            list_page: 100,
        }
    }
}

/// Raw changes from kind tasks to the debouncer. A burst (a re-list reporting hundreds of
/// objects) may fill it; kind tasks then wait, which is the back-pressure we want, since the
/// debouncer never blocks on the consumer.
const RAW_CHANNEL: usize = 1024;
/// Batches for the consumer. One slot: the debouncer merges while the consumer is busy, so a
/// longer queue would only hold batches that say less than the merged one.
const BATCH_CHANNEL: usize = 1;

struct KindWatch {
    resource: Resolved,
    store: Arc<cache::KindCache>,
    /// Becomes `true` once the kind's first list is in the cache: its task signals it, so
    /// whoever waits for it is woken rather than polling (the reflector's `wait_until_ready`).
    synced: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

/// An object's health as the cache knows it.
#[derive(Debug, Clone, PartialEq)]
pub enum CachedHealth {
    /// Its kind is not watched, or not listed yet.
    Unknown,
    /// Listed, and not there (or not labelled as an App's: the watch sees only those).
    Absent,
    Present(crate::health::Status),
}

/// The watches of one App.
pub struct AppWatch {
    client: kube::Client,
    /// The label selector every kind's watch uses.
    selector: String,
    key: SecretKey,
    options: WatchOptions,
    kinds: BTreeMap<GroupKind, KindWatch>,
    raw: mpsc::Sender<Change>,
    debouncer: JoinHandle<()>,
}

impl Drop for AppWatch {
    fn drop(&mut self) {
        for kind in self.kinds.values() {
            kind.task.abort();
        }
        self.debouncer.abort();
    }
}

/// The identity of a watched kind's object with this namespace and name.
fn named_ref(resource: &Resolved, namespace: Option<String>, name: String) -> ObjectRef {
    let ar = &resource.resource;
    ObjectRef {
        group: ar.group.clone(),
        version: ar.version.clone(),
        kind: ar.kind.clone(),
        namespace: match resource.scope {
            Scope::Namespaced => namespace,
            Scope::Cluster => None,
        },
        name,
    }
}

fn object_ref(object: &DynamicObject, resource: &Resolved) -> ObjectRef {
    named_ref(
        resource,
        object.metadata.namespace.clone(),
        object.metadata.name.clone().unwrap_or_default(),
    )
}

/// Identity and resourceVersion of every object in a kind's cache.
fn versions(
    store: &cache::KindCache,
    resource: &Resolved,
) -> HashMap<ObjectKey, (ObjectRef, String)> {
    store
        .versions()
        .into_iter()
        .map(|((namespace, name), rv)| {
            let object = named_ref(resource, Some(namespace), name);
            (object.key(), (object, rv))
        })
        .collect()
}

/// What changed between two listings of a kind.
fn differences(
    before: &HashMap<ObjectKey, (ObjectRef, String)>,
    after: &HashMap<ObjectKey, (ObjectRef, String)>,
) -> Vec<Change> {
    let mut changes: Vec<Change> = after
        .iter()
        .filter(|(key, (_, rv))| before.get(*key).is_none_or(|(_, old)| old != rv))
        .map(|(_, (object, rv))| Change {
            object: object.clone(),
            kind: ChangeKind::Applied,
            resource_version: Some(rv.clone()),
        })
        .collect();
    changes.extend(
        before
            .iter()
            .filter(|(key, _)| !after.contains_key(*key))
            .map(|(_, (object, rv))| Change {
                object: object.clone(),
                kind: ChangeKind::Deleted,
                resource_version: Some(rv.clone()),
            }),
    );
    changes.sort_by(|a, b| a.object.cmp(&b.object));
    changes
}

/// Replaces a Secret's values by their keyed hashes, so the cache never holds them in plain
/// text; everything else passes unchanged. Hashing is idempotent, so [`live_object`] may
/// apply it again.
fn without_secret_values(object: DynamicObject, key: &SecretKey) -> DynamicObject {
    let is_secret = object
        .types
        .as_ref()
        .is_some_and(|t| t.api_version == "v1" && t.kind == "Secret");
    if !is_secret {
        return object;
    }
    let Ok(value) = serde_json::to_value(&object) else {
        return object;
    };
    let hashed = crate::render::digest::storable_object(&value, key);
    serde_json::from_value(hashed).unwrap_or(object)
}

/// Drops reckon's own managedFields entry: it mirrors everything reckon applied (often the
/// largest part of an object), and nothing reads it from the cache (drift is attributed to the
/// *other* managers). A thousand Apps' objects make this worth tens of megabytes.
fn without_own_fields(mut object: DynamicObject) -> DynamicObject {
    if let Some(entries) = object.metadata.managed_fields.as_mut() {
        entries.retain(|e| e.manager.as_deref() != Some(crate::plan::FIELD_MANAGER));
    }
    object
}

fn sanitize(
    event: watcher::Event<DynamicObject>,
    resource: &Resolved,
    key: &SecretKey,
) -> watcher::Event<DynamicObject> {
    let event = match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(without_own_fields(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(without_own_fields(o)),
        watcher::Event::InitApply(o) => watcher::Event::InitApply(without_own_fields(o)),
        other => other,
    };
    let ar = &resource.resource;
    if !(ar.group.is_empty() && ar.kind == "Secret") {
        return event;
    }
    // List items lack apiVersion/kind; the resource supplies them.
    let fix = |mut o: DynamicObject| {
        o.types = Some(kube::api::TypeMeta {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
        });
        without_secret_values(o, key)
    };
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(fix(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(fix(o)),
        watcher::Event::InitApply(o) => watcher::Event::InitApply(fix(o)),
        other => other,
    }
}

/// One kind's watch task and what it needs.
struct KindTask {
    api: Api<DynamicObject>,
    resource: Resolved,
    selector: String,
    store: Arc<cache::KindCache>,
    synced: watch::Sender<bool>,
    raw: mpsc::Sender<Change>,
    resync: Duration,
    list_page: u32,
    key: SecretKey,
}

/// One kind's task: watch events and periodic re-lists into the store, changes out.
async fn run_kind(task: KindTask) {
    let config = watcher::Config::default()
        .labels(&task.selector)
        .page_size(task.list_page);
    let mut events = watcher(task.api.clone(), config).default_backoff().boxed();
    let mut tick = tokio::time::interval(task.resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the watch's own list covers it
    let mut kind = KindState {
        task,
        before_relist: None,
        first_list: true,
    };
    loop {
        let going_on = tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => kind.handle(event).await,
                Some(Err(error)) => {
                    tracing::warn!(kind = %kind.task.resource.resource.kind, %error, "watch failed; retrying with backoff");
                    true
                }
                None => false,
            },
            _ = tick.tick() => kind.resync().await,
        };
        if !going_on {
            return;
        }
    }
}

/// A kind task's state between events.
struct KindState {
    task: KindTask,
    /// Versions in the store when the current re-list began.
    before_relist: Option<HashMap<ObjectKey, (ObjectRef, String)>>,
    first_list: bool,
}

impl KindState {
    /// Applies one event to the store and sends the changes it makes. `false` once the
    /// AppWatch is gone.
    async fn handle(&mut self, event: watcher::Event<DynamicObject>) -> bool {
        let t = &self.task;
        let event = sanitize(event, &t.resource, &t.key);
        let mut changes = Vec::new();
        match &event {
            watcher::Event::Apply(o) => changes.push(Change {
                object: object_ref(o, &t.resource),
                kind: ChangeKind::Applied,
                resource_version: o.metadata.resource_version.clone(),
            }),
            watcher::Event::Delete(o) => changes.push(Change {
                object: object_ref(o, &t.resource),
                kind: ChangeKind::Deleted,
                resource_version: o.metadata.resource_version.clone(),
            }),
            watcher::Event::Init => self.before_relist = Some(versions(&t.store, &t.resource)),
            watcher::Event::InitApply(_) | watcher::Event::InitDone => {}
        }
        t.store.apply(&event);
        if matches!(event, watcher::Event::InitDone) {
            let before = self.before_relist.take().unwrap_or_default();
            if self.first_list {
                self.first_list = false;
            } else {
                changes = differences(&before, &versions(&t.store, &t.resource));
            }
            t.synced.send_replace(true);
        }
        for change in changes {
            if t.raw.send(change).await.is_err() {
                return false; // the AppWatch is gone
            }
        }
        true
    }

    /// The periodic resync: the kind listed page by page through the same path as a watch
    /// restart's list, each page packed before the next is asked for. A failed page abandons
    /// the re-list (the cache keeps what it had); the next tick tries again.
    async fn resync(&mut self) -> bool {
        let mut params = ListParams::default()
            .labels(&self.task.selector)
            .limit(self.task.list_page);
        let mut started = false;
        loop {
            let page = match self.task.api.list(&params).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(kind = %self.task.resource.resource.kind, %error, "periodic resync list failed");
                    if started {
                        self.task.store.abandon_relist();
                        self.before_relist = None;
                    }
                    return true;
                }
            };
            if !std::mem::replace(&mut started, true) && !self.handle(watcher::Event::Init).await {
                return false;
            }
            for item in page.items {
                if !self.handle(watcher::Event::InitApply(item)).await {
                    return false;
                }
            }
            match page.metadata.continue_.filter(|t| !t.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return self.handle(watcher::Event::InitDone).await,
            }
        }
    }
}

impl AppWatch {
    /// Starts an App's (empty) watch set; add kinds with [`AppWatch::watch_kinds`]. Returns
    /// the receiver of debounced change batches.
    pub fn new(
        client: kube::Client,
        app: &str,
        key: SecretKey,
        options: WatchOptions,
    ) -> (Self, mpsc::Receiver<Vec<Change>>) {
        let (raw_tx, raw_rx) = mpsc::channel(RAW_CHANNEL);
        let (batch_tx, batch_rx) = mpsc::channel(BATCH_CHANNEL);
        let debouncer = tokio::spawn(debounce::run(
            raw_rx,
            batch_tx,
            options.debounce,
            options.max_delay,
        ));
        let watch = Self {
            client,
            selector: format!("{APP_LABEL}={app}"),
            key,
            options,
            kinds: BTreeMap::new(),
            raw: raw_tx,
            debouncer,
        };
        (watch, batch_rx)
    }

    /// One watch set for every App on a cluster: each kind is watched once, for all objects
    /// carrying the `reckon.dev/app` label, so a thousand Apps cost one watch per kind rather
    /// than a thousand. Notifications name objects; the agent routes them to their App.
    pub fn for_all_apps(
        client: kube::Client,
        key: SecretKey,
        options: WatchOptions,
    ) -> (Self, mpsc::Receiver<Vec<Change>>) {
        let (mut watch, batches) = Self::new(client, "", key, options);
        watch.selector = APP_LABEL.to_string();
        (watch, batches)
    }

    /// Makes the watched kinds exactly `kinds`: starts watches for new ones, stops the rest.
    /// Call it with the kinds of the desired set and the inventory before each plan.
    pub fn watch_kinds(&mut self, kinds: impl IntoIterator<Item = Resolved>) {
        let wanted: BTreeMap<GroupKind, Resolved> = kinds
            .into_iter()
            .map(|r| (GroupKind::new(&r.resource.group, &r.resource.kind), r))
            .collect();
        self.kinds.retain(|gk, kind| {
            let keep = wanted.contains_key(gk);
            if !keep {
                kind.task.abort();
            }
            keep
        });
        self.add_kinds(wanted.into_values());
    }

    /// Starts watches for the kinds not watched yet and keeps the rest (a shared watch set
    /// only grows: another App may still manage a kind this one dropped).
    pub fn add_kinds(&mut self, kinds: impl IntoIterator<Item = Resolved>) {
        let wanted: BTreeMap<GroupKind, Resolved> = kinds
            .into_iter()
            .map(|r| (GroupKind::new(&r.resource.group, &r.resource.kind), r))
            .collect();
        let selector = self.selector.clone();
        for (gk, resource) in wanted {
            if self.kinds.contains_key(&gk) {
                continue;
            }
            // Cluster-wide for namespaced kinds (an App may place objects in any namespace),
            // unless the agent is confined to one.
            let api: Api<DynamicObject> = match (&self.options.namespace, resource.scope) {
                (Some(ns), crate::plan::Scope::Namespaced) => {
                    Api::namespaced_with(self.client.clone(), ns, &resource.resource)
                }
                _ => Api::all_with(self.client.clone(), &resource.resource),
            };
            let store = Arc::new(cache::KindCache::default());
            let (synced_tx, synced) = watch::channel(false);
            let task = tokio::spawn(run_kind(KindTask {
                api,
                resource: resource.clone(),
                selector: selector.clone(),
                store: store.clone(),
                synced: synced_tx,
                raw: self.raw.clone(),
                resync: self.options.resync,
                list_page: self.options.list_page,
                key: self.key.clone(),
            }));
            self.kinds.insert(
                gk,
                KindWatch {
                    resource,
                    store,
                    synced,
                    task,
                },
            );
        }
    }

    /// The kinds being watched.
    pub fn kinds(&self) -> Vec<GroupKind> {
        self.kinds.keys().cloned().collect()
    }

    /// Whether a kind's first list has completed.
    pub fn is_synced(&self, gk: &GroupKind) -> bool {
        self.kinds.get(gk).is_some_and(|k| *k.synced.borrow())
    }

    /// Resolves once each of `kinds` that is watched has completed its first list (or its
    /// task has stopped). It holds no borrow of the watch set, so a caller that shares the set
    /// behind a lock releases the lock before awaiting it.
    pub fn until_synced(
        &self,
        kinds: &[GroupKind],
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let signals: Vec<watch::Receiver<bool>> = kinds
            .iter()
            .filter_map(|gk| self.kinds.get(gk))
            .map(|k| k.synced.clone())
            .collect();
        async move {
            for mut synced in signals {
                // An error means the kind's task is gone: nothing more will come.
                let _ = synced.wait_for(|s| *s).await;
            }
        }
    }

    /// Waits until every watched kind has completed its first list.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<(), WatchError> {
        let all = self.kinds();
        if tokio::time::timeout(timeout, self.until_synced(&all))
            .await
            .is_ok()
        {
            return Ok(());
        }
        let pending: Vec<String> = all
            .iter()
            .filter(|gk| !self.is_synced(gk))
            .map(|gk| gk.to_string())
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        Err(WatchError::WaitSynced {
            kinds: pending.join(", "),
            timeout,
        })
    }

    /// What the cache knows about these objects (namespaces resolved): `Present` or `Absent`
    /// for objects of synced kinds, nothing for the rest (the planner then claims no drift).
    pub fn observe(&self, objects: &[ObjectRef]) -> Observed {
        let mut observed = Observed::new();
        for object in objects {
            let Some((kind, namespace)) = self.listed(object) else {
                continue;
            };
            let observation = match kind.store.get(namespace, &object.name) {
                None => Observation::Absent,
                Some(mut value) => {
                    // Items of a list carry no apiVersion and kind (only watch events do),
                    // and the store holds both.
                    if let serde_json::Value::Object(map) = &mut value {
                        let ar = &kind.resource.resource;
                        map.insert("apiVersion".into(), ar.api_version.clone().into());
                        map.insert("kind".into(), ar.kind.clone().into());
                    }
                    let Some(mut live) = live_object(&value, &self.key) else {
                        continue;
                    };
                    // The caller's identity (version) so the observation matches its key.
                    live.object = object.clone();
                    Observation::Present(live)
                }
            };
            observed.insert(object.key(), observation);
        }
        observed
    }

    /// What the cache knows of these objects' health (namespaces resolved), without parsing
    /// them again once assessed: what a pass waiting for readiness asks between its reads.
    pub fn health_of(&self, objects: &[ObjectRef]) -> Vec<CachedHealth> {
        objects.iter().map(|o| self.cached_health(o)).collect()
    }

    fn cached_health(&self, object: &ObjectRef) -> CachedHealth {
        let Some((kind, namespace)) = self.listed(object) else {
            return CachedHealth::Unknown;
        };
        let ar = &kind.resource.resource;
        match kind
            .store
            .status(namespace, &object.name, (&ar.api_version, &ar.kind))
        {
            Some(status) => CachedHealth::Present(status),
            None => CachedHealth::Absent,
        }
    }

    /// The watch of `object`'s kind once its first list is in the cache, and the namespace the
    /// cache keys the object by (`""` for a cluster-scoped kind). Found without building a
    /// [`GroupKind`]: an agent watches a handful of kinds, and health waits ask for thousands
    /// of objects a second.
    fn listed<'a>(&'a self, object: &'a ObjectRef) -> Option<(&'a KindWatch, &'a str)> {
        let (_, kind) = self
            .kinds
            .iter()
            .find(|(gk, _)| gk.kind == object.kind && gk.group == object.group)?;
        if !*kind.synced.borrow() {
            return None;
        }
        let namespace = match kind.resource.scope {
            Scope::Namespaced => object.namespace.as_deref().unwrap_or_default(),
            Scope::Cluster => "",
        };
        Some((kind, namespace))
    }

    /// [`AppWatch::observe`] for a plan's inputs: desired objects (namespaces defaulted the way
    /// the planner does) and inventory objects.
    pub fn observe_for(
        &self,
        desired: &[DesiredObject],
        inventory: &[InventoryEntry],
        default_namespace: &str,
        scope: crate::plan::ScopeLookup<'_>,
    ) -> Observed {
        let mut objects: Vec<ObjectRef> = desired
            .iter()
            .filter_map(|d| {
                resolve_namespace(&d.object, scope(&d.object.group_kind()), default_namespace)
            })
            .collect();
        objects.extend(inventory.iter().map(|e| e.object.clone()));
        self.observe(&objects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, name: &str, rv: &str) -> (ObjectKey, (ObjectRef, String)) {
        let object = ObjectRef::from_api_version("v1", kind, Some("ns"), name);
        (object.key(), (object, rv.to_string()))
    }

    #[test]
    fn the_cache_never_holds_secret_values() {
        let key = SecretKey::new([3; 32]);
        let secrets = Resolved {
            resource: kube::discovery::ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()),
            scope: Scope::Namespaced,
        };
        // A list item: no apiVersion/kind, as the server sends them.
        let item: DynamicObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "data": {"password": "aHVudGVyMg=="}
        }))
        .unwrap();
        for event in [
            watcher::Event::InitApply(item.clone()),
            watcher::Event::Apply(item.clone()),
            watcher::Event::Delete(item.clone()),
        ] {
            let (watcher::Event::InitApply(o)
            | watcher::Event::Apply(o)
            | watcher::Event::Delete(o)) = sanitize(event, &secrets, &key)
            else {
                panic!("event kind changed");
            };
            let text = serde_json::to_string(&o).unwrap();
            assert!(!text.contains("aHVudGVyMg"), "{text}");
            assert!(text.contains(crate::render::digest::HASH_PREFIX), "{text}");
        }
        // Other kinds pass untouched.
        let config_maps = Resolved {
            resource: kube::discovery::ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(
                &(),
            ),
            scope: Scope::Namespaced,
        };
        let watcher::Event::Apply(o) =
            sanitize(watcher::Event::Apply(item.clone()), &config_maps, &key)
        else {
            panic!("event kind changed");
        };
        assert_eq!(o, item);
    }

    #[test]
    fn relist_differences_report_new_changed_and_vanished_objects() {
        let before: HashMap<_, _> = [
            entry("ConfigMap", "same", "1"),
            entry("ConfigMap", "edited", "2"),
            entry("ConfigMap", "gone", "3"),
        ]
        .into();
        let after: HashMap<_, _> = [
            entry("ConfigMap", "same", "1"),
            entry("ConfigMap", "edited", "7"),
            entry("ConfigMap", "new", "8"),
        ]
        .into();
        let changes: Vec<(String, ChangeKind, Option<String>)> = differences(&before, &after)
            .into_iter()
            .map(|c| (c.object.name, c.kind, c.resource_version))
            .collect();
        let rv = |v: &str| Some(v.to_string());
        assert_eq!(
            changes,
            [
                ("edited".to_string(), ChangeKind::Applied, rv("7")),
                ("gone".to_string(), ChangeKind::Deleted, rv("3")),
                ("new".to_string(), ChangeKind::Applied, rv("8")),
            ]
        );
        assert_eq!(differences(&after, &after), vec![]);
    }
}
