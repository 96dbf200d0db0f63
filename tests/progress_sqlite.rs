//! The SQLite progress store (feature `sqlite`) against a real database file
//! in a temporary directory: progress written in the user's transaction,
//! effects counted in the same database.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use offset_guard::progress::{PartitionProgress, ProgressError, sqlite};
use offset_guard::{GuardContext, Tracked};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rusqlite::{Connection, TransactionBehavior, params};

const GROUP: &str = "g";
const TOPIC: &str = "orders";

fn open(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    sqlite::migrate(&conn).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS effects (partition_id INTEGER, record_offset INTEGER)",
    )
    .unwrap();
    conn
}

fn db() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let conn = open(&dir.path().join("progress.db"));
    (dir, conn)
}

/// Processes one record: its effect and its mark in one transaction.
fn process(conn: &mut Connection, partition: i32, offset: i64) -> Result<(), ProgressError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    tx.execute(
        "INSERT INTO effects (partition_id, record_offset) VALUES (?1, ?2)",
        params![partition, offset],
    )
    .unwrap();
    sqlite::mark_done(&tx, GROUP, TOPIC, partition, offset)?;
    tx.commit().unwrap();
    Ok(())
}

fn start(conn: &mut Connection, partition: i32, at: i64) {
    let tx = conn.transaction().unwrap();
    sqlite::advance(&tx, GROUP, TOPIC, partition, at).unwrap();
    tx.commit().unwrap();
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn done_rows(conn: &Connection) -> i64 {
    count(conn, "SELECT COUNT(*) FROM offset_guard_done")
}

#[test]
fn out_of_order_completion_never_advances_past_an_undone_offset_and_stays_bounded() {
    let (_dir, mut conn) = db();
    start(&mut conn, 0, 0);
    let mut rng = fastrand::Rng::with_seed(16);
    let mut order: Vec<i64> = (0..200).filter(|o| *o != 17).collect();
    rng.shuffle(&mut order);
    let mut done = BTreeSet::new();
    for o in order {
        process(&mut conn, 0, o).unwrap();
        done.insert(o);
        let p = sqlite::load(&conn, GROUP, TOPIC, 0).unwrap();
        let w = p.watermark().unwrap();
        assert!(
            (0..w).all(|x| done.contains(&x)),
            "watermark {w} passes an undone record"
        );
        assert!(w <= 17);
        // Stored rows are exactly the offsets done above the watermark.
        assert_eq!(done_rows(&conn), done.range(w..).count() as i64);
        assert_eq!(
            p.done_above().collect::<BTreeSet<_>>(),
            done.range(w..).copied().collect()
        );
    }
    assert_eq!(
        sqlite::load(&conn, GROUP, TOPIC, 0).unwrap().watermark(),
        Some(17)
    );
    assert!(!sqlite::load(&conn, GROUP, TOPIC, 0).unwrap().is_done(17));
    process(&mut conn, 0, 17).unwrap();
    let p = sqlite::load(&conn, GROUP, TOPIC, 0).unwrap();
    assert_eq!(p.watermark(), Some(200));
    assert_eq!(done_rows(&conn), 0, "everything folded into the watermark");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM effects"), 200);
    assert_eq!(
        count(&conn, "SELECT COUNT(DISTINCT record_offset) FROM effects"),
        200
    );
}

#[test]
fn rollback_leaves_nothing_marked() {
    let (_dir, mut conn) = db();
    start(&mut conn, 0, 5);
    for o in [5, 7] {
        let tx = conn.transaction().unwrap();
        tx.execute("INSERT INTO effects VALUES (0, ?1)", [o])
            .unwrap();
        sqlite::mark_done(&tx, GROUP, TOPIC, 0, o).unwrap();
        assert!(
            sqlite::load(&tx, GROUP, TOPIC, 0).unwrap().is_done(o),
            "seen inside the transaction"
        );
        tx.rollback().unwrap();
    }
    let p = sqlite::load(&conn, GROUP, TOPIC, 0).unwrap();
    assert_eq!(p, PartitionProgress::from_parts(Some(5), []));
    assert_eq!(done_rows(&conn), 0);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM effects"), 0);
    // Done again after the rollback: accepted once.
    process(&mut conn, 0, 5).unwrap();
    process(&mut conn, 0, 7).unwrap();
    assert_eq!(
        sqlite::load(&conn, GROUP, TOPIC, 0).unwrap().watermark(),
        Some(6)
    );
}

#[test]
fn a_record_marked_twice_is_refused_and_its_effect_rolled_back() {
    let (_dir, mut conn) = db();
    start(&mut conn, 2, 0);
    process(&mut conn, 2, 0).unwrap(); // folded into the watermark
    process(&mut conn, 2, 3).unwrap(); // a done row
    for o in [0, 3] {
        let err = process(&mut conn, 2, o).unwrap_err();
        assert!(
            matches!(err, ProgressError::AlreadyDone { partition: 2, offset, .. } if offset == o),
            "{err}"
        );
    }
    // Within one transaction too.
    let tx = conn.transaction().unwrap();
    sqlite::mark_done(&tx, GROUP, TOPIC, 2, 1).unwrap();
    assert!(
        sqlite::mark_done(&tx, GROUP, TOPIC, 2, 1)
            .unwrap_err()
            .is_already_done()
    );
    drop(tx);
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM effects"),
        2,
        "the refused effects rolled back"
    );
}

