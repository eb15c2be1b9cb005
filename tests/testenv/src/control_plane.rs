//! Owns the local Kubernetes control plane used by reckon's tests and demo: etcd,
//! kube-apiserver and kube-controller-manager, and — where the binaries exist — kube-scheduler
//! and KWOK's fake kubelets with a few simulated Nodes, so Pods are scheduled and become Ready.
//! Each component is a supervised process on loopback ports; the kubeconfig reaches it.
//!
//! Two builds exist (`scripts/provision-testenv.sh`): the newest supported release from Go
//! modules with kube-scheduler and KWOK (the default, [`default_version`]), and the oldest,
//! [`FLOOR_VERSION`], from Debian's source package (no scheduler, no nodes: Pods stay Pending).
//! `RECKON_K8S_VERSION` picks one; flags are chosen from what `kube-apiserver --version` says,
//! not from the name asked for.
//!
//! Binaries are found, in order: `KUBEBUILDER_ASSETS` (the envtest convention), then the cache
//! `$RECKON_CACHE_DIR/k8s-<version>/bin` (default `~/.cache/reckon`), then PATH.

use crate::audit::AuditDir;
use crate::ports::{self, PortError};
use crate::process::{self, ProcessError, Supervised};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Errors bringing up the control plane, named after the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Port(#[from] PortError),
    #[error("preparing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("generating the service account key pair with openssl: {0}")]
    Openssl(String),
    #[error("{component} did not become ready within {secs} s; last log lines ({log}):\n{tail}")]
    NotReady {
        component: &'static str,
        secs: u64,
        log: PathBuf,
        tail: String,
    },
    #[error("{component} exited during startup; last log lines ({log}):\n{tail}")]
    Exited {
        component: &'static str,
        log: PathBuf,
        tail: String,
    },
    #[error("asking {binary} for its version: {detail}")]
    Version { binary: PathBuf, detail: String },
    #[error("creating simulated node {name}: {detail}")]
    CreateNode { name: String, detail: String },
    #[error("generating the audit receiver's certificate: {0}")]
    AuditCa(String),
}

/// The go.mod that pins the newest release (and everything built with it): the one place its
/// version is written.
const NEWEST_GO_MOD: &str = include_str!("../k8s/kubernetes/go.mod");

/// Set by `reckon-testenv run` for the command it runs: the control plane's components as
/// `NAME=PGID,...` (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok), each
/// the process group of the component's server.
pub const CONTROL_PLANE_ENV: &str = "RECKON_TEST_CONTROL_PLANE_PGIDS";

/// The oldest release reckon supports, the floor of the version matrix: built from Debian's
/// source package, without scheduler or nodes.
pub const FLOOR_VERSION: &str = "1.20.2";

/// The control plane built when `RECKON_K8S_VERSION` is unset: the newest supported release,
/// as pinned in `tests/testenv/k8s/kubernetes/go.mod`.
pub fn default_version() -> String {
    pinned_version(NEWEST_GO_MOD)
        .expect("tests/testenv/k8s/kubernetes/go.mod requires k8s.io/kubernetes")
}

/// The `k8s.io/kubernetes` version a go.mod requires, without the leading `v`.
fn pinned_version(go_mod: &str) -> Option<String> {
    go_mod.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == "k8s.io/kubernetes")
            .then(|| words.next())
            .flatten()
            .map(|v| v.trim_start_matches('v').to_string())
    })
}

/// How many simulated Nodes KWOK runs: enough for a DaemonSet to show one Pod per node and for
/// spreading to matter, few enough to cost nothing.
pub const NODES: usize = 3;

/// The KWOK stages: Node and Pod lifecycles, including the annotation-driven negative cases
/// (`reckon.test/never-ready`, `reckon.test/crash-loop`, `reckon.test/fail`) described in the file.
pub const KWOK_STAGES: &str = include_str!("../k8s/kwok-stages.yaml");

