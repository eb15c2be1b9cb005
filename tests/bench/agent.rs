//! The reconciler benchmark: the `reckon run` and `reckon sync` binaries against the peer, Flux's
//! apply engine as kustomize-controller drives it (`peer`, built from its Go module), and against
//! `kubectl apply --server-side -R` of the same files, on the same cluster, measured in the same
//! run (these machines are noisy; only same-run comparisons mean anything), printed as one table
//! with the control plane's CPU floor (issue 22).
//! Ignored by default; `scripts/bench-agent.sh` builds in release and runs it, or by hand:
//! `RECKON_BENCH_PEER=PATH reckon-testenv run -- cargo nextest run --release --test bench
//! --run-ignored only -E 'test(/^agent::/)' --no-capture`, sized by `RECKON_BENCH_APPS` (default
//! 1000 Apps of 4 objects each), every App polled every `RECKON_BENCH_INTERVAL` seconds.
//!
//! `RECKON_BENCH_KEEP=1` keeps the agent's directory (config, store, cache) for a look at the
//! event times afterwards; the agent's log is in `target/tmp/agent_bench-reckon-run.log`, the
//! resync's in `target/tmp/agent_bench-reckon-sync.log`, the peer's in
//! `target/tmp/agent_bench-peer.log`.
//!
//! Timing targets are reported, not asserted (a shared 2-core machine); correctness is
//! asserted: every object exists with its App's label, every first sync succeeded, the
//! unchanged resync sends no write request for the Apps' objects, and the agent exits 0 on
//! SIGTERM.

use crate::support;
use support::kubectl;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, Patch, PatchParams};
use reckon_testenv::git::Fixture;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::TestNamespace;
use support::sync::api_for;
use support::workload::app_objects;
use tokio::sync::mpsc;

mod peer;
mod scale;

/// Drift corrections measured, each on a different App.
const DRIFT_ROUNDS: usize = 20;

/// Verbs the API server counts for requests that change state. DELETECOLLECTION is not in issue
/// 5's list but is a write all the same; counting it only makes the zero-write check stricter.
const WRITE_VERBS: [&str; 6] = [
    "POST",
    "PUT",
    "PATCH",
    "DELETE",
    "DELETECOLLECTION",
    "APPLY",
];

fn app_name(i: usize) -> String {
    format!("app{i:04}")
}

fn progress(msg: impl std::fmt::Display) {
    eprintln!("agent_bench: {msg}");
}

/// `reckon` in `dir` (where reckon.yaml, the store and the cache live), JSON logs at info: the
/// test reads the agent's `synced` lines, and JSON needs no ANSI stripping.
/// `RECKON_BENCH_RUST_LOG` replaces the filter when looking into where the time goes (it must
/// keep `reckon::reconcile` at info).
fn reckon(dir: &Path) -> Command {
    let mut c = support::reckon(dir);
    c.env(
        "RUST_LOG",
        std::env::var("RECKON_BENCH_RUST_LOG").unwrap_or_else(|_| "info".into()),
    )
    .args(["--log-format", "json"]);
    c
}

/// `kubectl wait --for=condition=Available` on every Deployment in `namespace`, timed: with
/// `kubectl_apply` before it, kubectl's time to production when Pods must become Ready.
fn kubectl_wait_available(namespace: &str) -> Duration {
    kubectl_timed(
        "kubectl wait",
        [
            "wait",
            "--for=condition=Available",
            "deployment",
            "--all",
            "-n",
            namespace,
            "--timeout=900s",
        ],
    )
}

/// `kubectl apply --server-side -R -f dir -n namespace`, timed.
fn kubectl_apply(dir: &Path, namespace: &str) -> Duration {
    let args = ["apply", "--server-side", "-R", "-n", namespace, "-f"];
    kubectl_timed(
        "kubectl apply",
        args.iter()
            .map(std::ffi::OsStr::new)
            .chain([dir.as_os_str()]),
    )
}

/// kubectl with `args`, timed; `what` names it when it cannot run or fails.
fn kubectl_timed<S: AsRef<std::ffi::OsStr>>(
    what: &str,
    args: impl IntoIterator<Item = S>,
) -> Duration {
    let started = Instant::now();
    let out = kubectl()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {what} (is kubectl on PATH?): {e}"));
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

/// Parses `name="value",...` (Prometheus text format label set, without the braces).
fn labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq].trim_start_matches(',').trim().to_string();
        let mut value = String::new();
        let mut chars = rest[eq + 1..].char_indices();
        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "label {name}");
        let mut end = rest.len() - eq - 1;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(match e {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(name, value);
        rest = &rest[eq + 1 + end..];
    }
    out
}

/// One line of `apiserver_request_total` that counts writes: verb, API group, resource,
/// subresource, dry run.
type WriteKey = (String, String, String, String, String);
type Writes = BTreeMap<WriteKey, u64>;

/// The kinds the benchmark's Apps consist of, as the server's metrics name them (group, resource).
const WORKLOAD: [(&str, &str); 4] = [
    ("", "serviceaccounts"),
    ("", "services"),
    ("apps", "deployments"),
    ("networking.k8s.io", "ingresses"),
];

/// Write requests the API server has served since it started, from its own
/// `apiserver_request_total` counter. The counter has no namespace or client label: a delta is
/// the whole server's, so attributing it to one client assumes nothing else writes meanwhile.
fn write_requests() -> Writes {
    requests()
        .into_iter()
        .filter(|((verb, ..), _)| WRITE_VERBS.contains(&verb.as_str()))
        .collect()
}

