//! Owns canonical JSON, content digests, the storable (secret-free) form of manifests, and the
//! sealed form of Secret values kept in the blob store so a rollback can restore them.
//!
//! Canonical JSON is written here rather than by `serde_json::to_string` because key order in
//! `serde_json::Map` depends on a crate feature (`preserve_order`) any dependency may switch on;
//! a digest must not change because of an unrelated dependency.

use crate::model::Digest;
use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::fmt;

/// Prefix of a keyed hash that replaced a Secret value.
pub const HASH_PREFIX: &str = "hmac-sha256:";

/// The agent's key for keyed hashes of Secret values. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// `hmac-sha256:<hex>` of `message` under the key derived for `purpose`: a digest of
    /// something secret that only this agent's key can reproduce.
    pub fn keyed_hash(&self, purpose: &str, message: &[u8]) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.derive(purpose)).expect("any key size");
        mac.update(message);
        format!("{HASH_PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// A key for one purpose, derived from the agent's key (HMAC-SHA256 over the purpose), so the
    /// keyed hashes and the sealing cipher never share key material.
    fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key size");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// Prefix of a Secret value sealed for the blob store: base64 of `nonce (12) || ciphertext`.
pub const SEALED_PREFIX: &str = "sealed-aes256gcmsiv:";

/// Purposes of the derived keys (versioned: a new scheme gets a new purpose and prefix).
const SEAL_KEY_PURPOSE: &str = "reckon secret seal key v1";
const SEAL_NONCE_PURPOSE: &str = "reckon secret seal nonce v1";

/// Why a stored Secret could not be opened back into the manifest to apply.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Recorded by a reckon before sealing (0.1 stored keyed hashes only): the value is gone.
    #[error(
        "{field}.{key} is stored as a keyed hash only (recorded by an older reckon), so its value \
         cannot be restored from the store"
    )]
    HashedOnly { field: String, key: String },
    #[error("{field}.{key} does not open with this agent's key ({reason}); was the key replaced?")]
    Open {
        field: String,
        key: String,
        reason: String,
    },
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// JSON with object keys sorted by their UTF-8 bytes, no insignificant whitespace, strings and
/// numbers as serde_json writes them.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Digest of one manifest: SHA-256 over the canonical JSON of its storable form, so a
/// Secret's digest depends on its values only through keyed hashes.
pub fn object_digest(manifest: &Value, key: &SecretKey) -> Digest {
    Digest::of(canonical_json(&storable_object(manifest, key)).as_bytes())
}

/// Digest of a set of objects: [`set_digest`] over their digests' text form (`sha256:<hex>`,
/// the form the set digest has always been computed over).
pub fn set_digest_of<'a>(digests: impl IntoIterator<Item = &'a Digest>) -> Digest {
    let lines: Vec<String> = digests.into_iter().map(Digest::prefixed).collect();
    set_digest(lines.iter().map(String::as_str))
}

/// Digest of a set: SHA-256 over the sorted lines (object digests), one per line. Each object
/// digest covers its identity, so sorting them is a canonical order independent of file order.
pub fn set_digest<'a>(lines: impl IntoIterator<Item = &'a str>) -> Digest {
    let mut lines: Vec<&str> = lines.into_iter().collect();
    lines.sort_unstable();
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    Digest::of(text.as_bytes())
}

fn is_secret(manifest: &Value) -> bool {
    manifest.get("kind").and_then(Value::as_str) == Some("Secret")
        && manifest.get("apiVersion").and_then(Value::as_str) == Some("v1")
}

