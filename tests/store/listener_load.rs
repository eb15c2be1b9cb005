//! The agent's HTTP listener under a pre-authentication memory attack, loopback only and bounded
//! in count and time: 500 connections each declare a 2 MB body on the GitHub webhook route (with
//! a signature header that will not verify), send nearly all of it and stall. The agent's
//! resident memory may grow by at most 32 MiB and `/healthz` must still answer within 2 s.
//!
//! The agent runs as a process of its own (no Apps, so no cluster), so its RSS is its alone.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 500;
const DECLARED: usize = 2_000_000;
/// Nearly all of the declared body: the request can never complete, so a server that buffers
/// before it decides holds all of it.
const SENT: usize = DECLARED - 1_000;
const MAX_GROWTH_KIB: u64 = 32 * 1024;
const HEALTHZ_WITHIN: Duration = Duration::from_secs(2);

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One GET /healthz on a fresh connection; the status line, or an error.
fn healthz(port: u16, timeout: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.lines().next().unwrap_or_default().to_string())
}

fn start_agent(dir: &Path, port: u16) -> Agent {
    std::fs::write(dir.join("reckon.yaml"), "apps: []\n").unwrap();
    // RECKON_LOAD_TEST_BIN runs the same load against another build (to measure a baseline).
    let mut command = match std::env::var_os("RECKON_LOAD_TEST_BIN") {
        Some(bin) => {
            let mut c = std::process::Command::new(bin);
            c.current_dir(dir);
            c
        }
        None => support::reckon(dir),
    };
    let child = command
        .args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .env("RECKON_GITHUB_SECRET", "listener-load-test-secret")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent = Agent(child);
    let start = Instant::now();
    while healthz(port, Duration::from_secs(1)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the agent did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_webhook_uploads_neither_exhaust_memory_nor_block_health() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let agent = start_agent(dir.path(), port);
    let pid = agent.0.id();
    // Let start-up allocations settle before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = status_kib(pid, "VmRSS");

    static BODY: [u8; SENT] = [b'x'; SENT];
    let head = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         X-GitHub-Event: push\r\nX-Hub-Signature-256: sha256={}\r\nContent-Length: {DECLARED}\r\n\r\n",
        "0".repeat(64)
    );
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let head = head.clone();
        tasks.push(tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                return None;
            };
            // A server that refuses early closes the connection: a failed write is its answer.
            let _ = tokio::time::timeout(Duration::from_secs(20), async {
                s.write_all(head.as_bytes()).await?;
                s.write_all(&BODY).await
            })
            .await;
            // Stalled: the connection stays open, the body never completes.
            Some(s)
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        held.push(t.await.unwrap());
    }
    let opened = held.iter().filter(|s| s.is_some()).count();

    let asked = Instant::now();
    let status = tokio::task::spawn_blocking(move || healthz(port, HEALTHZ_WITHIN))
        .await
        .unwrap();
    let took = asked.elapsed();
    let peak = status_kib(pid, "VmHWM");
    let after = status_kib(pid, "VmRSS");
    let growth = peak.saturating_sub(before);
    eprintln!(
        "listener load: {opened}/{CONNECTIONS} connections opened; RSS before {before} KiB, \
         peak {peak} KiB (+{} MiB), after {after} KiB; /healthz {status:?} in {took:?}",
        growth / 1024
    );
    drop(held);
    drop(agent);

    assert_eq!(
        status.as_deref().ok(),
        Some("HTTP/1.1 200 OK"),
        "/healthz under load"
    );
    assert!(took <= HEALTHZ_WITHIN, "/healthz took {took:?} under load");
    assert!(
        growth <= MAX_GROWTH_KIB,
        "the agent's RSS grew by {growth} KiB under stalled uploads (at most {MAX_GROWTH_KIB})"
    );
}
