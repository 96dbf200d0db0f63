//! Offsets kept across a rebalance, and what becomes of them at the next
//! assign.
//!
//! An offset is kept when the broker refuses its commit with
//! REBALANCE_IN_PROGRESS inside a revoke, or with a stale generation
//! (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID), or when its partition is lost
//! before it was committed: it cannot be committed until the rebalance ends,
//! and then only if the partition is assigned back. Unresolved offsets of the failed-offset log
//! (`replay_failed_offsets`) wait for their partition's assign the same way.
//! Owned by the commit worker (no lock). [`plan_assign`] and [`judge`] are
//! pure.

use std::collections::HashMap;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::partition::TopicPartition;
use crate::sink::FailureReason;

/// An offset kept until the rebalance under way ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeptOffset {
    /// The assignment the offset was acked in.
    pub epoch: u64,
    pub offset: i64,
    /// The refusal.
    pub code: Option<RDKafkaErrorCode>,
    pub message: String,
    /// Recorded with this reason if it is never committed: `Lost` for the
    /// offset of a lost partition, else `RebalanceDropped`.
    pub reason: FailureReason,
}

impl KeptOffset {
    pub(crate) fn refused(epoch: u64, offset: i64, err: &KafkaError) -> Self {
        KeptOffset {
            epoch,
            offset,
            code: err.rdkafka_error_code(),
            message: err.to_string(),
            reason: FailureReason::RebalanceDropped,
        }
    }
}

/// The kept offsets, at most one (the highest) per partition.
#[derive(Debug, Default)]
pub(crate) struct Kept {
    map: HashMap<TopicPartition, KeptOffset>,
}

impl Kept {
    /// Keeps `k` unless a higher offset is kept already.
    pub(crate) fn keep(&mut self, tp: &TopicPartition, k: KeptOffset) {
        if self.map.get(tp).is_none_or(|c| c.offset < k.offset) {
            self.map.insert(tp.clone(), k);
        }
    }

    pub(crate) fn remove(&mut self, tp: &TopicPartition) -> Option<KeptOffset> {
        self.map.remove(tp)
    }

    /// Drops the kept offset of `tp` if it belongs to assignment `epoch` and
    /// is at or below `commit_point`: a revoke of that assignment settles it.
    pub(crate) fn remove_covered(&mut self, tp: &TopicPartition, epoch: u64, commit_point: i64) {
        if self
            .map
            .get(tp)
            .is_some_and(|k| k.epoch == epoch && k.offset <= commit_point)
        {
            self.map.remove(tp);
        }
    }

    /// Some kept offset is still ahead of what is committed for its partition.
    pub(crate) fn any_ahead(&self, committed: impl Fn(&TopicPartition) -> Option<i64>) -> bool {
        self.map
            .iter()
            .any(|(tp, k)| committed(tp) < Some(k.offset))
    }

    /// Takes every kept offset still ahead of what is committed.
    pub(crate) fn drain_ahead(
        &mut self,
        committed: impl Fn(&TopicPartition) -> Option<i64>,
    ) -> Vec<(TopicPartition, KeptOffset)> {
        let mut v: Vec<_> = self
            .map
            .drain()
            .filter(|(tp, k)| committed(tp) < Some(k.offset))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// Where a candidate for a commit at assign comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// Kept across the rebalance that just ended.
    Kept(KeptOffset),
    /// An unresolved entry of the failed-offset log.
    Log,
    /// The watermark of the stored progress (`stored_progress`): every record
    /// below it is done in the user's database; Kafka's commit catches up.
    Stored,
}

/// An offset to commit at assign if it is ahead of the group's committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub tp: TopicPartition,
    /// The new assignment's epoch.
    pub epoch: u64,
    pub offset: i64,
    pub source: Source,
}

/// What to do at an assign.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct AssignPlan {
    /// Assigned (back) to this member: read the group's committed offsets,
    /// then [`judge`] each. Highest offset first.
    pub back: Vec<Candidate>,
    /// Still owned in the same assignment (cooperative): offer again.
    pub reoffer: Vec<(TopicPartition, u64, i64)>,
    /// The partition went elsewhere: dropped, with what was committed before.
    pub dropped: Vec<(TopicPartition, KeptOffset, Option<i64>)>,
}

