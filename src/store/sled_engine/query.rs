//! The engine's history query planner: a [`Query`] becomes a scan of the log or of the
//! selector's index (for an object, of its copies' blocks up to `Mcopied` and of its index
//! above it: `store::copies::page_parts`), narrowed to a sequence range by its cursor and time
//! range (time never goes backwards along the sequence), with events of a colliding index term
//! dropped; [`Fill`] is the one place that decides what a page takes and when it is done.

use super::super::copies::{self, Part};
use super::super::keys::{self, Index, Term};
use super::super::{EventRead, Order, Page, Query, Selector, SeqPage, StoreError};
use super::StoreReader;
use crate::event::{Envelope, EnvelopeBody};
use std::sync::atomic::Ordering;

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

/// The sequence range `[lo, hi]` a page continuing after `cursor` may hold, before any time
/// bound; `None` when the cursor is past the end.
fn cursor_range(order: Order, cursor: Option<u64>) -> Option<(u64, u64)> {
    match (order, cursor) {
        (_, None) => Some((1, u64::MAX)),
        (Order::OldestFirst, Some(c)) => c.checked_add(1).map(|lo| (lo, u64::MAX)),
        (Order::NewestFirst, Some(c)) => Some((1, c.saturating_sub(1))),
    }
}

/// `[lo, hi]` narrowed by the time index: `floor`, the seq of the last time-run entry before
/// `since` (every event before it is older), and `ceiling`, the first after `until` (every
/// event from it on is newer). `None` when nothing is left.
fn narrow((lo, hi): (u64, u64), floor: Option<u64>, ceiling: Option<u64>) -> Option<(u64, u64)> {
    let lo = floor.map_or(lo, |f| lo.max(f));
    let hi = ceiling.map_or(hi, |c| hi.min(c.saturating_sub(1)));
    (lo <= hi).then_some((lo, hi))
}

/// Whether a page takes an event at `micros` in its time range: `None` when the event is past
/// the range in scan order (time never goes backwards along the sequence, so nothing further
/// can match).
fn in_time(micros: i64, since: Option<i64>, until: Option<i64>, order: Order) -> Option<bool> {
    let too_early = since.is_some_and(|s| micros < s);
    let too_late = until.is_some_and(|u| micros > u);
    let beyond = match order {
        Order::OldestFirst => too_late,
        Order::NewestFirst => too_early,
    };
    (!beyond).then_some(!too_early && !too_late)
}

impl StoreReader {
    /// The sequence range `[lo, hi]` a query may return, from its cursor and time range; `None`
    /// when nothing can match. Time is non-decreasing along the sequence, so a time range
    /// narrows the seq range.
    pub(super) fn seq_range(&self, q: &Query) -> Result<Option<(u64, u64)>, StoreError> {
        let Some(range) = cursor_range(q.order, q.cursor) else {
            return Ok(None);
        };
        let floor = match q.since {
            Some(s) => self.time_floor(s)?,
            None => None,
        };
        let ceiling = match q.until {
            Some(u) => self.time_ceiling(u)?,
            None => None,
        };
        Ok(narrow(range, floor, ceiling))
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
        let mut seqs = Vec::with_capacity(q.limit.min(PAGE_START));
        for seq in self.scan_postings(term, lo, hi, q.order) {
            seqs.push(seq?);
            if seqs.len() == q.limit {
                let next = seqs.last().copied();
                return Ok(SeqPage { seqs, next });
            }
        }
        Ok(SeqPage { seqs, next: None })
    }

    /// The events `seqs` of a page by `sel`: an object's from the object's copies where they
    /// have them (`store::copies`), the rest from the log. Only for the object selector: its
    /// page is consecutive in the object's history, so the blocks from its oldest to its
    /// newest event are the ones it needs; a drift page is sparse in it (an object with
    /// thousands of applies and a few drifts would read every block in between).
    fn fetch(&self, sel: &Selector, seqs: &[u64]) -> Result<Vec<Option<Envelope>>, StoreError> {
        match sel {
            Selector::Object(o) => self.get_copies(&copies::term(&keys::object_term(o)), seqs),
            _ => self.get_many(seqs),
        }
    }

