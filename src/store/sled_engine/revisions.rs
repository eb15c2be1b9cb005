//! Owns the engine's side of the revisions kept beside the snapshot
//! ([`projection::stored`]): faulting a stored revision back into memory before the writer folds
//! an event that names it, evicting the revisions that need not stay resident in the snapshot's
//! own batch, replacing them all after a rebuild, and reading them back for queries.
//!
//! Why the fault-in happens here and not in the fold: folds stay pure (no I/O), and a fold that
//! sees the revisions its events name, with their stored values, computes exactly what it would
//! have with every revision resident.

use super::super::StoreError;
use super::super::projection::stored::{self, KEY_PREFIX, Stored};
use super::super::projection::{AppState, Projections, RevisionEntry};
use super::format::SNAPSHOT_KEY;
use super::{SledStore, StoreReader};
use crate::event::{EnvelopeBody, Event};
use std::collections::BTreeMap;

/// Stored revisions written per batch when a rebuild replaces them all (bounds the batch's
/// memory; safe only then, see [`SledStore::replace_stored`]).
const REPLACE_BATCH: usize = 10_000;

/// A revision moved out of memory: its App, the epoch it is stored under, its SHA and entry.
type Moved = (String, u64, String, RevisionEntry);

impl StoreReader {
    /// `app`'s revisions stored under `epoch` whose SHA starts with `prefix` (all: ""), in
    /// SHA order. Resident entries shadow these: use [`StoreReader::complete_app`] or
    /// [`stored::merge`] rather than reading them alone.
    pub fn stored_revisions_of(
        &self,
        app: &str,
        epoch: u64,
        prefix: &str,
    ) -> Result<Vec<(String, RevisionEntry)>, StoreError> {
        let mut start = stored::epoch_prefix(app, epoch);
        start.extend_from_slice(prefix.as_bytes());
        let mut out = Vec::new();
        for kv in self.snapshots.scan_prefix(&start) {
            let (k, v) = kv.map_err(self.err("reading stored revisions"))?;
            let (_, _, sha) = stored::parse_key(&k).ok_or_else(|| self.corrupt(&k, "key"))?;
            let entry = stored::decode_entry(&v).map_err(|e| self.corrupt(&k, &e.to_string()))?;
            out.push((sha.to_owned(), entry));
        }
        Ok(out)
    }

    /// One stored revision of `app` under `epoch`.
    pub fn stored_revision(
        &self,
        app: &str,
        epoch: u64,
        sha: &str,
    ) -> Result<Option<RevisionEntry>, StoreError> {
        let k = stored::key(app, epoch, sha);
        match self
            .snapshots
            .get(&k)
            .map_err(self.err("reading a stored revision"))?
        {
            None => Ok(None),
            Some(v) => stored::decode_entry(&v)
                .map(Some)
                .map_err(|e| self.corrupt(&k, &e.to_string())),
        }
    }

    /// `app`'s state in `p` with every one of its revisions, resident or stored (`None`: an
    /// App the projections do not know). One App's history, read for one request.
    pub fn complete_app(&self, p: &Projections, app: &str) -> Result<Option<AppState>, StoreError> {
        let Some(state) = p.apps.get(app) else {
            return Ok(None);
        };
        let s = p.stored(app);
        if s.count == 0 {
            return Ok(Some(state.clone()));
        }
        let stored = self.stored_revisions_of(app, s.epoch, "")?;
        let mut state = state.clone();
        state.revisions = stored::merge(&state.revisions, stored);
        Ok(Some(state))
    }

    /// `p` with every App complete and nothing stored: what folding the whole log gives.
    pub fn complete(&self, p: &Projections) -> Result<Projections, StoreError> {
        let mut apps = BTreeMap::new();
        for app in p.apps.keys() {
            if let Some(state) = self.complete_app(p, app)? {
                apps.insert(app.clone(), state);
            }
        }
        Ok(Projections {
            covered_seq: p.covered_seq,
            apps,
            status: p.status.clone(),
            stored: BTreeMap::new(),
        })
    }

    pub(super) fn corrupt(&self, key: &[u8], what: &str) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            seq: None,
            reason: format!(
                "stored revision {}: {what}",
                String::from_utf8_lossy(key.get(1..).unwrap_or_default())
            ),
        }
    }
}

/// The revisions folding `event` reads or makes an App's head: those the event is indexed
/// under, and the earlier head a blocked revision leaves deployable (which the App's passes
/// read, so it must be resident).
fn named(event: &Event) -> Vec<&str> {
    let mut shas = event.revisions();
    if let Event::RevisionBlocked(e) = event {
        shas.extend(e.kept.as_deref());
    }
    shas
}

impl SledStore {
    /// Folds `body` into the projections, noting Apps whose stored revisions it disowns.
    /// Callers fault in first ([`SledStore::fault_in`]).
    pub(super) fn fold_one(&mut self, body: &EnvelopeBody) {
        match &body.event {
            Event::AppRenamed(e) => {
                self.stale.insert(e.from.clone());
                self.stale.extend(body.app.clone());
            }
            Event::AppReset(_) => {
                self.stale.extend(body.app.clone());
            }
            _ => {}
        }
        self.proj.fold(body);
    }

