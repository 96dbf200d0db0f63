//! The progress store in PostgreSQL, through your own `tokio-postgres`
//! client (feature `postgres`). See the [module docs](super) for the
//! guarantee, and [Schema](#schema) below for the tables.
//!
//! The same calls as `progress::sqlite`, async. The writing calls ([`mark_done`],
//! [`advance`], [`mark_token`], [`mark_key`]) take your
//! [`tokio_postgres::Transaction`] (the transaction that applies the record's
//! effects) and only add statements to it: nothing is visible until you
//! commit, nothing stays if you roll back. Because the type is a transaction,
//! [`ProgressError::NotInTransaction`] never comes from this store. Pooled
//! clients work as they are: a `deadpool_postgres` transaction derefs to a
//! `tokio_postgres::Transaction`, a `bb8_postgres` connection to a
//! `tokio_postgres::Client`. Reading calls ([`load`], [`check_schema`]) and
//! [`migrate`] take any [`GenericClient`] (a client or a transaction).
//!
//! Every statement is sent with its parameter types (`query_typed`): one
//! round trip each, no prepared statement kept on your connection.
//!
//! # Concurrency, locks and isolation level
//!
//! Two members of a group (or an old and a new owner of a partition during a
//! rebalance) may mark records of the same partition at the same time. Every
//! writing call on a partition first locks that partition's row in
//! `offset_guard_progress` (`SELECT ... FOR UPDATE`, creating the row first
//! when missing), and reads the watermark and the done rows only after it
//! holds the lock. The lock is held until your transaction ends, so the
//! writers of one partition are serialized: no update of the watermark is
//! lost, and the second mark of the same offset waits for the first
//! transaction and then fails with [`ProgressError::AlreadyDone`] (or goes on,
//! if the first one rolled back). Keys ([`mark_key`]) rely on the primary key:
//! a second transaction inserting the same key waits for the first and then
//! sees it.
//!
//! The isolation level assumed is PostgreSQL's default, **READ COMMITTED**:
//! each statement after the lock sees what the previous lock holder
//! committed. At REPEATABLE READ or SERIALIZABLE the same calls stay
//! correct, but a transaction that waited for another one's lock fails with a
//! serialization error (SQLSTATE 40001, a [`ProgressError::Database`];
//! [`is_retryable`] says so): roll back and run the record again. A
//! transaction that marks records of several partitions takes several row
//! locks: take them in one order (e.g. sorted by topic and partition), or a
//! deadlock (SQLSTATE 40P01, also [`is_retryable`]) aborts one of them.
//!
//! Hold the lock briefly: make the mark the last statement before your
//! commit (apply the record's effects first), so the partition's other
//! records wait only for that commit, not for a slow record's processing.
//!
//! # The loader
//!
//! The guard's [`stored_progress`](crate::GuardBuilder::stored_progress)
//! loader is a synchronous function called inside librdkafka's rebalance
//! callback: on the poll thread of the owned front-end, or inside your
//! `recv()` on a tokio worker thread with the own-loop front-end, where
//! blocking on a future (`block_on`) panics. [`Loader`] is made for it: a
//! thread of its own with its own connection and a single-threaded tokio
//! runtime runs [`load`]; [`Loader::load`] sends it the request and waits for
//! the answer (a plain channel wait, fine on any thread), at most
//! [`Loader::timeout`]. A connection that closed is opened again at the next
//! load.
//!
//! ```no_run
//! # async fn run(config: rdkafka::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use offset_guard::progress::postgres::Loader;
//!
//! let loader = Loader::connect("postgresql://app@127.0.0.1/app")?;
//! let (consumer, guard) = offset_guard::OffsetGuard::builder(config)
//!     .stored_progress(move |group, topic, partition| loader.load(group, topic, partition))
//!     .build_consumer::<rdkafka::consumer::StreamConsumer<offset_guard::GuardContext>>()?;
//! # Ok(()) }
//! ```
//!
//! # Example
//!
//! (It runs where the tests' server is named by `OFFSET_GUARD_POSTGRES`,
//! in a schema of its own; elsewhere it returns at once.)
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use offset_guard::progress::postgres;
//!
//! # let Ok(url) = std::env::var("OFFSET_GUARD_POSTGRES") else { return Ok(()) };
//! let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
//! tokio::spawn(connection);
//! # let schema = format!("doc_{}", std::process::id());
//! # client.batch_execute(&format!("CREATE SCHEMA {schema}; SET search_path TO {schema}")).await?;
//! postgres::migrate(&mut client).await?;
//! client.batch_execute("CREATE TABLE orders (id BIGINT PRIMARY KEY)").await?;
//!
//! // At start: the partition starts where the consumer starts fetching it.
//! let tx = client.transaction().await?;
//! postgres::advance(&tx, "billing", "orders", 0, 100).await?;
//! tx.commit().await?;
//!
//! // Per record (here 101 finishes before 100): effects, then the mark, one
//! // transaction.
//! for offset in [101_i64, 100] {
//!     let tx = client.transaction().await?;
//!     tx.execute("INSERT INTO orders (id) VALUES ($1)", &[&offset]).await?;
//!     postgres::mark_done(&tx, "billing", "orders", 0, offset).await?;
//!     tx.commit().await?;
//! }
//! let progress = postgres::load(&client, "billing", "orders", 0).await?;
//! assert_eq!(progress.watermark(), Some(102)); // 100 and 101 done, no rows left
//! assert_eq!(progress.done_above().len(), 0);
//!
//! // The same record again: refused, the transaction is rolled back.
//! let tx = client.transaction().await?;
//! tx.execute("INSERT INTO orders (id) VALUES (-101)", &[]).await?;
//! let err = postgres::mark_done(&tx, "billing", "orders", 0, 101).await.unwrap_err();
//! assert!(err.is_already_done());
//! tx.rollback().await?;
//! # client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Schema
//!
//! [`migrate`] creates, once (version 1, in `offset_guard_schema`), in the
//! current schema (the first schema of your `search_path`, usually `public`;
//! every statement names the tables unqualified, so the store follows your
//! `search_path`):
//!
//! ```sql
//! CREATE TABLE offset_guard_schema (version BIGINT NOT NULL);   -- one row: 1
//! CREATE TABLE offset_guard_progress (
//!     group_id TEXT NOT NULL, topic TEXT NOT NULL, partition_id INTEGER NOT NULL,
//!     watermark BIGINT,                   -- next offset to process; NULL: not started
//!     PRIMARY KEY (group_id, topic, partition_id));
//! CREATE TABLE offset_guard_done (        -- offsets done above the watermark
//!     group_id TEXT NOT NULL, topic TEXT NOT NULL, partition_id INTEGER NOT NULL,
//!     record_offset BIGINT NOT NULL,
//!     PRIMARY KEY (group_id, topic, partition_id, record_offset));
//! CREATE TABLE offset_guard_keys (        -- optional idempotency by business key
//!     group_id TEXT NOT NULL, key BYTEA NOT NULL,
//!     processed_at BIGINT NOT NULL,       -- milliseconds since the Unix epoch
//!     PRIMARY KEY (group_id, key));
//! CREATE INDEX offset_guard_keys_age ON offset_guard_keys (group_id, processed_at);
//! ```
//!
//! A database migrated by a newer offset-guard gives
//! [`ProgressError::SchemaTooNew`]; a table of one of these names that is not
//! the store's (other columns or column types, no version row) gives
//! [`ProgressError::ForeignSchema`]; nothing is changed then.

