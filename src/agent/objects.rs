//! Owns the agent's side of App objects (`apps.reckon.dev`): watching them (one namespace or
//! all) and turning what it sees into App changes for the supervisor, and writing each App's
//! status subresource — only when it changed, so a steady App costs no writes — including the
//! external anchor check (the status saw events the store does not have: a StoreGap).

use crate::crd::{self, App as AppObject, PassSummary};
use crate::event::{self, Draft, Event, EventKind};
use crate::store::writer::StoreHandle;
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use std::collections::BTreeSet;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("App {namespace}/{name}: writing its status: {source}")]
    WriteStatus {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("App {app}: reading its state from the store: {source}")]
    ReadStore {
        app: String,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("App {app}: recording the store gap: {source}")]
    RecordGap {
        app: String,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("App {app}: reading its status from the store: {reason}")]
    Query { app: String, reason: String },
}

/// What the App object watch tells the supervisor.
#[derive(Debug)]
pub enum ObjectChange {
    /// Created or changed (status-only changes included: the supervisor ignores what does not
    /// change the App).
    Applied(Box<AppObject>),
    Deleted {
        namespace: String,
        name: String,
    },
    /// A full (re-)list: the App objects that exist now; the supervisor drops the others.
    Listed(BTreeSet<(String, String)>),
}

/// Watches App objects in `namespace` (all namespaces when `None`) until the receiver closes.
/// Watch failures back off and retry: a missing CRD or a lost connection is logged, not fatal.
pub async fn watch(
    client: kube::Client,
    namespace: Option<String>,
    tx: mpsc::Sender<ObjectChange>,
) {
    let api: Api<AppObject> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing: Option<BTreeSet<(String, String)>> = None;
    while let Some(item) = stream.next().await {
        let change = match item {
            Ok(watcher::Event::Init) => {
                listing = Some(BTreeSet::new());
                continue;
            }
            Ok(watcher::Event::InitApply(obj)) => {
                if let Some(seen) = listing.as_mut() {
                    seen.insert(key_of(&obj));
                }
                ObjectChange::Applied(Box::new(obj))
            }
            Ok(watcher::Event::InitDone) => {
                ObjectChange::Listed(listing.take().unwrap_or_default())
            }
            Ok(watcher::Event::Apply(obj)) => ObjectChange::Applied(Box::new(obj)),
            Ok(watcher::Event::Delete(obj)) => {
                let (namespace, name) = key_of(&obj);
                ObjectChange::Deleted { namespace, name }
            }
            Err(e) => {
                tracing::warn!(error = %e, "watching App objects (retrying)");
                continue;
            }
        };
        if tx.send(change).await.is_err() {
            return;
        }
    }
}

