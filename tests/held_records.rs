//! Records of the owned front-end keep librdkafka's own message (issue 13,
//! item 7): what a user does with them outside the receive loop. Kept past
//! a drop of the consumer, moved to other threads and tasks, read from many
//! threads at once, copied with and without headers and keys, held across a
//! revoke and a seek, held while the runtime shuts down; and the poll
//! thread's wait on a full backlog.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Fixture, recv_n, recv_one, unique};
use offset_guard::AckStatus;
use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};

/// Record 0: key, payload, two headers; 1: payload only; 2: key only, one
/// header; 3: neither key nor payload nor headers.
fn produce_mixed(fx: &Fixture, topic: &str) {
    let p = fx.producer();
    let two = OwnedHeaders::new()
        .insert(Header {
            key: "a",
            value: Some("1"),
        })
        .insert(Header {
            key: "b",
            value: None::<&[u8]>,
        });
    let one = OwnedHeaders::new().insert(Header {
        key: "only",
        value: Some(&b"\x00\xff"[..]),
    });
    p.send(
        BaseRecord::to(topic)
            .partition(0)
            .key("k0")
            .payload("v0")
            .headers(two),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    p.send(BaseRecord::<(), str>::to(topic).partition(0).payload("v1"))
        .map_err(|(e, _)| e)
        .unwrap();
    p.send(
        BaseRecord::<str, ()>::to(topic)
            .partition(0)
            .key("k2")
            .headers(one),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    p.send(BaseRecord::<(), ()>::to(topic).partition(0))
        .map_err(|(e, _)| e)
        .unwrap();
    p.flush(Duration::from_secs(30)).unwrap();
}

type Headerlist = Vec<(String, Option<Vec<u8>>)>;

/// Key, payload and headers of a record.
type Fields = (
    Option<&'static [u8]>,
    Option<&'static [u8]>,
    Option<Headerlist>,
);

fn headers_of(h: Option<&impl Headers>) -> Option<Headerlist> {
    h.map(|h| {
        h.iter()
            .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
            .collect()
    })
}

fn expected() -> Vec<Fields> {
    vec![
        (
            Some(&b"k0"[..]),
            Some(&b"v0"[..]),
            Some(vec![("a".into(), Some(b"1".to_vec())), ("b".into(), None)]),
        ),
        (None, Some(&b"v1"[..]), None),
        (
            Some(&b"k2"[..]),
            None,
            Some(vec![("only".into(), Some(b"\x00\xff".to_vec()))]),
        ),
        (None, None, None),
    ]
}

/// In place, through `message()` (called from many threads at once, with
/// `headers()`), and through `into_parts()` with and without a `message()`
/// before: the same key, payload and headers, for records with and without
/// each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_to_read_a_record_agrees_from_many_threads() {
    let fx = Fixture::any();
    let topic = unique("held-mixed");
    fx.create_topic(&topic, 1);
    produce_mixed(&fx, &topic);
    let mut c = fx.guard(&unique("g-held-mixed")).build().unwrap();
    c.subscribe(&[&topic]).unwrap();
    let records = recv_n(&mut c, 4, Duration::from_secs(30)).await;
    let want = expected();
    // Sixteen threads read every record at once, in place and as a copy.
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..16)
            .map(|i| {
                let records = &records;
                s.spawn(move || {
                    records
                        .iter()
                        .map(|r| {
                            if i % 2 == 0 {
                                (
                                    r.key().map(<[u8]>::to_vec),
                                    r.payload().map(<[u8]>::to_vec),
                                    headers_of(r.headers()),
                                )
                            } else {
                                let m = r.message();
                                (
                                    m.key().map(<[u8]>::to_vec),
                                    m.payload().map(<[u8]>::to_vec),
                                    headers_of(m.headers()),
                                )
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for reader in readers {
            let got = reader.join().expect("a reader thread");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.0.as_deref(), w.0);
                assert_eq!(g.1.as_deref(), w.1);
                assert_eq!(g.2, w.2);
            }
        }
    });
    // into_parts: the first two after message() was called (above), and
    // two fresh records read again after a seek, without it.
    for (r, w) in records.into_iter().zip(&want) {
        let (m, token) = r.into_parts();
        assert_eq!((m.key(), m.payload()), (w.0, w.1));
        assert_eq!(headers_of(m.headers()), w.2);
        assert_eq!(token.ack(), AckStatus::Recorded);
    }
    c.seek(&topic, 0, rdkafka::Offset::Offset(0)).await.unwrap();
    let again = recv_n(&mut c, 4, Duration::from_secs(30)).await;
    for (r, w) in again.into_iter().zip(&want) {
        let (m, token) = r.into_parts();
        assert_eq!((m.key(), m.payload()), (w.0, w.1));
        assert_eq!(headers_of(m.headers()), w.2);
        token.ack();
    }
    c.shutdown().await.unwrap();
}

/// Records moved to other threads and tasks, read there after the consumer
/// was shut down, and dropped there (one in a task that is dropped with its
/// runtime): nothing hangs, and every read gives the record.
#[test]
fn records_outlive_their_consumer_and_their_runtime() {
    let fx = Fixture::any();
    let topic = unique("held-rt");
    fx.create_topic(&topic, 1);
    produce_mixed(&fx, &topic);
    let (tx, rx) = std::sync::mpsc::channel::<&'static str>();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (threads, parked) = rt.block_on(async {
        let mut c = fx.guard(&unique("g-held-rt")).build().unwrap();
        c.subscribe(&[&topic]).unwrap();
        let mut records = recv_n(&mut c, 4, Duration::from_secs(30)).await;
        for r in &records {
            r.ack_token().ack();
        }
        let report = c.shutdown().await.unwrap();
        assert_eq!(report.committed[0].offset, 4);
        // Record 3 goes to a task that never ends: dropped with the runtime.
        let last = records.pop().unwrap();
        let parked = tokio::spawn(async move {
            let _keep = last;
            std::future::pending::<()>().await
        });
        // Records 0 to 2 to threads that read, wait a little, and drop.
        let want = expected();
        let threads: Vec<_> = records
            .into_iter()
            .zip(want)
            .map(|(r, w)| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    assert_eq!((r.key(), r.payload()), (w.0, w.1));
                    assert_eq!(headers_of(r.headers()), w.2);
                    assert_eq!(headers_of(r.message().headers()), w.2);
                    drop(r);
                    let _ = tx.send("dropped");
                })
            })
            .collect();
        (threads, parked)
    });
    for t in threads {
        t.join().expect("a thread holding a record");
    }
    for _ in 0..3 {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("a record's drop returns");
    }
    assert!(!parked.is_finished());
    // The runtime drops the parked task (and its record, the last one).
    let started = Instant::now();
    rt.shutdown_timeout(Duration::from_secs(10));
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// How long a test waits for one record.
const WAIT: Duration = Duration::from_secs(30);

