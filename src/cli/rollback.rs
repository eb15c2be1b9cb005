//! Owns `reckon rollback APP` and `reckon resume APP`: record the intent (with who asked and
//! why) through [`crate::reconcile::rollback`], then run one pass of the App like `reckon sync`
//! and print what it applied and pruned.

use super::run::Paths;
use super::sync::{progress_line, reconciler, short, summarize};
use crate::reconcile::rollback::{self, RollbackTarget};
use crate::reconcile::{PassOptions, PassReport, Reconciler};
use std::io::IsTerminal;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    paths: Paths,
    /// The App to roll back.
    #[arg(value_parser = super::app_name)]
    app: String,
    /// The revision to go back to: a commit SHA or a unique prefix (at least 4 hex digits) of
    /// one the App applied, or for a chart App a chart version it applied (`1.2.3`). It need
    /// not be on the remote any more.
    #[arg(long, value_name = "REV", required_unless_present = "steps")]
    to: Option<String>,
    /// Go back this many applied revisions from the one applied now (by applied time).
    #[arg(long, value_name = "N", conflicts_with = "to")]
    steps: Option<u32>,
    /// Why, recorded with the intent.
    #[arg(long)]
    reason: Option<String>,
    /// Who asks, recorded with the intent (default: $USER, else the OS account name, else the
    /// kubeconfig's current user).
    #[arg(long)]
    actor: Option<String>,
    /// Record the rollback only; the agent or the next `reckon sync` applies it.
    #[arg(long)]
    no_sync: bool,
    /// Refuse a revision the App was never reported healthy on (by default such a rollback
    /// goes ahead with a warning: applied is not healthy, and it is what was running).
    #[arg(long)]
    require_healthy: bool,
    /// Ask the running agent at --server to record it (with an admin --token) and apply it;
    /// the actor is the token's identity.
    #[command(flatten)]
    server: super::remote::ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    paths: Paths,
    /// The App to unpin.
    #[arg(value_parser = super::app_name)]
    app: String,
    /// Why, recorded with the intent.
    #[arg(long)]
    reason: Option<String>,
    /// Who asks, recorded with the intent (default: $USER, else the OS account name, else the
    /// kubeconfig's current user).
    #[arg(long)]
    actor: Option<String>,
    /// Record the resume only; the agent or the next `reckon sync` follows Git again.
    #[arg(long)]
    no_sync: bool,
    /// Use the last recorded head instead of fetching first.
    #[arg(long)]
    no_fetch: bool,
    /// Ask the running agent at --server to record it (with an admin --token); the actor is
    /// the token's identity.
    #[command(flatten)]
    server: super::remote::ServerArgs,
}

/// One pass with progress lines (stderr on a terminal, stdout otherwise), like `reckon sync`.
async fn pass(r: &mut Reconciler, fetch: bool) -> anyhow::Result<PassReport> {
    let name = r.app().name.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let tty = std::io::stderr().is_terminal();
    let printer = tokio::spawn(async move {
        while let Some(o) = rx.recv().await {
            let line = progress_line(&o);
            if tty {
                eprintln!("{name}: {line}");
            } else {
                println!("{line}");
            }
        }
    });
    let report = r
        .pass(&PassOptions {
            fetch,
            progress: Some(tx),
            ..Default::default()
        })
        .await;
    let _ = printer.await;
    Ok(report?)
}

pub async fn rollback(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    if args.server.server.is_some() {
        super::remote::refuse_actor(args.actor.as_deref())?;
        let request = crate::api::handlers::RollbackRequest {
            to: args.to,
            steps: args.steps,
            reason: args.reason,
            require_healthy: args.require_healthy.then_some(true),
        };
        return super::remote::rollback(args.server, args.app, request).await;
    }
    let actor = super::actor::require(args.actor)?;
    let target = match (args.to, args.steps) {
        (Some(rev), _) => RollbackTarget::Revision(rev),
        (None, Some(n)) => RollbackTarget::Steps(n),
        (None, None) => anyhow::bail!("give --to REV or --steps N"),
    };
    let (mut r, handle, task) = reconciler(&args.paths, &args.app).await?;
    let options = rollback::RollbackOptions {
        require_healthy: args.require_healthy,
    };
    let recorded = rollback::request_rollback_with(
        &handle,
        &args.app,
        target,
        actor.clone(),
        args.reason,
        options,
    )
    .await;
    let report = match &recorded {
        Ok(plan) => {
            println!(
                "{}: rolled back to {} (was {}) by {actor}; pinned until `reckon resume {}`",
                plan.app,
                short(&plan.revision),
                plan.previous.as_deref().map(short).unwrap_or("-"),
                plan.app
            );
            if let Some(warning) = &plan.warning {
                eprintln!("{}: warning: {warning}", plan.app);
            }
            // Applying needs no fetch: the pinned revision's manifests come from the store.
            if args.no_sync {
                None
            } else {
                Some(pass(&mut r, false).await)
            }
        }
        Err(_) => None,
    };
    drop(r);
    handle.close().await?;
    task.await??;
    recorded?;
    finish(&args.app, report)
}

pub async fn resume(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    if args.server.server.is_some() {
        super::remote::refuse_actor(args.actor.as_deref())?;
        return super::remote::resume(args.server, args.app, args.reason).await;
    }
    let actor = super::actor::require(args.actor)?;
    let (mut r, handle, task) = reconciler(&args.paths, &args.app).await?;
    let recorded = rollback::request_resume(&handle, &args.app, actor.clone(), args.reason).await;
    let report = match &recorded {
        Ok(plan) => {
            println!(
                "{}: resumed by {actor} (was pinned to {}); follows Git again",
                plan.app,
                plan.unpinned.as_deref().map(short).unwrap_or("-"),
            );
            if args.no_sync {
                None
            } else {
                Some(pass(&mut r, !args.no_fetch).await)
            }
        }
        Err(_) => None,
    };
    drop(r);
    handle.close().await?;
    task.await??;
    recorded?;
    finish(&args.app, report)
}

/// Prints the pass's summary line; the exit code says whether it left the App in sync.
fn finish(app: &str, report: Option<anyhow::Result<PassReport>>) -> anyhow::Result<ExitCode> {
    let Some(report) = report else {
        return Ok(ExitCode::SUCCESS);
    };
    let mut out = std::io::stdout().lock();
    let ok = summarize(&mut out, app, &report?)?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
