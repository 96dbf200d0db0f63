//! Rebalance safety with two or three consumers in one group, for the eager
//! (`range`) and cooperative (`cooperative-sticky`) protocols: commit on
//! revoke, kept offsets across REBALANCE_IN_PROGRESS, lost partitions, epochs.
//!
//! Committed offsets are read back from the broker. Tests built on
//! `Fixture::any()` also run on Tansu (see TESTING.md).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::group::{CommitMonitor, Event, Feeder, Ledger, Member, assert_monotonic, until};
use common::{Fixture, unique};
use offset_guard::{FailureReason, GuardBuilder, MemorySink};

const PARTITIONS: i32 = 4;

/// A guard for a rebalance test: the group's assignment strategy, a short
/// session timeout on the mock (each mock rebalance waits session.timeout.ms - 1 s),
/// commits every 2 s (so a revoke has acked work to commit).
fn member_builder(fx: &Fixture, group: &str, strategy: &str) -> GuardBuilder {
    let mut cfg = fx.config(group);
    cfg.set("partition.assignment.strategy", strategy);
    if fx.is_mock() {
        cfg.set("session.timeout.ms", "3000");
    }
    offset_guard::OffsetGuard::builder(cfg)
        .retry(common::fast_retry(5))
        .commit_interval(Duration::from_secs(2))
        .shutdown_timeout(Duration::from_secs(10))
}

/// Second consumer joins mid-stream, then leaves; records keep flowing.
async fn join_then_leave(strategy: &str) {
    let fx = Fixture::any();
    let topic = unique("rb-join");
    let group = unique("g-join");
    fx.create_topic(&topic, PARTITIONS);
    let ledger = Arc::new(Ledger::default());
    let sinks = [MemorySink::new(), MemorySink::new()];
    let monitor = CommitMonitor::start(&fx, &group, &topic, PARTITIONS);
    let feeder = Feeder::start(&fx, &topic, PARTITIONS, 5, Duration::from_millis(20));

    let a = Member::start(
        "a",
        member_builder(&fx, &group, strategy).failure_sink(sinks[0].clone()),
        &topic,
        ledger.clone(),
    );
    until(Duration::from_secs(30), "a processes 200 records", || {
        ledger.processed_by("a") >= 200
    })
    .await;
    let b = Member::start(
        "b",
        member_builder(&fx, &group, strategy).failure_sink(sinks[1].clone()),
        &topic,
        ledger.clone(),
    );
    until(Duration::from_secs(60), "b processes 200 records", || {
        ledger.processed_by("b") >= 200
    })
    .await;
    let b_end = b.stop().await;
    let a_alone = ledger.processed_by("a");
    until(
        Duration::from_secs(60),
        "a alone processes 400 more",
        || ledger.processed_by("a") >= a_alone + 400,
    )
    .await;
    let hw = feeder.stop(PARTITIONS);
    let sent: i64 = hw.iter().sum();
    until(Duration::from_secs(30), "every record processed", || {
        ledger.missing(&hw).is_empty()
    })
    .await;
    let a_end = a.stop().await;
    let history = monitor.stop();

    let committed = fx.committed(&group, &topic, PARTITIONS);
    let dups = ledger.duplicates();
    let dup_acked = ledger.duplicates_of_acked();
    let sink_dropped: Vec<_> = sinks
        .iter()
        .flat_map(|s| s.records())
        .filter(|f| f.reason == FailureReason::RebalanceDropped)
        .collect();
    let (sa, sb) = (a_end.stats(), b_end.stats());
    println!(
        "{strategy} on {}: {sent} records, {} distinct processed, {} duplicates ({} of acked records); \
         a: {} revokes, {} offsets committed on revoke, {} deferred, {} resumed, {} dropped; \
         b: {} revokes, {} committed on revoke, {} deferred, {} resumed, {} dropped; \
         committed {committed:?}; history {history:?}",
        fx.kind(),
        ledger.distinct(),
        ledger.duplicate_count(),
        dup_acked.len(),
        sa.revokes,
        sa.offsets_revoke_committed,
        sa.offsets_deferred,
        sa.offsets_resumed,
        sa.offsets_rebalance_dropped,
        sb.revokes,
        sb.offsets_revoke_committed,
        sb.offsets_deferred,
        sb.offsets_resumed,
        sb.offsets_rebalance_dropped,
    );
    assert!(ledger.missing(&hw).is_empty(), "no record lost");
    assert_monotonic(&history);
    assert_eq!(
        committed,
        hw.iter().map(|h| Some(*h)).collect::<Vec<_>>(),
        "the final commit covers everything"
    );
    assert!(
        b_end
            .events
            .iter()
            .any(|e| matches!(e, Event::Assigned(x) if !x.partitions.is_empty()))
    );
    assert!(
        sa.revokes + sb.revokes >= 1,
        "the hand-offs went through revoke callbacks"
    );
    // Duplicates of acked records: only where a commit was refused during the
    // rebalance and the partition went to the other member, and only in the
    // refused range [last committed, refused offset).
    let dropped: Vec<_> = [&a_end, &b_end]
        .iter()
        .flat_map(|m| m.events.iter())
        .filter_map(|e| match e {
            Event::Assigned(a) => Some(a.dropped.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let bound: i64 = dropped
        .iter()
        .map(|d| d.offset - d.committed_before.unwrap_or(0))
        .sum();
    for (p, o) in &dup_acked {
        assert!(
            dropped.iter().any(|d| d.partition == *p
                && d.committed_before.unwrap_or(0) <= *o
                && *o < d.offset),
            "record {p}/{o} processed twice though no refused commit covers it (dropped: {dropped:?})"
        );
    }
    assert!(dup_acked.len() as i64 <= bound);
    assert_eq!(
        sink_dropped.len(),
        dropped.len(),
        "every dropped offset is in the failure sink"
    );
    if strategy == "cooperative-sticky" {
        assert!(
            dup_acked.is_empty(),
            "cooperative hand-off: 0 duplicates of acked records, got {dup_acked:?}"
        );
    }
    println!(
        "{strategy} on {}: duplicates of acked records: {} (bound: {bound} = acked but refused with the partition not re-owned, over {} offsets); all duplicates: {}",
        fx.kind(),
        dup_acked.len(),
        dropped.len(),
        dups.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_then_leave_range() {
    join_then_leave("range").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_then_leave_cooperative_sticky() {
    join_then_leave("cooperative-sticky").await;
}
