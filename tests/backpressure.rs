//! The owned front-end never stalls the group: a slow application gets its
//! partitions paused, not the poll thread blocked; un-acked work is bounded
//! per partition; `pause`/`resume` through the guard hold records back and
//! hand them out again in order (issue 13, items 1, 2 and 4).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Fixture, fast_retry, recv_n, unique};
use offset_guard::{Error, GuardedConsumer, OffsetGuard, Record};

fn offsets(records: &[Record], partition: i32) -> Vec<i64> {
    records
        .iter()
        .filter(|r| r.partition() == partition)
        .map(Record::offset)
        .collect()
}

/// Counts rebalance hooks.
#[derive(Default, Clone)]
struct Hooks {
    lost: Arc<AtomicUsize>,
    revoked: Arc<AtomicUsize>,
}

fn counted(b: offset_guard::GuardBuilder, h: &Hooks) -> offset_guard::GuardBuilder {
    let (lost, revoked) = (h.lost.clone(), h.revoked.clone());
    b.on_lost(move |_| {
        lost.fetch_add(1, Ordering::SeqCst);
    })
    .on_revoke(move |_| {
        revoked.fetch_add(1, Ordering::SeqCst);
    })
}

/// The case: the application stops receiving for longer than
/// `max.poll.interval.ms` with thousands of records waiting. The member
/// stays in the group, what it acked is committed, nothing is lost or
/// delivered twice, and what was fetched meanwhile stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_application_stays_in_the_group_and_loses_nothing() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("slow"), unique("g-slow"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 6_000, 0);
    let mut cc = fx.config(&group);
    cc.set("session.timeout.ms", "3000")
        .set("max.poll.interval.ms", "3000");
    let hooks = Hooks::default();
    // A backlog of 8 x 256 records (the default is 128 batches, more than
    // this stream), so that the slow application gets its partition paused.
    let mut c = counted(OffsetGuard::builder(cc).retry(fast_retry(5)), &hooks)
        .no_commit_interval()
        .prefetch_batches(8)
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();

    let first = recv_n(&mut c, 300, Duration::from_secs(30)).await;
    first.into_iter().for_each(|r| {
        r.ack();
    });
    c.commit_now().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(300)]);
    let next = recv_n(&mut c, 100, Duration::from_secs(30)).await;
    next.into_iter().for_each(|r| {
        r.ack();
    });

    // A slow downstream call: no `recv` for over twice max.poll.interval.ms.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let stats = c.stats();
    assert!(stats.partitions_paused >= 1, "{stats:?}");
    // Bounded: the backlog limit (8 x 256) plus at most two batches.
    assert!(
        stats.delivered <= 400 + 2_048 + 2 * 256,
        "fetched while the application was away: {}",
        stats.delivered
    );
    let landed = c.commit_now().await.expect("still a member: commit lands");
    assert_eq!(landed[0].offset, 400);
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(400)]);
    assert_eq!(hooks.lost.load(Ordering::SeqCst), 0, "never lost");
    assert_eq!(hooks.revoked.load(Ordering::SeqCst), 0, "never revoked");

    let rest = recv_n(&mut c, 5_600, Duration::from_secs(60)).await;
    assert_eq!(offsets(&rest, 0), (400..6_000).collect::<Vec<_>>());
    rest.into_iter().for_each(|r| {
        r.ack();
    });
    let stats = c.stats();
    assert_eq!((stats.partitions_lost, stats.assigns), (0, 1), "{stats:?}");
    let report = c.shutdown().await.unwrap();
    assert!(report.not_committed.is_empty(), "{report:?}");
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(6_000)]);
}

/// A member joins while the application is not calling `recv`: the poll
/// thread serves the revoke and the new assignment, the new member gets its
/// partition and starts at what was committed, and the slow member goes on
/// with the partition it kept, nothing of the revoked one handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_is_served_while_the_application_is_not_receiving() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("slowrevoke"), unique("g-slowrevoke"));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 3_000, 0);
    let hooks = Hooks::default();
    let mut a = counted(fx.guard(&group), &hooks)
        .no_commit_interval()
        .build()
        .unwrap();
    a.subscribe(&[&topic]).unwrap();
    let got = recv_n(&mut a, 600, Duration::from_secs(30)).await;
    got.into_iter().for_each(|r| {
        r.ack();
    });
    a.commit_now().await.unwrap();
    let committed = fx.committed(&group, &topic, 2);

    // `a` now stops receiving, with thousands of records fetched; a second
    // member joins.
    let mut b = fx.guard(&group).build().unwrap();
    b.subscribe(&[&topic]).unwrap();
    let first_of_b = recv_n(&mut b, 1, Duration::from_secs(30)).await;
    let (p, o) = (first_of_b[0].partition(), first_of_b[0].offset());
    // At least once: MockCluster may run a second rebalance while `b` joins.
    assert!(hooks.revoked.load(Ordering::SeqCst) >= 1, "a's revoke ran");
    assert_eq!(hooks.lost.load(Ordering::SeqCst), 0);
    assert_eq!(
        Some(o),
        committed[p as usize].or(Some(0)),
        "b starts at the committed offset of partition {p}"
    );
    first_of_b.into_iter().for_each(|r| {
        r.ack();
    });

    // `a` receives again: only its other partition, from where it was.
    let kept = 1 - p;
    let next = recv_n(&mut a, 100, Duration::from_secs(30)).await;
    assert!(
        next.iter().all(|r| r.partition() == kept),
        "only partition {kept}"
    );
    assert_eq!(next[0].offset(), committed[kept as usize].unwrap_or(0));
    next.into_iter().for_each(|r| {
        r.ack();
    });
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

