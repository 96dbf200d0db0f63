//! The failed-offset log in a SQLite database (cargo feature `sqlite`): the
//! table, its migration and schema check, the writer's insert, and the
//! reader's row cursor. See the [module docs](super#in-a-database).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};

use super::LogError;
use super::rows::RowSource;

/// The schema version of the failed-offset log's tables that this build
/// creates and reads, stored in the table `offset_guard_log_schema` (see
/// [In a database](super#in-a-database)).
pub const DB_SCHEMA_VERSION: i64 = 1;

/// The one migration: version 1. Also in the [module docs](super#in-a-database).
const MIGRATION_1: &str = "
CREATE TABLE offset_guard_log_schema (
    version INTEGER NOT NULL
);
INSERT INTO offset_guard_log_schema (version) VALUES (1);
CREATE TABLE offset_guard_failed_offsets (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT    NOT NULL,
    time          TEXT    NOT NULL,
    group_id      TEXT    NOT NULL,
    topic         TEXT    NOT NULL,
    partition_id  INTEGER NOT NULL,
    commit_offset INTEGER NOT NULL,
    reason        TEXT,
    resolution    TEXT,
    line          TEXT    NOT NULL
);
CREATE INDEX offset_guard_failed_offsets_group ON offset_guard_failed_offsets (group_id, id);
";

const SCHEMA_TABLE: &str = "offset_guard_log_schema";
const LOG_TABLE: &str = "offset_guard_failed_offsets";
const LOG_COLUMNS: &[&str] = &[
    "id",
    "kind",
    "time",
    "group_id",
    "topic",
    "partition_id",
    "commit_offset",
    "reason",
    "resolution",
    "line",
];

/// How long a statement waits for another connection's write lock before it
/// fails (and the writer keeps the record and tries again).
pub(super) const WRITER_BUSY_TIMEOUT: Duration = Duration::from_secs(1);
/// The same for readers (in WAL mode they wait only in rare cases).
const READER_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Rows fetched per query while streaming.
const PAGE_ROWS: i64 = 512;

fn db_error<'a>(path: &'a Path, op: &'static str) -> impl Fn(rusqlite::Error) -> LogError + 'a {
    move |e| LogError::Database {
        path: path.to_path_buf(),
        op,
        source: Box::new(e),
    }
}

/// Opens (creating it if missing) the database for the writer: WAL, full
/// sync, a busy timeout; creates the log's tables if they do not exist.
pub(super) fn open_writer(path: &Path) -> Result<Connection, LogError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(LogError::NotFound {
            path: path.to_path_buf(),
        });
    }
    super::file_kind::refuse_non_file(path)?;
    let conn = Connection::open(path).map_err(db_error(path, "open"))?;
    conn.busy_timeout(WRITER_BUSY_TIMEOUT)
        .map_err(db_error(path, "set busy timeout"))?;
    // WAL lets readers and several writers (other consumers, the CLI) share
    // the file; it persists in the database. Busy: keep the current mode.
    if let Err(e) =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
    {
        tracing::warn!(path = %path.display(), error = %e, "failed-offset log database: cannot switch to WAL mode; kept its journal mode");
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db_error(path, "set synchronous"))?;
    migrate(&conn, path)?;
    Ok(conn)
}

/// Creates the log's tables when neither exists, in one write transaction
/// (two processes starting at once create them once), then checks them.
fn migrate(conn: &Connection, path: &Path) -> Result<(), LogError> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(db_error(path, "begin migration"))?;
    let result = (|| {
        let has = |t: &str| table_exists(conn, path, t);
        match (has(SCHEMA_TABLE)?, has(LOG_TABLE)?) {
            (false, false) => conn
                .execute_batch(MIGRATION_1)
                .map_err(db_error(path, "create tables")),
            _ => Ok(()),
        }?;
        check_schema(conn, path)
    })();
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    conn.execute_batch(end)
        .map_err(db_error(path, "end migration"))?;
    result
}

fn table_exists(conn: &Connection, path: &Path, table: &str) -> Result<bool, LogError> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .map_err(db_error(path, "list tables"))
}