/// Keyed hash of one Secret value. `data` values are hashed decoded, so `data` and `stringData`
/// with the same content hash alike; the data key is part of the input so that equal values
/// under different keys do not reveal that they are equal.
fn keyed_hash(key: &SecretKey, data_key: &str, value: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.0).expect("HMAC takes any key size");
    mac.update(data_key.as_bytes());
    mac.update(&[0]);
    mac.update(value);
    format!("{HASH_PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

fn hash_values(map: &mut serde_json::Map<String, Value>, key: &SecretKey, base64_encoded: bool) {
    for (data_key, value) in map.iter_mut() {
        let hashed = match &*value {
            // Already storable: `:` is not in the base64 alphabet, so no real `data` value
            // looks like this, and hashing is idempotent.
            Value::String(text) if base64_encoded && text.starts_with(HASH_PREFIX) => continue,
            Value::String(text) => {
                let decoded = if base64_encoded {
                    base64::engine::general_purpose::STANDARD.decode(text).ok()
                } else {
                    None
                };
                let bytes = decoded.as_deref().unwrap_or(text.as_bytes());
                keyed_hash(key, data_key, bytes)
            }
            // Not a valid Secret value; hash its JSON so nothing of it is kept either.
            other => keyed_hash(key, data_key, other.to_string().as_bytes()),
        };
        *value = Value::String(hashed);
    }
}

/// The form of one manifest that may be logged and stored: for a core `v1` Secret, every
/// `data`/`stringData` value replaced by a keyed hash and the
/// `kubectl.kubernetes.io/last-applied-configuration` annotation (a plain copy) removed;
/// anything else unchanged. Apply the same function to a live Secret before comparing it with
/// a stored one.
pub fn storable_object(manifest: &Value, key: &SecretKey) -> Value {
    let mut out = manifest.clone();
    if !is_secret(manifest) {
        return out;
    }
    if let Some(Value::Object(data)) = out.get_mut("data") {
        hash_values(data, key, true);
    }
    if let Some(Value::Object(data)) = out.get_mut("stringData") {
        hash_values(data, key, false);
    }
    if let Some(Value::Object(annotations)) = out.pointer_mut("/metadata/annotations") {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    out
}

/// Deterministic authenticated encryption of one Secret value (AES-256-GCM-SIV). The plaintext
/// is the value's exact JSON, so it opens to exactly what was rendered; the associated data binds
/// it to its field and key. The nonce is synthetic (a keyed hash of field, key and plaintext):
/// the same render seals to the same bytes, so the set keeps one blob address, and GCM-SIV stays
/// safe with it.
fn seal_value(cipher: &Aes256GcmSiv, nonce_key: &[u8; 32], aad: &str, value: &Value) -> String {
    let plain = canonical_json(value);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(nonce_key).expect("any key size");
    mac.update(aad.as_bytes());
    mac.update(&[0]);
    mac.update(plain.as_bytes());
    let nonce_bytes = mac.finalize().into_bytes();
    let nonce = Nonce::from_slice(&nonce_bytes[..12]);
    let sealed = cipher
        .encrypt(
            nonce,
            Payload {
                msg: plain.as_bytes(),
                aad: aad.as_bytes(),
            },
        )
        .expect("AES-GCM-SIV encrypts any message under 64 GiB");
    let mut out = nonce.to_vec();
    out.extend(sealed);
    format!(
        "{SEALED_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(out)
    )
}

fn open_value(cipher: &Aes256GcmSiv, aad: &str, text: &str) -> Result<Value, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("not base64: {e}"))?;
    if bytes.len() < 12 {
        return Err("too short".into());
    }
    let (nonce, sealed) = bytes.split_at(12);
    let plain = cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| "authentication failed".to_string())?;
    serde_json::from_slice(&plain).map_err(|e| format!("not JSON: {e}"))
}

fn cipher(key: &SecretKey) -> Aes256GcmSiv {
    Aes256GcmSiv::new(&key.derive(SEAL_KEY_PURPOSE).into())
}

const SECRET_FIELDS: [&str; 2] = ["data", "stringData"];

