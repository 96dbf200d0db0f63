//! [`GuardedConsumer`]: records in, acks in, commits handled.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, DefaultConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, OwnedMessage};
use rdkafka::{Message, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::assignment::{AckStatus, AckToken, Assignment, PartitionSlot, TopicPartition};
use crate::commit::queue::CommitQueue;
use crate::commit::worker::{self, Carried, CommittedOffset, Committer, Finish, RevokeJob, Waiter};
use crate::error::Error;
use crate::rebalance::GuardContext;
use crate::retry::RetryPolicy;
use crate::sink::{FailedOffset, FailureReason, FailureSink};
use crate::stats::{Metrics, Stats};

/// Validated settings (see the builder for defaults).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub group_id: String,
    pub retry: RetryPolicy,
    pub commit_interval: Option<Duration>,
    pub commit_every: Option<u64>,
    pub recommit_idle_every: Option<Duration>,
    pub async_commits: bool,
    pub shutdown_timeout: Duration,
    pub poll_timeout: Duration,
    pub batch_size: usize,
    pub channel_capacity: usize,
    pub revoke_timeout: Duration,
    pub revoke_grace: Duration,
}

impl Config {
    /// The builder's defaults (the one place they are written down).
    pub(crate) fn with_group(group_id: &str) -> Config {
        Config {
            group_id: group_id.to_string(),
            retry: RetryPolicy::exponential(),
            commit_interval: Some(Duration::from_secs(5)),
            commit_every: None,
            recommit_idle_every: None,
            async_commits: false,
            shutdown_timeout: Duration::from_secs(10),
            poll_timeout: Duration::from_millis(100),
            batch_size: 256,
            channel_capacity: 8,
            revoke_timeout: Duration::from_secs(10),
            revoke_grace: Duration::from_secs(1),
        }
    }
}

/// State shared by the worker, the rebalance callbacks and the handle, behind one mutex.
pub(crate) struct Core {
    pub queue: CommitQueue,
    /// A commit was asked for (count, async ack, revoke).
    pub trigger: bool,
    /// Callers of `commit_now` waiting for the next cycle.
    pub waiters: Vec<Waiter>,
    /// The final commit was requested.
    pub finish: Option<Finish>,
    /// The worker must exit.
    pub stop: bool,
    /// Shutdown's deadline passed while a commit was in flight; its offsets
    /// were recorded as failed by shutdown.
    pub abandoned: bool,
    /// Bumped at every completed rebalance (assign).
    pub rebalance_gen: u64,
    /// Shutdown started: rebalance callbacks no longer commit.
    pub shutting_down: bool,
    /// Failures recorded since shutdown started, for the report.
    pub final_failures: Vec<FailedOffset>,
    /// A revoke waiting for the worker (the rebalance callback blocks on it).
    pub revoke: Option<Arc<RevokeJob>>,
    /// Offsets kept across a rebalance (commit refused with
    /// REBALANCE_IN_PROGRESS inside a revoke, or a stale generation): resolved
    /// at the next assign.
    pub carry: HashMap<TopicPartition, Carried>,
    /// Unresolved offsets of the failed-offset log to try again when their
    /// partition is assigned (`replay_failed_offsets`).
    pub replay: HashMap<TopicPartition, i64>,
    /// Replayed offsets whose commit is queued: resolved in the log once it lands.
    pub replay_pending: HashMap<TopicPartition, i64>,
}

/// Shared guard state.
pub(crate) struct Inner {
    pub config: Config,
    pub assignment: Assignment,
    pub metrics: Metrics,
    core: Mutex<Core>,
    wake: Condvar,
    sink: Option<Box<dyn FailureSink>>,
    trigger_pending: AtomicBool,
    acks_at_last_cycle: AtomicU64,
    member_id: Mutex<Option<String>>,
    /// Shutting down: the poll thread keeps polling (rebalance callbacks must
    /// still be served while the final commit runs) but hands out no records.
    pub draining: AtomicBool,
    /// The poll thread must exit.
    pub poll_stop: AtomicBool,
    /// The durable failed-offset log, when configured (for resolutions).
    pub log: std::sync::OnceLock<crate::failure_log::FailedOffsetLog>,
}