/// One record that is never acked stops its own partition at the cap, not
/// the consumer; acking it lets the partition go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_never_acked_stops_its_partition_at_the_cap_not_the_consumer() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("cap"), unique("g-cap"));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 1_000, 0);
    let mut c = fx
        .guard(&group)
        .batch_size(50)
        .max_outstanding_per_partition(100)
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let mut stuck = None;
    let mut received = Vec::new();
    // Everything of partition 1 arrives although partition 0 is stuck.
    while offsets(&received, 1).len() < 1_000 {
        let r = recv_n(&mut c, 1, Duration::from_secs(30)).await.remove(0);
        if (r.partition(), r.offset()) == (0, 0) {
            stuck = Some(r.ack_token());
        } else {
            r.ack_token().ack();
        }
        received.push(r);
    }
    let p0 = offsets(&received, 0).len();
    assert!(
        p0 <= 100 + 2 * 50,
        "partition 0 delivered {p0} records behind its un-acked first one"
    );
    let outstanding = c
        .partitions()
        .into_iter()
        .find(|s| s.partition == 0)
        .unwrap()
        .outstanding;
    assert!((100..=200).contains(&outstanding), "{outstanding}");
    stuck.expect("offset 0 of partition 0 was received").ack();
    while offsets(&received, 0).len() < 1_000 {
        let r = recv_n(&mut c, 1, Duration::from_secs(30)).await.remove(0);
        r.ack_token().ack();
        received.push(r);
    }
    assert_eq!(
        offsets(&received, 0),
        (0..1_000).collect::<Vec<_>>(),
        "in order, once each"
    );
    c.shutdown().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 2), vec![Some(1_000); 2]);
}

/// After `pause` returns no record of the partition is handed out, fetched
/// ones included; `resume` hands them out again, in order, none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_a_partition_back_and_resume_continues_in_order() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("pause"), unique("g-pause"));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 2_000, 0);
    let mut c: GuardedConsumer = fx.guard(&group).build().unwrap();
    c.subscribe(&[&topic]).unwrap();
    let mut received = recv_n(&mut c, 10, Duration::from_secs(30)).await;
    // Make sure both partitions are assigned before pausing.
    while c.partitions().len() < 2 {
        received.extend(recv_n(&mut c, 1, Duration::from_secs(30)).await);
    }
    c.pause(&[(topic.as_str(), 0)]).unwrap();
    let at_pause = offsets(&received, 0).len();
    while offsets(&received, 1).len() < 2_000 {
        received.extend(recv_n(&mut c, 1, Duration::from_secs(30)).await);
    }
    assert_eq!(
        offsets(&received, 0).len(),
        at_pause,
        "nothing of the paused partition after pause returned"
    );
    // Nothing more arrives while paused.
    let more = tokio::time::timeout(Duration::from_millis(500), c.recv()).await;
    assert!(more.is_err(), "got {more:?} while the partition was paused");

    c.resume(&[(topic.as_str(), 0)]).unwrap();
    let rest = recv_n(&mut c, 2_000 - at_pause, Duration::from_secs(30)).await;
    received.extend(rest);
    assert_eq!(offsets(&received, 0), (0..2_000).collect::<Vec<_>>());
    received.into_iter().for_each(|r| {
        r.ack();
    });

    let err = c.pause(&[("not-a-topic", 0)]).unwrap_err();
    assert!(
        matches!(&err, Error::NotOwned { topic, partition: 0 } if topic == "not-a-topic"),
        "{err:?}"
    );
    c.shutdown().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 2), vec![Some(2_000); 2]);
}

