//! Owns attribution of live changes to people through the Kubernetes audit log: the webhook
//! receiver ([`receiver`]), the audit wire format ([`model`]), the pure matching of drifts to
//! writes ([`correlate`]) and the attributor task that records a `DriftAttributed` event for
//! every drift (and every object created by hand in a namespace an App manages). See
//! docs/audit.md.
//!
//! The attributor follows the store rather than a hook in the reconciler: it reads the
//! `DriftDetected` events as the writer appends them (kind index, oldest first), so the
//! reconcile path is untouched and a drift recorded by any pass is attributed the same way.
//! A drift waits up to `wait` for its audit events (the webhook backend batches: up to
//! `--audit-webhook-batch-max-wait`, 30 s by default), then is recorded attributed or
//! "unattributed"; it is recorded at once when every drifted path is explained.

pub mod buffer;
pub mod correlate;
pub mod model;
pub mod receiver;

use crate::event::{self, Draft, Event, EventKind, ObjectRef};
use crate::store::writer::StoreHandle;
use crate::store::{EventRead, Order, Query, Selector};
use chrono::{DateTime, Utc};
use model::AuditRecord;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit receiver TLS ({path}): {reason}")]
    Tls { path: PathBuf, reason: String },
    #[error("audit receiver: reading the token file: {0}")]
    Tokens(#[from] crate::api::auth::AuthError),
    #[error("audit receiver: listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("audit receiver: give --audit-token-file or --audit-client-ca (or both)")]
    NoCredentials,
    #[error(
        "audit receiver: --audit-client-ca needs --audit-client-identity: a CA (the cluster's \
         above all) signs certificates for many users and nodes, and only the API server's may \
         send audit events"
    )]
    NoClientIdentities,
    #[error("audit receiver: --audit-client-identity without --audit-client-ca verifies nothing")]
    IdentitiesWithoutCa,
}

/// `reckon run --audit-*`.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    pub listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Bearer tokens the webhook kubeconfig carries (`TOKEN` or `NAME TOKEN` per line).
    pub token_file: Option<PathBuf>,
    /// CA of client certificates the webhook kubeconfig may present instead.
    pub client_ca: Option<PathBuf>,
    /// The names (subject CN or SAN) a client certificate must carry to be accepted.
    pub client_identities: Vec<String>,
    /// What each sender (token or certificate identity) may deliver.
    pub sender_rate: receiver::SenderRate,
    /// Users whose writes under reckon's field manager are reckon's own, besides those the
    /// clusters report for the agent's credentials (for servers without `SelfSubjectReview`).
    pub own_users: Vec<String>,
    /// How long a drift waits for its audit events before it is recorded as it stands.
    pub wait: Duration,
    /// Clock difference allowed between the API server and reckon.
    pub skew: Duration,
    /// The receiver listener's bounds (connections, header and body deadlines).
    pub listen_limits: crate::listen::ListenLimits,
}

impl AuditOptions {
    pub fn new(listen: SocketAddr, tls_cert: PathBuf, tls_key: PathBuf) -> AuditOptions {
        AuditOptions {
            listen,
            tls_cert,
            tls_key,
            token_file: None,
            client_ca: None,
            client_identities: Vec::new(),
            sender_rate: receiver::SenderRate::default(),
            own_users: Vec::new(),
            // The webhook backend's default batch wait is 30 s; a little more for delivery.
            wait: Duration::from_secs(40),
            skew: Duration::from_secs(2),
            listen_limits: crate::listen::ListenLimits::default(),
        }
    }
}

/// The plural resource of an object (from discovery), as the audit log names it.
pub type ResourceOf = Arc<dyn Fn(&ObjectRef) -> Option<String> + Send + Sync>;

/// The users the agent's credentials authenticate as on the clusters it reaches, as far as they
/// are known yet (clusters are connected as Apps start).
pub type ReckonUsers = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// Writes kept for matching: bounded by count and by bytes, so a flood of audit events costs a
/// fixed amount of memory (each record is a few hundred bytes plus its request body), shared
/// fairly between senders ([`buffer::Recent`]).
const MAX_RECORDS: usize = 20_000;
const MAX_BYTES: usize = 64 << 20;

/// Room in the receiver's queue: one default webhook batch (400) ten times over; the attributor
/// drains it continuously, so only a burst while it is busy fills it.
const QUEUE: usize = 4_000;

