//! Throughput harness: what does offset-guard cost compared with a bare
//! rdkafka consumer and with the usual ways of committing?
//!
//! ```text
//! cargo run --release --example throughput -- [--records N] [--repeats K]
//!     [--slow-records N] [--partitions 1,8] [--chunk N] [--settle-ms MS]
//!     [--interval-ms MS] [--set key=value]... [--modes a,b-sync,...]
//! ```
//!
//! One process, one embedded `MockCluster`, one topic per partition count.
//! Every mode measures the same thing, round by round: the round's records
//! are produced first (shared [`Feeder`]: 100 B payloads, round-robin over
//! the partitions), while no consumer exists; then a fresh consumer (or
//! guard) of the run's group is created, assigned at the round's first
//! records, and timed from the first record the application gets to the
//! last one it is done with (acked, for the modes that ack). The time from
//! the consumer's creation to its first record is shown apart ("startup");
//! producing, commits after the last record and shutdown are not timed. The
//! mock keeps only about 5 MiB per partition, so a round holds at most
//! `--chunk` records per partition (40,000 by default: about 4.4 MB); a run
//! of more records has several rounds, each with a consumer of its own.
//! `--settle-ms` is accepted and ignored (no consumer exists while records
//! are produced). Each record is "processed" identically in every mode (a
//! checksum over its payload).
//!
//! Modes (rdkafka `BaseConsumer` in every one; the guard wraps the same type):
//! - `a`: no commits.
//! - `a-detach`: no commits, and each message copied out of librdkafka
//!   (`BorrowedMessage::detach`, dropped at once): the copy any application
//!   pays to hand a record to another task, and the guard pays for every
//!   record (its `Record` owns an `OwnedMessage`).
//! - `a-handoff`: no commits; a poll thread copies messages out and hands them
//!   in batches to the receiving task: the guard's architecture (poll thread,
//!   batches of 256, 8 batches of prefetch) without the guard.
//! - `b-sync` / `b-async`: `commit_message` after every record (the pattern of
//!   most tutorials); `b-sync` runs on `--slow-records` only (each commit waits
//!   for a round trip); `b-async` ends with one synchronous commit, timed, so
//!   its queued commits have drained.
//! - `c`: rdkafka's at-least-once pattern: `store_offset_from_message` after
//!   processing, auto commit every `--interval-ms`.
//! - `d-inline`: offset-guard, `recv` then `ack` each record on the receiving task,
//!   commits every `--interval-ms`.
//! - `d-inline-nh`: `d-inline` with `read_headers(false)` (the records have
//!   no headers; the poll thread does not ask librdkafka for them).
//! - `d-concurrent`: offset-guard, records handed in batches of 64 to 4 tasks on
//!   a 2-thread runtime that ack them in reverse (concurrent, out-of-order acks),
//!   commits every `--interval-ms`.
//! - `s`: a plain `StreamConsumer::recv()` loop, no commits: the baseline of the
//!   own-loop modes.
//! - `e-base` / `e-stream`: offset-guard's own-loop mode (`build_consumer`,
//!   `track`, inline ack) on a `BaseConsumer` poll loop / a `StreamConsumer`
//!   `recv()` loop; commits every `--interval-ms`.
//! - `e-pool`: own-loop mode on a `StreamConsumer`, each record processed in
//!   the loop and its token handed, in batches of 64, to a fixed pool of 4
//!   tasks that ack them (in reverse).
//!
//! CPU: user + system time of the whole process (all threads: the guard's
//! poll thread too) over the timed windows (`CLOCK_PROCESS_CPUTIME_ID`), per
//! record.
//!
//! Commits: own count of commit calls (a, b), librdkafka's statistics
//! (`brokers.*.req.OffsetCommit`, c), the guard's `Stats::commits_sent` (d, its
//! final commit at shutdown included). Memory: `VmHWM` is reset at the start of
//! each run (`echo 5 > /proc/self/clear_refs`) and read at its end (peak of the
//! run, whole process); `VmRSS` is read at the start, after the first round
//! and at the end, to show whether memory grows during the run. The process
//! keeps memory earlier runs took (the allocator does not return it all), so
//! compare a run's peak and end with its own start, not across runs.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use offset_guard::{AckToken, GuardContext, GuardHandle, OffsetGuard, Record};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, Statistics, TopicPartitionList};

