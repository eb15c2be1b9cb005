//! Owns `reckon sync APP` (one recorded pass, with progress) and `reckon diff APP` (a
//! server-side dry run of what a sync would change; exit code 1 when anything would).

use super::run::Paths;
use crate::apply::{DiffOutcome, ObjectOutcome, Outcome};
use crate::config;
use crate::pool::{Pool, PoolOptions, WatchScope};
use crate::reconcile::{Limits, Live, PassOptions, PassReport, PassStatus, Reconciler};
use crate::source::config::source_for;
use crate::store::writer;
use crate::watch::WatchOptions;
use anyhow::Context;
use futures::StreamExt;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    #[command(flatten)]
    paths: Paths,
    /// Use the last recorded head instead of fetching first.
    #[arg(long)]
    no_fetch: bool,
    /// Sync every App of the configuration (concurrently).
    #[arg(long, conflicts_with = "apps")]
    all: bool,
    /// The Apps to sync.
    #[arg(required_unless_present = "all")]
    apps: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    #[command(flatten)]
    paths: Paths,
    /// Use the last recorded head instead of fetching first.
    #[arg(long)]
    no_fetch: bool,
    /// Compare two recorded revisions instead (the manifests the store recorded for each; no
    /// cluster, no fetch): the older side, a SHA or unique prefix.
    #[arg(long, requires = "to")]
    from: Option<String>,
    /// With --from: the newer side.
    #[arg(long, requires = "from")]
    to: Option<String>,
    /// Output format of --from/--to: table, json, yaml or jsonl.
    #[arg(short, long, value_enum, default_value_t = super::output::Format::Table)]
    output: super::output::Format,
    /// With --from/--to: ask the running agent at --server instead of opening the store.
    #[command(flatten)]
    server: super::remote::ServerArgs,
    /// The App to compare.
    app: String,
}

pub(super) async fn reconciler(
    paths: &Paths,
    name: &str,
) -> anyhow::Result<(
    Reconciler,
    writer::StoreHandle,
    tokio::task::JoinHandle<Result<(), crate::store::StoreError>>,
)> {
    let cfg = config::load(&paths.config)?;
    let app = cfg
        .app(name)
        .with_context(|| format!("no app named {name:?} in {}", paths.config.display()))?
        .clone();
    let (store, key) = paths.open()?;
    let (cluster, _) = Pool::new(PoolOptions {
        key: key.clone(),
        watch: WatchOptions::default(),
        scope: WatchScope::None,
        settle: None,
        fence: None,
    })
    .connect(&app)
    .await?;
    let source = source_for(&app, &paths.cache)?;
    let (handle, task) = writer::spawn(store);
    crate::reconcile::reseal::reseal_recorded_sets(&handle, &key).await?;
    // As the App's ServiceAccount when it names one; the pool watches nothing here.
    let (catalog, _) = cluster.for_app(&app)?;
    let r = Reconciler::new(app, source, handle.clone(), key, catalog, Live::Direct).with_limits(
        Limits {
            input: cfg.limits,
            ..Limits::default()
        },
    );
    Ok((r, handle, task))
}

pub(super) fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

pub(super) fn progress_line(o: &ObjectOutcome) -> String {
    let what = match &o.outcome {
        Outcome::Created => "created".to_string(),
        Outcome::Adopted { changed } => format!("adopted ({} field(s))", changed.len()),
        Outcome::Configured { changed } => format!("configured ({} field(s))", changed.len()),
        Outcome::Unchanged => "unchanged".to_string(),
        Outcome::Failed { error, .. } => format!("FAILED: {error}"),
        Outcome::Pruned => "pruned".to_string(),
        Outcome::Orphaned => "orphaned (adopted; released, not deleted)".to_string(),
        Outcome::PruneFailed { error, .. } => format!("prune FAILED: {error}"),
        Outcome::Skipped { reason } => format!("skipped: {reason:?}"),
    };
    format!("{}  {what}", o.object)
}

/// Passes run at once by `sync --all`; each is mostly waiting on the API server.
const SYNC_CONCURRENCY: usize = 32;