/// The form of one manifest kept in a revision's rendered set (the blob a rollback applies):
/// for a core `v1` Secret, every `data`/`stringData` value sealed under the agent's key and the
/// `last-applied-configuration` annotation (a plain copy) removed; anything else unchanged.
/// Never plain text; [`open_sealed`] turns it back into the manifest to apply.
pub fn sealed_object(manifest: &Value, key: &SecretKey) -> Value {
    let mut out = manifest.clone();
    if !is_secret(manifest) {
        return out;
    }
    let cipher = cipher(key);
    let nonce_key = key.derive(SEAL_NONCE_PURPOSE);
    for field in SECRET_FIELDS {
        if let Some(Value::Object(data)) = out.get_mut(field) {
            for (data_key, value) in data.iter_mut() {
                let aad = format!("{field}\0{data_key}");
                *value = Value::String(seal_value(&cipher, &nonce_key, &aad, value));
            }
        }
    }
    if let Some(Value::Object(annotations)) = out.pointer_mut("/metadata/annotations") {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    out
}

/// The manifest to apply from a recorded (sealed) one: Secret values opened with the agent's
/// key. A Secret recorded by an older reckon holds keyed hashes only and cannot be opened.
pub fn open_sealed(recorded: &Value, key: &SecretKey) -> Result<Value, SealError> {
    let mut out = recorded.clone();
    if !is_secret(recorded) {
        return Ok(out);
    }
    let cipher = cipher(key);
    for field in SECRET_FIELDS {
        if let Some(Value::Object(data)) = out.get_mut(field) {
            for (data_key, value) in data.iter_mut() {
                let sealed = value.as_str().and_then(|t| t.strip_prefix(SEALED_PREFIX));
                let Some(sealed) = sealed else {
                    return Err(SealError::HashedOnly {
                        field: field.into(),
                        key: data_key.clone(),
                    });
                };
                let aad = format!("{field}\0{data_key}");
                *value = open_value(&cipher, &aad, sealed).map_err(|reason| SealError::Open {
                    field: field.into(),
                    key: data_key.clone(),
                    reason,
                })?;
            }
        }
    }
    Ok(out)
}

/// The keyed-hash (storable) form of a recorded object, whatever version recorded it: sealed
/// Secret values are opened and hashed, hashed ones kept. For views of recorded sets (`show`,
/// `diff` between revisions): values never appear, and sets recorded before and after sealing
/// compare alike with [`secret_changes`].
pub fn storable_from_recorded(recorded: &Value, key: &SecretKey) -> Result<Value, SealError> {
    if !is_secret(recorded) {
        return Ok(recorded.clone());
    }
    let mut out = recorded.clone();
    let cipher = cipher(key);
    for field in SECRET_FIELDS {
        if let Some(Value::Object(data)) = out.get_mut(field) {
            for (data_key, value) in data.iter_mut() {
                let Some(sealed) = value.as_str().and_then(|t| t.strip_prefix(SEALED_PREFIX))
                else {
                    continue;
                };
                let aad = format!("{field}\0{data_key}");
                let plain =
                    open_value(&cipher, &aad, sealed).map_err(|reason| SealError::Open {
                        field: field.into(),
                        key: data_key.clone(),
                        reason,
                    })?;
                let one = serde_json::json!({"apiVersion": "v1", "kind": "Secret", field: {data_key.clone(): plain}});
                *value = storable_object(&one, key)[field][data_key.as_str()].clone();
            }
        }
    }
    Ok(out)
}

/// The storable form of every object of a rendered set, in render order.
pub fn storable(set: &super::RenderedSet, key: &SecretKey) -> Vec<Value> {
    set.objects
        .iter()
        .map(|object| storable_object(object.manifest.as_value(), key))
        .collect()
}

/// How one Secret key differs between two storable Secrets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum SecretKeyChange {
    Added(String),
    Removed(String),
    Changed(String),
}

impl fmt::Display for SecretKeyChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretKeyChange::Added(k) => write!(f, "key {k} added"),
            SecretKeyChange::Removed(k) => write!(f, "key {k} removed"),
            SecretKeyChange::Changed(k) => write!(f, "key {k} changed"),
        }
    }
}

