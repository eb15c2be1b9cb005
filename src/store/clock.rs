//! Owns the time an appended event is stamped with: the wall clock, but never earlier than the
//! event before it in the log (time ranges map onto sequence ranges, and a reader of the log
//! must never see time run backwards), and the decision that the wall clock jumped backwards,
//! which is reported once per jump rather than on every batch stamped while it is behind.

use std::time::Duration;

/// A step back smaller than this is the clock being slewed or two reads racing, not a jump: it
/// is clamped silently.
pub const JUMP_TOLERANCE: Duration = Duration::from_secs(1);

/// What the writer remembers between batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockState {
    /// The wall clock was found behind the log by more than the tolerance and has not caught
    /// up yet: the jump was already reported.
    pub behind: bool,
}

/// The decision for one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The batch's time, in microseconds since the epoch.
    pub micros: i64,
    /// The wall clock just jumped back this far behind the log: report it (once per jump).
    pub jumped_back: Option<Duration>,
    pub state: ClockState,
}

/// The time of a batch appended at wall-clock `now` after an event stamped `last` (both in
/// microseconds; `last` is `i64::MIN` for an empty log).
pub fn stamp(now: i64, last: i64, state: ClockState) -> Stamp {
    if now >= last {
        return Stamp {
            micros: now,
            jumped_back: None,
            state: ClockState { behind: false },
        };
    }
    let back = Duration::from_micros(last.abs_diff(now));
    let jump = back > JUMP_TOLERANCE;
    Stamp {
        micros: last,
        jumped_back: (jump && !state.behind).then_some(back),
        // Small steps back neither start nor end a reported jump.
        state: ClockState {
            behind: state.behind || jump,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    #[test]
    fn a_clock_ahead_of_the_log_is_used_as_it_is() {
        let s = stamp(10 * S, 5 * S, ClockState::default());
        assert_eq!(s.micros, 10 * S);
        assert_eq!(s.jumped_back, None);
        assert_eq!(stamp(7, i64::MIN, ClockState::default()).micros, 7);
        assert_eq!(stamp(5 * S, 5 * S, ClockState::default()).micros, 5 * S);
    }

    #[test]
    fn a_small_step_back_is_clamped_silently() {
        let s = stamp(5 * S - 10, 5 * S, ClockState::default());
        assert_eq!(s.micros, 5 * S);
        assert_eq!(s.jumped_back, None);
        assert!(!s.state.behind);
    }

    #[test]
    fn a_jump_back_is_clamped_and_reported_once_until_the_clock_catches_up() {
        let first = stamp(100 * S, 3600 * S, ClockState::default());
        assert_eq!(first.micros, 3600 * S, "never before the previous event");
        assert_eq!(first.jumped_back, Some(Duration::from_secs(3500)));
        assert!(first.state.behind);

        // Still behind on the next batches: same time, nothing reported again.
        let second = stamp(101 * S, first.micros, first.state);
        assert_eq!(second.micros, 3600 * S);
        assert_eq!(second.jumped_back, None);
        let third = stamp(3600 * S - 10, second.micros, second.state);
        assert_eq!(third.jumped_back, None);
        assert!(
            third.state.behind,
            "a small step back does not end the jump"
        );

        // Caught up: the next jump is a new one and is reported again.
        let caught = stamp(3601 * S, third.micros, third.state);
        assert_eq!(caught.micros, 3601 * S);
        assert!(!caught.state.behind);
        let again = stamp(3000 * S, caught.micros, caught.state);
        assert_eq!(again.jumped_back, Some(Duration::from_secs(601)));
    }
}
