//! The own-loop front-end: the guard beside the application's own consumer
//! loop (see [`GuardHandle`]).

use std::future::Future;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, StreamConsumer};
use rdkafka::util::AsyncRuntime;
use tracing::debug;

use std::cell::RefCell;
use std::sync::Arc;

use crate::assignment::{AckStatus, AckToken, PartitionSlot};
use crate::error::Error;
use crate::guard::{Guard, PartitionStatus, ShutdownReport};
use crate::partition::CommittedOffset;
use crate::rebalance::GuardContext;
use crate::stats::{Metrics, Stats};

/// The own-loop front-end: keep your rdkafka consumer loop, track the
/// messages you process, ack them from anywhere.
///
/// [`GuardBuilder::build_consumer`](crate::GuardBuilder::build_consumer) creates
/// your consumer type (`StreamConsumer`, `BaseConsumer`) with the guard's
/// context installed and hands back a [`GuardHandle`] beside it. You poll as
/// before (`recv()`, `.stream()`, `poll()`, subscribe or manual `assign`),
/// call [`GuardHandle::track`] on each message you will process, and ack the
/// token it returns when the message is done. The guard copies nothing: a
/// token is a pointer to its partition's slot and an offset.
///
/// Everything after the ack is the same commit core as
/// [`GuardedConsumer`](crate::GuardedConsumer): only acked offsets, never past
/// an un-acked record, never backwards, one commit in flight, retries,
/// commits on revoke before hand-off, lost partitions never committed, the
/// failed-offset log, a final commit at shutdown.
///
/// For exactly-once effects in a database, see [`track_or_skip`](Self::track_or_skip)
/// and the [`progress`](crate::progress) module.
///
/// What differs:
/// - Only tracked messages are protected. A message you polled but did not
///   track is invisible to the guard: once a later message of its partition
///   is tracked and acked, the commit moves past it (offsets have gaps anyway,
///   from compaction and transaction markers, so a gap is not a sign of a
///   missing message). Track every message you process, before you start on
///   it; one you skip on purpose needs no ack.
/// - Rebalance callbacks run inside your own poll (for a `StreamConsumer`,
///   inside `recv()` on your async task). A revoke waits there for the
///   revoked partitions' commit, up to
///   [`revoke_timeout`](crate::GuardBuilder::revoke_timeout), as a commit in
///   rdkafka's own `pre_rebalance` would: that task is blocked meanwhile.
///   Keep the revoke timeout short, or use the owned front-end, whose poll
///   thread takes that wait.
/// - [`GuardHandle::shutdown`] borrows your consumer to keep serving rebalance
///   callbacks while the final commit runs; messages it polls meanwhile are
///   dropped (not tracked, so not committed).
///
/// `Send + Sync`: share it (`Arc`) with the tasks that call
/// [`commit_now`](Self::commit_now) or read [`partitions`](Self::partitions).
/// Dropping it without [`shutdown`](Self::shutdown) commits what was acked in
/// the background, bounded by the shutdown timeout.
pub struct GuardHandle {
    guard: Guard,
    shut_down: bool,
}

impl std::fmt::Debug for GuardHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardHandle")
            .field("group", &self.guard.config.group_id)
            .finish_non_exhaustive()
    }
}

impl GuardHandle {
    pub(crate) fn new(guard: Guard) -> Self {
        GuardHandle {
            guard,
            shut_down: false,
        }
    }

    /// Tracks a message you will process and returns the token that acks it.
    /// Call it in the order you receive messages (per partition, offsets
    /// increase). No copy: works on a `BorrowedMessage` or an `OwnedMessage`.
    ///
    /// The token of a message whose partition is not owned (revoked or lost
    /// since, or never assigned by the group) is stale: its ack is counted and
    /// never committed. Tracking the same offset twice, or a lower one (after a
    /// seek backwards), registers nothing: that ack reports `Duplicate` or
    /// `Unknown`.
    #[inline]
    pub fn track<M: Message>(&self, message: &M) -> AckToken {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let slot = self.slot(topic, partition);
        if slot.deliver(offset) {
            slot.hand_out(offset);
            Metrics::inc(&self.guard.metrics.delivered);
        }
        AckToken::new(slot, offset)
    }

    /// [`track`](Self::track) for exactly-once into a database
    /// ([`GuardBuilder::stored_progress`](crate::GuardBuilder::stored_progress)):
    /// [`Tracked::Done`] when the stored progress read at assign says the
    /// record was done already (it is acked, counted in
    /// [`Stats::records_skipped_done`], and must not be processed), else
    /// [`Tracked::Process`] with the token, as `track`. Without stored
    /// progress it is always `Process`.
    #[inline]
    pub fn track_or_skip<M: Message>(&self, message: &M) -> Tracked {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let slot = self.slot(topic, partition);
        if slot.done_before(offset) {
            if slot.deliver(offset) {
                slot.hand_out(offset);
            }
            let _ = AckToken::new(slot, offset).ack();
            Metrics::inc(&self.guard.metrics.records_skipped_done);
            return Tracked::Done;
        }
        if slot.deliver(offset) {
            slot.hand_out(offset);
            Metrics::inc(&self.guard.metrics.delivered);
        }
        Tracked::Process(AckToken::new(slot, offset))
    }

