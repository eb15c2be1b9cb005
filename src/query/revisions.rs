//! Owns `revisions`: every revision an App observed or applied, with its commit and what
//! applying it changed.

use super::{QueryError, first_line};
use crate::event::{ApplyAction, Event, SyncOutcome};
use crate::store::{EventRead, Projections, Query, Selector};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionRow {
    pub sha: String,
    /// Commit author (from CommitObserved; `None` when the commit was never observed, e.g. a
    /// revision only named by a rollback or a force-push).
    pub author_name: Option<String>,
    pub author_email: Option<String>,
    /// When the author wrote it (the commit's author time).
    pub authored_at: Option<DateTime<Utc>>,
    /// The first line of the commit message.
    pub summary: Option<String>,
    /// When reckon first recorded the revision.
    pub first_seen: DateTime<Utc>,
    /// When a sync of it last finished without failing outright.
    pub applied_at: Option<DateTime<Utc>>,
    /// The outcome of its last sync.
    pub outcome: Option<SyncOutcome>,
    /// Blob address (hex) of its rendered manifests, when it was rendered.
    pub digest: Option<String>,
    /// Objects created, configured or pruned by syncs of this revision.
    pub objects_changed: u64,
}

/// Every revision `app` observed or applied, newest first (by first seen). Unlimited: a
/// revision's events are read through the commit index, so the cost is the App's revisions
/// times their events, not the log.
pub fn revisions<R: EventRead + ?Sized>(
    reader: &R,
    projections: &Projections,
    app: &str,
) -> Result<Vec<RevisionRow>, QueryError> {
    let state = projections
        .apps
        .get(app)
        .ok_or_else(|| QueryError::UnknownApp(app.to_string()))?;
    let mut rows = Vec::with_capacity(state.revisions.len());
    for (sha, entry) in &state.revisions {
        let mut row = RevisionRow {
            sha: sha.clone(),
            author_name: None,
            author_email: None,
            authored_at: None,
            summary: None,
            first_seen: entry.first_seen,
            applied_at: entry.applied_at,
            outcome: entry.outcome,
            digest: entry.digest.map(|d| d.to_hex()),
            objects_changed: 0,
        };
        let mut query = Query::new(Selector::Commit(sha.clone()))
            .oldest_first()
            .limit(1000);
        loop {
            let page = reader.query(&query)?;
            for env in &page.events {
                if env.body.app.as_deref() != Some(app) {
                    continue;
                }
                match &env.body.event {
                    Event::CommitObserved(c) if row.author_email.is_none() => {
                        row.author_name = Some(c.author.name.clone());
                        row.author_email = Some(c.author.email.clone());
                        row.authored_at = Some(c.author.time);
                        row.summary = Some(first_line(&c.message));
                    }
                    Event::ObjectApplied(a)
                        if a.revision == *sha && a.action != ApplyAction::Unchanged =>
                    {
                        row.objects_changed += 1
                    }
                    Event::ObjectPruned(p) if p.revision == *sha => row.objects_changed += 1,
                    _ => {}
                }
            }
            match page.next {
                Some(n) => query.cursor = Some(n),
                None => break,
            }
        }
        rows.push(row);
    }
    rows.sort_by(|a, b| {
        b.first_seen
            .cmp(&a.first_seen)
            .then_with(|| a.sha.cmp(&b.sha))
    });
    Ok(rows)
}
