//! Owns the read-side queries users come for (history, revisions, blame, show, diff, status,
//! replay): pure reads over the event log, its indexes, blobs and projections, returning typed,
//! serialisable results that the CLI renders and the HTTP API sends as JSON.
//!
//! Nothing here writes. Every query takes any [`EventRead`] (a [`crate::store::StoreReader`] in
//! the agent, the opened store in the CLI) plus the [`Projections`] where it needs them, so the
//! same function answers a local `reckon history` and `GET /api/v1/events`.

mod blame;
mod replay;
mod revisions;
mod show;
mod status;
mod values_blame;

pub use blame::{
    Blame, BlameCommit, BlameField, ChartRevision, FieldDrift, FieldManagerRef, blame, blame_walk,
    object_events,
};
pub use replay::{ReplayedApp, ReplayedObject, replay};
pub use revisions::{RevisionRow, RevisionsPage, revisions, revisions_page};
pub use show::{ChangedObject, FieldChangeRow, RevisionDiff, Shown, diff_revisions, show};
pub use status::{AppStatus, IntentView, LastSync, status};
pub use values_blame::{LayerChange, LayerChangeKind, ValuesChange};

use crate::event::{Envelope, Event, EventKind, ObjectRef};
use crate::store::{EventRead, Order, Projections, Query, RevisionView, Selector, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("App {0:?} is not in the store (no event was ever recorded for it)")]
    UnknownApp(String),
    #[error(
        "revision {rev:?}{}: no recorded revision starts with it",
        app_suffix(app)
    )]
    UnknownRevision { app: Option<String>, rev: String },
    #[error(
        "revision {rev:?}{} is ambiguous: it matches {}; give more characters",
        app_suffix(app),
        candidates.join(", ")
    )]
    AmbiguousRevision {
        app: Option<String>,
        rev: String,
        candidates: Vec<String>,
    },
    #[error("revision {rev} of App {app} was observed but never rendered: no manifests recorded")]
    NotRendered { app: String, rev: String },
    #[error("object {object:?}: {reason}")]
    BadObject { object: String, reason: String },
    #[error("object {object} is not managed by {}", app.as_deref().map(|a| format!("App {a}")).unwrap_or_else(|| "any App".into()))]
    NotManaged { object: String, app: Option<String> },
    #[error("object {object} is managed by several Apps ({}); name the App", apps.join(", "))]
    ManagedBySeveral { object: String, apps: Vec<String> },
    #[error("kind category {0:?} is not one of commit, drift, apply, prune, rollback, error")]
    BadCategory(String),
    #[error("the store names blob {digest} ({what}) but {problem}")]
    Blob {
        digest: String,
        what: String,
        problem: String,
    },
    #[error("App {app} had no events at or before {at}")]
    NothingAt { app: String, at: DateTime<Utc> },
    #[error(
        "field {0:?}: a field path is a JSON pointer (/spec/replicas) or dotted (spec.replicas)"
    )]
    BadField(String),
}

fn app_suffix(app: &Option<String>) -> String {
    app.as_deref()
        .map(|a| format!(" of App {a}"))
        .unwrap_or_default()
}

