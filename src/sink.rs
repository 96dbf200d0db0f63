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
    /// The partition was lost (session timeout, fenced, stale generation)
    /// before the commit, and was not assigned back to this member (at the
    /// next assign, or before the consumer stopped).
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
#[non_exhaustive]
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
#[non_exhaustive]
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

impl FailedOffset {
    /// A failed offset with the fields every record has. The others start
    /// empty: `time` is now, no member id, no error code, an empty message,
    /// 0 attempts and no time elapsed; set them with the `with_*` methods or
    /// through the public fields. Useful to test a custom [`FailureSink`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use offset_guard::{FailedOffset, FailureReason};
    /// use rdkafka::error::RDKafkaErrorCode;
    ///
    /// let f = FailedOffset::new("billing", "orders", 0, 42, FailureReason::RetriesExhausted)
    ///     .with_error_code(RDKafkaErrorCode::RequestTimedOut)
    ///     .with_error_message("Broker: Request timed out")
    ///     .with_attempts(5)
    ///     .with_elapsed(Duration::from_secs(9));
    /// assert_eq!(f.offset, 42);
    /// ```
    pub fn new(
        group_id: impl Into<String>,
        topic: impl Into<String>,
        partition: i32,
        offset: i64,
        reason: FailureReason,
    ) -> Self {
        FailedOffset {
            time: SystemTime::now(),
            group_id: group_id.into(),
            member_id: None,
            topic: topic.into(),
            partition,
            offset,
            reason,
            error_code: None,
            error_message: String::new(),
            attempts: 0,
            elapsed: Duration::ZERO,
        }
    }

    /// Sets when the guard gave up.
    pub fn with_time(mut self, time: SystemTime) -> Self {
        self.time = time;
        self
    }

    /// Sets the group member id.
    pub fn with_member_id(mut self, member_id: impl Into<String>) -> Self {
        self.member_id = Some(member_id.into());
        self
    }

    /// Sets the Kafka error code of the last attempt.
    pub fn with_error_code(mut self, code: RDKafkaErrorCode) -> Self {
        self.error_code = Some(code);
        self
    }

    /// Sets the readable error message.
    pub fn with_error_message(mut self, message: impl Into<String>) -> Self {
        self.error_message = message.into();
        self
    }

    /// Sets the number of commit attempts made.
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// Sets the time spent from the first attempt until giving up.
    pub fn with_elapsed(mut self, elapsed: Duration) -> Self {
        self.elapsed = elapsed;
        self
    }
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
