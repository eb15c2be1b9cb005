//! Owns the live cache of one watched kind: each object kept as the lz4-compressed JSON of its
//! sanitized form, keyed by namespace and name, and parsed again only when a pass reads it.
//!
//! Why not kube's reflector store: it keeps every object parsed (`DynamicObject`, whose
//! `serde_json::Value` maps cost a B-tree node each, and managedFields are deep maps of one or
//! two keys). A thousand Apps' Deployments, Services and Ingresses held that way were most of
//! the agent's memory; compressed JSON is a few percent of it. A pass reads a handful of its
//! own objects, so parsing on read costs microseconds where the memory was megabytes.
//!
//! Each entry also keeps its object's readiness once a reader asked for it: a pass waiting for
//! its objects to become ready asks every few hundred milliseconds, and a thousand Apps
//! waiting at once would otherwise parse their objects again thousands of times a second.
//! Lookups borrow the caller's namespace and name (`KeyRef`): a lookup allocates nothing.

use crate::health::{Status, assess};
use hashbrown::{Equivalent, HashMap};
use kube::api::DynamicObject;
use kube::runtime::watcher;
use std::hash::{Hash, Hasher};
use std::sync::{OnceLock, RwLock};

/// `(namespace or "", name)`.
pub type Key = (String, String);

/// A borrowed [`Key`]: hashes as the tuple does (each part in turn), so the map finds an entry
/// by the caller's `&str`s without building a key.
struct KeyRef<'a>(&'a str, &'a str);

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
        self.1.hash(state);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

struct Entry {
    resource_version: String,
    /// lz4 (size-prefixed) of the object's JSON.
    packed: Box<[u8]>,
    /// The object's readiness, assessed at the first read that asked (an entry is replaced,
    /// not changed, when its object changes, so the value is never stale).
    status: OnceLock<Status>,
}

impl Entry {
    fn json(&self) -> Option<serde_json::Value> {
        let json = lz4_flex::decompress_size_prepended(&self.packed).ok()?;
        serde_json::from_slice(&json).ok()
    }
}

#[derive(Default)]
struct Inner {
    objects: HashMap<Key, Entry>,
    /// A re-list in progress: objects listed so far, swapped in whole at its end (what a
    /// restarted watch or a resync lists is the truth; what it does not list is gone).
    relist: Option<HashMap<Key, Entry>>,
}

/// One kind's objects. Shared between the kind's watch task (the only writer) and readers.
#[derive(Default)]
pub struct KindCache {
    inner: RwLock<Inner>,
}

fn key_of(object: &DynamicObject) -> Key {
    (
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone().unwrap_or_default(),
    )
}

fn pack(object: &DynamicObject) -> Entry {
    // Serializing a DynamicObject cannot fail (string keys, no non-finite floats from JSON).
    let json = serde_json::to_vec(object).unwrap_or_default();
    Entry {
        resource_version: object.metadata.resource_version.clone().unwrap_or_default(),
        packed: lz4_flex::compress_prepend_size(&json).into_boxed_slice(),
        status: OnceLock::new(),
    }
}

