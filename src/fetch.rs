//! Owns recording what a source observed as events: one CommitObserved per new commit, and
//! HistoryRewritten, SourceCacheRecovered, RevisionBlocked and SourceFetchFailed — the audit trail
//! of "who committed what, when, signed by whom" and of every failure to look; for a chart
//! repository source, one ChartObserved per new matching chart version.
//!
//! The previous head comes from the App's projection (folded from the log), so a restarted agent
//! resumes exactly where it stopped without asking Git, and a failed fetch leaves the App on its
//! last good revision. A poll that finds nothing new appends nothing.

use crate::event::{self, Draft, Event};
use crate::source::allow::redact;
use crate::source::chart::ChartOutcome;
use crate::source::{self, DeployDecision, FetchOutcome, GitSource, SourceError};
use crate::store::projection::AppState;
use crate::store::writer::StoreHandle;
use crate::store::{EventRead as _, StoreError};
use chrono::{DateTime, Utc};

/// Errors recording an observation, named after the failed operation. A failed fetch is not one
/// of them: it is recorded as an event and reported in [`Fetched::failure`].
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("reading the projection of app {app}: {source}")]
    ReadProjection { app: String, source: StoreError },
    #[error("appending the observation of app {app}: {source}")]
    Append { app: String, source: StoreError },
}

/// What one observation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Events appended (0 for a poll that found nothing new).
    pub appended: usize,
    /// The newest commit observed on the ref, after this observation.
    pub observed_head: Option<String>,
    /// The revision the App may deploy when following Git, after this observation.
    pub deployable_head: Option<String>,
    /// The failure, when the fetch failed (already recorded as SourceFetchFailed).
    pub failure: Option<String>,
    /// The App's projection after this observation (a pass plans from it without asking the
    /// store writer again).
    pub state: AppState,
}

fn person(p: &source::Person) -> event::Person {
    event::Person {
        name: p.name.clone(),
        email: p.email.clone(),
        time: DateTime::<Utc>::from_timestamp(p.time, 0).unwrap_or_default(),
        offset_seconds: p.offset_seconds,
    }
}

fn signature(s: &source::SignatureStatus) -> event::SignatureStatus {
    // Stored strings, so spelled out rather than derived from Debug output.
    let fmt = |f: &source::signature::SignatureFormat| {
        match f {
            source::signature::SignatureFormat::Ssh => "ssh",
            source::signature::SignatureFormat::Gpg => "gpg",
            source::signature::SignatureFormat::Other => "other",
            source::signature::SignatureFormat::Cosign => "cosign",
        }
        .to_string()
    };
    match s {
        source::SignatureStatus::NotChecked => event::SignatureStatus::NotChecked,
        source::SignatureStatus::Unsigned => event::SignatureStatus::Unsigned,
        source::SignatureStatus::Verified {
            format,
            signer,
            key,
        } => event::SignatureStatus::Good {
            format: fmt(format),
            signer: signer.clone(),
            key: key.clone(),
        },
        source::SignatureStatus::Untrusted { format, detail } => {
            event::SignatureStatus::Untrusted {
                format: fmt(format),
                detail: detail.clone(),
            }
        }
        source::SignatureStatus::Invalid { format, detail } => event::SignatureStatus::Invalid {
            format: fmt(format),
            detail: detail.clone(),
        },
    }
}

/// The events for one successful fetch, in the order they happened: a recovered cache and a
/// rewrite first (they explain what follows), then every new commit oldest first, then the
/// signature policy's refusal of the new head. `kept` is the App's deployable head before this
/// fetch. A fetch that saw nothing new yields no events, not even a repeated refusal.
pub fn outcome_drafts(
    app: &str,
    url: &str,
    outcome: &FetchOutcome,
    kept: Option<&str>,
) -> Vec<Draft> {
    let mut drafts = Vec::new();
    let d = |e: Event| Draft::new(Some(app), e);
    if let Some(reason) = &outcome.cache_recovered {
        drafts.push(d(Event::SourceCacheRecovered(
            event::SourceCacheRecovered {
                url: redact(url),
                reason: reason.clone(),
            },
        )));
    }
    if let Some(rw) = &outcome.history_rewritten {
        drafts.push(d(Event::HistoryRewritten(event::HistoryRewritten {
            ref_name: outcome.resolved_ref.clone(),
            old_head: rw.old_head.clone(),
            new_head: rw.new_head.clone(),
            merge_base: rw.merge_base.clone(),
        })));
    }
    for c in &outcome.new_commits {
        drafts.push(d(Event::CommitObserved(event::CommitObserved {
            sha: c.sha.clone(),
            parents: c.parents.clone(),
            ref_name: outcome.resolved_ref.clone(),
            author: person(&c.author),
            committer: person(&c.committer),
            message: c.message.clone(),
            signature: signature(&c.signature),
            changed_paths: c.changed_paths.clone(),
        })));
    }
    let head_is_new = !outcome.new_commits.is_empty() || outcome.history_rewritten.is_some();
    if head_is_new && let DeployDecision::Blocked { sha, reason } = &outcome.decision {
        drafts.push(d(Event::RevisionBlocked(event::RevisionBlocked {
            revision: sha.clone(),
            reason: reason.clone(),
            kept: kept.map(str::to_string).filter(|k| k != sha),
        })));
    }
    drafts
}

