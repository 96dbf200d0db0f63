//! Points in time that may be "never".
//!
//! Every duration setting becomes a [`Deadline`] here, with checked
//! arithmetic: `Duration::MAX` (or any duration too large to add to the
//! clock) means "no limit", never an overflow panic.

use std::time::{Duration, Instant};

/// A point in time, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    /// No limit.
    pub(crate) const NEVER: Deadline = Deadline(None);

    pub(crate) fn at(t: Instant) -> Deadline {
        Deadline(Some(t))
    }

    /// `d` from now; never when `now + d` does not fit the clock.
    pub(crate) fn after(d: Duration) -> Deadline {
        Deadline::after_from(Instant::now(), d)
    }

    pub(crate) fn after_from(now: Instant, d: Duration) -> Deadline {
        Deadline(now.checked_add(d))
    }

    pub(crate) fn instant(self) -> Option<Instant> {
        self.0
    }

    #[cfg(test)]
    pub(crate) fn is_never(self) -> bool {
        self.0.is_none()
    }

    pub(crate) fn is_past(self, now: Instant) -> bool {
        self.0.is_some_and(|t| now >= t)
    }

    /// Time left (zero once past); `None` when there is no limit.
    pub(crate) fn remaining(self, now: Instant) -> Option<Duration> {
        self.0.map(|t| t.saturating_duration_since(now))
    }

    /// The earlier of two deadlines (never is later than any instant).
    pub(crate) fn min(self, other: Deadline) -> Deadline {
        match (self.0, other.0) {
            (Some(a), Some(b)) => Deadline(Some(a.min(b))),
            (a, b) => Deadline(a.or(b)),
        }
    }

    /// True when `self` comes strictly before `other`.
    pub(crate) fn before(self, other: Deadline) -> bool {
        match (self.0, other.0) {
            (Some(a), Some(b)) => a < b,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// A librdkafka timeout for a duration: librdkafka takes milliseconds as a C
/// `int`, so longer durations are capped at `i32::MAX` ms (about 24.8 days)
/// instead of wrapping around.
pub(crate) fn kafka_timeout(d: Duration) -> Duration {
    d.min(Duration::from_millis(i32::MAX as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_mean_never_and_never_sorts_last() {
        let now = Instant::now();
        assert!(Deadline::after_from(now, Duration::MAX).is_never());
        let soon = Deadline::after_from(now, Duration::from_secs(1));
        assert_eq!(soon.min(Deadline::NEVER), soon);
        assert_eq!(Deadline::NEVER.min(soon), soon);
        assert!(soon.before(Deadline::NEVER));
        assert!(!Deadline::NEVER.before(soon));
        assert_eq!(Deadline::NEVER.remaining(now), None);
        assert!(!Deadline::NEVER.is_past(now));
        assert!(soon.is_past(now + Duration::from_secs(2)));
        assert_eq!(
            soon.remaining(now + Duration::from_secs(5)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            kafka_timeout(Duration::MAX),
            Duration::from_millis(i32::MAX as u64)
        );
    }
}