impl Inner {
    pub(crate) fn new(config: Config, sink: Option<Box<dyn FailureSink>>) -> Self {
        Inner {
            config,
            assignment: Assignment::default(),
            metrics: Metrics::default(),
            core: Mutex::new(Core {
                queue: CommitQueue::default(),
                trigger: false,
                waiters: Vec::new(),
                finish: None,
                stop: false,
                abandoned: false,
                rebalance_gen: 0,
                shutting_down: false,
                final_failures: Vec::new(),
                revoke: None,
                carry: HashMap::new(),
                replay: HashMap::new(),
                replay_pending: HashMap::new(),
            }),
            wake: Condvar::new(),
            sink,
            trigger_pending: AtomicBool::new(false),
            acks_at_last_cycle: AtomicU64::new(0),
            member_id: Mutex::new(None),
            draining: AtomicBool::new(false),
            poll_stop: AtomicBool::new(false),
            log: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn lock_core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn wait_core<'a>(&self, g: MutexGuard<'a, Core>) -> MutexGuard<'a, Core> {
        self.wake.wait(g).unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn wait_core_timeout<'a>(
        &self,
        g: MutexGuard<'a, Core>,
        d: Duration,
    ) -> MutexGuard<'a, Core> {
        self.wake
            .wait_timeout(g, d)
            .unwrap_or_else(|e| e.into_inner())
            .0
    }

    pub(crate) fn notify(&self) {
        self.wake.notify_all();
    }

    /// Asks the worker for a commit cycle.
    pub(crate) fn trigger(&self) {
        self.lock_core().trigger = true;
        self.notify();
    }

    /// Hot path: called once per recorded ack.
    #[inline]
    pub(crate) fn on_acked(&self) {
        let n = self.metrics.acked.fetch_add(1, Ordering::Relaxed) + 1;
        let due = self.config.async_commits
            || self.config.commit_every.is_some_and(|every| {
                n.saturating_sub(self.acks_at_last_cycle.load(Ordering::Relaxed)) >= every
            });
        if due
            && !self.trigger_pending.load(Ordering::Relaxed)
            && !self.trigger_pending.swap(true, Ordering::AcqRel)
        {
            self.trigger();
        }
    }

    /// Called by the worker at the start of each cycle, before its snapshot.
    pub(crate) fn reset_count_trigger(&self) {
        self.acks_at_last_cycle.store(
            self.metrics.acked.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        self.trigger_pending.store(false, Ordering::Release);
    }

    pub(crate) fn member_id(&self) -> Option<String> {
        self.member_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_member_id(&self, id: Option<String>) {
        *self.member_id.lock().unwrap_or_else(|e| e.into_inner()) = id;
    }

    /// Appends a resolution to the failed-offset log, if there is one.
    pub(crate) fn resolve_logged(&self, r: crate::failure_log::Resolution) {
        if let Some(log) = self.log.get() {
            log.resolve(r);
        }
    }

    /// A batch landed: resolves in the log the replayed offsets it covers.
    pub(crate) fn on_batch_committed(&self, batch: &[crate::commit::queue::Entry]) {
        let resolved: Vec<_> = {
            let mut core = self.lock_core();
            if core.replay_pending.is_empty() {
                return;
            }
            batch
                .iter()
                .filter_map(|e| {
                    let k = *core.replay_pending.get(&e.tp)?;
                    (e.offset >= k).then(|| {
                        core.replay_pending.remove(&e.tp);
                        (e.tp.clone(), k, e.offset)
                    })
                })
                .collect()
        };
        for ((topic, partition), k, committed) in resolved {
            info!(%topic, partition, offset = k, committed, "failed offset from the log committed again");
            let r = if committed == k {
                crate::failure_log::Resolution::recommitted(
                    self.config.group_id.clone(),
                    topic.to_string(),
                    partition,
                    k,
                )
            } else {
                crate::failure_log::Resolution::superseded(
                    self.config.group_id.clone(),
                    topic.to_string(),
                    partition,
                    k,
                    committed,
                )
            };
            self.resolve_logged(r);
        }
    }

    /// Hands a failed offset to the sink (if any) and counts it.
    pub(crate) fn record_failure(&self, f: FailedOffset) {
        Metrics::inc(&self.metrics.offsets_failed);
        {
            let mut core = self.lock_core();
            if core.shutting_down {
                core.final_failures.push(f.clone());
            }
        }
        if let Some(sink) = &self.sink {
            sink.record(f);
        }
    }

    pub(crate) fn failure(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        reason: FailureReason,
        message: String,
    ) -> FailedOffset {
        FailedOffset {
            time: SystemTime::now(),
            group_id: self.config.group_id.clone(),
            member_id: self.member_id(),
            topic: topic.to_string(),
            partition,
            offset,
            reason,
            error_code: None,
            error_message: message,
            attempts: 0,
            elapsed: Duration::ZERO,
        }
    }
}

impl<C: ConsumerContext + 'static> Committer for BaseConsumer<GuardContext<C>> {
    fn commit(&self, offsets: &TopicPartitionList) -> KafkaResult<()> {
        Consumer::commit(self, offsets, rdkafka::consumer::CommitMode::Sync)
    }
}

