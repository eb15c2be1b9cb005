//! Owns the OCI registry test server: the CNCF distribution registry (`registry`, built from Go
//! modules beside the control plane, `tests/testenv/k8s/registry/`) on a loopback port, with its
//! storage in a temporary directory, optionally over TLS from a fresh [`TestCa`] and behind
//! htpasswd basic auth; charts are pushed to it with the real `helm push` and signed with the real
//! `cosign sign` (keys from `cosign generate-key-pair`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::http::{HttpAuth, TestCa};
use super::process::{ProcessGuard, free_port};
use super::{Error, Result, io_err};

const REGISTRY_HINT: &str =
    "the OCI registry is built by scripts/provision-testenv.sh (tests/testenv/k8s/registry)";
const COSIGN_HINT: &str =
    "cosign is built by scripts/provision-testenv.sh (tests/testenv/k8s/cosign)";
const HELM_HINT: &str = "helm is built by scripts/provision-testenv.sh (tests/testenv/k8s/helm)";

/// A running OCI registry; stopped (its process group killed) on drop.
pub struct OciRegistry {
    _process: ProcessGuard,
    _dir: tempfile::TempDir,
    port: u16,
    ca: Option<TestCa>,
    auth: Option<HttpAuth>,
    /// Helm's registry login file and caches, private to this registry's pushes.
    helm_home: PathBuf,
}

impl OciRegistry {
    /// Starts a registry (over TLS when `tls`), demanding `auth` when given.
    pub fn start(tls: bool, auth: Option<HttpAuth>) -> Result<Self> {
        let binary = super::require_binary("registry", REGISTRY_HINT)?;
        let dir = tempfile::tempdir().map_err(io_err("registry temp dir"))?;
        let ca = if tls { Some(TestCa::generate()?) } else { None };
        let port = free_port()?;
        let config = config(dir.path(), port, ca.as_ref(), auth.as_ref())?;
        let path = dir.path().join("config.yml");
        std::fs::write(&path, config).map_err(io_err(&path))?;
        let mut cmd = Command::new(binary);
        cmd.arg("serve").arg(&path);
        let mut process = ProcessGuard::spawn("registry", cmd, &dir.path().join("registry.log"))?;
        process.wait_for_port(port, Duration::from_secs(30))?;
        let helm_home = dir.path().join("helm");
        Ok(Self {
            _process: process,
            port,
            ca,
            auth,
            helm_home,
            _dir: dir,
        })
    }

    /// `host:port` of the registry.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The `oci://` URL of a repository path in this registry (`charts` → `oci://HOST/charts`).
    pub fn url(&self, path: &str) -> String {
        format!("oci://{}/{path}", self.host())
    }

    pub fn ca(&self) -> Option<&TestCa> {
        self.ca.as_ref()
    }

    /// The registry's filesystem storage (`docker/registry/v2/...`), for tests that tamper with it.
    pub fn storage(&self) -> PathBuf {
        self._dir.path().join("storage")
    }

    /// Pushes a packaged chart (`helm package`'s `.tgz`) under `oci://HOST/<path>/<chart name>`
    /// with the real `helm push`; returns the manifest digest Helm reports.
    pub fn push(&self, archive: &Path, path: &str) -> Result<String> {
        let helm = super::require_binary("helm", HELM_HINT)?;
        let mut cmd = Command::new(helm);
        cmd.arg("push").arg(archive).arg(self.url(path));
        match &self.ca {
            Some(ca) => cmd.arg("--ca-file").arg(ca.bundle_path()),
            None => cmd.arg("--plain-http"),
        };
        if let Some(auth) = &self.auth {
            cmd.args(["--username", &auth.username, "--password", &auth.password]);
        }
        for (name, dir) in [
            ("HELM_CACHE_HOME", "cache"),
            ("HELM_CONFIG_HOME", "config"),
            ("HELM_DATA_HOME", "data"),
        ] {
            cmd.env(name, self.helm_home.join(dir));
        }
        let out = cmd.output().map_err(|source| Error::Spawn {
            command: "helm push".into(),
            source,
        })?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            return Err(Error::CommandFailed {
                command: format!("helm push {} {}", archive.display(), self.url(path)),
                status: out.status,
                stderr: text,
            });
        }
        // "Pushed: HOST/charts/web:1.0.0\nDigest: sha256:..."
        text.lines()
            .find_map(|line| line.strip_prefix("Digest: "))
            .map(|d| d.trim().to_string())
            .ok_or_else(|| Error::UnexpectedOutput {
                command: "helm push".into(),
                detail: text.clone(),
            })
    }
}

