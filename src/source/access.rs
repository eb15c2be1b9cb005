//! Owns how reckon reaches a remote: HTTP credentials (read from an environment variable or a file
//! at fetch time, never from the command line), a custom CA bundle, and the `ssh` command line that
//! enforces known_hosts. Turns them into gix configuration overrides, a credentials callback and
//! reqwest client settings.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How to reach one remote. The default is anonymous with the system's trust store and ssh defaults
/// (host keys still strictly checked).
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub http: Option<HttpCredentials>,
    /// A PEM bundle that replaces the system trust store for https remotes (like `http.sslCAInfo`).
    pub ca_bundle: Option<PathBuf>,
    pub ssh: Option<SshAccess>,
}

impl Access {
    /// Who the remote sees, as far as reckon can tell without reading a secret: the HTTP user
    /// and where its secret comes from, the ssh key and known_hosts files, the CA bundle.
    /// Empty when anonymous with the defaults. Keys the mirror (see
    /// [`super::mirror::cache_dir_for`]).
    pub fn identity(&self) -> String {
        let mut parts = Vec::new();
        if let Some(h) = &self.http {
            let secret = match &h.password {
                SecretSource::Env(v) => format!("env:{v}"),
                SecretSource::File(p) => format!("file:{}", p.display()),
            };
            parts.push(format!("http:{}:{secret}", h.username));
        }
        if let Some(s) = &self.ssh {
            let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
            parts.push(format!(
                "ssh:{}:{}:{}",
                path(&s.private_key).unwrap_or_default(),
                path(&s.known_hosts).unwrap_or_default(),
                s.options.join(",")
            ));
        }
        if let Some(ca) = &self.ca_bundle {
            parts.push(format!("ca:{}", ca.display()));
        }
        parts.join(";")
    }
}

/// HTTP basic credentials; a token is a password with a conventional user name.
#[derive(Debug, Clone)]
pub struct HttpCredentials {
    pub username: String,
    pub password: SecretSource,
}

impl HttpCredentials {
    /// A token as GitHub and Gitea take it (`x-access-token:<token>`); GitLab accepts any user name
    /// with a personal access token.
    pub fn token(secret: SecretSource) -> Self {
        Self {
            username: "x-access-token".into(),
            password: secret,
        }
    }
}

/// Where a secret lives. Read on every fetch, so a rotated secret is picked up without a restart,
/// and never placed on a command line (visible in /proc) or in a URL (visible in logs).
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Env(var) => write!(f, "Env({var})"),
            SecretSource::File(path) => write!(f, "File({})", path.display()),
        }
    }
}

impl SecretSource {
    /// The secret; a trailing newline in a file (as editors and `kubectl create secret` leave it)
    /// is not part of it.
    pub fn read(&self) -> Result<String, String> {
        match self {
            SecretSource::Env(var) => {
                std::env::var(var).map_err(|e| format!("environment variable {var}: {e}"))
            }
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| format!("secret file {}: {e}", path.display())),
        }
    }
}

/// SSH client settings. Host keys are always checked strictly: an unknown or changed host key fails
/// the fetch, it is never accepted silently.
#[derive(Debug, Clone, Default)]
pub struct SshAccess {
    pub private_key: Option<PathBuf>,
    /// The only known_hosts file consulted; `None` means ssh's defaults (still strict).
    pub known_hosts: Option<PathBuf>,
    /// Further `-o` options, e.g. `Port=2222` for an scp-style URL (which cannot carry a port).
    pub options: Vec<String>,
}

