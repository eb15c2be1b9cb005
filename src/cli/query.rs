//! Owns the read-only query commands: `history`, `revisions`, `blame`, `show`, `diff --from
//! --to`, `status` and `replay`. Each obtains typed results from a [`Backend`] and renders them;
//! rendering never knows where the data came from.

use super::backend::{Backend, Local, StoreLocked};
use super::output::{self, Cell, Colour, Format, Style, Table, machine, short, time};
use crate::query::{
    AppStatus, Blame, Category, EventRow, HistoryFilter, ObjectSpec, ReplayedApp, RevisionDiff,
    RevisionRow, Shown,
};
use crate::shard::merge::{Cursor, MissingShard};
use anyhow::Context;
use chrono::{DateTime, Utc};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Where the data comes from and how it is printed: shared by every query command.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// The store directory. It is opened, never created, and only while no other process
    /// holds it (a running agent does: ask it with --server instead).
    #[arg(long, env = "RECKON_STORE", default_value = "./reckon-store")]
    pub store: PathBuf,
    /// Output format: table (default), json, yaml or jsonl (one JSON object per line).
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    #[command(flatten)]
    pub server: super::remote::ServerArgs,
}

impl Common {
    /// The source the flags name: the agent at --server, else the local store.
    pub fn source(&self) -> anyhow::Result<Box<dyn Backend>> {
        Ok(match self.server.client()? {
            Some(client) => Box::new(super::remote::Remote::new(client)),
            None => Box::new(Local::new(&self.store)),
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    common: Common,
    /// Only this App's events.
    #[arg(value_parser = super::app_name)]
    app: Option<String>,
    /// Only events about this object: KIND/NAMESPACE/NAME, or KIND/NAME when cluster-scoped;
    /// KIND may name its group (Deployment.apps).
    #[arg(long)]
    object: Option<String>,
    /// Only commits written or committed by this email (case-insensitive).
    #[arg(long)]
    author: Option<String>,
    /// Only events about this revision (a SHA or a unique prefix).
    #[arg(long)]
    revision: Option<String>,
    /// Only changes the Kubernetes audit log attributes to this user (exact username, e.g.
    /// alice or system:serviceaccount:ci:deployer); see docs/audit.md.
    #[arg(long)]
    user: Option<String>,
    /// Only events of this category: commit, drift, apply, prune, rollback or error.
    #[arg(long, value_parser = parse_category)]
    kind: Option<Category>,
    /// Only events at or after this time: a duration ago (90m, 2h, 7d) or RFC 3339.
    #[arg(long, value_parser = output::parse_time)]
    since: Option<DateTime<Utc>>,
    /// Only events at or before this time: a duration ago (90m, 2h, 7d) or RFC 3339.
    #[arg(long, value_parser = output::parse_time)]
    until: Option<DateTime<Utc>>,
    /// Events per page (newest first).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Continue after this event: the `next` of a previous page (printed after a full page); a
    /// sequence number, or SHARD:POS,... from a sharded fleet.
    #[arg(long)]
    cursor: Option<Cursor>,
    /// After the newest page, keep printing matching events as they are appended, until
    /// Ctrl-C. On a local store this works only while no other process holds it (each poll
    /// opens it briefly); to follow a running agent use --server.
    #[arg(long, short)]
    follow: bool,
    /// Seconds between polls with --follow.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
}

fn parse_category(s: &str) -> Result<Category, String> {
    s.parse()
        .map_err(|e: crate::query::QueryError| e.to_string())
}

#[derive(Debug, clap::Args)]
pub struct RevisionsArgs {
    #[command(flatten)]
    common: Common,
    /// The App.
    #[arg(value_parser = super::app_name)]
    app: String,
}

#[derive(Debug, clap::Args)]
pub struct BlameArgs {
    #[command(flatten)]
    common: Common,
    /// The object: KIND/NAMESPACE/NAME, or KIND/NAME when cluster-scoped (Deployment.apps/shop/web).
    object: String,
    /// Only this field or the fields under it: a JSON pointer (/spec/replicas) or dotted
    /// (spec.replicas).
    #[arg(long)]
    field: Option<String>,
    /// The App managing the object, when several do.
    #[arg(long)]
    #[arg(value_parser = super::app_name)]
    app: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    common: Common,
    /// APP@REV: the App and a recorded revision (full SHA or unique prefix).
    target: String,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    common: Common,
    /// Only this App.
    #[arg(value_parser = super::app_name)]
    app: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    common: Common,
    /// The time to replay to: a duration ago (90m, 2h, 7d) or RFC 3339.
    #[arg(long, value_parser = output::parse_time)]
    at: DateTime<Utc>,
    /// Only this App.
    #[arg(value_parser = super::app_name)]
    app: Option<String>,
}

/// Runs a blocking command body off the async threads.
async fn blocking<F>(f: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce() -> anyhow::Result<ExitCode> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await?
}

fn category_colour(c: Option<Category>) -> Option<Colour> {
    match c? {
        Category::Commit => Some(Colour::Cyan),
        Category::Drift => Some(Colour::Yellow),
        Category::Apply => Some(Colour::Green),
        Category::Prune => Some(Colour::Dim),
        Category::Rollback => Some(Colour::Yellow),
        Category::Error => Some(Colour::Red),
    }
}

/// With `fleet`, events come from several shards' stores: a SHARD column says whose `SEQ` it is.
fn history_table(events: &[EventRow], fleet: bool) -> Table {
    let mut head = vec!["SEQ", "TIME", "APP", "KIND", "OBJECT", "SUMMARY"];
    if fleet {
        head.insert(0, "SHARD");
    }
    let mut t = Table::new(&head);
    for e in events {
        let mut cells = Vec::with_capacity(head.len());
        if fleet {
            cells.push(Cell::colour(
                e.shard.map_or_else(|| "-".into(), |s| s.to_string()),
                Colour::Dim,
            ));
        }
        cells.extend([
            Cell::colour(e.seq.to_string(), Colour::Dim),
            time(&e.time).into(),
            e.app.clone().unwrap_or_else(|| "-".into()).into(),
            Cell {
                text: e.kind.clone(),
                colour: category_colour(e.category),
            },
            e.object.clone().unwrap_or_else(|| "-".into()).into(),
            match &e.actor {
                Some(a) if e.kind == "IntentRecorded" => format!("{} (by {a})", e.summary),
                _ => e.summary.clone(),
            }
            .into(),
        ]);
        t.row(cells);
    }
    t
}

pub async fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    if args.follow {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::SeqCst);
            }
        });
    }
    blocking(move || history_blocking(args, stop)).await
}

