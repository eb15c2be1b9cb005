//! Owns the recent writes the attributor keeps for matching, bounded in count and bytes and
//! shared fairly between senders: when the bound is reached, the sender holding the most gives
//! up its oldest write, so one sender's flood evicts its own records, never another's.

use super::model::AuditRecord;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Who sent a batch: the token's name or the client certificate's identity.
pub type Sender = Arc<str>;

#[derive(Default)]
struct Lane {
    records: VecDeque<AuditRecord>,
    bytes: usize,
}

/// Recent writes by sender.
pub struct Recent {
    lanes: BTreeMap<Sender, Lane>,
    records: usize,
    bytes: usize,
    max_records: usize,
    max_bytes: usize,
}

impl Recent {
    pub fn new(max_records: usize, max_bytes: usize) -> Recent {
        Recent {
            lanes: BTreeMap::new(),
            records: 0,
            bytes: 0,
            max_records,
            max_bytes,
        }
    }

    /// Keeps `r`; over the bounds, the largest sender's oldest writes go first.
    pub fn keep(&mut self, sender: &Sender, r: AuditRecord) {
        let weight = r.weight();
        let lane = self.lanes.entry(sender.clone()).or_default();
        lane.bytes += weight;
        lane.records.push_back(r);
        self.records += 1;
        self.bytes += weight;
        while self.records > self.max_records || self.bytes > self.max_bytes {
            if !self.evict_one() {
                break;
            }
        }
    }

    /// Drops the oldest write of the sender holding the most bytes (then the most writes).
    fn evict_one(&mut self) -> bool {
        let Some(largest) = self
            .lanes
            .iter()
            .max_by_key(|(_, l)| (l.bytes, l.records.len()))
            .map(|(s, _)| s.clone())
        else {
            return false;
        };
        let lane = self.lanes.get_mut(&largest).expect("just found");
        let Some(old) = lane.records.pop_front() else {
            return false;
        };
        lane.bytes -= old.weight();
        self.records -= 1;
        self.bytes -= old.weight();
        if lane.records.is_empty() {
            self.lanes.remove(&largest);
        }
        true
    }

    /// Every kept write (correlation orders candidates by time itself).
    pub fn iter(&self) -> impl Iterator<Item = &AuditRecord> {
        self.lanes.values().flat_map(|l| l.records.iter())
    }

    pub fn len(&self) -> usize {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Writes kept from `sender`.
    pub fn from(&self, sender: &str) -> usize {
        self.lanes.get(sender).map_or(0, |l| l.records.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: usize, body: usize) -> AuditRecord {
        let mut r = crate::audit::model::tests::record("alice");
        r.audit_id = format!("{id}");
        r.request_object = Some(serde_json::Value::String("x".repeat(body)));
        r
    }

    #[test]
    fn a_flooding_sender_evicts_only_its_own_writes() {
        let (quiet, loud): (Sender, Sender) = ("apiserver-a".into(), "apiserver-b".into());
        let mut recent = Recent::new(100, usize::MAX);
        for i in 0..30 {
            recent.keep(&quiet, record(i, 10));
        }
        for i in 0..10_000 {
            recent.keep(&loud, record(i, 10));
        }
        assert_eq!(recent.len(), 100);
        assert_eq!(
            recent.from("apiserver-a"),
            30,
            "the quiet sender's writes all kept"
        );
        assert_eq!(recent.from("apiserver-b"), 70);
        // The loud sender kept its newest writes.
        assert!(recent.iter().any(|r| r.audit_id == "9999"));
        assert!(!recent.iter().any(|r| r.audit_id == "9929"));
    }

    #[test]
    fn the_byte_bound_holds_and_weighs_heavy_senders_first() {
        let (small, heavy): (Sender, Sender) = ("small".into(), "heavy".into());
        let one = record(0, 1_000).weight();
        let mut recent = Recent::new(usize::MAX, 20 * one);
        for i in 0..5 {
            recent.keep(&small, record(i, 1_000));
        }
        for i in 0..100 {
            recent.keep(&heavy, record(i, 3_000));
        }
        assert!(recent.iter().map(AuditRecord::weight).sum::<usize>() <= 20 * one);
        assert_eq!(recent.from("small"), 5);
        assert!(recent.from("heavy") > 0);
        // One sender alone may use the whole bound.
        let mut alone = Recent::new(10, usize::MAX);
        for i in 0..50 {
            alone.keep(&small, record(i, 1));
        }
        assert_eq!(alone.from("small"), 10);
        assert!(!alone.is_empty());
    }
}
