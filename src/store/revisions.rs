//! Owns the one way queries read an App's revision table: [`RevisionView`], which merges the
//! revisions resident in the projections with the ones the store keeps beside the snapshot
//! (`projection::stored`). Every read returns its error: a revision that cannot be read is
//! never taken for one that does not exist.

use super::projection::stored::{self, Stored};
use super::projection::{Projections, RevisionEntry};
use super::{EventRead, StoreError};
use std::collections::BTreeMap;

/// One App's revisions, resident and stored, as of the projections it was made from. Stored
/// entries are only ever overwritten with newer values, which the resident ones shadow, so
/// projections taken before a snapshot still read right after it; the one exception is an App
/// reset or renamed since: the snapshot after that deletes the entries of its earlier epoch.
pub struct RevisionView<'a, R: EventRead + ?Sized> {
    reader: &'a R,
    app: &'a str,
    resident: &'a BTreeMap<String, RevisionEntry>,
    stored: Stored,
}

impl<'a, R: EventRead + ?Sized> RevisionView<'a, R> {
    /// `None`: an App the projections do not know.
    pub fn new(reader: &'a R, p: &'a Projections, app: &'a str) -> Option<Self> {
        let state = p.apps.get(app)?;
        Some(RevisionView {
            reader,
            app,
            resident: &state.revisions,
            stored: p.stored(app),
        })
    }

    /// How many revisions the App has (from counts: reads nothing).
    pub fn len(&self) -> u64 {
        self.resident.len() as u64 + self.stored.count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry of `sha` (a full SHA).
    pub fn get(&self, sha: &str) -> Result<Option<RevisionEntry>, StoreError> {
        if let Some(e) = self.resident.get(sha) {
            return Ok(Some(e.clone()));
        }
        if self.stored.count == 0 {
            return Ok(None);
        }
        Ok(self
            .reader
            .stored_revisions(self.app, self.stored.epoch, sha)?
            .into_iter()
            .find(|(s, _)| s == sha)
            .map(|(_, e)| e))
    }

    /// The SHAs that start with `prefix` (lowercase hex), in SHA order.
    pub fn with_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let resident = self
            .resident
            .range(prefix.to_owned()..)
            .take_while(|(sha, _)| sha.starts_with(prefix))
            .map(|(sha, e)| (sha.clone(), e.clone()));
        let stored = if self.stored.count == 0 {
            vec![]
        } else {
            self.reader
                .stored_revisions(self.app, self.stored.epoch, prefix)?
        };
        let found: BTreeMap<String, RevisionEntry> = resident.chain(stored).collect();
        Ok(found.into_keys().collect())
    }

    /// Every revision: the App's whole table (one App's history, read for one request).
    pub fn all(&self) -> Result<BTreeMap<String, RevisionEntry>, StoreError> {
        if self.stored.count == 0 {
            return Ok(self.resident.clone());
        }
        let stored = self
            .reader
            .stored_revisions(self.app, self.stored.epoch, "")?;
        Ok(stored::merge(self.resident, stored))
    }
}
