//! Coalescing of commit requests (pure, no I/O).
//!
//! Per partition the queue holds at most one pending offset (the newest wins)
//! and remembers the offset in flight and the highest offset committed. An
//! offset at or below what is committed, in flight or pending, or of an older
//! assignment epoch, is never queued.

use std::collections::HashMap;

use crate::partition::TopicPartition;

#[derive(Debug, Default, Clone)]
struct PartState {
    epoch: u64,
    committed: Option<i64>,
    pending: Option<i64>,
    in_flight: Option<i64>,
    /// Highest offset given up on; offered again only by a forced (final) offer.
    given_up: Option<i64>,
    /// The broker refused `given_up` for good (fatal class): not even the
    /// final, forced offer sends it again.
    fatal: bool,
}

/// Result of offering an offset to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Queued (replacing an older pending offset, if any).
    Queued,
    /// Equal to what is already committed, in flight or pending: nothing to do.
    Unchanged,
    /// Below what is committed / in flight / pending, or from an older epoch: dropped.
    Stale,
}

/// One offset to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub tp: TopicPartition,
    pub epoch: u64,
    pub offset: i64,
}

#[derive(Debug, Default)]
pub(crate) struct CommitQueue {
    parts: HashMap<TopicPartition, PartState>,
}

impl CommitQueue {
    pub(crate) fn offer(
        &mut self,
        tp: &TopicPartition,
        epoch: u64,
        offset: i64,
        force: bool,
    ) -> Offer {
        let st = match self.parts.get_mut(tp) {
            Some(st) => st,
            None => self.parts.entry(tp.clone()).or_insert_with(|| PartState {
                epoch,
                ..Default::default()
            }),
        };
        if epoch < st.epoch {
            return Offer::Stale;
        }
        if epoch > st.epoch {
            // A new assignment: whatever was pending belonged to the old one.
            st.epoch = epoch;
            st.pending = None;
            st.given_up = None;
            st.fatal = false;
        }
        if st.committed.is_some_and(|c| offset < c) {
            return Offer::Stale;
        }
        let ahead = st.pending.max(st.in_flight).max(st.committed);
        match ahead {
            Some(a) if offset < a => Offer::Stale,
            Some(a) if offset == a => Offer::Unchanged,
            _ if (!force || st.fatal) && st.given_up == Some(offset) => Offer::Unchanged,
            _ => {
                st.pending = Some(offset);
                Offer::Queued
            }
        }
    }

    /// The partition's read position moved to `to` at the application's
    /// request (a seek): offsets of `epoch` from `to` on are accepted, below
    /// what was committed too; below `to` (an offset reset after the seek,
    /// which the application did not ask for) never below what was
    /// committed. An older epoch changes nothing.
    pub(crate) fn rewind(&mut self, tp: &TopicPartition, epoch: u64, to: i64) {
        let st = self.parts.entry(tp.clone()).or_default();
        if epoch >= st.epoch {
            *st = PartState {
                epoch,
                committed: st.committed.map(|c| c.min(to)),
                ..PartState::default()
            };
        }
    }

    /// Moves every pending offset whose epoch is still current into flight.
    /// Returns the batch and the number of offsets dropped as stale.
    pub(crate) fn take(
        &mut self,
        is_current: impl Fn(&TopicPartition, u64) -> bool,
    ) -> (Vec<Entry>, u64) {
        let mut batch = Vec::new();
        let mut stale = 0;
        for (tp, st) in self.parts.iter_mut() {
            if let Some(p) = st.pending.take() {
                if is_current(tp, st.epoch) {
                    st.in_flight = Some(p);
                    batch.push(Entry {
                        tp: tp.clone(),
                        epoch: st.epoch,
                        offset: p,
                    });
                } else {
                    stale += 1;
                }
            }
        }
        batch.sort_by(|a, b| a.tp.cmp(&b.tp));
        (batch, stale)
    }

