//! Owns the one binary encoding of everything reckon stores: a single bincode configuration and the
//! serde helpers that make stored types read well as JSON too.
//!
//! bincode is not self-describing, so the configuration is part of the on-disk format: it is
//! defined once here and every stored byte goes through [`encode`] / [`decode`]. We use
//! `bincode::config::standard()`: little-endian, **variable-length integers** (LEB-style varint as
//! bincode defines it), no size limit. Varints keep sequence numbers, counts and lengths to one or
//! two bytes, which is most of what an event is made of (bytes per event is a budget). Changing
//! this configuration is a format change and fails the golden-bytes tests.

use serde::{Serialize, de::DeserializeOwned};

const CONFIG: bincode::config::Configuration = bincode::config::standard();

/// Most a decode may claim for the containers it reads (strings, byte strings, sequences),
/// checked before each is allocated. Without it a corrupt length prefix is allocated as given,
/// and an allocation of a terabyte aborts the process. Far above anything reckon stores (a
/// recorded set is bounded by `limits.bytes_per_render`, 64 MiB by default); not part of the
/// format: nothing encoded changes.
const DECODE_LIMIT: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encoding failed: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("decoding failed: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// A record that decodes but leaves bytes over was written by a different layout; reading it
    /// as if it were ours would silently yield wrong data.
    #[error("decoding left {left} trailing byte(s) of {total}")]
    TrailingBytes { left: usize, total: usize },
}

/// Encodes with the store's single bincode configuration.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, CONFIG)?)
}

/// Decodes with the store's single bincode configuration; the whole slice must be consumed.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, CONFIG.with_limit::<DECODE_LIMIT>())?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes {
            left: bytes.len() - used,
            total: bytes.len(),
        });
    }
    Ok(value)
}

/// UTC timestamps: microseconds since the epoch (i64 varint) in binary, RFC 3339 with microseconds
/// in JSON. Microseconds are the stored precision, so a JSON round trip is lossless and an
/// imported store hashes exactly like the original.
pub mod time {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
        } else {
            s.serialize_i64(t.timestamp_micros())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(D::Error::custom)
        } else {
            let micros = i64::deserialize(d)?;
            DateTime::from_timestamp_micros(micros)
                .ok_or_else(|| D::Error::custom(format!("timestamp {micros}us out of range")))
        }
    }

    /// Truncates to the stored precision, so that what a caller holds equals what it reads back.
    pub fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
    }
}

/// `Option<DateTime<Utc>>` with the encoding of [`time`].
pub mod time_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct W(#[serde(with = "super::time")] DateTime<Utc>);

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        t.map(W).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}

/// Byte strings: raw (length-prefixed) in binary, lowercase hex in JSON.
pub mod bytes {
    use serde::{Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(b))
        } else {
            s.serialize_bytes(b)
        }
    }

    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("bytes or a hex string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            hex::decode(v).map_err(E::custom)
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            d.deserialize_str(V)
        } else {
            d.deserialize_byte_buf(V)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct T {
        #[serde(with = "time")]
        at: DateTime<Utc>,
        #[serde(with = "bytes")]
        b: Vec<u8>,
        n: u64,
    }

    fn sample() -> T {
        T {
            at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            b: vec![0, 255, 7],
            n: 300,
        }
    }

    /// Found by the `event_envelope` fuzz target: a record whose length prefix claims about a
    /// terabyte made decoding allocate it up front, and the allocation failure aborted the
    /// process. A corrupt record must be an error like any other.
    #[test]
    fn a_length_prefix_beyond_the_decode_limit_is_an_error_not_an_allocation() {
        let record = include_bytes!("../tests/fixtures/fuzz/event_envelope-huge-length");
        assert!(decode::<crate::event::EnvelopeBody>(record).is_err());
        assert!(crate::event::Envelope::open(record).is_err());
        // A string whose length prefix (a u64 varint: marker 253, then 8 bytes) says 1 TiB.
        let mut huge = vec![253];
        huge.extend_from_slice(&(1u64 << 40).to_le_bytes());
        huge.extend_from_slice(b"abc");
        let err = decode::<String>(&huge).unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::Decode(bincode::error::DecodeError::LimitExceeded)
            ),
            "{err}"
        );
        // A length far past what is left of the input, below the limit: refused too.
        let mut short = encode(&String::from("abc")).unwrap();
        short[0] = 200;
        assert!(decode::<String>(&short).is_err());
    }

    #[test]
    fn config_is_varint_little_endian() {
        // 300 as a varint is 251 (u16 marker) followed by 300 little-endian; a fixed-int config
        // would produce 8 bytes. This pins the configuration, not just the round trip.
        assert_eq!(encode(&300u64).unwrap(), vec![251, 0x2c, 0x01]);
        assert_eq!(encode(&7u64).unwrap(), vec![7]);
    }

    #[test]
    fn binary_and_json_round_trip() {
        let t = sample();
        let bin = encode(&t).unwrap();
        assert_eq!(decode::<T>(&bin).unwrap(), t);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(
            json,
            r#"{"at":"2023-11-14T22:13:20.123456Z","b":"00ff07","n":300}"#
        );
        assert_eq!(serde_json::from_str::<T>(&json).unwrap(), t);
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut bin = encode(&sample()).unwrap();
        bin.push(0);
        assert!(matches!(
            decode::<T>(&bin),
            Err(CodecError::TrailingBytes { left: 1, .. })
        ));
    }
}
