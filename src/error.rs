//! Error types.

use std::fmt;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::threads::GuardThread;

/// A retry policy parameter is out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvalidBackoff {
    /// The [`RetryPolicy`](crate::RetryPolicy) setter at fault.
    pub setting: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for InvalidBackoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid retry policy: {}: {}", self.setting, self.reason)
    }
}

impl std::error::Error for InvalidBackoff {}

/// Why [`GuardBuilder::build`](crate::GuardBuilder::build) refused the configuration.
/// Every variant names the setting at fault.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// `group.id` is not set in the client config; offsets can only be committed for a group.
    MissingGroupId,
    /// A client config key that contradicts the guard was set by the user.
    ConflictingSetting {
        /// The librdkafka key, e.g. `enable.auto.commit`.
        key: &'static str,
        /// The value the user gave.
        value: String,
        /// Why the guard cannot work with it.
        reason: &'static str,
    },
    /// A duration setter got a value that cannot work.
    InvalidDuration {
        /// The builder setter, e.g. `commit_interval`.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A count setter got a value that cannot work.
    InvalidCount {
        /// The builder setter, e.g. `commit_every`.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The retry policy is inconsistent.
    InvalidBackoff(InvalidBackoff),
    /// A setting needs another one that is not set.
    MissingDependency {
        /// The builder setter that was used, e.g. `replay_failed_offsets`.
        setting: &'static str,
        /// The setter it needs, e.g. `failed_offset_log`.
        requires: &'static str,
    },
    /// The failed-offset log could not be opened (`failed_offset_log`).
    FailedOffsetLog(crate::failure_log::LogError),
    /// rdkafka refused to create the consumer.
    Kafka(KafkaError),
    /// The operating system refused to start one of the guard's threads.
    SpawnThread {
        /// Which thread.
        thread: GuardThread,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl BuildError {
    /// The builder setter or client config key at fault, when there is one.
    pub fn setting(&self) -> Option<&'static str> {
        match self {
            BuildError::MissingGroupId => Some("group.id"),
            BuildError::ConflictingSetting { key, .. } => Some(key),
            BuildError::InvalidDuration { setting, .. }
            | BuildError::InvalidCount { setting, .. } => Some(setting),
            BuildError::InvalidBackoff(e) => Some(e.setting),
            BuildError::FailedOffsetLog(_) => Some("failed_offset_log"),
            BuildError::MissingDependency { setting, .. } => Some(setting),
            BuildError::Kafka(_) | BuildError::SpawnThread { .. } => None,
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::MissingGroupId => {
                write!(
                    f,
                    "group.id is not set: offset-guard commits offsets for a consumer group"
                )
            }
            BuildError::ConflictingSetting { key, value, reason } => {
                write!(f, "{key}={value} conflicts with offset-guard: {reason}")
            }
            BuildError::InvalidDuration { setting, reason } => write!(f, "{setting}: {reason}"),
            BuildError::InvalidCount { setting, reason } => write!(f, "{setting}: {reason}"),
            BuildError::InvalidBackoff(e) => write!(f, "retry: {e}"),
            BuildError::FailedOffsetLog(e) => write!(f, "failed_offset_log: {e}"),
            BuildError::MissingDependency { setting, requires } => {
                write!(f, "{setting} needs {requires} to be set")
            }
            BuildError::Kafka(e) => write!(f, "creating the consumer failed: {e}"),
            BuildError::SpawnThread { thread, source } => {
                write!(f, "starting the {thread} thread failed: {source}")
            }
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::InvalidBackoff(e) => Some(e),
            BuildError::Kafka(e) => Some(e),
            BuildError::FailedOffsetLog(e) => Some(e),
            BuildError::SpawnThread { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<InvalidBackoff> for BuildError {
    fn from(e: InvalidBackoff) -> Self {
        BuildError::InvalidBackoff(e)
    }
}

/// Errors of a running [`GuardedConsumer`](crate::GuardedConsumer).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// An error from rdkafka / the broker.
    Kafka(KafkaError),
    /// An ack, commit, pause or resume names a partition this consumer does
    /// not own (or no longer owns).
    NotOwned {
        /// Topic of the ack.
        topic: String,
        /// Partition of the ack.
        partition: i32,
    },
    /// A seek to an offset that is not a read position: `Offset::Invalid`,
    /// `Offset::Stored`, or a negative `Offset::Offset(n)` / `Offset::OffsetTail(n)`.
    /// Nothing was changed.
    InvalidSeek {
        /// Topic of the seek.
        topic: String,
        /// Partition of the seek.
        partition: i32,
        /// The offset asked for.
        offset: rdkafka::Offset,
    },
    /// The consumer is shutting down or was shut down.
    ShutDown,
    /// A commit failed for good; the offsets were handed to the failure sink.
    CommitFailed {
        /// The Kafka error code of the last attempt.
        code: Option<RDKafkaErrorCode>,
        /// Attempts made.
        attempts: u32,
    },
    /// The consumer hit an error it cannot continue from (e.g. FENCED_INSTANCE_ID).
    Fatal(KafkaError),
    /// Authentication or authorization failed (`_AUTHENTICATION`,
    /// SASL_AUTHENTICATION_FAILED, TOPIC_/GROUP_/CLUSTER_AUTHORIZATION_FAILED).
    /// Returned by [`recv`](crate::GuardedConsumer::recv) when the consumer
    /// reports it; the consumer keeps running and librdkafka keeps retrying, so
    /// once the credentials or ACLs are fixed, records flow again. The same
    /// error is returned again at most once per
    /// [`brokers_unreachable_after`](crate::GuardBuilder::brokers_unreachable_after).
    AuthFailed {
        /// The Kafka error code.
        code: RDKafkaErrorCode,
        /// The subscribed topics the failure is about, when the guard could
        /// tell (TOPIC_AUTHORIZATION_FAILED); else empty.
        topics: Vec<String>,
        /// librdkafka's description of the error, when it gave one.
        reason: Option<String>,
    },
    /// A subscribed topic does not exist (UNKNOWN_TOPIC_OR_PART,
    /// `_UNKNOWN_TOPIC`). Returned by [`recv`](crate::GuardedConsumer::recv)
    /// when the consumer reports it; the consumer keeps running, and its
    /// partitions are assigned once the topic is created and librdkafka's
    /// next metadata refresh sees it (`topic.metadata.refresh.interval.ms`,
    /// librdkafka's default 300,000 ms), followed by a rebalance.
    UnknownTopic {
        /// The Kafka error code.
        code: RDKafkaErrorCode,
        /// The subscribed topics missing from the cluster's metadata, when
        /// the guard could read it (empty when not, or for a pattern
        /// subscription).
        topics: Vec<String>,
        /// librdkafka's description of the error, when it gave one.
        reason: Option<String>,
    },
    /// No broker was reachable for `down_for` (all brokers down, the
    /// bootstrap address does not resolve, connections refused). librdkafka
    /// keeps reconnecting; records flow again by themselves once a broker is
    /// back. Returned once the outage lasted
    /// [`brokers_unreachable_after`](crate::GuardBuilder::brokers_unreachable_after),
    /// then at most once per that period while it lasts.
    BrokersUnreachable {
        /// Since when no broker is reachable, as far as the guard can tell
        /// (from librdkafka's first "all brokers down" report).
        down_for: std::time::Duration,
        /// The last transport error librdkafka reported.
        last_error: KafkaError,
    },
    /// One of the guard's threads panicked; the guard has stopped. Acked
    /// offsets not committed before are not committed (nothing past an
    /// un-acked record ever is).
    ThreadDied {
        /// Which thread.
        thread: GuardThread,
    },
}

impl Error {
    /// True for [`Error::ShutDown`].
    pub fn is_shutdown(&self) -> bool {
        matches!(self, Error::ShutDown)
    }
    /// True for errors [`recv`](crate::GuardedConsumer::recv) returns while
    /// the consumer keeps running and retrying ([`Error::AuthFailed`],
    /// [`Error::UnknownTopic`], [`Error::BrokersUnreachable`]): call `recv`
    /// again to go on.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::AuthFailed { .. }
                | Error::UnknownTopic { .. }
                | Error::BrokersUnreachable { .. }
        )
    }
    /// True when the consumer cannot continue (a fatal Kafka error, or one of
    /// the guard's threads died).
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Fatal(_) | Error::ThreadDied { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Kafka(e) => write!(f, "kafka: {e}"),
            Error::NotOwned { topic, partition } => {
                write!(
                    f,
                    "partition {topic}[{partition}] is not owned by this consumer"
                )
            }
            Error::InvalidSeek {
                topic,
                partition,
                offset,
            } => write!(
                f,
                "seek of {topic}[{partition}] to {offset:?}: not a read position \
                 (use Offset::Offset(n >= 0), Beginning, End or OffsetTail(n >= 0))"
            ),
            Error::ShutDown => write!(f, "the consumer is shut down"),
            Error::CommitFailed { code, attempts } => match code {
                Some(c) => write!(f, "commit failed after {attempts} attempt(s): {c}"),
                None => write!(f, "commit failed after {attempts} attempt(s)"),
            },
            Error::Fatal(e) => write!(f, "fatal consumer error: {e}"),
            Error::AuthFailed {
                code,
                topics,
                reason,
            } => {
                if topics.is_empty() {
                    write!(f, "authentication or authorization failed: {code}")?;
                } else {
                    write!(f, "authorization failed for {}: {code}", topics.join(", "))?;
                }
                write_reason(f, reason)
            }
            Error::UnknownTopic {
                code,
                topics,
                reason,
            } => {
                if topics.is_empty() {
                    write!(f, "a subscribed topic does not exist: {code}")?;
                } else {
                    write!(f, "subscribed topic(s) do not exist: {}", topics.join(", "))?;
                }
                write_reason(f, reason)
            }
            Error::BrokersUnreachable {
                down_for,
                last_error,
            } => write!(
                f,
                "no broker reachable for {:.1} s (last error: {last_error}); still retrying",
                down_for.as_secs_f64()
            ),
            Error::ThreadDied { thread } => {
                write!(f, "the guard's {thread} thread panicked; the guard stopped")
            }
        }
    }
}

fn write_reason(f: &mut fmt::Formatter<'_>, reason: &Option<String>) -> fmt::Result {
    match reason {
        Some(r) => write!(f, " ({r})"),
        None => Ok(()),
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Kafka(e) | Error::Fatal(e) => Some(e),
            Error::BrokersUnreachable { last_error, .. } => Some(last_error),
            _ => None,
        }
    }
}

impl From<KafkaError> for Error {
    fn from(e: KafkaError) -> Self {
        Error::Kafka(e)
    }
}
