//! Issue 6's query benchmark: history (by App, object, author, kind), blame and revisions on a
//! large store, through the HTTP API (p50/p99 per page of 100), against the same queries straight
//! on the store in the same run (the baseline: what HTTP, JSON and the blocking pool add), plus
//! the wall time of each `reckon ... --server` command against the serving API. One table.
//!
//! Ignored by default; `scripts/bench-api.sh` builds in release and runs it, or by hand:
//! `cargo nextest run --release --test bench --run-ignored only -E 'test(/^api::/)' --no-capture`.
//! Size: `RECKON_BENCH_EVENTS` (default 10,000,000; CI runs 100,000), `RECKON_BENCH_APPS`
//! (default 1000 Apps of 20 objects). `RECKON_BENCH_DIR` keeps the store there and reuses it
//! when it already holds that many events (generation dominates the run at 10M);
//! `RECKON_BENCH_REUSE=1` measures whatever size the store there holds; `RECKON_BENCH_SEED`
//! picks other Apps and objects (repeated runs otherwise read what the last one left cached).
//! `RECKON_BENCH_COLD=1` (root only) empties the OS page cache before each query's HTTP and
//! direct runs, and before every read of the second table (sled's own cache in the process
//! stays: index blocks read before are warm, the scattered log chunks mostly are not).
//!
//! A second table: one object's newest 100 events, read together (`EventRead::get_many`,
//! several threads when they are scattered) against one at a time (how pages were read before),
//! on different objects drawn alternately in the same run.
//!
//! The store is written directly through `SledStore` in batches: the realistic sample stream
//! (per App: commit, render, sync, one apply per object, a drift now and then; 50 authors), with
//! real manifests as blobs so blame and show read what they would in production.
//! Timings are reported, not asserted (a shared machine); every answer is checked to be a
//! success with the expected shape.

use reckon::api::ApiState;
use reckon::api::auth::{Role, Tokens};
use reckon::event::{Digest, Event, samples};
use reckon::query::{self, HistoryFilter, ObjectSpec};
use reckon::store::{EventStore, OpenOptions, SledStore};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stats as bench_support;
use bench_support::{Rng, percentile};

const TOKEN: &str = "bench-token-0123456789";
const OBJECTS: u64 = 20;
/// Distinct manifest versions per object (the image tag cycles): blobs are deduplicated.
const VERSIONS: u64 = 8;
/// Events per append and flush while generating (`RECKON_BENCH_BATCH`): one posting block per
/// index term per batch, as the agent writes one per sync.
const BATCH: u64 = 10_000;
const REQUESTS: usize = 200;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|s| s.replace('_', "").parse().expect(name))
        .unwrap_or(default)
}

fn manifest(k: u64, version: u64) -> Vec<u8> {
    format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"svc-{k}"}},"spec":{{"replicas":3,"selector":{{"matchLabels":{{"app":"svc-{k}"}}}},"template":{{"metadata":{{"labels":{{"app":"svc-{k}"}}}},"spec":{{"containers":[{{"image":"registry.example.com/svc-{k}:v{version}","name":"svc"}}]}}}}}}}}"#
    )
    .into_bytes()
}

/// Writes `n` events of the sample stream with real manifests as blobs (also the UI timings' store).
/// Serves `store` through the agent's router on a loopback port of `rt`, with `token` a read
/// token named `name`: the base URL and the store's handle (closed by the caller).
pub(crate) fn serve(
    rt: &tokio::runtime::Runtime,
    store: SledStore,
    token: &str,
    name: &str,
) -> (String, reckon::store::writer::StoreHandle) {
    rt.block_on(async {
        let (handle, _task) = reckon::store::writer::spawn(store);
        let mut tokens = Tokens::default();
        tokens.add(token, Some(name), Role::Read);
        let state = ApiState::new(handle.clone(), Arc::new(tokens), Vec::new(), None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, reckon::api::router(state))
                .await
                .unwrap()
        });
        (format!("http://{addr}"), handle)
    })
}

