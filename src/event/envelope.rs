//! Owns the envelope: how one event is framed, versioned, hash-chained and turned into the exact
//! bytes stored in the log.
//!
//! Stored record = `canonical || hash`, where
//! `canonical = FORMAT_VERSION (1 byte) || bincode(EnvelopeBody)` and
//! `hash = SHA-256(prev_hash || canonical)` (32 bytes). The body itself contains `prev_hash`,
//! so a record can be verified on its own and linked to its predecessor.
//!
//! Two versions: the **format version** (this framing; a byte in front) and the **event schema
//! version** (`EnvelopeBody::schema`, the layout of [`Event`]). A reader refuses versions newer
//! than it knows; older schemas are upgraded on read (schema 1 → 2 added a variant at the end of [`Event`], so a
//! schema-1 body decodes as it is).

use super::{Digest, Event};
use crate::codec::{self, CodecError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub const FORMAT_VERSION: u8 = 1;
/// 2: [`Event::DriftAttributed`] (a variant appended at the end; schema-1 records decode
/// unchanged, so the upgrade on read is the identity). Older reckon refuses schema-2 records by
/// name instead of failing to decode the new variant.
/// 3: [`Event::DriftSuperseded`] and [`Event::ApplyBlocked`], appended the same way.
/// 4: [`Event::ObjectOrphaned`] and [`super::ApplyAction::Adopted`] (a value appended to the
/// `action` of `ObjectApplied`), appended the same way.
/// 5: [`Event::AppRenamed`] and [`Event::AppReset`] (App objects identified by namespace and
/// name, migration 0009), appended the same way.
/// 6: [`Event::ChartObserved`] (Apps following a chart repository, migration 0011), appended
/// the same way.
pub const EVENT_SCHEMA: u16 = 6;
const HASH_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("record of {len} bytes is too short to be an envelope")]
    TooShort { len: usize },
    #[error("unknown envelope format version {0} (this reckon reads {FORMAT_VERSION})")]
    UnknownFormat(u8),
    #[error("event schema {found} is newer than this reckon supports ({supported})")]
    NewerSchema { found: u16, supported: u16 },
    #[error("decoding the envelope body: {0}")]
    Decode(#[source] CodecError),
    #[error("encoding the envelope body: {0}")]
    Encode(#[source] CodecError),
    #[error("stored hash {stored} does not match the recomputed hash {computed}")]
    HashMismatch { stored: Digest, computed: Digest },
}

/// What a caller asks to append; the writer assigns sequence, time and chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draft {
    /// `None` for agent- or store-level events (AgentStarted, StoreMigrated, StoreGap).
    pub app: Option<String>,
    pub actor: Option<String>,
    pub event: Event,
}

impl Draft {
    pub fn new(app: Option<&str>, event: Event) -> Draft {
        Draft {
            app: app.map(str::to_owned),
            actor: None,
            event,
        }
    }

    pub fn by(mut self, actor: &str) -> Draft {
        self.actor = Some(actor.to_owned());
        self
    }
}

/// Field order is the stored order: never change it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeBody {
    pub schema: u16,
    pub seq: u64,
    /// When the store recorded the event (UTC, microseconds). The writer keeps it
    /// non-decreasing in sequence order, so time order is sequence order.
    #[serde(with = "codec::time")]
    pub time: DateTime<Utc>,
    pub app: Option<String>,
    pub actor: Option<String>,
    pub prev_hash: Digest,
    pub event: Event,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub body: EnvelopeBody,
    pub hash: Digest,
}

/// `SHA-256(prev_hash || canonical)`.
pub fn chain_hash(prev: &Digest, canonical: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update(prev.0);
    h.update(canonical);
    Digest(h.finalize().into())
}

impl Envelope {
    /// Frames and hashes a body; returns the envelope and the exact record bytes to store.
    pub fn seal(body: EnvelopeBody) -> Result<(Envelope, Vec<u8>), EnvelopeError> {
        let encoded = codec::encode(&body).map_err(EnvelopeError::Encode)?;
        let mut record = Vec::with_capacity(1 + encoded.len() + HASH_LEN);
        record.push(FORMAT_VERSION);
        record.extend_from_slice(&encoded);
        let hash = chain_hash(&body.prev_hash, &record);
        record.extend_from_slice(&hash.0);
        Ok((Envelope { body, hash }, record))
    }

