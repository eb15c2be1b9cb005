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
    #[error("App {app}: recording where its history goes on from: {source}")]
    RecordIdentity {
        app: String,
        #[source]
        source: crate::store::StoreError,
    },
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
    /// A Policy object created or changed.
    PolicyApplied(Box<crd::policy::Policy>),
    PolicyDeleted(String),
    /// A full (re-)list of Policy objects: the names that exist now.
    PoliciesListed(BTreeSet<String>),
}

/// What one watch relays to the supervisor: how an object's key is read and which change each
/// event becomes. App objects and Policy objects differ only in these.
struct Relay<K, Key> {
    what: &'static str,
    key: fn(&K) -> Key,
    applied: fn(K) -> ObjectChange,
    deleted: fn(&K) -> ObjectChange,
    listed: fn(BTreeSet<Key>) -> ObjectChange,
}

/// Follows `api` until the receiver closes: each event becomes its change, and a full
/// (re-)list ends with the keys that exist now. Watch failures back off and retry: a missing
/// CRD or a lost connection is logged, not fatal.
async fn relay<K, Key>(api: Api<K>, r: Relay<K, Key>, tx: mpsc::Sender<ObjectChange>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    Key: Ord,
{
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing: Option<BTreeSet<Key>> = None;
    while let Some(item) = stream.next().await {
        let change = match item {
            Ok(watcher::Event::Init) => {
                listing = Some(BTreeSet::new());
                continue;
            }
            Ok(watcher::Event::InitApply(obj)) => {
                if let Some(seen) = listing.as_mut() {
                    seen.insert((r.key)(&obj));
                }
                (r.applied)(obj)
            }
            Ok(watcher::Event::InitDone) => (r.listed)(listing.take().unwrap_or_default()),
            Ok(watcher::Event::Apply(obj)) => (r.applied)(obj),
            Ok(watcher::Event::Delete(obj)) => (r.deleted)(&obj),
            Err(e) => {
                tracing::warn!(error = %e, "watching {} (retrying)", r.what);
                continue;
            }
        };
        if tx.send(change).await.is_err() {
            return;
        }
    }
}

fn policy_name(p: &crd::policy::Policy) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

/// Watches Policy objects (cluster-scoped) until the receiver closes.
pub async fn watch_policies(client: kube::Client, tx: mpsc::Sender<ObjectChange>) {
    let relayed = Relay {
        what: "Policy objects",
        key: policy_name,
        applied: |p| ObjectChange::PolicyApplied(Box::new(p)),
        deleted: |p| ObjectChange::PolicyDeleted(policy_name(p)),
        listed: ObjectChange::PoliciesListed,
    };
    relay(Api::all(client), relayed, tx).await
}

/// Watches App objects in `namespace` (all namespaces when `None`) until the receiver closes.
pub async fn watch(
    client: kube::Client,
    namespace: Option<String>,
    tx: mpsc::Sender<ObjectChange>,
) {
    let api: Api<AppObject> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let relayed = Relay {
        what: "App objects",
        key: key_of,
        applied: |obj| ObjectChange::Applied(Box::new(obj)),
        deleted: |obj| {
            let (namespace, name) = key_of(obj);
            ObjectChange::Deleted { namespace, name }
        },
        listed: ObjectChange::Listed,
    };
    relay(api, relayed, tx).await
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
    /// The App's identity in the store (`NAMESPACE.NAME`).
    app: String,
    /// When the object was created: history under its identity from before then is an
    /// earlier object's.
    created: Option<chrono::DateTime<chrono::Utc>>,
    /// The configuration file has an App called like this object: the name's history is its.
    pub shadows_file_app: bool,
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
            app: crate::model::identity::of_object(&namespace, &name),
            created: object
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| chrono::DateTime::from_timestamp_micros(t.0.as_microsecond())),
            shadows_file_app: false,
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
                app = %self.app,
                from = written_by.unwrap_or(0),
                to = self.shards.index,
                "App moved to this shard: its earlier history stays in the other shard's store"
            );
            return Ok(None);
        }
        let status_seq = self.last.as_ref().and_then(|s| s.last_event_seq);
        let mut store_seq = self.last_seq_of(store, &self.app).await?;
        // A status written before App objects had identities counts in the bare name's
        // history, whether or not that history became this App's.
        if self.last.as_ref().is_some_and(|s| s.identity.is_none()) {
            store_seq = store_seq.max(self.last_seq_of(store, &self.name).await?);
        }
        let Some(expected) = crd::store_behind(status_seq, store_seq) else {
            return Ok(None);
        };
        let reason = format!(
            "the App object's status names event {expected} of App {} but the store's last \
             event of it is {store_seq}: the store was lost or restored from an older backup",
            self.app
        );
        tracing::error!(app = %self.app, status_seq = expected, store_seq, "store gap: {reason}");
        let draft = Draft::new(
            Some(&self.app),
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
                    app: self.app.clone(),
                    source,
                })?;
        Ok(Some(appended.last_seq))
    }

    /// The last seq the store holds under `app` (0: none).
    async fn last_seq_of(&self, store: &StoreHandle, app: &str) -> Result<u64, ObjectsError> {
        Ok(store
            .app_state(app)
            .await
            .map_err(|source| ObjectsError::ReadStore {
                app: app.to_string(),
                source,
            })?
            .map_or(0, |s| s.last_seq))
    }

    /// What the store holds under `app`: its last event and that event's time.
    async fn stored_under(
        &self,
        store: &StoreHandle,
        app: &str,
    ) -> Result<Option<crd::StoredUnder>, ObjectsError> {
        let Some(state) = store
            .app_state(app)
            .await
            .map_err(|source| ObjectsError::ReadStore {
                app: app.to_string(),
                source,
            })?
        else {
            return Ok(None);
        };
        let seq = state.last_seq;
        let reader = store.reader().clone();
        let found = tokio::task::spawn_blocking(move || {
            use crate::store::EventRead as _;
            reader.get_many(&[seq])
        })
        .await
        .map_err(|e| ObjectsError::Query {
            app: app.to_string(),
            reason: e.to_string(),
        })?
        .map_err(|source| ObjectsError::ReadStore {
            app: app.to_string(),
            source,
        })?;
        // A compacted-away last event cannot be: compaction keeps its summary, a later event.
        Ok(found
            .into_iter()
            .flatten()
            .next()
            .map(|e| crd::StoredUnder {
                last_seq: seq,
                last_time: e.body.time,
            }))
    }

    /// Decides, before the App's first pass, where its record goes on from, and records it:
    /// the history a previous reckon kept under the object's bare name, when the object's
    /// status anchor proves it is the object's (`AppRenamed`), or a fresh start when the history
    /// under its identity is an earlier object's (`AppReset`). Returns the event's seq.
    pub async fn settle_identity(&self, store: &StoreHandle) -> Result<Option<u64>, ObjectsError> {
        let anchor_here =
            crd::anchor_applies(self.last.as_ref().and_then(|s| s.shard), self.shards.index);
        let under_identity = self.stored_under(store, &self.app).await?;
        let under_name = match under_identity {
            None => self.stored_under(store, &self.name).await?,
            Some(_) => None,
        };
        let decision = crd::continuity(
            self.last.as_ref(),
            self.created,
            anchor_here,
            under_identity,
            under_name,
            &self.name,
            self.shadows_file_app,
        );
        let event = match decision {
            crd::Continuity::Continue => return Ok(None),
            crd::Continuity::Rename { from, anchor } => {
                // The whole state moves, stored revisions included: the event carries it.
                let state = store
                    .complete_app_state(&from)
                    .await
                    .map_err(|source| ObjectsError::ReadStore {
                        app: from.clone(),
                        source,
                    })?
                    .unwrap_or_default();
                let base_state =
                    crate::store::projection::encode_snapshot(&state).map_err(|e| {
                        ObjectsError::Query {
                            app: self.app.clone(),
                            reason: e.to_string(),
                        }
                    })?;
                let reason = format!(
                    "App object {}/{}'s status names event {anchor}, the last one recorded \
                     under {from}: its history and inventory continue as {}",
                    self.namespace, self.name, self.app
                );
                tracing::info!(app = %self.app, %from, anchor, "App object's history renamed");
                Event::AppRenamed(event::AppRenamed {
                    from,
                    anchor_seq: Some(anchor),
                    reason,
                    base_state,
                })
            }
            crd::Continuity::Fresh { previous_seq } => {
                let reason = format!(
                    "App object {}/{} was created after event {previous_seq}, the last one of \
                     {}, and has no status: a new App, not the object that recorded them",
                    self.namespace, self.name, self.app
                );
                tracing::info!(app = %self.app, previous_seq, "App object starts anew");
                Event::AppReset(event::AppReset {
                    previous_seq,
                    reason,
                })
            }
        };
        let appended = store
            .append(vec![Draft::new(Some(&self.app), event).by("reckon")])
            .await
            .map_err(|source| ObjectsError::RecordIdentity {
                app: self.app.clone(),
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
        // The App's state and its folded status (last sync, drift): what status shows.
        let projections =
            store
                .app_projections(&self.app)
                .await
                .map_err(|source| ObjectsError::ReadStore {
                    app: self.app.clone(),
                    source,
                })?;
        let seq = projections.apps.get(&self.app).map_or(0, |s| s.last_seq);
        let checkpoint = self.checkpoint.borrow().clone();
        let checkpoint_seq = checkpoint.as_ref().map(|c| c.seq);
        if self.built_from.as_ref() == Some(&(seq, summary.clone(), checkpoint_seq)) {
            return Ok(());
        }
        let reader = store.reader().clone();
        let app = self.app.clone();
        let (stored, gap) = tokio::task::spawn_blocking(move || {
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
            app: self.app.clone(),
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
        status.identity = Some(self.app.clone());
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
