//! Owns API authentication: the bearer tokens the agent accepts (read-only and admin), loading
//! them from files, and checking a request's `Authorization` header in constant time.

use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// Shorter tokens are refused at load time: a guessable token is worse than none.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading the token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {path} line {line}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("token file {path} holds no token (one per line: TOKEN or NAME TOKEN)")]
    Empty { path: PathBuf },
}

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// GET requests only.
    Read,
    /// Everything, including rollback and resume.
    Admin,
}

/// Who made a request: recorded as the actor of the intents it records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `api:NAME` (NAME from the token file, or `read`/`admin` when the line has no name).
    pub actor: String,
    pub role: Role,
}

struct Token {
    /// SHA-256 of the token: compared in constant time and of fixed length, so neither the
    /// content nor the length of a configured token leaks through timing.
    hash: [u8; 32],
    identity: Identity,
}

/// The tokens the agent accepts. Empty means the API refuses every request (the safe default:
/// an agent started without tokens does not expose its history or accept rollbacks).
#[derive(Default)]
pub struct Tokens {
    tokens: Vec<Token>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.tokens.len())
            .finish()
    }
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Adds one token (`name` defaults to the role's name).
    pub fn add(&mut self, token: &str, name: Option<&str>, role: Role) {
        let name = name.unwrap_or(match role {
            Role::Read => "read",
            Role::Admin => "admin",
        });
        self.tokens.push(Token {
            hash: hash(token),
            identity: Identity {
                actor: format!("api:{name}"),
                role,
            },
        });
    }

    /// Loads a token file: one token per line, `TOKEN` or `NAME TOKEN`; blank lines and lines
    /// starting with `#` are skipped.
    pub fn load(&mut self, path: &Path, role: Role) -> Result<(), AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_owned(),
            source,
        })?;
        let before = self.tokens.len();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let invalid = |reason: String| AuthError::Invalid {
                path: path.to_owned(),
                line: i + 1,
                reason,
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (name, token) = match fields.as_slice() {
                [token] => (None, *token),
                [name, token] => (Some(*name), *token),
                _ => {
                    return Err(invalid(format!(
                        "expected TOKEN or NAME TOKEN, found {} fields",
                        fields.len()
                    )));
                }
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(invalid(format!(
                    "the token is {} characters; at least {MIN_TOKEN_LEN} are required",
                    token.len()
                )));
            }
            if let Some(name) = name
                && !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
            {
                return Err(invalid(format!(
                    "name {name:?} may only hold letters, digits and - _ . @"
                )));
            }
            self.add(token, name, role);
        }
        if self.tokens.len() == before {
            return Err(AuthError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(())
    }

    /// The identity of a bearer token, if it is one of ours. Every configured token is compared
    /// (no early exit), each in constant time.
    pub fn check(&self, presented: &str) -> Option<Identity> {
        let presented = hash(presented);
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.hash.ct_eq(&presented)) && found.is_none() {
                found = Some(t.identity.clone());
            }
        }
        found
    }
}

/// The token of an `Authorization: Bearer TOKEN` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_resolve_to_their_role_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let read = dir.path().join("read");
        let admin = dir.path().join("admin");
        std::fs::write(
            &read,
            "# readers\nrrrrrrrrrrrrrrrrrrrr\n\nci rrrrrrrrrrrrrrrrrrr2\n",
        )
        .unwrap();
        std::fs::write(&admin, "alice@example.com aaaaaaaaaaaaaaaaaaaa\n").unwrap();
        let mut t = Tokens::default();
        t.load(&read, Role::Read).unwrap();
        t.load(&admin, Role::Admin).unwrap();
        assert_eq!(
            t.check("rrrrrrrrrrrrrrrrrrrr"),
            Some(Identity {
                actor: "api:read".into(),
                role: Role::Read
            })
        );
        assert_eq!(t.check("rrrrrrrrrrrrrrrrrrr2").unwrap().actor, "api:ci");
        assert_eq!(
            t.check("aaaaaaaaaaaaaaaaaaaa"),
            Some(Identity {
                actor: "api:alice@example.com".into(),
                role: Role::Admin
            })
        );
        assert_eq!(t.check("aaaaaaaaaaaaaaaaaaa"), None);
        assert_eq!(t.check(""), None);
    }

    #[test]
    fn bad_token_files_name_the_line_and_cause() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "ok-name aaaaaaaaaaaaaaaaaaaa\nshort\n").unwrap();
        let e = Tokens::default().load(&f, Role::Read).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(e.to_string().contains("at least 16"), "{e}");
        std::fs::write(&f, "# only a comment\n").unwrap();
        let e = Tokens::default().load(&f, Role::Read).unwrap_err();
        assert!(e.to_string().contains("holds no token"), "{e}");
        let e = Tokens::default()
            .load(&dir.path().join("missing"), Role::Read)
            .unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }
}
