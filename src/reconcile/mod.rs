//! Owns one App's sync pass: the revision to deploy (followed or pinned), render, the
//! inventory folded from the log, live state (the shared watch cache, or one GET per object),
//! plan, apply, health, and every step recorded as events as it happens.
//!
//! A pass records nothing when there is nothing new: an unchanged App whose live state matches
//! what was applied costs no write to the cluster and no event. What is recorded is recorded as
//! soon as it is known (each object's outcome streams from the executor into the log), so an
//! agent killed mid-sync loses at most the requests in flight, and the restarted agent takes
//! its inventory from the log and does not repeat what was recorded.

pub mod events;
pub mod namespace;
pub mod retry;
pub mod rollback;

use crate::apply::{self, ApplyOptions, Catalog, ChangeSet, ObjectOutcome, Outcome};
use crate::config;
use crate::event::{self, Digest, Draft, Event, SyncOutcome};
use crate::health::{self, Status};
use crate::observe;
use crate::plan::{self, Action, DesiredObject, InventoryEntry, ObjectKey, Observed, Plan};
use crate::render::{self, RenderOptions, SecretKey};
use crate::source::GitSource;
use crate::store::projection::AppState;
use crate::store::{EventRead, Query, Selector, StoreError, blob, writer::StoreHandle};
use crate::watch::AppWatch;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Errors that stop a pass. Everything about the App's own input (a fetch failure, broken
/// YAML, an invalid object) is not an error here: it is recorded as an event and reported.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("App {app}: {source}")]
    Observe {
        app: String,
        // Boxed: the largest variant sets the size of every `Result` in this module.
        #[source]
        source: Box<observe::ObserveError>,
    },
    #[error("App {app}: recording events: {source}")]
    Store {
        app: String,
        #[source]
        source: StoreError,
    },
    #[error("App {app}: the log names blob {digest} for {object}, but the store {problem}")]
    Blob {
        app: String,
        object: String,
        digest: Digest,
        problem: String,
    },
    #[error("a pass ended abnormally: {0}")]
    Task(String),
    #[error("App {app}: waiting for the watch cache: {source}")]
    Watch {
        app: String,
        #[source]
        source: crate::watch::WatchError,
    },
}

/// Where a pass reads live objects from.
#[derive(Clone)]
pub enum Live {
    /// One GET per object (one-shot commands: `reckon sync`, `reckon diff`).
    Direct,
    /// The agent's watch cache, shared by every App on the cluster.
    Watch(Arc<RwLock<AppWatch>>),
}

/// What a pass should do besides planning.
#[derive(Clone, Default)]
pub struct PassOptions {
    /// Fetch the source first (a poll or webhook); otherwise use the last recorded head.
    pub fetch: bool,
    /// When that fetch was asked for (a poll's due time); `None`: now. A fetch of the same
    /// remote that started since, for another App, answers it from the mirror: a thousand
    /// Apps polled together cost one network fetch.
    pub fetch_requested: Option<Instant>,
    /// Each outcome as it happens (for progress on a terminal).
    pub progress: Option<mpsc::UnboundedSender<ObjectOutcome>>,
}

/// How a pass ended.
#[derive(Debug, Clone, PartialEq)]
pub enum PassStatus {
    /// The source has no deployable revision yet (never fetched, or every fetch failed).
    NoRevision,
    Suspended,
    /// Rendering failed; nothing was applied or pruned.
    RenderFailed {
        error: String,
    },
    /// Live state matches the revision; nothing was sent or recorded.
    InSync,
    /// A sync ran and was recorded.
    Synced {
        outcome: SyncOutcome,
        counts: event::SyncCounts,
    },
}

/// The result of one pass.
#[derive(Debug, Clone)]
pub struct PassReport {
    pub revision: Option<String>,
    pub status: PassStatus,
    /// Why the fetch failed, if it ran and failed (the pass then used the last good head).
    pub fetch_failure: Option<String>,
    /// Events this pass appended.
    pub appended: usize,
    /// The App's health after the pass.
    pub health: event::Health,
    /// Whether the App is pinned (a rollback): the revision is the pinned one, not Git's head.
    pub pinned: bool,
    pub duration: Duration,
    /// Failed sync attempts in a row (0 after a pass that failed nothing); the agent waits
    /// [`retry::backoff`] of it before retrying.
    pub failed_attempts: u32,
    /// This pass failed exactly as the recorded attempt before it and recorded nothing.
    pub unrecorded_retry: bool,
    /// Objects this pass did not write because they are not the App's (another App's or
    /// tool's, or taken over): each reason as recorded in its `ApplyFailed`.
    pub refused: Vec<String>,
}

/// One revision rendered: the desired objects and the blob address of their storable set
/// (whose bytes are rebuilt from the objects when they are stored: no second copy is kept).
#[derive(Clone)]
struct Rendered {
    revision: String,
    desired: Arc<Vec<DesiredObject>>,
    digest: Digest,
}

/// A rendered revision as a pass keeps it for the next: each object's canonical JSON as
/// recorded (Secret values sealed), one per line in render order, lz4-compressed. A thousand
/// Apps' parsed sets (`serde_json::Value`, a B-tree node per map) were tens of MB; a pass
/// unpacks its own in microseconds.
struct Packed {
    revision: String,
    digest: Digest,
    bytes: Box<[u8]>,
}

impl Packed {
    fn pack(rendered: &Rendered, key: &SecretKey) -> Packed {
        Packed {
            revision: rendered.revision.clone(),
            digest: rendered.digest,
            bytes: lz4_flex::compress_prepend_size(&packed_lines(&rendered.desired, key))
                .into_boxed_slice(),
        }
    }

    fn unpack(&self, key: &SecretKey) -> Result<Rendered, String> {
        let bytes = lz4_flex::decompress_size_prepended(&self.bytes).map_err(|e| e.to_string())?;
        open_recorded(self.revision.clone(), &bytes, self.digest, key)
    }
}

/// Objects in the recorded format ([`render::from_recorded`]: one canonical object per line,
/// Secret values sealed) opened as `revision`'s desired set, whose address is `digest`.
fn open_recorded(
    revision: String,
    bytes: &[u8],
    digest: Digest,
    key: &SecretKey,
) -> Result<Rendered, String> {
    let set = render::from_recorded(bytes, key).map_err(|e| e.to_string())?;
    Ok(Rendered {
        revision,
        desired: Arc::new(
            set.objects
                .iter()
                .map(|o| DesiredObject::from_rendered(o, key))
                .collect(),
        ),
        digest,
    })
}