fn columns(conn: &Connection, path: &Path, table: &str) -> Result<Vec<String>, LogError> {
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info(?1)")
        .map_err(db_error(path, "read table columns"))?;
    stmt.query_map([table], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(db_error(path, "read table columns"))
}

/// Checks that the log's tables exist, in the version this build knows,
/// with the expected columns.
fn check_schema(conn: &Connection, path: &Path) -> Result<(), LogError> {
    let foreign = |table: &str, detail: String| LogError::ForeignSchema {
        path: path.to_path_buf(),
        table: table.to_string(),
        detail,
    };
    let (has_schema, has_log) = (
        table_exists(conn, path, SCHEMA_TABLE)?,
        table_exists(conn, path, LOG_TABLE)?,
    );
    match (has_schema, has_log) {
        (false, false) => {
            return Err(LogError::NoLogTable {
                path: path.to_path_buf(),
            });
        }
        (false, true) => {
            return Err(foreign(
                LOG_TABLE,
                format!("exists without {SCHEMA_TABLE} (not created by offset-guard)"),
            ));
        }
        _ => {}
    }
    let versions: Vec<rusqlite::types::Value> = {
        let mut stmt = conn
            .prepare("SELECT version FROM offset_guard_log_schema")
            .map_err(db_error(path, "read schema version"))?;
        stmt.query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(db_error(path, "read schema version"))?
    };
    match versions.as_slice() {
        [rusqlite::types::Value::Integer(v)] if *v == DB_SCHEMA_VERSION => {}
        [rusqlite::types::Value::Integer(v)] if *v > DB_SCHEMA_VERSION => {
            return Err(LogError::SchemaTooNew {
                path: path.to_path_buf(),
                found: *v,
                supported: DB_SCHEMA_VERSION,
            });
        }
        [other] => return Err(foreign(SCHEMA_TABLE, format!("version {other:?}"))),
        rows => {
            return Err(foreign(
                SCHEMA_TABLE,
                format!("{} version rows, expected 1", rows.len()),
            ));
        }
    }
    let found = columns(conn, path, LOG_TABLE)?;
    if found != LOG_COLUMNS {
        return Err(foreign(
            LOG_TABLE,
            format!("columns {found:?}, expected {LOG_COLUMNS:?}"),
        ));
    }
    Ok(())
}

/// Inserts one log line (the canonical JSON line, with or without its
/// newline) as one row, committed on its own. The query columns are taken
/// from the line itself (SQLite's JSON functions).
pub(super) fn insert(conn: &Connection, line: &str) -> rusqlite::Result<()> {
    let line = line.trim_end_matches('\n');
    conn.prepare_cached(
        "INSERT INTO offset_guard_failed_offsets
           (kind, time, group_id, topic, partition_id, commit_offset, reason, resolution, line)
         VALUES (json_extract(?1, '$.kind'), json_extract(?1, '$.time'),
                 json_extract(?1, '$.group_id'), json_extract(?1, '$.topic'),
                 json_extract(?1, '$.partition'), json_extract(?1, '$.offset'),
                 json_extract(?1, '$.reason'), json_extract(?1, '$.resolution'), ?1)",
    )?
    .execute(params![line])?;
    Ok(())
}

/// Opens an existing database for reading the log (never creates it).
pub(super) fn open_reader(path: &Path) -> Result<Connection, LogError> {
    if !path.exists() {
        return Err(LogError::NotFound {
            path: path.to_path_buf(),
        });
    }
    super::file_kind::refuse_non_file(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .or_else(|_| Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY))
        .map_err(db_error(path, "open"))?;
    conn.busy_timeout(READER_BUSY_TIMEOUT)
        .map_err(db_error(path, "set busy timeout"))?;
    check_schema(&conn, path)?;
    Ok(conn)
}

/// The log's rows as JSON Lines text, page by page, for the line reader:
/// the row with id `N` is line `N` (rows missing between ids, deleted or
/// rolled back, are blank lines, which readers skip). A value that is not
/// text comes out as a line the parser rejects (an issue, never a panic).
pub(super) struct DbLines {
    conn: Connection,
    path: PathBuf,
    group: Option<String>,
    last_id: i64,
    /// The last page was short: no more rows.
    done: bool,
}

impl DbLines {
    pub(super) fn new(conn: Connection, path: PathBuf, group: Option<String>) -> DbLines {
        DbLines {
            conn,
            path,
            group,
            last_id: 0,
            done: false,
        }
    }

    fn fetch(&mut self) -> rusqlite::Result<Vec<(i64, Vec<u8>)>> {
        let sql = match self.group {
            Some(_) => {
                "SELECT id, line FROM offset_guard_failed_offsets
                 WHERE group_id = ?2 AND id > ?1 ORDER BY id LIMIT ?3"
            }
            None => {
                "SELECT id, line FROM offset_guard_failed_offsets
                 WHERE ?2 IS NULL AND id > ?1 ORDER BY id LIMIT ?3"
            }
        };
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params![self.last_id, self.group, PAGE_ROWS])?;
        let mut page = Vec::new();
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            page.push((id, value_bytes(row.get_ref(1)?)));
            self.last_id = id;
        }
        self.done = (page.len() as i64) < PAGE_ROWS;
        Ok(page)
    }
}

impl RowSource for DbLines {
    fn next_rows(&mut self) -> io::Result<Vec<(i64, Vec<u8>)>> {
        if self.done {
            return Ok(Vec::new());
        }
        self.fetch().map_err(|e| {
            self.done = true;
            io::Error::other(format!("{}: read rows: {e}", self.path.display()))
        })
    }
}

fn value_bytes(v: rusqlite::types::ValueRef<'_>) -> Vec<u8> {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Text(t) | ValueRef::Blob(t) => t.to_vec(),
        ValueRef::Null => b"NULL".to_vec(),
        ValueRef::Integer(i) => i.to_string().into_bytes(),
        ValueRef::Real(r) => r.to_string().into_bytes(),
    }
}
