//! What both front-ends hold: the wiring of a guard (assignment, recorder,
//! counters, the commit worker and its thread) and the calls they share
//! (acks by coordinates, `commit_now`, `stats`, `partitions`, shutdown).

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::assignment::{AckStatus, Assignment, PartitionSlot};
use crate::commit::handle::{self, CommitHandle, Committer, Mailbox, WorkerParts};
use crate::config::Config;
use crate::deadline::Deadline;
use crate::error::{BuildError, Error};
use crate::failures::FailureRecorder;
use crate::partition::{CommittedOffset, TopicPartition};
use crate::rebalance::{ContextParts, GuardContext, Hooks};
use crate::sink::{FailedOffset, FailureReason, FailureSink};
use crate::stats::{Metrics, Stats};
use crate::telemetry;
use crate::threads::{GuardThread, Lifecycle};

/// Per-partition view, from [`GuardedConsumer::partitions`](crate::GuardedConsumer::partitions).
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
    /// The partition's log-end offset (high watermark) as of the last fetch
    /// response librdkafka received for it (no broker request; as fresh as the
    /// fetching). `None` before the first fetch.
    pub log_end: Option<i64>,
    /// Records between the committed offset and the log end (`log_end -
    /// committed`, at least 0); `None` unless both are known.
    pub lag: Option<i64>,
    /// Offsets of records dropped without an ack with every token of them
    /// (owned front-end; see [`Record`](crate::Record)) and still not acked:
    /// the first of them holds the commit point.
    pub abandoned: Vec<i64>,
    /// How long `first_unacked` has been the first un-acked record, as
    /// sampled by the commit thread about once a second (`None` until
    /// sampled). See [`stuck_after`](crate::GuardBuilder::stuck_after).
    pub first_unacked_age: Option<Duration>,
}

/// What [`GuardedConsumer::shutdown`](crate::GuardedConsumer::shutdown) did.
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
    /// Whether the failed-offset log was flushed (written and synced) before
    /// shutdown returned, so that every offset in `not_committed` is in it;
    /// `None` without a log. The flush gets what is left of the shutdown
    /// deadline, and at least [`LOG_FLUSH_ALLOWANCE`] even when the deadline
    /// has passed.
    pub log_flushed: Option<bool>,
    /// Records dropped without an ack with every token of them, never acked
    /// since (topic, partition, offset): their partitions' commits stopped
    /// before them. See [`Record`](crate::Record).
    pub abandoned: Vec<(String, i32, i64)>,
}

/// The least time shutdown gives the failed-offset log's flush, even past its
/// deadline (1 s): the offsets it could not commit must be durable when it
/// returns.
pub const LOG_FLUSH_ALLOWANCE: Duration = Duration::from_secs(1);

/// Everything `build()` hands over to start a guard.
pub(crate) struct Setup<C> {
    pub client_config: rdkafka::ClientConfig,
    pub config: Config,
    pub context: C,
    pub hooks: Hooks,
    pub sink: Option<Box<dyn FailureSink>>,
    pub log: Option<crate::failure_log::FailedOffsetLog>,
    pub replay: std::collections::HashMap<TopicPartition, i64>,
}

/// Any rdkafka consumer of the guard's context, as the commit worker's broker.
struct Broker<T, C>(Arc<T>, PhantomData<fn() -> C>);

impl<T, C> Committer for Broker<T, C>
where
    T: Consumer<GuardContext<C>> + Send + Sync + 'static,
    C: ConsumerContext + 'static,
{
    fn commit(&self, offsets: &TopicPartitionList) -> KafkaResult<()> {
        let res = self.0.commit(offsets, CommitMode::Sync);
        // rdkafka never calls `commit_callback` for a synchronous commit: the
        // guard tells the wrapped context the outcome of each attempt itself
        // (on the commit thread, no guard lock held).
        let user = self.0.context().user_context();
        let told = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            user.commit_callback(res.clone(), offsets)
        }));
        if told.is_err() {
            tracing::error!("the wrapped context's commit_callback panicked; the guard carries on");
        }
        res
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
        let list = self.0.committed_offsets(query, timeout)?;
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

    fn log_end(&self, tp: &TopicPartition) -> Option<i64> {
        cached_high_watermark(self.0.client().native_ptr(), tp)
    }
}

