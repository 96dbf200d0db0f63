//! The one failure recorder: every offset the guard gives up on goes through
//! [`FailureRecorder::record`] to the user's [`FailureSink`] and the durable
//! failed-offset log, is counted, and (during shutdown) is kept for the
//! shutdown report. Resolutions go to the log from here too: of replayed
//! offsets, and of this run's failures once a later commit of their partition
//! covers them ([`FailureRecorder::take_covered`]).

use std::collections::{BTreeSet, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tracing::error;

use crate::failure_log::{FailedOffsetLog, Resolution};
use crate::partition::TopicPartition;
use crate::sink::{FailedOffset, FailureReason, FailureSink};
use crate::stats::{Metrics, Stats};

/// Shared by the commit worker, the rebalance callbacks and the handle; its
/// lock is private and never held while calling out.
pub(crate) struct FailureRecorder {
    group_id: String,
    sink: Option<Box<dyn FailureSink>>,
    log: Option<FailedOffsetLog>,
    metrics: Arc<Metrics>,
    state: Mutex<RecorderState>,
    /// How many offsets `RecorderState::uncovered` holds: landed commits skip
    /// the lock while it is 0 (the usual case).
    uncovered: AtomicUsize,
}

#[derive(Default)]
struct RecorderState {
    member_id: Option<String>,
    /// Failures recorded since shutdown started (for its report).
    captured: Option<Vec<FailedOffset>>,
    /// Offsets logged as failed in this run that no commit has covered yet,
    /// per partition (only with a log: they are what a later resolution
    /// line resolves).
    uncovered: HashMap<TopicPartition, BTreeSet<i64>>,
}

impl FailureRecorder {
    pub(crate) fn new(
        group_id: String,
        sink: Option<Box<dyn FailureSink>>,
        log: Option<FailedOffsetLog>,
        metrics: Arc<Metrics>,
    ) -> Self {
        FailureRecorder {
            group_id,
            sink,
            log,
            metrics,
            state: Mutex::new(RecorderState::default()),
            uncovered: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RecorderState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn log(&self) -> Option<&FailedOffsetLog> {
        self.log.as_ref()
    }

    /// The counters, with the failed-offset log's refusals.
    pub(crate) fn stats(&self) -> Stats {
        let mut stats = self.metrics.snapshot();
        stats.failed_log_dropped = self.log.as_ref().map_or(0, FailedOffsetLog::dropped);
        stats
    }

    pub(crate) fn set_member_id(&self, id: Option<String>) {
        self.lock().member_id = id;
    }

    /// A failure record for this group, with no error code and no attempts.
    pub(crate) fn failure(
        &self,
        tp: &TopicPartition,
        offset: i64,
        reason: FailureReason,
        message: impl Into<String>,
    ) -> FailedOffset {
        FailedOffset {
            time: SystemTime::now(),
            group_id: self.group_id.clone(),
            member_id: self.lock().member_id.clone(),
            topic: tp.topic.to_string(),
            partition: tp.partition,
            offset,
            reason,
            error_code: None,
            error_message: message.into(),
            attempts: 0,
            elapsed: Duration::ZERO,
        }
    }

    /// Counts a failed offset and hands it to the sink and the log. A sink
    /// that panics is counted in `sink_errors` and does not take the calling
    /// guard thread down. During shutdown an offset already recorded since
    /// shutdown started (the commit thread and shutdown's own deadline can
    /// both give it up) is recorded once.
    pub(crate) fn record(&self, f: FailedOffset) {
        let mut state = self.lock();
        if let Some(captured) = state.captured.as_mut() {
            let seen = captured
                .iter()
                .any(|c| c.partition == f.partition && c.offset == f.offset && c.topic == f.topic);
            if seen {
                return;
            }
            captured.push(f.clone());
        }
        Metrics::inc(&self.metrics.offsets_failed);
        if let Some(log) = &self.log {
            // Queued under the lock, so a resolution taken by `take_covered`
            // after this is queued after the failure it resolves.
            let tp = TopicPartition::new(f.topic.as_str(), f.partition);
            if state.uncovered.entry(tp).or_default().insert(f.offset) {
                self.uncovered.fetch_add(1, Ordering::Relaxed);
            }
            log.record(f.clone());
        }
        drop(state);
        if let Some(sink) = &self.sink {
            let (topic, partition, offset) = (f.topic.clone(), f.partition, f.offset);
            if catch_unwind(AssertUnwindSafe(|| sink.record(f))).is_err() {
                self.metrics.sink_errors.fetch_add(1, Ordering::Relaxed);
                error!(group = %self.group_id, %topic, partition, offset, "the failure sink panicked; the failure is in the counters (and the failed-offset log, if any)");
            }
        }
    }

    /// Appends a resolution to the failed-offset log, if there is one.
    pub(crate) fn resolve(&self, r: Resolution) {
        if let Some(log) = &self.log {
            log.resolve(r);
        }
    }

    /// A commit of `committed` landed for `tp`: takes this run's logged
    /// failures of `tp` at or below it, and returns the highest, if any (the
    /// caller appends one resolution covering them all).
    pub(crate) fn take_covered(&self, tp: &TopicPartition, committed: i64) -> Option<i64> {
        if self.uncovered.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut state = self.lock();
        let offsets = state.uncovered.get_mut(tp)?;
        let above = offsets.split_off(&committed.saturating_add(1));
        let covered = std::mem::replace(offsets, above);
        if offsets.is_empty() {
            state.uncovered.remove(tp);
        }
        self.uncovered.fetch_sub(covered.len(), Ordering::Relaxed);
        covered.last().copied()
    }

    /// From now on, failures are also kept for the shutdown report.
    pub(crate) fn start_capture(&self) {
        let mut s = self.lock();
        if s.captured.is_none() {
            s.captured = Some(Vec::new());
        }
    }

    /// The failures recorded since [`start_capture`](Self::start_capture).
    pub(crate) fn captured(&self) -> Vec<FailedOffset> {
        self.lock().captured.clone().unwrap_or_default()
    }
}

/// The highest unresolved logged offset per partition of this group, read
/// from the log `log` (the file, or the database's rows of this group) in one
/// streaming pass: only the unresolved offsets
/// of this group are kept ([`UnresolvedOffsets`]). Runs on the commit thread
/// before it serves anything (so before the first assign), never on the
/// caller's executor. A log that cannot be opened is logged as an error and
/// nothing is replayed; damaged lines are logged as warnings (the first
/// [`REPLAY_ISSUES_LOGGED`], then a count).
///
/// [`UnresolvedOffsets`]: crate::failure_log::UnresolvedOffsets
pub(crate) fn replay_entries(
    log: &crate::failure_log::LogBuilder,
    group_id: &str,
) -> HashMap<TopicPartition, i64> {
    let started = std::time::Instant::now();
    let stream = match log.stream(Some(group_id)) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(group = group_id, error = %e, "failed-offset log: cannot be read, nothing is replayed");
            return HashMap::new();
        }
    };
    let mut open = crate::failure_log::UnresolvedOffsets::new();
    let mut issues = 0u64;
    for item in stream {
        match item {
            Ok(entry) if entry.group_id() == group_id => open.push(&entry),
            Ok(_) => {}
            Err(issue) => {
                issues += 1;
                if issues <= REPLAY_ISSUES_LOGGED {
                    tracing::warn!(group = group_id, %issue, "failed-offset log: line skipped");
                }
            }
        }
    }
    if issues > REPLAY_ISSUES_LOGGED {
        tracing::warn!(
            group = group_id,
            issues,
            "failed-offset log: damaged lines skipped in all"
        );
    }
    let map: HashMap<TopicPartition, i64> = open
        .highest()
        .map(|(_, topic, partition, offset)| (TopicPartition::new(topic, partition), offset))
        .collect();
    tracing::info!(
        group = group_id,
        partitions = map.len(),
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "failed-offset log: read; unresolved offsets are replayed at assign"
    );
    map
}

/// Damaged lines logged one by one while reading the log for replay.
const REPLAY_ISSUES_LOGGED: u64 = 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::MemorySink;

    struct Panicking;
    impl FailureSink for Panicking {
        fn record(&self, _: FailedOffset) {
            panic!("sink bug");
        }
    }

    #[test]
    fn a_panicking_sink_is_counted_not_fatal_and_capture_starts_at_shutdown() {
        let metrics = Arc::new(Metrics::default());
        let r = FailureRecorder::new("g".into(), Some(Box::new(Panicking)), None, metrics.clone());
        let tp = TopicPartition::new("t", 0);
        r.record(r.failure(&tp, 5, FailureReason::Fatal, "x"));
        assert_eq!(metrics.snapshot().sink_errors, 1);
        assert_eq!(metrics.snapshot().offsets_failed, 1);

        let sink = MemorySink::new();
        let r = FailureRecorder::new("g".into(), Some(Box::new(sink.clone())), None, metrics);
        r.record(r.failure(&tp, 1, FailureReason::Lost, "before"));
        r.start_capture();
        r.record(r.failure(&tp, 2, FailureReason::ShutdownDeadline, "during"));
        assert_eq!(sink.records().len(), 2);
        let captured = r.captured();
        assert_eq!(captured.len(), 1);
        assert_eq!(captured[0].offset, 2);
    }

    #[test]
    fn a_landed_commit_covers_the_logged_failures_at_or_below_it() {
        let dir = std::env::temp_dir().join(format!(
            "offset-guard-recorder-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let log = FailedOffsetLog::open(dir.join("log.jsonl")).unwrap();
        let metrics = Arc::new(Metrics::default());
        let r = FailureRecorder::new("g".into(), None, Some(log), metrics);
        let (tp, other) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
        assert_eq!(r.take_covered(&tp, 100), None, "nothing failed yet");
        for o in [10, 20, 30] {
            r.record(r.failure(&tp, o, FailureReason::RetriesExhausted, "x"));
        }
        r.record(r.failure(&other, 5, FailureReason::Lost, "x"));
        assert_eq!(r.take_covered(&tp, 9), None);
        assert_eq!(r.take_covered(&tp, 25), Some(20), "10 and 20, not 30");
        assert_eq!(r.take_covered(&tp, 25), None, "taken once");
        assert_eq!(r.take_covered(&tp, 30), Some(30), "equal is covered");
        assert_eq!(r.take_covered(&tp, i64::MAX), None);
        assert_eq!(r.take_covered(&other, i64::MAX), Some(5));
        assert_eq!(r.uncovered.load(Ordering::Relaxed), 0);
        r.log().unwrap().close().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_a_log_nothing_waits_for_a_resolution() {
        let r = FailureRecorder::new("g".into(), None, None, Arc::new(Metrics::default()));
        let tp = TopicPartition::new("t", 0);
        r.record(r.failure(&tp, 10, FailureReason::RetriesExhausted, "x"));
        assert_eq!(r.take_covered(&tp, 10), None);
    }

    #[test]
    fn replay_keeps_the_highest_unresolved_offset_of_this_group_per_partition() {
        use crate::failure_log::LogEntry;
        let dir =
            std::env::temp_dir().join(format!("offset-guard-replay-read-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.jsonl");
        let f = |g: &str, p, o| {
            LogEntry::Failure(FailedOffset::new(g, "orders", p, o, FailureReason::Fatal).into())
        };
        let entries = [
            f("billing", 0, 10),
            f("billing", 0, 12),
            f("billing", 1, 5),
            f("other", 2, 99),
            LogEntry::Resolved(Resolution::superseded("billing", "orders", 1, 5, 6)),
            f("billing", 0, 11),
        ];
        let mut bytes = b"\xef\xbb\xbf".to_vec();
        for e in &entries {
            bytes.extend(e.to_json_line().into_bytes());
        }
        bytes.extend_from_slice(b"garbage\n");
        std::fs::write(&path, bytes).unwrap();

        let map = replay_entries(&FailedOffsetLog::builder(&path), "billing");
        assert_eq!(map.len(), 1, "{map:?}");
        assert_eq!(map.get(&TopicPartition::new("orders", 0)), Some(&12));
        // A log that cannot be read replays nothing (and says so).
        let missing = FailedOffsetLog::builder(dir.join("missing.jsonl"));
        assert!(replay_entries(&missing, "billing").is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
