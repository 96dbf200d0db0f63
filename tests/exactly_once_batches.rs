//! A break-it review of issue 16 (exactly-once into a database), as a new
//! user: `progress::sqlite::mark_tokens` against `mark_token` one by one with
//! tokens of a real consumer (MockCluster), two connections on one file, a
//! service loop written from the README killed twice and restarted, and a
//! slow stored-progress loader with `progress_load_timeout`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Fixture, exactly_once, unique};
use offset_guard::progress::{PartitionProgress, ProgressError, sqlite};
use offset_guard::{AckToken, GuardContext, GuardHandle, Tracked};
use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use rusqlite::{Connection, TransactionBehavior, params};

type Stored = (Option<i64>, Vec<i64>);

fn open(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_millis(200)).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    sqlite::migrate(&conn).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS effects (partition_id INTEGER, record_offset INTEGER)",
    )
    .unwrap();
    conn
}

fn stored(conn: &Connection, group: &str, topic: &str, p: i32) -> Stored {
    let pr = sqlite::load(conn, group, topic, p).unwrap();
    (pr.watermark(), pr.done_above().collect())
}

/// The consumer and its guard, dropped on another thread at the end.
struct Holder(Option<(Arc<StreamConsumer<GuardContext>>, GuardHandle)>);
impl Drop for Holder {
    fn drop(&mut self) {
        if let Some(v) = self.0.take() {
            common::drop_elsewhere(v, "consumer");
        }
    }
}

/// `n` tokens per partition of a fresh topic, by (partition, offset), from an
/// own-loop member whose loader stores nothing.
async fn tokens(
    fx: &Fixture,
    partitions: i32,
    n: usize,
) -> (String, String, BTreeMap<(i32, i64), AckToken>, Holder) {
    let (topic, group) = (unique("r16d"), unique("g-r16d"));
    fx.create_topic(&topic, partitions);
    fx.produce(&topic, partitions, n, 0);
    let (consumer, guard) = exactly_once::own_loop(
        exactly_once::builder(exactly_once::config(fx, &group), |_, _, _| {
            Ok(PartitionProgress::new())
        }),
        &topic,
    );
    let tokens = exactly_once::track_new(&consumer, &guard, n * partitions as usize).await;
    let by = tokens
        .into_iter()
        .map(|t| ((t.partition(), t.offset()), t))
        .collect();
    (topic, group, by, Holder(Some((consumer, guard))))
}

/// Item 1: the same batches through `mark_tokens` (database A) and through
/// `mark_token` one token after the other, stopping at the first error
/// (database B), with tokens of a real consumer: partitions interleaved, a
/// duplicate in one batch, a token below the watermark, a partly refused
/// batch committed anyway and one after it, `mark_token_with_key` in the
/// same transaction, floors that jump (records acked without a mark, as an
/// offset gap is). The same answer and the same stored rows after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mark_tokens_agrees_with_mark_token_one_by_one_on_real_tokens() {
    let fx = Fixture::any();
    let (topic, group, tk, _holder) = tokens(&fx, 3, 20).await;
    let t = |p: i32, o: i64| tk[&(p, o)].clone();
    let mut a = Connection::open_in_memory().unwrap();
    let mut b = Connection::open_in_memory().unwrap();
    sqlite::migrate(&a).unwrap();
    sqlite::migrate(&b).unwrap();
    let run = |a: &mut Connection,
               b: &mut Connection,
               keyed: Option<AckToken>,
               batch: Vec<AckToken>,
               commit: bool| {
        let r = step(a, b, &group, &keyed, &batch, commit);
        for p in 0..3 {
            assert_eq!(
                stored(a, &group, &topic, p),
                stored(b, &group, &topic, p),
                "partition {p}"
            );
        }
        r
    };
    // Interleaved, out of order, a duplicate (p1@0) late in the batch;
    // committed anyway (the user ignored the error).
    let e = run(
        &mut a,
        &mut b,
        None,
        vec![
            t(0, 0),
            t(1, 1),
            t(2, 0),
            t(1, 0),
            t(0, 2),
            t(0, 1),
            t(1, 0),
            t(2, 1),
        ],
        true,
    );
    assert!(e.is_some());
    // A batch after it; a token below the watermark (p2@0), rolled back.
    assert!(run(&mut a, &mut b, None, vec![t(0, 3), t(2, 0), t(0, 4)], false).is_some());
    assert_eq!(
        run(
            &mut a,
            &mut b,
            None,
            vec![t(2, 1), t(0, 3), t(0, 5), t(1, 2)],
            true
        ),
        None
    );
    assert_eq!(stored(&a, &group, &topic, 0), (Some(4), vec![5]));
    // mark_token_with_key in the same transaction, then its token again in the batch.
    assert!(run(&mut a, &mut b, Some(t(0, 4)), vec![t(0, 6), t(0, 4)], false).is_some());
    assert_eq!(
        run(&mut a, &mut b, Some(t(1, 3)), vec![t(1, 5), t(1, 4)], true),
        None
    );
    // Floors that jump: p2@0..9 acked (2..9 never marked: as gap offsets are).
    for o in 0..10 {
        t(2, o).ack();
    }
    assert_eq!(
        run(&mut a, &mut b, None, vec![t(2, 12), t(2, 10)], true),
        None
    );
    assert_eq!(stored(&a, &group, &topic, 2), (Some(11), vec![12]));
    assert_eq!(
        run(&mut a, &mut b, None, vec![t(2, 11), t(2, 13)], true),
        None
    );
    assert_eq!(stored(&a, &group, &topic, 2), (Some(14), vec![]));
}

