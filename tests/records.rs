//! What a record of the owned front-end carries: every field of the Kafka
//! record, headers included unless `read_headers(false)` (issue 13, item 7:
//! the poll thread copies records out of librdkafka itself).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Fixture, recv_one, unique};
use offset_guard::GuardedConsumer;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, Headers, OwnedHeaders, Timestamp};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// Two records: key, payload, timestamp and two headers (one without a
/// value); then one with none of them.
fn produce(fx: &Fixture, topic: &str) {
    let p = fx.producer();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "trace",
            value: Some("abc"),
        })
        .insert(Header {
            key: "empty",
            value: None::<&[u8]>,
        });
    p.send(
        BaseRecord::to(topic)
            .partition(0)
            .key("k1")
            .payload("v1")
            .timestamp(1_700_000_000_123)
            .headers(headers),
    )
    .map_err(|(e, _)| e)
    .expect("send");
    p.send(BaseRecord::<(), str>::to(topic).partition(0).payload("v2"))
        .map_err(|(e, _)| e)
        .expect("send");
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// The two records, read from the start of partition 0, acked.
async fn read_two(c: &mut GuardedConsumer, topic: &str) -> Vec<offset_guard::Record> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.consumer().assign(&tpl).unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        let r = tokio::time::timeout(Duration::from_secs(30), c.recv())
            .await
            .expect("a record within 30 s")
            .expect("no error")
            .expect("not stopped");
        got.push(r);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_carries_key_payload_timestamp_and_headers_unless_told_not_to() {
    let fx = Fixture::any();
    let topic = unique("records");
    fx.create_topic(&topic, 1);
    produce(&fx, &topic);

    let mut c = fx.guard(&unique("g-records")).build().unwrap();
    let got = read_two(&mut c, &topic).await;
    let (a, b) = (&got[0], &got[1]);
    assert_eq!((a.topic(), a.partition(), a.offset()), (&*topic, 0, 0));
    assert_eq!(a.key(), Some(&b"k1"[..]));
    assert_eq!(a.payload(), Some(&b"v1"[..]));
    assert_eq!(
        a.message().timestamp(),
        Timestamp::CreateTime(1_700_000_000_123)
    );
    let h = a.message().headers().expect("headers of the first record");
    assert_eq!(h.count(), 2);
    assert_eq!(h.get(0).key, "trace");
    assert_eq!(h.get(0).value, Some(&b"abc"[..]));
    assert_eq!(h.get(1).key, "empty");
    assert_eq!(h.get(1).value, None);
    assert_eq!(
        (b.offset(), b.key(), b.payload()),
        (1, None, Some(&b"v2"[..]))
    );
    assert!(
        b.message().headers().is_none(),
        "a record without headers has none"
    );
    for r in got {
        r.ack();
    }
    c.shutdown().await.unwrap();

    let mut c = fx
        .guard(&unique("g-records"))
        .read_headers(false)
        .build()
        .unwrap();
    let got = read_two(&mut c, &topic).await;
    let a = &got[0];
    assert!(
        a.message().headers().is_none(),
        "read_headers(false): no headers"
    );
    assert_eq!((a.key(), a.payload()), (Some(&b"k1"[..]), Some(&b"v1"[..])));
    assert_eq!(
        a.message().timestamp(),
        Timestamp::CreateTime(1_700_000_000_123)
    );
    for r in got {
        r.ack();
    }
    c.shutdown().await.unwrap();
}

/// How long a test waits for one record.
const WAIT: Duration = Duration::from_secs(20);

/// Records keep librdkafka's message instead of a copy (issue 13, item 7,
/// prototype): a record kept after `shutdown` is still whole (headers read
/// from two threads at once, the first read parses them), the consumer left
/// the group at shutdown all the same (a new member of the group gets the
/// partition and the next record; one still in the group would hold the
/// rebalance for `max.poll.interval.ms`, 300 s), and dropping the record on
/// another thread afterwards (its drop destroys librdkafka's client) returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_kept_after_shutdown_stays_whole_and_the_consumer_leaves_the_group() {
    let fx = Fixture::any();
    let topic = unique("records-kept");
    fx.create_topic(&topic, 1);
    produce(&fx, &topic);
    let group = unique("g-kept");
    let revokes = Arc::new(AtomicUsize::new(0));
    let seen = revokes.clone();
    let mut c = fx
        .guard(&group)
        .on_revoke(move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let kept = recv_one(&mut c, WAIT).await;
    kept.ack_token().ack();
    recv_one(&mut c, WAIT).await.ack();
    let report = c.shutdown().await.expect("shutdown");
    assert_eq!(report.committed[0].offset, 2);
    // The member left at shutdown (the close revokes its partitions),
    // although the record keeps its client.
    assert!(
        revokes.load(Ordering::SeqCst) >= 1,
        "the consumer was closed by shutdown"
    );

    let read = || {
        kept.headers().map(|h| {
            (
                h.count(),
                h.get(0).key.to_string(),
                h.get(0).value.map(<[u8]>::to_vec),
            )
        })
    };
    let (x, y) = std::thread::scope(|s| {
        let x = s.spawn(read);
        let y = s.spawn(read);
        (x.join().unwrap(), y.join().unwrap())
    });
    let want = Some((2, "trace".to_string(), Some(b"abc".to_vec())));
    assert_eq!(
        (&x, &y),
        (&want, &want),
        "headers, read from two threads at once"
    );
    assert_eq!(
        (kept.offset(), kept.key(), kept.payload()),
        (0, Some(&b"k1"[..]), Some(&b"v1"[..]))
    );
    assert_eq!(kept.message().headers().map(|h| h.count()), Some(2));

    // The group is empty: a new member gets the partition and the next record.
    let p = fx.producer();
    p.send(BaseRecord::<(), str>::to(&topic).partition(0).payload("v3"))
        .map_err(|(e, _)| e)
        .expect("send");
    p.flush(Duration::from_secs(30)).expect("flush");
    let mut d = fx.guard(&group).build().unwrap();
    d.subscribe(&[&topic]).unwrap();
    let r = recv_one(&mut d, WAIT).await;
    assert_eq!((r.offset(), r.payload()), (2, Some(&b"v3"[..])));
    r.ack();
    d.shutdown().await.expect("shutdown");

    common::drop_elsewhere(kept, "dropping the last record returns");
}
