//! Health on real Pods: workloads synced by the reconciler onto the test cluster's simulated
//! nodes (kube-scheduler places the Pods, KWOK's fake kubelets run them), so a Deployment with
//! replicas rolls out and becomes Available, a Pod that never becomes Ready keeps its App
//! unhealthy with the reason, StatefulSets, DaemonSets and Jobs are judged from what their
//! controllers report, and a current overlay (HPA `autoscaling/v2`, PDB `policy/v1`, CronJob
//! `batch/v1`, an Ingress with its class) over a shared base applies and stays in sync.
//!
//! These need the newest control plane, which has nodes (`scripts/test.sh` runs them there);
//! on the floor of the version matrix (v1.20, no nodes) each says so and checks nothing else.

use crate::support;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use reckon::event::{Event, Health, SyncOutcome};
use reckon::reconcile::PassStatus;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::harness::{Harness, pass, synced};
use support::sync::writes;

/// Whether the cluster runs Pods. Without simulated nodes the cluster must be the floor of the
/// version matrix (the one build without them); anything else is a broken test environment.
async fn has_nodes(client: &kube::Client) -> bool {
    if support::simulated_nodes(client).await > 0 {
        return true;
    }
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "20"),
        "{}: no simulated nodes on a cluster that should have them",
        version.git_version
    );
    eprintln!(
        "{}: no nodes, Pods never run; nothing to check",
        version.git_version
    );
    false
}

/// The App-level health changes recorded for `app`, oldest first: (to, message).
fn app_health(h: &Harness, app: &str) -> Vec<(Health, String)> {
    h.envelopes(app, 1)
        .into_iter()
        .filter_map(|e| match e.body.event {
            Event::HealthChanged(c) if c.object.is_none() => {
                Some((c.to, c.message.unwrap_or_default()))
            }
            _ => None,
        })
        .collect()
}

/// Each Pod of `ns` as `name node phase ready`, for a failing assertion to show what the
/// cluster did.
async fn pods_state(client: &kube::Client, ns: &str) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods.list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .map(|p| {
            let status = p.status.unwrap_or_default();
            let ready = status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| format!("{}:{}", c.status, c.reason.unwrap_or_default()));
            format!(
                "{} node={:?} phase={:?} ready={:?}",
                p.metadata.name.unwrap_or_default(),
                p.spec.and_then(|s| s.node_name),
                status.phase,
                ready
            )
        })
        .collect()
}

/// A Deployment `name` with `replicas`, the image `image`, and Pod annotations (`k: v` lines).
fn deployment(name: &str, replicas: u32, image: &str, annotations: &[(&str, &str)]) -> String {
    let annotations: String = annotations
        .iter()
        .map(|(k, v)| format!("        {k}: \"{v}\"\n"))
        .collect();
    let annotations = if annotations.is_empty() {
        String::new()
    } else {
        format!("      annotations:\n{annotations}")
    };
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  \
         selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n{annotations}      \
         labels:\n        app: {name}\n    spec:\n      containers:\n        - name: main\n          \
         image: {image}\n          ports:\n            - containerPort: 8080\n"
    )
}

