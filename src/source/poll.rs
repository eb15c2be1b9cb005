//! Owns when a source is fetched: on a fixed interval plus random jitter (so many Apps on one remote
//! do not poll in lockstep), or at once when a trigger (a webhook) arrives. One task per source.

use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;

use super::{FetchOutcome, GitSource, SourceError, SourceId};

/// Why a fetch ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    Timer,
    Webhook { provider: String },
    Manual,
}

#[derive(Debug, Clone, Copy)]
pub struct PollSchedule {
    pub interval: Duration,
    /// Up to this fraction of `interval` is added at random to each wait (0.0 = none, 0.1 = up to 10%).
    pub jitter: f64,
}

impl PollSchedule {
    /// The wait before the next timed fetch: `interval + U[0, jitter * interval)`.
    pub fn next_delay(&self, rng: &mut impl Rng) -> Duration {
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return self.interval;
        }
        let extra = self.interval.mul_f64(jitter * rng.random::<f64>());
        self.interval + extra
    }
}

/// One fetch's result, sent to whoever records events.
#[derive(Debug)]
pub struct PollResult {
    pub source: SourceId,
    pub trigger: Trigger,
    pub result: Result<FetchOutcome, SourceError>,
}

/// Polls `source` until the results receiver is dropped. `last_head` seeds the previous head (from
/// the event log); it advances to each successfully fetched head. A failed fetch leaves it alone,
/// so the next success reports every commit since the last good observation.
pub async fn run(
    source: GitSource,
    schedule: PollSchedule,
    mut last_head: Option<String>,
    mut triggers: mpsc::Receiver<Trigger>,
    results: mpsc::Sender<PollResult>,
) {
    let mut triggers_open = true;
    // The first fetch runs at once: a starting agent should not wait a whole interval to learn
    // where its sources are.
    let mut first = true;
    loop {
        let delay = if first {
            Duration::ZERO
        } else {
            schedule.next_delay(&mut rand::rng())
        };
        first = false;
        let trigger = tokio::select! {
            _ = tokio::time::sleep(delay) => Trigger::Timer,
            t = triggers.recv(), if triggers_open => match t {
                Some(t) => t,
                // No more triggers: keep polling on the timer alone.
                None => { triggers_open = false; continue; }
            },
            _ = results.closed() => return,
        };
        let result = source.fetch_async(last_head.clone()).await;
        if let Ok(outcome) = &result {
            last_head = Some(outcome.head.clone());
        }
        let sent = results
            .send(PollResult {
                source: source.spec().id.clone(),
                trigger,
                result,
            })
            .await;
        if sent.is_err() {
            return;
        }
    }
}

/// Routes webhook triggers to each source's poller by id, until the webhook side closes. Unknown
/// ids are logged and skipped; a full poller queue already holds a pending fetch, so the trigger
/// is dropped.
pub async fn dispatch(
    mut incoming: mpsc::Receiver<super::webhook::WebhookTrigger>,
    pollers: std::collections::HashMap<SourceId, mpsc::Sender<Trigger>>,
) {
    while let Some(t) = incoming.recv().await {
        match pollers.get(&t.source) {
            Some(tx) => {
                if let Err(e) = tx.try_send(t.trigger) {
                    tracing::debug!(source = %t.source, error = %e, "trigger not queued");
                }
            }
            None => tracing::warn!(source = %t.source, "trigger for an unknown source"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_bound_and_varies() {
        let s = PollSchedule {
            interval: Duration::from_secs(60),
            jitter: 0.2,
        };
        let mut rng = rand::rng();
        let delays: Vec<Duration> = (0..200).map(|_| s.next_delay(&mut rng)).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= Duration::from_secs(60) && *d < Duration::from_secs(72))
        );
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "jitter should vary the delay");
        let none = PollSchedule { jitter: 0.0, ..s };
        assert_eq!(none.next_delay(&mut rng), Duration::from_secs(60));
    }
}
