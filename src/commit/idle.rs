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
//! Runs on the commit worker's thread after a commit cycle: one OffsetCommit
//! at a time, like every other commit. Only an offset equal to both what this
//! consumer committed and the partition's current commit point (everything
//! before it acked in the current assignment, nothing after it acked) is
//! re-sent, so it is never lower than what is committed and never past an
//! un-acked record.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use crate::assignment::TopicPartition;
use crate::commit::worker::Committer;
use crate::consumer::Inner;
use crate::stats::Metrics;

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

    /// When the worker must wake up next: the earlier of its own `tick` and the
    /// next re-commit.
    pub(crate) fn wake_at(&self, tick: Option<Instant>) -> Option<Instant> {
        let Some(every) = self.every else {
            return tick;
        };
        let due = self.last.values().map(|(_, since)| *since + every).min();
        match (tick, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Called by the worker after each commit cycle: notes which committed
    /// offsets changed and re-sends those unchanged for the period.
    pub(crate) fn after_cycle(&mut self, inner: &Inner, committer: &dyn Committer) {
        if self.every.is_some() {
            self.run_at(inner, committer, Instant::now());
        }
    }

    fn run_at(&mut self, inner: &Inner, committer: &dyn Committer, now: Instant) {
        let Some(every) = self.every else {
            return;
        };
        let slots = inner.assignment.all();
        let (committed, unsettled) = {
            let core = inner.lock_core();
            let committed: Vec<_> = slots
                .iter()
                .map(|s| core.queue.committed_offset(&s.key()))
                .collect();
            (committed, core.queue.unsettled())
        };
        let mut last = HashMap::with_capacity(slots.len());
        let mut due = Vec::new();
        for (slot, committed) in slots.iter().zip(committed) {
            let Some(c) = committed else { continue };
            let tp = slot.key();
            let since = match self.last.get(&tp) {
                Some(&(o, since)) if o == c => since,
                _ => now,
            };
            if now < since + every {
                last.insert(tp, (c, since));
                continue;
            }
            // Due: whatever happens now, the next look is a period away.
            let settled = !unsettled.iter().any(|e| e.tp == tp);
            if settled && slot.commit_point() == Some(c) {
                due.push((tp.clone(), c));
            }
            last.insert(tp, (c, now));
        }
        // Partitions no longer owned (or never committed) are forgotten.
        self.last = last;
        if due.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(due.len());
        for (tp, offset) in &due {
            let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(*offset));
        }
        Metrics::inc(&inner.metrics.commits_sent);
        let t0 = Instant::now();
        let res = committer.commit(&tpl);
        drop(tpl);
        inner.metrics.record_latency(t0.elapsed());
        match res {
            Ok(()) => {
                Metrics::inc(&inner.metrics.commits_succeeded);
                inner
                    .metrics
                    .idle_recommits
                    .fetch_add(due.len() as u64, std::sync::atomic::Ordering::Relaxed);
                for (tp, offset) in &due {
                    debug!(topic = %tp.0, partition = tp.1, offset, "idle offset re-committed");
                }
            }
            // The offset is still committed on the broker: nothing is lost
            // now, so this is not a failed offset; it is tried again after
            // another period.
            Err(e) => warn!(
                partitions = due.len(),
                error_code = ?e.rdkafka_error_code(),
                error = %e,
                "re-commit of idle offsets failed; trying again after another period"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::Config;
    use rdkafka::error::KafkaResult;
    use std::sync::{Arc, Mutex};

    /// Records what it was asked to commit.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Vec<(String, i32, i64)>>>);

    impl Committer for Recorder {
        fn commit(&self, offsets: &TopicPartitionList) -> KafkaResult<()> {
            let sent = offsets
                .elements()
                .iter()
                .map(|e| {
                    let o = match e.offset() {
                        Offset::Offset(o) => o,
                        other => panic!("not an absolute offset: {other:?}"),
                    };
                    (e.topic().to_string(), e.partition(), o)
                })
                .collect();
            self.0.lock().unwrap().push(sent);
            Ok(())
        }
    }

    fn commit(inner: &Inner, rec: &Recorder) {
        crate::commit::worker::commit_cycle(inner, rec, false, None).unwrap();
    }

    #[test]
    fn only_unchanged_fully_acked_offsets_are_resent_after_the_period() {
        let every = Duration::from_secs(60);
        let half = every / 2;
        let inner = Arc::new(Inner::new(Config::with_group("g"), None));
        let rec = Recorder::default();
        let sent = || rec.0.lock().unwrap().clone();
        let mut idle = IdleRecommit::new(Some(every));
        assert_eq!(idle.wake_at(None), None, "nothing committed yet");

        // p0: 0..10 delivered and acked; p1: 0..10 delivered, 5 not acked.
        let s0 = inner.assignment.assign(&inner, "t", 0);
        let s1 = inner.assignment.assign(&inner, "t", 1);
        for o in 0..10 {
            assert!(s0.deliver(o) && s1.deliver(o));
            s0.ack(o);
            if o != 5 {
                s1.ack(o);
            }
        }
        let t0 = Instant::now();
        commit(&inner, &rec);
        idle.run_at(&inner, &rec, t0);
        assert_eq!(sent().len(), 1, "the normal commit only");
        assert_eq!(idle.wake_at(None), Some(t0 + every));
        let tick = t0 + half;
        assert_eq!(idle.wake_at(Some(tick)), Some(tick), "the earlier wins");

        // Half a period later p1 moves on (5 acked; 10 delivered, not acked).
        s1.ack(5);
        assert!(s1.deliver(10));
        commit(&inner, &rec);
        idle.run_at(&inner, &rec, t0 + half);
        assert_eq!(
            sent()[1],
            vec![("t".to_string(), 1, 10)],
            "p1's normal commit"
        );

        // One period after t0: p0 is re-sent unchanged, p1 is not due yet.
        idle.run_at(&inner, &rec, t0 + every);
        assert_eq!(sent().len(), 3, "{:?}", sent());
        assert_eq!(sent()[2], vec![("t".to_string(), 0, 10)]);
        assert_eq!(inner.metrics.snapshot().idle_recommits, 1);
        assert_eq!(idle.wake_at(None), Some(t0 + half + every), "p1 next");

        // p0 acks past its committed offset without a commit: p0 is not
        // re-sent (the next commit carries the newer offset); p1 is.
        assert!(s0.deliver(10));
        s0.ack(10);
        idle.run_at(&inner, &rec, t0 + half + every);
        assert_eq!(sent().len(), 4, "{:?}", sent());
        assert_eq!(sent()[3], vec![("t".to_string(), 1, 10)], "only p1");

        // Not owned any more: forgotten, nothing scheduled.
        inner.assignment.revoke_all();
        idle.run_at(&inner, &rec, t0 + 3 * every);
        assert_eq!(sent().len(), 4);
        assert_eq!(idle.wake_at(None), None);
        for batch in sent() {
            for (_, p, o) in batch {
                assert!(o == 10 || (p == 1 && o == 5), "offset {o} of p{p}");
            }
        }
    }

    #[test]
    fn off_by_default_costs_nothing() {
        let inner = Arc::new(Inner::new(Config::with_group("g"), None));
        let rec = Recorder::default();
        let mut idle = IdleRecommit::new(inner.config.recommit_idle_every);
        let s = inner.assignment.assign(&inner, "t", 0);
        s.deliver(0);
        s.ack(0);
        commit(&inner, &rec);
        idle.after_cycle(&inner, &rec);
        let tick = Some(Instant::now());
        assert_eq!(idle.wake_at(tick), tick);
        assert_eq!(idle.wake_at(None), None);
        assert!(idle.last.is_empty());
        inner.assignment.revoke_all();
    }
}