/// The simulated nodes stay alive the way a kubelet keeps a node alive: each holds a Lease in
/// `kube-node-lease` that was renewed within its duration. Without it kube-controller-manager
/// marked every Node Unknown after its grace period and every Pod on it not Ready for good, so
/// a Deployment judged Healthy one moment had two Ready replicas the next.
#[tokio::test]
async fn every_simulated_node_holds_a_fresh_lease() {
    let client = support::client().await;
    if !has_nodes(&client).await {
        return;
    }
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let names: BTreeSet<String> = nodes
        .list(&ListParams::default().labels("type=kwok"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    for name in &names {
        let lease = leases.get_opt(name).await.unwrap();
        let spec = lease
            .and_then(|l| l.spec)
            .unwrap_or_else(|| panic!("node {name} has no Lease: it will be marked Unknown"));
        let duration = i64::from(spec.lease_duration_seconds.expect("a lease duration"));
        let renewed = std::time::SystemTime::from(spec.renew_time.expect("a renew time").0);
        let age = renewed.elapsed().unwrap_or_default();
        assert!(
            age.as_secs() < duration.unsigned_abs(),
            "node {name}'s Lease was renewed {age:?} ago, beyond its {duration} s"
        );
    }
}

/// Issue 16, item 5: three replicas roll out and the App turns Healthy only when they are
/// Ready; a new revision's rollout is followed to its end before the pass reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_roll_out_and_a_new_revision_is_followed_to_completion() {
    let h = Harness::new("rollout").await;
    let client = support::client().await;
    if !has_nodes(&client).await {
        return;
    }
    let slow = [("reckon.test/ready-after", "2s")];
    h.commit(
        "Three replicas",
        &[(
            "app/web.yaml",
            Some(&deployment("web", 3, "example.invalid/web:1", &slow)),
        )],
    );
    let mut r = h.reconciler(h.app("web", "app", "    health_timeout: 300s\n"), [9; 32]);
    let started = Instant::now();
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(
        report.health,
        Health::Healthy,
        "{report:?}\nrecorded: {:?}\nPods: {:#?}",
        app_health(&h, "web"),
        pods_state(&client, &h.ns.name).await
    );
    // The Pods start two seconds after they are scheduled: the pass waited for them.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &h.ns.name);
    let status = deployments.get("web").await.unwrap().status.unwrap();
    assert_eq!(
        (status.ready_replicas, status.available_replicas),
        (Some(3), Some(3))
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &h.ns.name);
    let nodes: BTreeSet<String> = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.spec?.node_name)
        .collect();
    assert!(!nodes.is_empty(), "the Pods were scheduled onto nodes");
    let recorded = app_health(&h, "web");
    assert_eq!(
        recorded.last().map(|(to, _)| *to),
        Some(Health::Healthy),
        "{recorded:?}"
    );

    // A new image: the pass reports once the new ReplicaSet's three Pods are Ready and the
    // old one is scaled to zero, not when the API server accepted the change.
    h.commit(
        "Version 2",
        &[(
            "app/web.yaml",
            Some(&deployment("web", 3, "example.invalid/web:2", &slow)),
        )],
    );
    let started = Instant::now();
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(report.health, Health::Healthy, "{report:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &h.ns.name);
    let mut by_image: Vec<(String, i32, i32)> = sets
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|rs| {
            let spec = rs.spec.unwrap();
            let image = spec.template.unwrap().spec.unwrap().containers[0]
                .image
                .clone()
                .unwrap();
            let ready = rs.status.unwrap().ready_replicas.unwrap_or(0);
            (image, spec.replicas.unwrap_or(0), ready)
        })
        .collect();
    by_image.sort();
    assert_eq!(
        by_image,
        [
            ("example.invalid/web:1".to_string(), 0, 0),
            ("example.invalid/web:2".to_string(), 3, 3)
        ]
    );
    // Steady state on a running workload: nothing written, nothing recorded.
    h.requests.take();
    let before = h.envelopes("web", 1).len();
    let report = pass(&mut r).await;
    assert_eq!(report.status, PassStatus::InSync, "{report:?}");
    assert_eq!(h.envelopes("web", 1).len(), before);
    let sent = h.requests.take();
    assert!(writes(&sent).is_empty(), "{:?}", writes(&sent));
    h.close().await;
}

