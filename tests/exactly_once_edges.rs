//! The SQLite progress store (issue 16) at its edges: bad input and
//! failure cases a service owner meets, each expected to give a clear typed
//! error, no panic, no hang, nothing lost. Real database files in a
//! temporary directory.

mod common;
#[path = "common/sqlite.rs"]
mod sqlite_db;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Fixture, exactly_once, unique};
use offset_guard::progress::{PartitionProgress, ProgressError, sqlite};
use offset_guard::{GuardContext, GuardHandle, Tracked};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use sqlite_db::{count, open_effects};
use tokio::sync::Notify;

const GROUP: &str = "g";
const TOPIC: &str = "orders";

fn open(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    sqlite::migrate(&conn).unwrap();
    conn
}

/// A newer offset-guard that added a column (the usual way a schema grows)
/// must be reported as `SchemaTooNew`, not as "a table that is not
/// offset-guard's": the version is checked before the columns.
#[test]
fn a_newer_schema_that_added_a_column_is_schema_too_new() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open(&dir.path().join("p.db"));
    conn.execute_batch(
        "UPDATE offset_guard_schema SET version = 2;
         ALTER TABLE offset_guard_progress ADD COLUMN updated_at INTEGER;",
    )
    .unwrap();
    let err = sqlite::migrate(&conn).unwrap_err();
    assert!(
        matches!(
            err,
            ProgressError::SchemaTooNew {
                found: 2,
                supported: 1
            }
        ),
        "{err}"
    );
    let err = sqlite::check_schema(&conn).unwrap_err();
    assert!(matches!(err, ProgressError::SchemaTooNew { .. }), "{err}");
}

/// The docs: `migrate` "never touches ... tables of other names"; a user's
/// own table that merely starts with `offset_guard_` is another name.
#[test]
fn a_users_table_with_the_prefix_but_another_name_does_not_block_migrate() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch("CREATE TABLE offset_guard_audit (id INTEGER)")
        .unwrap();
    sqlite::migrate(&conn).unwrap();
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM offset_guard_audit"), 0);
}

/// A file that is not SQLite: a typed `Database` error, the file untouched.
#[test]
fn a_file_that_is_not_sqlite_gives_a_database_error_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    let text =
        "this is not a database, it is a text file long enough to have a header\n".repeat(20);
    std::fs::write(&path, &text).unwrap();
    let conn = Connection::open(&path).unwrap();
    let err = sqlite::migrate(&conn).unwrap_err();
    assert!(matches!(err, ProgressError::Database { .. }), "{err}");
    let err = sqlite::load(&conn, GROUP, TOPIC, 0).unwrap_err();
    assert!(matches!(err, ProgressError::Database { .. }), "{err}");
    drop(conn);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

/// A read-only database: an empty one cannot be migrated, a migrated one
/// loads but refuses marks; all typed, nothing half-written.
#[test]
fn a_read_only_database_gives_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.db");
    drop(Connection::open(&fresh).unwrap());
    let ro = Connection::open_with_flags(&fresh, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let err = sqlite::migrate(&ro).unwrap_err();
    assert!(matches!(err, ProgressError::Database { .. }), "{err}");

    let migrated = dir.path().join("migrated.db");
    let mut rw = open(&migrated);
    let tx = rw.transaction().unwrap();
    sqlite::advance(&tx, GROUP, TOPIC, 0, 10).unwrap();
    tx.commit().unwrap();
    drop(rw);
    let mut ro = Connection::open_with_flags(&migrated, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    sqlite::migrate(&ro).unwrap();
    assert_eq!(
        sqlite::load(&ro, GROUP, TOPIC, 0).unwrap().watermark(),
        Some(10)
    );
    let tx = ro.transaction().unwrap();
    let err = sqlite::mark_done(&tx, GROUP, TOPIC, 0, 10).unwrap_err();
    assert!(matches!(err, ProgressError::Database { .. }), "{err}");
    drop(tx);
    assert_eq!(
        sqlite::load(&ro, GROUP, TOPIC, 0).unwrap().watermark(),
        Some(10)
    );
}

/// Another connection holds the write lock (SQLITE_BUSY): the mark fails
/// with a typed `Database` error within the busy timeout; after the other
/// writer commits, the same record can be marked (nothing lost).
#[test]
fn a_database_locked_by_another_connection_is_a_typed_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let mut holder = open(&path);
    let mut conn = open(&path);
    conn.busy_timeout(Duration::from_millis(200)).unwrap();

    let lock = holder
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    sqlite::mark_done(&lock, GROUP, TOPIC, 0, 7).unwrap();

    let t0 = Instant::now();
    let tx = conn.transaction().unwrap();
    let err = sqlite::mark_done(&tx, GROUP, TOPIC, 0, 5).unwrap_err();
    assert!(matches!(err, ProgressError::Database { .. }), "{err}");
    let busy = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<rusqlite::Error>())
        .and_then(|e| e.sqlite_error_code());
    assert_eq!(busy, Some(rusqlite::ErrorCode::DatabaseBusy), "{err:?}");
    assert!(sqlite::is_retryable(&err), "{err:?}");
    let done = sqlite::mark_done(&lock, GROUP, TOPIC, 0, 7).unwrap_err();
    assert!(done.is_already_done() && !sqlite::is_retryable(&done));
    drop(tx);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    lock.commit().unwrap();
    let tx = conn.transaction().unwrap();
    sqlite::mark_done(&tx, GROUP, TOPIC, 0, 5).unwrap();
    tx.commit().unwrap();
    let p = sqlite::load(&conn, GROUP, TOPIC, 0).unwrap();
    assert_eq!(p.done_above().collect::<Vec<_>>(), vec![5, 7]);
}

