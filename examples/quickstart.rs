//! offset-guard end to end on an embedded MockCluster (no install needed):
//! produce, consume with concurrent out-of-order acks, survive injected commit
//! errors (retriable, then a burst that exhausts the retries), shut down, restart
//! in the same group and count duplicates. Exits non-zero if a check fails.
//!
//! ```sh
//! cargo run --example quickstart             # the failed-offset log is removed at the end
//! cargo run --example quickstart -- --keep-log
//! ```

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use offset_guard::failure_log::{LogEntry, LogReader};
use offset_guard::{GuardedConsumer, OffsetGuard, RetryPolicy};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

const TOPIC: &str = "orders";
const PARTITIONS: i32 = 3;
const PER_PARTITION: usize = 2_000;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn check(ok: bool, what: &str) -> Res<()> {
    if ok {
        println!("  ok: {what}");
        Ok(())
    } else {
        Err(format!("check failed: {what}").into())
    }
}

/// The example's failed-offset log in the temp dir: removed when dropped (also
/// when a step fails), unless `--keep-log` was given.
struct TempLog {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempLog {
    fn drop(&mut self) {
        if self.keep {
            println!(
                "\nkept the failed-offset log {} (read it: cargo run --bin offset-guard -- failures {0})",
                self.path.display()
            );
        } else if std::fs::remove_file(&self.path).is_ok() {
            // And the writer's lock file beside it.
            let mut lock = self.path.clone().into_os_string();
            lock.push(".lock");
            let _ = std::fs::remove_file(lock);
            println!(
                "\nremoved the failed-offset log {} (run with --keep-log to keep it)",
                self.path.display()
            );
        }
    }
}

fn produce(bootstrap: &str, from: usize, n: usize) -> Res<()> {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    for i in from..from + n {
        for part in 0..PARTITIONS {
            let payload = format!("order {part}-{i}");
            p.send(
                BaseRecord::<(), str>::to(TOPIC)
                    .partition(part)
                    .payload(&payload),
            )
            .map_err(|(e, _)| e)?;
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30))?;
    Ok(())
}

fn consumer(bootstrap: &str, log: &std::path::Path) -> Res<GuardedConsumer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "quickstart")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000");
    let c = OffsetGuard::builder(config)
        .retry(
            RetryPolicy::exponential()
                .initial_interval(Duration::from_millis(20))
                .max_interval(Duration::from_millis(200))
                .max_attempts(4),
        )
        .commit_interval(Duration::from_millis(200))
        .commit_every(1_000)
        .shutdown_timeout(Duration::from_secs(5))
        .failed_offset_log(log)
        .build()?;
    c.subscribe(&[TOPIC])?;
    Ok(c)
}

