//! What storing progress costs in PostgreSQL (issue 16, item 8), in one run:
//!
//! 1. The database alone: transactions with an effect row per record,
//!    without and with `progress::postgres::mark_done`; one transaction per
//!    record (in order, and out of order: 100 records in flight, completed
//!    in a shuffled order) and one transaction per batch of 100 records;
//!    `synchronous_commit` on (PostgreSQL's default) and off.
//! 2. End to end through a consumer (own-loop front-end, embedded
//!    MockCluster, `synchronous_commit` on): receive, track, one transaction
//!    (the effect rows, or the effect rows + `mark_tokens` of the
//!    transaction's tokens: one statement), ack after the commit; per record
//!    and per batch of 100; `stored_progress` with `postgres::Loader`.
//!
//! Each run in a fresh schema. Prints records/s (the median of 3 runs,
//! without and with in turn) and the ratio with/without side by side.
//!
//! Needs a server: `eval "$(scripts/postgres.sh start)"` and then
//! `cargo run --release --example progress_cost_pg --features postgres -- "$OFFSET_GUARD_POSTGRES" [RECORDS [CONSUMER_RECORDS]]`
//! (the consumer path's records default to `RECORDS`, 5,000);
//! `scripts/postgres.sh stop` afterwards.

#[path = "support/cost.rs"]
mod cost;

use std::time::{Duration, Instant};

use cost::{BATCH, REPEATS, Res, median};
use offset_guard::progress::postgres;
use offset_guard::{AckToken, GuardContext, OffsetGuard, Tracked};
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio_postgres::{Client, NoTls};

/// A connection working in a fresh schema `name`, migrated, with an effects
/// table.
async fn open(url: &str, name: &str, sync: &str) -> Res<Client> {
    let (mut client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name};
             SET search_path TO {name}; SET synchronous_commit TO {sync};
             CREATE TABLE effects (partition_id INTEGER, record_offset BIGINT);"
        ))
        .await?;
    postgres::migrate(&mut client).await?;
    Ok(client)
}

/// Records per second over `order`, `batch` records per transaction, with or
/// without the mark; and the done rows left at the end.
async fn run(client: &mut Client, order: &[i64], batch: usize, mark: bool) -> Res<(f64, i64)> {
    let tx = client.transaction().await?;
    postgres::advance(&tx, "g", "t", 0, 0).await?;
    tx.commit().await?;
    let insert = client.prepare("INSERT INTO effects VALUES (0, $1)").await?;
    let started = Instant::now();
    for chunk in order.chunks(batch) {
        let tx = client.transaction().await?;
        for &o in chunk {
            tx.execute(&insert, &[&o]).await?;
            if mark {
                postgres::mark_done(&tx, "g", "t", 0, o).await?;
            }
        }
        tx.commit().await?;
    }
    let rate = order.len() as f64 / started.elapsed().as_secs_f64();
    let left: i64 = client
        .query_one("SELECT COUNT(*) FROM offset_guard_done", &[])
        .await?
        .get(0);
    Ok((rate, left))
}

/// The effect rows (and, `mark`, the progress) of `tokens`, in one
/// transaction; acked after the commit.
async fn apply(client: &mut Client, tokens: &mut Vec<AckToken>, mark: bool) -> Res<()> {
    let tx = client.transaction().await?;
    let partitions: Vec<i32> = tokens.iter().map(AckToken::partition).collect();
    let offsets: Vec<i64> = tokens.iter().map(AckToken::offset).collect();
    tx.execute(
        "INSERT INTO effects SELECT * FROM unnest($1::INTEGER[], $2::BIGINT[])",
        &[&partitions, &offsets],
    )
    .await?;
    if mark {
        postgres::mark_tokens(&tx, "cost", tokens).await?;
    }
    tx.commit().await?;
    for t in tokens.drain(..) {
        t.ack();
    }
    Ok(())
}