/// The coarse kinds `history --kind` filters on. Each event kind belongs to at most one
/// category; kinds in none (agent starts, health, suspension, store housekeeping) only show
/// without a category filter. The mapping is documented in docs/cli.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// What the source did: CommitObserved, HistoryRewritten, and a chart repository's
    /// ChartObserved.
    Commit,
    /// Drift found, attributed, put back or overtaken by a new revision: DriftDetected,
    /// DriftAttributed, DriftCorrected, DriftSuperseded.
    Drift,
    /// What reckon applied: RenderSucceeded, SyncStarted, SyncFinished, ObjectApplied.
    Apply,
    /// ObjectPruned, PruneSkipped, ObjectOrphaned.
    Prune,
    /// Intents (rollback, pin, resume, follow): IntentRecorded.
    Rollback,
    /// Failures: ApplyFailed, ApplyBlocked, RenderFailed, SourceFetchFailed, RevisionBlocked,
    /// StoreGap.
    Error,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::Commit,
        Category::Drift,
        Category::Apply,
        Category::Prune,
        Category::Rollback,
        Category::Error,
    ];

    pub fn of(kind: EventKind) -> Option<Category> {
        use EventKind as K;
        Some(match kind {
            K::CommitObserved | K::HistoryRewritten | K::ChartObserved => Category::Commit,
            K::DriftDetected | K::DriftCorrected | K::DriftAttributed | K::DriftSuperseded => {
                Category::Drift
            }
            K::RenderSucceeded | K::SyncStarted | K::SyncFinished | K::ObjectApplied => {
                Category::Apply
            }
            K::ObjectPruned | K::PruneSkipped | K::ObjectOrphaned => Category::Prune,
            K::IntentRecorded => Category::Rollback,
            K::ApplyFailed
            | K::ApplyBlocked
            | K::RenderFailed
            | K::SourceFetchFailed
            | K::RevisionBlocked
            | K::StoreGap => Category::Error,
            K::AgentStarted
            | K::HealthChanged
            | K::AppSuspended
            | K::AppResumed
            | K::StoreMigrated
            | K::RetentionCompacted
            | K::SourceCacheRecovered
            | K::AppRenamed
            | K::AppReset => return None,
        })
    }

    /// The event kinds in this category.
    pub fn kinds(self) -> Vec<EventKind> {
        EventKind::ALL
            .into_iter()
            .filter(|k| Category::of(*k) == Some(self))
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Category::Commit => "commit",
            Category::Drift => "drift",
            Category::Apply => "apply",
            Category::Prune => "prune",
            Category::Rollback => "rollback",
            Category::Error => "error",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Category {
    type Err = QueryError;
    fn from_str(s: &str) -> Result<Category, QueryError> {
        Category::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| QueryError::BadCategory(s.to_string()))
    }
}

/// An object as users name it: `KIND/NAMESPACE/NAME`, or `KIND/NAME` for cluster-scoped
/// objects. `KIND` may carry its API group like kubectl does (`Deployment.apps`,
/// `Ingress.networking.k8s.io`); without one the group is looked up (see [`ObjectSpec::resolve`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectSpec {
    pub group: Option<String>,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl FromStr for ObjectSpec {
    type Err = QueryError;
    fn from_str(s: &str) -> Result<ObjectSpec, QueryError> {
        let bad = |reason: &str| QueryError::BadObject {
            object: s.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = s.split('/').collect();
        let (kind, namespace, name) = match parts.as_slice() {
            [k, n] => (*k, None, *n),
            [k, ns, n] => (*k, Some(*ns), *n),
            _ => {
                return Err(bad(
                    "expected KIND/NAMESPACE/NAME, or KIND/NAME for a cluster-scoped object",
                ));
            }
        };
        if kind.is_empty() || name.is_empty() || namespace == Some("") {
            return Err(bad("KIND, NAMESPACE and NAME must not be empty"));
        }
        let (kind, group) = match kind.split_once('.') {
            Some((k, g)) => (k, Some(g.to_string())),
            None => (kind, None),
        };
        Ok(ObjectSpec {
            group,
            kind: kind.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        })
    }
}

impl fmt::Display for ObjectSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kind)?;
        if let Some(g) = self.group.as_deref().filter(|g| !g.is_empty()) {
            write!(f, ".{g}")?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, "/{ns}")?;
        }
        write!(f, "/{}", self.name)
    }
}

/// API groups of the built-in kinds, for objects named without a group that no App manages any
/// more (pruned objects are not in the inventory).
fn builtin_group(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ControllerRevision" => "apps",
        "Job" | "CronJob" => "batch",
        "Ingress" | "IngressClass" | "NetworkPolicy" => "networking.k8s.io",
        "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding" => {
            "rbac.authorization.k8s.io"
        }
        "HorizontalPodAutoscaler" => "autoscaling",
        "PodDisruptionBudget" => "policy",
        "CustomResourceDefinition" => "apiextensions.k8s.io",
        "StorageClass" | "VolumeAttachment" => "storage.k8s.io",
        "PriorityClass" => "scheduling.k8s.io",
        "ConfigMap"
        | "Secret"
        | "Service"
        | "ServiceAccount"
        | "Namespace"
        | "Pod"
        | "PersistentVolumeClaim"
        | "PersistentVolume"
        | "LimitRange"
        | "ResourceQuota"
        | "Endpoints" => "",
        _ => return None,
    })
}

