//! The merge against simulated shards: each shard pages like `query::history` does (newest
//! first before a cursor; full pages say `next`; pages cut short by a scan budget), and the
//! fleet is paged through with small limits.

use super::*;
use crate::event::{AgentStarted, Event};
use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};

fn row(seq: u64, secs: i64) -> EventRow {
    EventRow {
        seq,
        time: DateTime::<Utc>::from_timestamp(secs, 0).unwrap(),
        app: None,
        actor: None,
        kind: "AgentStarted".into(),
        category: None,
        object: None,
        revision: None,
        summary: String::new(),
        event: Event::AgentStarted(AgentStarted {
            version: "t".into(),
            host: None,
            pid: 0,
        }),
        hash: String::new(),
        shard: None,
    }
}

/// One shard's log: sequence numbers 1.. with times that mostly rise.
struct Shard {
    events: Vec<EventRow>,
}

impl Shard {
    fn random(rng: &mut rand::rngs::StdRng, n: usize, start: i64, jitter: bool) -> Shard {
        let mut t = start;
        let events = (1..=n as u64)
            .map(|seq| {
                t += rng.random_range(0..3); // equal times happen
                let skew = if jitter { rng.random_range(-2..=2) } else { 0 };
                row(seq, t + skew)
            })
            .collect();
        Shard { events }
    }

    /// Newest first before `cursor` (exclusive), like `query::history`; `cut` makes it stop
    /// early, as the scan budget does, with `next` where it stopped.
    fn page(
        &self,
        pos: Pos,
        limit: usize,
        cut: Option<usize>,
    ) -> Option<(Vec<EventRow>, Option<u64>)> {
        let before = match pos {
            Pos::Done => return None,
            Pos::Top => u64::MAX,
            Pos::At(c) => c,
        };
        let older: Vec<&EventRow> = self
            .events
            .iter()
            .rev()
            .filter(|e| e.seq < before)
            .collect();
        if let Some(k) = cut.filter(|k| *k < limit && *k < older.len()) {
            let events: Vec<EventRow> = older[..k].iter().map(|e| (*e).clone()).collect();
            // Where the budget stopped: just before the next unread event.
            let next = older[k].seq + 1;
            return Some((events, Some(next)));
        }
        let events: Vec<EventRow> = older.iter().take(limit).map(|e| (*e).clone()).collect();
        let next = (events.len() == limit).then(|| events.last().unwrap().seq);
        Some((events, next))
    }

    /// Oldest first after `after`, like `query::history_after`.
    fn after(&self, after: u64, limit: usize) -> (Vec<EventRow>, Option<u64>) {
        let events: Vec<EventRow> = self
            .events
            .iter()
            .filter(|e| e.seq > after)
            .take(limit)
            .cloned()
            .collect();
        let next = events.last().map(|e| e.seq);
        (events, next)
    }
}

fn page_all(
    shards: &[Shard],
    limit: usize,
    rng: &mut rand::rngs::StdRng,
    cuts: bool,
) -> Vec<Vec<(u32, u64)>> {
    let count = shards.len() as u32;
    let mut cursor: Option<Cursor> = None;
    let mut pages = Vec::new();
    for _ in 0..10_000 {
        // Through the text form, as a caller passes it back.
        let parsed = cursor
            .as_ref()
            .map(|c| c.to_string().parse::<Cursor>().unwrap());
        let from = Cursor::positions(parsed.as_ref(), count).unwrap();
        let answers: Vec<ShardPage> = from
            .iter()
            .filter_map(|(s, p)| {
                let cut = (cuts && rng.random_bool(0.3)).then(|| rng.random_range(0..limit));
                shards[*s as usize]
                    .page(*p, limit, cut)
                    .map(|(events, next)| ShardPage {
                        shard: *s,
                        events,
                        next,
                    })
            })
            .collect();
        let (events, to) = merge(Order::NewestFirst, &from, answers, limit, None);
        assert!(events.len() <= limit);
        pages.push(
            events
                .iter()
                .map(|e| (e.shard.unwrap(), e.seq))
                .collect::<Vec<_>>(),
        );
        match next_cursor(Order::NewestFirst, to) {
            None => return pages,
            Some(c) => cursor = Some(c),
        }
    }
    panic!("paging did not finish");
}

