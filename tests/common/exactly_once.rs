//! Members of the exactly-once tests (SQLite and PostgreSQL stores): a
//! consumer with the store's loader as its stored progress, of either
//! front-end, and the records it is given. The store itself (its
//! transactions, its loader) stays in each test file.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use offset_guard::progress::{PartitionProgress, ProgressError};
use offset_guard::{
    AckToken, GuardBuilder, GuardContext, GuardHandle, GuardedConsumer, OffsetGuard, Tracked,
};
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

/// The run after a crash: `n` messages of a restarted own-loop member.
/// `seen` gets each message's (partition, offset) first; a message the
/// guard skips as done must be in `done` (done before the crash), one it
/// hands out must not be, and goes to `process` (which acks it). Returns
/// what was handed out, in order, and how many were skipped.
pub async fn resume(
    consumer: &StreamConsumer<GuardContext>,
    guard: &GuardHandle,
    done: &BTreeSet<(i32, i64)>,
    n: usize,
    mut seen: impl FnMut(i32, i64),
    mut process: impl AsyncFnMut(AckToken),
) -> (Vec<(i32, i64)>, usize) {
    let (mut handed_out, mut skipped) = (Vec::new(), 0);
    while handed_out.len() + skipped < n {
        let (p, o, m) = next(consumer, guard).await;
        seen(p, o);
        match guard.track_or_skip(&m) {
            Tracked::Done => {
                assert!(done.contains(&(p, o)), "{p}@{o} skipped but not done");
                skipped += 1;
            }
            Tracked::Process(token) => {
                assert!(!done.contains(&(p, o)), "{p}@{o} done but handed out");
                handed_out.push((p, o));
                process(token).await;
            }
        }
    }
    (handed_out, skipped)
}

/// The next message of an own-loop member with nothing stored as done yet,
/// and its token (fails if the guard skips it as done).
pub async fn next_new(
    consumer: &StreamConsumer<GuardContext>,
    guard: &GuardHandle,
) -> (OwnedMessage, AckToken) {
    let (_, _, m) = next(consumer, guard).await;
    let Tracked::Process(token) = guard.track_or_skip(&m) else {
        panic!("nothing is done yet");
    };
    (m, token)
}

/// The tokens of the next `n` messages of an own-loop member with nothing
/// stored as done yet ([`next_new`]).
pub async fn track_new(
    consumer: &StreamConsumer<GuardContext>,
    guard: &GuardHandle,
    n: usize,
) -> Vec<AckToken> {
    let mut tracked = Vec::with_capacity(n);
    while tracked.len() < n {
        tracked.push(next_new(consumer, guard).await.1);
    }
    tracked
}

/// Run 1 of the owned front-end's restart (one partition of 40 records, a
/// member from `build`): the even offsets done (`apply`, then acked), the
/// odd ones not (dropped unacked: abandoned); then stopped.
pub async fn owned_run_1(
    build: impl Fn() -> GuardedConsumer,
    mut apply: impl AsyncFnMut(&AckToken),
) {
    let mut c = build();
    let records = super::recv_n(&mut c, 40, Duration::from_secs(30)).await;
    let mut unfinished = Vec::new();
    for r in records {
        let (_, token) = r.into_parts();
        if token.offset() % 2 == 0 {
            apply(&token).await;
            token.ack();
        } else {
            unfinished.push(token);
        }
    }
    drop(unfinished);
    let report = c.shutdown().await.unwrap();
    assert_eq!(report.abandoned.len(), 20, "{report:?}");
}

/// Run 2 of the owned front-end's restart: exactly the odd offsets are
/// handed out (the 19 even ones above the stored watermark 1 skipped), each
/// applied and acked; Kafka's commit reaches the end.
pub async fn owned_run_2(
    fx: &Fixture,
    group: &str,
    topic: &str,
    build: impl Fn() -> GuardedConsumer,
    mut apply: impl AsyncFnMut(&AckToken),
) {
    let mut c = build();
    let records = super::recv_n(&mut c, 20, Duration::from_secs(30)).await;
    let offsets: Vec<i64> = records.iter().map(|r| r.offset()).collect();
    assert_eq!(offsets, (1..40).step_by(2).collect::<Vec<_>>());
    for r in records {
        let (_, token) = r.into_parts();
        apply(&token).await;
        token.ack();
    }
    let stats = c.stats();
    assert_eq!(stats.records_skipped_done, 19);
    // Every record delivered or skipped is acked, and the counters agree
    // (`acked` counts the guard's acks of skipped records too).
    assert_eq!((stats.delivered, stats.acked), (20, 39), "{stats:?}");
    c.commit_now().await.unwrap();
    assert_eq!(fx.committed(group, topic, 1), vec![Some(40)]);
    c.shutdown().await.unwrap();
}

/// (offset, key) of the second copies [`produce_orders_twice`] produced: the
/// records key idempotency skips.
pub fn second_copies() -> Vec<(i64, String)> {
    vec![(10, "order-3".to_string()), (11, "order-7".to_string())]
}
