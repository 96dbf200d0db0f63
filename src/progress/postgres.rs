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
//! round trip each, no prepared statement kept on your connection. The
//! offset calls ([`mark_done`], [`advance`], [`mark_token`] and the batch
//! [`mark_tokens`]) are **one statement each**: a call of the store's
//! PL/pgSQL function `offset_guard_mark_v1` (created by [`migrate`]), which
//! locks the partition's row, advances, inserts the done row or folds the
//! watermark and deletes the rows it folded on the server, with the same
//! rules as [`PartitionProgress`] (a test drives random calls through both).
//!
//! # What is checked where
//!
//! [`migrate`] and [`check_schema`] check everything: the version row, every
//! table's columns and types, the index, the function's arguments and body.
//! [`load`] checks the version row in its one statement. The function reads
//! the version row before it writes (a one-row table, same round trip), so a
//! mark on a database of another version is refused with
//! [`ProgressError::SchemaTooNew`] (or [`ProgressError::ForeignSchema`]) and
//! writes nothing; a dropped table or function gives
//! [`ProgressError::NotMigrated`] ([`migrate`] creates it again). The
//! function's name carries the version (`_v1`): a later version of the store
//! would add its own function, not change this one. [`mark_key`] checks no
//! version.
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
//! locks: take them in one order (e.g. sorted by topic and partition, as
//! one [`mark_tokens`] call does for its tokens), or a deadlock (SQLSTATE
//! 40P01, also [`is_retryable`]) aborts one of them.
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
//! load. A database that hangs costs one timeout per assign, not one per
//! partition: after a load timed out, the next loads fail at once with
//! [`ProgressError::LoaderStalled`] until the loader's thread got its answer.
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
//! every statement names the tables and the function unqualified, so the
//! store follows your `search_path`), the tables below and the function
//! `offset_guard_mark_v1(p_group text, p_topics text[], p_partitions
//! integer[], p_floors bigint[], p_offsets bigint[], OUT o_failed integer,
//! OUT o_status integer, OUT o_value bigint)` (PL/pgSQL; `SELECT
//! prosrc FROM pg_proc WHERE proname = 'offset_guard_mark_v1'` shows its
//! body). A store object dropped later (a table, the index, the function)
//! is created again by the next [`migrate`], leaving the other tables' rows
//! as they are; not the version table `offset_guard_schema` (without it the
//! version is unknown: [`ProgressError::ForeignSchema`], nothing changed):
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
//! the store's (other columns or column types, no version row), or a
//! function `offset_guard_mark_v1` with other arguments or another body,
//! gives [`ProgressError::ForeignSchema`]; nothing is changed then.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
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

/// The one migration: version 1, the version table and its row, then the
/// store's other objects ([`TABLES_1`], [`INDEX_1`], [`MARK_BODY`]). Also in the
/// [module docs](self#schema).
const MIGRATION_1: &str = "
CREATE TABLE offset_guard_schema (
    version BIGINT NOT NULL
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
    watermark    BIGINT,
    PRIMARY KEY (group_id, topic, partition_id)
);
CREATE TABLE IF NOT EXISTS offset_guard_done (
    group_id      TEXT    NOT NULL,
    topic         TEXT    NOT NULL,
    partition_id  INTEGER NOT NULL,
    record_offset BIGINT  NOT NULL,
    PRIMARY KEY (group_id, topic, partition_id, record_offset)
);
CREATE TABLE IF NOT EXISTS offset_guard_keys (
    group_id     TEXT   NOT NULL,
    key          BYTEA  NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (group_id, key)
);
";

/// Version 1's index, created when missing (after the tables were checked).
const INDEX_1: &str = "CREATE INDEX IF NOT EXISTS offset_guard_keys_age ON offset_guard_keys (group_id, processed_at)";