/// A record handed out by [`GuardedConsumer::recv`], with the token that acks it.
pub struct Record {
    message: OwnedMessage,
    token: AckToken,
}

impl Record {
    /// The Kafka message (implements [`rdkafka::Message`]).
    pub fn message(&self) -> &OwnedMessage {
        &self.message
    }
    /// A token to ack this record from any task, once it is processed.
    pub fn ack_token(&self) -> AckToken {
        self.token.clone()
    }
    /// Acks the record now.
    pub fn ack(self) -> AckStatus {
        self.token.ack()
    }
    /// Splits the record into its message and its token.
    pub fn into_parts(self) -> (OwnedMessage, AckToken) {
        (self.message, self.token)
    }
    /// Topic.
    pub fn topic(&self) -> &str {
        self.message.topic()
    }
    /// Partition.
    pub fn partition(&self) -> i32 {
        self.message.partition()
    }
    /// Offset.
    pub fn offset(&self) -> i64 {
        self.message.offset()
    }
    /// Payload bytes, if any.
    pub fn payload(&self) -> Option<&[u8]> {
        self.message.payload()
    }
    /// Key bytes, if any.
    pub fn key(&self) -> Option<&[u8]> {
        self.message.key()
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .field("epoch", &self.token.epoch())
            .finish()
    }
}

enum Delivery {
    Batch(Vec<Record>),
    Error(Error),
}

/// Per-partition view, from [`GuardedConsumer::partitions`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionStatus {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Assignment epoch.
    pub epoch: u64,
    /// Offset last committed by this consumer.
    pub committed: Option<i64>,
    /// Where a commit would go now (all records before it are acked).
    pub commit_point: Option<i64>,
    /// The oldest delivered record not acked yet.
    pub first_unacked: Option<i64>,
    /// Delivered records not yet released by acks.
    pub outstanding: usize,
}

/// What [`GuardedConsumer::shutdown`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Every offset this consumer committed, per partition (the latest).
    pub committed: Vec<CommittedOffset>,
    /// Offsets that could not be committed during shutdown (also in the failure sink).
    pub not_committed: Vec<FailedOffset>,
    /// The deadline passed before the final commit finished.
    pub deadline_exceeded: bool,
    /// Time shutdown took.
    pub elapsed: Duration,
    /// Counters at the end.
    pub stats: Stats,
}

/// A Kafka consumer whose offsets are committed for you: only what was acked,
/// never backwards, one commit at a time, retried, and recorded when given up.
///
/// Built with [`OffsetGuard::builder`](crate::OffsetGuard::builder).
pub struct GuardedConsumer<C: ConsumerContext + 'static = DefaultConsumerContext> {
    consumer: Option<Arc<BaseConsumer<GuardContext<C>>>>,
    inner: Arc<Inner>,
    rx: mpsc::Receiver<Delivery>,
    current: VecDeque<Record>,
    poll_done: Option<oneshot::Receiver<()>>,
    shut_down: bool,
    pub(crate) log: Option<crate::failure_log::FailedOffsetLog>,
}

