//! Retry policy for offset commits and the classification of commit errors.
//!
//! The exponential backoff is built on the [`backoff`] crate, which is
//! unmaintained (RUSTSEC-2025-0012); it is used only inside this file so that a
//! swap touches nothing else.

use std::time::{Duration, Instant};

use backoff::backoff::Backoff as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::deadline::Deadline;
use crate::error::InvalidBackoff;

/// The longest single delay between two attempts: longer intervals (up to
/// `Duration::MAX`) are accepted and treated as this (the backoff arithmetic
/// works in nanoseconds and must not overflow).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(24 * 3600);

/// How failed commits are retried: exponential backoff with jitter, bounded by a
/// number of attempts and by total time.
///
/// ```
/// use std::time::Duration;
/// use offset_guard::RetryPolicy;
///
/// let policy = RetryPolicy::exponential()
///     .initial_interval(Duration::from_millis(50))
///     .max_interval(Duration::from_secs(2))
///     .max_attempts(8)
///     .max_elapsed(Duration::from_secs(20));
/// assert!(policy.validate().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    initial_interval: Duration,
    max_interval: Duration,
    multiplier: f64,
    randomization_factor: f64,
    max_attempts: u32,
    max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::exponential()
    }
}

impl RetryPolicy {
    /// Exponential backoff with the defaults documented on each setter.
    pub fn exponential() -> Self {
        RetryPolicy {
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(5),
            multiplier: 2.0,
            randomization_factor: 0.5,
            max_attempts: 10,
            max_elapsed: Duration::from_secs(30),
        }
    }

    /// No retries: every error is final after the first attempt.
    pub fn none() -> Self {
        Self::exponential().max_attempts(1)
    }

    /// Delay before the first retry. Default: 100 ms. Must be non-zero;
    /// delays above [`MAX_RETRY_DELAY`] (one day) are treated as one day.
    #[must_use]
    pub fn initial_interval(mut self, d: Duration) -> Self {
        self.initial_interval = d;
        self
    }

    /// Upper bound of a single delay. Default: 5 s. Must be >= the initial interval.
    #[must_use]
    pub fn max_interval(mut self, d: Duration) -> Self {
        self.max_interval = d;
        self
    }

    /// Growth factor between delays. Default: 2.0. Must be >= 1.0.
    #[must_use]
    pub fn multiplier(mut self, m: f64) -> Self {
        self.multiplier = m;
        self
    }

    /// Jitter: each delay is drawn from `delay * (1 ± factor)`. Default: 0.5. Must be in `[0, 1)`.
    #[must_use]
    pub fn jitter(mut self, factor: f64) -> Self {
        self.randomization_factor = factor;
        self
    }

    /// Attempts in total, the first one included. Default: 10. Must be >= 1.
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Total time from the first attempt after which no retry starts. Default:
    /// 30 s. Must be non-zero; `Duration::MAX` means no time bound (attempts
    /// still bound the retries).
    #[must_use]
    pub fn max_elapsed(mut self, d: Duration) -> Self {
        self.max_elapsed = d;
        self
    }

    /// The configured attempt bound.
    pub fn attempts_bound(&self) -> u32 {
        self.max_attempts
    }

    /// Checks the parameters, naming the first one that is wrong.
    pub fn validate(&self) -> Result<(), InvalidBackoff> {
        let bad = |setting: &'static str, reason: String| Err(InvalidBackoff { setting, reason });
        if self.initial_interval.is_zero() {
            return bad("initial_interval", "must be greater than zero".into());
        }
        if self.max_interval < self.initial_interval {
            return bad(
                "max_interval",
                format!(
                    "{:?} is below initial_interval {:?}",
                    self.max_interval, self.initial_interval
                ),
            );
        }
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            return bad(
                "multiplier",
                format!("{} must be a finite number >= 1.0", self.multiplier),
            );
        }
        if !(0.0..1.0).contains(&self.randomization_factor) {
            return bad(
                "jitter",
                format!("{} must be in [0, 1)", self.randomization_factor),
            );
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1".into());
        }
        if self.max_elapsed.is_zero() {
            return bad("max_elapsed", "must be greater than zero".into());
        }
        Ok(())
    }

    /// Starts the backoff for one commit.
    pub(crate) fn start(&self) -> RetryState {
        let inner = backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(self.initial_interval.min(MAX_RETRY_DELAY))
            .with_max_interval(self.max_interval.min(MAX_RETRY_DELAY))
            .with_multiplier(self.multiplier)
            .with_randomization_factor(self.randomization_factor)
            .with_max_elapsed_time(None) // bounded by `deadline` below
            .build();
        RetryState {
            inner,
            attempts: 0,
            max_attempts: self.max_attempts,
            deadline: Deadline::after(self.max_elapsed),
        }
    }
}

