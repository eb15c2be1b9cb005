//! Owns waiting for a set of objects to become healthy: polls each until it is Current or
//! Failed, or the deadline passes.
//!
//! Polling rather than watching: a sync waits on a few dozen objects of many kinds once, and a
//! watch per kind would cost a list plus a long-lived connection each, for the same answer.
//!
//! A workload still unready when the wait ends (or failed) is explained by its Pods: one list
//! of its Pods, and the first Pod's problem in the kubelet's or scheduler's words is added to
//! its message ("0 of 2 replicas available; pod web-5d9c-x2: container main CrashLoopBackOff").

use super::Catalog;
use crate::health::{Health, Status, assess, pod_problem, pod_selector};
use crate::model::ObjectRef;
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

/// The health of one object and, for a workload that owns Pods, the selector of its Pods.
async fn check(catalog: &Catalog, object: &ObjectRef) -> (Health, Option<String>) {
    let resolved = match catalog.resolve(object) {
        Some(r) => r,
        None => {
            let health = Health::new(
                Status::Unknown,
                format!("{object}: kind {} not served", object.api_version()),
            );
            return (health, None);
        }
    };
    let api = catalog.api(&resolved, object.namespace.as_deref());
    match api.get_opt(&object.name).await {
        Ok(Some(live)) => match serde_json::to_value(&live) {
            Ok(value) => (assess(&value), pod_selector(&value)),
            Err(e) => (
                Health::new(Status::Unknown, format!("{object}: unreadable: {e}")),
                None,
            ),
        },
        Ok(None) => (
            Health::new(Status::Unknown, format!("{object}: not found")),
            None,
        ),
        Err(e) => (
            Health::new(Status::Unknown, format!("{object}: reading it: {e}")),
            None,
        ),
    }
}

/// The first problem among the Pods `selector` picks in `namespace` (by name, so the same Pod
/// is named from one reading to the next), as `pod <name>: <problem>`.
async fn pods_problem(catalog: &Catalog, namespace: &str, selector: &str) -> Option<String> {
    let pod = ObjectRef::from_api_version("v1", "Pod", Some(namespace), "");
    let resolved = catalog.resolve(&pod)?;
    let api = catalog.api(&resolved, Some(namespace));
    let params = kube::api::ListParams::default().labels(selector);
    let mut pods = match api.list(&params).await {
        Ok(list) => list.items,
        Err(error) => {
            tracing::debug!(%error, selector, "listing a workload's Pods to explain its health");
            return None;
        }
    };
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    pods.iter().find_map(|p| {
        let value = serde_json::to_value(p).ok()?;
        let problem = pod_problem(&value)?;
        Some(format!(
            "pod {}: {problem}",
            p.metadata.name.as_deref().unwrap_or("?")
        ))
    })
}

/// Adds its Pods' first problem to the message of every workload not Current.
async fn explain_by_pods(
    catalog: &Catalog,
    objects: &[ObjectRef],
    selectors: &BTreeMap<usize, String>,
    last: &mut BTreeMap<usize, Health>,
    concurrency: usize,
) {
    let unready: Vec<(usize, String, String)> = selectors
        .iter()
        .filter(|(i, _)| last.get(i).is_some_and(|h| h.status != Status::Current))
        .filter_map(|(i, sel)| Some((*i, objects[*i].namespace.clone()?, sel.clone())))
        .collect();
    for (i, problem) in pod_problems(catalog, unready, concurrency).await {
        if let Some(health) = last.get_mut(&i) {
            health.message = format!("{}; {problem}", health.message);
        }
    }
}

/// For each `(key, namespace, Pod selector)`, the first problem among those Pods (see
/// [`pod_problem`]) as `pod <name>: <problem>`; keys whose Pods have none are left out. One
/// list request per workload, `concurrency` at a time.
pub async fn pod_problems<K: Send>(
    catalog: &Catalog,
    workloads: Vec<(K, String, String)>,
    concurrency: usize,
) -> Vec<(K, String)> {
    stream::iter(workloads)
        .map(|(key, ns, sel)| async move { (key, pods_problem(catalog, &ns, &sel).await) })
        .buffer_unordered(concurrency.max(1))
        .filter_map(|(key, problem)| async move { problem.map(|p| (key, p)) })
        .collect()
        .await
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
    let mut selectors: BTreeMap<usize, String> = BTreeMap::new();
    loop {
        let pending: Vec<usize> = (0..objects.len())
            .filter(|i| !last.get(i).is_some_and(settled))
            .collect();
        let results: Vec<(usize, (Health, Option<String>))> = stream::iter(pending)
            .map(|i| async move { (i, check(catalog, &objects[i]).await) })
            .buffer_unordered(options.concurrency.max(1))
            .collect()
            .await;
        for (i, (health, selector)) in results {
            last.insert(i, health);
            if let Some(selector) = selector {
                selectors.insert(i, selector);
            }
        }
        if last.values().all(settled) || started.elapsed() >= options.timeout {
            break;
        }
        tokio::time::sleep(options.interval).await;
    }
    explain_by_pods(catalog, objects, &selectors, &mut last, options.concurrency).await;
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
