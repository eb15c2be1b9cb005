//! Owns the pass's live-view stage: where the live state of an App's objects is read from
//! (one GET per object, or the agent's watch cache), behind one trait, and the health
//! readings taken from it.
//!
//! The watched view waits for a kind it has just started watching until the watch signals its
//! first list is in (no polling), then reads the cache; objects the cache cannot see (a desired
//! object outside the inventory, which may exist without the App's label) are read directly.

use super::ReconcileError;
use crate::apply::{self, Catalog};
use crate::event;
use crate::health::recorded_health;
use crate::plan::{
    DesiredObject, GroupKind, InventoryEntry, ObjectKey, ObjectRef, Observation, Observed, Scope,
};
use crate::render::SecretKey;
use crate::watch::{AppWatch, CachedHealth};
use futures::future::BoxFuture;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Where a pass reads live objects from.
#[derive(Clone)]
pub enum Live {
    /// One GET per object (one-shot commands: `reckon sync`, `reckon diff`).
    Direct,
    /// The agent's watch cache, shared by every App on the cluster.
    Watch(Arc<RwLock<AppWatch>>),
}

/// One object's health as read: the object, its health, and why.
pub type Reading = (ObjectRef, event::Health, String);

/// How a pass sees the cluster: the live state of the plan's inputs and the desired objects'
/// health, now or once settled.
pub(crate) trait LiveView: Send + Sync {
    /// The live state of the desired objects (namespaces defaulted) and the inventory's.
    fn observe<'a>(
        &'a self,
        desired: &'a [DesiredObject],
        inventory: &'a [InventoryEntry],
    ) -> BoxFuture<'a, Result<Observed, ReconcileError>>;

    /// Whether the view follows the cluster between syncs (then `observed` tells health at no
    /// cost); a direct view must read the objects again.
    fn follows_changes(&self) -> bool;

    /// The desired objects' health now (`desired`: their identities as rendered): from
    /// `observed` when the view follows changes, else read once.
    fn readings<'a>(
        &'a self,
        desired: &'a [ObjectRef],
        observed: &'a Observed,
    ) -> BoxFuture<'a, Vec<Reading>>;

    /// The desired objects' health once every one is settled (healthy or degraded) or
    /// `timeout` has passed; a workload still unready is explained by its first Pod's problem.
    /// `owned`: the objects known to be the App's (its inventory and what the sync wrote),
    /// which the watch sees once it catches up, so they are never read directly meanwhile.
    /// Only identities are held meanwhile, not manifests: a thousand Apps may wait at once.
    fn settled_readings<'a>(
        &'a self,
        desired: &'a [ObjectRef],
        owned: &'a HashSet<ObjectKey>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<Reading>, ReconcileError>>;
}

/// How long a pass waits for the watch cache of a kind it has just started watching.
const WATCH_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a pass asks the watch cache for health while waiting: at first often (most
/// objects settle within a second), then less as the wait grows (see [`health_poll_after`]).
const HEALTH_POLL: Duration = Duration::from_millis(200);
const HEALTH_POLL_MAX: Duration = Duration::from_secs(1);

/// The pause before the next health check of a wait that has lasted `waited`: a quarter of
/// it, between [`HEALTH_POLL`] and [`HEALTH_POLL_MAX`]. A wait thus learns of readiness at most
/// a quarter (and at most a second) late, and a thousand Apps waiting minutes for their Pods
/// ask a thousand times a second, not five thousand.
pub(crate) fn health_poll_after(waited: Duration) -> Duration {
    (waited / 4).clamp(HEALTH_POLL, HEALTH_POLL_MAX)
}

/// What both views read the cluster with.
#[derive(Clone)]
pub(crate) struct Cluster {
    pub catalog: Arc<Catalog>,
    pub key: SecretKey,
    /// The App's target namespace (for objects that name none).
    pub namespace: String,
    /// Objects read at once.
    pub concurrency: usize,
}

impl Cluster {
    fn scope(&self, gk: &GroupKind) -> Option<Scope> {
        self.catalog.scope(gk)
    }

    /// The objects' identities with namespaces defaulted as the planner does (kinds whose
    /// scope is unknown left out).
    fn resolved<'a>(&self, objects: impl IntoIterator<Item = &'a ObjectRef>) -> Vec<ObjectRef> {
        objects
            .into_iter()
            .filter_map(|o| {
                apply::resolve_namespace(o, self.scope(&o.group_kind()), &self.namespace)
            })
            .collect()
    }
}

