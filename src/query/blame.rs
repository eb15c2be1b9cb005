//! Owns `blame`: for each field reckon manages on an object, the commit that last set its value
//! from Git (for a Helm object, the values layer whose change set it: [`super::values_blame`]),
//! and every drift on it (who changed it, when, and whether reckon put it back or a new
//! revision's apply replaced it).
//!
//! The walk ([`blame_walk`]) is pure: it folds the object's events oldest first, with a loader
//! for the applied manifests, so it is unit-tested on synthetic sequences.

use super::values_blame::{self, ValuesChange};
use super::{ObjectSpec, QueryError, first_line, object_name};
use crate::event::{ApplyAction, Digest, Envelope, Event};
use crate::plan::covers;
use crate::store::projection::InventoryEntry;
use crate::store::{EventRead, Projections, Query, RevisionView, Selector};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Blame {
    pub app: String,
    /// named as [`super::object_name`] does.
    pub object: String,
    pub api_version: String,
    pub fields: Vec<BlameField>,
    /// Drifts on the whole object (it was deleted behind reckon's back).
    pub object_drifts: Vec<FieldDrift>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlameField {
    /// JSON pointer (RFC 6901), e.g. `/spec/replicas`.
    pub path: String,
    /// The value reckon last applied.
    pub value: Value,
    /// The apply that gave the field this value (`None` when the manifests of the applies that
    /// set it are no longer in the store).
    pub set_by: Option<BlameCommit>,
    pub drifts: Vec<FieldDrift>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlameCommit {
    pub revision: String,
    pub applied_at: DateTime<Utc>,
    pub applied_seq: u64,
    /// From the revision's CommitObserved, when it was observed.
    pub author_name: Option<String>,
    pub author_email: Option<String>,
    pub authored_at: Option<DateTime<Utc>>,
    /// The commit message's first line, or (a chart revision) the chart and version.
    pub summary: Option<String>,
    /// The chart version the revision is, from its ChartObserved: a field a chart bump set is
    /// owed to it. `None` when the field is owed to a values change alone.
    #[serde(default)]
    pub chart: Option<ChartRevision>,
    /// A Helm object: the values layers (inline values, a `values_from` ConfigMap or Secret)
    /// whose change this apply wrote, when it re-rendered the same revision with other values
    /// (then the commit's author and the chart are not given: the field is not theirs) or
    /// brought them along with a new revision (`with_revision`: owed to either or both). The
    /// apply (`applied_seq`) is the event at which the new values first show for this object.
    #[serde(default)]
    pub values: Option<ValuesChange>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldManagerRef {
    pub manager: String,
    pub operation: String,
    pub time: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDrift {
    pub seq: u64,
    pub time: DateTime<Utc>,
    /// The drifted path (may be the field, a list holding it, or `""` for the whole object).
    pub path: String,
    /// JSON of what reckon applied and of what the cluster had.
    pub expected: Option<String>,
    pub actual: Option<String>,
    /// The field managers that own the drifted path.
    pub managers: Vec<FieldManagerRef>,
    /// Whether reckon put it back (a later DriftCorrected listing the path).
    pub corrected: bool,
    pub corrected_at: Option<DateTime<Utc>>,
    pub corrected_seq: Option<u64>,
    /// The revision whose apply ended the drift by writing a new value of its own (a later
    /// DriftSuperseded listing the path): not a put back, and `corrected` is false. Drifts of
    /// logs written before event schema 3 were recorded as corrected in that case too.
    #[serde(default)]
    pub superseded_by: Option<String>,
    #[serde(default)]
    pub superseded_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub superseded_seq: Option<u64>,
    /// Who made it, from the Kubernetes audit log (the drift's `DriftAttributed`): the writes
    /// that explain this path. `None`: no attribution recorded (the audit receiver is off, or
    /// still waiting); empty: unattributed.
    #[serde(default)]
    pub changed_by: Option<Vec<crate::event::AuditWriter>>,
}

/// A field path as users type it: a JSON pointer (`/spec/replicas`) or dotted
/// (`spec.replicas`, numbers are list indexes).
pub fn field_pointer(text: &str) -> Result<String, QueryError> {
    if text.is_empty() {
        return Err(QueryError::BadField(text.to_string()));
    }
    if text.starts_with('/') {
        return Ok(text.to_string());
    }
    if text.split('.').any(str::is_empty) {
        return Err(QueryError::BadField(text.to_string()));
    }
    Ok(text
        .split('.')
        .map(|t| format!("/{}", crate::plan::escape(t)))
        .collect())
}

/// The fields of a manifest as JSON pointers to leaves: scalars, empty maps and lists, and
/// lists of scalars (which the API server treats as one atomic value).
pub(crate) fn leaves(v: &Value, pointer: String, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                leaves(child, format!("{pointer}/{}", crate::plan::escape(k)), out);
            }
        }
        Value::Array(a) if a.iter().any(|x| x.is_object() || x.is_array()) => {
            for (i, child) in a.iter().enumerate() {
                leaves(child, format!("{pointer}/{i}"), out);
            }
        }
        other => {
            out.insert(pointer, other.clone());
        }
    }
}

/// What the walk found for one field; commits are filled in by [`blame`].
#[derive(Clone, Debug, PartialEq)]
pub struct WalkedField {
    pub path: String,
    pub value: Value,
    /// `(seq, time, revision)` of the apply that set the current value.
    pub set_by: Option<(u64, DateTime<Utc>, String)>,
    /// That apply and the one before it, when the walk met both.
    pub previous: Option<Previous>,
    pub drifts: Vec<FieldDrift>,
}

/// The apply a field is credited to against the object's apply before it: what blame compares
/// a Helm object's values layers with (a field changed at the same revision was changed by the
/// values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Previous {
    /// The digest of the manifest the credited apply wrote.
    pub applied: Digest,
    /// The revision of the apply before it and the digest of its manifest.
    pub revision: String,
    pub digest: Digest,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Walked {
    pub api_version: String,
    pub fields: Vec<WalkedField>,
    pub object_drifts: Vec<FieldDrift>,
}

type Since = (u64, DateTime<Utc>, String);

/// What [`CreditWalk::finish`] gives: each field's credit, and the credited apply against the
/// one before it where the walk met both.
pub type Credits = (BTreeMap<String, Since>, BTreeMap<String, Previous>);

/// The credit half of blame: folds one object's events of one App from the newest back and
/// credits each field to the newest apply that changed it.
///
/// A creation sets every field, a configure the fields its `changed_fields` name (the planner's
/// diff against the last applied state, or for a drift correction the drifted fields), unless it
/// re-wrote the manifest of the apply before it (the same digest): then it put values back and
/// changed none. The digest decides, not the DriftCorrected beside the apply: blame follows the
/// writes (issue 15). Logs written before `DriftSuperseded` existed list in a DriftCorrected the
/// fields a new revision set in the same pass, and a drift already recorded in detect mode is
/// put back later without a DriftCorrected. Whether an apply re-wrote the previous manifest is
/// known only at the next older apply, so its fields wait there (one apply more is read).
/// A field no apply since the object's creation (or the oldest apply still in the log) changed
/// is credited to that apply. The walk reads no older manifest: one blob per blame (a Helm
/// object's values credit then reads the manifests of each crediting apply and the apply before
/// it, which the walk keeps: [`Previous`]).
pub struct CreditWalk {
    unresolved: Vec<String>,
    set_by: BTreeMap<String, Since>,
    previous: BTreeMap<String, Previous>,
    oldest_apply: Option<Since>,
    /// Fields the newest apply not yet compared changed, waiting for the next older apply to
    /// tell whether it re-wrote that one's manifest (same digest) or set them: (the apply, its
    /// digest, fields).
    pending: Option<(Since, Digest, Vec<String>)>,
    lifecycle_done: bool,
}

fn touches(changed: &str, field: &str) -> bool {
    covers(changed, field) || covers(field, changed)
}

impl CreditWalk {
    pub fn new(fields: impl IntoIterator<Item = String>) -> CreditWalk {
        CreditWalk {
            unresolved: fields.into_iter().collect(),
            set_by: BTreeMap::new(),
            previous: BTreeMap::new(),
            oldest_apply: None,
            pending: None,
            lifecycle_done: false,
        }
    }

    /// The waiting fields were set by their apply: the apply before it (`before`: its revision
    /// and digest) wrote another manifest (or none is left to say so, and that apply is the
    /// oldest one met anyway).
    fn pending_were_set(&mut self, before: Option<(&str, Digest)>) {
        if let Some((since, applied, fields)) = self.pending.take() {
            for f in fields {
                if let Some((revision, digest)) = before {
                    self.previous.insert(
                        f.clone(),
                        Previous {
                            applied,
                            revision: revision.to_string(),
                            digest,
                        },
                    );
                }
                self.set_by.insert(f, since.clone());
            }
        }
    }

    /// Folds the next older event.
    pub fn step(&mut self, env: &Envelope) {
        let (seq, time) = (env.body.seq, env.body.time);
        match &env.body.event {
            Event::ObjectApplied(a) if !self.lifecycle_done => {
                match self.pending.take() {
                    // The newer apply re-wrote this one's manifest: it changed nothing, the
                    // values are at least as old as this apply.
                    Some((_, digest, fields)) if digest == a.digest => {
                        self.unresolved.extend(fields)
                    }
                    other => {
                        self.pending = other;
                        self.pending_were_set(Some((&a.revision, a.digest)));
                    }
                }
                let since = (seq, time, a.revision.clone());
                match a.action {
                    // An adoption begins the object's life in the App as a creation does:
                    // every value it applied is owed to it.
                    ApplyAction::Created | ApplyAction::Adopted => {
                        for f in std::mem::take(&mut self.unresolved) {
                            self.set_by.insert(f, since.clone());
                        }
                        self.lifecycle_done = true;
                    }
                    ApplyAction::Configured => {
                        let (changed, rest): (Vec<String>, Vec<String>) =
                            std::mem::take(&mut self.unresolved)
                                .into_iter()
                                .partition(|f| a.changed_fields.iter().any(|c| touches(c, f)));
                        self.unresolved = rest;
                        if !changed.is_empty() {
                            self.pending = Some((since.clone(), a.digest, changed));
                        }
                    }
                    ApplyAction::Unchanged => {}
                }
                self.oldest_apply = Some(since);
            }
            // Before a prune the object was another life of it: its fields were set anew.
            Event::ObjectPruned(_) | Event::ObjectOrphaned(_) => {
                self.pending_were_set(None);
                self.lifecycle_done = true
            }
            _ => {}
        }
    }

    /// Whether older events can change nothing more: the creation was reached, or every field
    /// still open is one that no apply after `lifecycle` (the apply that began the object's
    /// life, whose `changed_fields` since are `changed_since`) changed, so that apply sets it,
    /// and no field waits for the next older apply.
    pub fn settled(&self, changed_since: &[String]) -> bool {
        self.lifecycle_done
            || (self.pending.is_none()
                && self
                    .unresolved
                    .iter()
                    .all(|f| !changed_since.iter().any(|c| touches(c, f))))
    }

    /// The credits: each field still open goes to `lifecycle` when the walk stopped early,
    /// otherwise to the oldest apply it met; beside them, each credited apply against the apply
    /// before it, where the walk met that one (never for a creation or the oldest apply met).
    pub fn finish(mut self, lifecycle: Option<Since>) -> Credits {
        self.pending_were_set(None);
        if let Some(oldest) = lifecycle.or(self.oldest_apply) {
            for f in std::mem::take(&mut self.unresolved) {
                self.set_by.insert(f, oldest.clone());
            }
        }
        (self.set_by, self.previous)
    }
}

/// The drift half of blame: every drift in `events` (one object's events of one App, oldest
/// first; events other than drifts and their ends are skipped), each ended by the oldest
/// DriftCorrected (put back) or DriftSuperseded (a new revision set it) after it that lists its
/// path (or the whole object).
pub fn drift_list(events: &[Envelope]) -> Vec<FieldDrift> {
    let mut drifts = Vec::new();
    for (i, env) in events.iter().enumerate() {
        let Event::DriftDetected(d) = &env.body.event else {
            continue;
        };
        for diff in &d.diffs {
            let lists = |fields: &[String]| fields.iter().any(|f| f == &diff.path || f.is_empty());
            let end = events[i + 1..]
                .iter()
                .find_map(|later| match &later.body.event {
                    Event::DriftCorrected(c) if lists(&c.fields) => {
                        Some((later.body.seq, later.body.time, None))
                    }
                    Event::DriftSuperseded(c) if lists(&c.fields) => {
                        Some((later.body.seq, later.body.time, Some(c.revision.clone())))
                    }
                    _ => None,
                });
            let (fix, superseded) = match end {
                Some((seq, time, None)) => (Some((seq, time)), None),
                Some((seq, time, Some(rev))) => (None, Some((seq, time, rev))),
                None => (None, None),
            };
            drifts.push(FieldDrift {
                seq: env.body.seq,
                time: env.body.time,
                path: diff.path.clone(),
                expected: diff.expected.clone(),
                actual: diff.actual.clone(),
                managers: d
                    .managers
                    .iter()
                    .filter(|m| m.fields.iter().any(|f| f == &diff.path))
                    .map(|m| FieldManagerRef {
                        manager: m.manager.clone(),
                        operation: m.operation.clone(),
                        time: m.time,
                    })
                    .collect(),
                corrected: fix.is_some(),
                corrected_at: fix.map(|f| f.1),
                corrected_seq: fix.map(|f| f.0),
                superseded_at: superseded.as_ref().map(|s| s.1),
                superseded_seq: superseded.as_ref().map(|s| s.0),
                superseded_by: superseded.map(|s| s.2),
                changed_by: events[i + 1..]
                    .iter()
                    .find_map(|later| match &later.body.event {
                        Event::DriftAttributed(a) if a.drift_seq == Some(env.body.seq) => Some(
                            a.writers
                                .iter()
                                .filter(|w| w.fields.iter().any(|f| f == &diff.path))
                                .cloned()
                                .collect(),
                        ),
                        _ => None,
                    }),
            });
        }
    }
    drifts
}

/// The leaves of `current` (the manifest reckon last applied): the fields blame credits.
fn fields_of(current: &Value) -> BTreeMap<String, Value> {
    let mut all = BTreeMap::new();
    leaves(current, String::new(), &mut all);
    all
}

/// Puts the two halves together for `all` (the [`fields_of`] `current`; `field` keeps only
/// fields at or under that pointer).
fn assemble(
    current: &Value,
    all: BTreeMap<String, Value>,
    (mut set_by, mut previous): Credits,
    drifts: Vec<FieldDrift>,
    field: Option<&str>,
) -> Walked {
    let api_version = current
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let wanted = |path: &str| field.is_none_or(|f| covers(f, path) || covers(path, f));
    let object_drifts = drifts
        .iter()
        .filter(|d| d.path.is_empty())
        .cloned()
        .collect();
    let fields = all
        .into_iter()
        .filter(|(path, _)| wanted(path))
        .map(|(path, value)| WalkedField {
            drifts: drifts
                .iter()
                .filter(|d| {
                    !d.path.is_empty() && (covers(&d.path, &path) || covers(&path, &d.path))
                })
                .cloned()
                .collect(),
            set_by: set_by.remove(&path),
            previous: previous.remove(&path),
            path,
            value,
        })
        .collect();
    Walked {
        api_version,
        fields,
        object_drifts,
    }
}

/// Blame from all of one object's events of one App (given oldest first): the whole walk, with
/// no early stop. [`blame`] reads less (the walk stops once settled, drifts come from the drift
/// index) and must answer the same; the tests hold it to this.
pub fn blame_walk(events: &[Envelope], current: &Value, field: Option<&str>) -> Walked {
    let all = fields_of(current);
    let mut walk = CreditWalk::new(all.keys().cloned());
    for env in events.iter().rev() {
        walk.step(env);
    }
    assemble(current, all, walk.finish(None), drift_list(events), field)
}

/// Every event `selector` holds for `app`, oldest first.
fn app_events<R: EventRead + ?Sized>(
    reader: &R,
    selector: Selector,
    app: &str,
) -> Result<Vec<Envelope>, QueryError> {
    let mut query = Query::new(selector).oldest_first().limit(1000);
    let mut out = Vec::new();
    loop {
        let page = reader.query(&query)?;
        out.extend(
            page.events
                .into_iter()
                .filter(|e| e.body.app.as_deref() == Some(app)),
        );
        match page.next {
            Some(n) => query.cursor = Some(n),
            None => return Ok(out),
        }
    }
}

/// Every event of `object` recorded for `app`, oldest first: what [`blame_walk`] walks.
pub fn object_events<R: EventRead + ?Sized>(
    reader: &R,
    object: &crate::event::ObjectRef,
    app: &str,
) -> Result<Vec<Envelope>, QueryError> {
    app_events(reader, Selector::Object(object.clone()), app)
}

/// The credits of [`CreditWalk`] for `entry`'s object, reading its events newest first only
/// until the walk is settled: when the apply that began the object's life is still in the log,
/// every field no apply since changed is credited to it, so a long history of applies that all
/// changed the same few fields costs a few reads, not one per apply.
fn credits<R: EventRead + ?Sized>(
    reader: &R,
    entry: &InventoryEntry,
    app: &str,
    fields: impl IntoIterator<Item = String>,
) -> Result<Credits, QueryError> {
    let lifecycle = match entry.lifecycle_seq {
        Some(seq) => reader.get(seq)?.and_then(|env| match env.body.event {
            Event::ObjectApplied(a)
                if env.body.app.as_deref() == Some(app)
                    && a.object.identity() == entry.object.identity() =>
            {
                Some((seq, env.body.time, a.revision))
            }
            _ => None,
        }),
        None => None,
    };
    let mut walk = CreditWalk::new(fields);
    // A page is read whole before the walk sees it, and the walk usually settles within the
    // first few events: start small, grow when it does not.
    let mut query = Query::new(Selector::Object(entry.object.clone())).limit(4);
    'pages: loop {
        let page = reader.query(&query)?;
        query.limit = (query.limit * 4).min(1000);
        for env in &page.events {
            if env.body.app.as_deref() != Some(app) {
                continue;
            }
            if lifecycle.as_ref().is_some_and(|l| env.body.seq < l.0) {
                break 'pages;
            }
            walk.step(env);
            if lifecycle.is_some() && walk.settled(&entry.changed_since) {
                break 'pages;
            }
        }
        match page.next {
            Some(n) => query.cursor = Some(n),
            None => break,
        }
    }
    Ok(walk.finish(lifecycle))
}

