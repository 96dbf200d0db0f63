//! The progress store in SQLite, through your own `rusqlite` connection
//! (feature `sqlite`). See the [module docs](super) for the guarantee, the
//! schema and the trap it avoids.
//!
//! Every writing call takes a connection that is inside a transaction (a
//! `rusqlite::Transaction` or `Savepoint` derefs to one) and only adds
//! statements to it: nothing is visible until you commit, nothing stays if you
//! roll back.
//!
//! Several connections writing one database (several tasks, or members of the
//! group on one file): open each transaction with
//! `conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)`
//! and set a busy timeout (`conn.busy_timeout(..)`), so that a writer waits
//! for the write lock instead of failing with `SQLITE_BUSY` (a deferred
//! transaction that reads first and then writes can fail at once; SQLite's
//! documentation, "BEGIN TRANSACTION"). A busy error past the timeout is a
//! [`ProgressError::Database`] that [`is_retryable`] recognises: roll back and
//! run the record again. Pass the consumer's own `group.id`
//! (`GuardHandle::group_id`) as `group`: progress is kept per group.
//!
//! What is checked where: [`migrate`] and [`check_schema`] check the version
//! row, every table's columns and the index; [`load`] (once per partition
//! per assign) and the writing calls of offsets ([`mark_done`], [`advance`]
//! and the calls made of them; one small cached statement each) check the
//! version row; a missing table gives [`ProgressError::NotMigrated`].
//! [`migrate`] creates a dropped table or index of version 1 again, leaving
//! the other tables' rows as they are; not the version table
//! `offset_guard_schema` (without it the version is unknown:
//! [`ProgressError::ForeignSchema`], nothing changed).
//!
//! # Example
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use offset_guard::progress::sqlite;
//!
//! let mut conn = rusqlite::Connection::open_in_memory()?;
//! sqlite::migrate(&conn)?;
//! conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY)")?;
//!
//! // At start: the partition starts where the consumer starts fetching it.
//! let tx = conn.transaction()?;
//! sqlite::advance(&tx, "billing", "orders", 0, 100)?;
//! tx.commit()?;
//!
//! // Per record (here 101 finishes before 100): effects and mark, one transaction.
//! for offset in [101, 100] {
//!     let tx = conn.transaction()?;
//!     tx.execute("INSERT INTO orders (id) VALUES (?1)", [offset])?;
//!     sqlite::mark_done(&tx, "billing", "orders", 0, offset)?;
//!     tx.commit()?;
//! }
//!
//! let progress = sqlite::load(&conn, "billing", "orders", 0)?;
//! assert_eq!(progress.watermark(), Some(102)); // 100 and 101 done, no rows left
//! assert_eq!(progress.done_above().len(), 0);
//!
//! // The same record again: refused, the transaction is rolled back.
//! let tx = conn.transaction()?;
//! let err = sqlite::mark_done(&tx, "billing", "orders", 0, 101).unwrap_err();
//! assert!(err.is_already_done());
//! drop(tx); // rolls back
//! # Ok(())
//! # }
//! ```

use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, params};

use super::error::ProgressError;
use super::model::{Keyed, PartitionProgress};
use super::shared::{
    already_done, check_coordinates, check_floor, check_group, check_mark_offset, check_retention,
    check_version, key_clock, loaded, refused,
};

/// The schema version [`migrate`] creates, stored in `offset_guard_schema`.
pub const SCHEMA_VERSION: i64 = 1;

/// The one migration: version 1, the version table and its row, then
/// [`TABLES_1`] and [`INDEX_1`]. Also in the [module docs](super#schema).
const MIGRATION_1: &str = "
CREATE TABLE offset_guard_schema (
    version INTEGER NOT NULL
);
INSERT INTO offset_guard_schema (version) VALUES (1);
";

