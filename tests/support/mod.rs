//! The one set of helpers every integration-test binary shares (each `tests/<group>/main.rs`
//! includes it as `mod support`): the client for the run's control plane, per-test namespaces
//! with random names that are deleted afterwards, the `reckon` binary and its processes; the
//! submodules hold the reconciler harness, syncs with counted requests, workloads, App objects,
//! the OpenAPI document, filled stores with raw sled access, and fixtures built once per run and
//! shared by the tests of one scenario (`fixture`).
//!
//! The control plane comes from `RECKON_TEST_KUBECONFIG` (set by `reckon-testenv run`, or by you
//! for your own cluster). Without it, the first test in this process starts a local control plane
//! of its own; its watchdogs stop it when the test process exits.
#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use reckon_testenv::control_plane::ControlPlane;
use std::path::PathBuf;
use std::sync::OnceLock;

pub mod api_agent;
pub mod audited;
pub mod crd;
pub mod fixture;
pub mod fleet;
pub mod harness;
pub mod openapi;
pub mod readiness;
pub mod store;
pub mod sync;
pub mod workload;

// Never dropped (statics are not): the watchdogs stop it when this test process exits.
static LOCAL: OnceLock<ControlPlane> = OnceLock::new();

/// The kubeconfig of the cluster this test run uses.
pub fn kubeconfig() -> PathBuf {
    if let Some(k) = std::env::var_os("RECKON_TEST_KUBECONFIG") {
        return PathBuf::from(k);
    }
    LOCAL
        .get_or_init(|| {
            ControlPlane::start().unwrap_or_else(|e| {
                panic!("no RECKON_TEST_KUBECONFIG and starting a local control plane failed: {e}")
            })
        })
        .kubeconfig()
        .to_path_buf()
}

/// A kube client for the test cluster.
pub async fn client() -> kube::Client {
    let path = kubeconfig();
    reckon::cluster::client(Some(&path), None)
        .await
        .unwrap_or_else(|e| panic!("kube client for {}: {e}", path.display()))
}

/// A random lowercase suffix for resource names.
pub fn suffix() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..8)
        .map(|_| (b'a' + rng.random_range(0..26u8)) as char)
        .collect()
}

/// A namespace that exists for one test and is deleted when the guard drops (also on panic).
pub struct TestNamespace {
    pub name: String,
    kubeconfig: PathBuf,
}

impl TestNamespace {
    pub async fn create(client: &kube::Client, prefix: &str) -> Self {
        let name = format!("reckon-test-{prefix}-{}", suffix());
        let api: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"reckon.dev/test": "true"}}
        }))
        .unwrap();
        api.create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        Self {
            name,
            kubeconfig: kubeconfig(),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot be async and may run inside a runtime: delete from a thread of its own.
        let name = self.name.clone();
        let kc = self.kubeconfig.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(c) = reckon::cluster::client(Some(&kc), None).await {
                    let api: Api<Namespace> = Api::all(c);
                    let _ = api.delete(&name, &DeleteParams::background()).await;
                }
            });
        })
        .join();
    }
}

/// Waits for a child process to exit; kills it and fails the test after `timeout`.
pub fn wait_exit(
    child: &mut std::process::Child,
    timeout: std::time::Duration,
) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("the process did not exit within {timeout:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The `reckon` binary run in `dir` (where reckon.yaml, the store and the cache live), with the
/// caller's environment settings for those paths removed so they cannot leak into the test.
pub fn reckon(dir: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_reckon"));
    c.current_dir(dir)
        .env_remove("RECKON_STORE")
        .env_remove("RECKON_CONFIG")
        .env_remove("RECKON_CACHE")
        .env_remove("RECKON_KEY_FILE")
        .env_remove("RECKON_LOG_FORMAT");
    c
}

/// Sends `sig` (`-TERM`, `-KILL`, `-INT`, `-STOP`, `-CONT`) to `child` with kill(1).
pub fn signal(child: &std::process::Child, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Every event in the store of the `reckon` processes run in `dir` (its default `reckon-store`),
/// oldest first. Opens the store, so no process may hold it.
pub fn events(dir: &std::path::Path) -> Vec<reckon::event::Envelope> {
    use reckon::store::{OpenOptions, SledStore};
    let store = SledStore::open(dir.join("reckon-store"), OpenOptions::default()).unwrap();
    let events = store.reader().iter_from(1).map(|e| e.unwrap()).collect();
    store.close().unwrap();
    events
}

/// A `reckon.yaml` with one App: `name` following `path` of the repository at `url` (polled every
/// `interval` when given, else at the default) and applied to namespace `ns` of the cluster
/// `kubeconfig` reaches.
pub fn one_app_config(
    name: &str,
    url: &str,
    path: &str,
    interval: Option<&str>,
    kubeconfig: &std::path::Path,
    ns: &str,
) -> String {
    let interval = interval.map_or(String::new(), |i| format!("      interval: {i}\n"));
    format!(
        "apps:\n  - name: {name}\n    source:\n      url: {url}\n      path: {path}\n{interval}    target:\n      kubeconfig: {kc}\n      namespace: {ns}\n",
        kc = kubeconfig.display(),
    )
}

/// `kubectl` against the test cluster.
pub fn kubectl() -> std::process::Command {
    let mut c = std::process::Command::new("kubectl");
    c.arg("--kubeconfig").arg(kubeconfig());
    c
}

/// Polls `check` every 100 ms until it holds, or panics naming `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what} ({timeout:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// kustomize tests need `kustomize` or `kubectl` on PATH, as the render module's do.
pub fn kustomize_available() -> bool {
    if std::env::var_os("RECKON_SKIP_KUSTOMIZE_TESTS").is_some() {
        return false;
    }
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|dir| dir.join(name).is_file()))
    };
    assert!(
        on_path("kustomize") || on_path("kubectl"),
        "kustomize tests need kubectl or kustomize on PATH (or set RECKON_SKIP_KUSTOMIZE_TESTS=1)"
    );
    true
}

/// How many simulated (KWOK) nodes the cluster has: Pods run on the newest control plane's
/// three; the floor's has none, and its Pods stay Pending.
pub async fn simulated_nodes(client: &kube::Client) -> usize {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    nodes
        .list(&kube::api::ListParams::default().labels("type=kwok"))
        .await
        .expect("listing nodes")
        .items
        .len()
}