/// Issue 16, item 5: Pods that never become Ready, and Pods that crash, keep the App from
/// Healthy after `health_timeout`, and the recorded message says which Pod and why; a
/// Deployment past its progress deadline is Degraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_never_become_ready_or_crash_are_reported_with_the_reason() {
    let h = Harness::new("unready").await;
    let client = support::client().await;
    if !has_nodes(&client).await {
        return;
    }
    h.commit(
        "Unready and crashing",
        &[
            (
                "never/web.yaml",
                Some(&deployment(
                    "web",
                    2,
                    "example.invalid/web:1",
                    &[("reckon.test/never-ready", "true")],
                )),
            ),
            (
                "crash/api.yaml",
                Some(&deployment(
                    "api",
                    1,
                    "example.invalid/api:1",
                    &[("reckon.test/crash-loop", "true")],
                )),
            ),
            (
                "deadline/db.yaml",
                Some(
                    &deployment(
                        "db",
                        1,
                        "example.invalid/db:1",
                        &[("reckon.test/never-ready", "true")],
                    )
                    .replace(
                        "spec:\n  replicas:",
                        "spec:\n  progressDeadlineSeconds: 2\n  replicas:",
                    ),
                ),
            ),
        ],
    );
    let never = h.app("never", "never", "    health_timeout: 3s\n");
    let mut r = h.reconciler(never, [9; 32]);
    let started = Instant::now();
    let report = pass(&mut r).await;
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "waited for the timeout"
    );
    // Applied, so the sync succeeded; the App is not Healthy, and says why.
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(report.health, Health::Progressing, "{report:?}");
    let (to, message) = app_health(&h, "never").pop().expect("an App health change");
    assert_eq!(to, Health::Progressing);
    assert!(
        message.contains("Deployment") && message.contains("web"),
        "{message}"
    );
    assert!(message.contains("0 of 2 replicas available"), "{message}");
    assert!(
        message.contains("containers with unready status: [main"),
        "{message}"
    );

    let crash = h.app("crash", "crash", "    health_timeout: 3s\n");
    let mut r = h.reconciler(crash, [9; 32]);
    let report = pass(&mut r).await;
    assert_eq!(report.health, Health::Progressing, "{report:?}");
    let (_, message) = app_health(&h, "crash").pop().expect("an App health change");
    assert!(message.contains("CrashLoopBackOff"), "{message}");
    assert!(message.contains("restarted 3 times"), "{message}");

    // The Deployment controller gives up after the progress deadline: Degraded, final.
    let deadline = h.app("deadline", "deadline", "    health_timeout: 30s\n");
    let mut r = h.reconciler(deadline, [9; 32]);
    let started = Instant::now();
    let report = pass(&mut r).await;
    assert_eq!(report.health, Health::Degraded, "{report:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a failed rollout ends the wait: {:?}",
        started.elapsed()
    );
    let (to, message) = app_health(&h, "deadline")
        .pop()
        .expect("an App health change");
    assert_eq!(to, Health::Degraded);
    assert!(message.contains("progress deadline exceeded"), "{message}");
    h.close().await;
}

const STATEFUL: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: db\nspec:\n  clusterIP: None\n  selector:\n    app: db\n  ports:\n    - port: 5432\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\nspec:\n  serviceName: db\n  replicas: 2\n  selector:\n    matchLabels:\n      app: db\n  template:\n    metadata:\n      labels:\n        app: db\n    spec:\n      containers:\n        - name: db\n          image: example.invalid/db:1\n";
// On the simulated nodes only: other tests register a Node of their own (they play its kubelet
// on the floor, `support::readiness`), on which no Pod ever starts by itself.
const DAEMON: &str = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  selector:\n    matchLabels:\n      app: agent\n  template:\n    metadata:\n      labels:\n        app: agent\n    spec:\n      nodeSelector:\n        type: kwok\n      containers:\n        - name: agent\n          image: example.invalid/agent:1\n";

fn job(name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n  backoffLimit: 0\n  template:\n    \
         metadata:\n      annotations: {{{annotations}}}\n    spec:\n      restartPolicy: Never\n      \
         containers:\n        - name: run\n          image: example.invalid/job:1\n"
    )
}

