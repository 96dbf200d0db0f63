//! The partitions this consumer owns, one slot per assignment (epoch), and the
//! ack token that points straight at its slot.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::consumer::Inner;
use crate::stats::Metrics;
use crate::tracker::{AckOutcome, PartitionTracker};

/// A topic and a partition.
pub(crate) type TopicPartition = (Arc<str>, i32);

/// Tracking state of one assignment of one partition.
pub(crate) struct PartitionSlot {
    /// Shared guard state, reached by acks without another reference count.
    /// (The cycle Inner -> Assignment -> slot -> Inner is broken by `revoke_all`.)
    pub inner: Arc<Inner>,
    pub topic: Arc<str>,
    pub partition: i32,
    /// Unique per assignment; a partition assigned again gets a new, higher epoch.
    pub epoch: u64,
    state: Mutex<SlotState>,
    /// Mirror of `SlotState::revoked` for a lock-free check on the delivery path.
    revoked_hint: AtomicBool,
    /// The revoke of this assignment started: `recv` hands out no more of its
    /// records, and acks wake the worker waiting out the revoke grace period.
    closing: AtomicBool,
    /// The highest offset handed to the application by `recv` (-1: none yet).
    handed_out: AtomicI64,
}

struct SlotState {
    tracker: PartitionTracker,
    revoked: bool,
}

impl PartitionSlot {
    fn new(inner: Arc<Inner>, topic: Arc<str>, partition: i32, epoch: u64) -> Self {
        PartitionSlot {
            inner,
            topic,
            partition,
            epoch,
            state: Mutex::new(SlotState {
                tracker: PartitionTracker::new(),
                revoked: false,
            }),
            revoked_hint: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            handed_out: AtomicI64::new(-1),
        }
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

    /// Registers a run of delivered offsets under one lock (the poll thread
    /// hands records over in batches). Calls `refused(i)` for the index of
    /// every offset not registered (slot revoked, or not increasing).
    pub(crate) fn deliver_run(
        &self,
        offsets: impl Iterator<Item = i64>,
        mut refused: impl FnMut(usize),
    ) {
        let mut s = self.lock();
        for (i, offset) in offsets.enumerate() {
            if s.revoked || !s.tracker.deliver(offset) {
                refused(i);
            }
        }
    }

    pub(crate) fn ack(&self, offset: i64) -> AckStatus {
        let status = {
            let mut s = self.lock();
            if s.revoked {
                return AckStatus::Stale;
            }
            match s.tracker.ack(offset) {
                AckOutcome::Recorded => AckStatus::Recorded,
                AckOutcome::Duplicate => AckStatus::Duplicate,
                AckOutcome::Unknown => AckStatus::Unknown,
            }
        };
        if self.closing.load(Ordering::Relaxed) {
            // The worker waits for in-flight acks of this partition (revoke
            // grace period) under the shared lock: take it so the wake-up
            // cannot fall between its check and its wait.
            drop(self.inner.lock_core());
            self.inner.notify();
        }
        status
    }

    /// `recv` is about to hand out `offset`. False if the revoke of this
    /// assignment started: the record is skipped instead.
    #[inline]
    pub(crate) fn hand_out(&self, offset: i64) -> bool {
        // Store first, then check: a revoke that starts concurrently either sees
        // this offset as handed out (and waits for its ack) or is seen here.
        self.handed_out.store(offset, Ordering::SeqCst);
        !self.closing.load(Ordering::SeqCst)
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

    pub(crate) fn commit_point(&self) -> Option<i64> {
        let s = self.lock();
        if s.revoked {
            None
        } else {
            s.tracker.commit_point()
        }
    }

    pub(crate) fn view(&self) -> (Option<i64>, Option<i64>, usize) {
        let s = self.lock();
        (
            s.tracker.commit_point(),
            s.tracker.first_unacked(),
            s.tracker.outstanding(),
        )
    }

    /// Ends this assignment: later acks are stale. Returns the final commit point.
    pub(crate) fn revoke(&self) -> Option<i64> {
        let mut s = self.lock();
        s.revoked = true;
        self.closing.store(true, Ordering::SeqCst);
        self.revoked_hint.store(true, Ordering::Release);
        s.tracker.commit_point()
    }

    pub(crate) fn is_revoked(&self) -> bool {
        self.revoked_hint.load(Ordering::Acquire)
    }

    pub(crate) fn key(&self) -> TopicPartition {
        (self.topic.clone(), self.partition)
    }
}

/// Live slots by topic, then partition.
type SlotMap = HashMap<Arc<str>, HashMap<i32, Arc<PartitionSlot>>>;

/// All live slots.
#[derive(Default)]
pub(crate) struct Assignment {
    slots: RwLock<SlotMap>,
    next_epoch: AtomicU64,
}

impl Assignment {
    /// Starts a new assignment of a partition (a new epoch), ending any previous one.
    pub(crate) fn assign(
        &self,
        inner: &Arc<Inner>,
        topic: &str,
        partition: i32,
    ) -> Arc<PartitionSlot> {
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        let topic_arc: Arc<str> = match slots.get_key_value(topic) {
            Some((k, _)) => k.clone(),
            None => Arc::from(topic),
        };
        let slot = Arc::new(PartitionSlot::new(
            inner.clone(),
            topic_arc.clone(),
            partition,
            epoch,
        ));
        if let Some(old) = slots
            .entry(topic_arc)
            .or_default()
            .insert(partition, slot.clone())
        {
            old.revoke();
        }
        slot
    }

    /// Ends the assignment of a partition; returns its slot if it was owned.
    pub(crate) fn revoke(&self, topic: &str, partition: i32) -> Option<Arc<PartitionSlot>> {
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        let parts = slots.get_mut(topic)?;
        let slot = parts.remove(&partition)?;
        if parts.is_empty() {
            slots.remove(topic);
        }
        slot.revoke();
        Some(slot)
    }

    /// Ends this exact assignment (if it is still the current one) and returns
    /// its final commit point.
    pub(crate) fn revoke_slot(&self, slot: &Arc<PartitionSlot>) -> Option<i64> {
        {
            let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
            if let Some(parts) = slots.get_mut(&*slot.topic) {
                if parts
                    .get(&slot.partition)
                    .is_some_and(|s| Arc::ptr_eq(s, slot))
                {
                    parts.remove(&slot.partition);
                }
                if parts.is_empty() {
                    slots.remove(&*slot.topic);
                }
            }
        }
        slot.revoke()
    }

    pub(crate) fn get(&self, topic: &str, partition: i32) -> Option<Arc<PartitionSlot>> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots.get(topic)?.get(&partition).cloned()
    }

    /// The slot for a delivered record, creating one when the partition was
    /// assigned without a rebalance callback (manual `assign`).
    pub(crate) fn get_or_assign(
        &self,
        inner: &Arc<Inner>,
        topic: &str,
        partition: i32,
    ) -> Arc<PartitionSlot> {
        match self.get(topic, partition) {
            Some(s) => s,
            None => self.assign(inner, topic, partition),
        }
    }

    /// The current epoch of a partition, if owned.
    pub(crate) fn epoch(&self, topic: &str, partition: i32) -> Option<u64> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots.get(topic)?.get(&partition).map(|s| s.epoch)
    }