/// Version 1's tables, each created only when missing: [`migrate`] runs it
/// on a fresh database and to repair one of version 1 where a table was
/// dropped (existing tables and rows are not touched).
const TABLES_1: &str = "
CREATE TABLE IF NOT EXISTS offset_guard_progress (
    group_id     TEXT    NOT NULL,
    topic        TEXT    NOT NULL,
    partition_id INTEGER NOT NULL,
    watermark    INTEGER,
    PRIMARY KEY (group_id, topic, partition_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offset_guard_done (
    group_id      TEXT    NOT NULL,
    topic         TEXT    NOT NULL,
    partition_id  INTEGER NOT NULL,
    record_offset INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, partition_id, record_offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offset_guard_keys (
    group_id     TEXT    NOT NULL,
    key          BLOB    NOT NULL,
    processed_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, key)
) WITHOUT ROWID;
";

/// Version 1's index, created when missing (after the tables were checked).
const INDEX_1: &str = "CREATE INDEX IF NOT EXISTS offset_guard_keys_age ON offset_guard_keys (group_id, processed_at)";

/// The store's one index (created by [`MIGRATION_1`]).
const KEYS_INDEX: &str = "offset_guard_keys_age";

/// The store's tables and their columns, as [`check_schema`] expects them.
const TABLES: [(&str, &[&str]); 4] = [
    ("offset_guard_schema", &["version"]),
    (
        "offset_guard_progress",
        &["group_id", "topic", "partition_id", "watermark"],
    ),
    (
        "offset_guard_done",
        &["group_id", "topic", "partition_id", "record_offset"],
    ),
    ("offset_guard_keys", &["group_id", "key", "processed_at"]),
];

fn db(action: &'static str) -> impl Fn(rusqlite::Error) -> ProgressError {
    move |e| {
        let msg = e.to_string();
        if msg.contains("no such table") {
            ProgressError::NotMigrated { detail: msg }
        } else {
            ProgressError::Database {
                action,
                source: Box::new(e),
            }
        }
    }
}

/// Whether the error is SQLite's way of saying "run the transaction again":
/// the database busy or locked by another connection (`SQLITE_BUSY`,
/// `SQLITE_LOCKED` and their extended codes, such as `SQLITE_BUSY_SNAPSHOT`
/// (517): a transaction that read before another connection committed a
/// write cannot write; waiting does not help, a new transaction does). Roll
/// back and process the record (or batch) again, preferably in an
/// `IMMEDIATE` transaction (see the module docs). As
/// `progress::postgres::is_retryable`.
pub fn is_retryable(e: &ProgressError) -> bool {
    let ProgressError::Database { source, .. } = e else {
        return false;
    };
    source
        .downcast_ref::<rusqlite::Error>()
        .and_then(rusqlite::Error::sqlite_error_code)
        .is_some_and(|c| {
            matches!(
                c,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            )
        })
}

/// Creates the store's tables if they do not exist (schema version
/// [`SCHEMA_VERSION`]), then checks them. Safe to call at every start, also
/// inside your own migration transaction (it uses a savepoint); it never
/// touches `PRAGMA user_version` or tables of other names.
///
/// # Errors
///
/// [`ProgressError::SchemaTooNew`] when a newer offset-guard migrated the
/// database, [`ProgressError::ForeignSchema`] when a table of one of the
/// store's names is not the store's, [`ProgressError::Database`] when a
/// statement fails. Nothing is changed then.
pub fn migrate(conn: &Connection) -> Result<(), ProgressError> {
    conn.execute_batch("SAVEPOINT offset_guard_migrate")
        .map_err(db("begin migration"))?;
    let result = migrate_inside(conn);
    let end = match result {
        Ok(()) => "RELEASE offset_guard_migrate",
        Err(_) => "ROLLBACK TO offset_guard_migrate; RELEASE offset_guard_migrate",
    };
    conn.execute_batch(end).map_err(db("end migration"))?;
    result
}

fn migrate_inside(conn: &Connection) -> Result<(), ProgressError> {
    let existing: Vec<String> = {
        let mut stmt = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE name LIKE 'offset\\_guard\\_%' ESCAPE '\\'",
            )
            .map_err(db("list tables"))?;
        stmt.query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(db("list tables"))?
    };
    if existing.iter().any(|t| t == "offset_guard_schema") {
        // The version first: a newer or foreign schema is not repaired.
        let (schema, columns) = TABLES[0];
        check_table(conn, schema, columns)?;
        schema_version(conn)?;
    } else {
        // Only the store's own names block it: a user's `offset_guard_audit`
        // is another name, left alone.
        if let Some(t) = existing
            .iter()
            .find(|t| t.as_str() == KEYS_INDEX || TABLES.iter().any(|(n, _)| n == t))
        {
            return Err(ProgressError::ForeignSchema {
                table: t.clone(),
                detail: "exists without offset_guard_schema (not created by offset-guard, or its \
                         version table was dropped)"
                    .into(),
            });
        }
        conn.execute_batch(MIGRATION_1)
            .map_err(db("create tables"))?;
    }
    conn.execute_batch(TABLES_1).map_err(db("create tables"))?;
    check_tables(conn)?;
    conn.execute_batch(INDEX_1).map_err(db("create index"))?;
    check_schema(conn)
}

/// Checks that the store's tables and index exist in the version this build
/// knows, with the expected columns. [`migrate`] ends with it.
///
/// # Errors
///
/// [`ProgressError::NotMigrated`] when a table or the index is missing,
/// [`ProgressError::SchemaTooNew`] (checked before the other tables'
/// columns: a newer version may have changed them),
/// [`ProgressError::ForeignSchema`] as for [`migrate`].
pub fn check_schema(conn: &Connection) -> Result<(), ProgressError> {
    check_tables(conn)?;
    let index: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?1",
            [KEYS_INDEX],
            |r| r.get(0),
        )
        .optional()
        .map_err(db("read index"))?;
    if index.is_none() {
        return Err(ProgressError::NotMigrated {
            detail: format!("no index {KEYS_INDEX}"),
        });
    }
    Ok(())
}