/// Quotes `s` for the POSIX shell that runs `core.sshCommand`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Access {
    /// The `ssh` command gix runs. `log` receives ssh's own messages (`-E`), which is how a rejected
    /// host key or public key is told apart from an unreachable host: gix does not surface ssh's
    /// stderr in its errors.
    pub(crate) fn ssh_command(&self, log: &Path) -> String {
        // ConnectTimeout: a remote that drops packets must fail the fetch in bounded time, not
        // after the kernel's TCP timeout; ServerAlive* does the same for a connection that stalls.
        let mut cmd = String::from(
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=20 \
             -o ServerAliveInterval=15 -o ServerAliveCountMax=4",
        );
        if let Some(ssh) = &self.ssh {
            // The agent's ssh behaviour must not depend on whatever ~/.ssh/config says.
            cmd.insert_str(3, " -F /dev/null");
            if let Some(kh) = &ssh.known_hosts {
                cmd.push_str(&format!(
                    " -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null",
                    shell_quote(&kh.display().to_string())
                ));
            }
            if let Some(key) = &ssh.private_key {
                cmd.push_str(&format!(
                    " -i {} -o IdentitiesOnly=yes",
                    shell_quote(&key.display().to_string())
                ));
            }
            for opt in &ssh.options {
                cmd.push_str(&format!(" -o {}", shell_quote(opt)));
            }
        }
        cmd.push_str(&format!(" -E {}", shell_quote(&log.display().to_string())));
        cmd
    }

    /// In-memory configuration for the cache repository.
    pub(crate) fn config_overrides(&self, ssh_log: &Path) -> Vec<String> {
        vec![
            format!("core.sshCommand={}", self.ssh_command(ssh_log)),
            "ssh.variant=ssh".into(),
            // Never prompt: reckon runs unattended.
            "core.askPass=".into(),
            "credential.helper=".into(),
        ]
    }

    /// Reads the HTTP password now, so a missing secret is its own clear error before connecting.
    pub(crate) fn resolved_http(&self) -> Result<Option<(String, String)>, String> {
        match &self.http {
            None => Ok(None),
            Some(c) => Ok(Some((c.username.clone(), c.password.read()?))),
        }
    }

    /// reqwest settings for gix's HTTP transport: every request ends within `timeout` (gix's
    /// reqwest backend has no timeout of its own, so a server that stalls would hold the fetch,
    /// and the mirror's lock, for ever), and gix's backend ignores `http.sslCAInfo`, so a CA
    /// bundle is installed through the backend's client hook too.
    pub(crate) fn http_backend(&self, timeout: std::time::Duration) -> Result<HttpBackend, String> {
        let certs = match &self.ca_bundle {
            None => None,
            Some(bundle) => {
                let pem = std::fs::read(bundle)
                    .map_err(|e| format!("CA bundle {}: {e}", bundle.display()))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| format!("CA bundle {}: {e}", bundle.display()))?;
                if certs.is_empty() {
                    return Err(format!(
                        "CA bundle {} holds no certificate",
                        bundle.display()
                    ));
                }
                Some(certs)
            }
        };
        let backend = gix::protocol::transport::client::blocking_io::http::reqwest::Options {
            configure_client: Some(Box::new(move |builder| {
                let builder = builder.timeout(timeout);
                Ok(match &certs {
                    Some(certs) => builder.tls_certs_only(certs.clone()),
                    None => builder,
                })
            })),
            configure_request: None,
        };
        Ok(Arc::new(Mutex::new(backend)))
    }
}

pub(crate) type HttpBackend =
    Arc<Mutex<gix::protocol::transport::client::blocking_io::http::reqwest::Options>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_command_enforces_host_keys_and_quotes_paths() {
        let access = Access {
            ssh: Some(SshAccess {
                private_key: Some("/k/it's key".into()),
                known_hosts: Some("/k/known_hosts".into()),
                options: vec!["Port=2222".into()],
            }),
            ..Default::default()
        };
        let cmd = access.ssh_command(Path::new("/tmp/log"));
        assert_eq!(
            cmd,
            "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=20 \
             -o ServerAliveInterval=15 -o ServerAliveCountMax=4 -o UserKnownHostsFile='/k/known_hosts' -o GlobalKnownHostsFile=/dev/null \
             -i '/k/it'\\''s key' -o IdentitiesOnly=yes -o 'Port=2222' -E '/tmp/log'"
        );
        let default = Access::default().ssh_command(Path::new("/l"));
        assert_eq!(
            default,
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=20 \
             -o ServerAliveInterval=15 -o ServerAliveCountMax=4 -E '/l'"
        );
    }

    #[test]
    fn file_secrets_lose_their_trailing_newline_and_env_secrets_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "t0ken\n").unwrap();
        assert_eq!(SecretSource::File(file).read().unwrap(), "t0ken");
        let missing = SecretSource::Env("RECKON_TEST_SURELY_UNSET_VAR".into()).read();
        assert!(
            missing
                .unwrap_err()
                .contains("RECKON_TEST_SURELY_UNSET_VAR")
        );
    }
}
