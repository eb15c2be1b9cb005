//! Owns [`Digest`], the typed SHA-256 every stage names content by: event hashes, blob
//! addresses, rendered sets and objects. Stored as its 32 bytes (the codec's byte form); shown
//! to people and in JSON outputs of the planner as `sha256:<hex>` ([`Digest::prefixed`],
//! [`prefixed`]).

use crate::codec;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;

/// A SHA-256 digest: event hashes, rendered-manifest (blob) addresses, per-object digests.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub const ZERO: Digest = Digest([0; 32]);

    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Digest> {
        let v = hex::decode(s).ok()?;
        Some(Digest(v.try_into().ok()?))
    }

    /// `sha256:<hex>`: the text form rendered objects' digests have always had (the planner's
    /// JSON output, the lines a rendered set's digest is computed over).
    pub fn prefixed(&self) -> String {
        format!("{PREFIX}{}", self.to_hex())
    }
}

/// The algorithm prefix of [`Digest::prefixed`].
pub const PREFIX: &str = "sha256:";

/// Serde for fields whose JSON has always been the `sha256:<hex>` text (the planner's actions
/// and the executor's outcomes): `#[serde(serialize_with = "prefixed::serialize")]`. Only
/// serialisation: nothing reads these back.
pub mod prefixed {
    use super::Digest;

    pub fn serialize<S: serde::Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}{}", super::PREFIX, d.to_hex()))
    }

    /// The same for an optional digest (`null` when absent).
    pub fn serialize_option<S: serde::Serializer>(
        d: &Option<Digest>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        codec::bytes::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = codec::bytes::deserialize(d)?;
        let n = v.len();
        v.try_into()
            .map(Digest)
            .map_err(|_| serde::de::Error::custom(format!("digest of {n} bytes, expected 32")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_is_prefixed_hex_and_the_stored_form_its_bytes() {
        let d = Digest::of(b"abc");
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(d.prefixed(), format!("sha256:{hex}"));
        #[derive(Serialize)]
        struct Out {
            #[serde(serialize_with = "prefixed::serialize")]
            d: Digest,
            #[serde(serialize_with = "prefixed::serialize_option")]
            some: Option<Digest>,
            #[serde(serialize_with = "prefixed::serialize_option")]
            none: Option<Digest>,
        }
        let out = Out {
            d,
            some: Some(d),
            none: None,
        };
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            serde_json::json!({"d": format!("sha256:{hex}"), "some": format!("sha256:{hex}"), "none": null})
        );
        assert_eq!(codec::encode(&d).unwrap()[1..], d.0);
    }
}
