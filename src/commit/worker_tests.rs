//! The worker's command handling, against a scripted committer (no broker):
//! revokes first, kept offsets settled at assign, losts never committed, a
//! finish that misses its deadline, a worker that dies.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};

use super::handle::{self, CommitHandle, Committer, WorkerParts};
use crate::assignment::{AckToken, Assignment, PartitionSlot};
use crate::config::Config;
use crate::deadline::Deadline;
use crate::error::Error;
use crate::failures::FailureRecorder;
use crate::partition::TopicPartition;
use crate::retry::RetryPolicy;
use crate::sink::{FailureReason, MemorySink};
use crate::stats::Metrics;
use crate::threads::{GuardThread, Lifecycle};

/// Answers commits from a script (then `Ok`), records what was sent.
#[derive(Default)]
struct Script {
    answers: Mutex<VecDeque<Option<RDKafkaErrorCode>>>,
    sent: Mutex<Vec<Vec<(i32, i64)>>>,
    group: Mutex<HashMap<i32, i64>>,
    each_takes: Duration,
    panics: bool,
}

impl Committer for Script {
    fn commit(&self, offsets: &TopicPartitionList) -> KafkaResult<()> {
        assert!(!self.panics, "committer bug");
        let batch = offsets
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => (e.partition(), o),
                other => panic!("not an offset: {other:?}"),
            })
            .collect();
        self.sent.lock().unwrap().push(batch);
        std::thread::sleep(self.each_takes);
        match self.answers.lock().unwrap().pop_front().flatten() {
            Some(code) => Err(KafkaError::ConsumerCommit(code)),
            None => Ok(()),
        }
    }

    fn committed(&self, tps: &[TopicPartition], _: Duration) -> KafkaResult<Vec<Option<i64>>> {
        let g = self.group.lock().unwrap();
        Ok(tps.iter().map(|tp| g.get(&tp.partition).copied()).collect())
    }

    fn log_end(&self, _: &TopicPartition) -> Option<i64> {
        None
    }
}

impl Script {
    fn answering(codes: &[Option<RDKafkaErrorCode>]) -> Self {
        Script {
            answers: Mutex::new(codes.iter().copied().collect()),
            ..Script::default()
        }
    }

    fn sent(&self) -> Vec<Vec<(i32, i64)>> {
        self.sent.lock().unwrap().clone()
    }
}

struct Guard {
    commits: CommitHandle,
    assignment: Arc<Assignment>,
    metrics: Arc<Metrics>,
    sink: MemorySink,
    life: Arc<Lifecycle>,
    thread: Option<JoinHandle<()>>,
}

fn guard(script: Arc<Script>) -> Guard {
    let retry = RetryPolicy::exponential()
        .initial_interval(Duration::from_millis(300))
        .jitter(0.0);
    guard_with(script, retry)
}

fn guard_with(script: Arc<Script>, retry: RetryPolicy) -> Guard {
    let config = Config {
        commit_interval: None,
        retry,
        ..Config::with_group("g")
    };
    let life = Arc::new(Lifecycle::default());
    let metrics = Arc::new(Metrics::default());
    let (commits, mailbox, assignment) = handle::wire(&config, &metrics, life.clone());
    let sink = MemorySink::new();
    let recorder = Arc::new(FailureRecorder::new(
        "g".into(),
        Some(Box::new(sink.clone())),
        None,
        metrics.clone(),
    ));
    let parts = WorkerParts {
        config: Arc::new(config),
        assignment: assignment.clone(),
        recorder,
        metrics: metrics.clone(),
        replay: HashMap::new(),
    };
    let thread = handle::start(parts, script, mailbox, life.clone()).unwrap();
    Guard {
        commits,
        assignment,
        metrics,
        sink,
        life,
        thread: Some(thread),
    }
}

impl Guard {
    /// Assigns partition `p` and acks `0..n` on it.
    fn acked(&self, p: i32, n: i64) -> Arc<PartitionSlot> {
        let slot = self.assignment.assign("t", p);
        for o in 0..n {
            assert!(slot.deliver(o));
            AckToken::new(slot.clone(), o).ack();
        }
        slot
    }