    /// Moves the pending offsets of the given partitions (in the given epochs)
    /// into flight, leaving every other partition's pending offset alone.
    pub(crate) fn take_only(&mut self, keys: &[(TopicPartition, u64)]) -> Vec<Entry> {
        let mut batch = Vec::new();
        for (tp, epoch) in keys {
            if let Some(st) = self.parts.get_mut(tp)
                && st.epoch == *epoch
                && let Some(p) = st.pending.take()
            {
                st.in_flight = Some(p);
                batch.push(Entry {
                    tp: tp.clone(),
                    epoch: *epoch,
                    offset: p,
                });
            }
        }
        batch.sort_by(|a, b| a.tp.cmp(&b.tp));
        batch
    }

    /// The batch landed.
    pub(crate) fn committed(&mut self, batch: &[Entry]) {
        for e in batch {
            if let Some(st) = self.parts.get_mut(&e.tp) {
                st.in_flight = None;
                st.committed = st.committed.max(Some(e.offset));
                if st.pending.is_some_and(|p| p <= e.offset) {
                    st.pending = None;
                }
            }
        }
    }

    /// The batch failed. With `requeue` the offsets go back to pending (unless a
    /// newer one is pending already); otherwise they are remembered as given up.
    pub(crate) fn failed(&mut self, batch: &[Entry], requeue: bool) {
        for e in batch {
            if let Some(st) = self.parts.get_mut(&e.tp) {
                st.in_flight = None;
                if e.epoch != st.epoch {
                    continue;
                }
                if requeue {
                    if st.pending.is_none_or(|p| p < e.offset) {
                        st.pending = Some(e.offset);
                    }
                } else {
                    if st.given_up != Some(e.offset) {
                        st.fatal = false;
                    }
                    st.given_up = st.given_up.max(Some(e.offset));
                }
            }
        }
    }

    /// The batch was given up for a reason retrying cannot fix: its offsets are
    /// not offered again, not even by the final commit.
    pub(crate) fn failed_fatally(&mut self, batch: &[Entry]) {
        self.failed(batch, false);
        for e in batch {
            if let Some(st) = self.parts.get_mut(&e.tp)
                && e.epoch == st.epoch
                && st.given_up == Some(e.offset)
            {
                st.fatal = true;
            }
        }
    }

    /// Drops the pending offset of a partition (its assignment ended). The
    /// committed offset is kept so nothing older is committed later.
    pub(crate) fn forget(&mut self, tp: &TopicPartition) -> Option<i64> {
        self.parts.get_mut(tp).and_then(|st| st.pending.take())
    }

    /// An offset of the partition is pending or in flight.
    pub(crate) fn is_unsettled(&self, tp: &TopicPartition) -> bool {
        self.parts
            .get(tp)
            .is_some_and(|st| st.pending.is_some() || st.in_flight.is_some())
    }

    pub(crate) fn committed_offset(&self, tp: &TopicPartition) -> Option<i64> {
        self.parts.get(tp).and_then(|st| st.committed)
    }

