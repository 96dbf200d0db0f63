//! The guard follows jumps of a partition's read position: a seek through
//! the guard (forwards or backwards) and one behind its back through
//! `consumer()` (issue 13, item 4).

mod common;

use std::time::Duration;

use common::{Fixture, recv_n, unique};
use offset_guard::{Error, GuardedConsumer, Record};
use rdkafka::Offset;
use rdkafka::consumer::Consumer;

async fn receive(c: &mut GuardedConsumer, n: usize) -> Vec<Record> {
    recv_n(c, n, Duration::from_secs(30)).await
}

fn offsets(records: &[Record]) -> Vec<i64> {
    records.iter().map(Record::offset).collect()
}

fn setup(fx: &Fixture, name: &str) -> (String, String, GuardedConsumer) {
    let (topic, group) = (unique(name), unique(&format!("g-{name}")));
    fx.create_topic(&topic, 1);
    fx.produce(&topic, 1, 20, 0);
    let c = fx.guard(&group).no_commit_interval().build().unwrap();
    c.subscribe(&[&topic]).unwrap();
    (topic, group, c)
}

/// The case: ack 0..4, seek to 5: 5..19 are delivered again (not
/// dropped as "revoked") and, once acked, 20 is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seek_back_delivers_again_and_the_new_position_commits_to_the_end() {
    let fx = Fixture::mock();
    let (topic, group, mut c) = setup(&fx, "seekback");
    let all = receive(&mut c, 20).await;
    assert_eq!(offsets(&all), (0..20).collect::<Vec<_>>());
    for r in &all[..5] {
        r.ack_token().ack();
    }
    c.seek(&topic, 0, Offset::Offset(5)).await.unwrap();
    let again = receive(&mut c, 15).await;
    assert_eq!(offsets(&again), (5..20).collect::<Vec<_>>());
    // The old position's tokens are stale now.
    assert_eq!(
        all[10].ack_token().ack(),
        offset_guard::AckStatus::Stale,
        "acks of the position left behind"
    );
    for r in &again {
        r.ack_token().ack();
    }
    let landed = c.commit_now().await.unwrap();
    assert_eq!(landed[0].offset, 20);
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(20)]);
    assert_eq!(c.stats().acks_stale, 1);
    let status = &c.partitions()[0];
    assert_eq!(status.outstanding, 0, "{status:?}");
    c.shutdown().await.unwrap();
}

/// Seeking below the committed offset is the application's request: the new
/// position's commits go below it. Seeking forward skips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_seek_below_the_committed_offset_commits_there_and_forward_skips() {
    let fx = Fixture::mock();
    let (topic, group, mut c) = setup(&fx, "seekbelow");
    let all = receive(&mut c, 20).await;
    for r in &all[..10] {
        r.ack_token().ack();
    }
    c.commit_now().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(10)]);

    c.seek(&topic, 0, Offset::Offset(3)).await.unwrap();
    let again = receive(&mut c, 3).await;
    assert_eq!(offsets(&again), vec![3, 4, 5]);
    for r in &again {
        r.ack_token().ack();
    }
    c.commit_now().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(6)]);

    c.seek(&topic, 0, Offset::Offset(15)).await.unwrap();
    let ahead = receive(&mut c, 5).await;
    assert_eq!(offsets(&ahead), (15..20).collect::<Vec<_>>());
    for r in &ahead {
        r.ack_token().ack();
    }
    c.commit_now().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(20)]);

    let err = c
        .seek("not-a-topic", 0, Offset::Offset(0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotOwned { .. }), "{err:?}");
    c.shutdown().await.unwrap();
}

/// A seek behind the guard's back (through `consumer()`): the records are
/// delivered again, never dropped, and nothing is committed below the
/// committed offset; once past it, commits go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jump_back_behind_the_guards_back_delivers_again_and_never_commits_backwards() {
    let fx = Fixture::mock();
    let (topic, group, mut c) = setup(&fx, "seekraw");
    let all = receive(&mut c, 20).await;
    for r in &all[..10] {
        r.ack_token().ack();
    }
    c.commit_now().await.unwrap();
    c.consumer()
        .seek(&topic, 0, Offset::Offset(2), Duration::from_secs(10))
        .unwrap();
    let again = receive(&mut c, 18).await;
    assert_eq!(offsets(&again), (2..20).collect::<Vec<_>>());
    for r in &again[..4] {
        r.ack_token().ack();
    }
    c.commit_now().await.unwrap();
    assert_eq!(
        fx.committed(&group, &topic, 1),
        vec![Some(10)],
        "not moved back to 6"
    );
    for r in &again[4..] {
        r.ack_token().ack();
    }
    c.commit_now().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(20)]);
    assert_eq!(c.stats().skipped_revoked, 0);
    c.shutdown().await.unwrap();
}

/// A seek past the log end is reset by librdkafka (`auto.offset.reset`, here
/// to the start): the application did not ask for that jump back, so
/// nothing is committed below the committed offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_reset_after_a_seek_never_commits_backwards() {
    let fx = Fixture::mock();
    let (topic, group, mut c) = setup(&fx, "seekreset");
    let all = receive(&mut c, 20).await;
    for r in all {
        r.ack();
    }
    c.commit_now().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(20)]);
    c.seek(&topic, 0, Offset::Offset(1_000)).await.unwrap();
    let again = receive(&mut c, 3).await;
    assert_eq!(offsets(&again), vec![0, 1, 2], "reset to the start");
    for r in again {
        r.ack();
    }
    c.commit_now().await.unwrap();
    assert_eq!(
        fx.committed(&group, &topic, 1),
        vec![Some(20)],
        "not moved back to 3"
    );
    c.shutdown().await.unwrap();
}

/// An offset that is not a read position is refused with a typed error
/// naming it, and the position is unchanged (librdkafka would reset an
/// `Offset::Invalid` by `auto.offset.reset`, re-delivering from 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seek_to_an_offset_that_is_no_position_is_refused_and_changes_nothing() {
    let fx = Fixture::mock();
    let (topic, group, mut c) = setup(&fx, "seekinvalid");
    let first = receive(&mut c, 10).await;
    assert_eq!(offsets(&first), (0..10).collect::<Vec<_>>());
    for bad in [
        Offset::Invalid,
        Offset::Stored,
        Offset::Offset(-5),
        Offset::OffsetTail(-1),
    ] {
        match c.seek(&topic, 0, bad).await {
            Err(Error::InvalidSeek {
                topic: t,
                partition: 0,
                offset,
            }) => {
                assert_eq!((t.as_str(), offset), (topic.as_str(), bad));
            }
            other => panic!("seek to {bad:?}: {other:?}"),
        }
    }
    let e = c.seek(&topic, 0, Offset::Invalid).await.unwrap_err();
    assert!(e.to_string().contains("not a read position"), "{e}");
    // The position is where it was: 10..19 follow, nothing again.
    let rest = receive(&mut c, 10).await;
    assert_eq!(offsets(&rest), (10..20).collect::<Vec<_>>());
    for r in first.iter().chain(&rest) {
        r.ack_token().ack();
    }
    c.commit_now().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 1), vec![Some(20)]);
    c.shutdown().await.unwrap();
}