/// The annotation that marks a Node as KWOK's to manage.
const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// A Kubernetes release as `kube-apiserver --version` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KubeVersion {
    /// Parses `Kubernetes v1.37.2` (or `v1.37.2`, `1.37.2`, with any `-suffix`).
    pub fn parse(s: &str) -> Option<Self> {
        let word = s.split_whitespace().last()?;
        let v = word.strip_prefix('v').unwrap_or(word);
        let v = v.split(['-', '+']).next()?;
        let mut it = v.split('.').map(|n| n.parse::<u32>().ok());
        let (major, minor, patch) = (it.next()??, it.next()??, it.next()??);
        (major == 1).then_some(Self {
            major,
            minor,
            patch,
        })
    }

    /// The controller manager's insecure `--port` exists (and must be set to 0 so parallel
    /// control planes do not fight over 10252) before 1.24, which removed the flag.
    fn has_insecure_port_flag(self) -> bool {
        self.minor < 24
    }

    /// v1.37 refuses to start with a loopback `--advertise-address` while its endpoint
    /// reconciler writes the `kubernetes` Service's endpoints ("may not be in the loopback
    /// range"); v1.20 accepted it. Nothing in a loopback test cluster reaches the API server
    /// through that Service, so every release after the floor runs without the reconciler.
    fn needs_no_endpoint_reconciler(self) -> bool {
        self.minor > 20
    }
}

impl std::fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The version `RECKON_K8S_VERSION` asks for, without a leading `v`.
pub fn requested_version() -> String {
    std::env::var("RECKON_K8S_VERSION")
        .ok()
        .map(|v| v.trim().trim_start_matches('v').to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(default_version)
}

/// Built-in API groups that must be discoverable before the control plane counts as started.
const DISCOVERY_GROUPS: &[&str] = &[
    "apps",
    "batch",
    "apiextensions.k8s.io",
    "rbac.authorization.k8s.io",
    "networking.k8s.io",
    "coordination.k8s.io",
    "policy",
];

/// Where the control plane binaries live.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    /// With `kwok`: simulated nodes. Absent from the v1.20 build, whose Pods stay Pending.
    pub kube_scheduler: Option<PathBuf>,
    pub kwok: Option<PathBuf>,
}

const INSTALL_HINT: &str = "run scripts/provision-testenv.sh to build it into ~/.cache/reckon, \
     or set KUBEBUILDER_ASSETS to a directory holding it";

/// The default cache directory for built binaries.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RECKON_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/reckon")
}