/// One object as recorded: as rendered, a Secret's values sealed.
fn recorded_form(d: &DesiredObject, key: &SecretKey) -> serde_json::Value {
    match d.stored {
        // Only objects whose storable form differs (Secrets) need sealing.
        Some(_) => render::sealed_object(d.manifest.as_value(), key),
        None => d.manifest.as_value().clone(),
    }
}

/// What [`Packed`] keeps, before compression: [`render::from_recorded`]'s input format (the
/// recorded set's), but in render order rather than sorted.
fn packed_lines(desired: &[DesiredObject], key: &SecretKey) -> Vec<u8> {
    let mut out = Vec::new();
    for d in desired {
        out.extend_from_slice(render::canonical_json(&recorded_form(d, key)).as_bytes());
        out.push(b'\n');
    }
    out
}

/// The canonical bytes of a rendered set as recorded for its revision: each object as rendered,
/// Secret values sealed under the agent's key (see [`render::sealed_object`]), so a rollback can
/// apply it without Git. Per-object blobs (the inventory) keep the keyed-hash form instead.
fn set_bytes(desired: &[DesiredObject], key: &SecretKey) -> Vec<u8> {
    let stored: Vec<serde_json::Value> = desired.iter().map(|d| recorded_form(d, key)).collect();
    blob::canonical(&stored)
}

/// What the inventory keeps of each object the plan applies: its storable rendered form, whose
/// canonical JSON hashes to the render digest the planner compares with next time.
fn plan_stored<'a>(
    plan: &Plan,
    desired: &'a [DesiredObject],
) -> HashMap<ObjectKey, &'a serde_json::Value> {
    let mut by_name: HashMap<(&str, &str, &str), Vec<&DesiredObject>> = HashMap::new();
    for d in desired {
        by_name
            .entry((&d.object.group, &d.object.kind, &d.object.name))
            .or_default()
            .push(d);
    }
    plan.actions
        .iter()
        .filter(|a| matches!(a, Action::Create { .. } | Action::Configure { .. }))
        .filter_map(|a| {
            let o = a.object();
            let candidates = by_name.get(&(o.group.as_str(), o.kind.as_str(), o.name.as_str()))?;
            // The planner defaulted the namespace of those that had none.
            let d = candidates
                .iter()
                .find(|d| d.object.namespace == o.namespace)
                .or_else(|| candidates.iter().find(|d| d.object.namespace.is_none()))?;
            Some((o.key(), d.comparable()))
        })
        .collect()
}

/// What a pass remembers for the next one (in memory: losing it costs one repeated record).
#[derive(Default)]
struct Memory {
    /// The revision last rendered.
    rendered: Option<Packed>,
    /// The last fetch failure recorded (the same one is not recorded at every poll).
    fetch_failure: Option<String>,
    /// The last render failure recorded: `(revision, error)`.
    render_failure: Option<(String, String)>,
    /// Drifts recorded and not yet corrected (detect mode), by object.
    drifts: HashMap<ObjectKey, String>,
    /// Last recorded health per object, and of the App.
    health: HashMap<ObjectKey, event::Health>,
    app_health: Option<event::Health>,
    /// Whether the last recorded health was read back from the log (once per process).
    recalled: bool,
    /// Storable manifests by blob address (inventory entries' last applied state).
    blobs: HashMap<Digest, serde_json::Value>,
    /// The last recorded sync attempt that failed: a retry failing the same way is not recorded.
    failure: Option<retry::FailureSignature>,
    /// Failed sync attempts in a row.
    failed_attempts: u32,
    /// Whether the apply at a seq (an inventory entry's `lifecycle_seq`) was an adoption from
    /// outside the App: read once from the log, never changes.
    adoptions: HashMap<u64, bool>,
}

/// Limits shared by every App of an agent, so a thousand Apps starting at once neither open
/// a thousand connections to the API server nor park a thousand threads on one Git mirror.
#[derive(Clone)]
pub struct Limits {
    /// Passes between their start and their last apply at once (health waits are outside).
    /// Each holds its rendered set, plan and observations meanwhile: a thousand Apps starting
    /// together would otherwise all hold theirs while queueing for `applies`, and the freed
    /// memory stays fragmented in the allocator afterwards.
    pub passes: Arc<tokio::sync::Semaphore>,
    /// Fetches at once (each runs on a blocking thread).
    pub fetches: Arc<tokio::sync::Semaphore>,
    /// Apps applying at once (each with the executor's own per-App concurrency, so at most
    /// `applies × 8` write requests are in flight: below the API server's default limit of 200
    /// mutating requests).
    pub applies: Arc<tokio::sync::Semaphore>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            passes: Arc::new(tokio::sync::Semaphore::new(32)),
            fetches: Arc::new(tokio::sync::Semaphore::new(8)),
            applies: Arc::new(tokio::sync::Semaphore::new(16)),
        }
    }
}

/// One App's reconciler: its configuration, source, cluster and memory between passes.
pub struct Reconciler {
    app: config::App,
    source: GitSource,
    store: StoreHandle,
    key: SecretKey,
    catalog: Arc<Catalog>,
    live: Live,
    apply: ApplyOptions,
    limits: Limits,
    memory: Memory,
    /// Objects this App manages (desired and inventory), for routing watch notifications.
    managed: Vec<ObjectKey>,
}

/// The actor of everything the agent records on its own.
pub const AGENT_ACTOR: &str = "reckon";

/// What the agent does on its own is done by `reckon` (users act through intents).
fn by_agent(drafts: Vec<Draft>) -> Vec<Draft> {
    drafts
        .into_iter()
        .map(|d| {
            if d.actor.is_none() {
                d.by(AGENT_ACTOR)
            } else {
                d
            }
        })
        .collect()
}

/// Pages of 500 of an App's newest events searched for its last recorded health.
const HEALTH_RECALL_PAGES: usize = 4;

/// How often a pass re-reads the watch cache while waiting for health.
const HEALTH_POLL: Duration = Duration::from_millis(200);
/// How long a pass waits for the watch cache of a kind it has just started watching.
const WATCH_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

impl Reconciler {
    pub fn new(
        app: config::App,
        source: GitSource,
        store: StoreHandle,
        key: SecretKey,
        catalog: Arc<Catalog>,
        live: Live,
    ) -> Self {
        let apply = ApplyOptions::from_app(&app);
        Self {
            app,
            source,
            store,
            key,
            catalog,
            live,
            apply,
            limits: Limits::default(),
            memory: Memory::default(),
            managed: Vec::new(),
        }
    }

