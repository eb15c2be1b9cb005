//! Owns the lifetime of every server process the harness starts.
//!
//! Each process runs in a process group of its own under a tiny shell watchdog that stops the
//! group when the owning process (the test binary or the `reckon-testenv` supervisor) disappears,
//! even through SIGKILL or a test timeout, so no etcd or sshd outlives the run. The guard's Drop
//! stops the group by PID (TERM, then KILL), which also catches per-connection forks.

use rustix::process::{Pid, Signal, kill_process_group};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Errors starting or stopping a supervised process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{name}: binary {binary} not found{hint}")]
    MissingBinary {
        name: String,
        binary: String,
        hint: String,
    },
    #[error("starting {name} ({binary}): {source}")]
    Spawn {
        name: String,
        binary: String,
        source: std::io::Error,
    },
    #[error("creating log file {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A running server process, stopped on drop.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    watchdog: Child,
    log: PathBuf,
}

/// Resolves `binary` to an executable path: an absolute/relative path is taken as is, a bare name
/// is looked up on PATH. `hint` is appended to the error to say how to install it.
pub fn find_binary(name: &str, binary: &str, hint: &str) -> Result<PathBuf, ProcessError> {
    let missing = || ProcessError::MissingBinary {
        name: name.into(),
        binary: binary.into(),
        hint: if hint.is_empty() {
            String::new()
        } else {
            format!(" ({hint})")
        },
    };
    let p = Path::new(binary);
    if p.is_absolute() || p.components().count() > 1 {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(missing())
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(binary))
        .find(|c| c.is_file())
        .ok_or_else(missing)
}

/// The watchdog script. It runs as the leader of a new process group holding the server and
/// everything the server forks (git daemon and sshd fork per connection). It polls the owner and
/// the server; when the owner is gone, the server exited, or it is told to stop, it stops the
/// whole group: TERM, then KILL after 5 s for anything that ignores TERM. When the owner died
/// (no destructor ran) it also removes the orphan directory, if one was given.
const WATCHDOG: &str = r#"
owner="$1"; orphan_dir="$2"; shift 2
"$@" &
child=$!
orphaned=
cleanup() {
  trap '' TERM INT HUP
  kill -TERM -- -$$ 2>/dev/null
  for _ in $(seq 50); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
  if [ -n "$orphaned" ] && [ -n "$orphan_dir" ]; then rm -rf -- "$orphan_dir"; fi
  kill -KILL -- -$$ 2>/dev/null
  exit 0
}
trap cleanup TERM INT HUP
while kill -0 "$owner" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5 & wait $!; done
kill -0 "$owner" 2>/dev/null || orphaned=1
cleanup
"#;