impl ObjectSpec {
    /// The store's reference for this object. A missing group is taken from an App's inventory
    /// holding an object of that kind, namespace and name, else from the built-in kinds, else
    /// the core group.
    pub fn resolve(&self, projections: &Projections) -> ObjectRef {
        let group = match &self.group {
            Some(g) => g.clone(),
            None => projections
                .apps
                .values()
                .flat_map(|a| a.inventory.values())
                .find(|e| {
                    e.object.kind == self.kind
                        && e.object.namespace == self.namespace
                        && e.object.name == self.name
                })
                .map(|e| e.object.group.clone())
                .or_else(|| builtin_group(&self.kind).map(str::to_string))
                .unwrap_or_default(),
        };
        ObjectRef::with_uid(
            crate::model::ObjectRef {
                group,
                version: String::new(),
                kind: self.kind.clone(),
                namespace: self.namespace.clone(),
                name: self.name.clone(),
            },
            None,
        )
    }
}

/// How an object is named in output, as `reckon diff` does and [`ObjectSpec`] reads back:
/// `KIND[.GROUP]/NAMESPACE/NAME` (no group for the core group, no namespace when
/// cluster-scoped), e.g. `Deployment.apps/shop/web`, `ConfigMap/shop/settings`, `Namespace/shop`.
pub fn object_name(o: &ObjectRef) -> String {
    display_name(&o.group, &o.kind, o.namespace.as_deref(), &o.name)
}

pub(crate) fn display_name(group: &str, kind: &str, namespace: Option<&str>, name: &str) -> String {
    let kind = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    match namespace {
        Some(ns) => format!("{kind}/{ns}/{name}"),
        None => format!("{kind}/{name}"),
    }
}

/// Full SHAs recorded for `rev` (a full SHA or a prefix) in one App or in all of them,
/// resident or stored (one key range of the store per App that has stored revisions).
pub fn resolve_revisions<R: EventRead + ?Sized>(
    reader: &R,
    projections: &Projections,
    app: Option<&str>,
    rev: &str,
) -> Result<Vec<String>, QueryError> {
    let rev_lc = rev.to_ascii_lowercase();
    let mut found = BTreeSet::new();
    for name in projections.apps.keys() {
        if app.is_some_and(|a| a != name) {
            continue;
        }
        if let Some(view) = RevisionView::new(reader, projections, name) {
            found.extend(view.with_prefix(&rev_lc)?);
        }
    }
    if found.is_empty() {
        return Err(QueryError::UnknownRevision {
            app: app.map(str::to_string),
            rev: rev.to_string(),
        });
    }
    Ok(found.into_iter().collect())
}

/// The one recorded revision of `app` that `rev` names (full SHA or unique prefix).
pub fn resolve_revision<R: EventRead + ?Sized>(
    reader: &R,
    projections: &Projections,
    app: &str,
    rev: &str,
) -> Result<String, QueryError> {
    if !projections.apps.contains_key(app) {
        return Err(QueryError::UnknownApp(app.to_string()));
    }
    let mut found = resolve_revisions(reader, projections, Some(app), rev)?;
    if found.len() > 1 {
        return Err(QueryError::AmbiguousRevision {
            app: Some(app.to_string()),
            rev: rev.to_string(),
            candidates: found,
        });
    }
    Ok(found.remove(0))
}

/// One event as queries return it: the envelope's facts, the event itself (its JSON is the
/// `{"Kind": {fields}}` form of docs/events.md) and a one-line summary for tables.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub app: Option<String>,
    pub actor: Option<String>,
    pub kind: String,
    pub category: Option<Category>,
    /// The object the event is about, as [`object_name`] writes it.
    pub object: Option<String>,
    /// The commit the event is about (the first it names).
    pub revision: Option<String>,
    pub summary: String,
    pub event: Event,
    /// The event's chain hash (hex).
    pub hash: String,
    /// The shard whose store holds the event: set in a fleet's merged answers only (the API's
    /// fan-out), where `seq` alone does not name an event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
}