/// A transaction that fails at COMMIT (a deferred foreign key) after
/// `mark_done`: nothing is marked, the record can be processed again.
#[test]
fn a_transaction_failing_at_commit_leaves_nothing_marked() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open(&dir.path().join("p.db"));
    conn.execute_batch(
        "PRAGMA foreign_keys = ON;
         CREATE TABLE customers (id INTEGER PRIMARY KEY);
         CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER
             REFERENCES customers (id) DEFERRABLE INITIALLY DEFERRED);",
    )
    .unwrap();
    let tx = conn.transaction().unwrap();
    sqlite::advance(&tx, GROUP, TOPIC, 0, 0).unwrap();
    tx.commit().unwrap();

    let tx = conn.transaction().unwrap();
    tx.execute("INSERT INTO orders VALUES (?1, 99)", params![0])
        .unwrap();
    sqlite::mark_done(&tx, GROUP, TOPIC, 0, 0).unwrap();
    tx.commit().unwrap_err();

    let p = sqlite::load(&conn, GROUP, TOPIC, 0).unwrap();
    assert_eq!(p.watermark(), Some(0), "the failed commit marked nothing");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM orders"), 0);
    let tx = conn.transaction().unwrap();
    tx.execute("INSERT INTO customers VALUES (99)", []).unwrap();
    tx.execute("INSERT INTO orders VALUES (0, 99)", []).unwrap();
    sqlite::mark_done(&tx, GROUP, TOPIC, 0, 0).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        sqlite::load(&conn, GROUP, TOPIC, 0).unwrap().watermark(),
        Some(1)
    );
}

/// The largest offset: its watermark (offset + 1) does not fit in an i64.
/// A typed error, no overflow panic, no wrapped negative watermark stored.
#[test]
fn the_largest_offset_is_refused_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open(&dir.path().join("p.db"));
    let tx = conn.transaction().unwrap();
    sqlite::advance(&tx, GROUP, TOPIC, 0, i64::MAX).unwrap();
    tx.commit().unwrap();
    let tx = conn.transaction().unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sqlite::mark_done(&tx, GROUP, TOPIC, 0, i64::MAX)
    }));
    let err = result.expect("mark_done panicked").unwrap_err();
    assert!(
        matches!(err, ProgressError::InvalidArgument { name: "offset", .. }),
        "{err}"
    );
    drop(tx);
    sqlite::load(&conn, GROUP, TOPIC, 0).unwrap();
}

fn start_member(
    fx: &Fixture,
    group: &str,
    topic: &str,
    db: &Path,
) -> (Arc<StreamConsumer<GuardContext>>, Arc<GuardHandle>) {
    let mut config = exactly_once::config(fx, group);
    config.set("partition.assignment.strategy", "cooperative-sticky");
    let conn = Mutex::new(open_effects(db));
    let g = group.to_string();
    let loader =
        move |group: &str, topic: &str, partition| -> Result<PartitionProgress, ProgressError> {
            assert_eq!(group, g);
            sqlite::load(&conn.lock().unwrap(), group, topic, partition)
        };
    let (consumer, guard) = exactly_once::own_loop(exactly_once::builder(config, loader), topic);
    (consumer, Arc::new(guard))
}

