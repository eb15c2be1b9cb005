//! Owns `blame`: for each field reckon manages on an object, the commit that last set its value
//! from Git, and every drift on it (who changed it, when, and whether reckon put it back).
//!
//! The walk ([`blame_walk`]) is pure: it folds the object's events oldest first, with a loader
//! for the applied manifests, so it is unit-tested on synthetic sequences.

use super::{ObjectSpec, QueryError, first_line, object_name};
use crate::event::{Envelope, Event};
use crate::plan::covers;
use crate::store::{EventRead, Projections, Query, Selector};
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
    pub summary: Option<String>,
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
    pub drifts: Vec<FieldDrift>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Walked {
    pub api_version: String,
    pub fields: Vec<WalkedField>,
    pub object_drifts: Vec<FieldDrift>,
}

/// Walks one object's events of one App (given oldest first) from the newest back.
/// `current` is the manifest reckon last applied (the inventory's blob); `field` keeps only
/// fields at or under that pointer.
///
/// Each field is credited to the newest apply that changed it: a creation sets every field, a
/// configure the fields its `changed_fields` name (the planner's diff against the last applied
/// state), except the fields a drift correction put back (the apply right before its
/// DriftCorrected re-sets them, it does not change them). A field no apply since the object's
/// creation (or the oldest apply still in the log) changed is credited to that apply. No
/// older manifest has to be read: one blob per blame, whatever the history's length.
pub fn blame_walk(events: &[Envelope], current: &Value, field: Option<&str>) -> Walked {
    let mut all = BTreeMap::new();
    leaves(current, String::new(), &mut all);
    let api_version = current
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    type Since = (u64, DateTime<Utc>, String);
    let mut unresolved: Vec<String> = all.keys().cloned().collect();
    let mut set_by: BTreeMap<String, Since> = BTreeMap::new();
    let mut oldest_apply: Option<Since> = None;
    // Fields a DriftCorrected put back, waiting for the apply that did it: (revision, fields).
    let mut correction: Option<(String, Vec<String>)> = None;
    let mut lifecycle_done = false;
    let touches = |changed: &str, field: &str| covers(changed, field) || covers(field, changed);
    let mut drifts: Vec<FieldDrift> = Vec::new();
    // Corrections seen so far (newer than the drifts still to come): (seq, time, fields).
    let mut corrections: Vec<(u64, DateTime<Utc>, Vec<String>)> = Vec::new();
    for env in events.iter().rev() {
        let (seq, time) = (env.body.seq, env.body.time);
        match &env.body.event {
            Event::ObjectApplied(a) if !lifecycle_done => {
                let since = (seq, time, a.revision.clone());
                let put_back = match correction.take() {
                    Some((rev, fields)) if rev == a.revision => fields,
                    _ => vec![],
                };
                let changed: Vec<&String> = match a.action {
                    crate::event::ApplyAction::Created => unresolved.iter().collect(),
                    crate::event::ApplyAction::Configured => unresolved
                        .iter()
                        .filter(|f| {
                            a.changed_fields.iter().any(|c| touches(c, f))
                                && !put_back.iter().any(|p| p.is_empty() || touches(p, f))
                        })
                        .collect(),
                    crate::event::ApplyAction::Unchanged => vec![],
                };
                let changed: Vec<String> = changed.into_iter().cloned().collect();
                for f in &changed {
                    set_by.insert(f.clone(), since.clone());
                }
                unresolved.retain(|f| !changed.contains(f));
                oldest_apply = Some(since);
                if a.action == crate::event::ApplyAction::Created {
                    lifecycle_done = true;
                }
            }
            // Before a prune the object was another life of it: its fields were set anew.
            Event::ObjectPruned(_) => lifecycle_done = true,
            Event::DriftCorrected(c) => {
                if !lifecycle_done {
                    correction = Some((c.revision.clone(), c.fields.clone()));
                }
                corrections.push((seq, time, c.fields.clone()));
            }
            Event::DriftDetected(d) => {
                for diff in &d.diffs {
                    // Put back by the oldest correction after it that lists the path.
                    let fix = corrections.iter().rev().find(|(_, _, fields)| {
                        fields.iter().any(|f| f == &diff.path || f.is_empty())
                    });
                    drifts.push(FieldDrift {
                        seq,
                        time,
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
                    });
                }
            }
            _ => {}
        }
    }
    if let Some(oldest) = oldest_apply {
        for f in unresolved {
            set_by.insert(f, oldest.clone());
        }
    }
    drifts.reverse();
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
            set_by: set_by.get(&path).cloned(),
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

/// Every event of `object` recorded for `app`, oldest first: what [`blame_walk`] walks.
pub fn object_events<R: EventRead + ?Sized>(
    reader: &R,
    object: &crate::event::ObjectRef,
    app: &str,
) -> Result<Vec<Envelope>, QueryError> {
    let mut query = Query::new(Selector::Object(object.clone()))
        .oldest_first()
        .limit(1000);
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

/// The commit behind a revision, from its CommitObserved event in `app`.
pub(crate) fn commit_of<R: EventRead + ?Sized>(
    reader: &R,
    app: &str,
    sha: &str,
) -> Result<Option<crate::event::CommitObserved>, QueryError> {
    let mut query = Query::new(Selector::Commit(sha.to_string()))
        .oldest_first()
        .limit(100);
    // A commit is observed before anything is done with it: its event is among the first.
    for _ in 0..10 {
        let page = reader.query(&query)?;
        for e in page.events {
            if e.body.app.as_deref() == Some(app)
                && let Event::CommitObserved(c) = e.body.event
            {
                return Ok(Some(c));
            }
        }
        match page.next {
            Some(n) => query.cursor = Some(n),
            None => break,
        }
    }
    Ok(None)
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
    let events = object_events(reader, &reference, &app)?;
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
    let walked = blame_walk(&events, &current, field.as_deref());
    if let Some(f) = &field
        && walked.fields.is_empty()
    {
        return Err(QueryError::BadObject {
            object: object.to_string(),
            reason: format!("reckon manages no field at or under {f}"),
        });
    }
    let mut commits: HashMap<String, Option<crate::event::CommitObserved>> = HashMap::new();
    let mut fields = Vec::with_capacity(walked.fields.len());
    for f in walked.fields {
        let set_by = match f.set_by {
            None => None,
            Some((seq, time, revision)) => {
                if !commits.contains_key(&revision) {
                    commits.insert(revision.clone(), commit_of(reader, &app, &revision)?);
                }
                let c = commits[&revision].as_ref();
                Some(BlameCommit {
                    applied_at: time,
                    applied_seq: seq,
                    author_name: c.map(|c| c.author.name.clone()),
                    author_email: c.map(|c| c.author.email.clone()),
                    authored_at: c.map(|c| c.author.time),
                    summary: c.map(|c| first_line(&c.message)),
                    revision,
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