impl EventRow {
    pub fn from_envelope(env: &Envelope) -> EventRow {
        let e = &env.body.event;
        EventRow {
            seq: env.body.seq,
            time: env.body.time,
            app: env.body.app.clone(),
            actor: env.body.actor.clone(),
            kind: e.kind().name().to_string(),
            category: Category::of(e.kind()),
            object: e.object().map(object_name),
            revision: e.revisions().first().map(|s| s.to_string()),
            summary: summary(e),
            event: e.clone(),
            hash: env.hash.to_hex(),
            shard: None,
        }
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// A chart revision in one line: `web 1.2.0 (app 2.0) from https://charts.example/stable
/// (sha256:0123abcd…)`.
pub fn chart_summary(c: &crate::event::ChartObserved) -> String {
    let app = c
        .app_version
        .as_ref()
        .map(|a| format!(" (app {a})"))
        .unwrap_or_default();
    format!(
        "chart {} {}{app} from {} ({}{})",
        c.name,
        c.version,
        c.repository,
        short_digest(&c.digest),
        if c.verified { "" } else { ", from the index" }
    )
}

fn short_digest(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    format!("sha256:{}", &hex[..hex.len().min(12)])
}

/// The first line of a commit message.
pub fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or("").trim().to_string()
}

/// A one-line description of an event for tables.
pub fn summary(e: &Event) -> String {
    match e {
        Event::AgentStarted(a) => format!("agent {} started (pid {})", a.version, a.pid),
        Event::CommitObserved(c) => format!(
            "{} {} <{}>: {}",
            short(&c.sha),
            c.author.name,
            c.author.email,
            first_line(&c.message)
        ),
        Event::IntentRecorded(i) => {
            let what = format!("{:?}", i.intent).to_lowercase();
            let mut s = match &i.revision {
                Some(r) => format!("{what} to {}", short(r)),
                None => what,
            };
            if let Some(reason) = &i.reason {
                s.push_str(&format!(": {reason}"));
            }
            s
        }
        Event::RenderSucceeded(r) => {
            format!(
                "rendered {} ({} objects)",
                short(&r.revision),
                r.object_count
            )
        }
        Event::RenderFailed(r) => format!("render of {} failed: {}", short(&r.revision), r.error),
        Event::SyncStarted(s) => format!("sync of {} started", short(&s.revision)),
        Event::SyncFinished(s) => format!(
            "sync of {} {:?}: {} created, {} configured, {} pruned, {} failed ({} ms)",
            short(&s.revision),
            s.outcome,
            s.counts.created,
            s.counts.configured,
            s.counts.pruned,
            s.counts.failed,
            s.duration_ms
        ),
        Event::ObjectApplied(a) => {
            let mut s = format!("{:?}", a.action).to_lowercase();
            if !a.changed_fields.is_empty() {
                s.push_str(&format!(" {}", a.changed_fields.join(", ")));
            }
            s
        }
        Event::ApplyFailed(a) => a.error.clone(),
        Event::DriftDetected(d) => {
            let paths: Vec<&str> = d.diffs.iter().map(|f| f.path.as_str()).collect();
            let managers: Vec<&str> = d.managers.iter().map(|m| m.manager.as_str()).collect();
            let mut s = format!("drift {}", paths.join(", "));
            if !managers.is_empty() {
                s.push_str(&format!(" by {}", managers.join(", ")));
            }
            s
        }
        Event::DriftCorrected(d) => format!("put back {}", d.fields.join(", ")),
        Event::ObjectPruned(p) => format!("pruned (not in {})", short(&p.revision)),
        Event::PruneSkipped(p) => format!("prune skipped: {}", p.reason),
        Event::ObjectOrphaned(o) => format!("orphaned: {}", o.reason),
        Event::HealthChanged(h) => {
            let mut s = format!("{:?} -> {:?}", h.from, h.to);
            if let Some(m) = &h.message {
                s.push_str(&format!(": {m}"));
            }
            s
        }
        Event::AppSuspended(_) => "suspended".into(),
        Event::AppResumed(_) => "resumed".into(),
        Event::StoreMigrated(m) => format!("store migrated {} -> {}", m.from_schema, m.to_schema),
        Event::SourceFetchFailed(f) => format!("fetch of {} failed: {}", f.url, f.reason),
        Event::HistoryRewritten(h) => format!(
            "{} force-pushed {} -> {}",
            h.ref_name,
            short(&h.old_head),
            short(&h.new_head)
        ),
        Event::StoreGap(g) => format!("events lost before seq {}: {}", g.found_seq, g.reason),
        Event::RetentionCompacted(r) => format!("{} events compacted ({})", r.removed, r.policy),
        Event::SourceCacheRecovered(s) => format!("Git cache of {} recloned: {}", s.url, s.reason),
        Event::RevisionBlocked(b) => format!("{} blocked: {}", short(&b.revision), b.reason),
        Event::DriftAttributed(a) => attribution_summary(a),
        Event::DriftSuperseded(d) => format!(
            "drift on {} overtaken by {}'s new value",
            d.fields.join(", "),
            short(&d.revision)
        ),
        Event::AppRenamed(r) => format!(
            "history and inventory of {} continue here: {}",
            r.from, r.reason
        ),
        Event::AppReset(r) => format!("started anew after event {}: {}", r.previous_seq, r.reason),
        Event::ChartObserved(c) => chart_summary(c),
        Event::ApplyBlocked(b) => format!(
            "{} objects not applied ({}): {}",
            b.objects.len(),
            b.cause,
            b.error
        ),
    }
}

/// `by alice (update deployments/scale, kubectl/v1.32.4) [audit 0f5b…]`, or `unattributed`.
fn attribution_summary(a: &crate::event::DriftAttributed) -> String {
    if a.writers.is_empty() {
        return "unattributed: no audit event matched".into();
    }
    let who: Vec<String> = a
        .writers
        .iter()
        .map(|w| {
            let what = match &w.subresource {
                Some(sub) => format!("{} {sub}", w.verb),
                None => w.verb.clone(),
            };
            let agent = w
                .user_agent
                .as_deref()
                .map(|ua| format!(", {}", ua.split_whitespace().next().unwrap_or(ua)))
                .unwrap_or_default();
            let mut s = format!("{} ({what}{agent})", w.username);
            if !w.fields.is_empty() {
                s.push_str(&format!(" {}", w.fields.join(", ")));
            }
            s
        })
        .collect();
    let mut s = format!("by {}", who.join("; "));
    if !a.unexplained.is_empty() {
        s.push_str(&format!("; unattributed {}", a.unexplained.join(", ")));
    }
    s
}

/// What `history` selects. Every field narrows; none set is the whole log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryFilter {
    #[serde(default)]
    pub app: Option<String>,
    /// `KIND/NAMESPACE/NAME` or `KIND/NAME`, see [`ObjectSpec`].
    #[serde(default)]
    pub object: Option<String>,
    /// Commit author or committer email (case-insensitive): the commits they wrote.
    #[serde(default)]
    pub author: Option<String>,
    /// A commit SHA or prefix: every event about that revision.
    #[serde(default)]
    pub revision: Option<String>,
    /// A Kubernetes username (exact): the changes the audit log attributes to them
    /// (`DriftAttributed` events naming them as a writer; see docs/audit.md).
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub category: Option<Category>,
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// Page size (at most [`MAX_LIMIT`]).
    #[serde(default = "default_limit")]
    pub limit: usize,
    /// The `next` of the previous page.
    #[serde(default)]
    pub cursor: Option<u64>,
}

