//! Owns starting the Git harness's servers on free ports and waiting until they accept
//! connections; their lifetime is the crate's supervised-process guard (see `crate::process`).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{ProcessError, Supervised};

use super::{Error, Result, io_err};

/// A running server process: the crate's [`Supervised`] guard (own process group, watchdog bound
/// to the test process, group killed by PID on drop — git daemon and sshd fork per connection)
/// plus readiness waiting on a TCP port.
#[derive(Debug)]
pub struct ProcessGuard {
    name: String,
    process: Supervised,
}

impl ProcessGuard {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, cmd: Command, log: &Path) -> Result<Self> {
        let command = format!("{cmd:?}");
        let process = Supervised::spawn_command(name, cmd, log).map_err(|e| match e {
            ProcessError::Spawn { source, .. } => Error::Spawn { command, source },
            ProcessError::Log { path, source } => Error::Io { path, source },
            ProcessError::MissingBinary { binary, .. } => Error::MissingBinary {
                binary,
                hint: "install it (scripts/provision-testenv.sh installs the harness's packages)",
            },
        })?;
        Ok(Self {
            name: name.into(),
            process,
        })
    }

    /// The process group id of the server (its watchdog's PID).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The server's log so far (stdout and stderr), for error messages.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Waits until the process accepts TCP connections on `port`, failing early (with its log) if it
    /// exits: a port taken between choosing and binding shows up here as an exit, not a hang.
    pub fn wait_for_port(&mut self, port: u16, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            if !self.process.is_running() {
                return Err(Error::ServerExited {
                    name: self.name.clone(),
                    log: self.log(),
                });
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    name: self.name.clone(),
                    port,
                    timeout,
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A loopback port that was free a moment ago. Servers that bind it themselves can still lose a
/// race for it; [`ProcessGuard::wait_for_port`] turns that into an error and callers retry.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err("127.0.0.1:0"))?;
    let port = listener.local_addr().map_err(io_err("127.0.0.1:0"))?.port();
    Ok(port)
}

/// Starts a server on a fresh free port, retrying a few times when the port was taken in between.
pub(crate) fn start_on_free_port(
    name: &str,
    log: &Path,
    mut command_for_port: impl FnMut(u16) -> Command,
) -> Result<(ProcessGuard, u16)> {
    let mut last = None;
    for _ in 0..5 {
        let port = free_port()?;
        let mut guard = ProcessGuard::spawn(name, command_for_port(port), log)?;
        match guard.wait_for_port(port, Duration::from_secs(10)) {
            Ok(()) => return Ok((guard, port)),
            Err(e @ Error::ServerExited { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("loop ran at least once"))
}
