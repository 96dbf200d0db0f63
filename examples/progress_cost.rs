//! What storing progress costs per record in SQLite: one transaction per
//! record with an effect row, without and with `progress::sqlite::mark_done`,
//! in order and out of order (100 records in flight, completed in a shuffled
//! order). A file in the temporary directory, WAL journal,
//! `synchronous=NORMAL` and `FULL`.
//!
//! `cargo run --release --example progress_cost --features sqlite [RECORDS]`

use std::time::{Duration, Instant};

use offset_guard::progress::sqlite;
use rusqlite::{Connection, params};

fn open(path: &std::path::Path, sync: &str) -> Result<Connection, Box<dyn std::error::Error>> {
    let conn = Connection::open(path)?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};
         CREATE TABLE IF NOT EXISTS effects (partition_id INTEGER, record_offset INTEGER);"
    ))?;
    sqlite::migrate(&conn)?;
    Ok(conn)
}

/// Per-record time of `records` transactions over `order`.
fn run(
    conn: &mut Connection,
    order: &[i64],
    mark: bool,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let tx = conn.transaction()?;
    sqlite::advance(&tx, "g", "t", 0, 0)?;
    tx.commit()?;
    let started = Instant::now();
    for &o in order {
        let tx = conn.transaction()?;
        tx.execute("INSERT INTO effects VALUES (0, ?1)", params![o])?;
        if mark {
            sqlite::mark_done(&tx, "g", "t", 0, o)?;
        }
        tx.commit()?;
    }
    Ok(started.elapsed() / order.len() as u32)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let records: i64 = std::env::args().nth(1).map_or(Ok(5_000), |a| a.parse())?;
    let in_order: Vec<i64> = (0..records).collect();
    let mut shuffled = in_order.clone();
    let mut rng = fastrand::Rng::with_seed(16);
    for window in shuffled.chunks_mut(100) {
        rng.shuffle(window);
    }
    println!("{records} records, one transaction each; time per record");
    for sync in ["NORMAL", "FULL"] {
        for (name, order, mark) in [
            ("effect only", &in_order, false),
            ("effect + mark_done, in order", &in_order, true),
            (
                "effect + mark_done, out of order (100 in flight)",
                &shuffled,
                true,
            ),
        ] {
            let dir = std::env::temp_dir().join(format!(
                "offset-guard-cost-{}-{sync}-{mark}-{}",
                std::process::id(),
                order[1]
            ));
            std::fs::create_dir_all(&dir)?;
            let mut conn = open(&dir.join("db"), sync)?;
            let per = run(&mut conn, order, mark)?;
            let done_rows: i64 =
                conn.query_row("SELECT COUNT(*) FROM offset_guard_done", [], |r| r.get(0))?;
            drop(conn);
            std::fs::remove_dir_all(&dir)?;
            println!(
                "  synchronous={sync:<6} {name:<50} {:>7.1} us  (done rows left: {done_rows})",
                per.as_secs_f64() * 1e6
            );
        }
    }
    Ok(())
}
