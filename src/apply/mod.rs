//! Owns executing a [`Plan`] against a cluster: server-side apply in stages, waiting for CRDs,
//! pruning, and the change set (one outcome per object) the agent turns into events; plus the
//! server-side dry run behind `reckon diff`.
//!
//! Stages, as the planner orders them: CRDs, then Namespaces, then everything else, then
//! prunes in the planner's reverse order. A stage finishes before the next starts. After the
//! CRD stage the executor waits until each applied CRD is Established and its kinds are
//! served (discovery is refreshed for their groups): a custom resource applied before that
//! fails with "no matches for kind". Within a stage, requests run concurrently, at most
//! [`ApplyOptions::concurrency`] at a time.
//!
//! Invariants:
//! - `Unchanged` actions send no request: a steady-state sync of an unchanged App writes
//!   nothing (tests count requests to prove it).
//! - A custom resource whose CRD failed to apply or to become Established, and an object in a
//!   Namespace that failed to apply, is skipped with the reason rather than sent to fail.
//! - `fieldValidation` is only sent to servers that know it (1.25+).
//! - Every error names the object (kind.group/namespace/name) and carries the API server's
//!   message.

mod discovery;
mod execute;
mod observe;
pub mod wait;

pub use discovery::{Catalog, DiscoveryError, DiscoveryMode, Resolved, ServerVersion};
pub use execute::execute;
pub use observe::{live_object, observe, observe_objects, residents, resolve_namespace};

use crate::config::ConflictPolicy;
use crate::health::{self, Status};
use crate::model::Digest;
use crate::plan::{
    Action, ApplyReason, FieldChange, GroupKind, ObjectRef, Plan, PruneSkipReason, RefuseReason,
    Stage, changed_fields,
};
use futures::stream::{self, StreamExt};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Requests in flight at once within a stage, by default.
///
/// Eight hides the per-request round trip (a serial run, like `kubectl apply`, is
/// latency-bound) while one sync stays a small share of what the API server admits at once
/// (400 read-only and 200 mutating requests by default, divided between priority levels by
/// API Priority and Fairness): beyond that, requests only queue on the server and compete
/// with controllers. Measured on the 2-core test machine (`tests/bench/apply.rs`, 4000
/// objects, same run): execute took 9.5 s serially, 7.5 s at 8 and 7.0 s at 16; there the
/// API server's CPU is the limit, so more concurrency buys little; with a remote server the
/// round trip dominates and 8 buys more.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// Errors carrying out one action, each naming the object and the operation.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{object}: the cluster does not serve {} {}", object.api_version(), object.kind)]
    Resolve { object: ObjectRef },
    #[error("{object}: server-side apply: {message}")]
    Apply {
        object: ObjectRef,
        message: String,
        #[source]
        source: kube::Error,
    },
    #[error("{object}: server-side apply (dry run): {message}")]
    DryRun {
        object: ObjectRef,
        message: String,
        #[source]
        source: kube::Error,
    },
    #[error("{object}: reading the live object: {message}")]
    Get {
        object: ObjectRef,
        message: String,
        #[source]
        source: kube::Error,
    },
    #[error("{object}: delete: {message}")]
    Delete {
        object: ObjectRef,
        message: String,
        #[source]
        source: kube::Error,
    },
    #[error("{object}: releasing it (orphan): {message}")]
    Orphan {
        object: ObjectRef,
        message: String,
        #[source]
        source: kube::Error,
    },
    #[error("{object}: not Established after {timeout:?}: {message}")]
    WaitEstablished {
        object: ObjectRef,
        timeout: Duration,
        message: String,
    },
}

/// How deleted objects' dependents are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Propagation {
    /// The object goes at once and the garbage collector removes its dependents afterwards.
    Background,
    /// The object stays (with a deletion timestamp) until its dependents are gone.
    Foreground,
}

