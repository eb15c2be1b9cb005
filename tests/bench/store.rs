//! Store benchmarks: batched append with all indexes, index page reads (p50/p99), open plus
//! projection restore, and bytes on disk per event (`run`); the memory of processes that open a
//! store of a million revisions (`revisions_at_scale`). Each prints a Markdown table.
//!
//! Size: `RECKON_BENCH_EVENTS` (default 100000).
//! Location: `RECKON_BENCH_DIR` (default: a temp dir, deleted afterwards).
//! `RECKON_BENCH_EVENTS=10000 cargo test --test bench -- --ignored --exact store::run --nocapture`
//! is the CI-sized run (`scripts/test.sh`).
//!
//! `store::at_scale` measures the issue-22 targets on a large store (10M events:
//! `RECKON_BENCH_EVENTS=10000000`): the append rate over the last 1M events, the first open after
//! the write session, and pages of 100 by object from a cold page cache (the OS's page cache
//! dropped and the store opened afresh before each query). It needs root for
//! `/proc/sys/vm/drop_caches`; `RECKON_BENCH_COLD=fadvise` evicts only the store's files
//! instead (`posix_fadvise(DONTNEED)`, through `dd`), which does not slow other work down.
//! `RECKON_BENCH_PAGES=postings` reads the pages through the object's index postings first, as
//! before they were taken from the copies' blocks; each run also prints the sled reads per page.

use reckon::event::{
    Draft, Event, RenderSucceeded, SyncCounts, SyncFinished, SyncOutcome, samples,
};
use reckon::store::sled_engine::size_on_disk;
use reckon::store::{EventRead, EventStore, OpenOptions, Query, Selector, SledStore};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::stats as support;
use support::{Rng, percentile};

const APPS: u64 = 50;
const OBJECTS: u64 = 20;
const BATCH: u64 = 1000;
const QUERIES: usize = 300;

