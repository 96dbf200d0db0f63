//! Commits reach the end of a partition written by a transactional producer
//! (issue 13, item 5): the commit marker after the records is never returned
//! to the consumer, so "last acked + 1" stops one short of the log end; the
//! guard commits the consumer's position once every record was acked. On a
//! broker that writes markers (Tansu) the log end is 11 for 10 records; on
//! MockCluster, which writes none, 10: either way the commit must reach it.

mod common;

use std::time::Duration;

use common::{Fixture, recv_n, unique};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_transaction_the_commit_reaches_the_log_end() {
    let fx = Fixture::any();
    let (topic, group) = (unique("txn"), unique("g-txn"));
    fx.create_topic(&topic, 1);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", fx.bootstrap())
        .set("transactional.id", unique("txn-producer"))
        .create()
        .expect("transactional producer");
    let t = Duration::from_secs(30);
    producer.init_transactions(t).expect("init_transactions");
    producer.begin_transaction().unwrap();
    for i in 0..10 {
        let payload = format!("record {i}");
        producer
            .send(
                BaseRecord::<(), _>::to(&topic)
                    .payload(&payload)
                    .partition(0),
            )
            .expect("send");
    }
    producer.commit_transaction(t).expect("commit_transaction");
    let log_end = fx.high_watermarks(&topic, 1)[0];
    assert!(log_end >= 10, "{log_end}");

    let mut cc = fx.config(&group);
    cc.set("isolation.level", "read_committed");
    let mut c = offset_guard::OffsetGuard::builder(cc)
        .retry(common::fast_retry(5))
        .no_commit_interval()
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let records = recv_n(&mut c, 10, Duration::from_secs(60)).await;
    for r in records {
        r.ack();
    }
    // The poll thread notices the position past the marker when idle.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        c.commit_now().await.unwrap();
        if fx.committed(&group, &topic, 1) == vec![Some(log_end)] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "committed {:?}, log end {log_end} ({})",
            fx.committed(&group, &topic, 1),
            fx.kind()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = c.partitions().remove(0);
    assert_eq!(status.committed, Some(log_end));
    c.shutdown().await.unwrap();
}
