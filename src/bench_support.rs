//! Hooks for the crate's own benchmarks (`benches/`). Not part of the API:
//! hidden from the docs and free to change in any release.
//!
//! [`AckBench`] builds the real assignment, ack tokens, counters and commit
//! worker of a guard without a Kafka connection, and runs the worker's real
//! commit cycle (on the caller's thread) against a committer that sends
//! nothing, so the hot path (`AckToken::ack`: slot mutex, tracker, trigger)
//! and the coalescing path can be timed in isolation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::error::KafkaResult;

use crate::assignment::{AckToken, Assignment, PartitionSlot};
use crate::commit::handle::{self, BenchWorker, Committer, WorkerParts};
use crate::config::Config;
use crate::failures::FailureRecorder;
use crate::partition::TopicPartition;
use crate::stats::Metrics;
use crate::threads::Lifecycle;

pub use crate::tracker::{AckOutcome, PartitionTracker};

struct NoopCommitter;

impl Committer for NoopCommitter {
    fn commit(&self, _offsets: &TopicPartitionList) -> KafkaResult<()> {
        Ok(())
    }
    fn committed(&self, tps: &[TopicPartition], _: Duration) -> KafkaResult<Vec<Option<i64>>> {
        Ok(vec![None; tps.len()])
    }
    fn log_end(&self, _: &TopicPartition) -> Option<i64> {
        None
    }
}

/// A guard's state with `partitions` owned partitions of topic `bench` and no
/// Kafka behind it.
pub struct AckBench {
    assignment: Arc<Assignment>,
    metrics: Arc<Metrics>,
    worker: BenchWorker,
    slots: Vec<Arc<PartitionSlot>>,
    next: Vec<i64>,
}

impl AckBench {
    /// `commit_every`: as [`GuardBuilder::commit_every`](crate::GuardBuilder::commit_every)
    /// (asks for a commit cycle every `n` acks; run it with [`Self::commit_cycle`]).
    pub fn new(partitions: usize, commit_every: Option<u64>) -> Self {
        let config = Arc::new(Config {
            commit_every,
            ..Config::with_group("bench")
        });
        let metrics = Arc::new(Metrics::default());
        let (_, mailbox, assignment) =
            handle::wire(&config, &metrics, Arc::new(Lifecycle::default()));
        let recorder = Arc::new(FailureRecorder::new(
            "bench".into(),
            None,
            None,
            metrics.clone(),
        ));
        let parts = WorkerParts {
            config,
            assignment: assignment.clone(),
            recorder,
            metrics: metrics.clone(),
            replay: HashMap::new(),
        };
        let worker = handle::bench_worker(parts, Arc::new(NoopCommitter), mailbox);
        let slots = (0..partitions)
            .map(|p| assignment.assign("bench", p as i32))
            .collect();
        AckBench {
            assignment,
            metrics,
            worker,
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
                AckToken::new(slot.clone(), offset)
            })
            .collect()
    }

    /// One commit cycle of the commit worker (snapshot of every commit point,
    /// coalescing queue, OffsetCommit request built), against a committer that
    /// sends nothing. Returns how many partition offsets it committed.
    pub fn commit_cycle(&mut self) -> usize {
        self.worker.cycle()
    }

    /// The guard's counters.
    pub fn stats(&self) -> crate::Stats {
        self.metrics.snapshot()
    }

    /// The commit point of a partition.
    pub fn commit_point(&self, partition: usize) -> Option<i64> {
        let _ = &self.assignment;
        self.slots[partition].commit_point()
    }
}
