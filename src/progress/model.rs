//! The progress of one partition: a contiguous watermark plus the offsets
//! done above it. Pure: no I/O, no lock.

use std::collections::BTreeSet;

/// Which records of one partition are done, exactly.
///
/// Every offset below the [`watermark`](Self::watermark) is done (or is no
/// record at all: an offset gap); above it, exactly the offsets in
/// [`done_above`](Self::done_above) are done. Marking the watermark's own
/// offset done folds it, and the run of done offsets right after it, into the
/// watermark, so the set holds only offsets done out of order: it is bounded
/// by the records in flight, not by the stream's length.
///
/// Without a watermark (`None`: the partition's progress was never started,
/// see [`advance`](Self::advance)), nothing is folded: every done offset is in
/// the set, and nothing below them counts as done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionProgress {
    watermark: Option<i64>,
    done: BTreeSet<i64>,
}

/// How stored progress changes after [`PartitionProgress::mark_done`] or
/// [`PartitionProgress::advance`]: the rows a store writes, in the same
/// transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Change {
    /// The offset to insert as a done row (`None`: it went straight into
    /// the watermark).
    pub insert: Option<i64>,
    /// The watermark's new value, when it moved (it only moves up).
    pub watermark: Option<i64>,
    /// Done rows folded into the watermark, to delete, ascending: exactly the
    /// stored done offsets below the new watermark.
    pub delete: Vec<i64>,
}

/// Why [`PartitionProgress::mark_done`] refused an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkRefused {
    /// Offsets are never negative.
    Negative,
    /// `i64::MAX`: the offset after it cannot be stored, and Kafka never
    /// gives it to a record.
    TooLarge,
    /// The offset is done already (below the watermark, or in the done set).
    AlreadyDone,
}

/// What a keyed mark found (`sqlite::mark_token_with_key`): whether the
/// record's effects are to be applied in this transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "on DuplicateKey the record's effects must not be applied"]
pub enum Keyed {
    /// The first record with this business key within the retention: apply
    /// its effects in the same transaction, commit, then ack.
    Apply,
    /// A record with this business key was processed within the retention,
    /// at another offset (a producer retry wrote it twice, say): apply
    /// nothing. The record's offset is marked done in the transaction:
    /// commit it, then ack.
    DuplicateKey,
}

impl PartitionProgress {
    /// Progress with nothing done and no watermark.
    pub fn new() -> Self {
        Self::default()
    }

    /// Progress from stored parts: a watermark and offsets done above it.
    /// Offsets at or below the watermark, or negative, are not kept (they are
    /// done by the watermark; a store checks its rows before, see
    /// [`ProgressError::Damaged`](super::ProgressError::Damaged)); the run
    /// right after the watermark is folded in.
    pub fn from_parts(watermark: Option<i64>, done: impl IntoIterator<Item = i64>) -> Self {
        let mut p = PartitionProgress {
            watermark: watermark.map(|w| w.max(0)),
            done: done
                .into_iter()
                .filter(|&o| o >= 0 && watermark.is_none_or(|w| o >= w))
                .collect(),
        };
        p.fold();
        p
    }