/// The function every writing call of offsets runs: one statement, one round
/// trip. Its name carries the schema version, and it reads the version row
/// (a one-row table) before anything else, so a database of another version
/// is refused by the mark itself.
const MARK_FUNCTION: &str = "offset_guard_mark_v1";

/// The arguments of [`MARK_FUNCTION`], as `pg_proc` shows them.
const MARK_ARGUMENTS: &str = "p_group text, p_topics text[], p_partitions integer[], \
    p_floors bigint[], p_offsets bigint[], OUT o_failed integer, OUT o_status integer, \
    OUT o_value bigint";

/// The body of [`MARK_FUNCTION`] (compared by [`check_schema`]). First the
/// rows of all the call's partitions are locked and their watermarks read
/// (created when missing, sorted by topic and partition, so two calls never
/// lock in opposite orders); then, for each element `i` of the arrays, in
/// order, `PartitionProgress::advance(floors[i])` when the floor is not
/// NULL, then `PartitionProgress::mark_done(offsets[i])` when the offset is
/// not NULL, on the watermarks kept in the function (done rows inserted as
/// they come); at the end each partition whose watermark moved gets one
/// update and one delete of the rows below it.
/// Answers `o_status` 0 (all done), 1 (element `o_failed` was done already,
/// `o_value` the watermark; the elements before it and its advance are
/// written, as one call after the other would have, the elements after it
/// are not run), 2 (schema version `o_value`) or 3 (`o_value` version rows).
const MARK_BODY: &str = r#"
DECLARE
    v_version BIGINT;
    v_rows    BIGINT;
    v_key     RECORD;
    v_i       INTEGER;
    v_j       INTEGER;
    v_t       TEXT;
    v_p       INTEGER;
    v_o       BIGINT;
    v_w       BIGINT;
    v_n       BIGINT;
    v_kt      TEXT[]    := '{}';
    v_kp      INTEGER[] := '{}';
    v_kw      BIGINT[]  := '{}';
    v_km      BOOLEAN[] := '{}';
BEGIN
    o_status := 0;
    SELECT max(version), count(*) INTO v_version, v_rows FROM offset_guard_schema;
    IF v_rows <> 1 THEN
        o_status := 3; o_value := v_rows; RETURN;
    ELSIF v_version <> 1 THEN
        o_status := 2; o_value := v_version; RETURN;
    END IF;
    FOR v_key IN SELECT DISTINCT u.t, u.p FROM unnest(p_topics, p_partitions) AS u(t, p)
                 ORDER BY 1, 2 LOOP
        SELECT watermark INTO v_w FROM offset_guard_progress
        WHERE group_id = p_group AND topic = v_key.t AND partition_id = v_key.p FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO offset_guard_progress (group_id, topic, partition_id, watermark)
            VALUES (p_group, v_key.t, v_key.p, NULL) ON CONFLICT DO NOTHING;
            SELECT watermark INTO v_w FROM offset_guard_progress
            WHERE group_id = p_group AND topic = v_key.t AND partition_id = v_key.p FOR UPDATE;
        END IF;
        v_kt := array_append(v_kt, v_key.t::TEXT);
        v_kp := array_append(v_kp, v_key.p::INTEGER);
        v_kw := array_append(v_kw, v_w);
        v_km := array_append(v_km, false);
    END LOOP;
    FOR v_i IN 1 .. coalesce(array_length(p_topics, 1), 0) LOOP
        v_t := p_topics[v_i]; v_p := p_partitions[v_i]; v_o := p_offsets[v_i];
        v_j := 1;
        WHILE v_kt[v_j] <> v_t OR v_kp[v_j] <> v_p LOOP
            v_j := v_j + 1;
        END LOOP;
        v_w := v_kw[v_j];
        IF p_floors[v_i] IS NOT NULL AND (v_w IS NULL OR p_floors[v_i] > v_w) THEN
            v_w := p_floors[v_i]; v_km[v_j] := true;
            WHILE EXISTS (SELECT 1 FROM offset_guard_done
                          WHERE group_id = p_group AND topic = v_t AND partition_id = v_p
                            AND record_offset = v_w) LOOP
                v_w := v_w + 1;
            END LOOP;
        END IF;
        IF v_o IS NULL THEN
            NULL;
        ELSIF v_w IS NOT NULL AND v_o < v_w THEN
            o_failed := v_i; o_status := 1; o_value := v_w; v_kw[v_j] := v_w; EXIT;
        ELSIF v_w IS NOT NULL AND v_o = v_w THEN
            v_w := v_o + 1; v_km[v_j] := true;
            WHILE EXISTS (SELECT 1 FROM offset_guard_done
                          WHERE group_id = p_group AND topic = v_t AND partition_id = v_p
                            AND record_offset = v_w) LOOP
                v_w := v_w + 1;
            END LOOP;
        ELSE
            INSERT INTO offset_guard_done (group_id, topic, partition_id, record_offset)
            VALUES (p_group, v_t, v_p, v_o) ON CONFLICT DO NOTHING;
            GET DIAGNOSTICS v_n = ROW_COUNT;
            IF v_n = 0 THEN
                o_failed := v_i; o_status := 1; o_value := v_w; v_kw[v_j] := v_w; EXIT;
            END IF;
        END IF;
        v_kw[v_j] := v_w;
    END LOOP;
    FOR v_j IN 1 .. coalesce(array_length(v_kt, 1), 0) LOOP
        IF v_km[v_j] THEN
            UPDATE offset_guard_progress SET watermark = v_kw[v_j]
            WHERE group_id = p_group AND topic = v_kt[v_j] AND partition_id = v_kp[v_j];
            DELETE FROM offset_guard_done
            WHERE group_id = p_group AND topic = v_kt[v_j] AND partition_id = v_kp[v_j]
              AND record_offset < v_kw[v_j];
        END IF;
    END LOOP;