    /// The consumer group's id (`group.id`), as the progress store keys it.
    pub fn group_id(&self) -> &str {
        &self.guard.config.group_id
    }

    /// The slot of a partition: the one this thread used last when it is the
    /// same, still current, partition of this guard (most messages in a row
    /// come from one partition); else a look-up.
    #[inline]
    fn slot(&self, topic: &str, partition: i32) -> Arc<PartitionSlot> {
        LAST_SLOT.with_borrow_mut(|last| {
            if let Some(s) = last
                && s.tp.partition == partition
                && !s.is_revoked()
                && self.guard.assignment.owns(s)
                && &*s.tp.topic == topic
            {
                return s.clone();
            }
            let s = self.guard.assignment.for_tracking(topic, partition);
            *last = Some(s.clone());
            s
        })
    }

    /// Acks by coordinates instead of by token (the offset must have been
    /// tracked). A partition this consumer does not own is an
    /// [`Error::NotOwned`], never a commit.
    pub fn ack_offset(&self, topic: &str, partition: i32, offset: i64) -> Result<AckStatus, Error> {
        self.guard.ack_offset(topic, partition, offset)
    }

    /// Commits everything acked so far; as
    /// [`GuardedConsumer::commit_now`](crate::GuardedConsumer::commit_now).
    ///
    /// # Errors
    ///
    /// [`Error::CommitFailed`] when the commit was given up, [`Error::ThreadDied`]
    /// if the commit thread panicked.
    pub async fn commit_now(&self) -> Result<Vec<CommittedOffset>, Error> {
        self.guard.commit_now().await
    }

    /// A snapshot of the counters (`delivered` counts tracked messages).
    pub fn stats(&self) -> Stats {
        self.guard.stats()
    }

    /// Per-partition state of the current assignment, sorted: committed
    /// offset, commit point, un-acked records, log-end offset and lag.
    pub fn partitions(&self) -> Vec<PartitionStatus> {
        self.guard.partitions()
    }

    /// Commits everything acked (synchronously, with retries, within the
    /// shutdown timeout), records what could not be committed, and stops the
    /// guard. It keeps polling `consumer` meanwhile, so a rebalance under way
    /// can finish (its revoke commits); messages polled then are dropped. The
    /// consumer stays yours: close it (drop it) afterwards.
    ///
    /// # Errors
    ///
    /// [`Error::ThreadDied`] if the commit thread had panicked.
    pub async fn shutdown<T: ServeCallbacks>(
        mut self,
        consumer: &T,
    ) -> Result<ShutdownReport, Error> {
        self.shut_down = true;
        let run = self.guard.begin_shutdown();
        while !run.finish.is_finished() {
            consumer.serve_callbacks(Duration::from_millis(20)).await;
        }
        self.guard.end_shutdown(run, async {}).await
    }
}

impl Drop for GuardHandle {
    fn drop(&mut self) {
        if self.shut_down {
            self.guard.life.stop();
            return;
        }
        self.guard.finish_in_background();
        debug!("guard handle dropped without shutdown; final commit runs in the background");
    }
}

/// What [`GuardHandle::track_or_skip`] found.
#[derive(Debug)]
#[must_use = "a record to process carries the token that acks it"]
pub enum Tracked {
    /// Process the record; ack the token once its transaction committed.
    Process(AckToken),
    /// The stored progress says the record is done: skip it (already acked).
    Done,
}

thread_local! {
    /// The slot [`GuardHandle::track`] used last on this thread.
    static LAST_SLOT: RefCell<Option<Arc<PartitionSlot>>> = const { RefCell::new(None) };
}

mod sealed {
    pub trait Sealed {}
}

/// A consumer the guard can poll to serve rebalance callbacks during
/// [`GuardHandle::shutdown`]: `StreamConsumer` and `BaseConsumer` with the
/// guard's context. Sealed.
pub trait ServeCallbacks: sealed::Sealed {
    /// Polls for about `wait`, serving callbacks; messages are dropped.
    #[doc(hidden)]
    fn serve_callbacks(&self, wait: Duration) -> impl Future<Output = ()> + Send + '_;
}

impl<C: ConsumerContext + 'static, R: AsyncRuntime> sealed::Sealed
    for StreamConsumer<GuardContext<C>, R>
{
}

impl<C: ConsumerContext + 'static, R: AsyncRuntime> ServeCallbacks
    for StreamConsumer<GuardContext<C>, R>
{
    async fn serve_callbacks(&self, wait: Duration) {
        let _ = tokio::time::timeout(wait, self.recv()).await;
    }
}

impl<C: ConsumerContext + 'static> sealed::Sealed for BaseConsumer<GuardContext<C>> {}

impl<C: ConsumerContext + 'static> ServeCallbacks for BaseConsumer<GuardContext<C>> {
    async fn serve_callbacks(&self, wait: Duration) {
        let _ = self.poll(Duration::ZERO);
        tokio::time::sleep(wait).await;
    }
}
