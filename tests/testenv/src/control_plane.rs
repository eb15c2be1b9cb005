//! Owns the local Kubernetes control plane used by reckon's tests and demo: etcd,
//! kube-apiserver and kube-controller-manager (v1.20.2 built from Debian's source package by
//! `scripts/provision-testenv.sh`), each a supervised process on loopback ports, plus the
//! kubeconfig that reaches it.
//!
//! Binaries are found, in order: `KUBEBUILDER_ASSETS` (the envtest convention), then the cache
//! `$RECKON_CACHE_DIR/k8s-1.20.2/bin` (default `~/.cache/reckon`), then PATH.

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
            &cache_dir(),
            &std::env::var_os("PATH").unwrap_or_default(),
        )
    }

    /// Finds every binary in `assets`, then the cache, then the directories of `path`.
    pub fn locate_in(
        assets: Option<PathBuf>,
        cache: &Path,
        path: &std::ffi::OsStr,
    ) -> Result<Self, ControlPlaneError> {
        let mut dirs: Vec<PathBuf> = assets.into_iter().collect();
        dirs.push(cache.join("k8s-1.20.2/bin"));
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
        Ok(Self {
            etcd: find("etcd")?,
            kube_apiserver: find("kube-apiserver")?,
            kube_controller_manager: find("kube-controller-manager")?,
        })
    }
}

/// A running control plane. Dropping it stops the controller manager, the API server and etcd
/// (in that order) by PID and removes its data directory.
pub struct ControlPlane {
    // Field order is drop order: dependents stop before what they depend on.
    controller_manager: Supervised,
    apiserver: Supervised,
    etcd: Supervised,
    kubeconfig: PathBuf,
    server: String,
    token: String,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server", &self.server)
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

        // Credentials: a static admin token and a service account key pair.
        let token = random_token();
        let tokens = d.join("tokens.csv");
        let mut lines = format!("{token},admin,1,system:masters\n");
        for l in &options.extra_tokens {
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
        let mut audit_args = Vec::new();
        if let Some(a) = &options.audit {
            audit_args.extend([
                format!("--audit-policy-file={}", a.policy.display()),
                format!("--audit-webhook-config-file={}", a.kubeconfig.display()),
                // Tests wait for attributions: deliver each batch within a second (default
                // 30 s), and retry a receiver that is not up yet after a second (default 10 s).
                "--audit-webhook-batch-max-wait=1s".into(),
                "--audit-webhook-initial-backoff=1s".into(),
            ]);
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
            .chain(audit_args)
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

        // kube-controller-manager: namespace deletion, garbage collection, ReplicaSets.
        let controller_manager = Supervised::spawn(
            "kube-controller-manager",
            &bins.kube_controller_manager,
            &[
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--service-account-private-key-file={}", sa_key.display()),
                "--leader-elect=false".into(),
                "--controllers=*,-serviceaccount-token".into(),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
                "--port=0".into(),
            ],
            &[],
            &d.join("kube-controller-manager.log"),
        )?;

        Ok(Self {
            controller_manager,
            apiserver,
            etcd,
            kubeconfig,
            server,
            token,
            dir,
        })
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

    /// PIDs of the supervised components (watchdog processes), for diagnostics.
    pub fn pids(&self) -> [u32; 3] {
        [
            self.etcd.pid(),
            self.apiserver.pid(),
            self.controller_manager.pid(),
        ]
    }

    /// Whether all three components are still running.
    pub fn is_healthy(&mut self) -> bool {
        self.etcd.is_running()
            && self.apiserver.is_running()
            && self.controller_manager.is_running()
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
        let b = Binaries::locate_in(Some(assets.path().into()), cache.path(), "".as_ref()).unwrap();
        assert_eq!(b.kube_apiserver, assets.path().join("kube-apiserver"));
        assert_eq!(b.etcd, cache_bin.join("etcd"));
    }
}