/// The keyed token (first) and the batch through `mark_tokens` in `a`, and
/// through `mark_token` one by one (stopping at the first error) in `b`:
/// the same answer. Committed or rolled back.
fn step(
    a: &mut Connection,
    b: &mut Connection,
    g: &str,
    keyed: &Option<AckToken>,
    batch: &[AckToken],
    commit: bool,
) -> Option<String> {
    let (ta, tb) = (a.transaction().unwrap(), b.transaction().unwrap());
    let retention = Duration::from_secs(60);
    if let Some(k) = keyed {
        let ka = sqlite::mark_token_with_key(&ta, g, k, b"key", retention);
        let kb = sqlite::mark_token_with_key(&tb, g, k, b"key", retention);
        assert_eq!(format!("{ka:?}"), format!("{kb:?}"));
    }
    let batched = sqlite::mark_tokens(&ta, g, batch)
        .err()
        .map(|e| e.to_string());
    let mut one = None;
    for token in batch {
        if let Err(e) = sqlite::mark_token(&tb, g, token) {
            one = Some(e.to_string());
            break;
        }
    }
    assert_eq!(batched, one, "{batch:?}");
    if commit {
        ta.commit().unwrap();
        tb.commit().unwrap();
    }
    batched
}

/// Item 1, very large batch: 10,000 tokens of one partition in reverse
/// order in one `mark_tokens` call, and one by one: the same rows (all in
/// the watermark, no done row left), the batch not slower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_tokens_in_one_batch() {
    let fx = Fixture::any();
    let (topic, group, tk, _holder) = tokens(&fx, 1, 10_000).await;
    let mut batch: Vec<AckToken> = tk.into_values().collect();
    batch.reverse();
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = (
        open(&dir.path().join("a.db")),
        open(&dir.path().join("b.db")),
    );
    let started = Instant::now();
    let tx = a.transaction().unwrap();
    sqlite::mark_tokens(&tx, &group, &batch).unwrap();
    tx.commit().unwrap();
    let batched = started.elapsed();
    let started = Instant::now();
    let tx = b.transaction().unwrap();
    for token in &batch {
        sqlite::mark_token(&tx, &group, token).unwrap();
    }
    tx.commit().unwrap();
    let one_by_one = started.elapsed();
    eprintln!("10,000 tokens: mark_tokens {batched:?}, mark_token one by one {one_by_one:?}");
    assert_eq!(stored(&a, &group, &topic, 0), (Some(10_000), vec![]));
    assert_eq!(stored(&b, &group, &topic, 0), (Some(10_000), vec![]));
    assert!(batched < Duration::from_secs(5), "{batched:?}");
}

