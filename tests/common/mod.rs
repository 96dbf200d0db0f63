//! Shared test fixture: one broker per test, either rdkafka's embedded
//! `MockCluster` (default) or a real broker named by `OFFSET_GUARD_BOOTSTRAP`
//! (Tansu in CI), so one test body runs on both.
//!
//! Committed offsets are always read back from the broker, never from the
//! guard's own state.
#![allow(dead_code)]

pub mod exactly_once;
pub mod group;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use offset_guard::{GuardBuilder, OffsetGuard, RetryPolicy};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The environment variable naming a real broker's bootstrap address.
pub const BOOTSTRAP_ENV: &str = "OFFSET_GUARD_BOOTSTRAP";

pub enum Broker {
    Mock(MockCluster<'static, DefaultProducerContext>),
    External(String),
}

pub struct Fixture {
    pub broker: Broker,
    bootstrap: String,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A name unique to this process run (topics and groups of one test never meet another's).
pub fn unique(prefix: &str) -> String {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!("{prefix}-{}-{t}-{n}", std::process::id())
}

/// Installs a test subscriber once (RUST_LOG controls it); library code never does.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

impl Fixture {
    /// A real broker when `OFFSET_GUARD_BOOTSTRAP` is set, else a MockCluster.
    pub fn any() -> Fixture {
        init_tracing();
        match std::env::var(BOOTSTRAP_ENV) {
            Ok(b) if !b.trim().is_empty() => Fixture {
                bootstrap: b.clone(),
                broker: Broker::External(b),
            },
            _ => Fixture::mock(),
        }
    }

    /// Always a MockCluster (tests that inject errors).
    pub fn mock() -> Fixture {
        Fixture::mock_with(1)
    }

    pub fn mock_with(brokers: i32) -> Fixture {
        init_tracing();
        let cluster = MockCluster::new(brokers).expect("mock cluster");
        Fixture {
            bootstrap: cluster.bootstrap_servers(),
            broker: Broker::Mock(cluster),
        }
    }

    pub fn is_mock(&self) -> bool {
        matches!(self.broker, Broker::Mock(_))
    }

    pub fn kind(&self) -> &'static str {
        if self.is_mock() {
            "MockCluster"
        } else {
            "external"
        }
    }

    pub fn mock_cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        match &self.broker {
            Broker::Mock(c) => c,
            Broker::External(_) => panic!("this test needs a MockCluster"),
        }
    }

    /// The next `times` OffsetCommit requests fail with `err` (MockCluster only).
    pub fn fail_commits(&self, err: RDKafkaRespErr, times: usize) {
        self.mock_cluster()
            .request_errors(RDKafkaApiKey::OffsetCommit, &vec![err; times]);
    }

    /// OffsetCommit requests are answered normally again (MockCluster only).
    pub fn clear_commit_errors(&self) {
        self.mock_cluster()
            .clear_request_errors(RDKafkaApiKey::OffsetCommit);
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        match &self.broker {
            Broker::Mock(c) => c.create_topic(topic, partitions, 1).expect("create topic"),
            Broker::External(b) => {
                // On a thread of its own: callers may be inside a tokio runtime.
                let (b, t) = (b.clone(), topic.to_string());
                std::thread::spawn(move || {
                    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                        .set("bootstrap.servers", &b)
                        .create()
                        .expect("admin client");
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    let res = rt
                        .block_on(admin.create_topics(
                            &[NewTopic::new(&t, partitions, TopicReplication::Fixed(1))],
                            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
                        ))
                        .expect("create_topics");
                    for r in res {
                        r.map_err(|(t, e)| format!("creating {t}: {e}")).unwrap();
                    }
                })
                .join()
                .expect("topic creation");
                // wait until metadata shows every partition
                let c = self.reader("metadata");
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let ready = c
                        .fetch_metadata(Some(topic), Duration::from_secs(5))
                        .is_ok_and(|md| {
                            md.topics().iter().any(|t| {
                                t.name() == topic && t.partitions().len() == partitions as usize
                            })
                        });
                    if ready {
                        break;
                    }
                    assert!(Instant::now() < deadline, "topic {topic} never appeared");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    pub fn producer(&self) -> BaseProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("linger.ms", "5")
            .create()
            .expect("producer")
    }

    /// Produces `per_partition` records to each partition; payload "p{partition}-{n}"
    /// with `n` counting from `start`.
    pub fn produce(&self, topic: &str, partitions: i32, per_partition: usize, start: usize) {
        let p = self.producer();
        for n in start..start + per_partition {
            for part in 0..partitions {
                let payload = format!("p{part}-{n}");
                let mut rec = BaseRecord::<(), str>::to(topic)
                    .partition(part)
                    .payload(&payload);
                loop {
                    match p.send(rec) {
                        Ok(()) => break,
                        Err((e, r)) => {
                            assert!(
                                matches!(
                                    e,
                                    rdkafka::error::KafkaError::MessageProduction(
                                        rdkafka::types::RDKafkaErrorCode::QueueFull
                                    )
                                ),
                                "produce: {e}"
                            );
                            p.poll(Duration::from_millis(10));
                            rec = r;
                        }
                    }
                }
            }
            p.poll(Duration::ZERO);
        }
        p.flush(Duration::from_secs(30)).expect("flush");
    }

    /// The consumer config a service would already have.
    pub fn config(&self, group: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500");
        c
    }

    /// A guard builder with fast retries, for tests.
    pub fn guard(&self, group: &str) -> GuardBuilder {
        OffsetGuard::builder(self.config(group)).retry(fast_retry(5))
    }

    fn reader(&self, group: &str) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader consumer")
    }

    /// The group's committed offsets per partition, read from the broker by a
    /// separate client (`None`: nothing committed).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
        if let Some(v) = self.committed_external(group, topic, partitions) {
            return v;
        }
        let c = self.reader(group);
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let got = c
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        let v = (0..partitions)
            .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            })
            .collect();
        drop(got); // before the consumer: a live list makes its drop hang
        v
    }

    /// With `OFFSET_GUARD_CHECKER` set (a command, e.g. `.tools/venv/bin/python
    /// scripts/committed.py`), committed offsets are read by that independent
    /// client (Python confluent-kafka) instead of rdkafka.
    fn committed_external(
        &self,
        group: &str,
        topic: &str,
        partitions: i32,
    ) -> Option<Vec<Option<i64>>> {
        let checker = std::env::var("OFFSET_GUARD_CHECKER")
            .ok()
            .filter(|s| !s.trim().is_empty())?;
        if self.is_mock() {
            return None;
        }
        let mut parts = checker.split_whitespace();
        let prog = parts.next()?;
        let out = std::process::Command::new(prog)
            .args(parts)
            .args([
                "--bootstrap",
                &self.bootstrap,
                "--group",
                group,
                "--topic",
                topic,
            ])
            .args(["--partitions", &partitions.to_string()])
            .output()
            .expect("run the committed-offset checker");
        assert!(
            out.status.success(),
            "checker failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        Some(parse_checker_output(&text, partitions))
    }

    /// The high watermark (next offset) of each partition.
    pub fn high_watermarks(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let c = self.reader("watermarks");
        (0..partitions)
            .map(|p| {
                c.fetch_watermarks(topic, p, Duration::from_secs(10))
                    .expect("watermarks")
                    .1
            })
            .collect()
    }
}

