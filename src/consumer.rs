//! [`GuardedConsumer`], the owned front-end: records in, acks in, commits handled.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, DefaultConsumerContext,
};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::assignment::{AckStatus, Assignment, PartitionSlot};
use crate::commit::handle::{self, CommitHandle, Committer, WorkerParts};
use crate::config::Config;
use crate::deadline::Deadline;
use crate::delivery::{Delivery, Record};
use crate::error::{BuildError, Error};
use crate::failure_log::FailedOffsetLog;
use crate::failures::FailureRecorder;
use crate::partition::{CommittedOffset, TopicPartition};
use crate::poll::Poller;
use crate::rebalance::{ContextParts, GuardContext, Hooks};
use crate::sink::{FailedOffset, FailureReason, FailureSink};
use crate::stats::{Metrics, Stats};
use crate::threads::{GuardThread, Lifecycle};

impl<C: ConsumerContext + 'static> Committer for BaseConsumer<GuardContext<C>> {
    fn commit(&self, offsets: &TopicPartitionList) -> KafkaResult<()> {
        Consumer::commit(self, offsets, CommitMode::Sync)
    }

    fn committed(
        &self,
        tps: &[TopicPartition],
        timeout: Duration,
    ) -> KafkaResult<Vec<Option<i64>>> {
        let mut query = TopicPartitionList::with_capacity(tps.len());
        for tp in tps {
            let _ = query.add_partition(&tp.topic, tp.partition);
        }
        // The list is dropped before returning (a live list blocks the
        // consumer's close).
        let list = self.committed_offsets(query, timeout)?;
        Ok(tps
            .iter()
            .map(|tp| {
                match list
                    .find_partition(&tp.topic, tp.partition)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                }
            })
            .collect())
    }
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

/// Everything `build()` hands over to start a guard.
pub(crate) struct Setup<C> {
    pub client_config: ClientConfig,
    pub config: Config,
    pub context: C,
    pub hooks: Hooks,
    pub sink: Option<Box<dyn FailureSink>>,
    pub log: Option<FailedOffsetLog>,
    pub replay: HashMap<TopicPartition, i64>,
}

/// A Kafka consumer whose offsets are committed for you: only what was acked,
/// never backwards, one commit at a time, retried, and recorded when given up.
///
/// Built with [`OffsetGuard::builder`](crate::OffsetGuard::builder).
pub struct GuardedConsumer<C: ConsumerContext + 'static = DefaultConsumerContext> {
    consumer: Option<Arc<BaseConsumer<GuardContext<C>>>>,
    config: Arc<Config>,
    assignment: Arc<Assignment>,
    metrics: Arc<Metrics>,
    recorder: Arc<FailureRecorder>,
    commits: CommitHandle,
    life: Arc<Lifecycle>,
    rx: mpsc::Receiver<Delivery>,
    current: VecDeque<Record>,
    poll_done: Option<oneshot::Receiver<()>>,
    threads: Vec<JoinHandle<()>>,
    shut_down: bool,
}

