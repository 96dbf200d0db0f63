//! Replay of the failed-offset log on the next run (`replay_failed_offsets`):
//! an unresolved offset ahead of the group's committed offset is committed
//! again (and fetching starts there); one behind it is refused (never move an
//! offset backwards); both get their resolution in the log.

mod common;
#[path = "common/logs.rs"]
mod logs;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Fixture, recv_n, unique};
use offset_guard::failure_log::{FailedOffsetLog, FsyncPolicy, LogReader, ResolutionKind};
use offset_guard::{
    BuildError, FailedOffset, FailureReason, FailureSink, OffsetGuard, RetryPolicy,
};
use rdkafka::ClientConfig;
use rdkafka::types::RDKafkaRespErr;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_recommits_a_logged_offset_ahead_and_refuses_one_behind() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("replay"), unique("g-replay"));
    let log_path = std::env::temp_dir().join(format!("{group}.jsonl"));
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 50, 0);

    // Run 1: 10 records per partition committed, then a commit fails for good
    // (fatal: not tried again, not even by the final commit at shutdown): 25
    // on p0 and 20 on p1 are logged.
    let mut c = fx
        .guard(&group)
        .no_commit_interval()
        .retry(RetryPolicy::none())
        .failed_offset_log(&log_path)
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let records = recv_n(&mut c, 100, Duration::from_secs(30)).await;
    let upto = |p: i32| if p == 0 { 25 } else { 20 };
    let (first, later): (Vec<_>, Vec<_>) = records.into_iter().partition(|r| r.offset() < 10);
    for r in first {
        r.ack();
    }
    c.commit_now().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 2), vec![Some(10), Some(10)]);
    fx.fail_commits(
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        1,
    );
    for r in later {
        if r.offset() < upto(r.partition()) {
            r.ack();
        }
    }
    assert!(c.commit_now().await.is_err());
    let report = c.shutdown().await.unwrap();
    assert!(
        report.not_committed.is_empty(),
        "{:?}",
        report.not_committed
    );
    assert_eq!(fx.committed(&group, &topic, 2), vec![Some(10), Some(10)]);
    let before = LogReader::open(&log_path).unwrap();
    let mut unresolved: Vec<_> = before
        .unresolved()
        .iter()
        .map(|f| (f.partition, f.offset))
        .collect();
    unresolved.sort();
    assert_eq!(unresolved, vec![(0, 25), (1, 20)], "each logged once");

    // Meanwhile another member processed p1 further and committed 30 (it
    // acks nothing of p0).
    let mut other = fx.guard(&group).no_commit_interval().build().unwrap();
    other.subscribe(&[&topic]).unwrap();
    for r in recv_n(&mut other, 80, Duration::from_secs(30)).await {
        if r.partition() == 1 && r.offset() < 30 {
            r.ack();
        }
    }
    other.shutdown().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 2), vec![Some(10), Some(30)]);

    // Run 2, replaying the log: p0's 25 is ahead of 10 -> committed again and
    // fetching starts there; p1's 20 is behind 30 -> refused.
    let replayed = Arc::new(Mutex::new(Vec::new()));
    let r2 = replayed.clone();
    let mut c = fx
        .guard(&group)
        .no_commit_interval()
        .failed_offset_log(&log_path)
        .replay_failed_offsets()
        .on_assign(move |a| r2.lock().unwrap().extend(a.replayed.clone()))
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let records = recv_n(&mut c, 45, Duration::from_secs(30)).await;
    let first = |p: i32| {
        records
            .iter()
            .filter(|r| r.partition() == p)
            .map(|r| r.offset())
            .min()
    };
    assert_eq!(first(0), Some(25), "p0 resumes at the replayed offset");
    assert_eq!(first(1), Some(30), "p1 resumes at the group's offset");
    assert_eq!(
        replayed
            .lock()
            .unwrap()
            .iter()
            .map(|o| (o.partition, o.offset))
            .collect::<Vec<_>>(),
        vec![(0, 25)]
    );
    common::wait_until(Duration::from_secs(10), "the replayed commit lands", || {
        fx.committed(&group, &topic, 2) == vec![Some(25), Some(30)]
    });
    assert_eq!(c.stats().offsets_replayed, 1);
    for r in records {
        r.ack();
    }
    c.shutdown().await.unwrap();
    assert_eq!(fx.committed(&group, &topic, 2), vec![Some(50), Some(50)]);

    // The log says how each was resolved, and nothing is left to replay.
    let after = LogReader::open(&log_path).unwrap();
    assert!(after.unresolved().is_empty(), "{:?}", after.unresolved());
    let mut resolutions = logs::resolutions(&after);
    resolutions.sort_by_key(|r| r.0);
    assert_eq!(
        resolutions,
        vec![
            (0, 25, ResolutionKind::Recommitted),
            (
                1,
                20,
                ResolutionKind::Superseded {
                    committed_offset: 30
                }
            ),
        ]
    );
    println!(
        "replay: p0 logged 25 over committed 10 -> recommitted; p1 logged 20 under committed 30 -> superseded"
    );
    let _ = std::fs::remove_file(&log_path);
}

