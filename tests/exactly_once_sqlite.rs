//! Exactly-once into SQLite with the own-loop front-end (feature `sqlite`):
//! each record's effect and its progress in one transaction of the test's
//! own connection; a consumer killed mid-stream (dropped without shutdown)
//! and a new one started. Effects are counted in the database. MockCluster by
//! default; runs on a real broker with `OFFSET_GUARD_BOOTSTRAP`.

mod common;
#[path = "common/sqlite.rs"]
mod sqlite_db;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::time::Duration;
use tokio::sync::Notify;

use common::{Fixture, exactly_once, unique};
use offset_guard::progress::{PartitionProgress, ProgressError, sqlite};
use offset_guard::{AckToken, GuardContext, GuardHandle, Tracked};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rusqlite::{Connection, params};
use sqlite_db::{count, open_effects as open};

/// Partitions with the long stream; one more, `SHORT`, has 10 records, all
/// done in run 1 and never acked.
const PARTITIONS: i32 = 2;
const SHORT: i32 = PARTITIONS;

/// The guard's loader: the stored progress, read on a connection of its own.
fn loader(
    path: PathBuf,
    group: String,
) -> impl Fn(&str, &str, i32) -> Result<PartitionProgress, ProgressError> + Send + Sync + 'static {
    let conn = Mutex::new(open(&path));
    move |g, topic, partition| {
        // The guard passes the consumer's group.id.
        assert_eq!(g, group);
        sqlite::load(&conn.lock().unwrap(), g, topic, partition)
    }
}

fn start(
    fx: &Fixture,
    group: &str,
    topic: &str,
    db: &Path,
) -> (Arc<StreamConsumer<GuardContext>>, GuardHandle) {
    let builder = exactly_once::builder(
        exactly_once::config(fx, group),
        loader(db.to_path_buf(), group.to_string()),
    );
    exactly_once::own_loop(builder, topic)
}

