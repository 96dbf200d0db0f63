//! Multi-consumer harness for rebalance tests: members of one group running as
//! tokio tasks, a ledger of every processed record, a producer thread that
//! keeps records flowing, and a monitor that watches the group's committed
//! offsets on the broker for any step backwards.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use offset_guard::{AckStatus, Assigned, GuardBuilder, Lost, Revoked, ShutdownReport, Stats};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::oneshot;

use super::Fixture;

/// One processing of a record.
#[derive(Debug, Clone)]
pub struct Seen {
    pub member: String,
    pub status: AckStatus,
}

/// Every record processed by any member, with who processed it and how the ack went.
#[derive(Default)]
pub struct Ledger {
    seen: Mutex<HashMap<(i32, i64), Vec<Seen>>>,
    by_member: Mutex<HashMap<String, u64>>,
}

impl Ledger {
    pub fn record(&self, member: &str, partition: i32, offset: i64, status: AckStatus) {
        self.seen
            .lock()
            .unwrap()
            .entry((partition, offset))
            .or_default()
            .push(Seen {
                member: member.to_string(),
                status,
            });
        *self
            .by_member
            .lock()
            .unwrap()
            .entry(member.to_string())
            .or_default() += 1;
    }

    /// Records processed by `member` so far.
    pub fn processed_by(&self, member: &str) -> u64 {
        self.by_member
            .lock()
            .unwrap()
            .get(member)
            .copied()
            .unwrap_or(0)
    }

