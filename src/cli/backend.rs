//! Owns where the query commands get their data: the seam between "obtain typed results" and
//! "render them". [`Local`] opens the store itself (read-only use; sled allows one process, so
//! only while no agent holds it); a running agent is asked over HTTP by the `--server` backend,
//! which returns the same [`crate::query`] types.

use crate::query::{
    self, AppStatus, Blame, HistoryFilter, ObjectSpec, ReplayedApp, RevisionDiff, RevisionRow,
    Shown,
};
use crate::shard::merge::{Cursor, Page};
use crate::store::{EventStore, OpenOptions, SledStore, StoreError};
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};

/// The store is held by another process (sled takes an exclusive lock).
#[derive(Debug, thiserror::Error)]
#[error(
    "{path}: the store is locked by another reckon process (a running agent, or a sync in \
     progress); ask the running agent instead with --server URL (e.g. --server \
     http://127.0.0.1:8080), or stop it first"
)]
pub struct StoreLocked {
    pub path: PathBuf,
}

/// The queries, wherever they are answered. Blocking: commands call them off the async
/// threads.
pub trait Backend: Send {
    /// A page newest first from `cursor` (a sequence number; a fleet's composite cursor only
    /// through an agent's API).
    fn history(&mut self, filter: &HistoryFilter, cursor: Option<&Cursor>) -> anyhow::Result<Page>;
    /// Matching events appended after `after`, oldest first (`--follow`).
    fn history_after(&mut self, filter: &HistoryFilter, after: &Cursor) -> anyhow::Result<Page>;
    /// Where `--follow` starts: the newest sequence number, or each shard's in a fleet.
    fn head(&mut self) -> anyhow::Result<Cursor>;
    fn revisions(&mut self, app: &str) -> anyhow::Result<Vec<RevisionRow>>;
    fn blame(
        &mut self,
        object: &ObjectSpec,
        app: Option<&str>,
        field: Option<&str>,
    ) -> anyhow::Result<Blame>;
    fn show(&mut self, app: &str, rev: &str) -> anyhow::Result<Shown>;
    fn diff(&mut self, app: &str, from: &str, to: &str) -> anyhow::Result<RevisionDiff>;
    fn status(&mut self, app: Option<&str>) -> anyhow::Result<Vec<AppStatus>>;
    fn replay(&mut self, at: DateTime<Utc>, app: Option<&str>) -> anyhow::Result<Vec<ReplayedApp>>;
    /// Lets go of whatever is held between polls (the local store's lock).
    fn release(&mut self) {}
}

/// Whether another process holds the store.
fn is_locked(e: &StoreError) -> bool {
    matches!(e, StoreError::Locked { .. })
}

/// A local store pages by sequence number; a fleet's cursor belongs to the agents' API.
fn local_seq(c: &Cursor) -> anyhow::Result<u64> {
    match c {
        Cursor::Seq(n) => Ok(*n),
        other => anyhow::bail!(
            "cursor {other} is a fleet's (several shards): ask an agent with --server"
        ),
    }
}

/// Opens an existing store for the query commands (never creates one).
pub fn open_existing(path: &Path) -> anyhow::Result<SledStore> {
    match SledStore::open(path, OpenOptions::default()) {
        Ok(s) => Ok(s),
        Err(e) if is_locked(&e) => Err(StoreLocked {
            path: path.to_owned(),
        }
        .into()),
        Err(e) => Err(anyhow::Error::new(e)
            .context(format!("opening the store {} for reading", path.display()))),
    }
}

/// The store on this machine, opened when first asked and kept open until released.
pub struct Local {
    path: PathBuf,
    store: Option<SledStore>,
}

impl Local {
    pub fn new(path: &Path) -> Local {
        Local {
            path: path.to_owned(),
            store: None,
        }
    }

    fn store(&mut self) -> anyhow::Result<&SledStore> {
        if self.store.is_none() {
            self.store = Some(open_existing(&self.path)?);
        }
        Ok(self.store.as_ref().expect("just opened"))
    }
}

impl Backend for Local {
    fn history(&mut self, filter: &HistoryFilter, cursor: Option<&Cursor>) -> anyhow::Result<Page> {
        let mut f = filter.clone();
        f.cursor = cursor.map(local_seq).transpose()?;
        let s = self.store()?;
        Ok(query::history(s, s.projections(), &f)?.into())
    }

    fn history_after(&mut self, filter: &HistoryFilter, after: &Cursor) -> anyhow::Result<Page> {
        let after = local_seq(after)?;
        // Reopened at each poll: only then does it see what another process appended.
        self.release();
        let s = self.store()?;
        let page = query::history_after(s, s.projections(), filter, after)?;
        self.release();
        Ok(page.into())
    }

    fn head(&mut self) -> anyhow::Result<Cursor> {
        Ok(Cursor::Seq(self.store()?.reader().last_seq()?))
    }

    fn revisions(&mut self, app: &str) -> anyhow::Result<Vec<RevisionRow>> {
        let s = self.store()?;
        Ok(query::revisions(s, s.projections(), app)?)
    }

    fn blame(
        &mut self,
        object: &ObjectSpec,
        app: Option<&str>,
        field: Option<&str>,
    ) -> anyhow::Result<Blame> {
        let s = self.store()?;
        Ok(query::blame(s, s.projections(), object, app, field)?)
    }

    fn show(&mut self, app: &str, rev: &str) -> anyhow::Result<Shown> {
        let s = self.store()?;
        Ok(query::show(s, s.projections(), app, rev)?)
    }

    fn diff(&mut self, app: &str, from: &str, to: &str) -> anyhow::Result<RevisionDiff> {
        let s = self.store()?;
        Ok(query::diff_revisions(s, s.projections(), app, from, to)?)
    }

    fn status(&mut self, app: Option<&str>) -> anyhow::Result<Vec<AppStatus>> {
        let s = self.store()?;
        Ok(query::status(s, s.projections(), app)?)
    }

    fn replay(&mut self, at: DateTime<Utc>, app: Option<&str>) -> anyhow::Result<Vec<ReplayedApp>> {
        Ok(query::replay(self.store()?, at, app)?)
    }

    fn release(&mut self) {
        // Dropped, not closed: closing writes a snapshot, and the queries write nothing.
        self.store = None;
    }
}
