//! The backend-independent half of the failed-offset log tests on a
//! database (issue 16 item 9): SQLite in tests/failure_log_db.rs, PostgreSQL
//! in tests/failure_log_pg.rs. The database gives the log's URL, a writer's
//! builder, a reader and the CLI; the scenarios here are the same for both.
//! Included by path (`#[path = "common/logdb.rs"] mod logdb;`) next to
//! `mod common;` and `common/logs.rs` (it needs the `cli` feature's binary).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::{self, Fixture, recv_n, unique};
use crate::logs::resolutions;
use offset_guard::failure_log::{
    FailedOffsetLog, LogBuilder, LogEntry, LogError, LogLocation, LogReader, LogStream, Resolution,
    ResolutionKind,
};
use offset_guard::{FailedOffset, FailureReason, FailureSink, RetryPolicy};
use rdkafka::types::RDKafkaRespErr;

/// A row's query columns: kind, group, partition, offset, reason, resolution.
pub type Row = (String, String, i32, i64, Option<String>, Option<String>);

/// A database holding the failed-offset log.
pub trait LogDb {
    /// The log's URL, absolute (any working directory).
    fn url(&self) -> String;
    /// The URL the CLI is given where a test reads it through [`LogDb::cli`]
    /// (SQLite: relative to the database's directory).
    fn cli_url(&self) -> String {
        self.url()
    }
    /// A writer's builder (`FailedOffsetLog::sqlite` / `::postgres`).
    fn builder(&self) -> LogBuilder;
    /// The log read back (`LogReader::open_sqlite` / `::open_postgres`).
    fn reader(&self) -> LogReader;
    /// The `offset-guard` command with `args`.
    fn cli(&self, args: &[&str]) -> Output;
}

/// Runs the `offset-guard` command, in `dir` when given.
pub fn cli_in(dir: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_offset-guard"));
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    cmd.args(args).output().unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn failure(partition: i32, offset: i64) -> FailedOffset {
    FailedOffset::new("billing", "orders", partition, offset, FailureReason::Fatal)
        .with_error_message("Broker: Topic authorization failed")
        .with_attempts(1)
}

/// (partition, offset) of the unresolved failures, sorted.
pub fn unresolved(reader: &LogReader) -> Vec<(i32, i64)> {
    let mut v: Vec<_> = reader
        .unresolved()
        .iter()
        .map(|f| (f.partition, f.offset))
        .collect();
    v.sort();
    v
}

/// Two writers on one database (another consumer: no lock), a resolution;
/// the same entries as a file log would hold, through the same parser, and
/// by URL. Returns the reader.
pub fn round_trip(db: &impl LogDb) -> LogReader {
    let log = db.builder().open().unwrap();
    let other = db.builder().open().unwrap();
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

    let reader = db.reader();
    assert!(reader.issues().is_empty(), "{:?}", reader.issues());
    let offsets: Vec<i64> = reader.entries().iter().map(LogEntry::offset).collect();
    assert_eq!(offsets, [42, 43, 7, 42]);
    assert!(matches!(&reader.entries()[0], LogEntry::Failure(f)
        if f.reason == FailureReason::Fatal && f.error_message == "Broker: Topic authorization failed"));
    assert_eq!(unresolved(&reader), [(4, 7)]);
    // A URL reads the same.
    let streamed: Vec<_> = LogLocation::parse(db.url())
        .unwrap()
        .stream()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(streamed, reader.entries());
    reader
}

/// The query columns [`round_trip`] leaves in the table, in id order.
pub fn round_trip_rows() -> Vec<Row> {
    let fatal = Some("fatal".to_string());
    let f = |p, o| {
        (
            "failure".into(),
            "billing".into(),
            p,
            o,
            fatal.clone(),
            None,
        )
    };
    vec![
        f(3, 42),
        f(3, 43),
        f(4, 7),
        (
            "resolved".into(),
            "billing".into(),
            3,
            42,
            None,
            Some("superseded".into()),
        ),
    ]
}

/// Instance A: 10 committed, then the commit of 15 fails for good and is
/// in the database's log; `between` checks what else A left. Instance B: a
/// new builder, the same database (no file): resumes at the replayed 15,
/// commits it, and resolves it in the table. `name` names the topic and group.
pub async fn replayed_by_another_instance(db: &impl LogDb, name: &str, between: impl FnOnce()) {
    let fx = Fixture::mock();
    let (topic, group) = (unique(name), unique(&format!("g-{name}")));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 30, 0);

    let mut a = fx
        .guard(&group)
        .no_commit_interval()
        .retry(RetryPolicy::none())
        .failed_offset_log(db.builder())
        .build()
        .unwrap();
    a.subscribe(&[&topic]).unwrap();
    let records = recv_n(&mut a, 30, Duration::from_secs(30)).await;
    let (first, later): (Vec<_>, Vec<_>) = records.into_iter().partition(|r| r.offset() < 10);
    for r in first {
        r.ack();
    }
    a.commit_now().await.unwrap();
    fx.fail_commits(
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        1,
    );
    for r in later.into_iter().filter(|r| r.offset() < 15) {
        r.ack();
    }
    assert!(a.commit_now().await.is_err());
    let report = a.shutdown().await.unwrap();
    assert_eq!(report.log_flushed, Some(true));
    assert_eq!(fx.committed(&group, &topic, 1), [Some(10)]);
    assert_eq!(unresolved(&db.reader()), [(0, 15)]);
    between();

    let mut b = fx
        .guard(&group)
        .no_commit_interval()
        .failed_offset_log(db.builder())
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
    let after = db.reader();
    assert!(after.unresolved().is_empty(), "{:?}", after.unresolved());
    assert_eq!(resolutions(&after), [(0, 15, ResolutionKind::Recommitted)]);
}

