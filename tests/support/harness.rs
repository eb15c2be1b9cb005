//! One store, one Git mirror cache, one Git repository and a namespace, shared by a test's Apps:
//! what the reconciler tests drive passes against.

use super::TestNamespace;
use super::sync::{Requests, counting_client};
use reckon::apply::Catalog;
use reckon::config;
use reckon::event::envelope::Envelope;
use reckon::event::{Event, SyncCounts, SyncOutcome};
use reckon::reconcile::{Live, PassOptions, PassReport, PassStatus, Reconciler};
use reckon::render::SecretKey;
use reckon::source::{GitSource, config::spec_for};
use reckon::store::{OpenOptions, SledStore, StoreError, writer};
use reckon_testenv::git::Fixture;
use std::sync::Arc;

pub struct Harness {
    pub fixture: Fixture,
    pub ns: TestNamespace,
    pub store: writer::StoreHandle,
    writer: Option<tokio::task::JoinHandle<Result<(), StoreError>>>,
    _store_dir: tempfile::TempDir,
    pub cache: tempfile::TempDir,
    /// Every request the catalog's client sent (for zero-write proofs).
    pub requests: Arc<Requests>,
    pub catalog: Arc<Catalog>,
}

impl Harness {
    pub async fn new(prefix: &str) -> Self {
        let (client, requests) = counting_client().await;
        let ns = TestNamespace::create(&client, prefix).await;
        let catalog = super::sync::catalog(client).await;
        let store_dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(store_dir.path(), OpenOptions::create()).unwrap();
        let (store, writer) = writer::spawn(store);
        Self {
            fixture: Fixture::new().unwrap(),
            ns,
            store,
            writer: Some(writer),
            _store_dir: store_dir,
            cache: tempfile::tempdir().unwrap(),
            requests,
            catalog: Arc::new(catalog),
        }
    }

    /// An App on this harness's repository (`path` in it) and namespace; `extra` is appended
    /// to its YAML (indented as App keys).
    pub fn app(&self, name: &str, path: &str, extra: &str) -> config::App {
        let url = self.fixture.file_url();
        let app =
            super::one_app_config(name, &url, path, None, &super::kubeconfig(), &self.ns.name);
        let text = format!("{app}{extra}");
        let cfg = config::parse(&text, std::path::Path::new("reckon.yaml")).unwrap();
        cfg.apps.into_iter().next().unwrap()
    }

    /// A fresh reconciler (nothing in memory: what a restarted agent or `reckon sync` has).
    pub fn reconciler(&self, app: config::App, key: [u8; 32]) -> Reconciler {
        let source = GitSource::new(spec_for(&app).unwrap(), self.cache.path());
        Reconciler::new(
            app,
            source,
            self.store.clone(),
            SecretKey::new(key),
            self.catalog.clone(),
            Live::Direct,
        )
    }

    /// Commits `files` (`None` removes the path) and pushes; returns the commit's SHA.
    pub fn commit(&self, message: &str, files: &[(&str, Option<&str>)]) -> String {
        let mut c = self.fixture.commit(message);
        for (path, contents) in files {
            c = match contents {
                Some(text) => c.write(path, text),
                None => c.remove(path),
            };
        }
        let sha = c.create().unwrap();
        self.fixture.push().unwrap();
        sha
    }

    /// Every event of `app` from sequence `from` on, oldest first.
    pub fn envelopes(&self, app: &str, from: u64) -> Vec<Envelope> {
        self.store
            .reader()
            .iter_from(from)
            .map(|e| e.unwrap())
            .filter(|e| e.body.app.as_deref() == Some(app))
            .collect()
    }

    /// Every event of `app` so far, oldest first.
    pub fn events(&self, app: &str) -> Vec<Event> {
        self.envelopes(app, 1)
            .into_iter()
            .map(|e| e.body.event)
            .collect()
    }

    pub async fn close(mut self) {
        self.store.clone().close().await.unwrap();
        self.writer.take().unwrap().await.unwrap().unwrap();
    }
}

/// One pass of `r` that fetches first (as the agent's timer runs it); fails the test on an error.
pub async fn pass(r: &mut Reconciler) -> PassReport {
    pass_with(r, true).await
}

/// One pass of `r`, fetching first only when `fetch` (a pinned App's pass does not need it).
pub async fn pass_with(r: &mut Reconciler, fetch: bool) -> PassReport {
    r.pass(&PassOptions {
        fetch,
        progress: None,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// The outcome and counts of a pass that ran a sync (fails the test otherwise).
pub fn synced(report: &PassReport) -> (SyncOutcome, SyncCounts) {
    match &report.status {
        PassStatus::Synced { outcome, counts } => (*outcome, counts.clone()),
        other => panic!("expected a sync, got {other:?}"),
    }
}