/// How the executor applies.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The server-side apply field manager.
    pub field_manager: String,
    /// Whether conflicts with other field managers are forced or reported.
    pub conflicts: ConflictPolicy,
    /// Requests in flight at once within a stage; see [`DEFAULT_CONCURRENCY`].
    pub concurrency: usize,
    /// How long a CRD may take to become Established and served.
    pub crd_timeout: Duration,
    /// Propagation for prunes. Explicit because several kinds (batch/v1 Job, and everything
    /// in extensions/v1beta1 and apps/v1beta1) default to orphaning their dependents, which
    /// would leave a pruned Job's Pods behind.
    pub propagation: Propagation,
    /// Receives each outcome of work done (applies, prunes, failures, skips) as soon as it is
    /// known, so the agent records it at once: an agent killed mid-sync then loses at most the
    /// requests in flight. Unchanged objects are not sent.
    pub progress: Option<tokio::sync::mpsc::UnboundedSender<ObjectOutcome>>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            field_manager: crate::plan::FIELD_MANAGER.to_string(),
            conflicts: ConflictPolicy::Force,
            concurrency: DEFAULT_CONCURRENCY,
            crd_timeout: Duration::from_secs(60),
            propagation: Propagation::Background,
            progress: None,
        }
    }
}

impl ApplyOptions {
    pub fn from_app(app: &crate::config::App) -> Self {
        Self {
            conflicts: app.conflicts,
            ..Self::default()
        }
    }
}

/// One field another manager owns that an apply without force would take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldConflict {
    /// The other field manager, e.g. `kubectl-edit`.
    pub manager: String,
    /// The field, as the API server names it (`.spec.replicas`).
    pub field: String,
    /// The API server's message for this conflict.
    pub message: String,
}

/// Why an action failed, for events and for deciding whether a retry can help.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum FailureCause {
    /// Other field managers own fields the apply sets (conflict policy `report`).
    Conflict {
        conflicts: Vec<FieldConflict>,
    },
    /// The server rejected the object (422), with its per-field messages.
    Invalid {
        causes: Vec<String>,
    },
    Forbidden,
    /// The object (or its namespace) does not exist.
    NotFound,
    /// The cluster does not serve the kind.
    UnknownKind,
    /// A CRD did not become Established in time.
    NotEstablished,
    /// Any other API status.
    Api {
        code: u16,
        reason: String,
    },
    /// No API status: connection, TLS or decoding failure.
    Transport,
    /// Not sent: the object is not the App's to write (see [`RefuseReason`]).
    Refused {
        reason: RefuseReason,
    },
}

/// Why an action was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SkipReason {
    /// The planner kept an inventory object instead of pruning it.
    Prune(PruneSkipReason),
    /// The CRD defining the object's kind failed to apply or to become Established.
    CrdNotReady { crd: String },
    /// The object's Namespace failed to apply.
    NamespaceNotApplied { namespace: String },
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Outcome {
    Created,
    /// Applied to an object that existed outside the inventory: it is the App's from now on.
    Adopted {
        changed: Vec<FieldChange>,
    },
    /// Applied to an existing object; the fields the plan said would change.
    Configured {
        changed: Vec<FieldChange>,
    },
    /// Nothing to do; no request was sent.
    Unchanged,
    Failed {
        error: String,
        cause: FailureCause,
    },
    Pruned,
    PruneFailed {
        error: String,
        cause: FailureCause,
    },
    Skipped {
        reason: SkipReason,
    },
    /// An adopted object left in the cluster without the App's label, out of the inventory.
    Orphaned,
}

/// The outcome for one object, with what an `ObjectApplied` / `ApplyFailed` / `ObjectPruned`
/// event needs besides it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectOutcome {
    pub object: ObjectRef,
    pub outcome: Outcome,
    /// The digest applied (or left unchanged); `None` for prunes.
    #[serde(serialize_with = "crate::model::digest::prefixed::serialize_option")]
    pub digest: Option<Digest>,
    /// Why the plan applied it; `None` for unchanged objects and prunes.
    pub reason: Option<ApplyReason>,
    /// The live object's resourceVersion after a successful apply.
    pub resource_version: Option<String>,
    /// The live object's uid after a successful apply (tells a re-created object apart).
    pub uid: Option<String>,
}

impl ObjectOutcome {
    pub fn is_failure(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Failed { .. } | Outcome::PruneFailed { .. }
        )
    }
}

/// Everything one execution did, in plan order (`Drift` actions are records, not work: the
/// agent takes them from the plan).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeSet {
    pub outcomes: Vec<ObjectOutcome>,
    pub duration: Duration,
}

