//! Exactly-once into a database: each record's progress stored in your own
//! SQL transaction. The stores: `progress::sqlite` (feature `sqlite`,
//! through your `rusqlite` connection) and `progress::postgres` (feature
//! `postgres`, async, through your `tokio-postgres` client or transaction;
//! the same calls and errors, the same model, each with its own SQL). This
//! module holds what every store shares: the [`PartitionProgress`] model and
//! [`ProgressError`]. The steps below name the SQLite calls; with PostgreSQL
//! they are the same `postgres::` calls, awaited, with
//! `postgres::Loader` as the guard's loader (see that module for the loader,
//! the row locks that make concurrent marks safe, and the isolation level).
//!
//! # The guarantee
//!
//! You process a record inside your own database transaction and, in that
//! same transaction, call `sqlite::mark_done` for it. The record's effects
//! and its "done" mark commit together or not at all: after a crash, a
//! rebalance or a failed Kafka commit, `sqlite::load` tells exactly which
//! records are done, and a record marked twice makes the second transaction
//! fail with [`ProgressError::AlreadyDone`] (roll it back), so no effect is
//! applied twice. Optional idempotency by business key (see
//! [below](#idempotency-by-business-key)): a record whose key was processed
//! within a retention period, even at another offset, applies nothing.
//!
//! # The trap: "the highest offset done" skips records
//!
//! With out-of-order processing (concurrent tasks), storing only the highest
//! offset done loses records: offsets 5 and 7 done, 6 still running, a crash,
//! and a restart at 8 never processes 6. The store therefore keeps, per
//! partition, a **watermark** (the next offset to process: every record below
//! it is done) plus a row for every offset done **above** it
//! ([`PartitionProgress`]). When the record at the watermark is marked done,
//! the watermark moves over it and over the done rows right after it, and
//! those rows are deleted in the same transaction: the done table holds only
//! records done out of order, bounded by the records in flight, not by the
//! stream's length.
//!
//! Kafka offsets have gaps (compaction, transaction markers): a watermark
//! waiting for an offset that is no record never moves by `sqlite::mark_done`
//! alone. `sqlite::advance` moves it to a point below which every record you
//! received is done (known from delivery order, as the guard's commit point
//! is), and starts a partition's progress at the offset you started fetching
//! it at. Until a partition's first `advance`, nothing is folded (its done rows
//! all stay). `sqlite::mark_token` (below) does both for you.
//!
//! # With the own-loop front-end
//!
//! 1. [`GuardBuilder::stored_progress`](crate::GuardBuilder::stored_progress)
//!    with a loader `(group, topic, partition)` (e.g. `sqlite::load` on a connection the
//!    loader owns: it runs inside your poll, in the assign callback, so never
//!    give it a connection your loop holds locked across a poll). At every
//!    assign the guard reads each assigned partition's progress; where the
//!    stored watermark is ahead of the group's committed offset, it commits
//!    the watermark and fetching starts there. The loads of one assign stop
//!    after [`progress_load_timeout`](crate::GuardBuilder::progress_load_timeout)
//!    (default 10 s); a partition not loaded is handed out in full and the
//!    mark refuses what is done already.
//! 2. [`GuardHandle::track_or_skip`](crate::GuardHandle::track_or_skip) for
//!    each message: [`Tracked::Done`](crate::Tracked::Done) for a record the
//!    database has as done (acked for you, counted in
//!    [`Stats::records_skipped_done`](crate::Stats::records_skipped_done)),
//!    else [`Tracked::Process`](crate::Tracked::Process) with its token.
//! 3. In the transaction that applies the record's effects,
//!    `sqlite::mark_token(&tx, group, &token)`; commit; then ack the token.
//!    On [`ProgressError::AlreadyDone`] roll back and ack (the record is done:
//!    another member processed it during a rebalance).
//!
//! `examples/exactly_once_db.rs` runs it on an embedded MockCluster.
//!
//! The Kafka commit then follows the database as a lagging mirror (acks
//! come after the database commits) and lag tools keep working; after a
//! crash between the database commit and the ack, the record is skipped, not
//! processed again. With [`GuardedConsumer`](crate::GuardedConsumer) (the
//! owned front-end) the same holds without `track_or_skip`: its poll thread
//! acks the records stored as done and never hands them out; mark each
//! record with `sqlite::mark_token(&tx, group, &record.ack_token())` and ack
//! it after the transaction committed.
//!
//! # Idempotency by business key
//!
//! A producer retry can write the same order twice, at two offsets: offset
//! progress alone processes both. With a business key (the message key, or
//! one you extract, such as an order id), call
//! `sqlite::mark_token_with_key(&tx, group, &token, key, retention)` (or
//! `postgres::mark_token_with_key(&tx, ...).await`) **first** in the record's
//! transaction, instead of `mark_token`:
//! [`Keyed::Apply`]: apply the effects, commit, ack;
//! [`Keyed::DuplicateKey`]: a record with this key was processed within
//! `retention`: apply nothing, commit (the offset is marked done), ack.
//! Keys are kept per group (not per topic or partition: the same key on two
//! topics of one group counts as one; give keys a topic prefix if that is
//! not what you want) for `retention`, measured on each member's own clock
//! (older ones are deleted as new ones are marked, and count as new); `retention` is yours to size: longer
//! than the window in which a duplicate can arrive (producer retries,
//! replays). Both front-ends: `message.key()` with the own loop's token,
//! `record.key()` with `record.ack_token()`. `mark_key` (in both stores) is
//! the same check on its own.
//!
//! # Rebalances and commit failures
//!
//! The database decides what is done, never Kafka's commit: a record
//! processed by a member that lost its partition meanwhile (a zombie) and by
//! the new owner is marked by whichever transaction commits first, and the
//! other gets [`ProgressError::AlreadyDone`] (roll back, ack). Commits that
//! fail (retries exhausted, logged in the failed-offset log) only make
//! Kafka's commit lag; at the next assign the stored watermark is committed
//! and fetching starts there. `tests/exactly_once_storm.rs` counts the
//! effects in SQLite after members joined and left repeatedly (killed and
//! shut down; eager and cooperative; both front-ends, several members on one
//! file with WAL and a busy timeout) and after a commit-failure burst, a
//! kill and a restart: one effect per record, Kafka's commit never seen past
//! the database's watermark.
//!
//! # Schema
//!
//! PostgreSQL's tables are the same with PostgreSQL's types (`BIGINT`
//! offsets, `BYTEA` keys), plus a PL/pgSQL function that makes each mark
//! one statement (one round trip); `postgres` lists its migration. `sqlite::migrate` creates, once (version 1, in `offset_guard_schema`; it
//! never uses `PRAGMA user_version`, which stays yours):
//!
//! ```sql
//! CREATE TABLE offset_guard_schema (version INTEGER NOT NULL);   -- one row: 1
//! CREATE TABLE offset_guard_progress (
//!     group_id TEXT NOT NULL, topic TEXT NOT NULL, partition_id INTEGER NOT NULL,
//!     watermark INTEGER,                  -- next offset to process; NULL: not started
//!     PRIMARY KEY (group_id, topic, partition_id)) WITHOUT ROWID;
//! CREATE TABLE offset_guard_done (        -- offsets done above the watermark
//!     group_id TEXT NOT NULL, topic TEXT NOT NULL, partition_id INTEGER NOT NULL,
//!     record_offset INTEGER NOT NULL,
//!     PRIMARY KEY (group_id, topic, partition_id, record_offset)) WITHOUT ROWID;
//! CREATE TABLE offset_guard_keys (        -- optional idempotency by business key
//!     group_id TEXT NOT NULL, key BLOB NOT NULL,
//!     processed_at INTEGER NOT NULL,      -- milliseconds since the Unix epoch
//!     PRIMARY KEY (group_id, key)) WITHOUT ROWID;
//! CREATE INDEX offset_guard_keys_age ON offset_guard_keys (group_id, processed_at);
//! ```
//!
//! A database migrated by a newer offset-guard gives
//! [`ProgressError::SchemaTooNew`] (from `migrate`, `check_schema` and
//! `load`; in PostgreSQL also from every mark); a table of one of these
//! names that is not the store's gives [`ProgressError::ForeignSchema`];
//! nothing is changed then. `migrate` creates a dropped table or index of
//! version 1 again and leaves the other tables' rows as they are, except
//! the version table `offset_guard_schema`: without it the version is
//! unknown, and `migrate` refuses with [`ProgressError::ForeignSchema`]
//! (restore its one row, `1`, by hand). A group
//! id or topic with a NUL byte is refused by both stores
//! ([`ProgressError::InvalidArgument`]).
//!
mod error;
mod model;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod shared;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use error::ProgressError;
pub(crate) use error::with_causes;
pub use model::{Change, Keyed, MarkRefused, PartitionProgress};
