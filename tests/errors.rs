//! What the caller sees (issue 13): consumer errors reach `recv()` as typed
//! errors within a bounded time and the consumer keeps working once the cause
//! is gone; a wrapped context's `commit_callback` hears every commit attempt.
//!
//! Committed offsets are read back from the broker. Tests built on
//! `Fixture::any()` also run on Tansu (see TESTING.md).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Fixture, recv_n, unique};
use offset_guard::{Error, GuardedConsumer, OffsetGuard, Record};
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaResult, RDKafkaErrorCode};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};

/// One `commit_callback` call: the outcome and the offsets sent.
type Call = (Result<(), String>, Vec<(i32, i64)>);

/// A user context that records every `commit_callback` call: the outcome and
/// the offsets sent.
#[derive(Clone, Default)]
struct Counting {
    calls: Arc<Mutex<Vec<Call>>>,
}

impl ClientContext for Counting {}

impl ConsumerContext for Counting {
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let sent = offsets
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect();
        let result = result.map_err(|e| e.to_string());
        self.calls.lock().unwrap().push((result, sent));
    }
}

/// Every commit the guard sends reaches the wrapped context's
/// `commit_callback` with its outcome: N commits that landed (read back from
/// the broker) give N `Ok` calls with the offsets that landed; a refused
/// commit gives an `Err` call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrapped_commit_callback_hears_every_commit_attempt() {
    let fx = Fixture::any();
    let (topic, group) = (unique("err-cb"), unique("g-err-cb"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 10, 0);
    let ctx = Counting::default();
    let calls = ctx.calls.clone();
    let mut c = fx
        .guard(&group)
        .retry(common::fast_retry(1))
        .no_commit_interval()
        .context(ctx)
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let records = recv_n(&mut c, 10, Duration::from_secs(30)).await;
    let mut records = records.into_iter();
    for n in 1..=4i64 {
        let r = records.next().unwrap();
        assert_eq!(r.offset(), n - 1);
        r.ack();
        let committed = c.commit_now().await.unwrap();
        assert_eq!(committed.len(), 1);
        assert_eq!(fx.committed(&group, &topic, 1), vec![Some(n)], "landed");
    }
    {
        let calls = calls.lock().unwrap();
        let ok: Vec<_> = calls
            .iter()
            .filter(|(r, _)| r.is_ok())
            .map(|(_, o)| o.clone())
            .collect();
        assert_eq!(
            ok,
            vec![vec![(0, 1)], vec![(0, 2)], vec![(0, 3)], vec![(0, 4)]],
            "one Ok call per landed commit, with its offsets; all calls {calls:?}"
        );
    }
    if fx.is_mock() {
        // A refused commit (fatal class: not retried) is an Err call.
        fx.fail_commits(
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE,
            1,
        );
        records.next().unwrap().ack();
        assert!(c.commit_now().await.is_err());
        let calls = calls.lock().unwrap();
        let (last, sent) = calls.last().unwrap();
        assert!(last.is_err(), "the refusal is reported: {calls:?}");
        assert_eq!(sent, &vec![(0, 5)]);
        assert_eq!(fx.committed(&group, &topic, 1), vec![Some(4)]);
    }
    c.shutdown().await.unwrap();
}

/// The first error `recv` returns within `within`, and when; fails on a record
/// or a stop.
async fn next_error<C: ConsumerContext + 'static>(
    c: &mut GuardedConsumer<C>,
    within: Duration,
) -> (Error, Duration) {
    let started = Instant::now();
    match tokio::time::timeout(within, c.recv()).await {
        Ok(Err(e)) => (e, started.elapsed()),
        Ok(Ok(Some(r))) => panic!("a record came first: {r:?}"),
        Ok(Ok(None)) => panic!("the consumer stopped"),
        Err(_) => panic!("no error within {within:?}"),
    }
}

/// `n` records within `timeout`, with the transient errors returned on the
/// way (a non-transient one fails the test).
async fn records_through_errors<C: ConsumerContext + 'static>(
    c: &mut GuardedConsumer<C>,
    n: usize,
    timeout: Duration,
) -> (Vec<Record>, Vec<Error>) {
    let (mut records, mut errors) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + timeout;
    while records.len() < n {
        match tokio::time::timeout_at(deadline, c.recv()).await {
            Ok(Ok(Some(r))) => records.push(r),
            Ok(Err(e)) if e.is_transient() => errors.push(e),
            other => panic!(
                "after {} of {n} records and errors {errors:?}: {:?}",
                records.len(),
                other.map(|x| x.map(|r| r.map(|r| r.offset())))
            ),
        }
    }
    (records, errors)
}