/// Item 1, two connections on one file (WAL), deferred transactions: B
/// reads its partitions' progress before A commits a batch of the same
/// partitions, then writes: a typed database error (SQLite busy), no lost
/// update; rolled back and retried, B's batch lands on A's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_same_partitions_busy_is_typed_and_nothing_is_lost() {
    let fx = Fixture::any();
    let (topic, group, tk, _holder) = tokens(&fx, 2, 10).await;
    let t = |p: i32, o: i64| tk[&(p, o)].clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let (mut a, mut b) = (open(&path), open(&path));
    let first = vec![t(0, 0), t(1, 0), t(0, 1), t(1, 2)];
    let second = vec![t(0, 2), t(1, 1), t(0, 3)];
    let tb = b.transaction().unwrap(); // deferred
    assert_eq!(stored(&tb, &group, &topic, 0), (None, vec![]));
    let ta = a
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    sqlite::mark_tokens(&ta, &group, &first).unwrap();
    ta.commit().unwrap();
    let e = sqlite::mark_tokens(&tb, &group, &second).unwrap_err();
    assert!(matches!(e, ProgressError::Database { .. }), "{e:?}");
    // SQLITE_BUSY_SNAPSHOT (517): read before A's commit, cannot write.
    assert!(sqlite::is_retryable(&e), "{e:?}");
    drop(tb);
    let tb = b
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    sqlite::mark_tokens(&tb, &group, &second).unwrap();
    tb.commit().unwrap();
    assert_eq!(stored(&a, &group, &topic, 0), (Some(4), vec![]));
    assert_eq!(stored(&a, &group, &topic, 1), (Some(3), vec![]));
}

