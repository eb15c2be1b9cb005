//! Owns the interchange format: JSON Lines export (one object per event, stable field names, for
//! log pipelines and SIEM tools) and import, which rebuilds a store whose hashes match.
//!
//! Line shapes (the first key tells them apart):
//! - event: `{"seq","time","app","actor","kind","data","prev_hash","hash","format","schema"}`,
//!   `data` being the event's fields as in docs/events.md;
//! - tombstone (events removed by retention): `{"tombstone":{"seq","hash","vouched_by"}}`;
//! - blob (only with `--with-blobs`): `{"blob":{"digest","content"}}`.
//!
//! Import re-encodes each event and recomputes its hash: a line that was edited, or an export
//! from an incompatible reckon, fails with its line number instead of importing silently wrong.

use super::keys;
use super::sled_engine::{OpenOptions, SledStore, StoreReader};
use super::{EventStore, StoreError};
use crate::codec;
use crate::event::envelope::FORMAT_VERSION;
use crate::event::{Digest, Envelope, EnvelopeBody, Event};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::Path;

#[derive(Serialize, Deserialize)]
struct EventLine {
    seq: u64,
    #[serde(with = "codec::time")]
    time: DateTime<Utc>,
    app: Option<String>,
    actor: Option<String>,
    kind: String,
    data: serde_json::Value,
    prev_hash: Digest,
    hash: Digest,
    format: u8,
    schema: u16,
}

#[derive(Serialize, Deserialize)]
struct Tombstone {
    seq: u64,
    hash: Digest,
    vouched_by: u64,
}

#[derive(Serialize, Deserialize)]
struct Blob {
    digest: Digest,
    content: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Other {
    Tombstone(Tombstone),
    Blob(Blob),
}

fn write_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::io(path, "writing the export", e)
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub events: u64,
    pub tombstones: u64,
    pub blobs: u64,
}

/// Writes the whole store as JSON Lines, in sequence order.
pub fn export(
    reader: &StoreReader,
    out: &mut dyn Write,
    with_blobs: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<Counts, StoreError> {
    let path = reader.path().to_owned();
    let mut counts = Counts::default();
    let sled_err = |op: &'static str| {
        let path = path.clone();
        move |e: sled::Error| StoreError::sled(&path, op, e)
    };
    if with_blobs {
        for item in reader.blobs.iter() {
            let (k, _) = item.map_err(sled_err("reading blobs"))?;
            let digest = Digest(k.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                path: path.clone(),
                seq: None,
                reason: "blob key is not 32 bytes".into(),
            })?);
            let content = super::EventRead::blob(reader, &digest)?.unwrap_or_default();
            let content = String::from_utf8(content).map_err(|_| StoreError::Corrupt {
                path: path.clone(),
                seq: None,
                reason: format!("blob {digest} is not UTF-8 manifests"),
            })?;
            serde_json::to_writer(&mut *out, &Other::Blob(Blob { digest, content }))
                .map_err(|e| write_err(&path)(e.into()))?;
            out.write_all(b"\n").map_err(write_err(&path))?;
            counts.blobs += 1;
        }
    }
    let mut tombs = reader
        .events
        .range(keys::tombstone_key(0)..=keys::tombstone_key(u64::MAX))
        .peekable();
    let mut write_tombs_before = |limit: u64, out: &mut dyn Write, counts: &mut Counts| {
        while let Some(Ok((k, _))) = tombs.peek() {
            if keys::seq_of(k).unwrap_or(0) >= limit {
                break;
            }
            let (k, v) = tombs
                .next()
                .expect("peeked")
                .map_err(sled_err("reading tombstones"))?;
            if v.len() != 40 {
                return Err(StoreError::Corrupt {
                    path: path.clone(),
                    seq: keys::seq_of(&k),
                    reason: "tombstone is not 40 bytes".into(),
                });
            }
            let t = Tombstone {
                seq: keys::seq_of(&k).unwrap_or(0),
                hash: Digest(v[..32].try_into().expect("32")),
                vouched_by: u64::from_be_bytes(v[32..].try_into().expect("8")),
            };
            serde_json::to_writer(&mut *out, &Other::Tombstone(t))
                .map_err(|e| write_err(&path)(e.into()))?;
            out.write_all(b"\n").map_err(write_err(&path))?;
            counts.tombstones += 1;
        }
        if let Some(Err(_)) = tombs.peek() {
            tombs
                .next()
                .expect("peeked")
                .map_err(sled_err("reading tombstones"))?;
        }
        Ok(())
    };
    for env in reader.iter_from(1) {
        let env = env?;
        write_tombs_before(env.body.seq, out, &mut counts)?;
        let kind = env.body.event.kind().name().to_owned();
        let mut tagged =
            serde_json::to_value(&env.body.event).map_err(|e| StoreError::Invalid {
                path: path.clone(),
                reason: format!("seq {}: {e}", env.body.seq),
            })?;
        let data = tagged
            .as_object_mut()
            .and_then(|m| m.remove(&kind))
            .unwrap_or(serde_json::Value::Null);
        let line = EventLine {
            seq: env.body.seq,
            time: env.body.time,
            app: env.body.app,
            actor: env.body.actor,
            kind,
            data,
            prev_hash: env.body.prev_hash,
            hash: env.hash,
            format: FORMAT_VERSION,
            schema: env.body.schema,
        };
        serde_json::to_writer(&mut *out, &line).map_err(|e| write_err(&path)(e.into()))?;
        out.write_all(b"\n").map_err(write_err(&path))?;
        counts.events += 1;
        if counts.events.is_multiple_of(10_000) {
            progress(counts.events);
        }
    }
    write_tombs_before(u64::MAX, out, &mut counts)?;
    out.flush().map_err(write_err(&path))?;
    progress(counts.events);
    Ok(counts)
}