impl KindCache {
    /// Applies one watcher event, with the reflector's semantics (`Init` starts a re-list,
    /// `InitApply` adds to it, `InitDone` replaces the cache with it).
    pub fn apply(&self, event: &watcher::Event<DynamicObject>) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        match event {
            watcher::Event::Apply(o) => {
                inner.objects.insert(key_of(o), pack(o));
            }
            watcher::Event::Delete(o) => {
                inner.objects.remove(&key_of(o));
            }
            watcher::Event::Init => inner.relist = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                let entry = pack(o);
                inner
                    .relist
                    .get_or_insert_with(HashMap::new)
                    .insert(key_of(o), entry);
            }
            watcher::Event::InitDone => {
                if let Some(listed) = inner.relist.take() {
                    inner.objects = listed;
                }
            }
        }
    }

    /// Drops a re-list in progress (its list failed part way): the cache keeps what it had,
    /// and the pages listed so far are freed rather than kept until the next list.
    pub fn abandon_relist(&self) {
        self.inner.write().unwrap_or_else(|p| p.into_inner()).relist = None;
    }

    /// The object's JSON, parsed. `None` when absent (or, never expected, unreadable).
    pub fn get(&self, namespace: &str, name: &str) -> Option<serde_json::Value> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let entry = inner.objects.get(&KeyRef(namespace, name))?;
        let json = lz4_flex::decompress_size_prepended(&entry.packed).ok()?;
        drop(inner);
        serde_json::from_slice(&json).ok()
    }

    /// The object's readiness (`types`: its apiVersion and kind, which list items do not
    /// carry), assessed once per version. `None` when absent; an unreadable entry is unknown,
    /// never current.
    pub fn status(&self, namespace: &str, name: &str, types: (&str, &str)) -> Option<Status> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let entry = inner.objects.get(&KeyRef(namespace, name))?;
        let status = entry.status.get_or_init(|| match entry.json() {
            Some(mut value) => {
                if let serde_json::Value::Object(map) = &mut value {
                    map.insert("apiVersion".into(), types.0.into());
                    map.insert("kind".into(), types.1.into());
                }
                assess(&value).status
            }
            None => Status::Unknown,
        });
        Some(*status)
    }

    /// Every cached object's key and resourceVersion.
    pub fn versions(&self) -> Vec<(Key, String)> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .objects
            .iter()
            .map(|(k, e)| (k.clone(), e.resource_version.clone()))
            .collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .objects
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(ns: &str, name: &str, rv: &str, replicas: u32) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": rv},
            "spec": {"replicas": replicas}
        }))
        .unwrap()
    }

    #[test]
    fn events_update_the_cache_and_reads_give_the_object_back() {
        let cache = KindCache::default();
        cache.apply(&watcher::Event::Apply(object("a", "web", "1", 1)));
        cache.apply(&watcher::Event::Apply(object("b", "web", "2", 2)));
        assert_eq!(cache.get("a", "web").unwrap()["spec"]["replicas"], 1);
        assert_eq!(
            cache.get("b", "web").unwrap()["metadata"]["resourceVersion"],
            "2"
        );
        assert_eq!(cache.get("c", "web"), None);

        cache.apply(&watcher::Event::Apply(object("a", "web", "3", 5)));
        assert_eq!(cache.get("a", "web").unwrap()["spec"]["replicas"], 5);
        cache.apply(&watcher::Event::Delete(object("a", "web", "4", 5)));
        assert_eq!(cache.get("a", "web"), None);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn an_abandoned_relist_is_never_swapped_in() {
        let cache = KindCache::default();
        cache.apply(&watcher::Event::Apply(object("a", "kept", "1", 1)));
        cache.apply(&watcher::Event::Init);
        cache.apply(&watcher::Event::InitApply(object("a", "half", "2", 1)));
        cache.abandon_relist();
        // Whatever ends a list next, the abandoned half of one is not the truth.
        cache.apply(&watcher::Event::InitDone);
        assert!(cache.get("a", "kept").is_some());
        assert_eq!(cache.get("a", "half"), None);
        assert_eq!(cache.len(), 1);
    }

    fn deployment(name: &str, rv: &str, ready: u32) -> DynamicObject {
        // A list item: no apiVersion or kind, as the server sends them.
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "a", "resourceVersion": rv, "generation": 1},
            "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                       "readyReplicas": ready, "availableReplicas": ready}
        }))
        .unwrap()
    }

    #[test]
    fn health_is_assessed_with_the_kinds_types_and_follows_each_new_version() {
        let cache = KindCache::default();
        let types = ("apps/v1", "Deployment");
        assert_eq!(cache.status("a", "web", types), None);
        cache.apply(&watcher::Event::Apply(deployment("web", "1", 0)));
        assert_eq!(cache.status("a", "web", types), Some(Status::InProgress));
        // Asked again: the same answer (kept, not assessed anew).
        assert_eq!(cache.status("a", "web", types), Some(Status::InProgress));
        cache.apply(&watcher::Event::Apply(deployment("web", "2", 1)));
        assert_eq!(cache.status("a", "web", types), Some(Status::Current));
        // Another namespace, another name: not this entry.
        assert_eq!(cache.status("b", "web", types), None);
        assert_eq!(cache.status("a", "we", types), None);
        cache.apply(&watcher::Event::Delete(deployment("web", "3", 1)));
        assert_eq!(cache.status("a", "web", types), None);
    }

    #[test]
    fn a_relist_replaces_the_cache_only_when_done() {
        let cache = KindCache::default();
        cache.apply(&watcher::Event::Apply(object("a", "kept", "1", 1)));
        cache.apply(&watcher::Event::Apply(object("a", "gone", "2", 1)));

        cache.apply(&watcher::Event::Init);
        cache.apply(&watcher::Event::InitApply(object("a", "kept", "5", 2)));
        cache.apply(&watcher::Event::InitApply(object("a", "new", "6", 1)));
        // Until the list is complete, readers see the previous state.
        assert!(cache.get("a", "gone").is_some());
        assert_eq!(cache.get("a", "kept").unwrap()["spec"]["replicas"], 1);

        cache.apply(&watcher::Event::InitDone);
        assert_eq!(cache.get("a", "gone"), None);
        assert_eq!(cache.get("a", "kept").unwrap()["spec"]["replicas"], 2);
        let mut versions = cache.versions();
        versions.sort();
        assert_eq!(
            versions,
            [
                (("a".to_string(), "kept".to_string()), "5".to_string()),
                (("a".to_string(), "new".to_string()), "6".to_string()),
            ]
        );
    }
}
