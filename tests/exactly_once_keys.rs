//! Idempotency by business key in the consumer path (issue 16, items 3 and
//! 6; feature `sqlite`): the same order produced twice at two offsets (in
//! one partition and across partitions), and once more after a restart, has
//! exactly one effect; a key older than the retention is processed again.
//! Both front-ends, with `progress::sqlite::mark_token_with_key`. Effects are
//! counted in the database. The broker comes from tests/common (MockCluster,
//! or a real one with `OFFSET_GUARD_BOOTSTRAP`).

mod common;
#[path = "common/sqlite.rs"]
mod sqlite_db;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{Fixture, exactly_once, unique};
use offset_guard::progress::{Keyed, ProgressError, sqlite};
use offset_guard::{AckToken, GuardContext, GuardHandle, GuardedConsumer, Tracked};
use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::{BaseRecord, Producer};
use rusqlite::{Connection, params};
use sqlite_db::count;

const PARTITIONS: i32 = 2;
const RETENTION: Duration = Duration::from_secs(3600);

fn open(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    sqlite::migrate(&conn).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS effects (order_id TEXT NOT NULL, partition_id INTEGER NOT NULL, record_offset INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS invoices (order_id TEXT NOT NULL, amount INTEGER NOT NULL);",
    )
    .unwrap();
    conn
}