/// The README's loop with batches: track_or_skip, one transaction per batch
/// (effects, then `mark_tokens`), commit, ack. On AlreadyDone: roll back,
/// ack that token, process the rest again. Returns when `kill_after` batches
/// are done (the last one committed, never acked: a crash between commit and
/// ack; the member then dropped without shutdown) or all records are in.
async fn service_run(
    svc: &Service<'_>,
    kill_after: Option<usize>,
    fail_loads: bool,
) -> (usize, usize) {
    let Service {
        fx,
        topic,
        group,
        db,
        partitions,
        total,
        owned,
    } = *svc;
    let loader = Mutex::new(open(db));
    let builder = exactly_once::builder(exactly_once::config(fx, group), move |g, t, p| {
        if fail_loads {
            return Err(ProgressError::LoaderStalled {
                pending: format!("{t}[{p}] of group {g}"),
                timeout: Duration::from_secs(1),
            });
        }
        sqlite::load(&loader.lock().unwrap(), g, t, p)
    });
    let mut member = if owned {
        Member::Owned(Box::new(exactly_once::owned(builder, topic)))
    } else {
        let (consumer, guard) = exactly_once::own_loop(builder, topic);
        Member::Own(consumer, guard)
    };
    let mut conn = open(db);
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let effects = |c: &Connection| -> i64 {
        c.query_row("SELECT COUNT(*) FROM effects", [], |r| r.get(0))
            .unwrap()
    };
    let (mut batches, mut skipped, mut refused) = (0, 0, 0);
    let never_past = |conn: &Connection| {
        let committed = fx.committed(group, topic, partitions);
        for (p, c) in committed.iter().enumerate() {
            let w = stored(conn, group, topic, p as i32).0;
            if let Some(c) = c {
                assert!(
                    w.is_some_and(|w| *c <= w),
                    "partition {p}: Kafka's commit {c} past the database's watermark {w:?}"
                );
            }
        }
    };
    // One token of each batch is held back to the next one: records
    // finish out of order across transactions.
    let mut held: Option<AckToken> = None;
    while effects(&conn) < total {
        let mut batch: Vec<AckToken> = held.take().into_iter().collect();
        // Up to 30 s for a first record (while others may finish the
        // stream: another member of the group), 1 s for the rest.
        let mut idle = 0;
        while batch.len() < 10 {
            match member.next(Duration::from_secs(1)).await {
                None if batch.is_empty() && idle < 30 && effects(&conn) < total => idle += 1,
                None => break,
                Some(None) => skipped += 1,
                Some(Some(token)) => batch.push(token),
            }
        }
        if batch.is_empty() && effects(&conn) >= total {
            break;
        }
        assert!(
            !batch.is_empty(),
            "no record within 30 s; {:?}",
            member.stats()
        );
        if batch.len() > 2 {
            held = Some(batch.remove(1));
        }
        loop {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .unwrap();
            for token in &batch {
                tx.execute(
                    "INSERT INTO effects (partition_id, record_offset) VALUES (?1, ?2)",
                    params![token.partition(), token.offset()],
                )
                .unwrap();
            }
            match sqlite::mark_tokens(&tx, group, &batch) {
                Ok(()) => {
                    tx.commit().unwrap();
                    break;
                }
                Err(ProgressError::AlreadyDone {
                    partition, offset, ..
                }) => {
                    drop(tx);
                    refused += 1;
                    let i = batch
                        .iter()
                        .position(|t| (t.partition(), t.offset()) == (partition, offset))
                        .unwrap();
                    batch.remove(i).ack();
                    if batch.is_empty() {
                        break;
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
        batches += 1;
        never_past(&conn);
        if kill_after == Some(batches) {
            // Committed, not acked (an in-flight task aborted); the member
            // dropped without shutdown.
            let task = tokio::spawn(async move {
                std::future::pending::<()>().await;
                drop((batch, held));
            });
            task.abort();
            assert!(task.await.unwrap_err().is_cancelled());
            skipped += member.skipped_by_poll_thread();
            eprintln!(
                "killed after {batches} batches: {skipped} skipped as done, {refused} refused as done; effects {}",
                effects(&conn)
            );
            common::drop_elsewhere(member, "killed member");
            never_past(&conn);
            return (skipped, refused);
        }
        for token in batch {
            token.ack();
        }
    }
    skipped += member.skipped_by_poll_thread();
    eprintln!(
        "finished after {batches} batches: {skipped} skipped as done, {refused} refused as done"
    );
    // A token held back whose record another member did meanwhile.
    drop(held);
    common::drop_elsewhere(member, "member");
    never_past(&conn);
    (skipped, refused)
}

/// What every run of the service shares.
#[derive(Clone, Copy)]
struct Service<'a> {
    fx: &'a Fixture,
    topic: &'a str,
    group: &'a str,
    db: &'a Path,
    partitions: i32,
    total: i64,
    owned: bool,
}

/// A member of either front-end, as the service loop sees it.
enum Member {
    Own(Arc<StreamConsumer<GuardContext>>, GuardHandle),
    Owned(Box<offset_guard::GuardedConsumer>),
}

impl Member {
    /// The next record: `None` after `wait` without one, `Some(None)` for
    /// one `track_or_skip` skipped as done, else its token.
    async fn next(&mut self, wait: Duration) -> Option<Option<AckToken>> {
        match self {
            Member::Own(consumer, guard) => {
                let m = tokio::time::timeout(wait, consumer.recv()).await.ok()?;
                match guard.track_or_skip(&m.unwrap()) {
                    Tracked::Done => Some(None),
                    Tracked::Process(token) => Some(Some(token)),
                }
            }
            Member::Owned(c) => {
                let r = tokio::time::timeout(wait, c.recv()).await.ok()?;
                Some(Some(r.unwrap().expect("a record").into_parts().1))
            }
        }
    }

    fn stats(&self) -> offset_guard::Stats {
        match self {
            Member::Own(_, guard) => guard.stats(),
            Member::Owned(c) => c.stats(),
        }
    }

    /// Records the owned front-end's poll thread skipped as done.
    fn skipped_by_poll_thread(&self) -> usize {
        match self {
            Member::Own(..) => 0,
            Member::Owned(c) => c.stats().records_skipped_done as usize,
        }
    }
}

/// Item 2: a service loop from the README alone (own loop, batches through
/// `mark_tokens`, a SQLite file), killed mid-stream twice and restarted:
/// every record's effect exactly once, Kafka's commit never past the
/// database's watermark, no done row left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_loop_with_batches_killed_twice_zero_lost_zero_duplicates() {
    killed_twice(false).await;
}

/// Item 2 with the owned front-end (`build()`): the same loop on
/// `recv()` and `record.into_parts()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_service_loop_with_batches_killed_twice_zero_lost_zero_duplicates() {
    killed_twice(true).await;
}

async fn killed_twice(owned: bool) {
    let fx = Fixture::any();
    let (topic, group) = (unique("r16d-svc"), unique("g-r16d-svc"));
    let (partitions, per) = (3, 40);
    fx.create_topic(&topic, partitions);
    fx.produce(&topic, partitions, per, 0);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("service.db");
    let total = i64::from(partitions) * per as i64;
    let svc = Service {
        fx: &fx,
        topic: &topic,
        group: &group,
        db: &db,
        partitions,
        total,
        owned,
    };
    service_run(&svc, Some(3), false).await;
    let (skipped, refused) = service_run(&svc, Some(4), true).await;
    assert!(
        refused > 0,
        "partitions not loaded: their done records refused"
    );
    let (skipped_3, _) = service_run(&svc, None, false).await;
    assert!(
        skipped + skipped_3 > 0,
        "done rows above a watermark skipped"
    );
    let conn = open(&db);
    let q = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(q("SELECT COUNT(*) FROM effects"), total);
    assert_eq!(
        q("SELECT COUNT(*) FROM (SELECT DISTINCT partition_id, record_offset FROM effects)"),
        total
    );
    for p in 0..partitions {
        assert_eq!(stored(&conn, &group, &topic, p), (Some(per as i64), vec![]));
    }
}

/// Item 3: a loader slower than `progress_load_timeout`: the load that
/// started finishes and is used; the partitions after it are not loaded
/// (counted), their records handed out in full, and the mark refuses the
/// ones done already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loader_past_progress_load_timeout() {
    let fx = Fixture::any();
    let (topic, group) = (unique("r16d-slow"), unique("g-r16d-slow"));
    fx.create_topic(&topic, 3);
    fx.produce(&topic, 3, 10, 0);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("slow.db");
    let mut conn = open(&db);
    let tx = conn.transaction().unwrap();
    for p in 0..3 {
        sqlite::advance(&tx, &group, &topic, p, 5).unwrap();
    }
    tx.commit().unwrap();
    let loader = Mutex::new(open(&db));
    let (consumer, guard) = exactly_once::own_loop(
        exactly_once::builder(exactly_once::config(&fx, &group), move |g, t, p| {
            std::thread::sleep(Duration::from_millis(700));
            sqlite::load(&loader.lock().unwrap(), g, t, p)
        })
        .progress_load_timeout(Duration::from_millis(200)),
        &topic,
    );
    let (mut skipped, mut refused, mut marked) = (0, 0, 0);
    while skipped + refused + marked < 25 {
        let (_, _, m) = exactly_once::next(&consumer, &guard).await;
        match guard.track_or_skip(&m) {
            Tracked::Done => skipped += 1,
            Tracked::Process(token) => {
                let tx = conn.transaction().unwrap();
                match sqlite::mark_token(&tx, &group, &token) {
                    Ok(()) => {
                        assert!(m.offset() >= 5);
                        tx.commit().unwrap();
                        marked += 1;
                    }
                    Err(e) => {
                        assert!(e.is_already_done(), "{e}");
                        assert!(m.offset() < 5);
                        refused += 1;
                    }
                }
                token.ack();
            }
        }
    }
    assert_eq!((skipped, refused, marked), (0, 10, 15));
    assert_eq!(guard.stats().progress_load_errors, 2, "{:?}", guard.stats());
    common::drop_elsewhere((consumer, guard), "member");
}

