//! Owns the lifetime of every server process the harness starts.
//!
//! Each process runs under a tiny shell watchdog that kills it when the owning process (the test
//! binary or the `reckon-testenv` supervisor) disappears, even through SIGKILL or a test timeout,
//! so no etcd or sshd outlives the run. The guard's Drop stops it by PID (TERM, then KILL).

use std::fs::File;
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
    if p.components().count() > 1 {
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

impl Supervised {
    /// Starts `program args...` with stdout and stderr appended to `log`, under a watchdog bound
    /// to the current process.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(String, String)],
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
        // The watchdog: start the server in the background, then poll both the owner and the
        // server; when the owner is gone or we are told to stop (TERM), stop the server and reap
        // it. KILL after 5 s in case the server ignores TERM.
        let script = r#"
owner="$1"; shift
"$@" &
child=$!
stop() { kill -TERM "$child" 2>/dev/null; for _ in $(seq 50); do kill -0 "$child" 2>/dev/null || exit 0; sleep 0.1; done; kill -KILL "$child" 2>/dev/null; wait "$child" 2>/dev/null; exit 0; }
trap stop TERM INT HUP
while kill -0 "$owner" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5 & wait $!; done
stop
"#;
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(script)
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(logfile)
            .stderr(errfile);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let watchdog = cmd.spawn().map_err(|source| ProcessError::Spawn {
            name: name.into(),
            binary: program.display().to_string(),
            source,
        })?;
        Ok(Self {
            name: name.into(),
            watchdog,
            log: log.to_path_buf(),
        })
    }

    /// The watchdog's PID (the server is its child).
    pub fn pid(&self) -> u32 {
        self.watchdog.id()
    }

    /// The file holding the server's output.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `n` lines of the server's log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether the server is still running (the watchdog exits as soon as it stops).
    pub fn is_running(&mut self) -> bool {
        matches!(self.watchdog.try_wait(), Ok(None))
    }

    /// Stops the server: TERM to the watchdog (which stops and reaps the server), then waits.
    pub fn stop(&mut self) {
        if !self.is_running() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.watchdog.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        eprintln!("testenv: {} did not stop within 10 s; killed", self.name);
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
        let alive = Command::new("kill")
            .args(["-0", &pid])
            .status()
            .unwrap()
            .success();
        assert!(!alive, "server pid {pid} survived the guard's drop");
    }
}
