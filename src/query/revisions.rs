//! Owns `revisions`: every revision an App observed or applied, with its commit and what
//! applying it changed.

use super::QueryError;
use super::blame::{ChartRevision, Observed, commits_of};
use crate::event::SyncOutcome;
use crate::store::projection::RevisionEntry;
use crate::store::{EventRead, Projections, RevisionView};
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
    /// The first line of the commit message, or (a chart revision) the chart and version.
    pub summary: Option<String>,
    /// The chart version this revision is, for an App following a chart repository.
    #[serde(default)]
    pub chart: Option<ChartRevision>,
    /// When reckon first recorded the revision.
    pub first_seen: DateTime<Utc>,
    /// When a sync of it last finished without failing outright.
    pub applied_at: Option<DateTime<Utc>>,
    /// The outcome of its last sync.
    pub outcome: Option<SyncOutcome>,
    /// Blob address (hex) of its rendered manifests, when it was rendered.
    pub digest: Option<String>,
    /// Objects that syncs of this revision created, configured or pruned (an object re-applied
    /// to correct drift counts once; one changed again after the App came back to the revision
    /// by a rollback counts again).
    pub objects_changed: u64,
}

/// One page of [`revisions`]: `next` is the SHA to pass as `cursor` for the following page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionsPage {
    pub revisions: Vec<RevisionRow>,
    pub next: Option<String>,
}

/// The App's revisions, resident and stored, in output order: newest first seen first, then
/// by SHA. The App's whole table is read (one App's history, not every App's).
fn ordered<R: EventRead + ?Sized>(
    reader: &R,
    projections: &Projections,
    app: &str,
) -> Result<Vec<(String, RevisionEntry)>, QueryError> {
    let view = RevisionView::new(reader, projections, app)
        .ok_or_else(|| QueryError::UnknownApp(app.to_string()))?;
    let mut all: Vec<(String, RevisionEntry)> = view.all()?.into_iter().collect();
    all.sort_by(|a, b| {
        b.1.first_seen
            .cmp(&a.1.first_seen)
            .then_with(|| a.0.cmp(&b.0))
    });
    Ok(all)
}

/// Every revision `app` observed or applied, newest first (by first seen). Unlimited: the
/// cost is one event read per revision, not the log.
pub fn revisions<R: EventRead + ?Sized>(
    reader: &R,
    projections: &Projections,
    app: &str,
) -> Result<Vec<RevisionRow>, QueryError> {
    rows(
        reader,
        projections,
        app,
        &ordered(reader, projections, app)?,
    )
}

/// At most `limit` revisions of [`revisions`], after the one named `cursor` (a SHA from a
/// previous page's `next`). The order is stable while revisions are added (new ones come
/// first), so a cursor never repeats or skips one.
pub fn revisions_page<R: EventRead + ?Sized>(
    reader: &R,
    projections: &Projections,
    app: &str,
    limit: usize,
    cursor: Option<&str>,
) -> Result<RevisionsPage, QueryError> {
    let all = ordered(reader, projections, app)?;
    let start = match cursor {
        None => 0,
        Some(c) => {
            all.iter()
                .position(|(sha, _)| sha.as_str() == c)
                .ok_or_else(|| QueryError::UnknownRevision {
                    app: Some(app.to_string()),
                    rev: c.to_string(),
                })?
                + 1
        }
    };
    let limit = limit.clamp(1, super::MAX_LIMIT);
    let slice = &all[start.min(all.len())..(start + limit).min(all.len())];
    let rows = rows(reader, projections, app, slice)?;
    let next = (start + limit < all.len())
        .then(|| rows.last().map(|r| r.sha.clone()))
        .flatten();
    Ok(RevisionsPage {
        revisions: rows,
        next,
    })
}

/// The revisions' rows: the projections hold everything but each commit's author and
/// message, which are one read of its CommitObserved (so a page costs one event per revision,
/// however many events its syncs recorded; the reads are issued together).
fn rows<R: EventRead + ?Sized>(
    reader: &R,
    projections: &Projections,
    app: &str,
    revisions: &[(String, RevisionEntry)],
) -> Result<Vec<RevisionRow>, QueryError> {
    let shas: Vec<(&str, Option<u64>)> = revisions
        .iter()
        .map(|(sha, e)| (sha.as_str(), e.commit_seq))
        .collect();
    let commits = commits_of(reader, projections, app, &shas)?;
    Ok(revisions
        .iter()
        .zip(commits)
        .map(|((sha, entry), commit)| row(sha, entry, commit))
        .collect())
}

fn row(sha: &str, entry: &RevisionEntry, commit: Option<Observed>) -> RevisionRow {
    let commit = commit.as_ref();
    RevisionRow {
        sha: sha.to_string(),
        author_name: commit.and_then(Observed::author_name),
        author_email: commit.and_then(Observed::author_email),
        authored_at: commit.and_then(Observed::authored_at),
        summary: commit.map(Observed::summary),
        chart: commit.and_then(Observed::chart),
        first_seen: entry.first_seen,
        applied_at: entry.applied_at,
        outcome: entry.outcome,
        digest: entry.digest.map(|d| d.to_hex()),
        objects_changed: u64::from(entry.objects_changed),
    }
}
