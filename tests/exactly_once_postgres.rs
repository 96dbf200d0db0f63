//! Exactly-once into PostgreSQL (feature `postgres`): each record's effect
//! (one `effects` row per processing, plus the partition's `totals` business
//! row) and its progress in one transaction of the test's own connection;
//! the guard's loader is `progress::postgres::Loader`. The broker is
//! MockCluster by default, a real one with `OFFSET_GUARD_BOOTSTRAP`
//! (tests/common); PostgreSQL is the server of `OFFSET_GUARD_POSTGRES`
//! (without it each test prints "OFFSET_GUARD_POSTGRES not set: skipped").

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{Fixture, exactly_once, unique};
use offset_guard::progress::{Keyed, ProgressError, postgres};
use offset_guard::{AckToken, GuardContext, GuardHandle};
use pg::{Db, effect, effects};
use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use tokio::sync::{Mutex, Notify, mpsc};
use tokio_postgres::Client;

/// An own-loop consumer of `topic` with the PostgreSQL loader.
fn start(
    fx: &Fixture,
    group: &str,
    topic: &str,
    db: &Db,
) -> (Arc<StreamConsumer<GuardContext>>, GuardHandle) {
    let loader = db.loader();
    let expected = group.to_string();
    let builder = exactly_once::builder(
        exactly_once::config(fx, group),
        move |g, topic, partition| {
            assert_eq!(g, expected, "the guard passes the consumer's group.id");
            loader.load(g, topic, partition)
        },
    );
    exactly_once::own_loop(builder, topic)
}

/// The record's effect and its mark in one transaction, the mark last (the
/// partition's row lock is held from the mark to the commit). `Err`: refused
/// as done already (rolled back).
async fn apply(client: &mut Client, group: &str, token: &AckToken) -> Result<(), ProgressError> {
    let tx = client.transaction().await.unwrap();
    effect(&tx, token.partition(), token.offset()).await;
    postgres::mark_token(&tx, group, token).await?;
    tx.commit().await.unwrap();
    Ok(())
}

async fn progress(client: &Client, group: &str, topic: &str, p: i32) -> (Option<i64>, usize) {
    let pr = postgres::load(client, group, topic, p).await.unwrap();
    (pr.watermark(), pr.done_above().len())
}

