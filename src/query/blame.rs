//! Owns `blame`: for each field reckon manages on an object, the commit that last set its value
//! from Git, and every drift on it (who changed it, when, and whether reckon put it back).
//!
//! The walk ([`blame_walk`]) is pure: it folds the object's events oldest first, with a loader
//! for the applied manifests, so it is unit-tested on synthetic sequences.

use super::{ObjectSpec, QueryError, first_line, object_name};
use crate::event::{Digest, Envelope, Event};
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

/// Folds one object's events of one App (oldest first). `manifest` loads an applied manifest by
/// digest (`None`: not in the store). `field` keeps only fields at or under that pointer.
pub fn blame_walk(
    events: &[Envelope],
    manifest: &mut dyn FnMut(&Digest) -> Option<Value>,
    field: Option<&str>,
) -> Walked {
    // Per field: its value and the apply that set it.
    type Since = (u64, DateTime<Utc>, String);
    let mut current: BTreeMap<String, (Value, Option<Since>)> = BTreeMap::new();
    let mut api_version = String::new();
    let mut drifts: Vec<FieldDrift> = Vec::new();
    for env in events {
        let (seq, time) = (env.body.seq, env.body.time);
        match &env.body.event {
            Event::ObjectApplied(a) => {
                let Some(m) = manifest(&a.digest) else {
                    // Unknown content: values we cannot see may have changed; forget them
                    // rather than credit an older commit (the next known apply is credited).
                    current.clear();
                    continue;
                };
                api_version = m
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let mut now = BTreeMap::new();
                leaves(&m, String::new(), &mut now);
                let mut next = BTreeMap::new();
                for (path, value) in now {
                    let since = match current.remove(&path) {
                        Some((old, since)) if old == value => since,
                        _ => Some((seq, time, a.revision.clone())),
                    };
                    next.insert(path, (value, since));
                }
                current = next;
            }
            Event::ObjectPruned(_) => current.clear(),
            Event::DriftDetected(d) => {
                for diff in &d.diffs {
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
                        corrected: false,
                        corrected_at: None,
                        corrected_seq: None,
                    });
                }
            }
            Event::DriftCorrected(c) => {
                for d in drifts.iter_mut().filter(|d| !d.corrected) {
                    if c.fields.iter().any(|f| f == &d.path || f.is_empty()) {
                        d.corrected = true;
                        d.corrected_at = Some(time);
                        d.corrected_seq = Some(seq);
                    }
                }
            }
            _ => {}
        }
    }
    let wanted = |path: &str| field.is_none_or(|f| covers(f, path) || covers(path, f));
    let object_drifts = drifts
        .iter()
        .filter(|d| d.path.is_empty())
        .cloned()
        .collect();
    let fields = current
        .into_iter()
        .filter(|(path, _)| wanted(path))
        .map(|(path, (value, set_by))| WalkedField {
            drifts: drifts
                .iter()
                .filter(|d| {
                    !d.path.is_empty() && (covers(&d.path, &path) || covers(&path, &d.path))
                })
                .cloned()
                .collect(),
            path,
            value,
            set_by,
        })
        .collect();
    Walked {
        api_version,
        fields,
        object_drifts,
    }
}

/// Every event of `object` (any App), oldest first.
fn object_events<R: EventRead + ?Sized>(
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
    let mut cache: HashMap<Digest, Option<Value>> = HashMap::new();
    let mut load = |d: &Digest| -> Option<Value> {
        cache
            .entry(*d)
            .or_insert_with(|| {
                reader
                    .blob(d)
                    .ok()
                    .flatten()
                    .and_then(|b| serde_json::from_slice(&b).ok())
            })
            .clone()
    };
    let walked = blame_walk(&events, &mut load, field.as_deref());
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
