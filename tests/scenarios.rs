//! SCENARIOS.md rows that do not involve rebalances, against a broker: a
//! broker outage while a commit is pending (#3), a fenced static member (#6),
//! `_NO_OFFSET` (#8), an unknown topic or partition on commit (#23), idle
//! offsets re-committed (#22), and a consumer process killed mid-stream (#18).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::{Fixture, fast_retry, recv_n, unique, wait_until};
use offset_guard::failure_log::LogReader;
use offset_guard::{Error, FailureReason, GuardContext, MemorySink, OffsetGuard};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::types::RDKafkaRespErr;

/// Held by the crash test while it has child processes and by tests that
/// need `broker_down` to close connections. MockCluster's brokers `accept()`
/// without `SOCK_CLOEXEC`, so a child spawned meanwhile inherits the broker
/// side of every connection open in this process; `broker_down` then closes
/// only its own copy, the client never sees the disconnect, and its requests
/// hang until the session times out (seen in 5 of 5 runs next to the crash
/// test on Tansu; 0 of 7 on MockCluster only, where the timing differs).
/// (An async mutex: the async test holds it across awaits; a panicking
/// holder does not poison it.)
static CHILD_PROCESSES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fresh path for a failed-offset log.
fn log_path(group: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("{group}.jsonl"));
    let _ = std::fs::remove_file(&p);
    p
}

/// Row 3: the only broker goes down while a commit is pending and comes back
/// after 1 s. The commit stays pending through the outage (librdkafka holds a
/// commit while the coordinator is unreachable, up to `session.timeout.ms`,
/// so the guard sees one long attempt rather than failures to retry), lands
/// after `broker_up`, and the broker holds the right offset. All on a
/// single-threaded runtime whose ticker task keeps running meanwhile: the
/// blocking commit runs on the guard's own thread, never on the executor.
#[tokio::test(flavor = "current_thread")]
async fn broker_down_then_up_commit_lands_and_the_executor_keeps_running() {
    let _serial = CHILD_PROCESSES.lock().await;
    let fx = Fixture::mock();
    let (topic, group) = (unique("outage"), unique("g-outage"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 50, 0);

    let mut config = fx.config(&group);
    // Reconnect soon after broker_up, well within the 6 s session: this test
    // is about the commit, not about losing the group membership.
    config
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "200");
    let mut c = OffsetGuard::builder(config)
        .retry(fast_retry(20))
        .no_commit_interval()
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    for r in recv_n(&mut c, 50, Duration::from_secs(60)).await {
        r.ack();
    }

    let ticks = Arc::new(AtomicU64::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(10));
            loop {
                every.tick().await;
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    fx.mock_cluster().broker_down(1).unwrap();
    let started = Instant::now();
    let ticks0 = ticks.load(Ordering::Relaxed);
    let mut commit = Box::pin(c.commit_now());
    // Drive the commit until its first attempt is on its way.
    while c.stats().commits_sent == 0 {
        tokio::select! {
            r = &mut commit => panic!("the commit ended before it was sent: {r:?}"),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    // The outage: the broker stays down for 1 s; the commit must not end.
    let outage = Duration::from_secs(1);
    if let Ok(r) = tokio::time::timeout(outage, &mut commit).await {
        panic!("the commit ended while the broker was down: {r:?}");
    }
    let ticks_in_outage = ticks.load(Ordering::Relaxed) - ticks0;
    fx.mock_cluster().broker_up(1).unwrap();
    let up = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(30), &mut commit)
        .await
        .expect("the commit ends after broker_up");
    drop(commit);
    let pending = started.elapsed();
    let ticks_pending = ticks.load(Ordering::Relaxed) - ticks0;
    let stats = c.stats();
    println!(
        "broker down {outage:?}: commit pending {pending:?} (landed {:?} after broker_up), \
         10 ms ticker ran {ticks_in_outage} times during the outage and {ticks_pending} while \
         the commit was pending; OffsetCommit attempts by the guard: {}, retried: {}",
        up.elapsed(),
        stats.commits_sent,
        stats.commits_retried
    );
    let landed = result.expect("commit lands after broker_up");
    assert_eq!(landed.len(), 1);
    assert_eq!(landed[0].offset, 50);
    assert!(
        ticks_in_outage >= 50,
        "the executor was blocked: a 10 ms ticker ran {ticks_in_outage} times in {outage:?}"
    );
    assert!(
        ticks_pending >= pending.as_millis() as u64 / 20,
        "ticker ran {ticks_pending} times in {pending:?}"
    );
    assert_eq!(stats.offsets_failed, 0);
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(50)]);

    ticker.abort();
    c.shutdown().await.unwrap();
}

