//! The one serialized committer.
//!
//! A single thread owns every OffsetCommit this consumer sends: at most one is
//! in flight, it is never cancelled, and whatever is acked meanwhile coalesces
//! into the next one. rdkafka's synchronous commit blocks its thread, so the
//! worker runs on a thread of its own, never on the async executor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tracing::{debug, info_span, warn};

use crate::assignment::{PartitionSlot, TopicPartition};
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

/// An offset kept across a rebalance: its commit was refused with
/// REBALANCE_IN_PROGRESS inside a revoke, or with a stale generation. The next
/// assign resolves it: committed if the partition came back to us and the
/// offset is ahead of the group's, else dropped and recorded.
#[derive(Debug, Clone)]
pub(crate) struct Carried {
    pub epoch: u64,
    pub offset: i64,
    pub code: Option<RDKafkaErrorCode>,
    pub message: String,
}

impl Carried {
    /// The failure record of a kept offset given up with reason
    /// `rebalance_dropped`; `why` says how, the refusal's message follows.
    pub(crate) fn dropped(&self, inner: &Inner, tp: &TopicPartition, why: &str) -> FailedOffset {
        let mut f = inner.failure(
            &tp.0,
            tp.1,
            self.offset,
            FailureReason::RebalanceDropped,
            format!("{why} (refused with: {})", self.message),
        );
        f.error_code = self.code;
        f
    }
}

/// A revoke, handed by the rebalance callback (poll thread) to the worker so
/// the revoked partitions' commit goes through the one serialized path.
pub(crate) struct RevokeJob {
    pub slots: Vec<Arc<PartitionSlot>>,
    /// Until when to wait for acks of records already handed out.
    pub grace_until: Instant,
    /// The revoke's deadline (commit retries included).
    pub deadline: Instant,
    /// Set by the callback when it stopped waiting.
    pub cancelled: AtomicBool,
    /// Set by the worker (under the core lock) when done.
    pub outcome: Mutex<Option<RevokeOutcome>>,
}

/// What the worker did for a revoke.
#[derive(Debug, Default, Clone)]
pub(crate) struct RevokeOutcome {
    pub committed: Vec<CommittedOffset>,
    pub deferred: Vec<CommittedOffset>,
    pub failed: Vec<CommittedOffset>,
    /// Time spent waiting for in-flight acks.
    pub waited: Duration,
}

