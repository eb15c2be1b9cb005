//! Owns the process's Prometheus metrics: one registry, the families reckon exposes on `/metrics`,
//! and the text encoding. Event-derived counters are fed from one hook (the store writer, see
//! [`Metrics::record_appended`]) so that what `/metrics` counts is exactly what the log holds.
//!
//! Metrics are process-global: the writer, the Git source and the agent's App tasks all record
//! into them without a handle being threaded through every constructor. No metric carries a
//! per-App label: with thousands of Apps that would be thousands of series per family; the
//! per-App view is the event log (`/api/v1/events?app=`).

use crate::event::EventKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::LazyLock;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Every family reckon exposes.
pub struct Metrics {
    registry: Registry,
    events_appended: Family<KindLabel, Counter>,
    drift_detected: Counter,
    drift_corrected: Counter,
    apply_errors: Counter,
    reconcile_duration: Family<ResultLabel, Histogram>,
    git_fetch_duration: Family<ResultLabel, Histogram>,
    store_size: Gauge,
    /// Audit webhook (see docs/audit.md): writes kept, writes dropped because the buffer was
    /// full, requests refused for missing credentials.
    pub audit_received: Counter,
    pub audit_dropped: Counter,
    pub audit_rejected: Counter,
    /// Audit writes refused (429) because their sender was over its rate.
    pub audit_throttled: Counter,
    /// Sync attempts that failed exactly as the recorded one did and were not recorded again.
    pub sync_retries: Counter,
    /// Times the wall clock was found jumped back behind the log (`store::clock`).
    pub clock_jumps_back: Counter,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("reckon");
        let events_appended = Family::<KindLabel, Counter>::default();
        registry.register(
            "events_appended",
            "Events appended to the store, by kind",
            events_appended.clone(),
        );
        let drift_detected = Counter::default();
        registry.register(
            "drift_detected",
            "Objects found drifted from Git (DriftDetected events)",
            drift_detected.clone(),
        );
        let drift_corrected = Counter::default();
        registry.register(
            "drift_corrected",
            "Drifted objects put back to Git's state (DriftCorrected events)",
            drift_corrected.clone(),
        );
        let apply_errors = Counter::default();
        registry.register(
            "apply_errors",
            "Object applies that failed (ApplyFailed events)",
            apply_errors.clone(),
        );
        // 5 ms .. ~82 s: an unchanged pass is milliseconds, a first sync of a large App minutes.
        let reconcile_duration = Family::<ResultLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 15))
        });
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of one App's reconcile pass (result: ok or error)",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        // 1 ms .. ~33 s: a fetch answered from the mirror is milliseconds, a clone seconds.
        let git_fetch_duration = Family::<ResultLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register_with_unit(
            "git_fetch_duration",
            "Duration of one Git fetch (result: ok or error)",
            Unit::Seconds,
            git_fetch_duration.clone(),
        );
        let store_size = Gauge::default();
        registry.register_with_unit(
            "store_size",
            "Bytes the event store occupies on disk (allocated), measured at scrape time",
            Unit::Bytes,
            store_size.clone(),
        );
        let audit_received = Counter::default();
        registry.register(
            "audit_events_received",
            "Successful writes received from the API server's audit webhook and queued",
            audit_received.clone(),
        );
        let audit_dropped = Counter::default();
        registry.register(
            "audit_events_dropped",
            "Audit events dropped because the receiver's bounded queue was full (drifts in \
             that time may stay unattributed)",
            audit_dropped.clone(),
        );
        let audit_rejected = Counter::default();
        registry.register(
            "audit_requests_rejected",
            "Audit webhook requests refused (401) for missing or unknown credentials",
            audit_rejected.clone(),
        );
        let audit_throttled = Counter::default();
        registry.register(
            "audit_events_throttled",
            "Audit writes refused (429, the API server retries the batch) because their sender \
             was over --audit-sender-rate",
            audit_throttled.clone(),
        );
        let sync_retries = Counter::default();
        registry.register(
            "sync_retries",
            "Sync attempts that failed for the same causes as the attempt recorded before them: \
             retried (with backoff) but not recorded again, so the log stays proportional",
            sync_retries.clone(),
        );
        let clock_jumps_back = Counter::default();
        registry.register(
            "clock_jumps_back",
            "Times the wall clock was found more than 1 s behind the last recorded event: events \
             are then stamped with that event's time until the clock catches up",
            clock_jumps_back.clone(),
        );
        Metrics {
            clock_jumps_back,
            sync_retries,
            audit_received,
            audit_dropped,
            audit_rejected,
            audit_throttled,
            registry,
            events_appended,
            drift_detected,
            drift_corrected,
            apply_errors,
            reconcile_duration,
            git_fetch_duration,
            store_size,
        }
    }

    /// The one hook for event-derived counters: called by the store writer for every event it
    /// appended and flushed.
    pub fn record_appended(&self, kinds: impl IntoIterator<Item = EventKind>) {
        for kind in kinds {
            self.events_appended
                .get_or_create(&KindLabel { kind: kind.name() })
                .inc();
            match kind {
                EventKind::DriftDetected => {
                    self.drift_detected.inc();
                }
                EventKind::DriftCorrected => {
                    self.drift_corrected.inc();
                }
                EventKind::ApplyFailed => {
                    self.apply_errors.inc();
                }
                _ => {}
            }
        }
    }

    pub fn observe_reconcile(&self, took: Duration, ok: bool) {
        self.reconcile_duration
            .get_or_create(&result(ok))
            .observe(took.as_secs_f64());
    }

    pub fn observe_git_fetch(&self, took: Duration, ok: bool) {
        self.git_fetch_duration
            .get_or_create(&result(ok))
            .observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition, with the store's size (bytes allocated) as the caller
    /// measured it now; `None` (no store, or a failed measurement: a scrape must not fail
    /// because of it) leaves the last value. The caller measures so that the metrics, which
    /// the store records into, do not depend on the store.
    pub fn encode(&self, store_size: Option<u64>) -> String {
        if let Some(allocated) = store_size {
            self.store_size
                .set(i64::try_from(allocated).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn result(ok: bool) -> ResultLabel {
    ResultLabel {
        result: if ok { "ok" } else { "error" },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_counters_follow_the_appended_kinds() {
        let m = Metrics::new();
        let samples = crate::event::samples::all_events();
        m.record_appended(samples.iter().map(|e| e.kind()));
        m.observe_reconcile(Duration::from_millis(20), true);
        m.observe_git_fetch(Duration::from_millis(3), false);
        let text = m.encode(None);
        assert!(text.contains("reckon_events_appended_total{kind=\"DriftDetected\"} 1"));
        assert!(text.contains("reckon_drift_detected_total 1"), "{text}");
        assert!(text.contains("reckon_drift_corrected_total 1"), "{text}");
        assert!(text.contains("reckon_apply_errors_total 1"), "{text}");
        assert!(text.contains("reckon_reconcile_duration_seconds_count{result=\"ok\"} 1"));
        assert!(text.contains("reckon_git_fetch_duration_seconds_count{result=\"error\"} 1"));
        assert!(
            text.contains("# TYPE reckon_store_size_bytes gauge"),
            "{text}"
        );
        m.audit_dropped.inc();
        let text = m.encode(None);
        assert!(
            text.contains("reckon_audit_events_dropped_total 1"),
            "{text}"
        );
        assert!(
            text.contains("reckon_audit_events_received_total 0"),
            "{text}"
        );
        assert!(
            text.contains("reckon_audit_requests_rejected_total 0"),
            "{text}"
        );
    }
}
