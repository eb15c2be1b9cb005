//! Owns the Git half of the test environment: real repositories with real commits ([`repo`]) and
//! real Git servers on loopback ([`daemon`], [`http`], [`ssh`]), each stopped by PID on drop.
//!
//! Fixtures are built by shelling out to the `git` CLI on purpose: it is the reference
//! implementation, so what reckon reads through gix is checked against what git itself wrote.

pub mod charts;
pub mod daemon;
pub mod http;
pub mod oci;
pub mod process;
pub mod proxy;
pub mod repo;
pub mod serve;
pub mod ssh;

use std::path::{Path, PathBuf};

pub use charts::ChartRepoServer;
pub use daemon::GitDaemon;
pub use http::{HttpAuth, HttpGitServer, HttpOptions, TestCa};
pub use oci::{CosignKey, OciRegistry, SignatureFormat};
pub use proxy::HttpProxy;
pub use repo::{CommitBuilder, Fixture, GpgKey, Person, SshKey};
pub use ssh::SshServer;

/// Everything that can go wrong while building fixtures or running servers. One enum for the whole
/// harness: its submodules are parts of one tool and share failure modes (spawning, waiting, I/O).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{binary}` is not installed: {hint}")]
    MissingBinary { binary: String, hint: &'static str },
    #[error("could not start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{name} exited before it was ready; its log:\n{log}")]
    ServerExited { name: String, log: String },
    #[error(
        "{name} did not accept connections on 127.0.0.1:{port} within {timeout:?}; its log:\n{log}"
    )]
    NotReady {
        name: String,
        port: u16,
        timeout: std::time::Duration,
        log: String,
    },
    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("unexpected output from {command}: {detail}")]
    UnexpectedOutput { command: String, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.as_ref().to_path_buf();
    move |source| Error::Io { path, source }
}

/// Checks that `binary` (a name on PATH or an absolute path) exists, so a missing package is one
/// clear error naming the package instead of an obscure spawn failure deep in a test.
pub fn require_binary(binary: &str, hint: &'static str) -> Result<PathBuf> {
    crate::process::find_binary(binary, binary, hint).map_err(|_| Error::MissingBinary {
        binary: binary.into(),
        hint,
    })
}

pub(crate) const GIT_HINT: &str =
    "install Debian's `git` package (scripts/provision-testenv.sh does: apt-get install -y git)";
pub(crate) const SSHD_HINT: &str = "install Debian's `openssh-server` package (scripts/provision-testenv.sh does: apt-get install -y openssh-server)";
pub(crate) const SSH_HINT: &str = "install Debian's `openssh-client` package (scripts/provision-testenv.sh does: apt-get install -y openssh-client)";
pub(crate) const GPG_HINT: &str = "install Debian's `gpg` package (apt-get install -y gpg)";

/// Runs a prepared command to completion and returns its stdout, or an error carrying stderr.
pub(crate) fn run(cmd: &mut std::process::Command) -> Result<Vec<u8>> {
    let command = format!("{cmd:?}");
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::CommandFailed {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out.stdout)
}