impl RevokeJob {
    pub(crate) fn new(slots: Vec<Arc<PartitionSlot>>, grace: Duration, timeout: Duration) -> Self {
        let now = Instant::now();
        RevokeJob {
            slots,
            grace_until: now + grace.min(timeout),
            deadline: now + timeout,
            cancelled: AtomicBool::new(false),
            outcome: Mutex::new(None),
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    pub(crate) fn take_outcome(&self) -> Option<RevokeOutcome> {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub(crate) fn is_done(&self) -> bool {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

/// How a batch ended.
enum BatchEnd {
    Committed,
    Failed(Error),
    /// Refused until the rebalance ends (revoke) or by a stale generation:
    /// the offsets are to be kept (carried) to the next assign.
    Deferred(KafkaError),
    /// A revoke arrived while a normal batch waited to retry: the batch was
    /// put back in the queue.
    Interrupted,
}

/// Which commit a batch is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Interval, count, async, `commit_now`: yields to a revoke between attempts.
    Normal,
    /// The final commit of shutdown (also yields to a revoke).
    Final,
    /// A revoke's commit: never waits for the rebalance to end (it cannot end
    /// while the callback waits); what it refuses is carried.
    Revoke,
}

pub(crate) fn spawn(inner: Arc<Inner>, committer: Arc<dyn Committer>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("offset-guard-commit".into())
        .spawn(move || run(inner, committer))
        .map(|_| ())
}

fn run(inner: Arc<Inner>, committer: Arc<dyn Committer>) {
    run_cycles(&inner, &*committer);
    inner
        .poll_stop
        .store(true, std::sync::atomic::Ordering::Release);
    {
        // A revoke that arrived as the worker stopped: release its callback.
        let mut core = inner.lock_core();
        if let Some(job) = core.revoke.take() {
            *job.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(RevokeOutcome::default());
        }
    }
    inner.notify();
    record_unresolved_carry(&inner);
    // The guard is done: end every assignment, so late acks are stale and the
    // slots' references to the shared state are released.
    inner.assignment.revoke_all();
}

fn run_cycles(inner: &Inner, committer: &dyn Committer) {
    let interval = inner.config.commit_interval;
    let mut next_tick = interval.map(|i| Instant::now() + i);
    let mut idle = super::idle::IdleRecommit::new(inner.config.recommit_idle_every);
    loop {
        // Wait for a reason to commit.
        let mut core = inner.lock_core();
        let finishing = loop {
            if let Some(job) = core.revoke.take() {
                drop(core);
                run_revoke(inner, committer, &job);
                core = inner.lock_core();
                continue;
            }
            if core.finish.is_some() {
                break true;
            }
            if core.stop {
                return;
            }
            if core.trigger || !core.waiters.is_empty() {
                break false;
            }
            match idle.wake_at(next_tick) {
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

        if finishing {
            finish(inner, committer, waiters, deadline);
            return;
        }
        let result = match commit_cycle_in(inner, committer, Mode::Normal, None) {
            Some(result) => result,
            None => {
                // Interrupted by a revoke: the batch went back to the queue;
                // the next cycle (after the revoke) serves these callers.
                let mut core = inner.lock_core();
                core.trigger = true;
                core.waiters.extend(waiters);
                continue;
            }
        };
        for w in waiters {
            let _ = w.send(result.clone());
        }
        idle.after_cycle(inner, committer);
    }
}

/// The final commit. A rebalance may be under way (a rolling restart stops
/// members one after another): the poll thread still serves its callbacks, so
/// revokes are committed here as they come, and offsets refused until the
/// rebalance ends are committed once the assign settled them, all within the
/// shutdown deadline. Then the poll thread is stopped.
fn finish(
    inner: &Inner,
    committer: &dyn Committer,
    waiters: Vec<Waiter>,
    deadline: Option<Instant>,
) {
    let mut waiters = waiters;
    loop {
        let job = inner.lock_core().revoke.take();
        if let Some(job) = job {
            run_revoke(inner, committer, &job);
            continue;
        }
        let seen_gen = inner.lock_core().rebalance_gen;
        let Some(result) = commit_cycle_in(inner, committer, Mode::Final, deadline) else {
            continue; // a revoke came first; its partitions are committed by it
        };
        let mut core = inner.lock_core();
        let waiting_on_rebalance = core
            .carry
            .iter()
            .any(|(tp, c)| core.queue.committed_offset(tp) < Some(c.offset));
        let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
        if !waiting_on_rebalance || out_of_time || core.abandoned {
            drop(core);
            for w in waiters.drain(..) {
                let _ = w.send(result.clone());
            }
            break;
        }
        debug!("final commit waits for the rebalance under way to end");
        while core.rebalance_gen == seen_gen && core.revoke.is_none() && !core.abandoned {
            let now = Instant::now();
            let until = deadline.unwrap_or(now + Duration::from_secs(1));
            if now >= until {
                break;
            }
            core = inner.wait_core_timeout(core, until - now);
        }
    }
    record_unresolved_carry(inner);
    let mut core = inner.lock_core();
    if let Some(done) = core.finish.take().and_then(|mut f| f.done.take()) {
        let _ = done.send(());
    }
    core.stop = true;
    drop(core);
    inner
        .poll_stop
        .store(true, std::sync::atomic::Ordering::Release);
    inner.notify();
}

/// Snapshots every owned partition's commit point and commits what moved.
/// Returns what this cycle committed.
pub(crate) fn commit_cycle(
    inner: &Inner,
    committer: &dyn Committer,
    force: bool,
    deadline: Option<Instant>,
) -> Result<Vec<CommittedOffset>, Error> {
    let mode = if force { Mode::Final } else { Mode::Normal };
    commit_cycle_in(inner, committer, mode, deadline).unwrap_or(Ok(Vec::new()))
}

/// A commit cycle; `None` if a revoke interrupted it (its batch is queued again).
fn commit_cycle_in(
    inner: &Inner,
    committer: &dyn Committer,
    mode: Mode,
    deadline: Option<Instant>,
) -> Option<Result<Vec<CommittedOffset>, Error>> {
    let force = mode == Mode::Final;
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
        return Some(Ok(Vec::new()));
    }
    let deadline = deadline.map(|d| (d, FailureReason::ShutdownDeadline));
    match commit_batch(inner, committer, &batch, mode, deadline) {
        BatchEnd::Committed => Some(Ok(batch.iter().map(committed_offset).collect())),
        BatchEnd::Failed(e) => Some(Err(e)),
        BatchEnd::Deferred(e) => {
            carry(inner, &batch, &e, true);
            Some(Err(Error::Kafka(e)))
        }
        BatchEnd::Interrupted => None,
    }
}

fn committed_offset(e: &Entry) -> CommittedOffset {
    CommittedOffset {
        topic: e.tp.0.to_string(),
        partition: e.tp.1,
        offset: e.offset,
    }
}

/// Keeps refused offsets to the next assign (see [`Carried`]).
/// With `owned_only`, an offset whose assignment ended meanwhile (a lost
/// assignment, recorded by the lost callback) is not kept: lost partitions are
/// never committed. The check and the insertion happen under the shared lock,
/// which the lost callback also holds while it ends the assignment.
fn carry(inner: &Inner, batch: &[Entry], err: &KafkaError, owned_only: bool) {
    let mut core = inner.lock_core();
    core.queue.failed(batch, false);
    for e in batch {
        if owned_only && inner.assignment.epoch(&e.tp.0, e.tp.1) != Some(e.epoch) {
            Metrics::inc(&inner.metrics.offsets_stale_dropped);
            debug!(topic = %e.tp.0, partition = e.tp.1, offset = e.offset, "refused offset not kept: its assignment ended");
            continue;
        }
        debug!(topic = %e.tp.0, partition = e.tp.1, offset = e.offset, error = %err, "offset kept until the rebalance ends");
        let keep = core.carry.get(&e.tp).is_none_or(|c| c.offset < e.offset);
        if keep {
            core.carry.insert(
                e.tp.clone(),
                Carried {
                    epoch: e.epoch,
                    offset: e.offset,
                    code: err.rdkafka_error_code(),
                    message: err.to_string(),
                },
            );
        }
    }
    inner
        .metrics
        .offsets_deferred
        .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
}

/// The worker stops: kept offsets nobody resolved are recorded as given up
/// (unless a later commit covered them).
fn record_unresolved_carry(inner: &Inner) {
    let mut core = inner.lock_core();
    let carry: Vec<_> = core.carry.drain().collect();
    let mut failures = Vec::new();
    for (tp, c) in carry {
        if core.queue.committed_offset(&tp) >= Some(c.offset) {
            continue;
        }
        failures.push(c.dropped(
            inner,
            &tp,
            "kept across a rebalance and never re-owned before the consumer stopped",
        ));
    }
    drop(core);
    for f in failures {
        warn!(topic = %f.topic, partition = f.partition, offset = f.offset, "offset kept across a rebalance was never committed");
        inner.record_failure(f);
    }
}

/// Commits a revoke's partitions synchronously, through this worker (so the
/// one-in-flight invariant holds across the rebalance callback), after waiting
/// up to the grace period for acks of records already handed out.
fn run_revoke(inner: &Inner, committer: &dyn Committer, job: &RevokeJob) {
    let span =
        info_span!("offset_revoke", group = %inner.config.group_id, partitions = job.slots.len());
    let _enter = span.enter();
    let started = Instant::now();
    let mut core = inner.lock_core();
    while !job.is_cancelled() && !job.slots.iter().all(|s| s.drained()) {
        let now = Instant::now();
        if now >= job.grace_until {
            debug!("revoke grace period over with acks outstanding; committing what is contiguous");
            break;
        }
        core = inner.wait_core_timeout(core, job.grace_until - now);
    }
    let waited = started.elapsed();
    // From here on acks of these assignments are stale.
    let mut keys = Vec::with_capacity(job.slots.len());
    for s in &job.slots {
        let cp = inner.assignment.revoke_slot(s);
        debug!(topic = %s.topic, partition = s.partition, epoch = s.epoch, commit_point = ?cp, committed = ?core.queue.committed_offset(&s.key()), "revoking");
        if let Some(cp) = cp
            && core.queue.offer(&s.key(), s.epoch, cp, true) == Offer::Stale
        {
            Metrics::inc(&inner.metrics.offsets_stale_dropped);
        }
        keys.push((s.key(), s.epoch));
    }
    let batch = core.queue.take_only(&keys);
    drop(core);
    let mut outcome = RevokeOutcome {
        waited,
        ..Default::default()
    };
    if !batch.is_empty() {
        let deadline = Some((job.deadline, FailureReason::RebalanceDropped));
        match commit_batch(inner, committer, &batch, Mode::Revoke, deadline) {
            BatchEnd::Committed => {
                inner
                    .metrics
                    .offsets_revoke_committed
                    .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
                outcome.committed = batch.iter().map(committed_offset).collect();
            }
            BatchEnd::Deferred(e) => {
                // The revoke callback is waiting on us: no lost callback can
                // run meanwhile; the slots were ended by this revoke.
                carry(inner, &batch, &e, false);
                outcome.deferred = batch.iter().map(committed_offset).collect();
            }
            BatchEnd::Failed(_) | BatchEnd::Interrupted => {
                outcome.failed = batch.iter().map(committed_offset).collect();
            }
        }
    }
    let mut core = inner.lock_core();
    for (k, _) in &keys {
        core.queue.forget(k);
    }
    *job.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    drop(core);
    inner.notify();
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
    mode: Mode,
    deadline: Option<(Instant, FailureReason)>,
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
                inner.on_batch_committed(&batch);
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
                // Not retried: the generation is gone. The offsets are kept to
                // the next assign, which commits them if the partition comes
                // back (and they are ahead) or records them as dropped.
                warn!(attempt, error_code = ?code, error = %err, "commit rejected: stale generation; offsets kept until the rebalance ends");
                Metrics::inc(&inner.metrics.commits_failed);
                return BatchEnd::Deferred(err);
            }
            ErrorClass::DeferUntilRebalanced if mode == Mode::Revoke => {
                // The rebalance cannot end while the revoke callback waits:
                // never retry inside it.
                Metrics::inc(&inner.metrics.commits_deferred);
                debug!(
                    attempt,
                    "revoke commit refused with REBALANCE_IN_PROGRESS; offsets kept until the rebalance ends"
                );
                return BatchEnd::Deferred(err);
            }
            ErrorClass::Fatal => {
                return give_up(inner, &batch, FailureReason::Fatal, &err, attempt, started);
            }
            ErrorClass::UnknownPartition if unknown_partition_attempts >= 2 => {
                return give_up(inner, &batch, FailureReason::Fatal, &err, attempt, started);
            }
            ErrorClass::UnknownPartition => unknown_partition_attempts += 1,
            ErrorClass::Retry => {}
            ErrorClass::DeferUntilRebalanced => {
                // Keep the offsets and wait for the rebalance to end (every
                // rebalance ends with an assign callback, empty under
                // cooperative when nothing is added); not an attempt against
                // the budget, bounded by the policy's time and the deadline.
                Metrics::inc(&inner.metrics.commits_deferred);
                retry.forgive();
                let (bound, reason) = match deadline {
                    Some((d, why)) if d < retry.time_bound() => (d, why),
                    _ => (retry.time_bound(), FailureReason::RetriesExhausted),
                };
                if Instant::now() >= bound {
                    return give_up(inner, &batch, reason, &err, attempt, started);
                }
                debug!(
                    attempt,
                    "commit refused while the group rebalances; waiting for the rebalance to end"
                );
                // Without a rebalance callback (e.g. the poll thread stopped
                // at shutdown) try again every second.
                let until = bound.min(Instant::now() + Duration::from_secs(1));
                let core = inner.lock_core();
                let Some(mut core) = wait_yielding(inner, core, until, mode, &batch, |c| {
                    c.rebalance_gen != seen_rebalance || c.abandoned
                }) else {
                    return BatchEnd::Interrupted;
                };
                seen_rebalance = core.rebalance_gen;
                // Only partitions still owned in the same assignment are
                // committed again; a revoke committed the others' latest offsets.
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
                continue;
            }
        }
        // Retry after a backoff, within the policy and the deadline.
        let delay = retry.next_delay();
        let now = Instant::now();
        let (delay, reason) = match (delay, deadline) {
            (_, Some((d, why))) if now >= d => (None, why),
            (Some(delay), Some((d, why))) if now + delay > d => (Some(d - now), why),
            (delay, _) => (delay, FailureReason::RetriesExhausted),
        };
        let Some(delay) = delay else {
            return give_up(inner, &batch, reason, &err, attempt, started);
        };
        Metrics::inc(&inner.metrics.commits_retried);
        warn!(attempt, error_code = ?code, error = %err, delay_ms = delay.as_millis() as u64, "commit failed; retrying");
        // Back off; a revoke (for a normal commit) or shutdown's abandon cuts
        // the wait short.
        let until = Instant::now() + delay;
        let core = inner.lock_core();
        if wait_yielding(inner, core, until, mode, &batch, |c| c.abandoned).is_none() {
            return BatchEnd::Interrupted;
        }
    }
}

/// Waits on the shared state until `until` or until `done` holds. A batch that
/// is not a revoke's yields to a revoke that arrives: it goes back to the
/// queue and `None` is returned.
fn wait_yielding<'a>(
    inner: &'a Inner,
    mut core: std::sync::MutexGuard<'a, crate::consumer::Core>,
    until: Instant,
    mode: Mode,
    batch: &[Entry],
    done: impl Fn(&crate::consumer::Core) -> bool,
) -> Option<std::sync::MutexGuard<'a, crate::consumer::Core>> {
    loop {
        if done(&core) {
            return Some(core);
        }
        if mode != Mode::Revoke && core.revoke.is_some() {
            core.queue.failed(batch, true);
            return None;
        }
        let now = Instant::now();
        if now >= until {
            return Some(core);
        }
        core = inner.wait_core_timeout(core, until - now);
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
    if reason == FailureReason::Fatal {
        inner.lock_core().queue.failed_fatally(batch);
    } else {
        inner.lock_core().queue.failed(batch, false);
    }
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
