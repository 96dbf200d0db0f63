//! The failed-offset log kept in a SQLite database (issue 16 item 9): the
//! round trip and its query columns, a failure recorded by one instance and
//! replayed by another that shares only the database, the CLI reading and
//! resolving it through a `sqlite:` URL, damaged rows and foreign schemas as
//! typed errors, and a busy database losing nothing.

mod common;
#[path = "common/tempdir.rs"]
mod tempdir;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{Fixture, recv_n, unique};
use offset_guard::failure_log::{
    FailedOffsetLog, LogEntry, LogError, LogLocation, LogReader, LogStream, ReadIssueKind,
    Resolution, ResolutionKind,
};
use offset_guard::{FailedOffset, FailureReason, FailureSink, RetryPolicy};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rusqlite::Connection;
use tempdir::TempDir;

/// A row's query columns: kind, group, partition, offset, reason, resolution.
type Row = (String, String, i32, i64, Option<String>, Option<String>);

fn failure(partition: i32, offset: i64) -> FailedOffset {
    FailedOffset::new("billing", "orders", partition, offset, FailureReason::Fatal)
        .with_error_message("Broker: Topic authorization failed")
        .with_attempts(1)
}

/// (partition, offset) of the unresolved failures, sorted.
fn unresolved(reader: &LogReader) -> Vec<(i32, i64)> {
    let mut v: Vec<_> = reader
        .unresolved()
        .iter()
        .map(|f| (f.partition, f.offset))
        .collect();
    v.sort();
    v
}