/// Every request the API server has served since it started, by verb, group, resource,
/// subresource and dry run (`apiserver_request_total` summed over its other labels: code,
/// scope, component). The same caveat as `write_requests`: the whole server's.
fn requests() -> Writes {
    let out = kubectl()
        .args(["get", "--raw", "/metrics"])
        .output()
        .expect("kubectl get --raw /metrics");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("metrics are UTF-8");
    let mut all = Writes::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let (set, value) = rest.rsplit_once("} ").expect("a sample line");
        let l = labels(set);
        let label = |name: &str| l.get(name).cloned().unwrap_or_default();
        let key = (
            label("verb"),
            label("group"),
            label("resource"),
            label("subresource"),
            label("dry_run"),
        );
        // Counters are integers, but the text format may write them as floats (1.2e+06).
        let n = value.trim().parse::<f64>().expect("a number").round() as u64;
        *all.entry(key).or_insert(0) += n;
    }
    all
}

/// The control plane's server processes: from `RECKON_TEST_CONTROL_PLANE_PGIDS`, which
/// `reckon-testenv run` sets (every component, kube-scheduler and KWOK included), else found by
/// command line. Empty when the cluster is not local.
fn control_plane_pids() -> Vec<(&'static str, u32)> {
    if let Ok(groups) = std::env::var("RECKON_TEST_CONTROL_PLANE_PGIDS") {
        let found = members(&parse_groups(&groups), &process_groups());
        if !found.is_empty() {
            return found;
        }
    }
    control_plane_pids_by_cmdline()
}

/// `NAME=PGID,...` as `reckon-testenv run` writes it; names it does not know are dropped.
fn parse_groups(value: &str) -> Vec<(&'static str, u32)> {
    const NAMES: [&str; 5] = [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    ];
    value
        .split(',')
        .filter_map(|pair| {
            let (name, pgid) = pair.split_once('=')?;
            let name = NAMES.into_iter().find(|n| *n == name.trim())?;
            Some((name, pgid.trim().parse().ok()?))
        })
        .collect()
}

/// Every process as (pid, process group, command name), from `/proc/PID/stat`.
fn process_groups() -> Vec<(u32, u32, String)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_string();
            // After the name: state (3rd field), ppid, pgrp (5th).
            let pgrp = rest.split_whitespace().nth(2)?.parse().ok()?;
            Some((pid, pgrp, comm))
        })
        .collect()
}

/// The server of each group: a member that is not the group's leader (the testenv's watchdog
/// shell) nor the watchdog's `sleep`.
fn members(
    groups: &[(&'static str, u32)],
    processes: &[(u32, u32, String)],
) -> Vec<(&'static str, u32)> {
    groups
        .iter()
        .flat_map(|(name, pgid)| {
            processes
                .iter()
                .filter(move |(pid, pgrp, comm)| pgrp == pgid && pid != pgid && comm != "sleep")
                .map(move |(pid, ..)| (*name, *pid))
        })
        .collect()
}

/// The control plane's processes (kube-apiserver, etcd, kube-controller-manager) of the
/// cluster the kubeconfig names, found by their command lines: other engineers' control
/// planes may run on the same machine. Empty when the cluster is not local.
fn control_plane_pids_by_cmdline() -> Vec<(&'static str, u32)> {
    let kubeconfig = std::fs::read_to_string(support::kubeconfig()).unwrap_or_default();
    let Some(port) = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .and_then(|s| s.trim().rsplit(':').next())
        .map(str::to_string)
    else {
        return Vec::new();
    };
    let cmdlines: Vec<(u32, Vec<String>)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let args = raw
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some((pid, args))
        })
        .collect();
    let arg = |args: &[String], name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("{name}=")).map(str::to_string))
    };
    let is = |args: &[String], bin: &str| args.first().is_some_and(|a| a.ends_with(bin));
    let Some((apiserver, api_args)) = cmdlines.iter().find(|(_, a)| {
        is(a, "kube-apiserver") && arg(a, "--secure-port").as_deref() == Some(port.as_str())
    }) else {
        return Vec::new();
    };
    let mut out = vec![("kube-apiserver", *apiserver)];
    let etcd_url = arg(api_args, "--etcd-servers").unwrap_or_default();
    if let Some((pid, _)) = cmdlines.iter().find(|(_, a)| {
        is(a, "etcd")
            && a.windows(2)
                .any(|w| w[0] == "--listen-client-urls" && w[1] == etcd_url)
    }) {
        out.push(("etcd", *pid));
    }
    let sa_key = arg(api_args, "--service-account-signing-key-file");
    if let Some((pid, _)) = cmdlines.iter().find(|(_, a)| {
        is(a, "kube-controller-manager")
            && sa_key.is_some()
            && arg(a, "--service-account-private-key-file") == sa_key
    }) {
        out.push(("controller manager", *pid));
    }
    out
}

/// Fields `first` and `first + 1` of a `/proc/.../stat` file (1-based, as proc(5) numbers them),
/// summed and in seconds; 0 when the file is gone (the process exited).
fn stat_seconds(path: &str, first: usize) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // `fields` starts at the 3rd field. 100 Hz: the kernel's USER_HZ on Linux.
    let ticks = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(first) + ticks(first + 1)) / 100.0
}

/// CPU seconds (user + system) a process has used: utime and stime, the 14th and 15th fields.
fn cpu_seconds(pid: u32) -> f64 {
    stat_seconds(&format!("/proc/{pid}/stat"), 14)
}

/// CPU seconds (user + system) of this process's waited-for children (kubectl): cutime and
/// cstime, the 16th and 17th fields.
fn children_cpu_seconds() -> f64 {
    stat_seconds("/proc/self/stat", 16)
}