/// A consumer dropped without `shutdown` while the application still holds
/// one of its records: the member leaves the group all the same once its
/// final commit ran in the background (the close revokes its partition), so
/// a new member of the group gets the partition from what was acked. Before
/// the fix the held record kept the consumer open and unpolled: no revoke,
/// and the group's next rebalance waited for the silent member (11 s here
/// instead of 5 s under MockCluster; up to `max.poll.interval.ms` on Kafka).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_dropped_while_a_record_is_held_leaves_the_group() {
    let fx = Fixture::any();
    let (topic, group) = (unique("held-drop"), unique("g-held-drop"));
    fx.create_topic(&topic, 1);
    produce_mixed(&fx, &topic);
    let mut cc = fx.config(&group);
    cc.set("max.poll.interval.ms", "60000");
    let build = || {
        offset_guard::OffsetGuard::builder(cc.clone())
            .retry(common::fast_retry(5))
            .build()
            .unwrap()
    };
    let revokes = Arc::new(AtomicUsize::new(0));
    let seen = revokes.clone();
    let mut c = offset_guard::OffsetGuard::builder(cc.clone())
        .retry(common::fast_retry(5))
        .on_revoke(move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    recv_one(&mut c, WAIT).await.ack();
    let kept = recv_one(&mut c, WAIT).await;
    assert_eq!(kept.offset(), 1);
    drop(c);
    common::wait_until(
        Duration::from_secs(20),
        "the dropped consumer's close (its revoke) while a record is held",
        || revokes.load(Ordering::SeqCst) >= 1,
    );

    let mut d = build();
    d.subscribe(&[&topic]).unwrap();
    let r = recv_one(&mut d, WAIT).await;
    assert_eq!(r.offset(), 1, "from the acked offset");
    assert_eq!(kept.payload(), Some(&b"v1"[..]), "the held record is whole");
    r.ack();
    d.shutdown().await.unwrap();
    common::drop_elsewhere(kept, "dropping the last record returns");
}