    fn finish(mut self) {
        let pending = self.commits.finish(Deadline::after(Duration::from_secs(5)));
        assert!(pending.unwrap().wait(Deadline::NEVER).is_some());
        self.thread.take().unwrap().join().unwrap();
    }
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn soon() -> (Deadline, Deadline, Deadline) {
    let now = Instant::now();
    (
        Deadline::after_from(now, Duration::ZERO),
        Deadline::after_from(now, Duration::from_secs(5)),
        Deadline::after_from(now, Duration::from_secs(6)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_is_served_between_the_attempts_of_a_normal_batch() {
    let script = Arc::new(Script::answering(&[Some(RDKafkaErrorCode::NotCoordinator)]));
    // A long backoff: the revoke must not have to race the retry.
    let retry = RetryPolicy::exponential()
        .initial_interval(Duration::from_secs(5))
        .max_interval(Duration::from_secs(5))
        .jitter(0.0);
    let g = guard_with(script.clone(), retry);
    let p0 = g.acked(0, 10);
    g.acked(1, 10);
    let commits = g.commits.clone();
    let normal = tokio::spawn(async move { commits.commit_now().await });
    wait_for("the first attempt", || script.sent().len() == 1);
    let (grace, deadline, wait) = soon();
    let revoked = g.commits.revoke(vec![p0], grace, deadline, wait).unwrap();
    assert_eq!(revoked.committed.len(), 1);
    let after = normal.await.unwrap().unwrap();
    assert_eq!(
        script.sent(),
        vec![vec![(0, 10), (1, 10)], vec![(0, 10)], vec![(1, 10)]],
        "the revoke went first; the retry sent only what is still owned"
    );
    assert_eq!(after.len(), 1);
    assert_eq!(g.metrics.snapshot().offsets_revoke_committed, 1);
    g.finish();
}

#[test]
fn a_kept_offset_is_committed_when_its_partition_comes_back_and_dropped_when_not() {
    let refused = Some(RDKafkaErrorCode::RebalanceInProgress);
    let script = Arc::new(Script::answering(&[refused, refused]));
    let g = guard(script.clone());
    let p0 = g.acked(0, 7);
    let p1 = g.acked(1, 9);
    let (grace, deadline, wait) = soon();
    let out = g
        .commits
        .revoke(vec![p0, p1], grace, deadline, wait)
        .unwrap();
    assert_eq!(out.deferred.len(), 2, "refused inside the revoke: kept");
    // p0 comes back (the group has 3 committed), p1 goes elsewhere.
    script.group.lock().unwrap().insert(0, 3);
    let back = g.assignment.assign("t", 0);
    let settled = g
        .commits
        .assigned(vec![back], vec![], vec![], Deadline::NEVER)
        .unwrap();
    assert_eq!(settled.start_at, vec![(TopicPartition::new("t", 0), 7)]);
    assert_eq!(settled.resumed.len(), 1);
    assert_eq!(settled.dropped.len(), 1);
    assert_eq!(settled.dropped[0].offset, 9);
    wait_for("the resumed commit", || script.sent().len() == 2);
    assert_eq!(script.sent()[1], vec![(0, 7)]);
    let failed = g.sink.records();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (failed[0].partition, failed[0].offset, failed[0].reason),
        (1, 9, FailureReason::RebalanceDropped)
    );
    g.finish();
}

#[test]
fn a_lost_partition_is_never_committed_while_not_owned_and_its_offset_is_kept_to_the_next_assign() {
    let script = Arc::new(Script::default());
    let g = guard(script.clone());
    g.acked(0, 5);
    g.acked(1, 8);
    g.acked(2, 4);
    let ended = ["t"; 3]
        .iter()
        .zip(0..3)
        .map(|(t, p)| g.assignment.revoke(t, p).unwrap())
        .collect();
    let not_committed = g.commits.lost(ended, Deadline::NEVER).unwrap();
    assert_eq!(not_committed.len(), 3);
    assert!(g.sink.records().is_empty(), "kept, not given up yet");
    assert!(script.sent().is_empty(), "nothing sent while not owned");
    // p0 comes back ahead of the group's offset (3): committed, fetching at 5.
    // p1 comes back but another member committed further (10): never backwards.
    // p2 went elsewhere: recorded as lost.
    script.group.lock().unwrap().insert(0, 3);
    script.group.lock().unwrap().insert(1, 10);
    let back = vec![g.assignment.assign("t", 0), g.assignment.assign("t", 1)];
    let settled = g
        .commits
        .assigned(back, vec![], vec![], Deadline::NEVER)
        .unwrap();
    assert_eq!(settled.start_at, vec![(TopicPartition::new("t", 0), 5)]);
    assert_eq!(settled.resumed.len(), 1);
    assert_eq!(settled.dropped.len(), 1);
    wait_for("the resumed commit", || script.sent().len() == 1);
    assert_eq!(script.sent(), vec![vec![(0, 5)]]);
    let failed = g.sink.records();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (failed[0].partition, failed[0].offset, failed[0].reason),
        (2, 4, FailureReason::Lost)
    );
    g.finish();
    assert_eq!(script.sent(), vec![vec![(0, 5)]]);
}

#[test]
fn a_lost_offset_never_reowned_is_recorded_as_lost_when_the_consumer_stops() {
    let script = Arc::new(Script::default());
    let g = guard(script.clone());
    g.acked(0, 5);
    let ended = vec![g.assignment.revoke("t", 0).unwrap()];
    assert_eq!(g.commits.lost(ended, Deadline::NEVER).unwrap().len(), 1);
    let sink = g.sink.clone();
    g.finish();
    assert!(script.sent().is_empty(), "{:?}", script.sent());
    let failed = sink.records();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (failed[0].offset, failed[0].reason),
        (5, FailureReason::Lost)
    );
}

#[test]
fn a_finish_that_misses_its_deadline_is_abandoned_and_the_worker_stops_retrying() {
    let script = Arc::new(Script {
        answers: Mutex::new(vec![Some(RDKafkaErrorCode::RequestTimedOut); 50].into()),
        each_takes: Duration::from_millis(200),
        ..Script::default()
    });
    let mut g = guard(script.clone());
    g.acked(0, 5);
    let deadline = Deadline::after(Duration::from_millis(100));
    let pending = g.commits.finish(deadline).unwrap();
    assert!(
        pending.wait(deadline).is_none(),
        "the deadline passed first"
    );
    g.thread.take().unwrap().join().unwrap();
    assert!(
        script.sent().len() <= 1,
        "no attempt after shutdown gave up"
    );
    assert!(
        g.sink.records().is_empty(),
        "shutdown, not the worker, records them"
    );
    assert!(g.life.is_stopped());
}

#[tokio::test]
async fn a_dead_worker_is_an_error_never_a_hang() {
    let script = Arc::new(Script {
        panics: true,
        ..Script::default()
    });
    let mut g = guard(script);
    g.acked(0, 1);
    let err = g.commits.commit_now().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::ThreadDied {
                thread: GuardThread::Commit
            }
        ),
        "{err:?}"
    );
    assert!(g.thread.take().unwrap().join().is_err());
    let err = g.commits.commit_now().await.unwrap_err();
    assert!(matches!(err, Error::ThreadDied { .. }), "{err:?}");
    let (grace, deadline, wait) = soon();
    assert!(g.commits.revoke(vec![], grace, deadline, wait).is_none());
}