/// The bootstrap address does not resolve: `recv` returns
/// `BrokersUnreachable` once the outage lasted `brokers_unreachable_after`
/// (2 s here), then again at most once per period while it lasts; the
/// consumer keeps running and shuts down within its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_bootstrap_address_is_a_typed_error_in_bounded_time() {
    common::init_tracing();
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", "nonexistent.invalid:9092")
        .set("group.id", unique("g-err-resolve"));
    let period = Duration::from_secs(2);
    let mut c = OffsetGuard::builder(cfg)
        .brokers_unreachable_after(period)
        .shutdown_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    c.subscribe(&["t"]).unwrap();
    let (e, after) = next_error(&mut c, Duration::from_secs(15)).await;
    let Error::BrokersUnreachable {
        down_for,
        last_error,
    } = &e
    else {
        panic!("expected BrokersUnreachable, got {e:?}");
    };
    assert!(*down_for >= period, "{down_for:?}");
    assert!(e.is_transient() && !e.is_fatal());
    println!("after {after:?}: {e} (last error {last_error:?})");
    // Still down: surfaced again, one period later at the earliest.
    let (again, between) = next_error(&mut c, Duration::from_secs(15)).await;
    assert!(
        matches!(&again, Error::BrokersUnreachable { down_for: d, .. } if *d >= *down_for + period),
        "{again:?}"
    );
    assert!(
        between >= period - Duration::from_millis(100),
        "{between:?}"
    );
    let stats = c.stats();
    assert_eq!(stats.errors_surfaced, 2);
    assert!(stats.consumer_errors >= 2);
    let started = Instant::now();
    c.shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Records flow, then every broker goes down: `recv` returns
/// `BrokersUnreachable` within a bound; the brokers come back: records flow
/// again (none delivered twice) and commits land (read back from the broker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_brokers_down_is_a_typed_error_and_the_consumer_recovers() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("err-down"), unique("g-err-down"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 10, 0);
    let period = Duration::from_secs(2);
    let mut cfg = fx.config(&group);
    // Reconnect quickly once the broker is back (librdkafka's default backoff
    // grows to 10 s).
    cfg.set("reconnect.backoff.max.ms", "500");
    let mut c = OffsetGuard::builder(cfg)
        .retry(common::fast_retry(5))
        .no_commit_interval()
        .brokers_unreachable_after(period)
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    for r in recv_n(&mut c, 10, Duration::from_secs(30)).await {
        r.ack();
    }
    c.commit_now().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(10)]);

    fx.mock_cluster().broker_down(1).unwrap();
    let (e, after) = next_error(&mut c, Duration::from_secs(20)).await;
    assert!(
        matches!(&e, Error::BrokersUnreachable { down_for, .. } if *down_for >= period),
        "{e:?}"
    );
    println!("broker down: {e} after {after:?}");

    fx.mock_cluster().broker_up(1).unwrap();
    fx.produce(&topic, 1, 10, 10);
    let (records, errors) = records_through_errors(&mut c, 10, Duration::from_secs(40)).await;
    let offsets: Vec<i64> = records.iter().map(|r| r.offset()).collect();
    assert_eq!(
        offsets,
        (10..20).collect::<Vec<_>>(),
        "none again, none missing"
    );
    for r in records {
        r.ack();
    }
    c.commit_now().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(20)]);
    println!("broker back: records 10..20, commit landed at 20; errors on the way {errors:?}");
    c.shutdown().await.unwrap();
}

