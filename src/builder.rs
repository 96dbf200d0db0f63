//! [`GuardBuilder`]: configuration, validation and construction.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, DefaultConsumerContext};
use std::sync::Arc;

use crate::consumer::{Config, GuardedConsumer, Inner};
use crate::error::BuildError;
use crate::failure_log::FailedOffsetLog;
use crate::rebalance::{Assigned, GuardContext, Hooks, Lost, Revoked};
use crate::retry::RetryPolicy;
use crate::sink::FailureSink;

/// Entry point: `OffsetGuard::builder(client_config)`.
#[derive(Debug, Clone, Copy)]
pub struct OffsetGuard;

impl OffsetGuard {
    /// Starts a builder from an rdkafka client config (`bootstrap.servers`,
    /// `group.id`, and anything else your consumer already sets).
    pub fn builder(client_config: ClientConfig) -> GuardBuilder {
        GuardBuilder {
            client_config,
            context: DefaultConsumerContext,
            s: Settings::defaults(),
        }
    }
}

impl Settings {
    fn defaults() -> Settings {
        let d = Config::with_group("");
        Settings {
            retry: d.retry,
            commit_interval: d.commit_interval,
            commit_every: d.commit_every,
            recommit_idle_every: d.recommit_idle_every,
            async_commits: d.async_commits,
            shutdown_timeout: d.shutdown_timeout,
            poll_timeout: d.poll_timeout,
            batch_size: d.batch_size,
            channel_capacity: d.channel_capacity,
            revoke_timeout: d.revoke_timeout,
            revoke_grace: d.revoke_grace,
            sink: None,
            log_path: None,
            replay: false,
            hooks: Hooks::default(),
        }
    }
}

/// Builds a [`GuardedConsumer`]. By value; every setter documents its default;
/// [`build`](GuardBuilder::build) validates everything and names the setting at fault.
#[must_use = "a builder does nothing until build() is called"]
pub struct GuardBuilder<C = DefaultConsumerContext> {
    client_config: ClientConfig,
    context: C,
    s: Settings,
}

/// Everything but the client config and the context.
struct Settings {
    retry: RetryPolicy,
    commit_interval: Option<Duration>,
    commit_every: Option<u64>,
    recommit_idle_every: Option<Duration>,
    async_commits: bool,
    shutdown_timeout: Duration,
    poll_timeout: Duration,
    batch_size: usize,
    channel_capacity: usize,
    revoke_timeout: Duration,
    revoke_grace: Duration,
    sink: Option<Box<dyn FailureSink>>,
    log_path: Option<std::path::PathBuf>,
    replay: bool,
    hooks: Hooks,
}