/// The partition's high watermark as librdkafka last saw it in a fetch
/// response (`rd_kafka_get_watermark_offsets`: cached, no request); `None`
/// before the first fetch.
fn cached_high_watermark(
    rk: *mut rdkafka::bindings::rd_kafka_t,
    tp: &TopicPartition,
) -> Option<i64> {
    let topic = std::ffi::CString::new(tp.topic.as_bytes()).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: `rk` is the live client of a consumer the caller holds; the
    // call only reads librdkafka's cached values into the two locals.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            rk,
            topic.as_ptr(),
            tp.partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

/// A started guard: the commit thread runs; the front-end adds the rest.
pub(crate) struct Guard {
    pub config: Arc<Config>,
    pub assignment: Arc<Assignment>,
    pub metrics: Arc<Metrics>,
    pub recorder: Arc<FailureRecorder>,
    pub commits: CommitHandle,
    pub life: Arc<Lifecycle>,
    /// The consumer, for the cached watermarks (`None` once shut down, so
    /// that the guard does not keep the consumer open).
    broker: Option<Arc<dyn Committer>>,
    pub threads: Vec<JoinHandle<()>>,
}

/// A shutdown under way (see [`Guard::begin_shutdown`]).
pub(crate) struct Shutdown {
    started: Instant,
    pub deadline: Deadline,
    owned: Vec<Arc<PartitionSlot>>,
    /// Resolves with whether the final commit finished in time.
    pub finish: tokio::task::JoinHandle<bool>,
}

pub(crate) fn spawn_error(thread: GuardThread) -> impl FnOnce(std::io::Error) -> BuildError {
    move |source| BuildError::SpawnThread { thread, source }
}

impl Guard {
    /// Creates the consumer `T` with the guard's context and starts the
    /// commit thread.
    pub(crate) fn start<C, T>(setup: Setup<C>) -> Result<(Guard, Arc<T>), BuildError>
    where
        C: ConsumerContext + 'static,
        T: FromClientConfigAndContext<GuardContext<C>>
            + Consumer<GuardContext<C>>
            + Send
            + Sync
            + 'static,
    {
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
        let consumer: T = setup
            .client_config
            .create_with_context(context)
            .map_err(BuildError::Kafka)?;
        let consumer = Arc::new(consumer);
        let broker: Arc<dyn Committer> = Arc::new(Broker(consumer.clone(), PhantomData));
        let mut guard = Guard {
            config,
            assignment,
            metrics,
            recorder,
            commits,
            life,
            broker: Some(broker.clone()),
            threads: Vec::new(),
        };
        guard.start_worker(broker, mailbox, setup.replay)?;
        Ok((guard, consumer))
    }

    fn start_worker(
        &mut self,
        broker: Arc<dyn Committer>,
        mailbox: Mailbox,
        replay: std::collections::HashMap<TopicPartition, i64>,
    ) -> Result<(), BuildError> {
        let parts = WorkerParts {
            config: self.config.clone(),
            assignment: self.assignment.clone(),
            recorder: self.recorder.clone(),
            metrics: self.metrics.clone(),
            replay,
        };
        let thread = handle::start(parts, broker, mailbox, self.life.clone())
            .map_err(spawn_error(GuardThread::Commit))?;
        self.threads.push(thread);
        Ok(())
    }

    /// Acks by coordinates. A partition not owned is an [`Error::NotOwned`].
    pub(crate) fn ack_offset(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<AckStatus, Error> {
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

    pub(crate) async fn commit_now(&self) -> Result<Vec<CommittedOffset>, Error> {
        self.commits.commit_now().await
    }

    pub(crate) fn stats(&self) -> Stats {
        self.recorder.stats()
    }

    pub(crate) fn partitions(&self) -> Vec<PartitionStatus> {
        partitions(&self.assignment, &self.commits, self.broker.as_deref())
    }

    /// What a cloneable handle needs: it never keeps the consumer open.
    pub(crate) fn shared(&self) -> Shared {
        Shared {
            assignment: self.assignment.clone(),
            recorder: self.recorder.clone(),
            commits: self.commits.clone(),
            broker: self.broker.as_ref().map(Arc::downgrade),
        }
    }

    /// Shutdown starts: nothing more is handed out, the final commit is asked
    /// for. The front-end keeps serving rebalance callbacks until `finish`
    /// resolves, then calls [`Self::end_shutdown`].
    pub(crate) fn begin_shutdown(&self) -> Shutdown {
        let started = Instant::now();
        let deadline = Deadline::after_from(started, self.config.shutdown_timeout);
        info!(group = %self.config.group_id, "offset guard shutting down");
        self.life.drain();
        self.recorder.start_capture();
        let owned = self.assignment.all();
        let pending = self.commits.finish(deadline);
        let finish = tokio::task::spawn_blocking(move || {
            pending.is_some_and(|p| p.wait(deadline).is_some())
        });
        Shutdown {
            started,
            deadline,
            owned,
            finish,
        }
    }

    /// Records what the deadline left uncommitted, stops the threads, flushes
    /// the failed-offset log, and reports. `poll_done` resolves when the
    /// front-end's own polling stopped.
    pub(crate) async fn end_shutdown(
        &mut self,
        run: Shutdown,
        poll_done: impl Future<Output = ()>,
    ) -> Result<ShutdownReport, Error> {
        let finished = run.finish.await.unwrap_or(false);
        let died = self.life.died();
        let deadline_exceeded = !finished && died.is_none();
        if deadline_exceeded {
            self.record_not_committed(&run.owned);
        }
        self.life.stop();
        self.broker = None;
        let _ = within(run.deadline, poll_done).await;
        let committed = self.commits.view().all_committed();
        let not_committed = self.recorder.captured();
        let log_flushed = self.flush_log(run.deadline).await;
        // The threads end now (the stop signal is set): wait for them, within
        // the deadline, so that they have let go of the consumer and its close
        // (leaving the group) happens when the application drops it.
        // (A thread still busy at the deadline, e.g. in a commit attempt
        // against a broker that is gone, is left to end by itself.)
        for t in std::mem::take(&mut self.threads) {
            while !t.is_finished() && !run.deadline.is_past(Instant::now()) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        if let Some(thread) = died.or_else(|| self.life.died()) {
            return Err(Error::ThreadDied { thread });
        }
        let abandoned = run
            .owned
            .iter()
            .flat_map(|s| {
                s.abandoned()
                    .into_iter()
                    .map(|o| (s.tp.topic.to_string(), s.tp.partition, o))
            })
            .collect();
        let report = ShutdownReport {
            committed,
            not_committed,
            deadline_exceeded,
            elapsed: run.started.elapsed(),
            stats: self.recorder.stats(),
            log_flushed,
            abandoned,
        };
        info!(
            group = %self.config.group_id,
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
            warn!(group = %self.config.group_id, topic = %s.tp.topic, partition = s.tp.partition, offset, "shutdown deadline passed before the offset was committed");
            let f = self.recorder.failure(
                &s.tp,
                offset,
                FailureReason::ShutdownDeadline,
                "shutdown deadline passed before the commit landed",
            );
            self.recorder.record(f);
        }
    }

    /// Makes the failures of this run durable: within what is left of the
    /// deadline, and at least [`LOG_FLUSH_ALLOWANCE`]. `None` without a log.
    async fn flush_log(&self, deadline: Deadline) -> Option<bool> {
        let log = self.recorder.log()?.clone();
        let left = deadline
            .remaining(Instant::now())
            .unwrap_or(Duration::MAX)
            .max(LOG_FLUSH_ALLOWANCE);
        // Flushed, then closed: the writer thread ends and releases the
        // log's lock now, not when the last handle (the consumer's context,
        // closed in the background) goes.
        let flushed =
            tokio::task::spawn_blocking(move || log.flush_timeout(left).and_then(|()| log.close()))
                .await;
        match flushed {
            Ok(Ok(())) => Some(true),
            Ok(Err(e)) => {
                warn!(group = %self.config.group_id, error = %e, "failed-offset log not flushed at shutdown");
                Some(false)
            }
            Err(_) => Some(false),
        }
    }

    /// Dropped without shutdown: commit what was acked in the background,
    /// bounded by the shutdown timeout; never block the dropping thread.
    pub(crate) fn finish_in_background(&self) {
        self.life.drain();
        self.commits
            .finish_detached(Deadline::after(self.config.shutdown_timeout));
    }
}

/// Awaits `f` until `deadline` (for ever when there is none).
pub(crate) async fn within<F: Future>(deadline: Deadline, f: F) -> Option<F::Output> {
    match deadline.instant() {
        Some(t) => tokio::time::timeout_at(tokio::time::Instant::from_std(t), f)
            .await
            .ok(),
        None => Some(f.await),
    }
}

/// The per-partition state of the current assignment, sorted.
fn partitions(
    assignment: &Assignment,
    commits: &CommitHandle,
    broker: Option<&dyn Committer>,
) -> Vec<PartitionStatus> {
    let view = commits.view();
    let mut v: Vec<_> = assignment
        .all()
        .into_iter()
        .map(|s| {
            let sv = s.view();
            let committed = view.committed(&s.tp);
            let log_end = broker.and_then(|b| b.log_end(&s.tp));
            PartitionStatus {
                topic: s.tp.topic.to_string(),
                partition: s.tp.partition,
                epoch: s.epoch,
                committed,
                commit_point: sv.commit_point,
                first_unacked: sv.first_unacked,
                outstanding: sv.outstanding,
                log_end,
                lag: telemetry::lag(log_end, committed),
                abandoned: s.abandoned(),
                first_unacked_age: sv
                    .first_unacked
                    .and_then(|o| view.unacked_since(&s.tp, o))
                    .map(|since| since.elapsed()),
            }
        })
        .collect();
    v.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    v
}

/// The parts of a [`Guard`] that cloneable handles share; a weak reference
/// to the consumer, so a handle kept after shutdown does not keep it open.
#[derive(Clone)]
pub(crate) struct Shared {
    pub assignment: Arc<Assignment>,
    recorder: Arc<FailureRecorder>,
    pub commits: CommitHandle,
    broker: Option<std::sync::Weak<dyn Committer>>,
}

impl Shared {
    pub(crate) fn stats(&self) -> Stats {
        self.recorder.stats()
    }

    pub(crate) fn partitions(&self) -> Vec<PartitionStatus> {
        let broker = self.broker.as_ref().and_then(std::sync::Weak::upgrade);
        partitions(&self.assignment, &self.commits, broker.as_deref())
    }

    pub(crate) async fn commit_now(&self) -> Result<Vec<CommittedOffset>, Error> {
        self.commits.commit_now().await
    }
}