#[test]
fn paging_a_fleet_yields_every_event_once_in_time_order() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for round in 0..40 {
        let k = rng.random_range(1..5);
        let shards: Vec<Shard> = (0..k)
            .map(|_| {
                let n = rng.random_range(0..60);
                Shard::random(&mut rng, n, 1000, false)
            })
            .collect();
        let limit = rng.random_range(1..8);
        let pages = page_all(&shards, limit, &mut rng, false);
        let got: Vec<(u32, u64)> = pages.concat();
        // The union, newest first by time, then lower shard, then higher seq.
        let mut want: Vec<(i64, u32, u64)> = shards
            .iter()
            .enumerate()
            .flat_map(|(s, sh)| {
                sh.events
                    .iter()
                    .map(move |e| (e.time.timestamp(), s as u32, e.seq))
            })
            .collect();
        want.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(b.2.cmp(&a.2)));
        let want: Vec<(u32, u64)> = want.into_iter().map(|(_, s, q)| (s, q)).collect();
        assert_eq!(got, want, "round {round}, limit {limit}");
        // Full pages until the last: nothing is cut short without a budget.
        for p in &pages[..pages.len().saturating_sub(1)] {
            assert_eq!(p.len(), limit, "round {round}");
        }
    }
}

#[test]
fn budget_cut_pages_and_skewed_clocks_still_give_every_event_exactly_once() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for round in 0..60 {
        let k = rng.random_range(2..5);
        let shards: Vec<Shard> = (0..k)
            .map(|_| {
                let n = rng.random_range(0..50);
                Shard::random(&mut rng, n, 1000, true)
            })
            .collect();
        let limit = rng.random_range(1..6);
        let got: Vec<(u32, u64)> = page_all(&shards, limit, &mut rng, true).concat();
        let mut sorted = got.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), got.len(), "round {round}: duplicates");
        let mut want: Vec<(u32, u64)> = shards
            .iter()
            .enumerate()
            .flat_map(|(s, sh)| sh.events.iter().map(move |e| (s as u32, e.seq)))
            .collect();
        want.sort();
        assert_eq!(sorted, want, "round {round}: gaps");
        // Each shard's own events come in its log order.
        for s in 0..k as u32 {
            let seqs: Vec<u64> = got
                .iter()
                .filter(|(x, _)| *x == s)
                .map(|(_, q)| *q)
                .collect();
            assert!(
                seqs.windows(2).all(|w| w[0] > w[1]),
                "round {round} shard {s}"
            );
        }
    }
}

#[test]
fn ties_break_by_shard_then_seq() {
    let from = Cursor::positions(None, 2).unwrap();
    let pages = vec![
        ShardPage {
            shard: 1,
            events: vec![row(9, 50), row(8, 50)],
            next: None,
        },
        ShardPage {
            shard: 0,
            events: vec![row(3, 50), row(2, 40)],
            next: None,
        },
    ];
    let (events, to) = merge(Order::NewestFirst, &from, pages, 10, None);
    let got: Vec<(u32, u64)> = events.iter().map(|e| (e.shard.unwrap(), e.seq)).collect();
    assert_eq!(got, vec![(0, 3), (1, 9), (1, 8), (0, 2)]);
    assert_eq!(next_cursor(Order::NewestFirst, to), None);
}

#[test]
fn a_shard_that_shows_nothing_is_pinned_so_later_appends_stay_off_older_pages() {
    let from = Cursor::positions(None, 2).unwrap();
    let pages = vec![
        ShardPage {
            shard: 0,
            events: vec![row(10, 100), row(9, 99)],
            next: Some(9),
        },
        ShardPage {
            shard: 1,
            events: vec![row(4, 10), row(3, 9)],
            next: Some(3),
        },
    ];
    let (events, to) = merge(Order::NewestFirst, &from, pages, 2, None);
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![10, 9]
    );
    assert_eq!(to[&0], Pos::At(9));
    assert_eq!(
        to[&1],
        Pos::At(5),
        "before its newest match, not from the top"
    );
}

#[test]
fn a_missing_shard_keeps_its_position() {
    let from: BTreeMap<u32, Pos> = [(0, Pos::Top), (1, Pos::At(7))].into();
    let pages = vec![ShardPage {
        shard: 0,
        events: vec![row(5, 10)],
        next: None,
    }];
    let (events, to) = merge(Order::NewestFirst, &from, pages, 5, None);
    assert_eq!(events.len(), 1);
    assert_eq!(to[&0], Pos::Done);
    assert_eq!(to[&1], Pos::At(7));
    let c = next_cursor(Order::NewestFirst, to).unwrap();
    assert_eq!(c.to_string(), "0:-,1:7");
}

