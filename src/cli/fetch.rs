//! Owns `reckon fetch`: one observation of each configured App's Git source, recorded in the
//! event store (every new commit, rewrite, refused signature or failure becomes an event).

use crate::config;
use crate::fetch;
use crate::source::config::source_for;
use crate::store::writer;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// The configuration file listing the Apps.
    #[arg(long, short, env = "RECKON_CONFIG", default_value = "reckon.yaml")]
    config: PathBuf,
    /// The store directory (created when missing).
    #[arg(long, env = "RECKON_STORE", default_value = "./reckon-store")]
    store: PathBuf,
    /// Where the bare mirrors of the remotes live.
    #[arg(long, env = "RECKON_CACHE", default_value = "./reckon-cache")]
    cache: PathBuf,
    /// Only these Apps (default: every App in the file).
    apps: Vec<String>,
}

pub async fn run(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let cfg = config::load(&args.config)?;
    for name in &args.apps {
        if cfg.app(name).is_none() {
            anyhow::bail!("no app named {name:?} in {}", args.config.display());
        }
    }
    let store = super::open_writable(&args.store)?;
    let (handle, task) = writer::spawn(store);
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for app in &cfg.apps {
        if !args.apps.is_empty() && !args.apps.contains(&app.name) {
            continue;
        }
        let source = source_for(app, &args.cache)?;
        let o = fetch::fetch(&handle, &app.name, &source).await?;
        let short = |h: &Option<String>| {
            h.as_deref()
                .map(|s| s[..s.len().min(12)].to_string())
                .unwrap_or_else(|| "-".into())
        };
        match &o.failure {
            Some(e) => {
                failed = true;
                writeln!(
                    out,
                    "{}: fetch failed, keeping {}: {e}",
                    app.name,
                    short(&o.deployable_head)
                )?;
            }
            None => writeln!(
                out,
                "{}: {} event(s) recorded; head {}, deployable {}",
                app.name,
                o.appended,
                short(&o.observed_head),
                short(&o.deployable_head)
            )?,
        }
    }
    handle.close().await?;
    task.await??;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
