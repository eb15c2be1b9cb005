//! Owns the single-writer Lease of `reckon run --lease`: waiting in standby until this process
//! holds a coordination.k8s.io Lease, keeping it renewed, noticing at once when it is lost, and
//! releasing it on a graceful stop so a standby takes over without waiting for it to expire.
//!
//! Acquiring and renewing is kube-lease-manager's (server-side apply on the Lease, so two
//! candidates cannot both win). It only re-reads the Lease when its own view expires, though: a
//! standby would sleep through a release, and a holder whose renewals fail keeps believing it
//! holds the Lease. So this module also reads the Lease itself every [`LeaseOptions::check`]:
//! a standby rebuilds its manager when the Lease is free, and a holder is told it lost the Lease
//! when another identity holds it, nobody does, or its own last renewal is older than the
//! duration (less a safety margin, so it stops before a standby may start).

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::{oneshot, watch};

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("preparing Lease {namespace}/{name}: {source}")]
    Build {
        namespace: String,
        name: String,
        #[source]
        source: LeaseManagerError,
    },
    #[error("releasing Lease {namespace}/{name}: {source}")]
    Release {
        namespace: String,
        name: String,
        #[source]
        source: LeaseManagerError,
    },
    #[error("the lease task ended abnormally: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// What `reckon run --lease` was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseOptions {
    pub name: String,
    pub namespace: String,
    /// Who this process is in `spec.holderIdentity`; unique per replica.
    pub identity: String,
    /// How long a renewal is valid (`spec.leaseDurationSeconds`), whole seconds, at least 2.
    pub duration: Duration,
}

impl LeaseOptions {
    /// How long before expiry the holder renews: a third of the duration (5 s of the default
    /// 15 s), so two renewals may fail before the Lease runs out.
    pub fn grace(&self) -> Duration {
        Duration::from_secs((self.duration.as_secs() / 3).max(1))
    }

    /// How often the Lease is read back: often enough that a holder whose Lease was taken
    /// stops well within one duration, rare enough to cost the API server nothing (one GET per
    /// second or two; the controller-manager's own election renews every 2 s).
    pub fn check(&self) -> Duration {
        (self.duration / 5).clamp(Duration::from_millis(500), Duration::from_secs(2))
    }

    /// The holder stops this long before its last renewal expires: a standby may take the
    /// Lease at expiry (by its own clock), and a write already on the wire needs time to land.
    pub fn margin(&self) -> Duration {
        Duration::from_secs(1).min(self.duration / 4)
    }
}

/// The identity to hold the Lease as: the pod's name (downward API `POD_NAME`), or
/// `hostname-pid` outside a pod (two local processes on one host must differ).
pub fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.trim().is_empty()
    {
        return pod.trim().to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string());
    format!("{host}-{}", std::process::id())
}

/// What a read of the Lease showed (the parts that decide who may write).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub holder: Option<String>,
    pub renewed: Option<SystemTime>,
    pub duration: Option<Duration>,
}

impl Observed {
    fn of(lease: &Lease) -> Observed {
        let spec = lease.spec.as_ref();
        Observed {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            renewed: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0.into()),
            duration: spec
                .and_then(|s| s.lease_duration_seconds)
                .map(|d| Duration::from_secs(d.max(0) as u64)),
        }
    }

    /// Nobody holds it, or its holder stopped renewing: a candidate may try now.
    pub fn is_free(&self, now: SystemTime) -> bool {
        match (&self.holder, self.renewed, self.duration) {
            (None, _, _) => true,
            (Some(_), Some(renewed), Some(duration)) => renewed + duration < now,
            // A holder without a renewal time is not a valid claim (kube-lease-manager treats
            // it as expired too).
            (Some(_), _, _) => true,
        }
    }
}

/// Why the holder stopped being the holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lost {
    /// The Lease names another holder (it expired and was taken, or someone edited it).
    TakenBy(String),
    /// The Lease names no holder (released or edited by someone else).
    Released,
    /// The Lease object is gone.
    Deleted,
    /// No renewal could be confirmed for the whole duration (API server unreachable, or the
    /// renewals are refused).
    Expired { last_confirmed_secs_ago: u64 },
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::TakenBy(h) => write!(f, "the Lease is held by {h}"),
            Lost::Released => f.write_str("the Lease was released by someone else"),
            Lost::Deleted => f.write_str("the Lease was deleted"),
            Lost::Expired {
                last_confirmed_secs_ago,
            } => write!(
                f,
                "no renewal confirmed for {last_confirmed_secs_ago} s (the Lease's duration)"
            ),
        }
    }
}

/// The holder's running judgement: the latest instant it may still write, by its own clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenure {
    pub identity: String,
    pub duration: Duration,
    pub margin: Duration,
    /// Writes must stop before this.
    pub valid_until: SystemTime,
}