/// Offsets that take long: in flight when a member is killed.
const SLOW: [i64; 2] = [12, 30];

/// One member: every record processed in its own task (out of order: the
/// slow offsets take 1.5 s, the others 0-4 ms), effect and mark in one
/// transaction, acked after the commit. `kill`: the loop and every task in
/// flight are aborted (a crash: a task past its database commit never acks).
async fn concurrent_member(
    consumer: Arc<StreamConsumer<GuardContext>>,
    guard: Arc<GuardHandle>,
    db: PathBuf,
    kill: Arc<Notify>,
) {
    let conn = Arc::new(Mutex::new(open_effects(&db)));
    let group = guard.group_id().to_string();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let m = tokio::select! {
            m = consumer.recv() => m.expect("recv"),
            _ = kill.notified() => { tasks.abort_all(); return; }
        };
        let Tracked::Process(token) = guard.track_or_skip(&m) else {
            continue;
        };
        let (conn, group) = (conn.clone(), group.clone());
        tasks.spawn(async move {
            let pause = if SLOW.contains(&token.offset()) {
                1500
            } else {
                (token.offset() % 5) as u64
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let token = tokio::task::spawn_blocking(move || {
                let mut conn = conn.lock().unwrap();
                let tx = conn.transaction().unwrap();
                tx.execute(
                    "INSERT INTO effects (partition_id, record_offset) VALUES (?1, ?2)",
                    params![token.partition(), token.offset()],
                )
                .unwrap();
                match sqlite::mark_token(&tx, &group, &token) {
                    Ok(()) => tx.commit().unwrap(),
                    Err(e) => assert!(e.is_already_done(), "{e}"),
                }
                token
            })
            .await
            .unwrap();
            token.ack();
        });
        while tasks.try_join_next().is_some() {}
    }
}

/// Concurrent out-of-order processing with slow records, a second member
/// joining under cooperative-sticky, then the first killed (crash: no
/// shutdown, tasks aborted) with slow records in flight: every record's
/// effect exactly once, no done rows left, Kafka's commit never past the
/// database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_out_of_order_cooperative_rebalance_then_crash_applies_each_once() {
    let fx = Fixture::any();
    let (topic, group) = (unique("rv-eodb"), unique("g-rv-eodb"));
    const P: i32 = 4;
    const N: i64 = 40;
    fx.create_topic(&topic, P);
    fx.produce(&topic, P, 20, 0);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("effects.db");
    let conn = open_effects(&db);
    let rows = |conn: &Connection| count(conn, "SELECT COUNT(*) FROM effects");
    let watermarks = |conn: &Connection| -> Vec<Option<i64>> {
        (0..P)
            .map(|p| sqlite::load(conn, &group, &topic, p).unwrap().watermark())
            .collect()
    };

    let (ca, ga) = start_member(&fx, &group, &topic, &db);
    let kill_a = Arc::new(Notify::new());
    let a = tokio::spawn(concurrent_member(
        ca.clone(),
        ga.clone(),
        db.clone(),
        kill_a.clone(),
    ));
    // A has the slow record 12 of each partition in flight, the others done.
    common::wait_until(Duration::from_secs(30), "A did 60 records", || {
        rows(&conn) >= 60
    });
    let (cb, gb) = start_member(&fx, &group, &topic, &db);
    let kill_b = Arc::new(Notify::new());
    let b = tokio::spawn(concurrent_member(
        cb.clone(),
        gb.clone(),
        db.clone(),
        kill_b.clone(),
    ));
    fx.produce(&topic, P, 20, 20);
    common::wait_until(Duration::from_secs(30), "B has partitions", || {
        !gb.partitions().is_empty()
    });
    // Crash A while its slow record 30 (or 12) may be in flight.
    common::wait_until(Duration::from_secs(30), "A received past 30", || {
        ga.stats().delivered >= 100
    });
    kill_a.notify_one();
    a.await.unwrap();
    drop(ga);
    drop(ca);
    common::wait_until(Duration::from_secs(60), "every record done", || {
        watermarks(&conn) == vec![Some(N); P as usize]
    });
    kill_b.notify_one();
    b.await.unwrap();
    let gb = Arc::into_inner(gb).expect("the member task ended");
    gb.shutdown(&*cb).await.unwrap();
    drop(cb);

    let distinct =
        "SELECT COUNT(*) FROM (SELECT DISTINCT partition_id, record_offset FROM effects)";
    assert_eq!(count(&conn, distinct), P as i64 * N, "0 lost");
    assert_eq!(rows(&conn), P as i64 * N, "0 duplicates");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM offset_guard_done"), 0);
    for c in fx.committed(&group, &topic, P) {
        assert!(
            c.is_some_and(|c| c <= N),
            "Kafka commit {c:?} within the database's {N}"
        );
    }
}