/// What a revision is: the commit a Git App observed, or the chart version a chart repository
/// App observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Observed {
    Commit(crate::event::CommitObserved),
    Chart(crate::event::ChartObserved),
}

impl Observed {
    fn of(event: Event, revision: &str) -> Option<Observed> {
        match event {
            Event::CommitObserved(c) if c.sha == revision => Some(Observed::Commit(c)),
            Event::ChartObserved(c) if c.revision == revision => Some(Observed::Chart(c)),
            _ => None,
        }
    }

    pub fn author_name(&self) -> Option<String> {
        match self {
            Observed::Commit(c) => Some(c.author.name.clone()),
            Observed::Chart(_) => None,
        }
    }

    pub fn author_email(&self) -> Option<String> {
        match self {
            Observed::Commit(c) => Some(c.author.email.clone()),
            Observed::Chart(_) => None,
        }
    }

    pub fn authored_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Observed::Commit(c) => Some(c.author.time),
            Observed::Chart(_) => None,
        }
    }

    /// The commit message's first line, or the chart and version.
    pub fn summary(&self) -> String {
        match self {
            Observed::Commit(c) => first_line(&c.message),
            Observed::Chart(c) => super::chart_summary(c),
        }
    }

    pub fn chart(&self) -> Option<ChartRevision> {
        match self {
            Observed::Commit(_) => None,
            Observed::Chart(c) => Some(ChartRevision {
                name: c.name.clone(),
                version: c.version.clone(),
                app_version: c.app_version.clone(),
                digest: c.digest.clone(),
                repository: c.repository.clone(),
            }),
        }
    }
}