    /// [`EventRead::query`]: a page from the log or from the selector's index, within the
    /// cursor and time range.
    pub(super) fn plan_query(&self, q: &Query) -> Result<Page, StoreError> {
        let mut fill = Fill::new(q);
        if q.limit == 0 {
            return Ok(fill.page());
        }
        let Some((lo, hi)) = self.seq_range(q)? else {
            return Ok(fill.page());
        };
        let Some(term) = selector_term(&q.selector) else {
            for env in self.scan_log(lo, hi, q.order) {
                if fill.offer(env?) == Flow::Stop {
                    break;
                }
            }
            return Ok(fill.page());
        };
        // An object's page: from its copies' blocks up to `Mcopied`, from its postings above.
        let (parts, blocks) = match &q.selector {
            Selector::Object(o) => {
                let copied = self.copied_view.load(Ordering::Acquire);
                let newest_first = q.order == Order::NewestFirst;
                let parts = copies::page_parts(lo, hi, copied, newest_first);
                (parts, Some(copies::term(&keys::object_term(o))))
            }
            _ => (vec![Part::Postings { lo, hi }], None),
        };
        for part in parts {
            let flow = match (part, &blocks) {
                (Part::Copies { lo, hi }, Some(blocks)) => {
                    self.fill_from_copies(&mut fill, blocks, lo, hi)?
                }
                // The postings hold every event: also where copies have no term (none here).
                (Part::Postings { lo, hi } | Part::Copies { lo, hi }, _) => {
                    self.fill_from_postings(&mut fill, &term, lo, hi)?
                }
            };
            if flow == Flow::Stop {
                break;
            }
        }
        Ok(fill.page())
    }

    /// Fills `fill` from the selector's index postings in `lo..=hi`, a batch at a time (as
    /// many as the page still needs; more only after collisions or time bounds dropped some),
    /// each batch's events read together.
    fn fill_from_postings(
        &self,
        fill: &mut Fill<'_>,
        term: &[u8],
        lo: u64,
        hi: u64,
    ) -> Result<Flow, StoreError> {
        let mut postings = self.scan_postings(term.to_vec(), lo, hi, fill.q.order);
        loop {
            let batch = postings
                .by_ref()
                .take(fill.wanted())
                .collect::<Result<Vec<u64>, _>>()?;
            if batch.is_empty() {
                return Ok(Flow::Go);
            }
            for (seq, env) in batch.iter().zip(self.fetch(&fill.q.selector, &batch)?) {
                let env = env.ok_or_else(|| StoreError::Corrupt {
                    path: self.path.clone(),
                    seq: Some(*seq),
                    reason: "an index entry points to an event that is not in the log".into(),
                })?;
                if fill.offer(env) == Flow::Stop {
                    return Ok(Flow::Stop);
                }
            }
        }
    }
}

/// Whether a scan goes on after an event was offered to a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Go,
    /// The page is full, or the scan went past the time range.
    Stop,
}

/// What a page reserves before it finds anything (see [`Fill::new`]).
const PAGE_START: usize = 16;

/// A page being filled in scan order: what it takes and when it is done.
pub(super) struct Fill<'q> {
    pub(super) q: &'q Query,
    since: Option<i64>,
    until: Option<i64>,
    events: Vec<Envelope>,
}

impl<'q> Fill<'q> {
    fn new(q: &'q Query) -> Self {
        Fill {
            q,
            since: q.since.map(|t| t.timestamp_micros()),
            until: q.until.map(|t| t.timestamp_micros()),
            // Grown as events come: a page's limit is an upper bound, often far above what
            // it finds (a thousand Apps' passes asking for up to 100,000 renames found none),
            // and an envelope is 456 bytes, so reserving the limit made each such query a
            // transient half-megabyte allocation, the largest the agent made.
            events: Vec::with_capacity(q.limit.min(PAGE_START)),
        }
    }

    /// Events the page still needs.
    fn wanted(&self) -> usize {
        self.q.limit - self.events.len()
    }

    /// Takes `env`, the next event in scan order, if the query selects it.
    pub(super) fn offer(&mut self, env: Envelope) -> Flow {
        if !matches(&self.q.selector, &env.body) {
            return Flow::Go; // an h64 collision: another term with the same 8-byte hash
        }
        let time = env.body.time.timestamp_micros();
        match in_time(time, self.since, self.until, self.q.order) {
            None => return Flow::Stop,
            Some(false) => return Flow::Go,
            Some(true) => {}
        }
        self.events.push(env);
        if self.events.len() == self.q.limit {
            Flow::Stop
        } else {
            Flow::Go
        }
    }

