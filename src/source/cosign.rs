//! Owns what a cosign signature on an OCI chart proves, checked against the ECDSA P-256 public
//! keys an App trusts (`cosign generate-key-pair`'s `cosign.pub`), in both forms cosign stores:
//!
//! - a Sigstore bundle (v0.3, cosign 3's default): an OCI referrer of the chart's manifest (found
//!   through the referrers API, or the `sha256-<hex>` tag where the registry has none) whose layer
//!   is a DSSE envelope over an in-toto statement naming the manifest's digest;
//! - the older simple signing (cosign 2, or 3 with `--new-bundle-format=false`): the tag
//!   `sha256-<hex>.sig`, one payload per layer naming the manifest's digest, its signature in the
//!   layer's `dev.cosignproject.cosign/signature` annotation.
//!
//! The decisions are pure: which payload names which manifest, whether a signature verifies under
//! a key. Finding the signatures in the registry is [`super::chart_oci`]'s.
//!
//! Not verified here: keyless signatures (Fulcio certificates, Rekor inclusion proofs); a chart
//! signed only that way is `Untrusted` to this check.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::path::Path;
use x509_parser::prelude::FromDer;

/// The layer media type of a cosign simple-signing payload.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature over the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// A payload larger than this is not a simple-signing payload (they are a few hundred bytes).
pub const PAYLOAD_BYTES: u64 = 64 << 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CosignError {
    #[error("cosign public key {path}: {reason}")]
    Key { path: String, reason: String },
}

/// A public key an App trusts, with the fingerprint recorded when it verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The EC point (uncompressed SEC1), as the verifier takes it.
    point: Vec<u8>,
    /// `sha256:` of the key's SubjectPublicKeyInfo (DER), which names it in the record.
    pub fingerprint: String,
}

impl PublicKey {
    /// Reads a PEM `PUBLIC KEY` (cosign's `cosign.pub`) holding an ECDSA P-256 key.
    pub fn from_pem(path: &Path, pem: &[u8]) -> Result<PublicKey, CosignError> {
        let refuse = |reason: String| CosignError::Key {
            path: path.display().to_string(),
            reason,
        };
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(pem).map_err(|e| refuse(format!("not PEM: {e}")))?;
        if pem.label != "PUBLIC KEY" {
            return Err(refuse(format!("a {:?} block, not a PUBLIC KEY", pem.label)));
        }
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&pem.contents)
            .map_err(|e| refuse(format!("not a public key: {e}")))?;
        const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
        const P256: &str = "1.2.840.10045.3.1.7";
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|oid| oid.to_id_string());
        if spki.algorithm.algorithm.to_id_string() != EC_PUBLIC_KEY
            || curve.as_deref() != Some(P256)
        {
            return Err(refuse(
                "only ECDSA P-256 keys are supported (cosign generate-key-pair makes them)".into(),
            ));
        }
        Ok(PublicKey {
            point: spki.subject_public_key.data.to_vec(),
            fingerprint: format!("sha256:{}", hex::encode(Sha256::digest(&pem.contents))),
        })
    }
}

/// The artifact type (and layer media type) of a Sigstore bundle stored as an OCI referrer.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// A bundle larger than this is not a key-signed bundle (they are under a kilobyte).
pub const BUNDLE_BYTES: u64 = 256 << 10;

/// One signature found for a manifest, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundSignature {
    /// A `.sig` layer: the payload blob and the annotation's base64 signature.
    SimpleSigning { payload: Vec<u8>, signature: String },
    /// A Sigstore bundle's JSON.
    Bundle(Vec<u8>),
}

/// What checking a chart's signatures found; recorded with the chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CosignStatus {
    /// The policy is `off`.
    NotChecked,
    /// No `sha256-<hex>.sig` manifest, or none of its layers is a simple-signing payload.
    Unsigned,
    /// A payload naming this manifest, signed by `key` (its fingerprint).
    Verified { key: String },
    /// Signatures exist for this manifest, but none by a trusted key.
    Untrusted { detail: String },
    /// Every signature found names another manifest or is not a cosign payload.
    Invalid { detail: String },
}

/// The tag cosign stores a manifest's signatures under: `sha256:<hex>` → `sha256-<hex>.sig`.
pub fn signature_tag(manifest_digest: &str) -> String {
    format!("{}.sig", manifest_digest.replacen(':', "-", 1))
}

