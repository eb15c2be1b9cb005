//! Drift attribution through the Kubernetes audit log, against a real control plane of its own
//! (kube-apiserver v1.20 started with `deploy/audit/policy.yaml` and a webhook kubeconfig made
//! from `deploy/audit/webhook-kubeconfig.yaml`, pointing at the agent's receiver): two token
//! users make different manual changes — alice scales a Deployment (`deployments/scale`), bob
//! patches a ConfigMap, alice deletes it, bob creates a ConfigMap by hand — and each change is
//! recorded with the right person; a request without the webhook's credentials is refused.
//!
//! This test cannot use the run's shared control plane (`RECKON_TEST_KUBECONFIG`): the audit
//! webhook is an API server flag, so it starts one with the flags.

use crate::support;
use support::eventually;

use reckon::agent::{self, AgentError, AgentOptions};
use reckon::audit::AuditOptions;
use reckon::event::{DriftAttributed, Event};
use reckon::store::{EventStore, OpenOptions, SledStore};
use reckon_testenv::control_plane::{AuditWebhook, ControlPlane, StartOptions, kubeconfig_yaml};
use reckon_testenv::git::{Fixture, TestCa};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::sync::api_for;
use tokio::sync::oneshot;

const CONFIGMAP: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  color: blue\n";
const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 0\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n        - name: web\n          image: nginx:1.25\n";

fn token() -> String {
    format!(
        "{}{}{}",
        support::suffix(),
        support::suffix(),
        support::suffix()
    )
}

fn kubectl(kubeconfig: &Path, ns: &str, args: &[&str]) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", ns])
        .args(args)
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// POSTs an empty EventList to the receiver with curl; the HTTP status.
fn post_status(url: &str, ca: &Path, token: Option<&str>) -> String {
    let mut c = Command::new("curl");
    c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(ca)
        .args(["-X", "POST", "-H", "Content-Type: application/json"])
        .args([
            "-d",
            r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[]}"#,
        ]);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = c.arg(url).output().expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn deploy_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/audit")
        .join(name)
}

/// A control plane with the audit webhook, two token users (alice, bob) allowed to edit in one
/// namespace, and the agent (audit receiver and API on) after its first sync of a ConfigMap and a
/// Deployment. Fields drop in order: the control plane last.
struct Audited {
    stop_tx: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), AgentError>>,
    deployments: kube::Api<kube::api::DynamicObject>,
    cms: kube::Api<kube::api::DynamicObject>,
    /// The receiver's URL, its CA and the token the webhook kubeconfig carries.
    url: String,
    ca: TestCa,
    webhook_token: String,
    /// alice's token and the kubeconfigs that act as each user.
    alice: String,
    alice_kc: PathBuf,
    bob_kc: PathBuf,
    mallory_kc: PathBuf,
    ns: String,
    /// The agent's API (read token): only to watch the attributions arrive.
    api_port: u16,
    read_token: String,
    _fixture: Fixture,
    dir: tempfile::TempDir,
    cp: ControlPlane,
}