/// Starts the receiver (TLS) and the attributor; both stop when `stop` turns true.
pub async fn start(
    options: AuditOptions,
    store: StoreHandle,
    resource_of: ResourceOf,
    reckon_users: ReckonUsers,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, AuditError> {
    let mut tokens = crate::api::auth::Tokens::default();
    if let Some(path) = &options.token_file {
        tokens.load(path, crate::api::auth::Role::Read)?;
    }
    if tokens.is_empty() && options.client_ca.is_none() {
        return Err(AuditError::NoCredentials);
    }
    match (&options.client_ca, options.client_identities.is_empty()) {
        (Some(_), true) => return Err(AuditError::NoClientIdentities),
        (None, false) => return Err(AuditError::IdentitiesWithoutCa),
        _ => {}
    }
    let tls = receiver::tls_config(
        &options.tls_cert,
        &options.tls_key,
        options.client_ca.as_deref(),
    )?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| AuditError::Listen {
            addr: options.listen,
            source,
        })?;
    tracing::info!(addr = %options.listen, "audit receiver listening (TLS)");
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(receiver::serve(
        listener,
        tls,
        receiver::ReceiverConfig {
            tokens: Arc::new(tokens),
            queue: tx,
            rate: options.sender_rate,
            client_identities: options.client_identities.clone(),
        },
        options.listen_limits,
        stop.clone(),
    ));
    let from = store.reader().last_seq().unwrap_or(0);
    let attributor = Attributor {
        store,
        resource_of,
        wait: chrono::Duration::from_std(options.wait).unwrap_or(chrono::Duration::seconds(40)),
        skew: chrono::Duration::from_std(options.skew).unwrap_or(chrono::Duration::seconds(2)),
        recent: buffer::Recent::new(MAX_RECORDS, MAX_BYTES),
        own_users: options.own_users.clone(),
        reckon_users,
        warned_unknown: false,
        pending: Vec::new(),
        cursor: from,
        namespaces: None,
    };
    Ok(tokio::spawn(attributor.run(rx, stop)))
}

/// A drift waiting for its audit events.
struct Pending {
    seq: u64,
    app: Option<String>,
    drift: event::DriftDetected,
    resource: Option<String>,
    detected: DateTime<Utc>,
    since: DateTime<Utc>,
}

struct Attributor {
    store: StoreHandle,
    resource_of: ResourceOf,
    wait: chrono::Duration,
    skew: chrono::Duration,
    recent: buffer::Recent,
    /// `--audit-own-user`.
    own_users: Vec<String>,
    reckon_users: ReckonUsers,
    /// Said once that reckon's own user is not known.
    warned_unknown: bool,
    pending: Vec<Pending>,
    /// The newest DriftDetected seq already picked up.
    cursor: u64,
    /// Which App manages objects in which namespace, and its inventory identities (for
    /// creations by hand); refreshed when a creation arrives and it is older than a few seconds.
    namespaces: Option<(std::time::Instant, NamespaceIndex)>,
}

#[derive(Default)]
struct NamespaceIndex {
    apps: BTreeMap<String, String>,
    managed: std::collections::BTreeSet<String>,
}

