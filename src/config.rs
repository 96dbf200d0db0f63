//! Every setting of the guard, its default and its validation, written once.
//!
//! The builder writes into a [`Config`]; `build()` calls [`Config::validate`].
//! Durations use checked arithmetic everywhere (see `deadline.rs`): where a
//! limit makes sense, `Duration::MAX` means "no limit".

use std::time::Duration;

use crate::error::BuildError;
use crate::retry::RetryPolicy;

/// Default of [`max_outstanding_per_partition`](crate::GuardBuilder::max_outstanding_per_partition).
pub const DEFAULT_MAX_OUTSTANDING_PER_PARTITION: usize = 50_000;

/// Default of [`prefetch_batches`](crate::GuardBuilder::prefetch_batches):
/// with the default `batch_size` (256), a backlog of 32,768 records. Each
/// pause makes librdkafka drop what it prefetched and fetch it again after
/// the resume (BENCHMARKS.md, section 7), so the backlog is large enough
/// that bursts do not pause.
pub const DEFAULT_PREFETCH_BATCHES: usize = 128;

/// Default of [`stuck_after`](crate::GuardBuilder::stuck_after): 5 minutes,
/// like librdkafka's default `max.poll.interval.ms`.
pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(300);

/// Default of [`max_outstanding`](crate::GuardBuilder::max_outstanding).
pub const DEFAULT_MAX_OUTSTANDING: usize = 100_000;

/// The owned front-end's backlog limit is at least this many records,
/// whatever `prefetch_batches` x `batch_size` says: each pause and resume
/// costs a fetch round trip, so a tiny backlog would pause all the time.
pub(crate) const MIN_BACKLOG: usize = 1_024;

/// The largest accepted [`prefetch_batches`](crate::GuardBuilder::prefetch_batches).
pub const MAX_PREFETCH_BATCHES: usize = 1 << 16;

/// The default of
/// [`progress_load_timeout`](crate::GuardBuilder::progress_load_timeout): 10 s.
pub const DEFAULT_PROGRESS_LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The smallest accepted period for periodic work (`commit_interval`,
/// `recommit_idle_every`): below it the commit thread would spin.
pub const MIN_PERIOD: Duration = Duration::from_millis(1);

/// Validated settings. Defaults are those of [`Config::default`], documented on
/// each builder setter.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// From the client config's `group.id` (filled in by `build()`).
    pub group_id: String,
    pub retry: RetryPolicy,
    pub commit_interval: Option<Duration>,
    pub commit_every: Option<u64>,
    pub recommit_idle_every: Option<Duration>,
    pub async_commits: bool,
    pub shutdown_timeout: Duration,
    pub revoke_timeout: Duration,
    pub revoke_grace: Duration,
    /// The time the stored-progress loads of one assign may take together.
    pub progress_load_timeout: Duration,
    /// `Duration::MAX`: never surfaced.
    pub brokers_unreachable_after: Duration,
    /// How long one poll of the consumer waits (internal).
    pub poll_timeout: Duration,
    pub batch_size: usize,
    /// Owned front-end: copy each record's headers out of librdkafka.
    pub read_headers: bool,
    pub prefetch_batches: usize,
    pub max_outstanding_per_partition: usize,
    pub max_outstanding: usize,
    /// Report a record un-acked this long (`None`: never).
    pub stuck_after: Option<Duration>,
    pub failed_offset_log: Option<crate::failure_log::LogBuilder>,
    pub replay_failed_offsets: bool,
    /// Unit tests only: this guard thread panics once it runs.
    #[cfg(test)]
    pub panic_in: Option<crate::threads::GuardThread>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            group_id: String::new(),
            retry: RetryPolicy::exponential(),
            commit_interval: Some(Duration::from_secs(5)),
            commit_every: None,
            recommit_idle_every: None,
            async_commits: false,
            shutdown_timeout: Duration::from_secs(10),
            revoke_timeout: Duration::from_secs(10),
            revoke_grace: Duration::from_secs(1),
            progress_load_timeout: DEFAULT_PROGRESS_LOAD_TIMEOUT,
            brokers_unreachable_after: Duration::from_secs(30),
            poll_timeout: Duration::from_millis(100),
            batch_size: 256,
            read_headers: true,
            prefetch_batches: DEFAULT_PREFETCH_BATCHES,
            max_outstanding_per_partition: DEFAULT_MAX_OUTSTANDING_PER_PARTITION,
            max_outstanding: DEFAULT_MAX_OUTSTANDING,
            stuck_after: Some(DEFAULT_STUCK_AFTER),
            failed_offset_log: None,
            replay_failed_offsets: false,
            #[cfg(test)]
            panic_in: None,
        }
    }
}

