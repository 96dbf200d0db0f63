//! SQLite for the `sqlite` feature's exactly-once tests: a database file
//! with the progress store and an `effects` table. Included by path
//! (`#[path = "common/sqlite.rs"] mod sqlite_db;`).
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use offset_guard::progress::sqlite;
use rusqlite::Connection;

/// Opens the database at `path` (a busy timeout: writers wait for the
/// lock), with the store migrated and the `effects` table (one row per
/// processing of a record) created.
pub fn open_effects(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    sqlite::migrate(&conn).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS effects (partition_id INTEGER NOT NULL, record_offset INTEGER NOT NULL)",
    )
    .unwrap();
    conn
}

/// One number from a query.
pub fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}
