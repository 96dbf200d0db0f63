//! Counters and their snapshot.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Live counters, updated with relaxed atomics.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub delivered: AtomicU64,
    pub acked: AtomicU64,
    pub acks_stale: AtomicU64,
    pub acks_duplicate: AtomicU64,
    pub acks_unknown: AtomicU64,
    pub skipped_revoked: AtomicU64,
    pub commits_sent: AtomicU64,
    pub commits_succeeded: AtomicU64,
    pub commits_retried: AtomicU64,
    pub commits_failed: AtomicU64,
    pub commits_noop: AtomicU64,
    pub commits_deferred: AtomicU64,
    pub idle_recommits: AtomicU64,
    pub offsets_stale_dropped: AtomicU64,
    pub offsets_failed: AtomicU64,
    pub latency_last_us: AtomicU64,
    pub latency_max_us: AtomicU64,
    pub latency_total_us: AtomicU64,
    pub sink_errors: AtomicU64,
    pub assigns: AtomicU64,
    pub revokes: AtomicU64,
    pub partitions_lost: AtomicU64,
    pub offsets_revoke_committed: AtomicU64,
    pub offsets_deferred: AtomicU64,
    pub offsets_resumed: AtomicU64,
    pub offsets_replayed: AtomicU64,
    pub offsets_rebalance_dropped: AtomicU64,
    pub partitions_paused: AtomicU64,
    pub records_abandoned: AtomicU64,
    pub records_stuck: AtomicU64,
    pub records_skipped_done: AtomicU64,
    pub progress_load_errors: AtomicU64,
    pub consumer_errors: AtomicU64,
    pub errors_surfaced: AtomicU64,
}

