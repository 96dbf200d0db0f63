//! Members of the exactly-once tests (SQLite and PostgreSQL stores): a
//! consumer with the store's loader as its stored progress, of either
//! front-end, and the records it is given. The store itself (its
//! transactions, its loader) stays in each test file.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use offset_guard::progress::{PartitionProgress, ProgressError};
use offset_guard::{GuardBuilder, GuardContext, GuardHandle, GuardedConsumer, OffsetGuard};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{ClientConfig, Message};

use super::{Fixture, fast_retry};

/// The group's consumer config, with a quicker rejoin on MockCluster (each
/// rebalance waits `session.timeout.ms` minus 1 s).
pub fn config(fx: &Fixture, group: &str) -> ClientConfig {
    let mut config = fx.config(group);
    config.set("session.timeout.ms", "3000");
    config
}

/// A guard on `config` with fast retries, no periodic commits and `loader`
/// as its stored progress.
pub fn builder(
    config: ClientConfig,
    loader: impl Fn(&str, &str, i32) -> Result<PartitionProgress, ProgressError> + Send + Sync + 'static,
) -> GuardBuilder {
    OffsetGuard::builder(config)
        .retry(fast_retry(5))
        .no_commit_interval()
        .stored_progress(loader)
}

/// An own-loop member of `builder`'s group, subscribed to `topic`.
pub fn own_loop(
    builder: GuardBuilder,
    topic: &str,
) -> (Arc<StreamConsumer<GuardContext>>, GuardHandle) {
    let (consumer, guard) = builder
        .build_consumer::<StreamConsumer<GuardContext>>()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    (consumer, guard)
}

/// An owned-front-end member of `builder`'s group, subscribed to `topic`.
pub fn owned(builder: GuardBuilder, topic: &str) -> GuardedConsumer {
    let consumer = builder.build().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

/// The next message of an own-loop member: (partition, offset, message);
/// after 30 s without one, fails with the guard's view (stats and
/// partitions) for diagnosis.
pub async fn next(
    consumer: &StreamConsumer<GuardContext>,
    guard: &GuardHandle,
) -> (i32, i64, OwnedMessage) {
    let m = match tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await {
        Ok(m) => m.expect("recv"),
        Err(_) => panic!(
            "no message within 30 s; stats {:?}; partitions {:?}",
            guard.stats(),
            guard.partitions()
        ),
    };
    (m.partition(), m.offset(), m.detach())
}

/// Ten orders to partition 0, then orders 3 and 7 produced again (a
/// producer retry at the application level): same key, two offsets. The
/// keys in offset order.
pub fn produce_orders_twice(fx: &Fixture, topic: &str) -> Vec<String> {
    let keys: Vec<String> = (0..10)
        .chain([3, 7])
        .map(|k| format!("order-{k}"))
        .collect();
    let producer = fx.producer();
    for k in &keys {
        producer
            .send(BaseRecord::to(topic).partition(0).key(k).payload(k))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    keys
}
