//! Owns which of an App's revisions stay in memory and how the others are kept in the store:
//! the residency policy, the per-App bookkeeping the projections carry ([`Stored`]), the keys
//! and values of stored revisions, and the merge of resident and stored entries. Pure; the
//! reads and writes are the engine's (`sled_engine::revisions`).
//!
//! Why: an App's revision table grows by one entry per commit for ever (a million revisions
//! are ~500 MB of projections), yet the agent's passes only ever look at a handful of them
//! (the heads, the pinned and the applied revision). The rest is history that queries read
//! from the store, a page or an App at a time.
//!
//! Invariant: the projections (in memory, or the snapshot) plus the App's stored entries under
//! its current epoch are exactly the App's state; a resident entry shadows a stored one of the
//! same SHA (an entry faulted back in stays stored until it is evicted again and overwritten).

use super::{AppState, ProjectionError, RevisionEntry};
use crate::codec;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How many of an App's most recent revisions (by first seq) stay resident beside the ones
/// its passes read. Why 8: a pass needs none of them; they spare the first page of
/// `revisions` and the usual rollback by a few steps a read of the store, at ~2 KB per App.
pub const RECENT: usize = 8;

/// First byte of every stored revision's key in the `snapshots` tree (the snapshot's own key,
/// `projections`, starts with `p`).
pub const KEY_PREFIX: u8 = b'r';

/// Version byte in front of a stored revision's value.
const ENTRY_VERSION: u8 = 1;

/// Per App: which generation of stored revisions is the App's, and how many of its revisions
/// are in the store only (not resident), so counting them reads nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The seq of the App's last AppReset or AppRenamed (0: none). Both replace the App's state
    /// inside a pure fold, which cannot delete what the store holds: the entries of an earlier
    /// epoch are no longer the App's (and are deleted with the next snapshot).
    pub epoch: u64,
    /// Revisions under `epoch` in the store and not resident.
    pub count: u64,
}

