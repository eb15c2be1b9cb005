//! The agent benchmark's peer: Flux's apply engine (`github.com/fluxcd/pkg/ssa`) driven as
//! kustomize-controller drives it, by the harness in `tests/peer/flux-ssa` (built from its Go
//! module by `scripts/build-peer.sh`, found through `RECKON_BENCH_PEER`), run on the same Apps
//! from the same Git repository into a namespace of its own, measured as the agent is.

use super::{
    CpuReading, Writes, cpu_reading, delta, describe_per_object, percentile, proc_status, progress,
    requests, secs, tail,
};
use crate::support;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Apps drifted at once for the peer: it corrects drift only when an App's interval comes round,
/// so rounds one after another would take an interval each; drifts on different Apps at the same
/// moment measure the same latency.
const PEER_DRIFTS: usize = 10;

/// The environment variable naming the harness binary; without it the peer column stays empty.
pub const PEER_ENV: &str = "RECKON_BENCH_PEER";

/// What the benchmark measured of the peer.
pub struct PeerRun {
    /// Spawn until every App's first apply returned.
    pub applied: Duration,
    /// Spawn until every App's health check passed (with Pods: `--wait`), else `None`.
    pub ready: Option<Duration>,
    /// The harness's CPU seconds until production (the later of the two above).
    pub cpu: f64,
    /// The control plane's CPU seconds in that window (kube-apiserver, etcd, ...).
    pub control_plane_cpu: f64,
    /// The whole machine's busy CPU seconds in that window.
    pub machine_busy: f64,
    /// Requests on the Apps' kinds and what health checks read, over one interval of steady state.
    pub window: Writes,
    /// Reconciles (applies) the harness finished in that window.
    pub reconciles_in_window: usize,
    pub drift: Vec<Duration>,
    /// VmHWM, read before SIGTERM.
    pub rss: u64,
}

/// One JSON line of the harness: which App, `applied`, `ready` or `failed`, when it was read.
struct Line {
    app: String,
    msg: String,
    error: Option<String>,
    at: Instant,
}

fn follow(
    stdout: std::process::ChildStdout,
    log: PathBuf,
    tx: mpsc::UnboundedSender<Line>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut file = std::fs::File::create(&log).expect("peer log");
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let at = Instant::now();
            let _ = writeln!(file, "{line}");
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let _ = tx.send(Line {
                app: v["app"].as_str().unwrap_or_default().to_string(),
                msg: v["msg"].as_str().unwrap_or_default().to_string(),
                error: v["error"].as_str().map(str::to_string),
                at,
            });
        }
    })
}

