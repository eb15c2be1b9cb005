//! The watchdog guarantee: a server started by the harness stops when its owner dies, even when
//! the owner is SIGKILLed (a test timeout) and runs no destructor, and its orphaned data directory
//! is removed with it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `pid` runs; a zombie (killed, not yet reaped) counts as dead.
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

#[test]
fn server_stops_when_its_owner_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("server.pid");
    // The server's data directory, which the watchdog must remove once the owner is gone.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("state"), "x").unwrap();
    let mut owner = Command::new(env!("CARGO_BIN_EXE_reckon-testenv"))
        .arg("hold")
        .arg(dir.path().join("server.log"))
        .arg("--orphan-dir")
        .arg(&data)
        .args(["--", "/bin/sh", "-c"])
        .arg(format!("echo $$ > {}; exec sleep 300", pidfile.display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(owner.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("holding pid"), "{line}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let server = loop {
        if let Ok(s) = std::fs::read_to_string(&pidfile)
            && !s.trim().is_empty()
        {
            break s.trim().to_string();
        }
        assert!(Instant::now() < deadline, "server never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(alive(&server));

    owner.kill().unwrap(); // SIGKILL: no Drop runs in the owner.
    owner.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(&server) {
        assert!(
            Instant::now() < deadline,
            "server {server} outlived its SIGKILLed owner by 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while data.exists() {
        assert!(
            Instant::now() < deadline,
            "the orphaned server's directory {} was left behind",
            data.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
