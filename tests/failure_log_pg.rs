//! The failed-offset log kept in PostgreSQL (issue 16 item 9, feature
//! `postgres`) on a real server (`OFFSET_GUARD_POSTGRES`, see
//! tests/common/pg.rs: without it each test prints "OFFSET_GUARD_POSTGRES not
//! set: skipped"): the round trip with two writers (per-writer order kept,
//! past a page of rows), a failure recorded by one instance and replayed by
//! another that shares only the database, the CLI reading and resolving it
//! through a `postgresql://` URL, damaged rows and foreign schemas as typed
//! errors, a busy group lock and a terminated connection losing nothing, a
//! refused connection at open; `offsets` and `recommit` on it. Each test in a schema of its own (the URL's
//! `options=-csearch_path=...`). The scenarios shared with the SQLite log
//! (tests/failure_log_db.rs) are in tests/common/logdb.rs.

mod common;
#[path = "common/logdb.rs"]
mod logdb;
#[path = "common/logs.rs"]
mod logs;
#[path = "common/pg.rs"]
mod pg;

use std::process::Output;
use std::time::Duration;

use logdb::{LogDb, Row, cli_in, failure, text, unresolved};
use offset_guard::FailureSink;
use offset_guard::failure_log::{
    FailedOffsetLog, LogBuilder, LogEntry, LogError, LogReader, LogStream, ReadIssueKind,
};
use tokio_postgres::Client;

/// The log in the test's schema, by a URL naming that schema.
struct Postgres {
    url: String,
}

impl LogDb for Postgres {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn builder(&self) -> LogBuilder {
        FailedOffsetLog::postgres(&self.url)
    }

    fn reader(&self) -> LogReader {
        LogReader::open_postgres(&self.url).unwrap()
    }

    fn cli(&self, args: &[&str]) -> Output {
        cli(args)
    }
}

fn cli(args: &[&str]) -> Output {
    cli_in(None, args)
}

/// The test's schema, a client in it, and the log's URL naming that schema
/// (`extra` adds URL parameters).
async fn setup(test: &str, extra: &str) -> Option<(pg::Db, Client, String)> {
    let db = pg::db(test).await?;
    let base = std::env::var(pg::POSTGRES_ENV).unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-csearch_path%3D{}{extra}", db.schema);
    let client = db.connect().await;
    Some((db, client, url))
}