/// Produces one record per `(order id, partition)`, keyed by the order id.
fn produce(fx: &Fixture, topic: &str, orders: &[(&str, i32)]) {
    let p = fx.producer();
    for (key, partition) in orders {
        p.send(
            BaseRecord::to(topic)
                .partition(*partition)
                .key(*key)
                .payload("{}"),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

/// A member of either front-end with stored progress.
enum Member {
    OwnLoop(Arc<StreamConsumer<GuardContext>>, GuardHandle),
    Owned(Box<GuardedConsumer>),
}

impl Member {
    fn start(fx: &Fixture, owned: bool, group: &str, topic: &str, db: &Path) -> Member {
        let conn = Mutex::new(open(db));
        let builder = exactly_once::builder(exactly_once::config(fx, group), move |g, t, p| {
            sqlite::load(&conn.lock().unwrap(), g, t, p)
        });
        if owned {
            Member::Owned(Box::new(exactly_once::owned(builder, topic)))
        } else {
            let (consumer, guard) = exactly_once::own_loop(builder, topic);
            Member::OwnLoop(consumer, guard)
        }
    }

    /// The next record to process with its key (`None`: stored as done, skipped).
    async fn next(&mut self) -> Option<(AckToken, String)> {
        let wait = Duration::from_secs(30);
        match self {
            Member::OwnLoop(consumer, guard) => {
                let m = tokio::time::timeout(wait, consumer.recv())
                    .await
                    .expect("a record within 30 s")
                    .unwrap();
                let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
                match guard.track_or_skip(&m) {
                    Tracked::Process(token) => Some((token, key)),
                    Tracked::Done => None,
                }
            }
            Member::Owned(c) => {
                let r = common::recv_n(c, 1, wait).await.pop().unwrap();
                let key = String::from_utf8(r.key().unwrap().to_vec()).unwrap();
                Some((r.into_parts().1, key))
            }
        }
    }

    async fn shutdown(self) {
        match self {
            Member::OwnLoop(consumer, guard) => {
                let report = guard.shutdown(&*consumer).await.unwrap();
                assert!(report.not_committed.is_empty(), "{report:?}");
                tokio::task::spawn_blocking(move || drop(consumer))
                    .await
                    .unwrap();
            }
            Member::Owned(c) => {
                let report = c.shutdown().await.unwrap();
                assert!(report.not_committed.is_empty(), "{report:?}");
            }
        }
    }
}

/// The documented pattern: the keyed mark first; on `Apply` the effect (one
/// effect row per processing, the invoice); commit; ack. Returns what the
/// mark said.
fn process(
    conn: &mut Connection,
    group: &str,
    token: AckToken,
    key: &str,
    now: SystemTime,
) -> Keyed {
    let tx = conn.transaction().unwrap();
    let keyed =
        sqlite::mark_token_with_key_at(&tx, group, &token, key.as_bytes(), RETENTION, now).unwrap();
    if keyed == Keyed::Apply {
        tx.execute(
            "INSERT INTO effects (order_id, partition_id, record_offset) VALUES (?1, ?2, ?3)",
            params![key, token.partition(), token.offset()],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO invoices (order_id, amount) VALUES (?1, 100)",
            params![key],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    token.ack();
    keyed
}

/// Receives and processes `n` records at `now`; returns the keys marked as
/// duplicates.
async fn run(
    member: &mut Member,
    conn: &mut Connection,
    group: &str,
    n: usize,
    now: SystemTime,
) -> Vec<String> {
    let mut duplicates = Vec::new();
    for _ in 0..n {
        let (token, key) = member.next().await.expect("nothing is stored as done");
        if process(conn, group, token, &key, now) == Keyed::DuplicateKey {
            duplicates.push(key);
        }
    }
    duplicates.sort();
    duplicates
}

async fn same_order_twice(owned: bool) {
    let fx = Fixture::any();
    let (topic, group) = (unique("keys"), unique("g-keys"));
    fx.create_topic(&topic, PARTITIONS);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("effects.db");
    let mut conn = open(&db);
    let t0 = SystemTime::now();

    // Run 1: orders 0..10, order-3 again in the same partition (another
    // offset), order-4 again in the other partition (a producer retry).
    let ids: Vec<String> = (0..10).map(|i| format!("order-{i}")).collect();
    let mut orders: Vec<(&str, i32)> = ids
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i as i32 % PARTITIONS))
        .collect();
    orders.extend([("order-3", 1), ("order-4", 1)]);
    produce(&fx, &topic, &orders);
    let mut member = Member::start(&fx, owned, &group, &topic, &db);
    let dups = run(&mut member, &mut conn, &group, orders.len(), t0).await;
    assert_eq!(dups, ["order-3", "order-4"]);
    member.shutdown().await;

    // Run 2, restarted half an hour later (within the retention): order-5
    // again is a duplicate, order-10 is new; then, two hours after run 1
    // (past the retention), order-1 again is processed again.
    produce(&fx, &topic, &[("order-5", 0), ("order-10", 0)]);
    let mut member = Member::start(&fx, owned, &group, &topic, &db);
    let later = t0 + Duration::from_secs(1800);
    let dups = run(&mut member, &mut conn, &group, 2, later).await;
    assert_eq!(dups, ["order-5"]);
    produce(&fx, &topic, &[("order-1", 1)]);
    let past = t0 + 2 * RETENTION;
    let dups = run(&mut member, &mut conn, &group, 1, past).await;
    assert!(
        dups.is_empty(),
        "a key older than the retention counts as new"
    );
    member.shutdown().await;

    // The database: one effect and one invoice per order, two for order-1
    // (its key had expired); every record's offset done.
    let per_order = |table: &str| -> Vec<(String, i64)> {
        let sql =
            format!("SELECT order_id, COUNT(*) FROM {table} GROUP BY order_id ORDER BY order_id");
        let mut stmt = conn.prepare(&sql).unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let mut want: Vec<(String, i64)> = (0..=10)
        .map(|i| (format!("order-{i}"), if i == 1 { 2 } else { 1 }))
        .collect();
    want.sort();
    assert_eq!(per_order("effects"), want);
    assert_eq!(per_order("invoices"), want);
    // Partition 0: orders 0, 2, 4, 6, 8, then 5 and 10; partition 1:
    // orders 1, 3, 5, 7, 9, 3, 4, then 1.
    let ends = [7, 8];
    for (p, end) in ends.iter().enumerate() {
        let progress = sqlite::load(&conn, &group, &topic, p as i32).unwrap();
        assert_eq!(progress.watermark(), Some(*end), "partition {p}");
    }
    assert_eq!(
        fx.committed(&group, &topic, PARTITIONS),
        ends.iter().map(|e| Some(*e)).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_loop_same_order_twice_has_one_effect_and_an_expired_key_counts_as_new() {
    same_order_twice(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_same_order_twice_has_one_effect_and_an_expired_key_counts_as_new() {
    same_order_twice(true).await;
}

/// A zero retention would never recognize a key: a typed error, nothing
/// written.
#[test]
fn a_zero_retention_is_a_typed_error() {
    let mut conn = Connection::open_in_memory().unwrap();
    sqlite::migrate(&conn).unwrap();
    let tx = conn.transaction().unwrap();
    let err = sqlite::mark_key(&tx, "g", b"order-1", Duration::ZERO).unwrap_err();
    assert!(
        matches!(
            err,
            ProgressError::InvalidArgument {
                name: "retention",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("retention"), "{err}");
    assert_eq!(count(&tx, "SELECT COUNT(*) FROM offset_guard_keys"), 0);
}