    /// Distinct records processed.
    pub fn distinct(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Produced records (below each partition's high watermark) never processed.
    pub fn missing(&self, high_watermarks: &[i64]) -> Vec<(i32, i64)> {
        let seen = self.seen.lock().unwrap();
        let mut v = Vec::new();
        for (p, hw) in high_watermarks.iter().enumerate() {
            for o in 0..*hw {
                if !seen.contains_key(&(p as i32, o)) {
                    v.push((p as i32, o));
                }
            }
        }
        v
    }

    /// Every extra processing of a record: (partition, offset, times processed).
    pub fn duplicates(&self) -> Vec<(i32, i64, usize)> {
        let seen = self.seen.lock().unwrap();
        let mut v: Vec<_> = seen
            .iter()
            .filter(|(_, s)| s.len() > 1)
            .map(|((p, o), s)| (*p, *o, s.len()))
            .collect();
        v.sort();
        v
    }

    /// Records processed again after an earlier processing whose ack was
    /// recorded (the guard had accepted the ack).
    pub fn duplicates_of_acked(&self) -> Vec<(i32, i64)> {
        let seen = self.seen.lock().unwrap();
        let mut v: Vec<_> = seen
            .iter()
            .filter(|(_, s)| {
                s.len() > 1
                    && s[..s.len() - 1]
                        .iter()
                        .any(|x| x.status == AckStatus::Recorded)
            })
            .map(|(k, _)| *k)
            .collect();
        v.sort();
        v
    }

    /// Total extra processings.
    pub fn duplicate_count(&self) -> usize {
        self.duplicates().iter().map(|(_, _, n)| n - 1).sum()
    }
}

/// What a member's rebalance hooks saw.
#[derive(Debug, Clone)]
pub enum Event {
    Assigned(Assigned),
    Revoked(Revoked),
    Lost(Lost),
}

/// How a member ended.
pub struct MemberEnd {
    pub name: String,
    pub report: ShutdownReport,
    pub events: Vec<Event>,
}

impl MemberEnd {
    pub fn stats(&self) -> Stats {
        self.report.stats
    }
}

/// Adds hooks that keep every rebalance event the member sees.
fn with_events(builder: GuardBuilder) -> (GuardBuilder, Arc<Mutex<Vec<Event>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let (e1, e2, e3) = (events.clone(), events.clone(), events.clone());
    let builder = builder
        .on_assign(move |a| e1.lock().unwrap().push(Event::Assigned(a.clone())))
        .on_revoke(move |r| e2.lock().unwrap().push(Event::Revoked(r.clone())))
        .on_lost(move |l| e3.lock().unwrap().push(Event::Lost(l.clone())));
    (builder, events)
}

/// One consumer of the group, running as a task: receives, records in the
/// ledger, acks at once.
pub struct Member {
    pub name: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<ShutdownReport>,
    pub events: Arc<Mutex<Vec<Event>>>,
}

impl Member {
    /// Builds the guard from `builder` (hooks added here), subscribes to
    /// `topic` and starts consuming.
    pub fn start(name: &str, builder: GuardBuilder, topic: &str, ledger: Arc<Ledger>) -> Member {
        let (builder, events) = with_events(builder);
        let mut c = builder.build().expect("build guard");
        c.subscribe(&[topic]).expect("subscribe");
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let me = name.to_string();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    r = c.recv() => match r {
                        Ok(Some(rec)) => {
                            let (p, o) = (rec.partition(), rec.offset());
                            let status = rec.ack();
                            ledger.record(&me, p, o, status);
                        }
                        Ok(None) => break,
                        Err(e) => panic!("{me}: recv error: {e}"),
                    }
                }
            }
            c.shutdown().await.expect("shutdown")
        });
        Member {
            name: name.to_string(),
            stop: Some(stop_tx),
            task,
            events,
        }
    }

    /// The same member in own-loop mode: its own `StreamConsumer` loop
    /// (`recv`, `track`, ack), the guard beside it.
    pub fn start_own_loop(
        name: &str,
        builder: GuardBuilder,
        topic: &str,
        ledger: Arc<Ledger>,
    ) -> Member {
        use rdkafka::Message;
        use rdkafka::consumer::StreamConsumer;
        let (builder, events) = with_events(builder);
        let (consumer, guard) = builder
            .build_consumer::<StreamConsumer<offset_guard::GuardContext>>()
            .expect("build guard");
        consumer.subscribe(&[topic]).expect("subscribe");
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let me = name.to_string();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    r = consumer.recv() => match r {
                        Ok(m) => {
                            let token = guard.track(&m);
                            let (p, o) = (m.partition(), m.offset());
                            let status = token.ack();
                            ledger.record(&me, p, o, status);
                        }
                        Err(e) => panic!("{me}: recv error: {e}"),
                    }
                }
            }
            let report = guard.shutdown(&*consumer).await.expect("shutdown");
            // Leave the group off the executor (closing blocks).
            tokio::task::spawn_blocking(move || drop(consumer))
                .await
                .expect("close");
            report
        });
        Member {
            name: name.to_string(),
            stop: Some(stop_tx),
            task,
            events,
        }
    }

    /// Assign events seen so far.
    pub fn assigns(&self) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Event::Assigned(_)))
            .count()
    }

    /// Stops consuming and shuts the guard down (final commit, leave the group).
    pub async fn stop(mut self) -> MemberEnd {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let report = self.task.await.expect("member task");
        let events = self.events.lock().unwrap().clone();
        MemberEnd {
            name: self.name,
            report,
            events,
        }
    }
}

/// Counts delivery reports.
#[derive(Default, Clone)]
pub struct Deliveries {
    pub ok: Arc<std::sync::atomic::AtomicU64>,
    pub failed: Arc<std::sync::atomic::AtomicU64>,
    /// Per partition, the offset after the last record delivered.
    pub ends: Arc<Mutex<HashMap<i32, i64>>>,
}

