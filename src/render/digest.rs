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

/// Prefix of a Secret value sealed for the blob store (scheme 2): base64 of
/// `nonce (12, random) || AES-256-GCM-SIV ciphertext`, then `:` and the value's keyed hash; the
/// associated data names the scheme, the object (group, kind, namespace, name), the field, the
/// key and that hash (see `seal_value`).
pub const SEALED_PREFIX: &str = "sealed-v2:";

/// Prefix of a value sealed by scheme 1 (migration 0003): deterministic (a synthetic nonce),
/// bound to field and key only. Still opened; [`reseal_object`] turns it into scheme 2.
pub const SEALED_V1_PREFIX: &str = "sealed-aes256gcmsiv:";

/// Purposes of the derived keys (versioned: a new scheme gets a new purpose and prefix).
const SEAL_KEY_PURPOSE: &str = "reckon secret seal key v2";
const SEAL_V1_KEY_PURPOSE: &str = "reckon secret seal key v1";
/// Scheme 1's synthetic nonces; only tests seal with scheme 1 now (to prove it still opens).
#[cfg(test)]
const SEAL_V1_NONCE_PURPOSE: &str = "reckon secret seal nonce v1";
/// The key of the keyed hash of Secret values (the drift comparison's form).
const VALUE_HASH_PURPOSE: &str = "reckon secret value hash v2";
/// First part of scheme 2's associated data, so nothing else sealed under the key opens as it.
const SEAL_DOMAIN: &str = "reckon sealed secret value v2";

