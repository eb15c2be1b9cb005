//! Owns `show` and `diff_revisions`: the exact manifests recorded for a revision (from the blob
//! store), and how two recorded revisions differ object by object and field by field.

use super::{QueryError, resolve_revision};
use crate::event::Digest;
use crate::plan::{ChangeKind, changed_fields};
use crate::store::{EventRead, Projections, RevisionView};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shown {
    pub app: String,
    /// The full SHA.
    pub revision: String,
    /// Blob address (hex) of the rendered manifests.
    pub digest: String,
    /// The manifests in canonical order, as stored (Secret values sealed or, in sets recorded
    /// before sealing, as keyed hashes: never in plain text).
    pub manifests: Vec<Value>,
}

/// The rendered manifests recorded for `rev` of `app` (full SHA or unique prefix).
pub fn show<R: EventRead + ?Sized>(
    reader: &R,
    projections: &Projections,
    app: &str,
    rev: &str,
) -> Result<Shown, QueryError> {
    let sha = resolve_revision(reader, projections, app, rev)?;
    let entry = RevisionView::new(reader, projections, app)
        .map(|view| view.get(&sha))
        .transpose()?
        .flatten()
        .ok_or_else(|| QueryError::UnknownRevision {
            app: Some(app.to_string()),
            rev: sha.clone(),
        })?;
    let digest = entry.digest.ok_or_else(|| QueryError::NotRendered {
        app: app.to_string(),
        rev: sha.clone(),
    })?;
    let manifests = read_set(reader, &digest, &format!("manifests of {app}@{sha}"))?;
    Ok(Shown {
        app: app.to_string(),
        revision: sha,
        digest: digest.to_hex(),
        manifests,
    })
}

/// A blob of canonical manifests: one compact JSON object per line.
pub(crate) fn read_set<R: EventRead + ?Sized>(
    reader: &R,
    digest: &Digest,
    what: &str,
) -> Result<Vec<Value>, QueryError> {
    let problem = |p: String| QueryError::Blob {
        digest: digest.to_hex(),
        what: what.to_string(),
        problem: p,
    };
    let bytes = reader
        .blob(digest)?
        .ok_or_else(|| problem("the blob store does not hold it".into()))?;
    bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            serde_json::from_slice(line).map_err(|e| problem(format!("a line is not JSON: {e}")))
        })
        .collect()
}

/// The identity of a manifest: its API group (two kinds of one name stay apart) and its name as
/// [`super::object_name`] writes it.
fn identity(v: &Value) -> (String, String) {
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("");
    let group = s("/apiVersion")
        .rsplit_once('/')
        .map(|(g, _)| g)
        .unwrap_or("");
    let ns = Some(s("/metadata/namespace")).filter(|n| !n.is_empty());
    let name = super::display_name(group, s("/kind"), ns, s("/metadata/name"));
    (group.to_string(), name)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldChangeRow {
    /// JSON pointer (RFC 6901).
    pub path: String,
    /// `changed`, `added` or `removed`.
    pub change: String,
    pub from: Option<Value>,
    pub to: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangedObject {
    /// As [`super::object_name`] writes it.
    pub object: String,
    pub api_version: String,
    pub fields: Vec<FieldChangeRow>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RevisionDiff {
    pub app: String,
    pub from: String,
    pub to: String,
    /// In `to` only, named as [`super::object_name`] does.
    pub added: Vec<String>,
    /// In `from` only.
    pub removed: Vec<String>,
    pub changed: Vec<ChangedObject>,
}

/// How the manifests recorded for `to` differ from those recorded for `from`. No cluster is
/// involved: both sides come from the blob store.
pub fn diff_revisions<R: EventRead + ?Sized>(
    reader: &R,
    projections: &Projections,
    app: &str,
    from: &str,
    to: &str,
) -> Result<RevisionDiff, QueryError> {
    let a = show(reader, projections, app, from)?;
    let b = show(reader, projections, app, to)?;
    // Secret values sealed with a random nonce differ in every set: they are compared by the
    // keyed hash sealed with each (migration 0010), never shown in plain text.
    let index = |set: Vec<Value>| -> BTreeMap<(String, String), Value> {
        set.into_iter()
            .map(|v| (identity(&v), crate::render::digest::comparable_recorded(&v)))
            .collect()
    };
    let (before, after) = (index(a.manifests), index(b.manifests));
    let mut diff = RevisionDiff {
        app: app.to_string(),
        from: a.revision,
        to: b.revision,
        added: vec![],
        removed: vec![],
        changed: vec![],
    };
    for (key, old) in &before {
        match after.get(key) {
            None => diff.removed.push(key.1.clone()),
            Some(new) => {
                let fields: Vec<FieldChangeRow> = changed_fields(old, new)
                    .into_iter()
                    .map(|c| FieldChangeRow {
                        path: c.pointer,
                        change: match c.kind {
                            ChangeKind::Changed => "changed",
                            ChangeKind::Added => "added",
                            ChangeKind::Removed => "removed",
                        }
                        .to_string(),
                        from: c.before,
                        to: c.after,
                    })
                    .collect();
                if !fields.is_empty() {
                    diff.changed.push(ChangedObject {
                        object: key.1.clone(),
                        api_version: new
                            .get("apiVersion")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        fields,
                    });
                }
            }
        }
    }
    diff.added = after
        .keys()
        .filter(|k| !before.contains_key(*k))
        .map(|k| k.1.clone())
        .collect();
    Ok(diff)
}