/// Issue 16, item 5: a StatefulSet (ordered Pods), a DaemonSet (one Pod per simulated node)
/// and a Job that succeeds make a Healthy App; a Job that fails makes its App Degraded, with
/// the Job's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulsets_daemonsets_and_jobs_are_judged_by_their_controllers() {
    let h = Harness::new("kinds").await;
    let client = support::client().await;
    if !has_nodes(&client).await {
        return;
    }
    h.commit(
        "Workloads of every kind",
        &[
            ("ok/db.yaml", Some(STATEFUL)),
            ("ok/agent.yaml", Some(DAEMON)),
            ("ok/migrate.yaml", Some(&job("migrate", ""))),
            (
                "bad/broken.yaml",
                Some(&job("broken", "reckon.test/fail: \"true\"")),
            ),
        ],
    );
    let ok = h.app("ok", "ok", "    health_timeout: 300s\n");
    let mut r = h.reconciler(ok, [9; 32]);
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(
        report.health,
        Health::Healthy,
        "{report:?} {:?}",
        app_health(&h, "ok")
    );
    // What Healthy rests on, read back from the cluster.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &h.ns.name);
    let on_nodes = |label: &'static str| {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default().labels(label))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|p| {
                    (
                        p.metadata.name.unwrap(),
                        p.spec.unwrap().node_name.unwrap_or_default(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let agents = on_nodes("app=agent").await;
    let nodes: BTreeSet<&String> = agents.iter().map(|(_, n)| n).collect();
    assert_eq!(
        (agents.len(), nodes.len()),
        (
            reckon_testenv::control_plane::NODES,
            reckon_testenv::control_plane::NODES
        ),
        "one agent Pod per node: {agents:?}"
    );
    let mut db: Vec<String> = on_nodes("app=db")
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    db.sort();
    assert_eq!(db, ["db-0", "db-1"]);
    let jobs = support::sync::api_for(&client, "batch/v1", "Job", "jobs", Some(&h.ns.name));
    let migrate = jobs.get("migrate").await.unwrap();
    assert_eq!(
        migrate.data["status"]["succeeded"], 1,
        "{:?}",
        migrate.data["status"]
    );

    let bad = h.app("bad", "bad", "    health_timeout: 60s\n");
    let mut r = h.reconciler(bad, [9; 32]);
    let started = Instant::now();
    let report = pass(&mut r).await;
    assert_eq!(synced(&report).0, SyncOutcome::Succeeded, "{report:?}");
    assert_eq!(report.health, Health::Degraded, "{report:?}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "a failed Job ends the wait"
    );
    let (to, message) = app_health(&h, "bad").pop().expect("an App health change");
    assert_eq!(to, Health::Degraded);
    assert!(
        message.contains("Job") && message.contains("job failed"),
        "{message}"
    );
    h.close().await;
}

const BASE_KUSTOMIZATION: &str = "resources:\n  - deployment.yaml\n  - service.yaml\n";
const BASE_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n    - name: http\n      port: 80\n      targetPort: 8080\n";
const PROD_KUSTOMIZATION: &str = "resources:\n  - ../../base\n  - hpa.yaml\n  - pdb.yaml\n  - cronjob.yaml\n  - ingress.yaml\nnamePrefix: prod-\nlabels:\n  - pairs:\n      env: prod\n    includeSelectors: false\npatches:\n  - target:\n      kind: Deployment\n      name: web\n    patch: |\n      - op: replace\n        path: /spec/replicas\n        value: 3\n";
const HPA: &str = "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: web\nspec:\n  scaleTargetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: web\n  minReplicas: 3\n  maxReplicas: 6\n  metrics:\n    - type: Resource\n      resource:\n        name: cpu\n        target:\n          type: Utilization\n          averageUtilization: 70\n  behavior:\n    scaleDown:\n      stabilizationWindowSeconds: 300\n";
const PDB: &str = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\nspec:\n  minAvailable: 2\n  selector:\n    matchLabels:\n      app: web\n";
const CRONJOB: &str = "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: report\nspec:\n  schedule: \"0 3 * * *\"\n  timeZone: Etc/UTC\n  concurrencyPolicy: Forbid\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers:\n            - name: report\n              image: example.invalid/report:1\n";
// The class is the cluster's (an IngressClass is cluster-wide, the operator's to install);
// the Ingress only names it.
const INGRESS: &str = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\nspec:\n  ingressClassName: reckon-test-nginx\n  rules:\n    - host: web.example.invalid\n      http:\n        paths:\n          - path: /\n            pathType: Prefix\n            backend:\n              service:\n                name: web\n                port:\n                  name: http\n";

/// Issue 16, item 4: an overlay over a shared base using the API versions people write today
/// (HPA `autoscaling/v2`, PDB `policy/v1`, CronJob `batch/v1` with a time zone, an Ingress
/// with `ingressClassName`, a Service port without `protocol`) applies, turns Healthy, and the
/// next pass finds nothing to do: the server's defaults are not mistaken for drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_current_overlay_over_a_shared_base_applies_and_stays_in_sync() {
    if !support::kustomize_available() {
        return;
    }
    let h = Harness::new("overlay").await;
    let client = support::client().await;
    if !has_nodes(&client).await {
        return;
    }
    h.commit(
        "Production overlay",
        &[
            ("base/kustomization.yaml", Some(BASE_KUSTOMIZATION)),
            (
                "base/deployment.yaml",
                Some(&deployment("web", 1, "example.invalid/web:1", &[])),
            ),
            ("base/service.yaml", Some(BASE_SERVICE)),
            ("overlays/prod/kustomization.yaml", Some(PROD_KUSTOMIZATION)),
            ("overlays/prod/hpa.yaml", Some(HPA)),
            ("overlays/prod/pdb.yaml", Some(PDB)),
            ("overlays/prod/cronjob.yaml", Some(CRONJOB)),
            ("overlays/prod/ingress.yaml", Some(INGRESS)),
        ],
    );
    let app = h.app("prod", "overlays/prod", "    health_timeout: 300s\n");
    let mut r = h.reconciler(app, [9; 32]);
    let report = pass(&mut r).await;
    let (outcome, counts) = match &report.status {
        PassStatus::Synced { outcome, counts } => (*outcome, counts.clone()),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (outcome, counts.created, counts.failed),
        (SyncOutcome::Succeeded, 6, 0),
        "{report:?}"
    );
    assert_eq!(report.health, Health::Healthy, "{report:?}");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &h.ns.name);
    let web = deployments.get("prod-web").await.unwrap();
    assert_eq!(web.status.unwrap().available_replicas, Some(3));

    // The next passes: in sync, no write, nothing recorded.
    for _ in 0..2 {
        h.requests.take();
        let before = h.envelopes("prod", 1).len();
        let report = pass(&mut r).await;
        assert_eq!(report.status, PassStatus::InSync, "{report:?}");
        let new: Vec<Event> = h.envelopes("prod", 1)[before..]
            .iter()
            .map(|e| e.body.event.clone())
            .collect();
        assert!(new.is_empty(), "{new:?}");
        let sent = h.requests.take();
        assert!(writes(&sent).is_empty(), "{:?}", writes(&sent));
    }
    h.close().await;
}

