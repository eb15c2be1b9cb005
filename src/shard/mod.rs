//! Owns sharding: which replica of N reconciles an App (the `reckon.dev/shard` label or the
//! file's `shard:` key, else a jump consistent hash of `namespace/name`), a replica's own index
//! (flags or a StatefulSet pod's hostname), and the merge of history pages from every shard
//! ([`merge`]) that the API's fan-out serves.
//!
//! Ownership is a pure function of the App's identity and N: every replica computes the same
//! answer without talking to the others, so a restart with another N needs no coordination.
//! Jump consistent hash (Lamping & Veach 2014) moves only the Apps that must move when N grows
//! (about 1/N of them), and needs no table, unlike a ring.

pub mod merge;

use sha2::{Digest, Sha256};

/// The label on an App object that pins it to a shard (`"0"`..`"N-1"`).
pub const LABEL: &str = "reckon.dev/shard";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("--shards {count}: must be at least 1")]
    NoShards { count: u32 },
    #[error("--shard {index}: must be below --shards {count} (shards are numbered from 0)")]
    IndexOutOfRange { index: u32, count: u32 },
    #[error(
        "hostname {hostname}: no StatefulSet ordinal suffix (expected NAME-ORDINAL, e.g. \
         reckon-2) for --shard-from-hostname"
    )]
    NoOrdinal { hostname: String },
    #[error(
        "App {app}: {LABEL}={value} is not a shard of this fleet (a number from 0 to {last}); \
         no shard reconciles it until it is fixed"
    )]
    BadPin {
        app: String,
        value: String,
        last: u32,
    },
}

/// This replica's place in the fleet: shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shards {
    pub index: u32,
    pub count: u32,
}

impl Default for Shards {
    /// One shard owning everything (an agent started without sharding flags).
    fn default() -> Self {
        Shards { index: 0, count: 1 }
    }
}

impl Shards {
    pub fn new(index: u32, count: u32) -> Result<Shards, ShardError> {
        if count == 0 {
            return Err(ShardError::NoShards { count });
        }
        if index >= count {
            return Err(ShardError::IndexOutOfRange { index, count });
        }
        Ok(Shards { index, count })
    }

    /// The shard whose StatefulSet pod has this hostname (`reckon-2` → 2).
    pub fn from_hostname(hostname: &str, count: u32) -> Result<Shards, ShardError> {
        Shards::new(ordinal(hostname)?, count)
    }

    pub fn is_sharded(&self) -> bool {
        self.count > 1
    }

    /// Whether this replica reconciles the App (see [`owner`]).
    pub fn owns(&self, namespace: &str, name: &str, pin: Option<&str>) -> Result<bool, ShardError> {
        Ok(owner(namespace, name, pin, self.count)? == self.index)
    }
}

/// The ordinal a StatefulSet gives its pod as the hostname's suffix after the last `-`.
pub fn ordinal(hostname: &str) -> Result<u32, ShardError> {
    // A pod's hostname is its name; a FQDN (reckon-2.reckon-shards...) starts with it.
    let first = hostname.split('.').next().unwrap_or_default();
    first
        .rsplit_once('-')
        .filter(|(name, _)| !name.is_empty())
        .and_then(|(_, n)| {
            (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .then(|| n.parse().ok())
                .flatten()
        })
        .ok_or_else(|| ShardError::NoOrdinal {
            hostname: hostname.to_string(),
        })
}

/// The shard that reconciles the App `namespace/name` (file Apps: an empty namespace) in a fleet
/// of `count`: the pin (label or `shard:` key) when given, else the jump consistent hash of
/// `namespace/name`. A pin that is not a shard of this fleet is an error naming the App: it is
/// not silently hashed, because the operator meant a particular replica.
pub fn owner(
    namespace: &str,
    name: &str,
    pin: Option<&str>,
    count: u32,
) -> Result<u32, ShardError> {
    let count = count.max(1);
    if let Some(value) = pin {
        let app = if namespace.is_empty() {
            name.to_string()
        } else {
            format!("{namespace}/{name}")
        };
        return value
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n < count)
            .ok_or(ShardError::BadPin {
                app,
                value: value.to_string(),
                last: count - 1,
            });
    }
    Ok(jump(key(namespace, name), count))
}