impl<C: ConsumerContext + 'static> GuardedConsumer<C> {
    pub(crate) fn start(
        consumer: BaseConsumer<GuardContext<C>>,
        inner: Arc<Inner>,
    ) -> Result<Self, crate::BuildError> {
        let consumer = Arc::new(consumer);
        worker::spawn(inner.clone(), consumer.clone()).map_err(|e| {
            crate::BuildError::Kafka(KafkaError::ClientCreation(format!(
                "spawning the commit thread: {e}"
            )))
        })?;
        let (tx, rx) = mpsc::channel(inner.config.channel_capacity);
        let (done_tx, done_rx) = oneshot::channel();
        {
            let consumer = consumer.clone();
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("offset-guard-poll".into())
                .spawn(move || poll_loop(consumer, inner, tx, done_tx))
                .map_err(|e| {
                    crate::BuildError::Kafka(KafkaError::ClientCreation(format!(
                        "spawning the poll thread: {e}"
                    )))
                })?;
        }
        Ok(GuardedConsumer {
            consumer: Some(consumer),
            inner,
            rx,
            current: VecDeque::new(),
            poll_done: Some(done_rx),
            shut_down: false,
            log: None,
        })
    }

    /// The wrapped rdkafka consumer, for anything the guard does not cover
    /// (metadata, watermarks, pause/resume, `committed()`). Do not commit
    /// through it: commits bypassing the guard are not ordered with its own.
    pub fn consumer(&self) -> &BaseConsumer<GuardContext<C>> {
        self.consumer
            .as_ref()
            .expect("consumer present until shutdown")
    }

    /// Subscribes to topics (partitions are assigned by the group).
    pub fn subscribe(&self, topics: &[&str]) -> Result<(), Error> {
        self.consumer().subscribe(topics).map_err(Error::Kafka)
    }

    /// Drops the subscription. At the resulting revoke the guard commits the
    /// acked offsets of every partition before giving them up (see
    /// [`crate::rebalance`]); records still buffered are not handed out.
    pub fn unsubscribe(&self) {
        self.consumer().unsubscribe()
    }

    /// The next record, or `None` once the consumer stopped. Waits without
    /// blocking the executor. Records of partitions whose revoke has started
    /// since they were fetched are skipped (counted in [`Stats::skipped_revoked`]).
    pub async fn recv(&mut self) -> Result<Option<Record>, Error> {
        loop {
            while let Some(r) = self.current.pop_front() {
                if !r.token.slot.hand_out(r.token.offset) {
                    Metrics::inc(&self.inner.metrics.skipped_revoked);
                    continue;
                }
                return Ok(Some(r));
            }
            match self.rx.recv().await {
                Some(Delivery::Batch(b)) => self.current = b.into(),
                Some(Delivery::Error(e)) => return Err(e),
                None => return Ok(None),
            }
        }
    }

    /// Acks by coordinates instead of by token. A partition this consumer does
    /// not own is an [`Error::NotOwned`], never a commit.
    pub fn ack_offset(&self, topic: &str, partition: i32, offset: i64) -> Result<AckStatus, Error> {
        match self.inner.assignment.get(topic, partition) {
            Some(slot) => Ok(AckToken { slot, offset }.ack()),
            None => {
                Metrics::inc(&self.inner.metrics.acks_stale);
                Err(Error::NotOwned {
                    topic: topic.to_string(),
                    partition,
                })
            }
        }
    }

    /// Commits everything acked so far and resolves when that commit landed
    /// (with what it committed; empty if nothing had moved) or was given up.
    /// Goes through the same serialized path as every other commit.
    pub async fn commit_now(&self) -> Result<Vec<CommittedOffset>, Error> {
        let (tx, rx) = oneshot::channel();
        {
            let mut core = self.inner.lock_core();
            if core.stop || core.finish.is_some() {
                return Err(Error::ShutDown);
            }
            core.waiters.push(tx);
        }
        self.inner.notify();
        rx.await.unwrap_or(Err(Error::ShutDown))
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.inner.metrics.snapshot()
    }

    /// Per-partition state of the current assignment.
    pub fn partitions(&self) -> Vec<PartitionStatus> {
        let core = self.inner.lock_core();
        let mut v: Vec<_> = self
            .inner
            .assignment
            .all()
            .into_iter()
            .map(|s| {
                let (cp, first, outstanding) = s.view();
                PartitionStatus {
                    topic: s.topic.to_string(),
                    partition: s.partition,
                    epoch: s.epoch,
                    committed: core.queue.committed_offset(&s.key()),
                    commit_point: cp,
                    first_unacked: first,
                    outstanding,
                }
            })
            .collect();
        v.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        v
    }

    /// Stops handing out records, commits everything acked (synchronously, with
    /// retries, within the shutdown timeout), records what could not be
    /// committed in the failure sink, and closes the consumer. Nothing that was
    /// not acked is committed (the consumer's `position()` never is).
    pub async fn shutdown(mut self) -> Result<ShutdownReport, Error> {
        let started = Instant::now();
        let deadline = started + self.inner.config.shutdown_timeout;
        let tdeadline = tokio::time::Instant::from_std(deadline);
        self.shut_down = true;
        info!(group = %self.inner.config.group_id, "offset guard shutting down");
        // Hand out nothing more, but keep polling: a rebalance that is under
        // way must be able to finish (its revoke commits, its assign settles
        // kept offsets) while the final commit runs.
        self.inner.draining.store(true, Ordering::Release);
        self.rx.close();
        let (tx, rx) = oneshot::channel();
        {
            let mut core = self.inner.lock_core();
            core.shutting_down = true;
            core.finish = Some(Finish {
                deadline,
                done: Some(tx),
            });
        }
        self.inner.notify();
        let deadline_exceeded = tokio::time::timeout_at(tdeadline, rx).await.is_err();
        if deadline_exceeded {
            abandon_pending(&self.inner);
        }
        self.inner.poll_stop.store(true, Ordering::Release);
        if let Some(done) = self.poll_done.take() {
            let _ = tokio::time::timeout_at(tdeadline, done).await;
        }
        let (committed, not_committed) = {
            let mut core = self.inner.lock_core();
            let committed = core
                .queue
                .all_committed()
                .into_iter()
                .map(|((t, p), o)| CommittedOffset {
                    topic: t.to_string(),
                    partition: p,
                    offset: o,
                })
                .collect();
            (committed, std::mem::take(&mut core.final_failures))
        };
        // Close the consumer off the executor; it closes for real once the
        // worker and poll threads let go of it.
        if let Some(consumer) = self.consumer.take() {
            let (ctx, crx) = oneshot::channel();
            let _ = std::thread::Builder::new()
                .name("offset-guard-close".into())
                .spawn(move || {
                    drop(consumer);
                    let _ = ctx.send(());
                });
            let _ = tokio::time::timeout_at(tdeadline, crx).await;
        }
        if let Some(log) = &self.log {
            // Make the failures of this run durable, within what is left of the deadline.
            let left = deadline.saturating_duration_since(Instant::now());
            let log = log.clone();
            let flushed = tokio::task::spawn_blocking(move || log.flush_timeout(left)).await;
            if let Ok(Err(e)) = flushed {
                warn!(error = %e, "failed-offset log not flushed at shutdown");
            }
        }
        let report = ShutdownReport {
            committed,
            not_committed,
            deadline_exceeded,
            elapsed: started.elapsed(),
            stats: self.inner.metrics.snapshot(),
        };
        info!(
            committed = report.committed.len(),
            not_committed = report.not_committed.len(),
            deadline_exceeded,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "offset guard shut down"
        );
        Ok(report)
    }
}