/// The CLI lists the unresolved failures by URL, resolves one (by
/// [`LogDb::cli_url`]), refuses to resolve it again (exit 6, nothing
/// written) and lists the rest as JSON.
pub fn cli_reads_and_resolves(db: &impl LogDb) {
    let log = db.builder().open().unwrap();
    for o in [10, 11, 12] {
        log.record(failure(0, o));
    }
    log.close().unwrap();
    let url = db.url();

    let out = db.cli(&["failures", &url, "--unresolved"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for o in ["10", "11", "12"] {
        assert!(table.contains(o), "{table}");
    }
    let resolve = |l: &str, o: &str, note: &str| {
        db.cli(&[
            "resolve", "-l", l, "-g", "billing", "-t", "orders", "-p", "0", "-o", o, "-n", note,
            "--by", "ops",
        ])
    };
    let out = resolve(&db.cli_url(), "11", "poison record");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let reader = db.reader();
    assert_eq!(unresolved(&reader), [(0, 10), (0, 12)]);
    assert!(
        matches!(reader.entries().last(), Some(LogEntry::Resolved(r))
        if r.how == ResolutionKind::Manual && r.offset == 11 && r.by.as_deref() == Some("ops"))
    );
    // Resolving it again is refused, nothing written.
    let out = resolve(&url, "11", "again");
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert_eq!(db.reader().entries().len(), 4);

    let out = db.cli(&["failures", "--json", "--unresolved", &db.cli_url()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<_> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
}

/// `offsets` shows the unresolved offsets per partition; `recommit` commits
/// them and resolves them in the database's log.
pub fn offsets_and_recommit(db: &impl LogDb, name: &str) {
    let fx = Fixture::mock();
    let (topic, group) = (unique(name), unique(&format!("g-{name}")));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 10, 0);
    let log = db.builder().open().unwrap();
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
    let url = db.url();
    let b = fx.bootstrap();

    let out = db.cli(&["offsets", "-b", b, "-g", &group, "-l", &url, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let unresolved: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["unresolved"].clone())
        .collect();
    assert_eq!(unresolved, [serde_json::json!([7]), serde_json::json!([5])]);

    let out = db.cli(&["recommit", "-b", b, "-g", &group, "-l", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(fx.committed(&group, &topic, 2), [Some(7), Some(5)]);
    let reader = db.reader();
    assert!(reader.unresolved().is_empty(), "{:?}", reader.unresolved());
    assert_eq!(
        resolutions(&reader),
        [
            (0, 7, ResolutionKind::Recommitted),
            (1, 5, ResolutionKind::Recommitted)
        ]
    );
}

/// A newer schema version: refused by the reader (`stream`) and the writer
/// (`open`).
pub fn refused_as_too_new(
    stream: Result<LogStream, LogError>,
    open: Result<FailedOffsetLog, LogError>,
) {
    assert!(matches!(
        stream,
        Err(LogError::SchemaTooNew {
            found: 2,
            supported: 1,
            ..
        })
    ));
    assert!(matches!(open, Err(LogError::SchemaTooNew { found: 2, .. })));
}

/// A table of the log's name that is not the log's: refused by the writer
/// (`open`) and the reader (`stream`).
pub fn refused_as_foreign(
    open: Result<FailedOffsetLog, LogError>,
    stream: Result<LogStream, LogError>,
) {
    for e in [open.err(), stream.err()] {
        assert!(
            matches!(&e, Some(LogError::ForeignSchema { table, .. }) if table == "offset_guard_failed_offsets"),
            "{e:?}"
        );
    }
}
