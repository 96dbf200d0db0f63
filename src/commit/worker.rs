//! The one serialized committer.
//!
//! A single thread owns every OffsetCommit this consumer sends: at most one is
//! in flight, it is never cancelled, and whatever is acked meanwhile coalesces
//! into the next one. rdkafka's synchronous commit blocks its thread, so the
//! worker runs on a thread of its own, never on the async executor.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tracing::{debug, info_span, warn};

use crate::commit::queue::{Entry, Offer};
use crate::consumer::Inner;
use crate::error::Error;
use crate::retry::{ErrorClass, classify};
use crate::sink::{FailedOffset, FailureReason};
use crate::stats::Metrics;

/// An offset that was committed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommittedOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The committed offset: the next record to read.
    pub offset: i64,
}

/// Sends one synchronous OffsetCommit. Implemented by the rdkafka consumer; a
/// trait so the worker's logic can be unit-tested.
pub(crate) trait Committer: Send + Sync + 'static {
    fn commit(&self, offsets: &TopicPartitionList) -> KafkaResult<()>;
}

pub(crate) type Waiter = oneshot::Sender<Result<Vec<CommittedOffset>, Error>>;

/// A request for the last commit before the worker stops.
pub(crate) struct Finish {
    pub deadline: Instant,
    pub done: Option<oneshot::Sender<()>>,
}

/// How a batch ended.
enum BatchEnd {
    Committed,
    Failed(Error),
}

pub(crate) fn spawn(inner: Arc<Inner>, committer: Arc<dyn Committer>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("offset-guard-commit".into())
        .spawn(move || run(inner, committer))
        .map(|_| ())
}

fn run(inner: Arc<Inner>, committer: Arc<dyn Committer>) {
    run_cycles(&inner, &*committer);
    // The guard is done: end every assignment, so late acks are stale and the
    // slots' references to the shared state are released.
    inner.assignment.revoke_all();
}

fn run_cycles(inner: &Inner, committer: &dyn Committer) {
    let interval = inner.config.commit_interval;
    let mut next_tick = interval.map(|i| Instant::now() + i);
    loop {
        // Wait for a reason to commit.
        let mut core = inner.lock_core();
        let finishing = loop {
            if core.finish.is_some() {
                break true;
            }
            if core.stop {
                return;
            }
            if core.trigger || !core.waiters.is_empty() {
                break false;
            }
            match next_tick {
                Some(t) => {
                    let now = Instant::now();
                    if now >= t {
                        break false;
                    }
                    core = inner.wait_core_timeout(core, t - now);
                }
                None => core = inner.wait_core(core),
            }
        };
        core.trigger = false;
        let waiters = std::mem::take(&mut core.waiters);
        let deadline = core.finish.as_ref().map(|f| f.deadline);
        drop(core);
        next_tick = interval.map(|i| Instant::now() + i);

        let result = commit_cycle(inner, committer, finishing, deadline);
        for w in waiters {
            let _ = w.send(result.clone());
        }
        if finishing {
            let mut core = inner.lock_core();
            if let Some(done) = core.finish.take().and_then(|mut f| f.done.take()) {
                let _ = done.send(());
            }
            core.stop = true;
            return;
        }
    }
}

/// Snapshots every owned partition's commit point and commits what moved.
/// Returns what this cycle committed.
pub(crate) fn commit_cycle(
    inner: &Inner,
    committer: &dyn Committer,
    force: bool,
    deadline: Option<Instant>,
) -> Result<Vec<CommittedOffset>, Error> {
    inner.reset_count_trigger();
    let points: Vec<_> = inner
        .assignment
        .all()
        .into_iter()
        .filter_map(|s| s.commit_point().map(|cp| (s.key(), s.epoch, cp)))
        .collect();
    let batch = {
        let mut core = inner.lock_core();
        for (tp, epoch, cp) in &points {
            if core.queue.offer(tp, *epoch, *cp, force) == Offer::Stale {
                Metrics::inc(&inner.metrics.offsets_stale_dropped);
            }
        }
        let (batch, stale) = core
            .queue
            .take(|(t, p), e| inner.assignment.epoch(t, *p) == Some(e));
        inner
            .metrics
            .offsets_stale_dropped
            .fetch_add(stale, std::sync::atomic::Ordering::Relaxed);
        batch
    };
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    match commit_batch(inner, committer, &batch, deadline) {
        BatchEnd::Committed => Ok(batch
            .iter()
            .map(|e| CommittedOffset {
                topic: e.tp.0.to_string(),
                partition: e.tp.1,
                offset: e.offset,
            })
            .collect()),
        BatchEnd::Failed(e) => Err(e),
    }
}

fn to_tpl(batch: &[Entry]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(batch.len());
    for e in batch {
        // Adding a partition of a valid topic name cannot fail.
        let _ = tpl.add_partition_offset(&e.tp.0, e.tp.1, Offset::Offset(e.offset));
    }
    tpl
}