#[test]
fn reopen_loads_the_same_progress_per_partition_and_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("progress.db");
    let mut models = [PartitionProgress::new(), PartitionProgress::new()];
    {
        let mut conn = open(&path);
        for (p, model) in models.iter_mut().enumerate() {
            let p = p as i32;
            start(&mut conn, p, 10 * i64::from(p));
            model.advance(10 * i64::from(p));
            for o in [3, 1, 0, 6, 12, 10, 14] {
                if model.mark_done(o).is_ok() {
                    process(&mut conn, p, o).unwrap();
                } else {
                    assert!(process(&mut conn, p, o).unwrap_err().is_already_done());
                }
            }
        }
    }
    let conn = open(&path);
    for (p, model) in models.iter().enumerate() {
        assert_eq!(&sqlite::load(&conn, GROUP, TOPIC, p as i32).unwrap(), model);
    }
    assert_eq!(models[0].watermark(), Some(2));
    assert_eq!(models[1].watermark(), Some(11));
    assert_eq!(
        sqlite::load(&conn, "other-group", TOPIC, 0).unwrap(),
        PartitionProgress::new(),
        "progress is per group"
    );
}

#[test]
fn advance_steps_over_an_offset_gap_and_deletes_the_rows_below() {
    let (_dir, mut conn) = db();
    // Never started: nothing folds, every done offset is a row.
    for o in [0, 1, 3, 4] {
        process(&mut conn, 0, o).unwrap();
    }
    assert_eq!(
        sqlite::load(&conn, GROUP, TOPIC, 0).unwrap().watermark(),
        None
    );
    assert_eq!(done_rows(&conn), 4);
    start(&mut conn, 0, 0);
    assert_eq!(
        sqlite::load(&conn, GROUP, TOPIC, 0).unwrap().watermark(),
        Some(2)
    );
    assert_eq!(done_rows(&conn), 2);
    // Offset 2 is a transaction marker: the consumer saw 1 then 3.
    start(&mut conn, 0, 3);
    assert_eq!(
        sqlite::load(&conn, GROUP, TOPIC, 0).unwrap().watermark(),
        Some(5)
    );
    assert_eq!(done_rows(&conn), 0);
    start(&mut conn, 0, 1); // backwards: nothing
    assert_eq!(
        sqlite::load(&conn, GROUP, TOPIC, 0).unwrap().watermark(),
        Some(5)
    );
}

#[test]
fn concurrent_writers_on_one_file_apply_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("progress.db");
    let mut conn = open(&path);
    start(&mut conn, 0, 0);
    // Four workers each try every record (in different orders): exactly one
    // transaction per record commits, the others get AlreadyDone.
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut conn = open(&path);
                let mut order: Vec<i64> = (0..100).collect();
                fastrand::Rng::with_seed(w).shuffle(&mut order);
                let mut applied = 0;
                for o in order {
                    match process(&mut conn, 0, o) {
                        Ok(()) => applied += 1,
                        Err(e) => assert!(e.is_already_done(), "{e}"),
                    }
                }
                applied
            })
        })
        .collect();
    let applied: i64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(applied, 100);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM effects"), 100);
    assert_eq!(
        count(&conn, "SELECT COUNT(DISTINCT record_offset) FROM effects"),
        100
    );
    assert_eq!(
        sqlite::load(&conn, GROUP, TOPIC, 0).unwrap().watermark(),
        Some(100)
    );
    assert_eq!(done_rows(&conn), 0);
}