    /// Brings back into memory every stored revision that `events` (App, event) name, so
    /// that folding them sees the whole revision table. Done before a batch is written: a
    /// failed read is an error and writes nothing. Moving an entry into memory changes no
    /// state (it stays stored, shadowed, until evicted again), so it needs no undo.
    pub(super) fn fault_in<'a>(
        &mut self,
        events: impl IntoIterator<Item = (Option<&'a str>, &'a Event)>,
    ) -> Result<(), StoreError> {
        for (app, event) in events {
            let Some(app) = app else { continue };
            for sha in named(event) {
                let s = self.proj.stored(app);
                let resident = self
                    .proj
                    .apps
                    .get(app)
                    .is_some_and(|a| a.revisions.contains_key(sha));
                if s.count == 0 || resident {
                    continue;
                }
                if let Some(entry) = self.reader.stored_revision(app, s.epoch, sha)? {
                    let state = self.proj.apps.entry(app.to_owned()).or_default();
                    state.revisions.insert(sha.to_owned(), entry);
                    self.proj.stored.insert(
                        app.to_owned(),
                        Stored {
                            count: s.count - 1,
                            ..s
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Moves every revision that need not stay resident out of memory into `batch` (the
    /// snapshot's, so that the snapshot and the stored revisions change together), and stages
    /// the deletion of stored revisions their Apps disowned (the caller clears `stale` once
    /// the batch is written). Returns what it moved, for [`SledStore::undo_evict`] should the
    /// batch fail.
    pub(super) fn evict(&mut self, batch: &mut sled::Batch) -> Result<Vec<Moved>, StoreError> {
        for app in &self.stale {
            let epoch = self.proj.stored(app).epoch;
            for k in self.snapshots.scan_prefix(stored::app_prefix(app)).keys() {
                let k = k.map_err(self.err("listing stored revisions"))?;
                if stored::parse_key(&k).is_some_and(|(_, e, _)| e != epoch) {
                    batch.remove(k);
                }
            }
        }
        let mut moved = Vec::new();
        for (app, state) in &mut self.proj.apps {
            let gone = stored::evictable(state, stored::RECENT);
            if gone.is_empty() {
                continue;
            }
            let s = self.proj.stored.entry(app.clone()).or_default();
            s.count += gone.len() as u64;
            for sha in gone {
                let entry = state.revisions.remove(&sha).expect("listed");
                moved.push((app.clone(), s.epoch, sha, entry));
            }
        }
        let encoded: Result<Vec<_>, _> = moved
            .iter()
            .map(|(app, epoch, sha, entry)| {
                stored::encode_entry(entry).map(|v| (stored::key(app, *epoch, sha), v))
            })
            .collect();
        match encoded {
            Ok(entries) => {
                for (k, v) in entries {
                    batch.insert(k, v);
                }
                Ok(moved)
            }
            Err(e) => {
                let path = self.reader.path.clone();
                self.undo_evict(moved);
                Err(StoreError::Invalid {
                    path,
                    reason: format!("encoding a stored revision: {e}"),
                })
            }
        }
    }

    /// Puts back what [`SledStore::evict`] moved, after the batch that stored it failed.
    pub(super) fn undo_evict(&mut self, moved: Vec<Moved>) {
        for (app, _, sha, entry) in moved {
            if let Some(s) = self.proj.stored.get_mut(&app) {
                s.count -= 1;
            }
            self.proj
                .apps
                .entry(app)
                .or_default()
                .revisions
                .insert(sha, entry);
        }
    }

    /// After a rebuild: deletes the snapshot and every stored revision, then stores the
    /// revisions that need not stay resident, in batches. Safe in batches because no snapshot
    /// exists meanwhile: a crash before the next one is written rebuilds again.
    pub(super) fn replace_stored(&mut self) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.remove(SNAPSHOT_KEY);
        self.snapshots
            .apply_batch(batch)
            .map_err(self.err("deleting the snapshot"))?;
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for k in self.snapshots.scan_prefix([KEY_PREFIX]).keys() {
            batch.remove(k.map_err(self.err("listing stored revisions"))?);
            n += 1;
            if n % REPLACE_BATCH == 0 {
                self.snapshots
                    .apply_batch(std::mem::take(&mut batch))
                    .map_err(self.err("deleting stored revisions"))?;
            }
        }
        self.snapshots
            .apply_batch(batch)
            .map_err(self.err("deleting stored revisions"))?;
        self.proj.stored.values_mut().for_each(|s| s.count = 0);
        self.stale.clear();
        let apps: Vec<String> = self.proj.apps.keys().cloned().collect();
        for app in apps {
            self.store_app_history(&app)?;
        }
        self.clear_stored = false;
        Ok(())
    }

    /// Stores `app`'s evictable revisions in batches of [`REPLACE_BATCH`] (see
    /// [`SledStore::replace_stored`]).
    fn store_app_history(&mut self, app: &str) -> Result<(), StoreError> {
        let state = self.proj.apps.get_mut(app).expect("listed");
        let epoch = self.proj.stored.get(app).map_or(0, |s| s.epoch);
        let gone = stored::evictable(state, stored::RECENT);
        for chunk in gone.chunks(REPLACE_BATCH) {
            let mut batch = sled::Batch::default();
            for sha in chunk {
                let entry = &state.revisions[sha];
                let value = stored::encode_entry(entry).map_err(|e| StoreError::Invalid {
                    path: self.reader.path.clone(),
                    reason: format!("encoding a stored revision: {e}"),
                })?;
                batch.insert(stored::key(app, epoch, sha), value);
            }
            self.snapshots
                .apply_batch(batch)
                .map_err(|e| StoreError::sled(&self.reader.path, "storing revisions", e))?;
            for sha in chunk {
                state.revisions.remove(sha);
            }
            let s = self.proj.stored.entry(app.to_owned()).or_default();
            s.count += chunk.len() as u64;
        }
        Ok(())
    }
}
