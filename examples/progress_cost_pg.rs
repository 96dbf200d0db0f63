//! What storing progress costs in PostgreSQL (issue 16, item 8), in one run:
//! transactions with an effect row per record, without and with
//! `progress::postgres::mark_done`; one transaction per record (in order,
//! and out of order: 100 records in flight, completed in a shuffled order)
//! and one transaction per batch of 100 records; `synchronous_commit` on
//! (PostgreSQL's default) and off. Each run in a fresh schema. Prints
//! records/s (the median of 3 runs, without and with in turn) and the ratio
//! with/without side by side.
//!
//! Needs a server: `eval "$(scripts/postgres.sh start)"` and then
//! `cargo run --release --example progress_cost_pg --features postgres -- "$OFFSET_GUARD_POSTGRES" [RECORDS]`;
//! `scripts/postgres.sh stop` afterwards.

use std::time::Instant;

use offset_guard::progress::postgres;
use tokio_postgres::{Client, NoTls};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Runs of each measurement (without and with in turn); the median is shown.
const REPEATS: usize = 3;
/// Records per transaction in the batch mode.
const BATCH: usize = 100;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

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

#[tokio::main(flavor = "current_thread")]
async fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: progress_cost_pg POSTGRES_URL [RECORDS]")?;
    let records: i64 = args.next().map_or(Ok(5_000), |a| a.parse())?;
    let in_order: Vec<i64> = (0..records).collect();
    let mut shuffled = in_order.clone();
    let mut rng = fastrand::Rng::with_seed(16);
    for window in shuffled.chunks_mut(100) {
        rng.shuffle(window);
    }
    println!("PostgreSQL, {records} records (records/s; with/without)");
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
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute("DROP SCHEMA IF EXISTS og_cost CASCADE")
        .await?;
    Ok(())
}