fn check_tables(conn: &Connection) -> Result<(), ProgressError> {
    // The version first: a newer offset-guard may have added or changed
    // columns, which is `SchemaTooNew`, not a foreign table.
    let [(schema, columns), rest @ ..] = &TABLES;
    check_table(conn, schema, columns)?;
    schema_version(conn)?;
    for (table, expected) in rest {
        check_table(conn, table, expected)?;
    }
    Ok(())
}

fn check_table(conn: &Connection, table: &str, expected: &[&str]) -> Result<(), ProgressError> {
    let found: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .map_err(db("read table columns"))?;
        stmt.query_map([table], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(db("read table columns"))?
    };
    if found.is_empty() {
        return Err(ProgressError::NotMigrated {
            detail: format!("no table {table}"),
        });
    }
    let mut sorted = found.clone();
    sorted.sort();
    let mut want: Vec<&str> = expected.to_vec();
    want.sort();
    if sorted != want {
        return Err(ProgressError::ForeignSchema {
            table: table.into(),
            detail: format!("columns {found:?}, expected {expected:?}"),
        });
    }
    Ok(())
}

fn schema_version(conn: &Connection) -> Result<(), ProgressError> {
    let versions: Vec<rusqlite::types::Value> = {
        let mut stmt = conn
            .prepare_cached("SELECT version FROM offset_guard_schema")
            .map_err(db("read schema version"))?;
        stmt.query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(db("read schema version"))?
    };
    if let [other] = versions.as_slice()
        && !matches!(other, rusqlite::types::Value::Integer(_))
    {
        return Err(ProgressError::ForeignSchema {
            table: "offset_guard_schema".into(),
            detail: format!("version {other:?} is not one offset-guard wrote"),
        });
    }
    // Several rows are refused by their count, whatever their values.
    let ints: Vec<i64> = versions
        .iter()
        .map(|v| match v {
            rusqlite::types::Value::Integer(i) => *i,
            _ => i64::MIN,
        })
        .collect();
    check_version("offset_guard_schema", &ints, SCHEMA_VERSION)
}

fn in_transaction(conn: &Connection, call: &'static str) -> Result<(), ProgressError> {
    if conn.is_autocommit() {
        return Err(ProgressError::NotInTransaction { call });
    }
    Ok(())
}

/// The stored watermark: `None` no row, `Some(None)` a row not started.
fn read_watermark(
    conn: &Connection,
    group: &str,
    topic: &str,
    partition: i32,
) -> Result<Option<Option<i64>>, ProgressError> {
    conn.prepare_cached(
        "SELECT watermark FROM offset_guard_progress
         WHERE group_id = ?1 AND topic = ?2 AND partition_id = ?3",
    )
    .and_then(|mut s| {
        s.query_row(params![group, topic, partition], |r| r.get(0))
            .optional()
    })
    .map_err(db("read watermark"))
}

