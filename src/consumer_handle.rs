//! [`ConsumerHandle`]: a cheap, cloneable handle on a [`GuardedConsumer`]
//! for other tasks while the receive loop runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::assignment::{AckStatus, PartitionSlot};
use crate::delivery::Delivery;
use crate::error::Error;
use crate::guard::{PartitionStatus, Shared};
use crate::partition::CommittedOffset;
use crate::poll::PollRequest;
use crate::stats::Stats;

/// A cloneable handle on a [`GuardedConsumer`](crate::GuardedConsumer), from
/// [`GuardedConsumer::handle`](crate::GuardedConsumer::handle): `Send + Sync`,
/// cheap to clone, for other tasks while the receive loop runs (a metrics
/// task, an admin endpoint, a shutdown signal).
///
/// [`stop`](Self::stop) ends the receive loop: the next (or a waiting)
/// [`recv`](crate::GuardedConsumer::recv) returns `Ok(None)`, and the
/// stream ends; then call [`shutdown`](crate::GuardedConsumer::shutdown)
/// on the consumer. For example on Ctrl-C (the same with a
/// `tokio_util::sync::CancellationToken`: `token.cancelled().await`):
///
/// ```no_run
/// use futures::StreamExt;
///
/// # async fn run(mut consumer: offset_guard::GuardedConsumer) -> Result<(), offset_guard::Error> {
/// let handle = consumer.handle();
/// tokio::spawn(async move {
///     let _ = tokio::signal::ctrl_c().await;
///     handle.stop();
/// });
/// while let Some(record) = consumer.next().await {
///     let record = record?;
///     // process it, then:
///     record.ack();
/// }
/// let report = consumer.shutdown().await?;
/// # let _ = report;
/// # Ok(())
/// # }
/// ```
///
/// A handle kept after the consumer shut down does not keep it open; its
/// calls then answer [`Error::ShutDown`] (or the empty state).
#[derive(Clone)]
pub struct ConsumerHandle {
    pub(crate) shared: Shared,
    pub(crate) requests: std::sync::mpsc::Sender<PollRequest>,
    /// Bumped by every resume (and seek): `recv` then looks at its held records.
    pub(crate) resumes: Arc<AtomicUsize>,
    pub(crate) stopped: Arc<AtomicBool>,
    /// Wakes a waiting `recv` on `stop`; weak, so the hand-off still closes
    /// when the poll thread ends.
    pub(crate) wake: mpsc::WeakUnboundedSender<Delivery>,
}

impl std::fmt::Debug for ConsumerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerHandle")
            .field("stopped", &self.stopped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ConsumerHandle {
    /// See [`GuardedConsumer::stats`](crate::GuardedConsumer::stats).
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// See [`GuardedConsumer::partitions`](crate::GuardedConsumer::partitions).
    pub fn partitions(&self) -> Vec<PartitionStatus> {
        self.shared.partitions()
    }

    /// See [`GuardedConsumer::commit_now`](crate::GuardedConsumer::commit_now).
    ///
    /// # Errors
    ///
    /// As `GuardedConsumer::commit_now`; [`Error::ShutDown`] once shut down.
    pub async fn commit_now(&self) -> Result<Vec<CommittedOffset>, Error> {
        self.shared.commit_now().await
    }

    /// See [`GuardedConsumer::ack_offset`](crate::GuardedConsumer::ack_offset).
    ///
    /// # Errors
    ///
    /// [`Error::NotOwned`] for a partition this consumer does not own.
    pub fn ack_offset(&self, topic: &str, partition: i32, offset: i64) -> Result<AckStatus, Error> {
        if let Some(e) = self.shared.commits.stopped() {
            return Err(e);
        }
        match self.shared.assignment.token(topic, partition, offset) {
            Some(token) => Ok(token.ack()),
            None => Err(Error::NotOwned {
                topic: topic.to_string(),
                partition,
            }),
        }
    }

    /// See [`GuardedConsumer::pause`](crate::GuardedConsumer::pause).
    ///
    /// # Errors
    ///
    /// [`Error::NotOwned`] naming the first partition not owned; nothing is
    /// paused then.
    pub fn pause(&self, partitions: &[(&str, i32)]) -> Result<(), Error> {
        self.set_paused(partitions, true)
    }

    /// See [`GuardedConsumer::resume`](crate::GuardedConsumer::resume).
    ///
    /// # Errors
    ///
    /// [`Error::NotOwned`] naming the first partition not owned; nothing is
    /// resumed then.
    pub fn resume(&self, partitions: &[(&str, i32)]) -> Result<(), Error> {
        self.set_paused(partitions, false)
    }

    /// See [`GuardedConsumer::seek`](crate::GuardedConsumer::seek).
    ///
    /// # Errors
    ///
    /// As `GuardedConsumer::seek`.
    pub async fn seek(
        &self,
        topic: &str,
        partition: i32,
        offset: rdkafka::Offset,
    ) -> Result<(), Error> {
        if let Some(e) = self.shared.commits.stopped() {
            return Err(e);
        }
        self.owned_slot(topic, partition)?;
        if !is_read_position(offset) {
            return Err(Error::InvalidSeek {
                topic: topic.to_string(),
                partition,
                offset,
            });
        }
        let (reply, answer) = oneshot::channel();
        let request = PollRequest::Seek {
            topic: topic.to_string(),
            partition,
            offset,
            reply,
        };
        if self.requests.send(request).is_err() {
            return Err(self.shared.commits.gone());
        }
        let result = answer.await.map_err(|_| self.shared.commits.gone())?;
        // Held records of the old position are dropped at the next `recv`.
        self.resumes.fetch_add(1, Ordering::Release);
        result
    }

    /// Ends the receive loop: `recv` returns `Ok(None)` from now on (a
    /// waiting one at once) and the stream ends. Records fetched and not
    /// handed out are not committed (they are fetched again next time).
    /// Then call [`shutdown`](crate::GuardedConsumer::shutdown), which
    /// commits what was acked. Idempotent.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        if let Some(tx) = self.wake.upgrade() {
            let _ = tx.send(Delivery::Wake);
        }
    }

    /// [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    fn set_paused(&self, partitions: &[(&str, i32)], paused: bool) -> Result<(), Error> {
        if let Some(e) = self.shared.commits.stopped() {
            return Err(e);
        }
        let slots = partitions
            .iter()
            .map(|&(topic, partition)| self.owned_slot(topic, partition))
            .collect::<Result<Vec<_>, _>>()?;
        for s in &slots {
            s.set_user_paused(paused);
        }
        if !paused {
            self.resumes.fetch_add(1, Ordering::Release);
        }
        let _ = self.requests.send(PollRequest::Regulate);
        Ok(())
    }

    fn owned_slot(&self, topic: &str, partition: i32) -> Result<Arc<PartitionSlot>, Error> {
        self.shared
            .assignment
            .get(topic, partition)
            .ok_or_else(|| Error::NotOwned {
                topic: topic.to_string(),
                partition,
            })
    }
}

/// Whether librdkafka can seek to `offset`: `Invalid` and `Stored` are not
/// positions (librdkafka resets `Invalid` by `auto.offset.reset`), and a
/// negative offset or tail is refused.
fn is_read_position(offset: rdkafka::Offset) -> bool {
    use rdkafka::Offset;
    match offset {
        Offset::Beginning | Offset::End => true,
        Offset::Offset(n) | Offset::OffsetTail(n) => n >= 0,
        Offset::Stored | Offset::Invalid => false,
    }
}