/// The chart version a revision of a chart repository App is (from its ChartObserved).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChartRevision {
    pub name: String,
    pub version: String,
    pub app_version: Option<String>,
    /// `sha256:<hex>` of the chart archive.
    pub digest: String,
    /// The repository, credentials replaced by `***`.
    pub repository: String,
}

/// The commit (or chart version) behind a revision, from its CommitObserved (ChartObserved)
/// event in `app`: the one the projections point at, else (a revision compacted before they
/// recorded it) the first such event of `app` among the revision's events.
pub(crate) fn commit_of<R: EventRead + ?Sized>(
    reader: &R,
    projections: &Projections,
    app: &str,
    sha: &str,
) -> Result<Option<Observed>, QueryError> {
    let recorded = match RevisionView::new(reader, projections, app) {
        Some(view) => view.get(sha)?.and_then(|r| r.commit_seq),
        None => None,
    };
    if let Some(seq) = recorded {
        return Ok(reader
            .get(seq)?
            .and_then(|e| Observed::of(e.body.event, sha)));
    }
    let mut query = Query::new(Selector::Commit(sha.to_string()))
        .oldest_first()
        .limit(100);
    // A commit is observed before anything is done with it: its event is among the first.
    for _ in 0..10 {
        let page = reader.query(&query)?;
        for e in page.events {
            if e.body.app.as_deref() == Some(app)
                && let Some(observed) = Observed::of(e.body.event, sha)
            {
                return Ok(Some(observed));
            }
        }
        match page.next {
            Some(n) => query.cursor = Some(n),
            None => break,
        }
    }
    Ok(None)
}

