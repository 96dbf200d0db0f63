//! The "stuck" signal: a partition's first un-acked record that stays the
//! first un-acked one for longer than `stuck_after`. Pure bookkeeping: the
//! commit worker samples the slots (about once a second) and reports what
//! this says.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::partition::TopicPartition;

/// Per partition: its first un-acked offset, since when (as sampled), and
/// whether it was reported.
#[derive(Debug, Default)]
pub(crate) struct StuckWatch {
    seen: HashMap<TopicPartition, Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    epoch: u64,
    offset: i64,
    since: Instant,
    reported: bool,
}

/// A record newly found stuck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stuck {
    pub tp: TopicPartition,
    pub offset: i64,
    pub age: Duration,
}

impl StuckWatch {
    /// One sample: every live slot's first un-acked offset. Returns the
    /// records un-acked for `after` or longer, each once; partitions not in
    /// the sample are forgotten.
    pub(crate) fn observe(
        &mut self,
        now: Instant,
        after: Duration,
        sample: impl IntoIterator<Item = (TopicPartition, u64, Option<i64>)>,
    ) -> Vec<Stuck> {
        let mut next = HashMap::with_capacity(self.seen.len());
        let mut stuck = Vec::new();
        for (tp, epoch, first) in sample {
            let Some(offset) = first else { continue };
            let mut s = match self.seen.get(&tp) {
                Some(s) if s.epoch == epoch && s.offset == offset => *s,
                _ => Seen {
                    epoch,
                    offset,
                    since: now,
                    reported: false,
                },
            };
            let age = now.saturating_duration_since(s.since);
            if !s.reported && age >= after {
                s.reported = true;
                stuck.push(Stuck {
                    tp: tp.clone(),
                    offset,
                    age,
                });
            }
            next.insert(tp, s);
        }
        self.seen = next;
        stuck
    }

    /// Since when `tp`'s first un-acked record has been `offset`, if that
    /// is what was last sampled.
    pub(crate) fn since(&self) -> HashMap<TopicPartition, (i64, Instant)> {
        self.seen
            .iter()
            .map(|(tp, s)| (tp.clone(), (s.offset, s.since)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    #[test]
    fn a_record_first_unacked_for_long_enough_is_reported_once() {
        let mut w = StuckWatch::default();
        let t0 = Instant::now();
        let after = Duration::from_secs(10);
        let s = |o| vec![(tp(0), 1, Some(o)), (tp(1), 1, None)];
        assert!(w.observe(t0, after, s(5)).is_empty());
        assert!(
            w.observe(t0 + Duration::from_secs(9), after, s(5))
                .is_empty()
        );
        let found = w.observe(t0 + Duration::from_secs(10), after, s(5));
        assert_eq!(
            found,
            vec![Stuck {
                tp: tp(0),
                offset: 5,
                age: after
            }]
        );
        assert!(
            w.observe(t0 + Duration::from_secs(20), after, s(5))
                .is_empty()
        );
        assert_eq!(w.since()[&tp(0)], (5, t0));
    }

    #[test]
    fn progress_a_new_epoch_or_a_partition_gone_starts_afresh() {
        let mut w = StuckWatch::default();
        let t0 = Instant::now();
        let after = Duration::from_secs(10);
        w.observe(t0, after, vec![(tp(0), 1, Some(5))]);
        // Acked: the first un-acked record moved on.
        let t1 = t0 + Duration::from_secs(8);
        assert!(w.observe(t1, after, vec![(tp(0), 1, Some(6))]).is_empty());
        assert!(
            w.observe(
                t0 + Duration::from_secs(12),
                after,
                vec![(tp(0), 1, Some(6))]
            )
            .is_empty(),
            "6 is first un-acked for 4 s only"
        );
        // Assigned again: a new epoch.
        w.observe(
            t0 + Duration::from_secs(13),
            after,
            vec![(tp(0), 2, Some(6))],
        );
        assert_eq!(w.since()[&tp(0)].1, t0 + Duration::from_secs(13));
        // Gone from the assignment.
        w.observe(t0 + Duration::from_secs(14), after, Vec::new());
        assert!(w.since().is_empty());
    }
}