/// The done rows from `from` up, while contiguous.
fn done_run(
    conn: &Connection,
    group: &str,
    topic: &str,
    partition: i32,
    from: i64,
) -> Result<Vec<i64>, ProgressError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT record_offset FROM offset_guard_done
             WHERE group_id = ?1 AND topic = ?2 AND partition_id = ?3 AND record_offset >= ?4
             ORDER BY record_offset",
        )
        .map_err(db("read done rows"))?;
    let mut rows = stmt
        .query(params![group, topic, partition, from])
        .map_err(db("read done rows"))?;
    let mut run = Vec::new();
    while let Some(row) = rows.next().map_err(db("read done rows"))? {
        let o: i64 = row.get(0).map_err(db("read done rows"))?;
        if o != from + run.len() as i64 {
            break;
        }
        run.push(o);
    }
    Ok(run)
}

/// Inserts the done row of `offset`; `false` when it was there already.
fn insert_done(
    conn: &Connection,
    group: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<bool, ProgressError> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO offset_guard_done (group_id, topic, partition_id, record_offset)
         VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| s.execute(params![group, topic, partition, offset]))
    .map(|inserted| inserted > 0)
    .map_err(db("insert done row"))
}

/// Writes the new watermark and deletes the done rows below it.
fn store_watermark(
    conn: &Connection,
    group: &str,
    topic: &str,
    partition: i32,
    watermark: i64,
) -> Result<(), ProgressError> {
    conn.prepare_cached(
        "INSERT INTO offset_guard_progress (group_id, topic, partition_id, watermark)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (group_id, topic, partition_id) DO UPDATE SET watermark = excluded.watermark",
    )
    .and_then(|mut s| s.execute(params![group, topic, partition, watermark]))
    .map_err(db("write watermark"))?;
    conn.prepare_cached(
        "DELETE FROM offset_guard_done
         WHERE group_id = ?1 AND topic = ?2 AND partition_id = ?3 AND record_offset < ?4",
    )
    .and_then(|mut s| s.execute(params![group, topic, partition, watermark]))
    .map_err(db("delete folded done rows"))?;
    Ok(())
}

