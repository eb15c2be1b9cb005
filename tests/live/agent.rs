//! The agent (`reckon::agent::run`, as `reckon run` runs it) against the real control plane:
//! manual `kubectl scale`, `kubectl edit` and `kubectl delete` are detected through the shared
//! watch and corrected (or, in detect mode, only recorded), with the field managers named; a
//! dependency is synced before its dependent; stop flushes the log.

use crate::support;
use support::eventually;

use reckon::agent::{self, AgentOptions};
use reckon::event::{Event, EventKind};
use reckon::store::{OpenOptions, SledStore};
use reckon_testenv::git::Fixture;
use std::path::Path;
use std::time::Duration;
use support::TestNamespace;
use support::sync::api_for;
use tokio::sync::oneshot;

const CONFIGMAP: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  color: blue\n";
const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 0\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n        - name: web\n          image: nginx:1.25\n";

fn kubectl(ns: &str, args: &[&str], editor: Option<&str>) {
    let mut c = support::kubectl();
    c.args(["-n", ns]).args(args);
    if let Some(e) = editor {
        c.env("KUBE_EDITOR", e).env("EDITOR", e);
    }
    let out = c.output().expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), agent::AgentError>>,
    store: std::path::PathBuf,
}

impl Running {
    fn start(dir: &Path, config: &str) -> Running {
        Self::start_with(dir, config, |_| {})
    }

    fn start_with(dir: &Path, config: &str, tune: impl FnOnce(&mut AgentOptions)) -> Running {
        let cfg = dir.join("reckon.yaml");
        std::fs::write(&cfg, config).unwrap();
        let mut options = AgentOptions::new(cfg, dir.join("store"), dir.join("cache"));
        // A short quiet period: the tests wait for corrections.
        options.watch.debounce = Duration::from_millis(100);
        tune(&mut options);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(agent::run(options, async move {
            let _ = rx.await;
        }));
        Running {
            stop: Some(tx),
            task,
            store: dir.join("store"),
        }
    }

    /// Stops the agent (as SIGTERM does) and returns every event in the store.
    async fn stop(mut self) -> Vec<reckon::event::Envelope> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .expect("the agent stops within a minute")
            .unwrap()
            .expect("the agent exits cleanly");
        // The agent has returned, but tasks it spawned may still be dropping their handles on
        // the store (sled's file lock goes with the last one): under load that took a moment.
        let start = std::time::Instant::now();
        let store = loop {
            match SledStore::open(&self.store, OpenOptions::default()) {
                Ok(store) => break store,
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && start.elapsed() < Duration::from_secs(10) =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("opening the stopped agent's store: {e}"),
            }
        };
        let events = store.reader().iter_from(1).map(|e| e.unwrap()).collect();
        store.close().unwrap();
        events
    }
}

fn config(url: &str, ns: &str, apps: &[(&str, &str, &str)]) -> String {
    let mut text = String::from("apps:\n");
    for (name, path, extra) in apps {
        text.push_str(&format!(
            "  - name: {name}\n    source:\n      url: {url}\n      path: {path}\n      interval: 1s\n    target:\n      kubeconfig: {kc}\n      namespace: {ns}\n{extra}",
            kc = support::kubeconfig().display()
        ));
    }
    text
}

/// A test's world: a namespace, a Git repository with one commit of `files`, a directory for
/// the agent's store and cache.
struct Scene {
    client: kube::Client,
    ns: TestNamespace,
    fixture: Fixture,
    dir: tempfile::TempDir,
}