impl<C: ConsumerContext + 'static> GuardedConsumer<C> {
    /// Wires the parts and starts the commit and poll threads.
    pub(crate) fn start(setup: Setup<C>) -> Result<Self, BuildError> {
        let config = Arc::new(setup.config);
        let life = Arc::new(Lifecycle::default());
        let metrics = Arc::new(Metrics::default());
        let (commits, mailbox, assignment) = handle::wire(&config, &metrics, life.clone());
        let recorder = Arc::new(FailureRecorder::new(
            config.group_id.clone(),
            setup.sink,
            setup.log,
            metrics.clone(),
        ));
        let parts = ContextParts {
            config: config.clone(),
            assignment: assignment.clone(),
            commits: commits.clone(),
            recorder: recorder.clone(),
            metrics: metrics.clone(),
        };
        let context = GuardContext::new(setup.context, parts, setup.hooks);
        let consumer: BaseConsumer<GuardContext<C>> = setup
            .client_config
            .create_with_context(context)
            .map_err(BuildError::Kafka)?;
        let consumer = Arc::new(consumer);
        let worker = WorkerParts {
            config: config.clone(),
            assignment: assignment.clone(),
            recorder: recorder.clone(),
            metrics: metrics.clone(),
            replay: setup.replay,
        };
        let spawn_error = |thread| move |source| BuildError::SpawnThread { thread, source };
        let commit_thread = handle::start(worker, consumer.clone(), mailbox, life.clone())
            .map_err(spawn_error(GuardThread::Commit))?;
        let (tx, rx) = mpsc::channel(config.prefetch_batches);
        let (done, poll_done) = oneshot::channel();
        let poller = Poller {
            consumer: consumer.clone(),
            assignment: assignment.clone(),
            metrics: metrics.clone(),
            life: life.clone(),
            tx,
            done,
            poll_timeout: config.poll_timeout,
            batch_size: config.batch_size,
            #[cfg(test)]
            panics: config.panic_in == Some(GuardThread::Poll),
        };
        let poll_thread = match poller.start() {
            Ok(t) => t,
            Err(e) => {
                commits.finish_detached(Deadline::at(Instant::now()));
                return Err(spawn_error(GuardThread::Poll)(e));
            }
        };
        Ok(GuardedConsumer {
            consumer: Some(consumer),
            config,
            assignment,
            metrics,
            recorder,
            commits,
            life,
            rx,
            current: VecDeque::new(),
            poll_done: Some(poll_done),
            threads: vec![commit_thread, poll_thread],
            shut_down: false,
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
    /// [the crate docs](crate#rebalances)); records still buffered are not handed out.
    pub fn unsubscribe(&self) {
        self.consumer().unsubscribe()
    }

    /// The next record, or `None` once the consumer stopped. Waits without
    /// blocking the executor. Records of partitions whose revoke has started
    /// since they were fetched are skipped (counted in [`Stats::skipped_revoked`]).
    ///
    /// # Errors
    ///
    /// [`Error::Fatal`] for a fatal consumer error; [`Error::ThreadDied`] if one
    /// of the guard's threads panicked (the guard stopped).
    pub async fn recv(&mut self) -> Result<Option<Record>, Error> {
        loop {
            if let Some(thread) = self.life.died() {
                return Err(Error::ThreadDied { thread });
            }
            while let Some(r) = self.current.pop_front() {
                if !r.token.slot.hand_out(r.token.offset) {
                    Metrics::inc(&self.metrics.skipped_revoked);
                    continue;
                }
                return Ok(Some(r));
            }
            match self.rx.recv().await {
                Some(Delivery::Batch(b)) => self.current = b.into(),
                Some(Delivery::Error(e)) => return Err(e),
                None => {
                    return match self.life.died() {
                        Some(thread) => Err(Error::ThreadDied { thread }),
                        None => Ok(None),
                    };
                }
            }
        }
    }

    /// Acks by coordinates instead of by token. A partition this consumer does
    /// not own is an [`Error::NotOwned`], never a commit.
    pub fn ack_offset(&self, topic: &str, partition: i32, offset: i64) -> Result<AckStatus, Error> {
        match self.assignment.token(topic, partition, offset) {
            Some(token) => Ok(token.ack()),
            None => {
                Metrics::inc(&self.metrics.acks_stale);
                Err(Error::NotOwned {
                    topic: topic.to_string(),
                    partition,
                })
            }
        }
    }

    /// Commits everything acked so far and resolves when that commit landed
    /// (with what it committed; empty if nothing had moved) or was given up.
    /// Goes through the same serialized path as every other commit. An offset
    /// given up earlier (retries exhausted) is sent again; one the broker
    /// refused for good (fatal class) is not (it is in the failure sink).
    /// A call made while another commit is retrying is answered by the commit
    /// after it.
    ///
    /// # Errors
    ///
    /// [`Error::CommitFailed`] when the commit was given up (the offsets are in
    /// the failure sink), [`Error::ThreadDied`] if the commit thread panicked.
    pub async fn commit_now(&self) -> Result<Vec<CommittedOffset>, Error> {
        self.commits.commit_now().await
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.metrics.snapshot()
    }

    /// Per-partition state of the current assignment, sorted.
    pub fn partitions(&self) -> Vec<PartitionStatus> {
        let view = self.commits.view();
        let mut v: Vec<_> = self
            .assignment
            .all()
            .into_iter()
            .map(|s| {
                let sv = s.view();
                PartitionStatus {
                    topic: s.tp.topic.to_string(),
                    partition: s.tp.partition,
                    epoch: s.epoch,
                    committed: view.committed(&s.tp),
                    commit_point: sv.commit_point,
                    first_unacked: sv.first_unacked,
                    outstanding: sv.outstanding,
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
    ///
    /// # Errors
    ///
    /// [`Error::ThreadDied`] if one of the guard's threads had panicked; the
    /// consumer is closed all the same.
    pub async fn shutdown(mut self) -> Result<ShutdownReport, Error> {
        let started = Instant::now();
        let deadline = Deadline::after_from(started, self.config.shutdown_timeout);
        self.shut_down = true;
        info!(group = %self.config.group_id, "offset guard shutting down");
        // Hand out nothing more, but keep polling: a rebalance that is under
        // way must be able to finish (its revoke commits, its assign settles
        // kept offsets) while the final commit runs.
        self.life.drain();
        self.rx.close();
        self.recorder.start_capture();
        let owned = self.assignment.all();
        let finished = match self.commits.finish(deadline) {
            Some(pending) => tokio::task::spawn_blocking(move || pending.wait(deadline))
                .await
                .ok()
                .flatten()
                .is_some(),
            None => false,
        };
        let died = self.life.died();
        let deadline_exceeded = !finished && died.is_none();
        if deadline_exceeded {
            self.record_not_committed(&owned);
        }
        self.life.stop();
        if let Some(done) = self.poll_done.take() {
            let _ = within(deadline, done).await;
        }
        let committed = self.commits.view().all_committed();
        let not_committed = self.recorder.captured();
        self.close(deadline).await;
        if let Some(thread) = died.or_else(|| self.life.died()) {
            return Err(Error::ThreadDied { thread });
        }
        let report = ShutdownReport {
            committed,
            not_committed,
            deadline_exceeded,
            elapsed: started.elapsed(),
            stats: self.metrics.snapshot(),
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

    /// Shutdown's deadline passed with the final commit unfinished: records
    /// every acked offset not known to be committed, of the partitions owned
    /// when shutdown started and of those owned now (the commit thread may end
    /// the assignments meanwhile; a slot keeps its figures after it ends).
    fn record_not_committed(&self, owned_at_start: &[Arc<PartitionSlot>]) {
        let view = self.commits.view();
        let in_flight = view.in_flight();
        let mut slots = owned_at_start.to_vec();
        for s in self.assignment.all() {
            if !slots.iter().any(|o| Arc::ptr_eq(o, &s)) {
                slots.push(s);
            }
        }
        for s in slots {
            let flying = in_flight
                .iter()
                .find(|(tp, _)| *tp == s.tp)
                .map(|(_, o)| *o);
            let Some(offset) = s.view().commit_point.max(flying) else {
                continue;
            };
            if Some(offset) <= view.committed(&s.tp) {
                continue;
            }
            warn!(topic = %s.tp.topic, partition = s.tp.partition, offset, "shutdown deadline passed before the offset was committed");
            let f = self.recorder.failure(
                &s.tp,
                offset,
                FailureReason::ShutdownDeadline,
                "shutdown deadline passed before the commit landed",
            );
            self.recorder.record(f);
        }
    }

    /// Closes the consumer off the executor (it closes for real once the
    /// guard's threads let go of it), flushes the failed-offset log, and joins
    /// the threads that have ended, all within `deadline`.
    async fn close(&mut self, deadline: Deadline) {
        if let Some(consumer) = self.consumer.take() {
            let (tx, rx) = oneshot::channel();
            let _ = std::thread::Builder::new()
                .name("offset-guard-close".into())
                .spawn(move || {
                    drop(consumer);
                    let _ = tx.send(());
                });
            let _ = within(deadline, rx).await;
        }
        if let Some(log) = self.recorder.log() {
            // Make the failures of this run durable, within what is left of the deadline.
            let left = deadline.remaining(Instant::now()).unwrap_or(Duration::MAX);
            let log = log.clone();
            let flushed = tokio::task::spawn_blocking(move || log.flush_timeout(left)).await;
            if let Ok(Err(e)) = flushed {
                warn!(error = %e, "failed-offset log not flushed at shutdown");
            }
        }
        for t in std::mem::take(&mut self.threads) {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// Awaits `f` until `deadline` (for ever when there is none).
async fn within<F: Future>(deadline: Deadline, f: F) -> Option<F::Output> {
    match deadline.instant() {
        Some(t) => tokio::time::timeout_at(tokio::time::Instant::from_std(t), f)
            .await
            .ok(),
        None => Some(f.await),
    }
}

impl<C: ConsumerContext + 'static> Drop for GuardedConsumer<C> {
    fn drop(&mut self) {
        if self.shut_down {
            self.life.stop();
            return;
        }
        // Dropped without shutdown: commit what was acked in the background,
        // bounded by the shutdown timeout; never block the dropping thread.
        // The poll thread keeps serving rebalance callbacks until the commit
        // thread is done (its end stops the poll thread).
        self.life.drain();
        self.commits
            .finish_detached(Deadline::after(self.config.shutdown_timeout));
        debug!("guarded consumer dropped without shutdown; final commit runs in the background");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;

    fn start(
        cluster: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
        dies: GuardThread,
    ) -> GuardedConsumer {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", cluster.bootstrap_servers())
            .set("enable.auto.commit", "false");
        GuardedConsumer::start(Setup {
            client_config: cc,
            config: Config {
                panic_in: Some(dies),
                ..Config::with_group("g")
            },
            context: DefaultConsumerContext,
            hooks: Hooks::default(),
            sink: None,
            log: None,
            replay: HashMap::new(),
        })
        .unwrap()
    }

    /// A dead thread is an error naming it from `recv`, `commit_now` and
    /// `shutdown`, never a hang.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thread_that_died_is_named_by_every_call() {
        let cluster = MockCluster::new(1).unwrap();
        for dies in [GuardThread::Poll, GuardThread::Commit] {
            let mut c = start(&cluster, dies);
            let died = |r: Result<(), Error>| matches!(r, Err(Error::ThreadDied { thread }) if thread == dies);
            let limit = Duration::from_secs(10);
            let recv = tokio::time::timeout(limit, c.recv())
                .await
                .expect("recv returns");
            assert!(died(recv.map(|_| ())), "{dies:?}");
            if dies == GuardThread::Commit {
                let commit = tokio::time::timeout(limit, c.commit_now())
                    .await
                    .expect("commit_now returns");
                assert!(died(commit.map(|_| ())), "{dies:?}");
            }
            let shutdown = tokio::time::timeout(limit, c.shutdown())
                .await
                .expect("shutdown returns");
            assert!(died(shutdown.map(|_| ())), "{dies:?}");
        }
    }
}
