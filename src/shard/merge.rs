//! Owns the merge of history pages from several shards into one page, and the composite cursor
//! that says where each shard's log continues. Pure: the fan-out (src/api/fanout.rs) fetches
//! the pages, this decides what the caller sees and where the next page starts.
//!
//! Every shard's page is in its own log order (newest first by sequence, or oldest first when
//! following). The merge is a k-way merge of those streams by time, ties broken by shard then
//! sequence, so the answer is deterministic. Because each shard's stream is consumed strictly in
//! its own order and the cursor records, per shard, the last event handed out, page after page
//! yields every matching event exactly once, even when clocks disagree between shards.

use crate::query::EventRow;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error(
        "cursor {cursor}: not a cursor of this API (a sequence number, or SHARD:POS,... as a \
         previous page's `next` gave it)"
    )]
    BadCursor { cursor: String },
    #[error("cursor {cursor}: it names shards {named:?} but this fleet has {count} shards")]
    WrongShards {
        cursor: String,
        named: Vec<u32>,
        count: u32,
    },
}

/// Where one shard's log continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pos {
    /// Not started: from the newest event (paging) — kept only by a shard that did not answer.
    Top,
    /// Paging back: events before this sequence number. Following: events after it.
    At(u64),
    /// Nothing further matches on this shard.
    Done,
}

/// A page's continuation: a sequence number (one store) or a position per shard (a fleet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    Seq(u64),
    Shards(BTreeMap<u32, Pos>),
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cursor::Seq(n) => write!(f, "{n}"),
            Cursor::Shards(map) => {
                let parts: Vec<String> = map
                    .iter()
                    .map(|(s, p)| match p {
                        Pos::Top => format!("{s}:*"),
                        Pos::At(n) => format!("{s}:{n}"),
                        Pos::Done => format!("{s}:-"),
                    })
                    .collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

impl std::str::FromStr for Cursor {
    type Err = MergeError;
    fn from_str(s: &str) -> Result<Cursor, MergeError> {
        let bad = || MergeError::BadCursor {
            cursor: s.to_string(),
        };
        if let Ok(n) = s.parse::<u64>() {
            return Ok(Cursor::Seq(n));
        }
        let mut map = BTreeMap::new();
        for part in s.split(',') {
            let (shard, pos) = part.split_once(':').ok_or_else(bad)?;
            let shard: u32 = shard.parse().map_err(|_| bad())?;
            let pos = match pos {
                "*" => Pos::Top,
                "-" => Pos::Done,
                n => Pos::At(n.parse().map_err(|_| bad())?),
            };
            if map.insert(shard, pos).is_some() {
                return Err(bad());
            }
        }
        Ok(Cursor::Shards(map))
    }
}

impl Serialize for Cursor {
    /// One store: a number (as before sharding); a fleet: the string form.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Cursor::Seq(n) => s.serialize_u64(*n),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cursor, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Cursor::Seq(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Cursor {
    /// The position of every shard `0..count`: all from the top without a cursor; a fleet
    /// cursor must name exactly this fleet's shards (a resize between two pages is refused
    /// rather than paged wrongly).
    pub fn positions(
        cursor: Option<&Cursor>,
        count: u32,
    ) -> Result<BTreeMap<u32, Pos>, MergeError> {
        match cursor {
            None => Ok((0..count).map(|s| (s, Pos::Top)).collect()),
            Some(Cursor::Shards(map)) => {
                if map.keys().copied().eq(0..count) {
                    Ok(map.clone())
                } else {
                    Err(MergeError::WrongShards {
                        cursor: Cursor::Shards(map.clone()).to_string(),
                        named: map.keys().copied().collect(),
                        count,
                    })
                }
            }
            Some(c @ Cursor::Seq(_)) => Err(MergeError::BadCursor {
                cursor: format!(
                    "{c} (a single store's cursor; this agent is one of {count} shards: pass the \
                     `next` its own answers give)"
                ),
            }),
        }
    }
}

/// A shard that did not answer (only with `partial=true`; otherwise the request fails).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingShard {
    pub shard: u32,
    pub peer: String,
    pub error: String,
}

/// `GET /api/v1/events`: a page of events, one store's or the whole fleet's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    pub events: Vec<EventRow>,
    /// Pass as `cursor` (or `after` when following) for the next page; `None`: nothing further
    /// matches. A number for one store, `SHARD:POS,...` for a fleet.
    pub next: Option<Cursor>,
    /// Fleet answers without a cursor: each shard's newest event, where `--follow` starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<Cursor>,
    /// Shards that did not answer (`partial=true` only): the page lacks their events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<MissingShard>,
}

impl From<crate::query::HistoryPage> for Page {
    fn from(p: crate::query::HistoryPage) -> Page {
        Page {
            events: p.events,
            next: p.next.map(Cursor::Seq),
            head: None,
            missing: Vec::new(),
        }
    }
}