#[test]
fn a_key_is_processed_once_within_its_retention() {
    let (_dir, mut conn) = db();
    let day = Duration::from_secs(86_400);
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mark = |conn: &mut Connection, group: &str, key: &[u8], now: SystemTime| {
        let tx = conn.transaction().unwrap();
        let new = sqlite::mark_key_at(&tx, group, key, day, now).unwrap();
        tx.commit().unwrap();
        new
    };
    assert!(mark(&mut conn, GROUP, b"order-1", t0));
    assert!(
        !mark(&mut conn, GROUP, b"order-1", t0 + Duration::from_secs(60)),
        "same key twice"
    );
    assert!(mark(&mut conn, GROUP, b"order-2", t0));
    assert!(
        mark(&mut conn, "other-group", b"order-1", t0),
        "keys are per group"
    );
    // A rolled-back key was not processed.
    let tx = conn.transaction().unwrap();
    assert!(sqlite::mark_key_at(&tx, GROUP, b"order-3", day, t0).unwrap());
    drop(tx);
    assert!(mark(&mut conn, GROUP, b"order-3", t0));
    // After the retention, old keys are pruned and count as new.
    let later = t0 + day + Duration::from_millis(1);
    assert!(mark(&mut conn, GROUP, b"order-1", later));
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM offset_guard_keys WHERE group_id = 'g'"
        ),
        1,
        "order-2 and order-3 pruned, order-1 stored anew"
    );
}

#[test]
fn foreign_damaged_or_missing_schema_gives_a_typed_error() {
    // A table of the store's name that is not the store's.
    let foreign = Connection::open_in_memory().unwrap();
    foreign
        .execute_batch("CREATE TABLE offset_guard_done (id INTEGER)")
        .unwrap();
    let err = sqlite::migrate(&foreign).unwrap_err();
    assert!(
        matches!(&err, ProgressError::ForeignSchema { table, .. } if table == "offset_guard_done"),
        "{err}"
    );
    assert_eq!(
        count(&foreign, "SELECT COUNT(*) FROM sqlite_master"),
        1,
        "nothing created"
    );

    // A newer schema version.
    let (_dir, conn) = db();
    conn.execute("UPDATE offset_guard_schema SET version = 2", [])
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

    // A column dropped by hand.
    let (_dir, conn) = db();
    conn.execute_batch(
        "DROP INDEX offset_guard_keys_age; ALTER TABLE offset_guard_keys DROP COLUMN processed_at",
    )
    .unwrap();
    let err = sqlite::check_schema(&conn).unwrap_err();
    assert!(
        matches!(&err, ProgressError::ForeignSchema { table, .. } if table == "offset_guard_keys"),
        "{err}"
    );

    // No migration.
    let mut bare = Connection::open_in_memory().unwrap();
    let tx = bare.transaction().unwrap();
    let err = sqlite::mark_done(&tx, GROUP, TOPIC, 0, 1).unwrap_err();
    assert!(matches!(err, ProgressError::NotMigrated { .. }), "{err}");
    drop(tx);
    assert!(matches!(
        sqlite::check_schema(&bare),
        Err(ProgressError::NotMigrated { .. })
    ));

    // Rows edited by hand: a done row below the watermark.
    let (_dir, mut conn) = db();
    start(&mut conn, 0, 10);
    conn.execute(
        "INSERT INTO offset_guard_done VALUES ('g', 'orders', 0, 4)",
        [],
    )
    .unwrap();
    let err = sqlite::load(&conn, GROUP, TOPIC, 0).unwrap_err();
    assert!(
        matches!(err, ProgressError::Damaged { partition: 0, .. }),
        "{err}"
    );
}

