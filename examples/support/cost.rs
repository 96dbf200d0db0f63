//! Shared by the progress cost examples (`progress_cost`, `progress_cost_pg`):
//! the settings of a run, the median, and the topic of the consumer path.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Runs of each measurement (without and with in turn); the median is shown.
pub const REPEATS: usize = 3;
/// Records per transaction in the batch modes.
pub const BATCH: usize = 100;
/// Partitions of the consumer path's topic `cost`.
pub const PARTITIONS: i32 = 4;

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A fresh embedded cluster (the group starts at offset 0) with `records`
/// records of 100 B in the topic `cost`, spread over [`PARTITIONS`].
pub fn cluster_with(
    records: i64,
) -> Res<MockCluster<'static, rdkafka::producer::DefaultProducerContext>> {
    let cluster = MockCluster::new(1)?;
    cluster.create_topic("cost", PARTITIONS, 1)?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()?;
    let payload = [b'x'; 100];
    for n in 0..records {
        let rec = BaseRecord::<(), _>::to("cost")
            .partition((n % PARTITIONS as i64) as i32)
            .payload(&payload[..]);
        if let Err((e, _)) = producer.send(rec) {
            producer.flush(Duration::from_secs(10))?;
            return Err(e.into());
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(cluster)
}

/// The consumer's settings: group `cost`, from the start, everything
/// prefetched (no fetch back-off stall; BENCHMARKS.md, section 8).
pub fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "cost")
        .set("auto.offset.reset", "earliest")
        .set("queued.min.messages", "1000000");
    config
}