    /// Parses a stored record and checks its own hash (not its link: that needs the predecessor).
    pub fn open(record: &[u8]) -> Result<Envelope, EnvelopeError> {
        if record.len() < 1 + HASH_LEN + 1 {
            return Err(EnvelopeError::TooShort { len: record.len() });
        }
        if record[0] != FORMAT_VERSION {
            return Err(EnvelopeError::UnknownFormat(record[0]));
        }
        let (canonical, stored) = record.split_at(record.len() - HASH_LEN);
        let stored = Digest(stored.try_into().expect("split at HASH_LEN"));
        // Peek at the schema before decoding the rest: a newer schema must be refused with that
        // message, not with whatever decoding error its unknown layout happens to cause.
        let schema: u16 =
            bincode::serde::decode_from_slice(&canonical[1..], bincode::config::standard())
                .map(|(s, _)| s)
                .unwrap_or(0);
        if schema > EVENT_SCHEMA {
            return Err(EnvelopeError::NewerSchema {
                found: schema,
                supported: EVENT_SCHEMA,
            });
        }
        let body: EnvelopeBody = codec::decode(&canonical[1..]).map_err(EnvelopeError::Decode)?;
        let computed = chain_hash(&body.prev_hash, canonical);
        if computed != stored {
            return Err(EnvelopeError::HashMismatch { stored, computed });
        }
        Ok(Envelope { body, hash: stored })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::samples;
    use crate::golden;

    fn body(event: Event, seq: u64) -> EnvelopeBody {
        EnvelopeBody {
            schema: EVENT_SCHEMA,
            seq,
            time: DateTime::from_timestamp_micros(1_764_000_000_000_001).unwrap(),
            app: Some("shop".into()),
            actor: Some("alice@example.com".into()),
            prev_hash: Digest([7; 32]),
            event,
        }
    }

    #[test]
    fn golden_bytes_for_every_event_kind() {
        let events = samples::all_events();
        let mut kinds: Vec<_> = events.iter().map(|e| e.kind()).collect();
        kinds.sort();
        kinds.dedup();
        assert_eq!(
            kinds.len(),
            crate::event::EventKind::ALL.len(),
            "a sample per kind"
        );
        let entries = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let name = format!("{}#{i}", e.kind());
                let (_, record) = Envelope::seal(body(e, 42)).unwrap();
                (name, record)
            })
            .collect();
        golden::check("envelopes", entries);
    }

    /// The envelopes of every sample as an older event schema wrote them (the golden file of
    /// the release before the next schema, kept as it was): they still open, say their schema,
    /// and decode to the same events.
    fn older_schema_records_still_open(file: &str, schema: u16, kinds: usize) {
        let path = format!("{}/tests/golden/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).unwrap();
        let samples = samples::all_events();
        let mut opened = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (name, hex) = line.split_once(' ').unwrap();
            let i: usize = name.split_once('#').unwrap().1.parse().unwrap();
            let env = Envelope::open(&hex::decode(hex).unwrap()).unwrap();
            assert_eq!(env.body.schema, schema, "{name}");
            assert_eq!(env.body.event, samples[i], "{name}");
            assert_eq!(
                env.body.event.kind().name(),
                name.split_once('#').unwrap().0
            );
            opened += 1;
        }
        let distinct: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.split_once('#').map(|(k, _)| k))
            .collect();
        assert_eq!(distinct.len(), kinds, "every schema-{schema} kind");
        assert!(opened >= kinds);
    }

    #[test]
    fn schema_1_records_still_open() {
        older_schema_records_still_open("envelopes-schema1.hex", 1, 23);
    }

    #[test]
    fn schema_2_records_still_open() {
        older_schema_records_still_open("envelopes-schema2.hex", 2, 24);
    }

    #[test]
    fn schema_3_records_still_open() {
        older_schema_records_still_open("envelopes-schema3.hex", 3, 26);
    }

    #[test]
    fn schema_4_records_still_open() {
        older_schema_records_still_open("envelopes-schema4.hex", 4, 27);
    }

    #[test]
    fn schema_5_records_still_open() {
        older_schema_records_still_open("envelopes-schema5.hex", 5, 29);
    }

    #[test]
    fn seal_open_round_trip_and_hash_definition() {
        for e in samples::all_events() {
            let (env, record) = Envelope::seal(body(e, 9)).unwrap();
            assert_eq!(record[0], FORMAT_VERSION);
            let canonical = &record[..record.len() - 32];
            let mut h = Sha256::new();
            h.update([7u8; 32]);
            h.update(canonical);
            assert_eq!(env.hash.0, <[u8; 32]>::from(h.finalize()));
            assert_eq!(Envelope::open(&record).unwrap(), env);
        }
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let (_, record) = Envelope::seal(body(samples::all_events().remove(7), 1)).unwrap();
        for i in 0..record.len() {
            let mut bad = record.clone();
            bad[i] ^= 0x01;
            assert!(
                Envelope::open(&bad).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn newer_versions_are_refused_by_name() {
        let (_, mut record) = Envelope::seal(body(samples::all_events().remove(0), 1)).unwrap();
        record[0] = FORMAT_VERSION + 1;
        assert!(matches!(
            Envelope::open(&record),
            Err(EnvelopeError::UnknownFormat(2))
        ));
        let mut b = body(samples::all_events().remove(0), 1);
        b.schema = EVENT_SCHEMA + 1;
        let (_, record) = Envelope::seal(b).unwrap();
        assert!(matches!(
            Envelope::open(&record),
            Err(EnvelopeError::NewerSchema { found: 7, .. })
        ));
        assert!(matches!(
            Envelope::open(&[1, 2, 3]),
            Err(EnvelopeError::TooShort { len: 3 })
        ));
    }
}
