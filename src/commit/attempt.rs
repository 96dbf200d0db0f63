//! What follows a failed commit attempt. Pure: a function of the error class,
//! the kind of commit, the retry budget, the deadlines and `now`.

use std::time::{Duration, Instant};

use crate::deadline::Deadline;
use crate::retry::ErrorClass;
use crate::sink::FailureReason;

/// Which commit a batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Interval, count, async, `commit_now`: yields to a revoke or a finish
    /// between attempts.
    Normal,
    /// The final commit of shutdown: yields to a revoke.
    Final,
    /// A revoke's commit: never waits for the rebalance to end (it cannot end
    /// while the revoke callback waits); what the broker refuses is kept.
    Revoke,
}

/// Attempts refused with UNKNOWN_TOPIC_OR_PART before the offsets are given up.
pub(crate) const UNKNOWN_PARTITION_ATTEMPTS: u32 = 3;

/// While waiting for a rebalance to end, look again this often (without a
/// rebalance callback, e.g. once polling stopped, nothing else wakes the wait).
pub(crate) const REBALANCE_RECHECK: Duration = Duration::from_secs(1);

/// Everything the decision depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt {
    pub class: ErrorClass,
    pub mode: Mode,
    /// Attempts refused with UNKNOWN_TOPIC_OR_PART so far, this one included.
    pub unknown_partition_attempts: u32,
    /// The retry policy's next delay; `None` once its attempts or time are
    /// spent. Read only for the classes that back off ([`backs_off`]).
    pub delay: Option<Duration>,
    /// The retry policy's time bound (`max_elapsed` from the first attempt).
    pub time_bound: Deadline,
    /// The caller's deadline (shutdown, revoke); never for a normal commit.
    pub deadline: Deadline,
    /// The reason recorded when `deadline` is what ends the commit.
    pub deadline_reason: FailureReason,
    pub now: Instant,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// `_NO_OFFSET`: nothing to commit; a success.
    Done,
    /// Send the batch again at this time.
    RetryAt(Deadline),
    /// Wait until the rebalance under way ends (or this time), then commit
    /// again the offsets of partitions still owned; not an attempt against the
    /// budget.
    AwaitRebalance(Deadline),
    /// Keep the offsets until the next assign settles them (stale generation;
    /// REBALANCE_IN_PROGRESS inside a revoke).
    Keep,
    /// Give the offsets up, recorded with this reason.
    GiveUp(FailureReason),
}

/// Whether the class draws a delay from the retry policy.
pub(crate) fn backs_off(class: ErrorClass, unknown_partition_attempts: u32) -> bool {
    match class {
        ErrorClass::Retry => true,
        ErrorClass::UnknownPartition => unknown_partition_attempts < UNKNOWN_PARTITION_ATTEMPTS,
        _ => false,
    }
}

