//! Owns one App's sync pass, as named stages called in order by a short driver
//! ([`Reconciler::pass`]): the revision and desired state (`desired`), the inventory folded
//! from the log (`inventory`), the live view (`live`: one GET per object, or the shared watch
//! cache), the plan and the decisions on it (`planning`), execute-and-record (`execute`) and
//! health (`health`), every step recorded as events as it happens. Each stage's decisions are
//! pure functions with unit tests; `diff` runs the same preparation as a pass.
//!
//! A pass records nothing when there is nothing new: an unchanged App whose live state matches
//! what was applied costs no write to the cluster and no event. What is recorded is recorded as
//! soon as it is known (each object's outcome streams from the executor into the log), so an
//! agent killed mid-sync loses at most the requests in flight, and the restarted agent takes
//! its inventory from the log and does not repeat what was recorded.

mod desired;
pub mod events;
mod execute;
#[cfg(test)]
mod fixtures;
mod health;
mod inventory;
mod live;
pub mod namespace;
mod planning;
pub mod reseal;
pub mod retry;
pub mod rollback;

pub use live::Live;

use crate::apply::{self, ApplyOptions, Catalog, ObjectOutcome};
use crate::config;
use crate::event::{self, Digest, Draft, Event, SyncOutcome};
use crate::fetch;
use crate::plan::{ObjectKey, Plan};
use crate::render::SecretKey;
use crate::source::GitSource;
use crate::store::projection::AppState;
use crate::store::{StoreError, writer::StoreHandle};
use live::LiveView;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Errors that stop a pass. Everything about the App's own input (a fetch failure, broken
/// YAML, an invalid object) is not an error here: it is recorded as an event and reported.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("App {app}: {source}")]
    Fetch {
        app: String,
        // Boxed: the largest variant sets the size of every `Result` in this module.
        #[source]
        source: Box<fetch::FetchError>,
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
    /// Writes this pass refused because they are outside the App's boundary (its App object's
    /// namespace, its policy): each reason as recorded.
    pub outside_boundary: Vec<String>,
}

/// What a pass remembers for the next one (in memory: losing it costs one repeated record).
#[derive(Default)]
struct Memory {
    /// The revision last rendered.
    rendered: Option<desired::Packed>,
    /// The `Chart.lock` dependencies the last render of a Helm chart fetched: for which
    /// revision, which archives, and when the repositories were last asked whether they still
    /// hold them.
    dependencies: Option<desired::KeptDependencies>,
    /// The last fetch failure recorded (the same one is not recorded at every poll).
    fetch_failure: Option<String>,
    /// The last render failure recorded: `(revision, error)`.
    render_failure: Option<(String, String)>,
    /// Drifts recorded and not yet corrected (detect mode), by object.
    drifts: HashMap<ObjectKey, String>,
    /// Last recorded health per object, and of the App.
    health: health::Recorded,
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
    /// The names the App's history was recorded under before (its `AppRenamed` events): read
    /// once from the log, the first time a plan needs them (a rename is recorded before the
    /// App's first pass, never while it runs).
    former_names: Option<Vec<String>>,
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
    /// What each App's source may cost (`limits:` in `reckon.yaml`).
    pub input: config::InputLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            passes: Arc::new(tokio::sync::Semaphore::new(32)),
            fetches: Arc::new(tokio::sync::Semaphore::new(8)),
            applies: Arc::new(tokio::sync::Semaphore::new(16)),
            input: config::InputLimits::default(),
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
    live: Arc<dyn LiveView>,
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

impl PassReport {
    /// A pass that has not got past its start: no revision, the health last recorded.
    fn starting(
        fetch_failure: Option<String>,
        appended: usize,
        pinned: bool,
        memory: &Memory,
    ) -> Self {
        PassReport {
            revision: None,
            status: PassStatus::NoRevision,
            fetch_failure,
            appended,
            health: memory.health.app.unwrap_or(event::Health::Unknown),
            pinned,
            duration: Duration::ZERO,
            failed_attempts: memory.failed_attempts,
            unrecorded_retry: false,
            refused: Vec::new(),
            outside_boundary: Vec::new(),
        }
    }