/// The view for `live` over `cluster`.
pub(crate) fn view(live: Live, cluster: Cluster) -> Arc<dyn LiveView> {
    match live {
        Live::Direct => Arc::new(DirectView { cluster }),
        Live::Watch(watch) => Arc::new(WatchedView {
            direct: DirectView { cluster },
            watch,
        }),
    }
}

/// One GET per object.
pub(crate) struct DirectView {
    cluster: Cluster,
}

impl DirectView {
    async fn read(&self, desired: &[DesiredObject], inventory: &[InventoryEntry]) -> Observed {
        let c = &self.cluster;
        apply::observe(
            &c.catalog,
            desired,
            inventory,
            &c.namespace,
            &c.key,
            c.concurrency,
        )
        .await
    }

    /// These objects (namespaces resolved), one GET each.
    async fn read_objects(&self, objects: Vec<ObjectRef>) -> Observed {
        let c = &self.cluster;
        apply::observe_objects(&c.catalog, objects, &c.key, c.concurrency).await
    }

    /// The desired objects' health read from the API server (one GET each per round), waiting
    /// up to `timeout` for them to settle.
    async fn read_health(&self, desired: &[ObjectRef], timeout: Duration) -> Vec<Reading> {
        let c = &self.cluster;
        let objects = c.resolved(desired);
        let options = apply::wait::WaitOptions {
            timeout,
            ..Default::default()
        };
        apply::wait::wait(&c.catalog, &objects, &options)
            .await
            .into_iter()
            .map(|(object, h)| (object, recorded_health(&h), h.message))
            .collect()
    }
}

impl LiveView for DirectView {
    fn observe<'a>(
        &'a self,
        desired: &'a [DesiredObject],
        inventory: &'a [InventoryEntry],
    ) -> BoxFuture<'a, Result<Observed, ReconcileError>> {
        Box::pin(async move { Ok(self.read(desired, inventory).await) })
    }

    fn follows_changes(&self) -> bool {
        false
    }

    fn readings<'a>(
        &'a self,
        desired: &'a [ObjectRef],
        _observed: &'a Observed,
    ) -> BoxFuture<'a, Vec<Reading>> {
        Box::pin(self.read_health(desired, Duration::ZERO))
    }

    fn settled_readings<'a>(
        &'a self,
        desired: &'a [ObjectRef],
        _owned: &'a HashSet<ObjectKey>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<Reading>, ReconcileError>> {
        Box::pin(async move { Ok(self.read_health(desired, timeout).await) })
    }
}

/// The agent's watch cache, with direct reads for what it cannot see.
pub(crate) struct WatchedView {
    direct: DirectView,
    watch: Arc<RwLock<AppWatch>>,
}

impl WatchedView {
    /// Watches the kinds of these objects and waits (bounded) until each has been listed.
    async fn watch_kinds(&self, objects: impl IntoIterator<Item = &ObjectRef>) {
        let c = &self.direct.cluster;
        let kinds: Vec<apply::Resolved> = objects
            .into_iter()
            .filter_map(|o| c.catalog.resolve_kind(&o.group_kind()))
            .collect();
        let gks: Vec<GroupKind> = kinds
            .iter()
            .map(|k| GroupKind::new(&k.resource.group, &k.resource.kind))
            .collect();
        let synced = {
            let mut w = self.watch.write().expect("watch lock");
            w.add_kinds(kinds);
            w.until_synced(&gks)
        };
        // On time-out the pass goes on: a kind not synced yet is left out of the observation,
        // and the planner then claims no drift for its objects.
        let _ = tokio::time::timeout(WATCH_SYNC_TIMEOUT, synced).await;
    }

    async fn read(
        &self,
        desired: &[DesiredObject],
        inventory: &[InventoryEntry],
    ) -> Result<Observed, ReconcileError> {
        let inventory_objects = inventory.iter().map(|e| &e.object);
        self.watch_kinds(desired.iter().map(|d| &d.object).chain(inventory_objects))
            .await;
        let owned: HashSet<ObjectKey> = inventory.iter().map(|e| e.object.key()).collect();
        let resolved = self
            .direct
            .cluster
            .resolved(desired.iter().map(|d| &d.object));
        Ok(self.observe_cached(&resolved, inventory, &owned).await)
    }

