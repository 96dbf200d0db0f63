//! The durable failed-offset log: every offset the guard gave up on, on disk.
//!
//! [`FailedOffsetLog`] is a [`FailureSink`](crate::FailureSink) that appends
//! each [`FailedOffset`](crate::FailedOffset) to a JSON Lines file (or, with
//! the `sqlite` cargo feature, to a table of a SQLite database: see
//! [In a database](#in-a-database));
//! [`LogStream`] reads it back line by line (and [`LogReader`] into memory);
//! the `offset-guard failures` command prints it;
//! with [`GuardBuilder::replay_failed_offsets`](crate::GuardBuilder::replay_failed_offsets)
//! the next run commits each unresolved offset again when its partition is
//! assigned, if that does not move the group's committed offset backwards,
//! and appends the resolution either way.
//!
//! # Format
//!
//! UTF-8 JSON Lines, one record per line, append-only. Every line carries the
//! format version `"v":1` and a `"kind"`:
//!
//! ```text
//! {"v":1,"kind":"failure","time":"2026-11-23T14:30:36.123Z","group_id":"billing","member_id":"rdkafka-1f0c","topic":"orders","partition":3,"offset":42,"reason":"retries_exhausted","error_code":"RequestTimedOut","error_message":"Broker: Request timed out","attempts":5,"elapsed_ms":9120}
//! {"v":1,"kind":"resolved","time":"2026-11-23T14:31:02.007Z","group_id":"billing","topic":"orders","partition":3,"offset":42,"resolution":"superseded","committed_offset":57}
//! ```
//!
//! - `time`: RFC 3339, UTC, milliseconds.
//! - `member_id`, `error_code`: `null` when unknown.
//! - `offset`: the commit offset (the next record to read), as the guard commits it.
//! - `reason`: `retries_exhausted`, `fatal`, `lost`, `shutdown_deadline` or
//!   `rebalance_dropped` ([`FailureReason`](crate::FailureReason)).
//! - `error_code`: the name of the `rdkafka::error::RDKafkaErrorCode` variant
//!   (`RequestTimedOut`, `GroupAuthorizationFailed`, ...), not librdkafka's
//!   `REQUEST_TIMED_OUT` form; `error_message` is the readable message.
//! - `resolution`: `recommitted` (the offset itself was committed later),
//!   `superseded` (a higher offset, `committed_offset`, was committed) or
//!   `manual` (marked resolved by hand with `offset-guard resolve`; nothing was
//!   committed).
//! - `note`, `by` (optional, on any resolution; written by `resolve`): why, and
//!   who. Absent when not set.
//!
//! ```text
//! {"v":1,"kind":"resolved","time":"2026-11-23T15:02:11.480Z","group_id":"billing","topic":"orders","partition":3,"offset":43,"resolution":"manual","note":"poison record, skipped","by":"ops"}
//! ```
//!
//! Failures are never rewritten; a later `resolved` line marks them done:
//! the guard appends one when a commit of the partition lands at or past
//! failed offsets of the same run, and when replay settles an offset of an
//! earlier run. A
//! failure is resolved by a *later* resolution for the same group, topic and
//! partition whose offset (or `committed_offset`) is `>=` its offset; a
//! `manual` resolution resolves only the failures at exactly its offset
//! ([`unresolved`], [`Resolution::resolves`]). Readers ignore unknown fields,
//! so version 1 may grow fields; a line with a higher `v` is skipped and
//! reported. Readers older than the `manual` resolution report such a line as
//! invalid and skip it (they show the failure as unresolved; nothing else
//! changes).
//!
//! # Durability
//!
//! [`FailureSink::record`](crate::FailureSink::record) only queues the record
//! for a writer thread: it never blocks on disk I/O. The writer writes each
//! record as one `write` of the whole line (with its newline) and, by
//! default, `fsync`s after each ([`FsyncPolicy`]). Records still queued when
//! the *process* dies are lost; call [`FailedOffsetLog::flush`] (or
//! [`close`](FailedOffsetLog::close)) where durability matters, e.g. at shutdown.
//! A failed write is counted in [`LogStatus`], logged with `tracing::warn!`,
//! and the record is kept in memory (up to
//! [`max_unwritten`](LogBuilder::max_unwritten)) and written again later.
//!
//! The queue to the writer thread is unbounded (failures are rare: at most
//! one per partition per commit attempt), so `record` never blocks even when
//! the disk hangs; the queue of records kept after failed writes is bounded.
//!
//! A crash can leave a torn last line; the reader reports it as a
//! [`ReadIssue`] and the writer starts a fresh line when it reopens the file.
//!
//! # Rotation
//!
//! When the next line would take the file past
//! [`max_file_bytes`](LogBuilder::max_file_bytes), the file is renamed to
//! `path.1` (`path.1` to `path.2`, and so on) and a new one started; at most
//! [`max_files`](LogBuilder::max_files) files are kept, the oldest dropped.
//! [`LogStream::open`] and [`LogReader::open`] read `path.N ... path.1,
//! path`, oldest first.
//!
//! # One writer per log
//!
//! Two writers on one log would rotate it under each other and lose records,
//! so [`LogBuilder::open`] takes an exclusive lock on a lock
//! file next to the log, `path.lock` (created if missing, never deleted, not
//! a rotated file), and holds it for the writer's whole life: rotation
//! renames only the log files, so the lock stays valid across rotations. A
//! second writer, in this process or another one, fails with
//! [`LogError::InUse`] once the lock stayed taken for 250 ms (`open` tries
//! again meanwhile: a child process forked while a writer held the lock
//! shares it until it calls `exec`, so a writer closed a moment ago can
//! still be seen holding it). The lock is released when the writer stops:
//! [`close`](FailedOffsetLog::close), the drop of the last handle, or the
//! process's exit (the operating system releases it even after a crash, so a
//! stale lock file is harmless). It is an advisory lock (`flock` on Unix,
//! `LockFileEx` on Windows): it keeps `FailedOffsetLog`s apart, not other
//! programs; deleting `path.lock` while a writer runs defeats it. Clone the
//! handle to share one writer. Readers ([`LogReader`], the CLI) take no lock.
//!
//! The log path must be a regular file (or not exist yet): a directory, FIFO,
//! device (`/dev/null`) or socket is refused with [`LogError::NotAFile`],
//! checked before the file is opened and again on the opened file (which is
//! opened non-blocking, so a FIFO never blocks the open).
//!
//! # Reading
//!
//! [`LogStream`] reads the log line by line with bounded memory (one line of
//! at most [`MAX_LINE_BYTES`] at a time), whatever its size, across the
//! rotated files; fold what you need while streaming: [`UnresolvedOffsets`]
//! keeps only the unresolved offsets per group/topic/partition,
//! [`LogSummary`] one summary per partition, and [`ResolutionIndex`] answers
//! "is this failure resolved later?" in a second pass. [`LogReader`] reads
//! the whole log into memory, for small logs and tests. A UTF-8 byte order
//! mark at the start of a file is skipped. Readers never fail on the content
//! of a file: damaged lines, non-UTF-8 lines, unreadable files and a rotated
//! file missing between others are [`ReadIssue`]s.
//!
//! # In a database
//!
//! A service that runs on several machines loses a local log file when an
//! instance moves. With the `sqlite` cargo feature,
//! `FailedOffsetLog::sqlite(path)` keeps the log in a table of a SQLite
//! database instead (typically the database the service writes its results
//! and its [`progress`](crate::progress) to), so that whichever member is
//! assigned a partition next replays its failures
//! ([`replay_failed_offsets`](crate::GuardBuilder::replay_failed_offsets)
//! reads the unresolved failures of the consumer's group from the table and
//! appends the resolutions there). The file stays the default.
//!
//! ```text
//! GuardBuilder::failed_offset_log(FailedOffsetLog::sqlite("/var/lib/app/app.db"))
//! offset-guard failures sqlite:///var/lib/app/app.db        # absolute path
//! offset-guard resolve -l sqlite:app.db -g G -t T -p N ...  # relative path
//! ```
//!
//! The writer creates the tables at open when neither exists (in one write
//! transaction, so processes starting together create them once); this is
//! migration 1, schema version `DB_SCHEMA_VERSION` = 1, kept in a version
//! table of its own, apart from the progress store's:
//!
//! ```sql
//! CREATE TABLE offset_guard_log_schema (version INTEGER NOT NULL);  -- one row: 1
//! CREATE TABLE offset_guard_failed_offsets (
//!     id            INTEGER PRIMARY KEY AUTOINCREMENT,  -- log order
//!     kind          TEXT    NOT NULL,  -- failure | resolved
//!     time          TEXT    NOT NULL,  -- RFC 3339, UTC, milliseconds
//!     group_id      TEXT    NOT NULL,
//!     topic         TEXT    NOT NULL,
//!     partition_id  INTEGER NOT NULL,
//!     commit_offset INTEGER NOT NULL,  -- `offset` of the line
//!     reason        TEXT,              -- failures: retries_exhausted, fatal, ...
//!     resolution    TEXT,              -- resolutions: recommitted, superseded, manual
//!     line          TEXT    NOT NULL   -- the entry's JSON line (format above)
//! );
//! CREATE INDEX offset_guard_failed_offsets_group ON offset_guard_failed_offsets (group_id, id);
//! ```
//!
//! One row per log line, the same content as the file: `line` is the entry's
//! canonical JSON line (without its newline) and is what readers parse, so
//! `LogStream::open_sqlite` and `LogReader::open_sqlite` yield the same
//! [`LogEntry`]s, and everything that folds entries works unchanged. The
//! other columns are copied from the line at insert, for your own queries
//! (`SELECT ... WHERE group_id = ? AND kind = 'failure'`). Readers go by
//! `id` order, and report a row whose `line` is not a valid log line as a
//! [`ReadIssue`] with the row's `id` as the line number, like a damaged line.
//! A newer schema version is [`LogError::SchemaTooNew`], a table of the log's
//! name that is not the log's [`LogError::ForeignSchema`] (nothing is
//! changed then), a database without the tables [`LogError::NoLogTable`] for
//! a reader.
//!
//! Writing works as for the file: [`FailureSink::record`](crate::FailureSink::record)
//! queues, a writer thread inserts each record as one row committed on its
//! own (`synchronous=FULL`: durable when [`flush`](FailedOffsetLog::flush)
//! returns). The writer's connection switches the database to WAL mode
//! (persistent; readers then never wait for writers) and waits up to 1 s for
//! another connection's write lock; a write that still finds the database
//! busy or failing is counted in [`LogStatus`], logged with `tracing::warn!`,
//! and the record is kept in memory (up to
//! [`max_unwritten`](LogBuilder::max_unwritten)) and inserted again a second
//! later. There is no writer lock: any number of guards, processes and the
//! CLI may write to one database. The `fsync` policy, rotation and
//! `max_file_bytes` / `max_files` do not apply; delete old rows yourself
//! (resolved failures and their resolutions) if the table grows too large.
//! [`LogLocation`] parses the command line's form: a path, a `sqlite:` URL
//! (percent-escapes in its path decoded; `~` not expanded) or a
//! `postgresql://` URL.
//!
//! # In PostgreSQL
//!
//! With the `postgres` cargo feature, `FailedOffsetLog::postgres(conn)`
//! keeps the log in a table in PostgreSQL (`conn`: a connection string as
//! `tokio_postgres::Config` parses it; no TLS), with the same rows and the
//! same behaviour as in SQLite above, replay included. The tables go into
//! the connection's current schema (the first of its `search_path`; a URL
//! can pick it: `?options=-csearch_path%3Dapp`); migration 1, schema
//! version `PG_LOG_SCHEMA_VERSION` = 1:
//!
//! ```sql
//! CREATE TABLE offset_guard_log_schema (version BIGINT NOT NULL);  -- one row: 1
//! CREATE TABLE offset_guard_failed_offsets (
//!     id            BIGINT GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,
//!     kind TEXT NOT NULL, time TEXT NOT NULL, group_id TEXT NOT NULL,
//!     topic TEXT NOT NULL, partition_id INTEGER NOT NULL,
//!     commit_offset BIGINT NOT NULL, reason TEXT, resolution TEXT,
//!     line          TEXT NOT NULL      -- the entry's JSON line, what readers parse
//! );
//! CREATE INDEX offset_guard_failed_offsets_group ON offset_guard_failed_offsets (group_id, id);
//! ```
//!
//! ```text
//! GuardBuilder::failed_offset_log(FailedOffsetLog::postgres("postgresql://app@db/app"))
//! offset-guard failures postgresql://app@db/app --unresolved
//! offset-guard resolve -l postgresql://app@db/app -g G -t T -p N -o OFFSET -n NOTE
//! ```
//!
//! The writer creates the tables at open when neither exists, in one
//! transaction holding an advisory lock (processes starting together create
//! them once), and checks them (columns and types, version): a newer version
//! is [`LogError::SchemaTooNew`], a table of the log's names that is not the
//! log's [`LogError::ForeignSchema`], nothing changed. Connections are made
//! on threads of their own with a single-threaded tokio runtime (the
//! writer's on the writer thread; a reader's on a reader thread that sends
//! rows through a bounded channel), so opening, writing and reading work
//! from any thread, also inside a tokio runtime. Each record is inserted in
//! a transaction of its own; an unreachable server (connecting waits at most
//! the string's `connect_timeout`, default 5 s), a closed connection (opened
//! again at the next attempt), a statement without an answer within 5 s or a
//! lock not granted within 2 s (`lock_timeout`) fail the attempt: counted in
//! [`LogStatus`], warned, the record kept in memory (up to
//! [`max_unwritten`](LogBuilder::max_unwritten)) and inserted again a second
//! later, as for the file. Errors and issues name the connection string
//! with its password replaced by `***`.
//!
//! ## Order of rows in PostgreSQL
//!
//! Readers return rows by `id`, and the resolution logic needs the rows of
//! a group in the order they were written: a resolution resolves the
//! failures **before** it, at or below its offset. Sequence values are
//! taken at insert but become visible at commit, so with several writers a
//! smaller id can commit after a larger one: a reader could pass it, and a
//! resolution written meanwhile would get a larger id than a failure
//! logged before it. So every insert first takes a transaction-level
//! advisory lock for its group (`pg_advisory_xact_lock(1869048935,
//! hashtext(group_id))`, the first key "oglg" in ASCII) and only then takes
//! its id: the inserts of one group are serialized, and their ids increase
//! in commit order (the identity has `CACHE 1`; do not change it). Within a
//! group, id order is therefore write order, and a reader paging by id never
//! misses a row committed later with a smaller id. Across groups ids are
//! not ordered by commit, and nothing relies on it (replay and the CLI work
//! per group). Another session holding that lock delays the group's inserts
//! (then the 2 s `lock_timeout` and the retry above). A `time`-based order
//! was not chosen: instances' clocks differ.
//!
//! # Command line
//!
//! The `offset-guard` tool (cargo feature `cli`, on by default). Wherever it
//! takes a log `PATH` it also takes a database URL, `sqlite:///abs/path.db`
//! or `sqlite:relative/path.db` (built with the `sqlite` feature),
//! `postgresql://user@host:port/db` or `postgres://...` (built with the
//! `postgres` feature; see [`LogLocation::parse`]); another scheme, or a
//! scheme in a build without its feature, is a usage error (exit code 2)
//! naming it (and the feature).
//!
//!
//! - `offset-guard failures PATH [--json] [--topic T] [--partition N]
//!   [--since RFC3339] [--unresolved] [--summary]` prints the log as an
//!   aligned table (or JSON Lines, or a summary per partition), streaming
//!   the log in bounded memory, and lists damaged lines on stderr.
//! - `offset-guard offsets -b SERVERS -g GROUP [-t TOPIC]... [-l PATH] [--json]`
//!   shows per partition the group's committed offset, the log-end offset, the
//!   lag and the group's unresolved failed offsets from the log (topics
//!   default to the group's topics in the log). Reads only.
//! - `offset-guard recommit -b SERVERS -g GROUP -l PATH [-t TOPIC]... [--dry-run]`
//!   commits, per partition, the highest unresolved failed offset when it is
//!   ahead of the committed offset (or nothing is committed), from a client
//!   that does not join the group, reads the committed offsets back and
//!   appends `recommitted` / `superseded` lines; a failure at or below the
//!   committed offset is recorded as `superseded` by it, never committed
//!   backwards. Refused while the group has active members.
//! - `offset-guard resolve -l PATH -g GROUP -t TOPIC -p N (-o OFFSET... |
//!   --all-unresolved) -n NOTE [--by NAME]` appends `manual` lines for
//!   unresolved failures; an offset that is not one is refused and nothing
//!   written.
//!
//! Broker commands take `--timeout` (all requests together; default 10 s)
//! and `-X KEY=VALUE` librdkafka properties. Names and messages from the log
//! or the broker are printed with control characters escaped. Exit codes: 0
//! success; 1 the log had damaged lines (what was readable was used); 2
//! usage error (also a log URL this build cannot use); 3 the log could not be opened, read or written; 4 the
//! cluster could not be reached in time or a request failed; 5 `recommit`
//! refused: the group has active members; 6 nothing matched; 7 the log is in
//! use by a running writer; 8 writing the output failed.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use offset_guard::failure_log::{
//!     FailedOffsetLog, LogEntry, LogReader, LogStream, Resolution, UnresolvedOffsets,
//! };
//! use offset_guard::{FailedOffset, FailureReason, FailureSink};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let unique = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_nanos();
//! let dir = std::env::temp_dir().join(format!("offset-guard-doc-{}-{unique}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("failed-offsets.jsonl");
//!
//! let log = FailedOffsetLog::open(&path)?;
//! for offset in [42, 43] {
//!     log.record(
//!         FailedOffset::new("billing", "orders", 3, offset, FailureReason::RetriesExhausted)
//!             .with_error_message("Broker: Request timed out")
//!             .with_attempts(5)
//!             .with_elapsed(Duration::from_secs(9)),
//!     );
//! }
//! // Offset 57 was committed later: that covers 42, and 43 too (43 <= 57).
//! log.resolve(Resolution::superseded("billing", "orders", 3, 42, 57));
//! log.flush()?; // written and fsynced
//! assert_eq!(log.status().records_written, 2);
//!
//! // Small logs: all in memory.
//! let reader = LogReader::open(&path)?;
//! assert!(reader.issues().is_empty());
//! assert_eq!(reader.entries().len(), 3);
//! assert!(matches!(&reader.entries()[0], LogEntry::Failure(f) if f.offset == 42));
//! assert!(reader.unresolved().is_empty());
//! let summary = reader.summary();
//! assert_eq!((summary[0].count, summary[0].min_offset, summary[0].max_offset), (2, 42, 43));
//!
//! // Any size: stream it and keep only what is unresolved.
//! let mut open = UnresolvedOffsets::new();
//! for item in LogStream::open(&path)? {
//!     match item {
//!         Ok(entry) => open.push(&entry),
//!         Err(issue) => eprintln!("skipped: {issue}"),
//!     }
//! }
//! assert!(open.is_empty());
//!
//! log.close()?;
//! std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(feature = "sqlite")]
mod db;
mod file_kind;
mod location;
#[cfg(feature = "postgres")]
pub(crate) use location::redact_password;
#[cfg(feature = "postgres")]
mod pg;
mod reader;
mod record;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod rows;
mod writer;

