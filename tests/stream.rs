//! The owned consumer fits the async ecosystem: a `futures::Stream` of
//! records, and a cloneable handle other tasks use while the receive loop
//! runs (issue 13, item 6).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Fixture, unique};
use futures::StreamExt;
use offset_guard::Error;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_flow_through_stream_combinators_and_every_ack_is_committed() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("stream"), unique("g-stream"));
    fx.create_topic(&topic, 3);
    fx.produce(&topic, 3, 300, 0);
    let mut c = fx.guard(&group).build().unwrap();
    c.subscribe(&[&topic]).unwrap();
    let processed = tokio::time::timeout(
        Duration::from_secs(60),
        (&mut c)
            .take(900)
            .map(|r| async move {
                let r = r.expect("no error");
                tokio::task::yield_now().await;
                (r.partition(), r.offset(), r.ack())
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>(),
    )
    .await
    .expect("900 records within 60 s");
    assert_eq!(processed.len(), 900);
    assert!(
        processed
            .iter()
            .all(|(_, _, s)| *s == offset_guard::AckStatus::Recorded)
    );
    c.shutdown().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 3), vec![Some(300); 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_commits_and_stops_the_loop_from_another_task() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("handle"), unique("g-handle"));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 5_000, 0);
    let mut c = fx.guard(&group).no_commit_interval().build().unwrap();
    c.subscribe(&[&topic]).unwrap();
    let handle = c.handle();
    let other = tokio::spawn({
        let handle = handle.clone();
        async move {
            while handle.stats().acked < 500 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let landed = handle.commit_now().await.expect("commit from the handle");
            assert!(!landed.is_empty());
            assert_eq!(handle.partitions().len(), 2);
            handle.stop();
        }
    });
    let mut acked: HashMap<i32, i64> = HashMap::new();
    // The loop ends only when the other task stops it (with every record
    // received it would wait for more): usually long before 10,000 records,
    // but on a loaded machine the loop can receive all of them before the
    // other task's `commit_now` and `stop` (seen once).
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(r) = c.next().await {
            let r = r.expect("no error");
            acked.insert(r.partition(), r.offset() + 1);
            r.ack();
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ended after stop()");
    other.await.unwrap();
    assert!(handle.is_stopped());
    assert!(c.recv().await.unwrap().is_none(), "stays stopped");
    let total: i64 = acked.values().sum();
    assert!((500..=10_000).contains(&total), "{total}");

    let report = c.shutdown().await.unwrap();
    assert!(report.not_committed.is_empty(), "{report:?}");
    let committed = fx.committed(&group, &topic, 2);
    for p in 0..2 {
        assert_eq!(
            committed[p as usize],
            acked.get(&p).copied(),
            "partition {p}"
        );
    }
    // A handle kept after shutdown: answers, never hangs, keeps nothing open.
    let err = handle.commit_now().await.unwrap_err();
    assert!(
        matches!(err, Error::ShutDown | Error::ThreadDied { .. }),
        "{err:?}"
    );
    assert!(handle.partitions().is_empty());
    let err = handle.pause(&[(topic.as_str(), 0)]).unwrap_err();
    assert!(matches!(err, Error::ShutDown), "{err:?}");
    let err = handle.ack_offset(&topic, 0, 1).unwrap_err();
    assert!(matches!(err, Error::ShutDown), "{err:?}");
    assert_eq!(handle.stats().acked, total as u64);
}