/// Parses `{"topic": T, "offsets": {"0": 12, "1": -1001}}` without a JSON dependency.
fn parse_checker_output(text: &str, partitions: i32) -> Vec<Option<i64>> {
    let start = text.find("\"offsets\"").expect("offsets in checker output");
    let body = &text[start..];
    let open = body.find('{').unwrap();
    let close = body.find('}').unwrap();
    let mut map = BTreeMap::new();
    for pair in body[open + 1..close].split(',') {
        let mut kv = pair.split(':');
        let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
            continue;
        };
        let k: i32 = k.trim().trim_matches('"').parse().expect("partition");
        let v: i64 = v.trim().parse().expect("offset");
        map.insert(k, v);
    }
    (0..partitions)
        .map(|p| map.get(&p).copied().filter(|o| *o >= 0))
        .collect()
}

pub fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy::exponential()
        .initial_interval(Duration::from_millis(20))
        .max_interval(Duration::from_millis(200))
        .max_attempts(attempts)
        .max_elapsed(Duration::from_secs(10))
}

/// Waits until `f` holds, polling every 50 ms; panics after `timeout` with `what`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Receives `n` records, failing the test on an error, a stop or the timeout.
pub async fn recv_n<C: rdkafka::consumer::ConsumerContext + 'static>(
    c: &mut offset_guard::GuardedConsumer<C>,
    n: usize,
    timeout: Duration,
) -> Vec<offset_guard::Record> {
    let mut out = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + timeout;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, c.recv()).await {
            Ok(Ok(Some(r))) => out.push(r),
            Ok(Ok(None)) => panic!("consumer stopped after {} of {n} records", out.len()),
            Ok(Err(e)) => panic!("recv error after {} records: {e}", out.len()),
            Err(_) => panic!("timed out after {} of {n} records", out.len()),
        }
    }
    out
}

/// Receives one record ([`recv_n`] of 1).
pub async fn recv_one<C: rdkafka::consumer::ConsumerContext + 'static>(
    c: &mut offset_guard::GuardedConsumer<C>,
    timeout: Duration,
) -> offset_guard::Record {
    recv_n(c, 1, timeout).await.pop().unwrap()
}

/// Drops `value` on a thread of its own and fails unless the drop returns
/// within 10 s (a record's drop may destroy librdkafka's client).
pub fn drop_elsewhere<T: Send + 'static>(value: T, what: &str) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(value);
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// A consumer set up to watch commits fail: its own topic and group, fast
/// retries (`attempts`), no periodic commits, a memory sink and a durable log
/// at a fresh path; subscribed, with every produced record received.
pub struct Injected {
    pub topic: String,
    pub group: String,
    pub sink: offset_guard::MemorySink,
    pub log_path: std::path::PathBuf,
    pub consumer: offset_guard::GuardedConsumer,
    pub records: Vec<offset_guard::Record>,
}

impl Fixture {
    pub async fn injected(
        &self,
        name: &str,
        partitions: i32,
        per_partition: usize,
        attempts: u32,
    ) -> Injected {
        let (topic, group) = (unique(name), unique(&format!("g-{name}")));
        self.create_topic(&topic, partitions);
        self.produce(&topic, partitions, per_partition, 0);
        let sink = offset_guard::MemorySink::new();
        let log_path = std::env::temp_dir().join(format!("{group}.jsonl"));
        let _ = std::fs::remove_file(&log_path);
        let mut consumer = self
            .guard(&group)
            .retry(fast_retry(attempts))
            .no_commit_interval()
            .failure_sink(sink.clone())
            .failed_offset_log(&log_path)
            .build()
            .unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        let n = partitions as usize * per_partition;
        let records = recv_n(&mut consumer, n, Duration::from_secs(60)).await;
        Injected {
            topic,
            group,
            sink,
            log_path,
            consumer,
            records,
        }
    }
}