/// The SHAs of `state`'s revisions that stay in memory: the observed and deployable heads, the
/// pinned revision, the revision last applied (what a pass reads) and the `recent` newest.
pub fn resident(state: &AppState, recent: usize) -> BTreeSet<&str> {
    let mut keep: BTreeSet<&str> = [
        state.observed_head.as_deref(),
        state.deployable_head.as_deref(),
        state.intent.revision.as_deref(),
        // Always resident: an evicted entry's `applied_at` was not the latest when it was
        // evicted, and only a SyncFinished, which faults its revision in, moves it.
        state.applied_revision(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut by_age: Vec<(u64, &str)> = state
        .revisions
        .iter()
        .map(|(sha, r)| (r.first_seq, sha.as_str()))
        .collect();
    by_age.sort_unstable_by(|a, b| b.cmp(a));
    keep.extend(by_age.into_iter().take(recent).map(|(_, sha)| sha));
    keep
}

/// The SHAs of `state`'s revisions to move to the store.
pub fn evictable(state: &AppState, recent: usize) -> Vec<String> {
    let keep = resident(state, recent);
    state
        .revisions
        .keys()
        .filter(|sha| !keep.contains(sha.as_str()))
        .cloned()
        .collect()
}

/// `r` · app length (u32 BE) · app: every stored revision of `app`, whatever its epoch.
pub fn app_prefix(app: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + app.len() + 8 + 40);
    k.push(KEY_PREFIX);
    k.extend_from_slice(&(app.len() as u32).to_be_bytes());
    k.extend_from_slice(app.as_bytes());
    k
}

/// [`app_prefix`] · epoch (u64 BE): the stored revisions of one generation of `app`, in SHA
/// order (so a SHA prefix is a key range).
pub fn epoch_prefix(app: &str, epoch: u64) -> Vec<u8> {
    let mut k = app_prefix(app);
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

pub fn key(app: &str, epoch: u64, sha: &str) -> Vec<u8> {
    let mut k = epoch_prefix(app, epoch);
    k.extend_from_slice(sha.as_bytes());
    k
}

/// `(app, epoch, sha)` of a stored revision's key; `None` for any other key.
pub fn parse_key(key: &[u8]) -> Option<(&str, u64, &str)> {
    let rest = key.strip_prefix(&[KEY_PREFIX])?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let app = std::str::from_utf8(rest.get(4..4 + len)?).ok()?;
    let epoch = u64::from_be_bytes(rest.get(4 + len..12 + len)?.try_into().ok()?);
    let sha = std::str::from_utf8(rest.get(12 + len..)?).ok()?;
    Some((app, epoch, sha))
}

pub fn encode_entry(entry: &RevisionEntry) -> Result<Vec<u8>, ProjectionError> {
    let mut out = vec![ENTRY_VERSION];
    out.extend(codec::encode(entry)?);
    Ok(out)
}

pub fn decode_entry(bytes: &[u8]) -> Result<RevisionEntry, ProjectionError> {
    match bytes.first() {
        None => Err(ProjectionError::Empty),
        Some(&ENTRY_VERSION) => Ok(codec::decode(&bytes[1..])?),
        Some(&v) => Err(ProjectionError::UnknownVersion(v)),
    }
}

/// `resident` with the `stored` entries it does not hold: a resident entry is newer than a
/// stored one of the same SHA (faulted in and changed since).
pub fn merge(
    resident: &BTreeMap<String, RevisionEntry>,
    stored: impl IntoIterator<Item = (String, RevisionEntry)>,
) -> BTreeMap<String, RevisionEntry> {
    let mut all = resident.clone();
    for (sha, entry) in stored {
        all.entry(sha).or_insert(entry);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::projection::Intent;
    use chrono::DateTime;

    fn entry(first_seq: u64, applied: Option<i64>) -> RevisionEntry {
        RevisionEntry {
            first_seen: DateTime::from_timestamp(first_seq as i64, 0).unwrap(),
            applied_at: applied.map(|t| DateTime::from_timestamp(t, 0).unwrap()),
            outcome: None,
            digest: None,
            first_seq,
            commit_seq: Some(first_seq),
            objects_changed: 0,
        }
    }

    fn sha(n: u64) -> String {
        format!("{n:040x}")
    }

    /// 20 revisions, 1..=20 by age; 3 applied last (at 100), 15 observed, 16 deployable
    /// (17 blocked after it), 5 pinned.
    fn app() -> AppState {
        let mut s = AppState::default();
        for n in 1..=20 {
            let applied = match n {
                3 => Some(100),
                2 | 4 => Some(50),
                _ => None,
            };
            s.revisions.insert(sha(n), entry(n, applied));
        }
        s.observed_head = Some(sha(15));
        s.deployable_head = Some(sha(16));
        s.intent = Intent {
            revision: Some(sha(5)),
            ..Intent::default()
        };
        s
    }

    #[test]
    fn heads_pin_last_applied_and_the_newest_stay_resident() {
        let s = app();
        let keep = resident(&s, 4);
        let want: BTreeSet<String> = [15, 16, 5, 3, 17, 18, 19, 20].map(sha).into();
        assert_eq!(
            keep.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
            want
        );
        let gone = evictable(&s, 4);
        assert_eq!(gone.len(), 12);
        assert!(gone.iter().all(|g| !keep.contains(g.as_str())));
        // A revision applied at the same time as another: the greatest SHA is the applied
        // one, as the reconciler picks it.
        let mut tie = s.clone();
        tie.revisions.get_mut(&sha(9)).unwrap().applied_at = DateTime::from_timestamp(100, 0);
        assert!(resident(&tie, 0).contains(sha(9).as_str()));
        assert!(!resident(&tie, 0).contains(sha(3).as_str()));
    }

    #[test]
    fn an_app_with_few_revisions_keeps_all_of_them() {
        let mut s = AppState::default();
        for n in 1..=RECENT as u64 {
            s.revisions.insert(sha(n), entry(n, None));
        }
        assert!(evictable(&s, RECENT).is_empty());
        assert!(evictable(&AppState::default(), RECENT).is_empty());
    }

    #[test]
    fn keys_order_by_app_epoch_and_sha_and_parse_back() {
        let k = key("team-a.shop", 7, &sha(1));
        assert_eq!(parse_key(&k), Some(("team-a.shop", 7, sha(1).as_str())));
        assert!(k.starts_with(&epoch_prefix("team-a.shop", 7)));
        assert!(k.starts_with(&app_prefix("team-a.shop")));
        // One App's keys are not a prefix range of another whose name extends it.
        assert!(!key("shop2", 0, &sha(1)).starts_with(&app_prefix("shop")));
        assert!(key("a", 0, &sha(2)) > key("a", 0, &sha(1)));
        assert!(key("a", 1, &sha(0)) > key("a", 0, &sha(9)));
        assert_eq!(parse_key(b"projections"), None);
        assert_eq!(parse_key(&k[..k.len() - 41]), None);
    }

    #[test]
    fn entries_round_trip_and_refuse_other_versions() {
        let e = entry(4, Some(9));
        let bytes = encode_entry(&e).unwrap();
        assert_eq!(decode_entry(&bytes).unwrap(), e);
        let mut bad = bytes;
        bad[0] = 2;
        assert!(matches!(
            decode_entry(&bad),
            Err(ProjectionError::UnknownVersion(2))
        ));
        assert!(matches!(decode_entry(&[]), Err(ProjectionError::Empty)));
    }

    #[test]
    fn a_resident_entry_shadows_the_stored_one() {
        let mut resident = BTreeMap::new();
        resident.insert(sha(1), entry(1, Some(5)));
        let stored = vec![(sha(1), entry(1, None)), (sha(2), entry(2, None))];
        let all = merge(&resident, stored);
        assert_eq!(all.len(), 2);
        assert_eq!(all[&sha(1)], entry(1, Some(5)));
        assert_eq!(all[&sha(2)], entry(2, None));
    }
}