impl<C: ConsumerContext + 'static> GuardBuilder<C> {
    /// Wraps your own `ConsumerContext`: its logging, statistics, error, OAuth
    /// and commit callbacks keep firing. Default: rdkafka's `DefaultConsumerContext`.
    pub fn context<C2: ConsumerContext + 'static>(self, context: C2) -> GuardBuilder<C2> {
        GuardBuilder {
            client_config: self.client_config,
            context,
            s: self.s,
        }
    }

    /// How failed commits are retried. Default: [`RetryPolicy::exponential`]
    /// (100 ms doubling to 5 s, jitter 0.5, at most 10 attempts and 30 s).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.s.retry = policy;
        self
    }

    /// Commit as soon as acked offsets move: every ack that advances a
    /// partition's commit point asks for a commit; one commit is in flight at a
    /// time and everything acked meanwhile coalesces into the next one (newest
    /// offset per partition wins). Callers never block. Default: off (commits
    /// run by interval, count, [`commit_now`](GuardedConsumer::commit_now),
    /// revoke and shutdown).
    pub fn async_commits(mut self) -> Self {
        self.s.async_commits = true;
        self
    }

    /// Commit acked offsets periodically. Default: every 5 s. Must be non-zero.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.s.commit_interval = Some(interval);
        self
    }

    /// No periodic commits (use `commit_every`, `async_commits` or `commit_now`).
    pub fn no_commit_interval(mut self) -> Self {
        self.s.commit_interval = None;
        self
    }

    /// Also commit after every `n` acks. Default: off. Must be at least 1.
    pub fn commit_every(mut self, n: u64) -> Self {
        self.s.commit_every = Some(n);
        self
    }

    /// Re-commit, every `period`, the offsets of owned partitions whose
    /// position has not moved since their last commit, so that a partition
    /// that receives nothing for a long time does not lose its committed
    /// offset to the broker's `offsets.retention.minutes` (counted from the
    /// last commit on Kafka before 2.1 and for groups without members, e.g.
    /// manual `assign`). Only an offset this consumer committed, with every
    /// record before it acked in the partition's current assignment and none
    /// after it, is sent again: never a lower one, never past an un-acked
    /// record. The re-commit goes through the same serialized commit worker,
    /// one attempt per period; a failure is logged with `tracing` and tried
    /// again a period later (the offset is still committed, so it is not a
    /// failed offset). Counted in [`Stats::idle_recommits`](crate::Stats::idle_recommits)
    /// and `commits_sent`. Pick a period well below the broker's retention.
    /// Default: off. Must be non-zero.
    pub fn recommit_idle_every(mut self, period: Duration) -> Self {
        self.s.recommit_idle_every = Some(period);
        self
    }

    /// Deadline for [`shutdown`](GuardedConsumer::shutdown): its final commit
    /// (with retries) and the close. Default: 10 s. Must be non-zero.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.s.shutdown_timeout = timeout;
        self
    }

    /// Where offsets that could not be committed go. Default: none (they are
    /// still counted in [`Stats`](crate::Stats) and reported through tracing).
    pub fn failure_sink(mut self, sink: impl FailureSink) -> Self {
        self.s.sink = Some(Box::new(sink));
        self
    }

    /// Record every offset given up on in a durable failed-offset log at
    /// `path` (JSON Lines, fsync per record; see [`crate::failure_log`]). Read it
    /// back with [`LogReader`](crate::failure_log::LogReader) or
    /// `offset-guard failures PATH`. Combines with
    /// [`failure_sink`](Self::failure_sink): both receive every record. Shutdown
    /// flushes the log within its deadline. `build()` fails with
    /// [`BuildError::FailedOffsetLog`] if the file cannot be opened for appending.
    /// Default: off (failures still reach [`Stats`](crate::Stats) and tracing).
    pub fn failed_offset_log(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.s.log_path = Some(path.into());
        self
    }

    /// How long a revoke may take: waiting for in-flight acks
    /// ([`revoke_grace`](Self::revoke_grace)) plus the synchronous commit of
    /// the revoked partitions with its retries. Keep it well below the group's
    /// rebalance timeout (`max.poll.interval.ms`). Default: 10 s. Must be non-zero.
    pub fn revoke_timeout(mut self, timeout: Duration) -> Self {
        self.s.revoke_timeout = timeout;
        self
    }

    /// On revoke, how long to wait for acks of records of the revoked
    /// partitions that were already handed to the application; then the
    /// contiguous acked offset is committed and later acks are stale (their
    /// records will be delivered again to the next owner). Records fetched but
    /// not handed out yet are never handed out. Zero commits at once. Default:
    /// 1 s. Must not exceed [`revoke_timeout`](Self::revoke_timeout).
    pub fn revoke_grace(mut self, grace: Duration) -> Self {
        self.s.revoke_grace = grace;
        self
    }

    /// Called after every assign, with the partitions and any offsets kept
    /// from the rebalance and committed now. Runs in the rebalance callback
    /// (the guard's poll thread): keep it short. Default: none.
    pub fn on_assign(mut self, hook: impl Fn(&Assigned) + Send + Sync + 'static) -> Self {
        self.s.hooks.on_assign = Some(Box::new(hook));
        self
    }

    /// Called after every revoke (not lost), once the guard committed the
    /// revoked partitions, with what it committed, deferred and gave up.
    /// Runs in the rebalance callback: keep it short. Default: none.
    pub fn on_revoke(mut self, hook: impl Fn(&Revoked) + Send + Sync + 'static) -> Self {
        self.s.hooks.on_revoke = Some(Box::new(hook));
        self
    }

    /// Called when partitions are lost (nothing committed for them), with the
    /// acked offsets that were not committed. Runs in the rebalance callback.
    /// Default: none.
    pub fn on_lost(mut self, hook: impl Fn(&Lost) + Send + Sync + 'static) -> Self {
        self.s.hooks.on_lost = Some(Box::new(hook));
        self
    }

    /// Replay the failed-offset log on the next run: when a partition is
    /// assigned, each unresolved entry of this group for it is checked against
    /// the group's committed offset (read from the broker first). If the logged
    /// offset is ahead, it is committed again through the one committer and
    /// fetching starts there, so those records are not processed again; its
    /// resolution (`recommitted`) is appended once the commit lands. If it is
    /// not ahead, nothing is committed (never backwards) and it is resolved as
    /// `superseded`. Needs [`failed_offset_log`](Self::failed_offset_log)
    /// ([`BuildError::MissingDependency`] otherwise). Default: off.
    pub fn replay_failed_offsets(mut self) -> Self {
        self.s.replay = true;
        self
    }

    /// How many fetched records the poll thread hands over at once. Default: 256.
    /// Must be at least 1.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.s.batch_size = n;
        self
    }

    /// How many batches may wait between the poll thread and `recv`. Default: 8.
    /// Must be at least 1.
    pub fn prefetch_batches(mut self, n: usize) -> Self {
        self.s.channel_capacity = n;
        self
    }

    /// Validates the settings, creates the consumer and starts the guard's
    /// poll and commit threads.
    pub fn build(self) -> Result<GuardedConsumer<C>, BuildError> {
        let mut cc = self.client_config;
        let group_id = match cc.get("group.id") {
            Some(g) if !g.trim().is_empty() => g.to_string(),
            _ => return Err(BuildError::MissingGroupId),
        };
        for (key, reason) in [
            (
                "enable.auto.commit",
                "librdkafka would commit offsets on its own timer, past records not yet processed; the guard commits only acked offsets",
            ),
            (
                "enable.auto.offset.store",
                "librdkafka would store the offset of every record handed out, acked or not; the guard tracks acks itself",
            ),
        ] {
            match cc.get(key) {
                Some(v) if v.trim().eq_ignore_ascii_case("false") => {}
                Some(v) => {
                    return Err(BuildError::ConflictingSetting {
                        key,
                        value: v.to_string(),
                        reason,
                    });
                }
                None => {
                    cc.set(key, "false");
                }
            }
        }
        if self.s.commit_interval.is_some_and(|d| d.is_zero()) {
            return Err(BuildError::InvalidDuration {
                setting: "commit_interval",
                reason: "must be greater than zero (use no_commit_interval() to turn periodic commits off)".into(),
            });
        }
        if self.s.shutdown_timeout.is_zero() {
            return Err(BuildError::InvalidDuration {
                setting: "shutdown_timeout",
                reason: "must be greater than zero".into(),
            });
        }
        if self.s.commit_every == Some(0) {
            return Err(BuildError::InvalidCount {
                setting: "commit_every",
                reason: "must be at least 1".into(),
            });
        }
        if self.s.recommit_idle_every.is_some_and(|d| d.is_zero()) {
            return Err(BuildError::InvalidDuration {
                setting: "recommit_idle_every",
                reason: "must be greater than zero (leave it unset to turn re-commits off)".into(),
            });
        }
        if self.s.batch_size == 0 {
            return Err(BuildError::InvalidCount {
                setting: "batch_size",
                reason: "must be at least 1".into(),
            });
        }
        if self.s.channel_capacity == 0 {
            return Err(BuildError::InvalidCount {
                setting: "prefetch_batches",
                reason: "must be at least 1".into(),
            });
        }
        if self.s.revoke_timeout.is_zero() {
            return Err(BuildError::InvalidDuration {
                setting: "revoke_timeout",
                reason: "must be greater than zero".into(),
            });
        }
        if self.s.revoke_grace > self.s.revoke_timeout {
            return Err(BuildError::InvalidDuration {
                setting: "revoke_grace",
                reason: format!(
                    "{:?} exceeds revoke_timeout ({:?}); the grace period is part of the revoke",
                    self.s.revoke_grace, self.s.revoke_timeout
                ),
            });
        }
        self.s.retry.validate()?;
        let config = Config {
            group_id,
            retry: self.s.retry,
            commit_interval: self.s.commit_interval,
            commit_every: self.s.commit_every,
            recommit_idle_every: self.s.recommit_idle_every,
            async_commits: self.s.async_commits,
            shutdown_timeout: self.s.shutdown_timeout,
            poll_timeout: self.s.poll_timeout,
            batch_size: self.s.batch_size,
            channel_capacity: self.s.channel_capacity,
            revoke_timeout: self.s.revoke_timeout,
            revoke_grace: self.s.revoke_grace,
        };
        let log = match &self.s.log_path {
            Some(path) => Some(FailedOffsetLog::open(path).map_err(BuildError::FailedOffsetLog)?),
            None => None,
        };
        let sink: Option<Box<dyn FailureSink>> = match (self.s.sink, &log) {
            (Some(user), Some(log)) => Some(Box::new(Tee(user, log.clone()))),
            (None, Some(log)) => Some(Box::new(log.clone())),
            (user, None) => user,
        };
        let replay = match (&self.s.log_path, self.s.replay) {
            (None, true) => {
                return Err(BuildError::MissingDependency {
                    setting: "replay_failed_offsets",
                    requires: "failed_offset_log",
                });
            }
            (Some(path), true) => replay_entries(path, &config.group_id)?,
            (_, false) => std::collections::HashMap::new(),
        };
        let inner = Arc::new(Inner::new(config, sink));
        inner.lock_core().replay = replay;
        if let Some(log) = &log {
            let _ = inner.log.set(log.clone());
        }
        let consumer: BaseConsumer<GuardContext<C>> = cc
            .create_with_context(GuardContext::new(self.context, inner.clone(), self.s.hooks))
            .map_err(BuildError::Kafka)?;
        let mut guarded = GuardedConsumer::start(consumer, inner)?;
        guarded.log = log;
        Ok(guarded)
    }
}

/// The highest unresolved logged offset per partition of this group.
fn replay_entries(
    path: &std::path::Path,
    group_id: &str,
) -> Result<std::collections::HashMap<crate::assignment::TopicPartition, i64>, BuildError> {
    let reader = crate::failure_log::LogReader::open(path).map_err(BuildError::FailedOffsetLog)?;
    for issue in reader.issues() {
        tracing::warn!(%issue, "failed-offset log: line skipped");
    }
    let mut map = std::collections::HashMap::new();
    for f in reader.unresolved() {
        if f.group_id != group_id {
            continue;
        }
        let key: crate::assignment::TopicPartition = (Arc::from(f.topic.as_str()), f.partition);
        let e = map.entry(key).or_insert(f.offset);
        *e = (*e).max(f.offset);
    }
    if !map.is_empty() {
        tracing::info!(
            partitions = map.len(),
            "failed-offset log: unresolved offsets to replay at assign"
        );
    }
    Ok(map)
}

/// Hands each failure to the user's sink and to the failed-offset log.
struct Tee(Box<dyn FailureSink>, FailedOffsetLog);

impl FailureSink for Tee {
    fn record(&self, failure: crate::sink::FailedOffset) {
        self.0.record(failure.clone());
        self.1.record(failure);
    }
}