impl Audited {
    async fn start() -> Audited {
        reckon::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();

        // The receiver: a serving certificate from a throwaway CA, a port chosen before the API
        // server starts, and the token the webhook kubeconfig carries.
        let ca = TestCa::generate().unwrap();
        let (cert, key) = ca.server_pem_files().unwrap();
        let port = reckon_testenv::ports::free_ports(1).unwrap()[0];
        let url = format!("https://127.0.0.1:{port}/audit/v1/events");
        let webhook_token = token();
        std::fs::write(
            d.join("audit-tokens"),
            format!("apiserver {webhook_token}\n"),
        )
        .unwrap();
        let template = std::fs::read_to_string(deploy_file("webhook-kubeconfig.yaml")).unwrap();
        let webhook = template
            .replace("${RECKON_AUDIT_URL}", &url)
            .replace(
                "${RECKON_AUDIT_CA}",
                &ca.bundle_path().display().to_string(),
            )
            .replace("${RECKON_AUDIT_TOKEN}", &webhook_token);
        std::fs::write(d.join("webhook.yaml"), webhook).unwrap();

        let (alice, bob, mallory) = (token(), token(), token());
        let cp = ControlPlane::start_with(&StartOptions {
            extra_tokens: vec![
                format!("{alice},alice,2001"),
                format!("{bob},bob,2002"),
                format!("{mallory},mallory,2003"),
            ],
            audit: Some(AuditWebhook {
                policy: deploy_file("policy.yaml"),
                kubeconfig: d.join("webhook.yaml"),
            }),
            ..StartOptions::default()
        })
        .unwrap();
        let api_ca = cp.dir().join("certs/apiserver.crt");
        let as_user = |name: &str, token: &str| {
            let path = d.join(format!("{name}.kubeconfig"));
            std::fs::write(&path, kubeconfig_yaml(cp.server(), token, &api_ca)).unwrap();
            path
        };
        let (alice_kc, bob_kc) = (as_user("alice", &alice), as_user("bob", &bob));
        let mallory_kc = as_user("mallory", &mallory);
        let admin = cp.kubeconfig().to_path_buf();

        let ns = format!("reckon-test-audit-{}", support::suffix());
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&admin)
            .args(["create", "namespace", &ns])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // An explicit Role: the built-in `edit` is filled in by the controller manager's
        // aggregation controller, which may not have run yet on a fresh control plane.
        kubectl(
            &admin,
            &ns,
            &[
                "create",
                "role",
                "editor",
                "--verb=get,list,watch,create,update,patch,delete",
                "--resource=deployments.apps,deployments.apps/scale,configmaps",
            ],
        );
        kubectl(
            &admin,
            &ns,
            &[
                "create",
                "rolebinding",
                "editors",
                "--role=editor",
                "--user=alice",
                "--user=bob",
                "--user=mallory",
            ],
        );

        let fixture = Fixture::new().unwrap();
        fixture
            .commit("Add")
            .write("app/cm.yaml", CONFIGMAP)
            .write("app/deploy.yaml", DEPLOYMENT)
            .create()
            .unwrap();
        fixture.push().unwrap();
        let cfg = d.join("reckon.yaml");
        std::fs::write(
            &cfg,
            format!(
                "apps:\n  - name: web\n    source:\n      url: {url}\n      path: app\n      interval: 1s\n    target:\n      kubeconfig: {kc}\n      namespace: {ns}\n",
                url = fixture.file_url(),
                kc = admin.display(),
            ),
        )
        .unwrap();
        let mut options = AgentOptions::new(cfg, d.join("store"), d.join("cache"));
        options.watch.debounce = Duration::from_millis(100);
        let mut audit = AuditOptions::new(format!("127.0.0.1:{port}").parse().unwrap(), cert, key);
        audit.token_file = Some(d.join("audit-tokens"));
        // The default wait (40 s, past the webhook's 30 s batches): the test waits for the
        // attributions below, which come as soon as the audit events do; a shorter wait recorded
        // drifts unattributed when a loaded API server delivered its batches late.
        options.audit = Some(audit);
        // The API, only to watch the attributions arrive (their waits and batches vary with load).
        let api_port = reckon_testenv::ports::free_ports(1).unwrap()[0];
        options.listen = Some(format!("127.0.0.1:{api_port}").parse().unwrap());
        let read_token = token();
        let mut tokens = reckon::api::auth::Tokens::default();
        tokens.add(&read_token, None, reckon::api::auth::Role::Read);
        options.api_tokens = std::sync::Arc::new(tokens);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(agent::run(options, async move {
            let _ = stop_rx.await;
        }));

        let client = reckon::cluster::client(Some(&admin), None).await.unwrap();
        let deployments = api_for(&client, "apps/v1", "Deployment", "deployments", Some(&ns));
        let cms = api_for(&client, "v1", "ConfigMap", "configmaps", Some(&ns));
        eventually("the first sync", Duration::from_secs(60), || async {
            deployments.get_opt("web").await.unwrap().is_some()
                && cms.get_opt("settings").await.unwrap().is_some()
        })
        .await;
        Audited {
            stop_tx,
            task,
            deployments,
            cms,
            url,
            ca,
            webhook_token,
            alice,
            alice_kc,
            bob_kc,
            mallory_kc,
            ns,
            api_port,
            read_token,
            _fixture: fixture,
            dir,
            cp,
        }
    }
}