    /// The cache's view of the desired objects (`resolved`: namespaces defaulted) and the
    /// inventory's (kinds already watched), with direct reads of the desired objects it cannot
    /// vouch for.
    async fn observe_cached(
        &self,
        resolved: &[ObjectRef],
        inventory: &[InventoryEntry],
        owned: &HashSet<ObjectKey>,
    ) -> Observed {
        let mut objects = resolved.to_vec();
        objects.extend(inventory.iter().map(|e| e.object.clone()));
        let mut observed = self.watch.read().expect("watch lock").observe(&objects);
        let unowned = unlabelled_candidates(resolved, owned, &observed);
        if !unowned.is_empty() {
            observed.extend(self.direct.read_objects(unowned).await);
        }
        observed
    }

    /// Waits until every desired object is settled or the timeout passes, then reads them
    /// once and explains the unready ones by their Pods. Between reads it asks the cache for
    /// health alone (assessed once per object version); only an object the watch cannot vouch
    /// for sends it back to a full read, with direct reads, as [`WatchedView::read`] does.
    async fn wait_settled(
        &self,
        desired: &[ObjectRef],
        owned: &HashSet<ObjectKey>,
        timeout: Duration,
    ) -> Result<Vec<Reading>, ReconcileError> {
        self.watch_kinds(desired).await;
        let c = &self.direct.cluster;
        let objects = c.resolved(desired);
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            let cached = self.watch.read().expect("watch lock").health_of(&objects);
            let settled = match waiting_verdict(&objects, &cached, owned) {
                Waiting::Settled => true,
                Waiting::NotYet => false,
                Waiting::ReadDirectly => {
                    let observed = self.observe_cached(&objects, &[], owned).await;
                    all_settled(&cache_readings(c, desired, &observed))
                }
            };
            if settled || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(health_poll_after(started.elapsed())).await;
        }
        let observed = self.observe_cached(&objects, &[], owned).await;
        let readings = cache_readings(c, desired, &observed);
        Ok(explained_by_pods(&c.catalog, readings, &observed).await)
    }
}

/// What a health wait does after asking the cache.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Waiting {
    /// Every object is there and healthy or degraded.
    Settled,
    /// Some object is not settled, or not seen yet though the App's (the watch will see it).
    NotYet,
    /// Some object the watch cannot vouch for is not in the cache: it may exist unlabelled,
    /// and only a direct read tells.
    ReadDirectly,
}

/// The wait's next step from the cache's health of `objects` (`cached`, in the same order).
pub(crate) fn waiting_verdict(
    objects: &[ObjectRef],
    cached: &[CachedHealth],
    owned: &HashSet<ObjectKey>,
) -> Waiting {
    let mut verdict = Waiting::Settled;
    for (object, health) in objects.iter().zip(cached) {
        match health {
            CachedHealth::Present(status) => {
                // As `cache_readings` records it (`observed_health`).
                let recorded = status.recorded();
                if !matches!(recorded, event::Health::Healthy | event::Health::Degraded) {
                    verdict = Waiting::NotYet;
                }
            }
            CachedHealth::Absent | CachedHealth::Unknown if !owned.contains(&object.key()) => {
                return Waiting::ReadDirectly;
            }
            CachedHealth::Absent | CachedHealth::Unknown => verdict = Waiting::NotYet,
        }
    }
    verdict
}

impl LiveView for WatchedView {
    fn observe<'a>(
        &'a self,
        desired: &'a [DesiredObject],
        inventory: &'a [InventoryEntry],
    ) -> BoxFuture<'a, Result<Observed, ReconcileError>> {
        Box::pin(self.read(desired, inventory))
    }

    fn follows_changes(&self) -> bool {
        true
    }

    fn readings<'a>(
        &'a self,
        desired: &'a [ObjectRef],
        observed: &'a Observed,
    ) -> BoxFuture<'a, Vec<Reading>> {
        let readings = cache_readings(&self.direct.cluster, desired, observed);
        Box::pin(async move { readings })
    }

    fn settled_readings<'a>(
        &'a self,
        desired: &'a [ObjectRef],
        owned: &'a HashSet<ObjectKey>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<Reading>, ReconcileError>> {
        Box::pin(self.wait_settled(desired, owned, timeout))
    }
}

/// The desired objects' health as `observed` shows them.
fn cache_readings(cluster: &Cluster, desired: &[ObjectRef], observed: &Observed) -> Vec<Reading> {
    readings_of(
        desired,
        observed,
        &|gk| cluster.scope(gk),
        &cluster.namespace,
    )
}