    fn ended(mut self, status: PassStatus, started: Instant) -> Self {
        self.status = status;
        self.duration = started.elapsed();
        self
    }
}

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
        let cluster = live::Cluster {
            catalog: catalog.clone(),
            key: key.clone(),
            namespace: app.target.namespace.clone(),
            concurrency: apply.concurrency,
        };
        Self {
            live: live::view(live, cluster),
            app,
            source,
            store,
            key,
            catalog,
            apply,
            limits: Limits::default(),
            memory: Memory::default(),
            managed: Vec::new(),
        }
    }

    /// Shares `limits` with other reconcilers (the agent's, for all its Apps); the source
    /// reads and fetches within `limits.input`.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.source = self.source.clone().with_input_limits(&limits.input);
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

    /// One pass: fetch (if asked), the desired state of the target revision, inventory, live
    /// view and plan, then either "in sync" (new drifts and health recorded) or a recorded
    /// sync (execute, record, wait for health).
    ///
    /// Its stages' futures are boxed: a pass's future is as large as its largest stage, and a
    /// thousand Apps hold theirs at once (each waiting for health or a permit).
    pub async fn pass(&mut self, options: &PassOptions) -> Result<PassReport, ReconcileError> {
        let started = Instant::now();
        // The fetch is outside the pass limit: it holds nothing large (the fetch limit bounds
        // it), and a pass waiting for it would keep a rendering pass from starting.
        let fetched = Box::pin(self.fetch(options)).await?;
        let limits = self.limits.clone();
        let pass_permit = limits.passes.acquire().await.expect("never closed");
        // A fetch read the projection after its own append; nothing was appended since.
        let state = match fetched.state {
            Some(state) => state,
            None => self.state().await?,
        };
        let pinned = state.intent.is_pinned();
        let mut report =
            PassReport::starting(fetched.failure, fetched.appended, pinned, &self.memory);
        report.appended += self.record_suspension(&state).await?;
        if self.app.suspend {
            return Ok(report.ended(PassStatus::Suspended, started));
        }
        let Some(revision) = desired::target_revision(&state) else {
            return Ok(report.ended(PassStatus::NoRevision, started));
        };
        report.revision = Some(revision.clone());
        let rendered = match Box::pin(self.desired_state(&state, &revision)).await {
            Ok(r) => r,
            Err(error) => {
                report.appended += self
                    .record_render_failure(&state, &revision, &error)
                    .await?;
                return Ok(report.ended(PassStatus::RenderFailed { error }, started));
            }
        };
        let render = desired::render_records(&self.app.name, &state, &rendered);
        let prepared = Box::pin(self.prepare(&state, rendered)).await?;
        self.managed = prepared
            .plan
            .actions
            .iter()
            .map(|a| a.object().key())
            .collect();
        let triage = planning::triage_drifts(&prepared.plan, &self.memory.drifts);
        self.memory.drifts = triage.uncorrected.clone();
        let new_revision = planning::is_new_revision(&state, &revision);
        if !planning::sync_needed(&prepared.plan, new_revision) {
            return Box::pin(self.in_sync(report, &prepared, &triage, render, started)).await;
        }
        report.refused = planning::refusals(&prepared.plan);
        report.outside_boundary = planning::outside_boundary(&prepared.plan);
        let executed =
            Box::pin(self.execute_and_record(&prepared, &triage, render, options)).await?;
        report.appended += executed.appended;
        report.failed_attempts = self.memory.failed_attempts;
        let outcomes = &executed.changes.outcomes;
        let counts = events::counts(outcomes, prepared.plan.rejected.len());
        let outcome = events::sync_outcome(&counts);
        if executed.unrecorded_retry {
            report.unrecorded_retry = true;
            return Ok(report.ended(PassStatus::Synced { outcome, counts }, started));
        }
        drop(pass_permit);
        let applied_any = outcomes.iter().any(|o| execute::wrote(&o.outcome));
        let failed = health::failed_and_absent(outcomes, &prepared.observed);
        let owned = health::owned_after(&prepared.inventory, outcomes);
        let resolve = |o: &crate::plan::ObjectRef| {
            apply::resolve_namespace(
                o,
                self.catalog.scope(&o.group_kind()),
                &self.app.target.namespace,
            )
        };
        let desired = health::worth_waiting_for(&prepared.rendered.desired, &failed, &resolve);
        // What a health wait needs is above: the rendered set, the plan, the inventory and the
        // outcomes are let go here, not held for the minutes Pods may take to become ready.
        let planning::Prepared {
            observed,
            rendered,
            plan,
            inventory,
        } = prepared;
        drop((rendered, plan, inventory, executed));
        let (health, n) =
            Box::pin(self.sync_health(applied_any, &desired, &owned, observed)).await?;
        report.appended += n;
        report.health = health;
        report.appended += self
            .record_sync_finished(&revision, outcome, &counts, started)
            .await?;
        tracing::info!(app = %self.app.name, %revision, ?outcome, ?counts, "synced");
        Ok(report.ended(PassStatus::Synced { outcome, counts }, started))
    }

    /// Fetches the source when asked, recording what it observed (a failure once).
    async fn fetch(&mut self, options: &PassOptions) -> Result<FetchStep, ReconcileError> {
        if !options.fetch {
            return Ok(FetchStep::default());
        }
        let o = fetch::fetch_quietly(
            &self.store,
            &self.app.name,
            &self.source,
            self.memory.fetch_failure.as_deref(),
            Some(&self.limits.fetches),
            options.fetch_requested.unwrap_or_else(Instant::now),
        )
        .await
        .map_err(|source| ReconcileError::Fetch {
            app: self.app.name.clone(),
            source: Box::new(source),
        })?;
        self.memory.fetch_failure = o.failure.clone();
        Ok(FetchStep {
            state: Some(o.state),
            appended: o.appended,
            failure: o.failure,
        })
    }

    /// A pass with nothing to write: the render and new drifts (detect mode) recorded, and
    /// health.
    async fn in_sync(
        &mut self,
        mut report: PassReport,
        prepared: &planning::Prepared,
        triage: &planning::DriftTriage,
        render: (Vec<Vec<u8>>, Vec<Draft>),
        started: Instant,
    ) -> Result<PassReport, ReconcileError> {
        self.memory.failure = None;
        self.memory.failed_attempts = 0;
        let (blobs, mut drafts) = render;
        for (object, drift, _) in &triage.new {
            drafts.push(events::drift_detected(&self.app.name, object, drift));
        }
        report.appended += self.append(blobs, drafts).await?;
        let desired: Vec<crate::plan::ObjectRef> = prepared
            .rendered
            .desired
            .iter()
            .map(|d| d.object.clone())
            .collect();
        let (health, n) = self.record_health(&desired, &prepared.observed).await?;
        report.appended += n;
        report.health = health;
        Ok(report.ended(PassStatus::InSync, started))
    }

    async fn record_sync_finished(
        &self,
        revision: &str,
        outcome: SyncOutcome,
        counts: &event::SyncCounts,
        started: Instant,
    ) -> Result<usize, ReconcileError> {
        let finished = Event::SyncFinished(event::SyncFinished {
            revision: revision.to_string(),
            outcome,
            counts: counts.clone(),
            duration_ms: started.elapsed().as_millis() as u64,
        });
        self.append(vec![], vec![Draft::new(Some(&self.app.name), finished)])
            .await
    }

    /// Plans without applying and asks the server what would change (a server-side dry run).
    /// Records nothing but what a fetch observed.
    pub async fn diff(&mut self, fetch: bool) -> Result<DiffReport, ReconcileError> {
        let name = self.app.name.clone();
        if fetch {
            fetch::fetch(&self.store, &name, &self.source)
                .await
                .map_err(|source| ReconcileError::Fetch {
                    app: name.clone(),
                    source: Box::new(source),
                })?;
        }
        let state = self.state().await?;
        let mut report = DiffReport {
            revision: desired::target_revision(&state),
            render_error: None,
            plan: None,
            objects: Vec::new(),
        };
        let Some(revision) = report.revision.clone() else {
            return Ok(report);
        };
        let values = match self.helm_values().await {
            Ok(values) => values,
            Err(error) => {
                report.render_error = Some(error);
                return Ok(report);
            }
        };
        let rendered = match self.desired_for(&state, &revision, &values).await {
            Ok(r) => r,
            Err(error) => {
                report.render_error = Some(error);
                return Ok(report);
            }
        };
        let prepared = self.prepare(&state, rendered).await?;
        report.objects = apply::diff(&self.catalog, &prepared.plan, &self.apply).await;
        report.plan = Some(prepared.plan);
        Ok(report)
    }
}