const MODES: &[&str] = &[
    "a",
    "a-detach",
    "a-handoff",
    "b-sync",
    "b-async",
    "c",
    "d-inline",
    "d-inline-nh",
    "d-concurrent",
    "s",
    "e-base",
    "e-stream",
    "e-pool",
];
const PAYLOAD: usize = 100;

#[derive(Debug, Clone)]
struct Args {
    records: u64,
    slow_records: u64,
    repeats: usize,
    partitions: Vec<i32>,
    chunk: u64,
    interval: Duration,
    modes: Vec<String>,
    /// Extra librdkafka consumer properties, every mode (`--set key=value`).
    set: Vec<(String, String)>,
}

fn parse_args() -> Args {
    let mut a = Args {
        records: 1_000_000,
        slow_records: 50_000,
        repeats: 3,
        partitions: vec![1, 8],
        chunk: 40_000,
        interval: Duration::from_millis(100),
        modes: MODES.iter().map(|s| s.to_string()).collect(),
        set: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--records" => a.records = v().parse().expect("--records"),
            "--slow-records" => a.slow_records = v().parse().expect("--slow-records"),
            "--repeats" => a.repeats = v().parse().expect("--repeats"),
            "--chunk" => a.chunk = v().parse().expect("--chunk"),
            // Accepted for old command lines; nothing consumes while records are produced.
            "--settle-ms" => drop(v().parse::<u64>().expect("--settle-ms")),
            "--interval-ms" => {
                a.interval = Duration::from_millis(v().parse().expect("--interval-ms"))
            }
            "--partitions" => {
                a.partitions = v()
                    .split(',')
                    .map(|s| s.parse().expect("--partitions"))
                    .collect()
            }
            "--modes" => a.modes = v().split(',').map(str::to_string).collect(),
            "--set" => {
                let kv = v();
                let (k, val) = kv.split_once('=').expect("--set key=value");
                a.set.push((k.to_string(), val.to_string()));
            }
            "-h" | "--help" => {
                println!(
                    "cargo run --release --example throughput -- [--records N] [--repeats K] \
                     [--slow-records N] [--partitions 1,8] [--chunk N] [--settle-ms MS] \
                     [--interval-ms MS] [--set key=value]... [--modes {}]",
                    MODES.join(",")
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other} (try --help)"),
        }
    }
    for m in &a.modes {
        assert!(MODES.contains(&m.as_str()), "unknown mode {m}");
    }
    a
}

// ---------------------------------------------------------------- memory

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn rss_mib() -> f64 {
    status_kib("VmRSS:") as f64 / 1024.0
}

fn hwm_mib() -> f64 {
    status_kib("VmHWM:") as f64 / 1024.0
}

/// Resets VmHWM to the current RSS (Linux >= 4.0). False if not permitted.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

// ---------------------------------------------------------------- input

/// Produces the same records for every mode: 100 B payloads carrying a
/// sequence number, round-robin over the partitions.
struct Feeder {
    producer: BaseProducer,
    topic: String,
    partitions: i32,
    seq: u64,
}

impl Feeder {
    fn new(bootstrap: &str, topic: &str, partitions: i32) -> Feeder {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .expect("producer");
        Feeder {
            producer,
            topic: topic.to_string(),
            partitions,
            seq: 0,
        }
    }

    /// Each partition's end: where the next records go.
    fn ends(&self) -> Vec<i64> {
        (0..self.partitions)
            .map(|p| {
                self.producer
                    .client()
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
                    .expect("watermarks")
                    .1
            })
            .collect()
    }