/// The desired objects' health as `observed` shows them (namespaces defaulted; kinds the
/// cluster does not serve left out).
pub(crate) fn readings_of(
    desired: &[ObjectRef],
    observed: &Observed,
    scope: &dyn Fn(&GroupKind) -> Option<Scope>,
    namespace: &str,
) -> Vec<Reading> {
    desired
        .iter()
        .filter_map(|o| apply::resolve_namespace(o, scope(&o.group_kind()), namespace))
        .map(|object| {
            let (health, message) = super::events::observed_health(observed.get(&object.key()));
            (object, health, message)
        })
        .collect()
}

/// Whether every reading is settled: healthy, or degraded (it will not get better by waiting).
pub(crate) fn all_settled(readings: &[Reading]) -> bool {
    readings
        .iter()
        .all(|(_, h, _)| matches!(h, event::Health::Healthy | event::Health::Degraded))
}

/// The desired objects (`resolved`: namespaces defaulted) the watch cannot vouch for: not
/// owned and not seen in the cache. The watch sees only objects labelled as an App's, and such
/// an object may exist without the label (made by hand, by another tool): it is read directly,
/// so that it is adopted or refused, never taken for absent and "created" over what is there.
pub(crate) fn unlabelled_candidates(
    resolved: &[ObjectRef],
    owned: &HashSet<ObjectKey>,
    observed: &Observed,
) -> Vec<ObjectRef> {
    resolved
        .iter()
        .filter(|o| {
            !owned.contains(&o.key())
                && !matches!(observed.get(&o.key()), Some(Observation::Present(_)))
        })
        .cloned()
        .collect()
}

