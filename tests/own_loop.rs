//! The own-loop front-end (`build_consumer` + `track`): the user's own rdkafka
//! loop with the guard's commit core beside it. Committed offsets are read
//! back from the broker. MockCluster by default; the broker-agnostic tests run
//! on a real broker with `OFFSET_GUARD_BOOTSTRAP`.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::group::{
    CommitMonitor, Event, Feeder, Ledger, Member, assert_duplicates_within, assert_monotonic,
    member_builder, refused_and_not_reowned,
};
use common::{Fixture, unique};
use offset_guard::{AckStatus, AckToken, GuardContext, GuardHandle};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// Receives `n` messages, tracking each; returns (partition, offset, token).
async fn recv_tracked(
    consumer: &StreamConsumer<GuardContext>,
    guard: &GuardHandle,
    n: usize,
) -> Vec<(i32, i64, AckToken)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} messages", out.len()))
            .expect("recv");
        out.push((m.partition(), m.offset(), guard.track(&m)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_shutdown_then_restart_reads_zero_duplicates() {
    let fx = Fixture::any();
    let (topic, group) = (unique("own-resume"), unique("g-own-resume"));
    fx.create_topic(&topic, 3);
    fx.produce(&topic, 3, 100, 0);
    let (consumer, guard) = fx
        .guard(&group)
        .build_consumer::<StreamConsumer<GuardContext>>()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let got = recv_tracked(&consumer, &guard, 300).await;
    // Half acked inline, half from spawned tasks in reverse order.
    let (inline, later): (Vec<_>, Vec<_>) = got.into_iter().partition(|(_, o, _)| o % 2 == 0);
    for (_, _, t) in inline {
        assert_eq!(t.ack(), AckStatus::Recorded);
    }
    let tasks: Vec<_> = later
        .into_iter()
        .rev()
        .map(|(_, _, t)| tokio::spawn(async move { t.ack() }))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), AckStatus::Recorded);
    }
    let report = guard.shutdown(&*consumer).await.unwrap();
    assert!(report.not_committed.is_empty(), "{report:?}");
    drop(consumer);
    assert_eq!(fx.committed(&group, &topic, 3), vec![Some(100); 3]);

    fx.produce(&topic, 3, 50, 100);
    let (consumer, guard) = fx
        .guard(&group)
        .build_consumer::<StreamConsumer<GuardContext>>()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let again = recv_tracked(&consumer, &guard, 150).await;
    let keys: HashSet<_> = again.iter().map(|(p, o, _)| (*p, *o)).collect();
    assert_eq!(keys.len(), 150);
    assert!(again.iter().all(|(_, o, _)| *o >= 100), "0 duplicates");
    for (_, _, t) in again {
        t.ack();
    }
    guard.shutdown(&*consumer).await.unwrap();
    drop(consumer);
    assert_eq!(fx.committed(&group, &topic, 3), vec![Some(150); 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacked_message_holds_the_commit_point() {
    let fx = Fixture::any();
    let (topic, group) = (unique("own-hold"), unique("g-own-hold"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 50, 0);
    let (consumer, guard) = fx
        .guard(&group)
        .build_consumer::<StreamConsumer<GuardContext>>()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut got = recv_tracked(&consumer, &guard, 50).await;
    let held = got.remove(20).2;
    let tasks: Vec<_> = got
        .into_iter()
        .rev()
        .map(|(_, _, t)| tokio::spawn(async move { t.ack() }))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    guard.commit_now().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(20)]);
    assert_eq!(guard.partitions()[0].first_unacked, Some(20));
    held.ack();
    guard.commit_now().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(50)]);
    let p = &guard.partitions()[0];
    assert_eq!((p.log_end, p.lag), (Some(50), Some(0)));
    guard.shutdown(&*consumer).await.unwrap();
}

const PARTITIONS: i32 = 4;