/// Decides what follows a failed attempt.
pub(crate) fn decide(a: &Attempt) -> Next {
    match a.class {
        ErrorClass::NoOp => Next::Done,
        ErrorClass::Stale => Next::Keep,
        ErrorClass::DeferUntilRebalanced if a.mode == Mode::Revoke => Next::Keep,
        ErrorClass::Fatal => Next::GiveUp(FailureReason::Fatal),
        ErrorClass::UnknownPartition
            if a.unknown_partition_attempts >= UNKNOWN_PARTITION_ATTEMPTS =>
        {
            Next::GiveUp(FailureReason::Fatal)
        }
        ErrorClass::DeferUntilRebalanced => {
            let (bound, reason) = if a.deadline.before(a.time_bound) {
                (a.deadline, a.deadline_reason)
            } else {
                (a.time_bound, FailureReason::RetriesExhausted)
            };
            if bound.is_past(a.now) {
                Next::GiveUp(reason)
            } else {
                Next::AwaitRebalance(bound.min(Deadline::after_from(a.now, REBALANCE_RECHECK)))
            }
        }
        // Retry, UnknownPartition below its bound, and any class added later.
        _ => {
            if a.deadline.is_past(a.now) {
                return Next::GiveUp(a.deadline_reason);
            }
            match a.delay {
                None => Next::GiveUp(FailureReason::RetriesExhausted),
                Some(delay) => Next::RetryAt(Deadline::after_from(a.now, delay).min(a.deadline)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass as C;
    use FailureReason as R;

    fn at(now: Instant, ms: u64) -> Deadline {
        Deadline::after_from(now, Duration::from_millis(ms))
    }

    #[test]
    fn every_class_mode_and_bound() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let base = Attempt {
            class: C::Retry,
            mode: Mode::Normal,
            unknown_partition_attempts: 0,
            delay: Some(ms(100)),
            time_bound: at(now, 30_000),
            deadline: Deadline::NEVER,
            deadline_reason: R::ShutdownDeadline,
            now,
        };
        let with = |f: &dyn Fn(&mut Attempt)| {
            let mut a = base;
            f(&mut a);
            a
        };
        let cases: Vec<(&str, Attempt, Next)> = vec![
            ("retry backs off", base, Next::RetryAt(at(now, 100))),
            (
                "retry with the budget spent",
                with(&|a| a.delay = None),
                Next::GiveUp(R::RetriesExhausted),
            ),
            (
                "retry capped at the shutdown deadline",
                with(&|a| {
                    a.mode = Mode::Final;
                    a.deadline = at(now, 40);
                }),
                Next::RetryAt(at(now, 40)),
            ),
            (
                "retry after the shutdown deadline",
                with(&|a| {
                    a.mode = Mode::Final;
                    a.deadline = Deadline::at(now);
                }),
                Next::GiveUp(R::ShutdownDeadline),
            ),
            (
                "retry after the revoke deadline",
                with(&|a| {
                    a.mode = Mode::Revoke;
                    a.deadline = Deadline::at(now);
                    a.deadline_reason = R::RebalanceDropped;
                }),
                Next::GiveUp(R::RebalanceDropped),
            ),
            (
                "retry inside a revoke before its deadline",
                with(&|a| {
                    a.mode = Mode::Revoke;
                    a.deadline = at(now, 5_000);
                }),
                Next::RetryAt(at(now, 100)),
            ),
            (
                "retry with no time bound at all",
                with(&|a| a.time_bound = Deadline::NEVER),
                Next::RetryAt(at(now, 100)),
            ),
            (
                "no offset is a success",
                with(&|a| a.class = C::NoOp),
                Next::Done,
            ),
            (
                "no offset inside a revoke",
                with(&|a| {
                    a.class = C::NoOp;
                    a.mode = Mode::Revoke;
                }),
                Next::Done,
            ),
            (
                "stale generation is kept",
                with(&|a| a.class = C::Stale),
                Next::Keep,
            ),
            (
                "stale generation during shutdown is kept",
                with(&|a| {
                    a.class = C::Stale;
                    a.mode = Mode::Final;
                    a.deadline = Deadline::at(now);
                }),
                Next::Keep,
            ),
            (
                "fatal gives up at once",
                with(&|a| a.class = C::Fatal),
                Next::GiveUp(R::Fatal),
            ),
            (
                "fatal gives up even with budget and time left",
                with(&|a| {
                    a.class = C::Fatal;
                    a.mode = Mode::Revoke;
                    a.deadline = at(now, 10_000);
                }),
                Next::GiveUp(R::Fatal),
            ),
            (
                "unknown partition, first refusal",
                with(&|a| {
                    a.class = C::UnknownPartition;
                    a.unknown_partition_attempts = 1;
                }),
                Next::RetryAt(at(now, 100)),
            ),
            (
                "unknown partition, second refusal",
                with(&|a| {
                    a.class = C::UnknownPartition;
                    a.unknown_partition_attempts = 2;
                }),
                Next::RetryAt(at(now, 100)),
            ),
            (
                "unknown partition, third refusal",
                with(&|a| {
                    a.class = C::UnknownPartition;
                    a.unknown_partition_attempts = 3;
                    a.delay = None;
                }),
                Next::GiveUp(R::Fatal),
            ),
            (
                "unknown partition with the budget spent",
                with(&|a| {
                    a.class = C::UnknownPartition;
                    a.unknown_partition_attempts = 1;
                    a.delay = None;
                }),
                Next::GiveUp(R::RetriesExhausted),
            ),
            (
                "rebalance in progress: wait for it, looking again every second",
                with(&|a| a.class = C::DeferUntilRebalanced),
                Next::AwaitRebalance(at(now, 1_000)),
            ),
            (
                "rebalance in progress near the policy's time bound",
                with(&|a| {
                    a.class = C::DeferUntilRebalanced;
                    a.time_bound = at(now, 300);
                }),
                Next::AwaitRebalance(at(now, 300)),
            ),
            (
                "rebalance in progress past the policy's time bound",
                with(&|a| {
                    a.class = C::DeferUntilRebalanced;
                    a.time_bound = Deadline::at(now);
                }),
                Next::GiveUp(R::RetriesExhausted),
            ),
            (
                "rebalance in progress, shutdown deadline first",
                with(&|a| {
                    a.class = C::DeferUntilRebalanced;
                    a.mode = Mode::Final;
                    a.deadline = at(now, 200);
                }),
                Next::AwaitRebalance(at(now, 200)),
            ),
            (
                "rebalance in progress past the shutdown deadline",
                with(&|a| {
                    a.class = C::DeferUntilRebalanced;
                    a.mode = Mode::Final;
                    a.deadline = Deadline::at(now);
                }),
                Next::GiveUp(R::ShutdownDeadline),
            ),
            (
                "rebalance in progress inside a revoke is kept, never awaited",
                with(&|a| {
                    a.class = C::DeferUntilRebalanced;
                    a.mode = Mode::Revoke;
                    a.deadline = at(now, 10_000);
                }),
                Next::Keep,
            ),
            (
                "rebalance in progress with no bound at all",
                with(&|a| {
                    a.class = C::DeferUntilRebalanced;
                    a.time_bound = Deadline::NEVER;
                }),
                Next::AwaitRebalance(at(now, 1_000)),
            ),
        ];
        for (name, attempt, want) in cases {
            assert_eq!(decide(&attempt), want, "{name}");
        }
    }

    #[test]
    fn only_retriable_classes_draw_a_delay() {
        assert!(backs_off(C::Retry, 0));
        assert!(backs_off(C::UnknownPartition, 2));
        assert!(!backs_off(C::UnknownPartition, 3));
        for c in [C::NoOp, C::Stale, C::Fatal, C::DeferUntilRebalanced] {
            assert!(!backs_off(c, 0), "{c:?}");
        }
    }
}