/// The running backoff of one commit.
pub(crate) struct RetryState {
    inner: backoff::ExponentialBackoff,
    attempts: u32,
    max_attempts: u32,
    deadline: Deadline,
}

impl RetryState {
    /// Counts an attempt that is about to be made.
    pub(crate) fn attempt(&mut self) -> u32 {
        self.attempts += 1;
        self.attempts
    }

    #[cfg(test)]
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// A deferral (the group was rebalancing) does not count against the
    /// attempt budget: takes back the attempt just counted.
    pub(crate) fn forgive(&mut self) {
        self.attempts = self.attempts.saturating_sub(1);
    }

    /// Until when retries and deferrals may go on (the policy's `max_elapsed`).
    pub(crate) fn time_bound(&self) -> Deadline {
        self.deadline
    }

    /// The delay before the next attempt, or `None` when the budget is spent.
    /// The delay never runs past the time bound.
    pub(crate) fn next_delay(&mut self) -> Option<Duration> {
        if self.attempts >= self.max_attempts {
            return None;
        }
        let now = Instant::now();
        if self.deadline.is_past(now) {
            return None;
        }
        let d = self.inner.next_backoff()?;
        Some(match self.deadline.remaining(now) {
            Some(left) => d.min(left),
            None => d,
        })
    }
}

/// What to do about a commit error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Transient: retry with backoff.
    Retry,
    /// The group is rebalancing: keep the offsets and commit them again, for the
    /// partitions still owned, once the rebalance is over.
    DeferUntilRebalanced,
    /// The commit belongs to an old generation or membership: not retried.
    /// The offsets are kept to the next assign, which commits them if the
    /// partition comes back to this member (and they are ahead of the group's
    /// committed offset) or records them as `rebalance_dropped`; librdkafka
    /// usually treats these errors as the loss of the assignment, and a lost
    /// assignment's offsets are recorded as `lost`, never committed.
    Stale,
    /// Nothing to commit: a success.
    NoOp,
    /// Will not succeed by retrying: record the offsets as failed.
    Fatal,
    /// The topic or partition is unknown: retry a bounded number of times (3
    /// attempts), then give the offsets up: recorded with reason `fatal` and
    /// the error code, and not sent again.
    UnknownPartition,
}

/// Classifies an error returned by an offset commit.
pub fn classify(err: &KafkaError) -> ErrorClass {
    match err.rdkafka_error_code() {
        Some(code) => classify_code(code),
        None => ErrorClass::Fatal,
    }
}