/// Row 6: FENCED_INSTANCE_ID on OffsetCommit (a static member, with
/// `group.instance.id`). Fatal: one attempt, no retry, and later commit
/// cycles do not send the offsets again; the pending offsets of both partitions go to the sink and the
/// durable log with reason `fatal` and the error code; `commit_now` and `recv`
/// report the error; shutdown still ends within its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_instance_id_is_fatal_recorded_and_reported_without_retrying() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("fenced"), unique("g-fenced"));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 10, 0);

    let sink = MemorySink::new();
    let path = log_path(&group);
    let mut config = fx.config(&group);
    config.set("group.instance.id", unique("static"));
    let mut c = OffsetGuard::builder(config)
        .retry(fast_retry(10))
        .no_commit_interval()
        .shutdown_timeout(Duration::from_secs(5))
        .failure_sink(sink.clone())
        .failed_offset_log(&path)
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    for r in recv_n(&mut c, 20, Duration::from_secs(60)).await {
        r.ack();
    }
    fx.fail_commits(RDKafkaRespErr::RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID, 1);
    let err = c.commit_now().await.expect_err("fenced");
    let stats = c.stats();
    println!("commit_now: {err}; attempts {}", stats.commits_sent);
    assert!(
        matches!(
            err,
            Error::CommitFailed {
                code: Some(RDKafkaErrorCode::FencedInstanceId),
                attempts: 1
            }
        ),
        "{err:?}"
    );
    assert_eq!(stats.commits_sent, 1, "{stats:?}");
    assert_eq!(stats.commits_retried, 0);
    assert_eq!(stats.offsets_failed, 2);
    let mut failed = sink.records();
    failed.sort_by_key(|f| f.partition);
    assert_eq!(failed.len(), 2, "{failed:?}");
    for (p, f) in failed.iter().enumerate() {
        assert_eq!((f.partition, f.offset), (p as i32, 10));
        assert_eq!(f.reason, FailureReason::Fatal);
        assert_eq!(f.error_code, Some(RDKafkaErrorCode::FencedInstanceId));
        assert_eq!(f.attempts, 1);
    }

    // The consumer reports the fatal error instead of going on.
    let next = tokio::time::timeout(Duration::from_secs(10), c.recv())
        .await
        .expect("recv reports within 10 s");
    match next {
        Err(e) => assert!(e.is_fatal(), "{e:?}"),
        Ok(r) => panic!("recv after the fence: {r:?}"),
    }
    // No loop: later commit cycles do not send the given-up offsets again.
    for _ in 0..3 {
        let again = c.commit_now().await;
        assert!(matches!(&again, Ok(v) if v.is_empty()), "{again:?}");
    }
    assert_eq!(c.stats().commits_sent, 1, "{:?}", c.stats());
    assert_eq!(sink.records().len(), 2);

    let started = Instant::now();
    let report = c.shutdown().await.unwrap();
    println!(
        "shutdown after the fence took {:?}; not committed: {:?}",
        started.elapsed(),
        report
            .not_committed
            .iter()
            .map(|f| (f.partition, f.offset, f.reason, f.error_code))
            .collect::<Vec<_>>()
    );
    assert!(!report.deadline_exceeded);
    assert_eq!(fx.committed(&group, &topic, 2), vec![None, None]);

    // The durable log holds both offsets with the reason and the code.
    let log = LogReader::open(&path).unwrap();
    assert!(log.issues().is_empty(), "{:?}", log.issues());
    let fenced: BTreeSet<_> = log
        .failures()
        .filter(|f| f.error_code.as_deref() == Some("FencedInstanceId"))
        .map(|f| {
            assert_eq!(f.reason, FailureReason::Fatal);
            assert_eq!(f.group_id, group);
            (f.partition, f.offset, f.attempts)
        })
        .collect();
    println!(
        "log: {} records, FencedInstanceId: {fenced:?}",
        log.failures().count()
    );
    assert_eq!(fenced, BTreeSet::from([(0, 10, 1), (1, 10, 1)]));
    assert_eq!(
        log.failures().count(),
        2,
        "a fatally refused offset is not tried (and logged) again at shutdown"
    );
    assert!(report.not_committed.is_empty());
    std::fs::remove_file(&path).unwrap();
}

