//! The failed-offset log kept in a SQLite database (issue 16 item 9): the
//! round trip and its query columns, a failure recorded by one instance and
//! replayed by another that shares only the database, the CLI reading and
//! resolving it through a `sqlite:` URL, damaged rows and foreign schemas as
//! typed errors, and a busy database losing nothing. The scenarios shared with
//! the PostgreSQL log (tests/failure_log_pg.rs) are in tests/common/logdb.rs.

mod common;
#[path = "common/logdb.rs"]
mod logdb;
#[path = "common/logs.rs"]
mod logs;
#[path = "common/tempdir.rs"]
mod tempdir;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use logdb::{LogDb, Row, cli_in, failure, text, unresolved};
use offset_guard::FailureSink;
use offset_guard::failure_log::{
    FailedOffsetLog, LogBuilder, LogEntry, LogError, LogReader, LogStream, ReadIssueKind,
};
use rusqlite::Connection;
use tempdir::TempDir;

/// The log in the SQLite database `name` of a directory of the test's own.
struct Sqlite {
    dir: TempDir,
    db: PathBuf,
}

impl Sqlite {
    fn new(test: &str, name: &str) -> Sqlite {
        let dir = TempDir::new(test);
        let db = dir.join(name);
        Sqlite { dir, db }
    }

    fn cli(&self, args: &[&str]) -> Output {
        cli_in(Some(&self.dir.0), args)
    }
}

impl LogDb for Sqlite {
    fn url(&self) -> String {
        format!("sqlite://{}", self.db.display())
    }

    /// Relative to the database's directory, where the CLI runs.
    fn cli_url(&self) -> String {
        format!("sqlite:{}", self.db.file_name().unwrap().to_str().unwrap())
    }

    fn builder(&self) -> LogBuilder {
        FailedOffsetLog::sqlite(&self.db)
    }

    fn reader(&self) -> LogReader {
        LogReader::open_sqlite(&self.db).unwrap()
    }

    fn cli(&self, args: &[&str]) -> Output {
        Sqlite::cli(self, args)
    }
}