/// Settles the kept offsets and the log entries to replay at an assign.
/// `assigned`: the partitions of this assign with their new epochs;
/// `epoch`: the current epoch of any owned partition; `committed`: what this
/// consumer committed. Kept offsets are all settled; replay entries only for
/// assigned partitions (the rest stay for a later assign).
pub(crate) fn plan_assign(
    kept: &mut Kept,
    replay: &mut HashMap<TopicPartition, i64>,
    assigned: &[(TopicPartition, u64)],
    epoch: impl Fn(&TopicPartition) -> Option<u64>,
    committed: impl Fn(&TopicPartition) -> Option<i64>,
) -> AssignPlan {
    let mut plan = AssignPlan::default();
    for (tp, e) in assigned {
        if let Some(offset) = replay.remove(tp) {
            plan.back.push(Candidate {
                tp: tp.clone(),
                epoch: *e,
                offset,
                source: Source::Log,
            });
        }
    }
    for (tp, k) in kept.drain_ahead(&committed) {
        if let Some((_, e)) = assigned.iter().find(|(a, _)| *a == tp) {
            plan.back.push(Candidate {
                tp,
                epoch: *e,
                offset: k.offset,
                source: Source::Kept(k),
            });
        } else if epoch(&tp) == Some(k.epoch) {
            plan.reoffer.push((tp, k.epoch, k.offset));
        } else {
            let before = committed(&tp);
            plan.dropped.push((tp, k, before));
        }
    }
    sort_back(&mut plan.back);
    plan
}

/// Adds the stored watermarks of assigned partitions to the candidates.
pub(crate) fn add_stored(
    back: &mut Vec<Candidate>,
    stored: &[(TopicPartition, i64)],
    assigned: &[(TopicPartition, u64)],
) {
    for (tp, offset) in stored {
        if let Some((_, e)) = assigned.iter().find(|(a, _)| a == tp) {
            back.push(Candidate {
                tp: tp.clone(),
                epoch: *e,
                offset: *offset,
                source: Source::Stored,
            });
        }
    }
    sort_back(back);
}

/// Highest first: the offer of a lower one for the same partition is then
/// stale, and fetching starts at the highest.
fn sort_back(back: &mut [Candidate]) {
    back.sort_by(|a, b| b.offset.cmp(&a.offset).then(a.tp.cmp(&b.tp)));
}

/// What becomes of a candidate, given the group's committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Ahead of the group's offset (or none committed): commit it and start
    /// fetching there.
    Commit,
    /// Not ahead: nothing to commit (never backwards).
    Superseded { group: i64 },
    /// The group's offset could not be read; a log entry waits for the next assign.
    ReplayLater,
    /// The group's offset could not be read; a kept offset is given up.
    GiveUp,
}

