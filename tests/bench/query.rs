//! Query benchmarks: one page of 100 of `history` by each filter, `revisions_page`, and blame's
//! walk over an object's whole history, on a store of the sample stream (50 Apps, 20 objects
//! each; the layout of the store benchmark, so its store can be reused). Prints a Markdown table.
//!
//! Size: `RECKON_BENCH_EVENTS` (default 100000).
//! Location: `RECKON_BENCH_DIR` (default: a temp dir); `RECKON_BENCH_REUSE=1` keeps a store of
//! the right size from an earlier run (of this benchmark or of `tests/bench/store.rs`).
//!
//! Blame is measured without its one blob read (the sample stream stores no per-object
//! manifests): reading the object's events and walking them, with a manifest of the sample's
//! shape standing in for the blob.

use reckon::event::samples;
use reckon::query::{self, Category, HistoryFilter};
use reckon::store::{EventStore, OpenOptions, SledStore};
use std::time::{Duration, Instant};

use crate::stats as support;
use support::{Rng, percentile};

const APPS: u64 = 50;
const OBJECTS: u64 = 20;
const BATCH: u64 = 1000;
const QUERIES: usize = 200;

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[test]
#[ignore = "benchmark: run explicitly (--run-ignored only); prints a table"]
fn run() {
    let n = support::event_count(100_000);
    let tmp = tempfile::tempdir().unwrap();
    let path = support::store_path(tmp.path());
    let reuse = support::reusable(&path, n);
    if !reuse {
        let _ = std::fs::remove_dir_all(&path);
        let mut store = SledStore::open(&path, OpenOptions::create()).unwrap();
        let mut i = 0;
        while i < n {
            let end = (i + BATCH).min(n);
            for j in i..end {
                if let Some(b) = samples::stream_blob(j, APPS, OBJECTS) {
                    store.put_blob(&b).unwrap();
                }
            }
            store
                .append(
                    (i..end)
                        .map(|j| samples::stream(j, APPS, OBJECTS))
                        .collect(),
                )
                .unwrap();
            store.flush().unwrap();
            i = end;
        }
        store.close().unwrap();
    }
    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    let p = store.projections().clone();
    println!("# reckon query benchmark: {n} events, {APPS} apps, {OBJECTS} objects/app\n");
    let revs = (n / APPS / (OBJECTS + 4)).max(1);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut rows = Vec::new();
    let mut measure = |name: &str, f: &mut dyn FnMut(&mut Rng, bool) -> usize| {
        let mut times = Vec::with_capacity(QUERIES);
        let mut returned = 0;
        for q in 0..QUERIES {
            let t = Instant::now();
            returned += f(&mut rng, q % 2 == 1);
            times.push(t.elapsed());
        }
        times.sort();
        rows.push((
            name.to_string(),
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            returned as f64 / QUERIES as f64,
        ));
    };
    let page = |f: HistoryFilter| query::history(&store, &p, &f).unwrap().events.len();
    let cursor = |rng: &mut Rng, on: bool| on.then(|| 1 + rng.below(n));
    measure("history by App", &mut |rng, c| {
        page(HistoryFilter {
            app: Some(format!("app-{}", rng.below(APPS))),
            cursor: cursor(rng, c),
            ..Default::default()
        })
    });
    measure("history by object", &mut |rng, c| {
        page(HistoryFilter {
            object: Some(format!(
                "Deployment.apps/ns-{}/svc-{}",
                rng.below(APPS),
                rng.below(OBJECTS)
            )),
            cursor: cursor(rng, c),
            ..Default::default()
        })
    });
    measure("history by author", &mut |rng, c| {
        page(HistoryFilter {
            author: Some(format!("dev{}@example.com", rng.below(50.min(revs)))),
            cursor: cursor(rng, c),
            ..Default::default()
        })
    });
    measure("history by revision", &mut |rng, c| {
        let app = rng.below(APPS);
        page(HistoryFilter {
            revision: Some(samples::sha(rng.below(revs) * APPS + app)),
            cursor: cursor(rng, c),
            ..Default::default()
        })
    });
    measure(
        "history by category (drift: 2 kinds merged)",
        &mut |rng, c| {
            page(HistoryFilter {
                category: Some(Category::Drift),
                cursor: cursor(rng, c),
                ..Default::default()
            })
        },
    );
    measure("history by App and category (commit)", &mut |rng, c| {
        page(HistoryFilter {
            app: Some(format!("app-{}", rng.below(APPS))),
            category: Some(Category::Commit),
            cursor: cursor(rng, c),
            ..Default::default()
        })
    });
    measure("history, whole log", &mut |rng, c| {
        page(HistoryFilter {
            cursor: cursor(rng, c),
            ..Default::default()
        })
    });
    measure("revisions, page of 100", &mut |rng, _| {
        let app = format!("app-{}", rng.below(APPS));
        query::revisions_page(&store, &p, &app, 100, None)
            .unwrap()
            .revisions
            .len()
    });
    let manifest = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "svc", "namespace": "ns", "labels": {"reckon.dev/app": "app"}},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "c", "image": "i:1"}]}}}
    });
    measure(
        "blame walk (whole object history, no blob)",
        &mut |rng, _| {
            let app = rng.below(APPS);
            let object = samples::object(
                "apps",
                "v1",
                "Deployment",
                Some(&format!("ns-{app}")),
                &format!("svc-{}", rng.below(OBJECTS)),
            );
            let events = query::object_events(&store, &object, &format!("app-{app}")).unwrap();
            let walked = query::blame_walk(&events, &manifest, None);
            assert!(!walked.fields.is_empty());
            events.len()
        },
    );
    println!("| query | p50 | p99 | avg returned/walked |");
    println!("|---|---|---|---|");
    for (name, p50, p99, avg) in rows {
        println!("| {name} | {} | {} | {avg:.0} |", ms(p50), ms(p99));
    }
}