#[cfg(feature = "postgres")]
#[path = "common/pg.rs"]
mod pg;

/// Item 1, for comparison: the same real-token batches through
/// `postgres::mark_tokens` and `sqlite::mark_tokens` (equal to `mark_token`
/// one by one, above): the same answer and the same stored rows after each,
/// committed or rolled back; the first refused batch committed anyway (the
/// user ignored the error), the others rolled back.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_mark_tokens_agrees_with_sqlite_on_real_tokens() {
    use offset_guard::progress::postgres;
    let Some(db) = pg::db("r16d_compare").await else {
        return;
    };
    let fx = Fixture::any();
    let (topic, group, tk, _holder) = tokens(&fx, 3, 20).await;
    let t = |p: i32, o: i64| tk[&(p, o)].clone();
    let mut c = db.open().await;
    let mut s = Connection::open_in_memory().unwrap();
    sqlite::migrate(&s).unwrap();
    let retention = Duration::from_secs(60);
    let steps: Vec<(Option<AckToken>, Vec<AckToken>)> = vec![
        (
            None,
            vec![
                t(0, 0),
                t(1, 1),
                t(2, 0),
                t(1, 0),
                t(0, 2),
                t(0, 1),
                t(1, 0),
                t(2, 1),
            ],
        ),
        (
            None,
            vec![
                t(0, 0),
                t(1, 1),
                t(2, 0),
                t(1, 0),
                t(0, 2),
                t(0, 1),
                t(2, 1),
            ],
        ),
        (None, vec![t(0, 3), t(2, 0), t(0, 4)]),
        (None, vec![t(2, 2), t(0, 3), t(0, 5), t(1, 2)]),
        (Some(t(0, 4)), vec![t(0, 6), t(0, 4)]),
        (Some(t(1, 3)), vec![t(1, 5), t(1, 4)]),
    ];
    let compare = async |c: &tokio_postgres::Client, s: &Connection, what: &str| {
        for p in 0..3 {
            let pr = postgres::load(c, &group, &topic, p).await.unwrap();
            let pg_state = (pr.watermark(), pr.done_above().collect::<Vec<_>>());
            assert_eq!(pg_state, stored(s, &group, &topic, p), "{what}, p{p}");
        }
    };
    for (i, (keyed, batch)) in steps.into_iter().enumerate() {
        let tx = c.transaction().await.unwrap();
        let stx = s.transaction().unwrap();
        if let Some(k) = &keyed {
            let a = postgres::mark_token_with_key(&tx, &group, k, b"key", retention).await;
            let b = sqlite::mark_token_with_key(&stx, &group, k, b"key", retention);
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "step {i}");
        }
        let a = postgres::mark_tokens(&tx, &group, &batch).await.err();
        let b = sqlite::mark_tokens(&stx, &group, &batch).err();
        assert_eq!(
            a.as_ref().map(|e| e.to_string()),
            b.as_ref().map(|e| e.to_string()),
            "step {i}"
        );
        // Step 0: refused, committed anyway (the user ignored the error).
        if a.is_some() && i > 0 {
            tx.rollback().await.unwrap();
            stx.rollback().unwrap();
        } else {
            tx.commit().await.unwrap();
            stx.commit().unwrap();
        }
        compare(&c, &s, &format!("after step {i}")).await;
    }
    // Floors that jump: p2@0..9 acked (3..9 never marked, as gap offsets).
    for o in 0..10 {
        t(2, o).ack();
    }
    for batch in [vec![t(2, 12), t(2, 10)], vec![t(2, 11), t(2, 13)]] {
        let tx = c.transaction().await.unwrap();
        let stx = s.transaction().unwrap();
        postgres::mark_tokens(&tx, &group, &batch).await.unwrap();
        sqlite::mark_tokens(&stx, &group, &batch).unwrap();
        tx.commit().await.unwrap();
        stx.commit().unwrap();
        compare(&c, &s, "floors that jump").await;
    }
    assert_eq!(stored(&s, &group, &topic, 2), (Some(14), vec![]));
}