/// Records/s of one consumer receiving all `records`, from the first record
/// received to the last ack (the group join is not counted).
async fn consume(url: &str, bootstrap: &str, records: i64, batch: usize, mark: bool) -> Res<f64> {
    let mut client = open(url, "og_cost", "on").await?;
    let mut builder = OffsetGuard::builder(cost::consumer_config(bootstrap));
    if mark {
        let mut schema: tokio_postgres::Config = url.parse()?;
        schema.options("-csearch_path=og_cost");
        let loader =
            tokio::task::spawn_blocking(move || postgres::Loader::connect_with(schema, NoTls))
                .await??;
        builder = builder.stored_progress(move |g, t, p| loader.load(g, t, p));
    }
    let (consumer, guard) = builder.build_consumer::<StreamConsumer<GuardContext>>()?;
    consumer.subscribe(&["cost"])?;
    let mut tokens = Vec::with_capacity(batch);
    let mut started = None;
    for _ in 0..records {
        let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await??;
        started.get_or_insert_with(Instant::now);
        let token = match mark {
            false => guard.track(&m),
            true => match guard.track_or_skip(&m) {
                Tracked::Process(token) => token,
                Tracked::Done => return Err("nothing is done yet".into()),
            },
        };
        drop(m);
        tokens.push(token);
        if tokens.len() == batch {
            apply(&mut client, &mut tokens, mark).await?;
        }
    }
    apply(&mut client, &mut tokens, mark).await?;
    let rate = records as f64 / started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    guard.shutdown(&*consumer).await?;
    tokio::task::spawn_blocking(move || drop(consumer)).await?;
    Ok(rate)
}

async fn consumer_path(url: &str, records: i64) -> Res<()> {
    println!(
        "2. end to end through a consumer (own loop, MockCluster, synchronous_commit=on), {records} records (records/s; with/without)"
    );
    for (name, batch) in [("1 tx per record", 1), ("1 tx per 100 records", BATCH)] {
        let mut rates = [Vec::new(), Vec::new()];
        for (i, mark) in (0..REPEATS)
            .flat_map(|_| [false, true])
            .map(|m| (m as usize, m))
        {
            let cluster = cost::cluster_with(records)?;
            let bootstrap = cluster.bootstrap_servers();
            rates[i].push(consume(url, &bootstrap, records, batch, mark).await?);
        }
        let rates = rates.map(median);
        println!(
            "  {name:<48} without {:>9.0}  with {:>9.0}  ratio {:.2}",
            rates[0],
            rates[1],
            rates[1] / rates[0]
        );
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: progress_cost_pg POSTGRES_URL [RECORDS [CONSUMER_RECORDS]]")?;
    let records: i64 = args.next().map_or(Ok(5_000), |a| a.parse())?;
    let consumer_records: i64 = args.next().map_or(Ok(records), |a| a.parse())?;
    let in_order: Vec<i64> = (0..records).collect();
    let mut shuffled = in_order.clone();
    let mut rng = fastrand::Rng::with_seed(16);
    for window in shuffled.chunks_mut(100) {
        rng.shuffle(window);
    }
    println!("1. PostgreSQL alone, {records} records (records/s; with/without)");
    for sync in ["on", "off"] {
        for (name, order, batch) in [
            ("1 tx per record, in order", &in_order, 1),
            (
                "1 tx per record, out of order (100 in flight)",
                &shuffled,
                1,
            ),
            ("1 tx per 100 records, in order", &in_order, BATCH),
        ] {
            let mut rates = [Vec::new(), Vec::new()];
            let mut left = 0;
            for _ in 0..REPEATS {
                for (i, mark) in [false, true].into_iter().enumerate() {
                    let mut client = open(&url, "og_cost", sync).await?;
                    let (rate, l) = run(&mut client, order, batch, mark).await?;
                    rates[i].push(rate);
                    left = left.max(l);
                }
            }
            let rates = rates.map(median);
            println!(
                "  synchronous_commit={sync:<3} {name:<48} without {:>8.0}  with {:>8.0}  ratio {:.2}  (done rows left: {left})",
                rates[0],
                rates[1],
                rates[1] / rates[0]
            );
        }
    }
    consumer_path(&url, consumer_records).await?;
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute("DROP SCHEMA IF EXISTS og_cost CASCADE")
        .await?;
    Ok(())
}