impl ChangeSet {
    pub fn failures(&self) -> impl Iterator<Item = &ObjectOutcome> {
        self.outcomes.iter().filter(|o| o.is_failure())
    }

    /// Outcomes by variant name (`Created`, `Configured`, ...), for SyncFinished counts.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for o in &self.outcomes {
            let name = match o.outcome {
                Outcome::Created => "Created",
                Outcome::Adopted { .. } => "Adopted",
                Outcome::Configured { .. } => "Configured",
                Outcome::Unchanged => "Unchanged",
                Outcome::Failed { .. } => "Failed",
                Outcome::Pruned => "Pruned",
                Outcome::PruneFailed { .. } => "PruneFailed",
                Outcome::Skipped { .. } => "Skipped",
                Outcome::Orphaned => "Orphaned",
            };
            *counts.entry(name).or_insert(0) += 1;
        }
        counts
    }
}

/// The API server's message and the cause of a failed request.
fn classify(error: &kube::Error) -> (String, FailureCause) {
    let kube::Error::Api(status) = error else {
        return (error.to_string(), FailureCause::Transport);
    };
    let causes = status
        .details
        .as_ref()
        .map(|d| d.causes.as_slice())
        .unwrap_or_default();
    let cause = match status.code {
        409 if causes.iter().any(|c| c.reason == "FieldManagerConflict") => {
            FailureCause::Conflict {
                conflicts: causes
                    .iter()
                    .filter(|c| c.reason == "FieldManagerConflict")
                    .map(|c| FieldConflict {
                        manager: conflicting_manager(&c.message),
                        field: c.field.clone(),
                        message: c.message.clone(),
                    })
                    .collect(),
            }
        }
        // Server-side apply refuses a field the schema does not declare while it builds the
        // typed patch, before validation, with a 500 that says which field: the manifest is
        // wrong and sending it again cannot help, so it is invalid, not a server error.
        500 if typed_patch_cause(&status.message).is_some() => FailureCause::Invalid {
            causes: typed_patch_cause(&status.message).into_iter().collect(),
        },
        // `fieldValidation=Strict` refuses unknown and duplicate fields in a decoded body
        // (custom resources, and everything on the way in) with a 400 that lists them.
        400 if status.message.contains(STRICT_DECODING) => FailureCause::Invalid {
            causes: strict_decoding_causes(&status.message),
        },
        422 => FailureCause::Invalid {
            causes: causes
                .iter()
                .map(|c| {
                    if c.field.is_empty() {
                        c.message.clone()
                    } else {
                        format!("{}: {}", c.field, c.message)
                    }
                })
                .collect(),
        },
        403 => FailureCause::Forbidden,
        404 => FailureCause::NotFound,
        code => FailureCause::Api {
            code,
            reason: status.reason.clone(),
        },
    };
    let message = if status.message.is_empty() {
        format!("{} ({})", status.reason, status.code)
    } else {
        status.message.clone()
    };
    (message, cause)
}

/// What a strict field validation failure starts its list of findings with.
const STRICT_DECODING: &str = "strict decoding error: ";

/// The field and reason in `failed to create typed patch object (/w; t.example/v1,
/// Kind=Widget): .spec.colour: field not declared in schema` (v1.37), or without the
/// parenthesised object (v1.20).
fn typed_patch_cause(message: &str) -> Option<String> {
    let rest = message.strip_prefix("failed to create typed patch object")?;
    let cause = match rest.strip_prefix(": ") {
        Some(cause) => cause,
        None => rest.split_once("): ")?.1,
    };
    Some(cause.trim().to_string())
}