/// Commits one batch with the retry policy. The batch's offsets are in flight
/// in the queue until this returns.
fn commit_batch(
    inner: &Inner,
    committer: &dyn Committer,
    batch: &[Entry],
    deadline: Option<Instant>,
) -> BatchEnd {
    let span =
        info_span!("offset_commit", group = %inner.config.group_id, partitions = batch.len());
    let _enter = span.enter();
    let mut batch: Vec<Entry> = batch.to_vec();
    let mut retry = inner.config.retry.start();
    let started = Instant::now();
    let mut unknown_partition_attempts = 0u32;
    let mut seen_rebalance = inner.lock_core().rebalance_gen;
    loop {
        let attempt = retry.attempt();
        let tpl = to_tpl(&batch);
        Metrics::inc(&inner.metrics.commits_sent);
        let t0 = Instant::now();
        let res = committer.commit(&tpl);
        drop(tpl);
        inner.metrics.record_latency(t0.elapsed());
        let err = match res {
            Ok(()) => {
                inner.lock_core().queue.committed(&batch);
                Metrics::inc(&inner.metrics.commits_succeeded);
                for e in &batch {
                    debug!(topic = %e.tp.0, partition = e.tp.1, offset = e.offset, attempt, "offset committed");
                }
                return BatchEnd::Committed;
            }
            Err(e) => e,
        };
        let code = err.rdkafka_error_code();
        let class = classify(&err);
        if inner.lock_core().abandoned {
            // shutdown gave up on this commit and recorded its offsets already
            return BatchEnd::Failed(Error::ShutDown);
        }
        match class {
            ErrorClass::NoOp => {
                inner.lock_core().queue.committed(&batch);
                Metrics::inc(&inner.metrics.commits_noop);
                debug!(attempt, "nothing to commit (_NO_OFFSET)");
                return BatchEnd::Committed;
            }
            ErrorClass::Stale => {
                warn!(attempt, error_code = ?code, error = %err, "commit rejected as stale; offsets dropped");
                inner.lock_core().queue.failed(&batch, false);
                inner
                    .metrics
                    .offsets_stale_dropped
                    .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Metrics::inc(&inner.metrics.commits_failed);
                return BatchEnd::Failed(Error::Kafka(err));
            }
            ErrorClass::Fatal => {
                return give_up(inner, &batch, FailureReason::Fatal, &err, attempt, started);
            }
            ErrorClass::UnknownPartition if unknown_partition_attempts >= 2 => {
                return give_up(inner, &batch, FailureReason::Fatal, &err, attempt, started);
            }
            ErrorClass::UnknownPartition => unknown_partition_attempts += 1,
            ErrorClass::Retry => {}
            ErrorClass::DeferUntilRebalanced => Metrics::inc(&inner.metrics.commits_deferred),
        }
        // Retry after a backoff, within the policy and the shutdown deadline.
        let delay = retry.next_delay();
        let now = Instant::now();
        let (delay, reason) = match (delay, deadline) {
            (_, Some(d)) if now >= d => (None, FailureReason::ShutdownDeadline),
            (Some(delay), Some(d)) if now + delay > d => {
                (Some(d - now), FailureReason::ShutdownDeadline)
            }
            (delay, _) => (delay, FailureReason::RetriesExhausted),
        };
        let Some(delay) = delay else {
            return give_up(inner, &batch, reason, &err, attempt, started);
        };
        Metrics::inc(&inner.metrics.commits_retried);
        warn!(attempt, error_code = ?code, error = %err, delay_ms = delay.as_millis() as u64, "commit failed; retrying");
        if class == ErrorClass::DeferUntilRebalanced {
            // Wait for the rebalance to end (or the backoff), then keep only the
            // partitions still owned in the same assignment.
            let mut core = inner.lock_core();
            let until = Instant::now() + delay;
            while core.rebalance_gen == seen_rebalance && !core.abandoned {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                core = inner.wait_core_timeout(core, until - now);
            }
            seen_rebalance = core.rebalance_gen;
            let (owned, gone): (Vec<Entry>, Vec<Entry>) = batch
                .into_iter()
                .partition(|e| inner.assignment.epoch(&e.tp.0, e.tp.1) == Some(e.epoch));
            if !gone.is_empty() {
                core.queue.failed(&gone, false);
                inner
                    .metrics
                    .offsets_stale_dropped
                    .fetch_add(gone.len() as u64, std::sync::atomic::Ordering::Relaxed);
                for e in &gone {
                    debug!(topic = %e.tp.0, partition = e.tp.1, offset = e.offset, "deferred offset dropped: partition no longer owned");
                }
            }
            batch = owned;
            drop(core);
            if batch.is_empty() {
                return BatchEnd::Committed;
            }
        } else {
            std::thread::sleep(delay);
        }
    }
}

fn give_up(
    inner: &Inner,
    batch: &[Entry],
    reason: FailureReason,
    err: &KafkaError,
    attempts: u32,
    started: Instant,
) -> BatchEnd {
    let code = err.rdkafka_error_code();
    inner.lock_core().queue.failed(batch, false);
    Metrics::inc(&inner.metrics.commits_failed);
    let elapsed = started.elapsed();
    for e in batch {
        warn!(topic = %e.tp.0, partition = e.tp.1, offset = e.offset, attempts, error_code = ?code, reason = %reason, "giving up on offset commit");
        inner.record_failure(FailedOffset {
            time: SystemTime::now(),
            group_id: inner.config.group_id.clone(),
            member_id: inner.member_id(),
            topic: e.tp.0.to_string(),
            partition: e.tp.1,
            offset: e.offset,
            reason,
            error_code: code,
            error_message: err.to_string(),
            attempts,
            elapsed,
        });
    }
    BatchEnd::Failed(Error::CommitFailed { code, attempts })
}
