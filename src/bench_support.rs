//! Hooks for the crate's own benchmarks (`benches/`). Not part of the API:
//! hidden from the docs and free to change in any release.
//!
//! [`AckBench`] builds the real shared state of a guard (slots, tracker,
//! counters, commit queue) without a Kafka connection, hands out real
//! [`AckToken`]s, and runs the worker's real commit cycle against a committer
//! that sends nothing, so the hot path (`AckToken::ack`: slot mutex, tracker,
//! `on_acked`) and the coalescing path can be timed in isolation.

use std::sync::Arc;

use rdkafka::TopicPartitionList;
use rdkafka::error::KafkaResult;

use crate::assignment::{AckToken, PartitionSlot};
use crate::commit::worker::{self, Committer};
use crate::consumer::{Config, Inner};

struct NoopCommitter;

impl Committer for NoopCommitter {
    fn commit(&self, _offsets: &TopicPartitionList) -> KafkaResult<()> {
        Ok(())
    }
}

/// A guard's shared state with `partitions` owned partitions of topic `bench`
/// and no Kafka behind it.
pub struct AckBench {
    inner: Arc<Inner>,
    slots: Vec<Arc<PartitionSlot>>,
    next: Vec<i64>,
}

impl AckBench {
    /// `commit_every`: as [`GuardBuilder::commit_every`](crate::GuardBuilder::commit_every)
    /// (asks for a commit cycle every `n` acks; run it with [`Self::commit_cycle`]).
    pub fn new(partitions: usize, commit_every: Option<u64>) -> Self {
        let config = Config {
            commit_every,
            ..Config::with_group("bench")
        };
        let inner = Arc::new(Inner::new(config, None));
        let slots = (0..partitions)
            .map(|p| inner.assignment.assign(&inner, "bench", p as i32))
            .collect();
        AckBench {
            inner,
            slots,
            next: vec![0; partitions],
        }
    }

    /// Delivers the next `n` offsets of `partition` (as the poll thread does)
    /// and returns their tokens, in offset order.
    pub fn deliver(&mut self, partition: usize, n: usize) -> Vec<AckToken> {
        let slot = &self.slots[partition];
        let start = self.next[partition];
        self.next[partition] += n as i64;
        (start..start + n as i64)
            .map(|offset| {
                assert!(slot.deliver(offset));
                AckToken {
                    slot: slot.clone(),
                    offset,
                }
            })
            .collect()
    }

    /// One commit cycle of the commit worker (snapshot of every commit point,
    /// coalescing queue, OffsetCommit request built), against a committer that
    /// sends nothing. Returns how many partition offsets it committed.
    pub fn commit_cycle(&self) -> usize {
        worker::commit_cycle(&self.inner, &NoopCommitter, false, None)
            .map(|v| v.len())
            .unwrap_or(0)
    }

    /// The guard's counters.
    pub fn stats(&self) -> crate::Stats {
        self.inner.metrics.snapshot()
    }

    /// The commit point of a partition.
    pub fn commit_point(&self, partition: usize) -> Option<i64> {
        self.slots[partition].commit_point()
    }
}

impl Drop for AckBench {
    fn drop(&mut self) {
        // Break the Inner -> slot -> Inner cycle.
        self.inner.assignment.revoke_all();
    }
}