/// The result for `manifest_digest` given every signature found beside it. Pure.
pub fn check(manifest_digest: &str, found: &[FoundSignature], keys: &[PublicKey]) -> CosignStatus {
    if found.is_empty() {
        return CosignStatus::Unsigned;
    }
    let mut problems: Vec<String> = Vec::new();
    let mut for_this_manifest = 0;
    for sig in found {
        let signed = match sig {
            FoundSignature::SimpleSigning { payload, signature } => {
                simple_signing(payload, signature)
            }
            FoundSignature::Bundle(json) => bundle(json),
        };
        let Signed {
            digest,
            message,
            signatures,
        } = match signed {
            Err(problem) => {
                problems.push(problem);
                continue;
            }
            Ok(signed) => signed,
        };
        if digest != manifest_digest {
            problems.push(format!(
                "a signature is over {digest}, not {manifest_digest}"
            ));
            continue;
        }
        for_this_manifest += 1;
        if let Some(key) = keys.iter().find(|k| {
            signatures.iter().any(|raw| {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &k.point)
                    .verify(&message, raw)
                    .is_ok()
            })
        }) {
            return CosignStatus::Verified {
                key: key.fingerprint.clone(),
            };
        }
    }
    if for_this_manifest > 0 {
        let detail = if keys.is_empty() {
            format!("{for_this_manifest} signature(s), and no public keys are configured")
        } else {
            format!(
                "{for_this_manifest} signature(s), none by the {} configured key(s)",
                keys.len()
            )
        };
        return CosignStatus::Untrusted { detail };
    }
    CosignStatus::Invalid {
        detail: problems.join("; "),
    }
}

fn base64(text: &str, what: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| format!("{what} is not base64"))
}

/// What one stored signature claims: the manifest it names, the bytes signed, the signatures.
struct Signed {
    digest: String,
    message: Vec<u8>,
    signatures: Vec<Vec<u8>>,
}

/// A simple-signing payload's manifest digest and its one signature.
fn simple_signing(payload: &[u8], signature: &str) -> Result<Signed, String> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("a payload is not JSON: {e}"))?;
    let critical = &value["critical"];
    if critical["type"].as_str() != Some("cosign container image signature") {
        return Err("a payload is not a cosign container image signature".into());
    }
    let digest = critical["image"]["docker-manifest-digest"]
        .as_str()
        .ok_or("a payload names no manifest digest")?;
    Ok(Signed {
        digest: digest.to_string(),
        message: payload.to_vec(),
        signatures: vec![base64(signature, "a signature annotation")?],
    })
}