/// The group's coordinator lookup is refused with GROUP_AUTHORIZATION_FAILED:
/// `recv` returns `AuthFailed` at once; when the refusals stop, records flow
/// and commits land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_failure_is_a_typed_error_and_work_resumes_once_allowed() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("err-auth"), unique("g-err-auth"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 5, 0);
    fx.mock_cluster().request_errors(
        RDKafkaApiKey::FindCoordinator,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED; 3],
    );
    let mut c = fx.guard(&group).no_commit_interval().build().unwrap();
    c.subscribe(&[&topic]).unwrap();
    // Nobody is in recv when it happens: the error waits for the next recv.
    common::wait_until(Duration::from_secs(10), "an error surfaced", || {
        c.stats().errors_surfaced >= 1
    });
    let (e, after) = next_error(&mut c, Duration::from_millis(500)).await;
    assert!(
        matches!(
            &e,
            Error::AuthFailed {
                code: RDKafkaErrorCode::GroupAuthorizationFailed,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_transient());
    println!("{e} after {after:?}");
    let (records, errors) = records_through_errors(&mut c, 5, Duration::from_secs(30)).await;
    for r in records {
        r.ack();
    }
    c.commit_now().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(5)]);
    println!("allowed again: 5 records, committed 5; errors on the way {errors:?}");
    c.shutdown().await.unwrap();
}

/// The group's committed offsets of a topic are refused with
/// TOPIC_AUTHORIZATION_FAILED: `recv` returns `AuthFailed` naming the topic,
/// with librdkafka's description. (librdkafka does not fetch that partition
/// again by itself afterwards, so no recovery is asserted here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_authorization_failure_is_a_typed_error_naming_the_topic() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("err-tauth"), unique("g-err-tauth"));
    fx.create_topic(&topic, 1);
    fx.mock_cluster().request_errors(
        RDKafkaApiKey::OffsetFetch,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 4],
    );
    let mut c = fx.guard(&group).no_commit_interval().build().unwrap();
    c.subscribe(&[&topic]).unwrap();
    // librdkafka reports the refusal twice: for the group (no topic in its
    // description), then for the partition (naming the topic).
    let started = Instant::now();
    let mut seen = Vec::new();
    let named = loop {
        let left = Duration::from_secs(10).saturating_sub(started.elapsed());
        let (e, _) = next_error(&mut c, left).await;
        match &e {
            Error::AuthFailed {
                code: RDKafkaErrorCode::TopicAuthorizationFailed,
                topics,
                reason,
            } if !topics.is_empty() => {
                assert_eq!(topics, &vec![topic.clone()], "{e}");
                assert!(reason.as_deref().is_some_and(|r| r.contains(&topic)), "{e}");
                break e;
            }
            Error::AuthFailed {
                code: RDKafkaErrorCode::TopicAuthorizationFailed,
                ..
            } => seen.push(e),
            other => panic!("expected AuthFailed, got {other:?}"),
        }
    };
    assert!(named.to_string().contains(&topic));
    let (e, after) = (named, started.elapsed());
    println!("before it: {seen:?}");
    println!("{e} after {after:?}");
    c.shutdown().await.unwrap();
}

/// A subscription to a topic that does not exist (and is not auto-created):
/// `recv` returns `UnknownTopic` naming it; once the topic is created, its
/// partitions are assigned, records flow and commits land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_topic_is_a_typed_error_naming_it_and_is_consumed_once_created() {
    let fx = Fixture::any();
    let (topic, group) = (unique("err-unknown"), unique("g-err-unknown"));
    let mut cfg = fx.config(&group);
    // The topic is found by librdkafka's periodic metadata refresh. Not
    // 1,000 ms: MockCluster answers a JoinGroup after 3,000 ms, so a 1 s
    // refresh lands while the leader waits for the assignor's metadata, and
    // librdkafka then rejoins (rdkafka_cgrp.c, "subscription updated from
    // metadata change ... in state wait-metadata"); measured with a plain
    // BaseConsumer (no offset-guard): 4 to over 40 s to the first record at
    // 1,000 ms, 3.65 s in 8 of 8 runs at 700 ms.
    cfg.set("allow.auto.create.topics", "false")
        .set("topic.metadata.refresh.interval.ms", "700");
    let mut c = OffsetGuard::builder(cfg)
        .retry(common::fast_retry(5))
        .no_commit_interval()
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let (e, after) = next_error(&mut c, Duration::from_secs(15)).await;
    match &e {
        Error::UnknownTopic { topics, .. } => assert_eq!(topics, &vec![topic.clone()]),
        other => panic!("expected UnknownTopic, got {other:?}"),
    }
    println!("{e} after {after:?}");
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 5, 0);
    let (records, errors) = records_through_errors(&mut c, 5, Duration::from_secs(40)).await;
    for r in records {
        r.ack();
    }
    c.commit_now().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(5)]);
    println!("created: 5 records, committed 5; errors on the way {errors:?}");
    c.shutdown().await.unwrap();
}