    /// Shares `limits` with other reconcilers (the agent's, for all its Apps).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn app(&self) -> &config::App {
        &self.app
    }

    pub fn source(&self) -> &GitSource {
        &self.source
    }

    /// The objects the last pass found this App managing (desired and inventory).
    pub fn managed(&self) -> &[ObjectKey] {
        &self.managed
    }

    fn store_err(&self, source: StoreError) -> ReconcileError {
        ReconcileError::Store {
            app: self.app.name.clone(),
            source,
        }
    }

    async fn append(
        &self,
        blobs: Vec<Vec<u8>>,
        drafts: Vec<Draft>,
    ) -> Result<usize, ReconcileError> {
        if drafts.is_empty() && blobs.is_empty() {
            return Ok(0);
        }
        let n = drafts.len();
        self.store
            .append_with_blobs(blobs, by_agent(drafts))
            .await
            .map_err(|e| self.store_err(e))?;
        Ok(n)
    }

    async fn state(&self) -> Result<AppState, ReconcileError> {
        Ok(self
            .store
            .app_state(&self.app.name)
            .await
            .map_err(|e| self.store_err(e))?
            .unwrap_or_default())
    }

    /// The revision to deploy: the pinned one, else the source's deployable head.
    fn target_revision(state: &AppState) -> Option<String> {
        if state.intent.is_pinned() {
            state.intent.revision.clone()
        } else {
            state.deployable_head.clone()
        }
    }

    /// The revision the App last finished a sync of (the latest `applied_at`).
    fn applied_revision(state: &AppState) -> Option<&str> {
        state
            .revisions
            .iter()
            .filter_map(|(sha, r)| r.applied_at.map(|t| (t, sha)))
            .max()
            .map(|(_, sha)| sha.as_str())
    }

    /// The inventory as the planner wants it: each entry's last applied manifest, which is the
    /// blob the log names. A desired object with the same digest has the same content, so the
    /// common case (nothing changed) reads no blob and keeps no second copy in memory.
    fn inventory(
        &mut self,
        state: &AppState,
        desired: &[DesiredObject],
    ) -> Result<Vec<InventoryEntry>, ReconcileError> {
        let by_digest: HashMap<Digest, &DesiredObject> = desired
            .iter()
            .filter_map(|d| Some((events::digest_of(&d.digest)?, d)))
            .collect();
        // Whether an entry was adopted matters only to a prune: look it up (one read of the
        // apply that began its life, remembered) for entries no desired object names.
        let ns = &self.app.target.namespace;
        let desired_keys: std::collections::HashSet<ObjectKey> = desired
            .iter()
            .map(|d| {
                let mut key = d.object.key();
                key.namespace.get_or_insert_with(|| ns.clone());
                key
            })
            .collect();
        let lookups: Vec<u64> = state
            .inventory
            .values()
            .filter(|e| !desired_keys.contains(&events::plan_ref(&e.object).key()))
            .filter_map(|e| e.lifecycle_seq)
            .filter(|seq| !self.memory.adoptions.contains_key(seq))
            .collect();
        if !lookups.is_empty() {
            let found = self
                .store
                .reader()
                .get_many(&lookups)
                .map_err(|e| self.store_err(e))?;
            for (seq, env) in lookups.iter().zip(found) {
                let adopted = env.is_some_and(|e| events::adopted_from_outside(&e.body.event));
                self.memory.adoptions.insert(*seq, adopted);
            }
        }
        let mut entries = Vec::with_capacity(state.inventory.len());
        for entry in state.inventory.values() {
            let digest = entry.last_digest;
            let known = by_digest
                .get(&digest)
                .map(|d| d.comparable())
                .or_else(|| self.memory.blobs.get(&digest));
            let value = match known {
                Some(v) => v.clone(),
                None => {
                    let problem = |p: String| ReconcileError::Blob {
                        app: self.app.name.clone(),
                        object: entry.object.identity(),
                        digest,
                        problem: p,
                    };
                    let bytes = self
                        .store
                        .reader()
                        .blob(&digest)
                        .map_err(|e| problem(format!("cannot read it: {e}")))?
                        .ok_or_else(|| problem("does not hold it".into()))?;
                    let v: serde_json::Value = serde_json::from_slice(&bytes)
                        .map_err(|e| problem(format!("holds no JSON object: {e}")))?;
                    self.memory.blobs.insert(digest, v.clone());
                    v
                }
            };
            // The blob is the rendered form (it hashes to the render digest); the planner
            // compares live objects with it as applied, namespace defaulted.
            let mut value = value;
            if let (Some(ns), Some(meta)) = (
                &entry.object.namespace,
                value.get_mut("metadata").and_then(|m| m.as_object_mut()),
            ) {
                meta.entry("namespace")
                    .or_insert_with(|| serde_json::Value::String(ns.clone()));
            }
            entries.push(InventoryEntry {
                object: events::plan_ref(&entry.object),
                last_applied_digest: format!("sha256:{}", digest.to_hex()),
                last_applied: value,
                adopted: entry
                    .lifecycle_seq
                    .and_then(|seq| self.memory.adoptions.get(&seq).copied())
                    .unwrap_or(false),
            });
        }
        Ok(entries)
    }

    /// Reads and renders a revision (off the async threads).
    async fn render(&self, revision: &str) -> Result<Rendered, String> {
        let files = self
            .source
            .read_tree_async(revision.to_string())
            .await
            .map_err(|e| format!("reading revision {revision}: {e}"))?;
        let options = RenderOptions {
            app: self.app.name.clone(),
            secret_key: self.key.clone(),
            kustomize_timeout: Duration::from_secs(60),
            fill_port_protocol: self.catalog.server().needs_port_protocol(),
        };
        let revision = revision.to_string();
        let create_namespace = self
            .app
            .target
            .create_namespace
            .then(|| self.app.target.namespace.clone());
        let source = self.source.clone();
        tokio::task::spawn_blocking(move || {
            // kustomize units may reach the rest of the repository (`../../base`).
            let repo = source
                .tree_at(&revision)
                .map_err(|e| format!("reading revision {revision}: {e}"))?;
            let mut set = render::render_in(&files, &repo, &options).map_err(|e| e.to_string())?;
            if let Some(ns) = &create_namespace {
                set = namespace::with_target_namespace(set, ns, &options.app, &options.secret_key);
            }
            let desired: Vec<DesiredObject> = set
                .objects
                .iter()
                .map(|o| DesiredObject::from_rendered(o, &options.secret_key))
                .collect();
            let digest = Digest::of(&set_bytes(&desired, &options.secret_key));
            Ok(Rendered {
                revision,
                desired: Arc::new(desired),
                digest,
            })
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// The manifests recorded for a revision (its RenderSucceeded blob), opened to apply.
    async fn recorded(&self, revision: &str, digest: Digest) -> Result<Rendered, String> {
        let reader = self.store.reader().clone();
        let key = self.key.clone();
        let revision = revision.to_string();
        tokio::task::spawn_blocking(move || {
            let bytes = reader
                .blob(&digest)
                .map_err(|e| format!("reading blob {digest}: {e}"))?
                .ok_or_else(|| format!("the store does not hold blob {digest}"))?;
            // The blob's address is the set's digest: re-serializing and sealing it again
            // would only compute the same bytes.
            open_recorded(revision, &bytes, digest, &key)
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// The desired set for `revision`. A pinned App (rollback, pin) applies what was recorded
    /// for its revision, so it needs neither the commit on the remote nor the mirror; only when
    /// nothing usable was recorded (never rendered, or recorded by an older reckon that kept
    /// Secret values as keyed hashes only) is the revision rendered from Git, and when that fails
    /// too the error names both causes. A followed revision is rendered from Git.
    async fn desired_for(&self, state: &AppState, revision: &str) -> Result<Rendered, String> {
        let recorded = state
            .intent
            .is_pinned()
            .then(|| state.revisions.get(revision).and_then(|r| r.digest))
            .flatten();
        let Some(digest) = recorded else {
            return self.render(revision).await;
        };
        match self.recorded(revision, digest).await {
            Ok(r) => Ok(r),
            Err(recorded) => {
                tracing::warn!(app = %self.app.name, %revision, error = %recorded, "the recorded manifests cannot be applied; rendering the revision from Git");
                self.render(revision).await.map_err(|git| {
                    format!(
                        "the manifests recorded for {revision} cannot be applied ({recorded}), \
                         and rendering it from Git failed: {git}"
                    )
                })
            }
        }
    }

    async fn observe_live(
        &self,
        desired: &[DesiredObject],
        inventory: &[InventoryEntry],
    ) -> Result<Observed, ReconcileError> {
        let ns = &self.app.target.namespace;
        match &self.live {
            Live::Direct => Ok(apply::observe(
                &self.catalog,
                desired,
                inventory,
                ns,
                &self.key,
                self.apply.concurrency,
            )
            .await),
            Live::Watch(watch) => {
                let kinds: Vec<apply::Resolved> = desired
                    .iter()
                    .map(|d| &d.object)
                    .chain(inventory.iter().map(|e| &e.object))
                    .filter_map(|o| self.catalog.resolve_kind(&o.group_kind()))
                    .collect();
                let pending = {
                    let mut w = watch.write().expect("watch lock");
                    w.add_kinds(kinds.clone());
                    kinds.iter().any(|k| {
                        !w.is_synced(&plan::GroupKind::new(&k.resource.group, &k.resource.kind))
                    })
                };
                if pending {
                    let deadline = Instant::now() + WATCH_SYNC_TIMEOUT;
                    loop {
                        let synced = {
                            let w = watch.read().expect("watch lock");
                            kinds.iter().all(|k| {
                                w.is_synced(&plan::GroupKind::new(
                                    &k.resource.group,
                                    &k.resource.kind,
                                ))
                            })
                        };
                        if synced || Instant::now() >= deadline {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                let lookup = |gk: &plan::GroupKind| self.catalog.scope(gk);
                let mut observed = {
                    let w = watch.read().expect("watch lock");
                    w.observe_for(desired, inventory, ns, &lookup)
                };
                // The watch sees only objects labelled as an App's. A desired object outside
                // the inventory may exist without the label (made by hand, by another tool):
                // read it, so that it is adopted or refused, never taken for absent and
                // "created" over what is there.
                let owned: std::collections::HashSet<ObjectKey> =
                    inventory.iter().map(|e| e.object.key()).collect();
                let unowned: Vec<DesiredObject> = desired
                    .iter()
                    .filter(|d| {
                        apply::resolve_namespace(&d.object, lookup(&d.object.group_kind()), ns)
                            .is_some_and(|o| {
                                !owned.contains(&o.key())
                                    && !matches!(
                                        observed.get(&o.key()),
                                        Some(plan::Observation::Present(_))
                                    )
                            })
                    })
                    .cloned()
                    .collect();
                if !unowned.is_empty() {
                    let direct = apply::observe(
                        &self.catalog,
                        &unowned,
                        &[],
                        ns,
                        &self.key,
                        self.apply.concurrency,
                    )
                    .await;
                    observed.extend(direct);
                }
                Ok(observed)
            }
        }
    }

    /// Keeps the plan's Namespace prunes whose Namespace holds objects the plan does not delete
    /// ([`plan::guard_namespaces`]); lists those Namespaces first (only when there are any).
    async fn guard_namespaces(&self, plan: &mut Plan, policy: &plan::Policy) {
        if policy.prune_non_empty_namespaces {
            return;
        }
        let mut residents = std::collections::BTreeMap::new();
        for namespace in plan::pruned_namespaces(plan) {
            match apply::residents(&self.catalog, &namespace).await {
                Ok(list) => {
                    residents.insert(namespace, list);
                }
                Err(error) => {
                    tracing::warn!(app = %self.app.name, %namespace, %error, "listing a Namespace before pruning it; kept");
                }
            }
        }
        plan::guard_namespaces(plan, &residents, policy);
    }

    /// One pass: fetch (if asked), render the target revision, plan against the inventory and
    /// live state, apply, wait for health, and record it all.
    pub async fn pass(&mut self, options: &PassOptions) -> Result<PassReport, ReconcileError> {
        let started = Instant::now();
        let name = self.app.name.clone();
        let limits = self.limits.clone();
        let mut appended = 0;
        let mut fetch_failure = None;
        // The fetch is outside the pass limit: it holds nothing large (the fetch limit bounds
        // it), and a pass waiting for it would keep a rendering pass from starting.
        let observed_state = if options.fetch {
            let o = observe::observe_quietly(
                &self.store,
                &name,
                &self.source,
                self.memory.fetch_failure.as_deref(),
                Some(&self.limits.fetches),
                options.fetch_requested.unwrap_or_else(Instant::now),
            )
            .await
            .map_err(|source| ReconcileError::Observe {
                app: name.clone(),
                source: Box::new(source),
            })?;
            appended += o.appended;
            self.memory.fetch_failure = o.failure.clone();
            fetch_failure = o.failure;
            Some(o.state)
        } else {
            None
        };
        let pass_permit = limits.passes.acquire().await.expect("never closed");
        // The observation read the projection after its own append; nothing was appended since.
        let state = match observed_state {
            Some(state) => state,
            None => self.state().await?,
        };
        let pinned = state.intent.is_pinned();
        let failed_before = self.memory.failed_attempts;
        let report = |revision, status, appended, health| PassReport {
            revision,
            status,
            fetch_failure: fetch_failure.clone(),
            appended,
            health,
            pinned,
            duration: started.elapsed(),
            failed_attempts: failed_before,
            unrecorded_retry: false,
            refused: Vec::new(),
        };
        let current_health = self.memory.app_health.unwrap_or(event::Health::Unknown);

        // Suspension follows the file; each change of it is recorded once.
        if self.app.suspend != state.suspended {
            let event = if self.app.suspend {
                Event::AppSuspended(event::AppSuspended {
                    reason: Some("suspend: true in the configuration".into()),
                })
            } else {
                Event::AppResumed(event::AppResumed {
                    reason: Some("suspend removed from the configuration".into()),
                })
            };
            appended += self
                .append(vec![], vec![Draft::new(Some(&name), event)])
                .await?;
        }
        if self.app.suspend {
            return Ok(report(
                None,
                PassStatus::Suspended,
                appended,
                current_health,
            ));
        }
        let Some(revision) = Self::target_revision(&state) else {
            return Ok(report(
                None,
                PassStatus::NoRevision,
                appended,
                current_health,
            ));
        };

        // Render. A failure keeps everything applied before and prunes nothing.
        // A revision renders the same every time: a pass woken by the watch re-plans from the
        // rendered set it already has instead of reading and rendering the tree again.
        let cached = self
            .memory
            .rendered
            .as_ref()
            .filter(|r| r.revision == revision)
            .map(|r| r.unpack(&self.key));
        let rendered = match cached {
            Some(Ok(r)) => Ok(r),
            // Unpacking what this process packed cannot fail short of a bug; render again then.
            Some(Err(error)) => {
                tracing::warn!(app = %name, %revision, %error, "the kept rendered set did not unpack; rendering again");
                self.desired_for(&state, &revision).await
            }
            None => self.desired_for(&state, &revision).await,
        };
        let rendered = match rendered {
            Ok(r) => r,
            Err(error) => {
                let failure = (revision.clone(), error.clone());
                if self.memory.render_failure.as_ref() != Some(&failure) {
                    let mut drafts = vec![Draft::new(
                        Some(&name),
                        Event::RenderFailed(event::RenderFailed {
                            revision: revision.clone(),
                            error: error.clone(),
                        }),
                    )];
                    let inventory = self.inventory(&state, &[])?;
                    for action in plan::render_failed(&inventory) {
                        if let Action::PruneSkipped { object, reason } = &action {
                            let outcome = ObjectOutcome {
                                object: object.clone(),
                                outcome: Outcome::Skipped {
                                    reason: apply::SkipReason::Prune(reason.clone()),
                                },
                                digest: None,
                                reason: None,
                                resource_version: None,
                                uid: None,
                            };
                            drafts.extend(events::outcome_draft(&name, &revision, &outcome, None));
                        }
                    }
                    appended += self.append(vec![], drafts).await?;
                    self.memory.render_failure = Some(failure);
                    tracing::warn!(app = %name, %revision, %error, "render failed; nothing applied or pruned");
                } else {
                    tracing::debug!(app = %name, %revision, "render still failing");
                }
                return Ok(report(
                    Some(revision),
                    PassStatus::RenderFailed { error },
                    appended,
                    current_health,
                ));
            }
        };
        self.memory.render_failure = None;
        self.memory.rendered = Some(Packed::pack(&rendered, &self.key));

        // The rendered set goes to the blob store once per distinct render of a revision.
        let set_digest = rendered.digest;
        let recorded_digest = state.revisions.get(&revision).and_then(|r| r.digest);
        let mut pending_blobs = Vec::new();
        let mut drafts = Vec::new();
        if recorded_digest != Some(set_digest) {
            pending_blobs.push(set_bytes(&rendered.desired, &self.key));
            drafts.push(Draft::new(
                Some(&name),
                Event::RenderSucceeded(event::RenderSucceeded {
                    revision: revision.clone(),
                    digest: set_digest,
                    object_count: rendered.desired.len() as u32,
                }),
            ));
        }
        let desired: &[DesiredObject] = &rendered.desired;
        let inventory = self.inventory(&state, desired)?;
        let observed = self.observe_live(desired, &inventory).await?;
        let policy = plan::Policy::from_app(&self.app);
        let lookup = |gk: &plan::GroupKind| self.catalog.scope(gk);
        let mut plan = plan::plan(desired, &inventory, &observed, &policy, &lookup);
        self.guard_namespaces(&mut plan, &policy).await;
        self.managed = plan.actions.iter().map(|a| a.object().key()).collect();
        let refused: Vec<String> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Refuse { object, reason, .. } => Some(reason.describe(object)),
                _ => None,
            })
            .collect();

        // Drifts seen before and still uncorrected (detect mode) are not recorded again; one
        // seen before and corrected now (Git changed, or the mode became `correct`) still ends
        // with its correction.
        let mut drifts = Vec::new();
        let mut corrections = Vec::new();
        let mut still_drifted = HashMap::new();
        for action in &plan.actions {
            if let Action::Drift {
                object,
                drift,
                corrected,
            } = action
            {
                let signature = events::drift_signature(drift);
                let seen = self.memory.drifts.get(&object.key()) == Some(&signature);
                if !corrected {
                    still_drifted.insert(object.key(), signature);
                }
                if !seen {
                    drifts.push((object.clone(), drift.clone(), *corrected));
                } else if *corrected {
                    corrections.push((object.clone(), drift.clone(), true));
                }
            }
        }
        self.memory.drifts = still_drifted;

        let new_revision = Self::applied_revision(&state) != Some(revision.as_str())
            || state
                .revisions
                .get(&revision)
                .is_none_or(|r| r.outcome.is_none());
        // A refusal is a failure to report: it goes through the sync (recorded once, then
        // retried without a record while it fails the same way), never through "in sync".
        let work = plan.actions.iter().any(|a| {
            matches!(
                a,
                Action::Create { .. }
                    | Action::Configure { .. }
                    | Action::Prune { .. }
                    | Action::Orphan { .. }
                    | Action::Refuse { .. }
            )
        });
        if !work && !new_revision {
            self.memory.failure = None;
            self.memory.failed_attempts = 0;
            // In sync, or drift only detected (detect mode): record that drift, if new.
            for (object, drift, _) in &drifts {
                drafts.push(events::drift_detected(&name, object, drift));
            }
            appended += self.append(pending_blobs, drafts).await?;
            let (health, n) = self.record_health(desired, &observed).await?;
            return Ok(report(
                Some(revision),
                PassStatus::InSync,
                appended + n,
                health,
            ));
        }

        // A recorded sync; a retry of the attempt that failed last is recorded only when it
        // ends differently, so its opening waits until that is known.
        let retrying = self
            .memory
            .failure
            .as_ref()
            .is_some_and(|f| f.revision == revision && f.digest == set_digest)
            && drifts.is_empty();
        drafts.push(Draft::new(
            Some(&name),
            Event::SyncStarted(event::SyncStarted {
                revision: revision.clone(),
                digest: Some(set_digest),
            }),
        ));
        for (object, drift, _) in &drifts {
            drafts.push(events::drift_detected(&name, object, drift));
        }
        for rejected in &plan.rejected {
            drafts.push(events::rejected_draft(&name, &revision, rejected));
        }
        let mut opening = Some((pending_blobs, drafts));
        if !retrying && let Some((blobs, drafts)) = opening.take() {
            appended += self.append(blobs, drafts).await?;
        }

        let (changes, n) = self
            .execute(&plan, desired, &revision, options, !retrying)
            .await?;
        appended += n;
        let signature = retry::signature(&revision, set_digest, &changes.outcomes);
        if retrying
            && retry::repeats(
                self.memory.failure.as_ref(),
                signature.as_ref(),
                &changes.outcomes,
            )
        {
            self.memory.failed_attempts += 1;
            crate::metrics::METRICS.sync_retries.inc();
            tracing::info!(app = %name, %revision, attempts = self.memory.failed_attempts, "sync failed again for the same causes; not recorded again");
            let counts = events::counts(&changes.outcomes, plan.rejected.len());
            let outcome = events::sync_outcome(&counts);
            let mut r = report(
                Some(revision),
                PassStatus::Synced { outcome, counts },
                appended,
                current_health,
            );
            r.failed_attempts = self.memory.failed_attempts;
            r.unrecorded_retry = true;
            r.refused = refused;
            return Ok(r);
        }
        if let Some((blobs, drafts)) = opening.take() {
            appended += self.append(blobs, drafts).await?;
            let stored = plan_stored(&plan, desired);
            let (blobs, drafts) = self.outcome_records(&stored, &revision, &changes.outcomes);
            appended += self.append(blobs, drafts).await?;
        }
        self.memory.failed_attempts = if signature.is_some() {
            failed_before + 1
        } else {
            0
        };
        self.memory.failure = signature;
        // Every change is on the server now (the health wait below can take much longer): the
        // moment "applied" is what `kubectl apply` returning corresponds to.
        tracing::info!(
            app = %name,
            %revision,
            objects = changes.outcomes.len(),
            "applied"
        );

        // Corrections of the drifts this plan re-applied.
        let mut drafts = Vec::new();
        for (object, drift, corrected) in drifts.iter().chain(&corrections) {
            if !corrected {
                continue;
            }
            let ok = changes.outcomes.iter().any(|o| {
                o.object.key() == object.key()
                    && matches!(
                        o.outcome,
                        Outcome::Created | Outcome::Configured { .. } | Outcome::Adopted { .. }
                    )
            });
            // Fields the new revision set are superseded, not put back (issue 15).
            let apply = plan.actions.iter().find(|a| {
                matches!(a, Action::Create { .. } | Action::Configure { .. })
                    && a.object().key() == object.key()
            });
            if let (true, Some(apply)) = (ok, apply) {
                drafts.extend(events::drift_ended(&name, &revision, object, drift, apply));
            }
        }
        appended += self.append(vec![], drafts).await?;

        drop(pass_permit);

        // Health: wait for what was applied, up to the App's timeout.
        let applied_any = changes.outcomes.iter().any(|o| {
            matches!(
                o.outcome,
                Outcome::Created | Outcome::Configured { .. } | Outcome::Adopted { .. }
            )
        });
        let (health, n) = if applied_any {
            self.wait_health(desired, &inventory).await?
        } else {
            self.record_health(desired, &observed).await?
        };
        appended += n;

        let counts = events::counts(&changes.outcomes, plan.rejected.len());
        let outcome = events::sync_outcome(&counts);
        appended += self
            .append(
                vec![],
                vec![Draft::new(
                    Some(&name),
                    Event::SyncFinished(event::SyncFinished {
                        revision: revision.clone(),
                        outcome,
                        counts: counts.clone(),
                        duration_ms: started.elapsed().as_millis() as u64,
                    }),
                )],
            )
            .await?;
        tracing::info!(app = %name, %revision, ?outcome, ?counts, "synced");
        let mut r = report(
            Some(revision),
            PassStatus::Synced { outcome, counts },
            appended,
            health,
        );
        r.failed_attempts = self.memory.failed_attempts;
        r.refused = refused;
        Ok(r)
    }

    /// Runs the plan, recording each outcome as the executor reports it (`stream`), or only
    /// running it (a retry: the caller records the outcomes once it knows they are news).
    /// Failures that may share a cause with others are held until the end and recorded
    /// together ([`Self::outcome_records`]).
    async fn execute(
        &mut self,
        plan: &Plan,
        desired: &[DesiredObject],
        revision: &str,
        options: &PassOptions,
        stream: bool,
    ) -> Result<(ChangeSet, usize), ReconcileError> {
        let stored = plan_stored(plan, desired);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let apply_options = ApplyOptions {
            progress: Some(tx),
            ..self.apply.clone()
        };
        let catalog = self.catalog.clone();
        let limits = self.limits.clone();
        // Held while requests are in flight, released when the executor returns: recording the
        // last outcomes waits for a flush, and other Apps need not wait for that.
        let mut permit = Some(limits.applies.acquire().await.expect("never closed"));
        let run = apply::execute(&catalog, plan, &apply_options);
        tokio::pin!(run);
        let mut appended = 0;
        let mut finished: Option<ChangeSet> = None;
        // Outcomes are queued to the store as they arrive and waited for at the end: waiting
        // for each flush here would stop polling the executor, holding the apply limit (and
        // the requests not yet started) for a flush that other Apps' applies need not wait for.
        let mut queued = Vec::new();
        let mut held: Vec<ObjectOutcome> = Vec::new();
        // Record outcomes while the executor runs; after it returns, drain what is left.
        loop {
            let mut batch: Vec<ObjectOutcome> = Vec::new();
            if finished.is_none() {
                tokio::select! {
                    done = &mut run => { finished = Some(done); drop(permit.take()); }
                    Some(first) = rx.recv() => { batch.push(first); }
                }
            }
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            if let Some(progress) = &options.progress {
                for outcome in &batch {
                    let _ = progress.send(outcome.clone());
                }
            }
            let (shared, now): (Vec<ObjectOutcome>, Vec<ObjectOutcome>) = batch
                .into_iter()
                .partition(|o| retry::shared_cause(o).is_some());
            held.extend(shared);
            let last = finished.is_some() && rx.is_empty();
            let mut ready = now;
            if last {
                ready.append(&mut held);
            }
            if stream && !ready.is_empty() {
                let (blobs, drafts) = self.outcome_records(&stored, revision, &ready);
                appended += drafts.len();
                queued.push(
                    self.store
                        .queue_with_blobs(blobs, by_agent(drafts))
                        .await
                        .map_err(|e| self.store_err(e))?,
                );
            }
            if last {
                for q in queued {
                    q.durable().await.map_err(|e| self.store_err(e))?;
                }
                let done = finished.take().expect("finished");
                return Ok((done, appended));
            }
        }
    }

    /// The events and blobs recording `outcomes`: an apply's stored form goes to the blob
    /// store; failures that share one cause become one `ApplyBlocked`, the rest one event each.
    fn outcome_records(
        &self,
        stored: &HashMap<ObjectKey, &serde_json::Value>,
        revision: &str,
        outcomes: &[ObjectOutcome],
    ) -> (Vec<Vec<u8>>, Vec<Draft>) {
        let grouped = retry::group_failures(outcomes);
        let blocked: std::collections::HashSet<usize> = grouped
            .blocked
            .iter()
            .flat_map(|(_, members)| members.iter().copied())
            .collect();
        let mut blobs = Vec::new();
        let mut drafts = Vec::new();
        for (i, outcome) in outcomes.iter().enumerate() {
            if blocked.contains(&i) {
                continue;
            }
            let mut address = None;
            if matches!(
                outcome.outcome,
                Outcome::Created | Outcome::Configured { .. } | Outcome::Adopted { .. }
            ) && let Some(value) = stored.get(&outcome.object.key())
            {
                let bytes = render::canonical_json(value).into_bytes();
                let digest = Digest::of(&bytes);
                debug_assert_eq!(
                    outcome.digest.as_deref().and_then(events::digest_of),
                    Some(digest),
                    "the stored form hashes to the render digest"
                );
                blobs.push(bytes);
                address = Some(digest);
            }
            drafts.extend(events::outcome_draft(
                &self.app.name,
                revision,
                outcome,
                address,
            ));
        }
        for (cause, members) in &grouped.blocked {
            let members: Vec<&ObjectOutcome> = members.iter().map(|&i| &outcomes[i]).collect();
            drafts.push(Draft::new(
                Some(&self.app.name),
                Event::ApplyBlocked(retry::blocked_event(revision, cause, &members)),
            ));
        }
        (blobs, drafts)
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
            for envelope in &page.events {
                let Event::HealthChanged(h) = &envelope.body.event else {
                    continue;
                };
                match &h.object {
                    None => {
                        self.memory.app_health.get_or_insert(h.to);
                    }
                    Some(o) => {
                        self.memory
                            .health
                            .entry(events::plan_ref(o).key())
                            .or_insert(h.to);
                    }
                }
            }
            if self.memory.app_health.is_some() || page.next.is_none() {
                return;
            }
            query = query.after(page.next);
        }
    }

    /// The desired objects' health as the watch cache sees them.
    fn readings(
        &self,
        desired: &[DesiredObject],
        observed: &Observed,
    ) -> Vec<(plan::ObjectRef, event::Health, String)> {
        let ns = &self.app.target.namespace;
        desired
            .iter()
            .filter_map(|d| {
                apply::resolve_namespace(&d.object, self.catalog.scope(&d.object.group_kind()), ns)
            })
            .map(|object| {
                let (health, message) = events::observed_health(observed.get(&object.key()));
                (object, health, message)
            })
            .collect()
    }

    /// Records health changes seen in `observed` (from the watch cache; without one there is
    /// nothing new to compare between syncs). Returns the App's health and the number of
    /// events appended.
    async fn record_health(
        &mut self,
        desired: &[DesiredObject],
        observed: &Observed,
    ) -> Result<(event::Health, usize), ReconcileError> {
        if matches!(self.live, Live::Direct) {
            // Without a watch there is nothing to compare between syncs, except for an App
            // that was not healthy when last recorded: one reading tells whether it became so
            // since (after the health timeout), without another sync.
            self.recall_health();
            let health = self.memory.app_health.unwrap_or(event::Health::Unknown);
            if health == event::Health::Healthy || desired.is_empty() {
                return Ok((health, 0));
            }
            let readings = self.direct_readings(desired, Duration::ZERO).await;
            return self.record_readings(readings).await;
        }
        let readings = self.readings(desired, observed);
        self.record_readings(readings).await
    }

    /// Records each object whose health changed (or that is first seen unhealthy; a healthy
    /// first sighting is the normal case and not worth an event each), and the App's health
    /// (the worst of its objects) when it changed.
    async fn record_readings(
        &mut self,
        readings: Vec<(plan::ObjectRef, event::Health, String)>,
    ) -> Result<(event::Health, usize), ReconcileError> {
        self.recall_health();
        let mut drafts = Vec::new();
        let mut all = Vec::with_capacity(readings.len());
        let why = events::unready_message(&readings);
        for (object, health, message) in readings {
            all.push(health);
            let previous = self.memory.health.insert(object.key(), health);
            let changed = match previous {
                None => health != event::Health::Healthy,
                Some(p) => p != health,
            };
            if changed {
                drafts.push(events::health_changed(
                    &self.app.name,
                    Some(&object),
                    previous.unwrap_or(event::Health::Unknown),
                    health,
                    Some(message),
                ));
            }
        }
        let app_health = events::aggregate(&all);
        let previous = self.memory.app_health.replace(app_health);
        if previous != Some(app_health) {
            drafts.push(events::health_changed(
                &self.app.name,
                None,
                previous.unwrap_or(event::Health::Unknown),
                app_health,
                why,
            ));
        }
        let n = self.append(vec![], drafts).await?;
        Ok((app_health, n))
    }

    /// Waits until every desired object is Current or Failed, or the App's health timeout
    /// passes, then records the health changes.
    async fn wait_health(
        &mut self,
        desired: &[DesiredObject],
        inventory: &[InventoryEntry],
    ) -> Result<(event::Health, usize), ReconcileError> {
        let deadline = Instant::now() + self.app.health_timeout;
        let settled =
            |h: &event::Health| matches!(h, event::Health::Healthy | event::Health::Degraded);
        let readings = match self.live.clone() {
            Live::Watch(_) => {
                let (observed, readings) = loop {
                    let observed = self.observe_live(desired, inventory).await?;
                    let readings = self.readings(desired, &observed);
                    if readings.iter().all(|(_, h, _)| settled(h)) || Instant::now() >= deadline {
                        break (observed, readings);
                    }
                    tokio::time::sleep(HEALTH_POLL).await;
                };
                self.explained_by_pods(readings, &observed).await
            }
            Live::Direct => self.direct_readings(desired, self.app.health_timeout).await,
        };
        self.record_readings(readings).await
    }

    /// Adds, to each workload still unready when the wait ended, its first Pod's problem (as
    /// [`health::wait`] does for the direct mode): one list of Pods per unready workload.
    async fn explained_by_pods(
        &self,
        mut readings: Vec<(plan::ObjectRef, event::Health, String)>,
        observed: &Observed,
    ) -> Vec<(plan::ObjectRef, event::Health, String)> {
        let unready: Vec<(usize, String, String)> = readings
            .iter()
            .enumerate()
            .filter(|(_, (_, h, _))| *h != event::Health::Healthy)
            .filter_map(|(i, (object, _, _))| {
                let Some(plan::Observation::Present(live)) = observed.get(&object.key()) else {
                    return None;
                };
                let selector = health::pod_selector(&live.manifest)?;
                Some((i, object.namespace.clone()?, selector))
            })
            .collect();
        for (i, problem) in health::pod_problems(&self.catalog, unready, 8).await {
            let message = &mut readings[i].2;
            *message = format!("{message}; {problem}");
        }
        readings
    }

    /// The desired objects' health read from the API server (one GET each per round), waiting
    /// up to `timeout` for them to settle.
    async fn direct_readings(
        &self,
        desired: &[DesiredObject],
        timeout: Duration,
    ) -> Vec<(plan::ObjectRef, event::Health, String)> {
        let ns = &self.app.target.namespace;
        let objects: Vec<plan::ObjectRef> = desired
            .iter()
            .filter_map(|d| {
                apply::resolve_namespace(&d.object, self.catalog.scope(&d.object.group_kind()), ns)
            })
            .collect();
        let options = health::WaitOptions {
            timeout,
            ..Default::default()
        };
        health::wait(&self.catalog, &objects, &options)
            .await
            .into_iter()
            .map(|(object, h)| {
                let recorded = if h.status == Status::Unknown && h.message.ends_with("not found") {
                    event::Health::Missing
                } else {
                    events::event_health(h.status)
                };
                (object, recorded, h.message)
            })
            .collect()
    }

    /// Plans without applying and asks the server what would change (a server-side dry run).
    /// Records nothing but what a fetch observed.
    pub async fn diff(&mut self, fetch: bool) -> Result<DiffReport, ReconcileError> {
        let name = self.app.name.clone();
        if fetch {
            observe::observe(&self.store, &name, &self.source)
                .await
                .map_err(|source| ReconcileError::Observe {
                    app: name.clone(),
                    source: Box::new(source),
                })?;
        }
        let state = self.state().await?;
        let Some(revision) = Self::target_revision(&state) else {
            return Ok(DiffReport {
                revision: None,
                render_error: None,
                plan: None,
                objects: Vec::new(),
            });
        };
        let rendered = match self.desired_for(&state, &revision).await {
            Ok(r) => r,
            Err(error) => {
                return Ok(DiffReport {
                    revision: Some(revision),
                    render_error: Some(error),
                    plan: None,
                    objects: Vec::new(),
                });
            }
        };
        let desired: &[DesiredObject] = &rendered.desired;
        let inventory = self.inventory(&state, desired)?;
        let observed = self.observe_live(desired, &inventory).await?;
        let policy = plan::Policy::from_app(&self.app);
        let lookup = |gk: &plan::GroupKind| self.catalog.scope(gk);
        let mut plan = plan::plan(desired, &inventory, &observed, &policy, &lookup);
        self.guard_namespaces(&mut plan, &policy).await;
        let objects = apply::diff(&self.catalog, &plan, &self.apply).await;
        Ok(DiffReport {
            revision: Some(revision),
            render_error: None,
            plan: Some(plan),
            objects,
        })
    }
}

/// What `reckon diff` shows.
#[derive(Debug)]
pub struct DiffReport {
    pub revision: Option<String>,
    pub render_error: Option<String>,
    pub plan: Option<Plan>,
    pub objects: Vec<apply::ObjectDiff>,
}

impl DiffReport {
    /// Whether a sync would change anything (or cannot run: a render failure counts).
    pub fn has_changes(&self) -> bool {
        self.render_error.is_some()
            || self.plan.as_ref().is_some_and(|p| !p.rejected.is_empty())
            || self
                .objects
                .iter()
                .any(|o| !matches!(o.outcome, apply::DiffOutcome::Unchanged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_render_unpacks_to_the_same_desired_objects() {
        let key = SecretKey::new([7; 32]);
        let files: Vec<render::SourceFile> = vec![
            (
                "app.yaml".into(),
                b"apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
                  apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n\
                  spec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    \
                  metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx, ports: [{containerPort: 80}]}]\n"
                    .to_vec(),
            ),
            (
                "secret.yaml".into(),
                b"apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: hunter2}\ndata: {user: YWRtaW4=}\n"
                    .to_vec(),
            ),
        ];
        let options = RenderOptions {
            app: "shop".into(),
            secret_key: key.clone(),
            kustomize_timeout: Duration::from_secs(5),
            fill_port_protocol: true,
        };
        let set = render::render(&files, &options).unwrap();
        let desired: Vec<DesiredObject> = set
            .objects
            .iter()
            .map(|o| DesiredObject::from_rendered(o, &key))
            .collect();
        assert_eq!(desired.len(), 3);
        assert!(desired.iter().any(|d| d.stored.is_some()), "the Secret");
        let rendered = Rendered {
            revision: "abc".into(),
            digest: Digest::of(&set_bytes(&desired, &key)),
            desired: Arc::new(desired.clone()),
        };

        let packed = Packed::pack(&rendered, &key);
        // Kept sealed: the Secret's value is not in the packed bytes in plain text.
        let bytes = lz4_flex::decompress_size_prepended(&packed.bytes).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains("YWRtaW4="),
            "{text}"
        );

        let unpacked = packed.unpack(&key).unwrap();
        assert_eq!(unpacked.revision, "abc");
        assert_eq!(unpacked.digest, rendered.digest);
        assert_eq!(*unpacked.desired, desired);
    }
}