fn default_limit() -> usize {
    100
}

impl Default for HistoryFilter {
    fn default() -> Self {
        HistoryFilter {
            app: None,
            object: None,
            author: None,
            revision: None,
            user: None,
            category: None,
            since: None,
            until: None,
            limit: default_limit(),
            cursor: None,
        }
    }
}

/// The largest page `history` returns.
pub const MAX_LIMIT: usize = 1000;

/// How many events one page may examine before it returns (possibly short) with a cursor: a
/// filter whose post-filter matches little cannot make one page scan the whole log. Callers
/// that want a full page follow `next`.
pub const SCAN_BUDGET: usize = 20_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub events: Vec<EventRow>,
    /// Pass as `cursor` for the next page (older events, or newer ones when following);
    /// `None`: nothing further matches.
    pub next: Option<u64>,
}

/// A filter resolved against the projections: index selectors to walk and the predicate every
/// event must pass.
#[derive(Clone, Debug)]
struct HistoryPlan {
    selectors: Vec<Selector>,
    /// Every filter that has an index, as a union of terms: the candidates are the
    /// intersection of these groups.
    groups: Vec<Vec<Selector>>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    app: Option<String>,
    object: Option<String>,
    author: Option<String>,
    revisions: Vec<String>,
    user: Option<String>,
    category: Option<Category>,
}