#[test]
fn a_database_log_round_trips_with_query_columns_and_several_writers() {
    let dir = TempDir::new("logdb-round-trip");
    let db = dir.join("app.db");
    let log = FailedOffsetLog::sqlite(&db).open().unwrap();
    // A second writer on the same database (another consumer): no lock.
    let other = FailedOffsetLog::sqlite(&db).open().unwrap();
    log.record(failure(3, 42));
    log.record(failure(3, 43));
    log.flush().unwrap();
    other.record(failure(4, 7));
    other.close().unwrap();
    log.resolve(Resolution::superseded("billing", "orders", 3, 42, 57));
    log.flush().unwrap();
    let status = log.status();
    assert_eq!((status.records_written, status.resolutions_written), (2, 1));
    assert_eq!((status.write_errors, status.dropped), (0, 0));
    log.close().unwrap();

    // The same entries as the file log would hold, through the same parser.
    let reader = LogReader::open_sqlite(&db).unwrap();
    assert!(reader.issues().is_empty(), "{:?}", reader.issues());
    assert_eq!(reader.files(), std::slice::from_ref(&db));
    let offsets: Vec<i64> = reader.entries().iter().map(LogEntry::offset).collect();
    assert_eq!(offsets, [42, 43, 7, 42]);
    assert!(matches!(&reader.entries()[0], LogEntry::Failure(f)
        if f.reason == FailureReason::Fatal && f.error_message == "Broker: Topic authorization failed"));
    assert_eq!(unresolved(&reader), [(4, 7)]);
    // A URL reads the same.
    let url = format!("sqlite://{}", db.display());
    let streamed: Vec<_> = LogLocation::parse(&url)
        .unwrap()
        .stream()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(streamed, reader.entries());

    // The query columns match the lines.
    let conn = Connection::open(&db).unwrap();
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
    let fatal = Some("fatal".to_string());
    assert_eq!(
        rows,
        [
            (
                "failure".into(),
                "billing".into(),
                3,
                42,
                fatal.clone(),
                None
            ),
            (
                "failure".into(),
                "billing".into(),
                3,
                43,
                fatal.clone(),
                None
            ),
            ("failure".into(), "billing".into(), 4, 7, fatal, None),
            (
                "resolved".into(),
                "billing".into(),
                3,
                42,
                None,
                Some("superseded".into())
            ),
        ]
    );
    let journal: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_of_one_instance_is_replayed_by_another_sharing_only_the_database() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("logdb"), unique("g-logdb"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 30, 0);
    let dir = TempDir::new("logdb-replay");
    let db = dir.join("shared.db");

    // Instance A: 10 committed, then the commit of 15 fails for good.
    let mut a = fx
        .guard(&group)
        .no_commit_interval()
        .retry(RetryPolicy::none())
        .failed_offset_log(FailedOffsetLog::sqlite(&db))
        .build()
        .unwrap();
    a.subscribe(&[&topic]).unwrap();
    let records = recv_n(&mut a, 30, Duration::from_secs(30)).await;
    let (first, later): (Vec<_>, Vec<_>) = records.into_iter().partition(|r| r.offset() < 10);
    for r in first {
        r.ack();
    }
    a.commit_now().await.unwrap();
    fx.mock_cluster().request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    for r in later.into_iter().filter(|r| r.offset() < 15) {
        r.ack();
    }
    assert!(a.commit_now().await.is_err());
    let report = a.shutdown().await.unwrap();
    assert_eq!(report.log_flushed, Some(true));
    assert_eq!(fx.committed(&group, &topic, 1), [Some(10)]);
    assert_eq!(unresolved(&LogReader::open_sqlite(&db).unwrap()), [(0, 15)]);
    // No file log anywhere: only the database (and its WAL files).
    let mut files: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert!(
        files.iter().all(|f| f.starts_with("shared.db")),
        "{files:?}"
    );

    // Instance B: a new builder, the same database, no file: resumes at the
    // replayed 15, commits it, and resolves it in the table.
    let mut b = fx
        .guard(&group)
        .no_commit_interval()
        .failed_offset_log(FailedOffsetLog::sqlite(&db))
        .replay_failed_offsets()
        .build()
        .unwrap();
    b.subscribe(&[&topic]).unwrap();
    let records = recv_n(&mut b, 15, Duration::from_secs(30)).await;
    assert_eq!(records.iter().map(|r| r.offset()).min(), Some(15));
    common::wait_until(Duration::from_secs(10), "the replayed commit lands", || {
        fx.committed(&group, &topic, 1) == [Some(15)]
    });
    assert_eq!(b.stats().offsets_replayed, 1);
    for r in records {
        r.ack();
    }
    b.shutdown().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 1), [Some(30)]);
    let after = LogReader::open_sqlite(&db).unwrap();
    assert!(after.unresolved().is_empty(), "{:?}", after.unresolved());
    let resolutions: Vec<_> = after
        .entries()
        .iter()
        .filter_map(|e| match e {
            LogEntry::Resolved(r) => Some((r.partition, r.offset, r.how)),
            _ => None,
        })
        .collect();
    assert_eq!(resolutions, [(0, 15, ResolutionKind::Recommitted)]);
}