use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, GenericClient, NoTls, Socket, Transaction};

use super::error::ProgressError;
use super::model::{Keyed, PartitionProgress};
use super::shared::{
    already_done, check_coordinates, check_floor, check_group, check_mark_offset, check_retention,
    check_version, key_clock, loaded, refused,
};

/// The longest business key [`mark_key`] and [`mark_token_with_key`] take,
/// in bytes: 2,048. Keys live in a B-tree index, whose rows PostgreSQL
/// limits to about 2.7 kB; a longer key is refused with
/// [`ProgressError::InvalidArgument`] (`key`) before any statement, so the
/// transaction stays usable. Store a hash of longer keys (the SQLite store
/// has no such limit).
pub const MAX_KEY_BYTES: usize = 2048;

/// The schema version [`migrate`] creates, stored in `offset_guard_schema`.
pub const SCHEMA_VERSION: i64 = 1;

/// The one migration: version 1. Also in the [module docs](self#schema).
const MIGRATION_1: &str = "
CREATE TABLE offset_guard_schema (
    version BIGINT NOT NULL
);
INSERT INTO offset_guard_schema (version) VALUES (1);
CREATE TABLE offset_guard_progress (
    group_id     TEXT    NOT NULL,
    topic        TEXT    NOT NULL,
    partition_id INTEGER NOT NULL,
    watermark    BIGINT,
    PRIMARY KEY (group_id, topic, partition_id)
);
CREATE TABLE offset_guard_done (
    group_id      TEXT    NOT NULL,
    topic         TEXT    NOT NULL,
    partition_id  INTEGER NOT NULL,
    record_offset BIGINT  NOT NULL,
    PRIMARY KEY (group_id, topic, partition_id, record_offset)
);
CREATE TABLE offset_guard_keys (
    group_id     TEXT   NOT NULL,
    key          BYTEA  NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (group_id, key)
);
CREATE INDEX offset_guard_keys_age ON offset_guard_keys (group_id, processed_at);
";

