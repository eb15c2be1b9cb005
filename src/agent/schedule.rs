//! Owns when one App runs a pass, as a pure state machine: the poll timer (interval plus
//! jitter), wake-ups (a webhook or the API asks for a fetch, a watched object changed, a
//! dependency became ready), the backoff after a failed sync and the dependency check. The App
//! task feeds it what happened with [`Schedule::step`] and does what it answers; it does no
//! I/O and reads no clock, so every decision is unit-tested below.

use rand::Rng;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// A wake-up in an App's inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A webhook or the poll's due time: fetch first.
    Fetch,
    /// One of its objects changed, or its intent did: re-plan from the watch cache.
    Changed,
}

/// Something that ends a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A fetch was asked for (a webhook, the API).
    Fetch,
    /// One of its objects changed, or its intent did.
    Changed,
    /// The poll timer came due.
    Timer,
    /// The readiness of some App changed (only Apps with dependencies listen).
    ReadinessChanged,
}

impl From<Wake> for Signal {
    fn from(wake: Wake) -> Signal {
        match wake {
            Wake::Fetch => Signal::Fetch,
            Wake::Changed => Signal::Changed,
        }
    }
}

/// What happened since the schedule last answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A wait ended: what ended it and whatever else was queued by then, merged into one
    /// decision (and so into one pass).
    Woke(Vec<Signal>),
    /// The backoff wait ended.
    BackoffOver,
    /// The pass was not run: these dependencies are not synced and healthy yet.
    Blocked,
    /// The pass ran; `backoff` is how long the next one waits (after a failed sync).
    Passed { backoff: Option<Duration> },
}

/// What the App task does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Wait for a wake-up, the poll timer at `timer`, or a readiness change.
    Wait { timer: Instant },
    /// Wait until `until` (the backoff after a failed sync); wake-ups stay queued meanwhile.
    Backoff { until: Instant },
    /// Run a pass if the dependencies are ready (else report [`Input::Blocked`]); with
    /// `fetch`, fetching first, answering the requests made since that instant (a fetch of the
    /// same remote started since then answers them, so Apps polled together share one).
    Pass { fetch: Option<Instant> },
}

/// One App's schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    interval: Duration,
    /// Up to this fraction of `interval` is added at random to each wait.
    jitter: f64,
    /// When the poll timer comes due.
    next_fetch: Instant,
    /// A fetch is wanted, asked for at this instant (the poll's due time, a webhook's arrival).
    fetch: Option<Instant>,
    /// A re-plan is wanted (an object or a dependency changed).
    changed: bool,
    /// After a failed sync, no pass starts before this, whatever wakes the App meanwhile: a
    /// failure every object shares (a missing namespace) is not retried at once.
    not_before: Option<Instant>,
}

impl Schedule {
    /// A new App fetches at once: a starting agent should not wait a whole interval to learn
    /// where its sources are.
    pub fn new(interval: Duration, jitter: f64, now: Instant) -> Schedule {
        Schedule {
            interval,
            jitter,
            next_fetch: now,
            fetch: Some(now),
            changed: false,
            not_before: None,
        }
    }

    /// The wait before the next timed fetch: `interval + U[0, jitter * interval)`, so many Apps
    /// on one remote do not poll in lockstep.
    pub fn next_delay(&self, rng: &mut impl Rng) -> Duration {
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return self.interval;
        }
        self.interval + self.interval.mul_f64(jitter * rng.random::<f64>())
    }

    /// Takes in what happened at `now` and answers what to do next.
    pub fn step(&mut self, input: Input, now: Instant, rng: &mut impl Rng) -> Action {
        match input {
            Input::Woke(signals) => {
                for signal in signals {
                    match signal {
                        // One pending fetch is enough; it keeps the first request's time.
                        Signal::Fetch => self.want_fetch(now),
                        Signal::Timer => self.want_fetch(self.next_fetch),
                        Signal::Changed | Signal::ReadinessChanged => self.changed = true,
                    }
                }
            }
            Input::BackoffOver => {}
            Input::Blocked => {}
            Input::Passed { backoff } => self.not_before = backoff.map(|d| now + d),
        }
        self.decide(now, rng)
    }

    fn want_fetch(&mut self, at: Instant) {
        if self.fetch.is_none() {
            self.fetch = Some(at);
        }
    }

    fn decide(&mut self, now: Instant, rng: &mut impl Rng) -> Action {
        if self.fetch.is_none() && !self.changed {
            return Action::Wait {
                timer: self.next_fetch,
            };
        }
        // The backoff is waited out once; what woke the App is still wanted after it.
        if let Some(until) = self.not_before.take()
            && until > now
        {
            return Action::Backoff { until };
        }
        // The wanted pass is handed out (and forgotten here) whether it runs or is blocked: a
        // blocked App does not fetch again until its next poll, and a change waits for the
        // next wake-up (a dependency becoming ready is one).
        let fetch = self.fetch.take();
        if fetch.is_some() {
            self.next_fetch = now + self.next_delay(rng);
        }
        self.changed = false;
        Action::Pass { fetch }
    }
}