/// Row 8: `_NO_OFFSET`. The MockCluster passes an injected `_NO_OFFSET`
/// through to the client as the OffsetCommit result: the guard treats it as a
/// no-op success (counted in `commits_noop`), not a failure, not logged, not
/// retried. A `commit_now` with nothing new acked then sends nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_offset_is_a_noop_success_never_a_failure() {
    let fx = Fixture::mock();
    let common::Injected {
        topic,
        group,
        sink,
        log_path: path,
        consumer: c,
        records,
    } = fx.injected("nooffset", 1, 10, 10).await;
    for r in records {
        r.ack();
    }
    fx.fail_commits(RDKafkaRespErr::RD_KAFKA_RESP_ERR__NO_OFFSET, 1);
    let res = c.commit_now().await;
    let stats = c.stats();
    println!("injected _NO_OFFSET: commit_now {res:?}; {stats:?}");
    let done = res.expect("a no-op is a success");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].offset, 10);
    assert_eq!(stats.commits_sent, 1, "one attempt, no retry");
    assert_eq!(stats.commits_noop, 1);
    assert_eq!(stats.commits_retried, 0);
    assert_eq!(stats.commits_failed, 0);
    assert_eq!(stats.offsets_failed, 0);
    assert!(sink.records().is_empty());

    // Nothing new acked: nothing is sent, nothing fails.
    let again = c
        .commit_now()
        .await
        .expect("nothing to commit is a success");
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(c.stats().commits_sent, 1);
    // The broker answered "no offset": it stores nothing.
    assert_eq!(fx.committed(&group, &topic, 1), vec![None]);
    c.shutdown().await.unwrap();
    assert!(sink.records().is_empty());
    let log = LogReader::open(&path).unwrap();
    assert_eq!(log.failures().count(), 0, "nothing logged");
    std::fs::remove_file(&path).unwrap();
}

/// Row 23: UNKNOWN_TOPIC_OR_PART on every OffsetCommit. Retried a bounded
/// number of times (3 attempts, although the retry policy allows 10), then
/// given up and recorded with reason `fatal` and the error code; the consumer
/// goes on and a later commit lands once the partition is known again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic_or_partition_is_retried_a_bounded_number_of_times_then_logged() {
    let fx = Fixture::mock();
    let common::Injected {
        topic,
        group,
        sink,
        log_path: path,
        consumer: c,
        records,
    } = fx.injected("unknown", 1, 20, 10).await;
    let (first, rest) = records.split_at(10);
    for r in first {
        r.ack_token().ack();
    }
    // More than librdkafka's own retries and ours together can use up.
    fx.fail_commits(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, 50);
    let started = Instant::now();
    let err = c.commit_now().await.expect_err("given up");
    let took = started.elapsed();
    let stats = c.stats();
    println!("gave up after {took:?}: {err}; {stats:?}");
    assert!(
        matches!(
            err,
            Error::CommitFailed {
                code: Some(RDKafkaErrorCode::UnknownTopicOrPartition),
                attempts: 3
            }
        ),
        "{err:?}"
    );
    assert_eq!(stats.commits_sent, 3);
    assert_eq!(stats.commits_retried, 2);
    assert_eq!(stats.commits_failed, 1);
    let failed = sink.records();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].offset, 10);
    assert_eq!(failed[0].reason, FailureReason::Fatal);
    assert_eq!(
        failed[0].error_code,
        Some(RDKafkaErrorCode::UnknownTopicOrPartition)
    );
    assert_eq!(failed[0].attempts, 3);
    assert_eq!(fx.committed(&group, &topic, 1), vec![None]);

    fx.clear_commit_errors();
    for r in rest {
        r.ack_token().ack();
    }
    let landed = c
        .commit_now()
        .await
        .expect("lands once the partition is known");
    assert_eq!(landed[0].offset, 20);
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(20)]);
    c.shutdown().await.unwrap();

    let log = LogReader::open(&path).unwrap();
    let logged: Vec<_> = log.failures().collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].offset, 10);
    assert_eq!(logged[0].reason, FailureReason::Fatal);
    assert_eq!(
        logged[0].error_code.as_deref(),
        Some("UnknownTopicOrPartition")
    );
    assert_eq!(logged[0].attempts, 3);
    std::fs::remove_file(&path).unwrap();
}

