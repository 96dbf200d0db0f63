//! The partitions this consumer owns, one slot per assignment (epoch), and the
//! ack token that points straight at its slot.
//!
//! Shared by the front-end (delivery, acks), the rebalance callbacks (assign,
//! revoke, lost) and the commit worker (commit points). Locks: the slot map's
//! `RwLock`, then one slot's `Mutex`, never the other way round, and neither is
//! held while calling out of this module.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::partition::TopicPartition;
use crate::progress::PartitionProgress;
use crate::stats::Metrics;
use crate::tracker::{AckOutcome, PartitionTracker};

/// Why an ack rings the commit worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ring {
    /// A commit is due (`async_commits`, or `commit_every` acks since the last cycle).
    CommitDue,
    /// A record of a partition being revoked was acked (the revoke waits for it).
    Acked,
}

/// What acks need besides their slot: the counters, the commit triggers and a
/// way to ring the commit worker. Holds no reference to the worker's state.
pub(crate) struct AckSignal {
    pub(crate) metrics: Arc<Metrics>,
    async_commits: bool,
    commit_every: Option<u64>,
    pending: AtomicBool,
    acks_at_last_cycle: AtomicU64,
    ring: Box<dyn Fn(Ring) + Send + Sync>,
    /// Bumped after a slot's assignment ended (revoked, lost, replaced):
    /// `recv` then drops the held records of ended assignments.
    ended: AtomicU64,
}

impl AckSignal {
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        async_commits: bool,
        commit_every: Option<u64>,
        ring: Box<dyn Fn(Ring) + Send + Sync>,
    ) -> Self {
        AckSignal {
            metrics,
            async_commits,
            commit_every,
            pending: AtomicBool::new(false),
            acks_at_last_cycle: AtomicU64::new(0),
            ring,
            ended: AtomicU64::new(0),
        }
    }

    /// How many slot assignments have ended so far (see `ended`).
    pub(crate) fn assignments_ended(&self) -> u64 {
        self.ended.load(Ordering::Acquire)
    }

    /// Hot path: called once per recorded ack.
    #[inline]
    fn on_acked(&self) {
        let n = self.metrics.acked.fetch_add(1, Ordering::Relaxed) + 1;
        let due = self.async_commits
            || self.commit_every.is_some_and(|every| {
                n.saturating_sub(self.acks_at_last_cycle.load(Ordering::Relaxed)) >= every
            });
        if due
            && !self.pending.load(Ordering::Relaxed)
            && !self.pending.swap(true, Ordering::AcqRel)
        {
            (self.ring)(Ring::CommitDue);
        }
    }

    /// Called by the commit worker at the start of each cycle, before it
    /// reads the commit points.
    pub(crate) fn reset(&self) {
        self.acks_at_last_cycle.store(
            self.metrics.acked.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        self.pending.store(false, Ordering::Release);
    }
}

/// Tracking state of one assignment of one partition.
pub(crate) struct PartitionSlot {
    signal: Arc<AckSignal>,
    pub tp: TopicPartition,
    /// Unique per assignment; a partition assigned again gets a new, higher epoch.
    pub epoch: u64,
    state: Mutex<SlotState>,
    /// Mirror of `SlotState::revoked` for a lock-free check on the delivery path.
    revoked_hint: AtomicBool,
    /// The revoke of this assignment started: no more of its records are
    /// handed out, and acks ring the worker waiting out the revoke grace period.
    closing: AtomicBool,
    /// The highest offset handed to the application (-1: none yet).
    handed_out: AtomicI64,
    /// The highest offset registered by the front-end (-1: none yet); above
    /// `handed_out`, records of this slot wait in the hand-off.
    registered: AtomicI64,
    /// Mirror of the tracker's outstanding count, for the poll thread's flow
    /// control without the slot lock.
    outstanding_hint: AtomicUsize,
    /// The application paused this partition (owned front-end): its records
    /// are held back, not handed out.
    user_paused: AtomicBool,
    /// The stored progress read at assign (`stored_progress`): records done
    /// before this assignment.
    progress: OnceLock<PartitionProgress>,
}

/// What [`PartitionSlot::hand_out`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandOut {
    Yes,
    /// The revoke of this assignment started: skip the record.
    Closing,
    /// The application paused the partition: hold the record back.
    Paused,
}

