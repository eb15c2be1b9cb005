//! Owns the lifetime of the server processes the Git harness starts: each runs in its own process
//! group and is killed and reaped by PID when its guard drops (also while a test panics).

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Error, Result, io_err};

/// A running server process. git daemon and sshd fork a child per connection; killing only the
/// parent would leave those behind, so the guard kills the whole process group it created.
#[derive(Debug)]
pub struct ProcessGuard {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ProcessGuard {
    /// Spawns `cmd` in a new process group with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        let out = File::create(log).map_err(io_err(log))?;
        let err = out.try_clone().map_err(io_err(log))?;
        let command = format!("{cmd:?}");
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Spawn { command, source })?;
        Ok(Self {
            name: name.into(),
            child,
            log: log.into(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's log so far (stdout and stderr), for error messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the process accepts TCP connections on `port`, failing early (with its log) if it
    /// exits: a port taken between choosing and binding shows up here as an exit, not a hang.
    pub fn wait_for_port(&mut self, port: u16, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
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

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            // The group id is the leader's pid (process_group(0)); ESRCH just means it already died.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
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