/// Classifies a Kafka error code as returned by an offset commit.
pub fn classify_code(code: RDKafkaErrorCode) -> ErrorClass {
    use RDKafkaErrorCode as C;
    match code {
        C::CoordinatorLoadInProgress
        | C::CoordinatorNotAvailable
        | C::NotCoordinator
        | C::RequestTimedOut
        | C::NetworkException
        | C::BrokerTransportFailure
        | C::AllBrokersDown
        | C::WaitingForCoordinator
        | C::OperationTimedOut
        | C::TimedOutQueue
        | C::BrokerDestroy
        | C::Resolve => ErrorClass::Retry,
        C::RebalanceInProgress => ErrorClass::DeferUntilRebalanced,
        C::IllegalGeneration | C::UnknownMemberId | C::State | C::StaleMemberEpoch => {
            ErrorClass::Stale
        }
        C::NoOffset => ErrorClass::NoOp,
        C::UnknownTopicOrPartition | C::UnknownPartition | C::UnknownTopic => {
            ErrorClass::UnknownPartition
        }
        // FENCED_INSTANCE_ID: another instance took our static membership; fatal
        // for this consumer. Authorization, metadata size, offset size: permanent.
        _ => ErrorClass::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_design() {
        use RDKafkaErrorCode as C;
        for c in [
            C::CoordinatorLoadInProgress,
            C::NotCoordinator,
            C::CoordinatorNotAvailable,
            C::RequestTimedOut,
            C::BrokerTransportFailure,
            C::WaitingForCoordinator,
        ] {
            assert_eq!(classify_code(c), ErrorClass::Retry, "{c:?}");
        }
        assert_eq!(
            classify_code(C::RebalanceInProgress),
            ErrorClass::DeferUntilRebalanced
        );
        assert_eq!(classify_code(C::IllegalGeneration), ErrorClass::Stale);
        assert_eq!(classify_code(C::UnknownMemberId), ErrorClass::Stale);
        assert_eq!(classify_code(C::NoOffset), ErrorClass::NoOp);
        for c in [
            C::FencedInstanceId,
            C::OffsetMetadataTooLarge,
            C::GroupAuthorizationFailed,
            C::TopicAuthorizationFailed,
            C::InvalidCommitOffsetSize,
        ] {
            assert_eq!(classify_code(c), ErrorClass::Fatal, "{c:?}");
        }
        assert_eq!(
            classify_code(C::UnknownTopicOrPartition),
            ErrorClass::UnknownPartition
        );
        assert_eq!(
            classify(&KafkaError::ConsumerCommit(C::NotCoordinator)),
            ErrorClass::Retry
        );
    }

    #[test]
    fn validation_names_the_setting() {
        let p = RetryPolicy::exponential()
            .initial_interval(Duration::from_secs(2))
            .max_interval(Duration::from_secs(1));
        assert_eq!(p.validate().unwrap_err().setting, "max_interval");
        assert_eq!(
            RetryPolicy::exponential()
                .max_attempts(0)
                .validate()
                .unwrap_err()
                .setting,
            "max_attempts"
        );
        assert_eq!(
            RetryPolicy::exponential()
                .jitter(1.5)
                .validate()
                .unwrap_err()
                .setting,
            "jitter"
        );
        assert_eq!(
            RetryPolicy::exponential()
                .initial_interval(Duration::ZERO)
                .validate()
                .unwrap_err()
                .setting,
            "initial_interval"
        );
    }

    #[test]
    fn attempts_and_time_bound_the_retries() {
        let p = RetryPolicy::exponential()
            .initial_interval(Duration::from_millis(1))
            .max_interval(Duration::from_millis(4))
            .max_attempts(4);
        let mut s = p.start();
        let mut delays = Vec::new();
        loop {
            s.attempt();
            match s.next_delay() {
                Some(d) => delays.push(d),
                None => break,
            }
        }
        assert_eq!(s.attempts(), 4);
        assert_eq!(delays.len(), 3);
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(6)));

        let p = RetryPolicy::exponential()
            .max_attempts(1000)
            .max_elapsed(Duration::from_millis(1));
        let mut s = p.start();
        s.attempt();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(s.next_delay(), None, "time bound spent");
    }

    #[test]
    fn extreme_intervals_neither_overflow_nor_panic() {
        let p = RetryPolicy::exponential()
            .initial_interval(Duration::MAX)
            .max_interval(Duration::MAX)
            .multiplier(f64::MAX)
            .max_elapsed(Duration::MAX)
            .max_attempts(u32::MAX);
        assert!(p.validate().is_ok());
        let mut s = p.start();
        assert!(s.time_bound().is_never());
        for _ in 0..5 {
            s.attempt();
            let d = s.next_delay().expect("no bound reached");
            assert!(d <= MAX_RETRY_DELAY * 2, "{d:?}");
        }
    }
}