/// The records with a committed effect.
async fn done_records(client: &Client) -> BTreeSet<(i32, i64)> {
    client
        .query("SELECT partition_id, record_offset FROM effects", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_stream_then_restarted_zero_lost_zero_duplicate_effects() {
    let Some(db) = pg::db("killed").await else {
        return;
    };
    let fx = Fixture::any();
    let (topic, group) = (unique("eopg"), unique("g-eopg"));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 60, 0);
    let mut c = db.open().await;

    // Run 1: every record tracked, processed in reverse order (out of
    // order); offsets n % 7 == 3 never processed (the crash came first),
    // n % 5 == 0 committed to the database but never acked (killed between
    // the commit and the ack). Then killed: dropped without shutdown.
    let (consumer, guard) = start(&fx, &group, &topic, &db);
    let tracked = exactly_once::track_new(&consumer, &guard, 120).await;
    let mut done_in_run_1 = BTreeSet::new();
    for token in tracked.into_iter().rev() {
        let (p, o) = (token.partition(), token.offset());
        if o % 7 == 3 {
            continue;
        }
        apply(&mut c, &group, &token).await.unwrap();
        done_in_run_1.insert((p, o));
        if o % 5 != 0 {
            token.ack();
        }
    }
    drop(guard);
    drop(consumer);
    for p in 0..2 {
        let above = done_in_run_1
            .iter()
            .filter(|(q, o)| *q == p && *o > 3)
            .count();
        assert_eq!(progress(&c, &group, &topic, p).await, (Some(3), above));
    }
    for committed in fx.committed(&group, &topic, 2) {
        assert!(
            committed.is_none_or(|c| c <= 3),
            "Kafka's commit never passes the database: {committed:?}"
        );
    }

    // Run 2: 20 more records each; a new consumer of the group. Fetching
    // starts at the stored watermark 3: 77 records per partition.
    fx.produce(&topic, 2, 20, 60);
    let (consumer, guard) = start(&fx, &group, &topic, &db);
    let mut lowest = [i64::MAX; 2];
    let (handed_out, skipped) = exactly_once::resume(
        &consumer,
        &guard,
        &done_in_run_1,
        154,
        |p, o| lowest[p as usize] = lowest[p as usize].min(o),
        async |token| {
            apply(&mut c, &group, &token).await.unwrap();
            token.ack();
        },
    )
    .await;
    let processed = handed_out.len();
    assert_eq!(lowest, [3, 3], "fetching started at the stored watermark");
    assert_eq!(
        skipped,
        done_in_run_1.iter().filter(|(_, o)| *o > 3).count()
    );
    assert_eq!(guard.stats().records_skipped_done, skipped as u64);
    let report = guard.shutdown(&*consumer).await.unwrap();
    assert!(report.not_committed.is_empty(), "{report:?}");
    drop(consumer);

    // The database: every record's effect exactly once; progress folded.
    assert_eq!(
        effects(&c).await,
        (160, 160, 160),
        "0 lost, 0 duplicate effects"
    );
    assert_eq!(processed + done_in_run_1.len(), 160);
    for p in 0..2 {
        assert_eq!(progress(&c, &group, &topic, p).await, (Some(80), 0));
    }
    assert_eq!(fx.committed(&group, &topic, 2), vec![Some(80); 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_record_produced_twice_with_key_idempotency_has_one_effect() {
    let Some(db) = pg::db("keys").await else {
        return;
    };
    let fx = Fixture::any();
    let (topic, group) = (unique("eopg-key"), unique("g-eopg-key"));
    fx.create_topic(&topic, 1);
    // Ten orders, then orders 3 and 7 produced again (a producer retry at
    // the application level): same key, two offsets.
    let keys = exactly_once::produce_orders_twice(&fx, &topic);

    let mut c = db.open().await;
    let (consumer, guard) = start(&fx, &group, &topic, &db);
    let mut skipped_keys = Vec::new();
    for _ in 0..keys.len() {
        let (m, token) = exactly_once::next_new(&consumer, &guard).await;
        let o = m.offset();
        let key = m.key().unwrap().to_vec();
        let tx = c.transaction().await.unwrap();
        // First in the transaction: the record and its key.
        match postgres::mark_token_with_key(&tx, &group, &token, &key, Duration::from_secs(3600))
            .await
            .unwrap()
        {
            Keyed::Apply => effect(&tx, 0, o).await,
            Keyed::DuplicateKey => skipped_keys.push((o, String::from_utf8(key).unwrap())),
        }
        tx.commit().await.unwrap();
        token.ack();
    }
    guard.shutdown(&*consumer).await.unwrap();
    drop(consumer);
    assert_eq!(skipped_keys, exactly_once::second_copies());
    assert_eq!(effects(&c).await, (10, 10, 10), "one effect per key");
    assert_eq!(
        progress(&c, &group, &topic, 0).await,
        (Some(12), 0),
        "both copies are done"
    );
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(12)]);
}

/// A worker: takes tokens, applies each (effect, mark, commit), acks. The
/// record `slow` waits after writing its `effects` row, its transaction
/// open, until the task is aborted.
async fn worker(
    db: Db,
    group: String,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<AckToken>>>,
    slow: (i32, i64),
    slow_started: Arc<Notify>,
) {
    let mut c = db.connect().await;
    loop {
        let Some(token) = queue.lock().await.recv().await else {
            return;
        };
        let tx = c.transaction().await.unwrap();
        if (token.partition(), token.offset()) == slow {
            // Part of its effect written (not the business row: its row
            // lock would hold up the partition's other records), then slow.
            tx.execute(
                "INSERT INTO effects (partition_id, record_offset) VALUES ($1, $2)",
                &[&slow.0, &slow.1],
            )
            .await
            .unwrap();
            slow_started.notify_one();
            std::future::pending::<()>().await;
        }
        effect(&tx, token.partition(), token.offset()).await;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..4))).await;
        postgres::mark_token(&tx, &group, &token).await.unwrap();
        tx.commit().await.unwrap();
        token.ack();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_with_one_slow_record_then_a_crash_skips_nothing_that_was_not_done() {
    let Some(db) = pg::db("slow").await else {
        return;
    };
    let fx = Fixture::any();
    let (topic, group) = (unique("eopg-slow"), unique("g-eopg-slow"));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 30, 0);
    let c = db.open().await;
    const SLOW: (i32, i64) = (0, 7);

    // Run 1: four concurrent workers; 0@7 is slow and still running when
    // the process crashes (workers aborted: the open transaction is rolled
    // back; consumer dropped without shutdown).
    let (consumer, guard) = start(&fx, &group, &topic, &db);
    let (feed, queue) = mpsc::unbounded_channel();
    let queue = Arc::new(Mutex::new(queue));
    let slow_started = Arc::new(Notify::new());
    let workers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(worker(
                db.clone(),
                group.clone(),
                queue.clone(),
                SLOW,
                slow_started.clone(),
            ))
        })
        .collect();
    for _ in 0..60 {
        let (_, token) = exactly_once::next_new(&consumer, &guard).await;
        feed.send(token).unwrap();
    }
    slow_started.notified().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while done_records(&c).await.len() < 59 {
        assert!(tokio::time::Instant::now() < deadline, "59 records done");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in &workers {
        w.abort();
    }
    for w in workers {
        assert!(w.await.unwrap_err().is_cancelled());
    }
    drop(guard);
    drop(consumer);
    let done_in_run_1 = done_records(&c).await;
    assert_eq!(done_in_run_1.len(), 59);
    assert!(
        !done_in_run_1.contains(&SLOW),
        "the slow record's effect was rolled back"
    );
    assert_eq!(
        progress(&c, &group, &topic, 0).await,
        (Some(7), 22),
        "8..29 done above 7"
    );
    assert_eq!(progress(&c, &group, &topic, 1).await, (Some(30), 0));
    let committed = fx.committed(&group, &topic, 2);
    assert!(
        committed[0].is_none_or(|c| c <= 7),
        "Kafka's commit never passes 7: {committed:?}"
    );

    // Run 2: only the slow record is handed out; the 22 done above it are
    // skipped, each of them done in run 1.
    let (consumer, guard) = start(&fx, &group, &topic, &db);
    let mut c2 = db.connect().await;
    let (handed_out, _) = exactly_once::resume(
        &consumer,
        &guard,
        &done_in_run_1,
        23,
        |p, _| assert_eq!(p, 0, "partition 1 starts at its watermark, the log end"),
        async |token| {
            apply(&mut c2, &group, &token).await.unwrap();
            token.ack();
        },
    )
    .await;
    assert_eq!(handed_out, vec![SLOW]);
    guard.shutdown(&*consumer).await.unwrap();
    drop(consumer);
    assert_eq!(
        effects(&c).await,
        (60, 60, 60),
        "every record's effect once"
    );
    assert_eq!(progress(&c, &group, &topic, 0).await, (Some(30), 0));
    assert_eq!(fx.committed(&group, &topic, 2), vec![Some(30); 2]);
}

