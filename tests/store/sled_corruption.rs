//! Physical corruption of sled's own file: whatever sled does with it (refuse to open, or recover
//! up to the damaged message and drop the rest), reckon must not carry on silently.

use crate::support::store as common;

use common::*;
use reckon::store::verify::verify;
use reckon::store::{OpenOptions, SledStore, StoreError};

/// `(events verified, problems)` after damaging 64 bytes at `fraction` of sled's data file.
fn corrupt_at(fraction: f64) -> Result<(u64, Vec<String>), StoreError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = create(&path);
    fill(&mut store, 0, 3000, 100);
    store.close().unwrap();
    let file = path.join("db/db");
    let mut bytes = std::fs::read(&file).unwrap();
    let at = (bytes.len() as f64 * fraction) as usize;
    for b in &mut bytes[at..at + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&file, bytes).unwrap();
    let store = SledStore::open(&path, OpenOptions::default())?;
    let report = verify(&store.reader(), &mut |_| {})?;
    Ok((
        report.events,
        report.problems.iter().map(|p| p.to_string()).collect(),
    ))
}

#[test]
fn damaged_sled_files_never_go_unnoticed() {
    for fraction in [0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99] {
        match corrupt_at(fraction) {
            Err(e) => {
                let msg = e.to_string();
                eprintln!("at {fraction}: error: {msg}");
                assert!(msg.contains("/s"), "{msg}");
                assert!(
                    matches!(e, StoreError::Corrupt { .. } | StoreError::Truncated { .. }),
                    "{msg}"
                );
            }
            // sled is log-structured: the damage may hit superseded data, which loses nothing.
            // Then every event must still be there and verify; otherwise verify must say so.
            Ok((events, problems)) => {
                eprintln!("at {fraction}: {events} events, problems: {problems:?}");
                assert!(
                    !problems.is_empty() || events == 3000,
                    "corruption at {fraction} lost events silently"
                );
            }
        }
    }
}