async fn rows(client: &Client) -> Vec<Row> {
    client
        .query(
            "SELECT kind, group_id, partition_id, commit_offset, reason, resolution
             FROM offset_guard_failed_offsets ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_log_round_trips_with_query_columns_and_two_writers() {
    let Some((_db, client, url)) = setup("log_round_trip", "").await else {
        return;
    };
    // Opened from a tokio worker thread: no block_on there.
    logdb::round_trip(&Postgres { url });
    assert_eq!(rows(&client).await, logdb::round_trip_rows());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_writers_of_one_group_keep_their_order_past_a_page() {
    let Some((_db, _client, url)) = setup("log_concurrent", "").await else {
        return;
    };
    let (a, b) = (
        FailedOffsetLog::postgres(&url).open().unwrap(),
        FailedOffsetLog::postgres(&url).open().unwrap(),
    );
    // 300 each, at the same time, both in group "billing": partition 0 from
    // writer a, 1 from b; each writer's rows must come back in its order.
    let write = |log: FailedOffsetLog, p: i32| {
        std::thread::spawn(move || {
            for o in 0..300 {
                log.record(failure(p, o));
            }
            log.close().unwrap();
        })
    };
    let (ta, tb) = (write(a, 0), write(b, 1));
    ta.join().unwrap();
    tb.join().unwrap();
    let reader = LogReader::open_postgres(&url).unwrap();
    assert!(reader.issues().is_empty(), "{:?}", reader.issues());
    assert_eq!(reader.entries().len(), 600);
    for p in [0, 1] {
        let offsets: Vec<i64> = reader
            .entries()
            .iter()
            .filter(|e| e.partition() == p)
            .map(LogEntry::offset)
            .collect();
        assert_eq!(offsets, (0..300).collect::<Vec<_>>(), "partition {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_of_one_instance_is_replayed_by_another_sharing_only_the_database() {
    let Some((_db, _client, url)) = setup("log_replay", "").await else {
        return;
    };
    logdb::replayed_by_another_instance(&Postgres { url }, "logpg", || ()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_and_resolves_a_postgres_log_by_url() {
    let Some((db, _client, url)) = setup("log_cli", "").await else {
        return;
    };
    logdb::cli_reads_and_resolves(&Postgres { url: url.clone() });

    // A schema without the log: exit 3 for both commands, nothing created.
    let admin = db.connect().await;
    let empty = format!("{}_empty", db.schema);
    admin
        .batch_execute(&format!("CREATE SCHEMA {empty}"))
        .await
        .unwrap();
    let empty_url = url.replace(&db.schema, &empty);
    let out = cli(&["failures", &empty_url]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no failed-offset log"));
    let out = cli(&[
        "resolve", "-l", &empty_url, "-g", "billing", "-t", "orders", "-p", "0", "-o", "1", "-n",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let tables: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1",
            &[&empty],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
    // No server there: exit 3, naming the URL with its password hidden.
    let out = cli(&["failures", "postgresql://app:s3cret@127.0.0.1:1/app"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("postgresql://app:***@127.0.0.1:1/app"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_rows_and_foreign_or_newer_schemas_are_typed_errors() {
    let Some((db, client, url)) = setup("log_damaged", "").await else {
        return;
    };
    let log = FailedOffsetLog::postgres(&url).open().unwrap();
    log.record(failure(0, 5));
    log.close().unwrap();
    client
        .batch_execute(
            "INSERT INTO offset_guard_failed_offsets
               (kind, time, group_id, topic, partition_id, commit_offset, line)
             VALUES ('failure', 'x', 'billing', 'orders', 0, 6, 'garbage')",
        )
        .await
        .unwrap();
    let reader = LogReader::open_postgres(&url).unwrap();
    let offsets: Vec<i64> = reader.entries().iter().map(LogEntry::offset).collect();
    assert_eq!(offsets, [5]);
    let issues: Vec<_> = reader
        .issues()
        .iter()
        .map(|i| (i.line, i.kind.clone()))
        .collect();
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].0, 2, "the row id is the line number");
    assert!(matches!(issues[0].1, ReadIssueKind::Garbage(_)));
    let out = cli(&["failures", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    // A newer schema version: refused by the reader and the writer.
    client
        .batch_execute("UPDATE offset_guard_log_schema SET version = 2")
        .await
        .unwrap();
    logdb::refused_as_too_new(
        LogStream::open_postgres(&url),
        FailedOffsetLog::postgres(&url).open(),
    );

    // A table of the log's name that is not the log's, in another schema.
    let foreign = format!("{}_foreign", db.schema);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {foreign}; CREATE TABLE {foreign}.offset_guard_failed_offsets (x TEXT)"
        ))
        .await
        .unwrap();
    let foreign_url = url.replace(&db.schema, &foreign);
    logdb::refused_as_foreign(
        FailedOffsetLog::postgres(&foreign_url).open(),
        LogStream::open_postgres(&foreign_url),
    );
    let out = cli(&["failures", &foreign_url]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("not offset-guard's log"));
    // A connection string that does not parse: a typed error, no panic.
    assert!(matches!(
        FailedOffsetLog::postgres("postgresql://h:notaport/db").open(),
        Err(LogError::Database {
            op: "parse the connection string",
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_group_lock_or_a_lost_connection_delays_records_and_loses_none() {
    let Some((_db, client, url)) = setup("log_busy", "&application_name=og_log_busy").await else {
        return;
    };
    let log = FailedOffsetLog::postgres(&url).open().unwrap();
    // Another session holds the group's insert lock (see the module docs).
    client
        .batch_execute("SELECT pg_advisory_lock(x'6f676c67'::int, hashtext('billing'))")
        .await
        .unwrap();
    for o in [1, 2, 3] {
        log.record(failure(0, o));
    }
    common::wait_until(Duration::from_secs(10), "an insert refused", || {
        log.status().write_errors >= 1
    });
    let status = log.status();
    assert_eq!(status.unwritten, 3, "{status:?}");
    assert!(status.last_error.is_some());
    // A row of another group meanwhile (no lock of its group is held): the
    // waiting inserts have taken no id yet, so theirs come after it.
    client
        .batch_execute(
            "INSERT INTO offset_guard_failed_offsets
               (kind, time, group_id, topic, partition_id, commit_offset, line)
             VALUES ('failure', 'x', 'other', 'orders', 0, 0, 'other group')",
        )
        .await
        .unwrap();
    client
        .batch_execute("SELECT pg_advisory_unlock(x'6f676c67'::int, hashtext('billing'))")
        .await
        .unwrap();
    log.flush().unwrap();
    let before: i64 = client
        .query_one(
            "SELECT count(*) FROM offset_guard_failed_offsets
             WHERE group_id = 'billing'
               AND id < (SELECT id FROM offset_guard_failed_offsets WHERE group_id = 'other')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, 0, "ids are taken after the group lock");
    client
        .batch_execute("DELETE FROM offset_guard_failed_offsets WHERE group_id = 'other'")
        .await
        .unwrap();
    let status = log.status();
    assert_eq!(
        (status.records_written, status.unwritten, status.dropped),
        (3, 0, 0)
    );
    assert_eq!(status.last_error, None);

    // The writer's connection terminated (a server restart looks the same):
    // the next record is written on a new connection.
    let killed: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = 'og_log_busy'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    log.record(failure(0, 4));
    common::wait_until(
        Duration::from_secs(15),
        "the record after a lost connection",
        || log.status().records_written == 4,
    );
    log.close().unwrap();
    let reader = LogReader::open_postgres(&url).unwrap();
    assert_eq!(unresolved(&reader), [(0, 1), (0, 2), (0, 3), (0, 4)]);

    // No server at all: open fails at once with a typed error.
    let started = std::time::Instant::now();
    let e = FailedOffsetLog::postgres("postgresql://postgres@127.0.0.1:1/postgres")
        .open()
        .unwrap_err();
    assert!(
        matches!(e, LogError::Database { op: "connect", .. }),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_and_recommit_work_on_a_postgres_log() {
    let Some((_db, _client, url)) = setup("log_ops", "").await else {
        return;
    };
    logdb::offsets_and_recommit(&Postgres { url }, "logpg-ops");
}