/// The agent (watch mode, health read from its cache) says why a workload is unready the same
/// way a direct sync does: its first Pod's problem in the kubelet's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_records_a_crash_looping_pod_with_its_reason() {
    let client = support::client().await;
    if !has_nodes(&client).await {
        return;
    }
    let ns = support::TestNamespace::create(&client, "agentcrash").await;
    let fixture = reckon_testenv::git::Fixture::new().unwrap();
    fixture
        .commit("Crashing")
        .write(
            "app/api.yaml",
            deployment(
                "api",
                1,
                "example.invalid/api:1",
                &[("reckon.test/crash-loop", "true")],
            ),
        )
        .create()
        .unwrap();
    fixture.push().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "apps:\n  - name: api\n    source:\n      url: {url}\n      path: app\n      interval: 1h\n    \
         target:\n      kubeconfig: {kc}\n      namespace: {ns}\n    health_timeout: 2s\n",
        url = fixture.file_url(),
        kc = support::kubeconfig().display(),
        ns = ns.name
    );
    std::fs::write(dir.path().join("reckon.yaml"), config).unwrap();
    let options = reckon::agent::AgentOptions::new(
        dir.path().join("reckon.yaml"),
        dir.path().join("store"),
        dir.path().join("cache"),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(reckon::agent::run(options, async move {
        let _ = stopped.await;
    }));
    // The first pass applies, then waits out the 2 s health timeout; a stop lets it finish.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    support::crd::until("Deployment api", Duration::from_secs(60), || {
        let deployments = deployments.clone();
        async move { deployments.get_opt("api").await.unwrap() }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(60), agent)
        .await
        .expect("the agent stops within a minute")
        .unwrap()
        .expect("the agent exits cleanly");
    let store = reckon::store::SledStore::open(
        dir.path().join("store"),
        reckon::store::OpenOptions::default(),
    )
    .unwrap();
    let messages: Vec<String> = store
        .reader()
        .iter_from(1)
        .filter_map(|e| match e.unwrap().body.event {
            Event::HealthChanged(c) if c.object.is_none() => c.message,
            _ => None,
        })
        .collect();
    store.close().unwrap();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("Deployment") && m.contains("CrashLoopBackOff")),
        "{messages:?}"
    );
}