/// The record's effect and its mark in one transaction. `Err` = refused as
/// done already (rolled back).
fn apply(conn: &mut Connection, group: &str, token: &AckToken) -> Result<(), ProgressError> {
    let tx = conn.transaction().unwrap();
    tx.execute(
        "INSERT INTO effects (partition_id, record_offset) VALUES (?1, ?2)",
        params![token.partition(), token.offset()],
    )
    .unwrap();
    sqlite::mark_token(&tx, group, token)?;
    tx.commit().unwrap();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_stream_then_restarted_zero_lost_zero_duplicates() {
    let fx = Fixture::any();
    let (topic, group) = (unique("eodb"), unique("g-eodb"));
    fx.create_topic(&topic, PARTITIONS + 1);
    fx.produce(&topic, PARTITIONS + 1, 10, 0);
    fx.produce(&topic, PARTITIONS, 50, 10);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("effects.db");
    let mut conn = open(&db);

    // Run 1: every record tracked, processed in reverse order (out of
    // order); offsets n % 7 == 3 never processed (the crash came first),
    // n % 5 == 0 committed to the database but never acked (killed between
    // the commit and the ack); partition SHORT all done, none acked. Then
    // killed: dropped without shutdown.
    let (consumer, guard) = start(&fx, &group, &topic, &db);
    let tracked = exactly_once::track_new(&consumer, &guard, 60 * PARTITIONS as usize + 10).await;
    let mut done_in_run_1 = BTreeSet::new();
    for token in tracked.into_iter().rev() {
        let (p, o) = (token.partition(), token.offset());
        if o % 7 == 3 && p != SHORT {
            continue;
        }
        apply(&mut conn, &group, &token).unwrap();
        done_in_run_1.insert((p, o));
        if o % 5 != 0 && p != SHORT {
            token.ack();
        }
    }
    drop(guard);
    drop(consumer);
    for p in 0..PARTITIONS {
        let progress = sqlite::load(&conn, &group, &topic, p).unwrap();
        assert_eq!(progress.watermark(), Some(3), "0..=2 done, 3 not");
        assert_eq!(
            progress.done_above().len(),
            done_in_run_1
                .iter()
                .filter(|(q, o)| *q == p && *o > 3)
                .count(),
            "rows: exactly the records done above the watermark"
        );
    }
    let short = sqlite::load(&conn, &group, &topic, SHORT).unwrap();
    assert_eq!(short.watermark(), Some(10));
    for c in fx.committed(&group, &topic, PARTITIONS + 1) {
        assert!(
            c.is_none_or(|c| c <= 3),
            "Kafka's commit never passes the database: {c:?}"
        );
    }

    // Run 2: more records; a new consumer of the group.
    fx.produce(&topic, PARTITIONS, 20, 60);
    let (consumer, guard) = start(&fx, &group, &topic, &db);
    let (mut processed, mut refused) = (0, 0);
    let mut lowest = vec![i64::MAX; PARTITIONS as usize];
    // Fetching starts at the stored watermark 3: 77 records per partition,
    // none of SHORT (its watermark is its end).
    let (_, skipped) = exactly_once::resume(
        &consumer,
        &guard,
        &done_in_run_1,
        77 * PARTITIONS as usize,
        |p, o| {
            assert_ne!(p, SHORT, "SHORT starts at its watermark, the log end");
            lowest[p as usize] = lowest[p as usize].min(o);
        },
        async |token| {
            match apply(&mut conn, &group, &token) {
                Ok(()) => processed += 1,
                Err(e) => {
                    assert!(e.is_already_done(), "{e}");
                    refused += 1;
                }
            }
            token.ack();
        },
    )
    .await;
    assert_eq!(
        lowest,
        vec![3; PARTITIONS as usize],
        "fetching started at the stored watermark"
    );
    let done_above: Vec<_> = done_in_run_1
        .iter()
        .filter(|(p, o)| *p != SHORT && *o > 3)
        .collect();
    assert_eq!(skipped, done_above.len());
    assert_eq!(guard.stats().records_skipped_done, skipped as u64);
    assert_eq!(refused, 0);
    let report = guard.shutdown(&*consumer).await.unwrap();
    assert!(report.not_committed.is_empty(), "{report:?}");
    drop(consumer);

    // The database: every record's effect exactly once; progress folded.
    let total = 80 * i64::from(PARTITIONS) + 10;
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM effects"), total);
    let distinct =
        "SELECT COUNT(*) FROM (SELECT DISTINCT partition_id, record_offset FROM effects)";
    assert_eq!(count(&conn, distinct), total, "0 duplicates");
    for p in 0..=SHORT {
        let end = if p == SHORT { 10 } else { 80 };
        let sql = format!(
            "SELECT COUNT(*) FROM effects WHERE partition_id = {p} AND record_offset BETWEEN 0 AND {}",
            end - 1
        );
        assert_eq!(count(&conn, &sql), end, "0 lost in partition {p}");
        let progress = sqlite::load(&conn, &group, &topic, p).unwrap();
        assert_eq!(progress.watermark(), Some(end));
        assert_eq!(progress.done_above().len(), 0);
    }
    assert_eq!(processed as i64 + done_in_run_1.len() as i64, total);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM offset_guard_done"), 0);
    // Kafka's commit, the lagging mirror, caught up with the database, also
    // for SHORT, which had nothing to deliver (its watermark was committed
    // at the assign).
    assert_eq!(
        fx.committed(&group, &topic, PARTITIONS + 1),
        vec![Some(80), Some(80), Some(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_loader_hands_out_everything_and_the_store_refuses_what_is_done() {
    let fx = Fixture::any();
    let (topic, group) = (unique("eodb-fail"), unique("g-eodb-fail"));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 10, 0);
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open(&dir.path().join("effects.db"));
    // Records 0..5 of both partitions are done already.
    let tx = conn.transaction().unwrap();
    for p in 0..2 {
        sqlite::advance(&tx, &group, &topic, p, 0).unwrap();
        for o in 0..5 {
            tx.execute("INSERT INTO effects VALUES (?1, ?2)", params![p, o])
                .unwrap();
            sqlite::mark_done(&tx, &group, &topic, p, o).unwrap();
        }
    }
    tx.commit().unwrap();

    let (consumer, guard) = offset_guard::OffsetGuard::builder(exactly_once::config(&fx, &group))
        .retry(common::fast_retry(5))
        .stored_progress(|_group, _topic, partition| {
            if partition == 0 {
                Err(ProgressError::NotMigrated {
                    detail: "the database is away".into(),
                })
            } else {
                panic!("loader bug")
            }
        })
        .build_consumer::<StreamConsumer<GuardContext>>()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let (mut applied, mut refused) = (0, 0);
    for _ in 0..20 {
        let (_, _, m) = exactly_once::next(&consumer, &guard).await;
        let Tracked::Process(token) = guard.track_or_skip(&m) else {
            panic!("nothing is known to be done: no skip");
        };
        match apply(&mut conn, &group, &token) {
            Ok(()) => applied += 1,
            Err(e) => {
                assert!(e.is_already_done(), "{e}");
                assert!(token.offset() < 5);
                refused += 1;
            }
        }
        token.ack();
    }
    assert_eq!((applied, refused), (10, 10));
    let stats = guard.stats();
    assert_eq!(stats.progress_load_errors, 2);
    assert_eq!(stats.records_skipped_done, 0);
    guard.shutdown(&*consumer).await.unwrap();
    drop(consumer);
    let distinct =
        "SELECT COUNT(*) FROM (SELECT DISTINCT partition_id, record_offset FROM effects)";
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM effects"), 20);
    assert_eq!(count(&conn, distinct), 20, "each effect once");
    for p in 0..2 {
        let progress = sqlite::load(&conn, &group, &topic, p).unwrap();
        assert_eq!(progress.watermark(), Some(10));
    }
    assert_eq!(fx.committed(&group, &topic, 2), vec![Some(10); 2]);
}

/// One member's loop: every record's effect and mark in one transaction,
/// acked after the commit; refused marks rolled back and acked. Returns
/// (applied, refused, skipped) when `stop` says so.
async fn member(
    consumer: Arc<StreamConsumer<GuardContext>>,
    guard: Arc<GuardHandle>,
    db: PathBuf,
    stop: Arc<Notify>,
) -> (usize, usize, usize) {
    let mut conn = open(&db);
    let group = guard.group_id().to_string();
    let (mut applied, mut refused, mut skipped) = (0, 0, 0);
    loop {
        let m = tokio::select! {
            m = consumer.recv() => m.expect("recv"),
            _ = stop.notified() => return (applied, refused, skipped),
        };
        match guard.track_or_skip(&m) {
            Tracked::Done => skipped += 1,
            Tracked::Process(token) => {
                match apply(&mut conn, &group, &token) {
                    Ok(()) => applied += 1,
                    Err(e) => {
                        assert!(e.is_already_done(), "{e}");
                        refused += 1;
                    }
                }
                token.ack();
                // Some work: a member killed mid-stream leaves records.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_and_killed_mid_stream_apply_each_record_once() {
    let fx = Fixture::any();
    let (topic, group) = (unique("eodb-storm"), unique("g-eodb-storm"));
    fx.create_topic(&topic, 4);
    fx.produce(&topic, 4, 50, 0);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("effects.db");
    let conn = open(&db);
    let watermarks = |conn: &Connection| -> Vec<Option<i64>> {
        (0..4)
            .map(|p| sqlite::load(conn, &group, &topic, p).unwrap().watermark())
            .collect()
    };
    let rows = |conn: &Connection| count(conn, "SELECT COUNT(*) FROM effects");

    // A alone does the first 50 of each partition; B joins; 50 more each;
    // B is killed (dropped without shutdown) once it had 20 records; A
    // finishes.
    let (ca, ga) = start(&fx, &group, &topic, &db);
    let (ga, stop_a) = (Arc::new(ga), Arc::new(Notify::new()));
    let a = tokio::spawn(member(ca.clone(), ga.clone(), db.clone(), stop_a.clone()));
    common::wait_until(Duration::from_secs(30), "A did the first 200", || {
        rows(&conn) == 200
    });
    let (cb, gb) = start(&fx, &group, &topic, &db);
    let (gb, stop_b) = (Arc::new(gb), Arc::new(Notify::new()));
    let b = tokio::spawn(member(cb.clone(), gb.clone(), db.clone(), stop_b.clone()));
    common::wait_until(Duration::from_secs(30), "B has partitions", || {
        !gb.partitions().is_empty()
    });
    fx.produce(&topic, 4, 50, 50);
    common::wait_until(Duration::from_secs(30), "B had 20 records", || {
        gb.stats().delivered >= 20
    });
    stop_b.notify_one();
    let (b_applied, b_refused, b_skipped) = b.await.unwrap();
    drop(gb);
    drop(cb);
    common::wait_until(Duration::from_secs(60), "every record done", || {
        watermarks(&conn) == vec![Some(100); 4]
    });
    stop_a.notify_one();
    let (a_applied, a_refused, a_skipped) = a.await.unwrap();
    let ga = Arc::into_inner(ga).expect("the member task ended");
    ga.shutdown(&*ca).await.unwrap();
    drop(ca);

    println!(
        "A applied {a_applied} refused {a_refused} skipped {a_skipped}; B applied {b_applied} refused {b_refused} skipped {b_skipped}"
    );
    assert!(b_applied > 0, "B took part");
    assert!(b_applied < 100, "B was killed mid-stream");
    assert_eq!(a_applied + b_applied, 400);
    let distinct =
        "SELECT COUNT(*) FROM (SELECT DISTINCT partition_id, record_offset FROM effects)";
    assert_eq!(rows(&conn), 400, "0 duplicates");
    assert_eq!(count(&conn, distinct), 400, "0 lost");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM offset_guard_done"), 0);
}

/// The owned front-end (`build()`), stopped mid-stream and started again:
/// fetching starts at the stored watermark, and the records stored as done
/// above it are acked by the guard and never handed out again. Effects
/// counted in the database. (Run 1 is shut down, not dropped: a dropped
/// owned consumer stays a member until its session times out, and Tansu
/// then held the next member's join past the test's timeout; what the
/// restart reads is the database, the same either way. Crashes are the
/// own-loop tests above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_front_end_killed_and_restarted_hands_out_only_what_was_not_done() {
    let fx = Fixture::any();
    let (topic, group) = (unique("eodb-owned"), unique("g-eodb-owned"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 40, 0);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("effects.db");
    let mut conn = open(&db);
    let build = || {
        let builder = exactly_once::builder(
            exactly_once::config(&fx, &group),
            loader(db.clone(), group.clone()),
        );
        exactly_once::owned(builder, &topic)
    };

    // Run 1: the even offsets done (effect + mark, then acked), the odd ones
    // not (dropped unacked: abandoned). Then stopped.
    exactly_once::owned_run_1(build, async |token| {
        apply(&mut conn, &group, token).unwrap()
    })
    .await;
    let progress = sqlite::load(&conn, &group, &topic, 0).unwrap();
    assert_eq!(progress.watermark(), Some(1));
    assert_eq!(progress.done_above().len(), 19, "2, 4, .., 38");

    // Run 2: exactly the odd offsets are handed out.
    exactly_once::owned_run_2(&fx, &group, &topic, build, async |token| {
        apply(&mut conn, &group, token).unwrap()
    })
    .await;
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM effects"), 40);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM (SELECT DISTINCT record_offset FROM effects)"
        ),
        40,
        "no duplicate effect"
    );
    let progress = sqlite::load(&conn, &group, &topic, 0).unwrap();
    assert_eq!(progress.watermark(), Some(40));
    assert_eq!(progress.done_above().len(), 0);
}

/// The same record produced twice (same key, two offsets) with key
/// idempotency on: one effect, both offsets done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_record_produced_twice_with_key_idempotency_has_one_effect() {
    let fx = Fixture::any();
    let (topic, group) = (unique("eodb-key"), unique("g-eodb-key"));
    fx.create_topic(&topic, 1);
    // Ten orders, then orders 3 and 7 again: same key, two offsets.
    let keys = exactly_once::produce_orders_twice(&fx, &topic);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("effects.db");
    let mut conn = open(&db);
    let (consumer, guard) = start(&fx, &group, &topic, &db);
    let mut skipped_keys = Vec::new();
    for _ in 0..keys.len() {
        let (m, token) = exactly_once::next_new(&consumer, &guard).await;
        let o = m.offset();
        let key = m.key().unwrap().to_vec();
        let tx = conn.transaction().unwrap();
        if sqlite::mark_key(&tx, &group, &key, Duration::from_secs(3600)).unwrap() {
            tx.execute(
                "INSERT INTO effects (partition_id, record_offset) VALUES (0, ?1)",
                [o],
            )
            .unwrap();
        } else {
            skipped_keys.push((o, String::from_utf8(key).unwrap()));
        }
        sqlite::mark_token(&tx, &group, &token).unwrap();
        tx.commit().unwrap();
        token.ack();
    }
    guard.shutdown(&*consumer).await.unwrap();
    drop(consumer);
    assert_eq!(skipped_keys, exactly_once::second_copies());
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM effects"),
        10,
        "one effect per key"
    );
    let progress = sqlite::load(&conn, &group, &topic, 0).unwrap();
    assert_eq!(progress.watermark(), Some(12), "both copies are done");
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(12)]);
}