    pub(crate) fn all(&self) -> Vec<Arc<PartitionSlot>> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots.values().flat_map(|p| p.values().cloned()).collect()
    }

    /// Ends every assignment (shutdown).
    pub(crate) fn revoke_all(&self) -> Vec<Arc<PartitionSlot>> {
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        let all: Vec<_> = slots.drain().flat_map(|(_, p)| p.into_values()).collect();
        for s in &all {
            s.revoke();
        }
        all
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
}

impl AckToken {
    /// Marks the record as processed.
    pub fn ack(self) -> AckStatus {
        self.ack_ref()
    }

    pub(crate) fn ack_ref(&self) -> AckStatus {
        let status = self.slot.ack(self.offset);
        let inner = &self.slot.inner;
        let m = &inner.metrics;
        match status {
            AckStatus::Recorded => inner.on_acked(),
            AckStatus::Stale => Metrics::inc(&m.acks_stale),
            AckStatus::Duplicate => Metrics::inc(&m.acks_duplicate),
            AckStatus::Unknown => Metrics::inc(&m.acks_unknown),
        }
        status
    }

    /// Topic of the record.
    pub fn topic(&self) -> &str {
        &self.slot.topic
    }

    /// Partition of the record.
    pub fn partition(&self) -> i32 {
        self.slot.partition
    }

    /// Offset of the record.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// The assignment epoch the record was delivered in.
    pub fn epoch(&self) -> u64 {
        self.slot.epoch
    }
}

impl fmt::Debug for AckToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckToken")
            .field("topic", &&*self.slot.topic)
            .field("partition", &self.slot.partition)
            .field("offset", &self.offset)
            .field("epoch", &self.slot.epoch)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::Config;

    fn inner() -> Arc<Inner> {
        Arc::new(Inner::new(Config::with_group("g"), None))
    }

    #[test]
    fn deliver_run_refuses_non_increasing_offsets_and_revoked_slots() {
        let inner = inner();
        let slot = inner.assignment.assign(&inner, "t", 0);
        let mut refused = Vec::new();
        slot.deliver_run([5, 6, 6, 4, 9].into_iter(), |i| refused.push(i));
        assert_eq!(refused, vec![2, 3]);
        assert_eq!(slot.view(), (None, Some(5), 3));
        slot.revoke();
        refused.clear();
        slot.deliver_run([10, 11].into_iter(), |i| refused.push(i));
        assert_eq!(refused, vec![0, 1], "a revoked slot registers nothing");
        inner.assignment.revoke_all();
    }
}