/// A stable 64-bit key: SHA-256 rather than std's hasher, whose output may change between Rust
/// releases (an upgrade must not reshuffle the fleet).
fn key(namespace: &str, name: &str) -> u64 {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Jump consistent hash: the bucket of `key` among `buckets`; growing `buckets` by one moves a
/// key only to the new bucket, and only with probability 1/buckets.
pub fn jump(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps(n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("team-{}", i % 17), format!("app-{i}")))
            .collect()
    }

    #[test]
    fn growing_the_fleet_moves_about_one_app_in_n_and_only_to_the_new_shard() {
        let all = apps(10_000);
        for n in 1..8u32 {
            let mut moved = 0;
            for (ns, name) in &all {
                let before = owner(ns, name, None, n).unwrap();
                let after = owner(ns, name, None, n + 1).unwrap();
                if before != after {
                    assert_eq!(after, n, "{ns}/{name} moved between old shards");
                    moved += 1;
                }
            }
            let expected = all.len() as f64 / f64::from(n + 1);
            let share = moved as f64 / expected;
            assert!(
                (0.85..1.15).contains(&share),
                "{n}→{}: {moved} moved, expected about {expected}",
                n + 1
            );
        }
    }

    #[test]
    fn apps_spread_evenly() {
        let all = apps(10_000);
        for n in [2u32, 3, 5, 8] {
            let mut counts = vec![0usize; n as usize];
            for (ns, name) in &all {
                counts[owner(ns, name, None, n).unwrap() as usize] += 1;
            }
            let mean = all.len() as f64 / f64::from(n);
            for (i, c) in counts.iter().enumerate() {
                let dev = (*c as f64 - mean).abs() / mean;
                assert!(dev < 0.1, "N={n}: shard {i} has {c}, mean {mean}");
            }
        }
    }

    #[test]
    fn ownership_is_stable_and_namespaced() {
        // Fixed values: a change of hash would reshuffle every fleet on upgrade.
        assert_eq!(owner("", "web", None, 1).unwrap(), 0);
        let a = owner("shop", "web", None, 16).unwrap();
        assert_eq!(a, owner("shop", "web", None, 16).unwrap());
        let spread: std::collections::BTreeSet<u32> = (0..50)
            .map(|i| owner(&format!("ns{i}"), "web", None, 16).unwrap())
            .collect();
        assert!(
            spread.len() > 8,
            "the namespace is part of the key: {spread:?}"
        );
    }

    #[test]
    fn a_pin_wins_and_a_bad_pin_names_the_app_and_value() {
        for (ns, name) in apps(50) {
            assert_eq!(owner(&ns, &name, Some("1"), 2).unwrap(), 1);
            assert_eq!(owner(&ns, &name, Some("0"), 2).unwrap(), 0);
        }
        let e = owner("shop", "web", Some("2"), 2).unwrap_err();
        assert_eq!(
            e,
            ShardError::BadPin {
                app: "shop/web".into(),
                value: "2".into(),
                last: 1
            }
        );
        let text = e.to_string();
        assert!(text.contains("shop/web") && text.contains("=2"), "{text}");
        assert!(
            owner("", "web", Some("x"), 2)
                .unwrap_err()
                .to_string()
                .contains("App web:")
        );
        assert!(owner("", "web", Some("-1"), 2).is_err());
    }

    #[test]
    fn the_index_comes_from_flags_or_the_pod_hostname() {
        assert_eq!(Shards::new(1, 2).unwrap(), Shards { index: 1, count: 2 });
        assert!(Shards::new(2, 2).is_err());
        assert!(Shards::new(0, 0).is_err());
        assert_eq!(Shards::from_hostname("reckon-2", 3).unwrap().index, 2);
        assert_eq!(ordinal("my-reckon-10").unwrap(), 10);
        assert_eq!(
            ordinal("reckon-1.reckon-shards.reckon.svc.cluster.local").unwrap(),
            1
        );
        for bad in ["reckon", "reckon-", "-3", "reckon-x1", ""] {
            let e = ordinal(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("hostname {bad}:")), "{e}");
        }
        assert!(Shards::from_hostname("reckon-3", 3).is_err());
        let one = Shards::default();
        assert!(!one.is_sharded());
        assert!(one.owns("any", "thing", None).unwrap());
    }
}