/// One test over one control plane, step by step: each step a function below. The changes by
/// hand are what the later steps find attributed, so they run in this order in one process
/// rather than as tests of their own (each would start a control plane).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_manual_change_is_attributed_to_the_person_who_made_it() {
    // The audit webhook is an API server flag: this test needs the local control plane's
    // binaries even when the run uses your cluster. It fails with the reason when they are
    // missing (a skipped attribution test would be a lie), unless explicitly opted out.
    if reckon_testenv::control_plane::Binaries::locate().is_err()
        && std::env::var_os("RECKON_SKIP_AUDIT_LIVE_TEST").is_some()
    {
        eprintln!("SKIPPED (RECKON_SKIP_AUDIT_LIVE_TEST): no local control plane binaries");
        return;
    }
    let audited = Audited::start().await;
    only_the_webhooks_credentials_get_in(&audited);
    alice_and_bob_change_things_by_hand(&audited).await;
    every_change_is_attributed_while_the_agent_runs(&audited).await;
    let (events, cp) = the_agent_stops_and_blame_and_history_name_the_people(audited).await;
    each_drift_and_the_configmap_made_by_hand_is_attributed_once(&events);
    drop(cp);
}

/// Only the webhook's credentials get in.
fn only_the_webhooks_credentials_get_in(a: &Audited) {
    let (url, alice, webhook_token) = (a.url.clone(), a.alice.clone(), a.webhook_token.clone());
    let ca = &a.ca;
    assert_eq!(post_status(&url, &ca.bundle_path(), None), "401");
    assert_eq!(post_status(&url, &ca.bundle_path(), Some(&alice)), "401");
    assert_eq!(
        post_status(&url, &ca.bundle_path(), Some(&webhook_token)),
        "200"
    );
}

/// alice scales the Deployment, bob patches the ConfigMap, alice deletes it, mallory patches it
/// naming reckon's field manager to pass for reckon (each put back), bob creates a ConfigMap by
/// hand.
async fn alice_and_bob_change_things_by_hand(a: &Audited) {
    let (alice_kc, bob_kc, ns) = (a.alice_kc.clone(), a.bob_kc.clone(), a.ns.clone());
    let (deployments, cms) = (&a.deployments, &a.cms);
    kubectl(&alice_kc, &ns, &["scale", "deployment/web", "--replicas=3"]);
    eventually("replicas put back", Duration::from_secs(20), || async {
        deployments.get("web").await.unwrap().data["spec"]["replicas"] == 0
    })
    .await;
    kubectl(
        &bob_kc,
        &ns,
        &[
            "patch",
            "configmap/settings",
            "-p",
            r#"{"data":{"color":"green"}}"#,
        ],
    );
    eventually("the color put back", Duration::from_secs(20), || async {
        cms.get("settings").await.unwrap().data["data"]["color"] == "blue"
    })
    .await;
    kubectl(&alice_kc, &ns, &["delete", "configmap/settings"]);
    eventually(
        "the ConfigMap re-created",
        Duration::from_secs(20),
        || async {
            cms.get_opt("settings")
                .await
                .unwrap()
                .is_some_and(|c| c.metadata.deletion_timestamp.is_none())
        },
    )
    .await;
    // The field manager is a query parameter anyone may set; before the attributor checked who
    // sent reckon's field manager, this write was taken for reckon's own and never attributed.
    kubectl(
        &a.mallory_kc,
        &ns,
        &[
            "patch",
            "configmap/settings",
            "--field-manager=reckon",
            "-p",
            r#"{"data":{"color":"red"}}"#,
        ],
    );
    eventually(
        "the color put back after mallory",
        Duration::from_secs(20),
        || async { cms.get("settings").await.unwrap().data["data"]["color"] == "blue" },
    )
    .await;
    kubectl(
        &bob_kc,
        &ns,
        &["create", "configmap", "by-hand", "--from-literal=a=b"],
    );
}

