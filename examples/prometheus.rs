//! Metrics for Prometheus: a guard on an embedded MockCluster with the
//! `metrics-exporter-prometheus` recorder installed; prints the scrape output
//! after acks, a commit that lands and one the broker refuses for good.
//!
//! `cargo run --example prometheus --features metrics`
//!
//! Exits non-zero if a documented series is missing from the scrape.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use offset_guard::{MemorySink, OffsetGuard, RetryPolicy};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A service installs its recorder first, then builds its components.
    let recorder = PrometheusBuilder::new().build_recorder();
    let scrape = recorder.handle();
    metrics::set_global_recorder(recorder)?;

    let cluster = MockCluster::new(1)?;
    cluster.create_topic("orders", 2, 1)?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()?;
    for i in 0..40 {
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

    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "billing")
        .set("auto.offset.reset", "earliest");
    let sink = MemorySink::new();
    let mut consumer = OffsetGuard::builder(config)
        .retry(RetryPolicy::exponential().max_attempts(3))
        .no_commit_interval()
        .failure_sink(sink.clone())
        .build()?;
    consumer.subscribe(&["orders"])?;

    // 30 of the 40 records processed and committed.
    for _ in 0..30 {
        let record = consumer.recv().await?.ok_or("consumer stopped")?;
        record.ack();
    }
    consumer.commit_now().await?;
    // The other 10, then a commit the broker refuses for good.
    for _ in 0..10 {
        let record = consumer.recv().await?.ok_or("consumer stopped")?;
        record.ack();
    }
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    let refused = consumer.commit_now().await;
    println!(
        "second commit: {refused:?}; failure sink holds {}",
        sink.records().len()
    );

    let text = scrape.render();
    println!("{text}");
    let mut missing = Vec::new();
    for name in [
        "offset_guard_acked_total",
        "offset_guard_commits_sent_total",
        "offset_guard_commits_succeeded_total",
        "offset_guard_commits_failed_total",
        "offset_guard_offsets_failed_total",
        "offset_guard_committed_offset",
        "offset_guard_commit_point",
        "offset_guard_outstanding_records",
        "offset_guard_log_end_offset",
        "offset_guard_lag_records",
        "offset_guard_commit_attempt_duration_seconds",
        "offset_guard_commit_duration_seconds",
    ] {
        if !text.contains(name) {
            missing.push(name);
        }
    }
    consumer.shutdown().await?;
    drop(producer);
    if !missing.is_empty() {
        return Err(format!("missing from the scrape: {missing:?}").into());
    }
    Ok(())
}
