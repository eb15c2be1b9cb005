//! Owns `replay`: an App's intent and inventory as they were at a past time, folded from the log
//! alone (the same [`AppState::fold`] that builds the live projections).

use super::status::{applied_revision, intent_view};
use super::{IntentView, QueryError, object_name};
use crate::event::Event;
use crate::store::projection::{AppState, decode_app_state};
use crate::store::{EventRead, Query, Selector};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayedObject {
    /// named as [`super::object_name`] does.
    pub object: String,
    pub api_version: String,
    /// The revision it was last applied from, and when.
    pub revision: String,
    pub applied_at: DateTime<Utc>,
    /// Digest (hex) of the manifest last applied.
    pub digest: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayedApp {
    pub app: String,
    pub at: DateTime<Utc>,
    /// The last event folded in.
    pub seq: u64,
    pub intent: IntentView,
    pub pinned: bool,
    pub suspended: bool,
    pub observed_revision: Option<String>,
    pub applied_revision: Option<String>,
    pub inventory: Vec<ReplayedObject>,
}

fn replayed(app: &str, at: DateTime<Utc>, state: &AppState) -> ReplayedApp {
    ReplayedApp {
        app: app.to_string(),
        at,
        seq: state.last_seq,
        intent: intent_view(state),
        pinned: state.intent.is_pinned(),
        suspended: state.suspended,
        observed_revision: state.observed_head.clone(),
        applied_revision: applied_revision(state),
        inventory: state
            .inventory
            .values()
            .map(|e| ReplayedObject {
                object: object_name(&e.object),
                api_version: if e.object.group.is_empty() {
                    e.object.version.clone()
                } else {
                    format!("{}/{}", e.object.group, e.object.version)
                },
                revision: e.revision.clone(),
                applied_at: e.applied_at,
                digest: e.last_digest.to_hex(),
            })
            .collect(),
    }
}

/// Intent and inventory of one App (or of every App that had events by then) as of `at`, by
/// folding every event recorded at or before `at`. An App that retention compacted restarts
/// from the compaction's base state when the fold reaches its summary.
pub fn replay<R: EventRead + ?Sized>(
    reader: &R,
    at: DateTime<Utc>,
    app: Option<&str>,
) -> Result<Vec<ReplayedApp>, QueryError> {
    let selector = match app {
        Some(a) => Selector::App(a.to_string()),
        None => Selector::All,
    };
    let mut query = Query::new(selector)
        .oldest_first()
        .between(None, Some(at))
        .limit(10_000);
    let mut states: BTreeMap<String, AppState> = BTreeMap::new();
    loop {
        let page = reader.query(&query)?;
        for env in &page.events {
            let Some(name) = &env.body.app else { continue };
            if let Event::RetentionCompacted(r) = &env.body.event {
                // The removed events are summarised by their base state; events of the App
                // recorded between them and the summary were kept and are re-folded on top.
                if let Ok(base) = decode_app_state(&r.base_state) {
                    let mut state = base;
                    let mut tail = Query::new(Selector::App(name.clone()))
                        .oldest_first()
                        .after(Some(r.last_seq))
                        .limit(10_000);
                    'tail: loop {
                        let p = reader.query(&tail)?;
                        for e in &p.events {
                            if e.body.seq >= env.body.seq {
                                break 'tail;
                            }
                            state.fold(&e.body);
                        }
                        match p.next {
                            Some(n) => tail.cursor = Some(n),
                            None => break,
                        }
                    }
                    states.insert(name.clone(), state);
                }
                continue;
            }
            states.entry(name.clone()).or_default().fold(&env.body);
        }
        match page.next {
            Some(n) => query.cursor = Some(n),
            None => break,
        }
    }
    if let Some(a) = app
        && !states.contains_key(a)
    {
        return Err(QueryError::NothingAt {
            app: a.to_string(),
            at,
        });
    }
    Ok(states
        .iter()
        .map(|(name, state)| replayed(name, at, state))
        .collect())
}