fn history_blocking(args: HistoryArgs, stop: Arc<AtomicBool>) -> anyhow::Result<ExitCode> {
    let mut source = args.common.source()?;
    let filter = HistoryFilter {
        app: args.app.clone(),
        object: args.object.clone(),
        author: args.author.clone(),
        revision: args.revision.clone(),
        user: args.user.clone(),
        category: args.kind,
        since: args.since,
        until: args.until,
        limit: args.limit.clamp(1, crate::query::MAX_LIMIT),
        cursor: None,
    };
    // Where following starts: taken before the page, so nothing appended meanwhile is missed.
    let head = if args.follow {
        Some(source.head()?)
    } else {
        None
    };
    // A page may come back short (a sparse filter hit the scan budget): keep reading until it
    // is full or nothing further matches.
    let mut events = Vec::new();
    let mut f = filter.clone();
    let mut cursor = args.cursor.clone();
    let mut missing = Vec::new();
    let next = loop {
        let page = source.history(&f, cursor.as_ref())?;
        events.extend(page.events);
        missing.extend(page.missing);
        match page.next {
            Some(n) if events.len() < filter.limit => {
                cursor = Some(n);
                f.limit = filter.limit - events.len();
            }
            other => break other,
        }
    };
    let fleet = events.iter().any(|e| e.shard.is_some());
    let format = args.common.output;
    let style = Style::detect();
    let mut out = std::io::stdout().lock();
    if let Some(head) = head {
        // Following reads top-down in time, like tail -f.
        events.reverse();
        let fleet = matches!(head, Cursor::Shards(_));
        print_follow(&mut out, format, &style, &events, true, fleet)?;
        out.flush()?;
        drop(out);
        source.release();
        return follow(
            &mut *source,
            &filter,
            head,
            format,
            &style,
            &stop,
            args.interval,
        );
    }
    #[derive(serde::Serialize)]
    struct Page<'a> {
        events: &'a [EventRow],
        next: Option<Cursor>,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        missing: &'a [MissingShard],
    }
    let page = Page {
        events: &events,
        next: next.clone(),
        missing: &missing,
    };
    if !machine(&mut out, format, &page, &events)? {
        if events.is_empty() {
            writeln!(out, "no events match")?;
        } else {
            out.write_all(
                history_table(&events, fleet)
                    .render(&style, output::terminal_width())
                    .as_bytes(),
            )?;
        }
        if let Some(n) = next {
            writeln!(out, "(more: --cursor {n})")?;
        }
        for m in &missing {
            writeln!(
                out,
                "(incomplete: shard {} at {} did not answer: {})",
                m.shard, m.peer, m.error
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_follow(
    out: &mut dyn Write,
    format: Format,
    style: &Style,
    events: &[EventRow],
    header: bool,
    fleet: bool,
) -> anyhow::Result<()> {
    match format {
        Format::Table => {
            if events.is_empty() {
                return Ok(());
            }
            let text = history_table(events, fleet).render(style, output::terminal_width());
            let skip = if header { 0 } else { 1 };
            for line in text.lines().skip(skip) {
                writeln!(out, "{line}")?;
            }
        }
        Format::Json | Format::Jsonl => {
            for e in events {
                writeln!(out, "{}", serde_json::to_string(e)?)?;
            }
        }
        Format::Yaml => {
            for e in events {
                writeln!(out, "---")?;
                out.write_all(serde_saphyr::to_string(e)?.as_bytes())?;
            }
        }
    }
    Ok(())
}

/// How long following waits for a store another process holds before giving up (a `reckon
/// sync` holds it for seconds; an agent for good).
const LOCKED_PATIENCE: Duration = Duration::from_secs(30);

fn follow(
    source: &mut dyn Backend,
    filter: &HistoryFilter,
    mut after: Cursor,
    format: Format,
    style: &Style,
    stop: &AtomicBool,
    interval: f64,
) -> anyhow::Result<ExitCode> {
    let interval = Duration::from_secs_f64(interval.max(0.05));
    let mut locked_since: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        match source.history_after(filter, &after) {
            Ok(page) => {
                locked_since = None;
                let fleet = matches!(after, Cursor::Shards(_));
                let mut out = std::io::stdout().lock();
                print_follow(&mut out, format, style, &page.events, false, fleet)?;
                out.flush()?;
                if let Some(n) = page.next {
                    after = n;
                }
                if !page.events.is_empty() && page.events.len() == filter.limit {
                    continue; // more is waiting: no pause
                }
            }
            Err(e) if e.downcast_ref::<StoreLocked>().is_some() => {
                let since = *locked_since.get_or_insert_with(Instant::now);
                if since.elapsed() > LOCKED_PATIENCE {
                    return Err(e.context(format!(
                        "following stopped: the store stayed locked for {}s",
                        LOCKED_PATIENCE.as_secs()
                    )));
                }
            }
            Err(e) => return Err(e),
        }
        // Sleep in small steps so that Ctrl-C is answered at once.
        let until = Instant::now() + interval;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50).min(interval));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn outcome_cell(outcome: Option<crate::event::SyncOutcome>) -> Cell {
    use crate::event::SyncOutcome as O;
    match outcome {
        None => Cell::new("-"),
        Some(O::Succeeded) => Cell::colour("Succeeded", Colour::Green),
        Some(O::PartiallyFailed) => Cell::colour("PartiallyFailed", Colour::Yellow),
        Some(O::Failed) => Cell::colour("Failed", Colour::Red),
    }
}

fn opt_time(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref().map(time).unwrap_or_else(|| "-".into())
}

pub fn revisions_table(rows: &[RevisionRow]) -> Table {
    let mut t = Table::new(&[
        "REVISION",
        "AUTHOR",
        "FIRST SEEN",
        "APPLIED",
        "OUTCOME",
        "OBJECTS",
        "SUMMARY",
    ]);
    for r in rows {
        t.row(vec![
            Cell::colour(short(&r.sha), Colour::Cyan),
            r.author_email.clone().unwrap_or_else(|| "-".into()).into(),
            time(&r.first_seen).into(),
            opt_time(&r.applied_at).into(),
            outcome_cell(r.outcome),
            r.objects_changed.to_string().into(),
            r.summary.clone().unwrap_or_default().into(),
        ]);
    }
    t
}

pub async fn revisions(args: RevisionsArgs) -> anyhow::Result<ExitCode> {
    blocking(move || {
        let rows = args.common.source()?.revisions(&args.app)?;
        let mut out = std::io::stdout().lock();
        if !machine(&mut out, args.common.output, &rows, &rows)? {
            let style = Style::detect();
            out.write_all(
                revisions_table(&rows)
                    .render(&style, output::terminal_width())
                    .as_bytes(),
            )?;
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

fn drift_note(d: &crate::query::FieldDrift) -> String {
    let who = if d.managers.is_empty() {
        "unknown manager".to_string()
    } else {
        d.managers
            .iter()
            .map(|m| m.manager.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    // The person, from the audit log, beside the field manager.
    let who = match &d.changed_by {
        None => who,
        Some(people) if people.is_empty() => format!("{who} (person unattributed)"),
        Some(people) => {
            let names: Vec<String> = people
                .iter()
                .map(|w| match &w.subresource {
                    Some(sub) => format!("{} ({} {sub})", w.username, w.verb),
                    None => format!("{} ({})", w.username, w.verb),
                })
                .collect();
            format!("{who}: {}", names.join(", "))
        }
    };
    // A new revision's apply that wrote the field ended the drift with its own value: that is
    // not a put back (issue 15).
    let fate = match (&d.corrected_at, &d.superseded_by, &d.superseded_at) {
        (Some(t), _, _) => format!("put back {}", time(t)),
        (None, Some(rev), Some(t)) => format!("superseded by {} {}", short(rev), time(t)),
        (None, Some(rev), None) => format!("superseded by {}", short(rev)),
        (None, None, _) => "not put back".into(),
    };
    format!(
        "{}  {}  {}: {} -> {}  by {who}; {fate}",
        time(&d.time),
        d.seq,
        if d.path.is_empty() {
            "(object)"
        } else {
            &d.path
        },
        d.expected.as_deref().unwrap_or("(unset)"),
        d.actual.as_deref().unwrap_or("(unset)"),
    )
}

pub fn render_blame(b: &Blame, style: &Style, width: Option<usize>) -> String {
    let mut s = format!(
        "{} ({}) managed by App {}\n",
        style.paint(&b.object, Some(Colour::Bold)),
        b.api_version,
        b.app
    );
    let mut t = Table::new(&[
        "FIELD", "VALUE", "REVISION", "AUTHOR", "APPLIED", "DRIFTS", "SUMMARY",
    ]);
    for f in &b.fields {
        let value = match &f.value {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let (rev, author, applied, summary) = match &f.set_by {
            Some(c) => (
                Cell::colour(short(&c.revision), Colour::Cyan),
                c.author_email.clone().unwrap_or_else(|| "-".into()),
                time(&c.applied_at),
                c.summary.clone().unwrap_or_default(),
            ),
            None => (Cell::new("?"), "-".into(), "-".into(), String::new()),
        };
        let superseded = f
            .drifts
            .iter()
            .filter(|d| !d.corrected && d.superseded_by.is_some())
            .count();
        let open = f
            .drifts
            .iter()
            .filter(|d| !d.corrected && d.superseded_by.is_none())
            .count();
        let drifts = match (f.drifts.len(), open, superseded) {
            (0, _, _) => Cell::new("-"),
            (n, 0, 0) => Cell::colour(format!("{n}, put back"), Colour::Yellow),
            (n, 0, s) if s == n => Cell::colour(format!("{n}, superseded"), Colour::Yellow),
            (n, 0, s) => Cell::colour(
                format!("{n}, {} put back, {s} superseded", n - s),
                Colour::Yellow,
            ),
            (n, o, _) => Cell::colour(format!("{n}, {o} open"), Colour::Red),
        };
        t.row(vec![
            f.path.clone().into(),
            value.into(),
            rev,
            author.into(),
            applied.into(),
            drifts,
            summary.into(),
        ]);
    }
    s.push_str(&t.render(style, width));
    let mut drifts: Vec<&crate::query::FieldDrift> = b
        .fields
        .iter()
        .flat_map(|f| f.drifts.iter())
        .chain(b.object_drifts.iter())
        .collect();
    drifts.sort_by_key(|d| (d.seq, d.path.clone()));
    drifts.dedup_by_key(|d| (d.seq, d.path.clone()));
    if !drifts.is_empty() {
        s.push_str("\nDrifts:\n");
        for d in drifts {
            s.push_str(&format!("  {}\n", drift_note(d)));
        }
    }
    s
}

pub async fn blame(args: BlameArgs) -> anyhow::Result<ExitCode> {
    blocking(move || {
        let object: ObjectSpec = args.object.parse()?;
        let b = args
            .common
            .source()?
            .blame(&object, args.app.as_deref(), args.field.as_deref())?;
        let mut out = std::io::stdout().lock();
        if !machine(&mut out, args.common.output, &b, &b.fields)? {
            let style = Style::detect();
            out.write_all(render_blame(&b, &style, output::terminal_width()).as_bytes())?;
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

/// `APP@REV`.
fn split_target(target: &str) -> anyhow::Result<(&str, &str)> {
    match target.split_once('@') {
        Some((app, rev)) if !app.is_empty() && !rev.is_empty() => Ok((app, rev)),
        _ => anyhow::bail!("{target:?}: expected APP@REV (e.g. shop@9e37a1b2)"),
    }
}

/// The manifests as a multi-document YAML stream, as `kubectl get -o yaml` users expect.
pub fn render_shown(s: &Shown) -> anyhow::Result<String> {
    let mut text = format!(
        "# App {} at {} (manifests {})\n",
        s.app, s.revision, s.digest
    );
    for m in &s.manifests {
        text.push_str("---\n");
        text.push_str(&serde_saphyr::to_string(m).context("writing YAML")?);
    }
    Ok(text)
}

pub async fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    blocking(move || {
        let (app, rev) = split_target(&args.target)?;
        let shown = args.common.source()?.show(app, rev)?;
        let mut out = std::io::stdout().lock();
        if !machine(&mut out, args.common.output, &shown, &shown.manifests)? {
            out.write_all(render_shown(&shown)?.as_bytes())?;
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

pub fn render_diff(d: &RevisionDiff, style: &Style) -> String {
    let mut s = format!(
        "{}: {} -> {}\n",
        d.app,
        style.paint(short(&d.from), Some(Colour::Cyan)),
        style.paint(short(&d.to), Some(Colour::Cyan))
    );
    let value = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "(unset)".into())
    };
    for o in &d.added {
        s.push_str(&style.paint(&format!("+ {o}\n"), Some(Colour::Green)));
    }
    for o in &d.removed {
        s.push_str(&style.paint(&format!("- {o}\n"), Some(Colour::Red)));
    }
    for o in &d.changed {
        s.push_str(&style.paint(&format!("~ {}\n", o.object), Some(Colour::Yellow)));
        for f in &o.fields {
            s.push_str(&format!(
                "    {}: {} -> {}\n",
                f.path,
                value(&f.from),
                value(&f.to)
            ));
        }
    }
    if d.added.is_empty() && d.removed.is_empty() && d.changed.is_empty() {
        s.push_str("no differences\n");
    }
    s
}

/// `reckon diff APP --from REV --to REV`: exit code 1 when the revisions differ, 0 when not.
pub async fn diff_recorded(
    common: Common,
    app: String,
    from: String,
    to: String,
) -> anyhow::Result<ExitCode> {
    blocking(move || {
        let d = common.source()?.diff(&app, &from, &to)?;
        let mut out = std::io::stdout().lock();
        let changed: Vec<&crate::query::ChangedObject> = d.changed.iter().collect();
        if !machine(&mut out, common.output, &d, &changed)? {
            out.write_all(render_diff(&d, &Style::detect()).as_bytes())?;
        }
        let same = d.added.is_empty() && d.removed.is_empty() && d.changed.is_empty();
        Ok(if same {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
    .await
}

/// A fleet's rows carry their shard: then a SHARD column comes first.
pub fn status_table(rows: &[AppStatus]) -> Table {
    let fleet = rows.iter().any(|a| a.shard.is_some());
    let mut head = vec![
        "APP",
        "INTENT",
        "REVISION",
        "OBSERVED",
        "LAST SYNC",
        "HEALTH",
        "DRIFT",
        "OBJECTS",
    ];
    if fleet {
        head.insert(0, "SHARD");
    }
    let mut t = Table::new(&head);
    for a in rows {
        let intent = if a.pinned {
            let mut s = format!(
                "PINNED ({}) at {}",
                a.intent.kind,
                a.intent.revision.as_deref().map(short).unwrap_or("?")
            );
            if let Some(actor) = &a.intent.actor {
                s.push_str(&format!(" by {actor}"));
            }
            if let Some(reason) = &a.intent.reason {
                s.push_str(&format!(": {reason}"));
            }
            Cell::colour(s, Colour::Yellow)
        } else if a.suspended {
            Cell::colour("suspended", Colour::Yellow)
        } else {
            Cell::new("follow")
        };
        let last = match &a.last_sync {
            Some(l) => {
                let text = format!("{} {:?}", time(&l.time), l.outcome);
                match l.outcome {
                    crate::event::SyncOutcome::Succeeded => Cell::new(text),
                    crate::event::SyncOutcome::PartiallyFailed => {
                        Cell::colour(text, Colour::Yellow)
                    }
                    crate::event::SyncOutcome::Failed => Cell::colour(text, Colour::Red),
                }
            }
            None => Cell::new("-"),
        };
        let health = match a.health {
            None => Cell::new("-"),
            Some(crate::event::Health::Healthy) => Cell::colour("Healthy", Colour::Green),
            Some(h @ (crate::event::Health::Degraded | crate::event::Health::Missing)) => {
                Cell::colour(format!("{h:?}"), Colour::Red)
            }
            Some(h) => Cell::colour(format!("{h:?}"), Colour::Yellow),
        };
        let drift = if a.drift_count == 0 {
            Cell::new("0")
        } else {
            Cell::colour(a.drift_count.to_string(), Colour::Yellow)
        };
        let mut cells = Vec::with_capacity(head.len());
        if fleet {
            cells.push(Cell::colour(
                a.shard.map_or_else(|| "-".into(), |s| s.to_string()),
                Colour::Dim,
            ));
        }
        cells.extend([
            Cell::colour(a.app.clone(), Colour::Bold),
            intent,
            a.applied_revision
                .as_deref()
                .map(short)
                .unwrap_or("-")
                .into(),
            a.observed_revision
                .as_deref()
                .map(short)
                .unwrap_or("-")
                .into(),
            last,
            health,
            drift,
            a.objects.to_string().into(),
        ]);
        t.row(cells);
    }
    t
}

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    blocking(move || {
        let rows = args.common.source()?.status(args.app.as_deref())?;
        let mut out = std::io::stdout().lock();
        if !machine(&mut out, args.common.output, &rows, &rows)? {
            if rows.is_empty() {
                writeln!(out, "no Apps recorded")?;
            } else {
                out.write_all(
                    status_table(&rows)
                        .render(&Style::detect(), output::terminal_width())
                        .as_bytes(),
                )?;
                // The table says a sync failed; these say what, refusals included.
                for a in rows.iter().filter(|a| !a.failures.is_empty()) {
                    writeln!(out, "\n{} failed in its last sync:", a.app)?;
                    for f in &a.failures {
                        writeln!(out, "  {f}")?;
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

pub fn render_replay(apps: &[ReplayedApp], style: &Style, width: Option<usize>) -> String {
    let mut s = String::new();
    for (i, a) in apps.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        let intent = if a.pinned {
            style.paint(
                &format!(
                    "PINNED ({}) at {}{}{}",
                    a.intent.kind,
                    a.intent.revision.as_deref().map(short).unwrap_or("?"),
                    a.intent
                        .actor
                        .as_deref()
                        .map(|x| format!(" by {x}"))
                        .unwrap_or_default(),
                    a.intent
                        .reason
                        .as_deref()
                        .map(|x| format!(": {x}"))
                        .unwrap_or_default()
                ),
                Some(Colour::Yellow),
            )
        } else {
            "follow".to_string()
        };
        s.push_str(&format!(
            "{} at {} (seq {}): {intent}; applied {}; observed {}\n",
            style.paint(&a.app, Some(Colour::Bold)),
            time(&a.at),
            a.seq,
            a.applied_revision.as_deref().map(short).unwrap_or("-"),
            a.observed_revision.as_deref().map(short).unwrap_or("-"),
        ));
        let mut t = Table::new(&["OBJECT", "REVISION", "APPLIED"]);
        for o in &a.inventory {
            t.row(vec![
                o.object.clone().into(),
                Cell::colour(short(&o.revision), Colour::Cyan),
                time(&o.applied_at).into(),
            ]);
        }
        s.push_str(&t.render(style, width));
    }
    s
}

pub async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    blocking(move || {
        let apps = args.common.source()?.replay(args.at, args.app.as_deref())?;
        let mut out = std::io::stdout().lock();
        if !machine(&mut out, args.common.output, &apps, &apps)? {
            if apps.is_empty() {
                writeln!(out, "no App had events by {}", time(&args.at))?;
            } else {
                out.write_all(
                    render_replay(&apps, &Style::detect(), output::terminal_width()).as_bytes(),
                )?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{BlameField, FieldDrift};

    fn drift(seq: u64, corrected: bool, superseded_by: Option<&str>) -> FieldDrift {
        let at = chrono::DateTime::from_timestamp(1_764_000_000 + seq as i64, 0).unwrap();
        FieldDrift {
            seq,
            time: at,
            path: "/spec/template/spec/containers/0/image".into(),
            expected: Some("\"api:1\"".into()),
            actual: Some("\"api:hand\"".into()),
            managers: vec![],
            corrected,
            corrected_at: corrected.then_some(at),
            corrected_seq: corrected.then_some(seq + 1),
            superseded_by: superseded_by.map(str::to_string),
            superseded_at: superseded_by.map(|_| at),
            superseded_seq: superseded_by.map(|_| seq + 1),
            changed_by: None,
        }
    }

    /// Issue 15: a drift a new revision's apply replaced is "superseded by" that revision, never
    /// "put back", in the drift's line and in the DRIFTS column.
    #[test]
    fn a_superseded_drift_is_not_called_put_back() {
        let rev = "9e37aa11bb22cc33dd44ee55ff6677889900aabb";
        let note = drift_note(&drift(7, false, Some(rev)));
        assert!(
            note.ends_with("superseded by 9e37aa11bb22 2025-11-24T16:00:07Z"),
            "{note}"
        );
        assert!(!note.contains("put back"), "{note}");
        assert!(drift_note(&drift(7, true, None)).contains("; put back "));
        assert!(drift_note(&drift(7, false, None)).ends_with("; not put back"));

        let blame = |drifts: Vec<FieldDrift>| Blame {
            app: "shop".into(),
            object: "Deployment.apps/web/api".into(),
            api_version: "apps/v1".into(),
            fields: vec![BlameField {
                path: "/spec/template/spec/containers/0/image".into(),
                value: serde_json::json!("api:2"),
                set_by: None,
                drifts,
            }],
            object_drifts: vec![],
        };
        let table = |drifts| render_blame(&blame(drifts), &Style::plain(), None);
        assert!(table(vec![drift(7, false, Some(rev))]).contains("1, superseded"));
        assert!(
            table(vec![drift(3, true, None), drift(7, false, Some(rev))])
                .contains("2, 1 put back, 1 superseded")
        );
        assert!(table(vec![drift(3, true, None)]).contains("1, put back"));
        assert!(table(vec![drift(3, false, None)]).contains("1, 1 open"));
    }
}