#[cfg(feature = "sqlite")]
pub use db::DB_SCHEMA_VERSION;
pub use location::LogLocation;
#[cfg(feature = "postgres")]
pub use pg::PG_LOG_SCHEMA_VERSION;

pub use reader::{
    LogReader, LogStream, LogSummary, MAX_LINE_BYTES, PartitionSummary, ReadIssue,
    ResolutionCursor, ResolutionIndex, UnresolvedOffsets, resolution_status, summarize, unresolved,
};
pub use record::{
    FORMAT_VERSION, FailureRecord, LogEntry, ReadIssueKind, Resolution, ResolutionKind,
};
pub use writer::{FailedOffsetLog, FsyncPolicy, LogBuilder, LogStatus};

/// Errors opening, writing or reading the failed-offset log.
#[derive(Debug)]
#[non_exhaustive]
pub enum LogError {
    /// The log file (reader), or the directory it goes in (writer), does not exist.
    NotFound {
        /// The path that is missing.
        path: PathBuf,
    },
    /// The file or its directory may not be read or written.
    PermissionDenied {
        /// The path refused.
        path: PathBuf,
    },
    /// A component of the path that must be a directory is not one (or the
    /// log path itself is a directory).
    NotADirectory {
        /// The log path.
        path: PathBuf,
    },
    /// Another I/O error.
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was being done (`open`, `write`, `fsync`, `read`, ...).
        op: &'static str,
        /// The error.
        source: io::Error,
    },
    /// Records could not be written or synced; they are kept in memory and
    /// retried (see [`LogStatus`]).
    Write {
        /// The log path.
        path: PathBuf,
        /// Records accepted but not yet written.
        unwritten: u64,
        /// The last error, as text.
        message: String,
    },
    /// [`FailedOffsetLog::flush_timeout`] gave up waiting.
    Timeout {
        /// The log path.
        path: PathBuf,
        /// How long it waited.
        after: Duration,
    },
    /// The log was closed (or its writer thread is gone).
    Closed {
        /// The log path.
        path: PathBuf,
    },
    /// A builder setting is out of range.
    InvalidConfig {
        /// Which setting and why.
        what: &'static str,
    },
    /// Another writer holds the log: a [`FailedOffsetLog`] in this process
    /// or in another one has it open. One writer per log; clone the handle to
    /// share it.
    InUse {
        /// The log path.
        path: PathBuf,
        /// The lock file that is held (`path` + `.lock`).
        lock_path: PathBuf,
    },
    /// The log path (or its lock file) exists and is not a regular file.
    NotAFile {
        /// The path refused.
        path: PathBuf,
        /// What it is: `directory`, `FIFO`, `character device`,
        /// `block device`, `socket` or `special file`.
        kind: &'static str,
    },
    /// The database of a log kept in a database failed a statement (opening
    /// it, reading or writing rows).
    Database {
        /// The database file (PostgreSQL: the connection string, its password as `***`).
        path: PathBuf,
        /// What was being done (`open`, `create tables`, `read rows`, ...).
        op: &'static str,
        /// The driver's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database holds the log's tables in a newer schema version than
    /// this build knows (a newer offset-guard migrated it). Nothing is changed.
    SchemaTooNew {
        /// The database file (PostgreSQL: the connection string, its password as `***`).
        path: PathBuf,
        /// The version found.
        found: i64,
        /// The newest version this build knows (`DB_SCHEMA_VERSION`).
        supported: i64,
    },
    /// A table with one of the log's names exists but is not the log's (other
    /// columns, no or a strange version row). Nothing is changed.
    ForeignSchema {
        /// The database file (PostgreSQL: the connection string, its password as `***`).
        path: PathBuf,
        /// The table.
        table: String,
        /// What does not match.
        detail: String,
    },
    /// The database has no failed-offset log (a reader found no log tables;
    /// a writer creates them).
    NoLogTable {
        /// The database file (PostgreSQL: the connection string, its password as `***`).
        path: PathBuf,
    },
    /// A log location given as a URL that this build cannot use
    /// ([`LogLocation::parse`]).
    UnsupportedUrl {
        /// The URL given.
        url: String,
        /// Its scheme, lower case (`postgres`, `sqlite`, ...).
        scheme: String,
        /// Why, and what is supported.
        reason: String,
    },
}

