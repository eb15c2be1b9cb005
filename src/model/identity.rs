//! Owns how an App is named in the store and on its objects: an App of the configuration file
//! by its name, an App object by its namespace and name (`NAMESPACE.NAME`), so that two App
//! objects of one name in two namespaces are two Apps, never one history and one inventory.
//!
//! Why `.`: App names (the file's and App objects') and namespaces are DNS-1123 labels, which
//! have no `.`, so `NAMESPACE.NAME` can never be a file App's name, and it splits back at its
//! one dot. Why a hashed form: the identity is also the value of the `reckon.dev/app` label on
//! every object the App applies (watches select on it), and a label value holds at most 63
//! characters; `NAMESPACE.NAME` holds up to 127. A longer one becomes its first 50 characters,
//! `_` and 12 hex digits of its SHA-256: `_` appears in no name or namespace, so a hashed form
//! can equal no other App's identity, and it is the same on every agent and every release.

use sha2::{Digest as _, Sha256};

/// The most a label value may hold.
pub const MAX_LABEL_VALUE: usize = 63;
const HASHED_PREFIX: usize = 50;
const HASH_HEX: usize = 12;

/// The identity of the App object `namespace`/`name`: in the store (events, indexes,
/// projections), in the API's and the CLI's App names, and in its objects' `reckon.dev/app`
/// label.
pub fn of_object(namespace: &str, name: &str) -> String {
    let full = format!("{namespace}.{name}");
    if full.len() <= MAX_LABEL_VALUE {
        return full;
    }
    let hash = hex::encode(Sha256::digest(full.as_bytes()));
    // Names and namespaces are ASCII (DNS-1123), so the prefix cuts no character.
    format!("{}_{}", &full[..HASHED_PREFIX], &hash[..HASH_HEX])
}

/// An App as a person names it on the command line or in an API path: `NAMESPACE/NAME` for an
/// App object (turned into its identity), anything else as it is (a file App's name, or an
/// identity).
pub fn from_user(text: &str) -> String {
    match text.split_once('/') {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
            of_object(namespace, name)
        }
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_object_is_its_namespace_and_name() {
        assert_eq!(of_object("team-a", "web"), "team-a.web");
        assert_ne!(of_object("team-a", "web"), of_object("team-b", "web"));
        // Never a file App's name: those are DNS-1123 labels, without a dot.
        assert!(of_object("a", "b").contains('.'));
        assert_eq!(from_user("team-a/web"), "team-a.web");
        assert_eq!(from_user("team-a.web"), "team-a.web");
        assert_eq!(from_user("shop"), "shop");
        assert_eq!(from_user("/web"), "/web");
    }

    #[test]
    fn a_long_identity_is_a_stable_hashed_label_value() {
        let ns = "n".repeat(63);
        let name = "w".repeat(63);
        let id = of_object(&ns, &name);
        assert_eq!(id.len(), MAX_LABEL_VALUE);
        assert_eq!(id, of_object(&ns, &name), "stable");
        assert!(id.starts_with(&ns[..50]));
        assert_eq!(id.as_bytes()[50], b'_');
        assert!(id[51..].chars().all(|c| c.is_ascii_hexdigit()));
        // Names differing only past the prefix are still different Apps.
        let other = of_object(&ns, &"x".repeat(63));
        assert_ne!(id, other);
        assert_eq!(id[..50], other[..50]);
        // Exactly 63 characters is not hashed.
        let fits = of_object(&"a".repeat(31), &"b".repeat(31));
        assert_eq!(fits.len(), 63);
        assert!(!fits.contains('_'));
        // A valid label value: alphanumeric at both ends, [-_.a-z0-9] between.
        for v in [&id, &fits] {
            let b = v.as_bytes();
            assert!(b[0].is_ascii_alphanumeric() && b[b.len() - 1].is_ascii_alphanumeric());
            assert!(
                b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-_.".contains(c))
            );
        }
    }
}
