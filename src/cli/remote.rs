//! Owns the `--server URL` side of the CLI: the query [`Backend`] answered by a running agent's
//! HTTP API (the same typed results as a local store), the flags that name the agent and its
//! token, and rollback/resume recorded through the agent.

use super::backend::Backend;
use crate::api::client::{Client, segment};
use crate::query::{
    AppStatus, Blame, HistoryFilter, ObjectSpec, ReplayedApp, RevisionDiff, RevisionRow,
    RevisionsPage, Shown,
};
use crate::shard::merge::{Cursor, Page};
use chrono::{DateTime, SecondsFormat, Utc};

/// Which agent to ask instead of opening the store.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// Ask the running agent at this URL (its --listen address, e.g. http://127.0.0.1:8080)
    /// instead of opening the store, which the agent holds locked.
    #[arg(long, env = "RECKON_SERVER")]
    pub server: Option<String>,
    /// The agent's API bearer token (read-only is enough for queries; rollback and resume need
    /// an admin token).
    #[arg(
        long,
        env = "RECKON_TOKEN",
        hide_env_values = true,
        requires = "server"
    )]
    pub token: Option<String>,
}

impl ServerArgs {
    /// The client for `--server`, or `None` when the store is to be opened locally.
    pub fn client(&self) -> anyhow::Result<Option<Client>> {
        match &self.server {
            None => Ok(None),
            Some(url) => Ok(Some(Client::new(url, self.token.clone())?)),
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The queries over HTTP.
pub struct Remote {
    client: Client,
}

impl Remote {
    pub fn new(client: Client) -> Remote {
        Remote { client }
    }

    fn events(
        &self,
        f: &HistoryFilter,
        cursor: Option<&Cursor>,
        after: Option<&Cursor>,
    ) -> anyhow::Result<Page> {
        let q = [
            ("app", f.app.clone()),
            ("object", f.object.clone()),
            ("author", f.author.clone()),
            ("revision", f.revision.clone()),
            ("user", f.user.clone()),
            ("kind", f.category.map(|c| c.name().to_string())),
            ("since", f.since.map(rfc3339)),
            ("until", f.until.map(rfc3339)),
            ("limit", Some(f.limit.to_string())),
            (
                "cursor",
                cursor.filter(|_| after.is_none()).map(|c| c.to_string()),
            ),
            ("after", after.map(|a| a.to_string())),
        ];
        Ok(self.client.get("/api/v1/events", &q)?)
    }
}

impl Backend for Remote {
    fn history(&mut self, filter: &HistoryFilter, cursor: Option<&Cursor>) -> anyhow::Result<Page> {
        self.events(filter, cursor, None)
    }

    fn history_after(&mut self, filter: &HistoryFilter, after: &Cursor) -> anyhow::Result<Page> {
        self.events(filter, None, Some(after))
    }

    fn head(&mut self) -> anyhow::Result<Cursor> {
        // The newest event of the whole log: a page of one, newest first. A fleet says where
        // each shard's log ends.
        let page: Page = self
            .client
            .get("/api/v1/events", &[("limit", Some("1".into()))])?;
        Ok(page
            .head
            .unwrap_or_else(|| Cursor::Seq(page.events.first().map(|e| e.seq).unwrap_or(0))))
    }

    fn revisions(&mut self, app: &str) -> anyhow::Result<Vec<RevisionRow>> {
        // Unlimited, like the local answer: every page, following the cursor.
        let path = format!("/api/v1/apps/{}/revisions", segment(app));
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page: RevisionsPage = self.client.get(
                &path,
                &[("limit", Some("1000".into())), ("cursor", cursor.take())],
            )?;
            all.extend(page.revisions);
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    fn blame(
        &mut self,
        object: &ObjectSpec,
        app: Option<&str>,
        field: Option<&str>,
    ) -> anyhow::Result<Blame> {
        let q = [
            ("object", Some(object.to_string())),
            ("app", app.map(str::to_owned)),
            ("field", field.map(str::to_owned)),
        ];
        Ok(self.client.get("/api/v1/blame", &q)?)
    }

    fn show(&mut self, app: &str, rev: &str) -> anyhow::Result<Shown> {
        let path = format!(
            "/api/v1/apps/{}/revisions/{}/manifests",
            segment(app),
            segment(rev)
        );
        Ok(self.client.get(&path, &[])?)
    }

    fn diff(&mut self, app: &str, from: &str, to: &str) -> anyhow::Result<RevisionDiff> {
        let path = format!("/api/v1/apps/{}/diff", segment(app));
        let q = [("from", Some(from.to_owned())), ("to", Some(to.to_owned()))];
        Ok(self.client.get(&path, &q)?)
    }

    fn status(&mut self, app: Option<&str>) -> anyhow::Result<Vec<AppStatus>> {
        match app {
            Some(a) => {
                let one: AppStatus = self
                    .client
                    .get(&format!("/api/v1/apps/{}", segment(a)), &[])?;
                Ok(vec![one])
            }
            None => Ok(self.client.get("/api/v1/apps", &[])?),
        }
    }

    fn replay(&mut self, at: DateTime<Utc>, app: Option<&str>) -> anyhow::Result<Vec<ReplayedApp>> {
        let q = [("at", Some(rfc3339(at))), ("app", app.map(str::to_owned))];
        Ok(self.client.get("/api/v1/replay", &q)?)
    }
}

/// The blocking client lives and dies on a blocking thread (reqwest's blocking client owns a
/// runtime that must not be dropped on an async one).
fn post<B: serde::Serialize>(
    server: &ServerArgs,
    path: &str,
    body: &B,
) -> anyhow::Result<serde_json::Value> {
    let client = server.client()?.expect("called with --server");
    Ok(client.post(path, body)?)
}

/// Through the agent the actor is the token's identity: a different `--actor` would be a lie
/// in the log, so it is refused rather than ignored.
pub fn refuse_actor(actor: Option<&str>) -> anyhow::Result<()> {
    if let Some(a) = actor {
        anyhow::bail!(
            "--actor {a} cannot be used with --server: the agent records the identity of the \
             API token as the actor (name it in the agent's token file)"
        );
    }
    Ok(())
}

/// `POST /api/v1/apps/{app}/rollback`; the agent records it and wakes the App to apply it.
pub async fn rollback(
    server: ServerArgs,
    app: String,
    body: crate::api::handlers::RollbackRequest,
) -> anyhow::Result<std::process::ExitCode> {
    let path = format!("/api/v1/apps/{}/rollback", segment(&app));
    let plan: serde_json::Value =
        tokio::task::spawn_blocking(move || post(&server, &path, &body)).await??;
    let short = |v: &serde_json::Value| {
        v.as_str()
            .map(|s| s[..s.len().min(12)].to_string())
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "{app}: rolled back to {} (was {}) through the agent; pinned until `reckon resume {app}`; \
         the agent applies it now",
        short(&plan["revision"]),
        short(&plan["previous"]),
    );
    if let Some(warning) = plan["warning"].as_str() {
        eprintln!("{app}: warning: {warning}");
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `POST /api/v1/apps/{app}/resume`; the agent records it and follows Git again.
pub async fn resume(
    server: ServerArgs,
    app: String,
    reason: Option<String>,
) -> anyhow::Result<std::process::ExitCode> {
    let body = crate::api::handlers::ResumeRequest { reason };
    let path = format!("/api/v1/apps/{}/resume", segment(&app));
    let plan: serde_json::Value =
        tokio::task::spawn_blocking(move || post(&server, &path, &body)).await??;
    let unpinned = plan["unpinned"].as_str().unwrap_or("-");
    println!(
        "{app}: resumed through the agent (was pinned to {}); follows Git again",
        &unpinned[..unpinned.len().min(12)]
    );
    Ok(std::process::ExitCode::SUCCESS)
}