/// Each finding of `strict decoding error: unknown field "spec.colour", duplicate field "x"`.
fn strict_decoding_causes(message: &str) -> Vec<String> {
    let Some((_, list)) = message.split_once(STRICT_DECODING) else {
        return vec![message.to_string()];
    };
    list.split(", ")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The manager in a conflict message: `conflict with "kubectl-edit" using apps/v1: .spec.replicas`
/// (newer servers add ` at <time>`).
fn conflicting_manager(message: &str) -> String {
    message
        .split('"')
        .nth(1)
        .map(str::to_string)
        .unwrap_or_default()
}

/// Attempts of a request that failed before the server answered.
const TRANSPORT_ATTEMPTS: u32 = 3;

/// Retries a request that failed without an API status (the connection broke, or could not
/// be made). Only for idempotent requests: a server-side apply of the same manifest and a
/// delete can be repeated safely. A pooled connection can break between two requests (an API
/// server restarting behind a load balancer, an idle connection closed by a proxy); one sync
/// should not fail an object for that.
async fn retry_transport<T, F, Fut>(mut request: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 1;
    loop {
        match request().await {
            Err(error @ (kube::Error::Service(_) | kube::Error::HyperError(_)))
                if attempt < TRANSPORT_ATTEMPTS =>
            {
                tracing::debug!(%error, attempt, "request failed before an answer; retrying");
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn apply_params(options: &ApplyOptions, catalog: &Catalog, dry_run: bool) -> PatchParams {
    let mut params = PatchParams::apply(&options.field_manager);
    params.force = options.conflicts == ConflictPolicy::Force;
    params.dry_run = dry_run;
    if catalog.server().supports_field_validation() {
        params = params.validation_strict();
    }
    params
}

/// Server-side applies one manifest; the live object on success.
async fn apply_manifest(
    catalog: &Catalog,
    object: &ObjectRef,
    manifest: &Value,
    options: &ApplyOptions,
    dry_run: bool,
) -> Result<DynamicObject, (ApplyError, FailureCause)> {
    let resolved = catalog.resolve(object).ok_or_else(|| {
        (
            ApplyError::Resolve {
                object: object.clone(),
            },
            FailureCause::UnknownKind,
        )
    })?;
    let api = catalog.api(&resolved, object.namespace.as_deref());
    let params = apply_params(options, catalog, dry_run);
    let patch = Patch::Apply(manifest);
    retry_transport(|| api.patch(&object.name, &params, &patch))
        .await
        .map_err(|source| {
            let (message, cause) = classify(&source);
            let error = if dry_run {
                ApplyError::DryRun {
                    object: object.clone(),
                    message,
                    source,
                }
            } else {
                ApplyError::Apply {
                    object: object.clone(),
                    message,
                    source,
                }
            };
            (error, cause)
        })
}

async fn execute_apply(
    catalog: &Catalog,
    action: &Action,
    options: &ApplyOptions,
) -> ObjectOutcome {
    let (object, manifest, digest, reason, changed) = match action {
        Action::Create {
            object,
            manifest,
            digest,
            reason,
        } => (object, manifest, digest, reason, None),
        Action::Configure {
            object,
            manifest,
            digest,
            changed,
            reason,
        } => (object, manifest, digest, reason, Some(changed)),
        other => unreachable!("not an apply: {other:?}"),
    };
    let result = apply_manifest(catalog, object, manifest.as_value(), options, false).await;
    let (outcome, resource_version, uid) = match result {
        Ok(live) => {
            let outcome = match (changed, reason) {
                (None, _) => Outcome::Created,
                (Some(changed), ApplyReason::Adopt { .. }) => Outcome::Adopted {
                    changed: changed.clone(),
                },
                (Some(changed), _) => Outcome::Configured {
                    changed: changed.clone(),
                },
            };
            (outcome, live.metadata.resource_version, live.metadata.uid)
        }
        Err((error, cause)) => (
            Outcome::Failed {
                error: error.to_string(),
                cause,
            },
            None,
            None,
        ),
    };
    ObjectOutcome {
        object: object.clone(),
        outcome,
        digest: Some(*digest),
        reason: Some(reason.clone()),
        resource_version,
        uid,
    }
}

async fn execute_prune(
    catalog: &Catalog,
    object: &ObjectRef,
    options: &ApplyOptions,
) -> ObjectOutcome {
    let result = delete(catalog, object, options, false).await;
    removal_outcome(object, result, Outcome::Pruned)
}

/// Releases an adopted object that left Git: takes the App's labels off (a JSON merge patch,
/// so nothing else the App applied is removed with them, as an apply without its fields would
/// do) and leaves the object where it is. An object already gone is released too.
async fn execute_orphan(
    catalog: &Catalog,
    object: &ObjectRef,
    options: &ApplyOptions,
) -> ObjectOutcome {
    let result = release(catalog, object, options).await;
    removal_outcome(object, result, Outcome::Orphaned)
}

/// The outcome of taking an object out of the App (pruned or orphaned): `done` on success, a
/// `PruneFailed` with the cause otherwise; nothing was applied, so no digest or reason.
fn removal_outcome(
    object: &ObjectRef,
    result: Result<(), (ApplyError, FailureCause)>,
    done: Outcome,
) -> ObjectOutcome {
    let outcome = match result {
        Ok(()) => done,
        Err((error, cause)) => Outcome::PruneFailed {
            error: error.to_string(),
            cause,
        },
    };
    ObjectOutcome {
        object: object.clone(),
        outcome,
        digest: None,
        reason: None,
        resource_version: None,
        uid: None,
    }
}

async fn release(
    catalog: &Catalog,
    object: &ObjectRef,
    options: &ApplyOptions,
) -> Result<(), (ApplyError, FailureCause)> {
    let resolved = catalog
        .resolve(object)
        .or_else(|| catalog.resolve_kind(&object.group_kind()))
        .ok_or_else(|| {
            (
                ApplyError::Resolve {
                    object: object.clone(),
                },
                FailureCause::UnknownKind,
            )
        })?;
    let api = catalog.api(&resolved, object.namespace.as_deref());
    let patch = serde_json::json!({"metadata": {"labels": {
        crate::render::normalize::APP_LABEL: null,
        crate::render::normalize::MANAGED_BY_LABEL: null,
    }}});
    let params = PatchParams {
        field_manager: Some(options.field_manager.clone()),
        ..PatchParams::default()
    };
    let patch = Patch::Merge(&patch);
    match retry_transport(|| api.patch(&object.name, &params, &patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => {
            let (message, cause) = classify(&source);
            Err((
                ApplyError::Orphan {
                    object: object.clone(),
                    message,
                    source,
                },
                cause,
            ))
        }
    }
}

/// Deletes one object; an object already gone counts as deleted (someone else pruned it, or a
/// previous sync's delete completed after it was recorded as failed).
async fn delete(
    catalog: &Catalog,
    object: &ObjectRef,
    options: &ApplyOptions,
    dry_run: bool,
) -> Result<(), (ApplyError, FailureCause)> {
    // The inventory may name a version the server no longer serves (apps/v1beta1 after an
    // upgrade); any served version addresses the same object.
    let resolved = catalog
        .resolve(object)
        .or_else(|| catalog.resolve_kind(&object.group_kind()))
        .ok_or_else(|| {
            (
                ApplyError::Resolve {
                    object: object.clone(),
                },
                FailureCause::UnknownKind,
            )
        })?;
    let api = catalog.api(&resolved, object.namespace.as_deref());
    let mut params = match options.propagation {
        Propagation::Background => DeleteParams::background(),
        Propagation::Foreground => DeleteParams::foreground(),
    };
    params.dry_run = dry_run;
    match retry_transport(|| api.delete(&object.name, &params)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => {
            let (message, cause) = classify(&source);
            Err((
                ApplyError::Delete {
                    object: object.clone(),
                    message,
                    source,
                },
                cause,
            ))
        }
    }
}

fn is_crd(object: &ObjectRef) -> bool {
    object.group == "apiextensions.k8s.io" && object.kind == "CustomResourceDefinition"
}

/// The kind a CRD manifest defines.
fn crd_kind(manifest: &Value) -> Option<GroupKind> {
    let spec = manifest.get("spec")?;
    let group = spec.get("group")?.as_str()?;
    let kind = spec.pointer("/names/kind")?.as_str()?;
    Some(GroupKind::new(group, kind))
}

fn manifest_of(action: &Action) -> Option<&Value> {
    match action {
        Action::Create { manifest, .. } | Action::Configure { manifest, .. } => {
            Some(manifest.as_value())
        }
        _ => None,
    }
}

/// Polls a CRD until it is Established (or its names are rejected, or time runs out).
async fn wait_established(
    catalog: &Catalog,
    object: &ObjectRef,
    timeout: Duration,
) -> Result<(), ApplyError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(50);
    let Some(resolved) = catalog.resolve(object) else {
        return Err(ApplyError::Resolve {
            object: object.clone(),
        });
    };
    let api = catalog.api(&resolved, None);
    loop {
        let message = match retry_transport(|| api.get(&object.name)).await {
            Ok(live) => {
                let value = serde_json::to_value(&live).unwrap_or(Value::Null);
                let health = health::assess(&value);
                match health.status {
                    Status::Current => return Ok(()),
                    Status::Failed => {
                        return Err(ApplyError::WaitEstablished {
                            object: object.clone(),
                            timeout: started.elapsed(),
                            message: health.message,
                        });
                    }
                    _ => health.message,
                }
            }
            Err(e) => classify(&e).0,
        };
        if started.elapsed() >= timeout {
            return Err(ApplyError::WaitEstablished {
                object: object.clone(),
                timeout,
                message,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// Runs the apply actions at `indices` concurrently.
async fn apply_all(
    catalog: &Catalog,
    plan: &Plan,
    indices: Vec<usize>,
    options: &ApplyOptions,
) -> Vec<(usize, ObjectOutcome)> {
    stream::iter(indices)
        .map(|i| async move { (i, execute_apply(catalog, &plan.actions[i], options).await) })
        .buffer_unordered(options.concurrency.max(1))
        .inspect(|(_, outcome)| report(options, outcome))
        .collect()
        .await
}

/// Sends an outcome to the progress receiver, if any (a receiver that went away is ignored:
/// progress is advisory, the change set is the result).
fn report(options: &ApplyOptions, outcome: &ObjectOutcome) {
    if let Some(progress) = &options.progress {
        let _ = progress.send(outcome.clone());
    }
}

fn skipped(action: &Action, reason: SkipReason) -> ObjectOutcome {
    let (digest, apply_reason) = match action {
        Action::Create { digest, reason, .. } | Action::Configure { digest, reason, .. } => {
            (Some(*digest), Some(reason.clone()))
        }
        _ => (None, None),
    };
    ObjectOutcome {
        object: action.object().clone(),
        outcome: Outcome::Skipped { reason },
        digest,
        reason: apply_reason,
        resource_version: None,
        uid: None,
    }
}

fn is_apply(action: &Action) -> bool {
    matches!(action, Action::Create { .. } | Action::Configure { .. })
}

fn object_stage(object: &ObjectRef) -> Stage {
    if is_crd(object) {
        Stage::Crds
    } else if object.group.is_empty() && object.kind == "Namespace" {
        Stage::Namespaces
    } else {
        Stage::Resources
    }
}

/// What a sync would do to one object, as the server sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum DiffOutcome {
    /// Would be created. `validated` is false when the server could not check it because
    /// its kind comes from a CRD in the same plan that is not installed yet; the fields are
    /// then the manifest's own.
    Create {
        fields: Vec<FieldChange>,
        validated: bool,
    },
    /// Would change these fields of the live object (after server defaulting and admission).
    Configure {
        fields: Vec<FieldChange>,
    },
    /// The plan sends nothing, or the server-side dry run changes nothing.
    Unchanged,
    /// Would be deleted (the server accepted a dry-run delete).
    Delete,
    /// An adopted object that left Git: would be released (its App label taken off), not
    /// deleted.
    Orphan,
    /// Would fail: the dry run's error (for example a conflict under the `report` policy).
    Failed {
        error: String,
        cause: FailureCause,
    },
    Skipped {
        reason: SkipReason,
    },
}

/// One object's entry in a diff.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectDiff {
    pub object: ObjectRef,
    pub outcome: DiffOutcome,
}

/// Metadata the server changes on every write; not what a user means by a change.
const VOLATILE_METADATA: [&str; 6] = [
    "managedFields",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "uid",
    "selfLink",
];

fn comparable(object: &DynamicObject) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Some(Value::Object(metadata)) = value.get_mut("metadata") {
        for key in VOLATILE_METADATA {
            metadata.remove(key);
        }
    }
    if let Value::Object(map) = &mut value {
        map.remove("status");
    }
    value
}

/// Secret values are named, never shown, in a diff either.
fn redact(object: &ObjectRef, mut fields: Vec<FieldChange>) -> Vec<FieldChange> {
    if object.group.is_empty() && object.kind == "Secret" {
        for field in &mut fields {
            field.before = None;
            field.after = None;
        }
    }
    fields
}

async fn diff_apply(
    catalog: &Catalog,
    action: &Action,
    options: &ApplyOptions,
    planned_crds: &BTreeSet<GroupKind>,
) -> DiffOutcome {
    let object = action.object();
    let Some(manifest) = manifest_of(action) else {
        return DiffOutcome::Unchanged;
    };
    let Some(resolved) = catalog.resolve(object) else {
        if planned_crds.contains(&object.group_kind()) {
            return DiffOutcome::Create {
                fields: redact(
                    object,
                    changed_fields(&Value::Object(Default::default()), manifest),
                ),
                validated: false,
            };
        }
        let error = ApplyError::Resolve {
            object: object.clone(),
        };
        return DiffOutcome::Failed {
            error: error.to_string(),
            cause: FailureCause::UnknownKind,
        };
    };
    let api = catalog.api(&resolved, object.namespace.as_deref());
    let live = match retry_transport(|| api.get_opt(&object.name)).await {
        Ok(live) => live,
        Err(source) => {
            let (message, cause) = classify(&source);
            let error = ApplyError::Get {
                object: object.clone(),
                message,
                source,
            };
            return DiffOutcome::Failed {
                error: error.to_string(),
                cause,
            };
        }
    };
    let after = match apply_manifest(catalog, object, manifest, options, true).await {
        Ok(after) => after,
        Err((error, cause)) => {
            return DiffOutcome::Failed {
                error: error.to_string(),
                cause,
            };
        }
    };
    let after = comparable(&after);
    match live {
        None => DiffOutcome::Create {
            fields: redact(
                object,
                changed_fields(&Value::Object(Default::default()), &after),
            ),
            validated: true,
        },
        Some(live) => {
            let fields = redact(object, changed_fields(&comparable(&live), &after));
            if fields.is_empty() {
                DiffOutcome::Unchanged
            } else {
                DiffOutcome::Configure { fields }
            }
        }
    }
}

/// A server-side dry run of a plan, for `reckon diff`: every apply is sent with `dryRun=All`
/// and compared with the live object, every prune is a dry-run delete; nothing is written.
/// Unchanged objects are not sent. Requests run concurrently as in [`execute`].
pub async fn diff(catalog: &Catalog, plan: &Plan, options: &ApplyOptions) -> Vec<ObjectDiff> {
    let planned_crds: BTreeSet<GroupKind> = plan
        .actions
        .iter()
        .filter(|a| is_crd(a.object()))
        .filter_map(manifest_of)
        .filter_map(crd_kind)
        .collect();
    let planned_crds = &planned_crds;
    let work: Vec<usize> = (0..plan.actions.len())
        .filter(|&i| !matches!(plan.actions[i], Action::Drift { .. }))
        .collect();
    let mut diffs: Vec<(usize, ObjectDiff)> = stream::iter(work)
        .map(|i| async move {
            let action = &plan.actions[i];
            let outcome = match action {
                Action::Create { .. } | Action::Configure { .. } => {
                    diff_apply(catalog, action, options, planned_crds).await
                }
                Action::Unchanged { .. } => DiffOutcome::Unchanged,
                Action::Prune { object } => match delete(catalog, object, options, true).await {
                    Ok(()) => DiffOutcome::Delete,
                    Err((error, cause)) => DiffOutcome::Failed {
                        error: error.to_string(),
                        cause,
                    },
                },
                Action::PruneSkipped { reason, .. } => DiffOutcome::Skipped {
                    reason: SkipReason::Prune(reason.clone()),
                },
                Action::Refuse { object, reason, .. } => DiffOutcome::Failed {
                    error: reason.describe(object),
                    cause: FailureCause::Refused {
                        reason: reason.clone(),
                    },
                },
                // Released, not deleted: nothing the server would change but two labels.
                Action::Orphan { .. } => DiffOutcome::Orphan,
                Action::Drift { .. } => unreachable!("filtered out above"),
            };
            (
                i,
                ObjectDiff {
                    object: action.object().clone(),
                    outcome,
                },
            )
        })
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    diffs.sort_by_key(|(i, _)| *i);
    diffs.into_iter().map(|(_, d)| d).collect()
}

#[cfg(test)]
mod tests;