#[test]
#[ignore = "benchmark: run explicitly (--run-ignored only); prints a table"]
fn run() {
    let n = support::event_count(100_000);
    let tmp = tempfile::tempdir().unwrap();
    let path = support::store_path(tmp.path());
    // RECKON_BENCH_REUSE=1 keeps a store of the right size from an earlier run (read-side runs).
    let reuse = support::reusable(&path, n);
    if !reuse {
        let _ = std::fs::remove_dir_all(&path);
    }
    println!(
        "# reckon store benchmark: {n} events, {APPS} apps, {OBJECTS} objects/app, batches of {BATCH}"
    );
    println!("store: {}\n", path.display());

    // 1. Append, all indexes, one flush per batch (a batch stands for one sync's events).
    // RECKON_BENCH_CACHE_MB: sled's page cache (default: OpenOptions' 256 MiB).
    let cache_bytes = std::env::var("RECKON_BENCH_CACHE_MB")
        .ok()
        .map(|s| s.parse::<u64>().expect("MiB") << 20)
        .unwrap_or(OpenOptions::default().cache_bytes);
    let opts = OpenOptions {
        create: true,
        cache_bytes,
        ..Default::default()
    };
    println!("sled cache: {} MiB\n", cache_bytes >> 20);
    let mut store = SledStore::open(&path, opts.clone()).unwrap();
    let started = Instant::now();
    if !reuse {
        append_stream(&mut store, 0, n);
    }
    let append_secs = started.elapsed().as_secs_f64();
    let append_row = if reuse {
        "(reused an existing store)".to_string()
    } else {
        format!(
            "{:.0} events/s ({append_secs:.1} s)",
            n as f64 / append_secs
        )
    };
    store.close().unwrap();
    let (apparent, allocated) = size_on_disk(&path).unwrap();

    // 2. Open + projection restore (snapshot + tail); sled's own recovery measured apart.
    let started = Instant::now();
    drop(
        reckon::store::sled_engine::sled_config(&path, 256 << 20)
            .open()
            .unwrap(),
    );
    let sled_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let store = SledStore::open(&path, opts).unwrap();
    let open_secs = started.elapsed().as_secs_f64();
    assert_eq!(store.head().unwrap().0, n);
    let apps_restored = store.projections().apps.len();

    // 3. Pages of 100, newest first, from random terms (and random cursors for half of them).
    let revs = n / APPS / (OBJECTS + 4);
    // RECKON_BENCH_ORDER=oldest reads pages oldest first (default: newest first, as a UI does).
    let oldest_first = std::env::var("RECKON_BENCH_ORDER").is_ok_and(|o| o == "oldest");
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut rows = vec![];
    for (name, make) in [("object", 0u8), ("app", 1), ("author", 2), ("commit", 3)] {
        let mut times = Vec::with_capacity(QUERIES);
        let mut returned = 0usize;
        for q in 0..QUERIES {
            let app = rng.below(APPS);
            let sel = match make {
                0 => Selector::Object(samples::object(
                    "apps",
                    "v1",
                    "Deployment",
                    Some(&format!("ns-{app}")),
                    &format!("svc-{}", rng.below(OBJECTS)),
                )),
                1 => Selector::App(format!("app-{app}")),
                2 => Selector::Author(format!("dev{}@example.com", rng.below(50.min(revs.max(1))))),
                _ => Selector::Commit(samples::sha(rng.below(revs.max(1)) * APPS + app)),
            };
            let cursor = (q % 2 == 1).then(|| 1 + rng.below(n));
            let mut query = Query::new(sel).limit(100).after(cursor);
            if oldest_first {
                query = query.oldest_first();
            }
            let t = Instant::now();
            let page = store.query(&query).unwrap();
            times.push(t.elapsed());
            returned += page.events.len();
        }
        times.sort();
        rows.push((
            name,
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            *times.last().unwrap(),
            returned as f64 / QUERIES as f64,
        ));
    }
    drop(store);

    println!("| measure | result | target |");
    println!("|---|---|---|");
    println!(
        "| append, all indexes, batched ({BATCH}/batch, flush per batch) | {append_row} | ≥ 50,000 events/s |"
    );
    for (name, p50, p99, max, avg) in &rows {
        println!(
            "| page of 100 by {name} (avg {avg:.0} returned) | p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms | p99 ≤ 10 ms |",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
    }
    println!(
        "| open + projection restore ({apps_restored} apps) | {open_secs:.3} s (sled alone: {sled_secs:.3} s) | ≤ 2 s |"
    );
    println!(
        "| bytes on disk per event, all trees | {:.0} apparent, {:.0} allocated ({:.1} MB) | ≤ 600 |",
        apparent as f64 / n as f64,
        allocated as f64 / n as f64,
        apparent as f64 / 1e6
    );
}

/// Appends the sample stream's events `from..to` (with their blobs) in batches of [`BATCH`],
/// one flush per batch, reporting progress every 30 s.
fn append_stream(store: &mut SledStore, from: u64, to: u64) {
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut i = from;
    while i < to {
        let end = (i + BATCH).min(to);
        let mut drafts = Vec::with_capacity((end - i) as usize);
        for j in i..end {
            if let Some(b) = samples::stream_blob(j, APPS, OBJECTS) {
                store.put_blob(&b).unwrap();
            }
            drafts.push(samples::stream(j, APPS, OBJECTS));
        }
        store.append(drafts).unwrap();
        store.flush().unwrap();
        i = end;
        if last_report.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "  appended {i} ({:.0}/s since {from})",
                (i - from) as f64 / started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
}

/// A random object of the sample stream.
fn random_object(rng: &mut Rng) -> Selector {
    let app = rng.below(APPS);
    Selector::Object(samples::object(
        "apps",
        "v1",
        "Deployment",
        Some(&format!("ns-{app}")),
        &format!("svc-{}", rng.below(OBJECTS)),
    ))
}

/// Evicts the store's pages from the OS page cache; returns how, for the output. Dirty pages
/// are written first (`sync`), since only clean pages can be dropped.
fn make_cold(path: &Path) -> &'static str {
    let status = std::process::Command::new("sync").status().unwrap();
    assert!(status.success(), "sync failed");
    let fadvise = std::env::var("RECKON_BENCH_COLD").is_ok_and(|c| c == "fadvise");
    if !fadvise && std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok() {
        return "sync; echo 1 > /proc/sys/vm/drop_caches (the whole page cache)";
    }
    // dd's iflag=nocache with count=0 calls posix_fadvise(DONTNEED) on the whole file.
    evict_files(path);
    "posix_fadvise(DONTNEED) on every file of the store (dd iflag=nocache count=0)"
}

fn evict_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            evict_files(&entry.path());
        } else {
            let status = std::process::Command::new("dd")
                .arg(format!("if={}", entry.path().display()))
                .args(["iflag=nocache", "count=0", "status=none"])
                .status()
                .unwrap();
            assert!(status.success(), "dd failed on {}", entry.path().display());
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The issue-22 targets at scale: append rate over the last 1M events (of a store generated
/// here), the first open after that write session, and pages of 100 by object from a cold
/// cache. `RECKON_BENCH_REUSE=1` with `RECKON_BENCH_DIR` skips the generation when the store
/// there holds exactly `RECKON_BENCH_EVENTS` events (the open is then not the first after a
/// write session, and says so). `RECKON_BENCH_COLD_QUERIES` (default 100): cold pages measured.
#[test]
#[ignore = "benchmark: run explicitly (--run-ignored only); prints a table"]
fn at_scale() {
    let n = support::event_count(1_000_000);
    let tail = n.min(1_000_000);
    let queries: usize = std::env::var("RECKON_BENCH_COLD_QUERIES")
        .ok()
        .map(|s| s.parse().expect("a count"))
        .unwrap_or(100);
    // RECKON_BENCH_SCHEMA: the store schema to write and read (default: the current one; 3 is
    // the layout before the object copies, to compare with in the same build).
    let schema: u32 = std::env::var("RECKON_BENCH_SCHEMA")
        .ok()
        .map(|s| s.parse().expect("a schema"))
        .unwrap_or(reckon::store::STORE_SCHEMA);
    // RECKON_BENCH_PAGES=postings: pages by object take their seqs from the object's index
    // postings first, as before they were read from the copies' blocks (same build, same store).
    let pages_from_postings = std::env::var("RECKON_BENCH_PAGES").is_ok_and(|p| p == "postings");
    let opts = OpenOptions {
        schema,
        ..Default::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let path = support::store_path(tmp.path());
    let reuse = std::env::var_os("RECKON_BENCH_REUSE").is_some()
        && SledStore::open(&path, opts.clone())
            .ok()
            .and_then(|s| s.head())
            .is_some_and(|h| h.0 == n);
    println!(
        "# reckon store at scale (schema {schema}): {n} events, {APPS} apps, {OBJECTS} objects/app, batches of {BATCH}"
    );
    println!("store: {}\n", path.display());

    // 1. The write session: everything up to the last `tail` events, then those, timed.
    let mut append_row = "(reused an existing store: not measured)".to_string();
    if !reuse {
        let _ = std::fs::remove_dir_all(&path);
        let create = OpenOptions {
            create: true,
            ..opts.clone()
        };
        let mut store = SledStore::open(&path, create).unwrap();
        let started = Instant::now();
        append_stream(&mut store, 0, n - tail);
        let before = started.elapsed().as_secs_f64();
        let started = Instant::now();
        append_stream(&mut store, n - tail, n);
        let secs = started.elapsed().as_secs_f64();
        let started = Instant::now();
        store.close().unwrap();
        append_row = format!(
            "{:.0} events/s over events {}..{n} ({secs:.1} s; {:.0}/s before them; close {:.2} s)",
            tail as f64 / secs,
            n - tail,
            (n - tail) as f64 / before.max(1e-9),
            started.elapsed().as_secs_f64()
        );
    }
    let (apparent, _) = size_on_disk(&path).unwrap();

    // 2. Opens: the first after the write session (warm page cache, as at a restart), the next
    // one, and one from a cold page cache. sled's own recovery is part of each.
    let open = |what: &str| {
        let started = Instant::now();
        let store = SledStore::open(&path, opts.clone()).unwrap();
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(store.head().unwrap().0, n, "{what}");
        store.close().unwrap();
        secs
    };
    let first_open = open("first open");
    let second_open = open("second open");
    let cold_how = make_cold(&path);
    let cold_open = open("cold open");

    // 3. Pages of 100 by object, newest first (half from a random cursor), each from a cold
    // page cache and a store opened afresh (sled's cache empty too); only the query is timed.
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut times = Vec::with_capacity(queries);
    let mut returned = 0;
    let mut reads = Vec::with_capacity(queries);
    let mut warm = Vec::with_capacity(queries);
    // The pages from the top (no cursor: the postings above Mcopied are looked up too) and
    // those from a cursor, apart.
    let mut by_cursor: [Vec<Duration>; 2] = Default::default();
    let page_opts = OpenOptions {
        pages_from_postings,
        ..opts.clone()
    };
    for q in 0..queries {
        let sel = random_object(&mut rng);
        let cursor = (q % 2 == 1).then(|| 1 + rng.below(n));
        make_cold(&path);
        let store = SledStore::open(&path, page_opts.clone()).unwrap();
        let query = Query::new(sel).limit(100).after(cursor);
        let reader = store.reader();
        let before = reader.reads();
        let started = Instant::now();
        let page = reader.query(&query).unwrap();
        times.push(started.elapsed());
        by_cursor[q % 2].push(started.elapsed());
        reads.push(reader.reads().since(before));
        returned += page.events.len();
        // The same page again, warm: what of the cold time is not waiting for the disk.
        let started = Instant::now();
        reader.query(&query).unwrap();
        warm.push(started.elapsed());
        drop(reader);
        store.close().unwrap();
    }
    times.sort();
    warm.sort();
    for t in by_cursor.iter_mut() {
        t.sort();
    }
    let per_page = |f: fn(&reckon::store::sled_engine::Reads) -> u64| {
        let v: Vec<u64> = reads.iter().map(f).collect();
        let avg = v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
        (avg, v.iter().copied().max().unwrap_or(0))
    };
    let (seeks_avg, seeks_max) = per_page(|r| r.seeks);
    let (values_avg, values_max) = per_page(|r| r.values);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    println!("| measure | result | target |");
    println!("|---|---|---|");
    println!(
        "| append, all indexes ({BATCH}/batch, flush per batch) | {append_row} | ≥ 50,000 events/s |"
    );
    let first = if reuse {
        "first open of this run (not after a write session)"
    } else {
        "first open after the write session (warm page cache)"
    };
    println!("| {first} | {first_open:.3} s | ≤ 2 s |");
    println!("| next open (warm) | {second_open:.3} s | |");
    println!("| open from a cold page cache | {cold_open:.3} s | |");
    println!(
        "| page of 100 by object, cold ({queries} pages, avg {:.0} returned) | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms | p99 ≤ 20 ms |",
        returned as f64 / queries as f64,
        ms(support::percentile(&times, 0.5)),
        ms(support::percentile(&times, 0.99)),
        ms(*times.last().unwrap())
    );
    for (t, what) in by_cursor
        .iter()
        .zip(["from the top", "from a random cursor"])
    {
        if t.is_empty() {
            continue;
        }
        println!(
            "| … of which {what} ({} pages) | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms | |",
            t.len(),
            ms(support::percentile(t, 0.5)),
            ms(support::percentile(t, 0.99)),
            ms(t.last().copied().unwrap_or_default())
        );
    }
    println!(
        "| the same pages again, warm | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms | |",
        ms(support::percentile(&warm, 0.5)),
        ms(support::percentile(&warm, 0.99)),
        ms(*warm.last().unwrap())
    );
    println!(
        "| sled reads per page ({}) | seeks avg {seeks_avg:.1}, max {seeks_max}; keys read avg {values_avg:.1}, max {values_max} | |",
        if pages_from_postings {
            "seqs from the index postings, RECKON_BENCH_PAGES=postings"
        } else {
            "seqs from the copies' blocks up to Mcopied"
        }
    );
    println!(
        "| bytes on disk per event, all trees | {:.0} | |",
        apparent as f64 / n as f64
    );
    println!(
        "\ncold: {cold_how}, then the store opened afresh (sled's cache empty) before each page"
    );
    println!("load average at the end: {}", load.trim());
}

/// Per-App history at scale (issue 22): a store of `RECKON_BENCH_APPS` Apps (default 1,000)
/// × `RECKON_BENCH_REVISIONS` revisions each (default 1,000: 1M revisions; each revision a
/// CommitObserved, a RenderSucceeded and a SyncFinished), generated once into
/// `RECKON_BENCH_DIR` (default: a temp dir) and reused when it is already complete there.
/// Runs the built `reckon` under `/usr/bin/time -v` and prints each process's maximum RSS and
/// wall time: `reckon revisions app-0` on its first open after generation (or after an upgrade
/// of the binary: a migration shows here) and again, `reckon status` (every App's projection:
/// what the agent's writer holds after restoring the store), and `reckon revisions` on a store
/// of one App and one revision (the baseline the growth is measured against).
#[test]
#[ignore = "benchmark: run explicitly (--run-ignored only); prints a table"]
fn revisions_at_scale() {
    let apps = env_count("RECKON_BENCH_APPS", 1_000);
    let revs = env_count("RECKON_BENCH_REVISIONS", 1_000);
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("RECKON_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_owned());
    let big = dir.join(format!("revisions-{apps}x{revs}"));
    let small = dir.join("revisions-1x1");
    let generation = generate_revisions(&big, apps, revs);
    generate_revisions(&small, 1, 1);
    println!(
        "# per-App history at scale: {apps} Apps × {revs} revisions ({} revisions, {} events)",
        apps * revs,
        apps * revs * 3
    );
    println!("store: {} ({generation})\n", big.display());
    let (apparent, _) = size_on_disk(&big).unwrap();
    let runs = [
        ("`reckon revisions app-0`, first open", &big, "revisions"),
        ("`reckon revisions app-0`, again", &big, "revisions"),
        ("`reckon status` (every App)", &big, "status"),
        (
            "`reckon revisions app-0`, 1 App × 1 revision",
            &small,
            "revisions",
        ),
    ];
    let mut measured = vec![];
    for (name, store, command) in runs {
        measured.push((name, timed_reckon(store, command)));
    }
    let baseline = measured[3].1.0;
    println!("| process | max RSS | growth over the 1×1 store | wall |");
    println!("|---|---|---|---|");
    for (name, (rss_kib, wall)) in &measured {
        println!(
            "| {name} | {:.1} MiB | {:+.1} MiB | {wall:.2} s |",
            *rss_kib as f64 / 1024.0,
            (*rss_kib as f64 - baseline as f64) / 1024.0
        );
    }
    println!(
        "\nstore size: {:.1} MB apparent; target: `reckon revisions` grows RSS by ≤ 16 MiB",
        apparent as f64 / 1e6
    );
}

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|s| s.replace('_', "").parse().expect(name))
        .unwrap_or(default)
}

/// Writes `apps` × `revs` revisions at `path` unless a complete store is there already (a
/// `complete` file beside `db/` says so). One batch per round: every App's next revision.
fn generate_revisions(path: &std::path::Path, apps: u64, revs: u64) -> String {
    let done = path.join("complete");
    if done.exists() {
        return "reused".into();
    }
    let _ = std::fs::remove_dir_all(path);
    let opts = OpenOptions {
        create: true,
        // One snapshot, at close: the generation is not what is measured.
        snapshot_every: u64::MAX,
        ..Default::default()
    };
    let started = Instant::now();
    let mut store = SledStore::open(path, opts).unwrap();
    let digest = store.put_blob(b"[]").unwrap();
    for r in 0..revs {
        let mut drafts = Vec::with_capacity(apps as usize * 3);
        for a in 0..apps {
            let app = format!("app-{a}");
            let commit = samples::commit(a * revs + r, &format!("dev{}@example.com", r % 50));
            let sha = commit.sha.clone();
            drafts.push(Draft::new(Some(&app), Event::CommitObserved(commit)));
            drafts.push(Draft::new(
                Some(&app),
                Event::RenderSucceeded(RenderSucceeded {
                    revision: sha.clone(),
                    digest,
                    object_count: 20,
                }),
            ));
            drafts.push(Draft::new(
                Some(&app),
                Event::SyncFinished(SyncFinished {
                    revision: sha,
                    outcome: SyncOutcome::Succeeded,
                    counts: SyncCounts {
                        configured: 1,
                        unchanged: 19,
                        ..Default::default()
                    },
                    duration_ms: 40,
                }),
            ));
        }
        store.append(drafts).unwrap();
        store.flush().unwrap();
    }
    store.close().unwrap();
    std::fs::write(&done, b"").unwrap();
    format!("generated in {:.0} s", started.elapsed().as_secs_f64())
}

/// `reckon COMMAND [app-0] --store STORE -o json` under `/usr/bin/time -v`: its maximum RSS
/// (KiB) and wall time (s).
fn timed_reckon(store: &std::path::Path, command: &str) -> (u64, f64) {
    let mut c = std::process::Command::new("/usr/bin/time");
    c.arg("-v").arg(env!("CARGO_BIN_EXE_reckon")).arg(command);
    if command == "revisions" {
        c.arg("app-0");
    }
    let started = Instant::now();
    let out = c
        .arg("--store")
        .arg(store)
        .args(["-o", "json"])
        .env_remove("RECKON_STORE")
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    let wall = started.elapsed().as_secs_f64();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "reckon {command}: {report}");
    let rss = report
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no maximum RSS in: {report}"));
    (rss, wall)
}
