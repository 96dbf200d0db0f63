//! Kafka coordinates: a topic-partition, and an offset committed for one.

use std::fmt;
use std::sync::Arc;

/// A topic and a partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl TopicPartition {
    pub(crate) fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// An offset that was committed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub struct CommittedOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The committed offset: the next record to read.
    pub offset: i64,
}

impl CommittedOffset {
    /// `offset` committed for `topic`/`partition` (e.g. to compare with a
    /// [`ShutdownReport`](crate::ShutdownReport) in a test).
    pub fn new(topic: impl Into<String>, partition: i32, offset: i64) -> Self {
        CommittedOffset {
            topic: topic.into(),
            partition,
            offset,
        }
    }

    pub(crate) fn of(tp: &TopicPartition, offset: i64) -> Self {
        CommittedOffset {
            topic: tp.topic.to_string(),
            partition: tp.partition,
            offset,
        }
    }
}

/// An offset kept across a rebalance and dropped at an assign because its
/// partition went to another member (see [`Assigned::dropped`](crate::Assigned::dropped)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DroppedOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The acked offset whose commit the broker refused.
    pub offset: i64,
    /// The last offset this consumer committed for the partition, if any.
    pub committed_before: Option<i64>,
}
