//! Owns the `reckon` command line: argument parsing (clap derive) and dispatch to subcommands.
//! Each subcommand lives in its own module and returns `anyhow::Result` (the CLI is an edge).

mod actor;
pub mod backend;
mod fetch;
pub mod output;
pub mod query;
mod remote;
mod rollback;
mod run;
mod store;
mod sync;
mod version;

use crate::telemetry::{self, LogFormat};
use clap::{Parser, Subcommand};

/// reckon: a GitOps reconciler for Kubernetes that remembers everything.
#[derive(Debug, Parser)]
#[command(name = "reckon", version = crate::version::VERSION, propagate_version = true)]
pub struct Cli {
    /// Log line format on stderr. The level comes from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "RECKON_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version, the commit it was built from, the Kubernetes versions it is tested
    /// against and, when a cluster is reachable, the cluster's version.
    Version(version::VersionArgs),
    /// Fetch each App's Git source once and record what was observed (new commits with their
    /// authors and signatures, force-pushes, failures) in the event store.
    Fetch(fetch::FetchArgs),
    /// Inspect and maintain the event store: verify, rebuild, export, import, compact.
    Store(store::StoreArgs),
    /// Run the agent: reconcile every App until SIGINT or SIGTERM (in-flight work finishes
    /// and the store is flushed before exit).
    Run(Box<run::RunArgs>),
    /// One recorded sync pass of an App (fetch, render, apply, prune, health), with progress.
    Sync(sync::SyncArgs),
    /// What a sync of an App would change, from a server-side dry run; with --from/--to, how
    /// two recorded revisions differ. Exit code 1 when anything differs, 0 when nothing does.
    Diff(sync::DiffArgs),
    /// The timeline of recorded events, newest first: filter by App, object, author, revision,
    /// category and time; --follow streams new events.
    History(query::HistoryArgs),
    /// Every revision an App observed or applied: commit, author, when, outcome, objects changed.
    Revisions(query::RevisionsArgs),
    /// For each field reckon manages on an object: the commit that set it and every drift on it.
    Blame(query::BlameArgs),
    /// The exact manifests recorded for a revision: `reckon show APP@REV`.
    Show(query::ShowArgs),
    /// Per App: intent (following Git or pinned), revision, last sync, health, open drift.
    Status(query::StatusArgs),
    /// Intent and inventory as they were at a past time, from the log alone.
    Replay(query::ReplayArgs),
    /// Pin an App to a revision it applied before (--to REV or --steps N) and apply the
    /// manifests recorded for it, pruning what did not exist then; records who and why.
    /// Auto-sync keeps observing new commits but does not apply them until `reckon resume`.
    Rollback(rollback::RollbackArgs),
    /// Unpin a rolled-back App (recorded, with who and why) and sync it to Git's head again.
    Resume(rollback::ResumeArgs),
    /// Print the App CustomResourceDefinition (apps.reckon.dev) as YAML, generated from the
    /// Rust type: `reckon crd > deploy/base/crd.yaml` regenerates the committed one.
    Crd,
}

/// Opens the store for writing, creating it when missing (fetch, sync, diff).
fn open_writable(path: &std::path::Path) -> anyhow::Result<crate::store::SledStore> {
    let options = crate::store::OpenOptions {
        create: true,
        ..Default::default()
    };
    crate::store::SledStore::open(path, options).map_err(|e| {
        // Say what it means for someone at the command line.
        if matches!(e, crate::store::StoreError::Locked { .. }) {
            anyhow::anyhow!(
                "it is in use by another reckon process (a running agent?): stop it, or ask \
                 the running agent over its HTTP API"
            )
        } else {
            anyhow::Error::new(e)
        }
        .context(format!("opening the store {}", path.display()))
    })
}

/// An App argument: `NAMESPACE/NAME` names an App object (its identity `NAMESPACE.NAME`), any
/// other text an App as the store names it (a file App's name, or an identity).
fn app_name(text: &str) -> Result<String, String> {
    Ok(crate::model::identity::from_user(text))
}

/// Output formats shared by commands that print data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Output {
    /// A human-readable table or text.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

/// Parses the process arguments, sets up logging and runs the chosen command.
pub async fn run() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, "info");
    crate::tls::install_crypto_provider();
    match cli.command {
        Command::Version(args) => version::run(args).await,
        Command::Fetch(args) => fetch::run(args).await,
        Command::Store(args) => store::run(args).await,
        Command::Run(args) => run::run(*args).await,
        Command::Sync(args) => sync::sync(args).await,
        Command::Diff(args) => sync::diff(args).await,
        Command::History(args) => query::history(args).await,
        Command::Revisions(args) => query::revisions(args).await,
        Command::Blame(args) => query::blame(args).await,
        Command::Show(args) => query::show(args).await,
        Command::Status(args) => query::status(args).await,
        Command::Replay(args) => query::replay(args).await,
        Command::Rollback(args) => rollback::rollback(args).await,
        Command::Resume(args) => rollback::resume(args).await,
        Command::Crd => {
            print!("{}", crate::crd::crd_yaml()?);
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}