pub async fn sync(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let cfg = config::load(&args.paths.config)?;
    for name in &args.apps {
        if cfg.app(name).is_none() {
            anyhow::bail!("no app named {name:?} in {}", args.paths.config.display());
        }
    }
    let apps: Vec<config::App> = cfg
        .sync_order()
        .into_iter()
        .filter(|a| args.all || args.apps.contains(&a.name))
        .cloned()
        .collect();
    let started = std::time::Instant::now();
    let (store, key) = args.paths.open()?;
    let (handle, task) = writer::spawn(store);
    // Migration 0010, before any pass reads a recorded set.
    crate::reconcile::reseal::reseal_recorded_sets(&handle, &key).await?;
    tracing::debug!(elapsed = ?started.elapsed(), apps = apps.len(), "store open");

    // One catalog and one watch per cluster: a single App watches its own objects, several
    // share one watch per kind (listing each kind once instead of reading each object).
    let mut pool = Pool::new(PoolOptions {
        key: key.clone(),
        watch: WatchOptions::default(),
        scope: if args.all || args.apps.len() > 1 {
            WatchScope::AllApps
        } else {
            WatchScope::OneApp
        },
        settle: None,
        fence: None,
    });
    let mut reconcilers = Vec::new();
    let limits = Limits {
        input: cfg.limits,
        ..Limits::default()
    };
    // Kept open for the whole run: a watch whose notifications receiver is gone stops updating
    // its cache (nobody reads them here; the debouncer merges them while unread).
    let mut notifications = Vec::new();
    for app in apps {
        let (cluster, new) = pool.connect(&app).await?;
        notifications.extend(new.and_then(|n| n.changes));
        let (catalog, live) = cluster.for_app(&app)?;
        let source = source_for(&app, &args.paths.cache)?;
        reconcilers.push(
            Reconciler::new(app, source, handle.clone(), key.clone(), catalog, live)
                .with_limits(limits.clone()),
        );
    }

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, ObjectOutcome)>();
    let tty = std::io::stderr().is_terminal();
    let printer = tokio::spawn(async move {
        let mut n = 0;
        while let Some((app, o)) = rx.recv().await {
            n += 1;
            let line = progress_line(&o);
            if tty {
                eprintln!("[{n}] {app}: {line}");
            } else {
                println!("{line}");
            }
        }
    });
    tracing::debug!(elapsed = ?started.elapsed(), "clusters connected");
    let fetch = !args.no_fetch;
    // Every App's fetch is asked for now: Apps on one remote share the first network fetch.
    let fetch_requested = fetch.then(std::time::Instant::now);
    let results: Vec<(String, Result<PassReport, crate::reconcile::ReconcileError>)> =
        futures::stream::iter(reconcilers)
            .map(|mut r| {
                let tx = tx.clone();
                async move {
                    let name = r.app().name.clone();
                    let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel();
                    let forward = {
                        let name = name.clone();
                        tokio::spawn(async move {
                            while let Some(o) = prx.recv().await {
                                let _ = tx.send((name.clone(), o));
                            }
                        })
                    };
                    // A task per pass: polled inside this stream, every pass's CPU work
                    // (unpacking, observing, planning) would run on the main thread alone.
                    let pass = tokio::spawn(async move {
                        r.pass(&PassOptions {
                            fetch,
                            fetch_requested,
                            progress: Some(ptx),
                        })
                        .await
                    });
                    let report = match pass.await {
                        Ok(report) => report,
                        // A pass that panicked is a bug; report it with the App rather than
                        // losing every other App's result.
                        Err(e) => {
                            let _ = forward.await;
                            return (
                                name,
                                Err(crate::reconcile::ReconcileError::Task(e.to_string())),
                            );
                        }
                    };
                    let _ = forward.await;
                    (name, report)
                }
            })
            .buffer_unordered(SYNC_CONCURRENCY)
            .collect()
            .await;
    tracing::debug!(elapsed = ?started.elapsed(), "passes done");
    drop(tx);
    drop(notifications);
    let _ = printer.await;
    handle.close().await?;
    task.await??;
    tracing::debug!(elapsed = ?started.elapsed(), "store closed");

    let mut out = std::io::stdout().lock();
    let mut failed = false;
    let mut results = results;
    results.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, result) in results {
        match result {
            Ok(report) => failed |= !summarize(&mut out, &name, &report)?,
            Err(e) => {
                failed = true;
                writeln!(out, "{name}: {e}")?;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One App's summary line; false when the pass did not leave it in sync.
pub(super) fn summarize(
    out: &mut impl Write,
    name: &str,
    report: &PassReport,
) -> std::io::Result<bool> {
    if let Some(e) = &report.fetch_failure {
        writeln!(
            out,
            "{name}: fetch failed, used the last good revision: {e}"
        )?;
    }
    if report.pinned {
        writeln!(
            out,
            "{name}: pinned by a rollback; new commits are not applied until `reckon resume {name}`"
        )?;
    }
    let rev = report.revision.as_deref().map(short).unwrap_or("-");
    Ok(match &report.status {
        PassStatus::NoRevision => {
            writeln!(out, "{name}: no revision to deploy yet")?;
            false
        }
        PassStatus::Suspended => {
            writeln!(out, "{name}: suspended; nothing done")?;
            true
        }
        PassStatus::RenderFailed { error } => {
            writeln!(
                out,
                "{name}: render of {rev} failed, nothing applied or pruned: {error}"
            )?;
            false
        }
        PassStatus::InSync => {
            writeln!(out, "{name}: in sync at {rev}; nothing to do")?;
            true
        }
        PassStatus::Synced { outcome, counts } => {
            writeln!(
                out,
                "{name}: synced {rev}: {outcome:?} ({} created, {} configured, {} unchanged, {} pruned, {} prune skipped, {} failed); health {:?}; {} event(s) recorded in {:.1}s",
                counts.created,
                counts.configured,
                counts.unchanged,
                counts.pruned,
                counts.prune_skipped,
                counts.failed,
                report.health,
                report.appended,
                report.duration.as_secs_f64()
            )?;
            // Applied is recorded apart from healthy; the exit code asks both, as the
            // command waits for health (docs/cli.md).
            matches!(outcome, crate::event::SyncOutcome::Succeeded)
                && report.health == crate::event::Health::Healthy
        }
    })
}

pub async fn diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    if let (Some(from), Some(to)) = (args.from, args.to) {
        let common = super::query::Common {
            store: args.paths.store,
            output: args.output,
            server: args.server,
        };
        return super::query::diff_recorded(common, args.app, from, to).await;
    }
    if args.server.server.is_some() {
        anyhow::bail!(
            "reckon diff --server compares two recorded revisions: give --from and --to (a \
             dry-run diff against the cluster runs here, on the local store)"
        );
    }
    let (mut r, handle, task) = reconciler(&args.paths, &args.app).await?;
    let result = r.diff(!args.no_fetch).await;
    drop(r);
    handle.close().await?;
    task.await??;
    let report = result?;
    let mut out = std::io::stdout().lock();
    let Some(rev) = report.revision.as_deref() else {
        writeln!(out, "{}: no revision to deploy yet", args.app)?;
        return Ok(ExitCode::from(2));
    };
    if let Some(error) = &report.render_error {
        writeln!(
            out,
            "{}: render of {} failed: {error}",
            args.app,
            short(rev)
        )?;
        return Ok(ExitCode::from(1));
    }
    if let Some(plan) = &report.plan {
        for rejected in &plan.rejected {
            writeln!(
                out,
                "! {}  rejected: {:?}",
                rejected.object, rejected.reason
            )?;
        }
        for action in &plan.actions {
            if let crate::plan::Action::Drift {
                object,
                drift,
                corrected,
            } = action
            {
                let fields = crate::reconcile::events::drift_fields(drift);
                writeln!(
                    out,
                    "~ {object}  drifted ({}){}",
                    fields.join(", "),
                    if *corrected {
                        "; a sync corrects it"
                    } else {
                        "; detect mode: left alone"
                    }
                )?;
            }
        }
    }
    for o in &report.objects {
        match &o.outcome {
            DiffOutcome::Unchanged => {}
            DiffOutcome::Orphan => {
                writeln!(
                    out,
                    "~ {}  orphan (adopted; its App label removed, not deleted)",
                    o.object
                )?;
            }
            DiffOutcome::Create { fields, validated } => {
                writeln!(
                    out,
                    "+ {}  create{}",
                    o.object,
                    if *validated {
                        ""
                    } else {
                        " (not validated: its CRD is not installed yet)"
                    }
                )?;
                let _ = fields;
            }
            DiffOutcome::Configure { fields } => {
                writeln!(out, "~ {}  configure", o.object)?;
                for f in fields {
                    let v = |v: &Option<serde_json::Value>| {
                        v.as_ref()
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "(absent)".into())
                    };
                    writeln!(
                        out,
                        "    {}: {} -> {}",
                        f.pointer,
                        v(&f.before),
                        v(&f.after)
                    )?;
                }
            }
            DiffOutcome::Delete => writeln!(out, "- {}  prune", o.object)?,
            DiffOutcome::Failed { error, .. } => {
                writeln!(out, "! {}  would fail: {error}", o.object)?
            }
            DiffOutcome::Skipped { reason } => {
                writeln!(out, "  {}  skipped: {reason:?}", o.object)?
            }
        }
    }
    if report.has_changes() {
        Ok(ExitCode::from(1))
    } else {
        writeln!(out, "{}: no changes at {}", args.app, short(rev))?;
        Ok(ExitCode::SUCCESS)
    }
}