impl Tenure {
    /// Just acquired at `now`: the renewal just written is at most `now`.
    pub fn new(options: &LeaseOptions, now: SystemTime) -> Tenure {
        Tenure {
            identity: options.identity.clone(),
            duration: options.duration,
            margin: options.margin(),
            valid_until: now + options.duration - options.margin(),
        }
    }

    /// Takes a read of the Lease (`None`: it does not exist) into account. A renewal of ours
    /// extends the tenure; anything else ends it.
    pub fn observe(&mut self, observed: Option<&Observed>) -> Result<(), Lost> {
        let Some(observed) = observed else {
            return Err(Lost::Deleted);
        };
        match &observed.holder {
            None => Err(Lost::Released),
            Some(h) if *h != self.identity => Err(Lost::TakenBy(h.clone())),
            Some(_) => {
                if let Some(renewed) = observed.renewed {
                    // The renewal time is written with our own clock, so it compares with it.
                    let until = renewed + self.duration - self.margin;
                    if until > self.valid_until {
                        self.valid_until = until;
                    }
                }
                Ok(())
            }
        }
    }

    /// Whether the tenure ran out at `now` with no renewal confirmed.
    pub fn check_time(&self, now: SystemTime) -> Result<(), Lost> {
        if now >= self.valid_until {
            let last = self.valid_until + self.margin - self.duration;
            return Err(Lost::Expired {
                last_confirmed_secs_ago: now.duration_since(last).unwrap_or_default().as_secs(),
            });
        }
        Ok(())
    }
}

/// The instant (ms since the epoch, by this host's clock) until which this process may write to
/// a cluster; 0 before it holds the Lease and after it lost it. Every client the holder writes
/// with checks it before each write ([`FenceLayer`]), so a process that was frozen (SIGSTOP, a
/// VM pause) or starved past its tenure cannot write before its Lease task notices the loss.
#[derive(Clone, Debug, Default)]
pub struct Fence(Arc<AtomicU64>);

impl Fence {
    pub fn allows(&self, now: SystemTime) -> bool {
        let until = self.0.load(Ordering::Acquire);
        millis(now) < until
    }

    fn set(&self, until: SystemTime) {
        self.0.store(millis(until), Ordering::Release);
    }

    fn close(&self) {
        self.0.store(0, Ordering::Release);
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why a write was refused before it was sent.
#[derive(Debug, thiserror::Error)]
#[error("write refused: this replica's Lease expired or was lost (another replica may be writing)")]
pub struct Fenced;

/// A tower layer for kube's client: writes (anything but GET, HEAD, OPTIONS) fail with
/// [`Fenced`] unless the [`Fence`] allows them.
#[derive(Clone, Debug)]
pub struct FenceLayer(Fence);

impl FenceLayer {
    pub fn new(fence: Fence) -> FenceLayer {
        FenceLayer(fence)
    }
}

impl<S> tower::Layer<S> for FenceLayer {
    type Service = FenceService<S>;
    fn layer(&self, inner: S) -> FenceService<S> {
        FenceService {
            inner,
            fence: self.0.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct FenceService<S> {
    inner: S,
    fence: Fence,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> tower::Service<http::Request<B>> for FenceService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<S::Response, BoxError>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let write = !matches!(
            *req.method(),
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        );
        let what = write.then(|| format!("{} {}", req.method(), req.uri()));
        // Nothing is sent before the inner future is first polled (kube's stack under this
        // layer is lazy down to hyper's `send_request`), so the check runs then, as late as
        // this layer can: a process frozen after queueing a write must not send it on waking.
        let call = self.inner.call(req);
        let fence = self.fence.clone();
        Box::pin(async move {
            if write && !fence.allows(SystemTime::now()) {
                let what = what.unwrap_or_default();
                tracing::error!(request = %what, "write refused: the Lease is not held");
                return Err(Box::new(Fenced) as BoxError);
            }
            call.await.map_err(Into::into)
        })
    }
}

async fn build(client: &kube::Client, o: &LeaseOptions) -> Result<LeaseManager, LeaseError> {
    LeaseManagerBuilder::new(client.clone(), &o.name)
        .with_namespace(&o.namespace)
        .with_identity(&o.identity)
        .with_duration(o.duration.as_secs())
        .with_grace(o.grace().as_secs())
        .build()
        .await
        .map_err(|source| LeaseError::Build {
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            source,
        })
}

/// Reads the Lease: `Ok(None)` when it does not exist.
async fn read(api: &Api<Lease>, name: &str) -> Result<Option<Observed>, kube::Error> {
    Ok(api.get_opt(name).await?.map(|l| Observed::of(&l)))
}

/// Resolves when `stop` says so. (Not `wait_for` inside `select!`: its `Ref` is not `Send`.)
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Waits until this process holds the Lease; `None` when `stop` fired first. Errors talking to
/// the API server are logged and retried: a standby has nothing better to do.
pub async fn acquire(
    client: kube::Client,
    options: LeaseOptions,
    mut stop: watch::Receiver<bool>,
) -> Option<Holder> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &options.namespace);
    let mut logged_holder: Option<String> = None;
    'fresh: loop {
        let manager = loop {
            match build(&client, &options).await {
                Ok(m) => break Arc::new(m),
                Err(e) => {
                    tracing::warn!(error = %e, "standby: preparing the Lease; retrying");
                    tokio::select! {
                        _ = stopped(&mut stop) => return None,
                        _ = tokio::time::sleep(options.check()) => {}
                    }
                }
            }
        };
        loop {
            // Kept across the checks below rather than restarted: a renewal or an acquisition
            // must never be cut off half-way.
            let m = manager.clone();
            let mut attempt = Box::pin(async move { m.changed().await });
            let outcome = loop {
                tokio::select! {
                    _ = stopped(&mut stop) => return None,
                    r = &mut attempt => break r,
                    _ = tokio::time::sleep(options.check()) => {
                        match read(&api, &options.name).await {
                            Ok(Some(o)) if o.is_free(SystemTime::now()) => {
                                // The manager would sleep until the expiry it saw last; a fresh
                                // one reads the Lease now and takes it.
                                tracing::debug!("standby: the Lease is free; trying to take it");
                                continue 'fresh;
                            }
                            Ok(Some(o)) => {
                                if o.holder != logged_holder {
                                    tracing::info!(
                                        lease = %options.name,
                                        holder = o.holder.as_deref().unwrap_or(""),
                                        "standby: another replica holds the Lease"
                                    );
                                    logged_holder = o.holder.clone();
                                }
                            }
                            Ok(None) => continue 'fresh,
                            Err(e) => tracing::warn!(error = %e, "standby: reading the Lease"),
                        }
                    }
                }
            };
            match outcome {
                Ok(true) => {
                    tracing::info!(lease = %options.name, identity = %options.identity, "acquired the Lease");
                    return Some(Holder::start(manager, api, options));
                }
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "standby: taking the Lease failed; retrying");
                    tokio::select! {
                        _ = stopped(&mut stop) => return None,
                        _ = tokio::time::sleep(options.check()) => {}
                    }
                    continue 'fresh;
                }
            }
        }
    }
}