END
"#;

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
        if e.code() == Some(&SqlState::UNDEFINED_TABLE)
            || e.code() == Some(&SqlState::UNDEFINED_FUNCTION)
        {
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

/// Creates the store's tables, index and function if they do not exist
/// (schema version [`SCHEMA_VERSION`]), then checks them, in a transaction of
/// its own, at READ COMMITTED whatever the session's default (a savepoint
/// when `client` is a transaction: then it is part of yours, at your
/// isolation level, and you commit it). Safe to call at every start, also from several
/// processes at once (they wait for each other on a transaction-level
/// advisory lock); it never touches tables of other names. On a database of
/// version 1 where one of the store's objects was dropped (a table, the
/// index, the function), it creates what is missing and leaves the other
/// tables and their rows as they are.
///
/// # Errors
///
/// [`ProgressError::SchemaTooNew`] when a newer offset-guard migrated the
/// database, [`ProgressError::ForeignSchema`] when a table, index or
/// function of one of the store's names is not the store's,
/// [`ProgressError::Database`] when a statement fails. Nothing is changed
/// then.
pub async fn migrate(client: &mut impl GenericClient) -> Result<(), ProgressError> {
    let mut tx = client.transaction().await.map_err(db("begin migration"))?;
    // What the statements after the advisory lock read must include what
    // the previous holder committed: READ COMMITTED, whatever the session's
    // default (at REPEATABLE READ the snapshot is taken before the lock is
    // granted, and a second migrate would create the tables again). Inside
    // your transaction (a savepoint) the level is yours: setting it fails,
    // and the savepoint is begun again.
    if !read_committed(&tx).await?
        && tx
            .batch_execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .await
            .is_err()
    {
        tx.rollback().await.map_err(db("begin migration"))?;
        tx = client.transaction().await.map_err(db("begin migration"))?;
    }
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
    if existing.iter().any(|t| t == "offset_guard_schema") {
        // The version first: a newer or foreign schema is not repaired.
        check_version_row(&tx).await?;
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
        tx.batch_execute(MIGRATION_1)
            .await
            .map_err(db("create tables"))?;
    }
    tx.batch_execute(TABLES_1)
        .await
        .map_err(db("create tables"))?;
    check_tables(&tx).await?;
    tx.batch_execute(INDEX_1)
        .await
        .map_err(db("create index"))?;
    if mark_function(&tx).await?.is_none() {
        tx.batch_execute(&format!(
            "CREATE FUNCTION {MARK_FUNCTION}({MARK_ARGUMENTS}) LANGUAGE plpgsql AS $${MARK_BODY}$$"
        ))
        .await
        .map_err(db("create function"))?;
    }
    check_schema(&tx).await?;
    tx.commit().await.map_err(db("commit migration"))
}

/// Whether the transaction's isolation level is READ COMMITTED (`SHOW`
/// takes no snapshot: the level can still be set after it).
async fn read_committed(tx: &Transaction<'_>) -> Result<bool, ProgressError> {
    let answer = tx
        .simple_query("SHOW transaction_isolation")
        .await
        .map_err(db("read the isolation level"))?;
    Ok(answer.iter().any(|m| {
        matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("read committed"))
    }))
}