    /// The next offset to process: every offset below it is done. `None`
    /// until the progress is started by [`advance`](Self::advance).
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// The offsets done above the watermark, ascending.
    pub fn done_above(&self) -> impl ExactSizeIterator<Item = i64> + '_ {
        self.done.iter().copied()
    }

    /// Whether the record at `offset` is done.
    pub fn is_done(&self, offset: i64) -> bool {
        self.watermark.is_some_and(|w| offset < w) || self.done.contains(&offset)
    }

    /// Marks `offset` done and folds what became contiguous into the
    /// watermark. Out of order is fine: the watermark never passes an offset
    /// that is not done.
    ///
    /// # Errors
    ///
    /// [`MarkRefused::AlreadyDone`] when it was done already (the record was
    /// processed twice: roll back), [`MarkRefused::Negative`] for a negative
    /// offset, [`MarkRefused::TooLarge`] for `i64::MAX`. Nothing changes then.
    pub fn mark_done(&mut self, offset: i64) -> Result<Change, MarkRefused> {
        if offset < 0 {
            return Err(MarkRefused::Negative);
        }
        if offset == i64::MAX {
            return Err(MarkRefused::TooLarge);
        }
        if self.is_done(offset) {
            return Err(MarkRefused::AlreadyDone);
        }
        self.done.insert(offset);
        let before = self.watermark;
        let delete = self.fold();
        if self.watermark == before {
            return Ok(Change {
                insert: Some(offset),
                ..Change::default()
            });
        }
        // The new offset was the old watermark: it is not a stored row.
        Ok(Change {
            insert: None,
            watermark: self.watermark,
            delete: delete.into_iter().filter(|&o| o != offset).collect(),
        })
    }

    /// Starts or moves up the watermark: every offset below `floor` is done
    /// or is no record (a gap: compaction, transaction markers). Use it with
    /// the offset a consumer starts fetching at, and with a point known from
    /// delivery order (all records delivered below it are done), which steps
    /// over gaps that [`mark_done`](Self::mark_done) alone cannot cross.
    /// A floor at or below the watermark changes nothing.
    pub fn advance(&mut self, floor: i64) -> Change {
        let floor = floor.max(0);
        if self.watermark.is_some_and(|w| floor <= w) {
            return Change::default();
        }
        let mut delete: Vec<i64> = self.done.range(..floor).copied().collect();
        self.done = self.done.split_off(&floor);
        self.watermark = Some(floor);
        delete.extend(self.fold());
        Change {
            insert: None,
            watermark: self.watermark,
            delete,
        }
    }

    /// Moves the watermark over the done offsets right at it; returns them.
    fn fold(&mut self) -> Vec<i64> {
        let mut folded = Vec::new();
        let Some(mut w) = self.watermark else {
            return folded;
        };
        while self.done.first() == Some(&w) {
            self.done.pop_first();
            folded.push(w);
            w += 1;
        }
        self.watermark = Some(w);
        folded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn started(w: i64) -> PartitionProgress {
        let mut p = PartitionProgress::new();
        p.advance(w);
        p
    }

    #[test]
    fn in_order_marks_move_the_watermark_and_store_nothing() {
        let mut p = started(10);
        for o in 10..15 {
            let c = p.mark_done(o).unwrap();
            assert_eq!(c.insert, None);
            assert_eq!(c.watermark, Some(o + 1));
            assert!(c.delete.is_empty());
        }
        assert_eq!(p.watermark(), Some(15));
        assert_eq!(p.done_above().len(), 0);
        assert!(p.is_done(14) && !p.is_done(15));
    }

    #[test]
    fn out_of_order_marks_wait_for_the_gap_then_fold() {
        let mut p = started(0);
        for o in [3, 1, 2] {
            let c = p.mark_done(o).unwrap();
            assert_eq!(c.insert, Some(o));
            assert_eq!(c.watermark, None, "0 is not done");
        }
        assert_eq!(p.watermark(), Some(0));
        assert!(!p.is_done(0) && p.is_done(1) && !p.is_done(4));
        let c = p.mark_done(0).unwrap();
        assert_eq!(c.insert, None);
        assert_eq!(c.watermark, Some(4));
        assert_eq!(c.delete, vec![1, 2, 3]);
        assert_eq!(p.done_above().len(), 0);
    }

    #[test]
    fn done_twice_is_refused_and_changes_nothing() {
        let mut p = started(5);
        p.mark_done(7).unwrap();
        let before = p.clone();
        assert_eq!(p.mark_done(7), Err(MarkRefused::AlreadyDone));
        assert_eq!(p.mark_done(4), Err(MarkRefused::AlreadyDone));
        assert_eq!(p.mark_done(-1), Err(MarkRefused::Negative));
        assert_eq!(p, before);
    }

    #[test]
    fn without_a_watermark_nothing_folds_until_advance() {
        let mut p = PartitionProgress::new();
        assert_eq!(p.mark_done(0).unwrap().insert, Some(0));
        assert_eq!(p.mark_done(1).unwrap().insert, Some(1));
        assert_eq!(p.mark_done(5).unwrap().insert, Some(5));
        assert_eq!(p.watermark(), None);
        assert!(!p.is_done(2));
        let c = p.advance(0);
        assert_eq!(c.watermark, Some(2));
        assert_eq!(c.delete, vec![0, 1]);
        assert_eq!(p.done_above().collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn advance_steps_over_a_gap_and_never_goes_back() {
        let mut p = started(0);
        p.mark_done(0).unwrap();
        p.mark_done(2).unwrap(); // 1 is a transaction marker: never marked
        p.mark_done(3).unwrap();
        assert_eq!(p.watermark(), Some(1));
        let c = p.advance(2);
        assert_eq!(c.watermark, Some(4));
        assert_eq!(c.delete, vec![2, 3]);
        assert_eq!(p.advance(3), Change::default());
        assert_eq!(p.watermark(), Some(4));
    }

    #[test]
    fn from_parts_drops_rows_below_and_folds_the_run() {
        let p = PartitionProgress::from_parts(Some(5), [3, 5, 6, 9]);
        assert_eq!(p.watermark(), Some(7));
        assert_eq!(p.done_above().collect::<Vec<_>>(), vec![9]);
    }

    proptest! {
        /// Any completion order, some records never done: the watermark never
        /// passes a record that is not done, `is_done` is exact, and the set
        /// holds only offsets above the watermark.
        #[test]
        fn watermark_never_passes_an_undone_record(
            n in 1i64..150,
            order in proptest::collection::vec(any::<prop::sample::Index>(), 0..300),
            never in proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
        ) {
            let never: Vec<i64> = never.iter().map(|i| i.index(n as usize) as i64).collect();
            let mut p = started(0);
            let mut done = BTreeSet::new();
            let seq = order.iter().map(|i| i.index(n as usize) as i64).chain(0..n);
            for o in seq {
                if never.contains(&o) { continue; }
                let r = p.mark_done(o);
                prop_assert_eq!(r.is_ok(), done.insert(o), "offset {}", o);
                let w = p.watermark().unwrap();
                prop_assert!((0..w).all(|x| done.contains(&x)), "watermark {} passes an undone record", w);
                prop_assert!(p.done_above().all(|x| x > w));
                prop_assert!((0..n).all(|x| p.is_done(x) == done.contains(&x)));
            }
            let expected = never.iter().copied().min().unwrap_or(n);
            prop_assert_eq!(p.watermark(), Some(expected));
        }
    }
}
