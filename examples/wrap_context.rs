//! Adopting offset-guard in a service that already has its own rdkafka
//! `ConsumerContext` (here: one that counts statistics and errors).
//!
//! The change is a few lines: build the consumer with `OffsetGuard::builder`
//! instead of `ClientConfig::create_with_context`, hand your context to
//! `.context(..)`, and move what your `pre_rebalance` / `post_rebalance` did
//! into the guard's `on_assign` / `on_revoke` / `on_lost` hooks (which also say
//! what was committed). Two consumers share a group so a rebalance happens.
//!
//! Run: `cargo run --example wrap_context` (embedded MockCluster, ~15 s).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use offset_guard::OffsetGuard;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// The service's existing context.
#[derive(Clone, Default)]
struct ServiceContext {
    stats: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
}

impl ClientContext for ServiceContext {
    fn stats(&self, _statistics: rdkafka::Statistics) {
        self.stats.fetch_add(1, Ordering::Relaxed);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        eprintln!("service context: kafka error {error}: {reason}");
    }
}

impl ConsumerContext for ServiceContext {}

fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", "wrap-context-demo")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "500")
        .set("statistics.interval.ms", "500");
    c
}

/// Before: `let consumer: BaseConsumer<ServiceContext> =
/// consumer_config(b).create_with_context(ctx)?;` and manual commits.
/// After: the same config and context, wrapped.
fn guarded(
    bootstrap: &str,
    name: &'static str,
    ctx: ServiceContext,
) -> Result<offset_guard::GuardedConsumer<ServiceContext>, offset_guard::BuildError> {
    OffsetGuard::builder(consumer_config(bootstrap))
        .context(ctx)
        .commit_interval(Duration::from_secs(1))
        .on_assign(move |a| println!("{name}: assigned {:?}", a.partitions))
        .on_revoke(move |r| {
            println!(
                "{name}: revoked {:?}; committed before hand-off: {:?}",
                r.partitions,
                r.committed
                    .iter()
                    .map(|c| (c.partition, c.offset))
                    .collect::<Vec<_>>()
            )
        })
        .on_lost(move |l| println!("{name}: lost {:?}", l.partitions))
        .build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = MockCluster::new(1)?;
    let bootstrap = cluster.bootstrap_servers();
    cluster.create_topic("events", 4, 1)?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()?;
    let produce = |from: i32, to: i32| -> Result<(), Box<dyn std::error::Error>> {
        for i in from..to {
            let payload = format!("event-{i}");
            producer
                .send(
                    BaseRecord::<(), str>::to("events")
                        .partition(i % 4)
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)?;
        }
        producer.flush(Duration::from_secs(10))?;
        Ok(())
    };
    produce(0, 1_000)?;

    let ctx_a = ServiceContext::default();
    let mut a = guarded(&bootstrap, "a", ctx_a.clone())?;
    a.subscribe(&["events"])?;
    let mut processed = 0u64;
    // a consumes the first 1,000; then a second member joins (a's revoke
    // commits first) and, once it has partitions, 1,000 more records arrive.
    while processed < 1_000 {
        if let Some(r) = a.recv().await? {
            r.ack();
            processed += 1;
        }
    }
    let ctx_b = ServiceContext::default();
    let mut b = guarded(&bootstrap, "b", ctx_b.clone())?;
    b.subscribe(&["events"])?;
    // Keep a consuming until the rebalance gave b its share.
    let joined = tokio::time::Instant::now() + Duration::from_secs(30);
    while b.partitions().is_empty() && tokio::time::Instant::now() < joined {
        tokio::select! {
            r = a.recv() => if let Some(r) = r? {
                r.ack();
                processed += 1;
            },
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    produce(1_000, 2_000)?;
    let b_task = tokio::spawn(async move {
        let mut n = 0u64;
        while let Ok(Ok(Some(r))) = tokio::time::timeout(Duration::from_secs(8), b.recv()).await {
            r.ack();
            n += 1;
        }
        (n, b.shutdown().await)
    });
    while let Ok(Ok(Some(r))) = tokio::time::timeout(Duration::from_secs(8), a.recv()).await {
        r.ack();
        processed += 1;
    }
    let (b_processed, b_report) = b_task.await?;
    let b_report = b_report?;
    let a_report = a.shutdown().await?;
    println!(
        "a processed {processed}, b processed {b_processed}; a: {} revokes, {} offsets committed on revoke; b: {} revokes",
        a_report.stats.revokes, a_report.stats.offsets_revoke_committed, b_report.stats.revokes
    );
    println!(
        "the service context still got its callbacks: a {} statistics, b {} statistics, {} errors",
        ctx_a.stats.load(Ordering::Relaxed),
        ctx_b.stats.load(Ordering::Relaxed),
        ctx_a.errors.load(Ordering::Relaxed) + ctx_b.errors.load(Ordering::Relaxed)
    );
    let total = processed + b_processed;
    if total < 2_000 || ctx_a.stats.load(Ordering::Relaxed) == 0 {
        eprintln!("check failed: {total} of 2000 records processed");
        std::process::exit(1);
    }
    println!(
        "{total} records processed for 2000 produced; duplicates: {}",
        total - 2_000
    );
    Ok(())
}
