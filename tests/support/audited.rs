//! The audit tests' control plane (`live::audit`): kube-apiserver started with
//! `deploy/audit/policy.yaml` and a webhook kubeconfig made from
//! `deploy/audit/webhook-kubeconfig.yaml` pointing at the agent's receiver, token users who act
//! as people, and the agent after its first sync ([`Audited::start`]). It cannot be the run's
//! shared control plane (`RECKON_TEST_KUBECONFIG`): the audit webhook is an API server flag.

use super::eventually;
use super::sync::api_for;

use reckon::agent::{self, AgentError, AgentOptions};
use reckon::audit::AuditOptions;
use reckon_testenv::control_plane::{AuditWebhook, ControlPlane, StartOptions, kubeconfig_yaml};
use reckon_testenv::git::{Fixture, TestCa};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio::sync::oneshot;

pub const CONFIGMAP: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  color: blue\n";
pub const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 0\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n        - name: web\n          image: nginx:1.25\n";

pub fn token() -> String {
    format!("{}{}{}", super::suffix(), super::suffix(), super::suffix())
}

pub fn kubectl(kubeconfig: &Path, ns: &str, args: &[&str]) {
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
pub fn post_status(url: &str, ca: &Path, token: Option<&str>) -> String {
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

pub fn deploy_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/audit")
        .join(name)
}

/// A control plane with the audit webhook, two token users (alice, bob) allowed to edit in one
/// namespace, and the agent (audit receiver and API on) after its first sync of a ConfigMap and a
/// Deployment. Fields drop in order: the control plane last.
pub struct Audited {
    /// The agent, its receiver and API on.
    pub running: Running,
    pub receiver: Receiver,
    /// The kubeconfigs that act as each user.
    pub alice_kc: PathBuf,
    pub bob_kc: PathBuf,
    pub mallory_kc: PathBuf,
    pub ns: String,
    pub dir: tempfile::TempDir,
    pub cp: ControlPlane,
}

impl Audited {
    pub async fn start() -> Audited {
        reckon::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();

        let receiver = Receiver::prepare(d);
        let (url, webhook_token) = (&receiver.url, &receiver.webhook_token);
        let template = std::fs::read_to_string(deploy_file("webhook-kubeconfig.yaml")).unwrap();
        let webhook = template
            .replace("${RECKON_AUDIT_URL}", url)
            .replace(
                "${RECKON_AUDIT_CA}",
                &receiver.ca.bundle_path().display().to_string(),
            )
            .replace("${RECKON_AUDIT_TOKEN}", webhook_token);
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

        let ns = format!("reckon-test-audit-{}", super::suffix());
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

        let running = Running::start(d, &receiver, &admin, &ns).await;
        Audited {
            running,
            receiver,
            alice_kc,
            bob_kc,
            mallory_kc,
            ns,
            dir,
            cp,
        }
    }
}

/// The receiver's side of the webhook: a serving certificate from a throwaway CA, a port chosen
/// before the API server starts, and the token the webhook kubeconfig carries (in
/// `audit-tokens`, where the agent reads it).
pub struct Receiver {
    pub url: String,
    pub ca: TestCa,
    pub webhook_token: String,
    port: u16,
    cert: PathBuf,
    key: PathBuf,
}

impl Receiver {
    /// In directory `d` (the agent's).
    pub fn prepare(d: &Path) -> Receiver {
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
        Receiver {
            url,
            ca,
            webhook_token,
            port,
            cert,
            key,
        }
    }
}

/// The agent in the test process with the receiver and its API on, after its first sync of a
/// ConfigMap and a Deployment into `ns` of the cluster `admin` reaches.
pub struct Running {
    pub stop_tx: oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<Result<(), AgentError>>,
    pub deployments: kube::Api<kube::api::DynamicObject>,
    pub cms: kube::Api<kube::api::DynamicObject>,
    /// The agent's API (read token): only to watch the attributions arrive.
    pub api_port: u16,
    pub read_token: String,
    pub fixture: Fixture,
}

impl Running {
    /// In directory `d` (store, cache, reckon.yaml), where `receiver` was prepared.
    pub async fn start(d: &Path, receiver: &Receiver, admin: &Path, ns: &str) -> Running {
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
            super::one_app_config("web", &fixture.file_url(), "app", Some("1s"), admin, ns),
        )
        .unwrap();
        let mut options = AgentOptions::new(cfg, d.join("store"), d.join("cache"));
        options.watch.debounce = Duration::from_millis(100);
        let mut audit = AuditOptions::new(
            format!("127.0.0.1:{}", receiver.port).parse().unwrap(),
            receiver.cert.clone(),
            receiver.key.clone(),
        );
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

        let client = reckon::cluster::client(Some(admin), None).await.unwrap();
        let deployments = api_for(&client, "apps/v1", "Deployment", "deployments", Some(ns));
        let cms = api_for(&client, "v1", "ConfigMap", "configmaps", Some(ns));
        eventually("the first sync", Duration::from_secs(60), || async {
            deployments.get_opt("web").await.unwrap().is_some()
                && cms.get_opt("settings").await.unwrap().is_some()
        })
        .await;
        Running {
            stop_tx,
            task,
            deployments,
            cms,
            api_port,
            read_token,
            fixture,
        }
    }
}

/// The receiver in an agent on the run's shared control plane, after its first sync: enough to
/// ask whom the receiver lets in (nothing sends it audit events; the webhook is not configured
/// here). The agent stops when this drops, before the namespace goes.
pub struct Receiving {
    pub receiver: Receiver,
    stop_tx: Option<oneshot::Sender<()>>,
    _task: tokio::task::JoinHandle<Result<(), AgentError>>,
    _fixture: Fixture,
    _dir: tempfile::TempDir,
    _ns: super::TestNamespace,
}

impl Receiving {
    pub async fn start() -> Receiving {
        reckon::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let receiver = Receiver::prepare(d);
        let client = super::client().await;
        let ns = super::TestNamespace::create(&client, "audit-receiver").await;
        let running = Running::start(d, &receiver, &super::kubeconfig(), &ns.name).await;
        Receiving {
            receiver,
            stop_tx: Some(running.stop_tx),
            _task: running.task,
            _fixture: running.fixture,
            _dir: dir,
            _ns: ns,
        }
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
    }
}

/// Whether this run has opted out of the audit tests (`RECKON_SKIP_AUDIT_LIVE_TEST`) and has no
/// local control plane binaries to start one with the webhook. Without the opt-out a missing
/// binary fails the test with the reason (a skipped attribution test would be a lie).
pub fn skipped() -> bool {
    if reckon_testenv::control_plane::Binaries::locate().is_err()
        && std::env::var_os("RECKON_SKIP_AUDIT_LIVE_TEST").is_some()
    {
        eprintln!("SKIPPED (RECKON_SKIP_AUDIT_LIVE_TEST): no local control plane binaries");
        return true;
    }
    false
}
