//! The PostgreSQL progress store (feature `postgres`) on a real server
//! (`OFFSET_GUARD_POSTGRES`, see tests/common/pg.rs: without it each test
//! prints "OFFSET_GUARD_POSTGRES not set: skipped"). Progress written in the
//! test's own transactions, effects counted in the same database; each test
//! in a schema of its own.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use offset_guard::progress::{MarkRefused, PartitionProgress, ProgressError, postgres};
use offset_guard::{GuardContext, Tracked};
use pg::{count, effect, effects};
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio_postgres::{Client, IsolationLevel};

const GROUP: &str = "g";
const TOPIC: &str = "orders";

/// Processes one record: its effect and its mark in one transaction.
async fn process(client: &mut Client, partition: i32, offset: i64) -> Result<(), ProgressError> {
    let tx = client.transaction().await.unwrap();
    effect(&tx, partition, offset).await;
    postgres::mark_done(&tx, GROUP, TOPIC, partition, offset).await?;
    tx.commit().await.unwrap();
    Ok(())
}

async fn start(client: &mut Client, partition: i32, at: i64) {
    let tx = client.transaction().await.unwrap();
    postgres::advance(&tx, GROUP, TOPIC, partition, at)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn done_rows(client: &Client) -> i64 {
    count(client, "SELECT COUNT(*) FROM offset_guard_done").await
}

async fn load(client: &Client, partition: i32) -> (Option<i64>, Vec<i64>) {
    let p = postgres::load(client, GROUP, TOPIC, partition)
        .await
        .unwrap();
    (p.watermark(), p.done_above().collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_completion_never_advances_past_an_undone_offset_and_stays_bounded() {
    let Some(db) = pg::db("out_of_order").await else {
        return;
    };
    let mut c = db.open().await;
    start(&mut c, 0, 0).await;
    // 1..=9 done before 0 and 5.
    for o in (1..10).filter(|o| *o != 5) {
        process(&mut c, 0, o).await.unwrap();
    }
    assert_eq!(load(&c, 0).await, (Some(0), vec![1, 2, 3, 4, 6, 7, 8, 9]));
    process(&mut c, 0, 0).await.unwrap();
    assert_eq!(load(&c, 0).await, (Some(5), vec![6, 7, 8, 9]), "stops at 5");
    assert_eq!(
        done_rows(&c).await,
        4,
        "rows folded into the watermark are deleted"
    );
    process(&mut c, 0, 5).await.unwrap();
    assert_eq!(load(&c, 0).await, (Some(10), vec![]));
    assert_eq!(done_rows(&c).await, 0);
    // A long in-order stream keeps no rows at all.
    for o in 10..200 {
        process(&mut c, 0, o).await.unwrap();
        assert!(done_rows(&c).await == 0);
    }
    assert_eq!(load(&c, 0).await, (Some(200), vec![]));
    assert_eq!(effects(&c).await, (200, 200, 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_leaves_nothing_marked() {
    let Some(db) = pg::db("rollback").await else {
        return;
    };
    let mut c = db.open().await;
    start(&mut c, 0, 0).await;
    for o in [0, 3] {
        let tx = c.transaction().await.unwrap();
        effect(&tx, 0, o).await;
        postgres::mark_done(&tx, GROUP, TOPIC, 0, o).await.unwrap();
        tx.rollback().await.unwrap();
    }
    assert_eq!(load(&c, 0).await, (Some(0), vec![]));
    assert_eq!(effects(&c).await, (0, 0, 0));
    // Dropped without commit: rolled back too.
    {
        let tx = c.transaction().await.unwrap();
        effect(&tx, 0, 0).await;
        postgres::mark_done(&tx, GROUP, TOPIC, 0, 0).await.unwrap();
    }
    assert_eq!(load(&c, 0).await, (Some(0), vec![]));
    process(&mut c, 0, 0).await.unwrap();
    process(&mut c, 0, 3).await.unwrap();
    assert_eq!(load(&c, 0).await, (Some(1), vec![3]));
    assert_eq!(effects(&c).await, (2, 2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_marked_twice_is_refused_and_its_effect_rolled_back() {
    let Some(db) = pg::db("twice").await else {
        return;
    };
    let mut c = db.open().await;
    start(&mut c, 0, 10).await;
    process(&mut c, 0, 10).await.unwrap(); // folded: watermark 11
    process(&mut c, 0, 13).await.unwrap(); // a done row
    for o in [5, 10, 13] {
        let e = process(&mut c, 0, o).await.unwrap_err();
        assert!(
            matches!(e, ProgressError::AlreadyDone { offset, watermark: Some(11), .. } if offset == o),
            "{e}"
        );
    }
    // Twice in one transaction.
    let tx = c.transaction().await.unwrap();
    postgres::mark_done(&tx, GROUP, TOPIC, 0, 20).await.unwrap();
    let e = postgres::mark_done(&tx, GROUP, TOPIC, 0, 20)
        .await
        .unwrap_err();
    assert!(e.is_already_done(), "{e}");
    drop(tx);
    // The refused transactions' effects are gone with them.
    assert_eq!(effects(&c).await, (2, 2, 2));
    assert_eq!(load(&c, 0).await, (Some(11), vec![13]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reloads_per_partition_and_group_also_through_the_loader() {
    let Some(db) = pg::db("reload").await else {
        return;
    };
    let mut c = db.open().await;
    start(&mut c, 0, 0).await;
    start(&mut c, 1, 100).await;
    for o in [0, 1, 4] {
        process(&mut c, 0, o).await.unwrap();
    }
    process(&mut c, 1, 102).await.unwrap();
    drop(c);
    let c = db.connect().await;
    assert_eq!(load(&c, 0).await, (Some(2), vec![4]));
    assert_eq!(load(&c, 1).await, (Some(100), vec![102]));
    assert_eq!(load(&c, 2).await, (None, vec![]), "never stored");
    let other = postgres::load(&c, "other-group", TOPIC, 0).await.unwrap();
    assert_eq!(other.watermark(), None, "progress is per group");
    // The loader, called from this tokio worker thread (no block_on panic)
    // and from a plain thread.
    let loader = Arc::new(db.loader());
    let p = loader.load(GROUP, TOPIC, 0).unwrap();
    assert_eq!(
        (p.watermark(), p.is_done(4), p.is_done(3)),
        (Some(2), true, false)
    );
    let l = loader.clone();
    let p = std::thread::spawn(move || l.load(GROUP, TOPIC, 1).unwrap())
        .join()
        .unwrap();
    assert_eq!(p.watermark(), Some(100));
    let e = loader.load("", TOPIC, 0).unwrap_err();
    assert!(
        matches!(e, ProgressError::InvalidArgument { name: "group", .. }),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loader_connects_again_after_its_connection_was_terminated() {
    let Some(db) = pg::db("reconnect").await else {
        return;
    };
    let mut c = db.open().await;
    start(&mut c, 0, 7).await;
    let name = format!("loader-{}", db.schema);
    let mut config = db.config.clone();
    config.application_name(&name);
    let loader = postgres::Loader::connect_with(config, tokio_postgres::NoTls).unwrap();
    assert_eq!(loader.load(GROUP, TOPIC, 0).unwrap().watermark(), Some(7));
    let terminated = count(
        &c,
        &format!(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{name}'"
        ),
    )
    .await;
    assert_eq!(terminated, 1);
    for _ in 0..2 {
        assert_eq!(loader.load(GROUP, TOPIC, 0).unwrap().watermark(), Some(7));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loader_reports_an_unreachable_server_and_a_bad_connection_string() {
    let e = postgres::Loader::connect("postgresql://nobody@127.0.0.1:1/none").unwrap_err();
    assert!(matches!(e, ProgressError::Database { .. }), "{e}");
    let e = postgres::Loader::connect("postgresql://[bad").unwrap_err();
    assert!(
        matches!(e, ProgressError::InvalidArgument { name: "config", .. }),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advance_steps_over_an_offset_gap_and_deletes_the_rows_below() {
    let Some(db) = pg::db("advance").await else {
        return;
    };
    let mut c = db.open().await;
    start(&mut c, 0, 0).await;
    for o in [0, 1, 3, 4, 7] {
        process(&mut c, 0, o).await.unwrap();
    }
    assert_eq!(load(&c, 0).await, (Some(2), vec![3, 4, 7]), "2 is a gap");
    start(&mut c, 0, 3).await;
    assert_eq!(load(&c, 0).await, (Some(5), vec![7]));
    start(&mut c, 0, 1).await; // below: nothing changes
    assert_eq!(load(&c, 0).await, (Some(5), vec![7]));
    start(&mut c, 0, 9).await;
    assert_eq!(load(&c, 0).await, (Some(9), vec![]));
    assert_eq!(done_rows(&c).await, 0);
    // Marks before any advance are kept as rows, nothing folded.
    process(&mut c, 1, 0).await.unwrap();
    process(&mut c, 1, 1).await.unwrap();
    assert_eq!(load(&c, 1).await, (None, vec![0, 1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_processed_once_within_its_retention_and_old_keys_are_deleted() {
    let Some(db) = pg::db("keys").await else {
        return;
    };
    let mut c = db.open().await;
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let ret = Duration::from_secs(60);
    let mark = async |c: &mut Client, group: &str, key: &[u8], at: SystemTime| {
        let tx = c.transaction().await.unwrap();
        let new = postgres::mark_key_at(&tx, group, key, ret, at)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        new
    };
    assert!(mark(&mut c, GROUP, b"order-1", t0).await);
    assert!(!mark(&mut c, GROUP, b"order-1", t0 + Duration::from_secs(30)).await);
    assert!(
        mark(&mut c, "other", b"order-1", t0).await,
        "keys are per group"
    );
    // Rolled back: the key is not kept.
    let tx = c.transaction().await.unwrap();
    assert!(
        postgres::mark_key_at(&tx, GROUP, b"order-2", ret, t0)
            .await
            .unwrap()
    );
    drop(tx);
    assert!(mark(&mut c, GROUP, b"order-2", t0).await);
    // Past the retention: deleted, new again; the table holds about one
    // retention period of keys.
    for i in 0..20u8 {
        mark(&mut c, GROUP, &[i], t0 + Duration::from_secs(61)).await;
    }
    assert!(mark(&mut c, GROUP, b"order-1", t0 + Duration::from_secs(61)).await);
    assert_eq!(
        count(
            &c,
            "SELECT COUNT(*) FROM offset_guard_keys WHERE group_id = 'g'"
        )
        .await,
        21,
        "order-1 and order-2 of t0 deleted, 20 + order-1 again kept"
    );
    let tx = c.transaction().await.unwrap();
    let e = postgres::mark_key(&tx, "", b"k", ret).await.unwrap_err();
    assert!(
        matches!(e, ProgressError::InvalidArgument { name: "group", .. }),
        "{e}"
    );
    // A key too long for PostgreSQL's index: a typed error before any
    // statement (the transaction stays usable), at exactly the limit it works.
    let long = vec![7u8; postgres::MAX_KEY_BYTES + 1];
    let e = postgres::mark_key(&tx, GROUP, &long, ret)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProgressError::InvalidArgument { name: "key", .. }),
        "{e}"
    );
    let random: Vec<u8> = (0..postgres::MAX_KEY_BYTES)
        .map(|i| (i * 7919 % 251) as u8)
        .collect();
    assert!(postgres::mark_key(&tx, GROUP, &random, ret).await.unwrap());
    // A zero retention would never recognize a key: refused, as in SQLite.
    let e = postgres::mark_key(&tx, GROUP, b"k", Duration::ZERO)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ProgressError::InvalidArgument {
                name: "retention",
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_newer_damaged_or_missing_schema_gives_a_typed_error() {
    let Some(db) = pg::db("schema").await else {
        return;
    };
    let mut c = db.connect().await;
    // Not migrated.
    let e = postgres::load(&c, GROUP, TOPIC, 0).await.unwrap_err();
    assert!(matches!(e, ProgressError::NotMigrated { .. }), "{e}");
    let e = postgres::check_schema(&c).await.unwrap_err();
    assert!(matches!(e, ProgressError::NotMigrated { .. }), "{e}");
    // A user's table with the store's name: refused, nothing created.
    c.batch_execute("CREATE TABLE offset_guard_progress (id INT)")
        .await
        .unwrap();
    let e = postgres::migrate(&mut c).await.unwrap_err();
    assert!(
        matches!(&e, ProgressError::ForeignSchema { table, .. } if table == "offset_guard_progress"),
        "{e}"
    );
    assert_eq!(
        count(&c, "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'offset_guard_schema'").await,
        0
    );
    c.batch_execute("DROP TABLE offset_guard_progress; CREATE TABLE offset_guard_audit (id INT)")
        .await
        .unwrap();
    postgres::migrate(&mut c).await.unwrap(); // a user table sharing only the prefix
    postgres::migrate(&mut c).await.unwrap(); // idempotent
    // A column of another type.
    c.batch_execute("ALTER TABLE offset_guard_done ALTER COLUMN record_offset TYPE INTEGER")
        .await
        .unwrap();
    let e = postgres::check_schema(&c).await.unwrap_err();
    assert!(
        matches!(&e, ProgressError::ForeignSchema { table, .. } if table == "offset_guard_done"),
        "{e}"
    );
    c.batch_execute("ALTER TABLE offset_guard_done ALTER COLUMN record_offset TYPE BIGINT")
        .await
        .unwrap();
    // Damaged rows.
    c.batch_execute(
        "INSERT INTO offset_guard_progress VALUES ('g', 'orders', 0, 10);
         INSERT INTO offset_guard_done VALUES ('g', 'orders', 0, 4)",
    )
    .await
    .unwrap();
    let e = postgres::load(&c, GROUP, TOPIC, 0).await.unwrap_err();
    assert!(
        matches!(e, ProgressError::Damaged { partition: 0, .. }),
        "{e}"
    );
    // A newer version, also with a changed column: SchemaTooNew, unchanged.
    c.batch_execute(
        "UPDATE offset_guard_schema SET version = 2;
         ALTER TABLE offset_guard_keys ADD COLUMN origin TEXT",
    )
    .await
    .unwrap();
    for e in [
        postgres::migrate(&mut c).await.unwrap_err(),
        postgres::check_schema(&c).await.unwrap_err(),
    ] {
        assert!(
            matches!(
                e,
                ProgressError::SchemaTooNew {
                    found: 2,
                    supported: 1
                }
            ),
            "{e}"
        );
    }
    // No version row.
    c.batch_execute("DELETE FROM offset_guard_schema")
        .await
        .unwrap();
    let e = postgres::check_schema(&c).await.unwrap_err();
    assert!(matches!(e, ProgressError::ForeignSchema { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_refused_before_any_statement() {
    let Some(db) = pg::db("args").await else {
        return;
    };
    let mut c = db.open().await;
    let tx = c.transaction().await.unwrap();
    for (r, name) in [
        (postgres::mark_done(&tx, "", TOPIC, 0, 1).await, "group"),
        (postgres::mark_done(&tx, GROUP, "", 0, 1).await, "topic"),
        (
            postgres::mark_done(&tx, GROUP, TOPIC, -1, 1).await,
            "partition",
        ),
        (
            postgres::mark_done(&tx, GROUP, TOPIC, 0, -1).await,
            "offset",
        ),
        (
            postgres::mark_done(&tx, GROUP, TOPIC, 0, i64::MAX).await,
            "offset",
        ),
        (postgres::advance(&tx, GROUP, TOPIC, 0, -5).await, "floor"),
    ] {
        let e = r.unwrap_err();
        assert!(
            matches!(e, ProgressError::InvalidArgument { name: n, .. } if n == name),
            "{e}"
        );
    }
    tx.commit().await.unwrap();
    assert_eq!(
        count(&c, "SELECT COUNT(*) FROM offset_guard_progress").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_runs_inside_the_users_transaction_and_concurrently() {
    let Some(db) = pg::db("migrate").await else {
        return;
    };
    // Rolled back with the user's transaction.
    let mut c = db.connect().await;
    let mut tx = c.transaction().await.unwrap();
    postgres::migrate(&mut tx).await.unwrap();
    tx.rollback().await.unwrap();
    let e = postgres::check_schema(&c).await.unwrap_err();
    assert!(matches!(e, ProgressError::NotMigrated { .. }), "{e}");
    // Four processes' worth of connections migrating at once.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = db.connect().await;
            postgres::migrate(&mut c).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    postgres::check_schema(&c).await.unwrap();
    assert_eq!(
        count(&c, "SELECT COUNT(*) FROM offset_guard_schema").await,
        1
    );
}

async fn repeatable(
    c: &mut Client,
) -> Result<tokio_postgres::Transaction<'_>, tokio_postgres::Error> {
    c.build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .await
}

/// The backend of `client` is waiting for a lock (pg_stat_activity), within
/// 10 s.
async fn wait_for_lock_wait(observer: &Client, pid: i32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let row = observer
            .query_one(
                "SELECT COALESCE(wait_event_type, '') FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap();
        if row.get::<_, String>(0) == "Lock" {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "backend {pid} never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn backend_pid(c: &Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_mark_of_the_same_offset_waits_for_the_first_and_then_fails() {
    let Some(db) = pg::db("lock").await else {
        return;
    };
    let mut a = db.open().await;
    let observer = db.connect().await;
    start(&mut a, 0, 0).await;
    for (offset, first_commits) in [(0, true), (5, true), (6, false)] {
        let ta = a.transaction().await.unwrap();
        effect(&ta, 0, offset).await;
        postgres::mark_done(&ta, GROUP, TOPIC, 0, offset)
            .await
            .unwrap();
        // B marks the same record while A's transaction is open.
        let db2 = db.clone();
        let b = tokio::spawn(async move {
            let mut b = db2.connect().await;
            let pid = backend_pid(&b).await;
            let run = tokio::spawn(async move {
                let r = process(&mut b, 0, offset).await;
                (r, b)
            });
            (pid, run)
        });
        let (pid, run) = b.await.unwrap();
        wait_for_lock_wait(&observer, pid).await;
        assert!(!run.is_finished(), "B waits for A's lock");
        if first_commits {
            ta.commit().await.unwrap();
            let (r, _) = run.await.unwrap();
            let e = r.unwrap_err();
            assert!(e.is_already_done(), "offset {offset}: {e}");
        } else {
            ta.rollback().await.unwrap();
            let (r, _) = run.await.unwrap();
            r.unwrap(); // A rolled back: B's mark is the one
        }
    }
    assert_eq!(load(&a, 0).await, (Some(1), vec![5, 6]));
    assert_eq!(effects(&a).await, (3, 3, 3), "each record's effect once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transactions_on_one_partition_lose_no_update_and_count_each_record_once() {
    let Some(db) = pg::db("concurrent").await else {
        return;
    };
    let mut c = db.open().await;
    start(&mut c, 0, 0).await;
    // Six writers; every offset 0..300 is processed by two of them, in
    // different orders (out of order across writers).
    const N: i64 = 300;
    let mut tasks = Vec::new();
    for w in 0..6i64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = db.connect().await;
            let mut offsets: Vec<i64> = (0..N).filter(|o| o % 3 == w % 3).collect();
            if w >= 3 {
                offsets.reverse();
            }
            let (mut applied, mut refused) = (0, 0);
            for o in offsets {
                match process(&mut c, 0, o).await {
                    Ok(()) => applied += 1,
                    Err(e) if e.is_already_done() => refused += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            (applied, refused)
        }));
    }
    let (mut applied, mut refused) = (0, 0);
    for t in tasks {
        let (a, r) = t.await.unwrap();
        applied += a;
        refused += r;
    }
    assert_eq!((applied, refused), (N, N));
    assert_eq!(
        effects(&c).await,
        (N, N, N),
        "each record's effect exactly once"
    );
    assert_eq!(
        load(&c, 0).await,
        (Some(N), vec![]),
        "no lost watermark update"
    );
    assert_eq!(done_rows(&c).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_repeatable_read_a_concurrent_mark_fails_retryably_and_loses_nothing() {
    let Some(db) = pg::db("repeatable").await else {
        return;
    };
    let mut a = db.open().await;
    let mut b = db.connect().await;
    let observer = db.connect().await;
    let pid_b = backend_pid(&b).await;
    start(&mut a, 0, 0).await;
    // B's snapshot is taken before A marks 0 (which moves the watermark);
    // then B marks 1 and waits for A's lock.
    let (snapshot_tx, snapshot) = tokio::sync::oneshot::channel();
    let (go_tx, go) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        let tb = repeatable(&mut b).await.unwrap();
        tb.query_one("SELECT COUNT(*) FROM effects", &[])
            .await
            .unwrap();
        snapshot_tx.send(()).unwrap();
        go.await.unwrap();
        let first = postgres::mark_done(&tb, GROUP, TOPIC, 0, 1).await;
        tb.rollback().await.unwrap();
        // Run again: it goes through.
        let tb = repeatable(&mut b).await.unwrap();
        let again = postgres::mark_done(&tb, GROUP, TOPIC, 0, 1).await;
        tb.commit().await.unwrap();
        (first, again)
    });
    snapshot.await.unwrap();
    let ta = repeatable(&mut a).await.unwrap();
    postgres::mark_done(&ta, GROUP, TOPIC, 0, 0).await.unwrap();
    go_tx.send(()).unwrap();
    wait_for_lock_wait(&observer, pid_b).await;
    ta.commit().await.unwrap();
    let (first, again) = run.await.unwrap();
    let e = first.unwrap_err();
    assert!(postgres::is_retryable(&e), "{e}");
    again.unwrap();
    assert_eq!(load(&a, 0).await, (Some(2), vec![]));
}

/// The stored progress of a partition as the test compares it: watermark,
/// done offsets.
type Stored = (Option<i64>, Vec<i64>);

fn model_state(m: &PartitionProgress) -> Stored {
    (m.watermark(), m.done_above().collect())
}

/// What a call answered, as comparable as the model's answer.
fn outcome(r: &Result<(), ProgressError>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(ProgressError::AlreadyDone {
            partition,
            offset,
            watermark,
            ..
        }) => format!("already done {partition}@{offset} (watermark {watermark:?})"),
        Err(ProgressError::InvalidArgument { name, .. }) => format!("invalid {name}"),
        Err(e) => format!("other error: {e}"),
    }
}

/// A random batch of 1 to 5 elements (partition, floor, offset) through the
/// store's function (what `mark_tokens` sends) and through the models, one
/// element after the other (advance, then mark, stopping at the first
/// refusal): the function's answer `(failed element, status, watermark)`
/// and the models' expected one.
async fn batch(
    tx: &tokio_postgres::Transaction<'_>,
    rng: &mut fastrand::Rng,
    models: &mut [PartitionProgress; 3],
) -> (
    (Option<i32>, i32, Option<i64>),
    (Option<i32>, i32, Option<i64>),
) {
    let n = rng.usize(1..6);
    let (mut topics, mut partitions, mut floors, mut offsets) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut expected = (None, 0, None);
    for i in 0..n {
        let p = rng.usize(0..3);
        let m = &mut models[p];
        let base = m.watermark().unwrap_or(0);
        let floor = (rng.u8(0..3) > 0).then(|| (base + rng.i64(-2..4)).max(0));
        let offset = (floor.is_none() || rng.u8(0..4) > 0).then(|| (base + rng.i64(-2..8)).max(0));
        topics.push(TOPIC);
        partitions.push(p as i32);
        floors.push(floor);
        offsets.push(offset);
        if expected.1 != 0 {
            continue;
        }
        if let Some(f) = floor {
            m.advance(f);
        }
        if let Some(o) = offset
            && m.mark_done(o).is_err()
        {
            expected = (Some(i as i32 + 1), 1, m.watermark());
        }
    }
    let group = GROUP.to_string();
    let row = tx
        .query_one(
            "SELECT o_failed, o_status, o_value FROM offset_guard_mark_v1($1, $2, $3, $4, $5)",
            &[&group, &topics, &partitions, &floors, &offsets],
        )
        .await
        .unwrap();
    ((row.get(0), row.get(1), row.get(2)), expected)
}

/// Seeded random marks and advances over three partitions (in order, out of
/// order, duplicates, below the watermark, some before the partition's
/// first advance, some rolled back, several per transaction, batches of
/// floors and offsets as `mark_tokens` sends them) through PostgreSQL and
/// through the Rust model (`PartitionProgress`): the same
/// answer for every call and, after every transaction, the same watermark
/// and done set in the database as in the model, and exactly the model's
/// done rows stored (bounded by the records done out of order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_marks_and_advances_agree_with_the_rust_model_after_every_step() {
    let Some(db) = pg::db("model").await else {
        return;
    };
    let mut c = db.open().await;
    let mut rng = fastrand::Rng::with_seed(0x16f0);
    let mut models = [0, 1, 2].map(|_| PartitionProgress::new());
    let (mut calls, mut batches) = (0, [0, 0]);
    while calls < 400 {
        let tx = c.transaction().await.unwrap();
        let before = models.clone();
        let mut failed_batch = false;
        for _ in 0..rng.usize(1..4) {
            calls += 1;
            let p = rng.usize(0..3);
            let m = &mut models[p];
            // Offsets near the watermark, so that marks fold, collide and
            // fall below it.
            let base = m.watermark().unwrap_or(0);
            let o = base + rng.i64(-3..8);
            let (db_result, model_result) = match rng.u8(0..12) {
                10 | 11 => {
                    // A batch as `mark_tokens` sends it (floors and offsets,
                    // several partitions), straight to the store's function.
                    let (db, model) = batch(&tx, &mut rng, &mut models).await;
                    assert_eq!(db, model, "batch at call {calls}");
                    batches[usize::from(db.1 != 0)] += 1;
                    if db.1 != 0 {
                        // Partly applied (the elements before the refused
                        // one, and its advance): committed or rolled back
                        // below, the database must match the model either way.
                        failed_batch = true;
                        break;
                    }
                    continue;
                }
                0 => {
                    let r = postgres::advance(&tx, GROUP, TOPIC, p as i32, o.max(0)).await;
                    m.advance(o.max(0));
                    (r, Ok(()))
                }
                _ => {
                    let w = m.watermark();
                    let r = postgres::mark_done(&tx, GROUP, TOPIC, p as i32, o).await;
                    let expected = match m.mark_done(o) {
                        Ok(_) => Ok(()),
                        Err(MarkRefused::AlreadyDone) => Err(ProgressError::AlreadyDone {
                            topic: TOPIC.into(),
                            partition: p as i32,
                            offset: o,
                            watermark: w,
                        }),
                        Err(_) => Err(ProgressError::InvalidArgument {
                            name: "offset",
                            value: o.to_string(),
                        }),
                    };
                    (r, expected)
                }
            };
            assert_eq!(
                outcome(&db_result),
                outcome(&model_result),
                "call {calls} on partition {p} at {o}"
            );
        }
        if (failed_batch && rng.bool()) || rng.u8(0..8) == 0 {
            tx.rollback().await.unwrap();
            models = before;
        } else {
            tx.commit().await.unwrap();
        }
        let mut out_of_order = 0;
        for (p, m) in models.iter().enumerate() {
            assert_eq!(
                load(&c, p as i32).await,
                model_state(m),
                "after call {calls}"
            );
            out_of_order += m.done_above().len() as i64;
        }
        assert_eq!(done_rows(&c).await, out_of_order, "after call {calls}");
    }
    // The run reached every case: partitions started, records folded,
    // batches through and refused.
    assert!(
        batches[0] > 10 && batches[1] > 10,
        "batches ok, refused: {batches:?}"
    );
    assert!(
        models.iter().all(|m| m.watermark().unwrap_or(0) > 20),
        "{models:?}"
    );
}

/// An earlier schema object dropped: `check_schema` says which, `migrate`
/// creates it again and keeps the other tables' rows; a function of the
/// store's name with another body is foreign, for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_repairs_a_dropped_table_index_or_function_and_keeps_the_rows() {
    let Some(db) = pg::db("repair").await else {
        return;
    };
    let mut c = db.open().await;
    start(&mut c, 0, 5).await;
    process(&mut c, 0, 7).await.unwrap();
    for (drop, missing) in [
        ("DROP TABLE offset_guard_done", "no table offset_guard_done"),
        ("DROP TABLE offset_guard_keys", "no table offset_guard_keys"),
        (
            "DROP INDEX offset_guard_keys_age",
            "no index offset_guard_keys_age",
        ),
        (
            "DROP FUNCTION offset_guard_mark_v1",
            "no function offset_guard_mark_v1",
        ),
    ] {
        c.batch_execute(drop).await.unwrap();
        let e = postgres::check_schema(&c).await.unwrap_err();
        assert!(
            matches!(&e, ProgressError::NotMigrated { detail } if detail == missing),
            "{drop}: {e}"
        );
        postgres::migrate(&mut c).await.unwrap();
        postgres::check_schema(&c).await.unwrap();
        let watermark = postgres::load(&c, GROUP, TOPIC, 0)
            .await
            .unwrap()
            .watermark();
        assert_eq!(watermark, Some(5), "{drop}: the progress row is kept");
    }
    // Marks without the function: NotMigrated, not a raw database error.
    c.batch_execute("DROP FUNCTION offset_guard_mark_v1")
        .await
        .unwrap();
    let e = process(&mut c, 0, 5).await.unwrap_err();
    assert!(matches!(e, ProgressError::NotMigrated { .. }), "{e}");
    postgres::migrate(&mut c).await.unwrap();
    process(&mut c, 0, 5).await.unwrap();
    assert_eq!(
        load(&c, 0).await,
        (Some(6), vec![]),
        "7 was dropped with its table"
    );
    // A function of the store's name that is not the store's.
    c.batch_execute(
        "CREATE OR REPLACE FUNCTION offset_guard_mark_v1(p_group text, p_topics text[],
             p_partitions integer[], p_floors bigint[], p_offsets bigint[],
             OUT o_failed integer, OUT o_status integer, OUT o_value bigint)
         LANGUAGE plpgsql AS $$ BEGIN o_status := 0; END $$",
    )
    .await
    .unwrap();
    for e in [
        postgres::check_schema(&c).await.unwrap_err(),
        postgres::migrate(&mut c).await.unwrap_err(),
    ] {
        assert!(
            matches!(&e, ProgressError::ForeignSchema { table, .. } if table == "offset_guard_mark_v1"),
            "{e}"
        );
    }
}

/// A database migrated by a newer offset-guard (version 2): `load`, and
/// every writing call in the same statement that writes, refuse it and
/// change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_and_marks_refuse_a_newer_schema_version() {
    let Some(db) = pg::db("version").await else {
        return;
    };
    let mut c = db.open().await;
    start(&mut c, 0, 5).await;
    c.batch_execute("UPDATE offset_guard_schema SET version = 2")
        .await
        .unwrap();
    let newer = |e: &ProgressError| {
        matches!(
            e,
            ProgressError::SchemaTooNew {
                found: 2,
                supported: 1
            }
        )
    };
    let e = postgres::load(&c, GROUP, TOPIC, 0).await.unwrap_err();
    assert!(newer(&e), "{e}");
    let tx = c.transaction().await.unwrap();
    let e = postgres::mark_done(&tx, GROUP, TOPIC, 0, 5)
        .await
        .unwrap_err();
    assert!(newer(&e), "{e}");
    let e = postgres::advance(&tx, GROUP, TOPIC, 0, 9)
        .await
        .unwrap_err();
    assert!(newer(&e), "{e}");
    tx.commit().await.unwrap();
    c.batch_execute(
        "UPDATE offset_guard_schema SET version = 1; INSERT INTO offset_guard_schema VALUES (1)",
    )
    .await
    .unwrap();
    let tx = c.transaction().await.unwrap();
    let e = postgres::mark_done(&tx, GROUP, TOPIC, 0, 5)
        .await
        .unwrap_err();
    assert!(matches!(e, ProgressError::ForeignSchema { .. }), "{e}");
    tx.commit().await.unwrap();
    c.batch_execute("DELETE FROM offset_guard_schema; INSERT INTO offset_guard_schema VALUES (1)")
        .await
        .unwrap();
    assert_eq!(load(&c, 0).await, (Some(5), vec![]), "nothing was changed");
}

/// A NUL byte in the group or topic (PostgreSQL's text cannot hold it):
/// refused up front naming the argument; the transaction stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_byte_in_group_or_topic_is_refused_naming_the_argument() {
    let Some(db) = pg::db("nul").await else {
        return;
    };
    let mut c = db.open().await;
    let tx = c.transaction().await.unwrap();
    for (r, name) in [
        (postgres::mark_done(&tx, "g\0", TOPIC, 0, 1).await, "group"),
        (
            postgres::mark_done(&tx, GROUP, "or\0ders", 0, 1).await,
            "topic",
        ),
        (postgres::advance(&tx, GROUP, "\0", 0, 1).await, "topic"),
        (
            postgres::mark_key(&tx, "\0", b"k", Duration::from_secs(1))
                .await
                .map(|_| ()),
            "group",
        ),
        (
            postgres::load(&tx, "g\0", TOPIC, 0).await.map(|_| ()),
            "group",
        ),
    ] {
        let e = r.unwrap_err();
        assert!(
            matches!(&e, ProgressError::InvalidArgument { name: n, value } if *n == name && value.contains("NUL")),
            "{e}"
        );
    }
    postgres::advance(&tx, GROUP, TOPIC, 0, 3).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(load(&c, 0).await, (Some(3), vec![]));
}

/// A database that hangs (the progress table locked by another
/// transaction): the first load waits its timeout, the next ones fail at
/// once naming the unanswered load, and once the lock is released and the
/// loader answered, loads succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_loader_fails_the_next_loads_at_once_until_it_answers() {
    let Some(db) = pg::db("stalled").await else {
        return;
    };
    let mut c = db.open().await;
    start(&mut c, 3, 11).await;
    let timeout = Duration::from_millis(300);
    let loader = Arc::new(db.loader().timeout(timeout));
    let mut holder = db.connect().await;
    let lock = holder.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE offset_guard_progress IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let l = loader.clone();
    let (elapsed, errors) = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let errors: Vec<ProgressError> = (0..5)
            .map(|p| l.load(GROUP, TOPIC, p).unwrap_err())
            .collect();
        (started.elapsed(), errors)
    })
    .await
    .unwrap();
    assert!(
        matches!(&errors[0], ProgressError::Database { action: "load", .. }),
        "{}",
        errors[0]
    );
    for e in &errors[1..] {
        assert!(
            matches!(e, ProgressError::LoaderStalled { pending, timeout: t }
                if pending == "orders[0] of group g" && *t == timeout),
            "{e}"
        );
    }
    assert!(
        elapsed < timeout * 2,
        "5 loads took {elapsed:?}: only the first may wait ({timeout:?})"
    );
    lock.rollback().await.unwrap();
    // The loader answers the stalled load as soon as the lock is gone; until
    // then a load may still be refused at once (nothing else is accepted).
    let l = loader.clone();
    let progress = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match l.load(GROUP, TOPIC, 3) {
                Err(ProgressError::LoaderStalled { .. })
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5))
                }
                other => return other,
            }
        }
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(progress.watermark(), Some(11));
}

async fn stored(c: &Client, group: &str, topic: &str, p: i32) -> Stored {
    let pr = postgres::load(c, group, topic, p).await.unwrap();
    (pr.watermark(), pr.done_above().collect())
}

/// `mark_tokens` with tokens of a real consumer (own loop, MockCluster):
/// batches of 10 tokens of two partitions, each batch in reverse order, one
/// statement each; a batch holding a token marked before fails naming that
/// token and, rolled back, changes nothing; in the end every record is in
/// the watermarks and no done row is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mark_tokens_marks_a_batch_in_one_call_and_names_the_token_done_before() {
    let Some(db) = pg::db("tokens").await else {
        return;
    };
    let fx = common::Fixture::any();
    let (topic, group) = (common::unique("pg-tokens"), common::unique("g-pg-tokens"));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 30, 0);
    let mut c = db.open().await;
    let loader = db.loader();
    let (consumer, guard) = offset_guard::OffsetGuard::builder(fx.config(&group))
        .stored_progress(move |g, t, p| loader.load(g, t, p))
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
    // The empty batch: nothing, no statement.
    let tx = c.transaction().await.unwrap();
    postgres::mark_tokens(&tx, &group, &[]).await.unwrap();
    tx.commit().await.unwrap();
    // The first batch (offsets 0..5 of both partitions, reversed).
    tokens.sort_by_key(|t| (t.offset(), t.partition()));
    let mut rest = tokens.split_off(10);
    let mut first = tokens;
    first.reverse();
    let tx = c.transaction().await.unwrap();
    postgres::mark_tokens(&tx, &group, &first).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(stored(&c, &group, &topic, 0).await, (Some(5), vec![]));
    assert_eq!(stored(&c, &group, &topic, 1).await, (Some(5), vec![]));
    // A batch with new tokens around one marked before: refused naming it;
    // rolled back, nothing of the batch stays.
    let again = first.remove(4);
    let (p, o) = (again.partition(), again.offset());
    let mixed = vec![rest.pop().unwrap(), again, rest.pop().unwrap()];
    let tx = c.transaction().await.unwrap();
    let e = postgres::mark_tokens(&tx, &group, &mixed)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ProgressError::AlreadyDone { topic: t, partition, offset, watermark: Some(5) }
            if *t == topic && *partition == p && *offset == o),
        "{e}"
    );
    tx.rollback().await.unwrap();
    assert_eq!(stored(&c, &group, &topic, 0).await, (Some(5), vec![]));
    assert_eq!(stored(&c, &group, &topic, 1).await, (Some(5), vec![]));
    let mut mixed = mixed.into_iter();
    rest.push(mixed.next().unwrap());
    first.push(mixed.next().unwrap());
    rest.push(mixed.next().unwrap());
    // The others in batches of 10, each reversed: out of order within and
    // across the batches.
    rest.sort_by_key(|t| std::cmp::Reverse((t.offset(), t.partition())));
    for batch in rest.chunks(10) {
        let tx = c.transaction().await.unwrap();
        postgres::mark_tokens(&tx, &group, batch).await.unwrap();
        tx.commit().await.unwrap();
    }
    assert_eq!(stored(&c, &group, &topic, 0).await, (Some(30), vec![]));
    assert_eq!(stored(&c, &group, &topic, 1).await, (Some(30), vec![]));
    assert_eq!(count(&c, "SELECT COUNT(*) FROM offset_guard_done").await, 0);
    for token in first.into_iter().chain(rest) {
        token.ack();
    }
    drop(consumer);
}
