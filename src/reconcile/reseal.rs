//! Owns migration 0010: the recorded sets whose Secret values are sealed by scheme 1
//! (deterministic, bound to field and key only) sealed again by scheme 2 (random nonce, bound to
//! the object), so that no revision's current set keeps scheme-1 values. Run once at start,
//! before any App's first pass; idempotent (a set holding no scheme-1 value is left alone).
//!
//! Blobs are content-addressed and the log is append-only: nothing is rewritten. Each re-sealed
//! set is written as a new blob, and one `RenderSucceeded` (same revision, the new address,
//! same object count) points the revision at it: the projections take a revision's set from its
//! last `RenderSucceeded`, so rollbacks and the render comparison read the new set from then on.
//! The old blob stays where it is, named by the earlier `RenderSucceeded`, until retention
//! removes it.

use super::AGENT_ACTOR;
use crate::event::{Digest, Draft, Event, EventKind, RenderSucceeded, StoreMigrated};
use crate::render::SecretKey;
use crate::render::digest::{SEALED_V1_PREFIX, reseal_object};
use crate::store::writer::StoreHandle;
use crate::store::{EventRead, Query, STORE_SCHEMA, Selector, StoreError, StoreReader, blob};

/// The step's name, as its migration note and its `StoreMigrated` event name it.
pub const STEP: &str = "0010_sealed_v2";

#[derive(Debug, thiserror::Error)]
pub enum ResealError {
    #[error("re-sealing recorded sets (migration {STEP}): {0}")]
    Store(#[from] StoreError),
}

/// What a run re-sealed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resealed {
    /// Sets written again, each with one `RenderSucceeded`.
    pub sets: usize,
    /// Sets left as they are because a scheme-1 value in them did not open (sealed under
    /// another key): App, revision and why. A rollback to one renders it from Git, as before.
    pub unopened: Vec<(String, String, String)>,
}

/// A recorded set (one canonical object per line) with every scheme-1 value sealed again by
/// scheme 2 and its object count; `None` when it holds none. What each object opens to is
/// unchanged.
pub fn reseal_set(bytes: &[u8], key: &SecretKey) -> Result<Option<(Vec<u8>, u32)>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    // Most sets hold no Secret at all: not parsed.
    if !text.contains(SEALED_V1_PREFIX) {
        return Ok(None);
    }
    let mut objects = Vec::new();
    let mut changed = false;
    for (index, line) in text.split('\n').filter(|l| !l.is_empty()).enumerate() {
        let recorded: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("object {index}: {e}"))?;
        match reseal_object(&recorded, key).map_err(|e| format!("object {index}: {e}"))? {
            Some(resealed) => {
                objects.push(resealed);
                changed = true;
            }
            None => objects.push(recorded),
        }
    }
    Ok(changed.then(|| (blob::canonical(&objects), objects.len() as u32)))
}

/// Whether the log records this step done (its `StoreMigrated`, found by the kind index): this
/// release writes no scheme-1 value, so a store migrated once has none to look for.
fn done_before(reader: &StoreReader) -> Result<bool, StoreError> {
    let mut query = Query::new(Selector::Kind(EventKind::StoreMigrated));
    loop {
        let page = reader.query(&query)?;
        if page
            .events
            .iter()
            .any(|e| matches!(&e.body.event, Event::StoreMigrated(m) if m.step == STEP))
        {
            return Ok(true);
        }
        match page.next {
            Some(next) => query.cursor = Some(next),
            None => return Ok(false),
        }
    }
}

/// Re-seals the set each App's revisions currently name (the last `RenderSucceeded` of each
/// revision the projections keep), appending per App the new blobs with their
/// `RenderSucceeded` events, then one `StoreMigrated` naming the step when anything was
/// re-sealed. Once that is recorded, later starts look no further; until then (a store with no
/// scheme-1 value, or a run that stopped halfway) each start reads the sets again, re-sealing
/// what is left and appending nothing when nothing is.
pub async fn reseal_recorded_sets(
    handle: &StoreHandle,
    key: &SecretKey,
) -> Result<Resealed, ResealError> {
    let reader = handle.reader().clone();
    if done_before(&reader)? {
        return Ok(Resealed::default());
    }
    let projections = handle.projections().await?;
    let mut done = Resealed::default();
    for app in projections.apps.keys() {
        let mut blobs = Vec::new();
        let mut drafts = Vec::new();
        // Every revision, the ones kept in the store too: each names a set to re-seal.
        let revisions = crate::store::RevisionView::new(&reader, &projections, app)
            .map(|view| view.all())
            .transpose()?
            .unwrap_or_default();
        for (revision, entry) in &revisions {
            let Some(digest) = entry.digest else {
                continue;
            };
            // A set retention removed has nothing left to re-seal.
            let Some(bytes) = reader.blob(&digest)? else {
                continue;
            };
            match reseal_set(&bytes, key) {
                Ok(None) => {}
                Ok(Some((bytes, object_count))) => {
                    drafts.push(
                        Draft::new(
                            Some(app),
                            Event::RenderSucceeded(RenderSucceeded {
                                revision: revision.clone(),
                                digest: Digest::of(&bytes),
                                object_count,
                            }),
                        )
                        .by(AGENT_ACTOR),
                    );
                    blobs.push(bytes);
                }
                Err(error) => {
                    tracing::warn!(%app, %revision, %error, "a recorded set does not open with this agent's key; left sealed as it was");
                    done.unopened.push((app.clone(), revision.clone(), error));
                }
            }
        }
        if !drafts.is_empty() {
            done.sets += drafts.len();
            handle.append_with_blobs(blobs, drafts).await?;
        }
    }
    if done.sets > 0 {
        let migrated = Draft::new(
            None,
            Event::StoreMigrated(StoreMigrated {
                from_schema: STORE_SCHEMA,
                to_schema: STORE_SCHEMA,
                step: STEP.to_string(),
                backup: "none: nothing was rewritten (re-sealed sets were added)".to_string(),
            }),
        )
        .by(AGENT_ACTOR);
        handle.append(vec![migrated]).await?;
        tracing::info!(
            sets = done.sets,
            step = STEP,
            "re-sealed recorded Secret values"
        );
    }
    Ok(done)
}