    /// Offsets not known to be committed: pending or in flight.
    #[cfg(test)]
    pub(crate) fn unsettled(&self) -> Vec<Entry> {
        let mut v: Vec<Entry> = self
            .parts
            .iter()
            .filter_map(|(tp, st)| {
                st.pending.max(st.in_flight).map(|o| Entry {
                    tp: tp.clone(),
                    epoch: st.epoch,
                    offset: o,
                })
            })
            .collect();
        v.sort_by(|a, b| a.tp.cmp(&b.tp));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    #[test]
    fn newest_offset_wins_and_old_ones_are_dropped() {
        let mut q = CommitQueue::default();
        assert_eq!(q.offer(&tp(0), 1, 5, false), Offer::Queued);
        assert_eq!(q.offer(&tp(0), 1, 9, false), Offer::Queued);
        assert_eq!(q.offer(&tp(0), 1, 7, false), Offer::Stale);
        assert_eq!(q.offer(&tp(0), 1, 9, false), Offer::Unchanged);
        let (batch, stale) = q.take(|_, _| true);
        assert_eq!(stale, 0);
        assert_eq!(
            batch,
            vec![Entry {
                tp: tp(0),
                epoch: 1,
                offset: 9
            }]
        );
        // while in flight, a newer offset queues behind it; an older one is stale
        assert_eq!(q.offer(&tp(0), 1, 8, false), Offer::Stale);
        assert_eq!(q.offer(&tp(0), 1, 12, false), Offer::Queued);
        q.committed(&batch);
        assert_eq!(q.committed_offset(&tp(0)), Some(9));
        let (batch, _) = q.take(|_, _| true);
        assert_eq!(batch[0].offset, 12);
    }

    #[test]
    fn take_only_leaves_other_partitions_pending() {
        let mut q = CommitQueue::default();
        q.offer(&tp(0), 1, 10, false);
        q.offer(&tp(1), 2, 20, false);
        q.offer(&tp(2), 3, 30, false);
        let batch = q.take_only(&[(tp(1), 2), (tp(2), 99)]);
        assert_eq!(
            batch,
            vec![Entry {
                tp: tp(1),
                epoch: 2,
                offset: 20
            }],
            "only the named partition, in its epoch"
        );
        let (rest, stale) = q.take(|_, _| true);
        assert_eq!(stale, 0);
        assert_eq!(
            rest.iter().map(|e| e.offset).collect::<Vec<_>>(),
            vec![10, 30]
        );
    }

    #[test]
    fn old_epochs_are_stale() {
        let mut q = CommitQueue::default();
        q.offer(&tp(0), 2, 5, false);
        assert_eq!(q.offer(&tp(0), 1, 50, false), Offer::Stale);
        // a pending offset whose epoch ended is dropped at take
        let (batch, stale) = q.take(|_, e| e != 2);
        assert!(batch.is_empty());
        assert_eq!(stale, 1);
        // a new epoch replaces the pending offset of the old one
        q.offer(&tp(1), 1, 100, false);
        assert_eq!(q.offer(&tp(1), 2, 40, false), Offer::Queued);
        let (batch, _) = q.take(|_, _| true);
        assert_eq!(batch[0].offset, 40);
    }

    #[test]
    fn given_up_offsets_are_not_offered_again_unless_forced() {
        let mut q = CommitQueue::default();
        q.offer(&tp(0), 1, 5, false);
        let (batch, _) = q.take(|_, _| true);
        q.failed(&batch, false);
        assert_eq!(q.offer(&tp(0), 1, 5, false), Offer::Unchanged);
        assert_eq!(q.offer(&tp(0), 1, 5, true), Offer::Queued);
        let (batch, _) = q.take(|_, _| true);
        q.failed(&batch, true);
        assert_eq!(q.unsettled()[0].offset, 5, "requeued");
    }

    #[test]
    fn fatally_refused_offsets_are_not_offered_again_even_forced() {
        let mut q = CommitQueue::default();
        q.offer(&tp(0), 1, 5, false);
        let (batch, _) = q.take(|_, _| true);
        q.failed_fatally(&batch);
        assert_eq!(q.offer(&tp(0), 1, 5, true), Offer::Unchanged);
        assert_eq!(
            q.offer(&tp(0), 1, 6, false),
            Offer::Queued,
            "a higher offset is tried"
        );
    }

    proptest! {
        /// Whatever the order of offers, completions and failures, a batch never
        /// carries an offset at or below the committed one, and the committed
        /// offset never decreases.
        #[test]
        fn committed_offsets_never_decrease(ops in proptest::collection::vec((0u8..4, 0i64..50, 1u64..3), 1..300)) {
            let mut q = CommitQueue::default();
            let mut in_flight: Vec<Entry> = Vec::new();
            let mut last = None;
            for (op, off, epoch) in ops {
                match op {
                    0 | 1 => { q.offer(&tp(0), epoch, off, false); }
                    2 => {
                        if in_flight.is_empty() {
                            let (b, _) = q.take(|_, _| true);
                            for e in &b {
                                prop_assert!(Some(e.offset) > q.committed_offset(&e.tp));
                            }
                            in_flight = b;
                        }
                    }
                    _ => {
                        if off % 3 == 0 { q.failed(&in_flight, off % 2 == 0) } else { q.committed(&in_flight) }
                        in_flight.clear();
                    }
                }
                let c = q.committed_offset(&tp(0));
                prop_assert!(c >= last);
                last = c;
            }
        }
    }
}