#[test]
fn bad_arguments_and_writes_outside_a_transaction_are_refused() {
    let (_dir, mut conn) = db();
    let err = sqlite::mark_done(&conn, GROUP, TOPIC, 0, 1).unwrap_err();
    assert!(
        matches!(err, ProgressError::NotInTransaction { call: "mark_done" }),
        "{err}"
    );
    let err = sqlite::mark_key(&conn, GROUP, b"k", Duration::from_secs(1)).unwrap_err();
    assert!(
        matches!(err, ProgressError::NotInTransaction { call: "mark_key" }),
        "{err}"
    );
    let tx = conn.transaction().unwrap();
    for (err, name) in [
        (sqlite::mark_done(&tx, "", TOPIC, 0, 1), "group"),
        (sqlite::mark_done(&tx, GROUP, "", 0, 1), "topic"),
        (sqlite::mark_done(&tx, GROUP, TOPIC, -1, 1), "partition"),
        (sqlite::mark_done(&tx, GROUP, TOPIC, 0, -1), "offset"),
        (sqlite::advance(&tx, GROUP, TOPIC, 0, -5), "floor"),
    ] {
        let err = err.unwrap_err();
        assert!(
            matches!(err, ProgressError::InvalidArgument { name: n, .. } if n == name),
            "{err}"
        );
    }
    tx.commit().unwrap();
    assert_eq!(done_rows(&conn), 0);
}

#[test]
fn migrate_is_idempotent_and_works_inside_the_users_transaction() {
    let mut conn = Connection::open_in_memory().unwrap();
    let tx = conn.transaction().unwrap();
    tx.execute_batch("CREATE TABLE mine (x INTEGER)").unwrap();
    sqlite::migrate(&tx).unwrap();
    sqlite::migrate(&tx).unwrap();
    tx.commit().unwrap();
    sqlite::migrate(&conn).unwrap();
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM offset_guard_schema"), 1);
    assert_eq!(
        count(&conn, "PRAGMA user_version"),
        0,
        "user_version untouched"
    );
}

#[test]
fn migrate_repairs_a_dropped_table_or_index_and_keeps_the_rows() {
    let (_dir, mut conn) = db();
    start(&mut conn, 0, 5);
    process(&mut conn, 0, 7).unwrap();
    for (drop, missing) in [
        ("DROP TABLE offset_guard_done", "no table offset_guard_done"),
        ("DROP TABLE offset_guard_keys", "no table offset_guard_keys"),
        (
            "DROP INDEX offset_guard_keys_age",
            "no index offset_guard_keys_age",
        ),
    ] {
        conn.execute_batch(drop).unwrap();
        let err = sqlite::check_schema(&conn).unwrap_err();
        assert!(
            matches!(&err, ProgressError::NotMigrated { detail } if detail == missing),
            "{drop}: {err}"
        );
        sqlite::migrate(&conn).unwrap();
        sqlite::check_schema(&conn).unwrap();
        let p = sqlite::load(&conn, GROUP, TOPIC, 0).unwrap();
        assert_eq!(p.watermark(), Some(5), "{drop}: the progress row is kept");
    }
    process(&mut conn, 0, 5).unwrap();
    let p = sqlite::load(&conn, GROUP, TOPIC, 0).unwrap();
    assert_eq!(
        (p.watermark(), p.done_above().len()),
        (Some(6), 0),
        "7 was dropped with its table"
    );
    // A newer version is not repaired: SchemaTooNew, nothing created.
    conn.execute_batch("DROP TABLE offset_guard_done; UPDATE offset_guard_schema SET version = 2")
        .unwrap();
    let err = sqlite::migrate(&conn).unwrap_err();
    assert!(
        matches!(err, ProgressError::SchemaTooNew { found: 2, .. }),
        "{err}"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'offset_guard_done'"
        ),
        0
    );
}

#[test]
fn load_and_marks_refuse_a_newer_schema_version() {
    let (_dir, mut conn) = db();
    start(&mut conn, 0, 5);
    conn.execute("UPDATE offset_guard_schema SET version = 2", [])
        .unwrap();
    let too_new = |r: Result<(), ProgressError>| match r {
        Err(ProgressError::SchemaTooNew {
            found: 2,
            supported: 1,
        }) => {}
        other => panic!("{other:?}"),
    };
    too_new(sqlite::load(&conn, GROUP, TOPIC, 0).map(|_| ()));
    let tx = conn.transaction().unwrap();
    too_new(sqlite::mark_done(&tx, GROUP, TOPIC, 0, 5));
    too_new(sqlite::mark_done(&tx, GROUP, TOPIC, 0, 9));
    too_new(sqlite::advance(&tx, GROUP, TOPIC, 0, 7));
    drop(tx);
    // Nothing written.
    conn.execute("UPDATE offset_guard_schema SET version = 1", [])
        .unwrap();
    assert_eq!(
        sqlite::load(&conn, GROUP, TOPIC, 0).unwrap().watermark(),
        Some(5)
    );
}