impl Binaries {
    /// Finds every binary from the process environment, or says which one is missing and how
    /// to get it.
    pub fn locate() -> Result<Self, ControlPlaneError> {
        Self::locate_in(
            std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from),
            &cache_dir().join(format!("k8s-{}/bin", requested_version())),
            &std::env::var_os("PATH").unwrap_or_default(),
        )
    }

    /// Finds every binary in `assets`, then the cache's bin directory `cache_bin`, then the
    /// directories of `path`. kube-scheduler and KWOK come only from the directory that holds
    /// the kube-apiserver found: a scheduler of another release on PATH (the newest build's,
    /// while the floor runs) would otherwise join a control plane it was not built for.
    pub fn locate_in(
        assets: Option<PathBuf>,
        cache_bin: &Path,
        path: &std::ffi::OsStr,
    ) -> Result<Self, ControlPlaneError> {
        let mut dirs: Vec<PathBuf> = assets.into_iter().collect();
        dirs.push(cache_bin.to_path_buf());
        dirs.extend(std::env::split_paths(path));
        let find = |name: &str| -> Result<PathBuf, ControlPlaneError> {
            dirs.iter()
                .map(|d| d.join(name))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    ProcessError::MissingBinary {
                        name: name.into(),
                        binary: name.into(),
                        hint: format!(" ({INSTALL_HINT})"),
                    }
                    .into()
                })
        };
        let etcd = find("etcd")?;
        let kube_apiserver = find("kube-apiserver")?;
        let beside = |name: &str| {
            kube_apiserver
                .parent()
                .map(|d| d.join(name))
                .filter(|p| p.is_file())
        };
        Ok(Self {
            etcd,
            kube_controller_manager: find("kube-controller-manager")?,
            kube_scheduler: beside("kube-scheduler"),
            kwok: beside("kwok"),
            kube_apiserver,
        })
    }

    /// The API server's release, from `kube-apiserver --version`.
    pub fn version(&self) -> Result<KubeVersion, ControlPlaneError> {
        let err = |detail: String| ControlPlaneError::Version {
            binary: self.kube_apiserver.clone(),
            detail,
        };
        let out = Command::new(&self.kube_apiserver)
            .arg("--version")
            .output()
            .map_err(|e| err(e.to_string()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        KubeVersion::parse(&text).ok_or_else(|| err(format!("unrecognised answer {text:?}")))
    }
}

/// A running control plane. Dropping it stops the controller manager, the API server and etcd
/// (in that order) by PID and removes its data directory.
pub struct ControlPlane {
    // Field order is drop order: dependents stop before what they depend on.
    kwok: Option<Supervised>,
    scheduler: Option<Supervised>,
    controller_manager: Supervised,
    apiserver: Supervised,
    etcd: Supervised,
    kubeconfig: PathBuf,
    server: String,
    token: String,
    version: KubeVersion,
    audit_dir: Option<AuditDir>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server", &self.server)
            .field("version", &self.version)
            .field("kubeconfig", &self.kubeconfig)
            .finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ControlPlaneError + '_ {
    move |source| ControlPlaneError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn openssl(args: &[&str]) -> Result<(), ControlPlaneError> {
    let bin = process::find_binary("openssl", "openssl", "apt-get install openssl")?;
    let out = Command::new(bin)
        .args(args)
        .output()
        .map_err(|e| ControlPlaneError::Openssl(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ControlPlaneError::Openssl(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

/// Polls `probe` until it answers true, the process exits, or the timeout passes.
fn wait_ready(
    component: &'static str,
    proc_: &mut Supervised,
    timeout: Duration,
    mut probe: impl FnMut() -> bool,
) -> Result<(), ControlPlaneError> {
    let start = Instant::now();
    loop {
        if probe() {
            return Ok(());
        }
        if !proc_.is_running() {
            return Err(ControlPlaneError::Exited {
                component,
                log: proc_.log_path().to_path_buf(),
                tail: proc_.log_tail(30),
            });
        }
        if start.elapsed() > timeout {
            return Err(ControlPlaneError::NotReady {
                component,
                secs: timeout.as_secs(),
                log: proc_.log_path().to_path_buf(),
                tail: proc_.log_tail(30),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// POST the JSON `body` to `url` with curl and the bearer `token`; the body of a 2xx answer, or
/// the error body.
fn http_post(url: &str, token: &str, body: &str) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sSk", "--max-time", "10", "-X", "POST", url])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-w", "\n%{http_code}"])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    if code.starts_with('2') {
        Ok(body.to_string())
    } else {
        Err(format!(
            "HTTP {code}: {body}{}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A simulated Node for KWOK: the annotation hands it to KWOK, which fills in its status
/// (addresses, capacity, Ready) and keeps its lease. No taints, so every Pod may land on it.
fn node_json(name: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": { KWOK_NODE_ANNOTATION: "fake" },
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
    })
    .to_string()
}

/// Whether a Node object (JSON) has condition Ready=True.
fn node_is_ready(body: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return false;
    };
    v["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// GET `url` with curl (bearer `token` when given) and return the body of a 2xx answer.
fn http_get(url: &str, token: Option<&str>) -> Option<String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sfk", "--max-time", "2", url]);
    if let Some(t) = token {
        cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..32)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}

/// What a control plane starts with beyond the defaults.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// More users for the static token file, one line each: `TOKEN,USER,UID[,"GROUP,..."]`.
    pub extra_tokens: Vec<String>,
    /// The audit webhook backend: `--audit-policy-file` and `--audit-webhook-config-file`.
    pub audit: Option<AuditWebhook>,
    /// Audit the writes of the token users [`crate::audit::PEOPLE`] only, to a receiver slot
    /// described in [`ControlPlane::audit_dir`] (`reckon-testenv run --audit`). Ignored when
    /// `audit` is given.
    pub people_audit: bool,
}

/// Where the API server sends its audit events.
#[derive(Clone, Debug)]
pub struct AuditWebhook {
    pub policy: PathBuf,
    /// A kubeconfig naming the receiver (server, CA, credentials).
    pub kubeconfig: PathBuf,
}

impl ControlPlane {
    /// Starts etcd, the API server and the controller manager on free loopback ports and waits
    /// until the API server answers `/readyz`.
    pub fn start() -> Result<Self, ControlPlaneError> {
        Self::start_with(&StartOptions::default())
    }

    /// [`ControlPlane::start`] with more token users and/or an audit webhook.
    pub fn start_with(options: &StartOptions) -> Result<Self, ControlPlaneError> {
        let bins = Binaries::locate()?;
        let version = bins.version()?;
        process::find_binary("curl", "curl", "apt-get install curl")?;
        let dir = tempfile::Builder::new()
            .prefix("reckon-cp-")
            .tempdir()
            .map_err(io_err(Path::new("/tmp")))?;
        let d = dir.path();
        let [etcd_client, etcd_peer, secure] = ports::free_ports(3)?[..] else {
            unreachable!("free_ports(3) returns three ports")
        };
        for p in [etcd_client, etcd_peer, secure] {
            ports::check_free(p)?;
        }

        // etcd
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        // etcd's watchdog also owns the run directory: if this process dies without dropping the
        // control plane (the per-test-process fallback lives in a static), it is removed too.
        let mut etcd = Supervised::spawn_owning_dir(
            "etcd",
            &bins.etcd,
            &[
                "--data-dir".into(),
                d.join("etcd").display().to_string(),
                "--listen-client-urls".into(),
                etcd_url.clone(),
                "--advertise-client-urls".into(),
                etcd_url.clone(),
                "--listen-peer-urls".into(),
                format!("http://127.0.0.1:{etcd_peer}"),
                "--initial-advertise-peer-urls".into(),
                format!("http://127.0.0.1:{etcd_peer}"),
                "--initial-cluster".into(),
                format!("default=http://127.0.0.1:{etcd_peer}"),
                // Tests churn thousands of objects; unsafe-no-fsync keeps etcd off the disk's
                // critical path. Durability of test data does not matter.
                "--unsafe-no-fsync".into(),
            ],
            d,
            &d.join("etcd.log"),
        )?;
        wait_ready("etcd", &mut etcd, Duration::from_secs(30), || {
            http_get(&format!("{etcd_url}/health"), None).is_some_and(|b| b.contains("true"))
        })?;

        // Opt-in: an audit receiver slot and the people whose writes are sent to it.
        let (audit_dir, audit) = match (&options.audit, options.people_audit) {
            (Some(a), _) => (None, Some(a.clone())),
            (None, true) => {
                let (dir, hook) = AuditDir::prepare(&d.join("audit"), random_token)?;
                (Some(dir), Some(hook))
            }
            (None, false) => (None, None),
        };

        // Credentials: a static admin token and a service account key pair.
        let token = random_token();
        let tokens = d.join("tokens.csv");
        let mut lines = format!("{token},admin,1,system:masters\n");
        let people = audit_dir.iter().flat_map(AuditDir::token_lines);
        for l in options.extra_tokens.iter().chain(people) {
            lines.push_str(l);
            lines.push('\n');
        }
        std::fs::write(&tokens, lines).map_err(io_err(&tokens))?;
        let sa_key = d.join("sa.key");
        let sa_pub = d.join("sa.pub");
        openssl(&["genrsa", "-out", &sa_key.display().to_string(), "2048"])?;
        openssl(&[
            "rsa",
            "-in",
            &sa_key.display().to_string(),
            "-pubout",
            "-out",
            &sa_pub.display().to_string(),
        ])?;

        // kube-apiserver
        let server = format!("https://127.0.0.1:{secure}");
        // Flags beyond the common set: the audit webhook's, and those a release needs.
        let mut extra_args = Vec::new();
        if let Some(a) = &audit {
            extra_args.extend([
                format!("--audit-policy-file={}", a.policy.display()),
                format!("--audit-webhook-config-file={}", a.kubeconfig.display()),
                // Tests wait for attributions: deliver each batch within a second (default
                // 30 s), and retry a receiver that is not up yet after a second (default 10 s).
                "--audit-webhook-batch-max-wait=1s".into(),
                "--audit-webhook-initial-backoff=1s".into(),
            ]);
        }
        if version.needs_no_endpoint_reconciler() {
            extra_args.push("--endpoint-reconciler-type=none".into());
        }
        let mut apiserver = Supervised::spawn(
            "kube-apiserver",
            &bins.kube_apiserver,
            &[
                format!("--etcd-servers={etcd_url}"),
                format!("--secure-port={secure}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--cert-dir={}", d.join("certs").display()),
                format!("--token-auth-file={}", tokens.display()),
                "--authorization-mode=RBAC".into(),
                format!("--service-account-key-file={}", sa_pub.display()),
                format!("--service-account-signing-key-file={}", sa_key.display()),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                // /16: a /24 fills after ~250 Services and the benchmarks create 1000.
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--disable-admission-plugins=ServiceAccount".into(),
            ]
            .into_iter()
            .chain(extra_args)
            .collect::<Vec<String>>(),
            &[],
            &d.join("kube-apiserver.log"),
        )?;
        wait_ready(
            "kube-apiserver",
            &mut apiserver,
            Duration::from_secs(90),
            || {
                http_get(&format!("{server}/readyz"), Some(&token))
                    .is_some_and(|b| b.trim() == "ok")
            },
        )?;

        // /readyz can answer before every built-in group is registered for discovery; wait for
        // the groups reckon and its tests use, or an early discovery sees only the core group.
        wait_ready(
            "kube-apiserver discovery",
            &mut apiserver,
            Duration::from_secs(60),
            || {
                http_get(&format!("{server}/apis"), Some(&token)).is_some_and(|body| {
                    DISCOVERY_GROUPS
                        .iter()
                        .all(|g| body.contains(&format!("\"name\": \"{g}\"")))
                })
            },
        )?;

        // The API server wrote its self-signed serving certificate (followed by its CA) into the
        // cert dir: pin it instead of skipping verification.
        let ca = d.join("certs/apiserver.crt");
        let kubeconfig = d.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(&server, &token, &ca))
            .map_err(io_err(&kubeconfig))?;
        if let Some(a) = &audit_dir {
            a.write_kubeconfigs(&server, &ca)?;
        }

        // kube-controller-manager: namespace deletion, garbage collection, ReplicaSets, and
        // with nodes the Pod lifecycle (node lifecycle, Jobs, DaemonSets).
        let mut kcm_args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--service-account-private-key-file={}", sa_key.display()),
            "--leader-elect=false".into(),
            "--controllers=*,-serviceaccount-token".into(),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
        ];
        if version.has_insecure_port_flag() {
            kcm_args.push("--port=0".into());
        }
        let controller_manager = Supervised::spawn(
            "kube-controller-manager",
            &bins.kube_controller_manager,
            &kcm_args,
            &[],
            &d.join("kube-controller-manager.log"),
        )?;

        let mut cp = Self {
            kwok: None,
            scheduler: None,
            controller_manager,
            apiserver,
            etcd,
            kubeconfig,
            server,
            token,
            version,
            audit_dir,
            dir,
        };
        if let (Some(scheduler), Some(kwok)) = (&bins.kube_scheduler, &bins.kwok) {
            cp.start_nodes(scheduler, kwok)?;
        }
        Ok(cp)
    }

    /// Starts kube-scheduler and KWOK, registers [`NODES`] simulated Nodes and waits until KWOK
    /// has made each Ready and holds its Lease, so a Pod created after this returns is scheduled and runs.
    fn start_nodes(&mut self, scheduler: &Path, kwok: &Path) -> Result<(), ControlPlaneError> {
        let d = self.dir.path().to_path_buf();
        let kubeconfig = self.kubeconfig.display().to_string();
        self.scheduler = Some(Supervised::spawn(
            "kube-scheduler",
            scheduler,
            &[
                format!("--kubeconfig={kubeconfig}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                // No health or metrics endpoint: nothing reads it, and a fixed port would
                // collide between parallel control planes.
                "--secure-port=0".into(),
            ],
            &[],
            &d.join("kube-scheduler.log"),
        )?);

        let stages = d.join("kwok-stages.yaml");
        std::fs::write(&stages, KWOK_STAGES).map_err(io_err(&stages))?;
        // KWOK reads ~/.kwok/kwok.yaml too when it exists; a HOME of its own keeps a user's
        // configuration out of the tests.
        let kwok_home = d.join("kwok-home");
        std::fs::create_dir_all(&kwok_home).map_err(io_err(&kwok_home))?;
        self.kwok = Some(Supervised::spawn(
            "kwok",
            kwok,
            &[
                format!("--kubeconfig={kubeconfig}"),
                format!("--config={}", stages.display()),
                "--manage-all-nodes=false".into(),
                format!("--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"),
                // Pod IPs are only written into status, never reached; a /16 leaves room for
                // the benchmarks' thousands of Pods.
                "--cidr=10.0.0.0/16".into(),
                // The node-heartbeat-with-lease stage leaves liveness to the Node's Lease, and the
                // kwok binary keeps none unless asked. Without one, kube-controller-manager saw
                // no heartbeat for its grace period (50 s), marked each Node Unknown and every Pod
                // on it not Ready for good: rollouts that passed in the first minute failed later.
                // A 40 s lease is renewed every 10 s, as a kubelet does.
                "--node-lease-duration-seconds=40".into(),
            ],
            &[("HOME".into(), kwok_home.display().to_string())],
            &d.join("kwok.log"),
        )?);

        let names: Vec<String> = (0..NODES).map(|i| format!("kwok-node-{i}")).collect();
        for name in &names {
            http_post(
                &format!("{}/api/v1/nodes", self.server),
                &self.token,
                &node_json(name),
            )
            .map_err(|detail| ControlPlaneError::CreateNode {
                name: name.clone(),
                detail,
            })?;
        }
        let (server, token) = (self.server.clone(), self.token.clone());
        let kwok = self.kwok.as_mut().expect("just started");
        wait_ready("kwok nodes", kwok, Duration::from_secs(60), || {
            // Ready, and alive by its Lease: a Node without one is marked Unknown later.
            names.iter().all(|n| {
                http_get(&format!("{server}/api/v1/nodes/{n}"), Some(&token))
                    .is_some_and(|b| node_is_ready(&b))
                    && http_get(
                        &format!(
                            "{server}/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{n}"
                        ),
                        Some(&token),
                    )
                    .is_some()
            })
        })?;
        // The scheduler has no readiness endpoint here (--secure-port=0); by now it has had the
        // nodes' wait to fail on a bad flag or a refused client, which is what this catches.
        let scheduler = self.scheduler.as_mut().expect("just started");
        if !scheduler.is_running() {
            return Err(ControlPlaneError::Exited {
                component: "kube-scheduler",
                log: scheduler.log_path().to_path_buf(),
                tail: scheduler.log_tail(30),
            });
        }
        Ok(())
    }

    /// The API server's release.
    pub fn version(&self) -> KubeVersion {
        self.version
    }

    /// Whether simulated nodes run here (kube-scheduler and KWOK were started), so Pods become
    /// Running and Ready; without them Pods stay Pending.
    pub fn has_nodes(&self) -> bool {
        self.kwok.is_some()
    }

    /// Path of a kubeconfig (admin, token auth) for this control plane.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server URL (`https://127.0.0.1:PORT`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The admin bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The directory holding data, certificates and the components' logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// With [`StartOptions::people_audit`]: the directory a test reads to receive the people's
    /// audit events and to write as one of them (`crate::audit`).
    pub fn audit_dir(&self) -> Option<&Path> {
        self.audit_dir.as_ref().map(AuditDir::path)
    }

    /// PIDs of the supervised components (watchdog processes), for diagnostics.
    pub fn pids(&self) -> Vec<u32> {
        [&self.etcd, &self.apiserver, &self.controller_manager]
            .into_iter()
            .chain(self.scheduler.as_ref())
            .chain(self.kwok.as_ref())
            .map(Supervised::pid)
            .collect()
    }

    /// Each component's name and process group (the watchdog's PID; the server is its member),
    /// for [`CONTROL_PLANE_ENV`]: a benchmark reads the control plane's CPU from `/proc` by
    /// process group instead of guessing processes from command lines.
    pub fn process_groups(&self) -> Vec<(&'static str, u32)> {
        [
            ("etcd", Some(&self.etcd)),
            ("kube-apiserver", Some(&self.apiserver)),
            ("kube-controller-manager", Some(&self.controller_manager)),
            ("kube-scheduler", self.scheduler.as_ref()),
            ("kwok", self.kwok.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, p)| p.map(|p| (name, p.pid())))
        .collect()
    }

    /// [`Self::process_groups`] as `NAME=PGID,...`, the value of [`CONTROL_PLANE_ENV`].
    pub fn process_groups_env(&self) -> String {
        self.process_groups()
            .iter()
            .map(|(name, pgid)| format!("{name}={pgid}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether every component started is still running.
    pub fn is_healthy(&mut self) -> bool {
        self.etcd.is_running()
            && self.apiserver.is_running()
            && self.controller_manager.is_running()
            && self.scheduler.as_mut().is_none_or(Supervised::is_running)
            && self.kwok.as_mut().is_none_or(Supervised::is_running)
    }
}

/// A kubeconfig with the admin token that trusts exactly the CA in `ca` (the API server's
/// throwaway self-signed certificate for this run).
pub fn kubeconfig_yaml(server: &str, token: &str, ca: &Path) -> String {
    let ca = ca.display();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: reckon-test
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: admin
  user:
    token: {token}
contexts:
- name: reckon-test
  context:
    cluster: reckon-test
    user: admin
current-context: reckon-test
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_names_server_and_token() {
        let y = kubeconfig_yaml("https://127.0.0.1:6443", "abc", Path::new("/x/ca.crt"));
        assert!(y.contains("certificate-authority: /x/ca.crt"));
        assert!(y.contains("server: https://127.0.0.1:6443"));
        assert!(y.contains("token: abc"));
        assert!(y.contains("current-context: reckon-test"));
    }

    #[test]
    fn missing_binaries_are_named_with_a_hint() {
        let empty = tempfile::tempdir().unwrap();
        let err = Binaries::locate_in(Some(empty.path().into()), empty.path(), "".as_ref())
            .unwrap_err()
            .to_string();
        assert!(err.contains("binary etcd not found"), "{err}");
        assert!(err.contains("provision-testenv.sh"), "{err}");
    }

    #[test]
    fn assets_dir_wins_over_cache() {
        let assets = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let cache_bin = cache.path().join("k8s-1.20.2/bin");
        std::fs::create_dir_all(&cache_bin).unwrap();
        for n in ["etcd", "kube-apiserver", "kube-controller-manager"] {
            std::fs::write(cache_bin.join(n), "").unwrap();
        }
        std::fs::write(assets.path().join("kube-apiserver"), "").unwrap();
        let b = Binaries::locate_in(Some(assets.path().into()), &cache_bin, "".as_ref()).unwrap();
        assert_eq!(b.kube_apiserver, assets.path().join("kube-apiserver"));
        assert_eq!(b.etcd, cache_bin.join("etcd"));
        // The v1.20 build has neither: no nodes, and no error for their absence.
        assert!(b.kube_scheduler.is_none() && b.kwok.is_none());
    }

    #[test]
    fn the_default_is_the_release_the_go_mod_pins() {
        let v = default_version();
        let parsed = KubeVersion::parse(&v).expect(&v);
        assert!(parsed.minor > 20, "{v}");
        assert_eq!(
            pinned_version("module m\n\nrequire (\n\tk8s.io/kubernetes v1.99.3\n)\n").as_deref(),
            Some("1.99.3")
        );
        assert_eq!(pinned_version("module m\n"), None);
    }

    #[test]
    fn scheduler_and_kwok_come_from_the_apiservers_directory_only() {
        let floor = tempfile::tempdir().unwrap();
        let newest = tempfile::tempdir().unwrap();
        for n in ["etcd", "kube-apiserver", "kube-controller-manager"] {
            std::fs::write(floor.path().join(n), "").unwrap();
        }
        for n in ["kube-scheduler", "kwok"] {
            std::fs::write(newest.path().join(n), "").unwrap();
        }
        let b = Binaries::locate_in(None, floor.path(), newest.path().as_os_str()).unwrap();
        assert_eq!(b.kube_apiserver, floor.path().join("kube-apiserver"));
        assert!(b.kube_scheduler.is_none() && b.kwok.is_none(), "{b:?}");
    }

    #[test]
    fn versions_parse_from_the_apiservers_answer() {
        let v = KubeVersion::parse("Kubernetes v1.37.2\n").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 37, 2));
        assert_eq!(v.to_string(), "v1.37.2");
        assert_eq!(
            KubeVersion::parse("v1.20.2-dirty").map(|v| v.minor),
            Some(20)
        );
        assert!(KubeVersion::parse("Kubernetes v0.0.0-master+$Format:%H$").is_none());
        assert!(KubeVersion::parse("").is_none());
    }

    #[test]
    fn controller_manager_port_flag_only_before_1_24() {
        assert!(
            KubeVersion::parse("v1.20.2")
                .unwrap()
                .has_insecure_port_flag()
        );
        assert!(
            !KubeVersion::parse("v1.37.2")
                .unwrap()
                .has_insecure_port_flag()
        );
    }

    #[test]
    fn node_readiness_reads_the_ready_condition() {
        let ready = r#"{"status":{"conditions":[{"type":"MemoryPressure","status":"False"},{"type":"Ready","status":"True"}]}}"#;
        let not_ready = r#"{"status":{"conditions":[{"type":"Ready","status":"Unknown"}]}}"#;
        assert!(node_is_ready(ready));
        assert!(!node_is_ready(not_ready));
        assert!(!node_is_ready(r#"{"status":{}}"#));
        assert!(!node_is_ready("not json"));
    }

    #[test]
    fn stages_name_every_negative_case() {
        for a in [
            "reckon.test/never-ready",
            "reckon.test/crash-loop",
            "reckon.test/fail",
            "reckon.test/ready-after",
        ] {
            assert!(KWOK_STAGES.contains(a), "{a}");
        }
        assert!(node_json("n").contains(KWOK_NODE_ANNOTATION));
    }
}