impl HistoryPlan {
    fn new<R: EventRead + ?Sized>(
        reader: &R,
        projections: &Projections,
        f: &HistoryFilter,
    ) -> Result<HistoryPlan, QueryError> {
        let object = match &f.object {
            Some(text) => Some(text.parse::<ObjectSpec>()?.resolve(projections)),
            None => None,
        };
        let revisions = match &f.revision {
            None => vec![],
            Some(rev) => match resolve_revisions(reader, projections, f.app.as_deref(), rev) {
                Ok(found) => found,
                // A full SHA the revision table does not hold (e.g. the old head of a
                // force-push) can still be looked up in the commit index.
                Err(QueryError::UnknownRevision { .. })
                    if rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    vec![rev.to_ascii_lowercase()]
                }
                Err(e) => return Err(e),
            },
        };
        // The most selective index first: an object's or a commit's events are few, an
        // author's commits fewer than an App's events, a category's kinds the least selective.
        let selectors = if let Some(o) = &object {
            vec![Selector::Object(o.clone())]
        } else if !revisions.is_empty() {
            revisions.iter().cloned().map(Selector::Commit).collect()
        } else if let Some(a) = &f.author {
            vec![Selector::Author(a.clone())]
        } else if f.user.is_some() {
            // No user index: attributions are one kind, and few next to the whole log.
            vec![Selector::Kind(EventKind::DriftAttributed)]
        } else if let Some(a) = &f.app {
            vec![Selector::App(a.clone())]
        } else if let Some(c) = f.category {
            c.kinds().into_iter().map(Selector::Kind).collect()
        } else {
            vec![Selector::All]
        };
        let mut groups = Vec::new();
        if let Some(o) = &object {
            groups.push(vec![Selector::Object(o.clone())]);
        }
        if !revisions.is_empty() {
            groups.push(revisions.iter().cloned().map(Selector::Commit).collect());
        }
        if let Some(a) = &f.author {
            groups.push(vec![Selector::Author(a.clone())]);
        }
        if f.user.is_some() {
            groups.push(vec![Selector::Kind(EventKind::DriftAttributed)]);
        }
        if let Some(a) = &f.app {
            groups.push(vec![Selector::App(a.clone())]);
        }
        if let Some(c) = f.category {
            groups.push(c.kinds().into_iter().map(Selector::Kind).collect());
        }
        Ok(HistoryPlan {
            selectors,
            groups,
            since: f.since,
            until: f.until,
            app: f.app.clone(),
            object: object.map(|o| o.identity()),
            author: f.author.as_ref().map(|a| a.to_lowercase()),
            revisions,
            user: f.user.clone(),
            category: f.category,
        })
    }

    fn accepts(&self, env: &Envelope) -> bool {
        let b = &env.body;
        let e = &b.event;
        self.app.as_ref().is_none_or(|a| b.app.as_ref() == Some(a))
            && self
                .object
                .as_ref()
                .is_none_or(|o| e.object().is_some_and(|x| &x.identity() == o))
            && self.author.as_ref().is_none_or(|a| {
                e.authors()
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(a.as_str()))
            })
            && self.user.as_ref().is_none_or(|u| match e {
                Event::DriftAttributed(a) => a.writers.iter().any(|w| &w.username == u),
                _ => false,
            })
            && (self.revisions.is_empty()
                || e.revisions()
                    .iter()
                    .any(|r| self.revisions.iter().any(|x| x == r)))
            && self
                .category
                .is_none_or(|c| Category::of(e.kind()) == Some(c))
            && self.since.is_none_or(|t| b.time >= t)
            && self.until.is_none_or(|t| b.time <= t)
    }
}

/// One index walk, read a chunk at a time.
struct Stream {
    query: Query,
    buffer: std::collections::VecDeque<Envelope>,
    done: bool,
}

impl Stream {
    fn peek<R: EventRead + ?Sized>(&mut self, reader: &R) -> Result<Option<u64>, QueryError> {
        if self.buffer.is_empty() && !self.done {
            let page = reader.query(&self.query)?;
            self.buffer.extend(page.events);
            match page.next {
                Some(n) => self.query.cursor = Some(n),
                None => self.done = true,
            }
        }
        Ok(self.buffer.front().map(|e| e.body.seq))
    }
}

/// The history page `filter` selects: newest first, or oldest first after the cursor when
/// `order` is [`Order::OldestFirst`] (how `--follow` asks for what was appended since).
pub fn history_ordered<R: EventRead + ?Sized>(
    reader: &R,
    projections: &Projections,
    filter: &HistoryFilter,
    order: Order,
) -> Result<HistoryPage, QueryError> {
    scan(reader, projections, filter, order).map(|(page, _)| page)
}

/// Index entries one page may read when intersecting several indexes.
pub const POSTINGS_BUDGET: usize = 2_000_000;

/// One index term's sequence numbers, read a chunk at a time.
struct SeqStream {
    query: Query,
    buffer: std::collections::VecDeque<u64>,
    done: bool,
}

