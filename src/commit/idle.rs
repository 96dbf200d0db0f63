//! Optional periodic re-commit of unchanged offsets
//! ([`GuardBuilder::recommit_idle_every`](crate::GuardBuilder::recommit_idle_every)).
//!
//! A broker deletes a group's committed offsets `offsets.retention.minutes`
//! (7 days by default) after the last commit on Kafka before 2.1; since 2.1
//! (KIP-211), only once the group has been empty that long, or after the last
//! commit for a group without members (manual `assign`). A partition that
//! receives nothing for that long is never committed again, so its offset can
//! expire and the next consumer starts at `auto.offset.reset`. With the
//! setting on, the worker re-sends the offset it last committed for every owned
//! partition whose position has not moved for the period.
//!
//! Pure: the worker passes each owned partition's figures and `now`, and sends
//! what [`IdleRecommit::plan`] returns as one OffsetCommit, like every other
//! commit. Only an offset equal to both what this consumer committed and the
//! partition's current commit point (everything before it acked in the current
//! assignment, nothing after it acked), with nothing pending or in flight, is
//! re-sent: never lower than what is committed, never past an un-acked record.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::deadline::Deadline;
use crate::partition::TopicPartition;

/// One owned partition, as the worker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdleInput {
    pub tp: TopicPartition,
    /// What this consumer last committed.
    pub committed: Option<i64>,
    /// Where a commit would go now.
    pub commit_point: Option<i64>,
    /// Nothing pending or in flight for it.
    pub settled: bool,
}

/// When each owned partition's committed offset was last sent.
pub(crate) struct IdleRecommit {
    every: Option<Duration>,
    /// The offset last committed and when it was sent (or first seen).
    last: HashMap<TopicPartition, (i64, Instant)>,
}

impl IdleRecommit {
    /// `None`: off (the worker pays nothing).
    pub(crate) fn new(every: Option<Duration>) -> Self {
        IdleRecommit {
            every,
            last: HashMap::new(),
        }
    }

    pub(crate) fn is_on(&self) -> bool {
        self.every.is_some()
    }

    /// When the next re-commit is due (never while off or with nothing committed).
    pub(crate) fn due_at(&self) -> Deadline {
        let Some(every) = self.every else {
            return Deadline::NEVER;
        };
        self.last
            .values()
            .map(|(_, since)| Deadline::after_from(*since, every))
            .fold(Deadline::NEVER, Deadline::min)
    }

    /// Notes which committed offsets changed and returns those unchanged for
    /// the period, to be sent again. Partitions not in `owned` are forgotten.
    pub(crate) fn plan(&mut self, now: Instant, owned: &[IdleInput]) -> Vec<(TopicPartition, i64)> {
        let Some(every) = self.every else {
            return Vec::new();
        };
        let mut last = HashMap::with_capacity(owned.len());
        let mut due = Vec::new();
        for p in owned {
            let Some(c) = p.committed else { continue };
            let since = match self.last.get(&p.tp) {
                Some(&(o, since)) if o == c => since,
                _ => now,
            };
            if !Deadline::after_from(since, every).is_past(now) {
                last.insert(p.tp.clone(), (c, since));
                continue;
            }
            // Due: whatever happens now, the next look is a period away.
            if p.settled && p.commit_point == Some(c) {
                due.push((p.tp.clone(), c));
            }
            last.insert(p.tp.clone(), (c, now));
        }
        self.last = last;
        due.sort();
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(p: i32, committed: Option<i64>, cp: Option<i64>, settled: bool) -> IdleInput {
        IdleInput {
            tp: TopicPartition::new("t", p),
            committed,
            commit_point: cp,
            settled,
        }
    }

    #[test]
    fn only_unchanged_fully_acked_settled_offsets_are_resent_after_the_period() {
        let every = Duration::from_secs(60);
        let t0 = Instant::now();
        let tp = |p| TopicPartition::new("t", p);
        let mut idle = IdleRecommit::new(Some(every));
        assert!(idle.due_at().is_never(), "nothing committed yet");

        // t0: p0 committed 10 (all acked), p1 committed 5 (more acked since)
        let first = [
            input(0, Some(10), Some(10), true),
            input(1, Some(5), Some(7), true),
        ];
        assert!(
            idle.plan(t0, &first).is_empty(),
            "first sight starts the period"
        );
        assert_eq!(idle.due_at(), Deadline::after_from(t0, every));

        // half a period later p1 moved to 7
        let half = t0 + every / 2;
        let moved = [
            input(0, Some(10), Some(10), true),
            input(1, Some(7), Some(7), true),
        ];
        assert!(idle.plan(half, &moved).is_empty());

        type Case = (
            &'static str,
            Instant,
            Vec<IdleInput>,
            Vec<(TopicPartition, i64)>,
        );
        let cases: Vec<Case> = vec![
            (
                "p0 due, p1 not yet",
                t0 + every,
                moved.to_vec(),
                vec![(tp(0), 10)],
            ),
            (
                "p1 due a period after it moved",
                half + every,
                moved.to_vec(),
                vec![(tp(1), 7)],
            ),
            (
                "acked past the committed offset: not re-sent",
                half + 3 * every,
                vec![input(0, Some(10), Some(12), true)],
                vec![],
            ),
            (
                "a commit in flight: not re-sent",
                half + 5 * every,
                vec![input(0, Some(10), Some(10), false)],
                vec![],
            ),
            (
                "never committed: nothing",
                half + 7 * every,
                vec![input(3, None, Some(4), true)],
                vec![],
            ),
        ];
        for (name, now, owned, want) in cases {
            assert_eq!(idle.plan(now, &owned), want, "{name}");
        }
        assert!(idle.plan(t0 + 20 * every, &[]).is_empty());
        assert!(idle.due_at().is_never(), "unowned partitions are forgotten");
    }

    #[test]
    fn off_costs_nothing_and_a_huge_period_never_fires() {
        let now = Instant::now();
        let mut off = IdleRecommit::new(None);
        assert!(!off.is_on());
        assert!(
            off.plan(now, &[input(0, Some(1), Some(1), true)])
                .is_empty()
        );
        assert!(off.due_at().is_never());
        let mut forever = IdleRecommit::new(Some(Duration::MAX));
        assert!(
            forever
                .plan(now, &[input(0, Some(1), Some(1), true)])
                .is_empty()
        );
        assert!(forever.due_at().is_never());
    }
}