impl rdkafka::client::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        match r {
            Ok(m) => {
                use rdkafka::Message;
                let mut ends = self.ends.lock().unwrap();
                let e = ends.entry(m.partition()).or_default();
                *e = (*e).max(m.offset() + 1);
                self.ok.fetch_add(1, Ordering::Relaxed)
            }
            Err((e, _)) => {
                eprintln!("feeder: delivery failed: {e}");
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Produces records round-robin to every partition in small batches until stopped.
pub struct Feeder {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
    deliveries: Deliveries,
}

impl Feeder {
    /// `per_round` records per partition, then a pause of `pause`.
    pub fn start(
        fx: &Fixture,
        topic: &str,
        partitions: i32,
        per_round: usize,
        pause: Duration,
    ) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let deliveries = Deliveries::default();
        let producer: rdkafka::producer::BaseProducer<Deliveries> = ClientConfig::new()
            .set("bootstrap.servers", fx.bootstrap())
            .set("linger.ms", "5")
            .create_with_context(deliveries.clone())
            .expect("producer");
        let (topic, s) = (topic.to_string(), stop.clone());
        let handle = std::thread::spawn(move || {
            let mut sent = 0u64;
            while !s.load(Ordering::Relaxed) {
                for _ in 0..per_round {
                    for p in 0..partitions {
                        let payload = format!("p{p}-{sent}");
                        let mut rec = BaseRecord::<(), str>::to(&topic)
                            .partition(p)
                            .payload(&payload);
                        loop {
                            match producer.send(rec) {
                                Ok(()) => break,
                                Err((_, r)) => {
                                    producer.poll(Duration::from_millis(10));
                                    rec = r;
                                }
                            }
                        }
                        sent += 1;
                    }
                }
                producer.poll(Duration::ZERO);
                std::thread::sleep(pause);
            }
            producer.flush(Duration::from_secs(30)).expect("flush");
            sent
        });
        Feeder {
            stop,
            handle,
            deliveries,
        }
    }

    /// Stops producing; returns, per partition, the offset after the last
    /// record the broker acknowledged (asserting that every record sent was).
    /// Taken from delivery reports: Tansu's high watermark can trail the last
    /// batch (see TESTING.md).
    pub fn stop(self, partitions: i32) -> Vec<i64> {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.handle.join().expect("feeder");
        let ok = self.deliveries.ok.load(Ordering::Relaxed);
        let failed = self.deliveries.failed.load(Ordering::Relaxed);
        assert_eq!(
            (ok, failed),
            (sent, 0),
            "feeder: {sent} sent, {ok} delivered, {failed} failed"
        );
        let ends = self.deliveries.ends.lock().unwrap();
        let v: Vec<i64> = (0..partitions)
            .map(|p| ends.get(&p).copied().unwrap_or(0))
            .collect();
        assert_eq!(
            v.iter().sum::<i64>() as u64,
            sent,
            "offsets contiguous from 0"
        );
        v
    }
}

/// Reads the group's committed offsets from the broker every 100 ms and
/// remembers every value seen per partition, to catch a step backwards.
pub struct CommitMonitor {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<Vec<i64>>>,
    /// The last committed offset seen per partition (`None`: nothing yet).
    latest: Arc<Mutex<Vec<Option<i64>>>>,
}

impl CommitMonitor {
    pub fn start(fx: &Fixture, group: &str, topic: &str, partitions: i32) -> CommitMonitor {
        let stop = Arc::new(AtomicBool::new(false));
        let reader: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", fx.bootstrap())
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("monitor consumer");
        let (topic, s) = (topic.to_string(), stop.clone());
        let latest = Arc::new(Mutex::new(vec![None; partitions as usize]));
        let l = latest.clone();
        let handle = std::thread::spawn(move || {
            let mut history: Vec<Vec<i64>> = vec![Vec::new(); partitions as usize];
            loop {
                let done = s.load(Ordering::Relaxed);
                let mut tpl = TopicPartitionList::new();
                for p in 0..partitions {
                    tpl.add_partition(&topic, p);
                }
                if let Ok(got) = reader.committed_offsets(tpl, Duration::from_secs(5)) {
                    for (p, h) in history.iter_mut().enumerate() {
                        if let Some(Offset::Offset(o)) =
                            got.find_partition(&topic, p as i32).map(|e| e.offset())
                            && h.last() != Some(&o)
                        {
                            h.push(o);
                        }
                    }
                    *l.lock().unwrap() = history.iter().map(|h| h.last().copied()).collect();
                }
                if done {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            history
        });
        CommitMonitor {
            stop,
            handle,
            latest,
        }
    }

    /// The group's committed offsets as last read (every 100 ms), per partition.
    pub fn latest(&self) -> Vec<Option<i64>> {
        self.latest.lock().unwrap().clone()
    }

    /// Stops watching; returns the distinct committed offsets seen per partition, in order.
    pub fn stop(self) -> Vec<Vec<i64>> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("monitor")
    }
}

/// Asserts that no partition's committed offset ever decreased.
pub fn assert_monotonic(history: &[Vec<i64>]) {
    for (p, h) in history.iter().enumerate() {
        assert!(
            h.windows(2).all(|w| w[0] <= w[1]),
            "partition {p}: committed offset moved backwards: {h:?}"
        );
    }
}

/// Waits (async) until `f` holds, checking every 50 ms.
pub async fn until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The kept offsets dropped at assigns (partition went to another member),
/// from the members' `on_assign` events, and the duplicate bound they imply:
/// the records acked but refused in [last committed, refused offset).
pub fn refused_and_not_reowned(ended: &[MemberEnd]) -> (Vec<offset_guard::DroppedOffset>, i64) {
    let dropped: Vec<_> = ended
        .iter()
        .flat_map(|m| m.events.iter())
        .filter_map(|e| match e {
            Event::Assigned(a) => Some(a.dropped.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let bound = dropped
        .iter()
        .map(|d| d.offset - d.committed_before.unwrap_or(0))
        .sum();
    (dropped, bound)
}

/// Asserts that every duplicate of an acked record lies in a refused range of
/// its partition, and that their number is within the bound.
pub fn assert_duplicates_within(
    dup_acked: &[(i32, i64)],
    dropped: &[offset_guard::DroppedOffset],
    bound: i64,
) {
    for (p, o) in dup_acked {
        assert!(
            dropped.iter().any(|d| d.partition == *p
                && d.committed_before.unwrap_or(0) <= *o
                && *o < d.offset),
            "record {p}/{o} processed twice though no refused commit covers it (dropped: {dropped:?})"
        );
    }
    assert!(
        dup_acked.len() as i64 <= bound,
        "{} duplicates > bound {bound}",
        dup_acked.len()
    );
}

/// What the members' shutdowns could not commit (for assertion messages).
pub fn not_committed(ended: &[MemberEnd]) -> Vec<String> {
    ended
        .iter()
        .map(|m| {
            format!(
                "{}: deadline exceeded {}, not committed {:?}",
                m.name,
                m.report.deadline_exceeded,
                m.report
                    .not_committed
                    .iter()
                    .map(|f| (f.partition, f.offset, f.reason.as_str()))
                    .collect::<Vec<_>>()
            )
        })
        .collect()
}

/// A member's guard: the group's assignment strategy, a short session
/// timeout on the mock (each mock rebalance waits session.timeout.ms - 1 s),
/// fast retries, commits every 2 s (so a revoke has acked work to commit).
pub fn member_builder(fx: &Fixture, group: &str, strategy: &str) -> GuardBuilder {
    let mut cfg = fx.config(group);
    cfg.set("partition.assignment.strategy", strategy);
    if fx.is_mock() {
        cfg.set("session.timeout.ms", "3000");
    }
    offset_guard::OffsetGuard::builder(cfg)
        .retry(super::fast_retry(5))
        .commit_interval(Duration::from_secs(2))
}

/// A second member joins mid-stream, then leaves, while `feeder` keeps
/// records flowing: member `a` (already started) processes 200 records and
/// its first commits land (the baseline the hand-off must keep); `b`
/// (started by `start_b`) joins and processes 200; `b` stops; `a` alone
/// processes `a_more` more; the feeder stops and every record is processed.
/// Returns `b`'s end and the high watermarks.
pub async fn join_then_leave(
    ledger: &Ledger,
    monitor: &CommitMonitor,
    feeder: Feeder,
    partitions: i32,
    start_b: impl FnOnce() -> Member,
    a_more: u64,
) -> (MemberEnd, Vec<i64>) {
    until(Duration::from_secs(30), "a processes 200 records", || {
        ledger.processed_by("a") >= 200
    })
    .await;
    until(Duration::from_secs(30), "a's first commits", || {
        monitor.latest().iter().all(|o| o.is_some_and(|o| o > 0))
    })
    .await;
    let b = start_b();
    until(Duration::from_secs(60), "b processes 200 records", || {
        ledger.processed_by("b") >= 200
    })
    .await;
    let b_end = b.stop().await;
    let a_alone = ledger.processed_by("a");
    until(
        Duration::from_secs(60),
        &format!("a alone processes {a_more} more"),
        || ledger.processed_by("a") >= a_alone + a_more,
    )
    .await;
    let hw = feeder.stop(partitions);
    until(Duration::from_secs(30), "every record processed", || {
        ledger.missing(&hw).is_empty()
    })
    .await;
    (b_end, hw)
}