/// The public model has the same overflow as the store had: marking
/// `i64::MAX` at a watermark of `i64::MAX` must be refused, not panic.
/// Fails: not fixed here (`MarkRefused` has no fitting variant; adding one
/// is an API decision).
#[test]
fn the_model_refuses_the_largest_offset_without_a_panic() {
    let mut p = PartitionProgress::new();
    p.advance(i64::MAX);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.mark_done(i64::MAX)));
    assert_eq!(
        result.expect("mark_done panicked"),
        Err(offset_guard::progress::MarkRefused::TooLarge)
    );
}

/// A slow database at assign: the loader takes 300 ms a partition and the
/// loads of one assign may take 400 ms together (`progress_load_timeout`).
/// The partitions whose turn came after the budget are not loaded (counted
/// as load errors, not waited for): their records are all handed out, and
/// the store's mark refuses the ones done already, so every record's effect
/// is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_past_the_budget_are_skipped_and_nothing_is_applied_twice() {
    let fx = Fixture::any();
    let (topic, group) = (unique("load-budget"), unique("g-load-budget"));
    const P: i32 = 6;
    fx.create_topic(&topic, P);
    fx.produce(&topic, P, 10, 0);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("effects.db");
    let mut conn = open_effects(&db);
    // A previous run applied and marked offsets 0-4 of every partition.
    let tx = conn.transaction().unwrap();
    for p in 0..P {
        sqlite::advance(&tx, &group, &topic, p, 0).unwrap();
        for o in 0..5 {
            tx.execute(
                "INSERT INTO effects (partition_id, record_offset) VALUES (?1, ?2)",
                params![p, o],
            )
            .unwrap();
            sqlite::mark_done(&tx, &group, &topic, p, o).unwrap();
        }
    }
    tx.commit().unwrap();

    let loads = Arc::new(Mutex::new(Vec::new()));
    let (loader_conn, seen) = (Mutex::new(open_effects(&db)), loads.clone());
    let loader = move |group: &str, topic: &str, partition| {
        // A database that answers slowly (the behaviour under test).
        std::thread::sleep(Duration::from_millis(300));
        seen.lock().unwrap().push(partition);
        sqlite::load(&loader_conn.lock().unwrap(), group, topic, partition)
    };
    let (consumer, guard) = offset_guard::OffsetGuard::builder(fx.config(&group))
        .retry(common::fast_retry(5))
        .no_commit_interval()
        .stored_progress(loader)
        .progress_load_timeout(Duration::from_millis(400))
        .build_consumer::<StreamConsumer<GuardContext>>()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let watermarks = |conn: &Connection| -> Vec<Option<i64>> {
        (0..P)
            .map(|p| sqlite::load(conn, &group, &topic, p).unwrap().watermark())
            .collect()
    };
    while watermarks(&conn) != vec![Some(10); P as usize] {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("a record within 30 s")
            .expect("recv");
        let Tracked::Process(token) = guard.track_or_skip(&m) else {
            continue;
        };
        let tx = conn.transaction().unwrap();
        tx.execute(
            "INSERT INTO effects (partition_id, record_offset) VALUES (?1, ?2)",
            params![token.partition(), token.offset()],
        )
        .unwrap();
        match sqlite::mark_token(&tx, &group, &token) {
            Ok(()) => tx.commit().unwrap(),
            Err(e) => assert!(e.is_already_done(), "{e}"),
        }
        token.ack();
    }
    let loaded = loads.lock().unwrap().len() as u64;
    let stats = guard.stats();
    guard.shutdown(&*consumer).await.unwrap();

    // Two loads take 600 ms, past the budget: at most two, never all six.
    assert!((1..=2).contains(&loaded), "{loaded} loads");
    assert_eq!(stats.progress_load_errors, P as u64 - loaded);
    let distinct =
        "SELECT COUNT(*) FROM (SELECT DISTINCT partition_id, record_offset FROM effects)";
    assert_eq!(count(&conn, distinct), P as i64 * 10, "0 lost");
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM effects"),
        P as i64 * 10,
        "0 duplicates"
    );
}
