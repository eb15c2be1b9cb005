//! The fleet at ten times the scale (issue 22 item 4): N Apps of 4 objects (default 10,000)
//! reconciled by one agent and by a fleet of shards (`reckon run --shards S --shard I`, each
//! shard a process with a store of its own), one fleet size after the other, each into a
//! namespace of its own on the same control plane. Per fleet size: time to production (every
//! App applied, every App healthy), one interval of steady state's requests, drift correction
//! p50/p99, peak RSS (the largest shard's and the fleet's sum), the agents' CPU per object and
//! the control plane's CPU floor. Reported, not asserted (a shared machine); correctness is
//! asserted: every first sync succeeds, every object carries its App's label, each App is
//! reconciled by exactly one shard, every agent exits 0 on SIGTERM.
//!
//! `RECKON_BENCH_SCALE_APPS` (default 10000), `RECKON_BENCH_SCALE_SHARDS` (fleet sizes in the
//! order run, default `1,4`), `RECKON_BENCH_INTERVAL` (default 300 s, 20 s up to 100 Apps: ten
//! thousand Apps' first pass must not be overtaken by their second), `RECKON_BENCH_SCALE_REPLICAS` (each
//! Deployment's replicas; default 1 where simulated nodes run Pods, else 0).
//! `scripts/bench-agent.sh --scale` builds in release and runs it.

use super::*;

/// One fleet size's figures.
struct FleetRun {
    shards: usize,
    applied: Duration,
    healthy: Duration,
    half: Duration,
    /// The largest shard's VmHWM and the sum over the fleet, bytes.
    rss_max: u64,
    rss_sum: u64,
    /// Every shard's CPU seconds from spawn until every App synced.
    cpu: f64,
    control_plane_cpu: f64,
    machine_busy: f64,
    window: u64,
    drift_p50: Duration,
    drift_p99: Duration,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The fleet sizes to run, from `RECKON_BENCH_SCALE_SHARDS` (`1,4`).
fn fleet_sizes() -> Vec<usize> {
    let raw = std::env::var("RECKON_BENCH_SCALE_SHARDS").unwrap_or_else(|_| "1,4".into());
    let sizes: Vec<usize> = raw
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("RECKON_BENCH_SCALE_SHARDS: {s:?} is not a number"))
        })
        .collect();
    assert!(
        sizes.iter().all(|s| *s > 0),
        "RECKON_BENCH_SCALE_SHARDS: every fleet has at least one shard"
    );
    sizes
}

/// reckon.yaml for `apps` Apps of `repo` into `namespace`.
fn config(apps: usize, repo: &str, namespace: &str, interval: Duration) -> String {
    let kubeconfig = support::kubeconfig();
    let mut config = String::from("apps:\n");
    for i in 0..apps {
        let name = app_name(i);
        config.push_str(&format!(
            "  - name: {name}\n    source:\n      url: {repo}\n      path: apps/{name}\n      interval: {s}s\n    target:\n      kubeconfig: {kc}\n      namespace: {namespace}\n",
            s = interval.as_secs(),
            kc = kubeconfig.display(),
        ));
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: many minutes at full size; run explicitly (scripts/bench-agent.sh --scale)"]
async fn scale() {
    let apps: usize = env_or("RECKON_BENCH_SCALE_APPS", 10_000);
    assert!(apps > 0, "RECKON_BENCH_SCALE_APPS must be at least 1");
    let client = support::client().await;
    let nodes = support::simulated_nodes(&client).await > 0;
    let replicas: u32 = env_or("RECKON_BENCH_SCALE_REPLICAS", u32::from(nodes));
    let interval = Duration::from_secs(env_or(
        "RECKON_BENCH_INTERVAL",
        if apps <= 100 { 20 } else { 300 },
    ));

    let started = Instant::now();
    let fixture = apps_repository(apps, replicas);
    progress(format!(
        "scale: {apps} Apps ({} objects, {replicas} replica each) prepared in {}",
        apps * 4,
        secs(started.elapsed())
    ));

    let mut runs = Vec::new();
    let mut namespaces = Vec::new();
    for shards in fleet_sizes() {
        let ns = TestNamespace::create(&client, &format!("bench-scale-{shards}")).await;
        let text = config(apps, &fixture.file_url(), &ns.name, interval);
        runs.push(fleet(&client, &text, &ns.name, apps, replicas, shards, interval).await);
        // Kept until the end: deleting ten thousand Deployments and their Pods would load the
        // control plane during the next fleet's measurement.
        namespaces.push(ns);
    }
    println!("{}", scale_table(apps, replicas, interval, &runs));
}

/// One shard of a fleet, running.
struct Shard {
    child: std::process::Child,
    follower: std::thread::JoinHandle<()>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Spawns `shards` agents on `config`, each in a directory (store, cache) of its own; their
/// `applied`/`synced` lines arrive on `tx` tagged with the shard.
fn spawn_fleet(
    config: &str,
    shards: usize,
    tx: &mpsc::UnboundedSender<(usize, Synced)>,
) -> Vec<Shard> {
    (0..shards)
        .map(|i| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("reckon.yaml"), config).unwrap();
            let mut cmd = reckon(dir.path());
            cmd.arg("run");
            if shards > 1 {
                cmd.args(["--shards", &shards.to_string(), "--shard", &i.to_string()]);
            }
            let mut child = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("agent_bench-scale-{shards}-{i}.log"));
            // Each shard's lines through a channel of its own, tagged on the way to `tx`.
            let (shard_tx, mut shard_rx) = mpsc::unbounded_channel();
            let follower = follow_log(child.stderr.take().unwrap(), log.clone(), shard_tx);
            let tx = tx.clone();
            std::thread::spawn(move || {
                while let Some(s) = shard_rx.blocking_recv() {
                    if tx.send((i, s)).is_err() {
                        break;
                    }
                }
            });
            Shard {
                child,
                follower,
                log,
                _dir: dir,
            }
        })
        .collect()
}