struct SlotState {
    tracker: PartitionTracker,
    revoked: bool,
    /// The consumer's position when every record it returned was acked, if
    /// past them: the offsets between are records it never returns
    /// (transaction markers, aborted records), so the commit may go there.
    tail: Option<i64>,
    /// Offsets whose record (and every token of it) was dropped without an
    /// ack, first [`MAX_ABANDONED`] kept.
    abandoned: Vec<i64>,
}

impl SlotState {
    /// The tracker's commit point, or the tail when past it (every record
    /// before the tail was acked or is never returned; those delivered
    /// after it come after it).
    fn commit_point(&self) -> Option<i64> {
        let cp = self.tracker.commit_point();
        match self.tail {
            Some(tail) => Some(cp.map_or(tail, |c| c.max(tail))),
            None => cp,
        }
    }
}

/// The most abandoned offsets a slot lists (all are counted).
pub(crate) const MAX_ABANDONED: usize = 1024;

/// A slot's figures at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotView {
    pub commit_point: Option<i64>,
    pub first_unacked: Option<i64>,
    pub outstanding: usize,
}

impl PartitionSlot {
    fn new(signal: Arc<AckSignal>, tp: TopicPartition, epoch: u64) -> Self {
        PartitionSlot {
            signal,
            tp,
            epoch,
            state: Mutex::new(SlotState {
                tracker: PartitionTracker::new(),
                revoked: false,
                tail: None,
                abandoned: Vec::new(),
            }),
            revoked_hint: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            handed_out: AtomicI64::new(-1),
            registered: AtomicI64::new(-1),
            outstanding_hint: AtomicUsize::new(0),
            user_paused: AtomicBool::new(false),
            progress: OnceLock::new(),
        }
    }

    /// Sets the stored progress read at assign (once).
    pub(crate) fn set_progress(&self, progress: PartitionProgress) {
        let _ = self.progress.set(progress);
    }

    /// The stored progress says the record at `offset` was done before this
    /// assignment.
    #[inline]
    pub(crate) fn done_before(&self, offset: i64) -> bool {
        self.progress.get().is_some_and(|p| p.is_done(offset))
    }