impl Supervised {
    /// Starts `program args...` with `envs` added to the environment; see [`Self::spawn_command`].
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(String, String)],
        log: &Path,
    ) -> Result<Self, ProcessError> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Self::spawn_command(name, cmd, log)
    }

    /// Like [`Self::spawn`], and if the owning process dies without stopping the server (a
    /// static that is never dropped, a SIGKILL), the watchdog also removes `orphan_dir` — the
    /// server's data directory — after the server stopped. A normal stop leaves it to the owner.
    pub fn spawn_owning_dir(
        name: &str,
        program: &Path,
        args: &[String],
        orphan_dir: &Path,
        log: &Path,
    ) -> Result<Self, ProcessError> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        Self::spawn_inner(name, cmd, Some(orphan_dir), log)
    }

    /// Starts a prepared command (program, arguments, environment and working directory are
    /// taken from it) with stdout and stderr appended to `log`, in a process group of its own
    /// under a watchdog bound to the current process.
    pub fn spawn_command(name: &str, server: Command, log: &Path) -> Result<Self, ProcessError> {
        Self::spawn_inner(name, server, None, log)
    }

    fn spawn_inner(
        name: &str,
        server: Command,
        orphan_dir: Option<&Path>,
        log: &Path,
    ) -> Result<Self, ProcessError> {
        let logfile = File::create(log).map_err(|source| ProcessError::Log {
            path: log.to_path_buf(),
            source,
        })?;
        let errfile = logfile.try_clone().map_err(|source| ProcessError::Log {
            path: log.to_path_buf(),
            source,
        })?;
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(orphan_dir.map(Path::as_os_str).unwrap_or_default())
            .arg(server.get_program())
            .args(server.get_args())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(logfile)
            .stderr(errfile);
        for (k, v) in server.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        if let Some(dir) = server.get_current_dir() {
            cmd.current_dir(dir);
        }
        let watchdog = cmd.spawn().map_err(|source| ProcessError::Spawn {
            name: name.into(),
            binary: server.get_program().to_string_lossy().into_owned(),
            source,
        })?;
        Ok(Self {
            name: name.into(),
            watchdog,
            log: log.to_path_buf(),
        })
    }

    /// The watchdog's PID, which is also the process group id of the server and its children.
    pub fn pid(&self) -> u32 {
        self.watchdog.id()
    }

    /// The file holding the server's output.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The server's whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the server's log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether the server is still running (the watchdog exits as soon as it stops).
    pub fn is_running(&mut self) -> bool {
        matches!(self.watchdog.try_wait(), Ok(None))
    }

    fn signal_group(&self, signal: Signal) {
        if let Some(pgid) = Pid::from_raw(self.watchdog.id() as i32) {
            // ESRCH only means the group is already gone.
            let _ = kill_process_group(pgid, signal);
        }
    }

    /// Stops the server and everything it forked: TERM to the process group, KILL to whatever
    /// is left after 10 s, then reaps the watchdog.
    pub fn stop(&mut self) {
        if self.is_running() {
            self.signal_group(Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.is_running() {
                eprintln!("testenv: {} did not stop within 10 s; killing", self.name);
            }
        }
        // Forked children can outlive the watchdog; the group kill catches them either way.
        self.signal_group(Signal::KILL);
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_is_a_clear_error() {
        let err = find_binary(
            "thing",
            "definitely-not-a-binary-xyz",
            "apt-get install thing",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("definitely-not-a-binary-xyz") && msg.contains("apt-get install thing")
        );
    }

    #[test]
    fn drop_stops_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let sleep = find_binary("sleep", "sleep", "").unwrap();
        let pidfile = dir.path().join("pid");
        // The server writes its own PID so we can check it is gone after drop.
        let sh = find_binary("sh", "sh", "").unwrap();
        let script = format!(
            "echo $$ > {}; exec {} 300",
            pidfile.display(),
            sleep.display()
        );
        let mut p = Supervised::spawn(
            "sleeper",
            &sh,
            &["-c".into(), script],
            &[],
            &dir.path().join("log"),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
            assert!(Instant::now() < deadline, "server never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .to_string();
        assert!(p.is_running());
        drop(p);
        assert!(dies(&pid), "server pid {pid} survived the guard's drop");
    }

    /// Polls until `path` holds a PID.
    fn read_pid(path: &Path) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(s) = std::fs::read_to_string(path)
                && !s.trim().is_empty()
            {
                return s.trim().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "{} never written",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn alive(pid: &str) -> bool {
        Command::new("kill")
            .args(["-0", pid])
            .status()
            .unwrap()
            .success()
    }

    /// Whether `pid` is gone within 5 s (a KILL is delivered asynchronously).
    fn dies(pid: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    #[test]
    fn drop_stops_what_the_server_forked() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        // Like sshd or git daemon: the server forks a worker and keeps running itself.
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let p = Supervised::spawn(
            "forker",
            Path::new("/bin/sh"),
            &["-c".into(), script],
            &[],
            &dir.path().join("log"),
        )
        .unwrap();
        let grandchild = read_pid(&pidfile);
        assert!(alive(&grandchild));
        drop(p);
        assert!(dies(&grandchild), "forked worker {grandchild} survived");
    }
}
