//! Owns `reckon store …`: verify, rebuild, export, import and compact on a store directory.

use crate::store::exchange;
use crate::store::retention::Policy;
use crate::store::verify;
use crate::store::{OpenOptions, SledStore};
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// The store directory.
    #[arg(
        long,
        global = true,
        env = "RECKON_STORE",
        default_value = "./reckon-store"
    )]
    store: PathBuf,
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Debug, clap::Subcommand)]
enum StoreCommand {
    /// Walk the log, tombstones, indexes and blobs; report the first broken link, gap, corrupt
    /// record or dangling index entry; rebuild the projections and compare them with the
    /// snapshot; with --checkpoint, check the log against signed checkpoints of its head.
    /// Exits non-zero on any problem.
    Verify(VerifyArgs),
    /// Sign the store's flushed head with the checkpoint key and append it to a checkpoint file
    /// (what the agent does periodically and on stop); prints the line.
    Checkpoint(CheckpointArgs),
    /// Print the public key of a checkpoint signing key (created if missing), for
    /// `verify --checkpoint-key`.
    CheckpointKey {
        /// The signing key file (keep it off the store's volume).
        #[arg(long)]
        checkpoint_key: PathBuf,
    },
    /// Replay the whole log into fresh projections and store them as the snapshot.
    Rebuild,
    /// Write every event as JSON Lines (stable field names; see docs/events.md).
    Export(ExportArgs),
    /// Build a new store from an export; the hashes must match the original's.
    Import(ImportArgs),
    /// Apply a retention policy to one App: old events become one RetentionCompacted summary.
    Compact(CompactArgs),
    /// After events were lost (the log ends before HEAD, e.g. after a power loss): record the
    /// loss as a StoreGap event so that the agent can write again. Export first if you can.
    Recover {
        /// Recorded as the StoreGap event's actor (default: $USER, else the OS account name,
        /// else the kubeconfig's current user).
        #[arg(long)]
        actor: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Jsonl,
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
    /// Output file (default: stdout).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Also export the rendered-manifest blobs (needed for rollbacks from an imported store).
    #[arg(long)]
    with_blobs: bool,
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// A checkpoint file (JSON lines written by `reckon run --checkpoint-file` or `store
    /// checkpoint`); the log must match every checkpoint in it. Repeatable.
    #[arg(long)]
    checkpoint: Vec<PathBuf>,
    /// The public key the checkpoints must be signed with: 64 hex digits, or a file holding
    /// them (`store checkpoint-key`). Required with --checkpoint.
    #[arg(long, requires = "checkpoint")]
    checkpoint_key: Option<String>,
}

#[derive(Debug, clap::Args)]
struct CheckpointArgs {
    /// The signing key file (created 0600 if missing; keep it off the store's volume).
    #[arg(long)]
    checkpoint_key: PathBuf,
    /// The file to append the checkpoint to (created if missing).
    #[arg(long)]
    checkpoint_file: PathBuf,
}

#[derive(Debug, clap::Args)]
struct ImportArgs {
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
    /// Input file (default: stdin).
    #[arg(long, short)]
    input: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct CompactArgs {
    /// The App whose old events to compact.
    #[arg(long)]
    app: String,
    /// Remove events older than this (e.g. 90d, 12h).
    #[arg(long, value_parser = humantime::parse_duration)]
    max_age: Option<std::time::Duration>,
    /// Keep at most this many bytes of the App's newest events.
    #[arg(long)]
    max_bytes: Option<u64>,
    /// Recorded as the summary's actor (default: $USER, else the OS account name, else the
    /// kubeconfig's current user).
    #[arg(long)]
    actor: Option<String>,
}

/// A progress bar on stderr; indicatif hides it when stderr is not a terminal.
fn progress(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

fn open(path: &Path, opts: OpenOptions) -> anyhow::Result<SledStore> {
    Ok(SledStore::open(path, opts)?)
}

pub async fn run(args: StoreArgs) -> anyhow::Result<ExitCode> {
    // sled is blocking I/O: keep it off the async workers.
    tokio::task::spawn_blocking(move || run_blocking(args)).await?
}

fn run_blocking(args: StoreArgs) -> anyhow::Result<ExitCode> {
    let path = args.store;
    let mut out = std::io::stdout().lock();
    match args.command {
        StoreCommand::Verify(args) => {
            let mut checkpoints = Vec::new();
            for f in &args.checkpoint {
                checkpoints.extend(crate::store::checkpoint::read(f)?);
            }
            let key = match (&args.checkpoint_key, args.checkpoint.is_empty()) {
                (Some(k), _) => Some(crate::store::checkpoint::parse_public_key(k)?),
                (None, true) => None,
                (None, false) => bail!(
                    "--checkpoint needs --checkpoint-key: a checkpoint proves nothing unless its signature is checked with a key you trust"
                ),
            };
            let store = open(
                &path,
                OpenOptions {
                    allow_truncated: true,
                    ..Default::default()
                },
            )?;
            let reader = store.reader();
            let pb = progress(reader.last_seq()?, "verifying");
            let started = std::time::Instant::now();
            let mut signatures = verify::Report::default();
            let anchors = match &key {
                Some(key) => verify::check_checkpoints(&checkpoints, key, &mut signatures),
                None => Vec::new(),
            };
            let mut report =
                verify::verify_against(&reader, &anchors, &mut |n| pb.set_position(n))?;
            for p in signatures.problems {
                report.add(p);
            }
            report.checkpoints = checkpoints.len() as u64;
            verify::check_projections(&store, &mut report)?;
            pb.finish_and_clear();
            // For the agent's integrity endpoint (the agent does not verify a live store).
            let record = crate::store::last_verify::LastVerify::of(
                &report,
                chrono::Utc::now(),
                u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            );
            if let Err(e) = crate::store::last_verify::write(&path, &record) {
                eprintln!("warning: could not record the result for the agent: {e}");
            }
            writeln!(
                out,
                "checked {} events, {} tombstones, {} index entries, {} blobs, {} checkpoints (log ends at seq {})",
                report.events,
                report.tombstones,
                report.index_entries,
                report.blobs,
                report.checkpoints,
                report.last_seq
            )?;
            if report.ok() {
                writeln!(
                    out,
                    "OK: chain intact, no gaps, every index entry points to its event, the snapshot is what the log folds to{}",
                    if report.checkpoints > 0 {
                        ", the log matches every checkpoint"
                    } else {
                        " (no checkpoint given: this does not prove the history was not rewritten and re-chained)"
                    }
                )?;
                Ok(ExitCode::SUCCESS)
            } else {
                for p in &report.problems {
                    writeln!(out, "PROBLEM: {p}")?;
                }
                Ok(ExitCode::FAILURE)
            }
        }
        StoreCommand::Checkpoint(a) => {
            use crate::store::checkpoint;
            let signer = checkpoint::Signer::load_or_create(&a.checkpoint_key)?;
            // Not opened: HEAD is what the store last flushed; a running agent may hold the store.
            let Some(cp) = checkpoint::of_store(&path, &signer, chrono::Utc::now())? else {
                bail!(
                    "{}: no HEAD yet (the store never flushed an event): nothing to checkpoint",
                    path.display()
                );
            };
            checkpoint::append(&a.checkpoint_file, &cp)?;
            writeln!(out, "{}", cp.to_line())?;
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::CheckpointKey { checkpoint_key } => {
            let signer = crate::store::checkpoint::Signer::load_or_create(&checkpoint_key)?;
            writeln!(out, "{}", hex::encode(signer.public_key().to_bytes()))?;
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Rebuild => {
            let mut store = open(&path, OpenOptions::default())?;
            let pb = progress(store.reader().last_seq()?, "replaying");
            let started = std::time::Instant::now();
            let p = store.rebuild(&mut |n| pb.set_position(n))?;
            pb.finish_and_clear();
            writeln!(
                out,
                "rebuilt projections of {} apps up to seq {} in {:.2?}",
                p.apps.len(),
                p.covered_seq,
                started.elapsed()
            )?;
            store.close()?;
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Export(a) => {
            let Format::Jsonl = a.format;
            let store = open(
                &path,
                OpenOptions {
                    allow_truncated: true,
                    ..Default::default()
                },
            )?;
            let reader = store.reader();
            let pb = progress(reader.last_seq()?, "exporting");
            let mut sink: Box<dyn Write> = match &a.output {
                Some(f) => Box::new(BufWriter::new(
                    std::fs::File::create(f)
                        .with_context(|| format!("creating {}", f.display()))?,
                )),
                None => Box::new(BufWriter::new(std::io::stdout().lock())),
            };
            let counts = exchange::export(&reader, &mut sink, a.with_blobs, &mut |n| {
                pb.set_position(n)
            })?;
            drop(sink);
            pb.finish_and_clear();
            eprintln!(
                "exported {} events, {} tombstones, {} blobs",
                counts.events, counts.tombstones, counts.blobs
            );
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Import(a) => {
            let Format::Jsonl = a.format;
            let (mut input, len): (Box<dyn std::io::BufRead>, u64) = match &a.input {
                Some(f) => {
                    let file = std::fs::File::open(f)
                        .with_context(|| format!("opening {}", f.display()))?;
                    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                    (Box::new(BufReader::new(file)), len)
                }
                None => (Box::new(BufReader::new(std::io::stdin().lock())), 0),
            };
            let pb = if len > 0 {
                ProgressBar::new_spinner().with_message("importing")
            } else {
                ProgressBar::hidden()
            };
            let counts = exchange::import(&path, &mut input, &mut |n| {
                pb.set_message(format!("importing: {n} events"));
                pb.tick();
            })?;
            pb.finish_and_clear();
            writeln!(
                out,
                "imported {} events, {} tombstones, {} blobs into {}",
                counts.events,
                counts.tombstones,
                counts.blobs,
                path.display()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Recover { actor } => {
            let mut store = open(
                &path,
                OpenOptions {
                    allow_truncated: true,
                    ..Default::default()
                },
            )?;
            let actor = super::actor::resolve(actor);
            match store.record_gap(actor.as_deref())? {
                None => writeln!(out, "nothing to recover: the log reaches HEAD")?,
                Some(seq) => writeln!(
                    out,
                    "recorded the lost events as StoreGap at seq {seq}; the store is writable again"
                )?,
            }
            store.close()?;
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Compact(a) => {
            if a.max_age.is_none() && a.max_bytes.is_none() {
                bail!("give --max-age and/or --max-bytes (the default policy keeps everything)");
            }
            let policy = Policy {
                max_age: a.max_age,
                max_bytes: a.max_bytes,
            };
            let mut store = open(&path, OpenOptions::default())?;
            let actor = super::actor::resolve(a.actor);
            match store.compact(&a.app, &policy, chrono::Utc::now(), actor.as_deref())? {
                None => writeln!(
                    out,
                    "{}: nothing to compact under {}",
                    a.app,
                    policy.describe()
                )?,
                Some(c) => writeln!(
                    out,
                    "{}: removed {} events ({} bytes), summary at seq {}",
                    a.app, c.removed, c.removed_bytes, c.summary_seq
                )?,
            }
            store.close()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