/// Row 22: with `recommit_idle_every`, the committed offsets of partitions
/// whose position has not moved are sent again every period through the
/// worker; the committed offset read back never changes (never lower), a
/// partition that moves is committed normally and re-sent only once idle. On
/// MockCluster an injected error shows that the re-commit really reaches the
/// broker, and that a failed re-commit is not a failed offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_offsets_are_recommitted_unchanged_every_period() {
    let fx = Fixture::any();
    let (topic, group) = (unique("idle"), unique("g-idle"));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 5, 0);

    let period = Duration::from_millis(300);
    let sink = MemorySink::new();
    let mut c = fx
        .guard(&group)
        .no_commit_interval()
        .recommit_idle_every(period)
        .failure_sink(sink.clone())
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    for r in recv_n(&mut c, 10, Duration::from_secs(60)).await {
        r.ack();
    }
    let landed = c.commit_now().await.unwrap();
    assert_eq!(landed.len(), 2);
    let committed_at = Instant::now();
    let base = c.stats();
    assert_eq!(base.idle_recommits, 0);

    // Both partitions are idle: re-sent after one period, unchanged.
    wait_until(Duration::from_secs(10), "two idle re-commits", || {
        c.stats().idle_recommits >= 2
    });
    let first = committed_at.elapsed();
    let s = c.stats();
    println!(
        "first re-commit after {first:?} (period {period:?}); commits_sent {} -> {}",
        base.commits_sent, s.commits_sent
    );
    assert!(first >= period, "re-sent before the period: {first:?}");
    assert!(s.commits_sent > base.commits_sent);
    assert_eq!(fx.committed(&group, &topic, 2), vec![Some(5), Some(5)]);

    // Partition 0 moves on: committed normally; partition 1 keeps being re-sent.
    fx.produce(&topic, 1, 5, 5);
    for r in recv_n(&mut c, 5, Duration::from_secs(30)).await {
        r.ack();
    }
    let landed = c.commit_now().await.unwrap();
    assert_eq!(
        landed
            .iter()
            .map(|l| (l.partition, l.offset))
            .collect::<Vec<_>>(),
        vec![(0, 10)]
    );
    let n = c.stats().idle_recommits;
    wait_until(Duration::from_secs(10), "two more re-commits", || {
        c.stats().idle_recommits >= n + 2
    });
    let mut seen = Vec::new();
    for _ in 0..3 {
        let now = fx.committed(&group, &topic, 2);
        seen.push(now.clone());
        assert_eq!(now, vec![Some(10), Some(5)], "never lower: {seen:?}");
    }

    if fx.is_mock() {
        // One refused re-commit: counted as sent, not as re-committed, no
        // failed offset; the next period's re-commit succeeds.
        let before = c.stats();
        fx.fail_commits(
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED,
            1,
        );
        wait_until(
            Duration::from_secs(10),
            "a refused then a good re-commit",
            || c.stats().idle_recommits > before.idle_recommits,
        );
        let after = c.stats();
        println!(
            "after one injected error: sent {} -> {}, succeeded {} -> {}, re-committed {} -> {}",
            before.commits_sent,
            after.commits_sent,
            before.commits_succeeded,
            after.commits_succeeded,
            before.idle_recommits,
            after.idle_recommits
        );
        assert!(after.commits_sent >= before.commits_sent + 2, "{after:?}");
        assert_eq!(after.offsets_failed, 0);
        assert!(sink.records().is_empty());
        assert_eq!(fx.committed(&group, &topic, 2), vec![Some(10), Some(5)]);
    }
    let report = c.shutdown().await.unwrap();
    println!("on {}: {:?}", fx.kind(), report.stats);
    assert!(report.not_committed.is_empty());
    assert_eq!(fx.committed(&group, &topic, 2), vec![Some(10), Some(5)]);
}

// ---------------------------------------------------------------------------
// Row 18: crash. The test re-runs its own binary as the consumer process
// (`--exact` this test, with CRASH_CHILD_ENV set), so `cargo test` and
// `cargo test --test scenarios` need nothing else built. The broker belongs to
// the parent (a MockCluster lives in the parent process) and outlives both
// children.