/// Marks the record `topic[partition]@offset` done, inside your transaction
/// (`conn` must be in one: pass your `rusqlite::Transaction`). Out of order is
/// fine: the stored watermark only moves over records that are all done, and
/// the done rows it moves over are deleted in the same transaction.
///
/// Cost: one watermark read and one insert; when the record is the one at the
/// watermark, also a read of the done rows right after it, one update and
/// one delete.
///
/// # Errors
///
/// [`ProgressError::AlreadyDone`] when the record was marked before (committed
/// by an earlier transaction, or earlier in this one): roll back.
/// [`ProgressError::InvalidArgument`] (also for a negative offset, and for
/// `i64::MAX`, whose watermark would not fit), [`ProgressError::NotInTransaction`],
/// [`ProgressError::NotMigrated`], [`ProgressError::SchemaTooNew`] /
/// [`ProgressError::ForeignSchema`] (the version row is not this build's),
/// [`ProgressError::Database`].
pub fn mark_done(
    conn: &Connection,
    group: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<(), ProgressError> {
    check_coordinates(group, topic, partition)?;
    check_mark_offset(offset)?;
    in_transaction(conn, "mark_done")?;
    schema_version(conn)?;
    let watermark = read_watermark(conn, group, topic, partition)?.flatten();
    let already = || already_done(topic, partition, offset, watermark);
    // Only the run right after the watermark matters for folding; a done
    // row elsewhere is caught by the insert's primary key.
    let run = match watermark {
        Some(w) if offset == w => done_run(conn, group, topic, partition, w + 1)?,
        _ => Vec::new(),
    };
    let mut progress = PartitionProgress::from_parts(watermark, run);
    let change = progress
        .mark_done(offset)
        .map_err(|r| refused(r, topic, partition, offset, watermark))?;
    if let Some(o) = change.insert
        && !insert_done(conn, group, topic, partition, o)?
    {
        return Err(already());
    }
    if let Some(w) = change.watermark {
        store_watermark(conn, group, topic, partition, w)?;
    }
    Ok(())
}

/// Starts or moves up a partition's watermark, inside your transaction: every
/// record below `floor` counts as done (or is no record: an offset gap). Use
/// it with the offset your consumer starts the partition at (the group's
/// committed offset, or the first record's offset with no commit), and with
/// any point below which every record you received is done: that steps over
/// gaps (compaction, transaction markers) that [`mark_done`] alone cannot
/// cross. Done rows below the new watermark are deleted. A floor at or below
/// the stored watermark changes nothing.
///
/// # Errors
///
/// [`ProgressError::InvalidArgument`] (also for a negative floor),
/// [`ProgressError::NotInTransaction`], [`ProgressError::NotMigrated`],
/// [`ProgressError::SchemaTooNew`] / [`ProgressError::ForeignSchema`] (the
/// version row is not this build's), [`ProgressError::Database`].
pub fn advance(
    conn: &Connection,
    group: &str,
    topic: &str,
    partition: i32,
    floor: i64,
) -> Result<(), ProgressError> {
    check_coordinates(group, topic, partition)?;
    in_transaction(conn, "advance")?;
    check_floor(floor)?;
    schema_version(conn)?;
    let watermark = read_watermark(conn, group, topic, partition)?.flatten();
    if watermark.is_some_and(|w| floor <= w) {
        return Ok(());
    }
    let run = done_run(conn, group, topic, partition, floor)?;
    let mut progress = PartitionProgress::from_parts(watermark, run);
    if let Some(w) = progress.advance(floor).watermark {
        store_watermark(conn, group, topic, partition, w)?;
    }
    Ok(())
}

/// [`mark_done`] for a record tracked by the own-loop front-end
/// ([`GuardHandle::track_or_skip`](crate::GuardHandle::track_or_skip)), inside
/// your transaction: also moves the watermark up to the token's floor (every
/// record the consumer received of the partition below it is acked, so, with
/// acks after commits, done or no record), which starts a partition's
/// progress and steps over offset gaps. Ack the token after the transaction
/// committed, never before.
///
/// # Errors
///
/// As [`mark_done`]; [`ProgressError::AlreadyDone`]: roll back, then ack the
/// token (the record is done).
pub fn mark_token(
    conn: &Connection,
    group: &str,
    token: &crate::AckToken,
) -> Result<(), ProgressError> {
    let (topic, partition) = (token.topic(), token.partition());
    advance(conn, group, topic, partition, token.progress_floor())?;
    mark_done(conn, group, topic, partition, token.offset())
}

/// [`mark_token`] for many tokens, as `progress::postgres::mark_tokens`: for
/// a transaction that applies a batch of records. The tokens are marked in
/// the order given, each with the outcome of [`mark_token`] one after the
/// other; each partition's progress (watermark and done rows, bounded by the
/// records in flight) is read once and its watermark written once per call:
/// a batch of records in order costs two reads, one update and one delete
/// per partition, and an insert per record done out of order, instead of
/// [`mark_token`]'s reads and writes per token. An empty slice does nothing.
///
/// # Errors
///
/// As [`mark_token`], for the first token that fails (an
/// [`ProgressError::AlreadyDone`] names its topic, partition and offset; an
/// [`ProgressError::InvalidArgument`] is found before any statement). The
/// tokens before it are marked in your transaction (and the failing token's
/// floor advanced, as [`mark_token`] does), the ones after it are not: roll
/// the whole transaction back on any error, then ack the token found done
/// and process the others again. Records done already come back as a run
/// after a failed load (see
/// [`Stats::progress_load_errors`](crate::Stats::progress_load_errors)):
/// rather than one retry per done token, [`load`] the refused token's
/// partition after the rollback and ack every token of the batch it has as
/// done ([`PartitionProgress::is_done`]), then process the rest.
pub fn mark_tokens(
    conn: &Connection,
    group: &str,
    tokens: &[crate::AckToken],
) -> Result<(), ProgressError> {
    for token in tokens {
        check_coordinates(group, token.topic(), token.partition())?;
        check_floor(token.progress_floor())?;
        check_mark_offset(token.offset())?;
    }
    if tokens.is_empty() {
        return Ok(());
    }
    in_transaction(conn, "mark_tokens")?;
    let marks: Vec<Mark<'_>> = tokens
        .iter()
        .map(|t| (t.topic(), t.partition(), t.progress_floor(), t.offset()))
        .collect();
    mark_batch(conn, group, &marks)
}

/// One element of a batch: topic, partition, floor (advanced first), offset.
type Mark<'a> = (&'a str, i32, i64, i64);