/// A gap the consumer never receives (a forward seek through the guard,
/// as an offset gap of compaction or transaction markers is): batches
/// through `mark_tokens` after it step the watermark over it, so no done
/// row piles up, and Kafka's commit reaches the end, never past the
/// database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_seek_gap_is_stepped_over_and_the_table_stays_small() {
    let fx = Fixture::any();
    let (topic, group) = (unique("r16d-gap"), unique("g-r16d-gap"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 30, 0);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gap.db");
    let mut conn = open(&db);
    let loader = Mutex::new(open(&db));
    let mut c = exactly_once::owned(
        exactly_once::builder(exactly_once::config(&fx, &group), move |g, t, p| {
            sqlite::load(&loader.lock().unwrap(), g, t, p)
        }),
        &topic,
    );
    let mut batch = |tokens: Vec<AckToken>| {
        let tx = conn.transaction().unwrap();
        sqlite::mark_tokens(&tx, &group, &tokens).unwrap();
        tx.commit().unwrap();
        for t in tokens {
            t.ack();
        }
        stored(&conn, &group, &topic, 0)
    };
    let first = common::recv_n(&mut c, 5, Duration::from_secs(30)).await;
    let tokens: Vec<AckToken> = first.into_iter().map(|r| r.into_parts().1).collect();
    assert_eq!(
        tokens.iter().map(AckToken::offset).collect::<Vec<_>>(),
        (0..5).collect::<Vec<_>>()
    );
    assert_eq!(batch(tokens), (Some(5), vec![]));
    c.seek(&topic, 0, rdkafka::Offset::Offset(10))
        .await
        .unwrap();
    let mut last = None;
    for _ in 0..4 {
        let records = common::recv_n(&mut c, 5, Duration::from_secs(30)).await;
        let tokens: Vec<AckToken> = records.into_iter().map(|r| r.into_parts().1).collect();
        assert!(tokens.iter().all(|t| t.offset() >= 10), "{tokens:?}");
        last = Some(batch(tokens));
        let (w, rows) = last.clone().unwrap();
        assert!(
            rows.len() <= 5,
            "done rows pile up behind the gap: watermark {w:?}, {rows:?}"
        );
    }
    assert_eq!(last, Some((Some(30), vec![])));
    c.commit_now().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(30)]);
    common::drop_elsewhere(c, "member");
}

