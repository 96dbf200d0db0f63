//! Failed-offset log samples and views for the tests that need no broker
//! fixture (tests/failure_log.rs, tests/cli.rs) and for those that do.
//! Included by path (`#[path = "common/logs.rs"] mod logs;`).
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use offset_guard::failure_log::{LogEntry, LogReader, ResolutionKind};
use offset_guard::{FailedOffset, FailureReason};
use rdkafka::error::RDKafkaErrorCode;

pub const T0_MS: u64 = 1_795_444_236_123; // 2026-11-23T14:30:36.123Z

pub fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

pub const REASONS: [FailureReason; 5] = [
    FailureReason::RetriesExhausted,
    FailureReason::Fatal,
    FailureReason::Lost,
    FailureReason::ShutdownDeadline,
    FailureReason::RebalanceDropped,
];

/// A failure of group "billing" with every field set, varied by `offset`:
/// reason, time, message (with a quote and a non-ASCII letter), member and
/// error code.
pub fn failure(topic: &str, partition: i32, offset: i64) -> FailedOffset {
    let reason = REASONS[offset as usize % REASONS.len()];
    let mut f = FailedOffset::new("billing", topic, partition, offset, reason)
        .with_time(at_ms(T0_MS + offset as u64))
        .with_error_message(format!("Broker: Request timed out (offset {offset}) \"é\""))
        .with_attempts(5)
        .with_elapsed(Duration::from_millis(9_120 + offset as u64));
    f.member_id = (offset % 2 == 0).then(|| format!("member-{offset}"));
    f.error_code = (offset % 3 != 0).then_some(RDKafkaErrorCode::RequestTimedOut);
    f
}

/// (partition, offset, how) of the resolutions, in log order.
pub fn resolutions(reader: &LogReader) -> Vec<(i32, i64, ResolutionKind)> {
    reader
        .entries()
        .iter()
        .filter_map(|e| match e {
            LogEntry::Resolved(r) => Some((r.partition, r.offset, r.how)),
            _ => None,
        })
        .collect()
}