pub fn key_of(obj: &AppObject) -> (String, String) {
    (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

/// Writes one App object's status. It remembers what it last wrote (first: what the object
/// had) and patches only a different status.
pub struct StatusWriter {
    api: Api<AppObject>,
    namespace: String,
    name: String,
    generation: Option<i64>,
    last: Option<crd::AppStatus>,
    /// The store's last seq for the App, the pass summary and the checkpoint the last status was
    /// built from: when none changed, the status cannot have changed and the store is not read.
    built_from: Option<(u64, PassSummary, Option<u64>)>,
    /// This agent's shard: the status says which store its last event seq counts in.
    shards: crate::shard::Shards,
    /// The agent's latest signed checkpoint of the store's head, carried in the status.
    checkpoint: tokio::sync::watch::Receiver<Option<crd::StatusCheckpoint>>,
}

impl StatusWriter {
    pub fn new(
        client: kube::Client,
        object: &AppObject,
        shards: crate::shard::Shards,
        checkpoint: tokio::sync::watch::Receiver<Option<crd::StatusCheckpoint>>,
    ) -> StatusWriter {
        let (namespace, name) = key_of(object);
        StatusWriter {
            api: Api::namespaced(client, &namespace),
            namespace,
            name,
            generation: object.metadata.generation,
            last: object.status.clone(),
            built_from: None,
            shards,
            checkpoint,
        }
    }

    /// The external anchor, checked before the App's first pass: when the status names a later
    /// event of this App than the store has, the store lost events (or was restored from an
    /// old backup). Records a StoreGap event for the App and says so in the log; the StoreGap
    /// condition follows from the event.
    pub async fn check_anchor(&self, store: &StoreHandle) -> Result<Option<u64>, ObjectsError> {
        let written_by = self.last.as_ref().and_then(|s| s.shard);
        if !crd::anchor_applies(written_by, self.shards.index) {
            tracing::info!(
                app = %self.name,
                from = written_by.unwrap_or(0),
                to = self.shards.index,
                "App moved to this shard: its earlier history stays in the other shard's store"
            );
            return Ok(None);
        }
        let status_seq = self.last.as_ref().and_then(|s| s.last_event_seq);
        let store_seq = store
            .app_state(&self.name)
            .await
            .map_err(|source| ObjectsError::ReadStore {
                app: self.name.clone(),
                source,
            })?
            .map_or(0, |s| s.last_seq);
        let Some(expected) = crd::store_behind(status_seq, store_seq) else {
            return Ok(None);
        };
        let reason = format!(
            "the App object's status names event {expected} of App {} but the store's last \
             event of it is {store_seq}: the store was lost or restored from an older backup",
            self.name
        );
        tracing::error!(app = %self.name, status_seq = expected, store_seq, "store gap: {reason}");
        let draft = Draft::new(
            Some(&self.name),
            Event::StoreGap(event::StoreGap {
                expected_seq: Some(expected),
                found_seq: store_seq,
                reason,
            }),
        );
        let appended =
            store
                .append(vec![draft])
                .await
                .map_err(|source| ObjectsError::RecordGap {
                    app: self.name.clone(),
                    source,
                })?;
        Ok(Some(appended.last_seq))
    }

    /// Brings the status up to date after a pass (or before the first: `NotYet`).
    pub async fn after_pass(
        &mut self,
        store: &StoreHandle,
        summary: PassSummary,
    ) -> Result<(), ObjectsError> {
        let state =
            store
                .app_state(&self.name)
                .await
                .map_err(|source| ObjectsError::ReadStore {
                    app: self.name.clone(),
                    source,
                })?;
        let seq = state.as_ref().map_or(0, |s| s.last_seq);
        let checkpoint = self.checkpoint.borrow().clone();
        let checkpoint_seq = checkpoint.as_ref().map(|c| c.seq);
        if self.built_from.as_ref() == Some(&(seq, summary.clone(), checkpoint_seq)) {
            return Ok(());
        }
        let reader = store.reader().clone();
        let app = self.name.clone();
        let (stored, gap) = tokio::task::spawn_blocking(move || {
            let mut projections = crate::store::Projections::default();
            if let Some(state) = state {
                projections.apps.insert(app.clone(), state);
            }
            let stored = match crate::query::status(&reader, &projections, Some(&app)) {
                Ok(mut all) => all.pop(),
                Err(crate::query::QueryError::UnknownApp(_)) => None,
                Err(e) => return Err(e.to_string()),
            };
            let gap = crate::query::app_kind_page(&reader, &app, EventKind::StoreGap, None, 1)
                .map_err(|e| e.to_string())?
                .events
                .into_iter()
                .next()
                .map(|e| match &e.event {
                    Event::StoreGap(g) => format!("StoreGap event {}: {}", e.seq, g.reason),
                    other => crate::query::summary(other),
                });
            Ok((stored, gap))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .map_err(|reason| ObjectsError::Query {
            app: self.name.clone(),
            reason,
        })?;
        let mut facts = crd::pass_conditions(&summary).to_vec();
        if let Some(message) = gap {
            facts.push(crd::gap_condition(message));
        }
        let previous = self
            .last
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        let conditions = crd::with_times(&facts, &previous, self.generation, chrono::Utc::now());
        let mut status = crd::status_of(
            stored.as_ref(),
            (seq != 0).then_some(seq),
            conditions,
            self.generation,
        );
        status.shard = self.shards.is_sharded().then_some(self.shards.index);
        status.checkpoint = checkpoint;
        if let PassSummary::Done {
            failed_attempts, ..
        } = &summary
        {
            status.failed_attempts = *failed_attempts;
            status.last_attempt_time =
                (*failed_attempts > 0).then(|| crd::rfc3339(chrono::Utc::now()));
        }
        self.write(status).await?;
        self.built_from = Some((seq, summary, checkpoint_seq));
        Ok(())
    }

    /// Writes `status` unless it is what the object already has. A merge patch of the whole
    /// status: absent optional fields are sent as null, which removes them.
    pub async fn write(&mut self, status: crd::AppStatus) -> Result<(), ObjectsError> {
        if self.last.as_ref() == Some(&status) {
            return Ok(());
        }
        let patch = serde_json::json!({ "status": status });
        self.api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| ObjectsError::WriteStatus {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source,
            })?;
        self.last = Some(status);
        Ok(())
    }

    /// Marks an App object the agent does not run (invalid spec, name taken) as stalled.
    pub async fn refuse(&mut self, reason: &str, message: String) -> Result<(), ObjectsError> {
        let previous = self
            .last
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        let facts = crd::refused_conditions(reason, message);
        let conditions = crd::with_times(&facts, &previous, self.generation, chrono::Utc::now());
        let mut status = self.last.clone().unwrap_or_default();
        status.conditions = conditions;
        status.observed_generation = self.generation;
        self.write(status).await
    }

    /// Whether the object has a status (written by an agent before).
    pub fn has_status(&self) -> bool {
        self.last.is_some()
    }
}
