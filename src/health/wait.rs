//! Owns waiting for a set of objects to become healthy: polls each until it is Current or
//! Failed, or the deadline passes.
//!
//! Polling rather than watching: a sync waits on a few dozen objects of many kinds once, and a
//! watch per kind would cost a list plus a long-lived connection each, for the same answer.

use super::{Health, Status, assess};
use crate::apply::Catalog;
use crate::plan::ObjectRef;
use futures::stream::{self, StreamExt};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long and how often to poll.
#[derive(Debug, Clone)]
pub struct WaitOptions {
    pub timeout: Duration,
    pub interval: Duration,
    /// Objects read at once; the same reasoning as the executor's apply concurrency.
    pub concurrency: usize,
}

impl Default for WaitOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            interval: Duration::from_secs(1),
            concurrency: 8,
        }
    }
}

async fn check(catalog: &Catalog, object: &ObjectRef) -> Health {
    let resolved = match catalog.resolve(object) {
        Some(r) => r,
        None => {
            return Health::new(
                Status::Unknown,
                format!("{object}: kind {} not served", object.api_version()),
            );
        }
    };
    let api = catalog.api(&resolved, object.namespace.as_deref());
    match api.get_opt(&object.name).await {
        Ok(Some(live)) => match serde_json::to_value(&live) {
            Ok(value) => assess(&value),
            Err(e) => Health::new(Status::Unknown, format!("{object}: unreadable: {e}")),
        },
        Ok(None) => Health::new(Status::Unknown, format!("{object}: not found")),
        Err(e) => Health::new(Status::Unknown, format!("{object}: reading it: {e}")),
    }
}

/// Whether waiting longer can change the answer. Failed is final for a sync (a deadline was
/// exceeded, a job failed); it may still recover later and a later sync will see it.
fn settled(health: &Health) -> bool {
    matches!(health.status, Status::Current | Status::Failed)
}

/// Polls `objects` until each is Current or Failed, or `options.timeout` passes; returns the
/// last health of each, in input order. Objects already settled are not read again. Read
/// failures are not errors: they make that object's health [`Status::Unknown`] with the cause
/// as message, and it is read again at the next round.
pub async fn wait(
    catalog: &Catalog,
    objects: &[ObjectRef],
    options: &WaitOptions,
) -> Vec<(ObjectRef, Health)> {
    let started = Instant::now();
    let mut last: BTreeMap<usize, Health> = BTreeMap::new();
    loop {
        let pending: Vec<usize> = (0..objects.len())
            .filter(|i| !last.get(i).is_some_and(settled))
            .collect();
        let results: Vec<(usize, Health)> = stream::iter(pending)
            .map(|i| async move { (i, check(catalog, &objects[i]).await) })
            .buffer_unordered(options.concurrency.max(1))
            .collect()
            .await;
        last.extend(results);
        if last.values().all(settled) || started.elapsed() >= options.timeout {
            break;
        }
        tokio::time::sleep(options.interval).await;
    }
    objects
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, object)| {
            let health = last
                .remove(&i)
                .unwrap_or_else(|| Health::new(Status::Unknown, "not checked"));
            (object, health)
        })
        .collect()
}