/// Adds, to each workload still unready when the wait ended, its first Pod's problem (as
/// [`apply::wait::wait`] does for the direct view): one list of Pods per unready workload.
async fn explained_by_pods(
    catalog: &Catalog,
    mut readings: Vec<Reading>,
    observed: &Observed,
) -> Vec<Reading> {
    let unready: Vec<(usize, String, String)> = readings
        .iter()
        .enumerate()
        .filter(|(_, (_, h, _))| *h != event::Health::Healthy)
        .filter_map(|(i, (object, _, _))| {
            let Some(Observation::Present(live)) = observed.get(&object.key()) else {
                return None;
            };
            let selector = crate::health::pod_selector(&live.manifest)?;
            Some((i, object.namespace.clone()?, selector))
        })
        .collect();
    for (i, problem) in apply::wait::pod_problems(catalog, unready, 8).await {
        let message = &mut readings[i].2;
        *message = format!("{message}; {problem}");
    }
    readings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Health, Status};
    use crate::reconcile::fixtures::*;

    #[test]
    fn the_watch_cannot_vouch_for_desired_objects_outside_the_inventory_it_has_not_seen() {
        let owned = config_map("owned", "1", true);
        let seen = config_map("seen", "1", true);
        let unseen = config_map("unseen", "1", false);
        let mut observed = observed(vec![live(&seen, "1")]);
        // Absent from the cache but the App's: the cache is right that it is gone.
        observed.insert(resolved(&owned).key(), Observation::Absent);
        let desired = [resolved(&owned), resolved(&seen), resolved(&unseen)];
        let mine = HashSet::from([applied(&owned).object.key()]);
        let read = unlabelled_candidates(&desired, &mine, &observed);
        assert_eq!(read, vec![resolved(&unseen)]);
    }

    #[test]
    fn a_health_wait_settles_only_when_every_object_is_in_the_cache_and_settled() {
        let o = |name: &str| ObjectRef::from_api_version("v1", "ConfigMap", Some("shop"), name);
        let objects = [o("a"), o("b")];
        let mine: HashSet<ObjectKey> = objects.iter().map(ObjectRef::key).collect();
        let present = CachedHealth::Present;
        let verdict = |cached: &[CachedHealth], owned: &HashSet<ObjectKey>| {
            waiting_verdict(&objects, cached, owned)
        };
        let ready = present(Status::Current);
        let failed = present(Status::Failed);
        assert_eq!(
            verdict(&[ready.clone(), failed.clone()], &mine),
            Waiting::Settled
        );
        let rolling = present(Status::InProgress);
        assert_eq!(verdict(&[ready.clone(), rolling], &mine), Waiting::NotYet);
        // Terminating is recorded as progressing: not settled.
        let leaving = present(Status::Terminating);
        assert_eq!(verdict(&[leaving, ready.clone()], &mine), Waiting::NotYet);
        let unreadable = present(Status::Unknown);
        assert_eq!(
            verdict(&[unreadable, ready.clone()], &mine),
            Waiting::NotYet
        );
        // The App's objects the watch has not caught up with: wait for the watch, no GET.
        assert_eq!(
            verdict(&[ready.clone(), CachedHealth::Absent], &mine),
            Waiting::NotYet
        );
        assert_eq!(
            verdict(&[CachedHealth::Unknown, failed.clone()], &mine),
            Waiting::NotYet
        );
        // An object not known to be the App's may exist unlabelled: only a GET tells.
        let only_a = HashSet::from([o("a").key()]);
        assert_eq!(
            verdict(&[ready.clone(), CachedHealth::Absent], &only_a),
            Waiting::ReadDirectly
        );
        assert_eq!(
            verdict(&[ready, CachedHealth::Unknown], &only_a),
            Waiting::ReadDirectly
        );
        assert_eq!(
            verdict(&[failed.clone(), failed], &only_a),
            Waiting::Settled
        );
        assert_eq!(waiting_verdict(&[], &[], &HashSet::new()), Waiting::Settled);
    }

    #[test]
    fn a_long_wait_asks_for_health_less_often_and_never_less_than_once_a_second() {
        let ms = Duration::from_millis;
        assert_eq!(health_poll_after(ms(0)), HEALTH_POLL);
        assert_eq!(health_poll_after(ms(800)), HEALTH_POLL);
        assert_eq!(health_poll_after(ms(2_000)), ms(500));
        assert_eq!(health_poll_after(ms(4_000)), HEALTH_POLL_MAX);
        assert_eq!(health_poll_after(Duration::from_secs(300)), HEALTH_POLL_MAX);
        // Late by at most a quarter of the wait so far.
        for waited in [ms(900), ms(1_500), ms(3_999)] {
            assert!(health_poll_after(waited) <= waited / 4, "{waited:?}");
        }
    }

    fn desired_widget() -> DesiredObject {
        desired(serde_json::json!({
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}
        }))
    }

    #[test]
    fn readings_tell_a_missing_object_from_one_not_observed_yet() {
        let gone = config_map("gone", "1", false);
        let unknown = config_map("unknown", "1", true);
        let ready = config_map("ready", "1", true);
        let mut observed = observed(vec![live(&ready, "1")]);
        observed.insert(resolved(&gone).key(), Observation::Absent);
        let readings = readings_of(
            &[gone, unknown, ready, desired_widget()].map(|d| d.object),
            &observed,
            &scopes,
            "shop",
        );
        let summary: Vec<(String, event::Health)> = readings
            .iter()
            .map(|(o, h, _)| {
                (
                    format!("{}/{}", o.namespace.as_deref().unwrap_or(""), o.name),
                    *h,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("shop/gone".to_string(), event::Health::Missing),
                ("shop/unknown".to_string(), event::Health::Unknown),
                ("shop/ready".to_string(), event::Health::Healthy),
            ],
            "namespaces defaulted, unserved kinds left out"
        );
        assert!(!all_settled(&readings));
    }

    #[test]
    fn health_is_settled_once_every_object_is_healthy_or_degraded() {
        let o = |name: &str| ObjectRef::from_api_version("v1", "ConfigMap", Some("shop"), name);
        let healthy = (o("a"), event::Health::Healthy, String::new());
        let degraded = (o("b"), event::Health::Degraded, String::new());
        let progressing = (o("c"), event::Health::Progressing, String::new());
        assert!(all_settled(&[]));
        assert!(all_settled(&[healthy.clone(), degraded.clone()]));
        assert!(!all_settled(&[healthy, degraded, progressing]));
    }

    #[test]
    fn an_object_the_server_does_not_find_is_recorded_missing() {
        let missing = Health::new(Status::Unknown, "ConfigMap/shop/web: not found");
        assert_eq!(recorded_health(&missing), event::Health::Missing);
        let unreadable = Health::new(Status::Unknown, "ConfigMap/shop/web: unreadable");
        assert_eq!(recorded_health(&unreadable), event::Health::Unknown);
        assert_eq!(
            recorded_health(&Health::new(Status::Current, "ready")),
            event::Health::Healthy
        );
        assert_eq!(
            recorded_health(&Health::new(Status::Terminating, "deleting")),
            event::Health::Progressing
        );
    }
}
