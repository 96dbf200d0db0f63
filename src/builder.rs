//! [`GuardBuilder`]: configuration, validation and construction.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{ConsumerContext, DefaultConsumerContext};

use crate::config::Config;
use crate::consumer::GuardedConsumer;
use crate::error::BuildError;
use crate::failure_log::LogBuilder;
use std::sync::Arc;

use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::Consumer;

use crate::guard::{Guard, Setup};
use crate::own_loop::GuardHandle;
use crate::rebalance::GuardContext;
use crate::rebalance::{Assigned, Hooks, Lost, Revoked};
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
            config: Config::default(),
            sink: None,
            hooks: Hooks::default(),
        }
    }
}

/// Builds a [`GuardedConsumer`]. By value; every setter documents its default;
/// [`build`](GuardBuilder::build) validates everything and names the setting at fault.
///
/// Durations: where a limit makes sense, `Duration::MAX` means "no limit"
/// (the guard never adds a duration to the clock without checking); no
/// setting, at any value, makes the guard panic.
#[must_use = "a builder does nothing until build() is called"]
pub struct GuardBuilder<C = DefaultConsumerContext> {
    client_config: ClientConfig,
    context: C,
    config: Config,
    sink: Option<Box<dyn FailureSink>>,
    hooks: Hooks,
}