    fn produce(&mut self, n: u64) {
        let mut payload = [b'x'; PAYLOAD];
        for _ in 0..n {
            payload[..8].copy_from_slice(&self.seq.to_le_bytes());
            let p = (self.seq % self.partitions as u64) as i32;
            loop {
                let rec = BaseRecord::<(), [u8]>::to(&self.topic)
                    .partition(p)
                    .payload(&payload[..]);
                match self.producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        self.producer.poll(Duration::from_millis(5));
                    }
                    Err((e, _)) => panic!("produce: {e}"),
                }
            }
            self.seq += 1;
        }
        self.producer
            .flush(Duration::from_secs(60))
            .expect("producer flush");
    }
}

#[inline]
fn process(payload: Option<&[u8]>) -> u64 {
    let p = payload.expect("payload");
    black_box(p.len() as u64 + p[0] as u64 + p[PAYLOAD - 1] as u64)
}

// ---------------------------------------------------------------- context

/// Counts OffsetCommit requests from librdkafka's statistics.
#[derive(Clone, Default)]
struct StatsCtx {
    offset_commits: Arc<AtomicI64>,
    updates: Arc<AtomicU64>,
}

impl ClientContext for StatsCtx {
    fn stats(&self, s: Statistics) {
        let n: i64 = s
            .brokers
            .values()
            .map(|b| b.req.get("OffsetCommit").copied().unwrap_or(0))
            .sum();
        self.offset_commits.store(n, Ordering::Relaxed);
        self.updates.fetch_add(1, Ordering::Relaxed);
    }
}

impl ConsumerContext for StatsCtx {}

fn consumer_config(round: &Round) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", round.bootstrap)
        .set("group.id", round.group)
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "10")
        .set("statistics.interval.ms", "100");
    for (k, v) in &round.args.set {
        c.set(k, v);
    }
    c
}

/// Assigns every partition at this round's first record.
fn assign_at<C: ConsumerContext, T: Consumer<C>>(consumer: &T, topic: &str, starts: &[i64]) {
    let mut tpl = TopicPartitionList::new();
    for (p, &o) in starts.iter().enumerate() {
        tpl.add_partition_offset(topic, p as i32, Offset::Offset(o))
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
}

// ---------------------------------------------------------------- runs

#[derive(Debug, Clone, Default)]
struct Sample {
    records: u64,
    secs: f64,
    /// CPU seconds (user + system, whole process) over the timed windows.
    cpu: f64,
    /// Seconds from consumer creation to the first record (not in `secs`).
    startup: f64,
    /// Partitions the guard paused (flow control), owned front-end only.
    paused: u64,
    wall: f64,
    commits: u64,
    rss_start: f64,
    rss_first: f64,
    rss_max: f64,
    rss_end: f64,
    peak: f64,
}

impl Sample {
    /// Resets the peak-memory mark and starts a sample at the current RSS.
    fn start(records: u64) -> Sample {
        reset_peak();
        let rss = rss_mib();
        Sample {
            records,
            rss_start: rss,
            rss_max: rss,
            ..Default::default()
        }
    }

    /// Adds one round's timed figures.
    fn add(&mut self, r: &Sample) {
        self.secs += r.secs;
        self.cpu += r.cpu;
        self.startup += r.startup;
        self.commits += r.commits;
        self.paused += r.paused;
    }

    fn rate(&self) -> f64 {
        self.records as f64 / self.secs
    }

    fn cpu_us_per_record(&self) -> f64 {
        self.cpu * 1e6 / self.records as f64
    }
}

/// CPU seconds (user + system, all threads) of this process so far.
fn cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// The timed part of a round: from the first record the application gets
/// to the last record it is done with; the time from the consumer's
/// creation to the first record is kept apart (`startup`).
struct Window {
    created: Instant,
    first: Option<(Instant, f64)>,
}

impl Window {
    /// Call right after the consumer is created.
    fn new() -> Window {
        Window {
            created: Instant::now(),
            first: None,
        }
    }

    /// Call for every record the application gets (the first starts the clock).
    #[inline]
    fn record(&mut self) {
        if self.first.is_none() {
            self.first = Some((Instant::now(), cpu_secs()));
        }
    }

    /// Call once the round's last record is done.
    fn close(&self, records: u64) -> Sample {
        let (t0, c0) = self.first.expect("no record in the round");
        Sample {
            records,
            secs: t0.elapsed().as_secs_f64(),
            cpu: cpu_secs() - c0,
            startup: (t0 - self.created).as_secs_f64(),
            ..Default::default()
        }
    }
}

struct Run<'a> {
    bootstrap: &'a str,
    topic: &'a str,
    partitions: i32,
    records: u64,
    group: String,
    args: &'a Args,
}