/// Records held across a seek and across a revoke stay whole; their acks
/// are stale (never committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_held_across_a_seek_and_a_revoke_stay_whole_and_ack_stale() {
    let fx = Fixture::any();
    let (topic, group) = (unique("held-move"), unique("g-held-move"));
    fx.create_topic(&topic, 1);
    produce_mixed(&fx, &topic);
    let mut c = fx.guard(&group).no_commit_interval().build().unwrap();
    c.subscribe(&[&topic]).unwrap();
    let before = recv_n(&mut c, 4, Duration::from_secs(30)).await;
    c.seek(&topic, 0, rdkafka::Offset::Offset(2)).await.unwrap();
    let after = recv_one(&mut c, WAIT).await;
    assert_eq!(after.offset(), 2);
    let want = expected();
    for (r, w) in before.iter().zip(&want) {
        assert_eq!((r.key(), r.payload()), (w.0, w.1));
        assert_eq!(headers_of(r.headers()), w.2);
    }
    let (first, rest): (Vec<_>, Vec<_>) = before.into_iter().partition(|r| r.offset() == 0);
    let first = first.into_iter().next().unwrap();
    assert_eq!(
        first.ack_token().ack(),
        AckStatus::Stale,
        "an ack of the old position"
    );
    after.ack();
    // The revoke: unsubscribe; then the held records of the old assignment.
    let landed = c.commit_now().await.unwrap();
    assert_eq!(landed[0].offset, 3);
    c.unsubscribe();
    common::wait_until(Duration::from_secs(30), "the revoke", || {
        c.partitions().is_empty()
    });
    for r in rest {
        assert_eq!(
            r.payload().map(<[u8]>::to_vec),
            r.message().payload().map(<[u8]>::to_vec)
        );
        assert_eq!(r.ack(), AckStatus::Stale);
    }
    assert_eq!(first.headers().map(|h| h.count()), Some(2));
    let report = c.shutdown().await.unwrap();
    assert!(report.abandoned.is_empty(), "{report:?}");
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(3)]);
}

/// The smallest backlog and an application slower than the poll thread:
/// partitions are paused and resumed, and every record arrives once, in
/// order per partition; then a shutdown while the poll thread waits on the
/// full backlog returns promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_application_with_the_smallest_backlog_gets_everything_once_in_order() {
    let fx = Fixture::any();
    let (topic, group) = (unique("held-slow"), unique("g-held-slow"));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 2_500, 0);
    let mut c = fx
        .guard(&group)
        .no_commit_interval()
        .prefetch_batches(1)
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let mut seen: HashMap<i32, Vec<i64>> = HashMap::new();
    let mut got = 0;
    while got < 5_000 {
        // Slow work between bursts: the backlog (1,024) fills meanwhile.
        for r in recv_n(&mut c, 500, Duration::from_secs(60)).await {
            seen.entry(r.partition()).or_default().push(r.offset());
            r.ack();
        }
        got += 500;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for p in 0..2 {
        assert_eq!(seen[&p], (0..2_500).collect::<Vec<_>>(), "partition {p}");
    }
    assert!(c.stats().partitions_paused >= 1, "{:?}", c.stats());
    c.commit_now().await.unwrap();
    assert_eq!(
        fx.committed(&group, &topic, 2),
        vec![Some(2_500), Some(2_500)]
    );
    // A full backlog again, nobody receiving; then shutdown.
    fx.produce(&topic, 2, 1_500, 2_500);
    common::wait_until(Duration::from_secs(30), "a full backlog paused", || {
        c.stats().delivered >= 5_000 + 1_024
    });
    let started = Instant::now();
    let report = c.shutdown().await.unwrap();
    let took = started.elapsed();
    assert!(report.not_committed.is_empty(), "{report:?}");
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
}