/// Checks that the store's tables, index and function exist in the current
/// schema in the version this build knows, with the expected columns and
/// column types (and the function with its arguments and body). [`migrate`]
/// ends with it.
///
/// # Errors
///
/// [`ProgressError::NotMigrated`] when a table, the index or the function
/// is missing, [`ProgressError::SchemaTooNew`] (checked before the other
/// tables' columns: a newer version may have changed them),
/// [`ProgressError::ForeignSchema`] as for [`migrate`],
/// [`ProgressError::Database`].
pub async fn check_schema(client: &impl GenericClient) -> Result<(), ProgressError> {
    check_tables(client).await?;
    let index = KEYS_INDEX.to_string();
    let indexes = client
        .query_typed(
            "SELECT 1 FROM pg_class
             WHERE relname = $1 AND relnamespace = current_schema()::regnamespace
               AND relkind = 'i'",
            &[(&index, Type::TEXT)],
        )
        .await
        .map_err(db("read index"))?;
    if indexes.is_empty() {
        return Err(ProgressError::NotMigrated {
            detail: format!("no index {KEYS_INDEX}"),
        });
    }
    match mark_function(client).await? {
        None => Err(ProgressError::NotMigrated {
            detail: format!("no function {MARK_FUNCTION}"),
        }),
        Some((args, body)) if args == MARK_ARGUMENTS && body == MARK_BODY => Ok(()),
        Some((args, _)) => Err(ProgressError::ForeignSchema {
            table: MARK_FUNCTION.into(),
            detail: format!("arguments ({args}) or body differ from this build's"),
        }),
    }
}

/// The version table, its version row, then the other tables' columns.
async fn check_tables(client: &impl GenericClient) -> Result<(), ProgressError> {
    check_version_row(client).await?;
    for (table, expected) in &TABLES[1..] {
        check_table(client, table, expected).await?;
    }
    Ok(())
}

