//! Owns the pass's health stage: the desired objects' health after a sync (waited for, up to
//! the App's timeout, when the sync wrote anything) or between syncs, recorded only when it
//! changes; the last recorded health is read back from the log once per process.

use super::live::Reading;
use super::{ReconcileError, Reconciler, events};
use crate::event::{self, Draft, Event};
use crate::plan::{DesiredObject, InventoryEntry, ObjectKey, ObjectRef, Observed};
use crate::store::{EventRead, Query, Selector};
use std::collections::{HashMap, HashSet};

/// Pages of 500 of an App's newest events searched for its last recorded health.
const HEALTH_RECALL_PAGES: usize = 4;

/// Health last recorded, per object and for the App.
#[derive(Default)]
pub(super) struct Recorded {
    pub objects: HashMap<ObjectKey, event::Health>,
    pub app: Option<event::Health>,
}

/// Whether an App not followed between syncs (a direct view) needs its objects read: only when
/// it has objects and was not healthy when last recorded (then one reading tells whether it
/// became so since, without another sync).
pub(super) fn needs_reading(last: event::Health, has_objects: bool) -> bool {
    last != event::Health::Healthy && has_objects
}

/// The desired objects a sync waits on for health: not those it failed to write or refused
/// that did not exist before (`failed` holds their keys, namespaces resolved by `resolve`) —
/// nothing makes them healthy until a later pass writes them, and waiting for them would hold
/// the App for its whole health timeout at every pass (an object RBAC or a policy refuses).
pub(super) fn worth_waiting_for(
    desired: &[DesiredObject],
    failed: &std::collections::BTreeSet<ObjectKey>,
    resolve: &dyn Fn(&ObjectRef) -> Option<ObjectRef>,
) -> Vec<ObjectRef> {
    desired
        .iter()
        .map(|d| &d.object)
        .filter(|o| resolve(o).is_none_or(|o| !failed.contains(&o.key())))
        .cloned()
        .collect()
}

/// The objects known to be the App's once a sync ran: its inventory and every object the
/// sync wrote (each now carries the App's label, so the watch will see it).
pub(super) fn owned_after(
    inventory: &[InventoryEntry],
    outcomes: &[crate::apply::ObjectOutcome],
) -> HashSet<ObjectKey> {
    inventory
        .iter()
        .map(|e| e.object.key())
        .chain(
            outcomes
                .iter()
                .filter(|o| super::execute::wrote(&o.outcome))
                .map(|o| o.object.key()),
        )
        .collect()
}

/// Keys of the objects `outcomes` failed (or refused) to write that `observed` did not find
/// present before the sync.
pub(super) fn failed_and_absent(
    outcomes: &[crate::apply::ObjectOutcome],
    observed: &Observed,
) -> std::collections::BTreeSet<ObjectKey> {
    outcomes
        .iter()
        .filter(|o| matches!(o.outcome, crate::apply::Outcome::Failed { .. }))
        .map(|o| o.object.key())
        .filter(|k| !matches!(observed.get(k), Some(crate::plan::Observation::Present(_))))
        .collect()
}

/// The HealthChanged events for `readings`, updating `recorded`: an object whose health
/// changed, or that is first seen unhealthy (a healthy first sighting is the normal case and
/// not worth an event each), and the App (the worst of its objects) when it changed.
pub(super) fn health_changes(
    app: &str,
    recorded: &mut Recorded,
    readings: Vec<Reading>,
) -> (event::Health, Vec<Draft>) {
    let mut drafts = Vec::new();
    let mut all = Vec::with_capacity(readings.len());
    let why = events::unready_message(&readings);
    for (object, health, message) in readings {
        all.push(health);
        let previous = recorded.objects.insert(object.key(), health);
        let changed = match previous {
            None => health != event::Health::Healthy,
            Some(p) => p != health,
        };
        if changed {
            drafts.push(events::health_changed(
                app,
                Some(&object),
                previous.unwrap_or(event::Health::Unknown),
                health,
                Some(message),
            ));
        }
    }
    let app_health = events::aggregate(&all);
    let previous = recorded.app.replace(app_health);
    if previous != Some(app_health) {
        drafts.push(events::health_changed(
            app,
            None,
            previous.unwrap_or(event::Health::Unknown),
            app_health,
            why,
        ));
    }
    (app_health, drafts)
}

/// Adds to `recorded` the health the events of a page (newest first) recorded, where nothing
/// newer was found; returns whether the App's own health was found.
pub(super) fn recall_page<'a>(
    recorded: &mut Recorded,
    events_newest_first: impl IntoIterator<Item = &'a Event>,
) -> bool {
    for event in events_newest_first {
        let Event::HealthChanged(h) = event else {
            continue;
        };
        match &h.object {
            None => {
                recorded.app.get_or_insert(h.to);
            }
            Some(o) => {
                recorded.objects.entry(o.key()).or_insert(h.to);
            }
        }
    }
    recorded.app.is_some()
}

