//! Where offsets that could not be committed go.
//!
//! Every offset the guard gives up on (retries exhausted, a fatal error, a lost
//! partition, the shutdown deadline) is handed to a [`FailureSink`] as a
//! [`FailedOffset`]. [`MemorySink`] keeps them in memory; the durable
//! failed-offset log implements the same trait.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rdkafka::error::RDKafkaErrorCode;

/// Why an offset was given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureReason {
    /// Retriable errors outlasted the retry policy.
    RetriesExhausted,
    /// The broker answered with an error that retrying cannot fix.
    Fatal,
    /// The partition was lost (session timeout, fenced) before the commit.
    Lost,
    /// The shutdown deadline passed before the commit landed.
    ShutdownDeadline,
    /// A rebalance took the partition away while its commit was deferred.
    RebalanceDropped,
}

impl FailureReason {
    /// The stable snake_case name used in logs and files.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureReason::RetriesExhausted => "retries_exhausted",
            FailureReason::Fatal => "fatal",
            FailureReason::Lost => "lost",
            FailureReason::ShutdownDeadline => "shutdown_deadline",
            FailureReason::RebalanceDropped => "rebalance_dropped",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One offset that was not committed.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedOffset {
    /// When the guard gave up.
    pub time: SystemTime,
    /// The consumer group.
    pub group_id: String,
    /// The group member id, when known.
    pub member_id: Option<String>,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The commit offset (the next record to read).
    pub offset: i64,
    /// Why it was given up on.
    pub reason: FailureReason,
    /// The Kafka error code of the last attempt, when there was one.
    pub error_code: Option<RDKafkaErrorCode>,
    /// A readable error message.
    pub error_message: String,
    /// Commit attempts made.
    pub attempts: u32,
    /// Time spent from the first attempt until giving up.
    pub elapsed: Duration,
}

/// Receives offsets the guard gave up on. Called from the guard's own threads,
/// never from the async executor; implementations must not block for long.
pub trait FailureSink: Send + Sync + 'static {
    /// Records one failed offset.
    fn record(&self, failure: FailedOffset);
}

/// A [`FailureSink`] that keeps records in memory. Cloning shares the records.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    records: Arc<Mutex<Vec<FailedOffset>>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything recorded so far, oldest first.
    pub fn records(&self) -> Vec<FailedOffset> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl FailureSink for MemorySink {
    fn record(&self, failure: FailedOffset) {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(failure);
    }
}

impl<S: FailureSink> FailureSink for Arc<S> {
    fn record(&self, failure: FailedOffset) {
        (**self).record(failure)
    }
}