/// A bundle's signed subject (`sha256:<hex>`), the bytes its signatures are over (DSSE's
/// pre-authentication encoding of the envelope's payload) and its signatures.
fn bundle(json: &[u8]) -> Result<Signed, String> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("a bundle is not JSON: {e}"))?;
    let envelope = &value["dsseEnvelope"];
    let (Some(payload), Some(payload_type)) = (
        envelope["payload"].as_str(),
        envelope["payloadType"].as_str(),
    ) else {
        return Err("a bundle holds no DSSE envelope (not an image signature)".into());
    };
    let payload = base64(payload, "a bundle's payload")?;
    let statement: serde_json::Value = serde_json::from_slice(&payload)
        .map_err(|e| format!("a bundle's statement is not JSON: {e}"))?;
    if payload_type != "application/vnd.in-toto+json"
        || statement["predicateType"].as_str() != Some("https://sigstore.dev/cosign/sign/v1")
    {
        return Err("a bundle is not a cosign image signature".into());
    }
    let subjects = statement["subject"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let [subject] = subjects else {
        return Err(format!(
            "a bundle's statement names {} subjects, not one",
            subjects.len()
        ));
    };
    let hex = subject["digest"]["sha256"]
        .as_str()
        .ok_or("a bundle's subject has no sha256 digest")?;
    let signatures = envelope["signatures"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s["sig"].as_str())
        .map(|s| base64(s, "a bundle's signature"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Signed {
        digest: format!("sha256:{hex}"),
        message: pae(payload_type, &payload),
        signatures,
    })
}

/// DSSE's pre-authentication encoding: what a DSSE signature is over.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    /// A key pair made here, standing in for `cosign generate-key-pair` (the live test uses the
    /// real cosign), and its public half as a [`PublicKey`].
    fn key() -> (EcdsaKeyPair, PublicKey) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let public = PublicKey {
            fingerprint: format!("sha256:{}", hex::encode(Sha256::digest(&point))),
            point,
        };
        (pair, public)
    }

    fn payload(digest: &str) -> Vec<u8> {
        serde_json::json!({
            "critical": {
                "identity": {"docker-reference": "127.0.0.1:5000/charts/web"},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature"
            },
            "optional": null
        })
        .to_string()
        .into_bytes()
    }

    fn signed(pair: &EcdsaKeyPair, payload: Vec<u8>) -> FoundSignature {
        let sig = pair.sign(&SystemRandom::new(), &payload).unwrap();
        FoundSignature::SimpleSigning {
            payload,
            signature: base64::engine::general_purpose::STANDARD.encode(sig.as_ref()),
        }
    }

    /// A cosign 3 bundle: a DSSE envelope over an in-toto statement naming `digest`.
    fn bundle_for(pair: &EcdsaKeyPair, digest: &str) -> FoundSignature {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let statement = format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1", "subject":[{{"digest":{{"sha256":"{hex}"}}, "annotations":{{}}}}], "predicateType":"https://sigstore.dev/cosign/sign/v1", "predicate":{{}}}}"#
        );
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let sig = pair
            .sign(
                &SystemRandom::new(),
                &pae("application/vnd.in-toto+json", statement.as_bytes()),
            )
            .unwrap();
        FoundSignature::Bundle(
            serde_json::json!({
                "mediaType": BUNDLE_MEDIA_TYPE,
                "verificationMaterial": {"publicKey": {"hint": "x"}},
                "dsseEnvelope": {
                    "payload": b64(statement.as_bytes()),
                    "payloadType": "application/vnd.in-toto+json",
                    "signatures": [{"sig": b64(sig.as_ref())}]
                }
            })
            .to_string()
            .into_bytes(),
        )
    }

    #[test]
    fn a_bundle_by_a_trusted_key_over_this_manifest_verifies_and_nowhere_else() {
        let (pair, public) = key();
        let found = [bundle_for(&pair, DIGEST)];
        assert_eq!(
            check(DIGEST, &found, std::slice::from_ref(&public)),
            CosignStatus::Verified {
                key: public.fingerprint.clone()
            }
        );
        let CosignStatus::Invalid { detail } = check(OTHER, &found, std::slice::from_ref(&public))
        else {
            panic!("a bundle over another manifest is invalid here");
        };
        assert!(
            detail.contains(&format!("over {DIGEST}, not {OTHER}")),
            "{detail}"
        );
        // The statement swapped for one naming OTHER after signing: the signature fails.
        let FoundSignature::Bundle(json) = bundle_for(&pair, DIGEST) else {
            unreachable!()
        };
        let FoundSignature::Bundle(other) = bundle_for(&pair, OTHER) else {
            unreachable!()
        };
        let mut forged: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let other: serde_json::Value = serde_json::from_slice(&other).unwrap();
        forged["dsseEnvelope"]["payload"] = other["dsseEnvelope"]["payload"].clone();
        let forged = FoundSignature::Bundle(forged.to_string().into_bytes());
        assert!(matches!(
            check(OTHER, &[forged], &[public]),
            CosignStatus::Untrusted { .. }
        ));
    }

    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const OTHER: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn a_signature_by_a_trusted_key_over_this_manifest_verifies() {
        let (pair, public) = key();
        let (_, stranger) = key();
        let found = [signed(&pair, payload(DIGEST))];
        assert_eq!(
            check(DIGEST, &found, &[stranger.clone(), public.clone()]),
            CosignStatus::Verified {
                key: public.fingerprint.clone()
            }
        );
        assert!(matches!(
            check(DIGEST, &found, &[stranger]),
            CosignStatus::Untrusted { .. }
        ));
        assert_eq!(
            check(DIGEST, &found, &[]),
            CosignStatus::Untrusted {
                detail: "1 signature(s), and no public keys are configured".into()
            }
        );
        assert_eq!(check(DIGEST, &[], &[public]), CosignStatus::Unsigned);
    }

    #[test]
    fn a_signature_moved_to_another_manifest_or_a_changed_payload_does_not_verify() {
        let (pair, public) = key();
        // Copied beside another chart: the payload still names the first.
        let moved = [signed(&pair, payload(DIGEST))];
        let CosignStatus::Invalid { detail } = check(OTHER, &moved, std::slice::from_ref(&public))
        else {
            panic!("a signature over another manifest is invalid here");
        };
        assert!(
            detail.contains(&format!("over {DIGEST}, not {OTHER}")),
            "{detail}"
        );
        // The payload edited to name this manifest after signing: the signature fails.
        let FoundSignature::SimpleSigning { signature, .. } = signed(&pair, payload(OTHER)) else {
            unreachable!()
        };
        let edited = FoundSignature::SimpleSigning {
            payload: payload(DIGEST),
            signature,
        };
        assert!(matches!(
            check(DIGEST, &[edited], std::slice::from_ref(&public)),
            CosignStatus::Untrusted { .. }
        ));
        let junk = FoundSignature::SimpleSigning {
            payload: b"{\"critical\":{}}".to_vec(),
            signature: "AAAA".into(),
        };
        assert!(matches!(
            check(DIGEST, &[junk], &[public]),
            CosignStatus::Invalid { .. }
        ));
    }

    #[test]
    fn the_signature_tag_is_cosigns() {
        assert_eq!(signature_tag("sha256:abc"), "sha256-abc.sig");
    }

    #[test]
    fn only_an_ecdsa_p256_public_key_pem_is_taken() {
        let path = Path::new("cosign.pub");
        let err = PublicKey::from_pem(path, b"not pem").unwrap_err();
        assert!(err.to_string().contains("not PEM"), "{err}");
        // An Ed25519 key (OID 1.3.101.112) in SubjectPublicKeyInfo form.
        let ed25519 = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        let err = PublicKey::from_pem(path, ed25519.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("only ECDSA P-256"), "{err}");
        let p256 = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEVs/o5+uQbTjL3chynL4wXgUg2R9\nq9UU8I5mEovUf86QZ7kOBIjJwqnzD1omageEHWwHdBO6B+dFabmdT9POxg==\n-----END PUBLIC KEY-----\n";
        let key = PublicKey::from_pem(path, p256.as_bytes()).unwrap();
        assert_eq!(key.point.len(), 65, "an uncompressed P-256 point");
        assert!(key.fingerprint.starts_with("sha256:"));
    }
}
