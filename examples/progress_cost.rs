//! What storing progress costs in SQLite (issue 16, item 8), in one run:
//!
//! 1. The database alone: transactions with an effect row per record,
//!    without and with `progress::sqlite::mark_done`; one transaction per
//!    record (in order, and out of order: 100 records in flight, completed
//!    in a shuffled order) and one transaction per batch of 100 records.
//!    `synchronous=NORMAL` and `FULL`.
//! 2. End to end through a consumer (own-loop front-end, embedded
//!    MockCluster): receive, track, one transaction (effects, or effects +
//!    `mark_tokens` of the transaction's tokens), ack after the commit; per
//!    record and per batch of 100; without offset-guard's progress (`track`,
//!    effect only) and with it (`stored_progress` + `track_or_skip` +
//!    `mark_tokens`).
//!
//! A file in the temporary directory, WAL journal. Prints records/s (the
//! median of 3 runs, without and with in turn) and the ratio with/without
//! side by side.
//!
//! `cargo run --release --example progress_cost --features sqlite [RECORDS]`

#[path = "support/cost.rs"]
mod cost;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use cost::{BATCH, REPEATS, Res, median};
use offset_guard::progress::sqlite;
use offset_guard::{AckToken, GuardContext, OffsetGuard, Tracked};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rusqlite::{Connection, params};

fn open(path: &std::path::Path, sync: &str) -> Res<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};
         CREATE TABLE IF NOT EXISTS effects (partition_id INTEGER, record_offset INTEGER);"
    ))?;
    sqlite::migrate(&conn)?;
    Ok(conn)
}

/// A fresh database file in its own temporary directory (removed on drop).
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Res<Scratch> {
        let dir =
            std::env::temp_dir().join(format!("offset-guard-cost-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
    fn db(&self) -> std::path::PathBuf {
        self.0.join("db")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Records per second over `order`, `batch` records per transaction, with or
/// without the mark; and the done rows left at the end.
fn run_db(conn: &mut Connection, order: &[i64], batch: usize, mark: bool) -> Res<(f64, i64)> {
    let tx = conn.transaction()?;
    sqlite::advance(&tx, "g", "t", 0, 0)?;
    tx.commit()?;
    let started = Instant::now();
    for chunk in order.chunks(batch) {
        let tx = conn.transaction()?;
        for &o in chunk {
            tx.execute("INSERT INTO effects VALUES (0, ?1)", params![o])?;
            if mark {
                sqlite::mark_done(&tx, "g", "t", 0, o)?;
            }
        }
        tx.commit()?;
    }
    let rate = order.len() as f64 / started.elapsed().as_secs_f64();
    let left = conn.query_row("SELECT COUNT(*) FROM offset_guard_done", [], |r| r.get(0))?;
    Ok((rate, left))
}

fn database_alone(records: i64) -> Res<()> {
    let in_order: Vec<i64> = (0..records).collect();
    let mut shuffled = in_order.clone();
    let mut rng = fastrand::Rng::with_seed(16);
    for window in shuffled.chunks_mut(100) {
        rng.shuffle(window);
    }
    println!("1. the database alone, {records} records (records/s; with/without)");
    for sync in ["NORMAL", "FULL"] {
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
            // Without and with in turn, REPEATS times each: the median.
            for _ in 0..REPEATS {
                for (i, mark) in [false, true].into_iter().enumerate() {
                    let scratch = Scratch::new(&format!("{sync}-{batch}-{mark}-{}", order[1]))?;
                    let mut conn = open(&scratch.db(), sync)?;
                    let (rate, l) = run_db(&mut conn, order, batch, mark)?;
                    rates[i].push(rate);
                    left = left.max(l);
                }
            }
            let rates = rates.map(median);
            println!(
                "  synchronous={sync:<6} {name:<48} without {:>9.0}  with {:>9.0}  ratio {:.2}  (done rows left: {left})",
                rates[0],
                rates[1],
                rates[1] / rates[0]
            );
        }
    }
    Ok(())
}

fn main() -> Res<()> {
    let records: i64 = std::env::args().nth(1).map_or(Ok(5_000), |a| a.parse())?;
    database_alone(records)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(consumer_path(records))
}

/// The effect rows (and, `mark`, the progress) of `tokens`, in one
/// transaction; acked after the commit.
fn apply(conn: &mut Connection, tokens: &mut Vec<AckToken>, mark: bool) -> Res<()> {
    let tx = conn.transaction()?;
    for t in tokens.iter() {
        tx.execute(
            "INSERT INTO effects VALUES (?1, ?2)",
            params![t.partition(), t.offset()],
        )?;
    }
    if mark {
        sqlite::mark_tokens(&tx, "cost", tokens)?;
    }
    tx.commit()?;
    for t in tokens.drain(..) {
        t.ack();
    }
    Ok(())
}

/// Records/s of one consumer receiving all `records`, from the first record
/// received to the last ack (the group join is not counted).
async fn consume(bootstrap: &str, group: &str, records: i64, batch: usize, mark: bool) -> Res<f64> {
    let scratch = Scratch::new(group)?;
    let mut conn = open(&scratch.db(), "NORMAL")?;
    let config = cost::consumer_config(bootstrap);
    let mut builder = OffsetGuard::builder(config);
    if mark {
        let loader = Mutex::new(open(&scratch.db(), "NORMAL")?);
        builder = builder.stored_progress(move |g, t, p| {
            sqlite::load(&loader.lock().unwrap_or_else(|e| e.into_inner()), g, t, p)
        });
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
            apply(&mut conn, &mut tokens, mark)?;
        }
    }
    apply(&mut conn, &mut tokens, mark)?;
    let rate = records as f64 / started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    guard.shutdown(&*consumer).await?;
    tokio::task::spawn_blocking(move || drop(consumer)).await?;
    Ok(rate)
}

async fn consumer_path(records: i64) -> Res<()> {
    println!(
        "2. end to end through a consumer (own loop, MockCluster, synchronous=NORMAL), {records} records (records/s; with/without)"
    );
    for (name, batch) in [("1 tx per record", 1), ("1 tx per 100 records", BATCH)] {
        let mut rates = [Vec::new(), Vec::new()];
        for (i, mark) in (0..REPEATS)
            .flat_map(|_| [false, true])
            .map(|m| (m as usize, m))
        {
            let cluster = cost::cluster_with(records)?;
            let group = format!("{batch}-{mark}");
            rates[i]
                .push(consume(&cluster.bootstrap_servers(), &group, records, batch, mark).await?);
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