/// The dependencies that are not yet synced and healthy.
pub fn blocked_by(deps: &[String], ready: &BTreeMap<String, bool>) -> Vec<String> {
    deps.iter()
        .filter(|d| !ready.get(*d).copied().unwrap_or(false))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const MIN: Duration = Duration::from_secs(60);

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    /// A schedule without jitter, started at `t0`, after its first pass (nothing pending).
    fn idle(t0: Instant) -> Schedule {
        let mut s = Schedule::new(MIN, 0.0, t0);
        assert_eq!(s.decide(t0, &mut rng()), Action::Pass { fetch: Some(t0) });
        s
    }

    #[test]
    fn a_new_app_fetches_at_once() {
        let t0 = Instant::now();
        let mut s = Schedule::new(MIN, 0.0, t0);
        assert_eq!(
            s.step(Input::Woke(vec![]), t0, &mut rng()),
            Action::Pass { fetch: Some(t0) }
        );
    }

    #[test]
    fn after_a_pass_it_waits_for_the_next_poll() {
        let t0 = Instant::now();
        let mut s = idle(t0);
        let then = t0 + Duration::from_secs(5);
        assert_eq!(
            s.step(Input::Passed { backoff: None }, then, &mut rng()),
            Action::Wait { timer: t0 + MIN }
        );
    }

    #[test]
    fn the_timer_fetches_answering_requests_since_its_due_time() {
        let t0 = Instant::now();
        let mut s = idle(t0);
        let due = t0 + MIN;
        let late = due + Duration::from_millis(3);
        assert_eq!(
            s.step(Input::Woke(vec![Signal::Timer]), late, &mut rng()),
            Action::Pass { fetch: Some(due) }
        );
        // The next poll is counted from when this fetch starts.
        assert_eq!(
            s.step(Input::Passed { backoff: None }, late, &mut rng()),
            Action::Wait { timer: late + MIN }
        );
    }

    #[test]
    fn a_webhook_fetches_at_once_and_moves_the_poll() {
        let t0 = Instant::now();
        let mut s = idle(t0);
        let at = t0 + Duration::from_secs(10);
        assert_eq!(
            s.step(Input::Woke(vec![Signal::Fetch]), at, &mut rng()),
            Action::Pass { fetch: Some(at) }
        );
        assert_eq!(
            s.step(Input::Passed { backoff: None }, at, &mut rng()),
            Action::Wait { timer: at + MIN }
        );
    }

    #[test]
    fn a_change_re_plans_without_fetching_or_moving_the_poll() {
        let t0 = Instant::now();
        let mut s = idle(t0);
        let at = t0 + Duration::from_secs(10);
        assert_eq!(
            s.step(Input::Woke(vec![Signal::Changed]), at, &mut rng()),
            Action::Pass { fetch: None }
        );
        assert_eq!(
            s.step(Input::Passed { backoff: None }, at, &mut rng()),
            Action::Wait { timer: t0 + MIN }
        );
    }

    #[test]
    fn queued_wake_ups_merge_into_one_fetching_pass() {
        let t0 = Instant::now();
        let mut s = idle(t0);
        let at = t0 + Duration::from_secs(1);
        let wakes = vec![
            Signal::Changed,
            Signal::Fetch,
            Signal::Changed,
            Signal::Fetch,
        ];
        assert_eq!(
            s.step(Input::Woke(wakes), at, &mut rng()),
            Action::Pass { fetch: Some(at) }
        );
        // Nothing is left over for a second pass.
        assert_eq!(
            s.step(Input::Passed { backoff: None }, at, &mut rng()),
            Action::Wait { timer: at + MIN }
        );
    }

    #[test]
    fn a_webhook_queued_behind_the_timer_shares_its_fetch() {
        let t0 = Instant::now();
        let mut s = idle(t0);
        let late = t0 + MIN + Duration::from_secs(1);
        assert_eq!(
            s.step(
                Input::Woke(vec![Signal::Timer, Signal::Fetch, Signal::Changed]),
                late,
                &mut rng()
            ),
            Action::Pass {
                fetch: Some(t0 + MIN)
            }
        );
    }

    #[test]
    fn a_wait_that_ends_on_nothing_keeps_waiting() {
        let t0 = Instant::now();
        let mut s = idle(t0);
        assert_eq!(
            s.step(Input::Woke(vec![]), t0, &mut rng()),
            Action::Wait { timer: t0 + MIN }
        );
    }

    #[test]
    fn a_pending_fetch_keeps_the_first_request_time() {
        let t0 = Instant::now();
        let mut s = Schedule::new(MIN, 0.0, t0);
        let later = t0 + Duration::from_secs(2);
        assert_eq!(
            s.step(Input::Woke(vec![Signal::Fetch]), later, &mut rng()),
            Action::Pass { fetch: Some(t0) }
        );
    }

    #[test]
    fn a_readiness_change_re_plans() {
        let t0 = Instant::now();
        let mut s = idle(t0);
        assert_eq!(
            s.step(Input::Woke(vec![Signal::ReadinessChanged]), t0, &mut rng()),
            Action::Pass { fetch: None }
        );
    }

    #[test]
    fn a_failed_sync_backs_off_whatever_wakes_the_app() {
        let t0 = Instant::now();
        let mut s = idle(t0);
        let backoff = Duration::from_secs(8);
        assert_eq!(
            s.step(
                Input::Passed {
                    backoff: Some(backoff)
                },
                t0,
                &mut rng()
            ),
            Action::Wait { timer: t0 + MIN }
        );
        let at = t0 + Duration::from_secs(1);
        assert_eq!(
            s.step(Input::Woke(vec![Signal::Changed]), at, &mut rng()),
            Action::Backoff {
                until: t0 + backoff
            }
        );
        // After the backoff the change is still wanted.
        assert_eq!(
            s.step(Input::BackoffOver, t0 + backoff, &mut rng()),
            Action::Pass { fetch: None }
        );
    }

    #[test]
    fn an_expired_backoff_does_not_wait() {
        let t0 = Instant::now();
        let mut s = idle(t0);
        s.step(
            Input::Passed {
                backoff: Some(Duration::from_secs(1)),
            },
            t0,
            &mut rng(),
        );
        let at = t0 + Duration::from_secs(2);
        assert_eq!(
            s.step(Input::Woke(vec![Signal::Fetch]), at, &mut rng()),
            Action::Pass { fetch: Some(at) }
        );
    }

    #[test]
    fn the_backoff_is_waited_once() {
        let t0 = Instant::now();
        let mut s = idle(t0);
        let backoff = Duration::from_secs(8);
        s.step(
            Input::Passed {
                backoff: Some(backoff),
            },
            t0,
            &mut rng(),
        );
        let at = t0 + Duration::from_secs(1);
        assert!(matches!(
            s.step(Input::Woke(vec![Signal::Changed]), at, &mut rng()),
            Action::Backoff { .. }
        ));
        // A pass that then succeeds clears it: the next wake-up runs at once.
        s.step(Input::BackoffOver, t0 + backoff, &mut rng());
        s.step(Input::Passed { backoff: None }, t0 + backoff, &mut rng());
        assert_eq!(
            s.step(Input::Woke(vec![Signal::Changed]), t0 + backoff, &mut rng()),
            Action::Pass { fetch: None }
        );
    }

    #[test]
    fn a_blocked_app_drops_its_fetch_until_the_next_poll() {
        let t0 = Instant::now();
        let mut s = Schedule::new(MIN, 0.0, t0);
        assert_eq!(
            s.step(Input::Woke(vec![]), t0, &mut rng()),
            Action::Pass { fetch: Some(t0) }
        );
        assert_eq!(
            s.step(Input::Blocked, t0, &mut rng()),
            Action::Wait { timer: t0 + MIN }
        );
        // A dependency becoming ready re-plans (from the last recorded head).
        assert_eq!(
            s.step(Input::Woke(vec![Signal::ReadinessChanged]), t0, &mut rng()),
            Action::Pass { fetch: None }
        );
    }

    #[test]
    fn a_blocked_change_is_not_kept() {
        let t0 = Instant::now();
        let mut s = idle(t0);
        s.step(Input::Woke(vec![Signal::Changed]), t0, &mut rng());
        assert_eq!(
            s.step(Input::Blocked, t0, &mut rng()),
            Action::Wait { timer: t0 + MIN }
        );
    }

    #[test]
    fn a_blocked_pass_keeps_its_backoff_spent() {
        let t0 = Instant::now();
        let mut s = idle(t0);
        s.step(
            Input::Passed {
                backoff: Some(Duration::from_secs(8)),
            },
            t0,
            &mut rng(),
        );
        let at = t0 + Duration::from_secs(1);
        s.step(Input::Woke(vec![Signal::Changed]), at, &mut rng());
        assert_eq!(
            s.step(Input::BackoffOver, t0 + Duration::from_secs(8), &mut rng()),
            Action::Pass { fetch: None }
        );
        s.step(Input::Blocked, t0 + Duration::from_secs(8), &mut rng());
        assert_eq!(
            s.step(
                Input::Woke(vec![Signal::Changed]),
                t0 + Duration::from_secs(9),
                &mut rng()
            ),
            Action::Pass { fetch: None }
        );
    }

    #[test]
    fn jitter_stays_within_its_bound_and_varies() {
        let s = Schedule::new(MIN, 0.2, Instant::now());
        let mut rng = rng();
        let delays: Vec<Duration> = (0..200).map(|_| s.next_delay(&mut rng)).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= MIN && *d < Duration::from_secs(72))
        );
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "jitter should vary the delay");
        let none = Schedule::new(MIN, 0.0, Instant::now());
        assert_eq!(none.next_delay(&mut rng), MIN);
    }

    #[test]
    fn jitter_is_clamped_to_one_interval() {
        let s = Schedule::new(MIN, 5.0, Instant::now());
        let mut rng = rng();
        assert!((0..50).all(|_| s.next_delay(&mut rng) < 2 * MIN));
        let negative = Schedule::new(MIN, -1.0, Instant::now());
        assert_eq!(negative.next_delay(&mut rng), MIN);
    }

    #[test]
    fn the_next_poll_is_jittered() {
        let t0 = Instant::now();
        let mut s = Schedule::new(MIN, 0.5, t0);
        s.step(Input::Woke(vec![]), t0, &mut rng());
        let Action::Wait { timer } = s.step(Input::Passed { backoff: None }, t0, &mut rng()) else {
            panic!("expected a wait");
        };
        assert!(timer >= t0 + MIN && timer < t0 + MIN + MIN / 2, "{timer:?}");
    }

    #[test]
    fn dependencies_block_until_each_is_ready() {
        let deps = vec!["db".to_string(), "queue".to_string()];
        let mut ready = BTreeMap::new();
        assert_eq!(blocked_by(&deps, &ready), deps);
        ready.insert("db".to_string(), true);
        ready.insert("queue".to_string(), false);
        assert_eq!(blocked_by(&deps, &ready), vec!["queue".to_string()]);
        ready.insert("queue".to_string(), true);
        assert!(blocked_by(&deps, &ready).is_empty());
        assert!(blocked_by(&[], &BTreeMap::new()).is_empty());
    }
}