/// [`mark_tokens`] after its checks: each element's advance then mark, on
/// watermarks kept in memory; then each moved watermark written once, also
/// when an element failed (those before it stay marked).
fn mark_batch(conn: &Connection, group: &str, marks: &[Mark<'_>]) -> Result<(), ProgressError> {
    schema_version(conn)?;
    let mut batch = Batch::default();
    let mut result = Ok(());
    for &mark in marks {
        if let Err(e) = batch.mark(conn, group, mark) {
            result = Err(e);
            break;
        }
    }
    let written = batch
        .moved()
        .try_for_each(|((topic, partition), w)| store_watermark(conn, group, topic, partition, w));
    // A refusal is the answer, also when writing the moves before it failed.
    result.and(written)
}

/// The progress of the partitions of a [`mark_tokens`] call, read once and
/// kept in memory until its end.
#[derive(Default)]
struct Batch<'a> {
    /// (topic, partition), progress, whether its watermark moved.
    parts: Vec<((&'a str, i32), PartitionProgress, bool)>,
}

impl<'a> Batch<'a> {
    /// The element's advance, then its mark, on the partition's progress as
    /// kept here; a record done out of order gets its done row at once.
    fn mark(
        &mut self,
        conn: &Connection,
        group: &str,
        (topic, partition, floor, offset): Mark<'a>,
    ) -> Result<(), ProgressError> {
        let i = match self
            .parts
            .iter()
            .position(|(k, ..)| *k == (topic, partition))
        {
            Some(i) => i,
            None => {
                let progress = read_progress(conn, group, topic, partition)?;
                self.parts.push(((topic, partition), progress, false));
                self.parts.len() - 1
            }
        };
        let (_, progress, moved) = &mut self.parts[i];
        *moved |= progress.advance(floor).watermark.is_some();
        let watermark = progress.watermark();
        let change = progress
            .mark_done(offset)
            .map_err(|r| refused(r, topic, partition, offset, watermark))?;
        *moved |= change.watermark.is_some();
        if let Some(o) = change.insert
            && !insert_done(conn, group, topic, partition, o)?
        {
            return Err(already_done(topic, partition, offset, watermark));
        }
        Ok(())
    }

    /// The partitions whose watermark moved, with it.
    fn moved(&self) -> impl Iterator<Item = ((&'a str, i32), i64)> + '_ {
        self.parts
            .iter()
            .filter_map(|(k, p, moved)| Some((*k, p.watermark().filter(|_| *moved)?)))
    }
}

/// [`mark_token`] with idempotency by business key: marks the tracked record
/// done and records its `key` (the message key, or one you extract, such as
/// an order id), inside your transaction. Call it **first** in the
/// transaction, before applying the record's effects:
///
/// - [`Keyed::Apply`]: the first record with this key within `retention`:
///   apply the effects, commit, ack the token.
/// - [`Keyed::DuplicateKey`]: a record with this key was processed within
///   `retention` at another offset (a producer retry wrote it twice, say):
///   apply nothing, commit (the record's offset is marked done), ack.
///
/// A key processed longer ago than `retention` counts as new (keys older
/// than the retention are deleted as [`mark_key`] does). Works for both
/// front-ends: the own loop's
/// [`GuardHandle::track_or_skip`](crate::GuardHandle::track_or_skip) token
/// with `message.key()`, the owned front-end's `record.ack_token()` with
/// `record.key()`. A duplicate key is logged (`tracing`, debug).
///
/// ```
/// use std::time::Duration;
/// use offset_guard::AckToken;
/// use offset_guard::progress::{Keyed, sqlite};
///
/// const KEY_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
///
/// fn handle(
///     conn: &mut rusqlite::Connection,
///     group: &str,
///     token: AckToken,
///     order_id: &[u8],
/// ) -> Result<(), Box<dyn std::error::Error>> {
///     let tx = conn.transaction()?;
///     match sqlite::mark_token_with_key(&tx, group, &token, order_id, KEY_RETENTION) {
///         Ok(Keyed::Apply) => {
///             tx.execute("INSERT INTO invoices (order_id) VALUES (?1)", [order_id])?;
///             tx.commit()?;
///         }
///         Ok(Keyed::DuplicateKey) => tx.commit()?, // nothing applied; the offset is done
///         Err(e) if e.is_already_done() => drop(tx), // rolled back: done already
///         Err(e) => return Err(e.into()),
///     }
///     token.ack();
///     Ok(())
/// }
/// ```
///
/// # Errors
///
/// As [`mark_token`] (on [`ProgressError::AlreadyDone`]: roll back, ack);
/// [`ProgressError::InvalidArgument`] for a zero `retention`.
pub fn mark_token_with_key(
    conn: &Connection,
    group: &str,
    token: &crate::AckToken,
    key: &[u8],
    retention: Duration,
) -> Result<Keyed, ProgressError> {
    mark_token_with_key_at(conn, group, token, key, retention, SystemTime::now())
}

/// [`mark_token_with_key`] with the time given (`now`), as [`mark_key_at`]:
/// for tests and replays.
///
/// # Errors
///
/// As [`mark_token_with_key`].
pub fn mark_token_with_key_at(
    conn: &Connection,
    group: &str,
    token: &crate::AckToken,
    key: &[u8],
    retention: Duration,
    now: SystemTime,
) -> Result<Keyed, ProgressError> {
    check_retention(retention)?;
    mark_token(conn, group, token)?;
    if mark_key_at(conn, group, key, retention, now)? {
        return Ok(Keyed::Apply);
    }
    tracing::debug!(
        topic = token.topic(),
        partition = token.partition(),
        offset = token.offset(),
        "business key processed before within the retention: the record's effects are not applied"
    );
    Ok(Keyed::DuplicateKey)
}

/// Reads a partition's stored progress (no transaction needed; inside one,
/// it sees that transaction's own writes). A partition never stored has no
/// watermark and nothing done.
///
/// # Errors
///
/// [`ProgressError::Damaged`] when the rows contradict themselves (negative
/// watermark or offset, a done row below the watermark),
/// [`ProgressError::SchemaTooNew`] / [`ProgressError::ForeignSchema`] when
/// the version row is not this build's (read first: one small statement),
/// [`ProgressError::InvalidArgument`], [`ProgressError::NotMigrated`],
/// [`ProgressError::Database`].
pub fn load(
    conn: &Connection,
    group: &str,
    topic: &str,
    partition: i32,
) -> Result<PartitionProgress, ProgressError> {
    check_coordinates(group, topic, partition)?;
    schema_version(conn)?;
    read_progress(conn, group, topic, partition)
}

/// A partition's watermark and done rows, read without checks.
fn read_progress(
    conn: &Connection,
    group: &str,
    topic: &str,
    partition: i32,
) -> Result<PartitionProgress, ProgressError> {
    let watermark = read_watermark(conn, group, topic, partition)?.flatten();
    let done: Vec<i64> = conn
        .prepare_cached(
            "SELECT record_offset FROM offset_guard_done
             WHERE group_id = ?1 AND topic = ?2 AND partition_id = ?3 ORDER BY record_offset",
        )
        .and_then(|mut s| {
            s.query_map(params![group, topic, partition], |r| r.get(0))?
                .collect()
        })
        .map_err(db("read done rows"))?;
    loaded(topic, partition, watermark, done)
}

/// Records that the business `key` was processed, inside your transaction;
/// `Ok(false)` when it was already processed within `retention` (skip the
/// record: its effects exist). Keys older than `retention` are deleted first,
/// so the table holds about the keys of one retention period and a key seen
/// longer ago counts as new.
///
/// In the consumer path, [`mark_token_with_key`] marks the record and its
/// key together.
///
/// # Errors
///
/// [`ProgressError::InvalidArgument`] for an empty group or a zero
/// `retention`, [`ProgressError::NotInTransaction`],
/// [`ProgressError::NotMigrated`], [`ProgressError::Database`].
pub fn mark_key(
    conn: &Connection,
    group: &str,
    key: &[u8],
    retention: Duration,
) -> Result<bool, ProgressError> {
    mark_key_at(conn, group, key, retention, SystemTime::now())
}

/// [`mark_key`] with the time given (`now`): the key's processing time and the
/// retention cut-off are measured from it, in milliseconds since the Unix
/// epoch. For tests and replays.
///
/// # Errors
///
/// As [`mark_key`].
pub fn mark_key_at(
    conn: &Connection,
    group: &str,
    key: &[u8],
    retention: Duration,
    now: SystemTime,
) -> Result<bool, ProgressError> {
    check_group(group)?;
    check_retention(retention)?;
    in_transaction(conn, "mark_key")?;
    let (now_ms, cutoff) = key_clock(retention, now);
    conn.prepare_cached("DELETE FROM offset_guard_keys WHERE group_id = ?1 AND processed_at < ?2")
        .and_then(|mut s| s.execute(params![group, cutoff]))
        .map_err(db("prune keys"))?;
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO offset_guard_keys (group_id, key, processed_at) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut s| s.execute(params![group, key, now_ms]))
        .map_err(db("insert key"))?;
    Ok(inserted == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: &str = "g";
    const T: &str = "orders";

    fn state(conn: &Connection, p: i32) -> (Option<i64>, Vec<i64>) {
        let l = load(conn, G, T, p).unwrap();
        (l.watermark(), l.done_above().collect())
    }

    /// Seeded random batches (floors and offsets of three partitions, in and
    /// out of order, duplicates, below the watermark) through `mark_batch`,
    /// and the same elements one by one through `advance` + `mark_done` on a
    /// second database and through the Rust model: the same answer (the
    /// first refused element), and after every batch, committed or rolled
    /// back, the same watermark and done rows in both databases and the model.
    #[test]
    fn batches_agree_with_one_call_after_the_other_and_the_model() {
        let mut a = Connection::open_in_memory().unwrap();
        let mut b = Connection::open_in_memory().unwrap();
        migrate(&a).unwrap();
        migrate(&b).unwrap();
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let mut models = [0, 1, 2].map(|_| PartitionProgress::new());
        let mut refused_batches = 0;
        for round in 0..300 {
            let before = models.clone();
            let n = rng.usize(1..8);
            let mut marks = Vec::new();
            for _ in 0..n {
                let p = rng.i32(0..3);
                let base = models[p as usize].watermark().unwrap_or(0);
                let floor = (base + rng.i64(-2..3)).max(0);
                marks.push((T, p, floor, (base + rng.i64(-2..8)).max(0)));
            }
            let (ta, tb) = (a.transaction().unwrap(), b.transaction().unwrap());
            let batched = mark_batch(&ta, G, &marks).err().map(|e| e.to_string());
            let mut one_by_one = None;
            let mut expected = None;
            for &(t, p, floor, offset) in &marks {
                let m = &mut models[p as usize];
                m.advance(floor);
                let w = m.watermark();
                if let Err(r) = m.mark_done(offset) {
                    expected = Some(refused(r, t, p, offset, w).to_string());
                }
                let r = advance(&tb, G, t, p, floor).and_then(|()| mark_done(&tb, G, t, p, offset));
                one_by_one = r.err().map(|e| e.to_string());
                if one_by_one.is_some() {
                    break;
                }
            }
            assert_eq!(batched, expected, "round {round}: {marks:?}");
            assert_eq!(one_by_one, expected, "round {round}: {marks:?}");
            refused_batches += usize::from(expected.is_some());
            if rng.u8(0..5) == 0 {
                ta.rollback().unwrap();
                tb.rollback().unwrap();
                models = before;
            } else {
                ta.commit().unwrap();
                tb.commit().unwrap();
            }
            for (p, m) in models.iter().enumerate() {
                let want = (m.watermark(), m.done_above().collect::<Vec<_>>());
                assert_eq!(state(&a, p as i32), want, "round {round}, batched");
                assert_eq!(state(&b, p as i32), want, "round {round}, one by one");
            }
        }
        assert!(refused_batches > 20, "{refused_batches} refused batches");
    }
}
