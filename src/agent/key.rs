//! Owns the agent's secret key: 32 random bytes in a file (mode 0600) that keys the hashes of
//! Secret values in the log and blob store. Losing it does not lose history; it only makes
//! every Secret look changed once (its hashes no longer match), so it is re-applied. The same
//! file format, created the same way, holds the checkpoint signing key's seed
//! (`store::checkpoint`).

use crate::render::SecretKey;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading the secret key {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: a key file holds 64 hex digits, found {found} bytes of something else")]
    Malformed { path: PathBuf, found: usize },
    #[error("creating the secret key {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The key file inside a store directory.
pub fn default_path(store: &Path) -> PathBuf {
    store.join("secret.key")
}

/// Reads the key, or creates one when the file does not exist.
pub fn load_or_create(path: &Path) -> Result<SecretKey, KeyError> {
    load_or_create_bytes(path).map(SecretKey::new)
}

/// 32 random bytes kept in a file as 64 hex digits (mode 0600), created whole on first use:
/// the secret key, and the seed of the checkpoint signing key (`store::checkpoint`).
pub fn load_or_create_bytes(path: &Path) -> Result<[u8; 32], KeyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let trimmed = text.trim();
            let bytes: [u8; 32] = hex::decode(trimmed)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| KeyError::Malformed {
                    path: path.to_path_buf(),
                    found: trimmed.len(),
                })?;
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(source) => Err(KeyError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn create(path: &Path) -> Result<[u8; 32], KeyError> {
    let err = |source| KeyError::Create {
        path: path.to_path_buf(),
        source,
    };
    let bytes: [u8; 32] = rand::random();
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir,
        None => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    // Written whole and synced under a temporary name (mode 0600), then linked into place only
    // if no key is there yet: another agent starting at once never reads a half-written key,
    // and a crash leaves either no key or the whole one.
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    file.write_all(hex::encode(bytes).as_bytes())
        .and_then(|_| file.as_file().sync_all())
        .map_err(err)?;
    match file.persist_noclobber(path) {
        Ok(_) => {
            // The new name must survive a crash too: losing the key unseals recorded Secrets.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(err)?;
            Ok(bytes)
        }
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_bytes(path),
        Err(e) => Err(err(e.error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_is_read_back_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/secret.key");
        let first = load_or_create(&path).unwrap();
        assert_eq!(load_or_create(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            load_or_create(&other.path().join("secret.key")).unwrap(),
            first,
            "each agent gets its own random key"
        );
    }

    /// Two agents starting at once on one store: the one that lost the race to create the key
    /// read the winner's file while it was still empty and failed as "malformed". The key file
    /// must appear whole or not at all.
    #[test]
    fn agents_starting_together_all_get_the_one_key() {
        for _ in 0..50 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("secret.key");
            let keys: Vec<Result<SecretKey, String>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|_| s.spawn(|| load_or_create(&path).map_err(|e| e.to_string())))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let first = keys[0].clone().unwrap();
            for key in keys {
                assert!(key.as_ref() == Ok(&first), "{:?}", key.err());
            }
            // Nothing but the key is left in the directory.
            let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
            assert_eq!(names.len(), 1, "{names:?}");
        }
    }

    #[test]
    fn a_damaged_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        std::fs::write(&path, "not hex").unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(matches!(err, KeyError::Malformed { .. }), "{err}");
        assert!(err.to_string().contains("secret.key"));
    }
}