fn parse_event(line: EventLine, n: u64) -> Result<(Envelope, Vec<u8>), StoreError> {
    let bad = |reason: String| StoreError::Import { line: n, reason };
    if line.format != FORMAT_VERSION {
        return Err(bad(format!("envelope format {} is unknown", line.format)));
    }
    let mut tagged = serde_json::Map::new();
    tagged.insert(line.kind.clone(), line.data);
    let event: Event = serde_json::from_value(serde_json::Value::Object(tagged))
        .map_err(|e| bad(format!("{} data: {e}", line.kind)))?;
    let body = EnvelopeBody {
        schema: line.schema,
        seq: line.seq,
        time: line.time,
        app: line.app,
        actor: line.actor,
        prev_hash: line.prev_hash,
        event,
    };
    let (env, record) = Envelope::seal(body).map_err(|e| bad(e.to_string()))?;
    if env.hash != line.hash {
        return Err(bad(format!(
            "seq {}: recomputed hash {} differs from the exported {}: the line was altered or \
             comes from an incompatible reckon",
            line.seq, env.hash, line.hash
        )));
    }
    Ok((env, record))
}

/// Imports an export into a new store at `path` (which must not hold events).
pub fn import(
    path: &Path,
    input: &mut dyn BufRead,
    progress: &mut dyn FnMut(u64),
) -> Result<Counts, StoreError> {
    let mut store = SledStore::open(path, OpenOptions::create())?;
    if store.head().is_some() {
        return Err(StoreError::Invalid {
            path: path.to_owned(),
            reason: "import needs a new or empty store; this one already holds events".into(),
        });
    }
    let mut counts = Counts::default();
    let mut records = Vec::new();
    let mut tombs = Vec::new();
    let mut n = 0u64;
    let mut line = String::new();
    loop {
        line.clear();
        let read = input
            .read_line(&mut line)
            .map_err(|e| StoreError::io(path, "reading the import", e))?;
        if read == 0 {
            break;
        }
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| StoreError::Import { line: n, reason };
        if line.starts_with("{\"tombstone\"") || line.starts_with("{\"blob\"") {
            match serde_json::from_str::<Other>(&line).map_err(|e| bad(e.to_string()))? {
                Other::Tombstone(t) => {
                    tombs.push((t.seq, t.hash, t.vouched_by));
                    counts.tombstones += 1;
                }
                Other::Blob(b) => {
                    let d = store.put_blob(b.content.as_bytes())?;
                    if d != b.digest {
                        return Err(bad(format!("blob content hashes to {d}, not {}", b.digest)));
                    }
                    counts.blobs += 1;
                }
            }
        } else {
            let ev: EventLine = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
            records.push(parse_event(ev, n)?);
            counts.events += 1;
        }
        if records.len() + tombs.len() >= 10_000 {
            store.append_sealed(std::mem::take(&mut records), std::mem::take(&mut tombs))?;
            progress(counts.events);
        }
    }
    store.append_sealed(records, tombs)?;
    store.rebuild(&mut |_| {})?;
    store.close()?;
    progress(counts.events);
    Ok(counts)
}