/// [`commit_of`] for several revisions of `app`, in order, each given with its entry's
/// `commit_seq`: the events those point at are read together ([`EventRead::get_many`]), the
/// rest one by one.
pub(crate) fn commits_of<R: EventRead + ?Sized>(
    reader: &R,
    projections: &Projections,
    app: &str,
    revisions: &[(&str, Option<u64>)],
) -> Result<Vec<Option<Observed>>, QueryError> {
    let seqs: Vec<u64> = revisions.iter().filter_map(|(_, seq)| *seq).collect();
    let mut read = reader.get_many(&seqs)?.into_iter();
    revisions
        .iter()
        .map(|&(sha, seq)| match seq {
            Some(_) => Ok(read
                .next()
                .flatten()
                .and_then(|e| Observed::of(e.body.event, sha))),
            None => commit_of(reader, projections, app, sha),
        })
        .collect()
}

/// The values changes of a blame's applies: the manifests compared read once each, and each
/// pair of applies compared once (many fields share one apply).
#[derive(Default)]
struct ValuesCredits {
    manifests: HashMap<Digest, Option<Value>>,
    changes: HashMap<(Digest, Digest, bool), Option<ValuesChange>>,
}

impl ValuesCredits {
    /// The values change of the apply that wrote `previous.applied` at `revision`, against the
    /// apply before it. A manifest the store no longer holds (or that does not read) gives none:
    /// the credit stays the revision's.
    fn of<R: EventRead + ?Sized>(
        &mut self,
        reader: &R,
        previous: &Previous,
        revision: &str,
    ) -> Result<Option<ValuesChange>, QueryError> {
        let same_revision = previous.revision == revision;
        let key = (previous.applied, previous.digest, same_revision);
        if let Some(known) = self.changes.get(&key) {
            return Ok(known.clone());
        }
        for digest in [previous.applied, previous.digest] {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.manifests.entry(digest) {
                slot.insert(
                    reader
                        .blob(&digest)?
                        .and_then(|bytes| serde_json::from_slice(&bytes).ok()),
                );
            }
        }
        let change = match (
            &self.manifests[&previous.applied],
            &self.manifests[&previous.digest],
        ) {
            (Some(applied), Some(before)) => {
                values_blame::values_change(applied, before, same_revision)
            }
            _ => None,
        };
        self.changes.insert(key, change.clone());
        Ok(change)
    }
}

