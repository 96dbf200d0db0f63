//! What others may read of the worker's state: the offsets committed per
//! partition and the batch in flight. Only the worker writes it.

use std::collections::HashMap;
use std::sync::RwLock;

use super::queue::Entry;
use crate::partition::{CommittedOffset, TopicPartition};

#[derive(Debug, Default)]
pub(crate) struct CommitView {
    state: RwLock<ViewState>,
}

#[derive(Debug, Default)]
struct ViewState {
    committed: HashMap<TopicPartition, i64>,
    in_flight: Vec<Entry>,
    /// Per partition: its first un-acked offset as last sampled, and since when.
    unacked_since: HashMap<TopicPartition, (i64, std::time::Instant)>,
}

impl CommitView {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ViewState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, ViewState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The worker sends `batch`.
    pub(super) fn sending(&self, batch: &[Entry]) {
        let mut s = self.write();
        s.in_flight.clear();
        s.in_flight.extend_from_slice(batch);
    }

    /// The batch in flight ended; `landed` is what it committed.
    pub(super) fn settled(&self, landed: &[Entry]) {
        let mut s = self.write();
        s.in_flight.clear();
        for e in landed {
            let c = s.committed.entry(e.tp.clone()).or_insert(e.offset);
            *c = (*c).max(e.offset);
        }
    }

    /// The worker's latest sample of the first un-acked records.
    pub(super) fn set_unacked_since(
        &self,
        since: HashMap<TopicPartition, (i64, std::time::Instant)>,
    ) {
        self.write().unacked_since = since;
    }

    /// Since when `offset` has been `tp`'s first un-acked record, if the
    /// last sample says so.
    pub(crate) fn unacked_since(
        &self,
        tp: &TopicPartition,
        offset: i64,
    ) -> Option<std::time::Instant> {
        match self.read().unacked_since.get(tp) {
            Some(&(o, since)) if o == offset => Some(since),
            _ => None,
        }
    }

    /// The offset this consumer last committed for a partition.
    pub(crate) fn committed(&self, tp: &TopicPartition) -> Option<i64> {
        self.read().committed.get(tp).copied()
    }

    /// Every partition with a committed offset, sorted.
    pub(crate) fn all_committed(&self) -> Vec<CommittedOffset> {
        let mut v: Vec<_> = self
            .read()
            .committed
            .iter()
            .map(|(tp, o)| CommittedOffset::of(tp, *o))
            .collect();
        v.sort();
        v
    }

    /// The offsets in flight.
    pub(crate) fn in_flight(&self) -> Vec<(TopicPartition, i64)> {
        self.read()
            .in_flight
            .iter()
            .map(|e| (e.tp.clone(), e.offset))
            .collect()
    }
}