#[test]
fn a_database_log_round_trips_with_query_columns_and_several_writers() {
    let log = Sqlite::new("logdb-round-trip", "app.db");
    let reader = logdb::round_trip(&log);
    assert_eq!(reader.files(), std::slice::from_ref(&log.db));

    // The query columns match the lines.
    let conn = Connection::open(&log.db).unwrap();
    let rows: Vec<Row> = conn
        .prepare(
            "SELECT kind, group_id, partition_id, commit_offset, reason, resolution
             FROM offset_guard_failed_offsets ORDER BY id",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, logdb::round_trip_rows());
    let journal: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_of_one_instance_is_replayed_by_another_sharing_only_the_database() {
    let log = Sqlite::new("logdb-replay", "shared.db");
    logdb::replayed_by_another_instance(&log, "logdb", || {
        // No file log anywhere: only the database (and its WAL files).
        let mut files: Vec<_> = std::fs::read_dir(&log.dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert!(
            files.iter().all(|f| f.starts_with("shared.db")),
            "{files:?}"
        );
    })
    .await;
}

#[test]
fn the_cli_reads_and_resolves_a_database_log_by_url() {
    let log = Sqlite::new("logdb-cli", "ops.db");
    logdb::cli_reads_and_resolves(&log);

    // An unsupported scheme (postgres:// in a build without the `postgres`
    // feature): a usage error naming it; a missing database: 3.
    let (url, named) = if cfg!(feature = "postgres") {
        ("mysql://db.example/app", "`mysql`")
    } else {
        ("postgres://db.example/app", "`postgres` cargo feature")
    };
    let out = log.cli(&["failures", url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(named), "{}", text(&out.stderr));
    let out = log.cli(&["failures", "sqlite:missing.db"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

#[test]
fn damaged_rows_and_foreign_or_newer_schemas_are_typed_errors() {
    let dir = TempDir::new("logdb-damaged");
    let db = dir.join("d.db");
    let log = FailedOffsetLog::sqlite(&db).open().unwrap();
    log.record(failure(0, 5));
    log.close().unwrap();
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "INSERT INTO offset_guard_failed_offsets
           (kind, time, group_id, topic, partition_id, commit_offset, line)
         VALUES ('failure', 'x', 'billing', 'orders', 0, 6, 'garbage');
         INSERT INTO offset_guard_failed_offsets
           (kind, time, group_id, topic, partition_id, commit_offset, line)
         VALUES ('failure', 'x', 'billing', 'orders', 0, 7, x'ff00');",
    )
    .unwrap();
    log_after_damage(&db);
    let out = cli_in(Some(&dir.0), &["failures", "sqlite:d.db"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("d.db:2:"),
        "{}",
        text(&out.stderr)
    );

    // A newer schema version: refused by the reader and the writer, unchanged.
    conn.execute("UPDATE offset_guard_log_schema SET version = 2", [])
        .unwrap();
    logdb::refused_as_too_new(
        LogStream::open_sqlite(&db),
        FailedOffsetLog::sqlite(&db).open(),
    );

    // A table of the log's name that is not the log's.
    let foreign = dir.join("foreign.db");
    Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE offset_guard_failed_offsets (x TEXT)")
        .unwrap();
    logdb::refused_as_foreign(
        FailedOffsetLog::sqlite(&foreign).open(),
        LogStream::open_sqlite(&foreign),
    );
    let out = cli_in(Some(&dir.0), &["failures", "sqlite:foreign.db"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("not offset-guard's log"));
    // A database without the log: a reader says so (a writer creates it).
    let empty = dir.join("empty.db");
    Connection::open(&empty)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    assert!(matches!(
        LogReader::open_sqlite(&empty),
        Err(LogError::NoLogTable { .. })
    ));
}

/// The damaged rows are issues at their row ids; the good row is read.
fn log_after_damage(db: &Path) {
    let reader = LogReader::open_sqlite(db).unwrap();
    assert_eq!(
        reader
            .entries()
            .iter()
            .map(LogEntry::offset)
            .collect::<Vec<_>>(),
        [5]
    );
    let issues: Vec<_> = reader
        .issues()
        .iter()
        .map(|i| (i.line, i.kind.clone()))
        .collect();
    assert_eq!(issues.len(), 2, "{issues:?}");
    assert_eq!(issues[0].0, 2);
    assert!(matches!(issues[0].1, ReadIssueKind::Garbage(_)));
    assert_eq!(issues[1].0, 3);
}

#[test]
fn a_busy_database_delays_records_and_loses_none() {
    let dir = TempDir::new("logdb-busy");
    let db = dir.join("busy.db");
    let log = FailedOffsetLog::sqlite(&db).open().unwrap();
    // Another connection holds the write lock.
    let blocker = Connection::open(&db).unwrap();
    blocker
        .execute_batch(
            "BEGIN IMMEDIATE; CREATE TABLE app_rows (x); INSERT INTO app_rows VALUES (1);",
        )
        .unwrap();
    for o in [1, 2, 3] {
        log.record(failure(0, o));
    }
    common::wait_until(Duration::from_secs(10), "a write refused as busy", || {
        log.status().write_errors >= 1
    });
    let status = log.status();
    assert_eq!(status.unwritten, 3, "{status:?}");
    assert!(status.last_error.is_some());
    assert!(matches!(
        log.flush_timeout(Duration::from_secs(5)),
        Err(LogError::Write { unwritten: 3, .. })
    ));
    blocker.execute_batch("COMMIT").unwrap();
    log.flush().unwrap();
    let status = log.status();
    assert_eq!(
        (status.records_written, status.unwritten, status.dropped),
        (3, 0, 0)
    );
    assert_eq!(status.last_error, None);
    log.close().unwrap();
    let reader = LogReader::open_sqlite(&db).unwrap();
    assert_eq!(unresolved(&reader), [(0, 1), (0, 2), (0, 3)]);
}

#[test]
fn offsets_and_recommit_work_on_a_database_log() {
    logdb::offsets_and_recommit(&Sqlite::new("logdb-ops", "ops.db"), "logdb-ops");
}

#[test]
fn the_cli_refuses_to_resolve_in_a_database_without_the_log_and_creates_nothing() {
    let dir = TempDir::new("logdb-cli-empty");
    let db = dir.join("app.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        .unwrap();
    let tables = |conn: &Connection| -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    for url in ["sqlite:app.db", "sqlite:app%2Edb"] {
        let out = cli_in(
            Some(&dir.0),
            &[
                "resolve", "-l", url, "-g", "billing", "-t", "orders", "-p", "0", "-o", "1", "-n",
                "by hand",
            ],
        );
        assert_ne!(out.status.code(), Some(0), "{url}");
        let err = text(&out.stderr);
        assert!(err.contains("app.db"), "{err}");
        assert_eq!(tables(&conn), ["orders"], "{url}: {err}");
    }
}

#[test]
fn a_directory_or_device_as_the_database_is_not_a_file() {
    let dir = TempDir::new("logdb-notafile");
    for path in [dir.0.as_path(), Path::new("/dev/null")] {
        for err in [
            LogReader::open_sqlite(path).unwrap_err(),
            FailedOffsetLog::sqlite(path).open().unwrap_err(),
        ] {
            assert!(
                matches!(&err, LogError::NotAFile { path: p, .. } if p == path),
                "{}: {err}",
                path.display()
            );
        }
    }
}
