//! The one failure recorder: every offset the guard gives up on goes through
//! [`FailureRecorder::record`] to the user's [`FailureSink`] and the durable
//! failed-offset log, is counted, and (during shutdown) is kept for the
//! shutdown report. Resolutions of replayed offsets go to the log from here too.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
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
}

#[derive(Default)]
struct RecorderState {
    member_id: Option<String>,
    /// Failures recorded since shutdown started (for its report).
    captured: Option<Vec<FailedOffset>>,
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
        if let Some(captured) = self.lock().captured.as_mut() {
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
            log.record(f.clone());
        }
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
}
