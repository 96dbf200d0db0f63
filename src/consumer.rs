//! [`GuardedConsumer`], the owned front-end: records in, acks in, commits handled.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, DefaultConsumerContext};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::assignment::{AckStatus, HandOut};
use crate::backlog::Backlog;
use crate::consumer_handle::ConsumerHandle;
use crate::deadline::Deadline;
use crate::delivery::{Delivery, Record};
use crate::error::{BuildError, Error};
use crate::guard::{Guard, PartitionStatus, Setup, ShutdownReport, spawn_error, within};
use crate::partition::CommittedOffset;
use crate::poll::{Poller, close};
use crate::rebalance::GuardContext;
use crate::stats::{Metrics, Stats};
use crate::surface::{ErrorPolicy, Outbox};
use crate::threads::GuardThread;

/// A Kafka consumer whose offsets are committed for you: only what was acked,
/// never backwards, one commit at a time, retried, and recorded when given up.
///
/// Built with [`OffsetGuard::builder`](crate::OffsetGuard::builder). It polls on
/// a thread of its own and hands records out through [`recv`](Self::recv);
/// to keep your own rdkafka consumer loop instead, see
/// [`GuardBuilder::build_consumer`](crate::GuardBuilder::build_consumer).
pub struct GuardedConsumer<C: ConsumerContext + 'static = DefaultConsumerContext> {
    consumer: Option<Arc<BaseConsumer<GuardContext<C>>>>,
    guard: Guard,
    rx: mpsc::UnboundedReceiver<Delivery>,
    current: VecDeque<Record>,
    /// Records of `current`'s batch not yet counted out of the backlog.
    current_len: usize,
    /// Records sent by the poll thread and not yet received (whole batches).
    backlog: Arc<Backlog>,
    /// Records of partitions the application paused, oldest first.
    held: VecDeque<Record>,
    /// `handle.resumes` and the assignments ended as last seen: on a change
    /// `recv` looks at `held` again.
    resumes_seen: (usize, u64),
    handle: ConsumerHandle,
    poll_done: Option<oneshot::Receiver<()>>,
    shut_down: bool,
    /// Errors surfaced by the poll thread's error policy.
    errors: Arc<Outbox>,
    /// Tells the poll thread to close the consumer at its end (dropped
    /// without `shutdown`: records the application holds keep it open).
    close_at_end: Arc<AtomicBool>,
}

