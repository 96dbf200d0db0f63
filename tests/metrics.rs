//! The `metrics` feature: a recorder installed before the guard sees every
//! counter, the commit latencies and the per-partition gauges, with the values
//! of a known sequence of acks, a commit that lands and one refused for good.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Fixture, recv_n, unique};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};
use offset_guard::{Error, MemorySink};
use rdkafka::types::RDKafkaRespErr;

type Series = HashMap<(MetricKind, String, Vec<(String, String)>), DebugValue>;

fn series(
    snapshot: Vec<(
        CompositeKey,
        Option<metrics::Unit>,
        Option<metrics::SharedString>,
        DebugValue,
    )>,
) -> Series {
    snapshot
        .into_iter()
        .map(|(k, _, _, v)| {
            let (kind, key) = k.into_parts();
            let mut labels: Vec<_> = key
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            labels.sort();
            ((kind, key.name().to_string(), labels), v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_gauges_and_latencies_after_acks_a_commit_and_a_refusal() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    let fx = Fixture::mock();
    let (topic, group) = (unique("metrics"), unique("g-metrics"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 30, 0);
    let sink = MemorySink::new();
    let mut c = fx
        .guard(&group)
        .no_commit_interval()
        .failure_sink(sink.clone())
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let records = recv_n(&mut c, 30, Duration::from_secs(30)).await;
    for r in &records[..20] {
        r.ack_token().ack();
    }
    c.commit_now().await.unwrap();
    for r in &records[20..] {
        r.ack_token().ack();
    }
    fx.fail_commits(
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        1,
    );
    let refused = c.commit_now().await;
    assert!(
        matches!(refused, Err(Error::CommitFailed { .. })),
        "{refused:?}"
    );
    assert_eq!(sink.records().len(), 1);

    let s = series(snapshotter.snapshot().into_vec());
    let g = || vec![("group".to_string(), group.clone())];
    let counter = |name: &str| match s.get(&(MetricKind::Counter, name.to_string(), g())) {
        Some(DebugValue::Counter(v)) => *v,
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(counter("offset_guard_delivered_total"), 30);
    assert_eq!(counter("offset_guard_acked_total"), 30);
    assert_eq!(counter("offset_guard_commits_sent_total"), 2);
    assert_eq!(counter("offset_guard_commits_succeeded_total"), 1);
    assert_eq!(counter("offset_guard_commits_failed_total"), 1);
    assert_eq!(counter("offset_guard_offsets_failed_total"), 1);
    assert_eq!(counter("offset_guard_commits_retried_total"), 0);
    assert_eq!(counter("offset_guard_assigns_total"), 1);
    // Stats::failed_log_dropped, exported even without a log.
    assert_eq!(counter("offset_guard_failed_log_dropped_total"), 0);

    let mut labels = g();
    labels.push(("partition".into(), "0".into()));
    labels.push(("topic".into(), topic.clone()));
    labels.sort();
    let gauge = |name: &str| match s.get(&(MetricKind::Gauge, name.to_string(), labels.clone())) {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(gauge("offset_guard_committed_offset"), 20.0);
    assert_eq!(gauge("offset_guard_commit_point"), 30.0);
    assert_eq!(gauge("offset_guard_outstanding_records"), 0.0);
    assert_eq!(gauge("offset_guard_log_end_offset"), 30.0);
    assert_eq!(gauge("offset_guard_lag_records"), 10.0);

    let histogram = |name: &str| match s.get(&(MetricKind::Histogram, name.to_string(), g())) {
        Some(DebugValue::Histogram(v)) => v.len(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(histogram("offset_guard_commit_attempt_duration_seconds"), 2);
    assert_eq!(histogram("offset_guard_commit_duration_seconds"), 1);

    // Partitions report the same lag through the API.
    let p = &c.partitions()[0];
    assert_eq!(
        (p.committed, p.log_end, p.lag),
        (Some(20), Some(30), Some(10))
    );
    c.shutdown().await.unwrap();
}