impl Metrics {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_latency(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.latency_last_us.store(us, Relaxed);
        self.latency_max_us.fetch_max(us, Relaxed);
        self.latency_total_us.fetch_add(us, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let l = |c: &AtomicU64| c.load(Relaxed);
        let sent = l(&self.commits_sent);
        let total = l(&self.latency_total_us);
        Stats {
            delivered: l(&self.delivered),
            acked: l(&self.acked),
            acks_stale: l(&self.acks_stale),
            acks_duplicate: l(&self.acks_duplicate),
            acks_unknown: l(&self.acks_unknown),
            skipped_revoked: l(&self.skipped_revoked),
            commits_sent: sent,
            commits_succeeded: l(&self.commits_succeeded),
            commits_retried: l(&self.commits_retried),
            commits_failed: l(&self.commits_failed),
            commits_noop: l(&self.commits_noop),
            commits_deferred: l(&self.commits_deferred),
            idle_recommits: l(&self.idle_recommits),
            offsets_stale_dropped: l(&self.offsets_stale_dropped),
            offsets_failed: l(&self.offsets_failed),
            commit_latency_last: Duration::from_micros(l(&self.latency_last_us)),
            commit_latency_max: Duration::from_micros(l(&self.latency_max_us)),
            commit_latency_mean: Duration::from_micros(total.checked_div(sent).unwrap_or(0)),
            sink_errors: l(&self.sink_errors),
            assigns: l(&self.assigns),
            revokes: l(&self.revokes),
            partitions_lost: l(&self.partitions_lost),
            offsets_revoke_committed: l(&self.offsets_revoke_committed),
            offsets_deferred: l(&self.offsets_deferred),
            offsets_resumed: l(&self.offsets_resumed),
            offsets_replayed: l(&self.offsets_replayed),
            offsets_rebalance_dropped: l(&self.offsets_rebalance_dropped),
            partitions_paused: l(&self.partitions_paused),
            records_abandoned: l(&self.records_abandoned),
            records_stuck: l(&self.records_stuck),
            records_skipped_done: l(&self.records_skipped_done),
            progress_load_errors: l(&self.progress_load_errors),
            failed_log_dropped: 0,
            consumer_errors: l(&self.consumer_errors),
            errors_surfaced: l(&self.errors_surfaced),
        }
    }
}

/// A point-in-time copy of the guard's counters. Cheap to take and `Copy`.
///
/// Per-partition figures (last committed offset, pending offsets) are in
/// [`GuardedConsumer::partitions`](crate::GuardedConsumer::partitions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Records handed to the application.
    pub delivered: u64,
    /// Acks recorded (stale, duplicate and unknown acks are counted apart):
    /// the application's, and the guard's own acks of the records it skipped
    /// as done ([`records_skipped_done`](Self::records_skipped_done)), which
    /// are not in `delivered`. Records delivered and not acked yet, while
    /// their assignments last: `delivered + records_skipped_done - acked`.
    pub acked: u64,
    /// Acks dropped because their partition assignment had ended (older epoch).
    pub acks_stale: u64,
    /// Acks of an offset that was already acked.
    pub acks_duplicate: u64,
    /// Acks of an offset that was never delivered.
    pub acks_unknown: u64,
    /// Records fetched but not handed out because their partition's
    /// assignment ended before: revoked or lost, or left behind by a
    /// [`seek`](crate::GuardedConsumer::seek) (the records of the old position).
    pub skipped_revoked: u64,
    /// OffsetCommit attempts sent to the broker (retries included).
    pub commits_sent: u64,
    /// Commits that landed.
    pub commits_succeeded: u64,
    /// Attempts that failed with a retriable error and were retried.
    pub commits_retried: u64,
    /// Commits given up on (their offsets went to the failure sink).
    pub commits_failed: u64,
    /// Commits answered with `_NO_OFFSET` (nothing to commit; a success).
    pub commits_noop: u64,
    /// Commits deferred because the group was rebalancing.
    pub commits_deferred: u64,
    /// Unchanged offsets re-committed by
    /// [`recommit_idle_every`](crate::GuardBuilder::recommit_idle_every)
    /// (one per partition and period; their requests count in `commits_sent`).
    pub idle_recommits: u64,
    /// Offsets dropped as stale: older epoch, already committed, or a stale generation.
    pub offsets_stale_dropped: u64,
    /// Offsets handed to the failure sink.
    pub offsets_failed: u64,
    /// Duration of the most recent commit attempt.
    pub commit_latency_last: Duration,
    /// Longest commit attempt.
    pub commit_latency_max: Duration,
    /// Mean commit attempt duration.
    pub commit_latency_mean: Duration,
    /// Calls of the user's failure sink that panicked (the panic is caught;
    /// the failure is still counted and written to the failed-offset log).
    pub sink_errors: u64,
    /// Assign rebalance callbacks (each starts a new epoch for its partitions).
    pub assigns: u64,
    /// Revoke rebalance callbacks (not counting lost assignments).
    pub revokes: u64,
    /// Partitions lost (session timeout, fenced, ...): never committed.
    pub partitions_lost: u64,
    /// Offsets committed synchronously by a revoke, before hand-off.
    pub offsets_revoke_committed: u64,
    /// Offsets kept across a rebalance because their commit was refused with
    /// REBALANCE_IN_PROGRESS (inside a revoke) or a stale generation.
    pub offsets_deferred: u64,
    /// Kept offsets (refused during a rebalance, or of a lost partition)
    /// committed after the partition was assigned back (only when ahead of the
    /// group's committed offset; fetching starts there).
    pub offsets_resumed: u64,
    /// Unresolved failed offsets from the log committed again at an assign
    /// (`replay_failed_offsets`), being ahead of the group's committed offset.
    pub offsets_replayed: u64,
    /// Kept offsets dropped because the rebalance gave the partition to
    /// another member (recorded with reason `rebalance_dropped`, or `lost` for
    /// the offset of a lost partition).
    pub offsets_rebalance_dropped: u64,
    /// Times the owned front-end's poll thread paused a partition because the
    /// application fell behind (backlog or outstanding limits; see
    /// [`GuardBuilder::max_outstanding`](crate::GuardBuilder::max_outstanding)).
    /// Pauses asked for by the application are not counted.
    pub partitions_paused: u64,
    /// Records of the owned front-end dropped with every token of them
    /// without an ack (a task that panicked or forgot): each holds its
    /// partition's commit point until acked by
    /// [`ack_offset`](crate::GuardedConsumer::ack_offset) or the partition is
    /// revoked. Listed in [`PartitionStatus::abandoned`](crate::PartitionStatus::abandoned)
    /// and the shutdown report; each also a `tracing` warning.
    pub records_abandoned: u64,
    /// Records found un-acked for [`stuck_after`](crate::GuardBuilder::stuck_after)
    /// or longer (each counted once; a `tracing` warning too).
    pub records_stuck: u64,
    /// Records skipped because the stored progress
    /// ([`GuardBuilder::stored_progress`](crate::GuardBuilder::stored_progress))
    /// says they are done: acked without being handed out
    /// ([`GuardHandle::track_or_skip`](crate::GuardHandle::track_or_skip)).
    pub records_skipped_done: u64,
    /// Assigned partitions whose stored progress could not be loaded (the
    /// loader failed or panicked, a `tracing` warning each; or the loads of
    /// the assign took
    /// [`progress_load_timeout`](crate::GuardBuilder::progress_load_timeout)
    /// before their turn, one warning for them all): their records are
    /// all handed out, and a record done already is refused by the store's
    /// mark ([`ProgressError::AlreadyDone`](crate::progress::ProgressError::AlreadyDone)).
    pub progress_load_errors: u64,
    /// Records the failed-offset log
    /// ([`failed_offset_log`](crate::GuardBuilder::failed_offset_log)) refused
    /// and discarded: the disk kept failing and its in-memory queue was full
    /// ([`LogBuilder::max_unwritten`](crate::failure_log::LogBuilder::max_unwritten)),
    /// or the log was already closed. Each one is also logged with
    /// `tracing::warn!` naming the reason and the record. The same figure as
    /// [`LogStatus::dropped`](crate::failure_log::LogStatus::dropped); 0
    /// without a log. Such offsets still count in `offsets_failed` and reach
    /// the [`failure_sink`](crate::GuardBuilder::failure_sink).
    pub failed_log_dropped: u64,
    /// Non-fatal errors the owned front-end's poll thread got from the
    /// consumer (end-of-partition events not counted); the own-loop front-end
    /// does not count (your poll sees them).
    pub consumer_errors: u64,
    /// Errors returned by [`recv`](crate::GuardedConsumer::recv) under the
    /// error policy ([crate docs](crate#errors)): authentication or
    /// authorization, unknown topic, brokers unreachable.
    pub errors_surfaced: u64,
}
