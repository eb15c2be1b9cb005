//! Owns the blob encoding: canonical rendered manifests, their SHA-256 address, and the
//! compressed form stored in the `blobs` tree.
//!
//! Canonical form (what the digest is over): the objects sorted by
//! `(apiVersion, kind, namespace, name)`, each written as compact JSON with object keys sorted
//! bytewise, joined by `\n`. Two renders that differ only in document or key order share a blob.
//! Stored value: `codec byte (1 = lz4 block, uncompressed size prepended) · data`.

use crate::event::Digest;
use serde_json::Value;

pub const CODEC_LZ4: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("unknown blob codec {0}")]
    UnknownCodec(u8),
    #[error("empty blob record")]
    Empty,
    #[error("decompressing: {0}")]
    Decompress(#[from] lz4_flex::block::DecompressError),
    #[error("content hashes to {computed}, stored under {address}")]
    Mismatch { address: Digest, computed: Digest },
}

/// The canonical bytes of a rendered manifest set.
pub fn canonical(objects: &[Value]) -> Vec<u8> {
    let ident = |v: &Value| {
        let s = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        (
            s("/apiVersion"),
            s("/kind"),
            s("/metadata/namespace"),
            s("/metadata/name"),
        )
    };
    let mut sorted: Vec<&Value> = objects.iter().collect();
    sorted.sort_by_cached_key(|v| ident(v));
    let mut out = Vec::new();
    for (i, v) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        write_canonical(v, &mut out);
    }
    out
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            // Sorted explicitly: serde_json's map order depends on a feature flag that any crate
            // in the build can turn on.
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(
                    serde_json::to_string(k)
                        .expect("string serialises")
                        .as_bytes(),
                );
                out.push(b':');
                write_canonical(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(x, out);
            }
            out.push(b']');
        }
        scalar => out.extend(
            serde_json::to_string(scalar)
                .expect("scalar serialises")
                .as_bytes(),
        ),
    }
}

pub fn compress(content: &[u8]) -> Vec<u8> {
    let mut out = vec![CODEC_LZ4];
    out.extend(lz4_flex::compress_prepend_size(content));
    out
}

/// Decompresses and checks the content against its address.
pub fn decompress(address: &Digest, stored: &[u8]) -> Result<Vec<u8>, BlobError> {
    let (&codec, data) = stored.split_first().ok_or(BlobError::Empty)?;
    if codec != CODEC_LZ4 {
        return Err(BlobError::UnknownCodec(codec));
    }
    let content = lz4_flex::decompress_size_prepended(data)?;
    let computed = Digest::of(&content);
    if computed != *address {
        return Err(BlobError::Mismatch {
            address: *address,
            computed,
        });
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn objs() -> Vec<Value> {
        vec![
            json!({"kind":"Service","apiVersion":"v1","metadata":{"name":"web","namespace":"a"},"spec":{"ports":[{"port":80}]}}),
            json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"namespace":"a","name":"web"},"spec":{"replicas":3}}),
        ]
    }

    #[test]
    fn canonical_ignores_document_and_key_order() {
        let a = canonical(&objs());
        let mut rev = objs();
        rev.reverse();
        assert_eq!(canonical(&rev), a);
        assert_eq!(
            String::from_utf8(a).unwrap(),
            "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"name\":\"web\",\"namespace\":\"a\"},\"spec\":{\"replicas\":3}}\n\
             {\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\",\"namespace\":\"a\"},\"spec\":{\"ports\":[{\"port\":80}]}}"
        );
    }

    #[test]
    fn compress_round_trip_checks_the_address() {
        let c = canonical(&objs());
        let d = Digest::of(&c);
        let stored = compress(&c);
        assert_eq!(decompress(&d, &stored).unwrap(), c);
        assert!(matches!(
            decompress(&Digest::ZERO, &stored),
            Err(BlobError::Mismatch { .. })
        ));
        assert!(matches!(
            decompress(&d, &[7, 1]),
            Err(BlobError::UnknownCodec(7))
        ));
        crate::golden::check("blobs", vec![("two-objects".into(), stored)]);
    }
}
