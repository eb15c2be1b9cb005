//! Owns checkpoints of the chain head: a sequence number and its hash, signed with an ed25519
//! key kept apart from the store, appended as JSON lines to a file outside it, and checked
//! against the log by `store verify --checkpoint`.
//!
//! Why: the chain is unkeyed SHA-256, so someone who can write the store's disk can edit an
//! event and recompute every later hash; the store then verifies. A head recorded earlier,
//! somewhere that person cannot rewrite, and signed with a key they do not hold, tells the
//! rewritten history apart: its hash at that seq differs (docs/storage.md, "What verify proves").
//!
//! The signed message is `"reckon checkpoint v1\0" · seq (u64 BE) · hash (32) · time (i64 µs
//! BE)`. A line: `{"seq":N,"hash":"<hex>","time":"<RFC 3339>","key":"<hex public key>",
//! "signature":"<hex>"}`. The `key` field says which key signed; verify trusts only the key the
//! operator gives it, never the one a line names.

use crate::event::Digest;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What is signed starts with this, so a checkpoint signature is never valid for anything else.
const DOMAIN: &[u8] = b"reckon checkpoint v1\0";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint signing key: {0}")]
    Key(#[from] crate::agent::key::KeyError),
    #[error("{given}: not an ed25519 public key (64 hex digits, or a file holding them): {reason}")]
    PublicKey { given: String, reason: String },
    #[error("writing the checkpoint file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the checkpoint file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line}: not a checkpoint: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("reading the store's HEAD in {path}: {source}")]
    Head {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One signed checkpoint of the chain head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: Digest,
    /// When it was taken (µs precision, as signed).
    pub time: DateTime<Utc>,
    pub key: [u8; 32],
    pub signature: [u8; 64],
}

#[derive(Serialize, Deserialize)]
struct Line {
    seq: u64,
    hash: String,
    time: String,
    key: String,
    signature: String,
}

fn message(seq: u64, hash: &Digest, time: DateTime<Utc>) -> Vec<u8> {
    let mut m = DOMAIN.to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&hash.0);
    m.extend_from_slice(&time.timestamp_micros().to_be_bytes());
    m
}

impl Checkpoint {
    /// Whether `key` signed this checkpoint (and the line's fields are the ones signed).
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), String> {
        if self.key != key.to_bytes() {
            return Err(format!(
                "signed by key {}, not the key given ({})",
                hex::encode(self.key),
                hex::encode(key.to_bytes())
            ));
        }
        key.verify(
            &message(self.seq, &self.hash, self.time),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| "the signature does not verify: the line was altered or forged".to_string())
    }

    /// The JSON line (without the newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(&Line {
            seq: self.seq,
            hash: self.hash.to_hex(),
            time: self.time.to_rfc3339_opts(SecondsFormat::Micros, true),
            key: hex::encode(self.key),
            signature: hex::encode(self.signature),
        })
        .expect("strings and an integer serialize")
    }

    pub fn from_line(text: &str) -> Result<Checkpoint, String> {
        let l: Line = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let hash = Digest::from_hex(&l.hash).ok_or("hash: not 64 hex digits")?;
        let time = DateTime::parse_from_rfc3339(&l.time)
            .map_err(|e| format!("time: {e}"))?
            .with_timezone(&Utc);
        let key = hex::decode(&l.key)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or("key: not 64 hex digits")?;
        let signature = hex::decode(&l.signature)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or("signature: not 128 hex digits")?;
        Ok(Checkpoint {
            seq: l.seq,
            hash,
            time,
            key,
            signature,
        })
    }
}

impl From<&Checkpoint> for crate::crd::StatusCheckpoint {
    fn from(cp: &Checkpoint) -> Self {
        let line: Line = serde_json::from_str(&cp.to_line()).expect("our own line");
        crate::crd::StatusCheckpoint {
            seq: line.seq,
            hash: line.hash,
            time: line.time,
            key: line.key,
            signature: line.signature,
        }
    }
}

impl TryFrom<&crate::crd::StatusCheckpoint> for Checkpoint {
    type Error = String;
    fn try_from(s: &crate::crd::StatusCheckpoint) -> Result<Self, String> {
        let line = serde_json::to_string(&Line {
            seq: s.seq,
            hash: s.hash.clone(),
            time: s.time.clone(),
            key: s.key.clone(),
            signature: s.signature.clone(),
        })
        .map_err(|e| e.to_string())?;
        Checkpoint::from_line(&line)
    }
}

/// The signing side: the agent (and `reckon store checkpoint`) hold it.
pub struct Signer {
    key: SigningKey,
}

impl Signer {
    /// The key whose 32-byte seed is in `path` (64 hex digits, mode 0600), created on first use
    /// like the secret key. Keep it off the store's volume: whoever holds it can sign a
    /// rewritten history.
    pub fn load_or_create(path: &Path) -> Result<Signer, CheckpointError> {
        let seed = crate::agent::key::load_or_create_bytes(path)?;
        Ok(Signer::from_seed(seed))
    }