    /// Stored progress was read for this assignment (`stored_progress`).
    #[inline]
    pub(crate) fn has_progress(&self) -> bool {
        self.progress.get().is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a delivered offset. False if the slot was revoked or the offset
    /// does not increase.
    pub(crate) fn deliver(&self, offset: i64) -> bool {
        let mut s = self.lock();
        !s.revoked && s.tracker.deliver(offset)
    }

    /// Registers a run of delivered offsets under one lock. Calls `refused(i)`
    /// for the index of every offset not registered (slot revoked, or not
    /// increasing).
    pub(crate) fn deliver_run(
        &self,
        offsets: impl Iterator<Item = i64>,
        mut refused: impl FnMut(usize),
    ) {
        let mut s = self.lock();
        let mut last = None;
        for (i, offset) in offsets.enumerate() {
            if s.revoked || !s.tracker.deliver(offset) {
                refused(i);
            } else {
                last = Some(offset);
            }
        }
        if let Some(last) = last {
            self.registered.store(last, Ordering::Relaxed);
        }
        self.outstanding_hint
            .store(s.tracker.outstanding(), Ordering::Relaxed);
    }

    fn ack(&self, offset: i64) -> AckStatus {
        let status = {
            let mut s = self.lock();
            if s.revoked {
                return AckStatus::Stale;
            }
            match s.tracker.ack(offset) {
                AckOutcome::Recorded => {
                    self.outstanding_hint
                        .store(s.tracker.outstanding(), Ordering::Relaxed);
                    AckStatus::Recorded
                }
                AckOutcome::Duplicate => AckStatus::Duplicate,
                AckOutcome::Unknown => AckStatus::Unknown,
            }
        };
        if self.closing.load(Ordering::Relaxed) {
            (self.signal.ring)(Ring::Acked);
        }
        status
    }

    /// The front-end is about to hand out `offset`: yes, or skip it (the
    /// revoke of this assignment started), or hold it back (paused).
    #[inline]
    pub(crate) fn hand_out(&self, offset: i64) -> HandOut {
        if self.user_paused.load(Ordering::Acquire) {
            return HandOut::Paused;
        }
        // Store first, then check: a revoke that starts concurrently either sees
        // this offset as handed out (and waits for its ack) or is seen here.
        self.handed_out.store(offset, Ordering::SeqCst);
        if self.closing.load(Ordering::SeqCst) {
            HandOut::Closing
        } else {
            HandOut::Yes
        }
    }

    /// The application pauses (`true`) or resumes the partition.
    pub(crate) fn set_user_paused(&self, paused: bool) {
        self.user_paused.store(paused, Ordering::Release);
    }

    pub(crate) fn is_user_paused(&self) -> bool {
        self.user_paused.load(Ordering::Acquire)
    }

    /// The highest offset registered (-1: none).
    pub(crate) fn last_registered(&self) -> i64 {
        self.registered.load(Ordering::Relaxed)
    }

    /// The record at `offset` was dropped with every token of it, without an
    /// ack: counted, warned about and listed, if it was delivered in this
    /// assignment and is not acked (it holds the commit point for good).
    pub(crate) fn abandon(&self, offset: i64) {
        {
            let mut s = self.lock();
            // Being revoked (or ended): the partition is going anyway.
            if s.revoked
                || self.closing.load(Ordering::SeqCst)
                || !s.tracker.is_unacked(offset)
                || s.abandoned.contains(&offset)
            {
                return;
            }
            if s.abandoned.len() < MAX_ABANDONED {
                s.abandoned.push(offset);
            }
        }
        Metrics::inc(&self.signal.metrics.records_abandoned);
        tracing::warn!(topic = %self.tp.topic, partition = self.tp.partition, offset, "record dropped without an ack (its task panicked or forgot it): the partition's commits stop before it until it is acked (ack_offset) or the partition is revoked");
    }

    /// Offsets listed by [`Self::abandon`] and still not acked.
    pub(crate) fn abandoned(&self) -> Vec<i64> {
        let s = self.lock();
        s.abandoned
            .iter()
            .copied()
            .filter(|&o| s.tracker.is_unacked(o))
            .collect()
    }

    /// Outstanding records as of the last delivery or ack (no lock).
    #[inline]
    pub(crate) fn outstanding_hint(&self) -> usize {
        self.outstanding_hint.load(Ordering::Relaxed)
    }

    /// The poll thread's flow-control figures, without the slot lock.
    pub(crate) fn figures(&self) -> crate::flow::Figures {
        crate::flow::Figures {
            tp: self.tp.clone(),
            epoch: self.epoch,
            waiting: self.registered.load(Ordering::Relaxed)
                > self.handed_out.load(Ordering::Relaxed),
            outstanding: self.outstanding_hint.load(Ordering::Relaxed),
            user_paused: self.user_paused.load(Ordering::Relaxed),
        }
    }

    /// Starts the revoke: no more records of this assignment are handed out.
    pub(crate) fn begin_close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Every record handed to the application is acked (contiguously).
    pub(crate) fn drained(&self) -> bool {
        let h = self.handed_out.load(Ordering::SeqCst);
        h < 0 || self.lock().tracker.commit_point().is_some_and(|cp| cp > h)
    }

    /// Where a commit would go now; `None` once revoked.
    pub(crate) fn commit_point(&self) -> Option<i64> {
        let s = self.lock();
        if s.revoked { None } else { s.commit_point() }
    }

    /// The poll thread saw the consumer's `position` past every record it
    /// registered, with none of them waiting or un-acked: the records in
    /// between are never returned (transaction markers, aborted records).
    pub(crate) fn set_tail(&self, position: i64) {
        let mut s = self.lock();
        let past = s
            .tracker
            .last_delivered()
            .is_some_and(|last| position > last + 1);
        if !s.revoked && past && s.tracker.outstanding() == 0 {
            s.tail = Some(position);
        }
    }

    pub(crate) fn view(&self) -> SlotView {
        let s = self.lock();
        SlotView {
            commit_point: s.commit_point(),
            first_unacked: s.tracker.first_unacked(),
            outstanding: s.tracker.outstanding(),
        }
    }

    /// Ends this assignment: later acks are stale. Returns the final commit point.
    fn end(&self) -> Option<i64> {
        let mut s = self.lock();
        s.revoked = true;
        self.closing.store(true, Ordering::SeqCst);
        self.revoked_hint.store(true, Ordering::Release);
        self.signal.ended.fetch_add(1, Ordering::Release);
        s.commit_point()
    }

    pub(crate) fn is_revoked(&self) -> bool {
        self.revoked_hint.load(Ordering::Acquire)
    }
}

/// Live slots by topic, then partition.
type SlotMap = HashMap<Arc<str>, HashMap<i32, Arc<PartitionSlot>>>;

/// All live slots.
pub(crate) struct Assignment {
    signal: Arc<AckSignal>,
    slots: RwLock<SlotMap>,
    next_epoch: AtomicU64,
    /// A rebalance callback assigned partitions: the group decides what is
    /// owned, so a record of a partition without a slot is not ours.
    group_managed: AtomicBool,
}

impl Assignment {
    pub(crate) fn new(signal: Arc<AckSignal>) -> Self {
        Assignment {
            signal,
            slots: RwLock::new(HashMap::new()),
            next_epoch: AtomicU64::new(0),
            group_managed: AtomicBool::new(false),
        }
    }