/// Every attribution is recorded once its writes arrived (1 s batches) or its wait is over;
/// under load that takes longer, so wait for what the assertions below expect to be there.
async fn every_change_is_attributed_while_the_agent_runs(a: &Audited) {
    let (ns, api_port, read_token) = (a.ns.clone(), a.api_port, a.read_token.clone());
    let http = reqwest::Client::new();
    let attributed = |user: &'static str| {
        let (http, token) = (http.clone(), read_token.clone());
        async move {
            let url = format!("http://127.0.0.1:{api_port}/api/v1/events?user={user}&limit=100");
            let Ok(resp) = http.get(url).bearer_auth(token).send().await else {
                return std::collections::BTreeSet::new();
            };
            let body = resp.bytes().await.unwrap_or_default();
            let page: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            page["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["object"].as_str().map(str::to_string))
                .collect::<std::collections::BTreeSet<String>>()
        }
    };
    let expected: [(&str, &[&str]); 3] = [
        (
            "alice",
            &["ConfigMap/{ns}/settings", "Deployment.apps/{ns}/web"],
        ),
        (
            "bob",
            &["ConfigMap/{ns}/by-hand", "ConfigMap/{ns}/settings"],
        ),
        ("mallory", &["ConfigMap/{ns}/settings"]),
    ];
    for (user, objects) in expected {
        let want: std::collections::BTreeSet<String> =
            objects.iter().map(|o| o.replace("{ns}", &ns)).collect();
        let start = Instant::now();
        loop {
            let got = attributed(user).await;
            if got == want {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "{user}'s changes attributed: {got:?}, want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The agent stops cleanly; the questions users ask: blame names the person beside the field
/// manager, and history --user lists what the audit log attributes to them. Returns the log and
/// the control plane (stopped last).
async fn the_agent_stops_and_blame_and_history_name_the_people(
    a: Audited,
) -> (Vec<reckon::event::Envelope>, ControlPlane) {
    let Audited {
        stop_tx,
        task,
        ns,
        dir,
        cp,
        ..
    } = a;
    let d = dir.path();
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the agent stops")
        .unwrap()
        .expect("the agent exits cleanly");
    let store = SledStore::open(d.join("store"), OpenOptions::default()).unwrap();
    let events: Vec<_> = store.reader().iter_from(1).map(|e| e.unwrap()).collect();
    // The questions users ask: blame names the person beside the field manager, and history
    // --user lists what the audit log attributes to them.
    let projections = store.projections().clone();
    let spec: reckon::query::ObjectSpec = format!("Deployment.apps/{ns}/web").parse().unwrap();
    let blame = reckon::query::blame(&store, &projections, &spec, Some("web"), None).unwrap();
    let replicas = blame
        .fields
        .iter()
        .find(|f| f.path == "/spec/replicas")
        .expect("replicas blamed");
    let people: Vec<Vec<String>> = replicas
        .drifts
        .iter()
        .map(|d| {
            d.changed_by
                .as_ref()
                .expect("attributed")
                .iter()
                .map(|w| w.username.clone())
                .collect()
        })
        .collect();
    assert_eq!(people, vec![vec!["alice".to_string()]]);
    let by_user = |user: &str| -> Vec<String> {
        let filter = reckon::query::HistoryFilter {
            user: Some(user.into()),
            ..Default::default()
        };
        reckon::query::history(&store, &projections, &filter)
            .unwrap()
            .events
            .iter()
            .map(|e| e.object.clone().unwrap_or_default())
            .collect::<std::collections::BTreeSet<String>>()
            .into_iter()
            .collect()
    };
    assert_eq!(
        by_user("alice"),
        vec![
            format!("ConfigMap/{ns}/settings"),
            format!("Deployment.apps/{ns}/web")
        ],
        "the delete and the scale, sorted (the log records them in the order their \
         audit batches and drifts met, not always the order of the changes)"
    );
    assert_eq!(
        by_user("bob"),
        vec![
            format!("ConfigMap/{ns}/by-hand"),
            format!("ConfigMap/{ns}/settings")
        ]
    );
    assert_eq!(by_user("mallory"), vec![format!("ConfigMap/{ns}/settings")]);
    assert!(by_user("carol").is_empty());
    store.close().unwrap();
    (events, cp)
}

/// The scale, the patch and the delete: each drift attributed to the user, verb and fields of
/// the write that made it, exactly once; the ConfigMap made by hand attributed to bob.
fn each_drift_and_the_configmap_made_by_hand_is_attributed_once(
    events: &[reckon::event::Envelope],
) {
    let drifts: Vec<(u64, &reckon::event::DriftDetected)> = events
        .iter()
        .filter_map(|e| match &e.body.event {
            Event::DriftDetected(d) => Some((e.body.seq, d)),
            _ => None,
        })
        .collect();
    let attributions: Vec<&DriftAttributed> = events
        .iter()
        .filter_map(|e| match &e.body.event {
            Event::DriftAttributed(a) => Some(a),
            _ => None,
        })
        .collect();
    let for_drift = |pred: &dyn Fn(&reckon::event::DriftDetected) -> bool| -> &DriftAttributed {
        let (seq, _) = drifts
            .iter()
            .find(|(_, d)| pred(d))
            .unwrap_or_else(|| panic!("drift not recorded; drifts: {drifts:#?}"));
        attributions
            .iter()
            .find(|a| a.drift_seq == Some(*seq))
            .unwrap_or_else(|| panic!("drift {seq} not attributed: {attributions:#?}"))
    };
    let users = |a: &DriftAttributed| -> Vec<(String, String, Option<String>)> {
        a.writers
            .iter()
            .map(|w| (w.username.clone(), w.verb.clone(), w.subresource.clone()))
            .collect()
    };

    let scaled = for_drift(&|d| {
        d.object.kind == "Deployment" && d.diffs.iter().any(|f| f.path == "/spec/replicas")
    });
    assert_eq!(
        users(scaled),
        vec![("alice".into(), "patch".into(), Some("scale".into()))],
        "{scaled:#?}"
    );
    let w = &scaled.writers[0];
    assert_eq!(w.fields, vec!["/spec/replicas"]);
    assert_eq!(w.evidence, "request-body");
    assert!(
        w.groups.contains(&"system:authenticated".to_string()),
        "{w:?}"
    );
    assert!(
        w.user_agent
            .as_deref()
            .is_some_and(|ua| ua.starts_with("kubectl")),
        "{w:?}"
    );
    assert_eq!(w.source_ips, vec!["127.0.0.1"]);
    assert!(!w.audit_id.is_empty());
    assert!(scaled.unexplained.is_empty());

    let color = |value: &'static str| {
        move |d: &reckon::event::DriftDetected| {
            d.object.kind == "ConfigMap"
                && d.diffs
                    .iter()
                    .any(|f| f.path == "/data/color" && f.actual.as_deref() == Some(value))
        }
    };
    let spoofed = for_drift(&color("\"red\""));
    assert_eq!(
        users(spoofed),
        vec![("mallory".into(), "patch".into(), None)],
        "a write naming reckon's field manager by someone else is theirs: {spoofed:#?}"
    );
    let patched = for_drift(&color("\"green\""));
    assert_eq!(
        users(patched),
        vec![("bob".into(), "patch".into(), None)],
        "{patched:#?}"
    );
    assert_eq!(patched.writers[0].fields, vec!["/data/color"]);

    let deleted =
        for_drift(&|d| d.object.kind == "ConfigMap" && d.diffs.iter().any(|f| f.path.is_empty()));
    assert_eq!(
        users(deleted),
        vec![("alice".into(), "delete".into(), None)],
        "{deleted:#?}"
    );

    // Objects created outside Git in the managed namespace. The test control plane's controller
    // manager runs with the admin token (a real one is `system:kube-controller-manager`, which
    // the policy does not send), so its `kube-root-ca.crt` ConfigMap arrives as admin's.
    let created: Vec<_> = attributions
        .iter()
        .filter(|a| a.drift_seq.is_none())
        .filter(|a| a.writers.iter().all(|w| w.username != "admin"))
        .collect();
    assert_eq!(created.len(), 1, "{created:#?}");
    assert_eq!(
        (
            created[0].object.kind.as_str(),
            created[0].object.name.as_str()
        ),
        ("ConfigMap", "by-hand")
    );
    assert_eq!(
        users(created[0]),
        vec![("bob".into(), "create".into(), None)]
    );
    // What it took (printed for docs/audit.md; run with --no-capture): from each drift to its
    // attribution, and how many writes the shipped policy sent for this whole test.
    for e in events {
        if let Event::DriftAttributed(a) = &e.body.event
            && let Some(seq) = a.drift_seq
        {
            let detected = events.iter().find(|d| d.body.seq == seq).unwrap();
            eprintln!(
                "measure: drift {seq} attributed after {} ms",
                (e.body.time - detected.body.time).num_milliseconds()
            );
        }
    }
    eprintln!(
        "measure: audit writes received {}, dropped {}, requests rejected {}",
        reckon::metrics::METRICS.audit_received.get(),
        reckon::metrics::METRICS.audit_dropped.get(),
        reckon::metrics::METRICS.audit_rejected.get()
    );
    // Every drift got exactly one attribution record.
    for (seq, d) in &drifts {
        let n = attributions
            .iter()
            .filter(|a| a.drift_seq == Some(*seq))
            .count();
        assert_eq!(n, 1, "drift {seq} {:?}", d.object);
    }
}
