//! Flow control of the owned front-end: which partitions the poll thread
//! pauses so that it never blocks on a slow application and memory stays
//! bounded.
//!
//! Pure decisions, no I/O: the poll thread gathers each slot's figures,
//! [`FlowState::decide`] says what to pause and resume, and the poll thread
//! calls librdkafka's `pause`/`resume` (the only caller for this consumer).
//! A partition is paused while any of these holds, and resumed when none does:
//!
//! - **user**: the application paused it ([`GuardedConsumer::pause`](crate::GuardedConsumer::pause));
//! - **backlog**: records handed to the front-end but not yet received reached
//!   the backlog limit (`prefetch_batches` x `batch_size`): every partition
//!   with records waiting is paused, until the backlog is down to half;
//! - **outstanding**: the partition's outstanding records (delivered and not
//!   released by acks) reached `max_outstanding_per_partition`, until down to
//!   half; or all partitions' together reached `max_outstanding`: every
//!   partition with outstanding records is paused, until the total is down to half.

use std::collections::HashMap;

use crate::partition::TopicPartition;

/// The limits, from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlowLimits {
    /// Records waiting in the hand-off at which partitions are paused.
    pub backlog: usize,
    pub outstanding_per_partition: usize,
    pub outstanding: usize,
}

/// One slot's figures at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Figures {
    pub tp: TopicPartition,
    pub epoch: u64,
    /// Records of this slot fetched and not yet received by the application.
    pub waiting: bool,
    pub outstanding: usize,
    pub user_paused: bool,
}

/// Why a partition is paused (any of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Why {
    pub user: bool,
    pub backlog: bool,
    /// This partition's own outstanding records.
    pub outstanding: bool,
    /// All partitions' outstanding records together.
    pub total: bool,
}

impl Why {
    fn any(self) -> bool {
        self.user || self.backlog || self.outstanding || self.total
    }

    fn guards(self) -> bool {
        self.backlog || self.outstanding || self.total
    }
}

/// What to do now.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Decision {
    pub pause: Vec<TopicPartition>,
    pub resume: Vec<TopicPartition>,
}

/// What the poll thread paused, by partition (with the epoch of the slot).
#[derive(Debug, Default)]
pub(crate) struct FlowState {
    paused: HashMap<TopicPartition, (u64, Why)>,
    /// The backlog went over the limit and has not come down to half yet.
    backlogged: bool,
    /// Total outstanding went over its limit and has not come down to half yet.
    overfull: bool,
}

impl FlowState {
    /// Partitions paused now.
    #[cfg(test)]
    pub(crate) fn is_paused(&self, tp: &TopicPartition) -> bool {
        self.paused.contains_key(tp)
    }

    /// The backlog reached its limit and has not come down to half since.
    pub(crate) fn is_backlogged(&self) -> bool {
        self.backlogged
    }

    /// Anything paused by the guard (not by the user): the poll thread then
    /// checks again soon.
    pub(crate) fn holds_back(&self) -> bool {
        self.paused.values().any(|(_, w)| w.guards())
    }

