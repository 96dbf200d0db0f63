//! [`GuardedConsumer`], the owned front-end: records in, acks in, commits handled.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, DefaultConsumerContext};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::assignment::AckStatus;
use crate::deadline::Deadline;
use crate::delivery::{Delivery, Record};
use crate::error::{BuildError, Error};
use crate::guard::{Guard, PartitionStatus, Setup, ShutdownReport, spawn_error, within};
use crate::partition::CommittedOffset;
use crate::poll::Poller;
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
    rx: mpsc::Receiver<Delivery>,
    current: VecDeque<Record>,
    poll_done: Option<oneshot::Receiver<()>>,
    shut_down: bool,
    /// Errors surfaced by the poll thread's error policy.
    errors: Arc<Outbox>,
}

impl<C: ConsumerContext + 'static> GuardedConsumer<C> {
    /// Wires the parts and starts the commit and poll threads.
    pub(crate) fn start(setup: Setup<C>) -> Result<Self, BuildError> {
        #[cfg(test)]
        let panics = setup.config.panic_in == Some(GuardThread::Poll);
        let (mut guard, consumer) = Guard::start::<C, BaseConsumer<GuardContext<C>>>(setup)?;
        let config = guard.config.clone();
        let (tx, rx) = mpsc::channel(config.prefetch_batches);
        let (done, poll_done) = oneshot::channel();
        let errors = Arc::new(Outbox::default());
        let poller = Poller {
            consumer: consumer.clone(),
            assignment: guard.assignment.clone(),
            metrics: guard.metrics.clone(),
            life: guard.life.clone(),
            tx,
            done,
            poll_timeout: config.poll_timeout,
            batch_size: config.batch_size,
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
        Ok(GuardedConsumer {
            consumer: Some(consumer),
            guard,
            rx,
            current: VecDeque::new(),
            poll_done: Some(poll_done),
            shut_down: false,
            errors,
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
    /// [`Error::Fatal`] for a fatal consumer error (the consumer stopped);
    /// [`Error::ThreadDied`] if one of the guard's threads panicked (the guard
    /// stopped). [`Error::AuthFailed`], [`Error::UnknownTopic`] and
    /// [`Error::BrokersUnreachable`] ([`Error::is_transient`]) while the
    /// consumer keeps running: each is returned once, and the next `recv`
    /// goes on (see [the error policy](crate#errors)).
    pub async fn recv(&mut self) -> Result<Option<Record>, Error> {
        loop {
            if let Some(thread) = self.guard.life.died() {
                return Err(Error::ThreadDied { thread });
            }
            if let Some(e) = self.errors.take() {
                return Err(e);
            }
            while let Some(r) = self.current.pop_front() {
                if !r.token.slot.hand_out(r.token.offset) {
                    Metrics::inc(&self.guard.metrics.skipped_revoked);
                    continue;
                }
                return Ok(Some(r));
            }
            // Whichever comes first: a delivery, or an error surfaced meanwhile.
            let mut surfaced = std::pin::pin!(self.errors.ready());
            let rx = &mut self.rx;
            let delivery = std::future::poll_fn(|cx| match rx.poll_recv(cx) {
                std::task::Poll::Ready(d) => std::task::Poll::Ready(Some(d)),
                std::task::Poll::Pending => surfaced.as_mut().poll(cx).map(|()| None),
            })
            .await;
            let Some(delivery) = delivery else {
                continue;
            };
            match delivery {
                Some(Delivery::Batch(b)) => self.current = b.into(),
                Some(Delivery::Error(e)) => return Err(e),
                None => {
                    return match self.guard.life.died() {
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
        // Close the consumer off the executor; it closes for real once the
        // guard's threads let go of it.
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
        result
    }
}

impl<C: ConsumerContext + 'static> Drop for GuardedConsumer<C> {
    fn drop(&mut self) {
        if self.shut_down {
            self.guard.life.stop();
            return;
        }
        // The poll thread keeps serving rebalance callbacks until the commit
        // thread is done (its end stops the poll thread).
        self.guard.finish_in_background();
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
