//! Owns store migrations: one numbered step per store schema version (described in
//! `migrations/NNNN_*.md` at the repository root), run on open after the backup copy, each
//! recorded as a `StoreMigrated` event in the same batch that bumps the schema.

use super::keys::{self, Index};
use super::sled_engine::SledStore;
use super::{EventStore, StoreError};
use crate::event::{Draft, Event, StoreMigrated};
use std::collections::BTreeMap;
use std::path::Path;

pub struct Step {
    pub from: u32,
    pub to: u32,
    pub name: &'static str,
    pub description: &'static str,
    run: fn(&mut SledStore) -> Result<u64, StoreError>,
}

/// Every step, in order. Schema 1 is the initial layout (`migrations/0001_initial.md`).
pub const STEPS: &[Step] = &[Step {
    from: 1,
    to: 2,
    name: "0002_kind_time_indexes",
    description: include_str!("../../migrations/0002_kind_time_indexes.md"),
    run: step_0002,
}];

/// Events per migration batch (one batch of kind blocks per group).
const CHUNK: usize = 1_000;

/// Adds the kind posting blocks and time-run entries of every event already in the log.
fn step_0002(store: &mut SledStore) -> Result<u64, StoreError> {
    let path = store.path().to_owned();
    let write = |batch: sled::Batch| {
        store
            .reader
            .events
            .apply_batch(batch)
            .map_err(|e| StoreError::sled(&path, "migrating: writing index entries", e))
    };
    let mut written = 0u64;
    let mut batch = sled::Batch::default();
    let mut kinds: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    let mut in_group = 0;
    let mut prev_time = None;
    let flush_kinds = |kinds: &mut BTreeMap<Vec<u8>, Vec<u64>>, batch: &mut sled::Batch| {
        for (mut term, seqs) in std::mem::take(kinds) {
            term.extend_from_slice(&seqs[0].to_be_bytes());
            batch.insert(term, keys::encode_postings(&seqs));
        }
    };
    for env in store.reader.iter_from(1) {
        let env = env?;
        for key in keys::index_keys(&env.body, 2) {
            if key[0] == Index::Kind.prefix() {
                kinds
                    .entry(key[..key.len() - 8].to_vec())
                    .or_default()
                    .push(env.body.seq);
                written += 1;
            }
        }
        let t = env.body.time.timestamp_micros();
        if prev_time != Some(t) {
            batch.insert(keys::time_key(t, env.body.seq), &[][..]);
            written += 1;
        }
        prev_time = Some(t);
        in_group += 1;
        if in_group == CHUNK {
            flush_kinds(&mut kinds, &mut batch);
            write(std::mem::take(&mut batch))?;
            in_group = 0;
        }
    }
    flush_kinds(&mut kinds, &mut batch);
    write(batch)?;
    Ok(written)
}

/// Runs every step from the store's schema up to `target`.
pub(crate) fn run(store: &mut SledStore, target: u32, backup: &Path) -> Result<(), StoreError> {
    while store.schema < target {
        let from = store.schema;
        let step = STEPS
            .iter()
            .find(|s| s.from == from)
            .ok_or_else(|| StoreError::Migration {
                path: store.path().to_owned(),
                step: "lookup",
                reason: format!("no migration step from schema {from}"),
            })?;
        let n = (step.run)(store)?;
        tracing::info!(step = step.name, index_entries = n, "store migrated");
        // The StoreMigrated event is indexed with the new schema's indexes, in the same batch
        // that bumps the schema: either both land or the step runs again on the next open.
        store.schema = step.to;
        let mut batch = sled::Batch::default();
        batch.insert(&b"Mschema"[..], &step.to.to_be_bytes()[..]);
        let drafts = vec![
            Draft::new(
                None,
                Event::StoreMigrated(StoreMigrated {
                    from_schema: step.from,
                    to_schema: step.to,
                    step: step.name.to_owned(),
                    backup: backup.display().to_string(),
                }),
            )
            .by("reckon"),
        ];
        if let Err(e) = store.append_with(drafts, batch) {
            store.schema = from;
            return Err(e);
        }
        store.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_contiguous_and_reach_the_current_schema() {
        let mut schema = 1;
        for s in STEPS {
            assert_eq!(s.from, schema, "{} does not start at {schema}", s.name);
            assert_eq!(s.to, s.from + 1);
            let number: u32 = s.name[..4].parse().unwrap();
            assert_eq!(number, s.to, "step file number is the schema it produces");
            assert!(
                s.description
                    .contains(s.name.split_at(5).0.trim_end_matches('_'))
            );
            schema = s.to;
        }
        assert_eq!(schema, super::super::STORE_SCHEMA);
    }
}
