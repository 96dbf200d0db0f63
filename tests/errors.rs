//! What the caller sees (issue 13): consumer errors reach `recv()` as typed
//! errors within a bounded time and the consumer keeps working once the cause
//! is gone; a wrapped context's `commit_callback` hears every commit attempt.
//!
//! Committed offsets are read back from the broker. Tests built on
//! `Fixture::any()` also run on Tansu (see TESTING.md).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Fixture, recv_n, unique};
use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaResult;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};

/// A user context that records every `commit_callback` call: the outcome and
/// the offsets sent.
#[derive(Clone, Default)]
struct Counting {
    calls: Arc<Mutex<Vec<(Result<(), String>, Vec<(i32, i64)>)>>>,
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
        fx.mock_cluster().request_errors(
            RDKafkaApiKey::OffsetCommit,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE],
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
