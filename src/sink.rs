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

/// The error returned when a string is not one of [`FailureReason`]'s names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFailureReason(pub String);

impl fmt::Display for UnknownFailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown failure reason {:?}", self.0)
    }
}

impl std::error::Error for UnknownFailureReason {}

impl std::str::FromStr for FailureReason {
    type Err = UnknownFailureReason;

    /// Parses the snake_case name returned by [`FailureReason::as_str`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "retries_exhausted" => FailureReason::RetriesExhausted,
            "fatal" => FailureReason::Fatal,
            "lost" => FailureReason::Lost,
            "shutdown_deadline" => FailureReason::ShutdownDeadline,
            "rebalance_dropped" => FailureReason::RebalanceDropped,
            other => return Err(UnknownFailureReason(other.to_owned())),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_round_trip() {
        for r in [
            FailureReason::RetriesExhausted,
            FailureReason::Fatal,
            FailureReason::Lost,
            FailureReason::ShutdownDeadline,
            FailureReason::RebalanceDropped,
        ] {
            assert_eq!(r.as_str().parse::<FailureReason>(), Ok(r));
        }
        assert!("Fatal".parse::<FailureReason>().is_err());
    }
}
