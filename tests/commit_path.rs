//! The core commit path against a broker: resume after shutdown, retries,
//! retries exhausted, an in-flight commit never overtaken, an un-acked record
//! holding the commit point, shutdown with the brokers gone.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Fixture, fast_retry, recv_n, unique};
use offset_guard::failure_log::FailedOffsetLog;
use offset_guard::{AckToken, FailureReason, MemorySink, Record, RetryPolicy};
use rdkafka::types::RDKafkaApiKey;
use rdkafka::types::RDKafkaRespErr;

/// Receives exactly `n` records (or panics after `timeout`).
/// Acks tokens from many tasks in a shuffled order.
async fn ack_concurrently(tokens: Vec<AckToken>) {
    let mut tokens = tokens;
    shuffle(&mut tokens, 0x5eed);
    let mut tasks = Vec::new();
    for chunk in tokens.chunks(37) {
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            for t in chunk.into_iter().rev() {
                tokio::task::yield_now().await;
                t.ack();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

fn key(r: &Record) -> (i32, i64) {
    (r.partition(), r.offset())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_shutdown_then_restart_reads_zero_duplicates() {
    let fx = Fixture::any();
    let (topic, group) = (unique("resume"), unique("g-resume"));
    fx.create_topic(&topic, 3);
    fx.produce(&topic, 3, 200, 0);

    let mut c = fx.guard(&group).build().unwrap();
    c.subscribe(&[&topic]).unwrap();
    let records = recv_n(&mut c, 600, Duration::from_secs(60)).await;
    let first: HashSet<_> = records.iter().map(key).collect();
    assert_eq!(first.len(), 600);
    ack_concurrently(records.iter().map(|r| r.ack_token()).collect()).await;
    let report = c.shutdown().await.unwrap();
    assert!(
        report.not_committed.is_empty(),
        "{:?}",
        report.not_committed
    );
    assert!(!report.deadline_exceeded);

    // Read back from the broker: every partition committed at its end.
    assert_eq!(
        fx.committed(&group, &topic, 3),
        vec![Some(200); 3],
        "on {}",
        fx.kind()
    );

    // Restart in the same group: only the new records arrive.
    fx.produce(&topic, 3, 50, 200);
    let mut c = fx.guard(&group).build().unwrap();
    c.subscribe(&[&topic]).unwrap();
    let records = recv_n(&mut c, 150, Duration::from_secs(60)).await;
    let dups: Vec<_> = records
        .iter()
        .map(key)
        .filter(|k| first.contains(k))
        .collect();
    println!("duplicates after restart on {}: {}", fx.kind(), dups.len());
    assert!(dups.is_empty(), "records seen twice: {dups:?}");
    for r in &records {
        assert!(r.offset() >= 200, "old record {:?}", key(r));
    }
    for r in records {
        r.ack();
    }
    c.shutdown().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 3), vec![Some(250); 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacked_record_holds_the_commit_point() {
    let fx = Fixture::any();
    let (topic, group) = (unique("hold"), unique("g-hold"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 100, 0);

    let mut c = fx.guard(&group).no_commit_interval().build().unwrap();
    c.subscribe(&[&topic]).unwrap();
    let records = recv_n(&mut c, 100, Duration::from_secs(60)).await;
    let mut held = None;
    let mut tokens = Vec::new();
    for r in &records {
        if r.offset() == 40 {
            held = Some(r.ack_token());
        } else {
            tokens.push(r.ack_token());
        }
    }
    ack_concurrently(tokens).await;
    c.commit_now().await.unwrap();
    assert_eq!(
        fx.committed(&group, &topic, 1),
        vec![Some(40)],
        "stops just below the un-acked offset"
    );
    let st = &c.partitions()[0];
    assert_eq!(st.first_unacked, Some(40));

    held.unwrap().ack();
    let landed = c.commit_now().await.unwrap();
    assert_eq!(landed[0].offset, 100);
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(100)]);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_errors_are_retried_and_the_commit_lands() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("retry"), unique("g-retry"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 20, 0);

    let mut c = fx
        .guard(&group)
        .retry(fast_retry(10))
        .no_commit_interval()
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    for r in recv_n(&mut c, 20, Duration::from_secs(60)).await {
        r.ack();
    }
    // librdkafka retries some of these itself before they reach us; inject
    // enough that ours must retry too.
    use RDKafkaRespErr::*;
    fx.mock_cluster().request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[
            RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ],
    );
    let landed = c.commit_now().await.expect("commit lands after retries");
    assert_eq!(landed[0].offset, 20);
    let stats = c.stats();
    println!(
        "sent {} retried {}",
        stats.commits_sent, stats.commits_retried
    );
    assert!(stats.commits_retried >= 1, "{stats:?}");
    assert_eq!(stats.commits_succeeded, 1);
    assert_eq!(stats.offsets_failed, 0);
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(20)]);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_go_to_the_sink_and_later_commits_still_land() {
    let fx = Fixture::mock();
    let common::Injected {
        topic,
        group,
        sink,
        log_path,
        consumer: c,
        records,
    } = fx.injected("exhaust", 1, 30, 3).await;
    let (first, rest) = records.split_at(10);
    for r in first {
        r.ack_token().ack();
    }
    fx.fail_commits(RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, 40);
    let started = Instant::now();
    let err = c.commit_now().await.expect_err("retries exhausted");
    println!("gave up after {:?}: {err}", started.elapsed());
    assert!(
        matches!(err, offset_guard::Error::CommitFailed { attempts: 3, .. }),
        "{err:?}"
    );
    let failed = sink.records();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].reason, FailureReason::RetriesExhausted);
    assert_eq!(failed[0].offset, 10);
    assert_eq!(failed[0].attempts, 3);
    assert_eq!(failed[0].topic, topic);
    assert!(failed[0].error_code.is_some());
    assert_eq!(c.stats().offsets_failed, 1);
    assert_eq!(fx.committed(&group, &topic, 1), vec![None]);

    // The consumer keeps going and a higher offset lands.
    fx.clear_commit_errors();
    for r in rest {
        r.ack_token().ack();
    }
    let landed = c.commit_now().await.unwrap();
    assert_eq!(landed[0].offset, 30);
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(30)]);
    c.shutdown().await.unwrap();

    // The durable log holds the same record, readable after shutdown.
    let log = offset_guard::failure_log::LogReader::open(&log_path).unwrap();
    assert!(log.issues().is_empty(), "{:?}", log.issues());
    let logged: Vec<_> = log.failures().collect();
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].offset, 10);
    assert_eq!(logged[0].reason, FailureReason::RetriesExhausted);
    assert_eq!(logged[0].group_id, group);
    assert_eq!(logged[0].error_code.as_deref(), Some("RequestTimedOut"));
    // The later commit of 30 covered the failed 10: the log says so itself.
    assert!(log.unresolved().is_empty(), "{:?}", log.unresolved());
    let resolutions: Vec<_> = log
        .entries()
        .iter()
        .filter_map(|e| match e {
            offset_guard::failure_log::LogEntry::Resolved(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(resolutions.len(), 1, "{resolutions:?}");
    let r = &resolutions[0];
    assert_eq!((r.partition, r.offset, r.covers()), (0, 10, 30), "{r:?}");
    assert_eq!(r.how.as_str(), "superseded");
    std::fs::remove_file(&log_path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_up_offset_committed_later_is_resolved_in_the_log_and_higher_ones_stay_open() {
    let fx = Fixture::mock();
    let common::Injected {
        topic,
        group,
        log_path,
        consumer: c,
        records,
        ..
    } = fx.injected("covered", 2, 20, 2).await;
    let (p0, p1): (Vec<_>, Vec<_>) = records.iter().partition(|r| r.partition() == 0);
    for r in p0.iter().take(5).chain(p1.iter().take(7)) {
        r.ack_token().ack();
    }
    fx.fail_commits(RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, 40);
    c.commit_now().await.expect_err("retries exhausted");
    fx.clear_commit_errors();
    // Partition 0 goes on to 8; partition 1 gets no new ack: commit_now
    // offers its given-up 7 again.
    for r in p0.iter().skip(5).take(3) {
        r.ack_token().ack();
    }
    c.commit_now().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 2), vec![Some(8), Some(7)]);
    // A third failure, above every commit: it stays unresolved.
    for r in p0.iter().skip(8).take(2) {
        r.ack_token().ack();
    }
    fx.fail_commits(RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, 40);
    c.commit_now().await.expect_err("retries exhausted");
    // Shutdown's final commit of 10 fails too (the errors are still there).
    let _ = c.shutdown().await;

    let log = offset_guard::failure_log::LogReader::open(&log_path).unwrap();
    let resolved: HashSet<(i32, i64, i64, &str)> = log
        .entries()
        .iter()
        .filter_map(|e| match e {
            offset_guard::failure_log::LogEntry::Resolved(r) => {
                Some((r.partition, r.offset, r.covers(), r.how.as_str()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        resolved,
        HashSet::from([(0, 5, 8, "superseded"), (1, 7, 7, "recommitted")])
    );
    let open: Vec<(i32, i64)> = log
        .unresolved()
        .iter()
        .map(|f| (f.partition, f.offset))
        .collect();
    assert!(open.contains(&(0, 10)), "{open:?}");
    assert!(open.iter().all(|&(p, o)| p == 0 && o == 10), "{open:?}");
    std::fs::remove_file(&log_path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_in_flight_commit_is_never_overtaken() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("inflight"), unique("g-inflight"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 1000, 0);

    let mut c = fx
        .guard(&group)
        .async_commits()
        .no_commit_interval()
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let records = recv_n(&mut c, 1000, Duration::from_secs(60)).await;
    // Every response from the broker now takes 300 ms: each commit is in
    // flight long enough for hundreds of acks to queue behind it.
    fx.mock_cluster()
        .broker_round_trip_time(1, Duration::from_millis(300))
        .unwrap();
    let mut seen = Vec::new();
    for chunk in records.chunks(100) {
        for r in chunk {
            r.ack_token().ack();
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        let now = fx.committed(&group, &topic, 1)[0];
        seen.push(now);
    }
    let landed = c.commit_now().await.unwrap();
    let final_offset = fx.committed(&group, &topic, 1)[0];
    seen.push(final_offset);
    println!("committed offsets observed: {seen:?}; commit_now landed {landed:?}");
    assert_eq!(final_offset, Some(1000));
    for w in seen.windows(2) {
        assert!(w[1] >= w[0], "committed offset went backwards: {seen:?}");
    }
    let stats = c.stats();
    println!("commits sent for 1000 async acks: {}", stats.commits_sent);
    assert!(
        stats.commits_sent < 100,
        "acks during an in-flight commit must coalesce: {stats:?}"
    );
    fx.mock_cluster()
        .broker_round_trip_time(1, Duration::ZERO)
        .unwrap();
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_meets_its_deadline_with_every_broker_down() {
    let fx = Fixture::mock_with(3);
    let (topic, group) = (unique("down"), unique("g-down"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 10, 0);

    let sink = MemorySink::new();
    let mut c = fx
        .guard(&group)
        .retry(fast_retry(100))
        .no_commit_interval()
        .shutdown_timeout(Duration::from_secs(3))
        .failure_sink(sink.clone())
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    for r in recv_n(&mut c, 10, Duration::from_secs(60)).await {
        r.ack();
    }
    for b in 1..=3 {
        fx.mock_cluster().broker_down(b).unwrap();
    }
    let started = Instant::now();
    let report = c.shutdown().await.unwrap();
    let took = started.elapsed();
    println!("shutdown took {took:?}: {report:?}");
    assert!(
        took < Duration::from_secs(4),
        "shutdown overran its 3 s deadline: {took:?}"
    );
    assert_eq!(report.not_committed.len(), 1, "{report:?}");
    assert_eq!(report.not_committed[0].offset, 10);
    assert!(matches!(
        report.not_committed[0].reason,
        FailureReason::ShutdownDeadline | FailureReason::RetriesExhausted
    ));
    assert_eq!(sink.records(), report.not_committed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_go_straight_to_the_sink_without_retrying() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("fatal"), unique("g-fatal"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 5, 0);

    let sink = MemorySink::new();
    let mut c = fx
        .guard(&group)
        .retry(fast_retry(10))
        .no_commit_interval()
        .failure_sink(sink.clone())
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    for r in recv_n(&mut c, 5, Duration::from_secs(60)).await {
        r.ack();
    }
    fx.fail_commits(
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        1,
    );
    let err = c.commit_now().await.expect_err("a permanent error");
    assert!(
        matches!(err, offset_guard::Error::CommitFailed { attempts: 1, .. }),
        "{err:?}"
    );
    let failed = sink.records();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].reason, FailureReason::Fatal);
    assert_eq!(failed[0].attempts, 1, "no retry loop");
    assert_eq!(
        failed[0].error_code,
        Some(rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    assert_eq!(c.stats().commits_retried, 0);
    assert_eq!(fx.committed(&group, &topic, 1), vec![None]);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_for_partitions_not_owned_are_errors_never_commits() {
    let fx = Fixture::any();
    let (topic, other, group) = (unique("own"), unique("other"), unique("g-own"));
    fx.create_topic(&topic, 1);
    fx.create_topic(&other, 1);
    fx.produce(&topic, 1, 5, 0);

    let mut c = fx.guard(&group).no_commit_interval().build().unwrap();
    c.subscribe(&[&topic]).unwrap();
    for r in recv_n(&mut c, 5, Duration::from_secs(60)).await {
        r.ack();
    }
    for (t, p) in [(other.as_str(), 0), (topic.as_str(), 7)] {
        let err = c.ack_offset(t, p, 3).expect_err("not owned");
        assert!(
            matches!(err, offset_guard::Error::NotOwned { .. }),
            "{err:?}"
        );
    }
    // an offset of an owned partition that was never delivered is refused too
    assert_eq!(
        c.ack_offset(&topic, 0, 99).unwrap(),
        offset_guard::AckStatus::Unknown
    );
    let landed = c.commit_now().await.unwrap();
    assert_eq!(landed.len(), 1);
    assert_eq!(
        (landed[0].topic.as_str(), landed[0].offset),
        (topic.as_str(), 5)
    );
    assert_eq!(c.stats().acks_stale, 2);
    assert_eq!(c.stats().acks_unknown, 1);
    c.shutdown().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(5)]);
    assert_eq!(fx.committed(&group, &other, 1), vec![None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_without_shutdown_neither_hangs_nor_loses_acked_work() {
    let fx = Fixture::any();
    let (topic, group) = (unique("drop"), unique("g-drop"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 10, 0);

    let mut c = fx.guard(&group).no_commit_interval().build().unwrap();
    c.subscribe(&[&topic]).unwrap();
    for r in recv_n(&mut c, 10, Duration::from_secs(60)).await {
        r.ack();
    }
    let started = Instant::now();
    drop(c); // the final commit runs in the background
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "drop blocked for {:?}",
        started.elapsed()
    );
    // No signal leaves the dropped consumer: observe the broker.
    common::wait_until(
        Duration::from_secs(20),
        "the background commit to land",
        || fx.committed(&group, &topic, 1) == vec![Some(10)],
    );
}

/// A final commit that misses the shutdown deadline (3 s round trip, 1 s
/// deadline): every offset in `not_committed` is in the failed-offset log, read
/// by a fresh reader, when `shutdown()` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_committed_offsets_are_durable_when_shutdown_returns() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("durable"), unique("g-durable"));
    fx.create_topic(&topic, 12);
    fx.produce(&topic, 12, 1, 0);
    let dir = std::env::temp_dir().join(unique("og-durable"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("failed.jsonl");
    let mut c = fx
        .guard(&group)
        .no_commit_interval()
        .shutdown_timeout(Duration::from_secs(1))
        .failed_offset_log(&path)
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    for r in recv_n(&mut c, 12, Duration::from_secs(60)).await {
        r.ack();
    }
    fx.mock_cluster()
        .broker_round_trip_time(1, Duration::from_secs(3))
        .unwrap();
    let report = c.shutdown().await.unwrap();
    let logged: HashSet<(i32, i64)> = offset_guard::failure_log::LogReader::open(&path)
        .unwrap()
        .failures()
        .map(|f| (f.partition, f.offset))
        .collect();
    fx.mock_cluster()
        .broker_round_trip_time(1, Duration::ZERO)
        .unwrap();
    assert!(report.deadline_exceeded, "{report:?}");
    assert_eq!(report.not_committed.len(), 12, "{report:?}");
    assert_eq!(report.log_flushed, Some(true));
    for f in &report.not_committed {
        assert!(
            logged.contains(&(f.partition, f.offset)),
            "{f:?} not in the log"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Records the failed-offset log refuses are visible in `Stats`: with its
/// directory gone and a queue bound of 1, 3 failed offsets (a fatal commit
/// error on 3 partitions) leave 1 waiting for the disk and 2 refused, counted
/// in `failed_log_dropped` (and still in `offsets_failed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_log_records_are_counted_in_stats() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("refused"), unique("g-refused"));
    fx.create_topic(&topic, 3);
    fx.produce(&topic, 3, 1, 0);
    let dir = std::env::temp_dir().join(unique("og-refused"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = fx
        .guard(&group)
        .no_commit_interval()
        .retry(RetryPolicy::none())
        .failed_offset_log(FailedOffsetLog::builder(dir.join("failed.jsonl")).max_unwritten(1))
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    for r in recv_n(&mut c, 3, Duration::from_secs(60)).await {
        r.ack();
    }
    std::fs::remove_dir_all(&dir).unwrap();
    fx.fail_commits(
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        1,
    );
    assert!(c.commit_now().await.is_err());
    assert_eq!(c.stats().offsets_failed, 3);
    common::wait_until(Duration::from_secs(10), "2 records refused", || {
        c.stats().failed_log_dropped == 2
    });
    let report = c.shutdown().await.unwrap();
    assert_eq!(report.log_flushed, Some(false), "{report:?}");
    assert_eq!(
        (report.stats.offsets_failed, report.stats.failed_log_dropped),
        (3, 2),
        "{:?}",
        report.stats
    );
}