fn cli_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_offset-guard"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_cli_reads_and_resolves_a_database_log_by_url() {
    let dir = TempDir::new("logdb-cli");
    let db = dir.join("ops.db");
    let log = FailedOffsetLog::sqlite(&db).open().unwrap();
    for o in [10, 11, 12] {
        log.record(failure(0, o));
    }
    log.close().unwrap();
    let abs = format!("sqlite://{}", db.display());

    let out = cli_in(&dir.0, &["failures", &abs, "--unresolved"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for o in ["10", "11", "12"] {
        assert!(table.contains(o), "{table}");
    }

    // Relative form, from the database's directory.
    let out = cli_in(
        &dir.0,
        &[
            "resolve",
            "-l",
            "sqlite:ops.db",
            "-g",
            "billing",
            "-t",
            "orders",
            "-p",
            "0",
            "-o",
            "11",
            "-n",
            "poison record",
            "--by",
            "ops",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let reader = LogReader::open_sqlite(&db).unwrap();
    assert_eq!(unresolved(&reader), [(0, 10), (0, 12)]);
    assert!(
        matches!(reader.entries().last(), Some(LogEntry::Resolved(r))
        if r.how == ResolutionKind::Manual && r.offset == 11 && r.by.as_deref() == Some("ops"))
    );
    // Resolving it again is refused, nothing written.
    let out = cli_in(
        &dir.0,
        &[
            "resolve", "-l", &abs, "-g", "billing", "-t", "orders", "-p", "0", "-o", "11", "-n",
            "again",
        ],
    );
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert_eq!(LogReader::open_sqlite(&db).unwrap().entries().len(), 4);

    let out = cli_in(
        &dir.0,
        &["failures", "--json", "--unresolved", "sqlite:ops.db"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<_> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");

    // An unsupported scheme (postgres:// in a build without the `postgres`
    // feature): a usage error naming it; a missing database: 3.
    let (url, named) = if cfg!(feature = "postgres") {
        ("mysql://db.example/app", "`mysql`")
    } else {
        ("postgres://db.example/app", "`postgres` cargo feature")
    };
    let out = cli_in(&dir.0, &["failures", url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(named), "{}", text(&out.stderr));
    let out = cli_in(&dir.0, &["failures", "sqlite:missing.db"]);
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
    let out = cli_in(&dir.0, &["failures", "sqlite:d.db"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("d.db:2:"),
        "{}",
        text(&out.stderr)
    );

    // A newer schema version: refused by the reader and the writer, unchanged.
    conn.execute("UPDATE offset_guard_log_schema SET version = 2", [])
        .unwrap();
    assert!(matches!(
        LogStream::open_sqlite(&db),
        Err(LogError::SchemaTooNew {
            found: 2,
            supported: 1,
            ..
        })
    ));
    assert!(matches!(
        FailedOffsetLog::sqlite(&db).open(),
        Err(LogError::SchemaTooNew { found: 2, .. })
    ));

    // A table of the log's name that is not the log's.
    let foreign = dir.join("foreign.db");
    Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE offset_guard_failed_offsets (x TEXT)")
        .unwrap();
    for e in [
        FailedOffsetLog::sqlite(&foreign).open().err(),
        LogStream::open_sqlite(&foreign).err(),
    ] {
        assert!(
            matches!(&e, Some(LogError::ForeignSchema { table, .. }) if table == "offset_guard_failed_offsets"),
            "{e:?}"
        );
    }
    let out = cli_in(&dir.0, &["failures", "sqlite:foreign.db"]);
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
    let fx = Fixture::mock();
    let (topic, group) = (unique("logdb-ops"), unique("g-logdb-ops"));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 10, 0);
    let dir = TempDir::new("logdb-ops");
    let db = dir.join("ops.db");
    let log = FailedOffsetLog::sqlite(&db).open().unwrap();
    for (p, o) in [(0, 7), (1, 5)] {
        log.record(FailedOffset::new(
            &group,
            &topic,
            p,
            o,
            FailureReason::Fatal,
        ));
    }
    log.close().unwrap();
    let url = format!("sqlite://{}", db.display());
    let b = fx.bootstrap();

    let out = cli_in(
        &dir.0,
        &["offsets", "-b", b, "-g", &group, "-l", &url, "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let unresolved: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["unresolved"].clone())
        .collect();
    assert_eq!(unresolved, [serde_json::json!([7]), serde_json::json!([5])]);

    let out = cli_in(&dir.0, &["recommit", "-b", b, "-g", &group, "-l", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(fx.committed(&group, &topic, 2), [Some(7), Some(5)]);
    let reader = LogReader::open_sqlite(&db).unwrap();
    assert!(reader.unresolved().is_empty(), "{:?}", reader.unresolved());
    let how: Vec<_> = reader
        .entries()
        .iter()
        .filter_map(|e| match e {
            LogEntry::Resolved(r) => Some((r.partition, r.offset, r.how)),
            _ => None,
        })
        .collect();
    assert_eq!(
        how,
        [
            (0, 7, ResolutionKind::Recommitted),
            (1, 5, ResolutionKind::Recommitted)
        ]
    );
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
            &dir.0,
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