    /// The page: a full one continues after its last event.
    fn page(self) -> Page {
        let full = !self.events.is_empty() && self.events.len() == self.q.limit;
        let next = full
            .then(|| self.events.last().map(|e| e.body.seq))
            .flatten();
        Page {
            events: self.events,
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_reserves_little_before_it_finds_events() {
        // A thousand Apps each asking for up to 100,000 renames once reserved 1,024 envelopes
        // (456 KiB) per query; a page grows as it finds events instead.
        let q = Query::new(Selector::Kind(crate::event::EventKind::AppRenamed)).limit(100_000);
        assert!(Fill::new(&q).events.capacity() <= PAGE_START);
        let one = Query::new(Selector::All).limit(1);
        assert_eq!(Fill::new(&one).events.capacity(), 1);
    }

    #[test]
    fn a_cursor_continues_after_itself_in_scan_order() {
        assert_eq!(cursor_range(Order::NewestFirst, None), Some((1, u64::MAX)));
        assert_eq!(
            cursor_range(Order::OldestFirst, Some(10)),
            Some((11, u64::MAX))
        );
        assert_eq!(cursor_range(Order::NewestFirst, Some(10)), Some((1, 9)));
        assert_eq!(cursor_range(Order::OldestFirst, Some(u64::MAX)), None);
        // Newest first from seq 1: nothing before it.
        assert_eq!(
            narrow(
                cursor_range(Order::NewestFirst, Some(1)).unwrap(),
                None,
                None
            ),
            None
        );
    }

    #[test]
    fn the_time_index_narrows_the_range() {
        assert_eq!(narrow((1, u64::MAX), None, None), Some((1, u64::MAX)));
        assert_eq!(narrow((1, u64::MAX), Some(40), Some(90)), Some((40, 89)));
        // The cursor's bound wins where it is tighter.
        assert_eq!(narrow((50, 60), Some(40), Some(90)), Some((50, 60)));
        // A time range that holds nothing.
        assert_eq!(narrow((1, u64::MAX), Some(90), Some(90)), None);
        // Every event is at or after `until`.
        assert_eq!(narrow((1, u64::MAX), None, Some(1)), None);
    }

    #[test]
    fn events_outside_the_time_range_are_skipped_or_end_the_scan() {
        let (since, until) = (Some(100), Some(200));
        assert_eq!(in_time(150, since, until, Order::OldestFirst), Some(true));
        assert_eq!(in_time(100, since, until, Order::NewestFirst), Some(true));
        assert_eq!(in_time(200, since, until, Order::OldestFirst), Some(true));
        // Before the range: skipped oldest first, the end newest first.
        assert_eq!(in_time(50, since, until, Order::OldestFirst), Some(false));
        assert_eq!(in_time(50, since, until, Order::NewestFirst), None);
        // After it: the end oldest first, skipped newest first.
        assert_eq!(in_time(250, since, until, Order::OldestFirst), None);
        assert_eq!(in_time(250, since, until, Order::NewestFirst), Some(false));
        assert_eq!(
            in_time(i64::MIN, None, None, Order::NewestFirst),
            Some(true)
        );
    }

    /// An event of object `o` (or another object's) at `seq` and `micros`.
    fn event_of(o: &str, seq: u64, micros: i64) -> Envelope {
        use crate::event::{Digest, samples};
        let mut event = samples::stream(8, 1, 1).event;
        let crate::event::Event::ObjectApplied(a) = &mut event else {
            panic!("the sample is an ObjectApplied")
        };
        a.object.object.name = o.to_string();
        let body = EnvelopeBody {
            schema: crate::event::envelope::EVENT_SCHEMA,
            seq,
            time: chrono::DateTime::from_timestamp_micros(micros).unwrap(),
            app: Some("app-0".into()),
            actor: None,
            prev_hash: Digest::ZERO,
            event,
        };
        Envelope::seal(body).unwrap().0
    }

    #[test]
    fn a_page_takes_its_objects_events_in_time_until_it_is_full() {
        let mine = event_of("web", 1, 0).body.event.objects()[0].clone();
        let q = Query::new(Selector::Object(mine)).limit(2);
        let mut fill = Fill::new(&q);
        assert_eq!(fill.offer(event_of("web", 9, 90)), Flow::Go);
        // Another object under the same term (an h64 collision) is skipped, not taken.
        assert_eq!(fill.offer(event_of("api", 8, 80)), Flow::Go);
        assert_eq!(fill.offer(event_of("web", 7, 70)), Flow::Stop, "full");
        let page = fill.page();
        let seqs: Vec<u64> = page.events.iter().map(|e| e.body.seq).collect();
        assert_eq!((seqs, page.next), (vec![9, 7], Some(7)));
        // Newest first, an event before `since` ends the page, which has nothing after it.
        let since = chrono::DateTime::from_timestamp_micros(75);
        let q = q.clone().between(since, None).limit(5);
        let mut fill = Fill::new(&q);
        assert_eq!(fill.offer(event_of("web", 9, 90)), Flow::Go);
        assert_eq!(fill.offer(event_of("web", 7, 70)), Flow::Stop);
        let page = fill.page();
        assert_eq!((page.events.len(), page.next), (1, None));
        // An empty page of limit 0 has no next either.
        let q = q.limit(0);
        assert_eq!(Fill::new(&q).page().next, None);
    }
}
