//! Owns one App's task: a thin shell around its [`Schedule`] that waits for what the schedule
//! asks (wake-ups, the poll timer, readiness changes, a backoff), runs the passes it calls for,
//! and reports each pass to the App's readiness, its App object's status and its cluster's
//! router.

use super::objects;
use super::registry::RouteUpdate;
use super::schedule::{Action, Input, Schedule, Signal, Wake, blocked_by};
use crate::event;
use crate::plan::ObjectKey;
use crate::reconcile::{PassOptions, PassReport, PassStatus, Reconciler};
use crate::store::writer::StoreHandle;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// An App is ready for its dependents once a pass left it synced and healthy.
pub type Readiness = watch::Sender<BTreeMap<String, bool>>;

/// What an App task is given besides its reconciler.
pub struct AppTask {
    pub reconciler: Reconciler,
    pub inbox: mpsc::Receiver<Wake>,
    /// Where the objects it manages are reported (its cluster's router).
    pub routes: mpsc::UnboundedSender<RouteUpdate>,
    pub ready: Arc<Readiness>,
    /// The agent's stop and this App's own (when it changes or goes away).
    pub stops: [watch::Receiver<bool>; 2],
    pub jitter: f64,
    /// Its App object's status writer, if it has one.
    pub status: Option<(objects::StatusWriter, StoreHandle)>,
}

/// Whether a pass left the App ready for its dependents: synced (or in sync) and healthy.
pub fn ready_after(report: &PassReport) -> bool {
    matches!(
        report.status,
        PassStatus::InSync
            | PassStatus::Synced {
                outcome: event::SyncOutcome::Succeeded,
                ..
            }
    ) && report.health == event::Health::Healthy
}

/// Resolves once either stop is set.
async fn stopped(stops: &mut [watch::Receiver<bool>; 2]) {
    let [a, b] = stops;
    tokio::select! {
        _ = a.wait_for(|s| *s) => {}
        _ = b.wait_for(|s| *s) => {}
    }
}

impl AppTask {
    /// Runs the App until either stop. With a status writer, its App object's status is brought
    /// up to date before the first pass (after the external anchor check) and after every pass.
    pub async fn run(mut self) {
        let name = self.reconciler.app().name.clone();
        let mut schedule = Schedule::new(
            self.reconciler.app().source.interval,
            self.jitter,
            Instant::now(),
        );
        let mut ready_rx = self.ready.subscribe();
        let has_deps = !self.reconciler.app().depends_on.is_empty();
        let mut routed: Vec<ObjectKey> = Vec::new();
        Box::pin(self.before_first_pass(&name)).await;
        // The first pass is due at once (the schedule starts with a fetch wanted).
        let mut input = Input::Woke(Vec::new());
        while !self.stops.iter().any(|s| *s.borrow()) {
            // Whatever else is queued when a wait ends merges into the same decision.
            if let Input::Woke(signals) = &mut input {
                while let Ok(wake) = self.inbox.try_recv() {
                    signals.push(wake.into());
                }
            }
            let action = schedule.step(input, Instant::now(), &mut rand::rng());
            input = match action {
                Action::Wait { timer } => tokio::select! {
                    _ = stopped(&mut self.stops) => break,
                    wake = self.inbox.recv() => match wake {
                        Some(wake) => Input::Woke(vec![wake.into()]),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(timer) => Input::Woke(vec![Signal::Timer]),
                    _ = ready_rx.changed(), if has_deps => Input::Woke(vec![Signal::ReadinessChanged]),
                },
                Action::Backoff { until } => {
                    tracing::debug!(app = %name, wait = ?(until - Instant::now()), "backing off after a failed sync");
                    tokio::select! {
                        _ = stopped(&mut self.stops) => break,
                        _ = tokio::time::sleep_until(until) => Input::BackoffOver,
                    }
                }
                Action::Pass { fetch } => {
                    let blocked = blocked_by(
                        &self.reconciler.app().depends_on,
                        &ready_rx.borrow_and_update(),
                    );
                    if blocked.is_empty() {
                        let backoff = Box::pin(self.pass(&name, fetch)).await;
                        self.route(&name, &mut routed);
                        Input::Passed { backoff }
                    } else {
                        tracing::debug!(app = %name, ?blocked, "waiting for dependencies");
                        Input::Blocked
                    }
                }
            };
        }
        tracing::debug!(app = %name, "stopped");
    }

    /// Where the App's record goes on from (its identity's history, the bare name's history
    /// of an earlier reckon, or a fresh start), the external anchor check and, when worth it,
    /// a first status.
    async fn before_first_pass(&mut self, name: &str) {
        let Some((writer, store)) = self.status.as_mut() else {
            return;
        };
        // Where its record goes on from comes first: the anchor is checked against it.
        let settled = match writer.settle_identity(store).await {
            Ok(seq) => seq.is_some(),
            Err(e) => {
                tracing::error!(app = %name, error = %e, "deciding where the App's history goes on from");
                false
            }
        };
        let gap = match writer.check_anchor(store).await {
            Ok(gap) => gap.is_some(),
            Err(e) => {
                tracing::error!(app = %name, error = %e, "checking the App's status against the store");
                false
            }
        };
        // A new App says it is starting; a known one keeps its status until its first pass
        // (a restart of a thousand Apps is not two thousand status writes), unless the anchor
        // just found a gap, which is worth saying at once.
        if (gap || settled || !writer.has_status())
            && let Err(e) = writer
                .after_pass(store, crate::crd::PassSummary::NotYet)
                .await
        {
            tracing::warn!(app = %name, error = %e, "writing the App's status");
        }
    }

    /// Runs one pass and reports it; returns the backoff before the next.
    async fn pass(&mut self, name: &str, fetch: Option<Instant>) -> Option<std::time::Duration> {
        let started = std::time::Instant::now();
        // Boxed: the App's task lives as long as the App, its pass only while it runs.
        let passed = Box::pin(self.reconciler.pass(&PassOptions {
            fetch: fetch.is_some(),
            fetch_requested: fetch.map(Instant::into_std),
            progress: None,
        }))
        .await;
        crate::metrics::METRICS.observe_reconcile(started.elapsed(), passed.is_ok());
        let passed = passed.map_err(|e| e.to_string());
        if let Some((writer, store)) = self.status.as_mut()
            && let Err(e) = writer
                .after_pass(store, crate::crd::PassSummary::of(&passed))
                .await
        {
            // The next pass (or poll) tries again; the status is not the record.
            tracing::warn!(app = %name, error = %e, "writing the App's status");
        }
        let (ok, backoff) = match &passed {
            Ok(report) => {
                tracing::debug!(app = %name, status = ?report.status, "pass done");
                (
                    ready_after(report),
                    crate::reconcile::retry::backoff(report.failed_attempts),
                )
            }
            Err(e) => {
                tracing::error!(app = %name, error = %e, "pass failed");
                (false, None)
            }
        };
        self.ready
            .send_if_modified(|r| r.insert(name.to_string(), ok) != Some(ok));
        backoff
    }

    /// Routes watch notifications of the objects it manages now.
    fn route(&self, name: &str, routed: &mut Vec<ObjectKey>) {
        let managed = self.reconciler.managed();
        if managed != routed.as_slice() {
            *routed = managed.to_vec();
            let _ = self.routes.send(RouteUpdate::Managed {
                app: name.to_string(),
                keys: routed.clone(),
            });
        }
    }
}