const CRASH_TEST: &str = "crash_mid_stream_then_restart_loses_nothing";
const CRASH_TEST_OWN_LOOP: &str = "crash_mid_stream_then_restart_loses_nothing_own_loop";
const CRASH_CHILD_ENV: &str = "OFFSET_GUARD_CRASH_CHILD";
/// Starts every line of the child's protocol on stdout.
const MARK: &str = "@@ ";

/// What a child run printed.
#[derive(Default, Debug)]
struct ChildRun {
    /// Every record processed, in order: (partition, offset).
    processed: Vec<(i32, i64)>,
    /// Highest offset the child saw committed, per partition.
    committed: BTreeMap<i32, i64>,
    done: bool,
    stderr: String,
}

impl ChildRun {
    /// One past the highest offset processed in partition `p` (0 if none).
    fn processed_to(&self, p: i32) -> i64 {
        let offsets = self.processed.iter().filter(|(q, _)| *q == p);
        offsets.map(|(_, o)| o + 1).max().unwrap_or(0)
    }
}

/// Row 18: a consumer process is SIGKILLed mid-stream (after it printed a
/// quarter of the records and saw a commit land, no sleep), then restarted in
/// the same group to the end. Nothing is lost; the restart begins exactly at
/// the committed offsets, so the duplicates are the records processed after
/// the last commit that landed, at most those acked since the last commit the
/// child saw. Runs on MockCluster and, with `OFFSET_GUARD_BOOTSTRAP`, on Tansu.
#[test]
fn crash_mid_stream_then_restart_loses_nothing() {
    crash_mid_stream(CRASH_TEST);
}

/// The same with the own-loop front-end (`build_consumer` + `track`).
#[test]
fn crash_mid_stream_then_restart_loses_nothing_own_loop() {
    crash_mid_stream(CRASH_TEST_OWN_LOOP);
}