/// The version table's columns and its one row, against [`SCHEMA_VERSION`].
async fn check_version_row(client: &impl GenericClient) -> Result<(), ProgressError> {
    let (schema, columns) = TABLES[0];
    check_table(client, schema, columns).await?;
    let versions: Vec<i64> = client
        .query_typed("SELECT version FROM offset_guard_schema", &[])
        .await
        .map_err(db("read schema version"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    check_version("offset_guard_schema", &versions, SCHEMA_VERSION)
}

/// The mark function's arguments and body, if it exists in the current
/// schema (several of that name: the first).
async fn mark_function(
    client: &impl GenericClient,
) -> Result<Option<(String, String)>, ProgressError> {
    let name = MARK_FUNCTION.to_string();
    let row = client
        .query_typed(
            "SELECT pg_get_function_arguments(oid), prosrc FROM pg_proc
             WHERE proname = $1 AND pronamespace = current_schema()::regnamespace
             ORDER BY oid LIMIT 1",
            &[(&name, Type::TEXT)],
        )
        .await
        .map_err(db("read function"))?;
    Ok(row.first().map(|r| (r.get(0), r.get(1))))
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

/// What one call of [`MARK_FUNCTION`] runs: per element a topic, a
/// partition, a floor to advance to and an offset to mark (either may be
/// absent).
#[derive(Default)]
struct Marks<'a> {
    topics: Vec<&'a str>,
    partitions: Vec<i32>,
    floors: Vec<Option<i64>>,
    offsets: Vec<Option<i64>>,
}

impl<'a> Marks<'a> {
    fn push(&mut self, topic: &'a str, partition: i32, floor: Option<i64>, offset: Option<i64>) {
        self.topics.push(topic);
        self.partitions.push(partition);
        self.floors.push(floor);
        self.offsets.push(offset);
    }
}

/// Runs `marks` in one statement (one round trip) and maps the function's
/// answer to the same errors as the model's refusals.
async fn run_marks(
    tx: &Transaction<'_>,
    group: &str,
    marks: &Marks<'_>,
) -> Result<(), ProgressError> {
    let group = group.to_string();
    let row = tx
        .query_typed_one(
            "SELECT o_failed, o_status, o_value FROM offset_guard_mark_v1($1, $2, $3, $4, $5)",
            &[
                (&group, Type::TEXT),
                (&marks.topics, Type::TEXT_ARRAY),
                (&marks.partitions, Type::INT4_ARRAY),
                (&marks.floors, Type::INT8_ARRAY),
                (&marks.offsets, Type::INT8_ARRAY),
            ],
        )
        .await
        .map_err(db("mark"))?;
    let (failed, status, value): (Option<i32>, i32, Option<i64>) =
        (row.get(0), row.get(1), row.get(2));
    match (status, failed.and_then(|i| usize::try_from(i - 1).ok())) {
        (0, _) => Ok(()),
        (1, Some(i)) if i < marks.topics.len() => Err(already_done(
            marks.topics[i],
            marks.partitions[i],
            marks.offsets[i].unwrap_or_default(),
            value,
        )),
        (2, _) => check_version(
            "offset_guard_schema",
            &[value.unwrap_or_default()],
            SCHEMA_VERSION,
        ),
        (3, _) => Err(ProgressError::ForeignSchema {
            table: "offset_guard_schema".into(),
            detail: format!("{} version rows, expected 1", value.unwrap_or_default()),
        }),
        _ => Err(ProgressError::ForeignSchema {
            table: MARK_FUNCTION.into(),
            detail: format!("unexpected answer: status {status}, element {failed:?}"),
        }),
    }
}

/// Marks the record `topic[partition]@offset` done, inside your transaction.
/// Out of order is fine: the stored watermark only moves over records that
/// are all done, and the done rows it moves over are deleted in the same
/// transaction. Locks the partition's progress row until your transaction
/// ends (see [Concurrency](self#concurrency-locks-and-isolation-level)).
///
/// Cost: one statement, one round trip (the store's function
/// `offset_guard_mark_v1` locks or creates the partition's row, inserts the
/// done row or folds the watermark and deletes the rows it folded, on the
/// server).
///
/// # Errors
///
/// [`ProgressError::AlreadyDone`] when the record was marked before (committed
/// by an earlier transaction, or earlier in this one): roll back.
/// [`ProgressError::InvalidArgument`] (also for a negative offset, and for
/// `i64::MAX`, whose watermark would not fit), [`ProgressError::NotMigrated`],
/// [`ProgressError::SchemaTooNew`] / [`ProgressError::ForeignSchema`] when
/// the version row is not version 1, [`ProgressError::Database`] (see
/// [`is_retryable`]).
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
    let mut marks = Marks::default();
    marks.push(topic, partition, None, Some(offset));
    run_marks(tx, group, &marks).await
}

/// Starts or moves up a partition's watermark, inside your transaction: every
/// record below `floor` counts as done (or is no record: an offset gap). As
/// `progress::sqlite::advance`: use it with the offset your consumer starts
/// the partition at, and with any point below which every record you received
/// is done. Done rows below the new watermark are deleted. A floor at or
/// below the stored watermark changes nothing (but the partition's row is
/// locked all the same, until your transaction ends). One statement, one
/// round trip.
///
/// # Errors
///
/// [`ProgressError::InvalidArgument`] (also for a negative floor),
/// [`ProgressError::NotMigrated`], [`ProgressError::SchemaTooNew`] /
/// [`ProgressError::ForeignSchema`] (version row),
/// [`ProgressError::Database`] (see [`is_retryable`]).
pub async fn advance(
    tx: &Transaction<'_>,
    group: &str,
    topic: &str,
    partition: i32,
    floor: i64,
) -> Result<(), ProgressError> {
    check_coordinates(group, topic, partition)?;
    check_floor(floor)?;
    let mut marks = Marks::default();
    marks.push(topic, partition, Some(floor), None);
    run_marks(tx, group, &marks).await
}

/// [`mark_done`] for a record tracked by the own-loop front-end
/// ([`GuardHandle::track_or_skip`](crate::GuardHandle::track_or_skip)) or
/// handed out by the owned one, inside your transaction: also moves the
/// watermark up to the token's floor (every record the consumer received of
/// the partition below it is acked, so, with acks after commits, done or no
/// record), which starts a partition's progress and steps over offset gaps.
/// Ack the token after the transaction committed, never before. One
/// statement, one round trip (the advance, then the mark).
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
    mark_tokens(tx, group, std::slice::from_ref(token)).await
}