/// The log's own settings through the builder (`failed_offset_log` with a
/// `LogBuilder`): rotation at 1 byte puts every record in a file of its own,
/// and replay reads the rotated files too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_works_with_the_log_options_form() {
    let fx = Fixture::mock();
    let (topic, group) = (unique("replay-opts"), unique("g-replay-opts"));
    let dir = std::env::temp_dir().join(&group);
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("failed.jsonl");
    fx.create_topic(&topic, 2);
    fx.produce(&topic, 2, 50, 0);
    let options = || {
        FailedOffsetLog::builder(&log_path)
            .max_file_bytes(1)
            .max_files(10)
            .fsync(FsyncPolicy::Batched {
                max_records: 10,
                max_delay: Duration::from_millis(10),
            })
    };

    // A previous run logged p0 at 25 and p1 at 20, one file each.
    let log = options().open().unwrap();
    for (partition, offset) in [(0, 25), (1, 20)] {
        log.record(FailedOffset::new(
            &group,
            &topic,
            partition,
            offset,
            FailureReason::RetriesExhausted,
        ));
    }
    log.close().unwrap();
    assert!(dir.join("failed.jsonl.1").is_file());

    let mut c = fx
        .guard(&group)
        .no_commit_interval()
        .failed_offset_log(options())
        .replay_failed_offsets()
        .build()
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let records = recv_n(&mut c, 55, Duration::from_secs(30)).await;
    for p in [0, 1] {
        let first = records
            .iter()
            .filter(|r| r.partition() == p)
            .map(|r| r.offset())
            .min();
        assert_eq!(first, Some(if p == 0 { 25 } else { 20 }), "p{p}");
    }
    common::wait_until(Duration::from_secs(10), "the replayed commits land", || {
        fx.committed(&group, &topic, 2) == vec![Some(25), Some(20)]
    });
    assert_eq!(c.stats().offsets_replayed, 2);
    drop(records);
    c.shutdown().await.unwrap();

    // Both resolutions appended, each in a file of its own: 4 files, rotated by
    // the options given to the builder.
    let reader = LogReader::open(&log_path).unwrap();
    assert!(reader.unresolved().is_empty(), "{:?}", reader.unresolved());
    assert_eq!(reader.entries().len(), 4);
    assert_eq!(reader.files().len(), 4, "{:?}", reader.files());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn replay_needs_the_failed_offset_log() {
    let err = OffsetGuard::builder(
        ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .set("group.id", "g")
            .clone(),
    )
    .replay_failed_offsets()
    .build()
    .err()
    .expect("a build error");
    assert!(matches!(err, BuildError::MissingDependency { .. }), "{err}");
    assert_eq!(err.setting(), Some("replay_failed_offsets"));
    assert_eq!(
        err.to_string(),
        "replay_failed_offsets needs failed_offset_log to be set"
    );
}