/// `group`: the group's committed offset (`Ok(None)`: none), or `Err` when
/// it could not be read.
pub(crate) fn judge(c: &Candidate, group: Result<Option<i64>, ()>) -> Verdict {
    match (group, &c.source) {
        (Ok(None), _) => Verdict::Commit,
        (Ok(Some(g)), _) if g < c.offset => Verdict::Commit,
        (Ok(Some(g)), _) => Verdict::Superseded { group: g },
        (Err(()), Source::Log) => Verdict::ReplayLater,
        (Err(()), Source::Kept(_) | Source::Stored) => Verdict::GiveUp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn k(epoch: u64, offset: i64) -> KeptOffset {
        KeptOffset {
            epoch,
            offset,
            code: Some(RDKafkaErrorCode::RebalanceInProgress),
            message: "refused".into(),
            reason: FailureReason::RebalanceDropped,
        }
    }

    fn run(
        kept: &[(i32, KeptOffset)],
        replay: &[(i32, i64)],
        assigned: &[(i32, u64)],
        owned: &[(i32, u64)],
        committed: &[(i32, i64)],
    ) -> (AssignPlan, HashMap<TopicPartition, i64>) {
        let mut kk = Kept::default();
        for (p, o) in kept {
            kk.keep(&tp(*p), o.clone());
        }
        let mut rp: HashMap<_, _> = replay.iter().map(|(p, o)| (tp(*p), *o)).collect();
        let assigned: Vec<_> = assigned.iter().map(|(p, e)| (tp(*p), *e)).collect();
        let owned: HashMap<_, _> = owned.iter().map(|(p, e)| (tp(*p), *e)).collect();
        let committed: HashMap<_, _> = committed.iter().map(|(p, o)| (tp(*p), *o)).collect();
        let plan = plan_assign(
            &mut kk,
            &mut rp,
            &assigned,
            |t| owned.get(t).copied(),
            |t| committed.get(t).copied(),
        );
        assert!(kk.map.is_empty(), "every kept offset is settled");
        (plan, rp)
    }

    fn back(p: i32, epoch: u64, offset: i64, source: Source) -> Candidate {
        Candidate {
            tp: tp(p),
            epoch,
            offset,
            source,
        }
    }

    #[test]
    fn assign_plans() {
        // nothing kept, nothing to replay
        assert_eq!(
            run(&[], &[], &[(0, 1)], &[(0, 1)], &[]).0,
            AssignPlan::default()
        );
        // kept, partition assigned back under a new epoch
        let (p, _) = run(&[(0, k(1, 40))], &[], &[(0, 2)], &[(0, 2)], &[(0, 10)]);
        assert_eq!(p.back, vec![back(0, 2, 40, Source::Kept(k(1, 40)))]);
        // kept, but a later commit covered it: nothing
        let (p, _) = run(&[(0, k(1, 40))], &[], &[(0, 2)], &[(0, 2)], &[(0, 40)]);
        assert_eq!(p, AssignPlan::default());
        // kept, still owned in the same assignment (cooperative): offered again
        let (p, _) = run(&[(1, k(3, 7))], &[], &[(0, 4)], &[(0, 4), (1, 3)], &[]);
        assert_eq!(p.reoffer, vec![(tp(1), 3, 7)]);
        assert!(p.back.is_empty() && p.dropped.is_empty());
        // kept, the partition went to another member: dropped with what was committed
        let (p, _) = run(&[(1, k(3, 7))], &[], &[(0, 4)], &[(0, 4)], &[(1, 2)]);
        assert_eq!(p.dropped, vec![(tp(1), k(3, 7), Some(2))]);
        // kept, owned again but in a later epoch without being in this assign: dropped
        let (p, _) = run(&[(1, k(3, 7))], &[], &[], &[(1, 5)], &[]);
        assert_eq!(p.dropped.len(), 1);
        // replay for an assigned partition; another partition's entry waits
        let (p, rest) = run(&[], &[(0, 90), (5, 3)], &[(0, 6)], &[(0, 6)], &[]);
        assert_eq!(p.back, vec![back(0, 6, 90, Source::Log)]);
        assert_eq!(rest, HashMap::from([(tp(5), 3)]));
        // replay and kept for the same partition: highest first
        let (p, _) = run(&[(0, k(1, 50))], &[(0, 60)], &[(0, 2)], &[(0, 2)], &[]);
        assert_eq!(
            p.back.iter().map(|c| c.offset).collect::<Vec<_>>(),
            vec![60, 50]
        );
        // the higher of two refusals is kept
        let mut kk = Kept::default();
        kk.keep(&tp(0), k(1, 9));
        kk.keep(&tp(0), k(1, 4));
        assert_eq!(kk.remove(&tp(0)).map(|x| x.offset), Some(9));
        // a revoke of the same assignment settles what it covers, nothing else
        kk.keep(&tp(0), k(1, 9));
        kk.remove_covered(&tp(0), 2, 20);
        kk.remove_covered(&tp(0), 1, 8);
        assert!(
            kk.map.contains_key(&tp(0)),
            "other epoch, or above the commit point"
        );
        kk.remove_covered(&tp(0), 1, 9);
        assert!(kk.map.is_empty());
    }

    #[test]
    fn verdicts() {
        let log = back(0, 1, 50, Source::Log);
        let kept = back(0, 1, 50, Source::Kept(k(1, 50)));
        let stored = back(0, 1, 50, Source::Stored);
        let cases = [
            (&log, Ok(None), Verdict::Commit),
            (&log, Ok(Some(49)), Verdict::Commit),
            (&log, Ok(Some(50)), Verdict::Superseded { group: 50 }),
            (&log, Ok(Some(70)), Verdict::Superseded { group: 70 }),
            (&log, Err(()), Verdict::ReplayLater),
            (&kept, Ok(None), Verdict::Commit),
            (&kept, Ok(Some(10)), Verdict::Commit),
            (&kept, Ok(Some(50)), Verdict::Superseded { group: 50 }),
            (&kept, Err(()), Verdict::GiveUp),
            (&stored, Ok(None), Verdict::Commit),
            (&stored, Ok(Some(49)), Verdict::Commit),
            (&stored, Ok(Some(50)), Verdict::Superseded { group: 50 }),
            (&stored, Err(()), Verdict::GiveUp),
        ];
        for (c, group, want) in cases {
            assert_eq!(judge(c, group), want, "{:?} with {group:?}", c.source);
        }
    }

    #[test]
    fn stored_watermarks_of_assigned_partitions_join_highest_first() {
        let (mut plan, _) = run(&[(0, k(1, 40))], &[], &[(0, 5), (1, 6)], &[], &[]);
        add_stored(
            &mut plan.back,
            &[(tp(0), 30), (tp(1), 70), (tp(2), 90)],
            &[(tp(0), 5), (tp(1), 6)],
        );
        assert_eq!(
            plan.back,
            vec![
                back(1, 6, 70, Source::Stored),
                back(0, 5, 40, Source::Kept(k(1, 40))),
                back(0, 5, 30, Source::Stored),
            ],
            "partition 2 is not assigned; the kept 40 is ahead of the stored 30"
        );
    }
}
