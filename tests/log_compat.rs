//! With the default `log` feature, a service that logs through the `log`
//! crate (env_logger and the like, as rust-rdkafka's examples do) and installs
//! no `tracing` subscriber sees the guard's warnings, with the fields an
//! on-call engineer needs.

use std::sync::Mutex;
use std::time::Duration;

use offset_guard::{Error, OffsetGuard, RetryPolicy};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// An env_logger-style logger that keeps what it is given.
struct Capture(Mutex<Vec<(log::Level, String, String)>>);

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let entry = (r.level(), r.target().to_string(), r.args().to_string());
            self.0.lock().unwrap().push(entry);
        }
    }
    fn flush(&self) {}
}

static LOGGER: Capture = Capture(Mutex::new(Vec::new()));

#[tokio::test]
async fn a_given_up_commit_reaches_a_log_logger_with_its_fields() {
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Warn);

    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("orders", 1, 1).unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()
        .unwrap();
    producer
        .send(BaseRecord::<(), _>::to("orders").payload("one"))
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(5)).unwrap();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "billing")
        .set("auto.offset.reset", "earliest");
    let mut consumer = OffsetGuard::builder(config)
        .retry(RetryPolicy::none())
        .no_commit_interval()
        .build()
        .unwrap();
    consumer.subscribe(&["orders"]).unwrap();
    let record = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    record.ack();
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED],
    );
    let err = consumer.commit_now().await.unwrap_err();
    assert!(matches!(err, Error::CommitFailed { .. }), "{err:?}");
    consumer.shutdown().await.unwrap();

    let logged = LOGGER.0.lock().unwrap().clone();
    let given_up = logged
        .iter()
        .find(|(_, _, msg)| msg.contains("giving up on offset commit"))
        .unwrap_or_else(|| panic!("no warning reached the logger: {logged:#?}"));
    assert_eq!(given_up.0, log::Level::Warn);
    assert!(given_up.1.starts_with("offset_guard"), "{given_up:?}");
    for field in [
        "group=billing",
        "topic=orders",
        "partition=0",
        "offset=1",
        "error_code=Some(GroupAuthorizationFailed)",
        "attempts=1",
    ] {
        assert!(
            given_up.2.contains(field),
            "{field} missing in {:?}",
            given_up.2
        );
    }
}
