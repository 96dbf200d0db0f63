//! When the next commit cycle is due. Pure: a function of the settings, what
//! was asked for and `now`.
//!
//! A cycle runs at once when something asked for it (`commit_now`, an ack
//! that made a commit due under `async_commits` or `commit_every`, an assign
//! that queued offsets), when the commit interval has passed since the last
//! cycle, or when an idle partition's re-commit is due.

use std::time::{Duration, Instant};

use crate::deadline::Deadline;

/// The periodic part of the schedule.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    interval: Option<Duration>,
    next_tick: Deadline,
}

/// What the worker does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Run a commit cycle now.
    Cycle,
    /// Wait for a command until this time.
    Wait(Deadline),
}

impl Schedule {
    /// `interval`: the commit interval (`None`: no periodic commits).
    pub(crate) fn new(interval: Option<Duration>, now: Instant) -> Self {
        let mut s = Schedule {
            interval,
            next_tick: Deadline::NEVER,
        };
        s.reset(now);
        s
    }

    /// A cycle ran: the next tick is an interval from `now` (never, for an
    /// interval too large for the clock).
    pub(crate) fn reset(&mut self, now: Instant) {
        self.next_tick = match self.interval {
            Some(i) => Deadline::after_from(now, i),
            None => Deadline::NEVER,
        };
    }

    /// `asked`: a cycle was asked for; `idle_due`: when the next idle
    /// re-commit is due.
    pub(crate) fn step(&self, now: Instant, asked: bool, idle_due: Deadline) -> Step {
        if asked {
            return Step::Cycle;
        }
        let due = self.next_tick.min(idle_due);
        if due.is_past(now) {
            Step::Cycle
        } else {
            Step::Wait(due)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_run_when_asked_on_the_tick_or_when_idle_work_is_due() {
        let now = Instant::now();
        let s = |secs: u64| Duration::from_secs(secs);
        let five = Schedule::new(Some(s(5)), now);
        let off = Schedule::new(None, now);
        let forever = Schedule::new(Some(Duration::MAX), now);
        let idle_at = |secs| Deadline::after_from(now, s(secs));
        let cases: Vec<(&str, Schedule, Instant, bool, Deadline, Step)> = vec![
            ("asked", five, now, true, Deadline::NEVER, Step::Cycle),
            (
                "before the tick",
                five,
                now + s(1),
                false,
                Deadline::NEVER,
                Step::Wait(idle_at(5)),
            ),
            (
                "on the tick",
                five,
                now + s(5),
                false,
                Deadline::NEVER,
                Step::Cycle,
            ),
            (
                "idle work before the tick",
                five,
                now,
                false,
                idle_at(2),
                Step::Wait(idle_at(2)),
            ),
            (
                "idle work due",
                five,
                now + s(2),
                false,
                idle_at(2),
                Step::Cycle,
            ),
            (
                "no interval: wait for a command",
                off,
                now + s(3600),
                false,
                Deadline::NEVER,
                Step::Wait(Deadline::NEVER),
            ),
            (
                "no interval, asked",
                off,
                now,
                true,
                Deadline::NEVER,
                Step::Cycle,
            ),
            (
                "Duration::MAX interval means never",
                forever,
                now + s(3600),
                false,
                Deadline::NEVER,
                Step::Wait(Deadline::NEVER),
            ),
        ];
        for (name, sched, at, asked, idle, want) in cases {
            assert_eq!(sched.step(at, asked, idle), want, "{name}");
        }
        let mut moved = five;
        moved.reset(now + s(5));
        assert_eq!(
            moved.step(now + s(6), false, Deadline::NEVER),
            Step::Wait(idle_at(10)),
            "reset moves the tick"
        );
    }
}