/// Shutdown's deadline passed with a commit still unfinished: record every
/// offset that is not known to be committed.
fn abandon_pending(inner: &Inner) {
    let pending = {
        let mut core = inner.lock_core();
        core.abandoned = true;
        core.stop = true;
        let mut pending = core.queue.unsettled();
        for s in inner.assignment.all() {
            if let Some(cp) = s.commit_point() {
                let key = s.key();
                let known = core
                    .queue
                    .committed_offset(&key)
                    .max(pending.iter().find(|e| e.tp == key).map(|e| e.offset));
                if Some(cp) > known {
                    pending.retain(|e| e.tp != key);
                    pending.push(crate::commit::queue::Entry {
                        tp: key,
                        epoch: s.epoch,
                        offset: cp,
                    });
                }
            }
        }
        pending
    };
    inner.notify();
    for e in pending {
        warn!(topic = %e.tp.0, partition = e.tp.1, offset = e.offset, "shutdown deadline passed before the offset was committed");
        inner.record_failure(inner.failure(
            &e.tp.0,
            e.tp.1,
            e.offset,
            FailureReason::ShutdownDeadline,
            "shutdown deadline passed before the commit landed".into(),
        ));
    }
}

impl<C: ConsumerContext + 'static> Drop for GuardedConsumer<C> {
    fn drop(&mut self) {
        if self.shut_down {
            self.inner.poll_stop.store(true, Ordering::Release);
            return;
        }
        // The poll thread keeps serving rebalance callbacks until the worker's
        // final commit is done (the worker stops it then).
        self.inner.draining.store(true, Ordering::Release);
        // Dropped without shutdown: commit what was acked in the background,
        // bounded by the shutdown timeout; never block the dropping thread.
        let mut core = self.inner.lock_core();
        if core.finish.is_none() && !core.stop {
            core.shutting_down = true;
            core.finish = Some(Finish {
                deadline: Instant::now() + self.inner.config.shutdown_timeout,
                done: None,
            });
        }
        drop(core);
        self.inner.notify();
        debug!("guarded consumer dropped without shutdown; final commit runs in the background");
    }
}