/// Which keys of `data` differ between two storable Secrets ("key K changed"), sorted by key.
/// Works on hashes only, so it can run on what the store holds.
pub fn secret_changes(before: &Value, after: &Value) -> Vec<SecretKeyChange> {
    let empty = serde_json::Map::new();
    let data = |v: &Value| -> serde_json::Map<String, Value> {
        let mut merged = v
            .get("data")
            .and_then(Value::as_object)
            .unwrap_or(&empty)
            .clone();
        if let Some(string_data) = v.get("stringData").and_then(Value::as_object) {
            merged.extend(string_data.clone());
        }
        merged
    };
    let (before, after) = (data(before), data(after));
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| match (before.get(k), after.get(k)) {
            (Some(_), None) => Some(SecretKeyChange::Removed(k.clone())),
            (None, Some(_)) => Some(SecretKeyChange::Added(k.clone())),
            (Some(a), Some(b)) if a != b => Some(SecretKeyChange::Changed(k.clone())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(byte: u8) -> SecretKey {
        SecretKey::new([byte; 32])
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"z": [3, {"y": 1, "x": 2}], "c": "é\n"}}"#)
                .unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":"é\n","z":[3,{"x":2,"y":1}]},"b":1}"#
        );
    }

    #[test]
    fn canonical_json_matches_sha256_of_known_text() {
        // Independent check of the digest format against a published SHA-256 test vector:
        // sha256("abc") = ba7816bf...
        assert_eq!(
            Digest::of(b"abc").prefixed(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn object_digest_ignores_key_order_but_not_values() {
        let k = key(1);
        let a = json!({"kind": "ConfigMap", "apiVersion": "v1", "data": {"a": "1", "b": "2"}});
        let b: Value = serde_json::from_str(
            r#"{"data": {"b": "2", "a": "1"}, "apiVersion": "v1", "kind": "ConfigMap"}"#,
        )
        .unwrap();
        let c = json!({"kind": "ConfigMap", "apiVersion": "v1", "data": {"a": "1", "b": "3"}});
        assert_eq!(object_digest(&a, &k), object_digest(&b, &k));
        assert_ne!(object_digest(&a, &k), object_digest(&c, &k));
        assert!(object_digest(&a, &k).prefixed().starts_with("sha256:"));
        // Not a Secret: the key plays no part.
        assert_eq!(object_digest(&a, &k), object_digest(&a, &key(2)));
    }

    #[test]
    fn set_digest_is_order_independent() {
        assert_eq!(set_digest(["x", "y", "z"]), set_digest(["z", "x", "y"]));
        assert_ne!(set_digest(["x", "y"]), set_digest(["x", "y", "z"]));
        assert_ne!(set_digest(["xy"]), set_digest(["x", "y"]));
    }

    fn secret(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "s", "annotations": {
                   "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"password\":\"aHVudGVyMg==\"}}",
                   "team": "a"}},
               "data": data})
    }

    #[test]
    fn storable_secrets_hold_no_values() {
        let k = key(7);
        let plain = secret(json!({"password": "aHVudGVyMg==", "user": "YWRtaW4="}));
        let stored = storable_object(&plain, &k);
        let text = canonical_json(&stored);
        for needle in ["aHVudGVyMg", "hunter2", "YWRtaW4", "admin"] {
            assert!(!text.contains(needle), "{needle} leaked: {text}");
        }
        assert!(
            stored["data"]["password"]
                .as_str()
                .unwrap()
                .starts_with(HASH_PREFIX)
        );
        assert_eq!(stored["metadata"]["annotations"], json!({"team": "a"}));
        // The digest does not depend on plain values beyond the keyed hash.
        assert_eq!(object_digest(&plain, &k), object_digest(&stored, &k));
    }

    #[test]
    fn keyed_hashes_depend_on_key_value_and_data_key() {
        let k = key(7);
        let a = storable_object(
            &secret(json!({"p": "aHVudGVyMg==", "q": "aHVudGVyMg=="})),
            &k,
        );
        let b = storable_object(&secret(json!({"p": "aHVudGVyMw=="})), &k);
        let other_key = storable_object(&secret(json!({"p": "aHVudGVyMg=="})), &key(8));
        assert_ne!(a["data"]["p"], a["data"]["q"], "same value under two keys");
        assert_ne!(a["data"]["p"], b["data"]["p"]);
        assert_ne!(a["data"]["p"], other_key["data"]["p"]);
        // Reproducible with the same agent key.
        let again = storable_object(&secret(json!({"p": "aHVudGVyMg=="})), &k);
        assert_eq!(a["data"]["p"], again["data"]["p"]);
    }

    #[test]
    fn data_and_string_data_with_the_same_content_hash_alike() {
        let k = key(3);
        let via_data = storable_object(&secret(json!({"p": "aHVudGVyMg=="})), &k);
        let mut string_form = secret(json!({}));
        string_form["stringData"] = json!({"p": "hunter2"});
        let via_string = storable_object(&string_form, &k);
        assert_eq!(via_data["data"]["p"], via_string["stringData"]["p"]);
        assert_eq!(secret_changes(&via_data, &via_string), vec![]);
    }

    #[test]
    fn non_secrets_and_look_alikes_are_unchanged() {
        let k = key(1);
        let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"p": "x"}});
        assert_eq!(storable_object(&config_map, &k), config_map);
        let custom = json!({"apiVersion": "example.com/v1", "kind": "Secret", "metadata": {"name": "c"}, "data": {"p": "x"}});
        assert_eq!(storable_object(&custom, &k), custom);
    }

    #[test]
    fn secret_changes_name_keys_without_values() {
        let k = key(9);
        let before = storable_object(&secret(json!({"a": "MQ==", "b": "Mg==", "c": "Mw=="})), &k);
        let after = storable_object(&secret(json!({"a": "MQ==", "b": "OTk=", "d": "NA=="})), &k);
        let changes = secret_changes(&before, &after);
        assert_eq!(
            changes,
            vec![
                SecretKeyChange::Changed("b".into()),
                SecretKeyChange::Removed("c".into()),
                SecretKeyChange::Added("d".into()),
            ]
        );
        let shown: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["key b changed", "key c removed", "key d added"]);
    }

    #[test]
    fn sealed_secrets_hold_no_values_and_open_to_exactly_what_was_rendered() {
        let k = key(7);
        let mut plain = secret(json!({"password": "aHVudGVyMg==", "user": "YWRtaW4="}));
        plain["stringData"] = json!({"token": "hunter3"});
        let sealed = sealed_object(&plain, &k);
        let text = canonical_json(&sealed);
        for needle in ["aHVudGVyMg", "hunter2", "YWRtaW4", "admin", "hunter3"] {
            assert!(!text.contains(needle), "{needle} leaked: {text}");
        }
        assert!(
            sealed["data"]["password"]
                .as_str()
                .unwrap()
                .starts_with(SEALED_PREFIX)
        );
        assert_eq!(sealed["metadata"]["annotations"], json!({"team": "a"}));
        // Deterministic: the same render seals to the same bytes (one blob address).
        assert_eq!(sealed, sealed_object(&plain, &k));
        let opened = open_sealed(&sealed, &k).unwrap();
        let mut expected = plain.clone();
        expected["metadata"]["annotations"] = json!({"team": "a"});
        assert_eq!(opened, expected);
        // The object digest of what is opened is the digest of what was rendered: a rollback
        // from the store re-applies nothing that did not change.
        assert_eq!(object_digest(&opened, &k), object_digest(&plain, &k));
    }

    #[test]
    fn sealed_values_are_bound_to_their_key_and_field() {
        let k = key(7);
        let sealed = sealed_object(
            &secret(json!({"p": "aHVudGVyMg==", "q": "aHVudGVyMg=="})),
            &k,
        );
        assert_ne!(
            sealed["data"]["p"], sealed["data"]["q"],
            "same value, two keys"
        );
        // Moving a sealed value to another key does not open.
        let mut swapped = sealed.clone();
        swapped["data"]["q"] = sealed["data"]["p"].clone();
        let err = open_sealed(&swapped, &k).unwrap_err();
        assert!(
            matches!(&err, SealError::Open { key, .. } if key == "q"),
            "{err}"
        );
        // Another agent key does not open it either, and says so.
        let err = open_sealed(&sealed, &key(8)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "data.p does not open with this agent's key (authentication failed); was the key replaced?"
        );
    }

    #[test]
    fn a_secret_recorded_as_keyed_hashes_cannot_be_opened() {
        let k = key(7);
        let hashed = storable_object(&secret(json!({"password": "aHVudGVyMg=="})), &k);
        let err = open_sealed(&hashed, &k).unwrap_err();
        assert_eq!(
            err.to_string(),
            "data.password is stored as a keyed hash only (recorded by an older reckon), so its \
             value cannot be restored from the store"
        );
        // Anything else opens to itself.
        let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"p": "x"}});
        assert_eq!(open_sealed(&config_map, &k).unwrap(), config_map);
        assert_eq!(sealed_object(&config_map, &k), config_map);
    }

    #[test]
    fn recorded_sets_of_either_version_read_as_the_same_keyed_hashes() {
        let k = key(5);
        let mut plain = secret(json!({"password": "aHVudGVyMg=="}));
        plain["stringData"] = json!({"token": "hunter3"});
        let hashed = storable_object(&plain, &k);
        let sealed = sealed_object(&plain, &k);
        assert_eq!(storable_from_recorded(&sealed, &k).unwrap(), hashed);
        assert_eq!(storable_from_recorded(&hashed, &k).unwrap(), hashed);
        assert!(storable_from_recorded(&sealed, &key(6)).is_err());
    }

    #[test]
    fn secret_key_debug_is_redacted() {
        assert_eq!(format!("{:?}", key(0xab)), "SecretKey(..)");
    }
}
