//! Owns store migrations: one numbered step per store schema version (described in
//! `migrations/NNNN_*.md` at the repository root), run on open after the backup copy, each
//! recorded as a `StoreMigrated` event in the same batch that bumps the schema.

use super::super::copies::{self, Copies};
use super::super::keys::{self, Index};
use super::super::{EventStore, StoreError};
use super::SledStore;
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

/// Every step, in order. Schema 1 is the initial layout (`migrations/0001_initial.md`). Step
/// files are numbered in the order they were written (`0003` is a note on recorded sets that
/// changed no layout), so a step's number is not always the schema it produces.
pub const STEPS: &[Step] = &[
    Step {
        from: 1,
        to: 2,
        name: "0002_kind_time_indexes",
        description: include_str!("../../../migrations/0002_kind_time_indexes.md"),
        run: step_0002,
    },
    Step {
        from: 2,
        to: 3,
        name: "0004_drift_index",
        description: include_str!("../../../migrations/0004_drift_index.md"),
        run: step_0004,
    },
    Step {
        from: 3,
        to: 4,
        name: "0013_object_copies",
        description: include_str!("../../../migrations/0013_object_copies.md"),
        run: step_0013,
    },
];

/// Events per migration batch (one batch of posting blocks per group).
const CHUNK: usize = 1_000;

/// Adds the kind posting blocks and time-run entries of every event already in the log.
fn step_0002(store: &mut SledStore) -> Result<u64, StoreError> {
    backfill(store, &[Index::Kind], true)
}

/// Adds the drift posting blocks of every drift and correction already in the log.
fn step_0004(store: &mut SledStore) -> Result<u64, StoreError> {
    backfill(store, &[Index::Drift], false)
}

/// Copies every object event already in the log into its objects' blocks, as the writer
/// would have (`store::copies`), and records `Mcopied` at the head. Idempotent: the blocks
/// follow from the log alone, so a re-run after a crash writes the same keys and values.
fn step_0013(store: &mut SledStore) -> Result<u64, StoreError> {
    let path = store.path().to_owned();
    let write = |batch: sled::Batch| {
        store
            .reader
            .events
            .apply_batch(batch)
            .map_err(|e| StoreError::sled(&path, "migrating: writing object copies", e))
    };
    let mut tails = Copies::default();
    let mut batch = sled::Batch::default();
    let mut written = 0u64;
    let mut stage = |batch: &mut sled::Batch, blocks: Vec<copies::Block>| {
        for b in blocks {
            written += b.records.len() as u64;
            batch.insert(&b.key()[..], b.value());
        }
    };
    // Blocks staged since the last write: a batch of ~250 blocks is ~2 MB.
    let mut since_write = 0usize;
    for item in store.reader.records_from(1) {
        let (seq, record) = item?;
        let env = store.reader.open_record(seq, &record)?;
        let mut blocks: Vec<copies::Block> = copies::terms_of(&env.body)
            .into_iter()
            .filter_map(|t| tails.push(t, seq, &record))
            .collect();
        blocks.extend(tails.due(seq));
        since_write += blocks.len();
        stage(&mut batch, blocks);
        if since_write >= CHUNK / 4 {
            write(std::mem::take(&mut batch))?;
            since_write = 0;
        }
    }
    let head = store.next_seq - 1;
    stage(&mut batch, tails.drain());
    batch.insert(copies::META_COPIED, &head.to_be_bytes()[..]);
    write(batch)?;
    store.copies = Copies::default();
    store.set_copied(head);
    Ok(written)
}

/// Writes the posting blocks of `indexes` (and the time-run entries when `time`) for every event
/// already in the log, in groups of [`CHUNK`] events. Idempotent: a crash mid-way re-runs the
/// step from the start, which writes the same keys.
fn backfill(store: &mut SledStore, indexes: &[Index], time: bool) -> Result<u64, StoreError> {
    let path = store.path().to_owned();
    let write = |batch: sled::Batch| {
        store
            .reader
            .events
            .apply_batch(batch)
            .map_err(|e| StoreError::sled(&path, "migrating: writing index entries", e))
    };
    let prefixes: Vec<u8> = indexes.iter().map(|i| i.prefix()).collect();
    let schema = indexes.iter().map(|i| i.since_schema()).max().unwrap_or(1);
    let mut written = 0u64;
    let mut batch = sled::Batch::default();
    let mut blocks: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    let mut in_group = 0;
    let mut prev_time = None;
    let flush_blocks = |blocks: &mut BTreeMap<Vec<u8>, Vec<u64>>, batch: &mut sled::Batch| {
        for (mut term, seqs) in std::mem::take(blocks) {
            term.extend_from_slice(&seqs[0].to_be_bytes());
            batch.insert(term, keys::encode_postings(&seqs));
        }
    };
    for env in store.reader.iter_from(1) {
        let env = env?;
        for key in keys::index_keys(&env.body, schema) {
            if prefixes.contains(&key[0]) {
                blocks
                    .entry(key[..key.len() - 8].to_vec())
                    .or_default()
                    .push(env.body.seq);
                written += 1;
            }
        }
        if time {
            let t = env.body.time.timestamp_micros();
            if prev_time != Some(t) {
                batch.insert(keys::time_key(t, env.body.seq), &[][..]);
                written += 1;
            }
            prev_time = Some(t);
        }
        in_group += 1;
        if in_group == CHUNK {
            flush_blocks(&mut blocks, &mut batch);
            write(std::mem::take(&mut batch))?;
            in_group = 0;
        }
    }
    flush_blocks(&mut blocks, &mut batch);
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
        let mut last_number = 1;
        for s in STEPS {
            assert_eq!(s.from, schema, "{} does not start at {schema}", s.name);
            assert_eq!(s.to, s.from + 1);
            let number: u32 = s.name[..4].parse().unwrap();
            assert!(number > last_number, "step files are numbered in order");
            last_number = number;
            assert!(
                s.description
                    .contains(s.name.split_at(5).0.trim_end_matches('_'))
            );
            schema = s.to;
        }
        assert_eq!(schema, crate::store::STORE_SCHEMA);
    }
}
