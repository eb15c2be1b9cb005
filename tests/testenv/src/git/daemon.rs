//! Owns a `git daemon` serving a directory over `git://` on a loopback port.

use std::path::Path;
use std::process::Command;

use super::process::{ProcessGuard, start_on_free_port};
use super::{GIT_HINT, Result, require_binary};

/// A running `git daemon`; stopped (with its per-connection children) on drop.
#[derive(Debug)]
pub struct GitDaemon {
    port: u16,
    process: ProcessGuard,
    _logdir: tempfile::TempDir,
}

impl GitDaemon {
    /// Serves every repository under `base_path` (`git://127.0.0.1:PORT/<name>`).
    pub fn start(base_path: &Path) -> Result<Self> {
        require_binary("git", GIT_HINT)?;
        let logdir = tempfile::tempdir().map_err(super::io_err(std::env::temp_dir()))?;
        let log = logdir.path().join("git-daemon.log");
        let (process, port) = start_on_free_port("git daemon", &log, |port| {
            let mut cmd = Command::new("git");
            cmd.env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .arg("daemon")
                .arg("--reuseaddr")
                .arg(format!("--base-path={}", base_path.display()))
                .arg("--export-all")
                .arg("--informative-errors")
                .arg("--log-destination=stderr")
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={port}"));
            cmd
        })?;
        Ok(Self {
            port,
            process,
            _logdir: logdir,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `git://` URL of `name` under the base path.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}
