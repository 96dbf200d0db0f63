//! Keep your own rdkafka loop: from rust-rdkafka's at-least-once shape
//! (`StreamConsumer` + `store_offset` + auto commit) to offset-guard's
//! own-loop mode, on an embedded MockCluster.
//!
//! `cargo run --example own_loop`
//!
//! rust-rdkafka's `examples/at_least_once.rs` does, in essence:
//!
//! ```text
//! let consumer: StreamConsumer = config
//!     .set("enable.auto.commit", "true")
//!     .set("enable.auto.offset.store", "false")
//!     .create()?;
//! loop {
//!     let m = consumer.recv().await?;
//!     process(&m).await;                 // in order, one at a time
//!     consumer.store_offset_from_message(&m)?;
//! }
//! ```
//!
//! With the guard the loop stays the same; `track` replaces `store_offset`,
//! and the token can be acked from another task, in any order: the commit
//! never passes a message that is not done. The guard commits (with retries,
//! before a rebalance hands partitions over, and at shutdown) instead of
//! librdkafka's auto commit. Exits non-zero if the group's committed offsets
//! are not what was processed.

use std::time::Duration;

use offset_guard::{GuardContext, OffsetGuard};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = MockCluster::new(1)?;
    cluster.create_topic("orders", 2, 1)?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()?;
    for i in 0..200 {
        let payload = format!("order {i}");
        producer
            .send(
                BaseRecord::<(), _>::to("orders")
                    .partition(i % 2)
                    .payload(&payload),
            )
            .map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(5))?;

    // Your consumer config, as before (the guard turns librdkafka's own
    // commits off; setting them on is refused at build).
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "billing")
        .set("auto.offset.reset", "earliest");
    let (consumer, guard) = OffsetGuard::builder(config)
        .commit_interval(Duration::from_millis(500))
        .build_consumer::<StreamConsumer<GuardContext>>()?;
    consumer.subscribe(&["orders"])?;

    // The same loop; processing runs on spawned tasks and finishes out of order.
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let m = consumer.recv().await?;
        let token = guard.track(&m);
        let work = m.payload().map(<[u8]>::len).unwrap_or(0);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis((work % 7) as u64)).await;
            token.ack();
        }));
    }
    for t in tasks {
        t.await?;
    }
    let report = guard.shutdown(&*consumer).await?;
    println!(
        "processed 200 records; committed {:?}; not committed {}",
        report
            .committed
            .iter()
            .map(|c| (c.partition, c.offset))
            .collect::<Vec<_>>(),
        report.not_committed.len()
    );

    // Read the group's offsets back from the broker.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("orders", 0);
    tpl.add_partition("orders", 1);
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(5))?;
    let offsets: Vec<_> = committed.elements().iter().map(|e| e.offset()).collect();
    drop(committed);
    println!("the group's committed offsets on the broker: {offsets:?}");
    if offsets != [Offset::Offset(100), Offset::Offset(100)] {
        return Err(format!("expected 100 on both partitions, got {offsets:?}").into());
    }
    drop(consumer);
    Ok(())
}