    pub(crate) fn signal(&self) -> &AckSignal {
        &self.signal
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, SlotMap> {
        self.slots.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, SlotMap> {
        self.slots.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a new assignment of a partition (a new epoch), ending any previous one.
    pub(crate) fn assign(&self, topic: &str, partition: i32) -> Arc<PartitionSlot> {
        self.assign_replacing(topic, partition).0
    }

    /// [`Self::assign`], also returning the assignment it ended, if any (its
    /// epoch and final commit point).
    pub(crate) fn assign_replacing(
        &self,
        topic: &str,
        partition: i32,
    ) -> (Arc<PartitionSlot>, Option<(u64, Option<i64>)>) {
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let mut slots = self.write();
        let topic_arc: Arc<str> = match slots.get_key_value(topic) {
            Some((k, _)) => k.clone(),
            None => Arc::from(topic),
        };
        let tp = TopicPartition::new(topic_arc.clone(), partition);
        let slot = Arc::new(PartitionSlot::new(self.signal.clone(), tp, epoch));
        let replaced = slots
            .entry(topic_arc)
            .or_default()
            .insert(partition, slot.clone())
            .map(|old| (old.epoch, old.end()));
        (slot, replaced)
    }

    /// Ends every assignment not in `keep` (manual assignments a group's first
    /// assign does not confirm); returns what they had acked.
    pub(crate) fn end_except(
        &self,
        keep: &[(String, i32)],
    ) -> Vec<(TopicPartition, u64, Option<i64>)> {
        let ended: Vec<Arc<PartitionSlot>> = self
            .all()
            .into_iter()
            .filter(|s| {
                !keep
                    .iter()
                    .any(|(t, p)| *p == s.tp.partition && **t == *s.tp.topic)
            })
            .collect();
        ended
            .into_iter()
            .map(|s| {
                let cp = self.revoke_slot(&s);
                (s.tp.clone(), s.epoch, cp)
            })
            .collect()
    }

    /// Ends the assignment of a partition; returns its slot and final commit
    /// point if it was owned.
    pub(crate) fn revoke(
        &self,
        topic: &str,
        partition: i32,
    ) -> Option<(Arc<PartitionSlot>, Option<i64>)> {
        let slot = {
            let mut slots = self.write();
            let parts = slots.get_mut(topic)?;
            let slot = parts.remove(&partition)?;
            if parts.is_empty() {
                slots.remove(topic);
            }
            slot
        };
        let cp = slot.end();
        Some((slot, cp))
    }

    /// Ends this exact assignment (if it is still the current one) and returns
    /// its final commit point.
    pub(crate) fn revoke_slot(&self, slot: &Arc<PartitionSlot>) -> Option<i64> {
        {
            let mut slots = self.write();
            if let Some(parts) = slots.get_mut(&*slot.tp.topic) {
                if parts
                    .get(&slot.tp.partition)
                    .is_some_and(|s| Arc::ptr_eq(s, slot))
                {
                    parts.remove(&slot.tp.partition);
                }
                if parts.is_empty() {
                    slots.remove(&*slot.tp.topic);
                }
            }
        }
        slot.end()
    }

    pub(crate) fn get(&self, topic: &str, partition: i32) -> Option<Arc<PartitionSlot>> {
        self.read().get(topic)?.get(&partition).cloned()
    }

    /// The slot for a delivered record, creating one when the partition was
    /// assigned without a rebalance callback (manual `assign`).
    pub(crate) fn get_or_assign(&self, topic: &str, partition: i32) -> Arc<PartitionSlot> {
        match self.get(topic, partition) {
            Some(s) => s,
            None => self.assign(topic, partition),
        }
    }

    /// The slot was made by this assignment (of this guard).
    #[inline]
    pub(crate) fn owns(&self, slot: &PartitionSlot) -> bool {
        Arc::ptr_eq(&self.signal, &slot.signal)
    }

    /// Partitions are assigned by the group's rebalance callbacks from now on.
    /// True the first time.
    pub(crate) fn set_group_managed(&self) -> bool {
        !self.group_managed.swap(true, Ordering::Relaxed)
    }

    /// The slot for a record the application tracks: the current one; a new
    /// one for a partition assigned without a rebalance callback (manual
    /// `assign`); for a partition a group did not give us (any more), a slot
    /// that is already ended, so its token's ack is stale.
    pub(crate) fn for_tracking(&self, topic: &str, partition: i32) -> Arc<PartitionSlot> {
        if let Some(s) = self.get(topic, partition) {
            return s;
        }
        if !self.group_managed.load(Ordering::Relaxed) {
            return self.assign(topic, partition);
        }
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = PartitionSlot::new(
            self.signal.clone(),
            TopicPartition::new(topic, partition),
            epoch,
        );
        slot.end();
        Arc::new(slot)
    }

    /// The current epoch of a partition, if owned.
    pub(crate) fn epoch(&self, tp: &TopicPartition) -> Option<u64> {
        self.read()
            .get(&tp.topic)?
            .get(&tp.partition)
            .map(|s| s.epoch)
    }

    pub(crate) fn all(&self) -> Vec<Arc<PartitionSlot>> {
        self.read()
            .values()
            .flat_map(|p| p.values().cloned())
            .collect()
    }

    /// Ends every assignment (the guard stopped).
    pub(crate) fn revoke_all(&self) -> Vec<Arc<PartitionSlot>> {
        let all: Vec<_> = self
            .write()
            .drain()
            .flat_map(|(_, p)| p.into_values())
            .collect();
        for s in &all {
            s.end();
        }
        all
    }

    /// Acks by coordinates: `None` if the partition is not owned.
    pub(crate) fn token(&self, topic: &str, partition: i32, offset: i64) -> Option<AckToken> {
        self.get(topic, partition)
            .map(|slot| AckToken::new(slot, offset))
    }
}

/// What an ack did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AckStatus {
    /// Recorded; the offset will be committed once every earlier record is acked.
    Recorded,
    /// The partition's assignment ended before the ack (revoked, lost, or
    /// assigned again since): dropped and counted, never committed.
    Stale,
    /// The offset was acked before.
    Duplicate,
    /// The offset was never delivered by this consumer in this assignment.
    Unknown,
}

/// Proof that a record was delivered; `ack()` it when the record is processed.
///
/// `Send + 'static` and cheap to clone and move into a task. Acks may come from
/// any task in any order: the guard commits only up to the first record that is
/// not acked yet. A token of a partition that was revoked, lost or re-assigned
/// since is stale: its ack is dropped and counted, never committed.
#[derive(Clone)]
pub struct AckToken {
    pub(crate) slot: Arc<PartitionSlot>,
    pub(crate) offset: i64,
    /// Shared by the tokens taken from one owned-front-end record: when the
    /// last is dropped without an ack, the record is reported abandoned.
    pub(crate) ticket: Option<Arc<Ticket>>,
}

/// One record's tokens, together (see [`AckToken::ticket`]).
pub(crate) struct Ticket {
    slot: Arc<PartitionSlot>,
    offset: i64,
    acked: AtomicBool,
}

impl Ticket {
    pub(crate) fn new(slot: Arc<PartitionSlot>, offset: i64) -> Arc<Ticket> {
        Arc::new(Ticket {
            slot,
            offset,
            acked: AtomicBool::new(false),
        })
    }

    pub(crate) fn settle(&self) {
        self.acked.store(true, Ordering::Relaxed);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.acked.load(Ordering::Relaxed) && !self.slot.is_revoked() {
            self.slot.abandon(self.offset);
        }
    }
}

impl AckToken {
    pub(crate) fn new(slot: Arc<PartitionSlot>, offset: i64) -> Self {
        AckToken {
            slot,
            offset,
            ticket: None,
        }
    }

    /// Marks the record as processed.
    pub fn ack(self) -> AckStatus {
        self.ack_ref()
    }

    pub(crate) fn ack_ref(&self) -> AckStatus {
        if let Some(t) = &self.ticket {
            t.settle();
        }
        let status = self.slot.ack(self.offset);
        let signal = &self.slot.signal;
        let m = &signal.metrics;
        match status {
            AckStatus::Recorded => signal.on_acked(),
            AckStatus::Stale => Metrics::inc(&m.acks_stale),
            AckStatus::Duplicate => Metrics::inc(&m.acks_duplicate),
            AckStatus::Unknown => Metrics::inc(&m.acks_unknown),
        }
        status
    }

    /// Topic of the record.
    pub fn topic(&self) -> &str {
        &self.slot.tp.topic
    }

    /// Partition of the record.
    pub fn partition(&self) -> i32 {
        self.slot.tp.partition
    }

    /// Offset of the record.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// The assignment epoch the record was delivered in.
    pub fn epoch(&self) -> u64 {
        self.slot.epoch
    }

    /// An offset below which every record this consumer received of the
    /// partition in this assignment is acked (its commit point), else the
    /// first record it received (nothing before it was handed out: it was
    /// done before, or is no record). For a store's floor.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn progress_floor(&self) -> i64 {
        let view = self.slot.view();
        view.commit_point
            .or(view.first_unacked)
            .unwrap_or(self.offset)
            .min(self.offset)
    }
}

impl fmt::Debug for AckToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckToken")
            .field("topic", &&*self.slot.tp.topic)
            .field("partition", &self.slot.tp.partition)
            .field("offset", &self.offset)
            .field("epoch", &self.slot.epoch)
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    /// An assignment whose rings are recorded.
    pub(crate) fn assignment(
        async_commits: bool,
        commit_every: Option<u64>,
    ) -> (Assignment, Arc<StdMutex<Vec<Ring>>>) {
        let rings = Arc::new(StdMutex::new(Vec::new()));
        let r = rings.clone();
        let signal = AckSignal::new(
            Arc::new(Metrics::default()),
            async_commits,
            commit_every,
            Box::new(move |ring| r.lock().unwrap().push(ring)),
        );
        (Assignment::new(Arc::new(signal)), rings)
    }