impl SeqStream {
    fn peek<R: EventRead + ?Sized>(&mut self, reader: &R) -> Result<Option<u64>, QueryError> {
        if self.buffer.is_empty() && !self.done {
            let page = reader.postings(&self.query)?;
            self.buffer.extend(page.seqs);
            match page.next {
                Some(n) => self.query.cursor = Some(n),
                None => self.done = true,
            }
        }
        Ok(self.buffer.front().copied())
    }
}

/// Whether `a` comes before `b` in scan order.
fn before(order: Order, a: u64, b: u64) -> bool {
    match order {
        Order::NewestFirst => a > b,
        Order::OldestFirst => a < b,
    }
}

/// The head of the union of a group's terms, in scan order.
fn union_peek<R: EventRead + ?Sized>(
    reader: &R,
    group: &mut [SeqStream],
    order: Order,
) -> Result<Option<u64>, QueryError> {
    let mut best: Option<u64> = None;
    for s in group.iter_mut() {
        if let Some(seq) = s.peek(reader)?
            && best.is_none_or(|b| before(order, seq, b))
        {
            best = Some(seq);
        }
    }
    Ok(best)
}

fn union_pop(group: &mut [SeqStream], seq: u64) {
    for s in group.iter_mut() {
        while s.buffer.front() == Some(&seq) {
            s.buffer.pop_front();
        }
    }
}

/// The page when several filters have an index: their sequence numbers are intersected from the
/// indexes alone and only the events in all of them are read.
fn scan_intersection<R: EventRead + ?Sized>(
    reader: &R,
    plan: &HistoryPlan,
    filter: &HistoryFilter,
    order: Order,
    limit: usize,
) -> Result<(HistoryPage, Option<u64>), QueryError> {
    let mut groups: Vec<Vec<SeqStream>> = plan
        .groups
        .iter()
        .map(|terms| {
            terms
                .iter()
                .map(|t| SeqStream {
                    query: Query {
                        selector: t.clone(),
                        order,
                        limit: 4096,
                        cursor: filter.cursor,
                        since: filter.since,
                        until: filter.until,
                    },
                    buffer: Default::default(),
                    done: false,
                })
                .collect()
        })
        .collect();
    let mut events = Vec::new();
    let (mut read, mut decoded) = (0usize, 0usize);
    let mut last = None;
    loop {
        let mut heads = Vec::with_capacity(groups.len());
        for g in groups.iter_mut() {
            match union_peek(reader, g, order)? {
                Some(h) => heads.push(h),
                None => return Ok((HistoryPage { events, next: None }, last)),
            }
        }
        // The furthest head in scan order: every group has passed everything before it.
        let target = heads
            .iter()
            .copied()
            .reduce(|a, b| if before(order, a, b) { b } else { a })
            .expect("at least two groups");
        if heads.iter().all(|h| *h == target) {
            for g in groups.iter_mut() {
                union_pop(g, target);
            }
            read += groups.len();
            last = Some(target);
            decoded += 1;
            if let Some(env) = reader.get(target)?
                && plan.accepts(&env)
            {
                events.push(EventRow::from_envelope(&env));
                if events.len() == limit {
                    let page = HistoryPage {
                        events,
                        next: Some(target),
                    };
                    return Ok((page, last));
                }
            }
        } else {
            for (g, h) in groups.iter_mut().zip(&heads) {
                if *h != target {
                    union_pop(g, *h);
                    read += 1;
                }
            }
        }
        if read >= POSTINGS_BUDGET || decoded >= SCAN_BUDGET {
            // Everything before `target` in scan order is decided; `target` itself may not be
            // (when it was not popped), so the next page starts at it.
            let next = if last == Some(target) {
                Some(target)
            } else {
                match order {
                    Order::NewestFirst => target.checked_add(1),
                    Order::OldestFirst => target.checked_sub(1),
                }
            };
            return Ok((HistoryPage { events, next }, last));
        }
    }
}