impl Reconciler {
    /// The App's health after a sync: waited for when it wrote anything, else as it is now.
    /// Returns it and the number of events appended. `owned`: the objects known to be the
    /// App's after the sync; `observed` (the view before it) is let go before a wait, which
    /// may last minutes while a thousand Apps wait at once.
    pub(super) async fn sync_health(
        &mut self,
        applied_any: bool,
        desired: &[ObjectRef],
        owned: &HashSet<ObjectKey>,
        observed: Observed,
    ) -> Result<(event::Health, usize), ReconcileError> {
        if applied_any {
            drop(observed);
            let live = self.live.clone();
            let readings = live
                .settled_readings(desired, owned, self.app.health_timeout)
                .await?;
            self.record_readings(readings).await
        } else {
            self.record_health(desired, &observed).await
        }
    }

    /// Records health changes seen in `observed` (from the watch cache; without one there is
    /// nothing new to compare between syncs, except for an App not healthy when last
    /// recorded). Returns the App's health and the number of events appended.
    pub(super) async fn record_health(
        &mut self,
        desired: &[ObjectRef],
        observed: &Observed,
    ) -> Result<(event::Health, usize), ReconcileError> {
        if !self.live.follows_changes() {
            self.recall_health();
            let health = self.memory.health.app.unwrap_or(event::Health::Unknown);
            if !needs_reading(health, !desired.is_empty()) {
                return Ok((health, 0));
            }
        }
        let live = self.live.clone();
        let readings = live.readings(desired, observed).await;
        self.record_readings(readings).await
    }

    /// Records the health changes of `readings` ([`health_changes`]).
    async fn record_readings(
        &mut self,
        readings: Vec<Reading>,
    ) -> Result<(event::Health, usize), ReconcileError> {
        self.recall_health();
        let (health, drafts) = health_changes(&self.app.name, &mut self.memory.health, readings);
        let n = self.append(vec![], drafts).await?;
        Ok((health, n))
    }