/// The held Lease, renewed by a task of its own until it is lost or released.
pub struct Holder {
    fence: Fence,
    lost: watch::Receiver<Option<Lost>>,
    release: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), LeaseError>>,
}

impl Holder {
    fn start(manager: Arc<LeaseManager>, api: Api<Lease>, options: LeaseOptions) -> Holder {
        let (lost_tx, lost) = watch::channel(None);
        let (release, release_rx) = oneshot::channel();
        let fence = Fence::default();
        let task = tokio::spawn(hold(
            manager,
            api,
            options,
            fence.clone(),
            lost_tx,
            release_rx,
        ));
        Holder {
            fence,
            lost,
            release: Some(release),
            task,
        }
    }

    /// The fence the holder's cluster clients write through.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Resolves once the Lease is lost (never, after a release).
    pub fn lost(&self) -> watch::Receiver<Option<Lost>> {
        self.lost.clone()
    }

    /// Gives the Lease up (graceful stop): a standby may take it at its next check.
    pub async fn release(mut self) -> Result<(), LeaseError> {
        if let Some(tx) = self.release.take() {
            let _ = tx.send(());
        }
        self.task.await.map_err(LeaseError::Task)?
    }
}

async fn hold(
    manager: Arc<LeaseManager>,
    api: Api<Lease>,
    options: LeaseOptions,
    fence: Fence,
    lost: watch::Sender<Option<Lost>>,
    mut release: oneshot::Receiver<()>,
) -> Result<(), LeaseError> {
    let mut tenure = Tenure::new(&options, SystemTime::now());
    fence.set(tenure.valid_until);
    let mut ticker = tokio::time::interval(options.check());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lose = |why: Lost| {
        fence.close();
        tracing::error!(lease = %options.name, identity = %options.identity, reason = %why, "lost the Lease");
        let _ = lost.send(Some(why));
    };
    'renewing: loop {
        // Renews shortly before expiry and returns only when it sees the holder change.
        let m = manager.clone();
        let mut renewing = Box::pin(async move { m.changed().await });
        loop {
            tokio::select! {
                _ = &mut release => break 'renewing,
                r = &mut renewing => {
                    match r {
                        Ok(false) => {
                            let holder = read(&api, &options.name).await.ok().flatten().and_then(|o| o.holder);
                            lose(holder.map_or(Lost::Released, Lost::TakenBy));
                            return Ok(());
                        }
                        Ok(true) => {}
                        Err(e) => {
                            // The tenure check below decides when this has gone on too long.
                            tracing::warn!(error = %e, "renewing the Lease failed; retrying");
                            tokio::time::sleep(options.check()).await;
                        }
                    }
                    continue 'renewing;
                }
                _ = ticker.tick() => {
                    match read(&api, &options.name).await {
                        Ok(o) => {
                            if let Err(why) = tenure.observe(o.as_ref()) {
                                lose(why);
                                return Ok(());
                            }
                            fence.set(tenure.valid_until);
                        }
                        Err(e) => tracing::warn!(error = %e, "reading the Lease back failed"),
                    }
                    if let Err(why) = tenure.check_time(SystemTime::now()) {
                        lose(why);
                        return Ok(());
                    }
                }
            }
        }
    }
    manager
        .release()
        .await
        .map_err(|source| LeaseError::Release {
            namespace: options.namespace.clone(),
            name: options.name.clone(),
            source,
        })?;
    tracing::info!(lease = %options.name, "released the Lease");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(secs: u64) -> LeaseOptions {
        LeaseOptions {
            name: "reckon".into(),
            namespace: "reckon-system".into(),
            identity: "a".into(),
            duration: Duration::from_secs(secs),
        }
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn held(by: &str, renewed: SystemTime, secs: u64) -> Observed {
        Observed {
            holder: Some(by.into()),
            renewed: Some(renewed),
            duration: Some(Duration::from_secs(secs)),
        }
    }

    #[test]
    fn timings_follow_the_duration() {
        let o = options(15);
        assert_eq!(o.grace(), Duration::from_secs(5));
        assert_eq!(o.check(), Duration::from_secs(2));
        assert_eq!(o.margin(), Duration::from_secs(1));
        let o = options(2);
        assert_eq!(o.grace(), Duration::from_secs(1), "grace is at least 1 s");
        assert_eq!(o.check(), Duration::from_millis(500));
        assert_eq!(o.margin(), Duration::from_millis(500));
        assert!(
            o.grace() < o.duration,
            "kube-lease-manager panics otherwise"
        );
    }

    #[test]
    fn a_lease_is_free_when_unheld_or_not_renewed_in_time() {
        let unheld = Observed {
            holder: None,
            renewed: None,
            duration: None,
        };
        assert!(unheld.is_free(t(0)));
        assert!(!held("b", t(0), 15).is_free(t(15)));
        assert!(held("b", t(0), 15).is_free(t(16)));
        let no_renewal = Observed {
            renewed: None,
            ..held("b", t(0), 15)
        };
        assert!(no_renewal.is_free(t(0)));
    }

    #[test]
    fn renewals_of_ours_extend_the_tenure_and_anything_else_ends_it() {
        let o = options(15);
        let mut tenure = Tenure::new(&o, t(0));
        assert_eq!(tenure.valid_until, t(14));
        assert_eq!(tenure.check_time(t(13)), Ok(()));
        tenure.observe(Some(&held("a", t(10), 15))).unwrap();
        assert_eq!(tenure.valid_until, t(24));
        // An older read (renewal before the last one) does not shorten it.
        tenure.observe(Some(&held("a", t(5), 15))).unwrap();
        assert_eq!(tenure.valid_until, t(24));
        assert_eq!(tenure.check_time(t(23)), Ok(()));
        assert_eq!(
            tenure.check_time(t(24)),
            Err(Lost::Expired {
                last_confirmed_secs_ago: 14
            })
        );
        assert_eq!(
            tenure.clone().observe(Some(&held("b", t(11), 15))),
            Err(Lost::TakenBy("b".into()))
        );
        let released = Observed {
            holder: None,
            renewed: None,
            duration: None,
        };
        assert_eq!(tenure.clone().observe(Some(&released)), Err(Lost::Released));
        assert_eq!(tenure.observe(None), Err(Lost::Deleted));
    }

    #[test]
    fn the_fence_allows_writes_until_the_tenure_ends() {
        let fence = Fence::default();
        assert!(!fence.allows(t(0)), "closed until the Lease is held");
        fence.set(t(14));
        assert!(fence.allows(t(13)));
        assert!(!fence.allows(t(14)));
        fence.close();
        assert!(!fence.allows(t(13)));
    }

    #[test]
    fn the_default_identity_is_the_pod_name_or_host_and_pid() {
        let id = default_identity();
        match std::env::var("POD_NAME") {
            Ok(pod) if !pod.trim().is_empty() => assert_eq!(id, pod.trim()),
            _ => assert!(
                id.ends_with(&format!("-{}", std::process::id())),
                "{id} ends with the pid"
            ),
        }
    }
}
