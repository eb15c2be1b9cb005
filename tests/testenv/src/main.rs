//! `reckon-testenv`: brings up one local control plane for a whole test run (or a demo) and
//! stops every process it started when the run ends — normally, on failure, or on a signal.
//!
//! - `reckon-testenv run -- CMD ARGS...`: start the control plane, run CMD with
//!   `RECKON_TEST_KUBECONFIG` pointing at it (and `RECKON_TEST_CONTROL_PLANE_PGIDS` naming its
//!   components' process groups, for benchmarks that read their CPU), stop everything, exit with CMD's status. When
//!   `RECKON_TEST_KUBECONFIG` is already set (your own cluster), CMD runs against that instead.
//! - `--audit` after `run` or `up`: the API server also sends the audit events of people's writes
//!   (token users alice and bob) to a receiver slot on a loopback port; `RECKON_TEST_AUDIT_DIR`
//!   names the directory with the receiver's address, certificate and token and a kubeconfig per
//!   person (`reckon_testenv::audit`). Nothing else in the run is audited.
//! - `reckon-testenv up`: start it, print the kubeconfig path, wait for SIGINT/SIGTERM.
//! - `reckon-testenv hold LOG [--orphan-dir DIR] -- CMD ARGS...`: run CMD under the same
//!   supervision (own process group, watchdog bound to this process; DIR removed if this process
//!   dies without stopping CMD) until SIGINT/SIGTERM; the watchdog tests use it.

use anyhow::{Context, bail};
use reckon_testenv::audit::AUDIT_DIR_ENV;
use reckon_testenv::control_plane::{ControlPlane, StartOptions};
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};

fn usage() -> &'static str {
    "usage: reckon-testenv run [--audit] -- CMD [ARGS...] | reckon-testenv up [--audit] | reckon-testenv hold LOG [--orphan-dir DIR] -- CMD [ARGS...]"
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match real_main().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("reckon-testenv: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn start(people_audit: bool) -> anyhow::Result<ControlPlane> {
    let t = std::time::Instant::now();
    let options = StartOptions {
        people_audit,
        ..StartOptions::default()
    };
    // Startup blocks on process polling; keep it off the signal-handling runtime thread.
    let cp = tokio::task::spawn_blocking(move || ControlPlane::start_with(&options))
        .await?
        .context("starting the local control plane")?;
    eprintln!(
        "reckon-testenv: control plane {} up at {} in {:.1}s ({}; pids {:?}, logs in {})",
        cp.version(),
        cp.server(),
        t.elapsed().as_secs_f64(),
        if cp.has_nodes() {
            format!("{} simulated nodes", reckon_testenv::control_plane::NODES)
        } else {
            "no nodes: Pods stay Pending".to_string()
        },
        cp.pids(),
        cp.dir().display()
    );
    if let Some(a) = cp.audit_dir() {
        eprintln!(
            "reckon-testenv: people's writes are audited to the receiver in {}",
            a.display()
        );
    }
    Ok(cp)
}

async fn real_main() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // `--audit` right after the subcommand.
    let audit = args.get(1).is_some_and(|a| a == "--audit");
    match args.first().map(String::as_str) {
        Some("up") => {
            let cp = start(audit).await?;
            println!("{}", cp.kubeconfig().display());
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            eprintln!("reckon-testenv: stopping");
            drop(cp);
            Ok(ExitCode::SUCCESS)
        }
        Some("hold") => {
            // hold LOG [--orphan-dir DIR] -- CMD ARGS...
            let Some(log) = args.get(1) else {
                bail!("{}", usage())
            };
            let mut rest = &args[2..];
            let mut orphan_dir = None;
            if rest.first().map(String::as_str) == Some("--orphan-dir") {
                orphan_dir = rest.get(1);
                rest = rest.get(2..).unwrap_or_default();
            }
            let rest = rest.strip_prefix(&["--".to_string()]).unwrap_or(rest);
            let Some((prog, prog_args)) = rest.split_first() else {
                bail!("{}", usage())
            };
            let (prog, log) = (std::path::Path::new(prog), std::path::Path::new(log));
            let held = match orphan_dir {
                Some(dir) => reckon_testenv::process::Supervised::spawn_owning_dir(
                    "held",
                    prog,
                    prog_args,
                    std::path::Path::new(dir),
                    log,
                )?,
                None => {
                    reckon_testenv::process::Supervised::spawn("held", prog, prog_args, &[], log)?
                }
            };
            println!("holding pid {}", held.pid());
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            drop(held);
            Ok(ExitCode::SUCCESS)
        }
        Some("run") => {
            let rest = &args[if audit { 2 } else { 1 }..];
            let cmd: Vec<&String> = rest.iter().skip_while(|a| *a == "--").collect();
            let Some((prog, rest)) = cmd.split_first() else {
                bail!("{}", usage())
            };
            let existing = std::env::var_os("RECKON_TEST_KUBECONFIG");
            let cp = match existing {
                Some(ref k) => {
                    eprintln!(
                        "reckon-testenv: RECKON_TEST_KUBECONFIG={} set: using that cluster{}",
                        k.to_string_lossy(),
                        if audit {
                            " (--audit ignored: its audit webhook is not ours to set)"
                        } else {
                            ""
                        }
                    );
                    None
                }
                None => Some(start(audit).await?),
            };
            let mut child = tokio::process::Command::new(prog);
            child.args(rest);
            if let Some(cp) = &cp {
                child.env("RECKON_TEST_KUBECONFIG", cp.kubeconfig());
                child.env(
                    reckon_testenv::control_plane::CONTROL_PLANE_ENV,
                    cp.process_groups_env(),
                );
                if let Some(a) = cp.audit_dir() {
                    child.env(AUDIT_DIR_ENV, a);
                }
            }
            let mut child = child.spawn().with_context(|| format!("running {prog}"))?;
            let status = tokio::select! {
                s = child.wait() => s?,
                _ = term.recv() => { let _ = child.start_kill(); child.wait().await? }
                _ = int.recv() => { child.wait().await? }
            };
            if let Some(mut cp) = cp {
                if !cp.is_healthy() {
                    eprintln!(
                        "reckon-testenv: a control plane component died during the run; logs in {}",
                        cp.dir().display()
                    );
                }
                drop(cp);
                eprintln!("reckon-testenv: control plane stopped");
            }
            Ok(ExitCode::from(
                status.code().unwrap_or(1).clamp(0, 255) as u8
            ))
        }
        _ => bail!("{}", usage()),
    }
}