fn poll_loop<C: ConsumerContext + 'static>(
    consumer: Arc<BaseConsumer<GuardContext<C>>>,
    inner: Arc<Inner>,
    tx: mpsc::Sender<Delivery>,
    done: oneshot::Sender<()>,
) {
    let batch_size = inner.config.batch_size;
    let mut batch: Vec<Record> = Vec::with_capacity(batch_size);
    let mut last: Option<Arc<PartitionSlot>> = None;
    while !inner.poll_stop.load(Ordering::Acquire) {
        if inner.draining.load(Ordering::Acquire) {
            // Serve callbacks only; fetched records are not handed out (nor
            // registered, so they never count for a commit).
            batch.clear();
            last = None;
            let _ = consumer.poll(inner.config.poll_timeout);
            continue;
        }
        let timeout = if batch.is_empty() {
            inner.config.poll_timeout
        } else {
            Duration::ZERO
        };
        match consumer.poll(timeout) {
            None => {
                if !batch.is_empty() && !hand_over(&inner, &tx, &mut batch, batch_size) {
                    inner.draining.store(true, Ordering::Release);
                }
            }
            Some(Ok(m)) => {
                batch.push(to_record(&inner, &mut last, &m));
                if batch.len() >= batch_size && !hand_over(&inner, &tx, &mut batch, batch_size) {
                    inner.draining.store(true, Ordering::Release);
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => {
                if let Some((code, reason)) = consumer.client().fatal_error() {
                    warn!(error_code = ?code, %reason, "fatal consumer error; polling stops");
                    let _ = tx.blocking_send(Delivery::Error(Error::Fatal(e)));
                    break;
                }
                warn!(error = %e, "consumer error");
            }
        }
    }
    drop(last);
    let _ = done.send(());
}

/// Registers a batch's offsets with their slots (one lock per run of records
/// of the same slot, one counter update per batch: the poll thread does not
/// contend with acks record by record), drops records refused (revoked slot,
/// offset not increasing), and sends the rest. False if the receiver is gone.
fn hand_over(
    inner: &Inner,
    tx: &mpsc::Sender<Delivery>,
    batch: &mut Vec<Record>,
    batch_size: usize,
) -> bool {
    let mut refused: Vec<usize> = Vec::new();
    let mut start = 0;
    while start < batch.len() {
        let slot = batch[start].token.slot.clone();
        let run = batch[start..]
            .iter()
            .take_while(|r| Arc::ptr_eq(&r.token.slot, &slot))
            .count();
        slot.deliver_run(
            batch[start..start + run].iter().map(|r| r.token.offset),
            |i| refused.push(start + i),
        );
        start += run;
    }
    if !refused.is_empty() {
        let mut i = 0;
        batch.retain(|_| {
            i += 1;
            refused.binary_search(&(i - 1)).is_err()
        });
        inner
            .metrics
            .skipped_revoked
            .fetch_add(refused.len() as u64, Ordering::Relaxed);
    }
    inner
        .metrics
        .delivered
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    if batch.is_empty() {
        return true;
    }
    let full = std::mem::replace(batch, Vec::with_capacity(batch_size));
    tx.blocking_send(Delivery::Batch(full)).is_ok()
}

/// A record for a polled message; [`hand_over`] registers its offset with
/// its slot before the application can see it.
#[inline]
fn to_record(
    inner: &Arc<Inner>,
    last: &mut Option<Arc<PartitionSlot>>,
    m: &BorrowedMessage<'_>,
) -> Record {
    let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
    let slot = match last {
        Some(s) if s.partition == partition && &*s.topic == topic && !s.is_revoked() => s.clone(),
        _ => {
            let s = inner.assignment.get_or_assign(inner, topic, partition);
            *last = Some(s.clone());
            s
        }
    };
    Record {
        message: m.detach(),
        token: AckToken { slot, offset },
    }
}
