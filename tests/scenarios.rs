//! SCENARIOS.md rows that do not involve rebalances, against a broker: a
//! broker outage while a commit is pending (#3), a fenced static member (#6),
//! `_NO_OFFSET` (#8), an unknown topic or partition on commit (#23),
//! and idle offsets re-committed (#22).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Fixture, fast_retry, unique, wait_until};
use offset_guard::failure_log::LogReader;
use offset_guard::{Error, FailureReason, GuardedConsumer, MemorySink, OffsetGuard, Record};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// Receives exactly `n` records (or panics after `timeout`).
async fn recv_n(c: &mut GuardedConsumer, n: usize, timeout: Duration) -> Vec<Record> {
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
    fx.mock_cluster().request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID],
    );
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
    std::fs::remove_file(&path).unwrap();
}

/// Row 8: `_NO_OFFSET`. The MockCluster passes an injected `_NO_OFFSET`
/// through to the client as the OffsetCommit result: the guard treats it as a
/// no-op success (counted in `commits_noop`), not a failure, not logged, not
/// retried. A `commit_now` with nothing new acked then sends nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_offset_is_a_noop_success_never_a_failure() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("nooffset"), unique("g-nooffset"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 10, 0);

    let sink = MemorySink::new();
    let path = log_path(&group);
    let mut c = fx
        .guard(&group)
        .retry(fast_retry(10))
        .no_commit_interval()
        .failure_sink(sink.clone())
        .failed_offset_log(&path)
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    for r in recv_n(&mut c, 10, Duration::from_secs(60)).await {
        r.ack();
    }
    fx.mock_cluster().request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR__NO_OFFSET],
    );
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
    let (topic, group) = (unique("unknown"), unique("g-unknown"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 20, 0);

    let sink = MemorySink::new();
    let path = log_path(&group);
    let mut c = fx
        .guard(&group)
        .retry(fast_retry(10))
        .no_commit_interval()
        .failure_sink(sink.clone())
        .failed_offset_log(&path)
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let records = recv_n(&mut c, 20, Duration::from_secs(60)).await;
    let (first, rest) = records.split_at(10);
    for r in first {
        r.ack_token().ack();
    }
    // More than librdkafka's own retries and ours together can use up.
    fx.mock_cluster().request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART; 50],
    );
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

    fx.mock_cluster()
        .clear_request_errors(RDKafkaApiKey::OffsetCommit);
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
        fx.mock_cluster().request_errors(
            RDKafkaApiKey::OffsetCommit,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED],
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