    pub fn from_seed(seed: [u8; 32]) -> Signer {
        Signer {
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// A checkpoint of `seq` and `hash`, taken at `time` (truncated to µs, as signed).
    pub fn sign(&self, seq: u64, hash: Digest, time: DateTime<Utc>) -> Checkpoint {
        let time = DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time);
        Checkpoint {
            seq,
            hash,
            time,
            key: self.key.verifying_key().to_bytes(),
            signature: self.key.sign(&message(seq, &hash, time)).to_bytes(),
        }
    }
}

/// A public key given on the command line: 64 hex digits, or a file holding them.
pub fn parse_public_key(given: &str) -> Result<VerifyingKey, CheckpointError> {
    let bad = |reason: String| CheckpointError::PublicKey {
        given: given.to_owned(),
        reason,
    };
    let text = match hex::decode(given.trim()) {
        Ok(_) => given.trim().to_owned(),
        Err(_) => std::fs::read_to_string(given)
            .map_err(|e| bad(e.to_string()))?
            .trim()
            .to_owned(),
    };
    let bytes: [u8; 32] = hex::decode(&text)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| bad("not 64 hex digits".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| bad(e.to_string()))
}

/// Appends `cp` to the file at `path` (created 0644 when missing) and syncs it before
/// returning: a checkpoint reported as written survives a crash. Append-only: earlier lines
/// are never rewritten.
pub fn append(path: &Path, cp: &Checkpoint) -> Result<(), CheckpointError> {
    let err = |source| CheckpointError::Write {
        path: path.to_owned(),
        source,
    };
    let existed = path.exists();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    let mut line = cp.to_line().into_bytes();
    line.push(b'\n');
    // One write of the whole line: with O_APPEND it lands after whatever is there, whole.
    file.write_all(&line).map_err(err)?;
    file.sync_data().map_err(err)?;
    if !existed {
        // The file's name must survive a crash too.
        let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => dir,
            None => Path::new("."),
        };
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
    }
    Ok(())
}

/// Every checkpoint in the file at `path`, in file order. A line that does not parse is an
/// error naming it (a torn last line after a crash included: the operator decides).
pub fn read(path: &Path) -> Result<Vec<Checkpoint>, CheckpointError> {
    let text = std::fs::read_to_string(path).map_err(|source| CheckpointError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            Checkpoint::from_line(l).map_err(|reason| CheckpointError::Parse {
                path: path.to_owned(),
                line: i + 1,
                reason,
            })
        })
        .collect()
}

/// A checkpoint of the store's flushed head (its `HEAD` file); `None` before its first flush.
pub fn of_store(
    store: &Path,
    signer: &Signer,
    time: DateTime<Utc>,
) -> Result<Option<Checkpoint>, CheckpointError> {
    let head = super::sled_engine::read_head(store).map_err(|source| CheckpointError::Head {
        path: store.to_owned(),
        source,
    })?;
    Ok(head.map(|(seq, hash)| signer.sign(seq, hash, time)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(micros: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(micros).unwrap()
    }

    #[test]
    fn a_checkpoint_round_trips_through_its_line_and_verifies() {
        let s = Signer::from_seed([7; 32]);
        let cp = s.sign(42, Digest::of(b"head"), t(1_700_000_000_123_456));
        let back = Checkpoint::from_line(&cp.to_line()).unwrap();
        assert_eq!(back, cp);
        back.verify(&s.public_key()).unwrap();
    }

    #[test]
    fn an_altered_line_or_another_key_does_not_verify() {
        let s = Signer::from_seed([7; 32]);
        let cp = s.sign(42, Digest::of(b"head"), t(1_700_000_000_000_000));
        for altered in [
            Checkpoint {
                seq: 41,
                ..cp.clone()
            },
            Checkpoint {
                hash: Digest::of(b"other"),
                ..cp.clone()
            },
            Checkpoint {
                time: t(1_700_000_000_000_001),
                ..cp.clone()
            },
        ] {
            let err = altered.verify(&s.public_key()).unwrap_err();
            assert!(err.contains("does not verify"), "{err}");
        }
        // A line signed by someone else's key, naming that key, is refused for the key given.
        let forged = Signer::from_seed([8; 32]).sign(42, cp.hash, cp.time);
        let err = forged.verify(&s.public_key()).unwrap_err();
        assert!(err.contains("not the key given"), "{err}");
        // And naming the right key does not help a forged signature.
        let relabelled = Checkpoint {
            key: cp.key,
            ..forged
        };
        assert!(relabelled.verify(&s.public_key()).is_err());
    }

    #[test]
    fn checkpoints_append_to_a_file_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp/head.jsonl");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let s = Signer::from_seed([1; 32]);
        let a = s.sign(1, Digest::of(b"a"), t(1));
        let b = s.sign(2, Digest::of(b"b"), t(2));
        append(&path, &a).unwrap();
        append(&path, &b).unwrap();
        assert_eq!(read(&path).unwrap(), vec![a, b]);
        std::fs::write(&path, "{\"seq\":1}\n").unwrap();
        let err = read(&path).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn a_public_key_is_given_as_hex_or_as_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = Signer::from_seed([3; 32]);
        let hex_key = hex::encode(s.public_key().to_bytes());
        assert_eq!(parse_public_key(&hex_key).unwrap(), s.public_key());
        let file = dir.path().join("checkpoint.pub");
        std::fs::write(&file, format!("{hex_key}\n")).unwrap();
        assert_eq!(
            parse_public_key(file.to_str().unwrap()).unwrap(),
            s.public_key()
        );
        assert!(parse_public_key("abcd").is_err());
    }

    #[test]
    fn a_checkpoint_in_an_app_status_is_the_same_signed_checkpoint() {
        let s = Signer::from_seed([5; 32]);
        let cp = s.sign(9, Digest::of(b"h"), t(1_700_000_000_000_001));
        let status = crate::crd::StatusCheckpoint::from(&cp);
        let back = Checkpoint::try_from(&status).unwrap();
        assert_eq!(back, cp);
        back.verify(&s.public_key()).unwrap();
    }

    #[test]
    fn the_signing_key_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.key");
        let a = Signer::load_or_create(&path).unwrap().public_key();
        let b = Signer::load_or_create(&path).unwrap().public_key();
        assert_eq!(a, b);
    }
}