/// Item 1, very large batch in PostgreSQL: 10,000 tokens of one partition in
/// reverse order in one `postgres::mark_tokens` call: all in the watermark,
/// no done row left, in seconds.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_tokens_in_one_postgres_batch() {
    use offset_guard::progress::postgres;
    let Some(db) = pg::db("r16d_10k").await else {
        return;
    };
    let fx = Fixture::any();
    let (topic, group, tk, _holder) = tokens(&fx, 1, 10_000).await;
    let mut batch: Vec<AckToken> = tk.into_values().collect();
    batch.reverse();
    let mut c = db.open().await;
    let started = Instant::now();
    let tx = c.transaction().await.unwrap();
    postgres::mark_tokens(&tx, &group, &batch).await.unwrap();
    tx.commit().await.unwrap();
    let took = started.elapsed();
    eprintln!("10,000 tokens: postgres::mark_tokens {took:?}");
    let pr = postgres::load(&c, &group, &topic, 0).await.unwrap();
    assert_eq!((pr.watermark(), pr.done_above().len()), (Some(10_000), 0));
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// Item 3: the `offset-guard` CLI with a `sqlite:` log URL on a directory
/// or on `/dev/null`, for every command that reads a log: exit code 3 and
/// "not a regular file" naming the path (`LogError::NotAFile`), no panic,
/// nothing created or changed.
#[test]
fn cli_sqlite_url_on_a_directory_or_device_is_not_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    for (path, kind) in [
        (d.as_str(), "is a directory"),
        ("/dev/null", "is a character device"),
    ] {
        let url = format!("sqlite:{path}");
        let commands: [Vec<&str>; 4] = [
            vec!["failures", &url],
            vec![
                "resolve",
                "--log",
                &url,
                "--group",
                "g",
                "--topic",
                "t",
                "--partition",
                "0",
                "--offset",
                "1",
                "--note",
                "x",
            ],
            vec![
                "offsets",
                "--bootstrap-servers",
                "127.0.0.1:1",
                "--group",
                "g",
                "--log",
                &url,
            ],
            vec![
                "recommit",
                "--bootstrap-servers",
                "127.0.0.1:1",
                "--group",
                "g",
                "--log",
                &url,
            ],
        ];
        for args in commands {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_offset-guard"))
                .args(&args)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
            assert!(err.contains(path) && err.contains(kind), "{args:?}: {err}");
            assert!(err.contains("not a regular file"), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{args:?}: {err}");
        }
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
}

/// Item 2 under rebalances: two members of the README's batch loop on one
/// SQLite file (WAL, immediate transactions, a busy timeout), the second
/// joining while the first is mid-stream, then the first killed mid-stream
/// and a third joining: every record's effect exactly once, Kafka's commit
/// never past the database's watermark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_with_batches_through_rebalances_zero_lost_zero_duplicates() {
    let fx = Fixture::any();
    let (topic, group) = (unique("r16d-reb"), unique("g-r16d-reb"));
    let (partitions, per) = (4, 60);
    fx.create_topic(&topic, partitions);
    fx.produce(&topic, partitions, per, 0);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rebalance.db");
    let total = i64::from(partitions) * per as i64;
    let svc = Service {
        fx: &fx,
        topic: &topic,
        group: &group,
        db: &db,
        partitions,
        total,
        owned: false,
    };
    let owned = Service { owned: true, ..svc };
    let first = service_run(&svc, Some(6), false);
    let second = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        service_run(&owned, None, false).await
    };
    let third = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        service_run(&svc, None, false).await
    };
    let ((_, r1), (_, r2), (_, r3)) = tokio::join!(first, second, third);
    eprintln!("refused as done: {r1} {r2} {r3}");
    let conn = open(&db);
    let q = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        q("SELECT COUNT(*) FROM (SELECT DISTINCT partition_id, record_offset FROM effects)"),
        total,
        "lost records"
    );
    assert_eq!(
        q("SELECT COUNT(*) FROM effects"),
        total,
        "duplicate effects"
    );
    for p in 0..partitions {
        assert_eq!(stored(&conn, &group, &topic, p), (Some(per as i64), vec![]));
    }
}

