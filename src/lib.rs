//! Reliable Kafka offset commits for services that consume with `rdkafka`.
//!
//! `offset-guard` wraps an rdkafka consumer and owns the whole offset-commit
//! path. The service says "this record is done" ([`AckToken::ack`], from any
//! task, in any order); the guard commits, per partition, the offset of the
//! first record not yet acked, and never anything past it:
//!
//! - one serialized committer: at most one OffsetCommit in flight, never
//!   cancelled; what is acked meanwhile coalesces (newest offset wins); an
//!   offset at or below what was committed, or from an older assignment of the
//!   partition (epoch), is dropped and counted;
//! - retries with exponential backoff and jitter, bounded by attempts and time
//!   ([`RetryPolicy`]), with Kafka errors classified by [`classify`];
//! - commits by interval, by count, on every ack ([`GuardBuilder::async_commits`])
//!   or on demand ([`GuardedConsumer::commit_now`]);
//! - optionally, unchanged offsets of idle partitions re-committed every period
//!   ([`GuardBuilder::recommit_idle_every`]) so the broker does not expire them;
//! - a final synchronous commit on [`GuardedConsumer::shutdown`], within a deadline;
//! - rebalance safety ([below](#rebalances)): on revoke (eager, or the revoked subset
//!   under cooperative-sticky) the revoked partitions' acked offsets are
//!   committed before hand-off through the same committer; lost partitions are
//!   never committed; your own `ConsumerContext` can be wrapped
//!   ([`GuardBuilder::context`]) and hooks run on assign, revoke and lost;
//! - every offset given up on goes to a [`FailureSink`] with its reason; with
//!   [`GuardBuilder::failed_offset_log`] to a durable JSON Lines log
//!   ([`failure_log`]) or, with the `sqlite` or `postgres` feature, to a
//!   table of a SQLite or PostgreSQL database shared by all instances of a
//!   service ([In a database](failure_log#in-a-database),
//!   [In PostgreSQL](failure_log#in-postgresql)), read back with [`failure_log::LogStream`] (any size,
//!   bounded memory), [`failure_log::LogReader`] or the
//!   `offset-guard failures PATH` command (the `offset-guard` tool also shows
//!   a group's offsets beside its failures, recommits them and resolves them
//!   by hand); with
//!   [`GuardBuilder::replay_failed_offsets`] the next run commits them again
//!   when their partition is assigned, if that does not move the group's
//!   offset backwards.
//!
//! rdkafka's synchronous commit blocks its thread, so commits run on a thread
//! of the guard's own; `ack` and `commit_now` never block the async executor.
//!
//! Two front-ends share that commit core:
//! - [`GuardedConsumer`] ([`GuardBuilder::build`]): the guard polls on a thread
//!   of its own and hands out owned [`Record`]s through
//!   [`recv`](GuardedConsumer::recv); rebalance callbacks and their commits
//!   never wait for your code.
//! - your own loop ([`GuardBuilder::build_consumer`]): your `StreamConsumer` or
//!   `BaseConsumer` with the guard's context, and a [`GuardHandle`] beside it;
//!   [`GuardHandle::track`] each message you process (no copy) and ack its
//!   token. Rebalance callbacks run inside your own poll.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use offset_guard::{OffsetGuard, RetryPolicy};
//! use rdkafka::ClientConfig;
//! use rdkafka::mocking::MockCluster;
//! use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An embedded broker speaking the Kafka protocol, with one record.
//! let cluster = MockCluster::new(1)?;
//! cluster.create_topic("orders", 1, 1)?;
//! let producer: BaseProducer = ClientConfig::new()
//!     .set("bootstrap.servers", cluster.bootstrap_servers())
//!     .create()?;
//! producer.send(BaseRecord::to("orders").key("k").payload("order 1")).map_err(|(e, _)| e)?;
//! producer.flush(Duration::from_secs(5))?;
//!
//! // Your existing consumer config, wrapped.
//! let mut config = ClientConfig::new();
//! config
//!     .set("bootstrap.servers", cluster.bootstrap_servers())
//!     .set("group.id", "billing")
//!     .set("auto.offset.reset", "earliest");
//! let mut consumer = OffsetGuard::builder(config)
//!     .retry(RetryPolicy::exponential().max_attempts(5))
//!     .commit_interval(Duration::from_secs(1))
//!     .shutdown_timeout(Duration::from_secs(5))
//!     .build()?;
//! consumer.subscribe(&["orders"])?;
//!
//! let record = consumer.recv().await?.expect("one record");
//! let token = record.ack_token();
//! tokio::spawn(async move {
//!     // ... process the record ...
//!     token.ack();
//! })
//! .await?;
//!
//! let report = consumer.shutdown().await?;
//! assert_eq!(report.committed[0].offset, 1); // the next record to read
//! assert!(report.not_committed.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//!
//! What the owned front-end does with the errors librdkafka reports while it
//! polls, by kind. Surfaced errors are returned by
//! [`recv`](GuardedConsumer::recv) once each, ahead of buffered records, also
//! when nobody was in `recv` when they happened (they wait, never blocking the
//! poll thread); the next `recv` goes on. [`Error::is_transient`] tells the
//! ones the consumer keeps running after.
//!
//! | kind | codes | `recv()` returns | after | the consumer |
//! |---|---|---|---|---|
//! | fatal | librdkafka's fatal error (e.g. FENCED_INSTANCE_ID) | [`Error::Fatal`] | at once | stops |
//! | authentication, authorization | `_AUTHENTICATION`, SASL_AUTHENTICATION_FAILED, TOPIC_/GROUP_/CLUSTER_AUTHORIZATION_FAILED | [`Error::AuthFailed`] (with the topics when the guard can tell, and librdkafka's description) | at once; the same error again at most once per [`brokers_unreachable_after`](GuardBuilder::brokers_unreachable_after) | keeps retrying; works again once allowed |
//! | unknown topic | UNKNOWN_TOPIC_OR_PART, `_UNKNOWN_TOPIC` | [`Error::UnknownTopic`] naming the missing subscribed topics, with librdkafka's description | at once; repeats as above | keeps running; assigns the topic once it exists and librdkafka's next metadata refresh (`topic.metadata.refresh.interval.ms`) sees it |
//! | no broker reachable | `_ALL_BROKERS_DOWN` (bootstrap address not resolving, connections refused, all brokers down) | [`Error::BrokersUnreachable`] with how long and the last transport error | once the outage lasted [`brokers_unreachable_after`](GuardBuilder::brokers_unreachable_after) (default 30 s, `Duration::MAX`: never) and a metadata request (at most 1 s) confirms it; then at most once per that period | keeps reconnecting; recovers by itself |
//! | one connection or request | `_TRANSPORT`, `_RESOLVE`, `_TIMED_OUT`, REQUEST_TIMED_OUT, NETWORK_EXCEPTION | nothing (`debug` event; kept as the outage's last error) | | librdkafka retries |
//! | anything else | | nothing (`warn` event) | | goes on |
//!
//! Every non-fatal error the poll thread sees counts in
//! [`Stats::consumer_errors`], every one returned in
//! [`Stats::errors_surfaced`]. Commit errors are not consumer errors: they go
//! through the retry policy and the failure sink, and reach
//! [`commit_now`](GuardedConsumer::commit_now) as [`Error::CommitFailed`].
//! A wrapped context's `ClientContext::error` still hears every error.
//!
//! The own-loop front-end ([`GuardBuilder::build_consumer`]) applies no such
//! policy: librdkafka's errors come out of your own poll (`StreamConsumer`'s
//! stream, `BaseConsumer::poll`) as they do without the guard.
//!
//! # Events and logging
//!
//! The guard emits `tracing` spans and events with structured fields (`group`,
//! `topic`, `partition`, `offset`, `error_code`, `attempt(s)`) and never
//! installs a subscriber. With the default `log` feature, a service that logs
//! through the `log` crate (env_logger and the like) and installs no `tracing`
//! subscriber gets the same events as `log` records, fields written into the
//! message. Warnings mean an offset was given up, a commit is being retried, a
//! partition was lost, or a consumer error; per-record events are `debug` or
//! below.
//!
//! # Metrics
//!
//! With the `metrics` cargo feature the guard reports through the
//! [`metrics`](https://docs.rs/metrics) facade: install your recorder (for
//! example `metrics-exporter-prometheus`) before `build()`;
//! `examples/prometheus.rs` prints a scrape. The commit thread publishes after
//! every commit cycle and at least once a second. Every series has a `group`
//! label.
//!
//! | name | type | what |
//! |---|---|---|
//! | `offset_guard_<counter>_total` | counter | every counter of [`Stats`], e.g. `offset_guard_acked_total`, `offset_guard_commits_failed_total`, `offset_guard_offsets_failed_total`; [`Stats::failed_log_dropped`] is `offset_guard_failed_log_dropped_total` |
//! | `offset_guard_commit_attempt_duration_seconds` | histogram | each OffsetCommit attempt |
//! | `offset_guard_commit_duration_seconds` | histogram | a commit, from its first attempt to the one that landed |
//! | `offset_guard_committed_offset` | gauge, + `topic`, `partition` | the offset this consumer last committed |
//! | `offset_guard_commit_point` | gauge, + `topic`, `partition` | where a commit would go now |
//! | `offset_guard_outstanding_records` | gauge, + `topic`, `partition` | delivered records not released by acks |
//! | `offset_guard_log_end_offset` | gauge, + `topic`, `partition` | the high watermark librdkafka last saw in a fetch response (no extra request; as fresh as the fetching) |
//! | `offset_guard_lag_records` | gauge, + `topic`, `partition` | `log_end_offset - committed_offset` (at least 0) |
//! | `offset_guard_failed_log_{records_written,resolutions_written,write_errors,rotations}_total` | counter | the failed-offset log's [`failure_log::LogStatus`] (its `dropped` is `offset_guard_failed_log_dropped_total`, from [`Stats`]) |
//! | `offset_guard_failed_log_unwritten_records` | gauge | records the log accepted and has not written yet |
//!
//! When a partition is no longer owned (revoked, lost), its
//! `offset_guard_outstanding_records` and `offset_guard_lag_records` are set to
//! 0 once and its series are no longer updated (the facade cannot remove a
//! series; Prometheus exporters can expire idle ones). The same log-end offset
//! and lag are in [`GuardedConsumer::partitions`].
//!
//! # Cargo features
//!
//! - `log` (default): `tracing`'s `log` compatibility (see above).
//! - `metrics`: the metrics above; pulls in the `metrics` crate.
//! - `cli` (default): the `offset-guard` command (pulls in `clap` and
//!   `unicode-width` for the binary only; the library does not use them).
//! - `sqlite`: the [`progress`] module's SQLite store: each record's progress
//!   written in your own `rusqlite` transaction, for exactly-once effects in
//!   a database; with the own-loop front-end, records stored as done are
//!   skipped after a restart or rebalance. Also the failed-offset log in a
//!   SQLite database (`failure_log::FailedOffsetLog::sqlite`).
//!   Pulls in `rusqlite` with its bundled SQLite.
//! - `postgres`: the same progress store in PostgreSQL (`progress::postgres`,
//!   through your own `tokio-postgres` client or transaction, with a
//!   `Loader` for the guard's synchronous loader). Also the failed-offset log
//!   in PostgreSQL (`failure_log::FailedOffsetLog::postgres`).
//!   Pulls in `tokio-postgres`.
//!
//! # Backpressure
//!
//! The owned front-end's poll thread never waits for the application: it
//! keeps polling (heartbeats, `max.poll.interval.ms`, rebalance callbacks,
//! errors) however slow the processing is, and bounds memory by pausing
//! partitions (librdkafka's `rd_kafka_pause_partitions`; the fetch goes on
//! from the same position at resume):
//!
//! | limit | default | reached | lifted |
//! |---|---|---|---|
//! | backlog: records fetched and not yet received by [`recv`](GuardedConsumer::recv) | [`prefetch_batches`](GuardBuilder::prefetch_batches) x [`batch_size`](GuardBuilder::batch_size) = 32,768 (at least 1,024) | unless `recv` takes half of it within 100 ms, the partitions with records waiting are paused | at half |
//! | outstanding records of one partition (delivered, not released by acks) | [`max_outstanding_per_partition`](GuardBuilder::max_outstanding_per_partition) = 50,000 | that partition is paused | at half |
//! | outstanding records of all partitions | [`max_outstanding`](GuardBuilder::max_outstanding) = 100,000 | every partition holding outstanding records is paused | at half |
//!
//! The 100 ms grace on the backlog is the only time the poll thread waits
//! for the application: a pause makes librdkafka drop what it prefetched
//! for the partition and fetch it again after the resume, which costs more
//! than a burst an application only a little slower than the poll thread
//! takes in a few milliseconds (BENCHMARKS.md, section 10); rebalance
//! callbacks and errors are served at most that much later.
//!
//! A record that is never acked thus stops its own partition at the cap,
//! not the consumer. Pauses are counted in [`Stats::partitions_paused`]. The
//! application's own [`pause`](GuardedConsumer::pause) /
//! [`resume`](GuardedConsumer::resume) go through the guard too (never through
//! [`consumer()`](GuardedConsumer::consumer), whose pause the guard's flow
//! control would lift): after `pause` returns, no record of the partition is
//! handed out until `resume`, which hands out the held records first, in order.
//! A pause ends with the partition's assignment, as in Kafka's consumer.
//! The own-loop front-end polls in your loop, so none of this applies there.
//!
//! # Rebalances
//!
//! The guard installs its own `ConsumerContext` ([`GuardContext`], wrapping
//! yours if you pass one to [`GuardBuilder::context`]):
//!
//! - **Assign**: every assigned partition starts a new epoch; acks and queued
//!   offsets of an earlier assignment of the same partition are stale. Offsets
//!   kept from the rebalance that just ended (see revoke) are committed if the
//!   partition came back and they are ahead of the group's committed offset;
//!   fetching then starts there, so those records are not delivered again.
//!   With [`GuardBuilder::stored_progress`], the watermark stored in your
//!   database is such a candidate too (see [`progress`]).
//! - **Revoke** (eager `range`/`roundrobin`, and the revoked subset under
//!   `cooperative-sticky`): the callback hands the revoked partitions to the
//!   guard's one commit worker and waits. The worker waits up to
//!   [`revoke_grace`](crate::GuardBuilder::revoke_grace) for acks of records
//!   already handed to the application, then ends the assignment (later acks
//!   are stale), commits each partition's contiguous acked offset
//!   synchronously (retried within
//!   [`revoke_timeout`](crate::GuardBuilder::revoke_timeout)), and forgets the
//!   partitions. Records fetched but not yet handed out are not handed out.
//!   Under cooperative rebalancing the other partitions keep flowing.
//! - **REBALANCE_IN_PROGRESS** on a revoke's commit (MockCluster answers an
//!   eager revoke's commit so; a real broker usually accepts it): never retried
//!   inside the callback. The offsets are kept; at the assign that ends the
//!   rebalance they are committed for partitions assigned back to this member
//!   (when ahead of the group's committed offset) and dropped for the rest
//!   (counted in [`Stats::offsets_rebalance_dropped`](crate::Stats), recorded
//!   with reason `rebalance_dropped`). A stale generation
//!   (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID) on any commit is handled the same way.
//! - **Lost** (`assignment_lost()`: session timeout, max.poll exceeded, fenced,
//!   a commit refused with a stale generation): nothing is committed while the
//!   partitions are not ours; later acks of those assignments are stale. The
//!   acked offsets not committed are kept like the offsets above: if the next
//!   assign gives a partition back to this member, its offset is committed
//!   then when still ahead of the group's committed offset (never backwards)
//!   and fetching starts there, so records acked before the loss are not
//!   delivered again; otherwise it goes to the failure sink with reason `lost`
//!   (also when the consumer stops first).
//!
//! User hooks ([`GuardBuilder::on_assign`](crate::GuardBuilder::on_assign),
//! [`on_revoke`](crate::GuardBuilder::on_revoke),
//! [`on_lost`](crate::GuardBuilder::on_lost)) run in the rebalance callback,
//! after the guard's own work; keep them short.