/// Requests that an agent for the Apps makes: any verb on the Apps' four kinds, and on the Pods and
/// ReplicaSets a Deployment's health check reads, but not `status` or `binding` (KWOK's and
/// the scheduler's writes) — so that the controller manager's, scheduler's and KWOK's own
/// traffic, which the server's counter cannot tell apart by client, stays out of the count.
pub fn agent_requests(all: &Writes) -> Writes {
    const KINDS: [(&str, &str); 6] = [
        ("", "serviceaccounts"),
        ("", "services"),
        ("apps", "deployments"),
        ("networking.k8s.io", "ingresses"),
        ("", "pods"),
        ("apps", "replicasets"),
    ];
    all.iter()
        .filter(|((_, group, resource, sub, _), _)| {
            KINDS.contains(&(group.as_str(), resource.as_str()))
                && sub != "status"
                && sub != "binding"
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// Runs the harness on `apps` Apps of `repo` into `namespace` until production, then one interval
/// of steady state, then `PEER_DRIFTS` drifts, and stops it with SIGTERM.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    bin: &Path,
    client: &kube::Client,
    repo: &str,
    namespace: &str,
    apps: usize,
    replicas: u32,
    interval: Duration,
    processes: &[(&'static str, u32)],
) -> PeerRun {
    let objects = apps * 4;
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let log = tmp.join("agent_bench-peer.log");
    let stderr_log = tmp.join("agent_bench-peer.stderr.log");
    let wait = replicas > 0;
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--kubeconfig={}", support::kubeconfig().display()))
        .arg(format!("--repo={repo}"))
        .arg("--path=apps")
        .arg(format!("--namespace={namespace}"))
        .arg(format!("--interval={}s", interval.as_secs()))
        .arg(format!("--wait={wait}"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_log).expect("peer stderr log"));
    let (requests_before, cpu_before) = (requests(), cpu_reading(processes));
    let spawned = Instant::now();
    let mut peer = cmd.spawn().expect("spawning the peer harness");
    let pid = peer.id();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let follower = follow(peer.stdout.take().unwrap(), log.clone(), tx);
    progress(format!(
        "peer (Flux's apply engine) spawned: {} --interval={}s --wait={wait}",
        bin.display(),
        interval.as_secs()
    ));

    let mut applied: BTreeMap<String, Duration> = BTreeMap::new();
    let mut ready: BTreeMap<String, Duration> = BTreeMap::new();
    let mut applies: Vec<Instant> = Vec::new();
    let mut failures = 0usize;
    // Flux waits on each App's health with 4 workers: a pass takes about apps / 4 × 5 s.
    let deadline = Duration::from_secs(600 + apps as u64 * 3);
    let done = |applied: &BTreeMap<String, Duration>, ready: &BTreeMap<String, Duration>| {
        applied.len() == apps && (!wait || ready.len() == apps)
    };
    while !done(&applied, &ready) {
        if let Some(status) = peer.try_wait().unwrap() {
            panic!(
                "the peer exited ({status}) with {} of {apps} Apps applied; {}:\n{}",
                applied.len(),
                stderr_log.display(),
                tail(&stderr_log, 30)
            );
        }
        assert!(
            spawned.elapsed() < deadline,
            "the peer applied {} and readied {} of {apps} Apps within {deadline:?}; log {}",
            applied.len(),
            ready.len(),
            log.display()
        );
        if let Ok(Some(l)) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            match l.msg.as_str() {
                "applied" => {
                    applies.push(l.at);
                    applied.entry(l.app).or_insert(l.at - spawned);
                }
                "ready" => {
                    ready.entry(l.app).or_insert(l.at - spawned);
                }
                _ => {
                    failures += 1;
                    if failures <= 5 {
                        progress(format!("peer: {} failed: {:?}", l.app, l.error));
                    }
                }
            }
        }
    }
    let cpu_after = cpu_reading(processes);
    let peer_cpu = super::cpu_seconds(pid);
    let control_plane_cpu = cp_delta(&cpu_before, &cpu_after);
    let applied_all = *applied.values().max().unwrap();
    let ready_all = wait.then(|| *ready.values().max().unwrap());
    progress(format!(
        "peer: all {apps} Apps applied {} and ready {} after spawn; {failures} failed reconciles; CPU {peer_cpu:.1} s ({:.2} ms/object), control plane {control_plane_cpu:.1} CPU-s",
        secs(applied_all),
        ready_all.map(secs).unwrap_or_else(|| "—".into()),
        peer_cpu * 1000.0 / objects as f64
    ));
    progress(format!(
        "peer until production, API server requests: {}",
        describe_per_object(&delta(&requests_before, &requests()), objects)
    ));

    // Steady state: one interval of requests, the reconciles it held counted from the log.
    let drain = |rx: &mut mpsc::UnboundedReceiver<Line>, applies: &mut Vec<Instant>| {
        while let Ok(l) = rx.try_recv() {
            if l.msg == "applied" {
                applies.push(l.at);
            }
        }
    };
    let before = requests();
    let start = Instant::now();
    tokio::time::sleep(interval).await;
    let window = agent_requests(&delta(&before, &requests()));
    drain(&mut rx, &mut applies);
    let reconciles_in_window = applies
        .iter()
        .filter(|at| **at >= start && **at <= start + interval)
        .count();
    progress(format!(
        "peer steady state, one interval ({}s, {reconciles_in_window} reconciles): {}",
        interval.as_secs(),
        describe_per_object(&window, objects)
    ));

    // Drift: scale PEER_DRIFTS Apps' Deployments at once, as another field manager; each is
    // timed until the harness has put its replicas back.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let bench = PatchParams {
        field_manager: Some("bench".into()),
        ..PatchParams::default()
    };
    let drifted: Vec<String> = (0..PEER_DRIFTS.min(apps))
        .map(|i| super::app_name(i * apps / PEER_DRIFTS.min(apps)))
        .collect();
    let mut patched_at = BTreeMap::new();
    for name in &drifted {
        deployments
            .patch_scale(
                name,
                &bench,
                &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
            )
            .await
            .unwrap();
        patched_at.insert(name.clone(), Instant::now());
    }
    let mut drift = Vec::new();
    let drift_deadline = Instant::now() + interval * 2 + Duration::from_secs(120);
    while !patched_at.is_empty() {
        for name in patched_at.keys().cloned().collect::<Vec<_>>() {
            let d = deployments.get(&name).await.unwrap();
            if d.spec.and_then(|s| s.replicas) == Some(replicas as i32) {
                drift.push(patched_at.remove(&name).unwrap().elapsed());
            }
        }
        assert!(
            Instant::now() < drift_deadline,
            "the peer did not correct {:?} within two intervals; log {}",
            patched_at.keys().collect::<Vec<_>>(),
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drift.sort();
    progress(format!(
        "peer drift corrected: p50 {}, p99 {} over {} Apps drifted at once",
        secs(percentile(&drift, 0.5)),
        secs(percentile(&drift, 0.99)),
        drift.len()
    ));

    let rss = proc_status(pid, "VmHWM");
    support::signal(&peer, "-TERM");
    let status = support::wait_exit(&mut peer, Duration::from_secs(60));
    follower.join().unwrap();
    progress(format!(
        "peer stopped ({status}); its log: {}",
        log.display()
    ));
    PeerRun {
        applied: applied_all,
        ready: ready_all,
        cpu: peer_cpu,
        control_plane_cpu,
        machine_busy: cpu_after.machine - cpu_before.machine,
        window,
        reconciles_in_window,
        drift,
        rss,
    }
}

/// The control plane's CPU seconds between two readings: every process but the agent's.
pub fn cp_delta(before: &CpuReading, after: &CpuReading) -> f64 {
    after
        .per_process
        .iter()
        .zip(&before.per_process)
        .filter(|((name, _), _)| name != "agent")
        .map(|((_, a), (_, b))| a - b)
        .sum()
}