/// The store's one index (created by [`MIGRATION_1`]).
const KEYS_INDEX: &str = "offset_guard_keys_age";

/// The key of the transaction-level advisory lock that serializes
/// [`migrate`] calls of several processes ("offguard" in ASCII).
const MIGRATE_LOCK: i64 = 0x6f66_6667_7561_7264;

/// The store's tables and their columns with their types, as
/// [`check_schema`] expects them.
type Columns = &'static [(&'static str, &'static str)];
const TABLES: [(&str, Columns); 4] = [
    ("offset_guard_schema", &[("version", "bigint")]),
    (
        "offset_guard_progress",
        &[
            ("group_id", "text"),
            ("topic", "text"),
            ("partition_id", "integer"),
            ("watermark", "bigint"),
        ],
    ),
    (
        "offset_guard_done",
        &[
            ("group_id", "text"),
            ("topic", "text"),
            ("partition_id", "integer"),
            ("record_offset", "bigint"),
        ],
    ),
    (
        "offset_guard_keys",
        &[
            ("group_id", "text"),
            ("key", "bytea"),
            ("processed_at", "bigint"),
        ],
    ),
];

fn db(action: &'static str) -> impl Fn(tokio_postgres::Error) -> ProgressError {
    move |e| {
        if e.code() == Some(&SqlState::UNDEFINED_TABLE) {
            ProgressError::NotMigrated {
                detail: e.to_string(),
            }
        } else {
            ProgressError::Database {
                action,
                source: Box::new(e),
            }
        }
    }
}

/// Whether the error is PostgreSQL's way of saying "run the transaction
/// again": a serialization failure (SQLSTATE 40001, from concurrent marks of
/// one partition at REPEATABLE READ or SERIALIZABLE) or a deadlock (40P01).
/// Roll back and process the record again.
pub fn is_retryable(e: &ProgressError) -> bool {
    let ProgressError::Database { source, .. } = e else {
        return false;
    };
    source
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.code())
        .is_some_and(|c| {
            *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
        })
}