/// A group with stored progress in the database but no committed offset
/// in Kafka (offsets expired with `offsets.retention.minutes`, or the group
/// was deleted) and `auto.offset.reset=latest` (librdkafka's default): the
/// stored watermark is where fetching starts, so the records after it are
/// handed out, not skipped to the log end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_progress_without_a_kafka_commit_starts_at_the_watermark_not_at_latest() {
    let fx = Fixture::any();
    let (topic, group) = (unique("r16d-latest"), unique("g-r16d-latest"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 20, 0);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("latest.db");
    let mut conn = open(&db);
    let tx = conn.transaction().unwrap();
    sqlite::advance(&tx, &group, &topic, 0, 5).unwrap();
    tx.commit().unwrap();
    assert_eq!(fx.committed(&group, &topic, 1), vec![None]);
    let loader = Mutex::new(open(&db));
    let mut config = exactly_once::config(&fx, &group);
    config.set("auto.offset.reset", "latest");
    let (consumer, guard) = exactly_once::own_loop(
        exactly_once::builder(config, move |g, t, p| {
            sqlite::load(&loader.lock().unwrap(), g, t, p)
        }),
        &topic,
    );
    let (_, token) = tokio::time::timeout(
        Duration::from_secs(15),
        exactly_once::next_new(&consumer, &guard),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "records 5..19 never handed out (fetching started at the log end?); stats {:?}, committed {:?}",
            guard.stats(),
            fx.committed(&group, &topic, 1)
        )
    });
    assert_eq!(token.offset(), 5);
    common::drop_elsewhere((consumer, guard), "member");
}