fn crash_mid_stream(test: &str) {
    if let Ok(spec) = std::env::var(CRASH_CHILD_ENV) {
        if test == CRASH_TEST_OWN_LOOP {
            crash_child_own_loop(&spec);
        } else {
            crash_child(&spec);
        }
        return;
    }
    let _serial = CHILD_PROCESSES.blocking_lock();
    let fx = Fixture::any();
    let (topic, group) = (unique("crash"), unique("g-crash"));
    let (partitions, per_partition) = (3, 400i64);
    fx.create_topic(&topic, partitions);
    fx.produce(&topic, partitions, per_partition as usize, 0);
    let total = partitions as usize * per_partition as usize;
    let started = Instant::now();

    // Run 1: SIGKILL once it has processed a quarter (and a few, so the kill
    // does not line up with commit_every) and seen a commit land.
    let mut first = ChildRun::default();
    let spec = format!(
        "{}|{topic}|{group}|{partitions}|{per_partition}|",
        fx.bootstrap()
    );
    run_child(test, &spec, &mut first, |run| {
        run.processed.len() >= total / 4 + 7 && run.committed.values().any(|o| *o > 0)
    });
    assert!(
        !first.done && first.processed.len() < total,
        "the child finished before the kill ({} records): not a crash mid-stream",
        first.processed.len()
    );

    // What the group has committed now, read back from the broker.
    let committed = fx.committed(&group, &topic, partitions);
    let mut acked_since_commit = 0;
    let mut starts = Vec::new();
    for p in 0..partitions {
        let seen_committed = first.committed.get(&p).copied().unwrap_or(0);
        let processed_to = first.processed_to(p);
        let on_broker = committed[p as usize].unwrap_or(0);
        assert!(
            on_broker >= seen_committed,
            "p{p}: broker {on_broker} below what the child saw land ({seen_committed})"
        );
        assert!(
            on_broker <= processed_to,
            "p{p}: committed {on_broker} past the last processed record ({processed_to})"
        );
        acked_since_commit += processed_to - seen_committed;
        starts.push(on_broker);
    }

    // Run 2: restart in the same group, to the end, then a clean shutdown.
    let mut second = ChildRun::default();
    let spec = format!(
        "{}|{topic}|{group}|{partitions}|{per_partition}|{}",
        fx.bootstrap(),
        starts
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    run_child(test, &spec, &mut second, |_| false);
    assert!(second.done, "restart did not finish: {}", second.stderr);

    // Nothing lost; duplicates only from the uncommitted tail of run 1.
    let one: BTreeSet<_> = first.processed.iter().copied().collect();
    let two: BTreeSet<_> = second.processed.iter().copied().collect();
    assert_eq!(one.len(), first.processed.len(), "run 1 saw a record twice");
    assert_eq!(
        two.len(),
        second.processed.len(),
        "run 2 saw a record twice"
    );
    let lost: Vec<_> = (0..partitions)
        .flat_map(|p| (0..per_partition).map(move |o| (p, o)))
        .filter(|k| !one.contains(k) && !two.contains(k))
        .collect();
    let duplicates = one.intersection(&two).count() as i64;
    let expected: i64 = (0..partitions)
        .map(|p| first.processed_to(p) - starts[p as usize])
        .sum();
    println!(
        "crash ({test}) on {}: {total} records; run 1 processed {} before SIGKILL, broker committed \
         {starts:?} (child had seen {:?}); run 2 processed {}; lost {}; duplicates \
         {duplicates} (bound: {acked_since_commit} acked since the last commit the child saw); \
         {:?} in all",
        fx.kind(),
        first.processed.len(),
        first.committed,
        second.processed.len(),
        lost.len(),
        started.elapsed()
    );
    assert!(lost.is_empty(), "lost records: {lost:?}");
    assert_eq!(
        duplicates, expected,
        "restart starts exactly at the committed offsets"
    );
    assert!(
        duplicates <= acked_since_commit,
        "{duplicates} duplicates > {acked_since_commit} acked since the last commit"
    );
    // The clean shutdown of run 2 committed the end.
    assert_eq!(
        fx.committed(&group, &topic, partitions),
        vec![Some(per_partition); partitions as usize]
    );
}

/// Runs one child consumer, collecting its output into `run`; kills it with
/// SIGKILL as soon as `kill_when(run)` holds. Returns once it is gone.
fn run_child(test: &str, spec: &str, run: &mut ChildRun, kill_when: impl Fn(&ChildRun) -> bool) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD_ENV, spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the child consumer");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut killed = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "child timed out after {} records; stderr:\n{}",
                    run.processed.len(),
                    err_reader.join().unwrap_or_default()
                );
            }
        };
        // libtest may print "test NAME ... " in front of the first line.
        let Some(at) = line.find(MARK) else { continue };
        let mut words = line[at + MARK.len()..].split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("PROCESSED"), Some(p), Some(o)) => {
                run.processed.push((p.parse().unwrap(), o.parse().unwrap()))
            }
            (Some("COMMITTED"), Some(p), Some(o)) => {
                let (p, o): (i32, i64) = (p.parse().unwrap(), o.parse().unwrap());
                let e = run.committed.entry(p).or_insert(o);
                *e = (*e).max(o);
            }
            (Some("DONE"), _, _) => run.done = true,
            _ => {}
        }
        if !killed && kill_when(run) {
            // SIGKILL: no shutdown, no final commit, no destructor.
            child.kill().expect("SIGKILL the child");
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    run.stderr = err_reader.join().unwrap_or_default();
    if !killed {
        assert!(
            status.success(),
            "child failed: {status} after {} records\n{}",
            run.processed.len(),
            run.stderr
        );
    }
}