/// A pass's summary for the App's status (an inherent impl of the `crd` type kept here, so the
/// types module does not depend on the reconciler).
impl crate::crd::PassSummary {
    pub fn of(result: &Result<PassReport, String>) -> Self {
        match result {
            Err(e) => crate::crd::PassSummary::Error(e.clone()),
            Ok(r) => match &r.status {
                PassStatus::NoRevision => crate::crd::PassSummary::NoRevision {
                    fetch_failure: r.fetch_failure.clone(),
                },
                PassStatus::Suspended => crate::crd::PassSummary::Suspended,
                PassStatus::RenderFailed { error } => {
                    crate::crd::PassSummary::RenderFailed(error.clone())
                }
                PassStatus::InSync => crate::crd::PassSummary::Done {
                    outcome: crate::event::SyncOutcome::Succeeded,
                    health: r.health,
                    fetch_failure: r.fetch_failure.clone(),
                    failed_attempts: r.failed_attempts,
                    refused: r.refused.clone(),
                    outside_boundary: r.outside_boundary.clone(),
                },
                PassStatus::Synced { outcome, .. } => crate::crd::PassSummary::Done {
                    outcome: *outcome,
                    health: r.health,
                    fetch_failure: r.fetch_failure.clone(),
                    failed_attempts: r.failed_attempts,
                    refused: r.refused.clone(),
                    outside_boundary: r.outside_boundary.clone(),
                },
            },
        }
    }
}

/// What a fetch left for the pass.
#[derive(Default)]
struct FetchStep {
    /// The App's state after the fetch's records (`None`: no fetch ran).
    state: Option<AppState>,
    appended: usize,
    /// Why the fetch failed (the pass then uses the last good head).
    failure: Option<String>,
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
