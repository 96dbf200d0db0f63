//! Per-partition ack tracking: out-of-order acks in, a contiguous commit point out.
//!
//! Pure code, no I/O. A [`PartitionTracker`] is told every offset handed to the
//! application (in increasing order, as Kafka delivers them) and every offset
//! acked (in any order). Its commit point is the offset of the next record to
//! read after the longest prefix of delivered records that are all acked:
//! `last contiguous acked + 1` in delivery order. Kafka offsets are not always
//! contiguous (compaction, transaction markers), so the prefix is measured in
//! delivered records, never by `offset + 1` arithmetic.

use std::collections::VecDeque;

/// What happened to one ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// The ack was recorded; the commit point may have moved.
    Recorded,
    /// This offset was already acked (or is already below the commit point).
    Duplicate,
    /// The offset was never delivered through this tracker.
    Unknown,
}

/// Ack tracking for one assignment of one partition.
#[derive(Debug, Default, Clone)]
pub struct PartitionTracker {
    /// Delivered but not yet released records, in delivery (= offset) order.
    /// `true` once acked. The front is always un-acked after [`Self::ack`] returns.
    window: VecDeque<(i64, bool)>,
    /// Offset of the next record to read once every delivered record up to it
    /// is acked; `None` until the first record is released.
    commit_point: Option<i64>,
    /// Highest offset delivered so far.
    last_delivered: Option<i64>,
}

impl PartitionTracker {
    /// A tracker with nothing delivered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `offset` was handed to the application. Offsets must
    /// increase; a repeated or lower offset (a seek backwards) is ignored and
    /// `false` is returned, so the commit point never moves backwards.
    pub fn deliver(&mut self, offset: i64) -> bool {
        if offset < 0 || self.last_delivered.is_some_and(|last| offset <= last) {
            return false;
        }
        self.last_delivered = Some(offset);
        self.window.push_back((offset, false));
        true
    }

    /// Marks `offset` as processed. Acks may arrive in any order.
    pub fn ack(&mut self, offset: i64) -> AckOutcome {
        // Fast path: in-order ack of the oldest outstanding record.
        match self.window.front_mut() {
            Some((front, acked)) if *front == offset => {
                if *acked {
                    return AckOutcome::Duplicate;
                }
                *acked = true;
            }
            Some((front, _)) if offset > *front => {
                match self.window.binary_search_by_key(&offset, |(o, _)| *o) {
                    Ok(i) => {
                        let slot = &mut self.window[i].1;
                        if *slot {
                            return AckOutcome::Duplicate;
                        }
                        *slot = true;
                        return AckOutcome::Recorded; // front still un-acked
                    }
                    Err(_) => return self.unknown_or_duplicate(offset),
                }
            }
            _ => return self.unknown_or_duplicate(offset),
        }
        // The front was acked: release the acked prefix.
        while let Some(&(o, true)) = self.window.front() {
            self.window.pop_front();
            self.commit_point = Some(o + 1);
        }
        AckOutcome::Recorded
    }

    fn unknown_or_duplicate(&self, offset: i64) -> AckOutcome {
        match self.commit_point {
            Some(cp) if offset < cp => AckOutcome::Duplicate,
            _ => AckOutcome::Unknown,
        }
    }

    /// The offset to commit (next record to read), if any record was released.
    pub fn commit_point(&self) -> Option<i64> {
        self.commit_point
    }

    /// Delivered records not yet released (un-acked, or acked behind an un-acked one).
    pub fn outstanding(&self) -> usize {
        self.window.len()
    }

    /// The highest offset delivered.
    pub fn last_delivered(&self) -> Option<i64> {
        self.last_delivered
    }

    /// `offset` was delivered and is not acked yet.
    pub fn is_unacked(&self, offset: i64) -> bool {
        self.window
            .binary_search_by_key(&offset, |(o, _)| *o)
            .is_ok_and(|i| !self.window[i].1)
    }