/// Why a stored Secret could not be opened back into the manifest to apply.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Recorded by a reckon before sealing (0.1 stored keyed hashes only): the value is gone.
    #[error(
        "{field}.{key} is stored as a keyed hash only (recorded by an older reckon), so its value \
         cannot be restored from the store"
    )]
    HashedOnly { field: String, key: String },
    /// A scheme-1 value that does not authenticate: another key sealed it, or it was moved.
    #[error("{field}.{key} does not open with this agent's key ({reason}); was the key replaced?")]
    Open {
        field: String,
        key: String,
        reason: String,
    },
    /// A scheme-2 value that does not authenticate. The cipher cannot tell which of the bound
    /// parts differs, so the message names all of them.
    #[error(
        "{field}.{key} of {object} does not open ({reason}): it was sealed for another object, \
         field or key, or under another agent key (was the key replaced?)"
    )]
    Misplaced {
        object: String,
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

/// Who a Secret is: group (empty for core), kind, namespace (empty when the manifest names
/// none) and name, as its manifest says. Sealed values and keyed hashes are bound to it.
struct Identity {
    group: String,
    kind: String,
    namespace: String,
    name: String,
}

impl Identity {
    fn of(manifest: &Value) -> Identity {
        let text = |pointer: &str| {
            manifest
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let api_version = text("/apiVersion");
        Identity {
            group: match api_version.rsplit_once('/') {
                Some((group, _)) => group.to_string(),
                None => String::new(),
            },
            kind: text("/kind"),
            namespace: text("/metadata/namespace"),
            name: text("/metadata/name"),
        }
    }

    /// `KIND/NAME` or `KIND/NAMESPACE/NAME`, for messages.
    fn display(&self) -> String {
        match self.namespace.as_str() {
            "" => format!("{}/{}", self.kind, self.name),
            ns => format!("{}/{ns}/{}", self.kind, self.name),
        }
    }
}

/// `parts`, each preceded by its length (8 bytes, big-endian): an unambiguous encoding, so no
/// two different lists of parts (a name ending where a key begins) give the same bytes.
fn framed(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// Keyed hash of one Secret value: HMAC-SHA256 under a key derived for this purpose, over the
/// Secret's identity, the data key and the value. `data` values are hashed decoded and the
/// field is not part of the input, so `data` and `stringData` with the same content hash alike
/// (the API server folds `stringData` into `data`); the identity and data key are, so equal
/// values in two Secrets, or under two keys, do not reveal that they are equal.
fn keyed_hash(hash_key: &[u8; 32], identity: &Identity, data_key: &str, value: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(hash_key).expect("any key size");
    mac.update(&framed(&[
        identity.group.as_bytes(),
        identity.kind.as_bytes(),
        identity.namespace.as_bytes(),
        identity.name.as_bytes(),
        data_key.as_bytes(),
        value,
    ]));
    format!("{HASH_PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

/// What one value of a Secret's `data` (`base64_encoded`) or `stringData` is in the storable
/// form: its keyed hash, or the value itself when it is one already.
fn stored_value(
    hash_key: &[u8; 32],
    identity: &Identity,
    data_key: &str,
    value: &Value,
    base64_encoded: bool,
) -> Value {
    match value {
        // Already storable: `:` is not in the base64 alphabet, so no real `data` value looks
        // like this, and hashing is idempotent.
        Value::String(text) if base64_encoded && text.starts_with(HASH_PREFIX) => value.clone(),
        Value::String(text) => {
            let decoded = if base64_encoded {
                base64::engine::general_purpose::STANDARD.decode(text).ok()
            } else {
                None
            };
            let bytes = decoded.as_deref().unwrap_or(text.as_bytes());
            Value::String(keyed_hash(hash_key, identity, data_key, bytes))
        }
        // Not a valid Secret value; hash its JSON so nothing of it is kept either.
        other => Value::String(keyed_hash(
            hash_key,
            identity,
            data_key,
            other.to_string().as_bytes(),
        )),
    }
}

fn hash_values(
    map: &mut serde_json::Map<String, Value>,
    hash_key: &[u8; 32],
    identity: &Identity,
    base64_encoded: bool,
) {
    for (data_key, value) in map.iter_mut() {
        *value = stored_value(hash_key, identity, data_key, value, base64_encoded);
    }
}

/// The form of one manifest that may be logged and stored: for a core `v1` Secret, every
/// `data`/`stringData` value replaced by a keyed hash bound to the Secret (see `keyed_hash`)
/// and the `kubectl.kubernetes.io/last-applied-configuration` annotation (a plain copy)
/// removed; anything else unchanged. Apply the same function to a live Secret before comparing
/// it with a stored one: the hash binds the namespace, so a rendered Secret must name the
/// namespace it is applied to (the reconciler places one that names none first).
pub fn storable_object(manifest: &Value, key: &SecretKey) -> Value {
    let mut out = manifest.clone();
    if !is_secret(manifest) {
        return out;
    }
    let identity = Identity::of(manifest);
    let hash_key = key.derive(VALUE_HASH_PURPOSE);
    if let Some(Value::Object(data)) = out.get_mut("data") {
        hash_values(data, &hash_key, &identity, true);
    }
    if let Some(Value::Object(data)) = out.get_mut("stringData") {
        hash_values(data, &hash_key, &identity, false);
    }
    if let Some(Value::Object(annotations)) = out.pointer_mut("/metadata/annotations") {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    out
}

/// Scheme 2's associated data: the scheme, the Secret's identity, the field, the key and the
/// value's stored form (its keyed hash, kept next to the ciphertext). A value opens only in the
/// place it was sealed for, and only with the hash it was sealed with.
fn aad(identity: &Identity, field: &str, data_key: &str, stored: &str) -> Vec<u8> {
    framed(&[
        SEAL_DOMAIN.as_bytes(),
        identity.group.as_bytes(),
        identity.kind.as_bytes(),
        identity.namespace.as_bytes(),
        identity.name.as_bytes(),
        field.as_bytes(),
        data_key.as_bytes(),
        stored.as_bytes(),
    ])
}

/// A scheme-2 sealed value split into its ciphertext (base64) and its stored form (the keyed
/// hash the storable form has for it); `None` when it is not one.
fn split_v2(text: &str) -> Option<(&str, &str)> {
    // base64 has no `:`, so the first one ends the ciphertext.
    text.strip_prefix(SEALED_PREFIX)?.split_once(':')
}

/// Authenticated encryption of one Secret value (AES-256-GCM-SIV, scheme 2):
/// `sealed-v2:<base64(nonce || ciphertext)>:<stored form>`. The plaintext is the value's exact
/// JSON, so it opens to exactly what was rendered; the nonce is random, so equal values (in two
/// Secrets, or in two renders of one) seal to unrelated bytes; the associated data binds it to
/// its object, field and key. The stored form (the keyed hash bound to the object, as in the
/// per-object blobs) is kept in clear next to it, so two recorded sets compare, value by value,
/// without the key ([`comparable_recorded`]).
fn seal_value(cipher: &Aes256GcmSiv, aad: &[u8], stored: &str, value: &Value) -> String {
    let plain = canonical_json(value);
    let nonce_bytes: [u8; 12] = rand::random();
    let nonce = Nonce::from_slice(&nonce_bytes);
    let sealed = cipher
        .encrypt(
            nonce,
            Payload {
                msg: plain.as_bytes(),
                aad,
            },
        )
        .expect("AES-GCM-SIV encrypts any message under 64 GiB");
    let mut out = nonce_bytes.to_vec();
    out.extend(sealed);
    format!(
        "{SEALED_PREFIX}{}:{stored}",
        base64::engine::general_purpose::STANDARD.encode(out)
    )
}

fn open_value(cipher: &Aes256GcmSiv, aad: &[u8], text: &str) -> Result<Value, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("not base64: {e}"))?;
    if bytes.len() < 12 {
        return Err("too short".into());
    }
    let (nonce, sealed) = bytes.split_at(12);
    let plain = cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
        .map_err(|_| "authentication failed".to_string())?;
    serde_json::from_slice(&plain).map_err(|e| format!("not JSON: {e}"))
}

fn cipher(key: &SecretKey, purpose: &str) -> Aes256GcmSiv {
    Aes256GcmSiv::new(&key.derive(purpose).into())
}

const SECRET_FIELDS: [&str; 2] = ["data", "stringData"];

/// The form of one manifest kept in a revision's rendered set (the blob a rollback applies):
/// for a core `v1` Secret, every `data`/`stringData` value sealed under the agent's key (scheme
/// 2: random nonce, bound to the object, field and key) and the `last-applied-configuration`
/// annotation (a plain copy) removed; anything else unchanged. Never plain text; [`open_sealed`]
/// turns it back into the manifest to apply. Sealing twice gives different bytes: recorded sets
/// are compared by keyed hashes (the objects' digests, [`comparable_recorded`]), not addresses.
pub fn sealed_object(manifest: &Value, key: &SecretKey) -> Value {
    let mut out = manifest.clone();
    if !is_secret(manifest) {
        return out;
    }
    let identity = Identity::of(manifest);
    let cipher = cipher(key, SEAL_KEY_PURPOSE);
    let hash_key = key.derive(VALUE_HASH_PURPOSE);
    for field in SECRET_FIELDS {
        if let Some(Value::Object(data)) = out.get_mut(field) {
            for (data_key, value) in data.iter_mut() {
                *value = Value::String(seal_in_place(
                    &cipher, &hash_key, &identity, field, data_key, value,
                ));
            }
        }
    }
    if let Some(Value::Object(annotations)) = out.pointer_mut("/metadata/annotations") {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    out
}

/// One value sealed by scheme 2 for `field`.`data_key` of `identity`, with its stored form.
fn seal_in_place(
    cipher: &Aes256GcmSiv,
    hash_key: &[u8; 32],
    identity: &Identity,
    field: &str,
    data_key: &str,
    value: &Value,
) -> String {
    let stored = stored_value(hash_key, identity, data_key, value, field == "data");
    let stored = stored.as_str().expect("a stored form is text");
    seal_value(
        cipher,
        &aad(identity, field, data_key, stored),
        stored,
        value,
    )
}

/// One recorded value opened, whichever scheme sealed it; `None` when it is not sealed (a keyed
/// hash recorded by reckon 0.1, or anything else).
fn open_recorded_value(
    key: &SecretKey,
    identity: &Identity,
    field: &str,
    data_key: &str,
    value: &Value,
) -> Option<Result<Value, SealError>> {
    let text = value.as_str()?;
    if text.starts_with(SEALED_PREFIX) {
        let opened = match split_v2(text) {
            Some((sealed, stored)) => open_value(
                &cipher(key, SEAL_KEY_PURPOSE),
                &aad(identity, field, data_key, stored),
                sealed,
            ),
            None => Err("no stored form".to_string()),
        };
        return Some(opened.map_err(|reason| SealError::Misplaced {
            object: identity.display(),
            field: field.into(),
            key: data_key.into(),
            reason,
        }));
    }
    let sealed = text.strip_prefix(SEALED_V1_PREFIX)?;
    let aad = format!("{field}\0{data_key}");
    Some(
        open_value(&cipher(key, SEAL_V1_KEY_PURPOSE), aad.as_bytes(), sealed).map_err(|reason| {
            SealError::Open {
                field: field.into(),
                key: data_key.into(),
                reason,
            }
        }),
    )
}

/// The manifest to apply from a recorded (sealed) one: Secret values opened with the agent's
/// key, whichever scheme sealed them. A Secret recorded by an older reckon holds keyed hashes
/// only and cannot be opened; a scheme-2 value copied from another object, field or key does
/// not open either.
pub fn open_sealed(recorded: &Value, key: &SecretKey) -> Result<Value, SealError> {
    let mut out = recorded.clone();
    if !is_secret(recorded) {
        return Ok(out);
    }
    let identity = Identity::of(recorded);
    for field in SECRET_FIELDS {
        if let Some(Value::Object(data)) = out.get_mut(field) {
            for (data_key, value) in data.iter_mut() {
                match open_recorded_value(key, &identity, field, data_key, value) {
                    Some(opened) => *value = opened?,
                    None => {
                        return Err(SealError::HashedOnly {
                            field: field.into(),
                            key: data_key.clone(),
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A recorded object with every scheme-1 sealed value sealed again with scheme 2 (migration
/// 0010), or `None` when it holds none (not a Secret, already scheme 2, or keyed hashes of reckon
/// 0.1, which cannot be opened). What it opens to is unchanged.
pub fn reseal_object(recorded: &Value, key: &SecretKey) -> Result<Option<Value>, SealError> {
    if !is_secret(recorded) {
        return Ok(None);
    }
    let identity = Identity::of(recorded);
    let cipher_v2 = cipher(key, SEAL_KEY_PURPOSE);
    let hash_key = key.derive(VALUE_HASH_PURPOSE);
    let mut out = recorded.clone();
    let mut changed = false;
    for field in SECRET_FIELDS {
        if let Some(Value::Object(data)) = out.get_mut(field) {
            for (data_key, value) in data.iter_mut() {
                let v1 = value
                    .as_str()
                    .is_some_and(|t| t.starts_with(SEALED_V1_PREFIX));
                if !v1 {
                    continue;
                }
                let plain = open_recorded_value(key, &identity, field, data_key, value)
                    .expect("a scheme-1 value")?;
                *value = Value::String(seal_in_place(
                    &cipher_v2, &hash_key, &identity, field, data_key, &plain,
                ));
                changed = true;
            }
        }
    }
    Ok(changed.then_some(out))
}

/// The keyed-hash (storable) form of a recorded object, whatever version recorded it: sealed
/// Secret values are opened and hashed, hashed ones kept. For views of recorded sets (`show`,
/// `diff` between revisions) and to tell whether a new render is the one recorded: values
/// never appear, and sets recorded before and after sealing compare alike with
/// [`secret_changes`].
pub fn storable_from_recorded(recorded: &Value, key: &SecretKey) -> Result<Value, SealError> {
    if !is_secret(recorded) {
        return Ok(recorded.clone());
    }
    let identity = Identity::of(recorded);
    let hash_key = key.derive(VALUE_HASH_PURPOSE);
    let mut out = recorded.clone();
    for field in SECRET_FIELDS {
        if let Some(Value::Object(data)) = out.get_mut(field) {
            for (data_key, value) in data.iter_mut() {
                let Some(plain) = open_recorded_value(key, &identity, field, data_key, value)
                else {
                    continue;
                };
                let mut one = serde_json::Map::new();
                one.insert(data_key.clone(), plain?);
                hash_values(&mut one, &hash_key, &identity, field == "data");
                *value = one.remove(data_key.as_str()).expect("just inserted");
            }
        }
    }
    Ok(out)
}

/// A recorded object as two recorded sets are compared without the key (`diff` between
/// revisions): each scheme-2 sealed value replaced by the stored form sealed with it (its keyed
/// hash), so an unchanged value compares equal across revisions although its ciphertext differs,
/// and a changed one shows as a changed hash. Anything else is unchanged.
pub fn comparable_recorded(recorded: &Value) -> Value {
    let mut out = recorded.clone();
    if !is_secret(recorded) {
        return out;
    }
    for field in SECRET_FIELDS {
        if let Some(Value::Object(data)) = out.get_mut(field) {
            for value in data.values_mut() {
                if let Some((_, stored)) = value.as_str().and_then(split_v2) {
                    *value = Value::String(stored.to_string());
                }
            }
        }
    }
    out
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
        // Random nonces (scheme 2): sealing the same render again gives other bytes; a recorded
        // set is reused by comparing keyed hashes, not blob addresses.
        assert_ne!(sealed, sealed_object(&plain, &k));
        let opened = open_sealed(&sealed, &k).unwrap();
        let mut expected = plain.clone();
        expected["metadata"]["annotations"] = json!({"team": "a"});
        assert_eq!(opened, expected);
        // The object digest of what is opened is the digest of what was rendered: a rollback
        // from the store re-applies nothing that did not change.
        assert_eq!(object_digest(&opened, &k), object_digest(&plain, &k));
    }

    #[test]
    fn values_sealed_by_scheme_1_are_bound_to_their_key_and_field() {
        let k = key(7);
        let sealed = sealed_v1(
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

    /// A Secret sealed the scheme-1 way (migration 0003: deterministic, bound to field and key
    /// only), as reckon before migration 0010 recorded it.
    fn sealed_v1(manifest: &Value, key: &SecretKey) -> Value {
        let mut out = manifest.clone();
        let cipher = cipher(key, SEAL_V1_KEY_PURPOSE);
        let nonce_key = key.derive(SEAL_V1_NONCE_PURPOSE);
        for field in SECRET_FIELDS {
            if let Some(Value::Object(data)) = out.get_mut(field) {
                for (data_key, value) in data.iter_mut() {
                    let aad = format!("{field}\0{data_key}");
                    let plain = canonical_json(value);
                    let mut mac =
                        <Hmac<Sha256> as Mac>::new_from_slice(&nonce_key).expect("any key size");
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
                        .unwrap();
                    let mut bytes = nonce.to_vec();
                    bytes.extend(sealed);
                    *value = Value::String(format!(
                        "{SEALED_V1_PREFIX}{}",
                        base64::engine::general_purpose::STANDARD.encode(bytes)
                    ));
                }
            }
        }
        if let Some(Value::Object(annotations)) = out.pointer_mut("/metadata/annotations") {
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
        out
    }

    fn named(mut secret: Value, namespace: Option<&str>, name: &str) -> Value {
        secret["metadata"]["name"] = json!(name);
        if let Some(ns) = namespace {
            secret["metadata"]["namespace"] = json!(ns);
        }
        secret
    }

    #[test]
    fn equal_values_seal_to_unrelated_bytes_in_two_secrets_and_in_two_renders() {
        let k = key(7);
        let a = sealed_object(
            &named(secret(json!({"p": "aHVudGVyMg=="})), Some("x"), "a"),
            &k,
        );
        let b = sealed_object(
            &named(secret(json!({"p": "aHVudGVyMg=="})), Some("x"), "b"),
            &k,
        );
        assert_ne!(a["data"]["p"], b["data"]["p"], "same value, two Secrets");
        let again = sealed_object(
            &named(secret(json!({"p": "aHVudGVyMg=="})), Some("x"), "a"),
            &k,
        );
        assert_ne!(
            a["data"]["p"], again["data"]["p"],
            "same Secret sealed twice"
        );
        for sealed in [&a, &b, &again] {
            assert!(
                sealed["data"]["p"]
                    .as_str()
                    .unwrap()
                    .starts_with(SEALED_PREFIX)
            );
            assert_eq!(
                open_sealed(sealed, &k).unwrap()["data"]["p"],
                "aHVudGVyMg=="
            );
        }
        // The nonce (first 12 bytes) differs: not one nonce reused under the key.
        let nonce = |v: &Value| {
            let (text, _) = split_v2(v["data"]["p"].as_str().unwrap()).unwrap();
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap()[..12]
                .to_vec()
        };
        assert_ne!(nonce(&a), nonce(&again));
    }

    #[test]
    fn sealed_values_carry_their_keyed_hash_so_recorded_sets_compare_without_the_key() {
        let k = key(7);
        let mut plain = named(secret(json!({"p": "aHVudGVyMg=="})), Some("x"), "a");
        plain["stringData"] = json!({"t": "hunter3"});
        let one = sealed_object(&plain, &k);
        let two = sealed_object(&plain, &k);
        assert_ne!(one, two, "random nonces");
        // Compared without the key: the stored form (the keyed hash the per-object blobs and
        // drift use) stands for each value, so an unchanged Secret compares equal.
        assert_eq!(comparable_recorded(&one), comparable_recorded(&two));
        let mut expected = storable_object(&plain, &k);
        expected["metadata"]["annotations"] = json!({"team": "a"});
        assert_eq!(comparable_recorded(&one), expected);
        let mut changed = plain.clone();
        changed["data"]["p"] = json!("aHVudGVyMw==");
        assert_eq!(
            secret_changes(
                &comparable_recorded(&one),
                &comparable_recorded(&sealed_object(&changed, &k))
            ),
            vec![SecretKeyChange::Changed("p".into())]
        );
        // The hash is authenticated with the value: another value's hash next to this
        // ciphertext does not open.
        let (sealed, _) = split_v2(one["data"]["p"].as_str().unwrap()).unwrap();
        let other = sealed_object(&changed, &k);
        let (_, other_hash) = split_v2(other["data"]["p"].as_str().unwrap()).unwrap();
        let mut forged = one.clone();
        forged["data"]["p"] = json!(format!("{SEALED_PREFIX}{sealed}:{other_hash}"));
        assert!(matches!(
            open_sealed(&forged, &k),
            Err(SealError::Misplaced { .. })
        ));
        // Anything but a Secret is compared as it is.
        let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"p": "x"}});
        assert_eq!(comparable_recorded(&config_map), config_map);
    }

    #[test]
    fn a_sealed_value_opens_only_in_the_object_field_and_key_it_was_sealed_for() {
        let k = key(7);
        let a = sealed_object(
            &named(
                secret(json!({"p": "aHVudGVyMg==", "q": "eA=="})),
                Some("x"),
                "a",
            ),
            &k,
        );
        let moved = |to: Value| {
            let mut to = to;
            to["data"]["p"] = a["data"]["p"].clone();
            open_sealed(&to, &k).unwrap_err().to_string()
        };
        let b = sealed_object(&named(secret(json!({"p": "eQ=="})), Some("x"), "b"), &k);
        assert_eq!(
            moved(b),
            "data.p of Secret/x/b does not open (authentication failed): it was sealed for \
             another object, field or key, or under another agent key (was the key replaced?)"
        );
        // The same name in another namespace is another object.
        let other_ns = sealed_object(&named(secret(json!({"p": "eQ=="})), Some("y"), "a"), &k);
        assert!(moved(other_ns).starts_with("data.p of Secret/y/a does not open"));
        // Another key of the same Secret.
        let mut swapped = a.clone();
        swapped["data"]["q"] = a["data"]["p"].clone();
        let err = open_sealed(&swapped, &k).unwrap_err();
        assert!(
            matches!(&err, SealError::Misplaced { key, .. } if key == "q"),
            "{err}"
        );
        // Another field of the same Secret, same key name.
        let mut field = a.clone();
        field["data"].as_object_mut().unwrap().remove("p");
        field["stringData"] = json!({"p": a["data"]["p"].clone()});
        let err = open_sealed(&field, &k).unwrap_err();
        assert!(
            matches!(&err, SealError::Misplaced { field, key, .. } if field == "stringData" && key == "p"),
            "{err}"
        );
        // Where it was sealed, with another agent key.
        let err = open_sealed(&a, &key(8)).unwrap_err();
        assert!(matches!(err, SealError::Misplaced { .. }), "{err}");
        // And where it was sealed, with the key that sealed it.
        assert_eq!(open_sealed(&a, &k).unwrap()["data"]["p"], "aHVudGVyMg==");
    }

    #[test]
    fn the_same_value_in_two_secrets_hashes_differently_and_alike_in_one() {
        let k = key(7);
        let hash = |ns: Option<&str>, name: &str| {
            storable_object(&named(secret(json!({"p": "aHVudGVyMg=="})), ns, name), &k)["data"]["p"]
                .clone()
        };
        assert_ne!(hash(Some("x"), "a"), hash(Some("x"), "b"), "two names");
        assert_ne!(hash(Some("x"), "a"), hash(Some("y"), "a"), "two namespaces");
        assert_eq!(hash(Some("x"), "a"), hash(Some("x"), "a"), "reproducible");
        // Keyed: not the plain SHA-256 of the value, nor the scheme-1 hash (raw key, data key
        // and value only), which was equal across Secrets.
        let plain_sha = hex::encode(<Sha256 as sha2::Digest>::digest(b"hunter2"));
        assert!(!hash(Some("x"), "a").as_str().unwrap().contains(&plain_sha));
        let mut v1 = <Hmac<Sha256> as Mac>::new_from_slice(&k.0).unwrap();
        v1.update(b"p\0hunter2");
        let v1 = format!("{HASH_PREFIX}{}", hex::encode(v1.finalize().into_bytes()));
        assert_ne!(hash(Some("x"), "a"), json!(v1));
    }

    #[test]
    fn values_sealed_by_scheme_1_still_open_and_reseal_to_scheme_2() {
        let k = key(7);
        let mut plain = named(secret(json!({"password": "aHVudGVyMg=="})), Some("x"), "a");
        plain["stringData"] = json!({"token": "hunter3"});
        let v1 = sealed_v1(&plain, &k);
        assert!(
            v1["data"]["password"]
                .as_str()
                .unwrap()
                .starts_with(SEALED_V1_PREFIX)
        );
        let mut expected = plain.clone();
        expected["metadata"]["annotations"] = json!({"team": "a"});
        assert_eq!(open_sealed(&v1, &k).unwrap(), expected);
        assert_eq!(
            storable_from_recorded(&v1, &k).unwrap(),
            storable_object(&plain, &k)
        );
        let v2 = reseal_object(&v1, &k).unwrap().expect("scheme-1 values");
        for (field, data_key) in [("data", "password"), ("stringData", "token")] {
            let text = v2[field][data_key].as_str().unwrap();
            assert!(text.starts_with(SEALED_PREFIX), "{text}");
        }
        assert_eq!(open_sealed(&v2, &k).unwrap(), expected);
        // Idempotent: nothing of scheme 1 is left.
        assert_eq!(reseal_object(&v2, &k).unwrap(), None);
        let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"p": "x"}});
        assert_eq!(reseal_object(&config_map, &k).unwrap(), None);
        // Keyed hashes of reckon 0.1 cannot be opened, so there is nothing to reseal.
        assert_eq!(
            reseal_object(&storable_object(&plain, &k), &k).unwrap(),
            None
        );
        // A scheme-1 value under another key is refused, not copied.
        assert!(reseal_object(&v1, &key(8)).is_err());
    }

    #[test]
    fn secret_key_debug_is_redacted() {
        assert_eq!(format!("{:?}", key(0xab)), "SecretKey(..)");
    }
}