/// Runs one fleet size to production, one interval of steady state, the drift rounds and the
/// stop, and returns its figures.
async fn fleet(
    client: &kube::Client,
    config: &str,
    namespace: &str,
    apps: usize,
    replicas: u32,
    shards: usize,
    interval: Duration,
) -> FleetRun {
    let objects = apps * 4;
    let mut processes = control_plane_pids();
    let control_plane = processes.len();
    let cpu_before = cpu_reading(&processes);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let spawned = Instant::now();
    let mut fleet = spawn_fleet(config, shards, &tx);
    drop(tx);
    processes.extend(fleet.iter().map(|s| ("agent", s.child.id())));
    let cpu_before = CpuReading {
        per_process: cpu_before
            .per_process
            .into_iter()
            .chain(fleet.iter().map(|_| ("agent".to_string(), 0.0)))
            .collect(),
        ..cpu_before
    };
    progress(format!("scale: {shards} shard(s) spawned for {apps} Apps"));

    let mut synced: BTreeMap<String, (usize, Duration, String)> = BTreeMap::new();
    let mut applied: BTreeMap<String, Duration> = BTreeMap::new();
    let deadline = Duration::from_secs(600 + apps as u64 / 4);
    while synced.len() < apps {
        for (i, s) in fleet.iter_mut().enumerate() {
            if let Some(status) = s.child.try_wait().unwrap() {
                panic!(
                    "shard {i} exited ({status}) after {} of {apps} Apps synced; log {}:\n{}",
                    synced.len(),
                    s.log.display(),
                    tail(&s.log, 30)
                );
            }
        }
        assert!(
            spawned.elapsed() < deadline,
            "{} of {apps} Apps synced after {deadline:?}",
            synced.len()
        );
        if let Ok(Some((shard, s))) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await
        {
            match s.outcome {
                Some(outcome) => {
                    let first =
                        synced
                            .entry(s.app.clone())
                            .or_insert((shard, s.at - spawned, outcome));
                    assert_eq!(first.0, shard, "{} reconciled by two shards", s.app);
                }
                None => {
                    applied.entry(s.app).or_insert(s.at - spawned);
                }
            }
        }
    }
    let after = cpu_reading(&processes);
    let control_plane_cpu: f64 = after.per_process[..control_plane]
        .iter()
        .zip(&cpu_before.per_process[..control_plane])
        .map(|((_, a), (_, b))| a - b)
        .sum();
    let cpu: f64 = after.per_process[control_plane..]
        .iter()
        .map(|(_, s)| s)
        .sum();
    let failed: Vec<_> = synced
        .iter()
        .filter(|(_, (_, _, outcome))| outcome != "Succeeded")
        .take(10)
        .collect();
    assert!(
        failed.is_empty(),
        "first syncs that did not succeed: {failed:?}"
    );
    assert_eq!(applied.len(), apps, "Apps that logged `applied`");
    let mut sync_times: Vec<Duration> = synced.values().map(|(_, d, _)| *d).collect();
    sync_times.sort();
    let healthy = *sync_times.last().unwrap();
    let applied_at = applied.values().copied().max().unwrap();
    let per_shard: Vec<usize> = (0..shards)
        .map(|i| synced.values().filter(|(s, ..)| *s == i).count())
        .collect();
    progress(format!(
        "scale: {shards} shard(s): all applied {}, all synced {} (half {}); Apps per shard {per_shard:?}; {}",
        secs(applied_at),
        secs(healthy),
        secs(percentile(&sync_times, 0.5)),
        fleet
            .iter()
            .map(|s| memory(s.child.id()))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    assert_labelled(client, namespace, apps).await;

    wait_quiet();
    let before = requests();
    tokio::time::sleep(interval).await;
    let window = peer::agent_requests(&delta(&before, &requests()));
    progress(format!(
        "scale: {shards} shard(s) steady state, one interval ({}s): {}",
        interval.as_secs(),
        describe_per_object(&window, objects)
    ));

    let (drift_p50, drift_p99) = drift_rounds(client, namespace, apps, replicas).await;
    let rss: Vec<u64> = fleet
        .iter()
        .map(|s| proc_status(s.child.id(), "VmHWM"))
        .collect();
    for (i, mut s) in fleet.into_iter().enumerate() {
        support::signal(&s.child, "-TERM");
        let status = support::wait_exit(&mut s.child, Duration::from_secs(300));
        s.follower.join().unwrap();
        assert!(
            status.success(),
            "shard {i} exits 0 on SIGTERM: {status}; log {}:\n{}",
            s.log.display(),
            tail(&s.log, 30)
        );
    }
    FleetRun {
        shards,
        applied: applied_at,
        healthy,
        half: percentile(&sync_times, 0.5),
        rss_max: rss.iter().copied().max().unwrap_or(0),
        rss_sum: rss.iter().sum(),
        cpu,
        control_plane_cpu,
        machine_busy: after.machine - cpu_before.machine,
        window: total(&window),
        drift_p50,
        drift_p99,
    }
}

/// One column per fleet size, with issue 22's targets at 10,000 Apps.
fn scale_table(apps: usize, replicas: u32, interval: Duration, runs: &[FleetRun]) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let objects = (apps * 4) as f64;
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
    let s = |d: Duration| secs(d);
    type Cell = Box<dyn Fn(&FleetRun) -> String>;
    let rows: Vec<(&str, Cell, &str)> = vec![
        (
            "time to production (all applied)",
            Box::new(move |r| s(r.applied)),
            "—",
        ),
        (
            "time to production (all healthy)",
            Box::new(move |r| s(r.healthy)),
            "—",
        ),
        (
            "half of the Apps healthy",
            Box::new(move |r| s(r.half)),
            "—",
        ),
        (
            "drift correction p50",
            Box::new(move |r| s(r.drift_p50)),
            "—",
        ),
        (
            "drift correction p99",
            Box::new(move |r| s(r.drift_p99)),
            "≤ 3 s",
        ),
        (
            "peak RSS, largest shard (VmHWM)",
            Box::new(move |r| mib(r.rss_max)),
            "≤ 300 MiB on one agent",
        ),
        (
            "peak RSS, sum over the fleet",
            Box::new(move |r| mib(r.rss_sum)),
            "—",
        ),
        (
            "agents' CPU per applied object until production",
            Box::new(move |r| format!("{:.2} ms", r.cpu * 1000.0 / objects)),
            "≤ 1.0 ms",
        ),
        (
            "steady state: requests in one interval",
            Box::new(|r| r.window.to_string()),
            "—",
        ),
        (
            "floor: control plane CPU until production / cores",
            Box::new(move |r| {
                format!(
                    "{:.1} CPU-s → {:.2} s",
                    r.control_plane_cpu,
                    r.control_plane_cpu / cores
                )
            }),
            "—",
        ),
        (
            "machine busy in that window",
            Box::new(move |r| {
                format!(
                    "{:.0} of {:.0} CPU-s",
                    r.machine_busy,
                    r.healthy.as_secs_f64() * cores
                )
            }),
            "—",
        ),
        (
            "wall time until production / floor",
            Box::new(move |r| {
                format!(
                    "{:.2}×",
                    r.healthy.as_secs_f64() / (r.control_plane_cpu / cores)
                )
            }),
            "≤ 1.15×",
        ),
    ];
    let mut table = format!(
        "reckon agent benchmark at scale: {apps} Apps ({} objects, {replicas} replica(s) per Deployment), interval {} s\n\n| metric |",
        apps * 4,
        interval.as_secs()
    );
    for r in runs {
        table.push_str(&format!(" {} shard(s) |", r.shards));
    }
    table.push_str(" target |\n|---|");
    for _ in runs {
        table.push_str("---|");
    }
    table.push_str("---|\n");
    for (metric, cell, target) in rows {
        table.push_str(&format!("| {metric} |"));
        for r in runs {
            table.push_str(&format!(" {} |", cell(r)));
        }
        table.push_str(&format!(" {target} |\n"));
    }
    table
}