/// A record whose task panicked (its token dropped without an ack) is no
/// longer a silent stall: counted, listed per partition and in the shutdown
/// report; a record acked by coordinates and then dropped is not reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_dropped_without_an_ack_is_reported_not_silent() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("abandon"), unique("g-abandon"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 10, 0);
    // No periodic commit: under load one landed the first acks before
    // `commit_now` (which then had nothing to commit), on main too.
    let mut c = fx
        .guard(&group)
        .commit_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let records = recv_n(&mut c, 10, Duration::from_secs(30)).await;
    let mut records = records.into_iter();
    for r in records.by_ref().take(3) {
        r.ack();
    }
    // Offset 3: its task panics with the token.
    let token = records.next().unwrap().ack_token();
    let task = tokio::spawn(async move {
        let _token = token;
        panic!("processing failed");
    });
    assert!(task.await.is_err(), "the task panicked");
    // Offset 4: dropped without a token taken; offset 5: acked by
    // coordinates, then dropped (not abandoned).
    drop(records.next().unwrap());
    let r5 = records.next().unwrap();
    c.ack_offset(&topic, 0, 5).unwrap();
    drop(r5);
    for r in records {
        r.ack();
    }
    assert_eq!(c.stats().records_abandoned, 2);
    assert_eq!(c.partitions()[0].abandoned, vec![3, 4]);
    let landed = c.commit_now().await.unwrap();
    assert_eq!(
        landed[0].offset, 3,
        "the commit stops before the abandoned record"
    );
    // Acking it later by coordinates releases the partition.
    c.ack_offset(&topic, 0, 3).unwrap();
    assert_eq!(c.partitions()[0].abandoned, vec![4]);
    let report = c.shutdown().await.unwrap();
    assert_eq!(report.abandoned, vec![(topic.clone(), 0, 4)]);
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(4)]);
}

/// A record left un-acked for `stuck_after` is reported once, with its age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_unacked_for_stuck_after_is_reported_with_its_age() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("stuck"), unique("g-stuck"));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 5, 0);
    let mut c = fx
        .guard(&group)
        .stuck_after(Duration::from_millis(300))
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let records = recv_n(&mut c, 5, Duration::from_secs(30)).await;
    let mut slow = None;
    for r in records {
        if r.offset() == 2 {
            slow = Some(r);
        } else {
            r.ack();
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while c.stats().records_stuck == 0 {
        assert!(tokio::time::Instant::now() < deadline, "not reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = c.partitions().remove(0);
    assert_eq!(status.first_unacked, Some(2));
    let age = status.first_unacked_age.expect("sampled");
    assert!(age >= Duration::from_millis(300), "{age:?}");
    assert_eq!(c.stats().records_stuck, 1, "once per record");
    slow.unwrap().ack();
    c.shutdown().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(5)]);
}

/// The total cap holds across partitions: un-acked records handed out stay
/// near `max_outstanding`, and acking lets the rest through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_outstanding_cap_holds_across_partitions() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("total"), unique("g-total"));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 2_000, 0);
    let mut c = fx
        .guard(&group)
        .batch_size(50)
        .max_outstanding(100)
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let mut held = recv_n(&mut c, 1, Duration::from_secs(30)).await;
    // Receive without acking until nothing more comes for a second.
    while let Ok(r) = tokio::time::timeout(Duration::from_secs(1), c.recv()).await {
        held.push(r.unwrap().expect("a record"));
    }
    assert!(
        (100..=200).contains(&held.len()),
        "{} un-acked records handed out with max_outstanding(100)",
        held.len()
    );
    let mut total = held.len();
    for r in held {
        r.ack();
    }
    while total < 4_000 {
        let r = recv_n(&mut c, 1, Duration::from_secs(30)).await.remove(0);
        r.ack();
        total += 1;
    }
    c.shutdown().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 2), vec![Some(2_000); 2]);
}

/// A partition paused by the application and then revoked (a second member
/// joined): the records held back for it belong to an ended assignment, so
/// `recv` drops them (counted in `skipped_revoked`) at once, not only at a
/// `resume` the application has no reason to call for a partition it no
/// longer owns; the records of the new assignment are handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_records_of_a_paused_partition_are_dropped_when_it_is_revoked() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("pause-revoke"), unique("g-pause-revoke"));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 1_000, 0);
    let mut a: GuardedConsumer = fx.guard(&group).build().unwrap();
    a.subscribe(&[&topic]).unwrap();
    let mut received = recv_n(&mut a, 1, Duration::from_secs(30)).await;
    while a.partitions().len() < 2 {
        received.extend(recv_n(&mut a, 1, Duration::from_secs(30)).await);
    }
    a.pause(&[(topic.as_str(), 0), (topic.as_str(), 1)])
        .unwrap();
    received.into_iter().for_each(|r| {
        r.ack();
    });
    // Nothing is handed out while both are paused: what was fetched is held.
    let more = tokio::time::timeout(Duration::from_millis(300), a.recv()).await;
    assert!(more.is_err(), "got {more:?} while paused");
    let before = a.stats().skipped_revoked;

    let mut b: GuardedConsumer = fx.guard(&group).build().unwrap();
    b.subscribe(&[&topic]).unwrap();
    let mut handed_after = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while a.stats().skipped_revoked == before || handed_after == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "held records of the revoked assignment still kept: {:?}",
            a.stats()
        );
        tokio::select! {
            r = a.recv() => {
                if let Some(r) = r.unwrap() {
                    handed_after += 1;
                    r.ack();
                }
            }
            r = b.recv() => {
                if let Some(r) = r.unwrap() {
                    r.ack();
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    assert!(a.stats().skipped_revoked > before);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