/// [`mark_token`] for many tokens, in one statement (one round trip, the
/// tokens as arrays): for a transaction that applies a batch of records.
/// The tokens are marked in the order given (each token's advance, then its
/// mark, with the same outcome as [`mark_token`] one after the other); the
/// rows of all their partitions are locked first, in one order (by topic,
/// then partition), so two such calls never lock in opposite orders; each
/// partition's watermark is written once per call. An empty slice does
/// nothing (no statement).
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
pub async fn mark_tokens(
    tx: &Transaction<'_>,
    group: &str,
    tokens: &[crate::AckToken],
) -> Result<(), ProgressError> {
    let mut marks = Marks::default();
    for token in tokens {
        let (topic, partition, offset) = (token.topic(), token.partition(), token.offset());
        check_coordinates(group, topic, partition)?;
        check_floor(token.progress_floor())?;
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
        marks.push(topic, partition, Some(token.progress_floor()), Some(offset));
    }
    if marks.topics.is_empty() {
        return Ok(());
    }
    run_marks(tx, group, &marks).await
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
/// [`ProgressError::SchemaTooNew`] / [`ProgressError::ForeignSchema`] when
/// the version row is not this build's (read in the same statement),
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
    // One statement, one snapshot: the watermark and the done rows agree,
    // and the schema version is checked in the same round trip.
    let rows = client
        .query_typed(
            "SELECT 0 AS kind, watermark FROM offset_guard_progress
             WHERE group_id = $1 AND topic = $2 AND partition_id = $3
             UNION ALL
             SELECT 1, record_offset FROM offset_guard_done
             WHERE group_id = $1 AND topic = $2 AND partition_id = $3
             UNION ALL
             SELECT 2, version FROM offset_guard_schema
             ORDER BY 1, 2",
            &params,
        )
        .await
        .map_err(db("read progress"))?;
    let (mut watermark, mut done, mut versions) = (None, Vec::new(), Vec::new());
    for row in rows {
        let kind: i32 = row.get(0);
        let value: Option<i64> = row.get(1);
        match (kind, value) {
            (0, w) => watermark = w,
            (1, Some(o)) => done.push(o),
            (_, v) => versions.push(v.unwrap_or(i64::MIN)),
        }
    }
    check_version("offset_guard_schema", &versions, SCHEMA_VERSION)?;
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
    /// The request's number (from 1, in the order sent).
    seq: u64,
    reply: mpsc::SyncSender<Reply>,
}