/// A child's spec (`bootstrap|topic|group|partitions|end|starts`): the topic,
/// the partition count, the end offset, where each partition starts, the
/// guard's builder, and a runtime (tracing to stderr).
fn child_setup(
    spec: &str,
) -> (
    String,
    usize,
    i64,
    Vec<i64>,
    offset_guard::GuardBuilder,
    tokio::runtime::Runtime,
) {
    let f: Vec<&str> = spec.split('|').collect();
    let (bootstrap, topic, group) = (f[0], f[1], f[2]);
    let partitions: usize = f[3].parse().unwrap();
    let end: i64 = f[4].parse().unwrap();
    let starts: Vec<i64> = if f[5].is_empty() {
        vec![0; partitions]
    } else {
        f[5].split(',').map(|s| s.parse().unwrap()).collect()
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        // Above MockCluster's 3 s first-join delay (a shorter session
        // expires while the JoinGroup waits), short enough that the
        // killed member leaves the group soon.
        .set("session.timeout.ms", "4000")
        .set("heartbeat.interval.ms", "400");
    let builder = OffsetGuard::builder(config)
        .retry(fast_retry(5))
        .commit_every(25)
        .commit_interval(Duration::from_millis(100))
        .shutdown_timeout(Duration::from_secs(5));
    (topic.to_string(), partitions, end, starts, builder, rt)
}

/// The child: consumes the topic with the guard, prints each record it
/// processes (then acks it) and each commit it sees land, one line each,
/// flushed. Stops once every partition is processed to its end.
fn crash_child(spec: &str) {
    let (topic, partitions, end, starts, builder, rt) = child_setup(spec);
    rt.block_on(async {
        let mut c = builder.build().unwrap();
        c.subscribe(&[&topic]).unwrap();
        let mut out = std::io::stdout().lock();
        let mut next = starts.clone();
        let mut seen_committed = vec![None; partitions];
        let mut n = 0u64;
        while next.iter().any(|o| *o < end) {
            let r = tokio::time::timeout(Duration::from_secs(30), c.recv())
                .await
                .unwrap_or_else(|_| panic!("no record within 30 s; next {next:?}; {:?}", c.stats()))
                .expect("recv")
                .expect("consumer running");
            let (p, o) = (r.partition(), r.offset());
            assert_eq!(o, next[p as usize], "p{p}: records in order from the start");
            next[p as usize] = o + 1;
            // Process (the output is the side effect), then ack.
            writeln!(out, "{MARK}PROCESSED {p} {o}").unwrap();
            out.flush().unwrap();
            r.ack();
            for s in c.partitions() {
                let seen = &mut seen_committed[s.partition as usize];
                if let Some(offset) = s.committed.filter(|_| s.committed != *seen) {
                    *seen = s.committed;
                    writeln!(out, "{MARK}COMMITTED {} {offset}", s.partition).unwrap();
                    out.flush().unwrap();
                }
            }
            n += 1;
            if n.is_multiple_of(5) {
                // Some work per record, so the parent's kill lands mid-stream.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let report = c.shutdown().await.unwrap();
        for co in &report.committed {
            writeln!(out, "{MARK}COMMITTED {} {}", co.partition, co.offset).unwrap();
        }
        assert!(report.not_committed.is_empty(), "{report:?}");
        writeln!(out, "{MARK}DONE").unwrap();
        out.flush().unwrap();
    });
}

/// The own-loop child: its own `StreamConsumer` loop, `track` and ack; prints each record it
/// processes (then acks it) and each commit it sees land, one line each,
/// flushed. Stops once every partition is processed to its end.
fn crash_child_own_loop(spec: &str) {
    let (topic, partitions, end, starts, builder, rt) = child_setup(spec);
    rt.block_on(async {
        let (consumer, c) = builder
            .build_consumer::<StreamConsumer<GuardContext>>()
            .unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        let mut out = std::io::stdout().lock();
        let mut next = starts.clone();
        let mut seen_committed = vec![None; partitions];
        let mut n = 0u64;
        while next.iter().any(|o| *o < end) {
            let r = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
                .await
                .unwrap_or_else(|_| panic!("no record within 30 s; next {next:?}; {:?}", c.stats()))
                .expect("recv");
            let token = c.track(&r);
            let (p, o) = (r.partition(), r.offset());
            assert_eq!(o, next[p as usize], "p{p}: records in order from the start");
            next[p as usize] = o + 1;
            // Process (the output is the side effect), then ack.
            writeln!(out, "{MARK}PROCESSED {p} {o}").unwrap();
            out.flush().unwrap();
            drop(r);
            token.ack();
            for s in c.partitions() {
                let seen = &mut seen_committed[s.partition as usize];
                if let Some(offset) = s.committed.filter(|_| s.committed != *seen) {
                    *seen = s.committed;
                    writeln!(out, "{MARK}COMMITTED {} {offset}", s.partition).unwrap();
                    out.flush().unwrap();
                }
            }
            n += 1;
            if n.is_multiple_of(5) {
                // Some work per record, so the parent's kill lands mid-stream.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let report = c.shutdown(&*consumer).await.unwrap();
        for co in &report.committed {
            writeln!(out, "{MARK}COMMITTED {} {}", co.partition, co.offset).unwrap();
        }
        assert!(report.not_committed.is_empty(), "{report:?}");
        writeln!(out, "{MARK}DONE").unwrap();
        out.flush().unwrap();
    });
}
