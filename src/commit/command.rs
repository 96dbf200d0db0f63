//! The commands the commit worker serves, and their replies.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::error::KafkaResult;
use tokio::sync::oneshot;

use crate::assignment::{Assignment, PartitionSlot, Ring};
use crate::config::Config;
use crate::deadline::Deadline;
use crate::error::Error;
use crate::failures::FailureRecorder;
use crate::partition::{CommittedOffset, DroppedOffset, TopicPartition};
use crate::stats::Metrics;

/// Sends one synchronous OffsetCommit and reads the group's committed offsets.
/// Implemented by the rdkafka consumer; a trait so the worker can be tested
/// without a broker.
pub(crate) trait Committer: Send + Sync + 'static {
    fn commit(&self, offsets: &TopicPartitionList) -> KafkaResult<()>;
    /// The group's committed offset of each partition (`None`: none), in order.
    fn committed(&self, tps: &[TopicPartition], timeout: Duration)
    -> KafkaResult<Vec<Option<i64>>>;
    /// The partition's high watermark as last seen in a fetch response
    /// (cached by librdkafka; no request). `None` when not known.
    fn log_end(&self, tp: &TopicPartition) -> Option<i64>;
}

pub(crate) type Waiter = oneshot::Sender<Result<Vec<CommittedOffset>, Error>>;

/// A command to the worker.
pub(crate) enum Command {
    CommitNow(Waiter),
    Ring(Ring),
    Revoke(RevokeJob),
    Assigned(AssignJob),
    Lost(LostJob),
    Finish(FinishJob),
    Restart(RestartJob),
}

/// A partition's read position jumped (a seek, or an offset reset seen by
/// the front-end): a new assignment (epoch) of it starts a new stretch.
#[derive(Debug)]
pub(crate) struct RestartJob {
    pub tp: TopicPartition,
    /// The ended assignment's epoch and final commit point, if any: committed
    /// now if ahead of what was committed.
    pub old: Option<(u64, i64)>,
    pub new_epoch: u64,
    /// The application asked for a jump to this offset: the new stretch's
    /// commits from it on are accepted below what was committed too.
    pub rewind_to: Option<i64>,
}

/// Revoked partitions to commit before hand-off.
pub(crate) struct RevokeJob {
    pub slots: Vec<Arc<PartitionSlot>>,
    /// Until when to wait for acks of records already handed out.
    pub grace: Deadline,
    /// The revoke's deadline (commit retries included).
    pub deadline: Deadline,
    pub reply: Reply<RevokeOutcome>,
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

/// A rebalance ended with these newly assigned slots.
pub(crate) struct AssignJob {
    pub slots: Vec<Arc<PartitionSlot>>,
    /// Assignments this assign ended without a revoke (manual `assign`
    /// replaced by the group's): epoch and acked offset, settled as kept.
    pub replaced: Vec<(TopicPartition, u64, i64)>,
    /// Watermarks of the stored progress of assigned partitions: committed
    /// when ahead of the group's committed offset, and fetching starts there.
    pub stored: Vec<(TopicPartition, i64)>,
    pub reply: Reply<AssignOutcome>,
}

/// What the worker settled at an assign.
#[derive(Debug, Default, Clone)]
pub(crate) struct AssignOutcome {
    /// Where fetching starts for partitions whose kept or replayed offset is
    /// committed now.
    pub start_at: Vec<(TopicPartition, i64)>,
    pub resumed: Vec<CommittedOffset>,
    pub replayed: Vec<CommittedOffset>,
    pub dropped: Vec<DroppedOffset>,
}

/// Partitions lost: ended by the callback, with their final commit points.
pub(crate) struct LostJob {
    pub ended: Vec<(Arc<PartitionSlot>, Option<i64>)>,
    pub reply: Reply<Vec<CommittedOffset>>,
}

/// The final commit, then the worker stops.
pub(crate) struct FinishJob {
    pub deadline: Deadline,
    pub reply: Reply<()>,
}

const OPEN: u8 = 0;
const ANSWERED: u8 = 1;
const ABANDONED: u8 = 2;

/// The worker's side of a reply. Exactly one of "answered" and "abandoned"
/// wins, so the worker knows whether its caller still waits.
pub(crate) struct Reply<T> {
    claim: Arc<AtomicU8>,
    tx: Option<SyncSender<T>>,
}

/// The caller's side of a reply.
pub(crate) struct Pending<T> {
    claim: Arc<AtomicU8>,
    rx: Receiver<T>,
}

pub(crate) fn reply_pair<T>() -> (Reply<T>, Pending<T>) {
    let claim = Arc::new(AtomicU8::new(OPEN));
    let (tx, rx) = mpsc::sync_channel(1);
    (
        Reply {
            claim: claim.clone(),
            tx: Some(tx),
        },
        Pending { claim, rx },
    )
}

impl<T> Reply<T> {
    /// Nobody waits for this reply.
    pub(crate) fn detached() -> Self {
        Reply {
            claim: Arc::new(AtomicU8::new(OPEN)),
            tx: None,
        }
    }

    /// The caller stopped waiting.
    pub(crate) fn abandoned(&self) -> bool {
        self.claim.load(Ordering::Acquire) == ABANDONED
    }

    /// Answers; false if the caller had stopped waiting.
    pub(crate) fn send(self, value: T) -> bool {
        let won = self
            .claim
            .compare_exchange(OPEN, ANSWERED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if won && let Some(tx) = self.tx {
            let _ = tx.send(value);
        }
        won
    }
}

impl<T> Pending<T> {
    /// Waits for the answer until `deadline`. `None`: the worker is gone, or
    /// the deadline passed first (then the worker is told the caller stopped
    /// waiting).
    pub(crate) fn wait(self, deadline: Deadline) -> Option<T> {
        let got = match deadline.remaining(Instant::now()) {
            Some(d) => self.rx.recv_timeout(d),
            None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(v) => Some(v),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                let gave_up = self
                    .claim
                    .compare_exchange(OPEN, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                // The worker answered at the same moment: the value is on its way.
                if gave_up { None } else { self.rx.recv().ok() }
            }
        }
    }
}

/// What the worker works with, besides its mailbox.
pub(crate) struct WorkerParts {
    pub config: Arc<Config>,
    pub assignment: Arc<Assignment>,
    pub recorder: Arc<FailureRecorder>,
    pub metrics: Arc<Metrics>,
    /// Unresolved offsets of the failed-offset log, to replay at assign.
    pub replay: HashMap<TopicPartition, i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_goes_to_whoever_claims_first() {
        let (reply, pending) = reply_pair::<u32>();
        assert!(reply.send(7));
        assert_eq!(pending.wait(Deadline::NEVER), Some(7));

        let (reply, pending) = reply_pair::<u32>();
        assert_eq!(pending.wait(Deadline::at(Instant::now())), None);
        assert!(reply.abandoned());
        assert!(!reply.send(7), "the caller stopped waiting");

        let (reply, pending) = reply_pair::<u32>();
        drop(reply);
        assert_eq!(pending.wait(Deadline::NEVER), None, "the worker is gone");
        assert!(Reply::<u32>::detached().send(1));
    }
}
