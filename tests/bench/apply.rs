//! Measures the executor against `kubectl apply --server-side` of the same files on the same
//! cluster, in the same run (these machines are noisy; only same-run comparisons mean
//! anything). Ignored by default; run it with
//! `reckon-testenv run -- cargo nextest run --test bench --run-ignored only -E 'test(/^apply::/)' --no-capture`
//! and `RECKON_BENCH_APPS=N` (default 250 apps of 4 objects: ServiceAccount, Service,
//! Deployment, Ingress — the TESTENV.md baseline's shape). Deployments have replicas 0 here: this
//! measures the apply requests alone, not rollouts (`agent::` measures time to Pods Ready).

use crate::support;

use reckon::apply::{self, ApplyOptions};
use std::time::{Duration, Instant};
use support::TestNamespace;
use support::sync::{TestApp, catalog};
use support::workload::manifests;

fn kubectl_apply(dir: &std::path::Path, namespace: &str) -> Duration {
    let started = Instant::now();
    let status = support::kubectl()
        .args(["apply", "--server-side", "-n", namespace, "-f"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("kubectl");
    assert!(status.success());
    started.elapsed()
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

#[tokio::test]
#[ignore = "benchmark: minutes of work; run explicitly"]
async fn executor_against_kubectl_server_side_apply() {
    let apps: usize = std::env::var("RECKON_BENCH_APPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250);
    let objects = apps * 4;
    let client = support::client().await;
    let catalog = catalog(client.clone()).await;
    let text = manifests(apps, 0);

    // kubectl: first pass creates, second pass is unchanged.
    let ns = TestNamespace::create(&client, "bench-kubectl").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("apps.yaml"), &text).unwrap();
    let first = kubectl_apply(dir.path(), &ns.name);
    let second = kubectl_apply(dir.path(), &ns.name);
    eprintln!(
        "kubectl apply --server-side, {objects} objects: create {}, unchanged {}",
        secs(first),
        secs(second)
    );

    for concurrency in [1, 8, 16] {
        let ns = TestNamespace::create(&client, &format!("bench-c{concurrency}")).await;
        let mut app = TestApp::new("bench", &ns.name);
        app.write("apps.yaml", &text);
        let options = ApplyOptions {
            concurrency,
            ..ApplyOptions::default()
        };
        let started = Instant::now();
        let desired = app.desired();
        let rendered = started.elapsed();
        let observed = app.observed(&catalog, &desired).await;
        let plan = app.plan_with(&catalog, &desired, &observed);
        let planned = started.elapsed();
        let changes = apply::execute(&catalog, &plan, &options).await;
        let total = started.elapsed();
        assert!(
            changes.failures().next().is_none(),
            "{:?}",
            changes.failures().next()
        );
        app.fold(&plan, &changes);
        eprintln!(
            "reckon concurrency {concurrency}, {objects} objects: create {} (render {}, observe+plan {}, execute {})",
            secs(total),
            secs(rendered),
            secs(planned - rendered),
            secs(changes.duration)
        );
        // Steady state: everything is read back and found unchanged; nothing is sent.
        let started = Instant::now();
        let (_, changes) = app.sync(&catalog, &options).await;
        assert_eq!(changes.counts().get("Unchanged"), Some(&objects));
        eprintln!(
            "reckon concurrency {concurrency}, {objects} objects: unchanged sync {} (execute {})",
            secs(started.elapsed()),
            secs(changes.duration)
        );
    }
}
