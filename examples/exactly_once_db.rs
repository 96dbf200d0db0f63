//! Exactly-once into SQLite with the own-loop front-end, on an embedded
//! MockCluster: each order's effect and its progress in one transaction,
//! a consumer killed mid-stream, a new one that skips what is done.
//!
//! `cargo run --example exactly_once_db --features sqlite`
//!
//! Run 1 processes records out of order and is killed (dropped without
//! shutdown) with some records committed to the database but not acked, so
//! Kafka's committed offset is behind the database. Run 2 starts at the
//! stored watermark and skips the records the database has as done. One order
//! is produced twice (same key, another offset): the key check skips it.
//! Exits non-zero unless every order's effect is in the database exactly once.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use offset_guard::progress::{Keyed, sqlite};
use offset_guard::{AckToken, GuardContext, GuardHandle, OffsetGuard, Tracked};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message};
use rusqlite::{Connection, params};

const GROUP: &str = "billing";
const KEY_RETENTION: Duration = Duration::from_secs(7 * 86_400);

type Guarded = std::sync::Arc<StreamConsumer<GuardContext>>;

fn open(path: &Path) -> Result<Connection, Box<dyn std::error::Error>> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    sqlite::migrate(&conn)?;
    conn.execute_batch("CREATE TABLE IF NOT EXISTS invoices (order_id TEXT NOT NULL)")?;
    Ok(conn)
}

fn start(bootstrap: &str, db: &Path) -> Result<(Guarded, GuardHandle), Box<dyn std::error::Error>> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", GROUP)
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000"); // MockCluster: a quicker rejoin
    // The guard reads stored progress at assign on a connection of its own.
    let loader_conn = Mutex::new(open(db)?);
    let (consumer, guard) = OffsetGuard::builder(config)
        .stored_progress(move |group, topic, partition| {
            let conn = loader_conn.lock().unwrap_or_else(|e| e.into_inner());
            sqlite::load(&conn, group, topic, partition)
        })
        .build_consumer::<StreamConsumer<GuardContext>>()?;
    consumer.subscribe(&["orders"])?;
    Ok((consumer, guard))
}

/// One order: the invoice and the progress in one transaction; the order id
/// (the message key) seen before within the retention: no second invoice.
fn process(
    conn: &mut Connection,
    token: &AckToken,
    key: &[u8],
) -> Result<(), Box<dyn std::error::Error>> {
    let tx = conn.transaction()?;
    match sqlite::mark_token_with_key(&tx, GROUP, token, key, KEY_RETENTION) {
        Ok(Keyed::Apply) => {
            tx.execute("INSERT INTO invoices (order_id) VALUES (?1)", params![key])?;
            Ok(tx.commit()?)
        }
        Ok(Keyed::DuplicateKey) => Ok(tx.commit()?), // the offset is done, nothing applied
        Err(e) if e.is_already_done() => Ok(()),     // rolled back on drop: done elsewhere
        Err(e) => Err(e.into()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = MockCluster::new(1)?;
    cluster.create_topic("orders", 2, 1)?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()?;
    // 200 orders, and order 7 once more (a producer retry, say).
    for i in (0..200).chain([7]) {
        let key = format!("order-{i}");
        let rec = BaseRecord::to("orders")
            .partition(i % 2)
            .key(&key)
            .payload("{}");
        producer.send(rec).map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(5))?;
    let db = std::env::temp_dir().join(format!("offset-guard-eodb-{}.db", std::process::id()));
    let mut conn = open(&db)?;

    // Run 1: 120 records, processed in reverse order; every 10th never
    // processed, every 4th committed to the database but not acked; then killed.
    let (consumer, guard) = start(&cluster.bootstrap_servers(), &db)?;
    let mut batch = Vec::new();
    while batch.len() < 120 {
        let m = consumer.recv().await?;
        if let Tracked::Process(token) = guard.track_or_skip(&m) {
            batch.push((token, m.key().unwrap_or_default().to_vec()));
        }
    }
    for (i, (token, key)) in batch.into_iter().rev().enumerate() {
        if i % 10 == 5 {
            continue; // killed before this one was processed
        }
        process(&mut conn, &token, &key)?;
        if i % 4 != 0 {
            token.ack();
        }
    }
    drop(guard);
    drop(consumer);

    // Run 2: the rest, skipping what the database has as done; stops once
    // nothing came for 2 s after the first record (the group join takes a
    // few seconds).
    let (consumer, guard) = start(&cluster.bootstrap_servers(), &db)?;
    let mut wait = Duration::from_secs(30);
    while let Ok(m) = tokio::time::timeout(wait, consumer.recv()).await {
        let m = m?;
        wait = Duration::from_secs(2);
        if let Tracked::Process(token) = guard.track_or_skip(&m) {
            process(&mut conn, &token, m.key().unwrap_or_default())?;
            token.ack();
        }
    }
    let skipped = guard.stats().records_skipped_done;
    let report = guard.shutdown(&*consumer).await?;
    drop(consumer);

    let (rows, distinct): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), COUNT(DISTINCT order_id) FROM invoices",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    println!(
        "invoices: {rows} ({distinct} distinct) for 200 orders; run 2 skipped {skipped} records done before the kill"
    );
    println!(
        "committed to Kafka: {:?}",
        report
            .committed
            .iter()
            .map(|c| (c.partition, c.offset))
            .collect::<Vec<_>>()
    );
    drop(conn);
    let _ = std::fs::remove_file(&db);
    if rows != 200 || distinct != 200 {
        return Err(
            format!("expected 200 invoices, once each; got {rows} ({distinct} distinct)").into(),
        );
    }
    Ok(())
}