impl LogError {
    pub(crate) fn from_io(path: &Path, op: &'static str, e: io::Error) -> LogError {
        let path = path.to_path_buf();
        match e.kind() {
            io::ErrorKind::NotFound => LogError::NotFound { path },
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                LogError::PermissionDenied { path }
            }
            io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory => {
                LogError::NotADirectory { path }
            }
            _ => LogError::Io {
                path,
                op,
                source: e,
            },
        }
    }

    /// The file or its directory is missing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, LogError::NotFound { .. })
    }

    /// Access to the file or its directory was refused.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, LogError::PermissionDenied { .. })
    }

    /// Another writer holds the log ([`LogError::InUse`]).
    pub fn is_in_use(&self) -> bool {
        matches!(self, LogError::InUse { .. })
    }

    /// The path involved, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            LogError::NotFound { path }
            | LogError::PermissionDenied { path }
            | LogError::NotADirectory { path }
            | LogError::Io { path, .. }
            | LogError::Write { path, .. }
            | LogError::Timeout { path, .. }
            | LogError::Closed { path }
            | LogError::InUse { path, .. }
            | LogError::NotAFile { path, .. }
            | LogError::Database { path, .. }
            | LogError::SchemaTooNew { path, .. }
            | LogError::ForeignSchema { path, .. }
            | LogError::NoLogTable { path } => Some(path),
            LogError::InvalidConfig { .. } | LogError::UnsupportedUrl { .. } => None,
        }
    }
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::NotFound { path } => write!(
                f,
                "failed-offset log {}: no such file or directory",
                path.display()
            ),
            LogError::PermissionDenied { path } => {
                write!(f, "failed-offset log {}: permission denied", path.display())
            }
            LogError::NotADirectory { path } => write!(
                f,
                "failed-offset log {}: a parent is not a directory, or the path is a directory",
                path.display()
            ),
            LogError::Io { path, op, source } => {
                write!(f, "failed-offset log {}: {op}: {source}", path.display())
            }
            LogError::Write {
                path,
                unwritten,
                message,
            } => write!(
                f,
                "failed-offset log {}: {unwritten} record(s) not durably written: {message}",
                path.display()
            ),
            LogError::Timeout { path, after } => write!(
                f,
                "failed-offset log {}: flush did not finish within {after:?}",
                path.display()
            ),
            LogError::Closed { path } => {
                write!(f, "failed-offset log {}: closed", path.display())
            }
            LogError::InvalidConfig { what } => {
                write!(f, "invalid failed-offset log setting: {what}")
            }
            LogError::InUse { path, lock_path } => write!(
                f,
                "failed-offset log {}: in use by another writer (its lock {} is held); one writer per log",
                path.display(),
                lock_path.display()
            ),
            LogError::NotAFile { path, kind } => write!(
                f,
                "failed-offset log {}: is a {kind}, not a regular file",
                path.display()
            ),
            _ => self.fmt_database(f),
        }
    }
}