#[test]
fn a_nul_byte_in_group_or_topic_is_refused_naming_the_argument() {
    let (_dir, mut conn) = db();
    let tx = conn.transaction().unwrap();
    for (err, name) in [
        (sqlite::mark_done(&tx, "g\0", TOPIC, 0, 1), "group"),
        (sqlite::mark_done(&tx, GROUP, "or\0ders", 0, 1), "topic"),
        (sqlite::advance(&tx, GROUP, "\0", 0, 1), "topic"),
        (
            sqlite::mark_key(&tx, "\0", b"k", Duration::from_secs(1)).map(|_| ()),
            "group",
        ),
        (sqlite::load(&tx, "g\0", TOPIC, 0).map(|_| ()), "group"),
    ] {
        let err = err.unwrap_err();
        assert!(
            matches!(&err, ProgressError::InvalidArgument { name: n, value } if *n == name && value.contains("NUL")),
            "{err}"
        );
    }
    tx.commit().unwrap();
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM offset_guard_progress"),
        0
    );
}

/// `mark_tokens` with tokens of a real consumer (own loop, MockCluster), as
/// `progress_postgres`: batches of 10 tokens of two partitions, each in
/// reverse order; a batch holding a token marked before fails naming it
/// and, rolled back, changes nothing; in the end every record is in the
/// watermarks and no done row is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mark_tokens_marks_a_batch_and_names_the_token_done_before() {
    let fx = common::Fixture::any();
    let (topic, group) = (common::unique("sq-tokens"), common::unique("g-sq-tokens"));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 30, 0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("progress.db");
    let mut conn = open(&path);
    let loader = std::sync::Mutex::new(open(&path));
    let (consumer, guard) = offset_guard::OffsetGuard::builder(fx.config(&group))
        .stored_progress(move |g, t, p| sqlite::load(&loader.lock().unwrap(), g, t, p))
        .build_consumer::<StreamConsumer<GuardContext>>()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut tokens = Vec::new();
    while tokens.len() < 60 {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("a message within 30 s")
            .unwrap();
        match guard.track_or_skip(&m) {
            Tracked::Process(token) => tokens.push(token),
            Tracked::Done => panic!("nothing is done yet"),
        }
    }
    let stored = |conn: &Connection, p| {
        let pr = sqlite::load(conn, &group, &topic, p).unwrap();
        (pr.watermark(), pr.done_above().collect::<Vec<_>>())
    };
    tokens.sort_by_key(|t| (t.offset(), t.partition()));
    let mut rest = tokens.split_off(10);
    let mut first = tokens;
    first.reverse();
    let tx = conn.transaction().unwrap();
    sqlite::mark_tokens(&tx, &group, &[]).unwrap();
    sqlite::mark_tokens(&tx, &group, &first).unwrap();
    tx.commit().unwrap();
    assert_eq!(stored(&conn, 0), (Some(5), vec![]));
    assert_eq!(stored(&conn, 1), (Some(5), vec![]));
    let again = first.remove(4);
    let (p, o) = (again.partition(), again.offset());
    let mixed = vec![rest.pop().unwrap(), again, rest.pop().unwrap()];
    let tx = conn.transaction().unwrap();
    let err = sqlite::mark_tokens(&tx, &group, &mixed).unwrap_err();
    assert!(
        matches!(&err, ProgressError::AlreadyDone { topic: t, partition, offset, watermark: Some(5) }
            if *t == topic && *partition == p && *offset == o),
        "{err}"
    );
    drop(tx); // rolled back
    assert_eq!(stored(&conn, 0), (Some(5), vec![]));
    assert_eq!(stored(&conn, 1), (Some(5), vec![]));
    let mut mixed = mixed.into_iter();
    rest.push(mixed.next().unwrap());
    first.push(mixed.next().unwrap());
    rest.push(mixed.next().unwrap());
    rest.sort_by_key(|t| std::cmp::Reverse((t.offset(), t.partition())));
    for batch in rest.chunks(10) {
        let tx = conn.transaction().unwrap();
        sqlite::mark_tokens(&tx, &group, batch).unwrap();
        tx.commit().unwrap();
    }
    assert_eq!(stored(&conn, 0), (Some(30), vec![]));
    assert_eq!(stored(&conn, 1), (Some(30), vec![]));
    assert_eq!(done_rows(&conn), 0);
    for token in first.into_iter().chain(rest) {
        token.ack();
    }
}