/// The owned front-end (`build()`): the loader runs on its poll thread.
/// Stopped mid-stream and started again: the records stored as done are
/// never handed out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_front_end_restarted_hands_out_only_what_was_not_done() {
    let Some(db) = pg::db("owned").await else {
        return;
    };
    let fx = Fixture::any();
    let (topic, group) = (unique("eopg-owned"), unique("g-eopg-owned"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 40, 0);
    let mut c = db.open().await;
    let build = || {
        let loader = db.loader();
        let builder = exactly_once::builder(exactly_once::config(&fx, &group), move |g, t, p| {
            loader.load(g, t, p)
        });
        exactly_once::owned(builder, &topic)
    };

    // Run 1: the even offsets done, the odd ones abandoned; stopped.
    exactly_once::owned_run_1(build, async |token| {
        apply(&mut c, &group, token).await.unwrap()
    })
    .await;
    assert_eq!(progress(&c, &group, &topic, 0).await, (Some(1), 19));

    // Run 2: exactly the odd offsets are handed out.
    exactly_once::owned_run_2(&fx, &group, &topic, build, async |token| {
        apply(&mut c, &group, token).await.unwrap()
    })
    .await;
    assert_eq!(effects(&c).await, (40, 40, 40), "no effect lost or doubled");
    assert_eq!(progress(&c, &group, &topic, 0).await, (Some(40), 0));
}