pub(crate) fn generate(path: &std::path::Path, n: u64, apps: u64) {
    let mut store = SledStore::open(
        path,
        OpenOptions {
            create: true,
            snapshot_every: 1_000_000,
            ..Default::default()
        },
    )
    .unwrap();
    let mut objects: HashMap<(u64, u64), Digest> = HashMap::new();
    let mut sets: HashMap<u64, Digest> = HashMap::new();
    let started = Instant::now();
    let batch = env_u64("RECKON_BENCH_BATCH", BATCH).max(1);
    let mut i = 0;
    let mut reported = Instant::now();
    while i < n {
        let end = (i + batch).min(n);
        let mut drafts = Vec::with_capacity((end - i) as usize);
        for j in i..end {
            let mut d = samples::stream(j, apps, OBJECTS);
            let rev = (j / apps) / (OBJECTS + 4);
            let version = rev % VERSIONS;
            match &mut d.event {
                Event::ObjectApplied(a) => {
                    let k: u64 = a.object.name["svc-".len()..].parse().unwrap();
                    a.digest = *objects
                        .entry((k, version))
                        .or_insert_with(|| store.put_blob(&manifest(k, version)).unwrap());
                }
                Event::RenderSucceeded(r) => {
                    r.digest = *sets.entry(version).or_insert_with(|| {
                        let mut set = Vec::new();
                        for k in 0..OBJECTS {
                            set.extend(manifest(k, version));
                            set.push(b'\n');
                        }
                        store.put_blob(&set).unwrap()
                    });
                }
                Event::SyncStarted(s) => s.digest = sets.get(&version).copied(),
                _ => {}
            }
            drafts.push(d);
        }
        store.append(drafts).unwrap();
        store.flush().unwrap();
        i = end;
        if i.is_multiple_of(1_000_000) || reported.elapsed() > Duration::from_secs(60) {
            reported = Instant::now();
            eprintln!(
                "api_bench: {i} events in {:.0}s ({:.0}/s)",
                started.elapsed().as_secs_f64(),
                i as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    store.close().unwrap();
    eprintln!(
        "api_bench: generated {n} events in {:.0}s ({:.0}/s)",
        started.elapsed().as_secs_f64(),
        n as f64 / started.elapsed().as_secs_f64()
    );
}

/// Generates the benchmark's store and nothing else (`RECKON_BENCH_EVENTS`, `RECKON_BENCH_APPS`,
/// `RECKON_BENCH_BATCH` into `RECKON_BENCH_DIR`, which it replaces), for measuring it with the
/// commands themselves (`reckon status --store`, an agent's API with curl) or both benchmarks
/// with `RECKON_BENCH_REUSE=1`.
#[test]
#[ignore = "generates the benchmark store"]
fn generate_store() {
    let n = env_u64("RECKON_BENCH_EVENTS", 10_000_000);
    let apps = env_u64("RECKON_BENCH_APPS", 1000);
    let path = std::env::var_os("RECKON_BENCH_DIR").expect("RECKON_BENCH_DIR=DIR");
    let path = std::path::PathBuf::from(path);
    let _ = std::fs::remove_dir_all(&path);
    generate(&path, n, apps);
}

/// Serves the store in `RECKON_BENCH_DIR` through the agent's router (`/api/v1`, `/ui/`) on
/// `RECKON_BENCH_LISTEN` (default 127.0.0.1:8089) with read token `bench-token-0123456789`, for
/// `RECKON_BENCH_SERVE_SECS` seconds (default 600): the API's answers timed with curl, as a
/// browser or `reckon --server` gets them. Prints how long opening the store took.
#[test]
#[ignore = "serves the benchmark store"]
fn serve_store() {
    let path = std::env::var_os("RECKON_BENCH_DIR").expect("RECKON_BENCH_DIR=DIR");
    let listen =
        std::env::var("RECKON_BENCH_LISTEN").unwrap_or_else(|_| "127.0.0.1:8089".to_string());
    let secs = env_u64("RECKON_BENCH_SERVE_SECS", 600);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let opened = Instant::now();
    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    eprintln!(
        "serve_store: opened in {:.1}s; serving http://{listen} for {secs}s",
        opened.elapsed().as_secs_f64()
    );
    let handle = rt.block_on(async {
        let (handle, _task) = reckon::store::writer::spawn(store);
        let mut tokens = Tokens::default();
        tokens.add(TOKEN, Some("bench"), Role::Read);
        let state = ApiState::new(handle.clone(), Arc::new(tokens), Vec::new(), None);
        let listener = tokio::net::TcpListener::bind(&listen).await.unwrap();
        tokio::spawn(async move {
            axum::serve(listener, reckon::api::router(state))
                .await
                .unwrap()
        });
        handle
    });
    std::thread::sleep(Duration::from_secs(secs));
    rt.block_on(handle.close()).unwrap();
}

/// One measured query: its HTTP path and query string, and the same query on the store.
struct Case {
    name: &'static str,
    http: Box<dyn Fn(&mut Rng) -> String>,
    direct: Box<dyn Fn(&mut Rng)>,
    cli: Vec<String>,
}

#[test]
#[ignore = "benchmark: scripts/bench-api.sh"]
fn api_query_benchmark() {
    let mut n = env_u64("RECKON_BENCH_EVENTS", 10_000_000);
    let apps = env_u64("RECKON_BENCH_APPS", 1000);
    let tmp = tempfile::tempdir().unwrap();
    let path = std::env::var_os("RECKON_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("store"));
    // An existing store of an older schema is migrated by this first open (timed: at 10M
    // events it is the upgrade cost a user pays once).
    let first_open = Instant::now();
    let head = SledStore::open(&path, OpenOptions::default())
        .ok()
        .and_then(|s| s.head())
        .map(|h| h.0);
    let first_open = first_open.elapsed();
    // RECKON_BENCH_REUSE=1: measure whatever an earlier (possibly interrupted) generation left
    // in RECKON_BENCH_DIR, however many events that is.
    if std::env::var_os("RECKON_BENCH_REUSE").is_some()
        && let Some(h) = head
    {
        n = h;
    }
    let reuse = head == Some(n);
    let generated = Instant::now();
    if !reuse {
        let _ = std::fs::remove_dir_all(&path);
        generate(&path, n, apps);
    }
    let generation = generated.elapsed();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let opened = Instant::now();
    let store = SledStore::open(&path, OpenOptions::default()).unwrap();
    let open_time = opened.elapsed();
    let reader = store.reader();
    let projections = Arc::new(store.projections().clone());
    let (base, handle) = serve(&rt, store, TOKEN, "bench");

    let app_of = move |r: &mut Rng| format!("app-{}", r.below(apps));
    let object_of = move |r: &mut Rng| {
        let a = r.below(apps);
        format!("Deployment.apps/ns-{a}/svc-{}", r.below(OBJECTS))
    };
    // The stream's authors are dev{revision % 50}: fewer when Apps have fewer revisions.
    let authors = (n / apps / (OBJECTS + 4)).clamp(1, 50);
    let author_of = move |r: &mut Rng| format!("dev{}@example.com", r.below(authors));
    let (r2, p2) = (reader.clone(), projections.clone());
    let (r3, p3) = (reader.clone(), projections.clone());
    let filter =
        |app: Option<String>, object: Option<String>, author: Option<String>| HistoryFilter {
            app,
            object,
            author,
            limit: 100,
            ..Default::default()
        };
    let hr =
        |f: HistoryFilter, reader: &reckon::store::StoreReader, p: &reckon::store::Projections| {
            let page = query::history(reader, p, &f).unwrap();
            assert!(!page.events.is_empty(), "{f:?} matched nothing");
        };
    let (ra, pa) = (reader.clone(), projections.clone());
    let (ro, po) = (reader.clone(), projections.clone());
    let (ru, pu) = (reader.clone(), projections.clone());
    let (rk, pk) = (reader.clone(), projections.clone());
    let cases: Vec<Case> = vec![
        Case {
            name: "history APP",
            http: Box::new(move |r| format!("/api/v1/events?limit=100&app={}", app_of(r))),
            direct: Box::new(move |r| hr(filter(Some(app_of(r)), None, None), &ra, &pa)),
            cli: vec![
                "history".into(),
                "app-0".into(),
                "--limit".into(),
                "100".into(),
            ],
        },
        Case {
            name: "history --object",
            http: Box::new(move |r| format!("/api/v1/events?limit=100&object={}", object_of(r))),
            direct: Box::new(move |r| hr(filter(None, Some(object_of(r)), None), &ro, &po)),
            cli: vec![
                "history".into(),
                "--object".into(),
                "Deployment.apps/ns-0/svc-3".into(),
                "--limit".into(),
                "100".into(),
            ],
        },
        Case {
            name: "history --author",
            http: Box::new(move |r| format!("/api/v1/events?limit=100&author={}", author_of(r))),
            direct: Box::new(move |r| hr(filter(None, None, Some(author_of(r))), &ru, &pu)),
            cli: vec![
                "history".into(),
                "--author".into(),
                "dev0@example.com".into(),
                "--limit".into(),
                "100".into(),
            ],
        },
        Case {
            name: "history --kind drift (deep cursor)",
            http: Box::new(move |r| {
                format!(
                    "/api/v1/events?limit=100&kind=drift&cursor={}",
                    1 + r.below(n)
                )
            }),
            direct: Box::new(move |r| {
                let f = HistoryFilter {
                    category: Some(query::Category::Drift),
                    cursor: Some(1 + r.below(n)),
                    limit: 100,
                    ..Default::default()
                };
                query::history(&rk, &pk, &f).unwrap();
            }),
            cli: vec![
                "history".into(),
                "--kind".into(),
                "drift".into(),
                "--limit".into(),
                "100".into(),
            ],
        },
        Case {
            name: "blame KIND/NS/NAME",
            http: Box::new(move |r| format!("/api/v1/blame?object={}", object_of(r))),
            direct: Box::new(move |r| {
                let o: ObjectSpec = object_of(r).parse().unwrap();
                query::blame(&r2, &p2, &o, None, None).unwrap();
            }),
            cli: vec!["blame".into(), "Deployment.apps/ns-0/svc-3".into()],
        },
        Case {
            name: "revisions APP (page of 100)",
            http: Box::new(move |r| format!("/api/v1/apps/{}/revisions?limit=100", app_of(r))),
            direct: Box::new(move |r| {
                query::revisions_page(&r3, &p3, &app_of(r), 100, None).unwrap();
            }),
            cli: vec!["revisions".into(), "app-0".into()],
        },
    ];

    // Repeated runs on one store read the same objects unless the seed changes (the OS page
    // cache then holds exactly what the previous run read).
    let seed = env_u64("RECKON_BENCH_SEED", 0);
    let cold = std::env::var_os("RECKON_BENCH_COLD").is_some();
    let http = reqwest::blocking::Client::new();
    let get = |url: &str| {
        let resp = http.get(url).bearer_auth(TOKEN).send().unwrap();
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        resp.bytes().unwrap().len()
    };
    // Warm-up: the projections copy and the first pages of each index.
    for c in &cases {
        get(&format!("{base}{}", (c.http)(&mut Rng(1))));
    }
    let bin = env!("CARGO_BIN_EXE_reckon");
    println!(
        "\nreckon API benchmark: {n} events, {apps} Apps x {OBJECTS} objects, {REQUESTS} requests per query (store {}; generated in {:.0}s{}; opened in {:.1}s)\n",
        path.display(),
        generation.as_secs_f64(),
        if reuse {
            format!(
                ", reused; its first open, with any migration, took {:.0}s",
                first_open.as_secs_f64()
            )
        } else {
            String::new()
        },
        open_time.as_secs_f64()
    );
    println!(
        "| query | HTTP p50 | HTTP p99 | store p50 | store p99 | bytes/page | CLI --server wall |"
    );
    println!("|---|---|---|---|---|---|---|");
    for c in &cases {
        if cold {
            drop_page_cache();
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
        let mut times = Vec::with_capacity(REQUESTS);
        let mut bytes = 0;
        for _ in 0..REQUESTS {
            let url = format!("{base}{}", (c.http)(&mut rng));
            let t = Instant::now();
            bytes += get(&url);
            times.push(t.elapsed());
        }
        times.sort();
        // Other Apps/objects than the HTTP requests read: the same ones would be served from
        // the caches the HTTP requests just filled, flattering the baseline.
        if cold {
            drop_page_cache();
        }
        let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ seed);
        let mut direct = Vec::with_capacity(REQUESTS);
        for _ in 0..REQUESTS {
            let t = Instant::now();
            (c.direct)(&mut rng);
            direct.push(t.elapsed());
        }
        direct.sort();
        let t = Instant::now();
        let out = std::process::Command::new(bin)
            .args(&c.cli)
            .args(["-o", "json", "--server", &base, "--token", TOKEN])
            .env_remove("RECKON_SERVER")
            .env_remove("RECKON_TOKEN")
            .output()
            .unwrap();
        let wall = t.elapsed();
        assert!(
            out.status.success(),
            "reckon {:?}: {}",
            c.cli,
            String::from_utf8_lossy(&out.stderr)
        );
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            c.name,
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
            ms(percentile(&direct, 0.5)),
            ms(percentile(&direct, 0.99)),
            bytes / REQUESTS,
            ms(wall),
        );
    }
    scattered_reads(&reader, &projections, apps, seed, cold);
    // The writer ends (snapshot, flush) once closed; only then can the runtime shut down.
    rt.block_on(handle.close()).unwrap();
}

/// Empties the OS page cache (needs root): what a query costs when the store is on disk only.
fn drop_page_cache() {
    let synced = std::process::Command::new("sync").status().unwrap();
    assert!(synced.success(), "sync failed");
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .expect("RECKON_BENCH_COLD=1 writes /proc/sys/vm/drop_caches: run as root");
}

/// The second table: one object's newest page read together against one event at a time.
fn scattered_reads(
    reader: &reckon::store::StoreReader,
    projections: &reckon::store::Projections,
    apps: u64,
    seed: u64,
    cold: bool,
) {
    use reckon::store::{EventRead, Query, Selector};
    let samples = if cold { REQUESTS / 4 } else { REQUESTS };
    let mut rng = Rng(0x6a09_e667_f3bc_c908 ^ seed);
    let (mut together, mut apart) = (Vec::new(), Vec::new());
    for i in 0..2 * samples {
        let a = rng.below(apps);
        let object: ObjectSpec = format!("Deployment.apps/ns-{a}/svc-{}", rng.below(OBJECTS))
            .parse()
            .unwrap();
        let q = Query::new(Selector::Object(object.resolve(projections))).limit(100);
        let seqs = reader.postings(&q).unwrap().seqs;
        assert_eq!(seqs.len(), 100, "{object:?} has a full page");
        if cold {
            drop_page_cache();
        }
        let t = Instant::now();
        let read = if i % 2 == 0 {
            reader.get_many(&seqs).unwrap()
        } else {
            seqs.iter().map(|s| reader.get(*s).unwrap()).collect()
        };
        let took = t.elapsed();
        assert!(
            read.iter().all(Option::is_some),
            "{object:?}: every event read"
        );
        if i % 2 == 0 {
            together.push(took);
        } else {
            apart.push(took);
        }
    }
    together.sort();
    apart.sort();
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    println!(
        "\nOne object's newest 100 events ({samples} objects each, {}):\n",
        if cold {
            "page cache emptied before each read"
        } else {
            "page cache as the run left it"
        }
    );
    println!("| read | p50 | p99 | ratio of p99 |");
    println!("|---|---|---|---|");
    let (t99, a99) = (percentile(&together, 0.99), percentile(&apart, 0.99));
    println!(
        "| together (get_many) | {} | {} | {:.2}x |",
        ms(percentile(&together, 0.5)),
        ms(t99),
        t99.as_secs_f64() / a99.as_secs_f64()
    );
    println!(
        "| one at a time (get) | {} | {} | 1.00x |",
        ms(percentile(&apart, 0.5)),
        ms(a99)
    );
}