/// A `commit_now` after a commit was given up sends the offset again (and
/// says so), instead of answering "nothing to commit" while nothing is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_now_after_a_give_up_tries_the_offset_again() {
    let timed_out = Some(RDKafkaErrorCode::RequestTimedOut);
    let script = Arc::new(Script::answering(&[timed_out; 3]));
    let retry = RetryPolicy::exponential()
        .initial_interval(Duration::from_millis(50))
        .jitter(0.0)
        .max_attempts(3);
    let g = guard_with(script.clone(), retry);
    g.acked(0, 10);
    // The second call arrives while the first one's commit is retrying.
    let commits = g.commits.clone();
    let first = tokio::spawn(async move { commits.commit_now().await });
    wait_for("the first attempt", || !script.sent().is_empty());
    let second = g.commits.commit_now().await;
    let first = first.await.unwrap();
    assert!(
        matches!(first, Err(Error::CommitFailed { .. })),
        "{first:?}"
    );
    let second = second.expect("the offset is sent again and lands");
    assert_eq!(second.len(), 1, "{second:?}");
    assert_eq!(script.sent().last(), Some(&vec![(0, 10)]));
    assert_eq!(
        g.sink.records().len(),
        1,
        "given up once, by the first call"
    );
    g.finish();
}

#[test]
fn a_resumed_offset_refused_while_its_partition_is_lost_again_is_kept_not_dropped() {
    let script = Arc::new(Script {
        answers: Mutex::new(VecDeque::from([Some(RDKafkaErrorCode::UnknownMemberId)])),
        each_takes: Duration::from_millis(300),
        ..Script::default()
    });
    let g = guard(script.clone());
    g.acked(0, 5);
    let ended = vec![g.assignment.revoke("t", 0).unwrap()];
    assert_eq!(g.commits.lost(ended, Deadline::NEVER).unwrap().len(), 1);
    script.group.lock().unwrap().insert(0, 3);
    let back = vec![g.assignment.assign("t", 0)];
    let settled = g
        .commits
        .assigned(back, vec![], vec![], Deadline::NEVER)
        .unwrap();
    assert_eq!(settled.resumed.len(), 1);
    // Lost again while the resumed commit is in flight; it is refused.
    wait_for("the resumed commit sent", || script.sent().len() == 1);
    let ended = vec![g.assignment.revoke("t", 0).unwrap()];
    let not_committed = g.commits.lost(ended, Deadline::NEVER).unwrap();
    assert_eq!(not_committed.len(), 1, "still not committed, still kept");
    assert_eq!(not_committed[0].offset, 5);
    let back = vec![g.assignment.assign("t", 0)];
    let settled = g
        .commits
        .assigned(back, vec![], vec![], Deadline::NEVER)
        .unwrap();
    assert_eq!(settled.start_at, vec![(TopicPartition::new("t", 0), 5)]);
    wait_for("the second resumed commit", || script.sent().len() == 2);
    assert_eq!(script.sent(), vec![vec![(0, 5)], vec![(0, 5)]]);
    assert!(g.sink.records().is_empty(), "{:?}", g.sink.records());
    g.finish();
}