#![warn(missing_docs)]

// Layers (imports point down only; see DESIGN.md "Target structure"):
// 5 assembly: builder
// 4 front-end: consumer (handle), poll (poll thread), delivery (Record)
// 3 rebalance: rdkafka callbacks turned into commands to the commit worker
// 2 commit/: the worker behind its mailbox (commit::handle is the only door)
// 1 assignment (slots, epochs, acks), failures (one recorder), config, retry, error
// 0 partition, deadline, threads, tracker, sink, stats, failure_log
//
// State and its owner: the commit worker (commit/worker.rs) alone owns the
// queue, schedule, idle state, kept and replayed offsets and the batch in
// flight; others send it commands (commit/handle.rs). Shared, each behind a
// private lock: the assignment (assignment.rs), the failure recorder
// (failures.rs), the committed-offset view (commit/view.rs, written only by the
// worker). Counters and the run state are atomics.
//
// Lock order (the only nesting): the assignment's slot map, then one slot.
// No other lock is held while taking another, calling out to user code
// (sinks, hooks) or calling librdkafka.
mod assignment;
mod backlog;
#[doc(hidden)]
pub mod bench_support;
mod builder;
mod commit;
mod config;
mod consumer;
mod consumer_handle;
mod deadline;
mod delivery;
mod error;
pub mod failure_log;
mod failures;
mod flow;
mod guard;
mod own_loop;
mod partition;
mod poll;
pub mod progress;
mod rebalance;
mod retry;
mod sink;
mod stats;
mod surface;
mod telemetry;
mod threads;
mod tracker;

pub use assignment::{AckStatus, AckToken};
pub use builder::{GuardBuilder, OffsetGuard};
pub use config::{
    DEFAULT_MAX_OUTSTANDING, DEFAULT_MAX_OUTSTANDING_PER_PARTITION, DEFAULT_PREFETCH_BATCHES,
    DEFAULT_PROGRESS_LOAD_TIMEOUT, DEFAULT_STUCK_AFTER, MAX_PREFETCH_BATCHES,
};
pub use consumer::GuardedConsumer;
pub use consumer_handle::ConsumerHandle;
pub use delivery::Record;
pub use error::{BuildError, Error, InvalidBackoff};
pub use guard::{LOG_FLUSH_ALLOWANCE, PartitionStatus, ShutdownReport};
pub use own_loop::{GuardHandle, ServeCallbacks, Tracked};
pub use partition::{CommittedOffset, DroppedOffset};
pub use rebalance::{Assigned, GuardContext, Lost, Revoked};
pub use retry::{ErrorClass, MAX_RETRY_DELAY, RetryPolicy, classify, classify_code};
pub use sink::{FailedOffset, FailureReason, FailureSink, MemorySink, UnknownFailureReason};
pub use stats::Stats;
pub use threads::GuardThread;