/// Blame for an object an App manages (`app`: which one, when several do). `field` narrows to a
/// field or a subtree (JSON pointer or dotted path).
pub fn blame<R: EventRead + ?Sized>(
    reader: &R,
    projections: &Projections,
    object: &ObjectSpec,
    app: Option<&str>,
    field: Option<&str>,
) -> Result<Blame, QueryError> {
    let field = field.map(field_pointer).transpose()?;
    let reference = object.resolve(projections);
    let identity = reference.identity();
    let owners: Vec<&String> = projections
        .apps
        .iter()
        .filter(|(name, state)| {
            app.is_none_or(|a| a == name.as_str()) && state.inventory.contains_key(&identity)
        })
        .map(|(name, _)| name)
        .collect();
    let app = match owners.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(QueryError::NotManaged {
                object: object.to_string(),
                app: app.map(str::to_string),
            });
        }
        several => {
            return Err(QueryError::ManagedBySeveral {
                object: object.to_string(),
                apps: several.iter().map(|s| s.to_string()).collect(),
            });
        }
    };
    let entry = &projections.apps[&app].inventory[&identity];
    let digest = entry.last_digest;
    let blob_problem = |p: String| QueryError::Blob {
        digest: digest.to_hex(),
        what: format!(
            "the last applied manifest of {}",
            object_name(&entry.object)
        ),
        problem: p,
    };
    let bytes = reader
        .blob(&digest)?
        .ok_or_else(|| blob_problem("the blob store does not hold it".into()))?;
    let current: Value = serde_json::from_slice(&bytes)
        .map_err(|e| blob_problem(format!("it is not a JSON object: {e}")))?;
    let all = fields_of(&current);
    let set_by = credits(reader, entry, &app, all.keys().cloned())?;
    let drifts = drift_list(&app_events(reader, Selector::Drift(reference), &app)?);
    let walked = assemble(&current, all, set_by, drifts, field.as_deref());
    if let Some(f) = &field
        && walked.fields.is_empty()
    {
        return Err(QueryError::BadObject {
            object: object.to_string(),
            reason: format!("reckon manages no field at or under {f}"),
        });
    }
    let mut commits: HashMap<String, Option<Observed>> = HashMap::new();
    // Only a chart's render records values; other objects read no older manifest.
    let chart_render = current
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(crate::render::helm::VALUES_DIGEST_ANNOTATION))
        .is_some();
    let mut values = ValuesCredits::default();
    let mut fields = Vec::with_capacity(walked.fields.len());
    for f in walked.fields {
        let set_by = match f.set_by {
            None => None,
            Some((seq, time, revision)) => {
                if !commits.contains_key(&revision) {
                    commits.insert(
                        revision.clone(),
                        commit_of(reader, projections, &app, &revision)?,
                    );
                }
                let c = commits[&revision].as_ref();
                let values = match &f.previous {
                    Some(p) if chart_render => values.of(reader, p, &revision)?,
                    _ => None,
                };
                // Owed to the values alone: the commit's author and the chart did not set it.
                let revision_too = values.as_ref().is_none_or(|v| v.with_revision);
                let summary = c.map(Observed::summary);
                Some(BlameCommit {
                    applied_at: time,
                    applied_seq: seq,
                    author_name: c.and_then(Observed::author_name).filter(|_| revision_too),
                    author_email: c.and_then(Observed::author_email).filter(|_| revision_too),
                    authored_at: c.and_then(Observed::authored_at).filter(|_| revision_too),
                    summary: match &values {
                        Some(v) => Some(values_blame::summary(v, summary.as_deref())),
                        None => summary,
                    },
                    chart: c.and_then(Observed::chart).filter(|_| revision_too),
                    revision,
                    values,
                })
            }
        };
        fields.push(BlameField {
            path: f.path,
            value: f.value,
            set_by,
            drifts: f.drifts,
        });
    }
    Ok(Blame {
        app,
        object: object_name(&entry.object),
        api_version: walked.api_version,
        fields,
        object_drifts: walked.object_drifts,
    })
}