impl<C: ConsumerContext + 'static> GuardedConsumer<C> {
    /// Wires the parts and starts the commit and poll threads.
    pub(crate) fn start(setup: Setup<C>) -> Result<Self, BuildError> {
        #[cfg(test)]
        let panics = setup.config.panic_in == Some(GuardThread::Poll);
        let (mut guard, consumer) = Guard::start::<C, BaseConsumer<GuardContext<C>>>(setup)?;
        let config = guard.config.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let wake = tx.downgrade();
        let (requests, requests_rx) = std::sync::mpsc::channel();
        let backlog = Arc::new(Backlog::new(config.flow_limits().backlog));
        let (done, poll_done) = oneshot::channel();
        let errors = Arc::new(Outbox::default());
        let close_at_end = Arc::new(AtomicBool::new(false));
        let poller = Poller {
            consumer: consumer.clone(),
            assignment: guard.assignment.clone(),
            commits: guard.commits.clone(),
            metrics: guard.metrics.clone(),
            life: guard.life.clone(),
            tx,
            backlog: backlog.clone(),
            requests: requests_rx,
            limits: config.flow_limits(),
            done,
            close_at_end: close_at_end.clone(),
            poll_timeout: config.poll_timeout,
            batch_size: config.batch_size,
            read_headers: config.read_headers,
            group: config.group_id.clone(),
            errors: ErrorPolicy::new(
                config.brokers_unreachable_after,
                errors.clone(),
                guard.metrics.clone(),
                config.group_id.clone(),
            ),
            #[cfg(test)]
            panics,
        };
        match poller.start() {
            Ok(t) => guard.threads.push(t),
            Err(e) => {
                guard.commits.finish_detached(Deadline::at(Instant::now()));
                return Err(spawn_error(GuardThread::Poll)(e));
            }
        }
        let handle = ConsumerHandle {
            shared: guard.shared(),
            requests,
            resumes: Arc::new(AtomicUsize::new(0)),
            stopped: Arc::new(AtomicBool::new(false)),
            wake,
        };
        Ok(GuardedConsumer {
            consumer: Some(consumer),
            guard,
            rx,
            current: VecDeque::new(),
            current_len: 0,
            backlog,
            held: VecDeque::new(),
            resumes_seen: (0, 0),
            handle,
            poll_done: Some(poll_done),
            shut_down: false,
            errors,
            close_at_end,
        })
    }

    /// The wrapped rdkafka consumer, for anything the guard does not cover
    /// (metadata, watermarks, `committed()`, `position()`). Not safe through
    /// it: commits (not ordered with the guard's own), `pause`/`resume`
    /// (the guard's flow control lifts pauses it did not make; use
    /// [`pause`](Self::pause)), `seek` (use [`seek`](Self::seek); a jump
    /// back behind the guard's back is noticed when its records arrive: they
    /// are delivered again, and nothing is committed below the committed
    /// offset), `assign`/`unassign`/`incremental_assign` while subscribed.
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

    /// The next record, or `None` once the consumer stopped (or
    /// [`ConsumerHandle::stop`] was called). Waits without blocking the
    /// executor; cancel-safe (a record is never lost by dropping the future).
    /// Records of partitions whose revoke has started since they were fetched
    /// are skipped (counted in [`Stats::skipped_revoked`]). The consumer is
    /// also a [`futures_core::Stream`] of `Result<Record, Error>`.
    ///
    /// # Errors
    ///
    /// [`Error::Fatal`] for a fatal consumer error (the consumer stopped);
    /// [`Error::ThreadDied`] if one of the guard's threads panicked (the guard
    /// stopped). [`Error::AuthFailed`], [`Error::UnknownTopic`] and
    /// [`Error::BrokersUnreachable`] ([`Error::is_transient`]) while the
    /// consumer keeps running: each is returned once, and the next `recv`
    /// goes on (see [the error policy](crate#errors)).
    pub async fn recv(&mut self) -> Result<Option<Record>, Error> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Record>, Error>> {
        loop {
            if let Some(thread) = self.guard.life.died() {
                return Poll::Ready(Err(Error::ThreadDied { thread }));
            }
            if self.handle.is_stopped() {
                return Poll::Ready(Ok(None));
            }
            if let Some(e) = self.errors.take() {
                return Poll::Ready(Err(e));
            }
            self.release_held();
            while let Some(r) = self.current.pop_front() {
                match r.token.slot.hand_out(r.token.offset) {
                    HandOut::Yes => {
                        let mut r = r;
                        r.handed = true;
                        return Poll::Ready(Ok(Some(r)));
                    }
                    HandOut::Closing => Metrics::inc(&self.guard.metrics.skipped_revoked),
                    HandOut::Paused => self.held.push_back(r),
                }
            }
            // The batch is used up: out of the backlog the poll thread watches.
            self.backlog.take(std::mem::take(&mut self.current_len));
            // Whichever comes first: a delivery, or an error surfaced meanwhile.
            let delivery = match self.rx.poll_recv(cx) {
                Poll::Ready(d) => d,
                Poll::Pending => {
                    std::task::ready!(self.errors.poll_ready(cx));
                    continue;
                }
            };
            match delivery {
                Some(Delivery::Batch(b)) => {
                    self.current_len = b.len();
                    self.current = b.into();
                }
                Some(Delivery::Error(e)) => return Poll::Ready(Err(e)),
                Some(Delivery::Wake) => {}
                None => {
                    return Poll::Ready(match self.guard.life.died() {
                        Some(thread) => Err(Error::ThreadDied { thread }),
                        None => Ok(None),
                    });
                }
            }
        }
    }

    /// After a `resume` (or seek): held records of partitions no longer
    /// paused go back to the front, in their order (they are older than
    /// anything of theirs still in the hand-off). After an assignment ended
    /// (revoke, loss): those of ended assignments are dropped, so a paused
    /// partition revoked and never resumed keeps no records in memory.
    fn release_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let resumes = self.handle.resumes.load(Ordering::Acquire);
        let ended = self.guard.assignment.signal().assignments_ended();
        if (resumes, ended) == self.resumes_seen {
            return;
        }
        self.resumes_seen = (resumes, ended);
        let mut still = VecDeque::new();
        let mut back = Vec::new();
        for r in self.held.drain(..) {
            if r.token.slot.is_revoked() {
                Metrics::inc(&self.guard.metrics.skipped_revoked);
            } else if r.token.slot.is_user_paused() {
                still.push_back(r);
            } else {
                back.push(r);
            }
        }
        self.held = still;
        for r in back.into_iter().rev() {
            self.current.push_front(r);
        }
    }

    /// Pauses fetching and handing out of these partitions (Kafka's
    /// `pause`): once this returns, `recv` hands out no record of them
    /// (records already fetched are held back, in order) until
    /// [`resume`](Self::resume). The pause ends with the partition's
    /// assignment (a revoke or loss), as in Kafka's consumer.
    ///
    /// Pause and resume through the guard, not through
    /// [`consumer()`](Self::consumer): the guard also pauses partitions
    /// itself when the application falls behind (see the crate docs,
    /// "Backpressure"), and would resume a partition paused behind its back.
    ///
    /// # Errors
    ///
    /// [`Error::NotOwned`] naming the first partition not assigned to this
    /// consumer; nothing is paused then.
    pub fn pause(&self, partitions: &[(&str, i32)]) -> Result<(), Error> {
        self.handle.pause(partitions)
    }

    /// Resumes partitions paused with [`pause`](Self::pause): their held
    /// records are handed out first, in order, then fetching goes on where
    /// it stopped. Resuming a partition that is not paused does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::NotOwned`] naming the first partition not assigned to this
    /// consumer; nothing is resumed then.
    pub fn resume(&self, partitions: &[(&str, i32)]) -> Result<(), Error> {
        self.handle.resume(partitions)
    }

    /// Moves a partition's read position (Kafka's `seek`): the next records
    /// of it handed out start at `offset`. Records of the old position still
    /// waiting are not handed out; acks of the old position after this are
    /// stale. What was acked of the old position is committed first, if
    /// ahead of the committed offset; then the new position's commits
    /// follow its acks, below the committed offset too when you sought
    /// backwards (you asked for it). Seek through the guard, never through
    /// [`consumer()`](Self::consumer): the guard would see the jump only when
    /// the records arrive (it then delivers them again, but never commits
    /// below the committed offset). Waits up to 10 s for librdkafka.
    ///
    /// # Errors
    ///
    /// [`Error::NotOwned`] for a partition not assigned to this consumer;
    /// [`Error::InvalidSeek`] for an offset that is not a read position
    /// (`Offset::Invalid`, `Offset::Stored`, a negative offset or tail);
    /// [`Error::Kafka`] when librdkafka refuses the seek (the position is
    /// unchanged then); [`Error::ThreadDied`] / [`Error::ShutDown`] when the
    /// guard stopped.
    pub async fn seek(
        &self,
        topic: &str,
        partition: i32,
        offset: rdkafka::Offset,
    ) -> Result<(), Error> {
        self.handle.seek(topic, partition, offset).await
    }

    /// A cheap, cloneable handle for other tasks while the receive loop
    /// runs: stats, partitions, `commit_now`, pause/resume/seek, and
    /// [`stop`](ConsumerHandle::stop) to end the receive loop.
    pub fn handle(&self) -> ConsumerHandle {
        self.handle.clone()
    }

    /// Acks by coordinates instead of by token. A partition this consumer does
    /// not own is an [`Error::NotOwned`], never a commit.
    pub fn ack_offset(&self, topic: &str, partition: i32, offset: i64) -> Result<AckStatus, Error> {
        self.guard.ack_offset(topic, partition, offset)
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
        self.guard.commit_now().await
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.guard.stats()
    }

    /// Per-partition state of the current assignment, sorted: committed
    /// offset, commit point, un-acked records, log-end offset and lag.
    pub fn partitions(&self) -> Vec<PartitionStatus> {
        self.guard.partitions()
    }

    /// Stops handing out records, commits everything acked (synchronously, with
    /// retries, within the shutdown timeout), records what could not be
    /// committed in the failure sink, and closes the consumer. Nothing that was
    /// not acked is committed (the consumer's `position()` never is). The poll
    /// thread keeps serving rebalance callbacks while the final commit runs.
    ///
    /// # Errors
    ///
    /// [`Error::ThreadDied`] if one of the guard's threads had panicked; the
    /// consumer is closed all the same.
    pub async fn shutdown(mut self) -> Result<ShutdownReport, Error> {
        self.shut_down = true;
        self.rx.close();
        let run = self.guard.begin_shutdown();
        // A poll thread waiting for the backlog to drain stops waiting.
        self.backlog.wake();
        let deadline = run.deadline;
        let poll_done = self.poll_done.take();
        let result = self
            .guard
            .end_shutdown(run, async move {
                if let Some(done) = poll_done {
                    let _ = done.await;
                }
            })
            .await;
        // Records never received hold librdkafka's messages, and with them
        // the consumer: let go of them first.
        self.current.clear();
        self.held.clear();
        while self.rx.try_recv().is_ok() {}
        // Close the consumer off the executor; it closes for real once the
        // guard's threads let go of it.
        if let Some(consumer) = self.consumer.take() {
            let (tx, rx) = oneshot::channel();
            let _ = std::thread::Builder::new()
                .name("offset-guard-close".into())
                .spawn(move || {
                    close(consumer);
                    let _ = tx.send(());
                });
            let _ = within(deadline, rx).await;
        }
        result
    }
}

/// The records as a stream (`Ok` records, `Err` errors, ends like
/// [`recv`](GuardedConsumer::recv) returning `None`), for `StreamExt`
/// combinators such as `for_each_concurrent` and `buffer_unordered`.
impl<C: ConsumerContext + 'static> futures_core::Stream for GuardedConsumer<C> {
    type Item = Result<Record, Error>;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx).map(Result::transpose)
    }
}

impl<C: ConsumerContext + 'static> Drop for GuardedConsumer<C> {
    fn drop(&mut self) {
        if self.shut_down {
            self.guard.life.stop();
            self.backlog.wake();
            return;
        }
        // The poll thread keeps serving rebalance callbacks until the commit
        // thread is done (its end stops the poll thread), then closes the
        // consumer (leaves the group) even while the application still holds
        // records, which keep librdkafka's client alive.
        self.close_at_end.store(true, Ordering::Release);
        self.guard.finish_in_background();
        self.backlog.wake();
        debug!("guarded consumer dropped without shutdown; final commit runs in the background");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::rebalance::Hooks;
    use rdkafka::ClientConfig;
    use rdkafka::mocking::MockCluster;
    use std::collections::HashMap;
    use std::time::Duration;

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