/// A page of one App's events of one kind, newest first, from the intersection of the App and
/// kind indexes (status and the like look up "the App's last X" this way).
pub(crate) fn app_kind_page<R: EventRead + ?Sized>(
    reader: &R,
    app: &str,
    kind: EventKind,
    cursor: Option<u64>,
    limit: usize,
) -> Result<HistoryPage, QueryError> {
    let plan = HistoryPlan {
        selectors: vec![],
        groups: vec![
            vec![Selector::App(app.to_string())],
            vec![Selector::Kind(kind)],
        ],
        since: None,
        until: None,
        app: Some(app.to_string()),
        object: None,
        author: None,
        revisions: vec![],
        user: None,
        category: None,
    };
    let filter = HistoryFilter {
        cursor,
        limit,
        ..Default::default()
    };
    let (page, _) = scan_intersection(reader, &plan, &filter, Order::NewestFirst, limit)?;
    Ok(HistoryPage {
        events: page
            .events
            .into_iter()
            .filter(|e| e.kind == kind.name())
            .collect(),
        next: page.next,
    })
}

/// The page and the last event examined (matching or not).
fn scan<R: EventRead + ?Sized>(
    reader: &R,
    projections: &Projections,
    filter: &HistoryFilter,
    order: Order,
) -> Result<(HistoryPage, Option<u64>), QueryError> {
    let plan = HistoryPlan::new(reader, projections, filter)?;
    let limit = filter.limit.clamp(1, MAX_LIMIT);
    if plan.groups.len() >= 2 {
        return scan_intersection(reader, &plan, filter, order, limit);
    }

    // Read in chunks a little larger than the page: most filters are exact on their index.
    let chunk = (limit + 1).min(512);
    let mut streams: Vec<Stream> = plan
        .selectors
        .iter()
        .map(|s| Stream {
            query: Query {
                selector: s.clone(),
                order,
                limit: chunk,
                cursor: filter.cursor,
                since: filter.since,
                until: filter.until,
            },
            buffer: Default::default(),
            done: false,
        })
        .collect();
    let mut events = Vec::new();
    let mut scanned = 0usize;
    let mut last = None;
    loop {
        // Merge the streams in sequence order.
        let mut best: Option<(usize, u64)> = None;
        for (i, s) in streams.iter_mut().enumerate() {
            if let Some(seq) = s.peek(reader)? {
                let better = match (best, order) {
                    (None, _) => true,
                    (Some((_, b)), Order::NewestFirst) => seq > b,
                    (Some((_, b)), Order::OldestFirst) => seq < b,
                };
                if better {
                    best = Some((i, seq));
                }
            }
        }
        let Some((i, seq)) = best else {
            return Ok((HistoryPage { events, next: None }, last));
        };
        let env = streams[i].buffer.pop_front().expect("peeked");
        // Streams never disagree on order, so an event two streams hold (a HistoryRewritten
        // names two commits) is at the front of both now: drop the copies.
        for s in streams.iter_mut() {
            while s.buffer.front().is_some_and(|e| e.body.seq == seq) {
                s.buffer.pop_front();
            }
        }
        last = Some(seq);
        scanned += 1;
        if plan.accepts(&env) {
            events.push(EventRow::from_envelope(&env));
            if events.len() == limit {
                let page = HistoryPage {
                    events,
                    next: Some(seq),
                };
                return Ok((page, last));
            }
        }
        if scanned >= SCAN_BUDGET {
            let page = HistoryPage {
                events,
                next: Some(seq),
            };
            return Ok((page, last));
        }
    }
}

/// The timeline `filter` selects, newest first, one page. A page holds at most `limit` events
/// and examines at most [`SCAN_BUDGET`]; `next` continues exactly after its last examined event.
pub fn history<R: EventRead + ?Sized>(
    reader: &R,
    projections: &Projections,
    filter: &HistoryFilter,
) -> Result<HistoryPage, QueryError> {
    history_ordered(reader, projections, filter, Order::NewestFirst)
}

/// Events `filter` selects appended after `after` (a sequence number), oldest first: what
/// `history --follow` prints at each poll. `next` is the cursor for the following poll (`None`:
/// nothing newer yet; keep the previous cursor).
pub fn history_after<R: EventRead + ?Sized>(
    reader: &R,
    projections: &Projections,
    filter: &HistoryFilter,
    after: u64,
) -> Result<HistoryPage, QueryError> {
    let mut f = filter.clone();
    f.cursor = Some(after);
    let (mut page, last) = scan(reader, projections, &f, Order::OldestFirst)?;
    if page.next.is_none() {
        // Exhausted: the next poll starts after the last event examined, matching or not.
        page.next = last;
    }
    Ok(page)
}

#[cfg(test)]
mod blame_props;
#[cfg(test)]
mod tests;