#[test]
fn following_a_fleet_prints_every_new_event_once_oldest_first() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut shards: Vec<Shard> = (0..3).map(|_| Shard { events: Vec::new() }).collect();
    let mut after: BTreeMap<u32, Pos> = (0..3).map(|s| (s, Pos::At(0))).collect();
    let mut seen = Vec::new();
    let mut clock = 0i64;
    for _ in 0..200 {
        // Some shards append a few events, then one poll.
        for sh in shards.iter_mut() {
            for _ in 0..rng.random_range(0..4) {
                clock += rng.random_range(0..2);
                let seq = sh.events.len() as u64 + 1;
                sh.events.push(row(seq, clock));
            }
        }
        let limit = rng.random_range(1..5);
        let pages: Vec<ShardPage> = after
            .iter()
            .map(|(s, p)| {
                let Pos::At(a) = p else {
                    panic!("following positions are At")
                };
                let (events, next) = shards[*s as usize].after(*a, limit);
                ShardPage {
                    shard: *s,
                    events,
                    next,
                }
            })
            .collect();
        let (events, to) = merge(Order::OldestFirst, &after, pages, limit, None);
        let c = next_cursor(Order::OldestFirst, to).unwrap();
        after = Cursor::positions(Some(&c.to_string().parse().unwrap()), 3).unwrap();
        let times: Vec<i64> = events.iter().map(|e| e.time.timestamp()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        seen.extend(events.iter().map(|e| (e.shard.unwrap(), e.seq)));
    }
    // Drain what is left.
    loop {
        let pages: Vec<ShardPage> = after
            .iter()
            .map(|(s, p)| {
                let Pos::At(a) = p else { panic!() };
                let (events, next) = shards[*s as usize].after(*a, 3);
                ShardPage {
                    shard: *s,
                    events,
                    next,
                }
            })
            .collect();
        let (events, to) = merge(Order::OldestFirst, &after, pages, 3, None);
        after = to;
        if events.is_empty() {
            break;
        }
        seen.extend(events.iter().map(|e| (e.shard.unwrap(), e.seq)));
    }
    let mut want: Vec<(u32, u64)> = shards
        .iter()
        .enumerate()
        .flat_map(|(s, sh)| sh.events.iter().map(move |e| (s as u32, e.seq)))
        .collect();
    want.sort();
    let mut got = seen.clone();
    got.sort();
    assert_eq!(got.len(), seen.len());
    got.dedup();
    assert_eq!(got.len(), seen.len(), "duplicates");
    assert_eq!(got, want);
}

#[test]
fn cursors_round_trip_and_bad_ones_are_refused() {
    let c: Cursor = "0:12,1:-,2:*".parse().unwrap();
    assert_eq!(c.to_string(), "0:12,1:-,2:*");
    assert_eq!(serde_json::to_string(&c).unwrap(), "\"0:12,1:-,2:*\"");
    assert_eq!(serde_json::to_string(&Cursor::Seq(5)).unwrap(), "5");
    assert_eq!(serde_json::from_str::<Cursor>("5").unwrap(), Cursor::Seq(5));
    assert_eq!(
        serde_json::from_str::<Cursor>("\"0:1,1:2\"")
            .unwrap()
            .to_string(),
        "0:1,1:2"
    );
    for bad in ["", "x", "0:1,0:2", "0:y", "a:1", "0"] {
        if bad == "0" {
            assert_eq!(bad.parse::<Cursor>().unwrap(), Cursor::Seq(0));
            continue;
        }
        assert!(bad.parse::<Cursor>().is_err(), "{bad}");
    }
    assert!(Cursor::positions(Some(&"0:1".parse().unwrap()), 2).is_err());
    assert!(Cursor::positions(Some(&Cursor::Seq(3)), 2).is_err());
    assert_eq!(Cursor::positions(None, 2).unwrap().len(), 2);
}

#[test]
fn following_holds_back_events_newer_than_the_watermark() {
    let from: BTreeMap<u32, Pos> = [(0, Pos::At(0)), (1, Pos::At(0))].into();
    let pages = vec![
        ShardPage {
            shard: 0,
            events: vec![row(1, 10), row(2, 30)],
            next: Some(2),
        },
        ShardPage {
            shard: 1,
            events: vec![row(1, 20)],
            next: Some(1),
        },
    ];
    let mark = DateTime::<Utc>::from_timestamp(25, 0);
    let (events, to) = merge(Order::OldestFirst, &from, pages.clone(), 10, mark);
    let got: Vec<(u32, u64)> = events.iter().map(|e| (e.shard.unwrap(), e.seq)).collect();
    assert_eq!(got, vec![(0, 1), (1, 1)]);
    // Shard 0's event at 30 comes with a later poll: its position stays before it.
    assert_eq!(to[&0], Pos::At(1));
    assert_eq!(to[&1], Pos::At(1));
    let (events, _) = merge(Order::OldestFirst, &from, pages, 10, None);
    assert_eq!(events.len(), 3);
}