impl Attributor {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<(buffer::Sender, AuditRecord)>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // The guard wait_for returns is not Send: drop it inside the branch's future.
            let stopped = async {
                let _ = stop.wait_for(|s| *s).await;
            };
            tokio::select! {
                _ = stopped => return,
                got = rx.recv() => match got {
                    Some((sender, r)) => {
                        // Who reckon is, asked once for what is queued now, not per record.
                        let reckon = self.reckon();
                        self.creation(&r, &reckon).await;
                        self.recent.keep(&sender, r);
                        // Take whatever else is queued before matching.
                        while let Ok((sender, r)) = rx.try_recv() {
                            self.creation(&r, &reckon).await;
                            self.recent.keep(&sender, r);
                        }
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    if let Err(e) = self.pick_up().await {
                        tracing::warn!(error = %e, "attributor: reading drifts");
                    }
                }
            }
            self.settle(Utc::now()).await;
        }
    }

    /// Whose writes are reckon's own, as far as known now.
    fn reckon(&mut self) -> correlate::Reckon {
        let reckon =
            correlate::Reckon::new(self.own_users.iter().cloned().chain((self.reckon_users)()));
        if !reckon.known() && !self.warned_unknown {
            self.warned_unknown = true;
            tracing::warn!(
                "attributor: the API server did not say which user the agent is (no \
                 SelfSubjectReview before Kubernetes 1.28): any write under the field manager \
                 `reckon` is taken for reckon's own and never attributed; name the agent's \
                 user with --audit-own-user"
            );
        }
        reckon
    }

    /// Reads the drifts appended since the last look.
    async fn pick_up(&mut self) -> Result<(), crate::store::StoreError> {
        let reader = self.store.reader().clone();
        let cursor = self.cursor;
        let found = tokio::task::spawn_blocking(move || -> Result<_, crate::store::StoreError> {
            let page = reader.query(
                &Query::new(Selector::Kind(EventKind::DriftDetected))
                    .oldest_first()
                    .after(Some(cursor))
                    .limit(500),
            )?;
            let mut out = Vec::new();
            for env in page.events {
                let Event::DriftDetected(d) = &env.body.event else {
                    continue;
                };
                let since = last_write_before(&reader, &d.object, env.body.seq)?;
                out.push((
                    env.body.seq,
                    env.body.app.clone(),
                    env.body.time,
                    d.clone(),
                    since,
                ));
            }
            Ok(out)
        })
        .await
        .map_err(|e| crate::store::StoreError::GroupFlush {
            reason: format!("attributor read task: {e}"),
        })??;
        for (seq, app, time, drift, since) in found {
            self.cursor = self.cursor.max(seq);
            let resource = (self.resource_of)(&drift.object);
            self.pending.push(Pending {
                seq,
                app,
                resource,
                detected: time,
                // Without an earlier write of reckon's in the log, the window opens `wait`
                // before the drift (a drift is seen within seconds of the write).
                since: since.unwrap_or(time - self.wait),
                drift,
            });
        }
        Ok(())
    }

    /// Records every pending drift that is explained, or whose wait is over.
    async fn settle(&mut self, now: DateTime<Utc>) {
        if self.pending.is_empty() {
            return;
        }
        let reckon = self.reckon();
        let mut done = Vec::new();
        let mut keep = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            let attribution = match &p.resource {
                Some(resource) => correlate::attribute(
                    &correlate::DriftWindow {
                        object: &p.drift.object,
                        resource,
                        diffs: &p.drift.diffs,
                        detected: p.detected,
                        since: p.since,
                        reckon: &reckon,
                    },
                    self.recent.iter(),
                    self.skew,
                ),
                None => correlate::Attribution {
                    writers: vec![],
                    unexplained: p.drift.diffs.iter().map(|d| d.path.clone()).collect(),
                },
            };
            if attribution.complete() || now > p.detected + self.wait {
                done.push(Draft::new(
                    p.app.as_deref(),
                    Event::DriftAttributed(event::DriftAttributed {
                        object: p.drift.object.clone(),
                        drift_seq: Some(p.seq),
                        writers: attribution.writers,
                        unexplained: attribution.unexplained,
                    }),
                ));
            } else {
                keep.push(p);
            }
        }
        self.pending = keep;
        if !done.is_empty()
            && let Err(e) = self.store.append(done).await
        {
            tracing::error!(error = %e, "attributor: recording attributions");
        }
    }

    /// Records an object created by hand in a namespace an App manages.
    async fn creation(&mut self, r: &AuditRecord, reckon: &correlate::Reckon) {
        if !correlate::is_manual_creation(r, reckon) {
            return;
        }
        let Some(ns) = r.namespace.clone() else {
            return;
        };
        // Refreshed every 5 s, and at once when it does not know the namespace: an index built
        // before the App's first sync (creation records the API server delivered late, from
        // before the agent listened) must not hide a creation in a namespace it manages now.
        let stale = self.namespaces.as_ref().is_none_or(|(at, index)| {
            at.elapsed() > Duration::from_secs(5)
                || (!index.apps.contains_key(&ns) && at.elapsed() > Duration::from_millis(250))
        });
        if stale {
            match self.store.projections().await {
                Ok(p) => {
                    let mut index = NamespaceIndex::default();
                    for (app, state) in &p.apps {
                        for entry in state.inventory.values() {
                            if let Some(ns) = &entry.object.namespace {
                                index.apps.entry(ns.clone()).or_insert_with(|| app.clone());
                            }
                            index.managed.insert(entry.object.identity());
                        }
                    }
                    self.namespaces = Some((std::time::Instant::now(), index));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "attributor: reading inventories");
                    return;
                }
            }
        }
        let Some((_, index)) = &self.namespaces else {
            return;
        };
        let Some(app) = index.apps.get(&ns).cloned() else {
            return;
        };
        let object = correlate::created_object(r);
        if index.managed.contains(&object.identity()) {
            // reckon's own object re-created by hand after a deletion: the drift path covers it.
            return;
        }
        let draft = Draft::new(
            Some(&app),
            Event::DriftAttributed(event::DriftAttributed {
                object,
                drift_seq: None,
                writers: vec![correlate::writer(r, vec![String::new()], "request-body")],
                unexplained: vec![],
            }),
        );
        if let Err(e) = self.store.append(vec![draft]).await {
            tracing::error!(error = %e, "attributor: recording a creation");
        }
    }
}

/// When reckon last wrote `object` before `seq` (its newest apply or correction): the drift's
/// window opens there, since any earlier write was overwritten by it.
fn last_write_before<R: EventRead + ?Sized>(
    reader: &R,
    object: &ObjectRef,
    seq: u64,
) -> Result<Option<DateTime<Utc>>, crate::store::StoreError> {
    let mut cursor = Some(seq);
    // A few pages at most: an object's events are mostly its applies.
    for _ in 0..10 {
        let mut q = Query::new(Selector::Object(object.clone())).limit(50);
        q.order = Order::NewestFirst;
        q.cursor = cursor;
        let page = reader.query(&q)?;
        for env in &page.events {
            if matches!(
                env.body.event,
                Event::ObjectApplied(_) | Event::DriftCorrected(_)
            ) {
                return Ok(Some(env.body.time));
            }
        }
        match page.next {
            Some(n) => cursor = Some(n),
            None => return Ok(None),
        }
    }
    Ok(None)
}
