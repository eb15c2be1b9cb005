//! Owns the record of the last `reckon store verify`: a small JSON file beside the log
//! (`verified.json` in the store directory) that the CLI writes after each verification and the
//! agent's integrity endpoint reads.
//!
//! Why a record and not a verification by the agent: a full verify reads every event, index
//! entry and blob (minutes of I/O on a 10M-event store), and the agent's store is being appended
//! to, which is not the consistent snapshot the verifier needs (an index entry written after the
//! log walk would read as dangling). `store verify` opens the store exclusively, so its result is
//! exact; the agent reports it with its time and how many events came after it.

use super::StoreError;
use super::verify::Report;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FILE: &str = "verified.json";

/// What one `store verify` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastVerify {
    /// When the verification finished.
    pub verified_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// The reckon version that verified.
    pub version: String,
    pub ok: bool,
    pub events: u64,
    pub tombstones: u64,
    pub index_entries: u64,
    pub blobs: u64,
    /// The log ended here when it was verified.
    pub last_seq: u64,
    /// The first problem of each kind, as `store verify` prints it.
    pub problems: Vec<String>,
}

impl LastVerify {
    pub fn of(report: &Report, verified_at: DateTime<Utc>, duration_ms: u64) -> LastVerify {
        LastVerify {
            verified_at,
            duration_ms,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ok: report.ok(),
            events: report.events,
            tombstones: report.tombstones,
            index_entries: report.index_entries,
            blobs: report.blobs,
            last_seq: report.last_seq,
            problems: report.problems.iter().map(|p| p.to_string()).collect(),
        }
    }
}

/// Writes the record into `store` the way the store writes its control files (temporary file,
/// fsync, rename, fsync of the directory): a reader never sees half a record.
pub fn write(store: &Path, record: &LastVerify) -> Result<(), StoreError> {
    let body = serde_json::to_vec_pretty(record).map_err(|e| {
        StoreError::io(
            store,
            "encoding the verification record",
            std::io::Error::other(e),
        )
    })?;
    super::sled_engine::write_durably(store, FILE, &body)
}

/// The record in `store`; `None` when the store was never verified (by a reckon that records it).
pub fn read(store: &Path) -> std::io::Result<Option<LastVerify>> {
    match std::fs::read(store.join(FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_record_reads_back_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let report = Report {
            events: 3,
            last_seq: 3,
            ..Default::default()
        };
        let rec = LastVerify::of(
            &report,
            DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            12,
        );
        write(dir.path(), &rec).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(rec.clone()));
        assert!(rec.ok && rec.problems.is_empty());
        assert!(!dir.path().join(format!("{FILE}.tmp")).exists());
    }

    #[test]
    fn a_corrupt_record_is_an_error_not_a_pass() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"{\"ok\": tr").unwrap();
        assert!(read(dir.path()).is_err());
    }
}