/// Busy CPU seconds of the whole machine (all cores), from `/proc/stat`.
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let busy: f64 = cpu
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .take(8)
        .sum();
    busy / 100.0
}

/// CPU seconds of some processes (the control plane's, the agent) and of the whole machine.
#[derive(Clone)]
struct CpuReading {
    per_process: Vec<(String, f64)>,
    machine: f64,
}

fn cpu_reading(processes: &[(&'static str, u32)]) -> CpuReading {
    CpuReading {
        per_process: processes
            .iter()
            .map(|(name, pid)| (name.to_string(), cpu_seconds(*pid)))
            .collect(),
        machine: machine_busy_seconds(),
    }
}

/// `name X.X CPU-s (Y ms/object), ...` between two readings, for the progress lines: where a
/// phase's CPU went, per object applied.
fn describe_cpu(before: &CpuReading, after: &CpuReading, objects: usize) -> String {
    let mut parts: Vec<String> = after
        .per_process
        .iter()
        .zip(&before.per_process)
        .map(|((name, a), (_, b))| {
            let d = a - b;
            format!(
                "{name} {d:.1} CPU-s ({:.2} ms/object)",
                d * 1000.0 / objects as f64
            )
        })
        .collect();
    parts.push(format!(
        "machine busy {:.1} CPU-s",
        after.machine - before.machine
    ));
    parts.join(", ")
}

/// Requests per object by `VERB group/resource/subresource`, the most first.
fn describe_per_object(requests: &Writes, objects: usize) -> String {
    let mut rows: Vec<(u64, String)> = requests
        .iter()
        .map(|((verb, group, resource, sub, dry_run), n)| {
            let dry = if dry_run.is_empty() { "" } else { " (dry run)" };
            (*n, format!("{verb} {group}/{resource}/{sub}{dry}"))
        })
        .collect();
    rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let total: u64 = rows.iter().map(|r| r.0).sum();
    let mut out = format!(
        "{total} requests, {:.2}/object:",
        total as f64 / objects as f64
    );
    for (n, what) in rows {
        out.push_str(&format!(
            "\n    {what} ×{n} ({:.3}/object)",
            n as f64 / objects as f64
        ));
    }
    out
}

/// The writes that can change the Apps' objects: any write verb on the four kinds themselves
/// (create, replace, patch, apply, delete, scale). Not their `status`, and not other resources:
/// the controller manager (20 writes/s by default) is still creating ReplicaSets and
/// EndpointSlices and writing Deployment status for the 2×N Deployments and Services minutes
/// after the applies, so at N=1000 the server as a whole never goes quiet. Those writes are
/// reported but cannot be reckon's: reckon only applies, patches and deletes the objects it
/// manages, and drops `status` before applying.
fn on_workload(writes: &Writes) -> Writes {
    writes
        .iter()
        .filter(|((_, group, resource, sub, _), _)| {
            WORKLOAD.contains(&(group.as_str(), resource.as_str())) && sub != "status"
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn total(writes: &Writes) -> u64 {
    writes.values().sum()
}

/// `VERB group/resource/subresource ×n, ...` for messages.
fn describe(writes: &Writes) -> String {
    let parts: Vec<String> = writes
        .iter()
        .map(|((verb, group, resource, sub, dry_run), n)| {
            let dry = if dry_run.is_empty() { "" } else { " (dry run)" };
            format!("{verb} {group}/{resource}/{sub}{dry} ×{n}")
        })
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// What changed between two `write_requests` readings.
fn delta(before: &Writes, after: &Writes) -> Writes {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, d)| *d != 0)
        .collect()
}

/// Waits until nothing has written to the Apps' kinds for two seconds (the controller manager's
/// writes elsewhere go on; see `on_workload`), so that the next delta is the measured client's.
fn wait_quiet() {
    let start = Instant::now();
    let mut last = total(&on_workload(&write_requests()));
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now = total(&on_workload(&write_requests()));
        if now == last {
            return;
        }
        if start.elapsed() > Duration::from_secs(60) {
            progress("the Apps' kinds were written to all the time for 60 s; measuring anyway");
            return;
        }
        last = now;
    }
}

/// A field of `/proc/PID/status`: `kB` ones (`VmHWM`, `VmRSS`) in bytes, others (`Threads`) as is.
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    let mut words = line.split_whitespace();
    let n: u64 = words.next().and_then(|v| v.parse().ok()).expect("a number");
    match words.next() {
        Some("kB") => n * 1024,
        _ => n,
    }
}

/// Resident set now and threads, for the progress lines (where the memory goes).
fn memory(pid: u32) -> String {
    format!(
        "RSS {:.0} MiB, {} threads",
        proc_status(pid, "VmRSS") as f64 / 1048576.0,
        proc_status(pid, "Threads")
    )
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn tail(path: &Path, lines: usize) -> String {
    tail_str(&std::fs::read_to_string(path).unwrap_or_default(), lines)
}

/// A `synced` line of the agent's log: which App, how it ended, when the test read it.
struct Synced {
    app: String,
    /// `None` for the reconciler's `applied` line (every change sent, health not yet waited
    /// for), the sync outcome for its `synced` line.
    outcome: Option<String>,
    at: Instant,
}

/// Copies the agent's stderr to `log` and reports each `applied` and `synced` line (logged by
/// the reconciler once per sync, `src/reconcile/mod.rs`) as it arrives.
fn follow_log(
    stderr: std::process::ChildStderr,
    log: PathBuf,
    tx: mpsc::UnboundedSender<Synced>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        // Unbuffered: a failing test prints the log's tail while the agent still runs.
        let mut file = std::fs::File::create(&log).expect("agent log");
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let at = Instant::now();
            let _ = writeln!(file, "{line}");
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let fields = &v["fields"];
            let outcome = match fields["message"].as_str() {
                Some("synced") => Some(fields["outcome"].as_str().unwrap_or_default().to_string()),
                Some("applied") => None,
                _ => continue,
            };
            let _ = tx.send(Synced {
                app: fields["app"].as_str().unwrap_or_default().to_string(),
                outcome,
                at,
            });
        }
    })
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn met(ok: bool) -> &'static str {
    if ok { "yes" } else { "NO" }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: minutes of work; run explicitly (scripts/bench-agent.sh)"]
async fn agent_against_kubectl_server_side_apply() {
    let apps: usize = std::env::var("RECKON_BENCH_APPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    assert!(apps > 0, "RECKON_BENCH_APPS must be at least 1");
    let objects = apps * 4;
    let client = support::client().await;
    // A replica per Deployment where Pods run (time to production then includes Pods Ready,
    // for kubectl too), none on the floor, whose Pods are never scheduled.
    let replicas: u32 = if support::simulated_nodes(&client).await > 0 {
        1
    } else {
        0
    };
    let ns_reckon = TestNamespace::create(&client, "bench-agent").await;
    let ns_kubectl = TestNamespace::create(&client, "bench-kubectl").await;
    // The peer's namespace exists only when the peer runs.
    let peer_bin = std::env::var_os(peer::PEER_ENV).map(PathBuf::from);
    let ns_peer = match &peer_bin {
        Some(_) => Some(TestNamespace::create(&client, "bench-peer").await),
        None => None,
    };
    // Every App's poll interval, reckon's and the peer's: one interval of steady state is
    // measured for both. Short enough for the drifts the peer corrects only on its interval,
    // long enough that a steady-state pass of the peer fits in it.
    let interval = Duration::from_secs(
        std::env::var("RECKON_BENCH_INTERVAL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if apps <= 100 { 20 } else { 120 }),
    );

    // One repository, one directory per App; kubectl applies the work tree's copy of the same
    // files.
    let started = Instant::now();
    let fixture = apps_repository(apps, replicas);
    let work_apps = fixture.work_path().join("apps");

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = support::kubeconfig();
    let mut config = String::from("apps:\n");
    for i in 0..apps {
        let name = app_name(i);
        config.push_str(&format!(
            "  - name: {name}\n    source:\n      url: {url}\n      path: apps/{name}\n      interval: {interval}s\n    target:\n      kubeconfig: {kc}\n      namespace: {ns}\n",
            url = fixture.file_url(),
            kc = kubeconfig.display(),
            ns = ns_reckon.name,
            interval = interval.as_secs(),
        ));
    }
    std::fs::write(dir.path().join("reckon.yaml"), config).unwrap();
    progress(format!(
        "{apps} Apps ({objects} objects) in one repository, prepared in {}",
        secs(started.elapsed())
    ));

    // 1. Time to production. kubectl first, so that the agent can go on into the drift rounds.
    // This favours kubectl a little: the controller manager (rate-limited) is still creating
    // ReplicaSets and EndpointSlices for kubectl's objects while the agent runs.
    // Where each first apply's time goes: the API server's requests by verb and resource, and
    // the CPU of the control plane's processes, of the client and of the machine (other
    // builds included), per object. Whole-server and whole-process figures: the controller
    // manager's own requests are in both phases.
    let mut processes = control_plane_pids();
    let (requests_before, cpu_before, children_before) =
        (requests(), cpu_reading(&processes), children_cpu_seconds());
    let kubectl_create = kubectl_apply(&work_apps, &ns_kubectl.name);
    progress(format!("kubectl create: {}", secs(kubectl_create)));
    let kubectl_available = if replicas > 0 {
        let waited = kubectl_wait_available(&ns_kubectl.name);
        progress(format!(
            "kubectl wait --for=condition=Available: {}",
            secs(waited)
        ));
        Some(kubectl_create + waited)
    } else {
        None
    };
    let kubectl_cpu = children_cpu_seconds() - children_before;
    progress(format!(
        "kubectl create, CPU: kubectl {:.1} CPU-s ({:.2} ms/object), {}",
        kubectl_cpu,
        kubectl_cpu * 1000.0 / objects as f64,
        describe_cpu(&cpu_before, &cpu_reading(&processes), objects)
    ));
    progress(format!(
        "kubectl create, API server requests: {}",
        describe_per_object(&delta(&requests_before, &requests()), objects)
    ));

    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("agent_bench-reckon-run.log");
    let (tx, mut synced_rx) = mpsc::unbounded_channel();
    let (requests_before, cpu_before) = (requests(), cpu_reading(&processes));
    let spawned = Instant::now();
    let mut agent = reckon(dir.path())
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    processes.push(("agent", agent.id()));
    let cpu_before = CpuReading {
        per_process: cpu_before
            .per_process
            .into_iter()
            .chain([("agent".to_string(), 0.0)])
            .collect(),
        ..cpu_before
    };
    let follower = follow_log(agent.stderr.take().unwrap(), log.clone(), tx);
    // Wall clock, to line the store's event times up with the spawn (RECKON_BENCH_KEEP).
    progress(format!(
        "reckon run spawned at {}",
        chrono::Utc::now().format("%H:%M:%S%.3f")
    ));
    let mut first_sync: BTreeMap<String, (Duration, String)> = BTreeMap::new();
    let mut first_applied: BTreeMap<String, Duration> = BTreeMap::new();
    let mut memory_at_first = None;
    let deadline = Duration::from_secs(300 + apps as u64);
    while first_sync.len() < apps {
        if let Some(status) = agent.try_wait().unwrap() {
            panic!(
                "the agent exited ({status}) after {} of {apps} Apps synced; log {}:\n{}",
                first_sync.len(),
                log.display(),
                tail(&log, 30)
            );
        }
        assert!(
            spawned.elapsed() < deadline,
            "{} of {apps} Apps synced after {deadline:?}; log {}:\n{}",
            first_sync.len(),
            log.display(),
            tail(&log, 30)
        );
        if let Ok(Some(s)) = tokio::time::timeout(Duration::from_secs(1), synced_rx.recv()).await {
            match s.outcome {
                Some(outcome) => {
                    first_sync.entry(s.app).or_insert((s.at - spawned, outcome));
                }
                None => {
                    first_applied.entry(s.app).or_insert(s.at - spawned);
                }
            }
            memory_at_first.get_or_insert_with(|| memory(agent.id()));
        }
    }
    let cpu_synced = cpu_reading(&processes);
    progress(format!(
        "reckon run until every App synced, CPU: {}",
        describe_cpu(&cpu_before, &cpu_synced, objects)
    ));
    // The floor: the control plane's CPU in the same window, spread over every core, is the
    // least wall time any client could have taken to have it do that work.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let reckon_cp_cpu = peer::cp_delta(&cpu_before, &cpu_synced);
    let reckon_agent_cpu = cpu_synced
        .per_process
        .iter()
        .find(|(name, _)| name == "agent")
        .map_or(0.0, |(_, s)| *s);
    let floor = reckon_cp_cpu / cores as f64;
    // The whole machine's busy CPU in that window: when other work shares the cores, the control
    // plane cannot have them all, and the wall time sits above the floor by that much.
    let reckon_machine_busy = cpu_synced.machine - cpu_before.machine;
    progress(format!(
        "reckon run until every App synced, API server requests: {}",
        describe_per_object(&delta(&requests_before, &requests()), objects)
    ));
    let mut sync_times: Vec<Duration> = first_sync.values().map(|(d, _)| *d).collect();
    sync_times.sort();
    let reckon_healthy = *sync_times.last().unwrap();
    // Every App logs `applied` before `synced` in its first pass (it creates all 4 objects).
    assert_eq!(first_applied.len(), apps, "Apps that logged `applied`");
    let mut applied_times: Vec<Duration> = first_applied.values().copied().collect();
    applied_times.sort();
    let reckon_create = *applied_times.last().unwrap();
    progress(format!(
        "reckon run: all {apps} Apps applied {} and synced (healthy) {} after spawn (first {}, half {}); {} at the first, {} now",
        secs(reckon_create),
        secs(reckon_healthy),
        secs(sync_times[0]),
        secs(percentile(&sync_times, 0.5)),
        memory_at_first.unwrap_or_default(),
        memory(agent.id())
    ));
    let failed: Vec<_> = first_sync
        .iter()
        .filter(|(_, (_, outcome))| outcome != "Succeeded")
        .collect();
    assert!(
        failed.is_empty(),
        "first syncs that did not succeed: {failed:?}"
    );

    // Correctness: every object exists, labelled with its App (named like the objects).
    assert_labelled(&client, &ns_reckon.name, apps).await;

    // Steady state: one interval of the running agent's requests (on the Apps' kinds and what
    // a health check reads; see `peer::agent_requests`), the same measure as the peer's.
    wait_quiet();
    let before = requests();
    tokio::time::sleep(interval).await;
    let reckon_window = peer::agent_requests(&delta(&before, &requests()));
    progress(format!(
        "reckon run steady state, one interval ({}s): {}",
        interval.as_secs(),
        describe_per_object(&reckon_window, objects)
    ));

    // 3. Drift correction, with the agent still running.
    let (drift_p50, drift_p99) = drift_rounds(&client, &ns_reckon.name, apps, replicas).await;
    progress(format!(
        "drift corrected: p50 {}, p99 {} over {DRIFT_ROUNDS} rounds",
        secs(drift_p50),
        secs(drift_p99)
    ));

    // 2. Peak RSS over the whole run, read just before the stop.
    let rss = proc_status(agent.id(), "VmHWM");

    // 4. SIGTERM: in-flight passes finish, the store closes, exit 0.
    support::signal(&agent, "-TERM");
    let status = support::wait_exit(&mut agent, Duration::from_secs(120));
    follower.join().unwrap();
    assert!(
        status.success(),
        "the agent exits 0 on SIGTERM: {status}; log {}:\n{}",
        log.display(),
        tail(&log, 30)
    );

    // Steady state: the same N unchanged Apps, once by `reckon sync`, once by kubectl. The
    // write counts come from the API server's metrics, which cover every client: this assumes
    // no other client writes to the Apps' kinds during each measurement (the benchmark is
    // ignored, so it runs alone; `on_workload` says why the controller manager's writes to
    // other resources are left out).
    wait_quiet();
    let before = write_requests();
    let started = Instant::now();
    let out = reckon(dir.path())
        .args(["sync", "--all", "--no-fetch"])
        .output()
        .unwrap();
    let reckon_resync = started.elapsed();
    let reckon_all = delta(&before, &write_requests());
    // Its log, for a look at where the time went (RECKON_BENCH_RUST_LOG=...,reckon::cli=debug
    // logs its phases).
    let sync_log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("agent_bench-reckon-sync.log");
    let _ = std::fs::write(&sync_log, &out.stderr);
    let reckon_writes = on_workload(&reckon_all);
    assert!(
        out.status.success(),
        "reckon sync --all --no-fetch: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        tail_str(&String::from_utf8_lossy(&out.stderr), 30)
    );
    progress(format!(
        "reckon sync --all --no-fetch: {}; writes to the Apps' kinds: {}; all writes: {}",
        secs(reckon_resync),
        describe(&reckon_writes),
        describe(&reckon_all)
    ));

    wait_quiet();
    let before = write_requests();
    let kubectl_resync = kubectl_apply(&work_apps, &ns_kubectl.name);
    let kubectl_all = delta(&before, &write_requests());
    let kubectl_writes = on_workload(&kubectl_all);
    progress(format!(
        "kubectl unchanged apply: {}; writes to the Apps' kinds: {}; all writes: {}",
        secs(kubectl_resync),
        describe(&kubectl_writes),
        describe(&kubectl_all)
    ));

    // The peer last, on the same Apps and repository, into its own namespace.
    let peer_run = match (&peer_bin, &ns_peer) {
        (Some(bin), Some(ns)) => Some(
            peer::run(
                bin,
                &client,
                &fixture.file_url(),
                &ns.name,
                apps,
                replicas,
                interval,
                &control_plane_pids(),
            )
            .await,
        ),
        _ => {
            progress(format!(
                "no peer column: {} names the harness scripts/build-peer.sh builds (scripts/bench-agent.sh sets it)",
                peer::PEER_ENV
            ));
            None
        }
    };

    let table = table(&Figures {
        apps,
        replicas,
        interval,
        cores,
        reckon_create,
        reckon_healthy,
        sync_first: sync_times[0],
        sync_half: percentile(&sync_times, 0.5),
        reckon_rss: rss,
        reckon_cpu: reckon_agent_cpu,
        reckon_cp_cpu,
        reckon_machine_busy,
        floor,
        drift_p50,
        drift_p99,
        reckon_window: total(&reckon_window),
        reckon_resync,
        reckon_writes: total(&reckon_writes),
        reckon_all: total(&reckon_all),
        kubectl_create,
        kubectl_available,
        kubectl_cpu,
        kubectl_resync,
        kubectl_writes: total(&kubectl_writes),
        kubectl_all: total(&kubectl_all),
        peer: peer_run,
    });
    println!("{table}");
    progress(format!("the agent's log: {}", log.display()));
    if std::env::var_os("RECKON_BENCH_KEEP").is_some() {
        // The store's event times show where the time went: `reckon store export` in there.
        progress(format!(
            "kept reckon.yaml, store and cache in {}",
            dir.keep().display()
        ));
    }

    assert!(
        reckon_writes.is_empty(),
        "an unchanged resync makes no write request; the API server counted {}",
        describe(&reckon_writes)
    );
}

/// One repository of `apps` Apps, each its directory `apps/appNNNN/` of the 4 objects, written
/// and committed in one `git add -A` (a `git add` per file costs minutes at N=1000), pushed.
fn apps_repository(apps: usize, replicas: u32) -> Fixture {
    let fixture = Fixture::new().unwrap();
    let work_apps = fixture.work_path().join("apps");
    for i in 0..apps {
        let name = app_name(i);
        let dir = work_apps.join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, doc) in app_objects(&name, replicas) {
            std::fs::write(dir.join(file), doc).unwrap();
        }
    }
    fixture.git(["add", "-A"]).unwrap();
    fixture
        .git([
            "-c",
            "user.name=Bench",
            "-c",
            "user.email=bench@example.com",
            "commit",
            "--quiet",
            "-m",
            "apps",
        ])
        .unwrap();
    fixture.push().unwrap();
    fixture
}

/// Every object of the four kinds in `namespace` carries its App's label (the Apps are named
/// like their objects), `apps` of each.
async fn assert_labelled(client: &kube::Client, namespace: &str, apps: usize) {
    for (api_version, kind, plural) in [
        ("v1", "ServiceAccount", "serviceaccounts"),
        ("v1", "Service", "services"),
        ("apps/v1", "Deployment", "deployments"),
        ("networking.k8s.io/v1", "Ingress", "ingresses"),
    ] {
        let api = api_for(client, api_version, kind, plural, Some(namespace));
        let list = api
            .list(&ListParams::default().labels("reckon.dev/app"))
            .await
            .unwrap();
        assert_eq!(list.items.len(), apps, "{kind}s labelled reckon.dev/app");
        for o in &list.items {
            let name = o.metadata.name.as_deref().unwrap_or_default();
            let app = o
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("reckon.dev/app"));
            assert_eq!(app.map(String::as_str), Some(name), "{kind} {name}'s App");
        }
    }
}

/// `DRIFT_ROUNDS` drifts, each a different App's Deployment in `namespace` scaled to 3 as
/// another field manager, each timed from the patch's return until `spec.replicas` reads the
/// App's `replicas` again (GET every 10 ms): p50 and p99.
async fn drift_rounds(
    client: &kube::Client,
    namespace: &str,
    apps: usize,
    replicas: u32,
) -> (Duration, Duration) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let bench = PatchParams {
        field_manager: Some("bench".into()),
        ..PatchParams::default()
    };
    let mut drift = Vec::with_capacity(DRIFT_ROUNDS);
    for round in 0..DRIFT_ROUNDS {
        let name = app_name(round * apps / DRIFT_ROUNDS);
        deployments
            .patch_scale(
                &name,
                &bench,
                &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
            )
            .await
            .unwrap();
        let started = Instant::now();
        loop {
            let d = deployments.get(&name).await.unwrap();
            if d.spec.and_then(|s| s.replicas) == Some(replicas as i32) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{name}'s replicas were not corrected within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drift.push(started.elapsed());
    }
    drift.sort();
    (percentile(&drift, 0.5), percentile(&drift, 0.99))
}

fn tail_str(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Everything the table shows, measured in one run.
struct Figures {
    apps: usize,
    replicas: u32,
    interval: Duration,
    cores: usize,
    reckon_create: Duration,
    reckon_healthy: Duration,
    sync_first: Duration,
    sync_half: Duration,
    reckon_rss: u64,
    /// The agent's CPU seconds from spawn until every App synced.
    reckon_cpu: f64,
    /// The control plane's CPU seconds in that window.
    reckon_cp_cpu: f64,
    /// The whole machine's busy CPU seconds in that window (every process, other work too).
    reckon_machine_busy: f64,
    /// `reckon_cp_cpu` over the machine's cores: the least wall time for that work.
    floor: f64,
    drift_p50: Duration,
    drift_p99: Duration,
    reckon_window: u64,
    reckon_resync: Duration,
    reckon_writes: u64,
    reckon_all: u64,
    kubectl_create: Duration,
    kubectl_available: Option<Duration>,
    kubectl_cpu: f64,
    kubectl_resync: Duration,
    kubectl_writes: u64,
    kubectl_all: u64,
    peer: Option<peer::PeerRun>,
}

/// The benchmark's table: reckon, the peer (Flux's apply engine) and kubectl side by side, the
/// ratios to each, issue 22's targets and whether each is met.
fn table(f: &Figures) -> String {
    let dash = || "—".to_string();
    let objects = f.apps * 4;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let ratio = |a: f64, b: f64| a / b;
    let x = |r: f64| format!("{r:.2}×");
    let ms_per_object = |cpu: f64| cpu * 1000.0 / objects as f64;
    let p = f.peer.as_ref();
    let peer_drift = |q: f64| p.map(|p| percentile(&p.drift, q));
    // reckon's figure, the peer's, and the ratio when the peer ran.
    let vs_peer = |reckon: f64, peer: Option<f64>, fmt: &dyn Fn(f64) -> String| {
        (
            fmt(reckon),
            peer.map(fmt).unwrap_or_else(dash),
            peer.map(|v| x(ratio(reckon, v))).unwrap_or_else(dash),
        )
    };
    let s = |v: f64| format!("{v:.2} s");
    let mut rows: Vec<[String; 8]> = Vec::new();
    let mut row = |metric: String,
                   (r, pv, pr): (String, String, String),
                   kubectl: String,
                   kr: String,
                   target: &str,
                   met_: Option<bool>| {
        rows.push([
            metric,
            r,
            pv,
            pr,
            kubectl,
            kr,
            target.to_string(),
            met_.map(|m| met(m).to_string()).unwrap_or_else(dash),
        ]);
    };
    let peer_ratio_met =
        |reckon: f64, peer: Option<f64>, at_most: f64| peer.map(|v| ratio(reckon, v) <= at_most);

    let create = f.reckon_create.as_secs_f64();
    let peer_applied = p.map(|p| p.applied.as_secs_f64());
    row(
        format!(
            "time to production (all applied), {} Apps / {objects} objects",
            f.apps
        ),
        vs_peer(create, peer_applied, &s),
        secs(f.kubectl_create),
        x(ratio(create, f.kubectl_create.as_secs_f64())),
        "≤ 0.25× peer",
        peer_ratio_met(create, peer_applied, 0.25),
    );
    let healthy = f.reckon_healthy.as_secs_f64();
    match f.kubectl_available {
        Some(available) => {
            let peer_ready = p.and_then(|p| p.ready).map(|d| d.as_secs_f64());
            row(
                format!(
                    "time to production (Pods Ready: {} Deployments Available)",
                    f.apps
                ),
                vs_peer(healthy, peer_ready, &s),
                secs(available),
                x(ratio(healthy, available.as_secs_f64())),
                "≤ 0.25× peer",
                peer_ratio_met(healthy, peer_ready, 0.25),
            );
        }
        None => row(
            "  every App synced, its health waited for (no Pods: replicas 0)".into(),
            (s(healthy), dash(), dash()),
            dash(),
            dash(),
            "—",
            None,
        ),
    }
    row(
        "  first / half of the Apps synced".into(),
        (
            format!("{} / {}", secs(f.sync_first), secs(f.sync_half)),
            dash(),
            dash(),
        ),
        dash(),
        dash(),
        "—",
        None,
    );
    let peer_rss = p.map(|p| mib(p.rss));
    let rss = mib(f.reckon_rss);
    row(
        "peak RSS of the agent (VmHWM)".into(),
        vs_peer(rss, peer_rss, &|v| format!("{v:.1} MiB")),
        dash(),
        dash(),
        "≤ 0.25× peer, ≤ 64 MiB",
        Some(rss <= 64.0 && peer_ratio_met(rss, peer_rss, 0.25).unwrap_or(true)),
    );
    let cpu = ms_per_object(f.reckon_cpu);
    row(
        "agent CPU per applied object until production (/proc utime+stime)".into(),
        vs_peer(cpu, p.map(|p| ms_per_object(p.cpu)), &|v| {
            format!("{v:.2} ms")
        }),
        format!("{:.2} ms", ms_per_object(f.kubectl_cpu)),
        x(ratio(cpu, ms_per_object(f.kubectl_cpu))),
        "≤ 1.0 ms",
        Some(cpu <= 1.0),
    );
    for (name, reckon, q) in [("p50", f.drift_p50, 0.5), ("p99", f.drift_p99, 0.99)] {
        row(
            format!(
                "drift correction {name} (reckon: {DRIFT_ROUNDS} rounds; peer: {} Apps at once)",
                p.map_or(0, |p| p.drift.len())
            ),
            vs_peer(
                reckon.as_secs_f64(),
                peer_drift(q).map(|d| d.as_secs_f64()),
                &s,
            ),
            dash(),
            dash(),
            if q < 0.9 { "≤ 1 s" } else { "≤ 3 s" },
            Some(reckon <= Duration::from_secs(if q < 0.9 { 1 } else { 3 })),
        );
    }
    let window = f.reckon_window as f64;
    let peer_window = p.map(|p| p.window.values().sum::<u64>() as f64);
    row(
        format!(
            "steady state: requests in one interval ({} s) on the Apps' kinds, Pods and ReplicaSets",
            f.interval.as_secs()
        ),
        vs_peer(window, peer_window, &|v| format!("{v:.0}")),
        dash(),
        dash(),
        "≤ 0.1× peer",
        peer_ratio_met(window, peer_window, 0.1),
    );
    row(
        "  reconciles in that interval".into(),
        (
            dash(),
            p.map(|p| p.reconciles_in_window.to_string())
                .unwrap_or_else(dash),
            dash(),
        ),
        dash(),
        dash(),
        "—",
        None,
    );
    row(
        "steady state: unchanged resync (reckon sync --all --no-fetch)".into(),
        (secs(f.reckon_resync), dash(), dash()),
        secs(f.kubectl_resync),
        x(ratio(
            f.reckon_resync.as_secs_f64(),
            f.kubectl_resync.as_secs_f64(),
        )),
        "≤ 0.1× kubectl",
        Some(f.reckon_resync.as_secs_f64() <= 0.1 * f.kubectl_resync.as_secs_f64()),
    );
    row(
        "  its writes to the Apps' kinds (API server metrics)".into(),
        (f.reckon_writes.to_string(), dash(), dash()),
        f.kubectl_writes.to_string(),
        dash(),
        "0",
        Some(f.reckon_writes == 0),
    );
    row(
        "  all writes in that window (controller manager too)".into(),
        (f.reckon_all.to_string(), dash(), dash()),
        f.kubectl_all.to_string(),
        dash(),
        "—",
        None,
    );
    let peer_production = p.map(|p| p.ready.unwrap_or(p.applied).max(p.applied).as_secs_f64());
    let peer_floor = p.map(|p| p.control_plane_cpu / f.cores as f64);
    row(
        format!(
            "floor: control plane CPU until production (all components) / {} cores",
            f.cores
        ),
        (
            format!("{:.1} CPU-s → {:.2} s", f.reckon_cp_cpu, f.floor),
            p.map(|p| {
                format!(
                    "{:.1} CPU-s → {:.2} s",
                    p.control_plane_cpu,
                    p.control_plane_cpu / f.cores as f64
                )
            })
            .unwrap_or_else(dash),
            dash(),
        ),
        dash(),
        dash(),
        "—",
        None,
    );
    // Busy CPU over the CPU the window offered: how much of the machine the run had to share.
    let busy = |cpu: f64, wall: f64| {
        format!(
            "{cpu:.1} of {:.1} CPU-s ({:.0}%)",
            wall * f.cores as f64,
            100.0 * cpu / (wall * f.cores as f64)
        )
    };
    row(
        "  machine busy in that window (every process, other work included)".into(),
        (
            busy(f.reckon_machine_busy, healthy),
            p.zip(peer_production)
                .map(|(p, w)| busy(p.machine_busy, w))
                .unwrap_or_else(dash),
            dash(),
        ),
        dash(),
        dash(),
        "—",
        None,
    );
    // No floor when the control plane's processes were not found (a remote cluster).
    let floor_ratio = (f.floor > 0.0).then(|| healthy / f.floor);
    row(
        "  wall time until production / that floor".into(),
        (
            floor_ratio.map(x).unwrap_or_else(dash),
            peer_production
                .zip(peer_floor)
                .filter(|(_, b)| *b > 0.0)
                .map(|(w, b)| x(w / b))
                .unwrap_or_else(dash),
            dash(),
        ),
        dash(),
        dash(),
        "≤ 1.15×",
        floor_ratio.map(|r| r <= 1.15),
    );

    let mut table = format!(
        "reckon agent benchmark: {} Apps × 4 objects (Deployments of {} replica), one Git repository (file://), interval {} s; peer: Flux's apply engine (fluxcd/pkg/ssa, kustomize-controller's options, 4 Apps at a time{}); baseline: kubectl apply --server-side -R{}\n\
         | metric | reckon | peer (Flux) | reckon/peer | kubectl | reckon/kubectl | target | met? |\n|---|---|---|---|---|---|---|---|\n",
        f.apps,
        f.replicas,
        f.interval.as_secs(),
        if f.replicas > 0 {
            ", health checks"
        } else {
            ""
        },
        if f.replicas > 0 {
            " then kubectl wait --for=condition=Available"
        } else {
            ""
        },
    );
    for row in rows {
        table.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_groups_name_their_servers() {
        let groups = parse_groups("etcd=10,kube-apiserver=20, kwok = 30,unknown=40,bad");
        assert_eq!(
            groups,
            vec![("etcd", 10), ("kube-apiserver", 20), ("kwok", 30)]
        );
        let processes = vec![
            (10, 10, "bash".to_string()),
            (11, 10, "etcd".to_string()),
            (12, 10, "sleep".to_string()),
            (21, 20, "kube-apiserver".to_string()),
            (31, 99, "kwok".to_string()),
        ];
        assert_eq!(
            members(&groups, &processes),
            vec![("etcd", 11), ("kube-apiserver", 21)]
        );
    }
}