    #[test]
    fn deliver_run_refuses_non_increasing_offsets_and_revoked_slots() {
        let (a, _) = assignment(false, None);
        let slot = a.assign("t", 0);
        let mut refused = Vec::new();
        slot.deliver_run([5, 6, 6, 4, 9].into_iter(), |i| refused.push(i));
        assert_eq!(refused, vec![2, 3]);
        assert_eq!(
            slot.view(),
            SlotView {
                commit_point: None,
                first_unacked: Some(5),
                outstanding: 3
            }
        );
        a.revoke_slot(&slot);
        refused.clear();
        slot.deliver_run([10, 11].into_iter(), |i| refused.push(i));
        assert_eq!(refused, vec![0, 1], "a revoked slot registers nothing");
    }

    #[test]
    fn count_trigger_rings_once_per_cycle_and_closing_acks_ring() {
        let (a, rings) = assignment(false, Some(2));
        let slot = a.assign("t", 0);
        for o in 0..6 {
            slot.deliver(o);
        }
        for o in 0..4 {
            AckToken::new(slot.clone(), o).ack();
        }
        assert_eq!(
            *rings.lock().unwrap(),
            vec![Ring::CommitDue],
            "once until reset"
        );
        a.signal().reset();
        AckToken::new(slot.clone(), 4).ack();
        AckToken::new(slot.clone(), 5).ack();
        assert_eq!(rings.lock().unwrap().len(), 2);
        let other = a.assign("t", 1);
        other.deliver(0);
        other.begin_close();
        AckToken::new(other.clone(), 0).ack();
        assert_eq!(rings.lock().unwrap().last(), Some(&Ring::Acked));
        // a new assignment of the same partition makes old tokens stale
        let again = a.assign("t", 1);
        assert!(again.epoch > other.epoch);
        assert_eq!(AckToken::new(other, 0).ack(), AckStatus::Stale);
    }

    #[test]
    fn abandoned_records_are_counted_unless_acked_or_their_partition_is_going() {
        let (a, _) = assignment(false, None);
        let slot = a.assign("t", 0);
        slot.deliver_run([0, 1, 2].into_iter(), |_| {});
        AckToken::new(slot.clone(), 0).ack();
        slot.abandon(0); // acked: not abandoned
        slot.abandon(1);
        slot.abandon(1); // listed once
        assert_eq!(slot.abandoned(), vec![1]);
        slot.begin_close(); // the revoke started
        slot.abandon(2);
        assert_eq!(slot.abandoned(), vec![1]);
        assert_eq!(slot.signal.metrics.snapshot().records_abandoned, 1);
        AckToken::new(slot.clone(), 1).ack();
        assert!(slot.abandoned().is_empty(), "acked later by coordinates");
    }
}