/// The ChartObserved events for what one look at a chart repository found, oldest first.
pub fn chart_drafts(app: &str, url: &str, outcome: &ChartOutcome) -> Vec<Draft> {
    outcome
        .new_versions
        .iter()
        .map(|v| {
            Draft::new(
                Some(app),
                Event::ChartObserved(event::ChartObserved {
                    revision: v.revision.clone(),
                    repository: redact(url),
                    name: v.name.clone(),
                    version: v.version.clone(),
                    app_version: v.app_version.clone(),
                    digest: v.digest.clone(),
                    verified: v.verified,
                    created: v.created.clone(),
                    signature: signature(&v.signature),
                }),
            )
        })
        .collect()
}

/// The chart version of the App's observed head, from its ChartObserved (the versions passed
/// over since are counted from it).
async fn observed_chart_version(
    store: &StoreHandle,
    state: &AppState,
) -> Result<Option<String>, StoreError> {
    let Some(seq) = state
        .observed_head
        .as_ref()
        .and_then(|head| state.revisions.get(head))
        .and_then(|r| r.commit_seq)
    else {
        return Ok(None);
    };
    // One point read of the log, once per look: not worth a blocking-pool hop.
    let event = store.reader().get(seq)?;
    Ok(event.and_then(|e| match e.body.event {
        Event::ChartObserved(c) => Some(c.version),
        _ => None,
    }))
}

/// The SourceFetchFailed event for a failed fetch.
pub fn failure_draft(app: &str, url: &str, reference: &str, err: &SourceError) -> Draft {
    Draft::new(
        Some(app),
        Event::SourceFetchFailed(event::SourceFetchFailed {
            url: redact(url),
            ref_name: reference.to_string(),
            // The error names the URL (and may quote the remote's messages about it).
            error: err.to_string().replace(url, &redact(url)),
            reason: err.reason().to_string(),
        }),
    )
}

/// What one look at a source found.
enum Observed {
    // Boxed: a FetchOutcome is ten times a ChartOutcome, and only one lives per look.
    Git(Box<FetchOutcome>),
    Chart(ChartOutcome),
}

/// The App's folded state as the writer holds it now (default for an App never seen).
async fn app_state(store: &StoreHandle, app: &str) -> Result<AppState, FetchError> {
    let state = store
        .app_state(app)
        .await
        .map_err(|source| FetchError::ReadProjection {
            app: app.to_string(),
            source,
        })?;
    Ok(state.unwrap_or_default())
}

/// Fetches `source` for `app` from the head the log last recorded and appends what was observed
/// as one flushed batch.
pub async fn fetch(
    store: &StoreHandle,
    app: &str,
    source: &GitSource,
) -> Result<Fetched, FetchError> {
    fetch_quietly(store, app, source, None, None, std::time::Instant::now()).await
}

/// [`fetch`] for a caller that polls: a failure identical to `last_failure` (the same text,
/// which includes the reason) is not recorded again, so an outage of a day is one event, not
/// one per poll. The returned failure text is what to pass next time. `fetches` bounds the
/// fetches running at once; it is held for the fetch only, not while the observation is made
/// durable (a thousand Apps starting together would otherwise queue behind each other's fsync).
/// `requested` is when the fetch was asked for (a poll's due time): a fetch of the same remote
/// that started since then, for another App, answers it (see [`GitSource::fetch_since`]).
pub async fn fetch_quietly(
    store: &StoreHandle,
    app: &str,
    source: &GitSource,
    last_failure: Option<&str>,
    fetches: Option<&tokio::sync::Semaphore>,
    requested: std::time::Instant,
) -> Result<Fetched, FetchError> {
    let state = app_state(store, app).await?;
    let spec = source.spec();
    let fetched = {
        let _permit = match fetches {
            Some(limit) => Some(limit.acquire().await.expect("never closed")),
            None => None,
        };
        if source.chart().is_some() {
            let version = observed_chart_version(store, &state)
                .await
                .map_err(|source| FetchError::ReadProjection {
                    app: app.to_string(),
                    source,
                })?;
            source
                .observe_chart_async(state.observed_head.clone(), version)
                .await
                .map(Observed::Chart)
        } else {
            source
                .fetch_async_since(state.observed_head.clone(), requested)
                .await
                .map(|o| Observed::Git(Box::new(o)))
        }
    };
    let (drafts, failure) = match fetched {
        Ok(Observed::Git(outcome)) => {
            tracing::debug!(app, head = %outcome.head, new = outcome.new_commits.len(), "fetched");
            (
                outcome_drafts(app, &spec.url, &outcome, state.deployable_head.as_deref()),
                None,
            )
        }
        Ok(Observed::Chart(outcome)) => {
            tracing::debug!(
                app,
                new = outcome.new_versions.len(),
                not_modified = outcome.not_modified,
                "looked at the chart repository"
            );
            (chart_drafts(app, &spec.url, &outcome), None)
        }
        Err(err) => {
            // The text reaches the App's status and the logs: the URL in it is redacted.
            let text = err.to_string().replace(&spec.url, &redact(&spec.url));
            if last_failure == Some(text.as_str()) {
                tracing::debug!(app, url = %redact(&spec.url), reason = err.reason(), "fetch still failing");
                (Vec::new(), Some(text))
            } else {
                tracing::warn!(app, url = %redact(&spec.url), reason = err.reason(), "fetch failed: {text}");
                let reference = spec.reference.to_string();
                (
                    vec![failure_draft(app, &spec.url, &reference, &err)],
                    Some(text),
                )
            }
        }
    };
    let appended = drafts.len();
    if !drafts.is_empty() {
        store
            .append(drafts)
            .await
            .map_err(|source| FetchError::Append {
                app: app.to_string(),
                source,
            })?;
    }
    let state = app_state(store, app).await?;
    Ok(Fetched {
        appended,
        observed_head: state.observed_head.clone(),
        deployable_head: state.deployable_head.clone(),
        failure,
        state,
    })
}