impl Run<'_> {
    /// Records per round: at most `--chunk` per partition (the mock keeps
    /// about 5 MiB per partition, 40,000 records of 100 B fit).
    fn rounds(&self) -> Vec<u64> {
        let per_round = self.args.chunk * self.partitions as u64;
        let mut v = Vec::new();
        let mut left = self.records;
        while left > 0 {
            let n = left.min(per_round);
            v.push(n);
            left -= n;
        }
        v
    }
}

/// One round: `n` records already produced from `starts` on, a fresh
/// consumer (or guard) of the run's group reads them.
struct Round<'a> {
    bootstrap: &'a str,
    topic: &'a str,
    group: &'a str,
    starts: Vec<i64>,
    n: u64,
    args: &'a Args,
}

impl Round<'_> {
    /// The sum of the committed offsets once every record is committed.
    fn want(&self) -> i64 {
        self.starts.iter().sum::<i64>() + self.n as i64
    }
}

/// Runs a mode round by round: produce the round's records, then (nothing
/// consuming meanwhile) create the consumer and time it reading them.
fn run_mode(mode: &str, run: &Run, rt: &tokio::runtime::Runtime) -> Sample {
    let wall = Instant::now();
    let mut feeder = Feeder::new(run.bootstrap, run.topic, run.partitions);
    let mut total = Sample::start(run.records);
    for (i, n) in run.rounds().into_iter().enumerate() {
        let starts = feeder.ends();
        feeder.produce(n);
        let round = Round {
            bootstrap: run.bootstrap,
            topic: run.topic,
            group: &run.group,
            starts,
            n,
            args: run.args,
        };
        let s = if mode.starts_with("d-") {
            run_guard(mode, &round, rt)
        } else if mode == "s" || mode.starts_with("e-") {
            run_own_loop(mode, &round, rt)
        } else if mode == "a-handoff" {
            run_handoff(&round, rt)
        } else {
            run_base(mode, &round)
        };
        total.add(&s);
        if i == 0 {
            total.rss_first = rss_mib();
        }
        total.rss_max = total.rss_max.max(rss_mib());
    }
    total.rss_end = rss_mib();
    total.peak = hwm_mib();
    total.wall = wall.elapsed().as_secs_f64();
    total
}

fn run_base(mode: &str, round: &Round) -> Sample {
    let ctx = StatsCtx::default();
    let mut cfg = consumer_config(round);
    if mode == "c" {
        cfg.set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.commit.interval.ms",
                round.args.interval.as_millis().to_string(),
            );
    } else {
        cfg.set("enable.auto.commit", "false");
    }
    let consumer: BaseConsumer<StatsCtx> = cfg.create_with_context(ctx.clone()).expect("consumer");
    let mut w = Window::new();
    assign_at(&consumer, round.topic, &round.starts);
    let mut commits = 0u64;
    let mut consumed = 0u64;
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    while consumed < round.n {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                w.record();
                process(m.payload());
                consumed += 1;
                match mode {
                    "b-sync" => {
                        consumer
                            .commit_message(&m, CommitMode::Sync)
                            .expect("commit");
                        commits += 1;
                    }
                    "b-async" => {
                        consumer
                            .commit_message(&m, CommitMode::Async)
                            .expect("commit");
                        commits += 1;
                        last.insert(m.partition(), m.offset() + 1);
                    }
                    "c" => consumer.store_offset_from_message(&m).expect("store"),
                    "a-detach" => drop(black_box(m.detach())),
                    _ => {}
                }
            }
            Some(Err(e)) => eprintln!("consumer error: {e}"),
            None => {}
        }
    }
    if mode == "b-async" {
        // Drain: a synchronous commit returns once every commit queued
        // before it on the coordinator connection has been answered.
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &last {
            tpl.add_partition_offset(round.topic, *p, Offset::Offset(*o))
                .expect("tpl");
        }
        consumer.commit(&tpl, CommitMode::Sync).expect("drain");
        commits += 1;
    }
    let mut s = w.close(round.n);
    s.commits = commits;
    if mode.starts_with('b') {
        // Cross-check our count against librdkafka's (requests actually sent).
        let until = Instant::now() + Duration::from_millis(400);
        while Instant::now() < until {
            consumer.poll(Duration::from_millis(20));
        }
        let sent = ctx.offset_commits.load(Ordering::Relaxed);
        if sent as u64 != s.commits {
            eprintln!(
                "{mode}: {} commit calls, librdkafka statistics say {sent} OffsetCommit requests",
                s.commits
            );
        }
    }
    if mode == "c" {
        // Let the last auto commit and a statistics update after it happen.
        let until = Instant::now() + round.args.interval * 3 + Duration::from_millis(300);
        while Instant::now() < until {
            consumer.poll(Duration::from_millis(20));
        }
        s.commits = ctx.offset_commits.load(Ordering::Relaxed) as u64;
    }
    if !mode.starts_with('a') {
        let committed = consumer.committed(Duration::from_secs(10)).ok().map(|tpl| {
            tpl.elements()
                .iter()
                .filter_map(|e| e.offset().to_raw())
                .sum::<i64>()
        });
        assert_eq!(committed, Some(round.want()), "{mode}: committed offsets");
    }
    s
}