/// One shard's answer for a merge: its events in its log order and its own `next`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardPage {
    pub shard: u32,
    pub events: Vec<EventRow>,
    pub next: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Paging back through history (`cursor`).
    NewestFirst,
    /// Following (`after`).
    OldestFirst,
}

/// Merges the shards' pages into at most `limit` events and the positions after them.
/// `pages` holds the shards that answered, each fetched with `limit` from its position in
/// `from`; shards absent from `pages` keep their position.
///
/// A shard whose fetched events are used up while it may hold more stops the merge: what it
/// holds next might come before the other shards' heads. With `limit` fetched from every shard
/// that happens only once `limit` events were taken, except when a shard's page was cut short
/// by its scan budget; then the page is short, never wrong.
///
/// `not_after` (following only) holds back events stamped later: a shard stamps an event's time
/// a moment before the event becomes visible, so without a watermark a poll could hand out a
/// newer event of one shard before an older one of another that was not visible yet. Held-back
/// events stay where they are and come with a later poll.
pub fn merge(
    order: Order,
    from: &BTreeMap<u32, Pos>,
    pages: Vec<ShardPage>,
    limit: usize,
    not_after: Option<chrono::DateTime<chrono::Utc>>,
) -> (Vec<EventRow>, BTreeMap<u32, Pos>) {
    struct Stream {
        shard: u32,
        events: std::collections::VecDeque<EventRow>,
        taken: usize,
        last: Option<u64>,
        first: Option<u64>,
        next: Option<u64>,
        may_have_more: bool,
    }
    let mut streams: Vec<Stream> = pages
        .into_iter()
        .map(|p| {
            let may_have_more = match order {
                Order::NewestFirst => p.next.is_some(),
                // Following: `next` is always where to resume; more waits only behind a full
                // page.
                Order::OldestFirst => p.events.len() >= limit,
            };
            Stream {
                shard: p.shard,
                first: p.events.first().map(|e| e.seq),
                events: p.events.into(),
                taken: 0,
                last: None,
                next: p.next,
                may_have_more,
            }
        })
        .collect();
    streams.sort_by_key(|s| s.shard);
    let mut out = Vec::new();
    while out.len() < limit {
        if streams
            .iter()
            .any(|s| s.events.is_empty() && s.may_have_more)
        {
            break;
        }
        let mut best: Option<usize> = None;
        for (i, s) in streams.iter().enumerate() {
            let Some(head) = s.events.front() else {
                continue;
            };
            best = match best {
                None => Some(i),
                Some(b) => {
                    let cur = streams[b].events.front().expect("best has a head");
                    let wins = match order {
                        Order::NewestFirst => head.time > cur.time,
                        Order::OldestFirst => head.time < cur.time,
                    };
                    // Equal times: the lower shard first (streams are sorted by shard).
                    Some(if wins { i } else { b })
                }
            };
        }
        let Some(b) = best else { break };
        if let Some(mark) = not_after
            && order == Order::OldestFirst
            && streams[b].events.front().is_some_and(|e| e.time > mark)
        {
            break;
        }
        let s = &mut streams[b];
        let mut row = s.events.pop_front().expect("best has a head");
        s.taken += 1;
        s.last = Some(row.seq);
        row.shard = Some(s.shard);
        out.push(row);
    }
    let mut to = from.clone();
    for s in &streams {
        let pos = if s.taken == 0 {
            match (order, s.first) {
                // Nothing of it was shown: pin it just above its newest match so events it
                // appends later do not appear on older pages.
                (Order::NewestFirst, Some(first)) => Pos::At(first.saturating_add(1)),
                (Order::NewestFirst, None) => s.next.map_or(Pos::Done, Pos::At),
                (Order::OldestFirst, Some(_)) => from.get(&s.shard).copied().unwrap_or(Pos::At(0)),
                (Order::OldestFirst, None) => match s.next {
                    Some(n) => Pos::At(n),
                    None => from.get(&s.shard).copied().unwrap_or(Pos::At(0)),
                },
            }
        } else if s.events.is_empty() {
            // All it sent was shown: continue where it said.
            match (order, s.next) {
                (_, Some(n)) => Pos::At(n),
                (Order::NewestFirst, None) => Pos::Done,
                (Order::OldestFirst, None) => Pos::At(s.last.expect("taken")),
            }
        } else {
            Pos::At(s.last.expect("taken"))
        };
        to.insert(s.shard, pos);
    }
    (out, to)
}

/// The `next` of a merged page: `None` once every shard is done (paging back); following always
/// continues.
pub fn next_cursor(order: Order, positions: BTreeMap<u32, Pos>) -> Option<Cursor> {
    match order {
        Order::NewestFirst if positions.values().all(|p| *p == Pos::Done) => None,
        _ => Some(Cursor::Shards(positions)),
    }
}

#[cfg(test)]
mod tests;