/// Coordinates as typed parameters: group, topic, partition.
fn coords<'a>(
    group: &'a String,
    topic: &'a String,
    partition: &'a i32,
) -> [(&'a (dyn ToSql + Sync), Type); 3] {
    [
        (group, Type::TEXT),
        (topic, Type::TEXT),
        (partition, Type::INT4),
    ]
}

/// Creates the store's tables if they do not exist (schema version
/// [`SCHEMA_VERSION`]), then checks them, in a transaction of its own (a
/// savepoint when `client` is a transaction: then it is part of yours, and
/// you commit it). Safe to call at every start, also from several processes
/// at once (they wait for each other on a transaction-level advisory lock);
/// it never touches tables of other names.
///
/// # Errors
///
/// [`ProgressError::SchemaTooNew`] when a newer offset-guard migrated the
/// database, [`ProgressError::ForeignSchema`] when a table or index of one of
/// the store's names is not the store's, [`ProgressError::Database`] when a
/// statement fails. Nothing is changed then.
pub async fn migrate(client: &mut impl GenericClient) -> Result<(), ProgressError> {
    let tx = client.transaction().await.map_err(db("begin migration"))?;
    tx.query_typed(
        "SELECT pg_advisory_xact_lock($1)",
        &[(&MIGRATE_LOCK, Type::INT8)],
    )
    .await
    .map_err(db("lock for migration"))?;
    let existing: Vec<String> = tx
        .query_typed(
            "SELECT relname::text FROM pg_class
             WHERE relnamespace = current_schema()::regnamespace
               AND relname LIKE 'offset\\_guard\\_%'",
            &[],
        )
        .await
        .map_err(db("list tables"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !existing.iter().any(|t| t == "offset_guard_schema") {
        // Only the store's own names block it: a user's `offset_guard_audit`
        // is another name, left alone.
        if let Some(t) = existing
            .iter()
            .find(|t| t.as_str() == KEYS_INDEX || TABLES.iter().any(|(n, _)| n == t))
        {
            return Err(ProgressError::ForeignSchema {
                table: t.clone(),
                detail: "exists without offset_guard_schema (not created by offset-guard)".into(),
            });
        }
        tx.batch_execute(MIGRATION_1)
            .await
            .map_err(db("create tables"))?;
    }
    check_schema(&tx).await?;
    tx.commit().await.map_err(db("commit migration"))
}

/// Checks that the store's tables exist in the current schema in the version
/// this build knows, with the expected columns and column types. [`migrate`]
/// ends with it.
///
/// # Errors
///
/// [`ProgressError::NotMigrated`] when the tables are missing,
/// [`ProgressError::SchemaTooNew`] (checked before the other tables'
/// columns: a newer version may have changed them),
/// [`ProgressError::ForeignSchema`] as for [`migrate`],
/// [`ProgressError::Database`].
pub async fn check_schema(client: &impl GenericClient) -> Result<(), ProgressError> {
    let [(schema, columns), rest @ ..] = &TABLES;
    check_table(client, schema, columns).await?;
    let versions: Vec<i64> = client
        .query_typed("SELECT version FROM offset_guard_schema", &[])
        .await
        .map_err(db("read schema version"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    check_version("offset_guard_schema", &versions, SCHEMA_VERSION)?;
    for (table, expected) in rest {
        check_table(client, table, expected).await?;
    }
    Ok(())
}

async fn check_table(
    client: &impl GenericClient,
    table: &str,
    expected: Columns,
) -> Result<(), ProgressError> {
    let table_name = table.to_string();
    let mut found: Vec<(String, String)> = client
        .query_typed(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
             WHERE c.relname = $1 AND c.relnamespace = current_schema()::regnamespace
               AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[(&table_name, Type::TEXT)],
        )
        .await
        .map_err(db("read table columns"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if found.is_empty() {
        return Err(ProgressError::NotMigrated {
            detail: format!("no table {table}"),
        });
    }
    let as_listed = found.clone();
    found.sort();
    let mut want: Vec<(String, String)> = expected
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    want.sort();
    if found != want {
        return Err(ProgressError::ForeignSchema {
            table: table.into(),
            detail: format!("columns {as_listed:?}, expected {expected:?}"),
        });
    }
    Ok(())
}

/// Locks the partition's progress row (created, not started, when missing)
/// until the transaction ends, and returns its watermark.
async fn lock_watermark(
    tx: &Transaction<'_>,
    group: &String,
    topic: &String,
    partition: &i32,
) -> Result<Option<i64>, ProgressError> {
    const SELECT: &str = "SELECT watermark FROM offset_guard_progress
         WHERE group_id = $1 AND topic = $2 AND partition_id = $3 FOR UPDATE";
    let params = coords(group, topic, partition);
    if let Some(row) = tx
        .query_typed_opt(SELECT, &params)
        .await
        .map_err(db("lock watermark"))?
    {
        return Ok(row.get(0));
    }
    // Two first marks at once: the second insert waits for the first
    // transaction and then does nothing; the lock below then waits too.
    tx.execute_typed(
        "INSERT INTO offset_guard_progress (group_id, topic, partition_id, watermark)
         VALUES ($1, $2, $3, NULL) ON CONFLICT DO NOTHING",
        &params,
    )
    .await
    .map_err(db("create progress row"))?;
    let row = tx
        .query_typed_one(SELECT, &params)
        .await
        .map_err(db("lock watermark"))?;
    Ok(row.get(0))
}

/// The done rows from `from` up, while contiguous.
async fn done_run(
    client: &impl GenericClient,
    (group, topic, partition): (&String, &String, &i32),
    from: i64,
) -> Result<Vec<i64>, ProgressError> {
    let [g, t, p] = coords(group, topic, partition);
    let rows = client
        .query_typed(
            "SELECT record_offset FROM offset_guard_done
             WHERE group_id = $1 AND topic = $2 AND partition_id = $3 AND record_offset >= $4
             ORDER BY record_offset",
            &[g, t, p, (&from, Type::INT8)],
        )
        .await
        .map_err(db("read done rows"))?;
    let mut run = Vec::new();
    for row in rows {
        let o: i64 = row.get(0);
        if o != from + run.len() as i64 {
            break;
        }
        run.push(o);
    }
    Ok(run)
}

/// Writes the new watermark (the row is locked) and deletes the done rows
/// below it.
async fn store_watermark(
    tx: &Transaction<'_>,
    (group, topic, partition): (&String, &String, &i32),
    watermark: i64,
) -> Result<(), ProgressError> {
    let [g, t, p] = coords(group, topic, partition);
    let params = [g, t, p, (&watermark, Type::INT8)];
    tx.execute_typed(
        "UPDATE offset_guard_progress SET watermark = $4
         WHERE group_id = $1 AND topic = $2 AND partition_id = $3",
        &params,
    )
    .await
    .map_err(db("write watermark"))?;
    tx.execute_typed(
        "DELETE FROM offset_guard_done
         WHERE group_id = $1 AND topic = $2 AND partition_id = $3 AND record_offset < $4",
        &params,
    )
    .await
    .map_err(db("delete folded done rows"))?;
    Ok(())
}

/// Marks the record `topic[partition]@offset` done, inside your transaction.
/// Out of order is fine: the stored watermark only moves over records that
/// are all done, and the done rows it moves over are deleted in the same
/// transaction. Locks the partition's progress row until your transaction
/// ends (see [Concurrency](self#concurrency-locks-and-isolation-level)).
///
/// Cost: two round trips (lock and read the watermark, insert), plus one the
/// first time a partition is marked; when the record is the one at the
/// watermark, a read of the done rows right after it, one update and one
/// delete instead of the insert.
///
/// # Errors
///
/// [`ProgressError::AlreadyDone`] when the record was marked before (committed
/// by an earlier transaction, or earlier in this one): roll back.
/// [`ProgressError::InvalidArgument`] (also for a negative offset, and for
/// `i64::MAX`, whose watermark would not fit), [`ProgressError::NotMigrated`],
/// [`ProgressError::Database`] (see [`is_retryable`]).
pub async fn mark_done(
    tx: &Transaction<'_>,
    group: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<(), ProgressError> {
    check_coordinates(group, topic, partition)?;
    check_mark_offset(offset)?;
    if offset < 0 {
        return Err(refused(
            super::MarkRefused::Negative,
            topic,
            partition,
            offset,
            None,
        ));
    }
    let (g, t) = (group.to_string(), topic.to_string());
    let key = (&g, &t, &partition);
    let watermark = lock_watermark(tx, &g, &t, &partition).await?;
    // Only the run right after the watermark matters for folding; a done
    // row elsewhere is caught by the insert's primary key.
    let run = match watermark {
        Some(w) if offset == w => done_run(tx, key, w + 1).await?,
        _ => Vec::new(),
    };
    let mut progress = PartitionProgress::from_parts(watermark, run);
    let change = progress
        .mark_done(offset)
        .map_err(|r| refused(r, topic, partition, offset, watermark))?;
    if let Some(o) = change.insert {
        let [gp, tp, pp] = coords(&g, &t, &partition);
        let inserted = tx
            .execute_typed(
                "INSERT INTO offset_guard_done (group_id, topic, partition_id, record_offset)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[gp, tp, pp, (&o, Type::INT8)],
            )
            .await
            .map_err(db("insert done row"))?;
        if inserted == 0 {
            return Err(already_done(topic, partition, offset, watermark));
        }
    }
    if let Some(w) = change.watermark {
        store_watermark(tx, key, w).await?;
    }
    Ok(())
}

/// Starts or moves up a partition's watermark, inside your transaction: every
/// record below `floor` counts as done (or is no record: an offset gap). As
/// `progress::sqlite::advance`: use it with the offset your consumer starts
/// the partition at, and with any point below which every record you received
/// is done. Done rows below the new watermark are deleted. A floor at or
/// below the stored watermark changes nothing (but the partition's row is
/// locked all the same, until your transaction ends).
///
/// # Errors
///
/// [`ProgressError::InvalidArgument`] (also for a negative floor),
/// [`ProgressError::NotMigrated`], [`ProgressError::Database`] (see
/// [`is_retryable`]).
pub async fn advance(
    tx: &Transaction<'_>,
    group: &str,
    topic: &str,
    partition: i32,
    floor: i64,
) -> Result<(), ProgressError> {
    check_coordinates(group, topic, partition)?;
    check_floor(floor)?;
    let (g, t) = (group.to_string(), topic.to_string());
    let key = (&g, &t, &partition);
    let watermark = lock_watermark(tx, &g, &t, &partition).await?;
    if watermark.is_some_and(|w| floor <= w) {
        return Ok(());
    }
    let run = done_run(tx, key, floor).await?;
    let mut progress = PartitionProgress::from_parts(watermark, run);
    if let Some(w) = progress.advance(floor).watermark {
        store_watermark(tx, key, w).await?;
    }
    Ok(())
}

/// [`mark_done`] for a record tracked by the own-loop front-end
/// ([`GuardHandle::track_or_skip`](crate::GuardHandle::track_or_skip)) or
/// handed out by the owned one, inside your transaction: also moves the
/// watermark up to the token's floor (every record the consumer received of
/// the partition below it is acked, so, with acks after commits, done or no
/// record), which starts a partition's progress and steps over offset gaps.
/// Ack the token after the transaction committed, never before.
///
/// # Errors
///
/// As [`mark_done`]; [`ProgressError::AlreadyDone`]: roll back, then ack the
/// token (the record is done).
pub async fn mark_token(
    tx: &Transaction<'_>,
    group: &str,
    token: &crate::AckToken,
) -> Result<(), ProgressError> {
    let (topic, partition) = (token.topic(), token.partition());
    advance(tx, group, topic, partition, token.progress_floor()).await?;
    mark_done(tx, group, topic, partition, token.offset()).await
}

/// [`mark_token`] with idempotency by business key, as
/// `progress::sqlite::mark_token_with_key`: marks the tracked record done
/// and records its `key` (the message key, or one you extract, such as an
/// order id), inside your transaction. Call it **first** in the
/// transaction, before applying the record's effects:
/// [`Keyed::Apply`]: the first record with this key within `retention`:
/// apply the effects, commit, ack the token; [`Keyed::DuplicateKey`]: a
/// record with this key was processed within `retention` at another offset:
/// apply nothing, commit (the record's offset is marked done), ack. Two
/// transactions with the same key at once: the second waits for the first
/// (the key's unique index) and gets `DuplicateKey` once it committed.
///
/// # Errors
///
/// As [`mark_token`] (on [`ProgressError::AlreadyDone`]: roll back, ack);
/// [`ProgressError::InvalidArgument`] for a zero `retention` or a key
/// longer than [`MAX_KEY_BYTES`].
pub async fn mark_token_with_key(
    tx: &Transaction<'_>,
    group: &str,
    token: &crate::AckToken,
    key: &[u8],
    retention: Duration,
) -> Result<Keyed, ProgressError> {
    mark_token_with_key_at(tx, group, token, key, retention, SystemTime::now()).await
}

/// [`mark_token_with_key`] with the time given (`now`), as [`mark_key_at`]:
/// for tests and replays.
///
/// # Errors
///
/// As [`mark_token_with_key`].
pub async fn mark_token_with_key_at(
    tx: &Transaction<'_>,
    group: &str,
    token: &crate::AckToken,
    key: &[u8],
    retention: Duration,
    now: SystemTime,
) -> Result<Keyed, ProgressError> {
    check_retention(retention)?;
    mark_token(tx, group, token).await?;
    if mark_key_at(tx, group, key, retention, now).await? {
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
/// it sees that transaction's own writes; it takes no lock). A partition
/// never stored has no watermark and nothing done.
///
/// # Errors
///
/// [`ProgressError::Damaged`] when the rows contradict themselves (negative
/// watermark or offset, a done row below the watermark),
/// [`ProgressError::InvalidArgument`], [`ProgressError::NotMigrated`],
/// [`ProgressError::Database`].
pub async fn load(
    client: &impl GenericClient,
    group: &str,
    topic: &str,
    partition: i32,
) -> Result<PartitionProgress, ProgressError> {
    check_coordinates(group, topic, partition)?;
    let (g, t) = (group.to_string(), topic.to_string());
    let params = coords(&g, &t, &partition);
    // One statement, one snapshot: the watermark and the done rows agree.
    let rows = client
        .query_typed(
            "SELECT 0 AS kind, watermark FROM offset_guard_progress
             WHERE group_id = $1 AND topic = $2 AND partition_id = $3
             UNION ALL
             SELECT 1, record_offset FROM offset_guard_done
             WHERE group_id = $1 AND topic = $2 AND partition_id = $3
             ORDER BY 1, 2",
            &params,
        )
        .await
        .map_err(db("read progress"))?;
    let mut watermark = None;
    let mut done = Vec::new();
    for row in rows {
        let kind: i32 = row.get(0);
        let value: Option<i64> = row.get(1);
        match (kind, value) {
            (0, w) => watermark = w,
            (_, Some(o)) => done.push(o),
            (_, None) => {}
        }
    }
    loaded(topic, partition, watermark, done)
}

/// Records that the business `key` was processed, inside your transaction;
/// `Ok(false)` when it was already processed within `retention` (skip the
/// record: its effects exist). Keys older than `retention` are deleted first,
/// so the table holds about the keys of one retention period and a key seen
/// longer ago counts as new. Two transactions with the same key at once: the
/// second waits for the first and gets `false` once it committed.
///
/// # Errors
///
/// [`ProgressError::InvalidArgument`] for an empty group, a zero
/// `retention` or a key longer than [`MAX_KEY_BYTES`],
/// [`ProgressError::NotMigrated`], [`ProgressError::Database`].
pub async fn mark_key(
    tx: &Transaction<'_>,
    group: &str,
    key: &[u8],
    retention: Duration,
) -> Result<bool, ProgressError> {
    mark_key_at(tx, group, key, retention, SystemTime::now()).await
}

/// [`mark_key`] with the time given (`now`): the key's processing time and the
/// retention cut-off are measured from it, in milliseconds since the Unix
/// epoch. For tests and replays.
///
/// # Errors
///
/// As [`mark_key`].
pub async fn mark_key_at(
    tx: &Transaction<'_>,
    group: &str,
    key: &[u8],
    retention: Duration,
    now: SystemTime,
) -> Result<bool, ProgressError> {
    check_group(group)?;
    check_retention(retention)?;
    if key.len() > MAX_KEY_BYTES {
        return Err(ProgressError::InvalidArgument {
            name: "key",
            value: format!(
                "{} bytes (at most {MAX_KEY_BYTES} in PostgreSQL, whose index rows are limited to \
                 about 2.7 kB: store a hash of a longer key)",
                key.len()
            ),
        });
    }
    let (now_ms, cutoff) = key_clock(retention, now);
    let g = group.to_string();
    tx.execute_typed(
        "DELETE FROM offset_guard_keys WHERE group_id = $1 AND processed_at < $2",
        &[(&g, Type::TEXT), (&cutoff, Type::INT8)],
    )
    .await
    .map_err(db("prune keys"))?;
    let inserted = tx
        .execute_typed(
            "INSERT INTO offset_guard_keys (group_id, key, processed_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[(&g, Type::TEXT), (&key, Type::BYTEA), (&now_ms, Type::INT8)],
        )
        .await
        .map_err(db("insert key"))?;
    Ok(inserted == 1)
}

type Reply = Result<PartitionProgress, ProgressError>;

struct Request {
    group: String,
    topic: String,
    partition: i32,
    reply: mpsc::SyncSender<Reply>,
}

/// A synchronous [`load`] for the guard's
/// [`stored_progress`](crate::GuardBuilder::stored_progress) loader: a
/// thread of its own (named `offset-guard-pg-loader`) with its own
/// connection and a single-threaded tokio runtime. [`Loader::load`] can be
/// called from any thread, also a tokio worker thread (it waits on a
/// channel, it does not `block_on`); calls are answered one at a time.
/// Dropping the `Loader` ends the thread once it finished its current load.
/// See [The loader](self#the-loader).
#[derive(Debug)]
pub struct Loader {
    requests: mpsc::Sender<Request>,
    timeout: Duration,
}

/// The default of [`Loader::timeout`]: 10 seconds.
pub const LOADER_TIMEOUT: Duration = Duration::from_secs(10);

fn loader_gone(action: &'static str, why: &str) -> ProgressError {
    ProgressError::Database {
        action,
        source: Box::new(std::io::Error::other(why.to_string())),
    }
}

impl Loader {
    /// Connects without TLS to `config`, a connection string
    /// (`postgresql://user@host:port/db` or `host=... user=...`, as
    /// [`tokio_postgres::Config`] parses it). Waits for the connection, at
    /// most [`LOADER_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// [`ProgressError::InvalidArgument`] (`config`) for a connection string
    /// that does not parse; [`ProgressError::Database`] when the connection
    /// fails or does not answer in time.
    pub fn connect(config: &str) -> Result<Loader, ProgressError> {
        let parsed: tokio_postgres::Config =
            config.parse().map_err(|e| ProgressError::InvalidArgument {
                name: "config",
                value: format!("{} ({e})", crate::failure_log::redact_password(config)),
            })?;
        Loader::connect_with(parsed, NoTls)
    }

    /// Connects to `config` with `tls` (e.g. a `postgres_native_tls` or
    /// `tokio_postgres_rustls` connector). Waits for the connection, at most
    /// [`LOADER_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// [`ProgressError::Database`] when the connection fails or does not
    /// answer in time, or the thread cannot be started.
    pub fn connect_with<T>(config: tokio_postgres::Config, tls: T) -> Result<Loader, ProgressError>
    where
        T: MakeTlsConnect<Socket> + Clone + Send + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let (requests, incoming) = mpsc::channel::<Request>();
        let (ready_tx, ready) = mpsc::sync_channel::<Result<(), ProgressError>>(1);
        std::thread::Builder::new()
            .name("offset-guard-pg-loader".into())
            .spawn(move || serve(config, tls, incoming, ready_tx))
            .map_err(|e| ProgressError::Database {
                action: "start the loader thread",
                source: Box::new(e),
            })?;
        match ready.recv_timeout(LOADER_TIMEOUT) {
            Ok(Ok(())) => Ok(Loader {
                requests,
                timeout: LOADER_TIMEOUT,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(loader_gone(
                "connect",
                "no connection within the loader timeout",
            )),
        }
    }

    /// How long [`load`](Self::load) waits for its answer before it returns
    /// an error (the load itself goes on, and the next call waits behind it).
    /// Default: [`LOADER_TIMEOUT`] (10 s). Keep it below the group's
    /// rebalance timeout: the loader runs inside the rebalance callback.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// [`load`] on the loader's connection, waiting for the answer.
    ///
    /// # Errors
    ///
    /// As [`load`]; [`ProgressError::Database`] when no answer came within
    /// the [timeout](Self::timeout), or the connection could not be opened
    /// again.
    pub fn load(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<PartitionProgress, ProgressError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let request = Request {
            group: group.into(),
            topic: topic.into(),
            partition,
            reply,
        };
        self.requests
            .send(request)
            .map_err(|_| loader_gone("load", "the loader thread ended"))?;
        match answer.recv_timeout(self.timeout) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(loader_gone(
                "load",
                &format!("no answer within {:?}", self.timeout),
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(loader_gone("load", "the loader thread ended"))
            }
        }
    }
}

/// The loader thread: connects, answers requests until the [`Loader`] is
/// dropped, connects again when the connection closed.
fn serve<T>(
    config: tokio_postgres::Config,
    tls: T,
    incoming: mpsc::Receiver<Request>,
    ready: mpsc::SyncSender<Result<(), ProgressError>>,
) where
    T: MakeTlsConnect<Socket> + Clone + Send + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(ProgressError::Database {
                action: "start the loader runtime",
                source: Box::new(e),
            }));
            return;
        }
    };
    let connect = || {
        runtime.block_on(async {
            let (client, connection) = config
                .connect(tls.clone())
                .await
                .map_err(db("connect the loader"))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "progress loader: PostgreSQL connection ended");
                }
            });
            Ok::<Client, ProgressError>(client)
        })
    };
    let mut client = match connect() {
        Ok(c) => {
            let _ = ready.send(Ok(()));
            c
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    while let Ok(req) = incoming.recv() {
        let run =
            |client: &Client| runtime.block_on(load(client, &req.group, &req.topic, req.partition));
        // A connection found closed (server restarted, backend terminated)
        // is opened again, and the load tried once more on it.
        let mut result = match client.is_closed() {
            true => Err(loader_gone("load", "connection closed")),
            false => run(&client),
        };
        if result.as_ref().is_err_and(connection_closed) {
            result = connect().and_then(|c| {
                client = c;
                run(&client)
            });
        }
        let _ = req.reply.send(result);
    }
}

/// Whether a load failed because the loader's connection is closed.
fn connection_closed(e: &ProgressError) -> bool {
    let ProgressError::Database { source, .. } = e else {
        return false;
    };
    match source.downcast_ref::<tokio_postgres::Error>() {
        Some(e) => e.is_closed() || e.code() == Some(&SqlState::ADMIN_SHUTDOWN),
        None => source.to_string() == "connection closed",
    }
}