impl LogError {
    /// `Display` for the errors of a log kept in a database, and of URLs.
    fn fmt_database(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Database { path, op, source } => {
                write!(
                    f,
                    "failed-offset log database {}: {op}: {}",
                    path.display(),
                    crate::progress::with_causes(source.as_ref())
                )
            }
            LogError::SchemaTooNew {
                path,
                found,
                supported,
            } => write!(
                f,
                "failed-offset log database {}: schema version {found} is newer than this build knows ({supported}); upgrade offset-guard",
                path.display()
            ),
            LogError::ForeignSchema {
                path,
                table,
                detail,
            } => write!(
                f,
                "failed-offset log database {}: table {table} is not offset-guard's log: {detail}",
                path.display()
            ),
            LogError::NoLogTable { path } => write!(
                f,
                "failed-offset log database {}: no failed-offset log in it (table offset_guard_failed_offsets missing)",
                path.display()
            ),
            LogError::UnsupportedUrl {
                url,
                scheme,
                reason,
            } => write!(f, "failed-offset log {url}: scheme `{scheme}`: {reason}"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::Io { source, .. } => Some(source),
            LogError::Database { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// The highest number of a rotated file (`path.10000`). Files named like
/// rotated files with a higher number (a dated backup such as
/// `path.20261129`) are not part of the log: readers skip them (and say so),
/// the writer never renames or deletes them.
pub const MAX_ROTATED: u64 = 10_000;

/// The rotated files of `path` (`path.1` ... `path.MAX_ROTATED`) that exist,
/// as `(N, path.N)` sorted by `N` ascending (newest first).
pub(crate) fn rotated_siblings(path: &Path) -> Vec<(u64, PathBuf)> {
    let mut all = numbered_siblings(path);
    all.retain(|(n, _)| *n <= MAX_ROTATED);
    all
}

/// Files named `path.N` with `N` above [`MAX_ROTATED`], sorted.
pub(crate) fn beyond_rotation(path: &Path) -> Vec<PathBuf> {
    numbered_siblings(path)
        .into_iter()
        .filter(|(n, _)| *n > MAX_ROTATED)
        .map(|(_, p)| p)
        .collect()
}

fn numbered_siblings(path: &Path) -> Vec<(u64, PathBuf)> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(read_dir) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let prefix = format!("{name}.");
    let mut out: Vec<(u64, PathBuf)> = read_dir
        .filter_map(Result::ok)
        .filter_map(|e| {
            let file_name = e.file_name();
            let suffix = file_name.to_str()?.strip_prefix(&prefix)?;
            if suffix.starts_with('0') || !suffix.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Too long for a u64: beyond any rotation number too.
            let n: u64 = suffix.parse().unwrap_or(u64::MAX).max(1);
            Some((n, path.with_file_name(file_name)))
        })
        .collect();
    out.sort();
    out
}
