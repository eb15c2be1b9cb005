//! Simulated nodes on the Go-built control plane (`RECKON_K8S_VERSION=1.37.2`): Pods are
//! scheduled and become Ready, a Job succeeds, a DaemonSet runs one Pod per Node, and the stage
//! annotations give health its negative cases — a Pod that never becomes Ready, one that
//! crash-loops, a Job that fails. The v1.20 build has no scheduler and no nodes; there this test
//! says so and checks nothing else.

use reckon_testenv::control_plane::{
    Binaries, ControlPlane, FLOOR_VERSION, NODES, cache_dir, requested_version,
};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// kubectl of the control plane's own release when it was built beside it, else PATH's.
fn kubectl_path() -> PathBuf {
    let own = cache_dir()
        .join(format!("k8s-{}/bin", requested_version()))
        .join("kubectl");
    if own.is_file() {
        own
    } else {
        PathBuf::from("kubectl")
    }
}

fn kubectl(cp: &ControlPlane, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(kubectl_path())
        .arg(format!("--kubeconfig={}", cp.kubeconfig().display()))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("kubectl: {e}"))?;
    let mut input = child.stdin.take().expect("piped");
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).map_err(|e| e.to_string())?;
    }
    drop(input);
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Polls `get` until `want` holds for its output, or panics with the last output after `secs`.
fn eventually(what: &str, secs: u64, mut get: impl FnMut() -> String, want: impl Fn(&str) -> bool) {
    let start = Instant::now();
    loop {
        let got = get();
        if want(&got) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s; last seen: {got}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

const NS: &str = "nodes-live";

/// `kubectl get WHAT -o jsonpath=PATH` in the test namespace; the error text when it fails.
fn get(cp: &ControlPlane, what: &str, path: &str) -> String {
    let ns = format!("--namespace={NS}");
    let path = format!("jsonpath={path}");
    kubectl(cp, &["get", &ns, what, "-o", &path], None).unwrap_or_else(|e| e)
}

fn workloads() -> String {
    let deploy = |name: &str, replicas: u32, annotation: &str| {
        format!(
            "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {NS}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{{annotation}}}
    spec:
      containers: [{{name: main, image: example.invalid/app:1}}]
"
        )
    };
    let job = |name: &str, annotation: &str| {
        format!(
            "apiVersion: batch/v1
kind: Job
metadata: {{name: {name}, namespace: {NS}}}
spec:
  backoffLimit: 0
  template:
    metadata:
      annotations: {{{annotation}}}
    spec:
      restartPolicy: Never
      containers: [{{name: main, image: example.invalid/job:1}}]
"
        )
    };
    [
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n"),
        deploy("ready", 3, ""),
        deploy("never", 1, "reckon.test/never-ready: \"true\""),
        deploy("crash", 1, "reckon.test/crash-loop: \"true\""),
        job("done", ""),
        job("broken", "reckon.test/fail: \"true\""),
        format!(
            "apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: every, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: every}}}}
  template:
    metadata: {{labels: {{app: every}}}}
    spec:
      containers: [{{name: main, image: example.invalid/agent:1}}]
"
        ),
    ]
    .join("---\n")
}

#[test]
fn pods_run_on_simulated_nodes_and_fail_on_request() {
    let bins = Binaries::locate().expect("locating the control plane binaries");
    if bins.kube_scheduler.is_none() || bins.kwok.is_none() {
        // Only the floor's build lacks them; any other version asked for must have them.
        assert_eq!(
            requested_version(),
            FLOOR_VERSION,
            "RECKON_K8S_VERSION={} was built without kube-scheduler and kwok",
            requested_version()
        );
        eprintln!("v{FLOOR_VERSION}: no scheduler and no nodes in this build; nothing to check");
        return;
    }
    let cp = ControlPlane::start().expect("starting the control plane");
    assert!(cp.has_nodes());
    let nodes = kubectl(&cp, &["get", "nodes", "-o", "name"], None).unwrap();
    assert_eq!(nodes.lines().count(), NODES, "{nodes}");

    kubectl(&cp, &["apply", "-f", "-"], Some(&workloads())).unwrap();
    let ns = format!("--namespace={NS}");
    let wait = |what: &str, condition: &str| {
        kubectl(
            &cp,
            &[
                "wait",
                &ns,
                "--timeout=90s",
                &format!("--for=condition={condition}"),
                what,
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    };
    wait("deployment/ready", "Available");
    wait("job/done", "Complete");
    wait("job/broken", "Failed");

    // Three Pods Running and Ready; which nodes they land on is the scheduler's business.
    eventually(
        "ready Pods",
        30,
        || {
            get(
                &cp,
                "pods",
                "{range .items[?(@.metadata.labels.app==\"ready\")]}{.status.phase}/{.status.conditions[?(@.type==\"Ready\")].status} {end}",
            )
        },
        |s| {
            s.split_whitespace()
                .filter(|p| *p == "Running/True")
                .count()
                == 3
        },
    );
    eventually(
        "DaemonSet Pods Ready, one per node",
        60,
        || get(&cp, "daemonset/every", "{.status.numberReady}"),
        |s| s == NODES.to_string(),
    );
    eventually(
        "the never-ready Pod runs and is not Ready",
        30,
        || {
            get(
                &cp,
                "pods",
                "{range .items[?(@.metadata.labels.app==\"never\")]}{.status.phase}/{.status.containerStatuses[0].state.running.startedAt}/{.status.conditions[?(@.type==\"Ready\")].reason}{end}",
            )
        },
        |s| s.starts_with("Running/") && s.ends_with("/ContainersNotReady"),
    );
    eventually(
        "the crash-looping Pod",
        30,
        || {
            get(
                &cp,
                "pods",
                "{range .items[?(@.metadata.labels.app==\"crash\")]}{.status.containerStatuses[0].state.waiting.reason}/{.status.containerStatuses[0].restartCount}{end}",
            )
        },
        |s| s == "CrashLoopBackOff/3",
    );
    // Well after the healthy Deployment became Available, the other two still are not.
    for name in ["never", "crash"] {
        let available = get(
            &cp,
            &format!("deployment/{name}"),
            "{.status.conditions[?(@.type==\"Available\")].status}/{.status.readyReplicas}",
        );
        assert_eq!(available, "False/", "deployment/{name}");
    }
    let reason = get(
        &cp,
        "job/broken",
        "{.status.conditions[?(@.type==\"Failed\")].reason}",
    );
    assert_eq!(reason, "BackoffLimitExceeded");
}