impl<C: ConsumerContext + 'static> GuardBuilder<C> {
    /// Wraps your own `ConsumerContext`: its logging, statistics, error and
    /// OAuth callbacks keep firing, and its `commit_callback` is called by the
    /// guard with the outcome of every commit attempt it sends (see
    /// [`GuardContext`](crate::GuardContext)). Default: rdkafka's `DefaultConsumerContext`.
    pub fn context<C2: ConsumerContext + 'static>(self, context: C2) -> GuardBuilder<C2> {
        GuardBuilder {
            client_config: self.client_config,
            context,
            config: self.config,
            sink: self.sink,
            hooks: self.hooks,
        }
    }

    /// How failed commits are retried. Default: [`RetryPolicy::exponential`]
    /// (100 ms doubling to 5 s, jitter 0.5, at most 10 attempts and 30 s).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.config.retry = policy;
        self
    }

    /// Commit as soon as acked offsets move: every ack that advances a
    /// partition's commit point asks for a commit; one commit is in flight at a
    /// time and everything acked meanwhile coalesces into the next one (newest
    /// offset per partition wins). Callers never block. Default: off (commits
    /// run by interval, count, [`commit_now`](GuardedConsumer::commit_now),
    /// revoke and shutdown).
    pub fn async_commits(mut self) -> Self {
        self.config.async_commits = true;
        self
    }

    /// Commit acked offsets periodically. Default: every 5 s. Must be at least
    /// 1 ms; `Duration::MAX` (or any period too long for the clock) never fires.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.config.commit_interval = Some(interval);
        self
    }

    /// No periodic commits (use `commit_every`, `async_commits` or `commit_now`).
    pub fn no_commit_interval(mut self) -> Self {
        self.config.commit_interval = None;
        self
    }

    /// Also commit after every `n` acks. Default: off. Must be at least 1
    /// (`u64::MAX` is accepted).
    pub fn commit_every(mut self, n: u64) -> Self {
        self.config.commit_every = Some(n);
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
    /// Default: off. Must be at least 1 ms; `Duration::MAX` never fires.
    pub fn recommit_idle_every(mut self, period: Duration) -> Self {
        self.config.recommit_idle_every = Some(period);
        self
    }

    /// Deadline for [`shutdown`](GuardedConsumer::shutdown): its final commit
    /// (with retries), the close and the flush of the failed-offset log (which
    /// gets at least [`LOG_FLUSH_ALLOWANCE`](crate::LOG_FLUSH_ALLOWANCE) past
    /// the deadline, so that what could not be committed is durable).
    /// Default: 10 s. Must be non-zero; `Duration::MAX` means no deadline (the
    /// retry policy still bounds the final commit).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// Where offsets that could not be committed go. Default: none (they are
    /// still counted in [`Stats`](crate::Stats) and reported through tracing).
    pub fn failure_sink(mut self, sink: impl FailureSink) -> Self {
        self.sink = Some(Box::new(sink));
        self
    }

    /// Record every offset given up on in a durable failed-offset log (see
    /// [`crate::failure_log`]): a path, for the default settings (JSON Lines,
    /// `fsync` per record, rotation at 64 MiB keeping 8 files, at most 10,000
    /// records kept in memory while the disk fails), or a
    /// [`LogBuilder`] from
    /// [`FailedOffsetLog::builder`](crate::failure_log::FailedOffsetLog::builder)
    /// with its own settings:
    ///
    /// ```no_run
    /// # fn f(config: rdkafka::ClientConfig) -> Result<(), offset_guard::BuildError> {
    /// use std::time::Duration;
    /// use offset_guard::OffsetGuard;
    /// use offset_guard::failure_log::{FailedOffsetLog, FsyncPolicy};
    ///
    /// let consumer = OffsetGuard::builder(config)
    ///     .failed_offset_log(
    ///         FailedOffsetLog::builder("/var/lib/app/failed-offsets.jsonl")
    ///             .max_file_bytes(16 * 1024 * 1024)
    ///             .max_files(4)
    ///             .fsync(FsyncPolicy::Batched {
    ///                 max_records: 100,
    ///                 max_delay: Duration::from_millis(200),
    ///             }),
    ///     )
    ///     .replay_failed_offsets()
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// With the `sqlite` cargo feature the log can live in a table of a
    /// SQLite database instead, shared by every instance of the service, so
    /// that replay works wherever a partition is assigned next:
    /// `.failed_offset_log(FailedOffsetLog::sqlite("/var/lib/app/app.db"))`
    /// (see [In a database](crate::failure_log#in-a-database); a path is
    /// always a file, never parsed as a URL: use
    /// [`LogLocation::parse`](crate::failure_log::LogLocation::parse)`(text)?.builder()`
    /// for text that may be either). There `build()` also fails with
    /// [`LogError::SchemaTooNew`](crate::failure_log::LogError::SchemaTooNew),
    /// [`ForeignSchema`](crate::failure_log::LogError::ForeignSchema) or
    /// [`Database`](crate::failure_log::LogError::Database); several guards
    /// may share the database (no writer lock).
    ///
    /// Read it back with [`LogReader`](crate::failure_log::LogReader) or
    /// `offset-guard failures PATH` (or `failures sqlite:PATH.db`). Combines with
    /// [`failure_sink`](Self::failure_sink): both receive every record. Shutdown
    /// flushes the log within its deadline. Records the log refuses (its
    /// in-memory bound overflows while the disk fails) are counted in
    /// [`Stats::failed_log_dropped`](crate::Stats::failed_log_dropped).
    /// `build()` fails with [`BuildError::FailedOffsetLog`] if a setting is
    /// invalid ([`LogError::InvalidConfig`](crate::failure_log::LogError::InvalidConfig),
    /// naming it), another writer holds the log
    /// ([`LogError::InUse`](crate::failure_log::LogError::InUse); one writer
    /// per log, in this process or another), the path is not a regular file
    /// ([`LogError::NotAFile`](crate::failure_log::LogError::NotAFile)), or the
    /// file cannot be opened for appending. `shutdown` flushes and closes the
    /// log, releasing its lock, before it returns (when the flush finished:
    /// [`ShutdownReport::log_flushed`](crate::ShutdownReport::log_flushed));
    /// a guard dropped without shutdown closes it once its threads ended. A
    /// new guard on the same log can be built after that.
    /// Default: off (failures still reach [`Stats`](crate::Stats) and tracing).
    pub fn failed_offset_log(mut self, log: impl Into<LogBuilder>) -> Self {
        self.config.failed_offset_log = Some(log.into());
        self
    }

    /// How long a revoke may take: waiting for in-flight acks
    /// ([`revoke_grace`](Self::revoke_grace)) plus the synchronous commit of
    /// the revoked partitions with its retries. Keep it well below the group's
    /// rebalance timeout (`max.poll.interval.ms`). Default: 10 s. Must be
    /// non-zero; `Duration::MAX` means no limit (the retry policy still bounds
    /// the commit; librdkafka calls take at most `i32::MAX` ms).
    pub fn revoke_timeout(mut self, timeout: Duration) -> Self {
        self.config.revoke_timeout = timeout;
        self
    }

    /// How long no broker may be reachable before
    /// [`GuardedConsumer::recv`](crate::GuardedConsumer::recv) returns
    /// [`Error::BrokersUnreachable`](crate::Error::BrokersUnreachable)
    /// (then again at most once per this period while the outage lasts; the
    /// consumer keeps retrying and recovers by itself). Also the least time
    /// between two returns of the same [`Error::AuthFailed`](crate::Error::AuthFailed)
    /// or [`Error::UnknownTopic`](crate::Error::UnknownTopic). The outage
    /// starts at librdkafka's first "all brokers down" report; before
    /// returning the error the poll thread confirms it with one metadata
    /// request (waiting at most 1 s), and checks again at most once a second
    /// however short the period. `Duration::MAX`: never returned (the outage
    /// is still logged). Default: 30 s. Must be greater than zero.
    /// The own-loop front-end ([`build_consumer`](Self::build_consumer)) does
    /// not use it: your own poll returns librdkafka's errors.
    pub fn brokers_unreachable_after(mut self, period: Duration) -> Self {
        self.config.brokers_unreachable_after = period;
        self
    }

    /// On revoke, how long to wait for acks of records of the revoked
    /// partitions that were already handed to the application; then the
    /// contiguous acked offset is committed and later acks are stale (their
    /// records will be delivered again to the next owner). Records fetched but
    /// not handed out yet are never handed out. Zero commits at once. Default:
    /// 1 s. Must not exceed [`revoke_timeout`](Self::revoke_timeout).
    pub fn revoke_grace(mut self, grace: Duration) -> Self {
        self.config.revoke_grace = grace;
        self
    }

    /// Called after every assign, with the partitions and any offsets kept
    /// from the rebalance and committed now. Runs in the rebalance callback
    /// (the guard's poll thread): keep it short. Default: none.
    pub fn on_assign(mut self, hook: impl Fn(&Assigned) + Send + Sync + 'static) -> Self {
        self.hooks.on_assign = Some(Box::new(hook));
        self
    }

    /// Exactly-once into a database (own-loop front-end,
    /// [`build_consumer`](Self::build_consumer)): `loader(group, topic,
    /// partition)` reads a partition's stored progress (e.g.
    /// `progress::sqlite::load` on a connection of yours, or
    /// `progress::postgres::Loader::load`, which works on any thread,
    /// including a tokio worker's, where blocking on a future panics); `group` is the
    /// consumer's `group.id`, progress is kept per group.
    /// It runs in the assign callback for every assigned partition, one
    /// after another (its total time is the partitions times its own: keep
    /// it short, with a timeout; the loads of one assign stop after
    /// [`progress_load_timeout`](Self::progress_load_timeout)), and
    /// must read the database your marks go to: a watermark read elsewhere
    /// that is ahead skips records that were never processed. A stored
    /// watermark ahead of the group's committed offset is committed (Kafka's
    /// commit, a lagging mirror of the database, catches up, also for a
    /// partition with nothing new to read) and fetching starts there; and [`GuardHandle::track_or_skip`](crate::GuardHandle::track_or_skip)
    /// skips the records stored as done (acked, not handed out, counted in
    /// [`Stats::records_skipped_done`](crate::Stats::records_skipped_done)).
    /// Mark each record done in the transaction that applies its effects
    /// (`progress::sqlite::mark_token`) and ack its token after that
    /// transaction committed: the Kafka commit then follows the database and
    /// never passes it. A loader error or panic is logged and counted
    /// ([`Stats::progress_load_errors`](crate::Stats::progress_load_errors));
    /// that partition's records are all handed out, and the store's mark
    /// refuses those done already. With the owned front-end
    /// ([`build`](Self::build)) the poll thread skips the records stored as
    /// done the same way (acked, never handed out, counted). Default: none.
    pub fn stored_progress(
        mut self,
        loader: impl Fn(
            &str,
            &str,
            i32,
        )
            -> Result<crate::progress::PartitionProgress, crate::progress::ProgressError>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.hooks.progress = Some(Box::new(loader));
        self
    }

    /// How long the [`stored_progress`](Self::stored_progress) loads of one
    /// assign may take together. The loader runs inside the rebalance
    /// callback, one partition after another: a database that hangs would
    /// hold the group's rebalance for the partitions times the loader's own
    /// timeout. Once this budget is spent, the partitions not loaded yet are
    /// not loaded (a `tracing` warning naming how many; each counted in
    /// [`Stats::progress_load_errors`](crate::Stats::progress_load_errors)):
    /// as for a loader error, their records are all handed out and the
    /// store's mark refuses those done already, so nothing is applied twice.
    /// A load that has started is not interrupted: the assign can take this
    /// budget plus one load. Keep it below the group's rebalance timeout
    /// (`max.poll.interval.ms`). Default: 10 s
    /// ([`DEFAULT_PROGRESS_LOAD_TIMEOUT`](crate::DEFAULT_PROGRESS_LOAD_TIMEOUT)).
    /// Must be greater than zero; `Duration::MAX`: no limit.
    pub fn progress_load_timeout(mut self, timeout: Duration) -> Self {
        self.config.progress_load_timeout = timeout;
        self
    }

    /// Called after every revoke (not lost), once the guard committed the
    /// revoked partitions, with what it committed, deferred and gave up.
    /// Runs in the rebalance callback: keep it short. Default: none.
    pub fn on_revoke(mut self, hook: impl Fn(&Revoked) + Send + Sync + 'static) -> Self {
        self.hooks.on_revoke = Some(Box::new(hook));
        self
    }

    /// Called when partitions are lost (nothing committed for them), with the
    /// acked offsets that were not committed. Runs in the rebalance callback.
    /// Default: none.
    pub fn on_lost(mut self, hook: impl Fn(&Lost) + Send + Sync + 'static) -> Self {
        self.hooks.on_lost = Some(Box::new(hook));
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
    ///
    /// The log is read on the guard's commit thread right after `build()`
    /// returns, in one streaming pass keeping only this group's unresolved
    /// offsets (a 1,000,000-line log takes about a second; see
    /// BENCHMARKS.md), so `build()` never blocks the caller's executor on it.
    /// Assigns wait until it is read (a rebalance callback can wait that
    /// long only if the group joins faster than the log is read). A log
    /// that cannot be read is logged (`tracing::error!`) and nothing is
    /// replayed; damaged lines are logged as warnings and skipped.
    pub fn replay_failed_offsets(mut self) -> Self {
        self.config.replay_failed_offsets = true;
        self
    }

    /// How many fetched records the poll thread hands over at once. Default: 256.
    /// Must be at least 1; any larger value is accepted (a batch is also handed
    /// over whenever a poll finds nothing new).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.config.batch_size = n;
        self
    }

    /// Owned front-end: whether records carry their Kafka headers.
    /// Default: true.
    ///
    /// With `false`, every record's [`Record::headers`](crate::Record::headers)
    /// (and the headers of [`Record::message`](crate::Record::message)) is
    /// `None`. With `true`, librdkafka parses a record's headers at the first
    /// call that asks for them, on the calling thread, once per record; the
    /// poll thread never parses headers (a record keeps librdkafka's message,
    /// nothing is copied), so this costs nothing when no code asks
    /// (BENCHMARKS.md, section 10). The own-loop front-end
    /// ([`build_consumer`](Self::build_consumer)) copies nothing, so this
    /// does not apply to it.
    pub fn read_headers(mut self, yes: bool) -> Self {
        self.config.read_headers = yes;
        self
    }

    /// Owned front-end: how many batches of fetched records may wait for
    /// `recv` before the poll thread pauses the partitions they come from
    /// (it never blocks on the application: when the backlog is full it
    /// waits at most 100 ms for `recv` to take half of it, then pauses and
    /// keeps polling, so heartbeats, rebalance callbacks and errors are
    /// served while the application is slow). The partitions are resumed
    /// once half of that backlog was received. The backlog limit
    /// is `prefetch_batches` x `batch_size` records, and at least 1,024 (each
    /// pause and resume costs a fetch round trip). Default:
    /// [`DEFAULT_PREFETCH_BATCHES`](crate::DEFAULT_PREFETCH_BATCHES), 128
    /// (with the default `batch_size`, 32,768 records). Must be from 1 to
    /// [`MAX_PREFETCH_BATCHES`](crate::MAX_PREFETCH_BATCHES) (65,536). See
    /// the crate docs, "Backpressure".
    pub fn prefetch_batches(mut self, n: usize) -> Self {
        self.config.prefetch_batches = n;
        self
    }

    /// Owned front-end: the most outstanding records of one partition
    /// (delivered and not yet released by acks: not acked, or acked behind
    /// one that is not; the records waiting for `recv` included) before its
    /// fetching is paused; it is resumed once down to half. One record
    /// that is never acked therefore stops its partition at this many
    /// records (plus at most one batch, `batch_size`, fetched before the
    /// pause), not the whole consumer, and memory stays bounded.
    /// Default: [`DEFAULT_MAX_OUTSTANDING_PER_PARTITION`](crate::DEFAULT_MAX_OUTSTANDING_PER_PARTITION)
    /// (50,000). Must be at least 1 ([`BuildError::InvalidCount`]).
    pub fn max_outstanding_per_partition(mut self, records: usize) -> Self {
        self.config.max_outstanding_per_partition = records;
        self
    }

    /// Report a record that stays un-acked (the first un-acked record of its
    /// partition, holding its commit point) this long: a `tracing` warning
    /// naming topic, partition, offset and age, once per record, counted in
    /// [`Stats::records_stuck`](crate::Stats::records_stuck); its age shows in
    /// [`PartitionStatus::first_unacked_age`](crate::PartitionStatus::first_unacked_age).
    /// Sampled by the commit thread about once a second, so ages are accurate
    /// to about a second. `Duration::MAX` never reports. Default:
    /// [`DEFAULT_STUCK_AFTER`](crate::DEFAULT_STUCK_AFTER) (5 minutes). At
    /// least 1 ms ([`BuildError::InvalidDuration`]). Both front-ends.
    pub fn stuck_after(mut self, after: Duration) -> Self {
        self.config.stuck_after = (after != Duration::MAX).then_some(after);
        self
    }

    /// Owned front-end: the most outstanding records of all partitions
    /// together; when reached, every partition holding outstanding records
    /// is paused until the total is down to half.
    /// Default: [`DEFAULT_MAX_OUTSTANDING`](crate::DEFAULT_MAX_OUTSTANDING)
    /// (100,000). Must be at least 1 ([`BuildError::InvalidCount`]).
    pub fn max_outstanding(mut self, records: usize) -> Self {
        self.config.max_outstanding = records;
        self
    }

    /// Own-loop mode: creates your consumer type `T` (`StreamConsumer`,
    /// `BaseConsumer`) with the guard's context installed, starts the commit
    /// thread, and hands back the consumer and a [`GuardHandle`] beside it.
    /// Keep polling `T` as before; [`GuardHandle::track`] each message you
    /// process and ack its token. See [`GuardHandle`] for what differs
    /// from [`GuardedConsumer`] (rebalance callbacks run in your poll).
    ///
    /// ```no_run
    /// # async fn run(config: rdkafka::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
    /// use offset_guard::{GuardContext, OffsetGuard};
    /// use rdkafka::consumer::{Consumer, StreamConsumer};
    ///
    /// let (consumer, guard) = OffsetGuard::builder(config)
    ///     .build_consumer::<StreamConsumer<GuardContext>>()?;
    /// consumer.subscribe(&["orders"])?;
    /// loop {
    ///     let message = consumer.recv().await?;
    ///     let token = guard.track(&message);
    ///     // ... process the message ...
    ///     token.ack();
    /// #   break;
    /// }
    /// guard.shutdown(&*consumer).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn build_consumer<T>(self) -> Result<(Arc<T>, GuardHandle), BuildError>
    where
        T: FromClientConfigAndContext<GuardContext<C>>
            + Consumer<GuardContext<C>>
            + Send
            + Sync
            + 'static,
    {
        let (guard, consumer) = Guard::start::<C, T>(self.setup()?)?;
        Ok((consumer, GuardHandle::new(guard)))
    }

    /// Validates the settings, creates the consumer and starts the guard's
    /// poll and commit threads.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] naming the setting at fault (see
    /// [`BuildError::setting`]), the failed-offset log that cannot be opened,
    /// rdkafka's refusal to create the consumer, or a thread that could not
    /// be started.
    pub fn build(self) -> Result<GuardedConsumer<C>, BuildError> {
        GuardedConsumer::start(self.setup()?)
    }

    /// Validates everything and opens the failed-offset log.
    fn setup(self) -> Result<Setup<C>, BuildError> {
        let (client_config, group_id) = guarded_client_config(self.client_config)?;
        let mut config = self.config;
        config.group_id = group_id;
        config.validate()?;
        let (log, replay) = match &config.failed_offset_log {
            Some(options) => {
                // Opened (and locked) first; replay entries are read on the
                // commit thread (`failures::replay_entries`) from `log.path()`.
                let log = options
                    .clone()
                    .open()
                    .map_err(BuildError::FailedOffsetLog)?;
                (Some(log), HashMap::new())
            }
            None => (None, HashMap::new()),
        };
        Ok(Setup {
            client_config,
            config,
            context: self.context,
            hooks: self.hooks,
            sink: self.sink,
            log,
            replay,
        })
    }
}

/// The user's client config with the guard's requirements: a `group.id`, and
/// librdkafka's own commits and offset stores off.
fn guarded_client_config(mut cc: ClientConfig) -> Result<(ClientConfig, String), BuildError> {
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
    Ok((cc, group_id))
}