    /// Decides from the figures of every live slot and the backlog (records
    /// waiting in the hand-off). Partitions no longer live are resumed and
    /// forgotten: their pause ends with their assignment.
    pub(crate) fn decide(
        &mut self,
        limits: FlowLimits,
        backlog: usize,
        slots: &[Figures],
    ) -> Decision {
        if backlog >= limits.backlog {
            self.backlogged = true;
        } else if backlog <= limits.backlog / 2 {
            self.backlogged = false;
        }
        let total: usize = slots.iter().map(|s| s.outstanding).sum();
        if total >= limits.outstanding {
            self.overfull = true;
        } else if total <= limits.outstanding / 2 {
            self.overfull = false;
        }
        let mut d = Decision::default();
        let mut next = HashMap::with_capacity(self.paused.len());
        for s in slots {
            let before = self
                .paused
                .get(&s.tp)
                .filter(|(epoch, _)| *epoch == s.epoch)
                .map(|(_, w)| *w);
            let was = before.unwrap_or_default();
            let per = limits.outstanding_per_partition;
            let why = Why {
                user: s.user_paused,
                // Kept while backlogged, whatever is waiting now.
                backlog: self.backlogged && (s.waiting || was.backlog),
                outstanding: s.outstanding >= per || (was.outstanding && s.outstanding > per / 2),
                total: self.overfull && s.outstanding > 0,
            };
            match (self.paused.get(&s.tp), why.any()) {
                (Some(_), true) => {
                    next.insert(s.tp.clone(), (s.epoch, why));
                }
                (None, true) => {
                    d.pause.push(s.tp.clone());
                    next.insert(s.tp.clone(), (s.epoch, why));
                }
                (Some(_), false) => d.resume.push(s.tp.clone()),
                (None, false) => {}
            }
        }
        // Partitions paused and no longer live: librdkafka keeps a pause
        // across a revoke, so it is lifted now (no fetching follows while
        // the partition is not assigned), or it would outlive the assignment.
        for tp in self.paused.keys() {
            if !next.contains_key(tp) && !d.resume.contains(tp) {
                d.resume.push(tp.clone());
            }
        }
        self.paused = next;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FlowLimits = FlowLimits {
        backlog: 100,
        outstanding_per_partition: 50,
        outstanding: 120,
    };

    fn fig(p: i32, waiting: bool, outstanding: usize, user: bool) -> Figures {
        Figures {
            tp: TopicPartition::new("t", p),
            epoch: 1,
            waiting,
            outstanding,
            user_paused: user,
        }
    }

    fn tps(ps: &[i32]) -> Vec<TopicPartition> {
        ps.iter().map(|&p| TopicPartition::new("t", p)).collect()
    }

    #[test]
    fn backlog_pauses_partitions_with_records_waiting_until_down_to_half() {
        let mut f = FlowState::default();
        let slots = [fig(0, true, 10, false), fig(1, false, 10, false)];
        assert_eq!(f.decide(LIMITS, 99, &slots), Decision::default());
        let d = f.decide(LIMITS, 100, &slots);
        assert_eq!(
            d.pause,
            tps(&[0]),
            "only the partition with records waiting"
        );
        assert!(f.holds_back());
        // Still over half: stays paused even once nothing of it waits.
        let slots = [fig(0, false, 10, false), fig(1, false, 10, false)];
        assert_eq!(f.decide(LIMITS, 51, &slots), Decision::default());
        let d = f.decide(LIMITS, 50, &slots);
        assert_eq!(d.resume, tps(&[0]));
        assert!(!f.holds_back());
    }

    #[test]
    fn outstanding_per_partition_pauses_at_the_cap_and_resumes_at_half() {
        let mut f = FlowState::default();
        let d = f.decide(LIMITS, 0, &[fig(0, false, 50, false)]);
        assert_eq!(d.pause, tps(&[0]));
        assert_eq!(
            f.decide(LIMITS, 0, &[fig(0, false, 26, false)]),
            Decision::default()
        );
        let d = f.decide(LIMITS, 0, &[fig(0, false, 25, false)]);
        assert_eq!(d.resume, tps(&[0]));
    }

    #[test]
    fn total_outstanding_pauses_every_partition_holding_records() {
        let mut f = FlowState::default();
        let slots = [
            fig(0, false, 40, false),
            fig(1, false, 40, false),
            fig(2, false, 40, false),
            fig(3, false, 0, false),
        ];
        let d = f.decide(LIMITS, 0, &slots);
        assert_eq!(d.pause, tps(&[0, 1, 2]));
        let slots = [
            fig(0, false, 30, false),
            fig(1, false, 30, false),
            fig(2, false, 1, false),
            fig(3, false, 0, false),
        ];
        assert_eq!(f.decide(LIMITS, 0, &slots), Decision::default(), "61 > 60");
        let slots = [
            fig(0, false, 30, false),
            fig(1, false, 30, false),
            fig(2, false, 0, false),
            fig(3, false, 0, false),
        ];
        assert_eq!(f.decide(LIMITS, 0, &slots).resume, tps(&[0, 1, 2]));
    }

    #[test]
    fn a_user_pause_outlives_the_guards_reasons_and_a_new_epoch_starts_fresh() {
        let mut f = FlowState::default();
        assert_eq!(
            f.decide(LIMITS, 0, &[fig(0, false, 0, true)]).pause,
            tps(&[0])
        );
        assert!(!f.holds_back(), "a user pause is not the guard's");
        assert_eq!(
            f.decide(LIMITS, 0, &[fig(0, false, 0, true)]),
            Decision::default()
        );
        assert_eq!(
            f.decide(LIMITS, 0, &[fig(0, false, 0, false)]).resume,
            tps(&[0])
        );
        // Paused for outstanding in epoch 1; epoch 2 (assigned again) is
        // judged on its own figures.
        f.decide(LIMITS, 0, &[fig(0, false, 50, false)]);
        let mut again = fig(0, false, 30, false);
        again.epoch = 2;
        assert_eq!(f.decide(LIMITS, 0, &[again]).resume, tps(&[0]));
    }

    #[test]
    fn partitions_no_longer_live_are_resumed_and_forgotten() {
        let mut f = FlowState::default();
        f.decide(LIMITS, 0, &[fig(0, false, 0, true)]);
        assert!(f.is_paused(&TopicPartition::new("t", 0)));
        assert_eq!(f.decide(LIMITS, 0, &[]).resume, tps(&[0]));
        assert!(!f.is_paused(&TopicPartition::new("t", 0)));
        assert_eq!(f.decide(LIMITS, 0, &[]), Decision::default(), "once");
    }
}