    /// Reads the health last recorded for the App and its objects back from the log, so a
    /// restarted agent records a change only when there is one. Bounded: an App whose recent
    /// history holds no health record starts from "unknown".
    fn recall_health(&mut self) {
        if std::mem::replace(&mut self.memory.recalled, true) {
            return;
        }
        let mut query = Query::new(Selector::App(self.app.name.clone())).limit(500);
        for _ in 0..HEALTH_RECALL_PAGES {
            let Ok(page) = self.store.reader().query(&query) else {
                return;
            };
            let found = recall_page(
                &mut self.memory.health,
                page.events.iter().map(|e| &e.body.event),
            );
            if found || page.next.is_none() {
                return;
            }
            query = query.after(page.next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Digest, Health};
    use crate::plan::ObjectRef;

    fn reading(name: &str, health: Health) -> Reading {
        (
            ObjectRef::from_api_version("apps/v1", "Deployment", Some("shop"), name),
            health,
            format!("{name} is {health:?}"),
        )
    }

    fn objects_changed(drafts: &[Draft]) -> Vec<(Option<String>, Health)> {
        drafts
            .iter()
            .map(|d| match &d.event {
                Event::HealthChanged(h) => (h.object.as_ref().map(|o| o.name.clone()), h.to),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_sync_does_not_wait_for_objects_it_could_not_create() {
        use crate::apply::{FailureCause, ObjectOutcome, Outcome};
        use crate::plan::{LiveObject, Observation};
        let cm = |name: &str| ObjectRef::from_api_version("v1", "ConfigMap", None, name);
        let desired: Vec<DesiredObject> = ["new", "refused", "existing"]
            .iter()
            .map(|n| DesiredObject {
                object: cm(n),
                manifest: crate::model::Manifest::new(serde_json::json!({})),
                digest: Digest::ZERO,
                stored: None,
            })
            .collect();
        let resolve = |o: &ObjectRef| {
            let mut o = o.clone();
            o.namespace = Some("shop".into());
            Some(o)
        };
        let failed = |name: &str| ObjectOutcome {
            object: resolve(&cm(name)).unwrap(),
            outcome: Outcome::Failed {
                error: "forbidden".into(),
                cause: FailureCause::Forbidden,
            },
            digest: None,
            reason: None,
            resource_version: None,
            uid: None,
        };
        let mut observed = Observed::new();
        let existing = resolve(&cm("existing")).unwrap();
        observed.insert(
            existing.key(),
            Observation::Present(LiveObject {
                object: existing,
                manifest: serde_json::json!({}),
                managed_fields: Vec::new(),
            }),
        );
        observed.insert(resolve(&cm("refused")).unwrap().key(), Observation::Absent);
        let outcomes = vec![failed("refused"), failed("existing")];
        let keys = failed_and_absent(&outcomes, &observed);
        let waited: Vec<String> = worth_waiting_for(&desired, &keys, &resolve)
            .into_iter()
            .map(|o| o.name)
            .collect();
        // An object that exists is still read (its health is the App's); one never created is not.
        assert_eq!(waited, ["new", "existing"]);
    }

    #[test]
    fn after_a_sync_the_app_owns_its_inventory_and_what_it_wrote() {
        use crate::apply::{FailureCause, ObjectOutcome, Outcome};
        use crate::reconcile::fixtures::{applied, config_map, resolved};
        let outcome = |name: &str, outcome: Outcome| ObjectOutcome {
            object: resolved(&config_map(name, "1", true)),
            outcome,
            digest: None,
            reason: None,
            resource_version: None,
            uid: None,
        };
        let forbidden = Outcome::Failed {
            error: "forbidden".into(),
            cause: FailureCause::Forbidden,
        };
        let outcomes = [
            outcome("created", Outcome::Created),
            outcome("refused", forbidden),
            outcome("kept", Outcome::Unchanged),
        ];
        let inventory = [applied(&config_map("before", "1", true))];
        let mut owned: Vec<String> = owned_after(&inventory, &outcomes)
            .into_iter()
            .map(|k| k.to_string())
            .collect();
        owned.sort();
        let key = |name: &str| resolved(&config_map(name, "1", true)).key().to_string();
        // Neither a refused write nor an unchanged object outside the inventory is known to
        // carry the App's label.
        assert_eq!(owned, [key("before"), key("created")]);
    }

    #[test]
    fn a_healthy_first_sighting_records_only_the_app() {
        let mut recorded = Recorded::default();
        let (health, drafts) =
            health_changes("shop", &mut recorded, vec![reading("web", Health::Healthy)]);
        assert_eq!(health, Health::Healthy);
        assert_eq!(objects_changed(&drafts), [(None, Health::Healthy)]);
    }

    #[test]
    fn an_unhealthy_first_sighting_is_recorded_and_the_app_is_the_worst() {
        let mut recorded = Recorded::default();
        let (health, drafts) = health_changes(
            "shop",
            &mut recorded,
            vec![
                reading("web", Health::Healthy),
                reading("db", Health::Progressing),
            ],
        );
        assert_eq!(health, Health::Progressing);
        assert_eq!(
            objects_changed(&drafts),
            [
                (Some("db".into()), Health::Progressing),
                (None, Health::Progressing)
            ]
        );
    }

    #[test]
    fn unchanged_health_records_nothing_and_a_change_records_the_object() {
        let mut recorded = Recorded::default();
        health_changes(
            "shop",
            &mut recorded,
            vec![reading("web", Health::Progressing)],
        );
        let (_, drafts) = health_changes(
            "shop",
            &mut recorded,
            vec![reading("web", Health::Progressing)],
        );
        assert!(drafts.is_empty());
        let (health, drafts) =
            health_changes("shop", &mut recorded, vec![reading("web", Health::Healthy)]);
        assert_eq!(health, Health::Healthy);
        assert_eq!(
            objects_changed(&drafts),
            [
                (Some("web".into()), Health::Healthy),
                (None, Health::Healthy)
            ]
        );
    }

    #[test]
    fn a_direct_view_reads_health_only_for_an_app_not_healthy_with_objects() {
        assert!(!needs_reading(Health::Healthy, true));
        assert!(!needs_reading(Health::Degraded, false));
        assert!(needs_reading(Health::Degraded, true));
        assert!(needs_reading(Health::Unknown, true));
    }

    #[test]
    fn recalled_health_keeps_the_newest_record_of_each() {
        let changed = |object: Option<&str>, to: Health| {
            events::health_changed(
                "shop",
                object
                    .map(|n| ObjectRef::from_api_version("v1", "ConfigMap", Some("shop"), n))
                    .as_ref(),
                Health::Unknown,
                to,
                None,
            )
            .event
        };
        let newest_first = [
            changed(Some("web"), Health::Healthy),
            changed(Some("web"), Health::Progressing),
        ];
        let mut recorded = Recorded::default();
        assert!(
            !recall_page(&mut recorded, &newest_first),
            "no App health yet"
        );
        let older = [
            changed(None, Health::Degraded),
            changed(None, Health::Healthy),
        ];
        assert!(recall_page(&mut recorded, &older));
        assert_eq!(recorded.app, Some(Health::Degraded));
        assert_eq!(
            recorded.objects.values().collect::<Vec<_>>(),
            [&Health::Healthy]
        );
    }
}