    /// The lowest delivered offset that is not acked yet.
    pub fn first_unacked(&self) -> Option<i64> {
        self.window.front().map(|(o, _)| *o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_acks_advance_the_commit_point() {
        let mut t = PartitionTracker::new();
        for o in 0..5 {
            assert!(t.deliver(o));
        }
        assert_eq!(t.commit_point(), None);
        assert_eq!(t.ack(0), AckOutcome::Recorded);
        assert_eq!(t.commit_point(), Some(1));
        assert_eq!(t.ack(1), AckOutcome::Recorded);
        assert_eq!(t.commit_point(), Some(2));
    }

    #[test]
    fn a_gap_holds_the_commit_point() {
        let mut t = PartitionTracker::new();
        for o in 10..20 {
            t.deliver(o);
        }
        for o in (11..20).rev() {
            assert_eq!(t.ack(o), AckOutcome::Recorded);
        }
        assert_eq!(t.commit_point(), None);
        assert_eq!(t.first_unacked(), Some(10));
        t.ack(10);
        assert_eq!(t.commit_point(), Some(20));
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn non_contiguous_offsets_use_delivery_order() {
        let mut t = PartitionTracker::new();
        for o in [3, 7, 8, 20] {
            t.deliver(o);
        }
        t.ack(7);
        t.ack(3);
        assert_eq!(t.commit_point(), Some(8));
        t.ack(20);
        assert_eq!(t.commit_point(), Some(8));
        t.ack(8);
        assert_eq!(t.commit_point(), Some(21));
    }

    #[test]
    fn duplicates_and_unknown_offsets_are_reported() {
        let mut t = PartitionTracker::new();
        t.deliver(0);
        t.deliver(1);
        t.deliver(2);
        assert_eq!(t.ack(2), AckOutcome::Recorded);
        assert_eq!(t.ack(2), AckOutcome::Duplicate);
        assert_eq!(t.ack(0), AckOutcome::Recorded);
        assert_eq!(t.ack(0), AckOutcome::Duplicate);
        assert_eq!(t.ack(5), AckOutcome::Unknown);
        assert_eq!(t.ack(-1), AckOutcome::Duplicate);
        assert!(!t.deliver(1), "a lower offset is refused");
    }

    proptest! {
        /// Random ack orders, with some records never acked: the commit point is
        /// never past an un-acked record and never decreases.
        #[test]
        fn random_ack_orders_never_pass_an_unacked_record(
            gaps in proptest::collection::vec(1i64..4, 1..200),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 0..400),
            skip in proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
        ) {
            let mut offsets = Vec::new();
            let mut o = 0i64;
            for g in &gaps { o += g; offsets.push(o); }
            let mut t = PartitionTracker::new();
            for &o in &offsets { prop_assert!(t.deliver(o)); }
            let never: Vec<i64> = skip.iter().map(|i| offsets[i.index(offsets.len())]).collect();
            let mut acked = std::collections::BTreeSet::new();
            let mut last_cp: Option<i64> = None;
            let mut ack_seq: Vec<i64> = order.iter().map(|i| offsets[i.index(offsets.len())]).collect();
            ack_seq.extend(offsets.iter().copied()); // then everything, in order
            for o in ack_seq {
                if never.contains(&o) { continue; }
                t.ack(o);
                acked.insert(o);
                let cp = t.commit_point();
                prop_assert!(cp >= last_cp, "commit point went backwards: {:?} -> {:?}", last_cp, cp);
                last_cp = cp;
                if let Some(cp) = cp {
                    // every delivered offset below the commit point is acked
                    for &d in offsets.iter().take_while(|&&d| d < cp) {
                        prop_assert!(acked.contains(&d), "commit point {} passes un-acked {}", cp, d);
                    }
                }
            }
            // With everything but `never` acked, the commit point sits exactly at
            // the first never-acked offset (or past the end).
            let expected = match never.iter().min() {
                Some(&n) => offsets.iter().take_while(|&&d| d < n).last().map(|d| d + 1),
                None => Some(*offsets.last().unwrap() + 1),
            };
            prop_assert_eq!(t.commit_point(), expected);
        }
    }
}