impl Config {
    /// The owned front-end's caps and the stuck signal.
    fn validate_flow(&self) -> Result<(), BuildError> {
        let count = |setting: &'static str| {
            Err(BuildError::InvalidCount {
                setting,
                reason: "must be at least 1".into(),
            })
        };
        if self.max_outstanding_per_partition == 0 {
            return count("max_outstanding_per_partition");
        }
        if self.stuck_after.is_some_and(|d| d < MIN_PERIOD) {
            return Err(BuildError::InvalidDuration {
                setting: "stuck_after",
                reason: format!(
                    "{:?} is below the minimum of {MIN_PERIOD:?}",
                    self.stuck_after.unwrap_or_default()
                ),
            });
        }
        if self.max_outstanding == 0 {
            return count("max_outstanding");
        }
        Ok(())
    }

    /// The owned front-end's flow-control limits.
    pub(crate) fn flow_limits(&self) -> crate::flow::FlowLimits {
        crate::flow::FlowLimits {
            backlog: self
                .prefetch_batches
                .saturating_mul(self.batch_size)
                .max(MIN_BACKLOG),
            outstanding_per_partition: self.max_outstanding_per_partition,
            outstanding: self.max_outstanding,
        }
    }

    /// The defaults, for a group (tests and benchmarks).
    pub(crate) fn with_group(group_id: &str) -> Config {
        Config {
            group_id: group_id.to_string(),
            ..Config::default()
        }
    }

    /// Checks every setting, naming the first one at fault.
    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        let duration = |setting: &'static str, reason: String| {
            Err(BuildError::InvalidDuration { setting, reason })
        };
        let count = |setting: &'static str, reason: String| {
            Err(BuildError::InvalidCount { setting, reason })
        };
        if self.commit_interval.is_some_and(|d| d < MIN_PERIOD) {
            return duration(
                "commit_interval",
                format!(
                    "{:?} is below the minimum of {MIN_PERIOD:?} (use no_commit_interval() to turn periodic commits off)",
                    self.commit_interval.unwrap_or_default()
                ),
            );
        }
        if self.recommit_idle_every.is_some_and(|d| d < MIN_PERIOD) {
            return duration(
                "recommit_idle_every",
                format!(
                    "{:?} is below the minimum of {MIN_PERIOD:?} (leave it unset to turn re-commits off)",
                    self.recommit_idle_every.unwrap_or_default()
                ),
            );
        }
        if self.shutdown_timeout.is_zero() {
            return duration("shutdown_timeout", "must be greater than zero".into());
        }
        if self.revoke_timeout.is_zero() {
            return duration("revoke_timeout", "must be greater than zero".into());
        }
        if self.progress_load_timeout.is_zero() {
            return duration(
                "progress_load_timeout",
                "must be greater than zero (Duration::MAX: no limit)".into(),
            );
        }
        if self.brokers_unreachable_after.is_zero() {
            return duration(
                "brokers_unreachable_after",
                "must be greater than zero (Duration::MAX: never report)".into(),
            );
        }
        if self.revoke_grace > self.revoke_timeout {
            return duration(
                "revoke_grace",
                format!(
                    "{:?} exceeds revoke_timeout ({:?}); the grace period is part of the revoke",
                    self.revoke_grace, self.revoke_timeout
                ),
            );
        }
        if self.commit_every == Some(0) {
            return count("commit_every", "must be at least 1".into());
        }
        if self.batch_size == 0 {
            return count("batch_size", "must be at least 1".into());
        }
        if !(1..=MAX_PREFETCH_BATCHES).contains(&self.prefetch_batches) {
            return count(
                "prefetch_batches",
                format!(
                    "{} is outside 1..={MAX_PREFETCH_BATCHES}",
                    self.prefetch_batches
                ),
            );
        }
        self.validate_flow()?;
        if self.replay_failed_offsets && self.failed_offset_log.is_none() {
            return Err(BuildError::MissingDependency {
                setting: "replay_failed_offsets",
                requires: "failed_offset_log",
            });
        }
        self.retry.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(c: Config) -> Option<&'static str> {
        c.validate().err().and_then(|e| e.setting())
    }

    #[test]
    fn defaults_are_valid_and_extremes_are_accepted_or_named() {
        assert_eq!(setting(Config::with_group("g")), None);
        let max = Config {
            commit_interval: Some(Duration::MAX),
            recommit_idle_every: Some(Duration::MAX),
            shutdown_timeout: Duration::MAX,
            revoke_timeout: Duration::MAX,
            revoke_grace: Duration::MAX,
            progress_load_timeout: Duration::MAX,
            brokers_unreachable_after: Duration::MAX,
            commit_every: Some(u64::MAX),
            batch_size: usize::MAX,
            prefetch_batches: MAX_PREFETCH_BATCHES,
            max_outstanding_per_partition: usize::MAX,
            max_outstanding: usize::MAX,
            stuck_after: Some(Duration::MAX),
            retry: RetryPolicy::exponential()
                .initial_interval(Duration::MAX)
                .max_interval(Duration::MAX)
                .max_elapsed(Duration::MAX)
                .max_attempts(u32::MAX),
            ..Config::with_group("g")
        };
        assert_eq!(setting(max), None);
        let cases: Vec<(Config, &str)> = vec![
            (
                Config {
                    stuck_after: Some(Duration::ZERO),
                    ..Config::default()
                },
                "stuck_after",
            ),
            (
                Config {
                    max_outstanding_per_partition: 0,
                    ..Config::default()
                },
                "max_outstanding_per_partition",
            ),
            (
                Config {
                    max_outstanding: 0,
                    ..Config::default()
                },
                "max_outstanding",
            ),
            (
                Config {
                    commit_interval: Some(Duration::from_micros(999)),
                    ..Config::default()
                },
                "commit_interval",
            ),
            (
                Config {
                    recommit_idle_every: Some(Duration::ZERO),
                    ..Config::default()
                },
                "recommit_idle_every",
            ),
            (
                Config {
                    brokers_unreachable_after: Duration::ZERO,
                    ..Config::default()
                },
                "brokers_unreachable_after",
            ),
            (
                Config {
                    shutdown_timeout: Duration::ZERO,
                    ..Config::default()
                },
                "shutdown_timeout",
            ),
            (
                Config {
                    progress_load_timeout: Duration::ZERO,
                    ..Config::default()
                },
                "progress_load_timeout",
            ),
            (
                Config {
                    revoke_grace: Duration::from_secs(11),
                    ..Config::default()
                },
                "revoke_grace",
            ),
            (
                Config {
                    prefetch_batches: MAX_PREFETCH_BATCHES + 1,
                    ..Config::default()
                },
                "prefetch_batches",
            ),
            (
                Config {
                    prefetch_batches: usize::MAX,
                    ..Config::default()
                },
                "prefetch_batches",
            ),
            (
                Config {
                    replay_failed_offsets: true,
                    ..Config::default()
                },
                "replay_failed_offsets",
            ),
        ];
        for (c, want) in cases {
            assert_eq!(setting(c), Some(want));
        }
    }
}