/// How far the loader thread is: the number of the last request it answered,
/// and of the last one whose caller gave up waiting (0: none). While the
/// latter is ahead, the thread is still busy with a load nobody waits for.
#[derive(Debug, Default)]
struct Progress {
    answered: AtomicU64,
    timed_out: AtomicU64,
    /// What the timed-out request loaded, for the error.
    pending: Mutex<String>,
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
    /// The channel to the thread and the next request's number, together:
    /// requests are numbered in the order the thread receives them.
    requests: Mutex<(mpsc::Sender<Request>, u64)>,
    progress: Arc<Progress>,
    timeout: Duration,
}

/// The default of [`Loader::timeout`]: 10 seconds.
pub const LOADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A lock whose holder panicked is still usable: the data are a counter
/// and a text.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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
        let progress = Arc::new(Progress::default());
        let answered = Arc::clone(&progress);
        std::thread::Builder::new()
            .name("offset-guard-pg-loader".into())
            .spawn(move || serve(config, tls, incoming, ready_tx, &answered))
            .map_err(|e| ProgressError::Database {
                action: "start the loader thread",
                source: Box::new(e),
            })?;
        match ready.recv_timeout(LOADER_TIMEOUT) {
            Ok(Ok(())) => Ok(Loader {
                requests: Mutex::new((requests, 1)),
                progress,
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
    /// an error. The load itself goes on: until the loader thread answered it,
    /// the next loads fail at once with [`ProgressError::LoaderStalled`]
    /// instead of each waiting the timeout behind it (an assign of 64
    /// partitions against a database that hangs costs one timeout, not 64).
    /// Default: [`LOADER_TIMEOUT`] (10 s). Keep it below the group's
    /// rebalance timeout: the loader runs inside the rebalance callback.
    /// `Duration::ZERO` waits for nothing: every load fails (no answer comes
    /// in zero time); `Duration::MAX` waits as long as the database takes.
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
    /// again; [`ProgressError::LoaderStalled`], at once, while an earlier
    /// load that timed out is still unanswered.
    pub fn load(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<PartitionProgress, ProgressError> {
        let progress = &self.progress;
        if progress.timed_out.load(Ordering::Acquire) > progress.answered.load(Ordering::Acquire) {
            return Err(ProgressError::LoaderStalled {
                pending: lock(&progress.pending).clone(),
                timeout: self.timeout,
            });
        }
        let (reply, answer) = mpsc::sync_channel(1);
        let seq = {
            let mut requests = lock(&self.requests);
            let seq = requests.1;
            requests.1 += 1;
            let request = Request {
                group: group.into(),
                topic: topic.into(),
                partition,
                seq,
                reply,
            };
            requests
                .0
                .send(request)
                .map_err(|_| loader_gone("load", "the loader thread ended"))?;
            seq
        };
        match answer.recv_timeout(self.timeout) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                *lock(&progress.pending) = format!("{topic}[{partition}] of group {group}");
                progress.timed_out.fetch_max(seq, Ordering::AcqRel);
                tracing::warn!(
                    topic,
                    partition,
                    timeout = ?self.timeout,
                    "progress loader: no answer within the timeout; later loads fail at once \
                     until it answers"
                );
                Err(loader_gone(
                    "load",
                    &format!("no answer within {:?}", self.timeout),
                ))
            }
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
    progress: &Progress,
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
        progress.answered.fetch_max(req.seq, Ordering::AcqRel);
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