/// Receives `n` records and acks them from concurrent tasks, out of order.
async fn consume(c: &mut GuardedConsumer, n: usize, seen: &mut Vec<(i32, i64)>) -> Res<()> {
    let mut tasks = Vec::new();
    let mut batch = Vec::new();
    for i in 0..n {
        let r = tokio::time::timeout(Duration::from_secs(30), c.recv())
            .await
            .map_err(|_| format!("no record after {i} of {n}"))??
            .ok_or("consumer stopped")?;
        seen.push((r.partition(), r.offset()));
        batch.push(r.ack_token());
        if batch.len() == 64 {
            let mut b = std::mem::take(&mut batch);
            tasks.push(tokio::spawn(async move {
                b.reverse(); // finish out of order
                for t in b {
                    tokio::task::yield_now().await;
                    t.ack();
                }
            }));
        }
    }
    for t in batch {
        t.ack();
    }
    for t in tasks {
        t.await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Res<()> {
    let keep_log = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--keep-log") => true,
        Some(other) => return Err(format!("unknown argument {other:?} (only --keep-log)").into()),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .init();
    let started = Instant::now();
    let cluster = MockCluster::new(1)?;
    cluster.create_topic(TOPIC, PARTITIONS, 1)?;
    let bootstrap = cluster.bootstrap_servers();
    let log_path = std::env::temp_dir().join(format!(
        "offset-guard-quickstart-{}.jsonl",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&log_path);
    let log = TempLog {
        path: log_path.clone(),
        keep: keep_log,
    };
    let total = PER_PARTITION * PARTITIONS as usize;

    println!(
        "1. produce {total} records to {PARTITIONS} partitions; consume with out-of-order acks"
    );
    produce(&bootstrap, 0, PER_PARTITION)?;
    let mut c = consumer(&bootstrap, &log_path)?;
    let mut seen = Vec::new();
    consume(&mut c, total / 2, &mut seen).await?;

    println!("2. inject retriable OffsetCommit errors: retried, then the commit lands");
    use RDKafkaRespErr::*;
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[
            RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ],
    );
    let landed = c.commit_now().await;
    check(landed.is_ok(), "commit landed after retriable errors")?;

    println!("3. inject a burst that exhausts the retries: offsets go to the failed-offset log");
    consume(&mut c, total / 4, &mut seen).await?;
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 40],
    );
    let failed = c.commit_now().await;
    check(failed.is_err(), "commit given up after the retry budget")?;
    cluster.clear_request_errors(RDKafkaApiKey::OffsetCommit);

    println!("4. consume the rest; a later, higher commit lands; shut down");
    consume(&mut c, total - total / 2 - total / 4, &mut seen).await?;
    let report = c.shutdown().await?;
    check(report.not_committed.is_empty(), "final commit landed")?;
    let stats = report.stats;

    println!("5. restart in the same group, produce 100 more per partition");
    produce(&bootstrap, PER_PARTITION, 100)?;
    let mut c = consumer(&bootstrap, &log_path)?;
    let mut after = Vec::new();
    consume(&mut c, 100 * PARTITIONS as usize, &mut after).await?;
    c.shutdown().await?;
    let first: HashSet<_> = seen.iter().copied().collect();
    let duplicates = after.iter().filter(|k| first.contains(k)).count();

    println!("\nsummary (commit counters: first run)");
    println!(
        "  records processed:      {} (+{} after restart)",
        seen.len(),
        after.len()
    );
    // Every OffsetCommit attempt ends one way: landed, nothing to commit,
    // failed and retried, given up (the commit failed), or deferred.
    println!(
        "  commit attempts sent:   {} = {} landed + {} retried + {} given up + {} no-op + {} deferred",
        stats.commits_sent,
        stats.commits_succeeded,
        stats.commits_retried,
        stats.commits_failed,
        stats.commits_noop,
        stats.commits_deferred
    );
    println!(
        "  offsets abandoned:      {} (from {} commit(s) given up)",
        stats.offsets_failed, stats.commits_failed
    );
    println!("  duplicates on restart:  {duplicates}");
    println!("  took:                   {:.1?}", started.elapsed());

    println!("\nfailed-offset log {} (read back):", log_path.display());
    let reader = LogReader::open(&log_path)?;
    for e in reader.entries() {
        match e {
            LogEntry::Failure(f) => println!(
                "  failure   {}[{}] offset {} reason {} error {} after {} attempt(s)",
                f.topic,
                f.partition,
                f.offset,
                f.reason,
                f.error_code.as_deref().unwrap_or("-"),
                f.attempts
            ),
            LogEntry::Resolved(r) => println!(
                "  resolved  {}[{}] offset {} {} (covers offsets up to {})",
                r.topic,
                r.partition,
                r.offset,
                r.how.as_str(),
                r.covers()
            ),
            _ => {}
        }
    }

    check(
        seen.len() == total && first.len() == total,
        "every record processed once before restart",
    )?;
    check(stats.commits_retried >= 1, "retries counted")?;
    check(stats.offsets_failed >= 1, "abandoned offsets counted")?;
    check(
        reader.failures().next().is_some() && reader.issues().is_empty(),
        "failed offsets in the log",
    )?;
    check(
        reader.unresolved().is_empty(),
        "every failed offset resolved in the log by the later commit that covered it",
    )?;
    check(duplicates == 0, "0 duplicates after a clean shutdown")?;
    drop(log);
    // The consumers finish closing on the guard's threads a moment after
    // `shutdown` returns; tearing the embedded broker down under them makes
    // librdkafka report "AllBrokersDown". The broker ends with the process.
    std::mem::forget(cluster);
    Ok(())
}