/// A second own-loop member joins mid-stream, then leaves.
async fn join_then_leave(strategy: &str) {
    let fx = Fixture::any();
    let (topic, group) = (unique("own-join"), unique("g-own-join"));
    fx.create_topic(&topic, PARTITIONS);
    let builder = || member_builder(&fx, &group, strategy).revoke_timeout(Duration::from_secs(5));
    let ledger = Arc::new(Ledger::default());
    let monitor = CommitMonitor::start(&fx, &group, &topic, PARTITIONS);
    let feeder = Feeder::start(&fx, &topic, PARTITIONS, 5, Duration::from_millis(20));
    let a = Member::start_own_loop("a", builder(), &topic, ledger.clone());
    let (b_end, hw) = common::group::join_then_leave(
        &ledger,
        &monitor,
        feeder,
        PARTITIONS,
        || Member::start_own_loop("b", builder(), &topic, ledger.clone()),
        200,
    )
    .await;
    let a_end = a.stop().await;
    let history = monitor.stop();
    let committed = fx.committed(&group, &topic, PARTITIONS);
    let dup_acked = ledger.duplicates_of_acked();
    let ended = [a_end, b_end];
    let (dropped, bound) = refused_and_not_reowned(&ended);
    let revokes: u64 = ended.iter().map(|m| m.stats().revokes).sum();
    let on_revoke: u64 = ended
        .iter()
        .map(|m| m.stats().offsets_revoke_committed)
        .sum();
    println!(
        "own loop, {strategy} on {}: {} records, {} duplicates of acked records (bound {bound}), \
         {revokes} revokes, {on_revoke} offsets committed on revoke, committed {committed:?}",
        fx.kind(),
        hw.iter().sum::<i64>(),
        dup_acked.len()
    );
    assert!(ledger.missing(&hw).is_empty(), "no record lost");
    assert_monotonic(&history);
    assert_eq!(committed, hw.iter().map(|h| Some(*h)).collect::<Vec<_>>());
    assert!(
        ended[1]
            .events
            .iter()
            .any(|e| matches!(e, Event::Assigned(x) if !x.partitions.is_empty()))
    );
    assert!(revokes >= 1, "the hand-offs went through revoke callbacks");
    assert_duplicates_within(&dup_acked, &dropped, bound);
    // A real broker accepts the revoke's commit, so nothing acked is
    // processed twice; MockCluster may refuse it (see rebalance.rs).
    if !fx.is_mock() || dropped.is_empty() {
        assert!(dup_acked.is_empty(), "{dup_acked:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_then_leave_range() {
    join_then_leave("range").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_then_leave_cooperative_sticky() {
    join_then_leave("cooperative-sticky").await;
}

/// Lost partitions (heartbeats refused) are never committed while not ours;
/// old tokens are stale; their acked offsets are kept and committed when the
/// partition is assigned straight back, where fetching resumes (issue 13,
/// item 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_partitions_are_never_committed() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let fx = Fixture::mock();
    let (topic, group) = (unique("own-lost"), unique("g-own-lost"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 30, 0);
    let sink = offset_guard::MemorySink::new();
    let mut cfg = fx.config(&group);
    cfg.set("session.timeout.ms", "3000");
    let lost = Arc::new(std::sync::Mutex::new(Vec::new()));
    let lost_in = lost.clone();
    let (consumer, guard) = offset_guard::OffsetGuard::builder(cfg)
        .retry(common::fast_retry(3))
        .no_commit_interval()
        .failure_sink(sink.clone())
        .on_lost(move |l| lost_in.lock().unwrap().extend(l.not_committed.clone()))
        .build_consumer::<StreamConsumer<GuardContext>>()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let got = recv_tracked(&consumer, &guard, 30).await;
    for (_, o, t) in &got[..10] {
        assert_eq!(t.clone().ack(), AckStatus::Recorded, "{o}");
    }
    guard.commit_now().await.unwrap();
    for (_, _, t) in &got[10..20] {
        t.clone().ack();
    }
    // The coordinator forgets the member: the next heartbeats say so.
    fx.mock_cluster().request_errors(
        RDKafkaApiKey::Heartbeat,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID],
    );
    // Keep polling (the lost callback runs in our poll) until it is reported.
    // Messages of the lost assignment still buffered are not expected; any
    // message received before the loss is reported would fail below.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut first_after = None;
    while lost.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no loss reported");
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await {
            panic!("a message before the loss was reported: {}", m.offset());
        }
    }
    let not_committed: Vec<_> = lost.lock().unwrap().iter().map(|c| c.offset).collect();
    assert_eq!(not_committed, vec![20], "reported by the lost hook");
    for (_, _, t) in &got[20..] {
        assert_eq!(
            t.clone().ack(),
            AckStatus::Stale,
            "an old assignment's token"
        );
    }
    // Assigned straight back: fetching resumes at the kept offset.
    while first_after.is_none() {
        assert!(std::time::Instant::now() < deadline, "not assigned back");
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await {
            first_after = Some(m.offset());
        }
    }
    assert_eq!(
        first_after,
        Some(20),
        "no record acked before the loss again"
    );
    guard.commit_now().await.unwrap();
    assert_eq!(
        fx.committed(&group, &topic, 1),
        vec![Some(20)],
        "committed once ours again"
    );
    guard.shutdown(&*consumer).await.unwrap();
    assert!(sink.records().is_empty(), "{:?}", sink.records());
}

/// Manual `assign` on a `BaseConsumer`, no group rebalance: tracked
/// messages are committed for the group all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_assign_without_a_rebalance() {
    let fx = Fixture::any();
    let (topic, group) = (unique("own-assign"), unique("g-own-assign"));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 20, 0);
    let (consumer, guard) = fx
        .guard(&group)
        .build_consumer::<BaseConsumer<GuardContext>>()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 1, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut n = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while n < 20 {
        assert!(std::time::Instant::now() < deadline, "{n} of 20 messages");
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("poll");
            assert_eq!(m.partition(), 1);
            guard.track(&m).ack();
            n += 1;
        }
    }
    guard.commit_now().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 2), vec![None, Some(20)]);
    let report = guard.shutdown(&*consumer).await.unwrap();
    assert_eq!(report.committed.len(), 1);
}

/// Manual `assign`, then `subscribe`: what was acked under the manual
/// assignment is committed when the group's assignment replaces it (not
/// dropped without a trace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_under_a_manual_assign_survive_the_switch_to_subscribe() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("own-switch"), unique("g-own-switch"));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 20, 0);
    let (consumer, guard) = fx
        .guard(&group)
        .no_commit_interval()
        .build_consumer::<StreamConsumer<GuardContext>>()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let got = recv_tracked(&consumer, &guard, 10).await;
    for (_, _, t) in &got[..5] {
        t.clone().ack();
    }
    consumer.subscribe(&[&topic]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while guard.stats().assigns == 0 {
        assert!(std::time::Instant::now() < deadline, "no group assign");
        let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
    }
    guard.commit_now().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 2)[0], Some(5));
    guard.shutdown(&*consumer).await.unwrap();
}
