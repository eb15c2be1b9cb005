//! The engine's history query planner: a [`Query`] becomes a scan of the log or of the
//! selector's index, narrowed to a sequence range by its cursor and time range (time never goes
//! backwards along the sequence), with events of a colliding index term dropped.

use super::super::keys::{self, Index, Term};
use super::super::{EventRead, Order, Page, Query, Selector, SeqPage, StoreError};
use super::StoreReader;
use crate::event::{Envelope, EnvelopeBody};

pub(super) fn matches(sel: &Selector, body: &EnvelopeBody) -> bool {
    match sel {
        Selector::All => true,
        Selector::App(a) => body.app.as_deref() == Some(a.as_str()),
        Selector::Object(o) => body
            .event
            .objects()
            .iter()
            .any(|x| x.identity() == o.identity()),
        Selector::Commit(c) => body.event.revisions().contains(&c.as_str()),
        Selector::Author(a) => {
            let a = a.to_lowercase();
            body.event.authors().iter().any(|x| x.to_lowercase() == a)
        }
        Selector::Kind(k) => body.event.kind() == *k,
        Selector::Drift(o) => {
            keys::drift_object(&body.event).is_some_and(|x| x.identity() == o.identity())
        }
    }
}

/// The term prefix of an indexed selector (`None` for the log itself).
pub(super) fn selector_term(sel: &Selector) -> Option<Vec<u8>> {
    Some(match sel {
        Selector::All => return None,
        Selector::App(a) => keys::term_prefix(Index::App, &Term::Str(a)),
        Selector::Object(o) => keys::term_prefix(Index::Object, &Term::Str(&keys::object_term(o))),
        Selector::Commit(c) => keys::term_prefix(Index::Commit, &Term::Str(c)),
        Selector::Author(a) => keys::term_prefix(Index::Author, &Term::Str(&keys::author_term(a))),
        Selector::Kind(k) => keys::term_prefix(Index::Kind, &Term::Kind(*k)),
        Selector::Drift(o) => keys::term_prefix(Index::Drift, &Term::Str(&keys::object_term(o))),
    })
}

impl StoreReader {
    /// The sequence range `[lo, hi]` a query may return, from its cursor and time range; `None`
    /// when nothing can match. Time is non-decreasing along the sequence, so a time range
    /// narrows the seq range.
    pub(super) fn seq_range(&self, q: &Query) -> Result<Option<(u64, u64)>, StoreError> {
        let (mut lo, mut hi) = match (q.order, q.cursor) {
            (_, None) => (1, u64::MAX),
            (Order::OldestFirst, Some(c)) => match c.checked_add(1) {
                Some(lo) => (lo, u64::MAX),
                None => return Ok(None),
            },
            (Order::NewestFirst, Some(c)) => (1, c.saturating_sub(1)),
        };
        if let Some(s) = q.since
            && let Some(seq) = self.time_floor(s)?
        {
            lo = lo.max(seq);
        }
        if let Some(u) = q.until
            && let Some(seq) = self.time_ceiling(u)?
        {
            hi = hi.min(seq.saturating_sub(1));
        }
        Ok((lo <= hi).then_some((lo, hi)))
    }

    /// [`EventRead::postings`]: the sequence numbers of an index in the query's range.
    pub(super) fn plan_postings(&self, q: &Query) -> Result<SeqPage, StoreError> {
        let Some(term) = selector_term(&q.selector) else {
            // The log itself: its sequence numbers are what it holds.
            let page = self.query(q)?;
            return Ok(SeqPage {
                seqs: page.events.iter().map(|e| e.body.seq).collect(),
                next: page.next,
            });
        };
        let empty = SeqPage {
            seqs: vec![],
            next: None,
        };
        if q.limit == 0 {
            return Ok(empty);
        }
        let Some((lo, hi)) = self.seq_range(q)? else {
            return Ok(empty);
        };
        let mut seqs = Vec::with_capacity(q.limit.min(4096));
        for seq in self.scan_postings(term, lo, hi, q.order) {
            seqs.push(seq?);
            if seqs.len() == q.limit {
                let next = seqs.last().copied();
                return Ok(SeqPage { seqs, next });
            }
        }
        Ok(SeqPage { seqs, next: None })
    }

    /// [`EventRead::query`]: a page from the log or from the selector's index, within the
    /// cursor and time range.
    pub(super) fn plan_query(&self, q: &Query) -> Result<Page, StoreError> {
        let empty = Page {
            events: vec![],
            next: None,
        };
        if q.limit == 0 {
            return Ok(empty);
        }
        let Some((lo, hi)) = self.seq_range(q)? else {
            return Ok(empty);
        };
        let since = q.since.map(|t| t.timestamp_micros());
        let until = q.until.map(|t| t.timestamp_micros());
        let mut events = Vec::with_capacity(q.limit.min(1024));
        // Whether the page takes `env`; `None`: past the time range in scan order, so nothing
        // further can match.
        let step = |env: &Envelope| -> Option<bool> {
            if !matches(&q.selector, &env.body) {
                return Some(false); // an h64 collision: another term with the same 8-byte hash
            }
            let t = env.body.time.timestamp_micros();
            let (too_early, too_late) =
                (since.is_some_and(|s| t < s), until.is_some_and(|u| t > u));
            let beyond = match q.order {
                Order::OldestFirst => too_late,
                Order::NewestFirst => too_early,
            };
            if beyond {
                return None;
            }
            Some(!too_early && !too_late)
        };
        let Some(term) = selector_term(&q.selector) else {
            for env in self.scan_log(lo, hi, q.order) {
                let env = env?;
                match step(&env) {
                    None => break,
                    Some(false) => continue,
                    Some(true) => {}
                }
                let seq = env.body.seq;
                events.push(env);
                if events.len() == q.limit {
                    return Ok(Page {
                        next: Some(seq),
                        events,
                    });
                }
            }
            return Ok(Page { events, next: None });
        };
        // An index page: the postings a batch at a time (as many as the page still needs; more
        // only after collisions or time bounds dropped some), each batch's events read together.
        let mut postings = self.scan_postings(term, lo, hi, q.order);
        loop {
            let batch = postings
                .by_ref()
                .take(q.limit - events.len())
                .collect::<Result<Vec<u64>, _>>()?;
            if batch.is_empty() {
                return Ok(Page { events, next: None });
            }
            for (seq, env) in batch.iter().zip(self.get_many(&batch)?) {
                let env = env.ok_or_else(|| StoreError::Corrupt {
                    path: self.path.clone(),
                    seq: Some(*seq),
                    reason: "an index entry points to an event that is not in the log".into(),
                })?;
                match step(&env) {
                    None => return Ok(Page { events, next: None }),
                    Some(false) => continue,
                    Some(true) => {}
                }
                events.push(env);
                if events.len() == q.limit {
                    return Ok(Page {
                        next: Some(*seq),
                        events,
                    });
                }
            }
        }
    }
}