/// `a-handoff`: what the guard does minus the guard. A thread of its own polls
/// the same `BaseConsumer`, copies each message out (`detach`) and hands
/// batches of 256 over a bounded channel (8 batches) to the receiving task,
/// which processes and drops them: the guard's poll-thread architecture and
/// batch settings, without tracking, acks or commits.
fn run_handoff(round: &Round, rt: &tokio::runtime::Runtime) -> Sample {
    const BATCH: usize = 256;
    let mut cfg = consumer_config(round);
    cfg.set("enable.auto.commit", "false");
    let consumer: BaseConsumer<StatsCtx> = cfg
        .create_with_context(StatsCtx::default())
        .expect("consumer");
    let mut w = Window::new();
    assign_at(&consumer, round.topic, &round.starts);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<OwnedMessage>>(8);
    std::thread::scope(|sc| {
        let (consumer, stop) = (&consumer, &stop);
        sc.spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            while !stop.load(Ordering::Acquire) {
                let timeout = if batch.is_empty() {
                    Duration::from_millis(100)
                } else {
                    Duration::ZERO
                };
                match consumer.poll(timeout) {
                    Some(Ok(m)) => {
                        batch.push(m.detach());
                        if batch.len() >= BATCH {
                            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                            if tx.blocking_send(full).is_err() {
                                break;
                            }
                        }
                    }
                    Some(Err(e)) => eprintln!("consumer error: {e}"),
                    None => {
                        if !batch.is_empty() {
                            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                            if tx.blocking_send(full).is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        });
        let mut consumed = 0u64;
        rt.block_on(async {
            while consumed < round.n {
                let batch = rx.recv().await.expect("poll thread");
                for m in batch {
                    w.record();
                    process(m.payload());
                    consumed += 1;
                }
            }
        });
        let s = w.close(round.n);
        stop.store(true, Ordering::Release);
        rx.close();
        s
    })
}

fn run_guard(mode: &str, round: &Round, rt: &tokio::runtime::Runtime) -> Sample {
    rt.block_on(async {
        let cfg = consumer_config(round);
        let mut guard = OffsetGuard::builder(cfg)
            .context(StatsCtx::default())
            .commit_interval(round.args.interval)
            .shutdown_timeout(Duration::from_secs(30))
            .read_headers(mode != "d-inline-nh")
            .build()
            .expect("guard");
        let mut w = Window::new();
        assign_at(guard.consumer(), round.topic, &round.starts);

        // d-concurrent: 4 acking tasks, fed batches of 64 records.
        const WORKERS: usize = 4;
        const BATCH: usize = 64;
        let acked = Arc::new(AtomicU64::new(0));
        let notify = Arc::new(tokio::sync::Notify::new());
        let goal = round.n;
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        if mode == "d-concurrent" {
            for _ in 0..WORKERS {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Record>>(64);
                let (acked, notify) = (acked.clone(), notify.clone());
                tasks.push(tokio::spawn(async move {
                    while let Some(mut batch) = rx.recv().await {
                        let k = batch.len() as u64;
                        while let Some(r) = batch.pop() {
                            process(r.payload());
                            r.ack();
                        }
                        if acked.fetch_add(k, Ordering::AcqRel) + k >= goal {
                            notify.notify_one();
                        }
                    }
                }));
                senders.push(tx);
            }
        }
        let mut consumed = 0u64;
        let mut next_worker = 0;
        if mode.starts_with("d-inline") {
            while consumed < goal {
                let r = guard.recv().await.expect("recv").expect("record");
                w.record();
                process(r.payload());
                r.ack();
                consumed += 1;
            }
        } else {
            let mut batch = Vec::with_capacity(BATCH);
            while consumed < goal {
                batch.push(guard.recv().await.expect("recv").expect("record"));
                w.record();
                consumed += 1;
                if batch.len() == BATCH || consumed == goal {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    senders[next_worker].send(full).await.expect("worker");
                    next_worker = (next_worker + 1) % WORKERS;
                }
            }
            loop {
                let notified = notify.notified();
                if acked.load(Ordering::Acquire) >= goal {
                    break;
                }
                notified.await;
            }
        }
        let mut s = w.close(round.n);
        drop(senders);
        for t in tasks {
            t.await.expect("worker task");
        }
        let report = guard.shutdown().await.expect("shutdown");
        assert!(report.not_committed.is_empty(), "{mode}: not committed");
        let committed: i64 = report.committed.iter().map(|c| c.offset).sum();
        assert_eq!(committed, round.want(), "{mode}: committed offsets");
        s.commits = report.stats.commits_sent;
        s.paused = report.stats.partitions_paused;
        s
    })
}

/// The consumer of `s` and of the own-loop modes `e-*`.
enum OwnLoop {
    Plain(StreamConsumer<StatsCtx>),
    Stream(Arc<StreamConsumer<GuardContext<StatsCtx>>>, GuardHandle),
    Base(Arc<BaseConsumer<GuardContext<StatsCtx>>>, GuardHandle),
}

impl OwnLoop {
    fn new(mode: &str, round: &Round) -> OwnLoop {
        let cfg = consumer_config(round);
        let guarded = OffsetGuard::builder(cfg.clone())
            .context(StatsCtx::default())
            .commit_interval(round.args.interval)
            .shutdown_timeout(Duration::from_secs(30));
        match mode {
            "s" => {
                let mut cfg = cfg;
                cfg.set("enable.auto.commit", "false");
                OwnLoop::Plain(
                    cfg.create_with_context(StatsCtx::default())
                        .expect("consumer"),
                )
            }
            "e-base" => {
                let (c, g) = guarded
                    .build_consumer::<BaseConsumer<GuardContext<StatsCtx>>>()
                    .expect("guard");
                OwnLoop::Base(c, g)
            }
            _ => {
                let (c, g) = guarded
                    .build_consumer::<StreamConsumer<GuardContext<StatsCtx>>>()
                    .expect("guard");
                OwnLoop::Stream(c, g)
            }
        }
    }

    fn assign(&self, round: &Round) {
        match self {
            OwnLoop::Plain(c) => assign_at(c, round.topic, &round.starts),
            OwnLoop::Stream(c, _) => assign_at(&**c, round.topic, &round.starts),
            OwnLoop::Base(c, _) => assign_at(&**c, round.topic, &round.starts),
        }
    }
}

/// `s` and the own-loop modes `e-*`: the application's own consumer loop.
fn run_own_loop(mode: &str, round: &Round, rt: &tokio::runtime::Runtime) -> Sample {
    rt.block_on(async {
        let consumer = OwnLoop::new(mode, round);
        let mut w = Window::new();
        consumer.assign(round);
        const WORKERS: usize = 4;
        const BATCH: usize = 64;
        let goal = round.n;
        let acked = Arc::new(AtomicU64::new(0));
        let notify = Arc::new(tokio::sync::Notify::new());
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        if mode == "e-pool" {
            for _ in 0..WORKERS {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<AckToken>>(64);
                let (acked, notify) = (acked.clone(), notify.clone());
                tasks.push(tokio::spawn(async move {
                    while let Some(mut batch) = rx.recv().await {
                        let k = batch.len() as u64;
                        while let Some(t) = batch.pop() {
                            t.ack();
                        }
                        acked.fetch_add(k, Ordering::AcqRel);
                        notify.notify_one();
                    }
                }));
                senders.push(tx);
            }
        }
        let mut consumed = 0u64;
        let mut next_worker = 0;
        match &consumer {
            OwnLoop::Plain(c) => {
                while consumed < goal {
                    let m = c.recv().await.expect("recv");
                    w.record();
                    process(m.payload());
                    consumed += 1;
                }
            }
            OwnLoop::Stream(c, g) if mode == "e-stream" => {
                while consumed < goal {
                    let m = c.recv().await.expect("recv");
                    w.record();
                    let token = g.track(&m);
                    process(m.payload());
                    token.ack();
                    consumed += 1;
                }
            }
            OwnLoop::Stream(c, g) => {
                let mut batch = Vec::with_capacity(BATCH);
                while consumed < goal {
                    let m = c.recv().await.expect("recv");
                    w.record();
                    let token = g.track(&m);
                    process(m.payload());
                    batch.push(token);
                    consumed += 1;
                    if batch.len() == BATCH || consumed == goal {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        senders[next_worker].send(full).await.expect("worker");
                        next_worker = (next_worker + 1) % WORKERS;
                    }
                }
                loop {
                    let notified = notify.notified();
                    if acked.load(Ordering::Acquire) >= goal {
                        break;
                    }
                    notified.await;
                }
            }
            OwnLoop::Base(c, g) => {
                while consumed < goal {
                    match c.poll(Duration::from_millis(100)) {
                        Some(Ok(m)) => {
                            w.record();
                            let token = g.track(&m);
                            process(m.payload());
                            token.ack();
                            consumed += 1;
                        }
                        Some(Err(e)) => eprintln!("consumer error: {e}"),
                        None => {}
                    }
                }
            }
        }
        let mut s = w.close(round.n);
        drop(senders);
        for t in tasks {
            t.await.expect("worker task");
        }
        let report = match consumer {
            OwnLoop::Stream(c, g) => Some(g.shutdown(&*c).await.expect("shutdown")),
            OwnLoop::Base(c, g) => Some(g.shutdown(&*c).await.expect("shutdown")),
            OwnLoop::Plain(_) => None,
        };
        if let Some(report) = report {
            assert!(report.not_committed.is_empty(), "{mode}: not committed");
            let committed: i64 = report.committed.iter().map(|c| c.offset).sum();
            assert_eq!(committed, round.want(), "{mode}: committed offsets");
            s.commits = report.stats.commits_sent;
        }
        s
    })
}

// ---------------------------------------------------------------- report

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    let hwm_ok = reset_peak();
    println!(
        "# offset-guard throughput: {} records ({} for b-sync), {} repeats, at most {} records per partition per round, commit interval {:?}, peak reset: {}",
        args.records, args.slow_records, args.repeats, args.chunk, args.interval, hwm_ok
    );
    let mut results: BTreeMap<(i32, String), Vec<Sample>> = BTreeMap::new();
    for &parts in &args.partitions {
        let topic = format!("throughput-{parts}");
        cluster.create_topic(&topic, parts, 1).expect("topic");
        for rep in 0..args.repeats {
            for mode in &args.modes {
                let records = if mode == "b-sync" {
                    args.slow_records
                } else {
                    args.records
                };
                let run = Run {
                    bootstrap: &bootstrap,
                    topic: &topic,
                    partitions: parts,
                    records,
                    group: format!("g-{parts}-{mode}-{rep}"),
                    args: &args,
                };
                let s = run_mode(mode, &run, &rt);
                println!(
                    "p={parts} rep={rep} {mode:<13} {:>9} rec {:>7.3} s {:>10.0} rec/s  cpu {:>6.3} s  startup {:>6.3} s  paused {:>3}  commits {:>6}  rss {:>6.1} / {:>6.1} / {:>6.1} (max {:>6.1}) MiB  peak {:>6.1} MiB  wall {:>5.1} s",
                    s.records,
                    s.secs,
                    s.rate(),
                    s.cpu,
                    s.startup,
                    s.paused,
                    s.commits,
                    s.rss_start,
                    s.rss_first,
                    s.rss_end,
                    s.rss_max,
                    s.peak,
                    s.wall
                );
                results.entry((parts, mode.clone())).or_default().push(s);
            }
        }
    }

    println!();
    println!(
        "| partitions | mode | records | records/s median (min..max) | ratio to a (median, min..max) | ratio to s (median, min..max) | ratio to a-handoff (median, min..max) | CPU µs/record (median) | OffsetCommit requests (median) | run wall s | RSS start / after round 1 / end MiB (median) | peak - start MiB (median, max) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &parts in &args.partitions {
        let base: Option<Vec<f64>> = results
            .get(&(parts, "a".to_string()))
            .map(|v| v.iter().map(Sample::rate).collect());
        let base_d: Option<Vec<f64>> = results
            .get(&(parts, "a-handoff".to_string()))
            .map(|v| v.iter().map(Sample::rate).collect());
        let base_s: Option<Vec<f64>> = results
            .get(&(parts, "s".to_string()))
            .map(|v| v.iter().map(Sample::rate).collect());
        for mode in &args.modes {
            let Some(v) = results.get(&(parts, mode.clone())) else {
                continue;
            };
            let rates: Vec<f64> = v.iter().map(Sample::rate).collect();
            let (lo, hi) = rates
                .iter()
                .fold((f64::MAX, 0f64), |(l, h), &r| (l.min(r), h.max(r)));
            let med = median(&mut rates.clone());
            let ratio_to = |base: &Option<Vec<f64>>| match base {
                Some(b) => {
                    // per repeat: this mode's rate over a's rate in the same repeat
                    let mut r: Vec<f64> = v.iter().zip(b).map(|(s, b)| s.rate() / b).collect();
                    let (rl, rh) = r
                        .iter()
                        .fold((f64::MAX, 0f64), |(l, h), &x| (l.min(x), h.max(x)));
                    format!("{:.3} ({:.3}..{:.3})", median(&mut r), rl, rh)
                }
                None => "-".to_string(),
            };
            let ratio = ratio_to(&base);
            let ratio_d = ratio_to(&base_d);
            let ratio_s = ratio_to(&base_s);
            let mut cpu: Vec<f64> = v.iter().map(Sample::cpu_us_per_record).collect();
            let mut commits: Vec<f64> = v.iter().map(|s| s.commits as f64).collect();
            let mut walls: Vec<f64> = v.iter().map(|s| s.wall).collect();
            let mut rs: Vec<f64> = v.iter().map(|s| s.rss_start).collect();
            let mut re: Vec<f64> = v.iter().map(|s| s.rss_end).collect();
            let mut rf: Vec<f64> = v.iter().map(|s| s.rss_first).collect();
            let mut growth: Vec<f64> = v.iter().map(|s| s.peak - s.rss_start).collect();
            let growth_max = growth.iter().copied().fold(0f64, f64::max);
            println!(
                "| {parts} | {mode} | {} | {:.0} ({:.0}..{:.0}) | {ratio} | {ratio_s} | {ratio_d} | {:.2} | {:.0} | {:.1} | {:.0} / {:.0} / {:.0} | {:.0}, {:.0} |",
                v[0].records,
                med,
                lo,
                hi,
                median(&mut cpu),
                median(&mut commits),
                median(&mut walls),
                median(&mut rs),
                median(&mut rf),
                median(&mut re),
                median(&mut growth),
                growth_max
            );
        }
    }
}