impl OciRegistry {
    /// Signs the manifest `digest` of `repository` (`charts/web`) with the real `cosign sign`,
    /// offline (no transparency log, no signing config fetched), in `format`.
    pub fn sign(
        &self,
        key: &CosignKey,
        repository: &str,
        digest: &str,
        format: SignatureFormat,
    ) -> Result<()> {
        let cosign = super::require_binary("cosign", COSIGN_HINT)?;
        let mut cmd = Command::new(cosign);
        cmd.arg("sign")
            .arg("--key")
            .arg(key.private_key())
            .args(["--tlog-upload=false", "--use-signing-config=false", "-y"])
            .env("COSIGN_PASSWORD", "")
            // cosign keeps its TUF cache and registry logins under HOME.
            .env("HOME", self.helm_home.join("cosign-home"));
        if format == SignatureFormat::SimpleSigning {
            cmd.arg("--new-bundle-format=false");
        }
        match &self.ca {
            Some(ca) => cmd.arg("--registry-cacert").arg(ca.bundle_path()),
            None => cmd.arg("--allow-http-registry"),
        };
        if let Some(auth) = &self.auth {
            cmd.args(["--registry-username", &auth.username]);
            cmd.args(["--registry-password", &auth.password]);
        }
        cmd.arg(format!("{}/{repository}@{digest}", self.host()));
        run(cmd, "cosign sign").map(|_| ())
    }
}

/// How cosign stores a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureFormat {
    /// A Sigstore bundle as an OCI referrer (cosign 3's default).
    Bundle,
    /// A simple-signing payload under the `sha256-<hex>.sig` tag (cosign 2's, and 3's with
    /// `--new-bundle-format=false`).
    SimpleSigning,
}

/// A cosign key pair made by the real `cosign generate-key-pair` (empty password).
pub struct CosignKey {
    dir: tempfile::TempDir,
}

impl CosignKey {
    pub fn generate() -> Result<Self> {
        let cosign = super::require_binary("cosign", COSIGN_HINT)?;
        let dir = tempfile::tempdir().map_err(io_err("cosign key dir"))?;
        let mut cmd = Command::new(cosign);
        cmd.arg("generate-key-pair")
            .current_dir(dir.path())
            .env("COSIGN_PASSWORD", "");
        run(cmd, "cosign generate-key-pair")?;
        Ok(Self { dir })
    }

    /// `cosign.pub`: the PEM public key an App trusts.
    pub fn public_key(&self) -> PathBuf {
        self.dir.path().join("cosign.pub")
    }

    fn private_key(&self) -> PathBuf {
        self.dir.path().join("cosign.key")
    }
}

fn run(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd.output().map_err(|source| Error::Spawn {
        command: what.into(),
        source,
    })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(Error::CommandFailed {
            command: what.into(),
            status: out.status,
            stderr: text,
        });
    }
    Ok(text)
}

/// The registry's configuration: filesystem storage under `dir`, loopback only, deletes
/// disabled, no telemetry or debug server.
fn config(dir: &Path, port: u16, ca: Option<&TestCa>, auth: Option<&HttpAuth>) -> Result<String> {
    let mut config = format!(
        "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.join("storage").display()
    );
    if let Some(ca) = ca {
        let (cert, key) = ca.server_pem_files()?;
        config.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        ));
    }
    if let Some(auth) = auth {
        // The registry's htpasswd reader takes bcrypt entries only.
        let hash = bcrypt::hash(&auth.password, 4).map_err(|e| Error::UnexpectedOutput {
            command: "bcrypt".into(),
            detail: e.to_string(),
        })?;
        let file = dir.join("htpasswd");
        std::fs::write(&file, format!("{}:{hash}\n", auth.username)).map_err(io_err(&file))?;
        config.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: reckon-test\n    path: {}\n",
            file.display()
        ));
    }
    Ok(config)
}