impl Scene {
    async fn new(prefix: &str, files: &[(&str, &str)]) -> Scene {
        let client = support::client().await;
        let ns = TestNamespace::create(&client, prefix).await;
        let fixture = Fixture::new().unwrap();
        let mut commit = fixture.commit("Add");
        for (path, text) in files {
            commit = commit.write(path, text);
        }
        commit.create().unwrap();
        fixture.push().unwrap();
        Scene {
            client,
            ns,
            fixture,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self, apps: &[(&str, &str, &str)]) -> String {
        config(&self.fixture.file_url(), &self.ns.name, apps)
    }

    fn start(&self, apps: &[(&str, &str, &str)]) -> Running {
        Running::start(self.dir.path(), &self.config(apps))
    }

    fn api(
        &self,
        api_version: &str,
        kind: &str,
        plural: &str,
    ) -> kube::Api<kube::api::DynamicObject> {
        api_for(&self.client, api_version, kind, plural, Some(&self.ns.name))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_scale_edit_and_delete_are_detected_and_corrected() {
    let s = Scene::new(
        "drift",
        &[("app/cm.yaml", CONFIGMAP), ("app/deploy.yaml", DEPLOYMENT)],
    )
    .await;
    let (client, ns) = (&s.client, &s.ns);
    let running = s.start(&[("web", "app", "")]);
    let deployments = s.api("apps/v1", "Deployment", "deployments");
    let cms = s.api("v1", "ConfigMap", "configmaps");
    eventually("the first sync", Duration::from_secs(60), || async {
        deployments.get_opt("web").await.unwrap().is_some()
            && cms.get_opt("settings").await.unwrap().is_some()
    })
    .await;
    let replicas = || async {
        deployments.get("web").await.unwrap().data["spec"]["replicas"]
            .as_i64()
            .unwrap()
    };

    kubectl(&ns.name, &["scale", "deployment/web", "--replicas=3"], None);
    eventually(
        "replicas put back to 0",
        Duration::from_secs(15),
        || async { replicas().await == 0 },
    )
    .await;

    kubectl(
        &ns.name,
        &["edit", "configmap/settings"],
        Some("sed -i s/color:\\ blue/color:\\ green/"),
    );
    eventually(
        "the edited color put back",
        Duration::from_secs(15),
        || async { cms.get("settings").await.unwrap().data["data"]["color"] == "blue" },
    )
    .await;

    kubectl(&ns.name, &["delete", "configmap/settings"], None);
    eventually(
        "the deleted ConfigMap recreated",
        Duration::from_secs(15),
        || async {
            cms.get_opt("settings")
                .await
                .unwrap()
                .is_some_and(|c| c.metadata.deletion_timestamp.is_none())
        },
    )
    .await;

    let events = running.stop().await;
    let drift: Vec<&reckon::event::DriftDetected> = events
        .iter()
        .filter_map(|e| match &e.body.event {
            Event::DriftDetected(d) => Some(d),
            _ => None,
        })
        .collect();
    let scaled = drift
        .iter()
        .find(|d| d.object.kind == "Deployment")
        .expect("the scale recorded");
    let replicas_diff = scaled
        .diffs
        .iter()
        .find(|d| d.path == "/spec/replicas")
        .expect("replicas named");
    assert_eq!(
        (
            replicas_diff.expected.as_deref(),
            replicas_diff.actual.as_deref()
        ),
        (Some("0"), Some("3"))
    );
    // Writes through the scale subresource are tracked in managedFields only from v1.22 on
    // (before, the API server leaves reckon as the owner of spec.replicas): on older servers
    // there is no manager to name, and reckon must not invent one.
    let version = client.apiserver_version().await.unwrap();
    let minor: u32 = version.minor.trim_end_matches('+').parse().unwrap();
    // v1.37 writes the scale subresource's managedFields entry without a `time` (seen with
    // `kubectl get -o json --show-managed-fields` on the Go-built v1.37.2): reckon records the
    // time when the server gives one and never invents it.
    let timed = minor < 37;
    let scale_manager = scaled.managers.iter().find(|m| {
        m.manager.starts_with("kubectl")
            && m.fields.contains(&"/spec/replicas".to_string())
            && m.time.is_some() == timed
    });
    if minor >= 22 {
        assert!(
            scale_manager.is_some(),
            "who scaled it, and when: {:?}",
            scaled.managers
        );
    } else {
        assert!(scaled.managers.is_empty(), "{:?}", scaled.managers);
    }
    let edited = drift
        .iter()
        .find(|d| d.object.kind == "ConfigMap" && d.diffs.iter().any(|f| f.path == "/data/color"))
        .expect("the edit recorded");
    assert!(
        edited
            .managers
            .iter()
            .any(|m| m.manager.starts_with("kubectl")),
        "{:?}",
        edited.managers
    );
    assert!(
        drift.iter().any(|d| d.object.kind == "ConfigMap"
            && d.diffs.len() == 1
            && d.diffs[0].path.is_empty()),
        "the deletion recorded: {drift:?}"
    );
    let corrected: Vec<&reckon::event::DriftCorrected> = events
        .iter()
        .filter_map(|e| match &e.body.event {
            Event::DriftCorrected(d) => Some(d),
            _ => None,
        })
        .collect();
    assert!(corrected.len() >= 3, "each drift corrected: {corrected:?}");
    assert!(
        corrected
            .iter()
            .any(|c| c.object.kind == "Deployment" && c.fields == ["/spec/replicas"])
    );
    // The agent recorded its start; every event of the App is chained and verifiable.
    assert_eq!(events[0].body.event.kind(), EventKind::AgentStarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_mode_records_drift_and_leaves_it() {
    let s = Scene::new("detect", &[("app/deploy.yaml", DEPLOYMENT)]).await;
    let ns = &s.ns;
    let running = s.start(&[(
        "web",
        "app",
        "    drift: detect
",
    )]);
    let deployments = s.api("apps/v1", "Deployment", "deployments");
    eventually("the first sync", Duration::from_secs(60), || async {
        deployments.get_opt("web").await.unwrap().is_some()
    })
    .await;
    kubectl(&ns.name, &["scale", "deployment/web", "--replicas=2"], None);
    // Several polls and watch notifications pass; the drift stays.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let live = deployments.get("web").await.unwrap();
    assert_eq!(live.data["spec"]["replicas"], 2, "detect mode leaves it");
    let events = running.stop().await;
    let detected = events
        .iter()
        .filter(
            |e| matches!(&e.body.event, Event::DriftDetected(d) if d.object.kind == "Deployment"),
        )
        .count();
    assert_eq!(detected, 1, "recorded once, not at every pass");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.body.event, Event::DriftCorrected(_)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_is_synced_before_its_dependent() {
    let s = Scene::new(
        "deps",
        &[("base/cm.yaml", CONFIGMAP), ("app/deploy.yaml", DEPLOYMENT)],
    )
    .await;
    // The dependent comes first in the file; depends_on orders it after base.
    let running = s.start(&[
        (
            "app",
            "app",
            "    depends_on: [base]
",
        ),
        ("base", "base", ""),
    ]);
    let deployments = s.api("apps/v1", "Deployment", "deployments");
    eventually("the dependent synced", Duration::from_secs(60), || async {
        deployments.get_opt("web").await.unwrap().is_some()
    })
    .await;
    let events = running.stop().await;
    let finished = |app: &str| {
        events
            .iter()
            .position(|e| {
                e.body.app.as_deref() == Some(app) && matches!(e.body.event, Event::SyncFinished(_))
            })
            .unwrap_or_else(|| panic!("{app} synced"))
    };
    let started_app = events
        .iter()
        .position(|e| {
            e.body.app.as_deref() == Some("app") && matches!(e.body.event, Event::SyncStarted(_))
        })
        .expect("app synced");
    assert!(
        finished("base") < started_app,
        "base finished before app started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_syncs_a_new_commit_at_once() {
    let s = Scene::new("hook", &[("app/cm.yaml", CONFIGMAP)]).await;
    let f = &s.fixture;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // An hour between polls: only the webhook can bring the new commit in time.
    let text = s
        .config(&[("web", "app", "")])
        .replace("interval: 1s", "interval: 1h");
    let running = Running::start_with(s.dir.path(), &text, |o| {
        o.listen = Some(([127, 0, 0, 1], port).into());
        o.webhooks.generic = Some("s3cret".into());
    });
    let cms = s.api("v1", "ConfigMap", "configmaps");
    eventually("the first sync", Duration::from_secs(60), || async {
        cms.get_opt("settings").await.unwrap().is_some()
    })
    .await;
    f.commit("Red")
        .write("app/cm.yaml", CONFIGMAP.replace("blue", "red"))
        .create()
        .unwrap();
    f.push().unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/hooks/generic/web");
    let body = b"{}".to_vec();
    // Unsigned: refused, nothing fetched.
    let refused = http.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (timestamp, signature) = reckon::source::webhook::sign_generic("s3cret", now, "web", &body);
    let signed = http
        .post(&url)
        .header(reckon::source::webhook::GENERIC_TIMESTAMP_HEADER, timestamp)
        .header("X-Signature-256", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(signed.status().is_success(), "{}", signed.status());
    eventually(
        "the pushed change applied",
        Duration::from_secs(15),
        || async { cms.get("settings").await.unwrap().data["data"]["color"] == "red" },
    )
    .await;
    let health = http
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let events = running.stop().await;
    let commits = events
        .iter()
        .filter(|e| matches!(e.body.event, Event::CommitObserved(_)))
        .count();
    assert_eq!(commits, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_with_nothing_new_records_nothing_new() {
    let s = Scene::new(
        "restart",
        &[("app/cm.yaml", CONFIGMAP), ("app/deploy.yaml", DEPLOYMENT)],
    )
    .await;
    let apps = [("web", "app", "")];
    let running = s.start(&apps);
    let cms = s.api("v1", "ConfigMap", "configmaps");
    eventually("the first sync", Duration::from_secs(60), || async {
        cms.get_opt("settings").await.unwrap().is_some()
    })
    .await;
    let first = running.stop().await;
    assert!(
        first
            .iter()
            .any(|e| matches!(e.body.event, Event::SyncFinished(_))),
        "the first run finished its sync"
    );

    // Several passes (polls every second) over an unchanged App and cluster.
    let running = s.start(&apps);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let all = running.stop().await;
    let new: Vec<EventKind> = all[first.len()..]
        .iter()
        .map(|e| e.body.event.kind())
        .collect();
    assert_eq!(
        new,
        vec![EventKind::AgentStarted],
        "the restart found everything as recorded (health included)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_remote_is_recorded_once_per_outage() {
    let s = Scene::new("outage", &[("app/cm.yaml", CONFIGMAP)]).await;
    let text = s
        .config(&[("web", "app", "")])
        .replace(&s.fixture.file_url(), "git://127.0.0.1:1/nothing.git");
    // Polls every second for four seconds: one failure, however many polls.
    let running = Running::start(s.dir.path(), &text);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let events = running.stop().await;
    let failures: Vec<&reckon::event::SourceFetchFailed> = events
        .iter()
        .filter_map(|e| match &e.body.event {
            Event::SourceFetchFailed(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].reason, "Unreachable");
}
